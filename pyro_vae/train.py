"""The SVI loop: minibatches, progress, per-epoch checkpoints, exact resume, a NaN guard.

It takes any :class:`~pyro_vae.models.base.LatentModel` and a :class:`~pyro_vae.data.Dataset`,
never asks which model it is, logs through :mod:`logging`, shows a tqdm bar, and returns its
results (minGPT's trainer, NumPyro's ``SVI.run``)::

    result = train(model, data, TrainConfig(epochs=10), run=RunFolder("runs/a"))

Each epoch ends with the test ELBO (one sample per point) and an atomic checkpoint holding the
module's ``state_dict``, the optimizer state, the Pyro param store entries that live outside
the module, every RNG state, the history and the elapsed seconds; ``resume=True`` continues
from it and reaches the same parameters as an uninterrupted run (CPU, same seed).

Each step runs on the fast path of :mod:`pyro_vae.engine` (``engine="fast"``, the default) or
through Pyro's ``SVI`` object (``engine="svi"``); both give the same parameters. The loss stays
on the device: the NaN guard reads it every step on the CPU and every ``GPU_CHECK_EVERY``
steps on a GPU, where each read would stall the queue of kernels.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass

import pyro
import torch
from tqdm.auto import tqdm

from pyro_vae.annealing import (
    FREE_BITS_OBJECTIVES,
    kl_weight,
    make_free_bits_objective,
    scaled_programs,
)
from pyro_vae.data import Dataset
from pyro_vae.engine import ENGINES, LR_SCHEDULES, lr_factor, make_stepper
from pyro_vae.errors import (
    ConfigError,
    DataError,
    RunFolderError,
    TrainingDiverged,
    check_choice,
    check_positive,
)
from pyro_vae.estimators.baselines import BASELINES, optim_args
from pyro_vae.evaluate import mean_elbo
from pyro_vae.models.base import LatentModel
from pyro_vae.objectives import OBJECTIVES, make_objective
from pyro_vae.runs import RunFolder
from pyro_vae.runtime import check_device_name, rng_state, set_rng_state

log = logging.getLogger(__name__)
GPU_CHECK_EVERY = 25  # steps between reads of the loss on a GPU (the NaN guard, the bar)


@dataclass
class TrainConfig:
    """Settings of the SVI loop (``pyro-vae train --help`` lists them)."""

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

    def __post_init__(self) -> None:
        check_positive("epochs", self.epochs)
        check_positive("batch size", self.batch_size)
        check_positive("num-particles", self.num_particles)
        check_positive("learning rate", self.lr, integer=False)
        check_positive("adam eps", self.adam_eps, integer=False)
        check_choice("objective", self.objective, OBJECTIVES)
        check_device_name(self.device)
        check_choice("baseline", self.baseline, BASELINES)
        check_choice("engine", self.engine, ENGINES)
        check_choice("lr schedule", self.lr_schedule, LR_SCHEDULES)
        if self.lr_schedule != "constant" and (self.engine == "svi" or self.jit
                                               or self.objective == "tracegraph"):
            raise ConfigError(f"--lr-schedule {self.lr_schedule} needs the fast engine, which "
                              "serves every objective but tracegraph and --jit")
        check_positive("baseline lr", self.baseline_lr, integer=False)
        if self.baseline != "none" and self.objective != "tracegraph":
            raise ConfigError(f"--baseline {self.baseline} applies to --objective tracegraph "
                              f"only, not {self.objective}")
        check_schedule(self)


@dataclass
class TrainResult:
    history: list[dict]
    train_elbo: float  # mean per-point training objective over the last epoch
    epochs: int
    seconds: float


def check_schedule(config: TrainConfig) -> None:
    """The KL schedule's settings: beta >= 0, warm-up epochs >= 0, free bits >= 0, and no
    warm-up under jit (a compiled trace would freeze the first weight)."""
    if not config.beta >= 0:
        raise ConfigError(f"beta must be >= 0, got {config.beta}")
    if isinstance(config.kl_warmup_epochs, bool) or not isinstance(config.kl_warmup_epochs, int) \
            or config.kl_warmup_epochs < 0:
        raise ConfigError(f"kl-warmup-epochs must be a whole number >= 0, got "
                          f"{config.kl_warmup_epochs!r}")
    if not config.free_bits >= 0:
        raise ConfigError(f"free-bits must be >= 0 nats, got {config.free_bits}")
    if config.free_bits > 0 and config.objective not in FREE_BITS_OBJECTIVES:
        raise ConfigError(f"--free-bits works with the {' and '.join(FREE_BITS_OBJECTIVES)} "
                          f"objectives, not {config.objective}")
    if config.free_bits > 0 and config.jit:
        raise ConfigError("--free-bits has no jit variant; drop --jit")
    if config.jit and (config.kl_warmup_epochs or config.beta != 1.0):
        raise ConfigError("a KL weight other than 1 (--beta, --kl-warmup-epochs) needs the "
                          "plain objective; drop --jit")


def _module_prefix(model: LatentModel) -> str:
    return f"{model.name}$$$"


def _extra_params(model: LatentModel) -> dict:
    """Param store entries that are not the module's own parameters."""
    store = pyro.get_param_store().get_state()
    keep = [k for k in store["params"] if not k.startswith(_module_prefix(model))]
    return {"params": {k: store["params"][k] for k in keep},
            "constraints": {k: store["constraints"][k] for k in keep}}


def _checkpoint(model, stepper, epoch, history, seconds, config) -> dict:
    return {
        "epoch": epoch,
        "model": model.state_dict(),
        "optim": stepper.get_state(),
        "param_store": _extra_params(model),
        "rng": rng_state(),
        "history": history,
        "seconds": seconds,
        "train_config": asdict(config),
    }


def _restore(state: dict, model: LatentModel, stepper, run: RunFolder):
    run.load_model_state(model, state)
    pyro.clear_param_store()
    pyro.get_param_store().set_state(state["param_store"])
    stepper.set_state(state["optim"])
    set_rng_state(state["rng"])


def _check_finite(loss: float, epoch: int, step: int, run: RunFolder | None) -> None:
    """Raise :class:`TrainingDiverged` on a NaN/inf loss, naming what was kept."""
    if not math.isfinite(loss):
        where = (f"the checkpoint of epoch {epoch} in {run.path} is kept"
                 if run is not None and epoch > 0 else "nothing was saved")
        raise TrainingDiverged(f"the loss became {loss} at epoch {epoch + 1}, step {step + 1}; "
                               f"{where}; try a smaller --lr")


def check_data(model: LatentModel, data: Dataset) -> None:
    """Raise :class:`~pyro_vae.errors.DataError` if the model cannot score ``data``."""
    if data.kind not in model.data_kinds:
        raise DataError(f"model {model.name} takes {' or '.join(model.data_kinds)} data; data "
                        f"set {data.name} holds {data.kind} data")
    model.check_data(data.train_eval_x(limit=1000), "the training data")
    model.check_data(data.test_x, "the test data")


def train(model: LatentModel, data: Dataset, config: TrainConfig, run: RunFolder | None = None,
          *, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train ``model`` on ``data`` by SVI with Adam; see the module docstring.

    The caller seeds the RNGs (``pyro_vae.runtime.set_seed(config.seed)``) before building the
    model, so initialization is part of the seeded run, and loads ``data`` onto the device
    (``config.device``; a mismatch is an error). Training runs where the data lives.
    Raises :class:`TrainingDiverged` on a NaN/inf loss (the checkpoint of the last finished
    epoch stays as it was).
    """
    if config.device != "auto" and torch.device(config.device).type != data.device.type:
        raise ConfigError(f"the config asks for device {config.device} but the data lives on "
                          f"{data.device}: load it with load_dataset(..., device=...)")
    model.to(data.device)
    check_data(model, data)
    if config.free_bits > 0:
        elbo = make_free_bits_objective(config.objective, config.free_bits, model,
                                        num_particles=config.num_particles, jit=config.jit)
    else:
        elbo = make_objective(config.objective, config.num_particles,
                              max_plate_nesting=model.max_plate_nesting, jit=config.jit,
                              baseline=config.baseline)
    model_fn, guide_fn, kl_scale = scaled_programs(model, model.latent_sites, config.beta)
    stepper = make_stepper(config.engine, model_fn, guide_fn, elbo, lr=config.lr,
                           eps=config.adam_eps,
                           optim_args=optim_args(config.lr, config.adam_eps, config.baseline_lr
                                                 if config.baseline == "neural" else None))
    check_every = 1 if data.device.type == "cpu" else GPU_CHECK_EVERY
    n, nb = data.num_train, data.num_batches(config.batch_size)
    start_epoch, history, seconds = 0, [], 0.0
    if resume:
        if run is None or not run.has_checkpoint():
            raise RunFolderError("nothing to resume: the run folder has no checkpoint")
        state = run.load_checkpoint(map_location=data.device)
        _restore(state, model, stepper, run)
        start_epoch, history, seconds = state["epoch"], state["history"], state["seconds"]
        log.info("resuming %s at epoch %d of %d", run.path, start_epoch, config.epochs)
        if start_epoch >= config.epochs:
            log.info("the run already has %d epochs; nothing to train", start_epoch)
    else:
        pyro.clear_param_store()
        init = getattr(model, "init_from_data", None)  # e.g. k-means++ for a mixture
        if init is not None:
            init(data.train_x)

    train_elbo = history[-1]["train_elbo"] if history else math.nan
    bar = tqdm(total=config.epochs * nb, initial=start_epoch * nb, disable=not progress,
               unit="step", desc="training", dynamic_ncols=True)
    try:
        for epoch in range(start_epoch, config.epochs):
            t0 = time.perf_counter()
            model.train()
            stepper.set_lr_factor(lr_factor(config.lr_schedule, epoch))
            total = torch.zeros((), device=data.device)
            for step, (x, y) in enumerate(data.batches(config.batch_size)):
                kl_scale.weight = kl_weight(config.beta, config.kl_warmup_epochs, epoch, step, nb)
                loss = stepper.step(x, y, num_data=n)
                total += loss.to(total.device)
                bar.update(1)
                if (step + 1) % check_every == 0 or step + 1 == nb:
                    _check_finite(float(loss), epoch, step, run)
                if step % 50 == 0:
                    bar.set_postfix(epoch=epoch + 1, loss=f"{float(loss) / n:.2f}",
                                    refresh=False)
            train_elbo = -float(total) / (nb * n)
            model.eval()
            test_elbo = mean_elbo(model, data.test_x, data.test_y if model.is_conditional
                                  else None)
            seconds += time.perf_counter() - t0
            history.append({"epoch": epoch + 1, "train_elbo": train_elbo,
                            "test_elbo": test_elbo, "seconds": round(seconds, 3),
                            "kl_weight": kl_scale.weight,
                            "lr": config.lr * lr_factor(config.lr_schedule, epoch)})
            bar.set_postfix(epoch=epoch + 1, train=f"{train_elbo:.2f}", test=f"{test_elbo:.2f}")
            log.debug("epoch %d: train ELBO %.3f, test ELBO %.3f", epoch + 1, train_elbo,
                      test_elbo)
            if run is not None:
                run.save_checkpoint(_checkpoint(model, stepper, epoch + 1, history, seconds,
                                                config))
                run.write_history(history)
    finally:
        bar.close()
    return TrainResult(history, train_elbo, len(history), seconds)
