//! Ctrl-C (SIGINT) to a spawned `mdesnap`: the work stops promptly, exits 130, and
//! leaves nothing partial: no snapshot half-published, no temporary file behind.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use tempfile::tempdir;

use crate::kill::assert_whole;
use crate::{bin, sample_data};

fn sigint(child: &Child) {
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// Waits for `ready`, polling; panics after a minute.
fn wait_for(what: &str, ready: impl Fn() -> bool) {
    let began = Instant::now();
    while !ready() {
        assert!(
            began.elapsed() < Duration::from_secs(60),
            "waited for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits for the child to exit; returns its exit code and how long it took.
fn exit_after_signal(mut child: Child) -> (Option<i32>, Duration, String) {
    let began = Instant::now();
    sigint(&child);
    let status = child.wait().expect("exits");
    let took = began.elapsed();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        std::io::Read::read_to_string(&mut e, &mut err).ok();
    }
    (status.code(), took, err)
}

fn files_named(dir: &Path, pred: impl Fn(&str) -> bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.path().is_dir() {
                stack.push(e.path());
            } else if pred(&name) {
                out.push(e.path().display().to_string());
            }
        }
    }
    out
}

#[tokio::test]
async fn ctrl_c_stops_generate_at_once_and_commits_nothing_partial() {
    let dir = tempdir().expect("tempdir");
    let lake = dir.path().join("lake");
    let child = bin()
        .args([
            "generate",
            "--lake",
            lake.to_str().expect("utf-8"),
            "--machines",
            "3000",
            "--days",
            "400",
            "--quiet",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawns");
    // Past the first commit, and in the middle of writing another snapshot.
    let manifests = lake.join("_snapshots");
    wait_for("two snapshots", || {
        std::fs::read_dir(&manifests).is_ok_and(|d| d.flatten().count() >= 2)
    });
    let (code, took, err) = exit_after_signal(child);
    assert_eq!(code, Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    // 400 days would take minutes; stopping takes a fraction of a second. The bound
    // is loose on purpose (shared machines): it catches work that goes on.
    assert!(took < Duration::from_secs(10), "stopped after {took:?}");
    let committed = assert_whole(&lake).await;
    assert!((2..400).contains(&committed), "{committed}");
    assert!(
        crate::leftovers(&lake).is_empty(),
        "the interrupted snapshot left nothing"
    );
    let temps = files_named(&lake, |n| n.ends_with(".tmp"));
    assert!(temps.is_empty(), "{temps:?}");
}

#[test]
fn ctrl_c_stops_a_query_and_leaves_no_output_file() {
    let dir = tempdir().expect("tempdir");
    let out = dir.path().join("pairs.csv");
    let child = bin()
        .args([
            "query",
            "--lake",
            sample_data().to_str().expect("utf-8"),
            "--output",
            out.to_str().expect("utf-8"),
            "SELECT a.id, b.id AS other FROM machines_history a CROSS JOIN machines_history b",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawns");
    wait_for("the temporary output file", || {
        !files_named(dir.path(), |n| n.ends_with(".tmp")).is_empty()
    });
    let (code, took, err) = exit_after_signal(child);
    assert_eq!(code, Some(130), "{err}");
    assert!(took < Duration::from_secs(10), "stopped after {took:?}");
    assert!(!out.exists(), "no half-written result");
    let left = files_named(dir.path(), |_| true);
    assert!(left.is_empty(), "{left:?}");
}
