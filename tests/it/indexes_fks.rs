//! After the data: `[[tables.indexes]]` are built and `references` become foreign keys,
//! added NOT VALID, validated when every row has its match, and left NOT VALID with the
//! orphans counted and named (exit 3) when not. A replace takes declared foreign keys off
//! the tables it empties and puts them back; an undeclared one stops it before any work.

use crate::common::*;

#[test]
fn the_fixtures_get_their_indexes_and_a_validated_foreign_key() {
    let db = TestDb::new("idx_fixtures");
    let scratch = Scratch::new("idx_fixtures");
    let config = repo().join("pipeline.toml");
    let report = scratch.path().join("r.json");
    for mode in ["create", "replace", "replace"] {
        let out = ddb2pg_at(
            &[
                "load",
                "--config",
                config.to_str().expect("utf8"),
                "--mode",
                mode,
                // The same load again is a no-op unless a new run is asked for.
                "--fresh",
                "--no-progress",
                "--report",
                report.to_str().expect("utf8"),
            ],
            &db.url,
        );
        assert_eq!(out.status.code(), Some(0), "{mode}: {}", describe(&out));
        let r = load_report(&report);
        let fk = &table_of(&r, "orders").foreign_keys[0];
        assert_eq!(fk.orphans, 0, "{mode}");
        assert!(fk.validated, "{mode}");
        assert_eq!(
            db.scalar("SELECT string_agg(conname || ':' || convalidated, ',' ORDER BY conname) FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace WHERE contype = 'f' AND n.nspname <> 'ddb2pg'"),
            "order_items_book_id_fkey:true,order_items_order_id_fkey:true,orders_user_id_fkey:true",
            "{mode}"
        );
    }
    let defs = db.query("SELECT indexname, indexdef FROM pg_indexes WHERE indexname IN ('books_search_idx', 'orders_user_id_created_at_idx') ORDER BY 1");
    assert_eq!(defs.len(), 2, "{defs:?}");
    assert!(
        defs[0][1]
            .as_deref()
            .expect("def")
            .contains("USING gin (to_tsvector('english'"),
        "{defs:?}"
    );
    assert!(
        defs[1][1]
            .as_deref()
            .expect("def")
            .contains("(user_id, created_at)"),
        "{defs:?}"
    );
    // The search index answers what a scan of the table answers.
    let q = "to_tsvector('english', coalesce(title, '') || ' ' || coalesce(description, '')) @@ to_tsquery('english', 'fantasy | science')";
    let with_index = db.scalar(&format!(
        "SET enable_seqscan = off; SELECT count(*) FROM books WHERE {q}"
    ));
    let by_scan = db.scalar(&format!(
        "SELECT count(*) FROM books WHERE lower(coalesce(title, '') || ' ' || coalesce(description, '')) ~ '(fantas|scien)' AND {q}"
    ));
    assert_eq!(with_index, by_scan);
}

const TABLES: &str = r#"
[[tables]]
name = "users"
primary_key = ["id"]
source = { export = "USERS" }
[tables.columns]
id = { from = "userId", type = "text" }

[[tables]]
name = "orders"
primary_key = ["id"]
source = { export = "ORDERS" }
[tables.columns]
id = { from = "orderId", type = "text" }
user_id = { from = "userId", type = "text", references = "users(id)" }

[[tables.indexes]]
columns = ["user_id"]
"#;

#[test]
fn orphans_are_counted_named_and_keep_the_key_not_valid() {
    let db = TestDb::new("idx_orphans");
    let scratch = Scratch::new("idx_orphans");
    let users = scratch.path().join("users");
    let orders = scratch.path().join("orders");
    write_export(
        &users,
        &[vec![
            r#"{"Item":{"userId":{"S":"u1"}}}"#.to_string(),
            r#"{"Item":{"userId":{"S":"u2"}}}"#.to_string(),
        ]],
    );
    write_export(
        &orders,
        &[vec![
            r#"{"Item":{"orderId":{"S":"o1"},"userId":{"S":"u1"}}}"#.to_string(),
            r#"{"Item":{"orderId":{"S":"o2"},"userId":{"S":"u9"}}}"#.to_string(),
            r#"{"Item":{"orderId":{"S":"o3"}}}"#.to_string(),
            r#"{"Item":{"orderId":{"S":"o4"},"userId":{"S":"u2"}}}"#.to_string(),
        ]],
    );
    let config = scratch.path().join("p.toml");
    // Orders first: the foreign key waits for every table of the run.
    let tables = TABLES
        .replace("USERS", &users.display().to_string())
        .replace("ORDERS", &orders.display().to_string());
    let (u, o) = tables.split_at(
        tables
            .find("[[tables]]\nname = \"orders\"")
            .expect("orders"),
    );
    write_config(&config, &db.url, &format!("{o}\n{u}"));
    let report = scratch.path().join("r.json");
    let out = ddb2pg_at(
        &[
            "load",
            "--config",
            config.to_str().expect("utf8"),
            "--no-progress",
            "--report",
            report.to_str().expect("utf8"),
        ],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("orders.user_id: 1 row(s) reference a missing public.users(id)")
            && err.contains("o2 -> u9"),
        "{}",
        describe(&out)
    );
    let r = load_report(&report);
    let fk = &r.tables[0].foreign_keys[0];
    assert_eq!(fk.orphans, 1);
    assert!(!fk.validated);
    assert_eq!(fk.sample[0], "o2 -> u9");
    assert_eq!(
        db.scalar(
            "SELECT convalidated::text FROM pg_constraint WHERE conname = 'orders_user_id_fkey'"
        ),
        "false"
    );
    // Every row is there all the same: the orphan is reported, not dropped.
    assert_eq!(
        db.scalar(
            "SELECT string_agg(id || '=' || coalesce(user_id, '-'), ',' ORDER BY id) FROM orders"
        ),
        "o1=u1,o2=u9,o3=-,o4=u2"
    );

    // The missing user arrives: a re-run validates the key.
    write_export(
        &users,
        &[vec![
            r#"{"Item":{"userId":{"S":"u1"}}}"#.to_string(),
            r#"{"Item":{"userId":{"S":"u2"}}}"#.to_string(),
            r#"{"Item":{"userId":{"S":"u9"}}}"#.to_string(),
        ]],
    );
    let out = ddb2pg_at(
        &[
            "load",
            "--config",
            config.to_str().expect("utf8"),
            "--table",
            "users",
            "--mode",
            "replace",
            "--no-progress",
        ],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(
        db.scalar(
            "SELECT convalidated::text FROM pg_constraint WHERE conname = 'orders_user_id_fkey'"
        ),
        "true"
    );

    // A foreign key the config does not declare stops a replace before any work.
    db.query("CREATE TABLE reviews (id text PRIMARY KEY, user_id text REFERENCES users(id))");
    let out = ddb2pg_at(
        &[
            "load",
            "--config",
            config.to_str().expect("utf8"),
            "--table",
            "users",
            "--mode",
            "replace",
            "--fresh",
            "--no-progress",
        ],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("reviews_user_id_fkey"),
        "{}",
        describe(&out)
    );
    assert_eq!(db.scalar("SELECT count(*) FROM users"), "3");
}

#[test]
fn bad_index_and_reference_declarations_fail_before_any_work() {
    let db = TestDb::new("idx_badcfg");
    let scratch = Scratch::new("idx_badcfg");
    let config = scratch.path().join("p.toml");
    write_config(
        &config,
        &db.url,
        r#"
[[tables]]
name = "t"
primary_key = ["id"]
source = { export = "/nowhere" }
[tables.columns]
id = { type = "text", references = "users(" }
[[tables.indexes]]
columns = ["nope"]
using = "bitmap"
[[tables.indexes]]
"#,
    );
    let out = ddb2pg_at(
        &["load", "--config", config.to_str().expect("utf8")],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    for key in [
        "tables[0].columns.id.references",
        "tables[0].indexes[0].columns[0]",
        "tables[0].indexes[0].using",
        "tables[0].indexes[1]",
    ] {
        assert!(err.contains(key), "{key} not named:\n{err}");
    }
}

/// A table of every kind of declared key and index: a primary key, a `unique` column, a
/// plain, a unique partial, an expression and a gin index (one on a slow function, so a
/// kill can land while it is built).
const KEYED: &str = r#"
[[tables]]
name = "items"
primary_key = ["id"]
source = { export = "EXPORT" }

[tables.columns]
id    = { from = "id", type = "text" }
code  = { from = "code", type = "text", unique = true }
title = { from = "title", type = "text" }
n     = { from = "n", type = "integer" }
parent = { from = "parent", type = "text", references = "items(id)" }   # a self-reference

[[tables.indexes]]
columns = ["n"]

[[tables.indexes]]
name = "items_n_big"
columns = ["n"]
unique = true
where = "n > 1000000"

[[tables.indexes]]
name = "items_slow_len"
expression = "slow_len(title)"

[[tables.indexes]]
name = "items_title_search"
using = "gin"
expression = "to_tsvector('simple', title)"
"#;

fn keyed_lines(rows: usize, salt: &str) -> Vec<String> {
    (0..rows)
        .map(|i| {
            format!(
                r#"{{"Item":{{"id":{{"S":"i{i:04}"}},"code":{{"S":"c{i}-{salt}"}},"title":{{"S":"title {salt} {i}"}},"n":{{"N":"{i}"}}}}}}"#
            )
        })
        .collect()
}

/// The table's indexes and constraints as PostgreSQL describes them.
fn keys_and_indexes(db: &TestDb) -> Vec<Vec<Option<String>>> {
    db.query(
        "SELECT 'index ' || indexname || ': ' || indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = 'items' \
         UNION ALL SELECT 'constraint ' || conname || ': ' || pg_get_constraintdef(c.oid) FROM pg_constraint c \
           JOIN pg_class t ON t.oid = c.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace \
           WHERE n.nspname = 'public' AND t.relname = 'items' ORDER BY 1",
    )
}

fn rows_of(db: &TestDb) -> String {
    db.scalar("SELECT string_agg(id || '|' || code || '|' || title || '|' || n, ',' ORDER BY id) FROM items")
}

fn expected_rows(lines: &[String]) -> String {
    let mut rows: Vec<String> = lines
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            let s = |k: &str| v["Item"][k]["S"].as_str().expect("S").to_string();
            format!(
                "{}|{}|{}|{}",
                s("id"),
                s("code"),
                s("title"),
                v["Item"]["n"]["N"].as_str().expect("N")
            )
        })
        .collect();
    rows.sort();
    rows.join(",")
}

#[test]
fn replace_takes_the_declared_keys_and_indexes_off_and_builds_them_again() {
    let db = TestDb::new("idx_replace");
    let scratch = Scratch::new("idx_replace");
    db.query(
        "CREATE FUNCTION slow_len(t text) RETURNS integer IMMUTABLE LANGUAGE plpgsql AS \
         $$ BEGIN PERFORM pg_sleep(0.01); RETURN length(t); END $$",
    );
    let export = scratch.path().join("items");
    let first = keyed_lines(300, "a");
    write_export(&export, std::slice::from_ref(&first));
    let config = scratch.path().join("p.toml");
    write_config(
        &config,
        &db.url,
        &KEYED.replace("EXPORT", &export.display().to_string()),
    );
    let cfg = config.to_str().expect("utf8");
    let load = |mode: &str, extra: &[&str]| {
        let mut args = vec![
            "load",
            "--config",
            cfg,
            "--mode",
            mode,
            "--fresh",
            "--no-progress",
        ];
        args.extend_from_slice(extra);
        ddb2pg_at(&args, &db.url)
    };
    let out = load("create", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let built = keys_and_indexes(&db);
    assert_eq!(
        built.len(),
        9,
        "pkey, unique, 4 indexes and the three constraints (with the self-reference): {built:?}"
    );
    assert_eq!(rows_of(&db), expected_rows(&first));

    // A replace with other rows (the codes and titles all change): the same keys and
    // indexes after it, the new rows exactly.
    let second = keyed_lines(250, "b");
    write_export(&export, std::slice::from_ref(&second));
    let out = load("replace", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(keys_and_indexes(&db), built);
    assert_eq!(rows_of(&db), expected_rows(&second));

    // Killed while the indexes are built (after the data): the keys are off then — the
    // load ran without them — and a re-run (resuming) builds them, rows exact.
    let third = keyed_lines(320, "c");
    write_export(&export, std::slice::from_ref(&third));
    let mut child = spawn_ddb2pg(
        &[
            "load",
            "--config",
            cfg,
            "--mode",
            "replace",
            "--fresh",
            "--no-progress",
        ],
        &db.url,
    );
    let started = std::time::Instant::now();
    loop {
        let building = db.scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query ILIKE 'CREATE INDEX%slow_len%'",
        );
        if building != "0" {
            break;
        }
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "the load ended before its index build was seen"
        );
        assert!(
            started.elapsed().as_secs() < 60,
            "no index build seen in 60 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.kill().expect("kill -9");
    let _ = child.wait();
    // The dead load's backend finishes its statement before it notices; then its
    // transaction (keys and indexes) rolls back.
    while db.scalar("SELECT count(*) FROM pg_stat_activity WHERE query ILIKE 'CREATE INDEX%slow_len%' AND pid <> pg_backend_pid()") != "0" {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(
        db.scalar(
            "SELECT count(*) FROM pg_indexes WHERE schemaname = 'public' AND tablename = 'items'"
        ),
        "0",
        "the replace loads into the table without its keys and indexes"
    );
    assert_eq!(db.scalar("SELECT count(*) FROM items"), "320");
    let out = ddb2pg_at(
        &[
            "load",
            "--config",
            cfg,
            "--mode",
            "replace",
            "--no-progress",
        ],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("resumed run"),
        "{}",
        describe(&out)
    );
    assert_eq!(keys_and_indexes(&db), built);
    assert_eq!(rows_of(&db), expected_rows(&third));

    // An index and a constraint the config does not declare stop a replace before any
    // work (exit 2, both named, nothing changed) ...
    db.query("CREATE INDEX items_extra ON items (title, n)");
    db.query("ALTER TABLE items ADD CONSTRAINT items_extra_uq UNIQUE (code, n)");
    let with_extra = keys_and_indexes(&db);
    write_export(&export, std::slice::from_ref(&first));
    let out = load("replace", &[]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("index items_extra")
            && err.contains("unique constraint items_extra_uq")
            && err.contains("--keep-undeclared"),
        "{}",
        describe(&out)
    );
    assert_eq!(rows_of(&db), expected_rows(&third));
    assert_eq!(keys_and_indexes(&db), with_extra);
    // ... and with --keep-undeclared it loads around them: they stay, the declared ones
    // are built again.
    let out = load("replace", &["--keep-undeclared"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(keys_and_indexes(&db), with_extra);
    assert_eq!(rows_of(&db), expected_rows(&first));
}
