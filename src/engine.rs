//! The query engine: a DataFusion `SessionContext` with the lake's tables registered.
//!
//! `Engine::open` reads the manifests once; `refresh` reads them again (a REPL sees
//! snapshots committed after it started), and `set_as_of` points the latest tables at an
//! earlier snapshot. Queries return DataFrames: the caller decides to stream, collect or
//! write.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use datafusion::dataframe::DataFrame;
use datafusion::execution::context::SessionContext;
use datafusion::prelude::SessionConfig;

use crate::catalog::{SnapshotTable, snapshots_table};
use crate::error::{Error, Result};
use crate::lake::{LakeScan, scan_lake};
use crate::schema::Table;
use crate::snapshot::{Manifest, SnapshotId};

/// SQL over a lake.
pub struct Engine {
    ctx: SessionContext,
    lake: PathBuf,
    as_of: Option<DateTime<Utc>>,
    scan: LakeScan,
    current: Option<SnapshotId>,
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
    pub fn open(lake: &Path, as_of: Option<DateTime<Utc>>) -> Result<Self> {
        let config = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema("mdesnap", "lake");
        let ctx = SessionContext::new_with_config(config);
        let scan = scan_lake(lake)?;
        let mut engine = Engine {
            ctx,
            lake: lake.to_path_buf(),
            as_of,
            scan,
            current: None,
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

    fn register(&mut self) -> Result<()> {
        if self.scan.snapshots.is_empty() {
            if let Some(b) = self.scan.broken.last() {
                return Err(Error::BrokenSnapshot {
                    id: b.id,
                    reason: b.error.to_string(),
                });
            }
            return Err(Error::EmptyLake(self.lake.clone()));
        }
        let latest = self
            .scan
            .latest_at(self.as_of)
            .ok_or_else(|| Error::NoSnapshotAsOf {
                lake: self.lake.clone(),
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
        let all: Vec<&Manifest> = self.scan.snapshots.iter().collect();
        for table in Table::ALL {
            let latest_table = SnapshotTable::new(&self.lake, table, &[latest], false);
            let history = SnapshotTable::new(&self.lake, table, &all, true);
            self.ctx.deregister_table(table.name())?;
            self.ctx.deregister_table(table.history_name())?;
            self.ctx
                .register_table(table.name(), Arc::new(latest_table))?;
            self.ctx
                .register_table(table.history_name(), Arc::new(history))?;
        }
        self.ctx.deregister_table("snapshots")?;
        self.ctx
            .register_table("snapshots", Arc::new(snapshots_table(&self.scan)?))?;
        self.current = latest_id;
        Ok(())
    }

    /// Plans one SQL statement.
    pub async fn sql(&self, sql: &str) -> Result<DataFrame> {
        Ok(self.ctx.sql(sql).await?)
    }

    /// The registered table names, sorted.
    pub fn tables(&self) -> Vec<String> {
        let mut names: Vec<String> = Table::ALL
            .iter()
            .flat_map(|t| [t.name().to_string(), t.history_name()])
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

    /// The lake's folder.
    pub fn lake(&self) -> &Path {
        &self.lake
    }

    /// The DataFusion context, for anything the engine does not wrap.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Checks that every file the committed snapshots list exists with the size its
    /// manifest gives and has a readable Parquet footer. Used to name the file behind a
    /// failed query; cheap (footers only) but reads every file's tail.
    pub fn verify_files(&self) -> Result<()> {
        for m in &self.scan.snapshots {
            let Ok(id) = m.snapshot_id() else { continue };
            for entry in m.tables.values() {
                for f in &entry.files {
                    let path = self.lake.join(&f.path);
                    let file = std::fs::File::open(&path).map_err(|_| Error::MissingFile {
                        path: path.clone(),
                        id,
                    })?;
                    let len = file.metadata().map(|md| md.len()).unwrap_or(0);
                    if len != f.bytes {
                        return Err(Error::MissingFile { path, id });
                    }
                    parquet::file::metadata::ParquetMetaDataReader::new()
                        .parse_and_finish(&file)
                        .map_err(|source| Error::CorruptFile { path, source })?;
                }
            }
        }
        Ok(())
    }
}
