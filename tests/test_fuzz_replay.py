"""The fuzz targets (fuzz/) replayed on their seeds and on every input they once failed on.

fuzz/regressions/<target>/ keeps inputs that made a target fail (traceback, panic, NaN
output), so each fix stays fixed without running the fuzzer. Files named ``open-*`` are
findings not fixed yet; they are skipped, with the reason in their ``.txt`` beside them.
Runs without atheris (the targets then import uninstrumented).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parent.parent / "fuzz"
TARGETS = ["gguf", "imatrix", "quantize"]


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sys.path.insert(0, str(FUZZ))
    make_corpus = importlib.import_module("make_corpus")
    out = tmp_path_factory.mktemp("seeds")
    make_corpus.main(out)
    return out


def _inputs(seeds: Path, target: str) -> list[Path]:
    saved = sorted(p for p in (FUZZ / "regressions" / target).glob("*") if p.suffix != ".txt")
    return sorted((seeds / target).iterdir()) + saved


@pytest.mark.parametrize("target", TARGETS)
def test_fuzz_target_replays_cleanly(seeds: Path, target: str) -> None:
    common = importlib.import_module("common")
    module = importlib.import_module(f"fuzz_{target}")
    module.setup()
    outcomes = common.Outcomes(target)
    replayed = 0
    for path in _inputs(seeds, target):
        if path.name.startswith("open-"):
            continue
        outcomes.run(module.one_input, path.read_bytes())  # raises on a failure
        replayed += 1
    assert outcomes.counts["cases"] == replayed > 0
    assert outcomes.counts["ok"] >= len(list((seeds / target).iterdir()))  # every seed works
