"""A Bernoulli latent model (sigmoid belief net) trained by each gradient estimator.

    python examples/bernoulli_latent.py                      # mnist-5k, 200 units, 30 epochs
    python examples/bernoulli_latent.py --epochs 100 --layers 2 --out runs/sbn2

The latents z in {0,1}^K are discrete, so the guide learns from score-function gradients.
Every estimator trains the same model (same seed, same initialization, same minibatches) for
the same number of steps; the table compares the test ELBO, the importance-sampled test log
p(x) and the seconds it took. Writes ``table.csv``, ``curves.png`` (test ELBO per epoch) and,
per estimator, ``NAME-samples.png`` and ``NAME-reconstructions.png``. Each estimator's model is
a run of the library's run layer (:func:`pyro_vae.run`) in ``--out/NAME``, whose evaluation
(``--eval-samples``, L_5, seed ``--seed``) gives the table's test figures; ``pyro-vae
evaluate --out/NAME`` repeats them.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pyro_vae import EvalConfig, RunConfig, TrainConfig, run  # noqa: E402
from pyro_vae.cli import run_script  # noqa: E402
from pyro_vae.errors import check_choice  # noqa: E402
from pyro_vae.plots import save_reconstructions, save_samples  # noqa: E402

ESTIMATORS = {  # name: (objective, particles, baseline)
    "no-baseline": ("tracegraph", 1, "none"),
    "decaying": ("tracegraph", 1, "decaying"),
    "neural": ("tracegraph", 1, "neural"),
    "vimco": ("vimco", None, "none"),
    "rws": ("rws", None, "none"),
}


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="mnist-5k")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--baseline-lr", type=float, default=1e-2)
    p.add_argument("--latent-dim", type=int, default=200)
    p.add_argument("--layers", type=int, default=1, help="stochastic layers, 1 or 2")
    p.add_argument("--num-particles", type=int, default=5, help="K of vimco and rws")
    p.add_argument("--estimators", default=",".join(ESTIMATORS),
                   help=f"comma-separated, from: {', '.join(ESTIMATORS)}")
    p.add_argument("--eval-samples", type=int, default=1000, help="importance samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs/bernoulli-latent"))
    args = p.parse_args(argv)
    configs = {}  # every estimator's settings are checked before the first trains
    for name in args.estimators.split(","):
        check_choice("estimator", name, ESTIMATORS)
        objective, k, baseline = ESTIMATORS[name]
        configs[name] = RunConfig.for_model(
            "bernoulli", dataset=args.dataset, latent_dim=args.latent_dim, layers=args.layers,
            train=TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                              seed=args.seed, objective=objective,
                              num_particles=k or args.num_particles, baseline=baseline,
                              baseline_lr=args.baseline_lr),
            eval=EvalConfig(num_samples=args.eval_samples, iwae_ks=(5,), seed=args.seed,
                            pictures=False))
    args.out.mkdir(parents=True, exist_ok=True)
    rows, curves = [], {}
    for name, config in configs.items():
        result = run(config, args.out / name, progress=False)
        model, data, metrics = result.run.model, result.run.data, result.metrics
        t = config.train
        curves[name] = [h["test_elbo"] for h in result.training.history]
        rows.append({"estimator": name, "objective": t.objective, "K": t.num_particles,
                     "baseline": t.baseline,
                     "steps": result.training.epochs * data.num_batches(t.batch_size),
                     "test_elbo": round(metrics["test_elbo"], 2),
                     "test_log_likelihood": round(metrics["test_log_likelihood"], 2),
                     "ll_stderr": round(metrics["test_log_likelihood_stderr"], 2),
                     "active_units": metrics["active_units"],
                     "seconds": round(result.training.seconds, 1)})
        print(" ".join(f"{k}={v}" for k, v in rows[-1].items()), flush=True)
        save_samples(model, args.out / f"{name}-samples.png")
        save_reconstructions(model, data.test_x, args.out / f"{name}-reconstructions.png")
    with (args.out / "table.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, values in curves.items():
        ax.plot(range(1, len(values) + 1), values, label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test ELBO (nats per digit)")
    ax.set_title(f"Bernoulli latents ({args.latent_dim} units, {args.layers} layer(s)) on "
                 f"{args.dataset}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "curves.png", dpi=120)
    plt.close(fig)
    return rows


if __name__ == "__main__":
    run_script(main, __file__)  # a UserError: one line on stderr, exit 2, as pyro-vae does
