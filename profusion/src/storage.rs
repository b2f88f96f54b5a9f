//! The process's local state and object store: the data directory, its lock, and the store
//! blocks are written to.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::prefix::PrefixStore;

use crate::config::StorageFlags;
use crate::error::StartError;

/// An exclusive lock on the data directory, held for the life of the process. Two servers on
/// one directory would replay, flush and delete each other's open WAL segments and lose
/// acknowledged profiles; the second is refused at startup instead. The lock is the kernel's
/// (`flock`), so it goes away with the process however it ends, SIGKILL included.
#[derive(Debug)]
pub(crate) struct DataDirLock {
    _file: std::fs::File,
}

impl DataDirLock {
    const FILE: &str = "profusion.lock";

    /// Creates `dir` if need be and locks it.
    pub(crate) fn acquire(dir: &Path) -> Result<Self, StartError> {
        use std::io::{Read, Seek, Write};
        std::fs::create_dir_all(dir).map_err(local_state("creating data path", dir))?;
        let path = dir.join(Self::FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(local_state("opening", &path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(StartError::DataDirInUse {
                    dir: dir.to_owned(),
                    holder: (!holder.is_empty()).then(|| holder.to_owned()),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(local_state("locking", &path)(e));
            }
        }
        // The holder's pid, for the message a second process prints.
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| write!(file, "{}", std::process::id()))
            .map_err(local_state("writing", &path))?;
        Ok(Self { _file: file })
    }
}

/// The object store of blocks, and its local directory when it is one (uploads are fsynced
/// there).
pub(crate) fn open_store(
    flags: &StorageFlags,
) -> Result<(Arc<dyn ObjectStore>, Option<PathBuf>), StartError> {
    if flags.storage_url.is_empty() {
        return local_store(&flags.data_path.join("objects"));
    }
    let url = url::Url::parse(&flags.storage_url).map_err(StartError::StorageUrl)?;
    if url.scheme() == "file" {
        return local_store(Path::new(url.path()));
    }
    let object_store_error = |source| StartError::ObjectStore {
        url: flags.storage_url.clone(),
        source,
    };
    let (store, prefix) = object_store::parse_url_opts(
        &url,
        std::env::vars().map(|(k, v)| (k.to_ascii_lowercase(), v)),
    )
    .map_err(object_store_error)?;
    let store: Arc<dyn ObjectStore> = if prefix.as_ref().is_empty() {
        Arc::from(store)
    } else {
        Arc::new(PrefixStore::new(store, prefix))
    };
    Ok((store, None))
}

/// The catalog `--catalog.url` names (the embedded SQLite file under the data path when
/// empty).
pub(crate) async fn open_catalog(
    flags: &StorageFlags,
) -> Result<std::sync::Arc<dyn profusion_catalog::Catalog>, StartError> {
    let url = if flags.catalog_url.is_empty() {
        format!("sqlite:{}", flags.data_path.join("catalog.db").display())
    } else {
        flags.catalog_url.clone()
    };
    profusion_catalog::open(&url)
        .await
        .map_err(StartError::Catalog)
}

fn local_store(dir: &Path) -> Result<(Arc<dyn ObjectStore>, Option<PathBuf>), StartError> {
    std::fs::create_dir_all(dir).map_err(local_state("creating", dir))?;
    let dir = dir.canonicalize().map_err(local_state("resolving", dir))?;
    let store =
        LocalFileSystem::new_with_prefix(&dir).map_err(|source| StartError::ObjectStore {
            url: dir.display().to_string(),
            source,
        })?;
    Ok((Arc::new(store), Some(dir)))
}

/// The error of `doing` something to `path`.
fn local_state(doing: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StartError {
    let path = path.to_owned();
    move |source| StartError::LocalState {
        doing,
        path,
        source,
    }
}
