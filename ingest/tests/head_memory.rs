//! `--ingester.max-head-bytes` bounds what the head counts, so the count must be what the head
//! really holds. A counting global allocator measures the heap the head keeps after appending
//! profiles converted from pprof (the push path) and after replaying them from the WAL's
//! encoding (the restart path), and the head's own count must be within 10 % of it.
//!
//! One test per binary: the allocator counts every thread of the process.

use cap::Cap;
use profusion_ingest::ingester::head::HeadData;
use profusion_ingest::limits::Limits;
use profusion_ingest::pprof::{self, ConvertOptions};
use profusion_model::labels::Labels;
use profusion_proto::ingester::v1::WriteRequest;
use profusion_testing::Rng;
use profusion_testing::profiles::{TestSample, pprof as build_pprof};
use prost::Message;

/// The system allocator, counting the bytes live in it.
#[global_allocator]
static ALLOCATOR: Cap<std::alloc::System> = Cap::new(std::alloc::System, usize::MAX);

/// Writes shaped like a service fleet's CPU profiles: `services` × `pods` series, each profile
/// a few hundred samples over stacks 8–40 frames deep drawn from a shared pool of functions.
fn fleet_writes(profiles_per_pod: usize) -> Vec<WriteRequest> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let functions: Vec<String> = (0..600)
        .map(|i| {
            format!(
                "github.com/acme/service/pkg{}/handler.(*Type{i}).Method{}",
                i % 40,
                i % 7
            )
        })
        .collect();
    let stacks: Vec<Vec<&str>> = (0..1500)
        .map(|_| {
            let depth = 8 + rng.below(33) as usize;
            (0..depth)
                .map(|_| functions[rng.below(functions.len() as u64) as usize].as_str())
                .collect()
        })
        .collect();
    let limits = Limits::default();
    let mut writes = Vec::new();
    for round in 0..profiles_per_pod {
        for service in 0..4 {
            for pod in 0..5 {
                let time = 1_700_000_000_000_000_000 + round as i64 * 10_000_000_000;
                let samples: Vec<TestSample<'_>> = (0..200 + rng.below(400) as usize)
                    .map(|_| TestSample {
                        stack: &stacks[rng.below(stacks.len() as u64) as usize],
                        value: 10_000_000 * (1 + rng.below(20) as i64),
                        labels: &[],
                    })
                    .collect();
                let profile = build_pprof(
                    ("cpu", "nanoseconds"),
                    ("cpu", "nanoseconds"),
                    10_000_000,
                    time,
                    &samples,
                );
                let labels = Labels::from_pairs([
                    ("__name__", "process_cpu"),
                    ("service_name", format!("service-{service}").as_str()),
                    ("pod", format!("service-{service}-pod-{pod}").as_str()),
                ]);
                let converted = pprof::convert(
                    &profile,
                    &labels,
                    "",
                    &ConvertOptions::default(),
                    &limits,
                    time,
                    profile.encoded_len(),
                )
                .expect("a valid profile");
                writes.push(WriteRequest {
                    tenant: "t".into(),
                    profiles: converted.profiles,
                    stacks: converted.stacks,
                    frames: converted.frames,
                });
            }
        }
    }
    writes
}

/// The heap a head keeps from `writes`: live bytes after appending them all, minus before the
/// first was made, once the writes themselves are gone; and what the head counts.
fn measure<I: Iterator<Item = WriteRequest>>(writes: impl FnOnce() -> I) -> (usize, usize) {
    let before = ALLOCATOR.allocated();
    let mut head = HeadData::default();
    for w in writes() {
        head.append(w);
    }
    (ALLOCATOR.allocated() - before, head.bytes)
}

#[test]
fn the_head_counts_the_memory_it_holds() {
    let (pushed_live, pushed_counted) = measure(|| fleet_writes(10).into_iter());
    // WAL replay: the same writes decoded, as prost builds them.
    let encoded: Vec<Vec<u8>> = fleet_writes(10).iter().map(|w| w.encode_to_vec()).collect();
    let (replayed_live, replayed_counted) = measure(|| {
        encoded
            .iter()
            .map(|b| WriteRequest::decode(b.as_slice()).expect("decodes"))
    });

    for (path, live, counted) in [
        ("pushed", pushed_live, pushed_counted),
        ("replayed", replayed_live, replayed_counted),
    ] {
        let ratio = counted as f64 / live as f64;
        eprintln!("{path}: the head holds {live} bytes and counts {counted} ({ratio:.3})");
        assert!(
            (0.9..=1.1).contains(&ratio),
            "{path}: the head counts {counted} bytes but holds {live} (ratio {ratio:.3})"
        );
    }
}
