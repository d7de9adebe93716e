r"""The Bernoulli latent model: a sigmoid belief network / Helmholtz machine.

Model (one stochastic layer, K units, default K = 200)::

    z_n  ~ prod_k Bernoulli(sigmoid(beta_k))          learnable prior logits beta
    x_n | z_n ~ Bernoulli(sigmoid(f_theta(z_n)))        f linear (hidden=()) or an MLP

With ``layers=2`` (the 200-200 sigmoid belief nets of Mnih & Gregor 2014, Mnih & Rezende
2016) the top layer ``z2 ~ Bernoulli(sigmoid(beta))`` feeds ``z1 | z2 ~ Bernoulli(sigmoid(
g(z2)))`` and ``x | z1`` as above.

Guide (amortized, factorized within a layer)::

    q(z_n | x_n) = prod_k Bernoulli(sigmoid(e_phi(x_n))_k)          (+ q(z2 | z1) for 2 layers)

The latents are discrete, so the reparameterization trick does not apply: the guide is trained
by score-function (likelihood-ratio) gradients -- ``trace``/``tracegraph`` with baselines,
``vimco`` or ``rws`` -- never by ``iwae``, which refuses it.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyro_vae.errors import ConfigError, DataError
from pyro_vae.models.base import LatentModel
from pyro_vae.nn import MLP, check_network


@dataclass
class BernoulliConfig:
    latent_dim: int = 200
    hidden: tuple[int, ...] = ()
    activation: str = "tanh"
    layers: int = 1

    def __post_init__(self) -> None:
        check_network(self)
        if self.layers not in (1, 2):
            raise ConfigError(f"layers must be 1 or 2 (stochastic layers), got {self.layers}")


class BernoulliLatent(LatentModel):
    """Bernoulli latents with learnable prior logits, linear or MLP decoder, Bernoulli guide."""

    name = "bernoulli"
    config_class = BernoulliConfig
    has_discrete_latents = True
    default_objective = "tracegraph"
    data_kinds = ("image",)
    discrete_likelihood = True  # Bernoulli pixels

    def __init__(self, config: BernoulliConfig, data_shape: tuple[int, ...]):
        super().__init__(config, data_shape)
        c, d = config, int(torch.Size(data_shape).numel())
        self._event_ndim = len(data_shape)
        self.prior_logits = nn.Parameter(torch.zeros(c.latent_dim))
        self.decoder = MLP(c.latent_dim, list(reversed(c.hidden)), d, c.activation)
        self.encoder = MLP(d, c.hidden, c.latent_dim, c.activation)
        if c.layers == 2:
            self.decoder_top = nn.Linear(c.latent_dim, c.latent_dim)
            self.encoder_top = nn.Linear(c.latent_dim, c.latent_dim)
            self.latent_sites = ("z1", "z2")
        else:
            self.latent_sites = ("z",)

    @staticmethod
    def _bernoulli(logits: torch.Tensor) -> dist.TorchDistribution:
        return dist.Bernoulli(logits=logits, validate_args=False).to_event(1)

    def x_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Logits of p(x | z) for codes ``z`` (any leading dims; the exact enumeration uses it)."""
        return self.decoder(z).reshape(*z.shape[:-1], *self.data_shape)

    def model(self, x, y=None, num_data=None):
        pyro.module(self.name, self)
        logits = self.prior_logits.expand(x.shape[0], -1)
        with self.data_plate(x, num_data):
            if self.config.layers == 2:
                z2 = pyro.sample("z2", self._bernoulli(logits))
                z = pyro.sample("z1", self._bernoulli(self.decoder_top(z2)))
            else:
                z = pyro.sample("z", self._bernoulli(logits))
            obs = dist.Bernoulli(logits=self.x_logits(z), validate_args=False)
            pyro.sample("x", obs.to_event(self._event_ndim), obs=x)

    def guide(self, x, y=None, num_data=None):
        pyro.module(self.name, self)
        logits = self.encoder(x.flatten(-self._event_ndim))
        with self.data_plate(x, num_data):
            if self.config.layers == 2:
                z1 = pyro.sample("z1", self._bernoulli(logits))
                pyro.sample("z2", self._bernoulli(self.encoder_top(z1)))
            else:
                pyro.sample("z", self._bernoulli(logits))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Pixel probabilities at (bottom-layer) latent codes ``z``."""
        return torch.sigmoid(self.x_logits(z))

    @torch.no_grad()
    def sample(self, num, y=None):
        logits = self.prior_logits.expand(num, -1)
        z = torch.bernoulli(torch.sigmoid(logits))
        if self.config.layers == 2:
            z = torch.bernoulli(torch.sigmoid(self.decoder_top(z)))
        return self.decode(z)

    def encode(self, x, y=None):
        """Mean and standard deviation of q(z | x) (the bottom layer)."""
        p = torch.sigmoid(self.encoder(x.flatten(-self._event_ndim)))
        return p, (p * (1 - p)).sqrt()

    @torch.no_grad()
    def reconstruct(self, x, y=None):
        return self.decode(self.encode(x)[0])

    def check_data(self, x, what="data"):
        super().check_data(x, what)
        if not ((x == 0) | (x == 1)).all():
            raise DataError(f"{what} is not binary but the Bernoulli likelihood needs 0/1 values:"
                            " binarize it (--binarize dynamic|fixed)")
