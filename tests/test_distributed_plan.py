"""The distributed run's plan and interface, without starting Ray (issue 24, items 1-2).

Runs everywhere in the normal suite: nothing here starts a Ray process (the cluster tests are
tests/test_distributed.py, run through scripts/ray_test.sh).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from iqk_rs import distributed as dist
from iqk_rs import pipeline as pl
from iqk_rs._entry import bare_ray_to_auto
from iqk_rs.cli import app
from iqk_rs.gguf import GGUFReader
from iqk_rs.gguf.split import open_model
from iqk_rs.gguf.writer import plan_layout
from iqk_rs.imatrix import Imatrix
from typer.testing import CliRunner

TINY = Path(__file__).parent / "data" / "tiny-llama-f16.gguf"


def planned(out: Path, max_unit_bytes: int, split: pl.SplitOptions | None = None):
    """(file specs, units per file) of quantizing the tiny model to IQ4_K with an imatrix
    row per matrix, as the distributed driver plans them."""
    split = split or pl.SplitOptions()
    with open_model(TINY) as r:
        weights = {
            n: np.arange(t.ne[0] * (t.nrows // t.ne[1]), dtype=np.float32) + 1
            for n, t in r.tensors.items()
            if len(t.ne) >= 2
        }
        opts = pl.QuantizeOptions(imatrix=Imatrix(Path("i.dat"), "dat", weights))
        plans = pl.plan_quantize(r, pl.target_type("IQ4_K"), opts)
        kvs = pl.output_metadata(r, 0)
        specs = pl.output_files(r, plans, out, kvs, split)
        return specs, [dist.plan_units(r, s, max_unit_bytes) for s in specs]


@pytest.mark.parametrize("max_unit_bytes", [1, 30_000, 10**9])
def test_units_cover_every_output_byte_once(tmp_path: Path, max_unit_bytes: int) -> None:
    """Units tile each tensor's output exactly, stay within one matrix and within the size
    limit (one row at least), and read their rows where the input has them."""
    specs, units = planned(tmp_path / "q.gguf", max_unit_bytes, pl.SplitOptions(max_tensors=9))
    assert len(specs) == 5
    for spec, file_units in zip(specs, units, strict=True):
        layout = plan_layout(spec.kvs, spec.tensors(), spec.alignment)
        assert [u.id for u in file_units] == list(range(len(file_units)))
        for p, offset, nbytes in zip(spec.plans, layout.offsets, layout.nbytes, strict=True):
            mine = [u for u in file_units if u.tensor is p.info]
            assert mine[0].dst_offset == offset
            assert sum(u.dst_nbytes for u in mine) == nbytes == p.out_nbytes
            for a, b in zip(mine, mine[1:], strict=False):
                assert b.dst_offset == a.dst_offset + a.dst_nbytes
                assert b.row0 == a.row0 + a.nrows
            t = p.info
            per = t.ne[1] if len(t.ne) > 1 else t.nrows
            with GGUFReader(TINY) as r:
                base = r.data_offset + t.offset
            for u in mine:
                assert u.row0 // per == (u.row0 + u.nrows - 1) // per  # one matrix
                assert u.nrows == 1 or u.src_nbytes <= max_unit_bytes
                assert u.src_offset == base + u.row0 * (t.nbytes // t.nrows)
                e = u.row0 // per
                if p.imatrix is not None:
                    assert np.array_equal(u.imatrix, p.imatrix[e * t.ne[0] : (e + 1) * t.ne[0]])
    if max_unit_bytes == 10**9:  # one unit per matrix quantized, one per tensor copied
        n = sum(
            p.info.nrows // p.info.ne[1] if p.action == "quantize" and len(p.info.ne) > 1 else 1
            for s in specs
            for p in s.plans
        )
        assert sum(map(len, units)) == n


def test_layout_is_the_stream_writers(tmp_path: Path) -> None:
    """plan_layout's header and offsets are those of the file the local writer writes."""
    out = tmp_path / "q.gguf"
    report = pl.quantize_model(TINY, out, "IQ4_K")
    with open_model(TINY) as r:
        kvs = pl.output_metadata(r, 0)
    (spec,) = pl.output_files(open_model(TINY), report.plans, out, kvs, pl.SplitOptions())
    with GGUFReader(out) as q:
        layout = plan_layout(q.kv.values(), spec.tensors(), spec.alignment)
        assert layout.total_bytes == out.stat().st_size
        assert layout.header == out.read_bytes()[: len(layout.header)]
        assert layout.offsets == [q.data_offset + t.offset for t in q.tensors.values()]


def run(*args: object, expect: int = 0):
    r = CliRunner().invoke(app, [str(a) for a in args])
    assert r.exit_code == expect, f"exit {r.exit_code}:\n{r.output}\n{r.exception!r}"
    return r


def test_bare_ray_means_auto() -> None:
    assert bare_ray_to_auto(["quantize", "a", "b", "IQ4_K", "--ray"])[-1] == "auto"
    assert bare_ray_to_auto(["--ray", "-q"]) == ["--ray", "auto", "-q"]
    assert bare_ray_to_auto(["--ray", "10.0.0.1:6379"]) == ["--ray", "10.0.0.1:6379"]


def test_ray_option_errors(tmp_path: Path) -> None:
    r = run("quantize", TINY, tmp_path / "q.gguf", "IQ4_K", "--resume", expect=1)
    assert "--resume continues a --ray run" in r.output
    r = run("quantize", TINY, tmp_path / "q.gguf", "IQ4_K", "--ray-unit-size", "1T", "--ray",
            "auto", expect=1)  # fmt: skip
    assert "--ray-unit-size '1T'" in r.output
    assert dist.parse_unit_size("64K") == 64_000 and dist.parse_unit_size("4096") == 4096
    assert list(tmp_path.iterdir()) == []


def test_base_install_does_not_need_ray(tmp_path: Path) -> None:
    """Without Ray the CLI and the library work, --ray fails with one line naming the extra,
    and nothing imports Ray unless --ray is given."""
    script = f"""
import sys
sys.modules["ray"] = None  # as if not installed
import iqk_rs.cli, iqk_rs.distributed, iqk_rs.pipeline
from typer.testing import CliRunner
r = CliRunner().invoke(iqk_rs.cli.app, ["quantize", r"{TINY}", r"{tmp_path / "q.gguf"}",
                                        "IQ4_K", "--ray", "auto"])
print(r.exit_code, r.output)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    code, _, output = done.stdout.partition(" ")
    assert code == "1"
    assert output.strip() == (
        "error: --ray needs Ray, which is not installed: pip install 'iqk-rs[ray]'"
    )
    assert not (tmp_path / "q.gguf").exists()
    check = "import sys, iqk_rs.cli, iqk_rs.distributed; print('ray' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", check], capture_output=True, text=True).stdout \
        .strip() == "False"  # fmt: skip
