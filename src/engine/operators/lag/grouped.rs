//! `lag()` where nothing above it depends on the order of its rows: the rows grouped by
//! their partition keys in a hash table instead of sorted by them.
//!
//! [`LagExec`] needs its input sorted by the partition keys, and over the history that
//! sort is most of the work: 3.1 M rows sorted by 40-character machine ids took 725 ms of
//! compute, and `LagExec`'s comparisons of adjacent ids 300 more (query 10 of the suite,
//! docs/benchmarks-history.md). A `lag` needs only each partition's rows in order. Where its rows
//! then go to an aggregate, a sort, or another operator whose answer does not depend on
//! the order its input arrives in, `UnorderedLag` (`engine::rules`) puts [`GroupedLagExec`] in place of
//! the `LagExec` and the sort beneath it. It reads the whole partition (as the sort did),
//! numbers each row's partition keys with a hash table, lays the rows out group by group
//! (a counting sort on the numbers), orders each group by the window's `ORDER BY` key,
//! and takes each row's `lag` from the row `k` places up in its group. Rows leave in the
//! order they came, each with its `lag` columns.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::{can_cast_types, cast, interleave};
use arrow::datatypes::{DataType, Int64Type, SchemaRef};
use arrow::row::{RowConverter, SortField};
use datafusion::common::hash_utils::RandomState;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr, PhysicalSortExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::windows::BoundedWindowAggExec;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, InputDistributionRequirements, PlanProperties,
    SendableRecordBatchStream,
};
use futures::{StreamExt, TryStreamExt};

use super::{Lag, LagExec, show};
use crate::engine::operators::stand_in::stand_in;

/// A row's place in its group that has no row `k` places up: the `lag` is the default.
const NO_ROW: u32 = u32::MAX;

/// What grouping takes per row besides the row itself: its group's number, its place
/// in the layout and where its lag comes from (three `u32`), and the hash table's share.
const WORK_BYTES_PER_ROW: usize = 16;

/// [`LagExec`] and the sort beneath it, computed by grouping instead of sorting: each
/// output batch is an input batch, in the order they came, plus one column per `lag`.
/// Plans show it as `GroupedLagExec` with the window expressions DataFusion planned.
#[derive(Debug)]
pub(crate) struct GroupedLagExec {
    /// The window operator `LagExec` stood in for, over the sort this makes unnecessary:
    /// its input distribution, expressions and display are this one's.
    planned: Arc<BoundedWindowAggExec>,
    /// The sort's input.
    input: Arc<dyn ExecutionPlan>,
    spec: Arc<Spec>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

/// What a partition's rows are grouped and ordered by, and the `lag`s taken.
#[derive(Debug)]
struct Spec {
    schema: SchemaRef,
    partition_by: Vec<Arc<dyn PhysicalExpr>>,
    order_by: PhysicalSortExpr,
    lags: Vec<Lag>,
}

impl GroupedLagExec {
    /// `Some` when `lag` reads a sort of its own input partitions, and its window orders
    /// by one integer or temporal key.
    pub(crate) fn of(lag: &LagExec) -> Option<GroupedLagExec> {
        let sort = lag.planned.input().downcast_ref::<SortExec>()?;
        let input = Arc::clone(sort.input());
        if sort.fetch().is_some()
            || (!sort.preserve_partitioning()
                && input.properties().output_partitioning().partition_count() != 1)
        {
            return None;
        }
        let exprs = lag.planned.window_expr();
        let first = exprs.first()?;
        let [order_by] = first.order_by() else {
            return None;
        };
        // One window operator may hold windows that one sort serves; this one computes
        // windows of one partitioning and one order.
        if exprs
            .iter()
            .any(|e| e.order_by() != first.order_by() || e.partition_by() != lag.partition_by)
        {
            return None;
        }
        if !orderable(&order_by.expr.data_type(&input.schema()).ok()?) {
            return None;
        }
        let schema = lag.schema();
        let properties = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            input.properties().output_partitioning().clone(),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        Some(GroupedLagExec {
            planned: Arc::clone(&lag.planned),
            input,
            spec: Arc::new(Spec {
                schema,
                partition_by: lag.partition_by.clone(),
                order_by: order_by.clone(),
                lags: lag.lags.clone(),
            }),
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }
}

/// Whether values of this type order as the `Int64` they cast to.
fn orderable(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::Date32
            | DataType::Date64
            | DataType::Timestamp(_, _)
    ) && can_cast_types(t, &DataType::Int64)
}

impl DisplayAs for GroupedLagExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        show("GroupedLagExec", &self.planned, t, f)
    }
}

impl ExecutionPlan for GroupedLagExec {
    fn name(&self) -> &str {
        "GroupedLagExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn input_distribution_requirements(&self) -> InputDistributionRequirements {
        self.planned.input_distribution_requirements()
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
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
        // The sort and the window again over the new input; this operator again where
        // it still applies (what is above it has not changed).
        let sort = Arc::clone(self.planned.input()).with_new_children(children)?;
        let window = Arc::clone(&self.planned).with_new_children(vec![sort])?;
        let lagged = stand_in(window, LagExec::of).data;
        Ok(stand_in(lagged, GroupedLagExec::of).data)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        // The partition's rows are held until its last arrives: they, and the numbers
        // the grouping keeps per row, are reserved from the session's memory pool, so a
        // memory limit ends an oversized partition with an error naming this operator.
        let reservation = MemoryConsumer::new(format!("GroupedLagExec[{partition}]"))
            .register(context.memory_pool());
        let mut input = self.input.execute(partition, context)?;
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let spec = Arc::clone(&self.spec);
        let lagged = futures::stream::once(async move {
            let mut batches: Vec<RecordBatch> = Vec::new();
            while let Some(batch) = input.next().await {
                let batch = batch?;
                reservation.try_grow(
                    batch.get_array_memory_size() + batch.num_rows() * WORK_BYTES_PER_ROW,
                )?;
                batches.push(batch);
            }
            let out = {
                let _timer = baseline.elapsed_compute().timer();
                spec.lagged(&batches)?
            };
            drop(batches);
            reservation.free();
            baseline.record_output(out.iter().map(RecordBatch::num_rows).sum());
            Ok::<_, DataFusionError>(futures::stream::iter(out.into_iter().map(Ok)))
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema(),
            lagged.boxed(),
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

impl Spec {
    /// `batches`, the whole of one partition, each with its `lag` columns.
    fn lagged(&self, batches: &[RecordBatch]) -> DfResult<Vec<RecordBatch>> {
        let batches: Vec<&RecordBatch> = batches.iter().filter(|b| b.num_rows() > 0).collect();
        // Where each batch's rows start among all of them, and where they end.
        let mut starts = Vec::with_capacity(batches.len() + 1);
        let mut total = 0_usize;
        starts.push(0);
        for batch in &batches {
            total += batch.num_rows();
            starts.push(total);
        }
        // Row numbers are u32, and NO_ROW is not one of them.
        if u32::try_from(total).map_or(true, |t| t == NO_ROW) {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "GroupedLagExec: {total} rows in one partition, more than it numbers"
            )));
        }
        let (layout, bounds) = self.layout(&batches, total)?;
        let mut columns: Vec<Vec<ArrayRef>> =
            batches.iter().map(|b| b.columns().to_vec()).collect();
        for lag in &self.lags {
            let values = batches
                .iter()
                .map(|b| lag.value.evaluate(b)?.into_array(b.num_rows()))
                .collect::<DfResult<Vec<_>>>()?;
            // The default, after every batch's values.
            let default = lag.default.to_array_of_size(1)?;
            let mut sources: Vec<&dyn Array> = values.iter().map(|a| a.as_ref()).collect();
            sources.push(default.as_ref());
            let from = sources_of(&layout, &bounds, lag.offset, total);
            for (b, batch_columns) in columns.iter_mut().enumerate() {
                let indices: Vec<(usize, usize)> = from[starts[b]..starts[b + 1]]
                    .iter()
                    .map(|&row| match row {
                        NO_ROW => (batches.len(), 0),
                        row => {
                            let row = row as usize;
                            let at = starts.partition_point(|&s| s <= row) - 1;
                            (at, row - starts[at])
                        }
                    })
                    .collect();
                batch_columns.push(interleave(&sources, &indices)?);
            }
        }
        columns
            .into_iter()
            .map(|c| Ok(RecordBatch::try_new(Arc::clone(&self.schema), c)?))
            .collect()
    }

    /// Every row, group after group and in `ORDER BY` order within its group, and where
    /// each group's rows begin in that layout (then where the last one ends).
    fn layout(&self, batches: &[&RecordBatch], total: usize) -> DfResult<(Vec<u32>, Vec<u32>)> {
        let (groups, count) = self.groups(batches, total)?;
        let mut bounds = vec![0_u32; count + 1];
        for &g in &groups {
            bounds[g as usize + 1] += 1;
        }
        for g in 0..count {
            bounds[g + 1] += bounds[g];
        }
        let mut next = bounds.clone();
        let mut layout = vec![0_u32; total];
        for (row, &g) in groups.iter().enumerate() {
            let at = &mut next[g as usize];
            // `total` fits in a u32 (checked by the caller).
            layout[*at as usize] = row as u32;
            *at += 1;
        }
        let keys = self.order_keys(batches, total)?;
        for g in 0..count {
            let rows = &mut layout[bounds[g] as usize..bounds[g + 1] as usize];
            // Stable: rows of one `ORDER BY` value stay in the order they came.
            rows.sort_by_key(|&r| keys.of(r as usize));
        }
        Ok((layout, bounds))
    }

    /// Each row's group, numbered from 0 by first appearance of its partition keys, and
    /// how many groups there are.
    fn groups(&self, batches: &[&RecordBatch], total: usize) -> DfResult<(Vec<u32>, usize)> {
        let mut groups = vec![0_u32; total];
        let mut count = usize::from(total > 0);
        for (i, key) in self.partition_by.iter().enumerate() {
            let arrays = batches
                .iter()
                .map(|b| key.evaluate(b)?.into_array(b.num_rows()))
                .collect::<DfResult<Vec<_>>>()?;
            let (numbers, distinct) = number(&arrays, total)?;
            if i == 0 {
                (groups, count) = (numbers, distinct);
            } else {
                let mut pairs = Numbering::default();
                for (g, n) in groups.iter_mut().zip(numbers) {
                    *g = pairs.number((*g, n))?;
                }
                count = pairs.0.len();
            }
        }
        Ok((groups, count))
    }

    /// Each row's `ORDER BY` value as integers that sort in the window's order.
    fn order_keys(&self, batches: &[&RecordBatch], total: usize) -> DfResult<OrderKeys> {
        let options = self.order_by.options;
        let mut keys = OrderKeys {
            values: Vec::with_capacity(total),
            ranks: None,
        };
        for batch in batches {
            let array = self
                .order_by
                .expr
                .evaluate(batch)?
                .into_array(batch.num_rows())?;
            let array = cast(&array, &DataType::Int64)?;
            let ints = array.as_primitive::<Int64Type>();
            let before = keys.values.len();
            // `!v` orders the other way round, over every i64.
            keys.values.extend(
                ints.values()
                    .iter()
                    .map(|&v| if options.descending { !v } else { v }),
            );
            if ints.null_count() > 0 || keys.ranks.is_some() {
                let (null, valid) = if options.nulls_first { (0, 1) } else { (1, 0) };
                let ranks = keys.ranks.get_or_insert_with(|| vec![valid; before]);
                ranks.extend((0..ints.len()).map(|i| if ints.is_null(i) { null } else { valid }));
            }
        }
        Ok(keys)
    }
}

/// Each row's `ORDER BY` value, and where any is null, whether it sorts before or after
/// the others.
struct OrderKeys {
    values: Vec<i64>,
    ranks: Option<Vec<u8>>,
}

impl OrderKeys {
    fn of(&self, row: usize) -> (u8, i64) {
        let rank = self.ranks.as_ref().map_or(0, |r| r[row]);
        (rank, self.values[row])
    }
}

/// For each row, the row `k` places up in its group in `layout`, or [`NO_ROW`].
fn sources_of(layout: &[u32], bounds: &[u32], k: usize, total: usize) -> Vec<u32> {
    let mut from = vec![NO_ROW; total];
    for group in bounds.windows(2) {
        let rows = &layout[group[0] as usize..group[1] as usize];
        for (here, up) in rows.iter().skip(k).zip(rows) {
            from[*here as usize] = *up;
        }
    }
    from
}

/// Keys numbered from 0 as first seen.
struct Numbering<K>(HashMap<K, u32, RandomState>);

impl<K> Default for Numbering<K> {
    fn default() -> Self {
        Numbering(HashMap::with_hasher(RandomState::default()))
    }
}

impl<K: std::hash::Hash + Eq> Numbering<K> {
    fn number(&mut self, key: K) -> DfResult<u32> {
        let next = u32::try_from(self.0.len())
            .ok()
            .filter(|&n| n != NO_ROW)
            .ok_or_else(|| DataFusionError::ResourcesExhausted("more than 2^32 groups".into()))?;
        Ok(*self.0.entry(key).or_insert(next))
    }
}

/// Each row's number for its value in `arrays` (one partition key, batch after batch),
/// and how many distinct values there are. Byte views (the machine ids) are numbered by
/// their bytes; other types by arrow's row format of the value.
fn number(arrays: &[ArrayRef], total: usize) -> DfResult<(Vec<u32>, usize)> {
    let mut numbers = Vec::with_capacity(total);
    let views = arrays
        .iter()
        .all(|a| matches!(a.data_type(), DataType::Utf8View | DataType::BinaryView));
    if views {
        let mut seen = Numbering::default();
        for array in arrays {
            if let Some(strings) = array.as_string_view_opt() {
                for i in 0..strings.len() {
                    let value = strings.is_valid(i).then(|| strings.value(i).as_bytes());
                    numbers.push(seen.number(value)?);
                }
            } else if let Some(bytes) = array.as_binary_view_opt() {
                for i in 0..bytes.len() {
                    numbers.push(seen.number(bytes.is_valid(i).then(|| bytes.value(i)))?);
                }
            }
        }
        return Ok((numbers, seen.0.len()));
    }
    let Some(first) = arrays.first() else {
        return Ok((numbers, 0));
    };
    let converter = RowConverter::new(vec![SortField::new(first.data_type().clone())])?;
    let rows = arrays
        .iter()
        .map(|a| converter.convert_columns(&[Arc::clone(a)]))
        .collect::<Result<Vec<_>, _>>()?;
    let mut seen = Numbering::default();
    for row in rows.iter().flat_map(|r| r.iter()) {
        numbers.push(seen.number(row.data())?);
    }
    Ok((numbers, seen.0.len()))
}

#[cfg(test)]
mod tests {
    use super::super::tests::run_with;
    use super::*;
    use crate::engine::rules::{SortedLag, UnorderedLag};
    use datafusion::physical_optimizer::PhysicalOptimizerRule;

    /// The rows `sql` answers, and its physical plan; with `rules`, mdesnap's two `lag`
    /// rules, else DataFusion's operators alone.
    async fn run(sql: &str, rules: bool) -> (String, String) {
        let rules: &[Arc<dyn PhysicalOptimizerRule + Send + Sync>] = if rules {
            &[Arc::new(SortedLag), Arc::new(UnorderedLag)]
        } else {
            &[]
        };
        run_with(sql, rules).await
    }

    #[tokio::test]
    async fn lag_below_a_sort_or_an_aggregate_answers_as_datafusion_does() {
        let cases = [
            // Sorted again on top: two partition keys with nulls (a string view and an
            // integer); offsets 1 to 7; defaults of the value's type, cast, and null.
            "SELECT g, h, t, lag(v) OVER w AS a, lag(v, 2) OVER w AS b, \
             lag(n, 7, -1) OVER w AS c, lag(v, 1, 'none') OVER w AS d, \
             lag(n, 3, NULL) OVER w AS e \
             FROM t WINDOW w AS (PARTITION BY g, h ORDER BY t) ORDER BY t",
            // Descending, with a null key first or last.
            "SELECT t, lag(v) OVER (PARTITION BY g ORDER BY CASE WHEN t = 13 THEN NULL \
             ELSE t END DESC NULLS FIRST) AS a FROM t ORDER BY t",
            "SELECT t, lag(v, 2) OVER (PARTITION BY h ORDER BY CASE WHEN t = 13 THEN NULL \
             ELSE t END NULLS LAST) AS a FROM t ORDER BY t",
            // A timestamp key; a partition key of one value.
            "SELECT t, lag(v) OVER (PARTITION BY g, 'x' ORDER BY to_timestamp_seconds(t)) \
             AS a FROM t ORDER BY t",
            // The suite's shape: an aggregate above a filter on the lag.
            "SELECT count(*) AS changes FROM (SELECT v, lag(v) OVER (PARTITION BY g \
             ORDER BY t) AS p FROM t) s WHERE p IS NOT NULL AND p <> v",
            // Grouped above by the lag: rows are counted whatever their order.
            "SELECT p, count(*) AS n FROM (SELECT lag(v, 3, 'first') OVER \
             (PARTITION BY g ORDER BY t DESC) AS p FROM t) s GROUP BY p ORDER BY p",
        ];
        for sql in cases {
            let (planned, plain) = run(sql, false).await;
            let (fast, grouped) = run(sql, true).await;
            assert!(!plain.contains("LagExec"), "{sql}:\n{plain}");
            assert!(grouped.contains("GroupedLagExec"), "{sql}:\n{grouped}");
            assert!(
                !grouped.contains("SortExec: expr=[g"),
                "{sql}: no sort for the window:\n{grouped}"
            );
            assert_eq!(planned, fast, "{sql}");
        }
    }

    #[tokio::test]
    async fn lag_whose_order_is_kept_stays_sorted() {
        let cases = [
            // The rows come out in the window's order, which the query asks for.
            "SELECT g, t, lag(v) OVER (PARTITION BY g ORDER BY t) AS a FROM t ORDER BY g, t",
            // Grouped by the partition key, an aggregate reads the rows in its order.
            "SELECT g, p, count(*) AS n FROM (SELECT g, lag(v, 3, 'first') OVER \
             (PARTITION BY g ORDER BY t DESC) AS p FROM t) s GROUP BY g, p ORDER BY g, p",
            // Which rows a limit keeps depends on their order.
            "SELECT count(a) AS n FROM (SELECT lag(v) OVER (PARTITION BY g ORDER BY t) \
             AS a FROM t LIMIT 50) s",
            // Two orders in one window operator.
            "SELECT t, lag(v) OVER (PARTITION BY g ORDER BY t) AS a, lag(v) OVER \
             (PARTITION BY g ORDER BY t, n) AS b FROM t ORDER BY t",
            // A string order key.
            "SELECT t, lag(n) OVER (PARTITION BY g ORDER BY v, t) AS a FROM t ORDER BY t",
        ];
        for sql in cases {
            let (planned, _) = run(sql, false).await;
            let (fast, plan) = run(sql, true).await;
            assert!(!plan.contains("GroupedLagExec"), "{sql}:\n{plan}");
            if !sql.contains("LIMIT") {
                assert_eq!(planned, fast, "{sql}");
            }
        }
    }

    #[test]
    fn sources_are_k_places_up_within_each_group() {
        // Two groups laid out as rows [4, 0, 2] and [1, 3]; row 5 of none.
        let layout = [4, 0, 2, 1, 3];
        let bounds = [0, 3, 5];
        assert_eq!(
            sources_of(&layout, &bounds, 1, 6),
            [4, NO_ROW, 0, 1, NO_ROW, NO_ROW]
        );
        assert_eq!(
            sources_of(&layout, &bounds, 2, 6),
            [NO_ROW, NO_ROW, 4, NO_ROW, NO_ROW, NO_ROW]
        );
        assert_eq!(sources_of(&layout, &bounds, 3, 6), [NO_ROW; 6]);
    }
}
