#!/usr/bin/env python3
"""Small synthetic models whose tensor names exercise llama-quantize's per-tensor options.

tests/data/recipes.json holds the types ik_llama.cpp's llama-quantize chose for these models
(and for tests/data/tiny-llama-f16.gguf) under recipe options; this script writes the inputs
those runs used, so that the expectations can be regenerated. The tests themselves need only
the shapes and hyper-parameters stored in the JSON.

- dense-tied: dense llama, 8 layers, GQA 4, n_ff 640 (ffn_down rows not a multiple of 256),
  no output.weight (token_embd doubles as output), plus a per_layer_token_embd.weight;
- qkv: dense llama, 4 layers, fused attn_qkv.weight, separate output;
- moe8: llama MoE, 4 layers, 8 experts with f32 routers (ffn_gate_inp), shared-expert
  tensors (ffn_*_shexp), separate output.

Weights are seeded random f16 (the types chosen do not depend on them).

Usage: python scripts/make_recipe_models.py OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from gguf import GGUFWriter

N_VOCAB, N_EMBD = 512, 256


def _writer(path: Path, name: str, n_layer: int, n_head: int, n_head_kv: int, n_ff: int):
    w = GGUFWriter(path, "llama")
    w.add_name(name)
    w.add_file_type(1)
    w.add_context_length(512)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_dimension_count(N_EMBD // n_head)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(N_VOCAB)
    w.add_tokenizer_model("llama")
    w.add_token_list([f"t{i}" for i in range(N_VOCAB)])
    w.add_token_scores([0.0] * N_VOCAB)
    w.add_token_types([1] * N_VOCAB)
    return w


def _mat(w: GGUFWriter, rng: np.random.Generator, name: str, *shape: int) -> None:
    """A weight of numpy shape ``shape`` (GGUF ne reversed), f16."""
    w.add_tensor(name, (rng.standard_normal(shape) * 0.02).astype(np.float16))


def _norm(w: GGUFWriter, name: str) -> None:
    w.add_tensor(name, np.ones(N_EMBD, np.float32))


def _finish(w: GGUFWriter) -> None:
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _attention(
    w: GGUFWriter, rng: np.random.Generator, p: str, n_head: int, n_head_kv: int, fused: bool
) -> None:
    hd = N_EMBD // n_head
    _norm(w, p + "attn_norm.weight")
    if fused:
        _mat(w, rng, p + "attn_qkv.weight", 3 * N_EMBD, N_EMBD)
    else:
        _mat(w, rng, p + "attn_q.weight", n_head * hd, N_EMBD)
        _mat(w, rng, p + "attn_k.weight", n_head_kv * hd, N_EMBD)
        _mat(w, rng, p + "attn_v.weight", n_head_kv * hd, N_EMBD)
    _mat(w, rng, p + "attn_output.weight", N_EMBD, n_head * hd)


def _ffn(w: GGUFWriter, rng: np.random.Generator, p: str, n_ff: int, n_exp: int) -> None:
    """Dense: gate, down, up; with experts: f32 router, the experts and a shared expert."""
    _norm(w, p + "ffn_norm.weight")
    if n_exp:
        w.add_tensor(p + "ffn_gate_inp.weight", rng.standard_normal((n_exp, N_EMBD), np.float32))
        _mat(w, rng, p + "ffn_gate_exps.weight", n_exp, n_ff, N_EMBD)
        _mat(w, rng, p + "ffn_down_exps.weight", n_exp, N_EMBD, n_ff)
        _mat(w, rng, p + "ffn_up_exps.weight", n_exp, n_ff, N_EMBD)
    suffix = "_shexp" if n_exp else ""
    _mat(w, rng, p + f"ffn_gate{suffix}.weight", n_ff, N_EMBD)
    _mat(w, rng, p + f"ffn_down{suffix}.weight", N_EMBD, n_ff)
    _mat(w, rng, p + f"ffn_up{suffix}.weight", n_ff, N_EMBD)


def _model(
    path: Path,
    name: str,
    seed: int,
    n_layer: int,
    n_head: int,
    n_head_kv: int,
    n_ff: int,
    *,
    n_exp: int = 0,
    fused_qkv: bool = False,
    tied: bool = False,
    per_layer_embd: bool = False,
) -> None:
    rng = np.random.default_rng(seed)
    w = _writer(path, name, n_layer, n_head, n_head_kv, n_ff)
    if n_exp:
        w.add_expert_count(n_exp)
        w.add_expert_used_count(2)
    _mat(w, rng, "token_embd.weight", N_VOCAB, N_EMBD)
    if per_layer_embd:
        _mat(w, rng, "per_layer_token_embd.weight", N_VOCAB, 512)
    for i in range(n_layer):
        _attention(w, rng, f"blk.{i}.", n_head, n_head_kv, fused_qkv)
        _ffn(w, rng, f"blk.{i}.", n_ff, n_exp)
    _norm(w, "output_norm.weight")
    if not tied:
        _mat(w, rng, "output.weight", N_VOCAB, N_EMBD)
    _finish(w)


def dense_tied(path: Path) -> None:
    _model(path, "recipes dense tied", 1, 8, 4, 1, 640, tied=True, per_layer_embd=True)


def qkv(path: Path) -> None:
    _model(path, "recipes fused qkv", 2, 4, 4, 4, 512, fused_qkv=True)


def moe8(path: Path) -> None:
    _model(path, "recipes moe8", 3, 4, 4, 2, 256, n_exp=8)


MODELS = {"dense-tied": dense_tied, "qkv": qkv, "moe8": moe8}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    out = Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for name, make in MODELS.items():
        make(out / f"{name}.gguf")
        print(f"wrote {out / name}.gguf")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
