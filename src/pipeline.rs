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
use std::path::PathBuf;
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
use crate::source::{split_page, Page, SourcePlan};
use crate::state;

/// Options of one `load`.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub mode: Mode,
    /// Target schema (`--schema`, else `target.schema`).
    pub schema: String,
    pub tables: Vec<String>,
    pub rejects_path: PathBuf,
    pub max_rejects: Option<u64>,
    /// Start a new run even if an unfinished one of the same load exists (or a finished one).
    pub fresh: bool,
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
    /// Rows committed by this process.
    pub rows_written: u64,
    /// Rows already committed when this process took the table up (an earlier attempt
    /// of the run, or other workers).
    #[serde(default)]
    pub rows_before: u64,
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
    /// Chunks retried on a new PostgreSQL connection.
    #[serde(default)]
    pub pg_retries: u64,
    /// Splits this process claimed and read.
    #[serde(default)]
    pub splits_loaded: usize,
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
    /// The run in `ddb2pg.runs` this load belongs to.
    #[serde(default)]
    pub run_id: Option<i64>,
    /// An unfinished run was taken up again (or joined, with several workers).
    #[serde(default)]
    pub resumed: bool,
    /// The same load had completed (at this time): nothing was done.
    #[serde(default)]
    pub already_done: Option<String>,
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

/// How the load found its run.
struct RunPlan {
    run: state::Run,
    /// An unfinished run of the same load was found and goes on.
    resumed: bool,
}

/// Finds the run this load belongs to, or plans a new one (tables prepared per mode, splits
/// recorded), holding the plan lock so workers starting together share one run.
async fn plan_run(
    config: &Config,
    opts: &LoadOptions,
    c: &Client,
    prepared: &mut [Prepared],
) -> Result<RunPlan> {
    state::ensure(c).await?;
    let fp = state::fingerprint(
        &opts.schema,
        opts.mode,
        &prepared
            .iter()
            .map(|p| (&p.spec, &p.source))
            .collect::<Vec<_>>(),
    );
    if let Some(run) = state::latest_run(c, &opts.schema, &fp).await? {
        let tables = state::run_tables(c, run.id).await?;
        let intact = state::tables_intact(c, &opts.schema, &tables).await?;
        if intact && !opts.fresh {
            let resumed = run.state != "done";
            if resumed {
                match_splits(prepared, &tables, &config.tuning).await?;
            }
            return Ok(RunPlan { run, resumed });
        }
        if !intact {
            tracing::warn!(
                run = run.id,
                "The tables of the last run of this load were dropped or recreated since: starting a new run."
            );
        }
        if run.state == "running" {
            // Tables the unfinished run created hold only its partial rows: they go.
            for t in tables.iter().filter(|t| t.created) {
                if state::table_oid(c, &opts.schema, &t.name).await? == t.table_oid {
                    postgres::drop_created(c, &opts.schema, &t.name).await;
                }
            }
        }
        if run.state != "abandoned" && run.state != "done" {
            state::abandon(c, run.id).await?;
        }
    }
    c.batch_execute("BEGIN")
        .await
        .map_err(|e| Error::pg("ddb2pg state", "begin", &e))?;
    let made = new_run(config, opts, c, prepared, &fp).await;
    let end = if made.is_ok() { "COMMIT" } else { "ROLLBACK" };
    let ended = c.batch_execute(end).await;
    let id = made?;
    ended.map_err(|e| Error::pg("ddb2pg state", "commit the new run", &e))?;
    let run = state::latest_run(c, &opts.schema, &fp)
        .await?
        .filter(|r| r.id == id)
        .ok_or_else(|| Error::Source {
            source_name: "ddb2pg state".into(),
            reason: format!("run {id} is not there after it was recorded"),
        })?;
    Ok(RunPlan {
        run,
        resumed: false,
    })
}

/// Records a new run and prepares its tables, inside the caller's transaction: a replace
/// takes declared foreign keys off and empties its tables, a create makes them.
async fn new_run(
    config: &Config,
    opts: &LoadOptions,
    c: &Client,
    prepared: &[Prepared],
    fp: &str,
) -> Result<i64> {
    let names: Vec<String> = prepared.iter().map(|p| p.spec.name.clone()).collect();
    let id = state::create_run(c, fp, &opts.schema, opts.mode, &names).await?;
    if opts.mode == Mode::Replace {
        let dropped =
            postgres::drop_declared_foreign_keys(c, &opts.schema, &names, &config.tables).await?;
        let outside: Vec<String> = dropped.into_iter().filter(|n| !names.contains(n)).collect();
        state::set_fk_tables(c, id, &outside).await?;
    }
    for (i, p) in prepared.iter().enumerate() {
        // An unfinished run of another load into this table: a create or a replace makes its
        // checkpoints meaningless, so it is abandoned; a table it created holds only its
        // partial rows, and a create starts it again.
        if matches!(opts.mode, Mode::Create | Mode::Replace) {
            for (old, created_it) in
                state::unfinished_runs_of(c, &opts.schema, &p.spec.name, id).await?
            {
                tracing::warn!(
                    table = %p.spec.name,
                    run = old,
                    "An unfinished run of another load into this table is abandoned{}.",
                    if created_it && opts.mode == Mode::Create { "; the partial table it created is dropped" } else { "" }
                );
                if created_it && opts.mode == Mode::Create {
                    c.batch_execute(&format!(
                        "DROP TABLE {}",
                        postgres::qualified(&opts.schema, &p.spec.name)
                    ))
                    .await
                    .map_err(|e| {
                        Error::pg(
                            &p.spec.name,
                            "drop the partial table of an abandoned run",
                            &e,
                        )
                    })?;
                }
                state::abandon(c, old).await?;
            }
        }
        let prep = postgres::prepare_table(c, &opts.schema, &p.spec, opts.mode).await?;
        let oid = state::table_oid(c, &opts.schema, &p.spec.name).await?;
        let split_names: Vec<String> = (0..p.source.splits())
            .map(|s| p.source.split_name(s))
            .collect();
        state::add_table(
            c,
            id,
            i32::try_from(i).unwrap_or(i32::MAX),
            &p.spec.name,
            oid,
            prep.created,
            prep.keys_after,
            p.source.expected_items(),
            &split_names,
        )
        .await?;
        if opts.mode != Mode::Append {
            state::clear_rejects(c, &opts.schema, &p.spec.name).await?;
        }
    }
    Ok(id)
}

/// A resumed scan keeps the run's number of segments (an automatic count could differ now).
async fn match_splits(
    prepared: &mut [Prepared],
    tables: &[state::RunTable],
    tuning: &crate::config::Tuning,
) -> Result<()> {
    for p in prepared.iter_mut() {
        let Some(t) = tables.iter().find(|t| t.name == p.spec.name) else {
            continue;
        };
        let want = usize::try_from(t.splits).unwrap_or(0);
        if p.source.splits() == want {
            continue;
        }
        match &mut p.spec.source {
            crate::config::Source::DynamoDb { segments, .. } => {
                *segments = u32::try_from(want).ok();
                p.source = SourcePlan::open(&p.spec, tuning).await?;
            }
            crate::config::Source::Export { .. } => {
                return Err(Error::Source {
                    source_name: p.source.location(),
                    reason: format!(
                        "the run has {want} splits, the export lists {} files now",
                        p.source.splits()
                    ),
                })
            }
        }
    }
    Ok(())
}

/// Runs `load`: plans or resumes the run, then loads its tables' splits (claimed, so
/// several workers share them), finishes each table (keys, indexes) once all its splits
/// are in, and the run (foreign keys) once all tables are.
///
/// # Errors
/// The first failure; every chunk committed before it stays, and re-running resumes.
pub async fn load(config: &Config, opts: &LoadOptions) -> Result<LoadReport> {
    let started = Instant::now();
    let mut prepared = open_sources(config, &opts.tables).await?;
    let control = Arc::new(postgres::connect(&config.target.url).await?);
    state::lock(&control).await?;
    let planned = plan_run(config, opts, &control, &mut prepared).await;
    let unlocked = state::unlock(&control).await;
    let plan = planned?;
    unlocked?;
    let mut report = LoadReport {
        mode: Some(opts.mode),
        schema: opts.schema.clone(),
        rejects_file: Some(opts.rejects_path.display().to_string()),
        run_id: Some(plan.run.id),
        resumed: plan.resumed,
        ..LoadReport::default()
    };
    if plan.run.state == "done" {
        report.already_done = plan.run.finished_at.clone();
        report.seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    }
    if plan.resumed {
        tracing::info!(
            run = plan.run.id,
            started = %plan.run.started_at,
            "Resuming an unfinished run of this load: committed chunks are kept."
        );
    }
    let run_id = plan.run.id;
    match run_tables_to_end(config, opts, &control, &prepared, &plan.run, &mut report).await {
        Ok(()) => {}
        Err(e) => {
            return Err(Error::Stopped {
                run: run_id,
                inner: Box::new(e),
            })
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    report.peak_rss_bytes = peak_rss_bytes();
    report.cpu_seconds = process_cpu_seconds("self");
    Ok(report)
}

/// The worker's loop over the run's tables until the run is done.
async fn run_tables_to_end(
    config: &Config,
    opts: &LoadOptions,
    control: &Arc<Client>,
    prepared: &[Prepared],
    run: &state::Run,
    report: &mut LoadReport,
) -> Result<()> {
    let lease = Duration::from_secs(config.tuning.lease_seconds.max(1));
    let worker = Arc::new(state::Worker::new(run.id, lease));
    let _heartbeat = {
        let (worker, control) = (worker.clone(), control.clone());
        AbortOnDrop(tokio::spawn(async move {
            loop {
                tokio::time::sleep(worker.lease / 4).await;
                if let Err(e) = worker.renew(&control).await {
                    tracing::warn!(error = %e, "Could not renew the split lease.");
                }
            }
        }))
    };
    let pool = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(config.tuning.cpu_threads)
            .thread_name(|i| format!("ddb2pg-cpu-{i}"))
            .build()
            .map_err(|e| Error::CpuPool(e.to_string()))?,
    );
    let rejects = Arc::new(Mutex::new(RejectWriter::open(
        &opts.rejects_path,
        report.resumed,
    )?));
    let interrupted = watch_signals();
    let progress = Progress::new(opts.bars);
    let mut waited = Instant::now() - Duration::from_secs(60);
    loop {
        let tables = state::run_tables(control, run.id).await?;
        let mut running_elsewhere = 0;
        for t in &tables {
            if t.state == "loaded" {
                continue;
            }
            let Some(p) = prepared.iter().find(|p| p.spec.name == t.name) else {
                continue;
            };
            let counts = state::split_counts(control, run.id, &t.name).await?;
            if counts.pending + counts.stale > 0 {
                if interrupted.load(Ordering::SeqCst) {
                    return Err(Error::Interrupted);
                }
                let ctx = TableCtx {
                    config,
                    opts,
                    control,
                    pool: &pool,
                    rejects: &rejects,
                    progress: &progress,
                    interrupted: &interrupted,
                    worker: &worker,
                    run_table: t,
                    rows_before: u64::try_from(counts.rows).unwrap_or(0),
                    rejected_before: u64::try_from(counts.rejected).unwrap_or(0),
                };
                let tr = load_table(&ctx, p).await?;
                merge_report(report, tr);
            }
            let counts = state::split_counts(control, run.id, &t.name).await?;
            if counts.done == i64::from(t.splits) {
                if let Some(indexes) = finish_table(control, &opts.schema, run.id, p, t).await? {
                    let tr = table_entry(report, p, t, &opts.schema, &counts);
                    tr.indexes = indexes;
                }
            } else {
                running_elsewhere += counts.running;
            }
        }
        let tables = state::run_tables(control, run.id).await?;
        if tables.iter().all(|t| t.state == "loaded") {
            finish_run(config, control, &opts.schema, run, prepared, report).await?;
            return Ok(());
        }
        if interrupted.load(Ordering::SeqCst) {
            return Err(Error::Interrupted);
        }
        if waited.elapsed() >= LOG_EVERY {
            tracing::info!(
                splits = running_elsewhere,
                "Waiting for other workers to finish their splits (claimed again if a worker goes away)."
            );
            waited = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Keys (when built after the data) and indexes of a table whose splits are all in, by
/// one worker; `None` when another worker finishes it or it is finished already.
async fn finish_table(
    c: &Client,
    schema: &str,
    run: i64,
    p: &Prepared,
    t: &state::RunTable,
) -> Result<Option<Vec<String>>> {
    let spec = &p.spec;
    c.batch_execute("BEGIN")
        .await
        .map_err(|e| Error::pg(&spec.name, "begin", &e))?;
    let done = async {
        match state::lock_table(c, run, &spec.name).await? {
            Some(s) if s == "loading" => {}
            _ => return Ok(None),
        }
        if t.keys_after {
            let keyed = Instant::now();
            postgres::add_keys(c, schema, spec).await?;
            tracing::info!(table = %spec.name, seconds = keyed.elapsed().as_secs_f64(), "Primary key built.");
        }
        let indexed = Instant::now();
        let indexes = postgres::build_indexes(c, schema, spec).await?;
        if !indexes.is_empty() {
            tracing::info!(table = %spec.name, seconds = indexed.elapsed().as_secs_f64(), indexes = ?indexes, "Indexes built.");
        }
        let oid = state::table_oid(c, schema, &spec.name).await?;
        state::set_table_state(c, run, &spec.name, "loaded", oid).await?;
        Ok(Some(indexes))
    }
    .await;
    let end = match &done {
        Ok(Some(_)) => "COMMIT",
        _ => "ROLLBACK",
    };
    let ended = c.batch_execute(end).await;
    let done = done?;
    ended.map_err(|e| Error::pg(&spec.name, "commit its keys and indexes", &e))?;
    Ok(done)
}

/// Foreign keys once every table of the run is in (the order tables load in never
/// matters), then the run is done — by one worker.
async fn finish_run(
    config: &Config,
    c: &Client,
    schema: &str,
    run: &state::Run,
    prepared: &[Prepared],
    report: &mut LoadReport,
) -> Result<()> {
    c.batch_execute("BEGIN")
        .await
        .map_err(|e| Error::pg("ddb2pg state", "begin", &e))?;
    let done = async {
        match state::lock_run(c, run.id).await? {
            Some(s) if s == "running" => {}
            _ => return Ok(false),
        }
        for name in &run.fk_tables {
            let Some(spec) = config.tables.iter().find(|t| &t.name == name) else {
                continue;
            };
            for fk in postgres::add_foreign_keys(c, schema, spec).await? {
                if fk.orphans > 0 {
                    tracing::warn!(table = %spec.name, column = %fk.column, orphans = fk.orphans, sample = ?fk.sample, "Rows of a table not in this run reference missing keys; the foreign key stays NOT VALID.");
                }
            }
        }
        for p in prepared {
            let fks = postgres::add_foreign_keys(c, schema, &p.spec).await?;
            for fk in &fks {
                if fk.orphans > 0 {
                    tracing::warn!(
                        table = %p.spec.name,
                        column = %fk.column,
                        references = %fk.references,
                        orphans = fk.orphans,
                        sample = ?fk.sample,
                        "Rows reference missing keys; the foreign key stays NOT VALID."
                    );
                }
            }
            if let Some(t) = report.tables.iter_mut().find(|t| t.table == p.spec.name) {
                t.foreign_keys = fks;
            } else if !fks.is_empty() {
                let mut t = blank_report(p, schema);
                t.foreign_keys = fks;
                report.tables.push(t);
            }
        }
        state::finish_run(c, run.id).await?;
        Ok(true)
    }
    .await;
    let end = if matches!(done, Ok(true)) {
        "COMMIT"
    } else {
        "ROLLBACK"
    };
    let ended = c.batch_execute(end).await;
    done?;
    ended.map_err(|e| Error::pg("ddb2pg state", "commit the run's end", &e))?;
    Ok(())
}

/// A report row for a table this worker did not read (all its splits done already).
fn blank_report(p: &Prepared, schema: &str) -> TableReport {
    TableReport {
        table: p.spec.name.clone(),
        schema: schema.to_string(),
        source: p.source.location(),
        files: p.source.splits(),
        expected: p.source.expected_items(),
        ..TableReport::default()
    }
}

/// The report row of a table, made when missing.
fn table_entry<'a>(
    report: &'a mut LoadReport,
    p: &Prepared,
    t: &state::RunTable,
    schema: &str,
    counts: &state::SplitCounts,
) -> &'a mut TableReport {
    let i = match report.tables.iter().position(|r| r.table == p.spec.name) {
        Some(i) => i,
        None => {
            let mut r = blank_report(p, schema);
            r.created = t.created;
            r.rows_before = u64::try_from(counts.rows).unwrap_or(0);
            report.tables.push(r);
            report.tables.len() - 1
        }
    };
    &mut report.tables[i]
}

/// Adds a pass over a table to its report row (a worker may come back to a table to
/// take over a split another worker left).
fn merge_report(report: &mut LoadReport, t: TableReport) {
    match report.tables.iter_mut().find(|r| r.table == t.table) {
        None => report.tables.push(t),
        Some(r) => {
            r.rows_read += t.rows_read;
            r.rows_written += t.rows_written;
            r.rejected += t.rejected;
            r.bytes_read += t.bytes_read;
            r.bytes_uncompressed += t.bytes_uncompressed;
            r.bytes_copied += t.bytes_copied;
            r.seconds += t.seconds;
            r.rows_per_second = if r.seconds > 0.0 {
                r.rows_written as f64 / r.seconds
            } else {
                0.0
            };
            r.source_retries += t.source_retries;
            r.pg_retries += t.pg_retries;
            r.splits_loaded += t.splits_loaded;
        }
    }
}

/// Ctrl-C (SIGINT) or SIGTERM sets the flag; readers stop, each writer commits the chunk
/// it holds, and the load ends with a resume hint.
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
        tracing::warn!(
            "Interrupted: stopping; chunks in flight are committed, the rest is left for a re-run."
        );
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

/// Shared counters of one table's load.
#[derive(Default)]
pub struct Counters {
    pub items: AtomicU64,
    /// Rows sent to PostgreSQL (progress), and rows committed.
    pub rows_written: AtomicU64,
    pub rows_committed: AtomicU64,
    /// Chunks retried on a new connection.
    pub pg_retries: AtomicU64,
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
    /// Seconds the decode + encode jobs waited for room in the chunk queue.
    #[serde(default)]
    pub decode_encode_blocked_s: f64,
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
    bytes: Bytes,
    /// Where its rows came from, for the checkpoint.
    mark: state::PieceMark,
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

/// What one pass over a table needs.
struct TableCtx<'a> {
    config: &'a Config,
    opts: &'a LoadOptions,
    control: &'a Arc<Client>,
    pool: &'a Arc<rayon::ThreadPool>,
    rejects: &'a Arc<Mutex<RejectWriter>>,
    progress: &'a Progress,
    interrupted: &'a Arc<AtomicBool>,
    worker: &'a Arc<state::Worker>,
    run_table: &'a state::RunTable,
    /// Rows and rejects committed before this pass (earlier attempts, other workers).
    rows_before: u64,
    rejected_before: u64,
}

/// One worker's pass over a table: claims its splits one by one until none is left and
/// loads them, each chunk committed with its checkpoint.
async fn load_table(ctx: &TableCtx<'_>, p: &Prepared) -> Result<TableReport> {
    let started = Instant::now();
    let opts = ctx.opts;
    let schema = opts.schema.clone();
    let spec = p.spec.clone();
    let tuning = &ctx.config.tuning;
    let span = tracing::info_span!("table", table = %spec.name);
    let _guard = span.enter();
    tracing::info!(
        splits = p.source.splits(),
        items = p.source.expected_items(),
        committed_before = ctx.rows_before,
        mode = ?opts.mode,
        "Loading table."
    );
    let counters = Arc::new(Counters::default());
    counters
        .rows_written
        .store(ctx.rows_before, Ordering::Relaxed);
    let failure = Arc::new(Failure::default());
    let bar = ctx
        .progress
        .table(&spec.name, p.source.expected_items(), counters.clone());
    // Turns a signal into this table's stop: readers stop, writers commit what they hold.
    let _signal_watch = {
        let (interrupted, failure) = (ctx.interrupted.clone(), failure.clone());
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
    let splits = p.source.splits();
    let split_names: Arc<Vec<String>> =
        Arc::new((0..splits).map(|i| p.source.split_name(i)).collect());
    // Per split: pages not yet committed, plus one while its reader is on it. Whoever
    // takes it to zero reports the split done.
    let outstanding: Arc<Vec<AtomicU64>> =
        Arc::new((0..splits).map(|_| AtomicU64::new(0)).collect());
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<u32>();
    let marker = {
        let (worker, control, failure, table) = (
            ctx.worker.clone(),
            ctx.control.clone(),
            failure.clone(),
            spec.name.clone(),
        );
        tokio::spawn(async move {
            let mut n = 0usize;
            while let Some(split) = done_rx.recv().await {
                if let Err(e) = worker.split_done(&control, &table, split).await {
                    failure.set(e);
                }
                n += 1;
            }
            n
        })
    };

    // Writers first, so the pipeline has somewhere to go.
    let connections = tuning.connections.max(1);
    let (chunk_tx, chunk_rx) = mpsc::channel::<Chunk>(connections * 2);
    let chunk_rx = Arc::new(tokio::sync::Mutex::new(chunk_rx));
    let mut writers = tokio::task::JoinSet::new();
    for n in 0..connections {
        let w = WriterCtx {
            url: ctx.config.target.url.clone(),
            schema: schema.clone(),
            spec: spec.clone(),
            write_bytes: tuning.copy_write_bytes,
            chunk_bytes: tuning.chunk_bytes,
            upsert: opts.mode == Mode::Upsert,
            worker: ctx.worker.clone(),
            split_names: split_names.clone(),
            counters: counters.clone(),
            failure: failure.clone(),
            outstanding: outstanding.clone(),
            done_tx: done_tx.clone(),
            writer: n,
        };
        let rx = chunk_rx.clone();
        writers.spawn(async move {
            let r = write_chunks(&w, rx).await;
            if let Err(e) = &r {
                w.failure.set(clone_error(e));
            }
            r
        });
    }

    // Only the writers hold the receiver: when they stop (a failure, a signal), a job
    // blocked on a full chunk queue gets an error instead of waiting forever.
    drop(chunk_rx);

    // Readers and the CPU stage run on their own threads.
    let reading = Reading {
        source: p.source.clone(),
        plan: p.plan.clone(),
        pool: ctx.pool.clone(),
        rejects: ctx.rejects.clone(),
        max_rejects: opts
            .max_rejects
            .map(|m| m.saturating_sub(ctx.rejected_before)),
        counters: counters.clone(),
        failure: failure.clone(),
        table: spec.name.clone(),
        worker: ctx.worker.clone(),
        control: ctx.control.clone(),
        handle: tokio::runtime::Handle::current(),
        outstanding: outstanding.clone(),
        done_tx,
        claimed: Arc::new(AtomicUsize::new(0)),
    };
    let claimed = reading.claimed.clone();
    let threads = spawn_cpu_side(reading, tuning, chunk_tx);

    while let Some(joined) = writers.join_next().await {
        match joined {
            Ok(_) => {}
            Err(e) => failure.set(Error::CpuPool(format!("a COPY writer task failed: {e}"))),
        }
    }
    for t in threads {
        let joined = tokio::task::spawn_blocking(move || t.join()).await;
        if !matches!(joined, Ok(Ok(()))) {
            failure.set(Error::CpuPool("a reader thread panicked".into()));
        }
    }
    let marked = marker.await.unwrap_or(0);
    if let Ok(mut w) = ctx.rejects.lock() {
        if let Err(e) = w.flush() {
            failure.set(e);
        }
    }
    bar.finish();
    let _ = stop_sampler.send(());
    let (page_fill, chunk_fill, timeline) = sampler.await.unwrap_or_default();

    if let Some(e) = failure.take() {
        ctx.worker
            .release(ctx.control, &spec.name, &e.to_string())
            .await;
        return Err(e);
    }
    let rows_written = counters.rows_committed.load(Ordering::Relaxed);
    let rejected = counters.rejected.load(Ordering::Relaxed);
    let items = counters.items.load(Ordering::Relaxed);
    if rows_written + rejected != items {
        let e = Error::Postgres {
            table: spec.name.clone(),
            action: "account for every item".into(),
            reason: format!(
                "{items} items read, but {rows_written} written and {rejected} rejected"
            ),
        };
        ctx.worker
            .release(ctx.control, &spec.name, &e.to_string())
            .await;
        return Err(e);
    }
    let seconds = started.elapsed().as_secs_f64();
    tracing::debug!(
        claimed = claimed.load(Ordering::Relaxed),
        marked,
        "Pass over the table ended."
    );
    Ok(TableReport {
        table: spec.name.clone(),
        schema,
        source: p.source.location(),
        files: p.source.splits(),
        expected: p.source.expected_items(),
        rows_read: items,
        rows_written,
        rows_before: ctx.rows_before,
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
        created: ctx.run_table.created,
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
            // A job's time is taken before it queues its chunk: the wait is apart.
            decode_encode_busy_s: secs(&counters.cpu_ns),
            decode_encode_blocked_s: secs(&counters.cpu_blocked_ns),
            cpu_threads: tuning.cpu_threads,
            write_busy_s: secs(&counters.write_ns),
            connections: tuning.connections,
            page_queue_fill: page_fill,
            chunk_queue_fill: chunk_fill,
            timeline,
        },
        source_retries: p.source.retries(),
        pg_retries: counters.pg_retries.load(Ordering::Relaxed),
        splits_loaded: claimed.load(Ordering::Relaxed),
        scan: match &p.source {
            SourcePlan::Scan(s) => Some(s.report()),
            SourcePlan::Export(_) => None,
        },
        indexes: Vec::new(),
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

/// What a writer needs.
struct WriterCtx {
    url: String,
    schema: String,
    spec: TableSpec,
    write_bytes: usize,
    chunk_bytes: usize,
    upsert: bool,
    worker: Arc<state::Worker>,
    split_names: Arc<Vec<String>>,
    counters: Arc<Counters>,
    failure: Arc<Failure>,
    outstanding: Arc<Vec<AtomicU64>>,
    done_tx: mpsc::UnboundedSender<u32>,
    writer: usize,
}

/// Attempts at one chunk on a lost connection before the load fails.
const CHUNK_ATTEMPTS: u32 = 6;

/// One writer: takes pieces until the queue closes, in chunks of about `chunk_bytes`:
/// each chunk is one transaction — `COPY`, (for an upsert, the merge), its checkpoint —
/// retried on a new connection when the connection is lost. On a stop it commits the
/// chunk it holds and ends.
async fn write_chunks(
    w: &WriterCtx,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Chunk>>>,
) -> Result<()> {
    let mut client: Option<Client> = None;
    let mut seq = 0u64;
    loop {
        let next = { rx.lock().await.recv().await };
        let Some(first) = next else { break };
        w.counters.chunks_queued.fetch_sub(1, Ordering::Relaxed);
        w.counters
            .rows_written
            .fetch_add(first.mark.rows, Ordering::Relaxed);
        seq += 1;
        let chunk_id = format!("{}/{}/{seq}", w.worker.id, w.writer);
        let mut pieces = vec![first];
        let mut attempt = 0u32;
        let merged = loop {
            let result = match client.as_ref() {
                Some(c) => {
                    let more = (attempt == 0).then_some(&rx);
                    send_chunk(w, c, &mut pieces, more, &chunk_id).await
                }
                None => match open_writer(w).await {
                    Ok(c) => {
                        client = Some(c);
                        continue;
                    }
                    Err(e) => Err(e),
                },
            };
            match result {
                Ok(m) => break m,
                Err(e) if e.retryable() && attempt + 1 < CHUNK_ATTEMPTS => {
                    client = None; // dropping it ends the transaction on the server
                    attempt += 1;
                    w.counters.pg_retries.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(table = %w.spec.name, attempt, error = %e, "Chunk retried on a new connection.");
                    tokio::time::sleep(crate::aws::backoff(attempt)).await;
                    // A COMMIT whose answer was lost may have landed.
                    if let Ok(c) = open_writer(w).await {
                        if w.worker.chunk_committed(&c, &chunk_id).await? {
                            client = Some(c);
                            break (0, 0);
                        }
                        client = Some(c);
                    }
                }
                Err(e) => return Err(e),
            }
        };
        w.counters.inserted.fetch_add(merged.0, Ordering::Relaxed);
        w.counters.updated.fetch_add(merged.1, Ordering::Relaxed);
        for piece in &pieces {
            w.counters
                .rows_committed
                .fetch_add(piece.mark.rows, Ordering::Relaxed);
            w.counters
                .bytes_copied
                .fetch_add(piece.bytes.len() as u64, Ordering::Relaxed);
            let split = piece.mark.split;
            if let Some(o) = w.outstanding.get(split as usize) {
                if o.fetch_sub(1, Ordering::SeqCst) == 1 {
                    let _ = w.done_tx.send(split);
                }
            }
        }
    }
    Ok(())
}

/// A writer's connection (and, for an upsert, its staging table, emptied at each commit).
async fn open_writer(w: &WriterCtx) -> Result<Client> {
    let c = postgres::connect(&w.url).await?;
    if w.upsert {
        postgres::create_upsert_stage(&c, &w.schema, &w.spec).await?;
    }
    Ok(c)
}

/// One attempt at a chunk: `pieces` are sent again, then (on a first attempt, `more`)
/// further pieces are taken from the queue until the chunk is full, the queue closes or
/// the load stops; then the COPY ends, an upsert merges, the checkpoint goes in, COMMIT.
/// Returns (inserted, updated) of an upsert.
async fn send_chunk(
    w: &WriterCtx,
    c: &Client,
    pieces: &mut Vec<Chunk>,
    more: Option<&Arc<tokio::sync::Mutex<mpsc::Receiver<Chunk>>>>,
    chunk_id: &str,
) -> Result<(u64, u64)> {
    let t0 = Instant::now();
    let table = &w.spec.name;
    c.batch_execute("BEGIN")
        .await
        .map_err(|e| Error::pg(table, "begin", &e))?;
    let mut stream = CopyStream::start(c, &w.schema, &w.spec, w.write_bytes, w.upsert).await?;
    let mut bytes = 0usize;
    for piece in pieces.iter() {
        bytes += piece.bytes.len();
        stream.write(piece.bytes.clone(), piece.mark.rows).await?;
    }
    if let Some(rx) = more {
        while bytes < w.chunk_bytes && !w.failure.cancelled() {
            let next = { rx.lock().await.recv().await };
            let Some(piece) = next else { break };
            w.counters.chunks_queued.fetch_sub(1, Ordering::Relaxed);
            bytes += piece.bytes.len();
            w.counters
                .rows_written
                .fetch_add(piece.mark.rows, Ordering::Relaxed);
            let data = piece.bytes.clone();
            let rows = piece.mark.rows;
            pieces.push(piece);
            stream.write(data, rows).await?;
        }
    }
    stream.finish().await?;
    let merged = if w.upsert {
        postgres::merge_upsert_stage(c, &w.schema, &w.spec).await?
    } else {
        (0, 0)
    };
    let marks: Vec<&state::PieceMark> = pieces.iter().map(|p| &p.mark).collect();
    w.worker
        .checkpoint(c, &w.schema, table, chunk_id, &marks, &w.split_names)
        .await?;
    c.batch_execute("COMMIT")
        .await
        .map_err(|e| Error::pg(table, "commit a chunk", &e))?;
    w.counters.write_ns.fetch_add(nanos(t0), Ordering::Relaxed);
    Ok(merged)
}

/// What the reading side of a table's pass shares.
struct Reading {
    source: SourcePlan,
    plan: Arc<TablePlan>,
    pool: Arc<rayon::ThreadPool>,
    rejects: Arc<Mutex<RejectWriter>>,
    max_rejects: Option<u64>,
    counters: Arc<Counters>,
    failure: Arc<Failure>,
    table: String,
    worker: Arc<state::Worker>,
    control: Arc<Client>,
    handle: tokio::runtime::Handle,
    outstanding: Arc<Vec<AtomicU64>>,
    done_tx: mpsc::UnboundedSender<u32>,
    /// Splits this pass claimed.
    claimed: Arc<AtomicUsize>,
}

/// Starts the reader threads (each claims splits until none is left) and the dispatcher
/// that feeds the rayon pool.
fn spawn_cpu_side(
    r: Reading,
    tuning: &crate::config::Tuning,
    chunk_tx: mpsc::Sender<Chunk>,
) -> Vec<std::thread::JoinHandle<()>> {
    let r = Arc::new(r);
    let in_flight = tuning.cpu_threads + 2;
    let (page_tx, page_rx) = crossbeam_channel::bounded::<(u32, Page)>(tuning.cpu_threads.max(1));
    let mut handles = Vec::new();
    let readers = r.source.readers(tuning);
    for i in 0..readers {
        let reading = r.clone();
        let page_tx = page_tx.clone();
        let page_bytes = tuning.page_bytes;
        let page_lines = tuning.batch_rows;
        let spawned = std::thread::Builder::new()
            .name(format!("ddb2pg-read-{i}"))
            .spawn(move || read_splits(&reading, &page_tx, page_bytes, page_lines));
        match spawned {
            Ok(h) => handles.push(h),
            Err(e) => r.failure.set(Error::Io {
                what: "start a reader thread".into(),
                source: e,
            }),
        }
    }
    drop(page_tx);

    let types: Arc<Vec<ColumnType>> = Arc::new(r.plan.types().collect());
    let dispatch = r.clone();
    let dispatcher = std::thread::Builder::new()
        .name("ddb2pg-dispatch".into())
        .spawn(move || {
            let r = dispatch;
            let (token_tx, token_rx) = crossbeam_channel::bounded::<()>(in_flight);
            for (split, page) in page_rx {
                r.counters.pages_queued.fetch_sub(1, Ordering::Relaxed);
                if r.failure.cancelled() {
                    break;
                }
                if token_tx.send(()).is_err() {
                    break;
                }
                let r = r.clone();
                let types = types.clone();
                let chunk_tx = chunk_tx.clone();
                let token_rx = token_rx.clone();
                let pool = r.pool.clone();
                pool.spawn(move || {
                    let t0 = Instant::now();
                    let job = AssertUnwindSafe(|| process_page(&r.plan, &types, split, page));
                    let result = catch_unwind(job);
                    r.counters.cpu_ns.fetch_add(nanos(t0), Ordering::Relaxed);
                    match result {
                        Ok(Ok((chunk, split_name, items))) => {
                            r.counters.items.fetch_add(items, Ordering::Relaxed);
                            if !chunk.mark.rejects.is_empty() {
                                record_page_rejects(
                                    &r.rejects,
                                    &r.table,
                                    &split_name,
                                    &chunk.mark.rejects,
                                    r.max_rejects,
                                    &r.counters,
                                    &r.failure,
                                );
                            }
                            if !r.failure.cancelled() {
                                let w = Instant::now();
                                // An error means the writers have gone: a failure is already recorded.
                                r.counters.chunks_queued.fetch_add(1, Ordering::Relaxed);
                                if chunk_tx.blocking_send(chunk).is_err() {
                                    r.counters.chunks_queued.fetch_sub(1, Ordering::Relaxed);
                                }
                                r.counters
                                    .cpu_blocked_ns
                                    .fetch_add(nanos(w), Ordering::Relaxed);
                            }
                        }
                        Ok(Err(e)) => r.failure.set(e),
                        Err(panic) => {
                            let msg = panic
                                .downcast_ref::<String>()
                                .cloned()
                                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
                                .unwrap_or_else(|| "unknown panic".into());
                            r.failure
                                .set(Error::CpuPool(format!("decode/encode panicked: {msg}")));
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
        Err(e) => r.failure.set(Error::Io {
            what: "start the dispatcher thread".into(),
            source: e,
        }),
    }
    handles
}

/// A reader thread: claims a split, reads it (skipping lines already committed, a scan
/// from its saved position), hands its pages on, and claims the next, until none is left.
fn read_splits(
    r: &Reading,
    page_tx: &crossbeam_channel::Sender<(u32, Page)>,
    page_bytes: usize,
    page_lines: usize,
) {
    let fail = &r.failure;
    let counters = &r.counters;
    loop {
        if fail.cancelled() {
            return;
        }
        let claimed = match r.handle.block_on(r.worker.claim(&r.control, &r.table)) {
            Ok(Some(c)) => c,
            Ok(None) => return,
            Err(e) => {
                fail.set(e);
                return;
            }
        };
        let (idx, resume) = claimed;
        r.claimed.fetch_add(1, Ordering::Relaxed);
        let Some(outstanding) = r.outstanding.get(idx as usize) else {
            fail.set(Error::Source {
                source_name: format!("table {}", r.table),
                reason: format!("split {idx} is not in this source's plan"),
            });
            return;
        };
        // The reader's own hold on the split until it has read it to the end.
        outstanding.fetch_add(1, Ordering::SeqCst);
        let span = tracing::debug_span!("split", name = %r.source.split_name(idx as usize));
        let _g = span.enter();
        if !resume.is_empty() {
            tracing::debug!(done = ?resume.done, start = ?resume.start.as_ref().map(|s| s.0), "Split resumed.");
        }
        let t0 = Instant::now();
        let start = if matches!(r.source, SourcePlan::Scan(_)) {
            resume.start.as_ref()
        } else {
            None
        };
        let res = r.source.read_split(
            idx as usize,
            page_bytes,
            page_lines,
            &counters.bytes_read,
            &fail.cancel,
            start,
            |page| {
                let w = Instant::now();
                let mut ok = true;
                for page in split_page(page, &resume.done) {
                    // Counted before the send, so the receiver never sees it below zero.
                    counters.pages_queued.fetch_add(1, Ordering::Relaxed);
                    outstanding.fetch_add(1, Ordering::SeqCst);
                    if page_tx.send((idx, page)).is_err() {
                        counters.pages_queued.fetch_sub(1, Ordering::Relaxed);
                        ok = false;
                        break;
                    }
                }
                counters
                    .read_blocked_ns
                    .fetch_add(nanos(w), Ordering::Relaxed);
                ok
            },
        );
        counters.read_ns.fetch_add(nanos(t0), Ordering::Relaxed);
        match res {
            // A stopped read returns early: the split stays unfinished.
            Ok(_) if fail.cancelled() => return,
            Ok(stats) => {
                counters
                    .bytes_uncompressed
                    .fetch_add(stats.uncompressed, Ordering::Relaxed);
                tracing::debug!(lines = stats.lines, "Split read.");
                if outstanding.fetch_sub(1, Ordering::SeqCst) == 1 {
                    let _ = r.done_tx.send(idx);
                }
            }
            Err(e) => {
                fail.set(e);
                return;
            }
        }
    }
}

type PageResult = (Chunk, String, u64);

/// Decode + encode of one page: the rayon job.
fn process_page(
    plan: &TablePlan,
    types: &[ColumnType],
    split: u32,
    page: Page,
) -> Result<PageResult> {
    let split_name = page.origin.to_string();
    let (first_line, last_line, edge) = (page.first_line, page.last_line(), page.edge.clone());
    let decoded =
        decode_lines(plan, &page.data, page.first_line).map_err(|reason| Error::DataFile {
            key: split_name.clone(),
            reason: format!("lines from {}: {reason}", page.first_line),
        })?;
    drop(page);
    let mut out = Vec::new();
    encode_batch(&decoded.batch, types, &mut out).map_err(|e| Error::CpuPool(e.to_string()))?;
    let chunk = Chunk {
        mark: state::PieceMark {
            split,
            first_line,
            last_line,
            rows: decoded.batch.num_rows() as u64,
            bytes: out.len() as u64,
            edge,
            rejects: decoded.rejects,
        },
        bytes: Bytes::from(out),
    };
    Ok((chunk, split_name, decoded.items))
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
