//! The compactor over blocks written by the real ingester, in a real SQLite catalog and a
//! real object-store directory: every profile survives exactly once (replica copies and
//! retried pushes removed), blocks end up aligned to their level's windows with each symbol
//! once, retired files are deleted, and retention removes exactly the expired windows. The
//! expected contents are computed here from the writes, not by the compactor.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type, UInt64Type};
use arrow_array::{Array, RecordBatch};
use futures_util::TryStreamExt;
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use profusion_catalog::{Catalog, SqliteCatalog};
use profusion_compactor::{Compactor, CompactorConfig, CompactorMetrics};
use profusion_ingest::ingester::{Ingester, IngesterClient, IngesterConfig};
use profusion_ingest::metrics::IngestMetrics;
use profusion_model::block::{self, BlockMeta, BlockStore, Table};
use profusion_proto::ingester::v1::{Frame, SeriesProfile, Stack, StackSample, WriteRequest};
use profusion_proto::types::v1::LabelPair;

const HOUR: i64 = 3_600_000_000_000;
/// 2024-01-01T00:00:00Z, on an 8 h boundary.
const BASE: i64 = 1_704_067_200_000_000_000;

/// (fingerprint, time, profile id) → stack hash → value.
type Contents = BTreeMap<(u64, i64, String), BTreeMap<u64, i64>>;

/// Each profile's copies: one per block holding it (or per repeat within a block).
type Copies = BTreeMap<(u64, i64, String), Vec<BTreeMap<u64, i64>>>;

/// Deterministic pseudo-random numbers.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

fn labels(service: &str) -> Vec<LabelPair> {
    [("__name__", "process_cpu"), ("service_name", service)]
        .into_iter()
        .map(|(name, value)| LabelPair {
            name: name.into(),
            value: value.into(),
        })
        .collect()
}

/// Profile `i`: one of three series, a time somewhere in 20 hours, 1 to 4 of 12 stacks.
fn profile(i: u64, rng: &mut Lcg) -> SeriesProfile {
    let series = i % 3;
    let mut stacks: BTreeMap<u64, i64> = BTreeMap::new();
    for _ in 0..=rng.next(4) {
        *stacks.entry(100 + rng.next(12)).or_default() += 1 + rng.next(50) as i64;
    }
    SeriesProfile {
        labels: labels(["api", "web", "db"][series as usize]),
        fingerprint: 1000 + series,
        time_nanos: BASE + rng.next(20 * 60) as i64 * 60_000_000_000 + i as i64,
        duration_nanos: 10_000_000_000,
        period: 10_000_000,
        profile_id: format!("00000000-0000-0000-0000-{i:012}"),
        samples: stacks
            .into_iter()
            .map(|(stack_hash, value)| StackSample {
                stack_hash,
                value,
                span_id: 0,
            })
            .collect(),
    }
}

fn request(tenant: &str, profiles: Vec<SeriesProfile>) -> WriteRequest {
    let hashes: BTreeSet<u64> = profiles
        .iter()
        .flat_map(|p| p.samples.iter().map(|s| s.stack_hash))
        .collect();
    WriteRequest {
        tenant: tenant.into(),
        stacks: hashes
            .into_iter()
            .map(|hash| Stack {
                hash,
                frame_refs: vec![0, (hash % 5) as u32 + 1],
            })
            .collect(),
        frames: (1..=6)
            .map(|id| Frame {
                id,
                function_name: format!("fn{id}"),
                ..Frame::default()
            })
            .collect(),
        profiles,
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    objects: std::path::PathBuf,
    catalog: Arc<dyn Catalog>,
    store: Arc<dyn ObjectStore>,
    _ingester: Arc<Ingester>,
    /// What the blocks must hold once each profile is kept once.
    expected: Contents,
}

impl Fixture {
    /// 60 profiles over 20 hours flushed into blocks of 7 writes each, plus a replica copy of
    /// profile 5 in a later block and profile 9 pushed twice into one block.
    async fn new(tenant: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let objects = dir.path().join("objects");
        std::fs::create_dir_all(&objects).unwrap();
        let catalog: Arc<dyn Catalog> = Arc::new(
            SqliteCatalog::open(dir.path().join("catalog.db"))
                .await
                .unwrap(),
        );
        let store: Arc<dyn ObjectStore> =
            Arc::new(LocalFileSystem::new_with_prefix(&objects).unwrap());
        let ingester = Ingester::open(
            IngesterConfig {
                id: "a".into(),
                wal_dir: dir.path().join("wal"),
                max_block_duration: Duration::from_secs(3600),
                max_head_bytes: usize::MAX,
                head_full_wait: std::time::Duration::from_secs(30),
                flush_check_interval: Duration::from_secs(3600),
                local_store_root: Some(objects.clone()),
                max_series_per_tenant: 0,
            },
            Arc::clone(&store),
            Arc::clone(&catalog),
            IngestMetrics::default(),
        )
        .await
        .unwrap();
        let mut rng = Lcg(7);
        let all: Vec<SeriesProfile> = (0..60).map(|i| profile(i, &mut rng)).collect();
        let expected = all
            .iter()
            .map(|p| {
                (
                    (p.fingerprint, p.time_nanos, p.profile_id.clone()),
                    p.samples.iter().map(|s| (s.stack_hash, s.value)).collect(),
                )
            })
            .collect();
        for (n, chunk) in all.chunks(7).enumerate() {
            let mut writes = chunk.to_vec();
            match n {
                1 => writes.push(all[9].clone()),
                3 => writes.push(all[5].clone()),
                _ => {}
            }
            ingester.write(request(tenant, writes)).await.unwrap();
            ingester.flush().await.unwrap();
        }
        Self {
            _dir: dir,
            objects,
            catalog,
            store,
            _ingester: ingester,
            expected,
        }
    }

    fn compactor(&self, config: CompactorConfig) -> Compactor {
        Compactor::new(
            config,
            Arc::clone(&self.catalog),
            BlockStore {
                store: Arc::clone(&self.store),
                local_root: Some(self.objects.clone()),
            },
            CompactorMetrics::default(),
        )
    }

    async fn live(&self, tenant: &str) -> Vec<BlockMeta> {
        self.catalog
            .blocks(tenant, i64::MIN, i64::MAX)
            .await
            .unwrap()
    }

    async fn table(&self, b: &BlockMeta, table: Table) -> RecordBatch {
        let batches: Vec<RecordBatch> =
            block::read_table(Arc::clone(&self.store), &b.tenant, &b.id, table, 1 << 16)
                .await
                .unwrap()
                .try_collect()
                .await
                .unwrap();
        arrow_select::concat::concat_batches(&table.schema(), &batches).unwrap()
    }

    /// Every live block's contents, each profile once, failing if one is held twice.
    async fn contents(&self, tenant: &str) -> Contents {
        self.copies(tenant)
            .await
            .into_iter()
            .map(|(key, mut copies)| {
                assert_eq!(
                    copies.len(),
                    1,
                    "profile {key:?} is held {} times",
                    copies.len()
                );
                (key, copies.remove(0))
            })
            .collect()
    }

    /// Every live block's profiles, checking that totals match samples, profiles are in
    /// block order, and each block lists the stacks and frames it uses once each (and, once
    /// compacted, nothing else).
    async fn copies(&self, tenant: &str) -> Copies {
        let mut all = Copies::new();
        for b in self.live(tenant).await {
            let mut held = Contents::new();
            let profiles = self.table(&b, Table::Profiles).await;
            let samples = self.table(&b, Table::Samples).await;
            let (fp, time) = (
                profiles.column(2).as_primitive::<UInt64Type>(),
                profiles.column(3).as_primitive::<Int64Type>(),
            );
            let service = profiles.column(0).as_string::<i32>();
            let pid = profiles.column(4).as_string::<i32>();
            let total = profiles.column(7).as_primitive::<Int64Type>();
            let mut keys = Vec::new();
            for r in 0..profiles.num_rows() {
                let key = (fp.value(r), time.value(r), pid.value(r).to_owned());
                held.insert(key.clone(), BTreeMap::new());
                assert!(b.min_time_nanos <= key.1 && key.1 <= b.max_time_nanos);
                keys.push((service.value(r), key, total.value(r)));
            }
            assert!(
                keys.windows(2)
                    .all(|w| (w[0].0, &w[0].1) <= (w[1].0, &w[1].1)),
                "profiles of {} are in block order",
                b.id
            );
            let (s_fp, s_time) = (
                samples.column(2).as_primitive::<UInt64Type>(),
                samples.column(3).as_primitive::<Int64Type>(),
            );
            let s_pid = samples.column(4).as_dictionary::<Int32Type>();
            let s_pids = s_pid.values().as_string::<i32>();
            let (stack, value) = (
                samples.column(5).as_primitive::<UInt64Type>(),
                samples.column(6).as_primitive::<Int64Type>(),
            );
            let mut used = BTreeSet::new();
            for r in 0..samples.num_rows() {
                let key = (
                    s_fp.value(r),
                    s_time.value(r),
                    s_pids.value(s_pid.keys().value(r) as usize).to_owned(),
                );
                let stacks = held.get_mut(&key).expect("a sample of a listed profile");
                *stacks.entry(stack.value(r)).or_default() += value.value(r);
                used.insert(stack.value(r));
            }
            // A profile pushed twice into one block has two rows whose samples interleave:
            // n identical copies, each a 1/n share of the samples under the key.
            let mut rows: BTreeMap<&(u64, i64, String), (i64, i64)> = BTreeMap::new();
            for (_, key, total) in &keys {
                let (n, sum) = rows.entry(key).or_default();
                *n += 1;
                *sum += total;
            }
            for (key, &(n, sum)) in &rows {
                assert_eq!(held[*key].values().sum::<i64>(), sum, "total of {key:?}");
                let copy: BTreeMap<u64, i64> =
                    held[*key].iter().map(|(s, v)| (*s, v / n)).collect();
                for _ in 0..n {
                    all.entry((*key).clone()).or_default().push(copy.clone());
                }
            }
            let stacks = self.table(&b, Table::Stacks).await;
            let listed = stacks.column(0).as_primitive::<UInt64Type>().values();
            assert_eq!(
                listed.to_vec(),
                used.into_iter().collect::<Vec<_>>(),
                "block {} lists exactly the stacks it uses, each once, sorted",
                b.id
            );
            let mut frames_used = BTreeSet::new();
            let lists = stacks.column(1).as_list::<i32>();
            for r in 0..lists.len() {
                let f = lists.value(r);
                frames_used.extend(f.as_primitive::<UInt64Type>().values().iter().copied());
            }
            let frames = self.table(&b, Table::Frames).await;
            let mut frame_ids = frames
                .column(0)
                .as_primitive::<UInt64Type>()
                .values()
                .to_vec();
            if b.compaction_level == 0 {
                // An ingester keeps every frame a write carried, used or not.
                frame_ids.retain(|id| frames_used.contains(id));
            }
            assert_eq!(
                frame_ids,
                frames_used.into_iter().collect::<Vec<_>>(),
                "block {} lists exactly the frames its stacks use, each once, sorted",
                b.id
            );
        }
        all
    }

    /// Block directories in the object store.
    fn stored(&self, tenant: &str) -> BTreeSet<String> {
        std::fs::read_dir(self.objects.join(tenant).join("blocks"))
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn config() -> CompactorConfig {
    CompactorConfig {
        block_ranges: [1, 2, 8].map(|h| Duration::from_secs(h * 3600)).to_vec(),
        compaction_interval: Duration::from_secs(3600),
        deletion_delay: Duration::ZERO,
        retention_period: Duration::ZERO,
        retention_overrides: BTreeMap::new(),
        first_level_wait: Duration::ZERO,
        claim_lease: Duration::from_secs(60),
        owner: "compactor-test".into(),
        fail_after: None,
    }
}

#[tokio::test]
async fn compaction_keeps_every_profile_once_in_aligned_blocks() {
    let f = Fixture::new("t").await;
    let flushed = f.live("t").await;
    assert_eq!(flushed.len(), 9);

    // The raw blocks hold profile 5 twice and profile 9 twice (the second push in the same
    // block shows as a doubled profile row).
    let raw = f.copies("t").await;
    let copies = |c: &Copies, i: usize| {
        c.iter()
            .find(|(k, _)| k.2.ends_with(&format!("{i:012}")))
            .map_or(0, |(_, v)| v.len())
    };
    assert_eq!(
        (copies(&raw, 5), copies(&raw, 9), copies(&raw, 4)),
        (2, 2, 1)
    );

    let compactor = f.compactor(config());
    let mut duplicates = 0;
    for cycle in 0.. {
        assert!(cycle < 10, "compaction converges");
        let report = compactor.run_cycle().await.unwrap();
        assert_eq!(report.failed_jobs, 0);
        duplicates += report.duplicate_profiles;
        // Every step keeps every profile with its samples, and never adds a copy.
        let now = f.copies("t").await;
        assert_eq!(
            now.keys().collect::<Vec<_>>(),
            f.expected.keys().collect::<Vec<_>>()
        );
        for (key, held) in &now {
            assert!(held.len() <= raw[key].len(), "cycle {cycle} copied {key:?}");
            assert!(
                held.iter().all(|s| s == &f.expected[key]),
                "cycle {cycle}: {key:?}"
            );
        }
        if report.jobs == 0 {
            break;
        }
    }
    assert_eq!(duplicates, 2, "the replica copy and the repeated push");
    assert_eq!(f.contents("t").await, f.expected);

    let live = f.live("t").await;
    let mut windows = BTreeMap::new();
    for b in &live {
        assert!(b.compaction_level >= 1, "{b:?}");
        let range = [1, 2, 8][b.compaction_level as usize - 1] * HOUR;
        assert_eq!(
            b.min_time_nanos.div_euclid(range),
            b.max_time_nanos.div_euclid(range),
            "{b:?} lies inside one window of its level"
        );
        assert!(b.lineage.contains_key("ingester-a"));
        *windows
            .entry(b.min_time_nanos.div_euclid(8 * HOUR))
            .or_insert(0) += 1;
    }
    assert!(
        windows.values().all(|&n| n == 1),
        "one block per 8 h window: {windows:?}"
    );
    assert_eq!(
        f.stored("t"),
        live.iter().map(|b| b.id.clone()).collect::<BTreeSet<_>>(),
        "retired blocks' files are gone"
    );
    // Recovery still knows every flushed segment is in a block.
    for b in &flushed {
        let done = f
            .catalog
            .flushed_tenants("ingester-a", b.wal_segment)
            .await
            .unwrap();
        assert!(done.contains("t"), "segment {}", b.wal_segment);
    }
}

#[tokio::test]
async fn retention_removes_exactly_the_expired_windows() {
    let f = Fixture::new("r").await;
    let compactor = f.compactor(config());
    while compactor.run_cycle().await.unwrap().jobs > 0 {}

    // Keep data newer than 10 h after BASE: the [0 h, 8 h) window holds only older profiles.
    let now_nanos = profusion_model::time::now_millis() * 1_000_000;
    let mut retention = config();
    retention.retention_period = Duration::from_secs(1);
    retention.retention_overrides.insert(
        "r".into(),
        Duration::from_nanos((now_nanos - (BASE + 10 * HOUR)) as u64),
    );
    let report = f.compactor(retention).run_cycle().await.unwrap();
    assert_eq!(report.blocks_expired, 1);

    let mut newest: BTreeMap<i64, i64> = BTreeMap::new();
    for (_, t, _) in f.expected.keys() {
        let e = newest.entry(t.div_euclid(8 * HOUR)).or_insert(*t);
        *e = (*e).max(*t);
    }
    let expected: Contents = f
        .expected
        .iter()
        .filter(|((_, t, _), _)| newest[&t.div_euclid(8 * HOUR)] >= BASE + 10 * HOUR)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert!(expected.len() < f.expected.len());
    assert_eq!(f.contents("r").await, expected);
    assert_eq!(f.stored("r").len(), f.live("r").await.len());
}
