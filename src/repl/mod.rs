//! The analyst's console: SQL and OData statements and meta-commands over one lake.
//!
//! A [`Session`] holds the engine and the settings the meta-commands change; it runs
//! statements from any source (the prompt, `-c`, `-f`, piped stdin, `\i`) the same
//! way. [`input`] splits text into statements, [`command`] is the table of
//! meta-commands, [`helper`] is the line editor's completion, validation and colours,
//! and [`interactive`] is the prompt loop. Results print through
//! [`crate::output::print_table`] as they arrive; Ctrl-C while a statement runs drops
//! it (DataFusion stops when its stream is dropped) and the session goes on.

pub mod command;
pub mod helper;
pub mod input;
pub mod interactive;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::dataframe::DataFrame;

use crate::engine::{Engine, Names, Planned};
use crate::error::Error;
use crate::odata::render_caret;
use crate::output::{Envelope, Format, TableOptions, print_table, write_file, write_stream};
use crate::schema::{Table, api_name_for_column};
use crate::snapshot::{BadTime, parse_time};
pub use command::{Meta, MetaError};
pub use input::{Statement, split};

/// Rows a table shows by default.
pub const DEFAULT_MAX_ROWS: usize = 40;

/// How deep `\i` may nest (a file including itself stops here).
const MAX_INCLUDE_DEPTH: usize = 16;

/// What the meta-commands change.
#[derive(Debug, Clone)]
pub struct Settings {
    pub format: Format,
    pub timing: bool,
    /// `\o FILE`: results go to this file.
    pub output: Option<PathBuf>,
    /// `None`: every row.
    pub max_rows: Option<usize>,
    pub pager: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            format: Format::Table,
            timing: false,
            output: None,
            max_rows: Some(DEFAULT_MAX_ROWS),
            pager: false,
        }
    }
}

/// Whether to go on after a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Quit,
}

/// Why a statement failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplError {
    /// `error` is not a `source`: the rendering holds its message already.
    #[error("{}", render(text, error))]
    Statement { text: String, error: Box<Error> },
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Time(#[from] BadTime),
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("\\i nests more than {MAX_INCLUDE_DEPTH} files deep at {}", .0.display())]
    TooDeep(PathBuf),
    #[error("in {}: {source}", path.display())]
    Included {
        path: PathBuf,
        source: Box<ReplError>,
    },
    #[error(transparent)]
    Engine(Box<Error>),
    #[error("writing output: {0}")]
    Output(std::io::Error),
    #[error("interrupted")]
    Interrupted,
    #[error(transparent)]
    Diff(#[from] crate::diff::DiffError),
}

impl From<Error> for ReplError {
    fn from(e: Error) -> Self {
        ReplError::Engine(Box::new(e))
    }
}

impl ReplError {
    /// Whether Ctrl-C stopped the statement.
    pub fn is_interrupt(&self) -> bool {
        match self {
            ReplError::Interrupted => true,
            ReplError::Included { source, .. } => source.is_interrupt(),
            ReplError::Engine(e) | ReplError::Statement { error: e, .. } => {
                matches!(**e, Error::Interrupted(_))
            }
            _ => false,
        }
    }

    /// Whether it is the output's reader going away (`| head`): not an error of the
    /// run, which ends there.
    pub fn is_broken_pipe(&self) -> bool {
        match self {
            ReplError::Output(e) => e.kind() == std::io::ErrorKind::BrokenPipe,
            ReplError::Included { source, .. } => source.is_broken_pipe(),
            ReplError::Engine(e) | ReplError::Statement { error: e, .. } => e.is_broken_pipe(),
            _ => false,
        }
    }
}

/// An engine error, with the statement and a caret where the error names a place: the
/// byte offset of an OData error, sqlparser's "Line: L, Column: C" of a SQL one.
fn render(text: &str, e: &Error) -> String {
    if let Error::OData { text, source } = e {
        return render_caret(&source.to_string(), text, source.offset());
    }
    let message = e.to_string();
    if let Some((line, column)) = sql_position(&message)
        && let Some(source_line) = text.lines().nth(line.saturating_sub(1))
    {
        let pad = " ".repeat(column.saturating_sub(1).min(source_line.chars().count()));
        return format!("{message}\n{source_line}\n{pad}^");
    }
    message
}

/// The 1-based line and column sqlparser puts at the end of its messages.
fn sql_position(message: &str) -> Option<(usize, usize)> {
    let at = message.rfind("Line: ")?;
    let rest = &message[at + "Line: ".len()..];
    let (line, rest) = rest.split_once(", Column: ")?;
    let column: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((line.trim().parse().ok()?, column.parse().ok()?))
}

/// Ctrl-C while a statement runs.
#[derive(Debug)]
pub struct Interrupts {
    #[cfg(unix)]
    signal: tokio::signal::unix::Signal,
}

impl Interrupts {
    /// Listens for SIGINT from now on (the process is no longer killed by it).
    pub fn new() -> std::io::Result<Self> {
        Ok(Interrupts {
            #[cfg(unix)]
            signal: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?,
        })
    }

    /// Forgets a Ctrl-C that came while nothing was waiting for one (in a pager, or
    /// between two statements): it must not cancel the next statement.
    pub fn clear(&mut self) {
        use futures::FutureExt;
        while self.recv().now_or_never().is_some() {}
    }

    /// Waits for the next Ctrl-C.
    pub async fn recv(&mut self) {
        #[cfg(unix)]
        self.signal.recv().await;
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A console over one lake.
#[derive(Debug)]
pub struct Session {
    engine: Engine,
    pub settings: Settings,
    interrupts: Option<Interrupts>,
    depth: usize,
}

impl Session {
    /// A session over `engine`; `interrupts`, when given, make Ctrl-C cancel the
    /// running statement rather than end the process.
    pub fn new(engine: Engine, interrupts: Option<Interrupts>) -> Self {
        Session {
            engine,
            settings: Settings::default(),
            interrupts,
            depth: 0,
        }
    }

    /// The engine, for completion's table and column names.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// What the interactive prompt says first: the lake, its tables, its snapshots.
    pub fn banner(&self) -> String {
        let scoped = self.engine.scoped_snapshots();
        let range = match (scoped.first(), scoped.last()) {
            (Some(first), Some(last)) if scoped.len() > 1 => {
                format!("{} snapshots, {} to {}", scoped.len(), first.id, last.id)
            }
            (Some(only), _) => format!("1 snapshot, {}", only.id),
            _ => "no snapshots".to_string(),
        };
        let others = self.engine.lake_scan().snapshots.len() - scoped.len();
        let scope = match self.engine.scope() {
            Some(s) if others > 0 => {
                format!("scope {s}: {range}; {others} more in other scopes (\\scope)")
            }
            Some(s) => format!("scope {s}: {range}"),
            None => format!("all scopes: {range}"),
        };
        let tables: Vec<&str> = Table::ALL
            .iter()
            .chain(&Table::CHANGES)
            .map(|t| t.name())
            .collect();
        let at = match (self.engine.as_of(), self.engine.current_snapshot()) {
            (Some(_), Some(id)) => format!("; latest tables at {id}"),
            _ => String::new(),
        };
        format!(
            "mdesnap {} over {} ({scope}{at})\ntables: {} (each also as _history), snapshots\n\
             SQL ends with ';'; OData runs on Enter (machines?$filter=...); \\? for help, \\q to quit",
            env!("CARGO_PKG_VERSION"),
            self.engine.lake(),
            tables.join(", ")
        )
    }

    /// Runs every statement of `text`, stopping at the first that fails. A trailing
    /// statement without its `;` runs too (the end of a file or of `-c` ends it).
    pub async fn run_text(
        &mut self,
        text: &str,
        out: &mut (dyn Write + Send),
    ) -> Result<Flow, ReplError> {
        let (statements, rest) = split(text);
        let mut statements = statements;
        if !input::is_blank(rest) {
            statements.push(Statement::Sql(rest.trim().to_string()));
        }
        for statement in &statements {
            if self.run(statement, out).await? == Flow::Quit {
                return Ok(Flow::Quit);
            }
        }
        Ok(Flow::Continue)
    }

    /// Runs one statement; Ctrl-C during it gives [`ReplError::Interrupted`].
    pub async fn run(
        &mut self,
        statement: &Statement,
        out: &mut (dyn Write + Send),
    ) -> Result<Flow, ReplError> {
        let started = Instant::now();
        let mut interrupts = self.interrupts.take();
        // A cancelled `\i` leaves its depth behind unless it is put back here.
        let depth = self.depth;
        let result = match &mut interrupts {
            Some(i) => {
                i.clear();
                tokio::select! {
                    biased;
                    () = i.recv() => Err(ReplError::Interrupted),
                    r = self.execute(statement, out) => r,
                }
            }
            None => self.execute(statement, out).await,
        };
        self.interrupts = interrupts;
        self.depth = depth;
        if self.settings.timing && !matches!(statement, Statement::Meta(_)) {
            writeln!(out, "Time: {:.3} s", started.elapsed().as_secs_f64())
                .map_err(ReplError::Output)?;
        }
        result
    }

    async fn execute(
        &mut self,
        statement: &Statement,
        out: &mut (dyn Write + Send),
    ) -> Result<Flow, ReplError> {
        let text = statement.text();
        let attach = |error: Error| ReplError::Statement {
            text: text.to_string(),
            error: Box::new(error),
        };
        match statement {
            Statement::Meta(line) => Box::pin(self.meta(line.parse()?, out)).await,
            Statement::Sql(_) | Statement::OData(_) => {
                let planned = self
                    .engine
                    .plan(text, Names::Api, self.settings.format)
                    .await
                    .map_err(attach)?;
                self.print(planned, out).await.map_err(|e| match e {
                    ReplError::Engine(error) => ReplError::Statement {
                        text: text.to_string(),
                        error,
                    },
                    e => e,
                })?;
                Ok(Flow::Continue)
            }
        }
    }

    /// Writes a result where the settings say: the `\o` file, or `out` in the format.
    async fn print(&self, planned: Planned, out: &mut (dyn Write + Send)) -> Result<(), ReplError> {
        let Planned { df, envelope } = planned;
        if let Some(path) = &self.settings.output {
            self.engine.guard_path("\\o", path)?;
            let rows = write_file(df, path).await?;
            writeln!(out, "wrote {rows} rows to {}", path.display()).map_err(ReplError::Output)?;
            return self.count_line(envelope.as_ref(), out);
        }
        let paged = self.settings.pager && std::io::stdout().is_terminal();
        if paged {
            let mut buffer = Vec::new();
            self.write_result(df, envelope.as_ref(), &mut buffer)
                .await?;
            return page(&buffer, out).map_err(ReplError::Output);
        }
        self.write_result(df, envelope.as_ref(), out).await
    }

    async fn write_result(
        &self,
        df: DataFrame,
        envelope: Option<&Envelope>,
        out: &mut (dyn Write + Send),
    ) -> Result<(), ReplError> {
        let mut stream = df.execute_stream().await.map_err(Error::from)?;
        if stream.schema().fields().is_empty() {
            // DDL (CREATE, DROP, COPY's count aside): no columns to print.
            while let Some(batch) = futures::StreamExt::next(&mut stream).await {
                batch.map_err(Error::from)?;
            }
            return Ok(());
        }
        if self.settings.format == Format::Table {
            let options = TableOptions {
                max_rows: self.settings.max_rows,
                max_width: terminal_width(),
            };
            let printed = print_table(&mut stream, &options, out).await?;
            writeln!(out, "{}", printed.footer()).map_err(ReplError::Output)?;
        } else {
            write_stream(stream, self.settings.format, envelope, out).await?;
        }
        if self.settings.format != Format::ODataJson {
            self.count_line(envelope, out)?;
        }
        Ok(())
    }

    fn count_line(
        &self,
        envelope: Option<&Envelope>,
        out: &mut (dyn Write + Send),
    ) -> Result<(), ReplError> {
        if let Some(count) = envelope.and_then(|e| e.count) {
            writeln!(out, "@odata.count: {count}").map_err(ReplError::Output)?;
        }
        Ok(())
    }

    async fn meta(&mut self, meta: Meta, out: &mut (dyn Write + Send)) -> Result<Flow, ReplError> {
        let say = |out: &mut (dyn Write + Send), text: String| {
            writeln!(out, "{text}").map_err(ReplError::Output)
        };
        match meta {
            Meta::Quit => return Ok(Flow::Quit),
            Meta::Help => say(out, command::help().trim_end().to_string())?,
            Meta::Tables => {
                let df = self.tables_frame()?;
                self.print_frame(df, out).await?;
            }
            Meta::Describe(name) => {
                let df = self.describe_frame(&name).await?;
                self.print_frame(df, out).await?;
            }
            Meta::Snapshots => {
                let sql = crate::engine::catalog::snapshots_list_sql();
                let df = self.engine.sql(&sql).await?;
                self.print_frame(df, out).await?;
            }
            Meta::Diff(from, to) => {
                let lake = self.engine.lake().clone();
                // Defaults and times are looked up among the scope's snapshots.
                let snapshots: Vec<crate::snapshot::Manifest> = self
                    .engine
                    .scoped_snapshots()
                    .into_iter()
                    .cloned()
                    .collect();
                let cancel = crate::cancel::Cancel::new();
                // A Ctrl-C drops this future; the comparison on its thread stops too.
                let _stop = cancel.cancel_on_drop();
                let report = tokio::task::spawn_blocking(move || {
                    let (from, to) =
                        crate::diff::resolve(&snapshots, from.as_deref(), to.as_deref())?;
                    crate::diff::Report::compute(&lake, from, to, false, &cancel)
                })
                .await
                .map_err(|e| {
                    ReplError::Diff(crate::changes::ChangesError::Join(e.to_string()).into())
                })??;
                say(
                    out,
                    format!("changes from {} to {}", report.from, report.to),
                )?;
                let ctx = self.engine.context();
                let summary = report.summary()?;
                let rows = report.machine_rows()?;
                self.print_frame(ctx.read_batch(summary).map_err(Error::from)?, out)
                    .await?;
                self.print_frame(ctx.read_batch(rows).map_err(Error::from)?, out)
                    .await?;
            }
            Meta::AsOf(time) => {
                let time = time.as_deref().map(parse_time).transpose()?;
                self.engine.set_as_of(time)?;
                let id = self
                    .engine
                    .current_snapshot()
                    .map_or_else(|| "none".to_string(), |i| i.to_string());
                say(
                    out,
                    match time {
                        Some(_) => format!("latest tables now read snapshot {id}"),
                        None => format!("latest tables read the latest snapshot, {id}"),
                    },
                )?;
            }
            Meta::Format(f) => {
                self.settings.format = f;
                say(out, format!("format {}", f.name()))?;
            }
            Meta::Timing(on) => {
                self.settings.timing = on;
                say(out, format!("timing {}", if on { "on" } else { "off" }))?;
            }
            Meta::Output(path) => {
                if let Some(p) = &path {
                    crate::output::format_for_path(p)?;
                    self.engine.guard_path("\\o", p)?;
                }
                say(
                    out,
                    match &path {
                        Some(p) => {
                            format!("results go to {} (replaced by each statement)", p.display())
                        }
                        None => "results go to the terminal".to_string(),
                    },
                )?;
                self.settings.output = path;
            }
            Meta::MaxRows(n) => {
                self.settings.max_rows = n;
                say(
                    out,
                    match n {
                        Some(n) => format!("tables show at most {n} rows"),
                        None => "tables show every row".to_string(),
                    },
                )?;
            }
            Meta::Include(path) => return self.include(&path, out).await,
            Meta::Scope(None) => {
                let current = self.engine.scope().cloned();
                let mut lines = vec![format!(
                    "tables read {}",
                    current.as_ref().map_or_else(
                        || "every snapshot (all)".to_string(),
                        |s| format!("scope {s}")
                    )
                )];
                for (scope, n) in self.engine.scopes() {
                    let mark = if current.as_ref() == Some(&scope) {
                        "*"
                    } else {
                        " "
                    };
                    lines.push(format!(
                        "{mark} {scope}: {n} snapshot{}",
                        if n == 1 { "" } else { "s" }
                    ));
                }
                say(out, lines.join("\n"))?;
            }
            Meta::Scope(Some(text)) => {
                let choice: crate::engine::ScopeChoice = text.parse().map_err(Error::from)?;
                self.engine.set_scope(choice)?;
                say(
                    out,
                    format!(
                        "tables now read {}; latest tables at {}",
                        self.engine
                            .scope()
                            .map_or_else(|| "every snapshot".to_string(), |s| format!("scope {s}")),
                        self.engine
                            .current_snapshot()
                            .map_or_else(|| "none".to_string(), |i| i.to_string())
                    ),
                )?;
            }
            Meta::Refresh => {
                self.engine.refresh()?;
                say(
                    out,
                    format!(
                        "{} snapshots; latest tables read {}",
                        self.engine.lake_scan().snapshots.len(),
                        self.engine
                            .current_snapshot()
                            .map_or_else(|| "none".to_string(), |i| i.to_string())
                    ),
                )?;
            }
            Meta::Pager(on) => {
                self.settings.pager = on;
                say(out, format!("pager {}", if on { "on" } else { "off" }))?;
            }
        }
        Ok(Flow::Continue)
    }

    async fn include(
        &mut self,
        path: &Path,
        out: &mut (dyn Write + Send),
    ) -> Result<Flow, ReplError> {
        if self.depth >= MAX_INCLUDE_DEPTH {
            return Err(ReplError::TooDeep(path.to_path_buf()));
        }
        let text = std::fs::read_to_string(path).map_err(|source| ReplError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        self.depth += 1;
        let result = Box::pin(self.run_text(&text, out)).await;
        self.depth -= 1;
        result.map_err(|e| match e {
            e @ (ReplError::Interrupted | ReplError::Included { .. }) => e,
            e => ReplError::Included {
                path: path.to_path_buf(),
                source: Box::new(e),
            },
        })
    }

    /// `\dt`: each table, its rows and the snapshots it reads.
    fn tables_frame(&self) -> Result<DataFrame, Error> {
        let scan = self.engine.lake_scan();
        let current = self.engine.current_snapshot().and_then(|id| scan.get(id));
        let range = match (scan.snapshots.first(), scan.snapshots.last()) {
            (Some(a), Some(b)) if a.id != b.id => format!("{} .. {}", a.id, b.id),
            (Some(a), _) => a.id.to_string(),
            _ => String::new(),
        };
        let mut names = Vec::new();
        let mut rows = Vec::new();
        let mut snapshots = Vec::new();
        for t in Table::ALL {
            names.push(t.name().to_string());
            rows.push(current.map_or(0, |m| m.rows(t)));
            snapshots.push(current.map(|m| m.id.to_string()).unwrap_or_default());
            names.push(t.history_name());
            rows.push(scan.snapshots.iter().map(|m| m.rows(t)).sum());
            snapshots.push(range.clone());
        }
        for t in Table::CHANGES {
            names.push(t.name().to_string());
            rows.push(scan.snapshots.iter().map(|m| m.rows(t)).sum());
            snapshots.push(range.clone());
        }
        names.push("snapshots".into());
        rows.push(scan.snapshots.len() as u64);
        snapshots.push(range);
        let schema = Arc::new(Schema::new(vec![
            Field::new("table", DataType::Utf8, false),
            Field::new("rows", DataType::UInt64, false),
            Field::new("snapshots", DataType::Utf8, false),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(names)),
            Arc::new(UInt64Array::from(rows)),
            Arc::new(StringArray::from(snapshots)),
        ];
        let batch = RecordBatch::try_new(schema, columns)?;
        Ok(self.engine.context().read_batch(batch)?)
    }

    /// `\d TABLE`: its columns, their types and API names.
    async fn describe_frame(&self, name: &str) -> Result<DataFrame, Error> {
        let df = self.engine.context().table(name).await?;
        let table = Table::STORED
            .iter()
            .copied()
            .find(|t| t.name() == name || t.history_name() == name);
        let schema = df.schema().as_arrow().clone();
        let mut columns = Vec::new();
        let mut types = Vec::new();
        let mut api = Vec::new();
        for f in schema.fields() {
            columns.push(f.name().clone());
            types.push(f.data_type().to_string());
            api.push(table.and_then(|t| api_name_for_column(t, f.name())));
        }
        let out = Arc::new(Schema::new(vec![
            Field::new("column", DataType::Utf8, false),
            Field::new("type", DataType::Utf8, false),
            Field::new("api_name", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            out,
            vec![
                Arc::new(StringArray::from(columns)) as ArrayRef,
                Arc::new(StringArray::from(types)),
                Arc::new(StringArray::from(api)),
            ],
        )?;
        Ok(self.engine.context().read_batch(batch)?)
    }

    /// A meta-command's frame, printed as a result (every row, the current format,
    /// never to the `\o` file).
    async fn print_frame(
        &self,
        df: DataFrame,
        out: &mut (dyn Write + Send),
    ) -> Result<(), ReplError> {
        let mut stream = df.execute_stream().await.map_err(Error::from)?;
        match self.settings.format {
            Format::Table | Format::ODataJson => {
                let options = TableOptions {
                    max_rows: None,
                    max_width: terminal_width(),
                };
                print_table(&mut stream, &options, out).await?;
            }
            f => {
                write_stream(stream, f, None, out).await?;
            }
        }
        Ok(())
    }
}

/// The terminal's width when stdout is one.
fn terminal_width() -> Option<usize> {
    if !std::io::stdout().is_terminal() {
        return None;
    }
    console::Term::stdout()
        .size_checked()
        .map(|(_, cols)| usize::from(cols))
}

/// Shows `text` through `$PAGER` (else `less -SRFX`) when it is taller than the
/// terminal; prints it otherwise, or when the pager cannot start.
fn page(text: &[u8], out: &mut (dyn Write + Send)) -> std::io::Result<()> {
    let rows = console::Term::stdout()
        .size_checked()
        .map_or(usize::MAX, |(r, _)| usize::from(r));
    let lines = text.iter().filter(|b| **b == b'\n').count();
    if lines < rows {
        return out.write_all(text);
    }
    let pager = std::env::var("PAGER")
        .ok()
        .filter(|p| !p.trim().is_empty())
        .unwrap_or_else(|| "less -SRFX".to_string());
    let mut words = pager.split_whitespace();
    let Some(program) = words.next() else {
        return out.write_all(text);
    };
    let child = std::process::Command::new(program)
        .args(words)
        .stdin(std::process::Stdio::piped())
        .spawn();
    match child {
        Ok(mut child) => {
            if let Some(mut stdin) = child.stdin.take() {
                // The user quitting the pager early closes the pipe: not an error.
                let _ = stdin.write_all(text);
            }
            child.wait().map(|_| ())
        }
        Err(_) => out.write_all(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Ctrl-C that came while nothing waited (in a pager) does not cancel the next
    /// statement; one that comes during it does.
    #[cfg(unix)]
    #[tokio::test]
    async fn a_stale_ctrl_c_is_forgotten() {
        let mut interrupts = Interrupts::new().expect("a handler");
        let sent = std::process::Command::new("kill")
            .args(["-INT", &std::process::id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success());
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        interrupts.clear();
        let waited =
            tokio::time::timeout(std::time::Duration::from_millis(200), interrupts.recv()).await;
        assert!(waited.is_err(), "the stale Ctrl-C was forgotten");
        let _ = std::process::Command::new("kill")
            .args(["-INT", &std::process::id().to_string()])
            .status();
        let waited =
            tokio::time::timeout(std::time::Duration::from_secs(5), interrupts.recv()).await;
        assert!(waited.is_ok(), "a new Ctrl-C is seen");
    }

    #[test]
    fn sql_errors_get_a_caret_at_sqlparser_position() {
        assert_eq!(
            sql_position(
                "sql parser error: Expected: end of statement, found: x at Line: 2, Column: 8"
            ),
            Some((2, 8))
        );
        assert_eq!(sql_position("no position"), None);
    }
}
