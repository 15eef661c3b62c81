//! Plain JSON out: a DynamoDB value written as the JSON a `json`/`jsonb` column holds —
//! numbers keep every digit, binary stays base64 text, sets become arrays in a canonical
//! order, `NULL` becomes null — and JSON string literals.
//!
//! Input: an [`Av`] (or an item's attributes) and how U+0000 is handled. Output: JSON text
//! appended to a `String`, or the reason the value cannot be written.

use std::borrow::Cow;
use std::fmt::Write as _;

use super::value::{decode_base64, Av, NulPolicy};
use crate::scalar::number;

/// Position of the first byte at or after `from` that ends a JSON string or needs an
/// escape: a quote, a backslash or a control character (a raw one inside a string is
/// refused, as JSON says). Eight bytes at a time: strings are mostly longer than a word
/// and hold none of these bytes.
#[inline(always)]
pub(super) fn find_escape(b: &[u8], from: usize) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    // Bytes of a word equal to zero, flagged in their high bit. A borrow can flag a byte
    // above a true zero too, never below one, so the lowest flag is always exact (the
    // same holds for the "below 0x20" test, and so for the union of the tests).
    let zero = |x: u64| x.wrapping_sub(LO) & !x & HI;
    let mut i = from;
    while i + 8 <= b.len() {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[i..i + 8]);
        let x = u64::from_le_bytes(w);
        let hit = zero(x ^ (LO * u64::from(b'"')))
            | zero(x ^ (LO * u64::from(b'\\')))
            | (x.wrapping_sub(LO * 0x20) & !x & HI);
        if hit != 0 {
            return Some(i + (hit.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    b.get(i..)?
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
        .map(|p| i + p)
}

/// Appends `s` as a JSON string literal.
pub fn write_json_string(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    let bytes = s.as_bytes();
    let mut start = 0;
    while let Some(i) = find_escape(bytes, start) {
        out.push_str(&s[start..i]);
        match bytes[i] {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            // PostgreSQL's own JSON output spells these two this way too.
            0x08 => out.push_str("\\b"),
            0x0c => out.push_str("\\f"),
            c => {
                let _ = write!(out, "\\u{:04x}", c);
            }
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Appends `{"TAG":"s"}`: one DynamoDB JSON value of a string-holding type.
pub fn write_tagged(out: &mut String, tag: &str, s: &str) {
    out.push_str("{\"");
    out.push_str(tag);
    out.push_str("\":");
    write_json_string(out, s);
    out.push('}');
}

/// Appends `{"TAG":[…]}`, each element written by `each`: an `L` or a set.
pub fn write_tagged_list<T>(
    out: &mut String,
    tag: &str,
    items: &[T],
    mut each: impl FnMut(&mut String, &T),
) {
    out.push_str("{\"");
    out.push_str(tag);
    out.push_str("\":[");
    for (i, e) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        each(out, e);
    }
    out.push_str("]}");
}

/// Appends the plain JSON form of a value: numbers keep every digit, binary stays base64
/// text, sets become arrays, `NULL` becomes null.
///
/// # Errors
/// An invalid number, or U+0000 where the policy refuses it.
pub fn write_plain_json(out: &mut String, v: &Av<'_>, nul: &mut NulPolicy) -> Result<(), String> {
    match v {
        Av::S(s) => write_json_string(out, &nul.string(s)?),
        Av::N(n) => out.push_str(&number::normalize(n)?),
        Av::B(b) => write_json_string(out, b),
        Av::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Av::Null => out.push_str("null"),
        Av::Plain(json) => out.push_str(json),
        Av::M(m) => write_plain_object(out, m, nul)?,
        Av::L(l) => {
            out.push('[');
            for (i, e) in l.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_plain_json(out, e, nul)?;
            }
            out.push(']');
        }
        Av::Ss(_) | Av::Bs(_) => {
            out.push('[');
            for (i, s) in set_in_order(v).into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_string(out, &nul.string(s)?);
            }
            out.push(']');
        }
        Av::Ns(_) => {
            out.push('[');
            for (i, s) in set_in_order(v).into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&number::normalize(s)?);
            }
            out.push(']');
        }
    }
    Ok(())
}

/// Appends a map (or the unmapped attributes of an item) as a plain JSON object.
///
/// # Errors
/// As [`write_plain_json`].
pub fn write_plain_object<'x, I>(
    out: &mut String,
    entries: I,
    nul: &mut NulPolicy,
) -> Result<(), String>
where
    I: IntoIterator<Item = &'x (Cow<'x, str>, Av<'x>)> + Clone,
{
    out.push('{');
    let mut stripped = false;
    for (i, (k, v)) in entries.clone().into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let key = nul.string(k)?;
        stripped |= matches!(key, Cow::Owned(_));
        write_json_string(out, &key);
        out.push(':');
        write_plain_json(out, v, nul)?;
    }
    out.push('}');
    if stripped {
        refuse_merged_names(entries)?;
    }
    Ok(())
}

/// Stripping U+0000 from attribute names must not make two of them one (jsonb would keep
/// only the last): such an item is rejected instead.
fn refuse_merged_names<'x, I>(entries: I) -> Result<(), String>
where
    I: IntoIterator<Item = &'x (Cow<'x, str>, Av<'x>)>,
{
    let mut seen = std::collections::HashSet::new();
    for (k, _) in entries {
        let name = k.replace('\0', "");
        if !seen.insert(name.clone()) {
            return Err(format!(
                "two attribute names become `{name}` once U+0000 is stripped: rejected rather than merged"
            ));
        }
    }
    Ok(())
}

/// A set's elements in canonical order, so the same set gives the same row whichever order
/// DynamoDB returned it in (an export and a scan differ): strings by UTF-8 bytes, numbers
/// by value, binary by the decoded bytes.
#[must_use]
pub fn set_in_order<'x>(v: &'x Av<'_>) -> Vec<&'x str> {
    let (items, kind) = match v {
        Av::Ss(i) => (i, 0),
        Av::Ns(i) => (i, 1),
        Av::Bs(i) => (i, 2),
        _ => return Vec::new(),
    };
    let mut out: Vec<&str> = items.iter().map(AsRef::as_ref).collect();
    match kind {
        0 => {
            if !out.is_sorted() {
                out.sort_unstable();
            }
        }
        1 => {
            if !out.is_sorted_by(|a, b| number::cmp_decimal(a, b).is_le()) {
                out.sort_by(|a, b| number::cmp_decimal(a, b));
            }
        }
        _ => out.sort_by_cached_key(|s| decode_base64(s).unwrap_or_else(|_| s.as_bytes().to_vec())),
    }
    out
}
