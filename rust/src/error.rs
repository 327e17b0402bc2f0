//! The crate's one error type. The Python binding maps each variant onto a Python exception
//! in exactly one place (`py::errors`).

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum IqkError {
    /// A type name or id that the registry does not know.
    #[error("unknown quantization type {0:?}; known types: {1}")]
    UnknownType(String, String),

    /// The type is in the registry but this operation is not available for it.
    #[error("{op} is not available for type {qtype}")]
    Unsupported {
        qtype: &'static str,
        op: &'static str,
    },

    /// Array shape or length does not fit what the operation needs.
    #[error("{0}")]
    Shape(String),

    /// A weight or activation that is NaN or infinite.
    #[error("non-finite value {value} in {what} at row {row}, column {col}")]
    NonFinite {
        what: &'static str,
        row: usize,
        col: usize,
        value: f32,
    },

    /// An importance matrix that cannot be used.
    #[error("imatrix: {0}")]
    Imatrix(String),

    /// Any other invalid argument (bad option value, zero threads, ...).
    #[error("{0}")]
    InvalidArgument(String),
}

impl IqkError {
    /// The error as seen by a caller that handed over rows starting at row `first` of a
    /// larger matrix: row numbers become that matrix's.
    pub fn in_rows_from(self, first: usize) -> Self {
        match self {
            IqkError::NonFinite {
                what,
                row,
                col,
                value,
            } => IqkError::NonFinite {
                what,
                row: row + first,
                col,
                value,
            },
            other => other,
        }
    }
}

pub type Result<T> = std::result::Result<T, IqkError>;
