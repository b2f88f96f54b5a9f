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
//! collided; eviction is [`Generations`]'.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::{Arc, Mutex, PoisonError};

use profusion_model::hash::{Prehashed, PrehashedMap};

use super::exec::FrameInfo;
use crate::generations::Generations;

/// A frame as read, and whether every column a pprof answer needs was read with it (a flame
/// graph reads only the name, mapping and address).
#[derive(Debug, Clone)]
pub(super) struct CachedFrame {
    pub(super) info: Arc<FrameInfo>,
    pub(super) complete: bool,
}

/// (tenant scope, stack hash or frame id).
type Key = (u64, u64);
type Hasher = BuildHasherDefault<Prehashed>;

/// Resolved stacks and frames, per tenant scope, up to a size in bytes (half for each).
#[derive(Debug)]
pub struct SymbolCache {
    stacks: Generations<Key, Arc<[u64]>, Hasher>,
    frames: Generations<Key, CachedFrame, Hasher>,
    /// A number per tenant scope, for the keys.
    scopes: Mutex<HashMap<String, u64>>,
}

/// Rough heap cost of one map entry besides its payload.
const ENTRY_BYTES: usize = 48;

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
            stacks: Generations::new(capacity_bytes / 2),
            frames: Generations::new(capacity_bytes / 2),
            scopes: Mutex::default(),
        }
    }

    fn scope(&self, scope: &str) -> u64 {
        let mut scopes = self.scopes.lock().unwrap_or_else(PoisonError::into_inner);
        let next = scopes.len() as u64;
        *scopes.entry(scope.to_owned()).or_insert(next)
    }

    /// The frames of each of `hashes` the cache holds for `scope`, inserted into `out`.
    pub(super) fn stacks(
        &self,
        scope: &str,
        hashes: impl Iterator<Item = u64>,
        out: &mut PrehashedMap<u64, Arc<[u64]>>,
    ) {
        if !self.stacks.enabled() {
            return;
        }
        let scope = self.scope(scope);
        let mut cache = self.stacks.lock();
        for hash in hashes {
            if let Some(frames) = cache.get((scope, hash)) {
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
        if !self.frames.enabled() {
            return;
        }
        let scope = self.scope(scope);
        let mut cache = self.frames.lock();
        for id in ids {
            if let Some(frame) = cache.get((scope, id))
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
        if !self.stacks.enabled() {
            return;
        }
        let scope = self.scope(scope);
        let mut cache = self.stacks.lock();
        for (hash, frames) in stacks {
            cache.insert(
                (scope, hash),
                Arc::clone(frames),
                ENTRY_BYTES + frames.len() * 8,
            );
        }
    }

    /// Remembers frames read from blocks.
    pub(super) fn insert_frames<'a>(
        &self,
        scope: &str,
        frames: impl Iterator<Item = &'a Arc<FrameInfo>>,
        complete: bool,
    ) {
        if !self.frames.enabled() {
            return;
        }
        let scope = self.scope(scope);
        let mut cache = self.frames.lock();
        for info in frames {
            let frame = CachedFrame {
                info: Arc::clone(info),
                complete,
            };
            cache.insert((scope, info.id), frame, frame_bytes(info));
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
    fn a_cache_of_no_bytes_keeps_nothing() {
        let cache = SymbolCache::new(0);
        let s = stack(1);
        cache.insert_stacks("a", [(1, &s)].into_iter());
        assert!(cached(&cache, "a", &[1]).is_empty());
    }
}
