"""One rank of a data-parallel ``pyro-vae`` command, as torchrun would start it (not a test
module): ``python tests/dist_cli.py FAULT ARGS...`` runs ``pyro-vae ARGS...`` in this process,
which reads WORLD_SIZE/RANK/LOCAL_RANK/MASTER_ADDR/MASTER_PORT from its environment, with
FAULT one of:

* ``none``: nothing;
* ``kill:epoch:K``: SIGKILL this process right after its K-th end of epoch (after the
  checkpoint's collective, so rank 0 still writes checkpoint K);
* ``nan:step:N``: this process's N-th training step returns a NaN loss (its gradients stay
  finite), as a rank whose shard diverged.

One torch thread: runs in different processes compute the same bits.
"""

from __future__ import annotations

import os
import signal
import sys

import torch

torch.set_num_threads(1)


def install(fault: str) -> None:
    from pyro_vae.engine import FastStepper
    from pyro_vae.hooks import Checkpointer

    if fault == "none":
        return
    action, event, n = fault.split(":")
    if (action, event) == ("nan", "step"):
        real_step, seen = FastStepper.step, [0]

        def step(self, *args, **kwargs):
            seen[0] += 1
            loss = real_step(self, *args, **kwargs)
            return loss * float("nan") if seen[0] == int(n) else loss
        FastStepper.step = step
        return
    assert (action, event) == ("kill", "epoch"), fault
    real = Checkpointer.after_epoch

    def after_epoch(self, state):
        real(self, state)
        if state.epoch == int(n):
            os.kill(os.getpid(), signal.SIGKILL)
    Checkpointer.after_epoch = after_epoch


if __name__ == "__main__":
    install(sys.argv[1])
    from pyro_vae.cli import main

    sys.exit(main(sys.argv[2:]))
