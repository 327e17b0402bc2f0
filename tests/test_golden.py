"""The Python API reproduces ik_llama.cpp's bytes, values and dot products (tests/data/golden)."""

from __future__ import annotations

import iqk_rs
import numpy as np
import pytest
from conftest import IQK_TYPES, GoldenCase, first_difference


@pytest.mark.parametrize("qtype", IQK_TYPES)
@pytest.mark.parametrize("variant", ["im", "noim"])
def test_quantize_matches_golden_bytes(golden_case, qtype, variant):
    imatrix = golden_case.imatrix if variant == "im" else None
    searches = ["exhaustive", "fast"] if qtype == "iq2_ks" else ["fast"]
    for search in searches:
        tag = ".fast" if search == "fast" and qtype == "iq2_ks" else ""
        want = golden_case.bytes(f"{qtype}{tag}.{variant}.bin")
        got = iqk_rs.quantize(golden_case.x, qtype, imatrix, iq2ks_search=search)
        row_size = iqk_rs.row_size(qtype, golden_case.ncols)
        assert got.shape == (golden_case.nrows, row_size)
        want = want.reshape(got.shape)
        if not np.array_equal(got, want):
            where = first_difference(got, want, row_size)
            pytest.fail(f"{golden_case.name}/{qtype}{tag}.{variant}: first difference at {where}")


@pytest.mark.parametrize("qtype", IQK_TYPES)
@pytest.mark.parametrize("case", ["edge", "synthetic"])  # the cases with golden dequantized values
def test_dequantize_matches_golden_values(case, qtype):
    golden_case = GoldenCase(case)
    q = golden_case.bytes(f"{qtype}.im.bin").reshape(golden_case.nrows, -1)
    got = iqk_rs.dequantize(q, qtype)
    want = golden_case.floats(f"{qtype}.im.deq.f32").reshape(got.shape)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))


def test_quantize_q8_k_matches_golden(golden_case):
    got = iqk_rs.quantize_q8_k(golden_case.act)
    assert np.array_equal(got, golden_case.bytes("act.q8k.bin"))


@pytest.mark.parametrize("qtype", IQK_TYPES)
def test_vec_dot_matches_exact_dot(golden_case, qtype):
    q = golden_case.bytes(f"{qtype}.im.bin").reshape(golden_case.nrows, -1)
    exact = np.fromfile(golden_case.dir / f"{qtype}.im.dot.f64", dtype=np.float64)
    got = iqk_rs.vec_dot(q, qtype, golden_case.bytes("act.q8k.bin"))
    np.testing.assert_allclose(got, exact, rtol=1e-6, atol=1e-30)
    # matvec = quantize_q8_k + vec_dot
    assert np.array_equal(iqk_rs.matvec(q, qtype, golden_case.act), got)
