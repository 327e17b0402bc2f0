//! The `iqk_rs._core` extension module. Thin: convert arrays, release the GIL, call `ops`.
//! Friendly input handling (dtype conversion, 1-D inputs, names) lives in the Python package.

mod api;
mod errors;

use pyo3::prelude::*;

#[pymodule(gil_used = false)]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    api::register(m)?;
    Ok(())
}
