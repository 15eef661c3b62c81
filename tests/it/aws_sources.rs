//! The AWS sources through the real AWS SDK against the emulators that
//! `scripts/emulators.sh` installs and starts (DynamoDB Local, moto S3), on loopback:
//! the same data loaded from a folder, from S3 and by scan with 1, 4 and 16 segments gives
//! identical tables equal to the source row by row; the read-capacity limiter holds its
//! budget; injected throttling, 5xx, `UnprocessedItems` and cut S3 streams are retried to an
//! exact result; missing tables and buckets fail with their name; the acceptance data sets
//! in BatchWriteItem form seed and load without loss.
//!
//! Without the emulators' endpoints in the environment these tests print SKIP and pass,
//! unless `DDB2PG_REQUIRE_EMULATORS=1` (as `scripts/test.sh` sets), where they fail.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::*;
use crate::proxy::{self, Action, FaultProxy};
use ddb2pg::load::LoadReport;
use ddb2pg::source::dynamodb::ScanReport;
use serde_json::Value;

/// The emulators' endpoints: (DynamoDB, S3).
pub(crate) fn emulators() -> Option<(String, String)> {
    let ddb = std::env::var("AWS_ENDPOINT_URL_DYNAMODB").ok();
    let s3 = std::env::var("AWS_ENDPOINT_URL_S3").ok();
    match (ddb, s3) {
        (Some(d), Some(s)) => Some((d, s)),
        _ => {
            assert!(
                std::env::var("DDB2PG_REQUIRE_EMULATORS").is_err(),
                "DDB2PG_REQUIRE_EMULATORS is set but AWS_ENDPOINT_URL_DYNAMODB / AWS_ENDPOINT_URL_S3 are not: run `eval \"$(bash scripts/emulators.sh env)\"`"
            );
            eprintln!("SKIP: no emulator endpoints (run `bash scripts/emulators.sh up` and `eval \"$(bash scripts/emulators.sh env)\"`)");
            None
        }
    }
}

fn host_port(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string()
}

/// Runs the binary against the given endpoints (loopback only), with dummy credentials.
pub(crate) fn run(args: &[&str], ddb: &str, s3: &str, pg_url: Option<&str>) -> Output {
    aws_cmd(args, ddb, s3, pg_url).output().expect("run ddb2pg")
}

/// The binary as a command against the given endpoints (loopback only), with dummy
/// credentials.
pub(crate) fn aws_cmd(
    args: &[&str],
    ddb: &str,
    s3: &str,
    pg_url: Option<&str>,
) -> std::process::Command {
    let mut c = ddb2pg_cmd(pg_url);
    c.args(args)
        .env("AWS_ENDPOINT_URL_DYNAMODB", ddb)
        .env("AWS_ENDPOINT_URL_DYNAMODB_STREAMS", ddb)
        .env("AWS_ENDPOINT_URL_S3", s3)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL");
    c
}

/// A name unique to this test process (DynamoDB tables; S3 buckets need lower case).
pub(crate) fn unique(tag: &str) -> String {
    format!("t{}-{tag}", std::process::id())
}

pub(crate) fn fixture(table: &str) -> PathBuf {
    repo().join("fixtures/cloudshelf").join(table)
}

/// The `[[tables]]` entry of `pipeline.toml` for `table`, renamed and with another source.
pub(crate) fn table_entry(table: &str, new_name: &str, source: &str) -> String {
    let text = std::fs::read_to_string(repo().join("pipeline.toml")).expect("pipeline.toml");
    let block = text
        .split("[[tables]]")
        .find(|b| b.contains(&format!("name = \"{table}\"")))
        .expect("table in pipeline.toml");
    // The mapping only: indexes are named per schema and keys refer to other tables.
    let block = block.split("[[tables.indexes]]").next().unwrap_or(block);
    let block: Vec<String> = block
        .lines()
        .map(|l| {
            if l.starts_with("name = ") {
                format!("name = \"{new_name}\"")
            } else if l.starts_with("source = ") {
                format!("source = {source}")
            } else if let Some(at) = l.find(", references = ") {
                let end = l[at + 2..].find(" }").map_or(l.len(), |e| at + 2 + e);
                format!("{}{}", &l[..at], &l[end..])
            } else {
                l.to_string()
            }
        })
        .collect();
    format!("[[tables]]{}\n", block.join("\n"))
}

pub(crate) fn seed(ddb: &str, s3: &str, table: &str, from: &Path, key: &[&str]) -> Output {
    let mut args = vec!["fixtures", "seed", "--table", table, "--from"];
    let from = from.to_str().expect("utf8");
    args.push(from);
    for (i, k) in key.iter().enumerate() {
        args.push(if i == 0 { "--key" } else { "--sort" });
        args.push(k);
    }
    run(&args, ddb, s3, None)
}

/// A scan's figures in a load report.
fn scan_of<'a>(r: &'a LoadReport, table: &str) -> &'a ScanReport {
    table_of(r, table)
        .scan
        .as_ref()
        .unwrap_or_else(|| panic!("{table} was not scanned: {r:?}"))
}

/// One digest of a whole table, rows in key order.
fn table_digest(db: &TestDb, table: &str) -> String {
    db.scalar(&format!(
        "SELECT md5(string_agg(t::text, E'\\n' ORDER BY t.id)) FROM \"{table}\" t"
    ))
}

#[test]
fn folder_s3_and_scans_of_1_4_16_segments_give_identical_tables() {
    let Some((ddb, s3)) = emulators() else { return };
    let db = TestDb::new("aws_same");
    let scratch = Scratch::new("aws_same");
    let bucket = unique("same");
    let mut entries = String::new();
    for (table, key) in [("books", "bookId"), ("orders", "orderId")] {
        let ddb_table = unique(table);
        let out = seed(&ddb, &s3, &ddb_table, &fixture(table), &[key]);
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
        let to = format!("s3://{bucket}/exports/{table}");
        let out = run(
            &[
                "fixtures",
                "upload",
                "--from",
                fixture(table).to_str().expect("utf8"),
                "--to",
                &to,
            ],
            &ddb,
            &s3,
            None,
        );
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
        let local = fixture(table);
        entries.push_str(&table_entry(
            table,
            &format!("{table}_folder"),
            &format!("{{ export = \"{}\" }}", local.display()),
        ));
        entries.push_str(&table_entry(
            table,
            &format!("{table}_s3"),
            &format!("{{ export = \"{to}\" }}"),
        ));
        for n in [1, 4, 16] {
            entries.push_str(&table_entry(
                table,
                &format!("{table}_scan{n}"),
                &format!("{{ dynamodb = \"{ddb_table}\", segments = {n} }}"),
            ));
        }
    }
    let config = scratch.path().join("pipeline.toml");
    write_config(&config, &db.url, &entries);
    let report_path = scratch.path().join("report.json");
    let out = run(
        &[
            "load",
            "--config",
            config.to_str().expect("utf8"),
            "--no-progress",
            "--report",
            report_path.to_str().expect("utf8"),
        ],
        &ddb,
        &s3,
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let r = load_report(&report_path);
    let parsed = config_with_url(&config, &db.url);
    for (table, items) in [("books", 1000u64), ("orders", 8000)] {
        let mut digests = Vec::new();
        for way in ["folder", "s3", "scan1", "scan4", "scan16"] {
            let name = format!("{table}_{way}");
            let spec = parsed.tables.iter().find(|t| t.name == name).expect("spec");
            // Every row and value equals the source (the oracle reads the export itself).
            let compared = assert_table_matches_export(&db, "public", spec, &fixture(table));
            assert_eq!(compared as u64, items);
            let t = table_of(&r, &name);
            // Read exactly once: no item twice across segments (the primary key was built
            // after the data, so a duplicate would have failed the load), none missing.
            assert_eq!(t.rows_read, items, "{name}");
            assert_eq!(t.rows_written, items, "{name}");
            if let Some(n) = way.strip_prefix("scan") {
                let n: u32 = n.parse().expect("n");
                assert_eq!(scan_of(&r, &name).segments, n, "{name}");
                assert_eq!(t.files, n as usize, "{name}");
            }
            digests.push((name.clone(), table_digest(&db, &name)));
        }
        for (name, d) in &digests[1..] {
            assert_eq!(d, &digests[0].1, "{name} differs from {}", digests[0].0);
        }
    }
    // verify reads the scan and S3 sources too.
    let out = run(
        &["verify", "--config", config.to_str().expect("utf8")],
        &ddb,
        &s3,
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
}

#[test]
fn read_capacity_budget_holds_over_every_window() {
    let Some((ddb, s3)) = emulators() else { return };
    let db = TestDb::new("aws_rcu");
    let scratch = Scratch::new("aws_rcu");
    let ddb_table = unique("rcu");
    let out = seed(&ddb, &s3, &ddb_table, &fixture("books"), &["bookId"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let rate = 25.0;
    let config = scratch.path().join("pipeline.toml");
    write_config(
        &config,
        &db.url,
        &table_entry(
            "books",
            "books",
            &format!("{{ dynamodb = \"{ddb_table}\", segments = 3, read_capacity = {rate} }}"),
        ),
    );
    let report_path = scratch.path().join("report.json");
    let out = run(
        &[
            "load",
            "--config",
            config.to_str().expect("utf8"),
            "--no-progress",
            "--report",
            report_path.to_str().expect("utf8"),
        ],
        &ddb,
        &s3,
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let r = load_report(&report_path);
    let scan = scan_of(&r, "books");
    assert_eq!(scan.read_capacity, rate);
    assert!(
        scan.page_limit.is_some_and(|l| l > 0),
        "a budget this small needs smaller pages: {scan:?}"
    );
    let per_second = scan.consumed_per_second.clone();
    let total: f64 = per_second.iter().sum();
    let consumed = scan.consumed_rcu;
    assert!((total - consumed).abs() < 0.01, "{total} vs {consumed}");
    assert!(total > 50.0, "the table costs ~100 RCU to scan: {total}");
    let burst = scan.burst;
    let page = scan.page_cost;
    let concurrency = scan.concurrency as f64;
    // What the responses said was consumed, over every window of 1 to 5 whole seconds:
    // the budget, plus what may be saved up, plus one page per segment in flight.
    for w in 1..=5usize {
        for (i, window) in per_second.windows(w).enumerate() {
            let sum: f64 = window.iter().sum();
            let bound = rate * w as f64 + burst + concurrency * page;
            assert!(
                sum <= bound,
                "{sum} RCU consumed in seconds {i}..{} (budget {rate}/s, bound {bound}): {per_second:?}",
                i + w
            );
        }
    }
    // With ~100 RCU to spend at 25/s after a burst of `burst`, the scan cannot fit in fewer
    // seconds than the budget allows.
    assert!(
        per_second.len() as f64 >= ((total - burst - concurrency * page) / rate).floor(),
        "{per_second:?}"
    );
    let spec = &config_with_url(&config, &db.url).tables[0];
    assert_eq!(
        assert_table_matches_export(&db, "public", spec, &fixture("books")),
        1000
    );
}

#[test]
fn injected_throttling_5xx_unprocessed_items_and_cut_streams_are_retried_exactly() {
    let Some((ddb, s3)) = emulators() else { return };
    let db = TestDb::new("aws_faults");
    let scratch = Scratch::new("aws_faults");
    let ddb_table = unique("faults");
    let bucket = unique("faults");

    // Seeding through a proxy that leaves half of every other batch unprocessed and
    // throttles every seventh.
    let seed_proxy = FaultProxy::start(&host_port(&ddb), |r| match (r.op.as_str(), r.seq) {
        ("BatchWriteItem", n) if n % 7 == 0 => proxy::throttled(),
        ("BatchWriteItem", n) if n % 2 == 0 => Action::Unprocess,
        _ => Action::Forward,
    });
    let out = seed(
        &seed_proxy.url(),
        &s3,
        &ddb_table,
        &fixture("books"),
        &["bookId"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        seed_proxy.injected("unprocessed") > 0,
        "no UnprocessedItems injected"
    );
    assert!(
        seed_proxy.injected("reply-400") > 0,
        "no throttling injected"
    );

    // Scanning through a proxy that throttles every third Scan and fails every fifth.
    let scan_proxy = FaultProxy::start(&host_port(&ddb), |r| match (r.op.as_str(), r.seq) {
        ("Scan", n) if n % 3 == 0 => proxy::throttled(),
        ("Scan", n) if n % 5 == 0 => proxy::server_error(),
        _ => Action::Forward,
    });
    // S3 through a proxy that answers SlowDown to every fourth GET and cuts every data
    // file's first full GET after 1000 bytes (the reader re-opens at the offset it reached).
    let out = run(
        &[
            "fixtures",
            "upload",
            "--from",
            fixture("books").to_str().expect("utf8"),
            "--to",
            &format!("s3://{bucket}/books"),
        ],
        &ddb,
        &s3,
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let s3_proxy = FaultProxy::start(&host_port(&s3), |r| {
        if r.method != "GET" {
            return Action::Forward;
        }
        if r.seq % 4 == 0 {
            return proxy::slow_down();
        }
        if r.path.contains("/data/") && !r.has_range {
            return Action::CutBody { keep: 1000 };
        }
        Action::Forward
    });
    let config = scratch.path().join("pipeline.toml");
    let mut entries = table_entry(
        "books",
        "books_scan",
        &format!("{{ dynamodb = \"{ddb_table}\", segments = 16 }}"),
    );
    entries.push_str(&table_entry(
        "books",
        "books_s3",
        &format!("{{ export = \"s3://{bucket}/books\" }}"),
    ));
    write_config(&config, &db.url, &entries);
    let report_path = scratch.path().join("report.json");
    let out = run(
        &[
            "load",
            "--config",
            config.to_str().expect("utf8"),
            "--no-progress",
            "--report",
            report_path.to_str().expect("utf8"),
        ],
        &scan_proxy.url(),
        &s3_proxy.url(),
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let r = load_report(&report_path);
    let scan = scan_of(&r, "books_scan");
    let throttled = scan.throttled_retries;
    let server = scan.server_error_retries;
    assert_eq!(throttled, scan_proxy.injected("reply-400"), "{scan:?}");
    assert_eq!(server, scan_proxy.injected("reply-500"), "{scan:?}");
    assert!(throttled > 0 && server > 0, "{scan:?}");
    let s3_retries = table_of(&r, "books_s3").source_retries;
    assert!(s3_proxy.injected("cut") > 0, "no stream was cut");
    assert!(s3_proxy.injected("reply-503") > 0, "no SlowDown was sent");
    assert_eq!(
        s3_retries,
        s3_proxy.injected("cut") + s3_proxy.injected("reply-503"),
        "every injected S3 fault is one counted retry"
    );
    let parsed = config_with_url(&config, &db.url);
    for spec in &parsed.tables {
        assert_eq!(
            assert_table_matches_export(&db, "public", spec, &fixture("books")),
            1000,
            "{}",
            spec.name
        );
    }
}

#[test]
fn a_missing_table_or_bucket_fails_naming_it() {
    let Some((ddb, s3)) = emulators() else { return };
    let db = TestDb::new("aws_missing");
    let scratch = Scratch::new("aws_missing");
    let config = scratch.path().join("pipeline.toml");
    let cases = [
        (
            "{ dynamodb = \"no-such-table-here\" }",
            "no-such-table-here",
            "does not exist",
        ),
        (
            "{ export = \"s3://no-such-bucket-here/x\" }",
            "no-such-bucket-here",
            "does not exist",
        ),
    ];
    // Loads the books table from `source`: the load's output.
    let load_books = |source: &str| {
        write_config(&config, &db.url, &table_entry("books", "books", source));
        run(
            &[
                "load",
                "--config",
                config.to_str().expect("utf8"),
                "--no-progress",
            ],
            &ddb,
            &s3,
            None,
        )
    };
    for (source, name, says) in cases {
        let out = load_books(source);
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(name) && err.contains(says),
            "{}",
            describe(&out)
        );
        // Nothing was created in the target.
        assert_eq!(
            db.scalar("SELECT count(*) FROM pg_tables WHERE tablename = 'books'"),
            "0"
        );
    }
    // Puts `from` at `url` in S3 and loads it as the books table: the load's output.
    let upload_and_load = |from: &Path, url: &str| {
        let out = run(
            &[
                "fixtures",
                "upload",
                "--from",
                from.to_str().expect("utf8"),
                "--to",
                url,
            ],
            &ddb,
            &s3,
            None,
        );
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
        load_books(&format!("{{ export = \"{url}\" }}"))
    };
    // A missing manifest under an existing bucket names the object.
    let bucket = unique("nomanifest");
    let out = upload_and_load(
        &fixture("books").join("data"),
        &format!("s3://{bucket}/only-data"),
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("s3://{bucket}/only-data")) && err.contains("manifest-summary.json"),
        "{}",
        describe(&out)
    );

    // A data file replaced in S3 by other bytes (here: the same items, with a byte added
    // after the gzip stream) is refused by its ETag before any work.
    let copy = scratch.path().join("books-substituted");
    let src = fixture("books");
    std::fs::create_dir_all(copy.join("data")).expect("mkdir");
    for name in ["manifest-summary.json", "manifest-files.json"] {
        std::fs::copy(src.join(name), copy.join(name)).expect("copy");
    }
    let mut data: Vec<_> = std::fs::read_dir(src.join("data"))
        .expect("data")
        .map(|e| e.expect("entry").path())
        .collect();
    data.sort();
    for (i, f) in data.iter().enumerate() {
        let mut bytes = std::fs::read(f).expect("read");
        let name = f.file_name().expect("name").to_string_lossy().into_owned();
        if i == data.len() - 1 {
            bytes.push(0);
        }
        std::fs::write(copy.join("data").join(&name), bytes).expect("write");
    }
    let changed = data[data.len() - 1]
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let bucket = unique("substituted");
    let out = upload_and_load(&copy, &format!("s3://{bucket}/books"));
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&changed) && err.contains("ETag"),
        "{}",
        describe(&out)
    );
    assert_eq!(
        db.scalar("SELECT count(*) FROM pg_tables WHERE tablename = 'books'"),
        "0",
        "refused before any work"
    );
}

/// The acceptance data sets in BatchWriteItem form: (file, table key attributes with types).
pub(crate) const REQUEST_FILES: &[(&str, &[(&str, &str)])] = &[
    ("cloudninja-sampledata/Forum.json", &[("Name", "S")]),
    ("cloudninja-sampledata/ProductCatalog.json", &[("Id", "N")]),
    (
        "cloudninja-sampledata/Reply.json",
        &[("Id", "S"), ("ReplyDateTime", "S")],
    ),
    (
        "cloudninja-sampledata/Thread.json",
        &[("ForumName", "S"), ("Subject", "S")],
    ),
    (
        "aws-doc-sdk-examples/sampledata/Forum.json",
        &[("Name", "S")],
    ),
    (
        "aws-doc-sdk-examples/sampledata/ProductCatalog.json",
        &[("Id", "N")],
    ),
    (
        "aws-doc-sdk-examples/movie_files/movies_0.json",
        &[("year", "N"), ("title", "S")],
    ),
    (
        "aws-doc-sdk-examples/movie_files/movies_1.json",
        &[("year", "N"), ("title", "S")],
    ),
    (
        "aws-doc-sdk-examples/movie_files/movies_2.json",
        &[("year", "N"), ("title", "S")],
    ),
    (
        "aws-doc-sdk-examples/movie_files/movies_3.json",
        &[("year", "N"), ("title", "S")],
    ),
    (
        "aws-doc-sdk-examples/movie_files/movies_4.json",
        &[("year", "N"), ("title", "S")],
    ),
    (
        "aws-doc-sdk-examples/movie_files/movies_5.json",
        &[("year", "N"), ("title", "S")],
    ),
    (
        "amazon-dynamodb-labs/global-serverless-sample-data.json",
        &[("PK", "S"), ("SK", "S")],
    ),
    (
        "amazon-dynamodb-labs/product_en.json",
        &[("ProductID", "S")],
    ),
];

/// The items of a `BatchWriteItem` request file, as the file states them, parsed here
/// independently.
pub(crate) fn request_items(path: &Path) -> Vec<serde_json::Map<String, Value>> {
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("json");
    let requests = match &doc {
        Value::Array(a) => a.clone(),
        Value::Object(o) => o
            .values()
            .next()
            .and_then(Value::as_array)
            .cloned()
            .expect("requests"),
        _ => panic!("{}: not a request file", path.display()),
    };
    requests
        .iter()
        .map(|r| r["PutRequest"]["Item"].as_object().expect("item").clone())
        .collect()
}

#[test]
fn acceptance_request_files_seed_and_load_without_loss() {
    let Some((ddb, s3)) = emulators() else { return };
    let Some(acc) = acceptance_dir() else { return };
    let db = TestDb::new("aws_acceptance");
    let scratch = Scratch::new("aws_acceptance");
    let mut entries = String::new();
    let mut expected = Vec::new();
    for (i, (file, keys)) in REQUEST_FILES.iter().enumerate() {
        let path = acc.join("datasets").join(file);
        let ddb_table = unique(&format!("acc{i}"));
        let key_args: Vec<String> = keys.iter().map(|(k, t)| format!("{k}:{t}")).collect();
        let key_refs: Vec<&str> = key_args.iter().map(String::as_str).collect();
        let out = seed(&ddb, &s3, &ddb_table, &path, &key_refs);
        assert_eq!(out.status.code(), Some(0), "{file}: {}", describe(&out));
        let items = request_items(&path);
        let name = format!("acc_{i}");
        let mut cols = String::new();
        for (k, t) in keys.iter() {
            let ty = if *t == "N" { "numeric" } else { "text" };
            cols.push_str(&format!(
                "\"{}\" = {{ from = \"{k}\", type = \"{ty}\" }}\n",
                k.to_lowercase()
            ));
        }
        cols.push_str("item = { rest = true, type = \"jsonb\" }\n");
        let pk: Vec<String> = keys
            .iter()
            .map(|(k, _)| format!("\"{}\"", k.to_lowercase()))
            .collect();
        entries.push_str(&format!(
            "[[tables]]\nname = \"{name}\"\nprimary_key = [{}]\nsource = {{ dynamodb = \"{ddb_table}\", segments = 2 }}\n\n[tables.columns]\n{cols}\n",
            pk.join(", ")
        ));
        expected.push((name, items));
    }
    let config = scratch.path().join("pipeline.toml");
    write_config(&config, &db.url, &entries);
    let out = run(
        &[
            "load",
            "--config",
            config.to_str().expect("utf8"),
            "--no-progress",
        ],
        &ddb,
        &s3,
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let parsed = config_with_url(&config, &db.url);
    let mut total = 0;
    for (name, items) in &expected {
        let spec = parsed
            .tables
            .iter()
            .find(|t| &t.name == name)
            .expect("spec");
        total += assert_table_matches_items(&db, "public", spec, items);
    }
    assert_eq!(total, 2 + 8 + 4 + 3 + 2 + 8 + 6 * 25 + 13 + 20);
}

#[test]
fn a_killed_scan_resumes_from_its_saved_position_exactly() {
    let Some((ddb, s3)) = emulators() else { return };
    let db = TestDb::new("aws_resume");
    let scratch = Scratch::new("aws_resume");
    let ddb_table = unique("resume");
    let out = seed(&ddb, &s3, &ddb_table, &fixture("orders"), &["orderId"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let config = scratch.path().join("pipeline.toml");
    // A slow scan (a small read budget, so small pages), one page per COPY piece and tiny
    // chunks: checkpoints with scan positions commit while the scan is going on.
    std::fs::write(
        &config,
        format!(
            "[target]\nurl = \"{}\"\n\n[tuning]\npage_bytes = 4096\nchunk_bytes = 4096\nconnections = 1\n\n{}",
            db.url,
            table_entry(
                "orders",
                "orders",
                &format!("{{ dynamodb = \"{ddb_table}\", segments = 2, read_capacity = 40 }}"),
            )
        ),
    )
    .expect("config");
    let cfg = config.to_str().expect("utf8");
    let mut child = ddb2pg_cmd(None)
        .args(["load", "--config", cfg, "--no-progress"])
        .env("AWS_ENDPOINT_URL_DYNAMODB", &ddb)
        .env("AWS_ENDPOINT_URL_S3", &s3)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    // Kill -9 once both segments have committed pages with a saved position, and a third
    // of the rows is in.
    let started = std::time::Instant::now();
    loop {
        let ready = db.scalar("SELECT to_regclass('ddb2pg.chunks') IS NOT NULL") == "t"
            && db.scalar(
                "SELECT count(DISTINCT split) = 2 AND coalesce(sum(rows), 0) >= 2500 FROM ddb2pg.chunks WHERE edge_key IS NOT NULL",
            ) == "t";
        if ready {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "no checkpoints within 120 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill().expect("kill -9");
    let _ = child.wait();
    // One snapshot: the killed process's last COMMIT may still be landing.
    let row = db.query("SELECT count(*), (SELECT sum(rows_done) FROM ddb2pg.splits) FROM orders");
    let committed: u64 = row[0][0].as_deref().expect("count").parse().expect("count");
    assert_eq!(
        row[0][0], row[0][1],
        "rows and checkpoints agree after the kill"
    );
    assert!(committed > 0 && committed < 8000, "{committed}");
    let report_path = scratch.path().join("report.json");
    let out = run(
        &[
            "load",
            "--config",
            cfg,
            "--no-progress",
            "--report",
            report_path.to_str().expect("utf8"),
        ],
        &ddb,
        &s3,
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("resumed run"),
        "{}",
        describe(&out)
    );
    let r = load_report(&report_path);
    let t = table_of(&r, "orders");
    let before = t.rows_before;
    assert!(before >= committed, "{t:?}");
    assert_eq!(t.rows_written + before, 8000, "{t:?}");
    // The resumed scan started at the saved keys: it did not read the committed part again.
    let scan = scan_of(&r, "orders");
    let limit = scan
        .page_limit
        .and_then(|l| u64::try_from(l).ok())
        .expect("a small budget sets a page limit");
    let pages = scan.pages;
    assert!(
        pages <= (8000 - before) / limit + 6,
        "the resumed scan read {pages} pages of up to {limit} items for {} items left: it started over ({scan:?})",
        8000 - before
    );
    let parsed = config_with_url(&config, &db.url);
    let spec = parsed
        .tables
        .iter()
        .find(|t| t.name == "orders")
        .expect("spec");
    assert_eq!(
        assert_table_matches_export(&db, "public", spec, &fixture("orders")),
        8000
    );
}
