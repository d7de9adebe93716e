"""What a checkpoint holds, and how a run is put back exactly as it was.

A checkpoint is one ``torch.save``'d dict (written atomically by :class:`~pyro_vae.runs.RunFolder`):

* ``model``: the module's ``state_dict`` -- every parameter and buffer of the pair, whatever
  names the programs registered them under with ``pyro.module``;
* ``param_store``: the Pyro param store entries that are *not* tensors of the module (a
  ``pyro.param`` created inside a program, an objective's own baseline network), by name;
* ``optim``: the optimizer state in Pyro's per-parameter-name format (either engine);
* ``rng``: the states of the random number generators the run draws from (torch's CPU
  generator, NumPy's, Python's, and on a GPU that GPU's, with its index:
  :func:`pyro_vae.runtime.rng_state`); ``history``, ``seconds``, ``epoch``, ``train_config``.

Why the module's tensors are excluded from ``param_store`` by identity and not by name: a pair
written in the style of Pyro's tutorial registers its sub-modules under their own names
(``pyro.module("encoder", self.encoder)``, ``pyro.module("decoder", self.decoder)``), so the
store's names need not start with the model's ``name``. Restoring such entries as separate
tensors would leave ``pyro.module`` returning those copies to the optimizer while the module
computes with its own tensors: the weights would never move again after a resume. Here the
store is cleared and refilled with the non-module entries only; the programs register the
module's own (restored) tensors under the same names on their next call, and the optimizer
moments are matched to them by name.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import pyro
import torch

from pyro_vae.errors import RunFolderError
from pyro_vae.runtime import rng_state, set_rng_state

KEYS = ("epoch", "model", "optim", "param_store", "rng", "history", "seconds")
RNG_KEYS = ("torch", "numpy", "python")


def check_state(state: Any, where: str, *, resuming: bool = True) -> None:
    """Raise :class:`RunFolderError` (one line naming ``where`` and the entry) unless ``state``
    has the layout :func:`make_checkpoint` writes and finite weights; ``resuming`` also checks
    what only training reads (optimizer, RNGs, history). A hand-edited or foreign checkpoint is
    refused here, before anything runs or is written."""
    def bad(what: str) -> RunFolderError:
        return RunFolderError(f"checkpoint {where}: {what}; it was not written by pyro_vae's "
                              "train or was edited (train the run again, or restore the file)")

    if not isinstance(state, dict):
        raise bad(f"holds a {type(state).__name__}, not a dict")
    missing = [k for k in (KEYS if resuming else ("epoch", "model")) if k not in state]
    if missing:
        raise bad(f"lacks {', '.join(missing)}")
    epoch = state["epoch"]
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise bad(f"'epoch' is {epoch!r}, not a whole number >= 0")
    weights = state["model"]
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor)
                                                for v in weights.values()):
        raise bad("'model' is not a state_dict of tensors")
    for name, value in weights.items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise bad(f"weight {name!r} holds NaN or infinite values")
    if not resuming:
        return
    history = state["history"]
    if not isinstance(history, list) or not all(isinstance(r, dict) for r in history) \
            or len(history) != epoch:
        raise bad(f"'history' is not a list of {epoch} epoch records")
    seconds = state["seconds"]
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise bad(f"'seconds' is {seconds!r}, not a number")
    rng = state["rng"]
    if not isinstance(rng, dict) or any(k not in rng for k in RNG_KEYS):
        raise bad(f"'rng' is not the random number generators' states ({', '.join(RNG_KEYS)})")
    if not isinstance(rng["torch"], torch.Tensor) or rng["torch"].dtype != torch.uint8:
        raise bad("'rng' holds no torch generator state")
    optim = state["optim"]
    if not isinstance(optim, dict) or not all(
            isinstance(v, dict) and isinstance(v.get("state", {}), dict)
            and isinstance(v.get("param_groups", []), list)
            and all(isinstance(st, dict) and all(isinstance(t, torch.Tensor) for t in st.values())
                    for st in v.get("state", {}).values())
            for v in optim.values()):
        raise bad("'optim' is not an optimizer state (a dict of per-parameter state dicts)")
    store = state["param_store"]
    if not isinstance(store, dict) or not {"params", "constraints"} <= set(store) \
            or not isinstance(store["params"], dict):
        raise bad("'param_store' is not Pyro param store entries")


def _module_tensors(model: torch.nn.Module) -> set[int]:
    return {id(t) for t in model.parameters()} | {id(t) for t in model.buffers()}


def extra_params(model: torch.nn.Module) -> dict:
    """The param store's entries that are not tensors of ``model`` (see the module docstring)."""
    store = pyro.get_param_store()
    own = _module_tensors(model)
    state = store.get_state()
    keep = [name for name, unconstrained in store.named_parameters()
            if id(unconstrained) not in own]
    return {"params": {k: state["params"][k] for k in keep},
            "constraints": {k: state["constraints"][k] for k in keep}}


def model_device(model: torch.nn.Module) -> torch.device:
    """Where ``model``'s tensors live (the CPU for a module without any)."""
    return next(iter(model.parameters()), torch.zeros(())).device


def make_checkpoint(model, stepper, epoch: int, history: list[dict], seconds: float,
                    config) -> dict[str, Any]:
    """The checkpoint dict (see the module docstring); the RNG states are those of the
    generators a run on ``model``'s device draws from."""
    return {
        "epoch": epoch,
        "model": model.state_dict(),
        "optim": stepper.get_state(),
        "param_store": extra_params(model),
        "rng": rng_state(model_device(model)),
        "history": history,
        "seconds": seconds,
        "train_config": asdict(config),
    }


def restore_checkpoint(state: dict, model, stepper, load_model_state) -> None:
    """Put ``model``, the param store, the optimizer and the RNGs back as ``state`` has them.

    ``state`` has passed :func:`check_state`; it is loaded on the CPU (RNG states must stay
    there); the module's tensors and the param store's entries go to the module's device,
    and a saved CUDA generator state goes to that device's generator whatever GPU wrote it
    (:func:`pyro_vae.runtime.set_rng_state` says what a change of device keeps).

    ``load_model_state(model, state)`` loads the module's ``state_dict`` (the run folder's
    loader, which names the checkpoint in its error)."""
    load_model_state(model, state)
    device = model_device(model)
    try:
        extra = state["param_store"]
        extra = {**extra, "params": {k: v.to(device) for k, v in extra["params"].items()}}
        pyro.clear_param_store()
        pyro.get_param_store().set_state(extra)
        stepper.set_state(state["optim"])
        set_rng_state(state["rng"], device)
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, RuntimeError) as exc:
        raise RunFolderError(f"the checkpoint's optimizer, param store or RNG state cannot be "
                             f"restored ({type(exc).__name__}: {str(exc)[:120]}); it was edited "
                             "or written by another version") from None
