//! The one integration-test binary: a module per area.

mod cli;
mod conformance;
mod emulator;
mod kill;
mod lake;
mod odata;
mod sample_data;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mdesnap::generate::{GenerateOptions, generate};

/// The built `mdesnap` binary.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mdesnap"))
}

/// Runs `mdesnap` with `args` and no `MDESNAP_LAKE` from the environment.
pub fn run(args: &[&str]) -> Output {
    bin()
        .args(args)
        .env_remove("MDESNAP_LAKE")
        .env_remove("RUST_LOG")
        .output()
        .expect("the mdesnap binary runs")
}

/// The committed sample lake.
pub fn sample_data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-data")
}

/// A small generated lake in `dir`.
pub fn small_lake(dir: &Path, machines: u64, days: u32) {
    let options = GenerateOptions {
        seed: 3,
        machines,
        days,
        churn: 0.05,
        start: None,
        append: false,
        wait: false,
    };
    generate(dir, &options, |_| {}).expect("generate succeeds");
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
