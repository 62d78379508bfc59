//! Leftovers of interrupted writes, and `snapshots prune`.
//!
//! A leftover is a data folder of a snapshot that has no manifest, a file in a
//! committed snapshot's folder that its manifest does not list, or a temporary
//! manifest. Folders of a snapshot whose manifest exists but cannot be read are never
//! touched: that data may still be recovered by hand. Everything here runs under the
//! lake's lock, so another writer's work in progress is never mistaken for a leftover.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::scan::{LakeScan, scan_lake};
use super::{LakeError, LakeLock, io_err};
use crate::schema::Table;
use crate::snapshot::{MANIFEST_DIR, SnapshotId};

/// What `snapshots prune` removes beside leftovers.
#[derive(Debug, Clone, Default)]
pub struct PruneOptions {
    /// Keep the newest N snapshots.
    pub keep: Option<usize>,
    /// Remove snapshots taken more than this long before `now`.
    pub older_than: Option<Duration>,
    /// The time `older_than` counts back from.
    pub now: Option<DateTime<Utc>>,
    /// Report only; remove nothing.
    pub dry_run: bool,
    /// Wait for a running writer instead of failing.
    pub wait: bool,
}

/// What was (or, with `dry_run`, would be) removed.
#[derive(Debug, Default)]
pub struct PruneReport {
    pub snapshots: Vec<SnapshotId>,
    pub leftovers: Vec<PathBuf>,
}

/// Removes leftovers, then whole snapshots as the options say. A snapshot goes when
/// every given rule lets it go: with both `keep` and `older_than`, a snapshot is kept if
/// it is among the newest N *or* younger than the duration.
pub fn prune(lake: &Path, options: &PruneOptions) -> Result<PruneReport, LakeError> {
    if !lake.is_dir() {
        return Err(LakeError::NotFound(lake.to_path_buf()));
    }
    let _lock = LakeLock::acquire(lake, options.wait)?;
    let scan = scan_lake(lake)?;
    let leftovers = find_leftovers(lake, &scan)?;
    let mut report = PruneReport {
        leftovers,
        snapshots: Vec::new(),
    };
    if options.keep.is_some() || options.older_than.is_some() {
        let ids: Vec<SnapshotId> = scan
            .snapshots
            .iter()
            .filter_map(|m| m.snapshot_id().ok())
            .collect();
        let now = options.now.unwrap_or_else(Utc::now);
        let n = ids.len();
        for (i, id) in ids.iter().enumerate() {
            let beyond_keep = options.keep.is_none_or(|k| i.saturating_add(k) < n);
            // A duration reaching before the calendar's start removes nothing.
            let too_old = options.older_than.is_none_or(|d| {
                chrono::Duration::from_std(d)
                    .ok()
                    .and_then(|d| now.checked_sub_signed(d))
                    .is_some_and(|cutoff| id.time() < cutoff)
            });
            if beyond_keep && too_old {
                report.snapshots.push(*id);
            }
        }
    }
    if options.dry_run {
        return Ok(report);
    }
    for path in &report.leftovers {
        remove_path(path)?;
    }
    for id in &report.snapshots {
        remove_snapshot(lake, *id)?;
    }
    Ok(report)
}

/// Removes one committed snapshot: the manifest first, so it stops being visible
/// before any of its data goes.
fn remove_snapshot(lake: &Path, id: SnapshotId) -> Result<(), LakeError> {
    let manifest = lake.join(id.manifest_path());
    std::fs::remove_file(&manifest).map_err(|e| io_err("removing", &manifest, e))?;
    super::sync_dir(&lake.join(MANIFEST_DIR))?;
    for table in Table::STORED {
        let dir = lake.join(id.table_dir(table));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| io_err("removing", &dir, e))?;
        }
    }
    Ok(())
}

/// Removes the leftovers of `scan`'s lake; the caller holds the lock.
pub(crate) fn remove_leftovers(lake: &Path, scan: &LakeScan) -> Result<Vec<PathBuf>, LakeError> {
    let found = find_leftovers(lake, scan)?;
    for path in &found {
        remove_path(path)?;
    }
    Ok(found)
}

fn remove_path(path: &Path) -> Result<(), LakeError> {
    let result = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("removing", path, e)),
    }
}

/// Lists leftovers without removing anything.
pub(crate) fn find_leftovers(lake: &Path, scan: &LakeScan) -> Result<Vec<PathBuf>, LakeError> {
    let listed: HashSet<PathBuf> = scan
        .snapshots
        .iter()
        .flat_map(|m| m.tables.values())
        .flat_map(|t| t.files.iter())
        .map(|f| lake.join(&f.path))
        .collect();
    let mut found = Vec::new();
    for table in Table::STORED {
        let dir = lake.join(table.name());
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err("listing", &dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| io_err("listing", &dir, e))?;
            let name = entry.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_prefix("snapshot="))
                .and_then(|s| s.parse::<SnapshotId>().ok())
            else {
                continue;
            };
            let folder = entry.path();
            if !lake.join(id.manifest_path()).exists() {
                found.push(folder);
                continue;
            }
            if scan.get(id).is_none() {
                // Manifest present but unreadable: leave its data alone.
                continue;
            }
            let files = std::fs::read_dir(&folder).map_err(|e| io_err("listing", &folder, e))?;
            for file in files {
                let file = file.map_err(|e| io_err("listing", &folder, e))?;
                let path = file.path();
                if !listed.contains(&path) {
                    found.push(path);
                }
            }
        }
    }
    let manifests = lake.join(MANIFEST_DIR);
    if let Ok(entries) = std::fs::read_dir(&manifests) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name
                .to_str()
                .is_some_and(|n| n.starts_with('.') && n.ends_with(".tmp"))
            {
                found.push(entry.path());
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Text that is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a duration (expected a number and a unit: 90s, 30m, 12h, 30d, 4w, 1y)")]
pub struct BadDuration(pub String);

/// Reads `--older-than` values: numbers with units (`30d`, `1w 2d`, `12h`), as
/// `humantime` reads them.
pub fn parse_duration(s: &str) -> Result<Duration, BadDuration> {
    humantime::parse_duration(s.trim()).map_err(|_| BadDuration(s.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1w 2d"), Ok(Duration::from_secs(9 * 86_400)));
        for bad in ["", "d", "30", "30 parsecs", "-3d", "99999999999999999999w"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
