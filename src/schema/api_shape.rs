//! The API's shape of the lake's rows: nested field names in the API's spelling
//! (`ipAddresses[].ipAddress`, `vmMetadata.vmId`), and JSON records as the service
//! sends them.
//!
//! [`api_type`] renames a list or struct type's nested fields to the API's names, and
//! [`api_type_array`] gives a column the same data under that type (no copy: only the
//! types change). [`api_records`] turns a batch into the JSON objects the service would
//! have sent: the properties in the lake's (the API's) column order, the keys kept in
//! `extra` put back (a known key in place, an unknown one at the end), and times at
//! microseconds with trailing zeros trimmed, as the service trims its seven digits
//! (the seventh, 100 ns, is not in the lake: see `decode`). OData results
//! (`crate::output`, `crate::odata::shape`) and the change tables' values
//! (`crate::changes`) take this shape from here.

use std::sync::Arc;

use arrow::array::ArrayData;
use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray, make_array};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::error::ArrowError;
use serde_json::{Map, Value};

use super::{IP_ADDRESS_PROPERTIES, VM_METADATA_PROPERTIES};

/// The API's name of a nested field (a column of `ipAddresses` or `vmMetadata`).
fn api_field_name(column: &str) -> Option<&'static str> {
    IP_ADDRESS_PROPERTIES
        .iter()
        .chain(VM_METADATA_PROPERTIES)
        .find(|p| p.column == column)
        .map(|p| p.api)
}

/// `t` with every nested field the API names renamed to the API's name.
pub fn api_type(t: &DataType) -> DataType {
    match t {
        DataType::List(f) => DataType::List(Arc::new(api_field(f))),
        DataType::LargeList(f) => DataType::LargeList(Arc::new(api_field(f))),
        DataType::Struct(fields) => DataType::Struct(
            fields
                .iter()
                .map(|f| {
                    let renamed = api_field(f);
                    match api_field_name(f.name()) {
                        Some(api) => renamed.with_name(api),
                        None => renamed,
                    }
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

fn api_field(f: &Field) -> Field {
    f.clone().with_data_type(api_type(f.data_type()))
}

/// Whether a column's type has nested fields to rename.
pub fn has_nested_names(t: &DataType) -> bool {
    api_type(t) != *t
}

/// The same data under another type of the same structure (field names may differ).
/// `array` with the API's names on its nested fields (no copy: only the type changes).
pub fn api_type_array(array: &ArrayRef) -> Result<ArrayRef, ArrowError> {
    let to = api_type(array.data_type());
    if &to == array.data_type() {
        return Ok(Arc::clone(array));
    }
    Ok(make_array(retype(array.to_data(), &to)?))
}

pub(crate) fn retype(data: ArrayData, to: &DataType) -> Result<ArrayData, ArrowError> {
    let children = match to {
        DataType::List(f) | DataType::LargeList(f) => data
            .child_data()
            .iter()
            .map(|c| retype(c.clone(), f.data_type()))
            .collect::<Result<Vec<_>, _>>()?,
        DataType::Struct(fields) => data
            .child_data()
            .iter()
            .zip(fields.iter())
            .map(|(c, f)| retype(c.clone(), f.data_type()))
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Ok(data),
    };
    data.into_builder()
        .data_type(to.clone())
        .child_data(children)
        .build()
}

/// Microseconds since the epoch as the service writes times: RFC 3339 in UTC with
/// `Z`, the fraction's trailing zeros trimmed (no `.` when nothing is left).
pub fn api_time(micros: i64) -> Option<String> {
    let t = chrono::DateTime::from_timestamp_micros(micros)?;
    let mut text = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let fraction = micros.rem_euclid(1_000_000);
    if fraction != 0 {
        let digits = format!("{fraction:06}");
        text.push('.');
        text.push_str(digits.trim_end_matches('0'));
    }
    text.push('Z');
    Some(text)
}

/// The batch's rows as the service's JSON records: see the module docs.
pub fn api_records(batch: &RecordBatch) -> Result<Vec<Map<String, Value>>, ArrowError> {
    let schema = batch.schema();
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    let mut extra_column: Option<ArrayRef> = None;
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        match field.data_type() {
            DataType::Utf8 | DataType::Utf8View if field.name() == "extra" => {
                extra_column = Some(arrow::compute::cast(column, &DataType::Utf8)?);
            }
            DataType::Timestamp(TimeUnit::Microsecond, _) => {
                let times = column.as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
                let text: StringArray = times.iter().map(|t| t.and_then(api_time)).collect();
                fields.push(Field::new(field.name(), DataType::Utf8, true));
                columns.push(Arc::new(text));
            }
            _ => {
                fields.push(field.as_ref().clone());
                columns.push(Arc::clone(column));
            }
        }
    }
    let extra: Option<&StringArray> = extra_column.as_ref().and_then(|c| c.as_string_opt::<i32>());
    let plain = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
    let mut buf = Vec::new();
    {
        let mut writer = arrow_json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, arrow_json::writer::LineDelimited>(&mut buf);
        writer.write(&plain)?;
        writer.finish()?;
    }
    let mut records = Vec::with_capacity(batch.num_rows());
    for (i, line) in buf
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        let mut record: Map<String, Value> =
            serde_json::from_slice(line).map_err(|e| ArrowError::JsonError(e.to_string()))?;
        if let Some(kept) = extra.filter(|e| e.is_valid(i)).map(|e| e.value(i))
            && let Ok(Value::Object(kept)) = serde_json::from_str::<Value>(kept)
        {
            for (key, value) in kept {
                // A known key keeps its place (IndexMap insert); a new one goes last.
                record.insert(key, value);
            }
        }
        records.push(record);
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_trimmed_like_the_service() {
        assert_eq!(api_time(0).as_deref(), Some("1970-01-01T00:00:00Z"));
        assert_eq!(
            api_time(1_611_559_656_052_313).as_deref(),
            Some("2021-01-25T07:27:36.052313Z")
        );
        assert_eq!(
            api_time(1_611_559_656_200_000).as_deref(),
            Some("2021-01-25T07:27:36.2Z")
        );
        assert_eq!(api_time(-1).as_deref(), Some("1969-12-31T23:59:59.999999Z"));
    }

    #[test]
    fn nested_names_follow_the_api() {
        let t = crate::schema::Table::Machines.schema();
        let ips = t
            .field_with_name("ip_addresses")
            .expect("column")
            .data_type();
        let DataType::List(item) = api_type(ips) else {
            panic!("a list")
        };
        let DataType::Struct(fields) = item.data_type() else {
            panic!("of structs")
        };
        let names: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
        assert_eq!(
            names,
            ["ipAddress", "macAddress", "type", "operationalStatus"]
        );
        assert!(!has_nested_names(&DataType::Utf8));
    }
}
