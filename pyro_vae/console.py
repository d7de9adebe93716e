"""The ``pyro-vae`` console script: Ctrl-C at any moment, even while the heavy libraries are
still importing (torch, Pyro: seconds), ends with one line and exit status 130.

While they import, Ctrl-C ends the process at once (``os._exit``): a KeyboardInterrupt raised
inside a library's import can be swallowed by its ``except:`` or leave it half-imported for
the interpreter's shutdown to trip over, and nothing has been written yet. Afterwards the CLI's
own handler takes over (it lets a run folder's lock and clean-up finish)."""

from __future__ import annotations

import os
import signal
import sys

INTERRUPTED = "pyro-vae: interrupted"


def _quit(signum, frame) -> None:
    os.write(2, f"{INTERRUPTED} (nothing was written)\n".encode())
    os._exit(130)


def main(argv: list[str] | None = None) -> int:
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.default_int_handler:  # not where Ctrl-C is ignored (nohup, &)
        signal.signal(signal.SIGINT, _quit)
    try:
        from pyro_vae.cli import main as cli_main
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        return cli_main(argv)
    except KeyboardInterrupt:  # between the import and cli's own handler
        print(INTERRUPTED, file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
