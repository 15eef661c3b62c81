//! `ddb2pg bench` end to end on a small scale: it must keep working (times are not asserted).

use std::process::Command;

use crate::common::*;

#[test]
fn bench_writes_its_three_outputs() {
    let db = TestDb::new("bench");
    let scratch = Scratch::new("bench");
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipeline.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_ddb2pg"))
        .args([
            "bench", "--scale", "3000", "--runs", "2", "--table", "books", "--config",
        ])
        .arg(&config)
        .arg("--out")
        .arg(scratch.path())
        .env("DDB2PG_TARGET_URL", &db.url)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(scratch.path().join("bench.json")).expect("bench.json"),
    )
    .expect("json");
    assert_eq!(report["rows"], 375, "books at scale 3000");
    assert_eq!(report["loads"].as_array().map(Vec::len), Some(2));
    assert_eq!(report["yardstick"].as_array().map(Vec::len), Some(2));
    assert!(
        report["ratio"].as_f64().is_some_and(|r| r > 0.0),
        "{report}"
    );
    // Every stage time is a real duration: work was done, and no wait is counted twice.
    for load in report["loads"].as_array().expect("loads") {
        let st = &load["stages"];
        for k in [
            "read_busy_s",
            "decode_encode_busy_s",
            "decode_encode_blocked_s",
            "write_busy_s",
        ] {
            let v = st[k].as_f64().unwrap_or(-1.0);
            assert!(v >= 0.0, "{k} = {v}: {st}");
        }
        assert!(st["decode_encode_busy_s"].as_f64() > Some(0.0), "{st}");
    }
    let md = std::fs::read_to_string(scratch.path().join("bench.md")).expect("bench.md");
    assert!(md.contains("Ratio yardstick/load"), "{md}");
    let svg = std::fs::read_to_string(scratch.path().join("throughput.svg")).expect("svg");
    assert!(
        svg.starts_with("<svg") && svg.contains("load run 2") && svg.contains("PostgreSQL COPY"),
        "svg content"
    );
    // The benchmarked table holds exactly the generated rows.
    assert_eq!(db.scalar("SELECT count(*) FROM ddb2pg_bench.books"), "375");
}
