//! `#[pyfunction]` wrappers. Inputs are contiguous numpy arrays of the exact dtype (the Python
//! package converts); outputs are numpy arrays that take over the Rust buffers without copying.
//! Every heavy call runs with the GIL released.

use numpy::{
    IntoPyArray, PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2,
    PyUntypedArrayMethods,
};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::error::IqkError;
use crate::iqk::best::Objective;
use crate::iqk::iq2_ks::Iq2KsSearch;
use crate::ops::{self, QuantizeOptions, Weights};
use crate::registry::{QuantType, TYPES};
use crate::widen::HalfFormat;

/// A type given as a name (any case) or a ggml id.
#[derive(FromPyObject)]
enum TypeArg {
    Id(u32),
    Name(String),
}

fn resolve(qtype: TypeArg) -> Result<QuantType, IqkError> {
    match qtype {
        TypeArg::Id(id) => QuantType::from_ggml_id(id),
        TypeArg::Name(name) => QuantType::from_name(&name),
    }
}

fn contiguous<'a, T: numpy::Element, D: numpy::ndarray::Dimension>(
    what: &str,
    a: &'a numpy::PyReadonlyArray<'_, T, D>,
) -> Result<&'a [T], IqkError> {
    a.as_slice()
        .map_err(|_| IqkError::Shape(format!("{what} must be a C-contiguous array")))
}

fn reshape2<T: numpy::Element>(
    py: Python<'_>,
    data: Vec<T>,
    rows: usize,
    cols: usize,
) -> PyResult<Bound<'_, PyArray2<T>>> {
    data.into_pyarray(py).reshape([rows, cols])
}

#[pyfunction]
#[pyo3(signature = (x, qtype, imatrix=None, search="ik", threads=None))]
fn quantize<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f32>,
    qtype: TypeArg,
    imatrix: Option<PyReadonlyArray1<'py, f32>>,
    search: &str,
    threads: Option<usize>,
) -> PyResult<Bound<'py, PyArray2<u8>>> {
    let shape = [x.shape()[0], x.shape()[1]];
    let x = Weights::F32(contiguous("x", &x)?);
    quantize_weights(py, x, shape, qtype, imatrix, search, threads)
}

/// `quantize` of f16 or bf16 weights given as their bits: each worker widens a row at a time,
/// so no f32 copy of the tensor is made.
#[pyfunction]
#[pyo3(signature = (bits, format, qtype, imatrix=None, search="ik", threads=None))]
fn quantize_half<'py>(
    py: Python<'py>,
    bits: PyReadonlyArray2<'py, u16>,
    format: &str,
    qtype: TypeArg,
    imatrix: Option<PyReadonlyArray1<'py, f32>>,
    search: &str,
    threads: Option<usize>,
) -> PyResult<Bound<'py, PyArray2<u8>>> {
    let format = half_format(format)?;
    let shape = [bits.shape()[0], bits.shape()[1]];
    let x = Weights::Half(format, contiguous("bits", &bits)?);
    quantize_weights(py, x, shape, qtype, imatrix, search, threads)
}

/// The `search` option: ik's bytes (`"ik"`/`"fast"`, `"ik-exhaustive"`/`"exhaustive"`, the
/// two IQ2_KS searches) or the lower-error search (`"best"`, minimising each type's measured
/// objective; `"best-plain"` and `"best-ik-weights"` fix the objective to the plain-imatrix
/// or ik's weighted error for every type).
fn parse_search(name: &str) -> PyResult<(Iq2KsSearch, Option<Objective>)> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "ik" | "fast" => (Iq2KsSearch::Fast, None),
        "ik-exhaustive" | "exhaustive" => (Iq2KsSearch::Exhaustive, None),
        "best" => (Iq2KsSearch::Fast, Some(Objective::PerType)),
        "best-plain" => (Iq2KsSearch::Fast, Some(Objective::PlainImatrix)),
        "best-ik-weights" => (Iq2KsSearch::Fast, Some(Objective::IkWeights)),
        other => {
            return Err(IqkError::InvalidArgument(format!(
                "search must be 'ik' (or 'fast'), 'ik-exhaustive' (or 'exhaustive'), 'best', \
                 'best-plain' or 'best-ik-weights', not {other:?}"
            ))
            .into())
        }
    })
}

fn quantize_weights<'py>(
    py: Python<'py>,
    x: Weights<'_>,
    [nrows, n_per_row]: [usize; 2],
    qtype: TypeArg,
    imatrix: Option<PyReadonlyArray1<'py, f32>>,
    search: &str,
    threads: Option<usize>,
) -> PyResult<Bound<'py, PyArray2<u8>>> {
    let qtype = resolve(qtype)?;
    let (iq2ks_search, best) = parse_search(search)?;
    let im = match &imatrix {
        Some(a) => Some(contiguous("imatrix", a)?),
        None => None,
    };
    if nrows == 0 && n_per_row == 0 {
        return reshape2(py, Vec::new(), 0, 0); // an empty 1-D input: no rows at all
    }
    // Checked even when there are no rows: (0, 100) has rows no type can hold.
    let row_size = ops::check_row_length(qtype, n_per_row)?;
    if nrows == 0 {
        return reshape2(py, Vec::new(), 0, row_size);
    }
    let opts = QuantizeOptions {
        iq2ks_search,
        best,
        threads,
    };
    // In pieces, so that Ctrl-C is noticed within a fraction of a second, not when a
    // minute-long call returns. Rows are independent: the pieces give the same bytes.
    let mut out = vec![0u8; nrows * row_size];
    let piece = ops::rows_per_piece(qtype, n_per_row, im.is_some()).unwrap_or(nrows);
    for (k, out_piece) in out.chunks_mut(piece * row_size).enumerate() {
        let rows = k * piece..(k * piece + piece).min(nrows);
        let first = rows.start;
        let x_piece = x.rows(rows, n_per_row);
        py.detach(|| ops::quantize_into(qtype, x_piece, n_per_row, im, &opts, out_piece))
            .map_err(|e| e.in_rows_from(first))?;
        py.check_signals()?;
    }
    reshape2(py, out, nrows, row_size)
}

fn half_format(format: &str) -> Result<HalfFormat, IqkError> {
    HalfFormat::from_name(format).ok_or_else(|| {
        IqkError::InvalidArgument(format!("format must be 'f16' or 'bf16', not {format:?}"))
    })
}

#[pyfunction]
#[pyo3(signature = (bits, format, threads=None))]
fn widen_to_f32<'py>(
    py: Python<'py>,
    bits: PyReadonlyArray2<'py, u16>,
    format: &str,
    threads: Option<usize>,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let fmt = half_format(format)?;
    let [nrows, ncols] = [bits.shape()[0], bits.shape()[1]];
    let data = contiguous("bits", &bits)?;
    let out = py.detach(|| ops::widen_to_f32(fmt, data, threads))?;
    reshape2(py, out, nrows, ncols)
}

#[pyfunction]
#[pyo3(signature = (q, qtype, threads=None))]
fn dequantize<'py>(
    py: Python<'py>,
    q: PyReadonlyArray2<'py, u8>,
    qtype: TypeArg,
    threads: Option<usize>,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let qtype = resolve(qtype)?;
    let [nrows, row_bytes] = [q.shape()[0], q.shape()[1]];
    let n_per_row = qtype.n_per_row_for_bytes(row_bytes)?;
    let data = contiguous("q", &q)?;
    if nrows == 0 {
        return reshape2(py, Vec::new(), 0, n_per_row);
    }
    let out = py.detach(|| ops::dequantize(qtype, data, row_bytes, threads))?;
    reshape2(py, out, nrows, n_per_row)
}

#[pyfunction]
fn quantize_q8_k<'py>(
    py: Python<'py>,
    x: PyReadonlyArray1<'py, f32>,
) -> PyResult<Bound<'py, PyArray1<u8>>> {
    let data = contiguous("x", &x)?;
    let out = py.detach(|| ops::quantize_q8_k(data))?;
    Ok(out.into_pyarray(py))
}

#[pyfunction]
#[pyo3(signature = (q, qtype, a8, threads=None))]
fn vec_dot<'py>(
    py: Python<'py>,
    q: PyReadonlyArray2<'py, u8>,
    qtype: TypeArg,
    a8: PyReadonlyArray1<'py, u8>,
    threads: Option<usize>,
) -> PyResult<Bound<'py, PyArray1<f32>>> {
    let qtype = resolve(qtype)?;
    let row_bytes = q.shape()[1];
    let (data, act) = (contiguous("q", &q)?, contiguous("a8", &a8)?);
    qtype.n_per_row_for_bytes(row_bytes)?;
    let out = py.detach(|| ops::vec_dot(qtype, data, row_bytes, act, threads))?;
    Ok(out.into_pyarray(py))
}

#[pyfunction]
#[pyo3(signature = (q, qtype, x, threads=None))]
fn matvec<'py>(
    py: Python<'py>,
    q: PyReadonlyArray2<'py, u8>,
    qtype: TypeArg,
    x: PyReadonlyArray1<'py, f32>,
    threads: Option<usize>,
) -> PyResult<Bound<'py, PyArray1<f32>>> {
    let qtype = resolve(qtype)?;
    let row_bytes = q.shape()[1];
    let (data, act) = (contiguous("q", &q)?, contiguous("x", &x)?);
    qtype.n_per_row_for_bytes(row_bytes)?;
    let out = py.detach(|| ops::matvec(qtype, data, row_bytes, act, threads))?;
    Ok(out.into_pyarray(py))
}

#[pyfunction]
#[pyo3(signature = (q, qtype, x, threads=None))]
fn matmul<'py>(
    py: Python<'py>,
    q: PyReadonlyArray2<'py, u8>,
    qtype: TypeArg,
    x: PyReadonlyArray2<'py, f32>,
    threads: Option<usize>,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let qtype = resolve(qtype)?;
    let [nrows, row_bytes] = [q.shape()[0], q.shape()[1]];
    let [batch, n_in] = [x.shape()[0], x.shape()[1]];
    let n_per_row = qtype.n_per_row_for_bytes(row_bytes)?;
    if n_in != n_per_row {
        return Err(IqkError::Shape(format!(
            "x has rows of {n_in} values but the weight rows have {n_per_row}"
        ))
        .into());
    }
    let (data, act) = (contiguous("q", &q)?, contiguous("x", &x)?);
    let out = py.detach(|| ops::matmul(qtype, data, row_bytes, act, threads))?;
    reshape2(py, out, batch, nrows)
}

/// The widest SIMD path in use (`scalar`, `avx2`, `avx512`, `neon`): the forced one, else the
/// CPU's widest.
#[pyfunction]
fn simd_path() -> &'static str {
    crate::simd::active_path().name()
}

/// Per type and kernel shape, the path the dot products run on and why (calibrating every
/// (type, shape) not yet used).
#[pyfunction]
fn simd_info(py: Python<'_>) -> PyResult<Vec<Bound<'_, PyDict>>> {
    use crate::simd::{choice, DotType, Shape};
    let mut out = Vec::new();
    for kind in DotType::ALL {
        for shape in Shape::ALL {
            let c = py.detach(|| choice(kind, shape));
            let d = PyDict::new(py);
            d.set_item("type", kind.name())?;
            d.set_item("shape", shape.name())?;
            d.set_item("path", c.path.name())?;
            d.set_item("how", c.how.name())?;
            let names: Vec<&str> = c.candidates.iter().map(|p| p.name()).collect();
            d.set_item("candidates", names)?;
            let timings = PyDict::new(py);
            for (p, ns) in &c.timings_ns {
                timings.set_item(p.name(), ns)?;
            }
            d.set_item("timings_ns", timings)?;
            d.set_item("calibration_ns", c.cost_ns)?;
            out.push(d);
        }
    }
    Ok(out)
}

#[pyfunction]
fn row_size(qtype: TypeArg, n_per_row: usize) -> PyResult<usize> {
    Ok(resolve(qtype)?.row_size(n_per_row)?)
}

/// The registry as a list of dicts: the source the Python `QuantType` is generated from.
#[pyfunction]
fn type_table(py: Python<'_>) -> PyResult<Vec<Bound<'_, PyDict>>> {
    TYPES
        .iter()
        .map(|t| {
            let d = PyDict::new(py);
            d.set_item("name", t.name)?;
            d.set_item("ggml_id", t.ggml_id)?;
            d.set_item("llama_ftype", t.llama_ftype)?;
            d.set_item("block_size", t.block_size)?;
            d.set_item("type_size", t.type_size)?;
            d.set_item("row_meta_size", t.row_meta_size)?;
            d.set_item("bits_per_weight", t.bits_per_weight())?;
            d.set_item("is_iqk", t.is_iqk)?;
            Ok(d)
        })
        .collect()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(quantize, m)?)?;
    m.add_function(wrap_pyfunction!(quantize_half, m)?)?;
    m.add_function(wrap_pyfunction!(dequantize, m)?)?;
    m.add_function(wrap_pyfunction!(widen_to_f32, m)?)?;
    m.add_function(wrap_pyfunction!(quantize_q8_k, m)?)?;
    m.add_function(wrap_pyfunction!(vec_dot, m)?)?;
    m.add_function(wrap_pyfunction!(matvec, m)?)?;
    m.add_function(wrap_pyfunction!(matmul, m)?)?;
    m.add_function(wrap_pyfunction!(simd_path, m)?)?;
    m.add_function(wrap_pyfunction!(simd_info, m)?)?;
    m.add_function(wrap_pyfunction!(row_size, m)?)?;
    m.add_function(wrap_pyfunction!(type_table, m)?)?;
    Ok(())
}
