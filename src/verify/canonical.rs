//! Each field of a binary COPY tuple in a canonical form, so that ours and PostgreSQL's
//! encodings of one value compare equal, or rendered as readable text for reports.
//!
//! Input: a field's bytes, its column type and who encoded it. Output: canonical bytes,
//! or text. Canonical forms differ from the wire only where PostgreSQL normalises:
//! `numeric` loses its display scale (12.5 = 12.50), `jsonb` is re-serialised in
//! PostgreSQL's own output form, and arrays canonicalise their elements.

use std::fmt::Write as _;

use crate::ddbjson::write_json_string;
use crate::scalar::time::{format_date, format_timestamp};
use crate::scalar::uuid::format_uuid;
use crate::schema::{ColumnType, ElemType};

/// Who encoded a field: our encoder, or PostgreSQL's send functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoder {
    Ours,
    Postgres,
}

/// Appends the canonical form of a non-NULL field of type `ty`.
///
/// `jsonb` is canonical in PostgreSQL's own output form (keys by length then bytes, `": "`
/// and `", "`): PostgreSQL's bytes are taken as they are and ours are rearranged into that
/// form, which is far cheaper than parsing both sides into trees.
pub fn canonical(ty: ColumnType, field: &[u8], by: Encoder, out: &mut Vec<u8>) {
    match ty {
        ColumnType::Numeric(_) => canonical_numeric(field, out),
        ColumnType::Jsonb => {
            let text = field.get(1..).unwrap_or_default();
            let start = out.len();
            match by {
                Encoder::Postgres => out.extend_from_slice(text),
                Encoder::Ours => {
                    if pg_jsonb_text(text, out).is_none() {
                        out.truncate(start);
                        match serde_json::from_slice::<serde_json::Value>(text) {
                            Ok(v) => pg_jsonb_from_value(&v, out),
                            Err(_) => out.extend_from_slice(text),
                        }
                    }
                }
            }
            // jsonb's own equality (what an upsert compares by): 12.5 = 12.50.
            let canon = jsonb_numbers_without_scale(&out[start..]);
            out.truncate(start);
            out.extend_from_slice(&canon);
        }
        ColumnType::Array(e) => canonical_array(e, field, by, out),
        _ => out.extend_from_slice(field),
    }
}

/// JSON text with each number outside strings written without trailing fractional zeros
/// (`12.50` → `12.5`, `3.0` → `3`, `-0.0` → `0`), as jsonb compares numbers by value.
fn jsonb_numbers_without_scale(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let b = text[i];
        if b == b'"' {
            let start = i;
            i += 1;
            while i < text.len() && text[i] != b'"' {
                i += if text[i] == b'\\' { 2 } else { 1 };
            }
            i = (i + 1).min(text.len());
            out.extend_from_slice(&text[start..i]);
        } else if b == b'-' || b.is_ascii_digit() {
            let start = i;
            while i < text.len()
                && matches!(text[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
            {
                i += 1;
            }
            let mut num = &text[start..i];
            if num.contains(&b'.') && !num.iter().any(|c| matches!(c, b'e' | b'E')) {
                while num.last() == Some(&b'0') {
                    num = &num[..num.len() - 1];
                }
                if num.last() == Some(&b'.') {
                    num = &num[..num.len() - 1];
                }
            }
            out.extend_from_slice(if num == b"-0" { b"0" } else { num });
        } else {
            out.push(b);
            i += 1;
        }
    }
    out
}

/// The slow path of [`pg_jsonb_text`]: any JSON, keys decoded before sorting.
fn pg_jsonb_from_value(v: &serde_json::Value, out: &mut Vec<u8>) {
    use serde_json::Value;
    let string = |s: &str, out: &mut Vec<u8>| {
        let mut t = String::new();
        write_json_string(&mut t, s);
        out.extend_from_slice(t.as_bytes());
    };
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::String(s) => string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, it) in items.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(b", ");
                }
                pg_jsonb_from_value(it, out);
            }
            out.push(b']');
        }
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort_by(|a, b| (a.len(), a.as_bytes()).cmp(&(b.len(), b.as_bytes())));
            out.push(b'{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(b", ");
                }
                string(k, out);
                out.extend_from_slice(b": ");
                if let Some(v) = m.get(*k) {
                    pg_jsonb_from_value(v, out);
                }
            }
            out.push(b'}');
        }
    }
}

/// A JSON value with borrowed scalars, for re-serialising.
enum J<'a> {
    Raw(&'a [u8]),
    Arr(Vec<J<'a>>),
    Obj(Vec<(&'a [u8], J<'a>)>),
}

/// Rewrites compact JSON text (as our decoder writes it) in PostgreSQL's jsonb output
/// form. `None` when the text holds something this fast path does not handle (an escaped
/// key, whose sort order would need decoding).
fn pg_jsonb_text(text: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let mut p = 0;
    let v = jparse(text, &mut p, 0)?;
    if p != text.len() {
        return None;
    }
    jwrite(&v, out);
    Some(())
}

fn jparse<'a>(t: &'a [u8], p: &mut usize, depth: usize) -> Option<J<'a>> {
    if depth > 200 {
        return None;
    }
    match *t.get(*p)? {
        b'{' => {
            *p += 1;
            let mut members = Vec::new();
            if t.get(*p) == Some(&b'}') {
                *p += 1;
                return Some(J::Obj(members));
            }
            loop {
                let k = jstring(t, p)?;
                if k.contains(&b'\\') {
                    return None;
                }
                if t.get(*p) != Some(&b':') {
                    return None;
                }
                *p += 1;
                let v = jparse(t, p, depth + 1)?;
                members.push((k, v));
                match t.get(*p)? {
                    b',' => *p += 1,
                    b'}' => {
                        *p += 1;
                        break;
                    }
                    _ => return None,
                }
            }
            // PostgreSQL orders keys by length, then bytes; the last of equal keys wins.
            members.sort_by(|a, b| (a.0.len(), a.0).cmp(&(b.0.len(), b.0)));
            members.dedup_by(|later, earlier| {
                if later.0 == earlier.0 {
                    std::mem::swap(later, earlier);
                    true
                } else {
                    false
                }
            });
            Some(J::Obj(members))
        }
        b'[' => {
            *p += 1;
            let mut items = Vec::new();
            if t.get(*p) == Some(&b']') {
                *p += 1;
                return Some(J::Arr(items));
            }
            loop {
                items.push(jparse(t, p, depth + 1)?);
                match t.get(*p)? {
                    b',' => *p += 1,
                    b']' => {
                        *p += 1;
                        break;
                    }
                    _ => return None,
                }
            }
            Some(J::Arr(items))
        }
        b'"' => {
            let start = *p;
            jstring(t, p)?;
            Some(J::Raw(&t[start..*p]))
        }
        _ => {
            let start = *p;
            while let Some(&c) = t.get(*p) {
                if matches!(c, b',' | b'}' | b']') {
                    break;
                }
                *p += 1;
            }
            (start < *p).then(|| J::Raw(&t[start..*p]))
        }
    }
}

/// Skips a string at `p`; returns its body (without quotes, escapes as written).
fn jstring<'a>(t: &'a [u8], p: &mut usize) -> Option<&'a [u8]> {
    if t.get(*p) != Some(&b'"') {
        return None;
    }
    let start = *p + 1;
    let mut i = start;
    loop {
        let off = memchr::memchr2(b'"', b'\\', t.get(i..)?)?;
        i += off;
        if t[i] == b'\\' {
            i += 2;
        } else {
            *p = i + 1;
            return Some(&t[start..i]);
        }
    }
}

fn jwrite(v: &J<'_>, out: &mut Vec<u8>) {
    match v {
        J::Raw(r) => out.extend_from_slice(r),
        J::Arr(items) => {
            out.push(b'[');
            for (i, it) in items.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(b", ");
                }
                jwrite(it, out);
            }
            out.push(b']');
        }
        J::Obj(members) => {
            out.push(b'{');
            for (i, (k, it)) in members.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(b", ");
                }
                out.push(b'"');
                out.extend_from_slice(k);
                out.extend_from_slice(b"\": ");
                jwrite(it, out);
            }
            out.push(b'}');
        }
    }
}

/// Numeric without display scale, zero as one form.
fn canonical_numeric(f: &[u8], out: &mut Vec<u8>) {
    if f.len() < 8 {
        out.extend_from_slice(f);
        return;
    }
    let ndigits = u16::from_be_bytes([f[0], f[1]]) as usize;
    let weight = i16::from_be_bytes([f[2], f[3]]);
    let sign = u16::from_be_bytes([f[4], f[5]]);
    let digits: Vec<u16> = (0..ndigits)
        .filter_map(|i| {
            f.get(8 + 2 * i..10 + 2 * i)
                .map(|d| u16::from_be_bytes([d[0], d[1]]))
        })
        .collect();
    let first = digits.iter().position(|&d| d != 0);
    let last = digits.iter().rposition(|&d| d != 0);
    match (first, last) {
        (Some(a), Some(z)) => {
            out.extend_from_slice(&sign.to_be_bytes());
            out.extend_from_slice(&(weight - a as i16).to_be_bytes());
            for d in &digits[a..=z] {
                out.extend_from_slice(&d.to_be_bytes());
            }
        }
        _ if sign == 0 || sign == 0x4000 => out.extend_from_slice(b"zero"),
        _ => out.extend_from_slice(&sign.to_be_bytes()),
    }
}

fn canonical_array(e: ElemType, f: &[u8], by: Encoder, out: &mut Vec<u8>) {
    let Some(elems) = array_elements(f) else {
        out.extend_from_slice(f);
        return;
    };
    out.extend_from_slice(&(elems.len() as u32).to_be_bytes());
    for el in elems {
        match el {
            None => out.extend_from_slice(&[0xff; 4]),
            Some(bytes) => {
                let mut c = Vec::new();
                canonical(e.scalar(), bytes, by, &mut c);
                out.extend_from_slice(&(c.len() as u32).to_be_bytes());
                out.extend_from_slice(&c);
            }
        }
    }
}

/// The elements of a one-dimensional binary array (empty for zero dimensions).
fn array_elements(f: &[u8]) -> Option<Vec<Option<&[u8]>>> {
    let ndim = i32::from_be_bytes(f.get(0..4)?.try_into().ok()?);
    if ndim == 0 {
        return Some(Vec::new());
    }
    if ndim != 1 {
        return None;
    }
    let n = i32::from_be_bytes(f.get(12..16)?.try_into().ok()?) as usize;
    let mut p = 20;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let len = i32::from_be_bytes(f.get(p..p + 4)?.try_into().ok()?);
        p += 4;
        if len < 0 {
            out.push(None);
        } else {
            let len = len as usize;
            out.push(Some(f.get(p..p + len)?));
            p += len;
        }
    }
    Some(out)
}

/// A field as readable text in one form whoever encoded it (jsonb as PostgreSQL prints it).
#[must_use]
pub fn render_from(ty: ColumnType, field: Option<&[u8]>, by: Encoder) -> String {
    match (ty, field, by) {
        (ColumnType::Jsonb, Some(f), Encoder::Ours) => {
            let mut out = Vec::new();
            canonical(ty, f, by, &mut out);
            String::from_utf8_lossy(&out).into_owned()
        }
        _ => render(ty, field),
    }
}

/// A field as readable text, for reports (`None` = NULL).
#[must_use]
pub fn render(ty: ColumnType, field: Option<&[u8]>) -> String {
    let Some(f) = field else { return "NULL".into() };
    let int = |n: usize| -> i64 {
        let mut v: i64 = if f.first().is_some_and(|b| b & 0x80 != 0) {
            -1
        } else {
            0
        };
        for &b in f.iter().take(n) {
            v = (v << 8) | i64::from(b);
        }
        v
    };
    match ty {
        ColumnType::Text | ColumnType::Varchar(_) | ColumnType::Json => {
            String::from_utf8_lossy(f).into_owned()
        }
        ColumnType::Jsonb => String::from_utf8_lossy(f.get(1..).unwrap_or_default()).into_owned(),
        ColumnType::Uuid => match <&[u8; 16]>::try_from(f) {
            Ok(b) => format_uuid(b),
            Err(_) => f.iter().map(|b| format!("{b:02x}")).collect(),
        },
        ColumnType::Int2 => int(2).to_string(),
        ColumnType::Int4 => int(4).to_string(),
        ColumnType::Int8 => int(8).to_string(),
        ColumnType::Float4 => f
            .try_into()
            .map(|b| f32::from_be_bytes(b).to_string())
            .unwrap_or_default(),
        ColumnType::Float8 => f
            .try_into()
            .map(|b| f64::from_be_bytes(b).to_string())
            .unwrap_or_default(),
        ColumnType::Bool => (f.first() == Some(&1)).to_string(),
        // PostgreSQL's epoch is 2000-01-01, ours 1970-01-01.
        ColumnType::Date => format_date(int(4) + 10_957),
        ColumnType::Timestamp | ColumnType::Timestamptz => {
            format_timestamp(int(8) + 946_684_800_000_000, ty == ColumnType::Timestamptz)
        }
        ColumnType::Bytea => {
            let mut s = String::from("\\x");
            for b in f {
                let _ = write!(s, "{b:02x}");
            }
            s
        }
        ColumnType::Numeric(_) => render_numeric(f),
        ColumnType::Array(e) => match array_elements(f) {
            Some(elems) => {
                let parts: Vec<String> = elems.iter().map(|el| render(e.scalar(), *el)).collect();
                format!("{{{}}}", parts.join(","))
            }
            None => "(unreadable array)".into(),
        },
    }
}

/// PostgreSQL binary numeric → plain decimal text.
#[must_use]
pub fn render_numeric(f: &[u8]) -> String {
    if f.len() < 8 {
        return "(bad numeric)".into();
    }
    let ndigits = u16::from_be_bytes([f[0], f[1]]) as usize;
    let weight = i32::from(i16::from_be_bytes([f[2], f[3]]));
    let sign = u16::from_be_bytes([f[4], f[5]]);
    let dscale = u16::from_be_bytes([f[6], f[7]]) as usize;
    match sign {
        0xC000 => return "NaN".into(),
        0xD000 => return "Infinity".into(),
        0xF000 => return "-Infinity".into(),
        _ => {}
    }
    let digit = |i: i32| -> u16 {
        if i < 0 || i as usize >= ndigits {
            0
        } else {
            let p = 8 + 2 * i as usize;
            f.get(p..p + 2)
                .map_or(0, |d| u16::from_be_bytes([d[0], d[1]]))
        }
    };
    let mut int = String::new();
    for i in 0..=weight.max(-1) {
        if i > weight {
            break;
        }
        let d = digit(i);
        if int.is_empty() {
            if d != 0 {
                int = d.to_string();
            }
        } else {
            let _ = write!(int, "{d:04}");
        }
    }
    if int.is_empty() {
        int.push('0');
    }
    let mut frac = String::new();
    let mut i = weight + 1;
    while frac.len() < dscale {
        let _ = write!(frac, "{:04}", digit(i));
        i += 1;
    }
    frac.truncate(dscale);
    let mut s = String::new();
    if sign == 0x4000 {
        s.push('-');
    }
    s.push_str(&int);
    if !frac.is_empty() {
        s.push('.');
        s.push_str(&frac);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scalar::number::write_pg_numeric;

    fn num(s: &str) -> Vec<u8> {
        let mut v = Vec::new();
        write_pg_numeric(s, &mut v);
        v
    }

    #[test]
    fn numeric_scale_does_not_matter_but_value_does() {
        let canon = |s: &str| {
            let mut o = Vec::new();
            canonical_numeric(&num(s), &mut o);
            o
        };
        assert_eq!(canon("12.5"), canon("12.50"));
        assert_eq!(canon("0"), canon("0.000"));
        assert_ne!(canon("12.5"), canon("12.51"));
        assert_ne!(canon("-1"), canon("1"));
        for s in [
            "0",
            "12.50",
            "-0.00001234",
            "12345.6789",
            "100000000",
            &format!("0.{}1", "0".repeat(129)),
        ] {
            assert_eq!(render_numeric(&num(s)), s, "render {s}");
        }
    }

    #[test]
    fn our_json_rearranged_as_postgres_prints_jsonb() {
        let mut out = Vec::new();
        pg_jsonb_text(
            br#"{"bb":[1.50,{"z":null,"a":true}],"a":"x\"y","ccc":{},"b":[]}"#,
            &mut out,
        )
        .expect("fast path");
        assert_eq!(
            String::from_utf8_lossy(&out),
            r#"{"a": "x\"y", "b": [], "bb": [1.50, {"a": true, "z": null}], "ccc": {}}"#
        );
        let mut out = Vec::new();
        assert!(
            pg_jsonb_text(br#"{"a\"":1}"#, &mut out).is_none(),
            "escaped keys take the slow path"
        );
        let mut field = vec![1u8];
        field.extend_from_slice(br#"{"zz":1,"a\"":[2,{"y\n":3,"x":4}]}"#);
        let mut slow = Vec::new();
        canonical(ColumnType::Jsonb, &field, Encoder::Ours, &mut slow);
        // PostgreSQL orders keys by length, then bytes: `a"` before `zz`.
        assert_eq!(
            String::from_utf8_lossy(&slow),
            r#"{"a\"": [2, {"x": 4, "y\n": 3}], "zz": 1}"#
        );
    }

    #[test]
    fn dates_and_timestamps_render_as_iso() {
        // PostgreSQL's epoch is 2000-01-01: day 0 and microsecond 0.
        assert_eq!(
            render(ColumnType::Date, Some(&0i32.to_be_bytes())),
            "2000-01-01"
        );
        assert_eq!(
            render(ColumnType::Date, Some(&(-10_957i32).to_be_bytes())),
            "1970-01-01"
        );
        let micros: i64 = 86_400_000_000 * 60 + 1_500_000;
        assert_eq!(
            render(ColumnType::Timestamptz, Some(&micros.to_be_bytes())),
            "2000-03-01T00:00:01.500000Z"
        );
    }

    #[test]
    fn jsonb_numbers_compare_by_value_as_jsonb_does() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        let field = |t: &str| [&[1u8][..], t.as_bytes()].concat();
        canonical(
            ColumnType::Jsonb,
            &field(r#"{"p": 12.50, "q": [3.0, -0.0, 1e2], "s": "12.50"}"#),
            Encoder::Postgres,
            &mut a,
        );
        canonical(
            ColumnType::Jsonb,
            &field(r#"{"p": 12.5, "q": [3, 0, 1e2], "s": "12.50"}"#),
            Encoder::Postgres,
            &mut b,
        );
        assert_eq!(String::from_utf8_lossy(&a), String::from_utf8_lossy(&b));
        assert!(
            String::from_utf8_lossy(&a).contains(r#""s": "12.50""#),
            "strings untouched"
        );
    }
}
