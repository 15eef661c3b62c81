//! The DynamoDB JSON parser: one hand-written grammar. It validates the whole line as
//! UTF-8 once, then only looks for quotes, backslashes and control characters (refused
//! raw inside a string, as JSON says), eight bytes at a time, and
//! borrows every string that holds no escape; its small steps are inlined so the cursor
//! stays in a register through a value.
//!
//! Input: the bytes of one export line, or a bare item's text. Output: attributes handed
//! to an [`ItemSink`] one by one, or a [`ParseError`] naming the attribute and offset.
//! (About 550 lines: one recursive-descent parser whose parts inline into each other.)

use std::borrow::Cow;

use super::plain::{find_escape, write_json_string, write_plain_json};
use super::value::{Av, Item, ItemSink, NulPolicy, ParseError};
use crate::scalar::number;

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

/// Parses an export line into `sink` (see [`super::parse_export_line_with`]).
pub(super) fn export_line<'a, S>(line: &'a [u8], sink: &mut S) -> Result<(), ParseError>
where
    S: ItemSink<'a> + ?Sized,
{
    let text = utf8(line)?;
    let mut p = Parser::new(text);
    p.export_line(sink).map_err(|e| *e)
}

/// What a change line of an incremental export says to do with its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeOp {
    /// `NewImage` present: the item as it stands now (insert or update).
    Put,
    /// No `NewImage`: the item is gone.
    Delete,
}

/// Parses a change line (see [`super::parse_change_line_with`]).
pub(super) fn change_line<'a, S>(line: &'a [u8], sink: &mut S) -> Result<ChangeOp, ParseError>
where
    S: ItemSink<'a> + ?Sized,
{
    let text = utf8(line)?;
    let mut p = Parser::new(text);
    p.change_line(sink).map_err(|e| *e)
}

/// Parses a bare item object (see [`super::parse_item`]).
pub(super) fn bare_item(text: &str) -> Result<Item<'_>, ParseError> {
    let mut p = Parser::new(text);
    let item = p.item().map_err(|e| *e)?;
    p.ws();
    if p.pos != p.b.len() {
        return Err(*p.err("unexpected text after the item".into()));
    }
    Ok(item)
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

impl<'a> Parser<'a> {
    /// `{"Metadata":{…},"Keys":{…},"NewImage":{…},"OldImage":{…}}`, keys in any order:
    /// the new image goes to `sink`; without one (a delete), the `Keys` do.
    fn change_line<S>(&mut self, sink: &mut S) -> PResult<ChangeOp>
    where
        S: ItemSink<'a> + ?Sized,
    {
        self.ws();
        self.expect(b'{')?;
        let mut keys: Option<Item<'a>> = None;
        let mut put = false;
        loop {
            self.ws();
            let key = self.string()?;
            self.ws();
            self.expect(b':')?;
            match key.as_ref() {
                "NewImage" if !put => {
                    self.item_into(sink)?;
                    put = true;
                }
                "Keys" if keys.is_none() => keys = Some(self.item()?),
                "OldImage" | "Metadata" => self.skip_json(1)?,
                "Item" => {
                    return Err(self.err(
                        "a full export's line (\"Item\") where an incremental export's change line was expected".into(),
                    ))
                }
                other => {
                    return Err(self.err(format!(
                        "unexpected key \"{other}\" in a change line (expected Metadata, Keys, NewImage, OldImage, each once)"
                    )))
                }
            }
            self.ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    break;
                }
                _ => return Err(self.err("expected `,` or `}` in a change line".into())),
            }
        }
        self.ws();
        if self.pos != self.b.len() {
            return Err(self.err("unexpected text after the change".into()));
        }
        let Some(keys) = keys else {
            return Err(self.err("the change line has no \"Keys\"".into()));
        };
        sink.keys(&keys);
        if put {
            return Ok(ChangeOp::Put);
        }
        for (name, v) in keys {
            // Key attributes are scalars: never asked for as plain JSON.
            let _ = sink.plain(&name);
            sink.put(name, v);
        }
        Ok(ChangeOp::Delete)
    }

    /// Skips any JSON value (an old image, the metadata): checked as JSON, nothing kept.
    fn skip_json(&mut self, depth: usize) -> PResult<()> {
        // Two JSON levels per DynamoDB level (`{"M":{…}}`), and the image itself.
        if depth > 2 * MAX_DEPTH + 2 {
            return Err(self.err(format!("nested deeper than {MAX_DEPTH} levels")));
        }
        self.ws();
        match self.peek() {
            Some(b'"') => self.string().map(|_| ()),
            Some(open @ (b'{' | b'[')) => {
                let close = if open == b'{' { b'}' } else { b']' };
                self.pos += 1;
                self.ws();
                if self.peek() == Some(close) {
                    self.pos += 1;
                    return Ok(());
                }
                loop {
                    self.ws();
                    if open == b'{' {
                        self.string()?;
                        self.ws();
                        self.expect(b':')?;
                    }
                    self.skip_json(depth + 1)?;
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(c) if c == close => {
                            self.pos += 1;
                            return Ok(());
                        }
                        _ => return Err(self.err("expected `,` or the end of a JSON value".into())),
                    }
                }
            }
            Some(_) => {
                let start = self.pos;
                while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'+' | b'.'))
                {
                    self.pos += 1;
                }
                let word = &self.s[start..self.pos];
                if word.is_empty()
                    || !(matches!(word, "true" | "false" | "null")
                        || serde_json::from_str::<serde_json::Number>(word).is_ok())
                {
                    return Err(self.err(format!("`{word}` is not a JSON value")));
                }
                Ok(())
            }
            None => Err(self.err("the line ends inside a value".into())),
        }
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
                p.plain_key(out, nul)?;
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
                write_plain_json(out, &set, &mut { nul }).map_err(drop)?;
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
        if let Some(end) = find_escape(self.b, self.pos + 1) {
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

    /// An attribute name, as [`Self::plain_string`]; one that loses a U+0000 to `strip_nul`
    /// leaves it to the tree path, which refuses two names that become one.
    fn plain_key(&mut self, out: &mut String, nul: NulPolicy) -> Result<(), ()> {
        if self.peek() != Some(b'"') {
            return Err(());
        }
        if let Some(end) = find_escape(self.b, self.pos + 1) {
            if self.b[end] == b'"' {
                out.push_str(&self.s[self.pos..=end]);
                self.pos = end + 1;
                return Ok(());
            }
        }
        let v = self.string().map_err(drop)?;
        match nul.string(&v).map_err(drop)? {
            Cow::Owned(_) => Err(()),
            k => {
                write_json_string(out, &k);
                Ok(())
            }
        }
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
        match find_escape(self.b, start).map(|p| p - start) {
            None => Err(self.err("unterminated string".into())),
            Some(off) if self.b[start + off] == b'"' => {
                self.pos = start + off + 1;
                Ok(Cow::Borrowed(&self.s[start..start + off]))
            }
            Some(off) if self.b[start + off] < 0x20 => {
                self.pos = start + off;
                Err(self.control_char())
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

    /// A raw control character inside a string: JSON wants it escaped (`\n`, `\u0001`).
    #[cold]
    #[inline(never)]
    fn control_char(&self) -> Box<ParseError> {
        self.err(format!(
            "control character U+{:04X} inside a string must be escaped",
            self.b[self.pos]
        ))
    }

    fn string_escaped(&mut self, out: &mut String) -> PResult<()> {
        loop {
            let Some(at) = find_escape(self.b, self.pos) else {
                return Err(self.err("unterminated string".into()));
            };
            out.push_str(&self.s[self.pos..at]);
            self.pos = at;
            match self.b[at] {
                b'"' => {
                    self.pos += 1;
                    return Ok(());
                }
                b'\\' => {}
                _ => return Err(self.control_char()),
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
