//! Counting replicas once. With a replication factor above one, each profile is stored by
//! several ingesters: in each one's head, then in each one's blocks, until the compactor merges
//! the copies. A query reads all of them, so before it aggregates it must keep exactly one copy
//! of every profile, and it should keep it where the data is, so each source can still
//! aggregate its own rows.
//!
//! The choice, made per query and tenant, as Pyroscope's queriers make it: every origin of
//! data (an ingester's head and blocks, or one compacted block) lists the keys of its
//! profiles in the query's window (the small `profiles` table), and each profile goes to the
//! first origin holding it, compacted blocks first, then ingesters by name. Each origin then
//! reads only its own profiles, as a [`ProfileKeyFilter`] over its rows: usually "all" for one
//! replica and "none but a few" for the others.
//!
//! A query whose data comes from one ingester only (monolithic mode) needs no choice and makes
//! none.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, FieldRef, Int64Type, Schema, UInt64Type};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::ColumnarValue;
use datafusion::physical_expr::PhysicalExpr;

/// The block source name of compacted blocks; every other origin is an ingester's.
const INGESTER_PREFIX: &str = "ingester-";

/// The origin of a block: its ingester for an ingester's blocks (they never hold one profile
/// twice, and its head cut already keeps them apart from its head), the block itself for a
/// compacted one (two compactions of one window, before a later one merges them, may both
/// hold copies of a profile).
pub fn block_origin(block: &profusion_model::block::BlockMeta) -> String {
    if block.source.starts_with(INGESTER_PREFIX) {
        block.source.clone()
    } else {
        format!("{}/{}", block.source, block.id)
    }
}

/// The columns that identify a profile, as the filter reads them.
pub const PROFILE_KEY_COLUMNS: [&str; 3] = ["series_fingerprint", "time_nanos", "profile_id"];

/// The key of one profile: a hash of its series, time and id.
fn key_hash(fingerprint: u64, time_nanos: i64, profile_id: &[u8]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&fingerprint.to_le_bytes());
    h.update(&time_nanos.to_le_bytes());
    h.update(profile_id);
    h.digest()
}

/// The profile keys of each row of `batch`, from its three key columns at `columns`.
pub fn key_hashes(batch: &RecordBatch, columns: [usize; 3]) -> Result<Vec<u64>> {
    let fingerprints = batch.column(columns[0]).as_primitive::<UInt64Type>();
    let times = batch.column(columns[1]).as_primitive::<Int64Type>();
    let ids = cast(batch.column(columns[2]), &DataType::Utf8)?;
    let ids = ids.as_string::<i32>();
    Ok((0..batch.num_rows())
        .map(|i| {
            key_hash(
                fingerprints.value(i),
                times.value(i),
                ids.value(i).as_bytes(),
            )
        })
        .collect())
}

/// Whether an origin's data may duplicate another origin's: it is, or holds data of, more than
/// one ingester. `origins` are block sources and head cut sources; `lineage` the ingester
/// sources compacted blocks hold data of.
pub fn needs_choice<'a>(
    origins: impl IntoIterator<Item = &'a str>,
    lineage: impl IntoIterator<Item = &'a str>,
) -> bool {
    let ingesters: HashSet<&str> = origins
        .into_iter()
        .filter(|o| o.starts_with(INGESTER_PREFIX))
        .chain(lineage)
        .collect();
    ingesters.len() > 1
}

/// Which of its rows an origin keeps.
#[derive(Debug, Clone)]
pub enum Keep {
    All,
    /// Only the profiles with these keys.
    Only(Arc<HashSet<u64>>),
    /// Every profile but these.
    AllBut(Arc<HashSet<u64>>),
}

/// The copy of each profile a query counts: which rows each origin keeps.
#[derive(Debug, Clone, Default)]
pub struct ReplicaChoice {
    keep: BTreeMap<String, Keep>,
}

impl ReplicaChoice {
    /// The choice over `origins`, each with the keys of the profiles it holds.
    pub fn choose(origins: BTreeMap<String, HashSet<u64>>) -> Self {
        // Compacted blocks first (already deduplicated, and the copy that outlives the
        // others), then ingesters by name: a fixed order, so every table of a query and
        // every rerun choose alike.
        let mut order: Vec<(&String, &HashSet<u64>)> = origins.iter().collect();
        order.sort_by_key(|(name, _)| (name.starts_with(INGESTER_PREFIX), name.as_str()));
        let mut seen: HashSet<u64> = HashSet::new();
        let mut keep = BTreeMap::new();
        for (name, keys) in order {
            let (owned, dropped): (HashSet<u64>, HashSet<u64>) =
                keys.iter().partition(|k| !seen.contains(k));
            seen.extend(owned.iter().copied());
            let choice = if dropped.is_empty() {
                Keep::All
            } else if owned.len() <= dropped.len() {
                Keep::Only(Arc::new(owned))
            } else {
                Keep::AllBut(Arc::new(dropped))
            };
            keep.insert(name.clone(), choice);
        }
        Self { keep }
    }

    /// What `origin` keeps; an origin the choice did not see (it held no profile of the
    /// window) keeps nothing it could add twice, so all of it.
    pub fn keep(&self, origin: &str) -> Keep {
        self.keep.get(origin).cloned().unwrap_or(Keep::All)
    }
}

/// A filter keeping the rows of the profiles an origin counts: `true` for a row to keep.
#[derive(Debug, Clone)]
pub struct ProfileKeyFilter {
    keep: Keep,
    /// The three key columns, in [`PROFILE_KEY_COLUMNS`] order.
    children: Vec<Arc<dyn PhysicalExpr>>,
}

impl ProfileKeyFilter {
    /// A filter over `schema`'s key columns; `None` when the origin keeps everything.
    pub fn new(keep: Keep, schema: &Schema) -> Result<Option<Self>> {
        if matches!(keep, Keep::All) {
            return Ok(None);
        }
        let children = PROFILE_KEY_COLUMNS
            .iter()
            .map(|name| {
                datafusion::physical_expr::expressions::col(name, schema)
                    .map_err(|e| DataFusionError::Internal(format!("profile key column: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(Self { keep, children }))
    }
}

impl ProfileKeyFilter {
    /// The filter's keys as bytes, for the plan codec: whether it keeps only them, then the
    /// keys.
    pub fn encode_keep(&self) -> Vec<u8> {
        let (only, keys) = match &self.keep {
            Keep::All => return vec![2],
            Keep::Only(keys) => (1u8, keys),
            Keep::AllBut(keys) => (0u8, keys),
        };
        let mut out = Vec::with_capacity(1 + keys.len() * 8);
        out.push(only);
        for k in keys.iter() {
            out.extend_from_slice(&k.to_le_bytes());
        }
        out
    }

    /// The input columns the filter reads, in [`PROFILE_KEY_COLUMNS`] order.
    pub fn column_indices(&self) -> Result<[usize; 3]> {
        let mut out = [0; 3];
        for (slot, child) in out.iter_mut().zip(&self.children) {
            let column = child
                .downcast_ref::<datafusion::physical_expr::expressions::Column>()
                .ok_or_else(|| DataFusionError::Internal("a profile key is not a column".into()))?;
            *slot = column.index();
        }
        Ok(out)
    }

    /// The filter [`Self::encode_keep`] wrote, over `children` (the three key columns).
    pub fn decode(buf: &[u8], children: &[Arc<dyn PhysicalExpr>]) -> Result<Self> {
        let Some((&kind, keys)) = buf.split_first() else {
            return Err(DataFusionError::Internal(
                "an empty profile key filter".into(),
            ));
        };
        if keys.len() % 8 != 0 || children.len() != 3 {
            return Err(DataFusionError::Internal(
                "a malformed profile key filter".into(),
            ));
        }
        let set: HashSet<u64> = keys
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        let keep = match kind {
            0 => Keep::AllBut(Arc::new(set)),
            1 => Keep::Only(Arc::new(set)),
            _ => Keep::All,
        };
        Ok(Self {
            keep,
            children: children.to_vec(),
        })
    }
}

impl fmt::Display for ProfileKeyFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.keep {
            Keep::All => write!(f, "profile_key_filter(all)"),
            Keep::Only(keys) => write!(f, "profile_key_filter(only {} profiles)", keys.len()),
            Keep::AllBut(keys) => write!(f, "profile_key_filter(all but {} profiles)", keys.len()),
        }
    }
}

impl PartialEq for ProfileKeyFilter {
    fn eq(&self, other: &Self) -> bool {
        let same_keep = match (&self.keep, &other.keep) {
            (Keep::All, Keep::All) => true,
            (Keep::Only(a), Keep::Only(b)) | (Keep::AllBut(a), Keep::AllBut(b)) => {
                Arc::ptr_eq(a, b)
            }
            _ => false,
        };
        same_keep && self.children == other.children
    }
}

impl Eq for ProfileKeyFilter {}

impl Hash for ProfileKeyFilter {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match &self.keep {
            Keep::All => 0usize.hash(state),
            Keep::Only(keys) => (1usize, Arc::as_ptr(keys) as usize).hash(state),
            Keep::AllBut(keys) => (2usize, Arc::as_ptr(keys) as usize).hash(state),
        }
        self.children.hash(state);
    }
}

impl PhysicalExpr for ProfileKeyFilter {
    fn return_field(&self, _input_schema: &Schema) -> Result<FieldRef> {
        Ok(Arc::new(datafusion::arrow::datatypes::Field::new(
            "profile_key_filter",
            DataType::Boolean,
            false,
        )))
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        let columns: Vec<Arc<dyn Array>> = self
            .children
            .iter()
            .map(|c| c.evaluate(batch)?.into_array(batch.num_rows()))
            .collect::<Result<_>>()?;
        let keys = RecordBatch::try_new(
            Arc::new(Schema::new(
                columns
                    .iter()
                    .zip(PROFILE_KEY_COLUMNS)
                    .map(|(c, n)| {
                        datafusion::arrow::datatypes::Field::new(n, c.data_type().clone(), true)
                    })
                    .collect::<Vec<_>>(),
            )),
            columns,
        )?;
        let hashes = key_hashes(&keys, [0, 1, 2])?;
        let kept: BooleanArray = hashes
            .iter()
            .map(|k| {
                Some(match &self.keep {
                    Keep::All => true,
                    Keep::Only(keys) => keys.contains(k),
                    Keep::AllBut(keys) => !keys.contains(k),
                })
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(kept)))
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        self.children.iter().collect()
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        Ok(Arc::new(Self {
            keep: self.keep.clone(),
            children,
        }))
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(k: &[u64]) -> HashSet<u64> {
        k.iter().copied().collect()
    }

    fn kept(choice: &ReplicaChoice, origin: &str, all: &[u64]) -> Vec<u64> {
        let mut out: Vec<u64> = all
            .iter()
            .copied()
            .filter(|k| match choice.keep(origin) {
                Keep::All => true,
                Keep::Only(s) => s.contains(k),
                Keep::AllBut(s) => !s.contains(k),
            })
            .collect();
        out.sort_unstable();
        out
    }

    #[test]
    fn every_profile_is_kept_by_exactly_one_origin() {
        // Three replicas, one of which missed 4 and 5; compacted blocks hold 1.
        let origins: BTreeMap<String, HashSet<u64>> = [
            ("ingester-b", keys(&[1, 2, 3, 4, 5, 6])),
            ("ingester-a", keys(&[2, 3, 6, 7])),
            ("ingester-c", keys(&[2, 3, 4, 5, 6, 7])),
            ("compactor", keys(&[1])),
        ]
        .into_iter()
        .map(|(o, k)| (o.to_owned(), k))
        .collect();
        let choice = ReplicaChoice::choose(origins.clone());
        let mut counted = BTreeMap::<u64, usize>::new();
        for (origin, held) in &origins {
            let held: Vec<u64> = held.iter().copied().collect();
            for k in kept(&choice, origin, &held) {
                *counted.entry(k).or_default() += 1;
            }
        }
        assert_eq!(counted, (1..=7).map(|k| (k, 1)).collect());
        assert!(matches!(choice.keep("compactor"), Keep::All));
        assert!(matches!(choice.keep("ingester-a"), Keep::All));
        assert_eq!(kept(&choice, "ingester-b", &[1, 2, 3, 4, 5, 6]), [4, 5]);
        assert!(kept(&choice, "ingester-c", &[2, 3, 4, 5, 6, 7]).is_empty());
    }

    #[test]
    fn one_ingester_needs_no_choice() {
        assert!(!needs_choice(
            ["ingester-local", "compactor"],
            ["ingester-local"]
        ));
        assert!(needs_choice(["ingester-a", "ingester-b"], []));
        assert!(needs_choice(["ingester-a", "compactor"], ["ingester-b"]));
    }
}

/// The replica choice of one origin as a plan node: the rows of the profiles the origin keeps.
/// A node rather than a filter expression, so it travels to other processes with Profusion's
/// plan codec.
#[derive(Debug)]
pub struct ProfileKeyFilterExec {
    filter: ProfileKeyFilter,
    input: Arc<dyn datafusion::physical_plan::ExecutionPlan>,
    properties: Arc<datafusion::physical_plan::PlanProperties>,
}

impl ProfileKeyFilterExec {
    pub fn new(
        filter: ProfileKeyFilter,
        input: Arc<dyn datafusion::physical_plan::ExecutionPlan>,
    ) -> Self {
        let properties = Arc::clone(input.properties());
        Self {
            filter,
            input,
            properties,
        }
    }

    pub fn filter(&self) -> &ProfileKeyFilter {
        &self.filter
    }
}

impl datafusion::physical_plan::DisplayAs for ProfileKeyFilterExec {
    fn fmt_as(
        &self,
        _t: datafusion::physical_plan::DisplayFormatType,
        f: &mut fmt::Formatter<'_>,
    ) -> fmt::Result {
        write!(f, "ProfileKeyFilterExec: {}", self.filter)
    }
}

impl datafusion::physical_plan::ExecutionPlan for ProfileKeyFilterExec {
    fn name(&self) -> &str {
        "ProfileKeyFilterExec"
    }

    fn properties(&self) -> &Arc<datafusion::physical_plan::PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(
            &Arc<dyn PhysicalExpr>,
        ) -> Result<datafusion::common::tree_node::TreeNodeRecursion>,
    ) -> Result<datafusion::common::tree_node::TreeNodeRecursion> {
        for child in &self.filter.children {
            if f(child)? == datafusion::common::tree_node::TreeNodeRecursion::Stop {
                return Ok(datafusion::common::tree_node::TreeNodeRecursion::Stop);
            }
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn datafusion::physical_plan::ExecutionPlan>>,
    ) -> Result<Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
        if children.len() != 1 {
            return Err(DataFusionError::Internal(
                "ProfileKeyFilterExec takes one input".into(),
            ));
        }
        Ok(Arc::new(Self::new(self.filter.clone(), children.remove(0))))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<datafusion::execution::TaskContext>,
    ) -> Result<datafusion::execution::SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let schema = input.schema();
        let filter = self.filter.clone();
        let kept = futures_util::StreamExt::map(input, move |batch| {
            let batch = batch?;
            let mask = filter.evaluate(&batch)?.into_array(batch.num_rows())?;
            let mask = mask.as_boolean();
            Ok(datafusion::arrow::compute::filter_record_batch(
                &batch, mask,
            )?)
        });
        Ok(Box::pin(
            datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(schema, kept),
        ))
    }
}
