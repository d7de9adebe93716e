"""Train a VAE on the bundled digits and look at what it learned.

    python examples/vae.py                       # mnist-5k, 100 epochs, latent 50
    python examples/vae.py --epochs 5 --dataset digits --eval-samples 100
    python examples/vae.py --kl-warmup-epochs 10 --free-bits 0.25

Writes a run folder (config, checkpoint, metrics, samples.png, reconstructions.png,
curves.png, interpolation.png, traversal.png, latent_map.png) and prints the test ELBO, the
IWAE bound L_50 and log p(x) by importance sampling. The same as ``pyro-vae train vae``,
written out so the library's pieces show.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pyro_vae import RunFolder, TrainConfig, build_model, evaluate, load_dataset, set_seed, train
from pyro_vae.latent_plots import save_latent_pictures
from pyro_vae.plots import save_run_pictures
from pyro_vae.runtime import resolve_device


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

    device = resolve_device(args.device)
    set_seed(0)
    data = load_dataset(args.dataset, device=device)
    model = build_model("vae", data.shape, latent_dim=args.latent_dim)
    config = TrainConfig(epochs=args.epochs, objective=args.objective,
                         num_particles=args.num_particles, device=args.device, beta=args.beta,
                         kl_warmup_epochs=args.kl_warmup_epochs, free_bits=args.free_bits)
    run = RunFolder(args.out)
    result = train(model, data, config, run)
    metrics = evaluate(model, data.test_x, num_samples=args.eval_samples, progress=True)
    run.update_metrics(metrics)
    save_run_pictures(model, data, run.path, result.history)
    save_latent_pictures(model, data, run.path)
    print(f"test ELBO {metrics['test_elbo']:.2f}  L_{metrics['iwae_k']} "
          f"{metrics['test_iwae']:.2f}  log p(x) {metrics['test_log_likelihood']:.2f} "
          f"+- {metrics['test_log_likelihood_stderr']:.2f}  ({args.eval_samples} samples); "
          f"active units {metrics['active_units']}/{args.latent_dim}; pictures in {run.path}")
    return metrics


if __name__ == "__main__":
    main()
