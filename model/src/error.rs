//! The model crate's error type.

use thiserror::Error;

/// Errors from building, loading, training or evaluating a model.
#[derive(Debug, Error)]
pub enum ModelError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A model or checkpoint file is damaged or not a tfc model.
    #[error("invalid model file: {0}")]
    BadFile(String),
    /// The file is valid but does not fit what was asked of it.
    #[error("model mismatch: {0}")]
    Mismatch(String),
    /// Data could not be read or does not fit the model.
    #[error("data: {0}")]
    Data(String),
    /// Bad arguments or configuration.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl ModelError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}

/// Result with [`ModelError`].
pub type Result<T> = std::result::Result<T, ModelError>;
