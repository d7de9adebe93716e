"""Autoencoder, denoising autoencoder and VAE side by side: reconstructions, and decoded random
latents that show why a plain autoencoder cannot generate.

    python examples/autoencoders.py                       # mnist-5k, 30 epochs each
    python examples/autoencoders.py --dataset digits --epochs 3

The three share the encoder/decoder sizes, the latent size, the data and the training loop
(the AE and DAE are model/guide pairs with a point-mass guide, ``pyro_vae.models.autoencoder``).
Writes ``reconstructions.png`` (rows: clean input, AE, DAE, VAE), ``denoising.png`` (rows:
input with half its pixels dropped, AE, DAE, VAE) and ``samples.png`` (rows: AE, DAE, VAE
decoding z ~ N(0, I)), and prints the test reconstruction loss (BCE, nats per image) and how
far the codes of the test set are from the N(0, I) that random latents are drawn from. Each
model is a run of the library's run layer (:func:`pyro_vae.run`) in ``--out/ae``, ``--out/dae``
and ``--out/vae``, not evaluated (``pyro-vae evaluate`` measures a folder's bounds).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch.nn import functional as F

from pyro_vae import EvalConfig, RunConfig, TrainConfig, run, set_seed
from pyro_vae.cli import run_script
from pyro_vae.evaluate import latent_means
from pyro_vae.plots import save_grid

MODELS = ("ae", "dae", "vae")


def _bce(model, x: torch.Tensor) -> float:
    recon = model.reconstruct(x).clamp(1e-6, 1 - 1e-6)
    return F.binary_cross_entropy(recon, x, reduction="sum").item() / len(x)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="mnist-5k")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--latent-dim", type=int, default=16)
    p.add_argument("--num", type=int, default=12, help="images per row")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=Path("runs/example-autoencoders"))
    args = p.parse_args(argv)

    configs = {name: RunConfig.for_model(
        name, dataset=args.dataset, latent_dim=args.latent_dim, hidden=(400,),
        train=TrainConfig(epochs=args.epochs, seed=args.seed, device=args.device),
        eval=EvalConfig(num_samples=0, pictures=False)) for name in MODELS}
    trained = {name: run(config, args.out / name, progress=False).run
               for name, config in configs.items()}
    data = trained[MODELS[0]].data
    x = data.test_x[torch.linspace(0, len(data.test_x) - 1, args.num).long().to(data.device)]
    gen = torch.Generator().manual_seed(1)
    dropped = x * (torch.rand(x.shape, generator=gen) >= 0.5).to(x)
    recon_rows, noisy_rows, sample_rows, rows = [x.cpu()], [dropped.cpu()], [], []
    for name, opened in trained.items():
        model = opened.model.eval()
        codes = latent_means(model, data.test_x)
        recon_rows.append(model.reconstruct(x).cpu())
        noisy_rows.append(model.reconstruct(dropped).cpu())
        set_seed(args.seed)
        sample_rows.append(model.sample(args.num).cpu())
        rows.append({"model": name, "test_bce": _bce(model, data.test_x),
                     "denoised_bce": _bce_against(model, dropped, x),
                     "code_mean_norm": codes.mean(0).norm().item(),
                     "code_std_range": (codes.std(0).min().item(), codes.std(0).max().item())})
    args.out.mkdir(parents=True, exist_ok=True)
    save_grid(torch.cat(recon_rows), args.out / "reconstructions.png", nrow=args.num)
    save_grid(torch.cat(noisy_rows), args.out / "denoising.png", nrow=args.num)
    save_grid(torch.cat(sample_rows), args.out / "samples.png", nrow=args.num)
    print(f"{'model':<5} {'test BCE':>9} {'BCE from half the pixels':>25} "
          f"{'|mean code|':>11} {'code std per dim':>18}")
    for r in rows:
        lo, hi = r["code_std_range"]
        print(f"{r['model']:<5} {r['test_bce']:>9.2f} {r['denoised_bce']:>25.2f} "
              f"{r['code_mean_norm']:>11.2f} {lo:>8.2f} to {hi:<7.2f}")
    print(f"pictures in {args.out}: reconstructions.png, denoising.png, samples.png "
          "(random latents z ~ N(0, I) decoded; the VAE's prior is where its codes are)")
    return rows


def _bce_against(model, corrupted: torch.Tensor, clean: torch.Tensor) -> float:
    recon = model.reconstruct(corrupted).clamp(1e-6, 1 - 1e-6)
    return F.binary_cross_entropy(recon, clean, reduction="sum").item() / len(clean)


if __name__ == "__main__":
    run_script(main, __file__)  # a UserError: one line on stderr, exit 2, as pyro-vae does
