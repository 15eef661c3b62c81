//! `load --rehearsal DIR`: one rehearsal in one go — load into staging, verify, the
//! checks, and one report folder (markdown, JSON, SVG) with each table's timings and a
//! projection onto N times the data; a missed check is exit 4 and said in the report; a
//! stall of the target shows in the throughput timeline (sampled every 100 ms); `check
//! --out` writes its own three files.

use ddb2pg::rehearse::Rehearsal;

use crate::common::*;

fn cloudshelf(url: &str) -> ddb2pg::config::Config {
    config_with_url(&repo().join("pipeline.toml"), url)
}

/// A copy of the shipped pipeline with absolute fixture paths, its checks replaced.
fn pipeline_with(path: &std::path::Path, url: &str, export_root: &str, checks: &str) {
    let shipped = std::fs::read_to_string(repo().join("pipeline.toml")).expect("pipeline.toml");
    let tables = &shipped
        [shipped.find("[[tables]]").expect("tables")..shipped.find("[[checks]]").expect("checks")];
    let tables = tables.replace("\"fixtures/cloudshelf/", &format!("\"{export_root}/"));
    write_config(path, url, &format!("{tables}\n{checks}"));
}

#[test]
fn a_rehearsal_loads_verifies_checks_and_reports_in_one_folder() {
    let db = TestDb::new("rehearsal");
    let scratch = Scratch::new("rehearsal");
    let dir = scratch.path().join("report");
    let config = repo().join("pipeline.toml");
    let out = ddb2pg_at(
        &[
            "load",
            "--config",
            config.to_str().expect("utf8"),
            "--schema",
            "staging",
            "--rehearsal",
            dir.to_str().expect("utf8"),
            "--project",
            "20",
            "--no-progress",
        ],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("projected for 20x the data"), "{stdout}");

    // The rows: every one of every table, against the export's items.
    let cfg = cloudshelf(&db.url);
    let fixtures = repo().join("fixtures/cloudshelf");
    let mut expected = Vec::new();
    for name in ["books", "users", "orders"] {
        let spec = cfg.tables.iter().find(|t| t.name == name).expect("table");
        let n = assert_table_matches_export(&db, "staging", spec, &fixtures.join(name));
        expected.push((name, n));
    }
    expected.push((
        "order_items",
        assert_order_items_match_orders(&db, "staging"),
    ));

    let r: Rehearsal = read_report(&dir.join("rehearsal.json"));
    assert_eq!(r.exit_code, 0);
    assert_eq!(r.schema, "staging");
    assert!(r.verify.matches, "{:?}", r.verify);
    let timed: Vec<(&str, usize)> = r
        .tables
        .iter()
        .map(|t| (t.table.as_str(), usize::try_from(t.rows).expect("rows")))
        .collect();
    assert_eq!(timed, expected, "the report's rows are the rows loaded");
    // A table's keys and indexes build while the next table loads: users starts before
    // books' search index (GIN) is in.
    let at = |name: &str| {
        r.load
            .tables
            .iter()
            .find(|t| t.table == name)
            .expect("table")
    };
    let (books, users) = (at("books"), at("users"));
    assert!(
        users.started_s < books.started_s + books.seconds + books.keys_seconds,
        "books: {} + {} + {}, users: {}",
        books.started_s,
        books.seconds,
        books.keys_seconds,
        users.started_s
    );
    for t in &r.tables {
        // A child table loads, and its keys build, in its parent's time: counted there.
        if t.table == "order_items" {
            assert_eq!((t.data_seconds, t.keys_seconds), (0.0, 0.0), "{t:?}");
            continue;
        }
        assert!(t.data_seconds > 0.0 && t.keys_seconds > 0.0, "{t:?}");
        assert!(t.verify_seconds > 0.0, "{t:?}");
        assert_eq!(t.projected_rows, t.rows as f64 * 20.0);
        assert!((t.projected_data_seconds - 20.0 * t.data_seconds).abs() < 1e-9);
        // Sorting grows faster than the rows: never less than 20×.
        assert!(t.projected_keys_seconds >= 20.0 * t.keys_seconds, "{t:?}");
        let lt = r
            .load
            .tables
            .iter()
            .find(|l| l.table == t.table)
            .expect("load row");
        assert!(
            lt.stages.timeline.len() == lt.stages.queue_fills.len()
                && lt.stages.timeline.len() >= 2,
            "{:?}",
            lt.stages
        );
    }
    let p = &r.projection;
    assert_eq!(p.factor, 20.0);
    assert!((p.window_seconds - p.load_seconds - p.verify_seconds).abs() < 1e-9);
    assert!(p.load_seconds > 20.0 * r.tables.iter().map(|t| t.data_seconds).sum::<f64>());
    assert!(!p.assumptions.is_empty());
    // A fixture load is short: the projection says it is weak.
    assert!(p.caveats.iter().any(|c| c.contains("short")), "{p:?}");

    let check = r.check.as_ref().expect("the shipped checks ran");
    assert_eq!(check.schema, "staging");
    assert_eq!(check.checks.len(), 3);
    assert!(
        check.checks.iter().all(|c| c.met == Some(true)),
        "{check:?}"
    );

    let md = std::fs::read_to_string(dir.join("rehearsal.md")).expect("md");
    for needle in [
        "every row matches",
        "| orders |",
        "Projected reload window",
        "a projection, not a measurement",
        "get a book by id",
        "Assumptions",
    ] {
        assert!(md.contains(needle), "{needle} not in\n{md}");
    }
    let svg = std::fs::read_to_string(dir.join("throughput.svg")).expect("svg");
    assert!(svg.starts_with("<svg"));
    for needle in [
        "books (",
        "orders (",
        "queue fill",
        "page queue",
        "chunk queue",
    ] {
        assert!(svg.contains(needle), "{needle} not in the throughput chart");
    }
    // Axis labels in k rows/s: no raw `120000.0`.
    let labels: Vec<&str> = svg
        .split("</text>")
        .filter_map(|t| t.rsplit('>').next())
        .map(str::trim)
        .collect();
    // A tick above zero in k rows/s (the axis also starts at `0k`).
    assert!(
        labels
            .iter()
            .any(|l| l.ends_with('k') && l.len() > 2 && !l.starts_with("0k")),
        "k rows/s labels: {labels:?}"
    );
    assert!(
        !labels
            .iter()
            .any(|l| l.ends_with("000.0") || l.ends_with("000")),
        "raw rows/s labels: {labels:?}"
    );
    for f in ["check.json", "check.md", "check.svg"] {
        assert!(dir.join(f).is_file(), "{f}");
    }

    // A check set impossibly low: the rehearsal ends 4 and says which.
    let strict = scratch.path().join("strict.toml");
    pipeline_with(
        &strict,
        &db.url,
        &fixtures.display().to_string(),
        "[[checks]]\nname = \"impossible\"\nsql = \"SELECT * FROM books WHERE id = $1\"\nparams = \"SELECT id FROM books LIMIT 50\"\np95_ms = 0.000001\nruns = 20\n",
    );
    let dir2 = scratch.path().join("report2");
    let out = ddb2pg_at(
        &[
            "load",
            "--config",
            strict.to_str().expect("utf8"),
            "--schema",
            "staging",
            "--mode",
            "replace",
            "--fresh",
            "--rehearsal",
            dir2.to_str().expect("utf8"),
            "--no-progress",
        ],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(4), "{}", describe(&out));
    let r: Rehearsal = read_report(&dir2.join("rehearsal.json"));
    assert!(r.verify.matches);
    assert_eq!(r.check.as_ref().expect("check").missed().len(), 1);
    let md = std::fs::read_to_string(dir2.join("rehearsal.md")).expect("md");
    assert!(
        md.contains("**MISSED**") && md.contains("1 target(s) missed"),
        "{md}"
    );

    // `check --out` alone writes the same three files.
    let dir3 = scratch.path().join("check-only");
    let out = ddb2pg_at(
        &[
            "check",
            "--config",
            config.to_str().expect("utf8"),
            "--schema",
            "staging",
            "--runs",
            "20",
            "--out",
            dir3.to_str().expect("utf8"),
        ],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let c: ddb2pg::check::CheckReport = read_report(&dir3.join("check.json"));
    assert_eq!(c.checks.len(), 3);
    let svg = std::fs::read_to_string(dir3.join("check.svg")).expect("svg");
    assert!(svg.contains("a user&apos;s orders") || svg.contains("a user's orders"));
    assert!(std::fs::read_to_string(dir3.join("check.md"))
        .expect("md")
        .contains("| search books |"));

    // Bad flags stop before any work.
    let out = ddb2pg_at(
        &[
            "load",
            "--config",
            config.to_str().expect("utf8"),
            "--project",
            "3",
        ],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(2), "--project without --rehearsal");
    let out = ddb2pg_at(
        &[
            "load",
            "--config",
            config.to_str().expect("utf8"),
            "--schema",
            "other",
            "--rehearsal",
            dir.to_str().expect("utf8"),
            "--project",
            "0.5",
        ],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert_eq!(
        db.scalar("SELECT count(*) FROM pg_namespace WHERE nspname = 'other'"),
        "0"
    );
}

/// The target stalls for 1.5 s mid-load (a lock the COPYs wait behind): the timeline,
/// sampled every 100 ms, holds a stretch of at least a second with no row written, and
/// the rates around it are not zero.
#[test]
fn a_one_second_stall_shows_in_the_timeline() {
    let db = TestDb::new("rehearsal_stall");
    let scratch = Scratch::new("rehearsal_stall");
    let out = ddb2pg(&[
        "fixtures",
        "generate",
        "--out",
        scratch.path().join("fx").to_str().expect("utf8"),
        "--scale",
        "300000",
        "--seed",
        "5",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let config = scratch.path().join("pipeline.toml");
    pipeline_with(
        &config,
        &db.url,
        &scratch.path().join("fx").display().to_string(),
        "",
    );
    // Small chunks: commits every few thousand rows, so the lock below is granted while
    // most of the table is still to come (with 32 MB chunks it waits for the last ones).
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.replacen("[tuning]\n", "[tuning]\nchunk_bytes = 1048576\n", 1),
    )
    .expect("config");
    let dir = scratch.path().join("report");
    let child = spawn_ddb2pg(
        &[
            "load",
            "--config",
            config.to_str().expect("utf8"),
            "--rehearsal",
            dir.to_str().expect("utf8"),
            "--no-progress",
        ],
        &db.url,
    );
    // Once COPY into orders runs, take a lock every next chunk waits behind, for 1.5 s.
    let (rt, client) = db.client();
    let started = std::time::Instant::now();
    loop {
        let copying: i64 = rt
            .block_on(client.query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY%orders%' AND state = 'active'",
                &[],
            ))
            .expect("activity")
            .get(0);
        let rows: i64 = rt
            .block_on(client.query_one(
                "SELECT coalesce(sum(rows_done), 0)::bigint FROM ddb2pg.splits WHERE target_table = 'orders'",
                &[],
            ))
            .map(|r| r.get(0))
            .unwrap_or(0);
        if copying > 0 && rows > 20_000 {
            break;
        }
        assert!(
            started.elapsed().as_secs() < 120,
            "no COPY into orders seen"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    rt.block_on(client.batch_execute(
        "BEGIN; LOCK TABLE public.orders IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(1.5); COMMIT",
    ))
    .expect("stall");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let r: Rehearsal = read_report(&dir.join("rehearsal.json"));
    let orders = r
        .load
        .tables
        .iter()
        .find(|t| t.table == "orders")
        .expect("orders");
    assert_eq!(orders.rows_written, 300_000);
    let timeline = &orders.stages.timeline;
    // The longest stretch with no row written between samples.
    let mut flat = 0.0f64;
    let mut flat_span = (0.0, 0.0);
    let mut since: Option<f64> = None;
    for w in timeline.windows(2) {
        if w[1].1 == w[0].1 && w[1].1 > 0 && w[1].1 < 300_000 {
            let s = *since.get_or_insert(w[0].0);
            if w[1].0 - s > flat {
                flat = w[1].0 - s;
                flat_span = (s, w[1].0);
            }
        } else {
            since = None;
        }
    }
    assert!(flat >= 1.0, "no 1-second flat stretch in {timeline:?}");
    // Sampled every 100 ms (a stall of a second is ten samples, not three).
    let mut gaps: Vec<f64> = timeline.windows(2).map(|w| w[1].0 - w[0].0).collect();
    gaps.sort_by(f64::total_cmp);
    let median = gaps[gaps.len() / 2];
    assert!(median <= 0.15, "median sample interval {median} s");
    // While the COPYs wait behind the lock, the chunks they have not taken fill their
    // queue: the chart shows PostgreSQL as the bottleneck.
    let full = orders
        .stages
        .queue_fills
        .iter()
        .filter(|q| q.0 > flat_span.0 && q.0 <= flat_span.1)
        .map(|q| q.2)
        .fold(0.0f64, f64::max);
    assert!(
        full >= 0.5,
        "chunk queue during the stall {flat_span:?}: {:?}",
        orders.stages.queue_fills
    );
    let rates = ddb2pg::chart::rates(timeline, 0.0);
    assert!(
        rates.iter().filter(|p| p.1 > 0.0).count() >= 3,
        "rows flowed around the stall: {rates:?}"
    );
}
