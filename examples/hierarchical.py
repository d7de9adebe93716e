"""One vs two stochastic layers, VAE (trace) vs IWAE (k=5): test log-likelihood and active units.

    python examples/hierarchical.py                      # mnist-5k, 30 epochs each
    python examples/hierarchical.py --epochs 2 --dataset digits --eval-samples 100

In the spirit of Table 1 of Burda et al. (2016): the one-layer model is 784-[200-200 tanh]-50,
the two-layer model 784-[200-200 tanh]-100-[100-100 tanh]-50 (``hvae``), each trained with the
ELBO (``trace``, one sample) and with the IWAE bound (k=5), same epochs, batch, seed and
initialisation (``--init iwae``: Glorot weights, zero biases, decoder bias at the mean pixel).
Prints a table (also ``table.md``) and draws ``loglik.png``. Each row is a run of the library's
run layer (:func:`pyro_vae.run`) in ``--out/MODEL-OBJECTIVE`` (``vae-trace``, ``vae-iwae``,
``hvae-trace``, ``hvae-iwae``) with its checkpoint, metrics (evaluated with seed ``--seed``) and
pictures, which ``pyro-vae evaluate/sample/plot`` and ``examples/compare_runs.py`` open.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pyro_vae import EvalConfig, RunConfig, TrainConfig, run  # noqa: E402
from pyro_vae.cli import run_script  # noqa: E402
from pyro_vae.errors import check_positive  # noqa: E402
from pyro_vae.models.hierarchical import IWAE_PAPER_NETWORKS  # noqa: E402

ROWS = [  # (label, stochastic layers, objective, k, colour of loglik.png)
    ("1 layer, VAE (trace)", 1, "trace", 1, "tab:blue"),
    ("1 layer, IWAE k=5", 1, "iwae", 5, "tab:blue"),
    ("2 layers, VAE (trace)", 2, "trace", 1, "tab:orange"),
    ("2 layers, IWAE k=5", 2, "iwae", 5, "tab:orange"),
]


def _settings(layers: int, parameterization: str, arch: str, init: str) -> dict:
    """The paper's network with ``layers`` stochastic layers
    (pyro_vae.models.hierarchical.IWAE_PAPER_NETWORKS) with this run's architecture and
    initialisation, and this run's guide where the network has a choice of guide."""
    settings = IWAE_PAPER_NETWORKS[layers][1] | {"arch": arch, "init": init}
    if "parameterization" in settings:
        settings["parameterization"] = parameterization
    return settings


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="mnist-5k")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--parameterization", default="iwae", help="hvae guide: iwae or residual")
    p.add_argument("--arch", default="mlp", help="mlp or conv")
    p.add_argument("--init", default="iwae",
                   help="iwae (Glorot weights, zero biases, decoder bias at the data's mean "
                        "pixel, as the IWAE paper's code) or torch (PyTorch's default); every row")
    p.add_argument("--kl-warmup-epochs", type=int, default=0,
                   help="ramp the KL weight from 0 over these epochs (pyro_vae.annealing)")
    p.add_argument("--eval-samples", type=int, default=5000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--rows", default="0,1,2,3",
                   help="which rows of the table to train (0-3; e.g. 0,3 for the two that the "
                        "issue compares)")
    p.add_argument("--out", type=Path, default=Path("runs/example-hierarchical"))
    args = p.parse_args(argv)

    check_positive("--eval-samples", args.eval_samples)  # the table needs log p(x)
    chosen = [ROWS[int(i)] for i in args.rows.split(",")]
    runs = []  # every setting is checked before the first row trains
    for label, layers, objective, k, colour in chosen:
        config = RunConfig.for_model(
            IWAE_PAPER_NETWORKS[layers][0], dataset=args.dataset,
            train=TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                              objective=objective, num_particles=k, seed=args.seed,
                              device=args.device, kl_warmup_epochs=args.kl_warmup_epochs),
            eval=EvalConfig(num_samples=args.eval_samples, seed=args.seed),
            **_settings(layers, args.parameterization, args.arch, args.init))
        runs.append((label, colour, config))
    rows = []
    for label, colour, config in runs:
        result = run(config, args.out / f"{config.model}-{config.train.objective}",
                     progress=False)
        m = result.metrics
        rows.append({"label": label, "model": config.model,
                     "objective": config.train.objective, "k": config.train.num_particles,
                     "colour": colour, "log_px": m["test_log_likelihood"],
                     "stderr": m["test_log_likelihood_stderr"], "elbo": m["test_elbo"],
                     "active": m["active_units_per_site"], "seconds": result.training.seconds})
        print(_row(rows[-1]), flush=True)
    table = "\n".join([f"| model ({args.epochs} epochs, {args.dataset}) | test ELBO | test "
                       f"log p(x) [{args.eval_samples} samples] | active units per layer | "
                       "train s |", "| --- | --- | --- | --- | --- |", *map(_row, rows)])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(table + "\n")
    _plot(rows, args.out / "loglik.png")
    print(table)
    return rows


def _row(r: dict) -> str:
    active = ", ".join(f"{site}: {n}" for site, n in r["active"].items())
    return (f"| {r['label']} | {r['elbo']:.2f} | {r['log_px']:.2f} +- {r['stderr']:.2f} | "
            f"{active} | {r['seconds']:.0f} |")


def _plot(rows: list[dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 2.8))
    y = range(len(rows))
    for i, r in zip(y, rows, strict=True):
        ax.errorbar(r["log_px"], i, xerr=r["stderr"], fmt="o", capsize=4,
                    color=r["colour"])
    ax.set_yticks(list(y), [r["label"] for r in rows])
    lo = min(r["log_px"] for r in rows)
    hi = max(r["log_px"] for r in rows)
    ax.set_xlim(lo - 0.2 * (hi - lo + 1), hi + 0.2 * (hi - lo + 1))
    ax.set_xlabel("test log p(x), nats (higher is better)")
    ax.invert_yaxis()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    run_script(main, __file__)  # a UserError: one line on stderr, exit 2, as pyro-vae does
