"""The GGUF file-format constants this package reads and writes (the GGUF specification).

They are the values of the PyPI ``gguf`` package's ``GGUFValueType``, ``GGUF_MAGIC`` and
``GGUF_DEFAULT_ALIGNMENT`` (the tests check that they agree). Importing ``gguf`` itself costs
60-120 ms (it loads its reader, writer, vocab and yaml-based metadata), a noticeable part of
every ``iqk`` run, so that package is imported only where it is needed: the sizes of mainline
quantized types (``ggml_types``) and decoding types the core does not implement.
"""

from __future__ import annotations

from enum import IntEnum

GGUF_MAGIC = 0x46554747  # b"GGUF", little-endian
GGUF_DEFAULT_ALIGNMENT = 32


class GGUFValueType(IntEnum):
    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12
