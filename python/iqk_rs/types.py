"""`QuantType`, generated from the Rust registry (`_core.type_table()`), never hand-copied."""

from __future__ import annotations

import operator
from enum import IntEnum
from typing import Any

from . import _core
from .errors import IqkTypeError, IqkValueError

_TABLE: dict[int, dict[str, Any]] = {t["ggml_id"]: t for t in _core.type_table()}


class _QuantTypeBase(IntEnum):
    """Members are ggml type ids; the facts come from the Rust registry."""

    @property
    def type_name(self) -> str:
        """ggml's lower-case name, e.g. ``"iq4_k"`` or ``"q6_K"``."""
        return str(_TABLE[self.value]["name"])

    @property
    def ggml_id(self) -> int:
        return int(self.value)

    @property
    def llama_ftype(self) -> int:
        """The `general.file_type` number of a model mostly of this type."""
        return int(_TABLE[self.value]["llama_ftype"])

    @property
    def block_size(self) -> int:
        return int(_TABLE[self.value]["block_size"])

    @property
    def type_size(self) -> int:
        """Bytes per block."""
        return int(_TABLE[self.value]["type_size"])

    @property
    def row_meta_size(self) -> int:
        """Bytes before the blocks of every row (the KS types' row scale)."""
        return int(_TABLE[self.value]["row_meta_size"])

    @property
    def bits_per_weight(self) -> float:
        return float(_TABLE[self.value]["bits_per_weight"])

    @property
    def is_iqk(self) -> bool:
        """One of the six IQK types (the others are companion types of the quantization mixes)."""
        return bool(_TABLE[self.value]["is_iqk"])

    def row_size(self, n_per_row: int) -> int:
        """Bytes of one row of ``n_per_row`` weights; ``ValueError`` if there is no such row."""
        if isinstance(n_per_row, bool):
            raise IqkTypeError("n_per_row must be an integer, not bool")
        n_per_row = operator.index(n_per_row)  # int or numpy integer; TypeError otherwise
        if not 0 <= n_per_row < 2**64:
            raise IqkValueError(f"row length {n_per_row} is out of range (0 <= n < 2**64)")
        return int(_core.row_size(self.value, n_per_row))


QuantType = _QuantTypeBase(  # type: ignore[call-overload]
    "QuantType",
    [(str(t["name"]).upper(), gid) for gid, t in _TABLE.items()],
    module=__name__,
)
QuantType.__doc__ = "A quantization type; the value is its ggml type id."


def as_quant_type(qtype: object) -> Any:
    """A `QuantType` from a member, a ggml id, or a case-insensitive name."""
    if isinstance(qtype, QuantType):
        return qtype
    if isinstance(qtype, str):
        key = qtype.strip().upper()
        if key in QuantType.__members__:
            return QuantType[key]
        known = ", ".join(t["name"] for t in _TABLE.values())
        raise IqkValueError(f"unknown quantization type {qtype!r}; known types: {known}")
    if isinstance(qtype, int) and not isinstance(qtype, bool):
        if qtype in _TABLE:
            return QuantType(qtype)
        raise IqkValueError(f"unknown ggml type id {qtype}")
    raise IqkTypeError(f"qtype must be a QuantType or a type name, not {type(qtype).__name__}")
