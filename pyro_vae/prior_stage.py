"""A learned prior as a second stage of a run: a model's prior fitted after the rest of it.

A model with the capability ``prior_stage(config) -> (setting changes, epochs) | None`` (the
VQ-VAE, :mod:`pyro_vae.models.vqvae`: ``--prior-epochs N``) is trained by
:func:`run_with_prior` in two runs, the second inside the first one's folder::

    out/          the model as configured (e.g. a VQ-VAE with uniform codes)
    out/prior     the same model with the changed settings (prior="pixelcnn"), started from
                  out's trained weights (RunConfig.init_from), for ``epochs`` epochs

Each is an ordinary run folder (``pyro-vae evaluate/sample`` open either; ``train --resume``
continues either), and the training loop is not told about stages: the model's programs
register only the part a stage trains. ``pyro-vae train`` calls :func:`run_with_prior` and
:func:`resume_with_prior`, so ``pyro-vae train vqvae --prior-epochs 30`` is one command.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from pyro_vae.run_config import RunConfig
from pyro_vae.runner import RunFolder, RunResult, read_config, resume, run

PRIOR = "prior"


def prior_folder(out: str | os.PathLike) -> Path:
    """The folder of the prior's stage of the run in ``out``."""
    return Path(out) / PRIOR


def prior_config(config: RunConfig, out: str | os.PathLike) -> RunConfig | None:
    """The run that fits the prior after the run of ``config`` in ``out``, or None when the
    model has no such stage (or this run is that stage)."""
    ref = config.model_ref()
    stage = getattr(ref.cls, "prior_stage", None)
    follow = stage(config.model_settings(ref)) if stage is not None else None
    if follow is None:
        return None
    changes, epochs = follow
    return replace(config, model_config={**config.model_config, **changes},
                   train=replace(config.train, epochs=epochs),
                   init_from=str(Path(out).absolute()))


def run_with_prior(config: RunConfig, out: str | os.PathLike, *,
                   progress: bool = True) -> list[RunResult]:
    """:func:`~pyro_vae.runner.run` of ``config`` into ``out``, then, if the model has a prior
    stage, the prior's run into ``out/prior``; the results in order."""
    results = [run(config, out, progress=progress)]
    second = prior_config(config, out)
    if second is not None:
        results.append(run(second, prior_folder(out), progress=progress))
    return results


def resume_with_prior(out: str | os.PathLike, *, progress: bool = True,
                      **changes) -> list[RunResult]:
    """:func:`~pyro_vae.runner.resume` of the run in ``out``, then its prior's stage: started
    if ``out/prior`` holds no trained run yet (a run interrupted before it), else left as it
    is (resume that folder itself to continue it)."""
    results = [resume(out, progress=progress, **changes)]
    second = prior_config(read_config(RunFolder(out)), out)
    if second is not None and not RunFolder(prior_folder(out)).has_checkpoint():
        results.append(run(second, prior_folder(out), progress=progress))
    return results
