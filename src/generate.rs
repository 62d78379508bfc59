//! `mdesnap generate`: writes a synthetic lake from the deterministic fleet, one
//! snapshot a day, through the same path the ingester uses (API records -> decoder ->
//! snapshot writer). Snapshot d is taken at the fleet's day d, so ids and dates follow
//! the fleet's clock, never the wall clock.

use std::path::Path;

use chrono::{DateTime, Duration, Utc};

use crate::decode::{MachineDecoder, PairBuilder, SecurityStateDecoder};
use crate::error::{Error, Result};
use crate::fleet::{Fleet, FleetConfig};
use crate::lake::{SnapshotWriter, WriterOptions, scan_lake};
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
}

/// Writes the snapshots; `progress` hears of each one committed.
pub fn generate(
    lake: &Path,
    options: &GenerateOptions,
    mut progress: impl FnMut(&Manifest),
) -> Result<Vec<Manifest>> {
    if options.machines < 5 {
        return Err(Error::Generator(
            "--machines must be at least 5 (the documentation's five samples are in every fleet)",
        ));
    }
    if !(0.0..=1.0).contains(&options.churn) || options.churn.is_nan() {
        return Err(Error::Generator("--churn must be between 0 and 1"));
    }
    let mut config = FleetConfig {
        seed: options.seed,
        machines: options.machines,
        churn: options.churn,
        start: options.start.unwrap_or_else(FleetConfig::default_start),
    };
    let mut first_day = 0u32;
    if lake.is_dir() {
        let scan = scan_lake(lake)?;
        let count = scan.snapshots.len() + scan.broken.len();
        if count > 0 && !options.append {
            return Err(Error::LakeNotEmpty {
                lake: lake.to_path_buf(),
                count,
            });
        }
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
                    config.start = t.map_or(config.start, |t| t + Duration::days(1));
                }
            }
        }
    }
    let mut fleet = Fleet::at_day(config.clone(), first_day);
    let mut written = Vec::with_capacity(options.days as usize);
    for i in 0..options.days {
        if i > 0 {
            fleet.advance();
        }
        let manifest = write_day(lake, &fleet, options.wait)?;
        progress(&manifest);
        written.push(manifest);
    }
    Ok(written)
}

/// Where the fleet of `latest` continues: its start and the day after it, if it was
/// generated with the same seed, size and churn.
fn continuation(latest: &Manifest, config: &FleetConfig) -> Option<(DateTime<Utc>, u32)> {
    let g = latest.generator.as_ref()?;
    let same = g.seed == config.seed && g.machines == config.machines && g.churn == config.churn;
    same.then(|| Some((parse_time(&g.start).ok()?, g.day + 1)))?
}

/// Writes the fleet's current day as one snapshot.
pub fn write_day(lake: &Path, fleet: &Fleet, wait: bool) -> Result<Manifest> {
    let config = fleet.config();
    let mut options = WriterOptions::new(fleet.now(), "generate", &Table::ALL);
    options.finished_at = Some(fleet.now());
    options.wait = wait;
    options.generator = Some(GeneratorInfo {
        seed: config.seed,
        machines: config.machines,
        churn: config.churn,
        start: format_time(config.start),
        day: fleet.day(),
    });
    let mut writer = SnapshotWriter::create(lake, options)?;

    let mut machines = MachineDecoder::default();
    let mut states = SecurityStateDecoder::default();
    for (i, m) in fleet.machines().iter().enumerate() {
        machines.push(i, &fleet.machine_record(m))?;
        states.push(i, &fleet.security_state_record(m))?;
        if machines.len() >= CHUNK {
            let (mb, ib) = machines.finish();
            writer.append(Table::Machines, &mb)?;
            writer.append(Table::IpAddresses, &ib)?;
            writer.append(Table::SecurityStates, &states.finish())?;
        }
    }
    let (mb, ib) = machines.finish();
    writer.append(Table::Machines, &mb)?;
    writer.append(Table::IpAddresses, &ib)?;
    writer.append(Table::SecurityStates, &states.finish())?;

    let mut users = PairBuilder::new(Table::UserMachines);
    for (user, id) in fleet.user_pairs() {
        users.push(&user, id);
        if users.len() >= CHUNK {
            writer.append(Table::UserMachines, &users.finish())?;
        }
    }
    writer.append(Table::UserMachines, &users.finish())?;

    let mut domains = PairBuilder::new(Table::DomainMachines);
    for (domain, id) in fleet.domain_pairs(DOMAIN_CAP) {
        domains.push(&domain, id);
        if domains.len() >= CHUNK {
            writer.append(Table::DomainMachines, &domains.finish())?;
        }
    }
    writer.append(Table::DomainMachines, &domains.finish())?;
    Ok(writer.commit()?)
}
