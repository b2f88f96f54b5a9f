use profusion_model::scan::ScanError;

/// The class of a query failure; the API maps each to one Connect/gRPC code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryErrorKind {
    /// A bad selector, time range or limit (`invalid_argument`).
    InvalidArgument,
    /// A feature the request asks for that this version lacks (`unimplemented`).
    Unimplemented,
    /// The query needed more memory than its budget (`resource_exhausted`).
    ResourceExhausted,
    /// The catalog or object store could not be reached (`unavailable`).
    Unavailable,
    /// A bug or corrupt data (`internal`).
    Internal,
}

/// A query failure with a message saying what was wrong.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct QueryError {
    pub kind: QueryErrorKind,
    pub message: String,
}

impl QueryError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self {
            kind: QueryErrorKind::InvalidArgument,
            message: message.into(),
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            kind: QueryErrorKind::Internal,
            message: message.into(),
        }
    }
}

impl From<datafusion::error::DataFusionError> for QueryError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        use datafusion::error::DataFusionError as E;
        match e.find_root() {
            E::ResourcesExhausted(m) => Self {
                kind: QueryErrorKind::ResourceExhausted,
                message: format!(
                    "the query needs more memory than its budget (--querier.max-query-memory); \
                     narrow the time range or the selector: {m}"
                ),
            },
            E::ObjectStore(o) => Self {
                kind: QueryErrorKind::Unavailable,
                message: format!("object store: {o}"),
            },
            E::External(inner) => match inner.downcast_ref::<ScanError>() {
                Some(ScanError::Unavailable(m)) => Self {
                    kind: QueryErrorKind::Unavailable,
                    message: m.clone(),
                },
                _ => Self::internal(inner.to_string()),
            },
            other => Self::internal(other.to_string()),
        }
    }
}

impl QueryError {
    /// A failed head or block scan: unavailable sources can be retried, anything else is ours.
    pub fn from_scan(e: ScanError) -> Self {
        match e {
            ScanError::Unavailable(message) => Self {
                kind: QueryErrorKind::Unavailable,
                message,
            },
            other => Self::internal(other.to_string()),
        }
    }
}

impl From<profusion_catalog::CatalogError> for QueryError {
    fn from(e: profusion_catalog::CatalogError) -> Self {
        Self {
            kind: QueryErrorKind::Unavailable,
            message: format!("catalog: {e}"),
        }
    }
}

impl From<profusion_model::tree::TreeError> for QueryError {
    fn from(e: profusion_model::tree::TreeError) -> Self {
        match e {
            profusion_model::tree::TreeError::OverBudget(message) => Self {
                kind: QueryErrorKind::ResourceExhausted,
                message,
            },
            other => Self::internal(other.to_string()),
        }
    }
}

impl From<crate::selector::SelectorError> for QueryError {
    fn from(e: crate::selector::SelectorError) -> Self {
        Self::invalid(e.to_string())
    }
}

pub type Result<T, E = QueryError> = std::result::Result<T, E>;
