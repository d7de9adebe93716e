"""Seeds and devices: one ``--seed`` sets torch, Pyro and NumPy; ``auto`` picks CUDA if present."""

from __future__ import annotations

import random

import numpy as np
import pyro
import torch

from pyro_vae.errors import ConfigError, check_choice, check_seed

DEVICES = ("auto", "cpu", "cuda")


def set_seed(seed: int) -> None:
    """Seed Python, NumPy, torch (CPU and CUDA) and Pyro from one integer in 0..2**32-1."""
    seed = check_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    pyro.set_rng_seed(seed)  # seeds torch (all devices) and Python's random again


def check_device_name(name: str) -> None:
    """Raise :class:`ConfigError` unless ``name`` is ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    if not name.startswith("cuda:"):
        check_choice("device", name, DEVICES)


def resolve_device(name: str) -> torch.device:
    """``auto|cpu|cuda[:N]`` -> :class:`torch.device`; a clear error where CUDA is absent."""
    check_device_name(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"--device {name} was asked for but no CUDA device is available; "
                          "use --device cpu or auto")
    return torch.device(name)


def rng_state() -> dict:
    """Every random number generator's state, in a form ``torch.save`` can store."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
