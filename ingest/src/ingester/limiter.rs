//! The per-tenant limit on active series, as Pyroscope's ingester enforces it: a series is
//! active for ten minutes after its last write, and a write that would make a tenant's active
//! series exceed the limit is refused (`resource_exhausted`), so one push cannot create
//! unbounded series in the head, the WAL and every block after.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use profusion_proto::ingester::v1::WriteRequest;

use crate::error::{IngestError, Result};
use profusion_model::hash::PrehashedMap;

/// How long a series counts as active after its last write (Pyroscope's value).
pub const ACTIVE_SERIES_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// The effective per-ingester limit from the two flags, as Pyroscope derives it: the global
/// limit spread over the ingesters that hold a replica of each series, the smaller of that and
/// the local limit when both are set, 0 (no limit) when neither is.
pub fn local_series_limit(
    local: usize,
    global: usize,
    replication_factor: usize,
    ingesters: usize,
) -> usize {
    let from_global = if global == 0 || ingesters == 0 {
        0
    } else {
        let replicas = replication_factor.clamp(1, ingesters);
        (global.saturating_mul(replicas) / ingesters).max(1)
    };
    match (local, from_global) {
        (0, g) => g,
        (l, 0) => l,
        (l, g) => l.min(g),
    }
}

/// Active series per tenant, with the time each was last written.
#[derive(Debug, Default)]
pub(crate) struct SeriesLimiter {
    limit: usize,
    active: Mutex<HashMap<String, PrehashedMap<u64, Instant>>>,
}

impl SeriesLimiter {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit,
            active: Mutex::default(),
        }
    }

    /// Admits a write whose new series fit the tenant's limit and marks all of its series
    /// active; refuses the whole write otherwise, so a push is stored entirely or not at all.
    pub(crate) fn admit(&self, request: &WriteRequest) -> Result<()> {
        let now = Instant::now();
        let mut active = self.active.lock().expect("series limiter lock");
        let series = active.entry(request.tenant.clone()).or_default();
        if self.limit > 0 {
            let mut new: PrehashedMap<u64, ()> = PrehashedMap::default();
            for p in &request.profiles {
                if !series.contains_key(&p.fingerprint) {
                    new.insert(p.fingerprint, ());
                }
            }
            if series.len() + new.len() > self.limit {
                return Err(IngestError::exhausted(format!(
                    "Maximum active series limit exceeded ({}/{}), reduce the number of active \
                     streams (reduce labels or reduce label values), or contact your \
                     administrator to see if the limit can be increased \
                     (--ingester.max-global-series-per-tenant, --ingester.max-local-series-per-tenant); \
                     this push would add {} series",
                    series.len(),
                    self.limit,
                    new.len()
                )));
            }
        }
        for p in &request.profiles {
            series.insert(p.fingerprint, now);
        }
        Ok(())
    }

    /// Marks series active without checking the limit (WAL replay: they were admitted).
    pub(crate) fn restore(&self, tenant: &str, fingerprints: impl Iterator<Item = u64>) {
        let now = Instant::now();
        let mut active = self.active.lock().expect("series limiter lock");
        let series = active.entry(tenant.to_owned()).or_default();
        for fp in fingerprints {
            series.insert(fp, now);
        }
    }

    /// Forgets series not written for [`ACTIVE_SERIES_TIMEOUT`]; returns the active count per
    /// tenant.
    pub(crate) fn expire(&self) -> Vec<(String, usize)> {
        let now = Instant::now();
        let mut active = self.active.lock().expect("series limiter lock");
        active.retain(|_, series| {
            series.retain(|_, last| now.duration_since(*last) < ACTIVE_SERIES_TIMEOUT);
            !series.is_empty()
        });
        active.iter().map(|(t, s)| (t.clone(), s.len())).collect()
    }
}

#[cfg(test)]
mod tests {
    use profusion_proto::ingester::v1::SeriesProfile;

    use super::*;

    fn write(tenant: &str, fingerprints: &[u64]) -> WriteRequest {
        WriteRequest {
            tenant: tenant.into(),
            profiles: fingerprints
                .iter()
                .map(|&fingerprint| SeriesProfile {
                    fingerprint,
                    ..SeriesProfile::default()
                })
                .collect(),
            ..WriteRequest::default()
        }
    }

    #[test]
    fn limits_combine_as_pyroscope_combines_them() {
        assert_eq!(local_series_limit(0, 5000, 1, 1), 5000);
        assert_eq!(local_series_limit(0, 5000, 3, 6), 2500);
        assert_eq!(local_series_limit(100, 5000, 1, 1), 100);
        assert_eq!(local_series_limit(100, 0, 1, 1), 100);
        assert_eq!(local_series_limit(0, 0, 1, 1), 0);
        // More replicas than ingesters: each ingester holds every series once.
        assert_eq!(local_series_limit(0, 5000, 3, 1), 5000);
    }

    #[test]
    fn a_write_over_the_limit_is_refused_whole_and_known_series_always_pass() {
        let limiter = SeriesLimiter::new(3);
        limiter.admit(&write("a", &[1, 2])).unwrap();
        let err = limiter.admit(&write("a", &[1, 3, 4])).unwrap_err();
        assert!(
            err.message
                .starts_with("Maximum active series limit exceeded (2/3)")
        );
        // Nothing of the refused write became active: one new series still fits.
        limiter.admit(&write("a", &[1, 2, 3])).unwrap();
        limiter.admit(&write("a", &[3, 2, 1, 1])).unwrap();
        assert!(limiter.admit(&write("a", &[5])).is_err());
        // Other tenants have their own.
        limiter.admit(&write("b", &[5, 6, 7])).unwrap();
        assert_eq!(
            {
                let mut v = limiter.expire();
                v.sort();
                v
            },
            vec![("a".to_owned(), 3), ("b".to_owned(), 3)]
        );
        assert!(
            SeriesLimiter::new(0)
                .admit(&write("c", &[1, 2, 3, 4]))
                .is_ok()
        );
    }
}
