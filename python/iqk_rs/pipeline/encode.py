"""Encoding: rows of a tensor converted to their planned type, through ``iqk_rs.quantize``
(which releases the GIL and works in pieces) for the core's types."""

from __future__ import annotations

import re

import numpy as np

from .. import _core
from ..api import quantize
from ..errors import IqkNotImplementedError
from ..gguf.ggml_types import BF16, F16, F32, FLOAT_TYPES, GGMLType, rows_to_f32
from ..gguf.reader import TensorInfo
from .options import ConvertError

# --- encoding: floats to a tensor type -------------------------------------------------


def f32_to_bf16(x: np.ndarray) -> np.ndarray:
    """Round to nearest even, NaN kept quiet: ggml_compute_fp32_to_bf16."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    rounded = (u + (0x7FFF + ((u >> 16) & 1))) >> 16
    return np.where(nan, (u >> 16) | 64, rounded).astype(np.uint16)


def f32_to_rows(
    x: np.ndarray,
    gtype: GGMLType,
    imatrix: np.ndarray | None = None,
    *,
    search: str = "ik",
    threads: int | None = None,
) -> np.ndarray:
    """Encode float32 (nrows, ne0) as ``gtype``: raw bytes, uint8 (nrows, row_bytes)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if gtype.id == F32:
        return x.view(np.uint8)
    if gtype.id == F16:
        return x.astype(np.float16).view(np.uint8)
    if gtype.id == BF16:
        return f32_to_bf16(x).view(np.uint8)
    if not gtype.in_core:
        raise IqkNotImplementedError(f"quantizing to {gtype.name} is not supported")
    return quantize(x, gtype.id, imatrix, search=search, threads=threads)


def encode_rows(
    rows: np.ndarray,
    src: GGMLType,
    ne0: int,
    dst: GGMLType,
    imatrix: np.ndarray | None = None,
    *,
    search: str = "ik",
    threads: int | None = None,
) -> np.ndarray:
    """Raw rows of ``src`` re-encoded as ``dst``: uint8 (nrows, row_bytes).

    f16/bf16 rows going to a type of the core are widened row by row inside its workers,
    which spares a float32 copy of the block and a pass over it.
    """
    if src.id == F16 and dst.in_core:
        half = np.ascontiguousarray(rows).view(np.float16).reshape(-1, ne0)
        return quantize(half, dst.id, imatrix, search=search, threads=threads)
    if src.id == BF16 and dst.in_core:
        # numpy has no bfloat16 dtype, so the public quantize cannot be handed these rows;
        # the core's entry point behind it takes the raw bits with their format.
        bits = np.ascontiguousarray(rows).view(np.uint16).reshape(-1, ne0)
        im = None if imatrix is None else np.ascontiguousarray(imatrix, dtype=np.float32)
        return _core.quantize_half(bits, "bf16", dst.id, im, search, threads)
    x = rows_to_f32(rows, src, ne0, threads)
    return f32_to_rows(x, dst, imatrix, search=search, threads=threads)


def probe_types(types: set[GGMLType], search: str = "ik") -> None:
    """Fail early, not after an hour, if the core cannot produce a planned type (or does not
    know the search mode)."""
    for t in sorted(types, key=lambda t: t.id):
        if t.id in FLOAT_TYPES:
            continue
        zeros = np.zeros((1, t.block_size * (256 // t.block_size or 1)), np.float32)
        try:
            f32_to_rows(zeros, t, search=search)
        except (NotImplementedError, ValueError) as e:
            raise ConvertError(
                f"tensor type {t.name} is needed by this mix but not available in this build ({e})"
            ) from None


_ROW = re.compile(r"\brow (\d+)")


def _tensor_row_message(message: str, t: TensorInfo, expert: int, first_row: int) -> str:
    """A core error about row k of a chunk, told as the tensor's own row (and expert)."""
    where = f"expert {expert}, " if len(t.ne) > 2 else ""
    return _ROW.sub(lambda m: f"{where}row {first_row + int(m.group(1))}", message, count=1)


def quantize_rows(
    t: TensorInfo,
    out_type: GGMLType,
    rows: np.ndarray,
    imatrix: np.ndarray | None,
    threads: int | None,
    search: str,
    at: tuple[int, int],
) -> np.ndarray:
    """Rows of tensor ``t`` (raw, one matrix's) in ``out_type``: the one place of the
    conversion, for the local writer and the distributed one alike. ``at`` is (expert, row
    of the matrix) of the first row, so that errors name the tensor's own row."""
    try:
        return encode_rows(rows, t.type, t.ne[0], out_type, imatrix, search=search, threads=threads)
    except (ValueError, NotImplementedError) as err:
        raise ConvertError(
            f"tensor {t.name!r} ({t.type.name} -> {out_type.name}): "
            + _tensor_row_message(str(err), t, *at)
        ) from err
