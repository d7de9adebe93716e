r"""The semi-supervised VAE M2 of Kingma, Rezende, Mohamed & Welling (2014).

Model::

    y_n ~ Cat(1/C, ..., 1/C)
    z_n ~ N(0, I)
    x_n | y_n, z_n ~ Bernoulli(sigmoid(f([z_n, onehot(y_n)])))     (--likelihood: any entry)

x is an image (C, H, W) or a real vector (D,): with ``--likelihood gaussian`` on the codes of
an M1 run (:func:`pyro_vae.semi_supervised.export_codes`) it is Kingma's stacked M1+M2.

Guide::

    q(y_n | x_n) = Cat(softmax(g(x_n)))                     the classifier
    q(z_n | x_n, y_n) = N(mu([x_n, onehot(y_n)]), diag s([x_n, onehot(y_n)])^2)

The label site ``y`` is marked for parallel enumeration in the guide, so under
:class:`pyro.infer.TraceEnum_ELBO` (objective ``enum``, the default) the sum over the C classes
is exact and only ``z`` is sampled. A minibatch may mix labelled and unlabelled points: the
training labels ``y`` hold a class, or -1 (:data:`pyro_vae.data.UNLABELLED`) where unknown
(``--labels-per-class``). Where the label is known the guide's ``q(y_n | x_n)`` is the point
mass at it (logits -1e4 off the label: exactly zero probability, which Pyro's Dice drops), so
the enumerated sum is the labelled bound of Kingma's eq. 6,

.. math::
    -\mathcal{L}(x, y) = \mathbb{E}_{q(z|x,y)}[\log p(x|y,z) + \log p(y) + \log p(z)
                         - \log q(z|x,y)],

and where it is unknown it is the unlabelled bound of eq. 7,

.. math::
    -\mathcal{U}(x) = \sum_y q(y|x)\,(-\mathcal{L}(x, y)) + \mathcal{H}(q(y|x)).

Because ``q(y|x)`` appears in the labelled bound only as that point mass, the classifier would
learn from unlabelled points alone; Kingma's eq. 9 adds ``alpha * log q(y_n | x_n)`` for the
labelled points. Here it is a ``pyro.factor`` (site ``y_aux``) of the model inside the data
plate, ``aux_weight * log q(y_n | x_n)`` on each labelled point (zero on the others), so the
objective per epoch is

.. math::
    \sum_{\text{unlabelled}} -\mathcal{U}(x_n) + \sum_{\text{labelled}}
        \big(-\mathcal{L}(x_n, y_n) + a \log q(y_n | x_n)\big),\qquad a = \texttt{aux\_weight}.

Kingma's ``alpha = 0.1 N`` multiplies the *mean* over the N_l labelled points, i.e.
``a = 0.1 N / N_l`` per labelled point: 50 for MNIST's 50,000 digits with 100 labels (Pyro's
``ss_vae_M2.py`` example uses 46); the default ``aux_weight`` is that 50. The factor exists only
when labels are given (training), so evaluation (``y=None``) scores ``log p(x)`` with ``y``
summed out or, by importance sampling, drawn from ``q(y | x)``.

:meth:`SSVAE.classify` is ``argmax_y q(y | x)``: ``pyro-vae evaluate`` reports its test accuracy
(the ``classifier`` capability, ``has_classifier``); ``pyro-vae sample RUN --label 7`` draws
``x ~ p(x | y=7, z)``, ``z ~ p(z)``; :meth:`SSVAE.analogies` decodes each image's ``z`` with
every class (Kingma's figure 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from torch.nn import functional as F

from pyro_vae.errors import DataError, check_choice, check_number, check_positive
from pyro_vae.models.base import LatentModel
from pyro_vae.models.labels import PartlyLabelled
from pyro_vae.models.likelihoods import LIKELIHOODS, PixelLikelihood, decoder_outputs
from pyro_vae.nn import MLP, Decoder, check_network

KNOWN_LOGIT = -1.0e4  # q(y | x) off a known label: exp(-1e4) is exactly 0 in float32


@dataclass
class SSVAEConfig:
    latent_dim: int = 50
    hidden: tuple[int, ...] = (500,)
    activation: str = "softplus"
    num_classes: int = 10
    aux_weight: float = 50.0
    likelihood: str = "bernoulli"

    def __post_init__(self) -> None:
        check_network(self)
        check_positive("num_classes", self.num_classes)
        check_number("aux_weight", self.aux_weight, minimum=0.0)
        check_choice("likelihood", self.likelihood, LIKELIHOODS)


class SSVAE(PartlyLabelled, PixelLikelihood, LatentModel):
    """M2: a class y (enumerated where unknown) and a style z generate x; q(y|x) classifies."""

    name = "ssvae"
    config_class = SSVAEConfig
    latent_sites = ("y", "z")
    has_discrete_latents = True
    default_objective = "enum"
    data_kinds = ("image", "real")  # images (C, H, W) or real vectors (D,), e.g. M1's codes

    def __init__(self, config: SSVAEConfig, data_shape: tuple[int, ...]):
        super().__init__(config, data_shape)
        c = config
        self._event_ndim = len(data_shape)
        self.num_classes = c.num_classes
        pixels = int(torch.Size(data_shape).numel())
        for name, param in self.likelihood.parameters(self.data_shape).items():
            setattr(self, name, param)
        self.classifier = MLP(pixels, c.hidden, c.num_classes, c.activation)
        self.encoder = MLP(pixels + c.num_classes, c.hidden, 2 * c.latent_dim, c.activation)
        self.decoder = Decoder(c.latent_dim + c.num_classes, c.hidden,
                               decoder_outputs(c.likelihood, data_shape), c.activation)

    # -- the networks ----------------------------------------------------------------------
    def _onehot(self, y: torch.Tensor) -> torch.Tensor:
        classes = torch.arange(self.num_classes, device=y.device)
        return (y.long().unsqueeze(-1) == classes).to(torch.get_default_dtype())

    def class_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of q(y | x), shape (N, C)."""
        return self.classifier(x.flatten(1))

    def _z_params(self, x: torch.Tensor, onehot: torch.Tensor):
        """loc, scale of q(z | x, y) for x (N, ...) and onehot (..., N or 1, C), broadcast: an
        enumerated or particle-batched y gives z of shape (..., N, latent_dim)."""
        h = x.flatten(1)
        lead = torch.broadcast_shapes(h.shape[:-1], onehot.shape[:-1])
        h = torch.cat([h.expand(*lead, h.shape[-1]), onehot.expand(*lead, onehot.shape[-1])], -1)
        loc, raw = self.encoder(h).split(self.config.latent_dim, -1)
        return loc, F.softplus(raw) + 1e-4

    def _decode(self, z: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
        lead = torch.broadcast_shapes(z.shape[:-1], onehot.shape[:-1])
        return self.decoder(torch.cat([z.expand(*lead, z.shape[-1]),
                                       onehot.expand(*lead, onehot.shape[-1])], -1))

    # -- the two programs ----------------------------------------------------------------------
    def model(self, x, y=None, num_data=None):
        pyro.module(self.name, self)
        known = self._known(x, y)
        C = self.num_classes
        with self.data_plate(x, num_data):
            label = pyro.sample("y", dist.Categorical(logits=x.new_zeros(x.shape[0], C)))
            prior = x.new_zeros(x.shape[0], self.config.latent_dim)
            z = pyro.sample("z", dist.Normal(prior, torch.ones_like(prior)).to_event(1))
            out = self._decode(z, self._onehot(label))
            pyro.sample("x", self.likelihood.dist(out, self).to_event(self._event_ndim), obs=x)
            if known is not None and self.config.aux_weight > 0:
                self.class_factor("y_aux", self.config.aux_weight, x, y, known)

    def guide(self, x, y=None, num_data=None):
        pyro.module(self.name, self)
        known = self._known(x, y)
        logits = self.class_logits(x)
        if known is not None:  # the point mass at a known label
            point = KNOWN_LOGIT * (1.0 - self._onehot(y.clamp(min=0)))
            logits = torch.where(known.unsqueeze(-1), point, logits)
        with self.data_plate(x, num_data):
            label = pyro.sample("y", dist.Categorical(logits=logits),
                                infer={"enumerate": "parallel"})
            loc, scale = self._z_params(x, self._onehot(label))
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    # -- the pictures ------------------------------------------------------------------------
    def _labels(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """The given labels where known, else the classifier's."""
        guess = self.class_logits(x).argmax(-1)
        return guess if y is None else torch.where(y >= 0, y.long(), guess)

    def encode(self, x, y=None):
        """loc, scale of q(z | x, y), y the given label or else the classifier's guess."""
        return self._z_params(x, self._onehot(self._labels(x, y)))

    @torch.no_grad()
    def sample(self, num, y=None):
        """Images of labels ``y`` (default 0, 1, 2, ... in turn), z ~ p(z)."""
        if y is None:
            y = torch.arange(num, device=self.device) % self.num_classes
        y = torch.as_tensor(y, device=self.device).expand(num)
        if bool(((y < 0) | (y >= self.num_classes)).any()):
            raise DataError(f"ssvae labels must be integers in 0..{self.num_classes - 1}")
        z = torch.randn(num, self.config.latent_dim, device=self.device)
        return self.likelihood.mean(self._decode(z, self._onehot(y)), self)

    @torch.no_grad()
    def reconstruct(self, x, y=None):
        onehot = self._onehot(self._labels(x, y))
        return self.likelihood.mean(self._decode(self._z_params(x, onehot)[0], onehot), self)

    @torch.no_grad()
    def analogies(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, ...) images: row n decodes the mean of q(z | x_n, y_hat_n) with every class."""
        z = self.encode(x)[0]
        classes = self._onehot(torch.arange(self.num_classes, device=x.device))
        return self.likelihood.mean(self._decode(z.unsqueeze(1), classes), self)

    def check_data(self, x, what="data"):
        super().check_data(x, what)
        self.likelihood.check(x, what)
