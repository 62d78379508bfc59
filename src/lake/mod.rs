//! The lake: where it lives ([`Lake`]: a folder or an object store), the one-writer
//! lock, the snapshot writer with its atomic commit, the scan that finds committed
//! snapshots, pruning, and reading a snapshot's tables whole to compute its changes
//! (with `crate::changes`, which knows nothing of the lake).
//!
//! Layout and guarantees are in `docs/lake-layout.md`. In short: data files are written
//! under unique names, each published whole once complete; the manifest is written
//! last and published with a create that never replaces an existing manifest (a hard
//! link on disk, `PutMode::Create` in an object store). Until then the snapshot does
//! not exist for readers.

#[cfg(unix)]
mod local_reads;
mod lock;
mod prune;
mod read;
mod rebuild;
mod scan;
mod store;
mod writer;

use std::io;
use std::path::{Path, PathBuf};

#[cfg(unix)]
pub use local_reads::InlineReads;
pub use lock::LakeLock;
pub(crate) use prune::remove_leftovers;
pub use prune::{PruneOptions, PruneReport, parse_duration, prune};
pub use read::{changes_between, read_table};
pub use rebuild::{RebuildReport, rebuild_changes};
pub(crate) use scan::update_manifest_cache;
pub use scan::{BrokenSnapshot, LakeScan, scan_lake};
pub use store::{BadLake, Lake, SCHEMES};
pub use writer::{Shrink, SnapshotWriter, WriterOptions};

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
    #[error("{op} {path}: {message}")]
    Store {
        op: &'static str,
        path: String,
        /// The store's error, URL queries (a SAS token) removed.
        message: String,
    },
    #[error(
        "lake {lake}: this writer's lock expired and was taken over before it committed (it was not renewed in time); nothing was published"
    )]
    LockLost { lake: String },
    #[error("lake {lake}: cannot start the thread that renews the lock's lease: {source}")]
    LockRenewal { lake: String, source: io::Error },
    #[error("lake {lake} is locked by another writer ({holder}); pass --wait to wait for it")]
    Locked { lake: String, holder: String },
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
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: parquet::errors::ParquetError,
    },
    #[error(transparent)]
    Compare(#[from] crate::changes::ChangesError),
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
    #[error(
        "{} machines, fewer than {} of the {} of snapshot {}, the previous one of its scope: not committed",
        .0.rows, .0.fraction, .0.previous_rows, .0.previous
    )]
    Shrunk(Shrink),
    #[error("snapshot {id} was published by someone else while this writer held the lock")]
    ManifestExists { id: SnapshotId },
    #[error("corrupt manifest {}: {reason}", path.display())]
    ManifestCounts { path: PathBuf, reason: String },
    #[error("the lock of lake {lock} is not the lock of lake {lake}")]
    ForeignLock { lake: String, lock: String },
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
