"""GGUF v2/v3 reader: memory-mapped, zero-copy tensor views, strict about corrupt files.

The PyPI ``gguf`` reader refuses ik_llama.cpp's type ids in its constructor and
sizes KS tensors without their per-row prefix, so this one parses the container
itself (format: ggml/docs/gguf.md) and sizes tensors with ``ggml_types``.
Every length read from the file is checked against hard limits and against the
bytes actually left, so a truncated or hostile file fails with a message naming
the file and what is wrong instead of a crash or a huge allocation.
"""

from __future__ import annotations

import math
import mmap
import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import IqkError, IqkKeyError
from .constants import GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUFValueType
from .ggml_types import GGMLType, rows_to_f32, type_by_id

# Hard limits. They sit far above anything real models use and far below what
# would let a corrupt header exhaust memory.
MAX_STRING_LEN = 1 << 26  # 64 MiB (chat templates are ~100 KB)
MAX_ARRAY_LEN = 1 << 28
MAX_ARRAY_DEPTH = 3
MAX_KV = 1 << 20
MAX_TENSORS = 1 << 22
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_NAME_LEN = 1024
MAX_ELEMENTS = 1 << 50

_SCALARS: dict[GGUFValueType, tuple[str, np.dtype]] = {
    GGUFValueType.UINT8: ("<B", np.dtype("<u1")),
    GGUFValueType.INT8: ("<b", np.dtype("<i1")),
    GGUFValueType.UINT16: ("<H", np.dtype("<u2")),
    GGUFValueType.INT16: ("<h", np.dtype("<i2")),
    GGUFValueType.UINT32: ("<I", np.dtype("<u4")),
    GGUFValueType.INT32: ("<i", np.dtype("<i4")),
    GGUFValueType.FLOAT32: ("<f", np.dtype("<f4")),
    GGUFValueType.BOOL: ("<?", np.dtype("<u1")),
    GGUFValueType.UINT64: ("<Q", np.dtype("<u8")),
    GGUFValueType.INT64: ("<q", np.dtype("<i8")),
    GGUFValueType.FLOAT64: ("<d", np.dtype("<f8")),
}


class GGUFError(IqkError, ValueError):
    """A file is not a GGUF model this tool can read; the message says why."""


class StringArray(Sequence[str]):
    """A GGUF array of strings kept in its encoded form (u64 length + UTF-8 bytes per item).

    Vocabularies hold 10^5 strings that a quantizing pass only copies: they are checked
    when read, written back byte for byte, and decoded (undecodable bytes kept via
    surrogateescape) only when an item is first asked for.
    """

    __slots__ = ("raw", "_n", "_items")

    def __init__(self, raw: bytes, n: int):
        self.raw = raw
        self._n = n
        self._items: list[str] | None = None

    @classmethod
    def of(cls, items: Sequence[str | bytes]) -> StringArray:
        data = [s if isinstance(s, bytes) else s.encode("utf-8", "surrogateescape") for s in items]
        lengths = np.fromiter(map(len, data), dtype="<u8", count=len(data)).tobytes()
        parts = []
        for k, b in enumerate(data):
            parts += (lengths[8 * k : 8 * k + 8], b)
        return cls(b"".join(parts), len(data))

    def _decoded(self) -> list[str]:
        if self._items is None:
            raw, pos, items = self.raw, 0, []
            for _ in range(self._n):
                (m,) = _U64.unpack_from(raw, pos)
                items.append(str(raw[pos + 8 : pos + 8 + m], "utf-8", "surrogateescape"))
                pos += 8 + m
            self._items = items
        return self._items

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i):  # type: ignore[override]
        return self._decoded()[i]

    def __iter__(self) -> Iterator[str]:
        return iter(self._decoded())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, StringArray):
            return self.raw == other.raw and self._n == other._n
        if isinstance(other, (list, tuple)):
            return self._decoded() == list(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"StringArray({self._n} items, {len(self.raw)} bytes)"


@dataclass
class KV:
    """One metadata entry with its GGUF type, so it can be written back unchanged.

    Arrays of numbers are numpy arrays, arrays of strings are `StringArray`s (sequences of
    str, undecodable bytes kept via surrogateescape), nested arrays are lists of KV.
    """

    key: str
    vtype: GGUFValueType
    value: Any
    sub_type: GGUFValueType | None = None


@dataclass
class TensorInfo:
    name: str
    type: GGMLType
    ne: tuple[int, ...]  # ggml order: ne[0] is the row length
    offset: int  # from the start of the data section
    nbytes: int
    n_dims: int = field(default=0)  # as stored in the file

    @property
    def shape(self) -> tuple[int, ...]:
        """numpy order (outermost first)."""
        return tuple(reversed(self.ne))

    @property
    def n_elements(self) -> int:
        return math.prod(self.ne)  # plain ints: info sums this over 10^5 tensors

    @property
    def nrows(self) -> int:
        return self.n_elements // self.ne[0]

    @property
    def ggml_n_dims(self) -> int:
        """ggml_n_dims: trailing dimensions of size 1 do not count."""
        n = len(self.ne)
        while n > 1 and self.ne[n - 1] == 1:
            n -= 1
        return max(n, 1)


_U64 = struct.Struct("<Q")


def _identity(st: os.stat_result) -> tuple[int, int]:
    """What tells that an open file was changed in place: its size and modification time.

    (A file replaced by a rename does not count: the open descriptor keeps the old one.)
    """
    return st.st_size, st.st_mtime_ns


class _Cursor:
    def __init__(self, buf: memoryview, path: Path):
        self.buf = buf
        self.pos = 0
        self.path = path

    def fail(self, what: str) -> GGUFError:
        return GGUFError(f"{self.path}: {what} (at byte {self.pos})")

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > len(self.buf):
            raise self.fail(
                f"truncated file: {what} needs {n} bytes, {len(self.buf) - self.pos} left"
            )

    def unpack(self, fmt: str, what: str) -> Any:
        size = struct.calcsize(fmt)
        self.need(size, what)
        (v,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return v

    def string(self, what: str, limit: int = MAX_STRING_LEN) -> str:
        n = self.unpack("<Q", f"{what} length")
        self.string_check(n, what, limit)
        s = bytes(self.buf[self.pos : self.pos + n]).decode("utf-8", errors="surrogateescape")
        self.pos += n
        return s

    def strings(self, n: int, what: str) -> StringArray:
        """n strings in a row, checked but not decoded: vocabularies hold 10^5 of them."""
        buf, start, end = self.buf, self.pos, len(self.buf)
        pos = start
        length = _U64.unpack_from
        for i in range(n):
            if pos + 8 > end:
                self.pos = pos
                self.need(8, f"{what}[{i}] length")
            (m,) = length(buf, pos)
            pos += 8
            if m > MAX_STRING_LEN or pos + m > end:
                self.pos = pos
                self.string_check(m, f"{what}[{i}]", MAX_STRING_LEN)
            pos += m
        self.pos = pos
        return StringArray(bytes(buf[start:pos]), n)

    def string_check(self, n: int, what: str, limit: int) -> None:
        if n > limit:
            raise self.fail(f"{what} is {n} bytes long, more than the limit of {limit}")
        self.need(n, what)

    def value(self, vtype: int, what: str, depth: int = 0) -> KV:
        try:
            vt = GGUFValueType(vtype)
        except ValueError:
            raise self.fail(f"{what}: unknown metadata value type {vtype}") from None
        if vt in _SCALARS:
            fmt, _ = _SCALARS[vt]
            return KV(what, vt, self.unpack(fmt, what))
        if vt == GGUFValueType.STRING:
            return KV(what, vt, self.string(what))
        # array
        if depth >= MAX_ARRAY_DEPTH:
            raise self.fail(f"{what}: arrays nested deeper than {MAX_ARRAY_DEPTH}")
        sub = self.unpack("<I", f"{what} array type")
        n = self.unpack("<Q", f"{what} array length")
        if n > MAX_ARRAY_LEN:
            raise self.fail(f"{what}: array of {n} items exceeds the limit of {MAX_ARRAY_LEN}")
        try:
            st = GGUFValueType(sub)
        except ValueError:
            raise self.fail(f"{what}: unknown array item type {sub}") from None
        if st in _SCALARS:
            dt = _SCALARS[st][1]
            self.need(n * dt.itemsize, f"{what} array data")
            arr = np.frombuffer(self.buf, dtype=dt, count=n, offset=self.pos).copy()
            self.pos += n * dt.itemsize
            if st == GGUFValueType.BOOL:
                arr = arr.astype(bool)
            return KV(what, vt, arr, st)
        # strings or nested arrays: each item takes at least 8 bytes
        self.need(n * 8, f"{what} array data")
        if st == GGUFValueType.STRING:
            items: list = self.strings(n, what)
        else:
            items = [self.value(int(st), f"{what}[{i}]", depth + 1) for i in range(n)]
        return KV(what, vt, items, st)


class MetadataAccess:
    """Metadata look-ups over ``self.kv`` (key -> KV), for a file and a split model alike."""

    kv: dict[str, KV]

    def get(self, key: str, default: Any = None) -> Any:
        kv = self.kv.get(key)
        return default if kv is None else kv.value

    @property
    def architecture(self) -> str | None:
        return self.get("general.architecture")


class GGUFReader(MetadataAccess):
    """Open a GGUF file read-only. Tensor data is never copied until asked for."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        if not self.path.exists():
            raise GGUFError(f"{self.path}: no such file")
        if not self.path.is_file():
            raise GGUFError(f"{self.path}: not a regular file")
        size = self.path.stat().st_size
        if size < 24:
            raise GGUFError(f"{self.path}: not a GGUF file ({size} bytes, too short for a header)")
        self._fd: int | None = None
        try:
            self._mm = np.memmap(self.path, dtype=np.uint8, mode="r")
            self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        except OSError as e:
            raise GGUFError(f"{self.path}: cannot read: {e.strerror or e}") from None
        self._identity = _identity(os.fstat(self._fd))
        self.file_size = size
        self.kv: dict[str, KV] = {}
        self.tensors: dict[str, TensorInfo] = {}
        try:
            self._parse(memoryview(self._mm))
        except BaseException:
            self.close()
            raise

    # -- parsing ---------------------------------------------------------------
    def _parse(self, buf: memoryview) -> None:
        c = _Cursor(buf, self.path)
        magic = c.unpack("<I", "magic")
        if magic != GGUF_MAGIC:
            raise GGUFError(f"{self.path}: not a GGUF file (magic {bytes(buf[:4])!r})")
        version = c.unpack("<I", "version")
        if version in (2 << 24, 3 << 24):
            raise GGUFError(f"{self.path}: big-endian GGUF files are not supported")
        if version == 1:
            raise GGUFError(f"{self.path}: GGUF version 1 is obsolete; convert the model again")
        if version not in (2, 3):
            raise GGUFError(f"{self.path}: unsupported GGUF version {version}")
        self.version = version
        n_tensors = c.unpack("<Q", "tensor count")
        n_kv = c.unpack("<Q", "metadata count")
        if n_tensors > MAX_TENSORS:
            raise c.fail(f"tensor count {n_tensors} exceeds the limit of {MAX_TENSORS}")
        if n_kv > MAX_KV:
            raise c.fail(f"metadata count {n_kv} exceeds the limit of {MAX_KV}")

        for i in range(n_kv):
            key = c.string(f"key of metadata entry {i}", MAX_NAME_LEN)
            vtype = c.unpack("<I", f"type of {key!r}")
            kv = c.value(vtype, key)
            kv.key = key
            if key in self.kv:
                raise c.fail(f"duplicate metadata key {key!r}")
            self.kv[key] = kv

        self.alignment = GGUF_DEFAULT_ALIGNMENT
        if "general.alignment" in self.kv:
            a = self.kv["general.alignment"]
            if a.vtype != GGUFValueType.UINT32 or a.value <= 0 or a.value & (a.value - 1):
                raise GGUFError(
                    f"{self.path}: general.alignment must be a power-of-two uint32, got {a.value!r}"
                )
            self.alignment = int(a.value)

        raw = []
        # One struct call per tensor for dims, type and offset: files with 10^5 tensors exist.
        fields = {n: struct.Struct(f"<{n}QIQ") for n in range(1, MAX_DIMS + 1)}
        u32 = struct.Struct("<I").unpack_from
        for i in range(n_tensors):
            name = c.string(f"name of tensor {i}", MAX_NAME_LEN)
            c.need(4, f"dimension count of {name!r}")
            (n_dims,) = u32(buf, c.pos)
            c.pos += 4
            if not 1 <= n_dims <= MAX_DIMS:
                raise c.fail(f"tensor {name!r} has {n_dims} dimensions (1..{MAX_DIMS} allowed)")
            f = fields[n_dims]
            c.need(f.size, f"dimensions, type and offset of {name!r}")
            *ne, tid, offset = f.unpack_from(buf, c.pos)
            c.pos += f.size
            raw.append((name, n_dims, tuple(ne), tid, offset))

        self.data_offset = -(-c.pos // self.alignment) * self.alignment
        if self.data_offset > self.file_size:
            raise GGUFError(f"{self.path}: truncated file: tensor data section is missing")
        data_size = self.file_size - self.data_offset

        for name, n_dims, ne, tid, offset in raw:
            if name in self.tensors:
                raise GGUFError(f"{self.path}: duplicate tensor name {name!r}")
            if any(d < 1 for d in ne):
                raise GGUFError(f"{self.path}: tensor {name!r} has an empty dimension {list(ne)}")
            n_el = 1
            for d in ne:
                n_el *= d
            if n_el > MAX_ELEMENTS:
                raise GGUFError(f"{self.path}: tensor {name!r} is impossibly large {list(ne)}")
            try:
                gtype = type_by_id(tid)
                nbytes = gtype.nbytes(ne)
            except ValueError as e:
                raise GGUFError(f"{self.path}: tensor {name!r}: {e}") from None
            if offset % self.alignment:
                raise GGUFError(
                    f"{self.path}: tensor {name!r} offset {offset} is not a multiple of the "
                    f"alignment {self.alignment}"
                )
            if offset + nbytes > data_size:
                raise GGUFError(
                    f"{self.path}: truncated or corrupt file: tensor {name!r} ({gtype.name}, "
                    f"{list(ne)}) needs bytes {offset}..{offset + nbytes} of a data section of "
                    f"{data_size} bytes"
                )
            self.tensors[name] = TensorInfo(name, gtype, ne, offset, nbytes, n_dims)

        spans = sorted((t.offset, t.offset + t.nbytes, t.name) for t in self.tensors.values())
        for (_, end, a), (start, _, b) in zip(spans, spans[1:], strict=False):
            if start < end:
                raise GGUFError(f"{self.path}: tensors {a!r} and {b!r} overlap")

    # -- access ------------------------------------------------------------------
    def tensor(self, name: str) -> TensorInfo:
        try:
            return self.tensors[name]
        except KeyError:
            raise IqkKeyError(f"{self.path}: no tensor named {name!r}") from None

    def raw(self, name: str) -> np.ndarray:
        """Zero-copy uint8 view of a tensor's rows: shape (nrows, row_bytes)."""
        t = self.tensor(name)
        start = self.data_offset + t.offset
        view = self._mm[start : start + t.nbytes]
        return np.ndarray((t.nrows, t.nbytes // t.nrows), np.uint8, view, 0)

    def array(self, name: str) -> np.ndarray:
        """Zero-copy typed view in numpy order: float types as floats (bf16 as uint16),
        quantized types as uint8 with the last axis in bytes per row."""
        t = self.tensor(name)
        rows = self.raw(name)
        dt = {0: "<f4", 1: "<f2", 30: "<u2", 24: "i1", 25: "<i2", 26: "<i4", 27: "<i8", 28: "<f8"}
        if t.type.id in dt:
            return rows.view(dt[t.type.id]).reshape(t.shape)
        return rows.reshape(*t.shape[:-1], rows.shape[1])

    def check_unchanged(self) -> None:
        """Raise if the file was truncated or rewritten in place since it was opened.

        The mapping then shows other bytes, or none: touching a page past a new end of
        file kills the process with SIGBUS.
        """
        if self._fd is None:
            return
        now = _identity(os.fstat(self._fd))
        if now != self._identity:
            raise GGUFError(
                f"{self.path}: the file changed while it was being read (size {self._identity[0]}"
                f" -> {now[0]} bytes); no output was written - rerun once it is complete"
            )

    def read_rows(self, name: str, start: int, stop: int) -> np.ndarray:
        """A copy of rows ``start:stop`` of a tensor, uint8 (rows, row_bytes).

        Read with pread, not through the mapping, after ``check_unchanged``: a file
        truncated in between gives a short read and this error, not SIGBUS.
        """
        t = self.tensor(name)
        row_bytes = t.nbytes // t.nrows
        buf = np.empty((stop - start, row_bytes), np.uint8)
        self.check_unchanged()
        if not hasattr(os, "preadv"):  # not on Windows, where a mapped file cannot shrink
            buf[:] = self.raw(name)[start:stop]
            return buf
        view = memoryview(buf).cast("B")
        pos, done = self.data_offset + t.offset + start * row_bytes, 0
        while done < view.nbytes:
            n = os.preadv(self._fd, [view[done:]], pos + done)
            if n == 0:
                self.check_unchanged()
                raise GGUFError(f"{self.path}: the file ended early while reading {name!r}")
            done += n
        return buf

    def to_f32(self, name: str, threads: int | None = None) -> np.ndarray:
        """Decode a whole tensor to float32 in numpy order (copies)."""
        t = self.tensor(name)
        return rows_to_f32(self.raw(name), t.type, t.ne[0], threads).reshape(t.shape)

    def release(self, name: str) -> None:
        """Drop a tensor's pages from this process's resident set once it has been used.

        The pages stay in the OS page cache and fault back in if touched again, so
        this is always safe; it keeps the RSS of a whole-model pass near one tensor
        instead of growing to the model size.
        """
        mm = getattr(self._mm, "_mmap", None)
        if mm is None or not hasattr(mm, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
            return
        t = self.tensor(name)
        start = self.data_offset + t.offset
        lo = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE
        hi = (start + t.nbytes) // mmap.PAGESIZE * mmap.PAGESIZE
        if hi > lo:
            try:
                mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
            except (OSError, ValueError):
                pass

    def close(self) -> None:
        # Dropping the reference unmaps once no tensor view is alive any more; closing
        # the mmap explicitly would fail (or worse) while views exist.
        self._mm = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> GGUFReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
