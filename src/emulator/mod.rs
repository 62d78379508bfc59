//! A local emulator of the Defender for Endpoint machines API, on loopback, serving the
//! deterministic fleet: what lets a user, CI or a test run everything without a tenant.
//!
//! It behaves as `mde-api-contract.md` section 8 describes the live service: token
//! endpoints (v2 client credentials, v1 `resource=`, the device authorization grant),
//! 401 and 403 rules, routing (`/api` and `/api/v1.0`, entity sets in any case),
//! envelopes and headers, the live key order, `$filter` over the filterable
//! properties (evaluated with the same OData translator the lake uses), paging with
//! `@odata.nextLink`, not-found semantics, throttling per client and route template,
//! and faults on demand. `docs/emulator.md` lists what is faithful and what is not.
//!
//! [`Emulator::start`] serves in-process on the address given (port 0 picks one) and
//! stops when the handle is dropped; `mdesnap emulate` runs the same server.

mod auth;
mod server;
mod state;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

pub use state::{FaultKind, Faults, Profile, UnknownProfile};

use crate::fleet::FleetConfig;

/// How the emulator behaves.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    pub bind: SocketAddr,
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: String,
    /// Roles of application tokens (default `Machine.Read.All`).
    pub roles: Vec<String>,
    /// Lifetime of the tokens it issues.
    pub token_lifetime: Duration,
    /// Emulated users for delegated sign-in, each with the device groups it may see.
    pub users: Vec<(String, Vec<i64>)>,
    /// Device-code sign-ins are approved this long after the code was issued.
    pub approve_after: Duration,
    /// A device code expires this long after it was issued (the platform: 900 s).
    pub device_code_lifetime: Duration,
    /// Polls of a device code closer together than this (at least the advertised
    /// 1 s interval) are answered `slow_down`.
    pub device_code_min_poll: Duration,
    pub seed: u64,
    pub machines: u64,
    pub churn: f64,
    pub start: DateTime<Utc>,
    /// The fleet's day served at start-up.
    pub day: u32,
    pub profile: Profile,
    pub calls_per_minute: u32,
    pub calls_per_hour: u32,
    /// Multiplies the throttling windows (0.01: a 0.6 s "minute").
    pub window_scale: f64,
    /// Hide machines last seen longer ago than this many days.
    pub retention_days: Option<u32>,
    /// Page size when `$top` is absent.
    pub page_size: usize,
    /// Answer 404 for an unknown user (the WDATP documentation) instead of 200 [].
    pub legacy_user_404: bool,
    /// Answer 404 for a list of an empty tenant (the documentation) instead of 200 [].
    pub empty_tenant_404: bool,
    /// Emit `@odata.nextLink` also when `$top` was given.
    pub next_link_with_top: bool,
    /// At most this many machines a list page whatever `$top` asks, with a nextLink to
    /// the rest: a service paging below `$top` (library only, for tests).
    pub max_page: Option<usize>,
    pub faults: Faults,
    /// How long a `slow` fault delays the response.
    pub slow: Duration,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            tenant_id: "emulator-tenant".into(),
            client_id: "emulator-client".into(),
            client_secret: "emulator-secret".into(),
            roles: vec!["Machine.Read.All".into()],
            token_lifetime: Duration::from_secs(3599),
            users: Vec::new(),
            approve_after: Duration::from_secs(5),
            device_code_lifetime: Duration::from_secs(900),
            device_code_min_poll: Duration::from_secs(1),
            seed: 42,
            machines: 1000,
            churn: FleetConfig::DEFAULT_CHURN,
            start: FleetConfig::default_start(),
            day: 0,
            profile: Profile::P2023,
            calls_per_minute: 100,
            calls_per_hour: 1500,
            window_scale: 1.0,
            retention_days: None,
            page_size: 10_000,
            legacy_user_404: false,
            empty_tenant_404: true,
            next_link_with_top: false,
            max_page: None,
            faults: Faults::default(),
            slow: Duration::from_secs(2),
        }
    }
}

/// What can stop the emulator from starting.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid emulator setting: {0}")]
    Setting(&'static str),
    #[error("the emulated fleet does not decode: {0}")]
    Fleet(#[from] crate::decode::DecodeError),
    #[error("cannot advance the fleet: {0}")]
    Advance(String),
}

impl EmulatorConfig {
    /// The longest token lifetime, approval delay and slow response it accepts.
    const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(7 * 86_400);
    const MAX_APPROVE_AFTER: Duration = Duration::from_secs(900);
    const MAX_SLOW: Duration = Duration::from_secs(600);

    /// Checks every setting; the message names the flag at fault.
    pub fn validate(&self) -> Result<(), EmulatorError> {
        let fleet = FleetConfig {
            seed: self.seed,
            machines: self.machines,
            churn: self.churn,
            start: self.start,
        };
        fleet.validate(self.day).map_err(EmulatorError::Setting)?;
        let checks: [(bool, &'static str); 10] = [
            (
                self.calls_per_minute >= 1,
                "--calls-per-minute must be at least 1",
            ),
            (
                self.calls_per_hour >= 1,
                "--calls-per-hour must be at least 1",
            ),
            (
                self.window_scale.is_finite()
                    && self.window_scale > 0.0
                    && self.window_scale <= 1000.0,
                "--window-scale must be a number above 0 and at most 1000",
            ),
            (
                (1..=10_000).contains(&self.page_size),
                "--page-size must be from 1 to 10000",
            ),
            (
                self.max_page != Some(0),
                "the largest page must hold at least one machine",
            ),
            (
                !self.token_lifetime.is_zero() && self.token_lifetime <= Self::MAX_TOKEN_LIFETIME,
                "--token-lifetime must be from 1 second to 7 days",
            ),
            (
                self.approve_after <= Self::MAX_APPROVE_AFTER,
                "--approve-after must be at most 900 seconds (a device code expires then)",
            ),
            (
                !self.device_code_lifetime.is_zero()
                    && self.device_code_lifetime <= Self::MAX_APPROVE_AFTER,
                "a device code must live from 1 to 900 seconds",
            ),
            (
                self.slow <= Self::MAX_SLOW,
                "--slow-seconds must be at most 600",
            ),
            (
                self.retention_days.is_none_or(|d| d <= 36_500),
                "--retention-days must be at most 36500",
            ),
        ];
        match checks.iter().find(|(ok, _)| !ok) {
            Some((_, message)) => Err(EmulatorError::Setting(message)),
            None => Ok(()),
        }
    }
}

/// A running emulator; dropping it stops the server.
#[derive(Debug)]
pub struct Emulator {
    addr: SocketAddr,
    shared: Arc<state::Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Emulator {
    /// Binds and starts serving on the current tokio runtime.
    pub async fn start(config: EmulatorConfig) -> Result<Emulator, EmulatorError> {
        config.validate()?;
        let listener = tokio::net::TcpListener::bind(config.bind)
            .await
            .map_err(|source| EmulatorError::Bind {
                addr: config.bind,
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| EmulatorError::Bind {
                addr: config.bind,
                source,
            })?;
        let shared = Arc::new(state::Shared::new(config)?);
        let app = server::router(Arc::clone(&shared));
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = rx.await;
            });
            if let Err(e) = serve.await {
                tracing::error!("emulator stopped: {e}");
            }
        });
        Ok(Emulator {
            addr,
            shared,
            stop: Some(tx),
            task: Some(task),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The fleet's current time: the moment a snapshot taken now would be of.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.shared.lock().view.fleet.now()
    }

    /// Moves the fleet on by `days`, as `POST /_emulator/advance` does.
    pub fn advance(&self, days: u32) -> Result<(), EmulatorError> {
        let mut inner = self.shared.lock();
        let far = inner.view.fleet.day().saturating_add(days);
        inner
            .view
            .fleet
            .config()
            .validate(far)
            .map_err(|why| EmulatorError::Advance(why.to_string()))?;
        Ok(inner.advance(days)?)
    }

    /// Serves until stopped by a signal or the task ends.
    pub async fn wait(mut self) {
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
