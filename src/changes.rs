//! What changed between two snapshots: `machine_changes` and `ip_address_changes`.
//!
//! A machine present only in the later snapshot is `added`, one present only in the
//! earlier is `removed`; a machine in both gets one `changed` row per property whose
//! value differs, named by the API (`riskScore`), with the old and new values as
//! text: strings as they are, times as the service writes them, numbers and
//! booleans as JSON, lists and objects as compact JSON with the API's key names (so
//! equal values give equal text). The keys kept in `extra` are compared one by one
//! and named by their own key. `lastSeen` moves on every check-in, so it is left
//! out unless asked for.
//!
//! An address is `added` when a (machine, address) pair appears in the later
//! snapshot's `ip_addresses` and not in the earlier's, `removed` the other way round.
//!
//! The writer computes both for each new snapshot against the previous one of the
//! same scope (see [`previous_of`]) and commits them with it; `mdesnap diff` computes
//! them between any two snapshots. Both snapshots' machines are held in memory while
//! they are compared.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, RecordBatch, StringArray, StringBuilder, TimestampMicrosecondArray,
    UInt32Array, make_comparator,
};
use arrow::compute::{concat_batches, take_record_batch};
use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Map, Value};

use crate::cancel::Cancel;
use crate::odata::shape::{api_records, api_type_array};
use crate::schema::{MACHINE_PROPERTIES, Table, UTC};
use crate::snapshot::{Manifest, SnapshotId};

/// The API's name of the property that changes on every check-in.
pub const LAST_SEEN: &str = "lastSeen";

/// A failure reading a snapshot's files or comparing them.
#[derive(Debug, thiserror::Error)]
pub enum ChangesError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: parquet::errors::ParquetError,
    },
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("comparing snapshots: {0}")]
    Arrow(#[from] ArrowError),
    #[error("cancelled")]
    Cancelled,
    #[error("the comparison stopped: {0}")]
    Join(String),
}

/// The snapshot a new snapshot's changes are computed against: the newest committed
/// one before it that took `machines` with the same scope (source, `$filter`, users
/// and domains), since a snapshot of part of a tenant compared with the whole would
/// show everything else as removed. `None` for the first of its scope.
pub fn previous_of<'a>(
    snapshots: &'a [Manifest],
    id: SnapshotId,
    scope: &Manifest,
) -> Option<&'a Manifest> {
    snapshots.iter().rev().find(|m| {
        m.snapshot_id().is_ok_and(|i| i < id)
            && m.table(Table::Machines).is_some()
            && same_scope(m, scope)
    })
}

/// Whether two snapshots cover the same devices: the same source kind, filter,
/// users and domains.
pub fn same_scope(a: &Manifest, b: &Manifest) -> bool {
    let kind = |m: &Manifest| m.source == "generate";
    kind(a) == kind(b) && a.filter == b.filter && a.users == b.users && a.domains == b.domains
}

/// Reads every file of `table` in `manifest` into one batch (empty when the snapshot
/// did not take it).
pub fn read_table(
    lake: &Path,
    manifest: &Manifest,
    table: Table,
) -> Result<RecordBatch, ChangesError> {
    let schema = table.schema();
    let mut batches = Vec::new();
    if let Some(entry) = manifest.table(table) {
        for f in &entry.files {
            let path = lake.join(&f.path);
            let shown = path.display().to_string();
            let file = std::fs::File::open(&path).map_err(|source| ChangesError::Io {
                path: shown.clone(),
                source,
            })?;
            let reader = ParquetRecordBatchReaderBuilder::try_new(file)
                .and_then(|b| b.with_batch_size(64 * 1024).build())
                .map_err(|source| ChangesError::Read {
                    path: shown.clone(),
                    source,
                })?;
            for batch in reader {
                batches.push(batch.map_err(|e| ChangesError::Read {
                    path: shown.clone(),
                    source: e.into(),
                })?);
            }
        }
    }
    Ok(concat_batches(&schema, &batches)?)
}

/// The changes of `machines` from `old` to `new` (both with the machines schema),
/// as rows of `machine_changes` (ordered by id, then the properties' order),
/// `previous` being the earlier snapshot's id.
pub fn machine_changes(
    old: &RecordBatch,
    new: &RecordBatch,
    previous: SnapshotId,
    include_last_seen: bool,
    cancel: &Cancel,
) -> Result<RecordBatch, ChangesError> {
    let old_ids = ids(old)?;
    let new_ids = ids(new)?;
    let mut old_index: HashMap<&str, u32> = HashMap::with_capacity(old_ids.len());
    for (i, id) in old_ids.iter().enumerate() {
        if let Some(id) = id {
            old_index.entry(id).or_insert(i as u32);
        }
    }
    let names = dns_names(old, new)?;
    let compared: Vec<(usize, &str)> = MACHINE_PROPERTIES
        .iter()
        .enumerate()
        .filter(|(_, p)| p.api != "id" && (include_last_seen || p.api != LAST_SEEN))
        .map(|(i, p)| (i, p.api))
        .collect();
    let extra_at = old.schema().index_of("extra")?;
    let comparators = compared
        .iter()
        .map(|(i, _)| make_comparator(old.column(*i), new.column(*i), Default::default()))
        .collect::<Result<Vec<_>, _>>()?;
    let extra_cmp = make_comparator(
        old.column(extra_at),
        new.column(extra_at),
        Default::default(),
    )?;

    let mut rows = Rows::default();
    let mut seen: HashSet<u32> = HashSet::with_capacity(old_index.len());
    let mut added: HashSet<&str> = HashSet::new();
    // Pairs with at least one differing property, and which ones.
    let mut differing: Vec<(u32, u32, Vec<usize>, bool)> = Vec::new();
    for (n, id) in new_ids.iter().enumerate() {
        if n % 65_536 == 0 && cancel.is_cancelled() {
            return Err(ChangesError::Cancelled);
        }
        let Some(id) = id else { continue };
        let n = n as u32;
        match old_index.get(id) {
            None => {
                if added.insert(id) {
                    rows.push(id, names.after(n), "added", None, None, None);
                }
            }
            Some(&o) => {
                if !seen.insert(o) {
                    continue;
                }
                let fields: Vec<usize> = comparators
                    .iter()
                    .enumerate()
                    .filter(|(_, cmp)| cmp(o as usize, n as usize).is_ne())
                    .map(|(k, _)| k)
                    .collect();
                let extra = extra_cmp(o as usize, n as usize).is_ne();
                if !fields.is_empty() || extra {
                    differing.push((o, n, fields, extra));
                }
            }
        }
    }
    for (o, id) in old_ids.iter().enumerate() {
        if let Some(id) = id
            && old_index.get(id) == Some(&(o as u32))
            && !seen.contains(&(o as u32))
        {
            rows.push(id, names.before(o as u32), "removed", None, None, None);
        }
    }
    // Values as text, only for the rows that changed.
    let old_rows = take_record_batch(
        old,
        &UInt32Array::from_iter_values(differing.iter().map(|d| d.0)),
    )?;
    let new_rows = take_record_batch(
        new,
        &UInt32Array::from_iter_values(differing.iter().map(|d| d.1)),
    )?;
    let old_records = api_records(&api_batch(&old_rows)?)?;
    let new_records = api_records(&api_batch(&new_rows)?)?;
    let known: HashSet<&str> = MACHINE_PROPERTIES.iter().map(|p| p.api).collect();
    for (k, (_, n, fields, extra)) in differing.iter().enumerate() {
        let (Some(before), Some(after)) = (old_records.get(k), new_records.get(k)) else {
            continue;
        };
        let id = new_ids.value(*n as usize);
        let name = names.after(*n);
        for f in fields {
            let api = compared[*f].1;
            rows.push(
                id,
                name,
                "changed",
                Some(api),
                value_text(before.get(api)).as_deref(),
                value_text(after.get(api)).as_deref(),
            );
        }
        if *extra {
            for (key, old_v, new_v) in extra_differences(before, after, &known) {
                rows.push(
                    id,
                    name,
                    "changed",
                    Some(key),
                    value_text(old_v).as_deref(),
                    value_text(new_v).as_deref(),
                );
            }
        }
    }
    rows.finish(previous)
}

/// The ids of a machines batch.
fn ids(batch: &RecordBatch) -> Result<&StringArray, ArrowError> {
    batch
        .column(batch.schema().index_of("id")?)
        .as_string_opt::<i32>()
        .ok_or_else(|| ArrowError::SchemaError("id is not a string column".into()))
}

/// Both sides' `computer_dns_name`.
struct DnsNames<'a> {
    old: &'a StringArray,
    new: &'a StringArray,
}

impl DnsNames<'_> {
    fn before(&self, i: u32) -> Option<&str> {
        let i = i as usize;
        self.old.is_valid(i).then(|| self.old.value(i))
    }
    fn after(&self, i: u32) -> Option<&str> {
        let i = i as usize;
        self.new.is_valid(i).then(|| self.new.value(i))
    }
}

fn dns_names<'a>(old: &'a RecordBatch, new: &'a RecordBatch) -> Result<DnsNames<'a>, ArrowError> {
    let get = |b: &'a RecordBatch| {
        b.column(b.schema().index_of("computer_dns_name")?)
            .as_string_opt::<i32>()
            .ok_or_else(|| ArrowError::SchemaError("computer_dns_name is not a string".into()))
    };
    Ok(DnsNames {
        old: get(old)?,
        new: get(new)?,
    })
}

/// The keys outside the schema (those `extra` held) whose values differ.
fn extra_differences<'a>(
    before: &'a Map<String, Value>,
    after: &'a Map<String, Value>,
    known: &HashSet<&str>,
) -> Vec<(&'a str, Option<&'a Value>, Option<&'a Value>)> {
    let mut out = Vec::new();
    for (key, v) in before {
        if known.contains(key.as_str()) {
            continue;
        }
        let w = after.get(key);
        if w != Some(v) {
            out.push((key.as_str(), Some(v), w));
        }
    }
    for (key, w) in after {
        if !known.contains(key.as_str()) && !before.contains_key(key) {
            out.push((key.as_str(), None, Some(w)));
        }
    }
    out
}

/// A property's value as `old_value`/`new_value` text: strings as they are, null as
/// SQL NULL, anything else as compact JSON.
fn value_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// `batch` (machines schema) with the API's names, top-level and nested, for
/// [`api_records`].
fn api_batch(batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
    let schema = batch.schema();
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        let name = MACHINE_PROPERTIES
            .iter()
            .find(|p| p.column == field.name())
            .map_or(field.name().as_str(), |p| p.api);
        let column = api_type_array(column)?;
        fields.push(Field::new(name, column.data_type().clone(), true));
        columns.push(column);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

/// The changes of `ip_addresses` from `old` to `new`: one row per (machine, address)
/// pair present on one side only, ordered by machine, then address.
pub fn ip_address_changes(
    old: &RecordBatch,
    new: &RecordBatch,
    previous: SnapshotId,
) -> Result<RecordBatch, ChangesError> {
    let pairs = |b: &RecordBatch| -> Result<Vec<(String, Option<String>, usize)>, ArrowError> {
        let col = |name: &str| -> Result<&StringArray, ArrowError> {
            b.column(b.schema().index_of(name)?)
                .as_string_opt::<i32>()
                .ok_or_else(|| ArrowError::SchemaError(format!("{name} is not a string")))
        };
        let (m, ip) = (col("machine_id")?, col("ip_address")?);
        Ok((0..b.num_rows())
            .map(|i| {
                let ip = ip.is_valid(i).then(|| ip.value(i).to_string());
                (m.value(i).to_string(), ip, i)
            })
            .collect())
    };
    let old_pairs = pairs(old)?;
    let new_pairs = pairs(new)?;
    let key = |p: &(String, Option<String>, usize)| (p.0.clone(), p.1.clone());
    let old_keys: HashSet<_> = old_pairs.iter().map(key).collect();
    let new_keys: HashSet<_> = new_pairs.iter().map(key).collect();
    let mut out: Vec<(&str, Option<&str>, &str, &RecordBatch, usize)> = Vec::new();
    let mut done = HashSet::new();
    for p in &new_pairs {
        if !old_keys.contains(&key(p)) && done.insert(key(p)) {
            out.push((&p.0, p.1.as_deref(), "added", new, p.2));
        }
    }
    let mut done = HashSet::new();
    for p in &old_pairs {
        if !new_keys.contains(&key(p)) && done.insert(key(p)) {
            out.push((&p.0, p.1.as_deref(), "removed", old, p.2));
        }
    }
    out.sort_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));
    let text = |b: &RecordBatch, name: &str, i: usize| -> Option<String> {
        let c = b
            .column(b.schema().index_of(name).ok()?)
            .as_string_opt::<i32>()?;
        c.is_valid(i).then(|| c.value(i).to_string())
    };
    let schema = Table::IpAddressChanges.schema();
    let n = out.len();
    let mut machine = StringBuilder::new();
    let mut ip = StringBuilder::new();
    let mut change = StringBuilder::new();
    let mut mac = StringBuilder::new();
    let mut kind = StringBuilder::new();
    for (m, a, c, b, i) in &out {
        machine.append_value(m);
        ip.append_option(*a);
        change.append_value(c);
        mac.append_option(text(b, "mac_address", *i));
        kind.append_option(text(b, "type", *i));
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(previous_column(previous, n)),
        Arc::new(machine.finish()),
        Arc::new(ip.finish()),
        Arc::new(change.finish()),
        Arc::new(mac.finish()),
        Arc::new(kind.finish()),
    ];
    Ok(RecordBatch::try_new(schema, columns)?)
}

fn previous_column(previous: SnapshotId, n: usize) -> TimestampMicrosecondArray {
    TimestampMicrosecondArray::from(vec![previous.micros(); n]).with_timezone(UTC)
}

/// `machine_changes` rows being collected.
#[derive(Default)]
struct Rows {
    id: StringBuilder,
    name: StringBuilder,
    change: StringBuilder,
    field: StringBuilder,
    old: StringBuilder,
    new: StringBuilder,
    /// Row order: by id, each id's rows in the order pushed.
    keys: Vec<(String, usize)>,
}

impl Rows {
    fn push(
        &mut self,
        id: &str,
        name: Option<&str>,
        change: &str,
        field: Option<&str>,
        old: Option<&str>,
        new: Option<&str>,
    ) {
        self.keys.push((id.to_string(), self.keys.len()));
        self.id.append_value(id);
        self.name.append_option(name);
        self.change.append_value(change);
        self.field.append_option(field);
        self.old.append_option(old);
        self.new.append_option(new);
    }

    fn finish(mut self, previous: SnapshotId) -> Result<RecordBatch, ChangesError> {
        let n = self.keys.len();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(previous_column(previous, n)),
            Arc::new(self.id.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.change.finish()),
            Arc::new(self.field.finish()),
            Arc::new(self.old.finish()),
            Arc::new(self.new.finish()),
        ];
        let batch = RecordBatch::try_new(machine_changes_schema(), columns)?;
        self.keys.sort();
        let order = UInt32Array::from_iter_values(self.keys.iter().map(|k| k.1 as u32));
        Ok(take_record_batch(&batch, &order)?)
    }
}

fn machine_changes_schema() -> SchemaRef {
    Table::MachineChanges.schema()
}

/// The changes between two committed snapshots, computed from their files.
#[derive(Debug)]
pub struct Diff {
    pub machines: RecordBatch,
    pub ip_addresses: RecordBatch,
}

/// Computes the changes from snapshot `from` to snapshot `to` of `lake`.
pub fn diff(
    lake: &Path,
    from: &Manifest,
    to: &Manifest,
    include_last_seen: bool,
    cancel: &Cancel,
) -> Result<Diff, ChangesError> {
    let previous = from
        .snapshot_id()
        .map_err(|e| ArrowError::InvalidArgumentError(e.to_string()))?;
    let (old, new) = std::thread::scope(|s| {
        let old = s.spawn(|| read_table(lake, from, Table::Machines));
        let new = read_table(lake, to, Table::Machines);
        (old.join(), new)
    });
    let old = old.map_err(|_| ArrowError::ComputeError("reading thread panicked".into()))??;
    let new = new?;
    let machines = machine_changes(&old, &new, previous, include_last_seen, cancel)?;
    drop((old, new));
    let ip_addresses = ip_address_changes(
        &read_table(lake, from, Table::IpAddresses)?,
        &read_table(lake, to, Table::IpAddresses)?,
        previous,
    )?;
    Ok(Diff {
        machines,
        ip_addresses,
    })
}

/// A `diff` between two snapshots that cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error("the lake has {0} committed snapshot(s); a diff needs two")]
    TooFew(usize),
    #[error("'{0}' is not a snapshot id, `latest`, a date or an RFC 3339 time")]
    BadSnapshot(String),
    #[error("no snapshot at or before {0}")]
    NoSnapshot(String),
    #[error("both sides are snapshot {0}: nothing to compare")]
    Same(String),
    #[error(transparent)]
    Changes(#[from] ChangesError),
}

/// The snapshots `diff FROM TO` compares. Each side is a snapshot id, `latest`, or a
/// time (the last snapshot at or before it); TO defaults to the latest snapshot and
/// FROM to the one before TO. FROM may be later than TO: the changes are then read
/// backwards.
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
        let time = crate::snapshot::parse_time(text)
            .map_err(|_| DiffError::BadSnapshot(text.to_string()))?;
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
        None if to_at == 0 => {
            return Err(DiffError::NoSnapshot(format!("before {}", snapshots[0].id)));
        }
        None => to_at - 1,
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
        lake: &Path,
        from: &Manifest,
        to: &Manifest,
        include_last_seen: bool,
        cancel: &Cancel,
    ) -> Result<Report, DiffError> {
        let bad = |m: &Manifest| DiffError::BadSnapshot(m.id.clone());
        Ok(Report {
            from: from.snapshot_id().map_err(|_| bad(from))?,
            to: to.snapshot_id().map_err(|_| bad(to))?,
            diff: diff(lake, from, to, include_last_seen, cancel)?,
        })
    }

    /// The machine changes as rows of `machine_changes` (its `snapshot` column last).
    pub fn machine_rows(&self) -> Result<RecordBatch, ArrowError> {
        with_snapshot(&self.diff.machines, self.to)
    }

    /// The address changes as rows of `ip_address_changes`.
    pub fn address_rows(&self) -> Result<RecordBatch, ArrowError> {
        with_snapshot(&self.diff.ip_addresses, self.to)
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
    pub fn summary(&self) -> Result<RecordBatch, ArrowError> {
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
        RecordBatch::try_new(schema, columns)
    }
}

/// `batch` with a `snapshot` column of `to` appended, as the change tables show it.
fn with_snapshot(batch: &RecordBatch, to: SnapshotId) -> Result<RecordBatch, ArrowError> {
    let mut fields: Vec<Arc<Field>> = batch.schema().fields().iter().cloned().collect();
    fields.push(Arc::new(crate::schema::snapshot_field()));
    let mut columns = batch.columns().to_vec();
    columns.push(Arc::new(previous_column(to, batch.num_rows())));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::MachineDecoder;

    fn machines(records: &[&str]) -> (RecordBatch, RecordBatch) {
        let mut d = MachineDecoder::default();
        for (i, r) in records.iter().enumerate() {
            d.push_json(i, r).expect("decodes");
        }
        d.finish().expect("finishes")
    }

    /// The rows as `(id, change, field, old, new)`, in order.
    fn rows(batch: &RecordBatch) -> Vec<[Option<String>; 5]> {
        let col = |i: usize| batch.column(i).as_string::<i32>();
        let text = |i: usize, r: usize| col(i).is_valid(r).then(|| col(i).value(r).to_string());
        (0..batch.num_rows())
            .map(|r| [text(1, r), text(3, r), text(4, r), text(5, r), text(6, r)])
            .collect()
    }

    fn row(
        id: &str,
        change: &str,
        field: Option<&str>,
        old: Option<&str>,
        new: Option<&str>,
    ) -> [Option<String>; 5] {
        [
            Some(id.to_string()),
            Some(change.to_string()),
            field.map(str::to_string),
            old.map(str::to_string),
            new.map(str::to_string),
        ]
    }

    #[test]
    fn every_kind_of_property_and_extra_keys_compare() {
        let before = machines(&[
            r#"{"id":"a","computerDnsName":"a.x","riskScore":"Low","osBuild":100,"isExcluded":false,
                "machineTags":["x"],"lastSeen":"2026-01-01T00:00:00Z","onboardingStatus":"Onboarded",
                "ipAddresses":[{"ipAddress":"10.0.0.1","macAddress":"AA","type":"Ethernet","operationalStatus":"Up"}],
                "vmMetadata":{"vmId":"v1"},"futureA":1,"futureB":"x"}"#,
            r#"{"id":"gone","computerDnsName":"gone.x"}"#,
            r#"{"id":"same","riskScore":"High","lastSeen":"2026-01-01T00:00:00Z"}"#,
        ]);
        let after = machines(&[
            r#"{"id":"new","computerDnsName":"new.x"}"#,
            r#"{"id":"same","riskScore":"High","lastSeen":"2026-01-02T00:00:00Z"}"#,
            r#"{"id":"a","computerDnsName":"a.x","riskScore":"High","osBuild":101,"isExcluded":true,
                "machineTags":["x","y"],"lastSeen":"2026-01-02T00:00:00Z",
                "ipAddresses":[{"ipAddress":"10.0.0.2","macAddress":"AA","type":"Ethernet","operationalStatus":"Up"}],
                "vmMetadata":{"vmId":"v2"},"futureA":2,"futureC":true}"#,
        ]);
        let previous: SnapshotId = "20260101T000000Z".parse().expect("id");
        let got = machine_changes(&before.0, &after.0, previous, false, &Cancel::new())
            .expect("compares");
        let ip = |a: &str| {
            format!(
                r#"[{{"ipAddress":"{a}","macAddress":"AA","type":"Ethernet","operationalStatus":"Up"}}]"#
            )
        };
        let vm = |v: &str| {
            format!(
                r#"{{"vmId":"{v}","cloudProvider":null,"resourceId":null,"subscriptionId":null}}"#
            )
        };
        // In the schema's (the API's) property order, then extra's keys.
        assert_eq!(
            rows(&got),
            vec![
                row(
                    "a",
                    "changed",
                    Some("isExcluded"),
                    Some("false"),
                    Some("true")
                ),
                row("a", "changed", Some("osBuild"), Some("100"), Some("101")),
                row("a", "changed", Some("riskScore"), Some("Low"), Some("High")),
                row(
                    "a",
                    "changed",
                    Some("machineTags"),
                    Some(r#"["x"]"#),
                    Some(r#"["x","y"]"#)
                ),
                row(
                    "a",
                    "changed",
                    Some("onboardingStatus"),
                    Some("Onboarded"),
                    None
                ),
                row(
                    "a",
                    "changed",
                    Some("ipAddresses"),
                    Some(&ip("10.0.0.1")),
                    Some(&ip("10.0.0.2"))
                ),
                row(
                    "a",
                    "changed",
                    Some("vmMetadata"),
                    Some(&vm("v1")),
                    Some(&vm("v2"))
                ),
                row("a", "changed", Some("futureA"), Some("1"), Some("2")),
                row("a", "changed", Some("futureB"), Some("x"), None),
                row("a", "changed", Some("futureC"), None, Some("true")),
                row("gone", "removed", None, None, None),
                row("new", "added", None, None, None),
            ]
        );
        // The previous snapshot and the names are on every row.
        let prev = got
            .column(0)
            .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
        assert!(prev.iter().all(|p| p == Some(previous.micros())));
        let names = got.column(2).as_string::<i32>();
        assert_eq!(names.value(got.num_rows() - 2), "gone.x");
        assert_eq!(names.value(got.num_rows() - 1), "new.x");

        // lastSeen only when asked.
        let with =
            machine_changes(&before.0, &after.0, previous, true, &Cancel::new()).expect("compares");
        let last_seen: Vec<_> = rows(&with)
            .into_iter()
            .filter(|r| r[2].as_deref() == Some(LAST_SEEN))
            .collect();
        let (d1, d2) = (Some("2026-01-01T00:00:00Z"), Some("2026-01-02T00:00:00Z"));
        assert_eq!(
            last_seen,
            vec![
                row("a", "changed", Some(LAST_SEEN), d1, d2),
                row("same", "changed", Some(LAST_SEEN), d1, d2),
            ]
        );

        // Addresses: one removed, one added, on machine a; gone's and new's had none.
        let addrs = ip_address_changes(&before.1, &after.1, previous).expect("compares");
        let col = |i: usize| addrs.column(i).as_string::<i32>();
        let got: Vec<(String, String, String)> = (0..addrs.num_rows())
            .map(|r| {
                (
                    col(1).value(r).into(),
                    col(2).value(r).into(),
                    col(3).value(r).into(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("a".into(), "10.0.0.1".into(), "removed".into()),
                ("a".into(), "10.0.0.2".into(), "added".into()),
            ]
        );
    }

    #[test]
    fn a_cancelled_comparison_stops() {
        let (batch, _) = machines(&[r#"{"id":"a"}"#]);
        let cancel = Cancel::new();
        cancel.cancel();
        let previous: SnapshotId = "20260101T000000Z".parse().expect("id");
        assert!(matches!(
            machine_changes(&batch, &batch, previous, false, &cancel),
            Err(ChangesError::Cancelled)
        ));
    }
}
