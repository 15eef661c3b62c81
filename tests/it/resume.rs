//! Exactly-once, resumable loads against the real PostgreSQL with real processes:
//! `kill -9` at random points then a re-run, a COPY backend terminated mid-load, and three
//! workers sharing one load. After every stop the table holds exactly the rows of the
//! committed checkpoints (no duplicate, no hole); at the end it equals the source row by
//! row and value by value.

use std::path::{Path, PathBuf};
use std::process::{Child, Output};
use std::time::{Duration, Instant};

use crate::common::*;

/// `pipeline.toml`'s books, users and orders pointed at `data`, with extra `[tuning]`.
fn write_cloudshelf_config(path: &Path, url: &str, data: &Path, tuning: &str) {
    let text = std::fs::read_to_string(repo().join("pipeline.toml")).expect("pipeline.toml");
    let tables = &text[text.find("[[tables]]").expect("tables")..];
    let tables = tables.replace("fixtures/cloudshelf/", &format!("{}/", data.display()));
    std::fs::write(
        path,
        format!("[target]\nurl = \"{url}\"\n\n[tuning]\n{tuning}\n\n{tables}"),
    )
    .expect("config");
}

fn spawn_load(config: &Path, url: &str, extra: &[&str]) -> Child {
    let config = config.to_str().expect("utf-8 path");
    let args: Vec<&str> = ["load", "--no-progress", "--config", config]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    spawn_ddb2pg(&args, url)
}

fn load(config: &Path, url: &str, extra: &[&str]) -> Output {
    spawn_load(config, url, extra)
        .wait_with_output()
        .expect("wait")
}

fn export_dir(spec: &ddb2pg::config::TableSpec) -> PathBuf {
    match &spec.source {
        ddb2pg::config::Source::Export { path: Some(p), .. } => p.clone(),
        other => panic!("not a folder export: {other:?}"),
    }
}

/// The invariant after any stop: each table holds exactly the rows its committed
/// checkpoints account for, and no key twice.
fn assert_rows_match_checkpoints(db: &TestDb, tables: &[&str], when: &str) {
    if db.scalar("SELECT to_regclass('ddb2pg.splits') IS NOT NULL") != "t" {
        // Killed before the first run was recorded: nothing may be there.
        for t in tables {
            assert_eq!(
                db.scalar(&format!("SELECT to_regclass('public.{t}') IS NULL")),
                "t",
                "{when}: {t} exists without a run"
            );
        }
        return;
    }
    for t in tables {
        if db.scalar(&format!("SELECT to_regclass('public.{t}') IS NOT NULL")) != "t" {
            let recorded = db.scalar(&format!(
                "SELECT coalesce(sum(s.rows_done), 0) FROM ddb2pg.splits s JOIN ddb2pg.runs r ON r.id = s.run_id \
                 WHERE r.state = 'running' AND s.target_table = '{t}'"
            ));
            assert_eq!(
                recorded, "0",
                "{when}: {t} is missing, checkpoints say {recorded} rows"
            );
            continue;
        }
        // One statement, one snapshot: a killed process's last COMMIT may still be landing.
        let row = db.query(&format!(
            "SELECT count(*), count(DISTINCT id), (SELECT coalesce(sum(s.rows_done), 0) FROM ddb2pg.splits s \
               JOIN ddb2pg.runs r ON r.id = s.run_id WHERE r.state = 'running' AND s.target_table = '{t}'), \
               (SELECT count(*) FROM ddb2pg.runs WHERE state = 'done') FROM public.{t}"
        ));
        let [count, distinct, recorded, done] =
            [0, 1, 2, 3].map(|i| row[0][i].clone().expect("value"));
        assert_eq!(count, distinct, "{when}: duplicate keys in {t}");
        if done == "0" {
            assert_eq!(
                count, recorded,
                "{when}: {t} holds {count} rows, its committed checkpoints {recorded}"
            );
        }
    }
}

/// A small deterministic generator for the kill delays (the seed is printed).
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[test]
fn kill_9_at_random_points_then_resume_gives_the_exact_tables() {
    let db = TestDb::new("resume_kill");
    let scratch = Scratch::new("resume_kill");
    let data = scratch.path().join("data");
    ddb2pg::fixtures::generate(&data, 120_000, 11).expect("fixtures");
    let config = scratch.path().join("c.toml");
    // Small chunks: many checkpoints, so kills land between, during and after commits.
    write_cloudshelf_config(
        &config,
        &db.url,
        &data,
        "connections = 2\nchunk_bytes = 1048576",
    );
    // Xorshift needs a non-zero state.
    let mut seed = test_seed("kill_9_at_random_points") | 1;
    let tables = ["books", "users", "orders"];
    let mut kills = 0;
    for round in 0..5 {
        let mut child = spawn_load(&config, &db.url, &["--log-level", "warn"]);
        let delay = Duration::from_millis(150 + next(&mut seed) % 1500);
        std::thread::sleep(delay);
        let finished = child.try_wait().expect("try_wait").is_some();
        if !finished {
            child.kill().expect("kill -9");
            kills += 1;
        }
        let out = child.wait_with_output().expect("wait");
        eprintln!(
            "round {round}: killed after {delay:?}: {}",
            if finished {
                "no (it had finished)"
            } else {
                "yes"
            }
        );
        if finished {
            assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
            break;
        }
        assert_rows_match_checkpoints(&db, &tables, &format!("after kill {round}"));
    }
    assert!(kills >= 1, "no load was killed: the data set is too small");
    let out = load(
        &config,
        &db.url,
        &[
            "--report",
            scratch.path().join("r.json").to_str().expect("utf8"),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("resumed run") || stdout.contains("nothing to do"),
        "{}",
        describe(&out)
    );
    let parsed = config_with_url(&config, &db.url);
    for spec in &parsed.tables {
        let n = assert_table_matches_export(&db, "public", spec, &export_dir(spec));
        assert!(n > 0);
    }
    assert!(assert_order_items_match_orders(&db, "public") > 0);
    // Keys, indexes and the foreign key are there, validated.
    assert_eq!(
        db.scalar(
            "SELECT count(*) FROM pg_constraint WHERE conname IN ('books_pkey', 'users_pkey', 'orders_pkey', 'orders_user_id_fkey') AND convalidated"
        ),
        "4"
    );
    assert_eq!(
        db.scalar("SELECT count(*) FROM pg_indexes WHERE indexname IN ('books_search_idx', 'orders_user_id_created_at_idx')"),
        "2"
    );
    // Every split done, each line range committed once (no overlap between chunks).
    assert_eq!(
        db.scalar("SELECT count(*) FROM ddb2pg.splits s JOIN ddb2pg.runs r ON r.id = s.run_id WHERE r.state = 'done' AND s.state <> 'done'"),
        "0"
    );
    assert_eq!(
        db.scalar(
            "SELECT count(*) FROM ddb2pg.chunks a JOIN ddb2pg.chunks b ON a.run_id = b.run_id AND a.target_table = b.target_table \
             AND a.split = b.split AND a.ctid < b.ctid AND a.first_line <= b.last_line AND b.first_line <= a.last_line"
        ),
        "0",
        "overlapping checkpoints"
    );
    // The same load again: nothing to do, nothing changed.
    let before = db.scalar("SELECT count(*) FROM orders");
    let again = load(&config, &db.url, &[]);
    assert_eq!(again.status.code(), Some(0), "{}", describe(&again));
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to do"));
    assert_eq!(db.scalar("SELECT count(*) FROM orders"), before);
    // status shows the finished run.
    let status = ddb2pg_at(
        &["status", "--config", config.to_str().expect("utf8")],
        &db.url,
    );
    assert_eq!(status.status.code(), Some(0), "{}", describe(&status));
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains(": done,"), "{text}");
    assert!(text.contains("orders"), "{text}");
}

#[test]
fn a_terminated_copy_backend_is_retried_to_the_exact_table() {
    let db = TestDb::new("resume_term");
    let scratch = Scratch::new("resume_term");
    let data = scratch.path().join("data");
    ddb2pg::fixtures::generate(&data, 150_000, 12).expect("fixtures");
    let config = scratch.path().join("c.toml");
    write_cloudshelf_config(
        &config,
        &db.url,
        &data,
        "connections = 2\nchunk_bytes = 4194304",
    );
    let report = scratch.path().join("r.json");
    let child = spawn_load(
        &config,
        &db.url,
        &[
            "--table",
            "orders",
            "--table",
            "users",
            "--report",
            report.to_str().expect("utf8"),
        ],
    );
    // Terminate every COPY backend of this database once orders are streaming.
    let started = Instant::now();
    let mut terminated = 0;
    while terminated == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no COPY into orders within 60 s"
        );
        terminated = db
            .scalar(&format!(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{}' AND query LIKE 'COPY%orders%FROM STDIN%'",
                db.name
            ))
            .parse::<u32>()
            .expect("count");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let r = load_report(&report);
    let orders = table_of(&r, "orders");
    assert!(
        orders.pg_retries >= 1,
        "no retry recorded after terminating {terminated} backend(s): {orders:?}"
    );
    let parsed = config_with_url(&config, &db.url);
    for spec in parsed.tables.iter().filter(|t| t.name != "books") {
        assert_table_matches_export(&db, "public", spec, &export_dir(spec));
    }
    assert!(String::from_utf8_lossy(&out.stdout).contains("retried on a new connection"));
}

#[test]
fn three_workers_share_one_load_each_split_once() {
    let db = TestDb::new("resume_workers");
    let scratch = Scratch::new("resume_workers");
    let data = scratch.path().join("data");
    ddb2pg::fixtures::generate(&data, 100_000, 13).expect("fixtures");
    let config = scratch.path().join("c.toml");
    write_cloudshelf_config(
        &config,
        &db.url,
        &data,
        "connections = 1\nchunk_bytes = 2097152",
    );
    let reports: Vec<PathBuf> = (0..3)
        .map(|i| scratch.path().join(format!("w{i}.json")))
        .collect();
    let children: Vec<Child> = reports
        .iter()
        .map(|r| spawn_load(&config, &db.url, &["--report", r.to_str().expect("utf8")]))
        .collect();
    let outs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().expect("wait"))
        .collect();
    for o in &outs {
        assert_eq!(o.status.code(), Some(0), "{}", describe(o));
    }
    // One run, every split claimed exactly once, and the splits read add up across workers.
    assert_eq!(db.scalar("SELECT count(*) FROM ddb2pg.runs"), "1");
    assert_eq!(db.scalar("SELECT max(claims) FROM ddb2pg.splits"), "1");
    assert_eq!(db.scalar("SELECT min(claims) FROM ddb2pg.splits"), "1");
    let total_splits: u64 = db
        .scalar("SELECT count(*) FROM ddb2pg.splits")
        .parse()
        .expect("n");
    let mut loaded = 0u64;
    let mut rows = 0u64;
    let mut workers_with_work = 0;
    let mut planners = 0;
    for r in &reports {
        let v = load_report(r);
        // One worker records the run; the others join it (or find it done).
        if !v.resumed && v.already_done.is_none() {
            planners += 1;
        }
        let mine: u64 = v.tables.iter().map(|t| t.splits_loaded as u64).sum();
        if mine > 0 {
            workers_with_work += 1;
        }
        loaded += mine;
        rows += v.tables.iter().map(|t| t.rows_written).sum::<u64>();
    }
    assert_eq!(loaded, total_splits, "splits read across the workers");
    assert!(workers_with_work >= 2, "the work was not shared");
    assert_eq!(
        planners, 1,
        "one worker records the run, the others join it"
    );
    let parsed = config_with_url(&config, &db.url);
    let mut expected = 0u64;
    for spec in &parsed.tables {
        expected += assert_table_matches_export(&db, "public", spec, &export_dir(spec)) as u64;
    }
    expected += assert_order_items_match_orders(&db, "public") as u64;
    assert_eq!(rows, expected, "rows committed across the workers");
    assert_eq!(
        db.scalar("SELECT count(*) FROM pg_constraint WHERE conname = 'orders_user_id_fkey' AND convalidated"),
        "1"
    );
}
