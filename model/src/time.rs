//! Time ranges of queries and scans, and the wall clock in the units blocks use.

use serde::{Deserialize, Serialize};

/// A time range in Unix nanoseconds, both ends inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TimeRange {
    pub start: i64,
    pub end: i64,
}

impl TimeRange {
    /// A range that selects nothing.
    pub const EMPTY: Self = Self {
        start: i64::MAX,
        end: i64::MIN,
    };

    /// Every time there is.
    pub const ALL: Self = Self {
        start: i64::MIN,
        end: i64::MAX,
    };

    /// From Pyroscope's millisecond bounds, both inclusive.
    pub fn from_millis(start: i64, end: i64) -> Self {
        Self {
            start: start.saturating_mul(1_000_000),
            end: end.saturating_mul(1_000_000).saturating_add(999_999),
        }
    }

    /// Whether `[min, max]` (inclusive) shares a moment with this range.
    pub fn overlaps(&self, min: i64, max: i64) -> bool {
        max >= self.start && min <= self.end
    }

    pub fn is_empty(&self) -> bool {
        self.start > self.end
    }
}

/// Unix time now, in milliseconds.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Unix time now, in nanoseconds.
pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}
