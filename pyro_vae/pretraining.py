"""Greedy layer-wise pre-training: a model's stages as a sequence of runs.

A model with the capability ``greedy_stages(config) -> L`` and a ``stage`` setting (the
stacked autoencoder, :mod:`pyro_vae.models.stacked`) is trained by :func:`greedy_pretrain`
one stage at a time, each stage a run folder of its own::

    out/stage-1     stage=1, from the model's initialization
    out/stage-2     stage=2, init_from=out/stage-1 (layer 1 frozen)
    ...
    out/stage-L     stage=L, init_from=out/stage-(L-1)
    out/finetune    stage=0 (every layer, end to end), init_from=out/stage-L   (optional)

Each is an ordinary run (``config.json`` records its stage and ``init_from``), so each opens
with ``pyro-vae evaluate`` and ``open_run``; the library's training loop is not told about
stages: the model's programs register only the pair a stage trains, so the optimizer never
sees the frozen layers.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from pyro_vae.errors import ConfigError
from pyro_vae.run_config import RunConfig
from pyro_vae.runner import RunResult, run

FINETUNE = "finetune"


def stage_folder(out: str | os.PathLike, stage: int) -> Path:
    """The run folder of a stage under ``out`` (0: the fine-tuning run)."""
    return Path(out) / (FINETUNE if stage == 0 else f"stage-{stage}")


def greedy_stages(config: RunConfig) -> int:
    """The number of greedy stages of ``config``'s model (ConfigError if it has none)."""
    ref = config.model_ref()
    stages = getattr(ref.cls, "greedy_stages", None)
    if stages is None:
        raise ConfigError(f"model {config.model} has no greedy stages (greedy_stages); "
                          "train it with pyro-vae train")
    return stages(config.model_settings(ref))


def greedy_pretrain(config: RunConfig, out: str | os.PathLike, *,
                    finetune_epochs: int = 0, progress: bool = False) -> list[RunResult]:
    """Train ``config``'s model stage by stage into ``out/stage-1`` ... ``out/stage-L``
    (``config.train.epochs`` each), each started from the previous stage's weights, then,
    if ``finetune_epochs``, every layer end to end into ``out/finetune``. Returns the runs'
    results in order; the last one's model is the trained stack."""
    if finetune_epochs < 0:
        raise ConfigError(f"finetune_epochs must be >= 0, got {finetune_epochs}")
    stages = list(range(1, greedy_stages(config) + 1)) + ([0] if finetune_epochs else [])
    results: list[RunResult] = []
    previous: Path | None = None
    for stage in stages:
        train = config.train if stage else replace(config.train, epochs=finetune_epochs)
        staged = replace(config, model_config={**config.model_config, "stage": stage},
                         train=train, init_from=None if previous is None else str(previous))
        folder = stage_folder(out, stage)
        results.append(run(staged, folder, progress=progress))
        previous = folder
    return results
