//! Exact decimal handling for DynamoDB numbers: validation and normalisation of `N` text,
//! fit checks for `numeric(p,s)` and integer types, and PostgreSQL's binary `numeric` form.
//!
//! Input: the `N` text as written (`"-0015.789e6"`, `"0.000…1"`, a 126-digit integer).
//! Output: plain decimal text (`"-15789000"`), or the base-10000 wire form. No floating
//! point and no fixed-width decimal is ever involved, so every digit survives.

use std::borrow::Cow;

/// Largest decimal exponent DynamoDB stores (|x| < 10^126).
const MAX_ADJUSTED_EXP: i64 = 125;
/// Smallest (|x| >= 10^-130).
const MIN_ADJUSTED_EXP: i64 = -130;
/// Guard against absurd inputs: DynamoDB allows 38 significant digits; we accept more
/// (it loses nothing) but not without bound.
const MAX_SIGNIFICANT: usize = 1000;

/// Returns `s` as plain decimal text (no exponent, no `+`, no leading zeros, no `-0`).
///
/// Text already in that form is borrowed unchanged (trailing fractional zeros kept: the
/// value is the same and PostgreSQL keeps the written scale).
///
/// # Errors
/// A reason when `s` is not a number DynamoDB could hold.
pub fn normalize(s: &str) -> Result<Cow<'_, str>, String> {
    if is_plain(s) {
        return Ok(Cow::Borrowed(s));
    }
    let b = s.as_bytes();
    let mut i = 0;
    let mut neg = false;
    match b.first() {
        Some(b'-') => {
            neg = true;
            i = 1;
        }
        Some(b'+') => i = 1,
        _ => {}
    }
    let mut mant = String::new();
    let mut int_len: i64 = 0;
    let mut seen_point = false;
    let mut any_digit = false;
    while i < b.len() {
        match b[i] {
            c @ b'0'..=b'9' => {
                any_digit = true;
                if mant.is_empty() && c == b'0' {
                    // Leading zero: shifts nothing before the point, one place after it.
                    if seen_point {
                        int_len -= 1;
                    }
                } else {
                    mant.push(c as char);
                    if !seen_point {
                        int_len += 1;
                    }
                }
            }
            b'.' if !seen_point => seen_point = true,
            b'e' | b'E' => break,
            _ => return Err(not_a_number(s)),
        }
        i += 1;
    }
    if !any_digit {
        return Err(not_a_number(s));
    }
    let mut exp: i64 = 0;
    if i < b.len() {
        // b[i] is 'e' or 'E'.
        i += 1;
        let mut eneg = false;
        match b.get(i) {
            Some(b'-') => {
                eneg = true;
                i += 1;
            }
            Some(b'+') => i += 1,
            _ => {}
        }
        if i >= b.len() {
            return Err(not_a_number(s));
        }
        for &c in &b[i..] {
            if !c.is_ascii_digit() {
                return Err(not_a_number(s));
            }
            exp = exp.saturating_mul(10).saturating_add(i64::from(c - b'0'));
        }
        if eneg {
            exp = -exp;
        }
    }
    while mant.ends_with('0') {
        mant.pop();
    }
    if mant.is_empty() {
        return Ok(Cow::Borrowed("0"));
    }
    if mant.len() > MAX_SIGNIFICANT {
        return Err(format!(
            "number `{s}` has more than {MAX_SIGNIFICANT} significant digits"
        ));
    }
    // Position of the decimal point relative to the start of `mant`.
    let point = int_len.saturating_add(exp);
    let adjusted = point - 1;
    if adjusted > MAX_ADJUSTED_EXP {
        return Err(format!(
            "number `{s}` is out of range: magnitude of 10^126 or more"
        ));
    }
    if adjusted < MIN_ADJUSTED_EXP {
        return Err(format!(
            "number `{s}` is out of range: magnitude below 10^-130"
        ));
    }
    let mut out = String::with_capacity(mant.len() + 140);
    if neg {
        out.push('-');
    }
    let len = mant.len() as i64;
    if point <= 0 {
        out.push_str("0.");
        for _ in 0..(-point) {
            out.push('0');
        }
        out.push_str(&mant);
    } else if point >= len {
        out.push_str(&mant);
        for _ in 0..(point - len) {
            out.push('0');
        }
    } else {
        let p = usize::try_from(point).unwrap_or(0);
        out.push_str(&mant[..p]);
        out.push('.');
        out.push_str(&mant[p..]);
    }
    Ok(Cow::Owned(out))
}

fn not_a_number(s: &str) -> String {
    format!("`{s}` is not a number")
}

/// `-?(0|[1-9][0-9]*)(\.[0-9]+)?`, not negative zero, within DynamoDB's range.
fn is_plain(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = match b.first() {
        Some(b'-') => &b[1..],
        _ => b,
    };
    // One pass over the integer digits (the usual number is a few bytes: no search call).
    let int_len = digits
        .iter()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    let int = &digits[..int_len];
    let frac = match digits.get(int_len) {
        None => None,
        Some(b'.') => Some(&digits[int_len + 1..]),
        Some(_) => return false,
    };
    if int.is_empty() || (int.len() > 1 && int[0] == b'0') {
        return false;
    }
    if int.len() > (MAX_ADJUSTED_EXP as usize + 1) {
        return false;
    }
    if let Some(f) = frac {
        if f.is_empty() || !f.iter().all(u8::is_ascii_digit) {
            return false;
        }
        if int == b"0" {
            // 0.000…0d: the first non-zero digit must be within 10^-130.
            match f.iter().position(|&c| c != b'0') {
                None => return false,
                Some(z) if z >= 130 => return false,
                Some(_) => {}
            }
        }
    } else if int == b"0" && b[0] == b'-' {
        return false;
    }
    true
}

/// Orders two DynamoDB numbers by value; text that is not a number sorts after every
/// number, by its bytes (it becomes a reject anyway).
#[must_use]
pub fn cmp_decimal(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (na, nb) = (normalize(a), normalize(b));
    let (pa, pb) = match (&na, &nb) {
        (Ok(x), Ok(y)) => (x.as_ref(), y.as_ref()),
        (Ok(_), Err(_)) => return Ordering::Less,
        (Err(_), Ok(_)) => return Ordering::Greater,
        (Err(_), Err(_)) => return a.cmp(b),
    };
    fn sign(p: &str) -> (i8, &str, &str) {
        let (neg, int, frac) = split_plain(p);
        let zero = int.is_empty() && frac.bytes().all(|c| c == b'0');
        let s: i8 = if zero {
            0
        } else if neg {
            -1
        } else {
            1
        };
        (s, int, frac.trim_end_matches('0'))
    }
    let (sa, ia, fa) = sign(pa);
    let (sb, ib, fb) = sign(pb);
    if sa != sb || sa == 0 {
        return sa.cmp(&sb);
    }
    let magnitude = ia
        .len()
        .cmp(&ib.len())
        .then_with(|| ia.cmp(ib))
        .then_with(|| fa.cmp(fb));
    if sa < 0 {
        magnitude.reverse()
    } else {
        magnitude
    }
}

/// Splits plain decimal text into (negative, integer digits, fraction digits); the
/// integer part of `0.5` is empty.
#[must_use]
pub fn split_plain(s: &str) -> (bool, &str, &str) {
    let (neg, body) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (int, frac) = match body.bytes().position(|c| c == b'.') {
        Some(p) => (&body[..p], &body[p + 1..]),
        None => (body, ""),
    };
    let int = if int == "0" { "" } else { int };
    (neg, int, frac)
}

/// Checks that plain decimal text fits `numeric(p,s)` without rounding.
///
/// # Errors
/// Why it does not fit.
pub fn check_fits(plain: &str, precision: u32, scale: u32) -> Result<(), String> {
    let (_, int, frac) = split_plain(plain);
    let frac_sig = frac.trim_end_matches('0').len();
    if frac_sig > scale as usize {
        return Err(format!(
            "{plain} has {frac_sig} fractional digits, more than numeric({precision},{scale}) keeps (it would be rounded)"
        ));
    }
    if int.len() > (precision - scale) as usize {
        return Err(format!(
            "{plain} has {} integer digits, more than numeric({precision},{scale}) holds",
            int.len()
        ));
    }
    Ok(())
}

/// Parses plain decimal text as an integer, refusing fractions and overflow.
///
/// # Errors
/// Why it is not an integer of 64 bits.
pub fn to_i64(plain: &str) -> Result<i64, String> {
    let (neg, int, frac) = split_plain(plain);
    if frac.bytes().any(|c| c != b'0') {
        return Err(format!("{plain} is not an integer"));
    }
    if int.is_empty() {
        return Ok(0);
    }
    let mut v: i64 = 0;
    for c in int.bytes() {
        let d = i64::from(c - b'0');
        v = v
            .checked_mul(10)
            .and_then(|v| {
                if neg {
                    v.checked_sub(d)
                } else {
                    v.checked_add(d)
                }
            })
            .ok_or_else(|| format!("{plain} is out of range for bigint"))?;
    }
    Ok(v)
}

/// Plain decimal text × 10^`shift` rounded half-even to an integer (for epoch → µs).
///
/// # Errors
/// Overflow of 64 bits.
pub fn scaled_i64(plain: &str, shift: u32) -> Result<i64, String> {
    let (neg, int, frac) = split_plain(plain);
    let shift = shift as usize;
    let mut v: i128 = 0;
    let overflow = || format!("{plain} is out of range");
    for c in int.bytes() {
        v = v.checked_mul(10).ok_or_else(overflow)? + i128::from(c - b'0');
        if v > i128::from(i64::MAX) {
            return Err(overflow());
        }
    }
    let fb = frac.as_bytes();
    for k in 0..shift {
        let d = fb.get(k).map_or(0, |c| c - b'0');
        v = v.checked_mul(10).ok_or_else(overflow)? + i128::from(d);
    }
    if fb.len() > shift {
        let next = fb[shift] - b'0';
        let rest_nonzero = fb[shift + 1..].iter().any(|&c| c != b'0');
        if next > 5 || (next == 5 && (rest_nonzero || v % 2 == 1)) {
            v += 1;
        }
    }
    if neg {
        v = -v;
    }
    i64::try_from(v).map_err(|_| overflow())
}

/// Appends PostgreSQL's binary `numeric` (without the length word) for plain decimal text.
pub fn write_pg_numeric(plain: &str, out: &mut Vec<u8>) {
    let (neg, int, frac) = split_plain(plain);
    let dscale = frac.len() as u16;
    // Base-10000 groups, aligned on the decimal point.
    let mut groups: Vec<u16> = Vec::with_capacity((int.len() + frac.len()) / 4 + 2);
    let ib = int.as_bytes();
    let lead = ib.len() % 4;
    let mut pos = 0;
    if lead > 0 {
        groups.push(digits_value(&ib[..lead]));
        pos = lead;
    }
    while pos < ib.len() {
        groups.push(digits_value(&ib[pos..pos + 4]));
        pos += 4;
    }
    let int_groups = groups.len() as i32;
    let fb = frac.as_bytes();
    let mut pos = 0;
    while pos < fb.len() {
        let end = (pos + 4).min(fb.len());
        let mut g = digits_value(&fb[pos..end]);
        for _ in end - pos..4 {
            g *= 10;
        }
        groups.push(g);
        pos = end;
    }
    let mut weight = int_groups - 1;
    let first = groups.iter().position(|&g| g != 0);
    let (start, end) = match first {
        None => (0, 0),
        Some(f) => {
            let last = groups.iter().rposition(|&g| g != 0).unwrap_or(f);
            (f, last + 1)
        }
    };
    weight -= start as i32;
    let digits = &groups[start..end];
    let (weight, sign) = if digits.is_empty() {
        (0, 0u16)
    } else {
        (weight, if neg { 0x4000 } else { 0 })
    };
    out.extend_from_slice(&(digits.len() as u16).to_be_bytes());
    out.extend_from_slice(&(weight as i16).to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&dscale.to_be_bytes());
    for d in digits {
        out.extend_from_slice(&d.to_be_bytes());
    }
}

#[inline]
fn digits_value(d: &[u8]) -> u16 {
    d.iter()
        .fold(0u16, |acc, &c| acc * 10 + u16::from(c - b'0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_order_by_value() {
        let mut v = vec![
            "10", "-1.5", "2", "0", "-0.0", "1e1", "0.25", "-10", "1.50", "1.5e-3", "x",
        ];
        v.sort_by(|a, b| cmp_decimal(a, b));
        assert_eq!(
            v,
            vec!["-10", "-1.5", "0", "-0.0", "1.5e-3", "0.25", "1.50", "2", "10", "1e1", "x"]
        );
        assert!(cmp_decimal(
            "123456789012345678901234567890123456789",
            "123456789012345678901234567890123456788"
        )
        .is_gt());
    }

    #[test]
    fn normalizes_like_dynamodb() {
        let cases = [
            ("1", "1"),
            ("-7.1234", "-7.1234"),
            ("-17e5", "-1700000"),
            ("-17.4E37", "-174000000000000000000000000000000000000"),
            ("+3", "3"),
            (".123", "0.123"),
            ("0001.23", "1.23"),
            ("1e+5", "100000"),
            ("0e1000", "0"),
            ("-0", "0"),
            ("-0015.789e6", "-15789000"),
            ("1e-7", "0.0000001"),
            ("2.220446049250313e-16", "0.0000000000000002220446049250313"),
            (
                "0000012345678901234567890123456789012345678",
                "12345678901234567890123456789012345678",
            ),
            (
                "-00001.23456789012345678901234567890123456780000",
                "-1.2345678901234567890123456789012345678",
            ),
            ("1.10", "1.10"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input).as_deref(), Ok(want), "{input}");
        }
        let max = normalize("0009.99999999999999999999999999999999999990000e125").expect("max");
        assert_eq!(max.len(), 126);
        let min = normalize("0001.000e-130").expect("min");
        assert_eq!(min, format!("0.{}1", "0".repeat(129)));
        assert_eq!(
            normalize(&min).as_deref(),
            Ok(min.as_ref()),
            "plain form is stable"
        );
    }

    #[test]
    fn refuses_what_dynamodb_refuses() {
        for bad in [
            "",
            "b",
            "NaN",
            "Infinity",
            "-Infinity",
            " 1",
            "1 ",
            "1e",
            "--1",
            "1.2.3",
            "1e126",
            "-1e126",
            "11e125",
            "1e-131",
            "0.9e-130",
            "0x10",
        ] {
            assert!(normalize(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn numeric_binary_matches_the_vectors() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/acceptance/pg-numeric-vectors.json");
        let Ok(text) = std::fs::read_to_string(&path) else {
            eprintln!(
                "SKIP numeric_binary_matches_the_vectors: {} is absent",
                path.display()
            );
            return;
        };
        let doc: serde_json::Value = serde_json::from_str(&text).expect("json");
        let mut checked = 0;
        for v in doc["vectors"].as_array().expect("array") {
            if v["group"] != "encode" {
                continue;
            }
            let (Some(t), Some(hex)) = (v["text"].as_str(), v["binary_hex"].as_str()) else {
                continue;
            };
            let plain = normalize(t).expect("valid");
            let mut out = Vec::new();
            write_pg_numeric(&plain, &mut out);
            let got: String = out.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(got, hex, "{}", v["id"]);
            checked += 1;
        }
        assert!(checked >= 20, "only {checked} vectors checked");
    }

    #[test]
    fn fit_and_integer_checks() {
        assert!(check_fits("12345678.99", 10, 2).is_ok());
        assert!(check_fits("123456789.9", 10, 2).is_err());
        assert!(check_fits("1.234", 10, 2).is_err());
        assert!(check_fits("1.230", 10, 2).is_ok());
        assert!(check_fits("0.5", 1, 1).is_ok());
        assert_eq!(to_i64("-9223372036854775808"), Ok(i64::MIN));
        assert!(to_i64("9223372036854775808").is_err());
        assert!(to_i64("1.5").is_err());
        assert_eq!(to_i64("3.000"), Ok(3));
        assert_eq!(
            scaled_i64("1700000000.1234565", 6),
            Ok(1_700_000_000_123_456)
        );
        assert_eq!(
            scaled_i64("1700000000.1234575", 6),
            Ok(1_700_000_000_123_458)
        );
        assert_eq!(scaled_i64("-1.5", 3), Ok(-1500));
    }
}
