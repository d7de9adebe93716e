"""The ``pyro-vae`` command with one fault at a counted moment (not a test module).

``python tests/fault_cli.py FAULT ARGS...`` runs ``pyro-vae ARGS...`` in this process with
FAULT one of:

* ``none``: nothing;
* ``kill:step:N``: SIGKILL just before this process's N-th training step;
* ``kill:partial:N``: SIGKILL inside this process's N-th checkpoint write, with about half of
  the checkpoint in its temporary file (flushed and synced);
* ``kill:replace:N``: SIGKILL inside this process's N-th checkpoint write, with the whole
  checkpoint in its temporary file, just before ``os.replace`` renames it;
* ``pause:step:N``: just before the N-th training step, print ``paused`` and wait for a line
  on stdin (the process holds its run folder's lock meanwhile).

Moments are counted, not timed, so a seeded choice of them is deterministic. One torch
thread: runs in different processes compute the same bits.
"""

from __future__ import annotations

import os
import signal
import sys

import torch

torch.set_num_threads(1)


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def install(fault: str) -> None:
    from pyro_vae import runs
    from pyro_vae.engine import FastStepper, SVIStepper

    if fault == "none":
        return
    action, event, n = fault.split(":")
    n = int(n)
    seen = {"step": 0, "checkpoint": 0}

    for cls in (FastStepper, SVIStepper):
        def step(self, *args, _real=cls.step, **kwargs):
            seen["step"] += 1
            if event == "step" and seen["step"] == n:
                if action == "kill":
                    _die()
                print("paused", flush=True)
                sys.stdin.readline()
            return _real(self, *args, **kwargs)
        cls.step = step

    real_save, real_replace = runs.RunFolder.save_checkpoint, os.replace

    def save_checkpoint(self, state):
        seen["checkpoint"] += 1
        if event == "partial" and seen["checkpoint"] == n:
            data = runs.checkpoint_bytes(state)

            def half_then_die(f):
                f.write(data[:len(data) // 2])
                f.flush()
                os.fsync(f.fileno())
                _die()
            runs.atomic_write(self.checkpoint_path, half_then_die)
        return real_save(self, state)

    def replace(src, dst, *args, **kwargs):
        if (event == "replace" and seen["checkpoint"] == n
                and os.path.basename(dst) == runs.CHECKPOINT):
            _die()
        return real_replace(src, dst, *args, **kwargs)

    runs.RunFolder.save_checkpoint = save_checkpoint
    os.replace = replace


if __name__ == "__main__":
    install(sys.argv[1])
    from pyro_vae.cli import main

    sys.exit(main(sys.argv[2:]))
