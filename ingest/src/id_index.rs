//! Positions of pprof table entries by id, for resolving references in one pass.

use std::collections::HashMap;

/// Position of each pprof id (location, function, mapping) in its table: a direct table when
/// ids are dense, as encoders make them, a map otherwise.
#[derive(Debug)]
pub(crate) enum IdIndex {
    /// `slots[id] = position + 1`; 0 means absent.
    Dense(Vec<u32>),
    Sparse(HashMap<u64, usize>),
}

/// Two entries of one pprof table with the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DuplicateId {
    pub(crate) id: u64,
    /// Positions of the first entry with the id and of the repeat.
    pub(crate) first: usize,
    pub(crate) repeat: usize,
}

impl IdIndex {
    /// Indexes `ids` by position; a repeated id is an error, as a reference to it would be
    /// ambiguous.
    pub(crate) fn build(
        ids: impl ExactSizeIterator<Item = u64> + Clone,
    ) -> Result<Self, DuplicateId> {
        let len = ids.len();
        let max = ids.clone().max().unwrap_or(0);
        if max <= (2 * len as u64 + 64) && len < u32::MAX as usize {
            let mut slots = vec![0u32; max as usize + 1];
            for (i, id) in ids.enumerate() {
                let slot = &mut slots[id as usize];
                if *slot != 0 {
                    return Err(DuplicateId {
                        id,
                        first: *slot as usize - 1,
                        repeat: i,
                    });
                }
                *slot = i as u32 + 1;
            }
            Ok(Self::Dense(slots))
        } else {
            let mut map = HashMap::with_capacity(len);
            for (i, id) in ids.enumerate() {
                if let Some(first) = map.insert(id, i) {
                    return Err(DuplicateId {
                        id,
                        first,
                        repeat: i,
                    });
                }
            }
            Ok(Self::Sparse(map))
        }
    }

    pub(crate) fn get(&self, id: u64) -> Option<usize> {
        match self {
            Self::Dense(slots) => usize::try_from(id)
                .ok()
                .and_then(|i| slots.get(i))
                .filter(|s| **s != 0)
                .map(|s| *s as usize - 1),
            Self::Sparse(map) => map.get(&id).copied(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_and_sparse_indexes_agree() {
        let dense = IdIndex::build([3u64, 1, 2].into_iter()).unwrap();
        let sparse = IdIndex::build([3u64, 1, 1 << 40].into_iter()).unwrap();
        assert!(matches!(dense, IdIndex::Dense(_)) && matches!(sparse, IdIndex::Sparse(_)));
        assert_eq!(
            (dense.get(3), dense.get(1), dense.get(0), dense.get(9)),
            (Some(0), Some(1), None, None)
        );
        assert_eq!((sparse.get(1 << 40), sparse.get(2)), (Some(2), None));
    }

    #[test]
    fn repeated_ids_are_refused_in_both_layouts() {
        for ids in [vec![1u64, 2, 1], vec![1 << 40, 7, 1 << 40]] {
            let dup = IdIndex::build(ids.clone().into_iter()).unwrap_err();
            assert_eq!((dup.id, dup.first, dup.repeat), (ids[0], 0, 2));
        }
    }
}
