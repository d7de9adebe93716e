r"""Deep clustering with a Gaussian-mixture prior in latent space (VaDE, Jiang et al. 2017).

Model::

    c_n ~ Cat(pi)                                   pi = softmax(logits), learned
    z_n | c_n ~ N(mu_c, diag(sigma_c^2))            mu, sigma learned (sigma = softplus + 1e-3)
    x_n | z_n ~ Bernoulli(sigmoid(f_theta(z_n)))    (or any entry of ``--likelihood``)

Guide (amortized)::

    q_phi(z_n | x_n) = N(mu_phi(x_n), diag(s_phi(x_n)^2))

The component is summed out **in closed form**: the ``z`` site's prior is the marginal
:math:`p(z) = \sum_c \pi_c \mathcal{N}(z; \mu_c, \sigma_c^2)`, a
:class:`~pyro.distributions.MixtureSameFamily`. Why not parallel enumeration of ``c`` (as
:mod:`pyro_vae.models.gmm` does): the sum over c is the same exact log-sum-exp either way, but
with the marginal the model has one continuous latent site, so every objective (``trace``,
``iwae``, ...), the importance-sampled log p(x), the IWAE bounds and the latent usage of
:mod:`pyro_vae.evaluate` apply unchanged, and the guide needs no q(c | x). The ELBO is
:math:`\mathbb{E}_q[\log p(x|z) + \log p(z) - \log q(z|x)]`; VaDE's own bound, with
:math:`q(c|x) = p(c|z)`, is this one.

The cluster of a point is :math:`\arg\max_c p(c \mid z = \mu_\phi(x))`,
:math:`p(c|z) \propto \pi_c \mathcal{N}(z; \mu_c, \sigma_c^2)` (:meth:`VaDE.cluster_probabilities`,
the capability the clustering evaluation of :mod:`pyro_vae.metrics` reads).

Initialisation (:meth:`VaDE.init_from_data`, before the first SVI step): encoder and decoder
are pre-trained for ``pretrain_epochs`` epochs, by default as a plain VAE (prior N(0, I), the
KL in closed form; ``pretrain="ae"``: as VaDE's paper, an autoencoder on the encoder means),
then a diagonal :class:`sklearn.mixture.GaussianMixture` (best of 5 starts) fitted to the guide
means gives pi, mu and sigma (``pretrain_epochs 0``: fitted to the random encoder's codes).
On mnist-5k the VAE start clusters better (docs/clustering.md). Pre-training is not counted
in the run's ``seconds``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

from pyro_vae.errors import ConfigError, DataError, check_choice, check_positive
from pyro_vae.models.base import LatentModel
from pyro_vae.models.likelihoods import LIKELIHOODS, PixelLikelihood, decoder_outputs
from pyro_vae.models.priors import LatentMixture
from pyro_vae.nn import Decoder, GaussianEncoder, check_network, inv_softplus

PRETRAIN = ("vae", "ae")


@dataclass
class VaDEConfig:
    num_components: int = 10
    latent_dim: int = 10
    hidden: tuple[int, ...] = (500, 500)
    activation: str = "relu"
    likelihood: str = "bernoulli"
    pretrain: str = "vae"
    pretrain_epochs: int = 30
    pretrain_lr: float = 1e-3

    def __post_init__(self) -> None:
        check_network(self)
        check_positive("num_components", self.num_components)
        check_choice("likelihood", self.likelihood, LIKELIHOODS)
        check_choice("pretrain", self.pretrain, PRETRAIN)
        if isinstance(self.pretrain_epochs, bool) or not isinstance(self.pretrain_epochs, int) \
                or self.pretrain_epochs < 0:
            raise ConfigError(f"pretrain_epochs must be a whole number >= 0, got "
                              f"{self.pretrain_epochs!r}")
        check_positive("pretrain_lr", self.pretrain_lr, integer=False)



class VaDE(PixelLikelihood, LatentModel):
    """VAE with a learned K-component diagonal Gaussian mixture prior p(z)."""

    name = "vade"
    config_class = VaDEConfig

    def __init__(self, config: VaDEConfig, data_shape: tuple[int, ...]):
        super().__init__(config, data_shape)
        c = config
        self.K = c.num_components
        self.encoder = GaussianEncoder(data_shape, c.hidden, c.latent_dim, c.activation)
        self.decoder = Decoder(c.latent_dim, c.hidden,
                               decoder_outputs(c.likelihood, data_shape), c.activation)
        for name, param in self.likelihood.parameters(self.data_shape).items():
            setattr(self, name, param)
        self._event_ndim = len(data_shape)
        # the mixture: logits of pi, means, raw scales (softplus(raw) + 1e-3)
        self.mix_logits = nn.Parameter(torch.zeros(self.K))
        self.mix_locs = nn.Parameter(torch.randn(self.K, c.latent_dim))
        self.mix_raw_scales = nn.Parameter(torch.full((self.K, c.latent_dim),
                                                      float(inv_softplus(torch.tensor(1.0)))))

    # -- the prior ----------------------------------------------------------------------------
    def mixture(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log pi (K,), means (K, d), scales (K, d)) of the latent mixture."""
        return (F.log_softmax(self.mix_logits, -1), self.mix_locs,
                F.softplus(self.mix_raw_scales) + 1e-3)

    def prior(self) -> LatentMixture:
        """p(z) = sum_c pi_c N(z; mu_c, diag sigma_c^2), the component summed out exactly."""
        log_pi, locs, scales = self.mixture()
        return LatentMixture(dist.Categorical(logits=log_pi),
                             dist.Normal(locs, scales).to_event(1))

    def component_log_joint(self, z: torch.Tensor) -> torch.Tensor:
        """log pi_c + log N(z; mu_c, sigma_c^2), shape ``(..., K)`` for ``z`` of ``(..., d)``."""
        log_pi, locs, scales = self.mixture()
        return log_pi + dist.Normal(locs, scales).to_event(1).log_prob(z.unsqueeze(-2))

    # -- the two programs ---------------------------------------------------------------------
    def _likelihood(self, out: torch.Tensor) -> dist.TorchDistribution:
        return self.likelihood.dist(out, self).to_event(self._event_ndim)

    def model(self, x, y=None, num_data=None):
        pyro.module(self.name, self)
        prior = self.prior()
        plate = self.data_plate(x, num_data)
        with plate:
            z = pyro.sample("z", prior)
        with plate:
            pyro.sample("x", self._likelihood(self.decoder(z)), obs=x)

    def guide(self, x, y=None, num_data=None):
        pyro.module(self.name, self)
        loc, scale = self.encoder(x)
        with self.data_plate(x, num_data):
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    # -- clustering ---------------------------------------------------------------------------
    @torch.no_grad()
    def cluster_probabilities(self, x: torch.Tensor, y=None) -> torch.Tensor:
        """p(c | z = guide mean of x), shape ``(N, K)``: the clustering capability."""
        return F.softmax(self.component_log_joint(self.encoder(x)[0]), -1)

    @torch.no_grad()
    def sample_component(self, c: int, num: int) -> torch.Tensor:
        """``num`` decoded draws z ~ N(mu_c, sigma_c^2) of component ``c``."""
        _, locs, scales = self.mixture()
        z = locs[c] + scales[c] * torch.randn(num, locs.shape[-1], device=self.device)
        return self.decode(z)

    # -- initialisation -----------------------------------------------------------------------
    def init_from_data(self, x: torch.Tensor, batch_size: int = 128) -> None:
        """Pre-train encoder and decoder (a VAE, or an autoencoder), then fit the mixture to the
        guide means with scikit-learn's diagonal GaussianMixture (torch's global RNG: a seeded
        run is repeatable). Called by :func:`pyro_vae.train.train` before a fresh run."""
        from sklearn.mixture import GaussianMixture

        if x.shape[0] < self.K:
            raise DataError(f"a mixture of {self.K} components needs at least {self.K} training "
                            f"points, got {x.shape[0]}; use a smaller --num-components")
        self.check_data(x[:0], "training data")
        params = list(self.encoder.parameters()) + list(self.decoder.parameters())
        params += [p for n, p in self.named_parameters() if n.startswith("raw_obs")]
        opt = torch.optim.Adam(params, lr=self.config.pretrain_lr)
        n = x.shape[0]
        for _ in range(self.config.pretrain_epochs):
            perm = torch.randperm(n).to(x.device)
            for i in range(0, n, batch_size):  # x may stay in host memory (data_on host)
                xb = x[perm[i:i + batch_size]].to(self.device)
                loc, scale = self.encoder(xb)
                if self.config.pretrain == "ae":
                    z, kl = loc, 0.0
                else:  # a plain VAE: z ~ q(z|x), KL to N(0, I) in closed form
                    z = loc + scale * torch.randn_like(loc)
                    kl = (0.5 * (loc ** 2 + scale ** 2 - 1) - scale.log()).sum(-1)
                loss = (kl - self._likelihood(self.decoder(z)).log_prob(xb)).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
        with torch.no_grad():
            codes = torch.cat([self.encoder(x[i:i + 1000].to(self.device))[0]
                               for i in range(0, n, 1000)])
            seed = int(torch.randint(0, 2**31 - 1, (1,)))
            gm = GaussianMixture(self.K, covariance_type="diag", random_state=seed,
                                 reg_covar=1e-4, n_init=5).fit(codes.cpu().double().numpy())
            like = self.mix_locs
            self.mix_logits.copy_(torch.as_tensor(gm.weights_).log().to(like))
            self.mix_locs.copy_(torch.as_tensor(gm.means_).to(like))
            scales = torch.as_tensor(gm.covariances_).sqrt().to(like).clamp_min(2e-3)
            self.mix_raw_scales.copy_(inv_softplus(scales - 1e-3))

    # -- what pictures use --------------------------------------------------------------------
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.likelihood.mean(self.decoder(z), self)

    @torch.no_grad()
    def sample(self, num, y=None):
        return self.decode(self.prior().sample((num,)))

    def encode(self, x, y=None):
        return self.encoder(x)

    @torch.no_grad()
    def reconstruct(self, x, y=None):
        return self.decode(self.encoder(x)[0])

    def check_data(self, x, what="data"):
        super().check_data(x, what)
        self.likelihood.check(x, what)
