//! The compactor: merges each tenant's blocks into larger blocks aligned to fixed time windows
//! (see [`plan`]), keeping each profile once (see [`merge`]); retires blocks past their
//! tenant's retention; and deletes the files of retired blocks once no query can still be
//! reading them.
//!
//! Every step is recorded in the catalog before the next starts, so a crash between any two
//! leaves every answer unchanged:
//!
//! 1. **claim** the sources (two compactors never take the same block);
//! 2. read and merge them in memory;
//! 3. record the outputs as **pending** (invisible to readers, but findable if we die);
//! 4. **upload** the outputs' files, `meta.json` last;
//! 5. **swap**: one catalog transaction makes the outputs live and retires the sources;
//! 6. after `--compactor.deletion-delay`, **mark** retired blocks (and pending ones whose
//!    claim ran out) as being deleted, **delete** their files, then forget them.
//!
//! A crash before 5 leaves the sources live and the outputs pending; their claim runs out and
//! step 6 removes them. A crash after 5 leaves only cleanup to do.
//!
//! Owns: compaction planning, merging, retention and the deletion of block files. Must not
//! touch ingester heads, the WAL, or queries; it reads and writes blocks only through the
//! block format and the catalog.

mod compactor;
pub mod merge;
mod metrics;
pub mod plan;

pub use compactor::{CompactionStep, Compactor, CompactorConfig, CompactorError, CycleReport};
pub use metrics::CompactorMetrics;
