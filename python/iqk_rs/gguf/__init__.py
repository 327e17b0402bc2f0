"""GGUF I/O that understands ik_llama.cpp's tensor types (incl. the KS row prefix).

- ``GGUFReader``: memory-mapped, zero-copy, hard limits on every length.
- ``GGUFStreamWriter``: one tensor (or row chunk) at a time, temp file + rename.
- ``open_model``: a single file, or all parts of a split model (``SplitModel``) as one.
- ``ggml_types``: every ggml type's id, name and sizes, and decoding a tensor's rows.

File I/O only: the model pipeline built on it is ``iqk_rs.pipeline`` (``convert`` here is its
deprecated alias), and nothing here imports the layers above (tests/test_layering.py).
"""

from .ggml_types import GGMLType, all_types, producible_types, type_by_id, type_by_name
from .reader import KV, GGUFError, GGUFReader, StringArray, TensorInfo
from .split import SplitModel, open_model
from .writer import GGUFStreamWriter, GGUFWriteError

__all__ = [
    "GGMLType",
    "GGUFError",
    "GGUFReader",
    "GGUFStreamWriter",
    "GGUFWriteError",
    "KV",
    "SplitModel",
    "StringArray",
    "TensorInfo",
    "all_types",
    "open_model",
    "producible_types",
    "type_by_id",
    "type_by_name",
]
