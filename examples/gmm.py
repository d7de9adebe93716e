"""The lectures' 2-D mixture of three Gaussians: exact likelihood, assignments, then NUTS.

    python examples/gmm.py
    python examples/gmm.py --epochs 5 --nuts-samples 20 --nuts-warmup 20 --out /tmp/gmm

1. Maximum likelihood: ``gmm`` (full covariances) trained on the exact marginal (objective
   ``enum``, full batch) as a run of the library's run layer (:func:`pyro_vae.run`) in
   ``--out/ml``, which ``pyro-vae evaluate`` opens (not evaluated there); its parameters and
   log-likelihood printed beside scikit-learn's EM; ``gmm_fit.png``: the data coloured by
   ``infer_discrete`` assignments, fitted 2-sigma ellipses (solid) and the generating ones
   (dashed).
2. Bayesian: priors on weights, ordered means and diagonal scales; a mean-field guide fitted by
   SVI, and NUTS (2 chains) as the reference. ArviZ summary (R-hat, ESS) printed and written
   to ``nuts_summary.csv``; ``nuts_trace.png``, ``nuts_pair.png``, ``nuts_posterior.png`` and
   ``svi_vs_nuts.png`` (means and sds side by side). This fit is not a run: guide and NUTS see
   the same first ``--nuts-points`` training points, while a run trains on a data set's whole
   training split (``pyro-vae train gmm --dataset gmm-2d --covariance diag --priors true`` is
   the run of the whole split).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import Ellipse  # noqa: E402
from sklearn.mixture import GaussianMixture  # noqa: E402

from pyro_vae import (  # noqa: E402
    EvalConfig,
    RunConfig,
    TrainConfig,
    load_dataset,
    run,
    set_seed,
)
from pyro_vae import arviz_compat as azc  # noqa: E402
from pyro_vae.cli import run_script  # noqa: E402
from pyro_vae.data import gmm_2d_parameters  # noqa: E402
from pyro_vae.models.gmm import GMM, GMMConfig  # noqa: E402
from pyro_vae.reference import (  # noqa: E402
    compare_posteriors,
    fit_svi,
    gmm_guide_draws,
    gmm_nuts_reference,
)


def _ellipse(ax, mean, cov, **kw):
    vals, vecs = np.linalg.eigh(cov)
    angle = np.degrees(np.arctan2(vecs[1, -1], vecs[0, -1]))
    w, h = 2 * 2 * np.sqrt(vals[::-1])  # 2 sigma
    ax.add_patch(Ellipse(mean, w, h, angle=angle, fill=False, **kw))


def ml_config(args, data) -> RunConfig:
    """The maximum-likelihood fit: full batch, the exact marginal (``enum``)."""
    return RunConfig.for_model(
        "gmm", dataset="gmm-2d", eval=EvalConfig(num_samples=0, seed=args.seed, pictures=False),
        train=TrainConfig(epochs=args.epochs, batch_size=data.num_train, lr=0.05,
                          objective="enum", seed=args.seed))


def fit_ml(args, config: RunConfig) -> dict:
    trained = run(config, args.out / "ml", progress=False).run
    model, data = trained.model, trained.data
    x, x_test = data.train_x, data.test_x
    p = {k: v.detach().numpy() for k, v in model.parameters_dict().items()}
    em = GaussianMixture(3, covariance_type="full", tol=1e-8, max_iter=1000,
                         random_state=0).fit(x.numpy())
    out = {"train_ll": model.log_marginal(x).mean().item(),
           "test_ll": model.log_marginal(x_test).mean().item(),
           "sklearn_train_ll": em.score(x.numpy()), "sklearn_test_ll": em.score(x_test.numpy())}
    print("maximum likelihood (exact marginal, TraceEnum_ELBO):")
    for k in range(3):
        print(f"  component {k}: weight {p['weights'][k]:.3f}  mean {np.round(p['means'][k], 3)}"
              f"  cov {np.round(p['covariances'][k].ravel(), 3)}")
    print(f"  mean log p(x): train {out['train_ll']:.4f} (sklearn EM {out['sklearn_train_ll']:.4f})"
          f", test {out['test_ll']:.4f} (EM {out['sklearn_test_ll']:.4f})")
    labels = model.assignments(x).numpy()
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    ax.scatter(*x.numpy().T, c=labels, cmap="viridis", s=6, alpha=0.6)
    truth = gmm_2d_parameters()
    for k in range(3):
        _ellipse(ax, p["means"][k], p["covariances"][k], color="C3", lw=2)
        _ellipse(ax, truth["means"][k].numpy(), truth["covariances"][k].numpy(), color="k",
                 lw=1, ls="--")
    ax.set_title(f"gmm-2d: infer_discrete assignments, fitted (red) and true (dashed) 2-sigma\n"
                 f"train log p(x) {out['train_ll']:.3f} nats/point (sklearn EM "
                 f"{out['sklearn_train_ll']:.3f})", fontsize=9)
    ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(args.out / "gmm_fit.png", dpi=110)
    plt.close(fig)
    return out


def fit_bayesian(args, data) -> dict:
    set_seed(args.seed)
    x = data.train_x[:args.nuts_points]
    model = GMM(GMMConfig(3, "diag", priors=True), data.shape)
    model.init_from_data(x)
    losses = fit_svi(model, x, steps=args.svi_steps)
    t0 = time.perf_counter()
    ref = gmm_nuts_reference(model, x, num_samples=args.nuts_samples, warmup=args.nuts_warmup,
                             num_chains=args.chains, seed=args.seed)
    seconds = time.perf_counter() - t0
    idata = azc.from_dict({"posterior": ref})
    summary = azc.summary(idata)
    summary.to_csv(args.out / "nuts_summary.csv")
    print(f"\nBayesian GMM on {len(x)} points: SVI loss {losses[-1]:.3f} nats/point; NUTS "
          f"{args.chains} chains x {args.nuts_samples} draws ({args.nuts_warmup} warm-up) in "
          f"{seconds:.0f} s")
    print(summary.round(3).to_string())
    azc.save_plot("trace", idata, args.out / "nuts_trace.png", var_names=["means"])
    azc.save_plot("pair", idata, args.out / "nuts_pair.png", var_names=["means"],
                  coords={"means_dim_0": [0, 1, 2], "means_dim_1": [0]})
    azc.save_plot("posterior", idata, args.out / "nuts_posterior.png", var_names=["weights"])
    table = compare_posteriors(ref, gmm_guide_draws(model, 2000), args.out / "svi_vs_nuts.png",
                               title="Bayesian GMM: NUTS vs mean-field SVI guide")
    print("\nSVI guide vs NUTS:")
    print(table.round(3).to_string())
    return {"rhat_max": float(summary["r_hat"].max()),
            "ess_bulk_min": float(summary["ess_bulk"].min()),
            "ess_tail_min": float(summary["ess_tail"].min()), "nuts_seconds": seconds}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=300, help="full-batch steps of the ML fit")
    p.add_argument("--svi-steps", type=int, default=2000, help="SVI steps, Bayesian guide")
    p.add_argument("--nuts-points", type=int, default=300, help="data points for NUTS")
    p.add_argument("--nuts-samples", type=int, default=1000, help="NUTS draws per chain")
    p.add_argument("--nuts-warmup", type=int, default=500)
    p.add_argument("--chains", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs/gmm"))
    args = p.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    data = load_dataset("gmm-2d")
    config = ml_config(args, data)
    args.out.mkdir(parents=True, exist_ok=True)
    return {**fit_ml(args, config), **fit_bayesian(args, data)}


if __name__ == "__main__":
    run_script(main, __file__)  # a UserError: one line on stderr, exit 2, as pyro-vae does
