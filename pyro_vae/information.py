r"""Mutual information I(x; z) under the aggregate posterior, and the "ELBO surgery" of the KL term
(Hoffman & Johnson 2016), for any pair whose latents are per data point and continuous.

Over N data points :math:`x_1..x_N` the aggregate posterior is the mixture of the guides,

.. math::

    q(z) = \frac1N \sum_{m=1}^{N} q(z \mid x_m),

and the average KL term of the ELBO splits into two non-negative parts:

.. math::

    \underbrace{\frac1N \sum_n \mathrm{KL}(q(z|x_n) \,\|\, p(z))}_{\text{KL term}}
    = \underbrace{\mathbb{E}_{n, z \sim q(z|x_n)}[\log q(z|x_n) - \log q(z)]}_{I(x;\,z)}
    + \underbrace{\mathbb{E}_{n, z \sim q(z|x_n)}[\log q(z) - \log p(z)]}_{
        \mathrm{KL}(q(z)\,\|\,p(z))}.

I(x; z) is the mutual information between the index n (x uniform over the N points) and z, so
:math:`0 \le I \le \log N`; each sample's term :math:`\log q(z|x_n) - \log q(z)` is at most
:math:`\log N` because q(z) contains the point's own guide with weight 1/N. Estimates near
:math:`\log N` mean the guides barely overlap and N, not the model, limits the number.

Estimator (:func:`surgery`): ``samples`` draws :math:`z \sim q(z|x_n)` for each point n; for each
draw, :math:`\log q(z|x_m)` for all N points m -- an N x N (times ``samples``) matrix of log
densities, computed in chunks of draws so that about ``max_elements`` latent values are alive at
once -- gives :math:`\log q(z) = \mathrm{logsumexp}_m \log q(z|x_m) - \log N`. The guide is run
on all N points with the draws as the values of its sites (``poutine.condition``) under a plate
of draws, so a guide whose later sites depend on earlier ones (a hierarchical VAE) is scored
exactly; :math:`\log p(z)` is read from the model's trace at the latent sites (learned priors
such as VaDE's mixture included). The KL term is estimated from **fresh** draws the ordinary
way (the model replayed on the guide, :mod:`pyro_vae.importance`), so ``surgery_gap`` =
I + KL(q(z)||p(z)) - KL term is zero up to Monte Carlo error and checks the pairwise
computation against the ordinary one. Standard errors follow the package convention
(:mod:`pyro_vae.importance`): per-point averages, sd across points / sqrt(N); the gap's is that
of the paired per-point differences.

The estimate of I is that of the finite mixture of the N guides; as an estimate of the
population I(x; z) it is biased at finite N (the point's own guide inflates q(z) near z); the
bias shrinks as N grows (tests/test_information.py measures it on the linear-Gaussian model).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from pyro import poutine

from pyro_vae.errors import ConfigError, model_code_errors, require_latent_model
from pyro_vae.estimators.traces import (
    data_frame,
    sample_sites,
)
from pyro_vae.importance import (
    check_points,
    particle_traces,
    site_log_prob,
    stderr_across_points,
    with_particles,
)
from pyro_vae.models.base import LatentModel
from pyro_vae.structure import global_latent_sites, point_mass_sites

__all__ = ["MAX_POINTS", "SAMPLES", "Surgery", "not_applicable", "surgery", "surgery_metrics"]

SAMPLES = 10  # draws z ~ q(z | x_n) per point
MAX_POINTS = 1000  # at most the first 1,000 test points make up q(z) (cost: N^2)


@dataclass
class Surgery:
    """Per-point averages over draws (tensors of length N)."""

    mutual_info: torch.Tensor  # E_z[log q(z|x_n) - log q(z)]
    marginal_kl: torch.Tensor  # E_z[log q(z) - log p(z)]
    kl_term: torch.Tensor  # E_z[log q(z|x_n) - log p(z)], fresh draws
    max_term: float  # the largest single log q(z|x_n) - log q(z) (<= log N)
    diagonal_error: float = 0.0  # max |log q(z|x_n) from the N x N matrix - from the trace|

    def summary(self) -> dict:
        n = len(self.mutual_info)
        gap = self.mutual_info + self.marginal_kl - self.kl_term
        return {
            "mutual_info": self.mutual_info.mean().item(),
            "mutual_info_se": stderr_across_points(self.mutual_info),
            "mutual_info_max": math.log(n),
            "mutual_info_points": n,
            "marginal_kl": self.marginal_kl.mean().item(),
            "marginal_kl_se": stderr_across_points(self.marginal_kl),
            "kl_term": self.kl_term.mean().item(),
            "kl_term_se": stderr_across_points(self.kl_term),
            "surgery_gap": gap.mean().item(),
            "surgery_gap_se": stderr_across_points(gap),
        }


def not_applicable(model: LatentModel, x: torch.Tensor,
                   y: torch.Tensor | None = None) -> str | None:
    """Why I(x; z) and the surgery do not apply to ``model`` (None when they do), read from its
    capabilities and the structure of its programs, never its name: discrete latents
    (``has_discrete_latents``: the guide's or the model's sum over them is not a density of z
    this estimator scores), a label the guide conditions on (``is_conditional``: q(z) would mix
    over labels, I(x; z | y) is another number), global latents, or a point-mass guide (no
    density log q(z | x))."""
    if getattr(model, "has_discrete_latents", False):
        return "the model has discrete latents (has_discrete_latents); I(x; z) is estimated " \
               "for continuous ones"
    if getattr(model, "is_conditional", False):
        return "the guide conditions on the label (is_conditional): the aggregate posterior " \
               "would mix over labels"
    outside = global_latent_sites(model, x, y)
    if outside:
        return f"I(x; z) needs every latent inside the 'data' plate; {', '.join(outside)} " \
               "is global"
    points = point_mass_sites(model, x, y)
    if points:
        return f"the guide is a point mass at {', '.join(points)} (a deterministic code): " \
               "log q(z | x) has no density"
    return None


def _latent_log_prob(trace, names: list[str], nesting: int) -> torch.Tensor:
    return sum(site_log_prob(name, trace.nodes[name], nesting) for name in names)


def _queries(value: torch.Tensor, axis: int) -> torch.Tensor:
    """A site's draws ``(S, ..., B at axis, ...)`` as ``(S*B, ..., 1 at axis, ...)``: one
    particle per (draw, point), in the order draw-major."""
    moved = value.movedim(axis, 1)
    return moved.reshape(-1, *moved.shape[2:]).unsqueeze(axis)


def _pairwise_log_q(model: LatentModel, x: torch.Tensor, y: torch.Tensor | None,
                    values: dict[str, torch.Tensor], axes: dict[str, int],
                    nesting: int) -> torch.Tensor:
    """``log q(z_i | x_m)`` for the M draws of ``values`` (particles) and all points m of ``x``:
    ``(M, N)``."""
    n = x.shape[0]
    data = {}
    for name, v in values.items():
        shape = list(v.shape)
        shape[axes[name]] = n
        data[name] = v.expand(shape)
    guide = poutine.condition(with_particles(model.guide, model, next(iter(values.values()))
                                             .shape[0]), data=data)
    trace = poutine.trace(guide).get_trace(x, y)
    return _latent_log_prob(trace, list(values), nesting).expand(-1, n)


@torch.no_grad()
def surgery(model: LatentModel, x: torch.Tensor, y: torch.Tensor | None = None,
            samples: int = SAMPLES, block: int = 500, max_elements: int = 2**24) -> Surgery:
    """I(x; z), KL(q(z) || p(z)) and the KL term over the points of ``x`` (see the module
    docstring). The pair's latents must all be continuous and inside the ``"data"`` plate."""
    require_latent_model(model, "the mutual information")
    check_points(model, x, y)
    reason = not_applicable(model, x, y)
    if reason is not None:
        raise ConfigError(f"I(x; z) does not apply: {reason}")
    model.eval()
    n, nesting = x.shape[0], model.max_plate_nesting + 1
    log_n = math.log(n)
    mi, mk, kl, max_term, diagonal = [], [], [], -math.inf, 0.0
    with model_code_errors(model, "the mutual information", vectorized=True):
        for start in range(0, n, block):
            xb = x[start:start + block]
            yb = None if y is None else y[start:start + block]
            b = xb.shape[0]
            model_trace, guide_trace = particle_traces(model, xb, yb, samples)
            names = [name for name, _ in sample_sites(guide_trace)]
            log_p = _latent_log_prob(model_trace, names, nesting).expand(samples, b)
            axes = {name: nesting + data_frame(name, guide_trace.nodes[name]).dim
                    for name in names}
            queries = {name: _queries(guide_trace.nodes[name]["value"], axes[name])
                       for name in names}
            per_query = sum(v[0].numel() for v in queries.values()) * n
            chunk = max(1, max_elements // per_query)
            own, log_qz = [], []
            for first in range(0, samples * b, chunk):
                part = {name: v[first:first + chunk] for name, v in queries.items()}
                pairs = _pairwise_log_q(model, x, y, part, axes, nesting).double()
                index = torch.arange(first, first + pairs.shape[0], device=x.device) % b + start
                own.append(pairs.gather(1, index[:, None])[:, 0])
                log_qz.append(torch.logsumexp(pairs, 1) - log_n)
            own_q = torch.cat(own).reshape(samples, b)
            traced = _latent_log_prob(guide_trace, names, nesting).double().expand(samples, b)
            diagonal = max(diagonal, (own_q - traced).abs().max().item())
            log_q = torch.cat(log_qz).reshape(samples, b)
            terms = own_q - log_q
            max_term = max(max_term, terms.max().item())
            mi.append(terms.mean(0))
            mk.append((log_q - log_p.double()).mean(0))
            fresh_model, fresh_guide = particle_traces(model, xb, yb, samples)
            kl.append((_latent_log_prob(fresh_guide, names, nesting)
                       - _latent_log_prob(fresh_model, names, nesting)).double()
                      .expand(samples, b).mean(0))
    return Surgery(torch.cat(mi), torch.cat(mk), torch.cat(kl), max_term, diagonal)


def surgery_metrics(model: LatentModel, x: torch.Tensor, y: torch.Tensor | None = None,
                    max_points: int = MAX_POINTS, samples: int = SAMPLES) -> dict:
    """The ``mutual_info``, ``marginal_kl``, ``kl_term`` ... keys of ``metrics.json`` over the
    first ``max_points`` points of ``x``."""
    x = x[:max_points]
    y = None if y is None else y[:max_points]
    return surgery(model, x, y, samples).summary() | {"mutual_info_samples": samples}
