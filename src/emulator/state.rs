//! The emulator's state: the fleet of the day (with an Arrow copy the OData translator
//! filters), issued tokens and device codes, throttling windows, faults and counters.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::EmulatorConfig;
use crate::decode::{DecodeError, MachineDecoder};
use crate::fleet::{Fleet, FleetConfig};
use crate::rng::Rng;

/// Which key set machine records carry (contract section 2.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// the 2021 live shape: no merge/exclusion fields, no managedByStatus
    P2021,
    /// the 2023 live shape: every key
    P2023,
    /// the 2026 capture: no osVersion, no defenderAvStatus
    P2026,
}

/// A profile name that is not 2021, 2023 or 2026.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown schema profile '{0}' (expected 2021, 2023 or 2026)")]
pub struct UnknownProfile(pub String);

impl std::str::FromStr for Profile {
    type Err = UnknownProfile;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "2021" => Ok(Profile::P2021),
            "2023" => Ok(Profile::P2023),
            "2026" => Ok(Profile::P2026),
            other => Err(UnknownProfile(other.to_string())),
        }
    }
}

impl Profile {
    /// Keys this profile leaves out.
    pub fn absent(self) -> &'static [&'static str] {
        match self {
            Profile::P2021 => &[
                "mergedIntoMachineId",
                "isPotentialDuplication",
                "isExcluded",
                "exclusionReason",
                "managedByStatus",
            ],
            Profile::P2023 => &[],
            Profile::P2026 => &["osVersion", "defenderAvStatus"],
        }
    }
}

/// A kind of fault the emulator can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// 500 InternalServerError with an empty message.
    Error500,
    /// 429 TooManyRequests with Retry-After, whatever the windows say.
    Throttle429,
    /// The connection closes before any response.
    Drop,
    /// The body stops half-way.
    Cut,
    /// The response comes late.
    Slow,
    /// A nextLink that lost the `$` of its options and never advances (contract 4.9).
    BuggyNextLink,
    /// Machines are added and removed between two pages.
    MutateBetweenPages,
    /// 404 for what exists: a machine by id, or a whole collection (as a wrong path or
    /// a gateway answers).
    NotFound,
    /// 401: the token presented is revoked (never on its first use, so a client that
    /// renews once gets through).
    Revoke,
    /// A collection answer whose nextLink points to another origin, in place of its
    /// own or where it had none.
    ForeignNextLink,
}

/// The route templates of the API: the unit of throttling, of the stats and of fault
/// scopes.
pub const T_LIST: &str = "/api/machines";
pub const T_GET: &str = "/api/machines/{id}";
pub const T_USER: &str = "/api/users/{id}/machines";
pub const T_DOMAIN: &str = "/api/domains/{domain}/machines";
pub const T_STATES: &str = "/testwdatppreview/machinesecuritystates";
pub const ROUTES: [&str; 5] = [T_LIST, T_GET, T_USER, T_DOMAIN, T_STATES];

impl FaultKind {
    pub const ALL: [FaultKind; 10] = [
        FaultKind::Error500,
        FaultKind::Throttle429,
        FaultKind::Drop,
        FaultKind::Cut,
        FaultKind::Slow,
        FaultKind::BuggyNextLink,
        FaultKind::MutateBetweenPages,
        FaultKind::NotFound,
        FaultKind::Revoke,
        FaultKind::ForeignNextLink,
    ];

    /// The name in `POST /_emulator/faults`, `--fault` and the stats.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Error500 => "500",
            FaultKind::Throttle429 => "429",
            FaultKind::Drop => "drop",
            FaultKind::Cut => "cut",
            FaultKind::Slow => "slow",
            FaultKind::BuggyNextLink => "buggy_next_link",
            FaultKind::MutateBetweenPages => "mutate_between_pages",
            FaultKind::NotFound => "404",
            FaultKind::Revoke => "401",
            FaultKind::ForeignNextLink => "foreign_next_link",
        }
    }

    /// The kind a name means.
    pub fn parse(name: &str) -> Option<FaultKind> {
        FaultKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// Fault rates, each a probability from 0 to 1 per API call, by kind (`500`) or by
/// kind on one route template (`500@/api/machines`), which replaces the kind's rate
/// there.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Faults(pub BTreeMap<String, f64>);

impl Faults {
    /// The rate of `kind` on route template `route`.
    pub fn rate(&self, kind: FaultKind, route: &str) -> f64 {
        self.0
            .get(&format!("{}@{route}", kind.name()))
            .or_else(|| self.0.get(kind.name()))
            .copied()
            .unwrap_or(0.0)
    }

    /// Checks names, routes and rates.
    pub fn validate(&self) -> Result<(), String> {
        for (k, v) in &self.0 {
            let (kind, route) = k
                .split_once('@')
                .map_or((k.as_str(), None), |(k, r)| (k, Some(r)));
            if FaultKind::parse(kind).is_none() {
                let names: Vec<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
                return Err(format!(
                    "unknown fault '{kind}' (expected one of {})",
                    names.join(", ")
                ));
            }
            if let Some(route) = route
                && !ROUTES.contains(&route)
            {
                return Err(format!(
                    "fault '{k}': unknown route '{route}' (expected one of {})",
                    ROUTES.join(", ")
                ));
            }
            if !(0.0..=1.0).contains(v) {
                return Err(format!("fault '{k}' rate {v} is not between 0 and 1"));
            }
        }
        Ok(())
    }
}

/// What a token carries.
#[derive(Debug, Clone, Serialize)]
pub struct Claims {
    pub aud: String,
    pub appid: String,
    pub tid: String,
    /// Application roles (app tokens).
    pub roles: Vec<String>,
    /// Delegated scopes, space-separated (user tokens).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upn: Option<String>,
    /// Device groups a delegated token may see.
    #[serde(skip)]
    pub groups: Option<Vec<i64>>,
    pub iat: i64,
    pub exp: i64,
    /// When the token stops working, to the instant (`exp` is whole seconds).
    #[serde(skip)]
    pub expires: Option<Instant>,
}

/// A device-code sign-in in progress.
#[derive(Debug, Clone)]
pub struct DeviceCode {
    pub scope: String,
    pub user: String,
    pub approve_at: Instant,
    pub expires_at: Instant,
    pub issued_at: Instant,
    /// When the client last polled, for `slow_down`.
    pub last_poll: Option<Instant>,
}

/// What a refresh token renews: a user's delegated sign-in.
#[derive(Debug, Clone)]
pub struct RefreshGrant {
    pub scope: String,
    pub user: String,
}

/// The fleet of the day with what serving it needs.
#[derive(Debug)]
pub struct FleetView {
    pub fleet: Fleet,
    /// The machines as the lake's `machines` table, for the OData translator.
    pub batch: Arc<RecordBatch>,
    /// Machine id -> position in the fleet.
    pub index: HashMap<String, usize>,
    /// Each machine's record rendered once in the profile's key set: pages are
    /// spliced from these instead of building JSON values per request.
    pub json: Vec<Box<str>>,
}

impl FleetView {
    fn new(fleet: Fleet, profile: Profile) -> Result<Self, DecodeError> {
        let mut view = FleetView {
            fleet,
            batch: Arc::new(RecordBatch::new_empty(
                crate::schema::Table::Machines.schema(),
            )),
            index: HashMap::new(),
            json: Vec::new(),
        };
        view.refresh(profile)?;
        Ok(view)
    }

    /// Rebuilds what is derived from the fleet, after it changed in place. A record
    /// the lake's decoder refuses is a bug of the fleet, and stops the emulator rather
    /// than leaving the machine out of what it serves.
    fn refresh(&mut self, profile: Profile) -> Result<(), DecodeError> {
        let machines = self.fleet.machines();
        let mut decoder = MachineDecoder::default();
        let mut index = HashMap::with_capacity(machines.len());
        let mut json = Vec::with_capacity(machines.len());
        for (i, m) in machines.iter().enumerate() {
            let record = profiled(self.fleet.machine_record(m), profile);
            decoder.push(i, &record)?;
            index.insert(m.id().to_string(), i);
            json.push(record.to_string().into_boxed_str());
        }
        let (batch, _) = decoder.finish()?;
        self.batch = Arc::new(batch);
        self.index = index;
        self.json = json;
        Ok(())
    }

    /// The record of machine `i` in the profile's key set.
    pub fn record(&self, i: usize, profile: Profile) -> Value {
        profiled(
            self.fleet.machine_record(&self.fleet.machines()[i]),
            profile,
        )
    }
}

/// A record without the keys `profile` leaves out.
fn profiled(mut record: Value, profile: Profile) -> Value {
    if let Value::Object(map) = &mut record {
        for k in profile.absent() {
            map.shift_remove(*k);
        }
    }
    record
}

/// Calls seen, for `GET /_emulator/stats`.
#[derive(Debug, Default)]
pub struct Stats {
    pub calls: BTreeMap<&'static str, VecDeque<Instant>>,
    pub totals: BTreeMap<&'static str, u64>,
    pub faults: BTreeMap<&'static str, u64>,
    /// 429s served because a client went over a limit (not the `429` fault).
    pub throttled: BTreeMap<&'static str, u64>,
    /// The user ids `/api/users/{id}/machines` was asked for, decoded, in order.
    pub users_asked: Vec<String>,
    /// Token requests by grant type (and `devicecode` for the authorization endpoint).
    pub token_requests: BTreeMap<String, u64>,
}

/// Mutable state behind one lock (never held across an await).
#[derive(Debug)]
pub struct Inner {
    pub view: FleetView,
    pub tokens: HashMap<String, Claims>,
    pub device_codes: HashMap<String, DeviceCode>,
    pub refresh_tokens: HashMap<String, RefreshGrant>,
    /// Calls made with each token, for the `401` fault.
    pub token_uses: HashMap<String, u32>,
    pub windows: HashMap<(String, &'static str), VecDeque<Instant>>,
    pub faults: Faults,
    pub rng: Rng,
    pub stats: Stats,
    pub profile: Profile,
}

/// Everything the handlers share.
#[derive(Debug)]
pub struct Shared {
    pub config: EmulatorConfig,
    inner: Mutex<Inner>,
}

impl Shared {
    pub fn new(config: EmulatorConfig) -> Result<Self, DecodeError> {
        let fleet = Fleet::at_day(
            FleetConfig {
                seed: config.seed,
                machines: config.machines,
                churn: config.churn,
                start: config.start,
            },
            config.day,
        );
        let inner = Inner {
            view: FleetView::new(fleet, config.profile)?,
            tokens: HashMap::new(),
            device_codes: HashMap::new(),
            refresh_tokens: HashMap::new(),
            token_uses: HashMap::new(),
            windows: HashMap::new(),
            faults: config.faults.clone(),
            rng: Rng::derive(config.seed, &[0xE3]),
            stats: Stats::default(),
            profile: config.profile,
        };
        Ok(Shared {
            config,
            inner: Mutex::new(inner),
        })
    }

    /// The state, locked. A handler that panicked mid-update cannot leave it torn in a
    /// way later calls would trip over, so a poisoned lock is taken over.
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The length of a window scaled by `--window-scale`.
    pub fn window(&self, base: Duration) -> Duration {
        base.mul_f64(self.config.window_scale.max(1e-6))
    }
}

impl Inner {
    /// Moves the fleet on by `days`.
    pub fn advance(&mut self, days: u32) -> Result<(), DecodeError> {
        for _ in 0..days {
            self.view.fleet.advance();
        }
        self.view.refresh(self.profile)
    }

    /// Adds and removes machines now (the mutate-between-pages fault).
    pub fn mutate(&mut self) -> Result<(), DecodeError> {
        let salt = self.rng.next_u64();
        let n = (self.view.fleet.machines().len() / 100).max(1);
        self.view.fleet.mutate(n, salt);
        self.view.refresh(self.profile)
    }

    /// Counts a call made with `token` to `route`; true when the `401` fault revokes
    /// it now.
    pub fn revoke_roll(&mut self, token: &str, route: &str) -> bool {
        let uses = self.token_uses.entry(token.to_string()).or_insert(0);
        *uses += 1;
        if *uses > 1 && self.roll(FaultKind::Revoke, route) {
            self.tokens.remove(token);
            return true;
        }
        false
    }

    /// Draws whether a fault of `kind` is served now on `route`, and counts it.
    pub fn roll(&mut self, kind: FaultKind, route: &str) -> bool {
        let rate = self.faults.rate(kind, route);
        if rate <= 0.0 {
            return false;
        }
        let hit = (self.rng.below(1_000_000) as f64) < rate * 1_000_000.0;
        if hit {
            *self.stats.faults.entry(kind.name()).or_insert(0) += 1;
        }
        hit
    }

    /// The stats as JSON.
    pub fn stats_json(&mut self, minute: Duration, hour: Duration) -> Value {
        let now = Instant::now();
        let mut calls = Map::new();
        for (route, times) in &mut self.stats.calls {
            while times.front().is_some_and(|t| now.duration_since(*t) > hour) {
                times.pop_front();
            }
            let last_minute = times
                .iter()
                .filter(|t| now.duration_since(**t) <= minute)
                .count();
            calls.insert(
                (*route).to_string(),
                serde_json::json!({
                    "minute": last_minute,
                    "hour": times.len(),
                    "total": self.stats.totals.get(route).copied().unwrap_or(0),
                }),
            );
        }
        let faults: Map<String, Value> = self
            .stats
            .faults
            .iter()
            .map(|(k, v)| ((*k).to_string(), Value::from(*v)))
            .collect();
        serde_json::json!({
            "day": self.view.fleet.day(),
            "date": crate::snapshot::format_time(self.view.fleet.now()),
            "machines": self.view.fleet.machines().len(),
            "calls": calls,
            "faults": faults,
            "fault_rates": self.faults,
            "throttled": self.stats.throttled,
            "users_asked": self.stats.users_asked,
            "token_requests": self.stats.token_requests,
        })
    }
}
