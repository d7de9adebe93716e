"""What a pair's programs look like from outside: which latents are global.

Evaluation by importance sampling, the latent pictures and ``pyro-vae diagnose`` run the
programs vectorized over particles and need every latent inside the ``"data"`` plate (one
latent per data point). A model with global latents (a Bayesian mixture's weights) trains,
and gets the ELBO of the whole test set instead (:func:`whole_data_elbo`); the others say why
they do not apply (:func:`require_local_latents`).
"""

from __future__ import annotations

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
