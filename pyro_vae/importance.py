r"""Importance sampling of log p(x) per data point, chunked and streamed.

For a data point x and S samples :math:`z_s \sim q(z|x)` (the guide as proposal) take the log
weights :math:`w_s = \log p(x, z_s) - \log q(z_s | x)`, every log density at scale 1 (a
training weight such as beta, or minibatch scaling, never enters; the reduction of a site to
``(particles, points)`` is :func:`pyro_vae.estimators.traces.point_log_prob`). Then

* ELBO: :math:`\mathcal{L}_1 = \frac1S \sum_s w_s`;
* IWAE bound (Burda et al. 2016): :math:`\mathcal{L}_K` = the mean over the S/K disjoint
  groups G of the K-sample estimate :math:`\log \frac1K \sum_{s \in G} e^{w_s}`;
* log p(x): :math:`\log \frac1S \sum_s e^{w_s}`, consistent and biased low by about half its
  squared Monte Carlo error, whose standard error per point is, by the delta method on the
  normalized weights, :math:`\sqrt{\hat\sigma^2(e^{w}) / (S\, \overline{e^{w}}^2)}`.

The groups of a smaller K nest inside those of a larger one, so ELBO <= L_5 <= L_50 <= log p(x)
holds for the very samples drawn (Jensen's inequality within each group), not only in
expectation. With the prior as proposal (:func:`prior_log_weights`, :math:`w_s = \log p(x |
z_s)`, :math:`z_s \sim p(z)`) the same estimators apply (:mod:`pyro_vae.likelihood`).

:func:`weight_chunks` is the one generator of weights: blocks of data points, and within each
block chunks of particles, sized so that about ``max_elements`` values of a data point's
shape are alive at once; a chunk holds a multiple of every group size, so no group straddles
two chunks. :class:`WeightStats` accumulates, per point and in one pass, everything above and
the spread over groups, so memory is O(N) whatever S is.

Standard errors: one convention, followed everywhere in pyro_vae
-----------------------------------------------------------------

* ``stderr`` of a number averaged over data points is always the standard error across
  points, :math:`\mathrm{sd}_n / \sqrt N` -- how far the number would move on another test
  set of the same size.
* ``mc_stderr`` is the Monte Carlo standard error of the reported number for the given points
  -- how far it would move with fresh samples: for log p(x) from all S samples, the delta
  method per point, combined over points as :math:`\sqrt{\sum_n se_n^2} / N`; for a mean over
  groups (L_K, the ELBO with K = 1), measured over the S/K groups:
  :math:`\sqrt{\sum_n \mathrm{sd}_n^2 / (S/K)} / N`.
* ``mc_sd`` is the spread of ONE K-sample estimate of one point's log p(x): the per-point
  standard deviation over the S/K groups, root mean square over points. It does not shrink
  as S grows; it is what prior and importance sampling are compared by.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import pyro
import torch
from pyro import poutine
from tqdm.auto import tqdm

from pyro_vae import distributed
from pyro_vae.errors import (
    ConfigError,
    DataError,
    check_positive,
    model_code_errors,
    require_latent_model,
)
from pyro_vae.estimators.traces import evaluation_log_prob, point_log_prob, sample_sites
from pyro_vae.models.base import LatentModel

EVAL_PARTICLES = "eval_particles"
WeightFn = Callable[[LatentModel, torch.Tensor, "torch.Tensor | None", int], torch.Tensor]


def with_particles(fn, model: LatentModel, num_particles: int):
    """``fn`` run inside a plate of ``num_particles`` vectorized particles, left of the model's
    ``max_plate_nesting`` dims."""
    return pyro.plate(EVAL_PARTICLES, num_particles, dim=-(model.max_plate_nesting + 1))(fn)


def particle_traces(model: LatentModel, x: torch.Tensor, y: torch.Tensor | None,
                    num_particles: int):
    """The guide's trace and the model's replayed on it, with vectorized particles."""
    guide_trace = poutine.trace(with_particles(model.guide, model, num_particles)).get_trace(x, y)
    model_trace = poutine.trace(poutine.replay(with_particles(model.model, model, num_particles),
                                               trace=guide_trace)).get_trace(x, y)
    return model_trace, guide_trace


def site_log_prob(name: str, site: dict, nesting: int) -> torch.Tensor:
    """A sample site's log density per point at scale 1 (``nesting`` batch dims, summed over
    the rest), as the estimators here and :mod:`pyro_vae.information` and
    :mod:`pyro_vae.ais` score sites."""
    return point_log_prob(name, site, evaluation_log_prob(site), nesting)


def trace_log_prob(trace, nesting: int) -> torch.Tensor:
    """The sum of :func:`site_log_prob` over a trace's sample sites."""
    return sum(site_log_prob(name, s, nesting) for name, s in sample_sites(trace))


def trace_log_weights(model_trace, guide_trace, nesting: int) -> torch.Tensor:
    """``log p(x, z) - log q(z | x)`` at scale 1 of a vectorized trace pair, ``(particles,
    points)``; ``nesting`` counts the batch dims, the particles' included."""
    return trace_log_prob(model_trace, nesting) - trace_log_prob(guide_trace, nesting)


def log_weights(model: LatentModel, x: torch.Tensor, y: torch.Tensor | None = None,
                num_particles: int = 1) -> torch.Tensor:
    """``log p(x_n, z_k) - log q(z_k | x_n)``, ``z_k ~ q``, as a ``(num_particles, len(x))``
    tensor."""
    traces = particle_traces(model, x, y, num_particles)
    return trace_log_weights(*traces, model.max_plate_nesting + 1).expand(num_particles,
                                                                          x.shape[0])


def log_weights_of_site(model: LatentModel, x: torch.Tensor, y: torch.Tensor | None,
                        name: str, num_particles: int) -> torch.Tensor:
    """``log q(z) - log p(z)`` of one latent site, per particle and data point (a KL sample)."""
    model_trace, guide_trace = particle_traces(model, x, y, num_particles)
    nesting = model.max_plate_nesting + 1
    return (site_log_prob(name, guide_trace.nodes[name], nesting)
            - site_log_prob(name, model_trace.nodes[name], nesting)).expand(num_particles,
                                                                            x.shape[0])


@torch.no_grad()
def prior_log_weights(model: LatentModel, x: torch.Tensor, y: torch.Tensor | None = None,
                      num_particles: int = 1) -> torch.Tensor:
    """``log p(x_n | z_k)`` with ``z_k ~ p(z)``, as a ``(num_particles, len(x))`` tensor."""
    with poutine.block():
        trace = poutine.trace(with_particles(model.model, model, num_particles)).get_trace(x, y)
    name, nesting = model.observed_site, model.max_plate_nesting + 1
    return site_log_prob(name, trace.nodes[name], nesting).expand(num_particles, x.shape[0])


class WeightChunk(NamedTuple):
    """Log weights ``(particles, points)`` of points ``start:stop``, particles from ``first``."""

    start: int
    stop: int
    first: int
    log_w: torch.Tensor


def chunk_sizes(x: torch.Tensor, num_samples: int, group: int = 1,
                max_elements: int = 2**25) -> tuple[int, int]:
    """(particles per chunk, a multiple of ``group``; data points per block)."""
    point_size = max(1, math.prod(x.shape[1:]))
    chunk = min(num_samples,
                max(group, (max(1, max_elements // point_size // 64) // group) * group))
    return chunk, max(1, max_elements // (chunk * point_size))


@torch.no_grad()
def weight_chunks(weights: WeightFn, model: LatentModel, x: torch.Tensor,
                  y: torch.Tensor | None, num_samples: int, group: int = 1,
                  max_elements: int = 2**25, progress: bool = False) -> Iterator[WeightChunk]:
    """``weights(model, x_block, y_block, k)`` for every block of points and chunk of particles
    until each point has ``num_samples`` (a multiple of ``group``), in double precision."""
    if num_samples % group:
        raise ConfigError(f"{num_samples} samples do not split into groups of {group}")
    chunk, points = chunk_sizes(x, num_samples, group, max_elements)
    starts = range(0, x.shape[0], points)
    for start in tqdm(starts, desc="importance sampling", disable=None if progress else True,
                      leave=False):
        stop = min(start + points, x.shape[0])
        xb, yb = x[start:stop], None if y is None else y[start:stop]
        for first in range(0, num_samples, chunk):
            k = min(chunk, num_samples - first)
            yield WeightChunk(start, stop, first, weights(model, xb, yb, k).double())


def stored_log_weights(weights: WeightFn, model: LatentModel, x: torch.Tensor,
                       y: torch.Tensor | None, num_samples: int,
                       max_elements: int = 2**25) -> torch.Tensor:
    """All of :func:`weight_chunks` in one ``(num_samples, len(x))`` matrix (for PSIS)."""
    out = torch.empty(num_samples, x.shape[0], dtype=torch.float64, device=x.device)
    for c in weight_chunks(weights, model, x, y, num_samples, 1, max_elements):
        out[c.first:c.first + c.log_w.shape[0], c.start:c.stop] = c.log_w
    return out


def stderr_across_points(v: torch.Tensor) -> float:
    """sd / sqrt(N) of per-point values (NaN for one point)."""
    return (v.std() / math.sqrt(len(v))).item() if len(v) > 1 else float("nan")


@dataclass
class Bounds:
    """Per-data-point estimates (tensors of length N) from one set of S samples a point."""

    num_samples: int
    elbo: torch.Tensor
    iwae: dict[int, torch.Tensor]  # L_K: mean over the S/K groups of the K-sample estimate
    log_px: torch.Tensor  # from all S samples
    log_px_mc_stderr: torch.Tensor  # delta method
    mc_sd: dict[int, torch.Tensor] = field(default_factory=dict)  # sd over groups; K = 1 too

    def to(self, dtype: torch.dtype) -> Bounds:
        return Bounds(self.num_samples, self.elbo.to(dtype),
                      {k: v.to(dtype) for k, v in self.iwae.items()}, self.log_px.to(dtype),
                      self.log_px_mc_stderr.to(dtype),
                      {k: v.to(dtype) for k, v in self.mc_sd.items()})

    def _mc_stderr(self, k: int) -> float:
        sd = self.mc_sd.get(k)
        n = len(self.log_px)
        return float("nan") if sd is None else (sd.pow(2).sum() * k / self.num_samples
                                                ).sqrt().item() / n

    def summary(self) -> dict:
        """Means over data points, ``stderr`` across points, ``mc_stderr`` and ``mc_sd`` as in
        the module docstring."""
        n = len(self.log_px)
        sd = {k: self.mc_sd.get(k) for k in self.iwae}
        return {
            "elbo": self.elbo.mean().item(),
            "elbo_stderr": stderr_across_points(self.elbo),
            "elbo_mc_stderr": self._mc_stderr(1),
            "iwae": {k: v.mean().item() for k, v in self.iwae.items()},
            "iwae_stderr": {k: stderr_across_points(v) for k, v in self.iwae.items()},
            "iwae_mc_stderr": {k: self._mc_stderr(k) for k in self.iwae},
            "iwae_mc_sd": {k: float("nan") if v is None else v.pow(2).mean().sqrt().item()
                           for k, v in sd.items()},
            "log_likelihood": self.log_px.mean().item(),
            "log_likelihood_stderr": stderr_across_points(self.log_px),
            "log_likelihood_mc_stderr": (self.log_px_mc_stderr.pow(2).sum().sqrt() / n).item(),
            "num_samples": self.num_samples,
            "num_points": n,
        }


class WeightStats:
    """Streaming per-point statistics of log weights fed chunk by chunk (in any order): sum of
    e^w and e^{2w} (as log-sum-exps) and, for K = 1 and every K of ``ks``, the running mean
    and sum of squared deviations of the K-sample estimates over groups (Chan et al.'s
    pairwise update, stable where a naive sum of squares would cancel)."""

    def __init__(self, num_points: int, ks: tuple[int, ...] = (), device=None):
        def zeros() -> torch.Tensor:
            return torch.zeros(num_points, dtype=torch.float64, device=device)

        self.ks = tuple(ks)
        self.lse = torch.full_like(zeros(), -math.inf)
        self.lse2 = torch.full_like(zeros(), -math.inf)
        self.groups = {k: (zeros(), zeros(), zeros()) for k in sorted({1, *ks})}

    def add(self, chunk: WeightChunk) -> None:
        w = chunk.log_w.double()
        k_now, n = w.shape
        at = slice(chunk.start, chunk.stop)
        self.lse[at] = torch.logaddexp(self.lse[at], torch.logsumexp(w, 0))
        self.lse2[at] = torch.logaddexp(self.lse2[at], torch.logsumexp(2 * w, 0))
        for k, (count, mean, m2) in self.groups.items():
            if k_now % k:
                raise ValueError(f"a chunk of {k_now} particles splits groups of {k}")
            est = w if k == 1 else torch.logsumexp(w.reshape(k_now // k, k, n), 1) - math.log(k)
            g = est.shape[0]
            c_mean = est.mean(0)
            c_m2 = (est - c_mean).pow(2).sum(0)
            before = count[at].clone()
            after = before + g
            delta = c_mean - mean[at]
            mean[at] += delta * (g / after)
            m2[at] += c_m2 + delta.pow(2) * (before * g / after)
            count[at] = after

    def bounds(self) -> Bounds:
        count, mean, m2 = self.groups[1]
        s = int(count[0].item()) if len(count) else 0
        if s == 0 or not torch.all(count == s):
            raise ValueError("every point needs the same positive number of samples")
        log_px = self.lse - math.log(s)
        # relative variance of the weights: S sum e^{2w} / (sum e^w)^2 - 1
        rel_var = torch.expm1(self.lse2 - 2 * self.lse + math.log(s)).clamp_min(0)
        sd = {k: (m2 / (c - 1)).sqrt() for k, (c, _, m2) in self.groups.items()}
        return Bounds(s, mean.clone(), {k: self.groups[k][1].clone() for k in self.ks}, log_px,
                      (rel_var / s).sqrt(), sd)


def check_num_samples(num_samples: int, ks: tuple[int, ...] = (5, 50)) -> None:
    """Raise :class:`ConfigError` unless ``num_samples`` splits into groups of every k."""
    check_positive("num_samples", num_samples)
    if ks and num_samples % math.lcm(*ks):
        raise ConfigError(f"the number of importance samples ({num_samples}) must be a multiple "
                          f"of every IWAE k ({', '.join(map(str, ks))})")


def sampled_bounds(weights: WeightFn, model: LatentModel, x: torch.Tensor,
                   y: torch.Tensor | None, num_samples: int, ks: tuple[int, ...] = (5, 50),
                   max_elements: int = 2**25, progress: bool = False) -> Bounds:
    """:class:`Bounds` (double precision) from ``num_samples`` weights a point drawn by
    ``weights`` (:func:`log_weights`, :func:`prior_log_weights`), streamed. Under
    data-parallel training (a world of more than one) every rank must call it with the same
    points: each estimates its shard and all get every point's estimates."""
    check_num_samples(num_samples, ks)
    if distributed.world() > 1:  # data-parallel: each rank its shard of the points
        return _sharded_bounds(weights, model, x, y, num_samples, ks, max_elements, progress)
    return _streamed_bounds(weights, model, x, y, num_samples, ks, max_elements, progress)


def _streamed_bounds(weights: WeightFn, model: LatentModel, x: torch.Tensor,
                     y: torch.Tensor | None, num_samples: int, ks: tuple[int, ...],
                     max_elements: int, progress: bool) -> Bounds:
    stats = WeightStats(x.shape[0], ks, x.device)
    for chunk in weight_chunks(weights, model, x, y, num_samples, math.lcm(*ks) if ks else 1,
                               max_elements, progress):
        stats.add(chunk)
    return stats.bounds()


def _sharded_bounds(weights: WeightFn, model: LatentModel, x: torch.Tensor,
                    y: torch.Tensor | None, num_samples: int, ks: tuple[int, ...],
                    max_elements: int, progress: bool) -> Bounds:
    """:func:`sampled_bounds` under data-parallel training: rank r estimates the points of
    ``x.tensor_split(world)[r]`` with its own random numbers, and every rank gets every
    point's estimates (gathered in rank order, so in the order of ``x``)."""
    mine = None
    xs = distributed.shard(x)
    if xs.shape[0]:
        mine = _streamed_bounds(weights, model, xs, distributed.shard(y), num_samples, ks,
                                max_elements, progress)
        mine = Bounds(mine.num_samples, *(_cpu(v) for v in (mine.elbo, mine.iwae, mine.log_px,
                                                            mine.log_px_mc_stderr,
                                                            mine.mc_sd)))
    parts = [b for b in distributed.all_gather_objects(mine) if b is not None]

    def cat(get) -> torch.Tensor:
        return torch.cat([get(b) for b in parts]).to(x.device)

    return Bounds(parts[0].num_samples, cat(lambda b: b.elbo),
                  {k: cat(lambda b, k=k: b.iwae[k]) for k in parts[0].iwae},
                  cat(lambda b: b.log_px), cat(lambda b: b.log_px_mc_stderr),
                  {k: cat(lambda b, k=k: b.mc_sd[k]) for k in parts[0].mc_sd})


def _cpu(value):
    if isinstance(value, dict):
        return {k: v.cpu() for k, v in value.items()}
    return value.cpu()


def check_points(model: LatentModel, x, y=None, what: str = "x") -> None:
    """Raise :class:`~pyro_vae.errors.DataError` unless ``x`` (and ``y``) are data points the
    model can score: a floating tensor of points shaped as the model's data, finite, inside
    the likelihood's support (``model.check_data``: 0/1 for a Bernoulli likelihood)."""
    require_latent_model(model, "evaluation")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() < 1:
        shown = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise DataError(f"{what} must be a floating-point tensor of data points, got {shown}")
    if x.shape[0] == 0:
        raise DataError(f"{what} holds no data points")
    with model_code_errors(model, "checking the data"):
        model.check_data(x, what)
    if y is not None and (not isinstance(y, torch.Tensor) or y.shape[:1] != x.shape[:1]):
        shown = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise DataError(f"y must be a tensor with one entry per point of {what} "
                        f"({x.shape[0]}), got {shown}")
    check_labels = getattr(model, "check_labels", None)  # e.g. cvae's class range
    if check_labels is not None and y is not None:
        with model_code_errors(model, "checking the labels"):
            check_labels(y, x.shape[0], "y")


def importance_bounds(model: LatentModel, x: torch.Tensor, y: torch.Tensor | None = None,
                      num_samples: int = 5000, ks: tuple[int, ...] = (5, 50),
                      max_elements: int = 2**25, progress: bool = False) -> Bounds:
    """ELBO, L_k for each k in ``ks`` and log p(x), per data point, from ``num_samples``
    importance samples of the guide (tensors in ``x``'s floating dtype)."""
    check_points(model, x, y)
    bounds = sampled_bounds(log_weights, model, x, y, num_samples, ks, max_elements, progress)
    return bounds.to(x.dtype if x.is_floating_point() else torch.get_default_dtype())
