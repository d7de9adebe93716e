"""Two trained runs on the same digits: paired log p(x) difference, and train vs test log p(x).

    python examples/hierarchical.py --rows 0,3 --epochs 50 --batch-size 32 --out runs/h50
    python examples/compare_runs.py runs/h50/vae-trace runs/h50/hvae-iwae --eval-samples 5000

For each run folder (anything ``pyro-vae train`` or an example wrote), the test ELBO and test
log p(x) (importance sampling, ``--eval-samples`` per digit), and the same on
``--train-points`` random training digits (one fixed binarization), whose difference from the
test figure measures over-fitting. Then the second run minus the first, per test digit: a paired
difference whose standard error leaves out the digit-to-digit spread that each run's own
``±`` carries, so it can resolve a gap smaller than those ``±``. Both runs must score the same
test digits (the same data set).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import matplotlib
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pyro_vae import UserError, importance_bounds, open_run, set_seed  # noqa: E402
from pyro_vae.cli import run_script  # noqa: E402
from pyro_vae.errors import ConfigError  # noqa: E402

TRAIN_SUBSET_SEED = 123  # which training digits, and their binarization


def _train_subset(data, points: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(TRAIN_SUBSET_SEED)
    idx = torch.randperm(data.num_train, generator=g)[:points]
    x = data.train_x[idx]
    return torch.bernoulli(x, generator=g) if data.binarize == "dynamic" else x


def score(path: Path, eval_samples: int, train_points: int) -> dict:
    opened = open_run(path)  # the model with its trained weights, in eval mode, and its data
    model, data = opened.model, opened.data
    if model.is_conditional:
        raise UserError(f"{path}: a conditional model; compare_runs scores p(x) only")
    out = {"path": str(path), "test_x": data.test_x}
    with torch.no_grad():
        set_seed(0)
        test = importance_bounds(model, data.test_x, None, eval_samples, (5,))
        out.update(test_elbo=test.elbo.mean().item(), test_log_px=test.log_px)
        if train_points:
            set_seed(0)
            train = importance_bounds(model, _train_subset(data, train_points), None,
                                      eval_samples, (5,))
            out.update(train_log_px=train.log_px.mean().item())
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("first", type=Path)
    p.add_argument("second", type=Path)
    p.add_argument("--eval-samples", type=int, default=1000)
    p.add_argument("--train-points", type=int, default=500, help="0 skips the training digits")
    p.add_argument("--out", type=Path, default=Path("runs/compare"),
                   help="folder for paired.png (the per-digit differences)")
    args = p.parse_args(argv)
    if args.eval_samples < 1 or args.train_points < 0:
        p.error("--eval-samples must be >= 1 and --train-points >= 0")
    a, b = (score(path, args.eval_samples, args.train_points)
            for path in (args.first, args.second))
    if a["test_x"].shape != b["test_x"].shape or not torch.equal(a["test_x"], b["test_x"]):
        raise ConfigError("the two runs were tested on different digits; compare runs of the "
                          "same data set")
    print(f"| run | test ELBO | test log p(x) [{args.eval_samples}] | train log p(x) "
          f"[{args.train_points} digits] | train - test |")
    print("| --- | --- | --- | --- | --- |")
    for r in (a, b):
        lp = r["test_log_px"]
        se = lp.std().item() / math.sqrt(len(lp))
        tr = r.get("train_log_px", math.nan)
        print(f"| {r['path']} | {r['test_elbo']:.2f} | {lp.mean().item():.2f} ± {se:.2f} | "
              f"{tr:.2f} | {tr - lp.mean().item():.1f} |")
    d = b["test_log_px"] - a["test_log_px"]
    diff, se = d.mean().item(), d.std().item() / math.sqrt(len(d))
    ahead = (d > 0).float().mean().item()
    print(f"\nsecond minus first, per test digit: {diff:+.2f} ± {se:.2f} (paired standard error "
          f"over {len(d)} digits); the second run is ahead on {100 * ahead:.0f}% of them")
    _plot(d, args, args.out / "paired.png")
    return {"difference": diff, "stderr": se, "ahead": ahead,
            "runs": [{k: v for k, v in r.items() if k not in ("test_x", "test_log_px")}
                     | {"test_log_px": r["test_log_px"].mean().item()} for r in (a, b)]}


def _plot(d: torch.Tensor, args, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.hist(d.cpu().numpy(), bins=40, color="tab:blue", alpha=0.8)
    ax.axvline(0.0, color="k", lw=0.8)
    ax.axvline(d.mean().item(), color="tab:red", lw=1.5, label=f"mean {d.mean().item():+.2f}")
    ax.set_xlabel(f"log p(x): {args.second.name} - {args.first.name}, per test digit (nats)")
    ax.set_ylabel("digits")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    run_script(main, __file__)  # a UserError: one line on stderr, exit 2, as pyro-vae does
