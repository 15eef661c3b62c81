//! The DynamoDB JSON parser reads untrusted input: checked here against `serde_json` on
//! generated items and on mutations of them (bytes flipped, cut, inserted, deleted,
//! duplicated). Generated lines parse to exactly the values written; on any line the
//! parser never panics, refuses what `serde_json` refuses, and what it accepts means the
//! same as `serde_json` reads it.
//!
//! Random: the seed is printed, and `DDB2PG_TEST_SEED=N` replays it.

use std::collections::BTreeMap;

use ddb2pg::ddbjson::{parse_export_line, Av};
use serde_json::Value;

use crate::common::{test_seed, Rng};

/// A value in one form both sides map to: maps by name (the last of a repeated name, as
/// `serde_json` keeps it), lists in order, sets as written.
#[derive(Debug, Clone, PartialEq)]
enum Canon {
    S(String),
    N(String),
    B(String),
    Bool(bool),
    Null,
    M(BTreeMap<String, Canon>),
    L(Vec<Canon>),
    Ss(Vec<String>),
    Ns(Vec<String>),
    Bs(Vec<String>),
}

fn from_av(v: &Av<'_>) -> Canon {
    let strs = |l: &[std::borrow::Cow<'_, str>]| l.iter().map(|s| s.to_string()).collect();
    match v {
        Av::S(s) => Canon::S(s.to_string()),
        Av::N(s) => Canon::N(s.to_string()),
        Av::B(s) => Canon::B(s.to_string()),
        Av::Bool(b) => Canon::Bool(*b),
        Av::Null => Canon::Null,
        Av::M(m) => Canon::M(m.iter().map(|(k, v)| (k.to_string(), from_av(v))).collect()),
        Av::L(l) => Canon::L(l.iter().map(from_av).collect()),
        Av::Ss(l) => Canon::Ss(strs(l)),
        Av::Ns(l) => Canon::Ns(strs(l)),
        Av::Bs(l) => Canon::Bs(strs(l)),
        Av::Plain(p) => panic!("a tree parse returned plain JSON {p}"),
    }
}

/// `serde_json`'s reading of a DynamoDB JSON value; `None` where it is not one.
fn from_json(v: &Value) -> Option<Canon> {
    let o = v.as_object().filter(|o| o.len() == 1)?;
    let (tag, inner) = o.iter().next()?;
    let strings = |x: &Value| -> Option<Vec<String>> {
        x.as_array()?
            .iter()
            .map(|e| e.as_str().map(str::to_string))
            .collect()
    };
    Some(match tag.as_str() {
        "S" => Canon::S(inner.as_str()?.to_string()),
        "N" => Canon::N(inner.as_str()?.to_string()),
        "B" => Canon::B(inner.as_str()?.to_string()),
        "BOOL" => Canon::Bool(inner.as_bool()?),
        "NULL" if inner.as_bool()? => Canon::Null,
        "M" => Canon::M(map_from_json(inner)?),
        "L" => Canon::L(
            inner
                .as_array()?
                .iter()
                .map(from_json)
                .collect::<Option<_>>()?,
        ),
        "SS" => Canon::Ss(strings(inner)?),
        "NS" => Canon::Ns(strings(inner)?),
        "BS" => Canon::Bs(strings(inner)?),
        _ => return None,
    })
}

fn map_from_json(v: &Value) -> Option<BTreeMap<String, Canon>> {
    v.as_object()?
        .iter()
        .map(|(k, v)| Some((k.clone(), from_json(v)?)))
        .collect()
}

/// `serde_json`'s reading of an export line: `{"Item": {...}}`.
fn line_from_json(text: &[u8]) -> Result<Option<BTreeMap<String, Canon>>, serde_json::Error> {
    let v: Value = serde_json::from_slice(text)?;
    let o = v.as_object();
    Ok(o.filter(|o| o.len() == 1)
        .and_then(|o| o.get("Item"))
        .and_then(map_from_json))
}

const TAGS: [&str; 10] = ["S", "N", "B", "BOOL", "NULL", "M", "L", "SS", "NS", "BS"];

fn string(rng: &mut Rng) -> String {
    const PIECES: [&str; 16] = [
        "a", "Zz", " ", "héllo", "€", "🥳", "\"", "\\", "\n", "\t", "\u{1}", "\u{1f}", "/",
        "\u{7f}", "\u{2028}", "0",
    ];
    let n = rng.below(8);
    (0..n).map(|_| rng.pick(&PIECES)).collect()
}

fn number(rng: &mut Rng) -> String {
    const NUMS: [&str; 8] = [
        "0",
        "-1.5",
        "1e3",
        "12345678901234567890123",
        "0.0001",
        "-0",
        "7E-130",
        "1.50",
    ];
    rng.pick(&NUMS).to_string()
}

/// A random value of depth at most `depth`, as a `serde_json` tree (the reference writes it).
fn value(rng: &mut Rng, depth: u32) -> Value {
    let tag = if depth == 0 {
        TAGS[rng.below(5) as usize]
    } else {
        rng.pick(&TAGS)
    };
    let inner = match tag {
        "S" | "B" => Value::String(string(rng)),
        "N" => Value::String(number(rng)),
        "BOOL" => Value::Bool(rng.chance(50)),
        "NULL" => Value::Bool(true),
        "M" => Value::Object(
            (0..rng.below(4))
                .map(|i| (format!("{}{i}", string(rng)), value(rng, depth - 1)))
                .collect(),
        ),
        "L" => Value::Array((0..rng.below(4)).map(|_| value(rng, depth - 1)).collect()),
        "NS" => Value::Array(
            (0..rng.below(4))
                .map(|_| Value::String(number(rng)))
                .collect(),
        ),
        _ => Value::Array(
            (0..rng.below(4))
                .map(|_| Value::String(string(rng)))
                .collect(),
        ),
    };
    Value::Object([(tag.to_string(), inner)].into_iter().collect())
}

/// A random export line: its text and the item as written.
fn line(rng: &mut Rng) -> (Vec<u8>, Value) {
    let item: serde_json::Map<String, Value> = (0..rng.below(12))
        .map(|i| (format!("attr{i}{}", string(rng)), value(rng, 3)))
        .collect();
    let item = Value::Object(item);
    let mut text = String::from("{\"Item\":");
    // Spacing as a writer other than AWS's might put it.
    let body = if rng.chance(20) {
        serde_json::to_string_pretty(&item).expect("json")
    } else {
        serde_json::to_string(&item).expect("json")
    };
    text.push_str(&body);
    text.push('}');
    (text.into_bytes(), item)
}

/// A mutation of `b`: a byte flipped, set, cut, inserted, deleted or a span duplicated.
fn mutate(rng: &mut Rng, b: &[u8]) -> Vec<u8> {
    let mut out = b.to_vec();
    for _ in 0..=rng.below(3) {
        if out.is_empty() {
            break;
        }
        let at = rng.below(out.len() as u64) as usize;
        const SPECIAL: [u8; 12] = [
            b'"', b'\\', b'{', b'}', b'[', b']', b':', b',', 0, 0x1f, 0xff, b'u',
        ];
        match rng.below(6) {
            0 => out[at] ^= 1 << rng.below(8),
            1 => out[at] = rng.pick(&SPECIAL),
            2 => out.truncate(at),
            3 => out.insert(at, rng.pick(&SPECIAL)),
            4 => {
                out.remove(at);
            }
            _ => {
                let end = (at + 1 + rng.below(16) as usize).min(out.len());
                let span = out[at..end].to_vec();
                out.splice(at..at, span);
            }
        }
    }
    out
}

#[test]
fn parser_agrees_with_serde_json() {
    let seed = test_seed("parser_agrees_with_serde_json");
    let mut rng = Rng::new(seed);
    let (mut accepted, mut refused) = (0u32, 0u32);
    for case in 0..20_000 {
        let (text, item) = line(&mut rng);
        let want = map_from_json(&item).expect("a generated item is DynamoDB JSON");
        let got = parse_export_line(&text).unwrap_or_else(|e| {
            panic!(
                "seed {seed} case {case}: a valid line was refused ({e:?}): {}",
                String::from_utf8_lossy(&text)
            )
        });
        let got: BTreeMap<String, Canon> = got
            .iter()
            .map(|(k, v)| (k.to_string(), from_av(v)))
            .collect();
        assert_eq!(got, want, "seed {seed} case {case}");

        let bad = mutate(&mut rng, &text);
        let ours = std::panic::catch_unwind(|| {
            parse_export_line(&bad).map(|item| {
                item.iter()
                    .map(|(k, v)| (k.to_string(), from_av(v)))
                    .collect::<BTreeMap<_, _>>()
            })
        })
        .unwrap_or_else(|_| {
            panic!(
                "seed {seed} case {case}: the parser panicked on {:?}",
                String::from_utf8_lossy(&bad)
            )
        });
        let reference = line_from_json(&bad);
        match (ours, reference) {
            (Ok(ours), Ok(Some(theirs))) => {
                accepted += 1;
                assert_eq!(
                    ours,
                    theirs,
                    "seed {seed} case {case}: {:?}",
                    String::from_utf8_lossy(&bad)
                );
            }
            (Ok(ours), other) => panic!(
                "seed {seed} case {case}: accepted {ours:?}, serde_json says {other:?}: {:?}",
                String::from_utf8_lossy(&bad)
            ),
            (Err(e), _) => {
                refused += 1;
                assert!(
                    e.offset <= bad.len(),
                    "seed {seed} case {case}: offset past the line: {e:?}"
                );
            }
        }
    }
    eprintln!("mutated lines: {accepted} accepted (as serde_json reads them), {refused} refused");
    assert!(
        accepted > 0 && refused > 0,
        "the mutations must hit both sides"
    );
}
