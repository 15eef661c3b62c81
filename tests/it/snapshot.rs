//! Snapshots (ARCHITECTURE §4 `snapshot`, §11 `source = { parquet = … }`): the mapped rows
//! of each table written once as Parquet, loaded from it as often as needed. The tests:
//! - export → snapshot → load equals export → load, row by row, for the CloudShelf tables
//!   (with the child table `order_items`) and a table of every column type; the rejects
//!   are the load's, and `verify` of the snapshot's tables against the export passes;
//! - a Parquet file changed after the snapshot (same size, one byte) is refused by its
//!   checksum, one cut short by its size (before anything is created), and once put
//!   back the same command resumes to the export's rows;
//! - `kill -9` at random during `snapshot`, then during a load from it: the re-runs end
//!   with exactly the export's rows;
//! - DuckDB reads the snapshot: its counts, and sums of numeric columns, match the load.

use std::path::{Path, PathBuf};

use crate::common::*;
use crate::types_and_rejects::{full_item, reject_lines, COLUMNS};

/// The bundled mapping with its export sources in `data` and the target `url`.
fn export_config(path: &Path, url: &str, data: &Path, extra: &str) {
    let text = std::fs::read_to_string(repo().join("pipeline.toml")).expect("pipeline.toml");
    let text = text
        .replace(
            "export = \"fixtures/cloudshelf/",
            &format!("export = \"{}/", data.display()),
        )
        .replace(
            "url = \"postgresql://postgres@127.0.0.1:5432/cloudshelf\"",
            &format!("url = \"{url}\""),
        );
    std::fs::write(path, format!("{text}\n{extra}")).expect("config");
}

/// The same mapping, each table read from the snapshot in `snap` (its child tables are
/// detached from their parent by the parquet source: their rows are in their own folder).
fn snapshot_config(export_cfg: &Path, path: &Path, snap: &Path) {
    let text = std::fs::read_to_string(export_cfg).expect("config");
    let mut out = String::new();
    for line in text.lines() {
        match line.find("source = { export = \"") {
            Some(at) => {
                let rest = &line[at + "source = { export = \"".len()..];
                let dir = &rest[..rest.find('"').expect("quote")];
                let name = Path::new(dir).file_name().expect("name").to_string_lossy();
                out.push_str(&format!(
                    "source = {{ parquet = \"{}\" }}\n",
                    snap.join(name.as_ref()).display()
                ));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    std::fs::write(path, out).expect("config");
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf8")
}

/// Every row of `schema_a.table` is in `schema_b.table` as often, and the other way round
/// (rows compared as PostgreSQL prints them, so json columns compare too); returns the count.
fn assert_same_rows(db: &TestDb, a: &str, b: &str, table: &str) -> i64 {
    let n: i64 = db
        .scalar(&format!("SELECT count(*) FROM {a}.{table}"))
        .parse()
        .expect("n");
    assert_eq!(
        db.scalar(&format!("SELECT count(*) FROM {b}.{table}")),
        n.to_string(),
        "{table}: {a} and {b}"
    );
    for (x, y) in [(a, b), (b, a)] {
        assert_eq!(
            db.scalar(&format!(
                "SELECT count(*) FROM (SELECT t::text FROM {x}.{table} t EXCEPT ALL SELECT t::text FROM {y}.{table} t) d"
            )),
            "0",
            "{table}: rows of {x} not in {y}"
        );
    }
    n
}

/// The CloudShelf fixtures (small) and a table of every column type with its reject lines.
fn sources(scratch: &Scratch, scale: &str) -> (PathBuf, String) {
    let data = scratch.path().join("data");
    let out = ddb2pg(&[
        "fixtures",
        "generate",
        "--out",
        s(&data),
        "--scale",
        scale,
        "--seed",
        "11",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let types = data.join("every_type");
    let mut lines = vec![
        full_item(),
        r#"{"Item":{"id":{"S":"nulls"},"req":{"S":""},"t":{"NULL":true}}}"#.to_string(),
    ];
    lines.extend(reject_lines().into_iter().map(|r| r.0));
    let second = lines.split_off(6);
    write_export(&types, &[lines, vec![], second]);
    let extra = format!(
        "[[tables]]\nname = \"every_type\"\nprimary_key = [\"id\"]\nsource = {{ export = \"{}\" }}\n{COLUMNS}",
        types.display()
    );
    (data, extra)
}

#[test]
fn export_snapshot_load_equals_export_load_for_every_table_and_type() {
    let scratch = Scratch::new("snap_equal");
    let db = TestDb::new("snap_equal");
    let (data, extra) = sources(&scratch, "3000");
    let cfg = scratch.path().join("export.toml");
    export_config(&cfg, &db.url, &data, &extra);
    let snap = scratch.path().join("snap");
    let report = scratch.path().join("snapshot.json");
    let rejects = scratch.path().join("snapshot-rejects.jsonl");
    let out = ddb2pg(&[
        "snapshot",
        "--config",
        s(&cfg),
        "--out",
        s(&snap),
        "--rejects",
        s(&rejects),
        "--report",
        s(&report),
    ]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "exit 3: written, with rejects\n{}",
        describe(&out)
    );
    let r: serde_json::Value = read_report(&report);
    let want_rejects = reject_lines().len() as u64;
    let every = r["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .find(|t| t["table"] == "every_type")
        .expect("every_type");
    assert_eq!(every["rejected"], want_rejects, "{r}");
    assert_eq!(every["rows"], 2, "{r}");
    let reject_text = std::fs::read_to_string(&rejects).expect("rejects");
    assert_eq!(reject_text.lines().count() as u64, want_rejects);
    // Every table has its manifest and Parquet files, and nothing half-written is left.
    for t in ["books", "users", "orders", "order_items", "every_type"] {
        let m: serde_json::Value = read_report(&snap.join(t).join("manifest.json"));
        let files = m["files"].as_array().expect("files");
        assert!(!files.is_empty(), "{t}: {m}");
        for f in files {
            let p = snap.join(t).join(f["path"].as_str().expect("path"));
            assert_eq!(
                std::fs::metadata(&p).expect("file").len(),
                f["bytes"].as_u64().expect("bytes"),
                "{}",
                p.display()
            );
        }
        let stray: Vec<_> = std::fs::read_dir(snap.join(t))
            .expect("dir")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(stray.is_empty(), "{t}: {stray:?}");
    }

    let snap_cfg = scratch.path().join("snap.toml");
    snapshot_config(&cfg, &snap_cfg, &snap);
    db.query("CREATE SCHEMA e; CREATE SCHEMA p");
    let load_rejects = scratch.path().join("load-rejects.jsonl");
    let out = ddb2pg_at(
        &[
            "load",
            "--config",
            s(&cfg),
            "--schema",
            "e",
            "--no-progress",
            "--rejects",
            s(&load_rejects),
        ],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    // The snapshot's rejects are the load's: the same records, each with its file, line,
    // key, attribute, reason and item.
    let records = |p: &Path| {
        let mut v: Vec<String> = std::fs::read_to_string(p)
            .expect("rejects")
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .expect("json")
                    .to_string()
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(records(&rejects), records(&load_rejects));
    let load_report_path = scratch.path().join("load.json");
    let out = ddb2pg_at(
        &[
            "load",
            "--config",
            s(&snap_cfg),
            "--schema",
            "p",
            "--no-progress",
            "--report",
            s(&load_report_path),
        ],
        &db.url,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "the snapshot holds no reject\n{}",
        describe(&out)
    );
    let lr = load_report(&load_report_path);
    for t in ["books", "users", "orders", "order_items", "every_type"] {
        let n = assert_same_rows(&db, "e", "p", t);
        assert!(n > 0, "{t}");
        assert_eq!(table_of(&lr, t).rows_written, n as u64, "{t}");
    }
    assert_eq!(db.scalar("SELECT count(*) FROM p.every_type"), "2");
    // The foreign keys were built on the snapshot's tables, and the lines are their orders'.
    assert!(assert_order_items_match_orders(&db, "p") > 0);
    // verify: the snapshot's tables against the snapshot, and against the export itself.
    for c in [&snap_cfg, &cfg] {
        let out = ddb2pg_at(&["verify", "--config", s(c), "--schema", "p"], &db.url);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {}",
            c.display(),
            describe(&out)
        );
    }
    // The same snapshot again: complete already, nothing read.
    let out = ddb2pg(&[
        "snapshot",
        "--config",
        s(&cfg),
        "--out",
        s(&snap),
        "--rejects",
        s(&rejects),
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("complete already"),
        "{}",
        describe(&out)
    );
}

#[test]
fn a_changed_or_cut_parquet_file_is_refused_and_once_put_back_the_load_resumes_exactly() {
    let scratch = Scratch::new("snap_tamper");
    let db = TestDb::new("snap_tamper");
    let (data, _) = sources(&scratch, "2000");
    let cfg = scratch.path().join("export.toml");
    export_config(&cfg, &db.url, &data, "");
    let snap = scratch.path().join("snap");
    let out = ddb2pg(&["snapshot", "--config", s(&cfg), "--out", s(&snap)]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let snap_cfg = scratch.path().join("snap.toml");
    snapshot_config(&cfg, &snap_cfg, &snap);
    let m: serde_json::Value = read_report(&snap.join("users/manifest.json"));
    let biggest = m["files"]
        .as_array()
        .expect("files")
        .iter()
        .max_by_key(|f| f["bytes"].as_u64())
        .expect("a file")
        .clone();
    let name = biggest["path"].as_str().expect("path").to_string();
    let file = snap.join("users").join(&name);
    let original = std::fs::read(&file).expect("read");
    let load = [
        "load",
        "--config",
        s(&snap_cfg),
        "--table",
        "users",
        "--no-progress",
    ];

    // Cut short: its size refuses it before anything is read.
    std::fs::write(&file, &original[..original.len() - 10]).expect("write");
    let out = ddb2pg_at(&load, &db.url);
    let text = describe(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains(&name), "names the file: {text}");
    assert!(
        db.try_execute("SELECT 1 FROM public.users").is_err(),
        "nothing created: {text}"
    );

    // One byte changed, the size the same: the checksum refuses it, and none of its rows
    // load (the other files' may: they are splits of their own, and resume).
    let mut changed = original.clone();
    let at = changed.len() / 2;
    changed[at] ^= 0x5a;
    std::fs::write(&file, &changed).expect("write");
    let out = ddb2pg_at(&load, &db.url);
    let text = describe(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&name) && text.contains("SHA-256"),
        "names the file and its checksum: {text}"
    );
    let total = m["rows"].as_i64().expect("rows");
    let in_file = biggest["rows"].as_i64().expect("rows");
    if db.try_execute("SELECT 1 FROM public.users LIMIT 1").is_ok() {
        let n: i64 = db
            .scalar("SELECT count(*) FROM public.users")
            .parse()
            .expect("n");
        assert!(n <= total - in_file, "{n} rows: some of the changed file's");
    }

    // Put back: the same command resumes, and the table is the export's, row by row.
    std::fs::write(&file, &original).expect("write");
    let out = ddb2pg_at(&load, &db.url);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    db.query("CREATE SCHEMA e");
    let out = ddb2pg_at(
        &[
            "load",
            "--config",
            s(&cfg),
            "--table",
            "users",
            "--schema",
            "e",
            "--no-progress",
        ],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(assert_same_rows(&db, "e", "public", "users"), total);
}

/// `cmd` started and killed (SIGKILL) after a random delay within 30 ms + `spread`, up to
/// four times; returns the kills.
fn kill_at_random(args: &[&str], url: &str, test: &str, spread: u64) -> usize {
    let mut seed = test_seed(test) | 1;
    let mut kills = 0;
    for round in 0..4 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = std::time::Duration::from_millis(30 + seed % spread);
        let mut child = spawn_ddb2pg(args, url);
        std::thread::sleep(delay);
        if child.try_wait().expect("try_wait").is_some() {
            let out = child.wait_with_output().expect("wait");
            assert!(
                matches!(out.status.code(), Some(0 | 3)),
                "{}",
                describe(&out)
            );
            break;
        }
        child.kill().expect("kill -9");
        let _ = child.wait();
        kills += 1;
        eprintln!("{} round {round}: killed after {delay:?}", args[0]);
    }
    kills
}

#[test]
fn kill_9_during_snapshot_and_during_a_load_from_it_then_rerun_is_exact() {
    let scratch = Scratch::new("snap_kill");
    let db = TestDb::new("snap_kill");
    let (data, _) = sources(&scratch, "200000");
    let cfg = scratch.path().join("export.toml");
    export_config(&cfg, &db.url, &data, "");
    let snap = scratch.path().join("snap");
    let args = ["snapshot", "--config", s(&cfg), "--out", s(&snap)];
    // The snapshot of these rows takes about 0.8 s here: the first kill lands within it.
    let kills = kill_at_random(&args, &db.url, "snap_kill_snapshot", 500);
    assert!(kills > 0, "the snapshot ended before a kill");
    let out = ddb2pg_at(&args, &db.url);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    eprintln!(
        "snapshot: {kills} kill(s), then: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    let snap_cfg = scratch.path().join("snap.toml");
    snapshot_config(&cfg, &snap_cfg, &snap);
    let kills = kill_loads_at_random(s(&snap_cfg), &db.url, "snap_kill_load", 800, |_| {});
    let out = ddb2pg_at(
        &["load", "--config", s(&snap_cfg), "--no-progress"],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    eprintln!("load from the snapshot: {kills} kill(s)");

    db.query("CREATE SCHEMA e");
    let out = ddb2pg_at(
        &[
            "load",
            "--config",
            s(&cfg),
            "--schema",
            "e",
            "--no-progress",
        ],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    for t in ["books", "users", "orders", "order_items"] {
        let n = assert_same_rows(&db, "e", "public", t);
        assert!(n > 0, "{t}");
        let m: serde_json::Value = read_report(&snap.join(t).join("manifest.json"));
        assert_eq!(m["rows"], n, "{t}: the manifest");
    }
}

/// The test virtualenv's Python (scripts/emulators.sh installs DuckDB into it).
fn duckdb_python() -> Option<PathBuf> {
    let py = repo().join(".emulators/venv/bin/python");
    let ok = std::process::Command::new(&py)
        .args(["-c", "import duckdb"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(py);
    }
    assert!(
        std::env::var_os("DDB2PG_REQUIRE_EMULATORS").is_none(),
        "DuckDB is not in {} (bash scripts/emulators.sh install)",
        py.display()
    );
    eprintln!(
        "SKIP: DuckDB is not in {} (bash scripts/emulators.sh install)",
        py.display()
    );
    None
}

#[test]
fn duckdb_reads_a_snapshot_and_its_counts_and_sums_match_the_load() {
    let Some(python) = duckdb_python() else {
        return;
    };
    let scratch = Scratch::new("snap_duckdb");
    let db = TestDb::new("snap_duckdb");
    let (data, extra) = sources(&scratch, "3000");
    let cfg = scratch.path().join("export.toml");
    export_config(&cfg, &db.url, &data, &extra);
    let snap = scratch.path().join("snap");
    let out = ddb2pg(&["snapshot", "--config", s(&cfg), "--out", s(&snap)]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let snap_cfg = scratch.path().join("snap.toml");
    snapshot_config(&cfg, &snap_cfg, &snap);
    let out = ddb2pg_at(
        &["load", "--config", s(&snap_cfg), "--no-progress"],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));

    let queries = [
        ("SELECT count(*) FROM {books}", "SELECT count(*) FROM books"),
        ("SELECT count(*) FROM {users}", "SELECT count(*) FROM users"),
        (
            "SELECT count(*), sum(total), max(epoch_us(created_at)) FROM {orders}",
            "SELECT count(*), sum(total), (extract(epoch FROM max(created_at)) * 1000000)::bigint FROM orders",
        ),
        (
            "SELECT count(*), sum(quantity * unit_price), count(DISTINCT order_id) FROM {order_items}",
            "SELECT count(*), sum(quantity * unit_price), count(DISTINCT order_id) FROM order_items",
        ),
        (
            "SELECT n102, i8, length(t), d FROM {every_type} WHERE id = 'full'",
            "SELECT n102, i8, length(t), d FROM every_type WHERE id = 'full'",
        ),
    ];
    let mut script = String::from("import duckdb, sys\ncon = duckdb.connect()\n");
    for (q, _) in &queries {
        let mut q = q.to_string();
        for t in ["books", "users", "orders", "order_items", "every_type"] {
            q = q.replace(
                &format!("{{{t}}}"),
                &format!("read_parquet('{}/*.parquet')", snap.join(t).display()),
            );
        }
        script.push_str(&format!(
            "print('|'.join('' if v is None else str(v) for v in con.execute({q:?}).fetchone()))\n"
        ));
    }
    let out = std::process::Command::new(&python)
        .args(["-c", &script])
        .output()
        .expect("python");
    assert!(out.status.success(), "{}", describe(&out));
    let got = String::from_utf8_lossy(&out.stdout).to_string();
    let got: Vec<&str> = got.lines().collect();
    assert_eq!(got.len(), queries.len(), "{got:?}");
    for ((_, pg), duck) in queries.iter().zip(&got) {
        let row = db.query(&format!("SET TimeZone = 'UTC'; {pg}"));
        let want: Vec<String> = row[0]
            .iter()
            .map(|v| v.clone().unwrap_or_default())
            .collect();
        assert_eq!(*duck, want.join("|"), "{pg}");
    }
}
