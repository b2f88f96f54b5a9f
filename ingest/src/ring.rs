//! A consistent-hash ring of ingesters. Each instance owns tokens derived from its id; a series
//! goes to the owners of the first `replication_factor` distinct instances clockwise from the
//! hash of (tenant, labels).

use std::sync::Arc;

use crate::ingester::IngesterClient;

const TOKENS_PER_INSTANCE: u32 = 128;

#[derive(Debug, Clone)]
pub struct Ring {
    /// (token, index into `instances`), sorted by token.
    tokens: Vec<(u32, usize)>,
    instances: Vec<Arc<dyn IngesterClient>>,
    replication_factor: usize,
}

/// The tokens an instance owns on the ring: derived from its id, so an ingester that restarts
/// (or registers again after being forgotten) owns the same series as before.
pub fn instance_tokens(instance_id: &str) -> Vec<u32> {
    let mut tokens: Vec<u32> = (0..TOKENS_PER_INSTANCE)
        .map(|t| {
            let mut h = xxhash_rust::xxh3::Xxh3::new();
            h.update(instance_id.as_bytes());
            h.update(&t.to_le_bytes());
            h.digest() as u32
        })
        .collect();
    tokens.sort_unstable();
    tokens
}

impl Ring {
    /// A ring of `instances`, each owning the tokens its id derives.
    pub fn new(instances: Vec<Arc<dyn IngesterClient>>, replication_factor: usize) -> Self {
        Self::with_tokens(
            instances
                .into_iter()
                .map(|i| {
                    let tokens = instance_tokens(i.instance_id());
                    (i, tokens)
                })
                .collect(),
            replication_factor,
        )
    }

    /// A ring of instances with the tokens they registered.
    pub fn with_tokens(
        instances: Vec<(Arc<dyn IngesterClient>, Vec<u32>)>,
        replication_factor: usize,
    ) -> Self {
        let mut tokens = Vec::with_capacity(instances.len() * TOKENS_PER_INSTANCE as usize);
        for (i, (_, owned)) in instances.iter().enumerate() {
            tokens.extend(owned.iter().map(|&t| (t, i)));
        }
        tokens.sort_unstable();
        let instances: Vec<_> = instances.into_iter().map(|(i, _)| i).collect();
        let replication_factor = replication_factor.clamp(1, instances.len().max(1));
        Self {
            tokens,
            instances,
            replication_factor,
        }
    }

    pub fn replication_factor(&self) -> usize {
        self.replication_factor
    }

    /// Writes needed for success: a majority of the replicas.
    pub fn quorum(&self) -> usize {
        self.replication_factor / 2 + 1
    }

    /// 32-bit FNV-1 over the tenant then the rendered labels, as Pyroscope's distributor hashes.
    pub fn token_for(tenant: &str, rendered_labels: &str) -> u32 {
        let mut h: u32 = 0x811c_9dc5;
        for b in tenant.bytes().chain(rendered_labels.bytes()) {
            h = h.wrapping_mul(0x0100_0193);
            h ^= u32::from(b);
        }
        h
    }

    /// Indexes of the replicas for `token`.
    pub fn replicas(&self, token: u32) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.replication_factor);
        if self.tokens.is_empty() {
            return out;
        }
        let start = self.tokens.partition_point(|(t, _)| *t < token);
        for k in 0..self.tokens.len() {
            let (_, idx) = self.tokens[(start + k) % self.tokens.len()];
            if !out.contains(&idx) {
                out.push(idx);
                if out.len() == self.replication_factor {
                    break;
                }
            }
        }
        out
    }

    /// Whether the ring has no instance at all: nothing can store a write.
    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }

    pub fn instance(&self, idx: usize) -> &Arc<dyn IngesterClient> {
        &self.instances[idx]
    }
}

/// The ring a distributor routes over, replaced whole when membership changes: a write takes
/// the ring as it is when the write starts and keeps it to the end.
#[derive(Debug)]
pub struct SharedRing(std::sync::RwLock<Arc<Ring>>);

impl SharedRing {
    pub fn new(ring: Ring) -> Self {
        Self(std::sync::RwLock::new(Arc::new(ring)))
    }

    /// The ring as it is now.
    pub fn load(&self) -> Arc<Ring> {
        Arc::clone(&self.0.read().expect("ring lock"))
    }

    pub fn replace(&self, ring: Ring) {
        *self.0.write().expect("ring lock") = Arc::new(ring);
    }
}
