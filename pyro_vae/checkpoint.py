"""What a checkpoint holds, and how a run is put back exactly as it was.

A checkpoint is one ``torch.save``'d dict (written atomically by :class:`~pyro_vae.runs.RunFolder`):

* ``model``: the module's ``state_dict`` -- every parameter and buffer of the pair, whatever
  names the programs registered them under with ``pyro.module``;
* ``param_store``: the Pyro param store entries that are *not* tensors of the module (a
  ``pyro.param`` created inside a program, an objective's own baseline network), by name;
* ``optim``: the optimizer state in Pyro's per-parameter-name format (either engine);
* ``rng``: every random number generator's state; ``history``, ``seconds``, ``epoch``,
  ``train_config``.

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


def make_checkpoint(model, stepper, epoch: int, history: list[dict], seconds: float,
                    config) -> dict[str, Any]:
    return {
        "epoch": epoch,
        "model": model.state_dict(),
        "optim": stepper.get_state(),
        "param_store": extra_params(model),
        "rng": rng_state(),
        "history": history,
        "seconds": seconds,
        "train_config": asdict(config),
    }


def restore_checkpoint(state: dict, model, stepper, load_model_state) -> None:
    """Put ``model``, the param store, the optimizer and the RNGs back as ``state`` has them.

    ``state`` is loaded on the CPU (RNG states must stay there); the module's tensors and the
    param store's entries go to the module's device.

    ``load_model_state(model, state)`` loads the module's ``state_dict`` (the run folder's
    loader, which names the checkpoint in its error)."""
    missing = [k for k in KEYS if k not in state]
    if missing:
        raise RunFolderError(f"the checkpoint lacks {', '.join(missing)}; it was not written by "
                             "pyro_vae's train")
    load_model_state(model, state)
    device = next(iter(model.parameters()), torch.zeros(())).device
    extra = state["param_store"]
    extra = {**extra, "params": {k: v.to(device) for k, v in extra["params"].items()}}
    pyro.clear_param_store()
    pyro.get_param_store().set_state(extra)
    stepper.set_state(state["optim"])
    set_rng_state(state["rng"])
