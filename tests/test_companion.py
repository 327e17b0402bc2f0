"""Companion types through the Python API reproduce ik_llama.cpp's bytes (tests/data/companion)."""

from __future__ import annotations

from pathlib import Path

import iqk_rs
import numpy as np
import pytest
from conftest import GoldenCase, first_difference

COMPANION = Path(__file__).parent / "data" / "companion"
TYPES = ["q8_0", "q5_0", "q6_0", "iq4_nl", "q2_K", "q4_K", "q5_K", "q6_K", "iq5_k", "iq6_k"]


@pytest.mark.parametrize("case", ["gauss", "heavy", "edge"])
@pytest.mark.parametrize("qtype", TYPES)
def test_companion_bytes_and_values(case, qtype):
    golden = GoldenCase(case)
    for variant, imatrix in [("im", golden.imatrix), ("noim", None)]:
        want = np.fromfile(COMPANION / case / f"{qtype}.{variant}.bin", dtype=np.uint8)
        got = iqk_rs.quantize(golden.x, qtype, imatrix)
        assert got.shape == (golden.nrows, iqk_rs.row_size(qtype, golden.ncols))
        want = want.reshape(got.shape)
        if imatrix is not None:
            want = _blocks_ik_left_non_finite_requantized(want, golden.x, qtype)
        if not np.array_equal(got, want):
            where = first_difference(got, want, got.shape[1])
            pytest.fail(f"{case}/{qtype}.{variant}: first difference at {where}")
    deq_file = COMPANION / case / f"{qtype}.im.deq.f32"
    if deq_file.exists():
        im_bytes = np.fromfile(COMPANION / case / f"{qtype}.im.bin", dtype=np.uint8)
        deq = iqk_rs.dequantize(im_bytes.reshape(golden.nrows, -1), qtype)
        ref = np.fromfile(deq_file, dtype=np.float32).reshape(deq.shape)
        assert np.array_equal(deq.view(np.uint32), ref.view(np.uint32))


def _blocks_ik_left_non_finite_requantized(want, x, qtype):
    """ik's bytes, except blocks that decode to NaN (edge/q2_K: importances zero where the fit
    needs them give ik a 0/0 scale): those are expected quantized as without an imatrix."""
    qt = iqk_rs.QuantType[qtype.upper()]
    want = want.copy()
    n_bad = 0
    for r in range(want.shape[0]):
        for b in range(x.shape[1] // qt.block_size):
            block = want[r, b * qt.type_size : (b + 1) * qt.type_size]
            if np.isfinite(iqk_rs.dequantize(block, qt)).all():
                continue
            xb = x[r, b * qt.block_size : (b + 1) * qt.block_size]
            block[:] = iqk_rs.quantize(xb, qt)[0]
            n_bad += 1
    # Only edge/q2_K.im holds such blocks (two); a change here means the golden data changed.
    assert n_bad == (2 if (qtype, x.shape) == ("q2_K", (12, 512)) else 0)
    return want


def test_companion_block_sizes_are_checked():
    with pytest.raises(ValueError, match="block size 32"):
        iqk_rs.quantize(np.ones((1, 48), np.float32), "q8_0")
    assert iqk_rs.quantize(np.ones((1, 96), np.float32), "q8_0").shape == (1, 3 * 34)
    with pytest.raises(ValueError, match="block size 256"):
        iqk_rs.quantize(np.ones((1, 96), np.float32), "q6_K")


def test_companion_dot_products_are_not_offered():
    q = iqk_rs.quantize(np.ones((1, 256), np.float32), "q6_K")
    with pytest.raises(NotImplementedError, match="q6_K"):
        iqk_rs.matvec(q, "q6_K", np.ones(256, np.float32))
