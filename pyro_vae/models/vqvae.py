r"""The vector-quantized VAE (van den Oord et al. 2017) as a model/guide pair, and its learned
prior over the code grid as a second stage.

An encoder maps an image to :math:`L` vectors :math:`z_e(x) \in \mathbb{R}^{L \times D}`
(``arch="conv"``: a grid, 7x7 for 28x28 images; ``arch="mlp"``: ``num_positions`` of them);
each is replaced by its nearest entry of a codebook :math:`e_1, \dots, e_K \in \mathbb{R}^D`,

.. math::

    k_i(x) = \arg\min_k \lVert z_{e,i}(x) - e_k \rVert, \qquad z_q(x)_i = e_{k_i(x)} .

Model::

    z ~ p(z): the code of each position a codebook entry, k_i ~ Categorical(1/K) (uniform),
              or k ~ PixelCNN prior (prior="pixelcnn", fitted in the second stage)
    x | z ~ p(x | decoder(z))                      (--likelihood: bernoulli, gaussian, ...)

Guide: a point mass on the quantized code, :math:`q(z \mid x) = \delta(z - z_q(x))`, whose value
is :math:`\operatorname{sg}[z_q] + (z_e - \operatorname{sg}[z_e])`: exactly :math:`z_q` forward,
and the decoder's gradient passed straight through to the encoder (``sg``: stop gradient).
In training, the guide adds the codebook and commitment terms as a factor,

.. math::

    \mathcal{L} = \log p(x \mid z_q(x)) + \log p(z_q(x))
      - \lVert \operatorname{sg}[z_e(x)] - z_q(x) \rVert^2
      - \beta \lVert z_e(x) - \operatorname{sg}[z_q(x)] \rVert^2 ,

(``commitment`` = :math:`\beta`); the first moves the codebook only, the second the encoder
only. Evaluation (eval mode) leaves them out, so the ELBO is the bound
:math:`\log p(x) \ge \log p(x \mid z_q(x)) + \log p(z_q(x))`: with the uniform prior
:math:`\log p(x \mid z_q) - L \log K`.

The learned prior: with ``prior_epochs = N`` a finished run is followed by a second run (the
run layer's :func:`pyro_vae.prior_stage.run_with_prior`, into ``RUN/prior``) of the same model
with ``prior="pixelcnn"``, started from the trained weights: the encoder, decoder and codebook
are frozen, and only the PixelCNN (:mod:`pyro_vae.models.code_prior`) is trained, on the codes
of the training images -- the ELBO's gradient for it is that of :math:`\log p_\psi(k(x))`, so
this is maximum likelihood on the codes.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import nn

from pyro_vae.errors import ConfigError, check_choice, check_number, check_positive
from pyro_vae.models.base import LatentModel
from pyro_vae.models.code_prior import AutoregressiveCodes, PixelCNNPrior
from pyro_vae.models.likelihoods import LIKELIHOODS, PixelLikelihood, decoder_outputs
from pyro_vae.nn import (
    ACTIVATIONS,
    MLP,
    ConvGridDecoder,
    ConvGridEncoder,
    Decoder,
)

PRIORS = ("uniform", "pixelcnn")
VQ_ARCHS = ("conv", "mlp")
CODEBOOK_UPDATES = ("loss", "ema")


@dataclass
class VQVAEConfig:
    arch: str = "conv"
    codebook_size: int = 64  # K
    code_dim: int = 16  # D
    num_positions: int = 16  # L of the mlp encoder (conv: the grid decides)
    hidden: tuple[int, ...] = (400,)  # mlp layers (conv: unused)
    activation: str = "relu"
    likelihood: str = "bernoulli"
    commitment: float = 0.25  # beta
    codebook_update: str = "loss"  # the codebook term of the loss, or moving averages
    ema_decay: float = 0.99
    prior: str = "uniform"  # p(z): uniform codes, or the PixelCNN of the second stage
    prior_epochs: int = 0  # > 0: fit the PixelCNN prior for this many epochs afterwards
    prior_channels: int = 64
    prior_layers: int = 4

    def __post_init__(self) -> None:
        self.hidden = tuple(self.hidden)
        check_choice("arch", self.arch, VQ_ARCHS)
        check_choice("activation", self.activation, ACTIVATIONS)
        check_choice("likelihood", self.likelihood, LIKELIHOODS)
        check_choice("prior", self.prior, PRIORS)
        check_choice("codebook update", self.codebook_update, CODEBOOK_UPDATES)
        check_number("ema-decay", self.ema_decay, minimum=0)
        if not self.ema_decay < 1:
            raise ConfigError(f"ema-decay must be in [0, 1), got {self.ema_decay!r}")
        for name in ("codebook_size", "code_dim", "num_positions", "prior_channels",
                     "prior_layers"):
            check_positive(name.replace("_", "-"), getattr(self, name))
        for h in self.hidden:
            check_positive("hidden layer size", h)
        check_number("commitment", self.commitment, minimum=0)
        if isinstance(self.prior_epochs, bool) or not isinstance(self.prior_epochs, int) \
                or self.prior_epochs < 0:
            raise ConfigError(f"prior-epochs must be a whole number >= 0, got "
                              f"{self.prior_epochs!r}")
        if self.prior_epochs and self.prior != "uniform":
            raise ConfigError("--prior-epochs fits the prior after the autoencoder: give it "
                              "with --prior uniform (the first stage)")


class CodebookPrior(dist.TorchDistribution):
    """p(z) over grids of codebook vectors ``(..., L, D)``: a distribution over the code
    indices (event shape ``(L,)``) carried to the codebook's rows. ``log_prob`` finds each
    vector's entry (the nearest one; a guide's value is an entry exactly)."""

    arg_constraints: dict = {}
    support = constraints.independent(constraints.real, 2)  # the rows of the codebook
    has_rsample = False

    def __init__(self, codes: dist.TorchDistribution, codebook: torch.Tensor,
                 validate_args=None):
        self.codes, self.codebook = codes, codebook
        super().__init__(codes.batch_shape, codes.event_shape + codebook.shape[-1:],
                         validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        return CodebookPrior(self.codes.expand(batch_shape), self.codebook)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return self.codes.log_prob(nearest(value, self.codebook))

    def sample(self, sample_shape=()) -> torch.Tensor:
        return self.codebook[self.codes.sample(sample_shape)]


@torch.no_grad()
def nearest(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """The index of the nearest codebook row of each vector: ``(..., D) -> (...)``."""
    dist2 = (z.pow(2).sum(-1, keepdim=True) - 2 * z @ codebook.T
             + codebook.pow(2).sum(-1))
    return dist2.argmin(-1)


class EMACodebook(nn.Module):
    r"""The codebook as moving averages of the codes assigned to each entry (van den Oord et
    al. 2017, appendix; Razavi et al. 2019) instead of the codebook term:
    :math:`N_k \leftarrow \gamma N_k + (1-\gamma) n_k`,
    :math:`m_k \leftarrow \gamma m_k + (1-\gamma) \sum_{i: k_i = k} z_{e,i}`,
    :math:`e_k = m_k / \tilde N_k` (Laplace-smoothed counts); an entry whose count falls
    below ``1`` restarts at a random code of the batch (Dhariwal et al. 2020).

    One update per training step, whatever runs the guide: a step's statistics wait in
    buffers and are applied when the guide first sees the next minibatch (a second pass over
    the same ``x``, e.g. the fast engine's discovery of the parameters, changes nothing), so
    a resumed run follows the uninterrupted one exactly."""

    def __init__(self, codebook: torch.Tensor, decay: float):
        super().__init__()
        k, d = codebook.shape
        self.decay = decay
        for name, value in (("count", torch.ones(k)), ("total", codebook.clone()),
                            ("pending_count", torch.zeros(k)),
                            ("pending_total", torch.zeros(k, d)),
                            ("restart", torch.zeros(k, d)), ("pending", torch.zeros(()))):
            self.register_buffer(name, value)
        self._last: Any = None  # a weak reference to the last minibatch seen

    @torch.no_grad()
    def reset(self, codebook: torch.Tensor) -> None:
        self.count.fill_(1.0)
        self.total.copy_(codebook)
        self.pending.zero_()

    @torch.no_grad()
    def advance(self, x: torch.Tensor, codebook: torch.Tensor) -> None:
        """Apply the previous step's statistics to ``codebook``, once per minibatch ``x``."""
        last = self._last() if self._last is not None else None
        if last is not x:
            self._update(codebook)
            self._last = weakref.ref(x)

    @torch.no_grad()
    def observe(self, z_e: torch.Tensor, idx: torch.Tensor) -> None:
        """Keep this step's statistics: counts and sums of the codes of each entry."""
        flat, k = z_e.reshape(-1, z_e.shape[-1]), idx.reshape(-1)
        self.pending_count.zero_().index_add_(0, k, torch.ones_like(flat[:, 0]))
        self.pending_total.zero_().index_add_(0, k, flat)
        pick = torch.randint(flat.shape[0], (self.count.numel(),), device=flat.device)
        self.restart.copy_(flat[pick])
        self.pending.fill_(1.0)

    def _update(self, codebook: torch.Tensor) -> None:
        w = (1 - self.decay) * self.pending  # 0: nothing waits
        self.count.mul_(1 - w).add_(w * self.pending_count)
        self.total.mul_(1 - w).add_(w * self.pending_total)
        dead = (self.count < 1.0) & (self.pending > 0)
        self.total.copy_(torch.where(dead[:, None], self.restart, self.total))
        self.count.copy_(torch.where(dead, torch.ones_like(self.count), self.count))
        n = self.count.sum()
        smoothed = (self.count + 1e-5) / (n + 1e-5 * self.count.numel()) * n
        codebook.copy_(self.total / smoothed[:, None])
        self.pending.zero_()


class VQVAE(PixelLikelihood, LatentModel):
    """VQ-VAE: a point-mass guide on the nearest codebook entries, straight-through; a
    uniform or learned (PixelCNN) categorical prior per position. See the module doc."""

    name = "vqvae"
    config_class = VQVAEConfig

    def __init__(self, config: VQVAEConfig, data_shape: tuple[int, ...]):
        super().__init__(config, data_shape)
        c = config
        out_shape = decoder_outputs(c.likelihood, data_shape)
        ae = self.autoencoder = nn.Module()  # what the first stage trains
        ae.data_shape = self.data_shape  # the likelihood reads it (and its own parameters)
        if c.arch == "conv":
            ae.encoder = ConvGridEncoder(data_shape, c.code_dim, c.activation)
            self.grid = ae.encoder.grid
            ae.decoder = ConvGridDecoder(c.code_dim, self.grid, out_shape, c.activation)
        else:
            self.grid = (1, c.num_positions)
            ae.encoder = MLP(math.prod(data_shape), c.hidden, c.num_positions * c.code_dim,
                             c.activation)
            ae.decoder = Decoder(c.num_positions * c.code_dim, c.hidden, out_shape,
                                 c.activation)
        self.num_positions = math.prod(self.grid)
        codebook = torch.empty(c.codebook_size, c.code_dim).uniform_(-1 / c.codebook_size,
                                                                    1 / c.codebook_size)
        if c.codebook_update == "ema":  # moving averages: a buffer, not a parameter
            ae.register_buffer("codebook", codebook)
            ae.ema = EMACodebook(codebook, c.ema_decay)
        else:
            ae.codebook = nn.Parameter(codebook)
        for name, param in self.likelihood.parameters(self.data_shape).items():
            setattr(ae, name, param)  # e.g. the Gaussian's raw_obs_scale per pixel
        self.prior_net = PixelCNNPrior(c.codebook_size, self.grid, c.prior_channels,
                                       c.prior_layers)  # what the second stage trains
        # each stage trains its own part; the other one is frozen
        ae.requires_grad_(not self.has_learned_prior)
        self.prior_net.requires_grad_(self.has_learned_prior)
        self._event_ndim = len(data_shape)

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor) -> None:
        """Start the codebook at encoder outputs of random training points (called by
        :func:`pyro_vae.train.train` before the first step; not in the prior's stage, which
        starts from trained weights), so that no entry starts far from every code."""
        if self.has_learned_prior:
            return
        pick = torch.randperm(x.shape[0], device=x.device)[:max(1, 1024 // self.num_positions)
                                                             + self.num_codes]
        z_e = self.encode_grid(x[pick].to(self.codebook.device)).reshape(-1, self.config.code_dim)
        rows = torch.randperm(z_e.shape[0], device=z_e.device)[:self.num_codes]
        self.codebook[:len(rows)] = z_e[rows]
        if self.config.codebook_update == "ema":
            self.autoencoder.ema.reset(self.codebook)

    # -- capabilities ----------------------------------------------------------------------
    @staticmethod
    def prior_stage(config: VQVAEConfig) -> tuple[dict[str, Any], int] | None:
        """The second stage a run of ``config`` is followed by (the model settings it changes,
        its epochs), or None: read by :mod:`pyro_vae.prior_stage`."""
        if not config.prior_epochs:
            return None
        return {"prior": "pixelcnn", "prior_epochs": 0}, config.prior_epochs

    @property
    def has_learned_prior(self) -> bool:
        return self.config.prior != "uniform"

    @property
    def num_codes(self) -> int:
        return self.config.codebook_size

    # -- the pieces ------------------------------------------------------------------------
    @property
    def encoder(self) -> nn.Module:
        return self.autoencoder.encoder

    @property
    def decoder(self) -> nn.Module:
        return self.autoencoder.decoder

    @property
    def codebook(self) -> torch.Tensor:
        return self.autoencoder.codebook

    def _register(self) -> None:
        """The stage's own part only: the optimizer never sees the frozen one."""
        if self.has_learned_prior:
            pyro.module(f"{self.name}.prior", self.prior_net)
        else:
            pyro.module(self.name, self.autoencoder)

    def encode_grid(self, x: torch.Tensor) -> torch.Tensor:
        """z_e(x): ``(..., L, D)``."""
        if self.config.arch == "conv":
            return self.encoder(x)
        h = self.encoder(x.flatten(-self._event_ndim))
        return h.reshape(*h.shape[:-1], self.num_positions, self.config.code_dim)

    def code_indices(self, x: torch.Tensor) -> torch.Tensor:
        """k(x), the nearest codebook entry of each position: ``(N, L)``."""
        return nearest(self.encode_grid(x), self.codebook)

    def _decode_out(self, z: torch.Tensor) -> torch.Tensor:
        if self.config.arch == "conv":
            return self.decoder(z)
        return self.decoder(z.flatten(-2))

    def _likelihood(self, out: torch.Tensor) -> dist.TorchDistribution:
        return self.likelihood.dist(out, self.autoencoder).to_event(self._event_ndim)

    def code_distribution(self, batch_shape=()) -> dist.TorchDistribution:
        """p(k) over the code indices ``(..., L)``: uniform, or the fitted PixelCNN."""
        if self.has_learned_prior:
            return AutoregressiveCodes(self.prior_net, batch_shape)
        logits = self.codebook.new_zeros(self.num_positions, self.num_codes)
        return dist.Categorical(logits=logits).to_event(1).expand(batch_shape)

    def prior_log_prob(self, codes: torch.Tensor) -> torch.Tensor:
        """log p(k) of code grids ``(..., L)``."""
        return self.code_distribution(codes.shape[:-1]).log_prob(codes)

    def reconstruction_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x | z_q(x)) per point."""
        z = self.codebook[self.code_indices(x)]
        return self._likelihood(self._decode_out(z)).log_prob(x)

    # -- the two programs ------------------------------------------------------------------
    def model(self, x, y=None, num_data=None):
        self._register()
        with self.data_plate(x, num_data):
            prior = CodebookPrior(self.code_distribution(x.shape[:1]), self.codebook)
            z = pyro.sample("z", prior)
            pyro.sample("x", self._likelihood(self._decode_out(z)), obs=x)

    def guide(self, x, y=None, num_data=None):
        self._register()
        z_e = self.encode_grid(x)
        train_codes = self.training and not self.has_learned_prior
        ema = self.autoencoder.ema if self.config.codebook_update == "ema" else None
        if train_codes and ema is not None:  # the codebook follows the codes' averages
            ema.advance(x, self.codebook)
        idx = nearest(z_e, self.codebook)
        z_q = self.codebook[idx]
        penalty = None
        if train_codes:
            # beta * commitment (moves the encoder) [+ codebook term (moves the codebook)]
            penalty = self.config.commitment * (z_e - z_q.detach()).pow(2).sum((-2, -1))
            if ema is None:
                penalty = penalty + (z_e.detach() - z_q).pow(2).sum((-2, -1))
            else:
                ema.observe(z_e.detach(), idx)
        straight_through = z_q.detach() + (z_e - z_e.detach())
        with self.data_plate(x, num_data):
            # the terms are the point mass's log density (Pyro's Delta(log_density=...)): they
            # add to log q, so the ELBO loses them; in eval mode the guide is a plain point mass
            pyro.sample("z", dist.Delta(straight_through, log_density=penalty, event_dim=2)
                        if penalty is not None else
                        dist.Delta(straight_through, event_dim=2))

    # -- pictures --------------------------------------------------------------------------
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.likelihood.mean(self._decode_out(z), self.autoencoder)

    @torch.no_grad()
    def sample(self, num, y=None):
        """Codes drawn from the prior (uniform, or ancestrally from the PixelCNN), decoded."""
        codes = self.code_distribution(torch.Size([num])).sample()
        return self.decode(self.codebook[codes])

    @torch.no_grad()
    def sample_uniform(self, num: int) -> torch.Tensor:
        """Uniform random codes, decoded (what a VQ-VAE draws without a learned prior)."""
        codes = torch.randint(self.num_codes, (num, self.num_positions), device=self.device)
        return self.decode(self.codebook[codes])

    def encode(self, x, y=None):
        z = self.codebook[self.code_indices(x)].flatten(-2)
        return z, torch.zeros_like(z)

    @torch.no_grad()
    def reconstruct(self, x, y=None):
        return self.decode(self.codebook[self.code_indices(x)])

    def check_data(self, x, what="data"):
        super().check_data(x, what)
        self.likelihood.check(x, what)
