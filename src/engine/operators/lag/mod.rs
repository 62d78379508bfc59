//! `lag()` over sorted input, computed a batch at a time.
//!
//! DataFusion evaluates `lag(x) OVER (PARTITION BY id ORDER BY snapshot)` in
//! `BoundedWindowAggExec`, which keeps state, slices and evaluators per window partition:
//! over the history of 100,000 machines (3.1 M rows in 100,000 partitions of 30) that was
//! 786 ms of compute, more than the sort beneath it (docs/benchmarks-history.md, the fifth round).
//! Once the input is sorted by the partition keys, a row's `lag(x, k)` is the value `k`
//! rows up when the keys there are the same, else the default: a shifted copy of `x` and
//! one comparison of the keys with the keys `k` rows up, whole arrays at once.
//!
//! `SortedLag` (`engine::rules`) swaps a `BoundedWindowAggExec` whose input is sorted by its partition
//! keys (mode `Sorted`) and whose every window function is a plain `lag` (a literal
//! offset from 1 to [`MAX_OFFSET`], a literal default or none, no `IGNORE NULLS`) for
//! [`LagExec`]. Everything else keeps DataFusion's operator.

use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, Scalar, new_null_array};
use arrow::buffer::BooleanBuffer;
use arrow::compute::kernels::cmp::not_distinct;
use arrow::compute::kernels::zip::zip;
use arrow::compute::{and, concat};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::error::ArrowError;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::Result as DfResult;
use datafusion::execution::TaskContext;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Literal;
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::windows::{BoundedWindowAggExec, StandardWindowExpr, WindowUDFExpr};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, InputDistributionRequirements, InputOrderMode,
    PlanProperties, SendableRecordBatchStream,
};
use datafusion::scalar::ScalarValue;
use futures::StreamExt;

use super::stand_in::stand_in;

mod grouped;

pub(crate) use grouped::GroupedLagExec;

/// The largest offset [`LagExec`] takes: it carries that many rows from batch to batch.
const MAX_OFFSET: usize = 4096;

/// One `lag(value, offset, default)`.
#[derive(Debug, Clone)]
struct Lag {
    value: Arc<dyn PhysicalExpr>,
    offset: usize,
    /// Of the value's type; a typed null when the call gives none.
    default: ScalarValue,
}

impl Lag {
    /// `Some` when `expr` is a `lag` [`LagExec`] computes the way DataFusion would.
    fn of(expr: &Arc<dyn datafusion::physical_plan::WindowExpr>) -> Option<Lag> {
        let standard = expr.as_any().downcast_ref::<StandardWindowExpr>()?;
        let udf = standard
            .get_standard_func_expr()
            .as_any()
            .downcast_ref::<WindowUDFExpr>()?;
        if udf.fun().name() != "lag" {
            return None;
        }
        // `IGNORE NULLS`, and a `lag` DataFusion turned around to read its input
        // backwards (which shifts the other way), are only visible in the expression's
        // derived `Debug`, whose last two fields they are; anything else is left alone.
        if !format!("{udf:?}").ends_with("is_reversed: false, ignore_nulls: false }") {
            return None;
        }
        let (value, rest) = udf.args().split_first()?;
        let offset = match rest.first() {
            None => 1,
            Some(e) => match e.downcast_ref::<Literal>()?.value() {
                ScalarValue::Int8(Some(n)) => i64::from(*n),
                ScalarValue::Int16(Some(n)) => i64::from(*n),
                ScalarValue::Int32(Some(n)) => i64::from(*n),
                ScalarValue::Int64(Some(n)) => *n,
                ScalarValue::UInt8(Some(n)) => i64::from(*n),
                ScalarValue::UInt16(Some(n)) => i64::from(*n),
                ScalarValue::UInt32(Some(n)) => i64::from(*n),
                _ => return None,
            },
        };
        let offset = usize::try_from(offset)
            .ok()
            .filter(|k| (1..=MAX_OFFSET).contains(k))?;
        let value_type = expr.field().ok()?.data_type().clone();
        let default = match rest.get(1) {
            None => ScalarValue::try_from(&value_type).ok()?,
            Some(e) => {
                let given = e.downcast_ref::<Literal>()?.value();
                if given.is_null() {
                    ScalarValue::try_from(&value_type).ok()?
                } else {
                    given.cast_to(&value_type).ok()?
                }
            }
        };
        if rest.len() > 2 || !comparable(&value_type) {
            return None;
        }
        Some(Lag {
            value: Arc::clone(value),
            offset,
            default,
        })
    }
}

/// Whether arrow's `zip`, `concat` and `not_distinct` all take arrays of this type.
fn comparable(t: &DataType) -> bool {
    t.is_primitive()
        || matches!(
            t,
            DataType::Boolean
                | DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Utf8View
                | DataType::Binary
                | DataType::LargeBinary
                | DataType::BinaryView
                | DataType::FixedSizeBinary(_)
        )
}

/// `BoundedWindowAggExec` of nothing but [`Lag`]s over input sorted by the partition keys:
/// each output batch is its input batch plus one column per `lag`. Plans show it as
/// `LagExec` with the window expressions DataFusion planned.
#[derive(Debug)]
pub(crate) struct LagExec {
    /// The operator this replaces: its properties, requirements and display are this one's.
    planned: Arc<BoundedWindowAggExec>,
    partition_by: Vec<Arc<dyn PhysicalExpr>>,
    lags: Vec<Lag>,
    metrics: ExecutionPlanMetricsSet,
}

impl LagExec {
    /// `Some` when every window function of `window` is a [`Lag`] and its input arrives
    /// sorted by the partition keys.
    pub(crate) fn of(window: &BoundedWindowAggExec) -> Option<LagExec> {
        if window.input_order_mode != InputOrderMode::Sorted {
            return None;
        }
        let exprs = window.window_expr();
        let partition_by = exprs.first()?.partition_by().to_vec();
        let schema = window.input().schema();
        for key in &partition_by {
            if !comparable(&key.data_type(&schema).ok()?) {
                return None;
            }
        }
        let lags = exprs.iter().map(Lag::of).collect::<Option<Vec<_>>>()?;
        let planned = Arc::new(window.clone());
        Some(LagExec {
            planned,
            partition_by,
            lags,
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }
}

impl DisplayAs for LagExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        show("LagExec", &self.planned, t, f)
    }
}

/// An operator standing in for `window`, shown under its own `name` with the window
/// expressions DataFusion planned (as `window` itself in the tree rendering).
fn show(
    name: &str,
    window: &BoundedWindowAggExec,
    t: DisplayFormatType,
    f: &mut fmt::Formatter,
) -> fmt::Result {
    if matches!(t, DisplayFormatType::TreeRender) {
        return window.fmt_as(t, f);
    }
    let names: Vec<&str> = window.window_expr().iter().map(|e| e.name()).collect();
    write!(f, "{name}: wdw=[{}]", names.join(", "))
}

impl ExecutionPlan for LagExec {
    fn name(&self) -> &str {
        "LagExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.planned.properties()
    }

    fn input_distribution_requirements(&self) -> InputDistributionRequirements {
        self.planned.input_distribution_requirements()
    }

    fn required_input_ordering(
        &self,
    ) -> Vec<Option<datafusion::physical_expr::OrderingRequirements>> {
        self.planned.required_input_ordering()
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
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
        Ok(stand_in(planned, LagExec::of).data)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let input = self.planned.input().execute(partition, context)?;
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let mut state = Shifter::new(self, self.schema())?;
        let stream = input.map(move |batch| {
            let _timer = baseline.elapsed_compute().timer();
            let out = state.next(&batch?)?;
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

/// The state of one partition's stream: the last rows seen, to shift across batches.
struct Shifter {
    schema: SchemaRef,
    partition_by: Vec<Arc<dyn PhysicalExpr>>,
    lags: Vec<Lag>,
    /// How many rows are carried: the largest offset.
    depth: usize,
    /// The last `depth` rows' partition keys and values, oldest first; before the first
    /// batch, null rows marked not `seen`.
    keys: Vec<ArrayRef>,
    values: Vec<ArrayRef>,
    seen: BooleanArray,
}

impl Shifter {
    fn new(exec: &LagExec, schema: SchemaRef) -> DfResult<Shifter> {
        let input = exec.planned.input().schema();
        let depth = exec.lags.iter().map(|l| l.offset).max().unwrap_or(1);
        let keys = exec
            .partition_by
            .iter()
            .map(|k| Ok(new_null_array(&k.data_type(&input)?, depth)))
            .collect::<DfResult<Vec<_>>>()?;
        let values = exec
            .lags
            .iter()
            .map(|l| new_null_array(&l.default.data_type(), depth))
            .collect();
        Ok(Shifter {
            schema,
            partition_by: exec.partition_by.clone(),
            lags: exec.lags.clone(),
            depth,
            keys,
            values,
            seen: BooleanArray::from(vec![false; depth]),
        })
    }

    /// `batch` with its `lag` columns.
    fn next(&mut self, batch: &RecordBatch) -> DfResult<RecordBatch> {
        let rows = batch.num_rows();
        let depth = self.depth;
        let keys = self
            .partition_by
            .iter()
            .map(|k| k.evaluate(batch)?.into_array(rows))
            .collect::<DfResult<Vec<_>>>()?;
        // The carried rows followed by the batch's first `depth`: where rows near the top
        // of the batch find the rows `offset` up.
        let head = rows.min(depth);
        let head_keys = keys
            .iter()
            .zip(&self.keys)
            .map(|(k, carried)| concat(&[carried.as_ref(), k.slice(0, head).as_ref()]))
            .collect::<Result<Vec<_>, _>>()?;
        let head_seen = concat(&[&self.seen, &BooleanArray::from(vec![true; head])])?;
        let head_seen = head_seen.as_boolean();

        let mut columns = batch.columns().to_vec();
        let mut carried_values = Vec::with_capacity(self.lags.len());
        for (lag, carried) in self.lags.iter().zip(&self.values) {
            let values = lag.value.evaluate(batch)?.into_array(rows)?;
            let head_values = concat(&[carried.as_ref(), values.slice(0, head).as_ref()])?;
            let k = lag.offset;
            // Rows [0, top) look up into the carried rows, rows [top, rows) into the batch.
            let top = rows.min(k);
            let start = depth - k;
            let mut same = head_seen.slice(start, top);
            let mut shifted: Vec<ArrayRef> = vec![head_values.slice(start, top)];
            for head_key in &head_keys {
                let here = head_key.slice(depth, top);
                let up = head_key.slice(start, top);
                same = and(&same, &not_distinct(&here, &up)?)?;
            }
            if rows > k {
                let mut tail = BooleanArray::from(vec![true; rows - k]);
                for key in &keys {
                    tail = and(&tail, &same_as_above(key, k)?)?;
                }
                same = concat(&[&same, &tail])?.as_boolean().clone();
                shifted.push(values.slice(0, rows - k));
            }
            let shifted: Vec<&dyn Array> = shifted.iter().map(|a| a.as_ref()).collect();
            let shifted = concat(&shifted)?;
            let default = Scalar::new(lag.default.to_array_of_size(1)?);
            columns.push(zip(&same, &shifted, &default)?);
            carried_values.push(last(&head_values, &values, depth));
        }
        self.keys = head_keys
            .iter()
            .zip(&keys)
            .map(|(h, k)| last(h, k, depth))
            .collect();
        self.values = carried_values;
        self.seen = if rows >= depth {
            BooleanArray::from(vec![true; depth])
        } else {
            head_seen.slice(rows, depth)
        };
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }
}

/// Row `i + k` of `array` against row `i`, for each `i` up to `len - k` (`len > k`): the
/// same value, or both null. Byte views (the 40-character machine ids) are compared view
/// first: arrow's `not_distinct` orders each pair in full, over twice as slow.
fn same_as_above(array: &ArrayRef, k: usize) -> Result<BooleanArray, ArrowError> {
    let n = array.len() - k;
    let values = if let Some(strings) = array.as_string_view_opt() {
        views_equal(strings.views(), k, n, |i| strings.value(i).as_bytes())
    } else if let Some(bytes) = array.as_binary_view_opt() {
        views_equal(bytes.views(), k, n, |i| bytes.value(i))
    } else {
        return not_distinct(&array.slice(k, n), &array.slice(0, n));
    };
    Ok(BooleanArray::from(match array.logical_nulls() {
        None => values,
        Some(nulls) => {
            let (below, above) = (nulls.inner().slice(k, n), nulls.inner().slice(0, n));
            let both_valid = &below & &above;
            let both_null = &!&below & &!&above;
            &(&both_valid & &values) | &both_null
        }
    }))
}

/// Whether view `i + k` and view `i` hold the same bytes, for `i` in `0..n`; `bytes(i)`
/// reads value `i`. Equal views are equal values; a value of at most 12 bytes lives in
/// its view, zero-padded, so unequal such views are unequal values; longer values of one
/// length and prefix are compared byte for byte.
fn views_equal<'a>(
    views: &[u128],
    k: usize,
    n: usize,
    bytes: impl Fn(usize) -> &'a [u8],
) -> BooleanBuffer {
    BooleanBuffer::collect_bool(n, |i| {
        let (below, above) = (views[i + k], views[i]);
        if below == above {
            return true;
        }
        // The low 32 bits are the length, the next 32 the first four bytes.
        let length = below as u32;
        if length != above as u32 || length <= 12 || (below >> 32) as u32 != (above >> 32) as u32 {
            return false;
        }
        bytes(i + k) == bytes(i)
    })
}

/// The last `depth` rows of the carried rows followed by `batch`, given `head`, the carried
/// rows followed by the batch's first rows.
fn last(head: &ArrayRef, batch: &ArrayRef, depth: usize) -> ArrayRef {
    if batch.len() >= depth {
        batch.slice(batch.len() - depth, depth)
    } else {
        // `head` holds all of `batch` after the `depth` carried rows.
        head.slice(batch.len(), depth)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int32Array, Int64Array, StringViewArray};
    use arrow::datatypes::{Field, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::physical_optimizer::PhysicalOptimizerRule;
    use datafusion::physical_plan::displayable;
    use datafusion::prelude::{SessionConfig, SessionContext};

    /// 300 rows in runs of uneven length, over three batches per partition of uneven
    /// size: partition keys `g` (strings, some null) and `h` (some null), order `t`
    /// (unique), values `v` (strings, long and short, some null) and `n`.
    fn table() -> MemTable {
        let schema = Arc::new(Schema::new(vec![
            Field::new("g", DataType::Utf8View, true),
            Field::new("h", DataType::Int32, true),
            Field::new("t", DataType::Int64, false),
            Field::new("v", DataType::Utf8View, true),
            Field::new("n", DataType::Int64, true),
        ]));
        let rows = 300_i64;
        // A small deterministic generator, so the runs of equal keys vary in length.
        let mut seed = 7_u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            seed >> 33
        };
        let (mut g, mut h, mut v, mut n) = (vec![], vec![], vec![], vec![]);
        for _ in 0..rows {
            let r = next();
            g.push(match r % 5 {
                0 => None,
                // Empty, as a null partition key is not.
                4 => Some(String::new()),
                k => Some(format!("machine-{k}-with-a-name-longer-than-twelve")),
            });
            h.push((r % 7 != 0).then_some((r % 3) as i32));
            v.push(match r % 6 {
                0 => None,
                1 => Some("High".to_string()),
                2 => Some("Informational".to_string()),
                k => Some(format!("v{k}")),
            });
            n.push((r % 4 != 0).then_some((r % 1000) as i64));
        }
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringViewArray::from(g)),
                Arc::new(Int32Array::from(h)),
                Arc::new(Int64Array::from((0..rows).collect::<Vec<_>>())),
                Arc::new(StringViewArray::from(v)),
                Arc::new(Int64Array::from(n)),
            ],
        )
        .expect("batch");
        let cuts = [(0, 1), (1, 2), (3, 90), (93, 7), (100, 150), (250, 50)];
        let partitions = cuts
            .chunks(3)
            .map(|c| c.iter().map(|&(at, len)| batch.slice(at, len)).collect())
            .collect();
        MemTable::try_new(schema, partitions).expect("table")
    }

    #[test]
    fn same_as_above_agrees_with_arrows_not_distinct() {
        // Inline and longer values, of one length and prefix or not, repeated, null.
        let values = [
            Some("a-long-machine-identifier-0001"),
            Some("a-long-machine-identifier-0001"),
            Some("a-long-machine-identifier-0002"),
            None,
            None,
            Some("High"),
            Some("High"),
            Some("Hig"),
            Some("twelve bytes"),
            Some("twelve bytes!"),
            Some("twelve bytes!"),
            Some("b-long-machine-identifier-0002"),
            Some(""),
            Some(""),
            None,
            Some("a-long-machine-identifier-0001"),
        ];
        let strings: ArrayRef = Arc::new(StringViewArray::from(values.to_vec()));
        // The same values with their views pointing into one buffer where repeated.
        let bytes: ArrayRef = Arc::new(arrow::array::BinaryViewArray::from(
            values
                .iter()
                .map(|v| v.map(str::as_bytes))
                .collect::<Vec<_>>(),
        ));
        let numbers: ArrayRef = Arc::new(Int64Array::from(
            values
                .iter()
                .map(|v| v.map(|s| s.len() as i64))
                .collect::<Vec<_>>(),
        ));
        for array in [&strings, &bytes, &numbers] {
            for k in 1..5 {
                let n = array.len() - k;
                let expected =
                    not_distinct(&array.slice(k, n), &array.slice(0, n)).expect("compares");
                assert_eq!(
                    same_as_above(array, k).expect("compares"),
                    expected,
                    "k = {k}"
                );
            }
        }
    }

    /// The rows `sql` answers over [`table`], and whether its plan holds a [`LagExec`].
    async fn run(sql: &str, with_rule: bool) -> (String, bool) {
        let rules: &[Arc<dyn PhysicalOptimizerRule + Send + Sync>] = if with_rule {
            &[Arc::new(crate::engine::rules::SortedLag)]
        } else {
            &[]
        };
        let (text, plan) = run_with(sql, rules).await;
        (text, plan.contains("LagExec"))
    }

    /// The rows `sql` answers over [`table`], and its physical plan, with `rules` after
    /// DataFusion's own.
    pub(super) async fn run_with(
        sql: &str,
        rules: &[Arc<dyn PhysicalOptimizerRule + Send + Sync>],
    ) -> (String, String) {
        // Three partitions, batches of 5 rows out of the sort: offsets beyond a batch,
        // partitions across batches.
        let config = SessionConfig::new()
            .with_target_partitions(3)
            .with_batch_size(5);
        let mut state = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features();
        for rule in rules {
            state = state.with_physical_optimizer_rule(Arc::clone(rule));
        }
        let ctx = SessionContext::new_with_state(state.build());
        ctx.register_table("t", Arc::new(table()))
            .expect("registers");
        let df = ctx.sql(sql).await.expect("plans");
        let plan = df
            .clone()
            .create_physical_plan()
            .await
            .expect("physical plan");
        let shown = displayable(plan.as_ref()).indent(true).to_string();
        let batches = df.collect().await.expect("runs");
        let text = arrow::util::pretty::pretty_format_batches(&batches).expect("formats");
        (text.to_string(), shown)
    }

    #[tokio::test]
    async fn lag_over_sorted_input_answers_as_datafusion_does() {
        let cases = [
            // Two partition keys with nulls; offsets 1 to 7 (beyond a 5-row batch);
            // defaults of the value's type, cast, and null.
            "SELECT g, h, t, lag(v) OVER w AS a, lag(v, 2) OVER w AS b, \
             lag(n, 7, -1) OVER w AS c, lag(v, 1, 'none') OVER w AS d, \
             lag(n, 3, NULL) OVER w AS e \
             FROM t WINDOW w AS (PARTITION BY g, h ORDER BY t) ORDER BY t",
            // No partition key: one partition over every row.
            "SELECT t, lag(v, 4) OVER (ORDER BY t) AS a FROM t ORDER BY t",
            // Descending order.
            "SELECT t, lag(n) OVER (PARTITION BY h ORDER BY t DESC) AS a FROM t ORDER BY t",
            // The suite's shape: a filter on the lag.
            "SELECT count(*) AS changes FROM (SELECT v, lag(v) OVER (PARTITION BY g \
             ORDER BY t) AS p FROM t) s WHERE p IS NOT NULL AND p <> v",
        ];
        for sql in cases {
            let (planned, plain) = run(sql, false).await;
            let (fast, lagged) = run(sql, true).await;
            assert!(!plain && lagged, "{sql}: LagExec only with the rule");
            assert_eq!(planned, fast, "{sql}");
        }
    }

    #[tokio::test]
    async fn other_window_functions_keep_datafusions_operator() {
        let cases = [
            "SELECT t, lag(v) IGNORE NULLS OVER (PARTITION BY g ORDER BY t) AS a FROM t ORDER BY t",
            "SELECT t, lead(v) OVER (PARTITION BY g ORDER BY t) AS a FROM t ORDER BY t",
            "SELECT t, lag(v, 0) OVER (PARTITION BY g ORDER BY t) AS a FROM t ORDER BY t",
            "SELECT t, lag(v, -1) OVER (PARTITION BY g ORDER BY t) AS a FROM t ORDER BY t",
            "SELECT t, lag(v) OVER w AS a, row_number() OVER w AS r FROM t \
             WINDOW w AS (PARTITION BY g ORDER BY t) ORDER BY t",
        ];
        for sql in cases {
            let (planned, _) = run(sql, false).await;
            let (fast, lagged) = run(sql, true).await;
            assert!(!lagged, "{sql}: no LagExec");
            assert_eq!(planned, fast, "{sql}");
        }
    }

    #[tokio::test]
    async fn lag_in_either_direction_over_one_sort_answers_as_datafusion_does() {
        // DataFusion may evaluate one of these reading its sorted input backwards (a
        // `lag` turned into a `lead`, or the other way round): whichever operator
        // answers, the rows are DataFusion's.
        let cases = [
            "SELECT t, lag(n) OVER (ORDER BY t) AS a, lag(n) OVER (ORDER BY t DESC) AS b \
             FROM t ORDER BY t",
            "SELECT t, lag(v, 2) OVER (PARTITION BY g ORDER BY t DESC) AS a, \
             lead(v, 2) OVER (PARTITION BY g ORDER BY t) AS b FROM t ORDER BY t",
        ];
        for sql in cases {
            let (planned, _) = run(sql, false).await;
            let (fast, _) = run(sql, true).await;
            assert_eq!(planned, fast, "{sql}");
        }
    }
}
