//! The `$filter` lexer: text in, tokens with byte spans out. It knows literals, names and
//! punctuation; which names are operators is the parser's business, so a property
//! called `order` or a string `'freeland'` is never mistaken for a keyword.
//!
//! Literal forms: `null`, `true`/`false` (any case), integers, decimals, doubles
//! (`1e10`, `INF`, `NaN`), `'strings'` with `''`, dates, date-times (any number of
//! fractional digits, `Z` or an offset), times of day, GUIDs, and typed literals
//! (`duration'P1D'`, `binary'..'`, `Namespace.Enum'Member'`). Forms the live service
//! accepts outside the standard: `2018-08-01Z`, `"double-quoted"` strings, and
//! unquoted GUIDs (which the standard allows anyway).

use super::ParseError;

/// A byte range of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

/// What a token is.
#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    /// A name: `riskScore`, `and`, `Edm.String`, `$it`.
    Name(String),
    /// `@alias`.
    Alias(String),
    /// A quoted string, unescaped; `double` when written with `"`.
    Str {
        value: String,
        double: bool,
    },
    /// A number as written (sign included, a leading `+` dropped).
    Number(String),
    Date(String),
    /// A date-time; `quirk` when written as `2018-08-01Z`.
    DateTime {
        text: String,
        quirk: bool,
    },
    TimeOfDay(String),
    Guid(String),
    /// `prefix'body'`: duration, binary, geography, an enumeration member.
    Typed {
        prefix: String,
        body: String,
    },
    LParen,
    RParen,
    LBracket,
    RBracket,
    LBrace,
    RBrace,
    Comma,
    Colon,
    Slash,
    Minus,
    Eof,
}

impl Tok {
    /// How the token is named in "expected X, found Y".
    pub fn describe(&self) -> String {
        match self {
            Tok::Name(n) => format!("'{n}'"),
            Tok::Alias(a) => format!("'@{a}'"),
            Tok::Str { .. } => "a string".into(),
            Tok::Number(n) => format!("number {n}"),
            Tok::Date(_) | Tok::DateTime { .. } | Tok::TimeOfDay(_) => "a date/time literal".into(),
            Tok::Guid(_) => "a GUID".into(),
            Tok::Typed { prefix, .. } => format!("a {prefix} literal"),
            Tok::LParen => "'('".into(),
            Tok::RParen => "')'".into(),
            Tok::LBracket => "'['".into(),
            Tok::RBracket => "']'".into(),
            Tok::LBrace => "'{'".into(),
            Tok::RBrace => "'}'".into(),
            Tok::Comma => "','".into(),
            Tok::Colon => "':'".into(),
            Tok::Slash => "'/'".into(),
            Tok::Minus => "'-'".into(),
            Tok::Eof => "end of input".into(),
        }
    }
}

/// A token and where it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    pub tok: Tok,
    pub span: Span,
    /// Whitespace stands right before it.
    pub space_before: bool,
}

/// Splits `input` into tokens, ending with `Eof`.
pub fn tokenize(input: &str) -> Result<Vec<Token>, ParseError> {
    let mut lx = Lexer {
        s: input.as_bytes(),
        text: input,
        pos: 0,
    };
    let mut out = Vec::new();
    loop {
        let before = lx.pos;
        lx.skip_space();
        let space_before = lx.pos > before;
        let start = lx.pos;
        let tok = lx.next_tok()?;
        let eof = tok == Tok::Eof;
        out.push(Token {
            tok,
            span: Span { start, end: lx.pos },
            space_before,
        });
        if eof {
            return Ok(out);
        }
    }
}

struct Lexer<'a> {
    s: &'a [u8],
    text: &'a str,
    pos: usize,
}

fn is_name_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

fn is_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80
}

impl Lexer<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn at(&self, i: usize) -> Option<u8> {
        self.s.get(i).copied()
    }

    fn skip_space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    fn err(&self, at: usize, expected: &str, found: Option<String>) -> ParseError {
        let found = found.unwrap_or_else(|| self.found_at(at));
        ParseError::new(at, expected, found)
    }

    fn found_at(&self, at: usize) -> String {
        match self.text.get(at..).and_then(|r| r.chars().next()) {
            Some(c) => format!("'{c}'"),
            None => "end of input".into(),
        }
    }

    fn next_tok(&mut self) -> Result<Tok, ParseError> {
        let Some(c) = self.peek() else {
            return Ok(Tok::Eof);
        };
        let start = self.pos;
        let single = |lx: &mut Self, t: Tok| {
            lx.pos += 1;
            Ok(t)
        };
        match c {
            b'(' => single(self, Tok::LParen),
            b')' => single(self, Tok::RParen),
            b'[' => single(self, Tok::LBracket),
            b']' => single(self, Tok::RBracket),
            b'{' => single(self, Tok::LBrace),
            b'}' => single(self, Tok::RBrace),
            b',' => single(self, Tok::Comma),
            b':' => single(self, Tok::Colon),
            b'/' => single(self, Tok::Slash),
            b'\'' => {
                let value = self.quoted(b'\'')?;
                self.check_boundary()?;
                Ok(Tok::Str {
                    value,
                    double: false,
                })
            }
            b'"' => {
                let value = self.quoted(b'"')?;
                self.check_boundary()?;
                Ok(Tok::Str {
                    value,
                    double: true,
                })
            }
            b'@' => {
                self.pos += 1;
                let name = self.name_run();
                if name.is_empty() {
                    return Err(self.err(self.pos, "an alias name after '@'", None));
                }
                Ok(Tok::Alias(name))
            }
            b'$' => {
                self.pos += 1;
                let name = self.name_run();
                if name.is_empty() {
                    return Err(self.err(start, "a name after '$'", None));
                }
                Ok(Tok::Name(format!("${name}")))
            }
            b'-' | b'+' => {
                let next = self.at(start + 1);
                if next.is_some_and(|d| d.is_ascii_digit())
                    || self.s[start + 1..].starts_with(b"INF")
                {
                    self.number_or_date()
                } else if c == b'-' {
                    single(self, Tok::Minus)
                } else {
                    Err(self.err(start + 1, "a digit after '+'", None))
                }
            }
            b'0'..=b'9' => self.number_or_date(),
            c if is_name_start(c) => {
                if let Some(g) = self.guid()? {
                    return Ok(g);
                }
                self.name_or_typed()
            }
            _ => Err(self.err(start, "an expression", None)),
        }
    }

    fn name_run(&mut self) -> String {
        let start = self.pos;
        while self.peek().is_some_and(is_name_char) {
            self.pos += 1;
        }
        self.text[start..self.pos].to_string()
    }

    /// A name, possibly qualified with dots, or `prefix'body'`, `INF`, `NaN`.
    fn name_or_typed(&mut self) -> Result<Tok, ParseError> {
        let start = self.pos;
        let mut name = self.name_run();
        while self.peek() == Some(b'.') && self.at(self.pos + 1).is_some_and(is_name_start) {
            self.pos += 1;
            name.push('.');
            name.push_str(&self.name_run());
        }
        if self.peek() == Some(b'\'') {
            let body = self.quoted(b'\'')?;
            let known = ["duration", "binary", "geography", "geometry"];
            if !name.contains('.') && !known.iter().any(|k| k.eq_ignore_ascii_case(&name)) {
                return Err(self.err(
                    start,
                    "a literal type (duration, binary, or a qualified enumeration type)",
                    Some(format!("'{name}'")),
                ));
            }
            self.check_boundary()?;
            return Ok(Tok::Typed { prefix: name, body });
        }
        if name == "INF" || name == "NaN" {
            return Ok(Tok::Number(name));
        }
        Ok(Tok::Name(name))
    }

    /// A quoted text with the quote doubled inside; returns it unescaped.
    fn quoted(&mut self, q: u8) -> Result<String, ParseError> {
        let open = self.pos;
        self.pos += 1;
        let mut value = String::new();
        let mut run = self.pos;
        loop {
            match self.peek() {
                None => {
                    let what = if q == b'\'' {
                        "string literal"
                    } else {
                        "double-quoted string"
                    };
                    return Err(ParseError::unterminated(open, what));
                }
                Some(c) if c == q => {
                    value.push_str(&self.text[run..self.pos]);
                    if self.at(self.pos + 1) == Some(q) {
                        value.push(q as char);
                        self.pos += 2;
                        run = self.pos;
                    } else {
                        self.pos += 1;
                        return Ok(value);
                    }
                }
                Some(b'\\') if q == b'"' => {
                    value.push_str(&self.text[run..self.pos]);
                    match self.at(self.pos + 1) {
                        Some(c @ (b'"' | b'\\' | b'/')) => value.push(c as char),
                        Some(b'n') => value.push('\n'),
                        Some(b't') => value.push('\t'),
                        _ => {
                            return Err(self.err(
                                self.pos + 1,
                                "an escape (\\\" \\\\ \\/ \\n \\t)",
                                None,
                            ));
                        }
                    }
                    self.pos += 2;
                    run = self.pos;
                }
                Some(_) => self.pos += 1,
            }
        }
    }

    /// After a literal, a name character means the literal ran into something.
    fn check_boundary(&self) -> Result<(), ParseError> {
        match self.peek() {
            Some(c) if is_name_char(c) || c == b'.' || c == b'\'' => {
                Err(self.err(self.pos, "whitespace, an operator or a delimiter", None))
            }
            _ => Ok(()),
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        self.pos - start
    }

    /// Exactly `n` digits whose value is at most `max`, checked digit by digit so the
    /// error stands on the first digit that cannot be right.
    fn fixed(&mut self, n: usize, max: u32, what: &str) -> Result<u32, ParseError> {
        let mut v = 0u32;
        for i in 0..n {
            let at = self.pos;
            let Some(d) = self.peek().filter(|c| c.is_ascii_digit()) else {
                return Err(self.err(at, what, None));
            };
            let d = u32::from(d - b'0');
            let place = 10u32.pow((n - i - 1) as u32);
            // Smallest value reachable with this digit must not exceed max.
            if (v * 10 + d) * place > max {
                return Err(self.err(at, what, None));
            }
            v = v * 10 + d;
            self.pos += 1;
        }
        Ok(v)
    }

    fn expect_byte(&mut self, b: u8, what: &str) -> Result<(), ParseError> {
        if self.peek() == Some(b) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err(self.pos, what, None))
        }
    }

    /// A GUID (8-4-4-4-12 hex digits) starting here, if the text starts like one.
    fn guid(&mut self) -> Result<Option<Tok>, ParseError> {
        let start = self.pos;
        let hex8 = (0..8).all(|i| self.at(start + i).is_some_and(|c| c.is_ascii_hexdigit()));
        if !hex8 || self.at(start + 8) != Some(b'-') {
            return Ok(None);
        }
        for (i, group) in [8usize, 4, 4, 4, 12].iter().enumerate() {
            if i > 0 {
                self.expect_byte(b'-', "'-' in a GUID")?;
            }
            for _ in 0..*group {
                if self.peek().is_some_and(|c| c.is_ascii_hexdigit()) {
                    self.pos += 1;
                } else {
                    return Err(self.err(self.pos, "a hex digit in a GUID", None));
                }
            }
        }
        self.check_boundary()?;
        Ok(Some(Tok::Guid(
            self.text[start..self.pos].to_ascii_lowercase(),
        )))
    }

    fn number_or_date(&mut self) -> Result<Tok, ParseError> {
        let start = self.pos;
        if let Some(g) = self.guid()? {
            return Ok(g);
        }
        let signed = matches!(self.peek(), Some(b'-' | b'+'));
        if signed {
            self.pos += 1;
        }
        if self.s[self.pos..].starts_with(b"INF") {
            self.pos += 3;
            self.check_boundary()?;
            return Ok(Tok::Number(
                self.text[start..self.pos]
                    .trim_start_matches('+')
                    .to_string(),
            ));
        }
        let int_start = self.pos;
        let n = self.digits();
        // A date: four or more digits, '-', month, '-', day.
        if n >= 4
            && self.peek() == Some(b'-')
            && self.at(self.pos + 1).is_some_and(|c| c.is_ascii_digit())
        {
            if signed && self.s[start] == b'+' {
                return Err(self.err(start, "a date without '+'", None));
            }
            return self.date_rest(start);
        }
        // A time of day: two digits then ':'.
        if n == 2 && !signed && self.peek() == Some(b':') {
            self.pos = int_start;
            self.time_rest()?;
            self.check_boundary()?;
            return Ok(Tok::TimeOfDay(self.text[start..self.pos].to_string()));
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(self.err(self.pos, "a digit after the decimal point", None));
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'-' | b'+')) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(self.err(self.pos, "a digit in the exponent", None));
            }
        }
        self.check_boundary()?;
        Ok(Tok::Number(
            self.text[start..self.pos]
                .trim_start_matches('+')
                .to_string(),
        ))
    }

    /// The rest of a date after its year, and an optional time: `-MM-DD[THH:MM[:SS[.f]](Z|±HH:MM)]`
    /// or the live service's `-MM-DDZ`.
    fn date_rest(&mut self, start: usize) -> Result<Tok, ParseError> {
        self.pos += 1;
        let month = self.fixed(2, 12, "a month (01-12)")?;
        if month == 0 {
            return Err(self.err(self.pos - 1, "a month (01-12)", None));
        }
        self.expect_byte(b'-', "'-' before the day")?;
        let day = self.fixed(2, 31, "a day (01-31)")?;
        if day == 0 || day > days_in_month(month) {
            return Err(self.err(self.pos - 2, "a day that exists in that month", None));
        }
        match self.peek() {
            Some(b'T') => {
                self.pos += 1;
                self.time_rest()?;
                self.offset()?;
                self.check_boundary()?;
                Ok(Tok::DateTime {
                    text: self.text[start..self.pos].to_string(),
                    quirk: false,
                })
            }
            Some(b'Z') => {
                self.pos += 1;
                self.check_boundary()?;
                Ok(Tok::DateTime {
                    text: format!("{}T00:00:00Z", &self.text[start..self.pos - 1]),
                    quirk: true,
                })
            }
            _ => {
                self.check_boundary()?;
                Ok(Tok::Date(self.text[start..self.pos].to_string()))
            }
        }
    }

    /// `HH:MM[:SS[.fraction]]`.
    fn time_rest(&mut self) -> Result<(), ParseError> {
        self.fixed(2, 23, "an hour (00-23)")?;
        self.expect_byte(b':', "':' after the hour")?;
        self.fixed(2, 59, "minutes (00-59)")?;
        if self.peek() == Some(b':') {
            self.pos += 1;
            // 60 is a leap second.
            self.fixed(2, 60, "seconds (00-60)")?;
            if self.peek() == Some(b'.') {
                self.pos += 1;
                if self.digits() == 0 {
                    return Err(self.err(self.pos, "fractional digits", None));
                }
            }
        }
        Ok(())
    }

    /// `Z` or `±HH:MM`.
    fn offset(&mut self) -> Result<(), ParseError> {
        match self.peek() {
            Some(b'Z' | b'z') => {
                self.pos += 1;
                Ok(())
            }
            Some(b'+' | b'-') => {
                self.pos += 1;
                self.fixed(2, 23, "an offset hour")?;
                self.expect_byte(b':', "':' in the offset")?;
                self.fixed(2, 59, "offset minutes")?;
                Ok(())
            }
            _ => Err(self.err(self.pos, "'Z' or an offset like +02:00", None)),
        }
    }
}

fn days_in_month(m: u32) -> u32 {
    match m {
        2 => 29,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}
