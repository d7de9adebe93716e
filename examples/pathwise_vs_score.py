r"""The lecture's toy: pathwise vs likelihood-ratio (score-function) gradients.

    python examples/pathwise_vs_score.py
    python examples/pathwise_vs_score.py --samples 1 --steps 200 --lr 0.05

Learn :math:`\mu \in \mathbb R^2` to minimize :math:`J(\mu) = \mathbb E_{x \sim N(\mu, I)}
\|x - t\|^2`, t = (5, 5), with S samples a step and the same step size and the same draws
:math:`\epsilon_s \sim N(0, I)`, :math:`x_s = \mu + \epsilon_s` for both estimators:

* likelihood ratio: :math:`\nabla J \approx \frac1S \sum_s f(x_s) \nabla_\mu \log N(x_s; \mu,
  I) = \frac1S \sum_s \|x_s - t\|^2 (x_s - \mu)` (``sample()`` + ``log_prob``);
* pathwise (reparameterization): :math:`\nabla J \approx \frac1S \sum_s \nabla_\mu f(\mu +
  \epsilon_s) = \frac1S \sum_s 2 (x_s - t)` (``rsample()``).

Both are unbiased for :math:`\nabla J = 2(\mu - t)`; the score-function estimate's variance
grows with :math:`f` itself, so from the same start it wanders. Writes ``trajectories.png``
(the two paths toward t, and J per step; :math:`J(\mu) = \|\mu - t\|^2 + 2` exactly) and
``trajectories.csv``.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch.distributions import Normal  # noqa: E402

from pyro_vae.cli import run_script  # noqa: E402

TARGET = torch.tensor([5.0, 5.0])


def f(x: torch.Tensor) -> torch.Tensor:
    return (x - TARGET).pow(2).sum(-1)


def surrogate(mu: torch.Tensor, eps: torch.Tensor, kind: str) -> torch.Tensor:
    """A scalar whose gradient in mu is the estimator's gradient, from the draws ``eps``."""
    q = Normal(mu, 1.0)
    if kind == "pathwise":
        return f(mu + eps).mean()  # what q.rsample() computes
    x = (mu + eps).detach()  # what q.sample() computes: no path from mu
    return (f(x) * q.log_prob(x).sum(-1)).mean()


def run(kind: str, eps: torch.Tensor, lr: float, start: torch.Tensor) -> list[list[float]]:
    mu = start.clone().requires_grad_(True)
    path = [mu.tolist()]
    for e in eps:
        (grad,) = torch.autograd.grad(surrogate(mu, e, kind), mu)
        with torch.no_grad():
            mu -= lr * grad
        path.append(mu.tolist())
    return path


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--samples", type=int, default=4, help="samples per gradient step")
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs/pathwise-vs-score"))
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    eps = torch.randn(args.steps, args.samples, 2)  # the same draws for both estimators
    start = torch.zeros(2)
    paths = {kind: torch.tensor(run(kind, eps, args.lr, start))
             for kind in ("pathwise", "likelihood-ratio")}
    loss = {k: ((v - TARGET).pow(2).sum(-1) + 2).tolist() for k, v in paths.items()}

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.5))
    for kind, path in paths.items():
        a.plot(path[:, 0], path[:, 1], ".-", ms=3, lw=1, label=kind)
        b.plot(loss[kind], label=kind)
    a.plot(*TARGET.tolist(), "k*", ms=14, label="target (5, 5)")
    a.plot(*start.tolist(), "ko", ms=6, label="start")
    a.set_xlabel("mu[0]")
    a.set_ylabel("mu[1]")
    a.set_aspect("equal", adjustable="datalim")
    a.set_title(f"mu by SGD, lr {args.lr}, {args.samples} sample(s) a step")
    b.set_yscale("log")
    b.set_xlabel("step")
    b.set_ylabel("J(mu) = E||x - t||^2 (exact)")
    b.set_title("loss per step, same draws for both")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "trajectories.png", dpi=120)
    plt.close(fig)
    with (args.out / "trajectories.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["step", "pathwise_mu0", "pathwise_mu1", "pathwise_J", "score_mu0",
                    "score_mu1", "score_J"])
        for i in range(args.steps + 1):
            w.writerow([i, *paths["pathwise"][i].tolist(), loss["pathwise"][i],
                        *paths["likelihood-ratio"][i].tolist(), loss["likelihood-ratio"][i]])
    final = {k: v[-1] for k, v in loss.items()}
    print(f"final J: pathwise {final['pathwise']:.3f}, likelihood ratio "
          f"{final['likelihood-ratio']:.3f} (minimum 2)")
    return final


if __name__ == "__main__":
    run_script(main, __file__)  # a UserError: one line on stderr, exit 2, as pyro-vae does
