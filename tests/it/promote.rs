//! Rehearse, promote, roll back: a staging schema loaded from other data swaps in for
//! `public` in one transaction and back again, every table byte for byte (by digest).

use crate::common::*;

/// Every table of a schema: name → md5 of its rows in key order (plus its column list).
fn schema_digest(db: &TestDb, schema: &str) -> Vec<(String, String)> {
    let tables = db.query(&format!(
        "SELECT tablename FROM pg_tables WHERE schemaname = '{schema}' ORDER BY 1"
    ));
    tables
        .into_iter()
        .map(|r| {
            let t = r[0].clone().expect("name");
            let d = db.scalar(&format!(
                "SELECT md5(coalesce(string_agg(x::text, E'\\n' ORDER BY x::text), '')) \
                 || ':' || (SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ',' ORDER BY attnum) \
                            FROM pg_attribute WHERE attrelid = '\"{schema}\".\"{t}\"'::regclass AND attnum > 0 AND NOT attisdropped) \
                 FROM \"{schema}\".\"{t}\" x"
            ));
            (t, d)
        })
        .collect()
}

#[test]
fn promote_swaps_a_rehearsal_in_and_rollback_restores_byte_for_byte() {
    let db = TestDb::new("promote");
    let scratch = Scratch::new("promote");
    let config = repo().join("pipeline.toml");
    let cfg = config.to_str().expect("utf8");
    // Production: the committed fixtures in public.
    let out = ddb2pg_at(&["load", "--config", cfg, "--no-progress"], &db.url);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    // The rehearsal: other data (another seed and scale) in staging_2.
    let other = scratch.path().join("other");
    let out = ddb2pg(&[
        "fixtures",
        "generate",
        "--out",
        other.to_str().expect("utf8"),
        "--scale",
        "800",
        "--seed",
        "2",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = std::fs::read_to_string(&config)
        .expect("config")
        .replace("fixtures/cloudshelf/", &format!("{}/", other.display()));
    let staged_config = scratch.path().join("staged.toml");
    std::fs::write(&staged_config, text).expect("write");
    let scfg = staged_config.to_str().expect("utf8");
    let out = ddb2pg_at(
        &[
            "load",
            "--config",
            scfg,
            "--schema",
            "staging_2",
            "--no-progress",
        ],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));

    let public_before = schema_digest(&db, "public");
    let staged_before = schema_digest(&db, "staging_2");
    assert_eq!(public_before.len(), 4);
    assert_eq!(staged_before.len(), 4);
    assert_ne!(
        public_before, staged_before,
        "the rehearsal holds other data"
    );
    assert_eq!(db.scalar("SELECT count(*) FROM staging_2.orders"), "800");

    let out = ddb2pg_at(
        &["promote", "--config", cfg, "--from", "staging_2"],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(schema_digest(&db, "public"), staged_before);
    assert_eq!(schema_digest(&db, "public_ddb2pg_prev"), public_before);
    assert_eq!(
        db.scalar("SELECT count(*) FROM pg_namespace WHERE nspname = 'staging_2'"),
        "0"
    );
    // verify, pointed at public, now sees the rehearsal's data.
    let out = ddb2pg_at(&["verify", "--config", scfg], &db.url);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));

    // A second promote would lose the kept schema: refused, and nothing changes.
    let out = ddb2pg_at(
        &[
            "load",
            "--config",
            scfg,
            "--schema",
            "staging_3",
            "--no-progress",
        ],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let out = ddb2pg_at(
        &["promote", "--config", cfg, "--from", "staging_3"],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("rollback"),
        "{}",
        describe(&out)
    );
    assert_eq!(schema_digest(&db, "public"), staged_before);

    let out = ddb2pg_at(&["rollback", "--config", cfg], &db.url);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(schema_digest(&db, "public"), public_before);
    assert_eq!(schema_digest(&db, "staging_2"), staged_before);
    assert_eq!(
        db.scalar("SELECT count(*) FROM pg_namespace WHERE nspname = 'public_ddb2pg_prev'"),
        "0"
    );
    // Nothing left to roll back.
    let out = ddb2pg_at(&["rollback", "--config", cfg], &db.url);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    // The log says what happened, in order.
    assert_eq!(
        db.scalar("SELECT string_agg(action || ' ' || from_schema || '>' || to_schema, ', ' ORDER BY id) FROM ddb2pg.promotions"),
        "promote (rolled back) staging_2>public, rollback staging_2>public"
    );
}
