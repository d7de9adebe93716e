r"""Conditional VAE (Sohn, Lee & Yan 2015) for two tasks, chosen by ``task``.

``task="label"`` -- label-conditioned generation; ``y`` is the class label::

    z_n ~ N(0, I)
    x_n | z_n, y_n ~ Bernoulli(sigmoid(f([z_n, onehot(y_n)])))
    q(z_n | x_n, y_n) = N(mu([x_n, onehot(y_n)]), diag s([x_n, onehot(y_n)])^2)

``pyro-vae sample RUN --label 7`` draws x ~ p(x | z, y=7), z ~ p(z).

``task="quadrants"`` -- complete an image from ``observed_quadrants`` (1, 2 or 3) of its four
quadrants (the task of Pyro's CVAE tutorial). With ``o`` the observed pixels (the rest set to
-1, as the tutorial does) and ``m`` the missing ones::

    z_n | o_n ~ N(mu_p(o_n), diag s_p(o_n)^2)                 the prior network
    m_n | z_n, o_n ~ Bernoulli(sigmoid(f([z_n, o_n])))         scored on missing pixels only
    q(z_n | x_n) = N(mu_q(x_n), diag s_q(x_n)^2)               the guide sees the whole image

The observed site ``x`` is the whole image with the observed pixels masked out of the
likelihood (``Bernoulli(...).mask(missing)``), so the ELBO and the importance-sampled
"log-likelihood" of ``pyro_vae.evaluate`` are bounds on and estimates of log p(m | o), the
conditional log-likelihood of the missing quadrants. Which quadrants are observed is fixed by
the config (1: top-left; 2: top half; 3: all but bottom-right), one model per number, as in
the tutorial; the label ``y`` is not used (``is_conditional`` is False for this task).

The pixels' likelihood is a setting (``--likelihood``: bernoulli by default, gaussian, or the
discretized logistic of 8-bit colour pixels), an entry of
:data:`pyro_vae.models.likelihoods.LIKELIHOODS`, as for vae.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch

from pyro_vae.errors import ConfigError, DataError, check_choice, check_positive
from pyro_vae.models.base import LatentModel
from pyro_vae.models.likelihoods import LIKELIHOODS, PixelLikelihood, decoder_outputs
from pyro_vae.nn import ARCHS, GaussianHead, check_network, decoder_net

TASKS = ("label", "quadrants")
QUADRANT_ORDER = ((0, 0), (0, 1), (1, 0), (1, 1))  # (row, col): top-left, top-right, bottom-left


@dataclass
class CVAEConfig:
    latent_dim: int = 2  # small, so the class stays in y (see docs/cvae.md)
    hidden: tuple[int, ...] = (500,)
    activation: str = "relu"
    task: str = "label"
    num_classes: int = 10
    observed_quadrants: int = 1
    arch: str = "mlp"
    likelihood: str = "bernoulli"

    def __post_init__(self) -> None:
        check_network(self)
        check_choice("task", self.task, TASKS)
        check_choice("arch", self.arch, ARCHS)
        check_choice("likelihood", self.likelihood, LIKELIHOODS)
        check_positive("num_classes", self.num_classes)
        if self.observed_quadrants not in (1, 2, 3):
            raise ConfigError(f"observed_quadrants must be 1, 2 or 3, got "
                              f"{self.observed_quadrants}")


def quadrant_mask(shape: tuple[int, ...], observed: int) -> torch.Tensor:
    """Boolean mask of ``shape`` (C, H, W), True on the first ``observed`` quadrants."""
    _, h, w = shape
    mask = torch.zeros(shape, dtype=torch.bool)
    for r, c in QUADRANT_ORDER[:observed]:
        mask[:, r * h // 2:(r + 1) * h // 2 if r == 0 else h,
             c * w // 2:(c + 1) * w // 2 if c == 0 else w] = True
    return mask


class CVAE(PixelLikelihood, LatentModel):
    """Conditional VAE: label-conditioned generation or quadrant completion (``task``)."""

    name = "cvae"
    config_class = CVAEConfig
    is_conditional = True  # per instance: False for the quadrant task
    data_kinds = ("image",)

    def __init__(self, config: CVAEConfig, data_shape: tuple[int, ...]):
        super().__init__(config, data_shape)
        c = config
        if len(data_shape) != 3:
            raise DataError(f"cvae takes images (C, H, W), got points of shape {data_shape}")
        self.is_conditional = c.task == "label"
        self.num_classes = c.num_classes if self.is_conditional else None
        pixels = int(torch.Size(data_shape).numel())
        out_shape = decoder_outputs(c.likelihood, data_shape)
        for name, param in self.likelihood.parameters(self.data_shape).items():
            setattr(self, name, param)
        if self.is_conditional:
            self.encoder = GaussianHead(c.arch, data_shape, c.hidden, c.latent_dim, c.activation,
                                        extra_dim=c.num_classes)
            self.decoder = decoder_net(c.arch, c.latent_dim + c.num_classes, c.hidden,
                                       out_shape, c.activation)
        else:
            self.register_buffer("observed", quadrant_mask(data_shape, c.observed_quadrants))
            self.encoder = GaussianHead(c.arch, data_shape, c.hidden, c.latent_dim, c.activation)
            self.prior_net = GaussianHead(c.arch, data_shape, c.hidden, c.latent_dim,
                                          c.activation)
            self.decoder = decoder_net(c.arch, c.latent_dim + pixels, c.hidden, out_shape,
                                       c.activation)

    @property
    def scored_dims(self) -> int:
        """The quadrant task scores the missing pixels only."""
        if self.is_conditional:
            return super().scored_dims
        return int((~self.observed).sum())

    # -- helpers -------------------------------------------------------------------------------
    def check_labels(self, y: torch.Tensor | None, n: int, what: str = "cvae labels") -> None:
        """Raise :class:`DataError` unless ``y`` holds ``n`` labels in 0..num_classes-1 (reads
        the values back: called once per data set by ``train.check_data``, and by
        :meth:`sample` and :meth:`reconstruct`, not by the programs at every step)."""
        if not self.is_conditional:
            return
        if y is None:
            raise DataError("the label-conditioned cvae needs labels y (a data set with labels)")
        c = self.config.num_classes
        if tuple(y.shape) != (n,) or bool(((y < 0) | (y >= c)).any()):
            raise DataError(f"{what} must be {n} integers in 0..{c - 1}")

    def _onehot(self, y: torch.Tensor | None, n: int) -> torch.Tensor:
        """One-hot labels; only the shape is checked here (no host read: this runs at every
        step), the values were checked with the data (:meth:`check_labels`)."""
        if y is None:
            raise DataError("the label-conditioned cvae needs labels y (a data set with labels)")
        if tuple(y.shape) != (n,):
            raise DataError(f"cvae labels must be {n} integers in 0..{self.config.num_classes - 1}")
        classes = torch.arange(self.config.num_classes, device=y.device)
        return (y.long().unsqueeze(-1) == classes).to(torch.get_default_dtype())

    def _observed_part(self, x: torch.Tensor) -> torch.Tensor:
        """The observed quadrants, -1 elsewhere (the tutorial's convention)."""
        return torch.where(self.observed, x, -torch.ones_like(x))

    def _logits(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.decoder(torch.cat([z, cond.expand(*z.shape[:-1], cond.shape[-1])], -1))

    def _condition(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        if self.is_conditional:
            return self._onehot(y, x.shape[0])
        return self._observed_part(x).flatten(1)

    # -- the two programs ----------------------------------------------------------------------
    def model(self, x, y=None, num_data=None):
        pyro.module(self.name, self)
        cond = self._condition(x, y)
        with self.data_plate(x, num_data):
            if self.is_conditional:
                loc = x.new_zeros(x.shape[0], self.config.latent_dim)
                scale = torch.ones_like(loc)
            else:
                loc, scale = self.prior_net(self._observed_part(x))
            z = pyro.sample("z", dist.Normal(loc, scale).to_event(1))
            px = self.likelihood.dist(self._logits(z, cond), self)
            if not self.is_conditional:
                px = px.mask(~self.observed)
            pyro.sample("x", px.to_event(3), obs=x)

    def guide(self, x, y=None, num_data=None):
        pyro.module(self.name, self)
        loc, scale = self.encode(x, y)
        with self.data_plate(x, num_data):
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    # -- pictures ------------------------------------------------------------------------------
    def encode(self, x, y=None):
        if self.is_conditional:
            return self.encoder(x, self._onehot(y, x.shape[0]))
        return self.encoder(x)

    @torch.no_grad()
    def sample(self, num, y=None):
        """Label task: images of labels ``y`` (default 0, 1, 2, ... in turn). Quadrant task:
        completions of the images ``y`` (default blank), z drawn from the prior network."""
        if self.is_conditional:
            if y is None:
                y = torch.arange(num, device=self.device) % self.config.num_classes
            y = torch.as_tensor(y, device=self.device).expand(num)
            self.check_labels(y, num)
            z = torch.randn(num, self.config.latent_dim, device=self.device)
            return self.likelihood.mean(self._logits(z, self._onehot(y, num)), self)
        x = torch.zeros(num, *self.data_shape, device=self.device) if y is None else y[:num]
        loc, scale = self.prior_net(self._observed_part(x))
        z = loc + scale * torch.randn_like(loc)
        return self._complete(x, z)

    def _complete(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        mean = self.likelihood.mean(self._logits(z, self._observed_part(x).flatten(1)), self)
        return torch.where(self.observed, x, mean)

    @torch.no_grad()
    def reconstruct(self, x, y=None):
        """Label task: through q(z | x, y) (labels required). Quadrant task: the completion at
        the prior network's mean, observed pixels kept (what the tutorial's pictures show)."""
        if self.is_conditional:
            self.check_labels(y, x.shape[0])
            cond = self._onehot(y, x.shape[0])
            return self.likelihood.mean(self._logits(self.encoder(x, cond)[0], cond), self)
        return self._complete(x, self.prior_net(self._observed_part(x))[0])

    def check_data(self, x, what="data"):
        super().check_data(x, what)
        self.likelihood.check(x, what)
