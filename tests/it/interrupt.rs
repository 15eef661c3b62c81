//! Ctrl-C (SIGINT) and SIGTERM in the middle of a COPY: the process stops promptly, the
//! writers commit the chunks they hold with their checkpoints (the table holds exactly
//! the checkpointed rows), it says how to resume, and re-running the same command resumes
//! to the exact table.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill {sig} {pid}");
}

#[test]
fn sigint_and_sigterm_commit_what_is_in_flight_and_a_rerun_resumes_exactly() {
    let db = TestDb::new("interrupt");
    let scratch = Scratch::new("interrupt");
    let data = scratch.path().join("data");
    ddb2pg::fixtures::generate(&data, 300_000, 5).expect("fixtures");
    let repo = repo();
    let mapping = std::fs::read_to_string(repo.join("pipeline.toml")).expect("pipeline.toml");
    let orders = &mapping[mapping.find("name = \"orders\"").expect("orders")..];
    let orders = orders
        .replace(
            "fixtures/cloudshelf/orders",
            &data.join("orders").display().to_string(),
        )
        .replace(", references = \"users(id)\"", "");
    let config = scratch.path().join("c.toml");
    std::fs::write(
        &config,
        // One COPY connection: the decode side outpaces it, so the chunk queue is full when
        // the signal comes (jobs blocked on it must still stop).
        format!(
            "[target]\nurl = \"{}\"\n[tuning]\nconnections = 1\n\n[[tables]]\n{orders}",
            db.url
        ),
    )
    .expect("config");
    let cfg = config.to_str().expect("utf8");

    for sig in ["-INT", "-TERM"] {
        let child = ddb2pg_cmd(None)
            .args(["load", "--config", cfg, "--no-progress"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        // Wait until rows are streaming: a COPY of this database is running.
        let started = Instant::now();
        loop {
            let copying = db.scalar(&format!(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' AND query LIKE 'COPY%FROM STDIN%'",
                db.name
            ));
            if copying != "0" {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no COPY started within 60 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        signal(child.id(), sig);
        let out = child.wait_with_output().expect("wait");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{sig}: {}", describe(&out));
        assert!(
            err.contains("interrupted") && err.contains("re-run the same command to resume"),
            "{sig}: {}",
            describe(&out)
        );
        // What the writers held is committed, with its checkpoints: no more, no less.
        let rows: u64 = db
            .scalar("SELECT count(*) FROM orders")
            .parse()
            .expect("count");
        assert!(rows > 0, "{sig}: the chunk in flight was not committed");
        assert_eq!(
            rows.to_string(),
            db.scalar("SELECT sum(rows_done) FROM ddb2pg.splits"),
            "{sig}"
        );
        assert_eq!(
            db.scalar("SELECT count(DISTINCT id) FROM orders"),
            rows.to_string(),
            "{sig}"
        );
    }
    let out = ddb2pg_cmd(None)
        .args(["load", "--config", cfg, "--no-progress"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("resumed run"),
        "{}",
        describe(&out)
    );
    assert_eq!(db.scalar("SELECT count(*) FROM orders"), "300000");
    let out = ddb2pg_cmd(None)
        .args(["verify", "--config", cfg])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
}
