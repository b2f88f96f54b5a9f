//! Failures of the read path, each classified once by the [`StatusCode`] it carries.

use std::sync::Arc;

use profusion_model::scan::ScanError;
use profusion_model::status::{ErrorExt, StatusCode};

/// A query failure: its status, a message saying what was wrong, and the error underneath, if
/// any (shared, so a failure can be handed to every waiter of a query).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct QueryError {
    pub status: StatusCode,
    pub message: String,
    #[source]
    pub source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl QueryError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            source: None,
        }
    }

    /// A bad selector, time range or limit.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::InvalidArgument, message)
    }

    /// A bug or corrupt data.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::Internal, message)
    }

    /// An error of another crate, classified by its own status.
    pub fn wrap<E: ErrorExt + Send + Sync + 'static>(e: E, message: impl Into<String>) -> Self {
        Self {
            status: e.status_code(),
            message: message.into(),
            source: Some(Arc::new(e)),
        }
    }

    /// A failed head or block scan: unavailable sources can be retried, anything else is ours.
    pub fn from_scan(e: ScanError) -> Self {
        let message = e.to_string();
        Self::wrap(e, message)
    }
}

impl ErrorExt for QueryError {
    fn status_code(&self) -> StatusCode {
        self.status
    }
}

/// The context a retryable failure carries across processes. A plan stage's error reaches the
/// querier through datafusion-distributed, which keeps DataFusion's error variants and a
/// context's text but turns every other error into its message; this context is how a source
/// that could not be reached there still reads as unavailable here.
const UNAVAILABLE_CONTEXT: &str = "unavailable; retry the query";

/// `e`, marked as a retryable failure wherever it is classified (see [`UNAVAILABLE_CONTEXT`]).
pub(crate) fn mark_unavailable(
    e: datafusion::error::DataFusionError,
) -> datafusion::error::DataFusionError {
    e.context(UNAVAILABLE_CONTEXT)
}

/// Whether `e`, or an error under it, was marked by [`mark_unavailable`].
fn marked_unavailable(e: &datafusion::error::DataFusionError) -> bool {
    use datafusion::error::DataFusionError as E;
    let mut error: &dyn std::error::Error = e;
    loop {
        let df = error
            .downcast_ref::<E>()
            .or_else(|| error.downcast_ref::<Arc<E>>().map(Arc::as_ref));
        if let Some(E::Context(context, _)) = df
            && context == UNAVAILABLE_CONTEXT
        {
            return true;
        }
        match error.source() {
            Some(source) => error = source,
            None => return false,
        }
    }
}

impl From<datafusion::error::DataFusionError> for QueryError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        use datafusion::error::DataFusionError as E;
        if marked_unavailable(&e) {
            return Self {
                status: StatusCode::Unavailable,
                message: match e.find_root() {
                    E::External(inner) => inner.to_string(),
                    root => root.to_string(),
                },
                source: Some(Arc::new(e)),
            };
        }
        let (status, message) = match e.find_root() {
            E::ResourcesExhausted(m) => (
                StatusCode::ResourceExhausted,
                format!(
                    "the query needs more memory than its budget (--querier.max-query-memory); \
                     narrow the time range or the selector: {m}"
                ),
            ),
            E::ObjectStore(o) => (StatusCode::Unavailable, format!("object store: {o}")),
            E::External(inner) => {
                if let Some(scan) = inner.downcast_ref::<ScanError>() {
                    (scan.status_code(), scan.to_string())
                } else if let Some(query) = inner.downcast_ref::<QueryError>() {
                    // A read run inside a plan (an analysis function of SQL) keeps its kind.
                    (query.status, query.message.clone())
                } else {
                    (StatusCode::Internal, inner.to_string())
                }
            }
            other => (StatusCode::Internal, other.to_string()),
        };
        Self {
            status,
            message,
            source: Some(Arc::new(e)),
        }
    }
}

impl From<profusion_catalog::CatalogError> for QueryError {
    fn from(e: profusion_catalog::CatalogError) -> Self {
        let message = format!("catalog: {e}");
        Self::wrap(e, message)
    }
}

impl From<profusion_model::tree::TreeError> for QueryError {
    fn from(e: profusion_model::tree::TreeError) -> Self {
        let message = e.to_string();
        Self::wrap(e, message)
    }
}

impl From<crate::selector::SelectorError> for QueryError {
    fn from(e: crate::selector::SelectorError) -> Self {
        Self::invalid(e.to_string())
    }
}

pub type Result<T, E = QueryError> = std::result::Result<T, E>;
