//! `mdesnap ingest`: flags to [`IngestOptions`], events to the terminal, the report
//! to the last line (or `--json`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use mdesnap::Cancel;
use mdesnap::ingest::{
    Cloud, Credentials, Endpoints, IngestOptions, Limits, Region, Secret, TokenEndpoint,
    rows_summary,
};

use crate::progress::Progress;
use crate::{Failure, LakeArg};

/// How to sign in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthKind {
    /// An application's client secret (application permission Machine.Read.All)
    ClientSecret,
    /// Sign in as a user with a code shown here (delegated permission Machine.Read)
    DeviceCode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TokenEndpointArg {
    V2,
    V1,
}

#[derive(Debug, Args)]
pub struct IngestArgs {
    #[command(flatten)]
    lake: LakeArg,
    /// The tenant (directory) id
    #[arg(long, env = "AZURE_TENANT_ID")]
    tenant_id: Option<String>,
    /// The application (client) id
    #[arg(long, env = "AZURE_CLIENT_ID")]
    client_id: Option<String>,
    /// The application's client secret (prefer the environment variable: a flag is visible to other users of the machine)
    #[arg(long, env = "AZURE_CLIENT_SECRET", hide_env_values = true)]
    client_secret: Option<String>,
    /// How to sign in
    #[arg(long, value_enum, default_value_t = AuthKind::ClientSecret)]
    auth: AuthKind,
    /// Token endpoint of client credentials: v2 (scope=.../.default) or v1 (resource=...)
    #[arg(long, value_enum, default_value_t = TokenEndpointArg::V2)]
    token_endpoint: TokenEndpointArg,
    /// Where a device-code sign-in's tokens are kept (a 0600 file) [default: mdesnap/tokens.json in the user's cache folder]
    #[arg(long, env = "MDESNAP_TOKEN_CACHE", value_name = "FILE")]
    token_cache: Option<PathBuf>,
    /// The national cloud
    #[arg(long, default_value = "commercial", value_parser = PossibleValuesParser::new(Cloud::ALL.map(|(_, n)| n)).try_map(|s| s.parse::<Cloud>()))]
    cloud: Cloud,
    /// The commercial cloud's API host near the tenant
    #[arg(long, value_parser = PossibleValuesParser::new(Region::ALL.map(|(_, n)| n)).try_map(|s| s.parse::<Region>()))]
    region: Option<Region>,
    /// Replace the API origin (https, or http on loopback for an emulator)
    #[arg(long, value_name = "URL")]
    base_url: Option<String>,
    /// Replace the token authority's origin
    #[arg(long, value_name = "URL")]
    authority_url: Option<String>,
    /// Replace the API token scope
    #[arg(long)]
    scope: Option<String>,
    /// Replace Microsoft Graph's origin (security states)
    #[arg(long, value_name = "URL")]
    graph_base_url: Option<String>,
    /// An OData $filter sent to the service with /api/machines
    #[arg(long, value_name = "ODATA", allow_hyphen_values = true)]
    filter: Option<String>,
    /// Users whose machines make user_machines, comma-separated (user names; a UPN is cut at '@')
    #[arg(long, value_delimiter = ',')]
    users: Vec<String>,
    /// A file of users, one per line
    #[arg(long, value_name = "FILE")]
    users_file: Option<PathBuf>,
    /// Domains whose machines make domain_machines, comma-separated
    #[arg(long, value_delimiter = ',')]
    domains: Vec<String>,
    /// A file of domains, one per line
    #[arg(long, value_name = "FILE")]
    domains_file: Option<PathBuf>,
    /// Also take security_states from the Graph preview route (retired by Microsoft; opt-in)
    #[arg(long)]
    security_states: bool,
    /// Commit a snapshot with no machines when the machines list answers 404 (after --retries) or an empty first page; without it either fails the run, since a wrong path or a faulty gateway answers the same (with --filter an empty answer is always taken)
    #[arg(long)]
    allow_empty: bool,
    /// Refuse a snapshot with fewer machines than this share (0 to 1) of the previous snapshot of the same source and --filter: a sudden shrink is taken for a fault, not for machines removed
    #[arg(long, default_value_t = 0.5, value_name = "F", value_parser = fraction)]
    min_fraction: f64,
    /// Commit however few machines there are next to the previous snapshot (a tenant that really shrank)
    #[arg(long)]
    allow_shrink: bool,
    /// Machines per page ($top), 1 to 10000
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    page_size: u32,
    /// Pages in the run before it stops with nothing committed
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    max_pages: u64,
    /// Requests per route in any rolling minute
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    calls_per_minute: u32,
    /// Requests per route in any rolling hour
    #[arg(long, default_value_t = 1500, value_parser = clap::value_parser!(u32).range(1..))]
    calls_per_hour: u32,
    /// The longest Retry-After honoured, seconds
    #[arg(long, default_value_t = 120.0, value_name = "SECS")]
    max_retry_after: f64,
    /// Each request's timeout, seconds
    #[arg(long, default_value_t = 60.0, value_name = "SECS")]
    timeout: f64,
    /// Retries of a call after 5xx, timeouts and dropped connections
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(0..=100))]
    retries: u32,
    /// First backoff ceiling, seconds (doubles each retry; full jitter)
    #[arg(long, default_value_t = 0.5, value_name = "SECS")]
    backoff_base: f64,
    /// Wait for another writer of the lake instead of failing
    #[arg(long)]
    wait: bool,
    /// No progress on stderr (warnings and sign-in codes still show)
    #[arg(long, short)]
    quiet: bool,
    /// Print one JSON object at the end instead of the summary line
    #[arg(long)]
    json: bool,
    /// Set by `main` when --client-secret came from the command line.
    #[arg(skip)]
    pub secret_on_command_line: bool,
}

/// A share from 0 to 1.
fn fraction(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!("'{text}' is not a number from 0 to 1")),
    }
}

fn seconds(flag: &str, value: f64, max: f64) -> anyhow::Result<Duration> {
    if !(value.is_finite() && value >= 0.0 && value <= max) {
        anyhow::bail!("{flag} must be a number of seconds from 0 to {max}");
    }
    Ok(Duration::from_secs_f64(value))
}

/// Names from a flag list and a file (one a line; blank lines and `#` comments
/// skipped). A user given as a UPN is cut to its user name, with a warning.
fn names(
    flag: &str,
    listed: &[String],
    file: Option<&Path>,
    cut_upn: bool,
) -> anyhow::Result<Vec<String>> {
    let mut out: Vec<String> = listed.iter().map(|s| s.trim().to_string()).collect();
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{flag} {}: {e}", path.display()))?;
        out.extend(
            text.lines()
                .map(|l| l.trim_start_matches('\u{feff}').trim())
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string),
        );
    }
    let mut seen = std::collections::HashSet::new();
    let mut names = Vec::new();
    for name in out {
        let name = match name.split_once('@') {
            Some((user, _)) if cut_upn => {
                eprintln!(
                    "warning: {name} is a UPN; the API takes the user name only, so asking for '{user}'"
                );
                user.to_string()
            }
            _ => name,
        };
        if name.is_empty() {
            anyhow::bail!("{flag}: an empty name");
        }
        if seen.insert(name.clone()) {
            names.push(name);
        }
    }
    Ok(names)
}

fn options(args: &IngestArgs, cancel: Cancel) -> anyhow::Result<IngestOptions> {
    let mut endpoints = Endpoints::for_cloud(args.cloud, args.region)?;
    if let Some(u) = &args.base_url {
        endpoints.api = u.clone();
    }
    if let Some(u) = &args.authority_url {
        endpoints.authority = u.clone();
    }
    if let Some(s) = &args.scope {
        endpoints.scope = s.clone();
    }
    if let Some(u) = &args.graph_base_url {
        // The origin only: tokens are still for Graph, as --base-url keeps --scope.
        endpoints.graph = u.clone();
    }
    let tenant = args
        .tenant_id
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no tenant: pass --tenant-id or set AZURE_TENANT_ID"))?;
    let client_id = args.client_id.clone().ok_or_else(|| {
        anyhow::anyhow!("no application: pass --client-id or set AZURE_CLIENT_ID")
    })?;
    let credentials = match args.auth {
        AuthKind::ClientSecret => {
            let Some(secret) = args.client_secret.clone() else {
                if std::env::var_os("AZURE_CLIENT_CERTIFICATE_PATH").is_some() {
                    anyhow::bail!(
                        "AZURE_CLIENT_CERTIFICATE_PATH is set, but client certificates are not supported yet (docs/ingest.md says why); use a client secret or --auth device-code"
                    );
                }
                anyhow::bail!(
                    "no client secret: set AZURE_CLIENT_SECRET (or pass --client-secret), or sign in as a user with --auth device-code"
                );
            };
            if args.secret_on_command_line {
                eprintln!(
                    "warning: a secret on the command line is visible to other users of this machine (ps); prefer AZURE_CLIENT_SECRET"
                );
            }
            Credentials::ClientSecret {
                client_id,
                secret: Secret::new(secret),
            }
        }
        AuthKind::DeviceCode => Credentials::DeviceCode {
            client_id,
            cache: args
                .token_cache
                .clone()
                .or_else(mdesnap::ingest::auth::default_cache_path),
        },
    };
    let mut o = IngestOptions::new(&args.lake.lake, endpoints, tenant, credentials);
    o.token_endpoint = match args.token_endpoint {
        TokenEndpointArg::V2 => TokenEndpoint::V2,
        TokenEndpointArg::V1 => TokenEndpoint::V1,
    };
    o.filter = args.filter.clone();
    o.users = names("--users", &args.users, args.users_file.as_deref(), true)?;
    o.domains = names(
        "--domains",
        &args.domains,
        args.domains_file.as_deref(),
        false,
    )?;
    o.security_states = args.security_states;
    o.allow_empty = args.allow_empty;
    o.min_fraction = args.min_fraction;
    o.allow_shrink = args.allow_shrink;
    o.page_size = args.page_size;
    o.max_pages = args.max_pages;
    o.limits = Limits {
        per_minute: args.calls_per_minute,
        per_hour: args.calls_per_hour,
        ..Limits::default()
    };
    o.retry.retries = args.retries;
    o.retry.backoff_base = seconds("--backoff-base", args.backoff_base, 60.0)?;
    o.retry.max_retry_after = seconds("--max-retry-after", args.max_retry_after, 86_400.0)?;
    o.timeout = seconds("--timeout", args.timeout, 3_600.0)?;
    if o.timeout.is_zero() {
        anyhow::bail!("--timeout must be above 0");
    }
    o.wait = args.wait;
    o.cancel = cancel;
    Ok(o)
}

pub async fn run(args: IngestArgs, cancel: Cancel) -> Result<(), Failure> {
    let options = options(&args, cancel)?;
    let progress = Progress::new(args.quiet);
    let events = |e| progress.show(e);
    let result = mdesnap::ingest::ingest(&options, &events).await;
    progress.finish();
    let report = result.map_err(|e| {
        let context = format!("ingesting into {} (nothing was committed)", options.lake);
        match (&e, &options.filter) {
            (mdesnap::ingest::IngestError::Filter(p), Some(filter)) => anyhow::anyhow!(
                "{context}: {}",
                mdesnap::odata::render_caret(&format!("--filter: {p}"), filter, p.offset)
            ),
            _ => anyhow::Error::new(e).context(context),
        }
    })?;
    let m = &report.manifest;
    if args.json {
        println!("{}", report.to_json());
    } else {
        let dups = if m.duplicates_dropped > 0 {
            format!(", {} duplicates dropped", m.duplicates_dropped)
        } else {
            String::new()
        };
        println!(
            "snapshot {}: {}{dups} in {:.1}s ({} calls, {} retries)",
            m.id,
            rows_summary(m),
            report.elapsed.as_secs_f64(),
            report.calls.calls,
            report.calls.retries
        );
    }
    Ok(())
}
