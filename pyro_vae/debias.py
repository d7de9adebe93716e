r"""Debiasing by latent density (Amini et al. 2019, "Uncovering and mitigating algorithmic bias
through learned latent structure", DB-VAE): resample the training data so that points from
rare regions of a trained model's latent space are drawn more often.

With :math:`\mu(x_n) \in \mathbb{R}^D` the guide's mean of a training point, the DB-VAE weight
uses one histogram per latent dimension, :math:`\hat Q_d` (``bins`` equal bins over the
training codes, normalized to probabilities that sum to 1 over the bins), as a factorized
estimate of the latent density:

.. math::  w(x_n) \propto \prod_{d=1}^{D} \frac{1}{\hat Q_d(\mu_d(x_n)) + \alpha}

(``combine="product"``; the MIT 6.S191 implementation of DB-VAE takes the maximum over ``d``
of each dimension's normalized weight instead: ``combine="max"``). :math:`\alpha` bounds the
weight of an empty bin and so how far the resampling may go: large :math:`\alpha` is nearly
uniform. ``method="aggregate"`` uses the aggregate posterior instead of the histograms:
:math:`w(x_n) \propto 1 / (q(\mu(x_n)) + \alpha)`, :math:`q(z) = \frac1N \sum_m q(z | x_m)`
(the guide's diagonal Gaussians; its log evaluated in log space).

:class:`LatentDensitySampler` draws an epoch's order of training indices with replacement
in proportion to the weights (like ``torch.utils.data.WeightedRandomSampler``);
:func:`resampled` returns a :class:`~pyro_vae.data.Dataset` whose :meth:`permutation` is that
sampler's, so :meth:`Dataset.batches` and the training loop (:func:`pyro_vae.train.train`)
draw reweighted minibatches with no other change.

Adaptive resampling (the DB-VAE's training, ``TrainConfig.resample``, ``pyro-vae train dbvae
--resample histogram``): :func:`adaptive` wraps the training data in an
:class:`AdaptiveResampledDataset` whose :meth:`~AdaptiveResampledDataset.permutation` -- called
once at the start of every epoch by :meth:`Dataset.batches` -- recomputes the weights from the
latent means of the training points under the model as it is *now* and draws the epoch's
indices by them from torch's global CPU generator (the run's seeded generator, saved in every
checkpoint), so a resumed run draws the same epochs. :class:`ResamplingRecord` adds to each
epoch's record the weights' effective sample size and the share of the rarest class among the
drawn indices (when the data have labels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import torch

from pyro_vae.data import Dataset
from pyro_vae.errors import ConfigError, DataError, check_choice, check_positive
from pyro_vae.evaluate import latent_means
from pyro_vae.hooks import Hook
from pyro_vae.models.base import LatentModel

METHODS = ("histogram", "aggregate")
RESAMPLE = ("none", *METHODS)  # TrainConfig.resample
COMBINE = ("product", "max")


def histogram_weights(codes: torch.Tensor, bins: int = 10, alpha: float = 0.01,
                      combine: str = "product") -> torch.Tensor:
    """DB-VAE's resampling weights (summing to 1) of points with latent ``codes`` ``(N, D)``."""
    check_positive("bins", bins)
    check_choice("combine", combine, COMBINE)
    if alpha <= 0:
        raise ConfigError(f"alpha must be positive, got {alpha}")
    codes = _codes(codes)
    log_w = []
    for z in codes.double().T:
        lo, hi = z.min().item(), z.max().item()
        if hi <= lo:  # a constant dimension: one bin holds every point
            idx = torch.zeros_like(z, dtype=torch.long)
        else:
            idx = ((z - lo) / (hi - lo) * bins).long().clamp(0, bins - 1)
        q = torch.bincount(idx, minlength=bins).double() / len(z)
        log_w.append(-torch.log(q[idx] + alpha))
    log_w = torch.stack(log_w)  # (D, N)
    if combine == "product":
        return _normalized(log_w.sum(0))
    per_dim = torch.softmax(log_w, dim=1)  # each dimension's weights, normalized
    return _normalized(per_dim.max(0).values.log())


def aggregate_weights(loc: torch.Tensor, scale: torch.Tensor, alpha: float = 0.01,
                      batch_size: int = 500) -> torch.Tensor:
    """Weights ``1 / (q(mu_n) + alpha)`` (summing to 1), ``q`` the aggregate posterior of the
    diagonal Gaussians ``N(loc_m, scale_m^2)``, evaluated at each point's mean."""
    if alpha <= 0:
        raise ConfigError(f"alpha must be positive, got {alpha}")
    loc, scale = _codes(loc).double(), _codes(scale).double()
    if loc.shape != scale.shape:
        raise DataError(f"loc {tuple(loc.shape)} and scale {tuple(scale.shape)} differ")
    n = len(loc)
    log_q = []
    for i in range(0, n, batch_size):
        z = loc[i:i + batch_size, None]  # (b, 1, D) against every component (1, N, D)
        lp = torch.distributions.Normal(loc[None], scale[None]).log_prob(z).sum(-1)
        log_q.append(torch.logsumexp(lp, 1) - math.log(n))
    log_q = torch.cat(log_q)
    return _normalized(-torch.logaddexp(log_q, torch.full_like(log_q, math.log(alpha))))


def latent_density_weights(model: LatentModel, x: torch.Tensor, y: torch.Tensor | None = None,
                           *, method: str = "histogram", bins: int = 10, alpha: float = 0.01,
                           combine: str = "product") -> torch.Tensor:
    """Resampling weights of the points ``x`` (a trained model's training data) from the
    density of their guide means (CPU, double, summing to 1)."""
    check_choice("method", method, METHODS)
    if method == "histogram":
        return histogram_weights(latent_means(model, x, y).cpu(), bins, alpha, combine)
    model.eval()
    with torch.no_grad():
        locs, scales = zip(*(model.encode(x[i:i + 1000], None if y is None else y[i:i + 1000])
                             for i in range(0, len(x), 1000)), strict=True)
    return aggregate_weights(torch.cat(locs).flatten(1).cpu(), torch.cat(scales).flatten(1).cpu(),
                             alpha)


def effective_sample_size(weights: torch.Tensor) -> float:
    """Kish's effective sample size :math:`(\\sum w)^2 / \\sum w^2` of resampling weights."""
    w = weights.double()
    return (w.sum() ** 2 / w.pow(2).sum()).item()


class LatentDensitySampler:
    """Indices ``0..N-1`` drawn with replacement in proportion to ``weights``, ``num_samples``
    an epoch (default N), from ``generator`` or torch's global CPU generator (so a seeded run
    draws the same epochs, as :meth:`Dataset.permutation` does)."""

    def __init__(self, weights: torch.Tensor, num_samples: int | None = None,
                 generator: torch.Generator | None = None):
        weights = torch.as_tensor(weights, dtype=torch.double).cpu()
        if weights.dim() != 1 or not len(weights) or not torch.isfinite(weights).all() \
                or (weights < 0).any() or weights.sum() <= 0:
            raise DataError("resampling weights must be a non-empty vector of finite, "
                            "non-negative numbers with a positive sum")
        self.weights = weights
        self.num_samples = len(weights) if num_samples is None else num_samples
        check_positive("num_samples", self.num_samples)
        self.generator = generator

    def permutation(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """One epoch's order: ``num_samples`` indices drawn by weight."""
        gen = generator if generator is not None else self.generator
        return torch.multinomial(self.weights, self.num_samples, replacement=True, generator=gen)

    def __iter__(self):
        return iter(self.permutation().tolist())

    def __len__(self) -> int:
        return self.num_samples


@dataclass
class ResampledDataset(Dataset):
    """A :class:`Dataset` whose epochs are drawn by a :class:`LatentDensitySampler`."""

    sampler: LatentDensitySampler | None = None

    def permutation(self) -> torch.Tensor:
        return self.sampler.permutation()


def _dataset_fields(data: Dataset) -> dict:
    """The fields of ``data`` as a plain :class:`Dataset` has them (a resampled copy keeps
    them all)."""
    return {f.name: getattr(data, f.name) for f in fields(Dataset)}


def resampled(data: Dataset, weights: torch.Tensor) -> ResampledDataset:
    """``data`` with minibatches drawn by ``weights`` (one per training point)."""
    if len(weights) != data.num_train:
        raise DataError(f"{len(weights)} weights for {data.num_train} training points")
    return ResampledDataset(**_dataset_fields(data),
                            sampler=LatentDensitySampler(weights, data.num_train))


@dataclass
class AdaptiveResampledDataset(Dataset):
    """A :class:`Dataset` whose every epoch is drawn by weights recomputed from ``model``'s
    latent means of the training points at the start of that epoch (DB-VAE's training)."""

    model: LatentModel | None = field(default=None, repr=False, compare=False)
    method: str = "histogram"
    bins: int = 10
    alpha: float = 0.01
    combine: str = "product"
    weights: torch.Tensor | None = field(default=None, repr=False, compare=False)
    drawn: torch.Tensor | None = field(default=None, repr=False, compare=False)

    def current_weights(self) -> torch.Tensor:
        """The weights of the training points under the model as it is now (CPU, double)."""
        model = self.model
        was_training = model.training
        y = self.train_y if model.is_conditional else None
        try:
            return latent_density_weights(model, self.train_eval_x(), y, method=self.method,
                                          bins=self.bins, alpha=self.alpha,
                                          combine=self.combine)
        finally:
            model.train(was_training)

    def permutation(self) -> torch.Tensor:
        """This epoch's indices: ``num_train`` draws with replacement by the current weights,
        from torch's global CPU generator (as :meth:`Dataset.permutation`)."""
        self.weights = self.current_weights()
        self.drawn = LatentDensitySampler(self.weights, self.num_train).permutation()
        return self.drawn


def adaptive(data: Dataset, model: LatentModel, method: str = "histogram", bins: int = 10,
             alpha: float = 0.01, combine: str = "product") -> AdaptiveResampledDataset:
    """``data`` with each epoch drawn by the latent-density weights of ``model`` at that
    epoch's start (see the module docstring)."""
    check_choice("method", method, METHODS)
    check_choice("combine", combine, COMBINE)
    check_positive("bins", bins)
    if alpha <= 0:
        raise ConfigError(f"alpha must be positive, got {alpha}")
    return AdaptiveResampledDataset(**_dataset_fields(data), model=model, method=method,
                                    bins=bins, alpha=alpha, combine=combine)


def training_data(data: Dataset, model: LatentModel, config) -> tuple[Dataset, list[Hook]]:
    """What :func:`pyro_vae.train.train` trains on under ``config`` (a ``TrainConfig``):
    ``data`` itself, or with ``config.resample`` set its adaptive resampling and the hook
    that records it."""
    if config.resample == "none":
        return data, []
    return (adaptive(data, model, config.resample, config.resample_bins, config.resample_alpha),
            [ResamplingRecord()])


class ResamplingRecord(Hook):
    """Adds to each epoch's record ``resample_ess`` (Kish's effective sample size of the
    epoch's weights) and, for labelled data, ``resample_rarest_class`` (the class with the
    fewest training points), its ``resample_rarest_weight`` (total weight: the expected share)
    and ``resample_rarest_share`` (its share of the epoch's drawn indices)."""

    def __init__(self) -> None:
        self.rarest: torch.Tensor | None = None
        self.label: int | None = None

    def on_epoch_end(self, state, record: dict) -> None:
        data = state.data
        if getattr(data, "weights", None) is None:
            return
        record["resample_ess"] = effective_sample_size(data.weights)
        if data.train_y is None:
            return
        if self.rarest is None:
            y = data.train_y.cpu().long()
            counts = torch.bincount(y[y >= 0])
            counts[counts == 0] = len(y) + 1  # classes without points are not the rarest
            self.label = int(counts.argmin())
            self.rarest = y == self.label
        record["resample_rarest_class"] = self.label
        record["resample_rarest_weight"] = data.weights[self.rarest].sum().item()
        record["resample_rarest_share"] = self.rarest[data.drawn].double().mean().item()


def _codes(codes: torch.Tensor) -> torch.Tensor:
    if not isinstance(codes, torch.Tensor) or codes.dim() != 2 or not len(codes):
        shown = tuple(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__
        raise DataError(f"latent codes must be a (points, dims) tensor, got {shown}")
    if not torch.isfinite(codes).all():
        raise DataError("latent codes hold NaN or infinite values")
    return codes


def _normalized(log_w: torch.Tensor) -> torch.Tensor:
    return torch.softmax(log_w, 0)


__all__ = ["COMBINE", "METHODS", "RESAMPLE", "AdaptiveResampledDataset", "LatentDensitySampler",
           "ResamplingRecord", "adaptive", "training_data", "ResampledDataset", "aggregate_weights",
           "effective_sample_size", "histogram_weights", "latent_density_weights", "resampled"]
