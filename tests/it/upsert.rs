//! `--mode upsert`: re-running into a target that already holds rows converges on the new
//! source — new keys inserted, changed rows updated, equal rows left alone — and says how many.

use crate::common::*;
use ddb2pg::load::{LoadReport, UpsertCounts};

fn item(id: u32, qty: u32, note: &str) -> String {
    format!(r#"{{"Item":{{"id":{{"N":"{id}"}},"qty":{{"N":"{qty}"}},"note":{{"S":"{note}"}}}}}}"#)
}

fn load(
    config: &std::path::Path,
    scratch: &Scratch,
    mode: &str,
) -> (std::process::Output, LoadReport) {
    load_with(config, scratch, mode, &[])
}

fn load_with(
    config: &std::path::Path,
    scratch: &Scratch,
    mode: &str,
    extra: &[&str],
) -> (std::process::Output, LoadReport) {
    let report = scratch.path().join(format!("{mode}.json"));
    let _ = std::fs::remove_file(&report);
    let mut args = vec![
        "load",
        "--config",
        config.to_str().expect("utf8"),
        "--mode",
        mode,
        "--no-progress",
        "--report",
        report.to_str().expect("utf8"),
    ];
    args.extend_from_slice(extra);
    let out = ddb2pg(&args);
    // A run that wrote no report has none to show: an empty one.
    let doc = if report.exists() {
        load_report(&report)
    } else {
        LoadReport::default()
    };
    (out, doc)
}

/// The upsert counts of the report's one table.
fn counts(r: &LoadReport) -> UpsertCounts {
    r.tables
        .first()
        .and_then(|t| t.upsert)
        .unwrap_or_else(|| panic!("no upsert counts: {r:?}"))
}

#[test]
fn upsert_converges_on_the_new_source() {
    let db = TestDb::new("upsert");
    let scratch = Scratch::new("upsert");
    let export = scratch.path().join("export");
    let config = scratch.path().join("c.toml");
    write_config(
        &config,
        &db.url,
        &format!(
            "[[tables]]\nname = \"t\"\nprimary_key = [\"id\"]\nsource = {{ export = \"{}\" }}\n[tables.columns]\nid = {{ type = \"integer\" }}\nqty = {{ type = \"integer\" }}\nnote = {{ type = \"text\" }}\n",
            export.display()
        ),
    );
    // Upsert into a table that does not exist yet creates it, keyed, and inserts everything.
    write_export(
        &export,
        &[(0..1000).map(|i| item(i, i, "v1")).collect(), vec![]],
    );
    let (out, rep) = load(&config, &scratch, "upsert");
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(counts(&rep).inserted, 1000, "{rep:?}");

    // New source: 100 changed, 200 new, the rest equal.
    let v2: Vec<String> = (0..1200)
        .map(|i| match i {
            0..=99 => item(i, i + 1, "v2"),
            _ => item(i, i, if i < 1000 { "v1" } else { "v2" }),
        })
        .collect();
    std::fs::remove_dir_all(&export).expect("rm");
    write_export(&export, &[v2[..600].to_vec(), v2[600..].to_vec()]);
    let (out, rep) = load(&config, &scratch, "upsert");
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let u = counts(&rep);
    assert_eq!(
        (u.inserted, u.updated, u.unchanged),
        (200, 100, 900),
        "{rep:?}"
    );
    assert!(String::from_utf8_lossy(&out.stdout)
        .contains("upsert inserted 200, updated 100, unchanged 900"));
    assert_eq!(db.scalar("SELECT count(*) FROM t"), "1200");
    assert_eq!(db.scalar("SELECT count(*) FROM t WHERE note = 'v2'"), "300");
    assert_eq!(
        db.scalar("SELECT sum(qty) FROM t"),
        ((0..1200).sum::<i64>() + 100).to_string()
    );
    // And the new source verifies.
    let out = ddb2pg(&["verify", "--config", config.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));

    // The same load again is a no-op (its run completed)...
    let (out, rep) = load(&config, &scratch, "upsert");
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("nothing to do"),
        "{}",
        describe(&out)
    );
    assert_eq!(rep.tables.len(), 0, "{rep:?}");
    // ...and a new run of it (--fresh) reads everything and changes nothing.
    let (out, rep) = load_with(&config, &scratch, "upsert", &["--fresh"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let u = counts(&rep);
    assert_eq!(
        (u.inserted, u.updated, u.unchanged),
        (0, 0, 1200),
        "{rep:?}"
    );
    assert_eq!(
        db.scalar("SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 't'"),
        "100",
        "no rewrite of equal rows"
    );
}
