"""What a pair's programs look like from outside: which latents are global, which have no
posterior spread (a point-mass guide).

Evaluation by importance sampling, the latent pictures and ``pyro-vae diagnose`` run the
programs vectorized over particles and need every latent inside the ``"data"`` plate (one
latent per data point). A model with global latents (a Bayesian mixture's weights) trains,
and gets the ELBO of the whole test set instead (:func:`whole_data_elbo`); the others say why
they do not apply (:func:`require_local_latents`). A guide that is a point mass (an
autoencoder's ``Delta``) has no posterior for ``pyro-vae diagnose`` to look at
(:func:`require_posterior`).
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from pyro.util import get_rng_state, set_rng_state

from pyro_vae.errors import ConfigError


def global_latent_sites(model, x: torch.Tensor, y: torch.Tensor | None = None) -> list[str]:
    """Latent sites of the guide outside the ``"data"`` plate. Runs the guide once on two
    points; the RNG states are put back, so a seeded run is unchanged."""
    state = get_rng_state()
    try:
        with torch.no_grad(), poutine.block():
            trace = poutine.trace(model.guide).get_trace(x[:2], None if y is None else y[:2])
    finally:
        set_rng_state(state)
    return [name for name, s in trace.nodes.items()
            if s["type"] == "sample" and not site_is_subsample(s)
            and "data" not in {f.name for f in s["cond_indep_stack"]}]


def _base(fn):
    while isinstance(fn, (dist.Independent, dist.MaskedDistribution)):
        fn = fn.base_dist
    return fn


def point_mass_sites(model, x: torch.Tensor, y: torch.Tensor | None = None) -> list[str]:
    """Latent sites whose guide distribution is a point mass (``Delta``) or whose prior the
    model masks out: a deterministic encoder, no posterior. RNG states are put back."""
    state = get_rng_state()
    try:
        with torch.no_grad(), poutine.block():
            y2 = None if y is None else y[:2]
            guide = poutine.trace(model.guide).get_trace(x[:2], y2)
            joint = poutine.trace(poutine.replay(model.model, trace=guide)).get_trace(x[:2], y2)
    finally:
        set_rng_state(state)
    out = []
    for name, s in guide.nodes.items():
        if s["type"] != "sample" or site_is_subsample(s):
            continue
        prior = joint.nodes.get(name, {})
        if isinstance(_base(s["fn"]), dist.Delta) or prior.get("mask") is False:
            out.append(name)
    return out


def require_posterior(model, data, what: str) -> None:
    """Raise :class:`ConfigError` if a latent of ``model`` has no posterior spread (see
    :func:`point_mass_sites`): ``what`` needs a distribution to draw from."""
    y = data.test_y if model.is_conditional else None
    points = point_mass_sites(model, data.test_x, y)
    if points:
        raise ConfigError(f"{what} needs a posterior; model {model.name}'s guide is a point "
                          f"mass at {', '.join(points)} (a deterministic encoder)")


def require_local_latents(model, data, what: str) -> None:
    """Raise :class:`ConfigError` if ``model`` has global latents (``what`` needs per-point
    ones)."""
    y = data.test_y if model.is_conditional else None
    outside = global_latent_sites(model, data.test_x, y)
    if outside:
        raise ConfigError(f"{what} needs every latent inside the 'data' plate; model "
                          f"{model.name} has global latents ({', '.join(outside)})")


@torch.no_grad()
def whole_data_elbo(model, x: torch.Tensor, y: torch.Tensor | None = None) -> float:
    """One-sample ELBO of the whole of ``x`` at scale 1, divided by ``len(x)``: for a model with
    global latents, whose terms are then spread over the points."""
    guide_trace = poutine.trace(model.guide).get_trace(x, y)
    model_trace = poutine.trace(poutine.replay(model.model, trace=guide_trace)).get_trace(x, y)
    return (model_trace.log_prob_sum() - guide_trace.log_prob_sum()).item() / x.shape[0]
