"""Debiasing by latent density (DB-VAE, Amini et al. 2019): a training set with one digit class
thinned on purpose, a VAE trained on it, resampling weights from the density of its latent
codes, and what they change: the thinned class's share of the minibatches, and a classifier's
accuracy on that class.

    python examples/debias.py                    # mnist-5k, digit 8 thinned to 3%, 30 epochs
    python examples/debias.py --epochs 2 --classifier-epochs 1 --seeds 0

The training set is mnist-5k's training split with ``--thin-class`` reduced to ``--keep`` of
its images (a seeded choice), written as an ``.npz`` file and trained through the run layer
(``--out/run``; the file gets its own seeded 90/10 split, stratified by class). The weights
are :func:`pyro_vae.debias.latent_density_weights` of the run's training points (one fixed
binarized draw each), for each ``--alphas`` (and both ways of combining the per-dimension
histograms, and the aggregate posterior). Prints

* (a) the thinned class's share of the training points: expected (its total weight; uniform:
  its count over N) and drawn (``--draws`` epochs of indices by the weights; uniform: one
  epoch's permutation), with Kish's effective sample size of the weights;
* (b) :func:`pyro_vae.classifier.train_classifier` trained on uniform and on reweighted
  minibatches (each of ``--classifier-weights``), for each of ``--seeds``: accuracy on mnist-5k's
  test images of the thinned class and on all test images (mean and spread over seeds).

Writes ``top_weighted.png``: the 40 training images of largest weight (the first of
``--classifier-weights``).

``--recipe joint`` measures the paper's method instead: the joint DB-VAE (``dbvae``: one encoder
gives the class logits and q(z | x), trained with labels) on the same thinned set, for each of
``--seeds``, once with uniform minibatches and once with adaptive resampling (``--resample``:
each epoch's minibatches drawn by latent-density weights recomputed from the model at the
epoch's start; ``TrainConfig.resample``), same epochs. Prints per seed and as mean and spread:
the thinned class's share of the drawn indices (the mean over epochs of
``resample_rarest_share`` in the run's history; uniform: its count over N) and the test accuracy
of the model's classifier q(y | x) on mnist-5k's test images of the thinned class and on all.

    python examples/debias.py --recipe joint --keep 0.3 --thin-class 8
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
import torch

from pyro_vae import EvalConfig, RunConfig, TrainConfig, open_run, run
from pyro_vae.classifier import accuracy, train_classifier
from pyro_vae.cli import run_script
from pyro_vae.data import load_dataset
from pyro_vae.debias import (
    LatentDensitySampler,
    effective_sample_size,
    histogram_weights,
    latent_density_weights,
)
from pyro_vae.errors import ConfigError
from pyro_vae.evaluate import latent_means
from pyro_vae.plots import save_grid


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def _weightings(text: str) -> list[tuple[str, str, float]]:
    return [(m, c, float(a)) for m, c, a in (w.split(":") for w in text.split(","))]


def _sd(values) -> float:
    return statistics.stdev(values) if len(values) > 1 else float("nan")


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def thinned_training_set(thin_class: int, keep: float, seed: int) -> tuple[np.ndarray,
                                                                           np.ndarray]:
    """mnist-5k's training split (grey values) with ``keep`` of ``thin_class`` left."""
    grey = load_dataset("mnist-5k", binarize="none")
    x, y = grey.train_x.numpy(), grey.train_y.numpy()
    rng = np.random.default_rng(seed)
    members = np.flatnonzero(y == thin_class)
    kept = rng.choice(members, max(2, round(keep * len(members))), replace=False)
    rows = np.sort(np.r_[np.flatnonzero(y != thin_class), kept])
    return x[rows], y[rows]


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--thin-class", type=int, default=8)
    p.add_argument("--keep", type=float, default=0.03, help="share of the class kept")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--latent-dim", type=int, default=8)
    p.add_argument("--hidden", type=int, default=200)
    p.add_argument("--bins", type=int, default=10)
    p.add_argument("--alphas", type=_floats, default=[0.001, 0.01, 0.1])
    p.add_argument("--classifier-weights", type=_weightings,
                   default=_weightings("histogram:product:0.1,histogram:max:0.01,"
                                      "aggregate:product:0.001"),
                   help="weightings the reweighted classifiers draw by, METHOD:COMBINE:ALPHA,...")
    p.add_argument("--draws", type=int, default=20, help="epochs of indices drawn for (a)")
    p.add_argument("--classifier-epochs", type=int, default=10)
    p.add_argument("--seeds", type=_ints, default=[0, 1, 2], help="classifier seeds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=Path("runs/example-debias"))
    p.add_argument("--recipe", choices=("once", "joint"), default="once",
                   help="once: an unsupervised VAE's weights, computed once, for a separate "
                        "classifier; joint: the DB-VAE, uniform against adaptive resampling")
    p.add_argument("--class-weight", type=float, default=50.0, help="joint: dbvae's weight of "
                   "log q(y|x)")
    p.add_argument("--resample", default="histogram", help="joint: histogram or aggregate")
    p.add_argument("--resample-alpha", type=float, default=0.1, help="joint: the weights' alpha")
    p.add_argument("--explain", type=Path, help="print, for a trained run folder, each class's "
                   "share of the training points, its total weight under the run's histogram "
                   "weights (--bins, --resample-alpha) and where its codes lie; nothing else")
    args = p.parse_args(argv)
    if args.explain is not None:
        return explain(args.explain, args.bins, args.resample_alpha)

    x, y = thinned_training_set(args.thin_class, args.keep, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    train_file = args.out / "thinned-digits.npz"
    np.savez(train_file, x=x, y=y)
    if args.recipe == "joint":
        return joint(args, train_file)
    config = RunConfig.for_model(
        "vae", dataset=str(train_file), latent_dim=args.latent_dim, hidden=(args.hidden,),
        train=TrainConfig(epochs=args.epochs, seed=args.seed, device=args.device),
        eval=EvalConfig(num_samples=0, pictures=False))
    opened = run(config, args.out / "run", progress=False).run
    model, data = opened.model.eval(), opened.data
    thin = (data.train_y == args.thin_class).cpu()
    n = data.num_train
    print(f"training split: {n} images, {int(thin.sum())} of class {args.thin_class} "
          f"({thin.double().mean().item():.2%}); VAE latent {args.latent_dim}, "
          f"{args.epochs} epochs")

    x_eval = data.train_eval_x()
    gen = torch.Generator().manual_seed(args.seed)
    rows = [{"weights": "uniform", "alpha": None, "ess": float(n),
             "share": thin[torch.randperm(n, generator=gen)].double().mean().item(),
             "weight_share": thin.double().mean().item()}]
    settings = [("histogram", "product"), ("histogram", "max"), ("aggregate", "product")]
    for method, combine in settings:
        for alpha in args.alphas:
            w = latent_density_weights(model, x_eval, method=method, bins=args.bins,
                                       alpha=alpha, combine=combine)
            idx = LatentDensitySampler(w, args.draws * n, gen).permutation()
            name = method if method == "aggregate" else f"histogram {combine}"
            rows.append({"weights": name, "alpha": alpha, "ess": effective_sample_size(w),
                         "share": thin[idx].double().mean().item(),
                         "weight_share": w[thin].sum().item()})
    print(f"(a) share of class {args.thin_class} among {args.draws} epochs of drawn indices")
    print(f"{'weights':<18} {'alpha':>7} {'ESS':>8} {'expected share':>15} {'drawn share':>12}")
    for r in rows:
        alpha = "-" if r["alpha"] is None else f"{r['alpha']:g}"
        print(f"{r['weights']:<18} {alpha:>7} {r['ess']:>8.0f} {r['weight_share']:>15.2%} "
              f"{r['share']:>12.2%}")
    chosen = {f"{m} {c} {a:g}": latent_density_weights(model, x_eval, method=m, bins=args.bins,
                                                       alpha=a, combine=c)
              for m, c, a in args.classifier_weights}
    first = next(iter(chosen.values()))
    save_grid(x_eval[first.argsort(descending=True)[:40]].cpu(), args.out / "top_weighted.png",
              nrow=10)

    test = load_dataset("mnist-5k")
    test_x, test_y = test.test_x.to(data.device), test.test_y.to(data.device)
    on_thin = test_y == args.thin_class
    results = {"uniform": [], **{name: [] for name in chosen}}
    samplers = {"uniform": None, **{k: LatentDensitySampler(w) for k, w in chosen.items()}}
    for seed in args.seeds:
        for name, sampler in samplers.items():
            clf = train_classifier(data, epochs=args.classifier_epochs, seed=seed,
                                   sampler=sampler)
            results[name].append((accuracy(clf, test_x[on_thin], test_y[on_thin]),
                                  accuracy(clf, test_x, test_y)))
    print(f"(b) classifier on mnist-5k's test split ({int(on_thin.sum())} images of class "
          f"{args.thin_class}, {len(test_y)} in all); seeds {args.seeds}")
    print(f"{'minibatches':<26} {'class acc (mean, sd)':>22} {'all acc (mean, sd)':>22}")
    for name, accs in results.items():
        c, a = zip(*accs, strict=True)
        print(f"{name:<26} {statistics.mean(c):>12.3f} {_sd(c):>9.3f} "
              f"{statistics.mean(a):>12.3f} {_sd(a):>9.3f}")
        rows.append({"classifier": name, "class_accuracy": list(c), "accuracy": list(a)})
    return rows


def explain(folder: Path, bins: int, alpha: float) -> list[dict]:
    """Per class of a trained run's training split: share of the points, total weight under the
    histogram-product weights of its latent means, mean distance of its codes to the centroid
    of all codes, mean per-dimension sd of its codes."""
    opened = open_run(folder)
    model, data = opened.model.eval(), opened.data
    x, y = data.train_eval_x(), data.train_y.cpu()
    mu = latent_means(model, x).cpu()  # encoded once: the weights are of these means
    w = histogram_weights(mu, bins, alpha)  # = latent_density_weights(model, x, ...)
    centre = mu.mean(0)
    rows = []
    print(f"{folder}: histogram product, alpha {alpha:g}, {bins} bins")
    print(f"{'class':>5} {'share of points':>16} {'total weight':>13} {'to centroid':>12} "
          f"{'sd per dim':>11}")
    for c in torch.unique(y).tolist():
        k = y == c
        rows.append({"class": c, "share": k.double().mean().item(),
                     "weight": w[k].sum().item(),
                     "distance": (mu[k] - centre).norm(dim=1).mean().item(),
                     "sd": mu[k].std(0).mean().item()})
        r = rows[-1]
        print(f"{c:>5} {r['share']:>16.2%} {r['weight']:>13.2%} {r['distance']:>12.2f} "
              f"{r['sd']:>11.2f}")
    return rows


def joint(args, train_file: Path) -> list[dict]:
    """The joint DB-VAE, uniform minibatches against adaptive resampling, for each seed."""
    test = load_dataset("mnist-5k")
    rows = []
    for seed in args.seeds:
        for resample in ("none", args.resample):
            config = RunConfig.for_model(
                "dbvae", dataset=str(train_file), latent_dim=args.latent_dim,
                hidden=(args.hidden,), class_weight=args.class_weight,
                train=TrainConfig(epochs=args.epochs, seed=seed, device=args.device,
                                  resample=resample, resample_alpha=args.resample_alpha,
                                  resample_bins=args.bins),
                eval=EvalConfig(num_samples=0, pictures=False))
            result = run(config, args.out / f"joint-{resample}-seed{seed}", progress=False)
            model, data = result.run.model.eval(), result.run.data
            thin = (data.train_y == args.thin_class).cpu()
            history = result.training.history
            drawn = (statistics.mean(h["resample_rarest_share"] for h in history)
                     if resample != "none" else thin.double().mean().item())
            if resample != "none" and history[0]["resample_rarest_class"] != args.thin_class:
                raise ConfigError(f"the rarest class is {history[0]['resample_rarest_class']}, "
                                 f"not {args.thin_class}: thin it further (--keep)")
            test_x, test_y = test.test_x.to(data.device), test.test_y.to(data.device)
            on_thin = test_y == args.thin_class
            hits = model.classify(test_x) == test_y
            rows.append({"seed": seed, "minibatches": "uniform" if resample == "none" else
                         f"{resample} alpha {args.resample_alpha:g}", "share": drawn,
                         "ess": (statistics.mean(h["resample_ess"] for h in history)
                                 if resample != "none" else float(data.num_train)),
                         "class_accuracy": hits[on_thin].double().mean().item(),
                         "accuracy": hits.double().mean().item()})
            r = rows[-1]
            print(f"seed {seed} {r['minibatches']:<22} share {r['share']:7.2%}  ESS "
                  f"{r['ess']:6.0f}  acc class {args.thin_class} {r['class_accuracy']:.3f}  "
                  f"acc all {r['accuracy']:.3f}", flush=True)
    n, k = data.num_train, int(thin.sum())
    print(f"joint DB-VAE (latent {args.latent_dim}, hidden {args.hidden}, class weight "
          f"{args.class_weight:g}, {args.epochs} epochs) on {n} training images, {k} of class "
          f"{args.thin_class} ({k / n:.2%}); seeds {args.seeds}")
    print(f"{'minibatches':<22} {'drawn share':>12} {'ESS':>7} {'class acc (mean, sd)':>22} "
          f"{'all acc (mean, sd)':>20}")
    for name in dict.fromkeys(r["minibatches"] for r in rows):
        mine = [r for r in rows if r["minibatches"] == name]
        share, ess, c, a = ([r[key] for r in mine]
                            for key in ("share", "ess", "class_accuracy", "accuracy"))
        print(f"{name:<22} {statistics.mean(share):>12.2%} {statistics.mean(ess):>7.0f} "
              f"{statistics.mean(c):>12.3f} {_sd(c):>9.3f} {statistics.mean(a):>10.3f} "
              f"{_sd(a):>9.3f}")
    return rows


if __name__ == "__main__":
    run_script(main, __file__)  # a UserError: one line on stderr, exit 2, as pyro-vae does
