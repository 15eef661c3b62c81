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
            db.scalar("SELECT string_agg(conname || ':' || convalidated, ',') FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace WHERE contype = 'f' AND n.nspname <> 'ddb2pg'"),
            "orders_user_id_fkey:true",
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
