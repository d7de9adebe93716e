"""The SVI loop: minibatches, progress, per-epoch checkpoints, exact resume, a NaN guard.

It takes any :class:`~pyro_vae.models.base.LatentModel` and a :class:`~pyro_vae.data.Dataset`,
never asks which model it is, logs through :mod:`logging`, shows a tqdm bar, and returns its
results (minGPT's trainer, NumPyro's ``SVI.run``)::

    result = train(model, data, TrainConfig(epochs=10), run=RunFolder("runs/a"))

Each epoch ends with the test ELBO (one sample per point) and an atomic checkpoint holding the
module's ``state_dict``, the optimizer state, the Pyro param store entries that live outside
the module, the RNG states of the run's device, the history and the elapsed seconds;
``resume=True`` continues from it and reaches the same parameters as an uninterrupted run
(CPU, same seed).

Each step runs on the fast path of :mod:`pyro_vae.engine` (``engine="fast"``, the default) or
through Pyro's ``SVI`` object (``engine="svi"``); both give the same parameters. The loss stays
on the device: the NaN guard reads it every step on the CPU and every ``GPU_CHECK_EVERY``
steps on a GPU, where each read would stall the queue of kernels; the progress bar shows the
value the guard read last and reads nothing itself.

Under data-parallel training (torchrun; :mod:`pyro_vae.distributed`) rank 0 draws each epoch's
order and broadcasts it, every rank trains on its shard of each global minibatch with the
plate's ``num_data`` the whole training set's size, the fast engine averages the gradients
(weighted by each rank's share) before its Adam step, ranks > 0 draw their own sampling noise
(seeded from ``(seed, rank)``), and the loss the NaN guard reads, the epoch's train ELBO and
the test ELBO are reduced over the ranks, so every rank takes the same decisions.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import pyro
import torch
from tqdm.auto import tqdm

from pyro_vae import debias, distributed, objectives
from pyro_vae.annealing import kl_weight, scaled_programs
from pyro_vae.data import Dataset
from pyro_vae.debias import RESAMPLE
from pyro_vae.engine import ENGINES, LR_SCHEDULES, lr_factor, make_stepper
from pyro_vae.errors import (
    ConfigError,
    DataError,
    RunFolderError,
    TrainingDiverged,
    check_choice,
    check_number,
    check_positive,
    check_seed,
    model_code_errors,
    require_latent_model,
)
from pyro_vae.estimators.baselines import BASELINES
from pyro_vae.graphs import graph_stepper
from pyro_vae.hooks import Checkpointer, Hook, TestELBO, TrainState
from pyro_vae.models.base import LatentModel
from pyro_vae.runs import RunFolder
from pyro_vae.runtime import check_device_name
from pyro_vae.settings import check_types

log = logging.getLogger(__name__)
GPU_CHECK_EVERY = 25  # steps between reads of the loss on a GPU (the NaN guard, the bar)


@dataclass
class TrainConfig:
    """Settings of the SVI loop (``pyro-vae train --help`` lists them).

    What an objective can serve (free bits, jit, a baseline, the fast engine, a learning-rate
    schedule) is checked against its entry in :data:`pyro_vae.objectives.OBJECTIVES`."""

    epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-3
    adam_eps: float = 1e-8
    seed: int = 0
    device: str = "auto"
    objective: str = "trace"
    num_particles: int = 1
    jit: bool = False
    baseline: str = "none"  # tracegraph only: none, decaying or neural
    baseline_lr: float = 1e-2  # Adam learning rate of the neural baseline
    beta: float = 1.0  # KL weight (beta-VAE), see pyro_vae.annealing
    kl_warmup_epochs: int = 0  # linear ramp of the KL weight from 0 to beta
    free_bits: float = 0.0  # minimum KL per latent dimension, nats (Kingma et al. 2016)
    engine: str = "fast"  # fast or svi, see pyro_vae.engine
    lr_schedule: str = "constant"  # constant or iwae (Burda et al.'s 3^i epochs per stage)
    cuda_graphs: bool = False  # capture the fast engine's step on CUDA (pyro_vae.graphs)
    # DB-VAE's adaptive resampling (pyro_vae.debias): each epoch drawn by latent-density
    # weights recomputed from the model at the epoch's start; none, histogram or aggregate
    resample: str = "none"
    resample_alpha: float = 0.01
    resample_bins: int = 10

    def __post_init__(self) -> None:
        check_types(self, "train")  # TrainConfig(lr="0.1") is an error, not a TypeError later
        check_positive("epochs", self.epochs)
        check_positive("batch size", self.batch_size)
        check_positive("num-particles", self.num_particles)
        check_positive("learning rate", self.lr, integer=False)
        check_positive("adam eps", self.adam_eps, integer=False)
        check_positive("baseline lr", self.baseline_lr, integer=False)
        check_seed(self.seed, "seed")
        check_device_name(self.device)
        check_choice("objective", self.objective, objectives.OBJECTIVES)
        check_choice("baseline", self.baseline, BASELINES)
        check_choice("engine", self.engine, ENGINES)
        check_choice("lr schedule", self.lr_schedule, LR_SCHEDULES)
        check_choice("resample", self.resample, RESAMPLE)
        check_positive("resample-alpha", self.resample_alpha, integer=False)
        check_positive("resample-bins", self.resample_bins)
        check_number("beta", self.beta, minimum=0)
        if self.kl_warmup_epochs < 0:
            raise ConfigError(f"kl-warmup-epochs must be a whole number >= 0, got "
                              f"{self.kl_warmup_epochs!r}")
        check_number("free-bits", self.free_bits, minimum=0)
        if self.cuda_graphs and self.engine != "fast":
            raise ConfigError("--cuda-graphs captures the fast engine's step; it does not "
                              f"apply to --engine {self.engine}")
        objectives.check_config(self)


@dataclass
class TrainResult:
    history: list[dict]
    train_elbo: float  # mean per-point training objective over the last epoch
    epochs: int
    seconds: float


def _kept(epoch: int, run: RunFolder | None) -> str:
    return (f"the checkpoint of epoch {epoch} in {run.path} is kept"
            if run is not None and epoch > 0 else "nothing was saved")


def _check_finite(loss: float, epoch: int, step: int, run: RunFolder | None) -> None:
    """Raise :class:`TrainingDiverged` on a NaN/inf loss, naming what was kept."""
    if not math.isfinite(loss):
        raise TrainingDiverged(f"the loss became {loss} at epoch {epoch + 1}, step {step + 1}; "
                               f"{_kept(epoch, run)}; try a smaller --lr")


def _check_record(record: dict, epoch: int, run: RunFolder | None) -> None:
    """Raise :class:`TrainingDiverged` if a value of the epoch's record is NaN or infinite
    (each step's loss can be finite while the epoch's sum overflows), before it is written."""
    for key, value in record.items():
        if isinstance(value, float) and not math.isfinite(value):
            why = (" (every step's loss was finite, their sum overflowed: the losses are huge)"
                   if key == "train_elbo" else "")
            raise TrainingDiverged(f"training diverged: the {key} of epoch {epoch + 1} is "
                                   f"{value}{why}; "
                                   f"{_kept(epoch, run)}; try a smaller --lr")


def check_data(model: LatentModel, data: Dataset) -> None:
    """Raise :class:`~pyro_vae.errors.DataError` if the model cannot score ``data``."""
    if data.kind not in model.data_kinds:
        raise DataError(f"model {model.name} takes {' or '.join(model.data_kinds)} data; data "
                        f"set {data.name} holds {data.kind} data")
    model.check_data(data.train_eval_x(limit=1000), "the training data")
    model.check_data(data.test_x, "the test data")
    check_labels = getattr(model, "check_labels", None)  # once here, not at every step
    if check_labels is not None:  # the model says which labels it needs (cvae, ssvae)
        check_labels(data.train_y, data.num_train, "the training labels")
        check_labels(data.test_y, len(data.test_x), "the test labels")


def _check_data_parallel(stepper, config: TrainConfig, data: Dataset) -> None:
    """What data-parallel training cannot serve, refused on every rank alike (one line)."""
    world = distributed.world()
    if stepper.engine != "fast":
        raise ConfigError(f"objective {config.objective} runs on Pyro's SVI engine here "
                          "(--engine svi, --jit, or an objective the fast engine does not "
                          f"serve), which does not average gradients over the {world} "
                          "processes; use --engine fast and an objective it serves, or train "
                          "in one process")
    if min(config.batch_size, data.num_train) < world:
        raise ConfigError(f"--batch-size {config.batch_size} is the global minibatch, split over "
                          f"{world} processes: each needs at least one point; use a batch "
                          f"size >= {world}")


def _shard(data: Dataset) -> dict:
    """``Dataset.batches``' arguments for this rank: under a process group, rank 0's epoch
    order broadcast to every rank and this rank's shard; nothing in a plain process."""
    if not distributed.active():
        return {}
    perm = distributed.broadcast_object(data.permutation() if distributed.is_main() else None)
    return {"perm": perm, "rank": distributed.rank(), "world": distributed.world()}


def default_hooks(run: RunFolder | None) -> list[Hook]:
    """The per-epoch test ELBO, and a checkpoint after every epoch when there is a folder."""
    return [TestELBO()] + ([Checkpointer(run)] if run is not None else [])


def train(model: LatentModel, data: Dataset, config: TrainConfig, run: RunFolder | None = None,
          *, resume: bool = False, progress: bool = True,
          hooks: Sequence[Hook] | None = None) -> TrainResult:
    """Train ``model`` on ``data`` by SVI with Adam; see the module docstring.

    The caller seeds the RNGs (``pyro_vae.runtime.set_seed(config.seed)``) before building the
    model, so initialization is part of the seeded run, and loads ``data`` onto the device
    (``config.device``; a mismatch is an error). Training runs where the data lives.
    ``hooks`` run at the end of every epoch (default: :func:`default_hooks` of ``run``);
    ``resume=True`` asks the :class:`~pyro_vae.hooks.Checkpointer` among them to put the run
    back first. Raises :class:`TrainingDiverged` on a NaN/inf loss (the checkpoint of the last
    finished epoch stays as it was).
    """
    require_latent_model(model, "train")
    if config.device != "auto" and torch.device(config.device).type != data.device.type:
        raise ConfigError(f"the config asks for device {config.device} but the data lives on "
                          f"{data.device}: load it with load_dataset(..., device=...)")
    model.to(data.device)
    check_data(model, data)
    spec = objectives.get_spec(config.objective)
    vectorized = spec.multi_sample or config.num_particles > 1
    with model_code_errors(model, "training", vectorized=vectorized):
        return _train(model, data, config, spec, run, resume, progress, hooks)


def _captured(stepper, model_fn, guide_fn, elbo, config: TrainConfig, data: Dataset,
              kl_scale):
    """The fast stepper with CUDA graphs (:mod:`pyro_vae.graphs`) where they can apply; the
    KL weight is the loop's one Python setting that the step bakes in."""
    if stepper.engine != "fast":
        log.info("CUDA graphs off: objective %s runs on Pyro's SVI; steps run eagerly",
                 config.objective)
        return stepper
    captured = graph_stepper(model_fn, guide_fn, elbo, lr=config.lr, eps=config.adam_eps,
                             device=data.device, signature=lambda: (kl_scale.weight,))
    return stepper if captured is None else captured


def _train(model: LatentModel, data: Dataset, config: TrainConfig, spec, run: RunFolder | None,
           resume: bool, progress: bool, hooks: Sequence[Hook] | None) -> TrainResult:
    elbo = objectives.build_objective(config, model)
    model_fn, guide_fn, kl_scale = scaled_programs(model, model.latent_sites, config.beta)
    stepper = make_stepper(config.engine, model_fn, guide_fn, elbo, lr=config.lr,
                           eps=config.adam_eps, optim_args=spec.optim_args(config))
    if config.cuda_graphs:
        stepper = _captured(stepper, model_fn, guide_fn, elbo, config, data, kl_scale)
    hooks = default_hooks(run) if hooks is None else list(hooks)
    data, resampling_hooks = debias.training_data(data, model, config)  # --resample
    hooks += resampling_hooks
    data_parallel = distributed.world() > 1
    if data_parallel:
        _check_data_parallel(stepper, config, data)
    if distributed.active():
        stepper.grad_weight = distributed.shard_weight(min(config.batch_size, data.num_train))
    state = TrainState(model, data, config, stepper)
    if resume:
        keepers = [h for h in hooks if isinstance(h, Checkpointer)]
        if not keepers:
            raise RunFolderError("nothing to resume: no run folder was given")
        keepers[0].restore(state)
        log.info("resuming %s at epoch %d of %d", keepers[0].run.path, state.epoch,
                 config.epochs)
        if state.epoch >= config.epochs:
            log.info("the run already has %d epochs; nothing to train", state.epoch)
    else:
        pyro.clear_param_store()
        init = getattr(model, "init_from_data", None)  # e.g. k-means++ for a mixture
        if init is not None:
            init(data.train_values(device=data.train_x.device))  # host-fed: on the host
        distributed.reseed_rank(config.seed)  # ranks > 0: their own sampling noise
    distributed.broadcast_(list(model.parameters()) + list(model.buffers()))

    check_every = 1 if data.device.type == "cpu" else GPU_CHECK_EVERY
    n, nb = data.num_train, data.num_batches(config.batch_size)
    train_elbo = state.history[-1]["train_elbo"] if state.history else math.nan
    bar = tqdm(total=config.epochs * nb, initial=state.epoch * nb,
               disable=None if progress else True,  # None: no bar unless stderr is a terminal
               unit="step", desc="training", dynamic_ncols=True)
    try:
        for epoch in range(state.epoch, config.epochs):
            t0 = time.perf_counter()
            model.train()
            stepper.set_lr_factor(lr_factor(config.lr_schedule, epoch))
            total = torch.zeros((), device=data.device)
            last = None  # the loss the NaN guard read last (the bar shows it, reads nothing)
            for step, (x, y) in enumerate(data.batches(config.batch_size, **_shard(data))):
                kl_scale.weight = kl_weight(config.beta, config.kl_warmup_epochs, epoch, step, nb)
                loss = stepper.step(x, y, num_data=n)
                if distributed.active():  # this rank's part of the global minibatch's loss
                    loss = loss * stepper.grad_weight
                total += loss.to(total.device)
                bar.update(1)
                if (step + 1) % check_every == 0 or step + 1 == nb:
                    # the guard's read, the only one of a step (all ranks read the same sum)
                    last = float(distributed.all_reduce_sum(loss))
                    _check_finite(last, epoch, step, run)
                if step % 50 == 0 and not bar.disable and last is not None:
                    bar.set_postfix(epoch=epoch + 1, loss=f"{last / n:.2f}", refresh=False)
            train_elbo = -float(distributed.all_reduce_sum(total)) / (nb * n)
            model.eval()
            record = {"epoch": epoch + 1, "train_elbo": train_elbo}
            for hook in hooks:
                hook.on_epoch_end(state, record)
            state.seconds += time.perf_counter() - t0
            record |= {"seconds": round(state.seconds, 3), "kl_weight": kl_scale.weight,
                       "lr": config.lr * lr_factor(config.lr_schedule, epoch)}
            _check_record(record, epoch, run)
            state.history.append(record)
            state.epoch = epoch + 1
            bar.set_postfix(epoch=epoch + 1, train=f"{train_elbo:.2f}",
                            test=f"{record.get('test_elbo', math.nan):.2f}")
            log.debug("epoch %d: %s", epoch + 1, record)
            for hook in hooks:
                hook.after_epoch(state)
    finally:
        bar.close()
    return TrainResult(state.history, train_elbo, len(state.history), state.seconds)
