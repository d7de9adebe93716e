"""A run is a folder: ``config.json``, ``checkpoint.pt``, ``history.csv``, ``metrics.json``, PNGs.

File I/O only: this module knows no models. What the files mean is the run layer's
(:mod:`pyro_vae.run_config`, :mod:`pyro_vae.runner`).

* Every file is written atomically (to a temporary file ``.NAME.XXXXXXXX.tmp`` in the same
  folder, then renamed over the old one), so an interrupted or failed write never leaves a
  half-written checkpoint and the last good one survives. Files get the mode the user's umask
  gives (``0644`` under umask ``022``), like any file the process creates.
* One writer per folder: :meth:`RunFolder.lock` holds an OS lock (``flock``) on ``RUN/.lock``
  (the holder's pid and command) for the life of a command that writes into the folder; a
  second writer gets a :class:`RunFolderError` naming the holder before it writes anything.
  The OS drops the lock when its process dies, so a lock file left by a killed process is
  simply taken over, and taking the lock removes the temporary files such a process left.
  Released, the lock file is removed. Re-entrant within a thread.
* A write that the file system refuses (a full disk, no permission, a read-only file system,
  a path under a file) is a :class:`RunFolderError` naming the path and the reason
  (:func:`writing`); :func:`check_new_folder` and :func:`check_new_file` look at a path
  before any work is done.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import functools
import io
import json
import logging
import os
import re
import secrets
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from pyro_vae.errors import ConfigError, RunFolderError

log = logging.getLogger(__name__)

CONFIG = "config.json"
CHECKPOINT = "checkpoint.pt"
HISTORY = "history.csv"
METRICS = "metrics.json"
LOCK = ".lock"
TEMP = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")  # atomic_write's (and tempfile.mkstemp's) names


# -- writing files ----------------------------------------------------------------------------
def describe_os_error(exc: OSError) -> str:
    """The reason of a file system error in words (``No space left on device``)."""
    return exc.strerror or str(exc) or type(exc).__name__


def write_error(path: str | os.PathLike, exc: OSError) -> RunFolderError:
    return RunFolderError(f"cannot write {path}: {describe_os_error(exc)}")


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Turn an ``OSError`` raised while writing ``path`` into a one-line
    :class:`RunFolderError`: ``cannot write PATH: REASON``."""
    try:
        yield
    except OSError as exc:
        raise write_error(path, exc) from None


def _open_file(path: Path, flags: int) -> int:
    """``os.open`` with mode ``0o666``: the kernel applies the umask (every file this module
    creates goes through here)."""
    return os.open(path, flags | getattr(os, "O_CLOEXEC", 0), 0o666)


def temp_file(path: Path) -> tuple[int, Path]:
    """A new empty file ``.NAME.XXXXXXXX.tmp`` beside ``path``, like ``tempfile.mkstemp`` but
    with the umask's mode (mkstemp's is 0600) and without touching any seeded RNG."""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            return _open_file(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(path.parent))


def atomic_write(path: Path, write: Callable[[io.BufferedWriter], None] | bytes) -> None:
    """Write ``path`` (bytes, or a function that writes to the open file) through a temporary
    file and ``os.replace``; the old file stays on error. A file system error is a
    :class:`RunFolderError` naming ``path``."""
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = temp_file(path)
        try:
            with os.fdopen(fd, "wb") as f:
                if isinstance(write, bytes | bytearray):
                    f.write(write)
                else:
                    write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def write_json(path: Path, data: Any) -> None:
    text = json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n"  # valid JSON
    atomic_write(path, text.encode())


# -- checking paths before any work -----------------------------------------------------------
def _nearest_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (whatever it is)."""
    path = Path(os.path.abspath(path))
    while not os.path.lexists(path) and path.parent != path:
        path = path.parent
    return path


def _check_under(folder: Path, target: Path, shown: str) -> None:
    """Refuse ``target`` when ``folder`` (made as needed) lies under a file or in a folder
    that cannot be written."""
    anc = _nearest_existing(folder)
    if not anc.is_dir():
        raise ConfigError(f"{shown}: {anc} is a file, not a folder")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise RunFolderError(f"cannot write {target}: {anc} is not writable")


def check_new_folder(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Refuse a run folder to write that is empty, a file, under a file or not writable,
    before anything is done or written; returns it as a :class:`Path`."""
    if str(path) == "":
        raise ConfigError(f"{flag} is empty; name the run folder")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path} is a file, not a folder")
    _check_under(path, path, f"{flag} {path}")
    return path


def check_new_file(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Refuse a file to write (a picture) that is empty, a folder, under a file or in a
    folder that cannot be written, before anything is done or written."""
    if str(path) == "":
        raise ConfigError(f"{flag} is empty; name a file")
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{flag} {path} is a folder; name a file in it")
    _check_under(path.parent, path, f"{flag} {path}")
    return path


# -- one writer per folder --------------------------------------------------------------------
class RunLock:
    """This thread's hold on a run folder (:meth:`RunFolder.lock`). ``created``: the folders
    that taking it made (outermost first); set ``remove_created`` to remove them again (when
    empty) as the lock is released."""

    def __init__(self, folder: Path, fd: int, created: list[Path]):
        self.folder, self.fd, self.created = folder, fd, created
        self.remove_created = False
        self.depth = 1


_local = threading.local()


def _held() -> dict[str, RunLock]:
    if not hasattr(_local, "held"):
        _local.held = {}
    return _local.held


def _make_folders(path: Path) -> list[Path]:
    """Make ``path`` and its missing parents; returns the folders made, outermost first."""
    missing, p = [], Path(os.path.abspath(path))
    while not os.path.lexists(p) and p.parent != p:
        missing.append(p)
        p = p.parent
    made: list[Path] = []
    try:
        for p in reversed(missing):
            try:
                p.mkdir()
            except FileExistsError:
                if not p.is_dir():
                    raise
                continue  # another process made it meanwhile: not ours to remove
            made.append(p)
    except BaseException:
        _remove_folders(made)
        raise
    return made


def _remove_folders(made: list[Path]) -> None:
    """Remove the folders of ``made`` that are empty, innermost first (one that is not, e.g.
    another process's new lock file in it, stays)."""
    for p in reversed(made):
        try:
            p.rmdir()
        except OSError:
            return


def _holder(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        pid, command = os.pread(fd, 300, 0).decode(errors="replace").split(maxsplit=1)
        return f"pid {int(pid)}: {' '.join(command.split())}"
    return "pid unknown"


def _acquire(folder: Path, command: str) -> int:
    """Lock ``folder/.lock`` (made as needed) and write our pid and command into it; refuse
    a folder another process holds. After ``flock`` succeeds the path must still name the
    file locked: its holder may have unlinked it on release meanwhile (then try again)."""
    path = folder / LOCK
    while True:
        fd = _open_file(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise RunFolderError(f"{folder} is in use by another pyro-vae process ({holder}); "
                                 "wait for it to finish") from None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.path.samestat(os.fstat(fd), os.lstat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {command}\n".encode(), 0)
    except BaseException:
        _release(folder, fd)
        raise
    return fd


def _release(folder: Path, fd: int, made: list[Path] = ()) -> None:
    """Remove the lock file (if it is still the one locked), the folders ``made``, unlock."""
    path = folder / LOCK
    with contextlib.suppress(OSError):
        if os.path.samestat(os.fstat(fd), os.lstat(path)):
            os.unlink(path)
    _remove_folders(list(made))
    os.close(fd)


def _remove_stale_temps(folder: Path) -> None:
    """Remove the temporary files of interrupted atomic writes (only with the lock held: no
    other process can be writing one)."""
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            if TEMP.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    log.debug("removed %s, left by an interrupted write", entry.path)


def checkpoint_bytes(state: dict) -> bytes:
    """``state`` as ``torch.save`` writes it (in memory first: a failing write is then an
    ``OSError`` of the file, never an error inside the serializer)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


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

    # -- one writer ---------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, command: str, *, create: bool = False) -> Iterator[RunLock]:
        """Hold the folder's lock for ``command`` (a word the refusal shows), making the
        folder and its parents first if ``create``; see the module docstring. Raises
        :class:`RunFolderError` if another process holds it, if the folder is missing
        (without ``create``) or cannot be written; nothing is written then."""
        held = _held()
        key = os.path.realpath(self.path)
        if key in held:  # re-entrant: run -> finish, resume -> finish
            lock = held[key]
            lock.depth += 1
            try:
                yield lock
            finally:
                lock.depth -= 1
            return
        with writing(self.path):
            made = _make_folders(self.path) if create else []
        if not self.path.is_dir():
            raise RunFolderError(f"{self.path} is not a folder; give the --out folder of a run")
        try:
            with writing(self.path):
                fd = _acquire(self.path, command)
        except BaseException:
            _remove_folders(made)
            raise
        lock = RunLock(self.path, fd, made)
        key = os.path.realpath(self.path)
        held[key] = lock
        try:
            _remove_stale_temps(self.path)
            yield lock
        finally:
            del held[key]
            _release(self.path, fd, made if lock.remove_created else [])

    def names(self) -> set[str]:
        """The names in the folder (none if it does not exist)."""
        try:
            return set(os.listdir(self.path))
        except FileNotFoundError:
            return set()

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
        atomic_write(self.checkpoint_path, checkpoint_bytes(state))
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
        atomic_write(self.file(HISTORY), buf.getvalue().encode())

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


def locked(command: str) -> Callable:
    """Decorate a function whose first argument is a run folder to hold its lock
    (:meth:`RunFolder.lock`) for ``command`` while it runs."""
    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def holding(path, *args, **kwargs):
            with RunFolder(path).lock(command):
                return fn(path, *args, **kwargs)
        return holding
    return decorate


@contextlib.contextmanager
def file_errors() -> Iterator[None]:
    """Turn any ``OSError`` into a one-line :class:`RunFolderError` naming the file and the
    reason (the CLI's net under the write sites that name their own)."""
    try:
        yield
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        raise RunFolderError(f"{where}{describe_os_error(exc)}") from None
