//! Which Parquet files a query's filters rule out, from the catalog alone.
//!
//! A server that runs for weeks has thousands of files per table, one per table, day, run and
//! flush. A data scientist asks about one run, or the last hour. The catalog knows each file's
//! run partition and arrival-time range, so the files that cannot hold a matching row are left
//! out of the scan before any of them is opened. The rules are conservative: a filter that is
//! not understood prunes nothing, and DataFusion still applies every filter to the rows read
//! (the provider reports them as inexact), so pruning can only save work, never change a result.

use std::collections::BTreeSet;

use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator};

use crate::catalog::CatalogFile;

/// The run partition of files whose rows have no run (tables without one, or a null run_id).
const NO_RUN: &str = "_none";

/// What the filters of one scan allow, as far as the catalog can tell.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct FilePruning {
    /// `run_id` must be one of these (`None`: any run).
    runs: Option<BTreeSet<String>>,
    /// Inclusive bounds on `arrival_time_ns`, in ns since the epoch.
    min_arrival_ns: Option<i64>,
    max_arrival_ns: Option<i64>,
}

impl FilePruning {
    /// The bounds implied by `filters`, which all hold (DataFusion passes a scan the conjuncts
    /// of its WHERE clause; `AND` inside one is split here too).
    pub(crate) fn from_filters(filters: &[Expr]) -> FilePruning {
        let mut pruning = FilePruning::default();
        for filter in filters {
            pruning.add(filter);
        }
        pruning
    }

    /// Whether `file` may hold a row that passes the filters.
    pub(crate) fn keeps(&self, file: &CatalogFile) -> bool {
        if let Some(runs) = &self.runs {
            if file.run_id != NO_RUN && !runs.contains(&file.run_id) {
                return false;
            }
        }
        // A file without arrival times (min > max) has no known range: kept.
        if file.min_arrival_time_ns <= file.max_arrival_time_ns {
            if self
                .min_arrival_ns
                .is_some_and(|lo| file.max_arrival_time_ns < lo)
            {
                return false;
            }
            if self
                .max_arrival_ns
                .is_some_and(|hi| file.min_arrival_time_ns > hi)
            {
                return false;
            }
        }
        true
    }

    fn add(&mut self, filter: &Expr) {
        if let Some(runs) = runs_of(filter) {
            self.only_runs(runs);
            return;
        }
        match filter {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => match op {
                Operator::And => {
                    self.add(left);
                    self.add(right);
                }
                _ => self.add_comparison(left, *op, right),
            },
            Expr::Between(Between {
                expr,
                negated: false,
                low,
                high,
            }) if is_column(expr, "arrival_time_ns") => {
                if let (Some(lo), Some(hi)) = (timestamp_ns(low), timestamp_ns(high)) {
                    self.at_least(lo);
                    self.at_most(hi);
                }
            }
            _ => {}
        }
    }

    /// `left op right`, with the column on either side.
    fn add_comparison(&mut self, left: &Expr, op: Operator, right: &Expr) {
        let (column, op, value) = match (left, right) {
            (Expr::Column(_), Expr::Literal(..)) => (left, op, right),
            (Expr::Literal(..), Expr::Column(_)) => match op.swap() {
                Some(swapped) => (right, swapped, left),
                None => return,
            },
            _ => return,
        };
        if is_column(column, "arrival_time_ns") {
            let Some(t) = timestamp_ns(value) else {
                return;
            };
            match op {
                Operator::Eq => {
                    self.at_least(t);
                    self.at_most(t);
                }
                Operator::Gt => self.at_least(t.saturating_add(1)),
                Operator::GtEq => self.at_least(t),
                Operator::Lt => self.at_most(t.saturating_sub(1)),
                Operator::LtEq => self.at_most(t),
                _ => {}
            }
        }
    }

    fn only_runs(&mut self, runs: BTreeSet<String>) {
        self.runs = Some(match self.runs.take() {
            Some(before) => before.intersection(&runs).cloned().collect(),
            None => runs,
        });
    }

    fn at_least(&mut self, t: i64) {
        self.min_arrival_ns = Some(self.min_arrival_ns.map_or(t, |lo| lo.max(t)));
    }

    fn at_most(&mut self, t: i64) {
        self.max_arrival_ns = Some(self.max_arrival_ns.map_or(t, |hi| hi.min(t)));
    }
}

/// The runs a filter allows, if it only allows some: `run_id = 'x'`, `run_id IN (...)`, and
/// `OR`s of those (DataFusion rewrites a short `IN` list into one).
fn runs_of(filter: &Expr) -> Option<BTreeSet<String>> {
    match filter {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Eq,
            right,
        }) => match (left.as_ref(), right.as_ref()) {
            (column, value) | (value, column) if is_column(column, "run_id") => {
                string(value).map(|run| BTreeSet::from([run]))
            }
            _ => None,
        },
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Or,
            right,
        }) => {
            let mut runs = runs_of(left)?;
            runs.extend(runs_of(right)?);
            Some(runs)
        }
        Expr::InList(list) if !list.negated && is_column(&list.expr, "run_id") => {
            list.list.iter().map(string).collect()
        }
        _ => None,
    }
}

fn is_column(expr: &Expr, name: &str) -> bool {
    matches!(expr, Expr::Column(c) if c.name == name)
}

/// A non-null string literal.
fn string(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Literal(ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s)), _) => {
            Some(s.clone())
        }
        _ => None,
    }
}

/// A non-null timestamp literal in ns since the epoch (the optimizer has folded casts of
/// strings and `now()` into such literals by the time a scan sees the filters).
fn timestamp_ns(expr: &Expr) -> Option<i64> {
    let Expr::Literal(value, _) = expr else {
        return None;
    };
    match value {
        ScalarValue::TimestampNanosecond(Some(v), _) => Some(*v),
        ScalarValue::TimestampMicrosecond(Some(v), _) => v.checked_mul(1_000),
        ScalarValue::TimestampMillisecond(Some(v), _) => v.checked_mul(1_000_000),
        ScalarValue::TimestampSecond(Some(v), _) => v.checked_mul(1_000_000_000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::{col, lit};

    fn file(run: &str, min_ns: i64, max_ns: i64) -> CatalogFile {
        CatalogFile {
            table: "photons".into(),
            path: format!("{run}-{min_ns}.parquet"),
            rows: 1,
            size_bytes: 1,
            min_arrival_time_ns: min_ns,
            max_arrival_time_ns: max_ns,
            run_id: run.into(),
            date: "2026-12-01".into(),
        }
    }

    fn ts(ns: i64) -> Expr {
        lit(ScalarValue::TimestampNanosecond(
            Some(ns),
            Some("UTC".into()),
        ))
    }

    fn kept(filters: &[Expr], files: &[CatalogFile]) -> Vec<String> {
        let pruning = FilePruning::from_filters(filters);
        files
            .iter()
            .filter(|f| pruning.keeps(f))
            .map(|f| f.path.clone())
            .collect()
    }

    #[test]
    fn run_filters_keep_that_run_and_files_without_one() {
        let files = [file("a", 0, 9), file("b", 0, 9), file(NO_RUN, 0, 9)];
        assert_eq!(
            kept(&[col("run_id").eq(lit("a"))], &files),
            ["a-0.parquet", "_none-0.parquet"]
        );
        assert_eq!(
            kept(&[lit("b").eq(col("run_id"))], &files),
            ["b-0.parquet", "_none-0.parquet"]
        );
        let listed = col("run_id").in_list(vec![lit("a"), lit("b")], false);
        assert_eq!(kept(&[listed], &files).len(), 3);
        let neither = [col("run_id").eq(lit("a")), col("run_id").eq(lit("b"))];
        assert_eq!(kept(&neither, &files), ["_none-0.parquet"]);
        let either = col("run_id").eq(lit("a")).or(lit("c").eq(col("run_id")));
        assert_eq!(kept(&[either], &files), ["a-0.parquet", "_none-0.parquet"]);
        // Not understood, so nothing is pruned: negations, inequalities, an OR with another
        // column.
        for filter in [
            col("run_id").not_eq(lit("a")),
            col("run_id").in_list(vec![lit("a")], true),
            col("run_id").eq(lit("a")).or(col("seq").eq(lit(3u64))),
            col("source").eq(lit("a")),
        ] {
            assert_eq!(
                kept(std::slice::from_ref(&filter), &files).len(),
                3,
                "{filter}"
            );
        }
    }

    #[test]
    fn arrival_time_bounds_are_inclusive_and_exact_at_the_edges() {
        let files = [file("a", 0, 9), file("a", 10, 19), file("a", 20, 29)];
        let t = || col("arrival_time_ns");
        assert_eq!(kept(&[t().gt(ts(19))], &files), ["a-20.parquet"]);
        assert_eq!(kept(&[t().gt_eq(ts(19))], &files).len(), 2);
        assert_eq!(kept(&[t().lt(ts(10))], &files), ["a-0.parquet"]);
        assert_eq!(kept(&[t().lt_eq(ts(10))], &files).len(), 2);
        assert_eq!(kept(&[t().eq(ts(15))], &files), ["a-10.parquet"]);
        assert_eq!(kept(&[ts(20).lt_eq(t())], &files), ["a-20.parquet"]);
        assert_eq!(
            kept(&[t().between(ts(9), ts(10))], &files),
            ["a-0.parquet", "a-10.parquet"]
        );
        assert_eq!(
            kept(&[t().gt(ts(5)).and(t().lt(ts(15)))], &files),
            ["a-0.parquet", "a-10.parquet"]
        );
        let micros = lit(ScalarValue::TimestampMicrosecond(Some(0), None));
        assert_eq!(kept(&[t().gt(micros)], &files).len(), 3);
        // Past every file, and a file without arrival times (min > max) is always kept.
        let unknown = file("a", i64::MAX, i64::MIN);
        assert_eq!(kept(&[t().gt(ts(100))], &[unknown]).len(), 1);
        assert!(kept(&[t().gt(ts(100))], &files).is_empty());
        // Bounds on other columns or of other types prune nothing.
        assert_eq!(kept(&[t().gt(lit(100i64))], &files).len(), 3);
        assert_eq!(kept(&[col("seq").gt(ts(100))], &files).len(), 3);
    }
}
