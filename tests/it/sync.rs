//! `ddb2pg sync` from incremental exports (ARCHITECTURE §8), against the real PostgreSQL:
//! the real gurre chain, generated chains, the edge cases of the apply rules, kill -9 at
//! random points, damaged or missing files, another table's exports, a sync before its
//! load. Every table is compared row by row, column by column, with an oracle that applies
//! the same change lines independently (serde_json) to the full export's items.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::common::*;
use ddb2pg::sync::SyncReport;

pub(crate) const TABLE_ARN: &str = "arn:aws:dynamodb:us-east-1:000000000000:table/shop";
pub(crate) const TABLE_ID: &str = "9b2f1c4e-0000-4000-8000-000000000001";
/// The base export's time (2026-01-01T00:00:00Z) in seconds.
pub(crate) const T0: i64 = 1_767_225_600;

pub(crate) fn rfc3339(secs: i64) -> String {
    ddb2pg::scalar::time::format_timestamp(secs * 1_000_000, true)
}

/// A full export whose summary has AWS's `exportTime`, `tableArn` and `tableId`.
pub(crate) fn write_base(dir: &Path, items: &[String]) {
    write_export(dir, &[items.to_vec(), Vec::new()]);
    let summary = format!(
        "{{\"version\":\"2020-06-30\",\"exportArn\":\"{TABLE_ARN}/export/01767225600000-base0001\",\"tableArn\":\"{TABLE_ARN}\",\"tableId\":\"{TABLE_ID}\",\"exportTime\":\"{}\",\"s3Bucket\":\"b\",\"s3Prefix\":\"prefix\",\"manifestFilesS3Key\":\"prefix/AWSDynamoDB/01700000000000-abcdef01/manifest-files.json\",\"itemCount\":{},\"outputFormat\":\"DYNAMODB_JSON\",\"exportType\":\"FULL_EXPORT\"}}",
        rfc3339(T0),
        items.len()
    );
    std::fs::write(dir.join("manifest-summary.json"), summary).expect("summary");
}

/// One incremental export in AWS's layout under `root` (`root/AWSDynamoDB/<id>/` and the
/// shared `root/AWSDynamoDB/data/`), window in seconds after T0; returns its folder.
pub(crate) fn write_incremental(
    root: &Path,
    id: &str,
    from: i64,
    to: i64,
    table_id: &str,
    files: &[Vec<String>],
) -> PathBuf {
    let dir = root.join("AWSDynamoDB").join(id);
    let data = root.join("AWSDynamoDB").join("data");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::create_dir_all(&data).expect("dir");
    let mut manifest = String::new();
    let mut total = 0;
    for (i, lines) in files.iter().enumerate() {
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        let gz = gzip(text.as_bytes());
        let name = format!("{id}-{i:02}.json.gz");
        std::fs::write(data.join(&name), &gz).expect("write");
        manifest.push_str(&format!(
            "{{\"itemCount\":{},\"md5Checksum\":\"{}\",\"etag\":\"x-1\",\"dataFileS3Key\":\"AWSDynamoDB/data/{name}\"}}\n",
            lines.len(),
            b64_md5(&gz)
        ));
        total += lines.len();
    }
    std::fs::write(dir.join("manifest-files.json"), &manifest).expect("write");
    let summary = format!(
        "{{\"version\":\"2023-08-01\",\"exportArn\":\"{TABLE_ARN}/export/{id}\",\"tableArn\":\"{TABLE_ARN}\",\"tableId\":\"{table_id}\",\"exportFromTime\":\"{}\",\"exportToTime\":\"{}\",\"s3Bucket\":\"b\",\"s3Prefix\":null,\"manifestFilesS3Key\":\"AWSDynamoDB/{id}/manifest-files.json\",\"itemCount\":{total},\"outputFormat\":\"DYNAMODB_JSON\",\"outputView\":\"NEW_AND_OLD_IMAGES\",\"exportType\":\"INCREMENTAL_EXPORT\"}}",
        rfc3339(T0 + from),
        rfc3339(T0 + to)
    );
    std::fs::write(dir.join("manifest-summary.json"), summary).expect("summary");
    std::fs::write(dir.join("_started"), "").expect("started");
    dir
}

fn item(id: &str, n: &str, extra: &str) -> String {
    format!(r#"{{"Item":{{"id":{{"S":"{id}"}},"n":{{"N":"{n}"}}{extra}}}}}"#)
}

fn put(id: &str, n: &str, extra: &str) -> String {
    format!(
        r#"{{"Metadata":{{"WriteTimestampMicros":{{"N":"1767225700000000"}}}},"Keys":{{"id":{{"S":"{id}"}}}},"NewImage":{{"id":{{"S":"{id}"}},"n":{{"N":"{n}"}}{extra}}},"OldImage":{{"id":{{"S":"{id}"}},"old":{{"M":{{"x":{{"L":[{{"S":"\"}}"}}]}}}}}}}}}}"#
    )
}

fn del(id: &str) -> String {
    format!(
        r#"{{"Metadata":{{"WriteTimestampMicros":{{"N":"1767225800000000"}}}},"Keys":{{"id":{{"S":"{id}"}}}},"OldImage":{{"id":{{"S":"{id}"}},"n":{{"N":"1"}}}}}}"#
    )
}

/// The oracle: a table's items by key, changed by change lines as §8 says — a put
/// replaces the whole item, a delete removes the key; `skip` lists keys whose change is
/// a reject (the item stays as it was).
struct Oracle {
    key_attrs: Vec<String>,
    items: BTreeMap<String, Map<String, Value>>,
}

impl Oracle {
    fn new(key_attrs: &[&str], items: Vec<Map<String, Value>>) -> Oracle {
        let key_attrs: Vec<String> = key_attrs.iter().map(|s| s.to_string()).collect();
        let mut o = Oracle {
            key_attrs,
            items: BTreeMap::new(),
        };
        for i in items {
            let k = o.key(&i);
            o.items.insert(k, i);
        }
        o
    }

    fn key(&self, m: &Map<String, Value>) -> String {
        let k: Vec<&Value> = self
            .key_attrs
            .iter()
            .map(|a| m.get(a).expect("key attribute"))
            .collect();
        serde_json::to_string(&k).expect("key")
    }

    fn apply(&mut self, lines: &[String], skip: &[&str]) {
        for l in lines {
            let v: Value = serde_json::from_str(l).expect("change line");
            let keys = v.get("Keys").and_then(Value::as_object).expect("Keys");
            let k = self.key(keys);
            if skip.iter().any(|s| k.contains(s)) {
                continue;
            }
            match v.get("NewImage").and_then(Value::as_object) {
                Some(img) => {
                    self.items.insert(k, img.clone());
                }
                None => {
                    self.items.remove(&k);
                }
            }
        }
    }

    /// Every change line of an incremental export folder, read independently.
    fn lines_of(export: &Path) -> Vec<String> {
        let manifest = std::fs::read_to_string(export.join("manifest-files.json")).expect("m");
        let root = export.parent().and_then(Path::parent).expect("root");
        let mut out = Vec::new();
        for l in manifest.lines().filter(|l| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(l).expect("manifest line");
            let key = v["dataFileS3Key"].as_str().expect("key");
            let path = root.join(key);
            let gz = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let mut text = String::new();
            if !gz.is_empty() {
                flate2::read::MultiGzDecoder::new(&gz[..])
                    .read_to_string(&mut text)
                    .expect("gunzip");
            }
            out.extend(
                text.lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(str::to_string),
            );
        }
        out
    }

    fn rows(&self) -> Vec<Map<String, Value>> {
        self.items.values().cloned().collect()
    }
}

fn shop_config(s: &Scratch, url: &str, base: &Path, changes: &Path, extra_cols: &str) -> String {
    let path = s.path().join("pipeline.toml");
    write_config(
        &path,
        url,
        &format!(
            "[[tables]]\nname = \"shop\"\nprimary_key = [\"id\"]\nsource = {{ export = \"{}\" }}\nchanges = {{ exports = \"{}\" }}\n\n[tables.columns]\nid = {{ from = \"id\", type = \"text\" }}\nn = {{ from = \"n\", type = \"integer\" }}\n{extra_cols}rest = {{ rest = true, type = \"jsonb\" }}\n",
            base.display(),
            changes.display()
        ),
    );
    path.display().to_string()
}

fn spec_of(cfg: &str, url: &str, table: &str) -> ddb2pg::config::TableSpec {
    config_with_url(Path::new(cfg), url)
        .tables
        .into_iter()
        .find(|t| t.name == table)
        .expect("table in config")
}

fn sync(cfg: &str, url: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "sync",
        "--config",
        cfg,
        "--until-caught-up",
        "--no-progress",
    ];
    args.extend_from_slice(extra);
    ddb2pg_at(&args, url)
}

fn load_ok(cfg: &str, url: &str) {
    let out = ddb2pg_at(&["load", "--config", cfg, "--no-progress"], url);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
}

#[test]
fn the_real_gurre_chain_is_refused_for_its_gap_and_applied_with_allow_gap_to_the_documented_rows() {
    let Some(acc) = acceptance_dir() else { return };
    let root = acc.join("exports/gurre-ddb-pitr/s3exportdata");
    let full = root.join("AWSDynamoDB/01768385930622-efd1a093");
    let db = TestDb::new("sync_gurre");
    let s = Scratch::new("sync_gurre");
    let cfg = s.path().join("pipeline.toml");
    write_config(
        &cfg,
        &db.url,
        &format!(
            "[[tables]]\nname = \"pitr\"\nprimary_key = [\"pk\", \"sk\"]\nsource = {{ export = \"{}\" }}\nchanges = {{ exports = \"{}\" }}\n\n[tables.columns]\npk = {{ from = \"pk\", type = \"text\" }}\nsk = {{ from = \"sk\", type = \"text\" }}\ntest = {{ from = \"test\", type = \"text\" }}\nnumber = {{ from = \"number\", type = \"numeric\" }}\nrest = {{ rest = true, type = \"jsonb\" }}\n",
            full.display(),
            root.display()
        ),
    );
    let cfg = cfg.display().to_string();
    load_ok(&cfg, &db.url);
    let spec = spec_of(&cfg, &db.url, "pitr");

    // 69.378 s between the full export's time (10:18:50.622) and the first incremental
    // export's start (10:20:00): refused, nothing applied.
    let out = sync(&cfg, &db.url, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{}", describe(&out));
    assert!(err.contains("a gap of 69.378 s"), "{err}");
    assert!(err.contains("--allow-gap"), "{err}");
    assert_table_matches_export(&db, "public", &spec, &full);

    let report = s.path().join("sync.json");
    let out = sync(
        &cfg,
        &db.url,
        &["--allow-gap", "--report", &report.display().to_string()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let mut oracle = Oracle::new(&["pk", "sk"], read_export_items(&full));
    for id in ["01768386924000-d339e52d", "01768388186000-4a2fc3ff"] {
        oracle.apply(&Oracle::lines_of(&root.join("AWSDynamoDB").join(id)), &[]);
    }
    assert_eq!(
        assert_table_matches_items(&db, "public", &spec, &oracle.rows()),
        8
    );
    // The rows the chain documents: (2,3) and (1,1) deleted, (3,2)'s put dropped
    // `number`, (1,3) gained `bin_update`.
    let keys = db.query("SELECT pk || ',' || sk FROM pitr ORDER BY 1");
    let keys: Vec<String> = keys
        .into_iter()
        .map(|r| r[0].clone().unwrap_or_default())
        .collect();
    assert_eq!(
        keys,
        ["1,2", "1,3", "2,1", "2,2", "3,1", "3,2", "3,3", "4,2"]
    );
    assert_eq!(
        db.scalar("SELECT coalesce(number::text, 'NULL') FROM pitr WHERE pk = '3' AND sk = '2'"),
        "NULL"
    );
    assert_eq!(
        db.scalar("SELECT rest->>'bin_update' FROM pitr WHERE pk = '1' AND sk = '3'"),
        "[\"0000\", \"0001\"]"
    );
    let r: SyncReport = read_report(&report);
    let t = &r.tables[0];
    assert_eq!(
        (t.inserted, t.updated, t.deleted, t.rejected),
        (7, 2, 2, 0),
        "{t:?}"
    );
    assert_eq!(t.watermark.as_deref(), Some("2026-01-14T10:50:00.000000Z"));
    assert!(t.lag_seconds.is_some_and(|l| l > 0.0));

    // verify: the full export with both exports applied.
    let out = ddb2pg_at(&["verify", "--config", &cfg], &db.url);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    // Caught up: a second sync applies nothing and changes nothing.
    let out = sync(
        &cfg,
        &db.url,
        &["--allow-gap", "--report", &report.display().to_string()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let r: SyncReport = read_report(&report);
    assert!(r.tables[0].exports_applied.is_empty(), "{r:?}");
    assert_table_matches_items(&db, "public", &spec, &oracle.rows());
}

#[test]
fn a_chain_with_every_kind_of_change_lands_as_the_oracle_says_and_verify_agrees() {
    let db = TestDb::new("sync_kinds");
    let s = Scratch::new("sync_kinds");
    let base = s.path().join("base");
    let changes = s.path().join("changes");
    write_base(
        &base,
        &[
            item("a", "1", r#","note":{"S":"keep me"}"#),
            item("b", "2", r#","note":{"S":"dropped later"}"#),
            item("c", "3", ""),
            item("d", "4", ""),
            item("e", "5", r#","tags":{"SS":["x","y"]}"#),
        ],
    );
    // 1: a updated, b's put drops `note`, c deleted, new f (with a map into the rest
    //    column), a delete of a key that was never there.
    let e1 = vec![
        vec![
            put("a", "10", r#","note":{"S":"keep me"}"#),
            put("b", "20", ""),
        ],
        vec![
            del("c"),
            put("f", "6", r#","meta":{"M":{"k":{"N":"1.50"}}}"#),
            del("zz"),
        ],
        Vec::new(),
    ];
    // 2: a updated again, c comes back, f deleted, d's put is a reject (n is not an
    //    integer): d keeps its value.
    let e2 = vec![vec![
        put("a", "100", ""),
        put("c", "30", r#","note":{"S":"back"}"#),
        del("f"),
        put("d", "4.5", ""),
    ]];
    // 3: overlaps export 2 by 60 s; a updated once more, e's set replaced.
    let e3 = vec![vec![
        put("a", "1000", ""),
        put("e", "50", r#","tags":{"SS":["z"]}"#),
    ]];
    let d1 = write_incremental(&changes, "01767226500000-aaaa0001", 0, 900, TABLE_ID, &e1);
    let d2 = write_incremental(
        &changes,
        "01767227400000-aaaa0002",
        900,
        1800,
        TABLE_ID,
        &e2,
    );
    let d3 = write_incremental(
        &changes,
        "01767228300000-aaaa0003",
        1740,
        2700,
        TABLE_ID,
        &e3,
    );
    let cfg = shop_config(&s, &db.url, &base, &changes, "note = { from = \"note\", type = \"text\" }\ntags = { from = \"tags\", type = \"text[]\" }\n");
    load_ok(&cfg, &db.url);
    let spec = spec_of(&cfg, &db.url, "shop");

    let report = s.path().join("sync.json");
    let rejects = s.path().join("rejects.jsonl");
    let out = sync(
        &cfg,
        &db.url,
        &[
            "--report",
            &report.display().to_string(),
            "--rejects",
            &rejects.display().to_string(),
        ],
    );
    // One change rejected: exit 3.
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("60.000 s before"),
        "the overlap is warned about: {err}"
    );
    let mut oracle = Oracle::new(&["id"], read_export_items(&base));
    for d in [&d1, &d2, &d3] {
        oracle.apply(&Oracle::lines_of(d), &["\"d\""]);
    }
    assert_eq!(
        assert_table_matches_items(&db, "public", &spec, &oracle.rows()),
        5
    );
    assert_eq!(db.scalar("SELECT n FROM shop WHERE id = 'a'"), "1000");
    assert_eq!(
        db.scalar("SELECT coalesce(note, 'NULL') FROM shop WHERE id = 'b'"),
        "NULL"
    );
    assert_eq!(db.scalar("SELECT n FROM shop WHERE id = 'd'"), "4");
    // The reject names the change, with the original record.
    let text = std::fs::read_to_string(&rejects).expect("rejects file");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert_eq!(lines[0]["table"], "shop");
    assert_eq!(lines[0]["attribute"], "n");
    assert_eq!(lines[0]["item"]["NewImage"]["n"]["N"], "4.5", "{text}");
    assert!(
        lines[0]["split"]
            .as_str()
            .is_some_and(|s| s.contains("aaaa0002")),
        "{text}"
    );
    let r: SyncReport = read_report(&report);
    let t = &r.tables[0];
    assert_eq!(t.exports_applied.len(), 3);
    // Inserted: f (1), c again (2); updated: a ×3, b, e; deleted: c, f (zz was not there).
    assert_eq!(
        (t.inserted, t.updated, t.deleted, t.rejected),
        (2, 5, 2, 1),
        "{t:?}"
    );

    let vr = s.path().join("verify.json");
    let out = ddb2pg_at(
        &[
            "verify",
            "--config",
            &cfg,
            "--report",
            &vr.display().to_string(),
        ],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let v = verify_report(&vr);
    assert_eq!(
        (v.tables[0].exports_applied, v.tables[0].rejected),
        (3, 1),
        "{v:?}"
    );
    // A row changed behind sync's back is found.
    db.query("UPDATE shop SET n = 7 WHERE id = 'e'");
    let out = ddb2pg_at(&["verify", "--config", &cfg], &db.url);
    assert_eq!(out.status.code(), Some(4), "{}", describe(&out));
}

#[test]
fn gaps_recreated_tables_other_tables_and_damaged_files_apply_nothing() {
    let db = TestDb::new("sync_refuse");
    let s = Scratch::new("sync_refuse");
    let base = s.path().join("base");
    let changes = s.path().join("changes");
    write_base(&base, &[item("a", "1", ""), item("b", "2", "")]);
    let cfg = shop_config(&s, &db.url, &base, &changes, "");
    std::fs::create_dir_all(&changes).expect("dir");

    // Before the load: refused (exit 2), nothing applied.
    write_incremental(
        &changes,
        "01767226500000-bbbb0001",
        0,
        900,
        TABLE_ID,
        &[vec![put("a", "10", "")]],
    );
    let out = sync(&cfg, &db.url, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("load it"),
        "{}",
        describe(&out)
    );
    load_ok(&cfg, &db.url);
    let spec = spec_of(&cfg, &db.url, "shop");

    // Export 2 starts 100 s after export 1's end: exit 5 naming the gap, nothing of
    // either applied.
    let e2 = write_incremental(
        &changes,
        "01767227500000-bbbb0002",
        1000,
        1800,
        TABLE_ID,
        &[vec![put("b", "20", "")]],
    );
    let out = sync(&cfg, &db.url, &[]);
    assert_eq!(out.status.code(), Some(5), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("a gap of 100.000 s"),
        "{}",
        describe(&out)
    );
    assert_table_matches_export(&db, "public", &spec, &base);
    std::fs::remove_dir_all(&e2).expect("rm");

    // An export of another table under the prefix is ignored; one of this table with
    // another tableId (deleted and created again) is exit 5.
    let other = write_incremental(
        &changes,
        "01767227400000-bbbb0003",
        900,
        1800,
        TABLE_ID,
        &[vec![put("b", "99", "")]],
    );
    let summary = std::fs::read_to_string(other.join("manifest-summary.json")).expect("s");
    std::fs::write(
        other.join("manifest-summary.json"),
        summary
            .replace("table/shop\"", "table/other\"")
            .replace("table/shop/", "table/other/"),
    )
    .expect("w");
    let recreated = write_incremental(
        &changes,
        "01767227400000-bbbb0004",
        900,
        1800,
        "another-table-id",
        &[vec![put("b", "98", "")]],
    );
    let out = sync(&cfg, &db.url, &[]);
    assert_eq!(out.status.code(), Some(5), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("deleted and created again"),
        "{}",
        describe(&out)
    );
    assert_table_matches_export(&db, "public", &spec, &base);
    std::fs::remove_dir_all(&recreated).expect("rm");

    // A data file that fails its MD5, then one that is missing: exit 1 naming it, and
    // nothing of that export applied (export 1, before it, is).
    let e5 = write_incremental(
        &changes,
        "01767227400000-bbbb0005",
        900,
        1800,
        TABLE_ID,
        &[vec![put("a", "11", "")], vec![put("b", "21", "")]],
    );
    let victim = changes.join("AWSDynamoDB/data/01767227400000-bbbb0005-01.json.gz");
    let good = std::fs::read(&victim).expect("read");
    std::fs::write(
        &victim,
        gzip(format!("{}\n", put("b", "666", "")).as_bytes()),
    )
    .expect("w");
    let out = sync(&cfg, &db.url, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bbbb0005-01.json.gz") && err.contains("MD5"),
        "{err}"
    );
    let mut oracle = Oracle::new(&["id"], read_export_items(&base));
    oracle.apply(
        &Oracle::lines_of(&changes.join("AWSDynamoDB/01767226500000-bbbb0001")),
        &[],
    );
    assert_table_matches_items(&db, "public", &spec, &oracle.rows());
    std::fs::remove_file(&victim).expect("rm");
    let out = sync(&cfg, &db.url, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bbbb0005-01.json.gz"),
        "{}",
        describe(&out)
    );
    assert_table_matches_items(&db, "public", &spec, &oracle.rows());

    // Repaired: applied, once.
    std::fs::write(&victim, good).expect("w");
    let out = sync(&cfg, &db.url, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    oracle.apply(&Oracle::lines_of(&e5), &[]);
    assert_table_matches_items(&db, "public", &spec, &oracle.rows());
}

/// The generated CloudShelf chain (books, users, orders), loaded then synced: each table
/// equal to the oracle; with kill -9 at random moments of the sync first, and a second
/// sync process beside the last one, the same rows.
#[test]
fn generated_chains_survive_kill_9_and_two_syncs_at_once_with_exact_rows() {
    let seed = test_seed("sync_kill");
    let db = TestDb::new("sync_kill");
    let s = Scratch::new("sync_kill");
    let fx = s.path().join("fx");
    let out = ddb2pg(&[
        "fixtures",
        "generate",
        "--out",
        &fx.display().to_string(),
        "--scale",
        "16000",
        "--seed",
        "5",
        "--changes",
        "12000",
        "--exports",
        "3",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = std::fs::read_to_string(repo().join("pipeline.toml")).expect("pipeline.toml");
    let mut cfg_text = text.replace("fixtures/cloudshelf/", &format!("{}/", fx.display()));
    for t in ["books", "users", "orders"] {
        if cfg_text.contains(&format!("{}/{t}-changes", fx.display())) {
            continue;
        }
        cfg_text = cfg_text.replace(
            &format!("source = {{ export = \"{}/{t}\" }}", fx.display()),
            &format!(
                "source = {{ export = \"{0}/{t}\" }}\nchanges = {{ exports = \"{0}/{t}-changes\" }}",
                fx.display()
            ),
        );
    }
    // Small chunks: many commits for a kill to land between.
    cfg_text = cfg_text.replace("[tuning]", "[tuning]\nchunk_bytes = 65536\nconnections = 2");
    let cfg = s.path().join("pipeline.toml");
    std::fs::write(&cfg, cfg_text).expect("config");
    let cfg = cfg.display().to_string();
    assert!(
        std::fs::read_to_string(&cfg)
            .expect("c")
            .matches("changes = ")
            .count()
            == 3
    );
    load_ok(&cfg, &db.url);

    let mut rng = Rng::new(seed);
    let sync_args = [
        "sync",
        "--config",
        cfg.as_str(),
        "--until-caught-up",
        "--no-progress",
    ];
    let committed = || {
        db.scalar(
            "SELECT count(*) FROM ddb2pg.chunks c JOIN ddb2pg.runs r ON r.id = c.run_id WHERE r.mode = 'sync'",
        )
        .parse::<u64>()
        .expect("count")
    };
    for round in 0..4 {
        let before = committed();
        let mut child = spawn_ddb2pg(&sync_args, &db.url);
        // Killed once it committed a chunk of changes (or after 5 s), at a random moment
        // after that.
        let t = std::time::Instant::now();
        while committed() == before && t.elapsed() < std::time::Duration::from_secs(5) {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        std::thread::sleep(std::time::Duration::from_millis(rng.below(300)));
        let _ = child.kill();
        let status = child.wait().expect("wait");
        eprintln!("round {round}: killed ({status:?})");
    }
    let mut a = spawn_ddb2pg(&sync_args, &db.url);
    let b = ddb2pg_at(&sync_args, &db.url);
    let mut a_bytes = Vec::new();
    if let Some(mut e) = a.stderr.take() {
        let _ = e.read_to_end(&mut a_bytes);
    }
    let a_status = a.wait().expect("wait");
    let a_err = String::from_utf8_lossy(&a_bytes);
    assert_eq!(
        b.status.code(),
        Some(0),
        "{}\n--- the other sync\n{a_err}",
        describe(&b)
    );
    assert!(a_status.success(), "the other sync: {a_status:?}\n{a_err}");

    for (table, key) in [
        ("books", "bookId"),
        ("users", "userId"),
        ("orders", "orderId"),
    ] {
        let spec = spec_of(&cfg, &db.url, table);
        let mut oracle = Oracle::new(&[key], read_export_items(&fx.join(table)));
        let root = fx.join(format!("{table}-changes/AWSDynamoDB"));
        let mut ids: Vec<PathBuf> = std::fs::read_dir(&root)
            .expect("exports")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.join("manifest-summary.json").is_file())
            .collect();
        ids.sort();
        assert_eq!(ids.len(), 3);
        for d in &ids {
            oracle.apply(&Oracle::lines_of(d), &[]);
        }
        let n = assert_table_matches_items(&db, "public", &spec, &oracle.rows());
        eprintln!("{table}: {n} rows as the oracle says");
        // Each export applied once.
        let applied = db.scalar(&format!(
            "SELECT count(*) FROM ddb2pg.sync_exports WHERE target_table = '{table}'"
        ));
        assert_eq!(applied, "3");
        // Each change line committed once (a chunk applied twice would count twice).
        let lines: usize = ids.iter().map(|d| Oracle::lines_of(d).len()).sum();
        let counted = db.scalar(&format!(
            "SELECT sum(changes) FROM ddb2pg.sync_exports WHERE target_table = '{table}'"
        ));
        assert_eq!(
            counted,
            lines.to_string(),
            "{table}: change lines committed"
        );
    }
    // The kills landed inside exports: some split of a sync run was claimed again.
    let reclaimed = db.scalar(
        "SELECT count(*) FROM ddb2pg.splits s JOIN ddb2pg.runs r ON r.id = s.run_id WHERE r.mode = 'sync' AND s.claims > 1",
    );
    assert_ne!(reclaimed, "0", "no kill landed inside an export");
    let out = ddb2pg_at(&["verify", "--config", &cfg], &db.url);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
}
