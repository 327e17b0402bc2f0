"""One base class for every error the package raises on purpose (issue 21 item 5): bad input to
the API, the GGUF reader and writer, imatrix files, recipes, type mixes and the pipeline all
raise an ``iqk_rs.IqkError``, which is also the builtin the error always was."""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

import iqk_rs
import numpy as np
import pytest
from iqk_rs import IqkError, pipeline
from iqk_rs.gguf import GGUFReader, GGUFStreamWriter, type_by_id, type_by_name
from iqk_rs.gguf.split import parse_size
from iqk_rs.imatrix import load_imatrix
from iqk_rs.mix import MixOptions, MixPlanner, ModelParams, parse_custom_q
from iqk_rs.recipe import check_type, parse_kv_override

PACKAGE = Path(iqk_rs.__file__).parent
TINY = Path(__file__).parent / "data" / "tiny-llama-f16.gguf"


def _garbage(tmp_path: Path) -> Path:
    p = tmp_path / "garbage.bin"
    p.write_bytes(b"not a model at all" * 10)
    return p


# (what, call, the builtin it is too); ``call`` takes a temporary directory
CASES = [
    ("row length", lambda d: iqk_rs.quantize(np.zeros((1, 100), np.float32), "iq4_k"), ValueError),
    (
        "NaN weight",
        lambda d: iqk_rs.quantize(np.full(256, np.nan, np.float32), "iq4_k"),
        ValueError,
    ),
    ("type name", lambda d: iqk_rs.quantize(np.zeros(256, np.float32), "iq9_k"), ValueError),
    ("dtype", lambda d: iqk_rs.quantize(np.zeros(256, np.int32), "iq4_k"), TypeError),
    (
        "threads",
        lambda d: iqk_rs.dequantize(np.zeros(144, np.uint8), "iq4_k", threads=0),
        ValueError,
    ),
    (
        "search",
        lambda d: iqk_rs.quantize(np.zeros(256, np.float32), "iq4_k", search="x"),
        ValueError,
    ),
    ("row bytes", lambda d: iqk_rs.dequantize(np.zeros(100, np.uint8), "iq4_k"), ValueError),
    ("qtype kind", lambda d: iqk_rs.row_size(3.5, 256), TypeError),
    (
        "no dot product",
        lambda d: iqk_rs.vec_dot(np.zeros(34, np.uint8), "q8_0", np.zeros(292, np.uint8)),
        NotImplementedError,
    ),
    ("gguf file", lambda d: GGUFReader(_garbage(d)), ValueError),
    ("gguf tensor name", lambda d: GGUFReader(TINY).raw("no.such.tensor"), KeyError),
    ("ggml type name", lambda d: type_by_name("iq9_k"), ValueError),
    ("ggml type id", lambda d: type_by_id(99999), ValueError),
    ("split size", lambda d: parse_size("12 parsecs"), ValueError),
    ("gguf output", lambda d: GGUFStreamWriter(d, [], []), RuntimeError),  # a directory
    ("imatrix file", lambda d: load_imatrix(_garbage(d)), ValueError),
    ("--override-kv", lambda d: parse_kv_override("general.name"), ValueError),
    ("recipe type", lambda d: check_type("iq4_kss", "--attn-v-type"), ValueError),
    ("--custom-q", lambda d: parse_custom_q(["attn_v"], str), ValueError),
    ("mix target", lambda d: MixPlanner("q8_0", ModelParams(), MixOptions()), ValueError),
    (
        "split options",
        lambda d: pipeline.SplitOptions(keep_split=True, max_tensors=2).check(),
        RuntimeError,
    ),
    ("target type", lambda d: pipeline.quantize_model(TINY, None, "iq9_k"), RuntimeError),
    (
        "recipe",
        lambda d: pipeline.quantize_model(
            TINY, None, "IQ4_K", pipeline.QuantizeOptions(kv_overrides=["x"])
        ),
        RuntimeError,
    ),
    (
        "output path",
        lambda d: pipeline.quantize_model(TINY, TINY, "IQ4_K"),
        RuntimeError,
    ),
]


@pytest.mark.parametrize(("what", "call", "builtin"), CASES, ids=[c[0] for c in CASES])
def test_deliberate_errors_are_iqk_errors(tmp_path: Path, what, call, builtin) -> None:
    with pytest.raises(IqkError) as e:
        call(tmp_path)
    assert isinstance(e.value, builtin), (what, type(e.value).__mro__)
    assert str(e.value) and "\n" not in str(e.value)


def test_every_exception_class_of_the_package_derives_from_iqk_error() -> None:
    """Classes defined in the package's source that subclass an exception (found with ast, so a
    new module is covered without being listed here)."""
    # What a signal unwinds with (cli._Terminated, like KeyboardInterrupt) is no error.
    not_errors = {"iqk_rs.cli._Terminated"}
    checked = []
    for path in sorted(PACKAGE.rglob("*.py")):
        mod_name = ".".join(("iqk_rs",) + path.relative_to(PACKAGE).with_suffix("").parts)
        mod_name = mod_name.removesuffix(".__init__")
        classes = [n.name for n in ast.parse(path.read_text()).body if isinstance(n, ast.ClassDef)]
        if not classes:
            continue
        module = importlib.import_module(mod_name)
        for name in classes:
            cls = getattr(module, name)
            qual = f"{mod_name}.{name}"
            if isinstance(cls, type) and issubclass(cls, BaseException) and qual not in not_errors:
                assert issubclass(cls, IqkError), qual
                checked.append(qual)
    assert len(checked) >= 10, checked


def test_core_errors_are_the_package_classes() -> None:
    with pytest.raises(iqk_rs.IqkValueError):
        iqk_rs.quantize(np.zeros(100, np.float32), "iq4_ks")
    with pytest.raises(iqk_rs.IqkNotImplementedError):
        iqk_rs.matvec(np.zeros((1, 272), np.uint8), "q8_0", np.zeros(256, np.float32))


def test_old_pipeline_path_is_a_deprecated_alias() -> None:
    sys.modules.pop("iqk_rs.gguf.convert", None)
    with pytest.warns(DeprecationWarning, match="iqk_rs.pipeline"):
        old = importlib.import_module("iqk_rs.gguf.convert")
    assert old.quantize_model is pipeline.quantize_model
    assert old.QuantizeOptions is pipeline.QuantizeOptions
