//! What the user typed, split into statements.
//!
//! SQL runs over lines until a `;` outside quotes and comments (`'...'` with `''`,
//! `E'...'` with backslash escapes, `"..."`, `` `...` ``, `-- ...`, nested
//! `/* ... */`). A meta-command is read at the start of a statement only: typed while
//! SQL waits for its `;`, it is part of that SQL. An OData request (`machines?...`,
//! `/api/machines?...`) and a meta-command (`\dt`) are complete at the end of their
//! line, whatever their quotes: a filter's `'` is not SQL's. Several statements may
//! share a line. The same rules decide when Enter submits the buffer at the prompt.

use crate::odata::query::looks_like_odata;

/// One statement to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Statement {
    /// SQL, without its `;`.
    Sql(String),
    /// An OData request.
    OData(String),
    /// A meta-command line, backslash included.
    Meta(String),
}

impl Statement {
    /// The statement's text.
    pub fn text(&self) -> &str {
        match self {
            Statement::Sql(s) | Statement::OData(s) | Statement::Meta(s) => s,
        }
    }
}

/// Splits `text` into its complete statements and the rest: SQL still waiting for its
/// `;` (empty, or only whitespace and comments, when nothing waits).
pub fn split(text: &str) -> (Vec<Statement>, &str) {
    let mut out = Vec::new();
    let mut rest = text;
    loop {
        let Some(start) = skip_comments(rest) else {
            // An unterminated block comment: the rest waits for its end.
            return (out, rest);
        };
        if start.is_empty() {
            return (out, start);
        }
        let line_end = start.find('\n').unwrap_or(start.len());
        let line = &start[..line_end];
        if line.starts_with('\\') {
            out.push(Statement::Meta(line.trim().to_string()));
            rest = &start[line_end..];
            continue;
        }
        if looks_like_odata(line) {
            out.push(Statement::OData(line.trim().to_string()));
            rest = &start[line_end..];
            continue;
        }
        match sql_end(start) {
            Some(semi) => {
                let sql = start[..semi].trim();
                if !is_blank(sql) {
                    out.push(Statement::Sql(sql.to_string()));
                }
                rest = &start[semi + 1..];
            }
            None => return (out, start),
        }
    }
}

/// `text` after its leading whitespace and comments; `None` when a block comment
/// does not end.
fn skip_comments(text: &str) -> Option<&str> {
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
        if rest.starts_with("--") {
            rest = rest.find('\n').map_or("", |i| &rest[i + 1..]);
        } else if rest.starts_with("/*") {
            let b = rest.as_bytes();
            let mut scan = Scan::default();
            let mut i = 0;
            loop {
                i += scan.step(b, i);
                if scan.in_code() {
                    break;
                }
                if i >= b.len() {
                    return None;
                }
            }
            rest = &rest[i..];
        } else {
            return Some(rest);
        }
    }
}

/// Whether `text` holds only whitespace and SQL comments, all of them closed.
pub fn is_blank(text: &str) -> bool {
    let b = text.as_bytes();
    let mut scan = Scan::default();
    let mut i = 0;
    while i < b.len() {
        let opens_comment = matches!(
            (b[i], b.get(i + 1)),
            (b'-', Some(b'-')) | (b'/', Some(b'*'))
        );
        if scan.in_code() && !b[i].is_ascii_whitespace() && !opens_comment {
            return false;
        }
        i += scan.step(b, i);
    }
    // A block comment still open waits for its end.
    !matches!(scan.state, State::Block(_))
}

/// Whether the buffer at the prompt is ready to run: nothing in it waits for a `;`.
pub fn is_complete(text: &str) -> bool {
    is_blank(split(text).1)
}

/// The byte offset of the `;` that ends the SQL statement at the start of `text`.
fn sql_end(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut scan = Scan::default();
    let mut i = 0;
    while i < bytes.len() {
        if scan.in_code() && bytes[i] == b';' {
            return Some(i);
        }
        i += scan.step(bytes, i);
    }
    None
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    #[default]
    Code,
    Single,
    /// `E'...'`, where a backslash escapes the next character.
    Escaped,
    Double,
    Backtick,
    Line,
    Block(u32),
}

/// A lexer state over bytes; every delimiter is ASCII, so byte positions stay on
/// character boundaries.
#[derive(Debug, Default)]
struct Scan {
    state: State,
}

impl Scan {
    fn in_code(&self) -> bool {
        self.state == State::Code
    }

    /// Moves past the byte (or the two-byte delimiter) at `i`; returns how many bytes.
    fn step(&mut self, b: &[u8], i: usize) -> usize {
        let next = b.get(i + 1).copied();
        let after_word = i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
        match (self.state, b[i], next) {
            (State::Code, b'E' | b'e', Some(b'\'')) if !after_word => {
                self.state = State::Escaped;
                return 2;
            }
            (State::Escaped, b'\\', Some(_)) => return 2,
            (State::Escaped, b'\'', _) => self.state = State::Code,
            (State::Code, b'`', _) => self.state = State::Backtick,
            (State::Backtick, b'`', _) => self.state = State::Code,
            (State::Code, b'\'', _) => self.state = State::Single,
            (State::Code, b'"', _) => self.state = State::Double,
            (State::Code, b'-', Some(b'-')) => {
                self.state = State::Line;
                return 2;
            }
            (State::Code, b'/', Some(b'*')) => {
                self.state = State::Block(1);
                return 2;
            }
            (State::Single, b'\'', _) | (State::Double, b'"', _) => self.state = State::Code,
            (State::Line, b'\n', _) => self.state = State::Code,
            (State::Block(d), b'/', Some(b'*')) => {
                self.state = State::Block(d.saturating_add(1));
                return 2;
            }
            (State::Block(d), b'*', Some(b'/')) => {
                self.state = if d <= 1 {
                    State::Code
                } else {
                    State::Block(d - 1)
                };
                return 2;
            }
            _ => {}
        }
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(text: &str) -> (Vec<String>, String) {
        let (s, rest) = split(text);
        (
            s.iter().map(|s| format!("{s:?}")).collect(),
            rest.to_string(),
        )
    }

    #[test]
    fn sql_runs_to_its_semicolon_across_lines() {
        let (s, rest) =
            texts("SELECT 1,\n  2;\nSELECT 'a;b' -- c;\n, \"x;\" /* ; /* ; */ ; */ FROM t; SELECT");
        assert_eq!(
            s,
            [
                "Sql(\"SELECT 1,\\n  2\")",
                "Sql(\"SELECT 'a;b' -- c;\\n, \\\"x;\\\" /* ; /* ; */ ; */ FROM t\")"
            ]
        );
        assert_eq!(rest, "SELECT");
        assert!(!is_complete("SELECT 1"));
        assert!(is_complete("SELECT 1; -- done"));
        assert!(!is_complete("SELECT 'it''s;"));
    }

    #[test]
    fn odata_and_meta_lines_end_with_the_line() {
        let (s, rest) =
            texts("machines?$filter=computerDnsName eq 'o''brien;'\n\\dt\n/api/machines?$top=1\n");
        assert_eq!(
            s,
            [
                "OData(\"machines?$filter=computerDnsName eq 'o''brien;'\")",
                "Meta(\"\\\\dt\")",
                "OData(\"/api/machines?$top=1\")"
            ]
        );
        assert_eq!(rest, "");
        assert!(is_complete("machines?$filter=riskScore eq 'High"));
    }

    #[test]
    fn several_statements_share_a_line_and_blanks_are_skipped() {
        let (s, rest) = texts("\u{feff}SELECT 1; ; SELECT 2;  -- tail");
        assert_eq!(s, ["Sql(\"SELECT 1\")", "Sql(\"SELECT 2\")"]);
        assert!(is_blank(&rest));
        assert!(is_blank("  /* a */ -- b\n"));
        assert!(!is_blank("/* a */ x"));
    }

    #[test]
    fn comments_between_statements_do_not_swallow_the_next_line() {
        let (s, rest) = texts("SELECT 1; -- one\n\\dt\n/* a\n */ machines?$top=1\n/* open");
        assert_eq!(
            s,
            [
                "Sql(\"SELECT 1\")",
                "Meta(\"\\\\dt\")",
                "OData(\"machines?$top=1\")"
            ]
        );
        assert_eq!(rest.trim(), "/* open");
        assert!(!is_complete("/* open"));
    }

    #[test]
    fn escape_strings_and_backticks_hide_their_semicolons() {
        let (s, rest) = texts("SELECT E'a\\';b' AS x; SELECT 1 AS `a;b`; SELECT name';'");
        assert_eq!(
            s,
            [
                "Sql(\"SELECT E'a\\\\';b' AS x\")",
                "Sql(\"SELECT 1 AS `a;b`\")"
            ]
        );
        // `name'` is an identifier then a quote, not an escape string.
        assert_eq!(rest, "SELECT name';'");
        assert!(!is_complete("SELECT E'\\"));
    }

    #[test]
    fn odd_bytes_do_not_break_the_scan() {
        for text in [
            "é;", "'😀", "/*", "--", "\"", "\\", ";;;", "é\n\\q", "E'\\é", "`", "e'",
        ] {
            let _ = split(text);
            let _ = is_complete(text);
        }
        assert_eq!(texts("é;").0, ["Sql(\"é\")"]);
    }
}
