//! Ingest-path benchmark: realistic gzipped CPU profiles through the whole write path of one
//! ingester (decode, validate, normalize, series split, WAL append with group commit and
//! fsync, head append), next to the bare decode of the same payloads (gunzip and protobuf
//! parse only), measured in the same run. Reported per CPU-second of the process, so the
//! figures are per core, and as a ratio to the bare decode.
//!
//! `cargo bench -p profusion-ingest --bench ingest_path [-- --profiles N --rounds R]`

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use object_store::local::LocalFileSystem;
use profusion_catalog::SqliteCatalog;
use profusion_ingest::distributor::{Distributor, IncomingProfile, ProfileBody};
use profusion_ingest::ingester::{Ingester, IngesterClient, IngesterConfig};
use profusion_ingest::limits::Limits;
use profusion_ingest::metrics::IngestMetrics;
use profusion_ingest::pprof::ConvertOptions;
use profusion_ingest::ring::Ring;
use profusion_model::labels::Labels;
use profusion_proto::google::v1::{
    Function, Label, Line, Location, Mapping, Profile, Sample, ValueType,
};
use profusion_testing::gzip;
use prost::Message;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// Zipf-like pick in [0, n): small indexes are much more likely.
    fn skewed(&mut self, n: u64) -> u64 {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        ((n as f64).powf(u) - 1.0) as u64 % n.max(1)
    }
}

const PACKAGES: &[&str] = &[
    "github.com/acme/shop/internal/cart",
    "github.com/acme/shop/internal/payments",
    "github.com/acme/shop/pkg/db",
    "net/http",
    "encoding/json",
    "runtime",
    "google.golang.org/grpc",
    "github.com/acme/shop/internal/search",
];
const VERBS: &[&str] = &[
    "Handle", "Serve", "Encode", "Decode", "Query", "Scan", "Marshal", "Lookup", "Update", "Flush",
];
const NOUNS: &[&str] = &[
    "Item", "Order", "Request", "Row", "Index", "Batch", "Session", "Buffer", "Token", "Stream",
];

/// A service's distinct call stacks (leaf first): 10-60 frames deep, walked from a few roots
/// through a call graph of `functions` functions with skewed fan-out, so stacks share
/// prefixes as real ones do.
fn stack_pool(rng: &mut Rng, functions: u64, stacks: usize) -> Vec<Vec<u64>> {
    (0..stacks)
        .map(|_| {
            let depth = 10 + rng.below(51);
            let mut stack = Vec::with_capacity(depth as usize);
            let mut current = 1 + rng.skewed(8);
            for _ in 0..depth {
                stack.push(current);
                current = 1 + (current + rng.skewed(functions / 4)) % functions;
            }
            stack.reverse();
            stack
        })
        .collect()
}

/// A Go-like CPU profile of `samples` samples drawn from the service's stack pool.
fn generate(
    rng: &mut Rng,
    functions: u64,
    pool: &[Vec<u64>],
    samples: usize,
    time_nanos: i64,
) -> Profile {
    let mut strings = vec![
        String::new(),
        "cpu".into(),
        "nanoseconds".into(),
        "/usr/bin/shop".into(),
        "endpoint".into(),
    ];
    let endpoints = ["/cart", "/checkout", "/search", "/login"];
    let endpoint_idx: Vec<i64> = endpoints
        .iter()
        .map(|e| {
            strings.push((*e).into());
            strings.len() as i64 - 1
        })
        .collect();
    let mut function = Vec::new();
    let mut location = Vec::new();
    for id in 1..=functions {
        let pkg = PACKAGES[(id % PACKAGES.len() as u64) as usize];
        let name = format!(
            "{pkg}.(*{}{}).{}{}",
            NOUNS[(id / 7 % 10) as usize],
            id / 70,
            VERBS[(id % 10) as usize],
            NOUNS[(id / 3 % 10) as usize]
        );
        strings.push(name);
        let name_idx = strings.len() as i64 - 1;
        strings.push(format!(
            "{pkg}/{}.go",
            NOUNS[(id % 10) as usize].to_lowercase()
        ));
        let file_idx = strings.len() as i64 - 1;
        function.push(Function {
            id,
            name: name_idx,
            system_name: name_idx,
            filename: file_idx,
            start_line: (id * 13 % 900) as i64,
        });
        location.push(Location {
            id,
            mapping_id: 1,
            address: 0x40_0000 + id * 0x40,
            line: vec![Line {
                function_id: id,
                line: (id * 31 % 1200) as i64 + 1,
            }],
            is_folded: false,
        });
    }
    let mut sample = Vec::with_capacity(samples);
    for _ in 0..samples {
        // Hot code paths dominate: a Zipf-like pick from the service's stack pool.
        let stack = pool[rng.skewed(pool.len() as u64) as usize].clone();
        let label = if rng.below(4) == 0 {
            vec![Label {
                key: 4,
                str: endpoint_idx[rng.below(4) as usize],
                ..Label::default()
            }]
        } else {
            vec![]
        };
        sample.push(Sample {
            location_id: stack,
            value: vec![10_000_000 * (1 + rng.skewed(50) as i64)],
            label,
        });
    }
    Profile {
        sample_type: vec![ValueType { r#type: 1, unit: 2 }],
        sample,
        mapping: vec![Mapping {
            id: 1,
            memory_start: 0x40_0000,
            memory_limit: 0x80_0000,
            filename: 3,
            has_functions: true,
            ..Mapping::default()
        }],
        location,
        function,
        string_table: strings,
        time_nanos,
        duration_nanos: 10_000_000_000,
        period_type: Some(ValueType { r#type: 1, unit: 2 }),
        period: 10_000_000,
        ..Profile::default()
    }
}

/// User plus system CPU time of this process.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

struct Measured {
    wall: Duration,
    cpu: Duration,
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let n_profiles = arg("--profiles", 300);
    let rounds = arg("--rounds", 3);
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let now = profusion_model::time::now_nanos();
    let pool = stack_pool(&mut rng, 600, 5000);
    let payloads: Vec<(Bytes, usize)> = (0..n_profiles)
        .map(|i| {
            let p = generate(&mut rng, 600, &pool, 1000 + (i % 5) * 500, now);
            let raw = p.encode_to_vec();
            (Bytes::from(gzip(&raw)), raw.len())
        })
        .collect();
    let uncompressed: usize = payloads.iter().map(|(_, n)| n).sum();
    let compressed: usize = payloads.iter().map(|(b, _)| b.len()).sum();
    let total_profiles = n_profiles * rounds;
    let total_mb = (uncompressed * rounds) as f64 / 1e6;
    eprintln!(
        "{n_profiles} profiles × {rounds} rounds; {:.1} KB uncompressed, {:.1} KB gzipped per profile on average",
        uncompressed as f64 / n_profiles as f64 / 1e3,
        compressed as f64 / n_profiles as f64 / 1e3
    );

    // Reference: gunzip and protobuf parse only, on one core.
    let (cpu0, t0) = (cpu_time(), Instant::now());
    let mut sink = 0usize;
    for _ in 0..rounds {
        for (gz, n) in &payloads {
            let mut raw = Vec::with_capacity(*n);
            flate2::read::GzDecoder::new(gz.as_ref())
                .read_to_end(&mut raw)
                .unwrap();
            sink += Profile::decode(raw.as_slice()).unwrap().sample.len();
        }
    }
    let decode = Measured {
        wall: t0.elapsed(),
        cpu: cpu_time() - cpu0,
    };

    // The distributor's CPU part alone: decode, validate, normalize, split into series.
    let convert_limits = Limits {
        ingestion_rate_bytes: 0.0,
        max_profile_size_bytes: 64 << 20,
        ..Limits::default()
    };
    let convert_labels = Labels::from_pairs([
        ("__name__", "process_cpu"),
        ("service_name", "shop"),
        ("env", "bench"),
    ]);
    let converter = Distributor::new(
        Ring::new(vec![], 1),
        convert_limits,
        IngestMetrics::default(),
    );
    let (cpu0, t0) = (cpu_time(), Instant::now());
    for _ in 0..rounds {
        for (gz, _) in &payloads {
            let incoming = IncomingProfile {
                labels: convert_labels.clone(),
                body: ProfileBody::Raw(gz.clone()),
                id: String::new(),
                options: ConvertOptions::default(),
            };
            sink += converter
                .prepare(vec![incoming], now)
                .unwrap()
                .profiles
                .len();
        }
    }
    assert!(sink > 0);
    let convert = Measured {
        wall: t0.elapsed(),
        cpu: cpu_time() - cpu0,
    };

    // The write path of one ingester, with a real WAL on local disk.
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ingest = runtime.block_on(async {
        let objects = dir.path().join("objects");
        std::fs::create_dir_all(&objects).unwrap();
        let catalog = Arc::new(
            SqliteCatalog::open(dir.path().join("catalog.db"))
                .await
                .unwrap(),
        );
        let ingester = Ingester::open(
            IngesterConfig {
                id: "bench".into(),
                wal_dir: dir.path().join("wal"),
                max_block_duration: Duration::from_secs(3600),
                max_head_bytes: usize::MAX,
                head_full_wait: std::time::Duration::from_secs(30),
                flush_check_interval: Duration::from_secs(3600),
                local_store_root: None,
                max_series_per_tenant: 0,
            },
            Arc::new(LocalFileSystem::new_with_prefix(&objects).unwrap()),
            catalog,
            IngestMetrics::default(),
        )
        .await
        .unwrap();
        let limits = Limits {
            ingestion_rate_bytes: 0.0,
            max_profile_size_bytes: 64 << 20,
            ..Limits::default()
        };
        let distributor = Arc::new(Distributor::new(
            Ring::new(vec![Arc::clone(&ingester) as Arc<dyn IngesterClient>], 1),
            limits,
            IngestMetrics::default(),
        ));
        let labels = Labels::from_pairs([
            ("__name__", "process_cpu"),
            ("service_name", "shop"),
            ("env", "bench"),
        ]);
        let payloads = Arc::new(payloads);
        let (cpu0, t0) = (cpu_time(), Instant::now());
        // Eight concurrent pushers, as many agents would be; each push waits for its fsync.
        let writers = 8;
        let mut tasks = Vec::new();
        for w in 0..writers {
            let (distributor, payloads, labels) = (
                Arc::clone(&distributor),
                Arc::clone(&payloads),
                labels.clone(),
            );
            tasks.push(tokio::spawn(async move {
                for i in (w..total_profiles).step_by(writers) {
                    let (gz, _) = &payloads[i % payloads.len()];
                    let incoming = IncomingProfile {
                        labels: labels.clone(),
                        body: ProfileBody::Raw(gz.clone()),
                        id: String::new(),
                        options: ConvertOptions::default(),
                    };
                    distributor.push("bench", vec![incoming]).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let measured = Measured {
            wall: t0.elapsed(),
            cpu: cpu_time() - cpu0,
        };
        // Each pprof splits into one series profile per distinct `endpoint` sample label (five).
        assert_eq!(
            ingester.head().lock().unwrap().num_profiles(),
            total_profiles * 5
        );
        measured
    });

    let per_cpu = |m: &Measured| {
        (
            total_profiles as f64 / m.cpu.as_secs_f64(),
            total_mb / m.cpu.as_secs_f64(),
        )
    };
    let (d_pps, d_mbs) = per_cpu(&decode);
    let (i_pps, i_mbs) = per_cpu(&ingest);
    let (c_pps, c_mbs) = per_cpu(&convert);
    println!(
        "| phase | wall s | CPU s | profiles/s per core | MB/s per core (uncompressed pprof) |"
    );
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| bare decode (gunzip + parse) | {:.2} | {:.2} | {d_pps:.0} | {d_mbs:.1} |",
        decode.wall.as_secs_f64(),
        decode.cpu.as_secs_f64()
    );
    println!(
        "| convert only (decode, validate, normalize, split) | {:.2} | {:.2} | {c_pps:.0} | {c_mbs:.1} |",
        convert.wall.as_secs_f64(),
        convert.cpu.as_secs_f64()
    );
    println!(
        "| ingest path (decode → head + WAL) | {:.2} | {:.2} | {i_pps:.0} | {i_mbs:.1} |",
        ingest.wall.as_secs_f64(),
        ingest.cpu.as_secs_f64()
    );
    println!(
        "ingest path / bare decode throughput per core: {:.2}",
        i_pps / d_pps
    );
    let report = serde_json::json!({
        "profiles": total_profiles,
        "uncompressed_mb": total_mb,
        "decode": { "wall_s": decode.wall.as_secs_f64(), "cpu_s": decode.cpu.as_secs_f64(), "profiles_per_cpu_s": d_pps, "mb_per_cpu_s": d_mbs },
        "convert": { "wall_s": convert.wall.as_secs_f64(), "cpu_s": convert.cpu.as_secs_f64(), "profiles_per_cpu_s": c_pps, "mb_per_cpu_s": c_mbs },
        "ingest": { "wall_s": ingest.wall.as_secs_f64(), "cpu_s": ingest.cpu.as_secs_f64(), "profiles_per_cpu_s": i_pps, "mb_per_cpu_s": i_mbs },
        "ratio_ingest_to_decode": i_pps / d_pps,
    });
    println!("{report}");
}
