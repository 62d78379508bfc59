//! Finds the committed snapshots of a lake by reading its manifests (never by globbing
//! data folders: a folder without a manifest is a write in progress or a leftover).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;

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
    /// Manifests read one by one: not in the manifest cache, or changed since.
    pub(crate) uncached: usize,
    /// The readable manifests with their versions, for the manifest cache.
    versions: Vec<CachedManifest>,
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

/// Reads every manifest of `lake` (on an object store, one listing, the manifest cache
/// and the manifests it does not hold, read concurrently). A missing lake is an error;
/// a lake with no snapshots is not (the caller decides what that means).
pub fn scan_lake(lake: impl Into<Lake>) -> Result<LakeScan, LakeError> {
    let lake = lake.into();
    let listed = lake.list_versions(MANIFEST_DIR)?;
    if listed.is_empty() {
        lake.check_exists()?;
    }
    let mut found: Vec<(SnapshotId, String, u64, Option<String>)> = listed
        .into_iter()
        .filter_map(|(path, size, version)| {
            let name = path.rsplit('/').next()?;
            // Temporary manifests start with a dot; other names are not ours.
            let id = name.strip_suffix(".json")?.parse::<SnapshotId>().ok()?;
            (path == id.manifest_path()).then_some((id, path, size, version))
        })
        .collect();
    found.sort();
    let mut cache = if lake.is_remote() && !found.is_empty() {
        read_cache(&lake)
    } else {
        HashMap::new()
    };
    // A cached manifest is used only when the listing gives it the same version and
    // size: a replaced manifest has a new ETag.
    let mut bytes: Vec<Option<Bytes>> = found
        .iter()
        .map(|(_, path, size, version)| {
            let cached = cache.remove(path)?;
            let same = version.is_some() && cached.e_tag == *version && cached.size == *size;
            same.then(|| Bytes::from(cached.text))
        })
        .collect();
    let missing: Vec<String> = found
        .iter()
        .zip(&bytes)
        .filter(|(_, b)| b.is_none())
        .map(|((_, path, _, _), _)| path.clone())
        .collect();
    let uncached = missing.len();
    let mut read = lake.read_many(missing).into_iter();
    let mut snapshots = Vec::with_capacity(found.len());
    let mut broken = Vec::new();
    let mut versions = Vec::with_capacity(found.len());
    for ((id, relative, size, version), cached) in found.into_iter().zip(bytes.iter_mut()) {
        let path = lake.shown(&relative);
        let content = match cached.take() {
            Some(b) => Ok(b),
            None => read.next().unwrap_or_else(|| {
                Err(super::io_err(
                    "reading",
                    &path,
                    std::io::ErrorKind::NotFound.into(),
                ))
            }),
        };
        match content.and_then(|b| read_manifest(&b, &path, id).map(|m| (m, b))) {
            Ok((m, b)) => {
                if let Some(e_tag) = version {
                    versions.push(CachedManifest {
                        path: relative,
                        e_tag: Some(e_tag),
                        size,
                        text: String::from_utf8_lossy(&b).into_owned(),
                    });
                }
                snapshots.push(m);
            }
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
        uncached,
        versions,
    })
}

/// The object at the lake's root that holds copies of the manifests of a lake in an
/// object store, each with the version (ETag) it was read at: opening a lake of 1,000
/// snapshots is then three requests, not a thousand. Only writers write it, under the
/// lock; it is never trusted past a listing (an entry is used only while the listing
/// gives its manifest the same version and size), so a stale or missing cache costs
/// requests, never a wrong answer.
pub(crate) const MANIFEST_CACHE: &str = "_manifests.json";

/// Writers rewrite the cache once the manifests it lacks reach this many (each
/// rewrite uploads every manifest, so not at every commit).
const CACHE_REWRITE_AT: usize = 16;

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct CacheFile {
    format: u32,
    manifests: Vec<CachedManifest>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct CachedManifest {
    path: String,
    e_tag: Option<String>,
    size: u64,
    text: String,
}

fn read_cache(lake: &Lake) -> HashMap<String, CachedManifest> {
    let bytes = match lake.read_if_present(MANIFEST_CACHE) {
        Ok(Some(b)) => b,
        Ok(None) => return HashMap::new(),
        Err(e) => {
            tracing::debug!("manifest cache unreadable, reading every manifest: {e}");
            return HashMap::new();
        }
    };
    match serde_json::from_slice::<CacheFile>(&bytes) {
        Ok(f) if f.format == 1 => f
            .manifests
            .into_iter()
            .map(|m| (m.path.clone(), m))
            .collect(),
        _ => {
            tracing::debug!("manifest cache of another format, reading every manifest");
            HashMap::new()
        }
    }
}

/// Rewrites the manifest cache of a lake in an object store when `force` is set (a
/// writer removed manifests) or the lake has enough manifests the cache lacks; the
/// caller holds the lock. A failure is only logged: the cache saves requests, nothing
/// more.
pub(crate) fn update_manifest_cache(lake: &Lake, force: bool) {
    if !lake.is_remote() {
        return;
    }
    let scan = match scan_lake(lake) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("updating the manifest cache: {e}");
            return;
        }
    };
    if !force && scan.uncached < CACHE_REWRITE_AT {
        return;
    }
    let file = CacheFile {
        format: 1,
        manifests: scan.versions,
    };
    let written = serde_json::to_vec(&file)
        .map_err(|e| e.to_string())
        .and_then(|json| {
            lake.replace(MANIFEST_CACHE, Bytes::from(json))
                .map_err(|e| e.to_string())
        });
    if let Err(e) = written {
        tracing::warn!("updating the manifest cache: {e}");
    }
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
