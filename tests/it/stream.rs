//! `sync` from DynamoDB Streams, against DynamoDB Local through the real SDK: churn during
//! and after a scan load, then `sync --until-caught-up` gives the table a scan of the live
//! table holds (every row and value, by an oracle reading the scan with serde_json);
//! `verify --live` as the cutover gate; kill -9 of several following syncs at random
//! points, then a re-run applies each stream record exactly once; a dead worker's shard
//! taken over; and the refusals (exit 5: stream created after the baseline, disabled and
//! enabled again, KEYS_ONLY; no stream; a page the SDK cannot parse stops the shard).

use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{AttributeValue, StreamSpecification, StreamViewType};
use serde_json::{Map, Value};

use crate::aws_sources::{aws_cmd, emulators, fixture, run, table_entry, unique};
use crate::common::*;

/// The tests of this module run one at a time: DynamoDB Local (one JVM on the machine's
/// cores) serving several followers, churns and kills at once times writes out ("timed out
/// waiting for a lock") and answered a TRIM_HORIZON read of a new, empty shard with
/// TrimmedDataAccessException while other tables' streams were written.
static STREAMS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn streams_alone() -> std::sync::MutexGuard<'static, ()> {
    STREAMS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A live table seeded with the bundled books, a database, and a config that loads the
/// table by scan and follows its stream.
struct Live {
    ddb: String,
    s3: String,
    db: TestDb,
    scratch: Scratch,
    table: String,
    config: PathBuf,
}

impl Live {
    fn new(tag: &str, view: Option<&str>) -> Option<Live> {
        let (ddb, s3) = emulators()?;
        let db = TestDb::new(tag);
        let scratch = Scratch::new(tag);
        let table = unique(tag);
        let from = fixture("books");
        let mut args = vec![
            "fixtures",
            "seed",
            "--table",
            &table,
            "--from",
            from.to_str().expect("utf8"),
            "--key",
            "bookId",
        ];
        if let Some(v) = view {
            args.extend(["--stream", v]);
        }
        let out = run(&args, &ddb, &s3, None);
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
        let entry = table_entry("books", "books", &format!("{{ dynamodb = \"{table}\" }}"));
        let entry: Vec<String> = entry
            .lines()
            .map(|l| {
                if l.starts_with("changes = ") {
                    format!("changes = {{ stream = \"{table}\" }}")
                } else {
                    l.to_string()
                }
            })
            .collect();
        let config = scratch.path().join("pipeline.toml");
        std::fs::write(
            &config,
            format!(
                "[target]\nurl = \"{}\"\nschema = \"public\"\n\n[tuning]\nconnections = 2\nlease_seconds = 3\n\n{}\n",
                db.url,
                entry.join("\n")
            ),
        )
        .expect("config");
        Some(Live {
            ddb,
            s3,
            db,
            scratch,
            table,
            config,
        })
    }

    fn cfg(&self) -> &str {
        self.config.to_str().expect("utf8")
    }

    fn run(&self, args: &[&str]) -> Output {
        run(args, &self.ddb, &self.s3, None)
    }

    fn spawn(&self, args: &[&str]) -> Child {
        aws_cmd(args, &self.ddb, &self.s3, None)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ddb2pg")
    }

    fn load(&self) {
        let out = self.run(&["load", "--config", self.cfg(), "--no-progress"]);
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    }

    fn churn(&self, rate: &str, seconds: &str, seed: &str) -> Child {
        self.spawn(&[
            "fixtures",
            "churn",
            "--table",
            &self.table,
            "--rate",
            rate,
            "--seconds",
            seconds,
            "--seed",
            seed,
        ])
    }

    fn sync_caught_up(&self, report: &Path) -> Output {
        self.run(&[
            "sync",
            "--config",
            self.cfg(),
            "--until-caught-up",
            "--report",
            report.to_str().expect("utf8"),
        ])
    }

    /// The PostgreSQL table equals a scan of the live table, every row and value.
    fn assert_equal_to_live(&self) -> usize {
        let parsed = config_with_url(&self.config, &self.db.url);
        let spec = parsed
            .tables
            .iter()
            .find(|t| t.name == "books")
            .expect("spec");
        let items = scan(&self.table);
        assert_table_matches_items(&self.db, "public", spec, &items)
    }

    /// A last `sync --until-caught-up`; then the table equals the live one, and each
    /// record of the stream was committed once: the checkpoints' counts add up to the
    /// records an independent reader finds.
    fn final_sync_applied_each_record_once(&self) {
        let report = self.scratch.path().join("sync.json");
        let out = self.sync_caught_up(&report);
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
        self.assert_equal_to_live();
        let committed: i64 = self
            .db
            .scalar("SELECT sum(changes)::int8 FROM ddb2pg.stream_shards")
            .parse()
            .expect("count");
        assert_eq!(committed as usize, stream_records(&self.table));
    }

    fn client(&self) -> (tokio::runtime::Runtime, aws_sdk_dynamodb::Client) {
        let rt = runtime();
        let c = rt.block_on(ddb2pg::source::aws::dynamodb());
        (rt, c)
    }

    fn set_stream(&self, spec: StreamSpecification) {
        let (rt, c) = self.client();
        rt.block_on(
            c.update_table()
                .table_name(&self.table)
                .stream_specification(spec)
                .send(),
        )
        .expect("UpdateTable");
    }

    fn put(&self, item: Vec<(&str, AttributeValue)>) {
        let (rt, c) = self.client();
        let item = item.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        rt.block_on(
            c.put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .send(),
        )
        .expect("PutItem");
    }
}

fn wait_ok(child: Child, what: &str) {
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(0), "{what}: {}", describe(&out));
}

/// Every item of the live table, as DynamoDB JSON maps.
fn scan(table: &str) -> Vec<Map<String, Value>> {
    let rt = runtime();
    rt.block_on(async {
        let c = ddb2pg::source::aws::dynamodb().await;
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let r = c
                .scan()
                .table_name(table)
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .expect("Scan");
            for item in r.items.unwrap_or_default() {
                let mut s = String::new();
                ddb2pg::ddbjson::sdk::write_item(&mut s, &item);
                let v: Value = serde_json::from_str(&s).expect("item JSON");
                out.push(v.as_object().expect("object").clone());
            }
            match r.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        out
    })
}

/// Every record of the table's stream, read independently (the SDK, not the tool's
/// reader) from `TRIM_HORIZON`.
fn stream_records(table: &str) -> usize {
    use aws_sdk_dynamodbstreams::types::ShardIteratorType;
    let rt = runtime();
    rt.block_on(async {
        let conf = ddb2pg::source::aws::sdk_config().await;
        let ddb = aws_sdk_dynamodb::Client::new(conf);
        let arn = ddb
            .describe_table()
            .table_name(table)
            .send()
            .await
            .expect("DescribeTable")
            .table
            .and_then(|t| t.latest_stream_arn)
            .expect("a stream");
        let endpoint = std::env::var("AWS_ENDPOINT_URL_DYNAMODB").expect("emulator endpoint");
        let s = aws_sdk_dynamodbstreams::Client::from_conf(
            aws_sdk_dynamodbstreams::config::Builder::from(conf)
                .endpoint_url(endpoint)
                .build(),
        );
        let shards = s
            .describe_stream()
            .stream_arn(&arn)
            .send()
            .await
            .expect("DescribeStream")
            .stream_description
            .and_then(|d| d.shards)
            .unwrap_or_default();
        let mut n = 0;
        for sh in shards {
            let mut it = s
                .get_shard_iterator()
                .stream_arn(&arn)
                .shard_id(sh.shard_id.expect("shard id"))
                .shard_iterator_type(ShardIteratorType::TrimHorizon)
                .send()
                .await
                .expect("GetShardIterator")
                .shard_iterator;
            while let Some(i) = it {
                let page = s
                    .get_records()
                    .shard_iterator(i)
                    .send()
                    .await
                    .expect("GetRecords");
                let got = page.records.unwrap_or_default().len();
                n += got;
                it = page.next_shard_iterator.filter(|_| got > 0);
            }
        }
        n
    })
}

fn sync_table(report: &Path) -> Value {
    let r: Value = serde_json::from_slice(&std::fs::read(report).expect("report")).expect("json");
    r["tables"][0].clone()
}

#[test]
fn churn_during_and_after_the_load_then_sync_equals_the_live_table() {
    let _one_at_a_time = streams_alone();
    let Some(live) = Live::new("st_churn", Some("NEW_AND_OLD_IMAGES")) else {
        return;
    };
    // Writes while the table is scanned, and after.
    let during = live.churn("60", "4", &test_seed("st_churn_a").to_string());
    live.load();
    wait_ok(during, "churn during the load");
    wait_ok(live.churn("60", "3", "7"), "churn after the load");
    let report = live.scratch.path().join("sync.json");
    let out = live.sync_caught_up(&report);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let t = sync_table(&report);
    let n = |k: &str| t[k].as_u64().unwrap_or_else(|| panic!("{k}: {t}"));
    assert!(
        n("inserted") > 0 && n("updated") > 0 && n("deleted") > 0,
        "{t}"
    );
    assert_eq!(n("rejected"), 0, "{t}");
    assert!(t["watermark"].is_string(), "{t}");
    assert_eq!(t["lag_seconds"].as_f64(), Some(0.0), "{t}");
    let rows = live.assert_equal_to_live();
    assert!(rows > 900, "{rows}");

    // The gate: equal now; one item changed in DynamoDB afterwards is found by its key.
    let vr = live.scratch.path().join("verify.json");
    let gate = |expect: i32| {
        let out = live.run(&[
            "verify",
            "--config",
            live.cfg(),
            "--live",
            "--report",
            vr.to_str().expect("utf8"),
        ]);
        assert_eq!(out.status.code(), Some(expect), "{}", describe(&out));
        verify_report(&vr)
    };
    gate(0);
    let items = scan(&live.table);
    let victim = items
        .iter()
        .find(|i| i.contains_key("price"))
        .expect("an item with a price");
    let id = victim["bookId"]["S"].as_str().expect("bookId").to_string();
    let mut changed: Vec<(&str, AttributeValue)> = Vec::new();
    let item = ddb2pg::ddbjson::sdk::to_item(&Value::Object(victim.clone())).expect("item");
    for (k, v) in &item {
        if k != "price" {
            changed.push((k.as_str(), v.clone()));
        }
    }
    changed.push(("price", AttributeValue::N("123456.78".into())));
    live.put(changed);
    let r = gate(4);
    let d = &r.tables[0].differences;
    assert!(
        d.iter()
            .any(|d| d.kind == "different" && d.key.values().any(|v| v == &id)),
        "{d:?}"
    );

    // The sync applies it; the gate passes; a sync with nothing new applies nothing.
    let out = live.sync_caught_up(&report);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(sync_table(&report)["updated"].as_u64(), Some(1));
    gate(0);
    let out = live.sync_caught_up(&report);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let t = sync_table(&report);
    assert_eq!(t["changes"].as_u64(), Some(0), "{t}");
    live.assert_equal_to_live();
}

#[test]
fn followers_killed_at_random_points_apply_each_record_once() {
    let _one_at_a_time = streams_alone();
    let Some(live) = Live::new("st_kill", Some("NEW_IMAGE")) else {
        return;
    };
    live.load();
    let mut seed = test_seed("st_kill") | 1;
    eprintln!("kill seed {seed}");
    let churn = live.churn("50", "10", &seed.to_string());
    let cfg = live.cfg().to_string();
    let t0 = Instant::now();
    let mut round = 0;
    while t0.elapsed() < Duration::from_secs(10) {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let wait = 300 + seed % 2200;
        let mut a = live.spawn(&["sync", "--config", &cfg]);
        let mut b = live.spawn(&["sync", "--config", &cfg]);
        std::thread::sleep(Duration::from_millis(wait));
        a.kill().expect("kill -9");
        if seed.is_multiple_of(3) {
            // The other stops as an operator stops it: SIGTERM, what it holds committed.
            let st = std::process::Command::new("kill")
                .args(["-TERM", &b.id().to_string()])
                .status()
                .expect("kill -TERM");
            assert!(st.success());
        } else {
            b.kill().expect("kill -9");
        }
        let _ = a.wait();
        let _ = b.wait();
        round += 1;
    }
    eprintln!("{round} rounds of kill -9");
    wait_ok(churn, "churn");
    live.final_sync_applied_each_record_once();
}

#[test]
fn a_dead_followers_shard_is_taken_over_and_never_read_twice() {
    let _one_at_a_time = streams_alone();
    let Some(live) = Live::new("st_takeover", Some("NEW_AND_OLD_IMAGES")) else {
        return;
    };
    live.load();
    let cfg = live.cfg().to_string();
    let churn = live.churn("40", "8", "3");
    let a = live.spawn(&["sync", "--config", &cfg]);
    let b = live.spawn(&["sync", "--config", &cfg]);
    let holder = || {
        let rows = live
            .db
            .query("SELECT worker FROM ddb2pg.stream_shards WHERE worker IS NOT NULL");
        rows.into_iter()
            .filter_map(|r| r[0].clone())
            .collect::<Vec<_>>()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        let h = holder();
        assert!(h.len() <= 1, "two workers hold the one shard: {h:?}");
        if let Some(w) = h.into_iter().next() {
            break w;
        }
        assert!(Instant::now() < deadline, "no worker claimed the shard");
        std::thread::sleep(Duration::from_millis(200));
    };
    let (mut dead, mut other) = if first.contains(&format!("-{}-", a.id())) {
        (a, b)
    } else {
        (b, a)
    };
    let dead_pid = dead.id();
    dead.kill().expect("kill -9");
    let _ = dead.wait();
    // The lease (3 s) runs out; the other follower takes the shard over.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let h = holder();
        assert!(h.len() <= 1, "{h:?}");
        if h.iter().any(|w| w.contains(&format!("-{}-", other.id()))) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the shard was not taken over from {dead_pid}: {h:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_ok(churn, "churn");
    // SIGTERM: the follower commits what it holds and exits 0.
    std::thread::sleep(Duration::from_secs(3));
    let pid = other.id().to_string();
    let st = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill -TERM");
    assert!(st.success());
    let status = other.wait().expect("wait");
    assert_eq!(status.code(), Some(0));
    live.final_sync_applied_each_record_once();
}

fn spec(enabled: bool, view: Option<StreamViewType>) -> StreamSpecification {
    StreamSpecification::builder()
        .stream_enabled(enabled)
        .set_stream_view_type(view)
        .build()
        .expect("spec")
}

#[test]
fn streams_that_cannot_hold_every_change_are_refused() {
    let _one_at_a_time = streams_alone();
    let report = |l: &Live| l.scratch.path().join("sync.json");
    let expect = |l: &Live, code: i32, needle: &str| {
        let out = l.sync_caught_up(&report(l));
        assert_eq!(out.status.code(), Some(code), "{}", describe(&out));
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(err.contains(needle), "{needle}: {err}");
        err
    };
    // No stream at all.
    let Some(none) = Live::new("st_none", None) else {
        return;
    };
    none.load();
    expect(&none, 5, "has no stream enabled");
    // Enabled after the load's baseline.
    none.set_stream(spec(true, Some(StreamViewType::NewAndOldImages)));
    expect(&none, 5, "after the load's baseline");
    assert_eq!(
        none.db.scalar("SELECT count(*) FROM ddb2pg.stream_shards"),
        "0"
    );

    // KEYS_ONLY holds no image to apply.
    let keys = Live::new("st_keys", Some("KEYS_ONLY")).expect("emulators");
    keys.load();
    expect(&keys, 5, "KEYS_ONLY");

    // Disabled and enabled again: a new stream ARN, changes in between lost.
    let re = Live::new("st_reenable", Some("NEW_AND_OLD_IMAGES")).expect("emulators");
    re.load();
    let out = re.sync_caught_up(&report(&re));
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    re.set_stream(spec(false, None));
    std::thread::sleep(Duration::from_millis(1100));
    re.set_stream(spec(true, Some(StreamViewType::NewImage)));
    expect(&re, 5, "disabled and enabled again");

    // A page the SDK cannot parse (DynamoDB Local writes an empty map as `{}`): the sync
    // stops at once naming the shard and the last applied sequence number; what came
    // before is applied.
    let em = Live::new("st_emptymap", Some("NEW_AND_OLD_IMAGES")).expect("emulators");
    em.load();
    em.put(vec![
        (
            "bookId",
            AttributeValue::S("00000000-0000-4000-8000-0000000000aa".into()),
        ),
        ("title", AttributeValue::S("before".into())),
        ("price", AttributeValue::N("1.50".into())),
    ]);
    let out = em.sync_caught_up(&report(&em));
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let before = "SELECT title FROM books WHERE id = '00000000-0000-4000-8000-0000000000aa'";
    assert_eq!(em.db.scalar(before), "before");
    em.put(vec![
        (
            "bookId",
            AttributeValue::S("00000000-0000-4000-8000-0000000000bb".into()),
        ),
        ("title", AttributeValue::S("empty map".into())),
        ("price", AttributeValue::N("2".into())),
        ("extra", AttributeValue::M(Default::default())),
    ]);
    let started = Instant::now();
    let err = expect(&em, 1, "cannot be decoded");
    assert!(
        err.contains("shard") && err.contains("sequence number"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(60), "it spun");
    assert_eq!(em.db.scalar(before), "before");
    assert_eq!(
        em.db
            .scalar("SELECT count(*) FROM books WHERE id = '00000000-0000-4000-8000-0000000000bb'"),
        "0"
    );
}

/// `bench --sync-rates` end to end on a small scale: every insert the churn made is seen
/// in PostgreSQL (none missing), its outputs are written, and the bench's table equals the
/// churned DynamoDB table's item count before it is deleted (times are not asserted).
#[test]
fn the_sync_lag_bench_sees_every_insert_and_writes_its_outputs() {
    let _one_at_a_time = streams_alone();
    let Some((ddb, s3)) = emulators() else { return };
    let db = TestDb::new("lag_bench");
    let scratch = Scratch::new("lag_bench");
    let config = repo().join("pipeline.toml");
    let out = run(
        &[
            "bench",
            "--sync-rates",
            "20,40",
            "--sync-seconds",
            "3",
            "--scale",
            "400",
            "--config",
            config.to_str().expect("utf8"),
            "--out",
            scratch.path().to_str().expect("utf8"),
        ],
        &ddb,
        &s3,
        Some(&db.url),
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let r: ddb2pg::bench::lag::LagReport = read_report(&scratch.path().join("lag.json"));
    assert_eq!(r.items, 400, "orders at scale 400");
    assert_eq!(r.runs.len(), 2);
    for x in &r.runs {
        assert_eq!(x.failed, 0, "{x:?}");
        assert_eq!(x.missing, 0, "{x:?}");
        assert!(
            x.inserts > 0 && x.measured + x.deleted_unseen == x.inserts,
            "{x:?}"
        );
        assert!(
            x.lag_p50_s <= x.lag_p95_s && x.lag_p95_s <= x.lag_max_s,
            "{x:?}"
        );
        assert!(x.sync_changes >= x.inserts + x.updates + x.deletes, "{x:?}");
    }
    // The target holds the table as churned: the seed, plus inserts, less deletes.
    let expected: u64 = 400 + r.runs.iter().map(|x| x.inserts).sum::<u64>()
        - r.runs.iter().map(|x| x.deletes).sum::<u64>();
    assert_eq!(
        db.scalar("SELECT count(*) FROM ddb2pg_bench_lag.orders"),
        expected.to_string()
    );
    let md = std::fs::read_to_string(scratch.path().join("lag.md")).expect("lag.md");
    assert!(md.contains("| 20 |") && md.contains("| 40 |"), "{md}");
    let svg = std::fs::read_to_string(scratch.path().join("lag.svg")).expect("svg");
    assert!(
        svg.starts_with("<svg") && svg.contains("40 writes/s") && svg.contains("goal"),
        "svg"
    );
}
