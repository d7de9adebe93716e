"""The same VAE trained by a hand-written PyTorch loss and by pyro_vae's SVI path.

    .venv/bin/python benchmarks/torch_reference.py            # 100 epochs each, L_5000
    .venv/bin/python benchmarks/torch_reference.py --epochs 5 --eval-samples 500

Both paths start from the same network (``build_model("vae")``: 784-400-50, relu) and the same
seed, see the same minibatches (``Dataset.batches``: dynamic binarization, batch 128) and use
Adam with lr 1e-3. The hand-written loss is the closed-form Gaussian KL plus the Bernoulli
log-likelihood, averaged per data point; pyro_vae's SVI sums over the minibatch and scales it
to the data set's size (Adam is nearly invariant to that constant). Both are scored by the
same ``pyro_vae.evaluate.evaluate``. Prints a table and the ratio of seconds per epoch.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.nn import functional as F

from pyro_vae import TrainConfig, build_model, evaluate, load_dataset, set_seed, train


def torch_loss(model, x: torch.Tensor) -> torch.Tensor:
    """Negative ELBO per data point: Bernoulli log-likelihood and analytic KL(q || N(0, I))."""
    loc, scale = model.encoder(x)
    z = loc + scale * torch.randn_like(loc)
    logits = model.decoder(z)
    nll = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
    kl = 0.5 * (loc**2 + scale**2 - 1).sum(1) - scale.log().sum(1)
    return (nll + kl).mean()


def train_torch(model, data, epochs: int, batch_size: int, lr: float) -> float:
    optim = torch.optim.Adam(model.parameters(), lr=lr)
    start = time.perf_counter()
    for _ in range(epochs):
        for x, _ in data.batches(batch_size):
            optim.zero_grad(set_to_none=True)
            torch_loss(model, x).backward()
            optim.step()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--eval-samples", type=int, default=5000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--paths", default="torch,pyro", help="which to run: torch, pyro or both")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for path in args.paths.split(","):
        set_seed(args.seed)
        data = load_dataset("mnist-5k")
        model = build_model("vae", data.shape)
        if path == "torch":
            seconds = train_torch(model, data, args.epochs, args.batch_size, args.lr)
        elif path == "pyro":
            config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr)
            start = time.perf_counter()
            train(model, data, config, progress=False)
            # train() also scores the test ELBO each epoch; time the loop as a whole
            seconds = time.perf_counter() - start
        else:
            raise SystemExit(f"unknown path {path!r}: use torch and/or pyro")
        m = evaluate(model, data.test_x, num_samples=args.eval_samples)
        rows.append({"path": path, "epochs": args.epochs, "seconds": seconds,
                     "s/epoch": seconds / args.epochs, "test_elbo": m["test_elbo"],
                     "log_px": m["test_log_likelihood"],
                     "stderr": m["test_log_likelihood_stderr"],
                     "active_units": m["active_units"]})
    print(f"{'path':<6} {'epochs':>6} {'seconds':>8} {'s/epoch':>8} {'test ELBO':>10} "
          f"{'log p(x)':>18} {'AU':>4}")
    for r in rows:
        print(f"{r['path']:<6} {r['epochs']:>6} {r['seconds']:>8.1f} {r['s/epoch']:>8.3f} "
              f"{r['test_elbo']:>10.2f} {r['log_px']:>10.2f} +- {r['stderr']:.2f} "
              f"{r['active_units']:>4}")
    if len(rows) == 2:
        print(f"seconds per epoch, pyro / torch: {rows[1]['s/epoch'] / rows[0]['s/epoch']:.2f}")
    return rows


if __name__ == "__main__":
    main()
