r"""The likelihood registry: p(x | decoder output) of the image models, one entry a family.

A model with a ``likelihood`` setting (vae, hvae, cvae) asks its entry of :data:`LIKELIHOODS`
how many decoder outputs a data value needs (``outputs``), which free parameters to hold,
the distribution of the observed site, its mean (pictures), whether it is a probability
mass over pixel values (``discrete``: bits per dimension apply) and which data it can score
(``check``, a one-line :class:`~pyro_vae.errors.DataError`). No model branches on the name.

=============  ==========================================================================
``bernoulli``  ``Bernoulli(logits=out)``: binary pixels (0/1); discrete.
``gaussian``   ``Normal(out, softplus(r) + 1e-3)`` with a free scale parameter ``r`` per
               value (``raw_obs_scale``, starting at 0.1): any real data; a density.
``logistic``   :class:`~pyro_vae.distributions.DiscretizedLogistic` of 8-bit pixels
               (values k/255): the decoder gives two maps per channel, the location
               ``0.5 + out_loc`` and the log-scale ``-7 + softplus(out_scale + 5)`` (a
               soft floor at -7 as PixelCNN++, about -2 at ``out_scale = 0``); discrete.
``dequantized`` :class:`~pyro_vae.distributions.DequantizedNormal`: the ``gaussian`` entry's
               ``Normal(out, softplus(r) + 1e-3)`` scored at ``x + (u - 1/2)/255`` minus
               ``log 255``, u uniform: a bound on the discrete log-likelihood of 8-bit
               pixels (the Gaussian of the uniform-dequantization papers); discrete.
=============  ==========================================================================

A decoder of a likelihood with ``outputs = 2`` produces ``(2 C, H, W)`` for data ``(C, H, W)``
(``(2 D,)`` for vectors); :meth:`Likelihood.split` views it as ``(2, C, H, W)``.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

from pyro_vae.distributions import DequantizedNormal, DiscretizedLogistic, on_grid
from pyro_vae.errors import DataError
from pyro_vae.nn import set_output_bias_


class Likelihood:
    """One family of p(x | decoder output); subclasses override what differs."""

    name: str = ""
    doc: str = ""
    outputs: int = 1  # decoder outputs per data value
    discrete: bool = False  # a probability mass over the values: bits per dimension apply

    def output_shape(self, data_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The decoder's output shape for data of ``data_shape``."""
        return (self.outputs * data_shape[0], *data_shape[1:])

    def split(self, out: torch.Tensor, data_shape: tuple[int, ...]) -> torch.Tensor:
        """``(..., outputs * C, ...)`` -> ``(..., outputs, C, ...)``."""
        return out.unflatten(out.dim() - len(data_shape), (self.outputs, data_shape[0]))

    def parameters(self, data_shape: tuple[int, ...]) -> dict[str, nn.Parameter]:
        """Free parameters the model holds as attributes (by these names)."""
        return {}

    def dist(self, out: torch.Tensor, model: nn.Module) -> dist.TorchDistribution:
        """The elementwise distribution of the data (batch shape ``(..., *data_shape)``)."""
        raise NotImplementedError

    def mean(self, out: torch.Tensor, model: nn.Module) -> torch.Tensor:
        return self.dist(out, model).mean

    def check(self, x: torch.Tensor, what: str) -> None:
        """Raise a one-line :class:`DataError` when ``x`` is outside what it scores."""

    def init_output(self, decoder: nn.Module, x: torch.Tensor) -> bool:
        """Start the decoder at the data (``init="iwae"``); False when it has no such start."""
        return False


def check_grid(x: torch.Tensor, what: str, scorer: str, levels: int = 256) -> None:
    """One-line :class:`DataError` unless ``x`` holds 8-bit values k/255."""
    if not on_grid(x, levels).all():
        raise DataError(f"{what} is not on the 8-bit grid k/255 of [0, 1] that {scorer} "
                        "scores: use pixel values k/255, or --likelihood gaussian")


class Bernoulli(Likelihood):
    name, doc, discrete = "bernoulli", "binary pixels (0/1)", True

    def dist(self, out, model):
        return dist.Bernoulli(logits=out, validate_args=False)

    def mean(self, out, model):
        return torch.sigmoid(out)

    def check(self, x, what):
        if not ((x == 0) | (x == 1)).all():
            raise DataError(f"{what} is not binary but the Bernoulli likelihood needs 0/1 values:"
                            " binarize it (--binarize dynamic|fixed) or use --likelihood gaussian")

    def init_output(self, decoder, x):
        set_output_bias_(decoder, x.float().mean(0))
        return True


class Gaussian(Likelihood):
    name, doc = "gaussian", "real values, a learned scale per value"

    def parameters(self, data_shape):
        # softplus(raw) + 1e-3, starting at 0.1
        return {"raw_obs_scale": nn.Parameter(torch.full(data_shape, -2.25))}

    def dist(self, out, model):
        return dist.Normal(out, F.softplus(model.raw_obs_scale) + 1e-3)

    def mean(self, out, model):
        return out


class Dequantized(Gaussian):
    name, doc, discrete = "dequantized", "8-bit pixels k/255 (dequantized Gaussian)", True
    levels = 256

    def dist(self, out, model):
        scale = F.softplus(model.raw_obs_scale) + 1e-3
        return DequantizedNormal(out, scale, self.levels, validate_args=False)

    def mean(self, out, model):
        return out.clamp(0, 1)

    def check(self, x, what):
        check_grid(x, what, "the dequantized Gaussian likelihood", self.levels)


LOG_SCALE_FLOOR = -7.0
LOG_SCALE_SHIFT = 5.0  # log-scale -7 + softplus(5) ~ -2 (scale 0.14) at a zero output


class Logistic(Likelihood):
    name, doc, outputs, discrete = "logistic", "8-bit pixels k/255 (discretized logistic)", 2, True
    levels = 256

    def loc_log_scale(self, out: torch.Tensor, data_shape) -> tuple[torch.Tensor, torch.Tensor]:
        parts = self.split(out, data_shape)
        axis = out.dim() - len(data_shape)
        loc = 0.5 + parts.select(axis, 0)
        log_scale = LOG_SCALE_FLOOR + F.softplus(parts.select(axis, 1) + LOG_SCALE_SHIFT)
        return loc, log_scale

    def dist(self, out, model):
        loc, log_scale = self.loc_log_scale(out, model.data_shape)
        return DiscretizedLogistic(loc, log_scale, self.levels, validate_args=False)

    def check(self, x, what):
        check_grid(x, what, "the discretized logistic likelihood", self.levels)


LIKELIHOODS: dict[str, Likelihood] = {lik.name: lik for lik in (
    Bernoulli(), Gaussian(), Logistic(), Dequantized())}


def decoder_outputs(likelihood: str, data_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The decoder output shape of ``likelihood`` for data of ``data_shape``."""
    return LIKELIHOODS[likelihood].output_shape(tuple(data_shape))


class PixelLikelihood:
    """Mixin of a model whose config has a ``likelihood`` field naming an entry of
    :data:`LIKELIHOODS`: the entry, and the ``discrete_likelihood`` capability it implies."""

    @property
    def likelihood(self) -> Likelihood:
        """The entry of :data:`LIKELIHOODS` of this model."""
        return LIKELIHOODS[self.config.likelihood]

    @property
    def discrete_likelihood(self) -> bool:
        return self.likelihood.discrete
