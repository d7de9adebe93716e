"""Errors a user can cause.

Every error that bad input can trigger (an unknown name, a bad number, a missing or corrupt run
folder, data outside a likelihood's support) is a :class:`UserError`. The CLI turns it into one
line on stderr and exit status 2; library callers can catch it like any exception.

A user's own model code is bad input too. :func:`model_code_errors` (a context manager) turns an
exception raised inside a model's or guide's file into a one-line :class:`ModelCodeError`
naming the file, line and function (:func:`user_code_location`) and the likely fix
(:func:`hint_for`: ``.to_event(1)``, or reshaping with ``z.shape[:-1]`` when the programs run
vectorized over particles); :func:`require_latent_model` refuses a module that is not a
:class:`~pyro_vae.models.base.LatentModel` before anything runs.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import numbers
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch


class UserError(Exception):
    """Bad input from a user: the message names the problem and, where there is one, the fix."""


class ConfigError(UserError):
    """An unknown name or an out-of-range setting."""


class DataError(UserError):
    """A data set that cannot be loaded, or data a model cannot take."""


class RunFolderError(UserError):
    """A run folder that is missing, not a run, or holds a corrupt or mismatched checkpoint."""


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def check_choice(kind: str, value: str, choices) -> None:
    """Raise :class:`ConfigError` unless ``value`` is one of ``choices`` (listed in the error)."""
    try:
        known = value in choices
    except TypeError:  # an unhashable value (a list from a hand-edited JSON file)
        known = False
    if not known:
        raise ConfigError(f"unknown {kind} {value!r}; choose one of {', '.join(choices)}")


def check_positive(name: str, value: float | int, *, integer: bool = True) -> None:
    """Raise :class:`ConfigError` unless ``value`` is a positive number (an int if ``integer``;
    a finite real otherwise)."""
    if integer and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{name} must be a whole number, got {value!r}")
    if not integer:
        check_number(name, value)
    if not value > 0:
        raise ConfigError(f"{name} must be at least 1, got {value}" if integer
                          else f"{name} must be positive, got {value}")


def check_number(name: str, value: Any, *, minimum: float | None = None) -> None:
    """Raise :class:`ConfigError` unless ``value`` is a finite real number (``>= minimum``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value}")
    if minimum is not None and not value >= minimum:
        raise ConfigError(f"{name} must be >= {minimum:g}, got {value}")


SEED_MAX = 2**32 - 1  # NumPy's legacy seeding takes 0..2**32-1


def check_seed(value: Any, name: str = "seed") -> int:
    """Return ``value`` if it is a whole number in 0..2**32-1 (every RNG that ``--seed`` seeds
    takes these), else raise :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) \
            or not 0 <= value <= SEED_MAX:
        raise ConfigError(f"{name} must be a whole number from 0 to {SEED_MAX}, got {value!r}")
    return int(value)


class OutOfMemory(UserError):
    """The host or the GPU ran out of memory; the message says which and what to make smaller."""


_HOST_OOM = ("can't allocate memory", "cannot allocate memory", "defaultcpuallocator")


def out_of_memory(exc: BaseException) -> OutOfMemory | None:
    """``exc`` as an :class:`OutOfMemory` if it is the host's ``MemoryError`` / torch's CPU
    allocator failure or ``torch.cuda.OutOfMemoryError``; otherwise None."""
    if isinstance(exc, OutOfMemory):
        return exc
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        where, fix = "GPU", "a smaller --batch-size or --num-particles, or --device cpu"
    elif isinstance(exc, MemoryError) or (
            isinstance(exc, RuntimeError) and any(s in str(exc).lower() for s in _HOST_OOM)):
        where, fix = "host", "a smaller --batch-size, --num-particles or --eval-samples"
    else:
        return None
    asked = re.search(r"allocate (\d+) bytes|allocate ([\d.]+ [KMGT]iB)", str(exc))
    size = "" if asked is None else (f" (asked for {int(asked[1]) / 2**30:.1f} GiB)" if asked[1]
                                     else f" (asked for {asked[2]})")
    return OutOfMemory(f"out of {where} memory{size}; use {fix}")


class ModelCodeError(UserError):
    """An exception raised inside a model's or guide's own code; the message names the file and
    line (the original exception is its ``__cause__``)."""


_SHAPE_WORDS = re.compile(r"shape|size|view|reshape|mat1|expand", re.IGNORECASE)
_PLATE_MISMATCH = re.compile(
    r"Shape mismatch inside plate\('(?P<plate>[^']*)'\) at site (?P<site>\S+) "
    r"dim (?P<dim>-?\d+), (?P<plate_size>\d+) vs (?P<size>\d+)")
PARTICLE_PLATES = ("eval_particles", "num_particles_vectorized")  # evaluate's and Pyro's ELBOs'
PARTICLE_RULE = ("evaluation and multi-sample objectives run the programs vectorized over "
                 "particles: a sample site's value has extra leading dimensions; reshape with "
                 "z.shape[:-1], never len(x)")


def _class_of(obj: Any) -> type:
    return obj if inspect.isclass(obj) else type(obj)


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it, else absolute."""
    with contextlib.suppress(ValueError, OSError):
        return str(path.relative_to(Path.cwd().resolve()))
    return str(path)


def _source_file(obj: Any) -> Path | None:
    try:
        name = inspect.getsourcefile(_class_of(obj))
    except (TypeError, OSError):  # a built-in class, or one defined in an interactive session
        return None
    return Path(name).resolve() if name else None


def user_code_location(exc: BaseException, obj: Any) -> str | None:
    """``"path/file.py:LINE (in FUNC)"`` of the innermost frame of ``exc``'s traceback that lies
    in the source file defining ``type(obj)`` (or ``obj`` itself if it is a class); ``None``
    when no frame of the traceback is in that file."""
    source = _source_file(obj)
    if source is None:
        return None
    found = None
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        with contextlib.suppress(OSError, ValueError):
            if Path(code.co_filename).resolve() == source:
                found = f"{_shown(source)}:{tb.tb_lineno} (in {code.co_name})"
        tb = tb.tb_next
    return found


def describe_exception(exc: BaseException) -> str:
    """``"Type: first line of the message"`` (the type alone for an empty message)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0].strip()}" if lines else type(exc).__name__


def hint_for(exc: BaseException, *, vectorized: bool = False) -> str | None:
    """The likely fix of a model's exception, one line, or ``None``.

    * ``.to_event(1)`` for Pyro's "Shape mismatch inside plate" (a site's batch shape carries a
      size that is not the plate's: typically a vector latent's dimension);
    * the particle rule (:data:`PARTICLE_RULE`) for a shape error raised while the programs ran
      vectorized over particles (``vectorized``), including a plate mismatch whose size is a
      multiple of the plate's (``reshape(-1, D)`` folded the particles into the data points).
    """
    text = str(exc)
    mismatch = _PLATE_MISMATCH.search(text)
    if mismatch:
        m = mismatch.groupdict()
        size, plate_size = int(m["size"]), int(m["plate_size"])
        folded = plate_size > 0 and size % plate_size == 0
        if vectorized and (m["plate"] in PARTICLE_PLATES or folded):
            return PARTICLE_RULE  # e.g. reshape(-1, D) made particles * len(x) data points
        return (f"site {m['site']!r} has size {m['size']} at dim {m['dim']} where plate "
                f"{m['plate']!r} has {m['plate_size']}: if {m['size']} is a vector latent's "
                "dimension, declare it an event dim with .to_event(1)")
    if vectorized and isinstance(exc, RuntimeError) and _SHAPE_WORDS.search(text):
        return PARTICLE_RULE
    return None


def describe_model_error(exc: BaseException, obj: Any, during: str, *,
                         vectorized: bool = False) -> ModelCodeError:
    """``exc`` raised by ``obj``'s model or guide as a one-line :class:`ModelCodeError`:
    ``"{Class} raised {Type}: {first line} at {file:line (in func)} during {during}"`` and a
    hint where :func:`hint_for` has one (``vectorized``: the programs ran vectorized over
    particles, as evaluation and multi-sample objectives run them)."""
    where = user_code_location(exc, obj)
    at = f" at {where}" if where else ""
    hint = hint_for(exc, vectorized=vectorized)
    tail = f"; {hint}" if hint else ""
    return ModelCodeError(f"{_class_of(obj).__name__} raised {describe_exception(exc)}{at} during "
                          f"{during}{tail}")


@contextlib.contextmanager
def model_code_errors(obj: Any, during: str, *, vectorized: bool = False) -> Iterator[None]:
    """Turn an exception raised in ``obj``'s own code into a one-line :class:`ModelCodeError`
    naming the file and line (``raise ... from exc``).

    Running out of memory is an :class:`OutOfMemory`, not the model's fault. A
    :class:`UserError`, a ``BaseException`` that is not an ``Exception``
    (``KeyboardInterrupt``) and an exception with no frame in the file defining ``type(obj)``
    (a bug elsewhere keeps its traceback) pass through unchanged.
    """
    try:
        yield
    except UserError:
        raise
    except Exception as exc:
        memory = out_of_memory(exc)
        if memory is not None:
            raise memory from exc
        if user_code_location(exc, obj) is None:
            raise
        raise describe_model_error(exc, obj, during, vectorized=vectorized) from exc


def require_latent_model(obj: Any, what: str) -> None:
    """Raise :class:`ConfigError` unless ``obj`` is a :class:`pyro_vae.models.base.LatentModel`
    instance; the message names its class, where it is defined and what to do."""
    from pyro_vae.models.base import LatentModel  # lazily: models import this module

    if isinstance(obj, LatentModel):
        return
    cls = _class_of(obj)
    name = cls.__name__
    with contextlib.suppress(TypeError, OSError):
        source = _source_file(cls)
        if source is not None:
            name += f" ({_shown(source)}:{inspect.getsourcelines(cls)[1]})"
    fix = ("subclass pyro_vae.LatentModel and give model/guide the signature "
           "(x, y=None, num_data=None) (see docs/new_model.md)")
    if inspect.isclass(obj) and issubclass(obj, LatentModel):
        kind, fix = "the class itself", "pass an instance of it"
    elif inspect.isclass(obj):
        kind = "a class, not an instance"
    elif isinstance(obj, torch.nn.Module):
        kind = "a torch.nn.Module"
    else:
        kind = "not a torch.nn.Module"
    raise ConfigError(f"{what} needs a pyro_vae.LatentModel; {name} is {kind}: {fix}")
