r"""A learned prior over a grid of discrete codes: a small PixelCNN (van den Oord et al. 2016),
as the VQ-VAE paper fits one over its codes after training the autoencoder.

The codes :math:`k = (k_1, \dots, k_L)`, :math:`k_i \in \{0, \dots, K-1\}`, of an
:math:`H \times W` grid (:math:`L = HW`, raster order) have the autoregressive density

.. math::

    p_\psi(k) = \prod_{i=1}^{L} \operatorname{Categorical}\big(k_i \mid
    \operatorname{softmax} f_\psi(k_{<i})_i\big),

where :math:`f_\psi` is a stack of masked convolutions (:class:`pyro_vae.nn.MaskedConv2d`:
mask A on the first layer, B after it), so the logits of position :math:`i` depend on the
codes before it only, and one pass gives every position's logits (teacher forcing). Sampling
is ancestral, position by position.

:meth:`PixelCNNPrior.model` is the prior as a Pyro program of its own: the codes are observed,
there is no latent, so ``Trace_ELBO``'s loss is exactly :math:`-\log p_\psi(k)` and SVI is
maximum likelihood. :class:`AutoregressiveCodes` is its distribution (event shape ``(L,)``),
which the VQ-VAE (:mod:`pyro_vae.models.vqvae`) uses as :math:`p(z)` once fitted.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import nn
from torch.nn import functional as F

from pyro_vae.nn import MaskedConv2d


class PixelCNNPrior(nn.Module):
    """``codes (..., L) -> logits (..., L, K)`` over an ``(H, W)`` grid; see the module doc."""

    def __init__(self, num_codes: int, grid: tuple[int, int], channels: int = 64,
                 layers: int = 4):
        super().__init__()
        self.num_codes = num_codes
        self.grid = tuple(grid)
        self.num_positions = math.prod(self.grid)
        self.embed = nn.Embedding(num_codes, channels)
        first = 7 if min(self.grid) > 1 else 5  # the receptive field of the first layer
        self.first = MaskedConv2d("A", channels, channels, first)
        self.blocks = nn.ModuleList(MaskedConv2d("B", channels, channels, 3)
                                    for _ in range(layers - 1))
        self.out = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 1), nn.ReLU(),
                                 nn.Conv2d(channels, num_codes, 1))

    def logits(self, codes: torch.Tensor) -> torch.Tensor:
        lead = codes.shape[:-1]
        h = self.embed(codes.reshape(-1, *self.grid)).permute(0, 3, 1, 2).contiguous()
        h = F.relu(self.first(h))
        for block in self.blocks:
            h = h + F.relu(block(h))
        out = self.out(h)  # (n, K, H, W)
        return out.permute(0, 2, 3, 1).reshape(*lead, self.num_positions, self.num_codes)

    def log_prob(self, codes: torch.Tensor) -> torch.Tensor:
        """log p(codes), summed over the positions: ``(..., L) -> (...)``."""
        logp = torch.log_softmax(self.logits(codes), -1)
        return logp.gather(-1, codes.unsqueeze(-1)).squeeze(-1).sum(-1)

    @torch.no_grad()
    def sample(self, num: int) -> torch.Tensor:
        """``num`` code grids ``(num, L)``, drawn position by position."""
        device = self.embed.weight.device
        codes = torch.zeros(num, self.num_positions, dtype=torch.long, device=device)
        for i in range(self.num_positions):
            logits = self.logits(codes)[:, i]
            codes[:, i] = torch.distributions.Categorical(logits=logits).sample()
        return codes

    def model(self, codes: torch.Tensor, num_data: int | None = None) -> None:
        """The prior as a Pyro program: every code grid observed, no latent sites."""
        pyro.module("code_prior", self)
        n = codes.shape[0]
        plate = pyro.plate("data", n, device=codes.device) if num_data in (None, n) else \
            pyro.plate("data", num_data, subsample=torch.arange(n, device=codes.device))
        with plate:
            pyro.sample("codes", AutoregressiveCodes(self, codes.shape[:1]), obs=codes)

    def guide(self, codes: torch.Tensor, num_data: int | None = None) -> None:
        """No latent sites: ``Trace_ELBO(model, guide)`` is the negative log-likelihood."""


class AutoregressiveCodes(dist.TorchDistribution):
    """The distribution of a code grid under a :class:`PixelCNNPrior`: event shape ``(L,)``,
    integer values in ``0 .. K-1``."""

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(self, net: PixelCNNPrior, batch_shape=(), validate_args=None):
        self.net = net
        super().__init__(torch.Size(batch_shape), torch.Size([net.num_positions]),
                         validate_args=validate_args)

    @constraints.dependent_property(is_discrete=True, event_dim=1)
    def support(self):
        return constraints.independent(
            constraints.integer_interval(0, self.net.num_codes - 1), 1)

    def expand(self, batch_shape, _instance=None):
        return AutoregressiveCodes(self.net, batch_shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        shape = torch.broadcast_shapes(value.shape[:-1], self.batch_shape)
        value = value.long().expand(*shape, self.net.num_positions)
        return self.net.log_prob(value)

    def sample(self, sample_shape=()) -> torch.Tensor:
        shape = torch.Size(sample_shape) + self.batch_shape
        return self.net.sample(math.prod(shape)).reshape(*shape, self.net.num_positions)
