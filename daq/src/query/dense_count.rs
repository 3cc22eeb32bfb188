//! Counting per group by array slot instead of by hash, when the group key is an integer column.
//!
//! The histogram every TCSPC user runs, `SELECT floor(micro_time_ps / 50), count(*) ... GROUP
//! BY 1`, and counts per channel group 10 M photons by keys drawn from a small range. DataFusion
//! evaluates the key expression on every row (casts and a division) and looks every key up in
//! a hash table; that took two thirds of the query. Here the rows are counted per distinct
//! value of the one column the key is computed from, in an array indexed by `value - lowest`
//! (micro times span a period: thousands to a million values), and the key expression is
//! evaluated once per distinct value when the partition ends.
//!
//! The rule replaces only the partial step of a two-step aggregate, whose output the final
//! step merges by key anyway (it may hold a key twice), and only when every aggregate is a
//! `count` of rows or of the key's column, and the key is a deterministic expression of one
//! integer column. Memory is bounded: the array spans at most [`MAX_SLOTS`] values and is
//! reserved from the query's memory pool; values beyond it are counted in a map of at most
//! [`MAX_MAP_ENTRIES`], and past that the operator passes each row through as its own partial
//! count, as DataFusion does when partial aggregation does not reduce the rows.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, ArrowPrimitiveType, AsArray, Int64Array, PrimitiveArray, RecordBatch,
};
use datafusion::arrow::compute::{cast, max, min};
use datafusion::arrow::datatypes::{
    DataType, Int16Type, Int32Type, Int64Type, Int8Type, Schema, SchemaRef, UInt16Type, UInt32Type,
    UInt8Type,
};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Result, ScalarValue};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::Volatility;
use datafusion::physical_expr::expressions::{
    BinaryExpr, CastExpr, Column, Literal, NegativeExpr, TryCastExpr,
};
use datafusion::physical_expr::utils::{collect_columns, reassign_expr_columns};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr, ScalarFunctionExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::execution_plan::{
    apply_expression_roots, Boundedness, EmissionType, ReplaceChildrenOptions,
};
use datafusion::physical_plan::metrics::{
    Count, ExecutionPlanMetricsSet, Gauge, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, InputOrderMode, PlanProperties,
    SendableRecordBatchStream,
};
use futures::StreamExt;

/// Widest span of key-column values counted in the array (8 MiB of counts per partition).
pub const MAX_SLOTS: usize = 1 << 20;
/// Distinct values outside the array counted in a map before rows are passed through.
pub const MAX_MAP_ENTRIES: usize = 1 << 16;
/// Bytes a map entry is taken to cost, for the memory reservation.
const MAP_ENTRY_BYTES: usize = 48;

/// The physical optimizer rule that puts [`DenseCountExec`] in place of a partial count.
#[derive(Debug, Default)]
pub struct DenseCount;

impl PhysicalOptimizerRule for DenseCount {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(plan
            .transform_up(|node| {
                Ok(match DenseCountExec::replacing(&node) {
                    Some(dense) => Transformed::yes(Arc::new(dense) as Arc<dyn ExecutionPlan>),
                    None => Transformed::no(node),
                })
            })?
            .data)
    }

    fn name(&self) -> &str {
        "flowdaq_dense_count"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// What one `count` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counted {
    /// Every row (`count(*)`, `count(1)`).
    Rows,
    /// Rows whose key column is not null (`count(column)`).
    KeyNotNull,
}

/// The partial step of `GROUP BY f(column)` with only counts, counted by array slot.
#[derive(Debug)]
pub struct DenseCountExec {
    input: Arc<dyn ExecutionPlan>,
    /// The key column's field in the input (made nullable).
    key_field: Arc<datafusion::arrow::datatypes::Field>,
    /// The key column's index in the input.
    key_index: usize,
    /// The group expression over a batch holding only the key column.
    group_expr: Arc<dyn PhysicalExpr>,
    counted: Vec<Counted>,
    /// The replaced aggregate's output schema.
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    /// `array_slots`, `map_values` and `rows_passed_through`, shown by EXPLAIN ANALYZE.
    metrics: ExecutionPlanMetricsSet,
}

impl DenseCountExec {
    /// The replacement for `plan` when it is a partial aggregate this operator computes.
    fn replacing(plan: &Arc<dyn ExecutionPlan>) -> Option<DenseCountExec> {
        let aggregate = plan.downcast_ref::<AggregateExec>()?;
        if *aggregate.mode() != AggregateMode::Partial
            || *aggregate.input_order_mode() != InputOrderMode::Linear
            || aggregate.limit_options().is_some()
            || !plan.dynamic_expressions_produced().is_empty()
            || aggregate.filter_expr().iter().any(Option::is_some)
        {
            return None;
        }
        let groups = aggregate.group_expr();
        if !groups.is_single() || groups.expr().len() != 1 {
            return None;
        }
        let group_expr = &groups.expr()[0].0;
        if !deterministic(group_expr) {
            return None;
        }
        let columns = collect_columns(group_expr);
        if columns.len() != 1 {
            return None;
        }
        let key = columns.into_iter().next()?;
        let input_schema = aggregate.input().schema();
        let key_field = input_schema.fields().get(key.index())?;
        if key_field.name() != key.name() || !counts_by_slot(key_field.data_type()) {
            return None;
        }
        let counted = aggregate
            .aggr_expr()
            .iter()
            .map(|count| {
                if count.fun().name() != "count" || count.is_distinct() {
                    return None;
                }
                match count.expressions().as_slice() {
                    [argument] => counted_by(argument, &key),
                    _ => None,
                }
            })
            .collect::<Option<Vec<_>>>()?;
        let key_field = Arc::new(key_field.as_ref().clone().with_nullable(true));
        let key_schema = Schema::new(vec![key_field.clone()]);
        let group_expr = reassign_expr_columns(group_expr.clone(), &key_schema).ok()?;
        let schema = aggregate.schema();
        if schema.fields().len() != 1 + counted.len()
            || schema.fields()[1..]
                .iter()
                .any(|f| f.data_type() != &DataType::Int64)
        {
            return None;
        }
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            aggregate.properties().partitioning.clone(),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        Some(DenseCountExec {
            input: aggregate.input().clone(),
            key_field,
            key_index: key.index(),
            group_expr,
            counted,
            schema,
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }
}

/// Whether an expression gives the same value for the same input, every time.
fn deterministic(expr: &Arc<dyn PhysicalExpr>) -> bool {
    let mut all = true;
    let _ = expr.apply(|node| {
        let known = node.downcast_ref::<Column>().is_some()
            || node.downcast_ref::<Literal>().is_some()
            || node.downcast_ref::<CastExpr>().is_some()
            || node.downcast_ref::<TryCastExpr>().is_some()
            || node.downcast_ref::<BinaryExpr>().is_some()
            || node.downcast_ref::<NegativeExpr>().is_some()
            || node
                .downcast_ref::<ScalarFunctionExpr>()
                .is_some_and(|f| f.fun().signature().volatility == Volatility::Immutable);
        all &= known;
        Ok(if known {
            TreeNodeRecursion::Continue
        } else {
            TreeNodeRecursion::Stop
        })
    });
    all
}

/// Integer types whose every value fits an `i64`.
fn counts_by_slot(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
    )
}

/// What `count(argument)` counts, when it is rows or the key column.
fn counted_by(argument: &Arc<dyn PhysicalExpr>, key: &Column) -> Option<Counted> {
    if let Some(literal) = argument.downcast_ref::<Literal>() {
        return (!literal.value().is_null()).then_some(Counted::Rows);
    }
    (argument.downcast_ref::<Column>() == Some(key)).then_some(Counted::KeyNotNull)
}

impl DisplayAs for DenseCountExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "DenseCountExec: gby=[{}] counts={}",
            self.group_expr,
            self.counted.len()
        )
    }
}

impl ExecutionPlan for DenseCountExec {
    fn name(&self) -> &str {
        "DenseCountExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        apply_expression_roots([&self.group_expr], f)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Some(input) = children.pop().filter(|_| children.is_empty()) else {
            return datafusion::common::internal_err!("DenseCountExec takes one input");
        };
        Ok(Arc::new(DenseCountExec {
            input,
            key_field: self.key_field.clone(),
            key_index: self.key_index,
            group_expr: self.group_expr.clone(),
            counted: self.counted.clone(),
            schema: self.schema.clone(),
            properties: self.properties.clone(),
            metrics: ExecutionPlanMetricsSet::new(),
        }))
    }

    #[allow(deprecated)]
    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(
                datafusion::physical_plan::execution_plan::ChildrenPropertiesMode::Recompute,
            ),
        )
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context.clone())?;
        let reservation = MemoryConsumer::new(format!("DenseCountExec[{partition}]"))
            .register(context.memory_pool());
        let emit = Emitter {
            key_schema: Arc::new(Schema::new(vec![self.key_field.clone()])),
            group_expr: self.group_expr.clone(),
            counted: self.counted.clone(),
            schema: self.schema.clone(),
            batch_rows: context.session_config().batch_size().max(1),
        };
        let state = CountState {
            input,
            key_index: self.key_index,
            slots: Slots::new(reservation),
            metrics: PartitionMetrics {
                array_slots: MetricBuilder::new(&self.metrics).gauge("array_slots", partition),
                map_values: MetricBuilder::new(&self.metrics).gauge("map_values", partition),
                rows_passed_through: MetricBuilder::new(&self.metrics)
                    .counter("rows_passed_through", partition),
            },
            emit,
            pending: VecDeque::new(),
            finished: false,
        };
        let stream = futures::stream::unfold(state, |mut state| async move {
            state.next().await.map(|item| (item, state))
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            stream,
        )))
    }
}

/// Turns counted values into the partial aggregate's batches.
struct Emitter {
    /// One nullable field: the key column.
    key_schema: SchemaRef,
    group_expr: Arc<dyn PhysicalExpr>,
    counted: Vec<Counted>,
    schema: SchemaRef,
    batch_rows: usize,
}

impl Emitter {
    /// The partial rows for `keys` (key-column values, a null for the null group) with
    /// `rows` rows each.
    fn batch(&self, keys: ArrayRef, rows: Int64Array) -> Result<RecordBatch> {
        let keys = RecordBatch::try_new(self.key_schema.clone(), vec![keys])?;
        let group = self
            .group_expr
            .evaluate(&keys)?
            .into_array(keys.num_rows())?;
        let key_column = keys.column(0);
        let mut columns = vec![group];
        for counted in &self.counted {
            columns.push(match counted {
                Counted::Rows => Arc::new(rows.clone()) as ArrayRef,
                Counted::KeyNotNull => Arc::new(Int64Array::from_iter_values(
                    (0..key_column.len()).map(|i| {
                        if key_column.is_valid(i) {
                            rows.value(i)
                        } else {
                            0
                        }
                    }),
                )),
            });
        }
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }

    /// Every counted value, in batches of at most `batch_rows`.
    fn finish(&self, slots: &Slots) -> Result<Vec<RecordBatch>> {
        let (values, rows) = slots.counted_values();
        let mut keys: ArrayRef = Arc::new(values);
        if slots.null_rows > 0 {
            let null = ScalarValue::Int64(None).to_array_of_size(1)?;
            keys = datafusion::arrow::compute::concat(&[keys.as_ref(), null.as_ref()])?;
        }
        let rows = Int64Array::from_iter_values(
            rows.into_iter()
                .chain((slots.null_rows > 0).then_some(slots.null_rows))
                .map(|n| n as i64),
        );
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let keys = cast(&keys, self.key_schema.field(0).data_type())?;
        let all = self.batch(keys, rows)?;
        Ok((0..all.num_rows())
            .step_by(self.batch_rows)
            .map(|start| all.slice(start, self.batch_rows.min(all.num_rows() - start)))
            .collect())
    }
}

/// What one partition's counting used.
struct PartitionMetrics {
    array_slots: Gauge,
    map_values: Gauge,
    rows_passed_through: Count,
}

/// One partition's counting: the input, the slots, and batches waiting to go out.
struct CountState {
    input: SendableRecordBatchStream,
    key_index: usize,
    slots: Slots,
    metrics: PartitionMetrics,
    emit: Emitter,
    pending: VecDeque<RecordBatch>,
    finished: bool,
}

impl CountState {
    /// The next output batch, or `None` at the end.
    async fn next(&mut self) -> Option<Result<RecordBatch>> {
        loop {
            if let Some(batch) = self.pending.pop_front() {
                return Some(Ok(batch));
            }
            if self.finished {
                return None;
            }
            match self.input.next().await {
                Some(Ok(batch)) => {
                    let column = batch.column(self.key_index).clone();
                    if self.slots.passing_through {
                        self.metrics.rows_passed_through.add(column.len());
                        let rows = Int64Array::from_value(1, column.len());
                        return Some(self.emit.batch(column, rows));
                    }
                    if let Err(err) = self.slots.absorb(&column) {
                        return Some(Err(err));
                    }
                }
                Some(Err(err)) => return Some(Err(err)),
                None => {
                    self.finished = true;
                    self.metrics.array_slots.set(self.slots.counts.len());
                    self.metrics.map_values.set(self.slots.outside.len());
                    match self.emit.finish(&self.slots) {
                        Ok(batches) => self.pending.extend(batches),
                        Err(err) => return Some(Err(err)),
                    }
                    self.slots.release();
                }
            }
        }
    }
}

/// Row counts per key-column value: an array over `[lowest, lowest + counts.len())`, a map
/// for values outside it, and the null rows.
struct Slots {
    lowest: i64,
    counts: Vec<u64>,
    outside: HashMap<i64, u64>,
    null_rows: u64,
    /// Set once the map is full or memory is refused: later rows go out one by one.
    passing_through: bool,
    reservation: MemoryReservation,
}

impl Slots {
    fn new(reservation: MemoryReservation) -> Slots {
        Slots {
            lowest: 0,
            counts: Vec::new(),
            outside: HashMap::new(),
            null_rows: 0,
            passing_through: false,
            reservation,
        }
    }

    /// Counts the values of one batch's key column.
    fn absorb(&mut self, column: &ArrayRef) -> Result<()> {
        match column.data_type() {
            DataType::Int8 => self.absorb_typed(column.as_primitive::<Int8Type>()),
            DataType::Int16 => self.absorb_typed(column.as_primitive::<Int16Type>()),
            DataType::Int32 => self.absorb_typed(column.as_primitive::<Int32Type>()),
            DataType::Int64 => self.absorb_typed(column.as_primitive::<Int64Type>()),
            DataType::UInt8 => self.absorb_typed(column.as_primitive::<UInt8Type>()),
            DataType::UInt16 => self.absorb_typed(column.as_primitive::<UInt16Type>()),
            DataType::UInt32 => self.absorb_typed(column.as_primitive::<UInt32Type>()),
            other => datafusion::common::internal_err!(
                "DenseCountExec planned for an integer key, given {other}"
            ),
        }
    }

    fn absorb_typed<T>(&mut self, values: &PrimitiveArray<T>) -> Result<()>
    where
        T: ArrowPrimitiveType,
        T::Native: Into<i64>,
    {
        self.null_rows += values.null_count() as u64;
        let (Some(low), Some(high)) = (min(values), max(values)) else {
            return Ok(()); // empty or all null
        };
        if self.cover(low.into(), high.into()) {
            let lowest = self.lowest;
            let counts = &mut self.counts;
            if values.null_count() == 0 {
                for &value in values.values() {
                    counts[(value.into() - lowest) as usize] += 1;
                }
            } else {
                for value in values.iter().flatten() {
                    counts[(value.into() - lowest) as usize] += 1;
                }
            }
            return Ok(());
        }
        // Outliers widen the batch's range beyond the array: widen it over the bulk of the
        // values instead (percentiles 1 to 99 of a sample); the rest go to the map.
        let step = (values.len() / 256).max(1);
        let mut sample: Vec<i64> = values
            .iter()
            .step_by(step)
            .flatten()
            .map(Into::into)
            .collect();
        sample.sort_unstable();
        let outliers = sample.len() / 100;
        if let (Some(&low), Some(&high)) = (
            sample.get(outliers),
            sample
                .len()
                .checked_sub(1 + outliers)
                .and_then(|i| sample.get(i)),
        ) {
            self.cover(low, high);
        }
        let end = i128::from(self.lowest) + self.counts.len() as i128;
        for value in values.iter().flatten() {
            let value: i64 = value.into();
            if i128::from(value) >= i128::from(self.lowest) && i128::from(value) < end {
                self.counts[(value - self.lowest) as usize] += 1;
            } else {
                *self.outside.entry(value).or_default() += 1;
            }
        }
        self.reserve();
        Ok(())
    }

    /// Widens the array to hold `[low, high]` if the span and the memory pool allow;
    /// whether it holds them now.
    fn cover(&mut self, low: i64, high: i64) -> bool {
        let (start, end) = if self.counts.is_empty() {
            (i128::from(low), i128::from(high) + 1)
        } else {
            (
                i128::from(low.min(self.lowest)),
                (i128::from(high) + 1).max(i128::from(self.lowest) + self.counts.len() as i128),
            )
        };
        let current = (
            i128::from(self.lowest),
            i128::from(self.lowest) + self.counts.len() as i128,
        );
        if !self.counts.is_empty() && start == current.0 && end == current.1 {
            return true;
        }
        let slots = end - start;
        if slots > MAX_SLOTS as i128 {
            return false;
        }
        let slots = slots as usize;
        let bytes = slots * size_of::<u64>() + self.outside.len() * MAP_ENTRY_BYTES;
        if self.reservation.try_resize(bytes).is_err() {
            return false;
        }
        // `start` and `start + slots` lie within the i64 values seen.
        let start = start as i64;
        let mut widened = vec![0u64; slots];
        if !self.counts.is_empty() {
            let offset = (self.lowest - start) as usize;
            widened[offset..offset + self.counts.len()].copy_from_slice(&self.counts);
        }
        self.lowest = start;
        self.counts = widened;
        true
    }

    /// Accounts for the map; passes rows through from now on if it is full or refused.
    fn reserve(&mut self) {
        let bytes = self.counts.len() * size_of::<u64>() + self.outside.len() * MAP_ENTRY_BYTES;
        if self.outside.len() > MAX_MAP_ENTRIES || self.reservation.try_resize(bytes).is_err() {
            self.passing_through = true;
        }
    }

    /// The values counted at least once, ascending, with their row counts.
    fn counted_values(&self) -> (Int64Array, Vec<u64>) {
        let mut values = Vec::new();
        let mut rows = Vec::new();
        let in_array = self
            .counts
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(|(i, &n)| (self.lowest + i as i64, n));
        let mut outside: Vec<(i64, u64)> = self.outside.iter().map(|(&v, &n)| (v, n)).collect();
        outside.sort_unstable();
        let mut outside = outside.into_iter().peekable();
        for (value, n) in in_array {
            while let Some((v, m)) = outside.next_if(|(v, _)| *v < value) {
                values.push(v);
                rows.push(m);
            }
            values.push(value);
            rows.push(n);
        }
        for (v, m) in outside {
            values.push(v);
            rows.push(m);
        }
        (Int64Array::from(values), rows)
    }

    fn release(&mut self) {
        self.counts = Vec::new();
        self.outside = HashMap::new();
        self.reservation.free();
    }
}

#[cfg(test)]
mod tests;
