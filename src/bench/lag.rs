//! `ddb2pg bench --sync-rates R,…`: how far a `sync` following a DynamoDB stream lags
//! behind steady writes, and what each change costs it and PostgreSQL in CPU.
//!
//! One go: the fixtures' table is seeded into a new DynamoDB table (the emulator, or AWS
//! when the endpoint says so) with its stream on, the table loaded by scan (the baseline);
//! then per rate a `sync` child process follows the stream while `fixtures churn` writes at
//! that rate (inserts, updates, deletes 1:2:1). The lag measured is end to end: from
//! DynamoDB acknowledging the `PutItem` of a new key to that row being visible in
//! PostgreSQL, polled every [`POLL`] (the stream's own `ApproximateCreationDateTime` is
//! truncated to the minute by DynamoDB Local, so the sync's reported lag cannot show
//! seconds there). CPU per change: the sync process's CPU, and every PostgreSQL process's
//! (the bench's polling included), from the sync at the tip to the last insert seen,
//! divided by the writes DynamoDB acknowledged.
//!
//! Input: the config's table, rates, seconds per rate. Output: `DIR/lag.json`,
//! `DIR/lag.md`, `DIR/lag.svg` (lag p95 per second of each rate's churn).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_dynamodb::types::{AttributeValue, StreamViewType};
use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use super::{child_load, fixtures, io, median, postgres_cpu_seconds, write_bench_config};
use crate::config::{Config, TARGET_URL_ENV};
use crate::error::{Error, Result};
use crate::fixtures::churn::{churn, Acked, ChurnOptions, ChurnReport};
use crate::load::metrics::{machine, process_cpu_seconds};
use crate::schema::quote_ident;
use crate::sink::{connect, qualified};
use crate::sync::SyncReport;

/// How often PostgreSQL is asked for the inserts not seen yet.
pub const POLL: Duration = Duration::from_millis(100);
/// How long after the churn's last write an insert may still arrive before it counts as
/// missing.
pub const DRAIN: Duration = Duration::from_secs(60);
/// How long a `sync` may take to reach the stream's tip.
const READY: Duration = Duration::from_secs(120);
/// Shares of inserts, updates and deletes the churn writes.
const MIX: [u64; 3] = [1, 2, 1];

/// Options of one lag bench.
#[derive(Debug, Clone)]
pub struct LagOptions {
    pub config: PathBuf,
    pub scale: u64,
    pub seed: u64,
    pub table: String,
    /// Writes per second, one churn each, in this order.
    pub rates: Vec<f64>,
    /// Seconds of churn per rate.
    pub seconds: f64,
    pub out: PathBuf,
    pub connections: Option<usize>,
}

/// One rate's churn and what the sync made of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RateRun {
    /// Writes per second asked, and achieved (acknowledged by DynamoDB).
    pub rate: f64,
    pub achieved_rate: f64,
    pub inserts: u64,
    pub updates: u64,
    pub deletes: u64,
    pub failed: u64,
    /// Inserts whose row was seen in PostgreSQL (the lag's samples); inserts deleted by
    /// the churn before a poll saw them; inserts never seen within [`DRAIN`].
    pub measured: u64,
    pub deleted_unseen: u64,
    pub missing: u64,
    pub lag_p50_s: f64,
    pub lag_p95_s: f64,
    pub lag_p99_s: f64,
    pub lag_max_s: f64,
    /// From the churn's end (every write acknowledged; seen within a poll) to the last
    /// insert seen.
    pub drain_s: f64,
    /// Stream records the sync read (its report), its CPU, and per write.
    pub sync_changes: u64,
    pub sync_cpu_seconds: Option<f64>,
    pub sync_cpu_us_per_change: Option<f64>,
    pub postgres_cpu_seconds: Option<f64>,
    pub postgres_cpu_us_per_change: Option<f64>,
    /// (second of the churn, p95 lag in seconds of the inserts acknowledged in it).
    pub lag_p95_per_second: Vec<(f64, f64)>,
}

/// Everything one lag bench measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LagReport {
    pub machine: String,
    pub postgres: String,
    pub dynamodb_endpoint: Option<String>,
    pub table: String,
    pub dynamodb_table: String,
    pub items: u64,
    pub seed: u64,
    pub seconds_per_rate: f64,
    pub poll_ms: u64,
    pub runs: Vec<RateRun>,
}

/// The key column the bench watches: its name, SQL type and DynamoDB attribute.
struct KeyColumn {
    name: String,
    sql_type: String,
    attribute: String,
}

/// Runs the lag bench.
///
/// # Errors
/// The table has no one-column key from an attribute, fixtures, the emulator, a child
/// process or PostgreSQL fail.
pub fn run(opts: &LagOptions) -> Result<LagReport> {
    if opts.rates.is_empty() || opts.rates.iter().any(|r| !r.is_finite() || *r <= 0.0) {
        return Err(Error::Usage(
            "--sync-rates: one or more writes/s above 0, e.g. 200,500,1000".into(),
        ));
    }
    std::fs::create_dir_all(&opts.out).map_err(io(format!("create {}", opts.out.display())))?;
    let out =
        std::fs::canonicalize(&opts.out).map_err(io(format!("resolve {}", opts.out.display())))?;
    let config = Config::load(&opts.config)?;
    let spec = config
        .select_tables(std::slice::from_ref(&opts.table))?
        .into_iter()
        .next()
        .ok_or_else(|| Error::Internal("no table selected".into()))?;
    let key = match spec.primary_key.as_slice() {
        [k] => spec.columns.iter().find(|c| &c.name == k).and_then(|c| {
            c.from.clone().map(|attribute| KeyColumn {
                name: c.name.clone(),
                sql_type: c.ty.sql(),
                attribute,
            })
        }),
        _ => None,
    }
    .ok_or_else(|| {
        Error::Usage(format!(
            "bench --sync-rates: table {} needs a one-column primary key taken from an attribute",
            opts.table
        ))
    })?;
    let export_dir = fixtures(&out, opts.scale, opts.seed, &opts.table)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(io("start the runtime".into()))?;
    let stamp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let ddb_table = format!("ddb2pg-bench-lag-{}-{stamp}", opts.table);
    // The stream is on from the table's creation, so the seed's records are its first
    // (the sync applies them again, equal): a shard never empty when first read.
    tracing::info!(table = %ddb_table, "Seeding the DynamoDB table, its stream on.");
    let seeded = rt.block_on(async {
        let r = crate::fixtures::seed::seed(
            Some(ddb_table.clone()),
            &export_dir,
            Some(crate::fixtures::seed::KeyArg {
                name: key.attribute.clone(),
                ty: None,
            }),
            None,
            32,
            Some(StreamViewType::NewAndOldImages),
        )
        .await?;
        Ok::<_, Error>(r)
    })?;

    let schema = "ddb2pg_bench_lag".to_string();
    let bench_config = out.join("lag-pipeline.toml");
    let mut source = toml::Table::new();
    source.insert("dynamodb".into(), toml::Value::String(ddb_table.clone()));
    let mut changes = toml::Table::new();
    changes.insert("stream".into(), toml::Value::String(ddb_table.clone()));
    write_bench_config(
        &opts.config,
        std::slice::from_ref(&opts.table),
        source,
        Some(changes),
        &schema,
        &bench_config,
    )?;
    let client = rt.block_on(connect(&config.target.url))?;
    let pg_version: String = rt
        .block_on(client.query_one("SHOW server_version", &[]))
        .map(|r| r.get(0))
        .map_err(|e| Error::pg(&opts.table, "bench", &e))?;
    rt.block_on(client.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {}",
        quote_ident(&schema)
    )))
    .map_err(|e| Error::pg(&opts.table, "bench", &e))?;
    tracing::info!(table = %opts.table, "Loading the table by scan (the sync's baseline).");
    child_load(
        opts.connections,
        &bench_config,
        &schema,
        "replace",
        &out.join("lag-load.json"),
    )?;

    let qt = qualified(&schema, &opts.table);
    let probe_sql = format!(
        "SELECT p.i FROM unnest($1::text[]) WITH ORDINALITY AS p(v, i) \
         WHERE EXISTS (SELECT 1 FROM {qt} t WHERE t.{} = p.v::{})",
        quote_ident(&key.name),
        key.sql_type
    );
    let mut runs = Vec::new();
    for (i, &rate) in opts.rates.iter().enumerate() {
        tracing::info!(rate, seconds = opts.seconds, "Churn while sync follows.");
        let tag = format!("{}-{rate}", i + 1);
        let mut child = spawn_sync(opts, &bench_config, &schema, &out, &tag)?;
        let watched = rt.block_on(async {
            wait_ready(&client, &schema, &opts.table, &mut child, &out, &tag).await?;
            let pid = child.id().to_string();
            let (cpu0, pg0) = (process_cpu_seconds(&pid), postgres_cpu_seconds());
            let w = churn_and_watch(
                &client,
                &probe_sql,
                &key.attribute,
                ChurnOptions {
                    table: ddb_table.clone(),
                    rate,
                    seconds: opts.seconds,
                    seed: opts.seed + i as u64,
                    mix: MIX,
                    probe: None,
                },
            )
            .await?;
            let cpu = cpu0.and_then(|a| process_cpu_seconds(&pid).map(|b| b - a));
            let pg = pg0.and_then(|a| postgres_cpu_seconds().map(|b| b - a));
            Ok::<_, Error>((w, cpu, pg))
        });
        let report = stop_sync(child, &out, &tag);
        let (w, cpu, pg) = watched?;
        let report = report?;
        runs.push(rate_run(rate, &w, cpu, pg, &report));
    }
    let report = LagReport {
        machine: machine(),
        postgres: pg_version,
        dynamodb_endpoint: std::env::var("AWS_ENDPOINT_URL_DYNAMODB")
            .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
            .ok(),
        table: opts.table.clone(),
        dynamodb_table: ddb_table.clone(),
        items: seeded.items,
        seed: opts.seed,
        seconds_per_rate: opts.seconds,
        poll_ms: POLL.as_millis() as u64,
        runs,
    };
    std::fs::write(
        out.join("lag.json"),
        serde_json::to_string_pretty(&report).unwrap_or_default(),
    )
    .map_err(io("write lag.json".into()))?;
    std::fs::write(out.join("lag.md"), markdown(&report)).map_err(io("write lag.md".into()))?;
    draw(&report, &out.join("lag.svg"))?;
    rt.block_on(async {
        let c = crate::source::aws::dynamodb().await;
        if let Err(e) = c.delete_table().table_name(&ddb_table).send().await {
            tracing::warn!(table = %ddb_table, "DeleteTable failed: {}", crate::source::aws::describe(&e));
        }
    });
    Ok(report)
}

fn spawn_sync(
    opts: &LagOptions,
    config: &Path,
    schema: &str,
    out: &Path,
    tag: &str,
) -> Result<Child> {
    let exe = std::env::current_exe().map_err(io("find the ddb2pg binary".into()))?;
    let log = std::fs::File::create(out.join(format!("lag-sync-{tag}.log")))
        .map_err(io(format!("create lag-sync-{tag}.log")))?;
    let mut cmd = Command::new(exe);
    cmd.args([
        "sync",
        "--no-progress",
        "--log-level",
        "warn",
        "--schema",
        schema,
        "--config",
    ])
    .arg(config)
    .arg("--report")
    .arg(out.join(format!("lag-sync-{tag}.json")))
    .arg("--rejects")
    .arg(out.join(format!("lag-sync-{tag}.rejects.jsonl")))
    .stdout(Stdio::null())
    .stderr(log);
    if let Some(c) = opts.connections {
        cmd.args(["--connections", &c.to_string()]);
    }
    if let Ok(url) = std::env::var(TARGET_URL_ENV) {
        cmd.env(TARGET_URL_ENV, url);
    }
    cmd.spawn().map_err(io("run ddb2pg sync".into()))
}

fn sync_log(out: &Path, tag: &str) -> String {
    std::fs::read_to_string(out.join(format!("lag-sync-{tag}.log")))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Waits until the sync has read its shard to the tip since it started.
async fn wait_ready(
    client: &Client,
    schema: &str,
    table: &str,
    child: &mut Child,
    out: &Path,
    tag: &str,
) -> Result<()> {
    let started = Instant::now();
    let since = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(Error::Usage(format!(
                "the benchmarked sync stopped ({status}): {}",
                sync_log(out, tag)
            )));
        }
        let at_tip: i64 = client
            .query_one(
                "SELECT count(*) FROM ddb2pg.stream_shards WHERE target_schema = $1 \
                   AND target_table = $2 AND tip_at >= to_timestamp($3::float8)",
                &[&schema, &table, &since],
            )
            .await
            .map(|r| r.get(0))
            .unwrap_or(0);
        if at_tip > 0 {
            return Ok(());
        }
        if started.elapsed() > READY {
            return Err(Error::Usage(format!(
                "the benchmarked sync did not reach the stream's tip in {} s: {}",
                READY.as_secs(),
                sync_log(out, tag)
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// SIGTERM (the sync commits what it holds and writes its report), then the report.
fn stop_sync(mut child: Child, out: &Path, tag: &str) -> Result<SyncReport> {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().map_err(io("wait for ddb2pg sync".into()))?;
    let path = out.join(format!("lag-sync-{tag}.json"));
    let text = std::fs::read(&path).map_err(|e| {
        Error::Usage(format!(
            "the benchmarked sync ({status}) wrote no report {}: {e}; its log: {}",
            path.display(),
            sync_log(out, tag)
        ))
    })?;
    serde_json::from_slice(&text).map_err(|e| Error::Usage(format!("{}: {e}", path.display())))
}

/// What one churn's watch saw.
struct Watched {
    churn: ChurnReport,
    /// (seconds from the churn's start to the insert's acknowledgement, lag in seconds).
    lags: Vec<(f64, f64)>,
    deleted_unseen: u64,
    missing: u64,
    drain_s: f64,
}

/// The key attribute's value as the text PostgreSQL casts to the key column's type.
fn key_text(a: &Acked, attribute: &str) -> Result<String> {
    match a.key.get(attribute) {
        Some(AttributeValue::S(s)) => Ok(s.clone()),
        Some(AttributeValue::N(n)) => Ok(n.clone()),
        _ => Err(Error::Usage(format!(
            "bench --sync-rates: the key attribute {attribute} is not a string or a number"
        ))),
    }
}

/// Runs the churn, polling PostgreSQL for each acknowledged insert until its row is
/// there (or [`DRAIN`] after the churn's end).
async fn churn_and_watch(
    client: &Client,
    probe_sql: &str,
    attribute: &str,
    mut opts: ChurnOptions,
) -> Result<Watched> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Acked>();
    opts.probe = Some(tx);
    let task = tokio::spawn(async move { churn(&opts).await });
    let stmt = client
        .prepare(probe_sql)
        .await
        .map_err(|e| Error::pg("bench", "prepare the probe", &e))?;
    let mut pending: Vec<(String, Instant)> = Vec::new();
    let mut lags = Vec::new();
    let mut deleted_unseen = 0u64;
    let mut ended: Option<Instant> = None;
    // The first write's acknowledgement: the churn's start (its sampling of the table
    // comes before).
    let mut origin: Option<Instant> = None;
    let mut last_seen: Option<Instant> = None;
    loop {
        let finished = task.is_finished();
        while let Ok(a) = rx.try_recv() {
            let k = key_text(&a, attribute)?;
            origin.get_or_insert(a.at);
            if a.deleted {
                let before = pending.len();
                pending.retain(|(p, _)| p != &k);
                deleted_unseen += (before - pending.len()) as u64;
            } else {
                pending.push((k, a.at));
            }
        }
        if !pending.is_empty() {
            let keys: Vec<&str> = pending.iter().map(|(k, _)| k.as_str()).collect();
            let rows = client
                .query(&stmt, &[&keys])
                .await
                .map_err(|e| Error::pg("bench", "look for the inserted keys", &e))?;
            let now = Instant::now();
            let found: HashSet<usize> = rows
                .iter()
                .filter_map(|r| usize::try_from(r.get::<_, i64>(0) - 1).ok())
                .collect();
            if !found.is_empty() {
                last_seen = Some(now);
                let t0 = origin.unwrap_or(now);
                let mut i = 0;
                pending.retain(|(_, at)| {
                    let seen = found.contains(&i);
                    i += 1;
                    if seen {
                        lags.push((
                            at.saturating_duration_since(t0).as_secs_f64(),
                            now.duration_since(*at).as_secs_f64(),
                        ));
                    }
                    !seen
                });
            }
        }
        if finished {
            let end = *ended.get_or_insert_with(Instant::now);
            if pending.is_empty() || end.elapsed() > DRAIN {
                break;
            }
        }
        tokio::time::sleep(POLL).await;
    }
    let churn = task
        .await
        .map_err(|e| Error::Internal(format!("the churn task failed: {e}")))??;
    let drain_s = match (last_seen, ended) {
        (Some(seen), Some(end)) => seen.saturating_duration_since(end).as_secs_f64(),
        _ => 0.0,
    };
    Ok(Watched {
        churn,
        lags,
        deleted_unseen,
        missing: pending.len() as u64,
        drain_s,
    })
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let at = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

fn rate_run(
    rate: f64,
    w: &Watched,
    cpu: Option<f64>,
    pg: Option<f64>,
    report: &SyncReport,
) -> RateRun {
    let mut sorted: Vec<f64> = w.lags.iter().map(|l| l.1).collect();
    sorted.sort_by(f64::total_cmp);
    let writes = w.churn.inserts + w.churn.updates + w.churn.deletes;
    let per = |s: Option<f64>| s.filter(|_| writes > 0).map(|s| s * 1e6 / writes as f64);
    let seconds = w
        .lags
        .iter()
        .map(|l| l.0 as usize)
        .max()
        .map_or(0, |m| m + 1);
    let mut buckets: Vec<Vec<f64>> = vec![Vec::new(); seconds];
    for (at, lag) in &w.lags {
        if let Some(b) = buckets.get_mut(*at as usize) {
            b.push(*lag);
        }
    }
    let lag_p95_per_second = buckets
        .into_iter()
        .enumerate()
        .filter(|(_, b)| !b.is_empty())
        .map(|(s, mut b)| {
            b.sort_by(f64::total_cmp);
            (s as f64, percentile(&b, 0.95))
        })
        .collect();
    RateRun {
        rate,
        achieved_rate: w.churn.rate,
        inserts: w.churn.inserts,
        updates: w.churn.updates,
        deletes: w.churn.deletes,
        failed: w.churn.failed,
        measured: w.lags.len() as u64,
        deleted_unseen: w.deleted_unseen,
        missing: w.missing,
        lag_p50_s: median(sorted.clone()),
        lag_p95_s: percentile(&sorted, 0.95),
        lag_p99_s: percentile(&sorted, 0.99),
        lag_max_s: sorted.last().copied().unwrap_or(0.0),
        drain_s: w.drain_s,
        sync_changes: report.tables.iter().map(|t| t.changes).sum(),
        sync_cpu_seconds: cpu,
        sync_cpu_us_per_change: per(cpu),
        postgres_cpu_seconds: pg,
        postgres_cpu_us_per_change: per(pg),
        lag_p95_per_second,
    }
}

fn markdown(r: &LagReport) -> String {
    let mut s = format!(
        "# ddb2pg bench: sync lag, {} followed through the stream of {}\n\n",
        r.table, r.dynamodb_table
    );
    s.push_str(&format!(
        "- machine: {}\n- PostgreSQL {}\n- DynamoDB: {}\n- {} items seeded (seed {}), {} s of churn per rate (inserts:updates:deletes {}:{}:{}), PostgreSQL polled every {} ms\n\n",
        r.machine,
        r.postgres,
        r.dynamodb_endpoint.as_deref().unwrap_or("AWS"),
        r.items,
        r.seed,
        r.seconds_per_rate,
        MIX[0],
        MIX[1],
        MIX[2],
        r.poll_ms
    ));
    s.push_str("Lag: from DynamoDB acknowledging an insert to its row visible in PostgreSQL.\n\n");
    s.push_str("| writes/s asked | achieved | writes | inserts measured | missing | lag p50 s | p95 s | p99 s | max s | drain s | sync CPU µs/change | PostgreSQL CPU µs/change |\n");
    s.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let us = |v: Option<f64>| v.map_or_else(|| "n/a".into(), |v| format!("{v:.0}"));
    for x in &r.runs {
        s.push_str(&format!(
            "| {:.0} | {:.0} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} |\n",
            x.rate,
            x.achieved_rate,
            x.inserts + x.updates + x.deletes,
            x.measured,
            x.missing,
            x.lag_p50_s,
            x.lag_p95_s,
            x.lag_p99_s,
            x.lag_max_s,
            x.drain_s,
            us(x.sync_cpu_us_per_change),
            us(x.postgres_cpu_us_per_change)
        ));
    }
    s
}

/// Lag p95 per second of churn, one line per rate, the 5 s goal as a line.
fn draw(r: &LagReport, path: &Path) -> Result<()> {
    use crate::chart::{draw_panels, Line, Panel, Unit, GOAL, PALETTE};
    let mut lines: Vec<Line> = r
        .runs
        .iter()
        .enumerate()
        .map(|(i, x)| Line {
            label: format!("{:.0} writes/s (achieved {:.0})", x.rate, x.achieved_rate),
            points: x.lag_p95_per_second.clone(),
            color: PALETTE[i % PALETTE.len()],
            width: 2,
        })
        .collect();
    lines.push(Line {
        label: "goal: p95 under 5 s".into(),
        points: vec![(0.0, 5.0), (r.seconds_per_rate.max(1.0), 5.0)],
        color: GOAL,
        width: 2,
    });
    draw_panels(
        path,
        &format!("ddb2pg sync lag: {} (p95 per second of churn)", r.table),
        "seconds of churn",
        &[Panel {
            title: "lag from DynamoDB's acknowledgement to the row in PostgreSQL".into(),
            y_desc: "lag, seconds".into(),
            unit: Unit::Seconds,
            lines,
            y_floor: 5.0,
        }],
    )
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_of_sorted_samples() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.95), 95.0);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
