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
    got = iqk_rs.vec_dot(q, qtype, golden_case.bytes("act.q8k.bin")).astype(np.float64)
    err = np.abs(got - exact)
    strict = err <= 1e-6 * np.abs(exact)
    if qtype == "iq4_ks":
        # The reference rounds each IQ4_KS weight (f32 row scale x code x value) to f32; on rows
        # whose terms nearly cancel that shows. There the bound is f32 rounding of the terms.
        w = iqk_rs.dequantize(q, qtype).astype(np.float64)
        a8 = golden_case.bytes("act.q8k.bin").reshape(-1, 296)
        d = a8[:, :4].copy().view(np.float32)[:, 0].astype(np.float64)
        act = (d[:, None] * a8[:, 8:264].view(np.int8)).reshape(-1)
        terms = np.abs(w * act).sum(axis=1)
        assert np.all(strict | (err <= terms * 2.0**-23)), np.flatnonzero(~strict)
        assert np.count_nonzero(~strict) <= 2
    else:
        assert np.all(strict), np.flatnonzero(~strict)
    # matvec = quantize_q8_k + vec_dot
    assert np.array_equal(iqk_rs.matvec(q, qtype, golden_case.act), got.astype(np.float32))


@pytest.mark.parametrize("qtype", IQK_TYPES)
def test_matmul_equals_vec_dot_per_activation_row(golden_case, qtype):
    q = golden_case.bytes(f"{qtype}.im.bin").reshape(golden_case.nrows, -1)
    x = np.stack([golden_case.act, -0.5 * golden_case.act, golden_case.x[0]])
    got = iqk_rs.matmul(q, qtype, x)
    assert got.shape == (3, golden_case.nrows)
    for b in range(3):
        assert np.array_equal(got[b], iqk_rs.matvec(q, qtype, x[b]))
