//! `ddb2pg bench` end to end on a small scale: it must keep working (times are not asserted).

use ddb2pg::bench::BenchReport;

use crate::common::*;

#[test]
fn bench_writes_its_three_outputs() {
    let db = TestDb::new("bench");
    let scratch = Scratch::new("bench");
    let config = repo().join("pipeline.toml");
    let out = ddb2pg_cmd(Some(&db.url))
        .args([
            "bench", "--scale", "3000", "--runs", "2", "--table", "books", "--config",
        ])
        .arg(&config)
        .arg("--out")
        .arg(scratch.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let report: BenchReport = read_report(&scratch.path().join("bench.json"));
    assert_eq!(report.rows, 375, "books at scale 3000");
    assert_eq!(report.loads.len(), 2);
    assert_eq!(report.yardstick.len(), 2);
    assert_eq!(report.creates.len(), 2);
    assert!(report.ratio > 0.0, "{report:?}");
    assert!(
        report.create_ratio > 0.0 && report.replace_over_create > 0.0,
        "{report:?}"
    );
    assert!(report.creates.iter().all(|c| c.rows == 375), "{report:?}");
    // Every stage time is a real duration: work was done, and no wait is counted twice.
    for load in &report.loads {
        let st = &load.stages;
        for (k, v) in [
            ("read_busy_s", st.read_busy_s),
            ("decode_encode_busy_s", st.decode_encode_busy_s),
            ("decode_encode_blocked_s", st.decode_encode_blocked_s),
            ("write_busy_s", st.write_busy_s),
        ] {
            assert!(v >= 0.0, "{k} = {v}: {st:?}");
        }
        assert!(st.decode_encode_busy_s > 0.0, "{st:?}");
    }
    let md = std::fs::read_to_string(scratch.path().join("bench.md")).expect("bench.md");
    assert!(
        md.contains("Ratio yardstick/replace") && md.contains("yardstick/create"),
        "{md}"
    );
    let svg = std::fs::read_to_string(scratch.path().join("throughput.svg")).expect("svg");
    assert!(
        svg.starts_with("<svg") && svg.contains("replace run 2") && svg.contains("PostgreSQL COPY"),
        "svg content"
    );
    // The benchmarked table holds exactly the generated rows.
    assert_eq!(db.scalar("SELECT count(*) FROM ddb2pg_bench.books"), "375");
}

#[test]
fn bench_with_the_snapshot_as_a_source_loads_the_same_rows_both_ways() {
    let db = TestDb::new("bench_snap");
    let scratch = Scratch::new("bench_snap");
    let config = repo().join("pipeline.toml");
    let out = ddb2pg_cmd(Some(&db.url))
        .args([
            "bench",
            "--scale",
            "2000",
            "--runs",
            "2",
            "--snapshot",
            "--config",
        ])
        .arg(&config)
        .arg("--out")
        .arg(scratch.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let report: BenchReport = read_report(&scratch.path().join("bench.json"));
    assert_eq!(report.tables, ["orders", "order_items"], "{report:?}");
    assert_eq!(report.snapshots.len(), 2);
    assert_eq!(report.snapshot_creates.len(), 2);
    assert!(report.snapshot_bytes > 0, "{report:?}");
    // The same rows from either source: orders and their lines.
    assert!(
        report
            .snapshot_creates
            .iter()
            .all(|c| c.rows == report.rows && c.rows > 2000),
        "{report:?}"
    );
    assert!(
        report.snapshot_create_ratio > 0.0 && report.export_over_snapshot_create > 0.0,
        "{report:?}"
    );
    assert!(assert_order_items_match_orders(&db, "ddb2pg_bench") > 0);
    let md = std::fs::read_to_string(scratch.path().join("bench.md")).expect("bench.md");
    assert!(md.contains("ratio yardstick/create-from-snapshot"), "{md}");
}
