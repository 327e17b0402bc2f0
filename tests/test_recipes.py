"""llama-quantize's recipe options: the types ik_llama.cpp chose (tests/data/recipes.json),
the checks on what a recipe may name, --override-kv, NTHREADS and the type list in --help."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import iqk_rs
import numpy as np
import pytest
from iqk_rs import cli, recipe
from iqk_rs import pipeline as pl
from iqk_rs.cli import app
from iqk_rs.gguf import GGUFReader, producible_types
from iqk_rs.mix import TARGETS
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
RECIPES = json.loads((DATA / "recipes.json").read_text())
TINY = DATA / "tiny-llama-f16.gguf"


def run(*args: object, expect: int = 0, env: dict[str, str] | None = None):
    r = CliRunner().invoke(app, [str(a) for a in args], env=env)
    assert r.exit_code == expect, f"exit {r.exit_code}:\n{r.output}\n{r.exception!r}"
    return r


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The models ik quantized: the bundled one and those scripts/make_recipe_models.py writes."""
    spec = importlib.util.spec_from_file_location("mrm", ROOT / "scripts/make_recipe_models.py")
    mrm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mrm)
    d = tmp_path_factory.mktemp("recipe-models")
    paths = {"tiny": TINY}
    for name, make in mrm.MODELS.items():
        make(d / f"{name}.gguf")
        paths[name] = d / f"{name}.gguf"
    for name, path in paths.items():  # the same tensors as the models ik was given
        with GGUFReader(path) as r:
            want = RECIPES["models"][name]
            assert {n: list(t.ne) for n, t in r.tensors.items()} == want["shapes"]
            assert {n: t.type.name for n, t in r.tensors.items()} == want["input_types"]
    return paths


def _plan_via_cli(monkeypatch, model: Path, target: str, args: list[str]) -> pl.Report:
    """Run the CLI with ik's own arguments (plus --dry-run) and return the report it got."""
    got = {}
    real = pl.quantize_model

    def recorder(*a, **kw):
        got["report"] = real(*a, **kw)
        return got["report"]

    monkeypatch.setattr(cli.pl, "quantize_model", recorder)
    run("quantize", *args, model, "unused.gguf", target, "2", "--dry-run")
    return got["report"]


RUNS = RECIPES["runs"]


@pytest.mark.parametrize("run_", RUNS, ids=[f"{r['set']}-{r['model']}-{r['target']}" for r in RUNS])
def test_types_as_ik_chose(monkeypatch, models, run_) -> None:
    """Every tensor's type (and the tensor list, output_extra.weight included) as ik's run."""
    report = _plan_via_cli(monkeypatch, models[run_["model"]], run_["target"], run_["args"])
    ours = [[p.name, p.out_type.name] for p in report.plans]
    want = run_["tensors"]
    wrong = [f"{o} != ik {w}" for o, w in zip(ours, want, strict=False) if o != w]
    assert len(ours) == len(want) and not wrong, "\n".join(wrong[:20])


def test_recipes_cover() -> None:
    """Each recipe option is ours (in --help) and appears in ik's runs (so is checked above)."""
    used = {a for r in RUNS for a in r["args"] if a.startswith("--")}
    helptext = run("quantize", "--help", env={"COLUMNS": "200"}).output
    for opt in (
        "--attn-q-type --attn-k-type --attn-v-type --attn-qkv-type --attn-output-type "
        "--ffn-gate-type --ffn-down-type --ffn-up-type --ffn-gate-inp-type "
        "--per-layer-token-embedding-type --extra-output-tensor --ignore-imatrix-rules "
        "--override-kv --custom-q --pure --output-tensor-type --token-embedding-type"
    ).split():
        assert opt in used and re.search(rf"{opt}\b", helptext), opt


def test_override_kv_written_as_ik_writes(tmp_path: Path) -> None:
    """Keys, their order, GGUF types and values equal ik's output (general.file_type stays
    the target's: ik sets it after the overrides)."""
    ik = next(r for r in RUNS if r["set"] == "kv-types")
    out = tmp_path / "o.gguf"
    run("quantize", *ik["args"], TINY, out, ik["target"], "2", "-q")
    with GGUFReader(out) as r:
        ours = [[k.key, k.vtype.name, k.value] for k in r.kv.values()]
        ours = [kv for kv in ours if not kv[0].startswith("tokenizer.")]
        assert [k[:2] for k in ours] == [k[:2] for k in ik["kv"]]
        for (key, _, a), (_, _, b) in zip(ours, ik["kv"], strict=True):
            if isinstance(b, float):
                assert a == pytest.approx(b), key
            elif isinstance(b, list):
                assert list(np.asarray(a).tolist()) == b, key
            else:
                assert a == b, key
        assert [[n, t.type.name] for n, t in r.tensors.items()] == ik["tensors"]


def test_extra_output_tensor_written(tmp_path: Path, models) -> None:
    """A real run: output_extra.weight follows output.weight in ik's type and decodes to it."""
    ik = next(r for r in RUNS if r["set"] == "extra-output" and r["model"] == "moe8")
    out = tmp_path / "o.gguf"
    run("quantize", *ik["args"], models["moe8"], out, ik["target"], "2", "-q")
    with GGUFReader(out) as r, GGUFReader(models["moe8"]) as src:
        assert [[n, t.type.name] for n, t in r.tensors.items()] == ik["tensors"]
        x = src.array("output.weight").astype(np.float64)
        t = r.tensors["output_extra.weight"]
        from iqk_rs.gguf.ggml_types import rows_to_f32

        y = rows_to_f32(r.raw(t.name), t.type, t.ne[0]).astype(np.float64)
        assert np.sqrt(np.sum((x - y) ** 2) / np.sum(x * x)) < 0.15


def test_iq5_ks_selectable_per_tensor(tmp_path: Path) -> None:
    """IQ5_KS, a core type, is produced through --custom-q and the per-tensor options, and rows
    that are not whole 256-blocks fall back to Q5_0 as in ik's llama-quantize."""
    out = tmp_path / "o.gguf"
    run("quantize", TINY, out, "IQ4_K", "--custom-q", "attn_v=iq5_ks",
        "--ffn-down-type", "iq5_ks", "-q")  # fmt: skip
    from iqk_rs.gguf.ggml_types import rows_to_f32

    with GGUFReader(out) as r, GGUFReader(TINY) as src:
        types = {n: t.type.name for n, t in r.tensors.items()}
        assert types["blk.0.attn_v.weight"] == "iq5_ks"
        assert types["blk.0.ffn_down_exps.weight"] == "q5_0"  # rows of 128
        t = r.tensors["blk.0.attn_v.weight"]
        x = src.array(t.name).astype(np.float64).reshape(-1, t.ne[0])
        y = rows_to_f32(r.raw(t.name), t.type, t.ne[0]).astype(np.float64)
        assert np.sqrt(np.sum((x - y) ** 2) / np.sum(x * x)) < 0.05


def test_extra_output_skipped_says_so(tmp_path: Path, models) -> None:
    r = run("quantize", models["moe8"], tmp_path / "o.gguf", "IQ4_K", "--dry-run",
            "--extra-output-tensor", "f32")  # fmt: skip
    assert "not added" in r.output and "output_extra" not in r.output


# -- item 5: a type we cannot produce is an error when the recipe is parsed ---------------


CANNOT = [
    ("--custom-q", "attn=iq4_kss", "iq4_kss"),
    ("--custom-q", "ffn_down=iq2_kt", "iq2_kt"),
    ("--custom-q", "attn_q=q4_k_r4", "q4_k_r4"),
    ("--attn-v-type", "iq4_k_r4", "iq4_k_r4"),
    ("--ffn-down-type", "iq2_kt", "iq2_kt"),
    ("--ffn-gate-inp-type", "q4_0", "q4_0"),
    ("--per-layer-token-embedding-type", "iq1_s", "iq1_s"),
    ("--output-tensor-type", "iq4_kss", "iq4_kss"),
    ("--token-embedding-type", "q3_K", "q3_K"),
    ("--extra-output-tensor", "iq1_kt", "iq1_kt"),
]


@pytest.mark.parametrize(("opt", "value", "tname"), CANNOT)
def test_unproducible_type_rejected_up_front(tmp_path: Path, opt, value, tname) -> None:
    out = tmp_path / "o.gguf"
    # the imatrix does not exist: the recipe must be refused before it is even read
    r = run("quantize", TINY, out, "IQ4_K", opt, value, "--imatrix", tmp_path / "none.dat",
            expect=1)  # fmt: skip
    line = " ".join(r.output.split())
    assert f"cannot produce tensor type {tname}" in line
    assert "none.dat" not in line and "use --custom-q" not in line
    for t in producible_types():  # the list of what can be produced
        assert re.search(rf"\b{re.escape(t.name)}\b", line.split("can be produced:")[1])
    assert not out.exists()


def test_unknown_type_lists_producible() -> None:
    with pytest.raises(recipe.RecipeError, match="unknown tensor type 'q9_9'.*iq4_ks"):
        recipe.check_type("q9_9", "--attn-q-type")


# -- --override-kv ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "vtype", "value"),
    [
        ("a.b=int:-7", "INT32", -7),
        ("a.b=float:0.5", "FLOAT32", 0.5),
        ("a.b=bool:false", "BOOL", False),
        ("a.b=str:x=y:z", "STRING", "x=y:z"),
        ("a.b=str:", "STRING", ""),
    ],
)
def test_parse_kv_override(spec: str, vtype: str, value) -> None:
    kv = recipe.parse_kv_override(spec)
    assert (kv.key, kv.vtype.name, kv.value) == ("a.b", vtype, value)


@pytest.mark.parametrize(
    ("spec", "msg"),
    [
        ("a.b", "KEY=TYPE:VALUE"),
        ("=int:1", "KEY=TYPE:VALUE"),
        ("a.b=u32:1", "int, float, bool or str"),
        ("a.b=int:12x", "not an integer"),
        ("a.b=int:3000000000", "INT32"),
        ("a.b=float:abc", "not a number"),
        ("a.b=bool:1", "'true' or 'false'"),
        ("a.b=str:" + "x" * 128, "127 bytes"),
        ("k" * 128 + "=int:1", "longer than 127"),
    ],
)
def test_bad_kv_override(tmp_path: Path, spec: str, msg: str) -> None:
    r = run("quantize", TINY, tmp_path / "o.gguf", "IQ4_K", "--override-kv", spec, expect=1)
    assert msg in " ".join(r.output.split()) and "Traceback" not in r.output


def test_override_kv_changes_the_mix_as_in_ik() -> None:
    """The model loader reads the overridden expert count: attn_v becomes q8_0 (n_expert>=4)."""
    ik = next(r for r in RUNS if r["set"] == "expert-count" and r["target"] == "IQ4_K")
    assert dict(ik["tensors"])["blk.0.attn_v.weight"] == "q8_0"
    opts = pl.QuantizeOptions(kv_overrides=["llama.expert_count=int:8"])
    plans = pl.quantize_model(TINY, None, "IQ4_K", opts).plans
    assert {p.name: p.out_type.name for p in plans}["blk.0.attn_v.weight"] == "q8_0"
    plain = pl.quantize_model(TINY, None, "IQ4_K").plans
    assert {p.name: p.out_type.name for p in plain}["blk.0.attn_v.weight"] == "iq5_k"


def test_recipe_is_parsed_once_per_run(tmp_path: Path, monkeypatch) -> None:
    """--override-kv was parsed up to four times per run (the CLI's check, planning, the
    architecture probe, the output metadata) and the recipe checked twice; now once."""
    real, calls = recipe.parse_kv_override, []

    def counting(spec: str):
        calls.append(spec)
        return real(spec)

    monkeypatch.setattr(recipe, "parse_kv_override", counting)
    spec = "general.name=str:once"
    run("quantize", TINY, tmp_path / "o.gguf", "IQ4_K", "-q", "--override-kv", spec)
    assert calls == [spec]
    with GGUFReader(tmp_path / "o.gguf") as r:
        assert r.kv["general.name"].value == "once"
    opts = pl.QuantizeOptions(kv_overrides=[spec])
    assert opts.recipe() is opts.recipe()
    opts.kv_overrides.append("general.name=str:twice")  # a change is parsed again
    assert opts.recipe().kv_overrides[-1].value == "twice"


# -- positional NTHREADS --------------------------------------------------------------------


def _threads_used(monkeypatch, *args: object) -> int | None:
    got = {}

    def recorder(inp, out, target, opts, *a):
        got["threads"] = opts.threads
        return pl.Report([], 0, 0, 0)

    monkeypatch.setattr(cli.pl, "quantize_model", recorder)
    run("quantize", TINY, "o.gguf", "IQ4_K", *args, "--dry-run")
    return got["threads"]


def test_positional_nthreads(monkeypatch) -> None:
    assert _threads_used(monkeypatch, "3") == 3
    assert _threads_used(monkeypatch, "0") is None  # <= 0: all cores, as in llama-quantize
    assert _threads_used(monkeypatch, "3", "-t", "3") == 3
    assert _threads_used(monkeypatch) is None


def test_positional_nthreads_errors(tmp_path: Path) -> None:
    r = run("quantize", TINY, tmp_path / "o.gguf", "IQ4_K", "3", "-t", "2", expect=1)
    assert "disagree" in r.output
    run("quantize", TINY, tmp_path / "o.gguf", "IQ4_K", "many", expect=2)


# -- warnings for options that change nothing -----------------------------------------------


def test_warnings_for_options_ik_ignores(tmp_path: Path) -> None:
    r = run("quantize", TINY, tmp_path / "o.gguf", "IQ4_K", "--dry-run", "--pure",
            "--attn-v-type", "q8_0", "--ffn-gate-inp-type", "q8_0")  # fmt: skip
    assert "--attn-v-type: not applied with --pure" in r.output
    assert "--ffn-gate-inp-type" not in r.output.split("not applied")[0].split("warning:")[-1]
    r = run("quantize", TINY, tmp_path / "o.gguf", "IQ2_KS", "--dry-run",
            "--ffn-down-type", "q8_0", "--attn-output-type", "q8_0")  # fmt: skip
    assert "--ffn-down-type: not applied to IQ2_KS" in r.output
    r = run("quantize", TINY, tmp_path / "o.gguf", "IQ4_K", "--dry-run",
            "--attn-qkv-type", "q8_0")  # fmt: skip
    assert "--attn-qkv-type: llama-quantize matches attn_qkv tensors as attn_q" in r.output


def test_ignore_imatrix_rules_accepted(tmp_path: Path) -> None:
    a = run("quantize", TINY, tmp_path / "o.gguf", "IQ2_KS", "--dry-run").output
    b = run("quantize", TINY, tmp_path / "o.gguf", "IQ2_KS", "--dry-run",
            "--ignore-imatrix-rules").output  # fmt: skip
    assert a == b


# -- issue 20 item 5: --help lists the types with bits per weight -------------------------


def test_help_lists_types_with_bpw() -> None:
    text = run("quantize", "--help").output
    for t in TARGETS:
        assert re.search(rf"\b{t.upper()}\s+[\d.]+ bpw", text), t
    # the core's types as its registry counts them (IQ4_KS: 4.25, as llama-quantize says)
    registry = {int(r["ggml_id"]): float(r["bits_per_weight"]) for r in iqk_rs.type_table()}
    for t in producible_types():
        m = re.search(rf"\b{t.id}\s+{re.escape(t.name)}\s+([\d.]+) bpw", text)
        assert m, t.name
        want = registry.get(t.id, 8.0 * t.type_size)  # f32/f16/bf16: bits of one value
        assert float(m.group(1)) == pytest.approx(want, rel=1e-3), t.name
    assert "iq4_kss" not in text and "_r4" not in text
