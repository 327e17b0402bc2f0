"""Planning: the output type and imatrix of every tensor, chosen and checked before any work."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

import numpy as np

from ..gguf.ggml_types import FLOAT_TYPES, GGMLType, rows_to_f32, type_by_name
from ..gguf.reader import GGUFReader, TensorInfo
from ..mix import MixPlanner, ModelParams, fallback
from .options import ConvertError, QuantizeOptions


@dataclass
class TensorPlan:
    info: TensorInfo
    out_type: GGMLType
    action: str  # "quantize" | "copy" | "keep"
    note: str = ""
    imatrix: np.ndarray | None = None
    out_name: str | None = None  # set for a tensor added to the output (output_extra.weight)
    fallback_from: str | None = None  # the type chosen first, when the rows did not fit it

    @property
    def name(self) -> str:
        """The tensor's name in the output."""
        return self.out_name or self.info.name

    @property
    def out_nbytes(self) -> int:
        return self.out_type.nbytes(self.info.ne)


# -- quantize --------------------------------------------------------------------------


def plan_quantize(
    reader: GGUFReader,
    target: GGMLType,
    opts: QuantizeOptions,
    dry_run: bool = False,
    params: ModelParams | None = None,
) -> list[TensorPlan]:
    """Choose every tensor's type (ik's mix for ``target``) and validate everything up front.

    A dry run, like llama-quantize's, only sizes: it does not insist that quantized
    inputs may be requantized. ``params`` replaces the hyper-parameters read from the file.
    """
    imx = opts.imatrix
    recipe = opts.recipe()
    try:
        params = params or ModelParams.from_gguf(reader.get, reader.tensors, recipe.kv_overrides)
    except ValueError as e:
        raise ConvertError(f"{reader.path}: {e}") from None
    try:
        planner = MixPlanner(target.name, params, replace(recipe.mix, has_imatrix=bool(imx)))
    except ValueError as e:
        raise ConvertError(str(e)) from None
    extra = _extra_output_plan(reader, recipe.extra_output_type)

    plans = []
    for t in reader.tensors.values():
        always = extra is not None and t is extra.info
        try:
            c = planner.choose(t.name, t.ne, t.type.name, always=always)
            out_t = type_by_name(c.type)
        except ValueError as e:
            raise ConvertError(f"{reader.path}: tensor {t.name!r}: {e}") from None
        out_t = out_t if c.action == "quantize" else t.type
        plan = TensorPlan(t, out_t, c.action, c.note, fallback_from=c.fallback_from)
        group = [plan, extra] if always else [plan]
        for p in group:
            if p.action == "quantize":
                if not dry_run:
                    check_decodable(reader, t, opts.allow_requantize)
                if imx is not None:
                    n_mat = t.nrows // t.ne[1] if len(t.ne) > 1 else 1
                    try:
                        p.imatrix = imx.for_tensor(t.name, t.ne[0], n_mat)
                    except ValueError as e:
                        raise ConvertError(str(e)) from None
        plans += group
    return plans


# Contrasting hyper-parameters: each threshold ik's rules test (GQA 2 and 4; 2, 4 and 8
# experts; the 70B detection; falcon; the first n_layer/8 ffn_down) falls on both sides.
_PROBE_ARCHS = ("", "llama", "falcon")
_PROBE_EXPERTS = (0, 2, 4, 8)
_PROBE_HEADS = ((8, 8), (8, 4), (8, 2))  # (n_head, n_head_kv): GQA 1, 2, 4
_PROBE_LAYERS = (0, 80, 1024)


def check_architecture(reader: GGUFReader, target: GGMLType, opts: QuantizeOptions) -> list[str]:
    """Refuse a model of unknown architecture when its type mix would depend on it.

    ik's rules read the layer, head and expert counts from ``<arch>.*`` keys; without a
    known architecture (no ``general.architecture``, or no ``<arch>.block_count``, which
    every architecture llama.cpp loads has) they would all be 0 and silently change the
    mix, so llama-quantize refuses such files. Here the plan is made under contrasting
    hyper-parameters instead: if no tensor's type changes (``--pure``, ``--custom-q``
    rules covering those tensors, or no tensor the rules look at), the run goes on and
    the returned warning says what was assumed.
    """
    arch = reader.architecture
    if isinstance(arch, str) and arch and reader.get(f"{arch}.block_count") is not None:
        return []
    what = (
        f"general.architecture {arch!r} has no {arch}.block_count"
        if isinstance(arch, str) and arch
        else "no general.architecture"
    )
    assumed = ModelParams.from_gguf(reader.get, reader.tensors, opts.recipe().kv_overrides)

    def types(params: ModelParams) -> list[str] | None:
        try:
            plans = plan_quantize(reader, target, opts, dry_run=True, params=params)
        except ConvertError:
            return None  # e.g. a layer outside n_layer: the result depends on it
        return [p.out_type.name for p in plans]

    base = types(assumed)
    for arch_, n_exp, (n_head, n_kv), n_layer in itertools.product(
        _PROBE_ARCHS, _PROBE_EXPERTS, _PROBE_HEADS, _PROBE_LAYERS
    ):
        probe = replace(
            assumed, arch=arch_, n_expert=n_exp, n_head=n_head, n_head_kv=n_kv, n_layer=n_layer
        )
        got = types(probe)
        if got != base:
            names = list(reader.tensors)
            first = next(
                (n for n, a, b in zip(names, base or [], got or [], strict=False) if a != b), None
            )
            which = f" (e.g. {first!r})" if first else ""
            raise ConvertError(
                f"{reader.path}: {what}; ik's type mix needs the architecture's layer, head and "
                f"expert counts for this model's tensors{which}, so llama-quantize refuses it "
                "too; set the architecture's metadata, or choose the types with --pure or "
                "--custom-q"
            )
    return [
        f"{reader.path}: {what}; assumed no layers, heads or experts (no tensor's type "
        "depends on them here)"
    ]


EXTRA_OUTPUT_NAME = "output_extra.weight"


def _extra_output_plan(reader: GGUFReader, type_name: str | None) -> TensorPlan | None:
    """--extra-output-tensor (``type_name``, a checked ggml name): a copy of output.weight
    (else token_embd.weight) in another type, written right after it as output_extra.weight.
    As in ik, only if it is smaller than the original; None otherwise (the caller may say so)."""
    if not type_name:
        return None
    src = reader.tensors.get("output.weight") or reader.tensors.get("token_embd.weight")
    if src is None:
        raise ConvertError(
            f"{reader.path}: --extra-output-tensor needs output.weight or token_embd.weight"
        )
    fitted = fallback(type_name, src.ne[0])
    out_t = type_by_name(fitted)
    if out_t.nbytes(src.ne) >= src.nbytes:
        return None
    wanted = type_name if fitted != type_name else None
    note = "--extra-output-tensor" + (f", fallback from {wanted}" if wanted else "")
    return TensorPlan(
        src, out_t, "quantize", note, out_name=EXTRA_OUTPUT_NAME, fallback_from=wanted
    )


# ik refuses to make its 2-bit i-quants (IQ2_XXS/XS/S, IQ1_S/M) without an imatrix; it
# lets IQ2_K and IQ2_KS through, but they lose much of their quality without one, so an
# imatrix given for them that matches no tensor at all (a wrong file) is an error here.
NEEDS_IMATRIX = frozenset({"iq2_k", "iq2_ks"})


def imatrix_unused_error(target: GGMLType, why: str) -> ConvertError | None:
    """The error for an imatrix that weights no tensor, or None where that is allowed."""
    if target.name not in NEEDS_IMATRIX:
        return None
    return ConvertError(
        f"{why}; {target.name.upper()} loses much quality without importance "
        "weights - check that the imatrix belongs to this model, or pass "
        "--allow-missing-imatrix to quantize without it"
    )


def check_decodable(reader: GGUFReader, t: TensorInfo, allow_requantize: bool) -> None:
    if t.type.id in FLOAT_TYPES:
        return
    if not t.type.quantized:
        raise ConvertError(
            f"{reader.path}: tensor {t.name!r} has type {t.type.name}; cannot quantize it"
        )
    if not allow_requantize:
        raise ConvertError(
            f"{reader.path}: tensor {t.name!r} is already quantized ({t.type.name}); requantizing "
            "is disabled - pass --allow-requantize to dequantize it first"
        )
    try:
        rows_to_f32(reader.raw(t.name)[:1], t.type, t.ne[0])
    except NotImplementedError:
        raise ConvertError(
            f"{reader.path}: tensor {t.name!r}: cannot dequantize type {t.type.name} "
            "to requantize it"
        ) from None
