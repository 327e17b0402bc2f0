"""Text from a model or imatrix file made safe to show: the one place that does it.

Names, keys and string values come from files anyone can craft. Printed raw, control
characters in them can clear the screen, retitle the window or recolour the text, and bytes
that are not UTF-8 make a strict output stream fail. ``printable`` escapes both; callers that
hand text to rich still pass it as plain text (``Text``/``markup=False``), never as markup.
"""

from __future__ import annotations

_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape_char(c: str) -> str:
    cp = ord(c)
    if 0xDC80 <= cp <= 0xDCFF:  # a byte that was not UTF-8, kept by surrogateescape
        return f"\\x{cp - 0xDC00:02x}"
    if c in _NAMED:
        return _NAMED[c]
    if cp <= 0xFF:
        return f"\\x{cp:02x}"
    if cp <= 0xFFFF:
        return f"\\u{cp:04x}"
    return f"\\U{cp:08x}"


def printable(text: str | bytes) -> str:
    """``text`` with control, format and unassigned characters and undecodable bytes escaped.

    Escapes look like Python's (``\\x1b``, ``\\u202e``, ``\\xff`` for a byte that is not
    UTF-8); printable characters, including non-ASCII letters, stay as they are.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", "surrogateescape")
    elif not isinstance(text, str):
        text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape_char(c) for c in text)
