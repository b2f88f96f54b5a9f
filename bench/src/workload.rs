//! The workload generator: deterministic by seed, profiles like a fleet of Go services send.
//!
//! N services × M pods, each pod sending CPU profiles (100 Hz, 10 s), memory profiles (alloc
//! and in-use objects and bytes), goroutine and mutex profiles. Stacks are 10–80 frames deep,
//! walked through a per-service call graph whose edges are picked Zipf-like, so stacks share
//! prefixes and a few hot paths dominate, as in real fleets. Function and file names follow Go
//! conventions; every pod carries its own labels.

use profusion_proto::google::v1::{Function, Line, Location, Mapping, Profile, Sample, ValueType};

/// xorshift64: fast, deterministic, good enough to spread a workload.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// Zipf-like pick in `[0, n)`: small indexes are much more likely.
    pub(crate) fn skewed(&mut self, n: u64) -> u64 {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        ((n as f64).powf(u) - 1.0) as u64 % n.max(1)
    }
}

/// The profile kinds a pod sends, with their pprof sample types and Pyroscope `__name__`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Cpu,
    Memory,
    Goroutine,
    Mutex,
}

impl Kind {
    pub(crate) const ALL: [Kind; 4] = [Kind::Cpu, Kind::Memory, Kind::Goroutine, Kind::Mutex];

    pub(crate) fn metric(self) -> &'static str {
        match self {
            Kind::Cpu => "process_cpu",
            Kind::Memory => "memory",
            Kind::Goroutine => "goroutine",
            Kind::Mutex => "mutex",
        }
    }

    fn sample_types(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Kind::Cpu => &[("samples", "count"), ("cpu", "nanoseconds")],
            Kind::Memory => &[
                ("alloc_objects", "count"),
                ("alloc_space", "bytes"),
                ("inuse_objects", "count"),
                ("inuse_space", "bytes"),
            ],
            Kind::Goroutine => &[("goroutine", "count")],
            Kind::Mutex => &[("contentions", "count"), ("delay", "nanoseconds")],
        }
    }

    fn period_type(self) -> (&'static str, &'static str, i64) {
        match self {
            Kind::Cpu => ("cpu", "nanoseconds", 10_000_000),
            Kind::Memory => ("space", "bytes", 524_288),
            Kind::Goroutine => ("goroutine", "count", 1),
            Kind::Mutex => ("contentions", "count", 1),
        }
    }
}

const PACKAGES: &[&str] = &[
    "github.com/acme/shop/internal/cart",
    "github.com/acme/shop/internal/payments",
    "github.com/acme/shop/internal/search",
    "github.com/acme/shop/pkg/db",
    "github.com/acme/shop/pkg/cache",
    "net/http",
    "encoding/json",
    "runtime",
    "google.golang.org/grpc",
    "database/sql",
];
const TYPES: &[&str] = &[
    "Handler", "Server", "Client", "Store", "Codec", "Pool", "Cache", "Index", "Queue", "Conn",
];
const VERBS: &[&str] = &[
    "Handle", "Serve", "Encode", "Decode", "Query", "Scan", "Marshal", "Lookup", "Update", "Flush",
    "Read", "Write",
];
const NOUNS: &[&str] = &[
    "Item", "Order", "Request", "Row", "Batch", "Session", "Buffer", "Token", "Stream", "Entry",
];

/// What a generated fleet looks like.
#[derive(Debug, Clone)]
pub(crate) struct FleetShape {
    pub(crate) seed: u64,
    pub(crate) services: usize,
    pub(crate) pods: usize,
    /// Functions in each service's call graph.
    pub(crate) functions: u64,
    /// Distinct stacks per service.
    pub(crate) stacks: usize,
    /// Samples in one CPU profile (other kinds scale from it).
    pub(crate) samples: usize,
}

impl Default for FleetShape {
    fn default() -> Self {
        Self {
            seed: 1,
            services: 4,
            pods: 5,
            functions: 1500,
            stacks: 4000,
            samples: 1000,
        }
    }
}

/// One service: its call graph's stacks (function ids, root first) and symbol tables.
#[derive(Debug, Clone)]
struct Service {
    name: String,
    stacks: Vec<Vec<u64>>,
    functions: Vec<(String, String)>,
}

/// A generated profile, ready to push.
#[derive(Debug, Clone)]
pub(crate) struct GeneratedProfile {
    pub(crate) service: String,
    pub(crate) pod: String,
    /// Series labels, `__name__` first.
    pub(crate) labels: Vec<(String, String)>,
    /// The pprof as pushed: gzip-compressed as agents send it, or plain (the history at agent
    /// cadence, whose harness could not gzip as fast as the server ingests).
    pub(crate) body: Vec<u8>,
    /// Uncompressed pprof size.
    pub(crate) raw_bytes: usize,
    /// Samples in the pprof.
    pub(crate) samples: usize,
}

/// Every service and pod of a fleet; produces profiles on demand, deterministically.
#[derive(Debug, Clone)]
pub(crate) struct Fleet {
    shape: FleetShape,
    services: Vec<Service>,
}

impl Fleet {
    pub(crate) fn new(shape: FleetShape) -> Self {
        let mut rng = Rng::new(shape.seed);
        let services = (0..shape.services)
            .map(|s| {
                let functions: Vec<(String, String)> = (0..shape.functions)
                    .map(|id| {
                        let pkg = PACKAGES[rng.below(PACKAGES.len() as u64) as usize];
                        let ty = TYPES[(id % TYPES.len() as u64) as usize];
                        let name = format!(
                            "{pkg}.(*{ty}{}).{}{}",
                            id / 50,
                            VERBS[rng.below(VERBS.len() as u64) as usize],
                            NOUNS[rng.below(NOUNS.len() as u64) as usize]
                        );
                        let file = format!("{pkg}/{}.go", ty.to_lowercase());
                        (name, file)
                    })
                    .collect();
                let stacks = (0..shape.stacks)
                    .map(|_| {
                        let depth = 10 + rng.below(71);
                        let mut current = rng.skewed(8);
                        (0..depth)
                            .map(|_| {
                                let f = current;
                                current = (current + 1 + rng.skewed(shape.functions / 4))
                                    % shape.functions;
                                f
                            })
                            .collect()
                    })
                    .collect();
                Service {
                    name: format!("shop-{s}"),
                    stacks,
                    functions,
                }
            })
            .collect();
        Self { shape, services }
    }

    pub(crate) fn shape(&self) -> &FleetShape {
        &self.shape
    }

    /// Every (service, pod) pair, in a fixed order.
    pub(crate) fn pods(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..self.services.len()).flat_map(move |s| (0..self.shape.pods).map(move |p| (s, p)))
    }

    /// The profile of `kind` that pod `pod` of service `service` sends at `time_nanos`.
    pub(crate) fn profile(
        &self,
        service: usize,
        pod: usize,
        kind: Kind,
        time_nanos: i64,
    ) -> GeneratedProfile {
        let mut rng = Rng::new(
            self.shape.seed
                ^ (service as u64) << 48
                ^ (pod as u64) << 32
                ^ (time_nanos as u64).rotate_left(17)
                ^ kind as u64,
        );
        let profile = build_pprof(
            &self.services[service],
            kind,
            self.samples(kind),
            time_nanos,
            &mut rng,
        );
        let raw = prost::Message::encode_to_vec(&profile);
        GeneratedProfile {
            service: self.services[service].name.clone(),
            pod: self.pod_name(service, pod),
            labels: self.labels(service, pod, kind),
            body: gzip(&raw),
            raw_bytes: raw.len(),
            samples: profile.sample.len(),
        }
    }

    /// Samples in a profile of `kind`.
    fn samples(&self, kind: Kind) -> usize {
        match kind {
            Kind::Cpu => self.shape.samples,
            Kind::Memory => self.shape.samples / 2,
            Kind::Goroutine => self.shape.samples / 4,
            Kind::Mutex => self.shape.samples / 8,
        }
        .max(1)
    }

    fn pod_name(&self, service: usize, pod: usize) -> String {
        format!(
            "{}-{:05x}",
            self.services[service].name,
            pod * 7919 % 0xfffff
        )
    }

    /// The series labels of a pod's profiles of `kind`, `__name__` first.
    pub(crate) fn labels(&self, service: usize, pod: usize, kind: Kind) -> Vec<(String, String)> {
        vec![
            ("__name__".to_owned(), kind.metric().to_owned()),
            (
                "service_name".to_owned(),
                self.services[service].name.clone(),
            ),
            ("pod".to_owned(), self.pod_name(service, pod)),
            (
                "namespace".to_owned(),
                ["prod", "staging"][service % 2].to_owned(),
            ),
            (
                "region".to_owned(),
                ["eu-west-1", "us-east-1", "ap-south-1"][pod % 3].to_owned(),
            ),
            ("version".to_owned(), format!("v1.{}.{}", service, pod % 4)),
        ]
    }

    /// Variant `variant` of a profile of `kind` from service `service`, uncompressed and
    /// without a time: [`timed`] gives it one. A pool of variants stands in for a fleet's
    /// stream of profiles when generating each would cost more than ingesting it.
    pub(crate) fn variant(&self, service: usize, kind: Kind, variant: u64) -> (Vec<u8>, usize) {
        let mut rng = Rng::new(
            self.shape.seed ^ (service as u64) << 48 ^ variant.rotate_left(23) ^ kind as u64,
        );
        let profile = build_pprof(
            &self.services[service],
            kind,
            self.samples(kind),
            0,
            &mut rng,
        );
        (
            prost::Message::encode_to_vec(&profile),
            profile.sample.len(),
        )
    }
}

/// An encoded pprof `raw` with its `time_nanos` set to `time_nanos` and, when non-zero, its
/// `duration_nanos` to `duration_nanos`: the fields are appended, and protobuf decoders keep
/// the last value of a scalar field.
pub(crate) fn timed(raw: &[u8], time_nanos: i64, duration_nanos: i64) -> Vec<u8> {
    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    let mut out = Vec::with_capacity(raw.len() + 22);
    out.extend_from_slice(raw);
    // Field 9 (`time_nanos`) and 10 (`duration_nanos`), both varints (wire type 0).
    out.push(9 << 3);
    varint(&mut out, time_nanos as u64);
    if duration_nanos != 0 {
        out.push(10 << 3);
        varint(&mut out, duration_nanos as u64);
    }
    out
}

fn build_pprof(
    svc: &Service,
    kind: Kind,
    samples: usize,
    time_nanos: i64,
    rng: &mut Rng,
) -> Profile {
    let mut strings: Vec<String> = vec![String::new()];
    let intern = |strings: &mut Vec<String>, s: &str| -> i64 {
        strings.push(s.to_owned());
        strings.len() as i64 - 1
    };
    let sample_type: Vec<ValueType> = kind
        .sample_types()
        .iter()
        .map(|(t, u)| ValueType {
            r#type: intern(&mut strings, t),
            unit: intern(&mut strings, u),
        })
        .collect();
    let (pt, pu, period) = kind.period_type();
    let period_type = ValueType {
        r#type: intern(&mut strings, pt),
        unit: intern(&mut strings, pu),
    };
    let binary = intern(&mut strings, "/app/server");
    // Only the functions these samples use go into the profile, as Go's runtime writes it.
    let mut picked: Vec<usize> = (0..samples)
        .map(|_| rng.skewed(svc.stacks.len() as u64) as usize)
        .collect();
    picked.sort_unstable();
    let mut used: Vec<u64> = picked
        .iter()
        .flat_map(|&i| svc.stacks[i].iter().copied())
        .collect();
    used.sort_unstable();
    used.dedup();
    let mut function = Vec::with_capacity(used.len());
    let mut location = Vec::with_capacity(used.len());
    for (i, &f) in used.iter().enumerate() {
        let id = i as u64 + 1;
        let (name, file) = &svc.functions[f as usize];
        let name = intern(&mut strings, name);
        let file = intern(&mut strings, file);
        function.push(Function {
            id,
            name,
            system_name: name,
            filename: file,
            start_line: (f * 13 % 900) as i64 + 1,
        });
        location.push(Location {
            id,
            mapping_id: 1,
            address: 0x40_0000 + f * 0x40,
            line: vec![Line {
                function_id: id,
                line: (f * 31 % 1200) as i64 + 1,
            }],
            is_folded: false,
        });
    }
    let sample = picked
        .iter()
        .map(|&i| {
            let location_id = svc.stacks[i]
                .iter()
                .rev()
                .map(|f| used.binary_search(f).expect("used") as u64 + 1)
                .collect();
            let n = 1 + rng.skewed(50) as i64;
            let value = match kind {
                Kind::Cpu => vec![n, n * period],
                Kind::Memory => vec![n, n * 4096, n / 2, n * 2048],
                Kind::Goroutine => vec![n],
                Kind::Mutex => vec![n, n * 150_000],
            };
            Sample {
                location_id,
                value,
                label: Vec::new(),
            }
        })
        .collect();
    Profile {
        sample_type,
        sample,
        mapping: vec![Mapping {
            id: 1,
            memory_start: 0x40_0000,
            memory_limit: 0x80_0000,
            filename: binary,
            has_functions: true,
            ..Mapping::default()
        }],
        location,
        function,
        string_table: strings,
        time_nanos,
        duration_nanos: if kind == Kind::Cpu { 10_000_000_000 } else { 0 },
        period_type: Some(period_type),
        period,
        default_sample_type: if kind == Kind::Cpu { 2 } else { 0 },
        ..Profile::default()
    }
}

pub(crate) use profusion_testing::gzip;

/// The reference of the ingest phase: gunzip and protobuf-parse a payload, nothing else.
pub(crate) fn decode_only(gzipped: &[u8]) -> usize {
    use std::io::Read;
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(gzipped)
        .read_to_end(&mut raw)
        .expect("gunzip");
    let p: Profile = prost::Message::decode(raw.as_slice()).expect("pprof");
    p.sample.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(p: &GeneratedProfile) -> Profile {
        use std::io::Read;
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(p.body.as_slice())
            .read_to_end(&mut raw)
            .unwrap();
        prost::Message::decode(raw.as_slice()).unwrap()
    }

    #[test]
    fn a_timed_variant_decodes_with_its_new_time() {
        let fleet = Fleet::new(FleetShape::default());
        let (raw, samples) = fleet.variant(1, Kind::Cpu, 3);
        let p: Profile = prost::Message::decode(timed(&raw, 1_234, 15).as_slice()).unwrap();
        assert_eq!(
            (p.time_nanos, p.duration_nanos, p.sample.len()),
            (1_234, 15, samples)
        );
        let p: Profile = prost::Message::decode(timed(&raw, 7, 0).as_slice()).unwrap();
        assert_eq!((p.time_nanos, p.duration_nanos), (7, 10_000_000_000));
    }

    #[test]
    fn the_same_seed_gives_the_same_bytes_and_another_seed_does_not() {
        let shape = FleetShape::default();
        let a = Fleet::new(shape.clone()).profile(1, 2, Kind::Cpu, 1_000);
        let b = Fleet::new(shape.clone()).profile(1, 2, Kind::Cpu, 1_000);
        assert_eq!(a.body, b.body);
        let c = Fleet::new(FleetShape { seed: 2, ..shape }).profile(1, 2, Kind::Cpu, 1_000);
        assert_ne!(a.body, c.body);
    }

    #[test]
    fn profiles_have_go_sample_types_deep_stacks_and_pod_labels() {
        let fleet = Fleet::new(FleetShape::default());
        for (kind, types) in [
            (Kind::Cpu, vec!["samples", "cpu"]),
            (
                Kind::Memory,
                vec![
                    "alloc_objects",
                    "alloc_space",
                    "inuse_objects",
                    "inuse_space",
                ],
            ),
            (Kind::Goroutine, vec!["goroutine"]),
            (Kind::Mutex, vec!["contentions", "delay"]),
        ] {
            let g = fleet.profile(0, 3, kind, 42);
            let p = decode(&g);
            let names: Vec<&str> = p
                .sample_type
                .iter()
                .map(|t| p.string_table[t.r#type as usize].as_str())
                .collect();
            assert_eq!(names, types);
            assert_eq!(g.samples, p.sample.len());
            for s in &p.sample {
                assert!(
                    (10..=80).contains(&s.location_id.len()),
                    "{}",
                    s.location_id.len()
                );
                assert_eq!(s.value.len(), types.len());
            }
            let label = |n: &str| {
                g.labels
                    .iter()
                    .find(|(k, _)| k == n)
                    .map(|(_, v)| v.as_str())
            };
            assert_eq!(label("__name__"), Some(kind.metric()));
            assert_eq!(label("service_name"), Some("shop-0"));
            assert!(label("pod").is_some_and(|p| p.starts_with("shop-0-")));
        }
        // Pods differ in labels, services in names.
        assert_ne!(
            fleet.profile(0, 1, Kind::Cpu, 0).labels,
            fleet.profile(0, 2, Kind::Cpu, 0).labels
        );
        let g = fleet.profile(1, 0, Kind::Cpu, 0);
        assert_eq!(decode_only(&g.body), g.samples);
    }
}
