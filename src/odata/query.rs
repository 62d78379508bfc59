//! An OData request as the API would get it, relative: `machines?$filter=...&$top=10`,
//! with or without a leading `/api/` (and `v1.0/`), `+` and `%XX` decoded as in a URL,
//! option names with or without `$` and in any case (4.01).
//!
//! Options: `$filter`, `$select`, `$orderby`, `$top` (at most 10,000, as the service
//! caps it), `$skip` (not negative), `$count`. Any other option, or one given twice, is
//! an error, as the service answers it. Every error carries the byte offset into the
//! text as given, so a caret can point at it.

use std::fmt;

use super::ast;
use super::parser::parse_filter;

/// The largest `$top` the service accepts.
pub const MAX_TOP: u64 = 10_000;

/// What went wrong reading the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryErrorKind {
    UnknownEntitySet {
        name: String,
        suggestion: Option<String>,
    },
    UnknownOption {
        name: String,
    },
    UnsupportedOption {
        name: String,
    },
    RepeatedOption {
        name: String,
    },
    TopTooLarge {
        value: String,
    },
    BadNumber {
        option: &'static str,
        value: String,
    },
    BadCount {
        value: String,
    },
    BadEncoding,
    /// An error inside `$filter` or `$orderby`, with its message.
    Expression {
        option: &'static str,
        message: String,
    },
    MissingValue {
        name: String,
    },
}

/// An error at a byte offset of the request text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError {
    pub offset: usize,
    pub kind: QueryErrorKind,
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            QueryErrorKind::UnknownEntitySet { name, suggestion } => {
                write!(f, "unknown entity set '{name}'")?;
                match suggestion {
                    Some(s) => write!(f, " (did you mean {s}?)")?,
                    None => write!(
                        f,
                        " (expected machines, ip_addresses, security_states, user_machines, domain_machines, or one of them with _history)"
                    )?,
                }
            }
            QueryErrorKind::UnknownOption { name } => {
                write!(f, "the query parameter '{name}' is not supported")?
            }
            QueryErrorKind::UnsupportedOption { name } => write!(
                f,
                "the query option '{name}' is not supported (use $filter, $select, $orderby, $top, $skip, $count)"
            )?,
            QueryErrorKind::RepeatedOption { name } => write!(
                f,
                "query option '{name}' was specified more than once, but it must be specified at most once"
            )?,
            QueryErrorKind::TopTooLarge { value } => write!(
                f,
                "the limit of '{MAX_TOP}' for Top query has been exceeded; the value from the incoming request is '{value}'"
            )?,
            QueryErrorKind::BadNumber { option, value } => write!(
                f,
                "invalid value '{value}' for {option} query option found; the {option} query option requires a non-negative integer value"
            )?,
            QueryErrorKind::BadCount { value } => write!(
                f,
                "invalid value '{value}' for $count (expected true or false)"
            )?,
            QueryErrorKind::BadEncoding => {
                write!(f, "bad percent-encoding (expected %XX with two hex digits)")?
            }
            QueryErrorKind::Expression { option, message } => write!(f, "{option}: {message}")?,
            QueryErrorKind::MissingValue { name } => {
                write!(f, "query option '{name}' has no value")?
            }
        }
        write!(f, " at byte {}", self.offset)
    }
}

impl std::error::Error for QueryError {}

/// One `$orderby` key.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderKey {
    pub expr: ast::Expr,
    pub descending: bool,
    /// Where the key's text starts in the request, for errors found later.
    pub offset: usize,
}

/// One `$select` item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectItem {
    pub name: String,
    pub offset: usize,
}

/// A parsed `$filter` and where its text sits in the request.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    pub expr: ast::Expr,
    /// The decoded filter text.
    pub text: String,
    /// Request offset of each byte of `text` (one more at the end).
    pub offsets: Vec<usize>,
}

impl Filter {
    /// The request offset of byte `at` of the decoded filter.
    pub fn request_offset(&self, at: usize) -> usize {
        self.offsets
            .get(at)
            .or(self.offsets.last())
            .copied()
            .unwrap_or(0)
    }
}

/// A request, read.
#[derive(Debug, Clone, PartialEq)]
pub struct ODataQuery {
    /// The entity set as written.
    pub entity_set: String,
    /// The table it names, and whether it is the `_history` table.
    pub table: crate::schema::Table,
    pub history: bool,
    pub filter: Option<Filter>,
    pub select: Option<Vec<SelectItem>>,
    pub orderby: Vec<OrderKey>,
    pub top: Option<u64>,
    pub skip: Option<u64>,
    pub count: bool,
}

/// Whether `text` looks like an OData request rather than SQL: an entity set name,
/// optionally behind `/api/`, then `?` or the end.
pub fn looks_like_odata(text: &str) -> bool {
    let t = trim_text(text).trim_end();
    let t = strip_prefix(t).0;
    let name_end = t.find('?').unwrap_or(t.len());
    let name = canonical_path(&t[..name_end]);
    !name.is_empty()
        && name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
        && (name_end < t.len()
            || crate::schema::Table::STORED
                .iter()
                .any(|tb| entity_set_matches(name, *tb).is_some()))
}

/// `text` without leading whitespace and byte order marks (a `.sql` or `.txt` file
/// saved by some editors starts with U+FEFF, which `trim` keeps).
pub fn trim_text(text: &str) -> &str {
    text.trim_start_matches(|c: char| c.is_whitespace() || c == '\u{feff}')
}

fn strip_prefix(t: &str) -> (&str, usize) {
    let mut rest = t;
    let mut cut = 0;
    for p in ["/", "api/", "v1.0/"] {
        // `get` and not `[..]`: the text may start with a character of several bytes.
        if let Some(head) = rest.get(..p.len())
            && head.eq_ignore_ascii_case(p)
        {
            rest = &rest[p.len()..];
            cut += p.len();
        }
    }
    (rest, cut)
}

/// The request path with `machines/changes` (the spelling of an API that had it)
/// read as the `machine_changes` entity set.
fn canonical_path(path: &str) -> &str {
    if path.eq_ignore_ascii_case("machines/changes") {
        "machine_changes"
    } else {
        path
    }
}

fn entity_set_matches(name: &str, table: crate::schema::Table) -> Option<bool> {
    if table.is_change() {
        // A change table covers every snapshot: it reads like a history table.
        return (name.eq_ignore_ascii_case(table.name())
            || name.eq_ignore_ascii_case(table.entity_set()))
        .then_some(true);
    }
    if name.eq_ignore_ascii_case(table.name()) || name.eq_ignore_ascii_case(table.entity_set()) {
        Some(false)
    } else if name.eq_ignore_ascii_case(&table.history_name()) {
        Some(true)
    } else {
        None
    }
}

/// Reads a request. Offsets in errors are bytes of `text` as given.
pub fn parse_query(text: &str) -> Result<ODataQuery, QueryError> {
    let lead = text.len() - trim_text(text).len();
    let trimmed = trim_text(text).trim_end();
    let (rest, cut) = strip_prefix(trimmed);
    let base = lead + cut;
    let (path, query) = match rest.find('?') {
        Some(i) => (&rest[..i], Some((&rest[i + 1..], base + i + 1))),
        None => (rest, None),
    };
    let mut found = None;
    for t in crate::schema::Table::STORED {
        if let Some(h) = entity_set_matches(canonical_path(path), t) {
            found = Some((t, h));
        }
    }
    let Some((table, history)) = found else {
        let names: Vec<String> = crate::schema::Table::ALL
            .iter()
            .flat_map(|t| [t.name().to_string(), t.history_name()])
            .chain(
                crate::schema::Table::CHANGES
                    .iter()
                    .map(|t| t.name().to_string()),
            )
            .collect();
        return Err(QueryError {
            offset: base,
            kind: QueryErrorKind::UnknownEntitySet {
                name: path.to_string(),
                suggestion: super::suggest(path, names.iter().map(String::as_str)),
            },
        });
    };
    let mut q = ODataQuery {
        entity_set: path.to_string(),
        table,
        history,
        filter: None,
        select: None,
        orderby: Vec::new(),
        top: None,
        skip: None,
        count: false,
    };
    let Some((query, qstart)) = query else {
        return Ok(q);
    };
    let mut seen: Vec<String> = Vec::new();
    let mut at = qstart;
    for part in query.split('&') {
        let part_start = at;
        at += part.len() + 1;
        if part.is_empty() {
            continue;
        }
        let (raw_name, raw_value, value_start) = match part.find('=') {
            Some(i) => (&part[..i], &part[i + 1..], part_start + i + 1),
            None => (part, "", part_start + part.len()),
        };
        let (name, name_map) = decode(raw_name, part_start)?;
        if let Some(i) = name.find([' ', '\t']) {
            return Err(QueryError {
                offset: name_map.get(i).copied().unwrap_or(part_start),
                kind: QueryErrorKind::Expression {
                    option: "query option",
                    message: "no whitespace may stand in a name or before '='".into(),
                },
            });
        }
        let canonical = name.strip_prefix('$').unwrap_or(&name).to_ascii_lowercase();
        let known = ["filter", "select", "orderby", "top", "skip", "count"];
        if !known.contains(&canonical.as_str()) {
            let unsupported = [
                "expand",
                "search",
                "apply",
                "compute",
                "format",
                "skiptoken",
                "deltatoken",
                "levels",
                "index",
                "schemaversion",
                "id",
            ];
            let kind = if unsupported.contains(&canonical.as_str()) {
                QueryErrorKind::UnsupportedOption { name }
            } else {
                QueryErrorKind::UnknownOption { name }
            };
            return Err(QueryError {
                offset: part_start,
                kind,
            });
        }
        if seen.contains(&canonical) {
            return Err(QueryError {
                offset: part_start,
                kind: QueryErrorKind::RepeatedOption { name },
            });
        }
        seen.push(canonical.clone());
        if !part.contains('=') || raw_value.is_empty() {
            return Err(QueryError {
                offset: value_start,
                kind: QueryErrorKind::MissingValue { name },
            });
        }
        let (value, offsets) = decode(raw_value, value_start)?;
        match canonical.as_str() {
            "filter" => {
                // No whitespace may stand around '=' (ABNF: EQ then boolCommonExpr).
                if value.starts_with([' ', '\t']) {
                    let first = value.len() - value.trim_start().len();
                    return Err(QueryError {
                        offset: offsets.get(first).copied().unwrap_or(value_start),
                        kind: QueryErrorKind::Expression {
                            option: "$filter",
                            message: "the expression must follow '=' with no whitespace".into(),
                        },
                    });
                }
                let expr = parse_filter(&value).map_err(|e| QueryError {
                    offset: offsets.get(e.offset).copied().unwrap_or(value_start),
                    kind: QueryErrorKind::Expression {
                        option: "$filter",
                        message: strip_at(&e.to_string()),
                    },
                })?;
                q.filter = Some(Filter {
                    expr,
                    text: value,
                    offsets,
                });
            }
            "select" => {
                let mut items = Vec::new();
                let mut pos = 0;
                for item in value.split(',') {
                    let lead = item.len() - item.trim_start().len();
                    let name = item.trim();
                    let offset = offsets.get(pos + lead).copied().unwrap_or(value_start);
                    pos += item.len() + 1;
                    if name.is_empty() {
                        return Err(QueryError {
                            offset,
                            kind: QueryErrorKind::Expression {
                                option: "$select",
                                message: "expected a property name".into(),
                            },
                        });
                    }
                    items.push(SelectItem {
                        name: name.to_string(),
                        offset,
                    });
                }
                q.select = Some(items);
            }
            "orderby" => q.orderby = order_keys(&value, &offsets)?,
            "top" | "skip" => {
                let option = if canonical == "top" { "$top" } else { "$skip" };
                let n: u64 = value.trim().parse().map_err(|_| QueryError {
                    offset: value_start,
                    kind: QueryErrorKind::BadNumber {
                        option,
                        value: value.clone(),
                    },
                })?;
                if canonical == "top" {
                    if n > MAX_TOP {
                        return Err(QueryError {
                            offset: value_start,
                            kind: QueryErrorKind::TopTooLarge { value },
                        });
                    }
                    q.top = Some(n);
                } else {
                    q.skip = Some(n);
                }
            }
            _ => {
                q.count = match value.to_ascii_lowercase().as_str() {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(QueryError {
                            offset: value_start,
                            kind: QueryErrorKind::BadCount { value },
                        });
                    }
                }
            }
        }
    }
    Ok(q)
}

/// A parse error's message without its own " at byte N" (the request offset replaces
/// it).
fn strip_at(message: &str) -> String {
    match message.rfind(" at byte ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// `key [asc|desc], ...`, split at top-level commas.
fn order_keys(value: &str, offsets: &[usize]) -> Result<Vec<OrderKey>, QueryError> {
    let mut keys = Vec::new();
    let mut depth = 0i32;
    let mut quote = false;
    let mut start = 0;
    let bytes = value.as_bytes();
    let mut pieces = Vec::new();
    for (i, &c) in bytes.iter().enumerate() {
        match c {
            b'\'' => quote = !quote,
            b'(' if !quote => depth += 1,
            b')' if !quote => depth -= 1,
            b',' if !quote && depth == 0 => {
                pieces.push((start, i));
                start = i + 1;
            }
            _ => {}
        }
    }
    pieces.push((start, value.len()));
    for (s, e) in pieces {
        let piece = &value[s..e];
        let trimmed = piece.trim_end();
        let (body, descending) = if let Some(b) = strip_word(trimmed, "desc") {
            (b, true)
        } else if let Some(b) = strip_word(trimmed, "asc") {
            (b, false)
        } else {
            (trimmed, false)
        };
        let lead = body.len() - body.trim_start().len();
        let expr_text = body.trim();
        let key_start = s + lead;
        let expr = parse_filter(expr_text).map_err(|err| QueryError {
            offset: offsets.get(key_start + err.offset).copied().unwrap_or(0),
            kind: QueryErrorKind::Expression {
                option: "$orderby",
                message: strip_at(&err.to_string()),
            },
        })?;
        keys.push(OrderKey {
            expr,
            descending,
            offset: offsets.get(key_start).copied().unwrap_or(0),
        });
    }
    Ok(keys)
}

/// `text` without a trailing ` word` (any case), if it ends so.
fn strip_word<'a>(text: &'a str, word: &str) -> Option<&'a str> {
    // The cut points are found by `get`, so a name of several-byte characters
    // (`nämé`) simply does not end with the word.
    let cut = text.len().checked_sub(word.len())?;
    let (body, tail) = (text.get(..cut)?, text.get(cut..)?);
    let body = body.strip_suffix(|c: char| c.is_ascii_whitespace())?;
    tail.eq_ignore_ascii_case(word).then_some(body)
}

/// URL-decodes a query component (`+` is a space, `%XX` a byte) and maps each byte of
/// the result to its offset in the request (`base` is where `raw` starts).
pub fn decode(raw: &str, base: usize) -> Result<(String, Vec<usize>), QueryError> {
    decode_with(raw, base, true)
}

/// Percent-decodes `raw` (`+` stays a plus sign when `plus_is_space` is false), with
/// the offset map of [`decode`].
pub fn decode_with(
    raw: &str,
    base: usize,
    plus_is_space: bool,
) -> Result<(String, Vec<usize>), QueryError> {
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut map = Vec::with_capacity(b.len() + 1);
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = raw
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                let Some(v) = hex else {
                    return Err(QueryError {
                        offset: base + i,
                        kind: QueryErrorKind::BadEncoding,
                    });
                };
                out.push(v);
                map.push(base + i);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                map.push(base + i);
                i += 1;
            }
            c => {
                out.push(c);
                map.push(base + i);
                i += 1;
            }
        }
    }
    map.push(base + b.len());
    let text = String::from_utf8(out).map_err(|_| QueryError {
        offset: base,
        kind: QueryErrorKind::BadEncoding,
    })?;
    Ok((text, map))
}
