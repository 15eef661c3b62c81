//! Plain JSON out: a DynamoDB value written as the JSON a `json`/`jsonb` column holds —
//! numbers keep every digit, binary stays base64 text, sets become arrays in a canonical
//! order, `NULL` becomes null — and JSON string literals.
//!
//! Input: an [`Av`] (or an item's attributes) and how U+0000 is handled. Output: JSON text
//! appended to a `String`, or the reason the value cannot be written.

use std::borrow::Cow;
use std::fmt::Write as _;

use super::parse::find_escape;
use super::{decode_base64, Av};
use crate::scalar::number;
use crate::schema::ColumnType;

/// Why a string with U+0000 is refused.
pub const NUL_REASON: &str =
    "contains U+0000, which PostgreSQL text cannot hold (set `strip_nul = true` on the column to drop it)";

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

/// Whether `b` holds a zero byte: a plain loop for short text (most values; no call),
/// the vectorised search for long text.
#[inline]
#[must_use]
pub fn has_nul(b: &[u8]) -> bool {
    if b.len() <= 32 {
        b.iter().fold(false, |acc, &c| acc | (c == 0))
    } else {
        memchr::memchr(0, b).is_some()
    }
}

/// How U+0000 inside strings is handled while writing JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NulPolicy {
    /// `json`: the escape `\u0000` is valid JSON text.
    Keep,
    /// jsonb or text: refuse, or strip when asked.
    Text { strip: bool },
}

impl NulPolicy {
    /// The policy of a column: `json` keeps the escape, the others refuse U+0000 or
    /// strip it (`strip_nul = true`).
    #[must_use]
    pub fn for_column(ty: ColumnType, strip_nul: bool) -> NulPolicy {
        match ty {
            ColumnType::Json => NulPolicy::Keep,
            _ => NulPolicy::Text { strip: strip_nul },
        }
    }

    /// `s` as this policy lets it into JSON text.
    ///
    /// # Errors
    /// U+0000 where the policy refuses it.
    pub fn string<'s>(&self, s: &'s str) -> Result<Cow<'s, str>, String> {
        match self {
            NulPolicy::Keep => Ok(Cow::Borrowed(s)),
            NulPolicy::Text { strip } => {
                if !has_nul(s.as_bytes()) {
                    Ok(Cow::Borrowed(s))
                } else if *strip {
                    Ok(Cow::Owned(s.replace('\0', "")))
                } else {
                    Err(NUL_REASON.into())
                }
            }
        }
    }
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
    I: IntoIterator<Item = &'x (Cow<'x, str>, Av<'x>)>,
{
    out.push('{');
    for (i, (k, v)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_json_string(out, &nul.string(k)?);
        out.push(':');
        write_plain_json(out, v, nul)?;
    }
    out.push('}');
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
