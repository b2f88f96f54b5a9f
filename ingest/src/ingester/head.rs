//! In-memory head data: what the ingester holds between a WAL append and a block flush.
//!
//! Heads are kept per WAL segment ("generation") and per tenant, so a sealed segment's data can
//! be flushed, registered and dropped as one unit while new writes go to the next generation.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use profusion_proto::ingester::v1::{Frame, SeriesProfile, WriteRequest};
use profusion_proto::types::v1::LabelPair;

use profusion_model::hash::PrehashedMap;

/// One tenant's data in one generation. The data is behind an `Arc` so that a flush can
/// write a sealed generation's block without holding the head's lock: appends go only to the
/// open generation, whose data nothing else holds, so they change it in place.
#[derive(Debug, Default)]
pub struct TenantHead {
    pub(crate) data: Arc<HeadData>,
    /// The block batches of the last query snapshot and the profile count they cover: queries
    /// reuse them until an append changes the head, so sealed generations are sorted once.
    pub(crate) snapshot: Option<(usize, Arc<profusion_model::block::BlockBatches>)>,
}

impl std::ops::Deref for TenantHead {
    type Target = HeadData;

    fn deref(&self) -> &HeadData {
        &self.data
    }
}

impl TenantHead {
    pub(crate) fn append(&mut self, req: WriteRequest) -> usize {
        // Shared only while a flush of this (sealed) generation runs, which takes no appends;
        // were it ever shared here, the append would go to a copy, never lost.
        Arc::make_mut(&mut self.data).append(req)
    }
}

/// What a tenant's head holds.
#[derive(Debug, Default, Clone)]
pub struct HeadData {
    /// Series labels by fingerprint.
    pub series: PrehashedMap<u64, Vec<LabelPair>>,
    /// Profiles in arrival order; their `labels` are moved into `series`.
    pub profiles: Vec<SeriesProfile>,
    /// Root-first frame ids by stack hash.
    pub stacks: PrehashedMap<u64, Vec<u64>>,
    pub frames: PrehashedMap<u64, Frame>,
    pub num_samples: usize,
    /// Approximate memory held, in bytes.
    pub bytes: usize,
}

impl HeadData {
    fn append(&mut self, req: WriteRequest) -> usize {
        let before = self.bytes;
        for mut p in req.profiles {
            let labels = std::mem::take(&mut p.labels);
            self.series.entry(p.fingerprint).or_insert_with(|| {
                self.bytes += labels
                    .iter()
                    .map(|l| l.name.len() + l.value.len() + 48)
                    .sum::<usize>();
                labels
            });
            self.num_samples += p.samples.len();
            self.bytes += 96 + p.profile_id.len() + p.samples.len() * 24;
            self.profiles.push(p);
        }
        for s in &req.stacks {
            self.stacks.entry(s.hash).or_insert_with(|| {
                self.bytes += 48 + s.frame_refs.len() * 8;
                // References were checked against `frames` before the WAL append.
                s.frame_refs
                    .iter()
                    .filter_map(|&r| req.frames.get(r as usize).map(|f| f.id))
                    .collect()
            });
        }
        for f in req.frames {
            self.frames.entry(f.id).or_insert_with(|| {
                self.bytes += 120
                    + f.function_name.len()
                    + f.system_name.len()
                    + f.filename.len()
                    + f.mapping_file.len()
                    + f.build_id.len();
                f
            });
        }
        self.bytes - before
    }
}

/// The heads fed by one WAL segment.
#[derive(Debug)]
pub struct Generation {
    pub segment: u64,
    /// Creation time of the WAL segment; blocks from it carry it in their id.
    pub created_millis: i64,
    pub opened: Instant,
    pub tenants: HashMap<String, TenantHead>,
    pub bytes: usize,
}

impl Generation {
    pub(crate) fn new(segment: u64, created_millis: i64) -> Self {
        Self {
            segment,
            created_millis,
            opened: Instant::now(),
            tenants: HashMap::new(),
            bytes: 0,
        }
    }

    pub(crate) fn append(&mut self, req: WriteRequest) {
        let tenant = req.tenant.clone();
        self.bytes += self.tenants.entry(tenant).or_default().append(req);
    }
}

/// All generations, oldest first; the last one takes new writes.
#[derive(Debug, Default)]
pub struct Head {
    pub generations: BTreeMap<u64, Generation>,
}

impl Head {
    pub(crate) fn generation(&mut self, segment: u64, created_millis: i64) -> &mut Generation {
        self.generations
            .entry(segment)
            .or_insert_with(|| Generation::new(segment, created_millis))
    }

    pub fn bytes(&self) -> usize {
        self.generations.values().map(|g| g.bytes).sum()
    }

    pub fn num_profiles(&self) -> usize {
        self.generations
            .values()
            .flat_map(|g| g.tenants.values())
            .map(|t| t.profiles.len())
            .sum()
    }
}
