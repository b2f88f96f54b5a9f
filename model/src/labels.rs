//! Series labels: the reserved label names, label sets kept sorted and unique, and the
//! series fingerprint every role computes the same way.

use profusion_proto::types::v1::LabelPair;

pub const METRIC_NAME: &str = "__name__";
pub const SERVICE_NAME: &str = "service_name";
pub const SERVICE_NAME_PRIVATE: &str = "__service_name__";
pub const PROFILE_TYPE: &str = "__profile_type__";
pub const TYPE: &str = "__type__";
pub const UNIT: &str = "__unit__";
pub const PERIOD_TYPE: &str = "__period_type__";
pub const PERIOD_UNIT: &str = "__period_unit__";
pub const DELTA: &str = "__delta__";
pub const SESSION_ID: &str = "__session_id__";
pub const SPY_NAME: &str = "pyroscope_spy";
pub const UNKNOWN_SERVICE: &str = "unknown_service";

/// A set of labels kept sorted by name, without duplicate names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Labels(Vec<(String, String)>);

impl Labels {
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a set from pairs; a later pair replaces an earlier one of the same name. Sorts
    /// once, so building a set is O(n log n) however many pairs a client sends.
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let mut all: Vec<(String, String)> = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        // Stable: equal names keep their order, so the last of each run is the latest pair.
        all.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(String, String)> = Vec::with_capacity(all.len());
        for pair in all {
            match out.last_mut() {
                Some(last) if last.0 == pair.0 => *last = pair,
                _ => out.push(pair),
            }
        }
        Self(out)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| k.as_str().cmp(name))
            .ok()
            .map(|i| self.0[i].1.as_str())
    }

    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        match self.0.binary_search_by(|(k, _)| k.cmp(&name)) {
            Ok(i) => self.0[i].1 = value.into(),
            Err(i) => self.0.insert(i, (name, value.into())),
        }
    }

    /// Sets `name` only if it is absent.
    pub fn set_default(&mut self, name: &str, value: impl Into<String>) {
        if self.get(name).is_none() {
            self.set(name, value);
        }
    }

    pub fn remove(&mut self, name: &str) -> Option<String> {
        self.0
            .binary_search_by(|(k, _)| k.as_str().cmp(name))
            .ok()
            .map(|i| self.0.remove(i).1)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// xxh64 over `name 0xff value 0xff` of the sorted labels: stable across processes.
    pub fn fingerprint(&self) -> u64 {
        let mut h = xxhash_rust::xxh64::Xxh64::new(0);
        for (k, v) in &self.0 {
            h.update(k.as_bytes());
            h.update(&[0xff]);
            h.update(v.as_bytes());
            h.update(&[0xff]);
        }
        h.digest()
    }

    pub fn to_pairs(&self) -> Vec<LabelPair> {
        self.0
            .iter()
            .map(|(name, value)| LabelPair {
                name: name.clone(),
                value: value.clone(),
            })
            .collect()
    }

    /// The Prometheus-style rendering `{a="1", b="2"}` used in ring hashing.
    pub fn render(&self) -> String {
        let body: Vec<String> = self.0.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
        format!("{{{}}}", body.join(", "))
    }

    /// [`Self::render`] for error messages: at most [`DESCRIBE_MAX`] bytes, with the number of
    /// labels left out, so a client's huge label set is never echoed back whole.
    pub fn describe(&self) -> String {
        let mut out = String::from("{");
        for (i, (k, v)) in self.0.iter().enumerate() {
            let pair = format!(
                "{}{}={:?}",
                if i > 0 { ", " } else { "" },
                clip(k, 64),
                clip(v, 64)
            );
            if out.len() + pair.len() > DESCRIBE_MAX {
                out.push_str(&format!(", ... {} more", self.0.len() - i));
                break;
            }
            out.push_str(&pair);
        }
        out.push('}');
        out
    }
}

/// Longest label-set rendering in an error message.
pub const DESCRIBE_MAX: usize = 256;

/// `s` cut to at most `max` characters, with `...` when cut: for quoting client input in
/// error messages.
pub fn clip(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match s.char_indices().nth(max) {
        None => s.into(),
        Some((i, _)) => format!("{}...", &s[..i]).into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_stay_sorted_and_unique() {
        let mut l = Labels::from_pairs([("b", "2"), ("a", "1"), ("b", "3")]);
        l.set_default("a", "x");
        assert_eq!(l.iter().collect::<Vec<_>>(), vec![("a", "1"), ("b", "3")]);
        assert_eq!(l.render(), r#"{a="1", b="3"}"#);
    }

    #[test]
    fn fingerprint_depends_on_every_label() {
        let a = Labels::from_pairs([("a", "1"), ("b", "2")]);
        let b = Labels::from_pairs([("b", "2"), ("a", "1")]);
        let c = Labels::from_pairs([("a", "1"), ("b", "3")]);
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), c.fingerprint());
    }
}
