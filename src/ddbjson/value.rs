//! The values DynamoDB JSON holds: [`Av`], one attribute value of DynamoDB's ten types
//! (borrowing from the line where it can), an [`Item`] of them, where the parser hands
//! each attribute ([`ItemSink`]), and why a line is not valid ([`ParseError`]).
//!
//! Input: none (the types). Output: what the parser builds and every later stage reads.

use std::borrow::Cow;

use base64::Engine as _;

use crate::scalar::clip;
use crate::schema::ColumnType;

/// One attribute value, as DynamoDB's ten types.
#[derive(Debug, Clone, PartialEq)]
pub enum Av<'a> {
    S(Cow<'a, str>),
    /// The number's text, exactly as written (validated when converted).
    N(Cow<'a, str>),
    /// Base64 text, decoded when converted.
    B(Cow<'a, str>),
    Bool(bool),
    Null,
    M(Vec<(Cow<'a, str>, Av<'a>)>),
    L(Vec<Av<'a>>),
    Ss(Vec<Cow<'a, str>>),
    Ns(Vec<Cow<'a, str>>),
    Bs(Vec<Cow<'a, str>>),
    /// An `M` or `L` already written as plain JSON while parsing (decode's path for the
    /// attributes of json columns, see [`parse_export_line_with`]): what
    /// [`plain::write_plain_json`] writes for the value (an object or an array).
    Plain(String),
}

impl Av<'_> {
    /// DynamoDB's name of the type.
    #[must_use]
    pub fn type_name(&self) -> &'static str {
        match self {
            Av::S(_) => "S",
            Av::N(_) => "N",
            Av::B(_) => "B",
            Av::Bool(_) => "BOOL",
            Av::Null => "NULL",
            Av::M(_) => "M",
            Av::L(_) => "L",
            Av::Ss(_) => "SS",
            Av::Ns(_) => "NS",
            Av::Bs(_) => "BS",
            Av::Plain(json) if json.starts_with('[') => "L",
            Av::Plain(_) => "M",
        }
    }
}

/// An item: attribute name → value, in the order written.
pub type Item<'a> = Vec<(Cow<'a, str>, Av<'a>)>;

/// Why a line is not a valid DynamoDB JSON item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The top-level attribute being read when it failed, if any.
    pub attribute: Option<String>,
    pub reason: String,
    /// Byte offset in the line.
    pub offset: usize,
}

/// Where the attributes of a parsed item go, one by one in the order written.
pub trait ItemSink<'a> {
    /// Asked with each top-level attribute's name before its value is read: where it
    /// answers with a policy and the value is an `M` or `L`, the value is written
    /// straight to plain JSON under that policy ([`Av::Plain`]) instead of being built
    /// as a tree.
    fn plain(&mut self, name: &str) -> Option<NulPolicy>;

    /// The attribute just read (`plain` was asked about it first).
    fn put(&mut self, name: Cow<'a, str>, value: Av<'a>);

    /// A string to write a plain value into; what it holds is discarded (a sink may
    /// hand back the allocations of values it is done with).
    fn buffer(&mut self) -> String {
        String::with_capacity(256)
    }

    /// A change line's `Keys` (the item's DynamoDB key), before its image is handed over.
    fn keys(&mut self, _keys: &[(Cow<'a, str>, Av<'a>)]) {}
}

/// The item as a list: every value as a tree.
impl<'a> ItemSink<'a> for Item<'a> {
    fn plain(&mut self, _: &str) -> Option<NulPolicy> {
        None
    }

    fn put(&mut self, name: Cow<'a, str>, value: Av<'a>) {
        self.push((name, value));
    }
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

/// Why a string with U+0000 is refused.
pub const NUL_REASON: &str =
    "contains U+0000, which PostgreSQL text cannot hold (set `strip_nul = true` on the column to drop it)";

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
