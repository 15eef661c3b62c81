//! `ddb2pg check` on the loaded fixtures: the shipped CloudShelf checks meet their targets
//! with the right parameters (each book id finds its one row, through its index), a target
//! set impossibly low is exit 4 naming the check, a sequential scan of a big table is
//! called out, and a check whose SQL does not prepare is exit 2 before any query runs.

use ddb2pg::check::CheckReport;

use crate::common::*;

fn check_config(path: &std::path::Path, url: &str, checks: &str) {
    let shipped = std::fs::read_to_string(repo().join("pipeline.toml")).expect("pipeline.toml");
    let tables = &shipped
        [shipped.find("[[tables]]").expect("tables")..shipped.find("[[checks]]").expect("checks")];
    let tables = tables.replace("\"fixtures/", &format!("\"{}/fixtures/", repo().display()));
    write_config(path, url, &format!("{tables}\n{checks}"));
}

#[test]
fn the_shipped_checks_run_on_the_loaded_fixtures_and_targets_are_enforced() {
    let db = TestDb::new("check");
    let scratch = Scratch::new("check");
    let config = repo().join("pipeline.toml");
    let out = ddb2pg_at(
        &[
            "load",
            "--config",
            config.to_str().expect("utf8"),
            "--no-progress",
        ],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    db.query("ANALYZE");

    let report_path = scratch.path().join("check.json");
    let out = ddb2pg_at(
        &[
            "check",
            "--config",
            config.to_str().expect("utf8"),
            "--clients",
            "3",
            "--runs",
            "60",
            "--report",
            report_path.to_str().expect("utf8"),
        ],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let r: CheckReport = read_report(&report_path);
    assert_eq!(r.clients, 3);
    let names: Vec<&str> = r.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        ["get a book by id", "search books", "a user's orders"]
    );
    let books: usize = db
        .scalar("SELECT count(*) FROM books")
        .parse()
        .expect("count");
    let by_id = &r.checks[0];
    assert_eq!(by_id.runs, 60);
    assert_eq!(by_id.param_rows, books.min(500));
    // Every drawn id (uuid, sent as text) finds exactly its book.
    assert_eq!(by_id.rows_returned_mean, 1.0, "{by_id:?}");
    assert_eq!(by_id.indexes, ["books_pkey"], "{by_id:?}");
    assert_eq!(by_id.met, Some(true));
    assert!(
        by_id.p50_ms <= by_id.p95_ms
            && by_id.p95_ms <= by_id.p99_ms
            && by_id.p99_ms <= by_id.max_ms
    );
    let orders = &r.checks[2];
    assert!(
        orders.rows_returned_mean >= 1.0,
        "each drawn user has an order: {orders:?}"
    );
    assert_eq!(
        orders.indexes,
        ["orders_user_id_created_at_idx"],
        "{orders:?}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("get a book by id") && stdout.contains("met"),
        "{stdout}"
    );

    // A target no query can meet: exit 4, named.
    let low = scratch.path().join("low.toml");
    check_config(
        &low,
        &db.url,
        r#"
[[checks]]
name = "book by id, impossibly fast"
sql = "SELECT * FROM books WHERE id = $1"
params = "SELECT id FROM books LIMIT 50"
p95_ms = 0.000001
runs = 20

[[checks]]
name = "a big table without an index"
sql = "SELECT count(*) FROM big WHERE v = $1"
params = "SELECT 7"
runs = 5
"#,
    );
    db.query("CREATE TABLE big AS SELECT g AS v FROM generate_series(1, 50000) g; ANALYZE big");
    let report_path = scratch.path().join("low.json");
    let out = ddb2pg_at(
        &[
            "check",
            "--config",
            low.to_str().expect("utf8"),
            "--report",
            report_path.to_str().expect("utf8"),
        ],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(4), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("check `book by id, impossibly fast` missed its target"),
        "{}",
        describe(&out)
    );
    let r: CheckReport = read_report(&report_path);
    assert_eq!(r.checks[0].met, Some(false));
    assert_eq!(r.checks[1].met, None, "no target: measured only");
    assert_eq!(r.checks[1].rows_returned_mean, 1.0);
    assert!(
        r.checks[1].big_seq_scans.len() == 1 && r.checks[1].big_seq_scans[0].starts_with("big ("),
        "{:?}",
        r.checks[1]
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("by sequential scan"),
        "{}",
        describe(&out)
    );

    // A check whose SQL does not prepare: exit 2 before any query runs (the valid check
    // before it did not run: the books' index scans did not move).
    let bad = scratch.path().join("bad.toml");
    check_config(
        &bad,
        &db.url,
        r#"
[[checks]]
name = "book by id"
sql = "SELECT * FROM books WHERE id = $1"
params = "SELECT id FROM books LIMIT 50"

[[checks]]
name = "broken"
sql = "SELECT * FROM no_such_table WHERE id = $1"
params = "SELECT id FROM books LIMIT 5"
"#,
    );
    let scans = || db.scalar("SELECT idx_scan FROM pg_stat_user_tables WHERE relname = 'books'");
    // The earlier checks' backends flush their statistics as they exit.
    while db.scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()") != "0" {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let before = scans();
    let out = ddb2pg_at(&["check", "--config", bad.to_str().expect("utf8")], &db.url);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("check `broken`") && err.contains("no_such_table"),
        "{}",
        describe(&out)
    );
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(scans(), before, "no check ran");

    // Parameters that do not match: exit 2 too.
    check_config(
        &bad,
        &db.url,
        r#"
[[checks]]
name = "two parameters, one given"
sql = "SELECT * FROM books WHERE id = $1 AND price > $2"
params = "SELECT id FROM books LIMIT 5"
"#,
    );
    let out = ddb2pg_at(&["check", "--config", bad.to_str().expect("utf8")], &db.url);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("takes 2 parameter(s)"),
        "{}",
        describe(&out)
    );
}
