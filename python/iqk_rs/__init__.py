"""iqk_rs: ik_llama.cpp's IQK low-bit weight formats, bit-exact, from Python.

Quantize numpy weights to IQ2_K, IQ3_K, IQ4_K, IQ2_KS, IQ3_KS or IQ4_KS (optionally guided by
an importance matrix), dequantize them, and take dot products against Q8_K activations.
"""

from ._core import IqkValueError, __version__
from .api import (
    dequantize,
    matmul,
    matvec,
    quantize,
    quantize_q8_k,
    row_size,
    simd_path,
    type_table,
    vec_dot,
)
from .types import QuantType

__all__ = [
    "IqkValueError",
    "QuantType",
    "__version__",
    "dequantize",
    "matmul",
    "matvec",
    "quantize",
    "quantize_q8_k",
    "row_size",
    "simd_path",
    "type_table",
    "vec_dot",
]
