//! The execution plans mdesnap's rules put in place of DataFusion's, grouped by kind.
//!
//! Each stands in for one DataFusion operator where it computes the same rows
//! (`stand_in`), keeps that operator to take its properties from, and is proven equal
//! to it by the randomized equivalence test (`tests/it/equivalence.rs`).

pub(crate) mod keyed_counts;
pub(crate) mod lag;
pub(crate) mod stand_in;
