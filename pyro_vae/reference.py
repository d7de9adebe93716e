r"""NUTS reference posteriors for small models, and SVI posteriors compared against them.

Hamiltonian Monte Carlo with the No-U-Turn sampler (Hoffman & Gelman 2014; Pyro's
:class:`~pyro.infer.NUTS`) draws from the exact posterior up to Monte Carlo error, so where
it is affordable it is the reference a variational guide is judged against:

* the Bayesian GMM (``GMM`` with ``priors=True``), its assignments summed out by enumeration
  inside NUTS; the means are ordered along the first axis, so there is one mode and R-hat over
  chains is meaningful. Reported quantities are identifiable: weights, means, scales;
* the latent z of one data point of a trained VAE (or any model whose only latent is per data
  point) with the decoder fixed: NUTS on ``model.model`` for that point, whose parameters are
  not sample sites and so stay where training left them.

Chains run one after another in this process (seeds ``seed, seed + 1, ...``): portable, no
worker processes, and the same draws on every run of the same seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyro
import torch
from pyro import poutine
from pyro.infer import MCMC, NUTS, SVI, TraceEnum_ELBO
from pyro.infer.autoguide.initialization import init_to_median, init_to_value

from pyro_vae import arviz_compat as azc
from pyro_vae.errors import ConfigError, check_positive
from pyro_vae.models.base import LatentModel
from pyro_vae.models.gmm import GMM
from pyro_vae.plots import save_figure


def check_nuts_settings(num_samples: int, warmup: int, num_chains: int) -> None:
    """Raise :class:`ConfigError` for NUTS settings no chain can run with."""
    check_positive("--nuts-samples (NUTS draws per chain)", num_samples)
    check_positive("--chains (NUTS chains)", num_chains)
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ConfigError(f"--nuts-warmup (NUTS warm-up steps) must be a whole number >= 0, "
                          f"got {warmup!r}")


def nuts_posterior(model_fn, args: tuple = (), num_samples: int = 1000, warmup: int = 500,
                   num_chains: int = 2, seed: int = 0, max_plate_nesting: int = 1,
                   target_accept_prob: float = 0.8, init_values: dict | None = None,
                   jit_compile: bool = False) -> dict[str, np.ndarray]:
    """NUTS draws of every latent site of ``model_fn(*args)``, arrays ``(chain, draw, ...)``.

    ``init_values`` starts every chain there (e.g. at a fitted guide's means: a mixture's
    likelihood has poor local modes a random start can fall into); ``jit_compile`` traces
    the potential energy once (faster for longer runs).
    """
    check_nuts_settings(num_samples, warmup, num_chains)
    chains = []
    for c in range(num_chains):
        pyro.set_rng_seed((seed + c) % 2**32)
        kernel = NUTS(model_fn, max_plate_nesting=max_plate_nesting,
                      target_accept_prob=target_accept_prob, jit_compile=jit_compile,
                      ignore_jit_warnings=True,
                      init_strategy=(init_to_value(values=init_values) if init_values
                                     else init_to_median))
        mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=warmup, num_chains=1,
                    disable_progbar=True)
        mcmc.run(*args)
        chains.append({k: v.detach().cpu().numpy() for k, v in mcmc.get_samples().items()})
    return {k: np.stack([c[k] for c in chains]) for k in chains[0]}


def latent_nuts_reference(model: LatentModel, x: torch.Tensor, y: torch.Tensor | None = None,
                          num_samples: int = 500, warmup: int = 300, num_chains: int = 2,
                          seed: int = 0) -> dict[str, np.ndarray]:
    """NUTS on the latent of one data point ``x`` (shape ``(1, ...)``), parameters fixed.

    Returns ``{site: (chain, draw, *event)}`` for the model's latent site(s).
    """
    if x.shape[0] != 1:
        raise ConfigError(f"the latent NUTS reference takes one data point, got {x.shape[0]}")
    if model.has_discrete_latents:
        raise ConfigError(f"model {model.name} has discrete latents; NUTS needs them summed out")
    model.eval()
    draws = nuts_posterior(model.model, (x, y), num_samples, warmup, num_chains, seed,
                           model.max_plate_nesting)
    return {k: v[:, :, 0] for k, v in draws.items() if k in model.latent_sites}


def gmm_quantities(sites: dict[str, np.ndarray], num_components: int, dim: int
                   ) -> dict[str, np.ndarray]:
    """Weights, ordered means and scales from the Bayesian GMM's sites (any leading dims)."""
    first = np.asarray(sites["loc_first"])
    lead = first.shape
    firsts = first[..., None]
    if num_components > 1:
        gaps = np.cumsum(sites["loc_gaps"], -1)
        firsts = np.concatenate([firsts, first[..., None] + gaps], -1)
    means = firsts[..., None]
    if dim > 1:
        means = np.concatenate([means, sites["loc_rest"]], -1)
    weights = sites.get("weights", np.full(lead + (num_components,), 1.0 / num_components))
    return {"weights": np.asarray(weights), "means": means, "scale": np.asarray(sites["scale"])}


def fit_svi(model: LatentModel, x: torch.Tensor, steps: int = 2000, lr: float = 0.02,
            max_plate_nesting: int = 1) -> list[float]:
    """Full-batch SVI with the ``enum`` objective for a model with global latents (the
    Bayesian GMM), whose per-point test ELBO :func:`pyro_vae.train.train` cannot compute.
    Returns the loss per data point at each step."""
    check_positive("steps", steps)
    elbo = TraceEnum_ELBO(max_plate_nesting=max_plate_nesting)
    svi = SVI(model.model, model.guide, pyro.optim.Adam({"lr": lr}), elbo)
    model.train()
    return [svi.step(x) / x.shape[0] for _ in range(steps)]


def _check_bayesian(model: GMM) -> None:
    if not (isinstance(model, GMM) and model.config.priors):
        raise ConfigError("a NUTS reference of the mixture needs the Bayesian GMM (priors=True)")


def gmm_nuts_reference(model: GMM, x: torch.Tensor, num_samples: int = 1000, warmup: int = 500,
                       num_chains: int = 2, seed: int = 0, jit_compile: bool = True,
                       enumerate: bool = False) -> dict[str, np.ndarray]:
    """NUTS posterior of the Bayesian GMM's weights, means and scales, ``(chain, draw, ...)``.

    Chains start at the guide's means (call ``model.init_from_data(x)`` or fit it first).
    ``enumerate=True`` runs NUTS on ``model.model``, whose assignment Pyro enumerates; the
    default runs it on ``model.collapsed_model`` (the same posterior, summed by hand, faster).
    """
    _check_bayesian(model)
    fn = model.model if enumerate else model.collapsed_model
    draws = nuts_posterior(fn, (x,), num_samples, warmup, num_chains, seed,
                           init_values=gmm_guide_sites(model), jit_compile=jit_compile)
    return gmm_quantities(draws, model.K, model.D)


@torch.no_grad()
def gmm_guide_sites(model: GMM) -> dict[str, torch.Tensor]:
    """The guide's means of the Bayesian GMM's sites (a starting point for NUTS)."""
    x = torch.zeros(1, model.D, device=model.device)
    with poutine.block():
        trace = poutine.trace(model.guide_globals).get_trace(x)
    return {n: s["fn"].mean.detach() for n, s in trace.nodes.items() if s["type"] == "sample"}


@torch.no_grad()
def gmm_guide_draws(model: GMM, num_draws: int = 1000) -> dict[str, np.ndarray]:
    """The mean-field guide's draws of the same quantities, ``(1, draw, ...)``."""
    _check_bayesian(model)
    x = torch.zeros(1, model.D, device=model.device)
    sample = pyro.plate("draws", num_draws, dim=-1)(model.guide_globals)
    with poutine.block():
        trace = poutine.trace(sample).get_trace(x)
    sites = {n: s["value"].cpu().numpy()[None] for n, s in trace.nodes.items()
             if s["type"] == "sample"}
    return gmm_quantities(sites, model.K, model.D)


def _flat(samples: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``name[i,j]`` -> draws, with chains pooled."""
    out = {}
    for name, arr in samples.items():
        arr = np.asarray(arr).reshape(-1, *np.asarray(arr).shape[2:])
        for idx in np.ndindex(*arr.shape[1:]):
            label = f"{name}[{','.join(map(str, idx))}]" if idx else name
            out[label] = arr[(slice(None), *idx)]
    return out


def compare_posteriors(reference: dict[str, np.ndarray], approx: dict[str, np.ndarray],
                       path: str | Path | None = None, title: str = "",
                       labels: tuple[str, str] = ("NUTS", "SVI guide")) -> pd.DataFrame:
    """Means and sds of each scalar component side by side; a PNG of them when ``path``."""
    ref, app = _flat(reference), _flat(approx)
    names = [n for n in ref if n in app]
    table = pd.DataFrame({
        "reference_mean": [ref[n].mean() for n in names],
        "reference_sd": [ref[n].std(ddof=1) for n in names],
        "approx_mean": [app[n].mean() for n in names],
        "approx_sd": [app[n].std(ddof=1) for n in names]}, index=names)
    if path is not None:
        plt = azc.plt
        pos = np.arange(len(names))
        fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(names) + 2), 4))
        ax.errorbar(pos - 0.12, table["reference_mean"], yerr=table["reference_sd"], fmt="o",
                    capsize=3, label=f"{labels[0]}: mean +- sd")
        ax.errorbar(pos + 0.12, table["approx_mean"], yerr=table["approx_sd"], fmt="s",
                    capsize=3, label=f"{labels[1]}: mean +- sd")
        ax.set_xticks(pos, names, rotation=60, ha="right", fontsize=8)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        save_figure(fig, path, dpi=110, bbox_inches=None)
    return table
