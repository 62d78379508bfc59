//! The ingester's own work, without the network: an API page to Arrow (`decode`),
//! Arrow to Parquet through the snapshot writer (`write`), and 100,000 machines from
//! saved pages to a committed snapshot (`decode_write`: parse, decode, encode, commit,
//! through the ingester's two-thread writer `ingest::write_records`), the figure
//! `benches/ingest.py` compares with DuckDB turning the same machines, as NDJSON, into
//! zstd Parquet. It writes that NDJSON to
//! `target/bench-data/machines-100k.ndjson` for the script.
//!
//!   cargo bench --bench ingest

use std::path::PathBuf;

use chrono::{TimeZone, Utc};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use mdesnap::cancel::Cancel;
use mdesnap::decode::MachineDecoder;
use mdesnap::fleet::{Fleet, FleetConfig};
use mdesnap::ingest::{ToWriter, write_records};
use mdesnap::lake::{SnapshotWriter, WriterOptions};
use mdesnap::schema::Table;
use serde_json::Value;
use serde_json::value::RawValue;

const PAGE: usize = 10_000;
const MACHINES: usize = 100_000;

/// The fleet's machines as the API's list pages (bytes as the service sends them).
fn pages() -> Vec<Vec<u8>> {
    let fleet = Fleet::new(FleetConfig {
        seed: 1,
        machines: MACHINES as u64,
        churn: FleetConfig::DEFAULT_CHURN,
        start: FleetConfig::default_start(),
    });
    let records: Vec<Value> = fleet
        .machines()
        .iter()
        .take(MACHINES)
        .map(|m| fleet.machine_record(m))
        .collect();
    let ndjson: PathBuf = [env!("CARGO_MANIFEST_DIR"), "target", "bench-data"]
        .iter()
        .collect();
    std::fs::create_dir_all(&ndjson).expect("bench-data folder");
    let mut lines = String::new();
    for r in &records {
        lines.push_str(&r.to_string());
        lines.push('\n');
    }
    std::fs::write(ndjson.join("machines-100k.ndjson"), lines).expect("ndjson written");
    records
        .chunks(PAGE)
        .map(|chunk| {
            serde_json::to_vec(&serde_json::json!({
                "@odata.context": "https://api.security.microsoft.com/api/$metadata#Machines",
                "value": chunk,
            }))
            .expect("a page")
        })
        .collect()
}

/// A list page as the ingester reads it: each record's text kept, not parsed.
#[derive(serde::Deserialize)]
struct Page {
    value: Vec<Box<RawValue>>,
}

/// One page's bytes into `machines` and `ip_addresses` batches, as the ingester does.
fn decode(page: &[u8]) -> (arrow::array::RecordBatch, arrow::array::RecordBatch) {
    let page: Page = serde_json::from_slice(page).expect("json");
    let mut d = MachineDecoder::default();
    for (i, r) in page.value.iter().enumerate() {
        d.push_json(i, r.get()).expect("decodes");
    }
    d.finish().expect("batches")
}

fn writer(dir: &std::path::Path) -> SnapshotWriter {
    let t = Utc
        .with_ymd_and_hms(2026, 11, 29, 7, 0, 0)
        .single()
        .expect("time");
    SnapshotWriter::create(
        dir.join("lake"),
        WriterOptions::new(t, "bench", &[Table::Machines, Table::IpAddresses]),
    )
    .expect("writer")
}

fn bench(c: &mut Criterion) {
    let pages = pages();
    let mut g = c.benchmark_group("ingest");
    g.sample_size(10);

    g.throughput(Throughput::Elements(PAGE as u64));
    g.bench_function("decode: one 10,000-machine page to Arrow", |b| {
        b.iter(|| decode(&pages[0]))
    });

    let (machines, ips) = decode(&pages[0]);
    g.bench_function("write: 10,000 machines to Parquet and commit", |b| {
        b.iter_batched(
            || tempfile::tempdir().expect("tempdir"),
            |dir| {
                let mut w = writer(dir.path());
                w.append(Table::Machines, &machines).expect("append");
                w.append(Table::IpAddresses, &ips).expect("append");
                w.commit().expect("commit");
                dir
            },
            BatchSize::PerIteration,
        )
    });

    g.throughput(Throughput::Elements(MACHINES as u64));
    g.bench_function("decode_write: 100,000 machines from saved pages", |b| {
        b.iter_batched(
            || tempfile::tempdir().expect("tempdir"),
            |dir| {
                // The ingester's writer: pages parsed and decoded on one thread while
                // the batches before are encoded on the other.
                let pages = pages.iter().map(|page| {
                    let page: Page = serde_json::from_slice(page).expect("json");
                    ToWriter::Machines(page.value)
                });
                let commit = std::iter::once(ToWriter::Commit { duplicates: 0 });
                let manifest =
                    write_records(writer(dir.path()), &Cancel::new(), pages.chain(commit))
                        .expect("written");
                assert!(manifest.is_some());
                dir
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
