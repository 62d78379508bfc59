//! Meaning: a `$filter` tree plus a table's schema becomes a DataFusion [`Expr`].
//!
//! Names are the API's property names (or the lake's column names), matched
//! case-insensitively. OData's rules are kept where SQL's differ:
//! - `eq`/`ne` treat null as a value: `null eq null` is true, `x ne 'a'` is true when
//!   `x` is null (SQL's `IS [NOT] DISTINCT FROM`);
//! - `gt ge lt le` with a null operand are false, never null, so `not` cannot turn
//!   them true;
//! - `indexof` and `substring` count from 0; `round` goes half away from zero;
//!   `contains`/`startswith`/`endswith` compare text, so `%` and `_` are plain
//!   characters;
//! - date-time literals are truncated to microseconds, as the lake stores times.
//!
//! `any`/`all` lambdas run their body per element through [`LambdaUdf`], a scalar
//! function holding the body compiled against the element's type.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, BooleanBuilder, RecordBatch};
use arrow::datatypes::{
    DataType, Field, Fields, IntervalMonthDayNano, Schema, SchemaRef, TimeUnit,
};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::execution::context::ExecutionProps;
use datafusion::functions::expr_fn as f;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{
    ColumnarValue, Expr, Operator, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility, binary_expr, cast, lit, when,
};
use datafusion::physical_expr::{PhysicalExpr, create_physical_expr};

use super::ast::{self, BinOp, ExprKind, LambdaKind, Literal, UnOp};
use super::lexer::Span;
use super::value;
use crate::schema::{IP_ADDRESS_PROPERTIES, Table, UTC, VM_METADATA_PROPERTIES, timestamp_type};

/// What went wrong giving a filter its meaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TranslateErrorKind {
    UnknownProperty {
        name: String,
        suggestion: Option<String>,
    },
    TypeMismatch {
        op: String,
        left: String,
        right: String,
    },
    Argument {
        function: String,
        position: usize,
        expected: &'static str,
        found: String,
    },
    NotBoolean {
        found: String,
    },
    Unsupported {
        what: String,
    },
    BadLiteral {
        literal: String,
    },
}

/// A translation error at a byte offset of the filter text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranslateError {
    pub offset: usize,
    pub kind: TranslateErrorKind,
}

impl fmt::Display for TranslateError {
    fn fmt(&self, fm: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            TranslateErrorKind::UnknownProperty { name, suggestion } => {
                write!(fm, "unknown property '{name}'")?;
                if let Some(s) = suggestion {
                    write!(fm, " (did you mean {s}?)")?;
                }
            }
            TranslateErrorKind::TypeMismatch { op, left, right } => {
                write!(fm, "'{op}' cannot take {left} and {right}")?
            }
            TranslateErrorKind::Argument {
                function,
                position,
                expected,
                found,
            } => write!(
                fm,
                "{function} expects {expected} as argument {position}, found {found}"
            )?,
            TranslateErrorKind::NotBoolean { found } => {
                write!(fm, "a filter must be true or false, found {found}")?
            }
            TranslateErrorKind::Unsupported { what } => write!(fm, "{what} is not supported")?,
            TranslateErrorKind::BadLiteral { literal } => {
                write!(fm, "literal {literal} is out of range")?
            }
        }
        write!(fm, " at byte {}", self.offset)
    }
}

impl std::error::Error for TranslateError {}

fn err(span: Span, kind: TranslateErrorKind) -> TranslateError {
    TranslateError {
        offset: span.start,
        kind,
    }
}

fn unsupported(span: Span, what: impl Into<String>) -> TranslateError {
    err(span, TranslateErrorKind::Unsupported { what: what.into() })
}

/// The OData type of a translated expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Ty {
    Null,
    Bool,
    Int,
    Num,
    Str,
    DateTime,
    Date,
    Time,
    Duration,
    StrList,
    /// A list of structs (`ipAddresses`), with the struct's fields.
    StructList(Fields),
    Struct(Fields),
    Other(DataType),
}

impl Ty {
    fn of(t: &DataType) -> Ty {
        match t {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Ty::Str,
            DataType::Boolean => Ty::Bool,
            DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => Ty::Int,
            DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => Ty::Int,
            DataType::Float32 | DataType::Float64 | DataType::Decimal128(..) => Ty::Num,
            DataType::Timestamp(..) => Ty::DateTime,
            DataType::Date32 | DataType::Date64 => Ty::Date,
            DataType::Time64(_) | DataType::Time32(_) => Ty::Time,
            DataType::Interval(_) | DataType::Duration(_) => Ty::Duration,
            DataType::List(f) | DataType::LargeList(f) => match f.data_type() {
                DataType::Struct(fields) => Ty::StructList(fields.clone()),
                t if Ty::of(t) == Ty::Str => Ty::StrList,
                other => Ty::Other(DataType::List(Arc::new(Field::new(
                    "item",
                    other.clone(),
                    true,
                )))),
            },
            DataType::Struct(fields) => Ty::Struct(fields.clone()),
            DataType::Null => Ty::Null,
            other => Ty::Other(other.clone()),
        }
    }

    /// The EDM name, for messages.
    pub fn edm(&self) -> String {
        match self {
            Ty::Null => "null".into(),
            Ty::Bool => "Edm.Boolean".into(),
            Ty::Int => "Edm.Int64".into(),
            Ty::Num => "Edm.Double".into(),
            Ty::Str => "Edm.String".into(),
            Ty::DateTime => "Edm.DateTimeOffset".into(),
            Ty::Date => "Edm.Date".into(),
            Ty::Time => "Edm.TimeOfDay".into(),
            Ty::Duration => "Edm.Duration".into(),
            Ty::StrList => "Collection(Edm.String)".into(),
            Ty::StructList(_) => "a collection of objects".into(),
            Ty::Struct(_) => "an object".into(),
            Ty::Other(t) => format!("{t}"),
        }
    }

    fn numeric(&self) -> bool {
        matches!(self, Ty::Int | Ty::Num)
    }
}

/// What names resolve against: a table's schema and its API names.
#[derive(Debug, Clone)]
pub struct Scope {
    table: Table,
    schema: SchemaRef,
}

impl Scope {
    /// Names of `table`, whose rows have `schema` (the latest or the history schema).
    pub fn new(table: Table, schema: SchemaRef) -> Self {
        Scope { table, schema }
    }

    /// The table.
    pub fn table(&self) -> Table {
        self.table
    }

    /// The column a property name means, with its type.
    pub fn resolve(&self, name: &str) -> Option<(String, DataType)> {
        let column = crate::schema::column_for_api_name(self.table, name)
            .map(str::to_string)
            .or_else(|| {
                self.schema
                    .fields()
                    .iter()
                    .find(|f| f.name().eq_ignore_ascii_case(name))
                    .map(|f| f.name().clone())
            })?;
        let field = self.schema.field_with_name(&column).ok()?;
        Some((column, field.data_type().clone()))
    }

    /// Every name a filter may use, for suggestions.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.table.properties().iter().map(|p| p.api).collect();
        names.extend(self.schema.fields().iter().map(|f| f.name().as_str()));
        names
    }
}

/// Translates a parsed filter for `scope`'s table. The result must be boolean.
pub fn to_expr(filter: &ast::Expr, scope: &Scope) -> Result<Expr, TranslateError> {
    let (e, ty) = Translator {
        scope,
        lambda: None,
    }
    .expr(filter)?;
    match ty {
        Ty::Bool | Ty::Null => Ok(e),
        other => Err(err(
            filter.span,
            TranslateErrorKind::NotBoolean { found: other.edm() },
        )),
    }
}

/// Translates any expression (for `$orderby`), returning it with its type.
pub fn to_value_expr(e: &ast::Expr, scope: &Scope) -> Result<(Expr, Ty), TranslateError> {
    Translator {
        scope,
        lambda: None,
    }
    .expr(e)
}

/// The element column of a lambda body.
const ELEMENT: &str = "__odata_element";

struct LambdaScope {
    var: String,
    element: DataType,
}

struct Translator<'a> {
    scope: &'a Scope,
    lambda: Option<LambdaScope>,
}

type Typed = (Expr, Ty);

/// A column by its exact name. DataFusion's `col()` parses its argument as a SQL
/// identifier, which costs more than the rest of a typical translation.
fn column(name: &str) -> Expr {
    Expr::Column(datafusion::common::Column::from_name(name))
}

fn ts_lit(micros: i64) -> Expr {
    lit(ScalarValue::TimestampMicrosecond(
        Some(micros),
        Some(UTC.into()),
    ))
}

fn api_subfield<'p>(props: &'p [crate::schema::Property], name: &str) -> Option<&'p str> {
    props
        .iter()
        .find(|p| p.api.eq_ignore_ascii_case(name) || p.column.eq_ignore_ascii_case(name))
        .map(|p| p.column)
}

impl Translator<'_> {
    fn expr(&self, e: &ast::Expr) -> Result<Typed, TranslateError> {
        match &e.kind {
            ExprKind::Literal(l) => literal(l, e.span),
            ExprKind::Path(p) => self.path(p, e.span),
            ExprKind::Alias(a) => Err(unsupported(e.span, format!("parameter alias @{a}"))),
            ExprKind::Binary { op, .. } if matches!(op, BinOp::And | BinOp::Or) => {
                self.logical(e, *op)
            }
            ExprKind::Binary { op, left, right } => {
                let l = self.expr(left)?;
                let r = self.expr(right)?;
                self.binary(*op, l, r, e.span)
            }
            ExprKind::Unary { op, expr } => {
                let (x, ty) = self.expr(expr)?;
                match (op, &ty) {
                    (UnOp::Not, Ty::Bool) => Ok((!x, Ty::Bool)),
                    (UnOp::Not, Ty::Null) => Ok((lit(ScalarValue::Boolean(None)), Ty::Bool)),
                    (UnOp::Neg, Ty::Int | Ty::Num | Ty::Duration) => Ok((-x, ty)),
                    (UnOp::Not, _) => Err(mismatch("not", &ty, &Ty::Bool, e.span)),
                    (UnOp::Neg, _) => Err(mismatch("-", &ty, &Ty::Num, e.span)),
                }
            }
            ExprKind::In { expr, list } => self.in_list(expr, list),
            ExprKind::Call { name, args } => self.call(name, args, e.span),
            ExprKind::Lambda {
                path,
                kind,
                var,
                body,
            } => self.lambda(path, *kind, var.as_deref(), body.as_deref(), e.span),
        }
    }

    /// `and`/`or` chains, flattened so a 1,000-term chain does not recurse 1,000 deep.
    fn logical(&self, e: &ast::Expr, op: BinOp) -> Result<Typed, TranslateError> {
        let mut operands = Vec::new();
        let mut stack = vec![e];
        while let Some(node) = stack.pop() {
            match &node.kind {
                ExprKind::Binary { op: o, left, right } if *o == op => {
                    stack.push(right);
                    stack.push(left);
                }
                _ => operands.push(node),
            }
        }
        let mut out: Option<Expr> = None;
        for operand in operands {
            let (x, ty) = self.expr(operand)?;
            let x = match ty {
                Ty::Bool => x,
                // A boolean null: `and`/`or` on an untyped null fails to evaluate.
                Ty::Null => lit(ScalarValue::Boolean(None)),
                _ => return Err(mismatch(op.word(), &ty, &Ty::Bool, operand.span)),
            };
            out = Some(match out {
                None => x,
                Some(acc) if op == BinOp::And => acc.and(x),
                Some(acc) => acc.or(x),
            });
        }
        Ok((out.unwrap_or_else(|| lit(op == BinOp::And)), Ty::Bool))
    }

    fn path(&self, p: &[String], span: Span) -> Result<Typed, TranslateError> {
        let first = &p[0];
        if first.starts_with('$') {
            return Err(unsupported(span, format!("{first} in a filter")));
        }
        // Inside a lambda, its variable names the element.
        if let Some(l) = &self.lambda
            && first == &l.var
        {
            let mut e = column(ELEMENT);
            let mut ty = l.element.clone();
            for seg in &p[1..] {
                (e, ty) = member(e, &ty, seg, span)?;
            }
            return Ok((e, Ty::of(&ty)));
        }
        let Some((name, mut ty)) = self.scope.resolve(first) else {
            let mut names = self.scope.names();
            if let Some(l) = &self.lambda {
                names.push(&l.var);
            }
            return Err(err(
                span,
                TranslateErrorKind::UnknownProperty {
                    name: first.clone(),
                    suggestion: super::suggest(first, names.into_iter()),
                },
            ));
        };
        if self.lambda.is_some() {
            return Err(unsupported(
                span,
                format!("'{first}' (a property outside the lambda variable) inside any/all"),
            ));
        }
        let mut e = column(&name);
        for seg in &p[1..] {
            (e, ty) = member(e, &ty, seg, span)?;
        }
        Ok((e, Ty::of(&ty)))
    }

    fn binary(
        &self,
        op: BinOp,
        (l, lt): Typed,
        (r, rt): Typed,
        span: Span,
    ) -> Result<Typed, TranslateError> {
        use BinOp::*;
        match op {
            Eq | Ne | Has => {
                let (l, r) = comparable(op.word(), l, &lt, r, &rt, span)?;
                let e = match (lt == Ty::Null, rt == Ty::Null, op) {
                    (true, true, Ne) => lit(false),
                    (true, true, _) => lit(true),
                    (_, true, Ne) => l.is_not_null(),
                    (_, true, _) => l.is_null(),
                    (true, _, Ne) => r.is_not_null(),
                    (true, _, _) => r.is_null(),
                    (_, _, Ne) => binary_expr(l, Operator::IsDistinctFrom, r),
                    _ => binary_expr(l, Operator::IsNotDistinctFrom, r),
                };
                Ok((e, Ty::Bool))
            }
            Gt | Ge | Lt | Le => {
                if lt == Ty::Null || rt == Ty::Null {
                    return Ok((lit(false), Ty::Bool));
                }
                let (l, r) = comparable(op.word(), l, &lt, r, &rt, span)?;
                let o = match op {
                    Gt => Operator::Gt,
                    Ge => Operator::GtEq,
                    Lt => Operator::Lt,
                    _ => Operator::LtEq,
                };
                // Null operands make the comparison false, not null.
                let mut e = binary_expr(l.clone(), o, r.clone());
                if !matches!(l, Expr::Literal(..)) {
                    e = e.and(l.is_not_null());
                }
                if !matches!(r, Expr::Literal(..)) {
                    e = e.and(r.is_not_null());
                }
                Ok((e, Ty::Bool))
            }
            Add | Sub | Mul | Div | DivBy | Mod => arithmetic(op, l, lt, r, rt, span),
            And | Or => unreachable_logical(span),
        }
    }

    fn in_list(&self, expr: &ast::Expr, list: &[ast::Expr]) -> Result<Typed, TranslateError> {
        let (x, xt) = self.expr(expr)?;
        let mut values = Vec::new();
        let mut has_null = false;
        for item in list {
            let (v, vt) = self.expr(item)?;
            if vt == Ty::Null {
                has_null = true;
                continue;
            }
            let (_, v) = comparable("in", x.clone(), &xt, v, &vt, item.span)?;
            values.push(v);
        }
        let mut e = if values.is_empty() {
            lit(false)
        } else {
            x.clone()
                .in_list(values, false)
                .and(x.clone().is_not_null())
        };
        if has_null {
            e = e.or(x.is_null());
        }
        Ok((e, Ty::Bool))
    }

    fn call(&self, name: &str, args: &[ast::Expr], span: Span) -> Result<Typed, TranslateError> {
        if name.contains('.') {
            return Err(unsupported(span, format!("function {name}")));
        }
        if name == "cast" || name == "isof" {
            return self.cast_or_isof(name, args, span);
        }
        let typed: Vec<Typed> = args
            .iter()
            .map(|a| self.expr(a))
            .collect::<Result<_, _>>()?;
        let want = |i: usize,
                    ok: &dyn Fn(&Ty) -> bool,
                    expected: &'static str|
         -> Result<Expr, TranslateError> {
            let (e, t) = &typed[i];
            if *t == Ty::Null {
                // A null of the type the function takes: DataFusion's functions do
                // not all accept an untyped null, and lambda bodies are not coerced.
                Ok(typed_null(expected))
            } else if ok(t) {
                Ok(e.clone())
            } else {
                Err(err(
                    args[i].span,
                    TranslateErrorKind::Argument {
                        function: name.to_string(),
                        position: i + 1,
                        expected,
                        found: format!("{} ({})", t.edm(), args[i]),
                    },
                ))
            }
        };
        let is_str = |t: &Ty| *t == Ty::Str;
        let is_num = |t: &Ty| t.numeric();
        let is_int = |t: &Ty| *t == Ty::Int;
        let is_dt = |t: &Ty| matches!(t, Ty::DateTime | Ty::Date);
        let is_dt_or_time = |t: &Ty| matches!(t, Ty::DateTime | Ty::Date | Ty::Time);
        let s = "a string";
        let int64 = |e: Expr| cast(e, DataType::Int64);
        Ok(match name {
            "contains" => (
                f::contains(want(0, &is_str, s)?, want(1, &is_str, s)?),
                Ty::Bool,
            ),
            "startswith" => (
                f::starts_with(want(0, &is_str, s)?, want(1, &is_str, s)?),
                Ty::Bool,
            ),
            "endswith" => (
                f::ends_with(want(0, &is_str, s)?, want(1, &is_str, s)?),
                Ty::Bool,
            ),
            "length" => match &typed[0].1 {
                Ty::StrList | Ty::StructList(_) => (
                    int64(datafusion::functions_nested::expr_fn::cardinality(
                        typed[0].0.clone(),
                    )),
                    Ty::Int,
                ),
                _ => (int64(f::character_length(want(0, &is_str, s)?)), Ty::Int),
            },
            "indexof" => (
                int64(f::strpos(want(0, &is_str, s)?, want(1, &is_str, s)?)) - lit(1i64),
                Ty::Int,
            ),
            "substring" => {
                let text = want(0, &is_str, s)?;
                let start = want(1, &is_int, "an integer")? + lit(1i64);
                let e = match typed.len() {
                    3 => f::substring(text, start, want(2, &is_int, "an integer")?),
                    _ => f::substr(text, start),
                };
                (e, Ty::Str)
            }
            "tolower" => (f::lower(want(0, &is_str, s)?), Ty::Str),
            "toupper" => (f::upper(want(0, &is_str, s)?), Ty::Str),
            "trim" => (f::btrim(vec![want(0, &is_str, s)?]), Ty::Str),
            "concat" => (
                binary_expr(
                    want(0, &is_str, s)?,
                    Operator::StringConcat,
                    want(1, &is_str, s)?,
                ),
                Ty::Str,
            ),
            "matchesPattern" => (
                f::regexp_like(want(0, &is_str, s)?, want(1, &is_str, s)?, None),
                Ty::Bool,
            ),
            "year" | "month" | "day" => {
                let x = want(0, &is_dt, "a date or date-time")?;
                (int64(f::date_part(lit(name), x)), Ty::Int)
            }
            "hour" | "minute" | "second" => {
                let x = want(0, &is_dt_or_time, "a date-time or time of day")?;
                (int64(f::date_part(lit(name), x)), Ty::Int)
            }
            "fractionalseconds" => {
                let x = want(0, &is_dt_or_time, "a date-time or time of day")?;
                let us = cast(f::date_part(lit("microsecond"), x), DataType::Float64);
                (
                    binary_expr(us, Operator::Modulo, lit(1_000_000f64)) / lit(1_000_000f64),
                    Ty::Num,
                )
            }
            "totalseconds" => match &args[0].kind {
                ExprKind::Literal(Literal::Duration(d)) => {
                    let us = value::duration_micros(d).map_err(|_| {
                        err(
                            args[0].span,
                            TranslateErrorKind::BadLiteral {
                                literal: args[0].to_string(),
                            },
                        )
                    })?;
                    (lit(us as f64 / 1e6), Ty::Num)
                }
                _ => {
                    return Err(unsupported(
                        span,
                        "totalseconds of anything but a duration literal",
                    ));
                }
            },
            "date" => (
                cast(want(0, &is_dt, "a date-time")?, DataType::Date32),
                Ty::Date,
            ),
            "time" => (
                cast(
                    want(0, &is_dt, "a date-time")?,
                    DataType::Time64(TimeUnit::Microsecond),
                ),
                Ty::Time,
            ),
            "totaloffsetminutes" => {
                let x = want(0, &is_dt, "a date-time")?;
                // The lake stores every time in UTC: the offset is 0 where there is a time.
                (
                    when(x.is_null(), lit(ScalarValue::Int64(None)))
                        .otherwise(lit(0i64))
                        .map_err(|_| unsupported(span, "totaloffsetminutes"))?,
                    Ty::Int,
                )
            }
            "now" => (f::now(), Ty::DateTime),
            "mindatetime" => (ts_lit(-62_135_596_800_000_000), Ty::DateTime),
            "maxdatetime" => (ts_lit(253_402_300_799_999_999), Ty::DateTime),
            "round" | "floor" | "ceiling" => {
                let x = want(0, &is_num, "a number")?;
                if typed[0].1 == Ty::Int {
                    (x, Ty::Int)
                } else {
                    let e = match name {
                        "round" => f::round(vec![x]),
                        "floor" => f::floor(x),
                        _ => f::ceil(x),
                    };
                    (e, Ty::Num)
                }
            }
            other => return Err(unsupported(span, format!("function {other}"))),
        })
    }

    fn cast_or_isof(
        &self,
        name: &str,
        args: &[ast::Expr],
        span: Span,
    ) -> Result<Typed, TranslateError> {
        let [value, ty] = args else {
            return Err(unsupported(
                span,
                format!("{name} of the current instance (one argument)"),
            ));
        };
        let type_name = match &ty.kind {
            ExprKind::Path(p) if p.len() == 1 => p[0].clone(),
            _ => return Err(unsupported(ty.span, format!("{name} to {ty}"))),
        };
        let target = match type_name.as_str() {
            "Edm.String" => (DataType::Utf8, Ty::Str),
            "Edm.Boolean" => (DataType::Boolean, Ty::Bool),
            "Edm.Byte" | "Edm.SByte" | "Edm.Int16" | "Edm.Int32" | "Edm.Int64" => {
                (DataType::Int64, Ty::Int)
            }
            "Edm.Double" | "Edm.Single" | "Edm.Decimal" => (DataType::Float64, Ty::Num),
            "Edm.DateTimeOffset" => (timestamp_type(), Ty::DateTime),
            "Edm.Date" => (DataType::Date32, Ty::Date),
            "Edm.TimeOfDay" => (DataType::Time64(TimeUnit::Microsecond), Ty::Time),
            _ => return Err(unsupported(ty.span, format!("type {type_name}"))),
        };
        let (x, xt) = self.expr(value)?;
        if name == "isof" {
            let same = xt == target.1
                || (xt == Ty::Int && target.1 == Ty::Num && type_name != "Edm.Double");
            return Ok((lit(same && xt != Ty::Null), Ty::Bool));
        }
        Ok((cast(x, target.0), target.1))
    }

    fn lambda(
        &self,
        path: &[String],
        kind: LambdaKind,
        var: Option<&str>,
        body: Option<&ast::Expr>,
        span: Span,
    ) -> Result<Typed, TranslateError> {
        let path_span = Span {
            start: span.start,
            end: span.start + path.join("/").len(),
        };
        let (list, list_ty) = self.path(path, path_span)?;
        let element = match &list_ty {
            Ty::StrList => DataType::Utf8,
            Ty::StructList(fields) => DataType::Struct(fields.clone()),
            other => {
                return Err(err(
                    path_span,
                    TranslateErrorKind::Argument {
                        function: if kind == LambdaKind::Any {
                            "any".into()
                        } else {
                            "all".into()
                        },
                        position: 0,
                        expected: "a collection",
                        found: other.edm(),
                    },
                ));
            }
        };
        let compiled = match (var, body) {
            (Some(var), Some(body)) => {
                let inner = Translator {
                    scope: self.scope,
                    lambda: Some(LambdaScope {
                        var: var.to_string(),
                        element: element.clone(),
                    }),
                };
                let (b, bt) = inner.expr(body)?;
                if !matches!(bt, Ty::Bool | Ty::Null) {
                    return Err(err(
                        body.span,
                        TranslateErrorKind::NotBoolean { found: bt.edm() },
                    ));
                }
                let schema = Schema::new(vec![Field::new(ELEMENT, element, true)]);
                let df_schema = DFSchema::try_from(schema.clone())
                    .map_err(|_| unsupported(body.span, "this lambda body"))?;
                let physical = create_physical_expr(
                    &b,
                    &df_schema,
                    &ExecutionProps::new(),
                    &PhysicalPlanningContext::default(),
                )
                .map_err(|e| unsupported(body.span, format!("this lambda body ({e})")))?;
                Some((physical, Arc::new(schema)))
            }
            _ => None,
        };
        let key = format!(
            "odata_{}({})",
            if kind == LambdaKind::Any {
                "any"
            } else {
                "all"
            },
            body.map(|b| format!("{}:{b}", var.unwrap_or_default()))
                .unwrap_or_default()
        );
        let udf = ScalarUDF::from(LambdaUdf {
            key,
            kind,
            body: compiled,
            signature: Signature::any(1, Volatility::Immutable),
        });
        Ok((udf.call(vec![list]), Ty::Bool))
    }
}

/// A null of the type an argument description names.
fn typed_null(expected: &str) -> Expr {
    let value = match expected {
        "a string" => ScalarValue::Utf8(None),
        "a number" => ScalarValue::Float64(None),
        "an integer" => ScalarValue::Int64(None),
        _ => ScalarValue::TimestampMicrosecond(None, Some(UTC.into())),
    };
    lit(value)
}

fn unreachable_logical(span: Span) -> Result<Typed, TranslateError> {
    Err(unsupported(span, "this logical operator"))
}

/// `base/segment`: a struct field by API or column name.
fn member(
    base: Expr,
    ty: &DataType,
    seg: &str,
    span: Span,
) -> Result<(Expr, DataType), TranslateError> {
    let DataType::Struct(fields) = ty else {
        return Err(unsupported(
            span,
            format!("'/{seg}' on {}", Ty::of(ty).edm()),
        ));
    };
    let props = if fields.iter().any(|f| f.name() == "vm_id") {
        VM_METADATA_PROPERTIES
    } else {
        IP_ADDRESS_PROPERTIES
    };
    let name = api_subfield(props, seg).map(str::to_string).or_else(|| {
        fields
            .iter()
            .find(|f| f.name().eq_ignore_ascii_case(seg))
            .map(|f| f.name().clone())
    });
    let Some(name) = name else {
        return Err(err(
            span,
            TranslateErrorKind::UnknownProperty {
                name: seg.to_string(),
                suggestion: super::suggest(seg, props.iter().map(|p| p.api)),
            },
        ));
    };
    let field = fields
        .iter()
        .find(|f| f.name() == &name)
        .map(|f| f.data_type().clone())
        .unwrap_or(DataType::Utf8);
    Ok((f::get_field(base, name.as_str()), field))
}

fn mismatch(op: &str, l: &Ty, r: &Ty, span: Span) -> TranslateError {
    err(
        span,
        TranslateErrorKind::TypeMismatch {
            op: op.to_string(),
            left: l.edm(),
            right: r.edm(),
        },
    )
}

/// Makes two operands comparable: numbers with numbers, dates with date-times
/// (midnight UTC), strings with strings; anything with null.
fn comparable(
    op: &str,
    l: Expr,
    lt: &Ty,
    r: Expr,
    rt: &Ty,
    span: Span,
) -> Result<(Expr, Expr), TranslateError> {
    use Ty::*;
    match (lt, rt) {
        (Null, _) | (_, Null) => Ok((l, r)),
        (a, b) if a == b && !matches!(a, StrList | StructList(_) | Struct(_)) => Ok((l, r)),
        (Int, Num) => Ok((cast(l, DataType::Float64), r)),
        (Num, Int) => Ok((l, cast(r, DataType::Float64))),
        (DateTime, Date) => Ok((l, cast(r, timestamp_type()))),
        (Date, DateTime) => Ok((cast(l, timestamp_type()), r)),
        _ => Err(mismatch(op, lt, rt, span)),
    }
}

fn arithmetic(
    op: BinOp,
    l: Expr,
    lt: Ty,
    r: Expr,
    rt: Ty,
    span: Span,
) -> Result<Typed, TranslateError> {
    use Ty::*;
    let o = match op {
        BinOp::Add => Operator::Plus,
        BinOp::Sub => Operator::Minus,
        BinOp::Mul => Operator::Multiply,
        BinOp::Mod => Operator::Modulo,
        _ => Operator::Divide,
    };
    match (&lt, &rt) {
        (Int, Int) if op == BinOp::DivBy => Ok((
            binary_expr(cast(l, DataType::Float64), o, cast(r, DataType::Float64)),
            Num,
        )),
        (Int, Int) => Ok((binary_expr(l, o, r), Int)),
        (a, b) if a.numeric() && b.numeric() => Ok((
            binary_expr(cast(l, DataType::Float64), o, cast(r, DataType::Float64)),
            Num,
        )),
        (DateTime | Date, Duration) if matches!(op, BinOp::Add | BinOp::Sub) => Ok((
            binary_expr(l, o, r),
            if lt == Date { Date } else { DateTime },
        )),
        (Duration, DateTime) if op == BinOp::Add => Ok((binary_expr(r, o, l), DateTime)),
        (Duration, Duration) if matches!(op, BinOp::Add | BinOp::Sub) => {
            Ok((binary_expr(l, o, r), Duration))
        }
        (Null, _) | (_, Null) => Ok((lit(ScalarValue::Null), Null)),
        _ => Err(mismatch(op.word(), &lt, &rt, span)),
    }
}

fn literal(l: &Literal, span: Span) -> Result<Typed, TranslateError> {
    let bad = || {
        err(
            span,
            TranslateErrorKind::BadLiteral {
                literal: l.to_string(),
            },
        )
    };
    Ok(match l {
        Literal::Null => (lit(ScalarValue::Null), Ty::Null),
        Literal::Bool(b) => (lit(*b), Ty::Bool),
        Literal::Int(i) => (lit(*i), Ty::Int),
        Literal::Number(n) => {
            let v: f64 = match n.as_str() {
                "INF" => f64::INFINITY,
                "-INF" => f64::NEG_INFINITY,
                "NaN" => f64::NAN,
                other => other.parse().map_err(|_| bad())?,
            };
            (lit(v), Ty::Num)
        }
        Literal::Str(s) => (lit(s.as_str()), Ty::Str),
        Literal::Guid(g) => (lit(g.as_str()), Ty::Str),
        Literal::Enum { value, .. } => (lit(value.as_str()), Ty::Str),
        Literal::DateTime(t) => (
            ts_lit(value::datetime_micros(t).ok_or_else(bad)?),
            Ty::DateTime,
        ),
        Literal::Date(d) => (
            lit(ScalarValue::Date32(Some(
                value::date_days(d).ok_or_else(bad)?,
            ))),
            Ty::Date,
        ),
        Literal::TimeOfDay(t) => (
            lit(ScalarValue::Time64Microsecond(Some(
                value::time_micros(t).ok_or_else(bad)?,
            ))),
            Ty::Time,
        ),
        Literal::Duration(d) => {
            let us = value::duration_micros(d).map_err(|_| bad())?;
            (
                lit(ScalarValue::IntervalMonthDayNano(Some(
                    IntervalMonthDayNano::new(0, 0, us.saturating_mul(1000)),
                ))),
                Ty::Duration,
            )
        }
        Literal::Binary(_) => {
            return Err(unsupported(
                span,
                "a binary literal (no column holds binary data)",
            ));
        }
        Literal::Geo { kind, .. } => return Err(unsupported(span, format!("a {kind} literal"))),
    })
}

/// `any`/`all` over a list column: the body, compiled for one element, evaluated on
/// all elements of the batch at once, then folded per row.
#[derive(Debug)]
pub struct LambdaUdf {
    key: String,
    kind: LambdaKind,
    body: Option<(Arc<dyn PhysicalExpr>, SchemaRef)>,
    signature: Signature,
}

impl PartialEq for LambdaUdf {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for LambdaUdf {}

impl Hash for LambdaUdf {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key.hash(state);
    }
}

impl ScalarUDFImpl for LambdaUdf {
    fn name(&self) -> &str {
        &self.key
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        let rows = args.number_rows;
        let list: ArrayRef = match args.args.into_iter().next() {
            Some(ColumnarValue::Array(a)) => a,
            Some(ColumnarValue::Scalar(s)) => s.to_array_of_size(rows)?,
            None => return Ok(ColumnarValue::Scalar(ScalarValue::Boolean(None))),
        };
        let Some(list) = list.as_list_opt::<i32>() else {
            return datafusion::common::exec_err!(
                "{} expects a list, found {}",
                self.key,
                list.data_type()
            );
        };
        let offsets = list.value_offsets();
        let matched: Option<BooleanArray> = match &self.body {
            None => None,
            Some((expr, schema)) => {
                let values = list.values();
                let batch = RecordBatch::try_new(Arc::clone(schema), vec![Arc::clone(values)])?;
                let out = expr.evaluate(&batch)?.into_array(values.len())?;
                // A body of null type (`any(t: null)`) evaluates to a null array: no
                // element matches.
                match out.as_boolean_opt() {
                    Some(b) => Some(b.clone()),
                    None if out.data_type() == &DataType::Null => {
                        Some(BooleanArray::new_null(values.len()))
                    }
                    None => {
                        return datafusion::common::exec_err!(
                            "{} body gave {}, not a boolean",
                            self.key,
                            out.data_type()
                        );
                    }
                }
            }
        };
        let mut result = BooleanBuilder::with_capacity(list.len());
        for i in 0..list.len() {
            let (start, end) = (offsets[i] as usize, offsets[i + 1] as usize);
            let empty = list.is_null(i) || start == end;
            let v = match (&matched, self.kind) {
                (None, _) => !empty,
                (Some(_), LambdaKind::Any) if empty => false,
                (Some(_), LambdaKind::All) if empty => true,
                (Some(m), LambdaKind::Any) => (start..end).any(|j| m.is_valid(j) && m.value(j)),
                (Some(m), LambdaKind::All) => (start..end).all(|j| m.is_valid(j) && m.value(j)),
            };
            result.append_value(v);
        }
        Ok(ColumnarValue::Array(Arc::new(result.finish())))
    }
}
