"""log p(x) by prior sampling and by importance sampling: how many samples each needs.

    python examples/likelihood_estimators.py
    python examples/likelihood_estimators.py --vae-epochs 2 --points 20 --ks 1,10 --out /tmp/le

Two trained models: the 2-D mixture of 3 Gaussians (``gmm``, exact log p(x) by summing over
components; its guide is the exact posterior, so importance sampling is exact at K = 1) and a
VAE on the 8x8 digits (no exact value; the reference is the importance-sampling estimate with
all samples). For each K, ``pyro_vae.likelihood.estimate_log_likelihood`` gives both estimates
with ``mc_sd``, the spread of one K-sample estimate of a point's log p(x), and ``stderr``, the
standard error across test points (the convention of ``pyro_vae.importance``). Writes
``estimators.csv`` and ``estimators.png`` (estimate +- mc_sd against K, and mc_sd). Each model
is a run of the library's run layer (:func:`pyro_vae.run`) in ``--out/gmm`` and ``--out/vae``,
not evaluated there (the estimates above are this example's own; ``pyro-vae evaluate``
measures a folder's bounds).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pyro_vae import EvalConfig, RunConfig, TrainConfig, run, set_seed  # noqa: E402
from pyro_vae.cli import run_script  # noqa: E402
from pyro_vae.likelihood import estimate_log_likelihood, stderr_ratios  # noqa: E402


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(s) for s in text.split(","))


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gmm-epochs", type=int, default=300, help="full-batch steps of the GMM")
    p.add_argument("--vae-epochs", type=int, default=50, help="training epochs of the VAE")
    p.add_argument("--points", type=int, default=100, help="test points evaluated")
    p.add_argument("--ks", type=_ints, default=(1, 10, 100, 1000), help="e.g. 1,10,100,1000")
    p.add_argument("--replicates", type=int, default=10, help="groups at the largest K")
    p.add_argument("--out", type=Path, default=Path("runs/likelihood-estimators"))
    args = p.parse_args(argv)
    not_evaluated = EvalConfig(num_samples=0, pictures=False)
    configs = [
        RunConfig.for_model("gmm", dataset="gmm-2d", eval=not_evaluated, train=TrainConfig(
            epochs=args.gmm_epochs, batch_size=1500, lr=0.05, objective="enum")),
        RunConfig.for_model("vae", dataset="digits", latent_dim=8, hidden=(64,),
                            eval=not_evaluated,
                            train=TrainConfig(epochs=args.vae_epochs, batch_size=64))]
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    for col, config in enumerate(configs):
        name, dataset = config.model, config.dataset
        trained = run(config, args.out / name, progress=False).run
        set_seed(1)
        res = estimate_log_likelihood(trained.model, trained.data.test_x[:args.points],
                                      ks=args.ks, replicates=args.replicates)
        ref = res["exact"]
        if ref is None:
            ref = res["all_samples"]["importance"]["estimate"]
        ratios = stderr_ratios(res)
        for r in res["rows"]:
            rows.append({"model": name, **r, "reference": ref,
                         "exact": res["exact"] is not None,
                         "ratio": ratios.get(r["k"]) if r["method"] == "prior" else None})
        top, bottom = axes[0, col], axes[1, col]
        for method, color in (("prior", "C3"), ("importance", "C0")):
            sel = [r for r in res["rows"] if r["method"] == method]
            ks = [r["k"] for r in sel]
            top.errorbar(ks, [r["estimate"] for r in sel], yerr=[r["mc_sd"] for r in sel],
                         fmt="o-", color=color, capsize=3, label=f"{method} sampling")
            bottom.plot(ks, [max(r["mc_sd"], 1e-6) for r in sel], "o-", color=color,
                        label=f"{method} sampling")
        top.axhline(ref, color="k", lw=1, label="exact log p(x)" if res["exact"] is not None
                    else f"importance sampling, K={res['num_samples']}")
        top.set_title(f"{name} on {dataset}: mean log p(x) estimate vs K")
        top.set_ylabel("nats per data point")
        bottom.set_title(f"{name}: spread (sd) of one K-sample estimate, mc_sd")
        bottom.set_yscale("log")
        bottom.set_ylabel("nats")
        for ax in (top, bottom):
            ax.set_xscale("log")
            ax.set_xlabel("K (samples per estimate)")
            ax.grid(alpha=0.3)
            ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "estimators.png", dpi=110)
    plt.close(fig)
    keys = ["model", "method", "k", "estimate", "stderr", "mc_stderr", "mc_sd", "reference",
            "exact", "error", "ratio"]
    with (args.out / "estimators.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    print(f"{'model':<5} {'method':<10} {'K':>6} {'estimate':>10} {'stderr':>8} "
          f"{'mc_stderr':>9} {'mc_sd':>9} {'reference':>10} {'prior/IS mc_sd':>14}")
    for r in rows:
        ratio = f"{r['ratio']:.1f}" if r["ratio"] else ("IS exact" if r["mc_sd"] < 1e-6 else "")
        print(f"{r['model']:<5} {r['method']:<10} {r['k']:>6} {r['estimate']:>10.3f} "
              f"{r['stderr']:>8.4f} {r['mc_stderr']:>9.4f} {r['mc_sd']:>9.4f} "
              f"{r['reference']:>10.3f} {ratio:>14}")
    return rows


if __name__ == "__main__":
    run_script(main, __file__)  # a UserError: one line on stderr, exit 2, as pyro-vae does
