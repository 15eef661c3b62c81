//! Backpressure: when PostgreSQL stops taking rows, the readers stop too. The target table
//! is locked by another session so every COPY waits; the load must then stop reading its
//! input far short of the end, and hold little memory, until the lock goes — and then
//! finish with every row.

use std::process::Stdio;
use std::time::Duration;

use crate::common::*;

fn proc_field(pid: u32, file: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn a_stalled_sink_stops_the_readers() {
    if !std::path::Path::new("/proc/self/io").exists() {
        eprintln!("SKIP a_stalled_sink_stops_the_readers: no /proc/<pid>/io on this system");
        return;
    }
    let db = TestDb::new("backpressure");
    let scratch = Scratch::new("backpressure");
    let data = scratch.path().join("data");
    ddb2pg::fixtures::generate(&data, 200_000, 3).expect("fixtures");
    let orders_dir = data.join("orders");
    let plan = ddb2pg::source::export::open(&orders_dir).expect("export");
    let input_bytes: u64 = plan.compressed_bytes();
    // Each reader hashes a local file whole before streaming it (constant memory).
    let largest_file = plan.files.iter().map(|f| f.size).max().unwrap_or(0);
    let repo = repo();
    let mapping = std::fs::read_to_string(repo.join("pipeline.toml")).expect("pipeline.toml");
    let orders_toml = &mapping[mapping.find("name = \"orders\"").expect("orders")..];
    // The orders mapping alone: its foreign key points at users, not loaded here.
    let orders_toml = orders_toml
        .replace(
            "fixtures/cloudshelf/orders",
            &orders_dir.display().to_string(),
        )
        .replace(", references = \"users(id)\"", "");
    let config = scratch.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[target]\nurl = \"{}\"\n[tuning]\nconnections = 2\npage_bytes = 1048576\nreaders = 2\ncpu_threads = 2\n\n[[tables]]\n{orders_toml}",
            db.url
        ),
    )
    .expect("config");
    let cfg = config_with_url(&config, &db.url);
    let spec = &cfg.tables[0];

    let (rt, locker) = db.client();
    rt.block_on(async {
        locker
            .batch_execute(&ddb2pg::sink::ddl::create_table_sql("public", spec, true))
            .await
            .expect("create");
        locker
            .batch_execute("BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
            .await
            .expect("lock");
    });
    let mut child = ddb2pg_cmd(None)
        .args([
            "load",
            "--config",
            config.to_str().expect("utf8"),
            "--mode",
            "append",
            "--no-progress",
        ])
        .arg("--rejects")
        .arg(scratch.path().join("rejects.jsonl"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    // Let it run into the wall, then watch: reading must have stopped.
    std::thread::sleep(Duration::from_secs(4));
    let read_a = proc_field(pid, "io", "rchar:").expect("rchar");
    std::thread::sleep(Duration::from_secs(2));
    let read_b = proc_field(pid, "io", "rchar:").expect("rchar");
    let rss_kb = proc_field(pid, "status", "VmRSS:").expect("rss");
    assert!(
        child.try_wait().expect("wait").is_none(),
        "the load must be waiting on the lock"
    );
    assert_eq!(
        read_a, read_b,
        "input is still being read while PostgreSQL takes nothing"
    );
    // Two readers: each hashed the file it claimed, then streamed what the queues hold.
    let bound = 2 * largest_file + input_bytes / 4;
    assert!(
        read_b < bound,
        "read {read_b} of {input_bytes} input bytes with the sink stalled (bound {bound}): the queues are not bounded"
    );
    assert!(rss_kb < 200 * 1024, "RSS {rss_kb} kB while stalled");
    // Release the lock: the load finishes with every row.
    rt.block_on(async { locker.batch_execute("ROLLBACK").await.expect("unlock") });
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(db.scalar("SELECT count(*) FROM orders"), "200000");
    eprintln!("stalled at {read_b} of {input_bytes} compressed input bytes, RSS {rss_kb} kB");
}
