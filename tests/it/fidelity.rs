//! An OData answer from the lake is the service's answer of that day: a lake written
//! by `generate` and the emulator serving the same fleet on the same day give the same
//! records (same rows, same keys in the same order, same values; the service's times
//! at their seventh digit, the lake's at microseconds).

use chrono::{TimeZone, Utc};
use mdesnap::emulator::{Emulator, EmulatorConfig};
use mdesnap::generate::{GenerateOptions, generate};
use serde_json::{Map, Value};
use tempfile::tempdir;

use crate::{run, stderr, stdout};

const SEED: u64 = 11;
const MACHINES: u64 = 150;
const CHURN: f64 = 0.08;

/// The service's timestamps truncated to microseconds, as the lake keeps them.
fn at_micros(mut record: Map<String, Value>) -> Map<String, Value> {
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
fn records(doc: &Value) -> Vec<Map<String, Value>> {
    let mut out: Vec<Map<String, Value>> = doc["value"]
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
    let options = GenerateOptions {
        seed: SEED,
        machines: MACHINES,
        days: 3,
        churn: CHURN,
        start: Some(start),
        ..GenerateOptions::default()
    };
    let written = generate(&lake, &options, |_| {}).expect("generates");
    let queries = [
        "$top=10000",
        "$filter=riskScore eq 'High'",
        "$filter=machineTags/any(t: t eq 'ExampleTag')",
        "$filter=startswith(computerDnsName,'desktop') and healthStatus ne 'Active'",
        "$filter=rbacGroupId eq 140 or osPlatform eq 'Linux'",
        "$select=ipAddresses,computerDnsName,id,lastSeen&$filter=exposureLevel eq 'High'",
    ];
    let mut compared = 0;
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
        for query in queries {
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
            let theirs: Vec<Map<String, Value>> =
                records(&api).into_iter().map(at_micros).collect();
            let ours = records(&ours);
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
}
