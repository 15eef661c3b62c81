//! DynamoDB JSON → a borrowed attribute tree, and that tree → plain JSON.
//!
//! Input: one line of an export data file (`{"Item":{…}}`) or a bare item object.
//! Output: [`Item`], whose strings borrow from the line wherever they hold no escape.
//! The parser is hand-written for this one grammar: it validates the whole line as UTF-8
//! once, then only looks for quotes and backslashes, which is what makes decode cheap.

use std::borrow::Cow;
use std::fmt::Write as _;

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
    let text = std::str::from_utf8(line).map_err(|e| ParseError {
        attribute: None,
        reason: format!("not valid UTF-8 at byte {}", e.valid_up_to()),
        offset: e.valid_up_to(),
    })?;
    let mut p = Parser {
        s: text,
        b: text.as_bytes(),
        pos: 0,
        attr: None,
    };
    p.ws();
    p.expect(b'{')?;
    p.ws();
    let key = p.string()?;
    if key != "Item" {
        return Err(p.err(format!(
            "expected the key \"Item\", found \"{key}\" (only full exports in DynamoDB JSON are supported)"
        )));
    }
    p.ws();
    p.expect(b':')?;
    p.item_into(item)?;
    p.ws();
    p.expect(b'}')?;
    p.ws();
    if p.pos != p.b.len() {
        return Err(p.err("unexpected text after the item".into()));
    }
    Ok(())
}

/// Parses a bare item object `{"attr": {"S": "x"}, ...}`.
///
/// # Errors
/// [`ParseError`] as for [`parse_export_line`].
pub fn parse_item(text: &str) -> Result<Item<'_>, ParseError> {
    let mut p = Parser {
        s: text,
        b: text.as_bytes(),
        pos: 0,
        attr: None,
    };
    let item = p.item()?;
    p.ws();
    if p.pos != p.b.len() {
        return Err(p.err("unexpected text after the item".into()));
    }
    Ok(item)
}

struct Parser<'a> {
    s: &'a str,
    b: &'a [u8],
    pos: usize,
    attr: Option<Cow<'a, str>>,
}

impl<'a> Parser<'a> {
    fn err(&self, reason: String) -> ParseError {
        ParseError {
            attribute: self.attr.as_ref().map(|a| a.to_string()),
            reason,
            offset: self.pos,
        }
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(&c) = self.b.get(self.pos) {
            if c == b' ' || c == b'\n' || c == b'\t' || c == b'\r' {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    #[inline]
    fn expect(&mut self, c: u8) -> Result<(), ParseError> {
        if self.b.get(self.pos) == Some(&c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.expected(c))
        }
    }

    #[cold]
    #[inline(never)]
    fn expected(&self, c: u8) -> ParseError {
        let found = self
            .s
            .get(self.pos..)
            .and_then(|r| r.chars().next())
            .map_or_else(|| "end of line".to_string(), |ch| format!("`{ch}`"));
        self.err(format!("expected `{}`, found {found}", c as char))
    }

    /// The type descriptor of a value, read straight from the bytes in the usual case
    /// (`"S":`, no spaces), else through the general string path.
    #[inline]
    fn tag(&mut self) -> Result<Cow<'a, str>, ParseError> {
        let rest = &self.b[self.pos..];
        let quick: Option<&'static str> = match rest {
            [b'"', b'S', b'"', ..] => Some("S"),
            [b'"', b'N', b'"', ..] => Some("N"),
            [b'"', b'B', b'"', ..] => Some("B"),
            [b'"', b'M', b'"', ..] => Some("M"),
            [b'"', b'L', b'"', ..] => Some("L"),
            [b'"', b'S', b'S', b'"', ..] => Some("SS"),
            [b'"', b'N', b'S', b'"', ..] => Some("NS"),
            [b'"', b'B', b'S', b'"', ..] => Some("BS"),
            [b'"', b'B', b'O', b'O', b'L', b'"', ..] => Some("BOOL"),
            [b'"', b'N', b'U', b'L', b'L', b'"', ..] => Some("NULL"),
            _ => None,
        };
        match quick {
            Some(t) => {
                self.pos += t.len() + 2;
                Ok(Cow::Borrowed(t))
            }
            None => self.string(),
        }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    /// `{ "name": {"T": v}, ... }`
    fn item(&mut self) -> Result<Item<'a>, ParseError> {
        let mut out = Vec::with_capacity(16);
        self.item_into(&mut out)?;
        Ok(out)
    }

    /// `{ "name": {"T": v}, ... }` appended to `out`.
    fn item_into(&mut self, out: &mut Item<'a>) -> Result<(), ParseError> {
        self.ws();
        self.expect(b'{')?;
        self.ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.ws();
            let name = self.string()?;
            self.attr = Some(name.clone());
            self.ws();
            self.expect(b':')?;
            let v = self.value(1)?;
            out.push((name, v));
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
    fn value(&mut self, depth: usize) -> Result<Av<'a>, ParseError> {
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
        let v = match tag.as_ref() {
            "S" => Av::S(self.string()?),
            "N" => Av::N(self.number_string()?),
            "B" => Av::B(self.string()?),
            "BOOL" => Av::Bool(self.boolean()?),
            "NULL" => {
                if !self.boolean()? {
                    return Err(self.err("NULL must have the value true".into()));
                }
                Av::Null
            }
            "M" => {
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
            "L" => {
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
            "SS" => Av::Ss(self.string_array(false)?),
            "NS" => Av::Ns(self.string_array(true)?),
            "BS" => Av::Bs(self.string_array(false)?),
            other => {
                return Err(self.err(format!(
                    "unknown type descriptor \"{other}\" (expected S, N, B, BOOL, NULL, M, L, SS, NS or BS)"
                )))
            }
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

    fn number_string(&mut self) -> Result<Cow<'a, str>, ParseError> {
        if self.peek() != Some(b'"') {
            return Err(self.err("N must be a JSON string holding the number".into()));
        }
        self.string()
    }

    fn boolean(&mut self) -> Result<bool, ParseError> {
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

    fn string_array(&mut self, numbers: bool) -> Result<Vec<Cow<'a, str>>, ParseError> {
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
    #[inline]
    fn string(&mut self) -> Result<Cow<'a, str>, ParseError> {
        self.expect(b'"')?;
        let start = self.pos;
        // Most strings (attribute names, type tags, ids) are short: a plain loop beats
        // setting up a vectorised search for them.
        let rest = &self.b[start..];
        let short = rest.len().min(32);
        let found = match rest[..short].iter().position(|&c| c == b'"' || c == b'\\') {
            Some(p) => Some(p),
            None => memchr::memchr2(b'"', b'\\', &rest[short..]).map(|p| p + short),
        };
        match found {
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

    fn string_escaped(&mut self, out: &mut String) -> Result<(), ParseError> {
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

    fn hex4(&mut self) -> Result<u32, ParseError> {
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

/// Bytes that need an escape inside a JSON string.
const NEEDS_ESCAPE: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// Position of the first byte at or after `from` that needs an escape. Eight bytes at a
/// time: most strings need none, and long descriptions dominate the cost otherwise.
#[inline]
fn find_escape(b: &[u8], from: usize) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    // Bytes of a word equal to zero, flagged in their high bit (exact when no byte of
    // `x` has its high bit set; with high bits set it may only report extra candidates).
    let zero = |x: u64| x.wrapping_sub(LO) & !x & HI;
    let mut i = from;
    while i + 8 <= b.len() {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[i..i + 8]);
        let x = u64::from_le_bytes(w);
        let below = x.wrapping_sub(LO * 0x20) & !x & HI;
        let quote = zero(x ^ (LO * u64::from(b'"')));
        let slash = zero(x ^ (LO * u64::from(b'\\')));
        if below | quote | slash != 0 {
            break;
        }
        i += 8;
    }
    // The word that flagged (or the tail) is checked exactly, byte by byte.
    b[i..]
        .iter()
        .position(|&c| NEEDS_ESCAPE[c as usize])
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
}
