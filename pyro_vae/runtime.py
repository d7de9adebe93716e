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


def _cuda_index(name: str) -> int | None:
    """``N`` of ``cuda:N`` (None for the other names); a :class:`ConfigError` for ``cuda:x``."""
    if not name.startswith("cuda:"):
        return None
    index = name[len("cuda:"):]
    if not (index.isascii() and index.isdigit()):
        raise ConfigError(f"unknown device {name!r}: a CUDA device is cuda or cuda:N with N a "
                          f"whole number >= 0 (cuda:0 is the first); choose one of "
                          f"{', '.join(DEVICES)} or cuda:N")
    return int(index)


def check_device_name(name: str) -> None:
    """Raise :class:`ConfigError` unless ``name`` is ``auto``, ``cpu``, ``cuda`` or ``cuda:N``
    (N a whole number; whether that GPU exists is :func:`resolve_device`'s to say)."""
    if not isinstance(name, str) or not name.startswith("cuda:"):
        check_choice("device", name, DEVICES)
    else:
        _cuda_index(name)


def resolve_device(name: str) -> torch.device:
    """``auto|cpu|cuda[:N]`` -> :class:`torch.device`; one clear :class:`ConfigError` where
    CUDA is absent or there is no GPU number N (it names the ones there are)."""
    check_device_name(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"--device {name} was asked for but no CUDA device is available; "
                          "use --device cpu or auto")
    index = _cuda_index(name)
    count = torch.cuda.device_count()
    if index is not None and index >= count:
        which = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
        raise ConfigError(f"--device {name} was asked for but this machine has {count} CUDA "
                          f"device{'s' if count != 1 else ''} ({which}); use one of them, "
                          "cuda or auto")
    return torch.device(name)


def _cuda_device(device: torch.device | str | None) -> int | None:
    """The CUDA index a run on ``device`` uses (``cuda`` alone: the current one), or None."""
    if device is None:
        return None
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    return device.index if device.index is not None else torch.cuda.current_device()


def rng_state(device: torch.device | str | None = None) -> dict:
    """The random number generators' states a run on ``device`` draws from, in a form
    ``torch.save`` can store: torch's CPU generator, NumPy's and Python's always; on a CUDA
    device also that one GPU's generator, as ``{"index": N, "state": ...}`` under ``cuda``.

    Only that GPU is touched (no other GPU is initialized, none for a CPU run): a checkpoint
    holds no generator of a GPU the run does not use."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]),
        "python": random.getstate(),
    }
    index = _cuda_device(device)
    if index is not None:
        state["cuda"] = {"index": index, "state": torch.cuda.get_rng_state(index)}
    return state


def _saved_cuda_state(saved, index: int) -> torch.Tensor | None:
    """The CUDA generator state a checkpoint holds for a run on GPU ``index``: the per-device
    ``{"index", "state"}`` form whatever its index, or, from a checkpoint written before it, a
    list of every GPU's states, of which entry ``index`` (None where the list is shorter: it
    was written on a machine with more GPUs, or the state is unusable)."""
    if saved is None:
        return None
    if isinstance(saved, dict):
        return saved["state"]
    return saved[index] if index < len(saved) else None


def set_rng_state(state: dict, device: torch.device | str | None = None) -> None:
    """Restore what :func:`rng_state` returned, for a run on ``device``.

    The CPU generators (torch, NumPy, Python) are restored always; a saved CUDA generator goes
    onto the run's own GPU, whatever its number was (``cuda:3``'s state resumes on
    ``cuda:0``), and no other GPU is touched. What is reproduced bit for bit:

    * same kind of device (CPU -> CPU, cuda:N -> cuda:M of the same model of GPU and the same
      torch): every draw after the resume, as in the uninterrupted run;
    * CUDA -> CPU: the CPU streams (data order, NumPy, Python) go on exactly; the draws the
      model made on the GPU come from the CPU generator now, so they differ from the
      uninterrupted GPU run (and so does everything after them); the CUDA state is skipped;
    * CPU -> CUDA: likewise the CPU streams go on; the GPU's generator keeps the state this
      process gave it (``--seed`` seeds it), as there is none saved.

    A checkpoint written before the per-device form holds a list of every GPU's states (see
    :func:`_saved_cuda_state`): the state at the run's index is taken if it is there, else it
    is skipped (it was written on a machine with fewer GPUs than the index)."""
    torch.set_rng_state(state["torch"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))
    random.setstate(state["python"])
    index = _cuda_device(device)
    if index is None:
        return
    saved = _saved_cuda_state(state.get("cuda"), index)
    if saved is not None:
        torch.cuda.set_rng_state(saved, index)
