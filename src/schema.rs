//! Column types: the PostgreSQL types a `pipeline.toml` column may declare, how each is
//! spelled in DDL, which Arrow type carries it between decode and encode, and its OID.
//!
//! Input: the `type = "…"` text of a column. Output: a [`ColumnType`] that every later
//! stage dispatches on once per batch, never per value.

use std::fmt;
use std::fmt::Write as _;
use std::sync::Arc;

use arrow_schema::{DataType, Field, TimeUnit};
use postgres_types::Type;

/// Element types allowed inside a one-dimensional array column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElemType {
    Text,
    Int4,
    Int8,
    Numeric,
    Bytea,
}

/// A PostgreSQL column type that ddb2pg can load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Text,
    Varchar(u32),
    Uuid,
    Int2,
    Int4,
    Int8,
    /// `numeric` (`None`) or `numeric(precision, scale)`.
    Numeric(Option<(u32, u32)>),
    Float4,
    Float8,
    Bool,
    Date,
    Timestamp,
    Timestamptz,
    Bytea,
    Json,
    Jsonb,
    Array(ElemType),
}

impl ColumnType {
    /// Parses the `type` of a column, e.g. `varchar(100)` or `numeric(10,2)`.
    ///
    /// # Errors
    /// A message naming what is wrong with the text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let norm: String = text
            .trim()
            .to_ascii_lowercase()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let norm = norm
            .replace(" (", "(")
            .replace("( ", "(")
            .replace(" )", ")");
        let norm = norm.replace(", ", ",").replace(" ,", ",");
        if let Some(elem) = norm.strip_suffix("[]") {
            let elem = match elem {
                "text" => ElemType::Text,
                "integer" | "int" | "int4" => ElemType::Int4,
                "bigint" | "int8" => ElemType::Int8,
                "numeric" | "decimal" => ElemType::Numeric,
                "bytea" => ElemType::Bytea,
                other => {
                    return Err(format!(
                        "unsupported array element type `{other}` (use text[], integer[], bigint[], numeric[] or bytea[])"
                    ))
                }
            };
            return Ok(ColumnType::Array(elem));
        }
        let (base, args) = match norm.find('(') {
            Some(open) => {
                let Some(inner) = norm[open + 1..].strip_suffix(')') else {
                    return Err(format!("unbalanced parentheses in type `{text}`"));
                };
                (&norm[..open], Some(inner))
            }
            None => (norm.as_str(), None),
        };
        let nums = |inner: &str| -> Result<Vec<u32>, String> {
            inner
                .split(',')
                .map(|p| {
                    p.trim().parse::<u32>().map_err(|_| {
                        format!("`{p}` is not a non-negative integer in type `{text}`")
                    })
                })
                .collect()
        };
        let ty = match (base, args) {
            ("text", None) => ColumnType::Text,
            ("varchar" | "character varying", Some(a)) => {
                let n = nums(a)?;
                match n.as_slice() {
                    [len] if *len >= 1 && *len <= 10_485_760 => ColumnType::Varchar(*len),
                    _ => return Err(format!("`{text}`: varchar needs one length from 1 to 10485760")),
                }
            }
            ("varchar" | "character varying", None) => ColumnType::Text,
            ("uuid", None) => ColumnType::Uuid,
            ("smallint" | "int2", None) => ColumnType::Int2,
            ("integer" | "int" | "int4", None) => ColumnType::Int4,
            ("bigint" | "int8", None) => ColumnType::Int8,
            ("numeric" | "decimal", None) => ColumnType::Numeric(None),
            ("numeric" | "decimal", Some(a)) => {
                let n = nums(a)?;
                let (p, s) = match n.as_slice() {
                    [p] => (*p, 0),
                    [p, s] => (*p, *s),
                    _ => return Err(format!("`{text}`: numeric takes (precision) or (precision,scale)")),
                };
                if !(1..=1000).contains(&p) || s > p {
                    return Err(format!(
                        "`{text}`: numeric precision must be 1..=1000 and scale 0..=precision"
                    ));
                }
                ColumnType::Numeric(Some((p, s)))
            }
            ("real" | "float4", None) => ColumnType::Float4,
            ("double precision" | "float8", None) => ColumnType::Float8,
            ("boolean" | "bool", None) => ColumnType::Bool,
            ("date", None) => ColumnType::Date,
            ("timestamp" | "timestamp without time zone", None) => ColumnType::Timestamp,
            ("timestamptz" | "timestamp with time zone", None) => ColumnType::Timestamptz,
            ("bytea", None) => ColumnType::Bytea,
            ("json", None) => ColumnType::Json,
            ("jsonb", None) => ColumnType::Jsonb,
            _ => {
                return Err(format!(
                    "unknown column type `{text}` (supported: text, varchar(n), uuid, smallint, integer, bigint, numeric, numeric(p,s), real, double precision, boolean, date, timestamp, timestamptz, bytea, json, jsonb, text[], integer[], bigint[], numeric[], bytea[])"
                ))
            }
        };
        Ok(ty)
    }

    /// The type as written in `CREATE TABLE`.
    #[must_use]
    pub fn sql(&self) -> String {
        match self {
            ColumnType::Text => "text".into(),
            ColumnType::Varchar(n) => format!("varchar({n})"),
            ColumnType::Uuid => "uuid".into(),
            ColumnType::Int2 => "smallint".into(),
            ColumnType::Int4 => "integer".into(),
            ColumnType::Int8 => "bigint".into(),
            ColumnType::Numeric(None) => "numeric".into(),
            ColumnType::Numeric(Some((p, s))) => format!("numeric({p},{s})"),
            ColumnType::Float4 => "real".into(),
            ColumnType::Float8 => "double precision".into(),
            ColumnType::Bool => "boolean".into(),
            ColumnType::Date => "date".into(),
            ColumnType::Timestamp => "timestamp".into(),
            ColumnType::Timestamptz => "timestamptz".into(),
            ColumnType::Bytea => "bytea".into(),
            ColumnType::Json => "json".into(),
            ColumnType::Jsonb => "jsonb".into(),
            ColumnType::Array(e) => format!("{}[]", elem_sql(*e)),
        }
    }

    /// The PostgreSQL type (and so its OID).
    #[must_use]
    pub fn pg_type(&self) -> Type {
        match self {
            ColumnType::Text => Type::TEXT,
            ColumnType::Varchar(_) => Type::VARCHAR,
            ColumnType::Uuid => Type::UUID,
            ColumnType::Int2 => Type::INT2,
            ColumnType::Int4 => Type::INT4,
            ColumnType::Int8 => Type::INT8,
            ColumnType::Numeric(_) => Type::NUMERIC,
            ColumnType::Float4 => Type::FLOAT4,
            ColumnType::Float8 => Type::FLOAT8,
            ColumnType::Bool => Type::BOOL,
            ColumnType::Date => Type::DATE,
            ColumnType::Timestamp => Type::TIMESTAMP,
            ColumnType::Timestamptz => Type::TIMESTAMPTZ,
            ColumnType::Bytea => Type::BYTEA,
            ColumnType::Json => Type::JSON,
            ColumnType::Jsonb => Type::JSONB,
            ColumnType::Array(ElemType::Text) => Type::TEXT_ARRAY,
            ColumnType::Array(ElemType::Int4) => Type::INT4_ARRAY,
            ColumnType::Array(ElemType::Int8) => Type::INT8_ARRAY,
            ColumnType::Array(ElemType::Numeric) => Type::NUMERIC_ARRAY,
            ColumnType::Array(ElemType::Bytea) => Type::BYTEA_ARRAY,
        }
    }

    /// The Arrow type that carries this column between decode and encode.
    ///
    /// Numbers bound for `numeric` travel as their exact decimal text: no Arrow decimal
    /// holds DynamoDB's full range (a 126-digit integer, 130 fractional digits).
    #[must_use]
    pub fn arrow_type(&self) -> DataType {
        match self {
            ColumnType::Text
            | ColumnType::Varchar(_)
            | ColumnType::Numeric(_)
            | ColumnType::Json
            | ColumnType::Jsonb => DataType::Utf8,
            ColumnType::Uuid => DataType::FixedSizeBinary(16),
            ColumnType::Int2 => DataType::Int16,
            ColumnType::Int4 => DataType::Int32,
            ColumnType::Int8 => DataType::Int64,
            ColumnType::Float4 => DataType::Float32,
            ColumnType::Float8 => DataType::Float64,
            ColumnType::Bool => DataType::Boolean,
            ColumnType::Date => DataType::Date32,
            ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            ColumnType::Timestamptz => {
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
            }
            ColumnType::Bytea => DataType::Binary,
            ColumnType::Array(e) => {
                DataType::List(Arc::new(Field::new("item", elem_arrow(*e), true)))
            }
        }
    }

    /// Whether the type is textual in PostgreSQL (so cannot hold U+0000).
    #[must_use]
    pub fn is_text_like(&self) -> bool {
        matches!(
            self,
            ColumnType::Text
                | ColumnType::Varchar(_)
                | ColumnType::Json
                | ColumnType::Jsonb
                | ColumnType::Array(ElemType::Text)
        )
    }
}

fn elem_sql(e: ElemType) -> &'static str {
    match e {
        ElemType::Text => "text",
        ElemType::Int4 => "integer",
        ElemType::Int8 => "bigint",
        ElemType::Numeric => "numeric",
        ElemType::Bytea => "bytea",
    }
}

fn elem_arrow(e: ElemType) -> DataType {
    match e {
        ElemType::Text | ElemType::Numeric => DataType::Utf8,
        ElemType::Int4 => DataType::Int32,
        ElemType::Int8 => DataType::Int64,
        ElemType::Bytea => DataType::Binary,
    }
}

impl ElemType {
    /// The scalar column type of one element.
    #[must_use]
    pub fn scalar(self) -> ColumnType {
        match self {
            ElemType::Text => ColumnType::Text,
            ElemType::Int4 => ColumnType::Int4,
            ElemType::Int8 => ColumnType::Int8,
            ElemType::Numeric => ColumnType::Numeric(None),
            ElemType::Bytea => ColumnType::Bytea,
        }
    }

    /// The element's PostgreSQL type.
    #[must_use]
    pub fn pg_type(self) -> Type {
        self.scalar().pg_type()
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.sql())
    }
}

/// Quotes an SQL identifier.
#[must_use]
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A PostgreSQL name for `base`: itself when it fits in 63 bytes, else its first 54 bytes
/// and 8 hex digits of its MD5 — never cut into another object's name (a 63-byte
/// table's `_pkey` cut to 63 bytes is the table's own name).
#[must_use]
pub fn pg_name(base: &str) -> String {
    if base.len() <= 63 {
        return base.to_string();
    }
    let mut end = 54;
    while !base.is_char_boundary(end) {
        end -= 1;
    }
    let digest = <md5::Md5 as md5::Digest>::digest(base.as_bytes());
    let hash: String = digest.iter().take(4).fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    });
    format!("{}_{hash}", &base[..end])
}

/// A byte that continues an identifier (or a `$n` parameter).
fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

/// Checks that an SQL fragment of the config (an index's `expression` or `where`) is one
/// expression: no `;` and no unbalanced parenthesis outside quotes and comments, so it
/// cannot end the statement it is put in and start another.
///
/// # Errors
/// What is wrong, and at which character.
pub fn one_expression(sql: &str) -> Result<(), String> {
    let b = sql.as_bytes();
    let (mut i, mut depth) = (0usize, 0i64);
    while i < b.len() {
        match b[i] {
            b'\'' | b'"' => {
                let q = b[i];
                // An E'…' string: a backslash escapes the next character.
                let e_string = q == b'\''
                    && i > 0
                    && matches!(b[i - 1], b'E' | b'e')
                    && (i < 2 || !is_ident(b[i - 2]));
                i += 1;
                loop {
                    match b.get(i) {
                        Some(b'\\') if e_string => i += 2,
                        None => {
                            return Err(format!("a quote opened at character {} is not closed", i))
                        }
                        Some(&c) if c == q && b.get(i + 1) == Some(&q) => i += 2,
                        Some(&c) if c == q => break,
                        Some(_) => i += 1,
                    }
                }
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                return Err(format!(
                    "the `--` comment at character {i} would hide the rest of the statement"
                ));
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let (start, mut level) = (i, 0usize);
                loop {
                    if i >= b.len() {
                        return Err(format!(
                            "a comment opened at character {start} is not closed"
                        ));
                    }
                    if b[i..].starts_with(b"/*") {
                        level += 1;
                        i += 2;
                    } else if b[i..].starts_with(b"*/") {
                        level -= 1;
                        i += 2;
                        if level == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                continue;
            }
            b'$' if i == 0 || !is_ident(b[i - 1]) => {
                // A dollar quote: $tag$ … $tag$ (a `$1` parameter has no closing `$`).
                let tag_end = b[i + 1..]
                    .iter()
                    .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
                    .map(|p| i + 1 + p);
                if let Some(e) = tag_end.filter(|&e| b[e] == b'$') {
                    let tag = &b[i..=e];
                    let body = e + 1;
                    match b[body..].windows(tag.len()).position(|w| w == tag) {
                        Some(p) => i = body + p + tag.len() - 1,
                        None => {
                            return Err(format!(
                                "a dollar quote opened at character {i} is not closed"
                            ))
                        }
                    }
                }
            }
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth < 0 {
                    return Err(format!(
                        "the `)` at character {i} closes more than was opened"
                    ));
                }
            }
            b';' => return Err(format!("`;` at character {i} would end the statement")),
            _ => {}
        }
        i += 1;
    }
    if depth != 0 {
        return Err("a `(` is not closed".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_documented_type() {
        let cases = [
            ("text", ColumnType::Text),
            ("varchar(100)", ColumnType::Varchar(100)),
            ("uuid", ColumnType::Uuid),
            ("smallint", ColumnType::Int2),
            ("integer", ColumnType::Int4),
            ("bigint", ColumnType::Int8),
            ("numeric", ColumnType::Numeric(None)),
            ("numeric(10,2)", ColumnType::Numeric(Some((10, 2)))),
            ("numeric(10, 2)", ColumnType::Numeric(Some((10, 2)))),
            ("real", ColumnType::Float4),
            ("double precision", ColumnType::Float8),
            ("boolean", ColumnType::Bool),
            ("date", ColumnType::Date),
            ("timestamp", ColumnType::Timestamp),
            ("timestamptz", ColumnType::Timestamptz),
            ("bytea", ColumnType::Bytea),
            ("json", ColumnType::Json),
            ("jsonb", ColumnType::Jsonb),
            ("text[]", ColumnType::Array(ElemType::Text)),
            ("integer[]", ColumnType::Array(ElemType::Int4)),
            ("bigint[]", ColumnType::Array(ElemType::Int8)),
            ("numeric[]", ColumnType::Array(ElemType::Numeric)),
            ("bytea[]", ColumnType::Array(ElemType::Bytea)),
        ];
        for (text, want) in cases {
            assert_eq!(ColumnType::parse(text), Ok(want), "{text}");
            assert_eq!(
                ColumnType::parse(&want.sql()),
                Ok(want),
                "round trip of {text}"
            );
        }
    }

    #[test]
    fn rejects_unknown_and_malformed_types() {
        for bad in [
            "texty",
            "numeric(2,3)",
            "varchar(0)",
            "numeric(x)",
            "point[]",
            "varchar(10",
        ] {
            assert!(ColumnType::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn long_names_are_hashed_not_cut_into_another() {
        let table = "t".repeat(63);
        let pkey = pg_name(&format!("{table}_pkey"));
        assert!(pkey.len() <= 63, "{pkey}");
        assert_ne!(pkey, table);
        assert_ne!(
            pg_name(&format!("{table}_a_key")),
            pg_name(&format!("{table}_b_key"))
        );
        assert_eq!(pg_name("orders_pkey"), "orders_pkey");
    }

    #[test]
    fn a_fragment_is_one_expression_or_refused() {
        for ok in [
            "lower(title)",
            "status = 'a;b' AND x IS NOT NULL",
            "\"we;ird\" > 0",
            "$q$;$q$ = x",
            "f(a, (b + 1)) /* ; */",
            "note = 'it''s; fine'",
            "E'a\\'b;c' = x",
            "a$x$ > 0 AND b$ = 1",
        ] {
            assert_eq!(one_expression(ok), Ok(()), "{ok}");
        }
        for bad in [
            "1)); DROP TABLE books; --",
            "x; DROP TABLE books",
            "x)",
            "(x",
            "'open",
            "x -- hides ))",
            "/* open",
            "$a$ open",
            "E'\\''||x)) WITH (fillfactor=10) --'",
            "E'\\'' ; x",
        ] {
            assert!(one_expression(bad).is_err(), "{bad}");
        }
    }
}
