"""The ``iqk`` console script: a clean Ctrl-C from the first moment.

Loading the CLI (typer, rich, numpy, the extension) takes a few tenths of a second, and
Python's own handler turns a Ctrl-C in that time into a traceback. This module imports
nothing heavy (``iqk_rs/__init__`` loads its API lazily for this reason): it installs a
handler that ends the process with one line and status 130 - nothing has been written
yet - then loads the CLI and gives Ctrl-C back to it (which removes partial outputs).
"""

from __future__ import annotations

import os
import sys

try:  # the C module: 'signal' itself imports enum, ~7 ms more without the handler
    import _signal as signal
except ImportError:  # pragma: no cover - interpreters without it
    import signal

INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a process ended by Ctrl-C


def _interrupted_while_loading(signum, frame) -> None:
    os.write(2, b"iqk: interrupted\n")
    os._exit(INTERRUPTED)


def bare_ray_to_auto(args: list[str]) -> list[str]:
    """``--ray`` without an address (last, or followed by another option) means ``--ray auto``:
    typer has no options with an optional value."""
    out = []
    for i, a in enumerate(args):
        out.append(a)
        if a == "--ray" and (i + 1 == len(args) or args[i + 1].startswith("-")):
            out.append("auto")
    return out


def main() -> int:
    previous = signal.getsignal(signal.SIGINT)
    if previous is not signal.SIG_IGN:  # e.g. started with '&' by a script: leave it ignored
        signal.signal(signal.SIGINT, _interrupted_while_loading)
    try:
        from .cli import app
    finally:
        signal.signal(signal.SIGINT, previous or signal.default_int_handler)
    sys.argv[1:] = bare_ray_to_auto(sys.argv[1:])
    try:
        return app()
    except KeyboardInterrupt:  # outside a command, e.g. while typer parses the arguments
        sys.stderr.write("iqk: interrupted\n")
        return INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
