//! Snapshot ids, the lake's path scheme and the manifest that makes a snapshot visible.
//!
//! A snapshot id is the UTC start time of its ingest written `YYYYMMDDTHHMMSSZ`: it sorts
//! as text, has no colons, and is safe on every filesystem. A snapshot exists for
//! mdesnap once `_snapshots/<id>.json` exists, and only then; the manifest lists every
//! data file, so readers never glob.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::schema::Table;

/// Folder of the manifests, beside the table folders.
pub const MANIFEST_DIR: &str = "_snapshots";

/// The lock file held by the one writer.
pub const LOCK_FILE: &str = "_lock";

/// Version of the manifest format this build writes and reads.
pub const MANIFEST_FORMAT: u32 = 1;

const ID_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// A snapshot's id: its start time in whole UTC seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SnapshotId(i64);

impl SnapshotId {
    /// The id of a snapshot started at `time` (sub-second part dropped).
    pub fn from_time(time: DateTime<Utc>) -> Self {
        SnapshotId(time.timestamp())
    }

    /// Seconds since the Unix epoch.
    pub fn seconds(self) -> i64 {
        self.0
    }

    /// The start time as a UTC timestamp.
    pub fn time(self) -> DateTime<Utc> {
        Utc.timestamp_opt(self.0, 0)
            .single()
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    /// Microseconds since the epoch, the value of the `snapshot` column.
    pub fn micros(self) -> i64 {
        self.0.saturating_mul(1_000_000)
    }

    /// The id one second later: where a writer goes when this one is taken.
    pub fn next(self) -> Self {
        SnapshotId(self.0 + 1)
    }

    /// The folder of `table`'s files of this snapshot, relative to the lake.
    pub fn table_dir(self, table: Table) -> String {
        format!("{}/snapshot={self}", table.name())
    }

    /// The manifest's path, relative to the lake.
    pub fn manifest_path(self) -> String {
        format!("{MANIFEST_DIR}/{self}.json")
    }
}

impl fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.time().format(ID_FORMAT))
    }
}

/// Text that is not a snapshot id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a snapshot id (expected YYYYMMDDTHHMMSSZ, e.g. 20261123T070000Z)")]
pub struct BadSnapshotId(pub String);

impl FromStr for SnapshotId {
    type Err = BadSnapshotId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // chrono accepts shorter fields than the format's; the id has a fixed width.
        if s.len() != 16 {
            return Err(BadSnapshotId(s.to_string()));
        }
        NaiveDateTime::parse_from_str(s, ID_FORMAT)
            .map(|t| SnapshotId(t.and_utc().timestamp()))
            .map_err(|_| BadSnapshotId(s.to_string()))
    }
}

/// Text that is none of the time forms the command line takes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "'{0}' is not a time (expected RFC 3339 like 2026-11-01T07:00:00Z, a date like 2026-11-01, or a snapshot id like 20261101T070000Z)"
)]
pub struct BadTime(pub String);

/// Reads `--as-of`, `--start` and `\asof` values: RFC 3339, a date (UTC midnight), or a
/// snapshot id.
pub fn parse_time(s: &str) -> Result<DateTime<Utc>, BadTime> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d")
        && let Some(t) = d.and_hms_opt(0, 0, 0)
    {
        return Ok(t.and_utc());
    }
    if let Ok(id) = s.parse::<SnapshotId>() {
        return Ok(id.time());
    }
    Err(BadTime(s.to_string()))
}

/// RFC 3339 with `Z` and whole seconds, as manifests store times.
pub fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// One data file of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path relative to the lake, with `/` separators.
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
}

/// The files and row count of one table in a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableEntry {
    pub rows: u64,
    pub files: Vec<FileEntry>,
}

/// How `generate` made a snapshot, so `--append` can carry the same fleet on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeneratorInfo {
    pub seed: u64,
    pub machines: u64,
    pub churn: f64,
    pub start: String,
    pub day: u32,
}

/// The manifest: written last, it is what makes a snapshot exist.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub id: String,
    pub started_at: String,
    pub finished_at: String,
    /// Where the rows came from: the API origin, or `generate`.
    pub source: String,
    /// The `$filter` sent to the service, if any.
    pub filter: Option<String>,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub domains: Vec<String>,
    /// The tables this snapshot took; a table it did not take is absent.
    pub tables: BTreeMap<String, TableEntry>,
    #[serde(default)]
    pub duplicates_dropped: u64,
    pub mdesnap_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator: Option<GeneratorInfo>,
    /// Present once the change tables of this snapshot are computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<ChangesInfo>,
}

/// What a snapshot's change tables were computed against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangesInfo {
    /// The earlier snapshot compared with; `None` for the first of its scope (its
    /// change tables are then empty).
    pub previous: Option<String>,
}

impl Manifest {
    /// The snapshot's id, checked.
    pub fn snapshot_id(&self) -> Result<SnapshotId, BadSnapshotId> {
        self.id.parse()
    }

    /// The entry of `table`, if this snapshot took it.
    pub fn table(&self, table: Table) -> Option<&TableEntry> {
        self.tables.get(table.name())
    }

    /// Rows of `table`, zero when the snapshot did not take it.
    pub fn rows(&self, table: Table) -> u64 {
        self.table(table).map_or(0, |t| t.rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_round_trips_and_sorts_as_text() {
        let id: SnapshotId = "20261123T070000Z".parse().expect("valid id");
        assert_eq!(id.to_string(), "20261123T070000Z");
        assert_eq!(id.next().to_string(), "20261123T070001Z");
        let later: SnapshotId = "20261124T000000Z".parse().expect("valid id");
        assert!(id < later && id.to_string() < later.to_string());
    }

    #[test]
    fn bad_ids_are_rejected() {
        for s in [
            "2026112T070000Z",
            "20261123 070000Z",
            "20261323T070000Z",
            "",
        ] {
            assert!(s.parse::<SnapshotId>().is_err(), "{s}");
        }
    }

    #[test]
    fn times_in_three_forms() {
        let a = parse_time("2026-11-01").expect("date");
        let b = parse_time("2026-11-01T00:00:00Z").expect("rfc3339");
        let c = parse_time("20261101T000000Z").expect("id");
        assert_eq!(a, b);
        assert_eq!(b, c);
        assert_eq!(parse_time("2026-11-01T02:00:00+02:00").expect("offset"), a);
        let err = parse_time("yesterday").expect_err("not a time");
        assert!(err.to_string().contains("'yesterday'"));
    }
}
