//! Child tables (ARCHITECTURE §10): `parent` + `unnest` give a row per element of the
//! parent item's list, with the parent's key, the element's attributes and its position.
//! Every row is compared with what the items say, read here independently. The tests also
//! cover:
//! - an empty list, a missing list (the parent row loads, no children);
//! - an element that is not a map, an element that breaks a rule, a list that is not a
//!   list (the whole item rejected, one reject line naming the element and attribute);
//! - verify of a child table;
//! - an upsert and a sync replacing an item's children (a delete takes them away);
//! - kill -9 during a load and a re-run: exact parent and child tables.

use std::path::Path;

use serde_json::{Map, Value};

use crate::common::*;
use crate::sync::{write_base, write_incremental, TABLE_ID};

/// A child row as the test expects it: (order id, position, book id, quantity, price as
/// numeric(10,2) prints it).
type Line = (String, i64, String, String, String);

fn two_places(n: &str) -> String {
    let (int, frac) = n.split_once('.').unwrap_or((n, ""));
    format!("{int}.{frac:0<2}")
}

fn text<'a>(m: &'a Map<String, Value>, name: &str) -> &'a str {
    m.get(name)
        .and_then(Value::as_object)
        .and_then(|o| o.values().next())
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{name} in {m:?}"))
}

/// The child rows of DynamoDB JSON items (each `{"orderId": …, "items": {"L": [{"M": …}]}}`).
fn expected_lines(items: &[Map<String, Value>]) -> Vec<Line> {
    let mut out = Vec::new();
    for it in items {
        let Some(list) = it
            .get("items")
            .and_then(|v| v.get("L"))
            .and_then(Value::as_array)
        else {
            continue;
        };
        for (i, e) in list.iter().enumerate() {
            let m = e
                .get("M")
                .and_then(Value::as_object)
                .expect("an element map");
            out.push((
                text(it, "orderId").to_string(),
                i as i64,
                text(m, "bookId").to_string(),
                text(m, "quantity").to_string(),
                two_places(text(m, "unitPrice")),
            ));
        }
    }
    out.sort();
    out
}

fn lines_in(db: &TestDb, table: &str) -> Vec<Line> {
    let mut out: Vec<Line> = db
        .query(&format!(
            "SELECT order_id::text, line::text, book_id::text, quantity::text, unit_price::text FROM {table}"
        ))
        .into_iter()
        .map(|r| {
            let c = |i: usize| r[i].clone().unwrap_or_default();
            (c(0), c(1).parse().expect("line"), c(2), c(3), c(4))
        })
        .collect();
    out.sort();
    out
}

const ORDER_ITEMS: &str = r#"
[[tables]]
name = "order_items"
parent = "orders"
unnest = "items"

[tables.columns]
order_id   = { parent = "id" }
line       = { ordinal = true, type = "smallint" }
book_id    = { from = "bookId", type = "uuid", required = true }
quantity   = { type = "integer", required = true }
unit_price = { from = "unitPrice", type = "numeric(10,2)" }
"#;

fn orders_toml(source: &str, changes: Option<&str>) -> String {
    let changes = changes
        .map(|c| format!("changes = {{ exports = \"{c}\" }}\n"))
        .unwrap_or_default();
    format!(
        r#"
[[tables]]
name = "orders"
primary_key = ["id"]
source = {{ export = "{source}" }}
{changes}
[tables.columns]
id      = {{ from = "orderId", type = "uuid" }}
status  = {{ type = "text" }}
total   = {{ type = "numeric(10,2)", required = true }}
{ORDER_ITEMS}"#
    )
}

fn run(args: &[&str], url: &str) -> std::process::Output {
    ddb2pg_at(args, url)
}

/// The bundled orders, with their `items` as a child table: every row of both tables is
/// what the export says, the foreign key to orders is there and validated, and `verify`
/// checks the child table row by row.
#[test]
fn the_bundled_orders_load_with_a_row_per_book_ordered() {
    let scratch = Scratch::new("children_bundled");
    let db = TestDb::new("children_bundled");
    let export = repo().join("fixtures/cloudshelf/orders");
    let cfg = scratch.path().join("c.toml");
    write_config(
        &cfg,
        &db.url,
        &orders_toml(export.to_str().expect("utf8"), None),
    );
    let cfg = cfg.to_str().expect("utf8");
    let report = scratch.path().join("r.json");
    let out = run(
        &[
            "load",
            "--config",
            cfg,
            "--no-progress",
            "--report",
            report.to_str().expect("utf8"),
        ],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));

    let items = read_export_items(&export);
    let expected = expected_lines(&items);
    assert!(
        expected.len() > items.len(),
        "orders hold several books each"
    );
    assert_eq!(lines_in(&db, "order_items"), expected);
    let r = load_report(&report);
    assert_eq!(table_of(&r, "orders").rows_written, items.len() as u64);
    assert_eq!(
        table_of(&r, "order_items").rows_written,
        expected.len() as u64
    );
    assert_eq!(
        db.scalar(
            "SELECT count(*) FROM pg_constraint WHERE conrelid = 'order_items'::regclass \
             AND ((contype = 'f' AND confrelid = 'orders'::regclass AND convalidated) OR contype = 'p')"
        ),
        "2",
        "the primary key and the validated foreign key to orders"
    );

    let vr = scratch.path().join("v.json");
    let out = run(
        &[
            "verify",
            "--config",
            cfg,
            "--report",
            vr.to_str().expect("utf8"),
        ],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let v = verify_report(&vr);
    let t = v
        .tables
        .iter()
        .find(|t| t.table == "order_items")
        .expect("order_items verified");
    assert_eq!(t.target_rows, expected.len() as u64);
    assert_eq!((t.missing, t.extra, t.different), (0, 0, 0));

    // A row changed behind the tool's back is found.
    db.query("UPDATE order_items SET quantity = quantity + 1 WHERE line = 1 AND order_id = (SELECT order_id FROM order_items WHERE line = 1 LIMIT 1)");
    let out = run(&["verify", "--config", cfg, "--table", "orders"], &db.url);
    assert_ne!(out.status.code(), Some(0), "{}", describe(&out));
    let out = run(
        &["load", "--config", cfg, "--table", "order_items"],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--table orders"),
        "{}",
        describe(&out)
    );
}

fn element(book: &str, quantity: &str, price: &str) -> String {
    format!(
        r#"{{"M":{{"bookId":{{"S":"{book}"}},"quantity":{{"N":"{quantity}"}},"unitPrice":{{"N":"{price}"}}}}}}"#
    )
}

fn order(id: &str, items: Option<&str>) -> String {
    let items = items
        .map(|l| format!(r#","items":{l}"#))
        .unwrap_or_default();
    format!(
        r#"{{"Item":{{"orderId":{{"S":"{id}"}},"status":{{"S":"PAID"}},"total":{{"N":"10"}}{items}}}}}"#
    )
}

fn uuid(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

fn list(elems: &[String]) -> String {
    format!(r#"{{"L":[{}]}}"#, elems.join(","))
}

/// An empty or missing list loads the parent alone; an element that is not a map, an
/// element breaking a rule, a list that is not a list reject the whole item (one line
/// naming `items[i]` or `items[i].attribute`); a sync replaces the children of the items
/// it puts and takes away those of the items it deletes.
#[test]
fn an_item_and_its_elements_load_or_are_rejected_together_and_a_sync_replaces_them() {
    let scratch = Scratch::new("children_rules");
    let db = TestDb::new("children_rules");
    let (b1, b2, b3) = (uuid(901), uuid(902), uuid(903));
    let base_items = vec![
        order(
            &uuid(1),
            Some(&list(&[element(&b1, "1", "9.5"), element(&b2, "2", "20")])),
        ),
        order(&uuid(2), Some(&list(&[]))),
        order(&uuid(3), None),
        order(
            &uuid(4),
            Some(&list(&[element(&b1, "1", "1"), r#"{"S":"oops"}"#.into()])),
        ),
        order(
            &uuid(5),
            Some(&list(&[r#"{"M":{"quantity":{"N":"1"}}}"#.into()])),
        ),
        order(&uuid(6), Some(r#"{"S":"not a list"}"#)),
        order(&uuid(7), Some(&list(&[element(&b3, "1.5", "3")]))),
        order(
            &uuid(8),
            Some(&list(&[
                element(&b3, "3", "3"),
                element(&b2, "1", "4.25"),
                element(&b1, "7", "0.1"),
            ])),
        ),
    ];
    let base = scratch.path().join("base");
    write_base(&base, &base_items);
    let changes = scratch.path().join("changes");
    std::fs::create_dir_all(&changes).expect("dir");
    let cfg = scratch.path().join("c.toml");
    write_config(
        &cfg,
        &db.url,
        &orders_toml(
            base.to_str().expect("utf8"),
            Some(changes.to_str().expect("utf8")),
        ),
    );
    let cfg = cfg.to_str().expect("utf8");
    let rejects = scratch.path().join("rejects.jsonl");
    let out = run(
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
    assert_eq!(
        out.status.code(),
        Some(3),
        "done, with rejects: {}",
        describe(&out)
    );
    let ids = db.query("SELECT id::text FROM orders ORDER BY id");
    let ids: Vec<String> = ids.into_iter().filter_map(|r| r[0].clone()).collect();
    assert_eq!(ids, [uuid(1), uuid(2), uuid(3), uuid(8)]);
    let parsed: Vec<Map<String, Value>> = base_items
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("json");
            v["Item"].as_object().expect("item").clone()
        })
        .collect();
    let loaded: Vec<Map<String, Value>> = parsed
        .iter()
        .filter(|m| ids.contains(&text(m, "orderId").to_string()))
        .cloned()
        .collect();
    assert_eq!(lines_in(&db, "order_items"), expected_lines(&loaded));

    let recs: Vec<Value> = std::fs::read_to_string(&rejects)
        .expect("rejects")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    // The key as an object, or as its JSON text.
    let order_of = |r: &Value| -> String {
        let k = match &r["key"] {
            Value::String(s) => serde_json::from_str::<Value>(s).unwrap_or(Value::Null),
            v => v.clone(),
        };
        k["orderId"].as_str().unwrap_or_default().to_string()
    };
    let mut seen: Vec<(String, String)> = recs
        .iter()
        .map(|r| {
            assert_eq!(r["table"], "orders", "{r}");
            (
                order_of(r),
                r["attribute"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    seen.sort();
    let key = uuid;
    assert_eq!(
        seen,
        [
            (key(4), "items[1]".to_string()),
            (key(5), "items[0].bookId".to_string()),
            (key(6), "items".to_string()),
            (key(7), "items[0].quantity".to_string()),
        ],
        "{recs:?}"
    );
    let reason = |n: u32| {
        recs.iter()
            .find(|r| order_of(r) == key(n))
            .and_then(|r| r["reason"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        reason(4).contains("is S, but child table `order_items` takes a map (M) per element"),
        "{}",
        reason(4)
    );
    assert!(
        reason(5).contains("is missing") && reason(5).contains("order_items"),
        "{}",
        reason(5)
    );
    assert!(
        reason(6).contains("takes a row per element of a list (L)"),
        "{}",
        reason(6)
    );

    // Changes: order 1 loses a book and changes one, order 2 gets two, order 8 is
    // deleted (its three books go), order 9 is new.
    let meta = r#""Metadata":{"WriteTimestampMicros":{"N":"1767225700000000"}}"#;
    let keys = |n: u32| format!(r#""Keys":{{"orderId":{{"S":"{}"}}}}"#, uuid(n));
    let image = |line: &str| line["{\"Item\":".len()..line.len() - 1].to_string();
    let new1 = order(&uuid(1), Some(&list(&[element(&b2, "5", "20")])));
    let new2 = order(
        &uuid(2),
        Some(&list(&[element(&b3, "1", "1"), element(&b1, "2", "2")])),
    );
    let new9 = order(&uuid(9), Some(&list(&[element(&b1, "4", "4")])));
    let change_lines = vec![
        format!("{{{meta},{},\"NewImage\":{}}}", keys(1), image(&new1)),
        format!("{{{meta},{},\"NewImage\":{}}}", keys(2), image(&new2)),
        format!("{{{meta},{}}}", keys(8)),
        format!("{{{meta},{},\"NewImage\":{}}}", keys(9), image(&new9)),
    ];
    write_incremental(
        &changes,
        "01767225660000-inc00001",
        0,
        120,
        TABLE_ID,
        &[change_lines],
    );
    let out = run(
        &[
            "sync",
            "--config",
            cfg,
            "--until-caught-up",
            "--no-progress",
        ],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let after: Vec<Map<String, Value>> = [new1, new2, order(&uuid(3), None), new9]
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("json");
            v["Item"].as_object().expect("item").clone()
        })
        .collect();
    assert_eq!(lines_in(&db, "order_items"), expected_lines(&after));
    assert_eq!(db.scalar("SELECT count(*) FROM orders"), "4");
    // Verify reads the base export with the changes on top: the changed items' elements
    // in place of their old ones, a deleted item's gone.
    let vr = scratch.path().join("v.json");
    let verify = |db: &TestDb| {
        run(
            &[
                "verify",
                "--config",
                cfg,
                "--report",
                vr.to_str().expect("utf8"),
            ],
            &db.url,
        )
    };
    let out = verify(&db);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let v = verify_report(&vr);
    let t = v
        .tables
        .iter()
        .find(|t| t.table == "order_items")
        .expect("order_items verified");
    let n = expected_lines(&after).len() as u64;
    assert_eq!(
        (t.target_rows, t.missing, t.extra, t.different),
        (n, 0, 0, 0)
    );
    // An element lost behind the tool's back is found.
    db.query(&format!(
        "DELETE FROM order_items WHERE order_id = '{}'",
        uuid(9)
    ));
    let out = verify(&db);
    assert_eq!(out.status.code(), Some(4), "{}", describe(&out));
    let v = verify_report(&vr);
    let t = v
        .tables
        .iter()
        .find(|t| t.table == "order_items")
        .expect("order_items verified");
    assert_eq!((t.missing, t.extra, t.different), (1, 0, 0));
    // The foreign key the sync took off is back.
    assert_eq!(
        db.scalar("SELECT count(*) FROM pg_constraint WHERE conrelid = 'order_items'::regclass AND contype = 'f' AND convalidated"),
        "1"
    );
}

/// `--mode upsert` from a newer export replaces each item's children: fewer elements
/// leave no stale row, more add theirs.
#[test]
fn an_upsert_replaces_an_items_children() {
    let scratch = Scratch::new("children_upsert");
    let db = TestDb::new("children_upsert");
    let (b1, b2) = (uuid(901), uuid(902));
    let first = vec![
        order(
            &uuid(1),
            Some(&list(&[
                element(&b1, "1", "1"),
                element(&b2, "2", "2"),
                element(&b1, "3", "3"),
            ])),
        ),
        order(&uuid(2), Some(&list(&[element(&b2, "1", "1")]))),
        order(&uuid(3), Some(&list(&[element(&b2, "1", "1")]))),
    ];
    let second = vec![
        order(&uuid(1), Some(&list(&[element(&b2, "9", "9")]))),
        order(
            &uuid(2),
            Some(&list(&[element(&b1, "1", "1"), element(&b1, "2", "2")])),
        ),
        order(&uuid(4), None),
    ];
    for (name, items) in [("one", &first), ("two", &second)] {
        write_export(&scratch.path().join(name), std::slice::from_ref(items));
        let cfg = scratch.path().join(format!("{name}.toml"));
        let src = scratch.path().join(name);
        write_config(
            &cfg,
            &db.url,
            &orders_toml(src.to_str().expect("utf8"), None),
        );
    }
    let cfg = |n: &str| {
        scratch
            .path()
            .join(format!("{n}.toml"))
            .to_str()
            .expect("utf8")
            .to_string()
    };
    let out = run(&["load", "--config", &cfg("one"), "--no-progress"], &db.url);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let out = run(
        &[
            "load",
            "--config",
            &cfg("two"),
            "--no-progress",
            "--mode",
            "upsert",
        ],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    // Order 3 is not in the second export: an upsert leaves it (and its child) alone.
    let expect: Vec<Map<String, Value>> = [&second[0], &second[1], &first[2], &second[2]]
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("json");
            v["Item"].as_object().expect("item").clone()
        })
        .collect();
    assert_eq!(lines_in(&db, "order_items"), expected_lines(&expect));
}

/// kill -9 at random points of a load of orders and their items, then a re-run: both
/// tables are exact (no element lost or twice), as verify checks row by row.
#[test]
fn kill_9_during_a_load_with_a_child_table_then_resume_is_exact() {
    let scratch = Scratch::new("children_kill");
    let db = TestDb::new("children_kill");
    let data = scratch.path().join("data");
    ddb2pg::fixtures::generate(&data, 80_000, 5).expect("fixtures");
    let cfg = scratch.path().join("c.toml");
    let text = orders_toml(data.join("orders").to_str().expect("utf8"), None);
    std::fs::write(
        &cfg,
        format!(
            "[target]\nurl = \"{}\"\n\n[tuning]\nconnections = 2\nchunk_bytes = 524288\n\n{text}",
            db.url
        ),
    )
    .expect("config");
    let cfg = cfg.to_str().expect("utf8");
    let kills = kill_loads_at_random(cfg, &db.url, "children_kill", 500, |round| {
        // What is committed is whole items: each order's children with it.
        if db.scalar("SELECT to_regclass('public.order_items') IS NOT NULL") == "t" {
            assert_eq!(
                db.scalar("SELECT count(*) FROM order_items i WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = i.order_id)"),
                "0",
                "round {round}: children committed without their order"
            );
        }
    });
    assert!(kills >= 1, "no load was killed: the data set is too small");
    let out = run(&["load", "--config", cfg, "--no-progress"], &db.url);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let items = read_export_items(&data.join("orders"));
    assert_eq!(
        db.scalar("SELECT count(*) FROM orders"),
        items.len().to_string()
    );
    assert_eq!(lines_in(&db, "order_items"), expected_lines(&items));
    let out = run(&["verify", "--config", cfg], &db.url);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let _ = Path::new(cfg);
}

/// A parent whose key has two columns (a single-table design's `USER#…`/`ORDER#…`): the
/// child table gets a foreign key on both `parent` columns, validated, enforced, and a
/// `replace` takes it off and puts it back. Every row of both tables is compared.
#[test]
fn a_child_of_a_parent_with_a_two_column_key_gets_a_two_column_foreign_key() {
    let scratch = Scratch::new("children_fk2");
    let db = TestDb::new("children_fk2");
    let base = scratch.path().join("base");
    let mut want_orders = Vec::new();
    let mut want_lines = Vec::new();
    let mut lines = Vec::new();
    for u in 0..6 {
        for o in 0..(u % 3 + 1) {
            let elems: Vec<String> = (0..(u + o) % 4)
                .map(|k| {
                    want_lines.push(vec![
                        Some(format!("u{u}")),
                        Some(format!("o{o}")),
                        Some(k.to_string()),
                        Some(format!("sku-{u}-{o}-{k}")),
                        Some((k * 10 + 1).to_string()),
                    ]);
                    format!(
                        r#"{{"M":{{"sku":{{"S":"sku-{u}-{o}-{k}"}},"qty":{{"N":"{}"}}}}}}"#,
                        k * 10 + 1
                    )
                })
                .collect();
            want_orders.push(vec![Some(format!("u{u}")), Some(format!("o{o}"))]);
            lines.push(format!(
                r#"{{"Item":{{"PK":{{"S":"USER#u{u}"}},"SK":{{"S":"ORDER#o{o}"}},"lines":{{"L":[{}]}}}}}}"#,
                elems.join(",")
            ));
        }
    }
    want_orders.sort();
    want_lines.sort();
    write_base(&base, &lines);
    let cfg_path = scratch.path().join("pipeline.toml");
    write_config(
        &cfg_path,
        &db.url,
        &format!(
            r#"[[tables]]
name = "orders"
primary_key = ["user_id", "order_id"]
source = {{ export = "{}" }}

[tables.columns]
user_id  = {{ from = "PK", strip_prefix = "USER#", type = "text" }}
order_id = {{ from = "SK", strip_prefix = "ORDER#", type = "text" }}

[[tables]]
name = "order_lines"
parent = "orders"
unnest = "lines"

[tables.columns]
order_id = {{ parent = "order_id" }}
user_id  = {{ parent = "user_id" }}
line     = {{ ordinal = true, type = "integer" }}
sku      = {{ type = "text", required = true }}
qty      = {{ type = "integer" }}
"#,
            base.display()
        ),
    );
    let cfg = cfg_path.to_str().expect("utf8");
    let check = |what: &str| {
        assert_eq!(
            db.query(
                "SELECT user_id, order_id FROM orders ORDER BY user_id COLLATE \"C\", order_id COLLATE \"C\""
            ),
            want_orders,
            "{what}"
        );
        assert_eq!(
            db.query(
                "SELECT user_id, order_id, line::text, sku, qty::text FROM order_lines \
                 ORDER BY user_id COLLATE \"C\", order_id COLLATE \"C\", line"
            ),
            want_lines,
            "{what}"
        );
        // The key: both columns, in the parent key's order, validated.
        assert_eq!(
            db.query(
                "SELECT conname::text, convalidated::text, \
                   (SELECT string_agg(attname, ',' ORDER BY k.n) FROM unnest(conkey) WITH ORDINALITY k(a, n) \
                    JOIN pg_attribute ON attrelid = conrelid AND attnum = k.a), \
                   confrelid::regclass::text \
                 FROM pg_constraint WHERE conrelid = 'order_lines'::regclass AND contype = 'f'"
            ),
            vec![vec![
                Some("order_lines_user_id_order_id_fkey".to_string()),
                Some("true".to_string()),
                Some("user_id,order_id".to_string()),
                Some("orders".to_string()),
            ]],
            "{what}"
        );
        let deleted = db.try_execute("DELETE FROM orders WHERE user_id = 'u1' AND order_id = 'o0'");
        assert!(
            deleted
                .as_ref()
                .is_err_and(|e| e.contains("order_lines_user_id_order_id_fkey")),
            "{what}: the key is enforced: {deleted:?}"
        );
    };
    let report = scratch.path().join("load.json");
    let out = run(
        &[
            "load",
            "--config",
            cfg,
            "--no-progress",
            "--report",
            report.to_str().expect("utf8"),
        ],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    check("create");
    let r = load_report(&report);
    let fks = &table_of(&r, "order_lines").foreign_keys;
    assert_eq!(fks.len(), 1, "{fks:?}");
    assert_eq!(
        (
            fks[0].column.as_str(),
            fks[0].references.as_str(),
            fks[0].orphans
        ),
        ("user_id, order_id", "public.orders(user_id, order_id)", 0)
    );
    let out = run(
        &[
            "load",
            "--config",
            cfg,
            "--no-progress",
            "--mode",
            "replace",
        ],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    check("replace");
    let out = run(&["verify", "--config", cfg], &db.url);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
}
