"""What the training loop calls at the end of each epoch: the per-epoch test ELBO and the
checkpoint. :func:`pyro_vae.train.train` knows only the :class:`Hook` interface; the run layer
(:mod:`pyro_vae.runner`) chooses the hooks.

* :class:`TestELBO` adds ``test_elbo`` (one-sample ELBO per test point) to each epoch's record;
* :class:`Checkpointer` writes ``checkpoint.pt`` and ``history.csv`` after each epoch and puts a
  resumed run back exactly (:mod:`pyro_vae.checkpoint`).

Under data-parallel training (:mod:`pyro_vae.distributed`) each rank scores its shard of the
test points and the sums are all-reduced; rank 0 alone writes the checkpoint, which holds
every rank's RNG states (gathered), and on resume rank 0 reads it and broadcasts it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from pyro_vae import distributed
from pyro_vae.checkpoint import (
    check_state,
    make_checkpoint,
    model_device,
    restore_checkpoint,
)
from pyro_vae.errors import ConfigError, RunFolderError
from pyro_vae.runs import RunFolder
from pyro_vae.runtime import rng_state
from pyro_vae.structure import global_latent_sites, whole_data_elbo


@dataclass
class TrainState:
    """What hooks see: the pair, its data, the settings, the stepper and the progress."""

    model: object
    data: object
    config: object
    stepper: object
    epoch: int = 0  # finished epochs
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0


class Hook:
    """Override what you need. ``on_epoch_end`` runs inside the epoch's timing and may add
    entries to ``record`` (the epoch's row of ``history.csv``); ``after_epoch`` runs once the
    record is in ``state.history`` (checkpoints)."""

    def on_epoch_end(self, state: TrainState, record: dict) -> None:
        pass

    def after_epoch(self, state: TrainState) -> None:
        pass


class TestELBO(Hook):
    """``record["test_elbo"]``: the one-sample ELBO per test point (the cheap per-epoch number;
    :func:`pyro_vae.evaluate.mean_elbo`). A model with global latents gets
    :func:`whole_data_elbo` instead (per-point bounds do not exist for it)."""

    __test__ = False  # not a pytest class

    def __init__(self) -> None:
        self.per_point: bool | None = None

    def on_epoch_end(self, state: TrainState, record: dict) -> None:
        from pyro_vae.evaluate import elbo_sum, mean_elbo

        model, data = state.model, state.data
        y = data.test_y if model.is_conditional else None
        if self.per_point is None:
            self.per_point = not global_latent_sites(model, data.test_x, y)
        if not distributed.active():
            record["test_elbo"] = (mean_elbo(model, data.test_x, y) if self.per_point
                                   else whole_data_elbo(model, data.test_x, y))
        elif self.per_point:  # each rank its shard of the test points, summed over the ranks
            total = elbo_sum(model, distributed.shard(data.test_x), distributed.shard(y))
            total = distributed.all_reduce_sum(torch.tensor(total, dtype=torch.float64))
            record["test_elbo"] = float(total) / data.test_x.shape[0]
        else:  # global latents: one whole-data estimate, rank 0's
            record["test_elbo"] = distributed.broadcast_object(
                whole_data_elbo(model, data.test_x, y))


class Checkpointer(Hook):
    """Atomic ``checkpoint.pt`` and ``history.csv`` after every epoch; :meth:`restore` puts a
    run back as its last checkpoint left it."""

    def __init__(self, run: RunFolder):
        self.run = run

    def after_epoch(self, state: TrainState) -> None:
        ranks = distributed.gather_objects(rng_state(model_device(state.model)))
        if not distributed.is_main():
            return
        checkpoint = make_checkpoint(state.model, state.stepper, state.epoch, state.history,
                                     state.seconds, state.config)
        if distributed.world() > 1:  # every rank's generators; "rng" stays rank 0's
            checkpoint |= {"world": distributed.world(), "rng_ranks": ranks}
        self.run.save_checkpoint(checkpoint)
        self.run.write_history(state.history)

    def _load(self) -> dict:
        if not self.run.has_checkpoint():
            raise RunFolderError(f"nothing to resume: {self.run.path} has no checkpoint")
        saved = self.run.load_checkpoint(map_location="cpu")
        check_state(saved, str(self.run.checkpoint_path))
        return saved

    def restore(self, state: TrainState) -> None:
        saved = distributed.main_does(self._load)  # rank 0 reads it, every rank gets it
        world, now = saved.get("world", 1), distributed.world()
        if world != now:
            how = ("in one process (without torchrun)" if world == 1 else
                   f"with as many (torchrun --nproc_per_node {world} ...)")
            raise ConfigError(f"{self.run.path} was trained by {world} process"
                              f"{'es' if world != 1 else ''}; resume it {how}, not {now}: each "
                              "process's random number generators are part of the run")
        if "rng_ranks" in saved:  # this rank's own generators
            saved = {**saved, "rng": saved["rng_ranks"][distributed.rank()]}
        restore_checkpoint(saved, state.model, state.stepper, self.run.load_model_state)
        state.epoch, state.history, state.seconds = (saved["epoch"], list(saved["history"]),
                                                     saved["seconds"])
