"""The numpy-facing API: normalise inputs (dtype, dimensions, contiguity), then call Rust.

Every exception raised here on purpose, by these checks or by the core, is an
``iqk_rs.IqkError`` as well as the builtin named in the docstrings (``IqkValueError`` is a
``ValueError``, ``IqkTypeError`` a ``TypeError``, ``IqkNotImplementedError`` a
``NotImplementedError``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from . import _core
from .errors import IqkTypeError, IqkValueError
from .types import QuantType, as_quant_type

_FLOAT_DTYPES = (np.float32, np.float16, np.float64)


def _floats(a: npt.ArrayLike, what: str, ndims: tuple[int, ...]) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype.type not in _FLOAT_DTYPES:
        raise IqkTypeError(f"{what} must be float32, float16 or float64, not {arr.dtype}")
    if arr.ndim not in ndims:
        want = " or ".join(f"{n}-D" for n in ndims)
        raise IqkValueError(f"{what} must be {want}, got shape {arr.shape}")
    # No copy when the input already is contiguous, aligned float32. A float64 beyond float32's
    # range becomes inf, which the core rejects with its row and column: no RuntimeWarning first.
    with np.errstate(over="ignore"):
        return np.require(arr, np.float32, ["C_CONTIGUOUS", "ALIGNED"])


def _bytes(a: npt.ArrayLike, what: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype != np.uint8:
        raise IqkTypeError(f"{what} must be a uint8 array of quantized bytes, not {arr.dtype}")
    if arr.ndim not in (1, 2):
        raise IqkValueError(f"{what} must be 1-D (one row) or 2-D (rows), got shape {arr.shape}")
    return np.ascontiguousarray(arr.reshape(1, -1) if arr.ndim == 1 else arr)


def _threads(threads: int | None) -> int | None:
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise IqkValueError(f"threads must be a positive integer or None, not {threads!r}")
    return int(threads)


def quantize(
    x: npt.ArrayLike,
    qtype: QuantType | str,
    imatrix: npt.ArrayLike | None = None,
    *,
    search: str | None = None,
    iq2ks_search: str | None = None,
    threads: int | None = None,
) -> np.ndarray:
    """Quantize rows of weights; returns uint8 of shape (nrows, row_size).

    ``x`` is float32, float16 (widened row by row, without a float32 copy) or float64
    (converted), 1-D (one row) or 2-D (rows). ``imatrix`` is the per-column importance
    (length n_per_row, finite, non-negative); importance blocks that are all zero are taken
    as "no information". ``search`` is ``"ik"`` (default: ik_llama.cpp's bytes, for IQ2_KS
    its fast search, llama-quantize's default on x86), ``"ik-exhaustive"`` (IQ2_KS's
    exhaustive search) or ``"best"``: valid bytes of the same format with a lower
    importance-weighted error than ik's, never higher per super-block (per row for the _KS
    types); it applies to IQ2_K..IQ4_KS, the others are quantized as with ``"ik"``. Its
    weighting is chosen per type (the one whose files had the lower KL divergence);
    ``"best-plain"`` and ``"best-ik-weights"`` fix it to the plain imatrix or to ik's own.
    ``iq2ks_search`` (``"fast"``/``"exhaustive"``) is the older name of the same option.
    ``threads`` caps the worker threads (default: every core; at most 8 per CPU, 256 always
    allowed); the bytes never depend on it. Large inputs are quantized in pieces, so Ctrl-C
    interrupts within a fraction of a second (``KeyboardInterrupt``).

    Raises ``ValueError`` for a row length that is not a multiple of the type's block
    size, NaN/Inf weights or importances (naming row and column), an imatrix of the wrong
    length or with negative entries, a bad ``threads`` or ``search``, and an unknown
    type name; ``TypeError`` for arrays of a wrong dtype or a ``qtype`` of a wrong kind
    (all of them ``iqk_rs.IqkError``).
    """
    qt = as_quant_type(qtype)
    mode = search_mode(search, iq2ks_search)
    im = None if imatrix is None else _floats(imatrix, "imatrix", (1,))
    half = np.asarray(x)
    if half.dtype == np.float16 and half.ndim in (1, 2):
        # Widened row by row inside the workers: no float32 copy of the whole array.
        bits = _rows(np.require(half, None, ["C_CONTIGUOUS", "ALIGNED"]).view(np.uint16))
        return _core.quantize_half(bits, "f16", qt.value, im, mode, _threads(threads))
    rows = _rows(_floats(x, "x", (1, 2)))
    return _core.quantize(rows, qt.value, im, mode, _threads(threads))


def search_mode(search: str | None, iq2ks_search: str | None) -> str:
    """The search name from ``search`` and its older alias ``iq2ks_search`` (default "ik")."""
    alias = {"fast": "ik", "exhaustive": "ik-exhaustive"}
    if iq2ks_search is not None:
        iq2ks_search = alias.get(iq2ks_search.lower(), iq2ks_search)
    if search is not None and iq2ks_search is not None and search.lower() != iq2ks_search:
        raise IqkValueError(f"search={search!r} and iq2ks_search={iq2ks_search!r} disagree")
    mode = search if search is not None else iq2ks_search
    return "ik" if mode is None else mode


def _rows(arr: np.ndarray) -> np.ndarray:
    """A 2-D view: a 1-D array is one row (an empty one, no rows)."""
    if arr.ndim == 2:
        return arr
    return arr.reshape(0, 0) if arr.size == 0 else arr.reshape(1, -1)


def dequantize(
    q: npt.ArrayLike, qtype: QuantType | str, *, threads: int | None = None
) -> np.ndarray:
    """Dequantize rows of quantized bytes; returns float32 of shape (nrows, n_per_row).

    ``q`` is uint8, 1-D (one row) or 2-D (rows of ``row_size`` bytes); ``threads`` as in
    ``quantize``. Raises ``ValueError`` when the row size is not one of the type's, and
    ``TypeError`` for a dtype other than uint8."""
    qt = as_quant_type(qtype)
    return _core.dequantize(_bytes(q, "q"), qt.value, _threads(threads))


def quantize_q8_k(x: npt.ArrayLike) -> np.ndarray:
    """Quantize an activation vector (length a multiple of 256) to ik's 296-byte Q8_K blocks.

    Raises ``ValueError`` for a length that is not a multiple of 256 or NaN/Inf values."""
    return _core.quantize_q8_k(_floats(x, "x", (1,)))


def vec_dot(
    q: npt.ArrayLike, qtype: QuantType | str, a8: npt.ArrayLike, *, threads: int | None = None
) -> np.ndarray:
    """Dot every row of ``q`` with the Q8_K activations ``a8``; returns float32 (nrows,).

    ``threads`` as in ``quantize``. Raises ``ValueError`` when the sizes do not match,
    ``TypeError`` for wrong dtypes, ``NotImplementedError`` for a type without kernels."""
    qt = as_quant_type(qtype)
    act = np.asarray(a8)
    if act.dtype != np.uint8 or act.ndim != 1:
        raise IqkTypeError(f"a8 must be 1-D uint8 Q8_K bytes, got {act.dtype} of shape {act.shape}")
    return _core.vec_dot(_bytes(q, "q"), qt.value, np.ascontiguousarray(act), _threads(threads))


def matvec(
    q: npt.ArrayLike, qtype: QuantType | str, x: npt.ArrayLike, *, threads: int | None = None
) -> np.ndarray:
    """Quantize ``x`` to Q8_K, then dot every row of ``q`` with it; returns float32 (nrows,).

    ``threads`` and the exceptions as in ``vec_dot``."""
    qt = as_quant_type(qtype)
    return _core.matvec(_bytes(q, "q"), qt.value, _floats(x, "x", (1,)), _threads(threads))


def matmul(
    q: npt.ArrayLike, qtype: QuantType | str, x: npt.ArrayLike, *, threads: int | None = None
) -> np.ndarray:
    """``x @ W.T`` for a batch: each row of ``x`` (batch, n_per_row) is quantized to Q8_K and
    dotted with every weight row of ``q``; returns float32 (batch, nrows).

    ``threads`` and the exceptions as in ``vec_dot``."""
    qt = as_quant_type(qtype)
    arr = _floats(x, "x", (1, 2))
    rows = arr.reshape(1, -1) if arr.ndim == 1 else arr
    return _core.matmul(_bytes(q, "q"), qt.value, rows, _threads(threads))


def simd_path() -> str:
    """The widest SIMD path in use: ``"scalar"``, ``"avx2"``, ``"avx512"`` or ``"neon"``.

    The one ``IQK_RS_SIMD=scalar|avx2|avx512|neon`` (set before import) forces, else the widest
    the CPU has. Under ``auto`` the dot products of each type and kernel shape run on the path
    measured fastest, which may be narrower: ``simd_info()`` lists them."""
    return str(_core.simd_path())


def simd_info() -> list[dict[str, Any]]:
    """Per type and kernel shape, the path the dot products run on and why.

    One dict per (type, shape): ``type`` (``"iq4_k"``), ``shape`` (``"row"``: one row,
    ``"rows"``: matrix-vector, ``"tile"``: batched), ``path``, ``how`` (``"forced"`` by
    ``IQK_RS_SIMD``, ``"only"`` path of the CPU, or ``"calibrated"``: the fastest of
    ``candidates`` timed at first use), ``timings_ns`` (each candidate's best sample) and
    ``calibration_ns``. Every path gives bit-identical results, so the choice changes the speed
    only. Calibrates the (type, shape) pairs not used yet (a few milliseconds in all)."""
    return [dict(entry) for entry in _core.simd_info()]


def row_size(qtype: QuantType | str, n_per_row: int) -> int:
    """Bytes of one row of ``n_per_row`` weights (the KS types' row scale included).

    Raises ``ValueError`` when ``n_per_row`` is negative, not a multiple of the type's
    block size, or too large for a row to be addressed."""
    return as_quant_type(qtype).row_size(n_per_row)


def type_table() -> list[dict[str, object]]:
    """Every registered type's facts, as the Rust registry holds them."""
    return list(_core.type_table())
