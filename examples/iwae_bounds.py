"""The ELBO, its gap, and the IWAE bounds L_1 <= L_k <= L_{k+1} <= log p(x).

    python examples/iwae_bounds.py                    # digits VAE + probabilistic PCA
    python examples/iwae_bounds.py --epochs 2 --num-samples 100 --out /tmp/bounds

Two models: probabilistic PCA, whose log p(x) is known in closed form, and a VAE trained on
the 8x8 digits. For each, one set of S importance samples per test point gives L_k for
k = 1, 2, 5, ..., S (disjoint groups of k, nested), so the curve rises with k and approaches
log p(x); the distance from L_1 (the ELBO) to log p(x) is the gap KL(q(z|x) || p(z|x)).
Writes ``bounds.csv`` and ``bounds.png``. Each model is a run of the library's run layer
(:func:`pyro_vae.run`) in ``--out/linear`` and ``--out/vae``, not evaluated there (the bounds
above are this example's own, on the first ``--points`` test points, seeded with 0; ``pyro-vae
evaluate`` measures a folder on the whole test split).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pyro_vae import (  # noqa: E402
    EvalConfig,
    RunConfig,
    TrainConfig,
    importance_bounds,
    run,
    set_seed,
)
from pyro_vae.cli import run_script  # noqa: E402

MODELS = [  # (model, data set, its settings, the flag of its training epochs)
    ("linear", "linear-gaussian", {}, "linear_epochs"),
    ("vae", "digits", {"latent_dim": 8, "hidden": (64,)}, "epochs"),
]


def _ks(num_samples: int) -> tuple[int, ...]:
    return tuple(k for k in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000) if num_samples % k == 0
                 and k <= num_samples)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=30, help="training epochs of the VAE")
    p.add_argument("--linear-epochs", type=int, default=2,
                   help="training epochs of the PCA model (few, so that its guide is off)")
    p.add_argument("--num-samples", type=int, default=1000)
    p.add_argument("--points", type=int, default=300, help="test points evaluated")
    p.add_argument("--out", type=Path, default=Path("runs/iwae-bounds"))
    args = p.parse_args(argv)
    configs = [RunConfig.for_model(name, dataset=dataset, **settings,
                                   train=TrainConfig(epochs=getattr(args, epochs), batch_size=64),
                                   eval=EvalConfig(num_samples=0, pictures=False))
               for name, dataset, settings, epochs in MODELS]
    args.out.mkdir(parents=True, exist_ok=True)
    ks = _ks(args.num_samples)
    rows = []
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, config in zip(axes, configs, strict=True):
        name, dataset = config.model, config.dataset
        trained = run(config, args.out / name, progress=False).run
        model = trained.model
        x = trained.data.test_x[:args.points]
        set_seed(0)
        b = importance_bounds(model, x, num_samples=args.num_samples, ks=ks).summary()
        exact = model.log_marginal(x).mean().item() if hasattr(model, "log_marginal") else None
        for k in ks:
            rows.append({"model": name, "k": k, "bound": b["iwae"][k]})
        rows.append({"model": name, "k": f"log p(x), S={args.num_samples}",
                     "bound": b["log_likelihood"]})
        if exact is not None:
            rows.append({"model": name, "k": "exact log p(x)", "bound": exact})
        ax.plot(ks, [b["iwae"][k] for k in ks], "o-", label="L_k")
        ax.axhline(b["log_likelihood"], color="C1", ls="--",
                   label=f"log p(x) estimate (S={args.num_samples})")
        if exact is not None:
            ax.axhline(exact, color="k", lw=1, label="exact log p(x)")
        ax.set_xscale("log")
        ax.set_xlabel("k (importance samples per bound)")
        ax.set_ylabel("nats per data point")
        top = exact if exact is not None else b["log_likelihood"]
        ax.set_title(f"{name} on {dataset}: ELBO gap {top - b['iwae'][1]:.2f} nats")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "bounds.png", dpi=120)
    plt.close(fig)
    with (args.out / "bounds.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["model", "k", "bound"])
        writer.writeheader()
        writer.writerows(rows)
    for r in rows:
        print(f"{r['model']:<7} {str(r['k']):<22} {r['bound']:10.3f}")
    return rows


if __name__ == "__main__":
    run_script(main, __file__)  # a UserError: one line on stderr, exit 2, as pyro-vae does
