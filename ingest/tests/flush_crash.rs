//! A crash between any two steps of a flush (upload, register, WAL truncation) leaves no loss
//! and no duplicate. Runs the real ingester over a real SQLite catalog and a real object-store
//! directory; the only addition is a catalog that refuses registrations on demand, standing for
//! a process that died before registering.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use object_store::local::LocalFileSystem;
use profusion_catalog::{Catalog, CatalogError, FlushedTenants, Setting, SqliteCatalog};
use profusion_ingest::ingester::{Ingester, IngesterClient, IngesterConfig};
use profusion_ingest::metrics::IngestMetrics;
use profusion_model::block::BlockMeta;
use profusion_model::tombstone::Tombstone;
use profusion_proto::ingester::v1::{Frame, SeriesProfile, Stack, StackSample, WriteRequest};
use profusion_proto::types::v1::LabelPair;

#[derive(Debug)]
struct RefusingCatalog {
    inner: SqliteCatalog,
    refuse: AtomicBool,
}

#[async_trait]
impl Catalog for RefusingCatalog {
    async fn schema_version(&self) -> profusion_catalog::Result<i64> {
        self.inner.schema_version().await
    }
    async fn register_block(&self, block: &BlockMeta) -> profusion_catalog::Result<()> {
        if self.refuse.load(Ordering::SeqCst) {
            return Err(CatalogError::Task("process died before registering".into()));
        }
        self.inner.register_block(block).await
    }
    async fn blocks(&self, t: &str, a: i64, b: i64) -> profusion_catalog::Result<Vec<BlockMeta>> {
        self.inner.blocks(t, a, b).await
    }
    async fn flushed_tenants(
        &self,
        s: &str,
        seg: u64,
    ) -> profusion_catalog::Result<FlushedTenants> {
        self.inner.flushed_tenants(s, seg).await
    }
    async fn tenants(&self) -> profusion_catalog::Result<Vec<String>> {
        self.inner.tenants().await
    }
    async fn settings(&self, t: &str) -> profusion_catalog::Result<Vec<Setting>> {
        self.inner.settings(t).await
    }
    async fn set_setting(
        &self,
        t: &str,
        s: &Setting,
        max: usize,
    ) -> profusion_catalog::Result<Setting> {
        self.inner.set_setting(t, s, max).await
    }
    async fn delete_setting(&self, t: &str, n: &str) -> profusion_catalog::Result<()> {
        self.inner.delete_setting(t, n).await
    }
    async fn create_token(
        &self,
        t: &profusion_catalog::TokenRecord,
    ) -> profusion_catalog::Result<()> {
        self.inner.create_token(t).await
    }
    async fn tokens(
        &self,
        t: Option<&str>,
    ) -> profusion_catalog::Result<Vec<profusion_catalog::TokenRecord>> {
        self.inner.tokens(t).await
    }
    async fn revoke_token(
        &self,
        id: &str,
        t: Option<&str>,
        at: i64,
    ) -> profusion_catalog::Result<Option<profusion_catalog::TokenRecord>> {
        self.inner.revoke_token(id, t, at).await
    }
    async fn heartbeat(
        &self,
        m: &profusion_catalog::RingMember,
    ) -> profusion_catalog::Result<profusion_catalog::RingMember> {
        self.inner.heartbeat(m).await
    }
    async fn ring_members(
        &self,
        r: &str,
    ) -> profusion_catalog::Result<Vec<profusion_catalog::RingMember>> {
        self.inner.ring_members(r).await
    }
    async fn forget_member(&self, r: &str, i: &str) -> profusion_catalog::Result<()> {
        self.inner.forget_member(r, i).await
    }
    async fn claim_blocks(
        &self,
        t: &str,
        ids: &[String],
        owner: &str,
        until: i64,
    ) -> profusion_catalog::Result<bool> {
        self.inner.claim_blocks(t, ids, owner, until).await
    }
    async fn add_pending_blocks(
        &self,
        blocks: &[BlockMeta],
        owner: &str,
        until: i64,
    ) -> profusion_catalog::Result<()> {
        self.inner.add_pending_blocks(blocks, owner, until).await
    }
    async fn replace_blocks(
        &self,
        t: &str,
        added: &[String],
        retired: &[String],
        owner: &str,
    ) -> profusion_catalog::Result<()> {
        self.inner.replace_blocks(t, added, retired, owner).await
    }
    async fn release_claims(&self, owner: &str) -> profusion_catalog::Result<()> {
        self.inner.release_claims(owner).await
    }
    async fn deletable_blocks(&self, before: i64) -> profusion_catalog::Result<Vec<BlockMeta>> {
        self.inner.deletable_blocks(before).await
    }
    async fn mark_deleting(
        &self,
        t: &str,
        ids: &[String],
        before: i64,
    ) -> profusion_catalog::Result<Vec<String>> {
        self.inner.mark_deleting(t, ids, before).await
    }
    async fn forget_blocks(&self, t: &str, ids: &[String]) -> profusion_catalog::Result<()> {
        self.inner.forget_blocks(t, ids).await
    }
    async fn add_tombstone(&self, t: &Tombstone) -> profusion_catalog::Result<Tombstone> {
        self.inner.add_tombstone(t).await
    }
    async fn tombstones(&self, t: &str) -> profusion_catalog::Result<Vec<Tombstone>> {
        self.inner.tombstones(t).await
    }
    async fn expire_tombstones(&self, t: &str, before: i64) -> profusion_catalog::Result<()> {
        self.inner.expire_tombstones(t, before).await
    }
}

fn write(tenant: &str, i: u64) -> WriteRequest {
    WriteRequest {
        tenant: tenant.into(),
        profiles: vec![SeriesProfile {
            labels: vec![
                LabelPair {
                    name: "__name__".into(),
                    value: "process_cpu".into(),
                },
                LabelPair {
                    name: "service_name".into(),
                    value: "svc".into(),
                },
            ],
            fingerprint: 7,
            time_nanos: 1_000 + i as i64,
            duration_nanos: 10,
            period: 1,
            profile_id: format!("00000000-0000-0000-0000-{i:012}"),
            samples: vec![StackSample {
                stack_hash: 42,
                value: 5,
                span_id: 0,
            }],
        }],
        stacks: vec![Stack {
            hash: 42,
            frame_refs: vec![0],
        }],
        frames: vec![Frame {
            id: 1,
            function_name: "main".into(),
            ..Frame::default()
        }],
    }
}

async fn open(dir: &Path, catalog: Arc<dyn Catalog>) -> Arc<Ingester> {
    let objects = dir.join("objects");
    std::fs::create_dir_all(&objects).unwrap();
    Ingester::open(
        IngesterConfig {
            id: "a".into(),
            wal_dir: dir.join("wal"),
            max_block_duration: Duration::from_secs(3600),
            max_head_bytes: usize::MAX,
            head_full_wait: std::time::Duration::from_secs(30),
            flush_check_interval: Duration::from_secs(3600),
            local_store_root: Some(objects.clone()),
            max_series_per_tenant: 0,
        },
        Arc::new(LocalFileSystem::new_with_prefix(&objects).unwrap()),
        catalog,
        IngestMetrics::default(),
    )
    .await
    .unwrap()
}

fn block_dirs(dir: &Path, tenant: &str) -> usize {
    std::fs::read_dir(dir.join("objects").join(tenant).join("blocks")).map_or(0, |d| d.count())
}

#[tokio::test]
async fn crash_after_upload_before_register_reflushes_the_same_block() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteCatalog::open(dir.path().join("catalog.db"))
        .await
        .unwrap();
    let refusing = Arc::new(RefusingCatalog {
        inner: sqlite.clone(),
        refuse: AtomicBool::new(true),
    });
    let ingester = open(dir.path(), refusing).await;
    for i in 0..3 {
        ingester.write(write("t1", i)).await.unwrap();
    }
    assert!(ingester.flush().await.is_err());
    assert_eq!(block_dirs(dir.path(), "t1"), 1, "files were uploaded");
    drop(ingester);

    let ingester = open(dir.path(), Arc::new(sqlite.clone())).await;
    ingester.flush().await.unwrap();
    let blocks = sqlite.blocks("t1", 0, i64::MAX).await.unwrap();
    assert_eq!(blocks.len(), 1, "{blocks:?}");
    assert_eq!((blocks[0].num_profiles, blocks[0].num_samples), (3, 3));
    assert_eq!(
        block_dirs(dir.path(), "t1"),
        1,
        "the retry overwrote the same block id"
    );
}

#[tokio::test]
async fn crash_after_register_before_wal_truncation_replays_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteCatalog::open(dir.path().join("catalog.db"))
        .await
        .unwrap();
    let ingester = open(dir.path(), Arc::new(sqlite.clone())).await;
    for i in 0..3 {
        ingester.write(write("t1", i)).await.unwrap();
    }
    ingester.write(write("t2", 9)).await.unwrap();
    let wal = dir.path().join("wal");
    let saved: Vec<(std::path::PathBuf, Vec<u8>)> = std::fs::read_dir(&wal)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    ingester.flush().await.unwrap();
    drop(ingester);
    // Put the flushed segment back, as if the process died before deleting it.
    for (p, b) in &saved {
        std::fs::write(p, b).unwrap();
    }
    let ingester = open(dir.path(), Arc::new(sqlite.clone())).await;
    assert_eq!(
        ingester.head().lock().unwrap().num_profiles(),
        0,
        "nothing replayed"
    );
    ingester.write(write("t1", 5)).await.unwrap();
    ingester.flush().await.unwrap();
    let t1 = sqlite.blocks("t1", 0, i64::MAX).await.unwrap();
    assert_eq!(
        t1.iter().map(|b| b.num_profiles).collect::<Vec<_>>(),
        [3, 1]
    );
    assert_eq!(sqlite.blocks("t2", 0, i64::MAX).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_crash_after_one_tenant_registered_replays_only_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteCatalog::open(dir.path().join("catalog.db"))
        .await
        .unwrap();
    let ingester = open(dir.path(), Arc::new(sqlite.clone())).await;
    ingester.write(write("t1", 1)).await.unwrap();
    ingester.write(write("t2", 2)).await.unwrap();
    // Register t1's block by hand, as a flush that died right after t1 would have.
    let seg = 1;
    let created = {
        let h = ingester.head().lock().unwrap();
        h.generations[&seg].created_millis
    };
    let id = profusion_ingest::ingester::block_id("ingester-a", seg, "t1", created);
    let meta = BlockMeta {
        tenant: "t1".into(),
        id,
        min_time_nanos: 1001,
        max_time_nanos: 1001,
        num_series: 1,
        num_profiles: 1,
        num_samples: 1,
        size_bytes: 1,
        services: vec!["svc".into()],
        profile_types: vec![],
        source: "ingester-a".into(),
        wal_segment: seg,
        compaction_level: 0,
        created_at_millis: 0,
        lineage: [("ingester-a".to_owned(), seg)].into(),
        tombstone_seq: 0,
    };
    sqlite.register_block(&meta).await.unwrap();
    drop(ingester);

    let ingester = open(dir.path(), Arc::new(sqlite.clone())).await;
    let replayed: Vec<String> = {
        let h = ingester.head().lock().unwrap();
        let mut v: Vec<String> = h
            .generations
            .values()
            .flat_map(|g| g.tenants.keys().cloned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(replayed, ["t2"]);
    ingester.flush().await.unwrap();
    assert_eq!(sqlite.blocks("t1", 0, i64::MAX).await.unwrap().len(), 1);
    assert_eq!(sqlite.blocks("t2", 0, i64::MAX).await.unwrap().len(), 1);
}
