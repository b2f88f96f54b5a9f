//! The store-gateway: how much of the block files it keeps, in memory and on local disk.

use std::path::PathBuf;

use clap::Args;
use profusion_store_gateway::{DEFAULT_CHUNK_BYTES, RangeCacheConfig, StoreGatewayConfig};

/// The store-gateway role.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Store-gateway")]
pub(crate) struct StoreGatewayFlags {
    /// Most bytes of block files (object-store byte ranges) kept in memory; 0 keeps none.
    #[arg(long = "store-gateway.cache.memory-bytes", env = "PROFUSION_STORE_GATEWAY_CACHE_MEMORY_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub(crate) memory_bytes: usize,

    /// Directory of a local-disk tier of the byte-range cache, kept across restarts; none
    /// when unset. Worth it when blocks are in a remote object store.
    #[arg(
        long = "store-gateway.cache.disk-path",
        env = "PROFUSION_STORE_GATEWAY_CACHE_DISK_PATH"
    )]
    pub(crate) disk_path: Option<PathBuf>,

    /// Most bytes the disk tier keeps under --store-gateway.cache.disk-path.
    #[arg(long = "store-gateway.cache.disk-bytes", env = "PROFUSION_STORE_GATEWAY_CACHE_DISK_BYTES", default_value_t = 10 * 1024 * 1024 * 1024)]
    pub(crate) disk_bytes: usize,

    /// Most bytes of decoded Parquet footers and page indexes kept in memory; 0 keeps none.
    #[arg(long = "store-gateway.metadata-cache-bytes", env = "PROFUSION_STORE_GATEWAY_METADATA_CACHE_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub(crate) metadata_bytes: usize,
}

impl StoreGatewayFlags {
    pub(crate) fn config(&self) -> StoreGatewayConfig {
        StoreGatewayConfig {
            ranges: RangeCacheConfig {
                chunk_bytes: DEFAULT_CHUNK_BYTES,
                memory_bytes: self.memory_bytes,
                disk: self
                    .disk_path
                    .as_ref()
                    .map(|dir| (dir.clone(), self.disk_bytes)),
            },
            metadata_bytes: self.metadata_bytes,
        }
    }
}
