"""Typed settings: each field of a config dataclass parsed by its own type.

A model's settings are a ``@dataclass`` (``LatentModel.config_class``); each field becomes a
``pyro-vae train`` flag and a key of ``config.json``. :func:`setting_fields` reads the fields'
types from their annotations, :func:`parse_text` turns a command-line string into a value of
that type and :func:`coerce` checks (and where lossless converts) a value read from JSON, so a
user's ``hidden: int`` is an int and the built-in ``hidden: tuple[int, ...]`` a tuple whatever
other models call their fields.

Supported types: ``int``, ``float``, ``str``, ``bool``, ``tuple[T, ...]`` of those,
``typing.Literal[...]`` and ``T | None``.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import types
import typing
from dataclasses import dataclass
from typing import Any

from pyro_vae.errors import ConfigError

SCALARS = (int, float, str, bool)
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


@dataclass(frozen=True)
class Setting:
    """One field of a config dataclass: name, type, default (``MISSING`` if required)."""

    name: str
    type: Any
    default: Any

    @property
    def flag(self) -> str:
        return f"--{self.name.replace('_', '-')}"

    def shown_default(self) -> str:
        if self.default is dataclasses.MISSING:
            return "required"
        if isinstance(self.default, tuple):
            return ",".join(map(str, self.default))
        return str(self.default)


def setting_fields(config_class: type) -> list[Setting]:
    """The fields of ``config_class`` with their resolved types; a type the command line and
    ``config.json`` cannot carry is a :class:`ConfigError` naming the field."""
    if not dataclasses.is_dataclass(config_class):
        raise ConfigError(f"{config_class.__qualname__} is not a @dataclass; a model's "
                          "config_class must be one")
    try:
        hints = typing.get_type_hints(config_class)
    except Exception as exc:  # an annotation that does not resolve
        raise ConfigError(f"the field types of {config_class.__qualname__} do not resolve "
                          f"({type(exc).__name__}: {exc})") from None
    out = []
    for f in dataclasses.fields(config_class):
        if not f.init:
            continue
        tp = hints.get(f.name, str)
        _check_supported(config_class, f.name, tp)
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING
            else dataclasses.MISSING)
        out.append(Setting(f.name, tp, default))
    return out


def _parts(tp: Any) -> tuple[Any, bool]:
    """(the type without ``| None``, whether None is allowed)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _check_supported(owner: type, name: str, tp: Any) -> None:
    base, _ = _parts(tp)
    origin = typing.get_origin(base)
    if base in SCALARS or origin is typing.Literal:
        return
    if origin is tuple:
        args = typing.get_args(base)
        if len(args) == 2 and args[1] is Ellipsis and args[0] in SCALARS:
            return
    raise ConfigError(f"setting {name!r} of {owner.__qualname__} has type {tp}; settings are "
                      "int, float, str, bool, tuple[int, ...] (or of float, str), Literal or "
                      "X | None")


def type_name(tp: Any) -> str:
    base, optional = _parts(tp)
    origin = typing.get_origin(base)
    if origin is typing.Literal:
        name = "|".join(map(str, typing.get_args(base)))
    elif origin is tuple:
        name = f"{typing.get_args(base)[0].__name__},..."
    else:
        name = base.__name__
    return f"{name} or none" if optional else name


def _scalar_text(kind: type, text: str, name: str) -> Any:
    if kind is bool:
        if text.lower() in TRUE:
            return True
        if text.lower() in FALSE:
            return False
        raise ConfigError(f"{name} expects true or false, got {text!r}")
    try:
        value = kind(text)
    except ValueError:
        raise ConfigError(f"{name} expects {'a whole number' if kind is int else 'a number'}, "
                          f"got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise ConfigError(f"{name} expects a finite number, got {text!r}")
    return value


def parse_text(setting: Setting, text: str) -> Any:
    """A command-line string as a value of ``setting``'s type (comma-separated for tuples)."""
    base, optional = _parts(setting.type)
    flag = setting.flag
    if optional and text.lower() in ("none", "null"):
        return None
    origin = typing.get_origin(base)
    if origin is typing.Literal:
        choices = typing.get_args(base)
        for choice in choices:
            if str(choice) == text:
                return choice
        raise ConfigError(f"{flag} must be one of {', '.join(map(str, choices))}, got {text!r}")
    if origin is tuple:
        kind = typing.get_args(base)[0]
        items = [s.strip() for s in text.split(",")] if text.strip() else []
        try:
            return tuple(_scalar_text(kind, s, flag) for s in items)
        except ConfigError:
            raise ConfigError(f"{flag} expects {kind.__name__}s separated by commas (e.g. "
                              f"{'200,200' if kind is int else 'a,b'}), got {text!r}") from None
    return _scalar_text(base, text, flag)


def coerce(setting: Setting, value: Any, where: str = "config.json") -> Any:
    """``value`` (as JSON gives it) as a value of ``setting``'s type, or a ConfigError."""
    base, optional = _parts(setting.type)
    if value is None and optional:
        return None
    origin = typing.get_origin(base)
    problem = f"{where}: setting {setting.name!r} expects {type_name(setting.type)}, got {value!r}"
    if origin is typing.Literal:
        if value in typing.get_args(base):
            return value
        raise ConfigError(problem)
    if origin is tuple:
        kind = typing.get_args(base)[0]
        if isinstance(value, (list, tuple)):
            return tuple(_coerce_scalar(kind, v, problem) for v in value)
        raise ConfigError(problem)
    return _coerce_scalar(base, value, problem)


def _coerce_scalar(kind: type, value: Any, problem: str) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
    elif kind is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(problem.split(" expects ")[0] + f" must be a finite number, "
                                  f"got {value}")
            return float(value)
    elif isinstance(value, kind):
        return value
    raise ConfigError(problem)


def build_config(config_class: type, values: dict[str, Any], owner: str,
                 where: str = "config.json") -> Any:
    """``config_class(**values)`` with every value coerced to its field's type; an unknown
    name is a :class:`ConfigError` listing the known ones."""
    known = {s.name: s for s in setting_fields(config_class)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        listing = ", ".join(sorted(known)) or "none"
        raise ConfigError(f"{owner} has no setting {unknown[0]!r}; its settings: {listing}")
    typed = {k: coerce(known[k], v, where) for k, v in values.items()}
    try:
        return config_class(**typed)
    except TypeError as exc:  # a required field left out
        raise ConfigError(f"{owner}: {exc}") from None


def check_types(config: Any, where: str) -> None:
    """Check (and where lossless convert, int to float) every field of the dataclass instance
    ``config`` against its annotated type, in place; a wrong type or a non-finite float is a
    :class:`ConfigError` naming the field (``where``: who holds it, e.g. ``"train"``)."""
    for s in setting_fields(type(config)):
        object.__setattr__(config, s.name, coerce(s, getattr(config, s.name), where))


def config_values(config: Any) -> dict[str, Any]:
    """A config dataclass as plain JSON values (tuples as lists)."""
    return {k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(config).items()}
