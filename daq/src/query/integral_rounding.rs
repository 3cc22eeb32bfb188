//! Rounding an integer is a no-op: `floor(micro_time_ps / 50)` should not pay for it.
//!
//! The histogram query every TCSPC user writes, `GROUP BY floor(micro_time_ps / 50)`, divides
//! integers; DataFusion then casts the quotient to a float for `floor`, and calls `floor` once
//! per row (a tenth of the query's time on 10 M photons). An integer cast to a float is already
//! integral (every float beyond 2^53 is), so `floor`, `ceil`, `trunc` and one-argument `round`
//! of such a cast return the cast unchanged. This analyzer rule drops them, keeping each
//! expression's name so the plan's schema does not change.

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, DFSchemaRef, Result};
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::expr::{Cast, ScalarFunction};
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::utils::merge_schema;
use datafusion::logical_expr::{Expr, ExprSchemable, LogicalPlan};
use datafusion::optimizer::AnalyzerRule;

/// Functions that return an integral float unchanged.
const ROUNDING: [&str; 4] = ["floor", "ceil", "trunc", "round"];

/// Adds the rule to `context`'s analyzer, after type coercion has placed the casts and before
/// the optimizer (whose common-subexpression pass would hide them behind columns).
pub fn register(context: &SessionContext) {
    context.add_analyzer_rule(Arc::new(IntegralRounding));
}

/// Drops rounding functions applied to integers cast to floats.
#[derive(Debug, Default)]
pub struct IntegralRounding;

impl AnalyzerRule for IntegralRounding {
    fn name(&self) -> &str {
        "flowdaq_integral_rounding"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        Ok(plan.transform_up_with_subqueries(rewrite_node)?.data)
    }
}

/// Rewrites the expressions of one plan node, keeping their names.
fn rewrite_node(plan: LogicalPlan) -> Result<Transformed<LogicalPlan>> {
    if plan.inputs().is_empty() {
        return Ok(Transformed::no(plan));
    }
    let schema: DFSchemaRef = Arc::new(merge_schema(&plan.inputs()));
    let names = NamePreserver::new(&plan);
    plan.map_expressions(|expr| {
        let name = names.save(&expr);
        let rewritten = expr.transform_up(|expr| drop_integral_rounding(expr, &schema))?;
        Ok(Transformed::new_transformed(
            name.restore(rewritten.data),
            rewritten.transformed,
        ))
    })
}

/// `expr` without its rounding function when that rounds an integer cast to a float.
fn drop_integral_rounding(expr: Expr, schema: &DFSchema) -> Result<Transformed<Expr>> {
    let Expr::ScalarFunction(ScalarFunction { func, args }) = &expr else {
        return Ok(Transformed::no(expr));
    };
    if !ROUNDING.contains(&func.name()) || args.len() != 1 {
        return Ok(Transformed::no(expr));
    }
    let Expr::Cast(Cast { expr: inner, field }) = &args[0] else {
        return Ok(Transformed::no(expr));
    };
    if !field.data_type().is_floating() || !inner.get_type(schema)?.is_integer() {
        return Ok(Transformed::no(expr));
    }
    Ok(Transformed::yes(args[0].clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Float64Array, Int32Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    /// A context with a small `photons` table, with the rule or without it.
    fn context_with_table(with_rule: bool) -> SessionContext {
        let context = SessionContext::new();
        if with_rule {
            register(&context);
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("micro_time_ps", DataType::Int32, true),
            Field::new("volts", DataType::Float64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int32Array::from(vec![
                    Some(-101),
                    Some(-50),
                    Some(-1),
                    Some(0),
                    Some(49),
                    Some(50),
                    Some(2_147_483_647),
                    None,
                ])),
                Arc::new(Float64Array::from(vec![
                    Some(-1.5),
                    Some(-0.5),
                    Some(0.25),
                    Some(0.5),
                    Some(1.5),
                    Some(2.49),
                    Some(1e300),
                    None,
                ])),
            ],
        )
        .expect("batch");
        context.register_batch("photons", batch).expect("register");
        context
    }

    async fn run(context: &SessionContext, sql: &str) -> Vec<RecordBatch> {
        let frame = context.sql(sql).await.expect("plan");
        frame.collect().await.expect("run")
    }

    async fn plan_text(context: &SessionContext, sql: &str) -> String {
        let frame = context.sql(sql).await.expect("plan");
        let plan = frame.into_optimized_plan().expect("optimize");
        let text = plan.display_indent().to_string();
        text
    }

    #[tokio::test]
    async fn rounding_an_integer_is_dropped_and_gives_the_same_answers() {
        let context = context_with_table(true);
        let sql = "SELECT floor(micro_time_ps / 50) AS f, ceil(micro_time_ps / 50) AS c, \
                   trunc(micro_time_ps / 7) AS t FROM photons";
        let plan = plan_text(&context, sql).await;
        for name in ["floor", "ceil", "trunc"] {
            assert!(
                !plan.contains(&format!("{name}(")),
                "{name} left in:\n{plan}"
            );
        }
        let without_rule = run(&context_with_table(false), sql).await;
        assert_eq!(
            run(&context, sql).await,
            without_rule,
            "same names, types and values"
        );
    }

    #[tokio::test]
    async fn rounding_a_float_or_to_digits_stays() {
        let context = context_with_table(true);
        let plan = plan_text(
            &context,
            "SELECT floor(volts) AS f, round(micro_time_ps, 2) AS r, \
             ceil(CAST(volts AS DOUBLE)) AS c FROM photons",
        )
        .await;
        assert!(plan.contains("floor("), "{plan}");
        assert!(plan.contains("round("), "{plan}");
        assert!(plan.contains("ceil("), "{plan}");
    }

    #[tokio::test]
    async fn a_grouped_histogram_keeps_its_column_names() {
        let context = context_with_table(true);
        let batches = run(
            &context,
            "SELECT floor(micro_time_ps / 50), count(*) FROM photons \
             GROUP BY floor(micro_time_ps / 50) ORDER BY 1",
        )
        .await;
        let schema = batches[0].schema();
        assert_eq!(
            schema.field(0).name(),
            "floor(photons.micro_time_ps / Int64(50))"
        );
        assert_eq!(schema.field(0).data_type(), &DataType::Float64);
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(
            rows, 6,
            "quotients -2, -1, 0 (three rows), 1, 42949672 and NULL"
        );
    }
}
