//! The local-disk tier of the byte-range cache: one file per chunk in a directory of its own,
//! named by the chunk's key, bounded by total size. It survives restarts: at start the files
//! already there are taken back, oldest first out.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::lru::Lru;

/// Chunks on local disk.
#[derive(Debug)]
pub(crate) struct DiskTier {
    dir: PathBuf,
    /// Which chunks are on disk and their sizes; the files are the data.
    index: Mutex<Lru<u128, ()>>,
}

impl DiskTier {
    /// Opens (creating) `dir`, taking back the chunks a previous run left there, as many as
    /// `limit_bytes` allows (the most recently written kept), and deleting files that are not
    /// chunks (an interrupted write).
    pub(crate) fn open(dir: &Path, limit_bytes: usize) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let key = name
                .to_str()
                .and_then(|n| n.strip_suffix(".chunk"))
                .and_then(|hex| u128::from_str_radix(hex, 16).ok());
            let meta = entry.metadata()?;
            match key {
                Some(key) if meta.is_file() => {
                    found.push((meta.modified()?, key, meta.len() as usize));
                }
                _ if meta.is_file() => std::fs::remove_file(entry.path())?,
                _ => {}
            }
        }
        found.sort();
        let tier = Self {
            dir: dir.to_owned(),
            index: Mutex::new(Lru::new(limit_bytes)),
        };
        for (_, key, size) in found {
            tier.admit(key, size);
        }
        Ok(tier)
    }

    fn path(&self, key: u128) -> PathBuf {
        self.dir.join(format!("{key:032x}.chunk"))
    }

    /// Records `key` as on disk, deleting the files of what that evicts; how many it evicted.
    fn admit(&self, key: u128, size: usize) -> usize {
        let evicted = self.index.lock().expect("disk index").insert(key, (), size);
        for (old, ()) in &evicted {
            // Gone already is fine: the index is what counts.
            let _ = std::fs::remove_file(self.path(*old));
        }
        evicted.len()
    }

    /// The chunk, if it is on disk and readable. A file that went away or cannot be read is a
    /// miss, and forgotten.
    pub(crate) async fn get(&self, key: u128) -> Option<Bytes> {
        let known = self.index.lock().expect("disk index").get(&key).is_some();
        if !known {
            return None;
        }
        match tokio::fs::read(self.path(key)).await {
            Ok(data) => Some(Bytes::from(data)),
            Err(e) => {
                tracing::warn!(error = %e, "store-gateway disk cache: chunk unreadable, dropped");
                self.index.lock().expect("disk index").remove(&key);
                None
            }
        }
    }

    /// Writes the chunk (to a temporary name, then renamed, so a crash never leaves a partial
    /// chunk under a chunk's name); how many chunks it evicted. A failed write is logged and
    /// the chunk is simply not cached.
    pub(crate) async fn put(&self, key: u128, data: Bytes) -> usize {
        if self.index.lock().expect("disk index").contains(&key) {
            return 0;
        }
        // A name of its own per write: two queries may fetch the same chunk at once.
        static WRITES: AtomicU64 = AtomicU64::new(0);
        let n = WRITES.fetch_add(1, Ordering::Relaxed);
        let (tmp, path) = (self.dir.join(format!("{key:032x}.{n}.tmp")), self.path(key));
        let size = data.len();
        let written = async {
            tokio::fs::write(&tmp, &data).await?;
            tokio::fs::rename(&tmp, &path).await
        }
        .await;
        match written {
            Ok(()) => self.admit(key, size),
            Err(e) => {
                tracing::warn!(error = %e, dir = %self.dir.display(), "store-gateway disk cache: write failed");
                let _ = tokio::fs::remove_file(&tmp).await;
                0
            }
        }
    }

    pub(crate) fn bytes(&self) -> usize {
        self.index.lock().expect("disk index").bytes()
    }
}
