//! The `mdesnap` command: parses arguments, calls the library, maps the outcome to the
//! exit codes of `design.md` (0 success, 2 error, 130 interrupted).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use mdesnap::Cancel;
use mdesnap::demo::{DemoOptions, GUIDE, SAMPLE_QUERIES, prepare};
use mdesnap::diff;
use mdesnap::emulator::Profile;
use mdesnap::engine::{EngineOptions, Planned, ScopeChoice};
use mdesnap::error::Error;
use mdesnap::generate::{GenerateOptions, generate};
use mdesnap::lake::{Lake, PruneOptions, parse_duration, prune, scan_lake};
use mdesnap::odata::render_caret;
use mdesnap::output::{Format, write_file, write_stream};
use mdesnap::repl::interactive::{piped, prompt};
use mdesnap::repl::{Flow, Interrupts, ReplError, Session};
use mdesnap::snapshot::{SnapshotId, parse_time};
use mdesnap::{Engine, Names, Table};

mod ingest;
mod progress;

#[derive(Debug, Parser)]
#[command(
    name = "mdesnap",
    version,
    about = "Keep the history of a Microsoft Defender for Endpoint tenant's devices as Parquet snapshots, and query it with SQL",
    long_about = "Keep the history of a Microsoft Defender for Endpoint tenant's devices as Parquet \
snapshots in a lake folder, and query it with SQL (Apache DataFusion).\n\n\
The lake is --lake DIR or URL (Azure Blob / ADLS Gen2, S3), else $MDESNAP_LAKE, else \
./mdesnap-lake. Results go to stdout, logs to \
stderr. Exit codes: 0 success (zero rows included), 2 error, 130 interrupted."
)]
struct Cli {
    /// More logging on stderr (-v info, -vv debug); RUST_LOG overrides
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

/// `--format`: the names of [`Format::ALL`], shown in `--help`.
fn format_parser() -> impl TypedValueParser<Value = Format> {
    PossibleValuesParser::new(Format::ALL.map(|(_, name)| name)).try_map(|s| s.parse::<Format>())
}

/// `--schema-profile`: 2021, 2023 or 2026.
fn profile_parser() -> impl TypedValueParser<Value = Profile> {
    PossibleValuesParser::new(["2021", "2023", "2026"]).try_map(|s| s.parse::<Profile>())
}

#[derive(Debug, Args)]
struct LakeArg {
    /// The lake: a folder, or az://CONTAINER/PATH, abfss://CONTAINER@ACCOUNT.dfs.core.windows.net/PATH, s3://BUCKET/PATH (credentials from the environment: docs/lake-layout.md)
    #[arg(long, env = "MDESNAP_LAKE", default_value = "./mdesnap-lake", value_parser = LakeParser)]
    lake: Lake,
}

/// `--lake`: a folder or a store URL. Its errors are `Lake::parse`'s own, which never
/// repeat a URL's query: clap's would print the value as given, a SAS token included.
#[derive(Debug, Clone, Copy)]
struct LakeParser;

impl TypedValueParser for LakeParser {
    type Value = Lake;

    fn parse_ref(
        &self,
        _cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<Lake, clap::Error> {
        let text = value.to_str().ok_or_else(|| {
            clap::Error::raw(
                clap::error::ErrorKind::InvalidUtf8,
                "--lake: the value is not UTF-8\n",
            )
        })?;
        Lake::parse(text).map_err(|e| {
            clap::Error::raw(
                clap::error::ErrorKind::InvalidValue,
                format!("--lake: {e}\n"),
            )
        })
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Take one snapshot of a tenant from the Defender API into a lake
    #[command(
        long_about = "Take one snapshot of a tenant from the Defender for Endpoint API into a \
lake: /api/machines (with --filter), the machines of --users and --domains, and with \
--security-states the Graph preview route. Pages stream into the snapshot writer; the \
snapshot is committed whole at the end or not at all (an error, Ctrl-C or kill leaves \
nothing visible).\n\n\
Sign-in: client credentials from --tenant-id/--client-id/--client-secret or \
AZURE_TENANT_ID/AZURE_CLIENT_ID/AZURE_CLIENT_SECRET, or --auth device-code for a user \
(tokens cached in a 0600 file). Limits: at most --calls-per-minute and --calls-per-hour \
requests per route, retries included; 429 waits Retry-After; 5xx, timeouts and cut \
connections are retried with backoff; 400 and 403 stop the run. What looks like a fault is \
not committed as a changed fleet: a 404 or an empty answer from the machines list \
(--allow-empty), a nextLink leaving its route, a snapshot below --min-fraction of the previous \
one (--allow-shrink).\n\n\
Without a tenant, against `mdesnap emulate`: --base-url and --authority-url name it, and its \
credentials are emulator-tenant, emulator-client and emulator-secret. See docs/ingest.md."
    )]
    Ingest(ingest::IngestArgs),
    /// Run one SQL statement or OData request over a lake; print the result or write it to a file
    #[command(
        long_about = "Run one SQL statement (DataFusion's dialect) or one OData request (the relative URL \
the Defender API would be called with, like 'machines?$filter=riskScore eq 'High'&$top=10') over a \
lake, and print the result or write it to a file (--output). See docs/odata.md.\n\n\
Tables: machines, ip_addresses, security_states, user_machines, domain_machines (the latest \
snapshot, or the last one at or before --as-of), each also as <table>_history across every \
snapshot with a `snapshot` column, machine_changes and ip_address_changes (each snapshot's \
changes against the one before; see docs/changes.md), and `snapshots` (one row per snapshot).\n\n\
Example:\n  mdesnap query --lake sample-data \"SELECT os_platform, count(*) AS n FROM machines GROUP BY 1 ORDER BY n DESC\""
    )]
    Query(QueryArgs),
    /// An interactive console for SQL and OData over a lake
    #[command(
        long_about = "An interactive console for SQL and OData over a lake. On a terminal: a \
banner, a prompt with history ($MDESNAP_HISTORY, else $XDG_STATE_HOME/mdesnap/history), Tab \
completion and reverse search (Ctrl-R). SQL runs when it ends with ';' (it may span lines); a line \
like machines?$filter=... is an OData request and runs on Enter. Meta-commands: \\? lists them \
(\\dt, \\d TABLE, \\snapshots, \\asof, \\format, \\timing, \\o, \\maxrows, \\i, \\refresh, \\pager, \\q). \
Ctrl-C cancels a running statement, Ctrl-D quits.\n\n\
With -c or -f, or with statements piped on stdin (`mdesnap repl < script.sql`), it runs them \
without banner or prompt; the first failing statement stops the run with exit 2. See docs/repl.md."
    )]
    Repl(ReplArgs),
    /// Try mdesnap with no tenant: emulate one, ingest a week of it, open the console
    #[command(
        long_about = "Try mdesnap with no tenant and no credentials: start the API emulator \
in-process, take one snapshot a day for --days emulated days through the real ingest path into \
--lake (default ./mdesnap-demo), then open the console with a short guide. When stdin is not a \
terminal it runs sample queries instead and exits. Run again, it reuses the demo lake (--fresh \
makes it again); a folder holding anything but a demo lake is left alone."
    )]
    Demo(DemoArgs),
    /// List, show and prune the snapshots of a lake
    Snapshots {
        #[command(subcommand)]
        command: SnapshotsCommand,
    },
    /// Serve an emulated Defender machines API on loopback (no tenant needed)
    #[command(
        long_about = "Serve an emulator of the Defender for Endpoint machines API, \
with the deterministic fleet of `generate`: token endpoints (v2, v1, device code), /api/machines \
(and /api/v1.0), /api/machines/{id}, /api/users/{id}/machines, /api/domains/{domain}/machines, \
/testwdatppreview/machinesecuritystates, throttling and faults on demand. The first stdout line \
is `listening on http://ADDR`. Admin routes: GET /_emulator/stats, GET|POST /_emulator/faults, \
POST /_emulator/advance?days=N, GET /_emulator/users, GET /_emulator/domains. See docs/emulator.md."
    )]
    Emulate(EmulateArgs),
    /// What changed between two snapshots: machines added, removed, and each changed property
    #[command(
        long_about = "What changed between two snapshots: machines added and removed, \
and one row per changed property of the machines in both (the API's property name, the old \
and the new value as text), computed from the snapshots' files. FROM and TO are snapshot ids, \
`latest`, or times (the last snapshot at or before); by default the last two snapshots. They \
need not be consecutive. lastSeen is left out unless --include-last-seen.\n\n\
The table format prints a summary (rows per kind of change) and then the rows; the other \
formats print the rows, and the summary on stderr. --summary prints only the summary, \
--ip-addresses the addresses added and removed instead of the machine rows. Between \
consecutive snapshots the same rows are in the lake's machine_changes and ip_address_changes \
tables. See docs/changes.md."
    )]
    Diff(DiffArgs),
    /// The change tables stored in a lake
    Changes {
        #[command(subcommand)]
        command: ChangesCommand,
    },
    /// Work with OData filters
    Odata {
        #[command(subcommand)]
        command: OdataCommand,
    },
    /// Write a synthetic lake from a deterministic simulated fleet (no tenant needed)
    #[command(
        long_about = "Write a synthetic lake: one snapshot a day of a simulated \
fleet that evolves like a real one (machines onboard and retire, lastSeen advances, health, \
risk, tags and addresses change for --churn of the machines a day). The same flags give the \
same data on any machine. Day 0 is --start; snapshot ids follow the fleet's clock.\n\n\
Writes into an empty or missing lake; into one with snapshots only with --append, which \
carries the lake's generated fleet on from its latest day (or starts a new fleet the day \
after the latest snapshot when the flags differ)."
    )]
    Generate(GenerateArgs),
}

#[derive(Debug, Args)]
struct EmulateArgs {
    /// Address to listen on (port 0 picks one); anything but loopback is said on stderr
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: std::net::SocketAddr,
    /// The tenant id the token endpoints accept
    #[arg(long, default_value = "emulator-tenant")]
    tenant_id: String,
    /// The application (client) id the token endpoints accept
    #[arg(long, default_value = "emulator-client")]
    client_id: String,
    /// The client secret the token endpoints accept
    #[arg(long, default_value = "emulator-secret")]
    client_secret: String,
    /// Roles of application tokens, comma-separated (a token without Machine.Read.All gets 403)
    #[arg(long, default_value = "Machine.Read.All", value_delimiter = ',')]
    roles: Vec<String>,
    /// An emulated user for device-code sign-in and the device groups it sees: NAME=GROUP_ID[,GROUP_ID...] (repeatable)
    #[arg(long = "user", value_name = "NAME=GROUP_ID,...")]
    users: Vec<String>,
    /// Seconds after which a device-code sign-in is approved (at most 900)
    #[arg(long, default_value_t = 5.0)]
    approve_after: f64,
    /// Lifetime of issued tokens, seconds (1 to 604800)
    #[arg(long, default_value_t = 3599, value_parser = clap::value_parser!(u64).range(1..=604_800))]
    token_lifetime: u64,
    /// Machines on day 0 of the fleet (5 to 5000000)
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(5..=5_000_000))]
    machines: u64,
    /// Seed of the fleet
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Day 0 of the fleet (RFC 3339, a date, or a snapshot id) [default: 2026-01-01T07:00:00Z]; the same as generate's --start
    #[arg(long, value_name = "TIME")]
    start: Option<String>,
    /// The fleet's day served at start (day d of the emulator is snapshot d of generate; at most 36500)
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=36_500))]
    day: u32,
    /// Share of machines that change in a day (0 to 1)
    #[arg(long, default_value_t = mdesnap::fleet::FleetConfig::DEFAULT_CHURN)]
    churn: f64,
    /// Key set of machine records
    #[arg(long, default_value = "2023", value_parser = profile_parser())]
    schema_profile: Profile,
    /// Calls per minute per client and route before 429 (at least 1)
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    calls_per_minute: u32,
    /// Calls per hour per client and route before 429 (at least 1)
    #[arg(long, default_value_t = 1500, value_parser = clap::value_parser!(u32).range(1..))]
    calls_per_hour: u32,
    /// Multiply the throttling windows (0.01 makes a minute 0.6 s), for tests; above 0, at most 1000
    #[arg(long, default_value_t = 1.0)]
    window_scale: f64,
    /// Hide machines last seen more than DAYS before the fleet's day
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(0..=36_500))]
    retention_days: Option<u32>,
    /// Machines per page when $top is absent (1 to 10000)
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    page_size: u64,
    /// Answer 404 for an unknown user, as the WDATP-era documentation says
    #[arg(long)]
    legacy_user_404: bool,
    /// Emit @odata.nextLink also when $top is given
    #[arg(long)]
    next_link_with_top: bool,
    /// A fault and its rate per call, KIND=RATE (500, 429, drop, cut, slow, 404, 401, buggy_next_link, mutate_between_pages, foreign_next_link), or on one route template, KIND@ROUTE=RATE (404@/api/machines=1); repeatable
    #[arg(long = "fault", value_name = "KIND=RATE")]
    faults: Vec<String>,
    /// How long a slow response takes, seconds (at most 600)
    #[arg(long, default_value_t = 2.0)]
    slow_seconds: f64,
}

#[derive(Debug, Subcommand)]
enum OdataCommand {
    /// Print how a $filter is understood (fully parenthesised), or the error with a caret
    #[command(
        long_about = "Print how a $filter is understood: the canonical form, fully \
parenthesised, operators lowercase, literals in the standard spelling. The argument is the \
filter as it stands after URL decoding: nothing in it is decoded (+ is a plus sign). On an \
error, exit 2 with the message, the input and a caret under the byte at fault.\n\n\
Example:\n  mdesnap odata parse \"riskScore eq 'High' and not (osBuild add 1 gt 100)\""
    )]
    Parse {
        /// The filter text (it may start with '-': `mdesnap odata parse '-X lt 0'`)
        #[arg(allow_hyphen_values = true)]
        filter: String,
    },
}

/// How the query engine runs, for `query` and `repl`.
#[derive(Debug, Args)]
struct EngineArgs {
    /// The most memory a query's operators may hold (512M, 2G, bytes): past it the query ends with an error instead of the process running out of memory; DataFusion's sorts and aggregates spill to disk first
    #[arg(long, value_name = "SIZE", value_parser = mdesnap::engine::options::parse_memory_size)]
    memory_limit: Option<usize>,
    /// The snapshots the latest, _history and change tables read: api, generate, api:FILTER (snapshots taken with that --filter), or all [default: the scope of the newest snapshot of the whole fleet]
    #[arg(long, value_name = "SCOPE", value_parser = parse_scope)]
    scope: Option<ScopeChoice>,
}

/// `--scope`: `all`, `default` or a scope (`api`, `generate`, `api:FILTER`).
fn parse_scope(text: &str) -> Result<ScopeChoice, String> {
    text.parse()
        .map_err(|e: mdesnap::changes::BadScope| e.to_string())
}

impl EngineArgs {
    /// Opens `lake` at `as_of` with these settings (and `MDESNAP_PLAIN_ENGINE`).
    fn open(&self, lake: &Lake, as_of: Option<&str>) -> Result<Engine, Failure> {
        let as_of = as_of.map(parse_time).transpose()?;
        Ok(Engine::open_with(
            lake.clone(),
            EngineOptions {
                as_of,
                memory_limit: self.memory_limit,
                scope: self.scope.clone().unwrap_or_default(),
                ..EngineOptions::default()
            },
        )?)
    }
}

#[derive(Debug, Args)]
struct QueryArgs {
    #[command(flatten)]
    lake: LakeArg,
    #[command(flatten)]
    engine: EngineArgs,
    /// Point the latest tables at the last snapshot taken at or before TIME (RFC 3339, a date, or a snapshot id)
    #[arg(long, value_name = "TIME")]
    as_of: Option<String>,
    /// Output format on stdout
    #[arg(long, default_value = "table", value_parser = format_parser())]
    format: Format,
    /// Write the result to FILE instead (.parquet, .csv, .json or .ndjson, by extension)
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    /// OData results: keep the lake's snake_case column names instead of the API's names
    #[arg(long)]
    sql_names: bool,
    /// The SQL statement, or an OData request like 'machines?$filter=riskScore eq 'High'&$top=10' (quote it so the shell leaves $ alone)
    statement: String,
}

#[derive(Debug, Args)]
struct ReplArgs {
    #[command(flatten)]
    lake: LakeArg,
    #[command(flatten)]
    engine: EngineArgs,
    /// Point the latest tables at the last snapshot taken at or before TIME (RFC 3339, a date, or a snapshot id)
    #[arg(long, value_name = "TIME")]
    as_of: Option<String>,
    /// Run STATEMENT (one or several, separated by ';') and exit; repeatable
    #[arg(short = 'c', long = "command", value_name = "STATEMENT")]
    command: Vec<String>,
    /// Run the statements of FILE and exit
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE",
        conflicts_with = "command"
    )]
    file: Option<PathBuf>,
    /// Output format (\format changes it)
    #[arg(long, default_value = "table", value_parser = format_parser())]
    format: Format,
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// The demo lake's folder
    #[arg(long, default_value = "./mdesnap-demo")]
    lake: PathBuf,
    /// Emulated days to take, one snapshot each (1 to 60)
    #[arg(long, default_value_t = mdesnap::demo::DemoOptions::DEFAULT_DAYS, value_parser = clap::value_parser!(u32).range(1..=60))]
    days: u32,
    /// Machines in the emulated tenant (5 to 100000)
    #[arg(long, default_value_t = mdesnap::demo::DemoOptions::DEFAULT_MACHINES, value_parser = clap::value_parser!(u64).range(5..=100_000))]
    machines: u64,
    /// Make the demo lake again even if one is there
    #[arg(long)]
    fresh: bool,
}

#[derive(Debug, Args)]
struct DiffArgs {
    #[command(flatten)]
    lake: LakeArg,
    /// The earlier snapshot (an id, `latest`, or a time) [default: the one before TO]
    from: Option<String>,
    /// The later snapshot [default: the latest]
    to: Option<String>,
    /// Output format
    #[arg(long, default_value = "table", value_parser = format_parser())]
    format: Format,
    /// Compare lastSeen too (it changes on every check-in)
    #[arg(long)]
    include_last_seen: bool,
    /// Print only the rows per kind of change
    #[arg(long, conflicts_with = "ip_addresses")]
    summary: bool,
    /// Print the addresses added and removed instead of the machine rows
    #[arg(long)]
    ip_addresses: bool,
    /// Look FROM, TO and their defaults up among the snapshots of SCOPE (api, generate, api:FILTER, or all) [default: the scope of the newest snapshot of the whole fleet]
    #[arg(long, value_name = "SCOPE", value_parser = parse_scope)]
    scope: Option<ScopeChoice>,
}

#[derive(Debug, Subcommand)]
enum ChangesCommand {
    /// Compute the change tables of snapshots that lack them or whose previous snapshot changed
    #[command(
        long_about = "Compute machine_changes and ip_address_changes for every \
snapshot whose stored changes are missing (a lake written by an older mdesnap, or a \
snapshot committed while the one before it was unreadable) or were computed against \
another snapshot than the one before it today (a snapshot written later with an earlier \
id). Changes against a pruned snapshot, with nothing earlier left, are kept. Each \
snapshot's manifest is replaced in one rename; its old change files are removed after. \
Takes the lake's lock. See docs/changes.md."
    )]
    Rebuild {
        #[command(flatten)]
        lake: LakeArg,
        /// Compute every snapshot's changes again, up to date or not
        #[arg(long)]
        force: bool,
        /// Wait for a running writer instead of failing
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Debug, Subcommand)]
enum SnapshotsCommand {
    /// One line per committed snapshot, with its row counts
    List {
        #[command(flatten)]
        lake: LakeArg,
        /// Output format
        #[arg(long, default_value = "table", value_parser = format_parser())]
        format: Format,
    },
    /// Print a snapshot's manifest (its files, row counts, source and times)
    Show {
        #[command(flatten)]
        lake: LakeArg,
        /// A snapshot id (20261123T070000Z), or `latest`
        id: String,
    },
    /// Remove leftovers of interrupted writes and, with --keep or --older-than, whole snapshots
    #[command(long_about = "Remove leftovers of interrupted writes (data without a \
manifest, temporary files) and, with --keep or --older-than, whole snapshots: the manifest \
goes first, so a snapshot stops being visible before its data is removed. With both flags a \
snapshot is kept if either rule keeps it.")]
    Prune {
        #[command(flatten)]
        lake: LakeArg,
        /// Keep the newest N snapshots
        #[arg(long, value_name = "N")]
        keep: Option<usize>,
        /// Remove snapshots taken longer ago than DURATION (90s, 30m, 12h, 30d, 4w, 1y)
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        older_than: Option<std::time::Duration>,
        /// Show what would be removed; remove nothing
        #[arg(long)]
        dry_run: bool,
        /// Wait for a running writer instead of failing
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Debug, Args)]
struct GenerateArgs {
    #[command(flatten)]
    lake: LakeArg,
    /// Machines on day 0, the documentation's five samples included (5 to 5000000)
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(5..=5_000_000))]
    machines: u64,
    /// Snapshots to write, one a day (1 to 36500)
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..=36_500))]
    days: u32,
    /// Seed of the fleet
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Share of machines that change in a day (0 to 1)
    #[arg(long, default_value_t = mdesnap::fleet::FleetConfig::DEFAULT_CHURN)]
    churn: f64,
    /// Day 0 (RFC 3339, a date, or a snapshot id) [default: 2026-01-01T07:00:00Z]
    #[arg(long, value_name = "TIME")]
    start: Option<String>,
    /// Add to a lake that already has snapshots
    #[arg(long)]
    append: bool,
    /// Wait for a running writer instead of failing
    #[arg(long)]
    wait: bool,
    /// No progress lines on stderr
    #[arg(long, short)]
    quiet: bool,
}

/// How a run ended, beyond success.
enum Failure {
    Interrupted,
    Error(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Error(e.into())
    }
}

// DataFusion allocates and frees large buffers per batch; glibc's malloc returns them
// to the kernel and faults them in again (a fifth of a history scan's time, measured
// with perf), mimalloc keeps them. datafusion-cli makes the same choice.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns transparent huge pages off for this process, unless `MIMALLOC_ALLOW_THP` says
/// otherwise. mimalloc asks for them on its arenas, and the kernel then zeroes 2 MiB at
/// the first touch of any page: 4.4 ms of an 8 ms query over a 100,000-row snapshot
/// went to `clear_page_erms` (perf), with no gain on the long scans.
fn no_huge_pages() {
    #[cfg(target_os = "linux")]
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // A kernel without the flag keeps its pages: slower, nothing else.
        let _ = nix::sys::prctl::set_thp_disable(true);
    }
}

fn main() -> ExitCode {
    no_huge_pages();
    let matches = Cli::command().get_matches();
    let mut cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if let Command::Ingest(args) = &mut cli.command {
        args.secret_on_command_line = matches
            .subcommand_matches("ingest")
            .and_then(|m| m.value_source("client_secret"))
            == Some(clap::parser::ValueSource::CommandLine);
    }
    init_logging(cli.verbose);
    let runtime = match mdesnap::runtime() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let cancel = Cancel::new();
    // On a worker thread, whose stack is deep enough for DataFusion's recursion.
    let work = runtime.spawn(run(cli, cancel.clone()));
    let outcome = runtime.block_on(work).unwrap_or_else(|e| {
        Err(Failure::Error(anyhow::anyhow!(
            "mdesnap stopped unexpectedly: {e}"
        )))
    });
    // Blocking work (the generator's writer) sees the cancel flag within moments and
    // removes what it had not committed; wait for that, but not forever.
    runtime.shutdown_timeout(Duration::from_secs(10));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Interrupted) => {
            eprintln!("interrupted");
            ExitCode::from(130)
        }
        Err(Failure::Error(e)) => {
            // A reader that stopped reading (`| head`) ends the output, not in error,
            // whichever layer's error carries it (the console's wraps the library's).
            let broken_pipe = e.chain().any(|c| {
                c.downcast_ref::<Error>().is_some_and(Error::is_broken_pipe)
                    || c.downcast_ref::<ReplError>()
                        .is_some_and(ReplError::is_broken_pipe)
                    || c.downcast_ref::<std::io::Error>()
                        .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            });
            if broken_pipe {
                return ExitCode::SUCCESS;
            }
            if matches!(e.downcast_ref::<Error>(), Some(Error::Interrupted(_))) {
                eprintln!("interrupted");
                return ExitCode::from(130);
            }
            eprintln!("error: {}", error_chain(&e));
            if out_of_memory(&e) {
                eprintln!(
                    "hint: the query needs more memory than --memory-limit gives it: raise the limit, or narrow the query (a filter on snapshot, fewer columns)"
                );
            }
            ExitCode::from(2)
        }
    }
}

/// Whether `e` is DataFusion's memory pool refusing an operator (`--memory-limit`).
fn out_of_memory(e: &anyhow::Error) -> bool {
    use datafusion::error::DataFusionError;
    let exhausted =
        |d: &DataFusionError| matches!(d.find_root(), DataFusionError::ResourcesExhausted(_));
    e.chain().any(|c| {
        c.downcast_ref::<DataFusionError>().is_some_and(exhausted)
            || matches!(c.downcast_ref::<Error>(), Some(Error::DataFusion(d)) if exhausted(d))
    })
}

/// The error and its causes on one line, leaving out a cause whose text the line
/// already holds (DataFusion's errors repeat their source in their own message).
fn error_chain(e: &anyhow::Error) -> String {
    let mut line = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

/// Runs the command until it ends or Ctrl-C: async work is dropped (its temporary
/// files go with it); blocking work is told through `cancel` and stops by itself.
async fn run(cli: Cli, cancel: Cancel) -> Result<(), Failure> {
    // The handler is installed before any work starts: a future that registers on its
    // first poll could come second in `select!`, after the work had already run up to
    // its first wait, and a Ctrl-C then would kill the process outright.
    #[cfg(unix)]
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| anyhow::anyhow!("installing the Ctrl-C handler: {e}"))?;
    #[cfg(unix)]
    let interrupted = async move {
        sigint.recv().await;
    };
    #[cfg(not(unix))]
    let interrupted = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    // The console and the demo handle Ctrl-C themselves: it cancels a statement
    // there, not the whole command.
    if matches!(cli.command, Command::Repl(_) | Command::Demo(_)) {
        drop(interrupted);
        return dispatch(cli.command, cancel).await;
    }
    tokio::select! {
        biased;
        () = interrupted => {
            cancel.cancel();
            Err(Failure::Interrupted)
        }
        result = dispatch(cli.command, cancel.clone()) => result,
    }
}

async fn dispatch(command: Command, cancel: Cancel) -> Result<(), Failure> {
    match command {
        Command::Query(args) => query(args).await,
        Command::Repl(args) => repl(args).await,
        Command::Demo(args) => demo(args, cancel).await,
        Command::Snapshots { command } => snapshots(command).await,
        Command::Diff(args) => diff(args, cancel).await,
        Command::Changes {
            command: ChangesCommand::Rebuild { lake, force, wait },
        } => tokio::task::spawn_blocking(move || rebuild(&lake.lake, force, wait, &cancel)).await?,
        Command::Odata {
            command: OdataCommand::Parse { filter },
        } => odata_parse(&filter),
        Command::Emulate(args) => emulate(args).await,
        Command::Ingest(args) => ingest::run(args, cancel).await,
        Command::Generate(args) => {
            tokio::task::spawn_blocking(move || run_generate(args, cancel)).await?
        }
    }
}

async fn query(args: QueryArgs) -> Result<(), Failure> {
    let engine = args.engine.open(&args.lake.lake, args.as_of.as_deref())?;
    let names = if args.sql_names {
        Names::Sql
    } else {
        Names::Api
    };
    let Planned { df, envelope } = engine
        .plan(&args.statement, names, args.format)
        .await
        .map_err(with_caret)?;
    let result = match &args.output {
        Some(path) => {
            engine.guard_path("--output", path)?;
            write_file(df, path).await.map(|rows| {
                eprintln!("wrote {rows} rows to {}", path.display());
            })
        }
        None => {
            let stream = df.execute_stream().await?;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout);
            write_stream(stream, args.format, envelope.as_ref(), &mut out)
                .await
                .map(|_| ())
        }
    };
    // Only odata-json has a place for the count in its output; elsewhere it goes to
    // stderr, beside the results.
    if let Some(count) = envelope.as_ref().and_then(|e| e.count)
        && (args.format != Format::ODataJson || args.output.is_some())
    {
        eprintln!("@odata.count: {count}");
    }
    match result {
        Ok(()) => Ok(()),
        Err(e @ (Error::DataFusion(_) | Error::WriteOutput { .. })) => {
            // DataFusion's read errors do not name the file: find it if one is bad.
            engine.verify_files()?;
            Err(e.into())
        }
        Err(e) => Err(e.into()),
    }
}

/// A console error as the run's outcome: Ctrl-C is exit 130, anything else exit 2
/// with the message (and its caret) on stderr.
fn console_failure(e: ReplError) -> Failure {
    if e.is_interrupt() {
        Failure::Interrupted
    } else {
        Failure::Error(anyhow::Error::new(e))
    }
}

async fn repl(args: ReplArgs) -> Result<(), Failure> {
    let engine = args.engine.open(&args.lake.lake, args.as_of.as_deref())?;
    let interrupts = Interrupts::new().context("installing the Ctrl-C handler")?;
    let mut session = Session::new(engine, Some(interrupts));
    session.settings.format = args.format;
    let mut out = std::io::stdout();
    if !args.command.is_empty() {
        for text in &args.command {
            let flow = session
                .run_text(text, &mut out)
                .await
                .map_err(console_failure)?;
            if flow == Flow::Quit {
                break;
            }
        }
        return Ok(());
    }
    if let Some(path) = &args.file {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        session
            .run_text(&text, &mut out)
            .await
            .map_err(console_failure)?;
        return Ok(());
    }
    if std::io::stdin().is_terminal() {
        prompt(&mut session, None).await?;
        return Ok(());
    }
    piped(&mut session, &mut out).await.map_err(console_failure)
}

async fn demo(args: DemoArgs, cancel: Cancel) -> Result<(), Failure> {
    let mut options = DemoOptions::new(&args.lake);
    options.days = args.days;
    options.machines = args.machines;
    options.fresh = args.fresh;
    options.cancel = cancel;
    let interrupts = Interrupts::new().context("installing the Ctrl-C handler")?;
    // Ctrl-C while the lake is made stops the demo; in the console it cancels a query.
    let prepared = {
        let mut interrupts = interrupts;
        let made = tokio::select! {
            biased;
            () = interrupts.recv() => {
                options.cancel.cancel();
                return Err(Failure::Interrupted);
            }
            made = prepare(&options, &|line| eprintln!("{line}")) => made,
        };
        made.map(|p| (p, interrupts))
    };
    let (_, interrupts) = prepared?;
    let engine = Engine::open(&args.lake, None)?;
    let mut session = Session::new(engine, Some(interrupts));
    if std::io::stdin().is_terminal() {
        prompt(&mut session, Some(GUIDE)).await?;
        return Ok(());
    }
    let mut out = std::io::stdout();
    for statement in SAMPLE_QUERIES {
        writeln!(out, "\n> {statement}").map_err(Error::Output)?;
        session
            .run_text(statement, &mut out)
            .await
            .map_err(console_failure)?;
    }
    writeln!(
        out,
        "\nThe lake is in {}: `mdesnap repl --lake {}` opens it again.",
        args.lake.display(),
        args.lake.display()
    )
    .map_err(Error::Output)?;
    Ok(())
}

/// An OData error rendered with the request and a caret under the byte at fault.
fn with_caret(e: Error) -> anyhow::Error {
    match &e {
        Error::OData { text, source } => {
            anyhow::anyhow!(
                "{}",
                render_caret(&source.to_string(), text, source.offset())
            )
        }
        _ => e.into(),
    }
}

/// `--user alice=5,140 --user bob=21` (or `alice=5,bob=21`): users and their groups.
fn parse_users(values: &[String]) -> anyhow::Result<Vec<(String, Vec<i64>)>> {
    let mut users: Vec<(String, Vec<i64>)> = Vec::new();
    for value in values {
        for item in value.split(',') {
            let item = item.trim();
            let (user, group) = match item.split_once('=') {
                Some((u, g)) => (Some(u), g),
                None => (None, item),
            };
            let group: i64 = group.parse().map_err(|_| {
                anyhow::anyhow!("--user {value}: '{group}' is not a device group id")
            })?;
            match (user, users.last_mut()) {
                (Some(u), _) if !u.is_empty() => users.push((u.to_string(), vec![group])),
                (None, Some(last)) => last.1.push(group),
                _ => anyhow::bail!("--user {value}: expected NAME=GROUP_ID[,GROUP_ID...]"),
            }
        }
    }
    Ok(users)
}

async fn emulate(args: EmulateArgs) -> Result<(), Failure> {
    use mdesnap::emulator::{Emulator, EmulatorConfig, Faults};
    let mut faults = Faults::default();
    for f in &args.faults {
        let (kind, rate) = f
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--fault {f}: expected KIND=RATE"))?;
        let rate: f64 = rate
            .parse()
            .map_err(|_| anyhow::anyhow!("--fault {f}: '{rate}' is not a rate"))?;
        faults.0.insert(kind.to_string(), rate);
    }
    faults
        .validate()
        .map_err(|e| anyhow::anyhow!("--fault: {e}"))?;
    let seconds = |what: &str, s: f64| {
        std::time::Duration::try_from_secs_f64(s)
            .map_err(|_| anyhow::anyhow!("{what} must be a non-negative number of seconds"))
    };
    let start = match &args.start {
        Some(t) => parse_time(t)?,
        None => mdesnap::fleet::FleetConfig::default_start(),
    };
    let config = EmulatorConfig {
        bind: args.bind,
        tenant_id: args.tenant_id,
        client_id: args.client_id,
        client_secret: args.client_secret,
        roles: args.roles,
        token_lifetime: std::time::Duration::from_secs(args.token_lifetime),
        users: parse_users(&args.users)?,
        approve_after: seconds("--approve-after", args.approve_after)?,
        device_code_lifetime: std::time::Duration::from_secs(900),
        device_code_min_poll: std::time::Duration::from_secs(1),
        seed: args.seed,
        machines: args.machines,
        churn: args.churn,
        start,
        day: args.day,
        profile: args.schema_profile,
        calls_per_minute: args.calls_per_minute,
        calls_per_hour: args.calls_per_hour,
        window_scale: args.window_scale,
        retention_days: args.retention_days,
        page_size: usize::try_from(args.page_size).unwrap_or(10_000),
        legacy_user_404: args.legacy_user_404,
        empty_tenant_404: true,
        next_link_with_top: args.next_link_with_top,
        max_page: None,
        faults,
        slow: seconds("--slow-seconds", args.slow_seconds)?,
    };
    if !args.bind.ip().is_loopback() {
        eprintln!(
            "warning: the emulator listens on {}, which is not loopback: other hosts can reach it",
            args.bind
        );
    }
    let emulator = Emulator::start(config).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {}", emulator.url()).map_err(Error::Output)?;
        out.flush().map_err(Error::Output)?;
    }
    emulator.wait().await;
    Ok(())
}

fn odata_parse(filter: &str) -> Result<(), Failure> {
    match mdesnap::odata::parse_filter(filter) {
        Ok(expr) => {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{expr}").map_err(Error::Output)?;
            Ok(())
        }
        Err(e) => Err(anyhow::anyhow!("{}", render_caret(&e.to_string(), filter, e.offset)).into()),
    }
}

async fn diff(args: DiffArgs, cancel: Cancel) -> Result<(), Failure> {
    let lake = args.lake.lake.clone();
    let report = tokio::task::spawn_blocking(move || -> anyhow::Result<diff::Report> {
        let scan = scan_lake(&lake)?;
        let snapshots: Vec<mdesnap::Manifest> = args
            .scope
            .unwrap_or_default()
            .select(&scan.snapshots)
            .into_iter()
            .cloned()
            .collect();
        let (from, to) = diff::resolve(&snapshots, args.from.as_deref(), args.to.as_deref())?;
        Ok(diff::Report::compute(
            &lake,
            from,
            to,
            args.include_last_seen,
            &cancel,
        )?)
    })
    .await??;
    let summary = report.summary()?;
    let rows = if args.ip_addresses {
        report.address_rows()?
    } else {
        report.machine_rows()?
    };
    let ctx = datafusion::prelude::SessionContext::new();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout);
    let print = |batch| ctx.read_batch(batch);
    if args.summary {
        write_stream(
            print(summary)?.execute_stream().await?,
            args.format,
            None,
            &mut out,
        )
        .await?;
        return Ok(());
    }
    if args.format == Format::Table {
        writeln!(out, "changes from {} to {}", report.from, report.to).map_err(Error::Output)?;
        write_stream(
            print(summary)?.execute_stream().await?,
            args.format,
            None,
            &mut out,
        )
        .await?;
        writeln!(out).map_err(Error::Output)?;
    } else {
        eprintln!("changes from {} to {}", report.from, report.to);
        for line in report.summary_lines() {
            eprintln!("  {line}");
        }
    }
    write_stream(
        print(rows)?.execute_stream().await?,
        args.format,
        None,
        &mut out,
    )
    .await?;
    Ok(())
}

fn rebuild(lake: &Lake, force: bool, wait: bool, cancel: &Cancel) -> Result<(), Failure> {
    let report = mdesnap::lake::rebuild_changes(lake, wait, force, cancel, |id| {
        eprintln!("computing the changes of snapshot {id}");
    })?;
    println!(
        "rebuilt the changes of {} snapshot(s); {} already up to date",
        report.rebuilt.len(),
        report.current
    );
    Ok(())
}

async fn snapshots(command: SnapshotsCommand) -> Result<(), Failure> {
    match command {
        SnapshotsCommand::List { lake, format } => {
            let scan = scan_lake(&lake.lake)?;
            for b in &scan.broken {
                eprintln!("warning: snapshot {} is unreadable: {}", b.id, b.error);
            }
            let table = mdesnap::engine::catalog::snapshots_table(&scan)?;
            let ctx = datafusion::prelude::SessionContext::new();
            ctx.register_table("snapshots", std::sync::Arc::new(table))?;
            let df = ctx
                .sql(&mdesnap::engine::catalog::snapshots_list_sql())
                .await?;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout);
            write_stream(df.execute_stream().await?, format, None, &mut out).await?;
            Ok(())
        }
        SnapshotsCommand::Show { lake, id } => {
            let scan = scan_lake(&lake.lake)?;
            let manifest = if id == "latest" {
                scan.snapshots.last()
            } else {
                let id: SnapshotId = id.parse()?;
                if let Some(b) = scan.broken.iter().find(|b| b.id == id) {
                    return Err(anyhow::anyhow!("snapshot {id} is unreadable: {}", b.error).into());
                }
                scan.get(id)
            };
            let manifest = manifest
                .ok_or_else(|| anyhow::anyhow!("lake {} has no snapshot {id}", lake.lake))?;
            let text = serde_json::to_string_pretty(manifest)?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{text}").map_err(Error::Output)?;
            Ok(())
        }
        SnapshotsCommand::Prune {
            lake,
            keep,
            older_than,
            dry_run,
            wait,
        } => {
            let options = PruneOptions {
                keep,
                older_than,
                now: None,
                dry_run,
                wait,
            };
            let report = prune(&lake.lake, &options)?;
            let verb = if dry_run { "would remove" } else { "removed" };
            let mut out = std::io::stdout().lock();
            for path in &report.leftovers {
                writeln!(out, "{verb} leftover {}", lake.lake.shown(path).display())
                    .map_err(Error::Output)?;
            }
            for id in &report.snapshots {
                writeln!(out, "{verb} snapshot {id}").map_err(Error::Output)?;
            }
            writeln!(
                out,
                "{verb} {} snapshots and {} leftovers",
                report.snapshots.len(),
                report.leftovers.len()
            )
            .map_err(Error::Output)?;
            Ok(())
        }
    }
}

fn run_generate(args: GenerateArgs, cancel: Cancel) -> Result<(), Failure> {
    let start = args.start.as_deref().map(parse_time).transpose()?;
    let options = GenerateOptions {
        seed: args.seed,
        machines: args.machines,
        days: args.days,
        churn: args.churn,
        start,
        append: args.append,
        wait: args.wait,
        cancel,
    };
    let began = Instant::now();
    let total = args.days;
    let mut n = 0;
    let quiet = args.quiet;
    let tty = std::io::stderr().is_terminal();
    let written = generate(&args.lake.lake, &options, |m| {
        n += 1;
        if !quiet {
            let line = format!(
                "[{n}/{total}] snapshot {}: {} machines, {} addresses, {} user pairs, {} domain pairs",
                m.id,
                m.rows(Table::Machines),
                m.rows(Table::IpAddresses),
                m.rows(Table::UserMachines),
                m.rows(Table::DomainMachines),
            );
            if tty {
                eprint!("\r\x1b[2K{line}");
            } else {
                eprintln!("{line}");
            }
        }
    })
    .with_context(|| format!("generating into {}", args.lake.lake))?;
    if tty && !quiet {
        eprintln!();
    }
    let last = written.last();
    println!(
        "generated {} snapshots into {} ({} machines in the latest, {}) in {:.1}s",
        written.len(),
        args.lake.lake,
        last.map_or(0, |m| m.rows(Table::Machines)),
        last.map_or_else(|| "none".to_string(), |m| m.id.clone()),
        began.elapsed().as_secs_f64()
    );
    Ok(())
}
