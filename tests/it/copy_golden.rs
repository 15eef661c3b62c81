//! The binary COPY encoder, byte for byte: for every column type (and a `_nullable`
//! variant holding SQL NULLs), the COPY file our decoder + encoder make of a few DynamoDB
//! values is the one in `fixtures/copy/` (refresh with `UPDATE_FIXTURES=1`), PostgreSQL
//! loads it, and `COPY … TO STDOUT (FORMAT binary)` gives the same bytes back — value by
//! value where PostgreSQL normalises (numeric's display scale, jsonb's spacing), compared
//! in verify's canonical form.

use std::path::PathBuf;

use ddb2pg::config::Config;
use ddb2pg::decode::{decode_lines, TablePlan};
use ddb2pg::encode::{encode_batch, COPY_HEADER, COPY_TRAILER};
use ddb2pg::schema::ColumnType;
use ddb2pg::verify::canonical::{canonical, Encoder};
use ddb2pg::verify::copy_reader::{Fields, TupleReader};
use futures_util::StreamExt;

use crate::common::*;

/// (file name, column type, DynamoDB values).
const CASES: &[(&str, &str, &[&str])] = &[
    (
        "text",
        "text",
        &[
            r#"{"S":"héllo \"q\" \\ 🥳"}"#,
            r#"{"S":""}"#,
            r#"{"N":"1.50"}"#,
        ],
    ),
    (
        "varchar_5",
        "varchar(5)",
        &[r#"{"S":"ab€de"}"#, r#"{"S":"x"}"#],
    ),
    (
        "uuid",
        "uuid",
        &[
            r#"{"S":"0F8FAD5B-D9CB-469F-A165-70867728950E"}"#,
            r#"{"B":"AAECAwQFBgcICQoLDA0ODw=="}"#,
        ],
    ),
    (
        "smallint",
        "smallint",
        &[r#"{"N":"-32768"}"#, r#"{"N":"32767"}"#, r#"{"N":"0"}"#],
    ),
    (
        "integer",
        "integer",
        &[
            r#"{"N":"-2147483648"}"#,
            r#"{"N":"2147483647"}"#,
            r#"{"S":"1e3"}"#,
        ],
    ),
    (
        "bigint",
        "bigint",
        &[
            r#"{"N":"-9223372036854775808"}"#,
            r#"{"N":"9223372036854775807"}"#,
        ],
    ),
    (
        "numeric",
        "numeric",
        &[
            r#"{"N":"-0015.789e6"}"#,
            r#"{"N":"0.000000000000000000000000000000000000000001"}"#,
            r#"{"N":"99999999999999999999999999999999999999"}"#,
            r#"{"N":"0"}"#,
        ],
    ),
    (
        "numeric_10_2",
        "numeric(10,2)",
        &[r#"{"N":"12345678.9"}"#, r#"{"N":"-0.01"}"#, r#"{"N":"7"}"#],
    ),
    (
        "real",
        "real",
        &[r#"{"N":"1.5"}"#, r#"{"N":"-3.4e38"}"#, r#"{"N":"0.1"}"#],
    ),
    (
        "double_precision",
        "double precision",
        &[r#"{"N":"0.1"}"#, r#"{"N":"-1.5e125"}"#],
    ),
    (
        "boolean",
        "boolean",
        &[r#"{"BOOL":true}"#, r#"{"BOOL":false}"#, r#"{"S":"yes"}"#],
    ),
    (
        "date",
        "date",
        &[
            r#"{"S":"2024-02-29"}"#,
            r#"{"S":"1970-01-01"}"#,
            r#"{"S":"0001-01-01"}"#,
        ],
    ),
    (
        "timestamp",
        "timestamp",
        &[
            r#"{"S":"2024-02-29T12:30:15.123456Z"}"#,
            r#"{"S":"1969-12-31 23:59:59.5"}"#,
        ],
    ),
    (
        "timestamptz",
        "timestamptz",
        &[r#"{"S":"2024-02-29T14:30:15.5+02:00"}"#, r#"{"N":"0"}"#],
    ),
    (
        "bytea",
        "bytea",
        &[r#"{"B":"AAECAwQ="}"#, r#"{"B":""}"#, r#"{"S":"text"}"#],
    ),
    (
        "json",
        "json",
        &[
            r#"{"M":{"k":{"S":"v"},"n":{"N":"1e2"}}}"#,
            r#"{"L":[{"BOOL":true},{"NULL":true}]}"#,
        ],
    ),
    (
        "jsonb",
        "jsonb",
        &[
            r#"{"M":{"b":{"N":"1.50"},"a":{"SS":["y","x"]}}}"#,
            r#"{"S":"plain"}"#,
        ],
    ),
    (
        "text_array",
        "text[]",
        &[
            r#"{"SS":["b","a"]}"#,
            r#"{"L":[{"S":"x"},{"NULL":true}]}"#,
            r#"{"L":[]}"#,
        ],
    ),
    (
        "integer_array",
        "integer[]",
        &[r#"{"NS":["2","-1"]}"#, r#"{"L":[{"N":"7"}]}"#],
    ),
    (
        "bigint_array",
        "bigint[]",
        &[r#"{"L":[{"N":"9007199254740993"},{"NULL":true}]}"#],
    ),
    (
        "numeric_array",
        "numeric[]",
        &[r#"{"NS":["1E-130","-15.789e6"]}"#],
    ),
    ("bytea_array", "bytea[]", &[r#"{"BS":["/w==","AA=="]}"#]),
];

fn golden_dir() -> PathBuf {
    repo().join("fixtures/copy")
}

/// The COPY file our stages make of `values` for a column of type `ty`.
fn encode(ty: &str, values: &[&str]) -> Vec<u8> {
    let toml = format!(
        "[target]\nurl = \"postgresql://x@127.0.0.1/x\"\n[[tables]]\nname = \"g\"\nprimary_key = [\"i\"]\n\
         source = {{ export = \"g\" }}\n[tables.columns]\ni = {{ from = \"i\", type = \"integer\" }}\n\
         v = {{ from = \"v\", type = \"{ty}\" }}\n"
    );
    let config = Config::parse(&toml, "golden.toml".as_ref(), ".".as_ref(), None)
        .unwrap_or_else(|e| panic!("{ty}: {e}"));
    let plan = TablePlan::new(&config.tables[0]);
    let lines: String = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            if *v == "missing" {
                format!("{{\"Item\":{{\"i\":{{\"N\":\"{i}\"}}}}}}\n")
            } else {
                format!("{{\"Item\":{{\"i\":{{\"N\":\"{i}\"}},\"v\":{v}}}}}\n")
            }
        })
        .collect();
    let decoded = decode_lines(&plan, lines.as_bytes(), 1).expect("decode");
    assert!(decoded.rejects.is_empty(), "{ty}: {:?}", decoded.rejects);
    let mut out = COPY_HEADER.to_vec();
    let types: Vec<ColumnType> = plan.types().collect();
    encode_batch(&decoded.batch, &types, &mut out).expect("encode");
    out.extend_from_slice(COPY_TRAILER);
    out
}

/// Each tuple's fields (the integer key, then the value) in canonical form (`None` = NULL).
fn canonical_fields(ty: ColumnType, copy: &[u8], by: Encoder) -> Vec<Vec<Option<Vec<u8>>>> {
    let mut reader = TupleReader::with_header();
    reader.push(copy);
    let mut fields = Fields::new();
    let mut out = Vec::new();
    while let Some(tuple) = reader
        .next_tuple(&mut fields, |buf, f| {
            f.iter()
                .zip([ColumnType::Int4, ty])
                .map(|(field, t)| {
                    field.map(|(a, b)| {
                        let mut c = Vec::new();
                        canonical(t, &buf[a..b], by, &mut c);
                        c
                    })
                })
                .collect::<Vec<_>>()
        })
        .expect("a valid COPY stream")
    {
        assert_eq!(tuple.len(), 2, "two fields per tuple");
        out.push(tuple);
    }
    out
}

#[test]
fn copy_bytes_match_the_golden_files_and_postgresql() {
    let update = std::env::var("UPDATE_FIXTURES").is_ok_and(|v| v == "1");
    let db = TestDb::new("golden");
    let (rt, c) = db.client();
    let mut stale = Vec::new();
    for (name, ty_text, values) in CASES {
        let ty = ColumnType::parse(ty_text).expect("type");
        let mut with_nulls: Vec<&str> = values.to_vec();
        with_nulls.insert(1, r#"{"NULL":true}"#);
        with_nulls.push("missing");
        for (file, vals) in [
            (format!("{name}.bin"), values.to_vec()),
            (format!("{name}_nullable.bin"), with_nulls),
        ] {
            let ours = encode(ty_text, &vals);
            let path = golden_dir().join(&file);
            if update {
                std::fs::create_dir_all(golden_dir()).expect("fixtures/copy");
                std::fs::write(&path, &ours).expect("write golden");
            }
            match std::fs::read(&path) {
                Ok(golden) if golden == ours => {}
                Ok(_) => stale.push(format!("{file}: differs (UPDATE_FIXTURES=1 to refresh)")),
                Err(e) => stale.push(format!("{file}: {e} (UPDATE_FIXTURES=1 writes it)")),
            }
            let theirs = rt.block_on(round_trip(&c, ty_text, &ours));
            // PostgreSQL gives back the same rows, in order, value for value.
            assert_eq!(
                canonical_fields(ty, &theirs, Encoder::Postgres),
                canonical_fields(ty, &ours, Encoder::Ours),
                "{file}: PostgreSQL holds other values"
            );
            // Byte for byte, where PostgreSQL keeps what it was sent.
            let normalised = matches!(ty, ColumnType::Numeric(_) | ColumnType::Jsonb)
                || ty_text.starts_with("numeric");
            if !normalised {
                assert_eq!(theirs, ours, "{file}: PostgreSQL writes other bytes");
            }
        }
    }
    assert!(stale.is_empty(), "golden files: {stale:#?}");
}

/// Loads `copy` into a fresh table of `ty` and reads it back as binary COPY.
async fn round_trip(c: &tokio_postgres::Client, ty: &str, copy: &[u8]) -> Vec<u8> {
    c.batch_execute(&format!(
        "DROP TABLE IF EXISTS g; CREATE TABLE g (i integer, v {ty})"
    ))
    .await
    .expect("table");
    let sink = c
        .copy_in::<_, bytes::Bytes>("COPY g (i, v) FROM STDIN (FORMAT binary)")
        .await
        .expect("copy in");
    futures_util::pin_mut!(sink);
    futures_util::SinkExt::send(&mut sink, bytes::Bytes::copy_from_slice(copy))
        .await
        .unwrap_or_else(|e| panic!("{ty}: PostgreSQL refused our bytes: {e}"));
    sink.as_mut().finish().await.expect("finish copy");
    let stream = c
        .copy_out("COPY g TO STDOUT (FORMAT binary)")
        .await
        .expect("copy out");
    futures_util::pin_mut!(stream);
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.expect("copy out data"));
    }
    out
}
