//! The REPL's meta-commands, as data: one table of names, arguments and descriptions
//! drives both parsing (`FromStr`) and the help of `\?`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::str::FromStr;

use crate::output::Format;

/// A meta-command, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Meta {
    Quit,
    Help,
    Tables,
    Describe(String),
    Snapshots,
    /// `\diff [FROM [TO]]`: the changes between two snapshots.
    Diff(Option<String>, Option<String>),
    /// `None`: back to the latest snapshot.
    AsOf(Option<String>),
    /// `None`: show the scope in force and the lake's scopes.
    Scope(Option<String>),
    Format(Format),
    Timing(bool),
    /// `None`: results back to the terminal.
    Output(Option<PathBuf>),
    /// `None`: every row.
    MaxRows(Option<usize>),
    Include(PathBuf),
    Refresh,
    Pager(bool),
}

/// One row of the table: how the command is written and what it does.
#[derive(Debug)]
pub struct Spec {
    pub name: &'static str,
    pub args: &'static str,
    pub about: &'static str,
    parse: fn(&str) -> Option<Meta>,
}

/// Every meta-command, in the order `\?` lists them.
pub const COMMANDS: &[Spec] = &[
    Spec {
        name: "\\q",
        args: "",
        about: "quit (also Ctrl-D)",
        parse: |a| a.is_empty().then_some(Meta::Quit),
    },
    Spec {
        name: "\\?",
        args: "",
        about: "this help",
        parse: |a| a.is_empty().then_some(Meta::Help),
    },
    Spec {
        name: "\\dt",
        args: "",
        about: "tables, their rows and snapshots",
        parse: |a| a.is_empty().then_some(Meta::Tables),
    },
    Spec {
        name: "\\d",
        args: "TABLE",
        about: "a table's columns: name, type, API name",
        parse: |a| {
            (!a.is_empty() && !a.contains(char::is_whitespace))
                .then(|| Meta::Describe(a.to_string()))
        },
    },
    Spec {
        name: "\\snapshots",
        args: "",
        about: "the lake's snapshots, with their row counts",
        parse: |a| a.is_empty().then_some(Meta::Snapshots),
    },
    Spec {
        name: "\\diff",
        args: "[FROM [TO]]",
        about: "what changed between two snapshots (ids, latest or times; default the last two)",
        parse: |a| {
            let mut words = a.split_whitespace().map(str::to_string);
            let (from, to) = (words.next(), words.next());
            words.next().is_none().then_some(Meta::Diff(from, to))
        },
    },
    Spec {
        name: "\\asof",
        args: "TIME|latest",
        about: "point the latest tables at the last snapshot at or before TIME (RFC 3339, a date, a snapshot id)",
        parse: |a| match a {
            "" => None,
            "latest" => Some(Meta::AsOf(None)),
            t => Some(Meta::AsOf(Some(t.to_string()))),
        },
    },
    Spec {
        name: "\\scope",
        args: "[SCOPE|all|default]",
        about: "the snapshots the latest, _history and change tables read (api, generate, api:FILTER); alone: the scopes",
        parse: |a| Some(Meta::Scope((!a.is_empty()).then(|| a.to_string()))),
    },
    Spec {
        name: "\\format",
        args: "table|csv|json|ndjson|odata-json",
        about: "how results are printed",
        parse: |a| Format::from_str(a).ok().map(Meta::Format),
    },
    Spec {
        name: "\\timing",
        args: "on|off",
        about: "print how long each statement took",
        parse: |a| on_off(a).map(Meta::Timing),
    },
    Spec {
        name: "\\o",
        args: "[FILE]",
        about: "write each result to FILE (.parquet, .csv, .json, .ndjson), replacing it; \\o alone: back to the terminal",
        parse: |a| Some(Meta::Output((!a.is_empty()).then(|| PathBuf::from(a)))),
    },
    Spec {
        name: "\\maxrows",
        args: "N|all",
        about: "rows a table shows at most (default 40); the rest are counted",
        parse: |a| match a {
            "all" => Some(Meta::MaxRows(None)),
            n => n
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .map(|n| Meta::MaxRows(Some(n))),
        },
    },
    Spec {
        name: "\\i",
        args: "FILE",
        about: "run the statements of FILE; the first failing one stops it",
        parse: |a| (!a.is_empty()).then(|| Meta::Include(PathBuf::from(a))),
    },
    Spec {
        name: "\\refresh",
        args: "",
        about: "read the lake again: snapshots committed since are seen",
        parse: |a| a.is_empty().then_some(Meta::Refresh),
    },
    Spec {
        name: "\\pager",
        args: "on|off",
        about: "page results longer than the terminal through $PAGER (default off)",
        parse: |a| on_off(a).map(Meta::Pager),
    },
];

fn on_off(a: &str) -> Option<bool> {
    match a {
        "on" => Some(true),
        "off" => Some(false),
        _ => None,
    }
}

/// A meta-command line that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    #[error("unknown command {name}{}; \\? lists them", suggestion.map(|s| format!(" (did you mean {s}?)")).unwrap_or_default())]
    Unknown {
        name: String,
        suggestion: Option<&'static str>,
    },
    #[error("{name} takes {}, not '{found}'", if args.is_empty() { "no argument" } else { args })]
    Argument {
        name: &'static str,
        args: &'static str,
        found: String,
    },
}

impl FromStr for Meta {
    type Err = MetaError;

    fn from_str(line: &str) -> Result<Self, Self::Err> {
        let line = line.trim();
        let (name, arg) = line
            .split_once(char::is_whitespace)
            .map_or((line, ""), |(n, a)| (n, a.trim()));
        let spec = COMMANDS
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| MetaError::Unknown {
                name: name.to_string(),
                suggestion: COMMANDS
                    .iter()
                    .map(|s| (strsim::levenshtein(s.name, name), s.name))
                    .filter(|(d, _)| *d <= 2)
                    .min()
                    .map(|(_, n)| n),
            })?;
        (spec.parse)(arg).ok_or_else(|| MetaError::Argument {
            name: spec.name,
            args: spec.args,
            found: arg.to_string(),
        })
    }
}

/// The text of `\?`.
pub fn help() -> String {
    let mut out = String::from(
        "SQL runs when it ends with ';' (it may span lines). A line starting with an entity\n\
         set and '?' is an OData request and runs on Enter:\n  \
         machines?$filter=riskScore eq 'High'&$select=computerDnsName&$top=5\n\
         Tab completes names, Ctrl-R searches the history, Ctrl-C cancels a query, Ctrl-D quits.\n\n",
    );
    let width = COMMANDS
        .iter()
        .map(|s| s.name.len() + 1 + s.args.len())
        .max()
        .unwrap_or(0);
    for s in COMMANDS {
        let usage = if s.args.is_empty() {
            s.name.to_string()
        } else {
            format!("{} {}", s.name, s.args)
        };
        let _ = writeln!(out, "  {usage:width$}  {}", s.about);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_parses_with_its_arguments() {
        let cases = [
            ("\\q", Meta::Quit),
            ("\\?", Meta::Help),
            ("\\dt", Meta::Tables),
            ("\\d machines", Meta::Describe("machines".into())),
            ("\\snapshots", Meta::Snapshots),
            ("\\diff", Meta::Diff(None, None)),
            (
                "\\diff 2026-01-01 latest",
                Meta::Diff(Some("2026-01-01".into()), Some("latest".into())),
            ),
            ("\\asof 2026-01-02", Meta::AsOf(Some("2026-01-02".into()))),
            ("\\asof latest", Meta::AsOf(None)),
            ("\\scope", Meta::Scope(None)),
            (
                "\\scope api:riskScore eq 'High'",
                Meta::Scope(Some("api:riskScore eq 'High'".into())),
            ),
            ("\\format csv", Meta::Format(Format::Csv)),
            ("\\timing on", Meta::Timing(true)),
            ("\\o out.parquet", Meta::Output(Some("out.parquet".into()))),
            ("\\o", Meta::Output(None)),
            ("\\maxrows 5", Meta::MaxRows(Some(5))),
            ("\\maxrows all", Meta::MaxRows(None)),
            ("\\i x.sql", Meta::Include("x.sql".into())),
            ("\\refresh", Meta::Refresh),
            ("\\pager off", Meta::Pager(false)),
        ];
        for spec in COMMANDS {
            assert!(
                cases
                    .iter()
                    .any(|(l, _)| l.split(' ').next() == Some(spec.name)),
                "{} has a case",
                spec.name
            );
        }
        for (line, want) in cases {
            assert_eq!(line.parse::<Meta>(), Ok(want), "{line}");
        }
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        let e = "\\tables".parse::<Meta>().expect_err("refused");
        assert_eq!(e.to_string(), "unknown command \\tables; \\? lists them");
        let e = "\\dtt".parse::<Meta>().expect_err("refused");
        assert_eq!(
            e.to_string(),
            "unknown command \\dtt (did you mean \\dt?); \\? lists them"
        );
        let e = "\\maxrows 0".parse::<Meta>().expect_err("refused");
        assert_eq!(e.to_string(), "\\maxrows takes N|all, not '0'");
        let e = "\\q now".parse::<Meta>().expect_err("refused");
        assert_eq!(e.to_string(), "\\q takes no argument, not 'now'");
        assert!(help().contains("\\maxrows N|all"));
    }
}
