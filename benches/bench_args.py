"""Command-line helpers the whole-model benchmarks share (run as scripts from benches/)."""

from __future__ import annotations


def split_passthrough(argv: list[str]) -> tuple[list[str], list[str]]:
    """The benchmark's own arguments, and those after ``--`` (passed on to ``iqk quantize``)."""
    if "--" not in argv:
        return argv, []
    i = argv.index("--")
    return argv[:i], argv[i + 1 :]
