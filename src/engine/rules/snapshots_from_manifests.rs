//! `DISTINCT snapshot` and `count(*)` per snapshot, answered from the manifests.
//!
//! The manifests list every snapshot with its row count per table, so a grouping by
//! `snapshot` alone whose aggregates are all `count(*)` (or none) over a `_history`
//! table needs no file opened: the rule puts the values in place of the aggregate. The
//! answer cannot change: the manifest's row count is the number of rows its files hold
//! (the writer counts what it wrote), and filters on `snapshot` are applied to the
//! manifests' snapshots exactly as the scan applies them to its files (a filter that is
//! NULL for a snapshot drops it).

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::Field;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, DFSchema};
use datafusion::datasource::source_as_provider;
use datafusion::error::Result as DfResult;
use datafusion::functions_aggregate::count::Count;
use datafusion::logical_expr::expr_rewriter::unnormalize_cols;
use datafusion::logical_expr::{EmptyRelation, Expr, LogicalPlan, Projection, Values};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};
use datafusion::scalar::ScalarValue;

use crate::engine::catalog::SnapshotTable;
use crate::engine::options::{MdesnapOptions, Switch};
use crate::schema::{SNAPSHOT_COLUMN, UTC};

/// Answers a grouping by `snapshot` alone over a `_history` table whose aggregates are
/// all `count(*)`, or none (`SELECT DISTINCT snapshot FROM machines_history`, how "the
/// last two snapshots" is written; a daily row count), from the manifests instead of
/// one row per machine of every file: a metadata-only query, as Spark's
/// `OptimizeMetadataOnlyQuery` does for partition columns. Only when the scan reads no
/// column but `snapshot` and every filter it holds is on `snapshot`; otherwise the plan
/// is left as it is.
#[derive(Debug, Default)]
pub struct SnapshotsFromManifests;

/// `count(*)` (DataFusion's `count` of a non-null literal), with no DISTINCT, FILTER or
/// ORDER BY.
fn is_count_star(e: &Expr) -> bool {
    let e = match e {
        Expr::Alias(a) => a.expr.as_ref(),
        e => e,
    };
    let Expr::AggregateFunction(f) = e else {
        return false;
    };
    let p = &f.params;
    (f.func.inner().as_ref() as &dyn Any).is::<Count>()
        && !p.distinct
        && p.filter.is_none()
        && p.order_by.is_empty()
        && matches!(p.args.as_slice(), [Expr::Literal(v, _)] if !v.is_null())
}

impl OptimizerRule for SnapshotsFromManifests {
    fn name(&self) -> &str {
        "snapshots_from_manifests"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        config: &dyn OptimizerConfig,
    ) -> DfResult<Transformed<LogicalPlan>> {
        if !MdesnapOptions::from_config(&config.options()).on(Switch::SnapshotsFromManifests) {
            return Ok(Transformed::no(plan));
        }
        let LogicalPlan::Aggregate(aggregate) = &plan else {
            return Ok(Transformed::no(plan));
        };
        let LogicalPlan::TableScan(scan) = aggregate.input.as_ref() else {
            return Ok(Transformed::no(plan));
        };
        let only_snapshot = |e: &Expr| matches!(e, Expr::Column(c) if c.name == SNAPSHOT_COLUMN);
        if !aggregate.aggr_expr.iter().all(is_count_star)
            || aggregate.group_expr.len() != 1
            || !aggregate.group_expr.iter().all(only_snapshot)
            || scan.fetch.is_some()
            || scan.projected_schema.fields().len() > 1
            || scan
                .projected_schema
                .fields()
                .iter()
                .any(|f| f.name() != SNAPSHOT_COLUMN)
        {
            return Ok(Transformed::no(plan));
        }
        let Ok(provider) = source_as_provider(&scan.source) else {
            return Ok(Transformed::no(plan));
        };
        let Some(table) = provider.downcast_ref::<SnapshotTable>() else {
            return Ok(Transformed::no(plan));
        };
        // The scan's filters name the table; the files' partition values do not.
        let filters = unnormalize_cols(scan.filters.iter().cloned());
        let Some(snapshots) = table.rows_per_snapshot(&filters)? else {
            return Ok(Transformed::no(plan));
        };
        // Values with the aggregate's columns unqualified, then a projection giving each
        // its qualifier back: the plan above sees the aggregate's own schema.
        let fields: Vec<Field> = aggregate
            .schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        let schema = Arc::new(DFSchema::from_unqualified_fields(
            fields.into(),
            HashMap::new(),
        )?);
        let counts = aggregate.aggr_expr.len();
        let rows = if snapshots.is_empty() {
            LogicalPlan::EmptyRelation(EmptyRelation {
                produce_one_row: false,
                schema,
            })
        } else {
            let values = snapshots
                .into_iter()
                .map(|(micros, rows)| {
                    let snapshot =
                        ScalarValue::TimestampMicrosecond(Some(micros), Some(UTC.into()));
                    let count = ScalarValue::Int64(Some(i64::try_from(rows).unwrap_or(i64::MAX)));
                    let mut row = vec![Expr::Literal(snapshot, None)];
                    row.extend((0..counts).map(|_| Expr::Literal(count.clone(), None)));
                    row
                })
                .collect();
            LogicalPlan::Values(Values { schema, values })
        };
        let names = aggregate
            .schema
            .iter()
            .map(|(qualifier, f)| {
                Expr::Column(Column::new_unqualified(f.name()))
                    .alias_qualified(qualifier.cloned(), f.name())
            })
            .collect();
        let projected = Projection::try_new(names, Arc::new(rows))?;
        Ok(Transformed::yes(LogicalPlan::Projection(projected)))
    }
}
