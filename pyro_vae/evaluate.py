r"""Evaluation of any trained model/guide pair: bounds on log p(x) and how the latents are used.

The bounds -- ELBO, IWAE bounds L_k and the importance-sampled log p(x), with the standard
error convention of the whole package -- are computed by :mod:`pyro_vae.importance`;
``log_weights``, ``log_weights_of_site``, ``importance_bounds``, ``check_num_samples`` and
``Bounds`` are re-exported here for existing callers. :func:`evaluate` gathers them with the
latent usage into the test metrics of a run.

Bits per dimension: for a model whose likelihood is a probability mass over the data values
(``model.discrete_likelihood``: Bernoulli pixels, the discretized logistic of 8-bit pixels),
each bound is also given as :math:`-\text{nats} / (D \ln 2)` with D = ``model.scored_dims``
(C * H * W for an image): :func:`bits_per_dim`. A density (Gaussian pixels) has no such number.

Active units (Burda et al. 2016): latent dimension u is active when
:math:`\mathrm{Cov}_x(\mathbb{E}_{q(z|x)}[z_u]) > 0.01`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from pyro import poutine
from torch.distributions import kl_divergence

from pyro_vae.errors import ConfigError, model_code_errors, require_latent_model
from pyro_vae.estimators.traces import sample_sites
from pyro_vae.importance import (
    Bounds,
    check_num_samples,
    check_points,
    importance_bounds,
    log_weights,
    log_weights_of_site,
    particle_traces,
    with_particles,
)
from pyro_vae.models.base import LatentModel

__all__ = [
    "ACTIVE_UNIT_THRESHOLD", "Bounds", "LatentUsage", "active_units_per_site", "bits_per_dim",
    "check_num_samples", "code_sparsity", "disentanglement", "evaluate", "importance_bounds",
    "latent_means",
    "latent_usage", "log_weights", "log_weights_of_site", "mean_elbo", "elbo_sum",
    "mutual_information_gap",
]

ACTIVE_UNIT_THRESHOLD = 0.01
MEAN_PARTICLES = 16  # draws of the sites above that E_q[z_s | x] of a lower site averages over


@torch.no_grad()
def mean_elbo(model: LatentModel, x: torch.Tensor, y: torch.Tensor | None = None,
              batch_size: int = 1000) -> float:
    """One-sample ELBO per data point, averaged over ``x`` (the cheap per-epoch number)."""
    return elbo_sum(model, x, y, batch_size) / x.shape[0]


@torch.no_grad()
def elbo_sum(model: LatentModel, x: torch.Tensor, y: torch.Tensor | None = None,
             batch_size: int = 1000) -> float:
    """The one-sample ELBOs of the points of ``x``, summed (a shard's part of
    :func:`mean_elbo` under data-parallel training)."""
    total = 0.0
    for start in range(0, x.shape[0], batch_size):
        yb = None if y is None else y[start:start + batch_size]
        total += log_weights(model, x[start:start + batch_size], yb, 1).sum().item()
    return total


@dataclass
class LatentUsage:
    """How the guide uses its latent dimensions, concatenated over latent sites."""

    posterior_mean_variance: torch.Tensor  # Cov_x(E_q[z_u]) for each dimension u
    kl_per_dim: torch.Tensor  # E_x KL(q(z_u|x) || p(z_u)), analytic where factorized
    kl_is_per_dim: bool = True
    sites: list[str] = field(default_factory=list)

    @property
    def active_units(self) -> int:
        return int((self.posterior_mean_variance > ACTIVE_UNIT_THRESHOLD).sum())


def _site_mean(fn, value: torch.Tensor) -> torch.Tensor:
    """The guide's mean of a site, or its drawn value where the mean is undefined (a
    categorical's mean is NaN: a class label has none)."""
    try:
        mean = fn.mean
    except NotImplementedError:
        return value
    return value.to(mean.dtype) if bool(torch.isnan(mean).any()) else mean


def _has_mean(fn) -> bool:
    try:
        return fn.mean is not None
    except NotImplementedError:
        return False


@torch.no_grad()
def latent_usage(model: LatentModel, x: torch.Tensor, y: torch.Tensor | None = None,
                 batch_size: int = 1000, kl_samples: int = 16) -> LatentUsage:
    """Active units and KL per latent dimension over the data ``x``.

    The KL per dimension is analytic when guide and prior factorize over dimensions
    (``Independent`` wrappers of a family ``torch.distributions.kl_divergence`` knows);
    otherwise each site contributes one entry, its total KL estimated by ``kl_samples`` draws.
    """
    means, kls, per_dim, sites, drawn = [], [], True, [], False
    for start in range(0, x.shape[0], batch_size):
        xb = x[start:start + batch_size]
        yb = None if y is None else y[start:start + batch_size]
        model_trace, guide_trace = particle_traces(model, xb, yb, 1)
        m_batch, k_batch = [], []
        for name, q_site in sample_sites(guide_trace):
            p_site = model_trace.nodes[name]
            q, p = q_site["fn"], p_site["fn"]
            m_batch.append(_site_mean(q, q_site["value"]).reshape(xb.shape[0], -1))
            drawn = drawn or not _has_mean(q)
            try:
                kl = kl_divergence(q.base_dist, p.base_dist)
                kl = kl.reshape(xb.shape[0], -1)
            except (AttributeError, NotImplementedError):
                per_dim = False
                w = log_weights_of_site(model, xb, yb, name, kl_samples)
                kl = w.mean(0).reshape(xb.shape[0], 1)
            k_batch.append(kl)
            if start == 0:
                sites.append(name)
        means.append(torch.cat(m_batch, 1))
        kls.append(torch.cat(k_batch, 1))
    means_all = torch.cat(means)
    if drawn:  # a guide without a closed-form mean (a flow): Cov_x of two independent
        # averages of draws, whose noise (the posterior's spread / draws) does not correlate
        a, b = (torch.cat([m[name] for name in sites], 1)
                for m in (_guide_means(model, x, y, batch_size, MEAN_PARTICLES) for _ in "ab"))
        variance = ((a - a.mean(0)) * (b - b.mean(0))).sum(0) / (a.shape[0] - 1)
        return LatentUsage(variance, torch.cat(kls).mean(0), per_dim, sites)
    if len(sites) > 1:  # E_q[z_s] of a site below another one: average over draws above it
        marginal = _guide_means(model, x, y, batch_size, MEAN_PARTICLES)
        means_all = torch.cat([marginal[name] for name in sites], 1)
    return LatentUsage(means_all.var(0, unbiased=True), torch.cat(kls).mean(0), per_dim, sites)


def bits_per_dim(nats: float | None, dims: int) -> float | None:
    """``-nats / (dims ln 2)``: a log-probability (or a bound on one) per data point in bits per
    dimension (positive; the lower a bound in nats, the higher in bits)."""
    return None if nats is None else -nats / (dims * math.log(2))


def bits_metrics(metrics: dict, dims: int) -> dict:
    """The ``*_bpd`` keys of the nat bounds in ``metrics`` (those present), and ``bpd_dims``."""
    out = {f"{key}_bpd": bits_per_dim(metrics[key], dims)
           for key in ("test_elbo", "test_iwae", "test_log_likelihood") if key in metrics}
    if "test_log_likelihood_stderr" in metrics:
        out["test_log_likelihood_bpd_stderr"] = metrics["test_log_likelihood_stderr"] / (
            dims * math.log(2))
    return out | {"bpd_dims": dims}


def evaluate(model: LatentModel, x: torch.Tensor, y: torch.Tensor | None = None,
             num_samples: int = 5000, iwae_ks: tuple[int, ...] = (5, 50),
             progress: bool = False) -> dict:
    """The test metrics of ``../shared/design.md`` (keys ``test_*``, ``active_units`` ...),
    and the bounds in bits per dimension (``*_bpd``) when ``model.discrete_likelihood``.

    An exception raised inside ``model``'s own code is a one-line
    :class:`~pyro_vae.errors.ModelCodeError` naming the file and line."""
    require_latent_model(model, "evaluate")
    check_points(model, x, y)
    model.eval()
    with model_code_errors(model, "evaluation", vectorized=True):
        bounds = importance_bounds(model, x, y, num_samples, iwae_ks, progress=progress)
        usage = latent_usage(model, x, y)
        per_site = active_units_per_site(model, x, y)
    bounds = bounds.summary()
    k_max = max(iwae_ks) if iwae_ks else None
    metrics = {
        "test_elbo": bounds["elbo"],
        "test_elbo_stderr": bounds["elbo_stderr"],
        "test_iwae": bounds["iwae"].get(k_max) if k_max else None,
        "iwae_k": k_max,
        "test_iwae_bounds": {str(k): v for k, v in bounds["iwae"].items()},
        "test_log_likelihood": bounds["log_likelihood"],
        "test_log_likelihood_stderr": bounds["log_likelihood_stderr"],
        "test_log_likelihood_mc_stderr": bounds["log_likelihood_mc_stderr"],
        "ll_num_samples": num_samples,
        "num_test_points": bounds["num_points"],
        "active_units": usage.active_units,
        "active_unit_threshold": ACTIVE_UNIT_THRESHOLD,
        "posterior_mean_variance": usage.posterior_mean_variance.tolist(),
        "kl_per_dim": usage.kl_per_dim.tolist(),
        "kl_is_per_dim": usage.kl_is_per_dim,
        "kl_total": usage.kl_per_dim.sum().item(),
        "active_units_per_site": per_site,
    }
    if model.discrete_likelihood:
        metrics |= bits_metrics(metrics, model.scored_dims)
    return metrics


def mutual_information_gap(latents: torch.Tensor, factors: torch.Tensor, bins: int = 20,
                           names: tuple[str, ...] = ()) -> dict:
    r"""The mutual information gap (MIG, Chen et al. 2018) of latent codes and known factors.

    .. math::

        \mathrm{MIG} = \frac{1}{K} \sum_{k=1}^{K} \frac{1}{H(v_k)}
            \Big(I(z_{j^{(k)}}; v_k) - \max_{j \ne j^{(k)}} I(z_j; v_k)\Big),
        \qquad j^{(k)} = \arg\max_j I(z_j; v_k),

    for latents ``(N, D)`` (e.g. the guide's means) and discrete factors ``(N, K)``. Each latent
    dimension is cut into ``bins`` equal-width bins and the mutual information and entropies
    are the plug-in estimates of ``sklearn.metrics.mutual_info_score`` (nats). Returns
    ``{"mig": ..., "mig_per_factor": {name: ...}, "mi": D x K list}``; a constant factor is left
    out. 1 when each factor is carried by exactly one dimension, 0 when none is.
    """
    from sklearn.metrics import mutual_info_score

    z = latents.detach().cpu().double().numpy()
    v = factors.detach().cpu().numpy()
    if z.ndim != 2 or v.ndim != 2 or len(z) != len(v):
        raise ConfigError(f"MIG needs latents (N, D) and factors (N, K), got {z.shape}, "
                          f"{v.shape}")
    codes = []
    for d in range(z.shape[1]):
        edges = np.histogram_bin_edges(z[:, d], bins=bins)
        codes.append(np.digitize(z[:, d], edges[1:-1]))
    names = tuple(names) or tuple(f"factor{k}" for k in range(v.shape[1]))
    mi = np.array([[mutual_info_score(v[:, k], c) for k in range(v.shape[1])] for c in codes])
    per_factor = {}
    for k in range(v.shape[1]):
        entropy = mutual_info_score(v[:, k], v[:, k])
        if entropy <= 0:
            continue
        top = np.sort(mi[:, k])[::-1]
        second = top[1] if len(top) > 1 else 0.0
        per_factor[names[k]] = float((top[0] - second) / entropy)
    mig = float(np.mean(list(per_factor.values()))) if per_factor else float("nan")
    return {"mig": mig, "mig_per_factor": per_factor, "mi": mi.tolist()}


def _guide_means(model: LatentModel, x: torch.Tensor, y: torch.Tensor | None,
                 batch_size: int, num_particles: int) -> dict[str, torch.Tensor]:
    """The guide's mean of each latent site per data point, ``{site: (N, D_site)}``, averaged
    over ``num_particles`` draws of the sites it depends on (the guide alone is run)."""
    guide = with_particles(model.guide, model, num_particles)
    means: dict[str, list[torch.Tensor]] = {}
    for start in range(0, x.shape[0], batch_size):
        xb = x[start:start + batch_size]
        yb = None if y is None else y[start:start + batch_size]
        guide_trace = poutine.trace(guide).get_trace(xb, yb)
        for name, site in sample_sites(guide_trace):
            v = site["value"]
            m = _site_mean(site["fn"], v).expand_as(v).reshape(num_particles, xb.shape[0], -1)
            means.setdefault(name, []).append(m.mean(0))
    return {name: torch.cat(m) for name, m in means.items()}


@torch.no_grad()
def latent_means(model: LatentModel, x: torch.Tensor, y: torch.Tensor | None = None,
                 batch_size: int = 1000) -> torch.Tensor:
    """The guide's mean of every latent site, concatenated per data point: ``(N, D)``."""
    model.eval()
    return torch.cat(list(_guide_means(model, x, y, batch_size, 1).values()), 1)


CODE_ZERO_THRESHOLD = 0.1


def code_sparsity(model: LatentModel, x: torch.Tensor, y: torch.Tensor | None = None,
                  threshold: float = CODE_ZERO_THRESHOLD) -> dict:
    """How sparse the guide's codes (means) of ``x`` are: the share of (point, unit) pairs
    with ``|z| < threshold`` and the mean ``|z|`` (the keys ``code_sparsity``,
    ``code_mean_abs`` and ``code_zero_threshold`` of ``metrics.json``)."""
    codes = latent_means(model, x, y).abs()
    return {"code_sparsity": (codes < threshold).float().mean().item(),
            "code_mean_abs": codes.mean().item(), "code_zero_threshold": threshold}


def disentanglement(model: LatentModel, data) -> dict:
    """MIG of the guide's means on the test split of a data set with known factors ({}
    otherwise): the keys ``mig`` and ``mig_per_factor`` of ``metrics.json``."""
    if getattr(data, "test_factors", None) is None:
        return {}
    y = data.test_y if model.is_conditional else None
    result = mutual_information_gap(latent_means(model, data.test_x, y), data.test_factors,
                                    names=data.factor_names)
    return {"mig": result["mig"], "mig_per_factor": result["mig_per_factor"]}


@torch.no_grad()
def active_units_per_site(model: LatentModel, x: torch.Tensor, y: torch.Tensor | None = None,
                          batch_size: int = 500,
                          num_particles: int = MEAN_PARTICLES) -> dict[str, int]:
    """Active units of each latent site (e.g. each layer of a hierarchical VAE).

    Unit u of site s is active when :math:`\\mathrm{Cov}_x(\\mathbb{E}_{q(z|x)}[z_{s,u}])`
    exceeds 0.01. For a site whose guide distribution depends on another latent (``z2`` given
    ``z1`` in a bottom-up guide) the inner mean is averaged over ``num_particles`` draws of
    the sites before it, so it estimates the marginal mean under q(z | x).
    """
    means = _guide_means(model, x, y, batch_size, num_particles)
    return {name: int((m.var(0, unbiased=True) > ACTIVE_UNIT_THRESHOLD).sum())
            for name, m in means.items()}
