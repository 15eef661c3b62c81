//! `ddb2pg init`: the mapping it writes loads its source with no reject and verifies, row
//! by row against the items read here independently; its report's counts are the counts
//! of those items; a type conflict is reported with its numbers.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::common::*;
use ddb2pg::init::Inference;

/// Runs `init --from SOURCE --out OUT --report OUT.json` (plus `extra`); returns the report.
fn init(from: &str, out: &Path, extra: &[&str], env: Option<(&str, &str)>) -> Inference {
    let report = out.with_extension("json");
    let mut args = vec![
        "init",
        "--from",
        from,
        "--out",
        out.to_str().expect("utf8"),
        "--report",
        report.to_str().expect("utf8"),
    ];
    args.extend_from_slice(extra);
    let o = match env {
        Some((ddb, s3)) => crate::aws_sources::run(&args, ddb, s3, None),
        None => ddb2pg(&args),
    };
    assert_eq!(
        o.status.code(),
        Some(0),
        "init --from {from}: {}",
        describe(&o)
    );
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("items read from"), "{text}");
    read_report(&report)
}

/// Loads `config` into `db`, then verifies it: both exit 0 (no reject, every row equal).
fn load_and_verify(config: &Path, db: &TestDb, env: Option<(&str, &str)>) {
    for cmd in ["load", "verify"] {
        let args = [
            cmd,
            "--config",
            config.to_str().expect("utf8"),
            "--no-progress",
        ];
        let args: &[&str] = if cmd == "verify" { &args[..3] } else { &args };
        let o = match env {
            Some((ddb, s3)) => crate::aws_sources::run(args, ddb, s3, Some(&db.url)),
            None => ddb2pg_at(args, &db.url),
        };
        assert_eq!(
            o.status.code(),
            Some(0),
            "{cmd} {}: {}",
            config.display(),
            describe(&o)
        );
    }
}

/// Per attribute, the items holding it and its DynamoDB types, counted here.
fn counts(
    items: &[serde_json::Map<String, Value>],
) -> BTreeMap<String, (u64, BTreeMap<String, u64>)> {
    let mut out: BTreeMap<String, (u64, BTreeMap<String, u64>)> = BTreeMap::new();
    for item in items {
        for (name, v) in item {
            let ty = v
                .as_object()
                .and_then(|o| o.keys().next())
                .expect("typed value")
                .clone();
            let e = out.entry(name.clone()).or_default();
            e.0 += 1;
            *e.1.entry(ty).or_default() += 1;
        }
    }
    out
}

fn assert_report_counts(r: &Inference, items: &[serde_json::Map<String, Value>]) {
    assert_eq!(r.items, items.len() as u64);
    let want = counts(items);
    assert_eq!(r.attributes.len(), want.len(), "every attribute reported");
    for a in &r.attributes {
        let (n, types) = want.get(&a.attribute).expect("attribute seen here");
        assert_eq!(a.items, *n, "{}", a.attribute);
        let got: BTreeMap<String, u64> = a.types.iter().cloned().collect();
        assert_eq!(&got, types, "{}", a.attribute);
        let chosen = a
            .rejects_by_type
            .iter()
            .find(|(t, _)| t.split(' ').next() == Some(a.choice.ty.as_str()));
        if let Some((_, rejects)) = chosen {
            assert!(
                *rejects == 0 || a.choice.strip_nul,
                "{}: the chosen {} rejects {rejects}",
                a.attribute,
                a.choice.ty
            );
        }
    }
}

#[test]
fn init_maps_the_bundled_fixtures_and_the_mapping_loads_every_row() {
    let scratch = Scratch::new("init_fixtures");
    let db = TestDb::new("init_fixtures");
    for table in ["books", "users", "orders"] {
        let dir = repo().join("fixtures/cloudshelf").join(table);
        let out = scratch.path().join(format!("{table}.toml"));
        let r = init(dir.to_str().expect("utf8"), &out, &[], None);
        let items = read_export_items(&dir);
        assert_report_counts(&r, &items);
        assert_eq!(r.table, table);
        let key = format!("{}Id", table.trim_end_matches('s'));
        assert_eq!(r.key, vec![key.clone()], "{}", r.key_from);
        let col = |attr: &str| {
            r.attributes
                .iter()
                .find(|a| a.attribute == attr)
                .map(|a| a.choice.clone())
                .expect("attribute")
        };
        assert_eq!(col(&key).ty, "uuid");
        assert!(col(&key).required);
        assert_eq!(col("createdAt").ty, "timestamptz");
        match table {
            "orders" => {
                assert_eq!(col("items").ty, "jsonb");
                assert!(
                    col("total").ty.starts_with("numeric("),
                    "{:?}",
                    col("total")
                );
                assert_eq!(col("giftWrap").column, "gift_wrap");
                let items_attr = r.attributes.iter().find(|a| a.attribute == "items");
                assert!(items_attr.is_some_and(|a| a.lists_of_maps > 0));
                // The list of maps is proposed as a child table, a row per element.
                let elements: usize = items
                    .iter()
                    .filter_map(|it| it.get("items")?.get("L")?.as_array().map(Vec::len))
                    .sum();
                assert_eq!(r.child_tables.len(), 1, "{:?}", r.child_tables);
                let c = &r.child_tables[0];
                assert_eq!(
                    (c.table.as_str(), c.unnest.as_str()),
                    ("orders_items", "items")
                );
                assert_eq!(c.elements, elements as u64);
                assert_eq!(
                    c.parent_columns,
                    vec![("order_id".to_string(), "order_id".to_string())]
                );
                let types: Vec<(&str, &str, bool)> = c
                    .attributes
                    .iter()
                    .map(|a| {
                        (
                            a.attribute.as_str(),
                            a.choice.ty.as_str(),
                            a.choice.required,
                        )
                    })
                    .collect();
                assert_eq!(types.len(), 3, "{types:?}");
                assert_eq!(types[0], ("bookId", "uuid", true));
                assert_eq!(types[1], ("quantity", "integer", true));
                assert!(types[2].0 == "unitPrice" && types[2].1.starts_with("numeric("));
                assert!(c.attributes.iter().all(|a| a.items == elements as u64));
            }
            "users" => {
                assert_eq!(col("lastLoginEpoch").ty, "timestamptz");
                assert!(col("bio").strip_nul, "{:?}", col("bio"));
            }
            _ => assert_eq!(col("genres").ty, "text[]"),
        }
        load_and_verify(&out, &db, None);
        let cfg = config_with_url(&out, &db.url);
        let n = assert_table_matches_items(&db, "public", &cfg.tables[0], &items);
        assert_eq!(n, items.len());
        if table == "orders" {
            // Every element is its row: the order's key, its position, its attributes.
            let expected = db.scalar(
                "SELECT sum(jsonb_array_length(items)) FROM orders WHERE items IS NOT NULL",
            );
            assert_eq!(db.scalar("SELECT count(*) FROM orders_items"), expected);
            assert_eq!(
                db.scalar(
                    "SELECT count(*) FROM orders_items i LEFT JOIN orders o ON o.order_id = i.order_id \
                     WHERE o.order_id IS NULL \
                        OR (o.items -> i.position ->> 'bookId')::uuid IS DISTINCT FROM i.book_id \
                        OR (o.items -> i.position ->> 'quantity')::int IS DISTINCT FROM i.quantity \
                        OR (o.items -> i.position ->> 'unitPrice')::numeric IS DISTINCT FROM i.unit_price"
                ),
                "0",
                "orders_items rows that are not their element"
            );
            assert_eq!(
                db.scalar(
                    "SELECT count(*) FROM pg_constraint WHERE contype = 'f' \
                     AND conrelid = 'orders_items'::regclass"
                ),
                "1",
                "the foreign key to orders"
            );
        }
    }
}

#[test]
fn a_type_conflict_is_reported_with_its_numbers_and_still_loads() {
    let scratch = Scratch::new("init_conflict");
    let db = TestDb::new("init_conflict");
    let dir = scratch.path().join("export");
    let mut lines = Vec::new();
    for i in 0..100 {
        let qty = if i % 25 == 0 {
            r#"{"S":"many"}"#.to_string()
        } else {
            format!(r#"{{"N":"{i}"}}"#)
        };
        let extra = if i % 2 == 0 {
            r#","note":{"S":"even"}"#
        } else {
            ""
        };
        lines.push(format!(
            r#"{{"Item":{{"pk":{{"S":"item-{i}"}},"qty":{qty},"price":{{"N":"{i}.25"}}{extra}}}}}"#
        ));
    }
    write_export(&dir, &[lines[..60].to_vec(), lines[60..].to_vec()]);
    let out = scratch.path().join("conflict.toml");
    let r = init(
        dir.to_str().expect("utf8"),
        &out,
        &["--table", "things"],
        None,
    );
    let items = read_export_items(&dir);
    assert_report_counts(&r, &items);
    assert_eq!(r.key, vec!["pk".to_string()]);
    let qty = r
        .attributes
        .iter()
        .find(|a| a.attribute == "qty")
        .expect("qty");
    assert_eq!(qty.types, vec![("N".to_string(), 96), ("S".to_string(), 4)]);
    assert_eq!(qty.choice.ty, "text");
    let rejects: BTreeMap<String, u64> = qty.rejects_by_type.iter().cloned().collect();
    assert_eq!(rejects.get("integer"), Some(&4), "{rejects:?}");
    assert_eq!(rejects.get("text"), Some(&0), "{rejects:?}");
    let note = r
        .attributes
        .iter()
        .find(|a| a.attribute == "note")
        .expect("note");
    assert_eq!(note.items, 50);
    assert!(!note.choice.required);
    let price = r
        .attributes
        .iter()
        .find(|a| a.attribute == "price")
        .expect("price");
    assert_eq!(price.choice.ty, "numeric(4,2)");
    assert_eq!(price.min_number.as_deref(), Some("0.25"));
    assert_eq!(price.max_number.as_deref(), Some("99.25"));
    let toml = std::fs::read_to_string(&out).expect("config");
    assert!(toml.contains("name = \"things\""), "{toml}");
    load_and_verify(&out, &db, None);
    let cfg = config_with_url(&out, &db.url);
    assert_eq!(
        assert_table_matches_items(&db, "public", &cfg.tables[0], &items),
        100
    );
    assert_eq!(
        db.scalar("SELECT qty FROM things WHERE pk = 'item-25'"),
        "many"
    );
    assert_eq!(db.scalar("SELECT qty FROM things WHERE pk = 'item-7'"), "7");

    // The default output is never replaced unless named; a bad --key is refused.
    let cwd = scratch.path().join("cwd");
    std::fs::create_dir_all(&cwd).expect("dir");
    std::fs::write(cwd.join("pipeline.toml"), "# mine\n").expect("write");
    let o = ddb2pg_cmd(None)
        .current_dir(&cwd)
        .args(["init", "--from", dir.to_str().expect("utf8")])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
    assert_eq!(
        std::fs::read_to_string(cwd.join("pipeline.toml")).expect("read"),
        "# mine\n"
    );
    for key in ["note", "a,b,c", ""] {
        let o = ddb2pg(&[
            "init",
            "--from",
            dir.to_str().expect("utf8"),
            "--out",
            scratch.path().join("k.toml").to_str().expect("utf8"),
            "--key",
            key,
        ]);
        assert_eq!(o.status.code(), Some(2), "--key {key}: {}", describe(&o));
    }
}

#[test]
fn init_maps_the_acceptance_exports() {
    let Some(acc) = acceptance_dir() else { return };
    let scratch = Scratch::new("init_acceptance");
    let db = TestDb::new("init_acceptance");
    for (name, dir) in [
        ("gurre", acc.join("exports/gurre-ddb-pitr/s3exportdata/AWSDynamoDB/01768385930622-efd1a093")),
        ("pfeilbr", acc.join("exports/pfeilbr-2020/example-export/demo_prefix/AWSDynamoDB/01605130432834-8a918b87")),
    ] {
        let out = scratch.path().join(format!("{name}.toml"));
        let r = init(dir.to_str().expect("utf8"), &out, &["--table", name], None);
        let items = read_export_items(&dir);
        assert_report_counts(&r, &items);
        load_and_verify(&out, &db, None);
        let cfg = config_with_url(&out, &db.url);
        assert_eq!(
            assert_table_matches_items(&db, "public", &cfg.tables[0], &items),
            items.len()
        );
    }
}

/// The public data sets, put into DynamoDB Local, mapped by `init` over a scan (the key
/// from `DescribeTable`), loaded, verified and compared row by row.
#[test]
fn init_maps_the_acceptance_data_sets_over_a_scan() {
    let Some((ddb, s3)) = crate::aws_sources::emulators() else {
        return;
    };
    let Some(acc) = acceptance_dir() else { return };
    let scratch = Scratch::new("init_datasets");
    let db = TestDb::new("init_datasets");
    for (i, (file, keys)) in crate::aws_sources::REQUEST_FILES.iter().enumerate() {
        let path = acc.join("datasets").join(file);
        let ddb_table = crate::aws_sources::unique(&format!("init{i}"));
        let key_args: Vec<String> = keys.iter().map(|(k, t)| format!("{k}:{t}")).collect();
        let key_refs: Vec<&str> = key_args.iter().map(String::as_str).collect();
        let o = crate::aws_sources::seed(&ddb, &s3, &ddb_table, &path, &key_refs);
        assert_eq!(o.status.code(), Some(0), "{file}: {}", describe(&o));
        let items = crate::aws_sources::request_items(&path);
        let out = scratch.path().join(format!("d{i}.toml"));
        let from = format!("dynamodb:{ddb_table}");
        let name = format!("d{i}");
        let r = init(&from, &out, &["--table", &name], Some((&ddb, &s3)));
        assert_eq!(r.key_from, "DescribeTable");
        let want: Vec<String> = keys.iter().map(|(k, _)| (*k).to_string()).collect();
        assert_eq!(r.key, want, "{file}");
        assert_report_counts(&r, &items);
        load_and_verify(&out, &db, Some((&ddb, &s3)));
        let cfg = config_with_url(&out, &db.url);
        assert_eq!(
            assert_table_matches_items(&db, "public", &cfg.tables[0], &items),
            items.len(),
            "{file}"
        );
    }
}

/// The bundled single-table export: init finds its entities by the `SK` shapes and
/// proposes a table for each, with its `where` and its key cut out of `PK`/`SK`; the
/// config loads every item into its entity's table with no reject (read once), each
/// table's rows are its items (counted here), and verify passes.
#[test]
fn init_splits_a_single_table_design_into_a_table_per_entity() {
    let scratch = Scratch::new("init_single_table");
    let db = TestDb::new("init_single_table");
    let dir = repo().join("fixtures/single-table/app");
    let out = scratch.path().join("app.toml");
    let r = init(dir.to_str().expect("utf8"), &out, &[], None);
    let items = read_export_items(&dir);
    assert_report_counts(&r, &items);
    assert_eq!(r.key, vec!["PK".to_string(), "SK".to_string()]);
    let mut by_shape: BTreeMap<String, u64> = BTreeMap::new();
    for it in &items {
        let sk = it["SK"]["S"].as_str().expect("SK");
        let shape = sk.find('#').map_or(sk, |i| &sk[..=i]);
        *by_shape.entry(shape.to_string()).or_default() += 1;
    }
    let got: BTreeMap<String, u64> = r
        .entities
        .iter()
        .map(|e| (e.shape.clone(), e.items))
        .collect();
    assert_eq!(got, by_shape, "an entity per SK shape, with its items");
    let entity = |shape: &str| {
        r.entities
            .iter()
            .find(|e| e.shape == shape)
            .unwrap_or_else(|| panic!("{shape}: {:?}", r.entities))
    };
    let profile = entity("PROFILE");
    assert_eq!(
        (profile.table.as_str(), profile.prefix),
        ("app_profile", false)
    );
    assert_eq!(profile.key, vec!["user_id".to_string()]);
    let col = |e: &ddb2pg::init::EntityProposal, name: &str| {
        e.columns
            .iter()
            .find(|c| c.attribute.choice.column == name)
            .unwrap_or_else(|| panic!("{name} in {}", e.table))
            .clone()
    };
    let user_id = col(profile, "user_id");
    assert_eq!(user_id.strip_prefix.as_deref(), Some("USER#"));
    assert_eq!(user_id.attribute.choice.ty, "uuid");
    assert!(
        !profile
            .columns
            .iter()
            .any(|c| c.attribute.attribute == "SK"),
        "SK is PROFILE in every profile: the where says it"
    );
    let order = entity("ORDER#");
    assert!(order.prefix);
    assert_eq!(
        order.key,
        vec!["user_id".to_string(), "order_id".to_string()]
    );
    assert_eq!(
        col(order, "total").attribute.choice.ty.get(..8),
        Some("numeric(")
    );
    let line = entity("LINE#");
    assert_eq!(
        col(line, "order_id").strip_prefix.as_deref(),
        Some("ORDER#")
    );
    assert_eq!(col(line, "order_id").attribute.choice.ty, "uuid");
    assert_eq!(col(line, "quantity").attribute.choice.ty, "integer");

    load_and_verify(&out, &db, None);
    for e in &r.entities {
        assert_eq!(
            db.scalar(&format!("SELECT count(*) FROM {}", e.table)),
            by_shape[&e.shape].to_string(),
            "{}",
            e.table
        );
    }
    // Each profile's row holds its item's values (the key with its prefix taken off).
    let mut want: Vec<Vec<String>> = items
        .iter()
        .filter(|it| it["SK"]["S"] == "PROFILE")
        .map(|it| {
            let s = |a: &str| it[a]["S"].as_str().expect("S").to_string();
            vec![
                s("PK").trim_start_matches("USER#").to_string(),
                s("email"),
                s("name"),
            ]
        })
        .collect();
    want.sort();
    let got: Vec<Vec<String>> = db
        .query("SELECT user_id::text, email, name FROM app_profile ORDER BY user_id::text COLLATE \"C\"")
        .into_iter()
        .map(|r| r.into_iter().map(Option::unwrap_or_default).collect())
        .collect();
    assert_eq!(got, want);
    // One pass over the source for the three tables.
    assert_eq!(
        db.scalar(
            "SELECT count(DISTINCT target_table) FROM ddb2pg.splits \
             WHERE run_id = (SELECT max(id) FROM ddb2pg.runs)"
        ),
        "1"
    );
}
