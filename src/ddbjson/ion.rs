//! Amazon Ion export lines → DynamoDB JSON lines (ARCHITECTURE §11).
//!
//! An export with `outputFormat` `ION` holds one `$ion_1_0 {Item:{…}}` per line (an
//! incremental one `{Metadata:{…},Keys:{…},NewImage:{…},OldImage:{…}}`). Each line is
//! rewritten here as the DynamoDB JSON line an export in that format would hold, so the
//! rest of the pipeline (decode, rejects that keep the item, verify, sync) reads one
//! format. Line numbers stay: one line in, one line out.
//!
//! The mapping AWS documents for Ion exports:
//! - string → `S`; decimal or int → `N`, exact (`103.` = 103, `6d2` = 600, `1.5d-3` =
//!   0.0015: the digits are moved, never a float or a 28-digit decimal on the way);
//! - `{{base64}}` blob → `B`; `true`/`false` → `BOOL`; `null` (any `null.type`) → `NULL`;
//! - struct → `M`; list → `L`; a list annotated `$dynamodb_SS::`, `$dynamodb_NS::` or
//!   `$dynamodb_BS::` → that set.
//!
//! Field names may be bare (`Item`), quoted symbols (`'a b'`) or strings (`"a b"`); short
//! and long (`'''…'''`, concatenated) strings with every Ion escape; comments and the
//! version marker are skipped. What no DynamoDB value can be (a float, a timestamp, a
//! symbol value, a clob, an s-expression, an unknown annotation) is an error naming the
//! attribute, as is a truncated line.
//!
//! Why our own reader and not `ion-rs`: see docs/performance.md ("Ion exports"); a line
//! is a small, fixed shape, and this reader writes the JSON straight from the bytes (no
//! tree, no symbol table), at the speed of the JSON path.
//!
//! Input: one line's bytes. Output: its DynamoDB JSON appended to a buffer, or an
//! [`IonError`] (byte offset, attribute, reason).

use std::fmt::Write as _;

use super::write_json_string;

/// Why an Ion line could not be rewritten: where, in which attribute, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IonError {
    pub offset: usize,
    pub attribute: Option<String>,
    pub reason: String,
}

/// The key a line that is not valid Ion is rewritten under (see [`bad_line`]).
const BAD: &str = "$ion_error";

/// Rewrites a page of Ion lines (newline-separated) as DynamoDB JSON lines, line for line.
/// A line that is not valid Ion becomes a `{"$ion_error":…}` line that the decoder turns
/// into a reject ([`bad_line`]); a blank line stays blank.
#[must_use]
pub fn page_to_ddb_json(data: &[u8]) -> Vec<u8> {
    let mut out = String::with_capacity(data.len() + data.len() / 4);
    let mut start = 0;
    while start < data.len() {
        let end = memchr::memchr(b'\n', &data[start..]).map_or(data.len(), |p| start + p);
        let line = &data[start..end];
        if !line.iter().all(u8::is_ascii_whitespace) {
            let mark = out.len();
            if let Err(e) = line_to_ddb_json(line, &mut out) {
                out.truncate(mark);
                write_bad(&mut out, line, &e);
            }
        }
        if end < data.len() {
            out.push('\n');
        }
        start = end + 1;
    }
    out.into_bytes()
}

fn write_bad(out: &mut String, line: &[u8], e: &IonError) {
    out.push_str("{\"");
    out.push_str(BAD);
    let _ = write!(out, "\":{{\"offset\":{},\"attribute\":", e.offset);
    match &e.attribute {
        Some(a) => write_json_string(out, a),
        None => out.push_str("null"),
    }
    out.push_str(",\"reason\":");
    write_json_string(out, &e.reason);
    out.push_str(",\"line\":");
    write_json_string(out, &String::from_utf8_lossy(line));
    out.push_str("}}");
}

/// A line [`page_to_ddb_json`] wrote for Ion it could not read: the error and the
/// original line.
#[must_use]
pub fn bad_line(line: &[u8]) -> Option<(IonError, String)> {
    if !line.starts_with(b"{\"$ion_error\":") {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(line).ok()?;
    let b = v.get(BAD)?;
    Some((
        IonError {
            offset: b
                .get("offset")?
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())?,
            attribute: b.get("attribute")?.as_str().map(str::to_string),
            reason: b.get("reason")?.as_str()?.to_string(),
        },
        b.get("line")?.as_str()?.to_string(),
    ))
}

/// Rewrites one Ion line (`$ion_1_0 {Item:{…}}`) as DynamoDB JSON (`{"Item":{…}}`),
/// appended to `out`.
///
/// # Errors
/// [`IonError`]: not UTF-8, not Ion, or a value no DynamoDB attribute can hold.
pub fn line_to_ddb_json(line: &[u8], out: &mut String) -> Result<(), IonError> {
    if let Err(e) = std::str::from_utf8(line) {
        return Err(IonError {
            offset: e.valid_up_to(),
            attribute: None,
            reason: "not UTF-8".into(),
        });
    }
    let mut r = Reader {
        b: line,
        i: 0,
        attr: None,
    };
    r.ws()?;
    // The version marker, when the line starts with one.
    if r.b[r.i..].starts_with(b"$ion_1_0") && !r.b.get(r.i + 8).is_some_and(|&c| ident_char(c)) {
        r.i += 8;
        r.ws()?;
    }
    r.expect(b'{', "a line holds one struct: {Item:{…}}")?;
    out.push('{');
    let mut first = true;
    loop {
        r.ws()?;
        if r.eat(b'}') {
            break;
        }
        if !first {
            r.expect(b',', "expected ',' or '}' between fields")?;
            r.ws()?;
            if r.eat(b'}') {
                break;
            }
        }
        first = false;
        // Item, Keys, NewImage, OldImage, Metadata: each a struct of attributes.
        if !out.ends_with('{') {
            out.push(',');
        }
        r.field_name_json(out)?;
        out.push(':');
        r.ws()?;
        r.expect(b':', "expected ':' after a field name")?;
        r.ws()?;
        if r.b[r.i..].starts_with(b"null") && !r.b.get(r.i + 4).is_some_and(|&c| ident_char(c)) {
            // An image that is not there (`OldImage: null`).
            r.i += 4;
            r.skip_null_type();
            out.push_str("null");
            continue;
        }
        r.attributes(out, true)?;
    }
    out.push('}');
    r.ws()?;
    if r.i < r.b.len() {
        return Err(r.err("text after the line's struct"));
    }
    Ok(())
}

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
    /// Where the name of the item attribute being read starts, for errors (the name is
    /// read again only when there is one).
    attr: Option<usize>,
}

fn ident_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$'
}

fn ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b'$'
}

/// Annotations that make a list a set.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Set {
    S,
    N,
    B,
}

impl<'a> Reader<'a> {
    fn err(&self, reason: &str) -> IonError {
        let attribute = self.attr.and_then(|at| {
            let mut again = Reader {
                b: self.b,
                i: at,
                attr: None,
            };
            let mut name = String::new();
            again.field_name(&mut name).ok().map(|()| name)
        });
        IonError {
            offset: self.i,
            attribute,
            reason: reason.to_string(),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8, reason: &str) -> Result<(), IonError> {
        if self.eat(c) {
            Ok(())
        } else if self.i >= self.b.len() {
            Err(self.err("the line ends inside a value (truncated)"))
        } else {
            Err(self.err(reason))
        }
    }

    /// Whitespace and comments.
    fn ws(&mut self) -> Result<(), IonError> {
        loop {
            match self.peek() {
                Some(b' ' | b'\t' | b'\r' | b'\n' | 0x0b | 0x0c) => self.i += 1,
                Some(b'/') if self.b.get(self.i + 1) == Some(&b'/') => {
                    self.i = memchr::memchr(b'\n', &self.b[self.i..])
                        .map_or(self.b.len(), |p| self.i + p);
                }
                Some(b'/') if self.b.get(self.i + 1) == Some(&b'*') => {
                    match memchr::memmem::find(&self.b[self.i + 2..], b"*/") {
                        Some(p) => self.i += p + 4,
                        None => return Err(self.err("a /* comment */ is not closed")),
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    /// A field name: a bare symbol, a quoted symbol, or a string, decoded into `s`.
    fn field_name(&mut self, s: &mut String) -> Result<(), IonError> {
        match self.peek() {
            Some(b'"') => self.short_string(b'"', s),
            Some(b'\'') if self.b[self.i..].starts_with(b"'''") => self.long_strings(s),
            Some(b'\'') => self.short_string(b'\'', s),
            Some(c) if ident_start(c) => {
                let start = self.i;
                while self.peek().is_some_and(ident_char) {
                    self.i += 1;
                }
                s.push_str(std::str::from_utf8(&self.b[start..self.i]).unwrap_or_default());
                Ok(())
            }
            None => Err(self.err("the line ends inside a struct (truncated)")),
            Some(_) => Err(self.err("expected a field name")),
        }
    }

    /// A field name written as a JSON string: a bare one as it is (its characters need no
    /// escape), a quoted one decoded and escaped.
    fn field_name_json(&mut self, out: &mut String) -> Result<(), IonError> {
        if let Some(c) = self.peek().filter(|&c| ident_start(c)) {
            let _ = c;
            let start = self.i;
            while self.peek().is_some_and(ident_char) {
                self.i += 1;
            }
            out.push('"');
            out.push_str(std::str::from_utf8(&self.b[start..self.i]).unwrap_or_default());
            out.push('"');
            return Ok(());
        }
        let mut name = String::new();
        self.field_name(&mut name)?;
        write_json_string(out, &name);
        Ok(())
    }

    /// A struct of attributes (`{name: value, …}`), written as a DynamoDB JSON map of
    /// typed values. `top`: an item's attributes (named in errors).
    fn attributes(&mut self, out: &mut String, top: bool) -> Result<(), IonError> {
        self.expect(b'{', "expected a struct of attributes")?;
        out.push('{');
        let mut first = true;
        loop {
            self.ws()?;
            if self.eat(b'}') {
                break;
            }
            if !first {
                self.expect(b',', "expected ',' or '}' between fields")?;
                self.ws()?;
                if self.eat(b'}') {
                    break;
                }
                out.push(',');
            }
            first = false;
            if top {
                self.attr = Some(self.i);
            }
            self.field_name_json(out)?;
            out.push(':');
            self.ws()?;
            self.expect(b':', "expected ':' after a field name")?;
            self.ws()?;
            self.value(out)?;
        }
        if top {
            self.attr = None;
        }
        out.push('}');
        Ok(())
    }

    /// One value, written as a typed DynamoDB JSON value.
    fn value(&mut self, out: &mut String) -> Result<(), IonError> {
        let set = self.annotations()?;
        if let Some(set) = set {
            return self.set(out, set);
        }
        match self.peek() {
            None => Err(self.err("the line ends where a value should be (truncated)")),
            Some(b'"') => {
                out.push_str("{\"S\":\"");
                self.short_string_json(out)?;
                out.push_str("\"}");
                Ok(())
            }
            Some(b'\'') if self.b[self.i..].starts_with(b"'''") => {
                let mut s = String::new();
                self.long_strings(&mut s)?;
                out.push_str("{\"S\":");
                write_json_string(out, &s);
                out.push('}');
                Ok(())
            }
            Some(b'{') if self.b.get(self.i + 1) == Some(&b'{') => {
                out.push_str("{\"B\":\"");
                self.blob(out)?;
                out.push_str("\"}");
                Ok(())
            }
            Some(b'{') => {
                out.push_str("{\"M\":");
                self.attributes(out, false)?;
                out.push('}');
                Ok(())
            }
            Some(b'[') => {
                out.push_str("{\"L\":[");
                self.list(out, |r, out| r.value(out))?;
                out.push_str("]}");
                Ok(())
            }
            Some(b'(') => Err(self.err("an Ion s-expression is not a DynamoDB value")),
            Some(b'\'') => Err(self.err("an Ion symbol is not a DynamoDB value")),
            Some(c) if c == b'-' || c == b'+' || c.is_ascii_digit() => {
                out.push_str("{\"N\":\"");
                self.number(out)?;
                out.push_str("\"}");
                Ok(())
            }
            Some(c) if ident_start(c) => {
                let start = self.i;
                while self.peek().is_some_and(ident_char) {
                    self.i += 1;
                }
                match &self.b[start..self.i] {
                    b"true" => out.push_str("{\"BOOL\":true}"),
                    b"false" => out.push_str("{\"BOOL\":false}"),
                    b"null" => {
                        self.skip_null_type();
                        out.push_str("{\"NULL\":true}");
                    }
                    b"nan" => {
                        self.i = start;
                        return Err(self.err("an Ion float (nan) is not a DynamoDB number"));
                    }
                    _ => {
                        self.i = start;
                        return Err(self.err("an Ion symbol is not a DynamoDB value"));
                    }
                }
                Ok(())
            }
            Some(_) => Err(self.err("expected a value")),
        }
    }

    /// `.string`, `.int`, … after `null`.
    fn skip_null_type(&mut self) {
        if self.peek() == Some(b'.') && self.b.get(self.i + 1).is_some_and(|&c| ident_start(c)) {
            self.i += 1;
            while self.peek().is_some_and(ident_char) {
                self.i += 1;
            }
        }
    }

    /// `name::` annotations before a value: a set's, or none.
    fn annotations(&mut self) -> Result<Option<Set>, IonError> {
        let mut set = None;
        loop {
            let start = self.i;
            let name = match self.peek() {
                Some(b'\'') if !self.b[self.i..].starts_with(b"'''") => {
                    let mut s = String::new();
                    self.short_string(b'\'', &mut s)?;
                    s
                }
                Some(c) if ident_start(c) => {
                    while self.peek().is_some_and(ident_char) {
                        self.i += 1;
                    }
                    String::from_utf8_lossy(&self.b[start..self.i]).into_owned()
                }
                _ => return Ok(set),
            };
            let after = self.i;
            self.ws()?;
            if !self.b[self.i..].starts_with(b"::") {
                // Not an annotation: the value itself.
                let _ = after;
                self.i = start;
                return Ok(set);
            }
            self.i += 2;
            self.ws()?;
            let this = match name.as_str() {
                "$dynamodb_SS" => Set::S,
                "$dynamodb_NS" => Set::N,
                "$dynamodb_BS" => Set::B,
                _ => {
                    self.i = start;
                    return Err(self.err(&format!(
                        "unknown annotation `{name}::` (a DynamoDB Ion export annotates sets only: $dynamodb_SS, $dynamodb_NS, $dynamodb_BS)"
                    )));
                }
            };
            if set.is_some() {
                self.i = start;
                return Err(self.err("a value with two set annotations"));
            }
            set = Some(this);
        }
    }

    /// `[a, b, …]`, each element written by `each`, comma-separated.
    fn list(
        &mut self,
        out: &mut String,
        mut each: impl FnMut(&mut Self, &mut String) -> Result<(), IonError>,
    ) -> Result<(), IonError> {
        self.expect(b'[', "expected a list")?;
        let mut first = true;
        loop {
            self.ws()?;
            if self.eat(b']') {
                return Ok(());
            }
            if !first {
                self.expect(b',', "expected ',' or ']' between elements")?;
                self.ws()?;
                if self.eat(b']') {
                    return Ok(());
                }
                out.push(',');
            }
            first = false;
            each(self, out)?;
        }
    }

    /// A list annotated as a set: its elements as the set's (strings, numbers, blobs).
    fn set(&mut self, out: &mut String, set: Set) -> Result<(), IonError> {
        if self.peek() != Some(b'[') {
            return Err(self.err("a set annotation on a value that is not a list"));
        }
        out.push_str(match set {
            Set::S => "{\"SS\":[",
            Set::N => "{\"NS\":[",
            Set::B => "{\"BS\":[",
        });
        self.list(out, |r, out| {
            r.annotations_none()?;
            let c = r.peek();
            match (set, c) {
                (Set::S, Some(b'"')) => {
                    out.push('"');
                    r.short_string_json(out)?;
                    out.push('"');
                }
                (Set::S, Some(b'\'')) if r.b[r.i..].starts_with(b"'''") => {
                    let mut s = String::new();
                    r.long_strings(&mut s)?;
                    write_json_string(out, &s);
                }
                (Set::N, Some(c)) if c == b'-' || c == b'+' || c.is_ascii_digit() => {
                    out.push('"');
                    r.number(out)?;
                    out.push('"');
                }
                (Set::B, Some(b'{')) if r.b.get(r.i + 1) == Some(&b'{') => {
                    out.push('"');
                    r.blob(out)?;
                    out.push('"');
                }
                (_, None) => return Err(r.err("the line ends inside a set (truncated)")),
                (Set::S, _) => return Err(r.err("a $dynamodb_SS element that is not a string")),
                (Set::N, _) => return Err(r.err("a $dynamodb_NS element that is not a number")),
                (Set::B, _) => return Err(r.err("a $dynamodb_BS element that is not a blob")),
            }
            Ok(())
        })?;
        out.push_str("]}");
        Ok(())
    }

    fn annotations_none(&mut self) -> Result<(), IonError> {
        let at = self.i;
        if self.annotations()?.is_some() {
            self.i = at;
            return Err(self.err("a set inside a set"));
        }
        Ok(())
    }

    /// A short string (`"…"`, or `'…'` for a quoted symbol), decoded into `s`.
    fn short_string(&mut self, quote: u8, s: &mut String) -> Result<(), IonError> {
        self.i += 1;
        loop {
            let rest = &self.b[self.i..];
            let Some(p) = memchr::memchr3(quote, b'\\', b'\n', rest) else {
                return Err(self.err("the line ends inside a string (truncated)"));
            };
            s.push_str(&String::from_utf8_lossy(&rest[..p]));
            self.i += p;
            match self.b[self.i] {
                b'\n' => return Err(self.err("a newline inside a short string")),
                b'\\' => {
                    let c = self.escape()?;
                    if let Some(c) = c {
                        s.push(c);
                    }
                }
                _ => {
                    self.i += 1;
                    return Ok(());
                }
            }
        }
    }

    /// A `"…"` string written as JSON string content (no quotes): runs without escapes
    /// are copied as they are.
    fn short_string_json(&mut self, out: &mut String) -> Result<(), IonError> {
        self.i += 1;
        loop {
            let rest = &self.b[self.i..];
            let Some(p) = memchr::memchr2(b'"', b'\\', rest) else {
                return Err(self.err("the line ends inside a string (truncated)"));
            };
            let run = &rest[..p];
            if run.iter().any(|&c| c < 0x20) {
                // Raw control characters (a tab, say): escaped for JSON.
                let text = String::from_utf8_lossy(run);
                let mut quoted = String::new();
                write_json_string(&mut quoted, &text);
                out.push_str(&quoted[1..quoted.len() - 1]);
            } else {
                // The line was checked to be UTF-8, and a run ends before an ASCII byte.
                out.push_str(std::str::from_utf8(run).unwrap_or_default());
            }
            self.i += p;
            if self.b[self.i] == b'"' {
                self.i += 1;
                return Ok(());
            }
            if let Some(c) = self.escape()? {
                let mut buf = [0u8; 4];
                let mut quoted = String::new();
                write_json_string(&mut quoted, c.encode_utf8(&mut buf));
                out.push_str(&quoted[1..quoted.len() - 1]);
            }
        }
    }

    /// One or more `'''…'''` long strings (whitespace between), concatenated into `s`.
    fn long_strings(&mut self, s: &mut String) -> Result<(), IonError> {
        while self.b[self.i..].starts_with(b"'''") {
            self.i += 3;
            loop {
                let rest = &self.b[self.i..];
                let Some(p) = memchr::memchr2(b'\'', b'\\', rest) else {
                    return Err(self.err("the line ends inside a long string (truncated)"));
                };
                s.push_str(&String::from_utf8_lossy(&rest[..p]));
                self.i += p;
                if self.b[self.i..].starts_with(b"'''") {
                    self.i += 3;
                    break;
                }
                if self.b[self.i] == b'\'' {
                    s.push('\'');
                    self.i += 1;
                } else if let Some(c) = self.escape()? {
                    s.push(c);
                }
            }
            let at = self.i;
            self.ws()?;
            if !self.b[self.i..].starts_with(b"'''") {
                self.i = at;
                break;
            }
        }
        Ok(())
    }

    /// An escape at `\`: the character, or `None` for an escaped newline.
    fn escape(&mut self) -> Result<Option<char>, IonError> {
        let at = self.i;
        let Some(&c) = self.b.get(self.i + 1) else {
            return Err(self.err("the line ends inside an escape (truncated)"));
        };
        self.i += 2;
        let simple = match c {
            b'a' => Some('\u{07}'),
            b'b' => Some('\u{08}'),
            b't' => Some('\t'),
            b'n' => Some('\n'),
            b'f' => Some('\u{0c}'),
            b'r' => Some('\r'),
            b'v' => Some('\u{0b}'),
            b'?' => Some('?'),
            b'0' => Some('\0'),
            b'\'' => Some('\''),
            b'"' => Some('"'),
            b'/' => Some('/'),
            b'\\' => Some('\\'),
            b'\n' => return Ok(None),
            b'\r' => {
                self.eat(b'\n');
                return Ok(None);
            }
            _ => None,
        };
        if let Some(ch) = simple {
            return Ok(Some(ch));
        }
        let digits = match c {
            b'x' => 2,
            b'u' => 4,
            b'U' => 8,
            _ => {
                self.i = at;
                return Err(self.err("an unknown escape in a string"));
            }
        };
        let mut code = self.hex(digits, at)?;
        if (0xD800..0xDC00).contains(&code) {
            // A surrogate pair: \uD83D\uDE00.
            if self.b[self.i..].starts_with(b"\\u") {
                self.i += 2;
                let low = self.hex(4, at)?;
                if !(0xDC00..0xE000).contains(&low) {
                    self.i = at;
                    return Err(self.err("a high surrogate without its low half"));
                }
                code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
            } else {
                self.i = at;
                return Err(self.err("a high surrogate without its low half"));
            }
        }
        match char::from_u32(code) {
            Some(ch) => Ok(Some(ch)),
            None => {
                self.i = at;
                Err(self.err("an escape that is not a Unicode scalar value"))
            }
        }
    }

    fn hex(&mut self, n: usize, at: usize) -> Result<u32, IonError> {
        let Some(h) = self.b.get(self.i..self.i + n) else {
            self.i = at;
            return Err(self.err("the line ends inside an escape (truncated)"));
        };
        let text = std::str::from_utf8(h).unwrap_or("");
        match u32::from_str_radix(text, 16) {
            Ok(v) if text.bytes().all(|c| c.is_ascii_hexdigit()) => {
                self.i += n;
                Ok(v)
            }
            _ => {
                self.i = at;
                Err(self.err("an escape with a digit that is not hexadecimal"))
            }
        }
    }

    /// `{{ base64 }}`: the base64 text, whitespace dropped (checked by the decoder, as
    /// a JSON export's `B`). A clob (`{{"…"}}`) is refused.
    fn blob(&mut self, out: &mut String) -> Result<(), IonError> {
        self.i += 2;
        loop {
            match self.peek() {
                None => return Err(self.err("the line ends inside a blob (truncated)")),
                Some(b'}') if self.b.get(self.i + 1) == Some(&b'}') => {
                    self.i += 2;
                    return Ok(());
                }
                Some(c) if c.is_ascii_whitespace() => self.i += 1,
                Some(b'"' | b'\'') => return Err(self.err("an Ion clob is not a DynamoDB value")),
                Some(c) if c.is_ascii_alphanumeric() || c == b'+' || c == b'/' || c == b'=' => {
                    out.push(char::from(c));
                    self.i += 1;
                }
                Some(_) => return Err(self.err("a character that is not base64 inside a blob")),
            }
        }
    }

    /// An Ion int or decimal, written as the exact DynamoDB number text (`6d2` → `600`,
    /// `1.50` → `1.50`, `0x1F` → `31`). A float (`1e3`, `+inf`) or a timestamp is an
    /// error: no DynamoDB number comes from one.
    fn number(&mut self, out: &mut String) -> Result<(), IonError> {
        let start = self.i;
        let end = self.b[start..]
            .iter()
            .position(|&c| {
                !(c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'+' | b'_' | b':'))
            })
            .map_or(self.b.len(), |p| start + p);
        let text = &self.b[start..end];
        // The usual forms, written as they are: `42`, `-7`, `21.05`, `103.` (no point).
        if let Some(plain) = plain_number(text) {
            out.push_str(plain);
            self.i = end;
            return Ok(());
        }
        let fail = |r: &mut Self, reason: &str| {
            r.i = start;
            Err(r.err(reason))
        };
        if text == b"+inf" || text == b"-inf" {
            return fail(self, "an Ion float (inf) is not a DynamoDB number");
        }
        let (neg, body) = match text.first() {
            Some(b'-') => (true, &text[1..]),
            _ => (false, text),
        };
        if body.len() > 2 && body[0] == b'0' && matches!(body[1], b'x' | b'X' | b'b' | b'B') {
            let radix = if matches!(body[1], b'x' | b'X') {
                16
            } else {
                2
            };
            let digits: String = body[2..]
                .iter()
                .filter(|&&c| c != b'_')
                .map(|&c| char::from(c))
                .collect();
            let Ok(v) = u128::from_str_radix(&digits, radix) else {
                return fail(self, "an Ion int that is not a number, or beyond 128 bits");
            };
            if neg && v != 0 {
                out.push('-');
            }
            let _ = write!(out, "{v}");
            self.i = end;
            return Ok(());
        }
        // digits [. digits] [(d|D) [+-] digits]; an `e` makes it a float.
        let mut int = String::new();
        let mut frac = String::new();
        let mut exp: i64 = 0;
        let mut j = 0;
        let mut last_digit = false;
        let mut seen_digit = false;
        while j < body.len() {
            let c = body[j];
            if c.is_ascii_digit() {
                int.push(char::from(c));
                last_digit = true;
                seen_digit = true;
            } else if c == b'_' && last_digit && body.get(j + 1).is_some_and(u8::is_ascii_digit) {
                last_digit = false;
            } else {
                break;
            }
            j += 1;
        }
        if !seen_digit {
            return fail(self, "expected a number");
        }
        if int.len() > 1 && int.starts_with('0') {
            return fail(self, "an Ion int with a leading zero");
        }
        let mut decimal = false;
        if body.get(j) == Some(&b'.') {
            decimal = true;
            j += 1;
            while j < body.len() && (body[j].is_ascii_digit() || body[j] == b'_') {
                if body[j] != b'_' {
                    frac.push(char::from(body[j]));
                }
                j += 1;
            }
        }
        match body.get(j) {
            Some(b'd' | b'D') => {
                decimal = true;
                j += 1;
                let sign_at = j;
                if matches!(body.get(j), Some(b'+' | b'-')) {
                    j += 1;
                }
                let digits = &body[j..];
                if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                    return fail(self, "an Ion decimal with a bad exponent");
                }
                let Ok(e) = std::str::from_utf8(&body[sign_at..])
                    .unwrap_or("")
                    .parse::<i64>()
                else {
                    return fail(self, "an Ion decimal with an exponent out of range");
                };
                if e.abs() > 100_000 {
                    return fail(self, "an Ion decimal with an exponent out of range");
                }
                exp = e;
                j = body.len();
            }
            Some(b'e' | b'E') => {
                return fail(
                    self,
                    "an Ion float is not a DynamoDB number (exports write decimals: 6d2, 1.5)",
                );
            }
            Some(b'-' | b'T' | b':') => {
                return fail(self, "an Ion timestamp is not a DynamoDB value");
            }
            _ => {}
        }
        if j != body.len() {
            return fail(self, "a number with characters after it");
        }
        let _ = decimal;
        write_decimal(out, neg, &int, &frac, exp);
        self.i = end;
        Ok(())
    }
}

/// An int or decimal with no exponent, underscore or radix, whose text is already the
/// DynamoDB number's (`103.` less its point): what most numbers of an export are.
fn plain_number(text: &[u8]) -> Option<&str> {
    let body = text.strip_prefix(b"-").unwrap_or(text);
    let int_len = body.iter().take_while(|c| c.is_ascii_digit()).count();
    if int_len == 0 || (int_len > 1 && body[0] == b'0') {
        return None;
    }
    let rest = &body[int_len..];
    let keep = match rest {
        [] => text.len(),
        [b'.'] => text.len() - 1,
        [b'.', frac @ ..] if frac.iter().all(u8::is_ascii_digit) => text.len(),
        _ => return None,
    };
    let t = std::str::from_utf8(&text[..keep]).ok()?;
    // `-0`, `-0.0`: DynamoDB has no negative zero.
    if t.starts_with('-') && t[1..].bytes().all(|c| c == b'0' || c == b'.') {
        return None;
    }
    Some(t)
}

/// `int.frac × 10^exp` as plain decimal text, every digit kept (trailing fraction zeros
/// too, as DynamoDB JSON keeps what was written): the point moved, zeros added.
fn write_decimal(out: &mut String, neg: bool, int: &str, frac: &str, exp: i64) {
    let digits: String = [int, frac].concat();
    // The point sits after `point` digits.
    let point = int.len() as i64 + exp;
    let (whole, fraction): (String, String) = if point <= 0 {
        (
            "0".into(),
            "0".repeat(usize::try_from(-point).unwrap_or(0)) + &digits,
        )
    } else if point as usize >= digits.len() {
        (
            digits.clone() + &"0".repeat(point as usize - digits.len()),
            String::new(),
        )
    } else {
        (
            digits[..point as usize].to_string(),
            digits[point as usize..].to_string(),
        )
    };
    let whole = whole.trim_start_matches('0');
    let whole = if whole.is_empty() { "0" } else { whole };
    let zero = whole == "0" && fraction.bytes().all(|c| c == b'0');
    if neg && !zero {
        out.push('-');
    }
    out.push_str(whole);
    if !fraction.is_empty() {
        out.push('.');
        out.push_str(&fraction);
    }
}

/// Writes DynamoDB JSON lines (`{"Item":{…}}`, newline-separated) as the Ion lines an
/// Ion export holds (`$ion_1_0 {Item:{…}}`): for `fixtures generate --format ion`. Numbers
/// are written as AWS writes them: an integer with its trailing zeros as an exponent
/// (`600` → `6d2`, `103` → `103.`), a fraction as written (`12.50`).
///
/// # Errors
/// A line that is not DynamoDB JSON (the generator's own output always is).
pub fn page_from_ddb_json(data: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    let mut s = String::with_capacity(data.len());
    for line in data.split(|&b| b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_slice(line).map_err(|e| format!("not JSON: {e}"))?;
        let top = v.as_object().ok_or("a line is not an object")?;
        s.push_str("$ion_1_0 {");
        for (i, (name, image)) in top.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            write_ion_name(&mut s, name);
            s.push(':');
            match image.as_object() {
                Some(attrs) => write_ion_attrs(&mut s, attrs)?,
                None => s.push_str("null"),
            }
        }
        s.push_str("}\n");
    }
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn write_ion_attrs(
    s: &mut String,
    attrs: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), String> {
    s.push('{');
    for (i, (name, v)) in attrs.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        write_ion_name(s, name);
        s.push(':');
        write_ion_value(s, v)?;
    }
    s.push('}');
    Ok(())
}

fn write_ion_value(s: &mut String, v: &serde_json::Value) -> Result<(), String> {
    use serde_json::Value as J;
    let (tag, inner) = v
        .as_object()
        .and_then(|o| o.iter().next())
        .ok_or("a value is not a typed DynamoDB JSON value")?;
    let text = |x: &J| {
        x.as_str()
            .map(str::to_string)
            .ok_or("a typed value is not text")
    };
    let items = |x: &J| x.as_array().cloned().ok_or("a set or list is not an array");
    match tag.as_str() {
        "S" => write_ion_string(s, &text(inner)?),
        "N" => write_ion_number(s, &text(inner)?),
        "B" => {
            s.push_str("{{");
            s.push_str(&text(inner)?);
            s.push_str("}}");
        }
        "BOOL" => s.push_str(if inner.as_bool() == Some(true) {
            "true"
        } else {
            "false"
        }),
        "NULL" => s.push_str("null"),
        "M" => write_ion_attrs(s, inner.as_object().ok_or("an M is not an object")?)?,
        "L" => {
            s.push('[');
            for (i, x) in items(inner)?.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                write_ion_value(s, x)?;
            }
            s.push(']');
        }
        "SS" | "NS" | "BS" => {
            s.push_str("$dynamodb_");
            s.push_str(tag);
            s.push_str("::[");
            for (i, x) in items(inner)?.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                let t = text(x)?;
                match tag.as_str() {
                    "SS" => write_ion_string(s, &t),
                    "NS" => write_ion_number(s, &t),
                    _ => {
                        s.push_str("{{");
                        s.push_str(&t);
                        s.push_str("}}");
                    }
                }
            }
            s.push(']');
        }
        other => return Err(format!("unknown DynamoDB type {other}")),
    }
    Ok(())
}

fn write_ion_name(s: &mut String, name: &str) {
    let bare = name
        .bytes()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
        && !matches!(name, "null" | "true" | "false" | "nan");
    if bare {
        s.push_str(name);
    } else {
        write_ion_string(s, name);
    }
}

fn write_ion_string(s: &mut String, text: &str) {
    s.push('"');
    for c in text.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\t' => s.push_str("\\t"),
            '\r' => s.push_str("\\r"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(s, "\\x{:02x}", c as u32);
            }
            c => s.push(c),
        }
    }
    s.push('"');
}

/// A DynamoDB number as an Ion decimal: `600` → `6d2`, `103` → `103.`, `0` → `0.`,
/// `12.50` → `12.50`, `1.5E3` → `1.5d3`.
fn write_ion_number(s: &mut String, n: &str) {
    let (mantissa, exp) = match n.find(['e', 'E']) {
        Some(p) => (&n[..p], Some(&n[p + 1..])),
        None => (n, None),
    };
    if let Some(e) = exp {
        s.push_str(mantissa);
        if !mantissa.contains('.') {
            s.push('.');
        }
        s.push('d');
        s.push_str(e.trim_start_matches('+'));
        return;
    }
    if mantissa.contains('.') {
        s.push_str(mantissa);
        return;
    }
    let (sign, digits) = match mantissa.strip_prefix('-') {
        Some(d) => ("-", d),
        None => ("", mantissa.strip_prefix('+').unwrap_or(mantissa)),
    };
    let kept = digits.trim_end_matches('0');
    s.push_str(sign);
    if kept.is_empty() {
        s.push_str("0.");
    } else if kept.len() == digits.len() {
        s.push_str(digits);
        s.push('.');
    } else {
        s.push_str(kept);
        let _ = write!(s, "d{}", digits.len() - kept.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(ion: &str) -> Result<String, IonError> {
        let mut out = String::new();
        line_to_ddb_json(ion.as_bytes(), &mut out).map(|()| out)
    }

    fn item(ion_attrs: &str) -> String {
        conv(&format!("$ion_1_0 {{Item:{{{ion_attrs}}}}}")).expect("converts")
    }

    #[test]
    fn numbers_are_exact() {
        for (ion, n) in [
            ("103.", "103"),
            ("6d2", "600"),
            ("2d3", "2000"),
            ("3937d1", "39370"),
            ("1.5d-3", "0.0015"),
            ("1.50", "1.50"),
            ("-0.25", "-0.25"),
            ("0.", "0"),
            ("-0d0", "0"),
            ("42", "42"),
            ("-7", "-7"),
            ("1_000", "1000"),
            ("0x1F", "31"),
            ("-0b101", "-5"),
            (
                "12345678901234567890123456789012345678",
                "12345678901234567890123456789012345678",
            ),
            ("1d125", &format!("1{}", "0".repeat(125))),
            ("1d-130", &format!("0.{}1", "0".repeat(129))),
            ("123.456d1", "1234.56"),
            ("123.456D-5", "0.00123456"),
        ] {
            assert_eq!(
                item(&format!("a:{ion}")),
                format!("{{\"Item\":{{\"a\":{{\"N\":\"{n}\"}}}}}}"),
                "{ion}"
            );
        }
    }

    #[test]
    fn every_type_and_name_form() {
        assert_eq!(
            item(
                r#"s:"a\"b\u00e9\U0001F600\x41\n", 'q name':true, "k":false, n:null, m:{x:{{AQID}}}, l:[1., "x", null.string]"#
            ),
            r#"{"Item":{"s":{"S":"a\"bé😀A\n"},"q name":{"BOOL":true},"k":{"BOOL":false},"n":{"NULL":true},"m":{"M":{"x":{"B":"AQID"}}},"l":{"L":[{"N":"1"},{"S":"x"},{"NULL":true}]}}}"#
        );
        assert_eq!(
            item(
                r#"ss:$dynamodb_SS::["a","b"], ns:$dynamodb_NS::[1.5,6d2], bs:$dynamodb_BS::[{{AA==}}, {{ AQ== }}]"#
            ),
            r#"{"Item":{"ss":{"SS":["a","b"]},"ns":{"NS":["1.5","600"]},"bs":{"BS":["AA==","AQ=="]}}}"#
        );
        assert_eq!(
            item("t:'''long ''' /* c */ '''string''', e:{}, el:[]"),
            r#"{"Item":{"t":{"S":"long string"},"e":{"M":{}},"el":{"L":[]}}}"#
        );
        assert_eq!(
            item("\"\\uD83D\\uDE00\":\"\\uD83D\\uDE00\""),
            r#"{"Item":{"😀":{"S":"😀"}}}"#
        );
        // No version marker, an incremental line with an absent old image.
        assert_eq!(
            conv("{Metadata:{WriteTimestampMicros:1767225700000000.},Keys:{id:\"1\"},NewImage:{id:\"1\"},OldImage:null}").expect("ok"),
            r#"{"Metadata":{"WriteTimestampMicros":{"N":"1767225700000000"}},"Keys":{"id":{"S":"1"}},"NewImage":{"id":{"S":"1"}},"OldImage":null}"#
        );
    }

    #[test]
    fn errors_name_the_attribute() {
        let cases = [
            ("$ion_1_0 {Item:{a:\"x\", b:\"y", "b", "truncated"),
            (
                "$ion_1_0 {Item:{a:$dynamodb_XS::[\"x\"]}}",
                "a",
                "unknown annotation",
            ),
            (
                "$ion_1_0 {Item:{a:$dynamodb_NS::[\"x\"]}}",
                "a",
                "not a number",
            ),
            ("$ion_1_0 {Item:{a:$dynamodb_SS::\"x\"}}", "a", "not a list"),
            ("$ion_1_0 {Item:{a:1e3}}", "a", "float"),
            ("$ion_1_0 {Item:{a:2024-01-01T}}", "a", "timestamp"),
            ("$ion_1_0 {Item:{a:sym}}", "a", "symbol"),
            ("$ion_1_0 {Item:{a:{{\"clob\"}}}}", "a", "clob"),
            ("$ion_1_0 {Item:{a:(1 2)}}", "a", "s-expression"),
            ("$ion_1_0 {Item:{a:\"\\q\"}}", "a", "unknown escape"),
            ("$ion_1_0 {Item:{a:007}}", "a", "leading zero"),
        ];
        for (ion, attr, why) in cases {
            let e = conv(ion).expect_err(ion);
            assert_eq!(e.attribute.as_deref(), Some(attr), "{ion}: {e:?}");
            assert!(e.reason.contains(why), "{ion}: {e:?}");
        }
        assert!(conv("$ion_1_0 {Item:{}} x").is_err());
        assert!(conv("[1]").is_err());
    }

    #[test]
    fn written_ion_reads_back_as_the_same_json() {
        let json = br#"{"Item":{"id":{"S":"a \"q\" \\ \u0001 \u00e9"},"n":{"N":"600"},"m":{"N":"103"},"z":{"N":"0"},"f":{"N":"-12.50"},"e":{"N":"1.5E3"},"b":{"B":"AQID"},"t":{"BOOL":true},"x":{"NULL":true},"l":{"L":[{"M":{"a b":{"SS":["x","y"]},"null":{"NS":["1","20"]}}},{"BS":["AA=="]}]}}}"#;
        let mut ion = Vec::new();
        page_from_ddb_json(json, &mut ion).expect("writes");
        let text = String::from_utf8(ion.clone()).expect("utf8");
        assert!(
            text.contains("n:6d2") && text.contains("m:103.") && text.contains("z:0."),
            "{text}"
        );
        let back = page_to_ddb_json(&ion);
        let a: serde_json::Value = serde_json::from_slice(json).expect("json");
        let b: serde_json::Value = serde_json::from_slice(back.trim_ascii()).expect("json");
        // 1.5E3 comes back as its plain digits; everything else as written.
        let mut want = a.clone();
        want["Item"]["e"]["N"] = "1500".into();
        assert_eq!(b, want);
    }

    #[test]
    fn a_page_keeps_its_lines_and_marks_bad_ones() {
        let page = b"$ion_1_0 {Item:{a:1.}}\n\n$ion_1_0 {Item:{a:\n$ion_1_0 {Item:{b:\"x\"}}\n";
        let out = page_to_ddb_json(page);
        let text = String::from_utf8(out).expect("utf8");
        let lines: Vec<&str> = text.split('\n').collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert_eq!(lines[0], r#"{"Item":{"a":{"N":"1"}}}"#);
        assert_eq!(lines[1], "");
        let (e, raw) = bad_line(lines[2].as_bytes()).expect("marked");
        assert_eq!(
            (e.attribute.as_deref(), raw.as_str()),
            (Some("a"), "$ion_1_0 {Item:{a:")
        );
        assert_eq!(lines[3], r#"{"Item":{"b":{"S":"x"}}}"#);
        assert_eq!(lines[4], "");
        assert!(bad_line(lines[0].as_bytes()).is_none());
    }
}
