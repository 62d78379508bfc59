//! `generate` killed with SIGKILL at random moments: no snapshot is ever partly
//! visible, every visible one is whole, and the next run succeeds and cleans up.

use std::time::Duration;

use mdesnap::lake::scan_lake;
use mdesnap::{Engine, Table};
use tempfile::tempdir;

use crate::bin;

/// Checks that each committed snapshot is whole: every listed file exists with the
/// rows its manifest gives, and the engine counts the same.
async fn assert_whole(lake: &std::path::Path) -> usize {
    let scan = scan_lake(lake).expect("scan");
    assert!(
        scan.broken.is_empty(),
        "no manifest is ever half-written: {:?}",
        scan.broken
    );
    for m in &scan.snapshots {
        assert_eq!(
            m.tables.len(),
            Table::ALL.len(),
            "{}: every table published together",
            m.id
        );
        for (name, entry) in &m.tables {
            let mut rows = 0;
            for f in &entry.files {
                let file = std::fs::File::open(lake.join(&f.path)).expect("listed file exists");
                let reader = parquet::file::reader::SerializedFileReader::new(file)
                    .expect("complete parquet");
                let n = parquet::file::reader::FileReader::metadata(&reader)
                    .file_metadata()
                    .num_rows();
                assert_eq!(n as u64, f.rows, "{}", f.path);
                rows += f.rows;
            }
            assert_eq!(rows, entry.rows, "{} {name}", m.id);
        }
    }
    if !scan.snapshots.is_empty() {
        let engine = Engine::open(lake, None).expect("opens");
        engine.verify_files().expect("all files readable");
        let df = engine
            .sql("SELECT count(*) FROM machines_history")
            .await
            .expect("plans");
        let n = df.count().await.expect("runs");
        assert_eq!(n, 1);
    }
    scan.snapshots.len()
}

#[tokio::test]
async fn killed_generate_never_leaves_a_partial_snapshot() {
    let dir = tempdir().expect("tempdir");
    let lake = dir.path().join("lake");
    let l = lake.to_str().expect("utf-8").to_string();
    // Kill points spread over the run; the seed makes a failure reproducible.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let mut rng = mdesnap::fleet::Rng::derive(seed, &[]);
    eprintln!("kill test seed {seed}");
    let mut seen = 0;
    for round in 0..6 {
        let mut child = bin()
            .args([
                "generate",
                "--lake",
                &l,
                "--machines",
                "3000",
                "--days",
                "40",
                "--append",
                "--quiet",
            ])
            .spawn()
            .expect("spawns");
        let delay = rng.range(50, 1500);
        std::thread::sleep(Duration::from_millis(delay));
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        let n = assert_whole(&lake).await;
        assert!(
            n >= seen,
            "round {round}: committed snapshots never disappear"
        );
        seen = n;
    }
    // The next run succeeds, and removed what the killed ones left.
    let out = bin()
        .args([
            "generate",
            "--lake",
            &l,
            "--machines",
            "3000",
            "--days",
            "1",
            "--append",
            "--quiet",
        ])
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n = assert_whole(&lake).await;
    assert_eq!(n, seen + 1);
    let left = crate::leftovers(&lake);
    assert!(left.is_empty(), "{left:?}");
}
