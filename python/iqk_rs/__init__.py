"""iqk_rs: ik_llama.cpp's IQK low-bit weight formats, bit-exact, from Python.

Quantize numpy weights to IQ2_K, IQ3_K, IQ4_K, IQ2_KS, IQ3_KS or IQ4_KS (optionally guided by
an importance matrix), dequantize them, and take dot products against Q8_K activations.

Every error the package raises on purpose is an ``IqkError`` (``iqk_rs.errors``); each also
derives from the builtin it has always been (``IqkValueError`` is a ``ValueError``, ...).
"""

import importlib

from ._core import __version__
from .errors import IqkError, IqkKeyError, IqkNotImplementedError, IqkTypeError, IqkValueError

# Not typing.TYPE_CHECKING: importing typing takes ~10 ms, in which a Ctrl-C would still
# print a traceback (mypy and pyright treat any name TYPE_CHECKING as true).
TYPE_CHECKING = False

# The numpy-facing API loads on first use, so that the ``iqk`` command can set up its Ctrl-C
# handling (iqk_rs._entry) before numpy is imported.
_LAZY = {
    "dequantize": "api",
    "matmul": "api",
    "matvec": "api",
    "quantize": "api",
    "quantize_q8_k": "api",
    "row_size": "api",
    "simd_info": "api",
    "simd_path": "api",
    "type_table": "api",
    "vec_dot": "api",
    "QuantType": "types",
}

if TYPE_CHECKING:
    from .api import (
        dequantize,
        matmul,
        matvec,
        quantize,
        quantize_q8_k,
        row_size,
        simd_info,
        simd_path,
        type_table,
        vec_dot,
    )
    from .types import QuantType


def __getattr__(name: str):
    if name in ("api", "types"):  # iqk_rs.api without importing it, as before
        return importlib.import_module(f".{name}", __name__)
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "IqkError",
    "IqkKeyError",
    "IqkNotImplementedError",
    "IqkTypeError",
    "IqkValueError",
    "QuantType",
    "__version__",
    "dequantize",
    "matmul",
    "matvec",
    "quantize",
    "quantize_q8_k",
    "row_size",
    "simd_info",
    "simd_path",
    "type_table",
    "vec_dot",
]
