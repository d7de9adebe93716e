"""How noisy is each gradient estimator? Many draws of the guide gradient on one minibatch.

    python examples/gradient_variance.py                 # mnist-5k, 200 draws per estimator
    python examples/gradient_variance.py --draws 1000 --out runs/grad-var

Two models, each trained briefly so that the guide is not at its initialization, then fixed:
the Bernoulli latent model (score-function estimators: no baseline, decaying-average and
neural baselines, VIMCO, RWS's wake-phi, and RenyiELBO(alpha=0), which gives a discrete guide
no gradient) and the Gaussian VAE (pathwise ELBO, IWAE, IWAE with DReG). For every estimator
the same minibatch gives ``--draws`` gradients of the guide's parameters; the table reports
the norm of their mean, their total variance and the mean signal-to-noise ratio |mean|/std
per coordinate. Estimators of the same target (column ``target``) compare directly. Writes
``gradients.csv`` and ``gradients.png``. Each brief training is a run of the library's run layer
(:func:`pyro_vae.run`) in ``--out/bernoulli`` and ``--out/vae``, not evaluated (``pyro-vae
evaluate`` measures a folder's bounds).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pyro  # noqa: E402
from pyro.infer import RenyiELBO  # noqa: E402

from pyro_vae import EvalConfig, RunConfig, TrainConfig, run, set_seed  # noqa: E402
from pyro_vae.cli import run_script  # noqa: E402
from pyro_vae.estimators.gradients import guide_parameters, study, warm_up_baselines  # noqa
from pyro_vae.objectives import make_objective  # noqa: E402

MODELS = {  # name: (model settings, training objective and baseline, colour in gradients.png)
    "bernoulli": ({"latent_dim": 200}, {"objective": "tracegraph", "baseline": "neural"}, "C0"),
    "vae": ({"latent_dim": 50}, {"objective": "trace"}, "C1"),
}


def _estimators(k: int) -> dict:
    """model -> [(label, target, objective factory)]."""
    nest = 2
    return {
        "bernoulli": [
            ("no baseline", "ELBO", lambda: make_objective("tracegraph")),
            ("decaying baseline", "ELBO", lambda: make_objective("tracegraph",
                                                                 baseline="decaying")),
            ("neural baseline", "ELBO", lambda: make_objective("tracegraph", baseline="neural")),
            (f"VIMCO K={k}", f"L_{k}", lambda: make_objective("vimco", k)),
            (f"RenyiELBO(0) K={k}", f"L_{k}", lambda: RenyiELBO(
                alpha=0, num_particles=k, max_plate_nesting=nest, vectorize_particles=True)),
            (f"RWS wake-phi K={k}", "-KL(p||q)", lambda: make_objective("rws", k)),
        ],
        "vae": [
            ("pathwise ELBO", "ELBO", lambda: make_objective("trace")),
            (f"IWAE K={k}", f"L_{k}", lambda: make_objective("iwae", k)),
            (f"IWAE-DReG K={k}", f"L_{k}", lambda: make_objective("iwae-dreg", k)),
        ],
    }


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="mnist-5k")
    p.add_argument("--train-epochs", type=int, default=3, help="brief training of each model")
    p.add_argument("--batch-size", type=int, default=32, help="the fixed minibatch")
    p.add_argument("--draws", type=int, default=200, help="gradient draws per estimator")
    p.add_argument("--warmup", type=int, default=200, help="baseline warm-up draws")
    p.add_argument("--num-particles", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs/gradient-variance"))
    args = p.parse_args(argv)
    configs = {name: RunConfig.for_model(
        name, dataset=args.dataset, train=TrainConfig(epochs=args.train_epochs, seed=args.seed,
                                                      **training),
        eval=EvalConfig(num_samples=0, pictures=False), **settings)
        for name, (settings, training, _) in MODELS.items()}
    estimators = _estimators(args.num_particles)
    rows = []
    for name, config in configs.items():
        trained = run(config, args.out / name, progress=False).run
        model = trained.model
        x = trained.data.train_eval_x()[:args.batch_size]
        pyro.clear_param_store()  # the study's baselines start afresh (the model keeps its own)
        params = guide_parameters(model, x)
        for label, target, make in estimators[name]:
            set_seed(args.seed + 1)
            elbo = make()
            if hasattr(elbo, "baselines"):
                warm_up_baselines(elbo, model, x, args.warmup)
            stats = study(elbo, model, x, params, args.draws, label).summary()
            rows.append({"model": name, "target": target, **stats})
            print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in rows[-1].items()), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "gradients.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    labels = [f"{r['model']}: {r['estimator']}" for r in rows]
    colors = [MODELS[r["model"]][2] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 0.45 * len(rows) + 1.5), sharey=True)
    positive = [r["total_variance"] for r in rows if r["total_variance"] > 0] or [1.0]
    floor = min(positive) / 10
    a.barh(labels, [max(r["total_variance"], floor) for r in rows], color=colors)
    a.set_xscale("log")
    a.set_xlim(left=floor)
    for i, r in enumerate(rows):
        if r["total_variance"] == 0:
            a.text(floor * 1.5, i, "0: no gradient at all", va="center")
    a.set_xlabel("total variance of the guide gradient (sum over coordinates)")
    b.barh(labels, [r["mean_snr"] for r in rows], color=colors)
    b.set_xlabel("mean signal-to-noise ratio |mean| / std per coordinate")
    a.invert_yaxis()
    for ax in (a, b):
        ax.grid(alpha=0.3, axis="x")
    fig.suptitle(f"{args.draws} gradient draws on one minibatch of {args.batch_size} "
                 f"{args.dataset} digits")
    fig.tight_layout()
    fig.savefig(args.out / "gradients.png", dpi=120)
    plt.close(fig)
    return rows


if __name__ == "__main__":
    run_script(main, __file__)  # a UserError: one line on stderr, exit 2, as pyro-vae does
