//! What a hostile but realistic user does to a load, each a way a cutover goes wrong: a
//! second run into a live run's table, promote of an unfinished load, a table without its
//! key, rejects after kills and failed writes, a U+0000 in a key, the exit code after a
//! resume, an index expression that tries a second statement.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Output};
use std::time::{Duration, Instant};

use crate::common::*;

/// `n` items `k{i}` with `n = i`; every `reject_every`-th has a text `n` (a reject).
fn items(n: usize, reject_every: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            if reject_every > 0 && i % reject_every == reject_every - 1 {
                format!(r#"{{"Item":{{"id":{{"S":"k{i}"}},"n":{{"S":"x{i}"}}}}}}"#)
            } else {
                format!(r#"{{"Item":{{"id":{{"S":"k{i}"}},"n":{{"N":"{i}"}}}}}}"#)
            }
        })
        .collect()
}

const TABLE_T: &str = r#"
[[tables]]
name = "t"
primary_key = ["id"]
source = { export = "EXPORT" }

[tables.columns]
id = { from = "id", type = "text" }
n = { from = "n", type = "TYPE" }
"#;

fn config(
    scratch: &Scratch,
    name: &str,
    url: &str,
    export: &Path,
    ty: &str,
    extra: &str,
) -> String {
    let path = scratch.path().join(name);
    let tables = TABLE_T
        .replace("EXPORT", export.to_str().expect("utf8"))
        .replace("TYPE", ty);
    write_config(&path, url, &format!("{tables}{extra}"));
    // Small chunks: many commits.
    let text = std::fs::read_to_string(&path)
        .expect("config")
        .replace("connections = 2", "connections = 2\nchunk_bytes = 4096");
    std::fs::write(&path, text).expect("config");
    path.to_str().expect("utf8").to_string()
}

/// Waits for a child with a deadline (a hang is a failure, not a stuck suite).
fn wait_for(mut child: Child, secs: u64, what: &str) -> Output {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!("{what}: still running after {secs} s\n{}", describe(&out));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_until(db: &TestDb, sql: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while db.scalar(sql) != "t" {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The table's rows, id → n.
fn rows_of(db: &TestDb, table: &str) -> BTreeMap<String, Option<String>> {
    db.query(&format!("SELECT id, n::text FROM {table}"))
        .into_iter()
        .map(|r| (r[0].clone().expect("id"), r[1].clone()))
        .collect()
}

fn expected_rows(n: usize, reject_every: usize) -> BTreeMap<String, Option<String>> {
    (0..n)
        .filter(|i| reject_every == 0 || i % reject_every != reject_every - 1)
        .map(|i| (format!("k{i}"), Some(i.to_string())))
        .collect()
}

fn primary_key(db: &TestDb, table: &str) -> String {
    db.scalar(&format!(
        "SELECT coalesce((SELECT string_agg(a.attname, ',') FROM pg_index i JOIN pg_attribute a \
           ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
           WHERE i.indrelid = '{table}'::regclass AND i.indisprimary), 'none')"
    ))
}

#[test]
fn a_second_run_never_shares_a_live_runs_table_and_an_abandoned_run_stops_committing() {
    let db = TestDb::new("live_run");
    let scratch = Scratch::new("live_run");
    let export = scratch.path().join("export");
    let data = items(3000, 0);
    write_export(&export, &[data[..1500].to_vec(), data[1500..].to_vec()]);
    let a = config(&scratch, "a.toml", &db.url, &export, "bigint", "");
    let b = config(&scratch, "b.toml", &db.url, &export, "numeric", "");
    // An existing empty table without the configured primary key.
    db.query("CREATE TABLE t (id text, n bigint)");

    // Hold the table so run A's first COPY waits: A is live, mid-load.
    let (rt, holder) = db.client();
    rt.block_on(holder.batch_execute("BEGIN; LOCK TABLE t IN SHARE MODE"))
        .expect("lock");
    let run_a = spawn_ddb2pg(&["load", "--config", &a, "--no-progress"], &db.url);
    wait_until(
        &db,
        "SELECT count(*) > 0 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE 'COPY%'",
        "run A's COPY to wait on the lock",
    );
    // Another mapping of the same table, and the same load with --fresh: both refuse.
    for (cfg, extra) in [(&b, None), (&a, Some("--fresh"))] {
        let mut args = vec!["load", "--config", cfg.as_str(), "--no-progress"];
        args.extend(extra);
        let out = wait_for(spawn_ddb2pg(&args, &db.url), 60, "a second run");
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("is live") && err.contains("run 1"), "{err}");
    }
    // A newer run takes the table over (as an abandon does): A must not commit again.
    db.query("UPDATE ddb2pg.runs SET state = 'abandoned' WHERE id = 1");
    rt.block_on(holder.batch_execute("COMMIT")).expect("unlock");
    let out = wait_for(run_a, 120, "run A");
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is abandoned now"),
        "{}",
        describe(&out)
    );
    assert_eq!(
        db.scalar("SELECT count(*) FROM t"),
        "0",
        "an abandoned run committed"
    );

    // Started again, the load ends with every row once and the configured key built.
    let out = ddb2pg_at(&["load", "--config", &a, "--no-progress"], &db.url);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(rows_of(&db, "t"), expected_rows(3000, 0));
    assert_eq!(primary_key(&db, "t"), "id");
    let out = ddb2pg_at(&["verify", "--config", &a], &db.url);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));

    // verify names a table whose key is gone instead of saying it matches.
    db.query("ALTER TABLE t DROP CONSTRAINT t_pkey");
    let report = scratch.path().join("verify.json");
    let out = ddb2pg_at(
        &[
            "verify",
            "--config",
            &a,
            "--report",
            report.to_str().expect("utf8"),
        ],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(4), "{}", describe(&out));
    let v = verify_report(&report);
    assert!(
        v.tables[0]
            .problems
            .iter()
            .any(|p| p.contains("no primary key")),
        "{:?}",
        v.tables[0]
    );
}

#[test]
fn promote_refuses_an_unfinished_load_and_carries_the_privileges_over() {
    let db = TestDb::new("promote_safe");
    let scratch = Scratch::new("promote_safe");
    let export = scratch.path().join("export");
    write_export(&export, &[items(400, 0)]);
    // n has duplicates nowhere, but `n % 2` does: this unique index fails after the data.
    let bad_index =
        "\n[[tables.indexes]]\nname = \"t_parity\"\nexpression = \"n % 2\"\nunique = true\n";
    let good = config(&scratch, "good.toml", &db.url, &export, "bigint", "");
    let bad = config(&scratch, "bad.toml", &db.url, &export, "bigint", bad_index);
    let role = format!("app_{}_{}", std::process::id(), unique());

    // Production, read by an application role through its grants and default privileges.
    let out = ddb2pg_at(&["load", "--config", &good, "--no-progress"], &db.url);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    db.query(&format!(
        "CREATE ROLE {role}; GRANT USAGE ON SCHEMA public TO {role}; GRANT SELECT ON public.t TO {role}; \
         ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {role}; \
         CREATE SCHEMA reports; CREATE VIEW reports.t_count AS SELECT count(*) FROM public.t"
    ));

    // A rehearsal whose load stopped (its unique index failed after the data).
    let out = ddb2pg_at(
        &[
            "load",
            "--config",
            &bad,
            "--schema",
            "staging",
            "--no-progress",
        ],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(db.scalar("SELECT count(*) FROM staging.t"), "400");
    for check in [true, false] {
        let mut args = vec!["promote", "--config", good.as_str(), "--from", "staging"];
        if check {
            args.push("--check");
        }
        let out = ddb2pg_at(&args, &db.url);
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("run 2") && err.contains("stopped"), "{err}");
    }
    assert_eq!(db.scalar("SELECT count(*) FROM public.t"), "400");
    assert_eq!(
        db.scalar("SELECT count(*) FROM pg_namespace WHERE nspname = 'staging'"),
        "1",
        "nothing was swapped"
    );
    // verify says the rehearsal is not done, though every row is there.
    let out = ddb2pg_at(
        &["verify", "--config", &bad, "--schema", "staging"],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(4), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("not done"),
        "{}",
        describe(&out)
    );

    // Loaded again without the bad index, it promotes, and the role still reads.
    let out = ddb2pg_at(
        &[
            "load",
            "--config",
            &good,
            "--schema",
            "staging",
            "--mode",
            "replace",
            "--no-progress",
        ],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let out = ddb2pg_at(
        &["promote", "--config", &good, "--from", "staging", "--check"],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("not carried: view reports.t_count"), "{said}");
    assert_eq!(
        db.scalar("SELECT count(*) FROM pg_namespace WHERE nspname = 'staging'"),
        "1",
        "--check swapped"
    );
    let out = ddb2pg_at(
        &["promote", "--config", &good, "--from", "staging"],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let read = db.query(&format!(
        "SET ROLE {role}; SELECT count(*) FROM public.t; RESET ROLE"
    ));
    assert_eq!(read, vec![vec![Some("400".to_string())]]);
    // The default privileges came too: a table created later is readable.
    db.query(&format!(
        "CREATE TABLE public.later (x int); SET ROLE {role}; SELECT count(*) FROM public.later; RESET ROLE"
    ));
    let out = ddb2pg_at(&["rollback", "--config", &good], &db.url);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let read = db.query(&format!(
        "SET ROLE {role}; SELECT count(*) FROM public.t; RESET ROLE"
    ));
    assert_eq!(read, vec![vec![Some("400".to_string())]]);
    // The role outlives the database: drop what it holds here, then the role.
    let (rt, c) = db.client();
    let _ = rt.block_on(c.batch_execute(&format!(
        "DROP VIEW reports.t_count; DROP OWNED BY {role}; DROP ROLE {role}"
    )));
}

/// The rejects file's lines as (split, position) → line, each line checked to be whole.
fn reject_file(path: &Path) -> Vec<(String, u64)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let text = String::from_utf8_lossy(line);
        let v: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("torn line {text}: {e}"));
        out.push((
            v["split"].as_str().expect("split").to_string(),
            v["position"].as_u64().expect("position"),
        ));
    }
    out.sort();
    out
}

/// The rejects `ddb2pg.rejects` holds, as (split, position).
fn recorded(db: &TestDb) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = db
        .query("SELECT split, position FROM ddb2pg.rejects")
        .into_iter()
        .map(|r| {
            (
                r[0].clone().expect("split"),
                r[1].clone().expect("pos").parse().expect("int"),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn the_rejects_file_holds_each_reject_once_after_kills_failed_writes_and_shared_workers() {
    let db = TestDb::new("rejects_once");
    let scratch = Scratch::new("rejects_once");
    let export = scratch.path().join("export");
    let mut files: Vec<Vec<String>> = (0..4)
        .map(|f| {
            items(10_000, 7)
                .into_iter()
                .map(|l| l.replace("\"k", &format!("\"f{f}k")))
                .collect()
        })
        .collect();
    // A U+0000 in a key (rejected: text cannot hold it), and a line that is not UTF-8.
    files[0].push(r#"{"Item":{"id":{"S":"nul\u0000key"},"n":{"N":"1"}}}"#.to_string());
    let mut latin1 = b"{\"Item\":{\"id\":{\"S\":\"caf".to_vec();
    latin1.extend_from_slice(b"\xe9\"},\"n\":{\"N\":\"1\"}}");
    files[1].push(String::new());
    write_export(&export, &files);
    // Put the raw Latin-1 bytes in place of the empty line, keeping the manifest true.
    {
        let name = export.join("data/file01.json.gz");
        let text = {
            use std::io::Read;
            let mut d = flate2::read::GzDecoder::new(std::fs::File::open(&name).expect("open"));
            let mut s = Vec::new();
            d.read_to_end(&mut s).expect("gunzip");
            s
        };
        let mut fixed = text[..text.len() - 1].to_vec();
        fixed.extend_from_slice(&latin1);
        fixed.push(b'\n');
        let gz = gzip(&fixed);
        std::fs::write(&name, &gz).expect("write");
        let manifest = std::fs::read_to_string(export.join("manifest-files.json")).expect("m");
        let fixed_manifest: String = manifest
            .lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).expect("json");
                if v["dataFileS3Key"]
                    .as_str()
                    .expect("key")
                    .ends_with("file01.json.gz")
                {
                    v["md5Checksum"] = serde_json::Value::String(b64_md5(&gz));
                }
                format!("{v}\n")
            })
            .collect();
        std::fs::write(export.join("manifest-files.json"), fixed_manifest).expect("m");
    }
    let cfg = config(&scratch, "t.toml", &db.url, &export, "bigint", "");
    let expected_rejects = 4 * (10_000 / 7) + 2;

    // 1. A rejects file that cannot be written stops the load; the re-run writes them all.
    let out = ddb2pg_at(
        &[
            "load",
            "--config",
            &cfg,
            "--no-progress",
            "--rejects",
            "/dev/full",
        ],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/dev/full") && err.contains("No space left"),
        "{err}"
    );
    let file = scratch.path().join("rejects.jsonl");
    let fpath = file.to_str().expect("utf8");
    let report = scratch.path().join("report.json");
    let out = ddb2pg_at(
        &[
            "load",
            "--config",
            &cfg,
            "--no-progress",
            "--rejects",
            fpath,
            "--report",
            report.to_str().expect("utf8"),
        ],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let lines = reject_file(&file);
    assert_eq!(lines.len(), expected_rejects, "each reject once");
    assert_eq!(lines, recorded(&db));
    assert_eq!(
        table_of(&load_report(&report), "t").run_rejected,
        expected_rejects as u64
    );
    let bytes = std::fs::read(&file).expect("read");
    assert!(
        bytes.windows(4).any(|w| w == b"caf\xe9"),
        "the Latin-1 line keeps its bytes"
    );
    assert!(
        String::from_utf8_lossy(&bytes).contains(r#""key":{"id":"nul\u0000key"}"#),
        "the U+0000 key is in the file as it was"
    );
    assert_eq!(rows_of(&db, "t").len(), 4 * 10_000 - 4 * (10_000 / 7));

    // 2. kill -9 at random points, then a re-run: still each reject once.
    let mut seed = test_seed("rejects_once_kill") | 1;
    let mut resumed = 0;
    for round in 0..4 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_millis(seed % 120);
        let mut child = spawn_ddb2pg(
            &[
                "load",
                "--config",
                &cfg,
                "--no-progress",
                "--mode",
                "replace",
                "--fresh",
                "--rejects",
                fpath,
            ],
            &db.url,
        );
        // Killed once its run is live (however slow the machine is to start it), at a
        // random point after.
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait().expect("wait").is_none()
            && db.scalar("SELECT (count(*) > 0)::text FROM ddb2pg.runs WHERE state = 'running'")
                != "true"
        {
            assert!(
                Instant::now() < deadline,
                "round {round}: the run never went live"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(delay);
        child.kill().expect("kill -9");
        let _ = child.wait();
        let out = ddb2pg_at(
            &[
                "load",
                "--config",
                &cfg,
                "--no-progress",
                "--mode",
                "replace",
                "--rejects",
                fpath,
            ],
            &db.url,
        );
        eprintln!("round {round}, killed after {delay:?}: {}", describe(&out));
        resumed += usize::from(String::from_utf8_lossy(&out.stdout).contains("resumed run"));
        // 0: killed before its run was recorded, so the last one is complete already.
        assert!(
            matches!(out.status.code(), Some(3 | 0)),
            "round {round}, killed after {delay:?}: {}",
            describe(&out)
        );
        let lines = reject_file(&file);
        assert_eq!(
            lines.len(),
            expected_rejects,
            "round {round}, killed after {delay:?}"
        );
        assert_eq!(lines, recorded(&db), "round {round}");
    }

    assert!(
        resumed > 0,
        "no kill landed mid-load: the data set is too small"
    );

    // 3. Three workers sharing one path: every line once, none torn.
    let workers: Vec<Child> = (0..3)
        .map(|_| {
            spawn_ddb2pg(
                &[
                    "load",
                    "--config",
                    &cfg,
                    "--no-progress",
                    "--mode",
                    "replace",
                    "--fresh",
                    "--rejects",
                    fpath,
                ],
                &db.url,
            )
        })
        .collect();
    let mut refused = 0;
    for w in workers {
        let out = wait_for(w, 120, "a worker");
        match out.status.code() {
            Some(3) => {}
            // --fresh while another worker's fresh run is live: refused, never shared.
            Some(1) if String::from_utf8_lossy(&out.stderr).contains("is live") => refused += 1,
            _ => panic!("{}", describe(&out)),
        }
    }
    assert!(refused < 3);
    let run = db.scalar("SELECT max(id) FROM ddb2pg.runs WHERE state = 'done'");
    let lines = reject_file(&file);
    assert_eq!(lines.len(), expected_rejects);
    assert_eq!(lines, recorded(&db));
    assert_eq!(
        db.scalar(&format!(
            "SELECT count(*) FROM ddb2pg.rejects WHERE run_id = {run}"
        )),
        expected_rejects.to_string()
    );
    // Three workers of one replace run on one path: the first plans it (held at its
    // TRUNCATE until the others wait to plan), the others join it while it loads.
    let joined = scratch.path().join("joined.jsonl");
    let jpath = joined.to_str().expect("utf8");
    let (rt, holder) = db.client();
    rt.block_on(holder.batch_execute("BEGIN; LOCK TABLE t IN SHARE MODE"))
        .expect("lock");
    let args = |fresh: bool| {
        let mut a = vec![
            "load",
            "--config",
            cfg.as_str(),
            "--no-progress",
            "--mode",
            "replace",
        ];
        if fresh {
            a.push("--fresh");
        }
        a.extend(["--rejects", jpath]);
        a
    };
    let mut workers = vec![spawn_ddb2pg(&args(true), &db.url)];
    wait_until(
        &db,
        "SELECT count(*) > 0 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE 'TRUNCATE%'",
        "the first worker's TRUNCATE to wait",
    );
    workers.push(spawn_ddb2pg(&args(false), &db.url));
    workers.push(spawn_ddb2pg(&args(false), &db.url));
    wait_until(
        &db,
        "SELECT count(*) >= 2 FROM pg_stat_activity WHERE datname = current_database() AND wait_event = 'advisory'",
        "the other workers to wait for the plan lock",
    );
    rt.block_on(holder.batch_execute("COMMIT")).expect("unlock");
    let mut codes = Vec::new();
    for w in workers {
        let out = wait_for(w, 120, "a worker");
        codes.push(out.status.code());
    }
    assert_eq!(
        codes,
        [Some(3); 3],
        "every worker ends with the run's rejects"
    );
    assert_eq!(
        reject_file(&joined).len(),
        expected_rejects,
        "three workers on one path"
    );
    assert_eq!(reject_file(&joined), recorded(&db));
}

#[test]
fn the_exit_code_after_a_resume_counts_the_rejects_of_the_first_attempt() {
    let db = TestDb::new("resume_exit");
    let scratch = Scratch::new("resume_exit");
    let e1 = scratch.path().join("e1");
    let e2 = scratch.path().join("e2");
    write_export(&e1, &[items(200, 20)]);
    write_export(&e2, &[items(200, 0)]);
    let path = scratch.path().join("two.toml");
    let two = format!(
        "{}{}",
        TABLE_T
            .replace("EXPORT", e1.to_str().expect("utf8"))
            .replace("TYPE", "bigint"),
        TABLE_T
            .replace("EXPORT", e2.to_str().expect("utf8"))
            .replace("TYPE", "bigint")
            .replace("name = \"t\"", "name = \"u\"")
    );
    write_config(&path, &db.url, &two);
    let cfg = path.to_str().expect("utf8");
    // Table u refuses its rows until the check goes: the first attempt stops there.
    db.query("CREATE TABLE u (id text, n bigint CHECK (n < 0))");
    let rejects = scratch.path().join("rejects.jsonl");
    let rpath = rejects.to_str().expect("utf8");
    let out = ddb2pg_at(
        &["load", "--config", cfg, "--no-progress", "--rejects", rpath],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(db.scalar("SELECT count(*) FROM t"), "190");
    db.query("ALTER TABLE u DROP CONSTRAINT u_n_check");
    let report = scratch.path().join("r.json");
    let out = ddb2pg_at(
        &[
            "load",
            "--config",
            cfg,
            "--no-progress",
            "--rejects",
            rpath,
            "--report",
            report.to_str().expect("utf8"),
        ],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let r = load_report(&report);
    assert_eq!(r.rejected(), 10);
    assert_eq!(table_of(&r, "t").run_rejected, 10);
    assert_eq!(table_of(&r, "u").run_rows, 200);
    assert_eq!(reject_file(&rejects).len(), 10);
    assert_eq!(primary_key(&db, "u"), "id");
}

#[test]
fn an_index_expression_that_tries_a_second_statement_is_refused_before_any_work() {
    let db = TestDb::new("index_sql");
    let scratch = Scratch::new("index_sql");
    let export = scratch.path().join("export");
    write_export(&export, &[items(10, 0)]);
    db.query("CREATE TABLE keep_me (x int)");
    for (key, text) in [
        ("expression", "n)); DROP TABLE keep_me; --"),
        ("where", "n > 0); DROP TABLE keep_me; SELECT (1"),
    ] {
        let extra = match key {
            "expression" => {
                format!("\n[[tables.indexes]]\nname = \"t_x\"\nexpression = \"{text}\"\n")
            }
            _ => format!(
                "\n[[tables.indexes]]\nname = \"t_x\"\ncolumns = [\"n\"]\nwhere = \"{text}\"\n"
            ),
        };
        let cfg = config(&scratch, "x.toml", &db.url, &export, "bigint", &extra);
        let out = ddb2pg_at(&["load", "--config", &cfg, "--no-progress"], &db.url);
        assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("indexes[0].{key}")) && err.contains("one SQL expression"),
            "{err}"
        );
        assert_eq!(db.scalar("SELECT to_regclass('keep_me') IS NOT NULL"), "t");
        assert_eq!(
            db.scalar("SELECT to_regclass('t') IS NULL"),
            "t",
            "no work was done"
        );
    }
}

/// A TCP forwarder to the PostgreSQL server that can cut every connection and refuse new
/// ones for a while: a server restart, as the load sees it.
struct Outage {
    port: u16,
    down_until: std::sync::Arc<std::sync::Mutex<Option<Instant>>>,
    live: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Outage {
    fn start() -> Outage {
        use std::net::{TcpListener, TcpStream};
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let down_until = std::sync::Arc::new(std::sync::Mutex::new(None::<Instant>));
        let live = std::sync::Arc::new(std::sync::Mutex::new(Vec::<TcpStream>::new()));
        let (down, conns) = (down_until.clone(), live.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let down_now = down
                    .lock()
                    .expect("lock")
                    .is_some_and(|t| Instant::now() < t);
                if down_now {
                    drop(client); // refused: the server is "restarting"
                    continue;
                }
                let Ok(server) = TcpStream::connect("127.0.0.1:5432") else {
                    continue;
                };
                {
                    let mut l = conns.lock().expect("lock");
                    l.push(client.try_clone().expect("clone"));
                    l.push(server.try_clone().expect("clone"));
                }
                for (mut from, mut to) in [
                    (
                        client.try_clone().expect("clone"),
                        server.try_clone().expect("clone"),
                    ),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Outage {
            port,
            down_until,
            live,
        }
    }

    /// Cuts every connection and refuses new ones for `d`.
    fn cut_for(&self, d: Duration) {
        *self.down_until.lock().expect("lock") = Some(Instant::now() + d);
        for s in self.live.lock().expect("lock").drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

#[test]
fn a_server_down_for_twenty_seconds_mid_load_does_not_stop_it() {
    let db = TestDb::new("outage");
    let scratch = Scratch::new("outage");
    let export = scratch.path().join("export");
    let data = items(120_000, 0);
    write_export(
        &export,
        &data
            .chunks(30_000)
            .map(<[String]>::to_vec)
            .collect::<Vec<_>>(),
    );
    let outage = Outage::start();
    let via = db.url.replace(":5432/", &format!(":{}/", outage.port));
    assert_ne!(via, db.url, "the test URL names port 5432: {}", db.url);
    let cfg = config(&scratch, "t.toml", &via, &export, "bigint", "");
    let report = scratch.path().join("r.json");
    let child = spawn_ddb2pg(
        &[
            "load",
            "--config",
            &cfg,
            "--no-progress",
            "--report",
            report.to_str().expect("utf8"),
        ],
        &via,
    );
    // Mid-load (some chunks in, the claims held), every connection goes for 20 s.
    wait_until(
        &db,
        "SELECT to_regclass('ddb2pg.chunks') IS NOT NULL",
        "the load's state",
    );
    wait_until(
        &db,
        "SELECT count(*) > 2 FROM ddb2pg.chunks",
        "the first chunks",
    );
    outage.cut_for(Duration::from_secs(20));
    let out = wait_for(child, 180, "the load through the outage");
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let r = load_report(&report);
    assert!(table_of(&r, "t").pg_retries >= 1, "{:?}", table_of(&r, "t"));
    assert_eq!(rows_of(&db, "t"), expected_rows(120_000, 0));
    assert_eq!(primary_key(&db, "t"), "id");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Control connection back"), "{err}");
}

#[test]
fn names_and_paths_postgresql_cannot_take_are_refused_before_any_work() {
    let db = TestDb::new("names");
    let scratch = Scratch::new("names");
    let export = scratch.path().join("export");
    write_export(&export, &[items(50, 0)]);
    // 63 bytes: the longest name, whose `_pkey` cut to 63 bytes would be the table's own.
    let long = "t".repeat(63);
    let cfg = config(&scratch, "long.toml", &db.url, &export, "bigint", "");
    let text = std::fs::read_to_string(&cfg)
        .expect("config")
        .replace("name = \"t\"", &format!("name = \"{long}\""));
    std::fs::write(&cfg, &text).expect("config");
    let out = ddb2pg_at(&["load", "--config", &cfg, "--no-progress"], &db.url);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(primary_key(&db, &format!("\"{long}\"")), "id");
    assert_eq!(rows_of(&db, &format!("\"{long}\"")), expected_rows(50, 0));
    // 64 bytes: refused, naming the key.
    std::fs::write(&cfg, text.replace(&long, &"u".repeat(64))).expect("config");
    let out = ddb2pg_at(&["load", "--config", &cfg, "--no-progress"], &db.url);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("tables[0].name"),
        "{}",
        describe(&out)
    );
    // A schema PostgreSQL would cut, a report path that is a folder: refused.
    let ok = config(&scratch, "ok.toml", &db.url, &export, "bigint", "");
    let long_schema = "s".repeat(64);
    let folder = scratch.path().to_str().expect("utf8").to_string();
    for args in [
        vec!["--schema", long_schema.as_str()],
        vec!["--report", folder.as_str()],
    ] {
        let mut all = vec!["load", "--config", ok.as_str(), "--no-progress"];
        all.extend(args.iter().copied());
        let out = ddb2pg_at(&all, &db.url);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", describe(&out));
    }
    assert_eq!(
        db.scalar("SELECT to_regclass('public.t') IS NULL"),
        "t",
        "no work was done"
    );
}

/// A fresh database and an export of `files` with its config (`n` as `ty`).
fn one_table(tag: &str, files: &[Vec<String>], ty: &str) -> (TestDb, Scratch, String) {
    let db = TestDb::new(tag);
    let scratch = Scratch::new(tag);
    let export = scratch.path().join("export");
    write_export(&export, files);
    let cfg = config(&scratch, &format!("{tag}.toml"), &db.url, &export, ty, "");
    (db, scratch, cfg)
}

#[test]
fn repeated_keys_are_reported_with_their_lines_and_an_upsert_keeps_each_keys_last_line() {
    let line =
        |id: &str, n: i64| format!(r#"{{"Item":{{"id":{{"S":"{id}"}},"n":{{"N":"{n}"}}}}}}"#);
    // k3 twice in one file (lines 4 and 11), k5 in both files (lines 6 and 11).
    let mut f0: Vec<String> = (0..10).map(|i| line(&format!("k{i}"), i)).collect();
    f0.push(line("k3", 103));
    let mut f1: Vec<String> = (10..20).map(|i| line(&format!("k{i}"), i)).collect();
    f1.push(line("k5", 205));
    let (db, _scratch, cfg) = one_table("dup_keys", &[f0, f1], "bigint");

    let out = ddb2pg_at(&["load", "--config", &cfg, "--no-progress"], &db.url);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    for want in [
        "2 value(s) of (id) appear more than once",
        "id = k3: 2 rows, at ",
        "file00.json.gz line 4, ",
        "file00.json.gz line 11",
        "id = k5: 2 rows, at ",
        "file00.json.gz line 6, ",
        "file01.json.gz line 11",
        "--mode upsert --fresh",
    ] {
        assert!(err.contains(want), "stderr lacks {want:?}:\n{err}");
    }
    assert!(
        !err.contains("re-run the same command to resume"),
        "a resume can never build this key, the hint must not say so:\n{err}"
    );

    // The advice works: the partial table goes, the upsert keys it and keeps last lines.
    let out = ddb2pg_at(
        &[
            "load",
            "--config",
            &cfg,
            "--no-progress",
            "--mode",
            "upsert",
            "--fresh",
        ],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(primary_key(&db, "t"), "id");
    let mut rows = rows_of(&db, "t");
    let k5 = rows.remove("k5").flatten();
    assert!(
        matches!(k5.as_deref(), Some("5" | "205")),
        "k5 holds one of its two items, got {k5:?}"
    );
    let mut want = expected_rows(20, 0);
    want.remove("k5");
    want.insert("k3".into(), Some("103".into()));
    assert_eq!(rows, want);
}

#[test]
fn many_one_item_files_load_whole_with_claims_and_marks_in_batches() {
    let files: Vec<Vec<String>> = items(1500, 0).into_iter().map(|l| vec![l]).collect();
    let (db, _scratch, cfg) = one_table("tiny_files", &files, "bigint");
    let out = ddb2pg_at(&["load", "--config", &cfg, "--no-progress"], &db.url);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(rows_of(&db, "t"), expected_rows(1500, 0));
    assert_eq!(
        db.scalar("SELECT count(*) FILTER (WHERE state = 'done' AND rows_done = 1 AND claims = 1)::text || '/' || count(*) FROM ddb2pg.splits"),
        "1500/1500"
    );
}

#[test]
fn a_load_waiting_on_a_lock_says_who_holds_it() {
    let (db, _scratch, cfg) = one_table("lock_wait", &[items(300, 0)], "bigint");
    db.query("CREATE TABLE t (id text PRIMARY KEY, n bigint)");
    let (rt, holder) = db.client();
    rt.block_on(
        holder
            .batch_execute("SET application_name = 'reporting'; BEGIN; LOCK TABLE t IN SHARE MODE"),
    )
    .expect("lock");
    let holder_pid = rt
        .block_on(holder.query_one("SELECT pg_backend_pid()", &[]))
        .expect("pid")
        .get::<_, i32>(0);
    let load = spawn_ddb2pg(&["load", "--config", &cfg, "--no-progress"], &db.url);
    wait_until(
        &db,
        "SELECT count(*) > 0 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND application_name = 'ddb2pg'",
        "the load to wait on the lock",
    );
    std::thread::sleep(Duration::from_secs(13));
    rt.block_on(holder.batch_execute("COMMIT")).expect("unlock");
    let out = wait_for(load, 60, "the load after the lock went");
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("held by session {holder_pid} (user "))
            && err.contains("application 'reporting'")
            && err.contains(&format!("pg_terminate_backend({holder_pid})")),
        "the wait is not explained:\n{err}"
    );
    assert_eq!(rows_of(&db, "t"), expected_rows(300, 0));
}
