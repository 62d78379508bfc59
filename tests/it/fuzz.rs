//! Hostile requests over the whole request path: no input may panic.
//!
//! A seeded generator mutates real requests (the contract's filters, every query
//! option) with odd bytes, percent-escapes, several-byte characters, huge numbers,
//! nulls in odd places and deep nesting. Each request goes through what `mdesnap query`
//! does with it (`looks_like_odata`, `parse_query`, translation, planning, execution
//! over a small lake, the caret of an error) and a share of them through the
//! emulator's HTTP handler, along with odd paths, user and domain names, skiptokens,
//! token-endpoint forms and admin bodies. A panic (or a dropped connection in the
//! emulator) fails the test with the seed and the input.
//!
//! The same requests go through the console's pieces (statement splitting,
//! meta-command parsing, completion at every cursor position, highlighting), and
//! mutated machine records through the decoder the ingester feeds from the network.
//!
//! `MDESNAP_FUZZ_INPUTS` sets the number of requests (default 2,000, enough for CI on
//! a debug build; the closing figures come from release runs of 200,000 and more).
//! `MDESNAP_FUZZ_SEED` replays a run.

use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use mdesnap::decode::MachineDecoder;
use mdesnap::emulator::{Emulator, EmulatorConfig};
use mdesnap::fleet::Rng;
use mdesnap::odata::query::{looks_like_odata, parse_query};
use mdesnap::odata::{parse_filter, render_caret};
use mdesnap::repl::helper::{ReplHelper, highlight};
use mdesnap::repl::input::{is_blank, is_complete, split};
use mdesnap::repl::{Meta, Statement};
use mdesnap::{Engine, Names};
use tempfile::tempdir;

const BASES: &[&str] = &[
    "machines?$filter=riskScore eq 'High'",
    "machines?$filter=riskScore+eq+'High'&$top=10",
    "/api/machines?$filter=healthStatus ne 'Active'&$top=100",
    "machines?$filter=lastSeen gt 2018-08-01Z",
    "machines?$filter=startswith(computerDnsName,'mymachine')",
    "machines?$filter=machineTags/any(tag: tag eq 'ExampleTag')",
    "machines?$filter=computerDnsName in (\"host1\",\"host2\")",
    "machines?$filter=rbacGroupId eq 140&$select=id,computerDnsName&$orderby=lastSeen desc&$count=true",
    "machines?$filter=ipAddresses/any(ip: startswith(ip/ipAddress,'10.') and ip/operationalStatus eq 'Up')&$skip=5",
    "api/v1.0/Machines?$top=5&$orderby=lastSeen desc,computerDnsName",
    "machines_history?$filter=snapshot ge 2026-01-02T00:00:00Z&$orderby=snapshot",
    "ip_addresses?$filter=contains(ipAddress,'.') and macAddress ne null",
    "security_states?$filter=build gt 19000 and propertiesRequireAttention/all(p: p ne 'x')",
    "user_machines?$filter=userId eq 'alice.smith'",
    "domain_machines?$top=3&$count=true",
    "machines?$filter=vmMetadata/cloudProvider eq 'Azure'",
    "machines?$filter=year(lastSeen) eq 2026 and month(firstSeen) le 12 and day(lastSeen) ge 1",
    "machines?$filter=length(computerDnsName) add 1 gt indexof(computerDnsName,'.') mul 2",
    "machines?$filter=cast(osBuild, Edm.String) eq '19042' or isof(osBuild, Edm.Int64)",
    "machines?$filter=osBuild div 0 eq 1 or osBuild mod 0 eq 1",
    "machines?$filter=round(osBuild divby 7) eq 2 and floor(2.5) lt ceiling(2.5)",
    "machines?$filter=lastSeen add duration'P1D' gt now() and date(lastSeen) ge 2020-01-01",
    "machines?$filter=substring(computerDnsName, 1, 3) eq 'abc' and tolower(osPlatform) eq toupper(version)",
    "machines?$filter=matchesPattern(computerDnsName, '^desk.*') and concat(id, 'x') ne 'y'",
    "machines?$filter=aadDeviceId eq 80fe8ff8-2624-418e-9591-41f0491218f9",
    "machines?$filter=isAadJoined and not isExcluded",
    "machines?$filter=hour(lastSeen) lt 12 and fractionalseconds(lastSeen) lt 0.5 and totaloffsetminutes(lastSeen) eq 0",
    "machines?$select=*&$top=1",
    "machines",
    "SELECT 1",
];

const ATOMS: &[&str] = &[
    " ",
    "(",
    ")",
    "'",
    "\"",
    ",",
    "/",
    ":",
    "&",
    "=",
    "$",
    "%",
    "%2",
    "%ZZ",
    "%C3%A9",
    "%00",
    "%FF",
    "%C3",
    "+",
    "-",
    "é",
    "\u{feff}",
    "🦀",
    "\u{0301}",
    "\u{202e}",
    "null",
    "not ",
    " and ",
    " or ",
    " eq ",
    " add ",
    " in (",
    "any(",
    "all(",
    "t: ",
    "t/",
    "ip/",
    "$it",
    "18446744073709551615",
    "99999999999999999999999",
    "-9223372036854775808",
    "1e400",
    "-1e-400",
    "INF",
    "-INF",
    "NaN",
    "duration'P99999999999D'",
    "duration'-PT0S'",
    "2018-13-45T99:99:99Z",
    "9999-12-31T23:59:59.9999999Z",
    "0001-01-01",
    "0000-00-00",
    "24:00:00",
    "$top=",
    "$top=10001",
    "$top=-1",
    "$skip=18446744073709551615",
    "$skip=9223372036854775808",
    "$skiptoken=ffffffffffffffff",
    "&$count=true",
    "&$count=maybe",
    "&$orderby=",
    "&$orderby=lastSeen desc desc",
    "&$select=",
    "$select=*",
    "&$expand=x",
    "&&",
    "?",
    "??",
    "machines?",
    "/api/",
    "length(null)",
    "any(t: null)",
    "t eq null or null",
    "cast(null, Edm.String)",
    "substring('x', -9223372036854775808)",
    "indexof(null, null)",
    "'''",
    "\\",
    "\t",
    "\n",
    "\r\n",
];

/// Odd text that keeps a quoted string a string.
const INSIDE_QUOTES: &[&str] = &[
    "é",
    "🦀",
    "\u{feff}",
    "%C3%A9",
    "%25",
    "+",
    "''",
    "%27%27",
    "\u{0}",
    "%00",
    "x",
    "%F0%9F%A6%80",
    " ",
    "\\",
    "\"",
];

/// Numbers that keep a request well formed but are out of every range.
const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "18446744073709551615",
    "18446744073709551616",
    "9223372036854775807",
    "-9223372036854775808",
    "99999999999999999999999999",
    "1e308",
    "1e400",
    "0.0000001",
];

/// One hostile request: a base, mutated from zero to three times.
fn request(rng: &mut Rng) -> String {
    let mut s: Vec<char> = rng.pick(BASES).chars().collect();
    let mutations = *rng.weighted(&[(3, 0u64), (4, 1), (2, 2), (1, 3)]);
    for _ in 0..mutations {
        let at = rng.below(s.len() as u64 + 1) as usize;
        match rng.below(12) {
            9 | 10 => {
                // Odd characters inside a string literal: still a valid request.
                if let Some(q) = s.iter().position(|c| *c == '\'') {
                    let atom: Vec<char> = rng.pick(INSIDE_QUOTES).chars().collect();
                    s.splice(q + 1..q + 1, atom);
                }
            }
            11 => {
                // A number swapped for one out of every range.
                if let Some(start) = s.iter().position(char::is_ascii_digit) {
                    let end = s[start..]
                        .iter()
                        .position(|c| !c.is_ascii_digit())
                        .map_or(s.len(), |n| start + n);
                    let n: Vec<char> = rng.pick(NUMBERS).chars().collect();
                    s.splice(start..end, n);
                }
            }
            0..=2 => {
                let atom: Vec<char> = rng.pick(ATOMS).chars().collect();
                s.splice(at..at, atom);
            }
            3 if at < s.len() => {
                let end = (at + rng.range(1, 8) as usize).min(s.len());
                s.drain(at..end);
            }
            4 => s.truncate(at),
            5 => {
                // A random character, ASCII or not.
                let c = char::from_u32(rng.range(1, 0x2_FFFF) as u32).unwrap_or('?');
                s.insert(at, c);
            }
            6 => {
                let n = rng.range(1, 300) as usize;
                let mut nested: Vec<char> = "(".repeat(n).chars().collect();
                nested.extend(s.drain(at..));
                nested.extend(")".repeat(rng.range(0, n as u64) as usize).chars());
                s.extend(nested);
            }
            7 => {
                let piece = *rng.pick(&[" eq 1", " or true", " and not false", " add 1", "/a"]);
                let n = rng.range(1, 6_000) as usize;
                s.splice(at..at, piece.repeat(n).chars());
            }
            _ => {
                let n = rng.range(1, 400) as usize;
                s.splice(at..at, "not ".repeat(n).chars());
            }
        }
    }
    s.into_iter().collect()
}

fn inputs() -> u64 {
    crate::env_number("MDESNAP_FUZZ_INPUTS", 2_000)
}

fn seed() -> u64 {
    crate::seed_from_env("MDESNAP_FUZZ_SEED")
}

/// What `mdesnap query` does with a request, through to the last row; true when the
/// request ran to its rows.
async fn through_the_lake(engine: &Engine, text: &str) -> bool {
    if let Ok(e) = parse_filter(text) {
        let _ = e.to_string();
    } else if let Err(e) = parse_filter(text) {
        let _ = render_caret(&e.to_string(), text, e.offset);
    }
    if !looks_like_odata(text) {
        if let Ok(df) = engine.sql(text).await
            && let Ok(df) = df.limit(0, Some(5))
        {
            return df.collect().await.is_ok();
        }
        return false;
    }
    let _ = parse_query(text);
    match engine.odata_request(text, Names::Api).await {
        Ok(response) => response.df.collect().await.is_ok(),
        Err(mdesnap::Error::OData { text, source }) => {
            let _ = render_caret(&source.to_string(), &text, source.offset());
            false
        }
        Err(_) => false,
    }
}

/// What the console does with the text as typed: split it, parse its meta-commands,
/// complete at every position, colour it.
fn through_the_console(helper: &ReplHelper, text: &str) {
    let (statements, rest) = split(text);
    for statement in &statements {
        if let Statement::Meta(line) = statement {
            let _ = line.parse::<Meta>();
        }
    }
    let _ = is_blank(rest);
    let _ = is_complete(text);
    let _ = format!("\\{text}").parse::<Meta>();
    for pos in 0..=text.len().min(64) {
        let _ = helper.candidates(text, pos);
    }
    let _ = highlight(text);
}

/// The request, and the surroundings, through the emulator's HTTP handler.
async fn through_the_emulator(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    rng: &mut Rng,
    text: &str,
) -> Result<bool, String> {
    let query = text.split_once('?').map_or(text, |(_, q)| q);
    let segment: String = text.chars().take(40).collect();
    let encoded: String = segment
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let (method, path, body) = match rng.below(10) {
        0 => ("GET", format!("/api/machines/{encoded}"), String::new()),
        1 => (
            "GET",
            format!("/api/users/{encoded}/machines"),
            String::new(),
        ),
        2 => (
            "GET",
            format!("/api/domains/{encoded}/machines"),
            String::new(),
        ),
        3 => (
            "GET",
            format!("/testwdatppreview/machinesecuritystates?{query}"),
            String::new(),
        ),
        4 => (
            "POST",
            "/emulator-tenant/oauth2/v2.0/token".into(),
            query.to_string(),
        ),
        5 => (
            "POST",
            format!("/{encoded}/oauth2/v2.0/devicecode"),
            query.to_string(),
        ),
        6 => ("POST", "/_emulator/faults".into(), segment),
        _ => ("GET", format!("/api/machines?{query}"), String::new()),
    };
    let target = format!("{url}{path}");
    let request = match method {
        "POST" => client.post(&target).body(body),
        _ => client.get(&target),
    };
    match request.bearer_auth(token).send().await {
        Ok(r) => {
            let status = r.status();
            let text = r
                .text()
                .await
                .map_err(|e| format!("body of {target}: {e}"))?;
            if status.is_server_error() {
                return Err(format!("{status} for {target}: {text}"));
            }
            Ok(status.is_success())
        }
        // Not a URL reqwest will send: the handler never saw it.
        Err(e) if e.is_builder() => Ok(false),
        Err(e) => Err(format!("{target}: {e}")),
    }
}

/// On the runtime `mdesnap` itself runs on (deep stacks for DataFusion's recursion).
#[test]
fn no_request_panics_on_the_way_through() {
    let runtime = mdesnap::runtime().expect("a runtime");
    let run = runtime.spawn(fuzz());
    runtime.block_on(run).expect("the fuzz task ends");
}

async fn fuzz() {
    let dir = tempdir().expect("tempdir");
    crate::small_lake(dir.path(), 30, 2);
    let engine = Engine::open(dir.path(), None).expect("opens");
    let emulator = Emulator::start(EmulatorConfig {
        machines: 60,
        calls_per_minute: u32::MAX,
        calls_per_hour: u32::MAX,
        ..EmulatorConfig::default()
    })
    .await
    .expect("starts");
    let url = emulator.url();
    let token = crate::emulator::token(&url).await;
    let client = crate::http();
    let seed = seed();
    let total = inputs();
    eprintln!("fuzz: {total} requests, MDESNAP_FUZZ_SEED={seed}");
    let mut rng = Rng::derive(seed, &[]);
    let mut failures = Vec::new();
    let helper = ReplHelper::new(
        engine.tables(),
        vec!["computer_dns_name".into(), "risk_score".into()],
        true,
    );
    let (mut served, mut answered, mut ran) = (0u64, 0u64, 0u64);
    for i in 0..total {
        let text = request(&mut rng);
        if std::env::var_os("MDESNAP_FUZZ_TRACE").is_some() {
            eprintln!("fuzz input {i}: {text:?}");
        }
        if std::panic::catch_unwind(|| through_the_console(&helper, &text)).is_err() {
            failures.push(format!("console panicked on {text:?}"));
        }
        match AssertUnwindSafe(through_the_lake(&engine, &text))
            .catch_unwind()
            .await
        {
            Ok(true) => ran += 1,
            Ok(false) => {}
            Err(_) => failures.push(format!("lake panicked on {text:?}")),
        }
        if i % 4 == 0 {
            served += 1;
            match through_the_emulator(&client, &url, &token, &mut rng, &text).await {
                Ok(true) => answered += 1,
                Ok(false) => {}
                Err(e) => failures.push(format!("emulator failed on {text:?}: {e}")),
            }
        }
        if failures.len() >= 5 {
            break;
        }
    }
    assert!(
        failures.is_empty(),
        "seed {seed}: {} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!(
        "fuzz: {total} requests through the lake ({ran} ran to their rows), \
         {served} through the emulator ({answered} answered 2xx), no panic"
    );
    // Mutations must leave enough requests valid to reach planning and execution,
    // or the deeper stages went untested.
    assert!(ran * 10 >= total, "only {ran} of {total} requests ran");
    assert!(
        answered * 10 >= served,
        "only {answered} of {served} were answered"
    );
}

/// Machine records as the network could cut or garble them: the decoder refuses or
/// reads each, and never panics; a record it reads leaves its batch well formed.
#[test]
fn mutated_records_never_panic_the_decoder() {
    let fleet = mdesnap::fleet::Fleet::new(mdesnap::fleet::FleetConfig {
        seed: 5,
        machines: 40,
        churn: mdesnap::fleet::FleetConfig::DEFAULT_CHURN,
        start: mdesnap::fleet::FleetConfig::default_start(),
    });
    let records: Vec<String> = fleet
        .machines()
        .iter()
        .map(|m| fleet.machine_record(m).to_string())
        .collect();
    let seed = seed();
    let mut rng = Rng::derive(seed, &[0xDE]);
    let odd = [
        "\"",
        "\\",
        "\\u0000",
        "\\ud800",
        "null",
        "[",
        "]",
        "{",
        "}",
        ",",
        ":",
        "1e999",
        "-0",
        "\u{feff}",
        "é",
        "😀",
        "\"id\":7",
        "[{}]",
        "{\"ipAddress\":1}",
    ];
    let mut decoder = MachineDecoder::default();
    let mut read = 0u64;
    for i in 0..inputs() * 5 {
        let mut text = rng.pick(&records).clone();
        for _ in 0..rng.range(1, 4) {
            let at = rng.range(0, text.len() as u64) as usize;
            let at = (0..=at)
                .rev()
                .find(|a| text.is_char_boundary(*a))
                .unwrap_or(0);
            match rng.range(0, 3) {
                0 => {
                    let piece: &&str = rng.pick(&odd);
                    text.insert_str(at, piece);
                }
                1 => text.truncate(at),
                _ => {
                    let end = (at + rng.range(1, 20) as usize).min(text.len());
                    let end = (end..=text.len())
                        .find(|e| text.is_char_boundary(*e))
                        .unwrap_or(text.len());
                    text.replace_range(at..end, "");
                }
            }
        }
        let pushed =
            std::panic::catch_unwind(AssertUnwindSafe(|| decoder.push_json(i as usize, &text)));
        match pushed {
            Ok(Ok(())) => read += 1,
            Ok(Err(_)) => {}
            Err(_) => panic!("seed {seed}: the decoder panicked on {text:?}"),
        }
        if decoder.len() >= 500 {
            decoder.finish().expect("well-formed batches");
        }
    }
    decoder.finish().expect("well-formed batches");
    assert!(read > 0, "some mutated records are still records");
}
