"""Type stubs of the compiled extension `iqk_rs._core` (checked against it by the tests)."""

import numpy as np
import numpy.typing as npt

__version__: str

# Its errors are iqk_rs.errors.IqkValueError and IqkNotImplementedError.

def quantize(
    x: npt.NDArray[np.float32],
    qtype: int | str,
    imatrix: npt.NDArray[np.float32] | None = None,
    search: str = "ik",
    threads: int | None = None,
) -> npt.NDArray[np.uint8]: ...
def quantize_half(
    bits: npt.NDArray[np.uint16],
    format: str,
    qtype: int | str,
    imatrix: npt.NDArray[np.float32] | None = None,
    search: str = "ik",
    threads: int | None = None,
) -> npt.NDArray[np.uint8]: ...
def dequantize(
    q: npt.NDArray[np.uint8], qtype: int | str, threads: int | None = None
) -> npt.NDArray[np.float32]: ...
def widen_to_f32(
    bits: npt.NDArray[np.uint16], format: str, threads: int | None = None
) -> npt.NDArray[np.float32]: ...
def quantize_q8_k(x: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]: ...
def vec_dot(
    q: npt.NDArray[np.uint8],
    qtype: int | str,
    a8: npt.NDArray[np.uint8],
    threads: int | None = None,
) -> npt.NDArray[np.float32]: ...
def matvec(
    q: npt.NDArray[np.uint8],
    qtype: int | str,
    x: npt.NDArray[np.float32],
    threads: int | None = None,
) -> npt.NDArray[np.float32]: ...
def matmul(
    q: npt.NDArray[np.uint8],
    qtype: int | str,
    x: npt.NDArray[np.float32],
    threads: int | None = None,
) -> npt.NDArray[np.float32]: ...
def simd_path() -> str: ...
def simd_info() -> list[dict[str, str | int | float | list[str] | dict[str, float]]]: ...
def row_size(qtype: int | str, n_per_row: int) -> int: ...
def type_table() -> list[dict[str, str | int | float | bool]]: ...
