//! The committed sample lake is exactly what `generate` makes from the flags it
//! records: regenerate it and compare every table's content.

use mdesnap::generate::{GenerateOptions, generate};
use mdesnap::snapshot::parse_time;
use mdesnap::{Engine, Table};
use tempfile::tempdir;

use crate::{sample_data, sorted_lines as rows};

#[tokio::test]
async fn sample_data_regenerates_identically() {
    let committed = Engine::open(sample_data(), None).expect("sample-data opens");
    let scan = committed.lake_scan();
    assert_eq!(scan.snapshots.len(), 7, "seven daily snapshots");
    assert!(scan.broken.is_empty());
    let g = scan.snapshots[0]
        .generator
        .clone()
        .expect("made by generate");
    let dir = tempdir().expect("tempdir");
    let options = GenerateOptions {
        seed: g.seed,
        machines: g.machines,
        days: scan.snapshots.len() as u32,
        churn: g.churn,
        start: Some(parse_time(&g.start).expect("start")),
        ..GenerateOptions::default()
    };
    generate(dir.path(), &options, |_| {}).expect("regenerates");
    let fresh = Engine::open(dir.path(), None).expect("opens");
    for table in Table::ALL {
        let sql = format!("SELECT * FROM {}", table.history_name());
        let a = rows(&committed, &sql).await;
        let b = rows(&fresh, &sql).await;
        assert!(a.len() > 7, "{table} has rows");
        assert_eq!(a.len(), b.len(), "{table}: row count");
        let first_diff = a.iter().zip(&b).position(|(x, y)| x != y);
        assert_eq!(first_diff, None, "{table}: content differs");
    }
    let ids = |e: &Engine| -> Vec<String> {
        e.lake_scan()
            .snapshots
            .iter()
            .map(|m| m.id.clone())
            .collect()
    };
    assert_eq!(ids(&committed), ids(&fresh));
}
