//! Profusion's plan nodes to bytes and back: a [`PhysicalExtensionCodec`] for every custom
//! node, so a physical plan (or a fragment of one) can be shipped to a querier in another
//! process and run there. DataFusion's own nodes, Parquet scans included, are encoded by
//! datafusion-proto; this codec adds [`HeadScanExec`], [`SymbolizeExec`],
//! [`BlockAggregateExec`] and the `saturating_sum` aggregate.
//!
//! A head scan travels as its requests, the [`HeadCut`] each was planned against and, for a
//! snapshot taken over Arrow Flight, the pin its ingester holds it under: the decoding side
//! reads that very snapshot (the ingester's own, or over Flight) through its [`HeadSource`].
//! A scan without a pin pins a fresh snapshot when the plan first runs and reads only the
//! cut's WAL segments, so the blocks the planner skipped and the head data the plan reads
//! still meet exactly; a segment flushed in between fails the scan as unavailable (retryable)
//! instead of reading a profile twice or not at all.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{AggregateUDF, ScalarUDF};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr_common::physical_expr::proto_decode::PhysicalExprDecodeCtx;
use datafusion::physical_expr_common::physical_expr::proto_encode::PhysicalExprEncodeCtx;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use profusion_model::block::Table;
use profusion_model::scan::{
    HeadCut, HeadSnapshot, HeadSource, RecordBatchStream, ScanError, ScanRequest,
};
use serde::{Deserialize, Serialize};

use crate::block_aggregates::BlockAggregateExec;
use crate::functions::{
    LABELS_MAP, NAMES_IN_ORDER, SATURATING_SUM, labels_map, names_in_order, saturating_sum,
};
use crate::symbolize::{StackFilter, SymbolizeExec, SymbolizeOutput};
use crate::table::replicas::{ProfileKeyFilter, ProfileKeyFilterExec};
use crate::table::{HeadScanExec, scan_schema};

/// The codec of Profusion's plan nodes; decoded head scans read from `head`.
#[derive(Debug, Clone)]
pub struct ProfusionCodec {
    head: Arc<dyn HeadSource>,
}

impl ProfusionCodec {
    pub fn new(head: Arc<dyn HeadSource>) -> Self {
        Self { head }
    }
}

/// The encoded form of a custom node.
#[derive(Debug, Serialize, Deserialize)]
enum Node {
    HeadScan {
        table: Table,
        /// The output columns, in order.
        columns: Vec<String>,
        partitions: usize,
        scans: Vec<EncodedScan>,
    },
    Symbolize {
        output: SymbolizeOutput,
        filter: StackFilter,
    },
    /// A replica choice's filter: the keys (see `ProfileKeyFilter::encode_keep`), over the
    /// three key columns of its input.
    ProfileKeys { keep: Vec<u8>, columns: [usize; 3] },
    /// Per-file aggregates of block files: the files' plans are its inputs.
    BlockAggregate { partitions: usize },
}

#[derive(Debug, Serialize, Deserialize)]
struct EncodedScan {
    cut: HeadCut,
    request: ScanRequest,
    /// The pin of the planner's snapshot on its ingester, when it has one: the decoding side
    /// reads that very snapshot.
    #[serde(default)]
    pin: Option<u64>,
}

impl PhysicalExtensionCodec for ProfusionCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        _ctx: &TaskContext,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let node: Node = serde_json::from_slice(buf).map_err(|e| {
            DataFusionError::Internal(format!("decoding a Profusion plan node: {e}"))
        })?;
        match node {
            Node::HeadScan {
                table,
                columns,
                partitions,
                scans,
            } => {
                let full = scan_schema(table);
                let indices = columns
                    .iter()
                    .map(|c| full.index_of(c))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                let schema = Arc::new(full.project(&indices)?);
                let scans = scans
                    .into_iter()
                    .map(|s| {
                        let mut request = s.request;
                        request.segments = Some(s.cut.segments.clone());
                        let head: Arc<dyn HeadSnapshot> = Arc::new(Resnapshot {
                            source: Arc::clone(&self.head),
                            tenant: request.tenant.clone(),
                            cut: s.cut,
                            pin: s.pin,
                            pinned: tokio::sync::OnceCell::new(),
                        });
                        (head, request)
                    })
                    .collect();
                Ok(Arc::new(HeadScanExec::from_parts(
                    table, schema, scans, partitions,
                )))
            }
            Node::ProfileKeys { keep, columns } => {
                let [input] = inputs else {
                    return Err(DataFusionError::Internal(
                        "ProfileKeyFilterExec takes exactly one input".into(),
                    ));
                };
                let schema = input.schema();
                let children: Vec<Arc<dyn PhysicalExpr>> = columns
                    .iter()
                    .map(|&i| {
                        Arc::new(datafusion::physical_expr::expressions::Column::new(
                            schema.field(i).name(),
                            i,
                        )) as Arc<dyn PhysicalExpr>
                    })
                    .collect();
                Ok(Arc::new(ProfileKeyFilterExec::new(
                    ProfileKeyFilter::decode(&keep, &children)?,
                    Arc::clone(input),
                )))
            }
            Node::BlockAggregate { partitions } => {
                let [input] = inputs else {
                    return Err(DataFusionError::Internal(
                        "BlockAggregateExec takes exactly one input".into(),
                    ));
                };
                Ok(Arc::new(BlockAggregateExec::new(
                    Arc::clone(input),
                    partitions,
                )?))
            }
            Node::Symbolize { output, filter } => {
                let inputs: [Arc<dyn ExecutionPlan>; 3] =
                    inputs.to_vec().try_into().map_err(|_| {
                        DataFusionError::Internal("SymbolizeExec takes exactly three inputs".into())
                    })?;
                Ok(Arc::new(SymbolizeExec::new(inputs, output, filter)))
            }
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        let encoded = if let Some(scan) = node.downcast_ref::<HeadScanExec>() {
            Node::HeadScan {
                table: scan.table(),
                columns: scan
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect(),
                partitions: scan.properties().partitioning.partition_count(),
                scans: scan
                    .scans()
                    .iter()
                    .map(|(head, request)| EncodedScan {
                        cut: head.cut().clone(),
                        request: request.clone(),
                        pin: head.pin(),
                    })
                    .collect(),
            }
        } else if let Some(keys) = node.downcast_ref::<ProfileKeyFilterExec>() {
            Node::ProfileKeys {
                keep: keys.filter().encode_keep(),
                columns: keys.filter().column_indices()?,
            }
        } else if node.downcast_ref::<BlockAggregateExec>().is_some() {
            Node::BlockAggregate {
                partitions: node.properties().partitioning.partition_count(),
            }
        } else if let Some(symbolize) = node.downcast_ref::<SymbolizeExec>() {
            Node::Symbolize {
                output: symbolize.output.clone(),
                filter: symbolize.filter.clone(),
            }
        } else {
            return Err(DataFusionError::NotImplemented(format!(
                "no Profusion encoding for plan node {}",
                node.name()
            )));
        };
        serde_json::to_writer(buf, &encoded)
            .map_err(|e| DataFusionError::Internal(format!("encoding a Profusion plan node: {e}")))
    }

    fn try_decode_expr(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn PhysicalExpr>],
        _ctx: &PhysicalExprDecodeCtx<'_>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        Ok(Arc::new(ProfileKeyFilter::decode(buf, inputs)?))
    }

    fn try_encode_expr(
        &self,
        node: &Arc<dyn PhysicalExpr>,
        buf: &mut Vec<u8>,
        _ctx: &PhysicalExprEncodeCtx<'_>,
    ) -> Result<()> {
        let Some(filter) = node.downcast_ref::<ProfileKeyFilter>() else {
            return Err(DataFusionError::NotImplemented(format!(
                "no Profusion encoding for expression {node}"
            )));
        };
        buf.extend(filter.encode_keep());
        Ok(())
    }

    fn try_decode_udf(&self, name: &str, _buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        if name == LABELS_MAP {
            Ok(Arc::new(labels_map()))
        } else if name == NAMES_IN_ORDER {
            Ok(Arc::new(names_in_order()))
        } else {
            Err(DataFusionError::NotImplemented(format!(
                "no Profusion function named {name}"
            )))
        }
    }

    fn try_decode_udaf(&self, name: &str, _buf: &[u8]) -> Result<Arc<AggregateUDF>> {
        if name == SATURATING_SUM {
            Ok(Arc::new(saturating_sum()))
        } else {
            Err(DataFusionError::NotImplemented(format!(
                "no Profusion aggregate named {name}"
            )))
        }
    }

    fn try_encode_udaf(&self, _node: &AggregateUDF, _buf: &mut Vec<u8>) -> Result<()> {
        // Aggregates travel by name; `try_decode_udaf` knows ours.
        Ok(())
    }
}

/// The head of a decoded scan, looked up in the local head source the first time any
/// partition reads it, then shared by every partition: the planner's own snapshot when it has
/// a pin (a snapshot taken over Flight, which its ingester keeps until the planner's query
/// ends), else a fresh snapshot read only up to the cut the plan was made against.
#[derive(Debug)]
struct Resnapshot {
    source: Arc<dyn HeadSource>,
    tenant: String,
    cut: HeadCut,
    pin: Option<u64>,
    pinned: tokio::sync::OnceCell<Arc<dyn HeadSnapshot>>,
}

#[async_trait]
impl HeadSnapshot for Resnapshot {
    fn cut(&self) -> &HeadCut {
        &self.cut
    }

    async fn scan(
        &self,
        request: &ScanRequest,
    ) -> std::result::Result<RecordBatchStream, ScanError> {
        let head = self
            .pinned
            .get_or_try_init(|| async {
                if let Some(pin) = self.pin {
                    return self.source.pinned(&self.cut, pin).await;
                }
                // This process's snapshot of the ingester the plan was cut on.
                let heads = self.source.snapshot(&self.tenant).await?;
                heads
                    .into_iter()
                    .find(|h| h.cut().source == self.cut.source)
                    .ok_or_else(|| {
                        ScanError::Unavailable(format!(
                            "the head of {} cannot be read here; retry the query",
                            self.cut.source
                        ))
                    })
            })
            .await?;
        head.scan(request).await
    }
}
