//! The query suite of `benches/queries` through the library: every `.sql` through
//! `Engine::sql` and every `.odata` through `Engine::odata`, collected to the last row,
//! over a generated lake of 10,000 machines x 7 days (seed 1; generated once into
//! `target/bench-data/query-lake`). `catalog`: opening a lake of 1,000 snapshots of 200
//! machines and answering `count(*)` (generated once into
//! `target/bench-data/catalog-lake`). The side-by-side figures against DuckDB come from
//! `benches/compare_duckdb.py`, on 100,000 machines x 30 days.
//!
//!   cargo bench --bench query

use std::path::{Path, PathBuf};

use criterion::{Criterion, criterion_group, criterion_main};
use mdesnap::Engine;
use mdesnap::generate::{GenerateOptions, generate};

/// A lake generated once per flags into `target/bench-data/NAME`.
fn lake(name: &str, machines: u64, days: u32) -> PathBuf {
    let dir: PathBuf = [env!("CARGO_MANIFEST_DIR"), "target", "bench-data", name]
        .iter()
        .collect();
    let stamp = dir.join(".bench-stamp");
    let want = format!("{machines} {days} 1");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(want.as_str()) {
        return dir;
    }
    let _ = std::fs::remove_dir_all(&dir);
    let options = GenerateOptions {
        seed: 1,
        machines,
        days,
        ..GenerateOptions::default()
    };
    generate(&dir, &options, |_| {}).expect("the bench lake is generated");
    std::fs::write(&stamp, want).expect("stamp written");
    dir
}

/// `(name, text, is_odata)` of every query of the suite, in name order.
fn suite() -> Vec<(String, String, bool)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/queries");
    let mut out: Vec<(String, String, bool)> = std::fs::read_dir(&dir)
        .expect("benches/queries")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_string();
            let odata = name.ends_with(".odata");
            if !(odata || (name.ends_with(".sql") && !name.ends_with(".duckdb.sql"))) {
                return None;
            }
            let text = std::fs::read_to_string(&p).ok()?;
            Some((name, text.trim().to_string(), odata))
        })
        .collect();
    out.sort();
    out
}

fn bench(c: &mut Criterion) {
    let runtime = mdesnap::runtime().expect("a runtime");
    let dir = lake("query-lake", 10_000, 7);
    let engine = Engine::open(&dir, None).expect("the lake opens");
    let mut g = c.benchmark_group("query");
    g.sample_size(10);
    for (name, text, odata) in suite() {
        g.bench_function(name.as_str(), |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let df = if odata {
                        engine.odata(&text).await
                    } else {
                        engine.sql(&text).await
                    }
                    .expect("plans");
                    df.collect().await.expect("runs")
                })
            })
        });
    }
    g.finish();

    let dir = lake("catalog-lake", 200, 1000);
    let mut g = c.benchmark_group("catalog");
    g.sample_size(10);
    g.bench_function("open 1,000 snapshots and count(*)", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let engine = Engine::open(&dir, None).expect("opens");
                let df = engine
                    .sql("SELECT count(*) FROM machines")
                    .await
                    .expect("plans");
                df.collect().await.expect("runs")
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
