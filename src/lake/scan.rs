//! Finds the committed snapshots of a lake by reading its manifests (never by globbing
//! data folders: a folder without a manifest is a write in progress or a leftover).

use std::path::{Path, PathBuf};

use super::{Lake, LakeError};
use crate::snapshot::{MANIFEST_DIR, MANIFEST_FORMAT, Manifest, SnapshotId};

/// A manifest that could not be read; its snapshot is left out, the others stay usable.
#[derive(Debug)]
pub struct BrokenSnapshot {
    pub path: PathBuf,
    /// The id its file name gives.
    pub id: SnapshotId,
    pub error: LakeError,
}

/// The committed snapshots of a lake, oldest first, and the manifests that are broken.
#[derive(Debug)]
pub struct LakeScan {
    pub lake: Lake,
    pub snapshots: Vec<Manifest>,
    pub broken: Vec<BrokenSnapshot>,
}

impl LakeScan {
    /// The newest committed snapshot at or before `time` (any, when `None`).
    pub fn latest_at(&self, time: Option<chrono::DateTime<chrono::Utc>>) -> Option<&Manifest> {
        self.snapshots.iter().rev().find(|m| match time {
            None => true,
            Some(t) => m.snapshot_id().is_ok_and(|id| id.time() <= t),
        })
    }

    /// The committed snapshot with this id.
    pub fn get(&self, id: SnapshotId) -> Option<&Manifest> {
        self.snapshots
            .iter()
            .find(|m| m.snapshot_id().is_ok_and(|i| i == id))
    }
}

/// Reads every manifest of `lake` (on an object store, one listing and the manifests
/// read concurrently). A missing lake is an error; a lake with no snapshots is not
/// (the caller decides what that means).
pub fn scan_lake(lake: impl Into<Lake>) -> Result<LakeScan, LakeError> {
    let lake = lake.into();
    let listed = lake.list(MANIFEST_DIR)?;
    if listed.is_empty() {
        lake.check_exists()?;
    }
    let mut found: Vec<(SnapshotId, String)> = listed
        .into_iter()
        .filter_map(|(path, _)| {
            let name = path.rsplit('/').next()?;
            // Temporary manifests start with a dot; other names are not ours.
            let id = name.strip_suffix(".json")?.parse::<SnapshotId>().ok()?;
            (path == id.manifest_path()).then_some((id, path))
        })
        .collect();
    found.sort();
    let read = lake.read_many(found.iter().map(|(_, p)| p.clone()).collect());
    let mut snapshots = Vec::with_capacity(found.len());
    let mut broken = Vec::new();
    for ((id, path), bytes) in found.into_iter().zip(read) {
        let path = lake.shown(&path);
        match bytes.and_then(|b| read_manifest(&b, &path, id)) {
            Ok(m) => snapshots.push(m),
            Err(error) => {
                tracing::warn!("skipping snapshot {id}: {error}");
                broken.push(BrokenSnapshot { path, id, error });
            }
        }
    }
    Ok(LakeScan {
        lake,
        snapshots,
        broken,
    })
}

/// Checks one manifest's bytes, read from `path`.
pub(crate) fn read_manifest(
    bytes: &[u8],
    path: &Path,
    id: SnapshotId,
) -> Result<Manifest, LakeError> {
    // The format first: a newer mdesnap's manifest may not parse as this one's, and
    // "upgrade" is a better answer than a parse error.
    #[derive(serde::Deserialize)]
    struct Format {
        format: u32,
    }
    if let Ok(Format { format }) = serde_json::from_slice(bytes)
        && format > MANIFEST_FORMAT
    {
        return Err(LakeError::ManifestFormat {
            path: path.to_path_buf(),
            found: format,
            supported: MANIFEST_FORMAT,
        });
    }
    let manifest: Manifest =
        serde_json::from_slice(bytes).map_err(|source| LakeError::CorruptManifest {
            path: path.to_path_buf(),
            source,
        })?;
    let named = manifest
        .snapshot_id()
        .map_err(|source| LakeError::ManifestId {
            path: path.to_path_buf(),
            source,
        })?;
    if named != id {
        return Err(LakeError::ManifestMismatch {
            path: path.to_path_buf(),
            id: manifest.id,
        });
    }
    check_counts(&manifest).map_err(|reason| LakeError::ManifestCounts {
        path: path.to_path_buf(),
        reason,
    })?;
    Ok(manifest)
}

/// The largest row count or file size a manifest may give (2^48): far above any
/// real file, far below where sums of them could overflow.
const MAX_COUNT: u64 = 1 << 48;

/// Checks that a manifest's numbers can be true: each table's rows are the sum of its
/// files', and no count is absurd. The catalog plans with them (`count(*)` is answered
/// from them), so a hand-edited or damaged manifest is refused here.
fn check_counts(m: &Manifest) -> Result<(), String> {
    for (name, entry) in &m.tables {
        let mut sum = 0u64;
        for f in &entry.files {
            if f.rows > MAX_COUNT || f.bytes > MAX_COUNT {
                return Err(format!("{name}: file {} has impossible counts", f.path));
            }
            sum += f.rows;
        }
        if sum != entry.rows {
            return Err(format!(
                "{name}: {} rows listed, but its files hold {sum}",
                entry.rows
            ));
        }
    }
    if m.duplicates_dropped > MAX_COUNT {
        return Err("duplicates_dropped is impossible".to_string());
    }
    Ok(())
}
