"""A run's settings as one value: :class:`RunConfig` <-> ``config.json``.

A run is what ``pyro-vae train`` or any example starts: a model (a spec, see
:mod:`pyro_vae.models.registry`, and its settings), a data set and its binarization, the
training settings (:class:`~pyro_vae.train.TrainConfig`) and the evaluation settings
(:class:`EvalConfig`). :meth:`RunConfig.to_json` writes every one of them into the run folder;
:meth:`RunConfig.from_json` reads them back and is the one place where folders written by older
versions are migrated (:func:`migrate`). Every value is checked where it is read, with one line
naming the field.
"""

from __future__ import annotations

import typing
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from pyro_vae import __version__
from pyro_vae.data import BINARIZATIONS, DataConfig, default_binarization, resolve_dataset
from pyro_vae.errors import ConfigError, RunFolderError, check_choice, check_seed
from pyro_vae.models.registry import ModelRef, from_source, resolve
from pyro_vae.settings import Setting, build_config, check_types, coerce, config_values
from pyro_vae.train import TrainConfig

DEFAULT_DATASET = "mnist-5k"
ESTIMATORS = ("is", "ais", "bdmc")  # of log p(x) in evaluation: pyro_vae.ais


@dataclass
class EvalConfig:
    """What a finished run measures (``pyro-vae train --eval-samples``; metrics registry:
    :mod:`pyro_vae.metrics`).

    ``num_samples`` importance samples per test point estimate log p(x) (0 skips the bounds);
    ``iwae_ks`` are the IWAE bounds L_k reported beside it (each must divide ``num_samples``);
    ``seed`` seeds the evaluation, so ``pyro-vae evaluate`` repeats a run's numbers exactly;
    ``pictures`` draws the run's PNGs. ``estimator`` ``ais`` adds annealed importance
    sampling of log p(x) (``ais_steps`` temperatures, ``ais_chains`` chains a point, HMC with
    ``ais_leapfrog`` steps: :mod:`pyro_vae.ais`), ``bdmc`` its bracket on ``bdmc_points``
    points simulated from the model; the default ``is`` is importance sampling alone."""

    num_samples: int = 5000
    iwae_ks: tuple[int, ...] = (5, 50)
    seed: int = 0
    pictures: bool = True
    estimator: str = "is"
    ais_steps: int = 500
    ais_chains: int = 8
    ais_leapfrog: int = 2
    bdmc_points: int = 100

    def __post_init__(self) -> None:
        from pyro_vae.evaluate import check_num_samples

        self.iwae_ks = tuple(self.iwae_ks) if isinstance(self.iwae_ks, list) else self.iwae_ks
        check_types(self, "eval")
        check_seed(self.seed, "eval seed")
        if isinstance(self.num_samples, bool) or not isinstance(self.num_samples, int) \
                or self.num_samples < 0:
            raise ConfigError(f"--eval-samples must be a whole number >= 0, got "
                              f"{self.num_samples!r}")
        self.iwae_ks = tuple(self.iwae_ks)
        if self.num_samples:  # a bad number fails now, not after training
            check_num_samples(self.num_samples, self.iwae_ks)
        check_choice("estimator", self.estimator, ESTIMATORS)
        if self.estimator != "is":
            self.ais_config()  # bad AIS settings fail now, not after training
            if self.bdmc_points < 1:
                raise ConfigError(f"--bdmc-points must be a whole number >= 1, got "
                                  f"{self.bdmc_points}")

    def ais_config(self):
        """The :class:`pyro_vae.ais.AISConfig` of these settings (checked there)."""
        from pyro_vae.ais import AISConfig

        return AISConfig(self.ais_steps, self.ais_chains, self.ais_leapfrog)


@dataclass
class RunConfig:
    """Everything a run folder's ``config.json`` holds; see the module docstring.

    ``model`` is a model spec (``vae``, ``my_pkg.models:MyVAE``, ``path/to/file.py:MyVAE``);
    ``model_config`` its settings by field name (typed by the model's config dataclass when
    the model is built); ``dataset`` a registered name or a path (kept absolute, so every
    command reopens the same files); ``binarize`` None means the data set's default (for a
    path, found when the files are read: :func:`pyro_vae.runner.build` fills it in);
    ``data`` the data options (:class:`~pyro_vae.data.DataConfig`); ``init_from`` a run
    folder (kept absolute) whose trained weights the model starts from instead of its
    initialization (a later stage of :mod:`pyro_vae.pretraining`; same architecture)."""

    model: str
    model_config: dict[str, Any] = field(default_factory=dict)
    dataset: str = DEFAULT_DATASET
    binarize: str | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    model_source: dict[str, Any] | None = None
    data: DataConfig = field(default_factory=DataConfig)
    init_from: str | None = None  # a run folder whose trained weights start this run

    def __post_init__(self) -> None:
        if self.init_from is not None:
            if not isinstance(self.init_from, str) or not self.init_from:
                raise ConfigError(f"init_from must be a run folder, got {self.init_from!r}")
            self.init_from = str(Path(self.init_from).absolute())
        if not isinstance(self.model, str) or not self.model:
            raise ConfigError(f"model must be a model spec (a non-empty string), got "
                              f"{self.model!r}")
        if self.model_source is not None and not isinstance(self.model_source, dict):
            raise ConfigError(f"model_source must be a JSON object, got {self.model_source!r}")
        if isinstance(self.data, dict):
            self.data = DataConfig.from_json(self.data)
        if not isinstance(self.data, DataConfig):
            raise ConfigError(f"data must be data options, got {self.data!r}")
        self.dataset = resolve_dataset(self.dataset).spec
        if self.binarize is None:
            self.binarize = default_binarization(self.dataset, self.data)
        if self.binarize is not None:
            check_choice("binarization", self.binarize, BINARIZATIONS)
        if not isinstance(self.model_config, dict):
            raise ConfigError(f"model_config must be a dict of settings, got "
                              f"{type(self.model_config).__name__}")

    @classmethod
    def for_model(cls, model: str, *, dataset: str = DEFAULT_DATASET,
                  binarize: str | None = None, train: TrainConfig | dict | None = None,
                  eval: EvalConfig | dict | None = None, data: DataConfig | dict | None = None,
                  **settings: Any) -> RunConfig:
        """A run of ``model`` with ``settings``; the training objective defaults to the
        model's own (``LatentModel.default_objective``) when ``train`` does not name one."""
        ref = resolve(model)
        train_values = asdict(train) if isinstance(train, TrainConfig) else dict(train or {})
        if not isinstance(train, TrainConfig) and "objective" not in train_values:
            train_values["objective"] = ref.cls.default_objective
        evaluation = eval if isinstance(eval, EvalConfig) else EvalConfig(**dict(eval or {}))
        options = data if isinstance(data, DataConfig) else DataConfig.from_json(dict(data or {}))
        config = cls(model, dict(settings), dataset, binarize, TrainConfig(**train_values),
                     evaluation, ref.source, options)
        # unknown or mistyped settings fail here; the folder records every resolved setting
        config.model_config = config_values(config.model_settings(ref))
        return config

    # -- the model -------------------------------------------------------------------------
    def model_ref(self) -> ModelRef:
        """The model class (reopened from ``model_source`` when the folder recorded one)."""
        if self.model_source is not None:
            return from_source(self.model_source, self.model)
        ref = resolve(self.model)
        self.model_source = ref.source
        return ref

    def model_settings(self, ref: ModelRef | None = None) -> Any:
        """The model's config dataclass, each setting typed by its field."""
        ref = ref or self.model_ref()
        return build_config(ref.cls.config_class, self.model_config, f"model {ref.name}",
                            "model settings")

    # -- config.json -----------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "model_source": self.model_source,
            "model_config": dict(self.model_config),
            "dataset": self.dataset,
            "binarize": self.binarize,
            "data": self.data.to_json(),
            "train": asdict(self.train),
            "eval": config_values(self.eval),
            "init_from": self.init_from,
            "pyro_vae_version": __version__,
        }

    @classmethod
    def from_json(cls, data: Any, where: str = "config.json") -> RunConfig:
        """A config read from JSON (migrated first); a bad value is a RunFolderError naming
        the file and the field."""
        data = migrate(data, where)
        try:
            train = _typed(TrainConfig, data["train"], "train")
            evaluation = _typed(EvalConfig, data.get("eval", {}), "eval")
            return cls(data["model"], data.get("model_config", {}), data["dataset"],
                       data.get("binarize"), train, evaluation, data.get("model_source"),
                       DataConfig.from_json(data.get("data", {})), data.get("init_from"))
        except ConfigError as exc:
            raise RunFolderError(f"{where}: {exc}") from None

    def with_changes(self, **changes: Any) -> RunConfig:
        return replace(self, **changes)


def _typed(config_class: type, values: Any, where: str) -> Any:
    """``config_class(**values)`` with each value coerced to its field's annotated type."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a JSON object, got {type(values).__name__}")
    hints = typing.get_type_hints(config_class)
    defaults = {f.name: f.default for f in fields(config_class)}
    unknown = sorted(set(values) - set(defaults))
    if unknown:
        raise ConfigError(f"{where} has an unknown setting {unknown[0]!r}")
    return config_class(**{name: coerce(Setting(name, hints[name], defaults[name]), value, where)
                            for name, value in values.items()})


def migrate(data: Any, where: str = "config.json") -> dict[str, Any]:
    """Bring a ``config.json`` of any earlier version to the current layout; the input is
    left untouched. Changes so far:

    * ``eval_samples`` (top level) became ``eval.num_samples``;
    * ``beta`` moved from the VAE's model settings to ``train.beta``;
    * ``model_source`` is new: without it the ``model`` name is looked up again;
    * ``data`` (the data options) is new: without it, the defaults."""
    if not isinstance(data, dict) or not {"model", "dataset", "train"} <= set(data):
        raise RunFolderError(f"{where} is not a pyro_vae run config (missing keys)")
    data = dict(data)
    if "eval_samples" in data:
        samples = data.pop("eval_samples")
        evaluation = dict(data.get("eval") or {})
        evaluation.setdefault("num_samples", samples)
        if isinstance(samples, int) and samples % 50:  # old runs reported the k that divide
            evaluation.setdefault("iwae_ks", [k for k in (5, 50) if samples % k == 0])
        data["eval"] = evaluation
    model_config = data.get("model_config")
    if isinstance(model_config, dict) and "beta" in model_config:
        ref = resolve(data["model"]) if data.get("model_source") is None else \
            from_source(data["model_source"], data["model"])
        if "beta" not in {f.name for f in fields(ref.cls.config_class)}:
            model_config = dict(model_config)
            train = dict(data.get("train") or {})
            train.setdefault("beta", model_config.pop("beta"))
            data |= {"model_config": model_config, "train": train}
    data.pop("pyro_vae_version", None)
    return data
