"""Type stubs of `iqk_rs.types`. At run time `QuantType` is generated from the Rust registry;
these members are checked against it by tests/test_api.py."""

from enum import IntEnum
from typing import Any

class _QuantTypeBase(IntEnum):
    @property
    def type_name(self) -> str: ...
    @property
    def ggml_id(self) -> int: ...
    @property
    def llama_ftype(self) -> int: ...
    @property
    def block_size(self) -> int: ...
    @property
    def type_size(self) -> int: ...
    @property
    def row_meta_size(self) -> int: ...
    @property
    def bits_per_weight(self) -> float: ...
    @property
    def is_iqk(self) -> bool: ...
    def row_size(self, n_per_row: int) -> int: ...

class QuantType(_QuantTypeBase):
    IQ2_K = 137
    IQ3_K = 138
    IQ4_K = 139
    IQ2_KS = 145
    IQ3_KS = 156
    IQ4_KS = 144
    IQ5_KS = 152
    Q8_0 = 8
    Q5_0 = 6
    Q6_0 = 133
    IQ4_NL = 20
    Q2_K = 10
    Q4_K = 12
    Q5_K = 13
    Q6_K = 14
    IQ5_K = 140
    IQ6_K = 141

def as_quant_type(qtype: object) -> QuantType: ...

_TABLE: dict[int, dict[str, Any]]
