//! The OData TC's own ABNF test cases (`../shared/conformance/`): every in-scope valid
//! case parses, every invalid one fails at the offset the case gives. Cases out of
//! scope sit in `conformance_out_of_scope.tsv` with the reason, so a change in coverage
//! shows up in review. With `CI` set, a missing folder fails the test.

use std::collections::BTreeMap;
use std::path::Path;

use mdesnap::odata::ast::{ExprKind, Literal};
use mdesnap::odata::parse_filter;
use mdesnap::odata::query::{decode_with, parse_query};

#[derive(serde::Deserialize)]
struct Case {
    index: u32,
    category: String,
    rule: String,
    name: String,
    input: String,
    valid: bool,
    fail_at: Option<usize>,
    percent_encoded: bool,
}

/// The checked-in list: index -> (kind, reason). Kind `skip`: out of scope, not run.
/// Kind `offset`: run and must fail, but at another offset than the case gives.
fn listed() -> BTreeMap<u32, (String, String)> {
    let text = include_str!("conformance_out_of_scope.tsv");
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut fields = l.splitn(3, '\t');
            let i = fields.next().unwrap_or_default();
            let kind = fields.next().unwrap_or_default().to_string();
            let reason = fields.next().unwrap_or_default().to_string();
            let i: u32 = i
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("bad index in list: {l}"));
            assert!(
                kind == "skip" || kind == "offset",
                "case {i}: kind must be skip or offset"
            );
            assert!(!reason.trim().is_empty(), "case {i} has no reason");
            (i, (kind, reason))
        })
        .collect()
}

/// The "offset" of a literal of the wrong type for its rule.
const KIND_MISMATCH: usize = usize::MAX;

/// Whether a literal is of the type its ABNF rule names.
fn literal_fits_rule(rule: &str, l: &Literal) -> bool {
    let r = rule.to_ascii_lowercase();
    let fits = match l {
        Literal::Bool(_) => r.starts_with("boolean"),
        Literal::Null => r == "null",
        Literal::Int(_) | Literal::Number(_) => {
            ["decimal", "double", "single", "byte", "sbyte", "int"]
                .iter()
                .any(|p| r.starts_with(p))
        }
        Literal::Date(_) => r == "date" || r == "datevalue",
        Literal::DateTime(_) => r.starts_with("datetimeoffset"),
        Literal::TimeOfDay(_) => r.starts_with("timeofday"),
        Literal::Guid(_) => r == "guid",
        Literal::Duration(_) => r.starts_with("duration"),
        Literal::Binary(_) => r.starts_with("binary"),
        Literal::Str(_) => r.starts_with("string") || r == "durationliteral" || r == "enumliteral",
        Literal::Enum { .. } => r == "enumliteral",
        Literal::Geo { .. } => r.starts_with("geo"),
    };
    fits || r.starts_with("primitive")
}

/// What parsing the case gives: Ok, or the error offset in the raw input.
fn run(case: &Case) -> Result<(), usize> {
    let prefix = "machines?";
    match case.rule.as_str() {
        "filter" | "queryOptions" => {
            let url = format!("{prefix}{}", case.input);
            parse_query(&url)
                .map(|_| ())
                .map_err(|e| e.offset.saturating_sub(prefix.len()))
        }
        "odataRelativeUri" => parse_query(&case.input).map(|_| ()).map_err(|e| e.offset),
        _ => {
            let (text, map) = if case.percent_encoded {
                decode_with(&case.input, 0, false).map_err(|e| e.offset)?
            } else {
                let n = case.input.len();
                (case.input.clone(), (0..=n).collect())
            };
            let parsed =
                parse_filter(&text).map_err(|e| map.get(e.offset).copied().unwrap_or(e.offset))?;
            if case.category == "literal" {
                // A literal rule must read as one literal of the rule's type: `INF` is
                // a number, not a date. Such a failure has no position of its own.
                let ExprKind::Literal(l) = &parsed.kind else {
                    return Err(KIND_MISMATCH);
                };
                if !literal_fits_rule(&case.rule, l) {
                    return Err(KIND_MISMATCH);
                }
            }
            Ok(())
        }
    }
}

#[test]
fn abnf_conformance_cases() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/conformance/filter_and_literal_cases.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but {} is missing",
            path.display()
        );
        eprintln!("skipping: {} not found", path.display());
        return;
    };
    let cases: Vec<Case> = serde_json::from_str(&text).expect("cases parse");
    let list = listed();
    let indexes: Vec<u32> = cases.iter().map(|c| c.index).collect();
    for i in list.keys() {
        assert!(
            indexes.contains(i),
            "the list names case {i}, which does not exist"
        );
    }
    let skip: Vec<u32> = list
        .iter()
        .filter(|(_, (k, _))| k == "skip")
        .map(|(i, _)| *i)
        .collect();
    let offset_differs: Vec<u32> = list
        .iter()
        .filter(|(_, (k, _))| k == "offset")
        .map(|(i, _)| *i)
        .collect();
    let mut failures = Vec::new();
    let mut ran = 0;
    for case in &cases {
        if skip.contains(&case.index) {
            continue;
        }
        ran += 1;
        let got = run(case);
        let ok = match (case.valid, got) {
            (true, Ok(())) => true,
            (false, Err(at)) => {
                at == KIND_MISMATCH
                    || offset_differs.contains(&case.index)
                    || case.fail_at.is_none_or(|f| f == 0 || f == at)
            }
            _ => false,
        };
        if !ok {
            failures.push(format!(
                "{}\t{} {} {:?} valid={} fail_at={:?} got={:?}",
                case.index, case.rule, case.name, case.input, case.valid, case.fail_at, got
            ));
        }
    }
    eprintln!("conformance: {ran} cases run, {} out of scope", skip.len());
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(ran > 150, "too few cases ran: {ran}");
}
