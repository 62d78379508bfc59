//! Findings of the trust review, each a test that failed before its fix: a filter on
//! `snapshot` that is NULL for a snapshot, statements that wrote into the lake from
//! inside another statement, and a query larger than the memory it is given.

use mdesnap::engine::{EngineOptions, MdesnapOptions};
use mdesnap::{Engine, Error};
use tempfile::tempdir;

use crate::{sample_data, scalar, small_lake, sorted_lines};

/// The plain engine over `lake`: DataFusion alone, the reference for every answer.
fn plain(lake: &std::path::Path) -> Engine {
    Engine::open_with(
        lake,
        EngineOptions {
            plain: true,
            ..EngineOptions::default()
        },
    )
    .expect("opens")
}

/// `NULLIF(snapshot, 2026-01-03) > 2026-01-01` is NULL for the snapshot of 2026-01-03,
/// which `WHERE` must drop. Pushed down as an exact filter, the file was kept (the
/// filter's value bit read without its validity), and so was the manifests' count.
#[tokio::test]
async fn a_snapshot_filter_that_is_null_drops_the_snapshot() {
    let engine = Engine::open(sample_data(), None).expect("opens");
    let reference = plain(&sample_data());
    let null_at_third = "NULLIF(snapshot, TIMESTAMP '2026-01-03T07:00:00Z') \
                         > TIMESTAMP '2026-01-01T00:00:00Z'";
    let pushed = format!("SELECT count(*) FROM machines_history WHERE {null_at_third}");
    // The same filter with a term the scan cannot take: DataFusion filters the rows.
    let not_pushed =
        format!("SELECT count(*) FROM machines_history WHERE {null_at_third} OR id = 'zzz'");
    let all = scalar(&engine, "SELECT count(*) FROM machines_history").await;
    let third = scalar(
        &engine,
        "SELECT count(*) FROM machines_history WHERE snapshot = TIMESTAMP '2026-01-03T07:00:00Z'",
    )
    .await;
    let expected = all.parse::<i64>().expect("a count") - third.parse::<i64>().expect("a count");
    assert_eq!(scalar(&engine, &pushed).await, expected.to_string());
    assert_eq!(scalar(&engine, &not_pushed).await, expected.to_string());
    assert_eq!(scalar(&reference, &pushed).await, expected.to_string());

    // Counts per snapshot, answered from the manifests: the third is not among them.
    let per_snapshot =
        format!("SELECT snapshot, count(*) FROM machines_history WHERE {null_at_third} GROUP BY 1");
    let rows = sorted_lines(&engine, &per_snapshot).await;
    assert_eq!(rows, sorted_lines(&reference, &per_snapshot).await);
    assert!(
        !rows.iter().any(|r| r.starts_with("2026-01-03")),
        "{rows:?}"
    );
    assert_eq!(rows.len(), 1 + 6, "a header and six snapshots: {rows:?}");

    // The same through DISTINCT snapshot, the semi-join on the last snapshots, and a
    // filter NULL for every snapshot.
    for sql in [
        format!("SELECT DISTINCT snapshot FROM ip_addresses_history WHERE {null_at_third}"),
        format!(
            "SELECT count(*) FROM machines_history WHERE snapshot IN (SELECT DISTINCT snapshot \
             FROM machines_history WHERE {null_at_third} ORDER BY 1 LIMIT 3)"
        ),
        "SELECT count(*), count(DISTINCT snapshot) FROM machines_history \
         WHERE snapshot > CAST(NULL AS TIMESTAMP)"
            .to_string(),
    ] {
        assert_eq!(
            sorted_lines(&engine, &sql).await,
            sorted_lines(&reference, &sql).await,
            "{sql}"
        );
    }
}

/// The plain engine is one `SET` away in a session, and back.
#[tokio::test]
async fn set_turns_the_rules_off_and_on() {
    let engine = Engine::open(sample_data(), None).expect("opens");
    let explain = "EXPLAIN SELECT DISTINCT snapshot FROM machines_history";
    let plan = sorted_lines(&engine, explain).await.join("\n");
    assert!(
        !plan.contains("TableScan"),
        "answered from the manifests: {plan}"
    );
    engine
        .sql("SET mdesnap.plain_engine = true")
        .await
        .expect("sets");
    let options = MdesnapOptions::from_config(engine.context().state().config_options());
    assert!(options.plain_engine);
    let plan = sorted_lines(&engine, explain).await.join("\n");
    assert!(plan.contains("TableScan"), "the plain engine scans: {plan}");
    // Filters on snapshot are DataFusion's to apply again in the plain engine.
    let plan = sorted_lines(
        &engine,
        "EXPLAIN SELECT count(id) FROM machines_history WHERE snapshot > TIMESTAMP '2026-01-05T00:00:00Z'",
    )
    .await
    .join("\n");
    assert!(plan.contains("FilterExec"), "{plan}");
    engine
        .sql("SET mdesnap.plain_engine = false")
        .await
        .expect("sets");
    let plan = sorted_lines(&engine, explain).await.join("\n");
    assert!(!plan.contains("TableScan"), "{plan}");
    let unknown = engine.sql("SET mdesnap.no_such_rule = true").await;
    assert!(unknown.is_err(), "an unknown switch is an error");
}

/// Every statement that could write, wrapped or not, is refused when it writes into
/// the lake; and the lake is unchanged afterwards.
#[tokio::test]
async fn no_statement_writes_into_the_lake_however_it_is_wrapped() {
    let dir = tempdir().expect("tempdir");
    let lake = dir.path().join("lake");
    small_lake(&lake, 20, 2);
    let engine = Engine::open(&lake, None).expect("opens");
    let manifests: Vec<_> = std::fs::read_dir(lake.join("_snapshots"))
        .expect("manifests")
        .map(|e| e.expect("entry").path())
        .collect();
    let manifest = manifests[0].display().to_string();
    let before = std::fs::read(&manifests[0]).expect("reads");
    let inside = lake
        .join("machines")
        .join("junk.parquet")
        .display()
        .to_string();
    let outside_dir = dir.path().join("elsewhere");
    std::fs::create_dir(&outside_dir).expect("mkdir");
    let outside = outside_dir.join("t.parquet").display().to_string();
    let lake_s = lake.display().to_string();

    // A table elsewhere to insert into from a statement that also names the lake.
    engine
        .sql(&format!(
            "CREATE EXTERNAL TABLE elsewhere (a VARCHAR) STORED AS CSV LOCATION '{}/'",
            outside_dir.display()
        ))
        .await
        .expect("a table outside the lake");

    let refused = [
        format!("COPY (SELECT 'junk' AS a) TO '{manifest}' STORED AS CSV"),
        format!("EXPLAIN ANALYZE COPY (SELECT 'junk' AS a) TO '{manifest}' STORED AS CSV"),
        format!("EXPLAIN COPY (SELECT 'junk' AS a) TO '{manifest}' STORED AS CSV"),
        format!("EXPLAIN VERBOSE COPY (SELECT 1 AS a) TO '{inside}' STORED AS PARQUET"),
        format!("COPY (SELECT * FROM machines) TO '{lake_s}/machines/' STORED AS PARQUET"),
        format!("COPY machines TO '{lake_s}/../lake/x.csv' STORED AS CSV"),
        format!("CREATE EXTERNAL TABLE raw STORED AS PARQUET LOCATION '{lake_s}/machines/'"),
        format!("EXPLAIN CREATE EXTERNAL TABLE raw STORED AS PARQUET LOCATION '{lake_s}/'"),
        "INSERT INTO machines SELECT * FROM machines".to_string(),
        "EXPLAIN ANALYZE INSERT INTO machines_history SELECT * FROM machines_history".to_string(),
        "CREATE TABLE machines AS SELECT 1".to_string(),
        "CREATE OR REPLACE VIEW ip_addresses AS SELECT 1".to_string(),
        "DROP TABLE machines".to_string(),
        "DROP VIEW IF EXISTS snapshots".to_string(),
    ];
    for sql in &refused {
        match engine.sql(sql).await {
            Err(Error::WriteInLake { .. } | Error::LakeTable { .. }) => {}
            Err(e) => panic!("{sql}: refused for another reason: {e}"),
            Ok(df) => {
                let ran = df.collect().await;
                panic!("{sql}: not refused ({ran:?})")
            }
        }
    }
    assert_eq!(std::fs::read(&manifests[0]).expect("reads"), before);
    assert!(!std::path::Path::new(&inside).exists());
    assert!(
        crate::leftovers(&lake).is_empty(),
        "{:?}",
        crate::leftovers(&lake)
    );
    let reopened = Engine::open(&lake, None).expect("opens");
    assert_eq!(reopened.lake_scan().snapshots.len(), 2);

    // What writes elsewhere still works.
    for sql in [
        format!("COPY (SELECT id FROM machines) TO '{outside}' STORED AS PARQUET"),
        "INSERT INTO elsewhere VALUES ('x')".to_string(),
        format!("EXPLAIN ANALYZE COPY (SELECT 1 AS a) TO '{outside}.csv' STORED AS CSV"),
    ] {
        engine
            .sql(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .collect()
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    assert!(std::path::Path::new(&outside).exists());
}

/// A query that needs more memory than the engine is given ends with an error that
/// says so: mdesnap's operators that hold a whole partition or a set of values reserve
/// what they hold from DataFusion's pool. (DataFusion's own operators may spill to disk
/// instead; the plain engine then answers as without a limit.)
#[tokio::test]
async fn a_query_past_the_memory_limit_ends_with_an_error() {
    let unlimited = plain(&sample_data());
    let queries = [
        // GroupedLagExec holds the partition's rows: about 2 MB here.
        (
            "SELECT count(*) FROM (SELECT lag(risk_score) OVER (PARTITION BY id ORDER BY snapshot) AS l \
             FROM machines_history) WHERE l IS NOT NULL",
            "GroupedLagExec",
            256 * 1024,
        ),
        // KeyedCountExec's distinct sets: some 1,900 ids by status, about 150 KB (with
        // count(*) beside it, DataFusion does not plan the distinct count as a grouping).
        (
            "SELECT health_status, count(*), count(DISTINCT id) FROM machines_history GROUP BY 1",
            "KeyedCountExec",
            32 * 1024,
        ),
    ];
    for plain in [false, true] {
        for (sql, operator, limit) in queries {
            let engine = Engine::open_with(
                sample_data(),
                EngineOptions {
                    plain,
                    memory_limit: Some(limit),
                    ..EngineOptions::default()
                },
            )
            .expect("opens");
            if !plain {
                let plan = sorted_lines(&engine, &format!("EXPLAIN {sql}"))
                    .await
                    .join("\n");
                assert!(
                    plan.contains(operator),
                    "{sql} is planned with {operator}: {plan}"
                );
            }
            let result = match engine.sql(sql).await {
                Ok(df) => df.collect().await.map(|_| ()).map_err(Error::from),
                Err(e) => Err(e),
            };
            match result {
                Err(e) => {
                    let text = e.to_string();
                    assert!(
                        text.to_lowercase().contains("memory"),
                        "plain: {plain}: {sql}: {text}"
                    );
                    // Ours reserve before they hold: the pool refuses them by name.
                    assert!(
                        plain || text.contains(&format!("allocation failed for {operator}")),
                        "{sql}: {text}"
                    );
                }
                Ok(()) if plain => {
                    assert_eq!(
                        sorted_lines(&engine, sql).await,
                        sorted_lines(&unlimited, sql).await
                    );
                }
                Ok(()) => panic!("{sql} ran in {limit} bytes with {operator}"),
            }
            // Small answers still fit.
            assert_eq!(
                scalar(&engine, "SELECT count(*) FROM machines").await,
                scalar(&unlimited, "SELECT count(*) FROM machines").await
            );
        }
    }
}

/// `--memory-limit` on the command line: exit 2, the pool's refusal, and a hint.
#[test]
fn memory_limit_on_the_command_line() {
    let lake = sample_data().display().to_string();
    let sql = "SELECT count(*) FROM (SELECT lag(risk_score) OVER (PARTITION BY id ORDER BY snapshot) \
               AS l FROM machines_history) WHERE l IS NOT NULL";
    let o = crate::run(&["query", "--lake", &lake, "--memory-limit", "256K", sql]);
    assert_eq!(o.status.code(), Some(2));
    let err = crate::stderr(&o);
    assert!(err.contains("GroupedLagExec"), "{err}");
    assert!(
        err.contains("hint: the query needs more memory than --memory-limit"),
        "{err}"
    );
    let o = crate::run(&["query", "--lake", &lake, "--memory-limit", "64M", sql]);
    assert_eq!(o.status.code(), Some(0), "{}", crate::stderr(&o));
    let o = crate::run(&["query", "--lake", &lake, "--memory-limit", "lots", sql]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        crate::stderr(&o).contains("'lots' is not a size"),
        "{}",
        crate::stderr(&o)
    );
}
