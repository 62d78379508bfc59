//! `machine_changes` and `ip_address_changes` against a reference computed here with
//! a full outer join of consecutive snapshots, for a generated lake and one written by
//! ingest; `changes rebuild`, `diff` and the OData entity set.

use std::path::Path;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::concat_batches;
use mdesnap::schema::{Kind, MACHINE_PROPERTIES};
use mdesnap::{Engine, Table};
use tempfile::tempdir;

use crate::{run, sample_data, small_lake, stderr, stdout};

/// Every row of `sql` as text cells (NULL as `None`).
async fn rows(engine: &Engine, sql: &str) -> Vec<Vec<Option<String>>> {
    let batches = engine
        .sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{e}: {sql}"))
        .collect()
        .await
        .expect("runs");
    let Some(first) = batches.first() else {
        return Vec::new();
    };
    let batch: RecordBatch = concat_batches(&first.schema(), &batches).expect("concat");
    let columns: Vec<_> = batch
        .columns()
        .iter()
        .map(|c| arrow::compute::cast(c, &arrow::datatypes::DataType::Utf8).expect("as text"))
        .collect();
    (0..batch.num_rows())
        .map(|r| {
            columns
                .iter()
                .map(|c| {
                    let c = c.as_string::<i32>();
                    c.is_valid(r).then(|| c.value(r).to_string())
                })
                .collect()
        })
        .collect()
}

/// Consecutive snapshots as `pairs(snapshot, prev)`, and each side's machines.
const PAIRS: &str = "WITH s AS (SELECT snapshot, lag(snapshot) OVER (ORDER BY snapshot) AS prev FROM snapshots), \
     pairs AS (SELECT snapshot, prev FROM s WHERE prev IS NOT NULL), \
     a AS (SELECT m.*, p.snapshot AS next FROM machines_history m JOIN pairs p ON m.snapshot = p.prev), \
     b AS (SELECT m.*, p.snapshot AS next FROM machines_history m JOIN pairs p ON m.snapshot = p.snapshot)";

/// The changes as a full outer join of consecutive snapshots finds them: `(snapshot,
/// id, change, field, old, new)` with values only for scalar properties, ordered.
fn reference_sql() -> String {
    let mut parts = vec![
        "SELECT b.next AS snapshot, b.id, 'added' AS change, NULL AS field, NULL AS old_value, NULL AS new_value \
         FROM a FULL OUTER JOIN b ON a.next = b.next AND a.id = b.id WHERE a.id IS NULL"
            .to_string(),
        "SELECT a.next, a.id, 'removed', NULL, NULL, NULL \
         FROM a FULL OUTER JOIN b ON a.next = b.next AND a.id = b.id WHERE b.id IS NULL"
            .to_string(),
    ];
    for p in MACHINE_PROPERTIES {
        if p.api == "id" || p.api == "lastSeen" {
            continue;
        }
        let c = p.column;
        let (old, new) = match p.kind {
            Kind::String | Kind::Int64 | Kind::Bool => (
                format!("CAST(a.{c} AS VARCHAR)"),
                format!("CAST(b.{c} AS VARCHAR)"),
            ),
            _ => ("NULL".to_string(), "NULL".to_string()),
        };
        parts.push(format!(
            "SELECT b.next, b.id, 'changed', '{}', {old}, {new} FROM a JOIN b ON a.next = b.next AND a.id = b.id \
             WHERE a.{c} IS DISTINCT FROM b.{c}",
            p.api
        ));
    }
    format!(
        "{PAIRS} SELECT * FROM ({}) t ORDER BY 1, 2, 3, 4",
        parts.join(" UNION ALL ")
    )
}

/// The stored table in the reference's shape: values of scalar properties only.
fn stored_sql() -> String {
    let scalar: Vec<String> = MACHINE_PROPERTIES
        .iter()
        .filter(|p| matches!(p.kind, Kind::String | Kind::Int64 | Kind::Bool))
        .map(|p| format!("'{}'", p.api))
        .collect();
    let scalar = scalar.join(", ");
    format!(
        "SELECT snapshot, id, change, field, \
           CASE WHEN field IN ({scalar}) THEN old_value END, \
           CASE WHEN field IN ({scalar}) THEN new_value END \
         FROM machine_changes ORDER BY 1, 2, 3, 4"
    )
}

/// Asserts that the lake's change tables equal the reference, row for row, and
/// returns how many machine changes there are.
async fn assert_changes_match_reference(lake: &Path) -> usize {
    let engine = Engine::open(lake, None).expect("opens");
    let want = rows(&engine, &reference_sql()).await;
    let got = rows(&engine, &stored_sql()).await;
    assert_eq!(got.len(), want.len(), "as many changes as the reference");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w);
    }
    // Each row names the snapshot before its own.
    let wrong = rows(
        &engine,
        "WITH s AS (SELECT snapshot, lag(snapshot) OVER (ORDER BY snapshot) AS prev FROM snapshots) \
         SELECT count(*) FROM machine_changes c JOIN s ON c.snapshot = s.snapshot \
         WHERE c.previous_snapshot IS DISTINCT FROM s.prev",
    )
    .await;
    assert_eq!(wrong[0][0].as_deref(), Some("0"));

    let addresses = |change: &str, this: &str, other: &str| {
        format!(
            "(SELECT p.snapshot, i.machine_id, i.ip_address, '{change}' FROM ip_addresses_history i JOIN pairs p ON i.snapshot = p.{this} \
             EXCEPT \
             SELECT p.snapshot, i.machine_id, i.ip_address, '{change}' FROM ip_addresses_history i JOIN pairs p ON i.snapshot = p.{other})"
        )
    };
    let want_ips = rows(
        &engine,
        &format!(
            "WITH s AS (SELECT snapshot, lag(snapshot) OVER (ORDER BY snapshot) AS prev FROM snapshots), \
             pairs AS (SELECT snapshot, prev FROM s WHERE prev IS NOT NULL) \
             SELECT * FROM ({} UNION ALL {}) t ORDER BY 1, 2, 3, 4",
            addresses("added", "snapshot", "prev"),
            addresses("removed", "prev", "snapshot")
        ),
    )
    .await;
    let got_ips = rows(
        &engine,
        "SELECT snapshot, machine_id, ip_address, change FROM ip_address_changes ORDER BY 1, 2, 3, 4",
    )
    .await;
    assert_eq!(got_ips, want_ips);
    assert!(!got_ips.is_empty(), "addresses change in these fleets");
    got.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_lake_has_the_changes_a_full_outer_join_finds() {
    let dir = tempdir().expect("tempdir");
    small_lake(dir.path(), 600, 5);
    let n = assert_changes_match_reference(dir.path()).await;
    assert!(n > 50, "a 5% churn changes something every day: {n}");
    // Every kind of change is there.
    let engine = Engine::open(dir.path(), None).expect("opens");
    let kinds = rows(
        &engine,
        "SELECT change, count(*) FROM machine_changes GROUP BY 1 ORDER BY 1",
    )
    .await;
    let names: Vec<_> = kinds
        .iter()
        .map(|r| r[0].clone().unwrap_or_default())
        .collect();
    assert!(names.contains(&"added".to_string()) && names.contains(&"changed".to_string()));
    // The first snapshot has nothing to compare with: no rows of its own.
    let first = rows(
        &engine,
        "SELECT count(*) FROM machine_changes WHERE snapshot = (SELECT min(snapshot) FROM snapshots)",
    )
    .await;
    assert_eq!(first[0][0].as_deref(), Some("0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingested_lake_has_the_changes_a_full_outer_join_finds() {
    use mdesnap::emulator::{Emulator, EmulatorConfig};
    let emu = Emulator::start(EmulatorConfig {
        machines: 300,
        churn: 0.2,
        ..EmulatorConfig::default()
    })
    .await
    .expect("starts");
    let dir = tempdir().expect("tempdir");
    let lake = dir.path().join("lake");
    for day in 0..3 {
        if day > 0 {
            emu.advance(1).expect("advances");
        }
        let o = crate::ingest::options(&lake, &emu.url());
        let (report, _) = crate::ingest::run_ingest(&o).await;
        report.expect("ingests");
    }
    let n = assert_changes_match_reference(&lake).await;
    assert!(n > 20, "a 20% churn changes machines: {n}");
}

/// Removes the change tables from a lake, as a lake written before them looks.
fn strip_changes(lake: &Path) {
    for t in Table::CHANGES {
        let _ = std::fs::remove_dir_all(lake.join(t.name()));
    }
    for entry in std::fs::read_dir(lake.join("_snapshots")).expect("manifests") {
        let path = entry.expect("entry").path();
        let mut m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("reads")).expect("json");
        let o = m.as_object_mut().expect("object");
        o.remove("changes");
        for t in Table::CHANGES {
            o["tables"]
                .as_object_mut()
                .expect("tables")
                .remove(t.name());
        }
        std::fs::write(&path, serde_json::to_vec_pretty(&m).expect("json")).expect("writes");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_restores_the_changes_and_keeps_those_across_a_pruned_snapshot() {
    let dir = tempdir().expect("tempdir");
    let lake = dir.path();
    small_lake(lake, 300, 5);
    let engine = Engine::open(lake, None).expect("opens");
    let all = "SELECT * FROM machine_changes ORDER BY snapshot, id, change, field";
    let before = rows(&engine, all).await;
    assert!(!before.is_empty());

    strip_changes(lake);
    let engine = Engine::open(lake, None).expect("opens");
    assert!(rows(&engine, all).await.is_empty(), "stripped");
    let lake_arg = lake.to_str().expect("utf-8");
    let out = run(&["changes", "rebuild", "--lake", lake_arg]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("rebuilt the changes of 5 snapshot(s); 0 already up to date"),
        "{}",
        stdout(&out)
    );
    let engine = Engine::open(lake, None).expect("opens");
    assert_eq!(
        rows(&engine, all).await,
        before,
        "the same rows as at commit"
    );
    assert_changes_match_reference(lake).await;

    // After pruning the oldest two, the oldest left keeps its changes against the
    // pruned one (still true), and a rebuild leaves them.
    let out = run(&["snapshots", "prune", "--lake", lake_arg, "--keep", "3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for args in [
        &["changes", "rebuild", "--lake", lake_arg][..],
        &["changes", "rebuild", "--force", "--lake", lake_arg],
    ] {
        let out = run(args);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let engine = Engine::open(lake, None).expect("opens");
    let kept: Vec<_> = before
        .iter()
        .filter(|r| r[7].as_deref() >= Some("2026-01-03"))
        .cloned()
        .collect();
    assert_eq!(rows(&engine, all).await, kept);
    assert!(
        crate::leftovers(lake).is_empty(),
        "old change files removed"
    );
}

#[test]
fn diff_prints_the_stored_rows_and_compares_any_two_snapshots() {
    let dir = tempdir().expect("tempdir");
    let lake = dir.path();
    small_lake(lake, 400, 4);
    let lake_arg = lake.to_str().expect("utf-8");
    let csv = |args: &[&str]| {
        let mut all = vec![args[0], "--lake", lake_arg, "--format", "csv"];
        all.extend_from_slice(&args[1..]);
        let out = run(&all);
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    // The last two snapshots: the stored rows of the latest, in the same order.
    let diffed = csv(&["diff"]);
    let stored = csv(&[
        "query",
        "SELECT * FROM machine_changes WHERE snapshot = (SELECT max(snapshot) FROM snapshots) ORDER BY id, change, field",
    ]);
    let mut all = vec!["diff", "--lake", lake_arg, "--format", "csv"];
    let out = run(&all);
    assert_eq!(stdout(&out), diffed);
    assert!(stderr(&out).contains("changes from 20260103T070000Z to 20260104T070000Z"));
    assert!(
        stderr(&out).contains("machines added: "),
        "summary on stderr"
    );
    let sort = |t: &str| {
        let mut lines: Vec<&str> = t.lines().collect();
        lines[1..].sort();
        lines.join("\n")
    };
    assert_eq!(sort(&diffed), sort(&stored), "the same rows as stored");

    // First to last: riskScore rows agree with the two snapshots' own values.
    all.extend(["20260101T070000Z", "latest"]);
    let out = run(&all);
    let risk: Vec<String> = stdout(&out)
        .lines()
        .filter(|l| l.contains(",changed,riskScore,"))
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            format!("{},{},{}", f[1], f[5], f[6])
        })
        .collect();
    let want = csv(&[
        "query",
        "SELECT a.id, a.risk_score, b.risk_score FROM machines_history a JOIN machines_history b \
         ON a.id = b.id WHERE a.snapshot = '2026-01-01T07:00:00Z' AND b.snapshot = '2026-01-04T07:00:00Z' \
         AND a.risk_score IS DISTINCT FROM b.risk_score ORDER BY 1",
    ]);
    let want: Vec<&str> = want.lines().skip(1).collect();
    assert_eq!(risk, want);
    assert!(!risk.is_empty());

    // Errors name what was wrong.
    for (args, message) in [
        (
            vec!["diff", "--lake", lake_arg, "latest", "latest"],
            "nothing to compare",
        ),
        (
            vec!["diff", "--lake", lake_arg, "yesterday"],
            "'yesterday' is not a snapshot id",
        ),
        (
            vec!["diff", "--lake", lake_arg, "2020-01-01"],
            "no snapshot at or before 2020-01-01",
        ),
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains(message), "{}", stderr(&out));
    }
}

#[test]
fn diff_summary_of_the_sample_lake() {
    let lake = sample_data();
    let out = run(&[
        "diff",
        "--lake",
        lake.to_str().expect("utf-8"),
        "--summary",
        "--format",
        "csv",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    insta::assert_snapshot!("diff_summary_sample", stdout(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odata_asks_the_same_question_of_the_changes() {
    let engine = Engine::open(sample_data(), None).expect("opens");
    let sql = rows(
        &engine,
        "SELECT id, old_value FROM machine_changes WHERE field = 'riskScore' AND new_value = 'High' ORDER BY id, snapshot",
    )
    .await;
    assert!(
        !sql.is_empty(),
        "the sample lake has machines turning high risk"
    );
    for url in [
        "machines/changes?$filter=field eq 'riskScore' and newValue eq 'High'&$select=id,oldValue&$orderby=id,snapshot",
        "MachineChanges?$filter=field eq 'riskScore' and newValue eq 'High'&$select=id,oldValue&$orderby=id,snapshot",
    ] {
        let df = engine.odata(url).await.expect("plans");
        let batches = df.collect().await.expect("runs");
        let text = |b: &RecordBatch, i: usize| {
            arrow::compute::cast(b.column(i), &arrow::datatypes::DataType::Utf8).expect("text")
        };
        let got: Vec<Vec<Option<String>>> = batches
            .iter()
            .flat_map(|b| {
                let (id, old) = (text(b, 0), text(b, 1));
                let (id, old) = (id.as_string::<i32>(), old.as_string::<i32>());
                (0..b.num_rows())
                    .map(|r| {
                        vec![
                            Some(id.value(r).to_string()),
                            old.is_valid(r).then(|| old.value(r).to_string()),
                        ]
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(got, sql, "{url}");
    }
}

#[test]
fn an_unreadable_previous_snapshot_costs_the_changes_not_the_snapshot() {
    let dir = tempdir().expect("tempdir");
    let lake = dir.path();
    small_lake(lake, 200, 2);
    // Damage the latest snapshot's machines file.
    let folder = lake.join("machines/snapshot=20260102T070000Z");
    let file = std::fs::read_dir(&folder)
        .expect("folder")
        .map(|e| e.expect("entry").path())
        .find(|p| p.extension().is_some_and(|e| e == "parquet"))
        .expect("a data file");
    std::fs::write(&file, b"not parquet").expect("damaged");
    let lake_arg = lake.to_str().expect("utf-8");
    let out = run(&[
        "generate",
        "--lake",
        lake_arg,
        "--machines",
        "200",
        "--seed",
        "3",
        "--churn",
        "0.05",
        "--append",
        "--days",
        "2",
        "-q",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("snapshot 20260103T070000Z is committed without its changes"),
        "{}",
        stderr(&out)
    );
    let scan = mdesnap::lake::scan_lake(lake).expect("scan");
    let ids: Vec<&str> = scan.snapshots.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "20260101T070000Z",
            "20260102T070000Z",
            "20260103T070000Z",
            "20260104T070000Z"
        ]
    );
    let third = &scan.snapshots[2];
    assert!(
        third.rows(Table::Machines) > 0,
        "the snapshot itself is whole"
    );
    assert!(third.changes.is_none() && third.table(Table::MachineChanges).is_none());
    // The next one compares with it as usual.
    let fourth = &scan.snapshots[3];
    assert_eq!(
        fourth.changes.as_ref().and_then(|c| c.previous.as_deref()),
        Some("20260103T070000Z")
    );
    assert!(fourth.rows(Table::MachineChanges) > 0);
}
