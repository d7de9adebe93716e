"""Per-data-point log weights from vectorized traces: what every multi-sample estimator needs.

With K particles drawn in one vectorized trace, :func:`point_log_probs` reduces the log
densities of the model and the guide to ``(K, ...)`` tensors, one entry per particle and data
point (the plates shared by every sample site are kept, the others summed), with the minibatch
subsample scale ``N/B`` taken out -- it is returned separately and multiplies the per-point
bound *after* the log-sum-exp, as :class:`pyro_vae.objectives.IWAE_ELBO` does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from pyro import poutine
from pyro.distributions.util import detach, scale_and_mask
from pyro.infer.enum import get_importance_trace
from pyro.infer.util import get_dependent_plate_dims, torch_sum
from pyro.poutine import Trace
from pyro.poutine.util import prune_subsample_sites

from pyro_vae.errors import ConfigError


@dataclass
class PointLogProbs:
    """Log densities per particle (dim 0) and data point, subsample scale divided out."""

    log_p: torch.Tensor  # log p(x, z_k): every model sample site
    log_q: torch.Tensor  # log q(z_k | x): every guide sample site
    log_q_score: torch.Tensor  # log q of the non-reparameterizable guide sites only
    data_scale: float  # N / B of the data plate (1 without subsampling)
    sum_dims: set

    @property
    def log_w(self) -> torch.Tensor:
        return self.log_p - self.log_q


def importance_traces(elbo, model, guide, args, kwargs) -> tuple[Trace, Trace]:
    """One vectorized pair of traces (K = ``elbo.num_particles``) with log densities."""
    return get_importance_trace("flat", elbo.max_plate_nesting,
                                elbo._vectorized_num_particles(model),
                                elbo._vectorized_num_particles(guide), args, kwargs)


def replay_detached(elbo, model, guide_trace: Trace, args, kwargs) -> Trace:
    """The vectorized model replayed on the guide's samples with their gradients stopped."""
    detached = guide_trace.copy()
    for name, site in guide_trace.nodes.items():
        if site["type"] == "sample":
            detached.nodes[name] = dict(site, value=site["value"].detach())
    trace = poutine.trace(poutine.replay(elbo._vectorized_num_particles(model),
                                         trace=detached)).get_trace(*args, **kwargs)
    trace = prune_subsample_sites(trace)
    trace.compute_log_prob()
    return trace


def _sites(trace: Trace) -> list[dict]:
    return [s for s in trace.nodes.values() if s["type"] == "sample"]


def _data_scale(sites: list[dict]) -> float:
    shared = set(sites[0]["cond_indep_stack"]).intersection(
        *(s["cond_indep_stack"] for s in sites))
    return math.prod(f.full_size / f.size for f in shared
                     if f.full_size is not None and f.vectorized)


def detached_log_prob(site: dict) -> torch.Tensor:
    """log q(z) of a guide site with its distribution's parameters stopped (z keeps its path):
    the "sticking the landing" / DReG log density."""
    lp = detach(site["fn"]).log_prob(site["value"])
    return scale_and_mask(lp, site["scale"], site["mask"])


def stopped_value_log_prob(site: dict) -> torch.Tensor:
    """log q(stop(z)) of a guide site: gradients reach its parameters, not its sample's path."""
    return scale_and_mask(site["fn"].log_prob(site["value"].detach()), site["scale"],
                          site["mask"])


def point_log_probs(model_trace: Trace, guide_trace: Trace, detach_guide_params: bool = False,
                    detach_guide_values: bool = False) -> PointLogProbs:
    """Per-point log densities of a vectorized trace pair (see the module docstring).

    ``detach_guide_params``: score z under the guide with its parameters stopped (DReG);
    ``detach_guide_values``: score stop(z) (wake-phi of reweighted wake-sleep)."""
    sites = _sites(model_trace) + _sites(guide_trace)
    sum_dims = get_dependent_plate_dims(sites)
    scale = _data_scale(sites)
    log_p = sum(torch_sum(s["log_prob"], sum_dims) for s in _sites(model_trace)) / scale
    log_q = log_q_score = 0.0
    for s in _sites(guide_trace):
        lp = (detached_log_prob(s) if detach_guide_params else
              stopped_value_log_prob(s) if detach_guide_values else s["log_prob"])
        log_q = log_q + torch_sum(lp, sum_dims) / scale
        if not s["fn"].has_rsample:
            log_q_score = log_q_score + torch_sum(s["log_prob"], sum_dims) / scale
    log_p, log_q = torch.broadcast_tensors(log_p, torch.as_tensor(log_q, device=log_p.device))
    log_q_score = torch.as_tensor(log_q_score, device=log_p.device).expand_as(log_p)
    return PointLogProbs(log_p, log_q, log_q_score, scale, sum_dims)


def check_num_particles(name: str, num_particles: int, minimum: int = 2) -> None:
    if num_particles < minimum:
        raise ConfigError(f"the {name} objective needs --num-particles >= {minimum}, got "
                          f"{num_particles}")


def check_reparameterized(name: str, guide_trace: Trace) -> None:
    for site_name, site in guide_trace.nodes.items():
        if site["type"] == "sample" and not site["fn"].has_rsample:
            raise ConfigError(f"the {name} objective needs reparameterizable latents, but site "
                              f"{site_name!r} is not (discrete latents need vimco, rws or "
                              "tracegraph)")
