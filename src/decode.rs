//! API records (JSON objects as the service sends them) into Arrow batches.
//!
//! The one path from records to the lake, shared by `generate` and the ingester. It is
//! tolerant the way the contract asks (section 2.7): every key but `id` may be missing
//! or null, enumerations are kept as strings, a number sent as a string ("140") is read,
//! and no property is dropped: one the schema does not know, or a known one whose
//! value has a shape its column cannot hold, is kept in `extra` as JSON.
//!
//! Times are the exception to keeping everything. The API writes seven fractional
//! digits (100 ns); a timestamp column holds microseconds, so the seventh digit is
//! truncated and kept nowhere, `extra` included (a time written with an offset other
//! than `Z` is kept as the same instant in UTC, its offset not kept either). Only a
//! value that is not an RFC 3339 time goes to `extra`, as it came.
//!
//! Records are read from their JSON text (`push_json`) without building a
//! `serde_json::Value`: each key's value is first taken as a borrowed raw slice, and the
//! shapes the service sends (strings without escapes, integers, arrays of strings,
//! objects of strings) go straight into the column builders. Any other shape takes the
//! general path, a `Value` of that one property, so both give the same rows; the unit
//! test `fast_and_general_paths_agree` holds them to it.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow::array::{
    ArrayBuilder, ArrayRef, BooleanBuilder, Int64Builder, ListArray, ListBuilder, StringBuilder,
    StructArray, TimestampMicrosecondBuilder,
};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::datatypes::Field;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::schema::{
    IP_ADDRESS_PROPERTIES, Kind, Property, Table, UTC, VM_METADATA_PROPERTIES, ip_address_fields,
    vm_metadata_fields,
};

/// A record that cannot become a row.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record {index} has no string 'id'")]
    MissingId { index: usize },
    #[error("record {index} is not a JSON object")]
    NotAnObject { index: usize },
    /// The columns built do not make a batch of the table's schema: a bug in the
    /// decoder, reported rather than hidden behind an empty batch.
    #[error("decoded rows do not fit table {table}: {reason}")]
    Schema { table: Table, reason: String },
}

/// Builds `machines` and `ip_addresses` batches from Machine records.
#[derive(Debug)]
pub struct MachineDecoder {
    entity: EntityDecoder,
    ips: IpRows,
}

impl Default for MachineDecoder {
    fn default() -> Self {
        MachineDecoder {
            entity: EntityDecoder::new(Table::Machines),
            ips: IpRows::default(),
        }
    }
}

impl MachineDecoder {
    /// Adds one record; `index` is its position, for the error message.
    pub fn push(&mut self, index: usize, record: &Value) -> Result<(), DecodeError> {
        if !record.is_object() {
            return Err(DecodeError::NotAnObject { index });
        }
        self.push_json(index, &record.to_string())
    }

    /// Adds one record given as its JSON text, as a page of the API holds it.
    pub fn push_json(&mut self, index: usize, text: &str) -> Result<(), DecodeError> {
        let pushed = self.entity.push_json(index, text)?;
        if let Some(raw) = pushed.ip_addresses {
            self.ips.push_all(&pushed.id, raw);
        }
        Ok(())
    }

    /// Rows added since the last `finish`.
    pub fn len(&self) -> usize {
        self.entity.rows
    }

    /// Whether no rows were added since the last `finish`.
    pub fn is_empty(&self) -> bool {
        self.entity.rows == 0
    }

    /// The `machines` and `ip_addresses` batches of the rows added, and a fresh start.
    pub fn finish(&mut self) -> Result<(RecordBatch, RecordBatch), DecodeError> {
        Ok((self.entity.finish()?, self.ips.finish()?))
    }
}

/// Builds `security_states` batches from MachineSecurityState records.
#[derive(Debug)]
pub struct SecurityStateDecoder(EntityDecoder);

impl Default for SecurityStateDecoder {
    fn default() -> Self {
        SecurityStateDecoder(EntityDecoder::new(Table::SecurityStates))
    }
}

impl SecurityStateDecoder {
    /// Adds one record; `index` is its position, for the error message.
    pub fn push(&mut self, index: usize, record: &Value) -> Result<(), DecodeError> {
        if !record.is_object() {
            return Err(DecodeError::NotAnObject { index });
        }
        self.push_json(index, &record.to_string())
    }

    /// Adds one record given as its JSON text.
    pub fn push_json(&mut self, index: usize, text: &str) -> Result<(), DecodeError> {
        self.0.push_json(index, text).map(|_| ())
    }

    /// Rows added since the last `finish`.
    pub fn len(&self) -> usize {
        self.0.rows
    }

    /// Whether no rows were added since the last `finish`.
    pub fn is_empty(&self) -> bool {
        self.0.rows == 0
    }

    /// The batch of the rows added, and a fresh start.
    pub fn finish(&mut self) -> Result<RecordBatch, DecodeError> {
        self.0.finish()
    }
}

/// Builds `user_machines` or `domain_machines` batches.
#[derive(Debug)]
pub struct PairBuilder {
    table: Table,
    key: StringBuilder,
    machine: StringBuilder,
}

impl PairBuilder {
    /// A builder for `Table::UserMachines` or `Table::DomainMachines`.
    pub fn new(table: Table) -> Self {
        PairBuilder {
            table,
            key: StringBuilder::new(),
            machine: StringBuilder::new(),
        }
    }

    /// Adds the pair (user or domain, machine id).
    pub fn push(&mut self, key: &str, machine_id: &str) {
        self.key.append_value(key);
        self.machine.append_value(machine_id);
    }

    /// Rows added since the last `finish`.
    pub fn len(&self) -> usize {
        self.key.len()
    }

    /// Whether no rows were added since the last `finish`.
    pub fn is_empty(&self) -> bool {
        self.key.is_empty()
    }

    /// The batch of the rows added, and a fresh start.
    pub fn finish(&mut self) -> Result<RecordBatch, DecodeError> {
        let columns: Vec<ArrayRef> =
            vec![Arc::new(self.key.finish()), Arc::new(self.machine.finish())];
        batch(self.table, columns)
    }
}

fn batch(table: Table, columns: Vec<ArrayRef>) -> Result<RecordBatch, DecodeError> {
    // The builders are made from the same schema, so this should not fail; if it ever
    // does, the error stops the snapshot rather than committing it without these rows.
    RecordBatch::try_new(table.schema(), columns).map_err(|e| DecodeError::Schema {
        table,
        reason: e.to_string(),
    })
}

/// One column being built.
#[derive(Debug)]
enum Column {
    String(StringBuilder),
    Bool(BooleanBuilder),
    Int64(Int64Builder),
    Timestamp(TimestampMicrosecondBuilder),
    StringList(ListBuilder<StringBuilder>),
    IpList(IpListBuilder),
    Vm(VmBuilder),
}

impl Column {
    fn new(kind: Kind) -> Self {
        match kind {
            Kind::String => Column::String(StringBuilder::new()),
            Kind::Bool => Column::Bool(BooleanBuilder::new()),
            Kind::Int64 => Column::Int64(Int64Builder::new()),
            Kind::Timestamp => {
                Column::Timestamp(TimestampMicrosecondBuilder::new().with_timezone(UTC))
            }
            Kind::StringList => Column::StringList(ListBuilder::new(StringBuilder::new())),
            Kind::IpAddressList => Column::IpList(IpListBuilder::default()),
            Kind::VmMetadata => Column::Vm(VmBuilder::default()),
        }
    }

    /// Appends `value`; returns false when the value's shape does not fit the column
    /// (a null is appended then, and the caller keeps the raw value in `extra`).
    fn push(&mut self, value: Option<&Value>) -> bool {
        let value = match value {
            None | Some(Value::Null) => {
                self.push_null();
                return true;
            }
            Some(v) => v,
        };
        match self {
            Column::String(b) => match scalar_text(value) {
                Some(s) => {
                    b.append_value(s);
                    true
                }
                None => {
                    b.append_null();
                    false
                }
            },
            Column::Bool(b) => {
                let v = match value {
                    Value::Bool(v) => Some(*v),
                    Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
                    Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
                    _ => None,
                };
                b.append_option(v);
                v.is_some()
            }
            Column::Int64(b) => {
                let v = match value {
                    Value::Number(n) => n.as_i64().or_else(|| {
                        n.as_f64()
                            .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                            .map(|f| f as i64)
                    }),
                    Value::String(s) => s.trim().parse().ok(),
                    _ => None,
                };
                b.append_option(v);
                v.is_some()
            }
            Column::Timestamp(b) => {
                let v = value.as_str().and_then(parse_timestamp_micros);
                b.append_option(v);
                v.is_some()
            }
            Column::StringList(b) => match value {
                Value::Array(items) => {
                    let mut fits = true;
                    for item in items {
                        match item {
                            Value::Null => b.values().append_null(),
                            other => match scalar_text(other) {
                                Some(s) => b.values().append_value(s),
                                None => {
                                    b.values().append_null();
                                    fits = false;
                                }
                            },
                        }
                    }
                    b.append(true);
                    fits
                }
                _ => {
                    b.append(false);
                    false
                }
            },
            Column::IpList(b) => b.push(value),
            Column::Vm(b) => b.push(value),
        }
    }

    /// Appends the value whose JSON text is `raw`: the shapes the service sends are
    /// read in place, any other through `push` on its `Value`. Returns what `push` does.
    fn push_raw(&mut self, raw: &str) -> bool {
        if raw == "null" {
            self.push_null();
            return true;
        }
        let read = match self {
            Column::String(b) => string_literal(raw).map(|s| b.append_value(s)).is_some(),
            Column::Bool(b) => match raw {
                "true" | "false" => {
                    b.append_value(raw == "true");
                    true
                }
                _ => false,
            },
            Column::Int64(b) => raw.parse::<i64>().map(|v| b.append_value(v)).is_ok(),
            Column::Timestamp(b) => {
                if let Some(s) = string_literal(raw) {
                    let v = parse_timestamp_micros(&s);
                    b.append_option(v);
                    return v.is_some();
                }
                false
            }
            Column::StringList(b) => match serde_json::from_str::<Vec<Option<Text<'_>>>>(raw) {
                Ok(items) => {
                    for item in items {
                        b.values().append_option(item.map(|t| t.0));
                    }
                    b.append(true);
                    true
                }
                Err(_) => false,
            },
            Column::IpList(b) => b.push_raw(raw),
            Column::Vm(b) => b.push_raw(raw),
        };
        if read {
            return true;
        }
        match serde_json::from_str::<Value>(raw) {
            Ok(v) => self.push(Some(&v)),
            // JSON a value tree cannot hold (a lone surrogate escape, a number past
            // f64, nesting deeper than serde_json's limit): kept verbatim in `extra`.
            Err(_) => {
                self.push_null();
                false
            }
        }
    }

    fn push_null(&mut self) {
        match self {
            Column::String(b) => b.append_null(),
            Column::Bool(b) => b.append_null(),
            Column::Int64(b) => b.append_null(),
            Column::Timestamp(b) => b.append_null(),
            Column::StringList(b) => b.append(false),
            Column::IpList(b) => b.push_null(),
            Column::Vm(b) => b.push_null(),
        }
    }

    fn finish(&mut self) -> Result<ArrayRef, ArrowError> {
        Ok(match self {
            Column::String(b) => Arc::new(b.finish()),
            Column::Bool(b) => Arc::new(b.finish()),
            Column::Int64(b) => Arc::new(b.finish()),
            Column::Timestamp(b) => Arc::new(b.finish()),
            Column::StringList(b) => Arc::new(b.finish()),
            Column::IpList(b) => b.finish()?,
            Column::Vm(b) => b.finish()?,
        })
    }
}

/// Strings as they are; numbers and booleans as their JSON text; nothing else.
fn scalar_text(v: &Value) -> Option<std::borrow::Cow<'_, str>> {
    match v {
        Value::String(s) => Some(std::borrow::Cow::Borrowed(s)),
        Value::Number(n) => Some(std::borrow::Cow::Owned(n.to_string())),
        Value::Bool(b) => Some(std::borrow::Cow::Borrowed(if *b {
            "true"
        } else {
            "false"
        })),
        _ => None,
    }
}

/// The value of a JSON string literal, borrowed from the text unless it has escapes;
/// `None` when `raw` is not a string.
fn string_literal(raw: &str) -> Option<Cow<'_, str>> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    if inner.contains(['\\', '"']) {
        serde_json::from_str::<Text<'_>>(raw).ok().map(|t| t.0)
    } else {
        Some(Cow::Borrowed(inner))
    }
}

/// The `extra` object of a row: `(key, value)` with each value as JSON text, compact
/// as `serde_json` writes it, or the service's own text when no value tree can hold it.
fn extra_json(entries: &[(&str, &str)]) -> String {
    let mut out = String::from("{");
    for (i, (key, raw)) in entries.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&Value::from(*key).to_string());
        out.push(':');
        match serde_json::from_str::<Value>(raw) {
            Ok(v) => out.push_str(&v.to_string()),
            Err(_) => out.push_str(raw.trim()),
        }
    }
    out.push('}');
    out
}

/// A JSON string, borrowed from the text when it has no escapes.
struct Text<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(TextVisitor)
    }
}

/// Values of an object whose keys are all among `props` (four of them) and whose
/// values are strings or null, in the order of `props`. Anything else is an error, for
/// the caller to take the general path.
type StrFields<'de> = [Option<Cow<'de, str>>; 4];

/// Reads one object of [`StrFields`].
struct StrObject(&'static [Property]);

impl<'de> DeserializeSeed<'de> for StrObject {
    type Value = StrFields<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for StrObject {
    type Value = StrFields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of strings")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = StrFields::default();
        while let Some(key) = map.next_key::<Text<'de>>()? {
            let slot = self
                .0
                .iter()
                .position(|p| p.api == key.0)
                .and_then(|i| out.get_mut(i))
                .ok_or_else(|| de::Error::custom("a key of its own"))?;
            *slot = map.next_value::<Option<Text<'de>>>()?.map(|t| t.0);
        }
        Ok(out)
    }
}

/// Reads an array of [`StrFields`] objects.
struct StrObjects(&'static [Property]);

impl<'de> DeserializeSeed<'de> for StrObjects {
    type Value = Vec<StrFields<'de>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for StrObjects {
    type Value = Vec<StrFields<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of objects of strings")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(4));
        while let Some(entry) = seq.next_element_seed(StrObject(self.0))? {
            out.push(entry);
        }
        Ok(out)
    }
}

/// `raw` read with `seed` as the whole text, or `None`.
fn read_raw<'de, S: DeserializeSeed<'de>>(raw: &'de str, seed: S) -> Option<S::Value> {
    let mut de = serde_json::Deserializer::from_str(raw);
    let value = seed.deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(value)
}

/// Parses an API timestamp (RFC 3339, 0 to 9 fractional digits) to microseconds since
/// the epoch, truncating what is finer than a microsecond.
pub fn parse_timestamp_micros(s: &str) -> Option<i64> {
    let t = chrono::DateTime::parse_from_rfc3339(s).ok()?;
    let secs = t.timestamp();
    let micros = i64::from(t.timestamp_subsec_nanos() / 1_000);
    secs.checked_mul(1_000_000)?.checked_add(micros)
}

/// Builds the nested `ip_addresses` list of `machines`.
#[derive(Debug, Default)]
struct IpListBuilder {
    offsets: Vec<i32>,
    validity: Vec<bool>,
    fields: [StringBuilder; 4],
}

impl IpListBuilder {
    fn push(&mut self, value: &Value) -> bool {
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        let Value::Array(entries) = value else {
            self.push_null();
            return false;
        };
        let mut fits = true;
        for entry in entries {
            let Some(obj) = entry.as_object() else {
                fits = false;
                continue;
            };
            fits &= push_object(&mut self.fields, IP_ADDRESS_PROPERTIES, obj);
        }
        self.validity.push(true);
        self.offsets.push(self.fields[0].len() as i32);
        fits
    }

    /// The fast path of `push`: an array of objects of strings; false (nothing
    /// appended) for any other shape.
    fn push_raw(&mut self, raw: &str) -> bool {
        let Some(entries) = read_raw(raw, StrObjects(IP_ADDRESS_PROPERTIES)) else {
            return false;
        };
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        for entry in entries {
            for (b, v) in self.fields.iter_mut().zip(entry) {
                b.append_option(v);
            }
        }
        self.validity.push(true);
        self.offsets.push(self.fields[0].len() as i32);
        true
    }

    fn push_null(&mut self) {
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        self.validity.push(false);
        self.offsets.push(self.fields[0].len() as i32);
    }

    fn finish(&mut self) -> Result<ArrayRef, ArrowError> {
        let fields = ip_address_fields();
        let columns: Vec<ArrayRef> = self
            .fields
            .iter_mut()
            .map(|b| Arc::new(b.finish()) as ArrayRef)
            .collect();
        let values = StructArray::try_new(fields.clone(), columns, None)?;
        let mut offsets = std::mem::take(&mut self.offsets);
        if offsets.is_empty() {
            offsets.push(0);
        }
        let validity = std::mem::take(&mut self.validity);
        let nulls = NullBuffer::from(validity);
        let item = Arc::new(Field::new(
            "item",
            arrow::datatypes::DataType::Struct(fields),
            true,
        ));
        Ok(Arc::new(ListArray::try_new(
            item,
            OffsetBuffer::new(offsets.into()),
            Arc::new(values),
            Some(nulls).filter(|n| n.null_count() > 0),
        )?))
    }
}

/// Appends the string keys `props` names from `obj`; false when `obj` has other keys
/// or a value that is not a scalar.
fn push_object(
    builders: &mut [StringBuilder],
    props: &[Property],
    obj: &Map<String, Value>,
) -> bool {
    let mut fits = obj.len() <= props.len();
    let mut known = 0;
    for (b, p) in builders.iter_mut().zip(props) {
        match obj.get(p.api) {
            None | Some(Value::Null) => {
                known += usize::from(obj.contains_key(p.api));
                b.append_null();
            }
            Some(v) => {
                known += 1;
                match scalar_text(v) {
                    Some(s) => b.append_value(s),
                    None => {
                        b.append_null();
                        fits = false;
                    }
                }
            }
        }
    }
    fits && known == obj.len()
}

/// Builds `vm_metadata`.
#[derive(Debug, Default)]
struct VmBuilder {
    validity: Vec<bool>,
    fields: [StringBuilder; 4],
}

impl VmBuilder {
    fn push(&mut self, value: &Value) -> bool {
        match value.as_object() {
            Some(obj) => {
                let fits = push_object(&mut self.fields, VM_METADATA_PROPERTIES, obj);
                self.validity.push(true);
                fits
            }
            None => {
                self.push_null();
                false
            }
        }
    }

    /// The fast path of `push`: an object of strings; false (nothing appended) for
    /// any other shape.
    fn push_raw(&mut self, raw: &str) -> bool {
        let Some(entry) = read_raw(raw, StrObject(VM_METADATA_PROPERTIES)) else {
            return false;
        };
        for (b, v) in self.fields.iter_mut().zip(entry) {
            b.append_option(v);
        }
        self.validity.push(true);
        true
    }

    fn push_null(&mut self) {
        for b in &mut self.fields {
            b.append_null();
        }
        self.validity.push(false);
    }

    fn finish(&mut self) -> Result<ArrayRef, ArrowError> {
        let columns: Vec<ArrayRef> = self
            .fields
            .iter_mut()
            .map(|b| Arc::new(b.finish()) as ArrayRef)
            .collect();
        let nulls = NullBuffer::from(std::mem::take(&mut self.validity));
        Ok(Arc::new(StructArray::try_new(
            vm_metadata_fields(),
            columns,
            Some(nulls).filter(|n| n.null_count() > 0),
        )?))
    }
}

/// Builds one table whose rows are API entities with an `id` and an `extra` column.
#[derive(Debug)]
struct EntityDecoder {
    table: Table,
    columns: Vec<Column>,
    extra: StringBuilder,
    rows: usize,
    /// The position of each API key among the table's properties.
    keys: HashMap<&'static str, usize>,
}

/// What `EntityDecoder::push_json` read besides the row.
struct Pushed<'t> {
    id: Cow<'t, str>,
    /// The raw `ipAddresses` value, for the `ip_addresses` rows.
    ip_addresses: Option<&'t RawValue>,
}

impl EntityDecoder {
    fn new(table: Table) -> Self {
        let props = table.properties();
        EntityDecoder {
            table,
            columns: props.iter().map(|p| Column::new(p.kind)).collect(),
            extra: StringBuilder::new(),
            rows: 0,
            keys: props.iter().enumerate().map(|(i, p)| (p.api, i)).collect(),
        }
    }

    /// Appends the record whose JSON text is `text`.
    fn push_json<'t>(&mut self, index: usize, text: &'t str) -> Result<Pushed<'t>, DecodeError> {
        let props = self.table.properties();
        let fields = read_raw(
            text,
            RecordSeed {
                keys: &self.keys,
                width: props.len(),
            },
        )
        .ok_or(DecodeError::NotAnObject { index })?;
        let id = self
            .keys
            .get("id")
            .and_then(|&i| fields.slots.get(i).copied().flatten())
            .and_then(|raw| string_literal(raw.get()))
            .ok_or(DecodeError::MissingId { index })?;
        let mut extra: Vec<(&str, &str)> = Vec::new();
        let mut ip_addresses = None;
        for ((column, prop), slot) in self.columns.iter_mut().zip(props).zip(&fields.slots) {
            let Some(raw) = slot else {
                column.push_null();
                continue;
            };
            if prop.kind == Kind::IpAddressList {
                ip_addresses = Some(*raw);
            }
            if !column.push_raw(raw.get()) {
                extra.push((prop.api, raw.get()));
            }
        }
        for (key, raw) in &fields.unknown {
            extra.push((key.as_ref(), raw.get()));
        }
        if extra.is_empty() {
            self.extra.append_null();
        } else {
            self.extra.append_value(extra_json(&extra));
        }
        self.rows += 1;
        Ok(Pushed { id, ip_addresses })
    }

    fn finish(&mut self) -> Result<RecordBatch, DecodeError> {
        let table = self.table;
        let mut columns: Vec<ArrayRef> = self
            .columns
            .iter_mut()
            .map(Column::finish)
            .collect::<Result<_, _>>()
            .map_err(|e| DecodeError::Schema {
                table,
                reason: e.to_string(),
            })?;
        columns.push(Arc::new(self.extra.finish()));
        self.rows = 0;
        batch(self.table, columns)
    }
}

/// A record's values as raw slices of its text: the known keys by property position
/// (a repeated key keeps its last value, as a `Value` would), the others in order.
struct RecordFields<'de> {
    slots: Vec<Option<&'de RawValue>>,
    unknown: Vec<(Cow<'de, str>, &'de RawValue)>,
}

/// Reads a record into [`RecordFields`].
struct RecordSeed<'k> {
    keys: &'k HashMap<&'static str, usize>,
    width: usize,
}

impl<'de> DeserializeSeed<'de> for RecordSeed<'_> {
    type Value = RecordFields<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RecordSeed<'_> {
    type Value = RecordFields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = RecordFields {
            slots: vec![None; self.width],
            unknown: Vec::new(),
        };
        while let Some(key) = map.next_key::<Text<'de>>()? {
            let raw: &'de RawValue = map.next_value()?;
            match self
                .keys
                .get(key.0.as_ref())
                .and_then(|&i| fields.slots.get_mut(i))
            {
                Some(slot) => *slot = Some(raw),
                None => match fields.unknown.iter_mut().find(|(k, _)| *k == key.0) {
                    Some(seen) => seen.1 = raw,
                    None => fields.unknown.push((key.0, raw)),
                },
            }
        }
        Ok(fields)
    }
}

/// The rows of the `ip_addresses` table.
#[derive(Debug, Default)]
struct IpRows {
    machine: StringBuilder,
    fields: [StringBuilder; 4],
}

impl IpRows {
    /// Adds a row per entry of a machine's `ipAddresses` (its raw JSON); entries that
    /// are not objects are not rows.
    fn push_all(&mut self, machine_id: &str, raw: &RawValue) {
        if let Some(entries) = read_raw(raw.get(), StrObjects(IP_ADDRESS_PROPERTIES)) {
            for entry in entries {
                self.machine.append_value(machine_id);
                for (b, v) in self.fields.iter_mut().zip(entry) {
                    b.append_option(v);
                }
            }
        } else if let Ok(Value::Array(entries)) = serde_json::from_str::<Value>(raw.get()) {
            for entry in entries.iter().filter_map(Value::as_object) {
                self.machine.append_value(machine_id);
                push_object(&mut self.fields, IP_ADDRESS_PROPERTIES, entry);
            }
        }
    }

    fn finish(&mut self) -> Result<RecordBatch, DecodeError> {
        let mut columns: Vec<ArrayRef> = vec![Arc::new(self.machine.finish())];
        columns.extend(
            self.fields
                .iter_mut()
                .map(|b| Arc::new(b.finish()) as ArrayRef),
        );
        batch(Table::IpAddresses, columns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Int64Type, TimestampMicrosecondType};
    use serde_json::json;

    fn samples() -> Vec<Value> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/fleet/samples.json");
        let text = std::fs::read_to_string(path).expect("samples.json is part of the crate");
        let v: Value = serde_json::from_str(&text).expect("valid json");
        v["value"].as_array().cloned().unwrap_or_default()
    }

    #[test]
    fn documented_samples_decode_without_extra() {
        let mut d = MachineDecoder::default();
        for (i, r) in samples().iter().enumerate() {
            d.push(i, r).expect("decodes");
        }
        let (machines, ips) = d.finish().expect("a batch");
        assert_eq!(machines.num_rows(), 5);
        assert_eq!(ips.num_rows(), 10);
        let extra = machines.column_by_name("extra").expect("extra column");
        assert_eq!(extra.null_count(), 5, "known keys only: {extra:?}");
        let rbac = machines.column_by_name("rbac_group_id").expect("col");
        assert_eq!(rbac.as_primitive::<Int64Type>().value(0), 140);
    }

    #[test]
    fn seventh_digit_is_truncated() {
        assert_eq!(
            parse_timestamp_micros("2018-08-02T14:55:03.7791856Z"),
            parse_timestamp_micros("2018-08-02T14:55:03.779185Z")
        );
        assert_eq!(
            parse_timestamp_micros("1970-01-01T00:00:01Z"),
            Some(1_000_000)
        );
        assert_eq!(parse_timestamp_micros("nope"), None);
    }

    #[test]
    fn unknown_and_mistyped_values_go_to_extra() {
        let mut d = MachineDecoder::default();
        d.push(
            0,
            &json!({
                "id": "a", "rbacGroupId": "140", "osBuild": {"major": 10},
                "newField": [1, 2], "lastSeen": "2021-01-25T07:27:36.052313Z",
                "vmMetadata": {"vmId": "v", "zone": "3"},
                "ipAddresses": [{"ipAddress": "10.0.0.1", "vlan": 4}]
            }),
        )
        .expect("decodes");
        let (m, ips) = d.finish().expect("a batch");
        assert_eq!(
            m.column_by_name("rbac_group_id")
                .expect("col")
                .as_primitive::<Int64Type>()
                .value(0),
            140
        );
        assert!(m.column_by_name("os_build").expect("col").is_null(0));
        let extra: Value = serde_json::from_str(
            m.column_by_name("extra")
                .expect("col")
                .as_string::<i32>()
                .value(0),
        )
        .expect("json");
        assert_eq!(extra["osBuild"], json!({"major": 10}));
        assert_eq!(extra["newField"], json!([1, 2]));
        assert_eq!(extra["vmMetadata"]["zone"], json!("3"));
        assert_eq!(extra["ipAddresses"][0]["vlan"], json!(4));
        let seen = m.column_by_name("last_seen").expect("col");
        assert_eq!(
            seen.as_primitive::<TimestampMicrosecondType>().value(0),
            1_611_559_656_052_313
        );
        assert_eq!(ips.num_rows(), 1);
    }

    /// The general path alone, as the decoder was before the fast one: every value of
    /// the record through `Column::push` on its `Value`.
    fn general(records: &[Value]) -> (RecordBatch, RecordBatch) {
        let mut entity = EntityDecoder::new(Table::Machines);
        let mut ips = IpRows::default();
        let props = Table::Machines.properties();
        for r in records {
            let obj = r.as_object().expect("an object");
            let mut extra = Map::new();
            for (column, prop) in entity.columns.iter_mut().zip(props) {
                let value = obj.get(prop.api);
                if !column.push(value)
                    && let Some(v) = value
                {
                    extra.insert(prop.api.to_string(), v.clone());
                }
            }
            for (k, v) in obj {
                if !props.iter().any(|p| p.api == k) {
                    extra.insert(k.clone(), v.clone());
                }
            }
            if extra.is_empty() {
                entity.extra.append_null();
            } else {
                entity.extra.append_value(Value::Object(extra).to_string());
            }
            entity.rows += 1;
            if let Some(Value::Array(entries)) = obj.get("ipAddresses") {
                let id = obj["id"].as_str().expect("an id");
                for entry in entries.iter().filter_map(Value::as_object) {
                    ips.machine.append_value(id);
                    push_object(&mut ips.fields, IP_ADDRESS_PROPERTIES, entry);
                }
            }
        }
        (
            entity.finish().expect("a batch"),
            ips.finish().expect("a batch"),
        )
    }

    /// Odd but possible shapes of every kind of property, each of which the fast path
    /// must either read as the general path does or hand over to it.
    fn odd_records() -> Vec<Value> {
        let shapes: Vec<(&str, Vec<Value>)> = vec![
            (
                "computerDnsName",
                vec![
                    json!("tab\there \"q\" é 😀"),
                    json!(12),
                    json!(1.5e3),
                    json!(true),
                    json!([1]),
                    json!({"a": 1}),
                    json!(""),
                ],
            ),
            (
                "isAadJoined",
                vec![
                    json!("TRUE"),
                    json!("false"),
                    json!("yes"),
                    json!(0),
                    json!([]),
                ],
            ),
            (
                "rbacGroupId",
                vec![
                    json!("140"),
                    json!(" 7 "),
                    json!(3.0),
                    json!(3.5),
                    json!(-0),
                    json!(9_223_372_036_854_775_807i64),
                    json!(18_446_744_073_709_551_615u64),
                    json!(1e300),
                    json!("x"),
                    json!(false),
                ],
            ),
            (
                "lastSeen",
                vec![
                    json!("2021-01-25T07:27:36.0523137Z"),
                    json!("2021-01-25T07:27:36+02:00"),
                    json!("2021-01-25"),
                    json!("2021-01-25T07:27:36.1234567891Z"),
                    json!(17),
                    json!(""),
                ],
            ),
            (
                "machineTags",
                vec![
                    json!([]),
                    json!(["a", null, "b\\c"]),
                    json!([1, "a"]),
                    json!([["a"]]),
                    json!("a"),
                    json!({"a": "b"}),
                ],
            ),
            (
                "ipAddresses",
                vec![
                    json!([]),
                    json!([{"ipAddress": "10.0.0.1"}]),
                    json!([{"ipAddress": "10.0.0.1", "type": null, "vlan": 4}]),
                    json!([{"ipAddress": 1}]),
                    json!([7, {"macAddress": "m"}]),
                    json!([{"ipAddress": "a", "ipAddress": "b"}]),
                    json!({"ipAddress": "a"}),
                    json!("x"),
                ],
            ),
            (
                "vmMetadata",
                vec![
                    json!({}),
                    json!({"vmId": "v", "cloudProvider": null}),
                    json!({"vmId": ["v"]}),
                    json!({"zone": "z"}),
                    json!([]),
                    json!(3),
                ],
            ),
            (
                "newField",
                vec![json!(null), json!({"deep": [1, {"x": null}]}), json!("s")],
            ),
        ];
        let mut out = Vec::new();
        for (key, values) in shapes {
            for (i, v) in values.into_iter().enumerate() {
                let mut r = samples()[i % 5].clone();
                r.as_object_mut()
                    .expect("an object")
                    .insert(key.to_string(), v);
                out.push(r);
            }
        }
        // A record with only an id, and one with an escaped id.
        out.push(json!({"id": "only"}));
        out.push(json!({"id": "a\"b\\c"}));
        out
    }

    #[test]
    fn fast_and_general_paths_agree() {
        let fleet = crate::fleet::Fleet::new(crate::fleet::FleetConfig {
            seed: 7,
            machines: 300,
            churn: crate::fleet::FleetConfig::DEFAULT_CHURN,
            start: crate::fleet::FleetConfig::default_start(),
        });
        let mut records: Vec<Value> = fleet
            .machines()
            .iter()
            .map(|m| fleet.machine_record(m))
            .collect();
        records.extend(samples());
        records.extend(odd_records());
        let mut fast = MachineDecoder::default();
        for (i, r) in records.iter().enumerate() {
            fast.push(i, r).expect("decodes");
        }
        let (machines, ips) = fast.finish().expect("batches");
        let (want_machines, want_ips) = general(&records);
        for (column, field) in want_machines.schema().fields().iter().enumerate() {
            assert_eq!(
                machines.column(column).as_ref(),
                want_machines.column(column).as_ref(),
                "column {}",
                field.name()
            );
        }
        assert_eq!(ips, want_ips);
        assert!(machines.num_rows() > 300 && ips.num_rows() > 300);
    }

    #[test]
    fn repeated_keys_keep_the_last_value_and_the_first_place() {
        let mut d = MachineDecoder::default();
        d.push_json(
            0,
            r#"{"id":"a","riskScore":"Low","zz":1,"yy":2,"zz":3,"riskScore":"High","id":"b"}"#,
        )
        .expect("decodes");
        let (m, _) = d.finish().expect("a batch");
        assert_eq!(
            m.column_by_name("id")
                .expect("col")
                .as_string::<i32>()
                .value(0),
            "b"
        );
        let risk = m.column_by_name("risk_score").expect("col");
        assert_eq!(risk.as_string::<i32>().value(0), "High");
        let extra = m.column_by_name("extra").expect("col");
        assert_eq!(extra.as_string::<i32>().value(0), r#"{"zz":3,"yy":2}"#);
    }

    #[test]
    fn values_no_value_tree_holds_are_kept_verbatim_in_extra() {
        let mut d = MachineDecoder::default();
        d.push_json(
            0,
            r#"{"id":"a","computerDnsName":"pc\ud800","osBuild":1e400,"newField":"x\udc00y"}"#,
        )
        .expect("decodes");
        let (m, _) = d.finish().expect("a batch");
        assert!(
            m.column_by_name("computer_dns_name")
                .expect("col")
                .is_null(0)
        );
        assert!(m.column_by_name("os_build").expect("col").is_null(0));
        let extra = m.column_by_name("extra").expect("col");
        assert_eq!(
            extra.as_string::<i32>().value(0),
            r#"{"computerDnsName":"pc\ud800","osBuild":1e400,"newField":"x\udc00y"}"#
        );
    }

    #[test]
    fn json_text_that_is_not_one_object_is_refused() {
        let mut d = MachineDecoder::default();
        for (i, text) in ["[]", "{\"id\":\"a\"} {}", "{\"id\":\"a\"", "", "null"]
            .iter()
            .enumerate()
        {
            assert_eq!(
                d.push_json(i, text),
                Err(DecodeError::NotAnObject { index: i }),
                "{text}"
            );
        }
        assert!(d.is_empty());
    }

    #[test]
    fn records_without_id_are_errors() {
        let mut d = MachineDecoder::default();
        assert_eq!(
            d.push(3, &json!({"id": 5})),
            Err(DecodeError::MissingId { index: 3 })
        );
        assert_eq!(
            d.push(4, &json!([])),
            Err(DecodeError::NotAnObject { index: 4 })
        );
    }
}
