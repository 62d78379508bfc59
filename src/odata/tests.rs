//! Parser tests: canonical round trips, precedence as S-expressions, one test per error
//! kind with its exact offset, and random inputs that must never panic.

use super::ast::Expr;
use super::{ParseErrorKind, parse_filter};
use crate::rng::Rng;

fn sexp(s: &str) -> String {
    parse_filter(s)
        .map(|e| e.sexp())
        .unwrap_or_else(|e| format!("error: {e}"))
}

fn canonical(s: &str) -> String {
    parse_filter(s)
        .map(|e| e.to_string())
        .unwrap_or_else(|e| format!("error: {e}"))
}

/// `parse(x).to_string()` parses back to the same tree (spans aside).
fn assert_round_trip(s: &str) {
    let first = parse_filter(s).unwrap_or_else(|e| panic!("{s}: {e}"));
    let printed = first.to_string();
    let second = parse_filter(&printed).unwrap_or_else(|e| panic!("{printed}: {e}"));
    assert_eq!(first.sexp(), second.sexp(), "{s} -> {printed}");
    assert_eq!(
        printed,
        second.to_string(),
        "canonical form is a fixed point"
    );
}

#[test]
fn design_example() {
    assert_eq!(
        canonical("riskScore eq 'High' and not (osBuild add 1 gt 100)"),
        "((riskScore eq 'High') and (not ((osBuild add 1) gt 100)))"
    );
}

#[test]
fn canonical_literals() {
    assert_eq!(
        canonical("lastSeen gt 2018-08-01Z"),
        "(lastSeen gt 2018-08-01T00:00:00Z)"
    );
    assert_eq!(
        canonical(r#"computerDnsName in ("a","b")"#),
        "(computerDnsName in ('a','b'))"
    );
    assert_eq!(canonical("name eq 'O''Neil'"), "(name eq 'O''Neil')");
    assert_eq!(canonical("a EQ TRUE"), "(a eq true)");
    assert_eq!(canonical("x eq +42"), "(x eq 42)");
    assert_eq!(
        canonical("aadDeviceId eq FD2E4D29-7072-4195-AAA5-1AF139B78028"),
        "(aadDeviceId eq fd2e4d29-7072-4195-aaa5-1af139b78028)"
    );
    assert_eq!(
        canonical("d eq duration'P1DT2H'"),
        "(d eq duration'P1DT2H')"
    );
    assert_eq!(canonical("-(5)"), "(- 5)");
}

#[test]
fn round_trips() {
    for s in [
        "riskScore eq 'High'",
        "healthStatus ne 'Active' and (a or b)",
        "machineTags/any(tag: tag eq 'ExampleTag')",
        "machineTags/any()",
        "machineTags/all(t: startswith(t, 'x') or t eq null)",
        "ipAddresses/any(ip: startswith(ip/ipAddress, '10.') and ip/operationalStatus eq 'Up')",
        "lastSeen ge 2024-01-01T00:00:00.1234567+02:00",
        "t eq 13:20:00.5 or d eq 2012-09-03",
        "x in (1, 2.5, -3, 'a', null, true)",
        "x in ()",
        "- - 5 eq -(-5)",
        "-a mod 2 eq 0",
        "not not true",
        "substring(name, 1, 2) eq concat('a', tolower(b))",
        "round(x divby 2) eq 1e10 or y eq INF or z eq -INF or w eq NaN",
        "cast(osBuild, Edm.String) eq '1' and isof(x, Edm.Int64)",
        "style has Sales.Pattern'Yellow'",
        "a/b/c eq $it/d",
        "now() sub duration'P7D' lt lastSeen",
    ] {
        assert_round_trip(s);
    }
}

#[test]
fn precedence() {
    let cases = [
        ("a add b mul c", "(add a (mul b c))"),
        ("a mul b add c", "(add (mul a b) c)"),
        ("a sub b sub c", "(sub (sub a b) c)"),
        ("a or b and c", "(or a (and b c))"),
        ("a and b or c", "(or (and a b) c)"),
        ("a eq b and c ne d", "(and (eq a b) (ne c d))"),
        ("a gt b eq c", "(eq (gt a b) c)"),
        ("a add 1 gt b", "(gt (add a 1) b)"),
        ("not a eq b", "(eq (not a) b)"),
        ("not (a eq b)", "(not (eq a b))"),
        ("-a add b", "(add (- a) b)"),
        ("not a in ('x')", "(not (in a ['x']))"),
        ("a has b eq c", "(eq (has a b) c)"),
        ("a divby b mod c", "(mod (divby a b) c)"),
        ("A EQ 1 OR B Lt 2", "(or (eq A 1) (lt B 2))"),
    ];
    for (input, expected) in cases {
        assert_eq!(sexp(input), expected, "{input}");
    }
}

#[test]
fn keywords_only_at_word_boundaries() {
    assert_eq!(sexp("name eq 'freeland'"), "(eq name 'freeland')");
    assert_eq!(
        sexp("order eq 1 and notes eq 2"),
        "(and (eq order 1) (eq notes 2))"
    );
    assert_eq!(sexp("android eq true"), "(eq android true)");
    assert_eq!(sexp("inside in (1)"), "(in inside [1])");
}

fn error(s: &str) -> (usize, ParseErrorKind) {
    let e = parse_filter(s).expect_err(s);
    (e.offset, e.kind)
}

#[test]
fn expected_found_errors_carry_the_offset() {
    let (at, kind) = error("riskScore eq");
    assert_eq!(at, 12);
    assert_eq!(
        kind,
        ParseErrorKind::Expected {
            expected: "an expression".into(),
            found: "end of input".into()
        }
    );
    let e = parse_filter("a eq 1 b").expect_err("junk");
    assert_eq!(
        e.to_string(),
        "expected an operator or the end of the filter, found 'b' at byte 7"
    );
    assert_eq!(error("(a eq 1").0, 7);
    assert_eq!(error("x in (a, b)").0, 7);
    assert_eq!(error("42.").0, 3);
    assert_eq!(error("'O'Neil'").0, 3);
    assert_eq!(error("2011-12-31T24:00Z").0, 12);
    assert_eq!(error("01234567-89ab-cdef-456789abcdef").0, 23);
    assert_eq!(error("Products/all()").0, 13);
    assert_eq!(error("").0, 0);
}

#[test]
fn unterminated_string() {
    let e = parse_filter("riskScore eq 'High").expect_err("open quote");
    assert_eq!(e.offset, 13);
    assert_eq!(e.to_string(), "unterminated string literal at byte 13");
}

#[test]
fn too_deep_is_an_error_not_a_stack_overflow() {
    let deep = format!("{}x{}", "(".repeat(100_000), ")".repeat(100_000));
    let (_, kind) = error(&deep);
    assert_eq!(
        kind,
        ParseErrorKind::TooDeep {
            limit: super::parser::MAX_DEPTH
        }
    );
    let nots = format!("{}true", "not ".repeat(100_000));
    assert!(matches!(error(&nots).1, ParseErrorKind::TooDeep { .. }));
    // Long `or` chains are fine up to the limit, and print without recursing once per
    // operator (this test thread has the default 2 MiB stack).
    let chain = vec!["a eq 1"; 5_000].join(" or ");
    let e = parse_filter(&chain).expect("4,999 ors parse");
    assert_eq!(e.to_string().matches(" or ").count(), 4_999);
    let (at, kind) = error(&format!("{chain} or b or c"));
    assert_eq!(
        kind,
        ParseErrorKind::TooManyTerms {
            limit: super::parser::MAX_LOGICAL
        }
    );
    assert_eq!(at, chain.len() + " or b ".len(), "at the 5,001st 'or'");
    // Other operators chain as deep as they are long, and are bounded like nesting.
    let eqs = format!("1{}", " eq 1".repeat(13_000));
    let (at, kind) = error(&eqs);
    assert!(matches!(kind, ParseErrorKind::TooDeep { .. }), "{kind:?}");
    assert!(at < 1_200, "refused early, at byte {at}");
    let adds = format!("x{} gt 0", " add 1".repeat(150));
    assert!(
        parse_filter(&adds).is_ok(),
        "a chain within the limit parses"
    );
}

#[test]
fn unknown_function_suggests() {
    let (at, kind) = error("x eq 1 and startwith(name, 'a')");
    assert_eq!(at, 11);
    assert_eq!(
        kind,
        ParseErrorKind::UnknownFunction {
            name: "startwith".into(),
            suggestion: Some("startswith".into())
        }
    );
}

#[test]
fn wrong_argument_count() {
    let (at, kind) = error("a and contains(name)");
    assert_eq!(at, 6);
    assert_eq!(
        kind,
        ParseErrorKind::Arity {
            function: "contains".into(),
            min: 2,
            max: 2,
            found: 1
        }
    );
}

/// Random inputs: token soup, mutated valid filters, raw bytes. None may panic; any
/// that parses must round-trip.
#[test]
fn random_inputs_never_panic() {
    const PIECES: &[&str] = &[
        " ",
        "(",
        ")",
        ",",
        "/",
        ":",
        "'",
        "\"",
        "-",
        "+",
        "a",
        "eq",
        "and",
        "or",
        "not",
        "in",
        "has",
        "any",
        "all",
        "1",
        "2.5",
        "1e3",
        "INF",
        "'x'",
        "2018-08-01",
        "2018-08-01Z",
        "T",
        "10:00",
        "null",
        "true",
        "contains",
        "startswith(",
        "machineTags/any(t:",
        "t eq 'v'",
        "duration'P1D'",
        "[",
        "]",
        "$it",
        "@a",
        "x.y",
        "é",
        "\t",
        "add",
        "mul",
        "divby",
        "01234567-89ab-cdef-0123-456789abcdef",
    ];
    const SEEDS: &[&str] = &[
        "riskScore eq 'High' and not (osBuild add 1 gt 100)",
        "machineTags/any(tag: tag eq 'ExampleTag')",
        "lastSeen gt 2018-08-01Z and computerDnsName in ('a','b')",
        "ipAddresses/any(ip: startswith(ip/ipAddress, '10.') and ip/operationalStatus eq 'Up')",
    ];
    let mut rng = Rng::derive(2026, &[]);
    let mut parsed = 0;
    let total = 30_000;
    for i in 0..total {
        let input = match i % 3 {
            0 => (0..rng.range(1, 20))
                .map(|_| *rng.pick(PIECES))
                .collect::<String>(),
            1 => {
                let mut s: Vec<char> = rng.pick(SEEDS).chars().collect();
                for _ in 0..rng.range(1, 4) {
                    let at = rng.below(s.len() as u64 + 1) as usize;
                    match rng.below(3) {
                        0 if at < s.len() => {
                            s.remove(at);
                        }
                        1 => s.insert(at, *rng.pick(&['(', ')', '\'', ' ', '/', 'x', '9', ','])),
                        _ => s.truncate(at),
                    }
                }
                s.into_iter().collect()
            }
            _ => {
                let bytes: Vec<u8> = (0..rng.range(0, 30))
                    .map(|_| rng.below(128) as u8)
                    .collect();
                String::from_utf8_lossy(&bytes).into_owned()
            }
        };
        if let Ok(e) = parse_filter(&input) {
            parsed += 1;
            let printed = e.to_string();
            let again: Expr = parse_filter(&printed)
                .unwrap_or_else(|err| panic!("{input:?} -> {printed:?}: {err}"));
            assert_eq!(e.sexp(), again.sexp(), "{input:?}");
        }
    }
    // Some of them must have been valid, or the round-trip half tested nothing.
    assert!(
        parsed > 500,
        "only {parsed} of {total} random inputs parsed"
    );
}
