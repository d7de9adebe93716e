r"""Per-data-point log densities of vectorized traces: what every multi-sample bound needs.

In a vectorized trace each sample site's log density has batch dims only: the particles'
plate leftmost, the model's plates to its right. :func:`point_log_prob` is THE reduction of
such a tensor to ``(particles, data points)``: pad it on the left to the number of batch dims
in play (the model's ``max_plate_nesting``, plus one when particles are vectorized), keep the
particle dim and the ``"data"`` plate's dim, sum the rest. It requires every sample site to
sit in the ``"data"`` plate -- a global latent has no per-point weight -- and raises
:class:`~pyro_vae.errors.ConfigError` naming the site otherwise. Two modes feed it:

* training (:func:`point_log_probs`, used by IWAE, DReG, RWS and VIMCO): the site's
  ``log_prob`` with its scale, divided by the data plate's subsample scale ``N/B``, which is
  returned separately and multiplies the per-point bound *after* the log-sum-exp (as
  :class:`~pyro_vae.estimators.iwae.IWAE_ELBO` does); any other scale, e.g. a KL weight beta,
  stays inside the weights. DReG's parameter-stopped and RWS's value-stopped guide densities
  go through the same reduction.
* evaluation (:func:`evaluation_log_prob`, used by :mod:`pyro_vae.importance`): the
  distribution's ``log_prob(value)`` at scale 1, mask kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pyro import poutine
from pyro.distributions.util import detach, scale_and_mask
from pyro.infer.enum import get_importance_trace
from pyro.poutine import Trace
from pyro.poutine.util import prune_subsample_sites, site_is_subsample

from pyro_vae.errors import ConfigError

DATA_PLATE = "data"
PARTICLE_PLATE = "num_particles_vectorized"  # the plate Pyro's ELBOs vectorize particles with


def data_frame(name: str, site: dict):
    """The ``"data"`` plate's frame of sample site ``name``; :class:`ConfigError` when the site
    sits outside it."""
    for frame in site["cond_indep_stack"]:
        if frame.name == DATA_PLATE and frame.vectorized:
            return frame
    raise ConfigError(f"per-data-point log weights need every sample site inside the "
                      f"'{DATA_PLATE}' plate; site {name!r} is not (put it inside "
                      "self.data_plate(x, num_data))")


def subsample_scale(frame) -> float:
    """``full_size / size`` of a plate frame: N/B for a minibatch of B of N points, else 1."""
    return frame.full_size / frame.size if frame.full_size else 1.0


def point_log_prob(name: str, site: dict, log_prob: torch.Tensor, nesting: int) -> torch.Tensor:
    """``log_prob`` (batch dims only) of sample site ``name`` reduced to ``(particles, points)``.

    ``nesting`` counts the batch dims in play; the particle dim is the leftmost of them (a
    singleton when the particles are not vectorized)."""
    frame = data_frame(name, site)
    if log_prob.dim() > nesting or nesting + frame.dim < 1:
        raise ConfigError(f"site {name!r}: a log density of shape {tuple(log_prob.shape)} with "
                          f"the 'data' plate at dim {frame.dim} does not fit in {nesting} batch "
                          "dims with the particles leftmost (declare event dims with .to_event "
                          "or raise max_plate_nesting)")
    lp = log_prob.reshape((1,) * (nesting - log_prob.dim()) + tuple(log_prob.shape))
    others = [d for d in range(1, nesting) if d != nesting + frame.dim]
    return lp.sum(others) if others else lp


def evaluation_log_prob(site: dict) -> torch.Tensor:
    """A site's log density for evaluation: ``fn.log_prob(value)`` at scale 1, mask kept."""
    return scale_and_mask(site["fn"].log_prob(site["value"]), 1.0, site["mask"])


def sample_sites(trace: Trace) -> list[tuple[str, dict]]:
    """``(name, site)`` for every sample site of a trace, subsample sites left out."""
    return [(name, s) for name, s in trace.nodes.items()
            if s["type"] == "sample" and not site_is_subsample(s)]


def batch_dims(sites: list[tuple[str, dict]]) -> int:
    """Batch dims in play in a training trace: down to Pyro's particle plate where there is
    one, else one more than the deepest plate or log density (a singleton particle dim)."""
    deepest = 0
    for _, site in sites:
        for frame in site["cond_indep_stack"]:
            if frame.name == PARTICLE_PLATE:
                return -frame.dim
            if frame.vectorized:
                deepest = max(deepest, -frame.dim)
        deepest = max(deepest, site["log_prob"].dim())
    return deepest + 1


@dataclass
class PointLogProbs:
    """Log densities per particle (dim 0) and data point (dim 1), subsample scale divided out."""

    log_p: torch.Tensor  # log p(x, z_k): every model sample site
    log_q: torch.Tensor  # log q(z_k | x): every guide sample site
    log_q_score: torch.Tensor  # log q of the non-reparameterizable guide sites only
    data_scale: float  # N / B of the data plate (1 without subsampling)

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
    """Training-mode log densities ``(particles, points)`` of a vectorized trace pair whose
    ``log_prob`` is computed (see the module docstring).

    ``detach_guide_params``: score z under the guide with its parameters stopped (DReG);
    ``detach_guide_values``: score stop(z) (wake-phi of reweighted wake-sleep)."""
    model_sites, guide_sites = sample_sites(model_trace), sample_sites(guide_trace)
    nesting = batch_dims(model_sites + guide_sites)
    scale = subsample_scale(data_frame(*model_sites[0]))

    def reduced(name: str, site: dict, log_prob: torch.Tensor) -> torch.Tensor:
        return point_log_prob(name, site, log_prob, nesting)

    log_p = sum(reduced(name, s, s["log_prob"]) for name, s in model_sites) / scale
    log_q = log_q_score = 0.0
    for name, s in guide_sites:
        lp = (detached_log_prob(s) if detach_guide_params else
              stopped_value_log_prob(s) if detach_guide_values else s["log_prob"])
        log_q = log_q + reduced(name, s, lp) / scale
        if not s["fn"].has_rsample:
            log_q_score = log_q_score + reduced(name, s, s["log_prob"]) / scale
    log_p, log_q = torch.broadcast_tensors(log_p, torch.as_tensor(log_q, device=log_p.device))
    log_q_score = torch.as_tensor(log_q_score, device=log_p.device).expand_as(log_p)
    return PointLogProbs(log_p, log_q, log_q_score, scale)


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
