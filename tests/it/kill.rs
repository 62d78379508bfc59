//! `generate` killed with SIGKILL at random moments: no snapshot is ever partly
//! visible, every visible one is whole, and the next run succeeds and cleans up.

use std::time::Duration;

use arrow::array::AsArray;
use mdesnap::lake::scan_lake;
use mdesnap::{Engine, Table};
use tempfile::tempdir;

use crate::bin;

/// Checks that each committed snapshot is whole, from its data: every listed file
/// decodes completely to the rows its manifest gives, and the engine reads every
/// visible snapshot's `id` column back with one distinct id per machine row.
/// Returns the number of committed snapshots.
pub async fn assert_whole(lake: &std::path::Path) -> usize {
    let scan = scan_lake(lake).expect("scan");
    assert!(
        scan.broken.is_empty(),
        "no manifest is ever half-written: {:?}",
        scan.broken
    );
    for m in &scan.snapshots {
        assert_eq!(
            m.tables.len(),
            Table::STORED.len(),
            "{}: every table published together, the change tables included",
            m.id
        );
        assert!(m.changes.is_some(), "{}: changes committed with it", m.id);
        for (name, entry) in &m.tables {
            let mut rows = 0;
            for f in &entry.files {
                let file = std::fs::File::open(lake.join(&f.path)).expect("listed file exists");
                let reader =
                    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                        .expect("complete parquet footer")
                        .build()
                        .expect("reader");
                let mut n = 0u64;
                for batch in reader {
                    n += batch.expect("every page decodes").num_rows() as u64;
                }
                assert_eq!(n, f.rows, "{}", f.path);
                rows += f.rows;
            }
            assert_eq!(rows, entry.rows, "{} {name}", m.id);
        }
    }
    if !scan.snapshots.is_empty() {
        let engine = Engine::open(lake, None).expect("opens");
        // Reads the id column of every snapshot: a per-snapshot distinct count that
        // only the data can answer.
        let batches = engine
            .sql(
                "SELECT arrow_cast(snapshot, 'Utf8') AS s, count(DISTINCT id) AS ids \
                 FROM machines_history GROUP BY 1 ORDER BY 1",
            )
            .await
            .expect("plans")
            .collect()
            .await
            .expect("every visible snapshot reads");
        let mut read = Vec::new();
        for b in &batches {
            let ids = b.column(1).as_primitive::<arrow::datatypes::Int64Type>();
            read.extend(ids.iter().map(|v| v.unwrap_or(0) as u64));
        }
        let expected: Vec<u64> = scan
            .snapshots
            .iter()
            .map(|m| m.rows(Table::Machines))
            .filter(|n| *n > 0)
            .collect();
        assert_eq!(read, expected, "distinct ids read per snapshot");
    }
    scan.snapshots.len()
}

/// The data files of `lake` not yet renamed into place: a write in progress, or the
/// leftovers of a killed one.
fn temp_files(lake: &std::path::Path) -> std::collections::HashSet<std::path::PathBuf> {
    let mut out = std::collections::HashSet::new();
    let Ok(folders) = std::fs::read_dir(lake.join("machines")) else {
        return out;
    };
    for folder in folders.flatten() {
        if let Ok(files) = std::fs::read_dir(folder.path()) {
            out.extend(
                files
                    .flatten()
                    .filter(|f| f.file_name().to_string_lossy().ends_with(".tmp"))
                    .map(|f| f.path()),
            );
        }
    }
    out
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
    let mut mid_write = 0;
    for round in 0..6 {
        let before = temp_files(&lake);
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
        if round % 2 == 0 {
            // Half the kills land while a snapshot's data is being written: wait for
            // a data file of this run that is not yet in place, then a moment more.
            let began = std::time::Instant::now();
            let writing = || temp_files(&lake).difference(&before).next().is_some();
            while !writing() && began.elapsed() < Duration::from_secs(60) {
                std::thread::sleep(Duration::from_millis(2));
            }
            if writing() {
                mid_write += 1;
            }
            std::thread::sleep(Duration::from_millis(rng.range(0, 30)));
        } else {
            std::thread::sleep(Duration::from_millis(rng.range(50, 1500)));
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        let n = assert_whole(&lake).await;
        assert!(
            n >= seen,
            "round {round}: committed snapshots never disappear"
        );
        seen = n;
    }
    assert!(
        mid_write >= 2,
        "at least two kills landed during a write ({mid_write})"
    );
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
