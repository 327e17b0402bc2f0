//! The one place where `IqkError` becomes a Python exception: the classes are the package's own
//! (`iqk_rs.errors`, pure Python, with one base `IqkError` for everything raised on purpose), so
//! the core's errors and the package's share that base.

use pyo3::exceptions::{PyNotImplementedError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

use crate::error::IqkError;

static VALUE_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static NOT_IMPLEMENTED: PyOnceLock<Py<PyType>> = PyOnceLock::new();

impl From<IqkError> for PyErr {
    fn from(err: IqkError) -> PyErr {
        let (cell, name) = match err {
            IqkError::Unsupported { .. } => (&NOT_IMPLEMENTED, "IqkNotImplementedError"),
            _ => (&VALUE_ERROR, "IqkValueError"),
        };
        let msg = err.to_string();
        Python::attach(|py| match cell.import(py, "iqk_rs.errors", name) {
            Ok(class) => PyErr::from_type(class.clone(), msg),
            // Only if the package's errors module cannot be imported: the builtins they extend.
            Err(_) if name == "IqkNotImplementedError" => PyNotImplementedError::new_err(msg),
            Err(_) => PyValueError::new_err(msg),
        })
    }
}
