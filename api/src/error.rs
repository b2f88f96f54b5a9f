//! The one place where failures become wire status codes: Connect code names, gRPC status
//! numbers and HTTP statuses.

use http::StatusCode;
use profusion_ingest::{ErrorKind, IngestError};

/// Connect / gRPC status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    InvalidArgument,
    /// The request conflicts with the stored state (an older settings write).
    FailedPrecondition,
    Unauthenticated,
    ResourceExhausted,
    Unimplemented,
    Unavailable,
    Internal,
}

impl Code {
    /// The Connect protocol's name of the code.
    pub fn connect_name(self) -> &'static str {
        match self {
            Self::InvalidArgument => "invalid_argument",
            Self::FailedPrecondition => "failed_precondition",
            Self::Unauthenticated => "unauthenticated",
            Self::ResourceExhausted => "resource_exhausted",
            Self::Unimplemented => "unimplemented",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }

    /// The gRPC status number.
    pub fn grpc(self) -> u8 {
        match self {
            Self::InvalidArgument => 3,
            Self::FailedPrecondition => 9,
            Self::ResourceExhausted => 8,
            Self::Unimplemented => 12,
            Self::Internal => 13,
            Self::Unavailable => 14,
            Self::Unauthenticated => 16,
        }
    }
}

/// A request failure: its Connect/gRPC code, the HTTP status plain-HTTP endpoints answer with,
/// and a message saying what was wrong and where.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: Code,
    pub http: StatusCode,
    pub message: String,
}

/// Longest error message sent to a client. Messages quote client input; gRPC carries them in
/// a header, which clients refuse past a few KiB, and nobody reads a 100 KB error.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// `message` cut to [`MAX_MESSAGE_BYTES`] at a character boundary, saying how much was cut.
fn capped(mut message: String) -> String {
    if message.len() > MAX_MESSAGE_BYTES {
        let total = message.len();
        let mut cut = MAX_MESSAGE_BYTES - 48;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str(&format!("... ({total} bytes, truncated)"));
    }
    message
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        let http = match code {
            Code::InvalidArgument | Code::FailedPrecondition => StatusCode::BAD_REQUEST,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self {
            code,
            http,
            message: capped(message.into()),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, message)
    }

    /// Overrides the HTTP status used by plain-HTTP endpoints (413, 415, ...).
    pub fn with_http(mut self, status: StatusCode) -> Self {
        self.http = status;
        self
    }

    /// The HTTP status of a Connect error: the code's, except 413 for a body over the limit
    /// (Connect would answer 429, an invitation to retry what can never succeed) and 408 for a
    /// body not received in time.
    pub fn connect_status(&self) -> StatusCode {
        if matches!(
            self.http,
            StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT
        ) {
            self.http
        } else {
            Self::new(self.code, "").http
        }
    }
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        match e.kind {
            ErrorKind::InvalidArgument => Self::new(Code::InvalidArgument, e.message),
            ErrorKind::ResourceExhausted => Self::new(Code::ResourceExhausted, e.message),
            ErrorKind::TooLarge => Self::new(Code::ResourceExhausted, e.message)
                .with_http(StatusCode::PAYLOAD_TOO_LARGE),
            ErrorKind::Unsupported => Self::new(Code::Unimplemented, e.message)
                .with_http(StatusCode::UNSUPPORTED_MEDIA_TYPE),
            ErrorKind::Unavailable => Self::new(Code::Unavailable, e.message),
            ErrorKind::Internal => Self::new(Code::Internal, e.message),
        }
    }
}

impl axum::response::IntoResponse for ApiError {
    /// Plain-HTTP form: the status and the message as text.
    fn into_response(self) -> axum::response::Response {
        if self.http.is_server_error() {
            tracing::error!(code = self.code.connect_name(), message = %self.message, "request failed");
        } else {
            tracing::debug!(code = self.code.connect_name(), message = %self.message, "request refused");
        }
        (
            self.http,
            [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            self.message + "\n",
        )
            .into_response()
    }
}

impl From<profusion_engine::error::QueryError> for ApiError {
    fn from(e: profusion_engine::error::QueryError) -> Self {
        use profusion_engine::error::QueryErrorKind as K;
        let code = match e.kind {
            K::InvalidArgument => Code::InvalidArgument,
            K::Unimplemented => Code::Unimplemented,
            K::ResourceExhausted => Code::ResourceExhausted,
            K::Unavailable => Code::Unavailable,
            K::Internal => Code::Internal,
        };
        Self::new(code, e.message)
    }
}

impl From<profusion_catalog::CatalogError> for ApiError {
    fn from(e: profusion_catalog::CatalogError) -> Self {
        use profusion_catalog::CatalogError as E;
        match e {
            E::Conflict(m) => Self::new(Code::FailedPrecondition, m),
            E::Limit(m) => Self::new(Code::ResourceExhausted, m),
            other => Self::new(Code::Unavailable, format!("catalog: {other}")),
        }
    }
}
