from __future__ import annotations

import json
from pathlib import Path

import iqk_rs
import numpy as np
import pytest

GOLDEN = Path(__file__).parent / "data" / "golden"
# From the core's type registry: a new IQK type is tested here without editing this file.
IQK_TYPES = [str(t["name"]) for t in iqk_rs.type_table() if t["is_iqk"]]
CASES = ["gauss", "heavy", "edge", "synthetic"]


class GoldenCase:
    def __init__(self, name: str):
        self.name = name
        self.dir = GOLDEN / name
        meta = json.loads((GOLDEN / "manifest.json").read_text())[name]
        self.nrows, self.ncols = meta["nrows"], meta["ncols"]
        self.x = self.floats("x.f32").reshape(self.nrows, self.ncols)
        self.imatrix = self.floats("imatrix.f32")
        self.act = self.floats("act.f32")

    def floats(self, file: str) -> np.ndarray:
        return np.fromfile(self.dir / file, dtype=np.float32)

    def bytes(self, file: str) -> np.ndarray:
        return np.fromfile(self.dir / file, dtype=np.uint8)

    def has(self, file: str) -> bool:
        return (self.dir / file).exists()


@pytest.fixture(scope="session", params=CASES)
def golden_case(request) -> GoldenCase:
    return GoldenCase(request.param)


def first_difference(got: np.ndarray, want: np.ndarray, row_size: int) -> str:
    """Where two quantized byte arrays first differ, for assertion messages."""
    flat_got, flat_want = got.reshape(-1), want.reshape(-1)
    pos = int(np.flatnonzero(flat_got != flat_want)[0])
    return f"row {pos // row_size}, byte {pos % row_size} of the row"
