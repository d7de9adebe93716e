"""pyro_vae: latent-variable generative models as Pyro model/guide pairs.

The pieces, one concept a module (docs/architecture.md): :mod:`~pyro_vae.models` (model/guide
pairs and their registry), :mod:`~pyro_vae.nn` (building blocks), :mod:`~pyro_vae.objectives`
(the objective registry), :mod:`~pyro_vae.data`, :mod:`~pyro_vae.train` (the SVI loop and its
hooks), :mod:`~pyro_vae.distributions` (of 8-bit pixels), :mod:`~pyro_vae.importance`
(importance-sampled bounds on log p(x)),
:mod:`~pyro_vae.evaluate` and :mod:`~pyro_vae.metrics` (test metrics, active units; the metrics
registry), :mod:`~pyro_vae.run_config` and :mod:`~pyro_vae.runner` (the run layer),
:mod:`~pyro_vae.plots`, :mod:`~pyro_vae.testing` (``check_model_guide``) and
:mod:`~pyro_vae.cli`.

The names below are imported on first use (PEP 562), so ``import pyro_vae`` is quick and the
``pyro-vae`` command (:mod:`pyro_vae.console`) can answer Ctrl-C during its own imports.
"""

import sys
import types

__version__ = "0.1.0"

_PUBLIC = {  # name -> the module that defines it
    "DataConfig": "data", "Dataset": "data", "load_dataset": "data",
    "DequantizedNormal": "distributions", "DiscretizedLogistic": "distributions",
    "UserError": "errors",
    "evaluate": "evaluate",
    "importance_bounds": "importance", "log_weights": "importance",
    "MODELS": "models", "LatentModel": "models", "build_model": "models",
    "LIKELIHOODS": "models.likelihoods",
    "register_model": "models.registry",
    "IWAE_ELBO": "objectives", "make_objective": "objectives",
    "EvalConfig": "run_config", "RunConfig": "run_config",
    "evaluate_run": "runner", "finish": "runner", "load_trained": "runner",
    "open_run": "runner", "resume": "runner", "run": "runner",
    "RunFolder": "runs",
    "set_seed": "runtime",
    "TrainConfig": "train", "train": "train",
}
__all__ = sorted(_PUBLIC)


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value) -> None:
        # importing a submodule binds it to the package: where a public function has its
        # module's name (train, evaluate), ``pyro_vae.NAME`` stays the function
        if isinstance(value, types.ModuleType) and _PUBLIC.get(name) == name:
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str):
    import importlib

    if name not in _PUBLIC:
        raise AttributeError(f"module 'pyro_vae' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"pyro_vae.{_PUBLIC[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
