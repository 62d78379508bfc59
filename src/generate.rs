//! `mdesnap generate`: writes a synthetic lake from the deterministic fleet, one
//! snapshot a day, through the same path the ingester uses (API records -> decoder ->
//! snapshot writer). Snapshot d is taken at the fleet's day d, so ids and dates follow
//! the fleet's clock, never the wall clock.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

use crate::cancel::Cancel;
use crate::decode::{MachineDecoder, PairBuilder, SecurityStateDecoder};
use crate::error::{Error, Result};
use crate::fleet::{Fleet, FleetConfig};
use crate::lake::{
    Lake, LakeLock, LakeScan, SnapshotWriter, WriterOptions, remove_leftovers, scan_lake,
    update_manifest_cache,
};
use crate::schema::Table;
use crate::snapshot::{GeneratorInfo, Manifest, format_time, parse_time};

/// Rows per batch handed to the writer.
const CHUNK: usize = 8192;

/// The service caps the domain endpoint at this many machines.
pub const DOMAIN_CAP: usize = 500;

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub seed: u64,
    pub machines: u64,
    pub days: u32,
    pub churn: f64,
    /// Day 0; with `append` and no start, the fleet of the lake's latest generated
    /// snapshot carries on.
    pub start: Option<DateTime<Utc>>,
    pub append: bool,
    pub wait: bool,
    /// Checked between machines and days: once set, the snapshot being written is
    /// dropped (nothing of it stays) and `generate` returns [`Error::Interrupted`].
    pub cancel: Cancel,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            seed: 42,
            machines: 1000,
            days: 7,
            churn: FleetConfig::DEFAULT_CHURN,
            start: None,
            append: false,
            wait: false,
            cancel: Cancel::new(),
        }
    }
}

/// The most snapshots one run writes (a century of days).
pub const MAX_DAYS: u32 = 36_500;

/// Writes the snapshots; `progress` hears of each one committed.
///
/// The lake's lock is held for the whole run, so the "lake is empty" check and every
/// commit see the same lake.
pub fn generate(
    lake: impl Into<Lake>,
    options: &GenerateOptions,
    mut progress: impl FnMut(&Manifest),
) -> Result<Vec<Manifest>> {
    if options.days > MAX_DAYS {
        return Err(Error::Generator("--days must be at most 36500"));
    }
    let mut config = FleetConfig {
        seed: options.seed,
        machines: options.machines,
        churn: options.churn,
        start: options.start.unwrap_or_else(FleetConfig::default_start),
    };
    config.validate(options.days).map_err(Error::Generator)?;
    let lake = lake.into();
    lake.create()?;
    let lock = Arc::new(LakeLock::acquire(&lake, options.wait)?);
    let mut scan = scan_lake(&lake)?;
    let count = scan.snapshots.len() + scan.broken.len();
    if count > 0 && !options.append {
        return Err(Error::LakeNotEmpty {
            lake: lake.to_string(),
            count,
        });
    }
    let removed = remove_leftovers(&lake, &scan)?;
    if !removed.is_empty() {
        tracing::info!("removed {} leftovers of interrupted writes", removed.len());
    }
    let mut first_day = 0u32;
    if options.start.is_none()
        && let Some(latest) = scan.snapshots.last()
    {
        match continuation(latest, &config) {
            Some((start, day)) => {
                config.start = start;
                first_day = day;
            }
            None => {
                // Not this fleet: a new one, starting the day after the latest.
                let t = latest.snapshot_id().map(|id| id.time()).ok();
                config.start = t
                    .and_then(|t| t.checked_add_signed(Duration::days(1)))
                    .unwrap_or(config.start);
            }
        }
        config
            .validate(first_day.saturating_add(options.days))
            .map_err(Error::Generator)?;
    }
    let cancel = &options.cancel;
    let mut fleet = Fleet::at_day_cancellable(config.clone(), first_day, cancel)?;
    let mut written = Vec::with_capacity(options.days as usize);
    for i in 0..options.days {
        cancel.check()?;
        if i > 0 {
            fleet.advance();
        }
        let manifest = write_day(&lake, &lock, &fleet, &scan, cancel)?;
        progress(&manifest);
        scan.snapshots.push(manifest.clone());
        if (i + 1) % 16 == 0 || i + 1 == options.days {
            update_manifest_cache(&lake, false);
        }
        written.push(manifest);
    }
    Ok(written)
}

/// Where the fleet of `latest` continues: its start and the day after it, if it was
/// generated with the same seed, size and churn.
fn continuation(latest: &Manifest, config: &FleetConfig) -> Option<(DateTime<Utc>, u32)> {
    let g = latest.generator.as_ref()?;
    let same = g.seed == config.seed && g.machines == config.machines && g.churn == config.churn;
    same.then(|| Some((parse_time(&g.start).ok()?, g.day.checked_add(1)?)))?
}

/// Writes the fleet's current day as one snapshot, under the lake's `lock`; `scan` is
/// the lake as this run has it (read once, then each commit added).
fn write_day(
    lake: &Lake,
    lock: &Arc<LakeLock>,
    fleet: &Fleet,
    scan: &LakeScan,
    cancel: &Cancel,
) -> Result<Manifest> {
    let config = fleet.config();
    let mut options = WriterOptions::new(fleet.now(), "generate", &Table::ALL);
    options.finished_at = Some(fleet.now());
    options.generator = Some(GeneratorInfo {
        seed: config.seed,
        machines: config.machines,
        churn: config.churn,
        start: format_time(config.start),
        day: fleet.day(),
    });
    let mut writer = SnapshotWriter::create_scanned(lake.clone(), lock, options, scan)?;

    let mut machines = MachineDecoder::default();
    let mut states = SecurityStateDecoder::default();
    for (i, m) in fleet.machines().iter().enumerate() {
        machines.push(i, &fleet.machine_record(m))?;
        states.push(i, &fleet.security_state_record(m))?;
        if machines.len() >= CHUNK {
            cancel.check()?;
            let (mb, ib) = machines.finish()?;
            writer.append(Table::Machines, &mb)?;
            writer.append(Table::IpAddresses, &ib)?;
            writer.append(Table::SecurityStates, &states.finish()?)?;
        }
    }
    let (mb, ib) = machines.finish()?;
    writer.append(Table::Machines, &mb)?;
    writer.append(Table::IpAddresses, &ib)?;
    writer.append(Table::SecurityStates, &states.finish()?)?;

    let mut users = PairBuilder::new(Table::UserMachines);
    for (user, id) in fleet.user_pairs() {
        users.push(&user, id);
        if users.len() >= CHUNK {
            writer.append(Table::UserMachines, &users.finish()?)?;
        }
    }
    writer.append(Table::UserMachines, &users.finish()?)?;

    let mut domains = PairBuilder::new(Table::DomainMachines);
    for (domain, id) in fleet.domain_pairs(DOMAIN_CAP) {
        domains.push(&domain, id);
        if domains.len() >= CHUNK {
            writer.append(Table::DomainMachines, &domains.finish()?)?;
        }
    }
    writer.append(Table::DomainMachines, &domains.finish()?)?;
    // The last moment to stop: after the commit the snapshot is whole and stays.
    cancel.check()?;
    Ok(writer.commit()?)
}
