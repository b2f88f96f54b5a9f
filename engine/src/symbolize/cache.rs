//! [`SymbolCache`]: the stacks and frames a querier process has already resolved.
//!
//! Stack hashes and frame ids are hashes of their content, so an entry never goes stale: a
//! block written later, a compaction or a deletion can add ids but never change what an id
//! means. Resolving the stacks of a merge otherwise reads the `stacks` and `frames` of every
//! block in the window, each of which stores its own copy of the symbols it uses: the same
//! few megabytes once per block, on every query, which for a long window or a small one is
//! most of the cost.
//!
//! Entries are kept per tenant scope, so two tenants never share one even if their ids
//! collided. Eviction is by generations: lookups promote an entry to the current generation;
//! when the current one holds half the capacity, the previous one is dropped. That is an LRU
//! to within a factor of two, with O(1) work per lookup.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use profusion_model::hash::PrehashedMap;

use super::exec::FrameInfo;

/// A frame as read, and whether every column a pprof answer needs was read with it (a flame
/// graph reads only the name, mapping and address).
#[derive(Debug, Clone)]
pub(super) struct CachedFrame {
    pub(super) info: Arc<FrameInfo>,
    pub(super) complete: bool,
}

/// Resolved stacks and frames, per tenant scope, up to a size in bytes.
#[derive(Debug)]
pub struct SymbolCache {
    capacity_bytes: usize,
    state: Mutex<Generations>,
}

#[derive(Debug, Default)]
struct Generations {
    current: HashMap<String, Entries>,
    previous: HashMap<String, Entries>,
    current_bytes: usize,
}

#[derive(Debug, Default)]
struct Entries {
    stacks: PrehashedMap<u64, Arc<[u64]>>,
    frames: PrehashedMap<u64, CachedFrame>,
}

/// Rough heap cost of one map entry besides its payload.
const ENTRY_BYTES: usize = 48;

fn stack_bytes(frames: &[u64]) -> usize {
    ENTRY_BYTES + frames.len() * 8
}

fn frame_bytes(f: &FrameInfo) -> usize {
    ENTRY_BYTES
        + std::mem::size_of::<FrameInfo>()
        + f.name.len()
        + f.system_name.len()
        + f.filename.len()
        + f.mapping_file.len()
        + f.build_id.len()
}

impl SymbolCache {
    /// A cache of at most about `capacity_bytes`; 0 keeps nothing.
    pub fn new(capacity_bytes: usize) -> Self {
        Self {
            capacity_bytes,
            state: Mutex::new(Generations::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        // A panic while holding the lock leaves maps that are still valid maps.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The frames of each of `hashes` the cache holds for `scope`, inserted into `out`.
    pub(super) fn stacks(
        &self,
        scope: &str,
        hashes: impl Iterator<Item = u64>,
        out: &mut PrehashedMap<u64, Arc<[u64]>>,
    ) {
        if self.capacity_bytes == 0 {
            return;
        }
        let mut state = self.lock();
        for hash in hashes {
            if let Some(frames) = state.stack(scope, hash) {
                out.insert(hash, frames);
            }
        }
    }

    /// The frames among `ids` the cache holds for `scope` (complete ones only, when
    /// `need_complete`), inserted into `out`.
    pub(super) fn frames(
        &self,
        scope: &str,
        ids: impl Iterator<Item = u64>,
        need_complete: bool,
        out: &mut PrehashedMap<u64, Arc<FrameInfo>>,
    ) {
        if self.capacity_bytes == 0 {
            return;
        }
        let mut state = self.lock();
        for id in ids {
            if let Some(frame) = state.frame(scope, id)
                && (frame.complete || !need_complete)
            {
                out.insert(id, frame.info);
            }
        }
    }

    /// Remembers stacks read from blocks.
    pub(super) fn insert_stacks<'a>(
        &self,
        scope: &str,
        stacks: impl Iterator<Item = (u64, &'a Arc<[u64]>)>,
    ) {
        if self.capacity_bytes == 0 {
            return;
        }
        let mut state = self.lock();
        for (hash, frames) in stacks {
            state.current_bytes += stack_bytes(frames);
            state
                .current
                .entry(scope.to_owned())
                .or_default()
                .stacks
                .insert(hash, Arc::clone(frames));
        }
        state.rotate(self.capacity_bytes);
    }

    /// Remembers frames read from blocks.
    pub(super) fn insert_frames<'a>(
        &self,
        scope: &str,
        frames: impl Iterator<Item = &'a Arc<FrameInfo>>,
        complete: bool,
    ) {
        if self.capacity_bytes == 0 {
            return;
        }
        let mut state = self.lock();
        for info in frames {
            state.current_bytes += frame_bytes(info);
            state
                .current
                .entry(scope.to_owned())
                .or_default()
                .frames
                .insert(
                    info.id,
                    CachedFrame {
                        info: Arc::clone(info),
                        complete,
                    },
                );
        }
        state.rotate(self.capacity_bytes);
    }
}

impl Generations {
    fn stack(&mut self, scope: &str, hash: u64) -> Option<Arc<[u64]>> {
        if let Some(frames) = self.current.get(scope).and_then(|e| e.stacks.get(&hash)) {
            return Some(Arc::clone(frames));
        }
        let frames = self.previous.get_mut(scope)?.stacks.remove(&hash)?;
        self.current_bytes += stack_bytes(&frames);
        self.current
            .entry(scope.to_owned())
            .or_default()
            .stacks
            .insert(hash, Arc::clone(&frames));
        Some(frames)
    }

    fn frame(&mut self, scope: &str, id: u64) -> Option<CachedFrame> {
        if let Some(frame) = self.current.get(scope).and_then(|e| e.frames.get(&id)) {
            return Some(frame.clone());
        }
        let frame = self.previous.get_mut(scope)?.frames.remove(&id)?;
        self.current_bytes += frame_bytes(&frame.info);
        self.current
            .entry(scope.to_owned())
            .or_default()
            .frames
            .insert(id, frame.clone());
        Some(frame)
    }

    /// Starts a new generation once the current one holds half the capacity.
    fn rotate(&mut self, capacity_bytes: usize) {
        if self.current_bytes >= capacity_bytes / 2 {
            self.previous = std::mem::take(&mut self.current);
            self.current_bytes = 0;
        }
    }
}

/// The symbol cache as one query sees it, a session extension: the process's cache and the
/// query's tenant scope.
#[derive(Debug)]
pub struct SymbolScope {
    pub cache: Arc<SymbolCache>,
    pub scope: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(n: u64) -> Arc<[u64]> {
        Arc::from(vec![n; 4])
    }

    fn cached(cache: &SymbolCache, scope: &str, hashes: &[u64]) -> Vec<u64> {
        let mut out = PrehashedMap::default();
        cache.stacks(scope, hashes.iter().copied(), &mut out);
        let mut found: Vec<u64> = out.into_keys().collect();
        found.sort_unstable();
        found
    }

    #[test]
    fn scopes_never_share_entries() {
        let cache = SymbolCache::new(1 << 20);
        let s = stack(7);
        cache.insert_stacks("a", [(7, &s)].into_iter());
        assert_eq!(cached(&cache, "a", &[7, 8]), [7]);
        assert_eq!(cached(&cache, "b", &[7]), Vec::<u64>::new());
    }

    #[test]
    fn frames_read_for_a_tree_do_not_serve_a_pprof() {
        let cache = SymbolCache::new(1 << 20);
        let frame = Arc::new(FrameInfo {
            id: 3,
            name: "main".into(),
            ..FrameInfo::default()
        });
        cache.insert_frames("a", [&frame].into_iter(), false);
        let mut out = PrehashedMap::default();
        cache.frames("a", [3].into_iter(), true, &mut out);
        assert!(out.is_empty());
        cache.frames("a", [3].into_iter(), false, &mut out);
        assert_eq!(out[&3].name, "main");
    }

    #[test]
    fn the_cache_stays_within_its_capacity_and_keeps_what_is_used() {
        // Each stack costs 48 + 32 bytes: 100 fit in the capacity, 50 in a generation.
        let cache = SymbolCache::new(8_000);
        let hot = stack(0);
        cache.insert_stacks("a", [(0, &hot)].into_iter());
        for n in 1..1_000u64 {
            let s = stack(n);
            cache.insert_stacks("a", [(n, &s)].into_iter());
            // Looked up all along, the hot stack survives every rotation.
            assert_eq!(cached(&cache, "a", &[0]), [0], "after {n} inserts");
        }
        let held = cached(&cache, "a", &(0..1_000).collect::<Vec<_>>());
        assert!(held.len() <= 101, "{} stacks held", held.len());
        assert!(held.contains(&999) && !held.contains(&1));
        assert!(cached(&SymbolCache::new(0), "a", &[0]).is_empty());
    }
}
