"""Print what the test suite lacks in the active environment, for scripts/test.sh.

`iqk-rs` when the package itself is not installed; otherwise the requirements of its `test`
extra (or the extra named as the argument: scripts/fuzz.sh asks for `fuzz`), read from the
installed metadata so pyproject.toml stays their one source, that are not installed,
space-separated; nothing when all is there.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata


def missing(extra: str = "test") -> list[str]:
    try:
        requires = metadata.requires("iqk-rs") or []
    except metadata.PackageNotFoundError:
        return ["iqk-rs"]
    out = []
    for req in requires:
        spec, _, marker = req.partition(";")
        if not re.search(rf"""extra\s*==\s*["']{re.escape(extra)}["']""", marker):
            continue
        name = re.match(r"[A-Za-z0-9._-]+", spec.strip()).group(0)
        try:
            metadata.distribution(name)
        except metadata.PackageNotFoundError:
            out.append(spec.strip().replace(" ", ""))
    return out


if __name__ == "__main__":
    print(" ".join(missing(*sys.argv[1:2])))
