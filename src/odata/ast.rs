//! The `$filter` syntax tree. `Display` writes the canonical form: every operation
//! parenthesised, operators lowercase, literals in the standard spelling, so that
//! `parse(x).to_string()` parses back to the same tree.

use std::fmt;

use super::lexer::Span;

/// A literal value, kept as written where the text is the value.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Null,
    Bool(bool),
    /// An integer that fits in 64 bits.
    Int(i64),
    /// A decimal or double, or an integer too large for 64 bits, as written.
    Number(String),
    Str(String),
    Date(String),
    DateTime(String),
    TimeOfDay(String),
    Guid(String),
    Duration(String),
    Binary(String),
    /// `Namespace.Type'Member'`.
    Enum {
        type_name: String,
        value: String,
    },
    /// `geography'...'` or `geometry'...'`.
    Geo {
        kind: String,
        text: String,
    },
}

/// Binary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Or,
    And,
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Has,
    Add,
    Sub,
    Mul,
    Div,
    DivBy,
    Mod,
}

impl BinOp {
    /// The operator's word.
    pub fn word(self) -> &'static str {
        match self {
            BinOp::Or => "or",
            BinOp::And => "and",
            BinOp::Eq => "eq",
            BinOp::Ne => "ne",
            BinOp::Gt => "gt",
            BinOp::Ge => "ge",
            BinOp::Lt => "lt",
            BinOp::Le => "le",
            BinOp::Has => "has",
            BinOp::Add => "add",
            BinOp::Sub => "sub",
            BinOp::Mul => "mul",
            BinOp::Div => "div",
            BinOp::DivBy => "divby",
            BinOp::Mod => "mod",
        }
    }
}

/// Unary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnOp {
    Not,
    Neg,
}

/// `any` or `all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LambdaKind {
    Any,
    All,
}

/// An expression with the span of input it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

/// What an expression is.
#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    Literal(Literal),
    /// A member path: `riskScore`, `ip/ipAddress`, `Address/Model.Type/Street`.
    Path(Vec<String>),
    /// `@alias`.
    Alias(String),
    Binary {
        op: BinOp,
        left: Box<Expr>,
        right: Box<Expr>,
    },
    Unary {
        op: UnOp,
        expr: Box<Expr>,
    },
    /// `name(args)`: built-in functions and qualified function calls.
    Call {
        name: String,
        args: Vec<Expr>,
    },
    /// `expr in (a, b)` or `expr in [a, b]`.
    In {
        expr: Box<Expr>,
        list: Vec<Expr>,
    },
    /// `path/any(v: body)`, `path/all(v: body)`, `path/any()`.
    Lambda {
        path: Vec<String>,
        kind: LambdaKind,
        var: Option<String>,
        body: Option<Box<Expr>>,
    },
}

impl Expr {
    /// Prints the tree as an S-expression, for tests of precedence.
    pub fn sexp(&self) -> String {
        match &self.kind {
            ExprKind::Literal(_) | ExprKind::Path(_) | ExprKind::Alias(_) => self.to_string(),
            ExprKind::Binary { op, left, right } => {
                format!("({} {} {})", op.word(), left.sexp(), right.sexp())
            }
            ExprKind::Unary { op, expr } => {
                let w = if *op == UnOp::Not { "not" } else { "-" };
                format!("({w} {})", expr.sexp())
            }
            ExprKind::Call { name, args } => {
                let args: Vec<String> = args.iter().map(Expr::sexp).collect();
                format!("({name} {})", args.join(" "))
            }
            ExprKind::In { expr, list } => {
                let items: Vec<String> = list.iter().map(Expr::sexp).collect();
                format!("(in {} [{}])", expr.sexp(), items.join(" "))
            }
            ExprKind::Lambda { .. } => self.to_string(),
        }
    }
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Null => f.write_str("null"),
            Literal::Bool(b) => write!(f, "{b}"),
            Literal::Int(i) => write!(f, "{i}"),
            Literal::Number(n) => f.write_str(n),
            Literal::Str(s) => f.write_str(&quote(s)),
            Literal::Date(d) | Literal::DateTime(d) | Literal::TimeOfDay(d) | Literal::Guid(d) => {
                f.write_str(d)
            }
            Literal::Duration(d) => write!(f, "duration{}", quote(d)),
            Literal::Binary(b) => write!(f, "binary{}", quote(b)),
            Literal::Enum { type_name, value } => write!(f, "{type_name}{}", quote(value)),
            Literal::Geo { kind, text } => write!(f, "{kind}{}", quote(text)),
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ExprKind::Literal(l) => write!(f, "{l}"),
            ExprKind::Path(p) => f.write_str(&p.join("/")),
            ExprKind::Alias(a) => write!(f, "@{a}"),
            ExprKind::Binary { .. } => {
                // A chain `a or b or c` is a tree as deep as it is long (up to the
                // parser's `MAX_LOGICAL`): walk its left spine in a loop rather than
                // recursing once per operator.
                let mut spine = Vec::new();
                let mut node = self;
                while let ExprKind::Binary { op, left, right } = &node.kind {
                    spine.push((*op, right));
                    node = left;
                }
                for _ in 0..spine.len() {
                    f.write_str("(")?;
                }
                write!(f, "{node}")?;
                for (op, right) in spine.iter().rev() {
                    write!(f, " {} {right})", op.word())?;
                }
                Ok(())
            }
            ExprKind::Unary {
                op: UnOp::Not,
                expr,
            } => write!(f, "(not {expr})"),
            // A space keeps `- 5` from reading back as the literal `-5`.
            ExprKind::Unary {
                op: UnOp::Neg,
                expr,
            } => match expr.kind {
                ExprKind::Literal(Literal::Int(_) | Literal::Number(_)) => write!(f, "(- {expr})"),
                _ => write!(f, "(-{expr})"),
            },
            ExprKind::Call { name, args } => {
                write!(f, "{name}(")?;
                for (i, a) in args.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{a}")?;
                }
                f.write_str(")")
            }
            ExprKind::In { expr, list } => {
                write!(f, "({expr} in (")?;
                for (i, a) in list.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{a}")?;
                }
                f.write_str("))")
            }
            ExprKind::Lambda {
                path,
                kind,
                var,
                body,
            } => {
                let k = if *kind == LambdaKind::Any {
                    "any"
                } else {
                    "all"
                };
                write!(f, "{}/{k}(", path.join("/"))?;
                if let (Some(v), Some(b)) = (var, body) {
                    write!(f, "{v}:{b}")?;
                }
                f.write_str(")")
            }
        }
    }
}
