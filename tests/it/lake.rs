//! The lake's guarantees through the library: atomic commit, the lock, leftovers,
//! id collisions, pruning, and damage confined to the snapshot it hits.

use chrono::{TimeZone, Utc};
use mdesnap::lake::{PruneOptions, SnapshotWriter, WriterOptions, prune, scan_lake};
use mdesnap::{Engine, Error, Table};
use tempfile::tempdir;

use crate::{small_lake, user_machine_pairs};

fn options(second: u32) -> WriterOptions {
    let t = Utc
        .with_ymd_and_hms(2026, 11, 23, 7, 0, second)
        .single()
        .expect("valid time");
    WriterOptions::new(t, "test", &[Table::UserMachines])
}

async fn count(engine: &Engine, sql: &str) -> i64 {
    crate::scalar(engine, sql).await.parse().expect("a count")
}

#[tokio::test]
async fn commit_publishes_every_table_at_once() {
    let dir = tempdir().expect("tempdir");
    let lake = dir.path().join("lake");
    let mut w = SnapshotWriter::create(&lake, options(0)).expect("writer");
    w.append(Table::UserMachines, &user_machine_pairs(10))
        .expect("append");
    // Before commit the data files exist, yet the lake has no snapshot.
    assert!(scan_lake(&lake).expect("scan").snapshots.is_empty());
    assert!(matches!(
        Engine::open(&lake, None),
        Err(Error::EmptyLake(_))
    ));
    let m = w.commit().expect("commit");
    assert_eq!(m.id, "20261123T070000Z");
    assert_eq!(m.rows(Table::UserMachines), 10);
    let engine = Engine::open(&lake, None).expect("opens");
    // Distinct values of a column: only the Parquet data can answer (count(*) is
    // answered from the manifest).
    assert_eq!(
        count(
            &engine,
            "SELECT count(DISTINCT user_id) + count(DISTINCT machine_id) FROM user_machines"
        )
        .await,
        20
    );
    assert_eq!(
        crate::scalar(&engine, "SELECT max(user_id) FROM user_machines").await,
        "user9"
    );
    assert_eq!(count(&engine, "SELECT count(id) FROM machines").await, 0);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&lake).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "a new lake is private to its owner");
    }
}

#[tokio::test]
async fn a_dropped_writer_leaves_nothing_and_the_same_second_gets_the_next_id() {
    let dir = tempdir().expect("tempdir");
    let lake = dir.path();
    {
        let mut w = SnapshotWriter::create(lake, options(0)).expect("writer");
        w.append(Table::UserMachines, &user_machine_pairs(3))
            .expect("append");
        // The file being written exists until the writer goes.
        assert!(
            walk(lake).iter().any(|p| p.ends_with(".parquet.tmp")),
            "{:?}",
            walk(lake)
        );
    }
    let leftovers: Vec<_> = walk(lake)
        .into_iter()
        .filter(|p| p.contains("snapshot="))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(
        !lake
            .join("user_machines/snapshot=20261123T070000Z")
            .exists()
    );

    let a = SnapshotWriter::create(lake, options(0))
        .expect("writer")
        .commit()
        .expect("commit");
    let b = SnapshotWriter::create(lake, options(0))
        .expect("writer")
        .commit()
        .expect("commit");
    assert_eq!(a.id, "20261123T070000Z");
    assert_eq!(b.id, "20261123T070001Z");
}

#[test]
fn a_second_writer_is_refused_with_the_holder_named() {
    let dir = tempdir().expect("tempdir");
    let first = SnapshotWriter::create(dir.path(), options(0)).expect("writer");
    let err = SnapshotWriter::create(dir.path(), options(1)).expect_err("locked");
    let text = err.to_string();
    assert!(text.contains("locked by another writer"), "{text}");
    assert!(
        text.contains(&format!("pid {}", std::process::id())),
        "{text}"
    );
    assert!(text.contains("--wait"), "{text}");
    drop(first);
    SnapshotWriter::create(dir.path(), options(1)).expect("free again");
}

#[test]
fn a_waiting_writer_proceeds_when_the_holder_finishes() {
    let dir = tempdir().expect("tempdir");
    let lake = dir.path().to_path_buf();
    let first = SnapshotWriter::create(&lake, options(0)).expect("writer");
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = {
        let lake = lake.clone();
        std::thread::spawn(move || {
            let mut o = options(0);
            o.wait = true;
            let m = SnapshotWriter::create(&lake, o).and_then(|w| w.commit());
            tx.send(()).ok();
            m
        })
    };
    // The waiter cannot finish while the lock is held.
    assert!(
        rx.recv_timeout(std::time::Duration::from_millis(300))
            .is_err()
    );
    first.commit().expect("commit");
    let m = waiter.join().expect("thread").expect("waiter commits");
    assert_eq!(m.id, "20261123T070001Z");
}

#[tokio::test]
async fn leftovers_of_a_crash_are_invisible_and_removed_by_the_next_writer() {
    let dir = tempdir().expect("tempdir");
    let lake = dir.path();
    SnapshotWriter::create(lake, options(0))
        .expect("writer")
        .commit()
        .expect("commit");
    // What a killed writer leaves: data without a manifest, a temporary manifest,
    // a temporary file beside a committed snapshot's files.
    let orphan = lake.join("machines/snapshot=20261124T070000Z");
    std::fs::create_dir_all(&orphan).expect("mkdir");
    std::fs::write(orphan.join("part-00000-x.parquet"), b"half").expect("write");
    std::fs::write(lake.join("_snapshots/.20261124T070000Z.json.x.tmp"), b"{").expect("write");
    let beside = lake.join("user_machines/snapshot=20261123T070000Z/.part-00001-x.parquet.tmp");
    std::fs::create_dir_all(beside.parent().expect("a folder")).expect("mkdir");
    std::fs::write(&beside, b"half").expect("write");
    let engine = Engine::open(lake, None).expect("leftovers do not break reading");
    assert_eq!(engine.lake_scan().snapshots.len(), 1);

    let mut left = crate::leftovers(lake);
    left.sort();
    let mut expected = vec![
        lake.join("_snapshots/.20261124T070000Z.json.x.tmp"),
        orphan.clone(),
        beside.clone(),
    ];
    expected.sort();
    assert_eq!(left, expected);
    assert!(
        orphan.exists() && beside.exists(),
        "dry run removes nothing"
    );

    SnapshotWriter::create(lake, options(5))
        .expect("writer")
        .commit()
        .expect("commit");
    assert!(!orphan.exists() && !beside.exists());
    let left = crate::leftovers(lake);
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn prune_keeps_the_newest_and_removes_the_manifest_with_the_data() {
    let dir = tempdir().expect("tempdir");
    let lake = dir.path();
    small_lake(lake, 20, 5);
    let report = prune(
        lake,
        &PruneOptions {
            keep: Some(2),
            ..Default::default()
        },
    )
    .expect("prune");
    let removed: Vec<String> = report.snapshots.iter().map(ToString::to_string).collect();
    assert_eq!(
        removed,
        ["20260101T070000Z", "20260102T070000Z", "20260103T070000Z"]
    );
    let scan = scan_lake(lake).expect("scan");
    assert_eq!(scan.snapshots.len(), 2);
    assert!(!lake.join("machines/snapshot=20260101T070000Z").exists());

    // Both rules: a snapshot goes only when neither keeps it.
    let now = Utc.with_ymd_and_hms(2026, 1, 8, 0, 0, 0).single();
    let older = PruneOptions {
        keep: Some(1),
        older_than: Some(std::time::Duration::from_secs(5 * 86_400)),
        now,
        ..Default::default()
    };
    let report = prune(lake, &older).expect("prune");
    assert!(
        report.snapshots.is_empty(),
        "both remaining are younger than 5 days"
    );
    let older = PruneOptions {
        older_than: Some(std::time::Duration::from_secs(3 * 86_400)),
        now,
        ..older
    };
    let report = prune(lake, &older).expect("prune");
    assert_eq!(report.snapshots.len(), 1);
}

#[tokio::test]
async fn a_corrupt_manifest_spoils_only_its_snapshot() {
    let dir = tempdir().expect("tempdir");
    let lake = dir.path();
    small_lake(lake, 20, 3);
    let bad = lake.join("_snapshots/20260103T070000Z.json");
    std::fs::write(&bad, b"{ not json").expect("write");
    let scan = scan_lake(lake).expect("scan");
    assert_eq!(scan.snapshots.len(), 2);
    assert_eq!(scan.broken.len(), 1);
    assert!(
        scan.broken[0]
            .error
            .to_string()
            .contains("20260103T070000Z.json")
    );
    let engine = Engine::open(lake, None).expect("others stay readable");
    assert_eq!(
        engine.current_snapshot().map(|s| s.to_string()).as_deref(),
        Some("20260102T070000Z")
    );
    assert_eq!(
        count(
            &engine,
            "SELECT count(DISTINCT snapshot) FROM machines_history"
        )
        .await,
        2
    );
    // Its data is not a leftover: it may still be recovered by hand.
    let left = crate::leftovers(lake);
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn a_corrupt_data_file_is_named() {
    let dir = tempdir().expect("tempdir");
    let lake = dir.path();
    small_lake(lake, 20, 2);
    let scan = scan_lake(lake).expect("scan");
    let file = &scan.snapshots[1].tables["machines"].files[0];
    let path = lake.join(&file.path);
    let len = std::fs::metadata(&path).expect("meta").len() as usize;
    std::fs::write(&path, vec![7u8; len]).expect("overwrite with garbage, same size");
    let engine = Engine::open(lake, None).expect("opens");
    let err = engine.verify_files().expect_err("corrupt");
    assert!(matches!(err, Error::CorruptFile { .. }), "{err}");
    assert!(err.to_string().contains(&file.path), "{err}");
    // A query through the library names the file too.
    let err = engine
        .sql("SELECT count(DISTINCT computer_dns_name) FROM machines")
        .await
        .expect("plans")
        .collect()
        .await
        .expect_err("the latest snapshot's file is garbage");
    assert!(err.to_string().contains(&file.path), "{err}");
    // So does a short file, and a missing one.
    let states = &scan.snapshots[1].tables["security_states"].files[0];
    let states_path = lake.join(&states.path);
    let bytes = std::fs::read(&states_path).expect("read");
    std::fs::write(&states_path, &bytes[..bytes.len() / 2]).expect("truncate");
    let err = engine
        .sql("SELECT max(build) FROM security_states")
        .await
        .expect("plans")
        .collect()
        .await
        .expect_err("short file");
    assert!(err.to_string().contains(&states.path), "{err}");
    let users = &scan.snapshots[1].tables["user_machines"].files[0];
    std::fs::remove_file(lake.join(&users.path)).expect("remove");
    let err = engine
        .sql("SELECT max(user_id) FROM user_machines")
        .await
        .expect("plans")
        .collect()
        .await
        .expect_err("missing file");
    assert!(err.to_string().contains(&users.path), "{err}");
    // The other snapshot's rows are still there.
    let df = engine
        .sql("SELECT id FROM machines_history WHERE snapshot < '2026-01-02T00:00:00Z'")
        .await
        .expect("plans");
    assert_eq!(df.count().await.expect("the intact snapshot reads"), 20);
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p.to_string_lossy().into_owned());
            }
        }
    }
    out
}

/// The data files of `table` under `lake`, in name order.
fn parquet_files(lake: &std::path::Path, table: Table) -> Vec<String> {
    let mut files: Vec<String> = walk(&lake.join(table.name()))
        .into_iter()
        .filter(|f| f.ends_with(".parquet"))
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn sorted_tables_hold_each_row_group_in_order_and_lose_no_row() {
    use arrow::array::{Array, AsArray};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    let source = tempdir().expect("tempdir");
    small_lake(source.path(), 2500, 1);
    // Appends smaller than a row group, and appends of over two row groups.
    for batch_rows in [333, 2200] {
        let dir = tempdir().expect("tempdir");
        let mut options = options(0);
        options.tables = vec![Table::Machines, Table::IpAddresses];
        options.row_group_rows = 1000;
        options.target_file_bytes = 40_000;
        let mut w = SnapshotWriter::create(dir.path(), options).expect("writer");
        // Row groups are cut across batches, files roll in between.
        for table in [Table::Machines, Table::IpAddresses] {
            for f in parquet_files(source.path(), table) {
                let file = std::fs::File::open(&f).expect("opens");
                let reader = ParquetRecordBatchReaderBuilder::try_new(file)
                    .expect("a Parquet file")
                    .with_batch_size(batch_rows)
                    .build()
                    .expect("reader");
                for batch in reader {
                    w.append(table, &batch.expect("reads")).expect("append");
                }
            }
        }
        w.commit().expect("commit");

        for table in [Table::Machines, Table::IpAddresses] {
            let column = table.sort_column().expect("a sorted table");
            let columns = table.sort_columns().expect("a sorted table");
            assert_eq!(columns[0], column);
            let files = parquet_files(dir.path(), table);
            assert!(files.len() > 1, "{table}: files roll over ({files:?})");
            let mut groups = 0;
            // Rows whose first sort column ties with the row before.
            let mut ties = 0;
            for f in &files {
                let open = || {
                    ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(f).expect("opens"))
                        .expect("a Parquet file")
                };
                let meta = open().metadata().clone();
                let index = open()
                    .parquet_schema()
                    .columns()
                    .iter()
                    .position(|c| c.name() == column)
                    .expect("the sort column is in the file");
                for (i, rg) in meta.row_groups().iter().enumerate() {
                    groups += 1;
                    assert!(
                        (1..=1000).contains(&rg.num_rows()),
                        "{f}: row group {i} has {} rows",
                        rg.num_rows()
                    );
                    assert_eq!(
                        rg.column(index).dictionary_page_offset(),
                        None,
                        "{f}: {column} is plain encoded"
                    );
                    // Each row's sort columns, in order.
                    let mut values: Vec<Vec<Option<String>>> = Vec::new();
                    for batch in open().with_row_groups(vec![i]).build().expect("reader") {
                        let batch = batch.expect("reads");
                        let cols: Vec<_> = columns
                            .iter()
                            .map(|c| batch.column_by_name(c).expect("column").as_string::<i32>())
                            .collect();
                        values.extend((0..batch.num_rows()).map(|r| {
                            cols.iter()
                                .map(|c| (!c.is_null(r)).then(|| c.value(r).to_string()))
                                .collect()
                        }));
                    }
                    // Ascending, nulls last, then by the next column where one ties:
                    // (is_none, value) of each column never decreases.
                    let key = |v: &Vec<Option<String>>| -> Vec<(bool, Option<String>)> {
                        v.iter().map(|c| (c.is_none(), c.clone())).collect()
                    };
                    let unsorted = values.windows(2).position(|w| key(&w[0]) > key(&w[1]));
                    assert_eq!(unsorted, None, "{f}: row group {i} out of order");
                    ties += values.windows(2).filter(|w| w[0][0] == w[1][0]).count();
                }
            }
            assert!(groups >= 3, "{table}: {groups} row groups");
            assert!(ties > 10, "{table}: {ties} rows tie on {column}");
        }

        // The same rows as the source, every column.
        let before = Engine::open(source.path(), None).expect("opens");
        let after = Engine::open(dir.path(), None).expect("opens");
        for table in [Table::Machines, Table::IpAddresses] {
            let sql = format!("SELECT * FROM {}", table.name());
            let (a, b) = (
                crate::sorted_lines(&before, &sql).await,
                crate::sorted_lines(&after, &sql).await,
            );
            assert!(a.len() > 1000, "{table}: {} rows", a.len());
            assert_eq!(a, b, "{table}: rows differ (batches of {batch_rows})");
        }
    }
}

#[test]
fn machine_ids_and_other_distinct_columns_have_no_dictionary_and_statuses_have_one() {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    let dir = tempdir().expect("tempdir");
    // Two days: the second snapshot also writes the change tables.
    small_lake(dir.path(), 300, 2);
    let mut checked = Vec::new();
    for table in Table::STORED {
        let id = table.machine_id_column();
        assert!(
            table.schema().field_with_name(id).is_ok(),
            "{table} has its machine id column {id}"
        );
        let distinct: Vec<String> = table
            .distinct_columns()
            .iter()
            .map(|path| path.join("."))
            .collect();
        assert!(distinct.iter().any(|c| c == id), "{table}: {distinct:?}");
        for f in parquet_files(dir.path(), table) {
            let file = std::fs::File::open(&f).expect("opens");
            let builder = ParquetRecordBatchReaderBuilder::try_new(file).expect("a Parquet file");
            let position = |name: &str| {
                builder
                    .parquet_schema()
                    .columns()
                    .iter()
                    .position(|c| c.path().string() == name)
            };
            for (i, rg) in builder.metadata().row_groups().iter().enumerate() {
                for column in &distinct {
                    let index = position(column)
                        .unwrap_or_else(|| panic!("{f}: {column} is a column of the file"));
                    assert_eq!(
                        rg.column(index).dictionary_page_offset(),
                        None,
                        "{f}: row group {i}: {column} is written without a dictionary"
                    );
                }
                // Repeating values still get one: the setting is per column.
                for column in ["health_status", "user_id", "type"] {
                    if let Some(index) = position(column) {
                        assert!(
                            rg.column(index).dictionary_page_offset().is_some(),
                            "{f}: row group {i}: {column} has a dictionary"
                        );
                    }
                }
            }
            checked.push(table);
        }
    }
    for table in [
        Table::Machines,
        Table::IpAddresses,
        Table::SecurityStates,
        Table::UserMachines,
        Table::MachineChanges,
    ] {
        assert!(checked.contains(&table), "{table} has files to check");
    }
}
