//! The conversion rules of ARCHITECTURE §3: one DynamoDB attribute value → one typed cell
//! of a PostgreSQL column, or the reason it cannot be (which makes the item a reject).
//!
//! Input: an [`Av`] and the column's type and options. Output: a [`Cell`] that borrows
//! from the input line wherever it can. The same rules serve every source kind.

use std::borrow::Cow;

use crate::ddbjson::plain::{set_in_order, write_plain_json};
use crate::ddbjson::{decode_base64, has_nul, Av, NulPolicy, NUL_REASON};
use crate::scalar::time::{parse_date, parse_timestamp, EpochUnit};
use crate::scalar::uuid::parse_uuid;
use crate::scalar::{clip, number};
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

impl Rule {
    /// How U+0000 is handled when a value is written as JSON for this column.
    #[must_use]
    pub fn nul_policy(&self) -> NulPolicy {
        NulPolicy::for_column(self.ty, self.strip_nul)
    }
}

/// A number that is not zero but became 0 in a float: PostgreSQL refuses it ("out of
/// range"), so it is a reject, never a silent 0.
fn underflows(text: &str, is_zero: bool) -> bool {
    let mantissa = text.split(['e', 'E']).next().unwrap_or("");
    is_zero && mantissa.bytes().any(|b| (b'1'..=b'9').contains(&b))
}

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
            if f.is_finite() && !underflows(&text, f == 0.0) {
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
            if f.is_finite() && !underflows(&text, f == 0.0) {
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
            let mut nul = rule.nul_policy();
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
pub const MIN_MICROS: i64 = -210_866_803_200_000_000;
/// (PostgreSQL's upper bound lies beyond what 64-bit Unix microseconds reach.)
const MAX_MICROS: i64 = i64::MAX;

fn type_error(v: &Av<'_>, ty: ColumnType) -> String {
    format!("a {} value cannot go into {ty}", v.type_name())
}

fn av_short(v: &Av<'_>) -> String {
    match v {
        Av::S(s) | Av::N(s) | Av::B(s) => format!("{} {}", v.type_name(), clip(s)),
        other => other.type_name().to_string(),
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

/// Converts a `default = …` from `pipeline.toml` with the column's own rules.
///
/// # Errors
/// Why the default does not fit the column.
pub fn default_cell(rule: &Rule, v: &toml::Value) -> Result<Cell<'static>, String> {
    let ty = rule.ty;
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
    convert(rule, &av).map(Cell::into_owned)
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

/// A boolean as text (`true`/`t`/`yes`/`y`/`on`/`1` and their opposites, any case).
#[must_use]
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "t" | "yes" | "y" | "on" | "1" => Some(true),
        "false" | "f" | "no" | "n" | "off" | "0" => Some(false),
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
    fn stripping_nul_never_merges_two_attribute_names() {
        let rule = Rule {
            strip_nul: true,
            ..rule("jsonb")
        };
        let merged = Av::M(vec![
            ("a\0".into(), Av::N("1".into())),
            ("a".into(), Av::N("2".into())),
        ]);
        assert!(convert(&rule, &merged)
            .expect_err("merged")
            .contains("rejected rather than merged"));
        let apart = Av::M(vec![
            ("a\0".into(), Av::N("1".into())),
            ("b".into(), Av::N("2".into())),
        ]);
        assert_eq!(
            convert(&rule, &apart).expect("stripped"),
            Cell::Str(r#"{"a":1,"b":2}"#.into())
        );
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
        // Not zero, but 0 as a float: PostgreSQL refuses it, so it is a reject.
        assert!(err("real", &Av::N("1e-46".into())).contains("out of range"));
        assert!(err("double precision", &Av::N("-1e-400".into())).contains("out of range"));
        assert_eq!(ok("real", &Av::N("0.000e5".into())), Cell::F32(0.0));
        assert!(matches!(ok("real", &Av::N("1e-40".into())), Cell::F32(f) if f > 0.0));
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
            default_cell(&rule("integer"), &toml::Value::Integer(0)),
            Ok(Cell::I32(0))
        );
        assert_eq!(
            default_cell(
                &rule("varchar(100)"),
                &toml::Value::String("General".into())
            ),
            Ok(Cell::Str("General".into()))
        );
        assert!(default_cell(&rule("smallint"), &toml::Value::Integer(100_000)).is_err());
        assert_eq!(
            default_cell(&rule("jsonb"), &toml::Value::String("{}".into())),
            Ok(Cell::Str("{}".into()))
        );
        // A number into a timestamp is epoch time in the column's unit, as for data.
        assert_eq!(
            default_cell(&rule("timestamptz"), &toml::Value::Integer(0)),
            Ok(Cell::Micros(0))
        );
        let ms = Rule {
            unit: EpochUnit::Millis,
            ..rule("timestamptz")
        };
        assert_eq!(
            default_cell(&ms, &toml::Value::Integer(1500)),
            Ok(Cell::Micros(1_500_000))
        );
    }
}
