"""Test log-likelihoods of the examples beside the published figures of ../shared/design.md.

    .venv/bin/python benchmarks/quality.py                     # a short CPU budget on mnist-5k
    .venv/bin/python benchmarks/quality.py --dataset digits --epochs 1 --cvae-epochs 1 \\
        --eval-samples 50 --iwae-rows 1L-k1                    # a check that it runs (seconds)
    .venv/bin/python benchmarks/quality.py --dataset mnist --epochs 3280 --eval-samples 5000 \\
        --cvae-epochs 100 --device cuda                        # full MNIST (a GPU)

Figures (negative log-likelihoods in nats, lower is better; test split):

* Burda et al. (2016), Table 1: MNIST, dynamic binarization, -log p(x) from L_5000, batch 20,
  3,280 epochs. design.md lists 1 layer VAE k=1 86.76, IWAE k=5 85.54, IWAE k=50 84.78 and
  2 layers IWAE k=50 82.90 (``--iwae-rows``; any row of examples/iwae_table.py can be asked
  for). These rows run through ``examples/iwae_table.py``'s ``main``.
* Pyro's CVAE tutorial, quadrant completion on MNIST: -log p(missing | observed) 71.8, 51.0,
  24.2 for 1, 2, 3 observed quadrants; through ``examples/cvae.py --tasks quadrants``.

Both examples are loaded from their files (as tests/test_examples.py does) and run with the
budget given here; nothing of their logic is copied. Each prints its own progress; the last
table is figure | published | ours | data set, epochs, device | difference (ours - published).
The default budget (mnist-5k; 5 epochs per IWAE row at batch 20, 10 per CVAE model, 1,000
importance samples) took 4 minutes 7 seconds on one core of this workplace's CPU
(docs/benchmarks.md has its table).
On ``mnist-5k`` (4,500 training / 500 test digits) or ``digits`` the figures are not the
published setting and the table says so: such a difference measures the budget and the data,
not the library.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from pyro_vae.errors import UserError
from pyro_vae.runtime import resolve_device

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
DESIGN_ROWS = "1L-k1,1L-iwae-k5,1L-iwae-k50,2L-iwae-k50"  # the IWAE figures design.md lists
PARTS = ("iwae", "cvae")


def load_example(name: str):
    """An example script as a module (its ``main(argv)`` is what this benchmark runs)."""
    spec = importlib.util.spec_from_file_location(f"example_{Path(name).stem}", EXAMPLES / name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def iwae_rows(args, device: str) -> list[dict]:
    table = load_example("iwae_table.py")
    rows = table.main(["--dataset", args.dataset, "--rows", ",".join(args.iwae_rows), "--epochs",
                       str(args.epochs), "--batch-size", str(args.batch_size),
                       "--eval-samples", str(args.eval_samples), "--seed", str(args.seed),
                       "--device", args.device, "--out", str(args.out / "iwae-table"),
                       *(["--resume"] if args.resume else []), "--no-progress"])
    return [{"figure": f"Burda et al. Table 1: {r['label']}", "published": r["paper_nll"],
             "ours": r["nll"], "stderr": r["nll_stderr"], "dataset": args.dataset,
             "epochs": r["epochs"], "device": device} for r in rows]


def cvae_rows(args, device: str) -> list[dict]:
    cvae = load_example("cvae.py")
    result = cvae.main(["--tasks", "quadrants", "--dataset", args.dataset, "--epochs",
                        str(args.cvae_epochs), "--eval-samples", str(args.eval_samples),
                        "--seed", str(args.seed), "--device", args.device,
                        "--out", str(args.out / "cvae")])
    return [{"figure": f"Pyro CVAE tutorial: {r['quadrants']} observed quadrant"
                       f"{'s' if r['quadrants'] > 1 else ''}",
             "published": r["pyro_tutorial"], "ours": r["nll"], "stderr": r["stderr"],
             "dataset": args.dataset, "epochs": args.cvae_epochs, "device": device}
            for r in result["quadrants"]]


def render(rows: list[dict], dataset: str) -> str:
    lines = ["| figure | published | ours | data set, epochs, device | difference |",
             "| --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['figure']} | {r['published']:.2f} | {r['ours']:.2f} +- "
                     f"{r['stderr']:.2f} | {r['dataset']}, {r['epochs']}, {r['device']} | "
                     f"{r['ours'] - r['published']:+.2f} |")
    lines.append("")
    lines.append("Published figures: full MNIST (60,000 training / 10,000 test images); the "
                 "IWAE rows with dynamic binarization, batch 20 and 3,280 epochs.")
    if dataset == "mnist-5k":
        lines.append("mnist-5k figures are NOT the papers' setting: 4,500 training and 500 "
                     "test digits, a short budget; the differences are not comparable.")
    elif dataset != "mnist":
        lines.append(f"{dataset} is not MNIST: these figures are NOT comparable with the "
                     "published ones.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="mnist-5k", choices=("mnist", "mnist-5k", "digits"))
    p.add_argument("--parts", default="iwae,cvae", help="comma-separated: iwae, cvae")
    p.add_argument("--iwae-rows", type=load_example("iwae_table.py").row_ids,
                   default=DESIGN_ROWS.split(","),
                   help="rows of examples/iwae_table.py ('all' for the whole Table 1)")
    p.add_argument("--epochs", type=int, default=5,
                   help="epochs of each IWAE row (of the paper's 3,280-epoch schedule)")
    p.add_argument("--batch-size", type=int, default=20, help="IWAE rows (the paper: 20)")
    p.add_argument("--cvae-epochs", type=int, default=10, help="epochs of each CVAE model")
    p.add_argument("--eval-samples", type=int, default=1000,
                   help="importance samples per test image (the papers: 5000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--resume", action="store_true",
                   help="continue the IWAE rows from their checkpoints under --out")
    p.add_argument("--out", type=Path, default=Path("runs/quality"))
    args = p.parse_args(argv)
    parts = [s.strip() for s in args.parts.split(",") if s.strip()]
    if not parts or not set(parts) <= set(PARTS):
        p.error(f"--parts {args.parts!r}: give iwae and/or cvae, comma-separated")
    device = str(resolve_device(args.device))
    rows = []
    if "iwae" in parts:
        rows += iwae_rows(args, device)
    if "cvae" in parts:
        rows += cvae_rows(args, device)
    table = render(rows, args.dataset)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quality.md").write_text(table + "\n")
    print(f"\ntest NLL, nats (lower is better); written to {args.out / 'quality.md'}")
    print(table)
    return rows


if __name__ == "__main__":
    try:
        main()
    except UserError as exc:
        print(f"quality.py: error: {' '.join(str(exc).split())}", file=sys.stderr)
        sys.exit(2)
