//! Leftovers of interrupted writes, and `snapshots prune`.
//!
//! A leftover is a data folder of a snapshot that has no manifest, a file in a
//! committed snapshot's folder that its manifest does not list, or a temporary
//! manifest. Folders of a snapshot whose manifest exists but cannot be read are never
//! touched: that data may still be recovered by hand. Everything here runs under the
//! lake's lock, so another writer's work in progress is never mistaken for a leftover.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::scan::{LakeScan, scan_lake, update_manifest_cache};
use super::{Lake, LakeError, LakeLock};
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
    /// Relative to the lake; a folder ends in `/`.
    pub leftovers: Vec<String>,
}

/// Removes leftovers, then whole snapshots as the options say. A snapshot goes when
/// every given rule lets it go: with both `keep` and `older_than`, a snapshot is kept if
/// it is among the newest N *or* younger than the duration.
pub fn prune(lake: impl Into<Lake>, options: &PruneOptions) -> Result<PruneReport, LakeError> {
    let lake = lake.into();
    lake.check_exists()?;
    let _lock = LakeLock::acquire(&lake, options.wait)?;
    let scan = scan_lake(&lake)?;
    let leftovers = find_leftovers(&lake, &scan)?;
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
    remove(&lake, &report.leftovers)?;
    for id in &report.snapshots {
        remove_snapshot(&lake, *id)?;
    }
    update_manifest_cache(&lake, !report.snapshots.is_empty());
    Ok(report)
}

/// Removes one committed snapshot: the manifest first, so it stops being visible
/// before any of its data goes.
fn remove_snapshot(lake: &Lake, id: SnapshotId) -> Result<(), LakeError> {
    lake.delete(&[id.manifest_path()])?;
    lake.sync_dir(MANIFEST_DIR)?;
    for table in Table::STORED {
        lake.delete_dir(&id.table_dir(table))?;
    }
    Ok(())
}

/// Removes the leftovers of `scan`'s lake; the caller holds the lock.
pub(crate) fn remove_leftovers(lake: &Lake, scan: &LakeScan) -> Result<Vec<String>, LakeError> {
    let found = find_leftovers(lake, scan)?;
    remove(lake, &found)?;
    Ok(found)
}

/// Removes leftovers: a folder (ending in `/`) with all it holds, or a file.
fn remove(lake: &Lake, leftovers: &[String]) -> Result<(), LakeError> {
    let (folders, files): (Vec<&String>, Vec<&String>) =
        leftovers.iter().partition(|p| p.ends_with('/'));
    let files: Vec<String> = files.into_iter().cloned().collect();
    lake.delete(&files)?;
    for folder in folders {
        lake.delete_dir(folder.trim_end_matches('/'))?;
    }
    Ok(())
}

/// Lists leftovers without removing anything, relative to the lake: a snapshot
/// folder without a manifest (ending in `/`), or a file.
pub(crate) fn find_leftovers(lake: &Lake, scan: &LakeScan) -> Result<Vec<String>, LakeError> {
    let listed: HashSet<&str> = scan
        .snapshots
        .iter()
        .flat_map(|m| m.tables.values())
        .flat_map(|t| t.files.iter())
        .map(|f| f.path.as_str())
        .collect();
    let broken: HashSet<SnapshotId> = scan.broken.iter().map(|b| b.id).collect();
    let mut found = BTreeSet::new();
    for table in Table::STORED {
        for (path, _) in lake.list(table.name())? {
            // `table/snapshot=ID/file`
            let mut parts = path.splitn(3, '/');
            let (Some(_), Some(folder), Some(_)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let Some(id) = folder
                .strip_prefix("snapshot=")
                .and_then(|s| s.parse::<SnapshotId>().ok())
            else {
                continue;
            };
            if broken.contains(&id) {
                // Manifest present but unreadable: leave its data alone.
                continue;
            }
            if scan.get(id).is_none() {
                found.insert(format!("{}/", id.table_dir(table)));
            } else if !listed.contains(path.as_str()) {
                found.insert(path);
            }
        }
    }
    for (path, _) in lake.list(MANIFEST_DIR)? {
        let name = path.rsplit('/').next().unwrap_or_default();
        if name.starts_with('.') && name.ends_with(".tmp") {
            found.insert(path);
        }
    }
    Ok(found.into_iter().collect())
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
