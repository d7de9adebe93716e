"""pyro_vae: latent-variable generative models as Pyro model/guide pairs.

The pieces, one concept a module (docs/architecture.md): :mod:`~pyro_vae.models` (model/guide
pairs and their registry), :mod:`~pyro_vae.nn` (building blocks), :mod:`~pyro_vae.objectives`
(the objective registry), :mod:`~pyro_vae.data`, :mod:`~pyro_vae.train` (the SVI loop and its
hooks), :mod:`~pyro_vae.importance` (importance-sampled bounds on log p(x)),
:mod:`~pyro_vae.evaluate` and :mod:`~pyro_vae.metrics` (test metrics, active units; the metrics
registry), :mod:`~pyro_vae.run_config` and :mod:`~pyro_vae.runner` (the run layer),
:mod:`~pyro_vae.plots`, :mod:`~pyro_vae.testing` (``check_model_guide``) and
:mod:`~pyro_vae.cli`.
"""

__version__ = "0.1.0"

from pyro_vae.data import Dataset, load_dataset  # noqa: E402
from pyro_vae.errors import UserError  # noqa: E402
from pyro_vae.evaluate import evaluate  # noqa: E402
from pyro_vae.importance import importance_bounds, log_weights  # noqa: E402
from pyro_vae.models import MODELS, LatentModel, build_model  # noqa: E402
from pyro_vae.models.registry import register_model  # noqa: E402
from pyro_vae.objectives import IWAE_ELBO, make_objective  # noqa: E402
from pyro_vae.run_config import EvalConfig, RunConfig  # noqa: E402
from pyro_vae.runner import evaluate_run, finish, load_trained, open_run, resume, run  # noqa
from pyro_vae.runs import RunFolder  # noqa: E402
from pyro_vae.runtime import set_seed  # noqa: E402
from pyro_vae.train import TrainConfig, train  # noqa: E402

__all__ = [
    "Dataset", "EvalConfig", "IWAE_ELBO", "LatentModel", "MODELS", "RunConfig", "RunFolder",
    "TrainConfig", "UserError", "build_model", "evaluate", "evaluate_run", "finish",
    "importance_bounds", "load_dataset", "load_trained", "log_weights", "make_objective",
    "open_run", "register_model", "resume", "run", "set_seed", "train",
]
