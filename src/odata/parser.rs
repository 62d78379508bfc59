//! The `$filter` parser: precedence climbing (Pratt) over the lexer's tokens, with all
//! operator precedence in one table, [`INFIX`]. It knows no schema: names become paths
//! and `to_expr` decides what they mean.
//!
//! Precedence follows OData 4.01 Part 2, section 5.1.1.16, highest first: primary
//! (`/`, `has`, `in`, calls), unary (`-`, `not`), multiplicative (`mul div divby mod`),
//! additive (`add sub`), relational (`gt ge lt le`), equality (`eq ne`), `and`, `or`.
//! All binary operators are left-associative. Note what the table implies: `not`
//! binds tighter than comparisons, so `not a eq b` is `(not a) eq b`, as in Microsoft's
//! own OData parser; write `not (a eq b)`.

use super::ast::{BinOp, Expr, ExprKind, LambdaKind, Literal, UnOp};
use super::lexer::{Span, Tok, Token, tokenize};
use super::{ParseError, ParseErrorKind};

/// How deep expressions may nest before the parser refuses (bounds stack use):
/// parentheses, prefix operators, calls and chains of operators other than `and` and
/// `or` all count (a chain `a eq b eq c` nests as deep as it is long).
pub const MAX_DEPTH: usize = 200;

/// How many `and`/`or` operators a filter may hold. Their chains are flattened where
/// the tree is evaluated, but printed and dropped recursively, so they are bounded
/// too, far above what a request URL holds in practice.
pub const MAX_LOGICAL: usize = 5_000;

/// Binding power of unary `-` and `not`.
const PREFIX_BP: u8 = 13;

/// Every infix operator: word, operator, left and right binding power.
pub const INFIX: &[(&str, InfixOp, u8, u8)] = &[
    ("or", InfixOp::Bin(BinOp::Or), 1, 2),
    ("and", InfixOp::Bin(BinOp::And), 3, 4),
    ("eq", InfixOp::Bin(BinOp::Eq), 5, 6),
    ("ne", InfixOp::Bin(BinOp::Ne), 5, 6),
    ("gt", InfixOp::Bin(BinOp::Gt), 7, 8),
    ("ge", InfixOp::Bin(BinOp::Ge), 7, 8),
    ("lt", InfixOp::Bin(BinOp::Lt), 7, 8),
    ("le", InfixOp::Bin(BinOp::Le), 7, 8),
    ("add", InfixOp::Bin(BinOp::Add), 9, 10),
    ("sub", InfixOp::Bin(BinOp::Sub), 9, 10),
    ("mul", InfixOp::Bin(BinOp::Mul), 11, 12),
    ("div", InfixOp::Bin(BinOp::Div), 11, 12),
    ("divby", InfixOp::Bin(BinOp::DivBy), 11, 12),
    ("mod", InfixOp::Bin(BinOp::Mod), 11, 12),
    ("has", InfixOp::Bin(BinOp::Has), 15, 16),
    ("in", InfixOp::In, 15, 16),
];

/// An infix operator: a binary operator, or `in` with its list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InfixOp {
    Bin(BinOp),
    In,
}

/// The built-in functions, with how many arguments each takes (min, max).
pub const FUNCTIONS: &[(&str, usize, usize)] = &[
    ("contains", 2, 2),
    ("startswith", 2, 2),
    ("endswith", 2, 2),
    ("length", 1, 1),
    ("indexof", 2, 2),
    ("substring", 2, 3),
    ("tolower", 1, 1),
    ("toupper", 1, 1),
    ("trim", 1, 1),
    ("concat", 2, 2),
    ("matchesPattern", 2, 2),
    ("year", 1, 1),
    ("month", 1, 1),
    ("day", 1, 1),
    ("hour", 1, 1),
    ("minute", 1, 1),
    ("second", 1, 1),
    ("fractionalseconds", 1, 1),
    ("totalseconds", 1, 1),
    ("date", 1, 1),
    ("time", 1, 1),
    ("totaloffsetminutes", 1, 1),
    ("now", 0, 0),
    ("mindatetime", 0, 0),
    ("maxdatetime", 0, 0),
    ("round", 1, 1),
    ("floor", 1, 1),
    ("ceiling", 1, 1),
    ("cast", 1, 2),
    ("isof", 1, 2),
    ("hassubset", 2, 2),
    ("hassubsequence", 2, 2),
];

/// Parses a `$filter` expression (the text after URL decoding).
pub fn parse_filter(input: &str) -> Result<Expr, ParseError> {
    let tokens = tokenize(input)?;
    let mut p = Parser {
        tokens,
        pos: 0,
        depth: 0,
        chain: 0,
        logical: 0,
    };
    if p.peek().tok == Tok::Eof {
        return Err(ParseError::new(0, "an expression", "end of input"));
    }
    let e = p.expr_bp(0)?;
    let t = p.peek();
    if t.tok != Tok::Eof {
        return Err(p.unexpected(t, "an operator or the end of the filter"));
    }
    Ok(e)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    /// Levels of `expr_bp` recursion.
    depth: usize,
    /// Operators other than `and`/`or` chained at the levels now open: each adds one
    /// level to the tree, so depth plus chain bounds it (conservatively).
    chain: usize,
    /// `and`/`or` operators so far.
    logical: usize,
}

impl Parser {
    /// The current token. The list always ends with `Eof`, and `bump` never moves past
    /// it, so there is always one.
    fn peek(&self) -> &Token {
        &self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    /// Takes the current token and moves on. Tokens are read once, so it is moved out
    /// rather than cloned; `Eof` stays in place.
    fn bump(&mut self) -> Token {
        if self.pos + 1 >= self.tokens.len() {
            return self.peek().clone();
        }
        let placeholder = Token {
            tok: Tok::Eof,
            span: self.tokens[self.pos].span,
            space_before: false,
        };
        let t = std::mem::replace(&mut self.tokens[self.pos], placeholder);
        self.pos += 1;
        t
    }

    fn unexpected(&self, t: &Token, expected: &str) -> ParseError {
        ParseError::new(t.span.start, expected, t.tok.describe())
    }

    fn expect(&mut self, tok: &Tok, expected: &str) -> Result<Token, ParseError> {
        let t = self.peek();
        if &t.tok == tok {
            Ok(self.bump())
        } else {
            Err(self.unexpected(t, expected))
        }
    }

    /// Precedence climbing: an operand, then every infix operator binding at least
    /// `min_bp`.
    fn expr_bp(&mut self, min_bp: u8) -> Result<Expr, ParseError> {
        self.depth += 1;
        if self.depth + self.chain > MAX_DEPTH {
            return Err(ParseError {
                offset: self.peek().span.start,
                kind: ParseErrorKind::TooDeep { limit: MAX_DEPTH },
            });
        }
        let mut left = self.prefix()?;
        let mut level_chain = 0;
        loop {
            let t = self.peek();
            let Tok::Name(word) = &t.tok else { break };
            let Some(&(_, op, lbp, rbp)) =
                INFIX.iter().find(|(w, ..)| w.eq_ignore_ascii_case(word))
            else {
                break;
            };
            if lbp < min_bp {
                break;
            }
            let at = t.span.start;
            if matches!(op, InfixOp::Bin(BinOp::And | BinOp::Or)) {
                self.logical += 1;
                if self.logical > MAX_LOGICAL {
                    return Err(ParseError {
                        offset: at,
                        kind: ParseErrorKind::TooManyTerms { limit: MAX_LOGICAL },
                    });
                }
            } else {
                level_chain += 1;
                self.chain += 1;
                if self.depth + self.chain > MAX_DEPTH {
                    return Err(ParseError {
                        offset: at,
                        kind: ParseErrorKind::TooDeep { limit: MAX_DEPTH },
                    });
                }
            }
            self.bump();
            left = match op {
                InfixOp::Bin(op) => {
                    let right = self.expr_bp(rbp)?;
                    let span = Span {
                        start: left.span.start,
                        end: right.span.end,
                    };
                    Expr {
                        kind: ExprKind::Binary {
                            op,
                            left: Box::new(left),
                            right: Box::new(right),
                        },
                        span,
                    }
                }
                InfixOp::In => self.in_list(left)?,
            };
        }
        self.chain -= level_chain;
        self.depth -= 1;
        Ok(left)
    }

    /// The right side of `in`: `(a, b)`, `[a, b]`, or one parenthesised expression.
    fn in_list(&mut self, left: Expr) -> Result<Expr, ParseError> {
        let open = self.bump();
        let close = match open.tok {
            Tok::LParen => Tok::RParen,
            Tok::LBracket => Tok::RBracket,
            _ => return Err(self.unexpected(&open, "'(' or '[' after 'in'")),
        };
        let mut list = Vec::new();
        if self.peek().tok != close {
            let first = self.expr_bp(0)?;
            let literal = matches!(first.kind, ExprKind::Literal(_));
            list.push(first);
            while self.peek().tok == Tok::Comma {
                let comma = self.peek();
                if !literal {
                    return Err(
                        self.unexpected(comma, "')' (a list after 'in' holds only literals)")
                    );
                }
                self.bump();
                let item = self.expr_bp(0)?;
                if !matches!(item.kind, ExprKind::Literal(_)) {
                    return Err(ParseError::new(
                        item.span.start,
                        "a literal in the list after 'in'",
                        "an expression",
                    ));
                }
                list.push(item);
            }
        }
        let end = self.expect(
            &close,
            if close == Tok::RParen {
                "')' or ','"
            } else {
                "']' or ','"
            },
        )?;
        let span = Span {
            start: left.span.start,
            end: end.span.end,
        };
        Ok(Expr {
            kind: ExprKind::In {
                expr: Box::new(left),
                list,
            },
            span,
        })
    }

    fn prefix(&mut self) -> Result<Expr, ParseError> {
        let t = self.bump();
        let span = t.span;
        let lit = |l: Literal| {
            Ok(Expr {
                kind: ExprKind::Literal(l),
                span,
            })
        };
        match t.tok {
            Tok::Str { value, .. } => lit(Literal::Str(value)),
            Tok::Number(n) => lit(number(&n)),
            Tok::Date(d) => lit(Literal::Date(d)),
            Tok::DateTime { text, .. } => lit(Literal::DateTime(text)),
            Tok::TimeOfDay(d) => lit(Literal::TimeOfDay(d)),
            Tok::Guid(g) => lit(Literal::Guid(g)),
            Tok::Typed { prefix, body } => lit(typed(&prefix, body, span)?),
            Tok::Alias(a) => Ok(Expr {
                kind: ExprKind::Alias(a),
                span,
            }),
            Tok::Minus => self.unary(UnOp::Neg, span),
            Tok::LParen => {
                let inner = self.expr_bp(0)?;
                let close = self.expect(&Tok::RParen, "')'")?;
                Ok(Expr {
                    kind: inner.kind,
                    span: Span {
                        start: span.start,
                        end: close.span.end,
                    },
                })
            }
            Tok::Name(name) => self.name(name, span),
            Tok::LBracket => Err(ParseError::new(
                span.start,
                "an expression (a JSON array is only supported right of 'in')",
                "'['",
            )),
            other => Err(ParseError::new(
                span.start,
                "an expression",
                other.describe(),
            )),
        }
    }

    fn unary(&mut self, op: UnOp, span: Span) -> Result<Expr, ParseError> {
        let expr = self.expr_bp(PREFIX_BP)?;
        let end = expr.span.end;
        Ok(Expr {
            kind: ExprKind::Unary {
                op,
                expr: Box::new(expr),
            },
            span: Span {
                start: span.start,
                end,
            },
        })
    }

    /// A name in operand position: a keyword literal, `not`, a function call, or a
    /// member path (possibly ending in a lambda).
    fn name(&mut self, name: String, span: Span) -> Result<Expr, ParseError> {
        let lit = |l: Literal| {
            Ok(Expr {
                kind: ExprKind::Literal(l),
                span,
            })
        };
        if name == "null" {
            return lit(Literal::Null);
        }
        if name.eq_ignore_ascii_case("true") {
            return lit(Literal::Bool(true));
        }
        if name.eq_ignore_ascii_case("false") {
            return lit(Literal::Bool(false));
        }
        if name.eq_ignore_ascii_case("not") && self.peek().tok != Tok::Slash {
            return self.unary(UnOp::Not, span);
        }
        if self.peek().tok == Tok::LParen {
            if name.eq_ignore_ascii_case("any") || name.eq_ignore_ascii_case("all") {
                let t = self.peek();
                return Err(self.unexpected(
                    t,
                    "a collection path before any/all (like machineTags/any(...))",
                ));
            }
            return self.call(name, span);
        }
        if name.contains('.') && !name.starts_with('$') {
            let end = self.peek();
            return Err(self.unexpected(end, "'(' after a qualified function name"));
        }
        self.path(name, span)
    }

    fn call(&mut self, name: String, span: Span) -> Result<Expr, ParseError> {
        let known = FUNCTIONS
            .iter()
            .find(|(f, ..)| f.eq_ignore_ascii_case(&name));
        let name = match known {
            Some((f, ..)) => (*f).to_string(),
            None if name.contains('.') => name,
            None => {
                return Err(ParseError {
                    offset: span.start,
                    kind: ParseErrorKind::UnknownFunction {
                        name: name.clone(),
                        suggestion: super::suggest(&name, FUNCTIONS.iter().map(|f| f.0)),
                    },
                });
            }
        };
        self.bump();
        let mut args = Vec::new();
        if self.peek().tok != Tok::RParen {
            loop {
                // A type name (`Edm.String` in cast and isof) stands alone as an
                // argument; it is kept as a one-segment path.
                let next = self.tokens.get(self.pos + 1).map(|t| &t.tok);
                let type_arg = matches!(
                    (&self.peek().tok, next),
                    (Tok::Name(n), Some(Tok::RParen | Tok::Comma)) if (name == "cast" || name == "isof") && n.contains('.')
                );
                if type_arg {
                    let t = self.bump();
                    if let Tok::Name(type_name) = t.tok {
                        args.push(Expr {
                            kind: ExprKind::Path(vec![type_name]),
                            span: t.span,
                        });
                    }
                } else {
                    args.push(self.expr_bp(0)?);
                }
                if self.peek().tok == Tok::Comma {
                    self.bump();
                } else {
                    break;
                }
            }
        }
        let close = self.expect(&Tok::RParen, "',' or ')'")?;
        if let Some((f, min, max)) = known
            && (args.len() < *min || args.len() > *max)
        {
            return Err(ParseError {
                offset: span.start,
                kind: ParseErrorKind::Arity {
                    function: (*f).to_string(),
                    min: *min,
                    max: *max,
                    found: args.len(),
                },
            });
        }
        Ok(Expr {
            kind: ExprKind::Call { name, args },
            span: Span {
                start: span.start,
                end: close.span.end,
            },
        })
    }

    /// `a/b/c`, possibly ending in `/any(...)` or `/all(...)`.
    fn path(&mut self, first: String, span: Span) -> Result<Expr, ParseError> {
        let mut segments = vec![first];
        let mut end = span.end;
        while self.peek().tok == Tok::Slash {
            self.bump();
            let t = self.bump();
            let Tok::Name(seg) = t.tok.clone() else {
                return Err(self.unexpected(&t, "a property name after '/'"));
            };
            let kind = if seg == "any" {
                Some(LambdaKind::Any)
            } else if seg == "all" {
                Some(LambdaKind::All)
            } else {
                None
            };
            if let Some(kind) = kind
                && self.peek().tok == Tok::LParen
            {
                return self.lambda(segments, kind, span);
            }
            end = t.span.end;
            segments.push(seg);
        }
        Ok(Expr {
            kind: ExprKind::Path(segments),
            span: Span {
                start: span.start,
                end,
            },
        })
    }

    fn lambda(
        &mut self,
        path: Vec<String>,
        kind: LambdaKind,
        span: Span,
    ) -> Result<Expr, ParseError> {
        self.bump();
        let (var, body) = if self.peek().tok == Tok::RParen {
            if kind == LambdaKind::All {
                let t = self.peek();
                return Err(self.unexpected(t, "a lambda (v: expression) inside all()"));
            }
            (None, None)
        } else {
            let t = self.bump();
            let Tok::Name(var) = t.tok.clone() else {
                return Err(self.unexpected(&t, "a lambda variable name"));
            };
            self.expect(&Tok::Colon, "':' after the lambda variable")?;
            let body = self.expr_bp(0)?;
            (Some(var), Some(Box::new(body)))
        };
        let close = self.expect(&Tok::RParen, "')' closing the lambda")?;
        Ok(Expr {
            kind: ExprKind::Lambda {
                path,
                kind,
                var,
                body,
            },
            span: Span {
                start: span.start,
                end: close.span.end,
            },
        })
    }
}

/// A number token as a literal: an `Int` when it is one and fits, else as written.
fn number(text: &str) -> Literal {
    let integral = text
        .bytes()
        .enumerate()
        .all(|(i, c)| c.is_ascii_digit() || (i == 0 && c == b'-'));
    match text.parse::<i64>() {
        Ok(i) if integral => Literal::Int(i),
        _ => Literal::Number(text.to_string()),
    }
}

/// `prefix'body'` as a literal.
fn typed(prefix: &str, body: String, span: Span) -> Result<Literal, ParseError> {
    let lower = prefix.to_ascii_lowercase();
    match lower.as_str() {
        "duration" => {
            super::value::check_duration(&body).map_err(|at| {
                ParseError::new(
                    span.start + prefix.len() + 1 + at,
                    "an ISO 8601 duration like P1DT2H",
                    "something else",
                )
            })?;
            Ok(Literal::Duration(body))
        }
        "binary" => {
            let ok = body.bytes().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'+' | b'/' | b'=')
            });
            if !ok {
                return Err(ParseError::new(
                    span.start,
                    "base64 in a binary literal",
                    "another character",
                ));
            }
            Ok(Literal::Binary(body))
        }
        "geography" | "geometry" => Ok(Literal::Geo {
            kind: lower,
            text: body,
        }),
        _ => Ok(Literal::Enum {
            type_name: prefix.to_string(),
            value: body,
        }),
    }
}
