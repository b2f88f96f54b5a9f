//! `format=jfr` uploads of `/ingest`: the Java agent's (and async-profiler's, and the JDK's)
//! Java Flight Recorder files, raw or as the agent's `multipart/form-data` with a `jfr` part
//! and an optional `labels` part (its `LabelsSnapshot`), each gzip-compressed or not.
//!
//! [`reader`] reads the file format; [`mapping`] turns the events into one profile per kind,
//! as Pyroscope does. A recording that cannot be read is the client's fault, answered 422 as
//! Pyroscope answers it, with the chunk and byte offset of the problem.

mod labels;
mod mapping;
mod reader;
mod symbols;
pub mod writer;

use bytes::Bytes;
use prost::Message;

pub use labels::{Context, LabelsSnapshot};
pub use mapping::{JfrProfiles, JfrRequest, Kind, map_recording};
pub use reader::{Integers, JfrError};

use crate::distributor::{IncomingProfile, ProfileBody};
use crate::error::{IngestError, Result};
use crate::limits::Limits;
use crate::pprof::{ConvertOptions, maybe_gunzip};

/// What the request says besides its body.
#[derive(Debug, Clone)]
pub struct JfrUpload<'a> {
    pub app: &'a str,
    pub tags: &'a [(String, String)],
    pub spy: &'a str,
    pub from_nanos: i64,
    pub until_nanos: i64,
    /// Samples per second of the CPU and wall-clock events (`sampleRate`); without it, the
    /// recording's own execution-sample period, else 100.
    pub sample_rate: Option<i64>,
}

/// The recording and the labels snapshot of a request body.
fn unpack(content_type: &str, body: &Bytes, limits: &Limits) -> Result<(Vec<u8>, LabelsSnapshot)> {
    let limit = limits.max_profile_size_bytes;
    let unzip = |what: &str, data: &[u8]| -> Result<Vec<u8>> {
        maybe_gunzip(data, limit)
            .map(std::borrow::Cow::into_owned)
            .map_err(|e| IngestError::new(e.status, format!("jfr: {what}: {}", e.message)))
    };
    if !content_type.contains("multipart/form-data") {
        // Pyroscope never gunzips a raw body; a gzipped one is as clearly meant.
        return Ok((unzip("body", body)?, LabelsSnapshot::default()));
    }
    let parts = super::parse_multipart(content_type, body)?;
    // The first non-empty part of each name counts, as in Pyroscope.
    let part = |name: &str| parts.iter().find(|p| p.name == name && !p.data.is_empty());
    let jfr = part("jfr").ok_or_else(|| {
        IngestError::unprocessable("jfr: the multipart body has no jfr part (the recording)")
    })?;
    let recording = unzip("part jfr", &jfr.data)?;
    let labels = match part("labels") {
        Some(p) => {
            LabelsSnapshot::decode(unzip("part labels", &p.data)?.as_slice()).map_err(|e| {
                IngestError::unprocessable(format!("jfr: part labels is not a LabelsSnapshot: {e}"))
            })?
        }
        None => LabelsSnapshot::default(),
    };
    Ok((recording, labels))
}

/// The profiles of a JFR upload: one per kind of event the recording holds, with the series
/// labels Pyroscope gives them. A recording without any mapped event gives none.
pub fn decode(
    upload: &JfrUpload<'_>,
    content_type: &str,
    body: &Bytes,
    limits: &Limits,
) -> Result<Vec<IncomingProfile>> {
    let (recording, labels) = unpack(content_type, body, limits)?;
    let mapped = map_recording(
        &recording,
        &labels,
        JfrRequest {
            period_nanos: upload.sample_rate.map(|rate| 1_000_000_000 / rate.max(1)),
            from_nanos: upload.from_nanos,
            until_nanos: upload.until_nanos,
        },
    )
    .map_err(|e| IngestError::unprocessable(format!("jfr: {e}")))?;
    let event = mapped.event.filter(|e| !e.is_empty());
    Ok(mapped
        .profiles
        .into_iter()
        .map(|(kind, profile)| {
            let mut labels = super::base_labels(upload.app, upload.tags, kind.metric(), upload.spy);
            if let Some(event) = &event {
                labels.set("jfr_event", event);
            }
            IncomingProfile {
                labels,
                body: ProfileBody::Decoded(Box::new(profile)),
                id: String::new(),
                options: ConvertOptions {
                    fallback_time_nanos: upload.from_nanos,
                    ..ConvertOptions::default()
                },
            }
        })
        .collect())
}
