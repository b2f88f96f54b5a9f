//! Pushing generated profiles to a server over HTTP (Connect `Push`, binary protobuf), with
//! a bounded concurrency, an optional rate limit, per-request latencies and a progress line.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use profusion_proto::push::v1::{PushRequest, RawProfileSeries, RawSample};
use profusion_proto::types::v1::LabelPair;
use profusion_testing::ConnectClient;
use prost::Message;
use tokio::sync::Mutex;

use crate::workload::GeneratedProfile;

/// What a push run measured.
#[derive(Debug, Clone, Default)]
pub(crate) struct PushStats {
    pub(crate) profiles: u64,
    /// Bytes of the pushed pprof bodies (gzipped, unless the workload pushes them plain).
    pub(crate) body_bytes: u64,
    pub(crate) raw_bytes: u64,
    pub(crate) samples: u64,
    pub(crate) failures: u64,
    pub(crate) wall: Duration,
    /// Per-request latencies, sorted.
    pub(crate) latencies: Vec<Duration>,
    /// When each successful push started and how long it took, in completion order.
    pub(crate) pushes: Vec<(Instant, Duration)>,
}

impl PushStats {
    pub(crate) fn percentile(&self, p: f64) -> Duration {
        percentile(&self.latencies, p)
    }
}

/// The `p` quantile of sorted latencies (zero for none).
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

pub(crate) fn request(p: &GeneratedProfile, id: u64) -> Vec<u8> {
    PushRequest {
        series: vec![RawProfileSeries {
            labels: p
                .labels
                .iter()
                .map(|(name, value)| LabelPair {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
            samples: vec![RawSample {
                raw_profile: p.body.clone().into(),
                id: format!("{:08x}-0000-4000-8000-{id:012x}", id >> 16),
            }],
            annotations: Vec::new(),
        }],
    }
    .encode_to_vec()
}

/// Pushes every profile `next` yields until it yields `None` or `deadline` passes, from
/// `concurrency` connections, at most `rate` profiles per second when given. Prints a
/// progress line to stderr every second when `progress` is set.
pub(crate) async fn push_all<F>(
    url: &str,
    tenant: Option<&str>,
    concurrency: usize,
    rate: Option<f64>,
    deadline: Option<Instant>,
    progress: Option<&str>,
    next: F,
) -> PushStats
where
    F: FnMut() -> Option<GeneratedProfile> + Send + 'static,
{
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .expect("HTTP client");
    let mut client = ConnectClient::new(url).with_http(http);
    if let Some(t) = tenant {
        client = client.tenant(t);
    }
    let source = Arc::new(Mutex::new(next));
    let started = Instant::now();
    let issued = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let stats = Arc::new(Mutex::new(PushStats::default()));
    let reporter = progress.map(|label| {
        let (done, label) = (Arc::clone(&done), label.to_owned());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let n = done.load(Ordering::Relaxed);
                let secs = started.elapsed().as_secs_f64();
                eprint!(
                    "\r  {label}: {n} profiles in {secs:.0}s ({:.0}/s)   ",
                    n as f64 / secs.max(1e-9)
                );
                let _ = std::io::stderr().flush();
            }
        })
    });
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (client, source, stats, issued, done) = (
                client.clone(),
                Arc::clone(&source),
                Arc::clone(&stats),
                Arc::clone(&issued),
                Arc::clone(&done),
            );
            tokio::spawn(async move {
                loop {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return;
                    }
                    let n = issued.fetch_add(1, Ordering::Relaxed);
                    if let Some(rate) = rate {
                        let due = started + Duration::from_secs_f64(n as f64 / rate);
                        tokio::time::sleep_until(due.into()).await;
                    }
                    let next = {
                        let mut source = source.lock().await;
                        (*source)()
                    };
                    let Some(profile) = next else {
                        return;
                    };
                    let body = request(&profile, n);
                    let t = Instant::now();
                    let ok = client
                        .send("/push.v1.PusherService/Push", body)
                        .await
                        .is_ok();
                    let latency = t.elapsed();
                    done.fetch_add(1, Ordering::Relaxed);
                    let mut s = stats.lock().await;
                    if ok {
                        s.profiles += 1;
                        s.body_bytes += profile.body.len() as u64;
                        s.raw_bytes += profile.raw_bytes as u64;
                        s.samples += profile.samples as u64;
                        s.latencies.push(latency);
                        s.pushes.push((t, latency));
                    } else {
                        s.failures += 1;
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
    if let Some(r) = reporter {
        r.abort();
        eprintln!();
    }
    let mut out = stats.lock().await.clone();
    out.wall = started.elapsed();
    out.latencies.sort_unstable();
    out
}
