//! `ddb2pg init`: reads **every** item of a source (an export folder, an `s3://` export, or
//! a live table by parallel scan) on all cores and writes a `pipeline.toml` that loads it
//! with no reject, with the evidence per attribute.
//!
//! Each reader thread parses its splits' lines and folds each top-level attribute's value
//! into that attribute's statistics ([`AttrStats`]: counts, DynamoDB types, examples,
//! lengths, numeric range and scale, and how many values each candidate column type would
//! refuse, judged by the same functions the load converts with); memory is per attribute,
//! never per item. The threads' statistics merge, then each attribute gets the narrowest
//! type every observed value converts to ([`choose`]).
//!
//! Input: a source. Output: [`Inference`] (the report) and the config text ([`config_text`]).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::config::{Source, Tuning};
use crate::convert::{self, parse_bool, Rule};
use crate::ddbjson::{self, has_nul, Av};
use crate::error::{Error, Result};
use crate::scalar::number;
use crate::scalar::time::{parse_date, parse_timestamp, EpochUnit};
use crate::scalar::uuid::parse_uuid;
use crate::schema::{ColumnType, ElemType};
use crate::source::SourcePlan;

/// More distinct top-level attribute names than this go to the `rest` column unexamined
/// (items whose attribute names are data, not a schema).
pub const MAX_ATTRIBUTES: usize = 2000;
/// Examples kept per attribute.
const EXAMPLES: usize = 3;

/// What to read and how to name it.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// `s3://bucket/prefix`, `dynamodb:Table`, or an export folder.
    pub from: String,
    /// The key attributes (partition, then sort), when given.
    pub key: Option<Vec<String>>,
    /// The target table's name (default: from the source).
    pub table: Option<String>,
    pub tuning: Tuning,
}

/// The candidate column types, narrowest first within each family; each value is judged
/// against every one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cand {
    Boolean,
    Integer,
    Bigint,
    Numeric,
    Uuid,
    Date,
    Timestamptz,
    TimestamptzMs,
    TextArray,
    BigintArray,
    NumericArray,
    ByteaArray,
    Bytea,
    Jsonb,
    Text,
}

const CANDS: [Cand; 15] = [
    Cand::Boolean,
    Cand::Integer,
    Cand::Bigint,
    Cand::Numeric,
    Cand::Uuid,
    Cand::Date,
    Cand::Timestamptz,
    Cand::TimestamptzMs,
    Cand::TextArray,
    Cand::BigintArray,
    Cand::NumericArray,
    Cand::ByteaArray,
    Cand::Bytea,
    Cand::Jsonb,
    Cand::Text,
];

impl Cand {
    fn ty(self) -> ColumnType {
        match self {
            Cand::Boolean => ColumnType::Bool,
            Cand::Integer => ColumnType::Int4,
            Cand::Bigint => ColumnType::Int8,
            Cand::Numeric => ColumnType::Numeric(None),
            Cand::Uuid => ColumnType::Uuid,
            Cand::Date => ColumnType::Date,
            Cand::Timestamptz | Cand::TimestamptzMs => ColumnType::Timestamptz,
            Cand::TextArray => ColumnType::Array(ElemType::Text),
            Cand::BigintArray => ColumnType::Array(ElemType::Int8),
            Cand::NumericArray => ColumnType::Array(ElemType::Numeric),
            Cand::ByteaArray => ColumnType::Array(ElemType::Bytea),
            Cand::Bytea => ColumnType::Bytea,
            Cand::Jsonb => ColumnType::Jsonb,
            Cand::Text => ColumnType::Text,
        }
    }

    fn unit(self) -> EpochUnit {
        match self {
            Cand::TimestamptzMs => EpochUnit::Millis,
            _ => EpochUnit::Seconds,
        }
    }

    fn label(self) -> String {
        match self {
            Cand::Timestamptz => "timestamptz (epoch s)".into(),
            Cand::TimestamptzMs => "timestamptz (epoch ms)".into(),
            other => other.ty().to_string(),
        }
    }
}

const TYPE_NAMES: [&str; 10] = ["S", "N", "B", "BOOL", "NULL", "M", "L", "SS", "NS", "BS"];

fn type_index(v: &Av<'_>) -> usize {
    match v {
        Av::S(_) => 0,
        Av::N(_) => 1,
        Av::B(_) => 2,
        Av::Bool(_) => 3,
        Av::Null => 4,
        Av::M(_) => 5,
        Av::L(_) => 6,
        Av::Ss(_) => 7,
        Av::Ns(_) => 8,
        Av::Bs(_) => 9,
        Av::Plain(json) if json.starts_with('[') => 6,
        Av::Plain(_) => 5,
    }
}

/// Epoch seconds from 2000-01-01 to 2100-01-01: numbers in it under a time-like name are
/// taken for timestamps.
const EPOCH_S: (i64, i64) = (946_684_800, 4_102_444_800);
const EPOCH_MS: (i64, i64) = (EPOCH_S.0 * 1000, EPOCH_S.1 * 1000);

/// One attribute's statistics over the items read.
#[derive(Debug, Clone, Default)]
struct AttrStats {
    /// Where it was first seen (split, line): columns keep that order.
    first: (usize, u64),
    items: u64,
    types: [u64; 10],
    /// Non-NULL values each candidate refuses, by [`CANDS`] index.
    refused: [u64; 15],
    examples: Vec<String>,
    min_len: Option<u64>,
    max_len: Option<u64>,
    /// Numbers (N): the smallest and largest, plain decimal text.
    min_num: Option<String>,
    max_num: Option<String>,
    max_scale: u32,
    max_int_digits: u32,
    /// Integers (N) inside the plausible epoch ranges.
    epoch_s: u64,
    epoch_ms: u64,
    /// S values holding U+0000 (text refuses them unless `strip_nul`).
    nul_strings: u64,
    /// Non-empty lists whose every element is a map (a child table's shape).
    map_lists: u64,
    /// The DynamoDB types of list and set elements seen (bits by [`TYPE_NAMES`] index).
    elem_types: u16,
    /// Of a top-level attribute's lists: every map element's attributes, folded (a child
    /// table's columns, if every value is a list of maps).
    elements: Option<Box<ElementFold>>,
    /// The shapes of its S values (up to the first `#` included, else the whole value)
    /// with counts, while there are at most [`MAX_SHAPES`] and every value is S: a key
    /// prefix or a type attribute that tells a single-table design's entities apart.
    shapes: HashMap<String, u64>,
    shapes_over: bool,
    /// A key attribute's S values after their first `#`, folded (a `strip_prefix`
    /// column's type) — by the pass that folds a single-table design's entities.
    after_prefix: Option<Box<AttrStats>>,
}

/// Distinct shapes an attribute may have and still tell entities apart.
const MAX_SHAPES: usize = 32;

/// A value's shape: up to its first `#` included (`USER#`), else the whole value.
fn shape_of(s: &str) -> &str {
    s.find('#').map_or(s, |i| &s[..=i])
}

/// The map elements of an attribute's lists, their attributes folded like items'.
#[derive(Debug, Clone, Default)]
struct ElementFold {
    elements: u64,
    attrs: HashMap<String, AttrStats>,
    /// Attribute names beyond [`MAX_ATTRIBUTES`] (left in the parent's JSON column).
    skipped: u64,
}

impl ElementFold {
    fn add(&mut self, entries: &[(std::borrow::Cow<'_, str>, Av<'_>)]) {
        self.elements += 1;
        for (name, v) in entries {
            if let Some(a) = self.attrs.get_mut(name.as_ref()) {
                a.add_at(v, false);
            } else if self.attrs.len() < MAX_ATTRIBUTES {
                let mut a = AttrStats::default();
                a.add_at(v, false);
                self.attrs.insert(name.to_string(), a);
            } else {
                self.skipped += 1;
            }
        }
    }

    fn merge(&mut self, o: ElementFold) {
        self.elements += o.elements;
        self.skipped += o.skipped;
        for (k, v) in o.attrs {
            if let Some(a) = self.attrs.get_mut(&k) {
                a.merge(v);
            } else if self.attrs.len() < MAX_ATTRIBUTES {
                self.attrs.insert(k, v);
            } else {
                self.skipped += 1;
            }
        }
    }
}

impl AttrStats {
    fn add(&mut self, v: &Av<'_>) {
        self.add_at(v, true);
    }

    /// Adds a value; `top`: an item's attribute (its lists' map elements are folded too),
    /// not an element's.
    fn add_at(&mut self, v: &Av<'_>, top: bool) {
        self.items += 1;
        if top && !self.shapes_over {
            self.shape(v);
        }
        self.types[type_index(v)] += 1;
        if matches!(v, Av::Null) {
            return;
        }
        if self.examples.len() < EXAMPLES {
            let e = example(v);
            if !self.examples.contains(&e) {
                self.examples.push(e);
            }
        }
        let len = match v {
            Av::S(s) => Some(if s.is_ascii() {
                s.len() as u64
            } else {
                s.chars().count() as u64
            }),
            Av::B(b) => Some((b.trim_end_matches('=').len() * 3 / 4) as u64),
            _ => None,
        };
        if let Some(n) = len {
            self.min_len = Some(self.min_len.map_or(n, |m| m.min(n)));
            self.max_len = Some(self.max_len.map_or(n, |m| m.max(n)));
        }
        if let Av::S(s) = v {
            if has_nul(s.as_bytes()) {
                self.nul_strings += 1;
            }
        }
        if let Av::N(n) = v {
            if let Ok(plain) = number::normalize(n) {
                self.number(&plain);
            }
        }
        match v {
            Av::L(items) => {
                if !items.is_empty() && items.iter().all(|e| matches!(e, Av::M(_))) {
                    self.map_lists += 1;
                    if top {
                        let fold = self.elements.get_or_insert_with(Box::default);
                        for e in items {
                            if let Av::M(entries) = e {
                                fold.add(entries);
                            }
                        }
                    }
                }
                for e in items {
                    self.elem_types |= 1 << type_index(e);
                }
            }
            Av::Ss(e) if !e.is_empty() => self.elem_types |= 1,
            Av::Ns(e) if !e.is_empty() => self.elem_types |= 1 << 1,
            Av::Bs(e) if !e.is_empty() => self.elem_types |= 1 << 2,
            _ => {}
        }
        for (i, c) in CANDS.iter().enumerate() {
            if !fits(*c, v) {
                self.refused[i] += 1;
            }
        }
    }

    fn shape(&mut self, v: &Av<'_>) {
        let Av::S(text) = v else {
            self.shapes_over = true;
            self.shapes.clear();
            return;
        };
        let shape = shape_of(text);
        if let Some(n) = self.shapes.get_mut(shape) {
            *n += 1;
        } else if self.shapes.len() < MAX_SHAPES && shape.len() <= 64 {
            self.shapes.insert(shape.to_string(), 1);
        } else {
            self.shapes_over = true;
            self.shapes.clear();
        }
    }

    /// A key attribute's value after its first `#` (an S without `#` adds nothing).
    fn add_after_prefix(&mut self, v: &Av<'_>) {
        if let Av::S(text) = v {
            if let Some(i) = text.find('#') {
                let rest = Av::S(std::borrow::Cow::Borrowed(&text[i + 1..]));
                self.after_prefix
                    .get_or_insert_with(Box::default)
                    .add_at(&rest, false);
            }
        }
    }

    fn number(&mut self, plain: &str) {
        let (_, int, frac) = number::split_plain(plain);
        let scale = frac.trim_end_matches('0').len() as u32;
        self.max_scale = self.max_scale.max(scale);
        self.max_int_digits = self.max_int_digits.max(int.len() as u32);
        if self
            .min_num
            .as_deref()
            .is_none_or(|m| number::cmp_decimal(plain, m).is_lt())
        {
            self.min_num = Some(plain.to_string());
        }
        if self
            .max_num
            .as_deref()
            .is_none_or(|m| number::cmp_decimal(plain, m).is_gt())
        {
            self.max_num = Some(plain.to_string());
        }
        if let Ok(i) = number::to_i64(plain) {
            if (EPOCH_S.0..EPOCH_S.1).contains(&i) {
                self.epoch_s += 1;
            } else if (EPOCH_MS.0..EPOCH_MS.1).contains(&i) {
                self.epoch_ms += 1;
            }
        }
    }

    fn merge(&mut self, o: AttrStats) {
        self.first = self.first.min(o.first);
        self.items += o.items;
        for (a, b) in self.types.iter_mut().zip(o.types) {
            *a += b;
        }
        for (a, b) in self.refused.iter_mut().zip(o.refused) {
            *a += b;
        }
        for e in o.examples {
            if self.examples.len() < EXAMPLES && !self.examples.contains(&e) {
                self.examples.push(e);
            }
        }
        self.min_len = min_opt(self.min_len, o.min_len);
        self.max_len = self.max_len.max(o.max_len);
        if let Some(m) = o.min_num {
            if self
                .min_num
                .as_deref()
                .is_none_or(|s| number::cmp_decimal(&m, s).is_lt())
            {
                self.min_num = Some(m);
            }
        }
        if let Some(m) = o.max_num {
            if self
                .max_num
                .as_deref()
                .is_none_or(|s| number::cmp_decimal(&m, s).is_gt())
            {
                self.max_num = Some(m);
            }
        }
        self.max_scale = self.max_scale.max(o.max_scale);
        self.max_int_digits = self.max_int_digits.max(o.max_int_digits);
        self.epoch_s += o.epoch_s;
        self.epoch_ms += o.epoch_ms;
        self.nul_strings += o.nul_strings;
        self.map_lists += o.map_lists;
        self.elem_types |= o.elem_types;
        match (&mut self.elements, o.elements) {
            (Some(a), Some(b)) => a.merge(*b),
            (a @ None, b) => *a = b,
            (Some(_), None) => {}
        }
        match (&mut self.after_prefix, o.after_prefix) {
            (Some(a), Some(b)) => a.merge(*b),
            (a @ None, b) => *a = b,
            (Some(_), None) => {}
        }
        self.shapes_over |= o.shapes_over;
        if !self.shapes_over {
            for (k, n) in o.shapes {
                *self.shapes.entry(k).or_default() += n;
            }
            if self.shapes.len() > MAX_SHAPES {
                self.shapes_over = true;
            }
        }
        if self.shapes_over {
            self.shapes.clear();
        }
    }

    fn nulls(&self) -> u64 {
        self.types[4]
    }

    fn non_null(&self) -> u64 {
        self.items - self.nulls()
    }

    fn count(&self, name: &str) -> u64 {
        TYPE_NAMES
            .iter()
            .position(|t| *t == name)
            .map_or(0, |i| self.types[i])
    }

    fn refused(&self, c: Cand) -> u64 {
        CANDS
            .iter()
            .position(|x| *x == c)
            .map_or(u64::MAX, |i| self.refused[i])
    }
}

fn min_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

fn example(v: &Av<'_>) -> String {
    match v {
        Av::S(s) => format!("\"{}\"", crate::scalar::clip(s)),
        Av::N(n) => crate::scalar::clip(n).into_owned(),
        Av::B(b) => format!("B({} bytes)", b.trim_end_matches('=').len() * 3 / 4),
        Av::Bool(b) => b.to_string(),
        Av::Null => "NULL".into(),
        Av::M(m) => format!("{{{} keys}}", m.len()),
        Av::L(l) => format!("[{} elements]", l.len()),
        Av::Ss(s) | Av::Ns(s) | Av::Bs(s) => format!("{}({} elements)", v.type_name(), s.len()),
        Av::Plain(p) => crate::scalar::clip(p).into_owned(),
    }
}

/// Whether candidate `c` takes non-NULL value `v` as the load would convert it: the same
/// scalar functions as [`convert::convert`], without building an error message for the
/// common refusals; maps, lists and sets go through `convert` itself.
fn fits(c: Cand, v: &Av<'_>) -> bool {
    match v {
        Av::S(s) => match c {
            Cand::Boolean => parse_bool(s).is_some(),
            Cand::Integer | Cand::Bigint | Cand::Numeric => {
                let t = s.trim();
                t.bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.'))
                    && number::normalize(t).is_ok_and(|p| int_fits(c, &p))
            }
            Cand::Uuid => parse_uuid(s).is_some(),
            Cand::Date => parse_date(s).is_some(),
            Cand::Timestamptz | Cand::TimestamptzMs => {
                parse_timestamp(s).is_some_and(|m| m >= convert::MIN_MICROS)
            }
            Cand::Bytea => true,
            Cand::Jsonb | Cand::Text => !has_nul(s.as_bytes()),
            _ => false,
        },
        Av::N(n) => {
            let Ok(plain) = number::normalize(n) else {
                return false;
            };
            match c {
                Cand::Boolean => matches!(plain.as_ref(), "0" | "1"),
                Cand::Integer | Cand::Bigint | Cand::Numeric => int_fits(c, &plain),
                Cand::Timestamptz => {
                    number::scaled_i64(&plain, 6).is_ok_and(|m| m >= convert::MIN_MICROS)
                }
                Cand::TimestamptzMs => {
                    number::scaled_i64(&plain, 3).is_ok_and(|m| m >= convert::MIN_MICROS)
                }
                Cand::Jsonb | Cand::Text => true,
                _ => false,
            }
        }
        Av::Bool(_) => matches!(c, Cand::Boolean | Cand::Jsonb | Cand::Text),
        Av::Null => true,
        Av::B(_) => match c {
            Cand::Uuid | Cand::Bytea | Cand::Jsonb | Cand::Text => by_convert(c, v),
            _ => false,
        },
        Av::M(_) | Av::Plain(_) => match c {
            Cand::Jsonb | Cand::Text => by_convert(c, v),
            _ => false,
        },
        Av::L(_) | Av::Ss(_) | Av::Ns(_) | Av::Bs(_) => match c {
            Cand::TextArray
            | Cand::BigintArray
            | Cand::NumericArray
            | Cand::ByteaArray
            | Cand::Jsonb
            | Cand::Text => by_convert(c, v),
            _ => false,
        },
    }
}

fn int_fits(c: Cand, plain: &str) -> bool {
    match c {
        Cand::Integer => number::to_i64(plain).is_ok_and(|n| i32::try_from(n).is_ok()),
        Cand::Bigint => number::to_i64(plain).is_ok(),
        _ => true,
    }
}

fn by_convert(c: Cand, v: &Av<'_>) -> bool {
    let rule = Rule {
        ty: c.ty(),
        strip_nul: false,
        unit: c.unit(),
    };
    convert::convert(&rule, v).is_ok()
}

/// The column chosen for an attribute.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ColumnChoice {
    pub column: String,
    /// The type as `pipeline.toml` writes it.
    pub ty: String,
    pub required: bool,
    /// `unit = "ms"` (epoch milliseconds).
    pub unit_ms: bool,
    pub strip_nul: bool,
    /// Why this type, in a few words.
    pub why: String,
}

/// One attribute in the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttributeReport {
    pub attribute: String,
    /// Items holding the attribute (a NULL value included), and NULL values.
    pub items: u64,
    pub nulls: u64,
    /// DynamoDB types seen, with counts.
    pub types: Vec<(String, u64)>,
    pub examples: Vec<String>,
    /// S: characters; B: bytes.
    pub min_length: Option<u64>,
    pub max_length: Option<u64>,
    /// N values: range, most fractional digits, most integer digits.
    pub min_number: Option<String>,
    pub max_number: Option<String>,
    pub max_scale: Option<u32>,
    pub max_integer_digits: Option<u32>,
    /// For each plausible type, the items it would reject.
    pub rejects_by_type: Vec<(String, u64)>,
    /// Non-empty lists whose every element is a map (a child table's shape).
    pub lists_of_maps: u64,
    pub choice: ColumnChoice,
}

/// What `init` found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Inference {
    pub source: String,
    pub table: String,
    pub items: u64,
    /// Lines that are not a DynamoDB JSON item (none in a sound export), and the first.
    pub unreadable: u64,
    pub first_unreadable: Option<String>,
    pub mb_read: f64,
    pub seconds: f64,
    pub key: Vec<String>,
    /// Where the key came from: `--key`, `DescribeTable`, or a guess (with why).
    pub key_from: String,
    pub attributes: Vec<AttributeReport>,
    /// Attribute names beyond [`MAX_ATTRIBUTES`], left to the `rest` column.
    pub attributes_not_examined: u64,
    /// The `rest` column's name.
    pub rest_column: String,
    /// The source as `pipeline.toml` writes it.
    pub source_toml: String,
    /// Lists of maps proposed as child tables (a row per element).
    #[serde(default)]
    pub child_tables: Vec<ChildProposal>,
    /// A single-table design: a table per entity (the written config holds these
    /// instead of the one table).
    #[serde(default)]
    pub entities: Vec<EntityProposal>,
}

/// One entity of a single-table design, as a table of its own.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EntityProposal {
    pub table: String,
    /// Its `where`: the attribute, and the shape its values have (`ORDER#`: a prefix;
    /// else the whole value).
    pub attribute: String,
    pub shape: String,
    pub prefix: bool,
    pub items: u64,
    /// Its primary key's columns (the DynamoDB key's, less one constant in the entity).
    pub key: Vec<String>,
    pub columns: Vec<EntityColumn>,
    pub child_tables: Vec<ChildProposal>,
}

/// An entity table's column: its attribute's statistics (of the entity's items) and
/// choice, and the prefix it takes off (a key attribute whose every value has it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EntityColumn {
    pub attribute: AttributeReport,
    pub strip_prefix: Option<String>,
}

/// A list-of-maps attribute proposed as a child table: a row per element, with the
/// parent's key columns and the element's position.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildProposal {
    pub table: String,
    /// The parent's list attribute.
    pub unnest: String,
    /// Items holding a non-empty list, and the elements (rows) in all.
    pub lists: u64,
    pub elements: u64,
    /// Per parent key column, the child column taking it.
    pub parent_columns: Vec<(String, String)>,
    /// The ordinal column (the element's position, from 0).
    pub ordinal_column: String,
    /// The elements' attributes, as the item's are reported (counts are of elements).
    pub attributes: Vec<AttributeReport>,
    /// Element attribute names beyond the ones examined (left in the parent's column).
    pub attributes_not_examined: u64,
}

/// Reads `from` as `pipeline.toml`'s source would.
///
/// # Errors
/// An empty location or an unsupported scheme.
pub fn parse_from(from: &str) -> Result<Source> {
    if from.is_empty() {
        return Err(Error::Usage("--from must not be empty".into()));
    }
    if let Some(t) = from.strip_prefix("dynamodb:") {
        if t.is_empty() {
            return Err(Error::Usage(
                "--from dynamodb:TABLE needs a table name".into(),
            ));
        }
        return Ok(Source::DynamoDb {
            table: t.to_string(),
            segments: None,
            read_capacity: None,
            consistent: false,
        });
    }
    if let Some(rest) = from.strip_prefix("s3://") {
        if rest.is_empty() || rest.starts_with('/') {
            return Err(Error::Usage(
                "--from: an S3 location needs a bucket: s3://bucket/prefix".into(),
            ));
        }
        return Ok(Source::Export {
            location: from.to_string(),
            path: None,
        });
    }
    if from.contains("://") {
        return Err(Error::Usage(format!(
            "--from {from}: only export folders, s3:// exports and dynamodb:TABLE are supported"
        )));
    }
    let path = PathBuf::from(from);
    if !path.is_dir() {
        return Err(Error::Usage(format!(
            "--from {from}: not a folder (an export folder, s3://bucket/prefix or dynamodb:TABLE)"
        )));
    }
    let path = path.canonicalize().unwrap_or(path);
    Ok(Source::Export {
        location: path.display().to_string(),
        path: Some(path),
    })
}

/// Every item's attributes, folded per thread.
#[derive(Default)]
struct Fold {
    items: u64,
    unreadable: u64,
    first_unreadable: Option<String>,
    attrs: HashMap<String, AttrStats>,
    skipped: HashMap<String, ()>,
    /// A single-table design's pass: the attribute telling entities apart; each item
    /// is folded into `entities` under its value's shape instead.
    entity_attr: Option<String>,
    /// Attributes whose values after their first `#` are folded too (the key's).
    prefixed: Vec<String>,
    entities: HashMap<String, Fold>,
}

impl Fold {
    fn page(&mut self, split: usize, page: &crate::source::Page) {
        let mut item = Vec::with_capacity(32);
        for (n, line) in (page.first_line..).zip(page.data.split(|b| *b == b'\n')) {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match ddbjson::parse_export_line_into(line, &mut item) {
                Ok(()) => {
                    self.items += 1;
                    let Some(by) = &self.entity_attr else {
                        for (name, v) in &item {
                            self.attribute(split, n, name, v, &[]);
                        }
                        continue;
                    };
                    let shape = item
                        .iter()
                        .find(|(name, _)| name == by)
                        .and_then(|(_, v)| match v {
                            Av::S(text) => Some(shape_of(text).to_string()),
                            _ => None,
                        })
                        .unwrap_or_default();
                    let entity = self.entities.entry(shape).or_default();
                    entity.items += 1;
                    for (name, v) in &item {
                        entity.attribute(split, n, name, v, &self.prefixed);
                    }
                }
                Err(e) => {
                    self.unreadable += 1;
                    if self.first_unreadable.is_none() {
                        self.first_unreadable = Some(format!(
                            "{} line {n}{}: {}",
                            page.origin,
                            e.attribute
                                .as_deref()
                                .map(|a| format!(", attribute {a}"))
                                .unwrap_or_default(),
                            e.reason
                        ));
                    }
                }
            }
        }
    }

    fn attribute(&mut self, split: usize, line: u64, name: &str, v: &Av<'_>, prefixed: &[String]) {
        let after = prefixed.iter().any(|p| p == name);
        if let Some(a) = self.attrs.get_mut(name) {
            a.add(v);
            if after {
                a.add_after_prefix(v);
            }
            return;
        }
        if self.attrs.len() >= MAX_ATTRIBUTES {
            if self.skipped.len() < MAX_ATTRIBUTES * 8 {
                self.skipped.insert(name.to_string(), ());
            }
            return;
        }
        let mut a = AttrStats {
            first: (split, line),
            ..AttrStats::default()
        };
        a.add(v);
        if after {
            a.add_after_prefix(v);
        }
        self.attrs.insert(name.to_string(), a);
    }

    fn merge(&mut self, o: Fold) {
        self.items += o.items;
        self.unreadable += o.unreadable;
        if self.first_unreadable.is_none() {
            self.first_unreadable = o.first_unreadable;
        }
        for (k, v) in o.attrs {
            if let Some(a) = self.attrs.get_mut(&k) {
                a.merge(v);
            } else if self.attrs.len() < MAX_ATTRIBUTES {
                self.attrs.insert(k, v);
            } else {
                self.skipped.insert(k, ());
            }
        }
        for (k, ()) in o.skipped {
            if !self.attrs.contains_key(&k) {
                self.skipped.insert(k, ());
            }
        }
        for (k, f) in o.entities {
            match self.entities.get_mut(&k) {
                Some(e) => e.merge(f),
                None => {
                    self.entities.insert(k, f);
                }
            }
        }
    }
}

/// Reads every item of the source and infers the mapping.
///
/// # Errors
/// The source cannot be opened or read (naming the split), or no key can be found.
pub async fn infer(opts: &InitOptions) -> Result<Inference> {
    let source = parse_from(&opts.from)?;
    let began = Instant::now();
    let plan = SourcePlan::open_source(&source, &opts.tuning).await?;
    let (table, described_key) = match &plan {
        SourcePlan::Scan(s) => (s.table.clone(), Some(s.key.clone())),
        SourcePlan::Export(e) => (export_table_name(e, &opts.from), None),
        SourcePlan::Parquet(p) => (p.manifest.table.clone(), None),
    };
    let table = opts.table.clone().unwrap_or_else(|| snake_case(&table));
    let readers = plan.readers(&opts.tuning).max(1);
    let (page_bytes, page_lines) = (opts.tuning.page_bytes, opts.tuning.batch_rows);
    let bytes = Arc::new(AtomicU64::new(0));
    let reading = (plan.clone(), bytes.clone());
    let folded = tokio::task::spawn_blocking(move || {
        read_all(
            &reading.0,
            readers,
            (page_bytes, page_lines),
            &reading.1,
            None,
        )
    })
    .await
    .map_err(|e| Error::Internal(format!("init's readers stopped: {e}")))??;
    let mut attrs: Vec<(String, AttrStats)> = folded.attrs.into_iter().collect();
    attrs.sort_by(|a, b| a.1.first.cmp(&b.1.first).then(a.0.cmp(&b.0)));
    let items = folded.items;

    let (key, key_from) = match (&opts.key, described_key) {
        (Some(k), _) => (k.clone(), "--key".to_string()),
        (None, Some(k)) if !k.is_empty() => (k, "DescribeTable".to_string()),
        _ => guess_key(&attrs, items, &table)?,
    };
    for k in &key {
        let held = attrs
            .iter()
            .find(|(n, _)| n == k)
            .map_or(0, |(_, a)| a.non_null());
        if held < items {
            return Err(Error::Usage(format!(
                "key attribute {k} is missing (or NULL) in {} of {items} items: a key needs it in every item; pass --key with attributes every item holds",
                items - held
            )));
        }
    }
    let mut used = Vec::new();
    let mut reports = Vec::new();
    for (name, a) in &attrs {
        let column = unique_name(&snake_case(name), &mut used);
        let choice = choose(name, &column, a, items, key.contains(name));
        reports.push(report(name, a, choice));
    }
    let key_columns: Vec<String> = key
        .iter()
        .map(|k| {
            reports
                .iter()
                .find(|r| &r.attribute == k)
                .map_or_else(|| snake_case(k), |r| r.choice.column.clone())
        })
        .collect();
    let mut tables = vec![table.clone()];
    let child_tables = attrs
        .iter()
        .filter_map(|(name, a)| child_proposal(&table, name, a, &key_columns, &mut tables))
        .collect();
    let rest_column = ["attributes", "other_attributes", "ddb2pg_rest"]
        .iter()
        .map(|s| (*s).to_string())
        .find(|s| !used.contains(s))
        .unwrap_or_else(|| unique_name("attributes", &mut used));
    // A single-table design: every item read again, folded per entity.
    let mut entities = Vec::new();
    if let Some(by) = entity_attribute(&attrs, items, &key) {
        tracing::info!(attribute = %by, "A single-table design: reading again to fold each entity's attributes.");
        let reading = (plan.clone(), bytes.clone(), by.clone(), key.clone());
        let folded = tokio::task::spawn_blocking(move || {
            read_all(
                &reading.0,
                readers,
                (page_bytes, page_lines),
                &reading.1,
                Some((&reading.2, &reading.3)),
            )
        })
        .await
        .map_err(|e| Error::Internal(format!("init's readers stopped: {e}")))??;
        entities = entity_tables(&table, &by, &key, folded.entities, &mut tables);
    }
    Ok(Inference {
        source: plan.location(),
        table,
        items,
        unreadable: folded.unreadable,
        first_unreadable: folded.first_unreadable,
        mb_read: bytes.load(Ordering::Relaxed) as f64 / 1e6,
        seconds: began.elapsed().as_secs_f64(),
        key,
        key_from,
        attributes: reports,
        attributes_not_examined: folded.skipped.len() as u64,
        rest_column,
        source_toml: source_toml(&source),
        child_tables,
        entities,
    })
}

/// The attribute that tells a single-table design's entities apart, if any: a key
/// attribute (the sort key first) whose values share `PREFIX#` shapes, else an attribute
/// named like a type (`type`, `entityType`, `kind`…) that every item holds as one of 2–16
/// strings. Every item has one of its shapes, so every item goes to a table.
fn entity_attribute(attrs: &[(String, AttrStats)], items: u64, key: &[String]) -> Option<String> {
    let stats = |name: &str| attrs.iter().find(|(n, _)| n == name).map(|(_, a)| a);
    let shaped =
        |a: &AttrStats| !a.shapes_over && a.shapes.len() >= 2 && a.count("S") == items && items > 0;
    for k in key.iter().rev() {
        if let Some(a) = stats(k).filter(|a| shaped(a)) {
            if a.shapes.keys().any(|s| s.ends_with('#')) {
                return Some(k.clone());
            }
        }
    }
    attrs
        .iter()
        .find(|(n, a)| {
            let l = n.to_ascii_lowercase().replace(['_', '-'], "");
            let typed =
                l == "type" || l == "kind" || l.ends_with("type") || l.starts_with("entity");
            typed && shaped(a) && a.shapes.len() <= 16 && !a.shapes.keys().any(|s| s.contains('#'))
        })
        .map(|(n, _)| n.clone())
}

/// One table per entity of a single-table design.
fn entity_tables(
    table: &str,
    by: &str,
    key: &[String],
    folded: HashMap<String, Fold>,
    tables: &mut Vec<String>,
) -> Vec<EntityProposal> {
    let mut shapes: Vec<(String, Fold)> = folded.into_iter().collect();
    shapes.sort_by(|a, b| b.1.items.cmp(&a.1.items).then(a.0.cmp(&b.0)));
    let mut out = Vec::new();
    for (shape, fold) in shapes {
        let prefix = shape.ends_with('#');
        let entity = snake_case(shape.trim_end_matches('#'));
        let name = unique_name(
            &crate::schema::pg_name(&format!(
                "{table}_{}",
                if entity.is_empty() {
                    "items"
                } else {
                    entity.as_str()
                }
            )),
            tables,
        );
        let mut attrs: Vec<(String, AttrStats)> = fold.attrs.into_iter().collect();
        attrs.sort_by(|a, b| a.1.first.cmp(&b.1.first).then(a.0.cmp(&b.0)));
        let mut used = Vec::new();
        let mut columns = Vec::new();
        let mut key_columns = Vec::new();
        for (attr, a) in &attrs {
            // Constant in the entity: its `where` says it.
            if attr == by && !prefix {
                continue;
            }
            let in_key = key.contains(attr);
            let one = (!a.shapes_over && a.shapes.len() == 1)
                .then(|| a.shapes.keys().next().cloned())
                .flatten()
                .filter(|s| s.ends_with('#'));
            let (report_of, strip) = match (in_key, one, a.after_prefix.as_deref()) {
                (true, Some(p), Some(after)) => {
                    let base = snake_case(p.trim_end_matches('#'));
                    let column = unique_name(
                        &crate::schema::pg_name(&format!(
                            "{}id",
                            if base.is_empty() {
                                String::new()
                            } else {
                                format!("{base}_")
                            }
                        )),
                        &mut used,
                    );
                    let mut r = report(attr, a, choose(attr, &column, after, fold.items, true));
                    r.choice.why = format!("after {p}: {}", r.choice.why);
                    (r, Some(p))
                }
                _ => {
                    let column = unique_name(&snake_case(attr), &mut used);
                    (
                        report(attr, a, choose(attr, &column, a, fold.items, in_key)),
                        None,
                    )
                }
            };
            if let Some(k) = key.iter().position(|k| k == attr) {
                key_columns.push((k, report_of.choice.column.clone()));
            }
            columns.push(EntityColumn {
                attribute: report_of,
                strip_prefix: strip,
            });
        }
        key_columns.sort();
        let key_columns: Vec<String> = key_columns.into_iter().map(|k| k.1).collect();
        let mut names = tables.clone();
        let children = attrs
            .iter()
            .filter_map(|(n, a)| child_proposal(&name, n, a, &key_columns, &mut names))
            .collect();
        *tables = names;
        out.push(EntityProposal {
            table: name,
            attribute: by.to_string(),
            shape,
            prefix,
            items: fold.items,
            key: key_columns,
            columns,
            child_tables: children,
        });
    }
    out
}

/// A child table for an attribute whose every value is a list of maps (empty lists and
/// NULL allowed, at least one element): its columns are the parent's key, the position
/// and a column per element attribute, typed from the elements' values.
fn child_proposal(
    parent: &str,
    name: &str,
    a: &AttrStats,
    key_columns: &[String],
    tables: &mut Vec<String>,
) -> Option<ChildProposal> {
    let fold = a.elements.as_ref()?;
    let map_bit = 1u16 << 5;
    let lists_only = a.count("L") == a.non_null();
    if !lists_only || a.map_lists == 0 || a.elem_types & !map_bit != 0 || fold.elements == 0 {
        return None;
    }
    let table = unique_name(&format!("{parent}_{}", snake_case(name)), tables);
    let mut used: Vec<String> = key_columns.to_vec();
    let ordinal_column = unique_name("position", &mut used);
    let mut elem: Vec<(&String, &AttrStats)> = fold.attrs.iter().collect();
    elem.sort_by(|x, y| x.0.cmp(y.0));
    let attributes = elem
        .into_iter()
        .map(|(n, s)| {
            let column = unique_name(&snake_case(n), &mut used);
            report(n, s, choose(n, &column, s, fold.elements, false))
        })
        .collect();
    Some(ChildProposal {
        table,
        unnest: name.to_string(),
        lists: a.map_lists,
        elements: fold.elements,
        parent_columns: key_columns.iter().map(|k| (k.clone(), k.clone())).collect(),
        ordinal_column,
        attributes,
        attributes_not_examined: fold.skipped,
    })
}

/// Every split read on `readers` threads, each folding its own statistics.
fn read_all(
    plan: &SourcePlan,
    readers: usize,
    (page_bytes, page_lines): (usize, usize),
    bytes: &Arc<AtomicU64>,
    entities: Option<(&str, &[String])>,
) -> Result<Fold> {
    let next = AtomicUsize::new(0);
    let cancel = AtomicBool::new(false);
    let failed: Mutex<Option<Error>> = Mutex::new(None);
    let splits = plan.splits();
    let folds: Vec<Fold> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..readers.min(splits.max(1)))
            .map(|_| {
                scope.spawn(|| {
                    let mut fold = Fold::default();
                    if let Some((by, key)) = entities {
                        fold.entity_attr = Some(by.to_string());
                        fold.prefixed = key.to_vec();
                    }
                    loop {
                        let idx = next.fetch_add(1, Ordering::Relaxed);
                        if idx >= splits || cancel.load(Ordering::Relaxed) {
                            break;
                        }
                        let read = plan.read_split(
                            idx,
                            page_bytes,
                            page_lines,
                            bytes,
                            &cancel,
                            None,
                            |page| {
                                fold.page(idx, &page);
                                true
                            },
                        );
                        if let Err(e) = read {
                            cancel.store(true, Ordering::Relaxed);
                            if let Ok(mut f) = failed.lock() {
                                f.get_or_insert(e);
                            }
                            break;
                        }
                    }
                    fold
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| match h.join() {
                Ok(f) => Some(f),
                Err(_) => {
                    if let Ok(mut f) = failed.lock() {
                        f.get_or_insert(Error::Internal("an init reader thread panicked".into()));
                    }
                    None
                }
            })
            .collect()
    });
    if let Some(e) = failed.lock().ok().and_then(|mut f| f.take()) {
        return Err(e);
    }
    let mut all = Fold::default();
    for f in folds {
        all.merge(f);
    }
    Ok(all)
}

fn export_table_name(e: &crate::source::export::ExportPlan, from: &str) -> String {
    // `arn:aws:dynamodb:region:account:table/Name` (the export's ARN goes on with
    // `/export/…`).
    for arn in [&e.summary.table_arn, &e.summary.export_arn]
        .into_iter()
        .flatten()
    {
        if let Some(name) = arn.rsplit_once("table/").map(|(_, n)| n) {
            if !name.is_empty() {
                return name.split('/').next().unwrap_or(name).to_string();
            }
        }
    }
    let trimmed = from.trim_end_matches('/');
    let last = trimmed.rsplit('/').next().unwrap_or(trimmed);
    if last.is_empty() {
        "items".into()
    } else {
        last.to_string()
    }
}

/// A key when none is given or described: attributes every item holds as S, N or B, by
/// name — `id`, `pk` (+ `sk`), `<table>Id`, then the first `…id`.
fn guess_key(
    attrs: &[(String, AttrStats)],
    items: u64,
    table: &str,
) -> Result<(Vec<String>, String)> {
    let scalar_everywhere = |a: &AttrStats| {
        items > 0
            && a.non_null() == items
            && a.count("S") + a.count("N") + a.count("B") == a.non_null()
    };
    let cands: Vec<&str> = attrs
        .iter()
        .filter(|(_, a)| scalar_everywhere(a))
        .map(|(n, _)| n.as_str())
        .collect();
    let lower = |s: &str| s.to_ascii_lowercase().replace(['_', '-'], "");
    let singular = lower(table.strip_suffix('s').unwrap_or(table));
    let find = |want: &dyn Fn(&str) -> bool| cands.iter().find(|n| want(&lower(n))).copied();
    let why = "a guess: every item holds it; pass --key ATTR[,SORT] to choose";
    if let Some(pk) = find(&|n| n == "pk") {
        let mut key = vec![pk.to_string()];
        if let Some(sk) = find(&|n| n == "sk") {
            key.push(sk.to_string());
        }
        return Ok((key, why.into()));
    }
    for want in [
        &(|n: &str| n == "id") as &dyn Fn(&str) -> bool,
        &|n: &str| n == format!("{singular}id"),
        &|n: &str| n.ends_with("id"),
    ] {
        if let Some(k) = find(want) {
            return Ok((vec![k.to_string()], why.into()));
        }
    }
    Err(Error::Usage(format!(
        "no key found: pass --key ATTR[,SORT] (attributes every item holds as S, N or B: {})",
        if cands.is_empty() {
            "none".to_string()
        } else {
            cands.join(", ")
        }
    )))
}

/// A time-like attribute name: where numbers in the epoch range are taken for timestamps.
fn time_like(name: &str) -> bool {
    let n = snake_case(name);
    let words: Vec<&str> = n.split('_').collect();
    words.iter().any(|w| {
        matches!(
            *w,
            "at" | "time"
                | "timestamp"
                | "ts"
                | "date"
                | "epoch"
                | "ttl"
                | "expires"
                | "expiry"
                | "expiration"
                | "created"
                | "updated"
                | "modified"
                | "deleted"
        )
    })
}

/// The narrowest type every observed value of `a` converts to (see the module's doc).
fn choose(name: &str, column: &str, a: &AttrStats, items: u64, in_key: bool) -> ColumnChoice {
    let required = items > 0 && a.non_null() == items;
    let non_null = a.non_null();
    let only = |names: &[&str]| names.iter().map(|n| a.count(n)).sum::<u64>() == non_null;
    let ok = |c: Cand| a.refused(c) == 0;
    let mut choice = ColumnChoice {
        column: column.to_string(),
        ty: "text".into(),
        required,
        unit_ms: false,
        strip_nul: false,
        why: String::new(),
    };
    let set = |ty: &str, why: &str, c: &mut ColumnChoice| {
        c.ty = ty.into();
        c.why = why.into();
    };
    if non_null == 0 {
        set("text", "no value but NULL was seen", &mut choice);
    } else if only(&["BOOL"]) {
        set("boolean", "every value is BOOL", &mut choice);
    } else if only(&["N"]) {
        let all_int = ok(Cand::Bigint);
        if all_int && !in_key && a.epoch_ms == non_null && ok(Cand::TimestamptzMs) {
            set(
                "timestamptz",
                "every value is an integer in the epoch-milliseconds range of 2000–2100",
                &mut choice,
            );
            choice.unit_ms = true;
        } else if all_int
            && !in_key
            && a.epoch_s == non_null
            && time_like(name)
            && ok(Cand::Timestamptz)
        {
            set(
                "timestamptz",
                "a time-like name, every value an integer in the epoch-seconds range of 2000–2100",
                &mut choice,
            );
        } else if ok(Cand::Integer) {
            set(
                "integer",
                "every value is an integer of 32 bits",
                &mut choice,
            );
        } else if all_int {
            set(
                "bigint",
                "every value is an integer of 64 bits",
                &mut choice,
            );
        } else {
            let (p, s) = (a.max_int_digits + a.max_scale, a.max_scale);
            if (1..=1000).contains(&p) {
                choice.ty = format!("numeric({p},{s})");
                choice.why = format!(
                    "up to {} integer and {s} fractional digits",
                    a.max_int_digits
                );
            } else {
                set("numeric", "numbers beyond numeric(1000)", &mut choice);
            }
        }
    } else if only(&["S"]) {
        if ok(Cand::Uuid) {
            set("uuid", "every value is a UUID", &mut choice);
        } else if ok(Cand::Date) {
            set("date", "every value is a date (YYYY-MM-DD)", &mut choice);
        } else if ok(Cand::Timestamptz) {
            set(
                "timestamptz",
                "every value is an ISO 8601 / RFC 3339 timestamp",
                &mut choice,
            );
        } else {
            set("text", "strings", &mut choice);
        }
    } else if only(&["B"]) && ok(Cand::Bytea) {
        set("bytea", "every value is B", &mut choice);
    } else if let Some((ty, why)) = array_type(a).filter(|_| only(&["L", "SS", "NS", "BS"])) {
        set(ty, why, &mut choice);
    } else if a.count("M") + a.count("L") + a.count("SS") + a.count("NS") + a.count("BS") > 0 {
        set(
            "jsonb",
            "maps, lists or sets (or a mix of types with them)",
            &mut choice,
        );
    } else if only(&["N", "S"]) && ok(Cand::Numeric) {
        set(
            "numeric",
            "N and S mixed, every S a number: a type conflict, see the counts",
            &mut choice,
        );
    } else {
        set(
            "text",
            "a mix of types: text takes each as written (a type conflict, see the counts)",
            &mut choice,
        );
    }
    // What the rules above picked must take every value; if not (a U+0000 in a string),
    // text or jsonb with `strip_nul`.
    let chosen_refuses = match choice.ty.as_str() {
        "text" => a.refused(Cand::Text),
        "jsonb" => a.refused(Cand::Jsonb),
        _ => 0,
    };
    if chosen_refuses > 0 {
        choice.strip_nul = true;
        choice.why.push_str(&format!(
            "; {} value(s) hold U+0000, which PostgreSQL cannot store: strip_nul drops it",
            chosen_refuses
        ));
    }
    choice
}

/// The array type for lists and sets whose elements are all strings, all numbers or all
/// binary (NULL elements allowed), when it takes every value; `None` for other lists (a
/// map or list inside, mixed element types, only empty lists): jsonb.
fn array_type(a: &AttrStats) -> Option<(&'static str, &'static str)> {
    let null = 1u16 << 4;
    let elems = a.elem_types & !null;
    let ok = |c: Cand| a.refused(c) == 0;
    match elems {
        1 if ok(Cand::TextArray) => Some(("text[]", "lists or sets of strings")),
        2 if ok(Cand::BigintArray) => Some(("bigint[]", "lists or sets of integers")),
        2 if ok(Cand::NumericArray) => Some(("numeric[]", "lists or sets of numbers")),
        4 if ok(Cand::ByteaArray) => Some(("bytea[]", "lists or sets of binary values")),
        _ => None,
    }
}

fn report(name: &str, a: &AttrStats, choice: ColumnChoice) -> AttributeReport {
    let non_null = a.non_null();
    let mut types: Vec<(String, u64)> = TYPE_NAMES
        .iter()
        .zip(a.types)
        .filter(|(_, n)| *n > 0)
        .map(|(t, n)| ((*t).to_string(), n))
        .collect();
    types.sort_by_key(|t| std::cmp::Reverse(t.1));
    // The plausible types: those that take at least one value.
    let mut rejects_by_type: Vec<(String, u64)> = CANDS
        .iter()
        .zip(a.refused)
        .filter(|(_, r)| *r < non_null || non_null == 0)
        .map(|(c, r)| (c.label(), r))
        .collect();
    if a.count("N") > 0 && a.max_int_digits + a.max_scale <= 1000 && a.max_scale > 0 {
        let ps = format!(
            "numeric({},{})",
            a.max_int_digits + a.max_scale,
            a.max_scale
        );
        rejects_by_type.push((ps, a.refused(Cand::Numeric)));
    }
    let is_n = a.count("N") > 0;
    AttributeReport {
        attribute: name.to_string(),
        items: a.items,
        nulls: a.nulls(),
        types,
        examples: a.examples.clone(),
        min_length: a.min_len,
        max_length: a.max_len,
        min_number: a.min_num.clone(),
        max_number: a.max_num.clone(),
        max_scale: is_n.then_some(a.max_scale),
        max_integer_digits: is_n.then_some(a.max_int_digits),
        rejects_by_type,
        lists_of_maps: a.map_lists,
        choice,
    }
}

/// `createdAt` → `created_at`, `PK` → `pk`, `Order-Date` → `order_date`, `userID` →
/// `user_id`; never empty, never starting with a digit.
#[must_use]
pub fn snake_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_alphanumeric() {
            if c.is_uppercase() {
                let prev = i.checked_sub(1).and_then(|j| chars.get(j)).copied();
                let next = chars.get(i + 1).copied();
                let boundary = prev.is_some_and(|p| p.is_lowercase() || p.is_ascii_digit())
                    || (prev.is_some_and(char::is_uppercase)
                        && next.is_some_and(char::is_lowercase));
                if boundary && !out.ends_with('_') && !out.is_empty() {
                    out.push('_');
                }
                out.extend(c.to_lowercase());
            } else {
                out.push(c);
            }
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
    }
    let mut out = out.trim_end_matches('_').to_string();
    if out.is_empty() {
        out = "attribute".into();
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    crate::schema::pg_name(&out)
}

fn unique_name(base: &str, used: &mut Vec<String>) -> String {
    let mut name = base.to_string();
    let mut n = 2;
    while used.contains(&name) {
        name = crate::schema::pg_name(&format!("{base}_{n}"));
        n += 1;
    }
    used.push(name.clone());
    name
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn source_toml(s: &Source) -> String {
    match s {
        Source::Export { location, .. } => format!("{{ export = {} }}", toml_str(location)),
        Source::DynamoDb { table, .. } => format!("{{ dynamodb = {} }}", toml_str(table)),
        Source::Parquet { location, .. } => format!("{{ parquet = {} }}", toml_str(location)),
    }
}

/// The `pipeline.toml` that loads the source as inferred. `url`: the target to write in
/// it.
#[must_use]
pub fn config_text(inf: &Inference, from: &str, url: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Written by `ddb2pg init --from {from}` from every one of its {} items.\n# Each column's type is the narrowest every value read converts to; the report\n# (`--report FILE`) has the evidence per attribute. DDB2PG_TARGET_URL overrides the url.\n",
        inf.items
    );
    let _ = writeln!(
        s,
        "[target]\nurl = {}\nschema = \"public\"\n",
        toml_str(url)
    );
    if !inf.entities.is_empty() {
        entities_text(&mut s, inf);
        return s;
    }
    let _ = writeln!(s, "[[tables]]\nname = {}", toml_str(&inf.table));
    let _ = writeln!(s, "source = {}", inf.source_toml);
    let key: Vec<String> = inf
        .key
        .iter()
        .map(|k| {
            inf.attributes
                .iter()
                .find(|a| &a.attribute == k)
                .map_or_else(|| snake_case(k), |a| a.choice.column.clone())
        })
        .map(|c| toml_str(&c))
        .collect();
    let _ = writeln!(
        s,
        "primary_key = [{}]   # {}\n\n[tables.columns]",
        key.join(", "),
        inf.key_from
    );
    let width = inf
        .attributes
        .iter()
        .map(|a| toml_key(&a.choice.column).len())
        .max()
        .unwrap_or(0)
        .max(inf.rest_column.len());
    for a in &inf.attributes {
        column_line(&mut s, width, a, None, (inf.items, "items"));
    }
    let _ = writeln!(
        s,
        "{:width$} = {{ rest = true, type = \"jsonb\" }}   # attributes no item had when init read the source",
        toml_key(&inf.rest_column)
    );
    for c in &inf.child_tables {
        child_text(&mut s, inf, c);
    }
    s
}

/// A single-table design's tables, one per entity, each with its `where`.
fn entities_text(s: &mut String, inf: &Inference) {
    let _ = writeln!(
        s,
        "# A single-table design: {} kinds of item, told apart by {} — a table each, with\n# its `where`; a load reads the source once for all of them. The tables have no\n# `rest` column (a table with one reads the source in a pass of its own): add\n# `attributes = {{ rest = true, type = \"jsonb\" }}` to keep attributes init did not see.\n",
        inf.entities.len(),
        inf.entities.first().map_or("", |e| e.attribute.as_str())
    );
    for e in &inf.entities {
        let pct = 100.0 * e.items as f64 / inf.items.max(1) as f64;
        let _ = writeln!(
            s,
            "[[tables]]   # {} items ({pct:.1}%)\nname = {}\nprimary_key = [{}]\nsource = {}",
            e.items,
            toml_str(&e.table),
            e.key
                .iter()
                .map(|k| toml_str(k))
                .collect::<Vec<_>>()
                .join(", "),
            inf.source_toml
        );
        let _ = writeln!(
            s,
            "where = {{ attribute = {}, {} = {} }}\n\n[tables.columns]",
            toml_str(&e.attribute),
            if e.prefix { "prefix" } else { "equals" },
            toml_str(&e.shape)
        );
        let width = e
            .columns
            .iter()
            .map(|c| toml_key(&c.attribute.choice.column).len())
            .max()
            .unwrap_or(0);
        for c in &e.columns {
            let strip = c.strip_prefix.as_deref();
            column_line(s, width, &c.attribute, strip, (e.items, "its items"));
        }
        let parent = Inference {
            table: e.table.clone(),
            items: e.items,
            ..inf.clone()
        };
        for c in &e.child_tables {
            child_text(s, &parent, c);
        }
        s.push('\n');
    }
}

/// A proposed child table's `[[tables]]` entry.
fn child_text(s: &mut String, inf: &Inference, c: &ChildProposal) {
    let _ = writeln!(
        s,
        "\n# {} of {} items hold a list of maps in {}: a row per element ({} in all), with\n# the item's key (a foreign key to it, after the load) and the element's position.",
        c.lists,
        inf.items,
        c.unnest,
        c.elements
    );
    let _ = writeln!(
        s,
        "[[tables]]\nname = {}\nparent = {}\nunnest = {}\n\n[tables.columns]",
        toml_str(&c.table),
        toml_str(&inf.table),
        toml_str(&c.unnest)
    );
    let width = c
        .attributes
        .iter()
        .map(|a| toml_key(&a.choice.column).len())
        .chain(c.parent_columns.iter().map(|p| toml_key(&p.1).len()))
        .max()
        .unwrap_or(0)
        .max(c.ordinal_column.len());
    for (parent, column) in &c.parent_columns {
        let _ = writeln!(
            s,
            "{:width$} = {{ parent = {} }}",
            toml_key(column),
            toml_str(parent)
        );
    }
    let _ = writeln!(
        s,
        "{:width$} = {{ ordinal = true }}   # the position in the list, from 0",
        toml_key(&c.ordinal_column)
    );
    for a in &c.attributes {
        column_line(s, width, a, None, (c.elements, "elements"));
    }
    if c.attributes_not_examined > 0 {
        let _ = writeln!(
            s,
            "# {} more element attribute names than the {MAX_ATTRIBUTES} examined: in the parent's column only",
            c.attributes_not_examined
        );
    }
}

/// A column's line: its fields (with `strip_prefix` when given), and a comment with the
/// share of `of` (counted as `what`) holding a value and the DynamoDB types seen.
fn column_line(
    s: &mut String,
    width: usize,
    a: &AttributeReport,
    strip_prefix: Option<&str>,
    (of, what): (u64, &str),
) {
    let mut fields = column_fields(a);
    if let Some(p) = strip_prefix {
        fields.insert(1, format!("strip_prefix = {}", toml_str(p)));
    }
    let _ = writeln!(
        s,
        "{:width$} = {{ {} }}   # {:.0}% of {what}; {}",
        toml_key(&a.choice.column),
        fields.join(", "),
        share(a, of),
        type_counts(a)
    );
}

/// An attribute's column as `pipeline.toml` writes it (inside the braces).
fn column_fields(a: &AttributeReport) -> Vec<String> {
    let c = &a.choice;
    let mut fields = vec![
        format!("from = {}", toml_str(&a.attribute)),
        format!("type = {}", toml_str(&c.ty)),
    ];
    if c.required {
        fields.push("required = true".into());
    }
    if c.unit_ms {
        fields.push("unit = \"ms\"".into());
    }
    if c.strip_nul {
        fields.push("strip_nul = true".into());
    }
    fields
}

/// The share of `of` holding a non-NULL value, in percent.
fn share(a: &AttributeReport, of: u64) -> f64 {
    if of > 0 {
        100.0 * (a.items - a.nulls) as f64 / of as f64
    } else {
        0.0
    }
}

/// `S 9901, NULL 2`: the DynamoDB types seen, with counts.
fn type_counts(a: &AttributeReport) -> String {
    a.types
        .iter()
        .map(|(t, n)| format!("{t} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn toml_key(name: &str) -> String {
    if !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        name.to_string()
    } else {
        toml_str(name)
    }
}

/// The report as a terminal table.
#[must_use]
pub fn summary(inf: &Inference) -> String {
    let mut s = format!(
        "{} items read from {} in {:.2} s ({:.1} MB); table {}, key ({}) from {}\n\n",
        inf.items,
        inf.source,
        inf.seconds,
        inf.mb_read,
        inf.table,
        inf.key.join(", "),
        inf.key_from
    );
    let _ = writeln!(
        s,
        "{:<24} {:<24} {:<16} {:>9} {:<22} alternatives (items rejected)",
        "attribute", "column", "type", "holding", "DynamoDB types"
    );
    for a in &inf.attributes {
        let types = a
            .types
            .iter()
            .map(|(t, n)| format!("{t} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let alts = a
            .rejects_by_type
            .iter()
            .filter(|(t, _)| *t != a.choice.ty)
            .take(4)
            .map(|(t, n)| format!("{t} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            s,
            "{:<24} {:<24} {:<16} {:>9} {:<22} {}",
            crate::scalar::clip(&a.attribute),
            a.choice.column,
            a.choice.ty,
            a.items - a.nulls,
            types,
            alts
        );
        if a.types.iter().filter(|(t, _)| t != "NULL").count() > 1 {
            let _ = writeln!(
                s,
                "  type conflict in {}: {types}; {}",
                a.attribute, a.choice.why
            );
        }
    }
    for e in &inf.entities {
        let _ = writeln!(
            s,
            "\nentity table {} ({} items, {} {} {}): key ({}); columns: {}",
            e.table,
            e.items,
            e.attribute,
            if e.prefix { "starts with" } else { "=" },
            e.shape,
            e.key.join(", "),
            e.columns
                .iter()
                .map(|c| format!("{} {}", c.attribute.choice.column, c.attribute.choice.ty))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for c in inf.child_tables.iter().filter(|_| inf.entities.is_empty()) {
        let _ = writeln!(
            s,
            "\nchild table {} from {}: {} lists of maps, {} elements (rows); columns: {}",
            c.table,
            c.unnest,
            c.lists,
            c.elements,
            c.attributes
                .iter()
                .map(|a| format!("{} {}", a.choice.column, a.choice.ty))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if inf.unreadable > 0 {
        let _ = writeln!(
            s,
            "\n{} line(s) are not DynamoDB JSON items (the load rejects them); the first: {}",
            inf.unreadable,
            inf.first_unreadable.as_deref().unwrap_or("")
        );
    }
    if inf.attributes_not_examined > 0 {
        let _ = writeln!(
            s,
            "\n{} more attribute names than the {MAX_ATTRIBUTES} examined go to the `{}` column",
            inf.attributes_not_examined, inf.rest_column
        );
    }
    s
}

/// Where `init` writes when `--out` is not given.
#[must_use]
pub fn default_out() -> &'static Path {
    Path::new("pipeline.toml")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn stats(values: &[Av<'_>]) -> AttrStats {
        let mut a = AttrStats::default();
        for v in values {
            a.add(v);
        }
        a
    }

    fn s(v: &str) -> Av<'_> {
        Av::S(Cow::Borrowed(v))
    }

    fn n(v: &str) -> Av<'_> {
        Av::N(Cow::Borrowed(v))
    }

    #[test]
    fn names_become_snake_case() {
        assert_eq!(snake_case("createdAt"), "created_at");
        assert_eq!(snake_case("PK"), "pk");
        assert_eq!(snake_case("userID"), "user_id");
        assert_eq!(snake_case("Order-Date"), "order_date");
        assert_eq!(snake_case("HTTPServer"), "http_server");
        assert_eq!(snake_case("9lives"), "_9lives");
        assert_eq!(snake_case("#"), "attribute");
    }

    #[test]
    fn the_narrowest_type_that_takes_every_value() {
        let pick = |name: &str, vals: &[Av<'_>]| {
            choose(name, name, &stats(vals), vals.len() as u64, false).ty
        };
        assert_eq!(pick("qty", &[n("1"), n("2")]), "integer");
        assert_eq!(pick("big", &[n("1"), n("9999999999")]), "bigint");
        assert_eq!(pick("price", &[n("12.5"), n("100.25")]), "numeric(5,2)");
        assert_eq!(pick("huge", &[n("1e40")]), "numeric(41,0)");
        assert_eq!(pick("createdAt", &[n("1700000000")]), "timestamptz");
        assert_eq!(pick("views", &[n("1700000000")]), "integer");
        assert_eq!(pick("at_ms", &[n("1700000000000")]), "timestamptz");
        assert_eq!(
            pick("id", &[s("0b7c6a3e-1f2d-4c5b-9a8e-7d6c5b4a3f2e")]),
            "uuid"
        );
        assert_eq!(pick("day", &[s("2024-01-31")]), "date");
        assert_eq!(pick("at", &[s("2024-01-31T10:00:00Z")]), "timestamptz");
        assert_eq!(pick("zip", &[s("02134"), s("x")]), "text");
        assert_eq!(pick("flag", &[Av::Bool(true)]), "boolean");
        assert_eq!(pick("mixed", &[n("1"), s("2")]), "numeric");
        assert_eq!(pick("mixed", &[n("1"), s("two")]), "text");
        assert_eq!(pick("tags", &[Av::Ss(vec![Cow::Borrowed("a")])]), "text[]");
        assert_eq!(pick("ns", &[Av::Ns(vec![Cow::Borrowed("1")])]), "bigint[]");
        assert_eq!(pick("codes", &[Av::L(vec![s("01"), s("2")])]), "text[]");
        assert_eq!(
            pick("nums", &[Av::L(vec![n("1.5"), Av::Null])]),
            "numeric[]"
        );
        assert_eq!(pick("empty", &[Av::L(vec![])]), "jsonb");
        assert_eq!(pick("m", &[Av::M(vec![])]), "jsonb");
        assert_eq!(pick("l", &[Av::L(vec![s("a"), Av::M(vec![])])]), "jsonb");
        let nul = choose("t", "t", &stats(&[s("a\0b")]), 1, false);
        assert!(nul.ty == "text" && nul.strip_nul, "{nul:?}");
    }

    /// `fits` answers as the load's own conversion does, for every candidate and value.
    #[test]
    fn fits_agrees_with_convert() {
        let values = [
            s("true"),
            s("12"),
            s(" 12 "),
            s("-3.50"),
            s("2024-01-31"),
            s("2024-01-31T10:00:00+02:00"),
            s("0b7c6a3e-1f2d-4c5b-9a8e-7d6c5b4a3f2e"),
            s("hello"),
            s(""),
            s("a\0b"),
            n("0"),
            n("1"),
            n("2147483648"),
            n("-9223372036854775809"),
            n("1.5"),
            n("1e-130"),
            n("1700000000"),
            Av::Bool(false),
            Av::B(Cow::Borrowed("AAECAwQFBgcICQoLDA0ODw==")),
            Av::B(Cow::Borrowed("!!")),
            Av::M(vec![(Cow::Borrowed("k"), s("v"))]),
            Av::L(vec![n("1"), n("2")]),
            Av::L(vec![s("a"), Av::Null]),
            Av::L(vec![Av::M(vec![])]),
            Av::Ss(vec![Cow::Borrowed("a")]),
            Av::Ns(vec![Cow::Borrowed("1.5")]),
            Av::Bs(vec![Cow::Borrowed("AA==")]),
        ];
        for c in CANDS {
            for v in &values {
                assert_eq!(fits(c, v), by_convert(c, v), "{c:?} on {v:?}");
            }
        }
    }

    #[test]
    fn a_key_is_guessed_by_name_or_refused() {
        let all = |vals: &[Av<'_>]| stats(vals);
        let attrs = vec![
            ("orderId".to_string(), all(&[s("a"), s("b")])),
            ("total".to_string(), all(&[n("1"), n("2")])),
        ];
        assert_eq!(
            guess_key(&attrs, 2, "orders").map(|k| k.0).ok(),
            Some(vec!["orderId".to_string()])
        );
        let attrs = vec![("total".to_string(), all(&[n("1"), n("2")]))];
        assert!(guess_key(&attrs, 2, "orders").is_err());
        let attrs = vec![
            ("PK".to_string(), all(&[s("A#1"), s("B#1")])),
            ("SK".to_string(), all(&[s("x"), s("y")])),
        ];
        assert_eq!(
            guess_key(&attrs, 2, "t").map(|k| k.0).ok(),
            Some(vec!["PK".to_string(), "SK".to_string()])
        );
    }
}
