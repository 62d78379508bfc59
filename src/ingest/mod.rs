//! `mdesnap ingest`: one snapshot of a tenant, from the Defender API into the lake.
//!
//! The pieces: [`endpoints`] (hosts and scopes per cloud, https unless loopback),
//! [`auth`] (client credentials and the device authorization grant, with a token
//! cache), [`rate_limit`] (rolling windows per route template), [`client`] (one GET
//! with the service's retry rules), [`pager`] (`$top`/`$skip` with an overlap against
//! a fleet that changes mid-run, nextLinks checked before they are followed).
//!
//! Records go through the same decoders `generate` uses into one
//! [`SnapshotWriter`] ([`write_records`]): one blocking thread decodes JSON to Arrow
//! while another encodes the batch before to Parquet, and the next page is on its way
//! meanwhile. Pages stream through; nothing holds the
//! whole tenant. All tables of the run publish together at the commit, or none do: an
//! error, a dropped future (Ctrl-C) or a cancel before it leaves nothing visible, and
//! the writer removes its files (a `kill -9` leaves leftovers the next writer removes).
//!
//! Nothing of a run that looks like a fault is committed as a fleet that changed: the
//! pager refuses an empty machines list unless `allow_empty`, and the writer refuses
//! a snapshot with fewer machines than `min_fraction` of the previous snapshot of its
//! scope unless `allow_shrink` ([`IngestError::Shrunk`]), so the change tables never
//! record a whole fleet removed by mistake.

pub mod auth;
pub mod client;
pub mod endpoints;
pub mod events;
pub mod http;
pub mod pager;
pub mod rate_limit;

use std::collections::{BTreeMap, HashSet};

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

pub use auth::{AuthError, Credentials, Secret, TokenEndpoint};
pub use client::{ApiError, Calls, RetryPolicy};
pub use endpoints::{Cloud, EndpointError, Endpoints, Region};
pub use events::{Event, Observer, WaitReason};
pub use pager::PageError;
pub use rate_limit::Limits;

use crate::cancel::{Cancel, Interrupted};
use crate::decode::{DecodeError, MachineDecoder, PairBuilder, SecurityStateDecoder};
use crate::lake::{Lake, LakeError, Shrink, SnapshotWriter, WriterOptions};
use crate::schema::Table;
use crate::snapshot::{Manifest, SnapshotId};
use arrow::record_batch::RecordBatch;
use auth::TokenSource;
use client::ApiClient;
pub use pager::RawRecord;
use pager::{AsyncSink, Budget, IdKey, Linked, T_DOMAIN, T_STATES, T_USER, record_id};

/// The service caps the domain endpoint here, without saying it did.
pub const DOMAIN_CAP: usize = 500;

/// What to ingest, from where, and how patiently.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    pub lake: Lake,
    pub endpoints: Endpoints,
    pub tenant: String,
    pub credentials: Credentials,
    pub token_endpoint: TokenEndpoint,
    /// `$filter` sent to the service for `/api/machines`.
    pub filter: Option<String>,
    /// Users whose machines make `user_machines` (names without a domain).
    pub users: Vec<String>,
    /// Domains whose machines make `domain_machines`.
    pub domains: Vec<String>,
    /// Take `security_states` from the Graph preview route.
    pub security_states: bool,
    /// Commit a snapshot with no machines: a 404 from the machines list (after the
    /// retries) or an empty first page of it. Without it both fail the run, since a
    /// wrong path or a faulty gateway answers the same; with a `filter`, an empty
    /// answer is always taken as it is.
    pub allow_empty: bool,
    /// The least share of the previous snapshot's machines (of the same scope: source
    /// and `filter`) a snapshot must have to be committed, 0 to 1.
    pub min_fraction: f64,
    /// Commit however few machines there are, next to the previous snapshot.
    pub allow_shrink: bool,
    /// `$top` of each page, 1 to 10,000.
    pub page_size: u32,
    /// Pages in the whole run before it stops, with nothing committed.
    pub max_pages: u64,
    pub limits: Limits,
    pub retry: RetryPolicy,
    /// Each request's timeout, body included.
    pub timeout: Duration,
    /// Tokens are renewed this long before they expire.
    pub renew_margin: Duration,
    /// Wait for another writer of the lake instead of failing.
    pub wait: bool,
    /// The snapshot's time (its id); now when `None`.
    pub started_at: Option<DateTime<Utc>>,
    pub cancel: Cancel,
}

impl IngestOptions {
    /// Options with the service's limits and the documented defaults.
    pub fn new(
        lake: impl Into<Lake>,
        endpoints: Endpoints,
        tenant: impl Into<String>,
        credentials: Credentials,
    ) -> Self {
        IngestOptions {
            lake: lake.into(),
            endpoints,
            tenant: tenant.into(),
            credentials,
            token_endpoint: TokenEndpoint::V2,
            filter: None,
            users: Vec::new(),
            domains: Vec::new(),
            security_states: false,
            allow_empty: false,
            min_fraction: 0.5,
            allow_shrink: false,
            page_size: 10_000,
            max_pages: 10_000,
            limits: Limits::default(),
            retry: RetryPolicy {
                retries: 8,
                backoff_base: Duration::from_millis(500),
                max_retry_after: Duration::from_secs(120),
                max_throttled: 100,
                max_body: 512 * 1024 * 1024,
            },
            timeout: Duration::from_secs(60),
            renew_margin: Duration::from_secs(300),
            wait: false,
            started_at: None,
            cancel: Cancel::new(),
        }
    }

    fn tables(&self) -> Vec<Table> {
        let mut t = vec![Table::Machines, Table::IpAddresses];
        if self.security_states {
            t.push(Table::SecurityStates);
        }
        if !self.users.is_empty() {
            t.push(Table::UserMachines);
        }
        if !self.domains.is_empty() {
            t.push(Table::DomainMachines);
        }
        t
    }
}

/// Why an ingest stopped; nothing of it was committed.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Page(#[from] PageError),
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("--page-size must be from 1 to 10000, not {0}")]
    PageSize(u32),
    #[error("--min-fraction must be from 0 to 1, not {0}")]
    MinFraction(f64),
    #[error(
        "{} machines, below --min-fraction {} of the {} in snapshot {} (the previous snapshot of this scope): a fleet that shrinks this suddenly is taken for a fault of the service, not for {} machines removed; if the tenant really shrank, run again with --allow-shrink (or a lower --min-fraction)",
        .0.rows, .0.fraction, .0.previous_rows, .0.previous, .0.previous_rows.saturating_sub(.0.rows)
    )]
    Shrunk(Shrink),
    #[error("the --filter does not parse: {0}")]
    Filter(crate::odata::ParseError),
    #[error("starting the HTTP client: {0}")]
    Client(String),
    #[error(transparent)]
    Interrupted(#[from] Interrupted),
    #[error("the snapshot writer stopped unexpectedly: {0}")]
    WriterPanicked(String),
}

/// What a finished ingest did.
#[derive(Debug, Clone)]
pub struct IngestReport {
    pub manifest: Manifest,
    pub calls: Calls,
    pub pages: u64,
    pub tokens: u32,
    pub elapsed: Duration,
}

impl IngestReport {
    /// The object `--json` prints: snapshot, rows per table, duplicates dropped,
    /// calls, retries and seconds.
    pub fn to_json(&self) -> Value {
        let tables: serde_json::Map<String, Value> = self
            .manifest
            .tables
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.rows)))
            .collect();
        serde_json::json!({
            "snapshot": self.manifest.id,
            "tables": tables,
            "duplicates_dropped": self.manifest.duplicates_dropped,
            "calls": self.calls.calls,
            "retries": self.calls.retries,
            "elapsed_s": (self.elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
        })
    }
}

/// What the paging side sends the writer, in order.
#[derive(Debug)]
pub enum ToWriter {
    /// Machine records (JSON text each) of one page.
    Machines(Vec<RawRecord>),
    /// MachineSecurityState records of one page.
    States(Vec<RawRecord>),
    /// `(user or domain, machine id)` rows of `user_machines` or `domain_machines`.
    Pairs(Table, Vec<(String, String)>),
    /// Everything was sent: commit, noting the duplicates the pager dropped.
    Commit { duplicates: u64 },
}

/// Rows per batch handed to the writer.
const CHUNK: usize = 8192;

/// Writes a snapshot's records: decoded from JSON to Arrow on a thread of its own,
/// encoded to Parquet on the calling one, so one page is decoded while the one before
/// is encoded (the ingester's writer; public for the benchmark). Returns the manifest
/// once `Commit` arrives. Without it (the source ends first), or on an error, the
/// writer is dropped and removes its files.
pub fn write_records(
    mut writer: SnapshotWriter,
    cancel: &Cancel,
    source: impl Iterator<Item = ToWriter> + Send,
) -> Result<Option<Manifest>, IngestError> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Decoded, IngestError>>(2);
    std::thread::scope(|scope| {
        scope.spawn(move || {
            if let Err(e) = decode_records(cancel, source, &tx) {
                // The writer may be gone already, with an error of its own.
                let _ = tx.send(Err(e));
            }
        });
        // Dropping `rx` on the way out ends the decoding thread at its next send.
        for decoded in rx {
            match decoded? {
                Decoded::Batch(table, batch) => writer.append(table, &batch)?,
                Decoded::Commit { duplicates } => {
                    cancel.check()?;
                    writer.add_duplicates_dropped(duplicates);
                    return match writer.commit() {
                        Ok(manifest) => Ok(Some(manifest)),
                        // The ingester's own words: its flags decide the guard.
                        Err(LakeError::Shrunk(shrink)) => Err(IngestError::Shrunk(shrink)),
                        Err(e) => Err(e.into()),
                    };
                }
            }
        }
        Ok(None)
    })
}

/// What the decoding thread hands the encoding one.
enum Decoded {
    Batch(Table, RecordBatch),
    Commit { duplicates: u64 },
}

/// The decoding side of [`write_records`]. Returns early, quietly, when the encoding
/// side has gone (it has its own error to report).
fn decode_records(
    cancel: &Cancel,
    source: impl Iterator<Item = ToWriter>,
    out: &std::sync::mpsc::SyncSender<Result<Decoded, IngestError>>,
) -> Result<(), IngestError> {
    let mut machines = MachineDecoder::default();
    let mut states = SecurityStateDecoder::default();
    let send =
        |table: Table, batch: RecordBatch| out.send(Ok(Decoded::Batch(table, batch))).is_ok();
    let flush_machines = |d: &mut MachineDecoder| -> Result<bool, IngestError> {
        if d.is_empty() {
            return Ok(true);
        }
        let (m, ips) = d.finish()?;
        Ok(send(Table::Machines, m) && send(Table::IpAddresses, ips))
    };
    for message in source {
        cancel.check()?;
        let open = match message {
            ToWriter::Machines(records) => {
                let mut open = true;
                for (i, raw) in records.iter().enumerate() {
                    machines.push_json(i, raw.get())?;
                    if machines.len() >= CHUNK {
                        open &= flush_machines(&mut machines)?;
                    }
                }
                open
            }
            ToWriter::States(records) => {
                let mut open = true;
                for (i, raw) in records.iter().enumerate() {
                    states.push_json(i, raw.get())?;
                    if states.len() >= CHUNK {
                        open &= send(Table::SecurityStates, states.finish()?);
                    }
                }
                open
            }
            ToWriter::Pairs(table, pairs) => {
                let mut b = PairBuilder::new(table);
                for (key, id) in &pairs {
                    b.push(key, id);
                }
                send(table, b.finish()?)
            }
            ToWriter::Commit { duplicates } => {
                let mut open = flush_machines(&mut machines)?;
                if !states.is_empty() {
                    open &= send(Table::SecurityStates, states.finish()?);
                }
                let _ = open && out.send(Ok(Decoded::Commit { duplicates })).is_ok();
                return Ok(());
            }
        };
        if !open {
            return Ok(());
        }
    }
    Ok(())
}

/// The writer's thread: creates the snapshot, says so, and runs [`write_records`] on
/// what the paging side sends. The channel closing before `Commit` (an error or Ctrl-C
/// on the paging side) drops the writer, which removes its files.
fn write_snapshot(
    lake: Lake,
    options: WriterOptions,
    cancel: Cancel,
    mut rx: mpsc::Receiver<ToWriter>,
    ready: oneshot::Sender<Result<SnapshotId, IngestError>>,
) -> Result<Option<Manifest>, IngestError> {
    let writer = match SnapshotWriter::create(&lake, options) {
        Ok(w) => {
            let _ = ready.send(Ok(w.id()));
            w
        }
        Err(e) => {
            let _ = ready.send(Err(e.into()));
            return Ok(None);
        }
    };
    write_records(writer, &cancel, std::iter::from_fn(|| rx.blocking_recv()))
}

/// Sends machine pages to the writer.
struct MachineSink<'a> {
    tx: &'a mpsc::Sender<ToWriter>,
    cancel: &'a Cancel,
}

impl AsyncSink for MachineSink<'_> {
    async fn send(&mut self, records: Vec<RawRecord>) -> Result<(), PageError> {
        self.cancel.check().map_err(|_| PageError::WriterGone)?;
        self.tx
            .send(ToWriter::Machines(records))
            .await
            .map_err(|_| PageError::WriterGone)
    }
}

/// Takes one snapshot of the tenant into the lake. See the module docs.
pub async fn ingest(
    options: &IngestOptions,
    events: Observer<'_>,
) -> Result<IngestReport, IngestError> {
    let began = std::time::Instant::now();
    if !(1..=10_000).contains(&options.page_size) {
        return Err(IngestError::PageSize(options.page_size));
    }
    if !(0.0..=1.0).contains(&options.min_fraction) {
        return Err(IngestError::MinFraction(options.min_fraction));
    }
    if let Some(f) = &options.filter {
        crate::odata::parse_filter(f).map_err(IngestError::Filter)?;
    }
    let users: Vec<(String, String)> = options
        .users
        .iter()
        .map(|u| Ok((u.clone(), pager::segment(u)?)))
        .collect::<Result<_, PageError>>()?;
    let domains: Vec<(String, String)> = options
        .domains
        .iter()
        .map(|d| Ok((d.clone(), pager::segment(d)?)))
        .collect::<Result<_, PageError>>()?;
    let endpoints = options.endpoints.clone().checked()?;
    let http = http::client(options.timeout).map_err(|e| IngestError::Client(e.to_string()))?;
    let tokens = |scope: &str| {
        TokenSource::new(
            http.clone(),
            &endpoints,
            scope,
            &options.tenant,
            options.credentials.clone(),
            options.token_endpoint,
            options.renew_margin,
            options.retry.retries,
            options.retry.backoff_base,
        )
    };
    let api_tokens = tokens(&endpoints.scope)?;
    let graph_tokens = if options.security_states {
        Some(tokens(&endpoints.graph_scope)?)
    } else {
        None
    };
    let mut client = ApiClient::new(
        http.clone(),
        rate_limit::Limiter::new(options.limits),
        api_tokens,
        graph_tokens,
        options.retry,
    );
    // Sign in before the lake is locked: a device-code sign-in may take minutes.
    client.sign_in(events).await?;
    options.cancel.check()?;

    let mut writer_options = WriterOptions::new(
        options.started_at.unwrap_or_else(Utc::now),
        endpoints.api.clone(),
        &options.tables(),
    );
    writer_options.filter = options.filter.clone();
    writer_options.users = options.users.clone();
    writer_options.domains = options.domains.clone();
    writer_options.wait = options.wait;
    writer_options.shrink_guard = (!options.allow_shrink).then_some(options.min_fraction);
    let (tx, rx) = mpsc::channel::<ToWriter>(2);
    let (ready_tx, ready_rx) = oneshot::channel();
    let lake = options.lake.clone();
    let cancel = options.cancel.clone();
    let writer = tokio::task::spawn_blocking(move || {
        write_snapshot(lake, writer_options, cancel, rx, ready_tx)
    });
    let writer_error = |writer: tokio::task::JoinHandle<Result<Option<Manifest>, IngestError>>| async move {
        match writer.await {
            Ok(Err(e)) => Some(e),
            Err(e) => Some(IngestError::WriterPanicked(e.to_string())),
            Ok(Ok(_)) => None,
        }
    };
    match ready_rx.await {
        Ok(Ok(id)) => tracing::info!("writing snapshot {id}"),
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            return Err(writer_error(writer)
                .await
                .unwrap_or_else(|| IngestError::WriterPanicked("no answer".into())));
        }
    }
    let paged = page_everything(
        &mut client,
        options,
        &endpoints,
        &users,
        &domains,
        &tx,
        events,
    )
    .await;
    let (duplicates, pages) = match paged {
        Ok(d) => d,
        Err(e) => {
            drop(tx);
            // An error of the writer is the cause of a paging side that found it gone.
            let written = writer_error(writer).await;
            return Err(match (e, written) {
                (IngestError::Page(PageError::WriterGone), Some(w)) => w,
                (e, _) => e,
            });
        }
    };
    // A failed send means the writer has gone: its own result says why.
    let _ = tx.send(ToWriter::Commit { duplicates }).await;
    drop(tx);
    let committed = match writer.await {
        Ok(Ok(Some(manifest))) => Ok(manifest),
        Ok(Err(e)) => Err(e),
        Err(e) => Err(IngestError::WriterPanicked(e.to_string())),
        Ok(Ok(None)) => Err(IngestError::WriterPanicked("no commit".into())),
    }?;
    Ok(IngestReport {
        manifest: committed,
        calls: client.counts,
        pages,
        tokens: client.tokens_fetched(),
        elapsed: began.elapsed(),
    })
}

/// Every collection of the run, into the writer; returns the duplicates dropped and
/// the pages read.
async fn page_everything(
    client: &mut ApiClient,
    options: &IngestOptions,
    endpoints: &Endpoints,
    users: &[(String, String)],
    domains: &[(String, String)],
    tx: &mpsc::Sender<ToWriter>,
    events: Observer<'_>,
) -> Result<(u64, u64), IngestError> {
    let mut budget = Budget::new(options.max_pages);
    let mut seen: HashSet<IdKey> = HashSet::new();
    let list = pager::ListOptions {
        api: &endpoints.api,
        filter: options.filter.as_deref(),
        page_size: options.page_size,
        allow_empty: options.allow_empty,
    };
    let mut duplicates = pager::machines(
        client,
        list,
        &mut budget,
        &mut seen,
        events,
        MachineSink {
            tx,
            cancel: &options.cancel,
        },
    )
    .await?;
    drop(seen);
    for (table, route, list, path) in [
        (Table::UserMachines, T_USER, users, "users"),
        (Table::DomainMachines, T_DOMAIN, domains, "domains"),
    ] {
        for (name, seg) in list {
            options.cancel.check()?;
            let url = format!("{}/api/{path}/{seg}/machines", endpoints.api);
            let mut pages = Linked::new(route, false, url);
            let mut ids: HashSet<IdKey> = HashSet::new();
            let mut pairs: Vec<(String, String)> = Vec::new();
            while let Some(page) = pages.next(client, &mut budget, events).await? {
                for (i, r) in page.records.iter().enumerate() {
                    let id = record_id(&page.url, i, r)?;
                    if ids.insert(IdKey::of(&id)) {
                        pairs.push((name.clone(), id));
                    } else {
                        duplicates += 1;
                    }
                }
            }
            if table == Table::DomainMachines && pairs.len() == DOMAIN_CAP {
                events(Event::Warning(format!(
                    "domain {name} answered exactly {DOMAIN_CAP} machines: the service caps the domain endpoint there, so there may be more"
                )));
            }
            events(Event::Page {
                route,
                rows: pairs.len(),
                total: pairs.len() as u64,
                expected: None,
            });
            tx.send(ToWriter::Pairs(table, pairs))
                .await
                .map_err(|_| PageError::WriterGone)?;
        }
    }
    if options.security_states {
        let mut pages = Linked::new(T_STATES, true, format!("{}{T_STATES}", endpoints.graph));
        let mut ids: HashSet<IdKey> = HashSet::new();
        let mut total = 0u64;
        while let Some(page) = pages.next(client, &mut budget, events).await? {
            options.cancel.check()?;
            let mut fresh = Vec::with_capacity(page.records.len());
            for (i, r) in page.records.into_iter().enumerate() {
                if ids.insert(IdKey::of(&record_id(&page.url, i, &r)?)) {
                    fresh.push(r);
                } else {
                    duplicates += 1;
                }
            }
            total += fresh.len() as u64;
            events(Event::Page {
                route: T_STATES,
                rows: fresh.len(),
                total,
                expected: page.count,
            });
            tx.send(ToWriter::States(fresh))
                .await
                .map_err(|_| PageError::WriterGone)?;
        }
    }
    Ok((duplicates, budget.used()))
}

/// Rows per table of a manifest, for the last line: `1203 machines, 2311 ip_addresses`.
pub fn rows_summary(manifest: &Manifest) -> String {
    let rows: BTreeMap<&str, u64> = Table::ALL
        .iter()
        .filter_map(|t| manifest.table(*t).map(|e| (t.name(), e.rows)))
        .collect();
    Table::ALL
        .iter()
        .filter_map(|t| rows.get(t.name()).map(|n| format!("{n} {}", t.name())))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    /// Imports flow one way (house style, rule 0): the ingester sits below nothing
    /// that makes synthetic tenants, so none of its files may name the fleet.
    #[test]
    fn the_ingester_does_not_import_the_synthetic_fleet() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/ingest");
        // Spelled in pieces so this file does not match itself.
        let needles = [
            ["crate", "::fleet"].concat(),
            ["super::super", "::fleet"].concat(),
        ];
        let mut files = 0;
        for entry in std::fs::read_dir(&dir).expect("src/ingest is readable") {
            let path = entry.expect("an entry").path();
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            files += 1;
            let text = std::fs::read_to_string(&path).expect("a source file");
            for (n, line) in text.lines().enumerate() {
                for needle in &needles {
                    assert!(
                        !line.contains(needle.as_str()),
                        "{}:{}: the ingester imports the fleet: {line}",
                        path.display(),
                        n + 1
                    );
                }
            }
        }
        assert!(files >= 8, "read {files} files of {}", dir.display());
    }
}
