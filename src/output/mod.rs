//! The result formats of `mdesnap query` (`design.md`, "`query` output"), written from
//! a stream of record batches, every format in constant memory (the aligned table sizes
//! its columns from the first batch: [`table`]).
//!
//! Files given with `--output` are written under a temporary name beside the target
//! and renamed when complete: a failed or interrupted query never leaves half a file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt64Type};
use arrow_json::writer::{EncoderOptions, make_encoder};
use datafusion::config::TableParquetOptions;
use datafusion::dataframe::{DataFrame, DataFrameWriteOptions};
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;

use crate::error::{Error, Result};

pub mod table;

pub use table::{Printed, TableOptions, print_table};

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    ODataJson,
}

impl Format {
    /// Every format with its name, as `--format` and `\format` take them.
    pub const ALL: [(Format, &'static str); 5] = [
        (Format::Table, "table"),
        (Format::Csv, "csv"),
        (Format::Json, "json"),
        (Format::Ndjson, "ndjson"),
        (Format::ODataJson, "odata-json"),
    ];

    /// The format's name.
    pub fn name(self) -> &'static str {
        Format::ALL
            .iter()
            .find(|(f, _)| *f == self)
            .map_or("table", |(_, n)| n)
    }
}

/// A format name that is none of [`Format::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown format '{0}' (expected table, csv, json, ndjson or odata-json)")]
pub struct UnknownFormat(pub String);

impl std::str::FromStr for Format {
    type Err = UnknownFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Format::ALL
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(s.trim()))
            .map(|(f, _)| *f)
            .ok_or_else(|| UnknownFormat(s.to_string()))
    }
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

/// How the result of an OData request is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The `@odata.context` URL of `odata-json`.
    pub context: String,
    /// `@odata.count` of `odata-json`, when asked for.
    pub count: Option<u64>,
    /// Write JSON records as the service does (`extra` folded back in, times trimmed
    /// at microseconds: [`crate::schema::api_shape::api_records`]); off for `--sql-names`.
    pub api_records: bool,
}

/// Writes every batch of `stream` to `out` in `format`; returns the rows written.
pub async fn write_stream(
    mut stream: SendableRecordBatchStream,
    format: Format,
    envelope: Option<&Envelope>,
    out: &mut (dyn Write + Send),
) -> Result<u64> {
    let schema = stream.schema();
    let mut rows = 0u64;
    match format {
        Format::Table => {
            rows = table::print_table(&mut stream, &TableOptions::default(), out)
                .await?
                .rows;
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
        Format::Json | Format::Ndjson | Format::ODataJson
            if envelope.is_some_and(|e| e.api_records) =>
        {
            rows = write_api_records(&mut stream, format, envelope, out).await?;
        }
        Format::Json | Format::ODataJson => {
            if let (Format::ODataJson, Some(env)) = (format, envelope) {
                write!(out, "{}", odata_head(env)).map_err(Error::Output)?;
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

/// The `{"@odata.context":...,"@odata.count":...,` head of an `odata-json` document,
/// up to and including `"value":`.
fn odata_head(env: &Envelope) -> String {
    let mut head = serde_json::Map::new();
    head.insert("@odata.context".into(), env.context.clone().into());
    if let Some(c) = env.count {
        head.insert("@odata.count".into(), c.into());
    }
    let head = serde_json::Value::Object(head).to_string();
    format!("{},\"value\":", head.trim_end_matches('}'))
}

/// JSON formats of an OData result, record by record as the service writes them.
async fn write_api_records(
    stream: &mut SendableRecordBatchStream,
    format: Format,
    envelope: Option<&Envelope>,
    out: &mut (dyn Write + Send),
) -> Result<u64> {
    let array = format != Format::Ndjson;
    if let (Format::ODataJson, Some(env)) = (format, envelope) {
        write!(out, "{}", odata_head(env)).map_err(Error::Output)?;
    }
    if array {
        write!(out, "[").map_err(Error::Output)?;
    }
    let mut rows = 0u64;
    while let Some(batch) = stream.next().await {
        for record in crate::schema::api_shape::api_records(&batch?)? {
            if array && rows > 0 {
                write!(out, ",").map_err(Error::Output)?;
            }
            serde_json::to_writer(&mut *out, &record)
                .map_err(|e| Error::Output(std::io::Error::other(e)))?;
            if !array {
                writeln!(out).map_err(Error::Output)?;
            }
            rows += 1;
        }
    }
    if array {
        write!(out, "]").map_err(Error::Output)?;
        if format == Format::ODataJson && envelope.is_some() {
            write!(out, "}}").map_err(Error::Output)?;
        }
        writeln!(out).map_err(Error::Output)?;
    }
    Ok(rows)
}

/// Writes the result of `df` to `path` in the format its extension names; returns the
/// rows. Parquet goes through DataFusion's own writer; the text formats through
/// [`write_stream`], as on stdout. The file is written under a temporary name beside
/// `path`, synced, then renamed: a failed or interrupted query (the future dropped)
/// leaves neither half a file nor the temporary one.
pub async fn write_file(df: DataFrame, path: &Path) -> Result<u64> {
    let format = format_for_path(path)?;
    let mut tmp = TempBeside::new(path);
    let rows = match format {
        FileFormat::Parquet => {
            let mut options = TableParquetOptions::default();
            options.global.compression = Some("zstd(3)".to_string());
            let written = df
                .write_parquet(
                    &tmp.path.to_string_lossy(),
                    DataFrameWriteOptions::new().with_single_file_output(true),
                    Some(options),
                )
                .await
                .map_err(|source| Error::WriteOutput {
                    path: path.to_path_buf(),
                    source: Box::new(source),
                })?;
            let rows = written
                .first()
                .and_then(|b| b.column(0).as_primitive_opt::<UInt64Type>())
                .map_or(0, |c| c.iter().flatten().sum());
            let file = std::fs::File::open(&tmp.path).map_err(|source| Error::Io {
                op: "opening",
                path: tmp.path.clone(),
                source,
            })?;
            file.sync_all().map_err(|source| Error::Io {
                op: "syncing",
                path: tmp.path.clone(),
                source,
            })?;
            rows
        }
        FileFormat::Text(f) => {
            let file = std::fs::File::create(&tmp.path).map_err(|source| Error::Io {
                op: "creating",
                path: tmp.path.clone(),
                source,
            })?;
            let mut buffered = std::io::BufWriter::new(file);
            let stream = df.execute_stream().await?;
            let rows = write_stream(stream, f, None, &mut buffered)
                .await
                .map_err(|e| match e {
                    Error::Output(source) => Error::Io {
                        op: "writing",
                        path: path.to_path_buf(),
                        source,
                    },
                    other => other,
                })?;
            let file = buffered.into_inner().map_err(|e| Error::Io {
                op: "writing",
                path: path.to_path_buf(),
                source: e.into_error(),
            })?;
            file.sync_all().map_err(|source| Error::Io {
                op: "syncing",
                path: tmp.path.clone(),
                source,
            })?;
            rows
        }
    };
    tmp.persist(path)?;
    Ok(rows)
}

/// A temporary file beside its target, removed when dropped unless persisted.
struct TempBeside {
    path: PathBuf,
    persisted: bool,
}

impl TempBeside {
    fn new(target: &Path) -> Self {
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        TempBeside {
            path: target.with_file_name(format!(".{name}.{}.tmp", uuid::Uuid::new_v4())),
            persisted: false,
        }
    }

    /// Renames the file to `target`.
    fn persist(&mut self, target: &Path) -> Result<()> {
        std::fs::rename(&self.path, target).map_err(|source| Error::Io {
            op: "renaming",
            path: self.path.clone(),
            source,
        })?;
        self.persisted = true;
        Ok(())
    }
}

impl Drop for TempBeside {
    fn drop(&mut self) {
        if self.persisted {
            return;
        }
        let _ = std::fs::remove_file(&self.path);
        // The object store's local writer stages parts as `<name>#<n>` beside it.
        let (Some(dir), Some(name)) = (self.path.parent(), self.path.file_name()) else {
            return;
        };
        let staged = format!("{}#", name.to_string_lossy());
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&staged) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
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
