//! Equality with a short string literal, decided on whole `Utf8View` views.
//!
//! A `Utf8View` value of at most 12 bytes lives inside its 16-byte view (its length, then
//! its bytes, zero-padded), so a column equals such a literal exactly where its view
//! equals the literal's view: one 128-bit comparison a row. arrow-ord 59 instead branches
//! on each row (same view, length, prefix, inlined) whenever the array holds any longer
//! value, about three times slower (docs/benchmarks-history.md, the fourth round); in a daily
//! trend with `count(*) FILTER (WHERE health_status = 'Active')` those comparisons were a
//! fifth of the CPU.
//!
//! [`ShortLiteralEquality`] swaps `x = 'literal'` and `x <> 'literal'`, `x` any
//! `Utf8View` expression, for [`ViewEquality`] in `FilterExec` predicates and aggregate
//! `FILTER` clauses once planning is done. What the scan keeps of a filter to prune files
//! and row groups by their statistics is left as DataFusion planned it, and so is every
//! other expression.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::builder::make_view;
use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use arrow::buffer::BooleanBuffer;
use arrow::datatypes::{DataType, Schema};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::config::ConfigOptions;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{ColumnarValue, Operator};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{BinaryExpr, Literal};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};
use datafusion::scalar::ScalarValue;

use crate::engine::options::{MdesnapOptions, Switch};

/// The longest value a view holds inline.
const INLINE_BYTES: usize = 12;

/// `expr = 'literal'` (or `<>`), the literal at most [`INLINE_BYTES`] long: a `Utf8View`
/// array is compared view by view; anything else goes to the comparison as planned.
#[derive(Debug, Eq)]
pub(crate) struct ViewEquality {
    /// The `BinaryExpr` this replaces: shown in plans, and evaluated for any input that
    /// is not a `Utf8View` array.
    planned: Arc<dyn PhysicalExpr>,
    /// The side that is not the literal.
    value: Arc<dyn PhysicalExpr>,
    /// The literal's view.
    view: u128,
    /// `<>` rather than `=`.
    negated: bool,
}

impl ViewEquality {
    /// `Some` when `expr` is `=` or `<>` between a `Utf8View` expression (over rows of
    /// `schema`) and a non-null string literal of at most [`INLINE_BYTES`] bytes.
    pub(crate) fn of(expr: &Arc<dyn PhysicalExpr>, schema: &Schema) -> Option<Self> {
        let found = Self::from_planned(expr)?;
        let is_view = found.value.data_type(schema).ok() == Some(DataType::Utf8View);
        is_view.then_some(found)
    }

    /// [`ViewEquality::of`] without the type check: for a comparison whose children were
    /// only renumbered.
    fn from_planned(expr: &Arc<dyn PhysicalExpr>) -> Option<Self> {
        let binary = expr.downcast_ref::<BinaryExpr>()?;
        let negated = match binary.op() {
            Operator::Eq => false,
            Operator::NotEq => true,
            _ => return None,
        };
        let (value, literal) = match (
            binary.left().downcast_ref::<Literal>(),
            binary.right().downcast_ref::<Literal>(),
        ) {
            (None, Some(l)) => (binary.left(), l),
            (Some(l), None) => (binary.right(), l),
            _ => return None,
        };
        let text = match literal.value() {
            ScalarValue::Utf8View(Some(s))
            | ScalarValue::Utf8(Some(s))
            | ScalarValue::LargeUtf8(Some(s)) => s,
            _ => return None,
        };
        if text.len() > INLINE_BYTES {
            return None;
        }
        Some(ViewEquality {
            planned: Arc::clone(expr),
            value: Arc::clone(value),
            view: make_view(text.as_bytes(), 0, 0),
            negated,
        })
    }
}

impl PartialEq for ViewEquality {
    fn eq(&self, other: &Self) -> bool {
        self.planned.eq(&other.planned)
    }
}

impl Hash for ViewEquality {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.planned.hash(state);
    }
}

impl fmt::Display for ViewEquality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.planned, f)
    }
}

impl PhysicalExpr for ViewEquality {
    fn data_type(&self, input_schema: &Schema) -> DfResult<DataType> {
        self.planned.data_type(input_schema)
    }

    fn nullable(&self, input_schema: &Schema) -> DfResult<bool> {
        self.planned.nullable(input_schema)
    }

    fn evaluate(&self, batch: &RecordBatch) -> DfResult<ColumnarValue> {
        if let ColumnarValue::Array(array) = self.value.evaluate(batch)?
            && let Some(strings) = array.as_string_view_opt()
        {
            let views = strings.views();
            let (view, negated) = (self.view, self.negated);
            let bits = BooleanBuffer::collect_bool(views.len(), |i| (views[i] == view) != negated);
            let result = BooleanArray::new(bits, strings.nulls().cloned());
            return Ok(ColumnarValue::Array(Arc::new(result)));
        }
        self.planned.evaluate(batch)
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        self.planned.children()
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> DfResult<Arc<dyn PhysicalExpr>> {
        let planned = Arc::clone(&self.planned).with_new_children(children)?;
        Ok(match ViewEquality::from_planned(&planned) {
            Some(v) => Arc::new(v),
            None => planned,
        })
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.planned.fmt_sql(f)
    }
}

/// Puts [`ViewEquality`] in place of short-literal comparisons in filters and aggregate
/// `FILTER` clauses; runs after DataFusion's own physical rules.
#[derive(Debug, Default)]
pub(crate) struct ShortLiteralEquality;

/// `expr`, over rows of `schema`, with each short-literal comparison in it replaced.
fn rewrite(
    expr: &Arc<dyn PhysicalExpr>,
    schema: &Schema,
) -> DfResult<Transformed<Arc<dyn PhysicalExpr>>> {
    Arc::clone(expr).transform_up(|e| {
        Ok(match ViewEquality::of(&e, schema) {
            Some(v) => Transformed::yes(Arc::new(v) as Arc<dyn PhysicalExpr>),
            None => Transformed::no(e),
        })
    })
}

/// DataFusion gives an ungrouped partial aggregate of nothing but `min` and `max` a
/// dynamic filter, which the scan below may already hold; a rebuilt aggregate would make
/// a new one and the scan's would never tighten. Such aggregates are left as they are.
fn may_hold_dynamic_filter(aggregate: &AggregateExec) -> bool {
    aggregate.group_expr().is_empty()
        && *aggregate.mode() == AggregateMode::Partial
        && aggregate.aggr_expr().iter().all(|a| {
            let name = a.fun().name();
            name.eq_ignore_ascii_case("min") || name.eq_ignore_ascii_case("max")
        })
}

impl PhysicalOptimizerRule for ShortLiteralEquality {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if !MdesnapOptions::from_config(config).on(Switch::ShortLiteralEquality) {
            return Ok(plan);
        }
        plan.transform_up(|node| {
            if let Some(filter) = node.downcast_ref::<FilterExec>() {
                let predicate = rewrite(filter.predicate(), &filter.input().schema())?;
                if predicate.transformed {
                    let filter = FilterExecBuilder::from(filter)
                        .with_predicate(predicate.data)
                        .build()?;
                    return Ok(Transformed::yes(Arc::new(filter) as Arc<dyn ExecutionPlan>));
                }
            } else if let Some(aggregate) = node.downcast_ref::<AggregateExec>()
                && !may_hold_dynamic_filter(aggregate)
            {
                let schema = aggregate.input_schema();
                let mut changed = false;
                let mut filters = Vec::with_capacity(aggregate.filter_expr().len());
                for f in aggregate.filter_expr() {
                    filters.push(match f {
                        Some(f) => {
                            let f = rewrite(f, &schema)?;
                            changed |= f.transformed;
                            Some(f.data)
                        }
                        None => None,
                    });
                }
                if changed {
                    let aggregate = AggregateExec::try_new(
                        *aggregate.mode(),
                        aggregate.group_expr().clone(),
                        aggregate.aggr_expr().to_vec(),
                        filters,
                        Arc::clone(aggregate.input()),
                        schema,
                    )?
                    .with_limit_options(aggregate.limit_options());
                    return Ok(Transformed::yes(
                        Arc::new(aggregate) as Arc<dyn ExecutionPlan>
                    ));
                }
            }
            Ok(Transformed::no(node))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "short_literal_equality"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, StringViewArray};
    use arrow::compute::kernels::cmp;
    use arrow::datatypes::Field;
    use datafusion::datasource::MemTable;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::physical_expr::expressions::{col, lit};
    use datafusion::prelude::{SessionConfig, SessionContext};

    fn strings() -> StringViewArray {
        // Inline and out-of-line values, values sharing a length or a 4-byte prefix with
        // the literals, exactly 12 and 13 bytes, multi-byte UTF-8, empty and null.
        StringViewArray::from(vec![
            Some("Active"),
            Some("High"),
            Some("None"),
            Some(""),
            None,
            Some("Activ"),
            Some("Active "),
            Some("ImpairedCommunication"),
            Some("Informational"),
            Some("Information"),
            Some("twelve bytes"),
            Some("twelve bytes!"),
            Some("héllo"),
            Some("🦀🦀🦀"),
            Some("High"),
            None,
            Some("Active"),
        ])
    }

    fn comparison(
        array: &ArrayRef,
        literal: &str,
        op: Operator,
        literal_left: bool,
    ) -> ViewEquality {
        let schema = Schema::new(vec![Field::new("s", array.data_type().clone(), true)]);
        let column = col("s", &schema).expect("column s");
        let literal = lit(ScalarValue::Utf8View(Some(literal.to_string())));
        let expr: Arc<dyn PhysicalExpr> = if literal_left {
            Arc::new(BinaryExpr::new(literal, op, column))
        } else {
            Arc::new(BinaryExpr::new(column, op, literal))
        };
        ViewEquality::of(&expr, &schema).expect("a short-literal comparison")
    }

    #[test]
    fn answers_what_arrows_comparison_answers_row_for_row() {
        let whole: ArrayRef = Arc::new(strings());
        // A slice starts its views part-way into the buffer.
        let sliced = whole.slice(3, 11);
        for array in [whole, sliced] {
            let schema = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8View, true)]));
            let batch = RecordBatch::try_new(schema, vec![Arc::clone(&array)]).expect("batch");
            for literal in [
                "Active",
                "High",
                "",
                "twelve bytes",
                "héllo",
                "🦀🦀🦀",
                "Informat",
            ] {
                let scalar = StringViewArray::new_scalar(literal);
                for (op, expected) in [
                    (Operator::Eq, cmp::eq(&array, &scalar).expect("eq")),
                    (Operator::NotEq, cmp::neq(&array, &scalar).expect("neq")),
                ] {
                    for literal_left in [false, true] {
                        let got = comparison(&array, literal, op, literal_left)
                            .evaluate(&batch)
                            .and_then(|v| v.into_array(batch.num_rows()))
                            .expect("evaluates");
                        assert_eq!(
                            got.as_boolean(),
                            &expected,
                            "{op} '{literal}' (literal on the left: {literal_left}) over {} rows",
                            array.len()
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn leaves_long_literals_other_operators_and_null_alone() {
        let schema = Schema::new(vec![Field::new("s", DataType::Utf8View, true)]);
        let column = col("s", &schema).expect("column s");
        let cases: Vec<Arc<dyn PhysicalExpr>> = vec![
            Arc::new(BinaryExpr::new(
                Arc::clone(&column),
                Operator::Eq,
                lit(ScalarValue::Utf8View(Some("thirteen byte".into()))),
            )),
            Arc::new(BinaryExpr::new(
                Arc::clone(&column),
                Operator::Lt,
                lit(ScalarValue::Utf8View(Some("High".into()))),
            )),
            Arc::new(BinaryExpr::new(
                Arc::clone(&column),
                Operator::Eq,
                lit(ScalarValue::Utf8View(None)),
            )),
            Arc::new(BinaryExpr::new(
                Arc::clone(&column),
                Operator::Eq,
                Arc::clone(&column),
            )),
        ];
        for expr in cases {
            assert!(
                ViewEquality::of(&expr, &schema).is_none(),
                "{expr} was rewritten"
            );
        }
        let plain = Schema::new(vec![Field::new("u", DataType::Utf8, true)]);
        let utf8: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(
            col("u", &plain).expect("column u"),
            Operator::Eq,
            lit(ScalarValue::Utf8(Some("High".into()))),
        ));
        assert!(
            ViewEquality::of(&utf8, &plain).is_none(),
            "a Utf8 column was rewritten"
        );
        let short: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(
            column,
            Operator::Eq,
            lit(ScalarValue::Utf8View(Some("twelve bytes".into()))),
        ));
        let rewritten = ViewEquality::of(&short, &schema).expect("twelve bytes fit a view");
        assert_eq!(
            rewritten.to_string(),
            short.to_string(),
            "plans show it as planned"
        );
    }

    /// The `ViewEquality` expressions in the predicates of filters and the `FILTER`
    /// clauses of aggregates of `plan`.
    fn rewritten(plan: &Arc<dyn ExecutionPlan>) -> usize {
        let count = |e: &Arc<dyn PhysicalExpr>| {
            let mut n = 0;
            e.apply(|x| {
                n += usize::from(x.downcast_ref::<ViewEquality>().is_some());
                Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
            })
            .expect("walks");
            n
        };
        let mut n = 0;
        if let Some(f) = plan.downcast_ref::<FilterExec>() {
            n += count(f.predicate());
        }
        if let Some(a) = plan.downcast_ref::<AggregateExec>() {
            n += a.filter_expr().iter().flatten().map(count).sum::<usize>();
        }
        n + plan.children().into_iter().map(rewritten).sum::<usize>()
    }

    async fn run(sql: &str, with_rule: bool) -> (usize, String) {
        let schema = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8View, true)]));
        let batch =
            RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(strings())]).expect("batch");
        // Two partitions, so aggregates are planned in a partial and a final step.
        let halves = vec![
            vec![batch.slice(0, 8)],
            vec![batch.slice(8, batch.num_rows() - 8)],
        ];
        let mut state = SessionStateBuilder::new()
            .with_config(SessionConfig::new().with_target_partitions(2))
            .with_default_features();
        if with_rule {
            state = state.with_physical_optimizer_rule(Arc::new(ShortLiteralEquality));
        }
        let ctx = SessionContext::new_with_state(state.build());
        let table = MemTable::try_new(schema, halves).expect("table");
        ctx.register_table("t", Arc::new(table)).expect("registers");
        let df = ctx.sql(sql).await.expect("plans");
        let plan = df
            .clone()
            .create_physical_plan()
            .await
            .expect("physical plan");
        let batches = df.collect().await.expect("runs");
        let text = arrow::util::pretty::pretty_format_batches(&batches).expect("formats");
        (rewritten(&plan), text.to_string())
    }

    #[tokio::test]
    async fn the_rule_rewrites_filters_and_aggregate_filters_and_the_answer_stays() {
        let cases = [
            (
                "SELECT s, count(*) AS n, count(*) FILTER (WHERE s = 'High') AS high, \
                 count(*) FILTER (WHERE s <> 'Active') AS not_active \
                 FROM t WHERE s <> 'None' GROUP BY s ORDER BY s NULLS FIRST",
                // The filter, and both FILTER clauses in the partial and the final step.
                5,
                "| High                  | 2 | 2    | 2          |",
            ),
            (
                "SELECT count(*) FILTER (WHERE s = 'High') AS high, max(s) AS m FROM t",
                2,
                "| 2    | 🦀🦀🦀 |",
            ),
            // An ungrouped partial min/max may hand the scan a dynamic filter: left
            // alone; only the final step's copy of the clause is rewritten.
            (
                "SELECT max(s) FILTER (WHERE s = 'High') AS m FROM t",
                1,
                "| High |",
            ),
        ];
        for (sql, rewrites, row) in cases {
            let (none, planned) = run(sql, false).await;
            let (some, fast) = run(sql, true).await;
            assert_eq!((none, some), (0, rewrites), "{sql}");
            assert_eq!(planned, fast, "{sql}");
            assert!(fast.contains(row), "{sql}: {row} in\n{fast}");
        }
    }
}
