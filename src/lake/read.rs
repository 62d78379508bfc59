//! A committed snapshot's tables read whole from the lake, and the changes between
//! two snapshots computed from their files: what the writer compares a new snapshot
//! with, what `changes rebuild` recomputes, what `mdesnap diff` shows. Comparing is
//! `crate::changes`'s; this module reads, and holds one snapshot's table in memory
//! at a time.

use arrow::compute::concat_batches;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::{Lake, LakeError};
use crate::cancel::Cancel;
use crate::changes::{AddressComparer, ChangesError, Diff, ip_address_changes, machine_changes};
use crate::schema::Table;
use crate::snapshot::{MANIFEST_DIR, Manifest};

/// Reads every file of `table` in `manifest` into one batch (empty when the snapshot
/// did not take it).
pub fn read_table(
    lake: &Lake,
    manifest: &Manifest,
    table: Table,
) -> Result<RecordBatch, LakeError> {
    let schema = table.schema();
    let mut batches = Vec::new();
    if let Some(entry) = manifest.table(table) {
        let contents = lake.read_many(entry.files.iter().map(|f| f.path.clone()).collect());
        for (f, bytes) in entry.files.iter().zip(contents) {
            let shown = lake.shown(&f.path);
            let reader = ParquetRecordBatchReaderBuilder::try_new(bytes?)
                .and_then(|b| {
                    let rows = usize::try_from(f.rows)
                        .unwrap_or(usize::MAX)
                        .clamp(1, 1 << 20);
                    b.with_batch_size(rows).build()
                })
                .map_err(|source| LakeError::Read {
                    path: shown.clone(),
                    source,
                })?;
            for batch in reader {
                batches.push(batch.map_err(|e| LakeError::Read {
                    path: shown.clone(),
                    source: e.into(),
                })?);
            }
        }
    }
    if batches.len() == 1 {
        return Ok(batches.remove(0));
    }
    concat_batches(&schema, &batches).map_err(|e| LakeError::BatchSchema {
        table,
        reason: e.to_string(),
    })
}

/// The changes from snapshot `from` to snapshot `to` of `lake`, from their files: the
/// two snapshots' `machines` (read at once, on two threads), then their
/// `ip_addresses` when both took it.
pub fn changes_between(
    lake: &Lake,
    from: &Manifest,
    to: &Manifest,
    include_last_seen: bool,
    cancel: &Cancel,
) -> Result<Diff, LakeError> {
    let previous = from.snapshot_id().map_err(|source| LakeError::ManifestId {
        path: lake.shown(MANIFEST_DIR),
        source,
    })?;
    let (old, new) = std::thread::scope(|s| {
        let old = s.spawn(|| read_table(lake, from, Table::Machines));
        let new = read_table(lake, to, Table::Machines);
        (old.join(), new)
    });
    let old = old.map_err(|_| {
        ChangesError::from(ArrowError::ComputeError("reading thread panicked".into()))
    })??;
    let machines = machine_changes(&old, &new?, previous, include_last_seen, cancel)?;
    drop(old);
    let ip_addresses =
        if from.table(Table::IpAddresses).is_some() && to.table(Table::IpAddresses).is_some() {
            ip_address_changes(
                &read_table(lake, from, Table::IpAddresses)?,
                &read_table(lake, to, Table::IpAddresses)?,
                previous,
            )?
        } else {
            AddressComparer::empty(previous)?
        };
    Ok(Diff {
        machines,
        ip_addresses,
    })
}
