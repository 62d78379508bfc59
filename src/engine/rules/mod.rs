//! mdesnap's optimizer rules, one file each, each behind a switch of
//! [`MdesnapOptions`](super::options::MdesnapOptions).
//!
//! Each file says in its header which plan shapes it takes and why the answer cannot
//! change. Logical rules run after DataFusion's own; physical ones after DataFusion's
//! physical rules, in the order `Engine::open` adds them.

mod grouped_counts;
mod semi_join_on_constants;
mod short_literal_equality;
mod snapshots_from_manifests;
mod sorted_lag;
mod unordered_lag;

pub(crate) use grouped_counts::GroupedCounts;
pub(crate) use semi_join_on_constants::SemiJoinOnConstants;
pub(crate) use short_literal_equality::ShortLiteralEquality;
pub(crate) use snapshots_from_manifests::SnapshotsFromManifests;
pub(crate) use sorted_lag::SortedLag;
pub(crate) use unordered_lag::UnorderedLag;
