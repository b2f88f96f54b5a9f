//! The distributor places each series on `replication_factor` ingesters of the ring and
//! acknowledges once a majority stored it. Three real ingesters (each with its own WAL,
//! catalog and object store); a fourth "ingester" that always fails stands for one that is
//! unreachable over the network.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use object_store::local::LocalFileSystem;
use profusion_catalog::SqliteCatalog;
use profusion_ingest::IngestError;
use profusion_ingest::distributor::{Distributor, IncomingProfile, ProfileBody};
use profusion_ingest::ingester::{Ingester, IngesterClient, IngesterConfig};
use profusion_ingest::limits::Limits;
use profusion_ingest::metrics::IngestMetrics;
use profusion_ingest::pprof::ConvertOptions;
use profusion_ingest::ring::Ring;
use profusion_model::labels::Labels;
use profusion_model::status::StatusCode;
use profusion_proto::ingester::v1::WriteRequest;

#[derive(Debug)]
struct Unreachable(String);

#[async_trait]
impl IngesterClient for Unreachable {
    fn instance_id(&self) -> &str {
        &self.0
    }
    async fn write(&self, _: WriteRequest) -> profusion_ingest::Result<()> {
        Err(IngestError::unavailable(format!(
            "{} is unreachable",
            self.0
        )))
    }
    async fn flush(&self) -> profusion_ingest::Result<()> {
        Err(IngestError::unavailable(format!(
            "{} is unreachable",
            self.0
        )))
    }
}

async fn ingester(dir: &std::path::Path, id: &str) -> Arc<Ingester> {
    let root = dir.join(id);
    std::fs::create_dir_all(root.join("objects")).unwrap();
    Ingester::open(
        IngesterConfig {
            id: id.into(),
            wal_dir: root.join("wal"),
            max_block_duration: Duration::from_secs(3600),
            max_head_bytes: usize::MAX,
            head_full_wait: std::time::Duration::from_secs(30),
            flush_check_interval: Duration::from_secs(3600),
            local_store_root: None,
            max_series_per_tenant: 0,
        },
        Arc::new(LocalFileSystem::new_with_prefix(root.join("objects")).unwrap()),
        Arc::new(SqliteCatalog::open(root.join("catalog.db")).await.unwrap()),
        IngestMetrics::default(),
    )
    .await
    .unwrap()
}

fn client(i: &Arc<Ingester>) -> Arc<dyn IngesterClient> {
    Arc::<Ingester>::clone(i)
}

fn folded(service: &str) -> IncomingProfile {
    let stacks = vec![(vec!["main".to_owned(), "work".to_owned()], 3)];
    let now = profusion_model::time::now_nanos();
    IncomingProfile {
        labels: Labels::from_pairs([("__name__", "process_cpu"), ("service_name", service)]),
        body: ProfileBody::Decoded(Box::new(profusion_ingest::legacy::synthetic_pprof(
            &stacks,
            1,
            ("cpu", "nanoseconds"),
            ("cpu", "nanoseconds"),
            1,
            now,
            0,
        ))),
        id: String::new(),
        options: ConvertOptions::default(),
    }
}

#[test]
fn ring_placement_is_deterministic_distinct_and_spread() {
    let clients: Vec<Arc<dyn IngesterClient>> = (0..5)
        .map(|i| Arc::new(Unreachable(format!("ing-{i}"))) as Arc<dyn IngesterClient>)
        .collect();
    let ring = Ring::new(clients.clone(), 3);
    assert_eq!((ring.replication_factor(), ring.quorum()), (3, 2));
    let mut primaries = [0usize; 5];
    for i in 0..2000 {
        let token = Ring::token_for("tenant", &format!("{{service_name=\"s{i}\"}}"));
        let replicas = ring.replicas(token);
        assert_eq!(replicas.len(), 3);
        assert!(
            replicas[0] != replicas[1] && replicas[1] != replicas[2] && replicas[0] != replicas[2]
        );
        assert_eq!(
            replicas,
            Ring::new(clients.clone(), 3).replicas(token),
            "same ring, same placement"
        );
        primaries[replicas[0]] += 1;
    }
    assert!(
        primaries.iter().all(|&n| n > 200),
        "uneven spread: {primaries:?}"
    );
    assert_eq!(
        Ring::new(clients[..2].to_vec(), 3).replication_factor(),
        2,
        "RF is capped by the ring size"
    );
}

#[tokio::test]
async fn writes_reach_every_replica_and_succeed_on_quorum() {
    let dir = tempfile::tempdir().unwrap();
    let a = ingester(dir.path(), "a").await;
    let b = ingester(dir.path(), "b").await;
    let c = ingester(dir.path(), "c").await;
    let healthy: Vec<Arc<dyn IngesterClient>> = vec![client(&a), client(&b), client(&c)];
    let d = Distributor::new(
        Ring::new(healthy, 3),
        Limits::default(),
        IngestMetrics::default(),
    );
    d.push("t", vec![folded("svc")]).await.unwrap();
    for i in [&a, &b, &c] {
        assert_eq!(
            i.head().lock().unwrap().num_profiles(),
            1,
            "every replica holds the series"
        );
    }

    // One of three replicas down: a majority still stores every series.
    let one_down: Vec<Arc<dyn IngesterClient>> =
        vec![client(&a), client(&b), Arc::new(Unreachable("c2".into()))];
    let d = Distributor::new(
        Ring::new(one_down, 3),
        Limits::default(),
        IngestMetrics::default(),
    );
    d.push("t", vec![folded("svc2")]).await.unwrap();

    // Two of three down: no quorum, and the error says so.
    let two_down: Vec<Arc<dyn IngesterClient>> = vec![
        client(&a),
        Arc::new(Unreachable("b2".into())),
        Arc::new(Unreachable("c2".into())),
    ];
    let d = Distributor::new(
        Ring::new(two_down, 3),
        Limits::default(),
        IngestMetrics::default(),
    );
    let err = d.push("t", vec![folded("svc3")]).await.unwrap_err();
    assert_eq!(err.status, StatusCode::Unavailable);
    assert!(
        err.message
            .contains("only 1 of 3 replicas stored the profile"),
        "{}",
        err.message
    );
}
