"""Probes: hostile but realistic input, one table row each, across every subcommand and the
Python API.

Each row of :data:`PROBES` is data: an id, the command (``pyro-vae`` argv, with placeholders
``{RUN}`` a copy of a trained run folder, ``{TMP}`` the row's temporary folder, ``{OUT}`` a
folder that must never be created, ``{CWD}`` the empty working directory, ``{FILES}`` a folder
of user model files), the exit status (2 for bad input, 130 for Ctrl-C), a regex the single
stderr line must match, and what must stay as it was. Every refused row asserts:

* the exit status;
* stderr is exactly ONE line (after stripping), starting with ``pyro-vae: error:`` (or
  ``pyro-vae: interrupted`` for 130) and matching the row's pattern; no "Traceback" anywhere;
* the run folder's hash (sorted names, bytes and st_mode of every file; ``.lock``, the
  library's lock file, left out) is unchanged, ``{OUT}`` was not created, the working
  directory is still empty.

Rows run in-process through :func:`pyro_vae.cli.main` (a subprocess costs seconds of
imports) as a fresh process would: the root logger has no handler until ``main`` configures it
(so its INFO lines land on the captured stderr) and warnings are printed to stderr with
Python's default filters. Only the Ctrl-C rows start a real process.

Read-only folders are simulated (the tests run as root, where chmod changes nothing) by
refusing every write under them with PermissionError(EACCES), whichever module tries it; the
real-chmod rows run only as another user.

Rows marked ``known=N`` are the known failures (N in the list the library is being fixed
against); they state the behaviour required, not today's. :data:`API_PROBES` does the same for
the Python API.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import io
import json
import logging
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

from pyro_vae import engine
from pyro_vae.cli import main
from pyro_vae.errors import ConfigError, DataError, UserError
from pyro_vae.scaffold import MODEL as SCAFFOLD_MODEL

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--latent-dim", "2", "--hidden", "16"]
QUIET = ["--no-progress", "--device", "cpu"]
# the brief's T, with a small network and full batches so that a row that trains today is cheap
T = ["train", "vae", "--dataset", "digits", "--epochs", "1", "--eval-samples", "50", *QUIET,
     *SMALL, "--batch-size", "512"]
T_OUT = [*T, "--out", "{OUT}"]
RESUME = ["train", "--resume", "--out", "{RUN}", "--no-progress", "--eval-samples", "50"]
EVAL = ["evaluate", "{RUN}", "--num-samples", "50", "--no-progress"]
DIAG = ["diagnose", "{RUN}", "--points", "5", "--draws", "100", "--device", "cpu"]
SEED_RANGE = (r"(?i)seed.*(\b0\s*(\.\.|to|and|-)|>=\s*0|range|2\s*\*\*\s*\d+|\d{9,})")
READ_ONLY = r"(?i)(permission|read-only|not writable|cannot write|can't write)"
IN_USE = r"(?i)\bin use\b"
LOCK = ".lock"  # the lock file a writing command holds (left out of the folder's hash)

# -- the trained runs, once per module -----------------------------------------------------

USER_MODELS = SCAFFOLD_MODEL.format(name="tiny", cls="Tiny") + '''

class GuideRaises(Tiny):
    name = "guide_raises"

    def guide(self, x, y=None, num_data=None):
        raise RuntimeError("the guide is broken")


class InitRaises(Tiny):
    name = "init_raises"

    def __init__(self, config, data_shape):
        raise ValueError("cannot build this model")


class Abstract(LatentModel):
    def model(self, x, y=None, num_data=None):
        pass

    def guide(self, x, y=None, num_data=None):
        pass


class Plain(nn.Module):
    pass
'''
USER_FILES = {
    "models.py": USER_MODELS,
    "syntax.py": "class M(:\n    pass\n",
    "imports.py": "import no_such_module_pyro_vae_probe\n",
    "raises.py": "raise RuntimeError('boom at import')\n",
    "empty.py": "X = 1\n",
}

RUNS = {  # name: train argv (--out added)
    "vae": ["vae", "--dataset", "digits", *SMALL, "--epochs", "2"],
    "ae": ["ae", "--dataset", "digits", *SMALL, "--epochs", "1"],
    "dae": ["dae", "--dataset", "digits", *SMALL, "--epochs", "1"],
    "gmm": ["gmm", "--dataset", "gmm-2d", "--epochs", "1"],
    "cvae": ["cvae", "--dataset", "digits", "--hidden", "16", "--epochs", "1"],
    "user": ["{FILES}/models.py:Tiny", "--dataset", "digits", *SMALL, "--epochs", "1"],
}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("user_models")
    for name, text in USER_FILES.items():
        (folder / name).write_text(text)
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory, files) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for name, argv in RUNS.items():
        argv = [a.replace("{FILES}", str(files)) for a in argv]
        code = main(["train", *argv, "--eval-samples", "50", "--batch-size", "256", *QUIET,
                     "--out", str(root / name)])
        assert code == 0, f"could not train the {name} run"
        out[name] = root / name
    return out


# -- helpers ----------------------------------------------------------------------------------

def folder_hash(path: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every entry under ``path``: relative name -> (st_mode, bytes of a file); the library's
    lock file is left out."""
    if not path.exists():
        return {}
    out = {}
    for p in sorted(path.rglob("*")):
        if p.name == LOCK:
            continue
        st = p.lstat()
        out[str(p.relative_to(path))] = (st.st_mode, p.read_bytes() if p.is_file() else None)
    return out


def hash_diff(before: dict, after: dict) -> str:
    changed = sorted(k for k in before.keys() & after.keys() if before[k] != after[k])
    return (f"added {sorted(after.keys() - before.keys())}, removed "
            f"{sorted(before.keys() - after.keys())}, changed {changed}")


def assert_one_line(code: int, out: str, err: str, expected: int, pattern: str) -> None:
    """The contract of a refused command: exit status, ONE stderr line, no traceback."""
    assert "Traceback" not in err + out, f"a traceback:\n{err}"
    assert code == expected, f"exit status {code}, expected {expected}; stderr:\n{err}"
    lines = err.strip().splitlines()
    prefix = "pyro-vae: interrupted" if expected == 130 else "pyro-vae: error:"
    if expected == 130:
        assert len(lines) <= 1, f"stderr has {len(lines)} lines:\n{err}"
        assert not lines or lines[0].startswith(prefix), err
        return
    assert len(lines) == 1, f"stderr has {len(lines)} lines, expected one:\n{err}"
    assert lines[0].startswith(prefix), lines[0]
    assert re.search(pattern, lines[0]), f"{lines[0]!r} does not match {pattern!r}"


@contextlib.contextmanager
def like_a_fresh_process():
    """Logging and warnings as a fresh ``pyro-vae`` process has them: no handler on the root
    logger (``main``'s ``basicConfig`` adds one on the captured stderr) and warnings printed
    to stderr under Python's default filters (pytest would otherwise swallow both)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers.clear()
    root.setLevel(logging.WARNING)

    def show(message, category, filename, lineno, file=None, line=None):
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    try:
        with warnings.catch_warnings():
            warnings.resetwarnings()
            warnings.simplefilter("default")
            for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning,
                             ResourceWarning):
                warnings.filterwarnings("ignore", category=category)
            warnings.showwarning = show
            yield
    finally:
        for h in root.handlers[:]:
            if h not in handlers:
                root.removeHandler(h)
        root.handlers[:] = handlers
        root.setLevel(level)


WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def deny_writes(monkeypatch, *roots: Path) -> None:
    """Simulate read-only folders (the tests run as root, where chmod changes nothing): every
    attempt to create, open for writing, rename, remove or chmod a path under ``roots`` raises
    PermissionError(EACCES), whichever module tries it."""
    roots = tuple(Path(r).resolve() for r in roots)

    def guarded(path) -> bool:
        if isinstance(path, int):
            return False
        try:
            p = Path(os.fsdecode(path)).resolve()
        except (TypeError, ValueError, OSError):
            return False
        return any(p == r or r in p.parents for r in roots)

    def refuse(path):
        raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(path))

    def wrap(fn, *, writes=lambda *a, **k: True, paths=(0,)):
        def wrapper(*args, **kwargs):
            if writes(*args, **kwargs):
                for i in paths:
                    if i < len(args) and guarded(args[i]):
                        refuse(args[i])
            return fn(*args, **kwargs)
        return wrapper

    def opens_for_writing(file, mode="r", *args, **kwargs):
        return any(c in str(mode) for c in "wax+")

    def os_open_writes(path, flags, *args, **kwargs):
        return bool(flags & WRITE_FLAGS)

    monkeypatch.setattr(os, "open", wrap(os.open, writes=os_open_writes))
    for name in ("mkdir", "unlink", "remove", "rmdir", "chmod", "utime", "truncate"):
        monkeypatch.setattr(os, name, wrap(getattr(os, name)))
    for name in ("rename", "replace", "link", "symlink"):
        monkeypatch.setattr(os, name, wrap(getattr(os, name), paths=(0, 1)))
    import builtins

    safe_open = wrap(builtins.open, writes=opens_for_writing)
    monkeypatch.setattr(builtins, "open", safe_open)
    monkeypatch.setattr(io, "open", safe_open)


@dataclass
class Ctx:
    """What a row's setup and check see."""

    tmp: Path
    cwd: Path
    runs: dict[str, Path]
    files: Path
    monkeypatch: Any
    capsys: Any
    run: Path | None = None
    cleanups: list[Callable[[], None]] = field(default_factory=list)
    steps: list[int] = field(default_factory=lambda: [0])
    lock_fd: int | None = None  # the second writer's lock (lock_run)

    @property
    def names(self) -> dict[str, str]:
        return {"RUN": str(self.run), "TMP": str(self.tmp), "OUT": str(self.tmp / "out"),
                "CWD": str(self.cwd), "FILES": str(self.files), "PY": sys.executable,
                "SCRIPT": str(Path(sys.executable).parent / "pyro-vae")}

    def path(self, template: str) -> Path:
        return Path(template.format(**self.names))

    def main(self, argv) -> tuple[int, str, str]:
        """``main(argv)`` as a fresh process runs it: (exit status, stdout, stderr)."""
        argv = [str(a).format(**self.names) for a in argv]
        self.capsys.readouterr()
        with like_a_fresh_process():
            try:
                code = main(argv)
            except BaseException as exc:
                out, err = self.capsys.readouterr()
                raise AssertionError(f"main({argv}) raised {type(exc).__name__}: {exc} "
                                     f"(a traceback, not one line); stderr so far:\n{err}"
                                     ) from exc
        out, err = self.capsys.readouterr()
        return code, out, err


@dataclass(frozen=True)
class Probe:
    id: str
    argv: tuple[str, ...]
    pattern: str = ""
    code: int | tuple[int, ...] = 2
    run: str | None = None  # copy this fixture run to {RUN}; its hash must not change
    setup: Callable[[Ctx], None] | None = None  # before the hash is taken
    absent: tuple[str, ...] = ("{OUT}",)  # must not exist afterwards
    unchanged: bool = True  # {RUN}'s hash after == before
    no_steps: bool = False  # refused before a single training step
    check: Callable[[Ctx, int, str, str], None] | None = None  # more assertions afterwards
    sigint: float | None = None  # a real process, sent SIGINT after this many seconds
    known: int | None = None  # the number of a known failure this row holds the library to
    skip: Callable[[], str | None] | None = None  # a reason to skip, or None


def P(id, argv, pattern="", **kw) -> Probe:  # noqa: N802 - a table row
    return Probe(id, tuple(argv), pattern, **kw)


# -- setups: what a row does to its copy of a run (or its tmp) before the command ---------------

def edit_json(name: str, edit: Callable[[Any], Any]):
    """Replace RUN/name by ``edit(its JSON)`` (``edit`` may change it in place)."""
    def setup(ctx):
        path = ctx.run / name
        data = json.loads(path.read_text())
        new = edit(data)
        path.write_text(json.dumps(data if new is None else new, indent=2))
    return setup


def write(template: str, content: str | bytes):
    def setup(ctx):
        path = ctx.path(template)
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return setup


def mkdir(template: str):
    return lambda ctx: ctx.path(template).mkdir(parents=True, exist_ok=True)


def remove(name: str):
    return lambda ctx: (ctx.run / name).unlink()


def edit_checkpoint(edit: Callable[[dict], None]):
    def setup(ctx):
        path = ctx.run / "checkpoint.pt"
        state = torch.load(path, map_location="cpu", weights_only=False)
        edit(state)
        torch.save(state, path)
    return setup


def _nan_weight(state):
    name, tensor = next((k, v) for k, v in state["model"].items() if v.is_floating_point())
    tensor = tensor.clone()
    tensor.view(-1)[0] = math.nan
    state["model"][name] = tensor


def other_checkpoint(run_name: str):
    def setup(ctx):
        shutil.copy2(ctx.runs[run_name] / "checkpoint.pt", ctx.run / "checkpoint.pt")
    return setup


def user_file_now(text: str | None):
    """The user run's config points at a copy of its model file holding ``text`` (None: the
    file is gone). A fresh path, since a model file is imported once per process."""
    def setup(ctx):
        path = ctx.tmp / "moved_models.py"
        if text is not None:
            path.write_text(text)
        cfg = json.loads((ctx.run / "config.json").read_text())
        cfg["model_source"]["path"] = str(path)
        cfg["model"] = f"{path}:Tiny"
        (ctx.run / "config.json").write_text(json.dumps(cfg, indent=2))
    return setup


def deny(*templates: str):
    """Simulated read-only folders (see :func:`deny_writes`)."""
    def setup(ctx):
        for t in templates:
            ctx.path(t).mkdir(parents=True, exist_ok=True)
        deny_writes(ctx.monkeypatch, *(ctx.path(t) for t in templates))
    return setup


def chmod_read_only(*templates: str):
    """Really read-only folders (rows skipped as root, where chmod has no effect)."""
    def setup(ctx):
        for t in templates:
            path = ctx.path(t)
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(0o555)
            ctx.cleanups.append(lambda p=path: p.chmod(0o755))
    return setup


def as_root() -> str | None:
    return "chmod has no effect for root" if os.geteuid() == 0 else None


def lock_run(ctx):
    """A second writer: an exclusive flock on RUN/.lock held by the test."""
    fd = os.open(ctx.run / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    ctx.lock_fd = fd
    ctx.cleanups.append(lambda: os.close(fd))


def umask(mask: int):
    def setup(ctx):
        old = os.umask(mask)
        ctx.cleanups.append(lambda: os.umask(old))
    return setup


def limit_memory(ctx):
    """Cap the address space a few GiB above today's, so that a huge allocation fails at
    once on any machine instead of paging (restored afterwards)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    vm = int(re.search(r"VmSize:\s+(\d+) kB", Path("/proc/self/status").read_text())[1]) * 1024
    cap = vm + 6 * 2**30
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    ctx.cleanups.append(lambda: resource.setrlimit(resource.RLIMIT_AS, (soft, hard)))


# -- checks: assertions after the command ----------------------------------------------------

def released_then_works(argv):
    """After the second writer lets go, the same command works."""
    def check(ctx, code, out, err):
        fcntl.flock(ctx.lock_fd, fcntl.LOCK_UN)
        again, _, err2 = ctx.main(argv)
        assert again == 0, f"still refused once the lock is released:\n{err2}"
    return check


def _strict_json(text: str) -> Any:
    def refuse(name):
        raise AssertionError(f"non-standard JSON constant {name}")
    return json.loads(text, parse_constant=refuse)


def only_finite_files(ctx, code, out, err):
    """Whatever a diverged run left holds only finite numbers and valid JSON."""
    folder = ctx.path("{OUT}")
    for name in ("config.json", "metrics.json"):
        if (folder / name).exists():
            _strict_json((folder / name).read_text())
    if (folder / "history.csv").exists():
        for row in csv.DictReader((folder / "history.csv").open()):
            for key, value in row.items():
                with contextlib.suppress(ValueError):
                    assert math.isfinite(float(value)), f"history.csv {key} = {value}"


def then_sample_works(ctx, code, out, err):
    """Either training refused in one line (diverged), or sampling its run works."""
    if code == 0:
        png = ctx.tmp / "s.png"
        code2, out2, err2 = ctx.main(["sample", "{OUT}", "--out", png, "--num", "16",
                                      "--device", "cpu"])
        assert "Traceback" not in err2 and "cholesky" not in err2.lower(), err2
        assert code2 == 0 and png.is_file(), err2
    else:
        assert_one_line(code, out, err, 2, r"(?i)diverg")


def no_temporary_files(ctx, code, out, err):
    left = [p.name for p in ctx.run.iterdir() if p.name.endswith(".tmp")]
    assert not left, f"temporary files left in the run: {left}"


def file_modes(mode: int):
    def check(ctx, code, out, err):
        folder = ctx.path("{OUT}")
        found = {p.name: oct(p.stat().st_mode & 0o777) for p in folder.iterdir() if p.is_file()}
        assert {"config.json", "checkpoint.pt", "history.csv", "metrics.json",
                "samples.png"} <= set(found), found
        wrong = {n: m for n, m in found.items() if m != oct(mode)}
        assert not wrong, f"expected {oct(mode)}: {wrong}"
    return check


def empty_folder(template: str):
    def check(ctx, code, out, err):
        path = ctx.path(template)
        assert path.is_dir() and not any(path.iterdir()), f"{path} changed"
    return check


def png_written(template: str):
    def check(ctx, code, out, err):
        assert ctx.path(template).read_bytes()[:4] == b"\x89PNG"
    return check


# -- the table ---------------------------------------------------------------------------------

M = "{FILES}/models.py"
PROBES: list[Probe] = [
    # ---- (A) bad input refused in one line today: none may regress -------------------------
    # the command line itself
    P("no-command", [], r"required: command"),
    P("unknown-command", ["nope"], r"invalid choice: 'nope'"),
    P("list-extra-flag", ["list", "--nope"], r"unrecognized arguments: --nope"),
    # train: names
    P("train-no-model", ["train", "--dataset", "digits"], r"name a model to train"),
    P("train-unknown-model", ["train", "nope", "--out", "{OUT}"], r"unknown model 'nope'"),
    P("train-blank-model", ["train", " ", "--out", "{OUT}"], r"name a model"),
    P("train-unknown-objective", [*T_OUT, "--objective", "nope"], r"unknown objective 'nope'"),
    P("train-unknown-dataset", [*T_OUT, "--dataset", "nope"], r"unknown data set 'nope'"),
    P("train-unknown-device", [*T_OUT, "--device", "tpu"], r"unknown device 'tpu'"),
    P("train-no-cuda", [*T_OUT, "--device", "cuda"], r"no CUDA device",
      skip=lambda: "CUDA present" if torch.cuda.is_available() else None),
    P("train-unknown-binarize", [*T_OUT, "--binarize", "nope"], r"invalid choice: 'nope'"),
    P("train-unknown-engine", [*T_OUT, "--engine", "nope"], r"unknown engine 'nope'"),
    P("train-unknown-lr-schedule", [*T_OUT, "--lr-schedule", "nope"],
      r"unknown lr schedule 'nope'"),
    P("train-unknown-baseline", [*T_OUT, "--baseline", "nope"], r"unknown baseline 'nope'"),
    P("train-grey-digits", [*T_OUT, "--binarize", "none"], r"not binary"),
    P("train-binarize-real-data", ["train", "gmm", "--dataset", "gmm-2d", "--binarize",
                                   "fixed", *QUIET, "--out", "{OUT}"], r"real valued"),
    P("train-gmm-on-images", ["train", "gmm", "--dataset", "digits", *QUIET, "--out", "{OUT}"],
      r"(?i)gmm"),
    P("train-linear-on-images", ["train", "linear", "--dataset", "digits", *QUIET, "--out",
                                 "{OUT}"], r"(?i)linear"),
    # train: numbers of every numeric flag
    *[P(f"train-{flag}-{value}", [*T_OUT, f"--{flag}", value], pattern)
      for flag, value, pattern in [
          ("epochs", "0", r"epochs must be at least 1"),
          ("epochs", "-1", r"epochs must be at least 1"),
          ("epochs", "x", r"invalid int value: 'x'"),
          ("epochs", "1.5", r"invalid int value: '1.5'"),
          ("batch-size", "0", r"batch size must be at least 1"),
          ("batch-size", "x", r"invalid int value"),
          ("num-particles", "0", r"num-particles must be at least 1"),
          ("lr", "-1", r"learning rate must be positive"),
          ("lr", "0", r"learning rate must be positive"),
          ("lr", "x", r"invalid float value: 'x'"),
          ("lr", "nan", r"'lr' must be a finite number, got nan"),
          ("adam-eps", "0", r"adam eps must be positive"),
          ("adam-eps", "nan", r"adam.eps"),
          ("baseline-lr", "0", r"baseline lr must be positive"),
          ("beta", "-1", r"beta must be >= 0"),
          ("beta", "nan", r"beta"),
          ("kl-warmup-epochs", "-1", r"kl-warmup-epochs must be a whole number >= 0"),
          ("kl-warmup-epochs", "x", r"invalid int value"),
          ("free-bits", "-1", r"free-bits must be >= 0"),
          ("free-bits", "nan", r"free.bits"),
          ("seed", "x", r"--seed: expected a whole number from 0 to 2\*\*32-1, got 'x'"),
          ("eval-samples", "-1", r"--eval-samples must be a whole number >= 0"),
          ("eval-samples", "77", r"must be a multiple of every IWAE k"),
          ("eval-samples", "x", r"invalid int value"),
      ]],
    # train: model settings, unknown and mistyped
    P("train-unknown-setting", [*T_OUT, "--nope", "3"], r"model vae has no setting 'nope'"),
    P("train-unknown-setting-eq", [*T_OUT, "--nope=3"], r"model vae has no setting 'nope'"),
    P("train-other-models-setting", ["train", "linear", "--hidden", "4", "--out", "{OUT}"],
      r"model linear has no setting 'hidden'"),
    P("train-latent-dim-x", [*T_OUT, "--latent-dim", "x"], r"--latent-dim expects a whole"),
    P("train-latent-dim-0", [*T_OUT, "--latent-dim", "0"], r"latent_dim must be at least 1"),
    P("train-hidden-bad", [*T_OUT, "--hidden", "4,a"], r"expects ints separated by commas"),
    P("train-hidden-0", [*T_OUT, "--hidden", "0"], r"hidden layer size must be at least 1"),
    P("train-activation", [*T_OUT, "--activation", "nope"], r"unknown activation 'nope'"),
    P("train-likelihood", [*T_OUT, "--likelihood", "nope"], r"unknown likelihood 'nope'"),
    P("train-arch", [*T_OUT, "--arch", "nope"], r"unknown arch 'nope'"),
    P("train-gmm-components-0", ["train", "gmm", "--dataset", "gmm-2d", "--num-components",
                                 "0", "--out", "{OUT}"], r"num_components must be at least 1"),
    P("train-gmm-priors-maybe", ["train", "gmm", "--dataset", "gmm-2d", "--priors", "maybe",
                                 "--out", "{OUT}"], r"--priors expects true or false"),
    P("train-gmm-priors-full", ["train", "gmm", "--dataset", "gmm-2d", "--priors", "true",
                                "--out", "{OUT}"], r"diagonal covariances only"),
    P("train-cvae-task", ["train", "cvae", "--dataset", "digits", "--task", "nope", "--out",
                          "{OUT}"], r"(?i)task"),
    P("train-cvae-classes-0", ["train", "cvae", "--dataset", "digits", "--num-classes", "0",
                               "--out", "{OUT}"], r"num_classes must be at least 1"),
    P("train-bernoulli-layers-3", ["train", "bernoulli", "--dataset", "digits", "--layers",
                                   "3", "--out", "{OUT}"], r"layers must be 1 or 2"),
    P("train-dae-corruption", ["train", "dae", "--dataset", "digits", "--corruption-level",
                               "1.5", "--out", "{OUT}"], r"corruption_level"),
    # train: objective against model capabilities (pyro_vae/objectives.py)
    P("train-baseline-with-trace", [*T_OUT, "--baseline", "neural"],
      r"--baseline neural applies to the tracegraph objective only, not trace"),
    P("train-baseline-lr-with-trace", [*T_OUT, "--baseline-lr", "0.1"],
      r"--baseline-lr 0.1 applies to the tracegraph objective only"),
    P("train-free-bits-iwae", [*T_OUT, "--objective", "iwae", "--free-bits", "0.5"],
      r"--free-bits works with the trace and meanfield objectives, not iwae"),
    P("train-jit-iwae", [*T_OUT, "--objective", "iwae", "--jit"],
      r"objective iwae has no jit variant"),
    P("train-jit-free-bits", [*T_OUT, "--jit", "--free-bits", "0.5"],
      r"--free-bits has no jit variant"),
    P("train-jit-beta", [*T_OUT, "--jit", "--beta", "0.5"], r"KL weight other than 1"),
    P("train-lr-schedule-svi", [*T_OUT, "--lr-schedule", "iwae", "--engine", "svi"],
      r"--lr-schedule iwae needs the fast engine"),
    P("train-rws-one-particle", [*T_OUT, "--objective", "rws"],
      r"the rws objective needs --num-particles >= 2"),
    P("train-vimco-one-particle", [*T_OUT, "--objective", "vimco", "--num-particles", "1"],
      r"the vimco objective needs --num-particles >= 2"),
    P("train-dreg-bernoulli", ["train", "bernoulli", "--dataset", "digits", "--objective",
                               "iwae-dreg", "--num-particles", "2", "--out", "{OUT}"],
      r"needs reparameterizable latents; model bernoulli has discrete ones"),
    P("train-free-bits-bernoulli", ["train", "bernoulli", "--dataset", "digits", "--objective",
                                    "trace", "--free-bits", "0.5", "--out", "{OUT}"],
      r"--free-bits needs continuous latents"),
    # train: --out
    P("train-out-is-a-file", [*T, "--out", "{TMP}/afile"], r"is a file, not a folder",
      setup=write("{TMP}/afile", "x"), absent=()),
    P("train-out-holds-a-run", [*T, "--out", "{RUN}"], r"already holds a run", run="vae"),
    # train --resume
    P("resume-no-out", ["train", "--resume"], r"--resume needs --out"),
    P("resume-missing-folder", ["train", "--resume", "--out", "{OUT}"], r"is not a folder"),
    P("resume-not-a-run", ["train", "--resume", "--out", "{TMP}"], r"is not a run folder"),
    P("resume-other-model", [*RESUME, "ae"], r"this run is of model vae, not ae", run="vae",
      no_steps=True),
    P("resume-other-dataset", [*RESUME, "--dataset", "mnist-5k"],
      r"--dataset mnist-5k differs from the run's digits", run="vae", no_steps=True),
    P("resume-other-binarize", [*RESUME, "--binarize", "fixed"],
      r"--binarize fixed differs from the run's dynamic", run="vae", no_steps=True),
    P("resume-other-setting", [*RESUME, "--latent-dim", "5"],
      r"--latent-dim 5 differs from the run's 2", run="vae", no_steps=True),
    P("resume-other-lr", [*RESUME, "--lr", "0.5"], r"--lr 0.5 differs", run="vae",
      no_steps=True),
    P("resume-other-objective", [*RESUME, "--objective", "iwae"], r"--objective iwae differs",
      run="vae", no_steps=True),
    P("resume-unknown-setting", [*RESUME, "--nope", "1"], r"model vae has no setting 'nope'",
      run="vae", no_steps=True),
    P("resume-eval-samples-77", [*RESUME, "--eval-samples", "77"],
      r"must be a multiple of every IWAE k", run="vae", no_steps=True),
    P("resume-no-checkpoint", [*RESUME, "--epochs", "3"], r"has no checkpoint", run="vae",
      setup=remove("checkpoint.pt"), no_steps=True),
    P("resume-corrupt-checkpoint", [*RESUME, "--epochs", "3"], r"is corrupt or unreadable",
      run="vae", setup=write("{RUN}/checkpoint.pt", b"PK\x03\x04 truncated"), no_steps=True,
      known=15),  # refused, but after an INFO line
    P("resume-checkpoint-of-other-model", [*RESUME, "--epochs", "3"],
      r"does not match the model", run="vae", setup=other_checkpoint("ae"), no_steps=True,
      known=15),  # refused, but after an INFO line
    # check
    P("check-no-model", ["check"], r"the following arguments are required: model"),
    P("check-unknown-model", ["check", "nope"], r"unknown model 'nope'"),
    P("check-points-0", ["check", "vae", "--dataset", "digits", "--points", "0"],
      r"--points must be at least 1"),
    P("check-points-x", ["check", "vae", "--points", "x"], r"invalid int value"),
    P("check-unknown-dataset", ["check", "vae", "--dataset", "nope"], r"unknown data set"),
    P("check-unknown-device", ["check", "vae", "--dataset", "digits", "--device", "tpu"],
      r"unknown device 'tpu'"),
    P("check-missing-file", ["check", "{TMP}/missing.py:Class"], r"model file .* does not exist"),
    P("check-no-class-name", ["check", f"{M}:"], r"name the class after the colon"),
    P("check-missing-class", ["check", f"{M}:Nope", "--dataset", "digits"],
      r"has no class 'Nope'; it defines .*Tiny"),
    P("check-file-without-models", ["check", "{FILES}/empty.py:X"],
      r"not a pyro_vae.LatentModel subclass"),
    P("check-syntax-error", ["check", "{FILES}/syntax.py:M"],
      r"importing model file .*syntax.py failed: SyntaxError"),
    P("check-import-error", ["check", "{FILES}/imports.py:M"],
      r"importing model file .*imports.py failed: ModuleNotFoundError"),
    P("check-raises-on-import", ["check", "{FILES}/raises.py:M"],
      r"failed: RuntimeError: boom at import at line 1"),
    P("check-not-a-latent-model", ["check", f"{M}:Plain"],
      r"Plain .* not a pyro_vae.LatentModel subclass"),
    P("check-abstract-model", ["check", f"{M}:Abstract"], r"does not define encode"),
    P("check-missing-module", ["check", "no_such_pkg_probe.models:VAE"],
      r"module 'no_such_pkg_probe.models' .* is not importable"),
    P("check-init-raises", ["check", f"{M}:InitRaises", "--dataset", "digits"],
      r"InitRaises raised ValueError: cannot build this model at .*models.py:\d+"),
    P("check-setting-of-user-model", ["check", f"{M}:Tiny", "--dataset", "digits",
                                      "--hidden", "x"], r"--hidden expects a whole number"),
    # user model files in train
    P("train-init-raises", ["train", f"{M}:InitRaises", "--dataset", "digits", *QUIET,
                            "--out", "{OUT}"], r"InitRaises raised ValueError"),
    P("train-not-a-latent-model", ["train", f"{M}:Plain", "--out", "{OUT}"],
      r"not a pyro_vae.LatentModel subclass"),
    P("train-syntax-error", ["train", "{FILES}/syntax.py:M", "--out", "{OUT}"],
      r"SyntaxError"),
    # new
    P("new-not-identifier", ["new", "1bad", "--dir", "{OUT}"], r"must be a Python identifier"),
    P("new-keyword", ["new", "class", "--dir", "{OUT}"], r"must be a Python identifier"),
    P("new-test-prefix", ["new", "test_me", "--dir", "{OUT}"], r"not starting with 'test'"),
    P("new-dir-is-a-file", ["new", "mine", "--dir", "{TMP}/afile"], r"is a file, not a folder",
      setup=write("{TMP}/afile", "x")),
    P("new-exists", ["new", "mine", "--dir", "{TMP}/d"], r"mine.py already exists",
      setup=write("{TMP}/d/mine.py", "# mine\n")),
    # evaluate
    P("evaluate-missing-folder", ["evaluate", "{OUT}"], r"is not a folder"),
    P("evaluate-not-a-run", ["evaluate", "{TMP}"], r"is not a run folder"),
    P("evaluate-a-file", ["evaluate", "{TMP}/afile"], r"is not a folder",
      setup=write("{TMP}/afile", "x")),
    P("evaluate-samples-77", ["evaluate", "{RUN}", "--num-samples", "77", "--no-progress"],
      r"must be a multiple of every IWAE k", run="vae"),
    P("evaluate-samples-negative", ["evaluate", "{RUN}", "--num-samples", "-1"],
      r"must be a whole number >= 0", run="vae"),
    P("evaluate-samples-x", ["evaluate", "{RUN}", "--num-samples", "x"], r"invalid int value",
      run="vae"),
    P("evaluate-unknown-device", ["evaluate", "{RUN}", "--device", "tpu"],
      r"unknown device 'tpu'", run="vae"),
    P("evaluate-no-checkpoint", EVAL, r"has no checkpoint.pt", run="vae",
      setup=remove("checkpoint.pt")),
    P("evaluate-corrupt-checkpoint", EVAL, r"is corrupt or unreadable",
      run="vae", setup=write("{RUN}/checkpoint.pt", b"PK\x03\x04 truncated")),
    P("evaluate-empty-checkpoint", EVAL, r"is corrupt or unreadable",
      run="vae", setup=write("{RUN}/checkpoint.pt", b"")),
    P("evaluate-checkpoint-not-a-dict", EVAL,
      r"is not a pyro_vae checkpoint", run="vae",
      setup=lambda ctx: torch.save([1, 2], ctx.run / "checkpoint.pt")),
    P("evaluate-checkpoint-of-other-model", EVAL, r"does not match the model",
      run="vae", setup=other_checkpoint("ae")),
    P("evaluate-settings-mismatch", EVAL, r"does not match the model",
      run="vae", setup=edit_json("config.json",
                                 lambda c: c["model_config"].update(latent_dim=5))),
    P("evaluate-config-not-json", EVAL, r"is unreadable or not JSON",
      run="vae", setup=write("{RUN}/config.json", "{not json")),
    P("evaluate-config-missing-keys", EVAL,
      r"is not a pyro_vae run config", run="vae",
      setup=write("{RUN}/config.json", '{"model": "vae"}')),
    P("evaluate-config-unknown-model", EVAL, r"unknown model 'nope'",
      run="vae", setup=edit_json("config.json",
                                 lambda c: c.update(model="nope", model_source=None))),
    P("evaluate-config-unknown-dataset", EVAL, r"unknown data set 'nope'",
      run="vae", setup=edit_json("config.json", lambda c: c.update(dataset="nope"))),
    P("evaluate-config-bad-epochs", EVAL,
      r"setting 'epochs' expects int, got 'x'", run="vae",
      setup=edit_json("config.json", lambda c: c["train"].update(epochs="x"))),
    P("evaluate-config-bad-setting-type", EVAL, r"latent_dim", run="vae",
      setup=edit_json("config.json", lambda c: c["model_config"].update(latent_dim="two"))),
    P("evaluate-user-file-gone", EVAL, r"moved_models.py no longer exists",
      run="user", setup=user_file_now(None)),
    P("evaluate-user-file-broken", EVAL,
      r"cannot be reopened: importing model file .* failed: SyntaxError", run="user",
      setup=user_file_now("class Tiny(:\n")),
    # sample
    P("sample-missing-run", ["sample", "{TMP}/nowhere", "--out", "{OUT}/s.png"],
      r"nowhere is not a folder"),
    P("sample-num-0", ["sample", "{RUN}", "--num", "0", "--out", "{OUT}/s.png"],
      r"--num must be at least 1", run="vae"),
    P("sample-num-negative", ["sample", "{RUN}", "--num", "-3", "--out", "{OUT}/s.png"],
      r"--num must be at least 1", run="vae"),
    P("sample-num-x", ["sample", "{RUN}", "--num", "x", "--out", "{OUT}/s.png"],
      r"invalid int value", run="vae"),
    P("sample-out-jpg", ["sample", "{RUN}", "--out", "{OUT}/s.jpg"], r"must name a .png file",
      run="vae"),
    P("sample-out-no-suffix", ["sample", "{RUN}", "--out", "{OUT}/s"],
      r"must name a .png file", run="vae"),
    P("sample-no-out", ["sample", "{RUN}"], r"required: --out", run="vae"),
    P("sample-label-not-conditional", ["sample", "{RUN}", "--label", "3", "--out",
                                       "{OUT}/s.png", "--device", "cpu"],
      r"--label needs a model that generates by class", run="vae"),
    P("sample-label-out-of-range", ["sample", "{RUN}", "--label", "10", "--out",
                                    "{OUT}/s.png", "--device", "cpu"],
      r"--label must be a class in 0..9, got 10", run="cvae"),
    P("sample-label-negative", ["sample", "{RUN}", "--label", "-1", "--out", "{OUT}/s.png",
                                "--device", "cpu"], r"--label must be a class in 0..9",
      run="cvae"),
    P("sample-unknown-device", ["sample", "{RUN}", "--out", "{OUT}/s.png", "--device", "tpu"],
      r"unknown device 'tpu'", run="vae"),
    P("sample-seed-x", ["sample", "{RUN}", "--out", "{OUT}/s.png", "--seed", "x"],
      r"--seed: expected a whole number", run="vae"),
    P("sample-corrupt-checkpoint", ["sample", "{RUN}", "--out", "{OUT}/s.png"],
      r"is corrupt or unreadable", run="vae",
      setup=write("{RUN}/checkpoint.pt", b"garbage")),
    # plot
    P("plot-unknown-kind", ["plot", "{RUN}", "--kind", "nope", "--out", "{OUT}/p.png"],
      r"invalid choice: 'nope'", run="vae"),
    P("plot-no-kind", ["plot", "{RUN}", "--out", "{OUT}/p.png"], r"required: --kind",
      run="vae"),
    P("plot-out-jpg", ["plot", "{RUN}", "--kind", "traversal", "--out", "{OUT}/p.jpg"],
      r"must name a .png file", run="vae"),
    P("plot-not-a-run", ["plot", "{TMP}", "--kind", "traversal", "--out", "{OUT}/p.png"],
      r"is not a run folder"),
    P("plot-real-data", ["plot", "{RUN}", "--kind", "traversal", "--out", "{OUT}/p.png",
                         "--device", "cpu"], r"needs image data", run="gmm"),
    # diagnose
    P("diagnose-points-x", ["diagnose", "{RUN}", "--points", "x"], r"invalid int value",
      run="vae"),
    P("diagnose-draws-50", ["diagnose", "{RUN}", "--draws", "50"],
      r"--draws must be at least 100", run="vae"),
    P("diagnose-nuts-point", [*DIAG, "--nuts-point", "50"], r"--nuts-point must be in 0..4",
      run="vae"),
    P("diagnose-ppc-draws", [*DIAG, "--ppc-draws", "-1"], r"--ppc-draws must be in 0\.\.100",
      run="vae"),
    P("diagnose-not-a-run", ["diagnose", "{TMP}"], r"is not a run folder"),
    P("diagnose-unknown-device", ["diagnose", "{RUN}", "--device", "tpu"],
      r"unknown device 'tpu'", run="vae"),
    # things that work, and must keep working, next to the refusals above
    P("sample-from-read-only-run", ["sample", "{RUN}", "--out", "{TMP}/s.png", "--num", "4",
                                    "--device", "cpu"], code=0, run="vae", setup=deny("{RUN}"),
      check=png_written("{TMP}/s.png")),
    P("sample-while-a-writer-holds-the-run", ["sample", "{RUN}", "--out", "{TMP}/s.png",
                                              "--num", "4", "--device", "cpu"],
      code=0, run="vae", setup=lock_run, check=png_written("{TMP}/s.png")),

    # ---- (B) the known failures: the behaviour the library must come to have ---------------
    # 1. seeds out of range
    P("seed-negative", [*T_OUT, "--seed", "-1"], SEED_RANGE, known=1),
    P("seed-huge", [*T_OUT, "--seed", str(2**70)], SEED_RANGE, known=1),
    P("sample-seed-negative", ["sample", "{RUN}", "--out", "{OUT}/s.png", "--seed", "-1",
                               "--device", "cpu"], SEED_RANGE, run="vae", known=1),
    P("plot-seed-negative", ["plot", "{RUN}", "--kind", "traversal", "--out", "{OUT}/p.png",
                             "--seed", "-1", "--device", "cpu"], SEED_RANGE, run="vae",
      known=1),
    P("diagnose-seed-negative", [*DIAG, "--no-nuts", "--seed", "-1"], SEED_RANGE, run="vae",
      known=1),
    # 2. infinite and NaN numbers, refused before anything is written
    *[P(f"train-{flag}-{value}", [*T_OUT, f"--{flag}", value, *extra], pattern, no_steps=True,
        known=2)
      for flag, value, pattern, extra in [
          ("lr", "inf", r"(?i)(--lr|learning rate|'lr')", []),
          ("lr", "-inf", r"(?i)(--lr|learning rate|'lr')", []),
          ("beta", "inf", r"beta", []),
          ("free-bits", "inf", r"free.bits", []),
          ("adam-eps", "inf", r"(?i)adam.eps", []),
          ("baseline-lr", "inf", r"(?i)baseline.lr",
           ["--objective", "tracegraph", "--baseline", "neural"]),
          ("baseline-lr", "nan", r"(?i)baseline.lr",
           ["--objective", "tracegraph", "--baseline", "neural"]),
      ]],
    # 3. out of host memory
    P("train-num-particles-1e8", [*T_OUT, "--num-particles", "100000000"], r"(?i)memory",
      setup=limit_memory, known=3),
    # 4. --out that cannot be a folder
    P("train-out-under-a-file", [*T, "--out", "{TMP}/afile/sub"], r"(?i)(file|folder)",
      setup=write("{TMP}/afile", "x"), absent=("{TMP}/afile/sub",), known=4),
    P("train-out-empty", [*T, "--out", ""], r"(?i)--out", known=4),
    # 5. read-only folders: simulated (root ignores chmod) and real (skipped as root)
    P("ro-train-new-run", [*T, "--out", "{TMP}/ro/run"], READ_ONLY, setup=deny("{TMP}/ro"),
      absent=("{TMP}/ro/run",), no_steps=True, known=5),
    P("ro-resume", [*RESUME, "--epochs", "3"], READ_ONLY, run="vae", setup=deny("{RUN}"),
      no_steps=True, known=5),
    P("ro-evaluate", ["evaluate", "{RUN}", "--num-samples", "50", "--no-progress", "--device",
                      "cpu"], READ_ONLY, run="vae", setup=deny("{RUN}"), known=5),
    P("ro-sample-out", ["sample", "{RUN}", "--out", "{TMP}/ro/s.png", "--device", "cpu"],
      READ_ONLY, run="vae", setup=deny("{TMP}/ro"), absent=("{TMP}/ro/s.png",), known=5),
    P("ro-plot-out", ["plot", "{RUN}", "--kind", "traversal", "--out", "{TMP}/ro/p.png",
                      "--device", "cpu"], READ_ONLY, run="vae", setup=deny("{TMP}/ro"),
      absent=("{TMP}/ro/p.png",), known=5),
    P("ro-diagnose", [*DIAG, "--no-nuts"], READ_ONLY, run="vae", setup=deny("{RUN}"),
      known=5),
    # 6. sample --out a directory
    P("sample-out-is-a-directory", ["sample", "{RUN}", "--out", "{TMP}/x.png", "--device",
                                    "cpu"], r"(?i)(director|folder)", run="vae",
      setup=mkdir("{TMP}/x.png"), known=6, check=empty_folder("{TMP}/x.png")),
    # 7. diagnose's numbers, refused before anything is written
    P("diagnose-chains-0", [*DIAG, "--chains", "0"], r"(?i)chains", run="vae", known=7),
    P("diagnose-nuts-samples-0", [*DIAG, "--nuts-samples", "0"], r"(?i)samples", run="vae",
      known=7),
    P("diagnose-nuts-warmup-negative", [*DIAG, "--nuts-warmup", "-1"], r"(?i)warm",
      run="vae", known=7),
    P("diagnose-points-0", ["diagnose", "{RUN}", "--points", "0"], r"--points", run="vae",
      known=7),
    P("diagnose-draws-0", ["diagnose", "{RUN}", "--draws", "0"], r"--draws", run="vae",
      known=7),
    # 8. hand-edited config.json, checkpoint.pt and metrics.json
    P("cfg-model-config-null-evaluate", EVAL,
      r"model_config", run="gmm", known=8,
      setup=edit_json("config.json", lambda c: c.update(model_config=None))),
    P("cfg-model-config-null-resume", [*RESUME, "--epochs", "2"], r"model_config", run="gmm",
      no_steps=True, known=8,
      setup=edit_json("config.json", lambda c: c.update(model_config=None))),
    P("cfg-train-not-a-dict", EVAL, r"train", run="vae",
      known=8, setup=edit_json("config.json", lambda c: c.update(train="x"))),
    P("cfg-lr-string-resume", [*RESUME, "--epochs", "3"], r"lr", run="vae", no_steps=True,
      known=8, setup=edit_json("config.json", lambda c: c["train"].update(lr="0.1"))),
    P("cfg-unknown-train-key", EVAL,
      r"unknown setting 'nope'", run="vae", known=8,
      setup=edit_json("config.json", lambda c: c["train"].update(nope=1))),
    P("cfg-json-list", EVAL, r"config.json", run="vae",
      known=8, setup=write("{RUN}/config.json", '["vae", "digits"]')),
    *[P(f"ckpt-{what}-{cmd}", argv, pattern, run="vae", known=8, setup=edit_checkpoint(edit),
        no_steps=True)
      for what, pattern, edit in [
          ("no-rng", r"rng", lambda s: s.pop("rng")),
          ("optim-garbage", r"optim", lambda s: s.update(optim="garbage")),
          ("history-none", r"history", lambda s: s.update(history=None)),
          ("nan-weight", r"(?i)(nan|finite)", _nan_weight),
      ]
      for cmd, argv in [("resume", [*RESUME, "--epochs", "3"]),
                        ("evaluate", EVAL)]
      if cmd == "resume" or what == "nan-weight"],
    # evaluate reads the weights alone: a checkpoint without training state still evaluates
    *[P(f"ckpt-{what}-evaluate", EVAL, code=0, run="vae", unchanged=False,
        setup=edit_checkpoint(edit))
      for what, edit in [("no-rng", lambda s: s.pop("rng")),
                         ("optim-garbage", lambda s: s.update(optim="garbage")),
                         ("history-none", lambda s: s.update(history=None))]],
    P("ckpt-optim-garbage-dict-resume", [*RESUME, "--epochs", "3"], r"optim", run="vae",
      no_steps=True, known=8,
      setup=edit_checkpoint(lambda s: s.update(optim={"garbage": 1}))),
    P("metrics-a-list", EVAL,
      r"metrics.json", run="vae", known=8, setup=write("{RUN}/metrics.json", "[1, 2]\n")),
    # 9. a second writer holds the run
    P("locked-resume", [*RESUME, "--epochs", "3"], IN_USE, run="vae", setup=lock_run,
      no_steps=True, known=9, check=released_then_works([*RESUME, "--epochs", "3"])),
    P("locked-evaluate", EVAL, IN_USE,
      run="vae", setup=lock_run, known=9,
      check=released_then_works(EVAL)),
    P("locked-diagnose", [*DIAG, "--no-nuts"], IN_USE, run="vae", setup=lock_run, known=9),
    # 10. each step finite, the epoch's sum overflows
    P("train-epoch-sum-overflows", ["train", "vae", "--dataset", "digits", "--lr", "3e6",
                                    "--epochs", "8", "--eval-samples", "50", "--no-progress",
                                    "--out", "{OUT}"], r"(?i)diverg", absent=(), known=10,
      check=only_finite_files),
    # 11. a mixture at a large learning rate, then sample
    P("gmm-large-lr-then-sample", ["train", "gmm", "--dataset", "gmm-2d", "--lr", "10",
                                   "--epochs", "3", "--eval-samples", "50", *QUIET, "--out",
                                   "{OUT}"], code=(0, 2), absent=(), known=11,
      check=then_sample_works),
    # 12. objectives that cannot train discrete latents
    *[P(f"{model}-{objective}", ["train", model, "--dataset", dataset, "--objective",
                                 objective, "--epochs", "1", *QUIET, "--out", "{OUT}"],
        rf"(?i)({objective}.*{model}|{model}.*{objective})", no_steps=True, known=12)
      for model, dataset in (("bernoulli", "digits"), ("gmm", "gmm-2d"))
      for objective in ("meanfield", "iwae")],
    # 13. bernoulli's own objective takes a baseline
    P("bernoulli-baseline-neural", ["train", "bernoulli", "--dataset", "digits",
                                    "--latent-dim", "8", "--baseline", "neural", "--epochs",
                                    "1", "--batch-size", "1500", "--eval-samples", "50",
                                    *QUIET, "--out", "{OUT}"],
      code=0, absent=(), known=13),
    # 14. diagnose on a deterministic autoencoder
    P("diagnose-ae", [*DIAG, "--no-nuts"], r"\bae\b", run="ae", known=14),
    P("diagnose-dae", [*DIAG, "--no-nuts"], r"\bdae\b", run="dae", known=14),
    # 15. an error found after set-up: no INFO line before it (the one-line check)
    P("train-guide-raises", ["train", f"{M}:GuideRaises", "--dataset", "digits", *SMALL,
                             "--epochs", "1", *QUIET, "--out", "{OUT}"],
      r"GuideRaises raised RuntimeError: the guide is broken at .*models.py:\d+ \(in guide\)",
      absent=(), known=15),
    # 16. Ctrl-C during the imports: a real process
    *[P(f"sigint-{how}-{delay}s", argv, code=130, sigint=delay, known=16,
        skip=(lambda: None if (Path(sys.executable).parent / "pyro-vae").exists()
              else "no pyro-vae script next to sys.executable") if how == "script" else None)
      for how, argv in (("module", ["{PY}", "-m", "pyro_vae", "list"]),
                        ("script", ["{SCRIPT}", "list"]))
      for delay in (0.2, 1.0)],
    # 17. a stale temporary file of a killed checkpoint write
    P("stale-checkpoint-tmp", [*RESUME, "--epochs", "3"], code=0, run="vae", unchanged=False,
      setup=write("{RUN}/.checkpoint.pt.k1ll3d00.tmp", b"half a checkpoint"), known=17,
      check=no_temporary_files),
    # 18. --epochs below the run's
    P("resume-fewer-epochs", [*RESUME, "--epochs", "1"], r"(?i)epoch", run="vae",
      no_steps=True, known=18),
    # 20. file modes follow the umask
    P("modes-umask-022", T_OUT, code=0, setup=umask(0o022), absent=(), known=20,
      check=file_modes(0o644)),
    P("modes-umask-077", T_OUT, code=0, setup=umask(0o077), absent=(), known=20,
      check=file_modes(0o600)),
]

# 5, with real permissions: the same commands on really read-only folders (skipped as root)
_REAL_CHMOD = {"ro-train-new-run": "{TMP}/ro", "ro-resume": "{RUN}", "ro-evaluate": "{RUN}",
               "ro-sample-out": "{TMP}/ro", "ro-plot-out": "{TMP}/ro", "ro-diagnose": "{RUN}"}
PROBES += [P(f"chmod-{row.id[3:]}", row.argv, row.pattern, run=row.run, absent=row.absent,
             no_steps=row.no_steps, known=5, skip=as_root,
             setup=chmod_read_only(_REAL_CHMOD[row.id]))
           for row in PROBES if row.id in _REAL_CHMOD]
assert len({row.id for row in PROBES}) == len(PROBES), "row ids must be unique"


# -- running a row -------------------------------------------------------------------------------

def _count_steps(ctx: Ctx) -> None:
    for cls in (engine.FastStepper, engine.SVIStepper):
        real = cls.step

        def step(self, *args, _real=real, **kwargs):
            ctx.steps[0] += 1
            return _real(self, *args, **kwargs)

        ctx.monkeypatch.setattr(cls, "step", step)


def _run_process(row: Probe, ctx: Ctx) -> tuple[int, str, str]:
    argv = [a.format(**ctx.names) for a in row.argv]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.Popen(argv, cwd=ctx.cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(row.sigint)
    if proc.poll() is not None:
        proc.communicate()
        pytest.skip(f"the process ended within {row.sigint} s, before the signal")
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"still running 60 s after SIGINT; stderr:\n{err}")
    return proc.returncode, out, err


@pytest.mark.parametrize("row", PROBES, ids=[row.id for row in PROBES])
def test_probe(row: Probe, runs, files, tmp_path, capsys, monkeypatch):
    reason = row.skip() if row.skip else None
    if reason:
        pytest.skip(reason)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    ctx = Ctx(tmp_path, cwd, runs, files, monkeypatch, capsys)
    if row.run:
        ctx.run = tmp_path / "run"
        shutil.copytree(runs[row.run], ctx.run)
    try:
        if row.setup:
            row.setup(ctx)
        before = folder_hash(ctx.run) if ctx.run else None
        _count_steps(ctx)
        if row.sigint is not None:
            code, out, err = _run_process(row, ctx)
        else:
            code, out, err = ctx.main(row.argv)
        codes = row.code if isinstance(row.code, tuple) else (row.code,)
        refused = len(codes) == 1 and codes[0] != 0
        if refused:
            assert_one_line(code, out, err, codes[0], row.pattern)
        else:
            assert "Traceback" not in err + out, err
            assert code in codes, f"exit status {code}, expected {row.code}; stderr:\n{err}"
        if refused and ctx.run and row.unchanged:
            after = folder_hash(ctx.run)
            assert after == before, f"the run folder changed: {hash_diff(before, after)}"
        if row.no_steps:
            assert ctx.steps[0] == 0, f"trained {ctx.steps[0]} steps before refusing"
        for template in row.absent:
            assert not ctx.path(template).exists(), f"{ctx.path(template)} was created"
        if row.check:
            row.check(ctx, code, out, err)
        left = sorted(p.name for p in cwd.iterdir())
        assert not left, f"written into the working directory: {left}"
    finally:
        for undo in reversed(ctx.cleanups):
            undo()


# -- the Python API ------------------------------------------------------------------------------

def _vae():
    from pyro_vae.models import build_model

    return build_model("vae", (1, 8, 8), latent_dim=2, hidden=(16,))


def _evaluate(model, x):
    from pyro_vae.evaluate import evaluate

    return evaluate(model, x, num_samples=10, iwae_ks=(5,))


def _binary(*shape):
    return torch.bernoulli(torch.full(shape, 0.5))


def _with_nan():
    x = _binary(4, 1, 8, 8)
    x[0, 0, 0, 0] = math.nan
    return x


def _train_config(**kw):
    from pyro_vae.train import TrainConfig

    return TrainConfig(**kw)


def _eval_config(**kw):
    from pyro_vae.run_config import EvalConfig

    return EvalConfig(**kw)


def _run_config(model, **kw):
    from pyro_vae.run_config import RunConfig

    return RunConfig.for_model(model, **kw)


def _open_run(path):
    from pyro_vae.runner import open_run

    return open_run(path)


def _train_a_plain_module():
    from pyro_vae.data import load_dataset
    from pyro_vae.train import train

    return train(torch.nn.Linear(2, 2), load_dataset("digits"), _train_config(epochs=1))


API_PROBES = [  # id, call, expected error, regex on its message, known failure
    ("TrainConfig-epochs-0", lambda: _train_config(epochs=0), ConfigError, r"epochs", None),
    ("TrainConfig-epochs-float", lambda: _train_config(epochs=1.5), ConfigError,
     r"'epochs' expects int", None),
    ("TrainConfig-lr-nan", lambda: _train_config(lr=math.nan), ConfigError,
     r"'lr' must be a finite number", None),
    ("TrainConfig-objective", lambda: _train_config(objective="nope"), ConfigError,
     r"unknown objective", None),
    ("TrainConfig-device", lambda: _train_config(device="tpu"), ConfigError,
     r"unknown device", None),
    ("TrainConfig-lr-inf", lambda: _train_config(lr=math.inf), ConfigError,
     r"(?i)(lr|learning rate)", 2),
    ("TrainConfig-lr-string", lambda: _train_config(lr="0.1"), ConfigError,
     r"(?i)(lr|learning rate)", 2),
    ("TrainConfig-beta-inf", lambda: _train_config(beta=math.inf), ConfigError, r"beta", 2),
    ("TrainConfig-seed-negative", lambda: _train_config(seed=-1), ConfigError, SEED_RANGE, 1),
    ("EvalConfig-77", lambda: _eval_config(num_samples=77), ConfigError, r"multiple", None),
    ("RunConfig-unknown-model", lambda: _run_config("nope"), ConfigError,
     r"unknown model 'nope'", None),
    ("RunConfig-unknown-setting", lambda: _run_config("vae", dataset="digits", nope=1),
     ConfigError, r"has no setting 'nope'", None),
    ("RunConfig-unknown-dataset", lambda: _run_config("vae", dataset="nope"), ConfigError,
     r"unknown data set", None),
    ("train-a-plain-module", _train_a_plain_module, ConfigError,
     r"train needs a pyro_vae.LatentModel", None),
    ("open_run-not-a-run", lambda: _open_run("/nonexistent/run"), UserError,
     r"is not a folder", None),
    ("evaluate-grey-x", lambda: _evaluate(_vae(), torch.rand(4, 1, 8, 8)), DataError,
     r"(?i)binary", 19),
    ("evaluate-wrong-shape", lambda: _evaluate(_vae(), _binary(4, 1, 7, 7)), DataError,
     r"shape", 19),
    ("evaluate-nan-x", lambda: _evaluate(_vae(), _with_nan()), DataError, r"(?i)nan", 19),
]


@pytest.mark.parametrize("call,error,pattern", [r[1:4] for r in API_PROBES],
                         ids=[r[0] for r in API_PROBES])
def test_api_probe(call, error, pattern):
    with pytest.raises(UserError) as info:
        call()
    assert isinstance(info.value, error), f"{type(info.value).__name__}, expected {error}"
    assert re.search(pattern, str(info.value)), str(info.value)


def test_api_gmm_evaluate_on_one_point():
    """19: a mixture evaluated on a single point gives numbers or a UserError, never a
    RuntimeError from inside torch."""
    from pyro_vae.models import build_model

    model = build_model("gmm", (2,))
    with contextlib.suppress(UserError):
        result = _evaluate(model, torch.zeros(1, 2))
        assert isinstance(result, dict) and "test_elbo" in result
