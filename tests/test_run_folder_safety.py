"""Run folders under hostile conditions: one writer at a time, stale lock and temporary files,
the user's umask, paths that cannot be written, new runs that fail.

The tests may run as root, for whom a read-only mode does not bar writing, so permission and
disk problems are injected where files are made (``runs._open_file``, ``Path.mkdir``); the
real-chmod tests at the end run only as another user. Every refusal is exit status 2, one
line on stderr, and a folder left byte for byte as it was (names, bytes, modes) or never made.
"""

import errno
import fcntl
import os
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from pyro_vae import RunConfig, diagnostics, runner, runs
from pyro_vae.cli import main
from pyro_vae.engine import FastStepper
from pyro_vae.errors import RunFolderError, TrainingDiverged
from pyro_vae.runs import RunFolder

REPO = Path(__file__).resolve().parents[1]
TINY = ["--dataset", "digits", "--latent-dim", "2", "--hidden", "16", "--batch-size", "128",
        "--no-progress", "--device", "cpu"]
BASE = ["train", "vae", *TINY]
NEW = [*BASE, "--epochs", "1", "--eval-samples", "0"]
STEPS = 11  # digits: 1,497 training points, full batches of 128
IS_ROOT = os.geteuid() == 0


def _cli(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _refused(code, err, *fragments):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("pyro-vae: error: "), err
    for fragment in fragments:
        assert str(fragment) in lines[0], (fragment, lines[0])


def snapshot(path: Path) -> dict | None:
    """Every name under ``path`` with its kind, mode and bytes (None: ``path`` is not there)."""
    if not os.path.lexists(path):
        return None
    found = {}
    for p in sorted([path, *path.rglob("*")]):
        st = p.lstat()
        found[str(p.relative_to(path))] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode),
                                           p.read_bytes() if p.is_file() else None)
    return found


def _inside(path: Path, folder: Path) -> bool:
    path, folder = Path(os.path.abspath(path)), Path(os.path.abspath(folder))
    return path == folder or folder in path.parents


def deny(monkeypatch, folder: Path, code: int = errno.EACCES, name: str = "") -> None:
    """Files made in ``folder`` (whose names contain ``name``), and folders made in it,
    fail with ``code``, as a read-only folder or a full disk would have them."""
    real_open, real_mkdir = runs._open_file, Path.mkdir

    def open_file(path, flags):
        if _inside(Path(path).parent, folder) and name in Path(path).name:
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, flags)

    def mkdir(self, *args, **kwargs):
        if _inside(self.parent, folder) and not name:
            raise OSError(code, os.strerror(code), str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(runs, "_open_file", open_file)
    monkeypatch.setattr(Path, "mkdir", mkdir)


@pytest.fixture
def steps(monkeypatch):
    """Counts training steps; set ``fail`` to ``(n, exception or "nan")`` to fail the n-th."""
    real = FastStepper.step
    seen = {"n": 0, "fail": None}

    def step(self, *args, **kwargs):
        seen["n"] += 1
        if seen["fail"] and seen["n"] == seen["fail"][0]:
            if seen["fail"][1] == "nan":
                return torch.tensor(float("nan"))
            raise seen["fail"][1]
        return real(self, *args, **kwargs)

    monkeypatch.setattr(FastStepper, "step", step)
    return seen


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "run"
    assert main([*NEW, "--out", str(out)]) == 0
    return out


@pytest.fixture
def run_dir(trained, tmp_path):
    """A copy of a trained run to spoil."""
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


def _config(**train):
    return RunConfig.for_model("vae", dataset="digits", latent_dim=2, hidden=(16,),
                               train={"epochs": 1, "batch_size": 128, "device": "cpu", **train},
                               eval={"num_samples": 0})


# -- one writer per run folder ----------------------------------------------------------------
def test_the_lock_is_reentrant_refuses_another_holder_and_goes_away(tmp_path):
    folder = RunFolder(tmp_path)
    refused = []

    def second_writer():
        try:
            with RunFolder(tmp_path).lock("evaluate"):
                pass
        except RunFolderError as exc:
            refused.append(str(exc))

    with folder.lock("train") as lock:
        assert (tmp_path / ".lock").read_text() == f"{os.getpid()} train\n"
        with folder.lock("finish") as again:  # run -> finish: the same hold
            assert again is lock
        thread = threading.Thread(target=second_writer)  # flock: another open file, refused
        thread.start()
        thread.join()
        assert (tmp_path / ".lock").exists()
    assert refused == [f"{tmp_path} is in use by another pyro-vae process "
                       f"(pid {os.getpid()}: train); wait for it to finish"]
    assert snapshot(tmp_path) == {".": (stat.S_IFDIR, stat.S_IMODE(tmp_path.stat().st_mode),
                                        None)}
    with pytest.raises(RunFolderError, match="nowhere is not a folder"):
        with RunFolder(tmp_path / "nowhere").lock("evaluate"):
            pass
    assert not (tmp_path / "nowhere").exists()


def test_the_lock_file_locked_is_the_one_at_its_path(tmp_path, monkeypatch):
    """A holder unlinks the lock file as it releases it: one who opened the old file and then
    got its flock must see that the path names another file now, and lock that one."""
    path, real, calls = tmp_path / ".lock", fcntl.flock, []

    def flock(fd, operation):
        real(fd, operation)
        calls.append(fd)
        if len(calls) == 1:  # the old holder released: unlinked, and a newcomer made another
            path.unlink()
            path.write_text("")

    monkeypatch.setattr(fcntl, "flock", flock)
    with RunFolder(tmp_path).lock("train") as lock:
        assert len(calls) == 2
        assert os.path.samestat(os.fstat(lock.fd), os.lstat(path))
        path.unlink()  # someone removed ours and another process took a new one
        path.write_text("4242 train\n")
    assert path.read_text() == "4242 train\n"  # released without unlinking a file not ours


def test_a_stale_lock_and_stale_temporary_files_are_taken_over(run_dir, capsys):
    (run_dir / ".lock").write_text("999999 train\n")  # kill -9: the OS dropped the flock
    stale = [".checkpoint.pt.abcd1234.tmp", ".metrics.json.x_9y8z7w.tmp"]
    for name in stale:
        (run_dir / name).write_bytes(b"half a file")
    (run_dir / ".notes.tmp").write_text("mine")  # not a name atomic_write makes
    code, out, err = _cli(["evaluate", run_dir, "--num-samples", "50", "--no-progress"], capsys)
    assert code == 0, err
    left = {p.name for p in run_dir.iterdir() if p.name.startswith(".")}
    assert left == {".notes.tmp"}


def test_a_second_writer_is_refused_and_the_first_goes_on(tmp_path, capsys):
    """A real training holds the folder (paused before its 5th step); every other writer is
    refused in one line, naming it, and changes nothing -- not even another process's
    temporary file. The first then completes, and the run resumes normally."""
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    first = subprocess.Popen([sys.executable, str(REPO / "tests" / "fault_cli.py"),
                              "pause:step:5", *BASE, "--epochs", "2", "--eval-samples", "0",
                              "--out", str(run)], cwd=tmp_path, env=env, text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    try:
        lines = []  # the run's info lines come first on stdout, then the pause
        for line in first.stdout:
            lines.append(line)
            if line == "paused\n":
                break
        assert lines and lines[-1] == "paused\n", "".join(lines)
        (run / ".metrics.json.live0000.tmp").write_bytes(b"being written")
        before = snapshot(run)
        holder = f"is in use by another pyro-vae process (pid {first.pid}: train)"
        for argv in (["train", "--resume", "--out", run, "--epochs", "3", "--no-progress"],
                     ["evaluate", run, "--num-samples", "50", "--no-progress"],
                     ["diagnose", run, "--no-nuts", "--points", "5", "--draws", "100"],
                     [*NEW, "--out", run]):
            _refused(*_cli(argv, capsys)[::2], f"{run} {holder}", "wait for it to finish")
            assert snapshot(run) == before, argv
        for call in (lambda: runner.run(_config(), run, progress=False),
                     lambda: runner.resume(run, epochs=3, progress=False),
                     lambda: runner.evaluate_run(run, progress=False),
                     lambda: diagnostics.diagnose(run, points=5, draws=100, nuts=False)):
            with pytest.raises(RunFolderError, match="in use by another pyro-vae process"):
                call()
        assert snapshot(run) == before
    finally:
        out, err = first.communicate("go on\n", timeout=120)
    assert first.returncode == 0, err
    assert not (run / ".lock").exists()
    assert (run / ".metrics.json.live0000.tmp").exists()  # only a lock taker removes it
    code, _, err = _cli(["train", "--resume", "--out", run, "--epochs", "3", "--eval-samples",
                         "0", "--no-progress"], capsys)
    assert code == 0, err
    assert len((run / "history.csv").read_text().splitlines()) == 1 + 3
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]


# -- the user's umask -------------------------------------------------------------------------
def test_every_file_gets_the_users_umask(tmp_path):
    old = os.umask(0o027)
    try:
        runner.run(_config(), tmp_path / "run", progress=False)
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "run").iterdir()}
    assert {"config.json", "checkpoint.pt", "history.csv", "metrics.json",
            "samples.png"} <= set(modes)
    assert set(modes.values()) == {0o640}, modes
    old = os.umask(0o002)
    try:
        runs.atomic_write(tmp_path / "x.json", b"{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "x.json").stat().st_mode) == 0o664


# -- writable before working ------------------------------------------------------------------
OUT_CASES = {  # --out, what the refusal says, how the folder is spoiled
    "a-file": ("afile", "afile is a file, not a folder", None),
    "under-a-file": ("afile/sub", "afile is a file, not a folder", None),
    "empty": ("", "argument --out: an empty path", None),
    "folder-not-writable": ("ro", "cannot write ro: Permission denied", errno.EACCES),
    "parent-not-writable": ("ro/new/run", "cannot write ro/new/run: Permission denied",
                            errno.EACCES),
    "read-only-file-system": ("ro", "cannot write ro: Read-only file system", errno.EROFS),
}


@pytest.mark.parametrize("case", OUT_CASES)
def test_train_refuses_an_out_it_cannot_use(case, tmp_path, capsys, monkeypatch, steps):
    out, message, code = OUT_CASES[case]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("not a folder")
    (tmp_path / "ro").mkdir()
    if code is not None:
        deny(monkeypatch, tmp_path / "ro", code)
    before = snapshot(tmp_path)
    _refused(*_cli([*NEW, "--out", out], capsys)[::2], message)
    assert steps["n"] == 0
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("command", ["resume", "evaluate", "diagnose"])
def test_an_unwritable_run_is_refused_before_any_work(command, run_dir, capsys, monkeypatch,
                                                      steps):
    worked = []
    monkeypatch.setattr(runner, "evaluate_all", lambda *a, **k: worked.append(1))
    monkeypatch.setattr(diagnostics, "guide_inference_data", lambda *a, **k: worked.append(1))
    deny(monkeypatch, run_dir)
    before = snapshot(run_dir)
    argv = {"resume": ["train", "--resume", "--out", run_dir, "--epochs", "2", "--no-progress"],
            "evaluate": ["evaluate", run_dir, "--num-samples", "50", "--no-progress"],
            "diagnose": ["diagnose", run_dir, "--no-nuts", "--points", "5", "--draws", "100"],
            }[command]
    _refused(*_cli(argv, capsys)[::2], f"cannot write {run_dir}: Permission denied")
    assert steps["n"] == 0 and not worked
    assert snapshot(run_dir) == before


@pytest.mark.parametrize("case", ["a-folder", "under-a-file", "not-writable", "disk-full"])
@pytest.mark.parametrize("command", ["sample", "plot"])
def test_sample_and_plot_refuse_an_out_they_cannot_write(command, case, run_dir, tmp_path,
                                                         capsys, monkeypatch):
    pics = tmp_path / "pics"
    pics.mkdir()
    (pics / "a-folder.png").mkdir()
    (pics / "afile").write_text("not a folder")
    out, message = {
        "a-folder": (pics / "a-folder.png", "is a folder; name a file"),
        "under-a-file": (pics / "afile" / "x.png", "afile is a file, not a folder"),
        "not-writable": (pics / "x.png", f"cannot write {pics / 'x.png'}: Permission denied"),
        "disk-full": (pics / "x.png", f"cannot write {pics / 'x.png'}: No space left on device"),
    }[case]
    if case in ("not-writable", "disk-full"):
        deny(monkeypatch, pics, errno.EACCES if case == "not-writable" else errno.ENOSPC)
    before = snapshot(tmp_path)
    extra = ["--num", "4"] if command == "sample" else ["--kind", "interpolation"]
    _refused(*_cli([command, run_dir, *extra, "--out", out], capsys)[::2], message)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_a_failed_write_of_metrics_is_one_line_naming_the_file(code, run_dir, capsys,
                                                               monkeypatch):
    deny(monkeypatch, run_dir, code, name="metrics.json")
    before = snapshot(run_dir)
    _refused(*_cli(["evaluate", run_dir, "--num-samples", "50", "--no-progress"], capsys)[::2],
             f"cannot write {run_dir / 'metrics.json'}: {os.strerror(code)}")
    assert snapshot(run_dir) == before


def test_a_failed_write_in_diagnose_is_one_line_naming_the_file(run_dir, capsys, monkeypatch):
    deny(monkeypatch, run_dir, errno.ENOSPC, name="posterior.nc")
    before = snapshot(run_dir)
    _refused(*_cli(["diagnose", run_dir, "--no-nuts", "--points", "5", "--draws", "100"],
                   capsys)[::2],
             f"cannot write {run_dir / 'posterior.nc'}: No space left on device")
    assert snapshot(run_dir) == before


# -- a new run that fails leaves nothing behind -----------------------------------------------
FAILURES = {"diverged": ("nan", 2), "interrupted": (KeyboardInterrupt(), 130),
            "out-of-memory": (torch.cuda.OutOfMemoryError("CUDA out of memory"), 2)}


@pytest.mark.parametrize("failure,where", [
    ("diverged", "new"), ("interrupted", "new"), ("out-of-memory", "new"),
    ("diverged", "stale"), ("interrupted", "empty")])
def test_a_new_run_failing_before_its_first_checkpoint_leaves_nothing(failure, where, tmp_path,
                                                                      capsys, steps):
    """``new``: a folder (and parents) this call makes is removed; ``empty``: an existing
    folder stays, empty; ``stale``: a run that never reached a checkpoint (and a file of the
    user's) stays byte for byte, mode and all."""
    out = tmp_path / "a" / "b" / "run" if where == "new" else tmp_path / "run"
    if where != "new":
        out.mkdir()
    if where == "stale":
        (out / "config.json").write_text('{"model": "vae"}\n')
        (out / "config.json").chmod(0o600)
        (out / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    exception, exit_code = FAILURES[failure]
    steps["fail"] = (3, exception)
    code, _, err = _cli([*NEW, "--out", out], capsys)
    assert code == exit_code, err
    if exit_code == 2:
        _refused(code, err)
    assert snapshot(tmp_path) == before


def test_the_python_run_cleans_up_as_well(tmp_path, steps):
    steps["fail"] = (2, "nan")
    with pytest.raises(TrainingDiverged, match="nothing was saved"):
        runner.run(_config(), tmp_path / "run", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_new_run_that_fails_writing_its_first_checkpoint_leaves_nothing(tmp_path, capsys,
                                                                          monkeypatch):
    deny(monkeypatch, tmp_path, errno.ENOSPC, name="checkpoint.pt")
    _refused(*_cli([*NEW, "--out", tmp_path / "run"], capsys)[::2],
             f"cannot write {tmp_path / 'run' / 'checkpoint.pt'}: No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_after_its_first_checkpoint_a_failed_run_is_kept(tmp_path, capsys, steps):
    out = tmp_path / "run"
    steps["fail"] = (STEPS + 2, "nan")  # in epoch 2
    _refused(*_cli([*BASE, "--epochs", "2", "--eval-samples", "0", "--out", out],
                   capsys)[::2], "the checkpoint of epoch 1", "is kept")
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "config.json",
                                                      "history.csv"]
    assert RunFolder(out).load_checkpoint()["epoch"] == 1


# -- real permissions (not as root, who may write anywhere) -----------------------------------
@pytest.fixture
def read_only(tmp_path):
    made = []

    def make(path: Path) -> Path:
        path.chmod(0o555)
        made.append(path)
        return path
    yield make
    for path in made:
        path.chmod(0o755)


@pytest.mark.skipif(IS_ROOT, reason="root may write into a read-only folder")
def test_real_read_only_folders_are_refused_before_any_work(run_dir, tmp_path, capsys,
                                                            read_only, steps):
    ro = tmp_path / "ro"
    ro.mkdir()
    read_only(ro)
    before = snapshot(tmp_path)
    _refused(*_cli([*NEW, "--out", ro / "run"], capsys)[::2], "cannot write", "not writable")
    _refused(*_cli(["sample", run_dir, "--out", ro / "x.png"], capsys)[::2], "cannot write")
    assert snapshot(tmp_path) == before
    read_only(run_dir)
    before = snapshot(run_dir)
    _refused(*_cli(["train", "--resume", "--out", run_dir, "--epochs", "2", "--no-progress"],
                   capsys)[::2], f"cannot write {run_dir}: Permission denied")
    _refused(*_cli(["evaluate", run_dir, "--num-samples", "50", "--no-progress"],
                   capsys)[::2], f"cannot write {run_dir}: Permission denied")
    assert steps["n"] == 0 and snapshot(run_dir) == before
