//! Functions the read path's plans and SQL use beyond DataFusion's own.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, ListBuilder, MapArray, StringBuilder, StructArray,
};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields, Int64Type};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::{AggregateOrderSensitivity, format_state_name};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, GroupsAccumulator, ReversedUDAF,
    ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion_functions_aggregate_common::aggregate::groups_accumulator::prim_op::PrimitiveGroupsAccumulator;

/// Adds Profusion's functions to a session being built (a querier's, or a worker's that runs
/// its plans' stages).
pub fn register(builder: &mut datafusion::execution::SessionStateBuilder) {
    builder
        .aggregate_functions()
        .get_or_insert_default()
        .push(Arc::new(saturating_sum()));
    builder.scalar_functions().get_or_insert_default().extend([
        Arc::new(labels_map()),
        Arc::new(names_in_order()),
        Arc::new(step_start_ms()),
    ]);
}

/// The name `saturating_sum` is known by in plans.
pub const SATURATING_SUM: &str = "saturating_sum";

/// `saturating_sum(value)`: the sum of 64-bit integers, held at `i64::MAX` (or `i64::MIN`)
/// instead of wrapping. Sample values are untrusted: DataFusion's `sum` wraps on overflow, and
/// three profiles of 2^63 / 3 would then sum to a negative flame-graph node. With this one a
/// node past 2^63 − 1 shows 2^63 − 1 (docs/read-path.md, "Values past 64 bits").
pub fn saturating_sum() -> AggregateUDF {
    AggregateUDF::new_from_impl(SaturatingSum::default())
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct SaturatingSum {
    signature: Signature,
}

impl Default for SaturatingSum {
    fn default() -> Self {
        Self {
            signature: Signature::exact(vec![DataType::Int64], Volatility::Immutable),
        }
    }
}

impl AggregateUDFImpl for SaturatingSum {
    fn name(&self) -> &str {
        SATURATING_SUM
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }

    fn accumulator(&self, _args: AccumulatorArgs<'_>) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(SumAccumulator::default()))
    }

    fn state_fields(&self, args: StateFieldsArgs<'_>) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format_state_name(args.name, "saturating_sum"),
            DataType::Int64,
            true,
        ))])
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs<'_>) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        _args: AccumulatorArgs<'_>,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(PrimitiveGroupsAccumulator::<Int64Type, _>::new(
            &DataType::Int64,
            |sum: &mut i64, v: i64| *sum = sum.saturating_add(v),
        )))
    }

    fn reverse_expr(&self) -> ReversedUDAF {
        ReversedUDAF::Identical
    }

    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        AggregateOrderSensitivity::Insensitive
    }
}

/// The accumulator of an aggregate without groups.
#[derive(Debug, Default)]
struct SumAccumulator {
    sum: Option<i64>,
}

impl Accumulator for SumAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let values = values[0].as_primitive::<Int64Type>();
        for v in values.iter().flatten() {
            self.sum = Some(self.sum.unwrap_or(0).saturating_add(v));
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.update_batch(states)
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![self.evaluate()?])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Int64(self.sum))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
    }
}

/// The name `labels_map` is known by in plans.
pub const LABELS_MAP: &str = "labels_map";

/// `labels_map(labels)`: a series' labels (`LIST<STRUCT<name, value>>`, sorted by name, as
/// `series.labels` holds them) as a `MAP<name, value>`, so SQL reads a label as
/// `labels['region']`. A map is physically that very list of pairs, so this reuses its buffers.
pub fn labels_map() -> ScalarUDF {
    ScalarUDF::new_from_impl(LabelsMap::default())
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct LabelsMap {
    signature: Signature,
}

impl Default for LabelsMap {
    fn default() -> Self {
        Self {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl LabelsMap {
    /// The map type of a labels list type, its keys and values of the pairs' string types.
    fn map_type(list: &DataType) -> Result<DataType> {
        let DataType::List(item) = list else {
            return Err(LabelsMap::wrong_type(list));
        };
        let DataType::Struct(fields) = item.data_type() else {
            return Err(LabelsMap::wrong_type(list));
        };
        let [name, value] = fields.iter().collect::<Vec<_>>()[..] else {
            return Err(LabelsMap::wrong_type(list));
        };
        Ok(DataType::Map(
            Arc::new(Field::new(
                "entries",
                DataType::Struct(Fields::from(vec![
                    Field::new("keys", name.data_type().clone(), false),
                    Field::new("values", value.data_type().clone(), true),
                ])),
                false,
            )),
            true,
        ))
    }

    fn wrong_type(t: &DataType) -> datafusion::error::DataFusionError {
        datafusion::error::DataFusionError::Plan(format!(
            "{LABELS_MAP} takes a list of (name, value) structs, such as series.labels, not {t}"
        ))
    }
}

impl ScalarUDFImpl for LabelsMap {
    fn name(&self) -> &str {
        LABELS_MAP
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Self::map_type(&arg_types[0])
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let DataType::Map(entries_field, sorted) = args.return_field.data_type().clone() else {
            return Err(Self::wrong_type(args.return_field.data_type()));
        };
        let DataType::Struct(entry_fields) = entries_field.data_type().clone() else {
            return Err(Self::wrong_type(args.return_field.data_type()));
        };
        let convert = |array: &ArrayRef| -> Result<ArrayRef> {
            let list = array.as_list::<i32>();
            let pairs = list.values().as_struct();
            if pairs.null_count() > 0 || pairs.column(0).null_count() > 0 {
                return Err(datafusion::error::DataFusionError::Execution(format!(
                    "{LABELS_MAP}: a label without a name"
                )));
            }
            let entries =
                StructArray::try_new(entry_fields.clone(), pairs.columns().to_vec(), None)?;
            Ok(Arc::new(MapArray::try_new(
                Arc::clone(&entries_field),
                list.offsets().clone(),
                entries,
                list.nulls().cloned(),
                sorted,
            )?))
        };
        match &args.args[0] {
            ColumnarValue::Array(array) => Ok(ColumnarValue::Array(convert(array)?)),
            ColumnarValue::Scalar(scalar) => {
                let array = convert(&scalar.to_array()?)?;
                Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
                    &array, 0,
                )?))
            }
        }
    }
}

/// The name `names_in_order` is known by in plans.
pub const NAMES_IN_ORDER: &str = "names_in_order";

/// `names_in_order(pairs)`: the names of a `LIST<STRUCT<position, name>>` ordered by position,
/// as a `LIST<name>`: a stack's function names root first from its frames named one by one.
/// `array_agg(name ORDER BY position)` does the same, but keeps a scalar value and an ordering
/// vector per name through its two aggregation stages, and a week of stacks then needed more than
/// a query's whole memory budget; an `array_agg` of the pairs keeps Arrow arrays, and this sorts
/// each list once at the end.
pub fn names_in_order() -> ScalarUDF {
    ScalarUDF::new_from_impl(NamesInOrder::default())
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct NamesInOrder {
    signature: Signature,
}

impl Default for NamesInOrder {
    fn default() -> Self {
        Self {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl NamesInOrder {
    fn wrong_type(t: &DataType) -> datafusion::error::DataFusionError {
        datafusion::error::DataFusionError::Plan(format!(
            "{NAMES_IN_ORDER} takes a list of (position BIGINT, name VARCHAR) structs, not {t}"
        ))
    }

    fn check(t: &DataType) -> Result<()> {
        let DataType::List(item) = t else {
            return Err(Self::wrong_type(t));
        };
        let DataType::Struct(fields) = item.data_type() else {
            return Err(Self::wrong_type(t));
        };
        match fields.iter().map(|f| f.data_type()).collect::<Vec<_>>()[..] {
            [
                DataType::Int64,
                DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8,
            ] => Ok(()),
            _ => Err(Self::wrong_type(t)),
        }
    }

    fn sort(array: &ArrayRef) -> Result<ArrayRef> {
        let lists = array.as_list::<i32>();
        let pairs = lists.values().as_struct();
        let positions = pairs.column(0).as_primitive::<Int64Type>();
        // Names may come as any string type; the list holds plain strings.
        let names = datafusion::arrow::compute::cast(pairs.column(1), &DataType::Utf8)?;
        let names = names.as_string::<i32>();
        let mut out = ListBuilder::new(StringBuilder::new());
        let mut order: Vec<usize> = Vec::new();
        for row in 0..lists.len() {
            if lists.is_null(row) {
                out.append_null();
                continue;
            }
            let offsets = lists.value_offsets();
            let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
            order.clear();
            order.extend(start..end);
            order.sort_unstable_by_key(|&i| positions.value(i));
            for &i in &order {
                out.values()
                    .append_option(names.is_valid(i).then(|| names.value(i)));
            }
            out.append(true);
        }
        Ok(Arc::new(out.finish()))
    }
}

impl ScalarUDFImpl for NamesInOrder {
    fn name(&self) -> &str {
        NAMES_IN_ORDER
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Self::check(&arg_types[0])?;
        Ok(DataType::List(Arc::new(Field::new_list_field(
            DataType::Utf8,
            true,
        ))))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        match &args.args[0] {
            ColumnarValue::Array(array) => Ok(ColumnarValue::Array(Self::sort(array)?)),
            ColumnarValue::Scalar(scalar) => {
                let array = Self::sort(&scalar.to_array()?)?;
                Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
                    &array, 0,
                )?))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::Schema;
    use datafusion::prelude::{SessionContext, col};

    use super::*;

    #[tokio::test]
    async fn sums_hold_at_the_limits_with_and_without_groups() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("v", DataType::Int64, false),
        ]));
        let third = i64::MAX / 3 + 1;
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 1, 1, 2, 2])),
                Arc::new(Int64Array::from(vec![third, third, third, 5, 7])),
            ],
        )
        .unwrap();
        let ctx = SessionContext::new();
        let sum = saturating_sum();
        let grouped = ctx
            .read_batch(batch.clone())
            .unwrap()
            .aggregate(vec![col("k")], vec![sum.call(vec![col("v")]).alias("s")])
            .unwrap()
            .sort(vec![col("k").sort(true, false)])
            .unwrap()
            .collect()
            .await
            .unwrap();
        let s = grouped[0].column(1).as_primitive::<Int64Type>();
        assert_eq!((s.value(0), s.value(1)), (i64::MAX, 12));
        let whole = ctx
            .read_batch(batch)
            .unwrap()
            .aggregate(vec![], vec![sum.call(vec![col("v")]).alias("s")])
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(
            whole[0].column(0).as_primitive::<Int64Type>().value(0),
            i64::MAX
        );
    }
}

/// The name `step_start_ms` is known by in plans.
pub const STEP_START_MS: &str = "step_start_ms";

/// `step_start_ms(time_nanos, step_ms)`: the start, in Unix milliseconds, of the step of
/// `step_ms` milliseconds (epoch-aligned) that a time in nanoseconds falls in; where a time
/// series puts a profile. Rounds down for times before 1970 too, and cannot overflow: the
/// time is brought to milliseconds before it is rounded. A step below 1 ms counts as 1 ms.
pub fn step_start_ms() -> ScalarUDF {
    ScalarUDF::new_from_impl(StepStartMs::default())
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct StepStartMs {
    signature: Signature,
}

impl Default for StepStartMs {
    fn default() -> Self {
        Self {
            signature: Signature::exact(
                vec![DataType::Int64, DataType::Int64],
                Volatility::Immutable,
            ),
        }
    }
}

/// The start of `time_nanos`'s step of `step_ms` (see [`step_start_ms`]).
fn step_start(time_nanos: i64, step_ms: i64) -> i64 {
    let t = time_nanos.div_euclid(1_000_000);
    t - t.rem_euclid(step_ms.max(1))
}

impl ScalarUDFImpl for StepStartMs {
    fn name(&self) -> &str {
        STEP_START_MS
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [times, step] = &args.args[..] else {
            return Err(datafusion::error::DataFusionError::Plan(format!(
                "{STEP_START_MS} takes a time in nanoseconds and a step in milliseconds"
            )));
        };
        let ColumnarValue::Scalar(ScalarValue::Int64(Some(step_ms))) = step else {
            return Err(datafusion::error::DataFusionError::Plan(format!(
                "{STEP_START_MS}: the step must be a constant"
            )));
        };
        let step_ms = *step_ms;
        match times {
            ColumnarValue::Array(times) => {
                let starts: datafusion::arrow::array::Int64Array = times
                    .as_primitive::<Int64Type>()
                    .unary(|t| step_start(t, step_ms));
                Ok(ColumnarValue::Array(Arc::new(starts)))
            }
            ColumnarValue::Scalar(ScalarValue::Int64(t)) => Ok(ColumnarValue::Scalar(
                ScalarValue::Int64(t.map(|t| step_start(t, step_ms))),
            )),
            ColumnarValue::Scalar(other) => Err(datafusion::error::DataFusionError::Plan(format!(
                "{STEP_START_MS} takes a time in nanoseconds, not {other}"
            ))),
        }
    }
}

#[cfg(test)]
mod step_start_tests {
    use super::step_start;

    #[test]
    fn steps_start_at_epoch_multiples_and_round_down() {
        assert_eq!(step_start(61_999_999_999, 15_000), 60_000);
        assert_eq!(step_start(60_000_000_000, 15_000), 60_000);
        assert_eq!(
            step_start(-1, 15_000),
            -15_000,
            "before 1970 rounds down too"
        );
        assert_eq!(step_start(1_500_000, 0), 1, "a step under 1 ms is 1 ms");
        // The extremes do not overflow.
        assert_eq!(step_start(i64::MIN, 1), i64::MIN.div_euclid(1_000_000));
        assert_eq!(step_start(i64::MAX, i64::MAX), 0);
    }
}
