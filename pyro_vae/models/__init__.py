"""Model/guide pairs, one per file, and the registry the CLI reads.

Adding a model to the package: write ``pyro_vae/models/NAME.py`` with a :class:`LatentModel`
subclass and a config dataclass, then add one line to :data:`MODELS`. A model kept anywhere
else needs no line here: ``pyro-vae train path/to/file.py:Class`` or ``my_pkg.module:Class``,
an entry point of the group ``pyro_vae.models``, or :func:`register_model` from Python
(:mod:`pyro_vae.models.registry`).
"""

from __future__ import annotations

from typing import Any

from pyro_vae.models.autoencoder import Autoencoder, DenoisingAutoencoder, SparseAutoencoder
from pyro_vae.models.base import LatentModel
from pyro_vae.models.bernoulli import BernoulliConfig, BernoulliLatent
from pyro_vae.models.cvae import CVAE
from pyro_vae.models.dbvae import DBVAE
from pyro_vae.models.gmm import GMM, GMMConfig
from pyro_vae.models.hierarchical import HierarchicalVAE
from pyro_vae.models.linear import LinearGaussian, LinearGaussianConfig
from pyro_vae.models.registry import MODELS, ModelRef, available, register_model, resolve
from pyro_vae.models.ssvae import SSVAE
from pyro_vae.models.stacked import StackedAutoencoder
from pyro_vae.models.vade import VaDE, VaDEConfig
from pyro_vae.models.vae import VAE, VAEConfig
from pyro_vae.models.vqvae import VQVAE, VQVAEConfig
from pyro_vae.settings import build_config

MODELS.update({
    "vae": VAE,
    "linear": LinearGaussian,
    "bernoulli": BernoulliLatent,
    "gmm": GMM,
    "ae": Autoencoder,
    "dae": DenoisingAutoencoder,
    "hvae": HierarchicalVAE,
    "cvae": CVAE,
    "sae": SparseAutoencoder,
    "stacked": StackedAutoencoder,
    "vade": VaDE,
    "ssvae": SSVAE,
    "vqvae": VQVAE,
    "dbvae": DBVAE,
})


def get_model_class(spec: str) -> type[LatentModel]:
    """The class of a model spec: a registered or entry-point name, ``module:Class`` or
    ``path/to/file.py:Class``."""
    return resolve(spec).cls


def make_model(cls: type[LatentModel], data_shape: tuple[int, ...],
               settings: dict[str, Any] | None = None, where: str = "settings") -> LatentModel:
    """``cls(config, data_shape)`` with ``settings`` typed by the config dataclass's fields."""
    config = build_config(cls.config_class, dict(settings or {}), f"model {cls.name}", where)
    return cls(config, tuple(data_shape))


def build_model(spec: str | type[LatentModel], data_shape: tuple[int, ...],
                **settings: Any) -> LatentModel:
    """Build a model (a spec as :func:`get_model_class` takes, or a class) for data points of
    ``data_shape`` with the given settings."""
    cls = spec if isinstance(spec, type) else get_model_class(spec)
    return cls(cls.make_config(**settings), tuple(data_shape))


__all__ = ["MODELS", "LatentModel", "ModelRef", "VAE", "VAEConfig", "LinearGaussian",
           "LinearGaussianConfig", "available", "build_model", "get_model_class", "make_model",
           "register_model", "resolve", "BernoulliLatent", "BernoulliConfig", "GMM",
           "GMMConfig", "Autoencoder", "DenoisingAutoencoder", "HierarchicalVAE", "CVAE",
           "SparseAutoencoder", "StackedAutoencoder", "VaDE", "VaDEConfig", "SSVAE", "VQVAE",
           "VQVAEConfig", "DBVAE"]
