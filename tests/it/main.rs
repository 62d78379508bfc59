//! The one integration-test binary: a module per area.

mod changes;
mod cli;
mod conformance;
mod emulator;
mod equivalence;
mod fidelity;
mod fuzz;
mod ingest;
mod interrupt;
mod kill;
mod lake;
mod object_store;
mod odata;
mod plans;
mod repl;
mod sample_data;
mod snapshots;
mod trust;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray};
use mdesnap::fleet::FleetConfig;
use mdesnap::generate::{GenerateOptions, generate};
use mdesnap::lake::{PruneOptions, prune};
use mdesnap::{Engine, Manifest, Table};

/// An HTTP client for the tests (reqwest here has no TLS provider of its own; the
/// ingester installs ring's, and so must anyone else in the process).
pub fn http() -> reqwest::Client {
    mdesnap::ingest::http::install_crypto_provider();
    reqwest::Client::new()
}

/// The built `mdesnap` binary.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mdesnap"))
}

/// Runs `mdesnap` with `args`, and no `MDESNAP_LAKE` or `MDESNAP_PLAIN_ENGINE` from
/// the environment.
pub fn run(args: &[&str]) -> Output {
    run_with(args, &[])
}

/// Runs `mdesnap` with `args`, the environment as [`run`] leaves it plus `vars`.
pub fn run_with(args: &[&str], vars: &[(&str, &str)]) -> Output {
    bin()
        .args(args)
        .env_remove("MDESNAP_PLAIN_ENGINE")
        .envs(vars.iter().copied())
        .env_remove("MDESNAP_LAKE")
        .env_remove("RUST_LOG")
        .env_remove("MDESNAP_TOKEN_CACHE")
        .env_remove("AZURE_TENANT_ID")
        .env_remove("AZURE_CLIENT_ID")
        .env_remove("AZURE_CLIENT_SECRET")
        .output()
        .expect("the mdesnap binary runs")
}

/// A number from the environment variable `name`, or `default` when it is unset or
/// not a number: the size of a randomized test's run.
pub fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The seed of a randomized test: the environment variable `name` replays a run;
/// otherwise the clock's, so that every run tries new inputs.
pub fn seed_from_env(name: &str) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(7, |d| d.as_nanos() as u64)
        })
}

/// The committed sample lake.
pub fn sample_data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-data")
}

/// A small generated lake in `dir`.
pub fn small_lake(dir: &Path, machines: u64, days: u32) {
    let fleet = FleetConfig {
        seed: 3,
        machines,
        churn: 0.05,
        start: FleetConfig::default_start(),
    };
    generate_fleet(dir, &fleet, days);
}

/// `days` snapshots of the fleet `config` from its start, one a day, written into `dir`
/// by `generate`.
pub fn generate_fleet(dir: &Path, config: &FleetConfig, days: u32) -> Vec<Manifest> {
    let options = GenerateOptions {
        seed: config.seed,
        machines: config.machines,
        days,
        churn: config.churn,
        start: Some(config.start),
        ..GenerateOptions::default()
    };
    generate(dir, &options, |_| {}).expect("generate succeeds")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// What `snapshots prune --dry-run` would remove as leftovers of interrupted writes.
pub fn leftovers(lake: &Path) -> Vec<PathBuf> {
    let options = PruneOptions {
        dry_run: true,
        ..Default::default()
    };
    prune(lake, &options)
        .expect("prune --dry-run")
        .leftovers
        .iter()
        .map(|p| lake.join(p.trim_end_matches('/')))
        .collect()
}

/// `n` rows of `user_machines`: user0.., machine ids as 40 hex digits.
pub fn user_machine_pairs(n: usize) -> RecordBatch {
    let users: Vec<String> = (0..n).map(|i| format!("user{i}")).collect();
    let machines: Vec<String> = (0..n).map(|i| format!("{i:040x}")).collect();
    RecordBatch::try_new(
        Table::UserMachines.schema(),
        vec![
            Arc::new(StringArray::from(users)),
            Arc::new(StringArray::from(machines)),
        ],
    )
    .expect("valid batch")
}

/// A query's result, the statement named in any failure.
pub async fn collect(engine: &Engine, sql: &str) -> Vec<RecordBatch> {
    engine
        .sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Every row of `sql` as csv lines, sorted: for comparing tables whose file order is
/// not part of the contract.
pub async fn sorted_lines(engine: &Engine, sql: &str) -> Vec<String> {
    let df = engine
        .sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let mut out = Vec::new();
    mdesnap::output::write_stream(
        df.execute_stream().await.expect("runs"),
        mdesnap::output::Format::Csv,
        None,
        &mut out,
    )
    .await
    .expect("writes");
    let mut lines: Vec<String> = String::from_utf8(out)
        .expect("utf-8")
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

/// The first value of a query's first column, as text.
pub async fn scalar(engine: &Engine, sql: &str) -> String {
    let batches = collect(engine, sql).await;
    let col = arrow::compute::cast(batches[0].column(0), &arrow::datatypes::DataType::Utf8)
        .expect("cast to text");
    arrow::array::AsArray::as_string::<i32>(&col)
        .value(0)
        .to_string()
}
