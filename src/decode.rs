//! API records (JSON objects as the service sends them) into Arrow batches.
//!
//! The one path from records to the lake, shared by `generate` and the ingester. It is
//! tolerant the way the contract asks (section 2.7): every key but `id` may be missing
//! or null, enumerations are kept as strings, a number sent as a string ("140") is read,
//! and nothing is dropped: a property the schema does not know, or a known one whose
//! value has a shape its column cannot hold, is kept in `extra` as JSON.
//! Timestamps keep microseconds: the API's seventh fractional digit is truncated.

use std::sync::Arc;

use arrow::array::{
    ArrayBuilder, ArrayRef, BooleanBuilder, Int64Builder, ListArray, ListBuilder, StringBuilder,
    StructArray, TimestampMicrosecondBuilder,
};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::datatypes::Field;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
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
        let obj = record
            .as_object()
            .ok_or(DecodeError::NotAnObject { index })?;
        let id = self.entity.push(index, obj)?;
        if let Some(Value::Array(entries)) = obj.get("ipAddresses") {
            for entry in entries.iter().filter_map(Value::as_object) {
                self.ips.push(&id, entry);
            }
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
        let obj = record
            .as_object()
            .ok_or(DecodeError::NotAnObject { index })?;
        self.0.push(index, obj).map(|_| ())
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
}

impl EntityDecoder {
    fn new(table: Table) -> Self {
        EntityDecoder {
            table,
            columns: table
                .properties()
                .iter()
                .map(|p| Column::new(p.kind))
                .collect(),
            extra: StringBuilder::new(),
            rows: 0,
        }
    }

    /// Appends the record and returns its id.
    fn push(&mut self, index: usize, obj: &Map<String, Value>) -> Result<String, DecodeError> {
        let id = match obj.get("id") {
            Some(Value::String(s)) => s.clone(),
            _ => return Err(DecodeError::MissingId { index }),
        };
        let props = self.table.properties();
        let mut extra = Map::new();
        for (column, prop) in self.columns.iter_mut().zip(props) {
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
            self.extra.append_null();
        } else {
            self.extra.append_value(Value::Object(extra).to_string());
        }
        self.rows += 1;
        Ok(id)
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

/// The rows of the `ip_addresses` table.
#[derive(Debug, Default)]
struct IpRows {
    machine: StringBuilder,
    fields: [StringBuilder; 4],
}

impl IpRows {
    fn push(&mut self, machine_id: &str, entry: &Map<String, Value>) {
        self.machine.append_value(machine_id);
        push_object(&mut self.fields, IP_ADDRESS_PROPERTIES, entry);
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
