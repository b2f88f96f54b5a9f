//! Why the process could not start or stop cleanly; `main` prints these and exits non-zero.

use std::net::{AddrParseError, SocketAddr};
use std::path::PathBuf;

use profusion_catalog::CatalogError;
use profusion_ingest::IngestError;

#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    #[error("unknown target {target:?}; known targets: {known}")]
    UnknownTarget { target: String, known: String },
    /// A file or directory of local state could not be used.
    #[error("{doing} {}: {source}", path.display())]
    LocalState {
        doing: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "data directory {} is in use by another profusion process{}: two servers on one data \
         directory would lose data; stop the other one or choose another \
         --pyroscopedb.data-path",
        dir.display(),
        holder.as_ref().map(|pid| format!(" (pid {pid})")).unwrap_or_default()
    )]
    DataDirInUse {
        dir: PathBuf,
        holder: Option<String>,
    },
    #[error("invalid --compactor.block-ranges: {0}")]
    Compactor(String),
    #[error("invalid --storage.url: {0}")]
    StorageUrl(url::ParseError),
    #[error("object store {url}: {source}")]
    ObjectStore {
        url: String,
        source: object_store::Error,
    },
    #[error("opening catalog: {0}")]
    Catalog(CatalogError),
    #[error("loading the access tokens from the catalog: {0}")]
    AccessTokens(CatalogError),
    #[error("starting the ingester: {0}")]
    Ingester(IngestError),
    #[error("starting the query runtime: {0}")]
    QueryRuntime(std::io::Error),
    #[error("starting the plan-stage worker: {0}")]
    StageWorker(datafusion::error::DataFusionError),
    #[error("invalid listen address {address}: {source}")]
    ListenAddress {
        address: String,
        source: AddrParseError,
    },
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ShutdownError {
    #[error("final flush failed: {0}")]
    FinalFlush(IngestError),
}
