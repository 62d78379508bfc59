//! `mdesnap diff` and the console's `\diff`: which two snapshots a request names
//! ([`resolve`]), the changes between them read from the lake ([`Report::compute`],
//! through `lake::changes_between`), and the summary and rows shown.
//!
//! It sits above both `lake` and `changes`: the lake reads the snapshots, `changes`
//! compares them, and neither imports this module.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use arrow::datatypes::{Field, Schema};
use arrow::error::ArrowError;

use crate::cancel::Cancel;
use crate::changes::{ChangesError, Diff, Scope, previous_of, timestamp_column};
use crate::lake::{Lake, LakeError, changes_between};
use crate::schema::snapshot_field;
use crate::snapshot::{Manifest, SnapshotId, parse_time};

/// A `diff` between two snapshots that cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error("the lake has {0} committed snapshot(s); a diff needs two")]
    TooFew(usize),
    #[error("'{0}' is not a snapshot id, `latest`, a date or an RFC 3339 time")]
    BadSnapshot(String),
    #[error("no snapshot at or before {0}")]
    NoSnapshot(String),
    #[error(
        "no snapshot of the same scope (source and $filter) before {0}; name FROM to compare with another"
    )]
    NoEarlier(String),
    #[error("both sides are snapshot {0}: nothing to compare")]
    Same(String),
    #[error(transparent)]
    Changes(#[from] ChangesError),
    #[error(transparent)]
    Lake(#[from] LakeError),
}

impl From<ArrowError> for DiffError {
    fn from(e: ArrowError) -> Self {
        DiffError::Changes(e.into())
    }
}

/// The snapshots `diff FROM TO` compares. Each side is a snapshot id, `latest`, or a
/// time (the last snapshot at or before it); TO defaults to the latest snapshot and
/// FROM to the one before TO of the same scope (the one its stored changes compare
/// with). FROM may be later than TO: the changes are then read backwards.
pub fn resolve<'a>(
    snapshots: &'a [Manifest],
    from: Option<&str>,
    to: Option<&str>,
) -> Result<(&'a Manifest, &'a Manifest), DiffError> {
    if snapshots.len() < 2 {
        return Err(DiffError::TooFew(snapshots.len()));
    }
    let find = |text: &str| -> Result<usize, DiffError> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("latest") {
            return Ok(snapshots.len() - 1);
        }
        let time = parse_time(text).map_err(|_| DiffError::BadSnapshot(text.to_string()))?;
        snapshots
            .iter()
            .rposition(|m| m.snapshot_id().is_ok_and(|id| id.time() <= time))
            .ok_or_else(|| DiffError::NoSnapshot(text.to_string()))
    };
    let to_at = match to {
        Some(t) => find(t)?,
        None => snapshots.len() - 1,
    };
    let from_at = match from {
        Some(f) => find(f)?,
        None => {
            // The one before TO of the same scope, as the stored changes compare.
            let to_m = &snapshots[to_at];
            let earlier = to_m
                .snapshot_id()
                .ok()
                .and_then(|id| previous_of(snapshots, id, &Scope::of(to_m)))
                .ok_or_else(|| DiffError::NoEarlier(to_m.id.clone()))?;
            snapshots
                .iter()
                .position(|m| m.id == earlier.id)
                .ok_or_else(|| DiffError::NoEarlier(to_m.id.clone()))?
        }
    };
    if from_at == to_at {
        return Err(DiffError::Same(snapshots[to_at].id.clone()));
    }
    Ok((&snapshots[from_at], &snapshots[to_at]))
}

/// The changes between two snapshots, with the ids of both.
#[derive(Debug)]
pub struct Report {
    pub from: SnapshotId,
    pub to: SnapshotId,
    pub diff: Diff,
}

impl Report {
    /// Computes the report of `from` -> `to`.
    pub fn compute(
        lake: &Lake,
        from: &Manifest,
        to: &Manifest,
        include_last_seen: bool,
        cancel: &Cancel,
    ) -> Result<Report, DiffError> {
        let bad = |m: &Manifest| DiffError::BadSnapshot(m.id.clone());
        Ok(Report {
            from: from.snapshot_id().map_err(|_| bad(from))?,
            to: to.snapshot_id().map_err(|_| bad(to))?,
            diff: changes_between(lake, from, to, include_last_seen, cancel)?,
        })
    }

    /// The machine changes as rows of `machine_changes` (its `snapshot` column last).
    pub fn machine_rows(&self) -> Result<RecordBatch, DiffError> {
        Ok(with_snapshot(&self.diff.machines, self.to)?)
    }

    /// The address changes as rows of `ip_address_changes`.
    pub fn address_rows(&self) -> Result<RecordBatch, DiffError> {
        Ok(with_snapshot(&self.diff.ip_addresses, self.to)?)
    }

    /// The summary as lines of text: `machines changed riskScore: 40`.
    pub fn summary_lines(&self) -> Vec<String> {
        let Ok(summary) = self.summary() else {
            return Vec::new();
        };
        let (t, c, f) = (
            summary.column(0).as_string::<i32>(),
            summary.column(1).as_string::<i32>(),
            summary.column(2).as_string::<i32>(),
        );
        let n = summary
            .column(3)
            .as_primitive::<arrow::datatypes::UInt64Type>();
        (0..summary.num_rows())
            .map(|i| {
                let field = if f.is_valid(i) {
                    format!(" {}", f.value(i))
                } else {
                    String::new()
                };
                format!("{} {}{field}: {}", t.value(i), c.value(i), n.value(i))
            })
            .collect()
    }

    /// One row per kind of change: `table`, `change`, `field`, `rows`: machines added
    /// and removed, then each changed property (most changed first), then addresses
    /// added and removed.
    pub fn summary(&self) -> Result<RecordBatch, DiffError> {
        let mut lines: Vec<(&str, &str, Option<String>, u64)> = Vec::new();
        let m = &self.diff.machines;
        let change = m.column(3).as_string::<i32>();
        let field = m.column(4).as_string::<i32>();
        let count =
            |c: &StringArray, what: &str| c.iter().filter(|v| *v == Some(what)).count() as u64;
        lines.push(("machines", "added", None, count(change, "added")));
        lines.push(("machines", "removed", None, count(change, "removed")));
        let mut per_field: HashMap<&str, u64> = HashMap::new();
        for i in 0..m.num_rows() {
            if change.value(i) == "changed" && field.is_valid(i) {
                *per_field.entry(field.value(i)).or_default() += 1;
            }
        }
        let mut per_field: Vec<(&str, u64)> = per_field.into_iter().collect();
        per_field.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        for (f, n) in per_field {
            lines.push(("machines", "changed", Some(f.to_string()), n));
        }
        let a = self.diff.ip_addresses.column(3).as_string::<i32>();
        lines.push(("ip_addresses", "added", None, count(a, "added")));
        lines.push(("ip_addresses", "removed", None, count(a, "removed")));
        let schema = Arc::new(Schema::new(vec![
            Field::new("table", arrow::datatypes::DataType::Utf8, false),
            Field::new("change", arrow::datatypes::DataType::Utf8, false),
            Field::new("field", arrow::datatypes::DataType::Utf8, true),
            Field::new("rows", arrow::datatypes::DataType::UInt64, false),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(lines.iter().map(|l| l.0))),
            Arc::new(StringArray::from_iter_values(lines.iter().map(|l| l.1))),
            Arc::new(StringArray::from_iter(lines.iter().map(|l| l.2.as_deref()))),
            Arc::new(arrow::array::UInt64Array::from_iter_values(
                lines.iter().map(|l| l.3),
            )),
        ];
        Ok(RecordBatch::try_new(schema, columns)?)
    }
}

/// `batch` with a `snapshot` column of `to` appended, as the change tables show it.
fn with_snapshot(batch: &RecordBatch, to: SnapshotId) -> Result<RecordBatch, ArrowError> {
    let mut fields: Vec<Arc<Field>> = batch.schema().fields().iter().cloned().collect();
    fields.push(Arc::new(snapshot_field()));
    let mut columns = batch.columns().to_vec();
    columns.push(Arc::new(timestamp_column(to, batch.num_rows())));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}
