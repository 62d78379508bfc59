//! Ingest against the emulator: a whole tenant row by row and field by field, then the
//! same through faults, expiring tokens and a fleet that changes between pages; every
//! schema profile; a delegated sign-in seeing its device groups only, cached for the
//! next run; the rate limits never exceeded; user names that would bend a path; the
//! service's refusals; the page bound; secrets kept out of everything; kill -9 and
//! Ctrl-C at any moment.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use mdesnap::emulator::{Emulator, EmulatorConfig, Faults, Profile};
use mdesnap::ingest::{
    ApiError, AuthError, Credentials, Endpoints, Event, IngestError, IngestOptions, IngestReport,
    Limits, PageError, Secret, WaitReason, ingest,
};
use mdesnap::lake::scan_lake;
use mdesnap::{Engine, Names};
use serde_json::{Map, Value};
use tempfile::tempdir;

use crate::emulator::fleet;
use crate::kill::assert_whole;
use crate::{bin, stderr, stdout};

/// Endpoints all on the emulator; tokens for the real scopes, as the emulator checks.
fn endpoints(url: &str) -> Endpoints {
    Endpoints {
        api: url.to_string(),
        authority: url.to_string(),
        scope: "https://api.securitycenter.microsoft.com/.default".into(),
        graph: url.to_string(),
        graph_scope: "https://graph.microsoft.com/.default".into(),
    }
}

/// An emulator and a lake folder to ingest into, alive as long as the value.
struct Rig {
    emu: Emulator,
    url: String,
    dir: tempfile::TempDir,
    lake: std::path::PathBuf,
}

/// Starts an emulator with `cfg` and makes a temporary folder for the lake.
async fn rig(cfg: EmulatorConfig) -> Rig {
    let emu = Emulator::start(cfg).await.expect("starts");
    let url = emu.url();
    let dir = tempdir().expect("tempdir");
    let lake = dir.path().join("lake");
    Rig {
        emu,
        url,
        dir,
        lake,
    }
}

/// Options for the emulator's default credentials, with quick retries.
pub(crate) fn options(lake: &Path, url: &str) -> IngestOptions {
    let mut o = IngestOptions::new(
        lake,
        endpoints(url),
        "emulator-tenant",
        Credentials::ClientSecret {
            client_id: "emulator-client".into(),
            secret: Secret::new("emulator-secret"),
        },
    );
    o.retry.backoff_base = Duration::from_millis(5);
    o.retry.max_retry_after = Duration::from_secs(2);
    o.timeout = Duration::from_secs(10);
    o
}

/// Runs an ingest, keeping its events.
pub(crate) async fn run_ingest(
    options: &IngestOptions,
) -> (Result<IngestReport, IngestError>, Vec<Event>) {
    let events = Mutex::new(Vec::new());
    let observe = |e: Event| events.lock().expect("lock").push(e);
    let result = ingest(options, &observe).await;
    (result, events.into_inner().expect("lock"))
}

async fn token(url: &str) -> String {
    crate::emulator::token(url).await
}

async fn get_json(url: &str, path: &str) -> Value {
    let t = token(url).await;
    crate::http()
        .get(format!("{url}{path}"))
        .bearer_auth(t)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json")
}

/// Every machine the emulator serves now, as records by id, times at microseconds.
async fn service_records(url: &str) -> BTreeMap<String, Map<String, Value>> {
    let mut records = Vec::new();
    let mut path = "/api/machines?$top=10000".to_string();
    loop {
        let doc = get_json(url, &path).await;
        records.extend(doc["value"].as_array().expect("value").iter().cloned());
        match doc["@odata.nextLink"].as_str() {
            Some(link) => {
                path = link
                    .strip_prefix(url)
                    .expect("a link of the service")
                    .into()
            }
            None => break,
        }
    }
    records
        .iter()
        .map(|r| {
            let mut r = r.as_object().expect("object").clone();
            for key in ["firstSeen", "lastSeen"] {
                if let Some(Value::String(t)) = r.get(key) {
                    let micros = mdesnap::decode::parse_timestamp_micros(t).expect("time");
                    r.insert(
                        key.into(),
                        Value::String(mdesnap::odata::shape::api_time(micros).expect("time")),
                    );
                }
            }
            (r["id"].as_str().expect("id").to_string(), r)
        })
        .collect()
}

/// The latest snapshot's machines, as the service's records by id.
async fn lake_records(lake: &Path) -> BTreeMap<String, Map<String, Value>> {
    let engine = Engine::open(lake, None).expect("opens");
    let r = engine
        .odata_request("machines", Names::Api)
        .await
        .expect("plans");
    let mut out = BTreeMap::new();
    for batch in r.df.collect().await.expect("reads") {
        for rec in mdesnap::odata::shape::api_records(&batch).expect("records") {
            out.insert(rec["id"].as_str().expect("id").to_string(), rec);
        }
    }
    out
}

/// A column of a latest table, as text, sorted.
async fn column(lake: &Path, sql: &str) -> Vec<String> {
    let engine = Engine::open(lake, None).expect("opens");
    let batches = engine
        .sql(sql)
        .await
        .expect("plans")
        .collect()
        .await
        .expect("reads");
    let mut out = Vec::new();
    for b in batches {
        let c = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8).expect("cast");
        out.extend(
            arrow::array::AsArray::as_string::<i32>(&c)
                .iter()
                .map(|v| v.unwrap_or("NULL").to_string()),
        );
    }
    out.sort();
    out
}

async fn stats(url: &str) -> Value {
    crate::http()
        .get(format!("{url}/_emulator/stats"))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json")
}

#[tokio::test]
async fn a_full_ingest_is_the_fleet_field_by_field() {
    let cfg = EmulatorConfig {
        machines: 700,
        ..EmulatorConfig::default()
    };
    let Rig {
        emu: _emu,
        url,
        dir: _dir,
        lake,
    } = rig(cfg.clone()).await;
    let f = fleet(&cfg);
    let users: Vec<String> = f.user_names().into_iter().take(4).collect();
    let domains: Vec<String> = f.domain_names().into_iter().take(3).collect();
    let mut o = options(&lake, &url);
    o.page_size = 100;
    o.users = users.clone();
    o.domains = domains.clone();
    o.security_states = true;
    let (report, events) = run_ingest(&o).await;
    let report = report.expect("ingests");
    assert!(report.pages >= 8, "paged: {}", report.pages);
    assert!(events.iter().any(|e| matches!(e, Event::Page { .. })));

    let ours = lake_records(&lake).await;
    let theirs = service_records(&url).await;
    assert_eq!(ours.len(), 700);
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>()
    );
    for (id, record) in &theirs {
        let mine = &ours[id];
        assert_eq!(
            mine.keys().collect::<Vec<_>>(),
            record.keys().collect::<Vec<_>>(),
            "{id}: keys"
        );
        assert_eq!(mine, record, "{id}");
    }
    // The pairs are the fleet's, for the users and domains asked.
    let mut expected: Vec<String> = f
        .user_pairs()
        .into_iter()
        .filter(|(u, _)| users.contains(u))
        .map(|(u, id)| format!("{u} {id}"))
        .collect();
    expected.sort();
    let got = column(
        &lake,
        "SELECT user_id || ' ' || machine_id FROM user_machines",
    )
    .await;
    assert!(!got.is_empty());
    assert_eq!(got, expected);
    let mut expected: Vec<String> = f
        .domain_pairs(500)
        .into_iter()
        .filter(|(d, _)| domains.contains(d))
        .map(|(d, id)| format!("{d} {id}"))
        .collect();
    expected.sort();
    let got = column(
        &lake,
        "SELECT domain || ' ' || machine_id FROM domain_machines",
    )
    .await;
    assert_eq!(got, expected);
    let mut expected: Vec<String> = f
        .machines()
        .iter()
        .map(|m| {
            let r = f.security_state_record(m);
            format!("{} {}", r["id"].as_str().unwrap_or(""), r["build"])
        })
        .collect();
    expected.sort();
    let got = column(
        &lake,
        "SELECT id || ' ' || coalesce(CAST(build AS VARCHAR), 'null') FROM security_states",
    )
    .await;
    assert_eq!(got, expected);
    let manifest = &report.manifest;
    assert_eq!(manifest.source, url);
    assert_eq!(manifest.users, users);
    assert_eq!(manifest.duplicates_dropped, 0);
}

#[tokio::test]
async fn faults_expiring_tokens_and_a_changing_fleet_lose_nothing() {
    let mut faults = Faults::default();
    for (k, v) in [
        ("500", 0.1),
        ("429", 0.05),
        ("drop", 0.05),
        ("cut", 0.05),
        ("401", 0.05),
        ("mutate_between_pages", 0.3),
        ("buggy_next_link", 0.5),
    ] {
        faults.0.insert(k.into(), v);
    }
    let cfg = EmulatorConfig {
        machines: 600,
        calls_per_minute: 100_000,
        token_lifetime: Duration::from_secs(1),
        next_link_with_top: true,
        faults,
        ..EmulatorConfig::default()
    };
    let before: HashSet<String> = fleet(&cfg)
        .machines()
        .iter()
        .map(|m| m.id().to_string())
        .collect();
    let users: Vec<String> = fleet(&cfg).user_names().into_iter().take(30).collect();
    let Rig {
        emu: _emu,
        url,
        dir: _dir,
        lake,
    } = rig(cfg).await;
    let mut o = options(&lake, &url);
    // Enough calls (some 100) that each fault is served: the emulator's draws follow
    // its seed.
    o.page_size = 10;
    o.users = users;
    // Tokens are used until they expire (no margin), so some calls meet a 401 and
    // renew; the `401` fault revokes others.
    o.renew_margin = Duration::ZERO;
    o.limits.per_minute = 100_000;
    let (report, events) = run_ingest(&o).await;
    let report = report.expect("ingests through the faults");
    eprintln!(
        "faults run: {:?}, {} pages, {} tokens, {:?}",
        report.calls, report.pages, report.tokens, report.elapsed
    );
    // Faults off: the fleet as it is now.
    crate::http()
        .post(format!("{url}/_emulator/faults"))
        .body("{}")
        .send()
        .await
        .expect("faults off");
    let after: HashSet<String> = service_records(&url).await.into_keys().collect();
    let ids = column(&lake, "SELECT id FROM machines").await;
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "no id twice in a snapshot");
    let stayed: Vec<&String> = before.intersection(&after).collect();
    let missing: Vec<&&String> = stayed.iter().filter(|id| !unique.contains(**id)).collect();
    assert!(
        missing.is_empty(),
        "{} machines present for the whole run were missed: {missing:?}",
        missing.len()
    );
    assert!(before != after, "the fleet did change during the run");
    assert!(report.calls.retries > 0, "{:?}", report.calls);
    assert!(report.calls.throttled > 0, "{:?}", report.calls);
    assert!(
        report.tokens > 1,
        "a 1 s token is renewed: {}",
        report.tokens
    );
    let s = stats(&url).await;
    for kind in ["500", "429", "drop", "cut", "401", "mutate_between_pages"] {
        assert!(
            s["faults"][kind].as_u64().unwrap_or(0) > 0,
            "{kind} served: {s}"
        );
    }
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::Waiting {
                reason: WaitReason::RetryAfter,
                ..
            }
        )),
        "a 429 is waited out as such"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Warning(w) if w.contains("nextLink")))
    );
}

#[tokio::test]
async fn a_service_paging_below_top_is_followed_by_its_links() {
    // Pages of 37 where 100 were asked: each short page comes with a nextLink, which
    // must be followed rather than taken for the end of the list.
    let cfg = EmulatorConfig {
        machines: 250,
        max_page: Some(37),
        ..EmulatorConfig::default()
    };
    let Rig {
        emu: _emu,
        url,
        dir: _dir,
        lake,
    } = rig(cfg).await;
    let mut o = options(&lake, &url);
    o.page_size = 100;
    let (report, events) = run_ingest(&o).await;
    let report = report.expect("ingests");
    assert!(report.pages >= 7, "paged: {}", report.pages);
    assert!(
        !events.iter().any(|e| matches!(e, Event::Warning(_))),
        "a link that advances is no cause for a warning: {events:?}"
    );
    let ours = lake_records(&lake).await;
    let theirs = service_records(&url).await;
    assert_eq!(ours.len(), 250);
    assert_eq!(theirs.len(), 250);
    for (id, record) in &theirs {
        assert_eq!(ours.get(id), Some(record), "{id}");
    }
    assert_eq!(report.manifest.duplicates_dropped, 0);
}

#[tokio::test]
async fn every_schema_profile_ingests() {
    // A column the profile leaves out has no value; in the 2023 shape it has some.
    for (profile, column_name, absent) in [
        (Profile::P2021, "is_excluded", true),
        (Profile::P2021, "managed_by_status", true),
        (Profile::P2026, "defender_av_status", true),
        (Profile::P2023, "defender_av_status", false),
        (Profile::P2023, "is_excluded", false),
    ] {
        let cfg = EmulatorConfig {
            machines: 120,
            profile,
            ..EmulatorConfig::default()
        };
        let emu = Emulator::start(cfg).await.expect("starts");
        let dir = tempdir().expect("tempdir");
        let lake = dir.path().join("lake");
        let (report, _) = run_ingest(&options(&lake, &emu.url())).await;
        report.expect("ingests");
        let extra = column(&lake, "SELECT count(extra) FROM machines").await;
        assert_eq!(extra, ["0"], "{profile:?}: every key known");
        let present = column(&lake, &format!("SELECT count({column_name}) FROM machines")).await;
        assert_eq!(
            present == ["0"],
            absent,
            "{profile:?}: {column_name} has {present:?} values"
        );
        let n = column(&lake, "SELECT count(DISTINCT id) FROM machines").await;
        assert_eq!(n, ["120"], "{profile:?}");
    }
}

#[tokio::test]
async fn a_device_code_sign_in_sees_its_groups_and_is_cached() {
    let cfg = EmulatorConfig {
        machines: 400,
        users: vec![("alice".into(), vec![140, 5])],
        approve_after: Duration::from_millis(1_500),
        ..EmulatorConfig::default()
    };
    let f = fleet(&cfg);
    let expected: BTreeSet<String> = f
        .machines()
        .iter()
        .map(|m| f.machine_record(m))
        .filter(|r| [140, 5].contains(&r["rbacGroupId"].as_i64().unwrap_or(0)))
        .map(|r| r["id"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(expected.len() > 10);
    let emu = Emulator::start(cfg).await.expect("starts");
    let url = emu.url();
    let dir = tempdir().expect("tempdir");
    let cache = dir.path().join("cache").join("tokens.json");
    let mut o = options(&dir.path().join("lake"), &url);
    o.credentials = Credentials::DeviceCode {
        client_id: "emulator-client".into(),
        cache: Some(cache.clone()),
    };
    let (report, events) = run_ingest(&o).await;
    report.expect("ingests as alice");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::SignIn { user_code, .. } if !user_code.is_empty())),
        "the code is shown"
    );
    let got: BTreeSet<String> = column(&dir.path().join("lake"), "SELECT id FROM machines")
        .await
        .into_iter()
        .collect();
    assert_eq!(got, expected, "exactly alice's device groups");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&cache)
            .expect("cached")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // The next run signs in from the cache.
    let (report, events) = run_ingest(&o).await;
    report.expect("ingests again");
    assert!(
        !events.iter().any(|e| matches!(e, Event::SignIn { .. })),
        "no new sign-in"
    );
    let s = stats(&url).await;
    assert_eq!(s["token_requests"]["devicecode"], 1, "{s}");

    // A damaged cache stops the run before any sign-in, names the file, and is kept.
    std::fs::write(&cache, b"{\"entries\": [").expect("damages the cache");
    let (report, events) = run_ingest(&o).await;
    let err = report.expect_err("a damaged cache is an error");
    assert!(
        matches!(
            err,
            IngestError::Api(ApiError::Auth(AuthError::CacheDamaged { .. }))
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains(&cache.display().to_string()),
        "{err}"
    );
    assert!(err.to_string().contains("delete it"), "{err}");
    assert!(!events.iter().any(|e| matches!(e, Event::SignIn { .. })));
    assert_eq!(std::fs::read(&cache).expect("kept"), b"{\"entries\": [");
    assert_eq!(stats(&url).await["token_requests"]["devicecode"], 1);
}

#[tokio::test]
async fn a_device_code_poll_slows_down_and_a_code_expires() {
    let cfg = EmulatorConfig {
        machines: 20,
        users: vec![("bob".into(), vec![140])],
        approve_after: Duration::from_secs(2),
        device_code_min_poll: Duration::from_secs(3),
        ..EmulatorConfig::default()
    };
    let emu = Emulator::start(cfg).await.expect("starts");
    let dir = tempdir().expect("tempdir");
    let mut o = options(&dir.path().join("lake"), &emu.url());
    o.credentials = Credentials::DeviceCode {
        client_id: "emulator-client".into(),
        cache: None,
    };
    let began = std::time::Instant::now();
    let (report, _) = run_ingest(&o).await;
    report.expect("signs in after slowing down");
    // The first poll (after 1 s) was too fast; slow_down made the next one 6 s later.
    assert!(
        began.elapsed() >= Duration::from_secs(6),
        "{:?}",
        began.elapsed()
    );

    let cfg = EmulatorConfig {
        machines: 20,
        users: vec![("bob".into(), vec![140])],
        approve_after: Duration::from_secs(30),
        device_code_lifetime: Duration::from_secs(2),
        ..EmulatorConfig::default()
    };
    let emu = Emulator::start(cfg).await.expect("starts");
    let mut o = options(&dir.path().join("lake2"), &emu.url());
    o.credentials = Credentials::DeviceCode {
        client_id: "emulator-client".into(),
        cache: None,
    };
    let (report, _) = run_ingest(&o).await;
    let err = report.expect_err("the code expires");
    assert!(err.to_string().contains("expired"), "{err}");
    assert!(!dir.path().join("lake2").join("_snapshots").exists());
}

#[tokio::test]
async fn the_rate_limits_are_never_exceeded() {
    let cfg = EmulatorConfig {
        machines: 600,
        calls_per_minute: 4,
        calls_per_hour: 1_000,
        window_scale: 0.01,
        ..EmulatorConfig::default()
    };
    let users: Vec<String> = fleet(&cfg).user_names().into_iter().take(6).collect();
    let emu = Emulator::start(cfg).await.expect("starts");
    let url = emu.url();
    let dir = tempdir().expect("tempdir");
    let mut o = options(&dir.path().join("lake"), &url);
    o.page_size = 40;
    o.users = users;
    // The emulator's windows (0.6 s and 36 s), a tenth longer for the clock of the
    // machine under test.
    o.limits = Limits {
        per_minute: 4,
        per_hour: 1_000,
        minute: Duration::from_millis(660),
        hour: Duration::from_millis(39_600),
    };
    let (report, events) = run_ingest(&o).await;
    let report = report.expect("ingests");
    assert!(report.calls.calls > 20, "{:?}", report.calls);
    let s = stats(&url).await;
    assert_eq!(
        s["throttled"],
        serde_json::json!({}),
        "429s served for limits: {s}"
    );
    assert_eq!(report.calls.throttled, 0);
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::Waiting {
                reason: WaitReason::RateLimit,
                ..
            }
        )),
        "the limiter made the run wait"
    );
}

#[tokio::test]
async fn odd_user_names_each_reach_the_user_route() {
    let emu = Emulator::start(EmulatorConfig {
        machines: 30,
        ..EmulatorConfig::default()
    })
    .await
    .expect("starts");
    let url = emu.url();
    let dir = tempdir().expect("tempdir");
    let mut o = options(&dir.path().join("lake"), &url);
    let names = ["../machines", "a b", "o'brien", "jürgen", "x?y#z", "100%"];
    o.users = names.iter().map(|s| s.to_string()).collect();
    let (report, _) = run_ingest(&o).await;
    report.expect("ingests");
    let s = stats(&url).await;
    assert_eq!(s["users_asked"], serde_json::json!(names), "{s}");
    // None of them reached another route.
    assert_eq!(s["calls"]["/api/machines"]["total"], 1, "{s}");
    assert_eq!(
        s["calls"]["/api/users/{id}/machines"]["total"],
        names.len(),
        "{s}"
    );
    // A name that would be a dot segment is refused before any call.
    o.users = vec!["..".into()];
    let (report, _) = run_ingest(&o).await;
    assert!(matches!(
        report,
        Err(IngestError::Page(PageError::BadSegment(_)))
    ));
}

#[tokio::test]
async fn refusals_and_the_page_bound_commit_nothing() {
    let emu = Emulator::start(EmulatorConfig {
        machines: 200,
        roles: vec!["Alert.Read.All".into()],
        ..EmulatorConfig::default()
    })
    .await
    .expect("starts");
    let dir = tempdir().expect("tempdir");
    let lake = dir.path().join("lake");
    let (report, _) = run_ingest(&options(&lake, &emu.url())).await;
    let err = report.expect_err("403");
    assert!(err.to_string().contains("403"), "{err}");
    assert!(
        err.to_string().contains("Machine.Read"),
        "the service's message: {err}"
    );

    let emu = Emulator::start(EmulatorConfig {
        machines: 200,
        ..EmulatorConfig::default()
    })
    .await
    .expect("starts");
    let mut o = options(&lake, &emu.url());
    o.filter = Some("osBuild gt 19000".into());
    let (report, _) = run_ingest(&o).await;
    let err = report.expect_err("400");
    assert!(err.to_string().contains("400"), "{err}");
    assert!(err.to_string().contains("osBuild"), "{err}");

    let mut o = options(&lake, &emu.url());
    o.page_size = 10;
    o.max_pages = 3;
    let (report, _) = run_ingest(&o).await;
    assert!(
        matches!(
            report,
            Err(IngestError::Page(PageError::TooManyPages { max: 3 }))
        ),
        "{report:?}"
    );
    let scan = scan_lake(&lake).expect("the lake exists");
    assert!(scan.snapshots.is_empty(), "nothing committed");
    assert!(crate::leftovers(&lake).is_empty(), "nothing left behind");
}

/// Replaces the emulator's fault rates.
async fn set_faults(url: &str, faults: Value) {
    let r = crate::http()
        .post(format!("{url}/_emulator/faults"))
        .body(faults.to_string())
        .send()
        .await
        .expect("sent");
    assert!(r.status().is_success(), "{faults}");
}

/// Calls the emulator has had on route template `route`.
async fn calls_on(url: &str, route: &str) -> u64 {
    stats(url).await["calls"][route]["total"]
        .as_u64()
        .unwrap_or(0)
}

/// The machines a run committed.
fn machines_of(report: &IngestReport) -> Option<u64> {
    report
        .manifest
        .table(mdesnap::Table::Machines)
        .map(|t| t.rows)
}

/// Snapshots committed in `lake`, and that nothing was left behind.
fn committed(lake: &Path) -> usize {
    assert!(crate::leftovers(lake).is_empty(), "nothing left behind");
    scan_lake(lake).map_or(0, |s| s.snapshots.len())
}

#[tokio::test]
async fn a_404_from_the_machines_list_is_retried_then_fails_naming_the_url() {
    let r = rig(EmulatorConfig {
        machines: 120,
        ..EmulatorConfig::default()
    })
    .await;
    let (url, lake, dir) = (r.url.clone(), r.lake.clone(), &r.dir);
    let mut o = options(&lake, &url);
    o.retry.retries = 2;
    let (report, _) = run_ingest(&o).await;
    report.expect("a first snapshot");
    // Now the list answers 404 as a wrong path or a gateway would: an empty snapshot
    // would record all 120 machines as removed.
    set_faults(&url, serde_json::json!({"404@/api/machines": 1.0})).await;
    let (report, events) = run_ingest(&o).await;
    let err = report.expect_err("a 404 from the list is no empty tenant");
    assert!(
        matches!(
            err,
            IngestError::Page(PageError::ListNotFound { attempts: 3, .. })
        ),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains(&format!("{url}/api/machines?$top=")),
        "{text}"
    );
    assert!(
        text.contains("--allow-empty") && text.contains("no recent machines"),
        "{text}"
    );
    assert_eq!(
        calls_on(&url, "/api/machines").await,
        1 + 3,
        "retried twice"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Retrying { why, .. } if why.contains("404"))),
        "{events:?}"
    );
    assert_eq!(committed(&lake), 1, "nothing committed");

    // --allow-empty commits an empty snapshot deliberately (in a lake of its own: after
    // 120 machines, the shrink guard would refuse it).
    let lake2 = dir.path().join("empty");
    let mut o = options(&lake2, &url);
    o.retry.retries = 1;
    o.allow_empty = true;
    let (report, _) = run_ingest(&o).await;
    let report = report.expect("an empty tenant, deliberately");
    assert_eq!(machines_of(&report), Some(0));
    assert_eq!(committed(&lake2), 1);
}

#[tokio::test]
async fn transient_404s_from_the_machines_list_lose_nothing() {
    let r = rig(EmulatorConfig {
        machines: 300,
        faults: Faults(
            [("404@/api/machines".to_string(), 0.3)]
                .into_iter()
                .collect(),
        ),
        ..EmulatorConfig::default()
    })
    .await;
    let (url, lake) = (r.url.clone(), r.lake.clone());
    let mut o = options(&lake, &url);
    o.page_size = 50;
    let (report, _) = run_ingest(&o).await;
    let report = report.expect("ingests through the 404s");
    assert!(report.calls.retries > 0, "{:?}", report.calls);
    assert!(stats(&url).await["faults"]["404"].as_u64().unwrap_or(0) > 0);
    set_faults(&url, serde_json::json!({})).await;
    let theirs = service_records(&url).await;
    let ours = lake_records(&lake).await;
    assert_eq!(theirs.len(), 300);
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>(),
        "no page lost to a 404"
    );
}

#[tokio::test]
async fn an_empty_machines_list_is_refused_unless_allowed_or_filtered() {
    // An analyst whose device groups hold no machine: the list answers 200 [].
    let r = rig(EmulatorConfig {
        machines: 80,
        users: vec![("nobody".into(), vec![424_242])],
        approve_after: Duration::ZERO,
        empty_tenant_404: false,
        ..EmulatorConfig::default()
    })
    .await;
    let (url, lake, dir) = (r.url.clone(), r.lake.clone(), &r.dir);
    let mut o = options(&lake, &url);
    o.credentials = Credentials::DeviceCode {
        client_id: "emulator-client".into(),
        cache: Some(dir.path().join("tokens.json")),
    };
    let (report, _) = run_ingest(&o).await;
    let err = report.expect_err("an empty answer is a fault until shown otherwise");
    assert!(
        matches!(err, IngestError::Page(PageError::EmptyList { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("--allow-empty"), "{err}");
    assert_eq!(committed(&lake), 0);
    o.allow_empty = true;
    let (report, _) = run_ingest(&o).await;
    let report = report.expect("allowed");
    assert_eq!(machines_of(&report), Some(0));
    assert_eq!(committed(&lake), 1);

    // With a filter, an empty answer is an answer.
    let lake2 = dir.path().join("filtered");
    let mut o = options(&lake2, &url);
    o.filter = Some("computerDnsName eq 'no-such-machine'".into());
    let (report, _) = run_ingest(&o).await;
    let report = report.expect("a filter matching nothing");
    assert_eq!(machines_of(&report), Some(0));
}

#[tokio::test]
async fn a_next_link_leaving_the_route_fails_the_run_on_every_collection() {
    let cfg = EmulatorConfig {
        machines: 90,
        ..EmulatorConfig::default()
    };
    let f = fleet(&cfg);
    let r = rig(cfg).await;
    let (url, lake) = (r.url.clone(), r.lake.clone());
    let mut o = options(&lake, &url);
    o.users = f.user_names().into_iter().take(2).collect();
    o.domains = f.domain_names().into_iter().take(2).collect();
    o.security_states = true;
    for route in [
        "/api/machines",
        "/api/users/{id}/machines",
        "/api/domains/{domain}/machines",
        "/testwdatppreview/machinesecuritystates",
    ] {
        set_faults(
            &url,
            serde_json::json!({format!("foreign_next_link@{route}"): 1.0}),
        )
        .await;
        let (report, _) = run_ingest(&o).await;
        let err = report.expect_err("a collection cut short is no collection");
        assert!(
            matches!(err, IngestError::Page(PageError::LinkLeavesRoute { .. })),
            "{route}: {err}"
        );
        assert!(
            err.to_string().contains("https://elsewhere.invalid/"),
            "{err}"
        );
        let path = route.split('{').next().unwrap_or(route);
        assert!(err.to_string().contains(path), "{route}: {err}");
        assert_eq!(committed(&lake), 0, "{route}");
    }
    set_faults(&url, serde_json::json!({})).await;
    let (report, _) = run_ingest(&o).await;
    report.expect("without the fault");
}

/// `mdesnap ingest` against an emulator, with the emulator's credentials in the
/// environment.
fn ingest_command(url: &str, lake: &Path, secret: &str) -> std::process::Command {
    let mut c = bin();
    c.args([
        "ingest",
        "--lake",
        lake.to_str().expect("utf-8"),
        "--base-url",
        url,
        "--authority-url",
        url,
        "--graph-base-url",
        url,
    ])
    .env_remove("MDESNAP_LAKE")
    .env_remove("RUST_LOG")
    .env("AZURE_TENANT_ID", "emulator-tenant")
    .env("AZURE_CLIENT_ID", "emulator-client")
    .env("AZURE_CLIENT_SECRET", secret);
    c
}

/// Runs `mdesnap ingest ARGS` against the emulator at `url` off the async threads (the
/// in-process emulator keeps serving meanwhile); returns its output.
async fn ingest_output(
    url: &str,
    lake: &Path,
    secret: &str,
    args: &[&str],
) -> std::process::Output {
    let mut command = ingest_command(url, lake, secret);
    command.args(args);
    tokio::task::spawn_blocking(move || command.output().expect("runs"))
        .await
        .expect("joined")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_and_tokens_appear_nowhere() {
    let secret = "S3cr3t-Only-The-Emulator-Knows-7f3a";
    let Rig {
        emu: _emu,
        url,
        dir,
        lake,
    } = rig(EmulatorConfig {
        machines: 150,
        client_secret: secret.into(),
        token_lifetime: Duration::from_secs(1),
        ..EmulatorConfig::default()
    })
    .await;
    let out = ingest_output(
        &url,
        &lake,
        secret,
        &[
            "-vv",
            "--page-size",
            "30",
            "--security-states",
            "--users",
            "x",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("DEBUG"), "-vv logs: {}", stderr(&out));
    // Every token the emulator issues starts with this header.
    let token_head = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"alg":"none","typ":"JWT","kid":"emulator"}"#)
    };
    let issued: Value = crate::http()
        .post(format!("{url}/emulator-tenant/oauth2/v2.0/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("grant_type=client_credentials&client_id=emulator-client&client_secret={secret}&scope=https%3A%2F%2Fapi.securitycenter.microsoft.com%2F.default"))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert!(
        issued["access_token"]
            .as_str()
            .is_some_and(|t| t.starts_with(&token_head)),
        "{issued}"
    );
    assert!(token_head.len() > 10);
    let mut places = vec![
        ("stdout".to_string(), out.stdout.clone()),
        ("stderr".to_string(), out.stderr.clone()),
    ];
    let mut stack = vec![lake.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("dir").flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                places.push((
                    e.path().display().to_string(),
                    std::fs::read(e.path()).expect("read"),
                ));
            }
        }
    }
    assert!(places.len() > 5, "{places:?}");
    for (place, bytes) in places {
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(secret), "the secret is in {place}");
        assert!(!text.contains(&token_head), "a token is in {place}");
    }
    // A refused secret is not echoed either.
    let out = ingest_command(&url, &dir.path().join("other"), "wrong-Secret-9c1e")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("invalid_client"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("wrong-Secret-9c1e"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_exits_2_on_a_refusal_and_prints_its_line() {
    let Rig {
        emu: _emu,
        url,
        dir: _dir,
        lake,
    } = rig(EmulatorConfig {
        machines: 60,
        ..EmulatorConfig::default()
    })
    .await;
    let out = ingest_output(
        &url,
        &lake,
        "emulator-secret",
        &["--filter", "osBuild gt 1"],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("nothing was committed"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("cannot be used in the $filter"),
        "{}",
        stderr(&out)
    );

    let out = ingest_output(
        &url,
        &lake,
        "emulator-secret",
        &["--json", "--users", "nobody"],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_str(stdout(&out).trim()).expect("one JSON object");
    assert_eq!(v["tables"]["machines"], 60);
    assert_eq!(v["tables"]["user_machines"], 0);
    assert!(v["snapshot"].as_str().is_some_and(|s| s.len() == 16));
    for key in ["duplicates_dropped", "calls", "retries", "elapsed_s"] {
        assert!(v.get(key).is_some(), "{key} in {v}");
    }
    let out = ingest_output(&url, &lake, "emulator-secret", &[]).await;
    let line = stdout(&out);
    assert!(
        line.starts_with("snapshot ") && line.contains("60 machines") && line.contains(" in "),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_ctrl_c_leave_nothing_visible() {
    let Rig {
        emu: _emu,
        url,
        dir: _dir,
        lake,
    } = rig(EmulatorConfig {
        machines: 4_000,
        ..EmulatorConfig::default()
    })
    .await;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    eprintln!("ingest kill test seed {seed}");
    let mut rng = mdesnap::fleet::Rng::derive(seed, &[]);
    let args = [
        "--page-size",
        "100",
        "--users",
        "alice.smith",
        "--domains",
        "contoso.com",
        "--security-states",
        "--quiet",
    ];
    let mut committed = 0;
    for round in 0..6 {
        let mut child = ingest_command(&url, &lake, "emulator-secret")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawns");
        let delay = rng.range(100, 2_500);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        let signal = if round % 2 == 0 { "-KILL" } else { "-INT" };
        std::process::Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("kill");
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .expect("joined")
            .expect("exits");
        if signal == "-INT" && status.code() != Some(0) {
            assert_eq!(status.code(), Some(130), "round {round}");
        }
        let n = assert_whole(&lake).await;
        assert!(n >= committed, "round {round}: snapshots never disappear");
        committed = n;
    }
    // The next run succeeds, whole, and nothing is left over.
    let out = ingest_output(&url, &lake, "emulator-secret", &args).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(assert_whole(&lake).await, committed + 1);
    assert!(crate::leftovers(&lake).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sudden_shrink_is_not_committed_unless_allowed() {
    // The same fleet seen whole (300 machines) and by a service that lost two thirds
    // of it: the change tables must not record 200 machines removed by mistake.
    let of = |machines| {
        Emulator::start(EmulatorConfig {
            machines,
            ..EmulatorConfig::default()
        })
    };
    let (whole, shrunk) = (
        of(300).await.expect("starts"),
        of(100).await.expect("starts"),
    );
    let dir = tempdir().expect("tempdir");
    let lake = dir.path().join("lake");
    let (report, _) = run_ingest(&options(&lake, &whole.url())).await;
    let first = report.expect("a first snapshot").manifest.id;

    let o = options(&lake, &shrunk.url());
    let (report, _) = run_ingest(&o).await;
    let err = report.expect_err("a sudden shrink is refused");
    let IngestError::Shrunk(shrink) = &err else {
        panic!("{err}");
    };
    assert_eq!(
        (shrink.rows, shrink.previous_rows, shrink.fraction),
        (100, 300, 0.5)
    );
    assert_eq!(shrink.previous, first);
    let text = err.to_string();
    for part in [
        "100 machines",
        "300",
        "--min-fraction",
        "--allow-shrink",
        &first,
    ] {
        assert!(text.contains(part), "{part} in {text}");
    }
    assert_eq!(committed(&lake), 1, "nothing committed");

    // Another scope is compared with its own past only.
    let mut filtered = options(&lake, &shrunk.url());
    filtered.filter = Some("riskScore eq 'High'".into());
    let (report, _) = run_ingest(&filtered).await;
    report.expect("the first snapshot of its scope");
    // A lower fraction, or --allow-shrink, lets it through.
    let mut lower = options(&lake, &shrunk.url());
    lower.min_fraction = 0.3;
    let (report, _) = run_ingest(&lower).await;
    report.expect("100 of 300 is above 0.3");
    let (report, _) = run_ingest(&options(&lake, &whole.url())).await;
    report.expect("growing is no shrink");
    let mut allowed = options(&lake, &shrunk.url());
    allowed.allow_shrink = true;
    let (report, _) = run_ingest(&allowed).await;
    report.expect("allowed");
    assert_eq!(committed(&lake), 5);

    let mut bad = options(&lake, &shrunk.url());
    bad.min_fraction = 1.5;
    let (report, _) = run_ingest(&bad).await;
    assert!(
        matches!(report, Err(IngestError::MinFraction(_))),
        "{report:?}"
    );

    // The command: exit 2, the counts and the flags on stderr.
    let (report, _) = run_ingest(&options(&lake, &whole.url())).await;
    report.expect("300 again");
    let out = ingest_output(&shrunk.url(), &lake, "emulator-secret", &[]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("100 machines") && err.contains("300") && err.contains("--allow-shrink"),
        "{err}"
    );
    let out = ingest_output(
        &shrunk.url(),
        &lake,
        "emulator-secret",
        &["--min-fraction", "2"],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--min-fraction"), "{}", stderr(&out));
    assert_eq!(committed(&lake), 6);
}

/// A filtered snapshot in a lake of full ones: the latest and `_history` tables keep to
/// the whole fleet's scope, a filtered scope is one `--scope` away, and every listing
/// says which snapshot is of which scope. (Before scopes, `machines` read the filtered
/// snapshot and `_history` mixed both.)
#[tokio::test]
async fn the_tables_read_one_scope_and_a_filtered_snapshot_is_not_the_fleet() {
    use mdesnap::engine::{EngineOptions, ScopeChoice};
    let r = rig(EmulatorConfig {
        machines: 120,
        ..EmulatorConfig::default()
    })
    .await;
    let (url, lake) = (r.url.clone(), r.lake.clone());
    for filter in [None, None, Some("riskScore eq 'High'")] {
        let mut o = options(&lake, &url);
        o.filter = filter.map(str::to_string);
        let (report, _) = run_ingest(&o).await;
        report.expect("ingests");
    }
    let fleet = service_records(&url).await.len();
    let high = service_records(&url)
        .await
        .values()
        .filter(|m| m["riskScore"] == "High")
        .count();
    assert!(high > 0 && high < fleet, "{high} of {fleet}");

    let engine = Engine::open(&lake, None).expect("opens");
    assert_eq!(
        engine.scope().map(ToString::to_string).as_deref(),
        Some("api")
    );
    assert_eq!(
        crate::scalar(&engine, "SELECT count(*) FROM machines").await,
        fleet.to_string()
    );
    assert_eq!(
        crate::scalar(
            &engine,
            "SELECT count(DISTINCT snapshot) FROM machines_history"
        )
        .await,
        "2"
    );
    // The last two snapshots are both of the whole fleet: nothing was removed.
    assert_eq!(
        crate::scalar(
            &engine,
            "SELECT count(*) FROM machine_changes WHERE change = 'removed'"
        )
        .await,
        "0"
    );
    assert_eq!(
        crate::scalar(&engine, "SELECT count(*) FROM snapshots").await,
        "3"
    );
    assert_eq!(
        crate::scalar(
            &engine,
            "SELECT scope FROM snapshots ORDER BY snapshot DESC LIMIT 1"
        )
        .await,
        "api:riskScore eq 'High'"
    );

    let filtered = Engine::open_with(
        &lake,
        EngineOptions {
            scope: "api:riskScore eq 'High'".parse().expect("a scope"),
            ..EngineOptions::default()
        },
    )
    .expect("opens");
    assert_eq!(
        crate::scalar(&filtered, "SELECT count(*) FROM machines").await,
        high.to_string()
    );
    assert_eq!(
        crate::scalar(
            &filtered,
            "SELECT count(DISTINCT snapshot) FROM machines_history"
        )
        .await,
        "1"
    );
    let mut all = Engine::open_with(
        &lake,
        EngineOptions {
            scope: ScopeChoice::All,
            ..EngineOptions::default()
        },
    )
    .expect("opens");
    assert_eq!(
        crate::scalar(
            &all,
            "SELECT count(DISTINCT snapshot) FROM machines_history"
        )
        .await,
        "3"
    );
    // Back to the default in the same session, and a scope with no snapshot refused.
    all.set_scope(ScopeChoice::Default).expect("switches");
    assert_eq!(
        crate::scalar(&all, "SELECT count(*) FROM machines").await,
        fleet.to_string()
    );
    let none = all.set_scope("api:osPlatform eq 'Linux'".parse().expect("a scope"));
    let e = none.expect_err("no snapshot of that scope");
    assert!(e.to_string().contains("api:riskScore eq 'High'"), "{e}");
    assert_eq!(
        crate::scalar(&all, "SELECT count(*) FROM machines").await,
        fleet.to_string()
    );

    // The command line: the scope column, --scope, and the console's banner and \scope.
    let lake_s = lake.display().to_string();
    let o = bin()
        .args(["snapshots", "list", "--lake", &lake_s, "--format", "csv"])
        .output()
        .expect("runs");
    let listed = stdout(&o);
    assert_eq!(
        listed.lines().filter(|l| l.contains(",api,")).count(),
        2,
        "{listed}"
    );
    assert!(listed.contains(",api:riskScore eq 'High',"), "{listed}");
    let o = bin()
        .args([
            "query",
            "--lake",
            &lake_s,
            "--scope",
            "api:riskScore eq 'High'",
            "--format",
            "csv",
            "SELECT count(*) AS n FROM machines",
        ])
        .output()
        .expect("runs");
    assert_eq!(stdout(&o), format!("n\n{high}\n"), "{}", stderr(&o));
    let o = bin()
        .args(["query", "--lake", &lake_s, "--scope", "hunting", "SELECT 1"])
        .output()
        .expect("runs");
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("'hunting' is not a scope"),
        "{}",
        stderr(&o)
    );
    let o = bin()
        .args([
            "repl",
            "--lake",
            &lake_s,
            "-c",
            "\\scope",
            "-c",
            "\\scope all",
        ])
        .output()
        .expect("runs");
    let out = stdout(&o);
    assert!(out.contains("tables read scope api"), "{out}");
    assert!(out.contains("* api: 2 snapshots"), "{out}");
    assert!(
        out.contains("  api:riskScore eq 'High': 1 snapshot"),
        "{out}"
    );
    assert!(out.contains("tables now read every snapshot"), "{out}");
}
