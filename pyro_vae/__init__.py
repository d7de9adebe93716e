"""pyro_vae: latent-variable generative models as Pyro model/guide pairs.

The pieces, one concept a module: :mod:`~pyro_vae.models` (model/guide pairs and their
registry), :mod:`~pyro_vae.nn` (building blocks), :mod:`~pyro_vae.objectives` (ELBOs by name),
:mod:`~pyro_vae.data`, :mod:`~pyro_vae.train` (the SVI loop), :mod:`~pyro_vae.importance`
(importance-sampled bounds on log p(x)), :mod:`~pyro_vae.evaluate` (test metrics, active
units), :mod:`~pyro_vae.plots`, :mod:`~pyro_vae.testing`
(``check_model_guide``) and :mod:`~pyro_vae.cli`.
"""

__version__ = "0.1.0"

from pyro_vae.data import Dataset, load_dataset  # noqa: E402
from pyro_vae.errors import UserError  # noqa: E402
from pyro_vae.evaluate import evaluate  # noqa: E402
from pyro_vae.importance import importance_bounds, log_weights  # noqa: E402
from pyro_vae.models import MODELS, LatentModel, build_model  # noqa: E402
from pyro_vae.objectives import IWAE_ELBO, make_objective  # noqa: E402
from pyro_vae.runs import RunFolder, load_trained  # noqa: E402
from pyro_vae.runtime import set_seed  # noqa: E402
from pyro_vae.train import TrainConfig, train  # noqa: E402

__all__ = [
    "Dataset", "IWAE_ELBO", "LatentModel", "MODELS", "RunFolder", "TrainConfig", "UserError",
    "build_model", "evaluate", "importance_bounds", "load_dataset", "load_trained",
    "log_weights", "make_objective", "set_seed", "train",
]
