//! Where data lives: local state, the object store and the catalog.

use std::path::PathBuf;

use clap::Args;

/// The data directory, the object store of blocks and the catalog.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Storage")]
pub(crate) struct StorageFlags {
    /// Directory for local state: the WAL, the embedded catalog and the default object store.
    #[arg(
        long = "pyroscopedb.data-path",
        global = true,
        env = "PROFUSION_PYROSCOPEDB_DATA_PATH",
        default_value = "./data"
    )]
    pub(crate) data_path: PathBuf,

    /// Object store URL for blocks (`s3://bucket/prefix`, `gs://...`, `az://...`,
    /// `file:///dir`). Empty means the directory `objects/` under the data path. Credentials
    /// come from the usual environment variables of each cloud (AWS_*, GOOGLE_*, AZURE_*).
    #[arg(
        long = "storage.url",
        global = true,
        env = "PROFUSION_STORAGE_URL",
        default_value = ""
    )]
    pub(crate) storage_url: String,

    /// Catalog URL: `sqlite:<path>` or `postgres://user:pass@host/db`. Empty means
    /// `catalog.db` under the data path.
    #[arg(
        long = "catalog.url",
        global = true,
        env = "PROFUSION_CATALOG_URL",
        default_value = ""
    )]
    pub(crate) catalog_url: String,
}
