//! The aligned text table of `--format table` and the REPL, printed as the batches
//! arrive: the first rows of a long result appear at once, and memory holds one batch.
//!
//! Column widths come from the header and the first batch's rows. With a width limit
//! (the REPL, from the terminal) the widest columns give way until the table fits, and
//! longer values are cut with an ellipsis; without one (`query`) a later, longer value
//! is printed whole, out of line rather than lost. Control characters in values print
//! as spaces (a newline as `\n`) so a row stays on one line.

use std::io::Write;

use arrow::array::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

use crate::error::{Error, Result};

/// How a table is printed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableOptions {
    /// Rows printed at most; the rest are counted, not shown.
    pub max_rows: Option<usize>,
    /// The width the table must fit in, in terminal columns.
    pub max_width: Option<usize>,
}

/// What a printed table held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Printed {
    /// Rows in the result.
    pub rows: u64,
    /// Rows printed.
    pub shown: u64,
}

impl Printed {
    /// The REPL's footer: `3 rows`, or `40 of 1,203 rows shown`.
    pub fn footer(&self) -> String {
        let noun = if self.rows == 1 { "row" } else { "rows" };
        if self.shown < self.rows {
            format!(
                "{} of {} {noun} shown",
                thousands(self.shown),
                thousands(self.rows)
            )
        } else {
            format!("{} {noun}", thousands(self.rows))
        }
    }
}

/// `1203` as `1,203`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The narrowest a column is squeezed to when the table must fit a width.
const MIN_WIDTH: usize = 4;

/// Prints every batch of `stream` as a table to `out`, flushing after each batch.
pub async fn print_table(
    stream: &mut SendableRecordBatchStream,
    options: &TableOptions,
    out: &mut (dyn Write + Send),
) -> Result<Printed> {
    let headers: Vec<String> = stream
        .schema()
        .fields()
        .iter()
        .map(|f| clean(f.name()))
        .collect();
    let format = FormatOptions::default()
        .with_null("NULL")
        .with_display_error(true);
    let mut widths: Option<Vec<usize>> = None;
    let mut printed = Printed { rows: 0, shown: 0 };
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        printed.rows += batch.num_rows() as u64;
        let room = options
            .max_rows
            .map_or(usize::MAX, |m| m.saturating_sub(printed.shown as usize));
        let take = batch.num_rows().min(room);
        if take == 0 {
            continue;
        }
        let cells = format_rows(&batch, take, &format)?;
        if widths.is_none() {
            let w = fit(column_widths(&headers, &cells), options.max_width);
            write_head(out, &headers, &w, options.max_width.is_some())?;
            widths = Some(w);
        }
        let widths = widths.as_deref().unwrap_or_default();
        for row in &cells {
            write_row(out, row, widths, options.max_width.is_some())?;
        }
        printed.shown += take as u64;
        out.flush().map_err(Error::Output)?;
    }
    let widths = match widths {
        Some(w) => w,
        None => {
            let w = fit(column_widths(&headers, &[]), options.max_width);
            write_head(out, &headers, &w, options.max_width.is_some())?;
            w
        }
    };
    write_border(out, &widths)?;
    out.flush().map_err(Error::Output)?;
    Ok(printed)
}

/// The first `take` rows of `batch` as display strings, column by column per row.
fn format_rows(
    batch: &RecordBatch,
    take: usize,
    format: &FormatOptions,
) -> Result<Vec<Vec<String>>> {
    let formatters = batch
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), format))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok((0..take)
        .map(|row| {
            formatters
                .iter()
                .map(|f| clean(&f.value(row).to_string()))
                .collect()
        })
        .collect())
}

/// A value on one line: a newline as `\n`, other control characters as spaces.
fn clean(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn column_widths(headers: &[String], rows: &[Vec<String>]) -> Vec<usize> {
    // At least one column wide, so a cut value always has room for its ellipsis.
    let mut widths: Vec<usize> = headers.iter().map(|h| h.width().max(1)).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.width());
        }
    }
    widths
}

/// Narrows the widest columns until the table (borders included) fits `max_width`,
/// none below `MIN_WIDTH`: the largest cap every column can keep under.
fn fit(mut widths: Vec<usize>, max_width: Option<usize>) -> Vec<usize> {
    let Some(max) = max_width else {
        return widths;
    };
    let overhead = 3 * widths.len() + 1;
    let total =
        |cap: usize| -> usize { widths.iter().map(|w| (*w).min(cap)).sum::<usize>() + overhead };
    let widest = widths.iter().copied().max().unwrap_or(0);
    if total(widest) <= max {
        return widths;
    }
    // Binary search for the largest cap that fits.
    let (mut lo, mut hi) = (MIN_WIDTH, widest);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if total(mid) <= max {
            lo = mid
        } else {
            hi = mid - 1
        }
    }
    for w in &mut widths {
        *w = (*w).min(lo);
    }
    widths
}

/// `s` cut to `width` columns, ending in an ellipsis when cut.
fn cut(s: &str, width: usize) -> std::borrow::Cow<'_, str> {
    if s.width() <= width {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        let w = c.width().unwrap_or(0);
        if used + w + 1 > width {
            break;
        }
        out.push(c);
        used += w;
    }
    out.push('…');
    std::borrow::Cow::Owned(out)
}

fn write_border(out: &mut (dyn Write + Send), widths: &[usize]) -> Result<()> {
    let mut line = String::from("+");
    for w in widths {
        line.push_str(&"-".repeat(w + 2));
        line.push('+');
    }
    writeln!(out, "{line}").map_err(Error::Output)
}

fn write_row(
    out: &mut (dyn Write + Send),
    cells: &[String],
    widths: &[usize],
    cut_long: bool,
) -> Result<()> {
    let mut line = String::from("|");
    for (cell, w) in cells.iter().zip(widths) {
        let shown = if cut_long { cut(cell, *w) } else { cell.into() };
        let pad = w.saturating_sub(shown.width());
        line.push(' ');
        line.push_str(&shown);
        line.push_str(&" ".repeat(pad + 1));
        line.push('|');
    }
    writeln!(out, "{line}").map_err(Error::Output)
}

fn write_head(
    out: &mut (dyn Write + Send),
    headers: &[String],
    widths: &[usize],
    cut_long: bool,
) -> Result<()> {
    write_border(out, widths)?;
    write_row(out, headers, widths, cut_long)?;
    write_border(out, widths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1203), "1,203");
        assert_eq!(thousands(1_000_000), "1,000,000");
    }

    #[test]
    fn footers_say_what_was_shown() {
        assert_eq!(Printed { rows: 1, shown: 1 }.footer(), "1 row");
        assert_eq!(Printed { rows: 0, shown: 0 }.footer(), "0 rows");
        assert_eq!(
            Printed {
                rows: 1203,
                shown: 40
            }
            .footer(),
            "40 of 1,203 rows shown"
        );
    }

    #[test]
    fn wide_columns_give_way_to_fit() {
        let w = fit(vec![2, 50, 30], Some(40));
        assert!(w.iter().sum::<usize>() + 10 <= 40, "{w:?}");
        assert_eq!(w[0], 2, "a narrow column keeps its width");
        assert_eq!(fit(vec![2, 50], None), vec![2, 50]);
    }

    #[test]
    fn an_empty_column_still_has_room_for_an_ellipsis() {
        assert_eq!(column_widths(&["".into()], &[vec!["".into()]]), vec![1]);
        assert_eq!(cut("later and longer", 1), "…");
    }

    #[test]
    fn cut_values_end_in_an_ellipsis_within_the_width() {
        assert_eq!(cut("abcdef", 4), "abc…");
        assert_eq!(cut("abc", 4), "abc");
        // Wide characters count two columns.
        assert_eq!(cut("日本語テキスト", 5), "日本…");
        assert_eq!(clean("a\nb\tc"), "a\\nb c");
    }
}
