"""One vs two stochastic layers, VAE (trace) vs IWAE (k=5): test log-likelihood and active units.

    python examples/hierarchical.py                      # mnist-5k, 30 epochs each
    python examples/hierarchical.py --epochs 2 --dataset digits --eval-samples 100

In the spirit of Table 1 of Burda et al. (2016): the one-layer model is 784-[200-200 tanh]-50,
the two-layer model 784-[200-200 tanh]-100-[100-100 tanh]-50 (``hvae``), each trained with the
ELBO (``trace``, one sample) and with the IWAE bound (k=5), same epochs, batch, seed and
initialisation (``--init iwae``: Glorot weights, zero biases, decoder bias at the mean pixel).
Prints a table (also ``table.md``), draws ``loglik.png``, and keeps one run folder per row.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pyro_vae import (  # noqa: E402,E501
    RunFolder,
    TrainConfig,
    __version__,
    build_model,
    evaluate,
    load_dataset,
    set_seed,
    train,
)
from pyro_vae.errors import UserError  # noqa: E402
from pyro_vae.evaluate import check_num_samples  # noqa: E402
from pyro_vae.models.hierarchical import IWAE_PAPER_NETWORKS  # noqa: E402
from pyro_vae.plots import save_run_pictures  # noqa: E402
from pyro_vae.runtime import resolve_device  # noqa: E402

ROWS = [  # (label, model, settings, objective, k)
    ("1 layer, VAE (trace)", "vae", {}, "trace", 1),
    ("1 layer, IWAE k=5", "vae", {}, "iwae", 5),
    ("2 layers, VAE (trace)", "hvae", {}, "trace", 1),
    ("2 layers, IWAE k=5", "hvae", {}, "iwae", 5),
]


def _settings(model: str, parameterization: str, arch: str, init: str) -> dict:
    """The paper's network of ``model`` (pyro_vae.models.hierarchical.IWAE_PAPER_NETWORKS)
    with this run's guide, architecture and initialisation."""
    settings = IWAE_PAPER_NETWORKS[1 if model == "vae" else 2][1] | {"arch": arch, "init": init}
    if model == "hvae":
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
    try:
        check_num_samples(args.eval_samples)
    except UserError as e:
        p.error(str(e))

    device = resolve_device(args.device)
    rows = []
    chosen = [ROWS[int(i)] for i in args.rows.split(",")]
    for label, name, _, objective, k in chosen:
        set_seed(args.seed)
        data = load_dataset(args.dataset, device=device)
        model = build_model(name, data.shape, **_settings(name, args.parameterization, args.arch,
                                                     args.init))
        config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                             objective=objective, num_particles=k, seed=args.seed,
                             device=args.device, kl_warmup_epochs=args.kl_warmup_epochs)
        run = RunFolder(args.out / f"{name}-{objective}")
        run.write_config({"model": name, "model_config": model.config_dict(),
                          "dataset": args.dataset, "binarize": data.binarize,
                          "train": asdict(config), "pyro_vae_version": __version__})
        result = train(model, data, config, run, progress=False)
        set_seed(args.seed)
        m = evaluate(model, data.test_x, num_samples=args.eval_samples)
        run.update_metrics(m | {"seconds": result.seconds, "objective": objective})
        save_run_pictures(model, data, run.path, result.history)
        rows.append({"label": label, "model": name, "objective": objective, "k": k,
                     "log_px": m["test_log_likelihood"],
                     "stderr": m["test_log_likelihood_stderr"], "elbo": m["test_elbo"],
                     "active": m["active_units_per_site"], "seconds": result.seconds})
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
                    color="tab:blue" if r["model"] == "vae" else "tab:orange")
    ax.set_yticks(list(y), [r["label"] for r in rows])
    lo = min(r["log_px"] for r in rows)
    hi = max(r["log_px"] for r in rows)
    ax.set_xlim(lo - 0.2 * (hi - lo + 1), hi + 0.2 * (hi - lo + 1))
    ax.set_xlabel("test log p(x), nats (higher is better)")
    ax.invert_yaxis()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    main()
