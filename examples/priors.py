"""Priors and guides of the Gaussian VAE at one budget: N(0, I) vs a learned mixture vs the
VampPrior (vs a flow prior), and the diagonal guide vs an inverse autoregressive flow.

    python examples/priors.py                                  # mnist-5k, 100 epochs each
    python examples/priors.py --variants normal,vamp --epochs 3 --dataset digits

Each variant is a run of the library's run layer (:func:`pyro_vae.run`) in ``--out/NAME``,
the same network, data, seed and epochs (``pyro-vae train vae --prior ... --posterior ...``
with the defaults otherwise); a folder that already holds the finished run of the same
settings is opened instead of trained again, so the four ``pyro-vae train`` commands of
docs/priors.md and this script share their runs. Per variant it prints the test log p(x)
(importance sampled, ``--num-samples``), the test ELBO, the gap between them, the active units,
I(x; z) where the run's ``metrics.json`` has it (``mutual_info``), and the paired difference to
the first variant: the mean over test digits of log p(x) under the variant minus under the
first, with its standard error over digits (per-digit log p(x) as ``pyro-vae score`` writes it,
kept in ``--out/NAME/scores.csv``). Writes ``samples.png`` (a row of decoded draws from each
variant's own prior) in ``--out``, and with ``--latent-dim 2`` ``latent_density.png`` (each
prior's density, and one draw of the guide per test digit: the aggregate posterior).
"""

from __future__ import annotations

import argparse
import csv
from dataclasses import asdict
from pathlib import Path

import torch

from pyro_vae import EvalConfig, RunConfig, TrainConfig, run, set_seed
from pyro_vae.cli import run_script
from pyro_vae.errors import ConfigError
from pyro_vae.importance import stderr_across_points
from pyro_vae.outliers import score_run, write_scores
from pyro_vae.plots import plt, save_figure, save_grid
from pyro_vae.runner import open_run

VARIANTS = {"normal": {}, "mog": {"prior": "mog"}, "vamp": {"prior": "vamp"},
            "flow": {"prior": "flow"}, "iaf": {"posterior": "iaf"}}


def _opened_or_trained(config: RunConfig, folder: Path) -> tuple:
    """(the run, its metrics): a finished folder of the same settings is opened, else trained."""
    if (folder / "metrics.json").is_file():
        opened = open_run(folder)
        same = (opened.config.model_config == config.model_config
                and asdict(opened.config.train) == asdict(config.train)
                and opened.config.dataset == config.dataset)
        if not same:
            raise ConfigError(f"{folder} holds a run of other settings; use another --out")
        return opened, opened.folder.read_metrics()
    result = run(config, folder, progress=False)
    return result.run, result.metrics


def _log_px(folder: Path, dataset: str, num_samples: int) -> torch.Tensor:
    """Per-test-point log p(x): ``scores.csv`` of the folder, written by ``pyro-vae score``
    (or here, by the same function) with ``num_samples`` importance samples."""
    path = folder / "scores.csv"
    if not path.is_file():
        write_scores(path, score_run(folder, dataset, num_samples=num_samples))
    with path.open() as f:
        return torch.tensor([float(r["log_px"]) for r in csv.DictReader(f)], dtype=torch.float64)


@torch.no_grad()
def save_latent_density(runs: dict, path: Path, lim: float = 4.0, n: int = 200) -> Path:
    """With 2 latent dimensions: each variant's prior density p(z) on a grid (shaded), and one
    draw z ~ q(z | x) per test digit (dots: a sample of the aggregate posterior)."""
    fig, axes = plt.subplots(1, len(runs), figsize=(3.2 * len(runs), 3.2), squeeze=False)
    t = torch.linspace(-lim, lim, n)
    grid = torch.stack(torch.meshgrid(t, t, indexing="xy"), -1).reshape(-1, 2)
    for ax, (name, opened) in zip(axes[0], runs.items(), strict=True):
        model, x = opened.model, opened.data.test_x
        log_p = model.prior_dist(x[:1]).log_prob(grid.to(x)).reshape(n, n).cpu()
        z = model.q(x).sample().cpu()
        ax.imshow(log_p.exp(), extent=(-lim, lim, -lim, lim), origin="lower", cmap="Blues")
        ax.scatter(z[:, 0], z[:, 1], s=2, c="tab:red", alpha=0.5)
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), title=f"{name}: p(z), z ~ q(z|x)")
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="mnist-5k")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--variants", default="normal,mog,vamp,iaf",
                   help=f"comma-separated, from {', '.join(VARIANTS)}; the first is the "
                        "reference of the paired differences")
    p.add_argument("--prior-components", type=int, default=50)
    p.add_argument("--latent-dim", type=int, default=50)
    p.add_argument("--num-samples", type=int, default=5000,
                   help="importance samples for log p(x), in metrics.json and per digit")
    p.add_argument("--num", type=int, default=12, help="samples per row")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=Path("runs/example-priors"))
    args = p.parse_args(argv)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown or not names:
        raise ConfigError(f"--variants takes names from {', '.join(VARIANTS)}, got "
                          f"{args.variants!r}")

    rows, sample_rows, reference, runs = [], [], None, {}
    for name in names:
        config = RunConfig.for_model(
            "vae", dataset=args.dataset, latent_dim=args.latent_dim,
            prior_components=args.prior_components, **VARIANTS[name],
            train=TrainConfig(epochs=args.epochs, seed=args.seed, device=args.device),
            eval=EvalConfig(num_samples=args.num_samples))
        opened, metrics = _opened_or_trained(config, args.out / name)
        runs[name] = opened
        log_px = _log_px(args.out / name, args.dataset, args.num_samples)
        reference = log_px if reference is None else reference
        diff = log_px - reference
        set_seed(args.seed)
        sample_rows.append(opened.model.sample(args.num).cpu())
        rows.append({"variant": name, "prior": opened.model.config.prior,
                     "posterior": opened.model.config.posterior,
                     "log_px": metrics.get("test_log_likelihood"),
                     "log_px_se": metrics.get("test_log_likelihood_stderr"),
                     "elbo": metrics.get("test_elbo"), "active": metrics.get("active_units"),
                     "mutual_info": metrics.get("mutual_info"),
                     "diff": float(diff.mean()),
                     "diff_se": stderr_across_points(diff),
                     "better": float((diff > 0).double().mean())})
    args.out.mkdir(parents=True, exist_ok=True)
    save_grid(torch.cat(sample_rows), args.out / "samples.png", nrow=args.num)
    if args.latent_dim == 2:
        save_latent_density(runs, args.out / "latent_density.png")
    print(f"{'variant':<8} {'prior':<6} {'guide':<5} {'log p(x)':>14} {'ELBO':>8} {'gap':>5} "
          f"{'active':>6} {'I(x;z)':>6} {f'vs {names[0]} per digit':>21} {'higher':>6}")
    for r in rows:
        mi = "-" if r["mutual_info"] is None else f"{r['mutual_info']:.2f}"
        print(f"{r['variant']:<8} {r['prior']:<6} {r['posterior']:<5} "
              f"{r['log_px']:>8.2f} ± {r['log_px_se']:<4.2f} {r['elbo']:>8.2f} "
              f"{r['log_px'] - r['elbo']:>5.2f} {r['active']:>6} {mi:>6} "
              f"{r['diff']:>+11.2f} ± {r['diff_se']:<7.2f} {100 * r['better']:>5.0f}%")
    print(f"log p(x) and ELBO in nats per test digit ({args.num_samples} importance samples); "
          f"'vs {names[0]}': mean over test digits of log p(x) minus {names[0]}'s, ± its "
          f"standard error; 'higher': share of digits where it is higher. "
          f"Rows of {args.out / 'samples.png'}: draws from each prior, in this order.")
    return rows


if __name__ == "__main__":
    run_script(main, __file__)  # a UserError: one line on stderr, exit 2, as pyro-vae does
