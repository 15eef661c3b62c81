//! Loads real exports into the real PostgreSQL and compares every row and value with what
//! the export says: the committed CloudShelf fixtures, and the third-party exports under
//! `../shared/acceptance/exports` (skipped with a message where that folder is absent).

use std::path::Path;

use crate::common::*;

fn load_with_env(config: &Path, url: &str, extra: &[&str]) -> std::process::Output {
    ddb2pg_cmd(Some(url))
        .arg("load")
        .arg("--config")
        .arg(config)
        .args(extra)
        .output()
        .expect("run ddb2pg")
}

#[test]
fn fixtures_load_exactly_every_row_and_value() {
    let db = TestDb::new("fixtures");
    let scratch = Scratch::new("fixtures");
    let config_path = repo().join("pipeline.toml");
    let report = scratch.path().join("report.json");
    let out = load_with_env(
        &config_path,
        &db.url,
        &["--report", report.to_str().expect("utf8"), "--no-progress"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let config = config_with_url(&config_path, &db.url);
    let mut compared = 0;
    for spec in &config.tables {
        let ddb2pg::config::Source::Export {
            path: Some(dir), ..
        } = &spec.source
        else {
            panic!("fixtures are exports")
        };
        compared += assert_table_matches_export(&db, "public", spec, dir);
    }
    assert_eq!(
        compared,
        1000 + 2000 + 8000,
        "books, users and orders of the committed fixtures"
    );
    let items = assert_order_items_match_orders(&db, "public");

    // Keys built after the data (and the declared foreign key), defaults declared on the
    // table, the report written.
    let constraints = db.query(
        "SELECT conname FROM pg_constraint WHERE conrelid IN ('books'::regclass, 'users'::regclass, 'orders'::regclass) ORDER BY 1",
    );
    let names: Vec<String> = constraints
        .into_iter()
        .filter_map(|r| r[0].clone())
        .collect();
    assert_eq!(
        names,
        [
            "books_isbn_key",
            "books_pkey",
            "orders_pkey",
            "orders_user_id_fkey",
            "users_email_key",
            "users_pkey"
        ]
    );
    let report = load_report(&report);
    assert_eq!(report.tables.len(), 4);
    for t in &report.tables {
        assert_eq!(t.rows_read, t.rows_written, "{t:?}");
        assert_eq!(t.rejected, 0);
        if t.table == "order_items" {
            assert_eq!(t.rows_written, items as u64, "{t:?}");
            assert_eq!(t.source, "orders.items");
        } else {
            assert_eq!(t.expected, t.rows_read);
        }
    }

    // Re-running in create mode refuses a table that holds rows, and changes nothing.
    let again = load_with_env(
        &config_path,
        &db.url,
        &["--no-progress", "--table", "books"],
    );
    assert_eq!(again.status.code(), Some(1), "{}", describe(&again));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already holds rows"),
        "{}",
        describe(&again)
    );
    // Replace reloads to the same content, over one connection and over three.
    for conns in ["1", "3"] {
        let replaced = load_with_env(
            &config_path,
            &db.url,
            &[
                "--no-progress",
                "--mode",
                "replace",
                "--fresh",
                "--connections",
                conns,
            ],
        );
        assert_eq!(replaced.status.code(), Some(0), "{}", describe(&replaced));
    }
    for spec in &config.tables {
        let ddb2pg::config::Source::Export {
            path: Some(dir), ..
        } = &spec.source
        else {
            unreachable!()
        };
        assert_table_matches_export(&db, "public", spec, dir);
    }
    // A staging schema holds a complete copy for a rehearsal.
    let staged = load_with_env(
        &config_path,
        &db.url,
        &[
            "--no-progress",
            "--schema",
            "staging_1",
            "--table",
            "orders",
        ],
    );
    assert_eq!(staged.status.code(), Some(0), "{}", describe(&staged));
    let orders = config
        .tables
        .iter()
        .find(|t| t.name == "orders")
        .expect("orders");
    let ddb2pg::config::Source::Export {
        path: Some(dir), ..
    } = &orders.source
    else {
        unreachable!()
    };
    assert_eq!(
        assert_table_matches_export(&db, "staging_1", orders, dir),
        8000
    );

    // The oracle itself can fail: one cent, one jsonb element, one missing row.
    for change in [
        "UPDATE staging_1.orders SET total = total + 0.01 WHERE id = (SELECT id FROM staging_1.orders ORDER BY id LIMIT 1)",
        "UPDATE staging_1.orders SET items = jsonb_set(items, '{0,quantity}', '99') WHERE id = (SELECT id FROM staging_1.orders ORDER BY id DESC LIMIT 1)",
        // The order with its items (the foreign key of order_items).
        "WITH gone AS (SELECT id FROM staging_1.orders ORDER BY id DESC LIMIT 1), \
           lines AS (DELETE FROM staging_1.order_items WHERE order_id IN (SELECT id FROM gone)) \
         DELETE FROM staging_1.orders WHERE id IN (SELECT id FROM gone)",
    ] {
        db.query(change);
        let caught = std::panic::catch_unwind(|| assert_table_matches_export(&db, "staging_1", orders, dir));
        assert!(caught.is_err(), "the oracle missed: {change}");
        let reload = load_with_env(&config_path, &db.url, &["--no-progress", "--schema", "staging_1", "--table", "orders", "--mode", "replace"]);
        assert_eq!(reload.status.code(), Some(0), "{}", describe(&reload));
    }
}

const PK_SK_REST: &str = r#"
[tables.columns]
pk   = { from = "pk", type = "text" }
sk   = { from = "sk", type = "text" }
rest = { rest = true, type = "jsonb" }
"#;

#[test]
fn acceptance_exports_load_without_loss() {
    let Some(acc) = acceptance_dir() else { return };
    let exports = [
        ("gurre", acc.join("exports/gurre-ddb-pitr/s3exportdata/AWSDynamoDB/01768385930622-efd1a093")),
        ("pfeilbr", acc.join("exports/pfeilbr-2020/example-export/demo_prefix/AWSDynamoDB/01605130432834-8a918b87")),
    ];
    let db = TestDb::new("acceptance");
    let scratch = Scratch::new("acceptance");
    let mut tables = String::new();
    for (name, dir) in &exports {
        tables.push_str(&format!(
            "[[tables]]\nname = \"{name}\"\nprimary_key = [\"pk\", \"sk\"]\nsource = {{ export = \"{}\" }}\n{PK_SK_REST}\n",
            dir.display()
        ));
    }
    let config = scratch.path().join("acc.toml");
    write_config(&config, &db.url, &tables);
    let out = ddb2pg(&[
        "load",
        "--config",
        config.to_str().expect("utf8"),
        "--no-progress",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    // gurre's manifest-summary.md5 no longer matches (the account ID was redacted): a warning.
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not match manifest-summary.md5"),
        "{}",
        describe(&out)
    );
    let cfg = config_with_url(&config, &db.url);
    let n: usize = cfg
        .tables
        .iter()
        .zip(&exports)
        .map(|(spec, (_, dir))| assert_table_matches_export(&db, "public", spec, dir))
        .sum();
    assert_eq!(n, 3 + 3);

    // The bucket copy works as well as the export folder: the same keys resolve from above.
    // An incremental export is refused clearly; a manifest naming an absent data file too.
    for (dir, want) in [
        (
            acc.join("exports/gurre-ddb-pitr/s3exportdata/AWSDynamoDB/01768386924000-d339e52d"),
            "incremental export",
        ),
        (
            acc.join("exports/sabuat-2022/AWSDynamoDB/01668227450456-b6733290"),
            "enpvklgbwq7gta42yshirxd6ea.json.gz",
        ),
    ] {
        let t = format!(
            "[[tables]]\nname = \"x\"\nprimary_key = [\"pk\"]\nsource = {{ export = \"{}\" }}\n[tables.columns]\npk = {{ type = \"text\" }}\n",
            dir.display()
        );
        write_config(&config, &db.url, &t);
        let out = ddb2pg(&[
            "load",
            "--config",
            config.to_str().expect("utf8"),
            "--no-progress",
        ]);
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(want),
            "want {want:?}: {}",
            describe(&out)
        );
        assert_eq!(
            db.scalar("SELECT count(*) FROM pg_tables WHERE tablename = 'x'"),
            "0",
            "nothing created"
        );
    }
}
