//! The byte-range cache: an object store in front of the real one that keeps what queries read
//! as fixed-size chunks of each file, in memory and optionally on local disk.
//!
//! Block files never change once written (a block is rewritten only under a new id), so a
//! chunk, like an object's metadata, stays good for as long as its file exists: there is
//! nothing to invalidate. A range is served from the chunks covering it; the chunks missing
//! from both tiers are fetched, adjacent ones in one request. Two queries missing the same
//! chunk at the same moment both fetch it: rare, and cheaper than making readers wait on each
//! other.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures_util::stream::{self, BoxStream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    Attributes, CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload,
    PutResult, RenameOptions, Result,
};
use xxhash_rust::xxh3::Xxh3;

use crate::disk::DiskTier;
use crate::lru::Lru;
use crate::metrics::StoreGatewayMetrics;

/// Requests for missing chunks in flight at once, per read.
const FETCH_CONCURRENCY: usize = 8;

/// Objects' metadata kept from `head` requests, by total size of the entries.
const HEAD_CACHE_BYTES: usize = 8 * 1024 * 1024;

/// How the byte-range cache is sized.
#[derive(Debug, Clone)]
pub struct RangeCacheConfig {
    /// Size of the chunks files are cached in: a read fetches whole chunks.
    pub chunk_bytes: u64,
    /// Most bytes kept in memory; 0 keeps none there.
    pub memory_bytes: usize,
    /// The disk tier's directory and most bytes, if there is one.
    pub disk: Option<(std::path::PathBuf, usize)>,
}

impl RangeCacheConfig {
    /// Nothing cached: every read goes to the object store, exactly as asked.
    pub fn disabled() -> Self {
        Self {
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            memory_bytes: 0,
            disk: None,
        }
    }
}

/// Large enough that a column chunk of a block file takes a few requests at most, small enough
/// that a footer read does not pull in much else.
pub const DEFAULT_CHUNK_BYTES: u64 = 256 * 1024;

/// An object store that serves reads through the cache, and counts what reaches the store.
#[derive(Debug)]
pub struct CachingStore {
    inner: Arc<dyn ObjectStore>,
    chunk_bytes: u64,
    memory: Option<Mutex<Lru<u128, Bytes>>>,
    disk: Option<DiskTier>,
    heads: Mutex<Lru<Path, ObjectMeta>>,
    metrics: StoreGatewayMetrics,
}

impl fmt::Display for CachingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CachingStore({})", self.inner)
    }
}

impl CachingStore {
    pub fn new(
        inner: Arc<dyn ObjectStore>,
        config: &RangeCacheConfig,
        metrics: StoreGatewayMetrics,
    ) -> std::io::Result<Self> {
        let disk = match &config.disk {
            Some((dir, bytes)) => {
                let tier = DiskTier::open(dir, *bytes)?;
                metrics.held("disk", tier.bytes());
                Some(tier)
            }
            None => None,
        };
        Ok(Self {
            inner,
            chunk_bytes: config.chunk_bytes.max(1),
            memory: (config.memory_bytes > 0).then(|| Mutex::new(Lru::new(config.memory_bytes))),
            disk,
            heads: Mutex::new(Lru::new(HEAD_CACHE_BYTES)),
            metrics,
        })
    }

    fn caches_ranges(&self) -> bool {
        self.memory.is_some() || self.disk.is_some()
    }

    /// The object's metadata: kept from an earlier request, or asked for now.
    async fn meta(&self, location: &Path) -> Result<ObjectMeta> {
        if let Some(meta) = self.heads.lock().expect("head cache").get(location) {
            return Ok(meta);
        }
        self.metrics.request("head");
        let mut meta = self.inner.head(location).await?;
        // The object asked about, by the name it was asked by: object_store 0.13's prefix
        // store answers `head` with the full path under its prefix, and DataFusion drops a
        // listed file whose location is not under the table's URL (a query over S3 with a
        // prefix in --storage.url found no blocks at all).
        meta.location = location.clone();
        let size = location.as_ref().len() + meta.e_tag.as_ref().map_or(0, String::len) + 64;
        self.heads
            .lock()
            .expect("head cache")
            .insert(location.clone(), meta.clone(), size);
        Ok(meta)
    }

    /// Fetches `ranges` from the object store, each one request.
    async fn fetch(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        stream::iter(ranges.iter().cloned())
            .map(|range| async move {
                self.metrics.request("get");
                let bytes = self.inner.get_range(location, range).await?;
                self.metrics.store_bytes.inc_by(bytes.len() as u64);
                Ok::<_, object_store::Error>(bytes)
            })
            .buffered(FETCH_CONCURRENCY)
            .try_collect()
            .await
    }

    fn key(location: &Path, size: u64, index: u64) -> u128 {
        let mut h = Xxh3::new();
        h.update(location.as_ref().as_bytes());
        h.update(&[0]);
        h.update(&size.to_le_bytes());
        h.update(&index.to_le_bytes());
        h.digest128()
    }

    /// A cached chunk from the fastest tier holding it; found on disk, it is kept in memory too.
    async fn cached_chunk(&self, key: u128) -> Option<Bytes> {
        if let Some(memory) = &self.memory {
            let hit = memory.lock().expect("range cache").get(&key);
            self.metrics.lookup("memory", hit.is_some());
            if hit.is_some() {
                return hit;
            }
        }
        let disk = self.disk.as_ref()?;
        let hit = disk.get(key).await;
        self.metrics.lookup("disk", hit.is_some());
        if let Some(chunk) = &hit {
            self.keep_in_memory(key, chunk.clone());
        }
        hit
    }

    fn keep_in_memory(&self, key: u128, chunk: Bytes) {
        if let Some(memory) = &self.memory {
            let mut memory = memory.lock().expect("range cache");
            let size = chunk.len();
            let evicted = memory.insert(key, chunk, size);
            self.metrics.evicted("memory", evicted.len());
            self.metrics.held("memory", memory.bytes());
        }
    }

    async fn keep(&self, key: u128, chunk: Bytes) {
        self.keep_in_memory(key, chunk.clone());
        if let Some(disk) = &self.disk {
            let evicted = disk.put(key, chunk).await;
            self.metrics.evicted("disk", evicted);
            self.metrics.held("disk", disk.bytes());
        }
    }

    /// The bytes of each of `ranges` (already within the object's `size`), through the cache.
    async fn read(&self, location: &Path, size: u64, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        if !self.caches_ranges() {
            return self.fetch(location, ranges).await;
        }
        let chunk = self.chunk_bytes;
        let needed: BTreeSet<u64> = ranges
            .iter()
            .filter(|r| r.start < r.end)
            .flat_map(|r| r.start / chunk..=(r.end - 1) / chunk)
            .collect();
        let mut chunks: HashMap<u64, Bytes> = HashMap::with_capacity(needed.len());
        let mut missing: Vec<u64> = Vec::new();
        for &index in &needed {
            match self.cached_chunk(Self::key(location, size, index)).await {
                Some(bytes) => {
                    chunks.insert(index, bytes);
                }
                None => missing.push(index),
            }
        }
        // Runs of adjacent missing chunks, one request each.
        let mut runs: Vec<Range<u64>> = Vec::new();
        for &index in &missing {
            match runs.last_mut() {
                Some(run) if run.end == index => run.end = index + 1,
                _ => runs.push(index..index + 1),
            }
        }
        let byte_ranges: Vec<Range<u64>> = runs
            .iter()
            .map(|run| run.start * chunk..(run.end * chunk).min(size))
            .collect();
        let fetched = self.fetch(location, &byte_ranges).await?;
        for (run, bytes) in runs.iter().zip(fetched) {
            for index in run.clone() {
                let start = ((index - run.start) * chunk) as usize;
                let end = (start + chunk as usize).min(bytes.len());
                // A copy of its own, so an evicted chunk frees its memory even when the rest of
                // the request it came with is still held.
                let piece = Bytes::copy_from_slice(&bytes[start..end]);
                self.keep(Self::key(location, size, index), piece.clone())
                    .await;
                chunks.insert(index, piece);
            }
        }
        ranges
            .iter()
            .map(|r| assemble(&chunks, chunk, r.clone(), location))
            .collect()
    }
}

/// The bytes of `range` from the chunks covering it.
fn assemble(
    chunks: &HashMap<u64, Bytes>,
    chunk: u64,
    range: Range<u64>,
    location: &Path,
) -> Result<Bytes> {
    if range.start >= range.end {
        return Ok(Bytes::new());
    }
    let piece = |index: u64| {
        chunks
            .get(&index)
            .ok_or_else(|| object_store::Error::Generic {
                store: "store-gateway",
                source: format!("{location}: chunk {index} missing after its fetch").into(),
            })
    };
    let (first, last) = (range.start / chunk, (range.end - 1) / chunk);
    let within = |index: u64, bytes: &Bytes| {
        let base = index * chunk;
        let start = range.start.max(base) - base;
        let end = (range.end.min(base + chunk) - base).min(bytes.len() as u64);
        start as usize..end as usize
    };
    if first == last {
        let bytes = piece(first)?;
        return Ok(bytes.slice(within(first, bytes)));
    }
    let mut out = BytesMut::with_capacity((range.end - range.start) as usize);
    for index in first..=last {
        let bytes = piece(index)?;
        out.extend_from_slice(&bytes[within(index, bytes)]);
    }
    Ok(out.freeze())
}

#[async_trait]
impl ObjectStore for CachingStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.metrics.request("other");
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.metrics.request("other");
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        // Conditional and versioned reads are the store's to answer.
        if options.if_match.is_some()
            || options.if_none_match.is_some()
            || options.if_modified_since.is_some()
            || options.if_unmodified_since.is_some()
            || options.version.is_some()
        {
            self.metrics.request("get");
            return self.inner.get_opts(location, options).await;
        }
        let meta = self.meta(location).await?;
        let range = match &options.range {
            Some(range) => range
                .as_range(meta.size)
                .map_err(|e| object_store::Error::Generic {
                    store: "store-gateway",
                    source: format!("{location}: {e}").into(),
                })?,
            None => 0..meta.size,
        };
        let bytes = if options.head {
            Bytes::new()
        } else {
            self.read(location, meta.size, std::slice::from_ref(&range))
                .await?
                .remove(0)
        };
        Ok(GetResult {
            payload: GetResultPayload::Stream(stream::once(async move { Ok(bytes) }).boxed()),
            meta,
            range,
            attributes: Attributes::new(),
        })
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let meta = self.meta(location).await?;
        if let Some(bad) = ranges.iter().find(|r| r.end > meta.size || r.start > r.end) {
            return Err(object_store::Error::Generic {
                store: "store-gateway",
                source: format!(
                    "{location}: range {}..{} outside the object's {} bytes",
                    bad.start, bad.end, meta.size
                )
                .into(),
            });
        }
        self.read(location, meta.size, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.metrics.request("other");
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.metrics.request("list");
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.metrics.request("list");
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.metrics.request("list");
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.metrics.request("other");
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.metrics.request("other");
        self.inner.rename_opts(from, to, options).await
    }
}
