//! `mdesnap demo`: a lake made the way a tenant's would be, with no tenant.
//!
//! The emulator starts in-process on loopback; each emulated day is taken by the real
//! ingest path (client credentials, paging, rate limits, the writer's commit), so the
//! snapshots carry the emulated days' times and the lake is what `ingest` writes. A
//! demo lake is marked by a `.mdesnap-demo` file written before its first snapshot: a
//! marked folder is reused, or made again when asked (or when an earlier demo stopped
//! before its first snapshot); any other folder that is not empty is left alone and
//! the demo refuses it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cancel::Cancel;
use crate::emulator::{Emulator, EmulatorConfig, EmulatorError};
use crate::fleet::{Fleet, FleetConfig};
use crate::ingest::{
    Credentials, Endpoints, IngestError, IngestOptions, Limits, Secret, ingest, rows_summary,
};
use crate::lake::{Lake, LakeError, scan_lake};

/// What the demo makes.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub lake: PathBuf,
    /// Days taken, one snapshot each.
    pub days: u32,
    /// Machines in the emulated fleet.
    pub machines: u64,
    /// Replace a demo lake found in the folder instead of reusing it.
    pub fresh: bool,
    pub cancel: Cancel,
}

impl DemoOptions {
    pub const DEFAULT_DAYS: u32 = 7;
    pub const DEFAULT_MACHINES: u64 = 2_000;

    /// A week of 2,000 machines into `lake`.
    pub fn new(lake: impl Into<PathBuf>) -> Self {
        DemoOptions {
            lake: lake.into(),
            days: Self::DEFAULT_DAYS,
            machines: Self::DEFAULT_MACHINES,
            fresh: false,
            cancel: Cancel::new(),
        }
    }
}

/// What became of the folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prepared {
    /// A new demo lake of this many snapshots.
    Created(usize),
    /// The demo lake found there, of this many snapshots.
    Reused(usize),
    /// The demo lake found there was removed and made again.
    Replaced(usize),
}

/// Why the demo lake could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(
        "{} is a lake the demo did not make (snapshot {id} from {source_url}); \
         the demo does not touch it (pass --lake with another folder)",
        lake.display()
    )]
    NotDemoLake {
        lake: PathBuf,
        id: String,
        source_url: String,
    },
    #[error("{} exists and is not a lake; the demo does not touch it (pass --lake with another folder)", .0.display())]
    NotALake(PathBuf),
    #[error("preparing the demo lake at {}: {source}", path.display())]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Emulator(#[from] EmulatorError),
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error(transparent)]
    Lake(#[from] LakeError),
}

/// The file that marks a folder as the demo's.
pub const MARKER: &str = ".mdesnap-demo";

/// Makes (or finds) the demo lake, telling `say` what it does.
pub async fn prepare(
    options: &DemoOptions,
    say: &(dyn Fn(&str) + Sync),
) -> Result<Prepared, DemoError> {
    let existing = existing_demo(&options.lake)?;
    match existing {
        Some(n) if n > 0 && !options.fresh => {
            say(&format!(
                "reusing the demo lake {} ({n} snapshots); --fresh makes it again",
                options.lake.display()
            ));
            return Ok(Prepared::Reused(n));
        }
        Some(n) => {
            say(&if n > 0 {
                format!("replacing the demo lake {}", options.lake.display())
            } else {
                format!(
                    "making again the demo lake {}, stopped before its first snapshot",
                    options.lake.display()
                )
            });
            std::fs::remove_dir_all(&options.lake).map_err(|source| DemoError::Remove {
                path: options.lake.clone(),
                source,
            })?;
        }
        None => {}
    }
    Lake::local(&options.lake).create()?;
    let marker = options.lake.join(MARKER);
    std::fs::write(&marker, "a lake made by `mdesnap demo`\n").map_err(|source| {
        DemoError::Remove {
            path: marker.clone(),
            source,
        }
    })?;
    let made = make(options, say).await?;
    Ok(if existing.is_some() {
        Prepared::Replaced(made)
    } else {
        Prepared::Created(made)
    })
}

/// The number of snapshots of the demo lake in `lake` (0 when a demo stopped before its
/// first), `None` when the folder is missing or empty; an error when it holds anything
/// else.
fn existing_demo(lake: &Path) -> Result<Option<usize>, DemoError> {
    let Ok(mut entries) = std::fs::read_dir(lake) else {
        return Ok(None);
    };
    if entries.next().is_none() {
        return Ok(None);
    }
    let scan = scan_lake(lake)?;
    if lake.join(MARKER).is_file() {
        return Ok(Some(scan.snapshots.len()));
    }
    match scan.snapshots.last() {
        Some(m) => Err(DemoError::NotDemoLake {
            lake: lake.to_path_buf(),
            id: m.id.to_string(),
            source_url: m.source.clone(),
        }),
        None => Err(DemoError::NotALake(lake.to_path_buf())),
    }
}

/// Starts the emulator and ingests one snapshot a day.
async fn make(options: &DemoOptions, say: &(dyn Fn(&str) + Sync)) -> Result<usize, DemoError> {
    let config = EmulatorConfig {
        bind: ([127, 0, 0, 1], 0).into(),
        machines: options.machines,
        // The emulator is ours: its limits need not slow the demo down.
        calls_per_minute: 100_000,
        calls_per_hour: 1_000_000,
        ..EmulatorConfig::default()
    };
    let fleet = Fleet::new(FleetConfig {
        seed: config.seed,
        machines: config.machines,
        churn: config.churn,
        start: config.start,
    });
    let emulator = Emulator::start(config.clone()).await?;
    let url = emulator.url();
    say(&format!(
        "emulating a tenant of {} machines at {url}; taking {} daily snapshots into {}",
        options.machines,
        options.days,
        options.lake.display()
    ));
    let mut ingest_options = IngestOptions::new(
        &options.lake,
        Endpoints {
            api: url.clone(),
            authority: url.clone(),
            scope: "https://api.securitycenter.microsoft.com/.default".into(),
            graph: url.clone(),
            graph_scope: "https://graph.microsoft.com/.default".into(),
        },
        config.tenant_id.clone(),
        Credentials::ClientSecret {
            client_id: config.client_id.clone(),
            secret: Secret::new(config.client_secret.clone()),
        },
    );
    ingest_options.users = fleet.user_names().into_iter().take(5).collect();
    ingest_options.domains = fleet.domain_names().into_iter().take(3).collect();
    ingest_options.security_states = true;
    ingest_options.limits = Limits {
        per_minute: 100_000,
        per_hour: 1_000_000,
        ..Limits::default()
    };
    ingest_options.timeout = Duration::from_secs(30);
    ingest_options.cancel = options.cancel.clone();
    let days = options.days.max(1);
    for day in 0..days {
        if day > 0 {
            emulator.advance(1)?;
        }
        ingest_options.started_at = Some(emulator.now());
        let report = ingest(&ingest_options, &|_| {}).await?;
        say(&format!(
            "day {}/{days}: snapshot {}: {}",
            day + 1,
            report.manifest.id,
            rows_summary(&report.manifest)
        ));
    }
    Ok(days as usize)
}

/// What the REPL shows after its banner in the demo.
pub const GUIDE: &str = "\
Try (SQL ends with ';', OData runs on Enter):
  SELECT health_status, count(*) FROM machines GROUP BY 1 ORDER BY 2 DESC;
  machines?$filter=riskScore eq 'High'&$select=computerDnsName,osPlatform&$top=5
  SELECT snapshot, count(*) FROM machines_history GROUP BY 1 ORDER BY 1;
  SELECT snapshot, field, count(*) FROM machine_changes GROUP BY 1, 2 ORDER BY 1, 3 DESC;
  \\diff   \\dt   \\d machines   \\snapshots   \\? for everything";

/// The statements the demo runs when stdin is not a terminal.
pub const SAMPLE_QUERIES: &[&str] = &[
    "SELECT health_status, count(*) AS machines FROM machines GROUP BY 1 ORDER BY 2 DESC, 1;",
    "machines?$filter=riskScore eq 'High' and osPlatform eq 'Windows11'&$select=computerDnsName,riskScore,exposureLevel&$orderby=computerDnsName&$top=5",
    "SELECT arrow_cast(snapshot, 'Utf8') AS snapshot, count(*) AS machines, count(*) FILTER (WHERE risk_score = 'High') AS high_risk FROM machines_history GROUP BY 1 ORDER BY 1;",
    "SELECT m.computer_dns_name, count(*) AS addresses FROM machines m JOIN ip_addresses i ON i.machine_id = m.id GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 5;",
    "SELECT arrow_cast(snapshot, 'Utf8') AS snapshot, field, count(*) AS changes FROM machine_changes WHERE change = 'changed' GROUP BY 1, 2 ORDER BY 1, 3 DESC, 2 LIMIT 8;",
    "\\dt",
];
