r"""Distributions the models need and Pyro lacks, for 8-bit pixels: the discretized logistic and
a Gaussian with uniform dequantization.

:class:`DiscretizedLogistic` (Salimans et al. 2017, PixelCNN++, eq. 2, without the mixture)
puts a continuous logistic ``Y ~ Logistic(loc, s)`` on the pixel grid ``{0, 1/255, ..., 1}``:
each level ``k/255`` takes the mass of its bin of width ``1/255``, and the two edge bins take
the tails, so the 256 probabilities sum to one::

    P(X = 0)     = sigma((0.5/255 - loc) / s)
    P(X = k/255) = sigma((k/255 + 0.5/255 - loc) / s) - sigma((k/255 - 0.5/255 - loc) / s)
    P(X = 1)     = 1 - sigma((1 - 0.5/255 - loc) / s)

i.e. ``X = round(255 * clip(Y, 0, 1)) / 255``, which is how :meth:`sample` draws it.

Numerics: everything is in log space. With ``a = (x + h - loc)/s`` and ``b = (x - h - loc)/s``
(``h = 0.5/255``), ``sigma(a) - sigma(b) = sigma(a) sigma(-b) (1 - e^{-(a-b)})``, so

    log P = logsigmoid(a) + logsigmoid(-b) + log(-expm1(-(a - b))),

finite and accurate for every ``loc`` and ``s`` (a very wide logistic: ``a - b`` tiny, expm1
keeps it; a very narrow one: the logsigmoids keep the far tails), with no branch on the size
of the bin's mass as PixelCNN++'s code needs. The edges are ``logsigmoid(a)`` and
``logsigmoid(-b)``.

:class:`DequantizedNormal` (uniform dequantization; Theis et al. 2016, Ho et al. 2019 section 3)
scores a level ``x`` by a Gaussian density at ``x + (u - 1/2) / 255``, ``u ~ U(0, 1)`` drawn
afresh at every call, minus ``log 255``. With ``P(x) = int_bin N(y) dy`` the mass of x's bin,
``E_u[N(x + (u - 1/2)/255)] / 255 = P(x)``, so ``log_prob`` is a one-draw estimate whose mean
is a lower bound on ``log P(x)`` (Jensen), and ``exp(log_prob)`` is unbiased for ``P(x)``: an
ELBO with it bounds the discrete log-likelihood, and importance sampling with one draw of u per
particle estimates the discrete ``P(x)`` itself. (The bins' masses sum to slightly less than
one: the density outside [-1/510, 1 + 1/510] is not given to any level.)
"""

from __future__ import annotations

import math

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints
from torch.distributions.utils import broadcast_all
from torch.nn import functional as F

__all__ = ["DequantizedNormal", "DiscretizedLogistic", "UnitGrid", "on_grid"]


def on_grid(x: torch.Tensor, levels: int = 256, tol: float = 1e-3) -> torch.Tensor:
    """Elementwise: ``x`` is one of ``0, 1/(levels-1), ..., 1`` (to ``tol`` of a step)."""
    k = x * (levels - 1)
    return (x >= 0) & (x <= 1) & ((k - torch.round(k)).abs() <= tol)


class UnitGrid(constraints.Constraint):
    """The ``levels`` equally spaced values ``k / (levels - 1)`` of [0, 1]."""

    is_discrete = True
    event_dim = 0

    def __init__(self, levels: int = 256):
        self.levels = levels
        super().__init__()

    def check(self, value: torch.Tensor) -> torch.Tensor:
        return on_grid(value, self.levels)

    def __repr__(self) -> str:
        return f"UnitGrid(levels={self.levels})"


class _OnGrid(TorchDistribution):
    """A distribution of two elementwise parameters (``_params``) on the ``levels`` values
    ``k / (levels - 1)`` of [0, 1]: the construction, support, ``expand`` and rounding to the
    grid its subclasses share."""

    _params: tuple[str, str]

    def __init__(self, first: torch.Tensor, second: torch.Tensor, levels: int = 256,
                 validate_args: bool | None = None):
        for name, value in zip(self._params, broadcast_all(first, second), strict=True):
            setattr(self, name, value)
        self.levels = int(levels)
        super().__init__(self.loc.shape, validate_args=validate_args)

    @property
    def support(self) -> constraints.Constraint:
        return UnitGrid(self.levels)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(type(self), _instance)
        batch_shape = torch.Size(batch_shape)
        for name in self._params:
            setattr(new, name, getattr(self, name).expand(batch_shape))
        new.levels = self.levels
        super(_OnGrid, new).__init__(batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def _to_grid(self, y: torch.Tensor) -> torch.Tensor:
        """``y`` clipped to [0, 1] and rounded to the nearest level."""
        top = self.levels - 1
        return torch.round(y.clamp(0, 1) * top) / top


class DiscretizedLogistic(_OnGrid):
    """A logistic of location ``loc`` and scale ``exp(log_scale)`` (both on the [0, 1] pixel
    scale) discretized to ``levels`` values ``k / (levels - 1)``; the edge levels take the
    tails. Elementwise (batch shape = the broadcast shape of the arguments); wrap with
    ``.to_event(3)`` for an image."""

    arg_constraints = {"loc": constraints.real, "log_scale": constraints.real}
    has_enumerate_support = True
    _params = ("loc", "log_scale")

    def __init__(self, loc: torch.Tensor, log_scale: torch.Tensor, levels: int = 256,
                 validate_args: bool | None = None):
        super().__init__(loc, log_scale, levels, validate_args)

    @property
    def half_bin(self) -> float:
        return 0.5 / (self.levels - 1)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        top = self.levels - 1
        k = torch.round(value * top).clamp(0, top)  # the level of each value
        centre = k / top - self.loc
        inv_s = torch.exp(-self.log_scale)
        a = (centre + self.half_bin) * inv_s  # upper bin edge, standardized
        b = (centre - self.half_bin) * inv_s  # lower bin edge
        log_cdf_a = F.logsigmoid(a)  # log P(Y < upper edge): the mass of level 0
        log_sf_b = F.logsigmoid(-b)  # log P(Y > lower edge): the mass of the top level
        width = (2 * self.half_bin) * inv_s  # a - b > 0
        interior = log_cdf_a + log_sf_b + torch.log(-torch.expm1(-width))
        return torch.where(k == 0, log_cdf_a, torch.where(k == top, log_sf_b, interior))

    def sample(self, sample_shape: torch.Size | tuple = ()) -> torch.Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        with torch.no_grad():
            tiny = torch.finfo(self.loc.dtype).tiny
            u = torch.rand(shape, dtype=self.loc.dtype, device=self.loc.device)
            u = u.clamp(tiny, 1 - 1e-7)
            y = self.loc + torch.exp(self.log_scale) * (torch.log(u) - torch.log1p(-u))
            return self._to_grid(y)

    @property
    def mean(self) -> torch.Tensor:
        """Exactly ``sum_k P(X = k/top) k/top = (1/top) sum_{k=1}^{top} P(X >= k/top)``, one
        level at a time (memory of one sample)."""
        top = self.levels - 1
        inv_s = torch.exp(-self.log_scale)
        total = torch.zeros_like(self.loc)
        for k in range(1, top + 1):
            total = total + torch.sigmoid((self.loc - (k - 0.5) / top) * inv_s)
        return total / top

    def enumerate_support(self, expand: bool = True) -> torch.Tensor:
        top = self.levels - 1
        values = torch.arange(self.levels, dtype=self.loc.dtype, device=self.loc.device) / top
        values = values.reshape((-1,) + (1,) * len(self.batch_shape))
        return values.expand((-1,) + self.batch_shape) if expand else values


class DequantizedNormal(_OnGrid):
    """``Normal(loc, scale)`` on 8-bit values, scored by uniform dequantization (a random
    ``log_prob``, see the module docstring); samples are the Gaussian rounded to the grid."""

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    _params = ("loc", "scale")

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, levels: int = 256,
                 validate_args: bool | None = None):
        super().__init__(loc, scale, levels, validate_args)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        top = self.levels - 1
        shape = torch.broadcast_shapes(value.shape, self.batch_shape)
        u = torch.rand(shape, dtype=self.loc.dtype, device=self.loc.device)
        y = value + (u - 0.5) / top
        return torch.distributions.Normal(self.loc, self.scale).log_prob(y) - math.log(top)

    def sample(self, sample_shape: torch.Size | tuple = ()) -> torch.Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        with torch.no_grad():
            y = self.loc + self.scale * torch.randn(shape, dtype=self.loc.dtype,
                                                    device=self.loc.device)
            return self._to_grid(y)

    @property
    def mean(self) -> torch.Tensor:
        """The Gaussian's mean clipped to [0, 1] (what the pictures show)."""
        return self.loc.clamp(0, 1)
