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

use crate::frame_text::FrameText;

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

    /// Keeps `batches` as the query snapshot of the head's current profiles; returns the
    /// snapshot's bytes and the replaced one's, which the generation counts as head memory.
    pub(crate) fn set_snapshot(
        &mut self,
        batches: Arc<profusion_model::block::BlockBatches>,
    ) -> (usize, usize) {
        let replaced = self.snapshot.as_ref().map_or(0, |(_, b)| b.memory_bytes());
        let held = batches.memory_bytes();
        self.snapshot = Some((self.profiles.len(), batches));
        (held, replaced)
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
    /// Heap bytes owned by the entries (label strings, sample vectors, frame lists, frame
    /// strings), as allocated: capacities, not lengths.
    entry_bytes: usize,
    /// Memory held, in bytes: [`Self::entry_bytes`] plus the tables and the profile vector at
    /// their allocated capacity. `--ingester.max-head-bytes` bounds this, so it counts what the
    /// allocator hands out rather than what the data would take packed; `head_memory` (a
    /// test with a counting allocator) keeps the two close.
    pub bytes: usize,
}

impl HeadData {
    /// Adds a write; returns how many bytes the head grew by.
    pub fn append(&mut self, req: WriteRequest) -> usize {
        let before = self.bytes;
        for mut p in req.profiles {
            let labels = std::mem::take(&mut p.labels);
            self.series.entry(p.fingerprint).or_insert_with(|| {
                self.entry_bytes += vec_bytes(&labels)
                    + labels
                        .iter()
                        .map(|l| l.name.capacity() + l.value.capacity())
                        .sum::<usize>();
                labels
            });
            self.num_samples += p.samples.len();
            // Decoders grow sample vectors by doubling; the head keeps them for an hour.
            p.samples.shrink_to_fit();
            self.entry_bytes += p.profile_id.capacity() + vec_bytes(&p.samples);
            self.profiles.push(p);
        }
        for s in &req.stacks {
            self.stacks.entry(s.hash).or_insert_with(|| {
                // References were checked against `frames` before the WAL append.
                let mut ids = Vec::with_capacity(s.frame_refs.len());
                ids.extend(
                    s.frame_refs
                        .iter()
                        .filter_map(|&r| req.frames.get(r as usize).map(|f| f.id)),
                );
                self.entry_bytes += vec_bytes(&ids);
                ids
            });
        }
        for f in req.frames {
            self.frames.entry(f.id).or_insert_with(|| {
                self.entry_bytes += f.function_name.capacity()
                    + f.system_name.capacity()
                    + f.filename.capacity()
                    + f.mapping_file.capacity()
                    + f.build_id.capacity();
                f
            });
        }
        self.bytes = self.entry_bytes
            + table_bytes(&self.series)
            + table_bytes(&self.stacks)
            + table_bytes(&self.frames)
            + vec_bytes(&self.profiles);
        self.bytes - before
    }

    /// Empties what `req` would add in vain: the labels of series, the strings of frames and the
    /// frame lists of stacks this head holds (a frame keeps its id, so stack references into
    /// the request's frames stay valid). Most of a push's symbols repeat the service's previous
    /// push. The frames this head lacks get the strings they left in `text`.
    pub(crate) fn trim_known(&self, req: &mut WriteRequest, text: &FrameText) {
        for p in &mut req.profiles {
            if self.series.contains_key(&p.fingerprint) {
                p.labels = Vec::new();
            }
        }
        for (i, f) in req.frames.iter_mut().enumerate() {
            if self.frames.contains_key(&f.id) {
                *f = Frame {
                    id: f.id,
                    ..Frame::default()
                };
            } else {
                text.fill(i, f);
            }
        }
        for s in &mut req.stacks {
            if self.stacks.contains_key(&s.hash) {
                s.frame_refs = Vec::new();
            }
        }
    }
}

/// Bytes a vector has allocated for its elements.
fn vec_bytes<T>(v: &Vec<T>) -> usize {
    v.capacity() * std::mem::size_of::<T>()
}

/// Bytes a hash table has allocated: std's tables hold `capacity` entries at a load of at most
/// 7/8 in a power-of-two number of buckets, each an entry and one control byte.
fn table_bytes<K, V, S>(map: &std::collections::HashMap<K, V, S>) -> usize {
    if map.capacity() == 0 {
        return 0;
    }
    let buckets = (map.capacity() * 8 / 7).next_power_of_two();
    buckets * (std::mem::size_of::<(K, V)>() + 1)
}

/// The heads fed by one WAL segment.
#[derive(Debug)]
pub struct Generation {
    pub segment: u64,
    /// Creation time of the WAL segment; blocks from it carry it in their id.
    pub created_millis: i64,
    pub opened: Instant,
    pub tenants: HashMap<String, TenantHead>,
    /// The tenants' data and query snapshots, in bytes.
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
