"""Annealed importance sampling against importance sampling, per test digit, against k-hat.

    python examples/ais.py --run runs/vae --out runs/ais-gap     # a trained run
    python examples/ais.py --epochs 20 --out runs/ais-gap         # trains a digits VAE first

For each of the first ``--points`` test points of a run: log p(x) by AIS (``pyro-vae evaluate
RUN --estimator ais`` computes it and keeps it per point in metrics.json; done here when the
run has none for these settings), log p(x) by importance sampling from the guide with
``--num-samples`` samples, and the PSIS k-hat of the guide from those same samples (the
function ``pyro-vae diagnose`` uses). Prints the mean of both and the gap AIS - IS by k-hat
band, draws ``ais_gap.png`` (the gap per point against its k-hat) and writes them per point
to ``ais_gap.csv``. Thin over the run layer
(:func:`pyro_vae.run`, :func:`pyro_vae.open_run`, :func:`pyro_vae.evaluate_run`).
"""

from __future__ import annotations

import argparse
import csv
import json
from dataclasses import replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from pyro_vae import (  # noqa: E402
    EvalConfig,
    RunConfig,
    TrainConfig,
    evaluate_run,
    open_run,
    run,
    set_seed,
)
from pyro_vae.arviz_compat import psis_khat  # noqa: E402
from pyro_vae.cli import run_script  # noqa: E402
from pyro_vae.diagnostics import KHAT_GOOD, KHAT_OK, guide_log_ratios  # noqa: E402
from pyro_vae.errors import ConfigError  # noqa: E402


def _bands(khat: np.ndarray) -> dict[str, np.ndarray]:
    """Yao et al.'s k-hat bands as ``diagnostics.khat_summary`` counts them (-inf, the guide
    is the posterior, is good)."""
    return {f"k < {KHAT_GOOD}": khat < KHAT_GOOD,
            f"{KHAT_GOOD} <= k <= {KHAT_OK}": (khat >= KHAT_GOOD) & (khat <= KHAT_OK),
            f"k > {KHAT_OK}": khat > KHAT_OK}


def _ais_per_point(folder: Path, eval_config: EvalConfig,
                   args) -> tuple[list[float], list[float]] | None:
    """The run's per-point AIS estimates and their Monte Carlo errors at these settings,
    computed if it has none."""
    def stored() -> tuple[list[float], list[float]] | None:
        m = json.loads((folder / "metrics.json").read_text())
        same = all(m.get(f"ais_{k}") == getattr(args, f"ais_{k}")
                   for k in ("steps", "chains", "leapfrog"))
        if not same or "test_log_px_ais_per_point" not in m:
            return None
        return m["test_log_px_ais_per_point"], m["test_log_px_ais_per_point_mc_stderr"]

    if stored() is None:
        settings = replace(eval_config, num_samples=0, pictures=False, estimator="ais",
                           ais_steps=args.ais_steps, ais_chains=args.ais_chains,
                           ais_leapfrog=args.ais_leapfrog)
        evaluate_run(folder, settings, progress=False)
    return stored()


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, help="a trained run folder (default: train one)")
    p.add_argument("--dataset", default="digits", help="data set of the run trained here")
    p.add_argument("--epochs", type=int, default=20, help="epochs of the run trained here")
    p.add_argument("--latent-dim", type=int, default=8)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--points", type=int, default=500, help="test points (500)")
    p.add_argument("--num-samples", type=int, default=5000,
                   help="importance samples a point, also k-hat's draws (5000)")
    p.add_argument("--ais-steps", type=int, default=500)
    p.add_argument("--ais-chains", type=int, default=8)
    p.add_argument("--ais-leapfrog", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("runs/ais-gap"))
    args = p.parse_args(argv)
    if args.num_samples < 100:
        raise ConfigError(f"--num-samples must be at least 100 for k-hat, got "
                          f"{args.num_samples}")
    folder = args.run
    if folder is None:
        config = RunConfig.for_model("vae", dataset=args.dataset, latent_dim=args.latent_dim,
                                     hidden=(args.hidden,),
                                     train=TrainConfig(epochs=args.epochs, batch_size=64),
                                     eval=EvalConfig(num_samples=0, pictures=False))
        folder = run(config, args.out / "vae", progress=False).run.path
    opened = open_run(folder)
    model, data = opened.model, opened.data
    ais_all, ais_se = (np.asarray(v, dtype=np.float64)
                       for v in _ais_per_point(Path(folder), opened.config.eval, args))
    n = min(args.points, len(ais_all))
    x = data.test_x[:n]
    y = data.test_y[:n] if model.is_conditional else None
    set_seed(0)
    ratios = guide_log_ratios(model, x, y, args.num_samples, max_elements=2**25)  # (points, S)
    is_px = (ratios.logsumexp(1) - np.log(args.num_samples)).cpu().numpy()
    khat = psis_khat(ratios.cpu().numpy())
    gap = ais_all[:n] - is_px
    rows = {"points": n, "is": float(is_px.mean()), "ais": float(ais_all[:n].mean()),
            "gap": float(gap.mean()), "gap_positive": int((gap > 0).sum()),
            "spearman": float(spearmanr(khat, gap).statistic), "bands": []}
    for label, sel in _bands(khat).items():
        rows["bands"].append({"band": label, "points": int(sel.sum()),
                              "gap": float(gap[sel].mean()) if sel.any() else float("nan")})
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "ais_gap.csv").open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["point", "log_px_is", "log_px_ais", "ais_mc_stderr", "khat"])
        for i in range(n):
            out.writerow([i, f"{is_px[i]:.4f}", f"{ais_all[i]:.4f}", f"{ais_se[i]:.4f}",
                          f"{khat[i]:.4f}"])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(khat, gap, s=8, alpha=0.6)
    for t in (KHAT_GOOD, KHAT_OK):
        ax.axvline(t, color="grey", ls=":", lw=1)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xlabel(f"PSIS k-hat of the guide ({args.num_samples} draws)")
    ax.set_ylabel("AIS - IS log p(x) [nats]")
    ax.set_title(f"{n} test points: AIS ({args.ais_steps} steps, {args.ais_chains} chains) "
                 f"- IS ({args.num_samples})", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.out / "ais_gap.png", dpi=100)
    plt.close(fig)
    print(f"{n} test points of {folder}")
    print(f"  log p(x), importance sampling ({args.num_samples}): {rows['is']:.3f}")
    print(f"  log p(x), AIS ({args.ais_steps} steps, {args.ais_chains} chains, "
          f"{args.ais_leapfrog} leapfrog): {rows['ais']:.3f}")
    print(f"  gap AIS - IS: mean {rows['gap']:.3f}, positive on {rows['gap_positive']} of {n}; "
          f"Spearman correlation with k-hat {rows['spearman']:.2f}")
    print(f"  AIS's Monte Carlo error per point: median {np.median(ais_se[:n]):.3f}, largest "
          f"{ais_se[:n].max():.3f}; the lowest gap {gap.min():.3f} (point {gap.argmin()})")
    for b in rows["bands"]:
        print(f"  {b['band']:<16} {b['points']:>4} points, mean gap {b['gap']:.3f}")
    print(f"picture: {args.out / 'ais_gap.png'}, per point: {args.out / 'ais_gap.csv'}")
    return rows


if __name__ == "__main__":
    run_script(main, __file__)
