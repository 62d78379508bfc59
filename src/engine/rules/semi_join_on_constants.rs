//! `x IN (SELECT ...)` of a few constants, answered while planning.
//!
//! "The last two snapshots" is `snapshot IN (SELECT snapshot FROM (SELECT DISTINCT
//! snapshot FROM machines_history) ORDER BY snapshot DESC LIMIT 2)`. The catalog answers
//! the distinct snapshots from the manifests (`SnapshotsFromManifests`), so the subquery
//! is a sort of constants, but DataFusion still plans it as a semi-join: every row of the
//! scan is hashed and looked up (24 ms of compute in query 02 of the suite, for 215,000
//! rows against two values). [`SemiJoinOnConstants`] works the subquery out and writes
//! `x IN (value, ...)` instead, which the scan turns into the files of those snapshots.

use std::cmp::Ordering;

use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, NullEquality};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{Expr, Filter, JoinType, LogicalPlan, SortExpr, lit};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};
use datafusion::scalar::ScalarValue;

use crate::engine::options::{MdesnapOptions, Switch};

/// The most rows a subquery may have (before its `LIMIT`) to be worked out while planning.
const MAX_ROWS: usize = 10_000;

/// The most values the `IN` list may get.
const MAX_VALUES: usize = 1_000;

/// Rewrites a left semi-join on one key, with no other condition, whose right side is
/// constants (`VALUES`, aliases, projections of columns, `ORDER BY` columns and `LIMIT`)
/// into a filter `left_key IN (values)`. Anything else is left as it is.
#[derive(Debug, Default)]
pub(crate) struct SemiJoinOnConstants;

impl OptimizerRule for SemiJoinOnConstants {
    fn name(&self) -> &str {
        "semi_join_on_constants"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        config: &dyn OptimizerConfig,
    ) -> DfResult<Transformed<LogicalPlan>> {
        if !MdesnapOptions::from_config(&config.options()).on(Switch::SemiJoinOnConstants) {
            return Ok(Transformed::no(plan));
        }
        let LogicalPlan::Join(join) = &plan else {
            return Ok(Transformed::no(plan));
        };
        let [(left_key, Expr::Column(right_key))] = join.on.as_slice() else {
            return Ok(Transformed::no(plan));
        };
        if join.join_type != JoinType::LeftSemi
            || join.filter.is_some()
            || join.null_equality != NullEquality::NullEqualsNothing
            || join.null_aware
        {
            return Ok(Transformed::no(plan));
        }
        let Some(rows) = rows(&join.right) else {
            return Ok(Transformed::no(plan));
        };
        let Ok(at) = join.right.schema().index_of_column(right_key) else {
            return Ok(Transformed::no(plan));
        };
        // A null matches nothing in an equi-join.
        let values: Vec<ScalarValue> = rows
            .into_iter()
            .filter_map(|row| row.into_iter().nth(at))
            .filter(|v| !v.is_null())
            .collect();
        if values.len() > MAX_VALUES {
            return Ok(Transformed::no(plan));
        }
        let predicate = if values.is_empty() {
            lit(false)
        } else {
            left_key
                .clone()
                .in_list(values.into_iter().map(lit).collect(), false)
        };
        let filter = Filter::try_new(predicate, join.left.clone())?;
        Ok(Transformed::yes(LogicalPlan::Filter(filter)))
    }
}

/// The rows `plan` gives, when it is made of constants only and small; each row holds
/// one value per column of `plan`'s schema.
fn rows(plan: &LogicalPlan) -> Option<Vec<Vec<ScalarValue>>> {
    match plan {
        LogicalPlan::Values(values) => {
            if values.values.len() > MAX_ROWS {
                return None;
            }
            values
                .values
                .iter()
                .map(|row| {
                    row.iter()
                        .map(|e| match e {
                            Expr::Literal(v, _) => Some(v.clone()),
                            _ => None,
                        })
                        .collect()
                })
                .collect()
        }
        LogicalPlan::SubqueryAlias(alias) => rows(&alias.input),
        LogicalPlan::Projection(projection) => {
            let input = projection.input.schema();
            let picks = projection
                .expr
                .iter()
                .map(|e| column_of(e).and_then(|c| input.index_of_column(c).ok()))
                .collect::<Option<Vec<usize>>>()?;
            let rows = rows(&projection.input)?;
            Some(
                rows.into_iter()
                    .map(|row| picks.iter().map(|&i| row[i].clone()).collect())
                    .collect(),
            )
        }
        LogicalPlan::Sort(sort) => {
            let input = sort.input.schema();
            let keys = sort
                .expr
                .iter()
                .map(|s| {
                    let at = input.index_of_column(column_of(&s.expr)?).ok()?;
                    Some((at, s))
                })
                .collect::<Option<Vec<(usize, &SortExpr)>>>()?;
            let mut rows = rows(&sort.input)?;
            // Values that cannot be compared (of different types) leave the plan as it is.
            let mut comparable = true;
            rows.sort_by(|a, b| {
                for &(at, s) in &keys {
                    match compare(&a[at], &b[at], s) {
                        Some(Ordering::Equal) => {}
                        Some(o) => return o,
                        None => {
                            comparable = false;
                            return Ordering::Equal;
                        }
                    }
                }
                Ordering::Equal
            });
            if !comparable {
                return None;
            }
            if let Some(fetch) = sort.fetch {
                rows.truncate(fetch);
            }
            Some(rows)
        }
        LogicalPlan::Limit(limit) => {
            let skip = match limit.skip.as_deref() {
                None => 0,
                Some(Expr::Literal(ScalarValue::Int64(Some(n)), _)) => usize::try_from(*n).ok()?,
                Some(_) => return None,
            };
            let fetch = match limit.fetch.as_deref() {
                None => usize::MAX,
                Some(Expr::Literal(ScalarValue::Int64(Some(n)), _)) => usize::try_from(*n).ok()?,
                Some(Expr::Literal(ScalarValue::Int64(None), _)) => usize::MAX,
                Some(_) => return None,
            };
            Some(
                rows(&limit.input)?
                    .into_iter()
                    .skip(skip)
                    .take(fetch)
                    .collect(),
            )
        }
        _ => None,
    }
}

/// The column `e` is, possibly under an alias.
fn column_of(e: &Expr) -> Option<&Column> {
    match e {
        Expr::Column(c) => Some(c),
        Expr::Alias(a) => column_of(&a.expr),
        _ => None,
    }
}

/// `a` against `b` in the order `sort` asks for; `None` when they cannot be compared.
fn compare(a: &ScalarValue, b: &ScalarValue, sort: &SortExpr) -> Option<Ordering> {
    let ordering = match (a.is_null(), b.is_null()) {
        (true, true) => return Some(Ordering::Equal),
        (true, false) => return Some(null_first(sort)),
        (false, true) => return Some(null_first(sort).reverse()),
        (false, false) => a.partial_cmp(b)?,
    };
    Some(if sort.asc {
        ordering
    } else {
        ordering.reverse()
    })
}

/// Where a null goes against a value: first or last.
fn null_first(sort: &SortExpr) -> Ordering {
    if sort.nulls_first {
        Ordering::Less
    } else {
        Ordering::Greater
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionContext;

    use super::*;

    /// `sql`'s rows over `t(k, v)`, with the rule or without it, and its logical plan.
    async fn run(sql: &str, with_rule: bool) -> (String, String) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("v", DataType::Int64, false),
        ]));
        let k = Int64Array::from(vec![Some(1), Some(2), Some(3), None, Some(3), Some(4)]);
        let v = Int64Array::from(vec![10, 20, 30, 40, 50, 60]);
        let batch = RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(k), Arc::new(v)])
            .expect("batch");
        let ctx = SessionContext::new();
        if with_rule {
            ctx.add_optimizer_rule(Arc::new(SemiJoinOnConstants));
        }
        let table = MemTable::try_new(schema, vec![vec![batch]]).expect("table");
        ctx.register_table("t", Arc::new(table)).expect("registers");
        let df = ctx.sql(sql).await.expect("plans");
        let plan = df.logical_plan().clone();
        let optimized = ctx.state().optimize(&plan).expect("optimizes");
        let batches = df.collect().await.expect("runs");
        let text = arrow::util::pretty::pretty_format_batches(&batches).expect("formats");
        (text.to_string(), optimized.display_indent().to_string())
    }

    #[tokio::test]
    async fn a_subquery_of_constants_becomes_a_list_with_the_same_rows() {
        let values = "(VALUES (3), (1), (NULL), (2)) c(x)";
        for (subquery, expected) in [
            // Descending, nulls first: the null and 3; the null matches nothing.
            (
                format!("SELECT x FROM {values} ORDER BY x DESC NULLS FIRST LIMIT 2"),
                vec![30, 50],
            ),
            // Ascending, nulls last by default.
            (
                format!("SELECT x FROM {values} ORDER BY x LIMIT 2"),
                vec![10, 20],
            ),
            (
                format!("SELECT x FROM {values} ORDER BY x LIMIT 1 OFFSET 1"),
                vec![20],
            ),
            (
                format!("SELECT x AS y FROM {values} ORDER BY y DESC LIMIT 1 OFFSET 9"),
                vec![],
            ),
            (format!("SELECT x FROM {values}"), vec![10, 20, 30, 50]),
        ] {
            let sql = format!("SELECT v FROM t WHERE k IN ({subquery}) ORDER BY v");
            let (planned, joined) = run(&sql, false).await;
            let (listed, plan) = run(&sql, true).await;
            assert!(joined.contains("LeftSemi"), "{joined}");
            assert!(
                !plan.contains("LeftSemi") && !plan.contains("Values"),
                "{plan}"
            );
            assert_eq!(planned, listed, "{sql}");
            let got: Vec<i64> = listed
                .lines()
                .filter_map(|l| l.trim_matches(['|', ' ']).parse().ok())
                .collect();
            assert_eq!(got, expected, "{sql}");
        }
    }

    #[tokio::test]
    async fn a_subquery_reading_a_table_stays_a_join() {
        for sql in [
            "SELECT v FROM t WHERE k IN (SELECT k FROM t WHERE v > 25) ORDER BY v",
            // An expression, not a column of the constants.
            "SELECT v FROM t WHERE k IN (SELECT x + 1 FROM (VALUES (1), (2)) c(x)) ORDER BY v",
        ] {
            let (planned, _) = run(sql, false).await;
            let (got, plan) = run(sql, true).await;
            assert!(plan.contains("LeftSemi"), "{plan}");
            assert_eq!(planned, got, "{sql}");
        }
    }
}
