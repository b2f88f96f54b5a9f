//! The physical plans of flame-graph queries, pinned with insta, over a real ingester whose
//! data is half in a flushed block (SQLite catalog, local object-store directory) and half in
//! the head.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use object_store::local::LocalFileSystem;
use profusion_catalog::{Catalog, SqliteCatalog};
use profusion_engine::querier::{MergeRequest, Querier, QuerierConfig, TimeRange};
use profusion_engine::selector;
use profusion_engine::symbolize::StackFilter;
use profusion_ingest::ingester::{Ingester, IngesterClient, IngesterConfig};
use profusion_ingest::metrics::IngestMetrics;
use profusion_proto::ingester::v1::{Frame, SeriesProfile, Stack, StackSample, WriteRequest};
use profusion_proto::types::v1::LabelPair;

const CPU: &str = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";

fn write(i: u64, stack: &[&str], value: i64) -> WriteRequest {
    let label = |name: &str, value: &str| LabelPair {
        name: name.into(),
        value: value.into(),
    };
    let frames: Vec<Frame> = stack
        .iter()
        .map(|name| Frame {
            id: 1 + name.bytes().map(u64::from).sum::<u64>(),
            function_name: (*name).into(),
            ..Frame::default()
        })
        .collect();
    WriteRequest {
        tenant: "t".into(),
        profiles: vec![SeriesProfile {
            labels: vec![
                label("__name__", "process_cpu"),
                label("__profile_type__", CPU),
                label("service_name", "svc"),
            ],
            fingerprint: 7,
            time_nanos: 1_000_000_000 + i as i64,
            duration_nanos: 10,
            period: 1,
            profile_id: format!("00000000-0000-0000-0000-{i:012}"),
            samples: vec![StackSample {
                stack_hash: 100 + i,
                value,
                span_id: 0,
            }],
        }],
        stacks: vec![Stack {
            hash: 100 + i,
            frame_refs: (0..frames.len() as u32).collect(),
        }],
        frames,
    }
}

async fn setup(dir: &Path) -> (Arc<Ingester>, Querier) {
    let objects = dir.join("objects");
    std::fs::create_dir_all(&objects).unwrap();
    let store = Arc::new(LocalFileSystem::new_with_prefix(&objects).unwrap());
    let catalog: Arc<dyn Catalog> =
        Arc::new(SqliteCatalog::open(dir.join("catalog.db")).await.unwrap());
    let ingester = Ingester::open(
        IngesterConfig {
            id: "a".into(),
            wal_dir: dir.join("wal"),
            max_block_duration: Duration::from_secs(3600),
            max_head_bytes: usize::MAX,
            flush_check_interval: Duration::from_secs(3600),
            local_store_root: Some(objects),
            max_series_per_tenant: 0,
        },
        Arc::clone(&store) as _,
        Arc::clone(&catalog),
        IngestMetrics::default(),
    )
    .await
    .unwrap();
    let querier = Querier::new(
        Arc::clone(&ingester) as _,
        Arc::new(profusion_engine::blocks::CatalogBlocks::new(catalog, store)),
        QuerierConfig::default(),
    );
    (ingester, querier)
}

/// Block ids and temporary paths vary per run.
fn redact(plan: &str) -> String {
    regex::Regex::new(r"blocks/[0-9A-Z]{26}/")
        .unwrap()
        .replace_all(plan, "blocks/<block>/")
        .into_owned()
}

#[tokio::test]
async fn flame_graph_plan_scans_filters_merges_by_stack_hash_and_symbolizes() {
    let dir = tempfile::tempdir().unwrap();
    let (ingester, querier) = setup(dir.path()).await;
    let tenants = ["t".to_owned()];
    ingester
        .write(write(1, &["main", "work"], 3))
        .await
        .unwrap();
    ingester.flush().await.unwrap();
    ingester
        .write(write(2, &["main", "idle"], 1))
        .await
        .unwrap();

    let req = MergeRequest {
        profile_type: CPU.into(),
        selector: selector::parse(r#"{service_name="svc"}"#).unwrap(),
        range: TimeRange::from_millis(0, 2_000),
        profile_ids: Vec::new(),
        span_ids: Vec::new(),
        stacks: StackFilter::default(),
    };
    let tree = querier
        .merge_tree(&querier.budget(), &tenants, &req, 0)
        .await
        .unwrap()
        .value;
    assert_eq!(
        tree.total(),
        4,
        "one profile from the block, one from the head"
    );
    let mut stacks = Vec::new();
    tree.for_each_stack(|s, v| stacks.push((s.join(";"), v)));
    stacks.sort();
    assert_eq!(
        stacks,
        [("main;idle".to_owned(), 1), ("main;work".to_owned(), 3)]
    );

    insta::assert_snapshot!(
        "flame_graph_plan",
        redact(&querier.explain_merge(&tenants, &req).await.unwrap())
    );

    let narrowed = MergeRequest {
        span_ids: vec![0xabc],
        profile_ids: vec!["00000000-0000-0000-0000-000000000001".into()],
        stacks: StackFilter {
            call_site: vec!["main".into()],
            go_pgo: None,
        },
        ..req
    };
    insta::assert_snapshot!(
        "flame_graph_plan_with_selectors",
        redact(&querier.explain_merge(&tenants, &narrowed).await.unwrap())
    );
}
