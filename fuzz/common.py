"""What the fuzz targets share: the micro model, outcome bookkeeping and the failure rules.

A target input ends in one of four ways:
- ok: read / quantized without error (a quantized output is checked to be finite);
- clean error: one of the project's own error types, with a non-empty one-line message;
- traceback: any other exception (a RuntimeWarning counts: they are turned into errors);
- panic: pyo3's PanicException from the Rust core.
The last two, and a successful quantize whose output holds NaN/Inf ("silent wrong output"),
make libFuzzer stop and save the input under the artifact prefix. With FUZZ_KEEP_GOING=DIR
they are counted, the input saved in DIR, and fuzzing goes on (for surveys, not for CI).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

try:
    import atheris
except ImportError:  # replaying saved inputs (tests/test_fuzz_replay.py) needs no fuzzer
    atheris = None


def instrumented() -> contextlib.AbstractContextManager:
    """Imports inside get coverage instrumentation (only the project's own modules)."""
    return atheris.instrument_imports(include=["iqk_rs"]) if atheris else contextlib.nullcontext()


with instrumented():
    from iqk_rs import IqkError
    from iqk_rs import pipeline as pl
    from iqk_rs.gguf import GGUFReader
    from iqk_rs.gguf.ggml_types import rows_to_f32

# Everything the package raises on purpose derives from IqkError; anything else is a traceback.
PROJECT_ERRORS = (IqkError,)
# Steers the micro model's mix onto the six IQK types (the companion types may be missing).
IQK_RULES = [r"ffn_down=f16,output\.weight={t},attn_v={t},token_embd={t}"]
TARGETS = ["IQ2_K", "IQ3_K", "IQ4_K", "IQ2_KS", "IQ3_KS", "IQ4_KS"]


class SilentWrongOutput(AssertionError):
    """A run that succeeded but wrote NaN/Inf weights."""


def scratch_dir() -> Path:
    """Per-process scratch space, in memory where there is /dev/shm; removed at exit."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    path = Path(tempfile.mkdtemp(prefix="iqk-fuzz-", dir=base))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def check_quantized_output(path: Path, report: pl.Report) -> None:
    """Every tensor the run quantized decodes to finite values."""
    converted = {p.name for p in report.plans if p.action == "quantize"}
    with GGUFReader(path) as r:
        for name in converted:
            t = r.tensors[name]
            x = rows_to_f32(r.read_rows(name, 0, t.nrows), t.type, t.ne[0])
            bad = np.flatnonzero(~np.isfinite(x))
            if bad.size:
                raise SilentWrongOutput(
                    f"{name} ({t.type.name}): {bad.size} non-finite value(s) in the output"
                )


class Outcomes:
    """Counts per outcome; written to $FUZZ_STATS/<target>.json after every input if set."""

    def __init__(self, target: str):
        self.target = target
        self.counts = {"cases": 0, "ok": 0, "clean_errors": 0, "tracebacks": 0, "panics": 0,
                       "silent_wrong_outputs": 0}  # fmt: skip
        stats_dir = os.environ.get("FUZZ_STATS")
        self.file = Path(stats_dir) / f"{target}.json" if stats_dir else None
        keep = os.environ.get("FUZZ_KEEP_GOING")
        self.keep_going = Path(keep) if keep else None
        if self.file and self.file.exists():  # several runs add up
            self.counts.update(json.loads(self.file.read_text()))

    def _bump(self, key: str) -> None:
        self.counts[key] += 1
        if self.file:
            self.file.write_text(json.dumps(self.counts))

    def run(self, fn: Callable[[bytes], None], data: bytes) -> None:
        self.counts["cases"] += 1
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", RuntimeWarning)
                fn(data)
        except PROJECT_ERRORS as e:
            message = str(e)
            if not message.strip():
                self._bump("tracebacks")
                raise AssertionError(f"{type(e).__name__} without a message") from e
            self._bump("clean_errors")
            return
        except SilentWrongOutput:
            self._bump("silent_wrong_outputs")
            self._fail(data)
        except Exception:
            self._bump("tracebacks")
            self._fail(data)
        except BaseException as e:
            if type(e).__name__ != "PanicException":
                raise  # KeyboardInterrupt, SystemExit
            self._bump("panics")
            self._fail(data)
        else:
            self._bump("ok")

    def _fail(self, data: bytes) -> None:
        """Re-raise (libFuzzer saves the input), or with FUZZ_KEEP_GOING save it and go on."""
        if self.keep_going is None:
            raise  # the exception being handled by the caller
        self.keep_going.mkdir(parents=True, exist_ok=True)
        stem = f"{self.target}-{hashlib.sha1(data).hexdigest()[:16]}"
        (self.keep_going / stem).write_bytes(data)
        (self.keep_going / f"{stem}.txt").write_text(traceback.format_exc())


def main(target: str, fn: Callable[[bytes], None]) -> None:
    import sys

    if atheris is None:
        sys.exit("the fuzz targets need atheris: pip install atheris (or the fuzz extra)")
    outcomes = Outcomes(target)
    atheris.Setup(sys.argv, lambda data: outcomes.run(fn, data))
    atheris.Fuzz()
