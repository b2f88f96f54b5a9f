//! Profiles and requests built by hand: pprof profiles of given stacks, Push requests, and the
//! byte-level wrappings (gzip, gRPC frames) clients put around them.

/// Unix time now in nanoseconds.
pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as i64
}

/// One sample of a test profile: root-first function names, value, sample labels.
#[derive(Debug, Clone)]
pub struct TestSample<'a> {
    pub stack: &'a [&'a str],
    pub value: i64,
    pub labels: &'a [(&'a str, &'a str)],
}

/// Builds a pprof with one sample type; `sample_type` and `period_type` are (type, unit).
pub fn pprof(
    sample_type: (&str, &str),
    period_type: (&str, &str),
    period: i64,
    time_nanos: i64,
    samples: &[TestSample<'_>],
) -> profusion_proto::google::v1::Profile {
    use profusion_proto::google::v1::{
        Function, Label, Line, Location, Profile, Sample, ValueType,
    };
    let mut strings = vec![String::new()];
    let mut intern = |s: &str| -> i64 {
        if let Some(i) = strings.iter().position(|x| x == s) {
            return i as i64;
        }
        strings.push(s.to_owned());
        strings.len() as i64 - 1
    };
    let st = ValueType {
        r#type: intern(sample_type.0),
        unit: intern(sample_type.1),
    };
    let pt = ValueType {
        r#type: intern(period_type.0),
        unit: intern(period_type.1),
    };
    let mut functions: Vec<Function> = Vec::new();
    let mut out = Vec::new();
    for s in samples {
        let mut location_id = Vec::new();
        for name in s.stack.iter().rev() {
            let n = intern(name);
            let f = intern("main.go");
            let id = match functions.iter().find(|x| x.name == n) {
                Some(x) => x.id,
                None => {
                    let id = functions.len() as u64 + 1;
                    functions.push(Function {
                        id,
                        name: n,
                        system_name: n,
                        filename: f,
                        start_line: 1,
                    });
                    id
                }
            };
            location_id.push(id);
        }
        let label = s
            .labels
            .iter()
            .map(|(k, v)| Label {
                key: intern(k),
                str: intern(v),
                ..Label::default()
            })
            .collect();
        out.push(Sample {
            location_id,
            value: vec![s.value],
            label,
        });
    }
    let location = functions
        .iter()
        .map(|f| Location {
            id: f.id,
            line: vec![Line {
                function_id: f.id,
                line: 10,
            }],
            ..Location::default()
        })
        .collect();
    Profile {
        sample_type: vec![st],
        sample: out,
        location,
        function: functions,
        string_table: strings,
        time_nanos,
        duration_nanos: 10_000_000_000,
        period_type: Some(pt),
        period,
        ..Profile::default()
    }
}

/// A CPU profile (`cpu:nanoseconds`, 10 ms period) at `time_nanos`.
pub fn cpu_pprof(
    time_nanos: i64,
    stacks: &[(&[&str], i64)],
) -> profusion_proto::google::v1::Profile {
    let samples: Vec<TestSample<'_>> = stacks
        .iter()
        .map(|(stack, value)| TestSample {
            stack,
            value: *value,
            labels: &[],
        })
        .collect();
    pprof(
        ("cpu", "nanoseconds"),
        ("cpu", "nanoseconds"),
        10_000_000,
        time_nanos,
        &samples,
    )
}

/// A one-series, one-sample `PushRequest` carrying `raw_profile` (pprof bytes, gzipped or not)
/// under the given series labels.
pub fn push_request(
    labels: &[(&str, &str)],
    raw_profile: Vec<u8>,
    id: &str,
) -> profusion_proto::push::v1::PushRequest {
    use profusion_proto::push::v1::{PushRequest, RawProfileSeries, RawSample};
    use profusion_proto::types::v1::LabelPair;
    PushRequest {
        series: vec![RawProfileSeries {
            labels: labels
                .iter()
                .map(|(name, value)| LabelPair {
                    name: (*name).into(),
                    value: (*value).into(),
                })
                .collect(),
            samples: vec![RawSample {
                raw_profile: raw_profile.into(),
                id: id.into(),
            }],
            annotations: vec![],
        }],
    }
}

/// One uncompressed gRPC message frame: flag byte, big-endian length, message.
pub fn grpc_frame(msg: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8];
    v.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    v.extend_from_slice(msg);
    v
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}
