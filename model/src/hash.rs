//! Map keys that already are uniform 64-bit hashes (stack hashes, frame ids, fingerprints) need
//! no second hash: [`PrehashedMap`] uses them as they are.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Passes 64-bit keys through; combines several (tuple keys) by rotate-and-xor.
#[derive(Debug, Default, Clone, Copy)]
pub struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used by u64 keys; kept correct for any other key type.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
        self.0 = self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = self.0.rotate_left(29) ^ v;
    }
}

/// A hash map keyed by values that are already hashes.
pub type PrehashedMap<K, V> = HashMap<K, V, BuildHasherDefault<Prehashed>>;
