"""kill -9 at five seeded moments, resume each time: the same bits as a run never killed.

A 3-epoch training runs in subprocesses (``tests/fault_cli.py``) that SIGKILL themselves at
counted moments -- before a training step, inside a checkpoint write with half of the
temporary file written, or with all of it written just before ``os.replace`` -- and is
continued with ``train --resume`` (or started again, when the kill came before the first
checkpoint) until it completes. Its history (but for the wall-clock ``seconds``), metrics
(the same) and whole checkpoint (every parameter, optimizer moment, RNG state) must equal an
uninterrupted run's bit for bit, and no lock or temporary file may remain.
"""

import csv
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import torch
from bitwise import assert_identical, without_timing

from pyro_vae.data import load_dataset

REPO = Path(__file__).resolve().parents[1]
HELPER = REPO / "tests" / "fault_cli.py"
EPOCHS, BATCH = 3, 128
TRAIN = ["train", "vae", "--dataset", "digits", "--latent-dim", "2", "--hidden", "16",
         "--batch-size", str(BATCH), "--epochs", str(EPOCHS), "--eval-samples", "50",
         "--no-progress", "--device", "cpu"]
RESUME = ["train", "--resume", "--no-progress"]
SEED = 20240611


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _start(fault: str, argv: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(HELPER), fault, *argv], cwd=cwd, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _checkpoint_epoch(run: Path) -> int:
    if not (run / "checkpoint.pt").exists():
        return 0
    return torch.load(run / "checkpoint.pt", weights_only=False)["epoch"]  # never half-written


def _history(run: Path) -> list[dict]:
    with (run / "history.csv").open() as f:
        return [without_timing(row) for row in csv.DictReader(f)]


def _kill_plan() -> tuple[random.Random, list[str]]:
    """The seeded generator and the kinds of the five kills: two before a step, one in each
    phase of a checkpoint write, one more of any kind. Each kill's N is drawn when its
    process starts, from what is left to train then (the first one's from epoch 1)."""
    rng = random.Random(SEED)
    kinds = ["step", "step", "partial", "replace", rng.choice(["step", "partial", "replace"])]
    rng.shuffle(kinds)
    return rng, kinds


def test_kill_9_at_five_moments_then_resume_gives_the_same_bits(tmp_path):
    steps = load_dataset("digits").num_batches(BATCH)
    reference = _start("none", [*TRAIN, "--out", "ref"], tmp_path)  # meanwhile, on the other core
    run = tmp_path / "killed"
    rng, kinds = _kill_plan()
    assert {"partial", "replace"} <= set(kinds) and len(kinds) == 5
    for i, kind in enumerate(kinds):
        done = _checkpoint_epoch(run)
        # what is left (>= 1 epoch: no kill finishes a process's last epoch); the first kill
        # comes in epoch 1, so a run killed before its first checkpoint is started again
        left = 1 if i == 0 else EPOCHS - done
        n = rng.randint(1, left * steps if kind == "step" else left)
        argv = (RESUME if done else TRAIN) + ["--out", str(run)]
        proc = _start(f"kill:{kind}:{n}", argv, tmp_path)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == -9, (kind, n, err)
        finished = (n - 1) // steps if kind == "step" else n - 1  # epochs this process saved
        assert _checkpoint_epoch(run) == done + finished, (kind, n)
        assert (run / ".lock").exists()  # left by the killed process, to be taken over
        if kind == "partial":
            assert [p.name for p in run.glob(".checkpoint.pt.*.tmp")], "half a temporary file"
    argv = RESUME if _checkpoint_epoch(run) else TRAIN
    final = _start("none", [*argv, "--out", str(run)], tmp_path)
    _, err = final.communicate(timeout=120)
    assert final.returncode == 0, err
    _, err = reference.communicate(timeout=120)
    assert reference.returncode == 0, err
    ref = tmp_path / "ref"

    assert _history(run) == _history(ref) and len(_history(run)) == EPOCHS
    metrics = [without_timing(json.loads((d / "metrics.json").read_text())) for d in (run, ref)]
    assert metrics[0] == metrics[1]
    states = [without_timing(torch.load(d / "checkpoint.pt", weights_only=False))
              for d in (run, ref)]
    assert states[0]["model"].keys() and states[0]["epoch"] == EPOCHS
    assert_identical(states[0], states[1])
    assert sorted(p.name for p in run.iterdir()) == sorted(p.name for p in ref.iterdir())
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")], "a lock or .tmp left"

