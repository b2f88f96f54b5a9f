//! The byte-range cache against a real local object store: every read returns exactly the
//! store's bytes, repeated reads reach the store no more, the memory tier stays within its
//! size, and the disk tier serves a new process without fetching again.

use std::ops::Range;
use std::sync::Arc;

use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload};
use profusion_store_gateway::{CachingStore, RangeCacheConfig, StoreGatewayMetrics};

/// A file of `len` bytes where every byte says where it is.
fn content(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}

async fn origin(dir: &std::path::Path) -> (Arc<dyn ObjectStore>, Vec<(Path, Vec<u8>)>) {
    let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(dir).unwrap());
    let mut files = Vec::new();
    for (i, len) in [1_000_000usize, 37, 300_001].into_iter().enumerate() {
        let path = Path::from(format!("t/blocks/b{i}/samples.parquet"));
        let data = content(len, i as u8);
        store
            .put(&path, PutPayload::from(data.clone()))
            .await
            .unwrap();
        files.push((path, data));
    }
    (store, files)
}

/// Pseudo-random ranges (a fixed sequence), some crossing chunk boundaries, some empty.
fn ranges(len: u64, n: usize, mut state: u64) -> Vec<Range<u64>> {
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let start = (state >> 33) % len;
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let width = (state >> 33) % 200_000;
            start..(start + width).min(len)
        })
        .collect()
}

fn requests(metrics: &StoreGatewayMetrics) -> u64 {
    metrics.object_store_requests()
}

#[tokio::test]
async fn reads_are_the_stores_bytes_and_repeats_stay_in_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let (store, files) = origin(dir.path()).await;
    let metrics = StoreGatewayMetrics::default();
    let cache = CachingStore::new(
        Arc::clone(&store),
        &RangeCacheConfig {
            chunk_bytes: 64 * 1024,
            memory_bytes: 64 << 20,
            disk: None,
        },
        metrics.clone(),
    )
    .unwrap();
    for round in 0..2 {
        let before = requests(&metrics);
        for (i, (path, data)) in files.iter().enumerate() {
            let len = data.len() as u64;
            let asked = ranges(len, 20, i as u64 + 1);
            let got = cache.get_ranges(path, &asked).await.unwrap();
            for (r, bytes) in asked.iter().zip(&got) {
                assert_eq!(
                    bytes.as_ref(),
                    &data[r.start as usize..r.end as usize],
                    "{path} {r:?}"
                );
            }
            // Whole objects, suffixes and offsets through get_opts.
            let whole = cache.get(path).await.unwrap().bytes().await.unwrap();
            assert_eq!(whole.as_ref(), data.as_slice());
            for range in [GetRange::Suffix(8), GetRange::Offset(len / 2)] {
                let expected = store
                    .get_opts(path, GetOptions::new().with_range(Some(range.clone())))
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap();
                let got = cache
                    .get_opts(path, GetOptions::new().with_range(Some(range)))
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap();
                assert_eq!(got, expected);
            }
            assert_eq!(cache.head(path).await.unwrap().size, len);
        }
        let sent = requests(&metrics) - before;
        if round == 0 {
            assert!(sent > 0, "a cold cache fetches");
        } else {
            assert_eq!(sent, 0, "the second round is served from memory");
        }
    }
    // Out of range is an error, as from the store itself.
    let (path, data) = &files[1];
    let past = data.len() as u64 + 1;
    let too_far = 0..past;
    assert!(
        cache
            .get_ranges(path, std::slice::from_ref(&too_far))
            .await
            .is_err()
    );
    assert!(cache.get_range(path, past..past + 1).await.is_err());
}

#[tokio::test]
async fn memory_stays_within_its_limit_and_evicted_chunks_are_fetched_again() {
    let dir = tempfile::tempdir().unwrap();
    let (store, files) = origin(dir.path()).await;
    let metrics = StoreGatewayMetrics::default();
    let chunk = 64 * 1024;
    // Room for four chunks; the first file has sixteen.
    let cache = CachingStore::new(
        store,
        &RangeCacheConfig {
            chunk_bytes: chunk,
            memory_bytes: 4 * chunk as usize,
            disk: None,
        },
        metrics.clone(),
    )
    .unwrap();
    let (path, data) = &files[0];
    let got = cache.get(path).await.unwrap().bytes().await.unwrap();
    assert_eq!(got.as_ref(), data.as_slice());
    let held = metrics
        .cache_bytes()
        .get(&vec![("tier", "memory")])
        .map(|g| g.get())
        .unwrap();
    assert!(held <= 4 * chunk as i64, "{held} bytes held");
    // The first chunk was evicted by the later ones: reading it goes to the store again.
    let before = requests(&metrics);
    assert_eq!(
        cache.get_range(path, 0..10).await.unwrap().as_ref(),
        &data[..10]
    );
    assert_eq!(requests(&metrics) - before, 1);
    // The last one is still there.
    let before = requests(&metrics);
    let end = data.len() as u64;
    cache.get_range(path, end - 10..end).await.unwrap();
    assert_eq!(requests(&metrics) - before, 0);
}

#[tokio::test]
async fn the_disk_tier_serves_a_new_process_and_keeps_to_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let cache_dir = tempfile::tempdir().unwrap();
    let (store, files) = origin(dir.path()).await;
    let chunk = 64 * 1024u64;
    let config = RangeCacheConfig {
        chunk_bytes: chunk,
        memory_bytes: 0,
        disk: Some((cache_dir.path().to_owned(), 64 << 20)),
    };
    let first =
        CachingStore::new(Arc::clone(&store), &config, StoreGatewayMetrics::default()).unwrap();
    for (path, data) in &files {
        let got = first.get(path).await.unwrap().bytes().await.unwrap();
        assert_eq!(got.as_ref(), data.as_slice());
    }
    drop(first);
    // Another process over the same directory: nothing but `head` reaches the store.
    let metrics = StoreGatewayMetrics::default();
    let second = CachingStore::new(Arc::clone(&store), &config, metrics.clone()).unwrap();
    for (path, data) in &files {
        let got = second.get(path).await.unwrap().bytes().await.unwrap();
        assert_eq!(got.as_ref(), data.as_slice());
    }
    assert_eq!(metrics.object_store_requests_of("get"), 0);
    assert_eq!(metrics.object_store_requests_of("head"), files.len() as u64);
    // Reopened with room for three chunks, the directory is cut down to them.
    let small = RangeCacheConfig {
        disk: Some((cache_dir.path().to_owned(), 3 * chunk as usize)),
        ..config
    };
    let _third = CachingStore::new(store, &small, StoreGatewayMetrics::default()).unwrap();
    let on_disk: u64 = std::fs::read_dir(cache_dir.path())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(on_disk <= 3 * chunk, "{on_disk} bytes left on disk");
    assert!(on_disk > 0);
}
