"""Split GGUF models (ggml's ``gguf-split`` convention): read all parts as one, plan shards.

A split model is ``PREFIX-00001-of-0000N.gguf`` ... ``PREFIX-0000N-of-0000N.gguf``; every part
carries ``split.no`` (u16, 0-based), ``split.count`` (u16) and ``split.tensors.count`` (i32, the
tensors of the whole model), and only the first part carries the model's metadata
(ik_llama.cpp ``examples/gguf-split/gguf-split.cpp``, ``llama_split_path``/``llama_split_prefix``
in ``src/llama.cpp``). ``open_model`` opens any one part and maps every part, without copying;
``SplitModel`` offers the ``GGUFReader`` interface the pipeline uses, each tensor read from
its own part.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import IqkKeyError, IqkValueError
from .constants import GGUFValueType
from .ggml_types import rows_to_f32
from .reader import KV, GGUFError, GGUFReader, MetadataAccess, TensorInfo

KEY_NO = "split.no"
KEY_COUNT = "split.count"
KEY_TENSORS = "split.tensors.count"
SPLIT_KEYS = (KEY_NO, KEY_COUNT, KEY_TENSORS)
_KEY_TYPES = {
    KEY_NO: GGUFValueType.UINT16,
    KEY_COUNT: GGUFValueType.UINT16,
    KEY_TENSORS: GGUFValueType.INT32,
}
_SUFFIX = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$")


def split_path(prefix: str | os.PathLike[str], no: int, count: int) -> Path:
    """llama_split_path: the file of part ``no`` (0-based) of ``count``."""
    return Path(f"{prefix}-{no + 1:05d}-of-{count:05d}.gguf")


def split_prefix(path: str | os.PathLike[str], no: int, count: int) -> str | None:
    """llama_split_prefix: PREFIX if ``path`` is named as part ``no`` of ``count``, else None."""
    s = str(path)
    tail = f"-{no + 1:05d}-of-{count:05d}.gguf"
    return s[: -len(tail)] if len(s) > len(tail) and s.endswith(tail) else None


def output_prefix(out: str | os.PathLike[str]) -> str:
    """The prefix of split output files named by OUT.

    llama-quantize --keep-split drops a ``.gguf`` suffix from OUT; OUT may also name the
    first file itself (``PREFIX-00001-of-00003.gguf``), since that is what one loads.
    """
    s = str(out)
    m = _SUFFIX.search(s)
    if m:
        return s[: m.start()]
    return s[: -len(".gguf")] if s.endswith(".gguf") else s


def parse_size(text: str) -> int:
    """--split-max-size as llama-gguf-split reads it: a positive integer and M or G (10^6, 10^9)."""
    m = re.fullmatch(r"\s*(\d+)\s*([MG])\s*", text)
    if not m or int(m.group(1)) <= 0:
        raise IqkValueError(
            f"--split-max-size {text!r}: give a positive whole number of megabytes or "
            "gigabytes, e.g. 500M or 48G (as llama-gguf-split)"
        )
    return int(m.group(1)) * (10**6 if m.group(2) == "M" else 10**9)


def split_info(reader: GGUFReader) -> tuple[int, int, int] | None:
    """(split.no, split.count, split.tensors.count) of a part, or None for a single file."""
    if KEY_COUNT not in reader.kv:
        return None
    values = []
    for key in SPLIT_KEYS:
        kv = reader.kv.get(key)
        if kv is None:
            raise GGUFError(f"{reader.path}: has {KEY_COUNT} but no {key}")
        if kv.vtype != _KEY_TYPES[key]:
            raise GGUFError(
                f"{reader.path}: {key} is {kv.vtype.name.lower()}, "
                f"ggml writes {_KEY_TYPES[key].name.lower()}"
            )
        values.append(int(kv.value))
    no, count, n_tensors = values
    if count < 1 or no >= count or n_tensors < 0:
        raise GGUFError(
            f"{reader.path}: inconsistent split keys: {KEY_NO}={no}, {KEY_COUNT}={count}, "
            f"{KEY_TENSORS}={n_tensors}"
        )
    return no, count, n_tensors


def _comparable(kv: KV) -> Any:
    return kv.value if kv.vtype != GGUFValueType.ARRAY else None


class SplitModel(MetadataAccess):
    """All parts of a split model as one read-only model (metadata from part 1, as ggml).

    Offers what the pipeline uses from ``GGUFReader``: ``kv``, ``get``, ``tensors`` (in
    part order), ``raw``, ``read_rows``, ``array``, ``to_f32``, ``release``, ``alignment``,
    ``path``.
    """

    def __init__(self, parts: Sequence[GGUFReader]):
        self.parts = list(parts)
        first = self.parts[0]
        self.path = first.path
        self.paths = [p.path for p in self.parts]
        self.kv = first.kv
        self.version = first.version
        self.alignment = first.alignment
        self.file_size = sum(p.file_size for p in self.parts)
        self.tensors: dict[str, TensorInfo] = {}
        self._part_of: dict[str, GGUFReader] = {}
        self._part_no: dict[str, int] = {}
        for no, part in enumerate(self.parts):
            for name, t in part.tensors.items():
                if name in self._part_of:
                    raise GGUFError(
                        f"{part.path}: tensor {name!r} is also in {self._part_of[name].path}"
                    )
                self.tensors[name] = t
                self._part_of[name] = part
                self._part_no[name] = no

    def part_index(self, name: str) -> int:
        """0-based index of the part holding tensor ``name``."""
        self._part(name)  # a clear KeyError for an unknown name
        return self._part_no[name]

    def _part(self, name: str) -> GGUFReader:
        try:
            return self._part_of[name]
        except KeyError:
            raise IqkKeyError(f"{self.path}: no tensor named {name!r}") from None

    def tensor(self, name: str) -> TensorInfo:
        return self._part(name).tensor(name)

    def raw(self, name: str) -> np.ndarray:
        return self._part(name).raw(name)

    def read_rows(self, name: str, start: int, stop: int) -> np.ndarray:
        return self._part(name).read_rows(name, start, stop)

    def array(self, name: str) -> np.ndarray:
        return self._part(name).array(name)

    def to_f32(self, name: str, threads: int | None = None) -> np.ndarray:
        t = self.tensor(name)
        return rows_to_f32(self.raw(name), t.type, t.ne[0], threads).reshape(t.shape)

    def release(self, name: str) -> None:
        self._part(name).release(name)

    def close(self) -> None:
        for p in self.parts:
            p.close()

    def __enter__(self) -> SplitModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_model(path: str | os.PathLike[str]) -> GGUFReader | SplitModel:
    """A single GGUF file, or every part of the split model ``path`` belongs to.

    Any part may be given. Every part must exist, be named and numbered as ggml names them,
    agree on ``split.count`` and ``split.tensors.count`` (and on any metadata it repeats from
    part 1), hold distinct tensors, and together hold ``split.tensors.count`` of them.
    """
    given = GGUFReader(path)
    info = split_info(given)
    if info is None or info[1] == 1:  # ggml loads a one-part "split" as a plain file
        return given
    no, count, n_tensors = info
    prefix = split_prefix(given.path, no, count)
    if prefix is None:
        given.close()
        raise GGUFError(
            f"{given.path}: part {no + 1} of a {count}-part split model must be named "
            f"PREFIX-{no + 1:05d}-of-{count:05d}.gguf"
        )
    parts: list[GGUFReader] = []
    try:
        for i in range(count):
            p = split_path(prefix, i, count)
            if i == no:
                part = given
            elif not p.exists():
                raise GGUFError(f"{p}: missing part {i + 1} of {count} of split model {given.path}")
            else:
                part = GGUFReader(p)
            parts.append(part)
            _check_part(part, i, count, n_tensors, parts[0])
        model = SplitModel(parts)
    except BaseException:
        given.close()
        for part in parts:
            part.close()
        raise
    if len(model.tensors) != n_tensors:
        model.close()
        raise GGUFError(
            f"{model.path}: the {count} parts hold {len(model.tensors)} tensors, "
            f"{KEY_TENSORS} says {n_tensors}"
        )
    return model


def _check_part(part: GGUFReader, i: int, count: int, n_tensors: int, first: GGUFReader) -> None:
    info = split_info(part)
    if info is None:
        raise GGUFError(f"{part.path}: not part of a split model (no {KEY_COUNT})")
    no, c, n = info
    if c != count:
        raise GGUFError(f"{part.path}: {KEY_COUNT} is {c}, {first.path} says {count}")
    if no != i:
        raise GGUFError(f"{part.path}: {KEY_NO} is {no}, its name says part {i + 1}")
    if n != n_tensors:
        raise GGUFError(
            f"{part.path}: part of another model ({KEY_TENSORS} {n}, {first.path} says {n_tensors})"
        )
    for key, kv in part.kv.items():
        other = first.kv.get(key)
        if key == KEY_NO or other is None or part is first:
            continue
        if kv.vtype != other.vtype or _comparable(kv) != _comparable(other):
            raise GGUFError(f"{part.path}: part of another model ({key} differs from {first.path})")


# -- output shards ----------------------------------------------------------------------


@dataclass
class Shard:
    """One output file: its path, 0-based number and the tensor names it holds."""

    path: Path
    no: int
    count: int
    names: list[str]


def plan_shards(
    out: str | os.PathLike[str],
    names_sizes: Sequence[tuple[str, int]],
    *,
    keep_split_of: Sequence[int] | None = None,
    max_size: int | None = None,
    max_tensors: int | None = None,
    alignment: int = 32,
) -> list[Shard]:
    """Group tensors (in order) into shards as llama-quantize --keep-split / llama-gguf-split do.

    ``keep_split_of``: each tensor's input part. ``max_tensors``: a new shard every N tensors.
    ``max_size``: a new shard when the padded tensor data would pass it (header not counted, as
    gguf-split); a tensor larger than the limit gets a shard of its own (gguf-split gives up
    when that is the first tensor).
    """
    groups: list[list[str]] = []
    if keep_split_of is not None:
        n = max(keep_split_of, default=0) + 1
        groups = [[] for _ in range(n)]
        for (name, _), part in zip(names_sizes, keep_split_of, strict=True):
            groups[part].append(name)
    elif max_tensors is not None:
        for i, (name, _) in enumerate(names_sizes):
            if i % max_tensors == 0:
                groups.append([])
            groups[-1].append(name)
    elif max_size is not None:
        size = 0
        for name, nbytes in names_sizes:
            padded = -(-nbytes // alignment) * alignment
            if not groups or groups[-1] and size + padded > max_size:
                groups.append([])
                size = 0
            groups[-1].append(name)
            size += padded
    else:
        raise IqkValueError("plan_shards needs keep_split_of, max_size or max_tensors")
    groups = groups or [[]]
    prefix = output_prefix(out)
    return [
        Shard(split_path(prefix, i, len(groups)), i, len(groups), g) for i, g in enumerate(groups)
    ]


def shard_keys(shard: Shard, n_tensors: int, *, single_without_keys: bool = False) -> list[KV]:
    """The split keys gguf-split appends to each file, in its order and types.

    llama-quantize --keep-split of a one-file model writes ``PREFIX-00001-of-00001.gguf``
    without them (``single_without_keys``); llama-gguf-split writes them even then.
    """
    if shard.count <= 1 and single_without_keys:
        return []
    return [
        KV(KEY_NO, GGUFValueType.UINT16, shard.no),
        KV(KEY_COUNT, GGUFValueType.UINT16, shard.count),
        KV(KEY_TENSORS, GGUFValueType.INT32, n_tensors),
    ]
