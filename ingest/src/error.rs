/// The class of an ingest failure; the API layer maps each to one Connect/gRPC code and HTTP
/// status in a single place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Malformed or invalid input (Connect `invalid_argument`, HTTP 400).
    InvalidArgument,
    /// A limit on rate or size was hit (Connect `resource_exhausted`, HTTP 429).
    ResourceExhausted,
    /// The body is larger than allowed (HTTP 413).
    TooLarge,
    /// The format exists but is not supported (HTTP 415).
    Unsupported,
    /// No ingester could take the write (Connect `unavailable`, HTTP 503).
    Unavailable,
    /// A bug or an I/O failure on our side (Connect `internal`, HTTP 500).
    Internal,
}

/// An ingest failure with a message that says what was wrong and where.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct IngestError {
    pub kind: ErrorKind,
    pub message: String,
}

impl IngestError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::InvalidArgument,
            message: message.into(),
        }
    }

    pub fn exhausted(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::ResourceExhausted,
            message: message.into(),
        }
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::TooLarge,
            message: message.into(),
        }
    }

    pub fn unsupported(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Unsupported,
            message: message.into(),
        }
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Unavailable,
            message: message.into(),
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Internal,
            message: message.into(),
        }
    }

    /// Prefixes the message with where the error happened, e.g. `series[2].samples[0]`.
    pub fn at(mut self, location: impl std::fmt::Display) -> Self {
        self.message = format!("{location}: {}", self.message);
        self
    }
}

pub type Result<T, E = IngestError> = std::result::Result<T, E>;
