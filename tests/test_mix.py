"""Tensor-type mix: every tensor of every model in mixes.json, plus the rules' edges."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from iqk_rs.mix import (
    TARGETS,
    MixError,
    MixOptions,
    MixPlanner,
    ModelParams,
    fallback,
    is_quantizable,
    parse_custom_q,
)

DATA = Path(__file__).parent / "data"
MIXES = json.loads((DATA / "mixes.json").read_text())
TINY = DATA / "tiny-llama-f16.gguf"


def params(m: dict) -> ModelParams:
    return ModelParams(
        arch=m["arch"],
        n_layer=m["n_layer"],
        n_head=m["n_head"],
        n_head_kv=m["n_head_kv"],
        n_expert=m["n_expert"],
        has_output=not m["tied_output"],
    )


CASES = [(model, ft) for model, m in MIXES.items() for ft in m["mixes"]]


@pytest.mark.parametrize(("model", "ftype"), CASES, ids=[f"{m}-{f}" for m, f in CASES])
def test_golden_mix(model: str, ftype: str) -> None:
    """Our choice equals llama-quantize's for every tensor (file order matters)."""
    m = MIXES[model]
    planner = MixPlanner(ftype, params(m), MixOptions(has_imatrix=m["imatrix"]))
    wrong = []
    for name, want in m["mixes"][ftype].items():
        got = planner.choose(name, m["shapes"][name], m["input_types"][name])
        if got.type != want:
            wrong.append(f"{name}: got {got.type}, ik chose {want}")
    assert not wrong, "\n".join(wrong[:20])


def test_golden_covers_all() -> None:
    n = sum(len(mix) for m in MIXES.values() for mix in m["mixes"].values())
    assert len(CASES) == 24 and n == 6198


def test_copy_when_type_unchanged() -> None:
    m = MIXES["smollm2-135m"]  # token_embd is q8_0 in the input and stays q8_0
    c = MixPlanner("IQ4_K", params(m)).choose("token_embd.weight", [576, 49152, 1, 1], "q8_0")
    assert (c.type, c.action) == ("q8_0", "copy")


@pytest.mark.parametrize(
    ("t", "ne0", "want"),
    [
        ("iq2_k", 576, "iq4_nl"),
        ("iq3_k", 1536 + 64, "iq4_nl"),
        ("iq2_ks", 128, "iq4_nl"),
        ("iq3_ks", 128, "iq4_nl"),
        ("iq4_ks", 128, "iq4_nl"),
        ("iq4_k", 576, "q5_0"),
        ("iq5_k", 576, "q6_0"),
        ("q5_K", 576, "q6_0"),
        ("iq6_k", 576, "q8_0"),
        ("q6_K", 576, "q8_0"),
        ("q2_K", 576, "iq4_nl"),
        ("q4_K", 576, "q5_0"),
        ("iq4_k", 512, "iq4_k"),
        ("q8_0", 576, "q8_0"),
        ("iq4_k", 100, "f16"),  # not even 32-aligned: f16 like mainline
        ("f32", 7, "f32"),
    ],
)
def test_fallback(t: str, ne0: int, want: str) -> None:
    assert fallback(t, ne0) == want


def test_quantizable_filter() -> None:
    assert is_quantizable("blk.0.attn_q.weight", 2, "f16")
    assert not is_quantizable("blk.0.attn_norm.weight", 2, "f32")
    assert not is_quantizable("blk.0.attn_q.bias", 2, "f32")
    assert not is_quantizable("blk.0.attn_q.weight", 1, "f32")
    assert not is_quantizable("blk.0.ffn_gate_inp.weight", 2, "f32")
    assert not is_quantizable("position_embd.weight", 2, "f16")
    assert not is_quantizable("blk.0.ssm_conv1d.weight", 2, "f32")
    assert not is_quantizable("idx.weight", 2, "i32")
    assert not is_quantizable("output.weight", 2, "f16", leave_output=True)


def _planner(ft: str = "IQ4_K", **kw) -> MixPlanner:
    p = ModelParams("llama", n_layer=8, n_head=8, n_head_kv=2, n_expert=0, has_output=True)
    return MixPlanner(ft, p, MixOptions(**kw))


def test_custom_q_first_match_wins_then_fallback() -> None:
    rules = parse_custom_q([r"attn_q=q8_0,attn=iq2_k", "ffn_down=IQ3_KS"], lambda s: s.lower())
    pl = _planner(custom=rules)
    assert pl.choose("blk.0.attn_q.weight", [512, 512], "f16").type == "q8_0"
    c = pl.choose("blk.0.attn_output.weight", [512, 512], "f16")
    assert (c.type, c.note) == ("iq2_k", "custom")
    c = pl.choose("blk.0.ffn_down.weight", [1376, 512], "f16")  # 1376 % 256 != 0
    assert (c.type, c.note) == ("iq4_nl", "fallback from iq3_ks")


def test_custom_q_ignored_under_pure() -> None:
    rules = [(re.compile("attn_q"), "q8_0")]
    pl = _planner("IQ2_K", pure=True, custom=rules)
    assert pl.choose("blk.0.attn_q.weight", [512, 512], "f16").type == "iq2_k"
    assert pl.choose("blk.0.attn_v.weight", [512, 128], "f16").type == "iq2_k"  # no mix
    assert pl.choose("output.weight", [512, 1000], "f16").type == "iq2_k"
    assert pl.choose("blk.0.ffn_down.weight", [1376, 512], "f16").type == "iq4_nl"


def test_parse_custom_q_errors() -> None:
    with pytest.raises(MixError, match="REGEX=TYPE"):
        parse_custom_q(["attn_q"], str.lower)
    with pytest.raises(MixError, match="regular expression"):
        parse_custom_q(["attn_q(=q8_0"], str.lower)

    def strict(s: str) -> str:
        raise ValueError(f"unknown tensor type {s!r}")

    with pytest.raises(MixError, match="unknown tensor type 'q9_9'"):
        parse_custom_q(["attn=q9_9"], strict)


def test_output_and_embedding_overrides() -> None:
    pl = _planner(output_tensor_type="q8_0", token_embedding_type="q6_K")
    assert pl.choose("output.weight", [512, 1000], "f16").type == "q8_0"
    assert pl.choose("token_embd.weight", [512, 1000], "f16").type == "q6_K"
    # an override that does not fit the rows still gets a type that does
    assert (
        _planner(output_tensor_type="q6_K").choose("output.weight", [576, 9], "f16").type == "q8_0"
    )
    tied = MixPlanner(
        "IQ2_K",
        ModelParams("llama", 8, 8, 2, 0, has_output=False),
        MixOptions(output_tensor_type="q4_K"),
    )
    assert tied.choose("token_embd.weight", [512, 1000], "f16").type == "q4_K"


def test_leave_output_tensor() -> None:
    c = _planner(leave_output_tensor=True).choose("output.weight", [512, 1000], "f16")
    assert (c.type, c.action) == ("f16", "keep")


def test_70b_attn_v() -> None:
    p70 = ModelParams("llama", n_layer=80, n_head=64, n_head_kv=8, n_expert=0)
    assert p70.is_70b
    assert (
        MixPlanner("IQ3_K", p70).choose("blk.0.attn_v.weight", [8192, 1024], "f16").type == "iq5_k"
    )
    # the 70B branch comes first and only bumps Q3_K/Q4_K/IQ3_K: IQ2_K keeps its default
    assert (
        MixPlanner("IQ2_K", p70).choose("blk.0.attn_v.weight", [8192, 1024], "f16").type == "iq2_k"
    )
    assert not ModelParams("llama", 80, 64, 64).is_70b  # MODEL_65B
    assert ModelParams("qwen2", 80, 64, 8).is_70b


def test_moe_layer_from_name() -> None:
    p = ModelParams("llama", n_layer=8, n_head=8, n_head_kv=2, n_expert=8)
    pl = MixPlanner("IQ4_KS", p)
    assert pl.choose("blk.0.ffn_down_exps.weight", [768, 512, 8], "f16").type == "q5_K"
    assert pl.choose("blk.1.ffn_down_exps.weight", [768, 512, 8], "f16").type == "iq4_ks"
    with pytest.raises(MixError, match="cannot determine the layer"):
        pl.choose("ffn_down_exps.weight", [768, 512, 8], "f16")
    with pytest.raises(MixError, match="layer 9"):
        pl.choose("blk.9.ffn_down_exps.weight", [768, 512, 8], "f16")


def test_imatrix_changes_iq4_ks_ffn_down() -> None:
    m = MIXES["qwen2.5-1.5b"]
    shape = m["shapes"]["blk.0.ffn_down.weight"]
    assert (
        MixPlanner("IQ4_KS", params(m)).choose("blk.0.ffn_down.weight", shape, "f16").type == "q5_K"
    )
    with_im = MixPlanner("IQ4_KS", params(m), MixOptions(has_imatrix=True))
    assert with_im.choose("blk.0.ffn_down.weight", shape, "f16").type == "iq4_ks"


def test_unknown_target() -> None:
    with pytest.raises(MixError, match="unsupported target"):
        _planner("Q4_0")
    assert len(TARGETS) == 6


def test_params_from_tiny_model() -> None:
    from iqk_rs.gguf import GGUFReader

    with GGUFReader(TINY) as r:
        p = ModelParams.from_gguf(r.get, r.tensors)
    assert p == ModelParams("llama", 4, 4, 2, 2, True)
    assert p.n_gqa == 2
