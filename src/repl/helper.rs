//! The line editor's helper: when Enter runs the buffer ([`super::input`]), what Tab
//! offers, and the colours of a line.
//!
//! Completion looks at the word under the cursor: a meta-command at the start of a
//! line; in an OData line, the API's property names, functions, operators and `$`
//! options; anywhere else SQL keywords and the lake's table and column names. Colours
//! are ANSI, used only on a colour terminal and never when `NO_COLOR` is set.

use std::borrow::Cow;

use rustyline::completion::{Completer, Pair};
use rustyline::highlight::{CmdKind, Highlighter};
use rustyline::hint::Hinter;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Context, Helper};

use super::command::COMMANDS;
use super::input;
use crate::odata::query::looks_like_odata;
use crate::schema::Table;

/// SQL keywords offered by Tab and coloured.
const SQL_KEYWORDS: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "GROUP",
    "BY",
    "ORDER",
    "HAVING",
    "LIMIT",
    "OFFSET",
    "JOIN",
    "LEFT",
    "RIGHT",
    "FULL",
    "INNER",
    "OUTER",
    "CROSS",
    "ON",
    "USING",
    "AS",
    "AND",
    "OR",
    "NOT",
    "IN",
    "IS",
    "NULL",
    "LIKE",
    "ILIKE",
    "BETWEEN",
    "CASE",
    "WHEN",
    "THEN",
    "ELSE",
    "END",
    "DISTINCT",
    "COUNT",
    "SUM",
    "AVG",
    "MIN",
    "MAX",
    "WITH",
    "UNION",
    "ALL",
    "EXCEPT",
    "INTERSECT",
    "ASC",
    "DESC",
    "NULLS",
    "FIRST",
    "LAST",
    "OVER",
    "PARTITION",
    "CAST",
    "TRUE",
    "FALSE",
    "DESCRIBE",
    "EXPLAIN",
    "ANALYZE",
    "COPY",
    "TO",
    "CREATE",
    "VIEW",
    "TABLE",
    "DROP",
    "SHOW",
    "TABLES",
    "COLUMNS",
    "VALUES",
    "EXISTS",
    "INTERVAL",
    "ARRAY_HAS",
    "UNNEST",
    "LAG",
    "LEAD",
    "ROW_NUMBER",
    "RANK",
    "COALESCE",
    "DATE_TRUNC",
];

/// OData functions, operators and query options offered by Tab.
const ODATA_WORDS: &[&str] = &[
    "eq",
    "ne",
    "gt",
    "ge",
    "lt",
    "le",
    "and",
    "or",
    "not",
    "in",
    "has",
    "contains",
    "startswith",
    "endswith",
    "tolower",
    "toupper",
    "length",
    "indexof",
    "substring",
    "trim",
    "concat",
    "year",
    "month",
    "day",
    "hour",
    "minute",
    "second",
    "date",
    "now",
    "any",
    "all",
    "null",
    "true",
    "false",
    "asc",
    "desc",
    "$filter=",
    "$select=",
    "$orderby=",
    "$top=",
    "$skip=",
    "$count=true",
];

/// Completion, validation and highlighting for the prompt.
#[derive(Debug, Default)]
pub struct ReplHelper {
    /// Table names of the lake.
    pub tables: Vec<String>,
    /// Column names of every table, sorted, without repeats.
    pub columns: Vec<String>,
    /// API property names, nested ones included.
    pub api_names: Vec<String>,
    /// Whether to colour the line.
    pub color: bool,
}

impl ReplHelper {
    /// A helper knowing `tables` and `columns`; colours when `color`.
    pub fn new(tables: Vec<String>, mut columns: Vec<String>, color: bool) -> Self {
        columns.sort();
        columns.dedup();
        let mut api_names: Vec<String> = Table::STORED
            .iter()
            .flat_map(|t| t.properties())
            .map(|p| p.api.to_string())
            .chain(Table::STORED.iter().map(|t| t.entity_set().to_string()))
            .chain(
                crate::schema::IP_ADDRESS_PROPERTIES
                    .iter()
                    .map(|p| p.api.to_string()),
            )
            .chain(
                crate::schema::VM_METADATA_PROPERTIES
                    .iter()
                    .map(|p| p.api.to_string()),
            )
            .collect();
        api_names.sort();
        api_names.dedup();
        ReplHelper {
            tables,
            columns,
            api_names,
            color,
        }
    }

    /// The start of the word under `pos` and the words offered for it.
    pub fn candidates(&self, line: &str, pos: usize) -> (usize, Vec<String>) {
        let pos = floor_boundary(line, pos);
        let head = &line[..pos];
        let start = head
            .char_indices()
            .rev()
            .find(|(_, c)| !(c.is_alphanumeric() || matches!(c, '_' | '$' | '\\')))
            .map_or(0, |(i, c)| i + c.len_utf8());
        let word = &head[start..];
        let line_start = head[..start].rfind('\n').map_or(0, |i| i + 1);
        let current_line = &line[line_start..];
        if word.starts_with('\\') {
            let mut offered: Vec<String> = if head[line_start..start].trim().is_empty() {
                COMMANDS
                    .iter()
                    .map(|c| c.name.to_string())
                    .filter(|n| n.starts_with(word))
                    .collect()
            } else {
                Vec::new()
            };
            offered.sort();
            return (start, offered);
        }
        if word.is_empty() {
            return (start, Vec::new());
        }
        let lower = word.to_ascii_lowercase();
        let matching = |w: &&String| w.to_ascii_lowercase().starts_with(&lower);
        let mut offered: Vec<String> = if looks_like_odata(current_line) {
            self.api_names
                .iter()
                .filter(matching)
                .cloned()
                .chain(
                    ODATA_WORDS
                        .iter()
                        .filter(|w| w.starts_with(&lower))
                        .map(|w| w.to_string()),
                )
                .collect()
        } else {
            let upper = word.chars().next().is_some_and(char::is_uppercase);
            SQL_KEYWORDS
                .iter()
                .filter(|k| k.to_ascii_lowercase().starts_with(&lower))
                .map(|k| {
                    if upper {
                        k.to_string()
                    } else {
                        k.to_ascii_lowercase()
                    }
                })
                .chain(self.tables.iter().filter(matching).cloned())
                .chain(self.columns.iter().filter(matching).cloned())
                .collect()
        };
        offered.sort();
        offered.dedup();
        (start, offered)
    }
}

/// `pos` moved back onto a character boundary of `s` (and within it).
fn floor_boundary(s: &str, pos: usize) -> usize {
    let mut p = pos.min(s.len());
    while !s.is_char_boundary(p) {
        p -= 1;
    }
    p
}

impl Completer for ReplHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let (start, words) = self.candidates(line, pos);
        Ok((
            start,
            words
                .into_iter()
                .map(|w| Pair {
                    display: w.clone(),
                    replacement: w,
                })
                .collect(),
        ))
    }
}

impl Hinter for ReplHelper {
    type Hint = String;
}

impl Validator for ReplHelper {
    fn validate(&self, ctx: &mut ValidationContext) -> rustyline::Result<ValidationResult> {
        Ok(if input::is_complete(ctx.input()) {
            ValidationResult::Valid(None)
        } else {
            ValidationResult::Incomplete
        })
    }
}

impl Highlighter for ReplHelper {
    fn highlight<'l>(&self, line: &'l str, _pos: usize) -> Cow<'l, str> {
        if !self.color {
            return Cow::Borrowed(line);
        }
        Cow::Owned(highlight(line))
    }

    fn highlight_char(&self, _line: &str, _pos: usize, _kind: CmdKind) -> bool {
        self.color
    }
}

impl Helper for ReplHelper {}

const KEYWORD: &str = "\x1b[1;34m";
const STRING: &str = "\x1b[32m";
const NUMBER: &str = "\x1b[33m";
const COMMENT: &str = "\x1b[2m";
const META: &str = "\x1b[35m";
const RESET: &str = "\x1b[0m";

/// `line` with ANSI colours: keywords, strings, numbers, comments, meta-commands.
pub fn highlight(line: &str) -> String {
    let mut out = String::with_capacity(line.len() + 32);
    let mut chars = line.char_indices().peekable();
    let paint = |out: &mut String, colour: &str, text: &str| {
        out.push_str(colour);
        out.push_str(text);
        out.push_str(RESET);
    };
    while let Some((i, c)) = chars.next() {
        let end_of = |chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>,
                      keep: &dyn Fn(char) -> bool| {
            let mut end = i + c.len_utf8();
            while let Some(&(j, d)) = chars.peek() {
                if !keep(d) {
                    break;
                }
                end = j + d.len_utf8();
                chars.next();
            }
            end
        };
        match c {
            '\'' | '"' => {
                let mut end = line.len();
                for (j, d) in chars.by_ref() {
                    if d == c {
                        end = j + 1;
                        break;
                    }
                }
                paint(&mut out, STRING, &line[i..end]);
            }
            '-' if line[i..].starts_with("--") => {
                let end = line[i..].find('\n').map_or(line.len(), |n| i + n);
                while chars.peek().is_some_and(|&(j, _)| j < end) {
                    chars.next();
                }
                paint(&mut out, COMMENT, &line[i..end]);
            }
            '\\' => {
                let end = end_of(&mut chars, &|d| d.is_alphanumeric() || d == '?');
                paint(&mut out, META, &line[i..end]);
            }
            c if c.is_ascii_digit() => {
                let end = end_of(&mut chars, &|d| d.is_ascii_digit() || d == '.');
                paint(&mut out, NUMBER, &line[i..end]);
            }
            c if c.is_alphabetic() || c == '_' => {
                let end = end_of(&mut chars, &|d| d.is_alphanumeric() || d == '_');
                let word = &line[i..end];
                if SQL_KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(word)) {
                    paint(&mut out, KEYWORD, word);
                } else {
                    out.push_str(word);
                }
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn helper() -> ReplHelper {
        ReplHelper::new(
            vec![
                "machines".into(),
                "machines_history".into(),
                "ip_addresses".into(),
            ],
            vec!["computer_dns_name".into(), "risk_score".into()],
            false,
        )
    }

    #[test]
    fn sql_words_tables_and_columns_complete() {
        let h = helper();
        assert_eq!(
            h.candidates("SELECT * FROM mac", 17),
            (14, vec!["machines".into(), "machines_history".into()])
        );
        assert_eq!(h.candidates("SELECT comp", 11).1, ["computer_dns_name"]);
        assert_eq!(h.candidates("sel", 3).1, ["select"]);
        assert_eq!(h.candidates("SEL", 3).1, ["SELECT"]);
    }

    #[test]
    fn odata_lines_and_meta_commands_complete() {
        let h = helper();
        let line = "machines?$filter=computerD";
        assert_eq!(h.candidates(line, line.len()).1, ["computerDnsName"]);
        let line = "machines?$filter=startsw";
        assert_eq!(h.candidates(line, line.len()).1, ["startswith"]);
        assert_eq!(h.candidates("\\d", 2).1, ["\\d", "\\diff", "\\dt"]);
        // A position inside a character of several bytes does not panic.
        let _ = h.candidates("é", 1);
    }

    #[test]
    fn highlighting_keeps_the_text() {
        let line = "SELECT 'a' -- c\n, 1 FROM t \\dt é";
        let strip = |s: &str| {
            let mut out = String::new();
            let mut skip = false;
            for c in s.chars() {
                match c {
                    '\x1b' => skip = true,
                    'm' if skip => skip = false,
                    c if !skip => out.push(c),
                    _ => {}
                }
            }
            out
        };
        assert_eq!(strip(&highlight(line)), line);
        assert!(highlight("SELECT").starts_with(KEYWORD));
    }
}
