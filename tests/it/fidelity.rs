//! An OData answer from the lake is the service's answer of that day: a lake written
//! by `generate` and the emulator serving the same fleet on the same day give the same
//! records (same rows, same keys in the same order, same values; the service's times
//! at their seventh digit, the lake's at microseconds).
//!
//! Both the lake and the emulator filter with `mdesnap::odata`, so a translation gone
//! wrong in it would go wrong in both alike: the records each filter must keep are
//! worked out here too, from the service's unfiltered answer with plain Rust
//! predicates ([`QUERIES`]), and both answers must be those records.

use chrono::{TimeZone, Utc};
use mdesnap::emulator::{Emulator, EmulatorConfig};
use mdesnap::fleet::FleetConfig;
use serde_json::{Map, Value};
use tempfile::tempdir;

use crate::{run, stderr, stdout};

const SEED: u64 = 11;
const MACHINES: u64 = 150;
const CHURN: f64 = 0.08;

type Record = Map<String, Value>;

/// Whether a request keeps a record.
type Keeps = fn(&Record) -> bool;

/// Whether `record` holds `value` under `key`.
fn is(record: &Record, key: &str, value: Value) -> bool {
    record.get(key) == Some(&value)
}

/// The requests compared, each with the records it must answer, written without
/// `mdesnap::odata`: `eq` is false and `ne` true for a missing value (null), as OData
/// has it, and `startswith` compares text as it is.
const QUERIES: [(&str, Keeps); 6] = [
    ("$top=10000", |_| true),
    ("$filter=riskScore eq 'High'", |r| {
        is(r, "riskScore", "High".into())
    }),
    ("$filter=machineTags/any(t: t eq 'ExampleTag')", |r| {
        r.get("machineTags")
            .and_then(Value::as_array)
            .is_some_and(|tags| tags.iter().any(|t| t == "ExampleTag"))
    }),
    (
        "$filter=startswith(computerDnsName,'desktop') and healthStatus ne 'Active'",
        |r| {
            r.get("computerDnsName")
                .and_then(Value::as_str)
                .is_some_and(|name| name.starts_with("desktop"))
                && !is(r, "healthStatus", "Active".into())
        },
    ),
    ("$filter=rbacGroupId eq 140 or osPlatform eq 'Linux'", |r| {
        is(r, "rbacGroupId", 140.into()) || is(r, "osPlatform", "Linux".into())
    }),
    (
        "$select=ipAddresses,computerDnsName,id,lastSeen&$filter=exposureLevel eq 'High'",
        |r| is(r, "exposureLevel", "High".into()),
    ),
];

/// The ids of `records`, in their order.
fn ids(records: &[Record]) -> Vec<&str> {
    records
        .iter()
        .map(|r| r["id"].as_str().expect("an id"))
        .collect()
}

/// The service's timestamps truncated to microseconds, as the lake keeps them.
fn at_micros(mut record: Record) -> Record {
    for key in ["firstSeen", "lastSeen"] {
        if let Some(Value::String(t)) = record.get(key) {
            let micros = mdesnap::decode::parse_timestamp_micros(t).expect("a time");
            let text = mdesnap::schema::api_shape::api_time(micros).expect("in range");
            record.insert(key.to_string(), Value::String(text));
        }
    }
    record
}

/// The `value` records of a document, by id.
fn records(doc: &Value) -> Vec<Record> {
    let mut out: Vec<Record> = doc["value"]
        .as_array()
        .expect("a value array")
        .iter()
        .map(|r| r.as_object().expect("records are objects").clone())
        .collect();
    out.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    out
}

async fn service(url: &str, token: &str, query: &str) -> Value {
    let target = format!("{url}/api/machines?{}", query.replace(' ', "%20"));
    let r = crate::http()
        .get(&target)
        .bearer_auth(token)
        .send()
        .await
        .expect("sent");
    assert!(r.status().is_success(), "{target}: {}", r.status());
    let doc: Value = r.json().await.expect("json");
    assert!(doc.get("@odata.nextLink").is_none(), "one page: {target}");
    doc
}

#[tokio::test]
async fn odata_json_from_the_lake_is_what_the_service_answered_that_day() {
    let dir = tempdir().expect("tempdir");
    let lake = dir.path().join("lake");
    let start = Utc
        .with_ymd_and_hms(2026, 3, 1, 7, 0, 0)
        .single()
        .expect("a time");
    let fleet = FleetConfig {
        seed: SEED,
        machines: MACHINES,
        churn: CHURN,
        start,
    };
    let written = crate::generate_fleet(&lake, &fleet, 3);
    let mut compared = 0;
    // Per request, the records it kept over the days, and of how many.
    let mut kept = [(0, 0); QUERIES.len()];
    for (day, manifest) in written.iter().enumerate() {
        let emulator = Emulator::start(EmulatorConfig {
            seed: SEED,
            machines: MACHINES,
            churn: CHURN,
            start,
            day: day as u32,
            ..EmulatorConfig::default()
        })
        .await
        .expect("starts");
        let url = emulator.url();
        let token = crate::emulator::token(&url).await;
        let every = records(&service(&url, &token, QUERIES[0].0).await);
        for (i, (query, keeps)) in QUERIES.into_iter().enumerate() {
            let api = service(&url, &token, query).await;
            let out = run(&[
                "query",
                "--lake",
                lake.to_str().expect("utf-8"),
                "--as-of",
                &manifest.id,
                "--format",
                "odata-json",
                &format!("machines?{query}"),
            ]);
            assert!(out.status.success(), "{query}: {}", stderr(&out));
            let ours: Value = serde_json::from_str(&stdout(&out)).expect("odata-json");
            let theirs: Vec<Record> = records(&api).into_iter().map(at_micros).collect();
            let ours = records(&ours);
            let expected: Vec<Record> = every.iter().filter(|r| keeps(r)).cloned().collect();
            let expected = ids(&expected);
            assert_eq!(ids(&theirs), expected, "day {day}: {query}: the emulator's");
            assert_eq!(ids(&ours), expected, "day {day}: {query}: the lake's");
            kept[i] = (kept[i].0 + expected.len(), kept[i].1 + every.len());
            assert!(!theirs.is_empty() || query.contains("filter"), "{query}");
            assert_eq!(ours.len(), theirs.len(), "day {day}: {query}: rows");
            for (a, b) in ours.iter().zip(&theirs) {
                let keys_a: Vec<&String> = a.keys().collect();
                let keys_b: Vec<&String> = b.keys().collect();
                assert_eq!(keys_a, keys_b, "day {day}: {query}: key order");
                assert_eq!(a, b, "day {day}: {query}");
            }
            compared += ours.len();
        }
    }
    assert!(compared > 600, "records compared: {compared}");
    // Each filter keeps some records and drops others.
    for ((query, _), (some, of)) in QUERIES.iter().zip(kept).skip(1) {
        assert!(some > 0 && some < of, "{query} kept {some} of {of} records");
    }
}
