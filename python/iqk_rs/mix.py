"""Which type each tensor gets: ik_llama.cpp llama-quantize's rules for the six IQK targets.

A faithful re-statement of ``llama_tensor_get_type`` / ``change_type_if_necessary``
(src/llama-quantize.cpp, commit 8337e4cd) restricted to the IQ2_K, IQ3_K, IQ4_K,
IQ2_KS, IQ3_KS and IQ4_KS file types, checked against every tensor of the models
in tests/data/mixes.json. Types are ggml names ("iq4_k", "q5_K", "f32").

Quirks kept on purpose, because they decide real outputs:
- names are matched by substring ("attn_k" also matches attn_k_b, attn_kv_*);
- ffn_down layer positions come from a counter in file order (IQ2_KS always, and
  dense models generally), not from the layer number in the name;
- custom rules (--custom-q) override the mix but not the fallback, and are not
  applied under --pure.

Per-tensor options (--attn-q-type ... --ffn-up-type, ``MixOptions.tensor_types``) act where
ik reads them: inside the rules, each in its own branch, so that a custom rule beats them,
the fallback follows them, --pure ignores them, and IQ2_KS's low-bit branch honours only
--attn-output-type. Names are still matched by substring in branch order, so attn_qkv
tensors take the attn_q branch (--attn-q-type) and --attn-qkv-type never applies to them.
--token-embedding-type, --per-layer-token-embedding-type, --output-tensor-type and
--ffn-gate-inp-type are applied once more after the rules and the fallback (also under
--pure), so they beat custom rules.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .errors import IqkError

TARGETS = ("iq2_k", "iq3_k", "iq4_k", "iq2_ks", "iq3_ks", "iq4_ks")

# change_type_if_necessary: rows that are not a multiple of 256 cannot use these.
_FALLBACK_256 = {
    **dict.fromkeys(
        "iq2_xxs iq2_xs iq2_ks iq2_s iq3_xxs iq3_s iq1_s iq1_m q2_K q3_K iq2_k iq2_kl iq3_ks "
        "iq3_k iq4_kss iq4_ks iq4_xs iq1_kt iq2_kt iq3_kt iq4_kt iq2_xxs_r4 iq2_xs_r4 iq2_s_r4 "
        "iq3_xxs_r4 iq3_s_r4 q2_k_r4 q3_k_r4 iq2_k_r4 iq3_k_r4 iq4_ks_r4 iq4_xs_r8".split(),
        "iq4_nl",
    ),
    **dict.fromkeys("iq4_k q4_K iq5_ks iq4_k_r4 q4_k_r4 iq5_ks_r4".split(), "q5_0"),
    **dict.fromkeys("iq5_k q5_K iq5_k_r4 q5_k_r4".split(), "q6_0"),
    **dict.fromkeys("iq6_k q6_K q6_k_r4 q8_k_r8".split(), "q8_0"),
}
_FLOATS = {"f32", "f16", "bf16"}


class MixError(IqkError, ValueError):
    pass


def fallback(gtype: str, ne0: int) -> str:
    """The type ik uses instead when rows of ``ne0`` do not fit ``gtype``'s blocks.

    ik stops there; if even the fallback's 32-blocks do not fit, we go to f16 (as
    mainline llama-quantize does) rather than fail.
    """
    if ne0 % 256 and gtype in _FALLBACK_256:
        gtype = _FALLBACK_256[gtype]
    if ne0 % 32 and gtype not in _FLOATS:
        gtype = "f16"
    return gtype


@dataclass(frozen=True)
class ModelParams:
    """The hyper-parameters the rules read (llm_load_hparams)."""

    arch: str = "llama"
    n_layer: int = 0
    n_head: int = 0
    n_head_kv: int = 0
    n_expert: int = 0
    has_output: bool = True  # a separate output.weight exists (not tied to token_embd)

    @property
    def n_gqa(self) -> int:
        return self.n_head // self.n_head_kv if self.n_head_kv else 0

    @property
    def is_70b(self) -> bool:
        """MODEL_70B as llm_load_hparams decides it (only the arches that have it)."""
        if self.n_layer != 80:
            return False
        if self.arch == "llama":
            return self.n_expert != 8 and self.n_head != self.n_head_kv
        return self.arch in ("qwen2", "qwen2vl", "deci", "olmo")

    @classmethod
    def from_gguf(
        cls,
        get: Callable[[str], object],
        tensor_names: Iterable[str],
        overrides: Iterable[object] = (),
    ) -> ModelParams:
        """Build from GGUF metadata (``get(key)`` returns the value or None).

        ``overrides`` (KVs with ``key``, ``vtype``, ``value``: --override-kv) replace what
        llama-quantize's model loader lets them replace: a str the architecture, an int a
        scalar integer key; one of another type is ignored there, as in ik.
        """
        by_key = {kv.key: kv for kv in overrides}

        def overridden(key: str, vtype: str) -> object:
            kv = by_key.get(key)
            return kv.value if kv is not None and kv.vtype.name == vtype else None

        arch_override = overridden("general.architecture", "STRING")
        arch = str(
            arch_override if arch_override is not None else get("general.architecture") or ""
        )

        def first(key: str, default: int = 0) -> int:
            """The value, or the first of a per-layer array, as a count; a bad one is an error."""
            v = get(f"{arch}.{key}")
            ov = overridden(f"{arch}.{key}", "INT32")
            # get_key takes any int override; get_key_or_arr (head counts) only over a
            # scalar that is in the file
            if ov is not None and (
                not key.startswith("attention.") or (v is not None and not hasattr(v, "__len__"))
            ):
                return int(ov)
            if v is None:
                return default
            x = v[0] if hasattr(v, "__len__") and not isinstance(v, str) and len(v) else v
            if (
                isinstance(x, numbers.Real)
                and not isinstance(x, bool)
                and math.isfinite(x)
                and x == int(x)
                and 0 <= x < 2**31
            ):
                return int(x)
            raise MixError(
                f"metadata key {arch}.{key}: expected a non-negative integer, got {v!r:.60}"
            )

        n_head = first("attention.head_count")
        return cls(
            arch=arch,
            n_layer=first("block_count"),
            n_head=n_head,
            n_head_kv=first("attention.head_count_kv", n_head),
            n_expert=first("expert_count"),
            has_output="output.weight" in set(tensor_names),
        )


# llama-quantize's per-tensor type options: option name -> MixOptions.tensor_types key.
TENSOR_TYPE_OPTIONS = {
    "--attn-q-type": "attn_q",
    "--attn-k-type": "attn_k",
    "--attn-v-type": "attn_v",
    "--attn-qkv-type": "attn_qkv",
    "--attn-output-type": "attn_output",
    "--ffn-gate-type": "ffn_gate",
    "--ffn-down-type": "ffn_down",
    "--ffn-up-type": "ffn_up",
    "--ffn-gate-inp-type": "ffn_gate_inp",
    "--per-layer-token-embedding-type": "per_layer_token_embd",
}


@dataclass
class MixOptions:
    pure: bool = False
    custom: list[tuple[re.Pattern[str], str]] = field(default_factory=list)
    output_tensor_type: str | None = None
    token_embedding_type: str | None = None
    leave_output_tensor: bool = False
    has_imatrix: bool = False
    # per-tensor options, keyed by TENSOR_TYPE_OPTIONS' values: {"attn_v": "q6_K", ...}
    tensor_types: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.tensor_types) - set(TENSOR_TYPE_OPTIONS.values())
        if unknown:
            raise MixError(f"unknown per-tensor type option(s): {', '.join(sorted(unknown))}")


def parse_custom_q(
    specs: Iterable[str], normalize: Callable[[str], str]
) -> list[tuple[re.Pattern[str], str]]:
    """``"regex=type,regex=type"`` (repeatable) -> ordered rules; first match wins."""
    rules = []
    for spec in specs:
        for item in spec.split(","):
            if not item.strip():
                continue
            pattern, sep, tname = item.rpartition("=")
            if not sep or not pattern:
                raise MixError(f"invalid --custom-q rule {item!r}: expected REGEX=TYPE")
            try:
                rx = re.compile(pattern)
            except re.error as e:
                raise MixError(
                    f"invalid regular expression {pattern!r} in --custom-q: {e}"
                ) from None
            try:
                rules.append((rx, normalize(tname.strip())))
            except ValueError as e:
                raise MixError(f"invalid type in --custom-q rule {item!r}: {e}") from None
    return rules


def is_quantizable(
    name: str,
    n_dims: int,
    type_name: str,
    arch: str = "",
    leave_output: bool = False,
    ffn_gate_inp_type: str | None = None,
) -> bool:
    """llama-quantize's filter: which tensors get a new type at all.

    Routers (ffn_gate_inp) only with --ffn-gate-inp-type, and only if it changes their type.
    """
    if "ffn_gate_inp.weight" in name and ffn_gate_inp_type in (None, type_name):
        return False
    return (
        type_name not in ("i8", "i16", "i32", "i64")
        and name.endswith("weight")
        and n_dims >= 2
        and "_norm.weight" not in name
        and not (leave_output and name == "output.weight")
        and name not in ("position_embd.weight", "token_types.weight")
        and "ssm_conv1d" not in name
        and "ssm_x.weight" not in name
        and "ssm_dt.weight" not in name
        and "attn_rel_b.weight" not in name
    )


@dataclass(frozen=True)
class Choice:
    name: str
    type: str  # ggml name of the output type
    action: str  # "quantize", "copy" (same type as input) or "keep" (not a weight to quantize)
    note: str = ""  # "custom", "fallback from X", or the option that chose the type
    fallback_from: str | None = None  # the type chosen first, when its rows did not fit it


_OPTION_OF = {key: opt for opt, key in TENSOR_TYPE_OPTIONS.items()}


def _fitted(gtype: str, ne0: int, note: str) -> tuple[str, str, str | None]:
    """An option's type after the row-size fallback (ik does not check; we must), its note and
    the type it replaced (None without a fallback)."""
    fb = fallback(gtype, ne0)
    return (fb, f"fallback from {gtype} ({note})", gtype) if fb != gtype else (gtype, note, None)


class MixPlanner:
    """Chooses types tensor by tensor. Call ``choose`` in file order: ik's
    ffn_down position counter makes the result depend on it."""

    def __init__(self, target: str, params: ModelParams, opts: MixOptions | None = None):
        target = target.lower()
        if target not in TARGETS:
            raise MixError(
                f"unsupported target type {target!r}; choose one of {', '.join(TARGETS)}"
            )
        self.ft = target
        self.p = params
        self.o = opts or MixOptions()
        self.i_ffn_down = self.i_ffn_gate = self.i_ffn_up = 0

    def choose(
        self, name: str, ne: tuple[int, ...] | list[int], cur_type: str, always: bool = False
    ) -> Choice:
        """The type for tensor ``name``; ``always``: convert it even if the filter says
        not (ik does so for the tensor that --extra-output-tensor duplicates)."""
        o = self.o
        n_dims = max((i + 1 for i, d in enumerate(ne) if d > 1), default=1)
        if not always and not is_quantizable(
            name,
            n_dims,
            cur_type,
            self.p.arch,
            o.leave_output_tensor,
            o.tensor_types.get("ffn_gate_inp"),
        ):
            return Choice(name, cur_type, "keep")
        ne0 = int(ne[0])
        note, wanted = "", None
        if o.pure:
            new = fallback(self.ft, ne0)
            if new != self.ft:
                note, wanted = f"fallback from {self.ft}", self.ft
        else:
            new, note = self._mix(name, ne0)
            fb = fallback(new, ne0)
            if fb != new:
                new, note, wanted = fb, f"fallback from {new}", new
        # applied again after the rules, as llama_model_quantize_impl does (also under --pure)
        late = self._late_override(name)
        if late is not None:
            new, note, wanted = _fitted(late[0], ne0, late[1])
        return Choice(name, new, "copy" if new == cur_type else "quantize", note, wanted)

    def _late_override(self, name: str) -> tuple[str, str] | None:
        o, tt = self.o, self.o.tensor_types
        if name == "token_embd.weight" and o.token_embedding_type:
            return o.token_embedding_type, "--token-embedding-type"
        if name == "per_layer_token_embd.weight" and "per_layer_token_embd" in tt:
            return tt["per_layer_token_embd"], _OPTION_OF["per_layer_token_embd"]
        if name == "output.weight" and o.output_tensor_type:
            return o.output_tensor_type, "--output-tensor-type"
        if "ffn_gate_inp.weight" in name and "ffn_gate_inp" in tt:
            return tt["ffn_gate_inp"], _OPTION_OF["ffn_gate_inp"]
        # ik compares these with the whole name, so only a tensor named exactly so matches
        for key in ("attn_q", "attn_k", "attn_v", "attn_qkv", "attn_output"):
            if name == f"{key}.weight" and key in tt:
                return tt[key], _OPTION_OF[key]
        for key in ("ffn_gate", "ffn_down", "ffn_up"):
            if name == key and key in tt:
                return tt[key], _OPTION_OF[key]
        return None

    def _opt(self, key: str) -> tuple[str, str] | None:
        t = self.o.tensor_types.get(key)
        return None if t is None else (t, _OPTION_OF[key])

    # llama_tensor_get_type for the six file types; returns (type, note)
    def _mix(self, name: str, ne0: int) -> tuple[str, str]:
        ft, p, o = self.ft, self.p, self.o
        new, note = ft, ""
        custom = next((t for rx, t in o.custom if rx.search(name)), None)
        n_exp, gqa = p.n_expert, p.n_gqa
        opt = None  # (type, option name) of a per-tensor option that decided

        if name == "output.weight" or (not p.has_output and name == "token_embd.weight"):
            if o.output_tensor_type:
                opt = (o.output_tensor_type, "--output-tensor-type")
            elif p.arch == "falcon" or ne0 % 256:
                new = "q8_0"
            elif ft in ("iq2_k", "iq3_k", "iq2_ks", "iq3_ks"):
                new = "q5_K" if p.has_output else "iq4_k"
            elif ft == "iq4_ks" and not p.has_output:
                new = "iq5_k"
            else:
                new = "q6_K"
        elif name == "token_embd.weight":
            if o.token_embedding_type:
                opt = (o.token_embedding_type, "--token-embedding-type")
        elif name == "per_layer_token_embd.weight":
            opt = self._opt("per_layer_token_embd")
        elif ft == "iq2_ks":  # ik's very-low-bit branch: only --attn-output-type counts here
            if "attn_v.weight" in name:
                new = (
                    "iq4_k"
                    if gqa >= 4 or n_exp >= 4
                    else "iq3_k"
                    if gqa >= 2 or n_exp >= 2
                    else "q2_K"
                )
            elif n_exp >= 8 and "attn_k" in name:
                new = "q4_K"
            elif n_exp >= 8 and "attn_q" in name:
                new = "q4_K"
            elif "attn_qkv.weight" in name:
                new = "iq2_k"
            elif "ffn_down" in name:
                if self.i_ffn_down < p.n_layer // 8:
                    new = "q2_K"
                self.i_ffn_down += 1
            elif "attn_output.weight" in name:
                opt = self._opt("attn_output")
                if opt is None and n_exp >= 4:
                    new = "q5_K"
        elif "attn_v.weight" in name:
            opt = self._opt("attn_v")
            if opt is not None:
                pass
            elif n_exp >= 4:
                new = "q8_0"
            elif p.is_70b:
                if new == "iq3_k":
                    new = "iq5_k"
            elif ft == "iq2_k":
                new = "iq4_k" if gqa >= 2 else "iq3_k"
            elif gqa >= 2:
                new = {"iq3_k": "iq4_k", "iq3_ks": "iq4_ks", "iq4_k": "iq5_k", "iq4_ks": "iq5_k"}[
                    ft
                ]
        elif "attn_k" in name:
            opt = self._opt("attn_k")
            if opt is None and n_exp >= 4:
                new = "q8_0"
        elif "attn_q" in name:  # also attn_qkv: this branch comes first
            opt = self._opt("attn_q")
        elif "ffn_down" in name:
            i_layer = self._layer(name, self.i_ffn_down)
            opt = self._opt("ffn_down")
            if opt is None and ft == "iq4_ks" and i_layer < p.n_layer // 8 and not o.has_imatrix:
                new = "q5_K"
            self.i_ffn_down += 1
        elif "attn_output.weight" in name:
            opt = self._opt("attn_output")
            if opt is None and p.arch != "falcon":
                if n_exp >= 4:
                    new = "q5_K"
                elif ft == "iq2_k":
                    new = "iq3_k"
        elif "attn_qkv.weight" in name:  # unreachable for ik's names (see the module doc)
            opt = self._opt("attn_qkv")
        elif "ffn_gate" in name:  # also ffn_gate_inp, when --ffn-gate-inp-type converts it
            self._layer(name, self.i_ffn_gate)
            opt = self._opt("ffn_gate")
            self.i_ffn_gate += 1
        elif "ffn_up" in name:
            self._layer(name, self.i_ffn_up)
            opt = self._opt("ffn_up")
            self.i_ffn_up += 1
        if opt is not None:
            new, note = opt
        if custom is not None:
            new, note = custom, "custom"
        return new, note

    def _layer(self, name: str, counter: int) -> int:
        """Layer index as ik's layer_info: from the name for MoE models, else the counter."""
        if self.p.n_expert <= 1:
            return counter
        m = re.match(r"blk\.(\d+)\.", name)
        if not m:
            raise MixError(f"cannot determine the layer of tensor {name!r}")
        il = int(m.group(1))
        if not 0 <= il < self.p.n_layer:
            raise MixError(f"tensor {name!r}: layer {il} outside [0, {self.p.n_layer})")
        return il
