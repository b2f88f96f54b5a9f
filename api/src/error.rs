//! The one place where failures become wire status codes: Connect code names, gRPC status
//! numbers and HTTP statuses.

use http::StatusCode as HttpStatus;
use profusion_model::status::ErrorExt;
/// Status codes, as every crate classifies its errors.
pub use profusion_model::status::StatusCode as Code;

// The wire forms of each [`Code`]: the one mapping to Connect, gRPC and HTTP.

/// The Connect protocol's name of a code.
pub fn connect_name(code: Code) -> &'static str {
    match code {
        Code::InvalidArgument | Code::Unprocessable => "invalid_argument",
        Code::FailedPrecondition => "failed_precondition",
        Code::Unauthenticated => "unauthenticated",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted | Code::PayloadTooLarge => "resource_exhausted",
        Code::RequestTimeout => "deadline_exceeded",
        Code::UnsupportedMediaType | Code::Unimplemented => "unimplemented",
        Code::Unavailable => "unavailable",
        Code::Internal => "internal",
    }
}

/// The gRPC status number of a code.
pub fn grpc_status(code: Code) -> u8 {
    code.grpc()
}

/// The HTTP status of a code: `plain` for Pyroscope's plain-HTTP endpoints, else for a
/// Connect error. They differ only for an unsupported media type, which plain HTTP
/// answers 415 and Connect, whose codes have fixed statuses, 501 (`unimplemented`), and for a
/// corrupt recording, which plain HTTP answers 422 as Pyroscope does and Connect 400.
/// A body over the limit is 413 for both (Connect's 429 would invite a retry that can
/// never succeed), a body not received in time 408.
pub fn http_status(code: Code, plain: bool) -> HttpStatus {
    match code {
        Code::Unprocessable if plain => HttpStatus::UNPROCESSABLE_ENTITY,
        Code::InvalidArgument | Code::FailedPrecondition | Code::Unprocessable => {
            HttpStatus::BAD_REQUEST
        }
        Code::Unauthenticated => HttpStatus::UNAUTHORIZED,
        Code::PermissionDenied => HttpStatus::FORBIDDEN,
        Code::ResourceExhausted => HttpStatus::TOO_MANY_REQUESTS,
        Code::PayloadTooLarge => HttpStatus::PAYLOAD_TOO_LARGE,
        Code::RequestTimeout => HttpStatus::REQUEST_TIMEOUT,
        Code::UnsupportedMediaType if plain => HttpStatus::UNSUPPORTED_MEDIA_TYPE,
        Code::UnsupportedMediaType | Code::Unimplemented => HttpStatus::NOT_IMPLEMENTED,
        Code::Unavailable => HttpStatus::SERVICE_UNAVAILABLE,
        Code::Internal => HttpStatus::INTERNAL_SERVER_ERROR,
    }
}

/// A request failure: its code and a message saying what was wrong and where.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: Code,
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
        Self {
            code,
            message: capped(message.into()),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, message)
    }

    /// The HTTP status of a plain-HTTP answer.
    pub fn http_status(&self) -> HttpStatus {
        http_status(self.code, true)
    }

    /// The HTTP status of a Connect error.
    pub fn connect_status(&self) -> HttpStatus {
        http_status(self.code, false)
    }

    /// The error of another crate, with the code it classified itself as.
    pub fn from_error(e: &(impl ErrorExt + ?Sized)) -> Self {
        Self::new(e.status_code(), e.to_string())
    }
}

impl From<profusion_ingest::IngestError> for ApiError {
    fn from(e: profusion_ingest::IngestError) -> Self {
        Self::from_error(&e)
    }
}

impl From<profusion_engine::error::QueryError> for ApiError {
    fn from(e: profusion_engine::error::QueryError) -> Self {
        Self::from_error(&e)
    }
}

impl From<profusion_catalog::CatalogError> for ApiError {
    fn from(e: profusion_catalog::CatalogError) -> Self {
        use profusion_catalog::CatalogError as E;
        // Conflicts and limits are the client's to act on: their own words, without the
        // catalog's prefix.
        let code = e.status_code();
        match e {
            E::Conflict(m) | E::Limit(m) => Self::new(code, m),
            other => Self::new(code, format!("catalog: {other}")),
        }
    }
}

impl axum::response::IntoResponse for ApiError {
    /// Plain-HTTP form: the status and the message as text.
    fn into_response(self) -> axum::response::Response {
        let status = self.http_status();
        if status.is_server_error() {
            tracing::error!(code = connect_name(self.code), message = %self.message, "request failed");
        } else {
            tracing::debug!(code = connect_name(self.code), message = %self.message, "request refused");
        }
        (
            status,
            [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            self.message + "\n",
        )
            .into_response()
    }
}
