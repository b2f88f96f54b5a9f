//! Pyroscope's legacy `POST /ingest` API: the `name` and time grammars, format selection, the
//! text formats (folded/"groups", `lines`, `trie`, `tree`) turned into synthetic pprof
//! profiles, and pprof bodies, raw or multipart with `sample_type_config`.

use std::collections::HashMap;

use bytes::Bytes;
use profusion_proto::google::v1::Profile;

use crate::distributor::{IncomingProfile, ProfileBody};
use crate::error::{IngestError, Result};
use crate::limits::Limits;
use crate::pprof::ConvertOptions;
use profusion_model::labels::{self, Labels};

pub mod jfr;
mod speedscope;
mod text;

pub use text::{ParsedStacks, TextLimits, parse_folded, parse_tree, parse_trie};

/// The query parameters of an `/ingest` request.
#[derive(Debug, Clone, Default)]
pub struct IngestParams {
    pub name: Option<String>,
    pub from: Option<String>,
    pub until: Option<String>,
    pub sample_rate: Option<String>,
    pub spy_name: Option<String>,
    pub units: Option<String>,
    pub aggregation_type: Option<String>,
    pub format: Option<String>,
}

impl IngestParams {
    /// Reads the parameters from decoded query pairs; unknown keys are ignored.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut p = Self::default();
        for (k, v) in pairs {
            let slot = match k {
                "name" => &mut p.name,
                "from" => &mut p.from,
                "until" => &mut p.until,
                "sampleRate" => &mut p.sample_rate,
                "spyName" => &mut p.spy_name,
                "units" => &mut p.units,
                "aggregationType" => &mut p.aggregation_type,
                "format" => &mut p.format,
                _ => continue,
            };
            *slot = Some(v.to_owned());
        }
        p
    }
}

/// Body formats of `/ingest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Folded,
    Lines,
    Trie,
    Tree,
    Pprof,
    Multipart,
    Jfr,
    Speedscope,
}

/// Picks the format as Pyroscope does: the `format` parameter, then the content type.
pub fn detect_format(format: Option<&str>, content_type: &str) -> Result<Format> {
    Ok(match format {
        Some("trie") => Format::Trie,
        Some("tree") => Format::Tree,
        Some("lines") => Format::Lines,
        Some("jfr") => Format::Jfr,
        Some("pprof") if content_type.contains("multipart/form-data") => Format::Multipart,
        Some("pprof") => Format::Pprof,
        Some("speedscope") => Format::Speedscope,
        Some("folded" | "groups" | "") | None => match content_type {
            ct if ct.starts_with("binary/octet-stream+trie") => Format::Trie,
            ct if ct.starts_with("binary/octet-stream+tree") => Format::Tree,
            ct if ct.contains("multipart/form-data") => Format::Multipart,
            _ => Format::Folded,
        },
        Some(other) => {
            return Err(IngestError::invalid(format!(
                "unknown format {other:?}: expected one of pprof, jfr, speedscope, trie, tree, lines, folded, groups"
            )));
        }
    })
}

/// Splits `app.name{k=v,...}` into the app name and its tags.
pub fn parse_name(name: &str) -> Result<(String, Vec<(String, String)>)> {
    let (app, rest) = match name.find('{') {
        Some(i) => (&name[..i], Some(&name[i + 1..])),
        None => (name, None),
    };
    let app = app.trim();
    if app.is_empty() {
        return Err(IngestError::invalid(format!(
            "name {name:?}: the application name is empty"
        )));
    }
    if let Some(c) = app
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/')))
    {
        return Err(IngestError::invalid(format!(
            "name {name:?}: character {c:?} is not allowed in an application name"
        )));
    }
    let mut tags = Vec::new();
    if let Some(rest) = rest {
        let body = rest
            .trim_end()
            .strip_suffix('}')
            .ok_or_else(|| IngestError::invalid(format!("name {name:?}: missing closing '}}'")))?;
        for pair in body.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').ok_or_else(|| {
                IngestError::invalid(format!("name {name:?}: tag {pair:?} is not key=value"))
            })?;
            let (k, v) = (k.trim(), v.trim());
            if k.is_empty()
                || !k
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
            {
                return Err(IngestError::invalid(format!(
                    "name {name:?}: invalid tag key {k:?}"
                )));
            }
            if k == labels::METRIC_NAME {
                return Err(IngestError::invalid(format!(
                    "name {name:?}: tag key {k:?} is reserved"
                )));
            }
            tags.push((k.to_owned(), v.to_owned()));
        }
    }
    Ok((app.to_owned(), tags))
}

/// Parses Pyroscope's time grammar into Unix nanoseconds: `now`, `now-1h` (s, m, h, d, w),
/// `YYYYMMDD`, or a Unix time in s, ms, µs or ns told apart by its number of digits.
pub fn parse_time(s: &str, now_nanos: i64) -> Result<i64> {
    let s = s.trim();
    if s.is_empty() || s == "now" {
        return Ok(now_nanos);
    }
    if let Some(offset) = s.strip_prefix("now") {
        let (sign, rest) = match offset.as_bytes().first() {
            Some(b'-') => (-1i64, &offset[1..]),
            Some(b'+') => (1, &offset[1..]),
            _ => return Err(bad_time(s)),
        };
        let split = rest
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| bad_time(s))?;
        let n: i64 = rest[..split].parse().map_err(|_| bad_time(s))?;
        let unit: i64 = match &rest[split..] {
            "s" => 1,
            "m" | "min" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 604_800,
            "y" => 31_536_000,
            _ => return Err(bad_time(s)),
        };
        return Ok(
            now_nanos.saturating_add(sign * n.saturating_mul(unit).saturating_mul(1_000_000_000))
        );
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad_time(s));
    }
    if s.len() == 8 {
        let (y, m, d) = (&s[..4], &s[4..6], &s[6..]);
        if let (Ok(y), Ok(m), Ok(d)) = (y.parse::<i64>(), m.parse::<u32>(), d.parse::<u32>())
            && (1970..=2200).contains(&y)
            && (1..=12).contains(&m)
            && (1..=31).contains(&d)
        {
            return Ok(days_from_civil(y, m, d) * 86_400 * 1_000_000_000);
        }
    }
    let v: i64 = s.parse().map_err(|_| bad_time(s))?;
    Ok(match s.len() {
        0..=10 => v.saturating_mul(1_000_000_000),
        11..=13 => v.saturating_mul(1_000_000),
        14..=16 => v.saturating_mul(1_000),
        _ => v,
    })
}

fn bad_time(s: &str) -> IngestError {
    IngestError::invalid(format!(
        "invalid time {s:?}: expected now, now-<n><s|m|h|d|w>, YYYYMMDD or a Unix timestamp"
    ))
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (`__name__`, sample type, unit) for a legacy name suffix.
fn suffix_type(suffix: &str) -> Option<(&'static str, &'static str, &'static str)> {
    Some(match suffix {
        "cpu" | "itimer" => ("process_cpu", "samples", "count"),
        "wall" => ("wall", "samples", "count"),
        "inuse_objects" => ("memory", "inuse_objects", "count"),
        "alloc_objects" => ("memory", "alloc_objects", "count"),
        "inuse_space" => ("memory", "inuse_space", "bytes"),
        "alloc_space" => ("memory", "alloc_space", "bytes"),
        "goroutines" => ("goroutine", "goroutines", "count"),
        "mutex_count" => ("mutex", "contentions", "count"),
        "mutex_duration" => ("mutex", "delay", "nanoseconds"),
        "block_count" | "lock_count" => ("block", "contentions", "count"),
        "block_duration" | "lock_duration" => ("block", "delay", "nanoseconds"),
        "alloc_in_new_tlab_objects" => ("memory", "alloc_in_new_tlab_objects", "count"),
        "alloc_outside_tlab_objects" => ("memory", "alloc_outside_tlab_objects", "count"),
        "live" => ("memory", "live", "count"),
        "alloc_in_new_tlab_bytes" => ("memory", "alloc_in_new_tlab_bytes", "bytes"),
        "alloc_outside_tlab_bytes" => ("memory", "alloc_outside_tlab_bytes", "bytes"),
        "exceptions" => ("exceptions", "samples", "count"),
        "seconds" | "nanoseconds" | "microseconds" | "milliseconds" => ("wall", "samples", "count"),
        "bytes" => ("memory", "samples", "bytes"),
        _ => return None,
    })
}

/// `__name__` of a pprof pushed through `/ingest`, from its sample types.
fn infer_metric(sample_types: &[&str]) -> String {
    if sample_types.contains(&"wall") {
        return "wall".into();
    }
    for t in sample_types {
        if t.contains("cpu") || *t == "samples" {
            return "process_cpu".into();
        }
        if t.starts_with("alloc_")
            || t.starts_with("inuse_")
            || t.contains("space")
            || t.contains("objects")
        {
            return "memory".into();
        }
        if t.starts_with("mutex_") || *t == "contentions" || *t == "delay" {
            return "mutex".into();
        }
        if t.starts_with("block_") {
            return "block".into();
        }
        if t.starts_with("goroutine") {
            return "goroutines".into();
        }
    }
    "process_cpu".into()
}

/// Series labels shared by every `/ingest` format.
fn base_labels(app: &str, tags: &[(String, String)], metric: &str, spy: &str) -> Labels {
    let kept = tags
        .iter()
        .filter(|(k, _)| !k.starts_with("__") || k == labels::SESSION_ID)
        .map(|(k, v)| (k.as_str(), v.as_str()));
    let mut l = Labels::from_pairs(
        [
            (labels::METRIC_NAME, metric),
            (labels::DELTA, "false"),
            (labels::SPY_NAME, spy),
        ]
        .into_iter()
        .chain(kept),
    );
    if l.get(labels::SERVICE_NAME).is_some() {
        l.set_default("app_name", app);
    } else {
        l.set(labels::SERVICE_NAME, app);
    }
    l
}

/// One part of a `multipart/form-data` body.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub name: String,
    pub data: Bytes,
}

/// Splits a `multipart/form-data` body; `content_type` carries the boundary.
pub fn parse_multipart(content_type: &str, body: &Bytes) -> Result<Vec<Part>> {
    let boundary = content_type
        .split(';')
        .filter_map(|p| p.trim().strip_prefix("boundary="))
        .next()
        .map(|b| b.trim_matches('"'))
        .filter(|b| !b.is_empty() && b.len() <= 200)
        .ok_or_else(|| IngestError::invalid("multipart body without a boundary in Content-Type"))?;
    let delim = format!("--{boundary}");
    let data = body.as_ref();
    let mut parts = Vec::new();
    let mut pos = find(data, delim.as_bytes(), 0)
        .ok_or_else(|| IngestError::invalid("multipart body has no opening boundary"))?;
    loop {
        pos += delim.len();
        if data[pos..].starts_with(b"--") {
            return Ok(parts);
        }
        pos = skip_crlf(data, pos);
        let header_end = find(data, b"\r\n\r\n", pos)
            .ok_or_else(|| IngestError::invalid("multipart part without a header end"))?;
        let headers = std::str::from_utf8(&data[pos..header_end])
            .map_err(|_| IngestError::invalid("multipart part headers are not UTF-8"))?;
        let name = headers
            .lines()
            .filter(|l| l.to_ascii_lowercase().starts_with("content-disposition"))
            .flat_map(|l| l.split(';'))
            .filter_map(|p| p.trim().strip_prefix("name="))
            .map(|n| n.trim_matches('"').to_owned())
            .next()
            .unwrap_or_default();
        let start = header_end + 4;
        let end = find(data, format!("\r\n{delim}").as_bytes(), start).ok_or_else(|| {
            IngestError::invalid(format!("multipart part {name:?} is not terminated"))
        })?;
        parts.push(Part {
            name,
            data: body.slice(start..end),
        });
        pos = end + 2;
    }
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if from > hay.len() {
        return None;
    }
    hay[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

fn skip_crlf(data: &[u8], pos: usize) -> usize {
    if data[pos..].starts_with(b"\r\n") {
        pos + 2
    } else {
        pos
    }
}

#[derive(Debug, serde::Deserialize)]
struct SampleTypeConfig {
    units: Option<String>,
    #[serde(rename = "display-name")]
    display_name: Option<String>,
}

/// Turns one `/ingest` request into profiles for the distributor. An empty result means the
/// request is accepted but stores nothing (as Pyroscope does for span-profile text uploads).
pub fn decode(
    params: &IngestParams,
    content_type: &str,
    body: Bytes,
    now_nanos: i64,
    limits: &Limits,
) -> Result<Vec<IncomingProfile>> {
    let name = params
        .name
        .as_deref()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| IngestError::invalid("the name parameter is required"))?;
    let (app, tags) = parse_name(name)?;
    // Refused once the labels are built anyway; a name of thousands of tags is not built.
    if tags.len() > limits.max_label_names_per_series {
        return Err(IngestError::invalid(format!(
            "name has {} tags, more than the limit of {} labels per series",
            tags.len(),
            limits.max_label_names_per_series
        )));
    }
    let from = parse_time(params.from.as_deref().unwrap_or("now"), now_nanos)?;
    let until = parse_time(params.until.as_deref().unwrap_or("now"), now_nanos)?;
    let spy = params
        .spy_name
        .as_deref()
        .filter(|s| !s.is_empty())
        .unwrap_or("unknown");
    // A rate that is absent, not a number or not positive is the default, 100 per second.
    let given_rate = params
        .sample_rate
        .as_deref()
        .and_then(|r| r.parse::<i64>().ok())
        .filter(|r| *r > 0);
    let sample_rate = given_rate.unwrap_or(100);
    let text_upload = TextUpload {
        name,
        app: &app,
        tags: &tags,
        spy,
        sample_rate,
        from,
        until,
    };

    match detect_format(params.format.as_deref(), content_type)? {
        Format::Jfr => jfr::decode(
            &jfr::JfrUpload {
                app: &app,
                tags: &tags,
                spy,
                from_nanos: from,
                until_nanos: until,
                sample_rate: given_rate,
            },
            content_type,
            &body,
            limits,
        ),
        format @ (Format::Pprof | Format::Multipart) => {
            let (raw, options) = if format == Format::Multipart {
                pprof_from_multipart(content_type, &body)?
            } else {
                (body, ConvertOptions::default())
            };
            let bytes = crate::pprof::maybe_gunzip(&raw, limits.max_profile_size_bytes)?;
            let names = crate::pprof::ProfileView::sample_type_names(&bytes)
                .map_err(|e| IngestError::invalid(format!("invalid pprof protobuf: {e}")))?;
            let types: Vec<&str> = names
                .into_iter()
                .map(|t| options.sample_type_names.get(t).map_or(t, String::as_str))
                .collect();
            let metric = infer_metric(&types);
            // The distributor reads it again in place; handing it over uncompressed saves a
            // second gunzip.
            let body = match bytes {
                std::borrow::Cow::Borrowed(_) => raw.clone(),
                std::borrow::Cow::Owned(v) => Bytes::from(v),
            };
            Ok(vec![IncomingProfile {
                labels: base_labels(&app, &tags, &metric, spy),
                body: ProfileBody::Raw(body),
                id: String::new(),
                options: ConvertOptions {
                    fallback_time_nanos: from,
                    fallback_duration_nanos: if until > from {
                        until.saturating_sub(from)
                    } else {
                        0
                    },
                    fix_1970: true,
                    prefix_function_with_filename: matches!(spy, "pyspy" | "rbspy" | "scripting"),
                    ..options
                },
            }])
        }
        Format::Speedscope => speedscope::decode(&text_upload, &body, limits),
        text => {
            if tags.iter().any(|(k, _)| k == "profile_id") {
                return Ok(Vec::new());
            }
            if body.len() > limits.max_profile_size_bytes {
                return Err(crate::pprof::too_big(
                    body.len(),
                    limits.max_profile_size_bytes,
                ));
            }
            let text_limits = TextLimits::of(limits);
            let stacks = match text {
                Format::Folded => parse_folded(&body, false, text_limits)?,
                Format::Lines => parse_folded(&body, true, text_limits)?,
                Format::Trie => parse_trie(&body, text_limits)?,
                _ => parse_tree(&body, text_limits)?,
            };
            Ok(text_upload.profile(&stacks)?.into_iter().collect())
        }
    }
}

/// What a text upload (folded, lines, trie, tree, and each profile of a speedscope file) says
/// besides its stacks.
#[derive(Debug, Clone, Copy)]
struct TextUpload<'a> {
    /// The `name` parameter, for messages.
    name: &'a str,
    app: &'a str,
    tags: &'a [(String, String)],
    spy: &'a str,
    /// Samples per second (`sampleRate`, 100 by default).
    sample_rate: i64,
    from: i64,
    until: i64,
}

impl TextUpload<'_> {
    /// The profile of root-first `stacks`, as Pyroscope's text path makes it: the app name's
    /// last `.`-suffix picks the profile type (none: CPU), CPU and wall-clock values are
    /// samples times the period `10^9 / sampleRate`. None for a span's profile (a
    /// `profile_id` tag), which Pyroscope drops.
    fn profile(&self, stacks: &ParsedStacks) -> Result<Option<IncomingProfile>> {
        if self.tags.iter().any(|(k, _)| k == "profile_id") {
            return Ok(None);
        }
        let (app, suffix) = match self.app.rsplit_once('.') {
            Some((a, s)) => (a, s),
            None => (self.app, "cpu"),
        };
        let (metric, mut sample_type, mut unit) = suffix_type(suffix).ok_or_else(|| {
            IngestError::invalid(format!(
                "unknown profile type {suffix:?} in name {:?}",
                self.name
            ))
        })?;
        let (mut period_type, mut period_unit, mut period) = (sample_type, unit, 0i64);
        if matches!(metric, "process_cpu" | "wall") && self.sample_rate > 0 {
            period = 1_000_000_000 / self.sample_rate;
            sample_type = if metric == "wall" { "wall" } else { "cpu" };
            unit = "nanoseconds";
            (period_type, period_unit) = ("cpu", "nanoseconds");
        }
        let profile = stacks.to_pprof(
            period.max(1),
            (sample_type, unit),
            (period_type, period_unit),
            period,
            self.from,
            self.until.saturating_sub(self.from).max(0),
        );
        Ok(Some(IncomingProfile {
            labels: base_labels(app, self.tags, metric, self.spy),
            body: ProfileBody::Decoded(Box::new(profile)),
            id: String::new(),
            options: ConvertOptions {
                fallback_time_nanos: self.from,
                ..ConvertOptions::default()
            },
        }))
    }
}

fn pprof_from_multipart(content_type: &str, body: &Bytes) -> Result<(Bytes, ConvertOptions)> {
    let parts = parse_multipart(content_type, body)?;
    if parts.iter().any(|p| p.name == "prev_profile") {
        return Err(IngestError::invalid(
            "unsupported client version: multipart part prev_profile (cumulative profiles) is not supported; upgrade the agent",
        ));
    }
    let profile = parts
        .iter()
        .find(|p| p.name == "profile")
        .ok_or_else(|| IngestError::invalid("multipart body has no profile part"))?
        .data
        .clone();
    let mut options = ConvertOptions::default();
    if let Some(cfg) = parts.iter().find(|p| p.name == "sample_type_config") {
        let config: HashMap<String, SampleTypeConfig> = serde_json::from_slice(&cfg.data)
            .map_err(|e| IngestError::invalid(format!("invalid sample_type_config JSON: {e}")))?;
        for (ty, c) in config {
            if let Some(units) = c.units {
                options.sample_type_units.insert(ty.clone(), units);
            }
            if let Some(display) = c.display_name {
                options.sample_type_names.insert(ty, display);
            }
        }
    }
    Ok((profile, options))
}

/// A one-sample-type pprof of trusted root-first stacks (tests and tools).
pub fn synthetic_pprof(
    stacks: &[(Vec<String>, i64)],
    multiplier: i64,
    sample_type: (&str, &str),
    period_type: (&str, &str),
    period: i64,
    time_nanos: i64,
    duration_nanos: i64,
) -> Profile {
    ParsedStacks::from_stacks(stacks)
        .expect("trusted stacks are valid UTF-8")
        .to_pprof(
            multiplier,
            sample_type,
            period_type,
            period,
            time_nanos,
            duration_nanos,
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_grammar() {
        let (app, tags) = parse_name("my.app.cpu{env=prod, region = eu }").unwrap();
        assert_eq!(app, "my.app.cpu");
        assert_eq!(
            tags,
            vec![
                ("env".into(), "prod".into()),
                ("region".into(), "eu".into())
            ]
        );
        assert!(parse_name("app{__name__=x}").is_err());
        assert!(parse_name("app{env}").is_err());
        assert!(parse_name("{env=x}").is_err());
        assert!(parse_name("a b").is_err());
    }

    #[test]
    fn time_grammar() {
        let now = 1_700_000_000 * 1_000_000_000;
        assert_eq!(parse_time("now", now).unwrap(), now);
        assert_eq!(parse_time("now-1h", now).unwrap(), now - 3_600_000_000_000);
        assert_eq!(
            parse_time("1700000001", now).unwrap(),
            1_700_000_001_000_000_000
        );
        assert_eq!(
            parse_time("1700000001000", now).unwrap(),
            1_700_000_001_000_000_000
        );
        assert_eq!(
            parse_time("1700000001000000", now).unwrap(),
            1_700_000_001_000_000_000
        );
        assert_eq!(
            parse_time("1700000001000000000", now).unwrap(),
            1_700_000_001_000_000_000
        );
        assert_eq!(
            parse_time("20231114", now).unwrap(),
            1_699_920_000 * 1_000_000_000
        );
        assert!(parse_time("yesterday", now).is_err());
        assert!(parse_time("now-1x", now).is_err());
    }

    #[test]
    fn multipart_parts() {
        let ct = "multipart/form-data; boundary=XyZ";
        let body = Bytes::from_static(b"--XyZ\r\nContent-Disposition: form-data; name=\"profile\"; filename=\"p\"\r\n\r\nPPROF\r\n--XyZ\r\nContent-Disposition: form-data; name=\"sample_type_config\"\r\n\r\n{}\r\n--XyZ--\r\n");
        let parts = parse_multipart(ct, &body).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].name, "profile");
        assert_eq!(&parts[0].data[..], b"PPROF");
        assert_eq!(parts[1].name, "sample_type_config");
        assert!(parse_multipart("multipart/form-data", &body).is_err());
        assert!(parse_multipart(ct, &Bytes::from_static(b"--XyZ\r\nnope")).is_err());
    }
}
