//! One deterministic synthetic tenant that evolves day by day: what `generate` writes
//! and what the emulator serves.
//!
//! Day 0 is the fleet's start; day d is `start + d` days, on the fleet's clock, never
//! the wall clock. Every random choice comes from [`Rng`] streams derived from the seed
//! and the machine's serial number and the day, so a machine's story does not depend on
//! iteration order and the same flags give the same fleet anywhere.
//!
//! What evolves: machines onboard and retire (a retired machine stops reporting, turns
//! `Inactive` after seven days and leaves the service's list 180 days after it was last
//! seen); `lastSeen` advances for reporting machines; health, risk, exposure, tags,
//! addresses, agent and OS versions change for about `churn` of the machines a day.
//! About 1% of devices are discovered but not onboarded, with the sparse data the
//! service has for them. The five machines of the documentation's samples are part of
//! every fleet, their dates moved onto the fleet's clock.

mod names;

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{Map, Value, json};

pub use crate::rng::Rng;

use crate::cancel::{Cancel, Interrupted};

use names::{Class, GROUPS, OSES, Os, TAGS};

/// How the fleet is made.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetConfig {
    pub seed: u64,
    /// Machines on day 0, the five documented samples included.
    pub machines: u64,
    /// Share of machines that change in a day (0 to 1).
    pub churn: f64,
    /// Day 0.
    pub start: DateTime<Utc>,
}

impl FleetConfig {
    /// The default start: 2026-01-01T07:00:00Z.
    pub fn default_start() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 7, 0, 0)
            .single()
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    /// The default churn.
    pub const DEFAULT_CHURN: f64 = 0.03;

    /// The most machines a fleet may start with: a large tenant, held in memory.
    pub const MAX_MACHINES: u64 = 5_000_000;

    /// Checks the settings for a fleet that will be moved on `days` days; the message
    /// names the flag at fault.
    pub fn validate(&self, days: u32) -> Result<(), &'static str> {
        if self.machines < 5 {
            return Err(
                "--machines must be at least 5 (the documentation's five samples are in every fleet)",
            );
        }
        if self.machines > Self::MAX_MACHINES {
            return Err("--machines must be at most 5000000");
        }
        if !(0.0..=1.0).contains(&self.churn) {
            return Err("--churn must be a number from 0 to 1");
        }
        // The fleet's clock counts 100 ns ticks in an i64 and its dates are years of
        // four digits: day 0 and the last day must both stand between 1970 and 9999.
        let earliest = Utc.timestamp_opt(0, 0).single();
        let latest = Utc.with_ymd_and_hms(9999, 1, 1, 0, 0, 0).single();
        let last = self
            .start
            .checked_add_signed(Duration::days(i64::from(days)));
        match (earliest, latest, last) {
            (Some(e), Some(l), Some(last)) if self.start >= e && last < l => Ok(()),
            _ => Err(
                "the fleet's dates, from --start over all its days, must stay between 1970 and 9999",
            ),
        }
    }
}

const TICKS_PER_SEC: i64 = 10_000_000;
const TICKS_PER_DAY: i64 = 86_400 * TICKS_PER_SEC;

// Purposes of random streams.
const P_NEW: u64 = 1;
const P_DAY: u64 = 2;
const P_ONBOARD: u64 = 3;
const P_ID: u64 = 4;
const P_MUTATE: u64 = 5;

/// How long the service keeps listing a machine after it was last seen, in days.
pub const RETENTION_DAYS: i64 = 180;

#[derive(Debug, Clone)]
struct Nic {
    ip: String,
    mac: Option<String>,
    kind: &'static str,
    up: bool,
}

/// One machine's state on the current day.
#[derive(Debug, Clone)]
pub struct Machine {
    serial: u64,
    id: String,
    dns: Option<String>,
    first_seen: i64,
    last_seen: i64,
    os: Option<&'static Os>,
    version: Option<String>,
    os_build: Option<i64>,
    x86: bool,
    arm: bool,
    agent: Option<String>,
    health: &'static str,
    device_value: &'static str,
    group: usize,
    risk: Option<&'static str>,
    exposure: Option<&'static str>,
    aad: Option<String>,
    tags: Vec<&'static str>,
    av: Option<&'static str>,
    onboarding: &'static str,
    managed_by: &'static str,
    duplicate: bool,
    nics: Vec<Nic>,
    external_ip: Option<String>,
    vm: Option<Value>,
    users: Vec<String>,
    domains: Vec<u64>,
    retired: bool,
    ubr: i64,
    /// The documentation sample this machine is, as its record with dates to replace.
    sample: Option<Map<String, Value>>,
}

impl Machine {
    /// The machine's id (40 hex digits).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The user names logged on to it.
    pub fn users(&self) -> &[String] {
        &self.users
    }

    /// Its device group.
    pub fn rbac_group_id(&self) -> i64 {
        GROUPS[self.group].0
    }

    /// Its `osProcessor`: none for a device without a sensor.
    fn processor(&self) -> Option<&'static str> {
        if self.onboarding != "Onboarded" {
            None
        } else if self.x86 {
            Some("x86")
        } else if self.arm {
            Some("arm64")
        } else {
            Some("x64")
        }
    }

    /// Its `computerDnsName`.
    pub fn dns_name(&self) -> Option<&str> {
        self.dns.as_deref()
    }
}

/// The fleet on one day.
#[derive(Debug, Clone)]
pub struct Fleet {
    config: FleetConfig,
    day: u32,
    machines: Vec<Machine>,
    next_serial: u64,
    users: u64,
}

impl Fleet {
    /// The fleet on day 0.
    pub fn new(config: FleetConfig) -> Self {
        let users = (config.machines * 2 / 3).max(10);
        let mut fleet = Fleet {
            config,
            day: 0,
            machines: Vec::new(),
            next_serial: 0,
            users,
        };
        let samples = samples();
        for (k, sample) in samples.into_iter().enumerate() {
            let m = fleet.sample_machine(k, sample);
            fleet.machines.push(m);
        }
        let randoms = fleet
            .config
            .machines
            .saturating_sub(fleet.machines.len() as u64);
        for _ in 0..randoms {
            let m = fleet.new_machine(true);
            fleet.machines.push(m);
        }
        fleet
    }

    /// The fleet `day` days after day 0 (simulated day by day from day 0).
    pub fn at_day(config: FleetConfig, day: u32) -> Self {
        let mut fleet = Fleet::new(config);
        while fleet.day < day {
            fleet.advance();
        }
        fleet
    }

    /// [`at_day`](Self::at_day), stopping between days once `cancel` is set.
    pub fn at_day_cancellable(
        config: FleetConfig,
        day: u32,
        cancel: &Cancel,
    ) -> Result<Self, Interrupted> {
        let mut fleet = Fleet::new(config);
        while fleet.day < day {
            cancel.check()?;
            fleet.advance();
        }
        Ok(fleet)
    }

    /// The configuration.
    pub fn config(&self) -> &FleetConfig {
        &self.config
    }

    /// The current day number.
    pub fn day(&self) -> u32 {
        self.day
    }

    /// The fleet clock: day 0 plus the current day.
    pub fn now(&self) -> DateTime<Utc> {
        self.config.start + Duration::days(i64::from(self.day))
    }

    fn now_ticks(&self) -> i64 {
        let now = self.now();
        now.timestamp() * TICKS_PER_SEC + i64::from(now.timestamp_subsec_nanos() / 100)
    }

    /// The machines the service lists today, in the order it lists them.
    pub fn machines(&self) -> &[Machine] {
        &self.machines
    }

    fn churn_ppm(&self) -> u64 {
        (self.config.churn.clamp(0.0, 1.0) * 1_000_000.0).round() as u64
    }

    /// Moves the fleet on by one day.
    pub fn advance(&mut self) {
        self.day += 1;
        let now = self.now_ticks();
        let churn = self.churn_ppm();
        // A tenth of the churn is turnover: as many machines onboard as retire.
        let turnover = churn / 10;
        let seed = self.config.seed;
        let day = u64::from(self.day);
        for m in &mut self.machines {
            let mut rng = Rng::derive(seed, &[P_DAY, m.serial, day]);
            step(m, &mut rng, now, churn, turnover);
        }
        self.machines
            .retain(|m| m.sample.is_some() || now - m.last_seen < RETENTION_DAYS * TICKS_PER_DAY);
        let mut rng = Rng::derive(seed, &[P_ONBOARD, day]);
        let expected = self.config.machines * turnover;
        let mut count = expected / 1_000_000;
        if rng.below(1_000_000) < expected % 1_000_000 {
            count += 1;
        }
        for _ in 0..count {
            let m = self.new_machine(false);
            self.machines.push(m);
        }
    }

    /// Changes the fleet now, between two calls of a pager: removes `n` machines and
    /// onboards `n` new ones, chosen by `salt`. The samples are never removed.
    pub fn mutate(&mut self, n: usize, salt: u64) {
        let mut rng = Rng::derive(self.config.seed, &[P_MUTATE, u64::from(self.day), salt]);
        for _ in 0..n {
            let candidates = self.machines.len().saturating_sub(5);
            if candidates > 0 {
                let i = 5 + rng.below(candidates as u64) as usize;
                self.machines.remove(i);
            }
            let m = self.new_machine(false);
            let at = rng.below(self.machines.len() as u64 + 1) as usize;
            self.machines.insert(at, m);
        }
    }

    fn group_index(rng: &mut Rng) -> usize {
        let weighted: Vec<(u64, usize)> =
            GROUPS.iter().enumerate().map(|(i, g)| (g.2, i)).collect();
        *rng.weighted(&weighted)
    }

    /// A machine of the random part of the fleet. `initial`: part of day 0's fleet
    /// (with a history before it), else onboarded today.
    fn new_machine(&mut self, initial: bool) -> Machine {
        let serial = self.next_serial;
        self.next_serial += 1;
        let seed = self.config.seed;
        let mut rng = Rng::derive(seed, &[P_NEW, serial]);
        let id = Rng::derive(seed, &[P_ID, serial]).hex(40);
        let now = self.now_ticks();
        let discovered = rng.chance(10_000);
        let os: &'static Os = rng.weighted(OSES);
        let (_, version, build) = *rng.weighted(
            &os.versions
                .iter()
                .map(|(w, v, b)| (*w, (0u64, *v, *b)))
                .collect::<Vec<_>>(),
        );
        let windows = os.platform.starts_with("Windows");
        let site = rng.below(12);
        let users = match os.class {
            Class::Server | Class::Linux => 1 + rng.below(2),
            _ => 1 + rng.below(3),
        };
        let pool = self.users;
        let users: Vec<String> = (0..users)
            .map(|_| names::user_name(rng.below(pool)))
            .collect();
        let dns = match os.class {
            Class::Client => {
                if rng.chance(500_000) {
                    Some(format!("desktop-{}", alnum(&mut rng, 7)))
                } else {
                    Some(format!(
                        "lt-{}.corp.contoso.com",
                        users[0].replace('.', "-")
                    ))
                }
            }
            Class::Server => Some(format!(
                "srv-{}-{:03}.corp.contoso.com",
                rng.pick(names::SERVER_ROLES),
                rng.below(1000)
            )),
            Class::Linux => Some(format!(
                "{}-{:02}",
                rng.pick(names::LINUX_ROLES),
                rng.below(100)
            )),
            Class::Mac => Some(format!("mac-{}", users[0].replace('.', "-"))),
            Class::Mobile => Some(format!("phone-{}", users[0].replace('.', "-"))),
        };
        let (first_seen, last_seen, retired) = if initial {
            let stale = rng.chance(80_000);
            let last = if stale {
                now - rng.range(8 * TICKS_PER_DAY as u64, 170 * TICKS_PER_DAY as u64) as i64
            } else {
                now - rng.below(20 * 3600 * TICKS_PER_SEC as u64) as i64
            };
            let first = last - rng.range(TICKS_PER_DAY as u64, 900 * TICKS_PER_DAY as u64) as i64;
            (first, last, stale)
        } else {
            let last = now - rng.below(6 * 3600 * TICKS_PER_SEC as u64) as i64;
            (
                last - rng.below(3600 * TICKS_PER_SEC as u64) as i64,
                last,
                false,
            )
        };
        let x86 = windows && os.class == Class::Client && rng.chance(20_000);
        let arm =
            !x86 && (os.class == Class::Mac || (os.class == Class::Client && rng.chance(30_000)));
        let nics = make_nics(&mut rng, site, os.class);
        let group = if os.class == Class::Server {
            if rng.chance(300_000) { 5 } else { 6 }
        } else {
            Self::group_index(&mut rng)
        };
        let domains = (0..rng.range(2, 5))
            .map(|_| {
                let cap = rng.below(names::DOMAIN_COUNT) + 1;
                rng.below(cap)
            })
            .collect();
        let device_value = *rng.weighted(DEVICE_VALUES);
        let mut m = Machine {
            serial,
            id,
            dns,
            first_seen,
            last_seen,
            os: Some(os),
            version: Some(version.to_string()),
            os_build: build,
            x86,
            arm,
            agent: None,
            health: if retired { "Inactive" } else { "Active" },
            device_value,
            group,
            risk: Some(*rng.weighted(RISKS)),
            exposure: Some(*rng.weighted(EXPOSURES)),
            aad: (os.class == Class::Client && rng.chance(700_000)).then(|| rng.guid()),
            tags: Vec::new(),
            av: if windows {
                Some(*rng.weighted(AV_STATUSES))
            } else {
                None
            },
            onboarding: "Onboarded",
            managed_by: if os.class == Class::Client && rng.chance(600_000) {
                "Intune"
            } else {
                "Unknown"
            },
            duplicate: rng.chance(5_000),
            nics,
            external_ip: Some(format!("167.220.{}.{}", 10 + site, rng.range(2, 254))),
            vm: None,
            users,
            domains,
            retired,
            ubr: rng.range(1000, 5000) as i64,
            sample: None,
        };
        m.agent = Some(agent_version(&mut rng, m.os_build));
        if !retired && rng.chance(40_000) {
            m.health = *rng.pick(&[
                "ImpairedCommunication",
                "NoSensorData",
                "NoSensorDataImpairedCommunication",
            ]);
        }
        for _ in 0..rng.below(3) {
            if rng.chance(400_000) {
                let t = *rng.pick(TAGS);
                if !m.tags.contains(&t) {
                    m.tags.push(t);
                }
            }
        }
        if os.class == Class::Server && rng.chance(300_000) {
            let sub = *rng.pick(names::SUBSCRIPTIONS);
            let name = m
                .dns
                .as_deref()
                .unwrap_or("vm")
                .split('.')
                .next()
                .unwrap_or("vm")
                .to_string();
            m.vm = Some(json!({
                "vmId": rng.guid(),
                "cloudProvider": "Azure",
                "resourceId": format!("/subscriptions/{sub}/resourceGroups/contoso-rg/providers/Microsoft.Compute/virtualMachines/{name}"),
                "subscriptionId": sub,
            }));
        }
        if discovered {
            make_discovered(&mut m, &mut rng);
        }
        m
    }

    /// Sample `k` of the documentation, its dates moved onto the fleet's clock: the
    /// newest report becomes a few hours before day 0, and the older ones keep their
    /// distance to it (bounded, so they stay within the service's retention).
    fn sample_machine(&mut self, k: usize, record: Map<String, Value>) -> Machine {
        let serial = self.next_serial;
        self.next_serial += 1;
        let now = self.now_ticks();
        let ticks = |key: &str| {
            record
                .get(key)
                .and_then(Value::as_str)
                .and_then(crate::decode::parse_timestamp_micros)
                .map_or(0, |us| us * 10)
        };
        // Offsets before day 0 per sample: reporting, inactive (11 days), and so on.
        const BEFORE_HOURS: [i64; 5] = [2, 11 * 24, 5, 30, 40];
        let last =
            now - BEFORE_HOURS[k % 5] * 3600 * TICKS_PER_SEC - (ticks("lastSeen") % TICKS_PER_SEC);
        let first = last - (ticks("lastSeen") - ticks("firstSeen")).clamp(0, 900 * TICKS_PER_DAY);
        let health = match record.get("healthStatus").and_then(Value::as_str) {
            Some("Inactive") => "Inactive",
            Some("ImpairedCommunication") => "ImpairedCommunication",
            Some("NoSensorData") => "NoSensorData",
            _ => "Active",
        };
        let id = record
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let str_of = |key: &str| record.get(key).and_then(Value::as_str).map(str::to_string);
        let build = record.get("osBuild").and_then(Value::as_i64);
        let users = vec![format!("user{}", k + 1), names::user_name(k as u64)];
        Machine {
            serial,
            id,
            dns: str_of("computerDnsName"),
            first_seen: first,
            last_seen: last,
            os: None,
            version: str_of("version"),
            os_build: build,
            x86: false,
            arm: false,
            agent: str_of("agentVersion"),
            health,
            device_value: "Normal",
            group: 0,
            risk: None,
            exposure: None,
            aad: str_of("aadDeviceId"),
            tags: Vec::new(),
            av: None,
            onboarding: "Onboarded",
            managed_by: "Unknown",
            duplicate: false,
            nics: Vec::new(),
            external_ip: None,
            vm: None,
            users,
            domains: vec![0, 1 + k as u64, 10],
            retired: health == "Inactive",
            ubr: 1000 + 137 * k as i64,
            sample: Some(record),
        }
    }

    /// The machine as the service serialises it: the live key order, explicit nulls,
    /// timestamps with up to seven fractional digits.
    pub fn machine_record(&self, m: &Machine) -> Value {
        if let Some(sample) = &m.sample {
            let mut r = sample.clone();
            r.insert(
                "firstSeen".into(),
                Value::String(format_ticks(m.first_seen)),
            );
            r.insert("lastSeen".into(), Value::String(format_ticks(m.last_seen)));
            return Value::Object(r);
        }
        let platform = m.os.map(|o| o.platform);
        let windows = platform.is_some_and(|p| p.starts_with("Windows"));
        let last_ip = m
            .nics
            .iter()
            .find(|n| n.up && n.kind != "SoftwareLoopback" && !n.ip.contains(':'))
            .map(|n| n.ip.clone());
        let (group_id, group_name, _) = GROUPS[m.group];
        let processor = m.processor();
        let arch = processor.map(|p| if p == "x86" { "32-bit" } else { "64-bit" });
        let ips: Vec<Value> = m
            .nics
            .iter()
            .map(|n| {
                json!({
                    "ipAddress": n.ip,
                    "macAddress": n.mac,
                    "type": n.kind,
                    "operationalStatus": if n.up { "Up" } else { "Down" },
                })
            })
            .collect();
        let mut r = Map::new();
        r.insert("id".into(), json!(m.id));
        r.insert("mergedIntoMachineId".into(), Value::Null);
        r.insert("isPotentialDuplication".into(), json!(m.duplicate));
        r.insert("isExcluded".into(), json!(false));
        r.insert("exclusionReason".into(), Value::Null);
        r.insert("computerDnsName".into(), json!(m.dns));
        r.insert("firstSeen".into(), json!(format_ticks(m.first_seen)));
        r.insert("lastSeen".into(), json!(format_ticks(m.last_seen)));
        r.insert("osPlatform".into(), json!(platform));
        r.insert("osVersion".into(), Value::Null);
        r.insert("osProcessor".into(), json!(processor));
        r.insert("version".into(), json!(m.version));
        r.insert("lastIpAddress".into(), json!(last_ip));
        r.insert("lastExternalIpAddress".into(), json!(m.external_ip));
        r.insert("agentVersion".into(), json!(m.agent));
        r.insert("osBuild".into(), json!(m.os_build));
        r.insert("healthStatus".into(), json!(m.health));
        r.insert("deviceValue".into(), json!(m.device_value));
        r.insert("rbacGroupId".into(), json!(group_id));
        r.insert("rbacGroupName".into(), json!(group_name));
        r.insert("riskScore".into(), json!(m.risk));
        r.insert("exposureLevel".into(), json!(m.exposure));
        r.insert("isAadJoined".into(), json!(m.aad.is_some()));
        r.insert("aadDeviceId".into(), json!(m.aad));
        r.insert("machineTags".into(), json!(m.tags));
        r.insert(
            "defenderAvStatus".into(),
            json!(if windows { m.av } else { None }),
        );
        r.insert("onboardingStatus".into(), json!(m.onboarding));
        r.insert("osArchitecture".into(), json!(arch));
        r.insert("managedBy".into(), json!(m.managed_by));
        r.insert("managedByStatus".into(), json!("Unknown"));
        r.insert("ipAddresses".into(), Value::Array(ips));
        r.insert("vmMetadata".into(), m.vm.clone().unwrap_or(Value::Null));
        Value::Object(r)
    }

    /// The machine's MachineSecurityState record (contract section 3).
    pub fn security_state_record(&self, m: &Machine) -> Value {
        if let Some(sample) = &m.sample {
            return security_state(
                m,
                sample.get("osPlatform").and_then(Value::as_str),
                sample.get("osProcessor").and_then(Value::as_str),
                sample.get("defenderAvStatus").and_then(Value::as_str),
            );
        }
        security_state(m, m.os.map(|o| o.platform), m.processor(), m.av)
    }

    /// Every user logged on to a machine of the fleet, sorted.
    pub fn user_names(&self) -> Vec<String> {
        let mut users: Vec<String> = self
            .machines
            .iter()
            .flat_map(|m| m.users.iter().cloned())
            .collect();
        users.sort();
        users.dedup();
        users
    }

    /// The (user, machine id) pairs of the fleet, as the user endpoint answers them.
    pub fn user_pairs(&self) -> Vec<(String, &str)> {
        let mut pairs: Vec<(String, &str)> = self
            .machines
            .iter()
            .flat_map(|m| m.users.iter().map(move |u| (u.clone(), m.id.as_str())))
            .collect();
        pairs.sort();
        pairs.dedup();
        pairs
    }

    /// The (domain, machine id) pairs, at most `cap` machines a domain, as the domain
    /// endpoint answers them (the service caps at 500).
    pub fn domain_pairs(&self, cap: usize) -> Vec<(String, &str)> {
        let mut per_domain: Vec<Vec<&str>> = vec![Vec::new(); names::DOMAIN_COUNT as usize];
        for m in &self.machines {
            let mut seen: Vec<u64> = m.domains.clone();
            seen.sort_unstable();
            seen.dedup();
            for d in seen {
                if let Some(list) = per_domain.get_mut(d as usize)
                    && list.len() < cap
                {
                    list.push(&m.id);
                }
            }
        }
        per_domain
            .into_iter()
            .enumerate()
            .flat_map(|(d, ids)| {
                let name = names::domain_name(d as u64);
                ids.into_iter().map(move |id| (name.clone(), id))
            })
            .collect()
    }

    /// Every domain of the pool.
    pub fn domain_names(&self) -> Vec<String> {
        (0..names::DOMAIN_COUNT).map(names::domain_name).collect()
    }
}

const RISKS: &[(u64, &str)] = &[
    (30, "None"),
    (15, "Informational"),
    (30, "Low"),
    (17, "Medium"),
    (8, "High"),
];
const DEVICE_VALUES: &[(u64, &str)] = &[(85, "Normal"), (10, "High"), (5, "Low")];
const EXPOSURES: &[(u64, &str)] = &[(5, "None"), (40, "Low"), (45, "Medium"), (10, "High")];
const AV_STATUSES: &[(u64, &str)] = &[
    (90, "Updated"),
    (6, "NotUpdated"),
    (2, "NotReporting"),
    (2, "Disabled"),
];

/// The security state of `m`, given what its record says of platform, processor and
/// antivirus.
fn security_state(
    m: &Machine,
    platform: Option<&str>,
    processor: Option<&str>,
    av: Option<&str>,
) -> Value {
    let windows = platform.is_some_and(|p| p.starts_with("Windows"));
    let build = if windows { m.os_build } else { None };
    let arch = match processor {
        Some("x86") => "x86",
        Some("arm64") => "Arm64",
        _ => "Amd64",
    };
    let os_version = build.map(|b| {
        let branch = match b {
            b if b >= 26100 => "ge_release",
            b if b >= 22000 => "ni_release",
            b if b >= 19041 => "vb_release",
            b if b >= 17763 => "rs5_release",
            _ => "rs1_release",
        };
        format!(
            "10.0.{b}.{}.{}fre.{branch}.240301-1200",
            m.ubr,
            arch.to_lowercase()
        )
    });
    let mut attention = Vec::new();
    if m.health.contains("ImpairedCommunication") {
        attention.push("EdrImpairedCommunications");
    }
    if m.health.starts_with("NoSensorData") {
        attention.push("AntivirusNotReporting");
    }
    if windows && av.is_some_and(|s| s != "Updated") {
        attention.push("AntivirusSignatureOutdated");
    }
    json!({
        "id": m.id,
        "build": build,
        "revision": build.map(|_| m.ubr),
        "architecture": arch,
        "osVersion": os_version,
        "propertiesRequireAttention": attention,
    })
}

/// One day in a machine's life.
fn step(m: &mut Machine, rng: &mut Rng, now: i64, churn: u64, turnover: u64) {
    if m.sample.is_some() {
        if !m.retired {
            m.last_seen = now - rng.below(6 * 3600 * TICKS_PER_SEC as u64) as i64;
        }
        return;
    }
    if m.onboarding != "Onboarded" {
        if rng.chance(500_000) {
            m.last_seen = now - rng.below(20 * 3600 * TICKS_PER_SEC as u64) as i64;
        }
        return;
    }
    if !m.retired && rng.below(1_000_000) < turnover {
        m.retired = true;
    }
    if m.retired {
        if now - m.last_seen > 7 * TICKS_PER_DAY {
            m.health = "Inactive";
        }
        return;
    }
    if !m.health.starts_with("NoSensorData") {
        m.last_seen = now - rng.below(20 * 3600 * TICKS_PER_SEC as u64) as i64;
    }
    if rng.below(1_000_000) >= churn {
        return;
    }
    match rng.below(9) {
        0 => {
            m.health = if m.health == "Active" {
                *rng.pick(&[
                    "ImpairedCommunication",
                    "NoSensorData",
                    "NoSensorDataImpairedCommunication",
                ])
            } else {
                "Active"
            };
        }
        1 => m.risk = Some(*rng.weighted(RISKS)),
        2 => m.exposure = Some(*rng.weighted(EXPOSURES)),
        3 => {
            let t = *rng.pick(TAGS);
            if let Some(i) = m.tags.iter().position(|x| *x == t) {
                m.tags.remove(i);
            } else {
                m.tags.push(t);
            }
        }
        4 | 5 => {
            // DHCP or a move to another site: the primary address changes.
            if let Some(n) = m
                .nics
                .iter_mut()
                .find(|n| n.kind != "SoftwareLoopback" && !n.ip.contains(':'))
            {
                let site = rng.below(12);
                n.ip = format!(
                    "10.{}.{}.{}",
                    10 * site + rng.below(10),
                    rng.below(256),
                    rng.range(2, 254)
                );
                if rng.chance(300_000) {
                    m.external_ip = Some(format!("167.220.{}.{}", 10 + site, rng.range(2, 254)));
                }
            }
        }
        6 => m.agent = Some(agent_version(rng, m.os_build)),
        7 => {
            if let (Some(os), Some(build)) = (m.os, m.os_build)
                && let Some((version, new_build)) = names::upgrade(os.platform, build)
            {
                m.version = Some(version.to_string());
                m.os_build = Some(new_build);
            }
            m.ubr += rng.range(50, 400) as i64;
        }
        _ => {
            if m.av.is_some() {
                m.av = Some(*rng.weighted(AV_STATUSES));
            }
        }
    }
}

/// A discovered device: seen on the network, no sensor, sparse data.
fn make_discovered(m: &mut Machine, rng: &mut Rng) {
    m.onboarding = *rng.pick(&["CanBeOnboarded", "Unsupported", "InsufficientInfo"]);
    m.agent = None;
    m.health = "Unknown";
    m.risk = Some("None");
    m.exposure = None;
    m.aad = None;
    m.av = None;
    m.tags.clear();
    m.group = 0;
    m.external_ip = None;
    m.vm = None;
    m.retired = false;
    if rng.chance(500_000) {
        m.os = None;
        m.version = None;
        m.os_build = None;
    }
    if rng.chance(500_000) {
        m.dns = None;
    }
    m.nics.truncate(1);
}

fn alnum(rng: &mut Rng, n: usize) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..n)
        .map(|_| CHARS[rng.below(CHARS.len() as u64) as usize] as char)
        .collect()
}

fn mac(rng: &mut Rng) -> String {
    format!(
        "{}{}",
        rng.pick(names::MAC_PREFIXES),
        rng.hex(6).to_uppercase()
    )
}

fn make_nics(rng: &mut Rng, site: u64, class: Class) -> Vec<Nic> {
    let mut nics = Vec::new();
    let wired = class == Class::Server || class == Class::Linux || rng.chance(600_000);
    let primary_mac = mac(rng);
    nics.push(Nic {
        ip: format!(
            "10.{}.{}.{}",
            10 * site + rng.below(10),
            rng.below(256),
            rng.range(2, 254)
        ),
        mac: Some(primary_mac.clone()),
        kind: if wired { "Ethernet" } else { "Wireless80211" },
        up: true,
    });
    if rng.chance(300_000) {
        nics.push(Nic {
            ip: format!(
                "fe80::{}:{}:{}:{}",
                rng.hex(4),
                rng.hex(4),
                rng.hex(4),
                rng.hex(4)
            ),
            mac: Some(primary_mac.clone()),
            kind: nics[0].kind,
            up: true,
        });
    }
    if rng.chance(150_000) {
        nics.push(Nic {
            ip: format!("2a01:110:68:{}::{}", rng.below(16), rng.hex(4)),
            mac: Some(primary_mac),
            kind: nics[0].kind,
            up: true,
        });
    }
    if class == Class::Client && rng.chance(250_000) {
        nics.push(Nic {
            ip: format!("169.254.{}.{}", rng.below(256), rng.range(1, 254)),
            mac: Some(mac(rng)),
            kind: "Ethernet",
            up: false,
        });
    }
    if rng.chance(300_000) {
        let v6 = rng.chance(500_000);
        nics.push(Nic {
            ip: if v6 { "::1".into() } else { "127.0.0.1".into() },
            mac: None,
            kind: "SoftwareLoopback",
            up: true,
        });
    }
    nics
}

fn agent_version(rng: &mut Rng, build: Option<i64>) -> String {
    let platform = *rng.pick(&[8760u64, 8780, 8800, 8810, 8835]);
    format!(
        "10.{platform}.{}.{}",
        build.unwrap_or(0),
        rng.range(1000, 6000)
    )
}

/// Renders 100 ns ticks since the epoch as the service does: seven fractional digits,
/// trailing zeros trimmed, no dot when nothing is left.
pub fn format_ticks(ticks: i64) -> String {
    let secs = ticks.div_euclid(TICKS_PER_SEC);
    let frac = ticks.rem_euclid(TICKS_PER_SEC);
    let t = Utc
        .timestamp_opt(secs, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let base = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    if frac == 0 {
        return format!("{base}Z");
    }
    let digits = format!("{frac:07}");
    format!("{base}.{}Z", digits.trim_end_matches('0'))
}

/// The five machines of the documentation's samples (`mde-machine-samples.json`).
fn samples() -> Vec<Map<String, Value>> {
    let doc: Value = serde_json::from_str(include_str!("samples.json")).unwrap_or(Value::Null);
    doc["value"]
        .as_array()
        .map(|v| v.iter().filter_map(|r| r.as_object().cloned()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(machines: u64) -> FleetConfig {
        FleetConfig {
            seed: 7,
            machines,
            churn: 0.05,
            start: FleetConfig::default_start(),
        }
    }

    #[test]
    fn ticks_are_trimmed_like_the_service() {
        assert_eq!(format_ticks(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_ticks(5_000_000), "1970-01-01T00:00:00.5Z");
        assert_eq!(format_ticks(1_234_567), "1970-01-01T00:00:00.1234567Z");
    }

    #[test]
    fn fleet_is_deterministic_and_has_the_samples() {
        let a = Fleet::at_day(config(200), 3);
        let b = Fleet::at_day(config(200), 3);
        let ra: Vec<Value> = a.machines().iter().map(|m| a.machine_record(m)).collect();
        let rb: Vec<Value> = b.machines().iter().map(|m| b.machine_record(m)).collect();
        assert_eq!(ra, rb);
        assert_eq!(samples().len(), 5);
        let names: Vec<&str> = ra
            .iter()
            .filter_map(|r| r["computerDnsName"].as_str())
            .collect();
        assert!(names.contains(&"mymachine1.contoso.com"));
        assert!(ra.iter().any(|r| {
            r["machineTags"]
                .as_array()
                .is_some_and(|t| t.contains(&json!("ExampleTag")))
        }));
    }

    #[test]
    fn records_use_the_live_key_order() {
        let f = Fleet::new(config(50));
        let r = f.machine_record(&f.machines()[10]);
        let keys: Vec<&String> = r
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        let expected: Vec<&str> = crate::schema::MACHINE_PROPERTIES
            .iter()
            .map(|p| p.api)
            .collect();
        assert_eq!(keys, expected);
    }

    #[test]
    fn last_seen_advances_and_ids_are_unique() {
        let f0 = Fleet::new(config(300));
        let f1 = Fleet::at_day(config(300), 1);
        let seen = |f: &Fleet, id: &str| {
            f.machines()
                .iter()
                .find(|m| m.id == id)
                .map(|m| m.last_seen)
        };
        let active = f0
            .machines()
            .iter()
            .find(|m| m.sample.is_none() && !m.retired && m.health == "Active");
        let active = active.expect("an active machine");
        assert!(seen(&f1, &active.id) > seen(&f0, &active.id));
        let mut ids: Vec<&str> = f1.machines().iter().map(|m| m.id.as_str()).collect();
        ids.sort_unstable();
        let n = ids.len();
        ids.dedup();
        assert_eq!(ids.len(), n);
    }
}
