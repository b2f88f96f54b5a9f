//! A WAL record does not repeat the symbols its segment's head already holds, and a replay
//! still rebuilds the head exactly: the frames and stacks a later record leaves out come from
//! the earlier record of the same segment that brought them. Frames pushed as pprof reach the
//! head with every string, though the conversion leaves the strings in the request.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use object_store::local::LocalFileSystem;
use profusion_catalog::SqliteCatalog;
use profusion_ingest::distributor::{Distributor, IncomingProfile, ProfileBody};
use profusion_ingest::ingester::{Ingester, IngesterClient, IngesterConfig};
use profusion_ingest::limits::Limits;
use profusion_ingest::metrics::IngestMetrics;
use profusion_ingest::pprof::ConvertOptions;
use profusion_ingest::ring::Ring;
use profusion_model::labels::Labels;
use profusion_proto::ingester::v1::{Frame, SeriesProfile, Stack, StackSample, WriteRequest};
use profusion_proto::types::v1::LabelPair;

/// A push of `stacks` stacks of three long-named frames each; stack `s` is frames
/// (s, s+1, s+2), so consecutive stacks share frames.
fn push(stacks: u64, time: i64) -> WriteRequest {
    let frames: Vec<Frame> = (0..stacks + 2)
        .map(|f| Frame {
            id: 1_000 + f,
            function_name: format!("github.com/acme/service/internal/handler.Function{f:04}"),
            filename: format!("/src/service/internal/handler/file{f:04}.go"),
            line: f as i64,
            ..Frame::default()
        })
        .collect();
    let stacks: Vec<Stack> = (0..stacks)
        .map(|s| Stack {
            hash: 5_000 + s,
            frame_refs: vec![s as u32, s as u32 + 1, s as u32 + 2],
        })
        .collect();
    WriteRequest {
        tenant: "t".into(),
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
            time_nanos: time,
            duration_nanos: 10,
            period: 1,
            profile_id: format!("00000000-0000-0000-0000-{time:012}"),
            samples: stacks
                .iter()
                .map(|s| StackSample {
                    stack_hash: s.hash,
                    value: 3,
                    span_id: 0,
                })
                .collect(),
        }],
        stacks,
        frames,
    }
}

async fn open(dir: &Path) -> Arc<Ingester> {
    let objects = dir.join("objects");
    std::fs::create_dir_all(&objects).unwrap();
    Ingester::open(
        IngesterConfig {
            id: "a".into(),
            wal_dir: dir.join("wal"),
            max_block_duration: Duration::from_secs(3600),
            max_head_bytes: usize::MAX,
            head_full_wait: Duration::from_secs(30),
            flush_check_interval: Duration::from_secs(3600),
            local_store_root: Some(objects.clone()),
            max_series_per_tenant: 0,
        },
        Arc::new(LocalFileSystem::new_with_prefix(&objects).unwrap()),
        Arc::new(SqliteCatalog::open(dir.join("catalog.db")).await.unwrap()),
        IngestMetrics::default(),
    )
    .await
    .unwrap()
}

fn wal_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

/// The tenant's frames, stacks (as frame ids), profiles and series in the head, in a comparable form.
type HeadContents = (
    Vec<(u64, Frame)>,
    Vec<(u64, Vec<u64>)>,
    Vec<SeriesProfile>,
    Vec<(u64, Vec<LabelPair>)>,
);

fn contents(ingester: &Ingester) -> HeadContents {
    let head = ingester.head().lock().unwrap();
    let mut frames = Vec::new();
    let mut stacks = Vec::new();
    let mut profiles = Vec::new();
    let mut series = Vec::new();
    for generation in head.generations.values() {
        let t = &generation.tenants["t"];
        frames.extend(t.frames.iter().map(|(k, v)| (*k, v.clone())));
        stacks.extend(t.stacks.iter().map(|(k, v)| (*k, v.clone())));
        profiles.extend(t.profiles.iter().cloned());
        series.extend(t.series.iter().map(|(k, v)| (*k, v.clone())));
    }
    frames.sort_by_key(|f| f.0);
    stacks.sort_by_key(|s| s.0);
    (frames, stacks, profiles, series)
}

#[tokio::test]
async fn records_leave_out_the_symbols_their_segment_holds_and_replay_rebuilds_them() {
    let dir = tempfile::tempdir().unwrap();
    let ingester = open(dir.path()).await;
    let empty = wal_bytes(dir.path());
    ingester.write(push(200, 1)).await.unwrap();
    let first = wal_bytes(dir.path()) - empty;
    // The same 200 stacks again, and 20 new ones with two new frames.
    ingester.write(push(220, 2)).await.unwrap();
    let second = wal_bytes(dir.path()) - empty - first;
    assert!(
        second * 2 < first,
        "the second record ({second} bytes) repeats the symbols of the first ({first} bytes)"
    );
    let before = contents(&ingester);
    assert_eq!((before.0.len(), before.1.len()), (222, 220));
    assert_eq!(before.3.len(), 1);
    assert_eq!(before.3[0].1.len(), 2, "the series keeps its labels");
    assert!(
        before.0.iter().all(|(_, f)| !f.function_name.is_empty()),
        "every frame keeps its name"
    );
    drop(ingester);

    let replayed = open(dir.path()).await;
    assert_eq!(contents(&replayed), before);
}

/// Pushes through a distributor a gzipped CPU pprof whose stacks are runs of three consecutive
/// functions of `svc.handlerNNN` for NNN below `functions`.
async fn push_pprof(distributor: &Distributor, functions: usize) {
    let names: Vec<String> = (0..functions)
        .map(|i| format!("svc.handler{i:03}"))
        .collect();
    let stacks: Vec<Vec<&str>> = names
        .windows(3)
        .map(|w| w.iter().map(String::as_str).collect())
        .collect();
    let samples: Vec<(&[&str], i64)> = stacks.iter().map(|s| (s.as_slice(), 10)).collect();
    let profile = profusion_testing::cpu_pprof(profusion_testing::now_nanos(), &samples);
    let body = profusion_testing::gzip(&prost::Message::encode_to_vec(&profile));
    distributor
        .push(
            "t",
            vec![IncomingProfile {
                labels: Labels::from_pairs([("__name__", "process_cpu"), ("service_name", "svc")]),
                body: ProfileBody::Raw(body.into()),
                id: String::new(),
                options: ConvertOptions::default(),
            }],
        )
        .await
        .unwrap();
}

/// What the head must hold for the functions below `functions`, as `cpu_pprof` writes them.
fn expected_frames(functions: usize) -> Vec<(u64, Frame)> {
    let mut frames: Vec<(u64, Frame)> = (0..functions)
        .map(|i| {
            let name = format!("svc.handler{i:03}");
            let mut frame = Frame {
                function_name: name.clone(),
                system_name: name,
                filename: "main.go".into(),
                line: 10,
                start_line: 1,
                ..Frame::default()
            };
            frame.id = profusion_model::symbols::frame_id(&frame);
            (frame.id, frame)
        })
        .collect();
    frames.sort_by_key(|f| f.0);
    frames
}

/// A pushed pprof's frames leave their strings in the request until the ingester finds it
/// lacks them: the head gets every string of every new frame, in the generation that saw them
/// first and again in a fresh one after a flush, and a replay rebuilds the same head.
#[tokio::test]
async fn frames_left_in_a_pushed_pprof_reach_the_head_whole() {
    let dir = tempfile::tempdir().unwrap();
    let ingester = open(dir.path()).await;
    let distributor = Distributor::new(
        Ring::new(vec![Arc::clone(&ingester) as Arc<dyn IngesterClient>], 1),
        Limits::default(),
        IngestMetrics::default(),
    );
    push_pprof(&distributor, 50).await;
    assert_eq!(contents(&ingester).0, expected_frames(50));
    // Ten new functions among fifty the head holds.
    push_pprof(&distributor, 60).await;
    assert_eq!(contents(&ingester).0, expected_frames(60));
    // A flush drops the generation that held them: the next push brings them all again.
    ingester.flush().await.unwrap();
    push_pprof(&distributor, 60).await;
    let before = contents(&ingester);
    assert_eq!(before.0, expected_frames(60));
    assert_eq!(before.2.len(), 1, "one profile since the flush");
    drop(distributor);
    drop(ingester);

    let replayed = open(dir.path()).await;
    assert_eq!(contents(&replayed), before);
}
