"""beta-VAE on the shapes data set: traversals and the mutual information gap for beta 1 and 4.

    python examples/beta_vae.py                        # 50 epochs each, about 3 minutes
    python examples/beta_vae.py --epochs 5 --betas 1,4

Trains the same VAE (latent 10, MLP 256-128, same seed, same budget) with KL weight beta in
``--betas``, then once more with the last beta and a KL warm-up plus free bits, and writes for
each a traversal picture (one row per latent dimension, most used first) and a latent map. The
table lists the test ELBO, active units and MIG (Chen et al. 2018) against the five factors.
Each model is a run of the library's run layer (:func:`pyro_vae.run`) in ``--out/NAME``
(``beta1``, ``beta4``, ``beta4-warmup20-freebits0.1``), whose evaluation (``--eval-samples``,
seed ``--seed``) gives the table's figures and holds the pictures above; ``pyro-vae evaluate``
repeats them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pyro_vae import EvalConfig, RunConfig, TrainConfig, run
from pyro_vae.cli import run_script
from pyro_vae.latent_plots import save_latent_map, save_traversal


def _floats(text: str) -> list[float]:
    return [float(s) for s in text.split(",")]


def run_config(args, beta: float, warmup: int, free_bits: float) -> RunConfig:
    train = TrainConfig(epochs=args.epochs, batch_size=64, lr=args.lr, seed=args.seed,
                        beta=beta, kl_warmup_epochs=warmup, free_bits=free_bits,
                        device=args.device)
    return RunConfig.for_model("vae", dataset=args.dataset, latent_dim=args.latent_dim,
                               hidden=(256, 128), train=train,
                               eval=EvalConfig(num_samples=args.eval_samples, seed=args.seed,
                                               pictures=False))


def _central_image(data) -> int:
    """A test image of a large shape near the centre, whose code the traversal varies."""
    f = data.test_factors
    central = (f[:, 1] == f[:, 1].max()) & (f[:, 3] - 3.5).abs().le(1) & \
        (f[:, 4] - 3.5).abs().le(1)
    return int(central.nonzero()[0]) if central.any() else 0


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="shapes", help="shapes or shapes-64")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--latent-dim", type=int, default=10)
    p.add_argument("--betas", type=_floats, default=[1.0, 4.0])
    p.add_argument("--kl-warmup-epochs", type=int, default=20,
                   help="for the extra run with the last beta (0 skips that run)")
    p.add_argument("--free-bits", type=float, default=0.1)
    p.add_argument("--eval-samples", type=int, default=100)
    p.add_argument("--index", type=int, default=-1,
                   help="test image whose code is traversed (default: a large, central one)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=Path("runs/example-beta-vae"))
    args = p.parse_args(argv)

    settings = [(beta, 0, 0.0) for beta in args.betas]
    if args.kl_warmup_epochs:
        settings.append((args.betas[-1], args.kl_warmup_epochs, args.free_bits))
    configs = {}  # every run's settings are checked before the first trains
    for beta, warmup, free_bits in settings:
        name = f"beta{beta:g}" + (f"-warmup{warmup}-freebits{free_bits:g}" if warmup else "")
        configs[name] = run_config(args, beta, warmup, free_bits)
    rows = []
    for name, config in configs.items():
        result = run(config, args.out / name, progress=False)
        model, data, metrics, folder = (result.run.model, result.run.data, result.metrics,
                                        result.run.path)
        if args.index < 0:
            args.index = _central_image(data)
        save_traversal(model, data.test_x, folder / "traversal.png", index=args.index)
        save_latent_map(model, data.test_x, data.test_factors[:, 3], folder / "latent_map.png",
                        label_name="x position")
        # the traversals side by side in the output folder too
        (args.out / f"traversal_{name}.png").write_bytes((folder / "traversal.png").read_bytes())
        t = config.train
        rows.append({"beta": t.beta, "warmup": t.kl_warmup_epochs, "free_bits": t.free_bits,
                     "test_elbo": metrics["test_elbo"], "active_units": metrics["active_units"],
                     "mig": metrics["mig"], "mig_per_factor": metrics["mig_per_factor"],
                     "folder": str(folder)})
    factors = list(rows[0]["mig_per_factor"])
    print(f"{'beta':>5} {'warm-up':>7} {'free bits':>9} {'test ELBO':>10} {'active':>6} "
          f"{'MIG':>6}  " + " ".join(f"{f:>8}" for f in factors))
    for r in rows:
        print(f"{r['beta']:>5g} {r['warmup']:>7} {r['free_bits']:>9g} {r['test_elbo']:>10.2f} "
              f"{r['active_units']:>3}/{args.latent_dim:<2} {r['mig']:>6.3f}  "
              + " ".join(f"{r['mig_per_factor'][f]:>8.3f}" for f in factors))
    print(f"traversals: {args.out}/traversal_*.png")
    return rows


if __name__ == "__main__":
    run_script(main, __file__)  # a UserError: one line on stderr, exit 2, as pyro-vae does
