"""Deep clustering: a VAE with a Gaussian-mixture prior (VaDE) against two baselines.

    python examples/clustering.py                          # mnist-5k, 50 epochs each
    python examples/clustering.py --dataset digits --epochs 2

Three ways to cut the data into K clusters, scored against the labels by clustering accuracy
(Hungarian matching of clusters to classes) and NMI (:mod:`pyro_vae.clustering`):

* k-means on the pixels (scikit-learn ``KMeans``, K clusters, ``random_state = --seed``);
* a Gaussian mixture (scikit-learn ``GaussianMixture``, K full-covariance components) fitted to
  the guide means of a plain ``vae`` run of the same size;
* ``vade``: the latent mixture trained with the model, the cluster of a point being
  argmax_c p(c | z = guide mean) (the run's own ``clusters`` evaluation, ``metrics.json``).

Every method sees the same points: the training split (one fixed binarization when training
binarizes dynamically) and the test split. Both models are runs of the library's run layer
(:func:`pyro_vae.run`) in ``--out/vae`` and ``--out/vade``; ``components.png`` shows decoded
draws of each mixture component of the VaDE run, one row a component (heaviest first).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from sklearn.cluster import KMeans
from sklearn.mixture import GaussianMixture

from pyro_vae import EvalConfig, RunConfig, TrainConfig, UserError, run, set_seed
from pyro_vae.cli import run_script
from pyro_vae.clustering import cluster_accuracy, nmi, train_points
from pyro_vae.evaluate import latent_means
from pyro_vae.plots import save_grid


def _scores(y_train, c_train, y_test, c_test) -> dict:
    return {"train_acc": cluster_accuracy(y_train, c_train), "train_nmi": nmi(y_train, c_train),
            "test_acc": cluster_accuracy(y_test, c_test), "test_nmi": nmi(y_test, c_test)}


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="mnist-5k")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--pretrain-epochs", type=int, default=30,
                   help="VaDE's pre-training (as a plain VAE) before the GMM initialisation")
    p.add_argument("--num-components", type=int, default=10)
    p.add_argument("--latent-dim", type=int, default=10)
    p.add_argument("--hidden", type=int, nargs="+", default=[500, 500])
    p.add_argument("--num", type=int, default=10, help="images per row of components.png")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=Path("runs/example-clustering"))
    args = p.parse_args(argv)

    K, hidden = args.num_components, tuple(args.hidden)
    train = TrainConfig(epochs=args.epochs, seed=args.seed, device=args.device)
    evaluation = EvalConfig(num_samples=0, pictures=False)
    vae = run(RunConfig.for_model("vae", dataset=args.dataset, latent_dim=args.latent_dim,
                                  hidden=hidden, train=train, eval=evaluation),
              args.out / "vae", progress=False)
    vade = run(RunConfig.for_model("vade", dataset=args.dataset, latent_dim=args.latent_dim,
                                   hidden=hidden, num_components=K,
                                   pretrain_epochs=args.pretrain_epochs, train=train,
                                   eval=evaluation),
               args.out / "vade", progress=False)
    data = vae.run.data
    if data.train_y is None or data.test_y is None:
        raise UserError(f"data set {args.dataset} has no labels to score clusters against")
    x_train, x_test = train_points(data), data.test_x
    y_train, y_test = data.train_y.cpu(), data.test_y.cpu()

    rows = []
    pixels = KMeans(K, n_init=10, random_state=args.seed).fit(
        x_train.reshape(len(x_train), -1).cpu().numpy())
    rows.append({"method": "k-means on pixels"} | _scores(
        y_train, pixels.labels_, y_test,
        pixels.predict(x_test.reshape(len(x_test), -1).cpu().numpy())))

    codes_train = latent_means(vae.run.model, x_train).cpu().numpy()
    codes_test = latent_means(vae.run.model, x_test).cpu().numpy()
    gmm = GaussianMixture(K, covariance_type="full", random_state=args.seed).fit(codes_train)
    rows.append({"method": "GMM on VAE latents"} | _scores(
        y_train, gmm.predict(codes_train), y_test, gmm.predict(codes_test)))

    m = vade.metrics
    rows.append({"method": "VaDE (latent mixture)", "train_acc": m["train_cluster_accuracy"],
                 "train_nmi": m["train_cluster_nmi"], "test_acc": m["test_cluster_accuracy"],
                 "test_nmi": m["test_cluster_nmi"]})

    model = vade.run.model.eval()
    set_seed(args.seed)
    order = model.mixture()[0].argsort(descending=True).tolist()
    args.out.mkdir(parents=True, exist_ok=True)
    grid = torch.cat([model.sample_component(c, args.num).cpu() for c in order])
    save_grid(grid, args.out / "components.png", nrow=args.num)

    print(f"{args.dataset}, K = {K}, seed {args.seed}, {args.epochs} epochs "
          f"(VaDE: + {args.pretrain_epochs} of pre-training as {model.config.pretrain})")
    print(f"{'method':<24} {'train acc':>9} {'train NMI':>9} {'test acc':>9} {'test NMI':>9}")
    for r in rows:
        print(f"{r['method']:<24} {r['train_acc']:>9.3f} {r['train_nmi']:>9.3f} "
              f"{r['test_acc']:>9.3f} {r['test_nmi']:>9.3f}")
    print(f"components.png in {args.out}: decoded draws of each component, heaviest first")
    return rows


if __name__ == "__main__":
    run_script(main, __file__)  # a UserError: one line on stderr, exit 2, as pyro-vae does
