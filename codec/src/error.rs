//! The one error type of the codec library, split by cause.

use thiserror::Error;

/// Everything that can go wrong while loading a model, encoding or decoding.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CodecError {
    /// Reading or writing bytes failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The compressed file is damaged, truncated or not a tfc file.
    #[error("corrupt or truncated tfc data: {0}")]
    Corrupt(String),
    /// The input is valid but this codec cannot represent it.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A size read from untrusted input exceeds a configured limit.
    #[error("limit exceeded: {0}")]
    Limit(String),
    /// The file was coded with a model other than the one supplied.
    #[error("model mismatch: {0}")]
    ModelMismatch(String),
    /// The model file is damaged or does not describe a valid TarFlow.
    #[error("invalid model file: {0}")]
    Model(String),
    /// The model drives values out of the coder's integer range.
    #[error("numeric range exceeded while coding: {0}")]
    Numeric(String),
    /// The caller passed inconsistent arguments.
    #[error("misuse: {0}")]
    Misuse(String),
}

/// Shorthand for results of this crate.
pub type Result<T, E = CodecError> = std::result::Result<T, E>;

pub(crate) fn corrupt(msg: impl Into<String>) -> CodecError {
    CodecError::Corrupt(msg.into())
}
