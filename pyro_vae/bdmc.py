r"""Bidirectional Monte Carlo (Grosse et al. 2015; Wu et al. 2017): AIS's bracket on
log p(x) for data simulated from the model.

On a pair :math:`(x, z) \sim p(x, z)`, z is an exact sample of p(z|x). Forward AIS
(:func:`pyro_vae.ais.ais`) from the guide gives a stochastic lower bound on log p(x); the
chain run backwards from z (beta from 1 to 0) has weights with :math:`E[w_{rev}] = 1/p(x)`,
so :math:`-\log \frac1K \sum_k w_{rev,k}` is a stochastic upper bound. The two bracket the
true value, and their gap bounds the error of forward AIS with that many steps on such data.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from pyro import poutine

from pyro_vae.ais import (
    AISConfig,
    AISResult,
    PathDensities,
    annealed_estimate,
    pilot_step_sizes,
    schedule,
)
from pyro_vae.errors import ConfigError, check_positive
from pyro_vae.estimators.traces import sample_sites
from pyro_vae.models.base import LatentModel


@torch.no_grad()
def simulate(model: LatentModel, x_like: torch.Tensor, y: torch.Tensor | None = None):
    """``(x, z)`` drawn from the model, one per row of ``x_like`` (which gives only the
    shape): x the observed site's draw, z the latent sites' values by name."""
    with poutine.block():
        trace = poutine.trace(poutine.uncondition(model.model)).get_trace(x_like, y)
    x = trace.nodes[model.observed_site]["value"].detach()
    z = {name: site["value"].detach() for name, site in sample_sites(trace)
         if name != model.observed_site}
    return x, z


@dataclass
class BDMCResult:
    """The forward (lower) and reverse (upper) AIS estimates on the simulated points ``x``."""

    forward: AISResult
    reverse: AISResult
    x: torch.Tensor

    def summary(self) -> dict:
        lo, hi = self.forward.summary(), self.reverse.summary()
        return {"lower": lo["log_px"], "upper": hi["log_px"],
                "gap": hi["log_px"] - lo["log_px"], "lower_mc_stderr": lo["mc_stderr"],
                "upper_mc_stderr": hi["mc_stderr"], "points": len(self.forward.log_px),
                "seconds": self.forward.seconds + self.reverse.seconds}


def bdmc(model: LatentModel, num_points: int, x_like: torch.Tensor,
         y: torch.Tensor | None = None, config: AISConfig | None = None,
         progress: bool = False) -> BDMCResult:
    """Bidirectional Monte Carlo on ``num_points`` points simulated from the model (shaped as
    the rows of ``x_like``, repeated as needed): forward AIS (a stochastic lower bound on
    each log p(x)) and reverse AIS from the exact posterior sample (an upper bound), with the
    same pilot-adapted step sizes (reversed)."""
    config = config or AISConfig()
    check_positive("BDMC points", num_points)
    reps = -(-num_points // x_like.shape[0])
    template = x_like.repeat((reps,) + (1,) * (x_like.dim() - 1))[:num_points]
    y_sim = None if y is None else y.repeat((reps,) + (1,) * (y.dim() - 1))[:num_points]
    x, z = simulate(model, template, y_sim)
    began = time.perf_counter()
    betas = schedule(config.steps, config.schedule, device=x.device)
    steps = pilot_step_sizes(model, x, y_sim, betas, config, progress)
    path = PathDensities(model, x, y_sim, config.chains)
    missing = sorted(set(path.shapes) - set(z))
    if missing:
        raise ConfigError(f"BDMC needs the model to draw every latent of the guide; "
                          f"{', '.join(missing)} is not drawn by the model")
    forward = annealed_estimate(path, betas, path.unconstrain(path.first), steps, config,
                                progress, "AIS forward", False, began)
    began = time.perf_counter()
    reverse = annealed_estimate(path, betas.flip(0), path.unconstrain(z), steps.flip(0), config,
                                progress, "AIS reverse", True, began)
    return BDMCResult(forward, reverse, x)


__all__ = ["BDMCResult", "bdmc", "simulate"]
