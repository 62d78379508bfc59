//! Counts grouped by partition values and few-valued strings, a batch at a time.
//!
//! Takes every partial `AggregateExec` that [`KeyedCountExec::of`] accepts (nothing but
//! `count`, grouped by one to four string-view or partition columns; see
//! `operators/keyed_counts`) and puts a `KeyedCountExec` in its place. The answer cannot
//! change: the operator emits the partial aggregate's own state rows, hands a partition
//! it cannot count to DataFusion's aggregate, and the final step is DataFusion's.
//! Off with `SET mdesnap.grouped_counts = false` or the plain engine.

use std::sync::Arc;

use datafusion::config::ConfigOptions;
use datafusion::error::Result as DfResult;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;

use crate::engine::operators::keyed_counts::KeyedCountExec;
use crate::engine::operators::stand_in::stand_in_everywhere;
use crate::engine::options::{MdesnapOptions, Switch};

/// Puts [`KeyedCountExec`] in place of partial aggregates where it applies; runs after
/// DataFusion's own physical rules and `ShortLiteralEquality`, whose `FILTER`s it keeps.
#[derive(Debug, Default)]
pub(crate) struct GroupedCounts;

impl PhysicalOptimizerRule for GroupedCounts {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if !MdesnapOptions::from_config(config).on(Switch::GroupedCounts) {
            return Ok(plan);
        }
        stand_in_everywhere(plan, KeyedCountExec::of)
    }

    fn name(&self) -> &str {
        "grouped_counts"
    }

    fn schema_check(&self) -> bool {
        true
    }
}
