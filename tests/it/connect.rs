//! The target connection against a second, TLS-only PostgreSQL (`scripts/pg-tls.sh`:
//! port 5433, a CA and a server certificate for `localhost` made by the script,
//! `hostssl … scram-sha-256`, `hostnossl … reject`, a role with a password): every
//! `sslmode` check, passwords from the environment and from a password file, a wrong
//! password, and a load, a verify and a promote over TLS — and the password in no output.
//! Skips with a message when the cluster's variables are absent, unless
//! `DDB2PG_REQUIRE_EMULATORS=1` (as `scripts/test.sh` sets), where it fails.

use std::path::Path;
use std::process::{Command, Output};

use crate::common::*;

struct Tls {
    port: String,
    ca: String,
    other_ca: String,
    password: String,
}

fn tls() -> Option<Tls> {
    let var = |k: &str| std::env::var(k).ok();
    match (
        var("DDB2PG_TLS_PORT"),
        var("DDB2PG_TLS_CA"),
        var("DDB2PG_TLS_OTHER_CA"),
        var("DDB2PG_TLS_PASSWORD"),
    ) {
        (Some(port), Some(ca), Some(other_ca), Some(password)) => Some(Tls {
            port,
            ca,
            other_ca,
            password,
        }),
        _ => {
            assert!(
                std::env::var("DDB2PG_REQUIRE_EMULATORS").is_err(),
                "DDB2PG_REQUIRE_EMULATORS is set but the TLS cluster's variables are not: run `bash scripts/pg-tls.sh up; eval \"$(bash scripts/pg-tls.sh env)\"`"
            );
            eprintln!("SKIP: no TLS cluster (DDB2PG_TLS_PORT unset): run scripts/pg-tls.sh up to test TLS and passwords");
            None
        }
    }
}

/// Runs ddb2pg against `url` with extra environment variables (the libpq ones cleared).
fn run(url: &str, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c: Command = ddb2pg_cmd(Some(url));
    for k in [
        "PGPASSWORD",
        "PGPASSFILE",
        "PGSSLMODE",
        "PGSSLROOTCERT",
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGDATABASE",
    ] {
        c.env_remove(k);
    }
    // No ~/.pgpass or ~/.postgresql of the machine's user.
    c.env("HOME", "/nonexistent");
    for (k, v) in env {
        c.env(k, v);
    }
    c.args(args).output().expect("run ddb2pg")
}

/// `id|n` rows of a table over TLS, read by psql.
fn rows(url: &str, password: &str, table: &str) -> Vec<String> {
    let out = Command::new("psql")
        .arg(url)
        .args([
            "-Atc",
            &format!("SELECT id || '|' || n FROM {table} ORDER BY id"),
        ])
        .env("PGPASSWORD", password)
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn export(scratch: &Scratch) -> (std::path::PathBuf, Vec<String>) {
    let dir = scratch.path().join("export");
    let lines: Vec<String> = (0..250)
        .map(|i| format!(r#"{{"Item":{{"id":{{"S":"k{i:03}"}},"n":{{"N":"{i}"}}}}}}"#))
        .collect();
    write_export(&dir, &[lines[..100].to_vec(), lines[100..].to_vec()]);
    let want = (0..250).map(|i| format!("k{i:03}|{i}")).collect();
    (dir, want)
}

fn config(scratch: &Scratch, export: &Path) -> String {
    let path = scratch.path().join("tls.toml");
    write_config(
        &path,
        "postgresql://nobody@127.0.0.1:1/none",
        &format!(
            "[[tables]]\nname = \"t\"\nprimary_key = [\"id\"]\nsource = {{ export = \"{}\" }}\n\n[tables.columns]\nid = {{ type = \"text\" }}\nn = {{ type = \"bigint\" }}\n",
            export.display()
        ),
    );
    path.to_str().expect("utf8").to_string()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn every_sslmode_check_holds_against_a_tls_only_server_and_no_password_is_printed() {
    let Some(t) = tls() else { return };
    let scratch = Scratch::new("tls");
    let (dir, want) = export(&scratch);
    let cfg = config(&scratch, &dir);
    let schema = format!("s{}_{}", std::process::id(), unique());
    let base = |host: &str, q: &str| format!("postgresql://loader@{host}:{}/tlsdb?{q}", t.port);
    let pw = [("PGPASSWORD", t.password.as_str())];
    let report = scratch.path().join("report.json");
    let rejects = scratch.path().join("rejects.jsonl");
    let mut outputs = Vec::new();

    // require: encrypted, not verified (as libpq); the password from PGPASSWORD.
    let url = base("127.0.0.1", "sslmode=require");
    let traced = [pw[0], ("DDB2PG_LOG", "trace")];
    let out = run(
        &url,
        &traced,
        &[
            "load",
            "--config",
            &cfg,
            "--no-progress",
            "--schema",
            &schema,
            "--report",
            report.to_str().expect("utf8"),
            "--rejects",
            rejects.to_str().expect("utf8"),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(rows(&url, &t.password, &format!("{schema}.t")), want);
    outputs.push(text(&out));

    // verify-full with the right CA, by the certificate's name: loads, verifies.
    let full = base(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", t.ca),
    );
    let out = run(
        &full,
        &pw,
        &[
            "load",
            "--config",
            &cfg,
            "--no-progress",
            "--schema",
            &schema,
            "--mode",
            "replace",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    outputs.push(text(&out));
    // An upsert's merges over TLS: every row is already there and equal.
    let out = run(
        &full,
        &pw,
        &[
            "load",
            "--config",
            &cfg,
            "--no-progress",
            "--schema",
            &schema,
            "--mode",
            "upsert",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("upsert inserted 0, updated 0, unchanged 250"),
        "{}",
        text(&out)
    );
    outputs.push(text(&out));
    let out = run(
        &full,
        &pw,
        &["verify", "--config", &cfg, "--schema", &schema],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    outputs.push(text(&out));

    // Each check, seen by `status` (one connection): another CA, or another host name
    // with verify-full, refused saying which check; verify-ca checks the chain only (the
    // other name is accepted); disable refused by the server, saying what to do.
    let cases = [
        (
            "localhost",
            format!("sslmode=verify-full&sslrootcert={}", t.other_ca),
            1,
            "not signed by a CA in sslrootcert",
        ),
        (
            "127.0.0.1",
            format!("sslmode=verify-full&sslrootcert={}", t.ca),
            1,
            "not for host 127.0.0.1",
        ),
        (
            "127.0.0.1",
            format!("sslmode=verify-ca&sslrootcert={}", t.ca),
            0,
            "): done, started",
        ),
        (
            "127.0.0.1",
            "sslmode=disable".to_string(),
            1,
            "the server requires TLS",
        ),
        // prefer and allow end on TLS (the server takes nothing else).
        (
            "localhost",
            "sslmode=prefer".to_string(),
            0,
            "): done, started",
        ),
        (
            "127.0.0.1",
            "sslmode=allow".to_string(),
            0,
            "): done, started",
        ),
    ];
    for (host, query, code, says) in cases {
        let out = run(
            &base(host, &query),
            &pw,
            &["status", "--config", &cfg, "--schema", &schema],
        );
        assert_eq!(out.status.code(), Some(code), "{query}: {}", text(&out));
        assert!(text(&out).contains(says), "{query}: {}", text(&out));
        outputs.push(text(&out));
    }

    // The password from a password file (0600), the host and user from the environment.
    let passfile = scratch.path().join("pgpass");
    std::fs::write(
        &passfile,
        format!(
            "localhost:{}:tlsdb:loader:{}\n",
            t.port,
            t.password.replace('\\', "\\\\").replace(':', "\\:")
        ),
    )
    .expect("write");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let env = [
        ("PGPASSFILE", passfile.to_str().expect("utf8")),
        ("PGHOST", "localhost"),
        ("PGPORT", t.port.as_str()),
        ("PGUSER", "loader"),
        ("PGDATABASE", "tlsdb"),
        ("PGSSLMODE", "verify-full"),
        ("PGSSLROOTCERT", t.ca.as_str()),
    ];
    let stage = format!("{schema}_stage");
    let out = run(
        "postgresql://",
        &env,
        &[
            "load",
            "--config",
            &cfg,
            "--no-progress",
            "--schema",
            &stage,
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    outputs.push(text(&out));
    // A promote over TLS.
    let out = run(
        "postgresql://",
        &env,
        &[
            "promote",
            "--config",
            &cfg,
            "--from",
            &stage,
            "--to",
            &schema,
            "--discard-previous",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    outputs.push(text(&out));
    assert_eq!(rows(&full, &t.password, &format!("{schema}.t")), want);

    // A wrong password: refused (exit 1), neither password echoed.
    let out = run(
        &url,
        &[("PGPASSWORD", "not-the-password-42")],
        &["status", "--config", &cfg, "--schema", &schema],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("password authentication failed"),
        "{}",
        text(&out)
    );
    assert!(
        !text(&out).contains("not-the-password-42"),
        "{}",
        text(&out)
    );
    outputs.push(text(&out));

    // The password is in no output, report, rejects file or ddb2pg table.
    outputs.push(std::fs::read_to_string(&report).expect("report"));
    outputs.push(std::fs::read_to_string(&rejects).unwrap_or_default());
    let dump = Command::new("psql")
        .arg(&full)
        .args([
            "-Atc",
            "SELECT concat_ws(' ', (SELECT string_agg(t::text, ' ') FROM ddb2pg.runs t), \
             (SELECT string_agg(t::text, ' ') FROM ddb2pg.run_tables t), \
             (SELECT string_agg(t::text, ' ') FROM ddb2pg.splits t), \
             (SELECT string_agg(t::text, ' ') FROM ddb2pg.chunks t), \
             (SELECT string_agg(t::text, ' ') FROM ddb2pg.rejects t), \
             (SELECT string_agg(t::text, ' ') FROM ddb2pg.promotions t))",
        ])
        .env("PGPASSWORD", &t.password)
        .output()
        .expect("psql");
    outputs.push(String::from_utf8_lossy(&dump.stdout).into_owned());
    for o in &outputs {
        assert!(!o.contains(&t.password), "the password was printed:\n{o}");
    }
}

/// boto3's `generate_db_auth_token` at a fixed time (boto3 is in the emulators'
/// virtualenv, beside moto).
fn boto3_token(host: &str, port: u16, user: &str, token: Option<&str>) -> Option<String> {
    let python = repo().join(".emulators/venv/bin/python");
    if !python.exists() {
        assert!(
            std::env::var("DDB2PG_REQUIRE_EMULATORS").is_err(),
            "DDB2PG_REQUIRE_EMULATORS is set but {} is absent: run scripts/emulators.sh up",
            python.display()
        );
        eprintln!(
            "SKIP: no {} (scripts/emulators.sh up installs boto3 there)",
            python.display()
        );
        return None;
    }
    let script = r#"
import sys, datetime
from unittest import mock
import boto3
fixed = datetime.datetime(2026, 12, 1, 12, 34, 56)
host, port, user, token = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] or None
with mock.patch("botocore.auth.get_current_datetime", return_value=fixed):
    c = boto3.client("rds", region_name="eu-west-1", aws_access_key_id="AKIDEXAMPLE",
                     aws_secret_access_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                     aws_session_token=token)
    sys.stdout.write(c.generate_db_auth_token(host, port, user))
"#;
    let out = Command::new(python)
        .args([
            "-c",
            script,
            host,
            &port.to_string(),
            user,
            token.unwrap_or(""),
        ])
        .env_remove("AWS_PROFILE")
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "boto3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).expect("utf8"))
}

#[test]
fn rds_iam_tokens_match_boto3_byte_for_byte() {
    use ddb2pg::sink::rds_iam::{auth_token, Credentials};
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_796_128_496);
    for (host, port, user, session) in [
        (
            "mydb.abc123xyz.eu-west-1.rds.amazonaws.com",
            5432,
            "loader",
            None,
        ),
        (
            "cluster-1.cluster-abc.eu-west-1.rds.amazonaws.com",
            6543,
            "app user@x+1",
            Some("FwoGZXIvYXdzE//session+token/with=odd&chars"),
        ),
    ] {
        let Some(want) = boto3_token(host, port, user, session) else {
            return;
        };
        let creds = Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: session.map(str::to_string),
        };
        assert_eq!(auth_token(host, port, user, "eu-west-1", &creds, at), want);
    }
}

#[test]
fn a_server_that_accepts_and_never_answers_fails_in_seconds_saying_so() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    // Accepts every connection and holds it, answering nothing.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    let scratch = Scratch::new("silent");
    let (dir, _) = export(&scratch);
    let cfg = config(&scratch, &dir);
    let url =
        format!("postgresql://nobody@127.0.0.1:{port}/none?connect_timeout=2&sslmode=disable");
    let child = ddb2pg_cmd(Some(&url))
        .args(["status", "--config", &cfg])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start");
    let mut child = child;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("status still waiting on a server that never answers after 60 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("no answer within 2 s (connect_timeout)"),
        "{}",
        text(&out)
    );
}
