//! DynamoDB JSON in: a line of an export data file (`{"Item":{…}}`) or a bare item object
//! → a borrowed attribute tree ([`Item`] of [`Av`]), whose strings borrow from the line
//! wherever they hold no escape; and that tree back to DynamoDB JSON (a reject keeps its
//! item verbatim).
//!
//! [`parse`] is the parser, [`plain`] writes a value as plain JSON, [`sdk`] turns the AWS
//! SDK's `AttributeValue` into DynamoDB JSON and back.

pub mod ion;
mod parse;
pub mod plain;
pub mod sdk;
mod value;

use std::borrow::Cow;

pub use parse::ChangeOp;
pub use plain::write_json_string;
use plain::{write_tagged, write_tagged_list};
pub use value::{decode_base64, has_nul, Av, Item, ItemSink, NulPolicy, ParseError, NUL_REASON};

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
    parse::export_line(line, sink)
}

/// Parses a change line of an incremental export (`{"Metadata":…,"Keys":…,"NewImage":…,
/// "OldImage":…}`): a put hands the new image's attributes to `sink` as
/// [`parse_export_line_with`] does; a delete (no `NewImage`) hands it the `Keys`. The old
/// image and the metadata are checked as JSON and skipped.
///
/// # Errors
/// [`ParseError`] naming the attribute, the reason and the byte offset.
pub fn parse_change_line_with<'a, S>(line: &'a [u8], sink: &mut S) -> Result<ChangeOp, ParseError>
where
    S: ItemSink<'a> + ?Sized,
{
    parse::change_line(line, sink)
}

/// Parses a bare item object `{"attr": {"S": "x"}, ...}`.
///
/// # Errors
/// [`ParseError`] as for [`parse_export_line`].
pub fn parse_item(text: &str) -> Result<Item<'_>, ParseError> {
    parse::bare_item(text)
}

/// Appends the DynamoDB JSON form of a value (used to keep a rejected item verbatim).
pub fn write_ddb_json(out: &mut String, v: &Av<'_>) {
    let strings = |o: &mut String, s: &Cow<'_, str>| write_json_string(o, s);
    match v {
        Av::S(s) | Av::N(s) | Av::B(s) => write_tagged(out, v.type_name(), s),
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
        Av::L(l) => write_tagged_list(out, "L", l, write_ddb_json),
        Av::Ss(s) => write_tagged_list(out, "SS", s, strings),
        Av::Ns(s) => write_tagged_list(out, "NS", s, strings),
        Av::Bs(s) => write_tagged_list(out, "BS", s, strings),
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
    use super::plain::find_escape;
    use super::*;

    #[test]
    fn change_lines_are_puts_with_their_new_image_or_deletes_with_their_keys() {
        let put = br#"{"Metadata":{"WriteTimestampMicros":{"N":"1"}},"Keys":{"k":{"S":"a"}},"NewImage":{"k":{"S":"a"},"n":{"N":"2"}},"OldImage":{"k":{"S":"a"},"x":{"M":{"y":{"L":[{"S":"\\\"]}"}]}}}}}"#;
        let mut item: Item<'_> = Vec::new();
        assert_eq!(parse_change_line_with(put, &mut item), Ok(ChangeOp::Put));
        let names: Vec<&str> = item.iter().map(|(n, _)| n.as_ref()).collect();
        assert_eq!(names, ["k", "n"], "the new image only");
        // Keys after the image, no old image: the same.
        let put2 = br#"{"NewImage":{"k":{"S":"a"}},"Keys":{"k":{"S":"a"}}}"#;
        let mut item: Item<'_> = Vec::new();
        assert_eq!(parse_change_line_with(put2, &mut item), Ok(ChangeOp::Put));
        assert_eq!(item.len(), 1);
        let del = br#"{"Metadata":{"WriteTimestampMicros":{"N":"1"}},"Keys":{"k":{"S":"a"},"s":{"N":"7"}},"OldImage":{"k":{"S":"a"}}}"#;
        let mut item: Item<'_> = Vec::new();
        assert_eq!(parse_change_line_with(del, &mut item), Ok(ChangeOp::Delete));
        assert_eq!(item.len(), 2, "the keys");
        // Refused: no Keys, a full export's line, an unknown key, broken JSON in the old
        // image, text after the line.
        for bad in [
            &br#"{"NewImage":{"k":{"S":"a"}}}"#[..],
            br#"{"Item":{"k":{"S":"a"}}}"#,
            br#"{"Keys":{"k":{"S":"a"}},"Other":1}"#,
            br#"{"Keys":{"k":{"S":"a"}},"OldImage":{"k":{"S":"a"},}}"#,
            br#"{"Keys":{"k":{"S":"a"}},"OldImage":{"k":tru}}"#,
            br#"{"Keys":{"k":{"S":"a"}}} x"#,
        ] {
            let mut item: Item<'_> = Vec::new();
            assert!(
                parse_change_line_with(bad, &mut item).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

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
            let written = plain::write_plain_json(&mut want, tv, &mut { nul });
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
                    // (A name that loses U+0000 to strip_nul is left to the tree, which
                    // refuses two names that become one.)
                    let stripped_name =
                        matches!(nul, NulPolicy::Text { strip: true }) && text.contains("\\u0000");
                    if written.is_ok()
                        && compact
                        && !stripped_name
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
