//! The command line as users and scripts see it: formats, files, exit codes, help.

use tempfile::tempdir;

use crate::{run, sample_data, small_lake, stderr, stdout};

#[test]
fn query_prints_a_table_and_counts_the_latest_snapshot() {
    let lake = sample_data();
    let lake = lake.to_str().expect("utf-8 path");
    // count(DISTINCT id) reads the id column (count(*) is answered from the manifest).
    let o = run(&[
        "query",
        "--lake",
        lake,
        "SELECT count(DISTINCT id) AS n FROM machines",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let latest = run(&[
        "query",
        "--lake",
        lake,
        "--format",
        "csv",
        "SELECT machines_rows FROM snapshots ORDER BY snapshot DESC LIMIT 1",
    ]);
    let expected = stdout(&latest).lines().nth(1).expect("a row").to_string();
    assert!(
        stdout(&o).contains(&format!("| {expected} ")),
        "{}",
        stdout(&o)
    );
}

#[test]
fn csv_has_a_header_for_zero_rows_and_json_nested_values() {
    let lake = sample_data();
    let lake = lake.to_str().expect("utf-8 path");
    let o = run(&[
        "query",
        "--lake",
        lake,
        "--format",
        "csv",
        "SELECT id, os_platform FROM machines WHERE false",
    ]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout(&o), "id,os_platform\n");

    let o = run(&[
        "query",
        "--lake",
        lake,
        "--format",
        "csv",
        "SELECT computer_dns_name, last_seen, machine_tags, rbac_group_name FROM machines WHERE computer_dns_name = 'mymachine1.contoso.com'",
    ]);
    let text = stdout(&o);
    let row = text.lines().nth(1).expect("one row");
    assert!(row.starts_with("mymachine1.contoso.com,20"), "{row}");
    assert!(
        row.contains("Z,\"[\"\"Tag1\"\",\"\"Tag2\"\"]\",The-A-Team"),
        "{row}"
    );

    let o = run(&[
        "query",
        "--lake",
        lake,
        "--format",
        "json",
        "SELECT computer_dns_name, machine_tags, vm_metadata FROM machines WHERE computer_dns_name = 'examples-vm10'",
    ]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json array");
    assert_eq!(v[0]["machine_tags"], serde_json::json!([]));
    assert_eq!(v[0]["vm_metadata"]["cloud_provider"], "Azure");

    let o = run(&[
        "query",
        "--lake",
        lake,
        "--format",
        "ndjson",
        "SELECT id FROM machines LIMIT 3",
    ]);
    assert_eq!(stdout(&o).lines().count(), 3);
    let o = run(&[
        "query",
        "--lake",
        lake,
        "--format",
        "json",
        "SELECT id FROM machines WHERE false",
    ]);
    assert_eq!(stdout(&o).trim(), "[]");
}

#[test]
fn table_shows_null_as_null() {
    let lake = sample_data();
    let o = run(&[
        "query",
        "--lake",
        lake.to_str().expect("utf-8"),
        "SELECT rbac_group_name FROM machines WHERE computer_dns_name = 'desktop-39g9tgl'",
    ]);
    assert!(stdout(&o).contains("| NULL "), "{}", stdout(&o));
}

#[test]
fn output_files_by_extension() {
    let dir = tempdir().expect("tempdir");
    let lake = sample_data();
    let lake = lake.to_str().expect("utf-8");
    for ext in ["parquet", "csv", "json", "ndjson"] {
        let path = dir.path().join(format!("out.{ext}"));
        let o = run(&[
            "query",
            "--lake",
            lake,
            "--output",
            path.to_str().expect("utf-8"),
            "SELECT id, machine_tags FROM machines ORDER BY id LIMIT 7",
        ]);
        assert!(o.status.success(), "{ext}: {}", stderr(&o));
        assert!(stderr(&o).contains("wrote 7 rows"), "{}", stderr(&o));
        assert!(path.metadata().expect("written").len() > 0);
    }
    // The Parquet file reads back with the same rows.
    let engine_dir = dir.path().join("out.parquet");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let n = rt.block_on(async {
        let ctx = datafusion::prelude::SessionContext::new();
        let df = ctx
            .read_parquet(engine_dir.to_str().expect("utf-8"), Default::default())
            .await
            .expect("reads");
        df.count().await.expect("counts")
    });
    assert_eq!(n, 7);
    let bad = dir.path().join("out.xlsx");
    let o = run(&[
        "query",
        "--lake",
        lake,
        "--output",
        bad.to_str().expect("utf-8"),
        "SELECT 1",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("out.xlsx"), "{}", stderr(&o));
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn errors_exit_2_with_a_message_naming_what_was_wrong() {
    let dir = tempdir().expect("tempdir");
    let missing = dir.path().join("nowhere");
    let o = run(&[
        "query",
        "--lake",
        missing.to_str().expect("utf-8"),
        "SELECT 1",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("nowhere") && stderr(&o).contains("does not exist"),
        "{}",
        stderr(&o)
    );

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    let o = run(&[
        "query",
        "--lake",
        empty.to_str().expect("utf-8"),
        "SELECT 1",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("no committed snapshots"),
        "{}",
        stderr(&o)
    );

    let lake = sample_data();
    let lake = lake.to_str().expect("utf-8");
    let o = run(&["query", "--lake", lake, "SELEC 1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("SELEC"), "{}", stderr(&o));
    let o = run(&[
        "query",
        "--lake",
        lake,
        "--as-of",
        "last tuesday",
        "SELECT 1",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("'last tuesday' is not a time"),
        "{}",
        stderr(&o)
    );
    let o = run(&["query", "--lake", lake, "--as-of", "2020-01-01", "SELECT 1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("no snapshot taken at or before 2020-01-01T00:00:00Z"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn as_of_points_the_latest_tables_back() {
    let lake = sample_data();
    let lake = lake.to_str().expect("utf-8");
    for (as_of, expected) in [
        ("2026-01-03", "20260102T070000Z"),
        ("20260104T070000Z", "20260104T070000Z"),
    ] {
        let o = run(&[
            "query",
            "--lake",
            lake,
            "--as-of",
            as_of,
            "--format",
            "csv",
            "SELECT count(DISTINCT id) FROM machines",
        ]);
        let at = run(&[
            "query",
            "--lake",
            lake,
            "--format",
            "csv",
            &format!(
                "SELECT machines_rows FROM snapshots WHERE snapshot = to_timestamp('{}')",
                rfc(expected)
            ),
        ]);
        assert_eq!(
            stdout(&o).lines().nth(1),
            stdout(&at).lines().nth(1),
            "{as_of}"
        );
    }
}

fn rfc(id: &str) -> String {
    mdesnap::snapshot::format_time(id.parse::<mdesnap::SnapshotId>().expect("id").time())
}

#[test]
fn generate_refuses_a_lake_with_snapshots_unless_appending() {
    let dir = tempdir().expect("tempdir");
    let lake = dir.path().join("lake");
    small_lake(&lake, 10, 2);
    let l = lake.to_str().expect("utf-8");
    let o = run(&["generate", "--lake", l, "--machines", "10", "--days", "1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--append"), "{}", stderr(&o));
    let o = run(&[
        "generate",
        "--lake",
        l,
        "--machines",
        "10",
        "--days",
        "2",
        "--seed",
        "3",
        "--churn",
        "0.05",
        "--append",
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&["snapshots", "list", "--lake", l, "--format", "csv"]);
    let ids: Vec<String> = stdout(&o)
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').next().map(str::to_owned))
        .collect();
    // The same fleet carries on: days 2 and 3 follow days 0 and 1.
    assert_eq!(
        ids,
        [
            "2026-01-01T07:00:00Z",
            "2026-01-02T07:00:00Z",
            "2026-01-03T07:00:00Z",
            "2026-01-04T07:00:00Z"
        ]
    );
    let o = run(&["generate", "--lake", l, "--machines", "3"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("invalid value '3' for '--machines"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn snapshots_show_and_prune_from_the_command_line() {
    let dir = tempdir().expect("tempdir");
    small_lake(dir.path(), 10, 3);
    let l = dir.path().to_str().expect("utf-8");
    let o = run(&["snapshots", "show", "--lake", l, "20260102T070000Z"]);
    let m: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("manifest json");
    assert_eq!(m["id"], "20260102T070000Z");
    assert_eq!(m["tables"]["machines"]["rows"], 10);
    let o = run(&["snapshots", "show", "--lake", l, "20990101T000000Z"]);
    assert_eq!(o.status.code(), Some(2));
    let o = run(&[
        "snapshots",
        "prune",
        "--lake",
        l,
        "--keep",
        "1",
        "--dry-run",
    ]);
    assert!(
        stdout(&o).contains("would remove snapshot 20260101T070000Z"),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains("would remove 2 snapshots and 0 leftovers"),
        "{}",
        stdout(&o)
    );
    let o = run(&[
        "snapshots",
        "prune",
        "--lake",
        l,
        "--older-than",
        "10 parsecs",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("'10 parsecs' is not a duration"),
        "{}",
        stderr(&o)
    );
    // A duration beyond the calendar removes nothing and does not crash.
    let o = run(&[
        "snapshots",
        "prune",
        "--lake",
        l,
        "--older-than",
        "100000000d",
        "--dry-run",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("would remove 0 snapshots"),
        "{}",
        stdout(&o)
    );
    let o = run(&["snapshots", "prune", "--lake", l, "--keep", "1"]);
    assert!(o.status.success());
    let o = run(&["snapshots", "list", "--lake", l, "--format", "csv"]);
    assert_eq!(stdout(&o).lines().count(), 2, "{}", stdout(&o));
}

#[test]
fn a_closed_pipe_is_not_an_error() {
    use std::process::Stdio;
    let lake = sample_data();
    let mut child = crate::bin()
        .args([
            "query",
            "--lake",
            lake.to_str().expect("utf-8"),
            "--format",
            "ndjson",
            "SELECT * FROM machines_history",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawns");
    // Read one line, then hang up.
    let mut out = child.stdout.take().expect("stdout");
    let mut first = [0u8; 16];
    std::io::Read::read_exact(&mut out, &mut first).expect("some output");
    drop(out);
    let status = child.wait().expect("exits");
    assert_eq!(status.code(), Some(0));
}
