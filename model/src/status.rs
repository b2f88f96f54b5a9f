//! The one classification of failures. Every crate's error says which [`StatusCode`] it is
//! ([`ErrorExt`]), decided where the error is raised; the API maps each code to its Connect
//! name, gRPC number and HTTP status in exactly one place.

/// What kind of failure an error is, for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusCode {
    /// Malformed or invalid input: fix the request.
    InvalidArgument,
    /// A body in a recognized format whose content is corrupt or truncated (a JFR recording,
    /// a speedscope file): Pyroscope answers these 422 on plain HTTP.
    Unprocessable,
    /// The request conflicts with the stored state (an older settings write).
    FailedPrecondition,
    /// No or an invalid tenant, or (with `--auth.enabled`) no, an unknown or a revoked token.
    Unauthenticated,
    /// A valid token that does not allow the request: another tenant's data, or a scope it
    /// lacks.
    PermissionDenied,
    /// A limit on rate, size or memory was hit: retry later or ask for less.
    ResourceExhausted,
    /// The request body is larger than allowed: retrying will not help.
    PayloadTooLarge,
    /// The request body did not arrive in time.
    RequestTimeout,
    /// A format or encoding that exists but is not supported.
    UnsupportedMediaType,
    /// A feature this version lacks.
    Unimplemented,
    /// A dependency (catalog, object store, ingester) cannot be reached: retry.
    Unavailable,
    /// A bug or corrupt data on our side.
    Internal,
}

impl StatusCode {
    /// The gRPC status number of a code (the API's one mapping to the wire uses it).
    pub fn grpc(self) -> u8 {
        match self {
            Self::InvalidArgument | Self::Unprocessable => 3,
            Self::RequestTimeout => 4,
            Self::ResourceExhausted | Self::PayloadTooLarge => 8,
            Self::FailedPrecondition => 9,
            Self::UnsupportedMediaType | Self::Unimplemented => 12,
            Self::PermissionDenied => 7,
            Self::Internal => 13,
            Self::Unavailable => 14,
            Self::Unauthenticated => 16,
        }
    }

    /// The code of a gRPC status a peer of the cluster answered: the inverse of
    /// [`Self::grpc`]. A deadline or a cancellation on the way to the peer, and codes we never
    /// send, are `Unavailable`: the peer may work on a retry.
    pub fn from_grpc(code: i32) -> Self {
        match code {
            3 => Self::InvalidArgument,
            7 => Self::PermissionDenied,
            8 => Self::ResourceExhausted,
            9 => Self::FailedPrecondition,
            12 => Self::Unimplemented,
            13 => Self::Internal,
            16 => Self::Unauthenticated,
            _ => Self::Unavailable,
        }
    }
}

/// An error that knows its [`StatusCode`].
pub trait ErrorExt: std::error::Error {
    fn status_code(&self) -> StatusCode;
}

impl ErrorExt for crate::block::BlockError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Store(_) => StatusCode::Unavailable,
            _ => StatusCode::Internal,
        }
    }
}

impl ErrorExt for crate::scan::ScanError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Unavailable(_) => StatusCode::Unavailable,
            _ => StatusCode::Internal,
        }
    }
}

impl ErrorExt for crate::tenant::TenantIdError {
    fn status_code(&self) -> StatusCode {
        StatusCode::Unauthenticated
    }
}

impl ErrorExt for crate::profile_type::ProfileTypeError {
    fn status_code(&self) -> StatusCode {
        StatusCode::InvalidArgument
    }
}

impl ErrorExt for crate::tree::TreeError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::OverBudget(_) => StatusCode::ResourceExhausted,
            _ => StatusCode::Internal,
        }
    }
}
