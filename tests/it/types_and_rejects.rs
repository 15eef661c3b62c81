//! Every column type and conversion rule of ARCHITECTURE §3 through the real binary into the
//! real PostgreSQL, read back as PostgreSQL prints it; and every way an item can break a
//! rule, each sent to the rejects file (and to `ddb2pg.rejects`) with its line, key,
//! attribute and reason, while the rest loads.

use crate::common::*;
use serde_json::Value;

pub const COLUMNS: &str = r#"
[tables.columns]
id   = { from = "id",   type = "text" }
t    = { from = "t",    type = "text" }
vc   = { from = "vc",   type = "varchar(5)" }
u    = { from = "u",    type = "uuid" }
i2   = { from = "i2",   type = "smallint" }
i4   = { from = "i4",   type = "integer" }
i8   = { from = "i8",   type = "bigint" }
n    = { from = "n",    type = "numeric" }
n102 = { from = "n102", type = "numeric(10,2)" }
r    = { from = "r",    type = "real" }
d    = { from = "d",    type = "double precision" }
b    = { from = "b",    type = "boolean" }
dt   = { from = "dt",   type = "date" }
ts   = { from = "ts",   type = "timestamp" }
tz   = { from = "tz",   type = "timestamptz" }
tzms = { from = "tzms", type = "timestamptz", unit = "ms" }
by   = { from = "by",   type = "bytea" }
j    = { from = "j",    type = "json" }
jb   = { from = "jb",   type = "jsonb" }
ta   = { from = "ta",   type = "text[]" }
ia   = { from = "ia",   type = "integer[]" }
ba   = { from = "ba",   type = "bigint[]" }
na   = { from = "na",   type = "numeric[]" }
bya  = { from = "bya",  type = "bytea[]" }
req  = { from = "req",  type = "text", required = true }
def  = { from = "def",  type = "integer", default = 7 }
nul  = { from = "nul",  type = "text", strip_nul = true }
rest = { rest = true,   type = "jsonb" }
"#;

pub fn full_item() -> String {
    let big = format!("{}{}", "9".repeat(38), "0".repeat(88));
    format!(
        r#"{{"Item":{{"id":{{"S":"full"}},"t":{{"S":"héllo 🥳 \"q\" \\ \n end"}},"vc":{{"S":"ab€de"}},"u":{{"S":"0F8FAD5B-D9CB-469F-A165-70867728950E"}},"i2":{{"N":"-32768"}},"i4":{{"N":"2147483647"}},"i8":{{"N":"-9223372036854775808"}},"n":{{"N":"{big}"}},"n102":{{"N":"12345678.9"}},"r":{{"N":"1.5"}},"d":{{"N":"0.1"}},"b":{{"BOOL":true}},"dt":{{"S":"2024-02-29"}},"ts":{{"S":"2024-02-29T12:30:15.123456Z"}},"tz":{{"S":"2024-02-29T14:30:15.5+02:00"}},"tzms":{{"N":"1709209815123"}},"by":{{"B":"AAECAwQ="}},"j":{{"M":{{"k":{{"S":"a\u0000b"}},"n":{{"N":"1e2"}}}}}},"jb":{{"L":[{{"N":"0.000000000000000000000000000000000000000001"}},{{"BOOL":false}},{{"NULL":true}},{{"SS":["x"]}},{{"B":"AQ=="}}]}},"ta":{{"SS":["a","b c"]}},"ia":{{"NS":["1","-2"]}},"ba":{{"L":[{{"N":"9007199254740993"}},{{"NULL":true}}]}},"na":{{"NS":["1E-130","-15.789e6"]}},"bya":{{"BS":["AA==","/w=="]}},"req":{{"S":"x"}},"nul":{{"S":"a\u0000b"}},"zzz":{{"N":"1.50"}},"aws:rep:updateregion":{{"S":"us-west-2"}}}}}}"#
    )
}

pub fn reject_lines() -> Vec<(String, &'static str, Option<&'static str>, &'static str)> {
    // (line, key id, attribute, a word of the reason)
    let item = |id: &str, extra: &str| {
        format!(r#"{{"Item":{{"id":{{"S":"{id}"}},"req":{{"S":"x"}}{extra}}}}}"#)
    };
    vec![
        (
            item("r_vc", r#","vc":{"S":"abcdef"}"#),
            "r_vc",
            Some("vc"),
            "varchar(5)",
        ),
        (
            item("r_n102", r#","n102":{"N":"1.005"}"#),
            "r_n102",
            Some("n102"),
            "rounded",
        ),
        (
            item("r_n102b", r#","n102":{"N":"123456789"}"#),
            "r_n102b",
            Some("n102"),
            "integer digits",
        ),
        (
            item("r_i2", r#","i2":{"N":"40000"}"#),
            "r_i2",
            Some("i2"),
            "out of range for smallint",
        ),
        (
            item("r_i4", r#","i4":{"N":"1.5"}"#),
            "r_i4",
            Some("i4"),
            "not an integer",
        ),
        (
            item("r_u", r#","u":{"S":"not-a-uuid"}"#),
            "r_u",
            Some("u"),
            "not a UUID",
        ),
        (
            r#"{"Item":{"id":{"S":"r_req"}}}"#.to_string(),
            "r_req",
            Some("req"),
            "required",
        ),
        (
            item("r_nul", r#","t":{"S":"a\u0000"}"#),
            "r_nul",
            Some("t"),
            "U+0000",
        ),
        (
            item("r_jbnul", r#","jb":{"S":"x\u0000"}"#),
            "r_jbnul",
            Some("jb"),
            "U+0000",
        ),
        (
            item("r_tz", r#","tz":{"S":"yesterday"}"#),
            "r_tz",
            Some("tz"),
            "timestamp",
        ),
        (
            item("r_type", r#","i4":{"BOOL":true}"#),
            "r_type",
            Some("i4"),
            "BOOL",
        ),
        (
            item("r_bool", r#","b":{"N":"2"}"#),
            "r_bool",
            Some("b"),
            "boolean",
        ),
        (
            item("r_by", r#","by":{"B":"!!!"}"#),
            "r_by",
            Some("by"),
            "base64",
        ),
        (
            item("r_ia", r#","ia":{"L":[{"M":{}}]}"#),
            "r_ia",
            Some("ia"),
            "element 0",
        ),
        (
            item("r_nan", r#","n":{"N":"NaN"}"#),
            "r_nan",
            Some("n"),
            "not a number",
        ),
        (
            item("r_tag", r#","t":{"FOO":"bar"}"#),
            "r_tag",
            Some("t"),
            "unknown type descriptor",
        ),
        (
            item("r_two", r#","t":{"S":"a","N":"1"}"#),
            "r_two",
            Some("t"),
            "exactly one type",
        ),
        (
            r#"{"Item":{"req":{"S":"x"}}}"#.to_string(),
            "",
            Some("id"),
            "primary key",
        ),
        (
            r#"{"Item":{"id":{"S":"broken"},"req":{"S""#.to_string(),
            "",
            Some("req"),
            "found end of line",
        ),
    ]
}

#[test]
fn every_type_converts_and_every_rule_rejects() {
    let db = TestDb::new("types");
    let scratch = Scratch::new("types");
    let export = scratch.path().join("export");
    let rejects = reject_lines();
    let mut lines = vec![
        full_item(),
        r#"{"Item":{"id":{"S":"nulls"},"req":{"S":""},"t":{"NULL":true}}}"#.to_string(),
    ];
    lines.extend(rejects.iter().map(|r| r.0.clone()));
    // Split over two files, plus an empty one.
    let second = lines.split_off(6);
    write_export(&export, &[lines, vec![], second]);
    let config = scratch.path().join("types.toml");
    write_config(
        &config,
        &db.url,
        &format!("[[tables]]\nname = \"every_type\"\nprimary_key = [\"id\"]\nsource = {{ export = \"{}\" }}\n{COLUMNS}", export.display()),
    );
    let rejects_file = scratch.path().join("rejects.jsonl");
    let out = ddb2pg(&[
        "load",
        "--config",
        config.to_str().expect("utf8"),
        "--rejects",
        rejects_file.to_str().expect("utf8"),
        "--no-progress",
    ]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "exit 3: done, with rejects\n{}",
        describe(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(&format!("{} item(s) rejected", rejects.len())),
        "{}",
        describe(&out)
    );

    let cols = "t, vc, u, i2, i4, i8, n, n102, r, d, b, dt, ts, tz, tzms, by, j, jb, ta, ia, ba, na, bya, req, def, nul, rest";
    let row = db.query(&format!(
        "SET TimeZone = 'UTC'; SELECT {cols} FROM every_type WHERE id = 'full'"
    ));
    let row: Vec<Option<String>> = row.into_iter().next().expect("full row");
    let s = |v: &str| Some(v.to_string());
    let tiny = format!("0.{}1", "0".repeat(129));
    let want = vec![
        s("héllo 🥳 \"q\" \\ \n end"),
        s("ab€de"),
        s("0f8fad5b-d9cb-469f-a165-70867728950e"),
        s("-32768"),
        s("2147483647"),
        s("-9223372036854775808"),
        Some(format!("{}{}", "9".repeat(38), "0".repeat(88))),
        s("12345678.90"),
        s("1.5"),
        s("0.1"),
        s("t"),
        s("2024-02-29"),
        s("2024-02-29 12:30:15.123456"),
        s("2024-02-29 12:30:15.5+00"),
        s("2024-02-29 12:30:15.123+00"),
        s("\\x0001020304"),
        s(r#"{"k":"a\u0000b","n":100}"#),
        s(r#"[0.000000000000000000000000000000000000000001, false, null, ["x"], "AQ=="]"#),
        s("{a,\"b c\"}"),
        s("{-2,1}"), // a set, in its canonical order (by value)
        s("{9007199254740993,NULL}"),
        Some(format!("{{-15789000,{tiny}}}")), // a set, by value
        s("{\"\\\\x00\",\"\\\\xff\"}"),
        s("x"),
        s("7"),
        s("ab"),
        s(r#"{"zzz": 1.50, "aws:rep:updateregion": "us-west-2"}"#),
    ];
    let names: Vec<&str> = cols.split(", ").collect();
    for ((name, got), want) in names.iter().zip(&row).zip(&want) {
        assert_eq!(got, want, "column {name}");
    }
    let nulls = db.query(&format!("SELECT {cols} FROM every_type WHERE id = 'nulls'"));
    let nulls = &nulls[0];
    for (name, got) in names.iter().zip(nulls) {
        let want = match *name {
            "req" => Some(String::new()),
            "def" => s("7"),
            "rest" => s("{}"),
            _ => None,
        };
        assert_eq!(got, &want, "column {name} of the all-NULL item");
    }
    assert_eq!(db.scalar("SELECT count(*) FROM every_type"), "2");

    // The rejects file: one record per rejected item, with everything needed to fix it.
    let text = std::fs::read_to_string(&rejects_file).expect("rejects file");
    let records: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(records.len(), rejects.len(), "{text}");
    for (line, key, attr, why) in &rejects {
        let rec = records
            .iter()
            .find(|r| {
                if key.is_empty() {
                    r["reason"].as_str().is_some_and(|s| s.contains(why))
                } else {
                    r["key"]["id"] == *key
                }
            })
            .unwrap_or_else(|| panic!("no reject record for {key} / {why}: {text}"));
        assert_eq!(rec["table"], "every_type");
        assert!(
            rec["split"]
                .as_str()
                .is_some_and(|s| s.ends_with(".json.gz")),
            "{rec}"
        );
        assert!(rec["position"].as_u64().is_some_and(|p| p >= 1), "{rec}");
        assert_eq!(rec["attribute"].as_str(), *attr, "{rec}");
        assert!(
            rec["reason"].as_str().is_some_and(|s| s.contains(why)),
            "want {why:?}: {rec}"
        );
        // The original item is kept: parsed items as DynamoDB JSON, broken lines verbatim.
        match serde_json::from_str::<Value>(line) {
            Ok(orig) => assert_eq!(rec["item"], orig["Item"], "{rec}"),
            Err(_) => assert_eq!(rec["item"].as_str(), Some(line.as_str()), "{rec}"),
        }
    }
    // Positions are the line numbers in their file: the second file starts again at 1.
    let r_req = records
        .iter()
        .find(|r| r["key"]["id"] == "r_req")
        .expect("r_req");
    assert_eq!(r_req["position"], 3, "{r_req}");
    // And the target knows the rejects without the file.
    assert_eq!(
        db.scalar("SELECT count(*) FROM ddb2pg.rejects WHERE target_table = 'every_type'"),
        rejects.len().to_string()
    );
    assert_eq!(
        db.scalar(
            "SELECT attribute || ': ' || reason FROM ddb2pg.rejects WHERE key->>'id' = 'r_i2'"
        ),
        "i2: 40000 is out of range for smallint (column `i2` smallint)"
    );

    // --max-rejects: over the limit, the load stops; the page holding the rejects is not
    // committed (nothing else was).
    let out = ddb2pg(&[
        "load",
        "--config",
        config.to_str().expect("utf8"),
        "--rejects",
        rejects_file.to_str().expect("utf8"),
        "--mode",
        "replace",
        "--max-rejects",
        "3",
        "--no-progress",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--max-rejects 3"),
        "{}",
        describe(&out)
    );
    // Replace truncated first: the failed reload leaves the table empty, never half-loaded.
    assert_eq!(db.scalar("SELECT count(*) FROM every_type"), "0");
    // Within the limit, the same load resumes and goes on.
    let out = ddb2pg(&[
        "load",
        "--config",
        config.to_str().expect("utf8"),
        "--rejects",
        rejects_file.to_str().expect("utf8"),
        "--mode",
        "replace",
        "--max-rejects",
        &rejects.len().to_string(),
        "--no-progress",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    assert_eq!(db.scalar("SELECT count(*) FROM every_type"), "2");
}

#[test]
fn acceptance_vectors_convert_as_documented() {
    let Some(acc) = acceptance_dir() else { return };
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(acc.join("ddb-json-vectors.json")).expect("vectors"),
    )
    .expect("json");
    // Each `read` vector becomes one item whose attribute `v` goes into a jsonb column; an
    // `error` vector must be rejected, the others must arrive as their `expect`.
    let mut lines = Vec::new();
    let mut expect = Vec::new();
    for v in doc["vectors"].as_array().expect("vectors") {
        if v["stage"] != "read" || v.get("input").is_none() {
            continue;
        }
        let id = v["id"].as_str().expect("id");
        let input = &v["input"];
        if input.get("Item").is_some()
            || input.get("NewImage").is_some()
            || input.get("ion").is_some()
        {
            continue;
        }
        lines.push(format!(
            r#"{{"Item":{{"id":{{"S":"{id}"}},"v":{}}}}}"#,
            input
        ));
        expect.push((id.to_string(), v["expect"].clone(), input.clone()));
    }
    assert!(lines.len() > 30, "only {} vectors", lines.len());
    let db = TestDb::new("vectors");
    let scratch = Scratch::new("vectors");
    let export = scratch.path().join("export");
    write_export(&export, &[lines]);
    let config = scratch.path().join("v.toml");
    write_config(
        &config,
        &db.url,
        &format!(
            "[[tables]]\nname = \"vec\"\nprimary_key = [\"id\"]\nsource = {{ export = \"{}\" }}\n[tables.columns]\nid = {{ type = \"text\" }}\nv = {{ type = \"jsonb\" }}\n",
            export.display()
        ),
    );
    let rejects_file = scratch.path().join("rejects.jsonl");
    let out = ddb2pg(&[
        "load",
        "--config",
        config.to_str().expect("utf8"),
        "--rejects",
        rejects_file.to_str().expect("utf8"),
        "--no-progress",
    ]);
    assert!(
        matches!(out.status.code(), Some(0 | 3)),
        "{}",
        describe(&out)
    );
    let rejected = std::fs::read_to_string(&rejects_file).unwrap_or_default();
    for (id, want, input) in &expect {
        let is_error = want.get("error").is_some();
        let rows = db.query(&format!("SELECT v::text FROM vec WHERE id = '{id}'"));
        if is_error {
            assert!(rows.is_empty(), "{id} should be rejected");
            assert!(
                rejected.contains(id.as_str()),
                "{id} missing from the rejects file"
            );
            continue;
        }
        let got = rows.first().and_then(|r| r[0].clone());
        let got: Value = got.map_or(Value::Null, |t| {
            serde_json::from_str(&t).expect("jsonb text")
        });
        // Numbers compare by exact decimal value; sets (where the input has one) by content.
        let same = same_value(&got, want, input);
        assert!(same, "{id}: got {got}, want {want}");
    }
}

fn numeric_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let nx = ddb2pg::scalar::number::normalize(&x.to_string()).map(|c| c.into_owned());
            let ny = ddb2pg::scalar::number::normalize(&y.to_string()).map(|c| c.into_owned());
            let strip = |s: String| {
                if s.contains('.') {
                    s.trim_end_matches('0').trim_end_matches('.').to_string()
                } else {
                    s
                }
            };
            nx.is_ok() && nx.map(strip) == ny.map(strip)
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| numeric_equal(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| numeric_equal(v, w)))
        }
        _ => a == b,
    }
}

/// `got` equals `want`, where `input` (the DynamoDB JSON they came from) says which arrays
/// are sets (any order) and which are lists (in order).
fn same_value(got: &Value, want: &Value, input: &Value) -> bool {
    let Some((tag, inner)) = input.as_object().and_then(|o| o.iter().next()) else {
        return numeric_equal(got, want);
    };
    match (tag.as_str(), got, want) {
        ("SS" | "NS" | "BS", Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().all(|p| y.iter().any(|q| numeric_equal(p, q)))
        }
        ("M", Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter().all(|(k, v)| {
                    y.get(k)
                        .is_some_and(|w| same_value(v, w, inner.get(k).unwrap_or(&Value::Null)))
                })
        }
        ("L", Value::Array(x), Value::Array(y)) => {
            let elems = inner.as_array().map_or(&[][..], Vec::as_slice);
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .enumerate()
                    .all(|(i, (p, q))| same_value(p, q, elems.get(i).unwrap_or(&Value::Null)))
        }
        _ => numeric_equal(got, want),
    }
}
