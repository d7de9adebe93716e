"""The run layer: a :class:`~pyro_vae.run_config.RunConfig` in, a complete run folder out.

Every front end goes through these functions -- ``pyro-vae train/evaluate/sample/plot/
diagnose`` and every example that trains -- so every folder opens with every command::

    from pyro_vae import RunConfig, TrainConfig, run, resume, open_run

    result = run(RunConfig.for_model("vae", dataset="digits", train=TrainConfig(epochs=5),
                                     latent_dim=8), "runs/a")
    result = resume("runs/a", epochs=10)       # continue exactly where it stopped
    opened = open_run("runs/a")                # model with its weights, data, config

* :func:`run` checks every setting (model spec and settings, objective against the model,
  data set, evaluation) before anything is written, then writes ``config.json``, trains with
  a checkpoint after every epoch (:mod:`pyro_vae.hooks`) and calls :func:`finish`;
* :func:`resume` reopens a folder and continues it; restated settings must equal the saved
  ones except those in :data:`RESUMABLE`;
* :func:`finish` evaluates (:func:`pyro_vae.metrics.evaluate_all`, seeded by
  ``EvalConfig.seed`` so ``pyro-vae evaluate`` repeats the numbers), merges ``metrics.json``
  and draws the pictures;
* :func:`open_run` rebuilds a trained run's model (also a user's own class, from the spec the
  folder recorded) with its weights and data.

A folder has one writer at a time: :func:`run`, :func:`resume`, :func:`finish`,
:func:`evaluate_run` (and :func:`pyro_vae.diagnostics.diagnose`) hold its lock
(:meth:`~pyro_vae.runs.RunFolder.lock`) while they work, so a second writer is refused with a
:class:`~pyro_vae.errors.RunFolderError` before it writes anything, and a folder that cannot be
written is refused before any training or evaluation. A new run that fails before its first
checkpoint leaves nothing behind.

Under torchrun (:mod:`pyro_vae.distributed`) every process calls the same function; rank 0
alone checks, locks and writes the folder (the others write nothing and learn the outcome:
the same error line on every rank), and the final evaluation's importance sampling is
sharded over the test points.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from pyro_vae import distributed, objectives
from pyro_vae.checkpoint import check_state
from pyro_vae.data import DataConfig, Dataset, load_dataset, resolve_dataset
from pyro_vae.errors import ConfigError, RunFolderError, model_code_errors
from pyro_vae.metrics import evaluate_all, json_ready
from pyro_vae.models.base import LatentModel
from pyro_vae.models.registry import resolve
from pyro_vae.run_config import EvalConfig, RunConfig
from pyro_vae.runs import CONFIG, LOCK, RunFolder, atomic_write, check_new_folder, locked
from pyro_vae.runtime import resolve_device, set_seed
from pyro_vae.structure import global_latent_sites
from pyro_vae.train import TrainConfig, TrainResult, check_data, train

log = logging.getLogger(__name__)
RESUMABLE = ("epochs", "device", "engine")  # training settings a resumed run may change
DATA_RESUMABLE = ("data_on",)  # data options a resumed run may change (same minibatches)


@dataclass
class Run:
    """A run folder with its config, the model (weights loaded once trained) and its data."""

    folder: RunFolder
    config: RunConfig
    model: LatentModel
    data: Dataset

    @property
    def path(self) -> Path:
        return self.folder.path


@dataclass
class RunResult:
    run: Run
    training: TrainResult
    metrics: dict


def build(config: RunConfig, device: torch.device | str | None = None,
          folder: RunFolder | None = None) -> Run:
    """Seed, load the data, build the model and check that it takes the data: everything a
    run needs before it writes anything. ``device`` defaults to ``config.train.device``."""
    ref = config.model_ref()
    settings = config.model_settings(ref)
    objectives.check_model(config.train, ref.cls)
    device = distributed.local_device(
        resolve_device(str(device) if device is not None else config.train.device))
    set_seed(config.train.seed)
    data = load_dataset(config.dataset, binarize=config.binarize, device=device,
                        options=config.data)
    if config.binarize is None:  # a path's default is known once its files are read
        config.binarize = data.binarize
    model = _construct(ref.cls, settings, data.shape)
    model.to(device)
    check_data(model, data)
    return Run(folder or RunFolder("."), config, model, data)


def _construct(cls: type[LatentModel], settings: Any, shape: tuple[int, ...]) -> LatentModel:
    with model_code_errors(cls, "building the model"):
        return cls(settings, shape)


def _writable_folder(out: str | os.PathLike) -> RunFolder:
    """The folder of a new run, refused before any work if it is empty, a file, under a file,
    not writable or already holds a run (:func:`pyro_vae.runs.check_new_folder`)."""
    folder = RunFolder(check_new_folder(out))
    _refuse_a_run(folder)
    return folder


def _refuse_a_run(folder: RunFolder) -> None:
    if folder.has_checkpoint():
        raise ConfigError(f"{folder.path} already holds a run; choose another --out, or "
                          f"continue it (pyro-vae train --resume --out {folder.path})")


def _undo_new_run(folder: RunFolder):
    """What puts the folder back as it is now (before a new run writes into it): a function
    that removes the files made since and restores ``config.json``."""
    before = folder.names()
    config = folder.file(CONFIG)
    kept = (config.read_bytes(), config.stat().st_mode) if config.is_file() else None

    def undo() -> None:
        for name in folder.names() - before - {LOCK}:
            with contextlib.suppress(OSError):
                folder.file(name).unlink()
        if kept is not None:
            with contextlib.suppress(OSError, RunFolderError):
                if not config.is_file() or config.read_bytes() != kept[0]:
                    atomic_write(config, kept[0])
                config.chmod(stat.S_IMODE(kept[1]))
    return undo


def run(config: RunConfig, out: str | os.PathLike, *, progress: bool = True) -> RunResult:
    """Train a new run into the folder ``out`` and finish it (see the module docstring).

    The folder is checked before any work and locked (one writer, :meth:`RunFolder.lock`)
    before anything is written. A run that fails or is interrupted before its first
    checkpoint leaves nothing behind: the files it wrote are removed (a ``config.json`` it
    replaced is put back) and so is the folder if this call made it. After the first
    checkpoint everything stays, to be resumed."""
    distributed.setup(resolve_device(config.train.device))  # under torchrun only
    main = distributed.is_main()
    folder = RunFolder(distributed.main_does(lambda: _writable_folder(out).path))
    opened = build(config, folder=folder)
    with contextlib.ExitStack() as stack:
        lock = distributed.main_does(
            lambda: stack.enter_context(folder.lock("train", create=True)), share=False)
        undo = distributed.main_does(lambda: _start(folder, config), share=False)
        try:
            if config.init_from is not None:
                init_weights(opened.model, config.init_from)
            data = opened.data
            log.info("training %s on %s (%s, %d points) on %s%s -> %s", config.model,
                     config.dataset, data.binarize, data.num_train, data.device,
                     " (fed from host memory)" if data.on_host else "", folder.path)
            result = train(opened.model, data, config.train, folder,
                           progress=progress and main)
        except BaseException:
            if main and not folder.has_checkpoint():
                undo()
                lock.remove_created = True
            raise
        metrics = finish(opened, result, progress=progress)
        distributed.done()
        return RunResult(opened, result, metrics)


def init_weights(model: LatentModel, path: str | os.PathLike) -> None:
    """Load the trained module state of the run folder ``path`` into ``model`` (a new run's
    ``init_from``): the architectures must match."""
    source = RunFolder(path)
    if not source.has_checkpoint():
        raise ConfigError(f"init_from {path} holds no trained run (no checkpoint)")
    state = source.load_checkpoint(map_location="cpu")
    check_state(state, str(source.checkpoint_path), resuming=False)
    source.load_model_state(model, state)


def _start(folder: RunFolder, config: RunConfig):
    """Write a new run's ``config.json`` into the locked ``folder``; returns what undoes it."""
    _refuse_a_run(folder)  # another process may have trained into it meanwhile
    if folder.is_run():  # a run stopped before its first checkpoint: nothing to lose
        log.warning("%s holds a run that never reached a checkpoint; starting it over",
                    folder.path)
    undo = _undo_new_run(folder)
    try:
        folder.write_config(config.to_json())
    except BaseException:
        undo()
        raise
    return undo


def _refuse_change(name: str, given: Any, kept: Any, what: str) -> None:
    shown = ",".join(map(str, given)) if isinstance(given, tuple) else given
    raise ConfigError(f"--{name.replace('_', '-')} {shown} differs from the run's {kept}; "
                      f"a resumed run keeps its {what}")


def restated(saved: RunConfig, changes: dict[str, Any], *, model: str | None = None,
             dataset: str | None = None, binarize: str | None = None,
             model_settings: dict[str, Any] | None = None,
             data: dict[str, Any] | None = None) -> RunConfig:
    """``saved`` with ``changes`` to its training settings. Anything may be restated; a value
    that differs from the run's is a :class:`ConfigError` naming it, except the training
    settings in :data:`RESUMABLE` and the data options in :data:`DATA_RESUMABLE`. ``model``
    (a spec), ``dataset`` (a name or a path to the same files), ``binarize``, ``data``'s other
    options and ``model_settings`` (typed by the model's config dataclass) must all be the
    run's own."""
    if model is not None and resolve(model).source != saved.model_ref().source:
        raise ConfigError(f"this run is of model {saved.model}, not {model}")
    if dataset is not None:
        dataset = resolve_dataset(dataset).spec
    if data:
        options = DataConfig.from_json({**saved.data.to_json(), **data})
        for name in data:
            given, kept = getattr(options, name), getattr(saved.data, name)
            if given != kept and name not in DATA_RESUMABLE:
                _refuse_change(name, given, kept, "model and data settings")
        saved = replace(saved, data=options)
    for name, given, kept in (("dataset", dataset, saved.dataset),
                              ("binarize", binarize, saved.binarize)):
        if given is not None and given != kept:
            _refuse_change(name, given, kept, "model and data settings")
    if model_settings:
        kept = asdict(saved.model_settings())
        typed = asdict(replace(saved, model_config={**kept, **model_settings}).model_settings())
        for name in model_settings:
            if typed[name] != kept[name]:
                _refuse_change(name, typed[name], kept[name], "model and data settings")
    train_values = asdict(saved.train)
    for key, value in changes.items():
        if key not in train_values:
            raise ConfigError(f"unknown training setting {key!r}")
        if value != train_values[key] and key not in RESUMABLE:
            _refuse_change(key, value, train_values[key],
                           f"settings (it may change {', '.join(RESUMABLE)})")
        train_values[key] = value
    return replace(saved, train=TrainConfig(**train_values))


def resume(out: str | os.PathLike, *, progress: bool = True, eval: EvalConfig | None = None,
           model: str | None = None, dataset: str | None = None, binarize: str | None = None,
           model_settings: dict[str, Any] | None = None, data: dict[str, Any] | None = None,
           **train_changes: Any) -> RunResult:
    """Continue the run in ``out`` from its last checkpoint, e.g. ``resume(out, epochs=200)``;
    see :func:`restated` for what may be restated and what may change. The folder is locked
    (one writer) before anything else, so one that cannot be written is refused at once.
    Under torchrun every rank reads ``config.json`` (the folder must be reachable from every
    node); rank 0 alone locks the folder and reads the checkpoint."""
    folder = RunFolder(out)
    launched = distributed.launched()
    with contextlib.ExitStack() as stack:
        if not launched:
            stack.enter_context(folder.lock("train --resume"))
        saved = read_config(folder)
        config = restated(saved, train_changes, model=model, dataset=dataset,
                          binarize=binarize, model_settings=model_settings, data=data)
        if eval is not None:
            config = replace(config, eval=eval)
        distributed.setup(resolve_device(config.train.device))  # under torchrun only
        if launched:  # rank 0 locks; a refusal is every rank's error line
            distributed.main_does(
                lambda: stack.enter_context(folder.lock("train --resume")), share=False)
        distributed.main_does(lambda: _check_resumable(folder, config), share=False)
        opened = build(config, folder=folder)
        log.info("resuming %s (%s on %s) on %s%s", folder.path, config.model,
                 config.dataset, opened.data.device,
                 " (fed from host memory)" if opened.data.on_host else "")
        result = train(opened.model, opened.data, config.train, folder, resume=True,
                       progress=progress and distributed.is_main())
        # only once its checkpoint has loaded and trained
        distributed.main_does(lambda: folder.write_config(config.to_json()))
        metrics = finish(opened, result, progress=progress)
        distributed.done()
        return RunResult(opened, result, metrics)


def _check_resumable(folder: RunFolder, config: RunConfig) -> None:
    if not folder.has_checkpoint():
        raise RunFolderError(f"{folder.path} has no checkpoint to resume from")
    state = folder.load_checkpoint(map_location="cpu")  # checked before anything runs
    check_state(state, str(folder.checkpoint_path))
    if config.train.epochs < state["epoch"]:
        raise ConfigError(f"--epochs {config.train.epochs} is fewer than the {state['epoch']} "
                          f"epochs {folder.path} has trained; a resumed run continues to a "
                          f"larger --epochs (re-evaluate it with pyro-vae evaluate)")


def run_metrics(config: RunConfig, result: TrainResult, device: torch.device) -> dict:
    """What ``metrics.json`` records of the training itself."""
    t = config.train
    return {"model": config.model, "dataset": config.dataset, "binarize": config.binarize,
            "objective": t.objective, "num_particles": t.num_particles,
            "epochs": result.epochs, "seconds": round(result.seconds, 2), "device": str(device),
            "train_elbo": result.train_elbo, "beta": t.beta,
            "kl_warmup_epochs": t.kl_warmup_epochs, "free_bits": t.free_bits,
            "final_kl_weight": result.history[-1].get("kl_weight") if result.history else None}


def finish(opened: Run, result: TrainResult | None = None, *, progress: bool = True) -> dict:
    """Evaluate a trained run, merge ``metrics.json`` and draw its pictures; returns the
    merged metrics. ``result`` (the training's) adds the training's own figures. Holds the
    folder's lock (re-entrant: :func:`run` and :func:`resume` hold it already). Under
    torchrun every rank evaluates (the importance sampling of the bounds is sharded over the
    test points and gathered: :func:`pyro_vae.importance.sampled_bounds`; the rest, cheap,
    runs on each rank alike) and rank 0 alone writes; the others get its metrics."""
    if not distributed.active():
        with opened.folder.lock("finish"):
            return _finish(opened, result, progress)
    # every rank evaluates (the importance sampling is sharded over the test points)
    evaluated = _evaluation(opened, result, progress and distributed.is_main())

    def write() -> dict:
        with opened.folder.lock("finish"):
            return _write(opened, result, *evaluated)
    return distributed.main_does(write)


def _finish(opened: Run, result: TrainResult | None, progress: bool) -> dict:
    return _write(opened, result, *_evaluation(opened, result, progress))


def _evaluation(opened: Run, result: TrainResult | None,
                progress: bool) -> tuple[dict, list[str]]:
    """The metrics of a finished run (not written yet), and its global latent sites. The
    evaluation is seeded by ``EvalConfig.seed`` (under torchrun, ranks > 0 from it and their
    rank, as in training)."""
    model, data, config = opened.model, opened.data, opened.config
    metrics = run_metrics(config, result, data.device) if result is not None else {}
    global_sites = global_latent_sites(model, data.test_x,
                                       data.test_y if model.is_conditional else None)
    set_seed(config.eval.seed)
    distributed.reseed_rank(config.eval.seed)
    with model_code_errors(model, "evaluation"):
        metrics |= evaluate_all(model, data, config.eval, progress=progress,
                                global_sites=global_sites)
    return metrics, global_sites


def _write(opened: Run, result: TrainResult | None, metrics: dict,
           global_sites: list[str]) -> dict:
    """Merge ``metrics`` into ``metrics.json`` and draw the run's pictures."""
    from pyro_vae.latent_plots import save_latent_pictures
    from pyro_vae.plots import save_run_pictures

    model, data, config = opened.model, opened.data, opened.config
    merged = opened.folder.update_metrics(json_ready(metrics))
    if config.eval.pictures:
        with model_code_errors(model, "drawing the run's pictures"):
            save_run_pictures(model, data, opened.path, result.history if result else None)
            if not global_sites:  # codes are per data point
                save_latent_pictures(model, data, opened.path)
    return merged


def read_config(folder: RunFolder) -> RunConfig:
    return RunConfig.from_json(folder.read_config(), str(folder.path / "config.json"))


def open_run(path: str | os.PathLike, device: torch.device | str = "cpu") -> Run:
    """A trained run: its model rebuilt from ``config.json`` (any model spec) with the weights
    of its last checkpoint, in eval mode, and its data, on ``device``."""
    return _open(path, device)[0]


def _open(path: str | os.PathLike, device: torch.device | str) -> tuple[Run, dict]:
    """:func:`open_run`, and the checkpoint it loaded."""
    folder = RunFolder(path)
    config = read_config(folder)
    state = folder.load_checkpoint(map_location="cpu")
    check_state(state, str(folder.checkpoint_path), resuming=False)
    try:
        opened = build(config, device=device, folder=folder)
    except ConfigError as exc:
        if isinstance(exc, RunFolderError):
            raise
        raise RunFolderError(f"{folder.path / 'config.json'} does not describe a model "
                             f"({exc})") from None
    folder.load_model_state(opened.model, state)
    opened.model.eval()
    return opened, state


@locked("evaluate")
def evaluate_run(path: str | os.PathLike, settings: EvalConfig | None = None,
                 device: torch.device | str = "cpu", progress: bool = True) -> dict:
    """Evaluate a trained run again (``pyro-vae evaluate``): the metrics registry with
    ``settings`` (default: the run's own), merged into ``metrics.json``; holds the folder's
    lock."""
    opened = open_run(path, device)
    settings = opened.config.eval if settings is None else settings
    opened.config = replace(opened.config, eval=replace(settings, pictures=False))
    return finish(opened, progress=progress)


def load_trained(path: str | os.PathLike, device: torch.device | str = "cpu"):
    """``(model, data, config dict, checkpoint)`` of a trained run (the older interface of
    :func:`open_run`)."""
    opened, state = _open(path, device)
    return opened.model, opened.data, opened.config.to_json(), state


__all__ = ["DATA_RESUMABLE", "RESUMABLE", "Run", "RunResult", "build", "evaluate_run", "finish",
           "load_trained", "open_run", "read_config", "restated", "resume", "run", "run_metrics"]
