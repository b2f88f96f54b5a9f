//! Entry points shared by the `cargo fuzz` targets under `fuzz/` and the mutation tests: each
//! feeds untrusted bytes through a decoder and everything after it, and must never panic. The
//! [`seeds`] are the hostile shapes found so far, for both to start from.

use bytes::Bytes;

use crate::limits::Limits;
use crate::pprof::{self, ConvertOptions};
use profusion_model::labels::Labels;

fn limits() -> Limits {
    Limits {
        reject_older_than: std::time::Duration::ZERO,
        reject_newer_than: std::time::Duration::ZERO,
        ..Limits::default()
    }
}

/// pprof bytes (gzip or plain) through decode, validation, normalization and series split,
/// read both in place (the push path) and by `prost` (other decoders' path): the two must
/// accept the same bytes, read the same profile and convert it alike.
pub fn pprof(data: &[u8]) {
    let limits = limits();
    let Ok(bytes) = pprof::maybe_gunzip(data, limits.max_profile_size_bytes) else {
        return;
    };
    let by_prost = <profusion_proto::google::v1::Profile as prost::Message>::decode(&*bytes);
    let in_place = pprof::ProfileView::decode(&bytes);
    let (by_prost, in_place) = match (by_prost, in_place) {
        (Ok(p), Ok(v)) => (p, v),
        (Err(_), Err(_)) => return,
        (p, v) => panic!(
            "prost and the in-place decoder disagree on whether this is a pprof: prost {:?}, in place {:?}",
            p.err(),
            v.err()
        ),
    };
    assert!(
        in_place.to_profile() == by_prost,
        "the in-place decoder read another profile than prost"
    );
    // What the legacy `/ingest` reads first to name the profile: the same sample types as
    // prost's whole profile names.
    let names: Vec<&str> = by_prost
        .sample_type
        .iter()
        .map(|st| {
            usize::try_from(st.r#type)
                .ok()
                .and_then(|i| by_prost.string_table.get(i))
                .map_or("", String::as_str)
        })
        .collect();
    assert_eq!(
        pprof::ProfileView::sample_type_names(&bytes).ok(),
        Some(names),
        "the sample types read alone differ from the whole profile's"
    );
    let base = Labels::from_pairs([("__name__", "process_cpu"), ("service_name", "fuzz")]);
    let convert = |p: &dyn pprof::PprofSource| {
        pprof::convert(
            p,
            &base,
            "id",
            &ConvertOptions::default(),
            &limits,
            0,
            bytes.len(),
        )
        .map_err(|e| e.to_string())
    };
    assert_eq!(convert(&in_place), convert(&by_prost));
    // The push path leaves frames' strings in the pprof: filled in, its conversion is the same.
    let left_in_place = pprof::convert_in_place(
        bytes::Bytes::copy_from_slice(&bytes),
        &base,
        "id",
        &ConvertOptions::default(),
        &limits,
        0,
    )
    .map(|mut c| {
        let text = std::mem::take(&mut c.text);
        text.fill_all(&mut c.frames);
        c
    })
    .map_err(|e| e.to_string());
    assert_eq!(left_in_place, convert(&in_place));
}

/// OTLP export requests, binary then JSON, through the Pyroscope mapping and pprof conversion.
pub fn otlp(data: &[u8]) {
    use profusion_proto::otlp::collector::ExportProfilesServiceRequest;
    let mut requests = Vec::new();
    if let Ok(r) = <ExportProfilesServiceRequest as prost::Message>::decode(data) {
        requests.push(r);
    }
    if let Ok(mut r) = profusion_proto::from_json::<ExportProfilesServiceRequest>(data) {
        crate::otlp::fix_hex_ids(&mut r);
        requests.push(r);
    }
    let limits = limits();
    for r in requests {
        if let Ok(profiles) = crate::otlp::convert(&r, 0, &limits) {
            for p in profiles {
                if let crate::distributor::ProfileBody::Shared { profile, symbols } = &p.body {
                    let _ = pprof::convert_shared(
                        profile.as_ref(),
                        symbols,
                        &p.labels,
                        "id",
                        &p.options,
                        &limits,
                        0,
                        0,
                    );
                }
            }
        }
    }
}

/// Legacy `/ingest` bodies in every text format, and multipart, with the first byte choosing
/// the format.
pub fn legacy(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let (format, content_type) = match selector % 6 {
        0 => ("folded", "text/plain"),
        1 => ("lines", "text/plain"),
        2 => ("trie", "binary/octet-stream+trie"),
        3 => ("tree", "binary/octet-stream+tree"),
        4 => ("pprof", "multipart/form-data; boundary=B"),
        _ => ("pprof", "application/octet-stream"),
    };
    ingest("fuzz.cpu{a=b}", format, content_type, body);
}

/// `format=jfr` bodies: the recording raw, or (first byte odd) the agent's multipart whose
/// `jfr` part is the rest, through the reader, the mapping and the pprof conversion.
pub fn jfr(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    if selector % 2 == 0 {
        ingest("fuzz{a=b}", "jfr", "application/octet-stream", body);
        return;
    }
    let mut multipart =
        b"--B\r\nContent-Disposition: form-data; name=\"jfr\"; filename=\"jfr\"\r\n\r\n".to_vec();
    multipart.extend_from_slice(body);
    multipart.extend_from_slice(b"\r\n--B--\r\n");
    ingest(
        "fuzz{a=b}",
        "jfr",
        "multipart/form-data; boundary=B",
        &multipart,
    );
}

/// `format=speedscope` bodies through the JSON reading, the replay of each profile and the
/// text formats' path.
pub fn speedscope(data: &[u8]) {
    ingest("fuzz{a=b}", "speedscope", "application/json", data);
}

/// One `/ingest` request and the conversion of every profile it makes.
fn ingest(name: &str, format: &str, content_type: &str, body: &[u8]) {
    let params = crate::legacy::IngestParams::from_pairs([("name", name), ("format", format)]);
    let limits = limits();
    if let Ok(profiles) = crate::legacy::decode(
        &params,
        content_type,
        Bytes::copy_from_slice(body),
        0,
        &limits,
    ) {
        for p in profiles {
            if let crate::distributor::ProfileBody::Decoded(profile) = &p.body {
                let _ =
                    pprof::convert(profile.as_ref(), &p.labels, "id", &p.options, &limits, 0, 0);
            }
        }
    }
}

/// `push.v1.PushRequest` in Connect JSON: the JSON mapping, then each series' labels and raw
/// profiles through decode, validation, normalization and series split.
pub fn push_json(data: &[u8]) {
    use profusion_proto::push::v1::PushRequest;
    let Ok(request) = profusion_proto::from_json::<PushRequest>(data) else {
        return;
    };
    let limits = limits();
    for series in request.series {
        if series.labels.len() > limits.max_label_names_per_series {
            continue;
        }
        let labels = Labels::from_pairs(
            series
                .labels
                .iter()
                .map(|l| (l.name.as_str(), l.value.as_str())),
        );
        for sample in series.samples {
            // As the push path reads it: in place.
            let Ok(bytes) = pprof::maybe_gunzip(&sample.raw_profile, limits.max_profile_size_bytes)
            else {
                continue;
            };
            if let Ok(profile) = pprof::view(&bytes) {
                let _ = pprof::convert(
                    &profile,
                    &labels,
                    "id",
                    &ConvertOptions::default(),
                    &limits,
                    0,
                    bytes.len(),
                );
            }
        }
    }
}

/// One starting input of a fuzz target: `(target, name, bytes)`.
pub type Seed = (&'static str, &'static str, Vec<u8>);

/// The hostile shapes: inputs that once crashed the server, expanded a small body into a huge
/// one, or were misreported (docs/write-path.md, "Hostile input"). The mutation tests start
/// from them and `cargo run -p profusion-ingest --example fuzz_seeds` writes them into the
/// fuzz corpus.
pub fn seeds() -> Vec<Seed> {
    use prost::Message;
    use seed::*;
    let mut out: Vec<Seed> = vec![
        ("pprof", "inlined_deep", inlined(60, 1_000).encode_to_vec()),
        (
            "pprof",
            "inlined_million_frames",
            inlined(1_000, 1_000).encode_to_vec(),
        ),
        (
            "pprof",
            "duplicate_location_ids",
            duplicate_ids().encode_to_vec(),
        ),
        (
            "pprof",
            "many_sample_labels",
            sample_labels(200, 1).encode_to_vec(),
        ),
        (
            "pprof",
            "many_label_sets",
            sample_labels(1, 2_000).encode_to_vec(),
        ),
        ("pprof", "long_symbols", long_symbols().encode_to_vec()),
    ];
    let mut tree = vec![3u8];
    for i in 0..8_000 {
        tree.extend_from_slice(&[1, b'f', 1, u8::from(i + 1 < 8_000)]);
    }
    out.push(("legacy", "tree_chain", tree));
    out.push(("legacy", "trie_long_name_many_children", trie_revisits()));
    let mut folded = vec![0u8];
    folded.extend_from_slice(format!("{} 1\n", vec!["f"; 5_000].join(";")).as_bytes());
    out.push(("legacy", "folded_deep", folded));
    out.push((
        "otlp",
        "profiles_sharing_a_dictionary",
        otlp_shared(500, 1).encode_to_vec(),
    ));
    out.push((
        "otlp",
        "one_service_per_sample",
        otlp_shared(1, 2_000).encode_to_vec(),
    ));
    out.extend(jfr_seeds());
    out.push(("push_json", "labels_200000", push_json_labels(200_000)));
    out.push(("push_json", "labels_3", push_json_labels(3)));
    out
}

/// Recordings for the JFR target: a valid one with the agent's contexts in each integer form,
/// a type that contains itself (nesting without end, in no bytes), and an array of a trillion
/// empty structures.
fn jfr_seeds() -> Vec<Seed> {
    use crate::legacy::jfr::Integers;
    use crate::legacy::jfr::writer::{Encoder, cpu_recording};
    let raw = |recording: Vec<u8>| [vec![0u8], recording].concat();
    let e = Encoder(Integers::Compressed);
    // A varint count past 32 bits: the long form of a compressed int.
    let mut many = Vec::new();
    e.long(&mut many, 1 << 40);
    vec![
        (
            "jfr",
            "cpu_with_contexts",
            raw(cpu_recording(Integers::Compressed)),
        ),
        (
            "jfr",
            "cpu_fixed_width_integers",
            raw(cpu_recording(Integers::FixedWidth)),
        ),
        (
            "jfr",
            "self_nesting_type",
            raw(e.chunk(
                &[(40, "Loop", vec![("next", 40, false, false)])],
                &[(40, vec![(1, Vec::new())])],
                &[],
            )),
        ),
        (
            "jfr",
            "trillion_empty_structures",
            raw(e.chunk(
                &[
                    (41, "Empty", vec![]),
                    (42, "Many", vec![("items", 41, false, true)]),
                ],
                &[(42, vec![(1, many)])],
                &[],
            )),
        ),
    ]
}

/// Builders of the hostile shapes.
mod seed {
    use profusion_proto::google::v1::{
        Function, Label, Line, Location, Profile, Sample, ValueType,
    };
    use profusion_proto::otlp::collector::ExportProfilesServiceRequest;
    use profusion_proto::otlp::common::{AnyValue, KeyValue, any_value};
    use profusion_proto::otlp::profiles as otlp;

    fn cpu(strings: &[&str], sample: Vec<Sample>, location: Vec<Location>) -> Profile {
        let mut string_table: Vec<String> = vec!["".into(), "cpu".into(), "nanoseconds".into()];
        string_table.extend(strings.iter().map(|s| (*s).to_owned()));
        let function = (0..strings.len() as u64)
            .map(|i| Function {
                id: i + 1,
                name: i as i64 + 3,
                ..Function::default()
            })
            .collect();
        Profile {
            sample_type: vec![ValueType { r#type: 1, unit: 2 }],
            period_type: Some(ValueType { r#type: 1, unit: 2 }),
            period: 10_000_000,
            sample,
            location,
            function,
            string_table,
            ..Profile::default()
        }
    }

    fn location(id: u64, functions: &[u64]) -> Location {
        Location {
            id,
            line: functions
                .iter()
                .enumerate()
                .map(|(i, &function_id)| Line {
                    function_id,
                    line: i as i64 + 1,
                })
                .collect(),
            ..Location::default()
        }
    }

    /// One location of `lines` inlined lines, referenced `refs` times by one sample.
    pub(super) fn inlined(lines: usize, refs: usize) -> Profile {
        cpu(
            &["inlined"],
            vec![Sample {
                location_id: vec![1; refs],
                value: vec![1],
                label: vec![],
            }],
            vec![location(1, &vec![1; lines])],
        )
    }

    pub(super) fn duplicate_ids() -> Profile {
        cpu(
            &["a", "b"],
            vec![Sample {
                location_id: vec![1, 2],
                value: vec![1],
                label: vec![],
            }],
            vec![location(1, &[1]), location(1, &[2])],
        )
    }

    /// `samples` samples with `labels` labels each, every sample its own label set.
    pub(super) fn sample_labels(labels: usize, samples: usize) -> Profile {
        let mut p = cpu(&["main", "k", "v"], vec![], vec![location(1, &[1])]);
        let first_value = p.string_table.len() as i64;
        p.string_table
            .extend((0..samples.max(labels)).map(|i| format!("value-{i}")));
        p.sample = (0..samples)
            .map(|s| Sample {
                location_id: vec![1],
                value: vec![1],
                label: (0..labels)
                    .map(|l| Label {
                        key: first_value + l as i64,
                        str: first_value + s as i64,
                        ..Label::default()
                    })
                    .collect(),
            })
            .collect();
        p
    }

    pub(super) fn long_symbols() -> Profile {
        let long = "x".repeat(70_000);
        cpu(
            &[&long, "é".repeat(40_000).as_str()],
            vec![Sample {
                location_id: vec![2, 1],
                value: vec![1],
                label: vec![],
            }],
            vec![location(1, &[1]), location(2, &[2])],
        )
    }

    /// A trie whose 1,000-byte root name is completed again by each of 1,000 children.
    pub(super) fn trie_revisits() -> Vec<u8> {
        let mut b = vec![2u8, 0xe8, 0x07];
        b.extend_from_slice(&[b'n'; 1_000]);
        b.extend_from_slice(&[0, 0xe8, 0x07]);
        for i in 0..1_000 {
            let suffix = format!("{};x", i % 10);
            b.push(suffix.len() as u8);
            b.extend_from_slice(suffix.as_bytes());
            b.extend_from_slice(&[1, 0]);
        }
        b
    }

    fn string(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value.into())),
            }),
        }
    }

    /// `profiles` profiles over one dictionary, each with `samples` samples of their own
    /// `service.name`: the shapes that once copied the dictionary per profile and service.
    pub(super) fn otlp_shared(profiles: usize, samples: usize) -> ExportProfilesServiceRequest {
        let mut dictionary = otlp::ProfilesDictionary {
            string_table: vec![
                "".into(),
                "f".repeat(10_000),
                "cpu".into(),
                "nanoseconds".into(),
            ],
            function_table: vec![otlp::Function {
                name_strindex: 1,
                ..Default::default()
            }],
            location_table: vec![otlp::Location {
                lines: vec![otlp::Line {
                    function_index: 0,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            stack_table: vec![otlp::Stack {
                location_indices: vec![0],
            }],
            ..Default::default()
        };
        let key = dictionary.string_table.len() as i32;
        dictionary.string_table.push("service.name".into());
        dictionary.attribute_table = (0..samples)
            .map(|i| otlp::KeyValueAndUnit {
                key_strindex: key,
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(format!("svc-{i}"))),
                }),
                ..Default::default()
            })
            .collect();
        let profile = otlp::Profile {
            sample_type: Some(otlp::ValueType {
                type_strindex: 2,
                unit_strindex: 3,
            }),
            samples: (0..samples)
                .map(|i| otlp::Sample {
                    stack_index: 0,
                    attribute_indices: vec![i as i32],
                    values: vec![1],
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        ExportProfilesServiceRequest {
            resource_profiles: vec![otlp::ResourceProfiles {
                resource: Some(profusion_proto::otlp::resource::Resource {
                    attributes: vec![string("service.name", "app")],
                    ..Default::default()
                }),
                scope_profiles: vec![otlp::ScopeProfiles {
                    profiles: vec![profile; profiles],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            dictionary: Some(dictionary),
        }
    }

    /// A Connect JSON push of one series with `labels` labels.
    pub(super) fn push_json_labels(labels: usize) -> Vec<u8> {
        let mut json = String::from(r#"{"series":[{"labels":["#);
        for i in 0..labels {
            if i > 0 {
                json.push(',');
            }
            json.push_str(&format!(r#"{{"name":"label_{i}","value":"v"}}"#));
        }
        json.push_str(r#"],"samples":[{"rawProfile":"","ID":""}]}]}"#);
        json.into_bytes()
    }
}
