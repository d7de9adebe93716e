"""Burda et al. (2016), Table 1 on MNIST: VAE vs IWAE, 1 and 2 stochastic layers, k = 1, 5, 50.

    python examples/iwae_table.py                       # the paper's protocol, full MNIST (GPU)
    python examples/iwae_table.py --rows 1L-k1,1L-iwae-k5 --epochs 40 --eval-samples 1000
    python examples/iwae_table.py --dataset mnist-5k --epochs 3 --eval-samples 500  # offline
    python examples/iwae_table.py --resume              # continue every row from its checkpoint

The paper's protocol, as pyro_vae runs it (the defaults):

* data: MNIST (60,000 / 10,000) with dynamic binarization, a fresh Bernoulli draw of every grey
  value each time an image is used (pyro_vae binarizes the test split once, with a fixed seed);
* 1 layer: 784-[200-200 tanh]-50 (``vae``); 2 layers: 784-[200-200 tanh]-100-[100-100
  tanh]-50 (``hvae``, the IWAE paper's bottom-up guide); Bernoulli pixels;
* VAE with k: objective ``trace`` with k particles (the k-sample ELBO); IWAE with k: objective
  ``iwae``, the bound L_k; k = 1 is the same model either way (one row per depth);
* batch 20, Adam (lr 1e-3, eps 1e-4), ``lr_schedule="iwae"``: stage i = 0..7 lasts 3^i
  epochs at lr * 10^(-i/7), 3,280 epochs in all (``--epochs N`` trains its first N epochs);
* test NLL = -log p(x) estimated with 5,000 importance samples per test image (L_5000);
  active units: Cov_x(E_q[u]) > 0.01, per stochastic layer (printed ``z1+z2``).

Cost: the full protocol is 3,280 epochs per row, about 9.8 million steps of batch 20 on full
MNIST, and ten rows: it is meant for a GPU, and its time there is unmeasured. On one shared CPU
core, one epoch of ``mnist-5k`` (225 steps) took 5 s (1 layer, k=1) to 22 s (2 layers, IWAE
k=50). Both networks use the paper code's initialisation (``init="iwae"``: Glorot-uniform
weights, zero biases, the output bias at the logit of the mean training pixel).
Bad settings and an unloadable data set stop with one line before any training; an existing
row folder is refused unless ``--resume`` is given.

On ``mnist-5k`` (4,500 training digits instead of 60,000; 500 test digits) or ``digits`` (8x8)
the numbers are not comparable with the paper's; the table says so. ``--dataset mnist`` needs
torchvision's download (on a user's machine); offline it stops with one line.

Prints the table beside the paper's NLLs and the difference (ours - paper: positive is worse),
writes ``table.md``, ``table.csv`` and ``nll.png`` under ``--out``, and one run folder per row,
``--out/ROW_ID``, made by the library's run layer (:func:`pyro_vae.run`, or
:func:`pyro_vae.resume` with ``--resume``): ``config.json``, ``checkpoint.pt``,
``history.csv``, ``metrics.json``, which ``pyro-vae evaluate/sample/plot`` open. The
evaluation (seed ``--seed``, the IWAE bounds L_5 and L_50 that divide ``--eval-samples``) is
the run's own, so ``pyro-vae evaluate ROW_FOLDER --num-samples N`` repeats it.
"""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import asdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pyro_vae import (  # noqa: E402
    EvalConfig,
    RunConfig,
    RunFolder,
    TrainConfig,
    resume,
    run,
)
from pyro_vae.cli import run_script  # noqa: E402
from pyro_vae.errors import ConfigError, check_positive  # noqa: E402
from pyro_vae.models.hierarchical import IWAE_PAPER_NETWORKS  # noqa: E402
from pyro_vae.objectives import OBJECTIVES  # noqa: E402
from pyro_vae.runner import read_config  # noqa: E402

FULL_EPOCHS = 3280  # sum of 3^i, i = 0..7
DATASETS = ("mnist", "mnist-5k", "digits")
# id: (stochastic layers, objective, k, the paper's test NLL on MNIST, Table 1)
ROWS = {
    "1L-k1": (1, "trace", 1, 86.76),
    "1L-vae-k5": (1, "trace", 5, 86.47),
    "1L-iwae-k5": (1, "iwae", 5, 85.54),
    "1L-vae-k50": (1, "trace", 50, 86.35),
    "1L-iwae-k50": (1, "iwae", 50, 84.78),
    "2L-k1": (2, "trace", 1, 85.33),
    "2L-vae-k5": (2, "trace", 5, 85.01),
    "2L-iwae-k5": (2, "iwae", 5, 83.89),
    "2L-vae-k50": (2, "trace", 50, 84.78),
    "2L-iwae-k50": (2, "iwae", 50, 82.90),
}
COLUMNS = ["id", "label", "layers", "model", "objective", "k", "dataset", "device", "epochs",
           "batch_size", "eval_samples", "nll", "nll_stderr", "nll_mc_stderr", "paper_nll",
           "difference", "test_elbo", "active_units", "train_seconds"]


def label(row_id: str) -> str:
    """IWAE where the objective is a multi-sample bound (L_k), VAE where it is the k-sample
    ELBO (the objective registry's ``multi_sample``)."""
    layers, objective, k, _ = ROWS[row_id]
    name = "VAE = IWAE" if k == 1 else ("IWAE" if OBJECTIVES[objective].multi_sample else "VAE")
    return f"{layers} layer{'s' if layers > 1 else ''}, k={k}, {name}"


def row_ids(text: str) -> list[str]:
    ids = list(ROWS) if text == "all" else [s.strip() for s in text.split(",") if s.strip()]
    unknown = [i for i in ids if i not in ROWS]
    if unknown or not ids or len(set(ids)) != len(ids):
        raise argparse.ArgumentTypeError(
            f"{text!r}: give 'all' or distinct row ids from {', '.join(ROWS)}")
    return ids


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="mnist", choices=DATASETS)
    p.add_argument("--rows", type=row_ids, default=list(ROWS),
                   help=f"'all' or comma-separated ids: {', '.join(ROWS)}")
    p.add_argument("--epochs", type=int, default=FULL_EPOCHS,
                   help=f"train the first N epochs of the {FULL_EPOCHS}-epoch schedule")
    p.add_argument("--batch-size", type=int, default=20)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--adam-eps", type=float, default=1e-4)
    p.add_argument("--lr-schedule", default="iwae", help="iwae (the paper's) or constant")
    p.add_argument("--eval-samples", type=int, default=5000,
                   help="importance samples per test image for log p(x) (the paper: 5000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--resume", action="store_true",
                   help="continue each row from the checkpoint in its run folder")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction,
                   default=sys.stderr.isatty(), help="progress bars (default: on a terminal)")
    p.add_argument("--out", type=Path, default=Path("runs/iwae-table"))
    return p


def main(argv: list[str] | None = None) -> list[dict]:
    p = parser()
    args = p.parse_args(argv)
    # every setting is checked before hours of training: a UserError, one line from the shell
    check_positive("--eval-samples", args.eval_samples)
    configs = {i: row_config(i, args) for i in args.rows}
    for i in args.rows:
        if RunFolder(args.out / i).has_checkpoint() and not args.resume:
            raise ConfigError(f"{args.out / i} already holds a run; pass --resume to continue "
                              "it or choose another --out")
    rows = []
    for i in args.rows:
        rows.append(run_row(i, configs[i], args))
        print(_line(rows[-1]), flush=True)
    table = render(rows, args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(table + "\n")
    with (args.out / "table.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    _plot(rows, args.out / "nll.png")
    print(table)
    return rows


def row_config(row_id: str, args) -> RunConfig:
    """The run of one row: the paper's network for its depth, its objective and k, and the
    evaluation with the IWAE bounds L_5, L_50 that divide ``--eval-samples``."""
    layers, objective, k, _ = ROWS[row_id]
    name, settings = IWAE_PAPER_NETWORKS[layers]
    train = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                        adam_eps=args.adam_eps, lr_schedule=args.lr_schedule,
                        objective=objective, num_particles=k, seed=args.seed, device=args.device)
    ks = tuple(j for j in (5, 50) if args.eval_samples % j == 0)
    evaluation = EvalConfig(num_samples=args.eval_samples, iwae_ks=ks, seed=args.seed,
                            pictures=False)
    return RunConfig.for_model(name, dataset=args.dataset, train=train, eval=evaluation,
                               **settings)


def run_row(row_id: str, config: RunConfig, args) -> dict:
    """Train one row (or continue it) and evaluate it; its run folder is ``--out/ROW_ID``."""
    _, objective, k, paper = ROWS[row_id]
    out = args.out / row_id
    if args.resume and RunFolder(out).has_checkpoint():
        saved = read_config(RunFolder(out))
        if (saved.model, saved.model_config, saved.dataset) != (
                config.model, config.model_config, config.dataset):
            raise ConfigError(f"{out} holds a run of {saved.model} on {saved.dataset}, not row "
                              f"{row_id} on {config.dataset}")
        result = resume(out, progress=args.progress, eval=config.eval, **asdict(config.train))
    else:
        result = run(config, out, progress=args.progress)
    m, training = result.metrics, result.training
    nll = -m["test_log_likelihood"]
    return {"id": row_id, "label": label(row_id), "layers": ROWS[row_id][0],
            "model": config.model, "objective": objective, "k": k, "dataset": config.dataset,
            "device": m["device"], "epochs": training.epochs,
            "batch_size": config.train.batch_size, "eval_samples": args.eval_samples,
            "nll": nll, "nll_stderr": m["test_log_likelihood_stderr"],
            "nll_mc_stderr": m["test_log_likelihood_mc_stderr"], "paper_nll": paper,
            "difference": nll - paper, "test_elbo": m["test_elbo"],
            "active_units": "+".join(str(n) for n in m["active_units_per_site"].values()),
            "train_seconds": round(training.seconds, 1)}


def _line(r: dict) -> str:
    return (f"| {r['label']} | {r['nll']:.2f} +- {r['nll_stderr']:.2f} | {r['paper_nll']:.2f} "
            f"| {r['difference']:+.2f} | {r['active_units']} | {-r['test_elbo']:.2f} | "
            f"{r['epochs']} | {r['train_seconds']:.0f} |")


def caveats(dataset: str, epochs: int, eval_samples: int, batch_size: int) -> list[str]:
    """Why a table's numbers may not be comparable with the paper's (empty when they are)."""
    notes = []
    if dataset == "mnist-5k":
        notes.append("mnist-5k is not the paper's setting: 4,500 training digits instead of "
                     "60,000 and 500 test digits; its NLLs are not comparable with the paper's")
    elif dataset != "mnist":
        notes.append(f"{dataset} is not MNIST: its NLLs are not comparable with the paper's")
    if epochs < FULL_EPOCHS:
        notes.append(f"training stopped after {epochs} of the schedule's {FULL_EPOCHS} epochs")
    if eval_samples != 5000:
        notes.append(f"log p(x) from {eval_samples} importance samples, not 5,000")
    if batch_size != 20:
        notes.append(f"batch {batch_size}, not 20")
    return notes


def render(rows: list[dict], args) -> str:
    device = rows[0]["device"] if rows else "-"
    head = (f"| Burda et al. Table 1 ({args.dataset}, {args.epochs} epochs, batch "
            f"{args.batch_size}, {device}) | ours: test NLL [L_{args.eval_samples}] | paper "
            "(MNIST) | ours - paper | active units | ours: -ELBO | epochs | train s |")
    lines = [head, "| --- | --- | --- | --- | --- | --- | --- | --- |", *map(_line, rows)]
    notes = caveats(args.dataset, args.epochs, args.eval_samples, args.batch_size)
    if notes:
        lines += ["", "Not the paper's protocol: " + "; ".join(notes) + "."]
    return "\n".join(lines)


def _plot(rows: list[dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 0.35 * len(rows) + 1.2))
    y = list(range(len(rows)))
    ax.errorbar([r["nll"] for r in rows], y, xerr=[r["nll_stderr"] for r in rows], fmt="o",
                capsize=3, label="pyro_vae")
    ax.plot([r["paper_nll"] for r in rows], y, "x", color="black", label="Burda et al. (MNIST)")
    ax.set_yticks(y, [r["label"] for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel("test NLL, nats (lower is better)")
    ax.legend(loc="best", fontsize=8)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    run_script(main, __file__)  # a UserError: one line on stderr, exit 2, as pyro-vae does
