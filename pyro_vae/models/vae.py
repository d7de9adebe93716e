"""The variational autoencoder (Kingma & Welling 2014; Rezende et al. 2014), and beta-VAE.

Model::

    z_n ~ N(0, I_d)
    x_n | z_n ~ Bernoulli(sigmoid(f_theta(z_n)))       (binary data)
             or N(f_theta(z_n), diag(sigma^2))           (real data, sigma learned per pixel)
             or DiscretizedLogistic(mu_theta(z_n), s_theta(z_n))   (8-bit pixels k/255)

The likelihood is a setting (``--likelihood``), an entry of
:data:`pyro_vae.models.likelihoods.LIKELIHOODS`; the decoder gives as many outputs per pixel as
the entry needs (two for the discretized logistic: location and log-scale, per pixel and
channel), see docs/colour.md.

Guide (amortized)::

    q_phi(z_n | x_n) = N(mu_phi(x_n), diag(s_phi(x_n)^2))

The prior and the guide's family are settings too (``--prior normal|mog|vamp|flow``,
``--posterior diag|iaf``), entries of :data:`pyro_vae.models.priors.PRIORS` and
:data:`~pyro_vae.models.priors.POSTERIORS`: a learned mixture, the VampPrior, a flow prior, an
inverse-autoregressive-flow guide (docs/priors.md). The defaults are the model above.

beta-VAE (Higgins et al. 2017) is a training setting, not a model one: ``TrainConfig.beta``
(``pyro-vae train vae --beta 4``) scales the ``z`` site in both programs, so Trace_ELBO
optimizes E_q[log p(x|z)] - beta KL(q(z|x) || p(z)); see :mod:`pyro_vae.annealing`.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch

from pyro_vae.errors import check_choice, check_positive
from pyro_vae.models.base import LatentModel
from pyro_vae.models.likelihoods import LIKELIHOODS, PixelLikelihood, decoder_outputs
from pyro_vae.models.priors import POSTERIORS, PRIORS, make_encoder
from pyro_vae.nn import (
    ARCHS,
    INITS,
    Decoder,
    check_network,
    decoder_net,
    glorot_init_,
)


@dataclass
class VAEConfig:
    latent_dim: int = 50
    hidden: tuple[int, ...] = (400,)
    activation: str = "relu"
    likelihood: str = "bernoulli"
    arch: str = "mlp"
    init: str = "torch"  # or "iwae": Glorot weights, zero biases, output bias at the data
    prior: str = "normal"  # an entry of PRIORS
    prior_components: int = 50  # mog components, vamp pseudo-inputs
    flow_steps: int = 2  # steps of the flow prior
    posterior: str = "diag"  # an entry of POSTERIORS
    iaf_steps: int = 2  # steps of the IAF guide

    def __post_init__(self) -> None:
        check_network(self)
        check_choice("likelihood", self.likelihood, LIKELIHOODS)
        check_choice("arch", self.arch, ARCHS)
        check_choice("init", self.init, INITS)
        check_choice("prior", self.prior, PRIORS)
        check_choice("posterior", self.posterior, POSTERIORS)
        for name in ("prior_components", "flow_steps", "iaf_steps"):
            check_positive(name, getattr(self, name))


class VAE(PixelLikelihood, LatentModel):
    """Gaussian latent (N(0, I) or a learned prior), MLP or conv decoder, amortized guide
    (diagonal Gaussian or IAF)."""

    name = "vae"
    config_class = VAEConfig

    def __init__(self, config: VAEConfig, data_shape: tuple[int, ...]):
        super().__init__(config, data_shape)
        c = config
        out_shape = decoder_outputs(c.likelihood, data_shape)
        self.posterior = POSTERIORS[c.posterior].cls(c.latent_dim, c)
        # the encoder gives (loc, scale) [and the posterior's context]: conv or MLP
        self.encoder = make_encoder(self.posterior, c.arch, data_shape, c.hidden, c.latent_dim,
                                    c.activation)
        if c.arch == "conv":  # convolutional encoder and decoder (pyro_vae.nn)
            self.decoder = decoder_net("conv", c.latent_dim, c.hidden, out_shape, c.activation)
        else:
            self.decoder = Decoder(c.latent_dim, c.hidden, out_shape, c.activation)
        self.prior = PRIORS[c.prior].cls(c.latent_dim, c, self.data_shape)
        for name, param in self.likelihood.parameters(self.data_shape).items():
            setattr(self, name, param)  # e.g. the Gaussian's raw_obs_scale per pixel
        self._event_ndim = len(data_shape)
        if c.init == "iwae":
            glorot_init_(self)

    def init_from_data(self, x: torch.Tensor) -> None:
        """With ``init="iwae"`` and Bernoulli pixels, start the decoder at the training data's
        mean pixel (called by :func:`pyro_vae.train.train` before the first step)."""
        if self.config.init == "iwae":
            self.likelihood.init_output(self.decoder, x)
        if hasattr(self.prior, "init_from_data"):  # the VampPrior's pseudo-inputs
            self.prior.init_from_data(x)

    def q(self, x: torch.Tensor) -> dist.TorchDistribution:
        """q(z | x), batch ``x.shape[:1]``, event ``(latent_dim,)``."""
        return self.posterior.dist(*self.encoder(x))

    def prior_dist(self, x: torch.Tensor) -> dist.TorchDistribution:
        """p(z) of the ``z`` site for the points ``x`` (a learned prior broadcasts)."""
        return self.prior.dist(x, self.q)

    def _likelihood(self, out: torch.Tensor) -> dist.TorchDistribution:
        return self.likelihood.dist(out, self).to_event(self._event_ndim)

    def _mean(self, out: torch.Tensor) -> torch.Tensor:
        return self.likelihood.mean(out, self)

    def model(self, x, y=None, num_data=None):
        pyro.module(self.name, self)
        plate = self.data_plate(x, num_data)
        prior = self.prior_dist(x)
        with plate:
            z = pyro.sample("z", prior)
        with plate:
            pyro.sample("x", self._likelihood(self.decoder(z)), obs=x)

    def guide(self, x, y=None, num_data=None):
        pyro.module(self.name, self)
        q = self.q(x)
        with self.data_plate(x, num_data):
            pyro.sample("z", q)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The likelihood's mean at latent codes ``z``."""
        return self._mean(self.decoder(z))

    @torch.no_grad()
    def sample(self, num, y=None):
        """``num`` decoded draws of the (learned) prior."""
        like = next(self.decoder.parameters())
        return self.decode(self.prior.sample(num, self.q, like))

    def encode(self, x, y=None):
        """(loc, scale) of q(z | x); of the IAF's base Gaussian, before its steps."""
        return self.encoder(x)[:2]

    @torch.no_grad()
    def reconstruct(self, x, y=None):
        """The likelihood's mean at the guide's point code (the mean; an IAF's base mean
        through its steps)."""
        return self.decode(self.posterior.point(*self.encoder(x)))

    def check_data(self, x, what="data"):
        super().check_data(x, what)
        self.likelihood.check(x, what)
