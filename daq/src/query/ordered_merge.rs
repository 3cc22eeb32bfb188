//! Approximate percentiles that give the same answer for the same data on every run.
//!
//! A query's partitions finish in whatever order the threads allow, and DataFusion merges
//! their partial t-digests in that order. A t-digest merge compresses as it goes, so the
//! answer depends on the order: the same `approx_percentile_cont` over the same files gave two
//! different values on repeated runs. The functions here are registered over DataFusion's own
//! under the same names; their accumulators keep the partial states they are given and merge
//! them in one canonical order (by the states' own bytes) when the answer or the state is
//! asked for, so arrival order no longer matters.

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::compute::{concat, take};
use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::{plan_err, Result, ScalarValue};
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::expr::AggregateFunctionParams;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::AggregateOrderSensitivity;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Documentation, ReversedUDAF, Signature,
};

/// DataFusion's aggregates whose result depends on the order partial states are merged in.
const ORDER_DEPENDENT_MERGES: [&str; 3] = [
    "approx_percentile_cont",
    "approx_percentile_cont_with_weight",
    "approx_median",
];

/// Registers the canonical-merge versions over DataFusion's own in `context`.
pub fn register(context: &SessionContext) -> Result<()> {
    for name in ORDER_DEPENDENT_MERGES {
        let Some(inner) = context.state().aggregate_functions().get(name).cloned() else {
            return plan_err!("aggregate {name} is not registered: cannot order its merges");
        };
        let inner = AggregateUDF::clone(&inner);
        context.register_udaf(AggregateUDF::new_from_impl(CanonicalMerge { inner }));
    }
    Ok(())
}

/// An aggregate whose partial states are merged in canonical order.
#[derive(Debug, PartialEq, Eq, Hash)]
struct CanonicalMerge {
    inner: AggregateUDF,
}

impl AggregateUDFImpl for CanonicalMerge {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn schema_name(&self, params: &AggregateFunctionParams) -> Result<String> {
        self.inner.inner().schema_name(params)
    }

    fn human_display(&self, params: &AggregateFunctionParams) -> Result<String> {
        self.inner.inner().human_display(params)
    }

    fn display_name(&self, params: &AggregateFunctionParams) -> Result<String> {
        self.inner.inner().display_name(params)
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field(&self, arg_fields: &[FieldRef]) -> Result<FieldRef> {
        self.inner.return_field(arg_fields)
    }

    fn is_nullable(&self) -> bool {
        self.inner.is_nullable()
    }

    fn accumulator(&self, acc_args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(CanonicalMergeAccumulator {
            inner: self.inner.accumulator(acc_args)?,
            pending: Vec::new(),
        }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        self.inner.state_fields(args)
    }

    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        self.inner.inner().order_sensitivity()
    }

    fn reverse_expr(&self) -> ReversedUDAF {
        self.inner.inner().reverse_expr()
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn default_value(&self, data_type: &DataType) -> Result<ScalarValue> {
        self.inner.default_value(data_type)
    }

    fn supports_null_handling_clause(&self) -> bool {
        self.inner.inner().supports_null_handling_clause()
    }

    fn supports_within_group_clause(&self) -> bool {
        self.inner.inner().supports_within_group_clause()
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}

/// Delegates to DataFusion's accumulator, holding merged states until they can be merged in
/// canonical order.
#[derive(Debug)]
struct CanonicalMergeAccumulator {
    inner: Box<dyn Accumulator>,
    /// Partial states received, one `Vec` of state columns per `merge_batch` call.
    pending: Vec<Vec<ArrayRef>>,
}

impl CanonicalMergeAccumulator {
    /// Merges every pending state into the inner accumulator, sorted by the states' bytes.
    fn merge_pending(&mut self) -> Result<()> {
        let Some(first) = self.pending.first() else {
            return Ok(());
        };
        let columns = first.len();
        let mut merged: Vec<ArrayRef> = Vec::with_capacity(columns);
        for column in 0..columns {
            let parts: Vec<&dyn datafusion::arrow::array::Array> = self
                .pending
                .iter()
                .map(|state| state[column].as_ref())
                .collect();
            merged.push(concat(&parts)?);
        }
        self.pending.clear();
        let fields = merged
            .iter()
            .map(|array| SortField::new(array.data_type().clone()))
            .collect();
        let rows = RowConverter::new(fields)?.convert_columns(&merged)?;
        let mut order: Vec<u32> = (0..rows.num_rows() as u32).collect();
        order.sort_by(|&a, &b| rows.row(a as usize).cmp(&rows.row(b as usize)));
        let indices = datafusion::arrow::array::UInt32Array::from(order);
        let sorted = merged
            .iter()
            .map(|array| take(array.as_ref(), &indices, None))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        self.inner.merge_batch(&sorted)
    }
}

impl Accumulator for CanonicalMergeAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.inner.update_batch(values)
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        if states.first().is_some_and(|state| !state.is_empty()) {
            self.pending.push(states.to_vec());
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        self.merge_pending()?;
        self.inner.state()
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        self.merge_pending()?;
        self.inner.evaluate()
    }

    fn size(&self) -> usize {
        let pending: usize = self
            .pending
            .iter()
            .flatten()
            .map(|array| array.get_array_memory_size())
            .sum();
        std::mem::size_of_val(self) + self.inner.size() + pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use datafusion::arrow::array::Float64Array;
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::physical_expr::expressions::{col, lit};
    use datafusion::physical_expr::PhysicalExpr;

    /// A fresh accumulator of `approx_percentile_cont(value, 0.5)` as registered in `context`.
    fn median_accumulator(context: &SessionContext) -> Box<dyn Accumulator> {
        let schema = Schema::new(vec![Field::new("value", DataType::Float64, false)]);
        let udaf = context
            .state()
            .aggregate_functions()
            .get("approx_percentile_cont")
            .cloned()
            .expect("registered");
        let exprs: Vec<Arc<dyn PhysicalExpr>> =
            vec![col("value", &schema).expect("column"), lit(0.5_f64)];
        let return_field = Arc::new(Field::new("p", DataType::Float64, true));
        let expr_fields: Vec<FieldRef> = vec![
            Arc::new(Field::new("value", DataType::Float64, false)),
            Arc::new(Field::new("lit", DataType::Float64, false)),
        ];
        let args = AccumulatorArgs {
            return_field,
            schema: &schema,
            ignore_nulls: false,
            order_bys: &[],
            is_reversed: false,
            name: "p",
            is_distinct: false,
            exprs: &exprs,
            expr_fields: &expr_fields,
        };
        udaf.accumulator(args).expect("accumulator")
    }

    /// Partial states of `parts` skewed, overlapping samples, as partitions would send them.
    fn partial_states(context: &SessionContext, parts: usize) -> Vec<Vec<ArrayRef>> {
        (0..parts)
            .map(|part| {
                let values: Vec<f64> = (0..5_000)
                    .map(|i| {
                        let x = (i * 7_919 + part * 104_729) % 10_007;
                        (x as f64).powf(1.0 + part as f64 / 10.0) / 3.0
                    })
                    .collect();
                let mut partial = median_accumulator(context);
                partial
                    .update_batch(&[Arc::new(Float64Array::from(values))])
                    .expect("update");
                partial
                    .state()
                    .expect("state")
                    .iter()
                    .map(|value| value.to_array().expect("array"))
                    .collect()
            })
            .collect()
    }

    /// The median after merging `states` one call each, in the order of `order`.
    fn merged_in(context: &SessionContext, states: &[Vec<ArrayRef>], order: &[usize]) -> f64 {
        let mut last = median_accumulator(context);
        for &index in order {
            last.merge_batch(&states[index]).expect("merge");
        }
        match last.evaluate().expect("evaluate") {
            ScalarValue::Float64(Some(value)) => value,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn merge_order_no_longer_changes_the_answer() {
        let orders = [
            vec![0, 1, 2, 3, 4, 5],
            vec![5, 4, 3, 2, 1, 0],
            vec![2, 5, 0, 3, 1, 4],
        ];
        let plain = SessionContext::new();
        let states = partial_states(&plain, 6);
        let answers: Vec<f64> = orders
            .iter()
            .map(|order| merged_in(&plain, &states, order))
            .collect();
        assert!(
            answers.iter().any(|a| a.to_bits() != answers[0].to_bits()),
            "DataFusion's own merge was order-independent on this data ({answers:?}): the test \
             no longer shows what the wrapper fixes"
        );

        let canonical = SessionContext::new();
        register(&canonical).expect("register");
        let answers: Vec<f64> = orders
            .iter()
            .map(|order| merged_in(&canonical, &states, order))
            .collect();
        for answer in &answers {
            assert_eq!(answer.to_bits(), answers[0].to_bits(), "{answers:?}");
        }
    }
}
