//! Entry points shared by the `cargo fuzz` targets under `fuzz/` and the mutation tests: each
//! feeds untrusted bytes through a decoder and everything after it, and must never panic.

use bytes::Bytes;

use crate::labels::Labels;
use crate::limits::Limits;
use crate::pprof::{self, ConvertOptions};

fn limits() -> Limits {
    Limits {
        reject_older_than: std::time::Duration::ZERO,
        reject_newer_than: std::time::Duration::ZERO,
        ..Limits::default()
    }
}

/// pprof bytes (gzip or plain) through decode, validation, normalization and series split.
pub fn pprof(data: &[u8]) {
    let limits = limits();
    if let Ok((profile, size)) = pprof::decode(data, &limits) {
        let base = Labels::from_pairs([("__name__", "process_cpu"), ("service_name", "fuzz")]);
        let _ = pprof::convert(
            &profile,
            &base,
            "id",
            &ConvertOptions::default(),
            &limits,
            0,
            size,
        );
    }
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
        if let Ok(profiles) = crate::otlp::convert(&r, 0) {
            for p in profiles {
                if let crate::distributor::ProfileBody::Shared { profile, symbols } = &p.body {
                    let _ = pprof::convert_with_symbols(
                        profile,
                        &symbols.profile,
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
    let params =
        crate::legacy::IngestParams::from_pairs([("name", "fuzz.cpu{a=b}"), ("format", format)]);
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
                let _ = pprof::convert(profile, &p.labels, "id", &p.options, &limits, 0, 0);
            }
        }
    }
}
