"""Where a model class comes from: the registry of names, entry points, and model specs.

A *model spec* names a :class:`~pyro_vae.models.base.LatentModel` subclass in one of four ways:

* a registered name: ``vae`` (the built-in pairs of :data:`MODELS`, and any class registered
  from Python with :func:`register_model`);
* an entry-point name: an installed package declares, in its ``pyproject.toml``,
  ``[project.entry-points."pyro_vae.models"] myvae = "my_pkg.models:MyVAE"``, and ``myvae``
  joins ``pyro-vae list``;
* a module path: ``my_pkg.models:MyVAE`` (importable from the current Python path);
* a file: ``path/to/file.py:MyVAE`` (loaded from that file).

:func:`resolve` returns a :class:`ModelRef`: the class and a JSON-able ``source`` that a run
folder's ``config.json`` keeps, so every later command (:func:`from_source`) reopens the same
class; a file or module that no longer imports is one line naming it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyro_vae.errors import ConfigError, RunFolderError, describe_exception
from pyro_vae.models.base import LatentModel

ENTRY_POINT_GROUP = "pyro_vae.models"
MODELS: dict[str, type[LatentModel]] = {}  # filled by pyro_vae.models with the built-in pairs


@dataclass(frozen=True)
class ModelRef:
    """A resolved model spec: the class and where it came from (kept in ``config.json``)."""

    cls: type[LatentModel]
    spec: str
    source: dict[str, Any]

    @property
    def name(self) -> str:
        """The model's name in messages and folder names."""
        return self.spec if self.source["kind"] in ("registry", "entry-point") else self.cls.name


def register_model(cls: type[LatentModel], name: str | None = None) -> type[LatentModel]:
    """Make ``cls`` trainable as ``pyro-vae train NAME`` in this process (``name`` defaults to
    ``cls.name``); usable as a class decorator. A run of it records where the class is
    defined (module and class), so later commands reopen it from there."""
    _check_class(cls, f"register_model({getattr(cls, '__name__', cls)!r})")
    MODELS[name or cls.name] = cls
    return cls


def entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    """The installed ``pyro_vae.models`` entry points, by name."""
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def available() -> list[str]:
    """Every name ``pyro-vae train NAME`` accepts: registered, then entry points."""
    return list(MODELS) + [n for n in entry_points() if n not in MODELS]


def _check_class(cls: Any, spec: str) -> None:
    if not (inspect.isclass(cls) and issubclass(cls, LatentModel)):
        where = _where(cls)
        raise ConfigError(f"{spec} is {where}, not a pyro_vae.LatentModel subclass; subclass "
                          "pyro_vae.LatentModel (see docs/new_model.md)")
    if inspect.isabstract(cls):
        missing = ", ".join(sorted(cls.__abstractmethods__))
        raise ConfigError(f"{spec} ({_where(cls)}) does not define {missing}")


def _where(obj: Any) -> str:
    """``ClassName (file.py:LINE)`` where that can be found."""
    name = getattr(obj, "__qualname__", type(obj).__name__)
    try:
        file = inspect.getsourcefile(obj)
        line = inspect.getsourcelines(obj)[1]
        return f"{name} ({file}:{line})"
    except (TypeError, OSError):
        return name


def _load_file(path: Path) -> Any:
    """Import a Python file as a module of its own (kept in ``sys.modules``)."""
    path = path.resolve()
    if not path.is_file():
        raise ConfigError(f"model file {path} does not exist")
    key = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    module_name = f"pyro_vae_user_{path.stem.replace('-', '_')}_{key}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"model file {path} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        raise ConfigError(f"importing model file {path} failed: {_describe(exc, path)}") from None
    return module


def _describe(exc: BaseException, path: Path | None = None) -> str:
    if isinstance(exc, SyntaxError):
        return f"SyntaxError: {exc.msg} (line {exc.lineno})"
    where = ""
    if path is not None:
        frames = [f for f in traceback.extract_tb(exc.__traceback__)
                  if Path(f.filename).resolve() == path.resolve()]
        where = f" at line {frames[-1].lineno}" if frames else ""
    return f"{describe_exception(exc)}{where}"


def _import_module(module: str, spec: str) -> Any:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and module.startswith(exc.name):
            raise ConfigError(f"model module {module!r} (from {spec!r}) is not importable: "
                              f"no module named {exc.name!r}; give a file as "
                              "path/to/file.py:Class or install the package") from None
        raise ConfigError(f"importing {module} failed: {_describe(exc)}") from None
    except Exception as exc:
        raise ConfigError(f"importing {module} failed: {_describe(exc)}") from None


def _attribute(module: Any, class_name: str, origin: str) -> Any:
    if not class_name:
        raise ConfigError(f"{origin}: name the class after the colon, e.g. {origin}:MyVAE")
    obj = module
    for part in class_name.split("."):
        if not hasattr(obj, part):
            defined = sorted(n for n, v in vars(module).items() if inspect.isclass(v)
                             and issubclass(v, LatentModel) and v.__module__ == module.__name__)
            hint = (f"; it defines {', '.join(defined)}" if defined
                    else "; it defines no LatentModel subclass")
            raise ConfigError(f"{origin} has no class {class_name!r}{hint}")
        obj = getattr(obj, part)
    return obj


def _looks_like_file(left: str) -> bool:
    return left.endswith(".py") or "/" in left or "\\" in left


def resolve(spec: str) -> ModelRef:
    """The class a model spec names (see the module docstring); one-line errors."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"name a model to train: {', '.join(available())}, or "
                          "path/to/file.py:Class, or my_pkg.module:Class")
    spec = spec.strip()
    if ":" in spec:
        left, _, class_name = spec.rpartition(":")
        if _looks_like_file(left):
            path = Path(left).expanduser().resolve()
            cls = _attribute(_load_file(path), class_name, str(left))
            source = {"kind": "file", "path": str(path), "class": class_name}
        else:
            cls = _attribute(_import_module(left, spec), class_name, left)
            source = {"kind": "module", "module": left, "class": class_name}
        _check_class(cls, spec)
        return ModelRef(cls, spec, source)
    if spec in MODELS:
        cls = MODELS[spec]
        return ModelRef(cls, spec, {"kind": "registry", "name": spec, "module": cls.__module__,
                                    "class": cls.__qualname__})
    eps = entry_points()
    if spec in eps:
        try:
            cls = eps[spec].load()
        except Exception as exc:
            raise ConfigError(f"entry point {spec!r} ({eps[spec].value}) does not load: "
                              f"{_describe(exc)}") from None
        _check_class(cls, f"entry point {spec!r} ({eps[spec].value})")
        return ModelRef(cls, spec, {"kind": "entry-point", "name": spec,
                                    "value": eps[spec].value})
    raise ConfigError(f"unknown model {spec!r}; choose one of {', '.join(available())}, or "
                      "give path/to/file.py:Class or my_pkg.module:Class")


def from_source(source: dict[str, Any], spec: str) -> ModelRef:
    """Reopen the class a run folder recorded (``config.json``'s ``model_source``)."""
    if not isinstance(source, dict):
        raise RunFolderError(f"model_source must be a JSON object, got {source!r}")
    kind = source.get("kind")
    try:
        if kind == "file":
            path = Path(source["path"])
            if not path.is_file():
                raise RunFolderError(f"the run's model file {path} no longer exists; put it "
                                     f"back (the run was trained with {spec!r})")
            cls = _attribute(_load_file(path), source["class"], str(path))
        elif kind == "module":
            cls = _attribute(_import_module(source["module"], spec), source["class"],
                             source["module"])
        elif kind == "registry" and source.get("name") in MODELS:
            cls = MODELS[source["name"]]
        elif kind == "registry":  # registered from Python in another process: its module
            module = _import_module(source["module"], spec)
            cls = _attribute(module, source["class"], source["module"])
        elif kind == "entry-point":
            return resolve(source["name"])
        else:
            return resolve(spec)
    except ConfigError as exc:
        raise RunFolderError(f"the run's model cannot be reopened: {exc}") from None
    except (KeyError, TypeError) as exc:  # a hand-edited entry
        raise RunFolderError(f"model_source {source!r} is incomplete or mistyped ({exc!r}); "
                             "it was edited by hand") from None
    _check_class(cls, spec)
    return ModelRef(cls, spec, dict(source))
