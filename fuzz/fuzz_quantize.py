#!/usr/bin/env python3
"""Fuzz target: the whole quantize pipeline on a mutated micro model.

The first input byte picks the target type (and an imatrix or not); the rest is the model.
A run that succeeds must write finite weights for every tensor it quantized.
"""

from __future__ import annotations

from common import IQK_RULES, TARGETS, check_quantized_output, instrumented, main, scratch_dir

with instrumented():
    from iqk_rs import pipeline as pl
    from iqk_rs.imatrix import load_imatrix

SCRATCH = scratch_dir()
PATH = SCRATCH / "input.gguf"
OUT = SCRATCH / "out.gguf"
IMATRIX = SCRATCH / "micro.imatrix.gguf"


def one_input(data: bytes) -> None:
    if not data:
        return
    target = TARGETS[data[0] % len(TARGETS)]
    imx = load_imatrix(IMATRIX) if data[0] & 0x80 else None
    PATH.write_bytes(data[1:])
    opts = pl.QuantizeOptions(
        imatrix=imx, custom_q=[r.format(t=target) for r in IQK_RULES], threads=1,
        allow_requantize=bool(data[0] & 0x40),
    )  # fmt: skip
    report = pl.quantize_model(PATH, OUT, target, opts)
    check_quantized_output(OUT, report)


def setup() -> None:
    from make_corpus import micro_imatrix_gguf

    micro_imatrix_gguf(IMATRIX)


if __name__ == "__main__":
    setup()
    main("quantize", one_input)
