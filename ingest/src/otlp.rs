//! OTLP profiles (`v1development`, proto 1.10+ layout) mapped into Pyroscope's model exactly as
//! Pyroscope maps them: one series per OTLP profile and per distinct sample-level
//! `service.name`, with `__otel__`, `__delta__`, resource and scope attributes as series labels.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use profusion_proto::google::v1 as pprof;
use profusion_proto::otlp::collector::ExportProfilesServiceRequest;
use profusion_proto::otlp::common::{AnyValue, KeyValue, any_value};
use profusion_proto::otlp::profiles::{self as otlp, ProfilesDictionary};

use crate::distributor::{IncomingProfile, ProfileBody};
use crate::error::{IngestError, Result};
use crate::limits::Limits;
use crate::pprof::ConvertOptions;
use crate::pprof::SharedSymbols;
use crate::validation;
use profusion_model::labels::{self, Labels};

const DEFAULT_DURATION_NANOS: i64 = 10_000_000_000;

/// Converts an export request into profiles for the distributor. Every profile of the request
/// shares one pprof symbol table built from the request's dictionary, instead of a copy each,
/// and costs only its own samples: what a profile references is bounded by `limits` before it
/// is expanded (dictionary stacks and attributes are shared, so a small request could
/// otherwise reference them millions of times).
pub fn convert(
    req: &ExportProfilesServiceRequest,
    now_nanos: i64,
    limits: &Limits,
) -> Result<Vec<IncomingProfile>> {
    let dict = req
        .dictionary
        .as_ref()
        .ok_or_else(|| IngestError::invalid("ExportProfilesServiceRequest has no dictionary"))?;
    let mut strings = SharedStrings::new(dict)?;
    let mut converted = Vec::new();
    for (ri, rp) in req.resource_profiles.iter().enumerate() {
        let resource_attrs = rp
            .resource
            .as_ref()
            .map_or(&[][..], |r| r.attributes.as_slice());
        for (si, sp) in rp.scope_profiles.iter().enumerate() {
            let at = format!("resource_profiles[{ri}].scope_profiles[{si}]");
            let scope_attrs = sp
                .scope
                .as_ref()
                .map_or(&[][..], |s| s.attributes.as_slice());
            let series =
                SeriesBase::new(resource_attrs, scope_attrs, limits).map_err(|e| e.at(&at))?;
            for (pi, profile) in sp.profiles.iter().enumerate() {
                // A profile without samples stores nothing (and is not validated), as before.
                if profile.samples.is_empty() {
                    continue;
                }
                converted.push(
                    convert_profile(dict, &mut strings, &series, profile, now_nanos, limits)
                        .map_err(|e| e.at(format!("{at}.profiles[{pi}]")))?,
                );
            }
        }
    }
    if converted.is_empty() {
        return Ok(Vec::new());
    }
    let symbols = Arc::new(SharedSymbols::new(symbols(dict, strings))?);
    Ok(converted
        .into_iter()
        .map(|(labels, profile, id)| IncomingProfile {
            labels,
            body: ProfileBody::Shared {
                profile: Box::new(profile),
                symbols: Arc::clone(&symbols),
            },
            id,
            options: ConvertOptions {
                fallback_time_nanos: now_nanos,
                ..Default::default()
            },
        })
        .collect())
}

/// The series labels the profiles of one scope start from: resource then scope attributes,
/// first occurrence wins, and the service they name.
struct SeriesBase {
    attrs: BTreeMap<String, String>,
    default_service: String,
}

impl SeriesBase {
    fn new(resource: &[KeyValue], scope: &[KeyValue], limits: &Limits) -> Result<Self> {
        let mut attrs: BTreeMap<String, String> = BTreeMap::new();
        for kv in resource.iter().chain(scope) {
            if let Some(v) = kv.value.as_ref().and_then(string_of) {
                attrs.entry(kv.key.clone()).or_insert(v);
                // Refused once built anyway; stop before copying them into every profile.
                if attrs.len() > limits.max_label_names_per_series {
                    return Err(IngestError::invalid(format!(
                        "resource and scope have more than {} attributes, the limit of labels per series",
                        limits.max_label_names_per_series
                    )));
                }
            }
        }
        let default_service = attrs.get("service.name").cloned().unwrap_or_else(|| {
            attrs.get("process.executable.name").map_or_else(
                || labels::UNKNOWN_SERVICE.to_owned(),
                |e| format!("{}:{e}", labels::UNKNOWN_SERVICE),
            )
        });
        Ok(Self {
            attrs,
            default_service,
        })
    }
}

/// The dictionary's string table, growing by the strings labels and types need, and the
/// sample label each dictionary attribute becomes (computed once per attribute, however many
/// samples reference it).
struct SharedStrings {
    strings: Vec<String>,
    index: HashMap<String, i64>,
    attributes: HashMap<i32, Option<SampleAttribute>>,
}

/// A dictionary attribute as a sample label; `service` is set for `service.name`.
#[derive(Clone)]
struct SampleAttribute {
    label: pprof::Label,
    service: Option<String>,
}

impl SharedStrings {
    fn new(dict: &ProfilesDictionary) -> Result<Self> {
        if dict.string_table.first().is_none_or(|s| !s.is_empty()) {
            return Err(IngestError::invalid(
                "dictionary.string_table[0] must be the empty string",
            ));
        }
        Ok(Self {
            strings: dict.string_table.clone(),
            index: HashMap::new(),
            attributes: HashMap::new(),
        })
    }

    /// The sample label of dictionary attribute `ai` (None for values that are not strings or
    /// integers).
    fn attribute(&mut self, dict: &ProfilesDictionary, ai: i32) -> Result<Option<SampleAttribute>> {
        if let Some(a) = self.attributes.get(&ai) {
            return Ok(a.clone());
        }
        let kv = get(&dict.attribute_table, ai, "attribute index")?;
        let key = get(
            &dict.string_table,
            kv.key_strindex,
            "attribute key_strindex",
        )?;
        let attribute = kv.value.as_ref().and_then(string_of).map(|v| {
            if key == "service.name" {
                SampleAttribute {
                    label: self.label(labels::SERVICE_NAME, &v),
                    service: Some(v),
                }
            } else {
                SampleAttribute {
                    label: self.label(key, &v),
                    service: None,
                }
            }
        });
        self.attributes.insert(ai, attribute.clone());
        Ok(attribute)
    }

    fn intern(&mut self, v: &str) -> i64 {
        if let Some(&i) = self.index.get(v) {
            return i;
        }
        let i = self.strings.len() as i64;
        self.strings.push(v.to_owned());
        self.index.insert(v.to_owned(), i);
        i
    }

    fn label(&mut self, key: &str, value: &str) -> pprof::Label {
        pprof::Label {
            key: self.intern(key),
            str: self.intern(value),
            ..Default::default()
        }
    }
}

/// The pprof symbol tables of a dictionary: mapping, location and function `i + 1` are the
/// dictionary's entry `i`.
fn symbols(dict: &ProfilesDictionary, mut strings: SharedStrings) -> pprof::Profile {
    let s = |idx: i32| get(&dict.string_table, idx, "").map(String::as_str);
    let mapping: Vec<pprof::Mapping> = dict
        .mapping_table
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let build_id = m
                .attribute_indices
                .iter()
                .filter_map(|&ai| get(&dict.attribute_table, ai, "attribute").ok())
                .find(|kv| s(kv.key_strindex).is_ok_and(|k| k == "process.executable.build_id.gnu"))
                .and_then(|kv| kv.value.as_ref().and_then(string_of))
                .map_or(0, |b| strings.intern(&b));
            pprof::Mapping {
                id: i as u64 + 1,
                memory_start: m.memory_start,
                memory_limit: m.memory_limit,
                file_offset: m.file_offset,
                filename: i64::from(m.filename_strindex),
                build_id,
                ..Default::default()
            }
        })
        .collect();
    let location = dict
        .location_table
        .iter()
        .enumerate()
        .map(|(i, l)| pprof::Location {
            id: i as u64 + 1,
            mapping_id: if l.mapping_index > 0 {
                l.mapping_index as u64 + 1
            } else {
                0
            },
            address: l.address,
            line: l
                .lines
                .iter()
                .map(|line| pprof::Line {
                    function_id: line.function_index as u64 + 1,
                    line: line.line,
                })
                .collect(),
            is_folded: false,
        })
        .collect();
    let function = dict
        .function_table
        .iter()
        .enumerate()
        .map(|(i, f)| pprof::Function {
            id: i as u64 + 1,
            name: i64::from(f.name_strindex),
            system_name: i64::from(f.system_name_strindex),
            filename: i64::from(f.filename_strindex),
            start_line: f.start_line,
        })
        .collect();
    pprof::Profile {
        mapping,
        location,
        function,
        string_table: strings.strings,
        ..Default::default()
    }
}

fn string_of(v: &AnyValue) -> Option<String> {
    match v.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        any_value::Value::ArrayValue(a) if a.values.len() == 1 => string_of(&a.values[0]),
        _ => None,
    }
}

fn get<'a, T>(table: &'a [T], idx: i32, what: &str) -> Result<&'a T> {
    usize::try_from(idx)
        .ok()
        .and_then(|i| table.get(i))
        .ok_or_else(|| {
            IngestError::invalid(format!(
                "{what} {idx} is out of range (table has {} entries)",
                table.len()
            ))
        })
}

/// One OTLP profile as series labels, a pprof over the request's shared symbols (samples with
/// their own `service.name` carry it as a `service_name` sample label, which splits them into
/// their own series, as Pyroscope's one pprof per service does) and its id.
fn convert_profile(
    dict: &ProfilesDictionary,
    strings: &mut SharedStrings,
    series: &SeriesBase,
    profile: &otlp::Profile,
    now_nanos: i64,
    limits: &Limits,
) -> Result<(Labels, pprof::Profile, String)> {
    let s = |idx: i32, what: &str| get(&dict.string_table, idx, what).map(String::as_str);
    let st = profile.sample_type.unwrap_or_default();
    let pt = profile.period_type.unwrap_or_default();
    let (mut sample_type, mut sample_unit) = (
        s(st.type_strindex, "sample_type.type_strindex")?,
        s(st.unit_strindex, "sample_type.unit_strindex")?,
    );
    let (period_type, period_unit) = (
        s(pt.type_strindex, "period_type.type_strindex")?,
        s(pt.unit_strindex, "period_type.unit_strindex")?,
    );
    let type_string = format!("{sample_type}:{sample_unit}:{period_type}:{period_unit}");
    let mut multiplier = 1i64;
    let metric = if type_string == "samples:count:cpu:nanoseconds" {
        (sample_type, sample_unit) = ("cpu", "nanoseconds");
        multiplier = profile.period.max(1);
        "process_cpu".to_owned()
    } else if type_string.starts_with("off_cpu:nanoseconds") {
        "off_cpu".to_owned()
    } else if !period_type.is_empty() && validation::is_valid_metric_name(period_type) {
        period_type.to_owned()
    } else {
        "process_cpu".to_owned()
    };

    if profile.samples.len() > limits.max_profile_samples {
        return Err(IngestError::invalid(format!(
            "profile has {} samples, more than the limit of {}",
            profile.samples.len(),
            limits.max_profile_samples
        )));
    }
    let mut location_refs = 0usize;
    let mut samples = Vec::with_capacity(profile.samples.len());
    for (si, sample) in profile.samples.iter().enumerate() {
        let at = |e: IngestError| e.at(format!("samples[{si}]"));
        let stack = get(&dict.stack_table, sample.stack_index, "stack_index").map_err(at)?;
        // Leaf first: the locations past the depth limit (each at least one frame) would be
        // cut anyway. A stack is shared, so its references are counted per use against the
        // size the profile would have as a pprof.
        let kept =
            &stack.location_indices[..stack.location_indices.len().min(limits.max_stack_depth)];
        location_refs += kept.len();
        if location_refs > limits.max_profile_size_bytes {
            return Err(IngestError::invalid(format!(
                "the profile's samples reference more than {} locations in all: as a pprof it \
                 would be more than the limit of {} bytes",
                limits.max_profile_size_bytes, limits.max_profile_size_bytes
            )));
        }
        let mut location_id = Vec::with_capacity(kept.len());
        for &li in kept {
            get(&dict.location_table, li, "location index").map_err(at)?;
            location_id.push(li as u64 + 1);
        }
        let value: i64 = if !sample.values.is_empty() {
            sample.values.iter().fold(0i64, |a, v| a.saturating_add(*v))
        } else if !sample.timestamps_unix_nano.is_empty() {
            sample.timestamps_unix_nano.len() as i64
        } else {
            return Err(at(IngestError::invalid(
                "sample has neither values nor timestamps",
            )));
        };
        if sample.attribute_indices.len() > limits.max_sample_labels {
            return Err(at(IngestError::invalid(format!(
                "sample has {} attributes, more than the limit of {} labels",
                sample.attribute_indices.len(),
                limits.max_sample_labels
            ))));
        }
        let mut label = Vec::new();
        for &ai in &sample.attribute_indices {
            let Some(attribute) = strings.attribute(dict, ai).map_err(at)? else {
                continue;
            };
            // The profile's own service needs no label: samples with and without it are one
            // series.
            if attribute.service.as_deref() != Some(series.default_service.as_str()) {
                label.push(attribute.label);
            }
        }
        if sample.link_index != 0 {
            let link = get(&dict.link_table, sample.link_index, "link_index").map_err(at)?;
            if link.span_id.len() == 8 {
                label.push(strings.label("span_id", &hex(&link.span_id)));
            }
            if link.trace_id.len() == 16 {
                label.push(strings.label("trace_id", &hex(&link.trace_id)));
            }
        }
        samples.push(pprof::Sample {
            location_id,
            value: vec![value.saturating_mul(multiplier)],
            label,
        });
    }

    let time_nanos = if profile.time_unix_nano == 0 {
        now_nanos
    } else {
        profile.time_unix_nano as i64
    };
    let duration_nanos = if profile.duration_nano == 0 {
        DEFAULT_DURATION_NANOS
    } else {
        profile.duration_nano as i64
    };
    let id = match <[u8; 16]>::try_from(profile.profile_id.as_ref()) {
        Ok(b) if b != [0; 16] => uuid::Uuid::from_bytes(b).to_string(),
        _ => String::new(),
    };
    let mut l = Labels::from_pairs(series.attrs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    l.set(labels::DELTA, "false");
    l.set("__otel__", "true");
    l.set(labels::METRIC_NAME, metric.as_str());
    l.set(labels::SERVICE_NAME, series.default_service.as_str());
    let p = pprof::Profile {
        sample_type: vec![pprof::ValueType {
            r#type: strings.intern(sample_type),
            unit: strings.intern(sample_unit),
        }],
        sample: samples,
        time_nanos,
        duration_nanos,
        period_type: Some(pprof::ValueType {
            r#type: strings.intern(period_type),
            unit: strings.intern(period_unit),
        }),
        period: profile.period,
        ..Default::default()
    };
    Ok((l, p, id))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// OTLP/JSON writes `traceId`, `spanId` and `profileId` as hex, where the protobuf JSON mapping
/// has base64. Hex digits are base64 digits too, so a JSON decoder reads the 32 or 16 hex
/// digits as 24 or 12 bytes; this turns ids of exactly those lengths that spell hex back into
/// the 16 or 8 bytes they stand for. Ids sent in base64 (16 and 8 bytes) are left alone.
pub fn fix_hex_ids(request: &mut ExportProfilesServiceRequest) {
    fn unhex(id: &mut bytes::Bytes, id_len: usize) {
        if id.len() != id_len / 2 * 3 {
            return;
        }
        let text = base64(id);
        if text.len() == 2 * id_len && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            let raw: Vec<u8> = (0..id_len)
                .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap_or(0))
                .collect();
            *id = raw.into();
        }
    }
    if let Some(dict) = request.dictionary.as_mut() {
        for link in &mut dict.link_table {
            unhex(&mut link.trace_id, 16);
            unhex(&mut link.span_id, 8);
        }
    }
    for rp in &mut request.resource_profiles {
        for sp in &mut rp.scope_profiles {
            for p in &mut sp.profiles {
                unhex(&mut p.profile_id, 16);
            }
        }
    }
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foob"), "Zm9vYg==");
    }
}
