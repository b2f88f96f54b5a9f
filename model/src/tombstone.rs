//! Deletions: what `delete_series` records, and how readers and the compactor apply it.
//!
//! A tombstone names the series its selectors matched when the call was made (by fingerprint,
//! the hash of their labels) and a time range. Every reader hides the profiles of those series
//! in that range from the moment the tombstone is in the catalog; the compactor leaves them out
//! of the blocks it writes, and records in each block the newest tombstone it applied
//! ([`crate::block::BlockMeta::tombstone_seq`]), so a block rewritten since needs no hiding.
//! Tombstones stay until retention expires their range: data written into a deleted range of a
//! deleted series later is hidden too, as the caller asked.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::time::TimeRange;

/// One `delete_series` call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    pub tenant: String,
    /// Assigned by the catalog, increasing in the order tombstones became visible.
    pub seq: i64,
    /// Profile times hidden, both ends inclusive.
    pub range: TimeRange,
    /// The `match[]` selectors, as given.
    pub selectors: Vec<String>,
    /// The series they matched, sorted.
    pub fingerprints: Vec<u64>,
    /// The `service_name`s of those series, sorted: blocks holding none of them are untouched.
    pub services: Vec<String>,
    /// Unix milliseconds of the call.
    pub created_at_millis: i64,
}

impl Tombstone {
    /// Whether the profile of series `fingerprint` at `time` is deleted.
    pub fn hides(&self, fingerprint: u64, time: i64) -> bool {
        time >= self.range.start
            && time <= self.range.end
            && self.fingerprints.binary_search(&fingerprint).is_ok()
    }

    /// Whether a block of these bounds and services may hold deleted profiles.
    pub fn touches(&self, min_time: i64, max_time: i64, services: &[String]) -> bool {
        self.range.overlaps(min_time, max_time)
            && services
                .iter()
                .any(|s| self.services.binary_search(s).is_ok())
    }
}

/// The tombstones of one tenant that apply to a scan, as one test per profile.
#[derive(Debug, Clone, Default)]
pub struct Deletions {
    tombstones: Vec<(TimeRange, HashSet<u64>)>,
}

impl Deletions {
    pub fn new<'a>(tombstones: impl IntoIterator<Item = &'a Tombstone>) -> Self {
        Self {
            tombstones: tombstones
                .into_iter()
                .map(|t| (t.range, t.fingerprints.iter().copied().collect()))
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.tombstones.is_empty()
    }

    /// Whether the profile of series `fingerprint` at `time` is deleted.
    pub fn hides(&self, fingerprint: u64, time: i64) -> bool {
        self.tombstones.iter().any(|(range, fps)| {
            time >= range.start && time <= range.end && fps.contains(&fingerprint)
        })
    }
}
