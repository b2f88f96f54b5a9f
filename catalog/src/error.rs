/// Catalog failures.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("sqlite catalog: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("postgres catalog: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("catalog I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("catalog record is corrupt: {0}")]
    Corrupt(String),
    #[error("conflict: {0}")]
    Conflict(String),
    /// A per-tenant limit on what the catalog keeps.
    #[error("{0}")]
    Limit(String),
    #[error("catalog schema version {found} is newer than this binary supports ({supported})")]
    TooNew { found: i64, supported: i64 },
    #[error("catalog task failed: {0}")]
    Task(String),
}

pub type Result<T, E = CatalogError> = std::result::Result<T, E>;

impl profusion_model::status::ErrorExt for CatalogError {
    fn status_code(&self) -> profusion_model::status::StatusCode {
        use profusion_model::status::StatusCode;
        match self {
            Self::Conflict(_) => StatusCode::FailedPrecondition,
            Self::Limit(_) => StatusCode::ResourceExhausted,
            Self::Corrupt(_) | Self::TooNew { .. } => StatusCode::Internal,
            Self::Sqlite(_) | Self::Postgres(_) | Self::Io(_) | Self::Task(_) => {
                StatusCode::Unavailable
            }
        }
    }
}
