"""VQ-VAE and a PixelCNN prior over its codes: reconstructions, codebook use, and samples from
the learned prior beside samples of uniform random codes.

    python examples/vqvae.py                                   # mnist-5k, 30 + 30 epochs
    python examples/vqvae.py --dataset digits --epochs 3 --prior-epochs 3
    python examples/vqvae.py --run runs/vq                     # pictures of a trained run

Trains ``vqvae`` with ``--prior-epochs`` through the run layer
(:func:`pyro_vae.prior_stage.run_with_prior`: the autoencoder into ``--out/vqvae``, the
PixelCNN prior on its codes into ``--out/vqvae/prior``), or opens such a run (``--run``, e.g.
one ``pyro-vae train vqvae --prior-epochs 30`` made). Writes ``reconstructions.png`` (rows:
test digits, their reconstructions), ``code_usage.png`` (how often each codebook entry codes
a test position), ``samples_learned.png`` (codes drawn from the PixelCNN, decoded) and
``samples_uniform.png`` (uniform random codes, decoded), and prints the codebook's use and
the two bounds on -log p(x) of the test digits (docs/vqvae.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from pyro_vae import EvalConfig, RunConfig, TrainConfig, open_run, set_seed
from pyro_vae.cli import run_script
from pyro_vae.plots import plt, save_figure, save_grid
from pyro_vae.prior_stage import prior_folder, run_with_prior


def _train(args) -> Path:
    config = RunConfig.for_model(
        "vqvae", dataset=args.dataset, arch=args.arch, codebook_size=args.codebook_size,
        code_dim=args.code_dim, codebook_update=args.codebook_update,
        prior_epochs=args.prior_epochs,
        train=TrainConfig(epochs=args.epochs, seed=args.seed, device=args.device),
        eval=EvalConfig(num_samples=0, pictures=False))
    run_with_prior(config, args.out / "vqvae", progress=False)
    return args.out / "vqvae"


def save_code_usage(counts: list[int], path: Path) -> Path:
    """A bar per codebook entry, most used first: how often it codes a test position."""
    ordered = sorted(counts, reverse=True)
    fig, ax = plt.subplots(figsize=(6, 2.6))
    ax.bar(range(len(ordered)), ordered, width=1.0, color="tab:blue")
    ax.set_xlabel("codebook entry (most used first)")
    ax.set_ylabel("test positions")
    ax.set_title(f"{sum(c > 0 for c in counts)} of {len(counts)} entries used")
    fig.tight_layout()
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="mnist-5k")
    p.add_argument("--arch", default="conv", help="conv or mlp")
    p.add_argument("--epochs", type=int, default=30, help="of the autoencoder")
    p.add_argument("--prior-epochs", type=int, default=30, help="of the PixelCNN prior")
    p.add_argument("--codebook-size", type=int, default=64)
    p.add_argument("--code-dim", type=int, default=16)
    p.add_argument("--codebook-update", default="ema", help="loss or ema")
    p.add_argument("--num", type=int, default=12, help="images per row")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--run", type=Path, help="a trained run (with its prior stage) to draw")
    p.add_argument("--out", type=Path, default=Path("runs/example-vqvae"))
    args = p.parse_args(argv)

    folder = args.run if args.run is not None else _train(args)
    opened = open_run(prior_folder(folder), "cpu" if args.device == "auto" else args.device)
    model, data = opened.model, opened.data
    metrics = opened.folder.read_metrics()
    x = data.test_x[torch.linspace(0, len(data.test_x) - 1, args.num).long().to(data.device)]
    args.out.mkdir(parents=True, exist_ok=True)
    save_grid(torch.cat([x.cpu(), model.reconstruct(x).cpu()]),
              args.out / "reconstructions.png", nrow=args.num)
    save_code_usage(metrics["code_counts"], args.out / "code_usage.png")
    set_seed(args.seed)
    save_grid(model.sample(64).cpu(), args.out / "samples_learned.png", nrow=8)
    set_seed(args.seed)
    save_grid(model.sample_uniform(64).cpu(), args.out / "samples_uniform.png", nrow=8)
    bits = "bpd" if "test_nll_uniform_prior_bpd" in metrics else None
    print(f"codebook: {metrics['codes_used']} of {metrics['codebook_size']} entries used, "
          f"perplexity {metrics['codebook_perplexity']:.1f}; "
          f"{metrics['code_positions']} positions")
    print(f"{'bound on -log p(x), test':<28} {'nats':>9} {'bits/dim':>9}")
    for name, key in (("uniform codes", "test_nll_uniform_prior"),
                      ("learned prior (PixelCNN)", "test_nll_learned_prior")):
        shown = f"{metrics[key + '_bpd']:>9.4f}" if bits else f"{'-':>9}"
        print(f"{name:<28} {metrics[key]:>9.2f} {shown}")
    print(f"the learned prior's gain: {metrics['test_prior_gain']:.2f} +- "
          f"{metrics['test_prior_gain_stderr']:.2f} nats (paired, test digits)")
    print(f"pictures in {args.out}: reconstructions.png, code_usage.png, samples_learned.png, "
          "samples_uniform.png")
    return metrics


if __name__ == "__main__":
    run_script(main, __file__)  # a UserError: one line on stderr, exit 2, as pyro-vae does
