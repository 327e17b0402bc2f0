"""The package's layers (issue 21 item 5): every import of every module goes down, never up.

From the bottom: the errors and the compiled core; the numpy API; GGUF file I/O (``gguf/``);
imatrix files, ik's type mix and the recipe options; the model pipeline (``pipeline/``); the
distributed writer; the CLI. Imports are read from the source with ``ast`` (those inside
functions too), so a lazy import cannot slip past.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "python" / "iqk_rs"

# Layer of each first-level unit of the package; a module imports only lower layers (and its
# own unit). "iqk_rs" is the package's __init__ (the lazy public API).
LAYERS = {
    "errors": 0,
    "_core": 0,
    "types": 1,
    "api": 2,
    "iqk_rs": 3,
    "display": 4,
    "gguf": 4,
    "imatrix": 5,
    "mix": 5,
    "recipe": 5,
    "pipeline": 6,
    "distributed": 7,
    "cli": 8,
    "_entry": 9,
}
# The deprecated alias of the pipeline's old place; the one upward import allowed.
ALIASES = {("gguf/convert.py", "pipeline")}


def _unit(parts: tuple[str, ...]) -> str:
    """The first-level unit of a module path inside the package (() is the package itself)."""
    return parts[0] if parts else "iqk_rs"


def _imports(path: Path) -> list[tuple[int, tuple[str, ...]]]:
    """(line, module path inside iqk_rs) of every import of the package by this file."""
    rel = path.relative_to(PACKAGE).with_suffix("").parts
    package = rel[:-1] if rel[-1] != "__init__" else rel[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                mod = base + tuple(node.module.split(".") if node.module else ())
                # "from . import x" imports the submodule x
                targets = [mod + (a.name,) for a in node.names] if not node.module else [mod]
            elif node.module and node.module.split(".")[0] == "iqk_rs":
                targets = [tuple(node.module.split(".")[1:])]
                if not targets[0]:
                    targets = [(a.name,) for a in node.names]
            else:
                continue
            found += [(node.lineno, t) for t in targets]
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "iqk_rs":
                    found.append((node.lineno, tuple(a.name.split(".")[1:])))
    return found


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_unit_has_a_layer() -> None:
    units = {_unit(p.relative_to(PACKAGE).with_suffix("").parts) for p in _modules()}
    units.discard("__init__")
    assert units <= set(LAYERS), units - set(LAYERS)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_down(path: Path) -> None:
    rel = path.relative_to(PACKAGE).with_suffix("").parts
    own = "iqk_rs" if rel == ("__init__",) else _unit(rel)
    upward = []
    for line, target in _imports(path):
        unit = _unit(target)
        if unit == own or (str(path.relative_to(PACKAGE)), unit) in ALIASES:
            continue
        if unit not in LAYERS:
            # "from . import x" where x is a name of the package, not a module: the API
            unit = "iqk_rs"
        if LAYERS[unit] >= LAYERS[own]:
            upward.append(f"line {line}: {'.'.join(('iqk_rs',) + target)}")
    assert not upward, f"{path.relative_to(PACKAGE)} ({own}) imports from above: {upward}"


def test_gguf_is_file_io_only() -> None:
    """gguf/ knows nothing of imatrix files, type mixes, recipes, the pipeline or the CLI."""
    above = {u for u, layer in LAYERS.items() if layer > LAYERS["gguf"]}
    for path in sorted((PACKAGE / "gguf").glob("*.py")):
        rel = str(path.relative_to(PACKAGE))
        bad = [t for _, t in _imports(path) if _unit(t) in above and (rel, _unit(t)) not in ALIASES]
        assert not bad, (rel, bad)


def test_pipeline_encodes_through_the_public_api() -> None:
    """The pipeline calls the core directly only for bf16 rows (numpy has no bfloat16 dtype,
    so the public quantize cannot take them)."""
    used = set()
    for path in sorted((PACKAGE / "pipeline").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "_core"
            ):
                used.add(node.attr)
    assert used == {"quantize_half"}
