"""Train a VAE on the bundled digits and look at what it learned.

    python examples/vae.py                       # mnist-5k, 100 epochs, latent 50
    python examples/vae.py --epochs 5 --dataset digits --eval-samples 100
    python examples/vae.py --kl-warmup-epochs 10 --free-bits 0.25

``--out`` is one run folder, written by the library's run layer (:func:`pyro_vae.run`):
``config.json``, ``checkpoint.pt``, ``history.csv``, ``metrics.json`` and the pictures
(samples, reconstructions, curves, interpolation, traversal, latent map). It prints the run
summary: the test ELBO, the IWAE bound L_50 and log p(x) by importance sampling
(``--eval-samples``), active units. The same as ``pyro-vae train vae``, written out so the
pieces show; ``pyro-vae evaluate/sample/plot/diagnose`` open the folder. The evaluation is
seeded (``EvalConfig.seed``), so ``pyro-vae evaluate`` repeats its numbers.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pyro_vae import EvalConfig, RunConfig, TrainConfig, run
from pyro_vae.cli import run_script
from pyro_vae.metrics import format_summary


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="mnist-5k")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--latent-dim", type=int, default=50)
    p.add_argument("--objective", default="trace")
    p.add_argument("--num-particles", type=int, default=1)
    p.add_argument("--beta", type=float, default=1.0, help="KL weight")
    p.add_argument("--kl-warmup-epochs", type=int, default=0)
    p.add_argument("--free-bits", type=float, default=0.0, help="nats per latent dimension")
    p.add_argument("--eval-samples", type=int, default=5000)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=Path("runs/example-vae"))
    args = p.parse_args(argv)

    config = RunConfig.for_model(
        "vae", dataset=args.dataset, latent_dim=args.latent_dim,
        train=TrainConfig(epochs=args.epochs, objective=args.objective,
                          num_particles=args.num_particles, device=args.device, beta=args.beta,
                          kl_warmup_epochs=args.kl_warmup_epochs, free_bits=args.free_bits),
        eval=EvalConfig(num_samples=args.eval_samples))
    result = run(config, args.out)
    print(format_summary(result.metrics, f"run: {result.run.path} (pictures there too)"))
    return result.metrics


if __name__ == "__main__":
    run_script(main, __file__)  # a UserError: one line on stderr, exit 2, as pyro-vae does
