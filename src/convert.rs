//! The conversion rules of ARCHITECTURE §3: one DynamoDB attribute value → one typed cell
//! of a PostgreSQL column, or the reason it cannot be (which makes the item a reject).
//!
//! Input: an [`Av`] and the column's type and options. Output: a [`Cell`] that borrows
//! from the input line wherever it can. The same rules serve every source kind.

use std::borrow::Cow;

use base64::Engine as _;

use crate::config::EpochUnit;
use crate::ddbjson::{write_json_string, Av};
use crate::number;
use crate::schema::{ColumnType, ElemType};

/// A converted value, ready to append to the column's Arrow builder.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell<'a> {
    Null,
    /// text, varchar, json, jsonb, and numeric (as plain decimal text).
    Str(Cow<'a, str>),
    I16(i16),
    I32(i32),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    Uuid([u8; 16]),
    /// Days since 1970-01-01.
    Date(i32),
    /// Microseconds since 1970-01-01 UTC.
    Micros(i64),
    Bytes(Cow<'a, [u8]>),
    List(Vec<Cell<'a>>),
}

impl Cell<'_> {
    /// A copy that owns all its data.
    #[must_use]
    pub fn into_owned(self) -> Cell<'static> {
        match self {
            Cell::Null => Cell::Null,
            Cell::Str(s) => Cell::Str(Cow::Owned(s.into_owned())),
            Cell::I16(v) => Cell::I16(v),
            Cell::I32(v) => Cell::I32(v),
            Cell::I64(v) => Cell::I64(v),
            Cell::F32(v) => Cell::F32(v),
            Cell::F64(v) => Cell::F64(v),
            Cell::Bool(v) => Cell::Bool(v),
            Cell::Uuid(v) => Cell::Uuid(v),
            Cell::Date(v) => Cell::Date(v),
            Cell::Micros(v) => Cell::Micros(v),
            Cell::Bytes(b) => Cell::Bytes(Cow::Owned(b.into_owned())),
            Cell::List(l) => Cell::List(l.into_iter().map(Cell::into_owned).collect()),
        }
    }
}

/// What a column needs to know to convert a value.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub ty: ColumnType,
    pub strip_nul: bool,
    pub unit: EpochUnit,
}

const NUL_REASON: &str =
    "contains U+0000, which PostgreSQL text cannot hold (set `strip_nul = true` on the column to drop it)";

/// Converts one non-NULL value for a column.
///
/// # Errors
/// The rule the value breaks, e.g. `N 12.345 does not fit numeric(10,2)`.
pub fn convert<'a>(rule: &Rule, v: &'a Av<'a>) -> Result<Cell<'a>, String> {
    match rule.ty {
        ColumnType::Text => to_text(v, rule.strip_nul).map(Cell::Str),
        ColumnType::Varchar(n) => {
            let s = to_text(v, rule.strip_nul)?;
            if s.len() > n as usize && s.chars().count() > n as usize {
                return Err(format!(
                    "{} characters do not fit varchar({n})",
                    s.chars().count()
                ));
            }
            Ok(Cell::Str(s))
        }
        ColumnType::Uuid => match v {
            Av::S(s) => parse_uuid(s)
                .map(Cell::Uuid)
                .ok_or_else(|| format!("S \"{}\" is not a UUID", clip(s))),
            Av::B(b) => {
                let bytes = decode_base64(b)?;
                <[u8; 16]>::try_from(bytes.as_slice())
                    .map(Cell::Uuid)
                    .map_err(|_| format!("B of {} bytes is not a UUID (16 bytes)", bytes.len()))
            }
            other => Err(type_error(other, rule.ty)),
        },
        ColumnType::Int2 | ColumnType::Int4 | ColumnType::Int8 => {
            let text = number_text(v, rule.ty)?;
            let n = number::to_i64(&text).map_err(|e| format!("{e} for {}", rule.ty))?;
            match rule.ty {
                ColumnType::Int2 => i16::try_from(n)
                    .map(Cell::I16)
                    .map_err(|_| format!("{n} is out of range for smallint")),
                ColumnType::Int4 => i32::try_from(n)
                    .map(Cell::I32)
                    .map_err(|_| format!("{n} is out of range for integer")),
                _ => Ok(Cell::I64(n)),
            }
        }
        ColumnType::Numeric(pm) => {
            let text = number_text(v, rule.ty)?;
            if let Some((p, s)) = pm {
                number::check_fits(&text, p, s)?;
            }
            Ok(Cell::Str(text))
        }
        ColumnType::Float4 => {
            let text = number_text(v, rule.ty)?;
            let f: f32 = text.parse().map_err(|_| format!("{text} is not a real"))?;
            if f.is_finite() {
                Ok(Cell::F32(f))
            } else {
                Err(format!("{text} is out of range for real"))
            }
        }
        ColumnType::Float8 => {
            let text = number_text(v, rule.ty)?;
            let f: f64 = text
                .parse()
                .map_err(|_| format!("{text} is not a double precision"))?;
            if f.is_finite() {
                Ok(Cell::F64(f))
            } else {
                Err(format!("{text} is out of range for double precision"))
            }
        }
        ColumnType::Bool => match v {
            Av::Bool(b) => Ok(Cell::Bool(*b)),
            Av::S(s) => parse_bool(s)
                .map(Cell::Bool)
                .ok_or_else(|| format!("S \"{}\" is not a boolean", clip(s))),
            Av::N(n) => match number::normalize(n)?.as_ref() {
                "0" => Ok(Cell::Bool(false)),
                "1" => Ok(Cell::Bool(true)),
                other => Err(format!("N {other} is not a boolean (only 0 and 1 are)")),
            },
            other => Err(type_error(other, rule.ty)),
        },
        ColumnType::Date => match v {
            Av::S(s) => parse_date(s)
                .map(Cell::Date)
                .ok_or_else(|| format!("S \"{}\" is not a date (YYYY-MM-DD)", clip(s))),
            other => Err(type_error(other, rule.ty)),
        },
        ColumnType::Timestamp | ColumnType::Timestamptz => {
            let micros = match v {
                Av::S(s) => parse_timestamp(s).ok_or_else(|| {
                    format!("S \"{}\" is not an RFC 3339 / ISO 8601 timestamp", clip(s))
                })?,
                Av::N(n) => {
                    let plain = number::normalize(n)?;
                    let shift = match rule.unit {
                        EpochUnit::Seconds => 6,
                        EpochUnit::Millis => 3,
                    };
                    number::scaled_i64(&plain, shift).map_err(|e| format!("epoch {e}"))?
                }
                other => return Err(type_error(other, rule.ty)),
            };
            if !(MIN_MICROS..=MAX_MICROS).contains(&micros) {
                return Err(format!(
                    "{} is outside PostgreSQL's timestamp range",
                    av_short(v)
                ));
            }
            Ok(Cell::Micros(micros))
        }
        ColumnType::Bytea => match v {
            Av::B(b) => decode_base64(b).map(|b| Cell::Bytes(Cow::Owned(b))),
            Av::S(s) => Ok(Cell::Bytes(match s {
                Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
                Cow::Owned(s) => Cow::Owned(s.clone().into_bytes()),
            })),
            other => Err(type_error(other, rule.ty)),
        },
        ColumnType::Json | ColumnType::Jsonb => {
            if let Av::Plain(json) = v {
                return Ok(Cell::Str(Cow::Borrowed(json)));
            }
            let mut out = String::with_capacity(256);
            let mut nul = NulPolicy::for_rule(rule);
            write_plain_json(&mut out, v, &mut nul)?;
            Ok(Cell::Str(Cow::Owned(out)))
        }
        ColumnType::Array(elem) => convert_array(rule, elem, v),
    }
}

fn convert_array<'a>(rule: &Rule, elem: ElemType, v: &'a Av<'a>) -> Result<Cell<'a>, String> {
    let er = Rule {
        ty: elem.scalar(),
        strip_nul: rule.strip_nul,
        unit: rule.unit,
    };
    let conv = |i: usize, e: &'a Av<'a>| -> Result<Cell<'a>, String> {
        match e {
            Av::Null => Ok(Cell::Null),
            Av::M(_) | Av::L(_) | Av::Plain(_) | Av::Ss(_) | Av::Ns(_) | Av::Bs(_) => Err(format!(
                "element {i} is {}: only a list of scalars goes into {}",
                e.type_name(),
                rule.ty
            )),
            _ => convert(&er, e).map_err(|r| format!("element {i}: {r}")),
        }
    };
    let cells = match v {
        Av::L(items) => items
            .iter()
            .enumerate()
            .map(|(i, e)| conv(i, e))
            .collect::<Result<Vec<_>, _>>()?,
        Av::Ss(_) | Av::Ns(_) | Av::Bs(_) => {
            // Sets convert element-wise with the element's own DynamoDB type, in their
            // canonical order (a set has none of its own).
            let items = set_in_order(v);
            let mut out = Vec::with_capacity(items.len());
            for (i, s) in items.into_iter().enumerate() {
                let e = match v {
                    Av::Ss(_) => Av::S(Cow::Borrowed(s)),
                    Av::Ns(_) => Av::N(Cow::Borrowed(s)),
                    _ => Av::B(Cow::Borrowed(s)),
                };
                out.push(
                    convert(&er, &e)
                        .map_err(|r| format!("element {i}: {r}"))?
                        .into_owned(),
                );
            }
            out
        }
        other => return Err(type_error(other, rule.ty)),
    };
    Ok(Cell::List(cells))
}

/// PostgreSQL's timestamp range in Unix microseconds (4713-11-24 BC to 294276 AD).
const MIN_MICROS: i64 = -210_866_803_200_000_000;
/// (PostgreSQL's upper bound lies beyond what 64-bit Unix microseconds reach.)
const MAX_MICROS: i64 = i64::MAX;

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

fn type_error(v: &Av<'_>, ty: ColumnType) -> String {
    format!("a {} value cannot go into {ty}", v.type_name())
}

fn av_short(v: &Av<'_>) -> String {
    match v {
        Av::S(s) | Av::N(s) | Av::B(s) => format!("{} {}", v.type_name(), clip(s)),
        other => other.type_name().to_string(),
    }
}

/// The first 60 characters of a value, for messages.
#[must_use]
pub fn clip(s: &str) -> Cow<'_, str> {
    if s.chars().count() <= 60 {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(format!("{}…", s.chars().take(60).collect::<String>()))
    }
}

fn number_text<'a>(v: &'a Av<'a>, ty: ColumnType) -> Result<Cow<'a, str>, String> {
    match v {
        Av::N(n) => number::normalize(n),
        Av::S(s) => number::normalize(s.trim())
            .map_err(|_| format!("S \"{}\" is not a number for {ty}", clip(s))),
        other => Err(type_error(other, ty)),
    }
}

fn to_text<'a>(v: &'a Av<'a>, strip_nul: bool) -> Result<Cow<'a, str>, String> {
    let s: Cow<'a, str> = match v {
        Av::S(s) => Cow::Borrowed(s.as_ref()),
        Av::N(n) => number::normalize(n)?,
        Av::B(b) => Cow::Borrowed(b.as_ref()),
        Av::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
        Av::Null => return Err("NULL has no text".into()),
        other => {
            let mut out = String::new();
            let mut nul = NulPolicy::Text { strip: strip_nul };
            write_plain_json(&mut out, other, &mut nul)?;
            return Ok(Cow::Owned(out));
        }
    };
    if has_nul(s.as_bytes()) {
        if strip_nul {
            return Ok(Cow::Owned(s.replace('\0', "")));
        }
        return Err(NUL_REASON.into());
    }
    Ok(s)
}

/// Whether `b` holds a zero byte: a plain loop for short text (most values; no call),
/// the vectorised search for long text.
#[inline]
fn has_nul(b: &[u8]) -> bool {
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
    #[must_use]
    pub fn for_rule(rule: &Rule) -> NulPolicy {
        match rule.ty {
            ColumnType::Json => NulPolicy::Keep,
            _ => NulPolicy::Text {
                strip: rule.strip_nul,
            },
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

/// Converts a `default = …` from `pipeline.toml` with the column's own rules.
///
/// # Errors
/// Why the default does not fit the column.
pub fn default_cell(ty: ColumnType, v: &toml::Value) -> Result<Cell<'static>, String> {
    let rule = Rule {
        ty,
        strip_nul: false,
        unit: EpochUnit::Seconds,
    };
    if matches!(ty, ColumnType::Json | ColumnType::Jsonb) {
        let json = match v {
            toml::Value::String(s) => serde_json::from_str::<serde_json::Value>(s)
                .map_err(|e| format!("a json default given as a string must be JSON text: {e}"))?,
            other => serde_json::to_value(other).map_err(|e| e.to_string())?,
        };
        let text = json.to_string();
        if ty == ColumnType::Jsonb && text.contains("\\u0000") {
            return Err(NUL_REASON.into());
        }
        return Ok(Cell::Str(Cow::Owned(text)));
    }
    let av = toml_to_av(v)?;
    convert(&rule, &av).map(Cell::into_owned)
}

fn toml_to_av(v: &toml::Value) -> Result<Av<'static>, String> {
    Ok(match v {
        toml::Value::String(s) => Av::S(Cow::Owned(s.clone())),
        toml::Value::Integer(i) => Av::N(Cow::Owned(i.to_string())),
        toml::Value::Float(f) => {
            if !f.is_finite() {
                return Err("a default must be a finite number".into());
            }
            Av::N(Cow::Owned(format!("{f:?}")))
        }
        toml::Value::Boolean(b) => Av::Bool(*b),
        toml::Value::Datetime(d) => Av::S(Cow::Owned(d.to_string())),
        toml::Value::Array(items) => Av::L(items.iter().map(toml_to_av).collect::<Result<_, _>>()?),
        toml::Value::Table(_) => {
            return Err("a table default only suits json and jsonb columns".into())
        }
    })
}

/// Lenient base64 (padding optional), standard alphabet as DynamoDB writes it.
///
/// # Errors
/// The text is not base64.
pub fn decode_base64(s: &str) -> Result<Vec<u8>, String> {
    const ENGINE: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    ENGINE
        .decode(s.as_bytes())
        .map_err(|e| format!("B \"{}\" is not base64: {e}", clip(s)))
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "t" | "yes" | "y" | "on" | "1" => Some(true),
        "false" | "f" | "no" | "n" | "off" | "0" => Some(false),
        _ => None,
    }
}

/// The hyphenated lowercase text of a UUID.
#[must_use]
pub fn format_uuid(bytes: &[u8; 16]) -> String {
    let h: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Hex digit values; 0xFF marks a byte that is not one.
const HEX: [u8; 256] = {
    let mut t = [0xFFu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// Parses `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, 32 bare hex digits, or either in braces.
#[must_use]
pub fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let s = s
        .strip_prefix('{')
        .and_then(|r| r.strip_suffix('}'))
        .unwrap_or(s);
    let b = s.as_bytes();
    let mut out = [0u8; 16];
    let mut bad = 0u8;
    let mut put = |i: usize, hi: u8, lo: u8| {
        let (h, l) = (HEX[hi as usize], HEX[lo as usize]);
        bad |= h | l;
        out[i] = (h << 4) | (l & 0x0F);
    };
    match b.len() {
        36 => {
            if b[8] != b'-' || b[13] != b'-' || b[18] != b'-' || b[23] != b'-' {
                return None;
            }
            // Byte i of the UUID starts at this offset of the hyphenated text.
            const AT: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
            for (i, &p) in AT.iter().enumerate() {
                put(i, b[p], b[p + 1]);
            }
        }
        32 => {
            for i in 0..16 {
                put(i, b[2 * i], b[2 * i + 1]);
            }
        }
        _ => return None,
    }
    // Valid digits are < 16; the invalid marker 0xFF sets the high bits.
    (bad & 0xF0 == 0).then_some(out)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(ty: &str) -> Rule {
        Rule {
            ty: ColumnType::parse(ty).expect("type"),
            strip_nul: false,
            unit: EpochUnit::Seconds,
        }
    }

    fn ok<'a>(ty: &str, v: &'a Av<'a>) -> Cell<'a> {
        convert(&rule(ty), v).unwrap_or_else(|e| panic!("{ty} {v:?}: {e}"))
    }

    fn err(ty: &str, v: &Av<'_>) -> String {
        convert(&rule(ty), v).expect_err("should reject")
    }

    #[test]
    fn numbers_convert_exactly_or_not_at_all() {
        assert_eq!(
            ok("numeric", &Av::N("-0015.789e6".into())),
            Cell::Str("-15789000".into())
        );
        let big = "9".repeat(38) + &"0".repeat(88);
        assert_eq!(
            ok("numeric", &Av::N(big.clone().into())),
            Cell::Str(big.into())
        );
        assert_eq!(
            ok("numeric(10,2)", &Av::N("12345678.5".into())),
            Cell::Str("12345678.5".into())
        );
        assert!(err("numeric(10,2)", &Av::N("1.005".into())).contains("rounded"));
        assert!(err("numeric(10,2)", &Av::N("123456789".into())).contains("integer digits"));
        assert_eq!(ok("smallint", &Av::N("-32768".into())), Cell::I16(-32768));
        assert!(err("smallint", &Av::N("32768".into())).contains("out of range"));
        assert_eq!(ok("integer", &Av::S(" 42 ".into())), Cell::I32(42));
        assert!(err("integer", &Av::N("1.5".into())).contains("not an integer"));
        assert_eq!(ok("bigint", &Av::N("1e3".into())), Cell::I64(1000));
        assert_eq!(ok("double precision", &Av::N("0.1".into())), Cell::F64(0.1));
        assert!(err("real", &Av::N("1e100".into())).contains("out of range"));
        assert!(err("numeric", &Av::N("NaN".into())).contains("not a number"));
        assert!(err("integer", &Av::Bool(true)).contains("BOOL"));
    }

    #[test]
    fn text_rules() {
        assert_eq!(
            ok("text", &Av::S("héllo 🥳".into())),
            Cell::Str("héllo 🥳".into())
        );
        assert_eq!(
            ok("varchar(3)", &Av::S("été".into())),
            Cell::Str("été".into())
        );
        assert!(err("varchar(3)", &Av::S("abcd".into())).contains("varchar(3)"));
        assert!(err("text", &Av::S("a\0b".into())).contains("U+0000"));
        let strip = Rule {
            strip_nul: true,
            ..rule("text")
        };
        assert_eq!(
            convert(&strip, &Av::S("a\0b".into())),
            Ok(Cell::Str("ab".into()))
        );
        assert_eq!(ok("text", &Av::N("1e2".into())), Cell::Str("100".into()));
        assert_eq!(
            ok("text", &Av::Ss(vec!["a".into(), "b".into()])),
            Cell::Str("[\"a\",\"b\"]".into())
        );
    }

    #[test]
    fn json_keeps_every_digit_and_nul_rules() {
        let v = Av::M(vec![
            ("n".into(), Av::N("123456789012345678901234567890.5".into())),
            ("b".into(), Av::B("AA==".into())),
            ("s".into(), Av::Ns(vec!["1".into(), "1e2".into()])),
            ("z".into(), Av::Null),
            (
                "l".into(),
                Av::L(vec![Av::Bool(true), Av::S("x\"y".into())]),
            ),
        ]);
        let want = r#"{"n":123456789012345678901234567890.5,"b":"AA==","s":[1,100],"z":null,"l":[true,"x\"y"]}"#;
        assert_eq!(ok("jsonb", &v), Cell::Str(want.into()));
        let nul = Av::M(vec![("k".into(), Av::S("a\0".into()))]);
        assert!(err("jsonb", &nul).contains("U+0000"));
        assert_eq!(ok("json", &nul), Cell::Str(r#"{"k":"a\u0000"}"#.into()));
    }

    #[test]
    fn uuid_bool_bytes_arrays() {
        let text = Av::S("0f8fad5b-d9cb-469f-a165-70867728950e".into());
        let u = ok("uuid", &text);
        assert_eq!(
            u,
            Cell::Uuid([
                0x0f, 0x8f, 0xad, 0x5b, 0xd9, 0xcb, 0x46, 0x9f, 0xa1, 0x65, 0x70, 0x86, 0x77, 0x28,
                0x95, 0x0e
            ])
        );
        assert!(
            err("uuid", &Av::S("0f8fad5b-d9cb-469f-a165-70867728950".into()))
                .contains("not a UUID")
        );
        assert_eq!(ok("boolean", &Av::S("yes".into())), Cell::Bool(true));
        assert_eq!(ok("boolean", &Av::N("0".into())), Cell::Bool(false));
        assert_eq!(
            ok("bytea", &Av::B("0000".into())),
            Cell::Bytes(vec![0xd3, 0x4d, 0x34].into())
        );
        assert!(err("bytea", &Av::B("!!".into())).contains("base64"));
        assert_eq!(
            ok("integer[]", &Av::Ns(vec!["1".into(), "2".into()])),
            Cell::List(vec![Cell::I32(1), Cell::I32(2)])
        );
        assert_eq!(
            ok("text[]", &Av::L(vec![Av::S("a".into()), Av::Null])),
            Cell::List(vec![Cell::Str("a".into()), Cell::Null])
        );
        assert!(err("text[]", &Av::L(vec![Av::M(vec![])])).contains("element 0"));
        assert!(err("bigint[]", &Av::Ns(vec!["1.5".into()])).contains("element 0"));
    }

    #[test]
    fn times() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_timestamp("2000-01-01"), Some(946_684_800_000_000));
        assert_eq!(
            parse_timestamp("2024-02-29T12:30:15.123456789+02:00"),
            Some(1_709_202_615_123_457)
        );
        assert_eq!(
            parse_timestamp("2024-02-29 12:30"),
            Some(1_709_209_800_000_000)
        );
        assert_eq!(parse_timestamp("2023-02-29T00:00:00Z"), None);
        assert_eq!(parse_timestamp("2024-01-01T25:00:00Z"), None);
        assert_eq!(parse_date("2000-01-01"), Some(10957));
        assert_eq!(
            ok("timestamptz", &Av::N("1.5".into())),
            Cell::Micros(1_500_000)
        );
        let ms = Rule {
            unit: EpochUnit::Millis,
            ..rule("timestamptz")
        };
        assert_eq!(
            convert(&ms, &Av::N("1500".into())),
            Ok(Cell::Micros(1_500_000))
        );
        assert!(err("timestamptz", &Av::N("1e20".into())).contains("range"));
        assert!(err("date", &Av::S("2020-13-01".into())).contains("not a date"));
    }

    #[test]
    fn defaults_use_the_same_rules() {
        assert_eq!(
            default_cell(ColumnType::Int4, &toml::Value::Integer(0)),
            Ok(Cell::I32(0))
        );
        assert_eq!(
            default_cell(
                ColumnType::Varchar(100),
                &toml::Value::String("General".into())
            ),
            Ok(Cell::Str("General".into()))
        );
        assert!(default_cell(ColumnType::Int2, &toml::Value::Integer(100_000)).is_err());
        assert_eq!(
            default_cell(ColumnType::Jsonb, &toml::Value::String("{}".into())),
            Ok(Cell::Str("{}".into()))
        );
    }
}
