"""Behaviour of the Python API: types, shapes, dtypes, threads, GIL, and bad input."""

from __future__ import annotations

import ast
import inspect
import threading
import time
from pathlib import Path

import iqk_rs
import numpy as np
import pytest
from conftest import IQK_TYPES
from iqk_rs import QuantType, _core


@pytest.fixture(scope="module")
def weights() -> np.ndarray:
    return np.random.default_rng(7).normal(0, 0.02, size=(24, 1024)).astype(np.float32)


def test_quant_type_is_generated_from_the_registry():
    table = iqk_rs.type_table()
    assert len(QuantType) == len(table)
    for t in table:
        member = QuantType[t["name"].upper()]
        assert member.value == t["ggml_id"] == member.ggml_id
        assert member.type_name == t["name"]
        assert member.block_size == t["block_size"]
        assert member.type_size == t["type_size"]
        assert member.row_meta_size == t["row_meta_size"]
        assert member.llama_ftype == t["llama_ftype"]
        assert member.bits_per_weight == pytest.approx(8 * t["type_size"] / t["block_size"])
    expected = {
        "IQ2_K": 137,
        "IQ3_K": 138,
        "IQ4_K": 139,
        "IQ4_KS": 144,
        "IQ2_KS": 145,
        "IQ3_KS": 156,
        "IQ5_KS": 152,
    }
    assert {m.name: m.value for m in QuantType if m.is_iqk} == expected
    assert QuantType.IQ2_KS.row_meta_size == 2 and QuantType.IQ4_KS.row_meta_size == 4
    assert QuantType.IQ2_K.llama_ftype == 138 and QuantType.IQ3_KS.llama_ftype == 154


@pytest.mark.parametrize("name", ["iq4_k", "IQ4_K", "Iq4_K", QuantType.IQ4_K])
def test_type_names_are_case_insensitive(name):
    assert iqk_rs.row_size(name, 512) == 2 * 144


def test_row_size_includes_the_ks_row_scale():
    assert iqk_rs.row_size("iq2_ks", 4096) == 2 + 16 * 70
    assert iqk_rs.row_size("iq3_ks", 256) == 2 + 102
    assert iqk_rs.row_size("iq4_ks", 256) == 4 + 136


@pytest.mark.parametrize("qtype", IQK_TYPES)
def test_round_trip_error_is_small(weights, qtype):
    q = iqk_rs.quantize(weights, qtype)
    y = iqk_rs.dequantize(q, qtype)
    assert y.shape == weights.shape and y.dtype == np.float32
    rel_rmse = np.sqrt(np.mean((y - weights) ** 2) / np.mean(weights**2))
    bound = {"iq2": 0.40, "iq3": 0.20, "iq4": 0.10, "iq5": 0.05}[qtype[:3]]
    assert rel_rmse < bound


@pytest.mark.parametrize("qtype", IQK_TYPES)
def test_results_do_not_depend_on_thread_count(weights, qtype):
    im = np.linspace(0.1, 3.0, weights.shape[1], dtype=np.float32)
    one = iqk_rs.quantize(weights, qtype, im, threads=1)
    assert np.array_equal(one, iqk_rs.quantize(weights, qtype, im, threads=2))
    assert np.array_equal(one, iqk_rs.quantize(weights, qtype, im))
    d1 = iqk_rs.vec_dot(one, qtype, iqk_rs.quantize_q8_k(weights[0]), threads=1)
    d2 = iqk_rs.vec_dot(one, qtype, iqk_rs.quantize_q8_k(weights[0]), threads=3)
    assert np.array_equal(d1, d2)


def test_other_float_dtypes_are_converted(weights):
    want = iqk_rs.quantize(weights.astype(np.float16).astype(np.float32), "iq4_k")
    assert np.array_equal(iqk_rs.quantize(weights.astype(np.float16), "iq4_k"), want)
    as64 = weights.astype(np.float64)
    assert np.array_equal(iqk_rs.quantize(as64, "iq4_k"), iqk_rs.quantize(weights, "iq4_k"))


def test_non_contiguous_input_is_converted(weights):
    wide = np.zeros((weights.shape[0], 2 * weights.shape[1]), dtype=np.float32)
    wide[:, ::2] = weights
    view = wide[:, ::2]
    assert not view.flags.c_contiguous
    assert np.array_equal(iqk_rs.quantize(view, "iq3_k"), iqk_rs.quantize(weights, "iq3_k"))


def test_one_dimensional_input_is_one_row(weights):
    q = iqk_rs.quantize(weights[3], "iq2_k")
    assert q.shape == (1, iqk_rs.row_size("iq2_k", weights.shape[1]))
    assert np.array_equal(q[0], iqk_rs.quantize(weights, "iq2_k")[3])
    assert iqk_rs.dequantize(q[0], "iq2_k").shape == (1, weights.shape[1])


def test_empty_input_gives_empty_output():
    assert iqk_rs.quantize(np.zeros((0, 512), np.float32), "iq4_ks").shape == (0, 4 + 2 * 136)
    assert iqk_rs.quantize(np.zeros(0, np.float32), "iq4_k").size == 0
    assert iqk_rs.dequantize(np.zeros((0, 144), np.uint8), "iq4_k").shape == (0, 256)
    assert iqk_rs.quantize_q8_k(np.zeros(0, np.float32)).size == 0


def test_iq2_ks_searches_differ_and_default_to_fast(weights):
    fast = iqk_rs.quantize(weights, "iq2_ks")
    assert np.array_equal(fast, iqk_rs.quantize(weights, "iq2_ks", iq2ks_search="fast"))
    assert not np.array_equal(fast, iqk_rs.quantize(weights, "iq2_ks", iq2ks_search="exhaustive"))


# --- bad input: a clear error naming the problem, never a crash -----------------------------


def test_row_length_not_a_multiple_of_256():
    with pytest.raises(ValueError, match="row length 300 .* block size 256"):
        iqk_rs.quantize(np.ones((2, 300), np.float32), "iq4_k")


def test_wrong_number_of_dimensions():
    with pytest.raises(ValueError, match="1-D or 2-D"):
        iqk_rs.quantize(np.ones((2, 2, 256), np.float32), "iq4_k")


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("row, col", [(2, 300), (0, 5), (2, 511)])
def test_non_finite_weights_name_row_and_column(bad, row, col, dtype):
    x = np.ones((3, 512), dtype)
    x[row, col] = bad
    x[2, 511] = bad  # a later one must not be the one reported
    with pytest.raises(ValueError, match=f"row {row}, column {col}"):
        iqk_rs.quantize(x, "iq3_ks")


@pytest.mark.parametrize("qtype", ["iq2_ks", "q5_0", "q2_K"])
def test_bf16_bits_quantize_as_their_widening(weights, qtype):
    """The CLI hands bf16 (and f16) rows to the core as bits, widened there row by row."""
    bits = (weights.view(np.uint32) >> 16).astype(np.uint16)
    widened = (bits.astype(np.uint32) << 16).view(np.float32)
    for im in (None, np.linspace(0.1, 3.0, weights.shape[1], dtype=np.float32)):
        want = iqk_rs.quantize(widened, qtype, im)
        assert np.array_equal(_core.quantize_half(bits, "bf16", qtype, im), want)
    with pytest.raises(ValueError, match="format must be 'f16' or 'bf16'"):
        _core.quantize_half(bits, "f32", qtype)


def test_imatrix_wrong_length():
    with pytest.raises(ValueError, match="imatrix: has 256 entries but rows have 512"):
        iqk_rs.quantize(np.ones((1, 512), np.float32), "iq4_k", np.ones(256, np.float32))


@pytest.mark.parametrize("bad", [-1.0, np.nan, np.inf])
def test_imatrix_bad_values(bad):
    im = np.ones(512, np.float32)
    im[17] = bad
    with pytest.raises(ValueError, match="imatrix: entry 17"):
        iqk_rs.quantize(np.ones((1, 512), np.float32), "iq2_k", im)


def test_imatrix_must_be_one_dimensional():
    with pytest.raises(ValueError, match="imatrix must be 1-D"):
        iqk_rs.quantize(np.ones((1, 512), np.float32), "iq2_k", np.ones((2, 256), np.float32))


def test_byte_rows_of_invalid_size():
    with pytest.raises(ValueError, match="not a valid iq4_k row size"):
        iqk_rs.dequantize(np.zeros((2, 145), np.uint8), "iq4_k")
    with pytest.raises(ValueError, match="not a valid iq2_ks row size"):
        iqk_rs.dequantize(np.zeros((2, 70), np.uint8), "iq2_ks")


def test_unknown_type_name():
    with pytest.raises(ValueError, match="unknown quantization type 'iq9_k'"):
        iqk_rs.quantize(np.ones((1, 256), np.float32), "iq9_k")
    with pytest.raises(TypeError, match="qtype must be"):
        iqk_rs.quantize(np.ones((1, 256), np.float32), 3.5)  # type: ignore[arg-type]


def test_wrongly_typed_arrays():
    with pytest.raises(TypeError, match="float32, float16 or float64, not int32"):
        iqk_rs.quantize(np.ones((1, 256), np.int32), "iq4_k")
    with pytest.raises(TypeError, match="uint8"):
        iqk_rs.dequantize(np.zeros((1, 144), np.int8), "iq4_k")
    with pytest.raises(TypeError, match="a8 must be 1-D uint8"):
        iqk_rs.vec_dot(np.zeros((1, 144), np.uint8), "iq4_k", np.zeros(296, np.int8))


def test_activation_length_mismatch():
    q = iqk_rs.quantize(np.ones((2, 512), np.float32), "iq4_k")
    with pytest.raises(ValueError, match="activations have 296 bytes"):
        iqk_rs.vec_dot(q, "iq4_k", np.zeros(296, np.uint8))
    with pytest.raises(ValueError, match="activation vector has 256 values"):
        iqk_rs.matvec(q, "iq4_k", np.ones(256, np.float32))
    with pytest.raises(ValueError, match="multiple of 256"):
        iqk_rs.quantize_q8_k(np.ones(100, np.float32))


@pytest.mark.parametrize("threads", [0, -2, 1.5, True])
def test_bad_thread_counts(threads):
    with pytest.raises(ValueError, match="threads must be"):
        iqk_rs.quantize(np.ones((1, 256), np.float32), "iq4_k", threads=threads)


def test_bad_iq2ks_search():
    with pytest.raises(ValueError, match=r"search must be 'ik' \(or 'fast'\), 'ik-exhaustive'"):
        iqk_rs.quantize(np.ones((1, 256), np.float32), "iq2_ks", iq2ks_search="slow")


# --- the binding itself ------------------------------------------------------------------------


def test_gil_is_released_during_quantization():
    x = np.random.default_rng(0).normal(size=(64, 4096)).astype(np.float32)
    span = {}

    def work():
        span["start"] = time.perf_counter()
        iqk_rs.quantize(x, "iq2_k", threads=1)
        span["end"] = time.perf_counter()

    worker = threading.Thread(target=work)
    ticks = []
    worker.start()
    while worker.is_alive():
        ticks.append(time.perf_counter())
        time.sleep(0)
    worker.join()
    # With the GIL held for the whole call, this thread could not run Python in the middle of
    # it (only while the worker is still in Python, at its ends). Timestamps rather than a tick
    # count, so that a loaded machine that seldom schedules this thread does not fail it.
    quarter = (span["end"] - span["start"]) / 4
    inside = [t for t in ticks if span["start"] + quarter < t < span["end"] - quarter]
    assert inside, (span["end"] - span["start"], len(ticks))


def test_stubs_match_the_compiled_module():
    stub = Path(iqk_rs.__file__).with_name("_core.pyi")
    tree = ast.parse(stub.read_text())
    stub_funcs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    runtime = {n for n in dir(_core) if callable(getattr(_core, n)) and not n.startswith("_")}
    assert set(stub_funcs) == runtime
    for name, node in stub_funcs.items():
        params = [a.arg for a in node.args.args]
        assert params == list(inspect.signature(getattr(_core, name)).parameters), name
    assert (Path(iqk_rs.__file__).with_name("py.typed")).exists()


_PATH_PROBE = """
import numpy as np, iqk_rs
rng = np.random.default_rng(5)
x = rng.normal(0, 0.02, (8, 1024)).astype(np.float32)
im = rng.uniform(0.1, 2, 1024).astype(np.float32)
out = [iqk_rs.simd_path()]
for t in ["iq2_k", "iq3_k", "iq4_k", "iq2_ks", "iq3_ks", "iq4_ks"]:
    for search in (["fast", "exhaustive"] if t == "iq2_ks" else ["fast"]):
        q = iqk_rs.quantize(x, t, im, iq2ks_search=search)
        out.append(q.tobytes().hex())
        out.append(iqk_rs.matvec(q, t, x[1]).tobytes().hex())
print("\\n".join(out))
"""


def test_every_simd_path_gives_identical_results():
    """IQK_RS_SIMD pins the path; every path this CPU has gives the same bytes and dots."""
    import os
    import subprocess
    import sys

    results = {}
    for path in ["scalar", "avx2", "avx512", "neon"]:
        env = dict(os.environ, IQK_RS_SIMD=path)
        run = subprocess.run(
            [sys.executable, "-c", _PATH_PROBE], env=env, capture_output=True, text=True, check=True
        )
        active, *values = run.stdout.split("\n")
        if active != path:
            assert "not" in run.stderr or "lacks" in run.stderr  # unavailable: warned, fell back
            continue
        results[path] = values
    assert "scalar" in results
    for path, values in results.items():
        assert values == results["scalar"], path


def test_simd_info_names_a_path_per_type_and_shape():
    """Every (type, shape) runs on one of its candidates; calibrated ones on the fastest timed."""
    info = iqk_rs.simd_info()
    iqk_types = [t["name"].lower() for t in iqk_rs.type_table() if t["is_iqk"]]
    assert sorted((e["type"], e["shape"]) for e in info) == sorted(
        (t, s) for t in iqk_types for s in ("row", "rows", "tile")
    )
    for e in info:
        assert e["path"] in e["candidates"], e
        assert e["how"] in {"forced", "only", "calibrated"}, e
        if e["how"] == "calibrated":
            assert set(e["timings_ns"]) == set(e["candidates"]), e
            assert e["timings_ns"][e["path"]] == min(e["timings_ns"].values()), e
        else:
            assert e["timings_ns"] == {} and e["calibration_ns"] == 0, e


def test_simd_info_respects_the_forced_path():
    import os
    import subprocess
    import sys

    probe = (
        "import iqk_rs; "
        "print(iqk_rs.simd_path(), {(e['path'], e['how']) for e in iqk_rs.simd_info()})"
    )
    env = dict(os.environ, IQK_RS_SIMD="scalar")
    run = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    assert run.stdout.split() == ["scalar", "{('scalar',", "'forced')}"], run.stderr


def test_matmul_shapes_and_errors():
    q = iqk_rs.quantize(np.ones((3, 512), np.float32), "iq4_k")
    assert iqk_rs.matmul(q, "iq4_k", np.ones((2, 512), np.float32)).shape == (2, 3)
    assert iqk_rs.matmul(q, "iq4_k", np.ones(512, np.float32)).shape == (1, 3)
    with pytest.raises(ValueError, match="x has rows of 256 values"):
        iqk_rs.matmul(q, "iq4_k", np.ones((2, 256), np.float32))
    assert iqk_rs.simd_path() in {"scalar", "avx2", "avx512", "neon"}


@pytest.mark.parametrize("scale", [3e38, 1e30, 1e-30, 1e-45])
def test_extreme_finite_values_do_not_crash(scale):
    """Squares that overflow or underflow must not panic. Weights beyond what a type's scales
    can hold (f16 scales end at 65504) are an error naming the output; never non-finite bytes."""
    x = (np.random.default_rng(3).uniform(-1, 1, size=(2, 512)) * scale).astype(np.float32)
    x[:, :7] = np.float32(scale)
    for t in iqk_rs.type_table():
        try:
            q = iqk_rs.quantize(x, t["name"])
        except ValueError as e:
            assert scale > 1e4 and "non-finite value" in str(e) and "quantized output" in str(e)
            continue
        assert q.shape == (2, iqk_rs.row_size(t["name"], 512))
        assert np.isfinite(iqk_rs.dequantize(q, t["name"])).all(), t["name"]


def test_quant_type_stub_lists_exactly_the_registry():
    stub = Path(iqk_rs.__file__).with_name("types.pyi").read_text()
    tree = ast.parse(stub)
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "QuantType")
    stubbed = {
        t.targets[0].id: t.value.value
        for t in cls.body
        if isinstance(t, ast.Assign) and isinstance(t.value, ast.Constant)
    }
    assert stubbed == {m.name: m.value for m in QuantType}
