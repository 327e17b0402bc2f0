#!/usr/bin/env python3
"""Fuzz target: the imatrix readers (legacy .dat and GGUF) on arbitrary bytes.

An imatrix that loads is checked like ``iqk quantize --imatrix`` checks it (finite, sizes
per tensor of the micro model, metadata encodable), then the micro model is quantized with
it and the output must be finite.
"""

from __future__ import annotations

import zlib

from common import IQK_RULES, TARGETS, check_quantized_output, instrumented, main, scratch_dir

with instrumented():
    from iqk_rs import pipeline as pl
    from iqk_rs.gguf.writer import encode_kv
    from iqk_rs.imatrix import load_imatrix

SCRATCH = scratch_dir()
PATH = SCRATCH / "input.imatrix"
MODEL = SCRATCH / "micro.gguf"
OUT = SCRATCH / "out.gguf"


def one_input(data: bytes) -> None:
    PATH.write_bytes(data)
    imx = load_imatrix(PATH)
    imx.check_finite()
    for kv in imx.metadata():
        encode_kv(kv)
    target = TARGETS[zlib.crc32(data) % len(TARGETS)]  # varied, yet the same on replay
    opts = pl.QuantizeOptions(
        imatrix=imx, custom_q=[r.format(t=target) for r in IQK_RULES], threads=1
    )
    report = pl.quantize_model(MODEL, OUT, target, opts)
    check_quantized_output(OUT, report)


def setup() -> None:
    from make_corpus import micro_model

    micro_model(MODEL)


if __name__ == "__main__":
    setup()
    main("imatrix", one_input)
