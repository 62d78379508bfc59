//! The result formats of `mdesnap query` (`design.md`, "`query` output"), written from
//! a stream of record batches: csv, json and ndjson stream in constant memory; the
//! aligned table needs every row to size its columns, so it collects.
//!
//! Files given with `--output` are written under a temporary name beside the target
//! and renamed when complete: a failed or interrupted query never leaves half a file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::util::display::FormatOptions;
use arrow_json::writer::{EncoderOptions, make_encoder};
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;

use crate::error::{Error, Result};

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// aligned text table, NULL shown as NULL
    Table,
    /// RFC 4180 with a header row; lists and structs as JSON
    Csv,
    /// one JSON array of objects
    Json,
    /// one JSON object per line
    Ndjson,
    /// the API's envelope: {"@odata.context": ..., "value": [...]}
    #[value(name = "odata-json")]
    ODataJson,
}

/// `strftime` form of timestamps in csv and json: RFC 3339 with `Z`.
const TIMESTAMP_TZ: &str = "%Y-%m-%dT%H:%M:%S%.fZ";

/// The format a `--output` file's extension asks for.
pub fn format_for_path(path: &Path) -> Result<FileFormat> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("parquet") => Ok(FileFormat::Parquet),
        Some("csv") => Ok(FileFormat::Text(Format::Csv)),
        Some("json") => Ok(FileFormat::Text(Format::Json)),
        Some("ndjson") => Ok(FileFormat::Text(Format::Ndjson)),
        _ => Err(Error::OutputExtension(path.to_path_buf())),
    }
}

/// What a `--output` file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Parquet,
    Text(Format),
}

/// The envelope of `odata-json` output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The `@odata.context` URL.
    pub context: String,
    /// `@odata.count`, when asked for.
    pub count: Option<u64>,
}

/// Writes every batch of `stream` to `out` in `format`; returns the rows written.
pub async fn write_stream(
    mut stream: SendableRecordBatchStream,
    format: Format,
    envelope: Option<&Envelope>,
    out: &mut dyn Write,
) -> Result<u64> {
    let schema = stream.schema();
    let mut rows = 0u64;
    match format {
        Format::Table => {
            let mut batches = Vec::new();
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                rows += batch.num_rows() as u64;
                batches.push(batch);
            }
            if batches.is_empty() {
                batches.push(RecordBatch::new_empty(Arc::clone(&schema)));
            }
            let options = FormatOptions::default()
                .with_null("NULL")
                .with_display_error(true);
            let table =
                arrow::util::pretty::pretty_format_batches_with_options(&batches, &options)?;
            writeln!(out, "{table}").map_err(Error::Output)?;
        }
        Format::Csv => {
            let mut writer = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .with_timestamp_tz_format(TIMESTAMP_TZ.to_string())
                .build(&mut *out);
            let mut wrote = false;
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                rows += batch.num_rows() as u64;
                writer.write(&nested_as_json(&batch)?)?;
                wrote = true;
            }
            if !wrote {
                writer.write(&nested_as_json(&RecordBatch::new_empty(schema))?)?;
            }
        }
        Format::Json | Format::ODataJson => {
            if let (Format::ODataJson, Some(env)) = (format, envelope) {
                let mut head = serde_json::Map::new();
                head.insert("@odata.context".into(), env.context.clone().into());
                if let Some(c) = env.count {
                    head.insert("@odata.count".into(), c.into());
                }
                let head = serde_json::Value::Object(head).to_string();
                // `{"@odata.context":...,` then the value array, then `}`.
                write!(out, "{},\"value\":", &head[..head.len() - 1]).map_err(Error::Output)?;
            }
            let mut writer = arrow_json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .with_timestamp_tz_format(TIMESTAMP_TZ.to_string())
                .build::<_, arrow_json::writer::JsonArray>(&mut *out);
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                rows += batch.num_rows() as u64;
                writer.write(&batch)?;
            }
            writer.finish()?;
            drop(writer);
            if format == Format::ODataJson && envelope.is_some() {
                write!(out, "}}").map_err(Error::Output)?;
            }
            writeln!(out).map_err(Error::Output)?;
        }
        Format::Ndjson => {
            let mut writer = arrow_json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .with_timestamp_tz_format(TIMESTAMP_TZ.to_string())
                .build::<_, arrow_json::writer::LineDelimited>(&mut *out);
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                rows += batch.num_rows() as u64;
                writer.write(&batch)?;
            }
            writer.finish()?;
        }
    }
    out.flush().map_err(Error::Output)?;
    Ok(rows)
}

/// Writes `stream` to `path` in the format its extension names; returns the rows.
pub async fn write_file(stream: SendableRecordBatchStream, path: &Path) -> Result<u64> {
    let format = format_for_path(path)?;
    let tmp = temp_beside(path);
    let result = write_file_to(stream, format, &tmp).await;
    match result {
        Ok(rows) => {
            std::fs::rename(&tmp, path).map_err(|source| Error::Io {
                op: "renaming",
                path: tmp.clone(),
                source,
            })?;
            Ok(rows)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

async fn write_file_to(
    mut stream: SendableRecordBatchStream,
    format: FileFormat,
    tmp: &Path,
) -> Result<u64> {
    let file = std::fs::File::create(tmp).map_err(|source| Error::Io {
        op: "creating",
        path: tmp.to_path_buf(),
        source,
    })?;
    let rows = match format {
        FileFormat::Parquet => {
            let props = parquet::file::properties::WriterProperties::builder()
                .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
                .build();
            let mut writer =
                parquet::arrow::ArrowWriter::try_new(file, stream.schema(), Some(props)).map_err(
                    |e| Error::WriteParquet {
                        path: tmp.to_path_buf(),
                        source: e,
                    },
                )?;
            let mut rows = 0u64;
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                rows += batch.num_rows() as u64;
                writer.write(&batch).map_err(|e| Error::WriteParquet {
                    path: tmp.to_path_buf(),
                    source: e,
                })?;
            }
            let file = writer.into_inner().map_err(|e| Error::WriteParquet {
                path: tmp.to_path_buf(),
                source: e,
            })?;
            file.sync_all().map_err(Error::Output)?;
            rows
        }
        FileFormat::Text(f) => {
            let mut buffered = std::io::BufWriter::new(file);
            let rows = write_stream(stream, f, None, &mut buffered).await?;
            let file = buffered
                .into_inner()
                .map_err(|e| Error::Output(e.into_error()))?;
            file.sync_all().map_err(Error::Output)?;
            rows
        }
    };
    Ok(rows)
}

fn temp_beside(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", uuid::Uuid::new_v4()))
}

/// The batch with every list, struct or map column replaced by its JSON text, for csv.
pub fn nested_as_json(batch: &RecordBatch) -> Result<RecordBatch> {
    let schema = batch.schema();
    if !schema.fields().iter().any(|f| is_nested(f.data_type())) {
        return Ok(batch.clone());
    }
    let options = EncoderOptions::default()
        .with_explicit_nulls(true)
        .with_timestamp_tz_format(TIMESTAMP_TZ.to_string());
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        if !is_nested(field.data_type()) {
            fields.push(Arc::clone(field));
            columns.push(Arc::clone(column));
            continue;
        }
        let mut encoder = make_encoder(field, column.as_ref(), &options)?;
        let mut text = StringBuilder::new();
        let mut buf = Vec::new();
        for i in 0..column.len() {
            if encoder.is_null(i) {
                text.append_null();
            } else {
                buf.clear();
                encoder.encode(i, &mut buf);
                text.append_value(String::from_utf8_lossy(&buf));
            }
        }
        fields.push(Arc::new(Field::new(field.name(), DataType::Utf8, true)));
        columns.push(Arc::new(text.finish()));
    }
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    Ok(RecordBatch::try_new(schema, columns)?)
}

fn is_nested(t: &DataType) -> bool {
    matches!(
        t,
        DataType::List(_)
            | DataType::LargeList(_)
            | DataType::FixedSizeList(_, _)
            | DataType::ListView(_)
            | DataType::Struct(_)
            | DataType::Map(_, _)
    )
}
