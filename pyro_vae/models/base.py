"""The model/guide contract every model in :mod:`pyro_vae.models` follows.

A model is a :class:`torch.nn.Module` with two Pyro programs over the same sample sites::

    model(x, y=None, num_data=None)   # p(z) p(x | z): the prior and the likelihood
    guide(x, y=None, num_data=None)   # q(z | x): the amortized posterior

Everything else (objectives, training, evaluation, pictures, the CLI) takes *any* such module
and never asks which one it is; it reads only the class attributes below.

Rules a new pair follows (``pyro_vae.testing.check_model_guide`` checks them):

* every learnable parameter lives in the module (``nn.Parameter`` or sub-modules) and both
  programs call ``pyro.module(self.name, self)``, so a checkpoint is the module's ``state_dict``;
* the data points are a plate named ``"data"`` made by :meth:`LatentModel.data_plate`, which
  scales log-densities by ``num_data / len(x)`` when ``x`` is a minibatch of a data set of
  ``num_data`` points, so the ELBO of a minibatch is an unbiased estimate of the full-data ELBO;
* every sample site sits inside that plate, so per-data-point bounds (IWAE, log p(x)) exist
  (a global latent outside it trains, but ``pyro_vae.evaluate`` refuses it);
* the observed site is named :attr:`observed_site` and its value is ``x``.
"""

from __future__ import annotations

import abc
import math
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import pyro
import torch
from torch import nn

from pyro_vae.errors import DataError


@dataclass
class NoSettings:
    """The config of a model without settings."""


class LatentModel(nn.Module, abc.ABC):
    """Base class of a model/guide pair.

    Capability attributes (read by the CLI, the objectives and the evaluation code):

    * ``name``: the registry name (``pyro-vae train NAME``) and the prefix under which
      ``pyro.module(self.name, self)`` registers the parameters; defaults to the class name in
      lower case;
    * ``config_class``: a ``@dataclass`` of the model's settings; each field is also a
      ``pyro-vae train`` flag, parsed by the field's type (default: no settings);
    * ``observed_site`` / ``latent_sites``: the sample sites of the model;
    * ``has_discrete_latents``: True when a latent is not reparameterizable;
    * ``default_objective``: what ``pyro-vae train`` uses when no ``--objective`` is given
      (``enum`` for a mixture whose assignment is summed out, ``tracegraph`` for Bernoulli
      latents, ``trace`` otherwise);
    * ``is_conditional``: True when ``model``/``guide`` use the label ``y``;
    * ``max_plate_nesting``: how many plates (batch dims) the model nests;
    * ``data_kinds``: ``"image"`` (grey values or binary in [0, 1]) and/or ``"real"``;
    * ``discrete_likelihood``: True when p(x | z) is a probability mass over the data's values
      (Bernoulli pixels, the discretized logistic of 8-bit pixels), so that
      ``-log p(x) / (D ln 2)`` is bits per dimension; a model whose likelihood is a setting
      makes it a property. ``scored_dims`` is that D: the values per data point the likelihood
      scores (all of them unless some are masked out).
    """

    name: ClassVar[str] = "latent_model"
    config_class: ClassVar[type] = NoSettings
    observed_site: ClassVar[str] = "x"
    latent_sites: ClassVar[tuple[str, ...]] = ("z",)
    has_discrete_latents: ClassVar[bool] = False
    default_objective: ClassVar[str] = "trace"
    is_conditional: ClassVar[bool] = False
    max_plate_nesting: ClassVar[int] = 1
    data_kinds: ClassVar[tuple[str, ...]] = ("image", "real")
    discrete_likelihood: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = cls.__name__.lower()

    def __init__(self, config: Any, data_shape: tuple[int, ...]):
        super().__init__()
        self.config = config
        self.data_shape = tuple(data_shape)

    # -- the two programs -------------------------------------------------------------------
    @abc.abstractmethod
    def model(self, x: torch.Tensor, y: torch.Tensor | None = None,
              num_data: int | None = None) -> None:
        """The generative program p(z) p(x | z), observing ``x``."""

    @abc.abstractmethod
    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None,
              num_data: int | None = None) -> None:
        """The amortized posterior q(z | x) over every latent site of :meth:`model`."""

    # -- what pictures and diagnostics use --------------------------------------------------
    @abc.abstractmethod
    def sample(self, num: int, y: torch.Tensor | None = None) -> torch.Tensor:
        """``num`` new data points: the likelihood's mean at z ~ p(z)."""

    @abc.abstractmethod
    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor,
                                                                              torch.Tensor]:
        """Location and scale of q(z | x) for each data point."""

    @abc.abstractmethod
    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The likelihood's mean at the posterior mean of z."""

    def check_data(self, x: torch.Tensor, what: str = "data") -> None:
        """Raise :class:`DataError` if ``x`` is outside what the likelihood can score."""
        if tuple(x.shape[1:]) != self.data_shape:
            raise DataError(f"{what} has points of shape {tuple(x.shape[1:])}, the model was "
                            f"built for {self.data_shape}")
        if not torch.isfinite(x).all():
            raise DataError(f"{what} holds NaN or infinite values")

    @property
    def scored_dims(self) -> int:
        """D of bits per dimension: the data values per point the likelihood scores."""
        return math.prod(self.data_shape)

    # -- helpers for subclasses -------------------------------------------------------------
    def data_plate(self, x: torch.Tensor, num_data: int | None = None) -> pyro.plate:
        """The plate over data points, scaled to a data set of ``num_data`` points."""
        n = x.shape[0]
        if num_data is None or num_data == n:
            return pyro.plate("data", n, device=x.device)
        return pyro.plate("data", num_data, subsample=torch.arange(n, device=x.device))

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @classmethod
    def make_config(cls, **overrides: Any) -> Any:
        """The model's config with ``overrides``, each typed by its field; an unknown setting
        is a :class:`ConfigError` naming the known ones."""
        from pyro_vae.settings import build_config

        return build_config(cls.config_class, overrides, f"model {cls.name}", "settings")

    def config_dict(self) -> dict[str, Any]:
        return asdict(self.config)
