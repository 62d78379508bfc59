//! What changed between two snapshots: `machine_changes` and `ip_address_changes`.
//!
//! A machine present only in the later snapshot is `added`, one present only in the
//! earlier is `removed`; a machine in both gets one `changed` row per property whose
//! value differs, named by the API (`riskScore`), with the old and new values as
//! text: strings as they are, times as the service writes them but at the lake's
//! microseconds (times that differ only in the API's seventh digit are equal), numbers
//! and booleans as JSON, lists and objects as compact JSON with the API's key names
//! (so equal values give equal text). The keys kept in `extra` are compared one by one
//! and named by their own key. `lastSeen` moves on every check-in, so it is left
//! out unless asked for.
//!
//! An address is `added` when a (machine, address) pair appears in the later
//! snapshot's `ip_addresses` and not in the earlier's, `removed` the other way round.
//!
//! The writer computes both for each new snapshot against the previous one of the
//! same scope (see [`previous_of`]), comparing batches as they are appended
//! ([`MachineComparer`], [`AddressComparer`]), and commits them with it; `mdesnap
//! diff` computes them between any two snapshots from their files
//! (`lake::changes_between`, shown by `crate::diff`). The earlier snapshot is held in
//! memory while it is compared with.
//!
//! This module compares batches and knows nothing of where they come from: the lake
//! reads snapshots and imports it, never the other way round.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, RecordBatch, StringArray, StringBuilder, TimestampMicrosecondArray,
    UInt32Array, make_comparator,
};
use arrow::compute::take_record_batch;
use arrow::datatypes::{Field, Schema};
use arrow::error::ArrowError;
use serde_json::{Map, Value};

use crate::cancel::Cancel;
use crate::schema::api_shape::{api_records, api_type_array};
use crate::schema::{MACHINE_PROPERTIES, Table, UTC};
use crate::snapshot::{Manifest, SnapshotId};

/// The API's name of the property that changes on every check-in.
pub const LAST_SEEN: &str = "lastSeen";

/// A failure comparing two snapshots.
#[derive(Debug, thiserror::Error)]
pub enum ChangesError {
    #[error("comparing snapshots: {0}")]
    Arrow(#[from] ArrowError),
    #[error("cancelled")]
    Cancelled,
    #[error("the comparison stopped: {0}")]
    Join(String),
}

/// Which machines a snapshot's `machines` covers: its source kind (generated or an
/// API) and the `$filter` it was taken with. Users and domains feed only
/// `user_machines` and `domain_machines`, so they are not part of it. Snapshots are
/// compared only within a scope, and the engine's latest and `_history` tables read
/// one scope.
///
/// Written `KIND` or `KIND:FILTER` (`api`, `generate`, `api:riskScore eq 'High'`), as
/// `--scope` takes it and `snapshots list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    kind: SourceKind,
    filter: Option<String>,
}

/// Where a snapshot's rows came from, as scopes tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum SourceKind {
    /// `mdesnap generate`: the synthetic fleet.
    Generate,
    /// The Defender machines API (or its emulator).
    Api,
}

impl SourceKind {
    fn name(self) -> &'static str {
        match self {
            SourceKind::Generate => "generate",
            SourceKind::Api => "api",
        }
    }
}

impl Scope {
    /// The scope of a snapshot taken from `source` with this `$filter`.
    pub fn new(source: &str, filter: Option<&str>) -> Self {
        Scope {
            kind: if source == "generate" {
                SourceKind::Generate
            } else {
                SourceKind::Api
            },
            filter: filter.map(str::to_string),
        }
    }

    /// The scope of a committed snapshot.
    pub fn of(m: &Manifest) -> Self {
        Scope::new(&m.source, m.filter.as_deref())
    }

    /// Whether the snapshots of this scope took the whole fleet (no `$filter`).
    pub fn is_whole(&self) -> bool {
        self.filter.is_none()
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kind.name())?;
        if let Some(filter) = &self.filter {
            write!(f, ":{filter}")?;
        }
        Ok(())
    }
}

/// A scope that is not `KIND` or `KIND:FILTER`.
#[derive(Debug, thiserror::Error)]
#[error(
    "'{0}' is not a scope: write api, generate, or KIND:FILTER (api:riskScore eq 'High'), or all"
)]
pub struct BadScope(pub String);

impl std::str::FromStr for Scope {
    type Err = BadScope;

    fn from_str(text: &str) -> Result<Self, BadScope> {
        let (kind, filter) = match text.split_once(':') {
            Some((kind, filter)) => (kind, Some(filter)),
            None => (text, None),
        };
        let kind = match kind.trim() {
            "api" => SourceKind::Api,
            "generate" => SourceKind::Generate,
            _ => return Err(BadScope(text.to_string())),
        };
        if filter.is_some_and(|f| f.trim().is_empty()) {
            return Err(BadScope(text.to_string()));
        }
        Ok(Scope {
            kind,
            filter: filter.map(str::to_string),
        })
    }
}

/// The scope readers see by default: the newest snapshot's that took the whole fleet
/// (no `$filter`), else, in a lake of filtered snapshots only, the newest snapshot's.
/// `None` for a lake with no snapshots.
pub fn default_scope(snapshots: &[Manifest]) -> Option<Scope> {
    let newest = |whole: bool| {
        snapshots
            .iter()
            .rev()
            .map(Scope::of)
            .find(|s| !whole || s.is_whole())
    };
    newest(true).or_else(|| newest(false))
}

/// The snapshot a new snapshot's changes are computed against: the newest committed
/// one before it that took `machines` with the same scope (source kind and
/// `$filter`), since a snapshot of part of a tenant compared with the whole
/// would show everything else as removed. `None` for the first of its scope.
pub fn previous_of<'a>(
    snapshots: &'a [Manifest],
    id: SnapshotId,
    scope: &Scope,
) -> Option<&'a Manifest> {
    snapshots.iter().rev().find(|m| {
        m.snapshot_id().is_ok_and(|i| i < id)
            && m.table(Table::Machines).is_some()
            && Scope::of(m) == *scope
    })
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
    let mut comparer = MachineComparer::new(old.clone(), previous, include_last_seen);
    comparer.push(new, cancel)?;
    comparer.finish()
}

/// A fast hasher for the id maps (ids are not attacker-chosen keys here: they come
/// from the lake's own files, and a collision only costs time).
#[derive(Default, Clone, Copy)]
struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
}

type FxBuild = std::hash::BuildHasherDefault<FxHasher>;
type FxMap<K, V> = HashMap<K, V, FxBuild>;
type FxSet<K> = HashSet<K, FxBuild>;

/// Compares a new snapshot's machines, batch by batch as they are written, with the
/// previous snapshot's (held whole): only the change rows and a flag per earlier
/// machine are kept, so the new snapshot is never held in memory.
pub struct MachineComparer {
    old: RecordBatch,
    old_index: FxMap<Box<str>, u32>,
    seen: Vec<bool>,
    added: FxSet<Box<str>>,
    compared: Vec<(usize, &'static str)>,
    extra_at: Option<usize>,
    include_last_seen: bool,
    previous: SnapshotId,
    rows: Rows,
}

impl std::fmt::Debug for MachineComparer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MachineComparer")
            .field("previous", &self.previous)
            .field("old_rows", &self.old.num_rows())
            .finish_non_exhaustive()
    }
}

impl MachineComparer {
    /// A comparer against `old`, the machines of snapshot `previous`.
    pub fn new(old: RecordBatch, previous: SnapshotId, include_last_seen: bool) -> Self {
        let mut old_index = FxMap::default();
        if let Ok(ids) = ids(&old) {
            old_index.reserve(ids.len());
            for (i, id) in ids.iter().enumerate() {
                if let Some(id) = id {
                    old_index.entry(id.into()).or_insert(i as u32);
                }
            }
        }
        let compared = MACHINE_PROPERTIES
            .iter()
            .enumerate()
            .filter(|(_, p)| p.api != "id" && (include_last_seen || p.api != LAST_SEEN))
            .map(|(i, p)| (i, p.api))
            .collect();
        MachineComparer {
            seen: vec![false; old.num_rows()],
            extra_at: old.schema().index_of("extra").ok(),
            old,
            old_index,
            added: FxSet::default(),
            compared,
            include_last_seen,
            previous,
            rows: Rows::default(),
        }
    }

    /// Compares one batch of the new snapshot's machines.
    pub fn push(&mut self, new: &RecordBatch, cancel: &Cancel) -> Result<(), ChangesError> {
        let old = &self.old;
        let new_ids = ids(new)?;
        let new_names = dns_names(new)?;
        // First the pairs: each earlier machine met again (once), and the new ones.
        let mut pairs_old: Vec<u32> = Vec::with_capacity(new.num_rows());
        let mut pairs_new: Vec<u32> = Vec::with_capacity(new.num_rows());
        for (n, id) in new_ids.iter().enumerate() {
            if n % 16_384 == 0 && cancel.is_cancelled() {
                return Err(ChangesError::Cancelled);
            }
            let Some(id) = id else { continue };
            match self.old_index.get(id) {
                None => {
                    if self.added.insert(id.into()) {
                        self.rows
                            .push(id, text_at(new_names, n), "added", None, None, None);
                    }
                }
                Some(&o) => {
                    if !std::mem::replace(&mut self.seen[o as usize], true) {
                        pairs_old.push(o);
                        pairs_new.push(n as u32);
                    }
                }
            }
        }
        // Then each property over all pairs at once: the two sides aligned with `take`
        // and compared by arrow's `distinct` kernel (NULL equals NULL); nested columns
        // (lists, structs) by a comparator pair by pair.
        let old_idx = UInt32Array::from(pairs_old);
        let new_idx = UInt32Array::from(pairs_new);
        let columns: Vec<usize> = self
            .compared
            .iter()
            .map(|c| c.0)
            .chain(self.extra_at)
            .collect();
        let mut masks: Vec<Vec<bool>> = Vec::with_capacity(columns.len());
        for &i in &columns {
            masks.push(differs(old.column(i), new.column(i), &old_idx, &new_idx)?);
            if cancel.is_cancelled() {
                return Err(ChangesError::Cancelled);
            }
        }
        let extra_mask = self.extra_at.and_then(|_| masks.pop());
        // Pairs with at least one differing property, and which ones.
        let mut differing: Vec<(u32, u32, Vec<usize>, bool)> = Vec::new();
        for j in 0..old_idx.len() {
            let fields: Vec<usize> = (0..masks.len()).filter(|&k| masks[k][j]).collect();
            let extra = extra_mask.as_ref().is_some_and(|m| m[j]);
            if !fields.is_empty() || extra {
                differing.push((old_idx.value(j), new_idx.value(j), fields, extra));
            }
        }
        if differing.is_empty() {
            return Ok(());
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
        for (k, (_, n, fields, extra)) in differing.iter().enumerate() {
            let (Some(before), Some(after)) = (old_records.get(k), new_records.get(k)) else {
                continue;
            };
            let id = new_ids.value(*n as usize);
            let name = text_at(new_names, *n as usize);
            for f in fields {
                let api = self.compared[*f].1;
                self.rows.push(
                    id,
                    name,
                    "changed",
                    Some(api),
                    value_text(before.get(api)).as_deref(),
                    value_text(after.get(api)).as_deref(),
                );
            }
            if *extra {
                let mut skip: HashSet<&str> = fields.iter().map(|f| self.compared[*f].1).collect();
                skip.insert("id");
                if !self.include_last_seen {
                    skip.insert(LAST_SEEN);
                }
                for (key, old_v, new_v) in extra_differences(before, after, &skip) {
                    self.rows.push(
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
        Ok(())
    }

    /// The snapshot compared against.
    pub fn previous(&self) -> SnapshotId {
        self.previous
    }

    /// The rows of `machine_changes`: those found, and the machines never seen again.
    pub fn finish(mut self) -> Result<RecordBatch, ChangesError> {
        let old_ids = ids(&self.old)?;
        let old_names = dns_names(&self.old)?;
        for (o, id) in old_ids.iter().enumerate() {
            if let Some(id) = id
                && !self.seen[o]
                && self.old_index.get(id) == Some(&(o as u32))
            {
                self.rows
                    .push(id, text_at(old_names, o), "removed", None, None, None);
            }
        }
        self.rows.finish(self.previous)
    }
}

/// For each pair (`old[o]`, `new[n]`), whether the two values differ.
fn differs(
    old: &ArrayRef,
    new: &ArrayRef,
    old_idx: &UInt32Array,
    new_idx: &UInt32Array,
) -> Result<Vec<bool>, ArrowError> {
    if old.data_type().is_nested() {
        let cmp = make_comparator(old.as_ref(), new.as_ref(), Default::default())?;
        return Ok(old_idx
            .values()
            .iter()
            .zip(new_idx.values())
            .map(|(&o, &n)| cmp(o as usize, n as usize).is_ne())
            .collect());
    }
    let a = arrow::compute::take(old.as_ref(), old_idx, None)?;
    let b = arrow::compute::take(new.as_ref(), new_idx, None)?;
    let d = arrow::compute::kernels::cmp::distinct(&a, &b)?;
    Ok((0..d.len()).map(|j| d.is_valid(j) && d.value(j)).collect())
}

/// The value at `i` of a string column.
fn text_at(c: &StringArray, i: usize) -> Option<&str> {
    c.is_valid(i).then(|| c.value(i))
}

/// The ids of a machines batch.
fn ids(batch: &RecordBatch) -> Result<&StringArray, ArrowError> {
    batch
        .column(batch.schema().index_of("id")?)
        .as_string_opt::<i32>()
        .ok_or_else(|| ArrowError::SchemaError("id is not a string column".into()))
}

/// A machines batch's `computer_dns_name`.
fn dns_names(b: &RecordBatch) -> Result<&StringArray, ArrowError> {
    b.column(b.schema().index_of("computer_dns_name")?)
        .as_string_opt::<i32>()
        .ok_or_else(|| ArrowError::SchemaError("computer_dns_name is not a string".into()))
}

/// The keys outside the schema (those `extra` held) whose values differ.
///
/// Every key of the two records is compared except those in `skip` (the id, `lastSeen`
/// unless asked for, and the properties the typed columns already found changed): a
/// known property whose value did not fit its column is kept in `extra` under its own
/// name, and its changes are found here. A key set to `null` counts as absent, as a
/// NULL in a column does.
fn extra_differences<'a>(
    before: &'a Map<String, Value>,
    after: &'a Map<String, Value>,
    skip: &HashSet<&str>,
) -> Vec<(&'a str, Option<&'a Value>, Option<&'a Value>)> {
    let present = |m: &'a Map<String, Value>, key: &str| m.get(key).filter(|v| !v.is_null());
    let mut out = Vec::new();
    for key in before.keys() {
        if skip.contains(key.as_str()) {
            continue;
        }
        let (v, w) = (present(before, key), present(after, key));
        if v != w {
            out.push((key.as_str(), v, w));
        }
    }
    for key in after.keys() {
        if !skip.contains(key.as_str())
            && !before.contains_key(key)
            && present(after, key).is_some()
        {
            out.push((key.as_str(), None, present(after, key)));
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
    let mut comparer = AddressComparer::new(old.clone(), previous)?;
    comparer.push(new)?;
    comparer.finish()
}

/// A (machine, address) pair as two independent 64-bit hashes: no allocation per row,
/// and a collision (two pairs taken for one) has a chance of about 2^-128.
type Pair = u128;

/// One address change: machine, address, change, MAC address, type.
type AddressRow = (
    Box<str>,
    Option<Box<str>>,
    &'static str,
    Option<String>,
    Option<String>,
);

/// As [`MachineComparer`], for `ip_addresses`.
pub struct AddressComparer {
    old: RecordBatch,
    old_pairs: FxMap<Pair, u32>,
    seen_old: Vec<bool>,
    seen_new: FxSet<Pair>,
    out: Vec<AddressRow>,
    previous: SnapshotId,
}

impl std::fmt::Debug for AddressComparer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AddressComparer")
            .field("previous", &self.previous)
            .finish_non_exhaustive()
    }
}

fn address_columns(b: &RecordBatch) -> Result<[&StringArray; 4], ArrowError> {
    let col = |name: &str| -> Result<&StringArray, ArrowError> {
        b.column(b.schema().index_of(name)?)
            .as_string_opt::<i32>()
            .ok_or_else(|| ArrowError::SchemaError(format!("{name} is not a string")))
    };
    Ok([
        col("machine_id")?,
        col("ip_address")?,
        col("mac_address")?,
        col("type")?,
    ])
}

fn pair_at(c: &[&StringArray; 4], i: usize) -> Pair {
    use std::hash::{Hash, Hasher};
    let key = (c[0].value(i), text_at(c[1], i));
    let mut sip = std::hash::DefaultHasher::new();
    key.hash(&mut sip);
    let mut fx = FxHasher::default();
    key.hash(&mut fx);
    (u128::from(sip.finish()) << 64) | u128::from(fx.finish())
}

impl AddressComparer {
    /// A comparer against `old`, the addresses of snapshot `previous`.
    pub fn new(old: RecordBatch, previous: SnapshotId) -> Result<Self, ChangesError> {
        let mut old_pairs = FxMap::default();
        {
            let c = address_columns(&old)?;
            old_pairs.reserve(old.num_rows());
            for i in 0..old.num_rows() {
                old_pairs.entry(pair_at(&c, i)).or_insert(i as u32);
            }
        }
        Ok(AddressComparer {
            seen_old: vec![false; old.num_rows()],
            old,
            old_pairs,
            seen_new: FxSet::default(),
            out: Vec::new(),
            previous,
        })
    }

    /// No address changes: for snapshots of which one lacks `ip_addresses`.
    pub fn empty(previous: SnapshotId) -> Result<RecordBatch, ChangesError> {
        let none = RecordBatch::new_empty(Table::IpAddresses.schema());
        let comparer = AddressComparer::new(none, previous)?;
        comparer.finish()
    }

    /// Compares one batch of the new snapshot's addresses.
    pub fn push(&mut self, new: &RecordBatch) -> Result<(), ChangesError> {
        let c = address_columns(new)?;
        for i in 0..new.num_rows() {
            let pair = pair_at(&c, i);
            if self.seen_new.contains(&pair) {
                continue;
            }
            match self.old_pairs.get(&pair) {
                Some(&o) => self.seen_old[o as usize] = true,
                None => self.out.push((
                    c[0].value(i).into(),
                    text_at(c[1], i).map(Into::into),
                    "added",
                    text_at(c[2], i).map(str::to_string),
                    text_at(c[3], i).map(str::to_string),
                )),
            }
            self.seen_new.insert(pair);
        }
        Ok(())
    }

    /// The rows of `ip_address_changes`.
    pub fn finish(mut self) -> Result<RecordBatch, ChangesError> {
        let c = address_columns(&self.old)?;
        for &o in self.old_pairs.values() {
            if !self.seen_old[o as usize] {
                self.out.push((
                    c[0].value(o as usize).into(),
                    text_at(c[1], o as usize).map(Into::into),
                    "removed",
                    text_at(c[2], o as usize).map(str::to_string),
                    text_at(c[3], o as usize).map(str::to_string),
                ));
            }
        }
        self.out
            .sort_by(|a, b| (&a.0, &a.1, a.2).cmp(&(&b.0, &b.1, b.2)));
        let n = self.out.len();
        let mut machine = StringBuilder::new();
        let mut ip = StringBuilder::new();
        let mut change = StringBuilder::new();
        let mut mac = StringBuilder::new();
        let mut kind = StringBuilder::new();
        for (m, a, ch, mc, k) in &self.out {
            machine.append_value(m);
            ip.append_option(a.as_deref());
            change.append_value(ch);
            mac.append_option(mc.as_deref());
            kind.append_option(k.as_deref());
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(timestamp_column(self.previous, n)),
            Arc::new(machine.finish()),
            Arc::new(ip.finish()),
            Arc::new(change.finish()),
            Arc::new(mac.finish()),
            Arc::new(kind.finish()),
        ];
        Ok(RecordBatch::try_new(
            Table::IpAddressChanges.schema(),
            columns,
        )?)
    }
}

/// A column of `n` times, all snapshot `id`'s (`previous_snapshot`, `snapshot`).
pub(crate) fn timestamp_column(id: SnapshotId, n: usize) -> TimestampMicrosecondArray {
    TimestampMicrosecondArray::from(vec![id.micros(); n]).with_timezone(UTC)
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
            Arc::new(timestamp_column(previous, n)),
            Arc::new(self.id.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.change.finish()),
            Arc::new(self.field.finish()),
            Arc::new(self.old.finish()),
            Arc::new(self.new.finish()),
        ];
        let batch = RecordBatch::try_new(Table::MachineChanges.schema(), columns)?;
        self.keys.sort();
        let order = UInt32Array::from_iter_values(self.keys.iter().map(|k| k.1 as u32));
        Ok(take_record_batch(&batch, &order)?)
    }
}

/// The changes between two snapshots: rows of `machine_changes` and
/// `ip_address_changes` without their `snapshot` column.
#[derive(Debug)]
pub struct Diff {
    pub machines: RecordBatch,
    pub ip_addresses: RecordBatch,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::MachineDecoder;

    #[test]
    fn scopes_are_written_as_they_are_read() {
        for text in ["api", "generate", "api:riskScore eq 'High'", "api:a:b"] {
            let scope: Scope = text.parse().expect("a scope");
            assert_eq!(scope.to_string(), text);
        }
        assert_eq!(
            Scope::new("https://api.security.microsoft.com", Some("x eq 1")).to_string(),
            "api:x eq 1"
        );
        assert!(Scope::new("generate", None).is_whole());
        for bad in ["", "hunting", "api:", "API", "all"] {
            assert!(bad.parse::<Scope>().is_err(), "{bad}");
        }
    }

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
    fn values_kept_in_extra_under_known_names_compare_and_null_is_absent() {
        // An osBuild that is no integer is kept in extra under its own name.
        let before = machines(&[r#"{"id":"a","osBuild":{"major":10},"newProp":null}"#]);
        let after = machines(&[r#"{"id":"a","osBuild":{"major":11}}"#]);
        let previous: SnapshotId = "20260101T000000Z".parse().expect("id");
        let got = machine_changes(&before.0, &after.0, previous, false, &Cancel::new())
            .expect("compares");
        assert_eq!(
            rows(&got),
            vec![row(
                "a",
                "changed",
                Some("osBuild"),
                Some(r#"{"major":10}"#),
                Some(r#"{"major":11}"#)
            )]
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
