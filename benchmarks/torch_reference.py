"""The same VAE trained by a hand-written PyTorch loss and by pyro_vae's SVI path.

    .venv/bin/python benchmarks/torch_reference.py --threads 1     # 100 epochs each, L_5000
    .venv/bin/python benchmarks/torch_reference.py --epochs 5 --eval-samples 500 --out t.csv

What it measures: how far a plain PyTorch VAE of the same size and schedule gets on
``mnist-5k`` (4,500 training / 500 test digits, dynamic binarization), against
``pyro_vae.train.train`` (``Trace_ELBO``), in test ELBO, test log p(x) and seconds per epoch.

Both paths start from the same network and initialization (``build_model("vae")``: 784-400-50,
relu, after ``set_seed(--seed)``), see the same minibatches (``Dataset.batches``, batch 128)
and use Adam (lr 1e-3, eps 1e-8). The hand-written loss is the closed-form Gaussian
KL(q(z|x) || N(0, I)) plus the Bernoulli negative log-likelihood of one reparameterized sample,
averaged per data point. pyro_vae's SVI instead sums a Monte Carlo KL over the minibatch and
scales it to the data set's size (``num_data=4500``); Adam is nearly invariant to that constant
factor (only its eps is, in effect, rescaled). The hand-written loop also scores the test ELBO
after each epoch with the same ``mean_elbo`` that ``train`` calls, so the two per-epoch timings
cover the same work and the two runs draw the same random numbers (permutations, binarization,
epsilons) in the same order. Both models are then scored by the same
``pyro_vae.evaluate.evaluate``. Prints a table and the ratio of seconds per epoch.
"""

from __future__ import annotations

import argparse
import csv
import time

import pyro
import torch
from torch.nn import functional as F

from pyro_vae import (
    TrainConfig,
    UserError,
    build_model,
    evaluate,
    load_dataset,
    set_seed,
    train,
)
from pyro_vae.evaluate import check_num_samples, mean_elbo

PATHS = ("torch", "pyro")
SETTINGS = {"latent_dim": 50, "hidden": (400,), "activation": "relu"}
COLUMNS = ("path", "epochs", "train_seconds", "seconds_per_epoch", "test_elbo",
           "test_log_px", "test_log_px_stderr", "active_units")


def torch_loss(model, x: torch.Tensor) -> torch.Tensor:
    """Negative ELBO per data point: Bernoulli log-likelihood and analytic KL(q || N(0, I))."""
    loc, scale = model.encode(x)
    z = loc + scale * torch.randn_like(loc)
    logits = model.decoder(z)
    nll = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
    kl = (0.5 * (loc**2 + scale**2 - 1) - scale.log()).sum(1)
    return (nll + kl).mean()


def train_torch(model, data, config: TrainConfig) -> float:
    """The hand-written loop; returns seconds as ``train`` counts them (epochs + test ELBO)."""
    optim = torch.optim.Adam(model.parameters(), lr=config.lr, eps=config.adam_eps)
    seconds = 0.0
    for _ in range(config.epochs):
        t0 = time.perf_counter()
        model.train()
        for x, _ in data.batches(config.batch_size):
            optim.zero_grad(set_to_none=True)
            torch_loss(model, x).backward()
            optim.step()
        model.eval()
        mean_elbo(model, data.test_x)  # what train() does each epoch: same work, same RNG use
        seconds += time.perf_counter() - t0
    return seconds


def run_path(path: str, config: TrainConfig, eval_samples: int) -> dict:
    set_seed(config.seed)
    pyro.clear_param_store()
    data = load_dataset("mnist-5k")
    model = build_model("vae", data.shape, **SETTINGS)
    if path == "torch":
        seconds = train_torch(model, data, config)
    else:
        seconds = train(model, data, config, progress=False).seconds
    m = evaluate(model, data.test_x, num_samples=eval_samples)
    return {"path": path, "epochs": config.epochs, "train_seconds": seconds,
            "seconds_per_epoch": seconds / config.epochs, "test_elbo": m["test_elbo"],
            "test_log_px": m["test_log_likelihood"],
            "test_log_px_stderr": m["test_log_likelihood_stderr"],
            "active_units": m["active_units"]}


def print_table(rows: list[dict], eval_samples: int) -> None:
    lp = f"log p(x) (K={eval_samples})"
    print(f"{'path':<6} {'epochs':>6} {'train s':>8} {'s/epoch':>8} {'test ELBO':>10} "
          f"{lp:>22} {'active':>6}")
    for r in rows:
        print(f"{r['path']:<6} {r['epochs']:>6} {r['train_seconds']:>8.1f} "
              f"{r['seconds_per_epoch']:>8.3f} {r['test_elbo']:>10.2f} "
              f"{r['test_log_px']:>13.2f} +- {r['test_log_px_stderr']:<5.2f} "
              f"{r['active_units']:>6}")
    by_path = {r["path"]: r for r in rows}
    if set(PATHS) <= set(by_path):
        ratio = by_path["pyro"]["seconds_per_epoch"] / by_path["torch"]["seconds_per_epoch"]
        print(f"seconds per epoch, pyro / torch: {ratio:.2f}")


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--eval-samples", type=int, default=5000,
                   help="importance samples per test point for log p(x) (a multiple of 50)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--paths", default="torch,pyro", help="comma-separated: torch, pyro or both")
    p.add_argument("--out", default=None, help="also write the table to this CSV file")
    args = p.parse_args(argv)
    paths = [s.strip() for s in args.paths.split(",") if s.strip()]
    if not paths or not set(paths) <= set(PATHS) or len(set(paths)) != len(paths):
        p.error(f"--paths {args.paths!r}: give torch and/or pyro, comma-separated, once each")
    if args.threads < 0:
        p.error("--threads must be >= 0")
    # fail on bad settings before minutes of training, with the library's own messages
    try:
        config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                             device="cpu")
        check_num_samples(args.eval_samples)
    except UserError as exc:
        p.error(str(exc))
    if args.threads:
        torch.set_num_threads(args.threads)

    rows = [run_path(path, config, args.eval_samples) for path in paths]
    print_table(rows, args.eval_samples)
    if args.out:
        with open(args.out, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    return rows


if __name__ == "__main__":
    main()
