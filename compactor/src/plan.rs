//! Which blocks to merge: the compaction levels over fixed, epoch-aligned time windows.
//!
//! `--compactor.block-ranges` lists window sizes, smallest first, each a multiple of the one
//! before (Pyroscope's `1h,2h,8h`). Level 0 is what ingesters flush: one WAL segment's data,
//! whatever times it holds. A level-0 job takes the ingester blocks whose earliest profile falls
//! in one smallest window (once they are older than the first-level wait, so replicas and late
//! flushes of that window arrive first) and splits their rows into one level-1 block per
//! smallest window. From then on every block lies inside one window of the smallest range, so
//! for each range in turn, the blocks of levels 1 to `i + 1` inside one window of range `i` are
//! merged into one block of level `i + 1` once the window has ended and it holds more than one.
//! A block is in at most one job per plan.
//!
//! Deletions: a block no job takes that may hold profiles a tombstone newer than the block
//! deletes is rewritten alone, at its own level and window, without them.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use profusion_model::block::BlockMeta;
use profusion_model::tombstone::Tombstone;

/// One merge: its sources become blocks of `level`, one per window of `window_nanos` their rows
/// fall in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub tenant: String,
    pub level: u32,
    pub window_nanos: i64,
    /// Sorted by id, which also fixes which replica of a duplicated profile is kept.
    pub sources: Vec<BlockMeta>,
}

/// What the planner needs to know besides the blocks.
#[derive(Debug, Clone)]
pub struct PlanRules {
    /// Window sizes, smallest first, each a multiple of the one before.
    pub block_ranges: Vec<Duration>,
    /// Ingester blocks younger than this (by registration) wait for the next plan.
    pub first_level_wait: Duration,
}

/// The start of the window of size `size` holding `t` (epoch-aligned).
pub fn window_start(t: i64, size: i64) -> i64 {
    t.div_euclid(size) * size
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX).max(1)
}

/// The jobs for one tenant's live blocks at `now_millis`, given its tombstones.
pub fn plan(
    tenant: &str,
    blocks: &[BlockMeta],
    tombstones: &[Tombstone],
    rules: &PlanRules,
    now_millis: i64,
) -> Vec<Job> {
    let Some(&smallest) = rules.block_ranges.first() else {
        return Vec::new();
    };
    let smallest = nanos(smallest);
    let now_nanos = now_millis.saturating_mul(1_000_000);
    let wait_millis = i64::try_from(rules.first_level_wait.as_millis()).unwrap_or(i64::MAX);
    let mut jobs = Vec::new();
    let mut used: HashSet<String> = HashSet::new();
    let mut job = |level: u32, window_nanos: i64, mut sources: Vec<BlockMeta>| {
        sources.sort_by(|a, b| a.id.cmp(&b.id));
        jobs.push(Job {
            tenant: tenant.to_owned(),
            level,
            window_nanos,
            sources,
        });
    };

    let mut first: BTreeMap<i64, Vec<BlockMeta>> = BTreeMap::new();
    for b in blocks.iter().filter(|b| b.compaction_level == 0) {
        if b.created_at_millis.saturating_add(wait_millis) <= now_millis {
            first
                .entry(window_start(b.min_time_nanos, smallest))
                .or_default()
                .push(b.clone());
            used.insert(b.id.clone());
        }
    }
    for sources in first.into_values() {
        job(1, smallest, sources);
    }

    for (i, &range) in rules.block_ranges.iter().enumerate() {
        let (range, level) = (nanos(range), i as u32 + 1);
        let mut windows: BTreeMap<i64, Vec<BlockMeta>> = BTreeMap::new();
        for b in blocks {
            let start = window_start(b.min_time_nanos, range);
            if (1..=level).contains(&b.compaction_level)
                && !used.contains(b.id.as_str())
                && window_start(b.max_time_nanos, range) == start
                && start.saturating_add(range) <= now_nanos
            {
                windows.entry(start).or_default().push(b.clone());
            }
        }
        for sources in windows.into_values().filter(|s| s.len() > 1) {
            used.extend(sources.iter().map(|s| s.id.clone()));
            job(level, range, sources);
        }
    }

    for b in blocks {
        let deletes = tombstones.iter().any(|t| {
            t.seq > b.tombstone_seq && t.touches(b.min_time_nanos, b.max_time_nanos, &b.services)
        });
        if b.compaction_level > 0 && deletes && !used.contains(&b.id) {
            let range = rules.block_ranges
                [(b.compaction_level as usize - 1).min(rules.block_ranges.len() - 1)];
            job(b.compaction_level, nanos(range), vec![b.clone()]);
        }
    }
    jobs
}

/// Checks `--compactor.block-ranges`: not empty, increasing, each a multiple of the one before.
pub fn check_ranges(ranges: &[Duration]) -> Result<(), String> {
    if ranges.is_empty() {
        return Err("at least one block range is needed".into());
    }
    for pair in ranges.windows(2) {
        let (a, b) = (pair[0].as_nanos(), pair[1].as_nanos());
        if a == 0 || b <= a || b % a != 0 {
            return Err(format!(
                "each block range must be a multiple of the one before it, and larger: \
                 {:?} then {:?}",
                pair[0], pair[1]
            ));
        }
    }
    if ranges[0].is_zero() {
        return Err("block ranges must be longer than zero".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000_000_000;

    fn block(id: &str, level: u32, min: i64, max: i64, created_millis: i64) -> BlockMeta {
        BlockMeta {
            tenant: "t".into(),
            id: id.into(),
            min_time_nanos: min,
            max_time_nanos: max,
            num_series: 1,
            num_profiles: 1,
            num_samples: 1,
            size_bytes: 1,
            services: vec![],
            profile_types: vec![],
            source: "x".into(),
            wal_segment: 0,
            compaction_level: level,
            created_at_millis: created_millis,
            lineage: Default::default(),
            tombstone_seq: 0,
        }
    }

    fn rules() -> PlanRules {
        PlanRules {
            block_ranges: [1, 2, 8].map(|h| Duration::from_secs(h * 3600)).to_vec(),
            first_level_wait: Duration::from_secs(60),
        }
    }

    fn summary(jobs: &[Job]) -> Vec<(u32, i64, Vec<&str>)> {
        jobs.iter()
            .map(|j| {
                (
                    j.level,
                    j.window_nanos / H,
                    j.sources.iter().map(|b| b.id.as_str()).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn levels_follow_the_ranges_and_windows() {
        let now = 100 * H / 1_000_000;
        let blocks = vec![
            // Two ingester blocks starting in hour 10 (one spilling into hour 11), one in hour
            // 12, and one too young to take.
            block("i1", 0, 10 * H + 5, 11 * H + 7, 0),
            block("i2", 0, 10 * H + 9, 10 * H + 20, 0),
            block("i3", 0, 12 * H, 12 * H + 1, 0),
            block("young", 0, 12 * H, 12 * H + 1, now - 1),
            // Hours 2 and 3 at level 1: one 2 h window, merged to level 2.
            block("a", 1, 2 * H, 3 * H - 1, 0),
            block("b", 1, 3 * H, 4 * H - 1, 0),
            // Level 1 and level 2 inside the 8 h window [16 h, 24 h).
            block("c", 2, 16 * H, 18 * H - 1, 0),
            block("d", 1, 20 * H, 21 * H - 1, 0),
            // Alone in its windows: nothing to do.
            block("e", 3, 24 * H, 32 * H - 1, 0),
            // A window that has not ended.
            block("f", 1, 100 * H, 100 * H + 1, 0),
            block("g", 1, 100 * H + 5, 100 * H + 9, 0),
        ];
        assert_eq!(
            summary(&plan("t", &blocks, &[], &rules(), now)),
            vec![
                (1, 1, vec!["i1", "i2"]),
                (1, 1, vec!["i3"]),
                (2, 2, vec!["a", "b"]),
                (3, 8, vec!["c", "d"]),
            ]
        );
    }

    #[test]
    fn blocks_a_newer_tombstone_touches_are_rewritten_alone() {
        let now = 100 * H / 1_000_000;
        let mut done = block("done", 2, 2 * H, 3 * H, 0);
        done.tombstone_seq = 5;
        let blocks = vec![
            block("old", 2, 2 * H, 3 * H, 0),
            done,
            block("elsewhere", 3, 40 * H, 41 * H, 0),
            block("fresh", 0, 2 * H, 2 * H + 1, now),
        ]
        .into_iter()
        .map(|mut b| {
            b.services = vec!["api".into()];
            b
        })
        .collect::<Vec<_>>();
        let tombstone = Tombstone {
            tenant: "t".into(),
            seq: 5,
            range: range(0, 10 * H),
            selectors: vec![],
            fingerprints: vec![1],
            services: vec!["api".into()],
            created_at_millis: 0,
        };
        // "old" predates the tombstone: rewritten alone at its level. "done" applied it,
        // "elsewhere" is outside its range, and the young ingester block waits for its turn.
        let mut rules = rules();
        rules.block_ranges.truncate(2);
        assert_eq!(
            summary(&plan(
                "t",
                &blocks[..1],
                std::slice::from_ref(&tombstone),
                &rules,
                now
            )),
            vec![(2, 2, vec!["old"])]
        );
        assert!(
            plan(
                "t",
                &blocks[1..],
                std::slice::from_ref(&tombstone),
                &rules,
                now
            )
            .is_empty()
        );
    }

    fn range(start: i64, end: i64) -> profusion_model::time::TimeRange {
        profusion_model::time::TimeRange { start, end }
    }

    #[test]
    fn ranges_are_checked() {
        let h = |n: u64| Duration::from_secs(n * 3600);
        assert!(check_ranges(&[h(1), h(2), h(8)]).is_ok());
        assert!(check_ranges(&[h(2), h(3)]).is_err());
        assert!(check_ranges(&[h(2), h(1)]).is_err());
        assert!(check_ranges(&[]).is_err());
        assert!(check_ranges(&[Duration::ZERO]).is_err());
    }
}
