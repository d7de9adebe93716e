r"""The stacked autoencoder, trained greedily layer by layer (Bengio et al. 2007; Vincent et
al. 2010), as a model/guide pair with a point-mass guide.

Layer sizes :math:`s_0 = D, s_1, \dots, s_L` (``hidden`` then ``latent_dim``); layer
:math:`l` is an encoder :math:`e_l: \mathbb{R}^{s_{l-1}} \to \mathbb{R}^{s_l}` and a decoder
:math:`d_l: \mathbb{R}^{s_l} \to \mathbb{R}^{s_{l-1}}` (one affine map and the activation each;
the top code and the data logits are affine only). With :math:`h_0 = x` and
:math:`h_l = e_l(h_{l-1})`, the ``stage`` setting says what one run trains:

* ``stage = l`` (1 ≤ l ≤ L), greedy: only the pair :math:`(e_l, d_l)` is trained, to
  reconstruct the *frozen* code :math:`h_{l-1}` of the layers below,
  :math:`\min \sum_n \ell_l(h_{l-1,n}, d_l(e_l(h_{l-1,n})))` with :math:`\ell_1` the data loss
  (BCE or MSE) and :math:`\ell_{l \ge 2}` the squared error of the code. The pair is the only
  module the programs register (``pyro.module``), so the optimizer sees no other parameter;
  the other layers' parameters are frozen (``requires_grad=False``) and the layers below run
  under ``torch.no_grad``. The code is :math:`z = h_l`;
* ``stage = 0``, end to end (fine-tuning): every layer, :math:`\min \sum_n
  \ell_1(x_n, d_1(\cdots d_L(e_L(\cdots e_1(x_n)))))`; the code is :math:`z = h_L`.

The greedy schedule is a sequence of runs, each a run folder started from the weights of the
previous one (``RunConfig.init_from``), driven by :func:`pyro_vae.pretraining.greedy_pretrain`.
As a pair, stage :math:`l \ge 2` observes the frozen code at the site ``"code"``
(``Normal(d_l(z), 1/sqrt 2)``: minus the squared error up to a constant); the data site ``"x"``
is there (observing ``x`` through every decoder) but masked, so the "bounds" ``evaluate``
reports for such a run are minus the code loss of that stage.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import nn

from pyro_vae.errors import ConfigError
from pyro_vae.models.autoencoder import MSE_SCALE, AEConfig, Autoencoder
from pyro_vae.models.base import LatentModel
from pyro_vae.nn import activation


@dataclass
class StackedConfig(AEConfig):
    hidden: tuple[int, ...] = (400, 200)
    stage: int = 0  # 0: all layers end to end; l: greedy stage l (1 .. len(hidden) + 1)

    def __post_init__(self) -> None:
        super().__post_init__()
        layers = len(self.hidden) + 1
        if isinstance(self.stage, bool) or not isinstance(self.stage, int) \
                or not 0 <= self.stage <= layers:
            raise ConfigError(f"stage must be 0 (end to end) or a layer 1 to {layers}, got "
                              f"{self.stage!r}")


def _layer(a: int, b: int, act: str | None) -> nn.Module:
    return nn.Linear(a, b) if act is None else nn.Sequential(nn.Linear(a, b), activation(act))


class StackedAutoencoder(Autoencoder):
    """Stacked autoencoder: one encoder/decoder pair per layer, trained a stage at a time."""

    name = "stacked"
    config_class = StackedConfig

    def __init__(self, config: StackedConfig, data_shape: tuple[int, ...]):
        LatentModel.__init__(self, config, data_shape)
        c = config
        self._event_ndim = len(data_shape)
        self.sizes = (int(torch.Size(data_shape).numel()), *c.hidden, c.latent_dim)
        top = len(self.sizes) - 2
        self.layers = nn.ModuleList(nn.ModuleDict({
            "encoder": _layer(a, b, None if i == top else c.activation),
            "decoder": _layer(b, a, None if i == 0 else c.activation)})
            for i, (a, b) in enumerate(zip(self.sizes[:-1], self.sizes[1:], strict=True)))
        for i, layer in enumerate(self.layers):  # a greedy stage trains its own pair only
            layer.requires_grad_(c.stage in (0, i + 1))

    @staticmethod
    def greedy_stages(config: StackedConfig) -> int:
        """The number of greedy stages (layers): :mod:`pyro_vae.pretraining` reads it."""
        return len(config.hidden) + 1

    @property
    def depth(self) -> int:
        """The layer whose code ``z`` is: the stage's, or the top one end to end."""
        return self.config.stage or len(self.layers)

    def _register(self) -> None:
        stage = self.config.stage
        if stage == 0:
            pyro.module(self.name, self)
        else:  # only the trained pair: the optimizer never sees the frozen layers
            pyro.module(f"{self.name}.layer{stage}", self.layers[stage - 1])

    def _up(self, x: torch.Tensor, depth: int) -> torch.Tensor:
        h = x.flatten(-self._event_ndim)
        for layer in self.layers[:depth]:
            h = layer["encoder"](h)
        return h

    def _frozen(self, x: torch.Tensor) -> torch.Tensor:
        """The code of the layers below the trained one: the input of this stage."""
        with torch.no_grad():
            return self._up(x, self.config.stage - 1)

    def _code(self, x: torch.Tensor) -> torch.Tensor:
        if self.config.stage >= 2:
            return self.layers[self.config.stage - 1]["encoder"](self._frozen(x))
        return self._up(x, self.depth)

    def _down(self, z: torch.Tensor) -> torch.Tensor:
        for layer in reversed(self.layers[:self.depth]):
            z = layer["decoder"](z)
        return z.reshape(*z.shape[:-1], *self.data_shape)

    def model(self, x, y=None, num_data=None):
        self._register()
        stage = self.config.stage
        with self.data_plate(x, num_data):
            loc = x.new_zeros(x.shape[0], self.sizes[self.depth])
            with poutine.mask(mask=False):  # no prior term: the loss is reconstruction only
                z = pyro.sample("z", dist.Normal(loc, 1.0).to_event(1))
            if stage <= 1:
                pyro.sample("x", self._likelihood(self._down(z)), obs=x)
                return
            code = self.layers[stage - 1]["decoder"](z)
            pyro.sample("code", dist.Normal(code, MSE_SCALE).to_event(1), obs=self._frozen(x))
            with poutine.mask(mask=False):  # the data, decoded through every layer: no loss
                pyro.sample("x", self._likelihood(self._down(z)), obs=x)

    def guide(self, x, y=None, num_data=None):
        self._register()
        code = self._code(x)
        with self.data_plate(x, num_data):
            pyro.sample("z", dist.Delta(code).to_event(1))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        out = self._down(z)
        return torch.sigmoid(out) if self.config.likelihood == "bernoulli" else out

    @torch.no_grad()
    def sample(self, num, y=None):
        """Decoded random codes z ~ N(0, I) -- not samples of a generative model."""
        return self.decode(torch.randn(num, self.sizes[self.depth], device=self.device))
