//! Questions the catalog answers from the manifests instead of the data, and the plans
//! mdesnap's rules rewrite: each answer must be the plain engine's (DataFusion alone),
//! and each rewrite must happen where it is exact, and only there.

use std::path::Path;
use std::sync::Arc;

use arrow::util::pretty::pretty_format_batches;
use chrono::{TimeZone, Utc};
use datafusion::physical_plan::ExecutionPlan;
use mdesnap::lake::{SnapshotWriter, WriterOptions};
use mdesnap::{Engine, EngineOptions, Table};
use tempfile::tempdir;

use crate::{collect, user_machine_pairs};

/// A lake of four snapshots, one a second from 07:00:00, whose `user_machines` has
/// 3, 0, 5 and 2 rows: the second snapshot took the table and found nothing.
fn lake(dir: &std::path::Path) {
    for (second, rows) in [3usize, 0, 5, 2].into_iter().enumerate() {
        let t = Utc
            .with_ymd_and_hms(2026, 11, 23, 7, 0, second as u32)
            .single()
            .expect("valid time");
        let mut w =
            SnapshotWriter::create(dir, WriterOptions::new(t, "test", &[Table::UserMachines]))
                .expect("writer");
        w.append(Table::UserMachines, &user_machine_pairs(rows))
            .expect("append");
        w.commit().expect("commit");
    }
}

async fn text(engine: &Engine, sql: &str) -> String {
    let batches = collect(engine, sql).await;
    pretty_format_batches(&batches).expect("prints").to_string()
}

/// The lake in `dir` with the plain engine: every rule of mdesnap's off.
fn plain(dir: &Path) -> Engine {
    let options = EngineOptions {
        plain: true,
        ..EngineOptions::default()
    };
    Engine::open_with(dir, options).expect("opens")
}

/// `sql`'s answer from `engine`, which must be the plain engine's.
async fn same_as_plain(engine: &Engine, plain: &Engine, sql: &str) -> String {
    let ours = text(engine, sql).await;
    assert_eq!(
        ours,
        text(plain, sql).await,
        "the plain engine answers otherwise: {sql}"
    );
    ours
}

/// The physical plan `engine` makes of `sql`.
async fn physical_plan(engine: &Engine, sql: &str) -> Arc<dyn ExecutionPlan> {
    let df = engine.sql(sql).await.expect("plans");
    df.create_physical_plan().await.expect("a physical plan")
}

async fn logical_plan(engine: &Engine, sql: &str) -> String {
    let plan = text(engine, &format!("EXPLAIN {sql}")).await;
    plan.lines()
        .take_while(|l| !l.contains("physical_plan"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn distinct_snapshots_come_from_the_manifests_and_equal_the_data() {
    let dir = tempdir().expect("tempdir");
    lake(dir.path());
    let engine = Engine::open(dir.path(), None).expect("opens");
    let plain = plain(dir.path());

    let distinct = "SELECT DISTINCT snapshot FROM user_machines_history ORDER BY 1";
    // count(user_id) reads the data: no rewrite can answer it from the manifests.
    let from_data = "SELECT snapshot FROM user_machines_history GROUP BY snapshot \
                     HAVING count(user_id) > 0 ORDER BY 1";
    let plan = logical_plan(&engine, distinct).await;
    assert!(plan.contains("Values:"), "{plan}");
    assert!(!plan.contains("TableScan"), "{plan}");
    assert!(logical_plan(&plain, distinct).await.contains("TableScan"));
    assert!(
        logical_plan(&engine, from_data).await.contains("TableScan"),
        "the reference query reads the data"
    );
    let answer = same_as_plain(&engine, &plain, distinct).await;
    assert_eq!(answer, text(&engine, from_data).await);
    // The snapshot that found no rows is not among them; the order is ascending.
    assert_eq!(
        answer
            .lines()
            .filter(|l| l.contains("2026-11-23T07:00:0"))
            .collect::<Vec<_>>(),
        [
            "| 2026-11-23T07:00:00Z |",
            "| 2026-11-23T07:00:02Z |",
            "| 2026-11-23T07:00:03Z |"
        ]
    );

    // A filter on the snapshot is applied to the manifests' snapshots.
    let newest_two = "SELECT snapshot FROM (SELECT DISTINCT snapshot FROM user_machines_history \
                      WHERE snapshot < '2026-11-23T07:00:03Z') s ORDER BY snapshot DESC LIMIT 2";
    let got = same_as_plain(&engine, &plain, newest_two).await;
    assert!(logical_plan(&engine, newest_two).await.contains("Values:"));
    assert_eq!(
        got.lines()
            .filter(|l| l.contains("2026-11-23T07:00:0"))
            .collect::<Vec<_>>(),
        ["| 2026-11-23T07:00:02Z |", "| 2026-11-23T07:00:00Z |"]
    );

    // A filter on another column needs the data: only the snapshot with user3 (5 rows).
    let by_user =
        "SELECT DISTINCT snapshot FROM user_machines_history WHERE user_id = 'user3' ORDER BY 1";
    assert!(logical_plan(&engine, by_user).await.contains("TableScan"));
    let got = same_as_plain(&engine, &plain, by_user).await;
    assert_eq!(
        got.lines()
            .filter(|l| l.contains("2026-11-23T07:00:0"))
            .collect::<Vec<_>>(),
        ["| 2026-11-23T07:00:02Z |"]
    );

    // Rows per snapshot are the manifests' counts; count(user_id) reads the data.
    let counts = "SELECT snapshot, count(*) AS n FROM user_machines_history \
                  WHERE snapshot > '2026-11-23T07:00:00Z' GROUP BY snapshot ORDER BY 1";
    let counted = "SELECT snapshot, count(user_id) AS n FROM user_machines_history \
                   WHERE snapshot > '2026-11-23T07:00:00Z' GROUP BY snapshot ORDER BY 1";
    let plan = logical_plan(&engine, counts).await;
    assert!(
        plan.contains("Values:") && !plan.contains("TableScan"),
        "{plan}"
    );
    let got = same_as_plain(&engine, &plain, counts).await;
    assert_eq!(got, text(&engine, counted).await);
    assert_eq!(
        got.lines()
            .filter(|l| l.contains("2026-11-23T07:00:0"))
            .collect::<Vec<_>>(),
        [
            "| 2026-11-23T07:00:02Z | 5 |",
            "| 2026-11-23T07:00:03Z | 2 |"
        ]
    );
    // Unnamed, and in an expression: the plan above still finds its columns.
    let got = same_as_plain(
        &engine,
        &plain,
        "SELECT count(*) * 10 AS tenfold FROM user_machines_history GROUP BY snapshot ORDER BY 1",
    )
    .await;
    assert_eq!(
        got.lines()
            .filter(|l| l.starts_with("| ") && !l.contains("tenfold"))
            .collect::<Vec<_>>(),
        ["| 20      |", "| 30      |", "| 50      |"]
    );
    // A filtered or distinct count needs the data.
    for sql in [
        "SELECT snapshot, count(*) FILTER (WHERE user_id = 'user3') FROM user_machines_history \
         GROUP BY snapshot",
        "SELECT snapshot, count(DISTINCT user_id) FROM user_machines_history GROUP BY snapshot",
        "SELECT snapshot, count(user_id) FROM user_machines_history GROUP BY snapshot",
    ] {
        assert!(
            logical_plan(&engine, sql).await.contains("TableScan"),
            "{sql}"
        );
    }

    // A table no snapshot took: no rows, and no error.
    let none = "SELECT DISTINCT snapshot FROM machines_history";
    assert!(!logical_plan(&engine, none).await.contains("TableScan"));
    let batches = collect(&engine, none).await;
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 0);
    assert_eq!(text(&engine, none).await, text(&plain, none).await);
}

#[tokio::test]
async fn latest_min_and_max_come_from_the_footers_and_equal_the_data() {
    let dir = tempdir().expect("tempdir");
    crate::small_lake(dir.path(), 300, 3);
    let mut engine = Engine::open(dir.path(), None).expect("opens");
    let mut plain = plain(dir.path());
    let from_stats = "SELECT max(last_seen) AS a, min(first_seen) AS b FROM machines";
    // ORDER BY ... LIMIT 1 reads the column: no statistic answers it.
    let from_data = "SELECT \
        (SELECT last_seen FROM machines WHERE last_seen IS NOT NULL ORDER BY 1 DESC LIMIT 1) AS a, \
        (SELECT first_seen FROM machines WHERE first_seen IS NOT NULL ORDER BY 1 LIMIT 1) AS b";
    let plan = text(&engine, &format!("EXPLAIN {from_stats}")).await;
    assert!(plan.contains("PlaceholderRowExec"), "{plan}");
    assert!(!plan.contains("DataSourceExec"), "{plan}");
    let plan = text(&plain, &format!("EXPLAIN {from_stats}")).await;
    assert!(plan.contains("DataSourceExec"), "{plan}");
    let latest = same_as_plain(&engine, &plain, from_stats).await;
    assert_eq!(latest, text(&engine, from_data).await);

    // Pointed at the first snapshot, the statistics are that snapshot's own.
    let first = mdesnap::lake::scan_lake(dir.path())
        .expect("scan")
        .snapshots[0]
        .snapshot_id()
        .expect("id");
    engine.set_as_of(Some(first.time())).expect("as of");
    plain.set_as_of(Some(first.time())).expect("as of");
    let earlier = same_as_plain(&engine, &plain, from_stats).await;
    assert_eq!(earlier, text(&engine, from_data).await);
    assert_ne!(earlier, latest, "the snapshots' last_seen differ");
}

#[tokio::test]
async fn a_max_beyond_the_footers_truncated_statistics_is_read_from_the_data() {
    use std::sync::Arc;

    use arrow::array::{RecordBatch, StringArray};

    let dir = tempdir().expect("tempdir");
    // Parquet statistics keep 64 bytes of a string: these differ only after that.
    let stem = "x".repeat(70);
    let users: Vec<String> = ["a", "c", "b"]
        .iter()
        .map(|s| format!("{stem}{s}"))
        .collect();
    let machines: Vec<String> = (0..3).map(|i| format!("{i:040x}")).collect();
    let batch = RecordBatch::try_new(
        Table::UserMachines.schema(),
        vec![
            Arc::new(StringArray::from(users)),
            Arc::new(StringArray::from(machines)),
        ],
    )
    .expect("valid batch");
    let t = Utc
        .with_ymd_and_hms(2026, 11, 23, 7, 0, 0)
        .single()
        .expect("valid time");
    let mut w = SnapshotWriter::create(
        dir.path(),
        WriterOptions::new(t, "test", &[Table::UserMachines]),
    )
    .expect("writer");
    w.append(Table::UserMachines, &batch).expect("append");
    w.commit().expect("commit");
    let engine = Engine::open(dir.path(), None).expect("opens");
    let got = same_as_plain(
        &engine,
        &plain(dir.path()),
        "SELECT max(user_id) AS m, min(user_id) AS n FROM user_machines",
    )
    .await;
    assert!(got.contains(&format!("{stem}c")), "{got}");
    assert!(got.contains(&format!("{stem}a")), "{got}");
}

/// Runs `sql` and returns its rows as text, with the rows its Parquet scans produced.
async fn rows_and_scanned(engine: &Engine, sql: &str) -> (String, usize) {
    use datafusion::physical_plan::{ExecutionPlan, collect};

    fn scanned(plan: &dyn ExecutionPlan) -> usize {
        let own = match plan.name() {
            "DataSourceExec" => plan.metrics().and_then(|m| m.output_rows()).unwrap_or(0),
            _ => 0,
        };
        own + plan
            .children()
            .iter()
            .map(|c| scanned(c.as_ref()))
            .sum::<usize>()
    }
    let df = engine.sql(sql).await.expect("plans");
    let ctx = df.task_ctx();
    let plan = df.create_physical_plan().await.expect("physical plan");
    let batches = collect(plan.clone(), std::sync::Arc::new(ctx))
        .await
        .expect("runs");
    let text = pretty_format_batches(&batches).expect("prints").to_string();
    (text, scanned(plan.as_ref()))
}

#[tokio::test]
async fn a_lookup_by_name_reads_the_pages_the_page_index_names_and_finds_every_row() {
    let dir = tempdir().expect("tempdir");
    crate::small_lake(dir.path(), 20_000, 3);
    let engine = Engine::open(dir.path(), None).expect("opens");
    let plain = plain(dir.path());
    let name = crate::scalar(
        &engine,
        "SELECT computer_dns_name FROM machines WHERE computer_dns_name IS NOT NULL \
         ORDER BY id LIMIT 1 OFFSET 777",
    )
    .await;
    for table in ["machines", "machines_history"] {
        let columns = "id, computer_dns_name, risk_score";
        let order = "ORDER BY id, computer_dns_name";
        let lookup =
            format!("SELECT {columns} FROM {table} WHERE computer_dns_name = '{name}' {order}");
        // The same question no statistics can answer: every row is read.
        let reference = format!(
            "SELECT {columns} FROM {table} WHERE concat(computer_dns_name, '') = '{name}' {order}"
        );
        let total: usize = crate::scalar(&engine, &format!("SELECT count(*) FROM {table}"))
            .await
            .parse()
            .expect("a count");
        let (found, scanned) = rows_and_scanned(&engine, &lookup).await;
        let (expected, all) = rows_and_scanned(&engine, &reference).await;
        assert_eq!(found, expected, "{table}");
        assert_eq!(found, rows_and_scanned(&plain, &lookup).await.0, "{table}");
        assert!(found.contains(&name), "{table}: {found}");
        assert_eq!(all, total, "{table}: the reference reads every row");
        // Pages of about 300 names: a few per row group are read, not 20,000 rows.
        assert!(
            scanned * 20 < total,
            "{table}: {scanned} of {total} rows read"
        );
    }
}

#[tokio::test]
async fn comparisons_with_short_literals_answer_as_range_tests_do() {
    let dir = tempdir().expect("tempdir");
    lake(dir.path());
    let engine = Engine::open(dir.path(), None).expect("opens");
    let plain = plain(dir.path());

    // `=` and `<>` with literals of at most 12 bytes are decided on whole views
    // (`ShortLiteralEquality`, unit-tested in src/view_eq.rs); the same questions asked
    // with `<` and `>` are not rewritten, and must get the same answer.
    let equal = "SELECT snapshot, count(*) FILTER (WHERE user_id = 'user1') AS one, \
                 count(*) FILTER (WHERE user_id <> 'user1') AS others \
                 FROM user_machines_history WHERE user_id <> 'user4' GROUP BY 1 ORDER BY 1";
    let ranges = "SELECT snapshot, \
                  count(*) FILTER (WHERE NOT (user_id < 'user1' OR user_id > 'user1')) AS one, \
                  count(*) FILTER (WHERE user_id < 'user1' OR user_id > 'user1') AS others \
                  FROM user_machines_history WHERE user_id < 'user4' OR user_id > 'user4' \
                  GROUP BY 1 ORDER BY 1";
    let answer = same_as_plain(&engine, &plain, equal).await;
    assert_eq!(answer, text(&engine, ranges).await);
    // Snapshots of 3, 5 and 2 users (user0..): user1 in each, user4 only in the second.
    for row in ["| 1   | 2      |", "| 1   | 3      |", "| 1   | 1      |"] {
        assert!(answer.contains(row), "{row} in\n{answer}");
    }
    // The comparisons were swapped (`ViewEquality` shows as the comparison it replaces
    // in `EXPLAIN`, but not in the plan's `Debug`), and not by the plain engine.
    let swapped = |plan: Arc<dyn ExecutionPlan>| format!("{plan:?}").contains("ViewEquality");
    assert!(swapped(physical_plan(&engine, equal).await));
    assert!(!swapped(physical_plan(&plain, equal).await));
}

#[tokio::test]
async fn lag_over_history_answers_as_a_self_join_does() {
    let dir = tempdir().expect("tempdir");
    lake(dir.path());
    let engine = Engine::open(dir.path(), None).expect("opens");
    let plain = plain(dir.path());

    // `lag()` over input sorted by its partition keys is computed by `LagExec`
    // (unit-tested against DataFusion's own operator in src/lag/mod.rs); the same question
    // asked through `row_number()` and a join must get the same answer.
    let lagged = "SELECT user_id, snapshot, \
                  lag(snapshot) OVER (PARTITION BY user_id ORDER BY snapshot) AS previous, \
                  lag(machine_id, 2, 'none') OVER (PARTITION BY user_id ORDER BY snapshot) AS two_back \
                  FROM user_machines_history ORDER BY 1, 2";
    let joined = "WITH r AS (SELECT user_id, snapshot, machine_id, \
                  row_number() OVER (PARTITION BY user_id ORDER BY snapshot) AS n \
                  FROM user_machines_history) \
                  SELECT c.user_id, c.snapshot, p.snapshot AS previous, \
                  coalesce(q.machine_id, 'none') AS two_back \
                  FROM r c LEFT JOIN r p ON p.user_id = c.user_id AND p.n = c.n - 1 \
                  LEFT JOIN r q ON q.user_id = c.user_id AND q.n = c.n - 2 ORDER BY 1, 2";
    let answer = same_as_plain(&engine, &plain, lagged).await;
    assert_eq!(answer, text(&engine, joined).await);
    // user1 is in the snapshots taken at seconds 0, 2 and 3 (of 3, 0, 5 and 2 users).
    for row in [
        "| user1   | 2026-11-23T07:00:02Z | 2026-11-23T07:00:00Z | none ",
        "| user1   | 2026-11-23T07:00:03Z | 2026-11-23T07:00:02Z | 0000000000000000000000000000000000000001 |",
    ] {
        assert!(answer.contains(row), "{row} in\n{answer}");
    }
    // Its rows come out in the window's order, which the query asks for: sorted first.
    let plan = text(&engine, &format!("EXPLAIN {lagged}")).await;
    assert!(operators(&plan).contains(&"LagExec"), "{plan}");
    assert!(
        !operators(&plan).contains(&"BoundedWindowAggExec"),
        "{plan}"
    );
    let plan = text(&plain, &format!("EXPLAIN {lagged}")).await;
    assert!(operators(&plan).contains(&"BoundedWindowAggExec"), "{plan}");

    // Counted, the rows' order does not matter: grouped by `user_id` instead of sorted
    // (`GroupedLagExec`, src/lag/grouped.rs).
    let changes = "SELECT count(later) AS followed, \
                   count(*) FILTER (WHERE later - snapshot = INTERVAL '1 second') AS next_second \
                   FROM (SELECT snapshot, lag(snapshot) OVER \
                   (PARTITION BY user_id ORDER BY snapshot DESC) AS later \
                   FROM user_machines_history) s";
    let joined = "WITH r AS (SELECT user_id, snapshot, \
                  row_number() OVER (PARTITION BY user_id ORDER BY snapshot DESC) AS n \
                  FROM user_machines_history) \
                  SELECT count(*) AS followed, count(*) FILTER \
                  (WHERE p.snapshot - c.snapshot = INTERVAL '1 second') AS next_second \
                  FROM r c JOIN r p ON p.user_id = c.user_id AND p.n = c.n - 1";
    let answer = same_as_plain(&engine, &plain, changes).await;
    assert_eq!(answer, text(&engine, joined).await);
    // user0 and user1 at seconds 0, 2, 3; user2 at 0 and 2; user3 and user4 at 2.
    assert!(answer.contains("| 5        | 2           |"), "{answer}");
    let plan = text(&engine, &format!("EXPLAIN {changes}")).await;
    let shown = operators(&plan);
    assert!(shown.contains(&"GroupedLagExec"), "{plan}");
    assert!(!shown.contains(&"SortExec"), "{plan}");
    let plan = text(&plain, &format!("EXPLAIN {changes}")).await;
    assert!(operators(&plan).contains(&"SortExec"), "{plan}");
}

/// The operators an `EXPLAIN`'s physical plan names, top down.
fn operators(plan: &str) -> Vec<&str> {
    plan.lines()
        .skip_while(|l| !l.contains("physical_plan"))
        .filter_map(|l| {
            let l = l
                .trim_start_matches(['|', ' '])
                .trim_start_matches("physical_plan");
            let name = l.trim_start_matches(['|', ' ']).split(':').next()?;
            name.ends_with("Exec").then_some(name)
        })
        .collect()
}

#[tokio::test]
async fn the_last_snapshots_in_a_subquery_become_a_list_of_them() {
    let dir = tempdir().expect("tempdir");
    lake(dir.path());
    let engine = Engine::open(dir.path(), None).expect("opens");
    let plain = plain(dir.path());

    // The distinct snapshots come from the manifests, so "the last two" is worked out
    // while planning (src/constant_in.rs) and the scan reads those snapshots' files,
    // with no join; the answer is that of the snapshots written out.
    let last = "SELECT user_id, snapshot FROM user_machines_history WHERE snapshot IN \
                (SELECT snapshot FROM (SELECT DISTINCT snapshot FROM user_machines_history) s \
                 ORDER BY snapshot DESC LIMIT 2) ORDER BY 2, 1";
    let written = "SELECT user_id, snapshot FROM user_machines_history WHERE snapshot IN \
                   (TIMESTAMP '2026-11-23T07:00:03Z', TIMESTAMP '2026-11-23T07:00:02Z') \
                   ORDER BY 2, 1";
    let answer = same_as_plain(&engine, &plain, last).await;
    assert_eq!(answer, text(&engine, written).await);
    // 5 users at second 2 and 2 at second 3 (the snapshot at second 1 has none).
    assert_eq!(answer.lines().count(), 4 + 7, "seven rows:\n{answer}");
    assert!(
        answer.contains("| user4   | 2026-11-23T07:00:02Z |"),
        "{answer}"
    );
    let plan = text(&engine, &format!("EXPLAIN {last}")).await;
    assert!(!plan.contains("LeftSemi"), "{plan}");
    assert!(!operators(&plan).contains(&"HashJoinExec"), "{plan}");
    let scan = plan
        .lines()
        .find(|l| l.contains("DataSourceExec"))
        .unwrap_or_default();
    assert_eq!(scan.matches(".parquet").count(), 2, "{plan}");
    let plan = text(&plain, &format!("EXPLAIN {last}")).await;
    assert!(plan.contains("LeftSemi"), "{plan}");

    // A subquery reading data stays a join, with the same kind of answer.
    let read = "SELECT user_id, snapshot FROM user_machines_history WHERE snapshot IN \
                (SELECT snapshot FROM user_machines_history WHERE user_id = 'user4') \
                ORDER BY 2, 1";
    let answer = same_as_plain(&engine, &plain, read).await;
    assert_eq!(answer.lines().count(), 4 + 5, "five rows:\n{answer}");
    let plan = text(&engine, &format!("EXPLAIN {read}")).await;
    assert!(plan.contains("LeftSemi"), "{plan}");
}

#[tokio::test]
async fn distinct_counts_answer_as_distinct_rows_do() {
    let dir = tempdir().expect("tempdir");
    lake(dir.path());
    let engine = Engine::open(dir.path(), None).expect("opens");
    let plain = plain(dir.path());

    // Distinct counts straight over the scan are kept by `KeyedCountExec`
    // (src/keyed_counts/distinct.rs): strings in one table for every group, the snapshot
    // once a batch. Counting the distinct rows instead keeps DataFusion's aggregates.
    let keyed = |plan: &str| {
        plan.lines()
            .any(|l| l.contains("KeyedCountExec") && l.contains("count(DISTINCT"))
    };
    let counted = "SELECT snapshot, count(DISTINCT user_id) AS users, \
                   count(DISTINCT machine_id) AS machines FROM user_machines_history \
                   GROUP BY snapshot ORDER BY 1";
    let rows = "SELECT u.snapshot, u.users, m.machines FROM \
                (SELECT snapshot, sum(1) AS users FROM \
                 (SELECT DISTINCT snapshot, user_id FROM user_machines_history) GROUP BY 1) u \
                JOIN (SELECT snapshot, sum(1) AS machines FROM \
                 (SELECT DISTINCT snapshot, machine_id FROM user_machines_history) GROUP BY 1) m \
                ON m.snapshot = u.snapshot ORDER BY 1";
    let answer = same_as_plain(&engine, &plain, counted).await;
    assert_eq!(answer, text(&engine, rows).await);
    // Snapshots of 3, 0, 5 and 2 users, each with their own machine.
    assert!(
        answer.contains("| 2026-11-23T07:00:02Z | 5     | 5        |"),
        "{answer}"
    );
    assert_eq!(answer.lines().count(), 7, "three rows:\n{answer}");
    let plan = text(&engine, &format!("EXPLAIN {counted}")).await;
    assert!(keyed(&plan), "{plan}");
    assert!(!keyed(&text(&plain, &format!("EXPLAIN {counted}")).await));
    assert!(!keyed(&text(&engine, &format!("EXPLAIN {rows}")).await));

    // The snapshots each user is in (with a second distinct count: DataFusion plans a
    // single one as a grouping of distinct rows itself).
    let counted = "SELECT user_id, count(DISTINCT snapshot) AS snapshots, \
                   count(DISTINCT machine_id) AS machines \
                   FROM user_machines_history GROUP BY 1 ORDER BY 1";
    let rows = "SELECT s.user_id, s.snapshots, m.machines FROM \
                (SELECT user_id, sum(1) AS snapshots FROM \
                 (SELECT DISTINCT user_id, snapshot FROM user_machines_history) GROUP BY 1) s \
                JOIN (SELECT user_id, sum(1) AS machines FROM \
                 (SELECT DISTINCT user_id, machine_id FROM user_machines_history) GROUP BY 1) m \
                ON m.user_id = s.user_id ORDER BY 1";
    let answer = same_as_plain(&engine, &plain, counted).await;
    assert_eq!(answer, text(&engine, rows).await);
    for row in [
        "| user0   | 3         | 1        |",
        "| user2   | 2         | 1        |",
        "| user4   | 1         | 1        |",
    ] {
        assert!(answer.contains(row), "{row} in\n{answer}");
    }
    let plan = text(&engine, &format!("EXPLAIN {counted}")).await;
    assert!(keyed(&plan), "{plan}");
}

#[tokio::test]
async fn grouped_counts_answer_as_sums_do() {
    let dir = tempdir().expect("tempdir");
    lake(dir.path());
    let engine = Engine::open(dir.path(), None).expect("opens");
    let plain = plain(dir.path());

    // Counts grouped by the snapshot or by strings are counted a batch at a time
    // (`KeyedCountExec`, src/keyed_counts/mod.rs); the same question asked with sums keeps
    // DataFusion's aggregate, and must get the same answer.
    let counted = "SELECT snapshot, count(*) AS n, \
                   count(*) FILTER (WHERE user_id = 'user1') AS one, \
                   count(machine_id) FILTER (WHERE user_id <> 'user0') AS others \
                   FROM user_machines_history GROUP BY snapshot ORDER BY 1";
    let summed = "SELECT snapshot, sum(1) AS n, \
                  sum(CASE WHEN user_id = 'user1' THEN 1 ELSE 0 END) AS one, \
                  sum(CASE WHEN user_id <> 'user0' AND machine_id IS NOT NULL THEN 1 ELSE 0 END) \
                  AS others FROM user_machines_history GROUP BY snapshot ORDER BY 1";
    let answer = same_as_plain(&engine, &plain, counted).await;
    assert_eq!(answer, text(&engine, summed).await);
    // Snapshots of 3, 0, 5 and 2 users (user0..); the empty one has no group.
    for row in [
        "| 2026-11-23T07:00:00Z | 3 | 1   | 2      |",
        "| 2026-11-23T07:00:02Z | 5 | 1   | 4      |",
        "| 2026-11-23T07:00:03Z | 2 | 1   | 1      |",
    ] {
        assert!(answer.contains(row), "{row} in\n{answer}");
    }
    assert_eq!(answer.lines().count(), 7, "three rows:\n{answer}");
    let plan = text(&engine, &format!("EXPLAIN {counted}")).await;
    assert!(plan.contains("KeyedCountExec"), "{plan}");
    let plan = text(&plain, &format!("EXPLAIN {counted}")).await;
    assert!(!plan.contains("KeyedCountExec"), "{plan}");
    let plan = text(&engine, &format!("EXPLAIN {summed}")).await;
    assert!(!plan.contains("KeyedCountExec"), "{plan}");

    // Grouped by a string column and the snapshot.
    let counted = "SELECT user_id, snapshot, count(*) AS n FROM user_machines_history \
                   GROUP BY 1, 2 ORDER BY 1, 2";
    let summed = "SELECT user_id, snapshot, sum(1) AS n FROM user_machines_history \
                  GROUP BY 1, 2 ORDER BY 1, 2";
    let answer = same_as_plain(&engine, &plain, counted).await;
    assert_eq!(answer, text(&engine, summed).await);
    assert_eq!(answer.lines().count(), 4 + 10, "ten rows:\n{answer}");
    let plan = text(&engine, &format!("EXPLAIN {counted}")).await;
    assert!(plan.contains("KeyedCountExec"), "{plan}");
}

#[tokio::test]
async fn with_two_partitions_a_join_of_histories_builds_one_table() {
    let dir = tempdir().expect("tempdir");
    lake(dir.path());
    let engine = Engine::open(dir.path(), None).expect("opens");

    // Each user with the later snapshots that list it again: users 0 and 1 are in the
    // snapshots at seconds 0, 2 and 3, user 2 in those at 0 and 2.
    let again = "SELECT a.user_id, a.snapshot, b.snapshot AS later \
                 FROM user_machines_history a JOIN user_machines_history b \
                 ON a.user_id = b.user_id AND b.snapshot > a.snapshot ORDER BY 1, 2, 3";
    let answer = same_as_plain(&engine, &plain(dir.path()), again).await;
    assert_eq!(answer.lines().count(), 4 + 7, "seven rows:\n{answer}");
    assert!(
        answer.contains("| user2   | 2026-11-23T07:00:00Z | 2026-11-23T07:00:02Z |"),
        "{answer}"
    );
    assert!(!answer.contains("| user3 "), "{answer}");

    // History scans carry no statistics, so DataFusion would hash both sides into two
    // partitions; with two partitions or fewer the engine builds one table instead.
    let state = engine.context().state();
    let partitions = state.config().target_partitions();
    let plan = text(&engine, &format!("EXPLAIN {again}")).await;
    if partitions <= 2 {
        assert!(!state.config().options().optimizer.repartition_joins);
        assert!(plan.contains("HashJoinExec: mode=CollectLeft"), "{plan}");
        assert!(!plan.contains("mode=Partitioned"), "{plan}");
    } else {
        assert!(state.config().options().optimizer.repartition_joins);
    }
}
