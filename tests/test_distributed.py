"""Quantizing on a Ray cluster gives the local run's bytes, also after faults (issue 24).

A local cluster of three nodes (ray.cluster_utils.Cluster, 1 CPU each, all on 127.0.0.1)
quantizes the bundled model and a synthetic split model; a node removed mid-run and a driver
killed mid-run (then --resume) must still give byte-identical output.

Ray must never run outside a network namespace that has only the loopback interface: run
this module through ``bash scripts/ray_test.sh``, which creates one and sets IQK_RAY_NETNS=1.
Anywhere else every test here is skipped, before Ray is imported.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from iqk_rs import pipeline as pl
from iqk_rs.gguf import KV, GGUFStreamWriter
from iqk_rs.gguf.constants import GGUFValueType
from iqk_rs.gguf.ggml_types import type_by_name
from iqk_rs.gguf.reader import GGUFReader
from iqk_rs.gguf.split import Shard, shard_keys, split_path
from iqk_rs.imatrix import Imatrix

TINY = Path(__file__).parent / "data" / "tiny-llama-f16.gguf"
LOOPBACK = "127.0.0.1"


def _interfaces() -> set[str]:
    sys_net = set(os.listdir("/sys/class/net")) if os.path.isdir("/sys/class/net") else set()
    with open("/proc/net/dev") as f:  # this process's namespace, whatever /sys shows
        proc_net = {line.split(":")[0].strip() for line in f.readlines()[2:]}
    return sys_net | proc_net


def _why_not_here() -> str | None:
    if os.environ.get("IQK_RAY_NETNS") != "1":
        return "Ray tests run only inside scripts/ray_test.sh's loopback-only network namespace"
    try:
        others = _interfaces() - {"lo"}
    except OSError as e:
        return f"cannot list network interfaces ({e}); not running Ray"
    if others:
        return f"network interfaces other than lo exist ({sorted(others)}); not running Ray"
    return None


_SKIP = _why_not_here()
pytestmark = [pytest.mark.skipif(_SKIP is not None, reason=_SKIP or "")]
if _SKIP is None:
    ray = pytest.importorskip("ray")
    from iqk_rs import distributed as dist
    from ray.cluster_utils import Cluster
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

# seconds: a test that hangs (e.g. a task nobody can run) fails instead of blocking CI
TEST_TIMEOUT = 120


@pytest.fixture(autouse=True)
def _time_bound():
    """Bound every test in time (pytest-timeout is not needed; SIGALRM is enough here)."""

    def expired(signum, frame):
        raise TimeoutError(f"test took more than {TEST_TIMEOUT} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(TEST_TIMEOUT)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def cluster():
    """Three nodes of one CPU each on 127.0.0.1; this process is a driver connected to it."""
    c = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "node_ip_address": LOOPBACK, "include_dashboard": False},
    )
    try:
        for _ in range(2):
            c.add_node(num_cpus=1, node_ip_address=LOOPBACK)
        c.wait_for_nodes()
        ray.init(address=c.address, _node_ip_address=LOOPBACK, log_to_driver=False)
        assert {n["NodeManagerAddress"] for n in ray.nodes()} == {LOOPBACK}
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


def ray_opts(cluster, **kw) -> dist.RayOptions:
    return dist.RayOptions(address=cluster.address, **kw)


def files_of(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def tiny_imatrix() -> Imatrix:
    """Importances for every matrix of the tiny model (one row per expert)."""
    rng = np.random.default_rng(7)
    weights = {}
    with GGUFReader(TINY) as r:
        for name, t in r.tensors.items():
            if len(t.ne) >= 2:
                n_mat = t.nrows // t.ne[1]
                weights[name] = (rng.random(t.ne[0] * n_mat) + 0.05).astype(np.float32)
    return Imatrix(Path("tiny.imatrix"), "dat", weights, chunks=3, dataset="synthetic")


def synthetic_split_model(directory: Path, parts: int = 3) -> Path:
    """A model of 3-D expert tensors and matrices (about 12 MB of F16) in ``parts`` files,
    named and keyed as gguf-split writes them."""
    rng = np.random.default_rng(1)
    f16, f32 = type_by_name("f16"), type_by_name("f32")
    tensors = []
    for layer in range(3):
        for kind, ne in (("ffn_up_exps", (512, 256, 4)), ("ffn_down_exps", (256, 512, 4))):
            tensors.append((f"blk.{layer}.{kind}.weight", f16, ne))
        tensors.append((f"blk.{layer}.attn_norm.weight", f32, (512,)))
    tensors.append(("output.weight", f16, (512, 1024)))
    per = -(-len(tensors) // parts)
    groups = [tensors[i : i + per] for i in range(0, len(tensors), per)]
    kv = [KV("general.architecture", GGUFValueType.STRING, "synthetic")]
    prefix = directory / "synth"
    for no, group in enumerate(groups):
        keys = shard_keys(Shard(Path(), no, len(groups), []), len(tensors))
        path = split_path(prefix, no, len(groups))
        with GGUFStreamWriter(path, (kv if no == 0 else []) + keys, group) as w:
            for name, t, ne in group:
                x = rng.standard_normal(int(np.prod(ne))) * 0.02
                w.write_tensor(name, x.astype(np.float16 if t is f16 else np.float32))
            w.commit()
    return split_path(prefix, 0, len(groups))


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    return synthetic_split_model(tmp_path_factory.mktemp("synthetic"))


# -- the same bytes ----------------------------------------------------------------------


def test_bundled_model_same_bytes_as_local(cluster, tmp_path: Path) -> None:
    """The default IQ4_K mix with an imatrix (per-expert rows), cut into ~100 units."""
    opts = pl.QuantizeOptions(imatrix=tiny_imatrix())
    pl.quantize_model(TINY, tmp_path / "local.gguf", "IQ4_K", opts)
    report = dist.quantize_model(
        TINY, tmp_path / "ray.gguf", "IQ4_K", opts, ray=ray_opts(cluster, max_unit_bytes=40_000)
    )
    assert (tmp_path / "ray.gguf").read_bytes() == (tmp_path / "local.gguf").read_bytes()
    assert report.run.units == report.run.units_done > 40
    assert sum(n.units for n in report.run.nodes.values()) == report.run.units
    assert sorted(p.name for p in tmp_path.iterdir()) == ["local.gguf", "ray.gguf"]


def test_split_model_split_output_same_bytes_as_local(cluster, synthetic, tmp_path) -> None:
    """A three-part input to IQ2_KS, written as shards of 4 tensors: the same files."""
    local, remote = tmp_path / "local", tmp_path / "ray"
    local.mkdir()
    remote.mkdir()
    opts = pl.QuantizeOptions(pure=True)
    split = pl.SplitOptions(max_tensors=4)
    pl.quantize_model(synthetic, local / "q.gguf", "IQ2_KS", opts, split=split)
    report = dist.quantize_model(
        synthetic, remote / "q.gguf", "IQ2_KS", opts, split=split,
        ray=ray_opts(cluster, max_unit_bytes=300_000),
    )  # fmt: skip
    assert len(report.files) == 3
    assert files_of(remote) == files_of(local)
    # the 1 MiB expert tensors are cut at expert boundaries and by size
    assert report.run.units > 3 * 2 * 4


# -- faults --------------------------------------------------------------------------------


def test_node_removed_mid_run(cluster, synthetic, tmp_path: Path) -> None:
    """A node that dies while it converts units: Ray reruns them elsewhere, same bytes."""
    extra = cluster.add_node(num_cpus=1, node_ip_address=LOOPBACK)
    cluster.wait_for_nodes()
    # start a worker on the new node first, so that it takes units from the start
    on_extra = NodeAffinitySchedulingStrategy(extra.node_id, soft=False)
    warm = ray.remote(dist._node_name).options(scheduling_strategy=on_extra).remote()
    assert ray.get(warm).endswith(extra.node_id[:8])
    opts = pl.QuantizeOptions(pure=True)
    pl.quantize_model(synthetic, tmp_path / "local.gguf", "IQ2_K", opts)
    out = tmp_path / "ray.gguf"
    result: dict = {}

    def drive():
        try:
            result["report"] = dist.quantize_model(
                synthetic, out, "IQ2_K", opts, ray=ray_opts(cluster, max_unit_bytes=100_000)
            )
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            result["error"] = e

    driver = threading.Thread(target=drive)
    driver.start()
    manifest = dist.manifest_path(out)
    deadline = time.monotonic() + 60
    while not manifest.exists() or manifest.read_text().count("\n") < 10:
        assert driver.is_alive(), f"the run ended before the node was removed: {result}"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    removed_after = manifest.read_text().count("\n") - 1
    cluster.remove_node(extra)
    driver.join(90)
    assert not driver.is_alive()
    assert "error" not in result, result.get("error")
    report = result["report"]
    assert removed_after < report.run.units
    assert any(n.endswith(extra.node_id[:8]) for n in report.run.nodes), "it took no unit"
    assert out.read_bytes() == (tmp_path / "local.gguf").read_bytes()


DRIVER_ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))


def iqk(*args: object) -> list[str]:
    return [sys.executable, "-m", "iqk_rs._entry", *map(str, args)]


def test_driver_killed_then_resume(cluster, synthetic, tmp_path: Path) -> None:
    """The CLI driver killed with SIGKILL mid-run; --resume verifies the finished units'
    checksums, converts only the others, and the files equal the local run's."""
    local, remote = tmp_path / "local", tmp_path / "ray"
    local.mkdir()
    remote.mkdir()
    args = ["IQ2_K", "--pure", "--split-max-tensors", "5", "-q"]
    subprocess.run(iqk("quantize", synthetic, local / "q.gguf", *args), check=True, timeout=90)
    run = [*iqk("quantize", synthetic, remote / "q.gguf", *args), "--ray", cluster.address]
    run += ["--ray-unit-size", "100K"]
    child = subprocess.Popen(run, env=DRIVER_ENV)
    try:
        deadline = time.monotonic() + 60
        manifest = dist.manifest_path(remote / "q-00001-of-00002.gguf")
        while not manifest.exists() or manifest.read_text().count("\n") < 12:
            assert child.poll() is None, "the run ended before it was killed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
        recorded = manifest.read_text().count("\n") - 1  # the first line names the plan
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    left = sorted(p.name for p in remote.iterdir())
    assert ".q-00001-of-00002.gguf.ray.manifest" in left and "q-00002-of-00002.gguf" not in left

    loud = [a for a in run if a != "-q"]  # progress lines on stderr (a pipe, not a terminal)
    resumed = subprocess.run(
        [*loud, "--resume"], env=DRIVER_ENV, capture_output=True, text=True, timeout=90
    )
    assert resumed.returncode == 0, resumed.stderr
    assert re.search(r"resumed: \d+ of \d+ units finished earlier", resumed.stderr)
    progress = r"units \d+/\d+ on 3 nodes, +\d+% of [\d.]+ MiB, [\d.]+ MiB/s, ETA \d+:\d\d:\d\d"
    assert re.search(progress, resumed.stderr), resumed.stderr
    m = re.search(
        r"cluster : (\d+) of (\d+) units converted, (\d+) finished earlier", resumed.stdout
    )
    assert m, resumed.stdout
    redone, total, verified = map(int, m.groups())
    assert verified >= recorded and redone + verified == total and redone < total
    assert re.search(r"node    : 127\.0\.0\.1/\w+ +\d+ units", resumed.stdout)
    assert files_of(remote) == files_of(local)


def test_resume_redoes_units_whose_bytes_changed(cluster, tmp_path: Path) -> None:
    """A recorded unit whose bytes no longer match its checksum is converted again."""
    out = tmp_path / "q.gguf"
    opts = dict(max_unit_bytes=200_000)
    pl.quantize_model(TINY, tmp_path / "local.gguf", "IQ3_KS")
    # a finished run's temporary file and manifest, as if the driver died before the rename
    writer = dist.RayWriter(ray_opts(cluster, **opts))
    tmp, manifest = dist.temp_path(out), dist.manifest_path(out)
    finish = writer._finish_file

    def keep_copies(f):
        f.log.flush()
        shutil.copy(tmp, tmp_path / "tmp.copy")
        shutil.copy(manifest, tmp_path / "manifest.copy")
        finish(f)

    writer._finish_file = keep_copies
    pl.quantize_model(TINY, out, "IQ3_KS", write=writer)
    out.unlink()
    os.replace(tmp_path / "tmp.copy", tmp)
    os.replace(tmp_path / "manifest.copy", manifest)
    entry = json.loads(manifest.read_text().splitlines()[3])
    with open(tmp, "r+b") as f:  # damage the bytes of the third recorded unit
        f.seek(entry["offset"])
        f.write(b"\xff" * 8)
    report = dist.quantize_model(TINY, out, "IQ3_KS", ray=ray_opts(cluster, resume=True, **opts))
    assert (report.run.units_done, report.run.units_verified) == (1, report.run.units - 1)
    assert out.read_bytes() == (tmp_path / "local.gguf").read_bytes()
    assert not tmp.exists() and not dist.manifest_path(out).exists()


def test_unit_error_is_one_line(cluster, tmp_path: Path) -> None:
    """A unit that fails on a node (its input changed under the run) names the tensor."""
    model = tmp_path / "m.gguf"
    model.write_bytes(TINY.read_bytes())
    writer = dist.RayWriter(ray_opts(cluster, max_unit_bytes=10**6))
    real_run = writer._run

    def truncate_then_run(*a, **kw):
        os.truncate(model, 4096)  # after the plan, before the units read their rows
        return real_run(*a, **kw)

    writer._run = truncate_then_run
    with pytest.raises(pl.ConvertError, match=r"tensor '[\w.]+' rows \d+\.\.\d+: ") as e:
        pl.quantize_model(model, tmp_path / "q.gguf", "IQ4_K", write=writer)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "q.gguf").exists()
