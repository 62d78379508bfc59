//! `mdesnap changes rebuild`: the change tables of snapshots written before they
//! existed or committed without them, or whose previous snapshot is another today (a
//! snapshot written later with an earlier id). Changes against a pruned snapshot, with
//! nothing earlier left to compare with, are kept.
//!
//! A snapshot's changes are up to date when its manifest says they were computed
//! against the snapshot [`changes::previous_of`] picks today. Otherwise they are
//! computed again, written under new names, and the manifest is replaced in one
//! rename (readers see the old changes or the new ones); the old change files go
//! after that. A kill at any point leaves each snapshot with one consistent set, and
//! files no manifest lists are leftovers for the next writer or `snapshots prune`.

use super::prune::remove_leftovers;
use super::read::changes_between;
use super::scan::{scan_lake, update_manifest_cache};
use super::writer::{replace_manifest, write_one_file};
use super::{Lake, LakeError, LakeLock};
use crate::cancel::Cancel;
use crate::changes;
use crate::schema::Table;
use crate::snapshot::{ChangesInfo, SnapshotId, TableEntry};

/// What a rebuild did.
#[derive(Debug, Default)]
pub struct RebuildReport {
    /// Snapshots whose changes were computed, with the snapshot compared against.
    pub rebuilt: Vec<(SnapshotId, Option<String>)>,
    /// Snapshots whose changes were already up to date.
    pub current: usize,
}

/// Brings every snapshot's change tables up to date (all of them with `force`).
pub fn rebuild_changes(
    lake: impl Into<Lake>,
    wait: bool,
    force: bool,
    cancel: &Cancel,
    mut progress: impl FnMut(SnapshotId),
) -> Result<RebuildReport, LakeError> {
    let lake = lake.into();
    lake.check_exists()?;
    let _lock = LakeLock::acquire(&lake, wait)?;
    let scan = scan_lake(&lake)?;
    remove_leftovers(&lake, &scan)?;
    let mut report = RebuildReport::default();
    for m in &scan.snapshots {
        if m.table(Table::Machines).is_none() {
            continue;
        }
        let Ok(id) = m.snapshot_id() else { continue };
        let previous = changes::previous_of(&scan.snapshots, id, &changes::Scope::of(m));
        let wanted = ChangesInfo {
            previous: previous.map(|p| p.id.clone()),
        };
        let has_tables = Table::CHANGES.iter().all(|t| m.table(*t).is_some());
        // Changes against a snapshot since pruned, with none before it left, are
        // still true: they are kept (with `force` too: nothing could replace them).
        let pruned_first = previous.is_none()
            && m.changes
                .as_ref()
                .and_then(|c| c.previous.as_deref())
                .is_some_and(|p| p < m.id.as_str() && !scan.snapshots.iter().any(|s| s.id == p));
        if pruned_first || (!force && has_tables && m.changes.as_ref() == Some(&wanted)) {
            report.current += 1;
            continue;
        }
        if cancel.is_cancelled() {
            return Err(LakeError::Changes {
                id,
                reason: "cancelled".to_string(),
            });
        }
        progress(id);
        let mut updated = m.clone();
        for t in Table::CHANGES {
            updated
                .tables
                .insert(t.name().to_string(), TableEntry::default());
        }
        if let Some(previous) = previous {
            let diff = changes_between(&lake, previous, m, false, cancel).map_err(|e| {
                LakeError::Changes {
                    id,
                    reason: e.to_string(),
                }
            })?;
            for (table, batch) in [
                (Table::MachineChanges, &diff.machines),
                (Table::IpAddressChanges, &diff.ip_addresses),
            ] {
                if let Some(file) = write_one_file(&lake, id, table, batch)? {
                    let entry = updated.tables.entry(table.name().to_string()).or_default();
                    entry.rows += file.rows;
                    entry.files.push(file);
                }
            }
        }
        updated.changes = Some(wanted.clone());
        replace_manifest(&lake, &updated)?;
        let old: Vec<String> = Table::CHANGES
            .iter()
            .flat_map(|t| m.table(*t).map(|e| e.files.as_slice()).unwrap_or_default())
            .map(|f| f.path.clone())
            .collect();
        lake.delete(&old)?;
        report.rebuilt.push((id, wanted.previous));
    }
    update_manifest_cache(&lake, !report.rebuilt.is_empty());
    Ok(report)
}
