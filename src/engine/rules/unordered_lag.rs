//! `lag()` whose output order nothing depends on, with its rows grouped, not sorted.
//!
//! Walks the plan from the top, knowing at each node whether its output's row order can
//! matter to the answer (it cannot below an aggregate of order-insensitive functions, a
//! full sort, or the counting operators, through filters, projections and merges), and
//! where it cannot, puts a `GroupedLagExec` in place of a `LagExec` over a sort. Each
//! row still gets the lag of its partition in the window's order; only the order the
//! rows leave in differs, and nothing above looks at it.
//! Off with `SET mdesnap.unordered_lag = false` or the plain engine.

use std::sync::Arc;

use datafusion::config::ConfigOptions;
use datafusion::error::Result as DfResult;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::{ExecutionPlan, InputOrderMode, replace_children_if_necessary};

use crate::engine::operators::keyed_counts::KeyedCountExec;
use crate::engine::operators::lag::GroupedLagExec;
use crate::engine::operators::stand_in::stand_in;
use crate::engine::options::{MdesnapOptions, Switch};

/// Puts [`GroupedLagExec`] in place of a [`LagExec`] over a sort wherever nothing above it
/// depends on the order of its rows; runs after [`super::SortedLag`].
#[derive(Debug, Default)]
pub(crate) struct UnorderedLag;

impl PhysicalOptimizerRule for UnorderedLag {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if !MdesnapOptions::from_config(config).on(Switch::UnorderedLag) {
            return Ok(plan);
        }
        // The rows a plan returns are in an order its user may rely on.
        rewrite(plan, false)
    }

    fn name(&self) -> &str {
        "unordered_lag"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `plan` with its `LagExec`s replaced where they may be; `order_free` says whether the
/// operator above `plan` answers the same whatever order `plan`'s rows come in.
fn rewrite(plan: Arc<dyn ExecutionPlan>, order_free: bool) -> DfResult<Arc<dyn ExecutionPlan>> {
    let plan = if order_free {
        stand_in(plan, GroupedLagExec::of).data
    } else {
        plan
    };
    let free = ignores_input_order(plan.as_ref(), order_free);
    let children = plan
        .children()
        .into_iter()
        .map(|child| rewrite(Arc::clone(child), free))
        .collect::<DfResult<Vec<_>>>()?;
    if children.is_empty() {
        return Ok(plan);
    }
    replace_children_if_necessary(plan, children)
}

/// Whether `node` answers the same whatever order its input rows come in (within each
/// partition), given whether the order of its own output matters (`order_free`).
/// Aggregates that no function of depends on order, full sorts and the counting and
/// grouping operators always do; filters, projections, and merges and repartitions
/// that keep no order do when their own output's order does not matter.
fn ignores_input_order(node: &dyn ExecutionPlan, order_free: bool) -> bool {
    if node.required_input_ordering().iter().any(Option::is_some) {
        return false;
    }
    if let Some(aggregate) = node.downcast_ref::<AggregateExec>() {
        return *aggregate.input_order_mode() == InputOrderMode::Linear
            && aggregate
                .aggr_expr()
                .iter()
                .all(|e| e.order_sensitivity().is_insensitive());
    }
    if let Some(sort) = node.downcast_ref::<SortExec>() {
        return sort.fetch().is_none();
    }
    if node.is::<KeyedCountExec>() || node.is::<GroupedLagExec>() {
        return true;
    }
    let passes_rows_on = node.is::<FilterExec>()
        || node.is::<ProjectionExec>()
        || node.is::<CoalescePartitionsExec>()
        || node
            .downcast_ref::<RepartitionExec>()
            .is_some_and(|r| !r.preserve_order());
    order_free && passes_rows_on && node.fetch().is_none()
}
