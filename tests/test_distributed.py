"""Data-parallel training (pyro_vae.distributed): ranks started as torchrun starts them
(``tests/dist_cli.py``, gloo on the CPU, a free port), compared with plain runs.

* two processes with a global batch of 2B train the deterministic ``ae`` (fixed binarization:
  no sampling noise) to the parameters of one process with batch 2B, up to float rounding
  (the gradient of the global batch is summed in another order);
* a rank SIGKILLed after an epoch: the run resumes from rank 0's checkpoint (every rank's
  RNG states) and ends bit for bit as the uninterrupted two-process run (a ``vae``: each rank
  draws its own noise, so the per-rank generators must come back exactly);
* a world of one through the distributed code path is the plain run, bit for bit;
* what the world cannot do (the svi engine, another world size on resume) is one line and
  exit 2 on every rank, none left waiting.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from bitwise import assert_identical, without_timing

from pyro_vae import distributed
from pyro_vae.cli import main

REPO = Path(__file__).resolve().parents[1]
HELPER = REPO / "tests" / "dist_cli.py"
COMMON = ["--dataset", "digits", "--hidden", "16", "--eval-samples", "50", "--no-progress",
          "--device", "cpu", "--seed", "3"]
AE = ["train", "ae", "--binarize", "fixed", "--latent-dim", "4", "--epochs", "2", *COMMON]
VAE = ["train", "vae", "--latent-dim", "2", "--epochs", "2", *COMMON]
WAIT_S = 240  # a launch that takes longer than this hangs: the test fails instead


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(world: int | None, rank: int = 0, port: int = 0) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env |= {"PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])]),
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYRO_VAE_DIST_TIMEOUT": "60"}
    if world is not None:
        env |= {"WORLD_SIZE": str(world), "RANK": str(rank), "LOCAL_RANK": str(rank),
                "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port)}
    return env


def _launch(world: int | None, argv: list[str], cwd: Path,
            faults: dict[int, str] | None = None) -> list[subprocess.Popen]:
    """The ranks of one command (``world`` None: a plain process, no launcher)."""
    port = _free_port()
    return [subprocess.Popen([sys.executable, str(HELPER), (faults or {}).get(r, "none"), *argv],
                             cwd=cwd, env=_env(world, r, port), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
            for r in range(world or 1)]


def _wait(procs: list[subprocess.Popen]) -> list[tuple[int, str, str]]:
    out = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=WAIT_S)
            out.append((p.returncode, stdout, stderr))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return out


def _ok(results: list[tuple[int, str, str]]) -> None:
    for rank, (rc, _, stderr) in enumerate(results):
        assert rc == 0, f"rank {rank} exited {rc}: {stderr[-2000:]}"


def _checkpoint(run: Path) -> dict:
    return torch.load(run / "checkpoint.pt", weights_only=False)


def _metrics(run: Path) -> dict:
    return without_timing(json.loads((run / "metrics.json").read_text()))


POINT_NOISE = ["train", f"{REPO / 'tests' / 'dist_models.py'}:PointNoiseVAE", "--binarize",
               "fixed", "--latent-dim", "2", "--epochs", "2", *COMMON]


@pytest.mark.parametrize("argv", [AE, POINT_NOISE], ids=["ae", "vae-point-noise"])
def test_two_processes_reach_the_parameters_of_one_with_the_global_batch(tmp_path, argv):
    """No noise that depends on who draws it: the ``ae`` with fixed binarization (none at
    all), and a VAE whose noise is a fixed function of each point (tests/dist_models.py; with
    the real ``vae`` each rank draws its own stream, equal to the one-process draws only in
    distribution; its parameter born in the middle of training must be rank 0's on both
    ranks). Two ranks with shards of 32 and one process with batch 64 then compute the
    same gradient of each global minibatch (the plate scales each rank's loss by N / 32, the
    all-reduce weighs each by 32 / 64) and take the same 46 Adam steps, up to float rounding:
    every parameter within 1e-5 (absolute) + 1e-4 (relative), every epoch's train and test
    ELBO within 1e-6 (relative)."""
    two = _launch(2, [*argv, "--batch-size", "64", "--out", "two"], tmp_path)
    assert main([*argv, "--batch-size", "64", "--out", str(tmp_path / "one")]) == 0  # meanwhile
    results = _wait(two)
    _ok(results)
    assert "run: two" in results[0][1] and "run: " not in results[1][1]  # rank 0 speaks
    a, b = _checkpoint(tmp_path / "two"), _checkpoint(tmp_path / "one")
    assert a["epoch"] == b["epoch"] == 2 and a["world"] == 2 and len(a["rng_ranks"]) == 2
    assert a["model"].keys() == b["model"].keys()
    moved = 0.0
    for name, value in a["model"].items():
        torch.testing.assert_close(value, b["model"][name], atol=1e-5, rtol=1e-4, msg=name)
        moved = max(moved, float((value - b["model"][name]).abs().max()))
    assert moved < 1e-5
    for ra, rb in zip(a["history"], b["history"], strict=True):
        assert ra["train_elbo"] == pytest.approx(rb["train_elbo"], rel=1e-6)
        assert ra["test_elbo"] == pytest.approx(rb["test_elbo"], rel=1e-6)
    # the final evaluation, sharded over the test points and gathered, scores every point
    # as the one process does (these two pairs draw no noise that depends on the rank)
    ma, mb = _metrics(tmp_path / "two"), _metrics(tmp_path / "one")
    assert ma["num_test_points"] == mb["num_test_points"] == 300
    for key in ("test_elbo", "test_log_likelihood", "test_log_likelihood_stderr"):
        assert ma[key] == pytest.approx(mb[key], rel=1e-5), key
    assert ma["active_units"] == mb["active_units"]
    # the parameters did move: the comparison is not of two initializations
    init = a["history"][0]["train_elbo"], a["history"][-1]["train_elbo"]
    assert init[1] > init[0]


def test_a_killed_rank_resumes_to_the_uninterrupted_run(tmp_path, capsys):
    """vae (each rank its own noise): rank 1 is SIGKILLed after epoch 1; rank 0 stops with
    one line at its next collective; both resume from checkpoint 1 and end bit for bit as
    the run never killed (parameters, optimizer moments, every rank's RNG states, history)."""
    whole = _launch(2, [*VAE, "--batch-size", "64", "--out", "whole"], tmp_path)
    killed = _launch(2, [*VAE, "--batch-size", "64", "--out", "killed"], tmp_path,
                     faults={1: "kill:epoch:1"})
    results = _wait(whole + killed)
    _ok(results[:2])
    (rc0, _, err0), (rc1, _, _) = results[2:]
    assert rc1 == -9
    assert rc0 == 2 and len(err0.strip().splitlines()) == 1, err0
    assert "lost the other processes" in err0
    run = tmp_path / "killed"
    assert _checkpoint(run)["epoch"] == 1 and not (run / ".lock").exists()

    _ok(_wait(_launch(2, ["train", "--resume", "--out", "killed", "--no-progress"], tmp_path)))
    a, b = _checkpoint(run), _checkpoint(tmp_path / "whole")
    assert_identical(without_timing({k: v for k, v in a.items() if k != "train_config"}),
                      without_timing({k: v for k, v in b.items() if k != "train_config"}))
    assert _metrics(run) == _metrics(tmp_path / "whole")

    # another world size (here a plain process: 1) is one line and exit 2
    assert main(["train", "--resume", "--out", str(run), "--epochs", "3",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "trained by 2 processes" in err and "--nproc_per_node 2" in err
    assert _checkpoint(run)["epoch"] == 2 and not (run / ".lock").exists()


def test_the_nan_guard_stops_every_rank_at_the_same_step(tmp_path):
    """Rank 1's 5th loss is NaN (rank 0's is finite): the guard reads the all-reduced loss, so
    both ranks stop at that step with the same line and exit 2; no checkpoint was reached, so
    nothing is left."""
    results = _wait(_launch(2, [*AE, "--batch-size", "64", "--out", "nan"], tmp_path,
                            faults={1: "nan:step:5"}))
    assert [rc for rc, _, _ in results] == [2, 2]
    lines = [err.strip().splitlines() for _, _, err in results]
    assert lines[0] == lines[1] and len(lines[0]) == 1, lines
    assert "the loss became nan at epoch 1, step 5" in lines[0][0]
    assert not (tmp_path / "nan").exists()


def test_a_world_of_one_is_the_plain_run(tmp_path, monkeypatch):
    """The launcher's environment with WORLD_SIZE=1 takes every distributed branch (a gloo
    group, broadcasts, the reducer, the sharded test ELBO); the run is a plain run's bits."""
    argv = [*VAE, "--batch-size", "64"]
    assert main([*argv, "--out", str(tmp_path / "plain")]) == 0
    for key, value in _env(1, 0, _free_port()).items():
        monkeypatch.setenv(key, value)
    try:
        assert main([*argv, "--out", str(tmp_path / "dist")]) == 0
        assert distributed.active() and distributed.world() == 1
    finally:
        distributed.shutdown()
    a, b = _checkpoint(tmp_path / "dist"), _checkpoint(tmp_path / "plain")
    assert_identical(without_timing(a), without_timing(b))
    assert _metrics(tmp_path / "dist") == _metrics(tmp_path / "plain")


def test_what_a_world_cannot_run_is_refused_before_any_step(tmp_path, monkeypatch, capsys):
    """Every rank takes the same decision from the same settings, so each says the same line
    and exits 2 (none waits for another): the svi engine (it does not average gradients), and
    a global batch smaller than the world. Checked here with a world of 2 pretended."""
    monkeypatch.setattr(distributed, "world", lambda: 2)
    cases = [(["--engine", "svi"], "--engine fast"),
             (["--batch-size", "1"], "each needs at least one point")]
    for extra, says in cases:
        assert main([*AE, *extra, "--out", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and says in err, err
        assert not (tmp_path / "r").exists()


def test_torchrun_with_a_bad_flag_ends_every_rank_with_one_line(tmp_path):
    """The real launcher (``python -m torch.distributed.run``, as ``torchrun``): a bad setting
    fails on each rank before any collective, with the one line a plain run prints, and
    torchrun returns (no rank waits for another). torchrun ends a rank still starting when
    another has failed, so one or two ranks may print the line."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "pyro_vae", *AE, "--epochs", "0", "--out", "bad"]
    done = subprocess.run(cmd, cwd=tmp_path, env=_env(None), capture_output=True, text=True,
                          timeout=WAIT_S)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.startswith("pyro-vae: error:")]
    assert 1 <= len(lines) <= 2 and len(set(lines)) == 1, done.stderr[-3000:]
    assert "epochs" in lines[0]
    assert not (tmp_path / "bad").exists()


def test_the_scaling_benchmark_prints_its_table(capsys):
    """benchmarks/scaling.py at test size: one gloo process (a launch through its worker), the
    table's row."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("scaling", REPO / "benchmarks" / "scaling.py")
    scaling = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scaling)
    scaling.main(["--dataset", "digits", "--hidden", "16", "--latent-dim", "2", "--batch-size",
                  "64", "--epochs", "2", "--cpu-procs", "1", "--gpus", "none", "--repeats", "1"])
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| gloo | 1 | cpu |"))
    assert float(row.split("|")[4].split("[")[0].replace(",", "")) > 0


def test_adaptive_resampling_under_two_ranks_is_drawn_by_rank_0(tmp_path):
    """``--resample``: rank 0 draws each epoch's order (its weights from the model at the
    epoch's start) and broadcasts it, so only rank 0 records the resampling columns, and the
    first epoch's draw is the one-process run's: the same initial model gives the same
    weights, the same CPU generator the same indices (the runs part after that, as each rank
    draws half of the sampling noise)."""
    argv = ["train", "dbvae", "--resample", "histogram", "--resample-alpha", "0.05",
            "--latent-dim", "2", "--epochs", "2", "--batch-size", "64", *COMMON]
    two = _launch(2, [*argv, "--out", "two"], tmp_path)
    assert main([*argv, "--out", str(tmp_path / "one")]) == 0  # meanwhile
    _ok(_wait(two))
    a, b = _checkpoint(tmp_path / "two"), _checkpoint(tmp_path / "one")
    assert a["world"] == 2 and a["epoch"] == b["epoch"] == 2
    cols = ("resample_ess", "resample_rarest_class", "resample_rarest_weight",
            "resample_rarest_share")
    for record in a["history"]:
        assert all(record[c] is not None for c in cols), record
        assert 1.0 <= record["resample_ess"] <= 1497  # of digits' 1,497 training points
    first_a, first_b = a["history"][0], b["history"][0]
    for c in cols:
        assert first_a[c] == pytest.approx(first_b[c], rel=1e-9), c
    # the draw is not uniform: some points weigh more than others
    assert first_a["resample_ess"] < 1497 * 0.99
