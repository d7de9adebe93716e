"""Errors a user can cause.

Every error that bad input can trigger (an unknown name, a bad number, a missing or corrupt run
folder, data outside a likelihood's support) is a :class:`UserError`. The CLI turns it into one
line on stderr and exit status 2; library callers can catch it like any exception.
"""

from __future__ import annotations


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
    if value not in choices:
        raise ConfigError(f"unknown {kind} {value!r}; choose one of {', '.join(choices)}")


def check_positive(name: str, value: float | int, *, integer: bool = True) -> None:
    """Raise :class:`ConfigError` unless ``value`` is a positive number (an int if ``integer``)."""
    if integer and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{name} must be a whole number, got {value!r}")
    if not value > 0:
        raise ConfigError(f"{name} must be at least 1, got {value}" if integer
                          else f"{name} must be positive, got {value}")
