"""Outlier detection by log p(x): a VAE trained on some digit classes scores unseen classes,
shapes and noise, and the three scoring rules (log p(x), ELBO, reconstruction error) are
compared by ROC AUC.

    python examples/outliers.py                     # mnist-5k classes 0-4, 30 epochs
    python examples/outliers.py --epochs 2 --num-samples 50 --points 100

The training set is mnist-5k's training split restricted to ``--inlier-classes``, written as an
``.npz`` file and trained through the run layer (``--out/run``; its own seeded split inside the
file). The sets scored, ``--points`` each (500 by default), all binary 28x28:

* ``inliers``: mnist-5k's test split, the inlier classes (the reference of every AUC);
* ``held-out digits``: mnist-5k's test split, the other classes;
* ``shapes``: the ``shapes`` test split (binary 32x32) resized to 28x28 (bilinear, antialiased,
  torchvision; the data option ``image_size``), then binarized by the seeded draw every test
  split gets;
* ``bernoulli(0.5)``: pixels i.i.d. Bernoulli(0.5); ``sparse``: Bernoulli(0.02);
  ``blank``: all-zero images.

Prints, per set, the mean log p(x) (+- its Monte Carlo standard error), the mean ELBO, the
median per-point Monte Carlo standard error (near 1: a few samples carry a point's estimate,
which is then unreliable and biased low) and the ROC AUC of each
rule at telling that set from the inliers (1: perfect, 0.5: chance, below 0.5: the outliers
look *more* typical than the inliers); writes ``log_px_histogram.png`` and one CSV of
per-point scores per set (``scores-SET.csv``, as ``pyro-vae score`` writes them).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import torch

from pyro_vae import EvalConfig, RunConfig, TrainConfig, run
from pyro_vae.cli import run_script
from pyro_vae.data import DataConfig, load_dataset
from pyro_vae.outliers import RULES, outlier_auc, score_points, summarize, write_scores


def _classes(text: str) -> list[int]:
    return [int(c) for c in text.split(",")]


def outlier_sets(inlier_classes: list[int], points: int, seed: int) -> dict[str, torch.Tensor]:
    """The binary 28x28 sets scored, inliers first."""
    mnist = load_dataset("mnist-5k")  # test split binarized by its fixed seed
    inside = torch.isin(mnist.test_y, torch.tensor(inlier_classes))
    shapes = load_dataset("shapes", options=DataConfig(image_size=(28, 28)))
    gen = torch.Generator().manual_seed(seed)
    shape = (points, 1, 28, 28)
    return {
        "inliers": mnist.test_x[inside][:points],
        "held-out digits": mnist.test_x[~inside][:points],
        "shapes": shapes.test_x[:points],
        "bernoulli(0.5)": torch.bernoulli(torch.full(shape, 0.5), generator=gen),
        "sparse (p=0.02)": torch.bernoulli(torch.full(shape, 0.02), generator=gen),
        "blank": torch.zeros(shape),
    }


def save_histogram(scores: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = {k: (-s.log_px).clamp_min(1e-3).numpy() for k, s in scores.items()}
    lo = min(v.min() for v in values.values())
    hi = max(v.max() for v in values.values())
    bins = np.geomspace(lo * 0.9, hi * 1.1, 80)
    fig, ax = plt.subplots(figsize=(8, 4))
    for name, v in values.items():
        ax.hist(v, bins=bins, histtype="step", linewidth=1.6,
                label=f"{name} (median {np.median(v):.0f})")
    ax.set_xscale("log")
    ax.set_xlabel("-log p(x) (nats, log scale; left = rated more likely)")
    ax.set_ylabel("points")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--inlier-classes", type=_classes, default=[0, 1, 2, 3, 4])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--latent-dim", type=int, default=16)
    p.add_argument("--hidden", type=int, default=200)
    p.add_argument("--num-samples", type=int, default=500, help="importance samples a point")
    p.add_argument("--points", type=int, default=500, help="points scored per set")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=Path("runs/example-outliers"))
    args = p.parse_args(argv)

    grey = load_dataset("mnist-5k", binarize="none")
    keep = torch.isin(grey.train_y, torch.tensor(args.inlier_classes))
    args.out.mkdir(parents=True, exist_ok=True)
    train_file = args.out / "inlier-digits.npz"
    np.savez(train_file, x=grey.train_x[keep].numpy(), y=grey.train_y[keep].numpy())
    config = RunConfig.for_model(
        "vae", dataset=str(train_file), latent_dim=args.latent_dim, hidden=(args.hidden,),
        train=TrainConfig(epochs=args.epochs, seed=args.seed, device=args.device),
        eval=EvalConfig(num_samples=0, pictures=False))
    model = run(config, args.out / "run", progress=False).run.model.eval()

    torch.manual_seed(args.seed)
    sets = outlier_sets(args.inlier_classes, args.points, args.seed)
    scores = {name: score_points(model, x.to(model.device), num_samples=args.num_samples)
              for name, x in sets.items()}
    for name, s in scores.items():
        write_scores(args.out / f"scores-{re.sub('[^a-z0-9.]+', '-', name).strip('-')}.csv", s)
    save_histogram(scores, args.out / "log_px_histogram.png")

    rows = []
    print(f"VAE on mnist-5k classes {args.inlier_classes} ({int(keep.sum())} training images, "
          f"{args.epochs} epochs); {args.num_samples} importance samples a point")
    print(f"{'set':<17} {'points':>6} {'mean log p(x)':>20} {'mean ELBO':>9} {'med. se':>7} "
          + " ".join(f"{'AUC ' + r:>15}" for r in RULES))
    for name, s in scores.items():
        m = summarize(s)
        aucs = {r: outlier_auc(scores["inliers"], s, r) for r in RULES}
        rows.append({"set": name, **m, **{f"auc_{r}": v for r, v in aucs.items()}})
        shown = " ".join(f"{'-' if name == 'inliers' else f'{v:.3f}':>15}"
                         for v in aucs.values())
        print(f"{name:<17} {m['points']:>6} {m['log_px']:>11.1f} +- {m['log_px_mc_stderr']:<5.2f} "
              f"{m['elbo']:>9.1f} {s.log_px_mc_stderr.median().item():>7.2f} {shown}")
    return rows


if __name__ == "__main__":
    run_script(main, __file__)  # a UserError: one line on stderr, exit 2, as pyro-vae does
