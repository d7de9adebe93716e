"""The ``pyro-vae`` console script: Ctrl-C at any moment, even while the heavy libraries are
still importing (torch, Pyro: seconds), ends with one line and exit status 130."""

from __future__ import annotations

import sys

INTERRUPTED = "pyro-vae: interrupted"


def main(argv: list[str] | None = None) -> int:
    try:
        from pyro_vae.cli import main as cli_main
    except KeyboardInterrupt:
        print(f"{INTERRUPTED} (nothing was written)", file=sys.stderr)
        return 130
    try:
        return cli_main(argv)
    except KeyboardInterrupt:  # between the import and cli's own handler
        print(INTERRUPTED, file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
