//! `ddb2pg verify` against the real PostgreSQL: a clean load verifies; each kind of damage
//! done to the target afterwards is found and named by key and column; rejected items count
//! as rejected, not missing.

use crate::common::*;

#[test]
fn verify_finds_every_kind_of_damage_by_key_and_column() {
    let db = TestDb::new("verify");
    let scratch = Scratch::new("verify");
    let config = repo().join("pipeline.toml");
    let cfg = config.to_str().expect("utf8");
    let rejects = scratch.path().join("r.jsonl");
    let out = ddb2pg_at(
        &[
            "load",
            "--config",
            cfg,
            "--no-progress",
            "--rejects",
            rejects.to_str().expect("utf8"),
        ],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let report = scratch.path().join("verify.json");
    let rep = report.to_str().expect("utf8");
    let out = ddb2pg_at(&["verify", "--config", cfg, "--report", rep], &db.url);
    assert_eq!(
        out.status.code(),
        Some(0),
        "a clean load verifies\n{}",
        describe(&out)
    );
    let doc = verify_report(&report);
    assert!(doc.matches);
    for t in &doc.tables {
        assert_eq!(t.verdict, "matches", "{t:?}");
        // A child table's rows are its parent items' elements.
        assert_eq!(t.source_rows, t.target_rows, "{t:?}");
        if t.table != "order_items" {
            assert_eq!(t.source_items, t.target_rows, "{t:?}");
        }
    }

    // Damage, one of each kind, on rows picked by key order.
    let pick = |n: usize| {
        db.scalar(&format!(
            "SELECT id::text FROM orders ORDER BY id LIMIT 1 OFFSET {n}"
        ))
    };
    let (deleted, changed, numeric, json) = (pick(0), pick(10), pick(20), pick(30));
    let book = db.scalar("SELECT id::text FROM books ORDER BY id LIMIT 1 OFFSET 3");
    // The order and its items (their foreign key).
    let lines: u64 = db
        .scalar(&format!(
            "SELECT count(*) FROM order_items WHERE order_id = '{deleted}'"
        ))
        .parse()
        .expect("count");
    db.query(&format!(
        "WITH lines AS (DELETE FROM order_items WHERE order_id = '{deleted}') \
         DELETE FROM orders WHERE id = '{deleted}'"
    ));
    db.query(&format!(
        "UPDATE orders SET status = 'LOST' WHERE id = '{changed}'"
    ));
    // The last digit of a numeric: 0.01 more.
    db.query(&format!(
        "UPDATE orders SET total = total + 0.01 WHERE id = '{numeric}'"
    ));
    // One element inside a jsonb array.
    db.query(&format!(
        "UPDATE orders SET items = jsonb_set(items, '{{0,quantity}}', '99') WHERE id = '{json}'"
    ));
    db.query(
        "INSERT INTO orders (id, user_id, status, items, total, created_at, attributes) \
         SELECT '00000000-0000-4000-8000-00000000abcd', min(id::text)::uuid, 'NEW', '[]', 1, now(), '{}' FROM users",
    );
    db.query(&format!(
        "UPDATE books SET title = title || '!' WHERE id = '{book}'"
    ));

    let out = ddb2pg_at(
        &["verify", "--config", cfg, "--report", rep, "--show", "50"],
        &db.url,
    );
    assert_eq!(
        out.status.code(),
        Some(4),
        "differences give exit 4\n{}",
        describe(&out)
    );
    let doc = verify_report(&report);
    assert!(!doc.matches);
    let table = |name: &str| {
        doc.tables
            .iter()
            .find(|t| t.table == name)
            .unwrap_or_else(|| panic!("no verdict for {name}"))
    };
    let orders = table("orders");
    assert_eq!(
        (orders.missing, orders.extra, orders.different),
        (1, 1, 3),
        "{orders:?}"
    );
    let diffs = &orders.differences;
    let find = |kind: &str, id: &str| {
        diffs
            .iter()
            .find(|d| d.kind == kind && d.key.get("id").map(String::as_str) == Some(id))
            .unwrap_or_else(|| panic!("no {kind} diff for {id}: {diffs:?}"))
    };
    find("missing", &deleted);
    find("extra", "00000000-0000-4000-8000-00000000abcd");
    let d = find("different", &changed);
    assert_eq!(d.columns["status"][1].as_deref(), Some("LOST"), "{d:?}");
    assert_eq!(d.columns.len(), 1, "only the changed column: {d:?}");
    let d = find("different", &numeric);
    assert!(d.columns.contains_key("total"), "{d:?}");
    let d = find("different", &json);
    assert!(
        d.columns.get("items").is_some_and(|[_, target]| target
            .as_deref()
            .is_some_and(|t| t.contains("\"quantity\": 99"))),
        "{d:?}"
    );
    let books = table("books");
    assert_eq!(books.different, 1, "{books:?}");
    let items = table("order_items");
    assert_eq!(
        (items.missing, items.extra, items.different),
        (lines, 0, 0),
        "the deleted order's items: {items:?}"
    );
    assert_eq!(books.differences[0].key["id"], book.as_str());
    assert!(books.differences[0].columns.contains_key("title"));
    assert_eq!(table("users").verdict, "matches");
    // The text output names them too.
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("missing row id={deleted}")) && text.contains("status: source"),
        "{text}"
    );
}

#[test]
fn rejected_items_verify_as_rejected_not_missing() {
    let db = TestDb::new("verify_rejects");
    let scratch = Scratch::new("verify_rejects");
    let export = scratch.path().join("export");
    let mut lines: Vec<String> = (0..50)
        .map(|i| format!(r#"{{"Item":{{"id":{{"N":"{i}"}},"price":{{"N":"{i}.25"}},"tags":{{"SS":["a","b{i}"]}}}}}}"#))
        .collect();
    lines[7] = r#"{"Item":{"id":{"N":"7"},"price":{"N":"1.234"}}}"#.into();
    lines[8] = r#"{"Item":{"id":{"N":"8"},"price":{"S":"free"}}}"#.into();
    write_export(&export, &[lines, vec![]]);
    let config = scratch.path().join("c.toml");
    write_config(
        &config,
        &db.url,
        &format!(
            "[[tables]]\nname = \"p\"\nprimary_key = [\"id\"]\nsource = {{ export = \"{}\" }}\n[tables.columns]\nid = {{ type = \"bigint\" }}\nprice = {{ type = \"numeric(8,2)\" }}\ntags = {{ type = \"text[]\" }}\n",
            export.display()
        ),
    );
    let cfg = config.to_str().expect("utf8");
    let out = ddb2pg_at(
        &[
            "load",
            "--config",
            cfg,
            "--no-progress",
            "--rejects",
            scratch.path().join("r.jsonl").to_str().expect("utf8"),
        ],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let report = scratch.path().join("v.json");
    let out = ddb2pg_at(
        &[
            "verify",
            "--config",
            cfg,
            "--report",
            report.to_str().expect("utf8"),
        ],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let doc = verify_report(&report);
    let t = &doc.tables[0];
    assert_eq!(t.verdict, "matches, 2 rejected", "{t:?}");
    assert_eq!(t.missing, 0);
    assert_eq!(t.rejected_recorded, Some(2));
    assert_eq!(t.source_items, 50);
    assert_eq!(t.target_rows, 48);
    assert_eq!(t.rejected_keys, [r#"{"id":7}"#, r#"{"id":8}"#]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("matches, 2 rejected"));
}
