"""A run is a folder: ``config.json``, ``checkpoint.pt``, ``history.csv``, ``metrics.json``, PNGs.

File I/O only: this module knows no models. What the files mean is the run layer's
(:mod:`pyro_vae.run_config`, :mod:`pyro_vae.runner`).

Every file is written atomically (to a temporary file in the same folder, then renamed over
the old one), so an interrupted or failed write never leaves a half-written checkpoint and the
last good one survives.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from pyro_vae.errors import RunFolderError

CONFIG = "config.json"
CHECKPOINT = "checkpoint.pt"
HISTORY = "history.csv"
METRICS = "metrics.json"


def atomic_write(path: Path, write: Callable[[io.BufferedWriter], None]) -> None:
    """Write ``path`` through a temporary file and ``os.replace``; the old file stays on error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    text = json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n"  # valid JSON
    atomic_write(path, lambda f: f.write(text.encode()))


class RunFolder:
    """The files of one run; every reader raises :class:`RunFolderError` with the path named."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def checkpoint_path(self) -> Path:
        return self.file(CHECKPOINT)

    def has_checkpoint(self) -> bool:
        return self.checkpoint_path.is_file()

    def is_run(self) -> bool:
        return self.file(CONFIG).is_file()

    # -- config -------------------------------------------------------------------------
    def write_config(self, config: dict) -> None:
        write_json(self.file(CONFIG), config)

    def read_config(self) -> dict:
        path = self.file(CONFIG)
        if not self.path.is_dir():
            raise RunFolderError(f"{self.path} is not a folder; give the --out folder of a run")
        if not path.is_file():
            raise RunFolderError(f"{self.path} is not a run folder (no {CONFIG}); give the "
                                 "--out folder of a `pyro-vae train` run")
        try:
            config = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise RunFolderError(f"{path} is unreadable or not JSON ({exc})") from None
        if not isinstance(config, dict) or not {"model", "dataset", "train"} <= set(config):
            raise RunFolderError(f"{path} is not a pyro_vae run config (missing keys)")
        return config

    # -- checkpoint ---------------------------------------------------------------------
    def save_checkpoint(self, state: dict) -> None:
        atomic_write(self.checkpoint_path, lambda f: torch.save(state, f))

    def load_checkpoint(self, map_location: torch.device | str = "cpu") -> dict:
        path = self.checkpoint_path
        if not path.is_file():
            raise RunFolderError(f"{self.path} has no {CHECKPOINT}; train it first "
                                 f"(pyro-vae train MODEL --out {self.path})")
        try:
            # our own file: it holds Pyro constraint objects and RNG tuples, so not weights-only
            state = torch.load(path, map_location=map_location, weights_only=False)
        except Exception as exc:  # truncated zip, wrong format, unpickling error...
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise RunFolderError(f"checkpoint {path} is corrupt or unreadable ({reason})"
                                 ) from None
        if not isinstance(state, dict) or not {"model", "epoch", "optim"} <= set(state):
            raise RunFolderError(f"checkpoint {path} is not a pyro_vae checkpoint")
        return state

    def load_model_state(self, model: torch.nn.Module, state: dict) -> None:
        """Load a checkpoint's module state, or say that it belongs to another model."""
        try:
            model.load_state_dict(state["model"])
        except (RuntimeError, KeyError) as exc:
            raise RunFolderError(f"checkpoint {self.checkpoint_path} does not match the model in "
                                 f"{self.path / CONFIG} ({str(exc).splitlines()[0]})") from None

    # -- history and metrics ------------------------------------------------------------
    def write_history(self, rows: list[dict]) -> None:
        if not rows:
            return
        buf = io.StringIO()
        names = list(dict.fromkeys(k for row in rows for k in row))  # old rows may lack some
        writer = csv.DictWriter(buf, fieldnames=names, restval="")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(self.file(HISTORY), lambda f: f.write(buf.getvalue().encode()))

    def read_metrics(self) -> dict:
        path = self.file(METRICS)
        if not path.is_file():
            return {}
        try:
            metrics = json.loads(path.read_text())
        except ValueError:
            return {}
        if not isinstance(metrics, dict):
            raise RunFolderError(f"{path} holds a JSON {type(metrics).__name__}, not the "
                                 "metrics object pyro_vae writes; move it aside to start it anew")
        return metrics

    def update_metrics(self, metrics: dict) -> dict:
        """Merge ``metrics`` into ``metrics.json`` and return the merged dict."""
        merged = {**self.read_metrics(), **metrics}
        write_json(self.file(METRICS), merged)
        return merged
