//! The one place where `IqkError` becomes a Python exception.

use pyo3::create_exception;
use pyo3::exceptions::{PyNotImplementedError, PyValueError};
use pyo3::prelude::*;

use crate::error::IqkError;

create_exception!(
    iqk_rs,
    IqkValueError,
    PyValueError,
    "Invalid input to an iqk_rs operation (shape, values, imatrix, type name, option)."
);

impl From<IqkError> for PyErr {
    fn from(err: IqkError) -> PyErr {
        match err {
            IqkError::Unsupported { .. } => PyNotImplementedError::new_err(err.to_string()),
            _ => IqkValueError::new_err(err.to_string()),
        }
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("IqkValueError", m.py().get_type::<IqkValueError>())
}
