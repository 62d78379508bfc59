//! The on-disk lake: the one-writer lock, the snapshot writer with its atomic commit,
//! the scan that finds committed snapshots, and pruning.
//!
//! Layout and guarantees are in `docs/lake-layout.md`. In short: data files are written
//! under unique names, each published by a rename once complete; the manifest is
//! written last, under a temporary name, and published with a hard link that never
//! replaces an existing manifest. Until then the snapshot does not exist for readers.

mod lock;
mod prune;
mod rebuild;
mod scan;
mod writer;

use std::io;
use std::path::{Path, PathBuf};

pub use lock::LakeLock;
pub use prune::{PruneOptions, PruneReport, parse_duration, prune};
pub use rebuild::{RebuildReport, rebuild_changes};
pub use scan::{BrokenSnapshot, LakeScan, scan_lake};
pub use writer::{SnapshotWriter, WriterOptions};

use crate::schema::Table;
use crate::snapshot::{BadSnapshotId, SnapshotId};

/// What can go wrong reading or writing a lake.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("lake {} does not exist", .0.display())]
    NotFound(PathBuf),
    #[error(
        "lake {} is locked by another writer ({holder}); pass --wait to wait for it",
        lake.display()
    )]
    Locked { lake: PathBuf, holder: String },
    #[error("corrupt manifest {}: {source}", path.display())]
    CorruptManifest {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("manifest {} names snapshot {id}, but its file name says otherwise", path.display())]
    ManifestMismatch { path: PathBuf, id: String },
    #[error("manifest {}: {source}", path.display())]
    ManifestId {
        path: PathBuf,
        source: BadSnapshotId,
    },
    #[error("writing {}: {source}", path.display())]
    Parquet {
        path: PathBuf,
        source: parquet::errors::ParquetError,
    },
    #[error("a batch for table {table} does not have its schema: {reason}")]
    BatchSchema { table: Table, reason: String },
    #[error("table {table} was not declared when the snapshot writer was created")]
    UndeclaredTable { table: Table },
    #[error("computing the changes of snapshot {id}: {reason}")]
    Changes { id: SnapshotId, reason: String },
    #[error("snapshot {id} was published by someone else while this writer held the lock")]
    ManifestExists { id: SnapshotId },
    #[error("corrupt manifest {}: {reason}", path.display())]
    ManifestCounts { path: PathBuf, reason: String },
    #[error("the lock {} is not the lock of lake {}", lock.display(), lake.display())]
    ForeignLock { lake: PathBuf, lock: PathBuf },
    #[error(
        "manifest {} has format {found}, newer than the {supported} this mdesnap reads; upgrade mdesnap",
        path.display()
    )]
    ManifestFormat {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
}

pub(crate) fn io_err(op: &'static str, path: &Path, source: io::Error) -> LakeError {
    LakeError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Creates the lake folder if missing, readable by its owner only (a device inventory
/// is sensitive).
pub fn create_lake_dir(lake: &Path) -> Result<(), LakeError> {
    if lake.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(lake)
        .map_err(|e| io_err("creating lake", lake, e))?;
    // The new folder's entry must survive a crash too.
    match lake.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent),
        _ => Ok(()),
    }
}

/// Creates `lake/relative` and any missing folder on the way, syncing the parent of
/// each folder made so the new entries survive a crash; returns the full path.
pub(crate) fn create_dirs_synced(lake: &Path, relative: &Path) -> Result<PathBuf, LakeError> {
    let mut dir = lake.to_path_buf();
    for part in relative.components() {
        let parent = dir.clone();
        dir.push(part);
        match std::fs::create_dir(&dir) {
            Ok(()) => sync_dir(&parent)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
            Err(e) => return Err(io_err("creating", &dir, e)),
        }
    }
    Ok(dir)
}

/// Flushes a directory's entries to disk, so a rename or link in it survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), LakeError> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)
            .and_then(|f| f.sync_all())
            .map_err(|e| io_err("syncing", dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}
