//! Counts grouped by a partition value, counted a batch at a time.
//!
//! A history trend (`count(*)`, `count(*) FILTER (WHERE health_status = 'Active')`, ...
//! `GROUP BY snapshot`) groups by `snapshot`, which the scan sets per file: every batch
//! it reads holds one value. DataFusion's partial aggregate still hashes the key of
//! every row and adds each row to its group's counts; over 3.1 M rows that was a third of
//! the daily trend's CPU (docs/benchmarks.md, the fifth round). With one key a batch, a
//! count is the number of set bits in the rows the `FILTER` keeps and the argument is not
//! null.
//!
//! [`CountsByPartitionValue`] swaps a partial `AggregateExec` for [`KeyedCountExec`] when
//! it reads straight from a file scan, groups by one of the scan's partition columns
//! alone, and computes nothing but `count` (not `DISTINCT`, no `ORDER BY`). A batch whose
//! key is not constant after all is counted run by run of equal keys.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, Scalar};
use arrow::buffer::BooleanBuffer;
use arrow::compute::kernels::cmp::eq;
use arrow::compute::kernels::partition::partition;
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::config::ConfigOptions;
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result as DfResult;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::ColumnarValue;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, InputDistributionRequirements, InputOrderMode,
    PlanProperties, SendableRecordBatchStream,
};
use datafusion::scalar::ScalarValue;
use futures::StreamExt;

/// One `count(arg) FILTER (WHERE filter)`.
#[derive(Debug, Clone)]
struct Count {
    arg: Arc<dyn PhysicalExpr>,
    filter: Option<Arc<dyn PhysicalExpr>>,
}

impl Count {
    /// The rows this count takes in `batch`: the `FILTER` is true (not null) and the
    /// argument is not null; `None` for every row.
    fn rows(&self, batch: &RecordBatch) -> DfResult<Option<BooleanBuffer>> {
        let rows = batch.num_rows();
        let mut taken = match &self.filter {
            None => None,
            Some(f) => {
                let kept = f.evaluate(batch)?.into_array(rows)?;
                let kept = kept.as_boolean();
                Some(match kept.nulls() {
                    Some(nulls) => kept.values() & nulls.inner(),
                    None => kept.values().clone(),
                })
            }
        };
        match self.arg.evaluate(batch)? {
            ColumnarValue::Scalar(s) if s.is_null() => {
                taken = Some(BooleanBuffer::new_unset(rows));
            }
            ColumnarValue::Scalar(_) => {}
            ColumnarValue::Array(a) => {
                if let Some(nulls) = a.logical_nulls() {
                    taken = Some(match taken {
                        Some(t) => &t & nulls.inner(),
                        None => nulls.inner().clone(),
                    });
                }
            }
        }
        Ok(taken)
    }
}

/// A partial `AggregateExec` of [`Count`]s grouped by a file scan's partition column: one
/// row per key, the counts as the partial aggregate's state (`Int64`). Plans show it as
/// `KeyedCountExec` with the aggregate's grouping and expressions.
#[derive(Debug)]
pub(crate) struct KeyedCountExec {
    /// The aggregate this replaces: its schema, properties and requirements are this one's.
    planned: Arc<AggregateExec>,
    key: Arc<dyn PhysicalExpr>,
    counts: Vec<Count>,
    metrics: ExecutionPlanMetricsSet,
}

impl KeyedCountExec {
    /// `Some` when `aggregate` is a partial aggregate of plain counts, straight over a
    /// file scan, grouped by one of the scan's partition columns and nothing else.
    fn of(aggregate: &AggregateExec) -> Option<KeyedCountExec> {
        if *aggregate.mode() != AggregateMode::Partial
            || aggregate.limit_options().is_some()
            || *aggregate.input_order_mode() != InputOrderMode::Linear
            || !aggregate.group_expr().is_single()
        {
            return None;
        }
        let [(key, _)] = aggregate.group_expr().expr() else {
            return None;
        };
        let column = key.downcast_ref::<Column>()?;
        let scan = aggregate.input().downcast_ref::<DataSourceExec>()?;
        let files = scan.data_source().downcast_ref::<FileScanConfig>()?;
        let input = aggregate.input().schema();
        let field = input.fields().get(column.index())?;
        if field.name() != column.name()
            || !files
                .table_partition_cols()
                .iter()
                .any(|p| p.name() == column.name())
        {
            return None;
        }
        let mut counts = Vec::with_capacity(aggregate.aggr_expr().len());
        for (a, filter) in aggregate.aggr_expr().iter().zip(aggregate.filter_expr()) {
            let [arg] = a.expressions().try_into().ok()?;
            if a.fun().name() != "count" || a.is_distinct() || !a.order_bys().is_empty() {
                return None;
            }
            counts.push(Count {
                arg,
                filter: filter.clone(),
            });
        }
        // The output: the key, then each count's state, one `Int64`.
        let output = aggregate.schema();
        let states = output.fields().iter().skip(1);
        if output.fields().len() != 1 + counts.len()
            || output.field(0).data_type() != field.data_type()
            || states
                .into_iter()
                .any(|f| f.data_type() != &DataType::Int64)
        {
            return None;
        }
        Some(KeyedCountExec {
            planned: Arc::new(aggregate.clone()),
            key: Arc::clone(key),
            counts,
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }
}

impl DisplayAs for KeyedCountExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        if matches!(t, DisplayFormatType::TreeRender) {
            return self.planned.fmt_as(t, f);
        }
        let names: Vec<&str> = self.planned.aggr_expr().iter().map(|a| a.name()).collect();
        write!(
            f,
            "KeyedCountExec: gby=[{}], aggr=[{}]",
            self.key,
            names.join(", ")
        )
    }
}

impl ExecutionPlan for KeyedCountExec {
    fn name(&self) -> &str {
        "KeyedCountExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.planned.properties()
    }

    fn input_distribution_requirements(&self) -> InputDistributionRequirements {
        self.planned.input_distribution_requirements()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![self.planned.input()]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        self.planned.apply_expressions(f)
    }

    #[allow(deprecated)]
    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let planned = Arc::clone(&self.planned).with_new_children(children)?;
        Ok(
            match planned
                .downcast_ref::<AggregateExec>()
                .and_then(KeyedCountExec::of)
            {
                Some(counts) => Arc::new(counts),
                None => planned,
            },
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let input = self.planned.input().execute(partition, context)?;
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let mut tally = Tally {
            schema: self.schema(),
            key: Arc::clone(&self.key),
            counts: self.counts.clone(),
            index: HashMap::new(),
            groups: Vec::new(),
        };
        let stream = futures::stream::once(async move {
            let mut input = input;
            while let Some(batch) = input.next().await {
                let batch = batch?;
                let _timer = baseline.elapsed_compute().timer();
                tally.add(&batch)?;
            }
            let _timer = baseline.elapsed_compute().timer();
            let out = tally.finish()?;
            baseline.record_output(out.num_rows());
            Ok(out)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema(),
            stream,
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// One partition's counts so far, per key in the order first seen.
struct Tally {
    schema: SchemaRef,
    key: Arc<dyn PhysicalExpr>,
    counts: Vec<Count>,
    index: HashMap<ScalarValue, usize>,
    groups: Vec<(ScalarValue, Vec<i64>)>,
}

impl Tally {
    fn add(&mut self, batch: &RecordBatch) -> DfResult<()> {
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(());
        }
        let keys = self.key.evaluate(batch)?.into_array(rows)?;
        let taken = self
            .counts
            .iter()
            .map(|c| c.rows(batch))
            .collect::<DfResult<Vec<_>>>()?;
        let runs = if constant(&keys)? {
            std::iter::once(0..rows).collect()
        } else {
            partition(std::slice::from_ref(&keys))?.ranges()
        };
        for run in runs {
            let key = ScalarValue::try_from_array(&keys, run.start)?;
            let group = match self.index.get(&key) {
                Some(&g) => g,
                None => {
                    self.groups.push((key.clone(), vec![0; self.counts.len()]));
                    self.index.insert(key, self.groups.len() - 1);
                    self.groups.len() - 1
                }
            };
            let tallies = &mut self.groups[group].1;
            for (tally, taken) in tallies.iter_mut().zip(&taken) {
                let n = match taken {
                    None => run.len(),
                    Some(bits) => bits.slice(run.start, run.len()).count_set_bits(),
                };
                // `n` is at most a batch's rows.
                *tally += n as i64;
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> DfResult<RecordBatch> {
        let groups = std::mem::take(&mut self.groups);
        let key_type = self.schema.field(0).data_type().clone();
        let keys: ArrayRef = if groups.is_empty() {
            arrow::array::new_empty_array(&key_type)
        } else {
            ScalarValue::iter_to_array(groups.iter().map(|(k, _)| k.clone()))?
        };
        let mut columns = vec![keys];
        for i in 0..self.counts.len() {
            let counts: Int64Array = groups.iter().map(|(_, c)| Some(c[i])).collect();
            columns.push(Arc::new(counts));
        }
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }
}

/// Whether every row of `keys` (at least one) holds the same value, or every row is null.
fn constant(keys: &ArrayRef) -> DfResult<bool> {
    let nulls = keys.logical_null_count();
    if nulls == keys.len() {
        return Ok(true);
    }
    if nulls > 0 {
        return Ok(false);
    }
    let first = Scalar::new(keys.slice(0, 1));
    Ok(eq(keys, &first)?.true_count() == keys.len())
}

/// Puts [`KeyedCountExec`] in place of partial aggregates where it applies; runs after
/// DataFusion's own physical rules and `ShortLiteralEquality`, whose `FILTER`s it keeps.
#[derive(Debug, Default)]
pub(crate) struct CountsByPartitionValue;

impl PhysicalOptimizerRule for CountsByPartitionValue {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            Ok(
                match node
                    .downcast_ref::<AggregateExec>()
                    .and_then(KeyedCountExec::of)
                {
                    Some(counts) => Transformed::yes(Arc::new(counts) as Arc<dyn ExecutionPlan>),
                    None => Transformed::no(node),
                },
            )
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "counts_by_partition_value"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::BooleanArray;
    use arrow::datatypes::{Field, Schema};
    use datafusion::physical_expr::expressions::{col, lit};

    #[test]
    fn tally_counts_constant_batches_and_runs_of_keys_alike() {
        let input = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("v", DataType::Int64, true),
            Field::new("f", DataType::Boolean, true),
        ]));
        let output = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("all", DataType::Int64, false),
            Field::new("v", DataType::Int64, false),
            Field::new("v_where_f", DataType::Int64, false),
        ]));
        let column = |name| col(name, &input).expect("column");
        let counts = vec![
            Count {
                arg: lit(1_i64),
                filter: None,
            },
            Count {
                arg: column("v"),
                filter: None,
            },
            Count {
                arg: column("v"),
                filter: Some(column("f")),
            },
        ];
        let mut tally = Tally {
            schema: output,
            key: column("k"),
            counts,
            index: HashMap::new(),
            groups: Vec::new(),
        };
        // One key a batch, then runs of keys (7 seen again, nulls), then only nulls, then
        // no rows.
        type Rows = (Vec<Option<i64>>, Vec<Option<i64>>, Vec<Option<bool>>);
        let batches: [Rows; 4] = [
            (
                vec![Some(7); 4],
                vec![Some(1), None, Some(3), Some(4)],
                vec![Some(true), Some(true), None, Some(false)],
            ),
            (
                vec![Some(1), Some(1), Some(7), None, None, Some(1)],
                vec![Some(1), Some(2), None, Some(4), None, Some(6)],
                vec![
                    Some(true),
                    None,
                    Some(true),
                    Some(true),
                    Some(true),
                    Some(true),
                ],
            ),
            (
                vec![None; 3],
                vec![Some(1); 3],
                vec![Some(false), Some(true), None],
            ),
            (vec![], vec![], vec![]),
        ];
        let mut expected: Vec<(Option<i64>, [i64; 3])> = Vec::new();
        for (k, v, f) in batches {
            for i in 0..k.len() {
                let at = match expected.iter().position(|(key, _)| *key == k[i]) {
                    Some(at) => at,
                    None => {
                        expected.push((k[i], [0; 3]));
                        expected.len() - 1
                    }
                };
                let c = &mut expected[at].1;
                c[0] += 1;
                c[1] += i64::from(v[i].is_some());
                c[2] += i64::from(v[i].is_some() && f[i] == Some(true));
            }
            let batch = RecordBatch::try_new(
                Arc::clone(&input),
                vec![
                    Arc::new(Int64Array::from(k)),
                    Arc::new(Int64Array::from(v)),
                    Arc::new(BooleanArray::from(f)),
                ],
            )
            .expect("batch");
            tally.add(&batch).expect("counts");
        }
        let out = tally.finish().expect("finishes");
        let got: Vec<(Option<i64>, [i64; 3])> = (0..out.num_rows())
            .map(|r| {
                let key = out.column(0).as_primitive::<arrow::datatypes::Int64Type>();
                let count = |c: usize| {
                    out.column(c)
                        .as_primitive::<arrow::datatypes::Int64Type>()
                        .value(r)
                };
                (
                    key.is_valid(r).then(|| key.value(r)),
                    [count(1), count(2), count(3)],
                )
            })
            .collect();
        assert_eq!(got, expected);
        assert_eq!(expected.len(), 3, "keys 7, 1 and null");
    }
}
