//! The crate's error type: one enum that the layers' errors convert into, so the
//! binary can print one clear line and map it to exit code 2.

use std::path::PathBuf;

use chrono::{DateTime, Utc};

use crate::decode::DecodeError;
use crate::lake::LakeError;
use crate::snapshot::{BadTime, SnapshotId};

/// Everything the library can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error(transparent)]
    DataFusion(#[from] datafusion::error::DataFusionError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Time(#[from] BadTime),
    #[error(
        "lake {0} has no committed snapshots; make one with `mdesnap generate` or `mdesnap ingest`"
    )]
    EmptyLake(String),
    #[error("lake {lake} has no snapshot of scope {scope}; its scopes: {scopes} (or all)")]
    EmptyScope {
        lake: String,
        scope: String,
        scopes: String,
    },
    #[error(transparent)]
    Scope(#[from] crate::changes::BadScope),
    #[error("lake {lake} has no snapshot taken at or before {}", crate::snapshot::format_time(*time))]
    NoSnapshotAsOf { lake: String, time: DateTime<Utc> },
    #[error("lake {lake} has no snapshot {id}")]
    UnknownSnapshot { lake: String, id: SnapshotId },
    #[error("snapshot {id} is unreadable: {reason}")]
    BrokenSnapshot { id: SnapshotId, reason: String },
    #[error("corrupt data file {}: {source}", path.display())]
    CorruptFile {
        path: PathBuf,
        source: parquet::errors::ParquetError,
    },
    #[error("writing {}: {source}", path.display())]
    WriteParquet {
        path: PathBuf,
        source: parquet::errors::ParquetError,
    },
    #[error("data file {} listed by snapshot {id} is missing or has the wrong size", path.display())]
    MissingFile { path: PathBuf, id: SnapshotId },
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("lake {lake} already has {count} snapshots; pass --append to add more")]
    LakeNotEmpty { lake: String, count: usize },
    #[error("unsupported output file extension in {} (expected .parquet, .csv, .json or .ndjson)", .0.display())]
    OutputExtension(PathBuf),
    #[error("writing output: {0}")]
    Output(#[source] std::io::Error),
    #[error("writing {}: {source}", path.display())]
    WriteOutput {
        path: PathBuf,
        source: Box<datafusion::error::DataFusionError>,
    },
    #[error("formatting output: {0}")]
    Format(#[from] arrow::error::ArrowError),
    /// An OData request that could not be read or understood; `offset` is a byte of
    /// `text`, for a caret.
    #[error("{source}")]
    OData {
        text: String,
        source: crate::odata::ODataError,
    },
    #[error(
        "{statement} to {target} refused: it is inside the lake {lake}, which only mdesnap's writers change"
    )]
    WriteInLake {
        statement: &'static str,
        target: String,
        lake: String,
    },
    #[error("{statement} of '{table}' refused: it is one of the lake's tables")]
    LakeTable {
        statement: &'static str,
        table: String,
    },
    #[error("invalid generator setting: {0}")]
    Generator(&'static str),
    /// The work was cancelled (Ctrl-C); nothing it had not committed stays.
    #[error("--format odata-json answers OData requests (machines?$filter=...), not SQL")]
    ODataJsonForSql,
    #[error("interrupted")]
    Interrupted(#[from] crate::cancel::Interrupted),
}

impl Error {
    /// Whether the error is a closed output pipe (`mdesnap query ... | head`), which is
    /// not a failure.
    pub fn is_broken_pipe(&self) -> bool {
        match self {
            Error::Output(e) => e.kind() == std::io::ErrorKind::BrokenPipe,
            Error::Format(arrow::error::ArrowError::IoError(_, e)) => {
                e.kind() == std::io::ErrorKind::BrokenPipe
            }
            _ => false,
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
