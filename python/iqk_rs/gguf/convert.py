"""Deprecated alias of ``iqk_rs.pipeline``, where the model pipeline lives now (it is not GGUF
I/O). The only module of ``iqk_rs.gguf`` that imports from above it (tests/test_layering.py
allows exactly this one); kept for code that followed the README's earlier
``from iqk_rs.gguf.convert import QuantizeOptions, quantize_model``."""

import warnings

from ..pipeline import *  # noqa: F403
from ..pipeline import __all__  # noqa: F401

warnings.warn(
    "iqk_rs.gguf.convert is deprecated; import iqk_rs.pipeline instead",
    DeprecationWarning,
    stacklevel=2,
)
