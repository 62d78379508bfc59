//! Counts grouped by partition values and by strings of a few values, a batch at a time.
//!
//! A history trend (`count(*)`, `count(*) FILTER (WHERE health_status = 'Active')`, ...
//! `GROUP BY snapshot`) groups by `snapshot`, which the scan sets per file: every batch
//! it reads holds one value. DataFusion's partial aggregate still hashes the key of every
//! row and adds each row to its group's counts; over 3.1 M rows that was a third of the
//! daily trend's CPU. Counts per status or per device group group by strings the files
//! hold dictionary-encoded, which arrive as `Utf8View` arrays whose equal values mostly
//! share one 16-byte view: DataFusion compares and hashes the strings row by row, 42-75 ns
//! a row for two columns (docs/benchmarks-history.md, the fifth round).
//!
//! [`KeyedCountExec`] numbers each batch's distinct keys first (a constant column has
//! one; a string column is numbered by its views, then each distinct view coded by its
//! bytes), so rows only add to counts indexed by small integers, and a batch of one group
//! adds up set bits. A `count(DISTINCT ...)` of a string view column keeps the values
//! of every group in one table (`distinct::ByteSet`); of a partition column, one value
//! per group a batch.
//! `GroupedCounts` (`engine::rules`) puts it in place of a partial `AggregateExec` that computes nothing
//! but `count` (no `ORDER BY`), grouped by one to four columns, each a `Utf8View` or
//! `BinaryView` column or a partition column of the file scan straight below. A
//! `DISTINCT` count needs that scan straight below, and its argument a string view
//! column or a partition column that is not an integer.
//! A batch with more than one group per [`ROWS_PER_GROUP`] rows (grouping by machine ids),
//! whose partition column changes within it, or whose distinct count's partition column
//! does, ends the table: the groups counted so far are passed on. From there, while the
//! batches' keys come in runs of equal values (`runs`: a user's machines listed
//! together), each run is passed on as one row of counts; the first batch that does not,
//! and the rest of the partition, go to DataFusion's own partial aggregate. The final
//! step adds up counts and unites distinct values.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryViewBuilder, Int64Array, RecordBatch, Scalar, StringViewBuilder,
};
use arrow::buffer::BooleanBuffer;
use arrow::compute::kernels::cmp::eq;
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::hash_utils::RandomState;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::logical_expr::ColumnarValue;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, EmptyRecordBatchStream, ExecutionPlan,
    InputDistributionRequirements, InputOrderMode, PlanProperties, SendableRecordBatchStream,
};
use datafusion::scalar::ScalarValue;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};

use super::stand_in::stand_in;

mod distinct;
use distinct::{Distinct, by_bytes};
mod runs;
use runs::count_runs;

/// One `count(arg) FILTER (WHERE filter)`, or `count(DISTINCT arg)`.
#[derive(Debug, Clone)]
struct Count {
    arg: Arc<dyn PhysicalExpr>,
    filter: Option<Arc<dyn PhysicalExpr>>,
    distinct: bool,
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

/// A partial `AggregateExec` of [`Count`]s grouped by string-view and partition columns:
/// one row per group, the keys then the counts as the partial aggregate's state (an
/// `Int64`, or a list of values for a distinct count). Plans show it as
/// `KeyedCountExec` with the aggregate's grouping and expressions.
#[derive(Debug)]
pub(crate) struct KeyedCountExec {
    /// The aggregate this replaces: its schema, properties and requirements are this one's.
    planned: Arc<AggregateExec>,
    keys: Vec<Arc<dyn PhysicalExpr>>,
    counts: Vec<Count>,
    metrics: ExecutionPlanMetricsSet,
}

/// The most grouping columns: a group's codes are packed into one `u128`.
const MAX_KEYS: usize = 4;

impl KeyedCountExec {
    /// `Some` when `aggregate` is a partial aggregate of counts grouped by string view
    /// columns and partition columns of the file scan straight below (see the module
    /// docs for the distinct counts it takes).
    pub(crate) fn of(aggregate: &AggregateExec) -> Option<KeyedCountExec> {
        if *aggregate.mode() != AggregateMode::Partial
            || aggregate.limit_options().is_some()
            || *aggregate.input_order_mode() != InputOrderMode::Linear
            || !aggregate.group_expr().is_single()
        {
            return None;
        }
        let group = aggregate.group_expr().expr();
        if group.is_empty() || group.len() > MAX_KEYS {
            return None;
        }
        let input = aggregate.input().schema();
        let scan = aggregate.input().downcast_ref::<DataSourceExec>();
        let partition_columns = scan
            .and_then(|scan| scan.data_source().downcast_ref::<FileScanConfig>())
            .map(|files| files.table_partition_cols().clone())
            .unwrap_or_default();
        let mut keys = Vec::with_capacity(group.len());
        for (key, _) in group {
            let column = key.downcast_ref::<Column>()?;
            let field = input.fields().get(column.index())?;
            let by_views = by_bytes(field.data_type());
            let partition = partition_columns.iter().any(|p| p.name() == column.name());
            if field.name() != column.name() || !(by_views || partition) {
                return None;
            }
            keys.push((Arc::clone(key), field.data_type().clone()));
        }
        let mut counts = Vec::with_capacity(aggregate.aggr_expr().len());
        // Per count, for a distinct count the type of the values its state lists.
        let mut listed = Vec::with_capacity(counts.capacity());
        for (a, filter) in aggregate.aggr_expr().iter().zip(aggregate.filter_expr()) {
            let [arg] = a.expressions().try_into().ok()?;
            if a.fun().name() != "count" || !a.order_bys().is_empty() {
                return None;
            }
            if a.is_distinct() {
                // Straight over a scan only: there the rows of each snapshot come in the
                // order of the one before, which `ByteSet` makes use of. Over a join's
                // output (ids in no order) DataFusion's own sets were faster (query 06:
                // 85 against 100 ms).
                scan?;
                listed.push(Some(distinct_values(&arg, &input, &partition_columns)?));
            } else {
                listed.push(None);
            }
            counts.push(Count {
                arg,
                filter: filter.clone(),
                distinct: a.is_distinct(),
            });
        }
        // The output: the keys, then each count's state: an `Int64`, or for a distinct
        // count a list of its argument's values.
        let output = aggregate.schema();
        let fields = output.fields();
        let state_is = |f: &Arc<arrow::datatypes::Field>, listed: &Option<DataType>| match (
            f.data_type(),
            listed,
        ) {
            (DataType::Int64, None) => true,
            (DataType::List(item), Some(t)) => item.data_type() == t,
            _ => false,
        };
        if fields.len() != keys.len() + counts.len()
            || fields
                .iter()
                .zip(&keys)
                .any(|(f, (_, t))| f.data_type() != t)
            || fields
                .iter()
                .skip(keys.len())
                .zip(&listed)
                .any(|(f, l)| !state_is(f, l))
        {
            return None;
        }
        Some(KeyedCountExec {
            planned: Arc::new(aggregate.clone()),
            keys: keys.into_iter().map(|(k, _)| k).collect(),
            counts,
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }
}

/// The type of the values a partial `count(DISTINCT arg)` keeps, when [`Tally`] can
/// keep them: `arg` is a column of string or binary views, or a partition column of the
/// scan (one value a batch) of a type whose distinct values DataFusion keeps as a list
/// of them (not an integer, which has its own kind of state).
fn distinct_values(
    arg: &Arc<dyn PhysicalExpr>,
    input: &SchemaRef,
    partition_columns: &[arrow::datatypes::FieldRef],
) -> Option<DataType> {
    let column = arg.downcast_ref::<Column>()?;
    let field = input.fields().get(column.index())?;
    if field.name() != column.name() {
        return None;
    }
    if by_bytes(field.data_type()) {
        return Some(field.data_type().clone());
    }
    let value_type = match field.data_type() {
        DataType::Dictionary(_, values) => values.as_ref(),
        other => other,
    };
    let partition = partition_columns.iter().any(|p| p.name() == column.name());
    (partition && !value_type.is_integer() && !value_type.is_nested()).then(|| value_type.clone())
}

impl DisplayAs for KeyedCountExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        if matches!(t, DisplayFormatType::TreeRender) {
            return self.planned.fmt_as(t, f);
        }
        let keys: Vec<String> = self.keys.iter().map(|k| k.to_string()).collect();
        let names: Vec<&str> = self.planned.aggr_expr().iter().map(|a| a.name()).collect();
        write!(
            f,
            "KeyedCountExec: gby=[{}], aggr=[{}]",
            keys.join(", "),
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
        Ok(stand_in(planned, KeyedCountExec::of).data)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let input = self
            .planned
            .input()
            .execute(partition, Arc::clone(&context))?;
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let tally = Tally::new(self.schema(), self.keys.clone(), self.counts.clone());
        let planned = Arc::clone(&self.planned);
        // The groups and distinct sets grow with the partition: what they hold is
        // reserved from the session's memory pool as they grow.
        let reservation = MemoryConsumer::new(format!("KeyedCountExec[{partition}]"))
            .register(context.memory_pool());
        let counted =
            futures::stream::once(count(input, tally, reservation, planned, context, baseline))
                .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema(),
            counted,
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// The partial aggregate's output for `input`: `tally`'s counts, or, from the first batch
/// with many groups on, those so far and then `planned`'s own over the rest.
async fn count(
    mut input: SendableRecordBatchStream,
    mut tally: Tally,
    reservation: MemoryReservation,
    planned: Arc<AggregateExec>,
    context: Arc<TaskContext>,
    baseline: BaselineMetrics,
) -> DfResult<BoxStream<'static, DfResult<RecordBatch>>> {
    while let Some(batch) = input.next().await {
        let batch = batch?;
        let timer = baseline.elapsed_compute().timer();
        if tally.add(&batch)? {
            reservation.try_resize(tally.memory_size())?;
            continue;
        }
        // The final step adds up a group's rows from both.
        let out = tally.finish()?;
        reservation.free();
        timer.done();
        baseline.record_output(out.num_rows());
        let runs = Runs {
            schema: Arc::clone(&tally.schema),
            keys: tally.keys,
            counts: tally.counts,
            planned,
            context,
            baseline,
        };
        let rest = futures::stream::try_unfold(
            (Arc::new(runs), Rest::Runs(Some(batch), input)),
            |(runs, rest)| async move {
                let next = runs.next(rest).await?;
                Ok(next.map(|(batch, rest)| (batch, (runs, rest))))
            },
        );
        return Ok(futures::stream::iter([Ok(out)]).chain(rest).boxed());
    }
    let _timer = baseline.elapsed_compute().timer();
    let out = tally.finish()?;
    baseline.record_output(out.num_rows());
    Ok(futures::stream::iter([Ok(out)]).boxed())
}

/// What is left of a partition once its groups are too many for a [`Tally`].
enum Rest {
    /// Counted a run of equal keys at a time ([`count_runs`]): a batch not yet counted,
    /// then the input.
    Runs(Option<RecordBatch>, SendableRecordBatchStream),
    /// Handed to DataFusion's partial aggregate.
    Handed(SendableRecordBatchStream),
}

/// How the rest of a partition is counted.
struct Runs {
    schema: SchemaRef,
    keys: Vec<Arc<dyn PhysicalExpr>>,
    counts: Vec<Count>,
    planned: Arc<AggregateExec>,
    context: Arc<TaskContext>,
    baseline: BaselineMetrics,
}

impl Runs {
    /// The next output batch and what is left after it: runs while each batch's runs
    /// are long, then, from the first batch whose runs are short, DataFusion's partial
    /// aggregate over that batch and the rest.
    async fn next(&self, rest: Rest) -> DfResult<Option<(RecordBatch, Rest)>> {
        let (batch, input) = match rest {
            Rest::Handed(mut handed) => {
                return Ok(handed
                    .next()
                    .await
                    .transpose()?
                    .map(|b| (b, Rest::Handed(handed))));
            }
            Rest::Runs(Some(batch), input) => (batch, input),
            Rest::Runs(None, mut input) => match input.next().await {
                Some(batch) => (batch?, input),
                None => return Ok(None),
            },
        };
        let timer = self.baseline.elapsed_compute().timer();
        let counted = count_runs(&self.schema, &self.keys, &self.counts, &batch)?;
        timer.done();
        if let Some(out) = counted {
            self.baseline.record_output(out.num_rows());
            return Ok(Some((out, Rest::Runs(None, input))));
        }
        let rest = RecordBatchStreamAdapter::new(
            input.schema(),
            futures::stream::iter([Ok(batch)]).chain(input),
        );
        let handed = hand_over(&self.planned, Box::pin(rest), Arc::clone(&self.context))?;
        Box::pin(self.next(Rest::Handed(handed))).await
    }
}

/// `planned`, the partial aggregate, run over `rest` instead of its input.
fn hand_over(
    planned: &AggregateExec,
    rest: SendableRecordBatchStream,
    context: Arc<TaskContext>,
) -> DfResult<SendableRecordBatchStream> {
    let schema = rest.schema();
    let source = StreamingTableExec::try_new(
        Arc::clone(&schema),
        vec![Arc::new(Remaining(
            Mutex::new(Some(rest)),
            Arc::clone(&schema),
        ))],
        None,
        [],
        false,
        None,
    )?;
    let aggregate = AggregateExec::try_new(
        *planned.mode(),
        planned.group_expr().clone(),
        planned.aggr_expr().to_vec(),
        planned.filter_expr().to_vec(),
        Arc::new(source),
        planned.input_schema(),
    )?;
    aggregate.execute(0, context)
}

/// The rest of a partition's input, read once.
struct Remaining(Mutex<Option<SendableRecordBatchStream>>, SchemaRef);

impl fmt::Debug for Remaining {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Remaining")
    }
}

impl PartitionStream for Remaining {
    fn schema(&self) -> &SchemaRef {
        &self.1
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let taken = self.0.lock().ok().and_then(|mut s| s.take());
        taken.unwrap_or_else(|| Box::pin(EmptyRecordBatchStream::new(Arc::clone(&self.1))))
    }
}

/// One grouping column's values so far, each with a code, numbered from 0 as first seen.
/// String and binary values are kept as bytes, and built into an array at the end.
struct Codes {
    /// The column's type.
    data_type: DataType,
    bytes: HashMap<Box<[u8]>, u32, RandomState>,
    scalars: HashMap<ScalarValue, u32, RandomState>,
}

impl Codes {
    fn new(data_type: DataType) -> Codes {
        Codes {
            data_type,
            bytes: HashMap::with_hasher(RandomState::default()),
            scalars: HashMap::with_hasher(RandomState::default()),
        }
    }

    fn next_code(&self) -> DfResult<u32> {
        u32::try_from(self.bytes.len() + self.scalars.len())
            .map_err(|_| DataFusionError::Execution("more than 2^32 groups".to_string()))
    }

    fn scalar(&mut self, value: ScalarValue) -> DfResult<u32> {
        if let Some(&c) = self.scalars.get(&value) {
            return Ok(c);
        }
        let c = self.next_code()?;
        self.scalars.insert(value, c);
        Ok(c)
    }

    /// The code of a string or binary value, `None` for null (coded as the typed null).
    fn bytes(&mut self, value: Option<&[u8]>) -> DfResult<u32> {
        let Some(value) = value else {
            let null = ScalarValue::try_from(&self.data_type)?;
            return self.scalar(null);
        };
        if let Some(&c) = self.bytes.get(value) {
            return Ok(c);
        }
        let c = self.next_code()?;
        self.bytes.insert(value.into(), c);
        Ok(c)
    }

    /// The values of `codes`, as an array of the column's type.
    fn array(&self, codes: impl Iterator<Item = u32>) -> DfResult<ArrayRef> {
        enum Value<'a> {
            Bytes(&'a [u8]),
            Scalar(&'a ScalarValue),
        }
        let mut by_code: Vec<Option<Value>> = Vec::new();
        by_code.resize_with(self.bytes.len() + self.scalars.len(), || None);
        for (b, &c) in &self.bytes {
            by_code[c as usize] = Some(Value::Bytes(b));
        }
        for (v, &c) in &self.scalars {
            by_code[c as usize] = Some(Value::Scalar(v));
        }
        let values = codes.map(|c| by_code.get(c as usize).and_then(Option::as_ref));
        match self.data_type {
            DataType::Utf8View => {
                let mut b = StringViewBuilder::new();
                for v in values {
                    match v {
                        Some(Value::Bytes(bytes)) => {
                            b.append_value(std::str::from_utf8(bytes).map_err(|e| {
                                DataFusionError::Execution(format!("a grouping key: {e}"))
                            })?)
                        }
                        _ => b.append_null(),
                    }
                }
                Ok(Arc::new(b.finish()))
            }
            DataType::BinaryView => {
                let mut b = BinaryViewBuilder::new();
                for v in values {
                    match v {
                        Some(Value::Bytes(bytes)) => b.append_value(bytes),
                        _ => b.append_null(),
                    }
                }
                Ok(Arc::new(b.finish()))
            }
            _ => {
                let scalars = values
                    .map(|v| match v {
                        Some(Value::Scalar(s)) => Ok((*s).clone()),
                        _ => ScalarValue::try_from(&self.data_type),
                    })
                    .collect::<DfResult<Vec<_>>>()?;
                if scalars.is_empty() {
                    return Ok(arrow::array::new_empty_array(&self.data_type));
                }
                ScalarValue::iter_to_array(scalars)
            }
        }
    }
}

/// One batch's numbering of a grouping column: each row's local number, and each local
/// number's code.
struct Local {
    /// `None` when every row has local number 0.
    rows: Option<Vec<u32>>,
    codes: Vec<u32>,
}

/// Numbers the rows of `keys` (a grouping column of one batch) by distinct value; `None`
/// when the column is neither string views nor constant, or holds more than `limit`
/// distinct views.
fn number(keys: &ArrayRef, codes: &mut Codes, limit: usize) -> DfResult<Option<Local>> {
    if let Some(strings) = keys.as_string_view_opt() {
        let bytes = |r| strings.value(r).as_bytes();
        return number_views(keys, strings.views(), bytes, codes, limit);
    }
    if let Some(binary) = keys.as_binary_view_opt() {
        return number_views(keys, binary.views(), |r| binary.value(r), codes, limit);
    }
    if !constant(keys)? {
        return Ok(None);
    }
    let code = codes.scalar(ScalarValue::try_from_array(keys, 0)?)?;
    Ok(Some(Local {
        rows: None,
        codes: vec![code],
    }))
}

/// [`number`] for string and binary views, `bytes(r)` reading row `r`'s value: rows with
/// one view (one value) share a local number without reading their bytes; each distinct
/// view is then coded by its value, so equal values behind different views get one code.
fn number_views<'a>(
    keys: &ArrayRef,
    views: &[u128],
    bytes: impl Fn(usize) -> &'a [u8],
    codes: &mut Codes,
    limit: usize,
) -> DfResult<Option<Local>> {
    let mut table = ViewTable::with_capacity(64);
    let mut local = Vec::with_capacity(views.len());
    let mut firsts: Vec<usize> = Vec::new();
    let nulls = keys.logical_nulls();
    let mut null_number = None;
    for (r, &view) in views.iter().enumerate() {
        if nulls.as_ref().is_some_and(|n| n.is_null(r)) {
            let n = *null_number.get_or_insert_with(|| {
                firsts.push(r);
                firsts.len() as u32 - 1
            });
            local.push(n);
            continue;
        }
        local.push(table.number(view, || {
            firsts.push(r);
            firsts.len() as u32 - 1
        }));
        if firsts.len() > limit {
            return Ok(None);
        }
    }
    let local_codes = firsts
        .iter()
        .map(|&r| codes.bytes((!keys.is_null(r)).then(|| bytes(r))))
        .collect::<DfResult<Vec<_>>>()?;
    Ok(Some(Local {
        rows: Some(local),
        codes: local_codes,
    }))
}

/// Open addressing from a view to its local number.
struct ViewTable {
    /// `(view, number + 1)`; a number of 0 marks a free slot.
    slots: Vec<(u128, u32)>,
    len: usize,
}

impl ViewTable {
    fn with_capacity(n: usize) -> ViewTable {
        ViewTable {
            slots: vec![(0, 0); n.next_power_of_two().max(16)],
            len: 0,
        }
    }

    fn slot(&self, view: u128) -> usize {
        // Fold the view to 64 bits, then Fibonacci hashing into the table.
        let folded = (view as u64) ^ ((view >> 64) as u64).rotate_left(29);
        let hash = folded.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (hash >> (64 - self.slots.len().trailing_zeros())) as usize
    }

    /// `view`'s number, `next()` when it is new.
    fn number(&mut self, view: u128, next: impl FnOnce() -> u32) -> u32 {
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let mask = self.slots.len() - 1;
        let mut at = self.slot(view);
        loop {
            let (v, n) = self.slots[at];
            if n == 0 {
                let number = next();
                self.slots[at] = (view, number + 1);
                self.len += 1;
                return number;
            }
            if v == view {
                return n - 1;
            }
            at = (at + 1) & mask;
        }
    }

    fn grow(&mut self) {
        let bigger = vec![(0, 0); self.slots.len() * 2];
        let old = std::mem::replace(&mut self.slots, bigger);
        let mask = self.slots.len() - 1;
        for (v, n) in old.into_iter().filter(|&(_, n)| n != 0) {
            let mut at = self.slot(v);
            while self.slots[at].1 != 0 {
                at = (at + 1) & mask;
            }
            self.slots[at] = (v, n);
        }
    }
}

/// One partition's counts so far, per group.
struct Tally {
    schema: SchemaRef,
    keys: Vec<Arc<dyn PhysicalExpr>>,
    counts: Vec<Count>,
    /// Per grouping column, its values' codes.
    codes: Vec<Codes>,
    /// A group's codes, packed 32 bits a column, to its group number.
    groups: HashMap<u128, u32, RandomState>,
    /// Per group, its codes, one a grouping column.
    group_codes: Vec<u32>,
    /// Per group, its counts, `counts.len()` a group (unused for a distinct count).
    tallies: Vec<i64>,
    /// Per count, for a distinct count, its values so far (from its first batch on).
    sets: Vec<Option<Distinct>>,
}

impl Tally {
    /// The bytes its groups, counts and distinct sets hold, about.
    fn memory_size(&self) -> usize {
        let codes: usize = self
            .codes
            .iter()
            .map(|c| {
                c.bytes.capacity() * (size_of::<(Box<[u8]>, u32)>() + 16)
                    + c.scalars.capacity() * size_of::<(ScalarValue, u32)>()
            })
            .sum();
        let sets: usize = self.sets.iter().flatten().map(Distinct::memory_size).sum();
        codes
            + self.groups.capacity() * size_of::<(u128, u32)>()
            + self.group_codes.capacity() * size_of::<u32>()
            + self.tallies.capacity() * size_of::<i64>()
            + sets
    }
}

/// A batch is counted here when its keys' combinations number at most one per this many
/// rows (of at least [`MIN_ROWS`]): grouping by a few statuses, not by machine ids.
const ROWS_PER_GROUP: usize = 16;
const MIN_ROWS: usize = 8192;

impl Tally {
    fn new(schema: SchemaRef, keys: Vec<Arc<dyn PhysicalExpr>>, counts: Vec<Count>) -> Tally {
        let codes = (0..keys.len())
            .map(|k| Codes::new(schema.field(k).data_type().clone()))
            .collect();
        let sets = counts.iter().map(|_| None).collect();
        Tally {
            schema,
            keys,
            counts,
            codes,
            groups: HashMap::with_hasher(RandomState::default()),
            group_codes: Vec::new(),
            tallies: Vec::new(),
            sets,
        }
    }

    /// The group number of these codes, a new group when they are new.
    fn group(&mut self, codes: &[u32]) -> u32 {
        let next = (self.group_codes.len() / codes.len().max(1)) as u32;
        let packed = codes.iter().fold(0_u128, |p, &c| (p << 32) | u128::from(c));
        match self.groups.entry(packed) {
            std::collections::hash_map::Entry::Occupied(e) => *e.get(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(next);
                self.group_codes.extend_from_slice(codes);
                self.tallies
                    .extend(std::iter::repeat_n(0, self.counts.len()));
                next
            }
        }
    }

    /// Counts `batch`; `false`, counting nothing, when its keys are not few (more than
    /// one combination of them per [`ROWS_PER_GROUP`] rows), a partition column's value
    /// changes within it, or a distinct count's argument is neither string views nor
    /// constant: DataFusion's aggregate counts those faster, or at all.
    fn add(&mut self, batch: &RecordBatch) -> DfResult<bool> {
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(true);
        }
        // No column may have more distinct values than the batch may have groups.
        let limit = rows.max(MIN_ROWS) / ROWS_PER_GROUP;
        let mut locals = Vec::with_capacity(self.keys.len());
        for (key, codes) in self.keys.iter().zip(&mut self.codes) {
            let keys = key.evaluate(batch)?.into_array(rows)?;
            match number(&keys, codes, limit)? {
                Some(local) => locals.push(local),
                None => return Ok(false),
            }
        }
        let combinations = locals
            .iter()
            .try_fold(1_usize, |n, l| n.checked_mul(l.codes.len()));
        if combinations.is_none_or(|n| n > limit) {
            return Ok(false);
        }
        let mut distinct = Vec::with_capacity(self.counts.len());
        for (count, set) in self.counts.iter().zip(&mut self.sets) {
            distinct.push(match count.distinct {
                false => None,
                true => match DistinctInput::of(count, batch, set)? {
                    Some(input) => Some(input),
                    None => return Ok(false),
                },
            });
        }
        // Nothing is counted before this point, so the batch can still be handed over.
        let width = self.counts.len();
        if locals.iter().all(|l| l.codes.len() == 1) {
            // One group in the whole batch: each count is a number of set bits.
            let codes: Vec<u32> = locals.iter().map(|l| l.codes[0]).collect();
            let g = self.group(&codes);
            for (i, count) in self.counts.iter().enumerate() {
                let taken = count.rows(batch)?;
                if let (Some(input), Some(set)) = (&distinct[i], &mut self.sets[i]) {
                    input.add(set, taken, rows, None, &[g])?;
                    continue;
                }
                let n = taken.map_or(rows, |taken| taken.count_set_bits());
                // `n` is at most a batch's rows.
                self.tallies[g as usize * width + i] += n as i64;
            }
            return Ok(true);
        }
        // Each row's combination of local numbers, in mixed radix (at most one per
        // `ROWS_PER_GROUP` rows); with one column that varies, its own numbers.
        let combinations = combinations.unwrap_or(1);
        let varying: Vec<&Vec<u32>> = locals.iter().filter_map(|l| l.rows.as_ref()).collect();
        let mixed;
        let combined: &[u32] = if let [numbers] = varying[..] {
            numbers
        } else {
            let mut c = vec![0_u32; rows];
            let mut radix = 1_u32;
            for local in &locals {
                if let Some(numbers) = &local.rows {
                    for (c, &n) in c.iter_mut().zip(numbers) {
                        *c += n * radix;
                    }
                }
                radix *= local.codes.len() as u32;
            }
            mixed = c;
            &mixed
        };
        // Each combination's group, for those the batch holds.
        let mut seen = vec![false; combinations];
        for &c in combined {
            seen[c as usize] = true;
        }
        let mut groups = vec![u32::MAX; combinations];
        let mut codes = vec![0_u32; locals.len()];
        for c in (0..combinations).filter(|&c| seen[c]) {
            let mut rest = c;
            for (code, local) in codes.iter_mut().zip(&locals) {
                let n = local.codes.len();
                *code = local.codes[rest % n];
                rest /= n;
            }
            groups[c] = self.group(&codes);
        }
        // Counted per combination first, then added to the combinations' groups.
        let mut sums = vec![0_i64; combinations * width];
        for (i, count) in self.counts.iter().enumerate() {
            let taken = count.rows(batch)?;
            if let (Some(input), Some(set)) = (&distinct[i], &mut self.sets[i]) {
                input.add(set, taken, rows, Some(combined), &groups)?;
                continue;
            }
            match taken {
                None => {
                    for &c in combined {
                        sums[c as usize * width + i] += 1;
                    }
                }
                Some(taken) => {
                    for r in taken.set_indices() {
                        sums[combined[r] as usize * width + i] += 1;
                    }
                }
            }
        }
        for c in (0..combinations).filter(|&c| seen[c]) {
            let g = groups[c] as usize;
            for (tally, sum) in self.tallies[g * width..(g + 1) * width]
                .iter_mut()
                .zip(&sums[c * width..(c + 1) * width])
            {
                *tally += sum;
            }
        }
        Ok(true)
    }

    fn finish(&mut self) -> DfResult<RecordBatch> {
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        let keys = self.codes.len();
        let groups = self.group_codes.len() / keys;
        for (k, codes) in self.codes.iter().enumerate() {
            let of_column = self.group_codes.iter().skip(k).step_by(keys).copied();
            columns.push(codes.array(of_column)?);
        }
        let width = self.counts.len();
        for i in 0..width {
            let field = self.schema.field(keys + i);
            if let DataType::List(item) = field.data_type()
                && self.counts[i].distinct
            {
                let state = match &self.sets[i] {
                    Some(set) => set.state(groups, item)?,
                    None => Distinct::new(item.data_type()).state(groups, item)?,
                };
                columns.push(state);
                continue;
            }
            let counts: Int64Array = (0..groups)
                .map(|g| Some(self.tallies[g * width + i]))
                .collect();
            columns.push(Arc::new(counts));
        }
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }
}

/// A batch's argument of a distinct count, as its [`Distinct`] set takes it.
enum DistinctInput {
    /// String or binary views.
    Views(ArrayRef),
    /// The one value of a column constant in the batch (null when every row is null).
    Constant(ScalarValue),
}

impl DistinctInput {
    /// `count`'s argument in `batch`, `set` made for its type at the first batch; `None`
    /// when the set cannot take it (a column that is not views and not constant).
    fn of(
        count: &Count,
        batch: &RecordBatch,
        set: &mut Option<Distinct>,
    ) -> DfResult<Option<DistinctInput>> {
        let values = count.arg.evaluate(batch)?.into_array(batch.num_rows())?;
        let set = set.get_or_insert_with(|| Distinct::new(values.data_type()));
        let views = by_bytes(values.data_type());
        Ok(match set {
            Distinct::Bytes(_) if views => Some(DistinctInput::Views(values)),
            Distinct::Scalars(_) if !views && constant(&values)? => Some(DistinctInput::Constant(
                ScalarValue::try_from_array(&values, 0)?,
            )),
            _ => None,
        })
    }

    /// Adds the values of the rows `taken` (all `rows` when `None`) to `set`: row `r`'s
    /// to the group `groups[combined[r]]`, or `groups[0]` when `combined` is `None`.
    fn add(
        &self,
        set: &mut Distinct,
        taken: Option<BooleanBuffer>,
        rows: usize,
        combined: Option<&[u32]>,
        groups: &[u32],
    ) -> DfResult<()> {
        let taken = taken.unwrap_or_else(|| BooleanBuffer::new_set(rows));
        let combination = |r: usize| combined.map_or(0, |c| c[r] as usize);
        match (self, set) {
            (DistinctInput::Views(values), Distinct::Bytes(set)) => {
                if let Some(strings) = values.as_string_view_opt() {
                    for r in taken.set_indices() {
                        set.insert(groups[combination(r)], strings.value(r).as_bytes())?;
                    }
                } else if let Some(binary) = values.as_binary_view_opt() {
                    for r in taken.set_indices() {
                        set.insert(groups[combination(r)], binary.value(r))?;
                    }
                }
            }
            (DistinctInput::Constant(value), Distinct::Scalars(set)) => {
                // Once per group the batch has a taken row in.
                let mut present = vec![false; groups.len()];
                for r in taken.set_indices() {
                    present[combination(r)] = true;
                }
                for (c, _) in present.iter().enumerate().filter(|(_, p)| **p) {
                    set.insert((groups[c], value.clone()));
                }
            }
            _ => {
                return Err(DataFusionError::Internal(
                    "a distinct count's values changed kind".to_string(),
                ));
            }
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{BooleanArray, StringViewArray};
    use arrow::datatypes::{Field, Schema};
    use datafusion::physical_expr::expressions::{col, lit};

    /// Counts `batches` (key columns `k0`.., then `v` and `f`) through [`Tally`] and row
    /// by row, and compares the two: every group, in the order first seen.
    fn check(batches: &[RecordBatch], keys: usize) {
        let input = batches[0].schema();
        let column = |name: &str| col(name, &input).expect("column");
        let mut fields: Vec<Field> = (0..keys).map(|k| input.field(k).clone()).collect();
        for name in ["all", "v", "v_where_f"] {
            fields.push(Field::new(name, DataType::Int64, false));
        }
        let counts = vec![
            Count {
                arg: lit(1_i64),
                filter: None,
                distinct: false,
            },
            Count {
                arg: column("v"),
                filter: None,
                distinct: false,
            },
            Count {
                arg: column("v"),
                filter: Some(column("f")),
                distinct: false,
            },
        ];
        let key_exprs = (0..keys).map(|k| column(&format!("k{k}"))).collect();
        let mut tally = Tally::new(Arc::new(Schema::new(fields)), key_exprs, counts);
        let mut expected: Vec<(Vec<ScalarValue>, [i64; 3])> = Vec::new();
        for batch in batches {
            assert!(tally.add(batch).expect("counts"), "few groups: counted");
            let (v, f) = (batch.column(keys), batch.column(keys + 1).as_boolean());
            for r in 0..batch.num_rows() {
                let key: Vec<ScalarValue> = (0..keys)
                    .map(|k| ScalarValue::try_from_array(batch.column(k), r).expect("value"))
                    .collect();
                let at = match expected.iter().position(|(k, _)| *k == key) {
                    Some(at) => at,
                    None => {
                        expected.push((key, [0; 3]));
                        expected.len() - 1
                    }
                };
                let c = &mut expected[at].1;
                c[0] += 1;
                c[1] += i64::from(v.is_valid(r));
                c[2] += i64::from(v.is_valid(r) && f.is_valid(r) && f.value(r));
            }
        }
        let out = tally.finish().expect("finishes");
        let got: Vec<(Vec<ScalarValue>, [i64; 3])> = (0..out.num_rows())
            .map(|r| {
                let key = (0..keys)
                    .map(|k| ScalarValue::try_from_array(out.column(k), r).expect("value"))
                    .collect();
                let count = |c: usize| {
                    out.column(keys + c)
                        .as_primitive::<arrow::datatypes::Int64Type>()
                        .value(r)
                };
                (key, [count(0), count(1), count(2)])
            })
            .collect();
        // Groups come out in no particular order; the final step does not need one.
        let sort = |mut v: Vec<(Vec<ScalarValue>, [i64; 3])>| {
            v.sort_by(|a, b| format!("{:?}", a.0).cmp(&format!("{:?}", b.0)));
            v
        };
        assert_eq!(sort(got), sort(expected));
    }

    /// Column `v` of `n` rows: row `i` holds `i`, null every fourth row.
    fn values(n: usize) -> Vec<Option<i64>> {
        (0..n).map(|i| (i % 4 != 0).then_some(i as i64)).collect()
    }

    /// Column `f` of `n` rows: true every third row, null every fifth.
    fn flags(n: usize) -> Vec<Option<bool>> {
        (0..n).map(|i| (i % 5 != 0).then_some(i % 3 == 0)).collect()
    }

    fn batch(keys: Vec<ArrayRef>, v: Vec<Option<i64>>, f: Vec<Option<bool>>) -> RecordBatch {
        let mut fields: Vec<Field> = keys
            .iter()
            .enumerate()
            .map(|(k, a)| Field::new(format!("k{k}"), a.data_type().clone(), true))
            .collect();
        fields.push(Field::new("v", DataType::Int64, true));
        fields.push(Field::new("f", DataType::Boolean, true));
        let mut columns = keys;
        columns.push(Arc::new(Int64Array::from(v)));
        columns.push(Arc::new(BooleanArray::from(f)));
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("batch")
    }

    #[test]
    fn constant_keys_count_alike() {
        let ints = |k: Vec<Option<i64>>| -> ArrayRef { Arc::new(Int64Array::from(k)) };
        // One key a batch (7 again later, null), then no rows.
        let batches = [
            batch(
                vec![ints(vec![Some(7); 4])],
                vec![Some(1), None, Some(3), Some(4)],
                vec![Some(true), Some(true), None, Some(false)],
            ),
            batch(
                vec![ints(vec![None; 3])],
                vec![Some(1); 3],
                vec![Some(false), Some(true), None],
            ),
            batch(
                vec![ints(vec![Some(7); 2])],
                vec![None, Some(2)],
                vec![Some(true); 2],
            ),
            batch(vec![ints(vec![])], vec![], vec![]),
        ];
        check(&batches, 1);
    }

    /// `n` values drawn from `values` by `take`, as the Parquet reader's dictionary
    /// decoding gives them: equal values share a view.
    fn drawn(values: &[Option<&str>], n: usize, seed: usize) -> ArrayRef {
        let values = StringViewArray::from(values.to_vec());
        let indices = arrow::array::UInt32Array::from_iter_values(
            (0..n).map(|i| ((i * 7 + seed) % values.len()) as u32),
        );
        arrow::compute::take(&values, &indices, None).expect("take")
    }

    #[test]
    fn string_keys_count_alike_whatever_their_views() {
        let statuses = [
            Some("Active"),
            Some("Inactive"),
            Some("ImpairedCommunication"),
            Some(""),
            None,
            Some("NoSensorData"),
        ];
        let levels = [Some("High"), Some("Informational"), None, Some("Low")];
        let flags = |n: usize| (0..n).map(|i| (i % 5 != 0).then_some(i % 3 == 0)).collect();
        let values = |n: usize| (0..n).map(|i| (i % 4 != 0).then_some(i as i64)).collect();
        // Equal long values behind different views: each batch draws from its own
        // arrays, and one column is sliced out of a longer one.
        let longer = drawn(&statuses, 300, 3);
        let batches = [
            batch(
                vec![drawn(&statuses, 200, 0), drawn(&levels, 200, 1)],
                values(200),
                flags(200),
            ),
            batch(
                vec![longer.slice(50, 100), drawn(&levels, 100, 2)],
                values(100),
                flags(100),
            ),
        ];
        check(&batches, 2);
        // Binary views, each value its own view.
        let binary: ArrayRef = Arc::new(arrow::array::BinaryViewArray::from(
            (0..90)
                .map(|i| (i % 7 != 0).then_some(&b"binary value, longer than twelve"[..i % 4 * 5]))
                .collect::<Vec<_>>(),
        ));
        check(&[batch(vec![binary], values(90), flags(90))], 1);
        // A string key beside a constant one.
        let batches = [batch(
            vec![
                Arc::new(Int64Array::from(vec![Some(5); 120])),
                drawn(&levels, 120, 4),
            ],
            values(120),
            flags(120),
        )];
        check(&batches, 2);
    }

    #[test]
    fn many_groups_and_changing_partition_values_are_not_counted() {
        let input = Arc::new(Schema::new(vec![Field::new(
            "k0",
            DataType::Utf8View,
            true,
        )]));
        let output = Arc::new(Schema::new(vec![
            Field::new("k0", DataType::Utf8View, true),
            Field::new("n", DataType::Int64, false),
        ]));
        let counts = vec![Count {
            arg: lit(1_i64),
            filter: None,
            distinct: false,
        }];
        let mut tally = Tally::new(output, vec![col("k0", &input).expect("k0")], counts);
        // 8,192 rows of 513 ids: more than one per 16 rows; of 512, few enough.
        let ids = |distinct: usize| -> RecordBatch {
            let values: Vec<String> = (0..distinct).map(|i| format!("{i:040x}")).collect();
            let values: Vec<Option<&str>> = values.iter().map(|v| Some(v.as_str())).collect();
            let ids = drawn(&values, 8192, 0);
            RecordBatch::try_new(Arc::clone(&input), vec![ids]).expect("batch")
        };
        assert!(!tally.add(&ids(513)).expect("numbers"));
        assert_eq!(tally.finish().expect("finishes").num_rows(), 0);
        assert!(tally.add(&ids(512)).expect("numbers"));
        assert_eq!(tally.finish().expect("finishes").num_rows(), 512);

        let input = Arc::new(Schema::new(vec![Field::new("k0", DataType::Int64, true)]));
        let output = Arc::new(Schema::new(vec![
            Field::new("k0", DataType::Int64, true),
            Field::new("n", DataType::Int64, false),
        ]));
        let counts = vec![Count {
            arg: lit(1_i64),
            filter: None,
            distinct: false,
        }];
        let mut tally = Tally::new(output, vec![col("k0", &input).expect("k0")], counts);
        let changing: ArrayRef = Arc::new(Int64Array::from(vec![1, 1, 2]));
        let batch = RecordBatch::try_new(input, vec![changing]).expect("batch");
        assert!(!tally.add(&batch).expect("numbers"));
        assert_eq!(tally.finish().expect("finishes").num_rows(), 0);
    }

    /// `sql`'s rows over a table of two partitions, the first `[few, many, few]` groups
    /// in its batches, the second `[few]`; and whether the plan holds a `KeyedCountExec`.
    async fn run(sql: &str, with_rule: bool) -> (String, bool) {
        let levels = [Some("High"), Some("Informational"), None, Some("Low")];
        let ids: Vec<String> = (0..9000).map(|i| format!("{i:040x}")).collect();
        let ids: Vec<Option<&str>> = ids.iter().map(|v| Some(v.as_str())).collect();
        let few = |seed| batch(vec![drawn(&levels, 9000, seed)], values(9000), flags(9000));
        let many = batch(vec![drawn(&ids, 9000, 1)], values(9000), flags(9000));
        run_on(
            vec![vec![few(0), many, few(2)], vec![few(3)]],
            sql,
            with_rule,
        )
        .await
    }

    /// `sql`'s rows over table `t` of these partitions, with or without the rule; and
    /// whether the plan holds a `KeyedCountExec`.
    async fn run_on(
        partitions: Vec<Vec<RecordBatch>>,
        sql: &str,
        with_rule: bool,
    ) -> (String, bool) {
        use datafusion::datasource::MemTable;
        use datafusion::execution::SessionStateBuilder;
        use datafusion::physical_plan::displayable;
        use datafusion::prelude::{SessionConfig, SessionContext};

        let schema = partitions[0][0].schema();
        let table = MemTable::try_new(schema, partitions).expect("table");
        let mut state = SessionStateBuilder::new()
            .with_config(SessionConfig::new().with_target_partitions(2))
            .with_default_features();
        if with_rule {
            state =
                state.with_physical_optimizer_rule(Arc::new(crate::engine::rules::GroupedCounts));
        }
        let ctx = SessionContext::new_with_state(state.build());
        ctx.register_table("t", Arc::new(table)).expect("registers");
        let df = ctx.sql(sql).await.expect("plans");
        let plan = df
            .clone()
            .create_physical_plan()
            .await
            .expect("physical plan");
        let shown = displayable(plan.as_ref()).indent(true).to_string();
        let batches = df.collect().await.expect("runs");
        let text = arrow::util::pretty::pretty_format_batches(&batches).expect("formats");
        (text.to_string(), shown.contains("KeyedCountExec"))
    }

    #[tokio::test]
    async fn distinct_counts_answer_as_datafusion_does() {
        // Row `i` of a batch: level `i * 7 % 4` (the third null) and one of 100, 150, 200 or
        // 250 names by level, shifted by `shift`, a few null; each batch lists the
        // names in the order of the one before, so most rows find their value where
        // the last one's was followed.
        let levels = [Some("High"), Some("Informational"), None, Some("Low")];
        let hosts = |shift: usize| {
            // Drawn from one array, as from a dictionary page: equal levels share a view.
            let level = drawn(&levels, 9000, 0);
            let name: StringViewArray = (0..9000)
                .map(|i| {
                    let distinct = 100 + 50 * (i * 7 % 4);
                    (i % 61 != 0).then(|| format!("host-{:03}", (i / 4 + shift) % distinct))
                })
                .collect();
            batch(
                vec![Arc::new(level), Arc::new(name)],
                values(9000),
                flags(9000),
            )
        };
        // The first partition's second batch has 9,000 levels: from there on that
        // partition is handed to DataFusion.
        let ids: Vec<String> = (0..9000).map(|i| format!("{i:040x}")).collect();
        let ids: Vec<Option<&str>> = ids.iter().map(|v| Some(v.as_str())).collect();
        let names = hosts(0).column(1).clone();
        let many = batch(
            vec![drawn(&ids, 9000, 1), names],
            vec![Some(1); 9000],
            vec![Some(true); 9000],
        );
        let partitions = vec![vec![hosts(0), many, hosts(7)], vec![hosts(3), hosts(1)]];
        let sql = "SELECT k0, count(DISTINCT k1) AS names, count(*) AS n, \
                   count(v) FILTER (WHERE f) AS m FROM t GROUP BY k0 ORDER BY n DESC, k0 NULLS FIRST LIMIT 6";
        let (planned, plain) = run_on(partitions.clone(), sql, false).await;
        let (counted, keyed) = run_on(partitions.clone(), sql, true).await;
        assert!(!plain && keyed, "KeyedCountExec only with the rule");
        assert_eq!(planned, counted);
        // Every one of a level's names is in some batch.
        let low = counted.lines().find(|l| l.starts_with("| Low "));
        assert!(low.is_some_and(|l| l.contains("| 250   |")), "{counted}");
        // Grouped by the names: too many groups a batch, handed over from the start.
        // (With `count(*)` beside it: DataFusion plans a lone distinct count as a grouping
        // of distinct rows.)
        let sql = "SELECT k1, count(DISTINCT k0) AS levels, count(*) AS n FROM t GROUP BY k1 \
                   ORDER BY k1 NULLS FIRST";
        let (planned, plain) = run_on(partitions.clone(), sql, false).await;
        let (counted, keyed) = run_on(partitions.clone(), sql, true).await;
        assert!(!plain && keyed, "KeyedCountExec only with the rule");
        assert_eq!(planned, counted);
        let (plan, _) = run_on(partitions, &format!("EXPLAIN {sql}"), true).await;
        assert!(
            plan.lines()
                .any(|l| l.contains("KeyedCountExec") && l.contains("count(DISTINCT t.k0)")),
            "{plan}"
        );
    }

    #[tokio::test]
    async fn keys_in_runs_are_counted_a_run_at_a_time_until_a_batch_is_not() {
        // 9,000 rows a batch, each key three rows in a row (every 97th run null), 3,000
        // keys: too many for the table, counted by runs; then a batch of shuffled ids,
        // whose runs are one row, goes with the rest to DataFusion.
        let in_runs = |shift: usize| {
            let keys: StringViewArray = (0..9000)
                .map(|i| (i / 3 % 97 != 0).then(|| format!("user-{:05}", i / 3 + shift)))
                .collect();
            batch(vec![Arc::new(keys)], values(9000), flags(9000))
        };
        let levels = [Some("High"), Some("Low")];
        let ids: Vec<String> = (0..9000)
            .map(|i| format!("user-{:05}", i * 7 % 9000))
            .collect();
        let ids: Vec<Option<&str>> = ids.iter().map(|v| Some(v.as_str())).collect();
        let shuffled = batch(
            vec![drawn(&ids, 9000, 1)],
            (0..9000).map(|i| Some(i as i64)).collect(),
            (0..9000).map(|i| Some(i % 2 == 0)).collect(),
        );
        let few = batch(
            vec![drawn(&levels, 9000, 0)],
            (0..9000).map(|i| Some(i as i64)).collect(),
            (0..9000).map(|i| Some(i % 2 == 0)).collect(),
        );
        let partitions = vec![
            vec![
                few.clone(),
                in_runs(0),
                in_runs(1000),
                shuffled,
                few.clone(),
            ],
            vec![in_runs(2000), few],
        ];
        let sql = "SELECT k0, count(*) AS n, count(v) FILTER (WHERE f) AS m FROM t \
                   GROUP BY k0 ORDER BY k0 NULLS FIRST";
        let (planned, plain) = run_on(partitions.clone(), sql, false).await;
        let (counted, keyed) = run_on(partitions, sql, true).await;
        assert!(!plain && keyed, "KeyedCountExec only with the rule");
        assert_eq!(planned, counted);
        // user-02500: three rows in each of the three batches in runs, and one drawn
        // among the shuffled ids.
        let row = counted.lines().find(|l| l.starts_with("| user-02500 "));
        assert_eq!(row, Some("| user-02500 | 10    | 0     |"));
        // Every 97th run is null: 31 runs of 3 rows in each of the three batches.
        let nulls = counted.lines().find(|l| l.starts_with("|            |"));
        assert!(nulls.is_some_and(|l| l.contains("| 279 ")), "{nulls:?}");
    }

    #[tokio::test]
    async fn a_partition_with_many_groups_is_handed_to_datafusion_midway() {
        let sql = "SELECT k0, count(*) AS n, count(v) FILTER (WHERE f) AS m FROM t \
                   GROUP BY k0 ORDER BY n DESC, k0 NULLS FIRST LIMIT 8";
        let (planned, plain) = run(sql, false).await;
        let (counted, keyed) = run(sql, true).await;
        assert!(!plain && keyed, "KeyedCountExec only with the rule");
        assert_eq!(planned, counted);
        // 9,000 rows of 3 levels and null, three batches of them: 6,750 a level.
        let high = counted.lines().find(|l| l.starts_with("| High "));
        assert!(high.is_some_and(|l| l.contains("| 6750 |")), "{counted}");
    }
}
