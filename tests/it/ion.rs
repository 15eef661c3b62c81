//! Amazon Ion exports (ARCHITECTURE §11): `outputFormat` ION, `data/*.ion.gz`, one
//! `$ion_1_0 {Item:{…}}` per line. The tests:
//! - the CloudShelf fixtures written in both formats load into identical tables (every
//!   row of every table, both ways), and verify passes on the Ion one;
//! - every read-stage vector of the acceptance set, written as Ion here (by a writer of
//!   this test, in forms other than the generator's: `1250d-2`, quoted names and
//!   annotations, `\u` escapes, `null.null`), lands as its JSON form does;
//! - AWS's own sample Ion line reads as the item its JSON form is;
//! - a truncated line, a wrong annotation: rejects naming the attribute, the rest loads;
//! - an Ion manifest with JSON data files: a clear error, nothing loaded.

use serde_json::Value;

use crate::common::*;

/// The bundled mapping with its sources in `dir`.
fn config_for(path: &std::path::Path, url: &str, dir: &std::path::Path) {
    let text = std::fs::read_to_string(repo().join("pipeline.toml")).expect("pipeline.toml");
    let text = text.replace(
        "export = \"fixtures/cloudshelf/",
        &format!("export = \"{}/", dir.display()),
    );
    let text = text.replace(
        "url = \"postgresql://postgres@127.0.0.1:5432/cloudshelf\"",
        &format!("url = \"{url}\""),
    );
    std::fs::write(path, text).expect("config");
}

#[test]
fn the_fixtures_in_ion_and_in_json_load_into_identical_tables() {
    let scratch = Scratch::new("ion_fixtures");
    let db = TestDb::new("ion_fixtures");
    for (name, format) in [("json", "json"), ("ion", "ion")] {
        let dir = scratch.path().join(name);
        let out = ddb2pg(&[
            "fixtures",
            "generate",
            "--out",
            dir.to_str().expect("utf8"),
            "--scale",
            "3000",
            "--seed",
            "7",
            "--format",
            format,
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
        let cfg = scratch.path().join(format!("{name}.toml"));
        config_for(&cfg, &db.url, &dir);
        db.query(&format!("CREATE SCHEMA {name}"));
        let out = ddb2pg_at(
            &[
                "load",
                "--config",
                cfg.to_str().expect("utf8"),
                "--schema",
                name,
                "--no-progress",
            ],
            &db.url,
        );
        assert_eq!(out.status.code(), Some(0), "{name}: {}", describe(&out));
    }
    // The Ion files are Ion: a version marker and no DynamoDB JSON type tag.
    let data = scratch.path().join("ion/orders/data");
    let first = std::fs::read_dir(&data)
        .expect("data")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 100))
        .expect("a data file");
    assert!(
        first.to_string_lossy().ends_with(".ion.gz"),
        "{}",
        first.display()
    );
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::MultiGzDecoder::new(std::fs::File::open(&first).expect("open")),
        &mut text,
    )
    .expect("gunzip");
    assert!(
        text.starts_with("$ion_1_0 {Item:{") && !text.contains("{\"S\":"),
        "{}",
        &text[..200.min(text.len())]
    );
    for table in ["books", "users", "orders", "order_items"] {
        let n: i64 = db
            .scalar(&format!("SELECT count(*) FROM json.{table}"))
            .parse()
            .expect("n");
        assert!(n > 0, "{table}");
        assert_eq!(
            db.scalar(&format!("SELECT count(*) FROM ion.{table}")),
            n.to_string(),
            "{table}"
        );
        for (a, b) in [("ion", "json"), ("json", "ion")] {
            assert_eq!(
                db.scalar(&format!(
                    "SELECT count(*) FROM (SELECT * FROM {a}.{table} EXCEPT ALL SELECT * FROM {b}.{table}) d"
                )),
                "0",
                "{table}: rows of {a} not in {b}"
            );
        }
    }
    let cfg = scratch.path().join("ion.toml");
    let out = ddb2pg_at(
        &[
            "verify",
            "--config",
            cfg.to_str().expect("utf8"),
            "--schema",
            "ion",
        ],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
}

/// A typed DynamoDB JSON value as Ion, written here in forms the generator does not use.
fn ion_of(v: &Value) -> Option<String> {
    let (tag, inner) = v.as_object()?.iter().next()?;
    Some(match tag.as_str() {
        "S" => ion_string(inner.as_str()?),
        "N" => ion_decimal(inner.as_str()?)?,
        "B" => format!("{{{{ {} }}}}", inner.as_str()?),
        "BOOL" => inner.as_bool()?.to_string(),
        "NULL" => "null.null".into(),
        "M" => {
            let fields: Option<Vec<String>> = inner
                .as_object()?
                .iter()
                .map(|(k, x)| Some(format!("{}: {}", ion_string(k), ion_of(x)?)))
                .collect();
            format!("{{ {} }}", fields?.join(", "))
        }
        "L" => {
            let xs: Option<Vec<String>> = inner.as_array()?.iter().map(ion_of).collect();
            format!("[{}]", xs?.join(", "))
        }
        "SS" | "NS" | "BS" => {
            let xs: Option<Vec<String>> = inner
                .as_array()?
                .iter()
                .map(|x| {
                    let t = x.as_str()?;
                    match tag.as_str() {
                        "SS" => Some(ion_string(t)),
                        "NS" => ion_decimal(t),
                        _ => Some(format!("{{{{{t}}}}}")),
                    }
                })
                .collect();
            format!("'$dynamodb_{tag}'::[{}]", xs?.join(","))
        }
        _ => return None,
    })
}

/// Every character outside printable ASCII as a `\u`/`\U` escape.
fn ion_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            c if (c as u32) <= 0xFFFF => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// A decimal number as `<integer coefficient>d<exponent>` (`12.50` → `1250d-2`); `None`
/// for text that is not a decimal number (such a vector is left out).
fn ion_decimal(n: &str) -> Option<String> {
    let (mant, exp) = match n.find(['e', 'E']) {
        Some(p) => (
            &n[..p],
            n[p + 1..].trim_start_matches('+').parse::<i64>().ok()?,
        ),
        None => (n, 0),
    };
    let (neg, mant) = match mant.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mant.strip_prefix('+').unwrap_or(mant)),
    };
    let (int, frac) = mant.split_once('.').unwrap_or((mant, ""));
    let digits = format!("{int}{frac}");
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let coef = digits.trim_start_matches('0');
    let coef = if coef.is_empty() { "0" } else { coef };
    Some(format!(
        "{}{coef}d{}",
        if neg { "-" } else { "" },
        exp - frac.len() as i64
    ))
}

fn load_vec(db: &TestDb, scratch: &Scratch, name: &str, lines: Vec<String>, ion: bool) {
    let export = scratch.path().join(name);
    if ion {
        write_export_as(&export, &[lines], "ION", "ion.gz");
    } else {
        write_export(&export, &[lines]);
    }
    let config = scratch.path().join(format!("{name}.toml"));
    write_config(
        &config,
        &db.url,
        &format!(
            "[[tables]]\nname = \"{name}\"\nprimary_key = [\"id\"]\nsource = {{ export = \"{}\" }}\n[tables.columns]\nid = {{ type = \"text\" }}\nv = {{ type = \"jsonb\" }}\nt = {{ from = \"v\", type = \"text\" }}\n",
            export.display()
        ),
    );
    let out = ddb2pg_at(
        &[
            "load",
            "--config",
            config.to_str().expect("utf8"),
            "--rejects",
            scratch
                .path()
                .join(format!("{name}.rejects"))
                .to_str()
                .expect("utf8"),
            "--no-progress",
        ],
        &db.url,
    );
    assert!(
        matches!(out.status.code(), Some(0 | 3)),
        "{}",
        describe(&out)
    );
}

#[test]
fn every_read_vector_written_as_ion_lands_as_its_json_form() {
    let Some(acc) = acceptance_dir() else { return };
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(acc.join("ddb-json-vectors.json")).expect("vectors"),
    )
    .expect("json");
    let (mut json, mut ion, mut left_out) = (Vec::new(), Vec::new(), Vec::new());
    let mut aws_sample = None;
    for v in doc["vectors"].as_array().expect("vectors") {
        if v["stage"] != "read" {
            continue;
        }
        let id = v["id"].as_str().expect("id");
        let input = &v["input"];
        if let Some(line) = input.get("ion").and_then(Value::as_str) {
            aws_sample = Some((line.to_string(), v["expect"].clone()));
            continue;
        }
        if input.is_null() || input.get("Item").is_some() || input.get("NewImage").is_some() {
            continue;
        }
        json.push(format!(r#"{{"Item":{{"id":{{"S":"{id}"}},"v":{input}}}}}"#));
        match ion_of(input) {
            Some(i) => ion.push(format!("$ion_1_0 {{Item:{{id:\"{id}\",v:{i}}}}}")),
            // Only an input that is not DynamoDB JSON (an unknown type, no value) has no
            // Ion form; it is an error vector.
            None => {
                assert!(v["expect"].get("error").is_some(), "{id} has no Ion form");
                left_out.push(id.to_string());
            }
        }
    }
    // Vectors whose input no Ion value can hold are left out of the Ion side; there are
    // few, and they are listed.
    assert!(
        ion.len() > 30 && left_out.len() < 10,
        "{} in Ion, left out {left_out:?}",
        ion.len()
    );
    let db = TestDb::new("ion_vectors");
    let scratch = Scratch::new("ion_vectors");
    load_vec(&db, &scratch, "from_json", json, false);
    load_vec(&db, &scratch, "from_ion", ion, true);
    let rows = |t: &str| {
        db.query(&format!(
            "SELECT id, v::text, t FROM {t} WHERE id <> ALL ($${{{}}}$$::text[]) ORDER BY id",
            left_out.join(",")
        ))
    };
    let (a, b) = (rows("from_json"), rows("from_ion"));
    assert!(a.len() > 30, "{}", a.len());
    assert_eq!(b, a, "every vector lands as its JSON form");
    // The rejects are the same vectors, for the same attribute.
    let rejected = |name: &str| {
        let text = std::fs::read_to_string(scratch.path().join(format!("{name}.rejects")))
            .unwrap_or_default();
        let mut ids: Vec<(String, String)> = text
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("json"))
            .map(|r| {
                (
                    r["key"]["id"].as_str().unwrap_or("").to_string(),
                    r["attribute"].to_string(),
                )
            })
            .filter(|(id, _)| !left_out.contains(id))
            .collect();
        ids.sort();
        ids
    };
    let (ri, rj) = (rejected("from_ion"), rejected("from_json"));
    eprintln!(
        "{} vectors loaded from both formats, {} rejected by both, left out of Ion: {left_out:?}",
        a.len(),
        ri.len()
    );
    assert_eq!(ri, rj);

    // AWS's own Ion sample line reads as the item its JSON form is.
    let (line, expect) = aws_sample.expect("the docs-ion-item vector");
    let mut out = String::new();
    ddb2pg::ddbjson::ion::line_to_ddb_json(line.as_bytes(), &mut out).expect("reads");
    assert_eq!(serde_json::from_str::<Value>(&out).expect("json"), expect);
}

#[test]
fn a_bad_ion_line_is_a_reject_naming_the_attribute_and_a_json_data_file_is_refused() {
    let scratch = Scratch::new("ion_bad");
    let db = TestDb::new("ion_bad");
    let good = |n: u32| {
        format!("$ion_1_0 {{Item:{{id:\"i{n}\",qty:{n}d1,tags:$dynamodb_SS::[\"a\",\"b\"]}}}}")
    };
    let lines = vec![
        good(1),
        "$ion_1_0 {Item:{id:\"i2\",qty:5.,tags:$dynamodb_SS::[\"a\"".to_string(),
        good(3),
        "$ion_1_0 {Item:{id:\"i4\",qty:5.,tags:$dynamodb_XS::[\"a\"]}}".to_string(),
        "$ion_1_0 {Item:{id:\"i5\",qty:$dynamodb_NS::5.,tags:null}}".to_string(),
        good(6),
    ];
    let export = scratch.path().join("export");
    write_export_as(&export, std::slice::from_ref(&lines), "ION", "ion.gz");
    let config = scratch.path().join("c.toml");
    let tables = |dir: &std::path::Path| {
        format!(
            "[[tables]]\nname = \"t\"\nprimary_key = [\"id\"]\nsource = {{ export = \"{}\" }}\n[tables.columns]\nid = {{ type = \"text\" }}\nqty = {{ type = \"integer\" }}\ntags = {{ type = \"text[]\" }}\n",
            dir.display()
        )
    };
    write_config(&config, &db.url, &tables(&export));
    let rejects = scratch.path().join("r.jsonl");
    let out = ddb2pg_at(
        &[
            "load",
            "--config",
            config.to_str().expect("utf8"),
            "--rejects",
            rejects.to_str().expect("utf8"),
            "--no-progress",
        ],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    assert_eq!(
        db.query("SELECT id, qty::text, tags::text FROM t ORDER BY id"),
        [1, 3, 6]
            .iter()
            .map(|n| vec![
                Some(format!("i{n}")),
                Some((n * 10).to_string()),
                Some("{a,b}".to_string())
            ])
            .collect::<Vec<_>>()
    );
    let text = std::fs::read_to_string(&rejects).expect("rejects");
    let recs: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(recs.len(), 3, "{text}");
    let want = [
        (2, "tags", "truncated"),
        (4, "tags", "unknown annotation `$dynamodb_XS::`"),
        (5, "qty", "a set annotation on a value that is not a list"),
    ];
    for (rec, (pos, attr, why)) in recs.iter().zip(want) {
        assert_eq!(rec["position"], pos, "{rec}");
        assert_eq!(rec["attribute"], attr, "{rec}");
        let reason = rec["reason"].as_str().unwrap_or_default();
        assert!(
            reason.starts_with("invalid Ion at byte ") && reason.contains(why),
            "{rec}"
        );
        assert_eq!(rec["item"], lines[pos - 1], "the line as it was");
    }

    // An Ion manifest whose data files are DynamoDB JSON ones: refused before any work.
    let mixed = scratch.path().join("mixed");
    write_export_as(
        &mixed,
        &[vec![r#"{"Item":{"id":{"S":"x"}}}"#.to_string()]],
        "ION",
        "json.gz",
    );
    let config2 = scratch.path().join("c2.toml");
    write_config(
        &config2,
        &db.url,
        &tables(&mixed).replace("name = \"t\"", "name = \"t2\""),
    );
    let out = ddb2pg_at(
        &[
            "load",
            "--config",
            config2.to_str().expect("utf8"),
            "--no-progress",
        ],
        &db.url,
    );
    assert!(
        matches!(out.status.code(), Some(1 | 2)),
        "{}",
        describe(&out)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("outputFormat ION") && err.contains(".json.gz"),
        "{err}"
    );
    assert_eq!(
        db.scalar("SELECT count(*)::text FROM pg_tables WHERE tablename = 't2'"),
        "0"
    );
}
