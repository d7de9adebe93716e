r"""Posterior diagnostics with ArviZ: a trained guide's draws as InferenceData, PSIS k-hat.

* :func:`guide_inference_data`: draws :math:`z^{(s)} \sim q(z \mid x_n)` for chosen data
  points via :class:`pyro.infer.Predictive`, with the groups ``posterior`` (latent sites),
  ``log_likelihood`` (:math:`\log p(x_n \mid z^{(s)}_n)`, observed site), ``posterior_predictive``
  (:math:`x \sim p(x \mid z^{(s)}_n)`) and ``observed_data``; saved as NetCDF.
* :func:`guide_khat`: the Pareto k-hat of the importance ratios
  :math:`p(x_n, z) / q(z \mid x_n)`, one per data point, from PSIS (ArviZ's). Yao et al. (2018):
  k < 0.5 the guide is a good proposal, 0.5-0.7 usable, > 0.7 poor (importance-sampled
  log p(x_n) and the IWAE bound are then unreliable for that point).
* :func:`diagnose`: all of it on a run folder (``pyro-vae diagnose RUN_DIR``), plus a NUTS
  reference for the latent of one data point (:mod:`pyro_vae.reference`).

Both ArviZ lines (0.23 and 1.x) are handled in :mod:`pyro_vae.arviz_compat`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from pyro import poutine
from pyro.infer import Predictive

from pyro_vae import arviz_compat as azc
from pyro_vae.errors import ConfigError, check_positive, check_seed
from pyro_vae.importance import log_weights, stored_log_weights
from pyro_vae.metrics import json_ready
from pyro_vae.models.base import LatentModel
from pyro_vae.plots import save_figure
from pyro_vae.reference import check_nuts_settings
from pyro_vae.runs import locked

KHAT_GOOD, KHAT_OK = 0.5, 0.7
NETCDF = "posterior.nc"


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _particles_per_chunk(x: torch.Tensor, max_elements: int) -> int:
    """How many posterior draws of all of ``x`` fit in about ``max_elements`` values."""
    return max(1, max_elements // max(1, x[0].numel() * x.shape[0]))


@torch.no_grad()
def guide_draws(model: LatentModel, x: torch.Tensor, y: torch.Tensor | None = None,
                num_draws: int = 1000, ppc_draws: int = 20,
                max_elements: int = 2**24) -> dict[str, dict[str, np.ndarray]]:
    """ArviZ groups (arrays shaped ``(1, draw, point, ...)``) of the guide's posterior."""
    check_positive("num_draws", num_draws)
    if ppc_draws < 0 or ppc_draws > num_draws:
        raise ConfigError(f"posterior predictive draws must be 0..{num_draws}, got {ppc_draws}")
    model.eval()
    obs, latents = model.observed_site, list(model.latent_sites)
    post: dict[str, list] = {n: [] for n in latents}
    loglik, ppc, done = [], [], 0
    step = _particles_per_chunk(x, max_elements)
    while done < num_draws:
        k = min(step, num_draws - done)
        samples = Predictive(model.model, guide=model.guide, num_samples=k, parallel=True,
                             return_sites=latents)(x, y)
        trace = Predictive(model.model, posterior_samples=samples,
                           parallel=True).get_vectorized_trace(x, y)
        site = trace.nodes[obs]
        loglik.append(site["fn"].log_prob(site["value"]).reshape(k, x.shape[0]))
        if done < ppc_draws:
            need = min(k, ppc_draws - done)
            first = {n: v[:need] for n, v in samples.items()}
            ppc.append(Predictive(poutine.uncondition(model.model), posterior_samples=first,
                                  parallel=True, return_sites=[obs])(x, y)[obs])
        for n in latents:  # (draws, points, *event): every latent sits in the data plate
            post[n].append(samples[n].reshape(k, x.shape[0], *samples[n].shape[2:]))
        done += k
    groups = {
        "posterior": {n: _np(torch.cat(v))[None] for n, v in post.items()},
        "log_likelihood": {obs: _np(torch.cat(loglik))[None]},
        "observed_data": {obs: _np(x)},
    }
    if ppc:
        groups["posterior_predictive"] = {obs: _np(torch.cat(ppc).reshape(-1, *x.shape))[None]}
    return groups


def _dims(groups: dict, points: int) -> tuple[dict, dict]:
    dims, coords = {}, {"point": np.arange(points)}
    for group in groups.values():
        for name, arr in group.items():
            lead = 1 if group is groups.get("observed_data") else 3  # point / chain, draw, point
            rest = arr.ndim - lead
            dims[name] = ["point", *(f"{name}_dim_{i}" for i in range(rest))]
    return dims, coords


def guide_inference_data(model: LatentModel, x: torch.Tensor, y: torch.Tensor | None = None,
                         num_draws: int = 1000, ppc_draws: int = 20, point_ids=None):
    """InferenceData (arviz 0.23) or DataTree (arviz 1.x) of the guide's posterior at ``x``."""
    groups = guide_draws(model, x, y, num_draws, ppc_draws)
    dims, coords = _dims(groups, x.shape[0])
    if point_ids is not None:
        coords["point"] = np.asarray(point_ids)
    return azc.from_dict(groups, dims=dims, coords=coords)


@torch.no_grad()
def guide_log_ratios(model: LatentModel, x: torch.Tensor, y: torch.Tensor | None = None,
                     num_draws: int = 1000, max_elements: int = 2**24) -> torch.Tensor:
    """``log p(x_n, z) - log q(z | x_n)``, ``z ~ q``, shape ``(len(x), num_draws)``."""
    model.eval()
    return stored_log_weights(log_weights, model, x, y, num_draws, max_elements).T


def guide_khat(model: LatentModel, x: torch.Tensor, y: torch.Tensor | None = None,
               num_draws: int = 1000) -> np.ndarray:
    """PSIS k-hat of the guide as importance proposal, one per data point."""
    if num_draws < 100:
        raise ConfigError(f"k-hat needs at least 100 draws per point, got {num_draws}")
    return azc.psis_khat(_np(guide_log_ratios(model, x, y, num_draws)))


def khat_summary(khat: np.ndarray) -> dict:
    """Counts in Yao et al.'s bands and the extremes."""
    khat = np.asarray(khat)
    finite = khat[np.isfinite(khat)]  # -inf: equal weights, the guide is the posterior
    return {"khat_good": int((khat < KHAT_GOOD).sum()),
            "khat_ok": int(((khat >= KHAT_GOOD) & (khat <= KHAT_OK)).sum()),
            "khat_bad": int((khat > KHAT_OK).sum()),
            "khat_max": round(float(np.max(finite)), 4) if finite.size else None,
            "khat_median": round(float(np.median(finite)), 4) if finite.size else None}


def save_khat_plot(khat: np.ndarray, path: str | Path, title: str = "") -> Path:
    """k-hat per data point and their histogram, with the 0.5 and 0.7 thresholds."""
    plt = azc.plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [2, 1]})
    color = np.where(khat > KHAT_OK, "C3", np.where(khat >= KHAT_GOOD, "C1", "C0"))
    shown = np.where(np.isfinite(khat), khat, np.nan)  # -inf (exact guide) is not drawn
    a.scatter(np.arange(len(khat)), shown, c=color, s=10)
    if np.isfinite(shown).any():
        b.hist(shown[np.isfinite(shown)], bins=30, orientation="horizontal", color="0.5")
    for ax in (a, b):
        for level, c in ((KHAT_GOOD, "C1"), (KHAT_OK, "C3")):
            ax.axhline(level, color=c, ls="--", lw=1)
    a.set_xlabel("data point")
    a.set_ylabel("Pareto k-hat of the guide")
    s = khat_summary(khat)
    a.set_title(title or f"k-hat per point: {s['khat_good']} good (<0.5), {s['khat_ok']} usable,"
                f" {s['khat_bad']} poor (>0.7)")
    b.set_xlabel("points")
    fig.tight_layout()
    return save_figure(fig, path, dpi=110, bbox_inches=None)  # atomic, like every PNG


@locked("diagnose")  # one writer per run folder: refused at once if it cannot be written
def diagnose(run_dir: str | Path, points: int = 200, draws: int = 1000, ppc_draws: int = 20,
             nuts: bool = True, nuts_point: int = 0, nuts_samples: int = 500,
             nuts_warmup: int = 300, chains: int = 2, seed: int = 0,
             device: torch.device | str = "cpu") -> dict:
    """Everything on a trained run; returns what it merged into ``metrics.json``."""
    from pyro_vae.reference import compare_posteriors, latent_nuts_reference
    from pyro_vae.runner import open_run
    from pyro_vae.runs import RunFolder
    from pyro_vae.runtime import set_seed
    from pyro_vae.structure import require_local_latents, require_posterior

    check_positive("--points", points)
    if draws < 100:
        raise ConfigError(f"--draws must be at least 100 for k-hat, got {draws}")
    if not 0 <= ppc_draws <= draws:
        raise ConfigError(f"--ppc-draws must be in 0..{draws} (--draws), got {ppc_draws}")
    check_seed(seed, "--seed")
    if nuts:  # every setting is checked before anything is computed or written
        check_nuts_settings(nuts_samples, nuts_warmup, chains)
    opened = open_run(run_dir, device)
    model, data = opened.model, opened.data
    require_local_latents(model, data, "pyro-vae diagnose (the guide's draws per data point)")
    require_posterior(model, data, "pyro-vae diagnose")
    set_seed(seed)
    x = data.test_x[:points]
    if nuts and not 0 <= nuts_point < x.shape[0]:
        raise ConfigError(f"--nuts-point must be in 0..{x.shape[0] - 1}, got {nuts_point}")
    y = data.test_y[:points] if model.is_conditional and data.test_y is not None else None
    folder = Path(run_dir)
    idata = guide_inference_data(model, x, y, draws, min(ppc_draws, draws))
    azc.to_netcdf(idata, folder / NETCDF)
    khat = guide_khat(model, x, y, draws)
    save_khat_plot(khat, folder / "khat.png")
    first = list(model.latent_sites)[0]
    shown = {"point": [0]}
    per_point = idata["posterior"][first] if azc.ARVIZ_1 else idata.posterior[first]
    extra = [d for d in per_point.dims if d.startswith(f"{first}_dim_")]
    if extra:  # the first few dimensions of point 0
        shown[extra[0]] = list(range(min(4, per_point.sizes[extra[0]])))
    else:  # a scalar latent: the first few points (a pair plot needs two variables)
        shown["point"] = list(range(min(4, x.shape[0])))
    plots = ["khat.png"]
    if not model.has_discrete_latents:  # KDE-based ArviZ plots need continuous draws
        for kind in ("posterior", "trace", "pair"):
            azc.save_plot(kind, idata, folder / f"{kind}.png", var_names=[first], coords=shown)
            plots.append(f"{kind}.png")
    metrics = {"diagnose_points": int(x.shape[0]), "diagnose_draws": draws,
               "khat": [round(float(k), 4) if np.isfinite(k) else None for k in khat],
               **khat_summary(khat), "diagnose_plots": plots}
    if nuts and len(model.latent_sites) == 1 and not model.has_discrete_latents:
        xi = x[nuts_point:nuts_point + 1]
        yi = None if y is None else y[nuts_point:nuts_point + 1]
        ref = latent_nuts_reference(model, xi, yi, nuts_samples, nuts_warmup, chains, seed)
        svi = {first: idata_values(idata, first)[:, :, nuts_point]}
        table = compare_posteriors(ref, svi, folder / "nuts_vs_guide.png",
                                   title=f"{first} of test point {nuts_point}: NUTS vs guide")
        summ = azc.summary(azc.from_dict({"posterior": ref}))
        plots.append("nuts_vs_guide.png")
        metrics |= {"nuts_point": nuts_point, "nuts_chains": chains,
                    "nuts_rhat_max": float(summ["r_hat"].max()),
                    "nuts_ess_bulk_min": float(summ["ess_bulk"].min()),
                    "nuts_vs_guide_mean_abs_diff": float(
                        (table["reference_mean"] - table["approx_mean"]).abs().mean()),
                    "nuts_vs_guide_sd_ratio_mean": float(
                        (table["approx_sd"] / table["reference_sd"]).mean())}
    RunFolder(folder).update_metrics(json_ready(metrics))
    return metrics


def idata_values(data, name: str, group: str = "posterior") -> np.ndarray:
    """A variable's values as a NumPy array (chain, draw, ...), on either ArviZ line."""
    ds = data[group] if azc.ARVIZ_1 else getattr(data, group)
    return np.asarray(ds[name].values)

