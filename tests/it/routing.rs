//! Routing (ARCHITECTURE §10): several `[[tables]]` on one source, each taking the items
//! its `where` matches, key columns cut out of `PK`/`SK` by `strip_prefix` and `regex`.
//! A single-table export (users, orders, carts in one table) is loaded and every row of
//! every table compared with what the items say. The test also covers:
//! - an item two tables take;
//! - items no table takes (counted, not loaded);
//! - an item whose key breaks one table's regex (rejected there, loaded in the other);
//! - verify;
//! - a sync whose changes move an item out of a table (its `where` attribute changed),
//!   add one, delete one, and touch an item no table takes.

use std::collections::BTreeMap;
use std::path::Path;

use crate::common::*;
use crate::sync::{write_base, write_incremental, TABLE_ID};

/// One user profile, its orders and maybe a cart, as the test defines them.
struct User {
    n: usize,
    name: String,
    email: Option<String>,
    /// (order date, order id, total)
    orders: Vec<(String, String, String)>,
}

fn users() -> Vec<User> {
    (0..30)
        .map(|n| User {
            n,
            name: format!("User \"{n}\""),
            email: (n % 3 != 0).then(|| format!("u{n}@example.com")),
            orders: (0..n % 4)
                .map(|j| {
                    (
                        format!("2024-0{}-1{j}", j % 9 + 1),
                        format!("o{n}x{j}"),
                        format!("{n}.{j}5"),
                    )
                })
                .collect(),
        })
        .collect()
}

fn profile_line(u: &User) -> String {
    let email = u
        .email
        .as_ref()
        .map(|e| format!(r#","email":{{"S":"{e}"}}"#))
        .unwrap_or_default();
    format!(
        r#"{{"Item":{{"PK":{{"S":"USER#u{}"}},"SK":{{"S":"PROFILE"}},"type":{{"S":"user"}},"name":{{"S":"{}"}}{email}}}}}"#,
        u.n,
        u.name.replace('"', "\\\"")
    )
}

fn order_image(user: usize, sk: &str, ty: &str, total: &str) -> String {
    format!(
        r#""PK":{{"S":"USER#u{user}"}},"SK":{{"S":"{sk}"}},"type":{{"S":"{ty}"}},"total":{{"N":"{total}"}}"#
    )
}

fn config(path: &Path, url: &str, base: &Path, changes: &Path) {
    let src = format!(
        "source = {{ export = \"{}\" }}\nchanges = {{ exports = \"{}\" }}",
        base.display(),
        changes.display()
    );
    write_config(
        path,
        url,
        &format!(
            r#"[[tables]]
name = "users"
primary_key = ["id"]
{src}
where = {{ attribute = "SK", equals = "PROFILE" }}

[tables.columns]
id = {{ from = "PK", strip_prefix = "USER#", type = "text" }}
num = {{ from = "PK", regex = '^USER#u(\d+)$', type = "integer" }}
name = {{ type = "text", required = true }}
email = {{ type = "text" }}
attributes = {{ rest = true, type = "jsonb" }}

[[tables]]
name = "orders"
primary_key = ["user_id", "order_id"]
{src}
where = {{ attribute = "SK", prefix = "ORDER#" }}

[tables.columns]
user_id = {{ from = "PK", strip_prefix = "USER#", type = "text" }}
order_id = {{ from = "SK", regex = '^ORDER#[^#]+#(.+)$', type = "text" }}
ordered_on = {{ from = "SK", regex = '^ORDER#([^#]+)#', type = "date" }}
total = {{ type = "numeric(10,2)" }}

[[tables]]
name = "order_events"
primary_key = ["pk", "sk"]
{src}
where = {{ attribute = "type", equals = "order" }}

[tables.columns]
pk = {{ from = "PK", type = "text" }}
sk = {{ from = "SK", type = "text" }}
total = {{ type = "numeric(10,2)" }}
"#
        ),
    );
}

/// Every row of the three tables, as text, in key order.
fn rows(db: &TestDb) -> [Vec<Vec<Option<String>>>; 3] {
    [
        db.query(
            "SELECT id, num::text, name, email, attributes->>'SK', attributes->>'type', \
             (SELECT count(*) FROM jsonb_object_keys(attributes))::text FROM users ORDER BY id",
        ),
        db.query(
            "SELECT user_id, order_id, ordered_on::text, total::text FROM orders ORDER BY user_id, order_id",
        ),
        db.query("SELECT pk, sk, total::text FROM order_events ORDER BY pk, sk"),
    ]
}

fn s(v: impl Into<String>) -> Option<String> {
    Some(v.into())
}

/// What the three tables must hold for these users (the broken order only in
/// `order_events`), keyed and ordered as [`rows`] orders them.
fn expected(users: &[User], broken: &[(usize, String, String)]) -> [Vec<Vec<Option<String>>>; 3] {
    let mut profiles = BTreeMap::new();
    let mut orders = BTreeMap::new();
    let mut events = BTreeMap::new();
    for u in users {
        let id = format!("u{}", u.n);
        profiles.insert(
            id.clone(),
            vec![
                s(&id),
                s(u.n.to_string()),
                s(&u.name),
                u.email.clone(),
                s("PROFILE"),
                s("user"),
                s("2"),
            ],
        );
        for (date, oid, total) in &u.orders {
            orders.insert(
                (id.clone(), oid.clone()),
                vec![s(&id), s(oid), s(date), s(total.clone())],
            );
            let sk = format!("ORDER#{date}#{oid}");
            events.insert(
                (format!("USER#{id}"), sk.clone()),
                vec![s(format!("USER#{id}")), s(sk), s(total.clone())],
            );
        }
    }
    for (user, sk, total) in broken {
        let pk = format!("USER#u{user}");
        events.insert(
            (pk.clone(), sk.clone()),
            vec![s(pk), s(sk), s(total.clone())],
        );
    }
    [
        profiles.into_values().collect(),
        orders.into_values().collect(),
        events.into_values().collect(),
    ]
}

#[test]
fn a_single_table_export_is_routed_into_three_tables_and_synced_by_key() {
    let scratch = Scratch::new("routing");
    let db = TestDb::new("routing");
    let base = scratch.path().join("base");
    let changes = scratch.path().join("changes");
    std::fs::create_dir_all(&changes).expect("dir");
    let mut users = users();
    let mut lines = Vec::new();
    for u in &users {
        lines.push(profile_line(u));
        for (date, oid, total) in &u.orders {
            lines.push(format!(
                "{{\"Item\":{{{}}}}}",
                order_image(u.n, &format!("ORDER#{date}#{oid}"), "order", total)
            ));
        }
    }
    // No table takes a cart; an order whose SK breaks the orders table's regex.
    for n in 0..5 {
        lines.push(format!(
            r#"{{"Item":{{"PK":{{"S":"USER#u{n}"}},"SK":{{"S":"CART#1"}},"type":{{"S":"cart"}}}}}}"#
        ));
    }
    lines.push(format!(
        "{{\"Item\":{{{}}}}}",
        order_image(7, "ORDER#broken", "order", "9.50")
    ));
    write_base(&base, &lines);
    let cfg_path = scratch.path().join("pipeline.toml");
    config(&cfg_path, &db.url, &base, &changes);
    let cfg = cfg_path.to_str().expect("utf8");
    let report_path = scratch.path().join("load.json");
    let rejects = scratch.path().join("rejects.jsonl");
    let out = ddb2pg_at(
        &[
            "load",
            "--config",
            cfg,
            "--no-progress",
            "--report",
            report_path.to_str().expect("utf8"),
            "--rejects",
            rejects.to_str().expect("utf8"),
        ],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("5 item(s) match no table's `where`"),
        "{stdout}"
    );

    let n_orders: usize = users.iter().map(|u| u.orders.len()).sum();
    let total = lines.len() as u64;
    let r = load_report(&report_path);
    let (u, o, e) = (
        table_of(&r, "users"),
        table_of(&r, "orders"),
        table_of(&r, "order_events"),
    );
    assert_eq!((u.rows_written, u.rejected, u.skipped), (30, 0, total - 30));
    assert_eq!(u.unrouted, 5, "the source's first table counts the carts");
    assert_eq!(
        (o.rows_written, o.rejected, o.skipped, o.unrouted),
        (n_orders as u64, 1, total - n_orders as u64 - 1, 0)
    );
    assert_eq!(
        (e.rows_written, e.rejected, e.skipped),
        (n_orders as u64 + 1, 0, total - n_orders as u64 - 1)
    );
    assert_eq!(o.route.as_deref(), Some("SK starts with \"ORDER#\""));

    // The reject names the table, the attribute and the rule.
    let text = std::fs::read_to_string(&rejects).expect("rejects");
    let recs: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(recs.len(), 1, "{text}");
    assert_eq!(recs[0]["table"], "orders", "{text}");
    assert_eq!(recs[0]["attribute"], "SK", "{text}");
    let reason = recs[0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("\"ORDER#broken\" does not match regex"),
        "{reason}"
    );

    let broken = vec![(7, "ORDER#broken".to_string(), "9.50".to_string())];
    assert_eq!(rows(&db), expected(&users, &broken));

    let verify = scratch.path().join("verify.json");
    let out = ddb2pg_at(
        &[
            "verify",
            "--config",
            cfg,
            "--report",
            verify.to_str().expect("utf8"),
        ],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let v = verify_report(&verify);
    for t in &v.tables {
        assert_eq!((t.missing, t.extra, t.different), (0, 0, 0), "{}", t.table);
        assert_eq!(t.source_items, total, "{}: every item read", t.table);
    }

    // Changes: order o1x0 of u1 becomes a return (order_events no longer takes it, orders
    // still does, with its new total); a new user u99; u2's profile deleted; a cart
    // changed (no table takes it).
    let (date, oid, _) = users[1].orders[0].clone();
    assert_eq!(oid, "o1x0");
    let sk = format!("ORDER#{date}#{oid}");
    let meta = r#""Metadata":{"WriteTimestampMicros":{"N":"1767225700000000"}}"#;
    let keys =
        |pk: &str, sk: &str| format!(r#""Keys":{{"PK":{{"S":"{pk}"}},"SK":{{"S":"{sk}"}}}}"#);
    let new_user = User {
        n: 99,
        name: "New".into(),
        email: None,
        orders: Vec::new(),
    };
    let new_line = profile_line(&new_user);
    let new_image = &new_line["{\"Item\":".len()..new_line.len() - 1];
    let change_lines = vec![
        format!(
            "{{{meta},{},\"NewImage\":{{{}}}}}",
            keys("USER#u1", &sk),
            order_image(1, &sk, "return", "1.99")
        ),
        format!(
            "{{{meta},{},\"NewImage\":{new_image}}}",
            keys("USER#u99", "PROFILE")
        ),
        format!("{{{meta},{}}}", keys("USER#u2", "PROFILE")),
        format!(
            "{{{meta},{},\"NewImage\":{{\"PK\":{{\"S\":\"USER#u3\"}},\"SK\":{{\"S\":\"CART#1\"}},\"type\":{{\"S\":\"cart\"}}}}}}",
            keys("USER#u3", "CART#1")
        ),
    ];
    write_incremental(
        &changes,
        "01767225660000-inc00001",
        0,
        120,
        TABLE_ID,
        &[change_lines],
    );
    let out = ddb2pg_at(
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
    users[1].orders[0].2 = "1.99".into();
    users.push(new_user);
    let [mut profiles, orders, mut events] = expected(&users, &broken);
    // Only u2's profile went: its orders are items of their own.
    profiles.retain(|r| r[0].as_deref() != Some("u2"));
    // The return: still an order (by SK), no longer an order event (by type).
    events.retain(|r| r[1].as_deref() != Some(sk.as_str()));
    assert_eq!(rows(&db), [profiles, orders, events]);
    // verify applies the same changes to the export and finds the tables equal.
    let out = ddb2pg_at(
        &[
            "verify",
            "--config",
            cfg,
            "--report",
            verify.to_str().expect("utf8"),
        ],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    for t in &verify_report(&verify).tables {
        assert_eq!((t.missing, t.extra, t.different), (0, 0, 0), "{}", t.table);
    }
}

/// A DynamoDB number as numeric(10,2) prints it.
fn two_places(n: &str) -> String {
    let (int, frac) = n.split_once('.').unwrap_or((n, ""));
    format!("{int}.{:0<2}", frac)
}

fn attr<'a>(item: &'a serde_json::Map<String, serde_json::Value>, name: &str) -> &'a str {
    item.get(name)
        .and_then(|v| v.as_object())
        .and_then(|o| o.values().next())
        .and_then(|v| v.as_str())
        .unwrap_or_else(|| panic!("{name} in {item:?}"))
}

/// The bundled single-table fixture (the README's second example) is what `fixtures
/// generate --single-table` writes, and its mapping loads it into three tables whose
/// every row and value is what the items say (read here independently), with the
/// foreign keys between them holding.
#[test]
fn the_bundled_single_table_fixture_loads_into_three_related_tables() {
    let scratch = Scratch::new("single_table");
    let db = TestDb::new("single_table");
    let bundled = repo().join("fixtures/single-table/app");
    let regen = scratch.path().join("regen");
    let out = ddb2pg(&[
        "fixtures",
        "generate",
        "--single-table",
        "--out",
        regen.to_str().expect("utf8"),
        "--scale",
        "2000",
        "--seed",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    for f in ["manifest-files.json", "manifest-summary.json"] {
        assert_eq!(
            std::fs::read(bundled.join(f)).expect("bundled"),
            std::fs::read(regen.join("app").join(f)).expect("regenerated"),
            "{f}: the bundled fixture is what the documented command writes"
        );
    }

    let cfg = repo().join("fixtures/single-table.toml");
    let report_path = scratch.path().join("load.json");
    let out = ddb2pg_at(
        &[
            "load",
            "--config",
            cfg.to_str().expect("utf8"),
            "--no-progress",
            "--report",
            report_path.to_str().expect("utf8"),
            "--rejects",
            scratch.path().join("rejects.jsonl").to_str().expect("utf8"),
        ],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));

    let items = read_export_items(&bundled);
    let mut users = Vec::new();
    let mut orders = Vec::new();
    let mut lines = Vec::new();
    for it in &items {
        let (pk, sk) = (attr(it, "PK"), attr(it, "SK"));
        if sk == "PROFILE" {
            users.push(vec![
                pk.trim_start_matches("USER#").to_string(),
                attr(it, "email").to_string(),
                attr(it, "name").to_string(),
                attr(it, "createdAt").to_string(),
            ]);
        } else if let Some(rest) = sk.strip_prefix("ORDER#") {
            let (at, id) = rest.rsplit_once('#').expect("ORDER#time#id");
            orders.push(vec![
                id.to_string(),
                pk.trim_start_matches("USER#").to_string(),
                at.to_string(),
                attr(it, "status").to_string(),
                two_places(attr(it, "total")),
            ]);
        } else {
            let line: u32 = sk.trim_start_matches("LINE#").parse().expect("LINE#nn");
            lines.push(vec![
                pk.trim_start_matches("ORDER#").to_string(),
                line.to_string(),
                attr(it, "bookId").to_string(),
                attr(it, "quantity").to_string(),
                two_places(attr(it, "unitPrice")),
            ]);
        }
    }
    for v in [&mut users, &mut orders, &mut lines] {
        v.sort();
    }
    assert!(users.len() >= 20 && orders.len() == 2000 && lines.len() == 4000);
    let r = load_report(&report_path);
    for (t, n) in [
        ("app_users", users.len()),
        ("app_orders", orders.len()),
        ("app_order_lines", lines.len()),
    ] {
        let t = table_of(&r, t);
        assert_eq!((t.rows_written, t.rejected), (n as u64, 0), "{}", t.table);
        assert_eq!(t.skipped, items.len() as u64 - n as u64, "{}", t.table);
        assert_eq!(t.unrouted, 0, "{}", t.table);
    }
    let text = |sql: &str| -> Vec<Vec<String>> {
        db.query(sql)
            .into_iter()
            .map(|r| r.into_iter().map(|c| c.unwrap_or_default()).collect())
            .collect()
    };
    let iso =
        |c: &str| format!("to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')");
    assert_eq!(
        text(&format!(
            "SELECT id::text, email, name, {} FROM app_users ORDER BY id::text COLLATE \"C\"",
            iso("created_at")
        )),
        users
    );
    assert_eq!(
        text(&format!(
            "SELECT id::text, user_id::text, {}, status, total::text FROM app_orders ORDER BY id::text COLLATE \"C\"",
            iso("ordered_at")
        )),
        orders
    );
    assert_eq!(
        text(
            "SELECT order_id::text, line::text, book_id::text, quantity::text, unit_price::text \
             FROM app_order_lines ORDER BY order_id::text COLLATE \"C\", line::text COLLATE \"C\""
        ),
        lines
    );
    // The relationships hold: the foreign keys were added and validated.
    assert_eq!(
        db.scalar(
            "SELECT count(*) FROM pg_constraint WHERE contype = 'f' \
             AND conrelid::regclass::text IN ('app_orders', 'app_order_lines')"
        ),
        "2"
    );
    // The source was read once: its splits are the first table's, the others rode.
    assert_eq!(
        db.query(
            "SELECT DISTINCT target_table FROM ddb2pg.splits \
             WHERE run_id = (SELECT max(id) FROM ddb2pg.runs)"
        ),
        vec![vec![Some("app_users".to_string())]]
    );
    let out = ddb2pg_at(
        &["verify", "--config", cfg.to_str().expect("utf8")],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
}

/// kill -9 at random points of a load of three tables reading one source once, then a
/// re-run: every table holds exactly what the generator wrote (its counts) and what a
/// load reading the source per table gives (an upsert into another schema, compared row
/// by row); verify agrees; an upsert on top changes nothing.
#[test]
fn kill_9_during_a_load_of_tables_sharing_a_source_then_resume_is_exact() {
    let scratch = Scratch::new("routing_kill");
    let db = TestDb::new("routing_kill");
    let data = scratch.path().join("data");
    ddb2pg::fixtures::generate_single_table(&data, 60_000, 3).expect("fixtures");
    let bundled =
        std::fs::read_to_string(repo().join("fixtures/single-table.toml")).expect("config");
    let text = bundled.replace(
        "\"single-table/app\"",
        &format!("\"{}\"", data.join("app").display()),
    );
    let cfg = scratch.path().join("c.toml");
    let text = text.replace(
        "[target]",
        "[tuning]\nconnections = 2\nchunk_bytes = 524288\n\n[target]",
    );
    std::fs::write(&cfg, text).expect("config");
    let cfg = cfg.to_str().expect("utf8");
    let out = ddb2pg_at(
        &[
            "load",
            "--config",
            cfg,
            "--no-progress",
            "--schema",
            "clean",
            // The reference: an upsert reads the source in a pass per table.
            "--mode",
            "upsert",
        ],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let kills = kill_loads_at_random(cfg, &db.url, "routing_kill", 400, |_| {});
    assert!(kills >= 1, "no load was killed: the data set is too small");
    let out = ddb2pg_at(&["load", "--config", cfg, "--no-progress"], &db.url);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let same = |what: &str| {
        // 60,000 orders: a quarter as many users, two lines per order.
        for (t, rows) in [
            ("app_users", "15000"),
            ("app_orders", "60000"),
            ("app_order_lines", "120000"),
        ] {
            let n = db.scalar(&format!("SELECT count(*) FROM clean.{t}"));
            assert_eq!(n, rows, "{t}");
            assert_eq!(
                db.scalar(&format!("SELECT count(*) FROM public.{t}")),
                n,
                "{what}: {t}"
            );
            assert_eq!(
                db.scalar(&format!(
                    "SELECT count(*) FROM ((TABLE public.{t} EXCEPT ALL TABLE clean.{t}) \
                     UNION ALL (TABLE clean.{t} EXCEPT ALL TABLE public.{t})) d"
                )),
                "0",
                "{what}: {t} differs from an uninterrupted load"
            );
        }
    };
    same("after the kills and a re-run");
    let out = ddb2pg_at(&["verify", "--config", cfg], &db.url);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let out = ddb2pg_at(
        &["load", "--config", cfg, "--no-progress", "--mode", "upsert"],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    same("after an upsert of the same export");
}

/// An upsert from a newer export of a single-table design: an order whose `type`
/// changed (order → return) is updated in the table routed by its key prefix and left in
/// the table routed by `type` (an upsert never deletes: documented), a new profile is
/// added, a changed one updated; a replace from the same export then leaves the return
/// out of the type-routed table. Every row is compared with what the items say.
#[test]
fn an_upsert_from_a_newer_export_follows_each_tables_where() {
    let scratch = Scratch::new("routing_upsert");
    let db = TestDb::new("routing_upsert");
    let (first, second) = (scratch.path().join("first"), scratch.path().join("second"));
    let changes = scratch.path().join("changes");
    std::fs::create_dir_all(&changes).expect("dir");
    let user = |n: usize, name: &str| User {
        n,
        name: name.into(),
        email: None,
        orders: Vec::new(),
    };
    let order = |ty: &str, total: &str| {
        format!(
            "{{\"Item\":{{{}}}}}",
            order_image(1, "ORDER#2024-01-10#o1", ty, total)
        )
    };
    write_base(
        &first,
        &[
            profile_line(&user(1, "One")),
            profile_line(&user(2, "Two")),
            order("order", "10.50"),
        ],
    );
    write_base(
        &second,
        &[
            profile_line(&user(1, "One again")),
            profile_line(&user(2, "Two")),
            profile_line(&user(3, "Three")),
            order("return", "4.25"),
        ],
    );
    let cfg1 = scratch.path().join("first.toml");
    config(&cfg1, &db.url, &first, &changes);
    let cfg2 = scratch.path().join("second.toml");
    config(&cfg2, &db.url, &second, &changes);
    let load = |cfg: &Path, mode: &str| {
        let out = ddb2pg_at(
            &[
                "load",
                "--config",
                cfg.to_str().expect("utf8"),
                "--no-progress",
                "--mode",
                mode,
            ],
            &db.url,
        );
        assert_eq!(out.status.code(), Some(0), "{mode}: {}", describe(&out));
    };
    load(&cfg1, "create");
    let users_of = |db: &TestDb| db.query("SELECT id, name FROM users ORDER BY id");
    let row = |v: &[&str]| v.iter().map(|s| Some((*s).to_string())).collect::<Vec<_>>();
    assert_eq!(
        users_of(&db),
        vec![row(&["u1", "One"]), row(&["u2", "Two"])]
    );
    assert_eq!(
        db.query("SELECT order_id, total::text FROM orders"),
        vec![row(&["o1", "10.50"])]
    );
    assert_eq!(
        db.query("SELECT sk, total::text FROM order_events"),
        vec![row(&["ORDER#2024-01-10#o1", "10.50"])]
    );

    load(&cfg2, "upsert");
    assert_eq!(
        users_of(&db),
        vec![
            row(&["u1", "One again"]),
            row(&["u2", "Two"]),
            row(&["u3", "Three"])
        ]
    );
    // Still an order by its SK prefix: updated.
    assert_eq!(
        db.query("SELECT order_id, total::text FROM orders"),
        vec![row(&["o1", "4.25"])]
    );
    // No longer an order by its type: an upsert leaves the row as it was.
    assert_eq!(
        db.query("SELECT sk, total::text FROM order_events"),
        vec![row(&["ORDER#2024-01-10#o1", "10.50"])]
    );

    load(&cfg2, "replace");
    assert_eq!(db.scalar("SELECT count(*) FROM order_events"), "0");
    assert_eq!(
        db.query("SELECT order_id, total::text FROM orders"),
        vec![row(&["o1", "4.25"])]
    );
    let out = ddb2pg_at(
        &["verify", "--config", cfg2.to_str().expect("utf8")],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
}

/// `unrouted = "reject"` on a source: each item no table's `where` takes is kept in the
/// rejects file (`"table": null`, its attribute, the tables' `where`s, the item as it
/// was), counted per source, and the run exits 3; the tables' own counts and verify are
/// as without it. Two tables of one source saying different things fail before any work.
#[test]
fn items_matching_no_table_are_kept_in_the_rejects_file_when_the_source_says_so() {
    let scratch = Scratch::new("unrouted");
    let db = TestDb::new("unrouted");
    let base = scratch.path().join("base");
    let users = users();
    let mut lines: Vec<String> = users.iter().map(profile_line).collect();
    let mut carts = BTreeMap::new();
    for n in 0..4 {
        let item = format!(
            r#"{{"PK":{{"S":"USER#u{n}"}},"SK":{{"S":"CART#{n}"}},"type":{{"S":"cart"}},"qty":{{"N":"{n}"}}}}"#
        );
        lines.push(format!("{{\"Item\":{item}}}"));
        carts.insert(format!("CART#{n}"), item);
    }
    for u in &users {
        for (date, oid, total) in &u.orders {
            lines.push(format!(
                "{{\"Item\":{{{}}}}}",
                order_image(u.n, &format!("ORDER#{date}#{oid}"), "order", total)
            ));
        }
    }
    write_base(&base, &lines);
    let tables = |first: &str, second: &str| {
        format!(
            r#"[[tables]]
name = "users"
primary_key = ["id"]
source = {{ export = "{b}"{first} }}
where = {{ attribute = "SK", equals = "PROFILE" }}

[tables.columns]
id = {{ from = "PK", strip_prefix = "USER#", type = "text" }}
name = {{ type = "text", required = true }}

[[tables]]
name = "orders"
primary_key = ["user_id", "order_id"]
source = {{ export = "{b}"{second} }}
where = {{ attribute = "SK", prefix = "ORDER#" }}

[tables.columns]
user_id = {{ from = "PK", strip_prefix = "USER#", type = "text" }}
order_id = {{ from = "SK", regex = '^ORDER#[^#]+#(.+)$', type = "text" }}
total = {{ type = "numeric(10,2)" }}
"#,
            b = base.display()
        )
    };
    let cfg_path = scratch.path().join("pipeline.toml");
    let cfg = cfg_path.to_str().expect("utf8");

    // Two settings for one source: exit 2, naming the key, before any work.
    write_config(
        &cfg_path,
        &db.url,
        &tables(", unrouted = \"count\"", ", unrouted = \"reject\""),
    );
    let out = ddb2pg_at(&["load", "--config", cfg, "--no-progress"], &db.url);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tables[1].source.unrouted"), "{err}");
    assert_eq!(
        db.scalar("SELECT count(*)::text FROM pg_tables WHERE tablename = 'users'"),
        "0"
    );

    // Said once, it holds for the source.
    write_config(&cfg_path, &db.url, &tables("", ", unrouted = \"reject\""));
    let report_path = scratch.path().join("load.json");
    let rejects = scratch.path().join("rejects.jsonl");
    let out = ddb2pg_at(
        &[
            "load",
            "--config",
            cfg,
            "--no-progress",
            "--report",
            report_path.to_str().expect("utf8"),
            "--rejects",
            rejects.to_str().expect("utf8"),
        ],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("4 item(s) match no table's `where` (not loaded); the run's 4 kept"),
        "{stdout}"
    );
    let n_orders: u64 = users.iter().map(|u| u.orders.len() as u64).sum();
    let r = load_report(&report_path);
    let (u, o) = (table_of(&r, "users"), table_of(&r, "orders"));
    assert_eq!(
        (u.rows_written, u.rejected, u.unrouted, u.unrouted_rejected),
        (30, 0, 4, 4)
    );
    assert_eq!((o.rows_written, o.rejected, o.unrouted), (n_orders, 0, 0));

    let text = std::fs::read_to_string(&rejects).expect("rejects");
    let recs: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(recs.len(), 4, "{text}");
    for rec in &recs {
        assert!(rec["table"].is_null(), "{rec}");
        assert_eq!(rec["attribute"], "SK", "{rec}");
        let reason = rec["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains("users (SK = \"PROFILE\")")
                && reason.contains("orders (SK starts with \"ORDER#\")"),
            "{reason}"
        );
        let sk = rec["item"]["SK"]["S"].as_str().unwrap_or_default();
        let want: serde_json::Value =
            serde_json::from_str(carts.get(sk).map_or("null", String::as_str)).expect("json");
        assert_eq!(rec["item"], want, "the item as it was");
        assert_eq!(rec["key"]["PK"], want["PK"]["S"], "{rec}");
    }

    // The tables hold what they take, and verify accounts for them as without the keep.
    let mut want: Vec<Vec<Option<String>>> = users
        .iter()
        .map(|u| vec![s(format!("u{}", u.n)), s(u.name.clone())])
        .collect();
    want.sort();
    assert_eq!(
        db.query("SELECT id, name FROM users ORDER BY id COLLATE \"C\""),
        want
    );
    let mut want: Vec<Vec<Option<String>>> = users
        .iter()
        .flat_map(|u| {
            u.orders
                .iter()
                .map(move |(_, oid, total)| vec![s(format!("u{}", u.n)), s(oid), s(total)])
        })
        .collect();
    want.sort();
    assert_eq!(
        db.query(
            "SELECT user_id, order_id, total::text FROM orders ORDER BY user_id COLLATE \"C\", order_id COLLATE \"C\""
        ),
        want
    );
    let out = ddb2pg_at(&["verify", "--config", cfg], &db.url);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(
        db.scalar(
            "SELECT count(*)::text FROM ddb2pg.rejects WHERE unrouted AND target_table = 'users'"
        ),
        "4"
    );
}
