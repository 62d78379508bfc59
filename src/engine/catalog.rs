//! Turns a lake's manifests into DataFusion tables.
//!
//! Every table reads exactly the files its manifests list, never a glob. The latest
//! tables (`machines`, ...) read the newest snapshot at or before `--as-of`; the
//! `_history` tables read every committed snapshot and add `snapshot`, a UTC timestamp
//! that the catalog gives each file from its manifest: no per-row parsing of the
//! `snapshot=` folder text, and filters on `snapshot` prune whole files before any is
//! opened. Row counts from the manifests answer `count(*)` without a scan.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondArray,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use bytes::Bytes;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::stats::Precision;
use datafusion::common::{DFSchema, Statistics};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::listing::helpers::expr_applicable_for_cols;
use datafusion::datasource::memory::MemTable;
use datafusion::datasource::physical_plan::parquet::CachedParquetFileReaderFactory;
use datafusion::datasource::physical_plan::parquet::metadata::DFParquetMetadata;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::physical_plan::{ParquetFileReaderFactory, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchemaBuilder;
use datafusion::error::Result as DfResult;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::execution_props::ExecutionProps;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::create_physical_expr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use datafusion::scalar::ScalarValue;
use futures::future::BoxFuture;
use futures::{FutureExt, TryFutureExt};
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::errors::{ParquetError, Result as ParquetResult};
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData};

use crate::changes::Scope;
use crate::engine::options::{MdesnapOptions, Switch};
use crate::lake::{Lake, LakeScan};
use crate::schema::{SNAPSHOT_COLUMN, Table, UTC, snapshot_field, timestamp_type};
use crate::snapshot::{Manifest, parse_time};

/// One Parquet file a table reads.
#[derive(Debug, Clone)]
struct TableFile {
    /// The object store's name of the file (for a local lake its absolute path with no
    /// leading `/`).
    location: String,
    bytes: u64,
    rows: u64,
    /// Microseconds of the snapshot it belongs to.
    snapshot: i64,
}

/// A table over files listed by manifests. `history` adds the `snapshot` column.
#[derive(Debug)]
pub struct SnapshotTable {
    history: bool,
    schema: SchemaRef,
    /// The files' columns as queries see them (see [`read_schema`]).
    file_schema: SchemaRef,
    files: Vec<TableFile>,
    /// The store the files are read from (`Lake::object_store`).
    store: ObjectStoreUrl,
    /// What file names are shown after in errors (`Lake::location_root`).
    shown_root: Arc<str>,
    /// The lake is in an object store.
    remote: bool,
    /// The column the files' row groups are sorted by ([`Table::sort_column`]).
    sort_column: Option<&'static str>,
    /// Whether the catalog answers what it knows ([`Switch::CatalogAnswers`]): row
    /// counts and footer statistics given to DataFusion, filters on `snapshot` exact
    /// and applied to the files before the scan. Off, DataFusion filters every row.
    answers: bool,
}

/// How many files of a lake in an object store a scan reads at once, at least.
const REMOTE_READS: usize = 16;

impl SnapshotTable {
    /// The table of `table` over the given manifests (one for a latest table).
    pub fn new(
        lake: &Lake,
        table: Table,
        manifests: &[&Manifest],
        history: bool,
        options: &MdesnapOptions,
    ) -> Self {
        let mut files = Vec::new();
        for m in manifests {
            let Ok(id) = m.snapshot_id() else { continue };
            let Some(entry) = m.table(table) else {
                continue;
            };
            for f in &entry.files {
                files.push(TableFile {
                    location: lake.object_location(&f.path),
                    bytes: f.bytes,
                    rows: f.rows,
                    snapshot: id.micros(),
                });
            }
        }
        let file_schema = read_schema(&table.schema());
        let schema = if history {
            let mut fields: Vec<Arc<Field>> = file_schema.fields().iter().cloned().collect();
            fields.push(Arc::new(snapshot_field()));
            Arc::new(Schema::new(fields))
        } else {
            Arc::clone(&file_schema)
        };
        SnapshotTable {
            history,
            schema,
            file_schema,
            files,
            store: lake
                .object_store()
                .map_or_else(ObjectStoreUrl::local_filesystem, |(url, _)| url),
            shown_root: lake.location_root().into(),
            remote: lake.local_path().is_none(),
            sort_column: table.sort_column(),
            answers: options.on(Switch::CatalogAnswers),
        }
    }

    /// The total rows over all files, from the manifests.
    pub fn rows(&self) -> u64 {
        self.files.iter().map(|f| f.rows).sum()
    }

    /// The snapshots (microseconds) that have rows in this history table and pass
    /// `filters`, ascending, each with its rows: what `SELECT snapshot, count(*) ...
    /// GROUP BY snapshot` returns, from the manifests. `None` for a latest table or a
    /// filter on any other column.
    pub(crate) fn rows_per_snapshot(&self, filters: &[Expr]) -> DfResult<Option<Vec<(i64, u64)>>> {
        if !self.history
            || !self.answers
            || !filters
                .iter()
                .all(|f| expr_applicable_for_cols(&[SNAPSHOT_COLUMN], f))
        {
            return Ok(None);
        }
        let files: Vec<&TableFile> = self.files.iter().filter(|f| f.rows > 0).collect();
        let keep = snapshots_passing(files.iter().map(|f| f.snapshot), filters)?;
        let mut rows = std::collections::BTreeMap::<i64, u64>::new();
        for (f, keep) in files.iter().zip(keep) {
            if keep {
                let n = rows.entry(f.snapshot).or_default();
                *n = n.saturating_add(f.rows);
            }
        }
        Ok(Some(rows.into_iter().collect()))
    }

    /// A latest table's column statistics (rows, nulls, min and max) from its files'
    /// footers, which its scan reads anyway (they stay in the session's metadata cache
    /// for it): `max(last_seen)` and the like are answered from them without a scan.
    /// History tables keep to the manifests' row counts: their files are mostly pruned
    /// by snapshot, often only at run time. `None` when a footer cannot be read or
    /// converted (the scan then names the file).
    async fn footer_statistics(
        &self,
        state: &dyn Session,
        files: &[PartitionedFile],
    ) -> Option<Statistics> {
        if self.history || !self.answers {
            return None;
        }
        let runtime = state.runtime_env();
        let store = runtime.object_store(&self.store).ok()?;
        let cache = runtime.cache_manager.get_file_metadata_cache();
        let parquet = &state.table_options().parquet.global;
        let hint = parquet.metadata_size_hint;
        let page_index = if parquet.enable_page_index {
            PageIndexPolicy::Optional
        } else {
            PageIndexPolicy::Skip
        };
        let mut each = Vec::with_capacity(files.len());
        for f in files {
            let stats = DFParquetMetadata::new(store.as_ref(), &f.object_meta)
                .with_metadata_size_hint(hint)
                .with_page_index_policy(Some(page_index))
                .with_file_metadata_cache(Some(Arc::clone(&cache)))
                .fetch_statistics(&self.file_schema)
                .await
                .ok()?;
            each.push(stats);
        }
        Statistics::try_merge_iter(each.iter(), &self.file_schema).ok()
    }

    fn partition_fields(&self) -> Vec<Arc<Field>> {
        if self.history {
            vec![Arc::new(snapshot_field())]
        } else {
            Vec::new()
        }
    }

    fn partitioned_file(&self, f: &TableFile) -> PartitionedFile {
        let mut pf = PartitionedFile::new(f.location.clone(), f.bytes);
        if self.answers {
            let file_stats = Statistics::new_unknown(&self.file_schema)
                .with_num_rows(Precision::Exact(f.rows as usize))
                .with_total_byte_size(Precision::Inexact(f.bytes as usize));
            pf = pf.with_statistics(Arc::new(file_stats));
        }
        if self.history {
            pf = pf.with_partition_values(vec![ScalarValue::TimestampMicrosecond(
                Some(f.snapshot),
                Some(UTC.into()),
            )]);
        }
        pf
    }
}

/// The columns as queries see them: the files' top-level strings read as `Utf8View`.
///
/// The files stay plain `Utf8` (any Parquet reader reads them); read as views, the
/// values of a dictionary-encoded column point into its dictionary page instead of
/// being copied row by row, and comparisons and grouping take DataFusion's view paths.
fn read_schema(file: &Schema) -> SchemaRef {
    let fields: Vec<Field> = file
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8 => f.as_ref().clone().with_data_type(DataType::Utf8View),
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, file.metadata().clone()))
}

/// Whether the user chose whether page indexes are read
/// (`DATAFUSION_EXECUTION_PARQUET_ENABLE_PAGE_INDEX`); otherwise mdesnap decides per scan.
pub(crate) fn page_index_option_set() -> bool {
    std::env::var_os("DATAFUSION_EXECUTION_PARQUET_ENABLE_PAGE_INDEX").is_some()
}

/// For each snapshot (microseconds), whether every filter holds for it: a filter that
/// is false or NULL drops it, as `WHERE` drops a row. With no filters, every one passes.
///
/// DataFusion's `filter_partitioned_file` reads the boolean's value without its
/// validity, so a filter that is NULL for a file (`NULLIF(snapshot, x) > y` at `x`)
/// keeps the file; and a filter declared exact is not applied again above the scan.
/// Here the filters are evaluated once over all the snapshots, NULL counting as false.
pub(crate) fn snapshots_passing(
    snapshots: impl Iterator<Item = i64>,
    filters: &[Expr],
) -> DfResult<Vec<bool>> {
    let values = TimestampMicrosecondArray::from_iter_values(snapshots).with_timezone(UTC);
    let Some(filter) = conjunction(filters.iter().cloned()) else {
        return Ok(vec![true; values.len()]);
    };
    let schema = Arc::new(Schema::new(vec![snapshot_field()]));
    let batch = RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(values)])?;
    let df_schema = DFSchema::try_from(schema)?;
    let expr = create_physical_expr(
        &filter,
        &df_schema,
        &ExecutionProps::new(),
        &PhysicalPlanningContext::default(),
    )?;
    let result = expr.evaluate(&batch)?.into_array(batch.num_rows())?;
    let Some(result) = result.as_boolean_opt() else {
        return Err(datafusion::error::DataFusionError::Plan(format!(
            "a filter on snapshot gave {} instead of a boolean",
            result.data_type()
        )));
    };
    Ok((0..result.len())
        .map(|i| result.is_valid(i) && result.value(i))
        .collect())
}

#[async_trait]
impl TableProvider for SnapshotTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| {
                if self.answers && self.history && expr_applicable_for_cols(&[SNAPSHOT_COLUMN], f) {
                    TableProviderFilterPushDown::Exact
                } else {
                    TableProviderFilterPushDown::Inexact
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let snapshot_filters: Vec<Expr> = if self.history && self.answers {
            filters
                .iter()
                .filter(|f| expr_applicable_for_cols(&[SNAPSHOT_COLUMN], f))
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        let keep = snapshots_passing(self.files.iter().map(|f| f.snapshot), &snapshot_filters)?;
        let files: Vec<PartitionedFile> = self
            .files
            .iter()
            .zip(keep)
            .filter(|(_, keep)| *keep)
            .map(|(f, _)| self.partitioned_file(f))
            .collect();
        if files.is_empty() {
            let projected = match projection {
                Some(p) => Arc::new(self.schema.project(p)?),
                None => Arc::clone(&self.schema),
            };
            return Ok(Arc::new(EmptyExec::new(projected)));
        }
        let rows: usize = files
            .iter()
            .filter_map(|f| {
                f.statistics
                    .as_ref()
                    .and_then(|s| s.num_rows.get_value().copied())
            })
            .sum();
        let statistics = match self.footer_statistics(state, &files).await {
            Some(s) => s,
            None if self.answers => {
                Statistics::new_unknown(&self.schema).with_num_rows(Precision::Exact(rows))
            }
            None => Statistics::new_unknown(&self.schema),
        };
        let table_schema = TableSchemaBuilder::from(&self.file_schema)
            .with_table_partition_cols(self.partition_fields())
            .build();
        // What `ParquetFormat::create_physical_plan` does, with the reader factory
        // wrapped so that a missing, short or damaged file is named in the error.
        let url = self.store.clone();
        let runtime = state.runtime_env();
        let cached = CachedParquetFileReaderFactory::new(
            runtime.object_store(&url)?,
            runtime.cache_manager.get_file_metadata_cache(),
        );
        let mut options = state.table_options().parquet.clone();
        // Row groups are sorted by the sort column, so a filter on it finds its pages in
        // the page index (a lookup by name reads a page per row group); for any other
        // filter the index prunes nothing and is not read (`Engine::open`).
        if let Some(column) = self.sort_column
            && !options.global.enable_page_index
            && !page_index_option_set()
            && filters
                .iter()
                .any(|f| f.column_refs().iter().any(|c| c.name == column))
        {
            options.global.enable_page_index = true;
        }
        let source = ParquetSource::new(table_schema)
            .with_table_parquet_options(options)
            .with_parquet_file_reader_factory(Arc::new(NamingReaderFactory {
                inner: Arc::new(cached),
                root: Arc::clone(&self.shown_root),
            }));
        // In an object store each file costs round trips, not CPU: more files are read
        // at once than there are cores ([`REMOTE_READS`]).
        let mut streams = state.config().target_partitions();
        if self.remote {
            streams = streams.max(REMOTE_READS);
        }
        let groups = FileGroup::new(files).split_files(streams);
        let config = FileScanConfigBuilder::new(url, Arc::new(source))
            .with_file_groups(groups)
            .with_statistics(statistics)
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        Ok(DataSourceExec::from_data_source(config))
    }

    fn statistics(&self) -> Option<Statistics> {
        if !self.answers {
            return None;
        }
        Some(
            Statistics::new_unknown(&self.schema)
                .with_num_rows(Precision::Exact(self.rows() as usize)),
        )
    }
}

/// A data file that failed to read, named.
#[derive(Debug, thiserror::Error)]
#[error("data file {location}: {source}")]
pub struct DataFileError {
    /// The file: its absolute path on disk, its URL in an object store.
    pub location: String,
    pub source: ParquetError,
}

/// Makes readers that name their file in every error: DataFusion's own errors say
/// what went wrong ("EOF", "invalid footer") but not where.
#[derive(Debug)]
struct NamingReaderFactory {
    inner: Arc<dyn ParquetFileReaderFactory>,
    /// Put before each object name (`Lake::location_root`).
    root: Arc<str>,
}

impl ParquetFileReaderFactory for NamingReaderFactory {
    fn create_reader(
        &self,
        partition_index: usize,
        file: PartitionedFile,
        metadata_size_hint: Option<usize>,
        metrics: &ExecutionPlanMetricsSet,
    ) -> DfResult<Box<dyn AsyncFileReader + Send>> {
        let location: Arc<str> = format!("{}{}", self.root, file.object_meta.location).into();
        let inner = self
            .inner
            .create_reader(partition_index, file, metadata_size_hint, metrics)?;
        Ok(Box::new(NamingReader { inner, location }))
    }
}

struct NamingReader {
    inner: Box<dyn AsyncFileReader + Send>,
    location: Arc<str>,
}

impl NamingReader {
    fn name(location: &str, e: ParquetError) -> ParquetError {
        ParquetError::External(Box::new(DataFileError {
            location: location.to_string(),
            source: e,
        }))
    }
}

impl AsyncFileReader for NamingReader {
    fn get_bytes(&mut self, range: std::ops::Range<u64>) -> BoxFuture<'_, ParquetResult<Bytes>> {
        let location = Arc::clone(&self.location);
        self.inner
            .get_bytes(range)
            .map_err(move |e| Self::name(&location, e))
            .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> BoxFuture<'_, ParquetResult<Vec<Bytes>>> {
        let location = Arc::clone(&self.location);
        self.inner
            .get_byte_ranges(ranges)
            .map_err(move |e| Self::name(&location, e))
            .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, ParquetResult<Arc<ParquetMetaData>>> {
        let location = Arc::clone(&self.location);
        self.inner
            .get_metadata(options)
            .map_err(move |e| Self::name(&location, e))
            .boxed()
    }
}

/// The query `snapshots list` and the console's `\snapshots` print: one row per
/// snapshot, its id as RFC 3339 text, its scope (`api`, `api:FILTER`, `generate`), its
/// source and the rows of each table.
pub fn snapshots_list_sql() -> String {
    format!(
        "SELECT arrow_cast(snapshot, 'Utf8') AS snapshot, scope, source, {}, duplicates_dropped FROM snapshots ORDER BY 1",
        Table::ALL
            .iter()
            .map(|t| format!("{0}_rows AS {0}", t.name()))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// The `snapshots` table: one row per committed snapshot, from the manifests.
pub fn snapshots_table(scan: &LakeScan) -> DfResult<MemTable> {
    let schema = snapshots_schema();
    let mut snapshot = TimestampMicrosecondBuilder::new().with_timezone(UTC);
    let mut started = TimestampMicrosecondBuilder::new().with_timezone(UTC);
    let mut finished = TimestampMicrosecondBuilder::new().with_timezone(UTC);
    let mut source = StringBuilder::new();
    let mut filter = StringBuilder::new();
    let mut counts: Vec<Int64Builder> = Table::ALL.iter().map(|_| Int64Builder::new()).collect();
    let mut dups = Int64Builder::new();
    let mut version = StringBuilder::new();
    let mut scope = StringBuilder::new();
    for m in &scan.snapshots {
        let Ok(id) = m.snapshot_id() else { continue };
        snapshot.append_value(id.micros());
        started.append_option(parse_time(&m.started_at).ok().map(|t| t.timestamp_micros()));
        finished.append_option(
            parse_time(&m.finished_at)
                .ok()
                .map(|t| t.timestamp_micros()),
        );
        source.append_value(&m.source);
        filter.append_option(m.filter.as_deref());
        for (b, t) in counts.iter_mut().zip(Table::ALL) {
            b.append_option(m.table(t).map(|e| e.rows as i64));
        }
        dups.append_value(m.duplicates_dropped as i64);
        version.append_value(&m.mdesnap_version);
        scope.append_value(Scope::of(m).to_string());
    }
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(snapshot.finish()),
        Arc::new(started.finish()),
        Arc::new(finished.finish()),
        Arc::new(source.finish()),
        Arc::new(filter.finish()),
    ];
    columns.extend(counts.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    columns.push(Arc::new(dups.finish()));
    columns.push(Arc::new(version.finish()));
    columns.push(Arc::new(scope.finish()));
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns)?;
    MemTable::try_new(schema, vec![vec![batch]])
}

/// Schema of the `snapshots` table. A row count is null for a table the snapshot did
/// not take.
pub fn snapshots_schema() -> SchemaRef {
    let mut fields = vec![
        Field::new(SNAPSHOT_COLUMN, timestamp_type(), false),
        Field::new("started_at", timestamp_type(), true),
        Field::new("finished_at", timestamp_type(), true),
        Field::new("source", DataType::Utf8, false),
        Field::new("filter", DataType::Utf8, true),
    ];
    fields.extend(
        Table::ALL
            .iter()
            .map(|t| Field::new(format!("{}_rows", t.name()), DataType::Int64, true)),
    );
    fields.push(Field::new("duplicates_dropped", DataType::Int64, false));
    fields.push(Field::new("mdesnap_version", DataType::Utf8, false));
    // The source kind and filter together, as `--scope` takes them.
    fields.push(Field::new("scope", DataType::Utf8, false));
    Arc::new(Schema::new(fields))
}
