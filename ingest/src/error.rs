//! Failures of the write path, each classified once by the [`StatusCode`] it carries.

use profusion_model::status::{ErrorExt, StatusCode};

/// An ingest failure: its status, a message that says what was wrong and where, and the error
/// underneath, if any.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct IngestError {
    pub status: StatusCode,
    pub message: String,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl IngestError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            source: None,
        }
    }

    /// Malformed or invalid input.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::InvalidArgument, message)
    }

    /// A recording in a known format whose content is corrupt or truncated.
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::Unprocessable, message)
    }

    /// A limit on rate or size was hit.
    pub fn exhausted(message: impl Into<String>) -> Self {
        Self::new(StatusCode::ResourceExhausted, message)
    }

    /// The body is larger than allowed.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PayloadTooLarge, message)
    }

    /// The format exists but is not supported.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UnsupportedMediaType, message)
    }

    /// No ingester, store or catalog could take the write.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::Unavailable, message)
    }

    /// A bug or an I/O failure on our side.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::Internal, message)
    }

    /// Keeps the error underneath (its text is usually in the message already).
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Prefixes the message with where the error happened, e.g. `series[2].samples[0]`.
    pub fn at(mut self, location: impl std::fmt::Display) -> Self {
        self.message = format!("{location}: {}", self.message);
        self
    }
}

impl ErrorExt for IngestError {
    fn status_code(&self) -> StatusCode {
        self.status
    }
}

pub type Result<T, E = IngestError> = std::result::Result<T, E>;
