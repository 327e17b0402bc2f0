"""What a pipeline run is asked to do: the options, parsed and checked once, and its error."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import IqkError
from ..gguf.reader import KV
from ..imatrix import Imatrix
from ..mix import TENSOR_TYPE_OPTIONS, MixOptions, parse_custom_q
from ..recipe import RecipeError, check_type, custom_q_type, parse_kv_overrides


class ConvertError(IqkError, RuntimeError):
    """A model cannot be converted as asked; the message names the file/tensor and why."""


@dataclass
class QuantizeOptions:
    """llama-quantize's options for a whole-model run, as the CLI takes them (type names,
    ``--custom-q`` rules, ``--override-kv`` specs); ``recipe()`` is their parsed form."""

    imatrix: Imatrix | None = None
    threads: int | None = None
    pure: bool = False
    custom_q: list[str] = field(default_factory=list)
    output_tensor_type: str | None = None
    token_embedding_type: str | None = None
    leave_output_tensor: bool = False
    allow_requantize: bool = False
    search: str = "ik"
    hide_imatrix: bool = False
    # An imatrix that matches no tensor is an error for the 2-bit targets unless this is set.
    allow_missing_imatrix: bool = False

    # llama-quantize's recipe options: {"--attn-v-type": "q6_K", ...} (mix.TENSOR_TYPE_OPTIONS)
    tensor_types: dict[str, str] = field(default_factory=dict)
    extra_output_type: str | None = None  # --extra-output-tensor
    kv_overrides: list[str] = field(default_factory=list)  # --override-kv KEY=TYPE:VALUE
    # ik's rules refusing very-low-bit types (IQ1_*, IQ2_XXS/XS/S, KT) without an imatrix;
    # none of those can be produced here, so this is accepted for recipes and changes nothing
    ignore_imatrix_rules: bool = False
    # (the recipe fields above, Recipe) of the last parse: parsed again only after a change
    _parsed: tuple[tuple, Recipe] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def recipe(self) -> Recipe:
        """The recipe options parsed and checked (types we can produce, --override-kv syntax),
        once: later calls return the same result while those options stay unchanged."""
        key = (
            self.pure,
            tuple(self.custom_q),
            self.output_tensor_type,
            self.token_embedding_type,
            self.leave_output_tensor,
            tuple(self.tensor_types.items()),
            self.extra_output_type,
            tuple(self.kv_overrides),
        )
        if self._parsed is None or self._parsed[0] != key:
            self._parsed = (key, _parse_recipe(self))
        return self._parsed[1]


@dataclass(frozen=True)
class Recipe:
    """A QuantizeOptions' recipe options in the form planning and writing use them."""

    mix: MixOptions  # has_imatrix is left to the planner (it depends on the tensor)
    kv_overrides: list[KV]  # --override-kv, in order
    extra_output_type: str | None  # --extra-output-tensor, as a ggml name


def _parse_recipe(opts: QuantizeOptions) -> Recipe:
    try:
        kv_overrides = parse_kv_overrides(opts.kv_overrides)
        tensor_types = {}
        for option, t in opts.tensor_types.items():
            if option not in TENSOR_TYPE_OPTIONS:
                raise RecipeError(f"unknown per-tensor type option {option}")
            tensor_types[TENSOR_TYPE_OPTIONS[option]] = check_type(t, option)
        extra = _opt_type(opts.extra_output_type, "--extra-output-tensor")
        mix = MixOptions(
            pure=opts.pure,
            custom=parse_custom_q(opts.custom_q, custom_q_type),
            output_tensor_type=_opt_type(opts.output_tensor_type, "--output-tensor-type"),
            token_embedding_type=_opt_type(opts.token_embedding_type, "--token-embedding-type"),
            leave_output_tensor=opts.leave_output_tensor,
            tensor_types=tensor_types,
        )
    except ValueError as e:
        raise ConvertError(str(e)) from None
    return Recipe(mix, kv_overrides, extra)


def _opt_type(name: str | None, option: str) -> str | None:
    return check_type(name, option) if name else None


def check_recipe(opts: QuantizeOptions) -> Recipe:
    """Parse and check every recipe option before any work (``opts.recipe()``)."""
    return opts.recipe()


@dataclass
class SplitOptions:
    """Split output (at most one of the first three) and resuming, as llama-quantize's
    --keep-split / --partial-requant and llama-gguf-split's --split-max-size/-tensors."""

    keep_split: bool = False
    max_size: int | None = None  # bytes of tensor data per file
    max_tensors: int | None = None
    partial_requant: bool = False

    @property
    def splits(self) -> bool:
        return self.keep_split or self.max_size is not None or self.max_tensors is not None

    def check(self) -> None:
        chosen = [
            o
            for o, v in (
                ("--keep-split", self.keep_split),
                ("--split-max-size", self.max_size is not None),
                ("--split-max-tensors", self.max_tensors is not None),
            )
            if v
        ]
        if len(chosen) > 1:
            raise ConvertError(f"{' and '.join(chosen)} exclude each other; give one")
        if self.max_tensors is not None and self.max_tensors < 1:
            raise ConvertError(f"--split-max-tensors must be at least 1, got {self.max_tensors}")
        if self.max_size is not None and self.max_size < 1:
            raise ConvertError(f"--split-max-size must be positive, got {self.max_size}")
