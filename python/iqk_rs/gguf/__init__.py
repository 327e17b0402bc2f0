"""GGUF I/O that understands ik_llama.cpp's tensor types (incl. the KS row prefix).

- ``GGUFReader``: memory-mapped, zero-copy, hard limits on every length.
- ``GGUFStreamWriter``: one tensor (or row chunk) at a time, temp file + rename.
- ``open_model``: a single file, or all parts of a split model (``SplitModel``) as one.
- ``convert``: whole-model operations used by the ``iqk`` CLI.
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
