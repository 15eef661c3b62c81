//! DynamoDB JSON → a borrowed attribute tree, and that tree → plain JSON.
//!
//! Input: one line of an export data file (`{"Item":{…}}`) or a bare item object.
//! Output: [`Item`], whose strings borrow from the line wherever they hold no escape.
//! The parser is hand-written for this one grammar: it validates the whole line as UTF-8
//! once, then only looks for quotes and backslashes, which is what makes decode cheap.

use std::borrow::Cow;
use std::fmt::Write as _;

use crate::convert::{self, NulPolicy};
use crate::number;

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
    /// `convert::write_plain_json` writes for the value (an object or an array).
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

const MAX_DEPTH: usize = 64;

/// The parser's own results: a boxed error keeps every `Result` as small as its value.
type PResult<T> = Result<T, Box<ParseError>>;

/// DynamoDB's ten type descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    S,
    N,
    B,
    Bool,
    Null,
    M,
    L,
    Ss,
    Ns,
    Bs,
}

/// Parses an export line: `{"Item":{...}}` (other top-level keys are refused).
///
/// # Errors
/// [`ParseError`] naming the attribute, the reason and the byte offset.
pub fn parse_export_line(line: &[u8]) -> Result<Item<'_>, ParseError> {
    let mut item = Vec::with_capacity(16);
    parse_export_line_into(line, &mut item)?;
    Ok(item)
}

/// As [`parse_export_line`], into `item` (cleared first), so a caller can reuse one
/// allocation for every line.
///
/// # Errors
/// As [`parse_export_line`].
pub fn parse_export_line_into<'a>(line: &'a [u8], item: &mut Item<'a>) -> Result<(), ParseError> {
    item.clear();
    parse_export_line_with(line, item)
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

/// As [`parse_export_line`], handing each attribute to `sink` as it is read (an item with
/// an error may have handed some). A value the sink asks for as plain JSON that does not
/// write cleanly (a bad number, a refused U+0000, a grammar error) is parsed as a tree
/// instead, so its error is the one the tree's conversion gives.
///
/// # Errors
/// As [`parse_export_line`].
pub fn parse_export_line_with<'a, S>(line: &'a [u8], sink: &mut S) -> Result<(), ParseError>
where
    S: ItemSink<'a> + ?Sized,
{
    let text = utf8(line)?;
    let mut p = Parser::new(text);
    p.export_line(sink).map_err(|e| *e)
}

impl<'a> Parser<'a> {
    fn new(s: &'a str) -> Parser<'a> {
        Parser {
            s,
            b: s.as_bytes(),
            pos: 0,
            attr: None,
        }
    }

    /// `{"Item": {...}}` and nothing after it.
    fn export_line<S>(&mut self, sink: &mut S) -> PResult<()>
    where
        S: ItemSink<'a> + ?Sized,
    {
        self.ws();
        self.expect(b'{')?;
        self.ws();
        let key = self.string()?;
        if key != "Item" {
            return Err(self.err(format!(
                "expected the key \"Item\", found \"{key}\" (only full exports in DynamoDB JSON are supported)"
            )));
        }
        self.ws();
        self.expect(b':')?;
        self.item_into(sink)?;
        self.ws();
        self.expect(b'}')?;
        self.ws();
        if self.pos != self.b.len() {
            return Err(self.err("unexpected text after the item".into()));
        }
        Ok(())
    }
}

/// `line` as text. The vectorised check first (lines are long, and most are ASCII); the
/// standard library's only to say where it fails.
fn utf8(line: &[u8]) -> Result<&str, ParseError> {
    match simdutf8::basic::from_utf8(line) {
        Ok(text) => Ok(text),
        Err(_) => std::str::from_utf8(line).map_err(|e| ParseError {
            attribute: None,
            reason: format!("not valid UTF-8 at byte {}", e.valid_up_to()),
            offset: e.valid_up_to(),
        }),
    }
}

/// Parses a bare item object `{"attr": {"S": "x"}, ...}`.
///
/// # Errors
/// [`ParseError`] as for [`parse_export_line`].
pub fn parse_item(text: &str) -> Result<Item<'_>, ParseError> {
    let mut p = Parser::new(text);
    let item = p.item().map_err(|e| *e)?;
    p.ws();
    if p.pos != p.b.len() {
        return Err(*p.err("unexpected text after the item".into()));
    }
    Ok(item)
}

struct Parser<'a> {
    s: &'a str,
    b: &'a [u8],
    pos: usize,
    /// Where the name of the top-level attribute being read starts (for errors).
    attr: Option<usize>,
}

impl<'a> Parser<'a> {
    #[cold]
    #[inline(never)]
    fn err(&self, reason: String) -> Box<ParseError> {
        Box::new(ParseError {
            attribute: self.attr.and_then(|at| {
                let mut p = Parser::new(self.s);
                p.pos = at;
                p.string().ok().map(Cow::into_owned)
            }),
            reason,
            offset: self.pos,
        })
    }

    /// Skips whitespace: one compare in the usual case (exports hold none).
    #[inline(always)]
    fn ws(&mut self) {
        if matches!(self.b.get(self.pos), Some(&c) if c > b' ') {
            return;
        }
        self.ws_slow();
    }

    #[cold]
    #[inline(never)]
    fn ws_slow(&mut self) {
        while let Some(&c) = self.b.get(self.pos) {
            if c == b' ' || c == b'\n' || c == b'\t' || c == b'\r' {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    #[inline(always)]
    fn expect(&mut self, c: u8) -> PResult<()> {
        if self.b.get(self.pos) == Some(&c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.expected(c))
        }
    }

    #[cold]
    #[inline(never)]
    fn expected(&self, c: u8) -> Box<ParseError> {
        let found = self
            .s
            .get(self.pos..)
            .and_then(|r| r.chars().next())
            .map_or_else(|| "end of line".to_string(), |ch| format!("`{ch}`"));
        self.err(format!("expected `{}`, found {found}", c as char))
    }

    /// The type descriptor of a value, read straight from the bytes in the usual case
    /// (`"S":`, no spaces), else through the general string path.
    #[inline(always)]
    fn tag(&mut self) -> PResult<Tag> {
        let rest = &self.b[self.pos..];
        let quick = match rest {
            [b'"', b'S', b'"', ..] => Some((Tag::S, 3)),
            [b'"', b'N', b'"', ..] => Some((Tag::N, 3)),
            [b'"', b'M', b'"', ..] => Some((Tag::M, 3)),
            [b'"', b'L', b'"', ..] => Some((Tag::L, 3)),
            [b'"', b'B', b'"', ..] => Some((Tag::B, 3)),
            [b'"', b'S', b'S', b'"', ..] => Some((Tag::Ss, 4)),
            [b'"', b'N', b'S', b'"', ..] => Some((Tag::Ns, 4)),
            [b'"', b'B', b'S', b'"', ..] => Some((Tag::Bs, 4)),
            [b'"', b'B', b'O', b'O', b'L', b'"', ..] => Some((Tag::Bool, 6)),
            [b'"', b'N', b'U', b'L', b'L', b'"', ..] => Some((Tag::Null, 6)),
            _ => None,
        };
        if let Some((t, len)) = quick {
            self.pos += len;
            return Ok(t);
        }
        self.tag_slow()
    }

    /// A type descriptor with an escape in it, or not at the cursor.
    #[cold]
    #[inline(never)]
    fn tag_slow(&mut self) -> PResult<Tag> {
        let name = self.string()?;
        Ok(match name.as_ref() {
            "S" => Tag::S,
            "N" => Tag::N,
            "B" => Tag::B,
            "BOOL" => Tag::Bool,
            "NULL" => Tag::Null,
            "M" => Tag::M,
            "L" => Tag::L,
            "SS" => Tag::Ss,
            "NS" => Tag::Ns,
            "BS" => Tag::Bs,
            other => {
                return Err(self.err(format!(
                    "unknown type descriptor \"{other}\" (expected S, N, B, BOOL, NULL, M, L, SS, NS or BS)"
                )))
            }
        })
    }

    #[inline(always)]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    /// `{ "name": {"T": v}, ... }`
    fn item(&mut self) -> PResult<Item<'a>> {
        let mut out = Vec::with_capacity(16);
        self.item_into(&mut out)?;
        Ok(out)
    }

    /// `{ "name": {"T": v}, ... }` handed to `sink` as in [`parse_export_line_with`].
    fn item_into<S>(&mut self, sink: &mut S) -> PResult<()>
    where
        S: ItemSink<'a> + ?Sized,
    {
        self.ws();
        self.expect(b'{')?;
        self.ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.ws();
            self.attr = Some(self.pos);
            let name = self.string()?;
            self.ws();
            self.expect(b':')?;
            let v = match sink.plain(&name) {
                Some(nul) => self.value_plain(nul, sink)?,
                None => self.value(1)?,
            };
            sink.put(name, v);
            self.ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    self.attr = None;
                    return Ok(());
                }
                _ => return Err(self.err("expected `,` or `}` after an attribute".into())),
            }
        }
    }

    /// `{"T": v}`
    fn value(&mut self, depth: usize) -> PResult<Av<'a>> {
        if depth > MAX_DEPTH {
            return Err(self.err(format!("nested deeper than {MAX_DEPTH} levels")));
        }
        self.ws();
        self.expect(b'{')?;
        self.ws();
        if self.peek() == Some(b'}') {
            return Err(
                self.err("empty attribute value `{}`: it must hold exactly one type".into())
            );
        }
        let tag = self.tag()?;
        self.ws();
        self.expect(b':')?;
        self.ws();
        let v = match tag {
            Tag::S => Av::S(self.string()?),
            Tag::N => Av::N(self.number_string()?),
            Tag::B => Av::B(self.string()?),
            Tag::Bool => Av::Bool(self.boolean()?),
            Tag::Null => {
                if !self.boolean()? {
                    return Err(self.err("NULL must have the value true".into()));
                }
                Av::Null
            }
            Tag::M => {
                self.expect(b'{')?;
                let mut m = Vec::new();
                self.ws();
                if self.peek() == Some(b'}') {
                    self.pos += 1;
                } else {
                    loop {
                        self.ws();
                        let k = self.string()?;
                        self.ws();
                        self.expect(b':')?;
                        let v = self.value(depth + 1)?;
                        m.push((k, v));
                        self.ws();
                        match self.peek() {
                            Some(b',') => self.pos += 1,
                            Some(b'}') => {
                                self.pos += 1;
                                break;
                            }
                            _ => return Err(self.err("expected `,` or `}` in a map".into())),
                        }
                    }
                }
                Av::M(m)
            }
            Tag::L => {
                self.expect(b'[')?;
                let mut l = Vec::new();
                self.ws();
                if self.peek() == Some(b']') {
                    self.pos += 1;
                } else {
                    loop {
                        l.push(self.value(depth + 1)?);
                        self.ws();
                        match self.peek() {
                            Some(b',') => self.pos += 1,
                            Some(b']') => {
                                self.pos += 1;
                                break;
                            }
                            _ => return Err(self.err("expected `,` or `]` in a list".into())),
                        }
                    }
                }
                Av::L(l)
            }
            Tag::Ss => Av::Ss(self.string_array(false)?),
            Tag::Ns => Av::Ns(self.string_array(true)?),
            Tag::Bs => Av::Bs(self.string_array(false)?),
        };
        self.ws();
        match self.peek() {
            Some(b'}') => {
                self.pos += 1;
                Ok(v)
            }
            Some(b',') => {
                Err(self.err("an attribute value must hold exactly one type, found more".into()))
            }
            _ => Err(self.err("expected `}` closing the attribute value".into())),
        }
    }

    /// A top-level value of an attribute that feeds a json column: an `M` or `L` is
    /// written straight to plain JSON under `nul` ([`Av::Plain`]); anything else, or one
    /// that does not write cleanly, is parsed as a tree.
    fn value_plain<S>(&mut self, nul: NulPolicy, sink: &mut S) -> PResult<Av<'a>>
    where
        S: ItemSink<'a> + ?Sized,
    {
        let start = self.pos;
        self.ws();
        let at = self.pos;
        if !matches!(self.b.get(at..at + 4), Some(b"{\"M\"" | b"{\"L\"")) {
            self.pos = start;
            return self.value(1);
        }
        let mut json = sink.buffer();
        json.clear();
        if self.plain(&mut json, nul, 1).is_ok() {
            return Ok(Av::Plain(json));
        }
        self.pos = start;
        self.value(1)
    }

    /// Writes the value at the cursor (`{"T": v}`) as `convert::write_plain_json` writes
    /// its tree. `Err(())` wherever that would fail or the text is not valid: the caller
    /// then parses it as a tree, which gives the exact error.
    fn plain(&mut self, out: &mut String, nul: NulPolicy, depth: usize) -> Result<(), ()> {
        if depth > MAX_DEPTH {
            return Err(());
        }
        self.ws();
        self.expect(b'{').map_err(drop)?;
        self.ws();
        let tag = self.tag().map_err(drop)?;
        self.ws();
        self.expect(b':').map_err(drop)?;
        self.ws();
        match tag {
            Tag::S => self.plain_string(out, nul)?,
            Tag::N => {
                let n = self.number_string().map_err(drop)?;
                out.push_str(&number::normalize(&n).map_err(drop)?);
            }
            Tag::B => write_json_string(out, &self.string().map_err(drop)?),
            Tag::Bool => out.push_str(if self.boolean().map_err(drop)? {
                "true"
            } else {
                "false"
            }),
            Tag::Null => {
                if !self.boolean().map_err(drop)? {
                    return Err(());
                }
                out.push_str("null");
            }
            Tag::M => self.plain_seq(out, b'{', b'}', |p, out| {
                p.ws();
                p.plain_string(out, nul)?;
                p.ws();
                p.expect(b':').map_err(drop)?;
                out.push(':');
                p.plain(out, nul, depth + 1)
            })?,
            Tag::L => self.plain_seq(out, b'[', b']', |p, out| p.plain(out, nul, depth + 1))?,
            Tag::Ss | Tag::Ns | Tag::Bs => {
                // Sets are written in canonical order: the tree's own writer does that.
                let items = self.string_array(tag == Tag::Ns).map_err(drop)?;
                let set = match tag {
                    Tag::Ss => Av::Ss(items),
                    Tag::Ns => Av::Ns(items),
                    _ => Av::Bs(items),
                };
                convert::write_plain_json(out, &set, &mut { nul }).map_err(drop)?;
            }
        }
        self.ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            Ok(())
        } else {
            Err(())
        }
    }

    /// `open` element (`,` element)* `close`, copied to `out`, each element written by
    /// `one`.
    fn plain_seq<F>(&mut self, out: &mut String, open: u8, close: u8, mut one: F) -> Result<(), ()>
    where
        F: FnMut(&mut Self, &mut String) -> Result<(), ()>,
    {
        self.expect(open).map_err(drop)?;
        out.push(char::from(open));
        self.ws();
        if self.peek() == Some(close) {
            self.pos += 1;
        } else {
            loop {
                one(self, out)?;
                self.ws();
                match self.peek() {
                    Some(b',') => {
                        self.pos += 1;
                        out.push(',');
                    }
                    Some(c) if c == close => {
                        self.pos += 1;
                        break;
                    }
                    _ => return Err(()),
                }
            }
        }
        out.push(char::from(close));
        Ok(())
    }

    /// A JSON string written as plain JSON under `nul`: copied as it stands when it holds
    /// nothing to escape (the usual case), else decoded and written again.
    #[inline(always)]
    fn plain_string(&mut self, out: &mut String, nul: NulPolicy) -> Result<(), ()> {
        if self.peek() != Some(b'"') {
            return Err(());
        }
        if let Some(end) = find_byte(self.b, self.pos + 1, Find::Escape) {
            if self.b[end] == b'"' {
                out.push_str(&self.s[self.pos..=end]);
                self.pos = end + 1;
                return Ok(());
            }
        }
        let v = self.string().map_err(drop)?;
        write_json_string(out, &nul.string(&v).map_err(drop)?);
        Ok(())
    }

    #[inline(always)]
    fn number_string(&mut self) -> PResult<Cow<'a, str>> {
        if self.peek() != Some(b'"') {
            return Err(self.err("N must be a JSON string holding the number".into()));
        }
        self.string()
    }

    #[inline(always)]
    fn boolean(&mut self) -> PResult<bool> {
        if self.b[self.pos..].starts_with(b"true") {
            self.pos += 4;
            Ok(true)
        } else if self.b[self.pos..].starts_with(b"false") {
            self.pos += 5;
            Ok(false)
        } else {
            Err(self.err("expected true or false".into()))
        }
    }

    fn string_array(&mut self, numbers: bool) -> PResult<Vec<Cow<'a, str>>> {
        self.expect(b'[')?;
        let mut out = Vec::new();
        self.ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(out);
        }
        loop {
            self.ws();
            if numbers {
                out.push(self.number_string()?);
            } else {
                out.push(self.string()?);
            }
            self.ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(out);
                }
                _ => return Err(self.err("expected `,` or `]` in a set".into())),
            }
        }
    }

    /// A JSON string; borrowed when it holds no escape.
    #[inline(always)]
    fn string(&mut self) -> PResult<Cow<'a, str>> {
        self.expect(b'"')?;
        let start = self.pos;
        match find_byte(self.b, start, Find::QuoteOrBackslash).map(|p| p - start) {
            None => Err(self.err("unterminated string".into())),
            Some(off) if self.b[start + off] == b'"' => {
                self.pos = start + off + 1;
                Ok(Cow::Borrowed(&self.s[start..start + off]))
            }
            Some(off) => {
                let mut out = String::with_capacity(off + 16);
                out.push_str(&self.s[start..start + off]);
                self.pos = start + off;
                self.string_escaped(&mut out)?;
                Ok(Cow::Owned(out))
            }
        }
    }

    fn string_escaped(&mut self, out: &mut String) -> PResult<()> {
        loop {
            let rest = &self.b[self.pos..];
            let Some(off) = memchr::memchr2(b'"', b'\\', rest) else {
                return Err(self.err("unterminated string".into()));
            };
            out.push_str(&self.s[self.pos..self.pos + off]);
            self.pos += off;
            if self.b[self.pos] == b'"' {
                self.pos += 1;
                return Ok(());
            }
            // A backslash escape.
            let Some(&c) = self.b.get(self.pos + 1) else {
                return Err(self.err("unterminated escape".into()));
            };
            self.pos += 2;
            match c {
                b'"' => out.push('"'),
                b'\\' => out.push('\\'),
                b'/' => out.push('/'),
                b'b' => out.push('\u{8}'),
                b'f' => out.push('\u{c}'),
                b'n' => out.push('\n'),
                b'r' => out.push('\r'),
                b't' => out.push('\t'),
                b'u' => {
                    let hi = self.hex4()?;
                    let ch = if (0xD800..0xDC00).contains(&hi) {
                        if self.b.get(self.pos) == Some(&b'\\')
                            && self.b.get(self.pos + 1) == Some(&b'u')
                        {
                            self.pos += 2;
                            let lo = self.hex4()?;
                            if !(0xDC00..0xE000).contains(&lo) {
                                return Err(self.err("invalid low surrogate in \\u escape".into()));
                            }
                            let cp = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                            char::from_u32(cp)
                        } else {
                            None
                        }
                    } else {
                        char::from_u32(hi)
                    };
                    match ch {
                        Some(ch) => out.push(ch),
                        None => return Err(self.err("unpaired surrogate in \\u escape".into())),
                    }
                }
                other => return Err(self.err(format!("invalid escape `\\{}`", other as char))),
            }
        }
    }

    fn hex4(&mut self) -> PResult<u32> {
        let Some(h) = self.b.get(self.pos..self.pos + 4) else {
            return Err(self.err("truncated \\u escape".into()));
        };
        let mut v = 0u32;
        for &c in h {
            let d = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                _ => return Err(self.err("invalid hex digit in \\u escape".into())),
            };
            v = v * 16 + u32::from(d);
        }
        self.pos += 4;
        Ok(v)
    }
}

/// What [`find_byte`] looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Find {
    /// The end of a JSON string or an escape in it.
    QuoteOrBackslash,
    /// Also the control characters: a byte that needs an escape when written.
    Escape,
}

/// Position of the first byte at or after `from` of the kind asked. Eight bytes at a
/// time: strings are mostly longer than a word and hold none of these bytes.
#[inline(always)]
fn find_byte(b: &[u8], from: usize, what: Find) -> Option<usize> {
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
        let mut hit = zero(x ^ (LO * u64::from(b'"'))) | zero(x ^ (LO * u64::from(b'\\')));
        if what == Find::Escape {
            hit |= x.wrapping_sub(LO * 0x20) & !x & HI;
        }
        if hit != 0 {
            return Some(i + (hit.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    b.get(i..)?
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || (what == Find::Escape && c < 0x20))
        .map(|p| i + p)
}

/// Position of the first byte at or after `from` that needs an escape.
#[inline]
fn find_escape(b: &[u8], from: usize) -> Option<usize> {
    find_byte(b, from, Find::Escape)
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

/// Appends the DynamoDB JSON form of a value (used to keep a rejected item verbatim).
pub fn write_ddb_json(out: &mut String, v: &Av<'_>) {
    let tagged_list = |out: &mut String, tag: &str, items: &[Cow<'_, str>]| {
        out.push_str("{\"");
        out.push_str(tag);
        out.push_str("\":[");
        for (i, s) in items.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            write_json_string(out, s);
        }
        out.push_str("]}");
    };
    match v {
        Av::S(s) | Av::N(s) | Av::B(s) => {
            out.push_str("{\"");
            out.push_str(v.type_name());
            out.push_str("\":");
            write_json_string(out, s);
            out.push('}');
        }
        Av::Bool(b) => out.push_str(if *b {
            "{\"BOOL\":true}"
        } else {
            "{\"BOOL\":false}"
        }),
        Av::Null => out.push_str("{\"NULL\":true}"),
        Av::M(m) => {
            out.push_str("{\"M\":");
            write_ddb_item(out, m);
            out.push('}');
        }
        Av::L(l) => {
            out.push_str("{\"L\":[");
            for (i, e) in l.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_ddb_json(out, e);
            }
            out.push_str("]}");
        }
        Av::Ss(s) => tagged_list(out, "SS", s),
        Av::Ns(s) => tagged_list(out, "NS", s),
        Av::Bs(s) => tagged_list(out, "BS", s),
        // Its DynamoDB form is gone: a caller that needs it parses without the hook.
        Av::Plain(json) => out.push_str(json),
    }
}

/// Appends an item (or map) in DynamoDB JSON.
pub fn write_ddb_item(out: &mut String, item: &[(Cow<'_, str>, Av<'_>)]) {
    out.push('{');
    for (i, (k, v)) in item.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_json_string(out, k);
        out.push(':');
        write_ddb_json(out, v);
    }
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An item whose every attribute is asked for as plain JSON under one policy.
    struct AllPlain<'a> {
        nul: NulPolicy,
        item: Item<'a>,
    }

    impl<'a> ItemSink<'a> for AllPlain<'a> {
        fn plain(&mut self, _: &str) -> Option<NulPolicy> {
            Some(self.nul)
        }

        fn put(&mut self, name: Cow<'a, str>, value: Av<'a>) {
            self.item.push((name, value));
        }
    }

    fn parse_all_plain(line: &[u8], nul: NulPolicy) -> Result<Item<'_>, ParseError> {
        let mut sink = AllPlain {
            nul,
            item: Vec::new(),
        };
        parse_export_line_with(line, &mut sink).map(|()| sink.item)
    }

    #[test]
    fn parses_every_type_and_borrows_plain_strings() {
        let line = br#"{"Item":{"a":{"S":"x"},"b":{"N":"-1.5"},"c":{"B":"AA=="},"d":{"BOOL":true},"e":{"NULL":true},"f":{"M":{"g":{"L":[{"S":"h"},{"NS":["1","2"]}]}}},"i":{"SS":["p","q"]},"j":{"BS":["AQ=="]},"k":{"L":[]},"l":{"M":{}}}}"#;
        let item = parse_export_line(line).expect("valid");
        assert_eq!(item.len(), 10);
        assert!(matches!(&item[0].1, Av::S(Cow::Borrowed("x"))));
        assert_eq!(item[1].1, Av::N("-1.5".into()));
        assert_eq!(item[3].1, Av::Bool(true));
        assert_eq!(item[4].1, Av::Null);
        let Av::M(m) = &item[5].1 else { panic!("M") };
        let Av::L(l) = &m[0].1 else { panic!("L") };
        assert_eq!(l[1], Av::Ns(vec!["1".into(), "2".into()]));
        assert_eq!(item[8].1, Av::L(vec![]));
        assert_eq!(item[9].1, Av::M(vec![]));
    }

    #[test]
    fn decodes_escapes_and_surrogate_pairs() {
        let line = br#"{"Item":{"s":{"S":"a\"b\\c\nd\u00e9\ud83e\udd73\u0000"}}}"#;
        let item = parse_export_line(line).expect("valid");
        assert_eq!(item[0].1, Av::S("a\"b\\c\nd\u{e9}\u{1F973}\u{0}".into()));
    }

    #[test]
    fn errors_name_the_attribute() {
        let cases: [(&[u8], &str); 7] = [
            (
                br#"{"Item":{"a":{"FOO":"bar"}}}"#,
                "unknown type descriptor",
            ),
            (br#"{"Item":{"a":{}}}"#, "empty attribute value"),
            (br#"{"Item":{"a":{"S":"a","N":"1"}}}"#, "exactly one type"),
            (br#"{"Item":{"a":{"N":123}}}"#, "N must be a JSON string"),
            (
                br#"{"Item":{"a":{"NULL":false}}}"#,
                "NULL must have the value true",
            ),
            (br#"{"Item":{"a":{"S":"x"}"#, "expected"),
            (br#"{"Item":{"a":{"S":"\ud800"}}}"#, "surrogate"),
        ];
        for (line, want) in cases {
            let e = parse_export_line(line).expect_err("invalid");
            assert!(
                e.reason.contains(want),
                "{}: {}",
                String::from_utf8_lossy(line),
                e.reason
            );
            assert_eq!(e.attribute.as_deref(), Some("a"));
        }
        let e = parse_export_line(br#"{"NewImage":{}}"#).expect_err("not an item");
        assert!(e.reason.contains("\"Item\""));
        let e = parse_export_line(b"{\"Item\":{\"a\":{\"S\":\"\xff\"}}}").expect_err("bad utf8");
        assert!(e.reason.contains("UTF-8"));
    }

    #[test]
    fn escape_scan_finds_every_special_byte_at_every_offset() {
        for special in [b'"', b'\\', 0u8, 0x1f, b'\n'] {
            for len in 0..40 {
                for at in 0..len {
                    let mut v = vec![b'a'; len];
                    v[at] = special;
                    assert_eq!(
                        find_escape(&v, 0),
                        Some(at),
                        "byte {special} at {at} of {len}"
                    );
                }
                assert_eq!(find_escape(&vec![b'a'; len], 0), None);
            }
        }
        // The string scan stops at quotes and backslashes only.
        for len in 1..40 {
            for at in 0..len {
                for (special, hit) in [(b'"', true), (b'\\', true), (0u8, false), (b'\n', false)] {
                    let mut v = vec![b'a'; len];
                    v[at] = special;
                    let want = hit.then_some(at);
                    assert_eq!(find_byte(&v, 0, Find::QuoteOrBackslash), want);
                    assert_eq!(
                        find_byte(&v, at.min(1), Find::QuoteOrBackslash),
                        want.filter(|&p| p >= at.min(1))
                    );
                }
            }
        }
        // Multi-byte UTF-8 and the bytes next to the specials are not escapes.
        let s = "é🥳 !#[]^_`~\u{7f}!#[]]]]".repeat(5);
        assert_eq!(find_escape(s.as_bytes(), 0), None);
        let mut out = String::new();
        write_json_string(
            &mut out,
            &format!("{}\"{}\\{}", "x".repeat(9), "é".repeat(7), "\u{1}"),
        );
        assert_eq!(
            out,
            format!("\"{}\\\"{}\\\\\\u0001\"", "x".repeat(9), "é".repeat(7))
        );
    }

    #[test]
    fn ddb_json_round_trips() {
        let text = r#"{"a":{"S":"x\"y"},"b":{"N":"1"},"c":{"M":{"d":{"L":[{"NULL":true},{"BOOL":false}]}}},"e":{"SS":["p"]},"f":{"BS":["AA=="]},"g":{"NS":["1"]}}"#;
        let item = parse_item(text).expect("valid");
        let mut out = String::new();
        write_ddb_item(&mut out, &item);
        assert_eq!(out, text);
    }

    /// Every top-level attribute of `line` parsed with the plain-JSON hook under `nul`
    /// must be what the tree path gives: the same error, the same tree, or an
    /// [`Av::Plain`] whose JSON is what the tree writes and whose text is the tree's.
    fn check_plain_matches_tree(line: &[u8], nul: NulPolicy) {
        let shown = String::from_utf8_lossy(line);
        let tree = parse_export_line(line);
        let (tree, item) = match (tree, parse_all_plain(line, nul)) {
            (Err(a), Err(b)) => {
                assert_eq!(a, b, "{shown}");
                return;
            }
            (Ok(tree), Ok(item)) => (tree, item),
            (a, b) => panic!("{shown}: tree {a:?}, plain {b:?}"),
        };
        assert_eq!(tree.len(), item.len(), "{shown}");
        for ((tn, tv), (n, v)) in tree.iter().zip(&item) {
            assert_eq!(tn, n, "{shown}");
            let mut want = String::new();
            let written = convert::write_plain_json(&mut want, tv, &mut { nul });
            match v {
                Av::Plain(json) => {
                    assert_eq!(written, Ok(()), "{shown}: {n}");
                    assert_eq!(json, &want, "{shown}: {n}");
                    assert_eq!(v.type_name(), tv.type_name(), "{shown}: {n}");
                }
                other => {
                    assert_eq!(other, tv, "{shown}: {n}");
                    // A compact M or L that writes cleanly must take the plain path.
                    let m = format!("\"{n}\":{{\"M\"");
                    let l = format!("\"{n}\":{{\"L\"");
                    let text = String::from_utf8_lossy(line);
                    let compact = text.contains(&m) || text.contains(&l);
                    if written.is_ok()
                        && compact
                        && matches!(tv, Av::M(_) | Av::L(_))
                        && !n.contains(['"', '\\'])
                    {
                        panic!("{shown}: {n} was not written straight to JSON");
                    }
                }
            }
        }
    }

    const POLICIES: [NulPolicy; 3] = [
        NulPolicy::Keep,
        NulPolicy::Text { strip: false },
        NulPolicy::Text { strip: true },
    ];

    #[test]
    fn plain_json_path_writes_what_the_tree_writes() {
        let cases: &[&str] = &[
            r#"{"Item":{"a":{"M":{"k":{"S":"v"},"n":{"N":"-0012.50e1"},"b":{"B":"AQ=="},"t":{"BOOL":true},"z":{"NULL":true}}}}}"#,
            r#"{"Item":{"a":{"L":[{"M":{"bookId":{"S":"x"},"q":{"N":"3"}}},{"L":[]},{"M":{}}]}}}"#,
            r#"{"Item":{"a":{"M":{"s\u00e9\n":{"S":"q\"\\\/\b\f\r\t\u0001\ud83e\udd73"}}}}}"#,
            r#"{"Item":{"a":{"M":{"ss":{"SS":["b","a","c"]},"ns":{"NS":["10","9.5","-1e2"]},"bs":{"BS":["Ag==","AQ=="]}}}}}"#,
            r#"{"Item":{"a":{"L":[{"S":"nul \u0000 here"}]}}}"#,
            r#"{"Item":{"a":{"M":{"k\u0000":{"S":"v"}}}}}"#,
            r#"{"Item":{"a":{"L":[{"N":"1e400"}]}}}"#,
            r#"{"Item":{"a":{"L":[{"N":"abc"}]}}}"#,
            r#"{"Item":{"a":{"L":[{"N":12}]}}}"#,
            r#"{"Item":{"a":{"L":[{"S":"x"},]}}}"#,
            r#"{"Item":{"a":{"L":[{"FOO":"x"}]}}}"#,
            r#"{"Item":{"a":{"M":{"x":{"NULL":false}}}}}"#,
            r#"{"Item":{"a":{"M":{"x":{"S":"a","N":"1"}}}}}"#,
            r#"{"Item":{"a":{"M":{"x":{"S":"unterminated}}}}}"#,
            r#"{"Item":{"a":{ "L" : [ { "S" : "spaced" } ] },"b":{"S":"plain"},"c":{"N":"7"}}}"#,
            "{\"Item\":{\"a\":{\"L\":[{\"S\":\"raw\ttab\"}]}}}",
        ];
        let deep = format!(
            r#"{{"Item":{{"a":{}{{"S":"x"}}{}}}}}"#,
            r#"{"L":["#.repeat(70),
            "]}".repeat(70)
        );
        for nul in POLICIES {
            for line in cases.iter().copied().chain([deep.as_str()]) {
                check_plain_matches_tree(line.as_bytes(), nul);
            }
        }
    }

    /// The bundled fixtures and, where present, the acceptance data sets and vectors.
    #[test]
    fn plain_json_path_matches_the_tree_on_real_data() {
        use std::io::Read as _;
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut lines: Vec<Vec<u8>> = Vec::new();
        let mut gz_files = Vec::new();
        let mut stack = vec![root.join("fixtures"), root.join("../shared/acceptance")];
        let mut json_files = Vec::new();
        while let Some(dir) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&dir) else {
                if dir.ends_with("acceptance") {
                    eprintln!(
                        "SKIP: {} is absent; checking the bundled fixtures only",
                        dir.display()
                    );
                }
                continue;
            };
            for e in rd.flatten() {
                let p = e.path();
                let name = p.to_string_lossy().to_string();
                if p.is_dir() {
                    stack.push(p);
                } else if name.ends_with(".json.gz") {
                    gz_files.push(p);
                } else if name.ends_with(".json") || name.ends_with(".jsonl") {
                    json_files.push(p);
                }
            }
        }
        for p in &gz_files {
            let raw = std::fs::read(p).expect("read");
            let mut text = Vec::new();
            flate2::read::MultiGzDecoder::new(&raw[..])
                .read_to_end(&mut text)
                .expect("gunzip");
            lines.extend(
                text.split(|&b| b == b'\n')
                    .filter(|l| !l.is_empty())
                    .take(2000)
                    .map(<[u8]>::to_vec),
            );
        }
        // Items inside JSON documents ("Item": {...}) and the vectors' inputs.
        fn walk(v: &serde_json::Value, out: &mut Vec<Vec<u8>>) {
            match v {
                serde_json::Value::Object(m) => {
                    for (k, x) in m {
                        if (k == "Item" && x.is_object()) || k == "input" {
                            let line = if k == "Item" {
                                serde_json::json!({ "Item": x })
                            } else {
                                serde_json::json!({ "Item": { "v": x } })
                            };
                            out.push(line.to_string().into_bytes());
                        }
                        walk(x, out);
                    }
                }
                serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
                _ => {}
            }
        }
        for p in &json_files {
            let text = std::fs::read_to_string(p).expect("read");
            let docs: Vec<serde_json::Value> = match serde_json::from_str(&text) {
                Ok(v) => vec![v],
                Err(_) => text
                    .lines()
                    .filter_map(|l| serde_json::from_str(l).ok())
                    .collect(),
            };
            for d in &docs {
                walk(d, &mut lines);
            }
        }
        assert!(lines.len() > 1000, "only {} lines found", lines.len());
        let mut plain = 0;
        for line in &lines {
            for nul in POLICIES {
                check_plain_matches_tree(line, nul);
            }
            if let Ok(item) = parse_all_plain(line, NulPolicy::Keep) {
                plain += item
                    .iter()
                    .filter(|(_, v)| matches!(v, Av::Plain(_)))
                    .count();
            }
        }
        assert!(plain > 1000, "only {plain} values took the plain path");
    }
}
