//! Bad input and a bad environment: each gives a clear error naming the file, line, key or
//! setting, the right exit code, and loses nothing: a failed load keeps exactly the chunks
//! it committed (never a row of a file whose checksum fails), its run stays unfinished
//! with the error recorded, and a corrected export loads cleanly.

use std::path::Path;

use crate::common::*;

const TABLE: &str = r#"
[tables.columns]
id   = { from = "id", type = "text" }
qty  = { from = "qty", type = "integer", required = true }
rest = { rest = true, type = "jsonb" }
"#;

fn lines(from: usize, n: usize) -> Vec<String> {
    (from..from + n)
        .map(|i| format!(r#"{{"Item":{{"id":{{"S":"k{i}"}},"qty":{{"N":"{i}"}},"note":{{"S":"line {i}"}}}}}}"#))
        .collect()
}

fn setup(tag: &str) -> (TestDb, Scratch, std::path::PathBuf, std::path::PathBuf) {
    let db = TestDb::new(tag);
    let scratch = Scratch::new(tag);
    let export = scratch.path().join("export");
    write_export(&export, &[lines(0, 500), vec![], lines(500, 700)]);
    let config = scratch.path().join("c.toml");
    write_config(
        &config,
        &db.url,
        &format!("[[tables]]\nname = \"t\"\nprimary_key = [\"id\"]\nsource = {{ export = \"{}\" }}\n{TABLE}", export.display()),
    );
    (db, scratch, export, config)
}

fn load(config: &Path, scratch: &Scratch) -> std::process::Output {
    let rejects = scratch.path().join("rejects.jsonl");
    ddb2pg(&[
        "load",
        "--config",
        config.to_str().expect("utf8"),
        "--rejects",
        rejects.to_str().expect("utf8"),
        "--no-progress",
    ])
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn table_exists(db: &TestDb) -> bool {
    db.scalar("SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename = 't'")
        == "1"
}

/// After a failed load: its run is unfinished with the error on the split of `file`, and
/// the table holds exactly the rows of the committed checkpoints.
fn assert_failed_run(db: &TestDb, file: &str) {
    let last = db.query("SELECT id, state FROM ddb2pg.runs ORDER BY id DESC LIMIT 1");
    assert_eq!(last[0][1].as_deref(), Some("running"), "{last:?}");
    let run = last[0][0].clone().expect("id");
    assert_eq!(
        db.scalar(&format!(
            "SELECT count(*) FROM ddb2pg.splits WHERE run_id = {run} AND name LIKE '%{file}' AND last_error LIKE '%{file}%'"
        )),
        "1",
        "the error is recorded on the split"
    );
    let recorded = db.scalar(&format!(
        "SELECT coalesce(sum(rows_done), 0) FROM ddb2pg.splits WHERE run_id = {run}"
    ));
    let rows = if table_exists(db) {
        db.scalar("SELECT count(*) FROM t")
    } else {
        "0".into()
    };
    assert_eq!(
        rows, recorded,
        "rows in the table = rows of committed chunks"
    );
}

/// Rewrites the manifest entry of data file `idx` with `f`.
fn edit_manifest(export: &Path, idx: usize, f: impl Fn(&mut serde_json::Value)) {
    let path = export.join("manifest-files.json");
    let text = std::fs::read_to_string(&path).expect("manifest");
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        let mut v: serde_json::Value = serde_json::from_str(line).expect("json");
        if i == idx {
            f(&mut v);
        }
        out.push_str(&v.to_string());
        out.push('\n');
    }
    std::fs::write(path, out).expect("write");
}

#[test]
fn a_clean_export_loads_then_each_corruption_fails_naming_the_file() {
    let (db, scratch, export, config) = setup("corrupt");
    let out = load(&config, &scratch);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(db.scalar("SELECT count(*) FROM t"), "1200");
    assert_eq!(
        db.scalar("SELECT sum(qty) FROM t"),
        (0..1200).sum::<i64>().to_string()
    );
    assert_eq!(
        db.scalar("SELECT rest->>'note' FROM t WHERE id = 'k1199'"),
        "line 1199"
    );
    db.query("DROP TABLE t");

    // A checksum mismatch: the file named, nothing committed.
    edit_manifest(&export, 2, |v| {
        v["md5Checksum"] = "AAAAAAAAAAAAAAAAAAAAAA==".into()
    });
    let out = load(&config, &scratch);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        stderr(&out).contains("file02.json.gz") && stderr(&out).contains("MD5 mismatch"),
        "{}",
        describe(&out)
    );
    assert!(
        stderr(&out).contains("re-run the same command to resume"),
        "{}",
        describe(&out)
    );
    assert_failed_run(&db, "file02.json.gz");
    if table_exists(&db) {
        assert_eq!(
            db.scalar("SELECT count(*) FROM t WHERE substr(id, 2)::int >= 500"),
            "0",
            "no row of a file whose checksum fails"
        );
    }

    // An item count that disagrees with the manifest.
    write_export(&export, &[lines(0, 500), vec![], lines(500, 700)]);
    edit_manifest(&export, 0, |v| v["itemCount"] = 501.into());
    let out = load(&config, &scratch);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        stderr(&out).contains("file00.json.gz") && stderr(&out).contains("item count mismatch"),
        "{}",
        describe(&out)
    );
    assert_failed_run(&db, "file00.json.gz");

    // A truncated gzip whose checksum matches its (truncated) bytes: the gunzip error names
    // the file and where it stopped.
    write_export(&export, &[lines(0, 500), vec![], lines(500, 700)]);
    let data = export.join("data/file02.json.gz");
    let bytes = std::fs::read(&data).expect("read");
    let cut = &bytes[..bytes.len() * 2 / 3];
    std::fs::write(&data, cut).expect("write");
    edit_manifest(&export, 2, |v| v["md5Checksum"] = b64_md5(cut).into());
    let out = load(&config, &scratch);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        stderr(&out).contains("file02.json.gz") && stderr(&out).contains("near line"),
        "{}",
        describe(&out)
    );
    assert_failed_run(&db, "file02.json.gz");
    // status shows the failed split and its error.
    let status = ddb2pg(&["status", "--config", config.to_str().expect("utf8")]);
    assert_eq!(status.status.code(), Some(0), "{}", describe(&status));
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("running") && text.contains("near line"),
        "{text}"
    );

    // A data file the manifest names but the folder lacks.
    write_export(&export, &[lines(0, 500), vec![], lines(500, 700)]);
    std::fs::remove_file(export.join("data/file00.json.gz")).expect("rm");
    let out = load(&config, &scratch);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        stderr(&out).contains("file00.json.gz") && stderr(&out).contains("not in the folder"),
        "{}",
        describe(&out)
    );

    // No manifest at all.
    std::fs::remove_file(export.join("manifest-summary.json")).expect("rm");
    let out = load(&config, &scratch);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        stderr(&out).contains("manifest-summary.json is missing"),
        "{}",
        describe(&out)
    );

    // A corrected export loads cleanly: the partial table the failed runs left is theirs,
    // so create mode starts it again.
    write_export(&export, &[lines(0, 500), vec![], lines(500, 700)]);
    let out = load(&config, &scratch);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(db.scalar("SELECT count(*) FROM t"), "1200");
    assert_eq!(db.scalar("SELECT count(DISTINCT id) FROM t"), "1200");
}

#[test]
fn corrupt_lines_and_wrong_types_are_rejected_and_the_rest_loads() {
    let (db, scratch, export, config) = setup("lines");
    let mut first = lines(0, 300);
    first[10] = r#"{"Item":{"id":{"S":"k10"},"qty":{"N":"#.to_string(); // cut mid-line
    first[20] = r#"{"Item":{"id":{"S":"k20"},"qty":{"S":"twenty"}}}"#.to_string(); // wrong type
    first[30] = r#"{"Item":{"id":{"S":"k30"}}}"#.to_string(); // required attribute missing
    first[40] = "not json at all".to_string();
    write_export(&export, &[first, lines(300, 100)]);
    let out = load(&config, &scratch);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    assert_eq!(db.scalar("SELECT count(*) FROM t"), "396");
    let rejects = std::fs::read_to_string(scratch.path().join("rejects.jsonl")).expect("rejects");
    let recs: Vec<serde_json::Value> = rejects
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(recs.len(), 4, "{rejects}");
    let lines_seen: Vec<u64> = recs.iter().filter_map(|r| r["position"].as_u64()).collect();
    assert_eq!(
        lines_seen,
        [11, 21, 31, 41],
        "1-based line numbers in the file"
    );
    assert_eq!(recs[1]["key"]["id"], "k20");
    assert_eq!(recs[1]["attribute"], "qty");
    assert!(
        recs[1]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("not a number")),
        "{}",
        recs[1]
    );
    assert_eq!(recs[2]["attribute"], "qty");
    assert!(
        recs[2]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("required")),
        "{}",
        recs[2]
    );
    assert_eq!(recs[3]["item"], "not json at all", "the raw line is kept");
    // Every other item is there with its values.
    assert_eq!(
        db.scalar("SELECT sum(qty) FROM t"),
        ((0..400).sum::<i64>() - 10 - 20 - 30 - 40).to_string()
    );
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary.contains("396") && summary.contains('4'),
        "{summary}"
    );
}

#[test]
fn unreachable_postgres_is_one_line_and_exit_1() {
    let scratch = Scratch::new("unreachable");
    let export = scratch.path().join("export");
    write_export(&export, &[lines(0, 5)]);
    let config = scratch.path().join("c.toml");
    write_config(
        &config,
        "postgresql://postgres@127.0.0.1:1/nowhere",
        &format!("[[tables]]\nname = \"t\"\nprimary_key = [\"id\"]\nsource = {{ export = \"{}\" }}\n{TABLE}", export.display()),
    );
    let out = load(&config, &scratch);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {err}");
    assert!(
        lines[0].starts_with("error: cannot connect to PostgreSQL at 127.0.0.1:1/nowhere"),
        "{err}"
    );
}

#[test]
fn a_bad_config_lists_every_problem_before_any_work() {
    let scratch = Scratch::new("badconfig");
    let config = scratch.path().join("bad.toml");
    std::fs::write(
        &config,
        r#"
[target]
url = "postgresql://postgres@127.0.0.1:5432/x?sslmode=bogus"
shema = "public"

[tuning]
connections = 0
colour = 3

[[tables]]
name = "t"
primary_key = ["missing"]
source = { export = "nowhere", segments = 4 }

[tables.columns]
id = { from = "id", type = "text" }
ID = { from = "other", type = "text" }
qty = { type = "int7" }
tags = { type = "point[]" }
x = { type = "text", default = "a", unit = "ms" }
"#,
    )
    .expect("write");
    let out = ddb2pg(&["load", "--config", config.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let err = stderr(&out);
    for key in [
        "`target.url`",
        "`target.shema`: unknown key",
        "`tuning.connections`",
        "`tuning.colour`: unknown key",
        "`tables[0].primary_key[0]`: `missing` names no column",
        "`tables[0].source.segments`: unknown key",
        "`tables[0].columns.ID`: duplicate column",
        "`tables[0].columns.qty.type`: unknown column type `int7`",
        "`tables[0].columns.tags.type`: unsupported array element type",
        "`tables[0].columns.x.unit`",
    ] {
        assert!(err.contains(key), "missing {key}:\n{err}");
    }
    // A bad flag is a usage error too.
    let out = ddb2pg(&["load", "--mode", "sideways"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    // A missing config file names itself.
    let out = ddb2pg(&["load", "--config", "/nonexistent/pipeline.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        stderr(&out).contains("/nonexistent/pipeline.toml"),
        "{}",
        describe(&out)
    );
}
