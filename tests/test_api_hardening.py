"""The Python API on hostile or degenerate input: never non-finite output, never a runaway
thread count, clear errors for impossible sizes, Ctrl-C noticed while a call is running."""

from __future__ import annotations

import _thread
import os
import threading
import time

import iqk_rs
import numpy as np
import pytest

IQK = ["iq2_k", "iq3_k", "iq4_k", "iq2_ks", "iq3_ks", "iq4_ks"]
COMPANION = ["q8_0", "q5_0", "q6_0", "iq4_nl", "q2_K", "q4_K", "q5_K", "q6_K", "iq5_k", "iq6_k"]


def _weights(scale: float = 0.02) -> np.ndarray:
    return np.random.default_rng(11).normal(0, scale, (8, 1024)).astype(np.float32)


def _zero_importance(kind: str) -> np.ndarray:
    im = np.ones(1024, np.float32)
    if kind == "all":
        im[:] = 0
    elif kind == "first superblock":
        im[:256] = 0
    return im


@pytest.mark.parametrize("zeros", ["all", "first superblock"])
@pytest.mark.parametrize("qtype", IQK + COMPANION)
def test_zero_importances_give_finite_weights_that_are_not_dropped(qtype, zeros):
    """Legacy imatrix files hold zeros for experts that saw no tokens: ik gives NaN (iq4_nl,
    q2_K, q4_K, q5_K) or zeroed blocks (q5_0, q6_0, q6_K) there; those blocks are quantized
    as without an imatrix."""
    x = _weights()
    im = _zero_importance(zeros)
    got = iqk_rs.quantize(x, qtype, im)
    deq = iqk_rs.dequantize(got, qtype)
    assert np.isfinite(deq).all()
    assert (np.abs(deq).reshape(8, -1, 32).max(axis=-1) > 0).all(), "a block was zeroed"
    if qtype not in IQK + ["q8_0", "iq5_k", "iq6_k"]:  # types that take raw importances
        plain = iqk_rs.quantize(x[:, :256], qtype)
        assert np.array_equal(got[:, : plain.shape[1]], plain)


@pytest.mark.parametrize("qtype", IQK + COMPANION)
@pytest.mark.parametrize("huge", [1e37, 3e38])
@pytest.mark.parametrize("scale", [0.02, 1.0])
def test_one_huge_importance_gives_finite_output(qtype, huge, scale):
    im = np.ones(1024, np.float32)
    im[5] = huge
    q = iqk_rs.quantize(_weights(scale), qtype, im)
    assert np.isfinite(iqk_rs.dequantize(q, qtype)).all()


def test_large_but_ordinary_importances_keep_their_bytes():
    """Importances up to 1e10 are used as they are (ik's bytes); beyond, the row's
    importances are scaled down together, which leaves the fit's optimum where it was."""
    x = _weights()
    im = np.random.default_rng(2).chisquare(2, 1024).astype(np.float32)
    for qtype in ["iq4_k", "q4_K"]:
        scaled = im * np.float32(1e10 / im.max())
        assert np.array_equal(iqk_rs.quantize(x, qtype, scaled), iqk_rs.quantize(x, qtype, scaled))
        assert np.isfinite(iqk_rs.dequantize(iqk_rs.quantize(x, qtype, scaled), qtype)).all()


def test_weights_written_to_nan_during_quantize_never_come_back_as_nan_bytes():
    """Another thread writing NaN into the input while it is quantized: an error, or bytes
    of weights read before the write; never non-finite output."""
    x = np.random.default_rng(5).normal(0, 0.02, (4096, 4096)).astype(np.float32)

    def spoil():
        time.sleep(0.02)
        x[2048:] = np.nan

    t = threading.Thread(target=spoil)
    t.start()
    try:
        q = iqk_rs.quantize(x, "iq4_ks", threads=1)
    except ValueError as e:
        assert "non-finite value NaN" in str(e)
    else:
        assert np.isfinite(iqk_rs.dequantize(q, "iq4_ks")).all()
    finally:
        t.join()


def test_absurd_thread_counts_are_refused_at_once():
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="threads must be between 1 and"):
        iqk_rs.quantize(_weights(), "iq4_k", threads=10**9)
    assert time.perf_counter() - t0 < 1.0


def _os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")
def test_many_distinct_thread_counts_do_not_keep_a_pool_each():
    x = _weights()
    before = _os_threads()
    for n in range(2, 34):
        iqk_rs.quantize(x, "iq4_k", threads=n)
    time.sleep(0.2)  # replaced pools' threads end asynchronously
    # Before: one pool per size, 2 + 3 + ... + 33 = 560 threads kept.
    assert _os_threads() - before <= 40


@pytest.mark.parametrize("n", [-256, -1, 2**64 - 256, 2**64, 2**70])
def test_row_size_out_of_range_is_a_value_error(n):
    with pytest.raises(ValueError, match="row length"):
        iqk_rs.row_size("q8_0", n)


def test_row_size_of_a_non_integer_is_a_type_error():
    with pytest.raises(TypeError):
        iqk_rs.row_size("q8_0", 256.0)
    assert iqk_rs.row_size("q8_0", np.int64(256)) == 272


def test_no_rows_of_an_impossible_length_is_still_an_error():
    with pytest.raises(ValueError, match="row length 100"):
        iqk_rs.quantize(np.zeros((0, 100), np.float32), "iq2_k")
    with pytest.raises(ValueError, match="row length 0"):
        iqk_rs.quantize(np.zeros((3, 0), np.float32), "iq2_k")


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_unaligned_contiguous_arrays_are_accepted(dtype):
    """A GGUF with alignment 1 can hand out tensors at odd offsets."""
    x = _weights().astype(dtype)
    buf = np.zeros(x.nbytes + 1, np.uint8)
    unaligned = buf[1:].view(dtype).reshape(x.shape)
    unaligned[:] = x
    assert not unaligned.flags.aligned and unaligned.flags.c_contiguous
    assert np.array_equal(iqk_rs.quantize(unaligned, "iq4_k"), iqk_rs.quantize(x, "iq4_k"))


def test_nan_row_is_named_as_the_arrays_row_beyond_the_first_piece():
    """Large inputs are quantized in pieces of about 4 M weights; errors name the row of the
    whole array."""
    x = np.zeros((5000, 1024), np.float32)
    x[4500, 7] = np.nan
    with pytest.raises(ValueError, match="row 4500, column 7"):
        iqk_rs.quantize(x, "q8_0")


def test_ctrl_c_interrupts_a_long_quantize_call_promptly():
    x = np.random.default_rng(1).normal(0, 0.02, (8192, 4096)).astype(np.float32)
    t0 = time.perf_counter()
    iqk_rs.quantize(x, "iq2_k")
    full = time.perf_counter() - t0

    timer = threading.Timer(full / 8, _thread.interrupt_main)
    timer.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(KeyboardInterrupt):
            iqk_rs.quantize(x, "iq2_k")
        after_interrupt = time.perf_counter() - t0 - full / 8
    finally:
        timer.cancel()
    # Pieces of 4 M weights (1/8 of this input): noticed within about a piece, not at the end.
    assert after_interrupt < full / 2, (after_interrupt, full)
