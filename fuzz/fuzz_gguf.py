#!/usr/bin/env python3
"""Fuzz target: the GGUF reader on arbitrary bytes, and what info/quantize do with its result.

Every metadata entry must render for ``iqk info`` and encode back (the writer copies them
into every output); every tensor's first rows must read and decode (or the type be one
this build cannot decode).
"""

from __future__ import annotations

from common import instrumented, main, scratch_dir

with instrumented():
    from iqk_rs.cli import _kv_text
    from iqk_rs.display import printable
    from iqk_rs.gguf import GGUFReader
    from iqk_rs.gguf.ggml_types import rows_to_f32
    from iqk_rs.gguf.writer import encode_kv

PATH = scratch_dir() / "input.gguf"


def one_input(data: bytes) -> None:
    PATH.write_bytes(data)
    with GGUFReader(PATH) as r:
        for kv in r.kv.values():
            printable(kv.key)
            printable(_kv_text(kv))
            encode_kv(kv)
        for t in r.tensors.values():
            printable(t.name)
            rows = r.read_rows(t.name, 0, min(t.nrows, 4))
            try:
                rows_to_f32(rows, t.type, t.ne[0])
            except NotImplementedError:
                pass  # a type this build does not decode; quantize refuses it cleanly


def setup() -> None:
    pass


if __name__ == "__main__":
    main("gguf", one_input)
