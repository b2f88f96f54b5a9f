//! `profusion-bench jfr`: ingest throughput of real JFR recordings per core of the server (MB/s
//! of recording, events/s), next to the pprof path's (MB/s of uncompressed pprof) measured on
//! the same server in the same run. The recording is made at the start by the installed JDK
//! running the end-to-end tests' Java workload; without a JDK the phase says so.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::push::push_all;
use crate::run::{cpu_payloads, cpu_seconds, start_server};
use crate::workload::{Fleet, FleetShape};

/// The JFR event types the server maps to profiles.
const MAPPED: &[&str] = &[
    "jdk.ExecutionSample",
    "jdk.ObjectAllocationSample",
    "jdk.ObjectAllocationInNewTLAB",
    "jdk.ObjectAllocationOutsideTLAB",
    "jdk.JavaMonitorEnter",
    "jdk.ThreadPark",
];

/// Events of the mapped types in a recording, as the JDK's `jfr summary` counts them.
fn mapped_events(jdk: &Path, recording: &Path) -> u64 {
    let out = Command::new(jdk.join("bin/jfr"))
        .arg("summary")
        .arg(recording)
        .output()
        .expect("jfr summary");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut cols = l.split_whitespace();
            let (name, count) = (cols.next()?, cols.next()?);
            MAPPED.contains(&name).then(|| count.parse::<u64>().ok())?
        })
        .sum()
}

/// Pushes `recording` as raw JFR bodies from `concurrency` connections for `seconds`; returns
/// (uploads accepted, failures, wall seconds).
async fn push_recordings(
    url: &str,
    recording: Arc<Vec<u8>>,
    concurrency: usize,
    seconds: u64,
) -> (u64, u64, f64) {
    let client = reqwest::Client::new();
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let base = crate::now_nanos() / 1_000_000_000 - 3_600;
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let (client, recording, ok, failed) = (
            client.clone(),
            Arc::clone(&recording),
            Arc::clone(&ok),
            Arc::clone(&failed),
        );
        let url = url.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut i = 0i64;
            while Instant::now() < deadline {
                // Each upload its own ten seconds of a pod's history.
                let from = base + (i * concurrency as i64 + worker as i64) % 3_000;
                let r = client
                    .post(format!(
                        "{url}/ingest?name=bench-java{{pod=p{worker}}}&format=jfr&from={from}&until={}&spyName=javaspy&sampleRate=100",
                        from + 10
                    ))
                    .header("content-type", "application/octet-stream")
                    .body(recording.as_ref().clone())
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().is_success() => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
                i += 1;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    (
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64(),
    )
}

/// The JFR phase: a recording of `record_seconds`, then `seconds` of JFR pushes and `seconds`
/// of pprof pushes to one server, each at `concurrency`.
pub(crate) async fn jfr_ingest(
    binary: &Path,
    out: &Path,
    seconds: u64,
    record_seconds: u32,
) -> Value {
    let Some(jdk) = profusion_tests::jfr::jdk("profusion-bench jfr") else {
        return json!("not run: no JDK 17 (eval \"$(scripts/install-test-clients)\")");
    };
    let dir = out.join("jfr");
    std::fs::create_dir_all(&dir).expect("jfr directory");
    eprintln!("  recording the Java workload for {record_seconds} s");
    let path = profusion_tests::jfr::record(&jdk, &dir, record_seconds);
    let recording = Arc::new(std::fs::read(&path).expect("recording"));
    let events = mapped_events(&jdk, &path);
    let concurrency = 4;

    let data = out.join("data-jfr");
    let server = start_server(binary, &data, &[]);
    let url = server.url("");
    let cpu_before = cpu_seconds(&server);
    let (uploads, failures, wall) =
        push_recordings(&url, Arc::clone(&recording), concurrency, seconds).await;
    let jfr_cpu = (cpu_seconds(&server) - cpu_before).max(0.01);
    let jfr_mb = uploads as f64 * recording.len() as f64 / 1e6;

    let payloads = cpu_payloads(&Fleet::new(FleetShape::default()), 200);
    let cpu_before = cpu_seconds(&server);
    let mut i = 0usize;
    let stats = push_all(
        &url,
        None,
        concurrency,
        None,
        Some(Instant::now() + Duration::from_secs(seconds)),
        None,
        move || {
            i += 1;
            Some(payloads[i % payloads.len()].clone())
        },
    )
    .await;
    let pprof_cpu = (cpu_seconds(&server) - cpu_before).max(0.01);
    drop(server);
    let _ = std::fs::remove_dir_all(&data);
    let jfr_mb_per_core = jfr_mb / jfr_cpu;
    let pprof_mb_per_core = stats.raw_bytes as f64 / 1e6 / pprof_cpu;
    eprintln!(
        "  JFR: {uploads} uploads of {:.2} MB ({events} events) in {wall:.1} s: {jfr_mb_per_core:.1} MB/s and {:.0} events/s per core; pprof: {pprof_mb_per_core:.1} MB/s per core",
        recording.len() as f64 / 1e6,
        uploads as f64 * events as f64 / jfr_cpu
    );
    json!({
        "recording_bytes": recording.len(),
        "recording_events": events,
        "concurrency": concurrency,
        "jfr": {
            "uploads": uploads,
            "failures": failures,
            "wall_s": wall,
            "server_cpu_s": jfr_cpu,
            "mb_per_s_per_core": jfr_mb_per_core,
            "events_per_s_per_core": uploads as f64 * events as f64 / jfr_cpu,
            "uploads_per_s": uploads as f64 / wall,
        },
        "pprof": {
            "profiles": stats.profiles,
            "failures": stats.failures,
            "server_cpu_s": pprof_cpu,
            "mb_per_s_per_core": pprof_mb_per_core,
            "profiles_per_s_per_core": stats.profiles as f64 / pprof_cpu,
        },
        "ratio_jfr_to_pprof_mb_per_core": jfr_mb_per_core / pprof_mb_per_core.max(1e-9),
    })
}
