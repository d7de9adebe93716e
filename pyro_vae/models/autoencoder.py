r"""The deterministic autoencoder and the denoising autoencoder (Vincent et al. 2008), written
as model/guide pairs so the same SVI loop trains them.

Autoencoder: an encoder :math:`z = e_\phi(x)` and a decoder :math:`\hat x = d_\theta(z)`
trained to minimize a reconstruction loss,

.. math::

    \text{BCE: } -\sum_i \big[x_i \log \hat x_i + (1 - x_i) \log(1 - \hat x_i)\big]
    \qquad \text{or} \qquad \text{MSE: } \sum_i (x_i - \hat x_i)^2 .

As a pair: the guide is a point mass :math:`q(z \mid x) = \delta(z - e_\phi(x))` (log density
0), the model's prior on ``z`` is masked out (it contributes nothing), and the likelihood is
``Bernoulli(logits=d(z))`` (``likelihood="bernoulli"``: minus the BCE) or
``Normal(d(z), 1/sqrt(2))`` (``likelihood="gaussian"``: minus the MSE, up to a constant). The
Trace_ELBO of the pair is then exactly minus the reconstruction loss; there is no KL term, so
beta, warm-up and free bits change nothing.

Denoising autoencoder: the encoder sees a corrupted input :math:`\tilde x \sim c(\tilde x
\mid x)` while the loss still scores the clean :math:`x`: ``corruption="gaussian"``
(:math:`\tilde x = x + \sigma \epsilon`) or ``"dropout"`` (each pixel set to 0 with
probability ``corruption_level``). Corruption is applied in training mode only.

Sparse autoencoder: the autoencoder's pair plus an L1 penalty on the code,
:math:`\lambda \lVert z \rVert_1`, entered in the model as ``pyro.factor("l1", -lambda |z|_1)``
inside the data plate, so the loss every objective optimizes (and every bound evaluation
reports) is the reconstruction loss plus the penalty.

The prior :math:`N(0, I)` is only used by :meth:`sample`: decoding random latents shows why a
plain autoencoder is no generative model -- nothing made its codes fill that prior. Bounds
on log p(x) computed by ``pyro_vae.evaluate`` for these pairs are reconstruction
log-likelihoods, not likelihoods of a generative model.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine

from pyro_vae.errors import ConfigError, DataError, check_choice
from pyro_vae.models.base import LatentModel
from pyro_vae.nn import MLP, Decoder, check_network

LIKELIHOODS = ("bernoulli", "gaussian")
CORRUPTIONS = ("gaussian", "dropout")
MSE_SCALE = 2 ** -0.5  # Normal(mean, 1/sqrt(2)): -log p = (x - mean)^2 + const


@dataclass
class AEConfig:
    latent_dim: int = 50
    hidden: tuple[int, ...] = (400,)
    activation: str = "relu"
    likelihood: str = "bernoulli"

    def __post_init__(self) -> None:
        check_network(self)
        check_choice("likelihood", self.likelihood, LIKELIHOODS)


@dataclass
class DAEConfig(AEConfig):
    corruption: str = "dropout"
    corruption_level: float = 0.25

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("corruption", self.corruption, CORRUPTIONS)
        if not self.corruption_level >= 0 or (self.corruption == "dropout"
                                               and not self.corruption_level < 1):
            raise ConfigError(f"corruption_level must be >= 0 (and < 1 for dropout), got "
                              f"{self.corruption_level}")


@dataclass
class SAEConfig(AEConfig):
    l1: float = 0.1  # lambda of the penalty lambda * |z|_1 per data point

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.l1, bool) or not isinstance(self.l1, (int, float)) \
                or not self.l1 >= 0:
            raise ConfigError(f"l1 must be a number >= 0, got {self.l1!r}")


class Autoencoder(LatentModel):
    """Deterministic autoencoder: point-mass guide on z, masked prior, reconstruction loss."""

    name = "ae"
    config_class = AEConfig
    deterministic_code = True  # a point-mass guide: the code's sparsity is reported

    def __init__(self, config: AEConfig, data_shape: tuple[int, ...]):
        super().__init__(config, data_shape)
        c = config
        self._event_ndim = len(data_shape)
        self.encoder = MLP(int(torch.Size(data_shape).numel()), c.hidden, c.latent_dim,
                           c.activation)
        self.decoder = Decoder(c.latent_dim, c.hidden, data_shape, c.activation)

    def corrupt(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's input: ``x`` itself for the plain autoencoder."""
        return x

    def _code(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x.flatten(-self._event_ndim))

    def _likelihood(self, out: torch.Tensor) -> dist.TorchDistribution:
        if self.config.likelihood == "bernoulli":
            base = dist.Bernoulli(logits=out, validate_args=False)
        else:
            base = dist.Normal(out, MSE_SCALE)
        return base.to_event(self._event_ndim)

    def model(self, x, y=None, num_data=None):
        pyro.module(self.name, self)
        with self.data_plate(x, num_data):
            loc = x.new_zeros(x.shape[0], self.config.latent_dim)
            with poutine.mask(mask=False):  # no prior term: the loss is reconstruction only
                z = pyro.sample("z", dist.Normal(loc, 1.0).to_event(1))
            self.penalize(z)
            pyro.sample("x", self._likelihood(self.decoder(z)), obs=x)

    def penalize(self, z: torch.Tensor) -> None:
        """A term of the loss on the code (none for the plain autoencoder)."""

    def guide(self, x, y=None, num_data=None):
        pyro.module(self.name, self)
        code = self._code(self.corrupt(x) if self.training else x)
        with self.data_plate(x, num_data):
            pyro.sample("z", dist.Delta(code).to_event(1))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        out = self.decoder(z)
        return torch.sigmoid(out) if self.config.likelihood == "bernoulli" else out

    @torch.no_grad()
    def sample(self, num, y=None):
        """Decoded random latents z ~ N(0, I) -- not samples of a generative model."""
        return self.decode(torch.randn(num, self.config.latent_dim, device=self.device))

    def encode(self, x, y=None):
        code = self._code(x)
        return code, torch.zeros_like(code)

    @torch.no_grad()
    def reconstruct(self, x, y=None):
        return self.decode(self._code(x))

    def check_data(self, x, what="data"):
        super().check_data(x, what)
        if self.config.likelihood == "bernoulli" and not ((x >= 0) & (x <= 1)).all():
            raise DataError(f"{what} has values outside [0, 1], which the BCE loss cannot "
                            "score: use --likelihood gaussian (MSE)")


class DenoisingAutoencoder(Autoencoder):
    """Autoencoder whose encoder sees a corrupted input during training."""

    name = "dae"
    config_class = DAEConfig

    def corrupt(self, x: torch.Tensor) -> torch.Tensor:
        level = self.config.corruption_level
        if self.config.corruption == "gaussian":
            return x + level * torch.randn_like(x)
        return x * (torch.rand_like(x) >= level).to(x.dtype)


class SparseAutoencoder(Autoencoder):
    """Autoencoder with an L1 penalty lambda * |z|_1 on the code (a ``pyro.factor``)."""

    name = "sae"
    config_class = SAEConfig

    def penalize(self, z: torch.Tensor) -> None:
        pyro.factor("l1", -self.config.l1 * z.abs().sum(-1))
