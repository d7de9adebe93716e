"""Autoencoders as pre-training for a classifier with few labels: AE, DAE, sparse AE, a stacked
AE trained greedily (then fine-tuned), and a VAE, judged as Kingma et al.'s M1 judges a VAE.

    python examples/pretraining.py                      # mnist-5k, 30 epochs a run
    python examples/pretraining.py --dataset digits --epochs 2

Each model is trained without labels, as runs of the library's run layer
(:func:`pyro_vae.run`, and :func:`pyro_vae.pretraining.greedy_pretrain` for the stacked
autoencoder: ``--out/stacked/stage-1`` ... ``stage-3``, then ``finetune``).

The stack trains for L greedy stages plus the fine-tuning, so the AE is also trained once for
as many epochs (its row "ae (N epochs)"). Then, per model:

* the test reconstruction loss (BCE, nats per image, ``model.reconstruct``);
* the code's sparsity (share of code units with |z| < 0.1 over the test set, and mean |z|:
  :func:`pyro_vae.evaluate.code_sparsity`);
* M1: a logistic regression (scikit-learn, features standardized on the labelled points) fitted
  on the codes (``model.encode(x)[0]``) of ``--labels`` labelled training digits per class and
  scored on the test set; the same labelled points for every model and for the same classifier
  on raw pixels, over ``--label-draws`` draws of them (mean and standard deviation).

Writes ``reconstructions.png`` (rows: test digits, then each model) and prints the table of
docs/autoencoders.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch.nn import functional as F

from pyro_vae import EvalConfig, RunConfig, TrainConfig, run
from pyro_vae.cli import run_script
from pyro_vae.evaluate import code_sparsity
from pyro_vae.plots import save_grid
from pyro_vae.pretraining import greedy_pretrain, greedy_stages


def _bce(model, x: torch.Tensor) -> float:
    recon = model.reconstruct(x).clamp(1e-6, 1 - 1e-6)
    return F.binary_cross_entropy(recon, x, reduction="sum").item() / len(x)


def labelled_points(y: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """``per_class`` indices of each class of ``y``, drawn without replacement from ``seed``."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.choice(np.flatnonzero(y == c), per_class, replace=False)
                           for c in np.unique(y)])


def accuracy(train_f: np.ndarray, train_y: np.ndarray, test_f: np.ndarray,
             test_y: np.ndarray) -> float:
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    return float((clf.fit(train_f, train_y).predict(test_f) == test_y).mean())


def _codes(model, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model.encode(x)[0].cpu().numpy()


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="mnist-5k")
    p.add_argument("--epochs", type=int, default=30, help="per run (each greedy stage too)")
    p.add_argument("--finetune-epochs", type=int, default=30)
    p.add_argument("--hidden", default="400,200")
    p.add_argument("--latent-dim", type=int, default=50)
    p.add_argument("--l1", type=float, default=0.1, help="the sparse AE's lambda")
    p.add_argument("--labels", type=int, default=10, help="labelled training points per class")
    p.add_argument("--label-draws", type=int, default=5)
    p.add_argument("--num", type=int, default=12, help="images per row of the picture")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=Path("runs/example-pretraining"))
    args = p.parse_args(argv)
    hidden = tuple(int(h) for h in args.hidden.split(","))

    def config(name: str, epochs: int = args.epochs, **settings) -> RunConfig:
        return RunConfig.for_model(
            name, dataset=args.dataset, latent_dim=args.latent_dim, hidden=hidden,
            train=TrainConfig(epochs=epochs, seed=args.seed, device=args.device),
            eval=EvalConfig(num_samples=0, pictures=False), **settings)

    # the stack trains L stages and the fine-tuning: the AE again with as many epochs
    stack_epochs = args.epochs * greedy_stages(config("stacked")) + args.finetune_epochs
    single = {"ae": ("ae", "ae", {}), "dae": ("dae", "dae", {}),
              "sae": ("sae", "sae", {"l1": args.l1}), "vae": ("vae", "vae", {}),
              f"ae ({stack_epochs} epochs)": ("ae", "ae-long", {"epochs": stack_epochs})}
    trained = {label: run(config(name, **settings), args.out / folder, progress=False).run
               for label, (name, folder, settings) in single.items()}
    stages = greedy_pretrain(config("stacked"), args.out / "stacked",
                             finetune_epochs=args.finetune_epochs)
    trained["stacked (greedy)"] = stages[-2 if args.finetune_epochs else -1].run
    if args.finetune_epochs:
        trained["stacked (+fine-tune)"] = stages[-1].run

    data = trained["ae"].data
    train_y, test_y = data.train_y.cpu().numpy(), data.test_y.cpu().numpy()
    draws = [labelled_points(train_y, args.labels, args.seed + i)
             for i in range(args.label_draws)]

    def m1(train_f: np.ndarray, test_f: np.ndarray) -> tuple[float, float]:
        accs = [accuracy(train_f[i], train_y[i], test_f, test_y) for i in draws]
        return float(np.mean(accs)), float(np.std(accs))

    x = data.test_x[torch.linspace(0, len(data.test_x) - 1, args.num).long().to(data.device)]
    pictures = [x.cpu()]
    rows = [{"model": "raw pixels", "test_bce": None, "sparsity": None, "mean_abs": None,
             "accuracy": m1(data.train_x.flatten(1).cpu().numpy(),
                            data.test_x.flatten(1).cpu().numpy())}]
    for name, opened in trained.items():
        model = opened.model.eval()
        sparsity = code_sparsity(model, data.test_x)
        pictures.append(model.reconstruct(x).cpu())
        rows.append({"model": name, "test_bce": _bce(model, data.test_x),
                     "sparsity": sparsity["code_sparsity"], "mean_abs": sparsity["code_mean_abs"],
                     "accuracy": m1(_codes(model, data.train_x), _codes(model, data.test_x))})
    args.out.mkdir(parents=True, exist_ok=True)
    save_grid(torch.cat(pictures), args.out / "reconstructions.png", nrow=args.num)
    print(f"{'model':<21} {'test BCE':>9} {'code |z|<0.1':>13} {'mean |z|':>9} "
          f"{f'accuracy, {args.labels} labels/class':>28}")
    for r in rows:
        bce, share, mean = (("—" if r[k] is None else f"{r[k]:.{d}f}")
                            for k, d in (("test_bce", 2), ("sparsity", 3), ("mean_abs", 3)))
        acc, sd = r["accuracy"]
        print(f"{r['model']:<21} {bce:>9} {share:>13} {mean:>9} {acc:>19.3f} +- {sd:.3f}")
    print(f"{args.label_draws} draws of the labelled points; reconstructions in "
          f"{args.out / 'reconstructions.png'}")
    return rows


if __name__ == "__main__":
    run_script(main, __file__)  # a UserError: one line on stderr, exit 2, as pyro-vae does
