"""Streaming GGUF v3 writer.

Header, metadata and every tensor's info are written first (sizes are known
from type and shape), then tensor data one tensor - or one chunk of rows - at a
time, so memory stays bounded by the largest chunk, not the model.

The output goes to a hidden temporary file in the destination directory and is
fsync'd and renamed into place (the directory fsync'd too) only by ``commit()``, so after
even a crash the file is complete or absent; any exception (including Ctrl-C) or a
missing commit removes it, so a failed run never leaves a partial model behind.
An output path that is a symlink is followed (its target is replaced, the link
stays); an existing output keeps its permissions (and owner, where allowed); a
device, FIFO or socket is refused rather than replaced by a regular file.

Why not ``gguf.GGUFWriter``: it cannot write empty or nested typed arrays, picks
value types from Python types, and sizes uint8 payloads from its own table
(wrong for ik's KS types). Encoding GGUF metadata is ~50 lines; constants and
value types still come from the ``gguf`` package.
"""

from __future__ import annotations

import os
import stat
import struct
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import IqkError
from .constants import GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUFValueType
from .ggml_types import GGMLType
from .reader import _SCALARS, KV, StringArray


class GGUFWriteError(IqkError, RuntimeError):
    """An output file cannot be written (path, disk space, I/O); the message says which."""


def _pack_string(s: str | bytes) -> bytes:
    b = s if isinstance(s, bytes) else s.encode("utf-8", errors="surrogateescape")
    return struct.pack("<Q", len(b)) + b


def _pack_value(vtype: GGUFValueType, value: Any, sub_type: GGUFValueType | None) -> bytes:
    if vtype in _SCALARS:
        fmt = _SCALARS[vtype][0]
        return struct.pack(fmt, bool(value) if vtype == GGUFValueType.BOOL else value)
    if vtype == GGUFValueType.STRING:
        return _pack_string(value)
    if vtype != GGUFValueType.ARRAY or sub_type is None:
        raise GGUFWriteError(f"cannot encode metadata value of type {vtype!r}")
    head = struct.pack("<IQ", int(sub_type), len(value))
    if sub_type in _SCALARS:
        dt = _SCALARS[sub_type][1]
        return head + np.asarray(value).astype(dt, copy=False).tobytes()
    if sub_type == GGUFValueType.STRING:
        strings = value if isinstance(value, StringArray) else StringArray.of(value)
        return head + strings.raw  # read arrays go back byte for byte
    # nested arrays: items are KV objects carrying their own sub_type
    return head + b"".join(_pack_value(it.vtype, it.value, it.sub_type) for it in value)


def encode_kv(kv: KV) -> bytes:
    try:
        value = _pack_value(kv.vtype, kv.value, kv.sub_type)
    except (struct.error, OverflowError, TypeError, ValueError) as e:
        raise GGUFWriteError(
            f"metadata key {kv.key!r}: cannot store {kv.value!r:.60} as {kv.vtype.name}: {e}"
        ) from None
    return _pack_string(kv.key) + struct.pack("<I", int(kv.vtype)) + value


def _fsync_directory(directory: Path) -> None:
    """Make a rename durable: after a crash the file is there, complete, or not at all."""
    try:
        fd = os.open(directory if str(directory) else ".", os.O_RDONLY)
    except OSError:
        return  # e.g. Windows, where directories cannot be opened; the rename stands
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_SPECIAL = (
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
    (stat.S_ISFIFO, "FIFO"),
    (stat.S_ISSOCK, "socket"),
)


def resolve_output(path: str | os.PathLike[str]) -> Path:
    """The file that writing ``path`` replaces: symlinks followed, anything but a file refused.

    Renaming a finished file over a device, FIFO or socket would silently replace it
    (run as root, ``/dev/null`` itself), so those are errors, as is a directory.
    """
    p = Path(path)
    try:
        st = os.stat(p)  # follows symlinks, /proc's fd links too
    except FileNotFoundError:
        st = None  # a new file, or a dangling symlink whose target will be created
    except OSError as e:
        raise GGUFWriteError(f"{p}: cannot use as output: {e.strerror or e}") from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise GGUFWriteError(f"{p}: output path is a directory")
        if not stat.S_ISREG(st.st_mode):
            kind = next((k for test, k in _SPECIAL if test(st.st_mode)), "special file")
            raise GGUFWriteError(
                f"{p}: output path is a {kind}, not a regular file; refusing to replace it"
            )
    return Path(os.path.realpath(p))


def take_over_attributes(tmp: Path | str, target: Path) -> None:
    """Give a finished temporary file the mode the output ``target`` should have before it is
    renamed over it: that of the file it replaces, as writing into it would keep (owner too,
    where allowed); else what a plain open() would create.
    """
    resolve_output(target)  # it may have become a FIFO or device meanwhile
    try:
        old = os.stat(target)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        return
    if hasattr(os, "chown"):
        try:
            os.chown(tmp, old.st_uid, old.st_gid)
        except PermissionError:
            pass  # not root: the file is ours, as a new file would be
    os.chmod(tmp, stat.S_IMODE(old.st_mode))


def _pad(n: int, align: int) -> int:
    return -(-n // align) * align


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def check_free_space(path: Path, nbytes: int) -> None:
    """Refuse to start a write that cannot fit (the temporary file sits beside ``path``)."""
    directory = path.parent if str(path.parent) else Path(".")
    try:
        st = os.statvfs(directory)
    except (OSError, AttributeError):  # no statvfs (Windows) or a file system without it
        return
    free = st.f_bavail * st.f_frsize
    if nbytes > free:
        raise GGUFWriteError(
            f"{path}: not enough free space: the output needs {_mib(nbytes)}, "
            f"{directory} has {_mib(free)} free"
        )


@dataclass(frozen=True)
class Layout:
    """Where everything of one GGUF file goes: its header (metadata and tensor infos, padded)
    and each tensor's data, at an absolute offset in the file."""

    header: bytes
    names: list[str]
    nbytes: list[int]
    offsets: list[int]  # from the start of the file
    total_bytes: int


def plan_layout(
    kvs: Iterable[KV],
    tensors: Iterable[tuple[str, GGMLType, tuple[int, ...]]],
    alignment: int = GGUF_DEFAULT_ALIGNMENT,
) -> Layout:
    """The one computation of a file's header and tensor offsets: the stream writer and the
    distributed writer (which writes each tensor's rows at their offset) both use it."""
    if alignment <= 0 or alignment & (alignment - 1):
        raise GGUFWriteError(f"alignment must be a power of two, got {alignment}")
    kvs = list(kvs)
    tensors = list(tensors)
    header = bytearray(struct.pack("<IIQQ", GGUF_MAGIC, 3, len(tensors), len(kvs)))
    for kv in kvs:
        header += encode_kv(kv)
    names, sizes, rel_offsets = [], [], []
    offset = 0
    seen = set()
    for name, gtype, ne in tensors:
        if name in seen:
            raise GGUFWriteError(f"duplicate tensor name {name!r}")
        seen.add(name)
        nbytes = gtype.nbytes(ne)
        header += _pack_string(name) + struct.pack("<I", len(ne))
        header += struct.pack(f"<{len(ne)}Q", *ne) + struct.pack("<IQ", gtype.id, offset)
        names.append(name)
        sizes.append(nbytes)
        rel_offsets.append(offset)
        offset = _pad(offset + nbytes, alignment)
    header += bytes(_pad(len(header), alignment) - len(header))
    return Layout(
        bytes(header), names, sizes, [len(header) + o for o in rel_offsets], len(header) + offset
    )


class GGUFStreamWriter:
    """Write a GGUF file tensor by tensor, in the declared order.

    >>> with GGUFStreamWriter(path, kvs, [("w", f32_type, (4, 2))]) as w:
    ...     w.write_tensor("w", data)
    ...     w.commit()
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        kvs: Iterable[KV],
        tensors: Iterable[tuple[str, GGMLType, tuple[int, ...]]],
        alignment: int = GGUF_DEFAULT_ALIGNMENT,
    ):
        self.path = Path(path)
        self.target = resolve_output(self.path)
        self.alignment = alignment
        layout = plan_layout(kvs, tensors, alignment)
        header = layout.header
        self._plan = list(zip(layout.names, layout.nbytes, strict=True))  # (name, nbytes)
        self.total_bytes = layout.total_bytes
        check_free_space(self.target, self.total_bytes)

        try:
            fd, tmp = tempfile.mkstemp(
                prefix=f".{self.target.name}.", suffix=".partial", dir=self.target.parent
            )
        except OSError as e:
            raise self._io_error(e) from None
        self._tmp = Path(tmp)
        self._f = os.fdopen(fd, "wb")
        self._next = 0  # index into _plan of the tensor being written
        self._written = 0  # bytes of the current tensor so far
        self._done = False
        try:
            self._write(header)
        except BaseException:
            self.abort()
            raise

    def _io_error(self, e: OSError) -> OSError:
        """The same error, naming the output file (a full disk's message names none)."""
        return OSError(e.errno, e.strerror or str(e), str(self.path))

    def _write(self, data: bytes | memoryview) -> None:
        try:
            self._f.write(data)
        except OSError as e:
            raise self._io_error(e) from None

    # -- tensor data -------------------------------------------------------------
    def write_chunk(self, name: str, data: np.ndarray | bytes | memoryview) -> None:
        """Append bytes to tensor ``name`` (which must be the next declared one)."""
        if self._next >= len(self._plan):
            raise GGUFWriteError(f"tensor {name!r} was not declared (all tensors written)")
        want, nbytes = self._plan[self._next]
        if name != want:
            raise GGUFWriteError(f"expected data for tensor {want!r}, got {name!r}")
        if isinstance(data, np.ndarray):
            data = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
        buf = memoryview(data).cast("B")
        n = buf.nbytes
        if self._written + n > nbytes:
            raise GGUFWriteError(f"tensor {name!r}: got more than its {nbytes} bytes")
        self._write(buf)
        self._written += n
        if self._written == nbytes:
            self._write(bytes(_pad(nbytes, self.alignment) - nbytes))
            self._next += 1
            self._written = 0

    def write_tensor(self, name: str, data: np.ndarray | bytes | Iterable[np.ndarray]) -> None:
        """Write a whole tensor, given as one buffer or an iterable of row chunks."""
        if isinstance(data, (np.ndarray, bytes, bytearray, memoryview)):
            data = [data]
        start = self._next
        for chunk in data:
            self.write_chunk(name, chunk)
        if self._next == start:
            want = self._plan[start][1]
            raise GGUFWriteError(f"tensor {name!r}: got {self._written} of {want} bytes")

    # -- finishing -----------------------------------------------------------------
    def commit(self) -> Path:
        if self._next != len(self._plan):
            missing = self._plan[self._next][0]
            self.abort()
            raise GGUFWriteError(f"cannot finish {self.path}: tensor {missing!r} was not written")
        try:
            # buffered data reaches the disk here: a full disk may only show now
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
            self._take_over_attributes()
            os.replace(self._tmp, self.target)
        except OSError as e:
            self.abort()
            raise self._io_error(e) from None
        except BaseException:
            self.abort()
            raise
        self._done = True
        _fsync_directory(self.target.parent)
        return self.path

    def _take_over_attributes(self) -> None:
        take_over_attributes(self._tmp, self.target)

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        try:
            self._f.close()
        except OSError:
            pass  # flushing to a full disk fails again; the file is discarded anyway
        finally:
            try:
                self._tmp.unlink()
            except FileNotFoundError:
                pass

    def __enter__(self) -> GGUFStreamWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()  # no-op after a successful commit
