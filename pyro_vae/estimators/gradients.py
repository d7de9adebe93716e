r"""The gradient-variance study: many gradient estimates of one minibatch, by any objective.

For a fixed model, guide and minibatch, each call of ``objective.loss_and_grads`` draws one
stochastic gradient :math:`g^{(s)}`. From S draws, per parameter coordinate j:

* mean :math:`\bar g_j` and variance :math:`\hat\sigma_j^2` (the standard error of the mean is
  :math:`\hat\sigma_j / \sqrt S`);
* signal-to-noise ratio :math:`\mathrm{SNR}_j = |\bar g_j| / \hat\sigma_j` (Rainforth et al.
  2018, "Tighter variational bounds are not necessarily better").

:func:`summarize` reports the norm of the mean, the total variance :math:`\sum_j
\hat\sigma_j^2` and the mean SNR over coordinates. Different objectives estimate gradients of
different targets (ELBO, L_K, or, for wake-phi, minus KL(p || q)); compare variances between
estimators of the same target.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from pyro import poutine
from torch import nn

from pyro_vae.models.base import LatentModel


def guide_parameters(model: LatentModel, x: torch.Tensor) -> list[nn.Parameter]:
    """The module parameters the guide's log density depends on (found by autograd)."""
    trace = poutine.trace(model.guide).get_trace(x)
    log_q = sum(s["fn"].log_prob(s["value"]).sum() for s in trace.nodes.values()
                if s["type"] == "sample")
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(log_q, params, allow_unused=True)
    return [p for p, g in zip(params, grads, strict=True) if g is not None]


def gradient_draws(objective, model: LatentModel, x: torch.Tensor, params: list[nn.Parameter],
                   num_draws: int, num_data: int | None = None,
                   baseline_optim: torch.optim.Optimizer | None = None) -> torch.Tensor:
    """``(num_draws, P)``: the flattened gradients of ``params``, one row per call of
    ``objective.loss_and_grads`` on ``x``. ``baseline_optim`` (if given) takes a step on the
    objective's own baseline parameters after each draw; the model is never changed."""
    rows = []
    for _ in range(num_draws):
        model.zero_grad(set_to_none=True)
        objective.loss_and_grads(model.model, model.guide, x, None, num_data=num_data)
        rows.append(torch.cat([x.new_zeros(0)] + [
            (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
            for p in params]))
        if baseline_optim is not None:
            baseline_optim.step()
            baseline_optim.zero_grad(set_to_none=True)
    model.zero_grad(set_to_none=True)
    return torch.stack(rows)


def warm_up_baselines(objective, model: LatentModel, x: torch.Tensor, steps: int,
                      lr: float = 1e-2, num_data: int | None = None) -> None:
    """Train the baselines of a ``tracegraph`` objective on ``x`` for ``steps`` draws (the
    decaying average updates itself; a neural baseline gets Adam steps); the model stays."""
    if steps <= 0:
        return
    objective.loss_and_grads(model.model, model.guide, x, None, num_data=num_data)
    nets = getattr(objective, "baselines", None)
    optim = torch.optim.Adam(nets.parameters(), lr=lr) if nets is not None else None
    gradient_draws(objective, model, x, [], steps - 1, num_data, optim)


@dataclass
class GradientStats:
    name: str
    num_draws: int
    mean: torch.Tensor
    variance: torch.Tensor
    seconds_per_draw: float

    @property
    def stderr(self) -> torch.Tensor:
        return (self.variance / self.num_draws).sqrt()

    def summary(self) -> dict:
        std = self.variance.sqrt()
        ok = std > 0
        snr = (self.mean.abs()[ok] / std[ok]).mean().item() if ok.any() else float("nan")
        return {"estimator": self.name, "draws": self.num_draws,
                "mean_norm": self.mean.norm().item(),
                "total_variance": self.variance.sum().item(),
                "mean_snr": snr, "ms_per_draw": 1000 * self.seconds_per_draw}


def summarize(name: str, draws: torch.Tensor, seconds: float = float("nan")) -> GradientStats:
    d = draws.double()
    return GradientStats(name, d.shape[0], d.mean(0), d.var(0, unbiased=True),
                         seconds / max(1, d.shape[0]))


def z_scores(stats: GradientStats, exact: torch.Tensor) -> torch.Tensor:
    """Per coordinate, |mean - exact| in standard errors of the mean."""
    return (stats.mean - exact.double()).abs() / stats.stderr.clamp_min(1e-12)


def difference_z_scores(a: GradientStats, b: GradientStats) -> torch.Tensor:
    """Per coordinate, |mean_a - mean_b| in standard errors of the difference."""
    return (a.mean - b.mean).abs() / (a.stderr.pow(2) + b.stderr.pow(2)).sqrt().clamp_min(1e-12)


def ppca_near_posterior(x_shape: tuple[int, ...], noise: float = 0.1) -> LatentModel:
    """Probabilistic PCA (``linear``) whose guide is its exact posterior, then every guide
    parameter nudged by ``noise`` x N(0, 1): a guide near the posterior, where the plain IWAE
    guide gradient is dominated by its score term (the DReG comparison)."""
    from pyro_vae.models import build_model

    model = build_model("linear", x_shape)
    model.set_guide_to_posterior()
    with torch.no_grad():
        for p in (model.A, model.c, model.raw_tril):
            p.add_(noise * torch.randn_like(p))
    return model


def study(objective, model: LatentModel, x: torch.Tensor, params: list[nn.Parameter],
          num_draws: int, name: str, num_data: int | None = None) -> GradientStats:
    """:func:`gradient_draws` timed and summarized."""
    t0 = time.perf_counter()
    draws = gradient_draws(objective, model, x, params, num_draws, num_data)
    return summarize(name, draws, time.perf_counter() - t0)
