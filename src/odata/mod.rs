//! OData: the `$filter` language and the query options, translated to DataFusion.
//!
//! Stages stay apart: [`lexer`] (text to tokens), [`parser`] (tokens to the [`ast`],
//! knowing no schema), [`to_expr`] (tree plus table schema to a DataFusion `Expr`,
//! resolving names and types), and [`query`] (the relative URL and its `$filter`,
//! `$select`, `$orderby`, `$top`, `$skip`, `$count`).
//!
//! The parser is written by hand: the crates found are PEG grammars with no error
//! positions, and every error here carries the byte offset the CLI puts a caret under.

pub mod ast;
pub mod lexer;
pub mod parser;
pub mod query;
pub mod shape;
pub mod to_expr;
pub mod value;

use std::fmt;

pub use parser::parse_filter;
pub use query::{ODataQuery, parse_query};
pub use to_expr::to_expr;

/// What went wrong parsing a filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseErrorKind {
    Expected {
        expected: String,
        found: String,
    },
    Unterminated {
        what: &'static str,
    },
    TooDeep {
        limit: usize,
    },
    TooManyTerms {
        limit: usize,
    },
    UnknownFunction {
        name: String,
        suggestion: Option<String>,
    },
    Arity {
        function: String,
        min: usize,
        max: usize,
        found: usize,
    },
}

/// A parse error at a byte offset of the filter text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub offset: usize,
    pub kind: ParseErrorKind,
}

impl ParseError {
    /// "expected X, found Y" at `offset`.
    pub fn new(offset: usize, expected: impl Into<String>, found: impl Into<String>) -> Self {
        ParseError {
            offset,
            kind: ParseErrorKind::Expected {
                expected: expected.into(),
                found: found.into(),
            },
        }
    }

    /// A quoted text that never closes, opened at `offset`.
    pub fn unterminated(offset: usize, what: &'static str) -> Self {
        ParseError {
            offset,
            kind: ParseErrorKind::Unterminated { what },
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ParseErrorKind::Expected { expected, found } => {
                write!(f, "expected {expected}, found {found}")?
            }
            ParseErrorKind::Unterminated { what } => write!(f, "unterminated {what}")?,
            ParseErrorKind::TooDeep { limit } => {
                write!(f, "expression nested deeper than {limit} levels")?
            }
            ParseErrorKind::TooManyTerms { limit } => {
                write!(f, "more than {limit} 'and'/'or' operators")?
            }
            ParseErrorKind::UnknownFunction { name, suggestion } => {
                write!(f, "unknown function '{name}'")?;
                if let Some(s) = suggestion {
                    write!(f, " (did you mean {s}?)")?;
                }
            }
            ParseErrorKind::Arity {
                function,
                min,
                max,
                found,
            } => {
                let want = if min == max {
                    format!("{min}")
                } else {
                    format!("{min} or {max}")
                };
                write!(f, "{function} takes {want} arguments, found {found}")?
            }
        }
        write!(f, " at byte {}", self.offset)
    }
}

impl std::error::Error for ParseError {}

/// Any OData error: parsing, meaning, or the query options. Each has a byte offset
/// into the text it names (`source`), for the caret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ODataError {
    #[error("{0}")]
    Parse(ParseError),
    #[error("{0}")]
    Translate(to_expr::TranslateError),
    #[error("{0}")]
    Query(query::QueryError),
}

impl ODataError {
    /// The byte offset of the error in the text it was found in.
    pub fn offset(&self) -> usize {
        match self {
            ODataError::Parse(e) => e.offset,
            ODataError::Translate(e) => e.offset,
            ODataError::Query(e) => e.offset,
        }
    }
}

impl From<ParseError> for ODataError {
    fn from(e: ParseError) -> Self {
        ODataError::Parse(e)
    }
}

impl From<to_expr::TranslateError> for ODataError {
    fn from(e: to_expr::TranslateError) -> Self {
        ODataError::Translate(e)
    }
}

impl From<query::QueryError> for ODataError {
    fn from(e: query::QueryError) -> Self {
        ODataError::Query(e)
    }
}

/// The message, the text, and a caret under byte `offset`, as the CLI prints errors.
pub fn render_caret(message: &str, text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    // Columns count characters, not bytes, so the caret stands under the character.
    let col = text.get(..offset).map_or(offset, |p| p.chars().count());
    format!("{message}\n{text}\n{}^", " ".repeat(col))
}

/// The candidate closest to `name` (case-insensitive edit distance at most a third of
/// its length, at least 2), for "did you mean ...?".
pub fn suggest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<String> {
    let lower = name.to_lowercase();
    let limit = (name.chars().count() / 3).max(2);
    candidates
        .map(|c| (strsim::levenshtein(&lower, &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.to_string())
}

#[cfg(test)]
mod tests;
