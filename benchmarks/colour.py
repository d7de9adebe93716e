"""A VAE with the discretized logistic likelihood on synthetic 8-bit colour images, in bits/dim.

    .venv/bin/python benchmarks/colour.py                        # 16x16, conv and mlp rows
    .venv/bin/python benchmarks/colour.py --size 32 --epochs 20 --rows conv

The images (:func:`colour_patterns`) are drawn in code, so the benchmark needs no download: a
background of one of eight colours, a rectangle of another, and every pixel value moved by a
uniform integer of -4..4 levels (then clipped), all on the 8-bit grid k/255. The noise alone
is worth about log2(9) = 3.17 bits per value where it is not clipped, so a model that learned
the shapes and colours exactly would approach that from above.

The set is registered for the length of this process as the data set ``colour-patterns``
(one line in ``pyro_vae.data.DATASETS``) and each row is a run of the run layer (``run``):
``vae --likelihood logistic --arch conv|mlp --binarize none`` (rows ``conv``, ``mlp``), and
``--likelihood dequantized --arch conv`` (row ``conv-dequantized``: the Gaussian of uniform
dequantization, whose bits per dimension bound the same discrete likelihood). The table is test
ELBO and importance-sampled log p(x) in nats and in bits per dimension (metrics.json's
``*_bpd`` keys).
The run folders need the registration to be reopened, so ``pyro-vae evaluate`` on them works
only from a process that registers the set again (as tests/test_colour.py does).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from pyro_vae import data
from pyro_vae.errors import UserError
from pyro_vae.metrics import format_summary
from pyro_vae.run_config import RunConfig
from pyro_vae.runner import run

PALETTE = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200],
                    [245, 130, 48], [145, 30, 180], [70, 240, 240], [250, 250, 250]])
NAME = "colour-patterns"


def colour_patterns(num: int, size: int = 16, seed: int = 0, noise: int = 4) -> np.ndarray:
    """``num`` RGB images ``(num, 3, size, size)`` of float32 values k/255: a background
    colour, a rectangle of another colour, each value moved by a uniform integer in
    ``-noise..noise`` levels and clipped to 0..255."""
    rng = np.random.default_rng(seed)
    back = rng.integers(0, len(PALETTE), num)
    front = (back + rng.integers(1, len(PALETTE), num)) % len(PALETTE)
    images = np.empty((num, size, size, 3), dtype=np.int64)
    images[:] = PALETTE[back][:, None, None, :]
    for i in range(num):
        h, w = rng.integers(size // 4, size // 2 + 1, 2)
        top, left = rng.integers(0, size - h + 1), rng.integers(0, size - w + 1)
        images[i, top:top + h, left:left + w] = PALETTE[front[i]]
    images = np.clip(images + rng.integers(-noise, noise + 1, images.shape), 0, 255)
    return (images.transpose(0, 3, 1, 2) / 255.0).astype(np.float32)


def register(size: int = 16, num_train: int = 2000, num_test: int = 500) -> str:
    """Register ``colour-patterns`` (``kind="image"``) in this process; returns its name."""
    def load() -> data.RawData:
        x = colour_patterns(num_train + num_test, size)
        return data.RawData(x[:num_train], None, x[num_train:], None, "image")

    data.DATASETS[NAME] = data.DataSpec(load, "image")
    return NAME


ROWS = {  # row -> settings of vae
    "conv": {"likelihood": "logistic", "arch": "conv", "hidden": (256,)},
    "mlp": {"likelihood": "logistic", "arch": "mlp", "hidden": (400,)},
    "conv-dequantized": {"likelihood": "dequantized", "arch": "conv", "hidden": (256,)},
}


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=16)
    p.add_argument("--num-train", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--latent-dim", type=int, default=16)
    p.add_argument("--eval-samples", type=int, default=500)
    p.add_argument("--rows", default="conv,mlp")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs/colour"))
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    name = register(args.size, args.num_train)
    results = []
    for row in args.rows.split(","):
        if row not in ROWS:
            raise UserError(f"unknown row {row!r}; rows: {', '.join(ROWS)}")
        config = RunConfig.for_model(
            "vae", dataset=name, binarize="none", latent_dim=args.latent_dim, **ROWS[row],
            train={"epochs": args.epochs, "batch_size": 100, "lr": 1e-3, "seed": args.seed},
            eval={"num_samples": args.eval_samples, "iwae_ks": (5,)})
        out = args.out / f"{row}-{args.size}"
        m = run(config, out, progress=False).metrics
        print(format_summary(m, f"vae {ROWS[row]}: {out}"))
        results.append({"row": row, **m})
    print("\n| row | data | epochs | test ELBO (nats) | bits/dim | log p(x) (nats) | bits/dim"
          " | seconds |\n|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['row']} | 3x{args.size}x{args.size}, {args.num_train} train | {r['epochs']}"
              f" | {r['test_elbo']:.1f} | {r['test_elbo_bpd']:.3f} | "
              f"{r['test_log_likelihood']:.1f} | {r['test_log_likelihood_bpd']:.3f} | "
              f"{r['seconds']:.0f} |")
    return results


if __name__ == "__main__":
    try:
        main()
    except UserError as exc:
        print(f"colour.py: error: {exc}", file=sys.stderr)
        sys.exit(2)
