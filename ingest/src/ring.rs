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

impl Ring {
    pub fn new(instances: Vec<Arc<dyn IngesterClient>>, replication_factor: usize) -> Self {
        let mut tokens = Vec::with_capacity(instances.len() * TOKENS_PER_INSTANCE as usize);
        for (i, inst) in instances.iter().enumerate() {
            for t in 0..TOKENS_PER_INSTANCE {
                let mut h = xxhash_rust::xxh3::Xxh3::new();
                h.update(inst.instance_id().as_bytes());
                h.update(&t.to_le_bytes());
                tokens.push((h.digest() as u32, i));
            }
        }
        tokens.sort_unstable();
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

    pub fn instance(&self, idx: usize) -> &Arc<dyn IngesterClient> {
        &self.instances[idx]
    }
}
