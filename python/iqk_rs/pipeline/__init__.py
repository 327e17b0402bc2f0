"""The model pipeline: a GGUF model in, a quantized (or dequantized) GGUF model out.

Three layers, each using only those before it and the GGUF I/O package (``iqk_rs.gguf``,
which knows nothing of them):

- ``options``: what a run is asked to do (``QuantizeOptions``, its recipe parsed once,
  ``SplitOptions``) and ``ConvertError``;
- ``plan``: one ``TensorPlan`` per tensor (output type, imatrix, note), chosen by ik's type
  mix (``iqk_rs.mix``) and checked before any work;
- ``encode``: rows converted to their planned type through ``iqk_rs.quantize``;
- ``write``: the planned tensors streamed into the output file(s), a chunk of rows at a time;
- ``model``: the whole-model operations the ``iqk`` CLI calls (``quantize_model``,
  ``dequantize_model``, ``compare_models``) and their ``Report``.
"""

from .encode import encode_rows, f32_to_bf16, f32_to_rows, probe_types, quantize_rows
from .model import (
    Report,
    TensorDiff,
    compare_models,
    dequantize_model,
    quantize_model,
    target_type,
)
from .options import ConvertError, QuantizeOptions, Recipe, SplitOptions, check_recipe
from .plan import (
    EXTRA_OUTPUT_NAME,
    NEEDS_IMATRIX,
    TensorPlan,
    check_architecture,
    imatrix_unused_error,
    plan_quantize,
)
from .write import (
    CHUNK_VALUES_PER_THREAD,
    GGML_QNT_VERSION,
    MIN_CHUNK_VALUES,
    FileSpec,
    OutputFile,
    Progress,
    check_paths,
    chunk_values_for,
    input_parts,
    kept_file,
    output_files,
    output_metadata,
    plan_files,
    read_chunks,
    write_output,
)

__all__ = [
    "CHUNK_VALUES_PER_THREAD",
    "EXTRA_OUTPUT_NAME",
    "GGML_QNT_VERSION",
    "MIN_CHUNK_VALUES",
    "NEEDS_IMATRIX",
    "ConvertError",
    "FileSpec",
    "OutputFile",
    "Progress",
    "QuantizeOptions",
    "Recipe",
    "Report",
    "SplitOptions",
    "TensorDiff",
    "TensorPlan",
    "check_architecture",
    "check_paths",
    "check_recipe",
    "chunk_values_for",
    "compare_models",
    "dequantize_model",
    "encode_rows",
    "f32_to_bf16",
    "f32_to_rows",
    "imatrix_unused_error",
    "input_parts",
    "kept_file",
    "output_files",
    "output_metadata",
    "plan_files",
    "plan_quantize",
    "probe_types",
    "quantize_model",
    "quantize_rows",
    "read_chunks",
    "target_type",
    "write_output",
]
