use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Per-tenant token buckets over uncompressed bytes.
#[derive(Debug, Default)]
pub struct TenantRateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl TenantRateLimiter {
    /// Takes `cost` tokens from the tenant's bucket (refilled at `rate`/s up to `burst`);
    /// false, taking nothing, when there are not enough. A zero rate means no limit.
    pub fn allow(&self, tenant: &str, cost: f64, rate: f64, burst: f64) -> bool {
        if rate <= 0.0 {
            return true;
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("rate limiter lock");
        let bucket = buckets.entry(tenant.to_owned()).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        bucket.tokens =
            (bucket.tokens + now.duration_since(bucket.last).as_secs_f64() * rate).min(burst);
        bucket.last = now;
        if bucket.tokens >= cost {
            bucket.tokens -= cost;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refuse_then_separate_tenants() {
        let l = TenantRateLimiter::default();
        assert!(l.allow("a", 600.0, 1.0, 1000.0));
        assert!(!l.allow("a", 600.0, 1.0, 1000.0));
        assert!(l.allow("b", 600.0, 1.0, 1000.0));
        assert!(l.allow("a", 1e12, 0.0, 0.0));
    }
}
