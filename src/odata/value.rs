//! Literal values: checks and conversions the lexer and `to_expr` share.

use chrono::{NaiveDate, NaiveDateTime, NaiveTime};

/// Checks an ISO 8601 day-time duration (`[-]PnDTnHnMn.nS`); the error is the byte
/// offset of the first character that cannot be right.
pub fn check_duration(s: &str) -> Result<(), usize> {
    duration_micros(s).map(|_| ())
}

/// An ISO 8601 day-time duration in microseconds.
pub fn duration_micros(s: &str) -> Result<i64, usize> {
    let b = s.as_bytes();
    let mut i = 0;
    let neg = b.first() == Some(&b'-');
    if neg {
        i += 1;
    }
    if b.get(i) != Some(&b'P') {
        return Err(i);
    }
    i += 1;
    let mut total: f64 = 0.0;
    let mut in_time = false;
    let mut any = false;
    while i < b.len() {
        if b[i] == b'T' && !in_time {
            in_time = true;
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
            i += 1;
        }
        if i == start {
            return Err(i);
        }
        let n: f64 = s[start..i].parse().map_err(|_| start)?;
        let unit = match (b.get(i), in_time) {
            (Some(b'D'), false) => 86_400.0,
            (Some(b'H'), true) => 3_600.0,
            (Some(b'M'), true) => 60.0,
            (Some(b'S'), true) => 1.0,
            _ => return Err(i),
        };
        total += n * unit;
        any = true;
        i += 1;
    }
    if !any {
        return Err(i);
    }
    let micros = (total * 1_000_000.0).round();
    if !micros.is_finite() || micros.abs() > 9.0e18 {
        return Err(0);
    }
    Ok(if neg { -(micros as i64) } else { micros as i64 })
}

/// A date-time literal (`2018-08-01T10:00Z`, any fractional digits, `Z` or an offset)
/// in microseconds since the epoch, UTC, truncated to the microsecond as the lake
/// stores times. A leap second counts as the last microsecond of its minute.
pub fn datetime_micros(s: &str) -> Option<i64> {
    let (body, offset_secs) = if let Some(b) = s.strip_suffix(['Z', 'z']) {
        (b, 0i64)
    } else {
        let cut = s.len().checked_sub(6)?;
        let (b, off) = s.split_at(cut);
        let sign = match off.as_bytes().first()? {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        let h: i64 = off.get(1..3)?.parse().ok()?;
        let m: i64 = off.get(4..6)?.parse().ok()?;
        (b, sign * (h * 3600 + m * 60))
    };
    let (date, time) = body.split_once('T')?;
    let date = NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    let (h, mi, sec, frac) = clock(time)?;
    let (sec, frac) = if sec == 60 {
        (59, 999_999)
    } else {
        (sec, frac)
    };
    let t = NaiveDateTime::new(
        date,
        NaiveTime::from_hms_opt(h as u32, mi as u32, sec as u32)?,
    );
    let secs = t.and_utc().timestamp() - offset_secs;
    secs.checked_mul(1_000_000)?.checked_add(frac)
}

/// A date literal in days since the epoch.
pub fn date_days(s: &str) -> Option<i32> {
    let d = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1)?;
    i32::try_from((d - epoch).num_days()).ok()
}

/// A time-of-day literal in microseconds since midnight.
pub fn time_micros(s: &str) -> Option<i64> {
    let (h, m, sec, frac) = clock(s)?;
    Some(((h * 60 + m) * 60 + sec) * 1_000_000 + frac)
}

/// `HH:MM[:SS[.fraction]]` as hours, minutes, seconds and microseconds (the fraction
/// truncated to six digits).
fn clock(s: &str) -> Option<(i64, i64, i64, i64)> {
    let mut parts = s.splitn(3, ':');
    let h: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next()?.parse().ok()?;
    let (sec, frac) = match parts.next() {
        None => (0, 0),
        Some(rest) => {
            let (sec, f) = rest.split_once('.').unwrap_or((rest, ""));
            let digits: String = f.chars().take(6).collect();
            let frac = if digits.is_empty() {
                0
            } else {
                format!("{digits:0<6}").parse::<i64>().ok()?
            };
            (sec.parse::<i64>().ok()?, frac)
        }
    };
    Some((h, m, sec, frac))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration_micros("P1D"), Ok(86_400_000_000));
        assert_eq!(duration_micros("PT1H30M"), Ok(5_400_000_000));
        assert_eq!(duration_micros("-PT0.5S"), Ok(-500_000));
        assert_eq!(duration_micros("P1Y"), Err(2));
        assert_eq!(duration_micros("P"), Err(1));
    }

    #[test]
    fn datetimes_truncate_to_micros() {
        assert_eq!(
            datetime_micros("1970-01-01T00:00:01.0000019Z"),
            Some(1_000_001)
        );
        assert_eq!(datetime_micros("1970-01-01T01:00+01:00"), Some(0));
        assert_eq!(datetime_micros("1970-01-01T00:00Z"), Some(0));
        assert_eq!(date_days("1970-01-02"), Some(1));
        assert_eq!(time_micros("00:00:01.5"), Some(1_500_000));
    }
}
