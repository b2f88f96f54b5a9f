//! [`Generations`]: a cache bounded in bytes, for values that never go stale (the symbol cache,
//! the block aggregate cache).
//!
//! Eviction is by generations: a hit in the previous generation moves the entry to the
//! current one, and when the current one holds half the capacity it becomes the previous one
//! and the old previous one is dropped. That is an LRU to within a factor of two, with O(1)
//! work per lookup and no per-entry bookkeeping.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// A cache of at most about `capacity` bytes (as its callers count them).
#[derive(Debug)]
pub(crate) struct Generations<K, V, S = std::collections::hash_map::RandomState> {
    capacity: usize,
    state: Mutex<State<K, V, S>>,
}

#[derive(Debug)]
struct State<K, V, S> {
    current: HashMap<K, (V, usize), S>,
    previous: HashMap<K, (V, usize), S>,
    current_bytes: usize,
}

/// The cache while locked, for many lookups or inserts under one lock.
pub(crate) struct Locked<'a, K, V, S> {
    capacity: usize,
    state: MutexGuard<'a, State<K, V, S>>,
}

impl<K: Hash + Eq, V: Clone, S: BuildHasher + Default> Generations<K, V, S> {
    /// A cache of about `capacity` bytes; 0 keeps nothing.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            state: Mutex::new(State {
                current: HashMap::default(),
                previous: HashMap::default(),
                current_bytes: 0,
            }),
        }
    }

    /// Whether the cache keeps anything at all.
    pub(crate) fn enabled(&self) -> bool {
        self.capacity > 0
    }

    pub(crate) fn lock(&self) -> Locked<'_, K, V, S> {
        Locked {
            capacity: self.capacity,
            // A panic while holding the lock leaves maps that are still valid maps.
            state: self.state.lock().unwrap_or_else(PoisonError::into_inner),
        }
    }
}

impl<K: Hash + Eq, V: Clone, S: BuildHasher + Default> Locked<'_, K, V, S> {
    /// The value of `key`, made current.
    pub(crate) fn get(&mut self, key: K) -> Option<V> {
        let state = &mut *self.state;
        if let Some((value, _)) = state.current.get(&key) {
            return Some(value.clone());
        }
        let (value, bytes) = state.previous.remove(&key)?;
        state.current_bytes += bytes;
        state.current.insert(key, (value.clone(), bytes));
        self.rotate();
        Some(value)
    }

    /// Keeps `value` under `key`, counted as `bytes`.
    pub(crate) fn insert(&mut self, key: K, value: V, bytes: usize) {
        if self.capacity == 0 || bytes > self.capacity / 2 {
            return;
        }
        let state = &mut *self.state;
        state.current_bytes += bytes;
        if let Some((_, old)) = state.current.insert(key, (value, bytes)) {
            state.current_bytes -= old;
        }
        self.rotate();
    }

    /// Starts a new generation once the current one holds half the capacity.
    fn rotate(&mut self) {
        let state = &mut *self.state;
        if state.current_bytes >= self.capacity / 2 {
            state.previous = std::mem::take(&mut state.current);
            state.current_bytes = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_within_its_capacity_and_keeps_what_is_used() {
        let cache: Generations<u64, u64> = Generations::new(1_000);
        cache.lock().insert(0, 0, 10);
        for n in 1..1_000u64 {
            let mut locked = cache.lock();
            locked.insert(n, n, 10);
            // Looked up all along, the hot entry survives every rotation.
            assert_eq!(locked.get(0), Some(0), "after {n} inserts");
        }
        let mut locked = cache.lock();
        let held = (0..1_000).filter(|n| locked.get(*n).is_some()).count();
        assert!(held <= 101, "{held} entries held");
        assert_eq!(locked.get(999), Some(999));
        assert_eq!(locked.get(1), None);
        let off: Generations<u64, u64> = Generations::new(0);
        off.lock().insert(1, 1, 1);
        assert_eq!(off.lock().get(1), None);
        assert!(!off.enabled());
    }
}
