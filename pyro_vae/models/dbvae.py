r"""The debiasing VAE (DB-VAE) of Amini, Soleimany, Schwarting, Bhatia & Rus (2019): one encoder
gives both a classifier's logits and the latent code of a VAE, trained jointly, with labels
observed.

Model::

    z_n ~ N(0, I)
    x_n | z_n ~ Bernoulli(sigmoid(f(z_n)))                    (--likelihood: any entry)
    factor  w * log q(y_n | x_n)                             (labelled points only)

Guide::

    [logits(x_n), mu(x_n), s(x_n)] = g(x_n)                  one network, three heads
    q(y_n | x_n) = Cat(softmax(logits(x_n)))                  the classifier
    q(z_n | x_n) = N(mu(x_n), diag s(x_n)^2)

The objective per training point is the paper's joint loss with the signs of an ELBO,

.. math::
    w \log q(y_n | x_n) + \mathbb{E}_{q(z|x_n)}[\log p(x_n | z)]
        - \mathrm{KL}(q(z | x_n) \,\|\, p(z)),\qquad w = \texttt{class\_weight},

the classification term as a ``pyro.factor`` (site ``y_class``) inside the data plate (zero on
a point whose label is -1, unknown). The paper weights the VAE term by a constant c against the
cross-entropy; ``class_weight`` is 1/c. Because the classifier's logits and the code share the
encoder's hidden layers, the supervised loss shapes the latent space: the codes of a class
gather in a region of their own, and a class (or a kind of input) with few training points
sits in a region of low density of the codes. The paper's VAE term covers only its positive
class (faces); here every point is reconstructed, so the density covers the whole training
set.

What makes it *debiasing* is a training setting, not part of the pair:
``TrainConfig.resample`` (``pyro-vae train dbvae --resample histogram``) recomputes the
resampling weights :math:`w(x) \propto \prod_d 1 / (\hat Q_d(\mu_d(x)) + \alpha)` from the
current model's latent means of the training points at the start of every epoch and draws that
epoch's minibatches by them (:mod:`pyro_vae.debias`, docs/debiasing.md). Without labels
(``y=None``: evaluation) the model is a plain VAE, so ``evaluate`` scores ``log p(x)`` as for
``vae``; :meth:`DBVAE.classify` is ``argmax_y q(y | x)``, and ``evaluate`` reports its test
accuracy (the ``classifier`` capability, ``has_classifier``).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from torch.nn import functional as F

from pyro_vae.errors import check_choice, check_number, check_positive
from pyro_vae.models.base import LatentModel
from pyro_vae.models.labels import PartlyLabelled
from pyro_vae.models.likelihoods import LIKELIHOODS, PixelLikelihood, decoder_outputs
from pyro_vae.nn import MLP, Decoder, check_network


@dataclass
class DBVAEConfig:
    latent_dim: int = 8
    hidden: tuple[int, ...] = (200,)
    activation: str = "relu"
    num_classes: int = 10
    class_weight: float = 50.0
    likelihood: str = "bernoulli"

    def __post_init__(self) -> None:
        check_network(self)
        check_positive("num_classes", self.num_classes)
        check_number("class_weight", self.class_weight, minimum=0.0)
        check_choice("likelihood", self.likelihood, LIKELIHOODS)


class DBVAE(PartlyLabelled, PixelLikelihood, LatentModel):
    """A VAE whose encoder also classifies, trained on labelled data (the DB-VAE)."""

    name = "dbvae"
    config_class = DBVAEConfig
    data_kinds = ("image",)

    def __init__(self, config: DBVAEConfig, data_shape: tuple[int, ...]):
        super().__init__(config, data_shape)
        c = config
        self.num_classes = c.num_classes
        pixels = int(torch.Size(data_shape).numel())
        for name, param in self.likelihood.parameters(self.data_shape).items():
            setattr(self, name, param)
        self.encoder = MLP(pixels, c.hidden, c.num_classes + 2 * c.latent_dim, c.activation)
        self.decoder = Decoder(c.latent_dim, c.hidden, decoder_outputs(c.likelihood, data_shape),
                               c.activation)
        self._event_ndim = len(data_shape)

    # -- the encoder's three heads ----------------------------------------------------------
    def _heads(self, x: torch.Tensor):
        out = self.encoder(x.flatten(1))
        c, d = self.num_classes, self.config.latent_dim
        # slices, not split: an unused piece of a split gets a zero gradient that autograd
        # makes on the CPU under the device harness (tests/device_harness.py)
        return out[..., :c], out[..., c:c + d], F.softplus(out[..., c + d:]) + 1e-4

    def class_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of q(y | x), shape (N, C)."""
        return self._heads(x)[0]

    # -- the two programs -------------------------------------------------------------------
    def model(self, x, y=None, num_data=None):
        pyro.module(self.name, self)
        known = self._known(x, y)
        with self.data_plate(x, num_data):
            prior = x.new_zeros(x.shape[0], self.config.latent_dim)
            z = pyro.sample("z", dist.Normal(prior, torch.ones_like(prior)).to_event(1))
            out = self.decoder(z)
            pyro.sample("x", self.likelihood.dist(out, self).to_event(self._event_ndim), obs=x)
            if known is not None and self.config.class_weight > 0:
                self.class_factor("y_class", self.config.class_weight, x, y, known)

    def guide(self, x, y=None, num_data=None):
        pyro.module(self.name, self)
        _, loc, scale = self._heads(x)
        with self.data_plate(x, num_data):
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    # -- the pictures ------------------------------------------------------------------------
    def encode(self, x, y=None):
        return self._heads(x)[1:]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.likelihood.mean(self.decoder(z), self)

    @torch.no_grad()
    def sample(self, num, y=None):
        return self.decode(torch.randn(num, self.config.latent_dim, device=self.device))

    @torch.no_grad()
    def reconstruct(self, x, y=None):
        return self.decode(self._heads(x)[1])

    def check_data(self, x, what="data"):
        super().check_data(x, what)
        self.likelihood.check(x, what)
