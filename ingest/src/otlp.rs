//! OTLP profiles (`v1development`, proto 1.10+ layout) mapped into Pyroscope's model exactly as
//! Pyroscope maps them: one pprof per OTLP profile and per distinct sample-level
//! `service.name`, with `__otel__`, `__delta__`, resource and scope attributes as series labels.

use std::collections::{BTreeMap, HashMap};

use profusion_proto::google::v1 as pprof;
use profusion_proto::otlp::collector::ExportProfilesServiceRequest;
use profusion_proto::otlp::common::{AnyValue, KeyValue, any_value};
use profusion_proto::otlp::profiles::{self as otlp, ProfilesDictionary};

use crate::distributor::{IncomingProfile, ProfileBody};
use crate::error::{IngestError, Result};
use crate::labels::{self, Labels};
use crate::pprof::ConvertOptions;

const DEFAULT_DURATION_NANOS: i64 = 10_000_000_000;

/// Converts an export request into profiles for the distributor.
pub fn convert(req: &ExportProfilesServiceRequest, now_nanos: i64) -> Result<Vec<IncomingProfile>> {
    let dict = req
        .dictionary
        .as_ref()
        .ok_or_else(|| IngestError::invalid("ExportProfilesServiceRequest has no dictionary"))?;
    let mut out = Vec::new();
    for (ri, rp) in req.resource_profiles.iter().enumerate() {
        let resource_attrs = rp
            .resource
            .as_ref()
            .map_or(&[][..], |r| r.attributes.as_slice());
        for (si, sp) in rp.scope_profiles.iter().enumerate() {
            let scope_attrs = sp
                .scope
                .as_ref()
                .map_or(&[][..], |s| s.attributes.as_slice());
            for (pi, profile) in sp.profiles.iter().enumerate() {
                let at = format!("resource_profiles[{ri}].scope_profiles[{si}].profiles[{pi}]");
                let converted =
                    convert_profile(dict, resource_attrs, scope_attrs, profile, now_nanos)
                        .map_err(|e| e.at(&at))?;
                out.extend(converted);
            }
        }
    }
    Ok(out)
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

fn convert_profile(
    dict: &ProfilesDictionary,
    resource_attrs: &[KeyValue],
    scope_attrs: &[KeyValue],
    profile: &otlp::Profile,
    now_nanos: i64,
) -> Result<Vec<IncomingProfile>> {
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
    } else if !period_type.is_empty() && labels::is_valid_metric_name(period_type) {
        period_type.to_owned()
    } else {
        "process_cpu".to_owned()
    };

    // Series labels: resource then scope attributes, first occurrence wins.
    let mut attrs: BTreeMap<String, String> = BTreeMap::new();
    for kv in resource_attrs.iter().chain(scope_attrs) {
        if let Some(v) = kv.value.as_ref().and_then(string_of) {
            attrs.entry(kv.key.clone()).or_insert(v);
        }
    }
    let default_service = attrs.get("service.name").cloned().unwrap_or_else(|| {
        attrs.get("process.executable.name").map_or_else(
            || labels::UNKNOWN_SERVICE.to_owned(),
            |e| format!("{}:{e}", labels::UNKNOWN_SERVICE),
        )
    });

    // The pprof keeps the dictionary's strings and adds the ones labels need.
    let mut strings = dict.string_table.clone();
    if strings.first().is_none_or(|s| !s.is_empty()) {
        return Err(IngestError::invalid(
            "dictionary.string_table[0] must be the empty string",
        ));
    }
    let mut index: HashMap<String, i64> = HashMap::new();
    let mut intern = |strings: &mut Vec<String>, v: &str| -> i64 {
        if let Some(&i) = index.get(v) {
            return i;
        }
        let i = strings.len() as i64;
        strings.push(v.to_owned());
        index.insert(v.to_owned(), i);
        i
    };

    let mut string_label = |strings: &mut Vec<String>, key: &str, value: &str| pprof::Label {
        key: intern(strings, key),
        str: intern(strings, value),
        ..Default::default()
    };

    let mut by_service: BTreeMap<String, Vec<pprof::Sample>> = BTreeMap::new();
    for (si, sample) in profile.samples.iter().enumerate() {
        let at = |e: IngestError| e.at(format!("samples[{si}]"));
        let stack = get(&dict.stack_table, sample.stack_index, "stack_index").map_err(at)?;
        let mut location_id = Vec::with_capacity(stack.location_indices.len());
        for &li in &stack.location_indices {
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
        let mut service = default_service.clone();
        let mut label = Vec::new();
        for &ai in &sample.attribute_indices {
            let kv = get(&dict.attribute_table, ai, "attribute index").map_err(at)?;
            let key = s(kv.key_strindex, "attribute key_strindex").map_err(at)?;
            let Some(v) = kv.value.as_ref().and_then(string_of) else {
                continue;
            };
            if key == "service.name" {
                service = v;
            } else {
                label.push(string_label(&mut strings, key, &v));
            }
        }
        if sample.link_index != 0 {
            let link = get(&dict.link_table, sample.link_index, "link_index").map_err(at)?;
            if link.span_id.len() == 8 {
                label.push(string_label(&mut strings, "span_id", &hex(&link.span_id)));
            }
            if link.trace_id.len() == 16 {
                label.push(string_label(&mut strings, "trace_id", &hex(&link.trace_id)));
            }
        }
        by_service.entry(service).or_default().push(pprof::Sample {
            location_id,
            value: vec![value.saturating_mul(multiplier)],
            label,
        });
    }

    let mapping: Vec<pprof::Mapping> = dict
        .mapping_table
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let build_id = m
                .attribute_indices
                .iter()
                .filter_map(|&ai| get(&dict.attribute_table, ai, "attribute").ok())
                .find(|kv| {
                    s(kv.key_strindex, "").is_ok_and(|k| k == "process.executable.build_id.gnu")
                })
                .and_then(|kv| kv.value.as_ref().and_then(string_of))
                .map_or(0, |b| intern(&mut strings, &b));
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
    let location: Vec<pprof::Location> = dict
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
    let function: Vec<pprof::Function> = dict
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
    let (st_i, su_i, pt_i, pu_i) = (
        intern(&mut strings, sample_type),
        intern(&mut strings, sample_unit),
        intern(&mut strings, period_type),
        intern(&mut strings, period_unit),
    );

    let mut out = Vec::new();
    for (service, samples) in by_service {
        let mut l = Labels::new();
        for (k, v) in &attrs {
            l.set(k.as_str(), v.as_str());
        }
        l.set(labels::DELTA, "false");
        l.set("__otel__", "true");
        l.set(labels::METRIC_NAME, metric.as_str());
        l.set(labels::SERVICE_NAME, service);
        let p = pprof::Profile {
            sample_type: vec![pprof::ValueType {
                r#type: st_i,
                unit: su_i,
            }],
            sample: samples,
            mapping: mapping.clone(),
            location: location.clone(),
            function: function.clone(),
            string_table: strings.clone(),
            time_nanos,
            duration_nanos,
            period_type: Some(pprof::ValueType {
                r#type: pt_i,
                unit: pu_i,
            }),
            period: profile.period,
            ..Default::default()
        };
        out.push(IncomingProfile {
            labels: l,
            body: ProfileBody::Decoded(Box::new(p)),
            id: id.clone(),
            options: ConvertOptions {
                fallback_time_nanos: now_nanos,
                ..Default::default()
            },
        });
    }
    Ok(out)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// OTLP/JSON writes `traceId`/`spanId` as hex, where protobuf JSON expects base64; rewrites
/// hex ids in `dictionary.linkTable` to base64 so either form decodes.
pub fn hex_ids_to_base64(value: &mut serde_json::Value) {
    let Some(links) = value
        .pointer_mut("/dictionary/linkTable")
        .and_then(serde_json::Value::as_array_mut)
    else {
        return;
    };
    for link in links {
        for (key, len) in [("traceId", 32), ("spanId", 16)] {
            if let Some(serde_json::Value::String(s)) = link.get_mut(key)
                && s.len() == len
                && s.bytes().all(|b| b.is_ascii_hexdigit())
            {
                let bytes: Vec<u8> = (0..len / 2)
                    .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap_or(0))
                    .collect();
                *s = base64(&bytes);
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
