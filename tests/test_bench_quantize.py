"""The helpers of benches/bench_quantize.py: which types a --types value names, which SIMD paths
get a column, and the table's marks and ratios."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import iqk_rs
import pytest

_PATH = Path(__file__).resolve().parents[1] / "benches" / "bench_quantize.py"
_SPEC = importlib.util.spec_from_file_location("bench_quantize", _PATH)
bq = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bq)

KNOWN = [t["name"] for t in iqk_rs.type_table()]


def test_default_types_are_the_six_and_the_companions():
    assert bq.parse_types(bq.DEFAULT_TYPES, KNOWN) == bq.SIX + bq.COMPANIONS
    assert {"q5_K", "q6_K", "iq5_k", "iq6_k", "q8_0", "iq4_nl", "q4_K", "iq5_ks"} == set(
        bq.COMPANIONS
    )


def test_every_group_member_is_a_type_the_library_knows():
    assert bq.parse_types("all", KNOWN) == bq.SIX + bq.COMPANIONS + bq.BEST


def test_types_are_canonicalised_kept_in_order_and_deduplicated():
    got = bq.parse_types(" Q5_k , iq2_KS:Best,q5_K,companions ", KNOWN)
    assert got == ["q5_K", "iq2_ks:best", *[t for t in bq.COMPANIONS if t != "q5_K"]]


@pytest.mark.parametrize("text", ["q5_x", "q5_K:slow", "iq4_k,sixx", " , "])
def test_bad_types_are_named(text):
    with pytest.raises(ValueError, match="--types"):
        bq.parse_types(text, KNOWN)


def test_simd_paths_are_the_candidates_narrowest_first():
    info = [{"candidates": ["avx2", "scalar"]}, {"candidates": ["avx512", "scalar", "avx2"]}]
    assert bq.simd_paths(info, "avx2") == ["scalar", "avx2", "avx512"]
    # A forced path lists only itself; the process's own path always gets a column.
    assert bq.simd_paths([{"candidates": ["scalar"]}], "scalar") == ["scalar"]
    assert bq.simd_paths([], "neon") == ["neon"]


def test_table_marks_the_active_path_and_paths_whose_bytes_differ():
    full = {"all": 20.0, "scaling": 1.5, "machine": 1.8}
    ours = {"q5_K": {"one": 12.0, "digest": 1, **full}, "iq4_k": {"one": 9.0, "digest": 2, **full}}
    scalar = {"q5_K": {"one": 4.0, "digest": 1}, "iq4_k": {"one": 3.0, "digest": 7}}
    lines = bq.table(["q5_K", "iq4_k"], "avx2", ours, {"scalar": scalar, "avx2": ours}, {})
    head = ["type", "scalar", "avx2*", "x", "scalar", "ours", "allT", "x", "1T", "procs"]
    assert lines[0].split() == head
    assert lines[1].split()[:4] == ["q5_K", "4.00", "12.00*", "3.00"]
    assert lines[2].split()[:4] == ["iq4_k", "3.00!", "9.00*", "3.00"]
    assert lines[-1] == "! bytes differ from the avx2 path's"


def test_table_adds_ik_columns_when_measured():
    full = {"all": 20.0, "scaling": 1.5, "machine": 1.8}
    ours = {"q8_0": {"one": 300.0, "digest": 5, **full}}
    ik = {"q8_0": {"one": 150.0, "rows_same": "8/8"}}
    lines = bq.table(["q8_0"], "scalar", ours, {"scalar": ours}, ik)
    assert lines[0].split()[-5:] == ["1T", "x", "ik", "rows", "same"]
    assert lines[1].split()[-3:] == ["150.00", "2.00", "8/8"]
    assert len(lines) == 2  # no footnote when every path agrees
