//! The query engine: a DataFusion `SessionContext` with the lake's tables registered.
//!
//! `Engine::open` reads the manifests once; `refresh` reads them again (a REPL sees
//! snapshots committed after it started), and `set_as_of` points the latest tables at an
//! earlier snapshot. Queries return DataFrames: the caller decides to stream, collect or
//! write.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use datafusion::dataframe::DataFrame;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::SessionContext;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::ScalarUDF;
use datafusion::prelude::SessionConfig;

use crate::changes::{BadScope, Scope, default_scope};
use crate::error::{Error, Result};
use crate::lake::{Lake, LakeScan, scan_lake};
use crate::odata::query::{looks_like_odata, parse_query};
use crate::odata::shape::{ApiNamesUdf, has_nested_names};
use crate::odata::to_expr::{Scope as ODataScope, TranslateError, to_expr, to_value_expr};
use crate::odata::{ODataError, ODataQuery};
use crate::output::{Envelope, Format};
use crate::schema::Table;
use crate::snapshot::{Manifest, SnapshotId};

pub mod catalog;
mod guard;
mod operators;
pub mod options;
mod rules;

use catalog::{SnapshotTable, page_index_option_set, snapshots_table};
pub use options::{MdesnapOptions, PLAIN_ENGINE_VAR};
use rules::{
    GroupedCounts, SemiJoinOnConstants, ShortLiteralEquality, SnapshotsFromManifests, SortedLag,
    UnorderedLag,
};

/// Rows per batch in queries, unless `DATAFUSION_EXECUTION_BATCH_SIZE` says otherwise.
pub const BATCH_ROWS: usize = 32 * 1024;

/// A statement planned: its DataFrame, and for an OData request how its result is
/// written (`@odata.context`, `@odata.count`, API records).
#[derive(Debug)]
pub struct Planned {
    pub df: DataFrame,
    pub envelope: Option<Envelope>,
}

/// Which names OData results carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Names {
    /// The API's property names (`computerDnsName`); columns the API lacks keep theirs.
    #[default]
    Api,
    /// The lake's column names (`computer_dns_name`).
    Sql,
}

/// An OData request, planned.
#[derive(Debug)]
pub struct ODataResponse {
    pub df: DataFrame,
    /// `@odata.count`, when `$count=true` asked for it: the matching rows before
    /// `$top` and `$skip`.
    pub count: Option<u64>,
    /// The request as read.
    pub query: ODataQuery,
}

/// How an [`Engine`] is opened.
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    /// The latest tables read the newest snapshot at or before this time.
    pub as_of: Option<DateTime<Utc>>,
    /// DataFusion alone: every rule, operator and catalog answer of mdesnap's off
    /// ([`MdesnapOptions::plain_engine`]). `MDESNAP_PLAIN_ENGINE=1` sets it too.
    pub plain: bool,
    /// The most memory, in bytes, that a query's operators may hold (DataFusion's
    /// memory pool); a query that needs more ends with an error naming the limit.
    pub memory_limit: Option<usize>,
    /// The snapshots the latest and `_history` tables read.
    pub scope: ScopeChoice,
}

/// Which snapshots the latest tables, the `_history` tables and the change tables read:
/// one scope (a source kind and `$filter`, [`Scope`]), so that "the last two snapshots"
/// never compares the whole fleet with part of it. The `snapshots` table lists them all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ScopeChoice {
    /// The scope of the newest snapshot that took the whole fleet (no `$filter`); in a
    /// lake of filtered snapshots only, the scope of the newest.
    #[default]
    Default,
    /// Every snapshot, whatever its scope (the latest tables read the newest).
    All,
    /// The snapshots of this scope.
    Only(Scope),
}

impl ScopeChoice {
    /// The scope this choice means among `snapshots` (`None`: every snapshot).
    pub fn resolve(&self, snapshots: &[Manifest]) -> Option<Scope> {
        match self {
            ScopeChoice::All => None,
            ScopeChoice::Only(scope) => Some(scope.clone()),
            ScopeChoice::Default => default_scope(snapshots),
        }
    }

    /// The snapshots of `snapshots` this choice reads, in their order.
    pub fn select<'a>(&self, snapshots: &'a [Manifest]) -> Vec<&'a Manifest> {
        let scope = self.resolve(snapshots);
        snapshots
            .iter()
            .filter(|m| scope.as_ref().is_none_or(|s| Scope::of(m) == *s))
            .collect()
    }
}

impl std::str::FromStr for ScopeChoice {
    type Err = BadScope;

    /// `default`, `all`, or a scope (`api`, `generate`, `api:FILTER`).
    fn from_str(text: &str) -> std::result::Result<Self, BadScope> {
        match text.trim() {
            "default" => Ok(ScopeChoice::Default),
            "all" => Ok(ScopeChoice::All),
            _ => text.parse().map(ScopeChoice::Only),
        }
    }
}

/// SQL over a lake.
pub struct Engine {
    ctx: SessionContext,
    lake: Lake,
    as_of: Option<DateTime<Utc>>,
    scan: LakeScan,
    current: Option<SnapshotId>,
    scope: ScopeChoice,
    /// The scope `scope` resolved to when the tables were registered (`None`: all).
    scope_in_force: Option<Scope>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("lake", &self.lake)
            .field("as_of", &self.as_of)
            .field("current", &self.current)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Opens `lake` with the latest tables at the newest snapshot at or before `as_of`.
    ///
    /// A missing lake, a lake without committed snapshots, or an `as_of` before the
    /// first snapshot is an error. Broken manifests are skipped with a warning.
    pub fn open(lake: impl Into<Lake>, as_of: Option<DateTime<Utc>>) -> Result<Self> {
        Self::open_with(
            lake,
            EngineOptions {
                as_of,
                ..EngineOptions::default()
            },
        )
    }

    /// Opens `lake` as [`Engine::open`] does, with the given options.
    pub fn open_with(lake: impl Into<Lake>, options: EngineOptions) -> Result<Self> {
        let EngineOptions {
            as_of,
            plain,
            memory_limit,
            scope,
        } = options;
        let lake = lake.into();
        // DATAFUSION_* environment variables set DataFusion's options, as in
        // datafusion-cli (`DATAFUSION_EXECUTION_TARGET_PARTITIONS=4`).
        let mut config = SessionConfig::from_env()?
            .with_information_schema(true)
            .with_default_catalog_and_schema("mdesnap", "lake");
        if std::env::var_os("DATAFUSION_EXECUTION_BATCH_SIZE").is_none() {
            // Batches of 32,768 rows rather than 8,192: a quarter of the per-batch
            // work in history scans (the `lag()` query of the suite: 1.86 -> 1.21 s).
            config = config.with_batch_size(BATCH_ROWS);
        }
        if !page_index_option_set() {
            // Page indexes are read only by scans filtering on the column the files
            // are sorted by (`SnapshotTable::scan`): on any other column a page's min
            // and max span nearly every value and prune nothing, and reading them cost
            // a second read per file (a filtered count over 1,000 snapshots: 398 -> 292
            // ms).
            config.options_mut().execution.parquet.enable_page_index = false;
        }
        if std::env::var_os("DATAFUSION_OPTIMIZER_REPARTITION_JOINS").is_none()
            && config.target_partitions() <= 2
        {
            // A hash join whose build side has no statistics (a history scan) is planned
            // partitioned: both inputs hashed and sent to two partitions, then two
            // tables built. With two partitions, building one table on one thread and
            // probing it from both is faster: 02, a self-join over two snapshots, 61.7
            // -> 54.1 ms; a join of two whole histories 444 -> 357 ms.
            config.options_mut().optimizer.repartition_joins = false;
        }
        let switches = MdesnapOptions {
            plain_engine: plain || options::plain_from_env(),
            ..MdesnapOptions::default()
        };
        config = config.with_option_extension(switches);
        let mut runtime = RuntimeEnvBuilder::new();
        if let Some(bytes) = memory_limit {
            runtime = runtime.with_memory_limit(bytes, 1.0);
        }
        // After DataFusion's own physical rules: comparisons with short string literals
        // are decided on whole string views (`rules::ShortLiteralEquality`), counts grouped by
        // partition values and strings are counted a batch at a time (`rules::GroupedCounts`),
        // `lag()` over sorted input is a shifted copy (`rules::SortedLag`), and where nothing
        // above a `lag()` depends on row order its rows are grouped instead of sorted.
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime.build_arc()?)
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(ShortLiteralEquality))
            .with_physical_optimizer_rule(Arc::new(GroupedCounts))
            .with_physical_optimizer_rule(Arc::new(SortedLag))
            .with_physical_optimizer_rule(Arc::new(UnorderedLag))
            .build();
        let ctx = SessionContext::new_with_state(state);
        ctx.add_optimizer_rule(Arc::new(SnapshotsFromManifests));
        // After it: `snapshot IN (the last N snapshots)` becomes a list of values.
        ctx.add_optimizer_rule(Arc::new(SemiJoinOnConstants));
        // The local object store names files by absolute path.
        let lake = lake.absolute().map_err(|source| Error::Io {
            op: "resolving",
            path: lake.local_path().map(Path::to_path_buf).unwrap_or_default(),
            source,
        })?;
        if let Some((url, store)) = lake.object_store() {
            ctx.runtime_env().register_object_store(url.as_ref(), store);
        }
        #[cfg(unix)]
        ctx.runtime_env().register_object_store(
            ObjectStoreUrl::local_filesystem().as_ref(),
            Arc::new(crate::lake::InlineReads::new()),
        );
        let scan = scan_lake(&lake)?;
        let mut engine = Engine {
            ctx,
            lake,
            as_of,
            scan,
            current: None,
            scope,
            scope_in_force: None,
        };
        engine.register()?;
        Ok(engine)
    }

    /// Reads the manifests again and re-registers every table.
    pub fn refresh(&mut self) -> Result<()> {
        self.scan = scan_lake(&self.lake)?;
        self.register()
    }

    /// Points the latest tables at the newest snapshot at or before `as_of` (`None`: the
    /// newest of all).
    pub fn set_as_of(&mut self, as_of: Option<DateTime<Utc>>) -> Result<()> {
        let previous = self.as_of;
        self.as_of = as_of;
        if let Err(e) = self.register() {
            self.as_of = previous;
            self.register()?;
            return Err(e);
        }
        Ok(())
    }

    /// Points the latest, `_history` and change tables at the snapshots of `scope`.
    pub fn set_scope(&mut self, scope: ScopeChoice) -> Result<()> {
        let previous = std::mem::replace(&mut self.scope, scope);
        if let Err(e) = self.register() {
            self.scope = previous;
            self.register()?;
            return Err(e);
        }
        Ok(())
    }

    fn register(&mut self) -> Result<()> {
        let (current, scope) = self.register_tables()?;
        self.current = current;
        self.scope_in_force = scope;
        Ok(())
    }

    /// Every scope of the lake's snapshots, with how many snapshots each has, newest
    /// first.
    pub fn scopes(&self) -> Vec<(Scope, usize)> {
        let mut out: Vec<(Scope, usize)> = Vec::new();
        for m in self.scan.snapshots.iter().rev() {
            let scope = Scope::of(m);
            match out.iter_mut().find(|(s, _)| *s == scope) {
                Some((_, n)) => *n += 1,
                None => out.push((scope, 1)),
            }
        }
        out
    }

    /// The scope the tables read (`None`: every snapshot).
    pub fn scope(&self) -> Option<&Scope> {
        self.scope_in_force.as_ref()
    }

    /// The snapshots the latest, `_history` and change tables read.
    pub fn scoped_snapshots(&self) -> Vec<&Manifest> {
        self.scan
            .snapshots
            .iter()
            .filter(|m| {
                self.scope_in_force
                    .as_ref()
                    .is_none_or(|s| Scope::of(m) == *s)
            })
            .collect()
    }

    /// Registers every table over the manifests read, with the switches the session
    /// holds now; returns the snapshot the latest tables read and the scope in force.
    fn register_tables(&self) -> Result<(Option<SnapshotId>, Option<Scope>)> {
        let switches = MdesnapOptions::from_config(self.ctx.state().config_options());
        if self.scan.snapshots.is_empty() {
            if let Some(b) = self.scan.broken.last() {
                return Err(Error::BrokenSnapshot {
                    id: b.id,
                    reason: b.error.to_string(),
                });
            }
            return Err(Error::EmptyLake(self.lake.to_string()));
        }
        let scope = self.scope.resolve(&self.scan.snapshots);
        let all = self.scope.select(&self.scan.snapshots);
        if all.is_empty() {
            return Err(Error::EmptyScope {
                lake: self.lake.to_string(),
                scope: scope.map(|s| s.to_string()).unwrap_or_default(),
                scopes: self
                    .scopes()
                    .iter()
                    .map(|(s, _)| s.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let latest = all
            .iter()
            .rev()
            .find(|m| match self.as_of {
                None => true,
                Some(t) => m.snapshot_id().is_ok_and(|id| id.time() <= t),
            })
            .copied()
            .ok_or_else(|| Error::NoSnapshotAsOf {
                lake: self.lake.to_string(),
                time: self.as_of.unwrap_or_else(Utc::now),
            })?;
        let latest_id = latest.snapshot_id().ok();
        if let (Some(t), Some(b)) = (self.as_of, self.scan.broken.last()) {
            // A broken snapshot newer than the one chosen, yet at or before the time
            // asked for, would silently be passed over: say so.
            if b.id.time() <= t && latest_id.is_some_and(|l| l < b.id) {
                tracing::warn!(
                    "snapshot {} is unreadable, using {} instead",
                    b.id,
                    latest.id
                );
            }
        }
        for table in Table::ALL {
            let latest_table = SnapshotTable::new(&self.lake, table, &[latest], false, &switches);
            let history = SnapshotTable::new(&self.lake, table, &all, true, &switches);
            self.ctx.deregister_table(table.name())?;
            self.ctx.deregister_table(table.history_name())?;
            self.ctx
                .register_table(table.name(), Arc::new(latest_table))?;
            self.ctx
                .register_table(table.history_name(), Arc::new(history))?;
        }
        for table in Table::CHANGES {
            let changes = SnapshotTable::new(&self.lake, table, &all, true, &switches);
            self.ctx.deregister_table(table.name())?;
            self.ctx.register_table(table.name(), Arc::new(changes))?;
        }
        self.ctx.deregister_table("snapshots")?;
        self.ctx
            .register_table("snapshots", Arc::new(snapshots_table(&self.scan)?))?;
        Ok((latest_id, scope))
    }

    /// Plans one SQL statement.
    ///
    /// Nothing a statement does may change the lake: `COPY ... TO` a path inside the
    /// lake folder and `INSERT` into a table stored there are refused, and so is any
    /// `CREATE`/`DROP` that would replace or remove one of the lake's tables in this
    /// session. Other session-only DDL (views, memory tables, external tables
    /// elsewhere) works as DataFusion defines it. The whole plan is looked at, so a
    /// write wrapped in `EXPLAIN ANALYZE`, a subquery or a `PREPARE` is refused too. A
    /// byte order mark at the start (a `.sql` file saved by some editors) is ignored.
    ///
    /// `SET mdesnap.NAME = ...` turns a rule of mdesnap's on or off
    /// ([`MdesnapOptions`]) for the statements after it.
    pub async fn sql(&self, sql: &str) -> Result<DataFrame> {
        let sql = sql.trim_start_matches('\u{feff}');
        let plan = self.ctx.state().create_logical_plan(sql).await?;
        guard::check_plan(&plan, &self.lake, &self.tables())?;
        let sets_switch = guard::sets_mdesnap_option(&plan);
        let df = self.ctx.execute_logical_plan(plan).await?;
        if sets_switch {
            // The tables hold the catalog's switch from when they were registered.
            self.register_tables()?;
        }
        Ok(df)
    }

    /// Refuses `path` when it lies inside the lake folder: results written by
    /// `what` (`--output`, `\\o`) never land among the lake's files.
    pub fn guard_path(&self, what: &'static str, path: &Path) -> Result<()> {
        if guard::path_inside(&self.lake, &path.to_string_lossy()) {
            return Err(Error::WriteInLake {
                statement: what,
                target: path.display().to_string(),
                lake: self.lake.to_string(),
            });
        }
        Ok(())
    }

    /// Plans an OData request (`machines?$filter=...`), with API property names.
    pub async fn odata(&self, url: &str) -> Result<DataFrame> {
        Ok(self.odata_request(url, Names::Api).await?.df)
    }

    /// Plans an OData request, with the names asked for, and counts when `$count=true`.
    /// An OData query without `$top` returns every matching row: the lake is not paged.
    pub async fn odata_request(&self, url: &str, names: Names) -> Result<ODataResponse> {
        let odata_err = |source: ODataError| Error::OData {
            text: url.to_string(),
            source,
        };
        let q = parse_query(url).map_err(|e| odata_err(e.into()))?;
        let name = if q.history {
            q.table.history_name()
        } else {
            q.table.name().to_string()
        };
        let mut df = self.ctx.table(name.as_str()).await?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let scope = ODataScope::new(q.table, Arc::clone(&schema));
        if let Some(f) = &q.filter {
            let e = to_expr(&f.expr, &scope).map_err(|e| {
                odata_err(ODataError::Translate(TranslateError {
                    offset: f.request_offset(e.offset),
                    kind: e.kind,
                }))
            })?;
            df = df.filter(e)?;
        }
        let count = if q.count {
            Some(df.clone().count().await? as u64)
        } else {
            None
        };
        if !q.orderby.is_empty() {
            let mut keys = Vec::new();
            for k in &q.orderby {
                let (e, _) = to_value_expr(&k.expr, &scope).map_err(|e| {
                    odata_err(ODataError::Translate(TranslateError {
                        offset: k.offset + e.offset - k.expr.span.start,
                        kind: e.kind,
                    }))
                })?;
                // OData sorts nulls first in ascending order.
                keys.push(e.sort(!k.descending, !k.descending));
            }
            df = df.sort(keys)?;
        }
        if q.top.is_some() || q.skip.is_some() {
            df = df.limit(q.skip.unwrap_or(0) as usize, q.top.map(|t| t as usize))?;
        }
        let columns: Vec<String> = match &q.select {
            None => schema.fields().iter().map(|f| f.name().clone()).collect(),
            Some(items) if items.iter().any(|i| i.name == "*") => {
                schema.fields().iter().map(|f| f.name().clone()).collect()
            }
            Some(items) => {
                let mut out: Vec<String> = Vec::new();
                for item in items {
                    let Some((column, _)) = scope.resolve(&item.name) else {
                        return Err(odata_err(ODataError::Translate(TranslateError {
                            offset: item.offset,
                            kind: crate::odata::to_expr::TranslateErrorKind::UnknownProperty {
                                name: item.name.clone(),
                                suggestion: crate::odata::suggest(
                                    &item.name,
                                    scope.names().into_iter(),
                                ),
                            },
                        })));
                    };
                    if !out.contains(&column) {
                        out.push(column);
                    }
                }
                // The service writes the properties in its own order, whatever the
                // order of $select.
                out.sort_by_key(|c| schema.index_of(c).unwrap_or(usize::MAX));
                out
            }
        };
        let api_names = ScalarUDF::from(ApiNamesUdf::default());
        let projection: Vec<datafusion::logical_expr::Expr> = columns
            .iter()
            .map(|c| {
                let mut e = datafusion::logical_expr::col(datafusion::common::Column::from_name(c));
                if names == Names::Sql {
                    return e;
                }
                if schema
                    .field_with_name(c)
                    .is_ok_and(|f| has_nested_names(f.data_type()))
                {
                    e = api_names.call(vec![e]);
                }
                let api = crate::schema::api_name_for_column(q.table, c).unwrap_or(c);
                e.alias(api)
            })
            .collect();
        df = df.select(projection)?;
        Ok(ODataResponse {
            df,
            count,
            query: q,
        })
    }

    /// Plans one statement as `query` and the REPL take it: an OData request (see
    /// [`looks_like_odata`]) with the names asked for, or else SQL. `format` is where
    /// the result goes, for the one check that depends on it: `odata-json` answers
    /// OData requests only.
    pub async fn plan(&self, text: &str, names: Names, format: Format) -> Result<Planned> {
        if looks_like_odata(text) {
            let response = self.odata_request(text, names).await?;
            let envelope = Envelope {
                context: format!(
                    "{}/api/$metadata#{}",
                    self.api_origin(),
                    response.query.table.entity_set()
                ),
                count: response.count,
                api_records: names == Names::Api,
            };
            return Ok(Planned {
                df: response.df,
                envelope: Some(envelope),
            });
        }
        if format == Format::ODataJson {
            return Err(Error::ODataJsonForSql);
        }
        Ok(Planned {
            df: self.sql(text).await?,
            envelope: None,
        })
    }

    /// The origin `@odata.context` names: the API the latest tables' snapshot came from, else
    /// the commercial cloud's.
    pub fn api_origin(&self) -> String {
        self.current
            .and_then(|id| self.scan.get(id))
            .map(|m| m.source.trim_end_matches('/').to_string())
            .filter(|s| s.starts_with("http://") || s.starts_with("https://"))
            .unwrap_or_else(|| "https://api.security.microsoft.com".to_string())
    }

    /// The registered table names, sorted.
    pub fn tables(&self) -> Vec<String> {
        let mut names: Vec<String> = Table::ALL
            .iter()
            .flat_map(|t| [t.name().to_string(), t.history_name()])
            .chain(Table::CHANGES.iter().map(|t| t.name().to_string()))
            .collect();
        names.push("snapshots".to_string());
        names.sort();
        names
    }

    /// The snapshot the latest tables read.
    pub fn current_snapshot(&self) -> Option<SnapshotId> {
        self.current
    }

    /// The `as_of` time in force.
    pub fn as_of(&self) -> Option<DateTime<Utc>> {
        self.as_of
    }

    /// What the manifests said when last read.
    pub fn lake_scan(&self) -> &LakeScan {
        &self.scan
    }

    /// The lake.
    pub fn lake(&self) -> &Lake {
        &self.lake
    }

    /// The DataFusion context, for anything the engine does not wrap.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Checks that every file the committed snapshots list exists with the size its
    /// manifest gives and, on disk, has a readable Parquet footer. Used to name the
    /// file behind a failed query; cheap (one listing per table, footers only).
    pub fn verify_files(&self) -> Result<()> {
        let mut sizes = std::collections::HashMap::new();
        for table in Table::STORED {
            sizes.extend(self.lake.list(table.name())?);
        }
        for m in &self.scan.snapshots {
            let Ok(id) = m.snapshot_id() else { continue };
            for entry in m.tables.values() {
                for f in &entry.files {
                    let path = self.lake.shown(&f.path);
                    if sizes.get(&f.path) != Some(&f.bytes) {
                        return Err(Error::MissingFile { path, id });
                    }
                    if self.lake.local_path().is_some() {
                        let file = std::fs::File::open(&path).map_err(|_| Error::MissingFile {
                            path: path.clone(),
                            id,
                        })?;
                        parquet::file::metadata::ParquetMetaDataReader::new()
                            .parse_and_finish(&file)
                            .map_err(|source| Error::CorruptFile { path, source })?;
                    }
                }
            }
        }
        Ok(())
    }
}
