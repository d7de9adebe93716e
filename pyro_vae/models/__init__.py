"""Model/guide pairs, one per file, and the registry the CLI reads.

Adding a model: write ``pyro_vae/models/NAME.py`` with a :class:`LatentModel` subclass and a
config dataclass, then add one line to :data:`MODELS`.
"""

from __future__ import annotations

from typing import Any

from pyro_vae.errors import check_choice
from pyro_vae.models.autoencoder import Autoencoder, DenoisingAutoencoder
from pyro_vae.models.base import LatentModel
from pyro_vae.models.bernoulli import BernoulliConfig, BernoulliLatent
from pyro_vae.models.cvae import CVAE
from pyro_vae.models.gmm import GMM, GMMConfig
from pyro_vae.models.hierarchical import HierarchicalVAE
from pyro_vae.models.linear import LinearGaussian, LinearGaussianConfig
from pyro_vae.models.vae import VAE, VAEConfig

MODELS: dict[str, type[LatentModel]] = {
    "vae": VAE,
    "linear": LinearGaussian,
    "bernoulli": BernoulliLatent,
    "gmm": GMM,
    "ae": Autoencoder,
    "dae": DenoisingAutoencoder,
    "hvae": HierarchicalVAE,
    "cvae": CVAE,
}


def get_model_class(name: str) -> type[LatentModel]:
    check_choice("model", name, MODELS)
    return MODELS[name]


def build_model(name: str, data_shape: tuple[int, ...], **settings: Any) -> LatentModel:
    """Build a registered model for data points of ``data_shape`` with the given settings."""
    cls = get_model_class(name)
    return cls(cls.make_config(**settings), data_shape)


__all__ = ["MODELS", "LatentModel", "VAE", "VAEConfig", "LinearGaussian",
           "LinearGaussianConfig", "build_model", "get_model_class", "BernoulliLatent",
           "BernoulliConfig", "GMM", "GMMConfig", "Autoencoder", "DenoisingAutoencoder",
           "HierarchicalVAE", "CVAE"]
