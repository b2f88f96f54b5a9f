//! Validation of series labels and profile-type parts, as Pyroscope's distributor checks them.
//! The label model itself (reserved names, [`Labels`], fingerprints) is `profusion_model::labels`.

use profusion_model::labels::{Labels, METRIC_NAME, SERVICE_NAME, clip};

use crate::error::{IngestError, Result};
use crate::limits::Limits;

/// A valid Prometheus metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn is_valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Checks a series' labels as Pyroscope's distributor does; the message names the label.
pub fn validate(labels: &Labels, limits: &Limits) -> Result<()> {
    if labels.len() > limits.max_label_names_per_series {
        return Err(IngestError::invalid(format!(
            "series {} has {} labels, more than the limit of {}",
            labels.describe(),
            labels.len(),
            limits.max_label_names_per_series
        )));
    }
    match labels.get(METRIC_NAME) {
        None => {
            return Err(IngestError::invalid(format!(
                "series {} has no {METRIC_NAME} label",
                labels.describe()
            )));
        }
        Some(name) if !is_valid_metric_name(name) => {
            return Err(IngestError::invalid(format!(
                "invalid {METRIC_NAME} {:?}: must match [a-zA-Z_:][a-zA-Z0-9_:]*",
                clip(name, 128)
            )));
        }
        Some(_) => {}
    }
    if labels.get(SERVICE_NAME).is_none_or(str::is_empty) {
        return Err(IngestError::invalid(format!(
            "series {} has no {SERVICE_NAME} label",
            labels.describe()
        )));
    }
    for (name, value) in labels.iter() {
        if name.is_empty() {
            return Err(IngestError::invalid(format!(
                "series {} has an empty label name",
                labels.describe()
            )));
        }
        if name.len() > limits.max_label_name_length {
            return Err(IngestError::invalid(format!(
                "label name {:?} is {} bytes long, more than the limit of {}",
                clip(name, 64),
                name.len(),
                limits.max_label_name_length
            )));
        }
        if value.len() > limits.max_label_value_length {
            return Err(IngestError::invalid(format!(
                "value of label {:?} is {} bytes long, more than the limit of {}",
                clip(name, 64),
                value.len(),
                limits.max_label_value_length
            )));
        }
    }
    Ok(())
}

/// Refuses a part of a profile type id that no query could name: `:` separates the parts of
/// `name:sample_type:sample_unit:period_type:period_unit`, and the legacy query grammar
/// `<profile type>{matchers}` ends the type at the first brace. Stored, such a profile would be
/// listed but never selectable.
pub fn check_profile_type_part(what: &str, value: &str) -> Result<()> {
    match value.chars().find(|c| matches!(c, ':' | '{' | '}')) {
        None => Ok(()),
        Some(c) => Err(IngestError::invalid(format!(
            "{what} {:?} must not contain {c:?}: it becomes part of the profile type id \
             name:sample_type:sample_unit:period_type:period_unit that queries select",
            clip(value, 128)
        ))),
    }
}

/// The last `max` bytes of `s` or fewer, cut at a character boundary, as Pyroscope keeps the
/// tail of long symbols.
pub fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut cut = s.len() - max;
    while !s.is_char_boundary(cut) {
        cut += 1;
    }
    &s[cut..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_respects_char_boundaries() {
        let s = "aé".repeat(3);
        assert_eq!(tail(&s, 4), "aé");
        assert_eq!(tail(&s, 9), s);
    }
}
