//! [`HeadScanExec`]: the head side of a table scan, the rows of pinned head snapshots.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures_util::{StreamExt, TryStreamExt};
use profusion_model::block::Table;
use profusion_model::scan::{HeadSnapshot, ScanPart, ScanRequest};

/// Scans one table of one or more tenants' pinned heads, each request's narrowing applied by
/// the head. Its batches are spread over `partitions` output partitions by the head itself
/// (batch `n` to partition `n mod partitions`), so the plan needs no repartitioning of the head.
#[derive(Debug)]
pub struct HeadScanExec {
    table: Table,
    /// The projected scan schema.
    schema: SchemaRef,
    scans: Vec<(Arc<dyn HeadSnapshot>, ScanRequest)>,
    properties: Arc<PlanProperties>,
}

impl HeadScanExec {
    /// A scan of `table` (whose scan schema is `table_schema`) projected to `projection`.
    pub fn try_new(
        table: Table,
        table_schema: SchemaRef,
        projection: Option<Vec<usize>>,
        scans: Vec<(Arc<dyn HeadSnapshot>, ScanRequest)>,
        partitions: usize,
    ) -> Result<Self> {
        let schema = match &projection {
            Some(p) => Arc::new(table_schema.project(p)?),
            None => table_schema,
        };
        let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        let scans = scans
            .into_iter()
            .map(|(head, mut request)| {
                request.projection = Some(columns.clone());
                (head, request)
            })
            .collect();
        Ok(Self::from_parts(table, schema, scans, partitions))
    }

    /// From already projected requests, as a plan codec rebuilds the node.
    pub fn from_parts(
        table: Table,
        schema: SchemaRef,
        scans: Vec<(Arc<dyn HeadSnapshot>, ScanRequest)>,
        partitions: usize,
    ) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(partitions.max(1)),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Self {
            table,
            schema,
            scans,
            properties,
        }
    }

    pub fn table(&self) -> Table {
        self.table
    }

    /// The snapshots and requests scanned.
    pub fn scans(&self) -> &[(Arc<dyn HeadSnapshot>, ScanRequest)] {
        &self.scans
    }
}

impl DisplayAs for HeadScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HeadScanExec: table={}, tenants=[", self.table)?;
        for (i, (_, request)) in self.scans.iter().enumerate() {
            write!(f, "{}{}", if i > 0 { ", " } else { "" }, request.tenant)?;
        }
        write!(
            f,
            "], partitions={}",
            self.properties.partitioning.partition_count()
        )?;
        // The narrowing is the same for every tenant of one scan.
        if let Some((_, r)) = self.scans.first() {
            if self.table.is_per_profile() && r.range != profusion_model::time::TimeRange::ALL {
                write!(f, ", time=[{}, {}]", r.range.start, r.range.end)?;
            }
            if self.table.has_series_columns() {
                if let Some(pt) = &r.profile_type {
                    write!(f, ", profile_type={pt}")?;
                }
                if let Some(services) = &r.services {
                    write!(f, ", services=[{}]", services.join(", "))?;
                }
                if let Some(series) = &r.series {
                    write!(f, ", series={}", series.len())?;
                }
            }
            if let Some(columns) = &r.projection {
                write!(f, ", projection=[{}]", columns.join(", "))?;
            }
        }
        Ok(())
    }
}

impl ExecutionPlan for HeadScanExec {
    fn name(&self) -> &str {
        "HeadScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            Err(DataFusionError::Internal(
                "HeadScanExec has no inputs".into(),
            ))
        }
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let count = self.properties.partitioning.partition_count();
        let part = ScanPart {
            index: u32::try_from(partition)
                .map_err(|_| DataFusionError::Internal(format!("partition {partition}")))?,
            count: u32::try_from(count).unwrap_or(u32::MAX),
        };
        let scans: Vec<(Arc<dyn HeadSnapshot>, ScanRequest)> = self
            .scans
            .iter()
            .map(|(head, request)| {
                let mut request = request.clone();
                request.part = Some(part);
                (Arc::clone(head), request)
            })
            .collect();
        let schema = Arc::clone(&self.schema);
        let to_schema = Arc::clone(&schema);
        let batches = futures_util::stream::iter(scans)
            .then(|(head, request)| async move {
                let rows = head.scan(&request).await.map_err(external)?;
                Ok::<_, DataFusionError>(rows.map_err(external))
            })
            .try_flatten()
            .and_then(move |batch| {
                let schema = Arc::clone(&to_schema);
                async move { cast_to_schema(&batch, &schema) }
            });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
    }
}

/// A head scan's failure as DataFusion's, an unavailable ingester marked retryable so it still
/// reads as one when the scan ran in another process.
fn external(e: profusion_model::scan::ScanError) -> DataFusionError {
    let retryable = matches!(e, profusion_model::scan::ScanError::Unavailable(_));
    let e = DataFusionError::External(Box::new(e));
    if retryable {
        crate::error::mark_unavailable(e)
    } else {
        e
    }
}

/// `batch` in `schema`, each column cast where its type differs: a head batch (block schema:
/// plain strings) in the scan schema (strings as views), an answer in the types a client
/// reads.
pub fn cast_to_schema(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| {
            if column.data_type() == field.data_type() {
                Ok(Arc::clone(column))
            } else {
                Ok(cast(column, field.data_type())?)
            }
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}
