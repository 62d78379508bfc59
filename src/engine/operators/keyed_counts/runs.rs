//! Counts of a batch a run of equal keys at a time, for a partition whose groups became
//! too many for [`super::Tally`].
//!
//! Rows often come grouped by their key: `user_machines` lists each user's machines
//! together, and a join keeps the order of the side it probes with. Counting per user then
//! needs no table: each run of equal keys becomes one row of the partial aggregate's
//! state, and the final step adds up the runs of a group. The 203,000 rows of query 07
//! make 63,500 runs; DataFusion's partial aggregate hashed every row into 63,000 groups,
//! and passed on about 95,000.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, UInt32Array};
use arrow::buffer::NullBuffer;
use arrow::compute::take;
use arrow::datatypes::SchemaRef;
use datafusion::error::Result as DfResult;
use datafusion::physical_expr::PhysicalExpr;

use super::{Count, constant};

/// Rows a run of equal keys must average, at least, for a batch to be counted a run at
/// a time; below that DataFusion's partial aggregate, which merges a group's runs, is
/// handed the rest of the partition.
pub(super) const MIN_RUN: usize = 2;

/// `batch` counted one run of equal keys at a time, in the partial aggregate's state
/// (`schema`: the keys, then an `Int64` per count): one row per run, in order. `None`
/// when its runs average fewer than [`MIN_RUN`] rows, a key is neither string or binary
/// views nor constant in the batch, or a count is distinct.
pub(super) fn count_runs(
    schema: &SchemaRef,
    keys: &[Arc<dyn PhysicalExpr>],
    counts: &[Count],
    batch: &RecordBatch,
) -> DfResult<Option<RecordBatch>> {
    let rows = batch.num_rows();
    if counts.iter().any(|c| c.distinct) {
        return Ok(None);
    }
    if rows == 0 {
        return Ok(Some(RecordBatch::new_empty(Arc::clone(schema))));
    }
    let arrays = keys
        .iter()
        .map(|k| k.evaluate(batch)?.into_array(rows))
        .collect::<DfResult<Vec<ArrayRef>>>()?;
    // Each row starting a run: row 0, and each row where a key differs from the row
    // before.
    let mut starts = vec![false; rows];
    starts[0] = true;
    for keys in &arrays {
        if let Some(strings) = keys.as_string_view_opt() {
            let bytes = |r| strings.value(r).as_bytes();
            mark_changes(strings.views(), strings.nulls(), bytes, &mut starts);
        } else if let Some(binary) = keys.as_binary_view_opt() {
            mark_changes(
                binary.views(),
                binary.nulls(),
                |r| binary.value(r),
                &mut starts,
            );
        } else if !constant(keys)? {
            return Ok(None);
        }
    }
    let firsts: UInt32Array = (0..rows as u32).filter(|&r| starts[r as usize]).collect();
    let runs = firsts.len();
    if runs * MIN_RUN > rows {
        return Ok(None);
    }
    let mut columns = Vec::with_capacity(schema.fields().len());
    for keys in &arrays {
        columns.push(take(keys.as_ref(), &firsts, None)?);
    }
    let starts = firsts.values();
    // Each row's run, for the counts that take some rows only.
    let mut run_of = Vec::new();
    for count in counts {
        let sums: Int64Array = match count.rows(batch)? {
            None => (0..runs)
                .map(|j| {
                    let end = starts.get(j + 1).map_or(rows, |&s| s as usize);
                    // At most a batch's rows.
                    Some((end - starts[j] as usize) as i64)
                })
                .collect(),
            Some(taken) => {
                if run_of.is_empty() {
                    run_of = vec![0_u32; rows];
                    for (j, window) in starts.iter().enumerate() {
                        let end = starts.get(j + 1).map_or(rows, |&s| s as usize);
                        run_of[*window as usize..end].fill(j as u32);
                    }
                }
                let mut sums = vec![0_i64; runs];
                for r in taken.set_indices() {
                    sums[run_of[r] as usize] += 1;
                }
                Int64Array::from(sums)
            }
        };
        columns.push(Arc::new(sums));
    }
    Ok(Some(RecordBatch::try_new(Arc::clone(schema), columns)?))
}

/// Marks in `starts` each row whose value differs from the row before's: a null and a
/// value differ, two nulls do not. Equal views are equal values; other views are
/// compared by length, then by `bytes(r)`.
fn mark_changes<'a>(
    views: &[u128],
    nulls: Option<&NullBuffer>,
    bytes: impl Fn(usize) -> &'a [u8],
    starts: &mut [bool],
) {
    for r in 1..views.len() {
        if starts[r] {
            continue;
        }
        let differs = match nulls {
            Some(n) if n.is_null(r - 1) || n.is_null(r) => n.is_null(r - 1) != n.is_null(r),
            _ => {
                let (a, b) = (views[r - 1], views[r]);
                // The low 32 bits of a view are the value's length.
                a != b && (a as u32 != b as u32 || bytes(r - 1) != bytes(r))
            }
        };
        starts[r] = differs;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{BooleanArray, Int64Array, StringViewArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_expr::expressions::{Column, lit};

    fn state_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8View, true),
            Field::new("all", DataType::Int64, true),
            Field::new("some", DataType::Int64, true),
        ]))
    }

    fn input(keys: Vec<Option<&str>>, taken: Vec<Option<bool>>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8View, true),
            Field::new("f", DataType::Boolean, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringViewArray::from(keys)),
                Arc::new(BooleanArray::from(taken)),
            ],
        )
        .expect("batch")
    }

    fn counts() -> Vec<Count> {
        vec![
            Count {
                arg: lit(1_i64),
                filter: None,
                distinct: false,
            },
            Count {
                arg: lit(1_i64),
                filter: Some(Arc::new(Column::new("f", 1))),
                distinct: false,
            },
        ]
    }

    fn keys() -> Vec<Arc<dyn PhysicalExpr>> {
        vec![Arc::new(Column::new("k", 0))]
    }

    #[test]
    fn each_run_of_equal_keys_is_one_row_with_its_counts() {
        // Long values stored apart compare by their bytes; a null run splits two runs of
        // one value, which stay two rows (the final step adds them up).
        let long = "a-user-name-longer-than-twelve";
        let batch = input(
            vec![
                Some(long),
                Some(long),
                Some("bo"),
                Some("bo"),
                Some("bo"),
                None,
                None,
                Some(long),
                Some(long),
                Some(""),
                Some(""),
                Some("bob"),
            ],
            vec![
                Some(true),
                None,
                Some(true),
                Some(false),
                Some(true),
                Some(true),
                Some(true),
                Some(false),
                Some(false),
                Some(true),
                Some(true),
                Some(true),
            ],
        );
        let out = count_runs(&state_schema(), &keys(), &counts(), &batch)
            .expect("counts")
            .expect("runs of two rows on average");
        let k = out.column(0).as_string_view();
        let shown: Vec<Option<&str>> = (0..out.num_rows())
            .map(|r| (!k.is_null(r)).then(|| k.value(r)))
            .collect();
        assert_eq!(
            shown,
            vec![
                Some(long),
                Some("bo"),
                None,
                Some(long),
                Some(""),
                Some("bob")
            ]
        );
        let column = |i: usize| -> Vec<i64> {
            out.column(i)
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("Int64")
                .values()
                .to_vec()
        };
        assert_eq!(column(1), vec![2, 3, 2, 2, 2, 1]);
        assert_eq!(column(2), vec![1, 2, 2, 0, 2, 1]);
    }

    #[test]
    fn short_runs_and_distinct_counts_are_left_to_datafusion() {
        let batch = input(
            vec![Some("a"), Some("b"), Some("a"), Some("a")],
            vec![Some(true); 4],
        );
        // Three runs in four rows.
        assert!(
            count_runs(&state_schema(), &keys(), &counts(), &batch)
                .expect("counts")
                .is_none()
        );
        let mut distinct = counts();
        distinct[0].distinct = true;
        let batch = input(vec![Some("a"); 4], vec![Some(true); 4]);
        assert!(
            count_runs(&state_schema(), &keys(), &distinct, &batch)
                .expect("counts")
                .is_none()
        );
        assert!(
            count_runs(&state_schema(), &keys(), &counts(), &batch)
                .expect("counts")
                .is_some_and(|out| out.num_rows() == 1)
        );
    }
}
