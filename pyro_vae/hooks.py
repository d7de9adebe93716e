"""What the training loop calls at the end of each epoch: the per-epoch test ELBO and the
checkpoint. :func:`pyro_vae.train.train` knows only the :class:`Hook` interface; the run layer
(:mod:`pyro_vae.runner`) chooses the hooks.

* :class:`TestELBO` adds ``test_elbo`` (one-sample ELBO per test point) to each epoch's record;
* :class:`Checkpointer` writes ``checkpoint.pt`` and ``history.csv`` after each epoch and puts a
  resumed run back exactly (:mod:`pyro_vae.checkpoint`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyro_vae.checkpoint import check_state, make_checkpoint, restore_checkpoint
from pyro_vae.errors import RunFolderError
from pyro_vae.runs import RunFolder
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
        from pyro_vae.evaluate import mean_elbo

        model, data = state.model, state.data
        y = data.test_y if model.is_conditional else None
        if self.per_point is None:
            self.per_point = not global_latent_sites(model, data.test_x, y)
        record["test_elbo"] = (mean_elbo(model, data.test_x, y) if self.per_point
                               else whole_data_elbo(model, data.test_x, y))


class Checkpointer(Hook):
    """Atomic ``checkpoint.pt`` and ``history.csv`` after every epoch; :meth:`restore` puts a
    run back as its last checkpoint left it."""

    def __init__(self, run: RunFolder):
        self.run = run

    def after_epoch(self, state: TrainState) -> None:
        self.run.save_checkpoint(make_checkpoint(state.model, state.stepper, state.epoch,
                                                 state.history, state.seconds, state.config))
        self.run.write_history(state.history)

    def restore(self, state: TrainState) -> None:
        if not self.run.has_checkpoint():
            raise RunFolderError(f"nothing to resume: {self.run.path} has no checkpoint")
        saved = self.run.load_checkpoint(map_location="cpu")
        check_state(saved, str(self.run.checkpoint_path))
        restore_checkpoint(saved, state.model, state.stepper, self.run.load_model_state)
        state.epoch, state.history, state.seconds = (saved["epoch"], list(saved["history"]),
                                                     saved["seconds"])
