//! The load: plan → read → decode + map → encode → write, all stages at once, with a
//! bounded queue between each pair.
//!
//! ```text
//!  reader threads ──pages──► dispatcher ──rayon job per page──► chunks ──► N COPY writers
//!  (gunzip, lines)  bounded   (token per job in flight)        bounded    (tokio-postgres)
//! ```
//!
//! Worst-case memory per table, with `P = tuning.page_bytes`, `T = cpu_threads`,
//! `R = readers`, `C = connections`:
//! readers hold ≤ 2P each (the page being filled and its carry-over), the page queue
//! holds ≤ T pages, T + 2 jobs are in flight, each with its page, its Arrow batch and its
//! COPY bytes (≈ 3P), and the chunk queue holds ≤ 2C encoded pages:
//! ≈ (2R + T + 3(T + 2) + 2C) · P — about 60 MB with the defaults on 2 cores,
//! whatever the input size.
//!
//! Each table's COPY streams commit together at the end, so a failed table leaves no
//! partial rows behind (a table this load created is dropped again).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_postgres::Client;

use crate::config::{Config, TableSpec};
use crate::decode::{decode_lines, Reject, TablePlan};
use crate::encode::encode_batch;
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::rejects::RejectWriter;
use crate::schema::ColumnType;
use crate::sink::postgres::ForeignKeyReport;
use crate::sink::postgres::{self, CopyStream, Mode};
use crate::source::dynamodb::ScanReport;
use crate::source::{Page, SourcePlan};

/// Options of one `load`.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub mode: Mode,
    /// Target schema (`--schema`, else `target.schema`).
    pub schema: String,
    pub tables: Vec<String>,
    pub rejects_path: PathBuf,
    pub max_rejects: Option<u64>,
    /// Draw progress bars (a terminal) rather than log lines.
    pub bars: bool,
}

/// Per-table outcome, as printed and as written to `--report`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TableReport {
    pub table: String,
    pub schema: String,
    pub source: String,
    /// Splits: export data files, or scan segments.
    pub files: usize,
    /// Items the manifest promised (for a scan: DescribeTable's estimate).
    pub expected: u64,
    /// Items read from the source.
    pub rows_read: u64,
    pub rows_written: u64,
    pub rejected: u64,
    /// Compressed bytes read.
    pub bytes_read: u64,
    /// Uncompressed DynamoDB JSON bytes.
    pub bytes_uncompressed: u64,
    /// Binary COPY bytes sent.
    pub bytes_copied: u64,
    pub seconds: f64,
    pub rows_per_second: f64,
    pub created: bool,
    /// `--mode upsert`: what the merge did.
    #[serde(default)]
    pub upsert: Option<UpsertCounts>,
    pub stages: StageReport,
    /// Requests to S3 or DynamoDB that were retried (throttling, 5xx, cut connections).
    #[serde(default)]
    pub source_retries: u64,
    /// A DynamoDB scan: segments, capacity, retries.
    #[serde(default)]
    pub scan: Option<ScanReport>,
    /// `[[tables.indexes]]` built after the data.
    #[serde(default)]
    pub indexes: Vec<String>,
    /// Foreign keys of `references` columns, with their orphans.
    #[serde(default)]
    pub foreign_keys: Vec<ForeignKeyReport>,
}

/// Rows of an upsert: new keys inserted, changed rows updated, equal rows left alone.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct UpsertCounts {
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
}

fn secs(ns: &AtomicU64) -> f64 {
    ns.load(Ordering::Relaxed) as f64 / 1e9
}

/// The whole load's outcome.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoadReport {
    pub mode: Option<Mode>,
    pub schema: String,
    pub tables: Vec<TableReport>,
    pub rejects_file: Option<String>,
    pub seconds: f64,
    pub peak_rss_bytes: Option<u64>,
    /// CPU seconds of this process (user + system).
    pub cpu_seconds: Option<f64>,
}

impl LoadReport {
    /// Items rejected across all tables.
    #[must_use]
    pub fn rejected(&self) -> u64 {
        self.tables.iter().map(|t| t.rejected).sum()
    }

    /// Rows whose foreign key has no match, across all tables.
    #[must_use]
    pub fn orphans(&self) -> u64 {
        self.tables
            .iter()
            .flat_map(|t| &t.foreign_keys)
            .map(|f| f.orphans)
            .sum()
    }
}

/// A table ready to load: its plan and its opened source.
struct Prepared {
    spec: TableSpec,
    plan: Arc<TablePlan>,
    source: SourcePlan,
}

/// Checks every selected table's mapping and opens its source before any work starts.
///
/// # Errors
/// A mapping the decoder cannot build, or a source that cannot be opened.
async fn open_sources(config: &Config, names: &[String]) -> Result<Vec<Prepared>> {
    let mut out = Vec::new();
    for spec in config.select_tables(names)? {
        let plan = TablePlan::try_new(&spec)
            .map_err(|e| Error::Usage(format!("table {}: {e}", spec.name)))?;
        let source = SourcePlan::open(&spec, &config.tuning).await?;
        for w in source.warnings() {
            tracing::warn!(table = %spec.name, source = %source.location(), "{w}");
        }
        if let SourcePlan::Scan(s) = &source {
            tracing::info!(
                table = %spec.name,
                dynamodb = %s.table,
                segments = s.segments,
                segments_from = %s.segments_from,
                at_once = s.concurrency,
                read_capacity = s.read_capacity,
                read_capacity_from = %s.read_capacity_from,
                "Scan planned."
            );
        }
        out.push(Prepared {
            spec,
            plan: Arc::new(plan),
            source,
        });
    }
    Ok(out)
}

/// Runs `load` for the selected tables, one after another.
///
/// # Errors
/// The first failure; tables loaded before it stay committed.
pub async fn load(config: &Config, opts: &LoadOptions) -> Result<LoadReport> {
    let started = Instant::now();
    let prepared = open_sources(config, &opts.tables).await?;
    let control = postgres::connect(&config.target.url).await?;
    let pool = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(config.tuning.cpu_threads)
            .thread_name(|i| format!("ddb2pg-cpu-{i}"))
            .build()
            .map_err(|e| Error::CpuPool(e.to_string()))?,
    );
    let rejects = Arc::new(Mutex::new(RejectWriter::create(&opts.rejects_path)?));
    let interrupted = watch_signals();
    let progress = Progress::new(opts.bars);
    let mut report = LoadReport {
        mode: Some(opts.mode),
        schema: opts.schema.clone(),
        rejects_file: Some(opts.rejects_path.display().to_string()),
        ..LoadReport::default()
    };
    // A replace empties tables that other tables' declared foreign keys point at: those
    // keys come off first and go back on (validated) after the data.
    let mut fk_tables: Vec<TableSpec> = Vec::new();
    if opts.mode == Mode::Replace {
        let replaced: Vec<String> = prepared.iter().map(|p| p.spec.name.clone()).collect();
        let dropped =
            postgres::drop_declared_foreign_keys(&control, &opts.schema, &replaced, &config.tables)
                .await?;
        for name in dropped {
            if !replaced.contains(&name) {
                if let Some(t) = config.tables.iter().find(|t| t.name == name) {
                    fk_tables.push(t.clone());
                }
            }
        }
    }
    let mut specs = Vec::new();
    for p in prepared {
        specs.push(p.spec.clone());
        if interrupted.load(Ordering::SeqCst) {
            return Err(interrupted_error(&report, &p.spec.name));
        }
        let name = p.spec.name.clone();
        let t = match load_table(
            config,
            opts,
            &control,
            &pool,
            &rejects,
            &progress,
            &interrupted,
            p,
        )
        .await
        {
            Err(Error::Interrupted) => return Err(interrupted_error(&report, &name)),
            other => other?,
        };
        report.tables.push(t);
    }
    // Foreign keys once every table of the run is in: the order tables load in never matters.
    for spec in &fk_tables {
        for fk in postgres::add_foreign_keys(&control, &opts.schema, spec).await? {
            if fk.orphans > 0 {
                tracing::warn!(table = %spec.name, column = %fk.column, orphans = fk.orphans, sample = ?fk.sample, "Rows of a table not in this run reference missing keys; the foreign key stays NOT VALID.");
            }
        }
    }
    for (spec, t) in specs.iter().zip(report.tables.iter_mut()) {
        t.foreign_keys = postgres::add_foreign_keys(&control, &opts.schema, spec).await?;
        for fk in &t.foreign_keys {
            if fk.orphans > 0 {
                tracing::warn!(
                    table = %spec.name,
                    column = %fk.column,
                    references = %fk.references,
                    orphans = fk.orphans,
                    sample = ?fk.sample,
                    "Rows reference missing keys; the foreign key stays NOT VALID."
                );
            }
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    report.peak_rss_bytes = peak_rss_bytes();
    report.cpu_seconds = process_cpu_seconds("self");
    Ok(report)
}

/// Ctrl-C (SIGINT) or SIGTERM sets the flag; the table being loaded stops, rolls back
/// (nothing half-loaded is committed) and the load ends with what is done so far.
fn watch_signals() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut int), Ok(mut term)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) else {
                return;
            };
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::warn!("Interrupted: stopping; the table being loaded rolls back.");
        f.store(true, Ordering::SeqCst);
    });
    flag
}

/// Aborts a background task when its owner goes out of scope.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The error for an interrupted load: what committed, and how to finish.
fn interrupted_error(report: &LoadReport, table: &str) -> Error {
    let done: Vec<&str> = report.tables.iter().map(|t| t.table.as_str()).collect();
    Error::Source {
        source_name: "load".into(),
        reason: format!(
            "interrupted while loading {table}: it was rolled back (nothing of it committed){}; re-run the same command to load what is left (tables already loaded: use --table to skip them, or --mode replace/upsert to redo them)",
            if done.is_empty() {
                String::new()
            } else {
                format!("; committed before it: {}", done.join(", "))
            }
        ),
    }
}

/// Shared counters of one table's load.
#[derive(Default)]
pub struct Counters {
    pub items: AtomicU64,
    pub rows_written: AtomicU64,
    pub rejected: AtomicU64,
    pub bytes_read: Arc<AtomicU64>,
    pub bytes_uncompressed: AtomicU64,
    pub bytes_copied: AtomicU64,
    /// Nanoseconds: readers reading (total) and waiting on a full page queue.
    pub read_ns: AtomicU64,
    pub read_blocked_ns: AtomicU64,
    /// Nanoseconds: decode + encode jobs, and their waits on a full chunk queue.
    pub cpu_ns: AtomicU64,
    pub cpu_blocked_ns: AtomicU64,
    /// Nanoseconds: writers sending to PostgreSQL (including the server's pace).
    pub write_ns: AtomicU64,
    /// Pages and chunks sitting in their queues right now.
    pub pages_queued: AtomicU64,
    pub chunks_queued: AtomicU64,
    /// Upsert: rows inserted and rows updated (the rest were equal and left alone).
    pub inserted: AtomicU64,
    pub updated: AtomicU64,
}

/// Where the time went, per stage: the bottleneck is the busiest stage, and the queue
/// in front of it is full while the one after it is empty.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StageReport {
    /// Seconds the readers spent reading and gunzipping (not waiting on the queue).
    pub read_busy_s: f64,
    pub read_threads: usize,
    /// Seconds of decode + encode work.
    pub decode_encode_busy_s: f64,
    pub cpu_threads: usize,
    /// Seconds the writers spent sending to PostgreSQL (waiting on the server included).
    pub write_busy_s: f64,
    pub connections: usize,
    /// Mean fill of the page queue (0..1) and of the chunk queue, sampled every 100 ms.
    pub page_queue_fill: f64,
    pub chunk_queue_fill: f64,
    /// (seconds since the table started, rows written), every 250 ms.
    pub timeline: Vec<(f64, u64)>,
}

/// What a decode/encode job hands to the writers.
struct Chunk {
    rows: u64,
    bytes: Bytes,
}

/// First error wins; everyone checks `cancel`.
#[derive(Default)]
struct Failure {
    cancel: AtomicBool,
    first: Mutex<Option<Error>>,
}

impl Failure {
    fn set(&self, e: Error) {
        if let Ok(mut slot) = self.first.lock() {
            if slot.is_none() {
                *slot = Some(e);
            }
        }
        self.cancel.store(true, Ordering::SeqCst);
    }

    fn take(&self) -> Option<Error> {
        self.first.lock().ok().and_then(|mut s| s.take())
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

#[allow(clippy::too_many_arguments)]
async fn load_table(
    config: &Config,
    opts: &LoadOptions,
    control: &Client,
    pool: &Arc<rayon::ThreadPool>,
    rejects: &Arc<Mutex<RejectWriter>>,
    progress: &Progress,
    interrupted: &Arc<AtomicBool>,
    p: Prepared,
) -> Result<TableReport> {
    let started = Instant::now();
    let schema = opts.schema.clone();
    let spec = p.spec.clone();
    let tuning = &config.tuning;
    let prep = postgres::prepare_table(control, &schema, &spec, opts.mode).await?;
    let span = tracing::info_span!("table", table = %spec.name);
    let _guard = span.enter();
    tracing::info!(
        splits = p.source.splits(),
        items = p.source.expected_items(),
        mode = ?opts.mode,
        created = prep.created,
        "Loading table."
    );
    let counters = Arc::new(Counters::default());
    let failure = Arc::new(Failure::default());
    let bar = progress.table(&spec.name, p.source.expected_items(), counters.clone());
    // Turns a signal into this table's failure, which stops every stage; ends with the table.
    let _signal_watch = {
        let (interrupted, failure) = (interrupted.clone(), failure.clone());
        AbortOnDrop(tokio::spawn(async move {
            while !failure.cancelled() {
                if interrupted.load(Ordering::SeqCst) {
                    failure.set(Error::Interrupted);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }))
    };
    let (stop_sampler, sampler) = spawn_sampler(
        counters.clone(),
        tuning.cpu_threads.max(1),
        tuning.connections.max(1) * 2,
    );

    // Writers first, so the pipeline has somewhere to go.
    let connections = tuning.connections.max(1);
    let (chunk_tx, chunk_rx) = mpsc::channel::<Chunk>(connections * 2);
    let chunk_rx = Arc::new(tokio::sync::Mutex::new(chunk_rx));
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let url = config.target.url.clone();
        let schema = schema.clone();
        let spec = spec.clone();
        let rx = chunk_rx.clone();
        let counters = counters.clone();
        let failure = failure.clone();
        let write_bytes = tuning.copy_write_bytes;
        let upsert = opts.mode == Mode::Upsert;
        writers.spawn(async move {
            let r = write_chunks(
                &url,
                &schema,
                &spec,
                write_bytes,
                upsert,
                rx,
                &counters,
                &failure,
            )
            .await;
            if let Err(e) = &r {
                failure.set(clone_error(e));
            }
            r
        });
    }

    // Only the writers hold the receiver: when they stop (a failure, a signal), a job
    // blocked on a full chunk queue gets an error instead of waiting forever.
    drop(chunk_rx);

    // Readers and the CPU stage run on their own threads.
    let threads = spawn_cpu_side(
        p.source.clone(),
        p.plan.clone(),
        tuning,
        pool.clone(),
        chunk_tx,
        rejects.clone(),
        opts.max_rejects,
        counters.clone(),
        failure.clone(),
        spec.name.clone(),
    );

    let mut clients = Vec::with_capacity(connections);
    while let Some(joined) = writers.join_next().await {
        match joined {
            Ok(Ok(Some(client))) => clients.push(client),
            Ok(Ok(None)) => {}
            Ok(Err(_)) => {}
            Err(e) => failure.set(Error::CpuPool(format!("a COPY writer task failed: {e}"))),
        }
    }
    for t in threads {
        let joined = tokio::task::spawn_blocking(move || t.join()).await;
        if !matches!(joined, Ok(Ok(()))) {
            failure.set(Error::CpuPool("a reader thread panicked".into()));
        }
    }
    if let Ok(mut w) = rejects.lock() {
        if let Err(e) = w.flush() {
            failure.set(e);
        }
    }
    bar.finish();
    let _ = stop_sampler.send(());
    let (page_fill, chunk_fill, timeline) = sampler.await.unwrap_or_default();

    if let Some(e) = failure.take() {
        drop(clients); // closing the connections rolls their transactions back
        if prep.created {
            postgres::drop_created(control, &schema, &spec.name).await;
        }
        return Err(e);
    }
    let rows_written = counters.rows_written.load(Ordering::Relaxed);
    let rejected = counters.rejected.load(Ordering::Relaxed);
    let items = counters.items.load(Ordering::Relaxed);
    if rows_written + rejected != items {
        return Err(Error::Postgres {
            table: spec.name.clone(),
            action: "account for every item".into(),
            reason: format!("{items} items read, but {rows_written} written and {rejected} rejected; nothing committed"),
        });
    }
    for c in &clients {
        c.batch_execute("COMMIT")
            .await
            .map_err(|e| Error::pg(&spec.name, "commit", &e))?;
    }
    if prep.keys_after {
        let keyed = Instant::now();
        if let Err(e) = postgres::add_keys(control, &schema, &spec).await {
            postgres::drop_created(control, &schema, &spec.name).await;
            return Err(e);
        }
        tracing::info!(
            seconds = keyed.elapsed().as_secs_f64(),
            "Primary key built."
        );
    }
    record_rejects(control, &schema, &spec.name, opts, rejected).await?;
    let indexed = Instant::now();
    let indexes = postgres::build_indexes(control, &schema, &spec).await?;
    if !indexes.is_empty() {
        tracing::info!(
            seconds = indexed.elapsed().as_secs_f64(),
            indexes = ?indexes,
            "Indexes built."
        );
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(TableReport {
        table: spec.name.clone(),
        schema,
        source: p.source.location(),
        files: p.source.splits(),
        expected: p.source.expected_items(),
        rows_read: items,
        rows_written,
        rejected,
        bytes_read: counters.bytes_read.load(Ordering::Relaxed),
        bytes_uncompressed: counters.bytes_uncompressed.load(Ordering::Relaxed),
        bytes_copied: counters.bytes_copied.load(Ordering::Relaxed),
        seconds,
        rows_per_second: if seconds > 0.0 {
            rows_written as f64 / seconds
        } else {
            0.0
        },
        created: prep.created,
        upsert: (opts.mode == Mode::Upsert).then(|| UpsertCounts {
            inserted: counters.inserted.load(Ordering::Relaxed),
            updated: counters.updated.load(Ordering::Relaxed),
            unchanged: rows_written.saturating_sub(
                counters.inserted.load(Ordering::Relaxed)
                    + counters.updated.load(Ordering::Relaxed),
            ),
        }),
        stages: StageReport {
            read_busy_s: secs(&counters.read_ns) - secs(&counters.read_blocked_ns),
            read_threads: p.source.readers(tuning),
            decode_encode_busy_s: secs(&counters.cpu_ns) - secs(&counters.cpu_blocked_ns),
            cpu_threads: tuning.cpu_threads,
            write_busy_s: secs(&counters.write_ns),
            connections: tuning.connections,
            page_queue_fill: page_fill,
            chunk_queue_fill: chunk_fill,
            timeline,
        },
        source_retries: p.source.retries(),
        scan: match &p.source {
            SourcePlan::Scan(s) => Some(s.report()),
            SourcePlan::Export(_) => None,
        },
        indexes,
        foreign_keys: Vec::new(),
    })
}

fn nanos(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Mean page-queue fill, mean chunk-queue fill, and the (seconds, rows) timeline.
type Sampled = (f64, f64, Vec<(f64, u64)>);

/// Samples queue fill and rows written until stopped.
fn spawn_sampler(
    counters: Arc<Counters>,
    page_cap: usize,
    chunk_cap: usize,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Sampled>,
) {
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let started = Instant::now();
        let (mut pages, mut chunks, mut n) = (0.0, 0.0, 0u64);
        let mut timeline = vec![(0.0, 0)];
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                _ = tick.tick() => {}
            }
            n += 1;
            pages += counters.pages_queued.load(Ordering::Relaxed) as f64 / page_cap.max(1) as f64;
            chunks +=
                counters.chunks_queued.load(Ordering::Relaxed) as f64 / chunk_cap.max(1) as f64;
            if n % 3 == 0 {
                timeline.push((
                    started.elapsed().as_secs_f64(),
                    counters.rows_written.load(Ordering::Relaxed),
                ));
            }
        }
        timeline.push((
            started.elapsed().as_secs_f64(),
            counters.rows_written.load(Ordering::Relaxed),
        ));
        let n = n.max(1) as f64;
        ((pages / n).min(1.0), (chunks / n).min(1.0), timeline)
    });
    (stop, task)
}

/// Errors are not `Clone`; the failure slot keeps a description of a writer's error.
fn clone_error(e: &Error) -> Error {
    match e {
        Error::Postgres {
            table,
            action,
            reason,
        } => Error::Postgres {
            table: table.clone(),
            action: action.clone(),
            reason: reason.clone(),
        },
        Error::Connect { target, reason } => Error::Connect {
            target: target.clone(),
            reason: reason.clone(),
        },
        other => Error::CpuPool(other.to_string()),
    }
}

/// One writer: takes chunks until the queue closes, streaming them into one COPY inside
/// one transaction, which stays open (the caller commits every writer together).
#[allow(clippy::too_many_arguments)]
async fn write_chunks(
    url: &str,
    schema: &str,
    spec: &TableSpec,
    write_bytes: usize,
    upsert: bool,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Chunk>>>,
    counters: &Counters,
    failure: &Failure,
) -> Result<Option<Client>> {
    let client = postgres::connect(url).await?;
    client
        .batch_execute("BEGIN")
        .await
        .map_err(|e| Error::pg(&spec.name, "begin", &e))?;
    if upsert {
        postgres::create_upsert_stage(&client, schema, spec).await?;
    }
    let mut stream: Option<CopyStream> = None;
    loop {
        if failure.cancelled() {
            return Ok(None);
        }
        let next = { rx.lock().await.recv().await };
        let Some(chunk) = next else { break };
        counters.chunks_queued.fetch_sub(1, Ordering::Relaxed);
        if stream.is_none() {
            stream = Some(CopyStream::start(&client, schema, spec, write_bytes, upsert).await?);
        }
        if let Some(s) = stream.as_mut() {
            let n = chunk.bytes.len() as u64;
            let t0 = Instant::now();
            s.write(chunk.bytes, chunk.rows).await?;
            counters.write_ns.fetch_add(nanos(t0), Ordering::Relaxed);
            counters.bytes_copied.fetch_add(n, Ordering::Relaxed);
            counters
                .rows_written
                .fetch_add(chunk.rows, Ordering::Relaxed);
        }
    }
    if let Some(s) = stream {
        s.finish().await?;
        if upsert {
            let (inserted, updated) = postgres::merge_upsert_stage(&client, schema, spec).await?;
            counters.inserted.fetch_add(inserted, Ordering::Relaxed);
            counters.updated.fetch_add(updated, Ordering::Relaxed);
        }
    }
    Ok(Some(client))
}

/// Starts the reader threads and the dispatcher that feeds the rayon pool.
#[allow(clippy::too_many_arguments)]
fn spawn_cpu_side(
    source: SourcePlan,
    plan: Arc<TablePlan>,
    tuning: &crate::config::Tuning,
    pool: Arc<rayon::ThreadPool>,
    chunk_tx: mpsc::Sender<Chunk>,
    rejects: Arc<Mutex<RejectWriter>>,
    max_rejects: Option<u64>,
    counters: Arc<Counters>,
    failure: Arc<Failure>,
    table: String,
) -> Vec<std::thread::JoinHandle<()>> {
    let in_flight = tuning.cpu_threads + 2;
    let (page_tx, page_rx) = crossbeam_channel::bounded::<Page>(tuning.cpu_threads.max(1));
    let splits = source.splits();
    let next_file = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    let readers = source.readers(tuning);
    for i in 0..readers {
        let source = source.clone();
        let next_file = next_file.clone();
        let page_tx = page_tx.clone();
        let counters = counters.clone();
        let fail = failure.clone();
        let page_bytes = tuning.page_bytes;
        let page_lines = tuning.batch_rows;
        let spawned = std::thread::Builder::new()
            .name(format!("ddb2pg-read-{i}"))
            .spawn(move || loop {
                let idx = next_file.fetch_add(1, Ordering::SeqCst);
                if idx >= splits || fail.cancelled() {
                    break;
                }
                let span = tracing::debug_span!("split", name = %source.split_name(idx));
                let _g = span.enter();
                let t0 = Instant::now();
                let res = source.read_split(
                    idx,
                    page_bytes,
                    page_lines,
                    &counters.bytes_read,
                    &fail.cancel,
                    |page| {
                        let w = Instant::now();
                        // Counted before the send, so the receiver never sees it below zero.
                        counters.pages_queued.fetch_add(1, Ordering::Relaxed);
                        let ok = page_tx.send(page).is_ok();
                        if !ok {
                            counters.pages_queued.fetch_sub(1, Ordering::Relaxed);
                        }
                        counters
                            .read_blocked_ns
                            .fetch_add(nanos(w), Ordering::Relaxed);
                        ok
                    },
                );
                counters.read_ns.fetch_add(nanos(t0), Ordering::Relaxed);
                match res {
                    Ok(stats) => {
                        counters
                            .bytes_uncompressed
                            .fetch_add(stats.uncompressed, Ordering::Relaxed);
                        tracing::debug!(lines = stats.lines, "Split read.");
                    }
                    Err(e) => {
                        fail.set(e);
                        break;
                    }
                }
            });
        match spawned {
            Ok(h) => handles.push(h),
            Err(e) => failure.set(Error::Io {
                what: "start a reader thread".into(),
                source: e,
            }),
        }
    }
    drop(page_tx);

    let types: Arc<Vec<ColumnType>> = Arc::new(plan.types().collect());
    let dispatch_failure = failure.clone();
    let dispatcher = std::thread::Builder::new()
        .name("ddb2pg-dispatch".into())
        .spawn(move || {
            let (token_tx, token_rx) = crossbeam_channel::bounded::<()>(in_flight);
            for page in page_rx {
                counters.pages_queued.fetch_sub(1, Ordering::Relaxed);
                if failure.cancelled() {
                    break;
                }
                if token_tx.send(()).is_err() {
                    break;
                }
                let plan = plan.clone();
                let types = types.clone();
                let chunk_tx = chunk_tx.clone();
                let rejects = rejects.clone();
                let counters = counters.clone();
                let failure = failure.clone();
                let token_rx = token_rx.clone();
                let table = table.clone();
                pool.spawn(move || {
                    let t0 = Instant::now();
                    let job = AssertUnwindSafe(|| process_page(&plan, &types, page));
                    let result = catch_unwind(job);
                    counters.cpu_ns.fetch_add(nanos(t0), Ordering::Relaxed);
                    match result {
                        Ok(Ok((chunk, split, page_rejects, items))) => {
                            counters.items.fetch_add(items, Ordering::Relaxed);
                            if !page_rejects.is_empty() {
                                record_page_rejects(
                                    &rejects,
                                    &table,
                                    &split,
                                    &page_rejects,
                                    max_rejects,
                                    &counters,
                                    &failure,
                                );
                            }
                            if chunk.rows > 0 && !failure.cancelled() {
                                let w = Instant::now();
                                // An error means the writers have gone: a failure is already recorded.
                                counters.chunks_queued.fetch_add(1, Ordering::Relaxed);
                                if chunk_tx.blocking_send(chunk).is_err() {
                                    counters.chunks_queued.fetch_sub(1, Ordering::Relaxed);
                                }
                                counters
                                    .cpu_blocked_ns
                                    .fetch_add(nanos(w), Ordering::Relaxed);
                            }
                        }
                        Ok(Err(e)) => failure.set(e),
                        Err(panic) => {
                            let msg = panic
                                .downcast_ref::<String>()
                                .cloned()
                                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
                                .unwrap_or_else(|| "unknown panic".into());
                            failure.set(Error::CpuPool(format!("decode/encode panicked: {msg}")));
                        }
                    }
                    let _ = token_rx.recv();
                });
            }
            // Wait for the jobs in flight: each returns its token.
            for _ in 0..in_flight {
                let _ = token_tx.send(());
            }
        });
    match dispatcher {
        Ok(h) => handles.push(h),
        // Without a dispatcher nothing reaches the writers: fail, never commit an empty load.
        Err(e) => dispatch_failure.set(Error::Io {
            what: "start the dispatcher thread".into(),
            source: e,
        }),
    }
    handles
}

type PageResult = (Chunk, String, Vec<Reject>, u64);

/// Decode + encode of one page: the rayon job.
fn process_page(plan: &TablePlan, types: &[ColumnType], page: Page) -> Result<PageResult> {
    let split = page.origin.to_string();
    let decoded =
        decode_lines(plan, &page.data, page.first_line).map_err(|reason| Error::DataFile {
            key: split.clone(),
            reason: format!("lines from {}: {reason}", page.first_line),
        })?;
    drop(page);
    let mut out = Vec::new();
    encode_batch(&decoded.batch, types, &mut out).map_err(|e| Error::CpuPool(e.to_string()))?;
    let chunk = Chunk {
        rows: decoded.batch.num_rows() as u64,
        bytes: Bytes::from(out),
    };
    Ok((chunk, split, decoded.rejects, decoded.items))
}

fn record_page_rejects(
    rejects: &Mutex<RejectWriter>,
    table: &str,
    split: &str,
    page_rejects: &[Reject],
    max_rejects: Option<u64>,
    counters: &Counters,
    failure: &Failure,
) {
    let Ok(mut w) = rejects.lock() else {
        failure.set(Error::CpuPool("the rejects writer is poisoned".into()));
        return;
    };
    for r in page_rejects {
        if let Err(e) = w.write(table, split, r) {
            failure.set(e);
            return;
        }
        tracing::debug!(split, line = r.line, reason = %r.reason, "Item rejected.");
    }
    let total = counters
        .rejected
        .fetch_add(page_rejects.len() as u64, Ordering::Relaxed)
        + page_rejects.len() as u64;
    if let Some(limit) = max_rejects {
        if total > limit {
            failure.set(Error::TooManyRejects {
                table: table.to_string(),
                count: total,
                limit,
            });
        }
    }
}

/// Records this table's rejects in the target (`ddb2pg.rejects`), so `verify` can account
/// for them without the file: read back from the rejects file, streamed, this table only.
async fn record_rejects(
    control: &Client,
    schema: &str,
    table: &str,
    opts: &LoadOptions,
    count: u64,
) -> Result<()> {
    let fail = |e: &tokio_postgres::Error| Error::pg(table, "record rejects in ddb2pg.rejects", e);
    control
        .batch_execute(
            "CREATE SCHEMA IF NOT EXISTS ddb2pg; \
             CREATE TABLE IF NOT EXISTS ddb2pg.rejects ( \
               target_schema text NOT NULL, target_table text NOT NULL, split text, position bigint, \
               key jsonb, attribute text, reason text NOT NULL, recorded_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .map_err(|e| fail(&e))?;
    control.batch_execute("BEGIN").await.map_err(|e| fail(&e))?;
    if opts.mode != Mode::Append {
        control
            .execute(
                "DELETE FROM ddb2pg.rejects WHERE target_schema = $1 AND target_table = $2",
                &[&schema, &table],
            )
            .await
            .map_err(|e| fail(&e))?;
    }
    if count > 0 {
        let insert = control
            .prepare(
                "INSERT INTO ddb2pg.rejects (target_schema, target_table, split, position, key, attribute, reason) \
                 SELECT $1, $2, r->>'split', (r->>'position')::bigint, r->'key', r->>'attribute', r->>'reason' \
                 FROM jsonb_array_elements($3::text::jsonb) AS r",
            )
            .await
            .map_err(|e| fail(&e))?;
        let mut records = TableRejects::open(&opts.rejects_path, table)?;
        loop {
            let batch = records.next_batch(500)?;
            if batch.is_empty() {
                break;
            }
            let arr = format!("[{}]", batch.join(","));
            control
                .execute(&insert, &[&schema, &table, &arr])
                .await
                .map_err(|e| fail(&e))?;
        }
    }
    control
        .batch_execute("COMMIT")
        .await
        .map_err(|e| fail(&e))?;
    Ok(())
}

/// Streams the rejects file's records for one table, without their `item` (which stays
/// in the file), in batches.
struct TableRejects {
    path: PathBuf,
    table: String,
    lines: std::io::Lines<std::io::BufReader<std::fs::File>>,
}

impl TableRejects {
    fn open(path: &Path, table: &str) -> Result<TableRejects> {
        use std::io::BufRead;
        let f = std::fs::File::open(path).map_err(|e| Error::Rejects {
            path: path.to_path_buf(),
            source: e,
        })?;
        Ok(TableRejects {
            path: path.to_path_buf(),
            table: table.to_string(),
            lines: std::io::BufReader::new(f).lines(),
        })
    }

    fn next_batch(&mut self, max: usize) -> Result<Vec<String>> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some(line) = self.lines.next() else { break };
            let line = line.map_err(|e| Error::Rejects {
                path: self.path.clone(),
                source: e,
            })?;
            let Ok(mut v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if v.get("table").and_then(|t| t.as_str()) != Some(self.table.as_str()) {
                continue;
            }
            if let Some(o) = v.as_object_mut() {
                o.remove("item");
            }
            out.push(v.to_string());
        }
        Ok(out)
    }
}

/// Peak resident set size of this process (Linux), for the report.
#[must_use]
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// CPU seconds (user + system) of a process, from `/proc/<pid>/stat` (Linux): its own,
/// plus, with `children`, those of its reaped children.
#[must_use]
pub fn process_cpu_seconds_with(pid: &str, children: bool) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
    // utime, stime, cutime, cstime are fields 14..17 of the line: 11..14 here.
    let mut ticks = num(11)? + num(12)?;
    if children {
        ticks += num(13)? + num(14)?;
    }
    Some(ticks / 100.0)
}

/// CPU seconds of a process itself.
#[must_use]
pub fn process_cpu_seconds(pid: &str) -> Option<f64> {
    process_cpu_seconds_with(pid, false)
}

/// How often the log-line progress reports.
pub const LOG_EVERY: Duration = Duration::from_secs(10);
