//! Operators of mdesnap's standing in for DataFusion's where they compute the same rows.
//!
//! `LagExec` (`operators::lag`) and `KeyedCountExec` (`operators::keyed_counts`) each replace one
//! kind of DataFusion operator, keep it to take their properties and requirements from,
//! and apply only where a constructor (`of`) accepts it; a plan rewritten with new
//! children is checked again.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result as DfResult;
use datafusion::physical_plan::ExecutionPlan;

/// `node` replaced by what `of` makes of it, when it is a `P` that `of` accepts.
pub(crate) fn stand_in<P: ExecutionPlan, R: ExecutionPlan>(
    node: Arc<dyn ExecutionPlan>,
    of: impl Fn(&P) -> Option<R>,
) -> Transformed<Arc<dyn ExecutionPlan>> {
    match node.downcast_ref::<P>().and_then(of) {
        Some(replacement) => Transformed::yes(Arc::new(replacement)),
        None => Transformed::no(node),
    }
}

/// Every `P` in `plan` that `of` accepts, replaced.
pub(crate) fn stand_in_everywhere<P: ExecutionPlan, R: ExecutionPlan>(
    plan: Arc<dyn ExecutionPlan>,
    of: impl Fn(&P) -> Option<R>,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| Ok(stand_in(node, &of)))
        .map(|t| t.data)
}
