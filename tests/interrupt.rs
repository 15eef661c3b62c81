//! Ctrl-C (SIGINT) and SIGTERM in the middle of a COPY: the process stops promptly, the
//! table being loaded is rolled back (a table the load created is dropped), it says how to
//! finish, and re-running the same command gives the exact table.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill {sig} {pid}");
}

#[test]
fn sigint_and_sigterm_roll_the_table_back_and_a_rerun_completes() {
    let db = TestDb::new("interrupt");
    let scratch = Scratch::new("interrupt");
    let data = scratch.path().join("data");
    ddb2pg::fixtures::generate(&data, 300_000, 5).expect("fixtures");
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
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
        let child = Command::new(env!("CARGO_BIN_EXE_ddb2pg"))
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
            err.contains("interrupted while loading orders") && err.contains("rolled back"),
            "{sig}: {}",
            describe(&out)
        );
        // The load created the table; nothing of it is left behind.
        assert_eq!(
            db.scalar("SELECT count(*) FROM pg_tables WHERE tablename = 'orders'"),
            "0",
            "{sig}"
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_ddb2pg"))
        .args(["load", "--config", cfg, "--no-progress"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(db.scalar("SELECT count(*) FROM orders"), "300000");
    let out = Command::new(env!("CARGO_BIN_EXE_ddb2pg"))
        .args(["verify", "--config", cfg])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
}
