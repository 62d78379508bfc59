//! The emulator over plain HTTP: tokens, 401/403, routing, envelopes, paging, filters
//! (against the fleet filtered in Rust), throttling, faults, profiles, delegated
//! sign-in, and the admin routes. Each test starts its own emulator on an ephemeral
//! loopback port; it stops when dropped.

use std::time::Duration;

use mdesnap::emulator::{Emulator, EmulatorConfig, Faults, Profile};
use mdesnap::fleet::{Fleet, FleetConfig};
use reqwest::StatusCode;
use serde_json::Value;

fn config() -> EmulatorConfig {
    EmulatorConfig {
        machines: 120,
        page_size: 50,
        ..EmulatorConfig::default()
    }
}

pub async fn token(url: &str) -> String {
    let form = "grant_type=client_credentials&client_id=emulator-client&client_secret=emulator-secret&scope=https%3A%2F%2Fapi.securitycenter.microsoft.com%2F.default";
    let v: Value = post(url, "/emulator-tenant/oauth2/v2.0/token", form)
        .await
        .1;
    v["access_token"].as_str().expect("a token").to_string()
}

async fn post(url: &str, path: &str, form: &str) -> (StatusCode, Value) {
    let r = crate::http()
        .post(format!("{url}{path}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.to_string())
        .send()
        .await
        .expect("sent");
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn get(
    url: &str,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut req = crate::http().get(format!("{url}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.expect("sent");
    let status = r.status();
    let headers = r.headers().clone();
    (status, headers, r.json().await.unwrap_or(Value::Null))
}

/// The fleet an emulator with `cfg` serves on its first day.
pub fn fleet(cfg: &EmulatorConfig) -> Fleet {
    Fleet::at_day(
        FleetConfig {
            seed: cfg.seed,
            machines: cfg.machines,
            churn: cfg.churn,
            start: cfg.start,
        },
        cfg.day,
    )
}

#[tokio::test]
async fn tokens_v2_v1_and_their_errors() {
    let emu = Emulator::start(config()).await.expect("starts");
    let url = emu.url();
    let t = token(&url).await;
    assert_eq!(t.split('.').count(), 3, "JWT-shaped");
    let (status, v1) = post(&url, "/emulator-tenant/oauth2/token", "grant_type=client_credentials&client_id=emulator-client&client_secret=emulator-secret&resource=https://api.securitycenter.microsoft.com").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v1["expires_in"], "3599", "v1 numbers are strings");
    assert_eq!(v1["resource"], "https://api.securitycenter.microsoft.com");

    let (status, e) = post(&url, "/emulator-tenant/oauth2/v2.0/token", "grant_type=client_credentials&client_id=emulator-client&client_secret=wrong&scope=https://api.securitycenter.microsoft.com/.default").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(e["error"], "invalid_client");
    assert!(
        !e.to_string().contains("wrong"),
        "the secret is never echoed"
    );
    let (status, e) = post(&url, "/emulator-tenant/oauth2/v2.0/token", "grant_type=client_credentials&client_id=emulator-client&client_secret=emulator-secret&scope=https://api.securitycenter.microsoft.com/Machine.Read.All").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(e["error"], "invalid_scope");
    let (status, e) = post(
        &url,
        "/other-tenant/oauth2/v2.0/token",
        "grant_type=client_credentials",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        e["error_description"]
            .as_str()
            .unwrap_or_default()
            .contains("other-tenant")
    );
}

#[tokio::test]
async fn unauthorized_and_forbidden() {
    let mut cfg = config();
    // Two seconds: a token used within milliseconds of issue is valid whichever
    // side of a second boundary the call lands.
    cfg.token_lifetime = Duration::from_secs(2);
    let emu = Emulator::start(cfg).await.expect("starts");
    let url = emu.url();
    let (s, _, body) = get(&url, "/api/machines", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "Unauthorized");
    let (s, _, _) = get(&url, "/api/machines", Some("garbage")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // A token for another resource: 403.
    let (_, graph) = post(&url, "/emulator-tenant/oauth2/v2.0/token", "grant_type=client_credentials&client_id=emulator-client&client_secret=emulator-secret&scope=https://graph.microsoft.com/.default").await;
    let (s, _, body) = get(&url, "/api/machines", graph["access_token"].as_str()).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "Forbidden");
    // Expired after its lifetime.
    let t = token(&url).await;
    assert_eq!(
        get(&url, "/api/machines?$top=1", Some(&t)).await.0,
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_eq!(
        get(&url, "/api/machines?$top=1", Some(&t)).await.0,
        StatusCode::UNAUTHORIZED
    );

    let mut cfg = config();
    cfg.roles = vec!["Alert.Read.All".into()];
    let emu = Emulator::start(cfg).await.expect("starts");
    let t = token(&emu.url()).await;
    assert_eq!(
        get(&emu.url(), "/api/machines", Some(&t)).await.0,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn routing_envelope_and_paging() {
    let cfg = config();
    let emu = Emulator::start(cfg.clone()).await.expect("starts");
    let url = emu.url();
    let t = token(&url).await;
    let (s, h, first) = get(&url, "/api/v1.0/Machines", Some(&t)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        h["content-type"],
        "application/json; odata.metadata=minimal; odata.streaming=true; charset=utf-8"
    );
    assert_eq!(h["odata-version"], "4.0");
    assert_eq!(
        first["@odata.context"],
        format!("{url}/api/$metadata#Machines")
    );
    assert_eq!(first["value"].as_array().map(Vec::len), Some(50));
    // Follow nextLink to the end: every machine exactly once.
    let mut ids = Vec::new();
    let mut page = first;
    loop {
        for m in page["value"].as_array().cloned().unwrap_or_default() {
            ids.push(m["id"].as_str().unwrap_or_default().to_string());
        }
        let Some(next) = page["@odata.nextLink"].as_str() else {
            break;
        };
        let path = next.strip_prefix(&url).expect("same host").to_string();
        page = get(&url, &path, Some(&t)).await.2;
    }
    let expected: Vec<String> = fleet(&cfg)
        .machines()
        .iter()
        .map(|m| m.id().to_string())
        .collect();
    assert_eq!(ids, expected);
    // With $top: no nextLink even when more rows exist.
    let (_, _, v) = get(&url, "/api/machines?$top=10&$skip=5", Some(&t)).await;
    assert_eq!(v["value"].as_array().map(Vec::len), Some(10));
    assert!(v.get("@odata.nextLink").is_none());
    assert_eq!(v["value"][0]["id"], expected[5].as_str());
    // The live key order, explicit nulls, a numeric rbacGroupId, trimmed timestamps.
    let keys: Vec<&str> = v["value"][0]
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let live: Vec<&str> = mdesnap::schema::MACHINE_PROPERTIES
        .iter()
        .map(|p| p.api)
        .collect();
    assert_eq!(keys, live);
    let (_, _, one) = get(&url, "/api/machines/MYMACHINE1.contoso.com", Some(&t)).await;
    assert_eq!(
        one["@odata.context"],
        format!("{url}/api/$metadata#Machines/$entity")
    );
    assert_eq!(one["rbacGroupId"], 140);
    assert!(
        one["osVersion"].is_null() && one.as_object().is_some_and(|o| o.contains_key("osVersion"))
    );
    let seen = one["lastSeen"].as_str().unwrap_or_default();
    assert!(
        seen.ends_with('Z') && !seen.trim_end_matches('Z').ends_with('0'),
        "{seen}"
    );
    // $top over 10,000 and a negative $skip: 400 ODataError.
    for bad in [
        "/api/machines?$top=10001",
        "/api/machines?$skip=-1",
        "/api/machines?$top=1&$top=2",
    ] {
        let (s, _, e) = get(&url, bad, Some(&t)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(e["error"]["code"], "ODataError");
    }
}

#[tokio::test]
async fn filters_match_the_fleet_and_only_filterable_properties() {
    let cfg = config();
    let emu = Emulator::start(cfg.clone()).await.expect("starts");
    let url = emu.url();
    let t = token(&url).await;
    let f = fleet(&cfg);
    let records: Vec<Value> = f.machines().iter().map(|m| f.machine_record(m)).collect();
    let expect = |pred: &dyn Fn(&Value) -> bool| -> Vec<String> {
        records
            .iter()
            .filter(|r| pred(r))
            .map(|r| r["id"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("riskScore+eq+'High'", expect(&|r| r["riskScore"] == "High")),
        (
            "healthStatus ne 'Active'",
            expect(&|r| r["healthStatus"] != "Active"),
        ),
        ("rbacGroupId eq 140", expect(&|r| r["rbacGroupId"] == 140)),
        (
            "startswith(computerDnsName,'lt-')",
            expect(&|r| {
                r["computerDnsName"]
                    .as_str()
                    .is_some_and(|d| d.starts_with("lt-"))
            }),
        ),
        (
            "machineTags/any(tag: tag eq 'ExampleTag')",
            expect(&|r| {
                r["machineTags"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|x| x == "ExampleTag"))
            }),
        ),
        (
            "lastSeen lt 2025-12-25T00:00:00Z",
            expect(&|r| {
                r["lastSeen"]
                    .as_str()
                    .is_some_and(|s| s < "2025-12-25T00:00:00Z")
            }),
        ),
        (
            "osPlatform eq 'Windows11' and onboardingStatus eq 'Onboarded'",
            expect(&|r| r["osPlatform"] == "Windows11" && r["onboardingStatus"] == "Onboarded"),
        ),
    ];
    for (filter, expected) in cases {
        assert!(!expected.is_empty(), "{filter} selects something");
        let encoded = filter.replace(' ', "%20");
        let (s, _, v) = get(
            &url,
            &format!("/api/machines?$filter={encoded}&$top=10000"),
            Some(&t),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{filter}: {v}");
        let got: Vec<String> = v["value"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|m| m["id"].as_str().unwrap_or_default().to_string())
            .collect();
        assert_eq!(got, expected, "{filter}");
    }
    let (s, _, e) = get(&url, "/api/machines?$filter=osBuild%20eq%2019042", Some(&t)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(e["error"]["code"], "ODataError");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("The property 'osBuild' cannot be used in the $filter query option.")
    );
    // A fresh correlation id each time.
    let (_, _, e2) = get(&url, "/api/machines?$filter=osBuild%20eq%2019042", Some(&t)).await;
    assert_ne!(e["error"]["target"], e2["error"]["target"]);
}

#[tokio::test]
async fn not_found_semantics() {
    let mut cfg = config();
    let emu = Emulator::start(cfg.clone()).await.expect("starts");
    let url = emu.url();
    let t = token(&url).await;
    let (s, _, e) = get(
        &url,
        "/api/machines/0000000000000000000000000000000000000000",
        Some(&t),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(e["error"]["code"], "ResourceNotFound");
    assert_eq!(
        e["error"]["message"],
        "Machine 0000000000000000000000000000000000000000 was not found"
    );
    let (s, _, v) = get(
        &url,
        "/api/machines?$filter=computerDnsName%20eq%20'nope'",
        Some(&t),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["value"], serde_json::json!([]));
    let (s, _, v) = get(&url, "/api/users/nobody/machines", Some(&t)).await;
    assert_eq!(
        (s, v["value"].clone()),
        (StatusCode::OK, serde_json::json!([]))
    );
    let (s, _, v) = get(&url, "/api/users/user1/machines", Some(&t)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["value"][0]["computerDnsName"], "mymachine1.contoso.com");
    let (s, _, v) = get(&url, "/api/domains/nowhere.example/machines", Some(&t)).await;
    assert_eq!(
        (s, v["value"].clone()),
        (StatusCode::OK, serde_json::json!([]))
    );
    drop(emu);
    cfg.legacy_user_404 = true;
    let emu = Emulator::start(cfg).await.expect("starts");
    let t = token(&emu.url()).await;
    assert_eq!(
        get(&emu.url(), "/api/users/nobody/machines", Some(&t))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn the_domain_endpoint_caps_at_500() {
    let mut cfg = config();
    cfg.machines = 6000;
    let emu = Emulator::start(cfg).await.expect("starts");
    let t = token(&emu.url()).await;
    // The pool's first domain is the most contacted.
    let (_, _, v) = get(
        &emu.url(),
        "/api/domains/api.securitycenter.microsoft.com/machines",
        Some(&t),
    )
    .await;
    assert_eq!(v["value"].as_array().map(Vec::len), Some(500));
}

#[tokio::test]
async fn throttling_per_client_and_route_with_retry_after() {
    let mut cfg = config();
    cfg.calls_per_minute = 5;
    cfg.window_scale = 0.05; // a 3-second minute
    let emu = Emulator::start(cfg).await.expect("starts");
    let url = emu.url();
    let t = token(&url).await;
    for _ in 0..5 {
        assert_eq!(
            get(&url, "/api/machines?$top=1", Some(&t)).await.0,
            StatusCode::OK
        );
    }
    let (s, h, e) = get(&url, "/api/machines?$top=1", Some(&t)).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(e["error"]["code"], "TooManyRequests");
    let retry: u64 = h["retry-after"]
        .to_str()
        .ok()
        .and_then(|v| v.parse().ok())
        .expect("Retry-After seconds");
    assert!((1..=3).contains(&retry), "{retry}");
    // Another route template has its own window.
    assert_eq!(
        get(&url, "/api/machines/mymachine1.contoso.com", Some(&t))
            .await
            .0,
        StatusCode::OK
    );
    // Waiting out the window frees the route again.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    assert_eq!(
        get(&url, "/api/machines?$top=1", Some(&t)).await.0,
        StatusCode::OK
    );
    let (_, _, stats) = get(&url, "/_emulator/stats", None).await;
    assert_eq!(stats["calls"]["/api/machines"]["total"], 7);
}

#[tokio::test]
async fn early_retries_prolong_throttling() {
    let mut cfg = config();
    cfg.calls_per_minute = 3;
    cfg.window_scale = 0.05;
    let emu = Emulator::start(cfg).await.expect("starts");
    let url = emu.url();
    let t = token(&url).await;
    for _ in 0..3 {
        get(&url, "/api/machines?$top=1", Some(&t)).await;
    }
    // Hammering during the penalty keeps the window full.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            get(&url, "/api/machines?$top=1", Some(&t)).await.0,
            StatusCode::TOO_MANY_REQUESTS
        );
    }
}

async fn with_faults(faults: &[(&str, f64)]) -> (Emulator, String) {
    let mut cfg = config();
    cfg.slow = Duration::from_millis(700);
    cfg.faults = Faults(faults.iter().map(|(k, v)| ((*k).to_string(), *v)).collect());
    let emu = Emulator::start(cfg).await.expect("starts");
    let t = token(&emu.url()).await;
    (emu, t)
}

#[tokio::test]
async fn every_fault_mode() {
    let (emu, t) = with_faults(&[("500", 1.0)]).await;
    let (s, _, e) = get(&emu.url(), "/api/machines", Some(&t)).await;
    assert_eq!(
        (s, e["error"]["code"].clone()),
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError".into()
        )
    );
    let (emu, t) = with_faults(&[("429", 1.0)]).await;
    let (s, h, _) = get(&emu.url(), "/api/machines", Some(&t)).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert!(h.contains_key("retry-after"));
    let (emu, t) = with_faults(&[("drop", 1.0)]).await;
    let r = crate::http()
        .get(format!("{}/api/machines", emu.url()))
        .bearer_auth(&t)
        .send()
        .await;
    let failed = match r {
        Err(_) => true,
        Ok(resp) => resp.bytes().await.is_err(),
    };
    assert!(failed, "a dropped connection is an error for the client");
    let (emu, t) = with_faults(&[("cut", 1.0)]).await;
    let resp = crate::http()
        .get(format!("{}/api/machines", emu.url()))
        .bearer_auth(&t)
        .send()
        .await
        .expect("headers arrive");
    assert!(resp.bytes().await.is_err(), "the body stops short");
    let (emu, t) = with_faults(&[("slow", 1.0)]).await;
    let start = std::time::Instant::now();
    assert_eq!(
        get(&emu.url(), "/api/machines?$top=1", Some(&t)).await.0,
        StatusCode::OK
    );
    assert!(start.elapsed() >= Duration::from_millis(700));
    let (emu, t) = with_faults(&[("404", 1.0)]).await;
    assert_eq!(
        get(&emu.url(), "/api/machines/mymachine1.contoso.com", Some(&t))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    let (emu, t) = with_faults(&[("buggy_next_link", 1.0)]).await;
    let (_, _, v) = get(
        &emu.url(),
        "/api/machines?$filter=onboardingStatus%20eq%20'Onboarded'",
        Some(&t),
    )
    .await;
    let link = v["@odata.nextLink"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        link.contains("?=onboardingStatus") && link.ends_with("$skip=50"),
        "{link}"
    );
    let path = link
        .strip_prefix(&emu.url())
        .unwrap_or_default()
        .to_string();
    let (_, _, again) = get(&emu.url(), &path, Some(&t)).await;
    assert_eq!(
        again["@odata.nextLink"].as_str(),
        Some(link.as_str()),
        "the buggy link never advances"
    );
    let (emu, t) = with_faults(&[("mutate_between_pages", 1.0)]).await;
    let (_, _, p1) = get(&emu.url(), "/api/machines", Some(&t)).await;
    let before: Vec<Value> = p1["value"].as_array().cloned().unwrap_or_default();
    let (_, _, p2) = get(&emu.url(), "/api/machines?$skip=50", Some(&t)).await;
    let (_, _, p1_again) = get(&emu.url(), "/api/machines?$top=50", Some(&t)).await;
    assert!(p2["value"].as_array().is_some_and(|v| !v.is_empty()));
    assert_ne!(
        p1_again["value"].as_array().cloned().unwrap_or_default(),
        before,
        "the fleet changed between pages"
    );
    let (_, _, stats) = get(&emu.url(), "/_emulator/stats", None).await;
    assert_eq!(stats["faults"]["mutate_between_pages"], 1);
}

#[tokio::test]
async fn faults_scoped_to_a_route_404_on_lists_and_foreign_next_links() {
    // A kind on one route template replaces its rate there: the list 404s, a machine
    // by id is served, a user's machines 404 at the kind's own rate.
    let (emu, t) = with_faults(&[("404@/api/machines", 1.0), ("404", 0.0)]).await;
    let (s, _, e) = get(&emu.url(), "/api/machines?$top=5", Some(&t)).await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("NotFound"))
    );
    let (s, _, _) = get(&emu.url(), "/api/machines/mymachine1.contoso.com", Some(&t)).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = get(&emu.url(), "/api/users/nobody/machines", Some(&t)).await;
    assert_eq!(s, StatusCode::OK);
    let (_, _, stats) = get(&emu.url(), "/_emulator/stats", None).await;
    assert_eq!(stats["faults"]["404"], 1, "{stats}");

    // A nextLink to another origin, on every collection, where it had one or none.
    let (emu, t) = with_faults(&[("foreign_next_link", 1.0)]).await;
    for path in [
        "/api/machines?$top=5",
        "/api/machines?$top=10000",
        "/api/users/nobody/machines",
        "/api/domains/contoso.com/machines",
    ] {
        let (s, _, v) = get(&emu.url(), path, Some(&t)).await;
        assert_eq!(s, StatusCode::OK, "{path}");
        assert_eq!(
            v["@odata.nextLink"].as_str(),
            Some(format!("https://elsewhere.invalid{path}").as_str()),
            "{path}"
        );
        assert!(v["value"].is_array(), "{path}: {v}");
    }
    let (_, _, one) = get(&emu.url(), "/api/machines/mymachine1.contoso.com", Some(&t)).await;
    assert!(
        one.get("@odata.nextLink").is_none(),
        "an entity is no collection"
    );

    // A route that is not a template of the API is refused.
    let r = crate::http()
        .post(format!("{}/_emulator/faults", emu.url()))
        .body(r#"{"404@/api/nowhere": 1.0}"#)
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.expect("json");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("/api/nowhere")),
        "{body}"
    );
}

#[tokio::test]
async fn faults_and_advance_through_admin_routes() {
    let emu = Emulator::start(config()).await.expect("starts");
    let url = emu.url();
    let t = token(&url).await;
    let client = crate::http();
    let r = client
        .post(format!("{url}/_emulator/faults"))
        .body(r#"{"500": 1.0}"#)
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        get(&url, "/api/machines", Some(&t)).await.0,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    let r = client
        .post(format!("{url}/_emulator/faults"))
        .body(r#"{"explode": 1.0}"#)
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    client
        .post(format!("{url}/_emulator/faults"))
        .body("{}")
        .send()
        .await
        .expect("sent");
    let (_, _, before) = get(&url, "/api/machines/mymachine1.contoso.com", Some(&t)).await;
    let r: Value = client
        .post(format!("{url}/_emulator/advance?days=3"))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(r["day"], 3);
    let (_, _, after) = get(&url, "/api/machines/mymachine1.contoso.com", Some(&t)).await;
    assert!(
        after["lastSeen"].as_str() > before["lastSeen"].as_str(),
        "lastSeen moved on"
    );
    let (_, _, users) = get(&url, "/_emulator/users", None).await;
    assert!(
        users
            .as_array()
            .is_some_and(|u| u.iter().any(|x| x == "user1"))
    );
    let (_, _, domains) = get(&url, "/_emulator/domains", None).await;
    assert_eq!(domains.as_array().map(Vec::len), Some(200));
}

#[tokio::test]
async fn schema_profiles_change_the_key_set() {
    for (profile, absent, present) in [
        (Profile::P2021, "managedByStatus", "defenderAvStatus"),
        (Profile::P2023, "", "managedByStatus"),
        (Profile::P2026, "defenderAvStatus", "managedByStatus"),
    ] {
        let mut cfg = config();
        cfg.profile = profile;
        let emu = Emulator::start(cfg).await.expect("starts");
        let t = token(&emu.url()).await;
        let (_, _, v) = get(&emu.url(), "/api/machines?$top=1", Some(&t)).await;
        let m = v["value"][0].as_object().cloned().unwrap_or_default();
        assert!(m.contains_key(present), "{profile:?}");
        if !absent.is_empty() {
            assert!(!m.contains_key(absent), "{profile:?}");
        }
        // The lake's decoder takes every profile without losing a key.
        let mut d = mdesnap::decode::MachineDecoder::default();
        d.push(0, &v["value"][0]).expect("decodes");
    }
}

#[tokio::test]
async fn device_code_sign_in_sees_only_its_groups() {
    let mut cfg = config();
    cfg.users = vec![("alice".into(), vec![140])];
    cfg.approve_after = Duration::from_millis(1_500);
    let emu = Emulator::start(cfg).await.expect("starts");
    let url = emu.url();
    let (s, dc) = post(
        &url,
        "/emulator-tenant/oauth2/v2.0/devicecode",
        "client_id=emulator-client&scope=https://api.securitycenter.microsoft.com/Machine.Read",
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let device = dc["device_code"].as_str().expect("device code").to_string();
    let poll = format!(
        "grant_type=urn:ietf:params:oauth:grant-type:device_code&client_id=emulator-client&device_code={device}"
    );
    // At once is faster than the 1 s interval: slow down (RFC 8628 3.5).
    let (s, e) = post(&url, "/emulator-tenant/oauth2/v2.0/token", &poll).await;
    assert_eq!(
        (s, e["error"].clone()),
        (StatusCode::BAD_REQUEST, "slow_down".into())
    );
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let (s, e) = post(&url, "/emulator-tenant/oauth2/v2.0/token", &poll).await;
    assert_eq!(
        (s, e["error"].clone()),
        (StatusCode::BAD_REQUEST, "authorization_pending".into())
    );
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let (s, tok) = post(&url, "/emulator-tenant/oauth2/v2.0/token", &poll).await;
    assert_eq!(s, StatusCode::OK);
    let t = tok["access_token"].as_str().expect("token");
    let (_, _, v) = get(&url, "/api/machines", Some(t)).await;
    let groups: Vec<i64> = v["value"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|m| m["rbacGroupId"].as_i64().unwrap_or(-1))
        .collect();
    assert!(
        !groups.is_empty() && groups.iter().all(|g| *g == 140),
        "{groups:?}"
    );
    assert_eq!(
        get(&url, "/api/machines/examples-vm10", Some(t)).await.0,
        StatusCode::NOT_FOUND,
        "group 5 is not alice's"
    );
}

#[tokio::test]
async fn security_states_page_with_skiptoken_and_count() {
    let mut cfg = config();
    cfg.page_size = 40;
    let emu = Emulator::start(cfg.clone()).await.expect("starts");
    let url = emu.url();
    let (_, g) = post(&url, "/emulator-tenant/oauth2/v2.0/token", "grant_type=client_credentials&client_id=emulator-client&client_secret=emulator-secret&scope=https://graph.microsoft.com/.default").await;
    let t = g["access_token"].as_str().expect("token").to_string();
    let mut path = "/testwdatppreview/machinesecuritystates".to_string();
    let mut n = 0;
    loop {
        let (s, _, v) = get(&url, &path, Some(&t)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["@odata.count"], 120);
        n += v["value"].as_array().map_or(0, Vec::len);
        let Some(next) = v["@odata.nextLink"].as_str() else {
            break;
        };
        assert!(next.contains("$skiptoken="));
        path = next.strip_prefix(&url).unwrap_or_default().to_string();
    }
    assert_eq!(n, 120);
}

#[tokio::test]
async fn retention_and_select() {
    let mut cfg = config();
    cfg.retention_days = Some(7);
    let emu = Emulator::start(cfg.clone()).await.expect("starts");
    let t = token(&emu.url()).await;
    let f = fleet(&cfg);
    let cutoff = f.now() - chrono::Duration::days(7);
    let expected = f
        .machines()
        .iter()
        .map(|m| f.machine_record(m))
        .filter(|r| {
            r["lastSeen"]
                .as_str()
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                .is_some_and(|t| t >= cutoff)
        })
        .count();
    let (_, _, v) = get(
        &emu.url(),
        "/api/machines?$top=10000&$select=id,lastSeen",
        Some(&t),
    )
    .await;
    let rows = v["value"].as_array().cloned().unwrap_or_default();
    assert!(expected > 0 && expected < 120, "{expected}");
    assert_eq!(rows.len(), expected);
    let keys: Vec<String> = rows[0]
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    assert_eq!(keys, ["id", "lastSeen"]);
    // The inactive sample (11 days) is past retention.
    assert_eq!(
        get(&emu.url(), "/api/machines/mymachine2.contoso.com", Some(&t))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
}

#[test]
fn the_emulate_command_announces_its_address_and_serves() {
    use std::io::BufRead;
    let mut child = crate::bin()
        .args([
            "emulate",
            "--machines",
            "50",
            "--fault",
            "404=1",
            "--roles",
            "Machine.Read.All",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawns");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("a line");
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .map(str::to_string);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let outcome = rt.block_on(async {
        let url = url.clone().expect("first line is `listening on URL`");
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        let t = token(&url).await;
        get(&url, "/api/machines/mymachine1.contoso.com", Some(&t))
            .await
            .0
    });
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(outcome, StatusCode::NOT_FOUND, "--fault 404=1 took effect");
    let o = crate::run(&["emulate", "--fault", "explode=1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        crate::stderr(&o).contains("unknown fault 'explode'"),
        "{}",
        crate::stderr(&o)
    );
}
