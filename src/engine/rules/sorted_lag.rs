//! `lag()` over input sorted by its partition keys, as a shifted copy.
//!
//! Takes a `BoundedWindowAggExec` of nothing but `lag` that [`LagExec::of`] accepts
//! (input sorted by the partition keys and the window's order, constant offsets and
//! defaults) and puts a `LagExec` in its place: each row's lag is the row `k` above it
//! in the same partition, masked where the partition keys change, which is what the
//! window function defines over the sorted input.
//! Off with `SET mdesnap.sorted_lag = false` or the plain engine.

use std::sync::Arc;

use datafusion::config::ConfigOptions;
use datafusion::error::Result as DfResult;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;

use crate::engine::operators::lag::LagExec;
use crate::engine::operators::stand_in::stand_in_everywhere;
use crate::engine::options::{MdesnapOptions, Switch};

/// Puts [`LagExec`] in place of `BoundedWindowAggExec` where it applies; runs after
/// DataFusion's own physical rules, once sorts and repartitions are placed.
#[derive(Debug, Default)]
pub(crate) struct SortedLag;

impl PhysicalOptimizerRule for SortedLag {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if !MdesnapOptions::from_config(config).on(Switch::SortedLag) {
            return Ok(plan);
        }
        stand_in_everywhere(plan, LagExec::of)
    }

    fn name(&self) -> &str {
        "sorted_lag"
    }

    fn schema_check(&self) -> bool {
        true
    }
}
