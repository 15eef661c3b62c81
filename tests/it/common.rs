//! Test helpers: a database per test on the real PostgreSQL, running the real binary, small
//! exports written in AWS's layout, and an oracle that checks every row and value of a
//! loaded table against the export — parsing the export independently (serde_json) and
//! letting PostgreSQL's own text input judge each expected value.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine as _;
use md5::{Digest, Md5};
use serde_json::Value;
use tokio_postgres::{Client, NoTls};

use ddb2pg::config::{ColumnSpec, Config, TableSpec};
use ddb2pg::convert::Cell;
use ddb2pg::schema::ColumnType;

/// A number no other call in this process gets: the tests share one process, so a
/// database or folder named by tag and pid alone could be another test's.
pub fn unique() -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

pub use ddb2pg::fixtures::Rng;

/// The seed of a random test: `DDB2PG_TEST_SEED` when set (to replay a failure), else
/// one from the clock. Printed either way, so a failure's output says how to replay it.
pub fn test_seed(test: &str) -> u64 {
    let seed = std::env::var("DDB2PG_TEST_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(7, |d| d.as_nanos() as u64)
        });
    eprintln!("{test}: seed {seed} (DDB2PG_TEST_SEED={seed} replays it)");
    seed
}

/// The server the tests use (trust auth on loopback).
pub fn admin_url() -> String {
    std::env::var("DDB2PG_TEST_PG")
        .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432/postgres".into())
}

fn url_for(db: &str) -> String {
    let admin = admin_url();
    match admin.rfind('/') {
        Some(p) => format!("{}/{db}", &admin[..p]),
        None => admin,
    }
}

/// A database of its own, dropped at the end of the test.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub fn new(tag: &str) -> TestDb {
        let name = format!("ddb2pg_t_{tag}_{}_{}", std::process::id(), unique());
        let rt = runtime();
        rt.block_on(async {
            let c = connect(&admin_url()).await;
            c.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .await
                .expect("drop old db");
            c.batch_execute(&format!("CREATE DATABASE \"{name}\""))
                .await
                .expect("create db");
        });
        let url = url_for(&name);
        TestDb { name, url }
    }

    pub fn client(&self) -> (tokio::runtime::Runtime, Client) {
        let rt = runtime();
        let c = rt.block_on(connect(&self.url));
        (rt, c)
    }

    /// Runs SQL that may fail: the server's error (with its detail) when it does.
    pub fn try_execute(&self, sql: &str) -> Result<(), String> {
        let (rt, c) = self.client();
        rt.block_on(async {
            c.batch_execute(sql)
                .await
                .map_err(|e| match e.as_db_error() {
                    Some(d) => format!("{}: {}", d.message(), d.detail().unwrap_or_default()),
                    None => e.to_string(),
                })
        })
    }

    /// Runs SQL and returns rows as strings (NULL as None), for quick assertions.
    pub fn query(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        let (rt, c) = self.client();
        rt.block_on(async {
            let msgs = c
                .simple_query(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            let mut rows = Vec::new();
            for m in msgs {
                if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
                    rows.push((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect());
                }
            }
            rows
        })
    }

    pub fn scalar(&self, sql: &str) -> String {
        self.query(sql)
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .unwrap_or_else(|| panic!("no value from {sql}"))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let rt = runtime();
        rt.block_on(async {
            if let Ok((c, conn)) = tokio_postgres::connect(&admin_url(), NoTls).await {
                tokio::spawn(conn);
                let _ = c
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await;
            }
        });
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

pub async fn connect(url: &str) -> Client {
    let (c, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    tokio::spawn(conn);
    c
}

/// A scratch folder, removed at the end.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!(
            "ddb2pg-test-{tag}-{}-{}",
            std::process::id(),
            unique()
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("scratch");
        Scratch(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The repository's folder (its `pipeline.toml`, `fixtures/`).
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The `ddb2pg` binary as a command: against the target `url` (`DDB2PG_TARGET_URL`), or
/// with `None` the config's own `target.url`.
pub fn ddb2pg_cmd(url: Option<&str>) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ddb2pg"));
    match url {
        Some(u) => c.env("DDB2PG_TARGET_URL", u),
        None => c.env_remove("DDB2PG_TARGET_URL"),
    };
    c
}

/// Runs the `ddb2pg` binary.
pub fn ddb2pg(args: &[&str]) -> Output {
    ddb2pg_cmd(None).args(args).output().expect("run ddb2pg")
}

/// Runs the `ddb2pg` binary against the target `url` (`DDB2PG_TARGET_URL`).
pub fn ddb2pg_at(args: &[&str], url: &str) -> Output {
    ddb2pg_cmd(Some(url))
        .args(args)
        .output()
        .expect("run ddb2pg")
}

/// Starts the `ddb2pg` binary against `url` with its output piped (to kill or signal it).
pub fn spawn_ddb2pg(args: &[&str], url: &str) -> std::process::Child {
    ddb2pg_cmd(Some(url))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start ddb2pg")
}

/// A report file, read through the library's own type.
pub fn read_report<T: serde::de::DeserializeOwned>(path: &Path) -> T {
    let text = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `load --report`.
pub fn load_report(path: &Path) -> ddb2pg::load::LoadReport {
    read_report(path)
}

/// `verify --report`.
pub fn verify_report(path: &Path) -> ddb2pg::verify::VerifyReport {
    read_report(path)
}

/// The report row of `table`.
pub fn table_of<'a>(r: &'a ddb2pg::load::LoadReport, table: &str) -> &'a ddb2pg::load::TableReport {
    r.tables
        .iter()
        .find(|t| t.table == table)
        .unwrap_or_else(|| panic!("no report row for {table}: {r:?}"))
}

/// Exit code, stdout and stderr of a run, for messages.
pub fn describe(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("gz");
    e.finish().expect("gz")
}

pub fn b64_md5(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Md5::digest(b))
}

/// Writes an export folder in AWS's layout: one data file per entry of `files` (each a
/// list of lines; an empty list makes an empty file), keys with an S3 prefix.
pub fn write_export(dir: &Path, files: &[Vec<String>]) {
    write_export_as(dir, files, "DYNAMODB_JSON", "json.gz");
}

/// [`write_export`] with the manifest's `outputFormat` and the data files' extension
/// given (`"ION"`, `"ion.gz"` for an Ion export: the lines are then Ion).
pub fn write_export_as(dir: &Path, files: &[Vec<String>], output_format: &str, ext: &str) {
    std::fs::create_dir_all(dir.join("data")).expect("dir");
    let mut manifest = String::new();
    let mut total = 0;
    for (i, lines) in files.iter().enumerate() {
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        let gz = gzip(text.as_bytes());
        let name = format!("file{i:02}.{ext}");
        std::fs::write(dir.join("data").join(&name), &gz).expect("write");
        manifest.push_str(&format!(
            "{{\"itemCount\":{},\"md5Checksum\":\"{}\",\"etag\":\"x-1\",\"dataFileS3Key\":\"prefix/AWSDynamoDB/01700000000000-abcdef01/data/{name}\"}}\n",
            lines.len(),
            b64_md5(&gz)
        ));
        total += lines.len();
    }
    std::fs::write(dir.join("manifest-files.json"), &manifest).expect("write");
    let summary = format!(
        "{{\"version\":\"2020-06-30\",\"exportArn\":\"arn:aws:dynamodb:us-east-1:0:table/t/export/01700000000000-abcdef01\",\"s3Bucket\":\"b\",\"s3Prefix\":\"prefix\",\"manifestFilesS3Key\":\"prefix/AWSDynamoDB/01700000000000-abcdef01/manifest-files.json\",\"itemCount\":{total},\"outputFormat\":\"{output_format}\"}}"
    );
    std::fs::write(dir.join("manifest-summary.json"), &summary).expect("write");
}

/// Writes a config file for `tables` (TOML text of `[[tables]]` entries) against `url`.
pub fn write_config(path: &Path, url: &str, tables_toml: &str) {
    let text = format!("[target]\nurl = \"{url}\"\nschema = \"public\"\n\n[tuning]\nconnections = 2\n\n{tables_toml}");
    std::fs::write(path, text).expect("config");
}

/// The folder of `../shared/acceptance`, when present.
pub fn acceptance_dir() -> Option<PathBuf> {
    let p = repo().join("../shared/acceptance");
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!(
            "SKIP: {} is absent (it exists only on the project's own machines)",
            p.display()
        );
        None
    }
}

/// Every item of an export, read independently: manifest → gunzip → serde_json.
pub fn read_export_items(dir: &Path) -> Vec<serde_json::Map<String, Value>> {
    let plan = ddb2pg::source::export::open(dir).expect("export opens");
    let mut items = Vec::new();
    for f in &plan.files {
        let mut bytes = Vec::new();
        plan.open_data(f)
            .expect("open data file")
            .read_to_end(&mut bytes)
            .expect("read data file");
        let mut text = String::new();
        if !bytes.is_empty() {
            flate2::read::MultiGzDecoder::new(&bytes[..])
                .read_to_string(&mut text)
                .expect("gunzip");
        }
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(line).expect("json line");
            let item = v
                .get("Item")
                .and_then(Value::as_object)
                .expect("Item")
                .clone();
            items.push(item);
        }
    }
    items
}

/// The plain JSON of a DynamoDB JSON value (the oracle's own reading of §3).
pub fn plain(v: &Value) -> Value {
    let (tag, inner) = v
        .as_object()
        .and_then(|o| o.iter().next())
        .expect("typed value");
    match tag.as_str() {
        "S" | "B" => inner.clone(),
        "N" => {
            serde_json::from_str(inner.as_str().expect("N text")).expect("N parses as JSON number")
        }
        "BOOL" => inner.clone(),
        "NULL" => Value::Null,
        "M" => Value::Object(
            inner
                .as_object()
                .expect("M")
                .iter()
                .map(|(k, v)| (k.clone(), plain(v)))
                .collect(),
        ),
        "L" => Value::Array(inner.as_array().expect("L").iter().map(plain).collect()),
        // Sets have no order: the tool gives them in a canonical one (strings by bytes,
        // binary by decoded bytes, numbers by value), checked here independently.
        "SS" => {
            let mut v: Vec<String> = inner
                .as_array()
                .expect("SS")
                .iter()
                .map(|s| s.as_str().expect("s").to_string())
                .collect();
            v.sort();
            Value::Array(v.into_iter().map(Value::String).collect())
        }
        "BS" => {
            let mut v: Vec<(Vec<u8>, String)> = inner
                .as_array()
                .expect("BS")
                .iter()
                .map(|s| {
                    let t = s.as_str().expect("b").to_string();
                    let raw = base64::engine::general_purpose::STANDARD
                        .decode(&t)
                        .unwrap_or_default();
                    (raw, t)
                })
                .collect();
            v.sort();
            Value::Array(v.into_iter().map(|(_, t)| Value::String(t)).collect())
        }
        "NS" => {
            let mut v: Vec<(f64, Value)> = inner
                .as_array()
                .expect("NS")
                .iter()
                .map(|n| {
                    let t = n.as_str().expect("n");
                    let f: f64 = t.trim().parse().expect("NS element parses as a number");
                    (f, serde_json::from_str(t).expect("number"))
                })
                .collect();
            v.sort_by(|a, b| a.0.total_cmp(&b.0));
            Value::Array(v.into_iter().map(|(_, n)| n).collect())
        }
        other => panic!("unknown tag {other}"),
    }
}

/// What the oracle expects in one cell: the text PostgreSQL should parse, and the
/// DynamoDB type it came from (None = SQL NULL).
fn expected_cell(
    col: &ColumnSpec,
    item: &serde_json::Map<String, Value>,
    mapped: &[&str],
) -> (Option<String>, &'static str) {
    if col.rest {
        let rest: serde_json::Map<String, Value> = item
            .iter()
            .filter(|(k, _)| !mapped.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), plain(v)))
            .collect();
        return (Some(Value::Object(rest).to_string()), "M");
    }
    let attr = col.from.as_deref().expect("from");
    let v = item.get(attr).filter(|v| v.get("NULL").is_none());
    let Some(v) = v else {
        return match &col.default {
            None => (None, "NULL"),
            Some(Cell::Str(s)) => (Some(s.to_string()), "S"),
            Some(Cell::I16(n)) => (Some(n.to_string()), "N"),
            Some(Cell::I32(n)) => (Some(n.to_string()), "N"),
            Some(Cell::I64(n)) => (Some(n.to_string()), "N"),
            Some(Cell::Bool(b)) => (Some(b.to_string()), "BOOL"),
            Some(other) => panic!(
                "column {}: no expected text for the default {other:?}",
                col.name
            ),
        };
    };
    let (tag, inner) = v.as_object().and_then(|o| o.iter().next()).expect("typed");
    let kind: &'static str = match tag.as_str() {
        "S" => "S",
        "N" => "N",
        "B" => "B",
        "BOOL" => "BOOL",
        "SS" => "SS",
        "NS" => "NS",
        "BS" => "BS",
        "M" => "M",
        _ => "L",
    };
    let text = match (col.ty, kind) {
        (ColumnType::Json | ColumnType::Jsonb, _) => plain(v).to_string(),
        (_, "S") => {
            let s = inner.as_str().expect("S").to_string();
            if col.strip_nul {
                s.replace('\0', "")
            } else {
                s
            }
        }
        (_, "N" | "B") => inner.as_str().expect("text").to_string(),
        (_, "BOOL") => inner.to_string(),
        _ => plain(v).to_string(),
    };
    (Some(text), kind)
}

/// The SQL that turns the expected text `e.val` (of DynamoDB type `e.kind`) into the
/// column's type, using PostgreSQL's own input functions.
fn expected_sql(ty: ColumnType) -> String {
    match ty {
        ColumnType::Text | ColumnType::Varchar(_) => "e.val".into(),
        ColumnType::Numeric(_) => "e.val::numeric".into(),
        ColumnType::Timestamp | ColumnType::Timestamptz => format!(
            "(CASE WHEN e.kind = 'N' THEN to_timestamp(e.val::numeric)::{t} ELSE e.val::{t} END)",
            t = ty.sql()
        ),
        ColumnType::Bytea => "(CASE WHEN e.kind = 'B' THEN decode(e.val, 'base64') ELSE convert_to(e.val, 'UTF8') END)".into(),
        ColumnType::Array(_) => format!(
            "(CASE WHEN e.val IS NULL THEN NULL ELSE ARRAY(SELECT x FROM jsonb_array_elements_text(e.val::jsonb) AS x)::{} END)",
            ty.sql()
        ),
        other => format!("e.val::{}", other.sql()),
    }
}

/// Checks that `schema.table` holds exactly the export's items (minus `rejected_keys`),
/// every column of every row, and returns the number of rows compared.
pub fn assert_table_matches_export(
    db: &TestDb,
    schema: &str,
    spec: &TableSpec,
    export_dir: &Path,
) -> usize {
    assert_table_matches_items(db, schema, spec, &read_export_items(export_dir))
}

/// Checks that `schema.table` holds exactly `items` (DynamoDB JSON maps), every column of
/// every row, and returns the number of rows compared.
pub fn assert_table_matches_items(
    db: &TestDb,
    schema: &str,
    spec: &TableSpec,
    items: &[serde_json::Map<String, Value>],
) -> usize {
    let mapped: Vec<&str> = spec
        .columns
        .iter()
        .filter_map(|c| c.from.as_deref())
        .collect();
    let pk = &spec.primary_key;
    let pk_cols: Vec<&ColumnSpec> = pk
        .iter()
        .map(|k| spec.columns.iter().find(|c| &c.name == k).expect("pk col"))
        .collect();
    let mut keys = Vec::new();
    let mut cols = Vec::new();
    let mut vals: Vec<Option<String>> = Vec::new();
    let mut kinds = Vec::new();
    let mut seen = HashMap::new();
    for item in items {
        let key: Vec<String> = pk_cols
            .iter()
            .map(|c| expected_cell(c, item, &mapped).0.expect("key present"))
            .collect();
        let key = serde_json::to_string(&key).expect("key");
        assert!(
            seen.insert(key.clone(), ()).is_none(),
            "duplicate key in export: {key}"
        );
        for c in &spec.columns {
            let (val, kind) = expected_cell(c, item, &mapped);
            keys.push(key.clone());
            cols.push(c.name.clone());
            vals.push(val);
            kinds.push(kind.to_string());
        }
    }
    let (rt, client) = db.client();
    rt.block_on(async {
        client
            .batch_execute("CREATE TEMP TABLE expected (key text, col text, val text, kind text)")
            .await
            .expect("temp table");
        for start in (0..keys.len()).step_by(20_000) {
            let end = (start + 20_000).min(keys.len());
            client
                .execute(
                    "INSERT INTO expected SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])",
                    &[&&keys[start..end], &&cols[start..end], &&vals[start..end], &&kinds[start..end]],
                )
                .await
                .expect("insert expected");
        }
        let qt = format!("\"{schema}\".\"{}\"", spec.name);
        let count: i64 = client.query_one(&format!("SELECT count(*) FROM {qt}"), &[]).await.expect("count").get(0);
        assert_eq!(count as usize, items.len(), "{}: row count differs from the export's item count", spec.name);
        let key_expr_e = pk_cols
            .iter()
            .enumerate()
            .map(|(i, c)| format!("a.\"{}\" = {}", c.name, expected_sql(c.ty).replace("e.val", &format!("(e.key::jsonb->>{i})")).replace("e.kind", "'S'")))
            .collect::<Vec<_>>()
            .join(" AND ");
        for c in &spec.columns {
            let sql = format!(
                "SELECT e.key, e.val, a.\"{col}\"::text, a.ctid IS NULL \
                 FROM expected e LEFT JOIN {qt} a ON {key_expr_e} \
                 WHERE e.col = $1 AND NOT (a.\"{col}\" IS NOT DISTINCT FROM {exp}) LIMIT 5",
                col = c.name,
                exp = expected_sql(c.ty),
            );
            let bad = client.query(&sql, &[&c.name]).await.unwrap_or_else(|e| panic!("{sql}: {e:?}"));
            if !bad.is_empty() {
                let shown: Vec<String> = bad
                    .iter()
                    .map(|r| {
                        format!(
                            "key {} expected {:?} got {:?} (row missing: {:?})",
                            r.get::<_, String>(0),
                            r.get::<_, Option<String>>(1),
                            r.get::<_, Option<String>>(2),
                            r.get::<_, Option<bool>>(3)
                        )
                    })
                    .collect();
                panic!("{}.{}: values differ from the export:\n{}", spec.name, c.name, shown.join("\n"));
            }
        }
        client.batch_execute("DROP TABLE expected").await.expect("drop");
    });
    items.len()
}

/// Loads a config, overriding its URL.
pub fn config_with_url(path: &Path, url: &str) -> Config {
    let text = std::fs::read_to_string(path).expect("config");
    Config::parse(
        &text,
        path,
        path.parent().expect("dir"),
        Some(url.to_string()),
    )
    .expect("valid config")
}

/// The bundled mapping's `order_items` against the orders' own `items` jsonb column (the
/// same attribute, compared with the export by [`assert_table_matches_export`]): a row
/// per element at its position, every value; returns the rows.
pub fn assert_order_items_match_orders(db: &TestDb, schema: &str) -> usize {
    let expected = db.scalar(&format!(
        "SELECT coalesce(sum(jsonb_array_length(items)), 0) FROM {schema}.orders"
    ));
    let rows = db.scalar(&format!("SELECT count(*) FROM {schema}.order_items"));
    assert_eq!(rows, expected, "{schema}.order_items: a row per element");
    let wrong = db.scalar(&format!(
        "SELECT count(*) FROM {schema}.order_items i LEFT JOIN {schema}.orders o ON o.id = i.order_id \
         WHERE o.id IS NULL \
            OR (o.items -> i.line ->> 'bookId')::uuid IS DISTINCT FROM i.book_id \
            OR (o.items -> i.line ->> 'quantity')::int IS DISTINCT FROM i.quantity \
            OR (o.items -> i.line ->> 'unitPrice')::numeric IS DISTINCT FROM i.unit_price"
    ));
    assert_eq!(
        wrong, "0",
        "{schema}.order_items: rows that are not their element"
    );
    rows.parse().expect("count")
}

/// Up to four `load --config cfg` runs, each killed (-9) after a delay drawn from the
/// test's seed — the first within 150 ms + `first_spread`, early enough that a load is
/// killed whatever the seed, the later ones within 1.65 s — with `after_kill(round)` after
/// each kill. A load that finishes first (exit 0 checked) ends the rounds. Returns the kills.
pub fn kill_loads_at_random(
    cfg: &str,
    url: &str,
    test: &str,
    first_spread: u64,
    mut after_kill: impl FnMut(usize),
) -> usize {
    let mut seed = test_seed(test) | 1;
    let mut kills = 0;
    for round in 0..4 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let spread = if round == 0 { first_spread } else { 1500 };
        let delay = std::time::Duration::from_millis(150 + seed % spread);
        let mut child = spawn_ddb2pg(&["load", "--config", cfg, "--no-progress"], url);
        std::thread::sleep(delay);
        if child.try_wait().expect("try_wait").is_some() {
            let out = child.wait_with_output().expect("wait");
            assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
            break;
        }
        child.kill().expect("kill -9");
        let _ = child.wait();
        kills += 1;
        eprintln!("round {round}: killed after {delay:?}");
        after_kill(round);
    }
    kills
}
