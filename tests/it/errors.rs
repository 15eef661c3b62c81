//! How failures are told apart and told: a client-side PostgreSQL error is not "connection
//! lost" (it would fail again on a new connection), a server that goes away is; a writer's
//! own error reaches the user as it is (not relabelled); a column default is converted
//! once, by the column's rules, and that value is what rows get and what the DDL declares.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;
use ddb2pg::error::Error;

#[test]
fn client_side_errors_are_not_connection_losses() {
    let db = TestDb::new("err_classes");
    let rt = runtime();
    rt.block_on(async {
        let c = connect(&db.url).await;
        // A parameter that does not serialise to the statement's type: the client refuses
        // it before anything is sent.
        let e = c
            .query("SELECT $1::int4", &[&"not an int"])
            .await
            .expect_err("a text for an int4 parameter");
        assert!(e.as_db_error().is_none(), "client-side: {e}");
        let mapped = Error::pg("t", "query", &e);
        assert!(
            matches!(mapped, Error::Postgres { .. }) && !mapped.retryable(),
            "a client-side error is retried: {mapped}"
        );

        // A statement the client cannot send (U+0000 in its text) is refused before it
        // leaves, as an I/O error of tokio-postgres's own: not a lost connection.
        let e = c
            .batch_execute("SELECT '\0'")
            .await
            .expect_err("a NUL in the query text");
        assert!(e.as_db_error().is_none(), "client-side: {e}");
        assert!(!Error::pg("t", "query", &e).retryable(), "{e:?}");
        // The connection is still there for the next statement.
        c.batch_execute("SELECT 1").await.expect("still connected");

        // A server-side refusal of the statement itself fails at once too.
        let e = c
            .batch_execute("SELECT * FROM no_such_table")
            .await
            .expect_err("undefined table");
        assert!(!Error::pg("t", "query", &e).retryable());

        // The server ends the session (57P01): a new connection may succeed.
        let victim = connect(&db.url).await;
        let pid: i32 = victim
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .expect("pid")
            .get(0);
        c.execute("SELECT pg_terminate_backend($1)", &[&pid])
            .await
            .expect("terminate");
        let e = victim
            .batch_execute("SELECT 1")
            .await
            .expect_err("the session was ended");
        let mapped = Error::pg("t", "query", &e);
        assert!(
            mapped.retryable(),
            "a lost connection is not retried: {mapped}"
        );
        // Once closed, every later call says so, and is retryable as well.
        let e = victim.batch_execute("SELECT 1").await.expect_err("closed");
        assert!(Error::pg("t", "query", &e).retryable());
    });
}

#[test]
fn a_refused_connection_is_retried_a_bad_database_is_not() {
    let rt = runtime();
    rt.block_on(async {
        // Nothing listens on port 1: the connection is refused (the server may come back).
        let e = ddb2pg::sink::connect("postgresql://postgres@127.0.0.1:1/x?connect_timeout=2")
            .await
            .expect_err("port 1");
        assert!(e.retryable(), "{e}");
        let missing = admin_url().replace("/postgres", "/ddb2pg_no_such_database");
        let e = ddb2pg::sink::connect(&missing)
            .await
            .expect_err("missing database");
        assert!(!e.retryable(), "a missing database is retried: {e}");
    });
}

#[test]
fn io_errors_name_their_cause_once() {
    let e = Error::Io {
        what: "write the report /x/r.json".into(),
        source: std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied here"),
    };
    let shown = format!("{:#}", anyhow::Error::from(e));
    assert_eq!(shown.matches("denied here").count(), 1, "{shown}");
    assert!(shown.starts_with("write the report /x/r.json"), "{shown}");
    // Inside a stopped load too (its message shows the inner error with its causes).
    let stopped = Error::Stopped {
        run: 3,
        inner: Box::new(Error::Io {
            what: "start a reader thread".into(),
            source: std::io::Error::other("no more threads"),
        }),
    };
    let shown = format!("{:#}", anyhow::Error::from(stopped));
    assert_eq!(shown.matches("no more threads").count(), 1, "{shown}");
    assert!(
        shown.starts_with("start a reader thread: no more threads\n  run 3 stopped"),
        "{shown}"
    );
}

/// `default = 0` on a timestamptz column is epoch time, as a number in that column is:
/// the table is created with that default, and items without the attribute get it.
#[test]
fn a_numeric_default_on_a_timestamp_is_epoch_time() {
    let db = TestDb::new("err_default");
    let dir = Scratch::new("err_default");
    write_export(
        &dir.path().join("t"),
        &[vec![
            r#"{"Item":{"id":{"S":"a"},"at":{"N":"86400"}}}"#.to_string(),
            r#"{"Item":{"id":{"S":"b"}}}"#.to_string(),
            r#"{"Item":{"id":{"S":"c"},"at":{"NULL":true}}}"#.to_string(),
        ]],
    );
    let config = dir.path().join("pipeline.toml");
    write_config(
        &config,
        &db.url,
        r#"[[tables]]
name = "t"
primary_key = ["id"]
source = { export = "t" }
[tables.columns]
id = { from = "id", type = "text" }
at = { from = "at", type = "timestamptz", default = 0 }
ms = { from = "ms", type = "timestamptz", unit = "ms", default = 1500 }
"#,
    );
    let out = ddb2pg(&["load", "--config", path(&config), "--no-progress"]);
    assert!(out.status.success(), "{}", describe(&out));
    let rows = db.query("SET TIME ZONE 'UTC'; SELECT id, at::text, ms::text FROM t ORDER BY id");
    let want = |id: &str, at: &str| {
        vec![
            Some(id.to_string()),
            Some(at.to_string()),
            Some("1970-01-01 00:00:01.5+00".to_string()),
        ]
    };
    assert_eq!(
        rows,
        vec![
            want("a", "1970-01-02 00:00:00+00"),
            want("b", "1970-01-01 00:00:00+00"),
            want("c", "1970-01-01 00:00:00+00"),
        ]
    );
    // The DDL declares the same value: a row inserted later gets it too.
    db.query("INSERT INTO t (id) VALUES ('later')");
    assert_eq!(
        db.scalar(
            "SET TIME ZONE 'UTC'; SELECT at::text || ' ' || ms::text FROM t WHERE id = 'later'"
        ),
        "1970-01-01 00:00:00+00 1970-01-01 00:00:01.5+00"
    );
}

/// A split taken over by another worker (its lease given to someone else) stops this
/// worker's writer; the user is told exactly that, not that "the pool stopped".
#[test]
fn a_writers_own_error_reaches_the_user_as_it_is() {
    let db = TestDb::new("err_relabel");
    let dir = Scratch::new("err_relabel");
    let lines: Vec<String> = (0..60_000)
        .map(|i| {
            format!(
                r#"{{"Item":{{"id":{{"S":"k{i:06}"}},"pad":{{"S":"{}"}}}}}}"#,
                "x".repeat(200)
            )
        })
        .collect();
    write_export(&dir.path().join("t"), &[lines]);
    let config = dir.path().join("pipeline.toml");
    write_config(
        &config,
        &db.url,
        r#"[[tables]]
name = "t"
primary_key = ["id"]
source = { export = "t" }
[tables.columns]
id = { from = "id", type = "text" }
pad = { from = "pad", type = "text" }
"#,
    );
    // Small chunks, so the writer checkpoints often while the split is read.
    let text = std::fs::read_to_string(&config).expect("config");
    let text = text.replace(
        "[tuning]\n",
        "[tuning]\nchunk_bytes = 65536\npage_bytes = 65536\nbatch_rows = 256\n",
    );
    std::fs::write(&config, text).expect("config");
    let mut child = ddb2pg_cmd(None)
        .args(["load", "--config", path(&config), "--no-progress"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the load");
    // Once the split is held and a chunk is in, hand the split to another worker.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = db.scalar("SELECT to_regclass('ddb2pg.splits') IS NOT NULL") == "t";
        if ready
            && !db
                .query(
                    "UPDATE ddb2pg.splits SET worker = 'another-worker' \
                     WHERE state = 'running' AND chunks > 0 RETURNING split",
                )
                .is_empty()
        {
            break;
        }
        assert!(
            child.try_wait().expect("wait").is_none(),
            "the load ended before its split could be taken over"
        );
        assert!(Instant::now() < deadline, "the split never got a chunk");
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().expect("load");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("another worker took this split over"),
        "not the writer's own error: {err}"
    );
    assert!(!err.contains("decode/encode pool"), "relabelled: {err}");
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}
