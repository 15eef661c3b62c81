//! Dates and times both ways, in one place: ISO 8601 / RFC 3339 text → days or
//! microseconds since 1970-01-01 UTC, and back to text; the proleptic Gregorian calendar.
//!
//! Input: text, or a day or microsecond count. Output: the other. Nothing here knows
//! DynamoDB or PostgreSQL (their epochs are applied by encode and the COPY reader).

use std::fmt::Write as _;

/// Unit of a number bound for a timestamp column (`unit = "s"` or `"ms"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochUnit {
    Seconds,
    Millis,
}

/// Days from 1970-01-01 to a proleptic Gregorian date.
#[must_use]
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ => {
            if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 {
                29
            } else {
                28
            }
        }
    }
}

fn digits(b: &[u8]) -> Option<u32> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0u32, |a, &c| a * 10 + u32::from(c - b'0')))
}

/// `YYYY-MM-DD` → days since 1970-01-01.
fn parse_ymd(b: &[u8]) -> Option<i64> {
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let y = i64::from(digits(&b[0..4])?);
    let m = digits(&b[5..7])?;
    let d = digits(&b[8..10])?;
    if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
        return None;
    }
    Some(days_from_civil(y, m, d))
}

/// Parses a date `YYYY-MM-DD`.
#[must_use]
pub fn parse_date(s: &str) -> Option<i32> {
    parse_ymd(s.trim().as_bytes()).and_then(|d| i32::try_from(d).ok())
}

/// Parses RFC 3339 / ISO 8601: `YYYY-MM-DD[(T| )HH:MM[:SS[.f…]]][Z|±HH[:MM]]`; no offset
/// means UTC. Fractions beyond microseconds are rounded half-even, as PostgreSQL does.
#[must_use]
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let b = s.trim().as_bytes();
    if b.len() < 10 {
        return None;
    }
    let days = parse_ymd(&b[..10])?;
    let mut micros: i64 = days * 86_400_000_000;
    let mut rest = &b[10..];
    if rest.is_empty() {
        return Some(micros);
    }
    if !matches!(rest[0], b'T' | b't' | b' ') || rest.len() < 6 || rest[3] != b':' {
        return None;
    }
    let hh = digits(&rest[1..3])?;
    let mm = digits(&rest[4..6])?;
    rest = &rest[6..];
    let mut ss = 0;
    let mut frac_micros: i64 = 0;
    if rest.first() == Some(&b':') {
        ss = digits(rest.get(1..3)?)?;
        rest = &rest[3..];
        if matches!(rest.first(), Some(b'.' | b',')) {
            let end = rest[1..]
                .iter()
                .position(|c| !c.is_ascii_digit())
                .map_or(rest.len(), |p| p + 1);
            let f = &rest[1..end];
            if f.is_empty() {
                return None;
            }
            let mut v: i64 = 0;
            for k in 0..6 {
                v = v * 10 + f.get(k).map_or(0, |c| i64::from(c - b'0'));
            }
            if f.len() > 6 {
                let next = f[6] - b'0';
                let more = f[7..].iter().any(|&c| c != b'0');
                if next > 5 || (next == 5 && (more || v % 2 == 1)) {
                    v += 1;
                }
            }
            frac_micros = v;
            rest = &rest[end..];
        }
    }
    if hh > 23 || mm > 59 || ss > 59 {
        return None;
    }
    micros += (i64::from(hh) * 3600 + i64::from(mm) * 60 + i64::from(ss)) * 1_000_000 + frac_micros;
    match rest {
        [] | [b'Z'] | [b'z'] => Some(micros),
        [sign @ (b'+' | b'-'), tz @ ..] => {
            let (oh, om) = match tz {
                [h1, h2] => (digits(&[*h1, *h2])?, 0),
                [h1, h2, b':', m1, m2] | [h1, h2, m1, m2] => {
                    (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?)
                }
                _ => return None,
            };
            if oh > 15 || om > 59 {
                return None;
            }
            let off = (i64::from(oh) * 3600 + i64::from(om) * 60) * 1_000_000;
            // Local time minus its offset gives UTC.
            Some(if *sign == b'+' {
                micros - off
            } else {
                micros + off
            })
        }
        _ => None,
    }
}

/// (year, month, day) of a day count since 1970-01-01, proleptic Gregorian.
#[must_use]
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `YYYY-MM-DD` of a day count since 1970-01-01.
#[must_use]
pub fn format_date(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The RFC 3339 text of a time in microseconds since 1970, UTC, with milliseconds, as
/// AWS writes it (`2026-12-04T18:00:00.000Z`).
#[must_use]
pub fn rfc3339_millis(micros: i64) -> String {
    let mut s = format_timestamp(micros - micros.rem_euclid(1000), false);
    if !s.contains('.') {
        s.push_str(".000");
    } else {
        s.truncate(s.len() - 3);
    }
    s.push('Z');
    s
}

/// `YYYY-MM-DDTHH:MM:SS[.ffffff][Z]` of microseconds since 1970-01-01 (`Z` when `utc`).
#[must_use]
pub fn format_timestamp(micros: i64, utc: bool) -> String {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let rem = secs.rem_euclid(86_400);
    let mut s = format_date(secs.div_euclid(86_400));
    let _ = write!(s, "T{:02}:{:02}:{:02}", rem / 3600, rem / 60 % 60, rem % 60);
    if frac > 0 {
        let _ = write!(s, ".{frac:06}");
    }
    if utc {
        s.push('Z');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_both_ways() {
        for days in [-719_468_i64, -1, 0, 10_957, 19_782, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{days}");
        }
        assert_eq!(format_date(0), "1970-01-01");
        assert_eq!(format_date(-1), "1969-12-31");
        assert_eq!(parse_date("2024-02-29"), Some(19_782));
    }

    #[test]
    fn timestamps_both_ways() {
        for text in [
            "1970-01-01T00:00:00Z",
            "1969-12-31T23:59:59.999999Z",
            "2024-02-29T12:30:15.123457Z",
        ] {
            let micros = parse_timestamp(text).expect(text);
            assert_eq!(format_timestamp(micros, true), text);
        }
        assert_eq!(format_timestamp(0, false), "1970-01-01T00:00:00");
    }
}
