"""What a llama-quantize recipe may name, checked before any work: types and metadata overrides.

A recipe (``--custom-q`` rules, the per-tensor ``--*-type`` options, ``--output-tensor-type``,
``--token-embedding-type``, ``--extra-output-tensor``) may only name types this build can
produce: the core's types and f32/f16/bf16. Anything else (iq4_kss, the trellis KT types,
the row-interleaved _r4/_r8 types, ...) is an error when the option is parsed, never a silent
substitution. The list comes from the type registry (``gguf.ggml_types``), not from here.

``--override-kv KEY=TYPE:VALUE`` follows llama.cpp's ``string_parse_kv_override`` (common/
common.cpp): TYPE is int, float, bool or str, the key shorter than 128 bytes, a string value
at most 127 bytes, a bool exactly ``true`` or ``false``. llama-quantize writes int as INT32,
float as FLOAT32, bool and str as such. Where llama.cpp's ``atol``/``atof`` would silently
read garbage as 0 (``int:abc``) or a prefix (``int:12x``), we refuse the value instead.
"""

from __future__ import annotations

from collections.abc import Iterable

from .errors import IqkError
from .gguf.constants import GGUFValueType
from .gguf.ggml_types import FLOAT_TYPES, GGMLType, producible_types, type_by_name
from .gguf.reader import KV

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


class RecipeError(IqkError, ValueError):
    """A recipe option names something we cannot do; the message says which and why."""


def _producible_names() -> str:
    return " ".join(t.name for t in producible_types())


def check_type(name: str, where: str) -> str:
    """The ggml spelling of ``name`` if we can produce it, else a RecipeError naming ``where``."""
    try:
        t = type_by_name(name)
    except ValueError:
        raise RecipeError(
            f"{where}: unknown tensor type {name!r}; types that can be produced: "
            f"{_producible_names()}"
        ) from None
    if not (t.in_core or t.id in FLOAT_TYPES):
        raise RecipeError(
            f"{where}: cannot produce tensor type {t.name}; types that can be produced: "
            f"{_producible_names()}"
        )
    return t.name


def custom_q_type(name: str) -> str:
    """``normalize`` for ``mix.parse_custom_q`` (which names the rule in its error)."""
    return check_type(name, "type")


def parse_kv_override(spec: str) -> KV:
    """``KEY=TYPE:VALUE`` -> the KV llama-quantize writes into its output."""
    where = f"--override-kv {spec!r}"
    key, sep, rest = spec.partition("=")
    if not sep or not key:
        raise RecipeError(f"{where}: expected KEY=TYPE:VALUE")
    if len(key.encode()) >= 128:
        raise RecipeError(f"{where}: the key is longer than 127 bytes")
    kind, sep, value = rest.partition(":")
    if not sep or kind not in ("int", "float", "bool", "str"):
        raise RecipeError(f"{where}: TYPE must be int, float, bool or str")
    if kind == "int":
        try:
            n = int(value.strip(), 10)
        except ValueError:
            raise RecipeError(f"{where}: {value!r} is not an integer") from None
        if not INT32_MIN <= n <= INT32_MAX:
            raise RecipeError(f"{where}: {n} does not fit the INT32 llama-quantize writes")
        return KV(key, GGUFValueType.INT32, n)
    if kind == "float":
        try:
            x = float(value.strip())
        except ValueError:
            raise RecipeError(f"{where}: {value!r} is not a number") from None
        return KV(key, GGUFValueType.FLOAT32, x)
    if kind == "bool":
        if value not in ("true", "false"):
            raise RecipeError(f"{where}: a bool is 'true' or 'false'")
        return KV(key, GGUFValueType.BOOL, value == "true")
    if len(value.encode()) > 127:
        raise RecipeError(f"{where}: a string value may have at most 127 bytes")
    return KV(key, GGUFValueType.STRING, value)


def parse_kv_overrides(specs: Iterable[str]) -> list[KV]:
    """All overrides in order; a later one for the same key wins (as in the output)."""
    return [parse_kv_override(s) for s in specs]


def _bits_per_weight(t: GGMLType) -> float:
    """Bits per weight of the blocks, as the core's registry counts them (its type_table's
    bits_per_weight, which llama-quantize's listing shows too: IQ4_KS is 4.25)."""
    return 8.0 * t.type_size / t.block_size


def type_listing(targets: Iterable[str]) -> str:
    """The TYPE targets and every tensor type a recipe may name, with bits per weight."""
    lines = ["Target types (TYPE), with general.file_type and bits per weight:"]
    for name in targets:
        t = type_by_name(name)
        lines.append(f"  {t.llama_ftype:>3}  {name:<7} {_bits_per_weight(t):7.4g} bpw")
    lines.append(
        "Tensor types for --custom-q, the --*-type options and --extra-output-tensor, with "
        "ggml id and bits per weight:"
    )
    for t in producible_types():
        lines.append(f"  {t.id:>3}  {t.name:<7} {_bits_per_weight(t):7.4g} bpw")
    return "\n".join(lines)


# Per-tensor options applied after the rules too (llama_model_quantize_impl), so also under
# --pure; and the only one IQ2_KS's low-bit branch of llama_tensor_get_type reads.
_APPLIED_LATE = ("--ffn-gate-inp-type", "--per-layer-token-embedding-type")
_READ_BY_IQ2_KS = ("--attn-output-type",)


def recipe_warnings(target: str, opts: object) -> list[str]:
    """Options of a recipe that llama-quantize accepts but that change nothing here."""
    given = list(getattr(opts, "tensor_types", {}))
    msgs = []
    if getattr(opts, "pure", False):
        if getattr(opts, "custom_q", None):
            msgs.append("--custom-q rules are not applied with --pure (as in llama-quantize)")
        ignored = [o for o in given if o not in _APPLIED_LATE]
        if ignored:
            msgs.append(f"{', '.join(ignored)}: not applied with --pure (as in llama-quantize)")
        return msgs
    if target.lower() == "iq2_ks":
        ignored = [o for o in given if o not in _APPLIED_LATE + _READ_BY_IQ2_KS]
        if ignored:
            msgs.append(
                f"{', '.join(ignored)}: not applied to IQ2_KS, whose rules in llama-quantize read "
                "only --attn-output-type (use --custom-q)"
            )
    elif "--attn-qkv-type" in given:
        msgs.append(
            "--attn-qkv-type: llama-quantize matches attn_qkv tensors as attn_q first, so "
            "--attn-q-type (or --custom-q) sets their type, not this option"
        )
    return msgs
