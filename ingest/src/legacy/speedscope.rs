//! `format=speedscope` uploads: speedscope's JSON file format (py-spy, rbspy and speedscope's
//! own exports), sampled and evented profiles, several per file, frames shared by all.
//!
//! Each profile becomes stacks of frame names that then take the text formats' path, as in
//! Pyroscope. Where Pyroscope's behaviour is a bug we do the sane thing (docs/ingest.md,
//! "speedscope"): a weight is scaled before it is truncated, so py-spy's 0.01 s samples count
//! (Pyroscope truncates them to zero and stores nothing); nanosecond profiles keep their values
//! (Pyroscope's default rate for them overflows and zeroes them); the time an evented profile
//! spends in a frame is scaled whether or not another frame opens on top of it; and profiles
//! merged under one name are each replayed on their own, so two evented profiles starting at
//! the same time do not fail as "out of order".

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::Value;

use super::TextUpload;
use crate::distributor::IncomingProfile;
use crate::error::{IngestError, Result};
use crate::legacy::text::{ParsedStacks, TextLimits};
use crate::limits::Limits;

const SCHEMA: &str = "https://www.speedscope.app/file-format-schema.json";

fn bad(message: impl std::fmt::Display) -> IngestError {
    IngestError::unprocessable(format!("speedscope: {message}"))
}

/// A key of a JSON object, matched without regard to case as Pyroscope's decoder does.
fn key<'a>(object: &'a Value, name: &str) -> Option<&'a Value> {
    object
        .as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

fn number(v: Option<&Value>, what: &str) -> Result<f64> {
    v.and_then(Value::as_f64)
        .filter(|n| n.is_finite())
        .ok_or_else(|| bad(format!("{what} is not a number")))
}

/// A frame index of `at`, checked against the `frames` the file shares.
fn frame(v: &Value, frames: usize, at: &str) -> Result<usize> {
    let i = v
        .as_f64()
        .filter(|n| n.is_finite())
        .ok_or_else(|| bad(format!("{at}: a frame index is not a number")))?
        .trunc();
    if i < 0.0 || i >= frames as f64 {
        return Err(bad(format!(
            "{at}: frame index {i} is not one of the {frames} shared frames"
        )));
    }
    Ok(i as usize)
}

/// How a unit's weights become stored values: the weight times `precision`, truncated, are
/// samples at `rate` per second (0: the values themselves), as in Pyroscope, except that
/// nanoseconds are counted one per nanosecond.
fn unit_scale(unit: &str) -> Option<(f64, i64)> {
    Some(match unit {
        "seconds" => (100.0, 100),
        "milliseconds" => (100.0, 100_000),
        "microseconds" => (100.0, 100_000_000),
        "nanoseconds" => (1.0, 1_000_000_000),
        "none" => (100.0, 10_000),
        "bytes" => (1.0, 0),
        _ => return None,
    })
}

/// The profiles of one upload: one per distinct (name, type, unit, start) in the file.
pub(super) fn decode(
    upload: &TextUpload<'_>,
    body: &Bytes,
    limits: &Limits,
) -> Result<Vec<IncomingProfile>> {
    if body.len() > limits.max_profile_size_bytes {
        return Err(crate::pprof::too_big(
            body.len(),
            limits.max_profile_size_bytes,
        ));
    }
    let file: Value = serde_json::from_slice(body)
        .map_err(|e| bad(format!("not a speedscope JSON file: {e}")))?;
    match key(&file, "$schema").and_then(Value::as_str) {
        Some(SCHEMA) => {}
        other => {
            return Err(bad(format!(
                "unknown $schema {other:?}: expected {SCHEMA:?}"
            )));
        }
    }
    let frames: Vec<&str> = key(&file, "shared")
        .and_then(|s| key(s, "frames"))
        .and_then(Value::as_array)
        .map(|frames| {
            frames
                .iter()
                .map(|f| key(f, "name").and_then(Value::as_str).unwrap_or(""))
                .collect()
        })
        .unwrap_or_default();
    let profiles = key(&file, "profiles")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no profiles array"))?;

    // Profiles with the same name, type, unit and start are one, as in Pyroscope; each part's
    // stacks are computed on its own and summed.
    let mut merged: Vec<(MergeKey, HashMap<Vec<usize>, f64>)> = Vec::new();
    for (i, p) in profiles.iter().enumerate() {
        let at = format!("profiles[{i}]");
        let name = key(p, "name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let kind = key(p, "type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let unit = key(p, "unit")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let (precision, _) =
            unit_scale(&unit).ok_or_else(|| bad(format!("{at}: unknown unit {unit:?}")))?;
        let start = number(key(p, "startValue"), &format!("{at}.startValue"))?;
        let mut stacks: HashMap<Vec<usize>, f64> = HashMap::new();
        match kind.as_str() {
            "sampled" => sampled(p, frames.len(), precision, &at, &mut stacks)?,
            "evented" => evented(p, frames.len(), precision, start, &at, &mut stacks)?,
            other => return Err(bad(format!("{at}: unknown profile type {other:?}"))),
        }
        let key = MergeKey {
            name,
            kind,
            unit,
            start: start.to_bits(),
        };
        let slot = match merged.iter().position(|(k, _)| *k == key) {
            Some(i) => &mut merged[i].1,
            None => {
                merged.push((key, HashMap::new()));
                &mut merged.last_mut().expect("just pushed").1
            }
        };
        for (stack, value) in stacks {
            *slot.entry(stack).or_default() += value;
        }
    }
    merged.sort_by(|a, b| f64::from_bits(a.0.start).total_cmp(&f64::from_bits(b.0.start)));

    let multi = merged.len() > 1;
    let mut out = Vec::new();
    for (key, stacks) in merged {
        let (_, unit_rate) = unit_scale(&key.unit).expect("checked above");
        let mut tags = upload.tags.to_vec();
        if !key.name.is_empty() {
            tags.retain(|(k, _)| k != "profile_name");
            tags.push(("profile_name".into(), key.name.clone()));
        }
        let app = if multi {
            format!("{}.{}", upload.app, key.unit)
        } else {
            upload.app.to_owned()
        };
        if multi && key.unit == "none" {
            return Err(bad(
                "unknown profile type: none (several profiles of unit none)",
            ));
        }
        let mut parsed = ParsedStacks::new(TextLimits::of(limits));
        let mut sorted: Vec<(Vec<usize>, f64)> = stacks.into_iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        for (stack, value) in sorted {
            let names: Vec<&str> = stack.iter().map(|&i| frames[i]).collect();
            parsed.add(&names, whole(value))?;
        }
        let parsed = parsed.finish()?;
        let upload = TextUpload {
            app: &app,
            tags: &tags,
            // The file's unit picks the rate unless the request gave one of its own.
            sample_rate: if upload.sample_rate == 100 {
                unit_rate
            } else {
                upload.sample_rate
            },
            ..*upload
        };
        out.extend(
            upload
                .profile(&parsed)
                .map_err(|e| IngestError::unprocessable(format!("speedscope: {}", e.message)))?,
        );
    }
    Ok(out)
}

/// A scaled weight as a whole number: truncated, except that a value a rounding error below a
/// whole number is that number (0.29 s × 100 is 28.999999999999996 in binary floating point).
fn whole(value: f64) -> i64 {
    let nearest = value.round();
    if (value - nearest).abs() < 1e-6 {
        nearest as i64
    } else {
        value.trunc() as i64
    }
}

#[derive(Debug, PartialEq)]
struct MergeKey {
    name: String,
    kind: String,
    unit: String,
    start: u64,
}

/// A sampled profile: each sample a root-first list of frame indexes, with its weight.
fn sampled(
    p: &Value,
    frames: usize,
    precision: f64,
    at: &str,
    stacks: &mut HashMap<Vec<usize>, f64>,
) -> Result<()> {
    let samples = key(p, "samples")
        .and_then(Value::as_array)
        .ok_or_else(|| bad(format!("{at}: a sampled profile without samples")))?;
    let weights = key(p, "weights")
        .and_then(Value::as_array)
        .ok_or_else(|| bad(format!("{at}: a sampled profile without weights")))?;
    if samples.len() != weights.len() {
        return Err(bad(format!(
            "{at}: {} samples but {} weights",
            samples.len(),
            weights.len()
        )));
    }
    for (j, (sample, weight)) in samples.iter().zip(weights).enumerate() {
        let weight = number(Some(weight), &format!("{at}.weights[{j}]"))?;
        if weight < 0.0 {
            return Err(bad(format!("{at}.weights[{j}] is negative")));
        }
        let stack = sample
            .as_array()
            .ok_or_else(|| bad(format!("{at}.samples[{j}] is not a list of frames")))?
            .iter()
            .map(|f| frame(f, frames, &format!("{at}.samples[{j}]")))
            .collect::<Result<Vec<_>>>()?;
        *stacks.entry(stack).or_default() += weight * precision;
    }
    Ok(())
}

/// An evented profile: frames opened and closed in time order; the time between two events
/// belongs to the stack open between them.
fn evented(
    p: &Value,
    frames: usize,
    precision: f64,
    start: f64,
    at: &str,
    stacks: &mut HashMap<Vec<usize>, f64>,
) -> Result<()> {
    let events = key(p, "events")
        .and_then(Value::as_array)
        .ok_or_else(|| bad(format!("{at}: an evented profile without events")))?;
    let mut open: Vec<usize> = Vec::new();
    let mut last = start;
    for (j, event) in events.iter().enumerate() {
        let where_ = format!("{at}.events[{j}]");
        let time = number(key(event, "at"), &format!("{where_}.at"))?;
        if time < last {
            return Err(bad(format!(
                "{where_}: events out of order ({time} < {last})"
            )));
        }
        let f = frame(key(event, "frame").unwrap_or(&Value::Null), frames, &where_)?;
        if !open.is_empty() {
            *stacks.entry(open.clone()).or_default() += (time - last) * precision;
        }
        match key(event, "type").and_then(Value::as_str) {
            Some("O") => open.push(f),
            Some("C") => {
                if open.last() != Some(&f) {
                    return Err(bad(format!(
                        "{where_}: closes frame {f}, which is not the innermost open frame"
                    )));
                }
                open.pop();
            }
            other => return Err(bad(format!("{where_}: unknown event type {other:?}"))),
        }
        last = time;
    }
    Ok(())
}
