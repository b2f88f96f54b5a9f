//! The physical plans of flame-graph queries, pinned with insta, over a real ingester whose
//! data is half in a flushed block (SQLite catalog, local object-store directory) and half in
//! the head.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::{ExecutionPlan, collect, displayable};
use datafusion_proto::bytes::{
    physical_plan_from_bytes_with_extension_codec, physical_plan_to_bytes_with_extension_codec,
};
use object_store::local::LocalFileSystem;
use profusion_catalog::{Catalog, MemberState, RingMember, SqliteCatalog};
use profusion_cluster::{RingConfig, RingWatcher};
use profusion_engine::codec::ProfusionCodec;
use profusion_engine::distributed::Distribution;
use profusion_engine::querier::{
    MergeRequest, Querier, QuerierConfig, SeriesQuery, TimeRange, TimeSeries,
};
use profusion_engine::selector;
use profusion_engine::symbolize::StackFilter;
use profusion_engine::symbolize::{PprofHeader, SymbolizeOutput, output_bytes};
use profusion_engine::table::ScanWindow;
use profusion_ingest::ingester::{Ingester, IngesterClient, IngesterConfig};
use profusion_ingest::metrics::IngestMetrics;
use profusion_proto::ingester::v1::{Frame, SeriesProfile, Stack, StackSample, WriteRequest};
use profusion_proto::types::v1::LabelPair;

const CPU: &str = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";

fn write(i: u64, stack: &[&str], value: i64) -> WriteRequest {
    write_for("svc", 7, i, stack, value)
}

/// A one-sample profile of `service` (series `fingerprint`) at 1 s + `i` ns.
fn write_for(service: &str, fingerprint: u64, i: u64, stack: &[&str], value: i64) -> WriteRequest {
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
                label("service_name", service),
            ],
            fingerprint,
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
    let (ingester, querier, _) = setup_with(dir, QuerierConfig::default()).await;
    (ingester, querier)
}

/// An ingester `a` and a querier over it and its blocks with `config`; the catalog too.
async fn setup_with(
    dir: &Path,
    config: QuerierConfig,
) -> (Arc<Ingester>, Querier, Arc<dyn Catalog>) {
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
            head_full_wait: std::time::Duration::from_secs(30),
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
        Arc::new(profusion_store_gateway::StoreGateway::uncached(
            Arc::clone(&catalog),
            store,
        )),
        config,
    );
    (ingester, querier, catalog)
}

/// One profile of `svc` in a flushed block (`main;work` 3), one in the head (`main;idle` 1);
/// the flame-graph request over both.
async fn half_flushed(ingester: &Ingester) -> MergeRequest {
    ingester
        .write(write(1, &["main", "work"], 3))
        .await
        .unwrap();
    ingester.flush().await.unwrap();
    ingester
        .write(write(2, &["main", "idle"], 1))
        .await
        .unwrap();
    MergeRequest {
        profile_type: CPU.into(),
        selector: selector::parse(r#"{service_name="svc"}"#).unwrap(),
        range: TimeRange::from_millis(0, 2_000),
        profile_ids: Vec::new(),
        span_ids: Vec::new(),
        stacks: StackFilter::default(),
    }
}

/// A querier with `config` over [`half_flushed`] data, and its request.
async fn half_flushed_with(dir: &Path, config: QuerierConfig) -> (Querier, MergeRequest) {
    let (ingester, querier, _) = setup_with(dir, config).await;
    let req = half_flushed(&ingester).await;
    (querier, req)
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
    let req = half_flushed(&ingester).await;
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
        ..req.clone()
    };
    insta::assert_snapshot!(
        "flame_graph_plan_with_selectors",
        redact(&querier.explain_merge(&tenants, &narrowed).await.unwrap())
    );

    // Every plan survives the trip to bytes and back: same EXPLAIN, same answer.
    let pprof = SymbolizeOutput::Pprof(PprofHeader {
        sample_type: "cpu".into(),
        sample_unit: "nanoseconds".into(),
        period_type: "cpu".into(),
        period_unit: "nanoseconds".into(),
        period: 1,
        time_nanos: 0,
        duration_nanos: 1,
    });
    for (r, output) in [
        (&req, SymbolizeOutput::Tree { max_nodes: 0 }),
        (&req, SymbolizeOutput::Tree { max_nodes: 1 }),
        (&narrowed, SymbolizeOutput::Tree { max_nodes: 0 }),
        (&req, pprof),
    ] {
        let df = querier
            .merge_plan(&querier.budget(), &tenants, r, output)
            .await
            .unwrap()
            .expect("the selector matches a series");
        let task = Arc::new(df.task_ctx());
        let plan = df.create_physical_plan().await.unwrap();
        let codec = ProfusionCodec::new(Arc::clone(&ingester) as _);
        let bytes = physical_plan_to_bytes_with_extension_codec(Arc::clone(&plan), &codec).unwrap();
        let decoded = physical_plan_from_bytes_with_extension_codec(&bytes, &task, &codec).unwrap();
        assert_eq!(explain(decoded.as_ref()), explain(plan.as_ref()));
        let original = output_bytes(&collect(plan, Arc::clone(&task)).await.unwrap()).unwrap();
        let shipped = output_bytes(&collect(decoded, task).await.unwrap()).unwrap();
        assert!(!original.is_empty());
        assert_eq!(shipped, original);
    }
}

/// The sum of the metric `name` over the plan's nodes called `node`.
fn metric(plan: &Arc<dyn ExecutionPlan>, node: &str, name: &str) -> usize {
    let mut total = 0;
    let _ = plan.apply(|n| {
        if n.name() == node {
            total += n
                .metrics()
                .and_then(|m| m.sum_by_name(name))
                .map_or(0, |v| v.as_usize());
        }
        Ok(TreeNodeRecursion::Continue)
    });
    total
}

/// What a flame-graph or pprof plan of `req` answers, and the executed plan.
async fn merged(
    querier: &Querier,
    req: &MergeRequest,
    output: SymbolizeOutput,
) -> (Vec<u8>, Arc<dyn ExecutionPlan>) {
    let df = querier
        .merge_plan(&querier.budget(), &["t".to_owned()], req, output)
        .await
        .unwrap()
        .expect("the selector matches a series");
    let task = Arc::new(df.task_ctx());
    let plan = df.create_physical_plan().await.unwrap();
    let bytes = output_bytes(&collect(Arc::clone(&plan), task).await.unwrap()).unwrap();
    (bytes, plan)
}

/// What a flame-graph or pprof plan of `req` answers, and how many stacks and frames its
/// symbolize node read from the head and blocks (the rest came from the symbol cache).
async fn symbolized(
    querier: &Querier,
    req: &MergeRequest,
    output: SymbolizeOutput,
) -> (Vec<u8>, usize, usize) {
    let (bytes, plan) = merged(querier, req, output).await;
    let read = |name: &str| metric(&plan, "SymbolizeExec", name);
    (bytes, read("stacks_read"), read("frames_read"))
}

/// What a flame graph of `req` answers, and how many block files its samples aggregation
/// summed and how many it took from the block aggregate cache.
async fn block_files(querier: &Querier, req: &MergeRequest) -> (Vec<u8>, usize, usize) {
    let (bytes, plan) = merged(querier, req, SymbolizeOutput::Tree { max_nodes: 0 }).await;
    let count = |name: &str| metric(&plan, "BlockAggregateExec", name);
    (bytes, count("files_computed"), count("files_cached"))
}

/// A block never changes, so a querier keeps what each file gave a query's filter: the same
/// query again sums no block file; a new block is summed once, next to the kept one; another
/// range is another question. Without a cache every query sums every file.
#[tokio::test]
async fn block_files_are_summed_once_per_filter() {
    let dir = tempfile::tempdir().unwrap();
    let (ingester, querier) = setup(dir.path()).await;
    let req = half_flushed(&ingester).await;
    let (first, computed, cached) = block_files(&querier, &req).await;
    assert_eq!((computed, cached), (1, 0));
    let (again, computed, cached) = block_files(&querier, &req).await;
    assert_eq!((computed, cached), (0, 1));
    assert_eq!(again, first);
    // The head's profile becomes a second block.
    ingester.flush().await.unwrap();
    let (flushed, computed, cached) = block_files(&querier, &req).await;
    assert_eq!((computed, cached), (1, 1));
    assert_eq!(flushed, first, "the same profiles, now all in blocks");
    // Any range that covers a block whole asks it the same (a dashboard's sliding window).
    let wider = MergeRequest {
        range: TimeRange::from_millis(500, 1_500),
        ..req.clone()
    };
    let (_, computed, cached) = block_files(&querier, &wider).await;
    assert_eq!((computed, cached), (0, 2));
    // A third block of two profiles, 1 ns apart: a range ending between them asks it
    // something else, and the other two blocks the same.
    for i in [3, 4] {
        ingester
            .write(write(i, &["main", "work"], 5))
            .await
            .unwrap();
    }
    ingester.flush().await.unwrap();
    let cut = MergeRequest {
        range: TimeRange {
            start: 0,
            end: 1_000_000_003,
        },
        ..req.clone()
    };
    let (bytes, computed, cached) = block_files(&querier, &cut).await;
    assert_eq!((computed, cached), (1, 2));
    let tree = profusion_model::tree::Tree::from_tree_bytes(&bytes).unwrap();
    assert_eq!(
        tree.total(),
        3 + 1 + 5,
        "the third block's first profile only"
    );

    let dir = tempfile::tempdir().unwrap();
    let (querier, req) = half_flushed_with(
        dir.path(),
        QuerierConfig {
            block_cache_bytes: 0,
            ..QuerierConfig::default()
        },
    )
    .await;
    for _ in 0..2 {
        let (uncached, computed, cached) = block_files(&querier, &req).await;
        assert_eq!((computed, cached), (1, 0));
        assert_eq!(uncached, first);
    }
}

/// A time series' points before grouping, `(series, step start, total, profiles)` sorted,
/// and how many block files the query aggregated and how many it took from the cache.
async fn series_points(
    querier: &Querier,
    query: &SeriesQuery,
) -> (Vec<(u64, i64, i64, i64)>, usize, usize) {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::{Int64Type, UInt64Type};
    let window = ScanWindow {
        range: Some(query.range),
        ..ScanWindow::default()
    };
    let session = querier
        .session(&querier.budget(), &["t".to_owned()], window)
        .unwrap();
    let df = Querier::series_points_plan(&session, query, None)
        .await
        .unwrap();
    let task = Arc::new(df.task_ctx());
    let plan = df.create_physical_plan().await.unwrap();
    let mut rows = Vec::new();
    for b in collect(Arc::clone(&plan), task).await.unwrap() {
        let int = |c: usize| b.column(c).as_primitive::<Int64Type>().clone();
        let fps = b.column(0).as_primitive::<UInt64Type>();
        let (steps, totals, profiles) = (int(1), int(2), int(3));
        for i in 0..b.num_rows() {
            rows.push((
                fps.value(i),
                steps.value(i),
                totals.value(i),
                profiles.value(i),
            ));
        }
    }
    rows.sort();
    let count = |name: &str| metric(&plan, "BlockAggregateExec", name);
    (rows, count("files_computed"), count("files_cached"))
}

/// A timeline reads profiles' totals, and keeps what each block file gave its filter and
/// step as a flame graph does: the same query again aggregates no block file, and a flush
/// adds one file to aggregate. The points are those of the profiles, whichever way they came.
#[tokio::test]
async fn series_points_of_block_files_are_aggregated_once_per_filter_and_step() {
    let dir = tempfile::tempdir().unwrap();
    let (ingester, querier) = setup(dir.path()).await;
    // 3 at 1 s + 1 ns in a block, 1 at 1 s + 2 ns in the head; then 5 at 2.5 s in the head.
    let req = half_flushed(&ingester).await;
    let late = WriteRequest {
        profiles: vec![SeriesProfile {
            time_nanos: 2_500_000_000,
            ..write(3, &["main", "work"], 5).profiles[0].clone()
        }],
        ..write(3, &["main", "work"], 5)
    };
    ingester.write(late).await.unwrap();
    let query = SeriesQuery {
        profile_type: CPU.into(),
        selector: req.selector.clone(),
        range: TimeRange::from_millis(0, 3_000),
        step_millis: 1_000,
        group_by: vec!["service_name".into()],
        average: false,
        limit: None,
    };
    let want = vec![(7, 1_000, 4, 2), (7, 2_000, 5, 1)];
    assert_eq!(series_points(&querier, &query).await, (want.clone(), 1, 0));
    assert_eq!(series_points(&querier, &query).await, (want.clone(), 0, 1));
    ingester.flush().await.unwrap();
    assert_eq!(
        series_points(&querier, &query).await,
        (want.clone(), 1, 1),
        "the flushed head is a new file"
    );
    // Another step is another question of the same file.
    let minute = SeriesQuery {
        step_millis: 60_000,
        ..query.clone()
    };
    assert_eq!(
        series_points(&querier, &minute).await,
        (vec![(7, 0, 9, 3)], 2, 0)
    );
    let series = |average: bool| {
        let q = SeriesQuery {
            average,
            ..query.clone()
        };
        let querier = &querier;
        async move {
            querier
                .select_series(&querier.budget(), &["t".to_owned()], &q)
                .await
                .unwrap()
        }
    };
    let svc = vec![("service_name".to_owned(), "svc".to_owned())];
    assert_eq!(
        series(false).await,
        [TimeSeries {
            labels: svc.clone(),
            points: vec![(1_000, 4.0), (2_000, 5.0)],
        }]
    );
    assert_eq!(
        series(true).await,
        [TimeSeries {
            labels: svc,
            points: vec![(1_000, 2.0), (2_000, 5.0)],
        }]
    );
}

/// A timeline grouped by and selecting on `service_name` alone reads the profiles' own column
/// instead of looking series up; its series and points are those of a reference summing the
/// written profiles, for every kind of matcher, a series without the label, an empty and a
/// repeated grouping, profiles in blocks and in the head; and the same as a selector over
/// another label takes them, through the series lookup.
#[tokio::test]
async fn timelines_by_service_match_the_reference_whichever_way_they_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let (ingester, querier) = setup(dir.path()).await;
    // (service, "" when the series lacks the label; ms; total)
    let mut written: Vec<(&str, i64, i64)> = Vec::new();
    let services = ["api", "apiary", "", "db"];
    for i in 0..48u64 {
        let service = services[i as usize % services.len()];
        let (ms, value) = (1_000 + (i as i64 * 377) % 5_000, 1 + (i as i64 * 7) % 11);
        let mut labels = vec![
            LabelPair {
                name: "__name__".into(),
                value: "process_cpu".into(),
            },
            LabelPair {
                name: "__profile_type__".into(),
                value: CPU.into(),
            },
            LabelPair {
                name: "zone".into(),
                value: "z1".into(),
            },
        ];
        if !service.is_empty() {
            labels.push(LabelPair {
                name: "service_name".into(),
                value: service.into(),
            });
        }
        let mut req = write_for(service, 1_000 + i % 8, i, &["main"], value);
        req.profiles[0].labels = labels;
        req.profiles[0].fingerprint = 10 + (i as usize % services.len()) as u64;
        req.profiles[0].time_nanos = ms * 1_000_000;
        ingester.write(req).await.unwrap();
        written.push((service, ms, value));
        if i % 16 == 15 {
            ingester.flush().await.unwrap();
        }
    }
    type Keep = fn(&str) -> bool;
    type Point = (i64, i64);
    let cases: [(&str, Keep); 9] = [
        ("{}", |_| true),
        (r#"{service_name="api"}"#, |s| s == "api"),
        (r#"{service_name!="api"}"#, |s| s != "api"),
        (r#"{service_name=~"api.*"}"#, |s| s.starts_with("api")),
        (r#"{service_name=~"api|"}"#, |s| s == "api" || s.is_empty()),
        (r#"{service_name!~"api"}"#, |s| s != "api"),
        (r#"{service_name=~".+", service_name!="db"}"#, |s| {
            !s.is_empty() && s != "db"
        }),
        (r#"{zone="z1", service_name=~"a.*"}"#, |s| {
            s.starts_with('a')
        }),
        (r#"{zone="z1"}"#, |_| true),
    ];
    for (selector, keep) in cases {
        for group_by in [
            &[][..],
            &["service_name"],
            &["service_name", "service_name"],
        ] {
            for average in [false, true] {
                let query = SeriesQuery {
                    profile_type: CPU.into(),
                    selector: selector::parse(selector).unwrap(),
                    range: TimeRange::from_millis(0, 10_000),
                    step_millis: 2_000,
                    group_by: group_by.iter().map(|n| n.to_string()).collect(),
                    average,
                    limit: None,
                };
                let got = querier
                    .select_series(&querier.budget(), &["t".to_owned()], &query)
                    .await
                    .unwrap();
                // group labels -> step -> (sum, profiles)
                let mut sums: BTreeMap<Vec<(String, String)>, BTreeMap<i64, Point>> =
                    BTreeMap::new();
                for &(service, ms, value) in written.iter().filter(|w| keep(w.0)) {
                    let labels = group_by
                        .iter()
                        .filter(|_| !service.is_empty())
                        .map(|n| (n.to_string(), service.to_owned()))
                        .collect();
                    let point = sums
                        .entry(labels)
                        .or_default()
                        .entry(ms - ms % 2_000)
                        .or_default();
                    point.0 += value;
                    point.1 += 1;
                }
                let want: Vec<TimeSeries> = sums
                    .into_iter()
                    .map(|(labels, points)| TimeSeries {
                        labels,
                        points: points
                            .into_iter()
                            .map(|(t, (sum, n))| {
                                let v = if average {
                                    sum as f64 / n as f64
                                } else {
                                    sum as f64
                                };
                                (t, v)
                            })
                            .collect(),
                    })
                    .collect();
                assert_eq!(got, want, "{selector} by {group_by:?}, average {average}");
            }
        }
    }
}

/// Stacks and frames are named by hashes of their content, so a querier keeps the ones it
/// resolved: the same query again reads none from the blocks or the head, and answers the
/// same. A pprof needs every column of a frame, which a flame graph did not read; without a
/// cache every query reads them all.
#[tokio::test]
async fn resolved_symbols_are_kept_between_queries() {
    let tree = SymbolizeOutput::Tree { max_nodes: 0 };
    let pprof = SymbolizeOutput::Pprof(PprofHeader {
        sample_type: "cpu".into(),
        sample_unit: "nanoseconds".into(),
        period_type: "cpu".into(),
        period_unit: "nanoseconds".into(),
        period: 1,
        time_nanos: 0,
        duration_nanos: 1,
    });
    let dir = tempfile::tempdir().unwrap();
    let (ingester, querier) = setup(dir.path()).await;
    let req = half_flushed(&ingester).await;
    // Two stacks (one in the block, one in the head) over three frames.
    let (first, stacks, frames) = symbolized(&querier, &req, tree.clone()).await;
    assert_eq!((stacks, frames), (2, 3));
    let (again, stacks, frames) = symbolized(&querier, &req, tree.clone()).await;
    assert_eq!((stacks, frames), (0, 0), "all from the cache");
    assert_eq!(again, first);
    let (profile, stacks, frames) = symbolized(&querier, &req, pprof.clone()).await;
    assert_eq!(
        (stacks, frames),
        (0, 3),
        "a pprof reads every column of its frames"
    );
    let (_, stacks, frames) = symbolized(&querier, &req, pprof.clone()).await;
    assert_eq!((stacks, frames), (0, 0));
    let (tree_after, _, _) = symbolized(&querier, &req, tree.clone()).await;
    assert_eq!(tree_after, first);

    let dir = tempfile::tempdir().unwrap();
    let (querier, req) = half_flushed_with(
        dir.path(),
        QuerierConfig {
            symbol_cache_bytes: 0,
            ..QuerierConfig::default()
        },
    )
    .await;
    for output in [tree.clone(), tree, pprof.clone()] {
        let (_, stacks, frames) = symbolized(&querier, &req, output).await;
        assert_eq!(
            (stacks, frames),
            (2, 3),
            "no cache: every query reads its symbols"
        );
    }
    let (uncached, _, _) = symbolized(&querier, &req, pprof).await;
    assert_eq!(uncached, profile);
}

/// In a cluster, the samples aggregation runs next to the data: a stage per origin (the
/// ingester's head on the ingester, its blocks on a store-gateway) aggregates partially and
/// shuffles by stack hash to the final aggregation on the queriers; EXPLAIN shows the stages
/// and their network boundaries.
#[tokio::test]
async fn a_cluster_plan_aggregates_next_to_the_data_in_stages() {
    let dir = tempfile::tempdir().unwrap();
    // The rings first: the querier's distribution watches them from its start.
    let catalog: Arc<dyn Catalog> = Arc::new(
        SqliteCatalog::open(dir.path().join("catalog.db"))
            .await
            .unwrap(),
    );
    let now = profusion_model::time::now_millis();
    for (ring, instance, address) in [
        ("ingester", "a", "127.0.0.1:7001"),
        ("store-gateway", "store-gateway-1", "127.0.0.1:7002"),
        ("querier", "querier-1", "127.0.0.1:7003"),
    ] {
        catalog
            .heartbeat(&RingMember {
                ring: ring.into(),
                instance: instance.into(),
                address: address.into(),
                tokens: Vec::new(),
                state: MemberState::Active,
                registered_at_millis: now,
                heartbeat_at_millis: now,
            })
            .await
            .unwrap();
    }
    let ring = RingConfig {
        heartbeat_period: Duration::from_secs(60),
        heartbeat_timeout: Duration::from_secs(3600),
    };
    let watch = |name: &'static str| {
        let catalog = Arc::clone(&catalog);
        async move { RingWatcher::start(catalog, name, ring).await.unwrap() }
    };
    let distribution = Distribution {
        ingesters: watch("ingester").await,
        queriers: watch("querier").await,
        store_gateways: watch("store-gateway").await,
        timeout: Duration::from_secs(10),
        traffic: Arc::default(),
    };
    drop(catalog);
    let (ingester, querier, _) = setup_with(
        dir.path(),
        QuerierConfig {
            distribution: Some(distribution),
            ..QuerierConfig::default()
        },
    )
    .await;
    let req = half_flushed(&ingester).await;
    insta::assert_snapshot!(
        "cluster_flame_graph_plan",
        redact(
            &querier
                .explain_merge(&["t".to_owned()], &req)
                .await
                .unwrap()
        )
    );

    // A join of two aggregations turned into stages (the `sample_stacks` view joins the
    // samples to the stacks, frames and series, each grouped): the stages replacing a side are
    // hashed again as the join expects, so both sides of every partitioned join stay
    // co-partitioned.
    let ctx = querier
        .sql_session(&querier.budget(), &["t".to_owned()])
        .unwrap();
    let plan = ctx
        .sql("SELECT stack, sum(value) FROM sample_stacks GROUP BY stack")
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap();
    let mut joins = 0;
    plan.apply(|node| {
        if let Some(join) = node.downcast_ref::<HashJoinExec>()
            && *join.partition_mode() == PartitionMode::Partitioned
        {
            joins += 1;
            let [left, right] = [join.left(), join.right()]
                .map(|side| side.properties().partitioning.partition_count());
            assert_eq!(left, right, "{}", explain(plan.as_ref()));
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .unwrap();
    assert!(joins > 0, "{}", explain(plan.as_ref()));
}

fn explain(plan: &dyn ExecutionPlan) -> String {
    displayable(plan).indent(false).to_string()
}

/// A SQL query over a session's tables is pruned like a flame-graph request: the catalog
/// drops the blocks of other services, and the head scan is narrowed by the same filters.
#[tokio::test]
async fn sql_over_the_tables_is_pruned_by_its_filters() {
    let dir = tempfile::tempdir().unwrap();
    let (ingester, querier) = setup(dir.path()).await;
    let tenants = ["t".to_owned()];
    ingester
        .write(write(1, &["main", "work"], 3))
        .await
        .unwrap();
    ingester.flush().await.unwrap();
    ingester
        .write(write_for("other", 8, 2, &["main", "gc"], 5))
        .await
        .unwrap();
    ingester.flush().await.unwrap();
    ingester
        .write(write(3, &["main", "idle"], 1))
        .await
        .unwrap();
    ingester
        .write(write_for("other", 8, 4, &["main", "gc"], 20))
        .await
        .unwrap();

    let session = querier
        .session(&querier.budget(), &tenants, ScanWindow::default())
        .unwrap();
    let sql = format!(
        "SELECT sum(value) AS total FROM samples WHERE profile_type = '{CPU}' \
         AND service_name = 'svc' AND time_nanos BETWEEN 0 AND 2000000000"
    );
    // svc's profiles: 3 in the first block, 1 in the head.
    assert_eq!(
        pruned_svc_total(session.ctx.sql(&sql).await.unwrap()).await,
        3 + 1
    );

    // The same through the tables SQL sees, filtering on `time`: the view's timestamp reaches
    // the tables as a filter on `time_nanos`, which prunes the same way.
    let ctx = querier.sql_session(&querier.budget(), &tenants).unwrap();
    let sql = format!(
        "SELECT sum(value) AS total FROM samples WHERE profile_type = '{CPU}' \
         AND service_name = 'svc' \
         AND time BETWEEN TIMESTAMP '1970-01-01T00:00:00Z' AND TIMESTAMP '1970-01-01T00:00:02Z'"
    );
    assert_eq!(pruned_svc_total(ctx.sql(&sql).await.unwrap()).await, 3 + 1);
}

/// SQL's aggregations over block files share the per-file cache when their answer depends only
/// on the rows; a volatile function such as `random()` keeps a query out of it, its next run
/// may differ. `now()` is folded into a constant when the query is planned: a bound on time
/// like any other, dropped from a file's key when the file's times all meet it.
#[tokio::test]
async fn sql_aggregations_are_kept_per_block_file_only_when_repeatable() {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::Int64Type;
    let dir = tempfile::tempdir().unwrap();
    let (ingester, querier) = setup(dir.path()).await;
    half_flushed(&ingester).await;
    let tenants = ["t".to_owned()];
    // (query, block files aggregated per file, from the cache) for a first and a second run.
    let cases = [
        (
            "SELECT stack_hash, sum(value) AS v FROM samples GROUP BY stack_hash",
            [(1, 0), (0, 1)],
        ),
        (
            "SELECT stack_hash, sum(value) AS v FROM samples \
             WHERE random() < 2.0 GROUP BY stack_hash",
            [(0, 0), (0, 0)],
        ),
        (
            "SELECT stack_hash, sum(value) AS v FROM samples \
             WHERE time < now() GROUP BY stack_hash",
            [(1, 0), (0, 1)],
        ),
    ];
    for (sql, runs) in cases {
        for (run, want) in runs.into_iter().enumerate() {
            let ctx = querier.sql_session(&querier.budget(), &tenants).unwrap();
            let df = ctx.sql(sql).await.unwrap();
            let task = Arc::new(df.task_ctx());
            let plan = df.create_physical_plan().await.unwrap();
            let mut sums: Vec<i64> = Vec::new();
            for b in collect(Arc::clone(&plan), task).await.unwrap() {
                sums.extend(b.column(1).as_primitive::<Int64Type>().values());
            }
            sums.sort();
            assert_eq!(sums, [1, 3], "{sql}, run {run}");
            let count = |name: &str| metric(&plan, "BlockAggregateExec", name);
            assert_eq!(
                (count("files_computed"), count("files_cached")),
                want,
                "{sql}, run {run}"
            );
        }
    }
}

/// The total of a query over `svc`'s first two seconds, checking its plan: of the two blocks,
/// only the one holding `svc` is opened, and the head scan is narrowed by the same filters.
async fn pruned_svc_total(df: datafusion::prelude::DataFrame) -> i64 {
    let plan = redact(&explain(
        df.clone().create_physical_plan().await.unwrap().as_ref(),
    ));
    assert_eq!(plan.matches("samples.parquet").count(), 1, "{plan}");
    assert!(
        plan.contains("HeadScanExec: table=samples, tenants=[t], partitions=2, time=[0, 2000000000], profile_type=process_cpu:cpu:nanoseconds:cpu:nanoseconds, services=[svc]"),
        "{plan}"
    );
    let rows = df.collect().await.unwrap();
    rows[0]
        .column(0)
        .as_any()
        .downcast_ref::<datafusion::arrow::array::Int64Array>()
        .unwrap()
        .value(0)
}
