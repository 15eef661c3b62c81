//! One worker's pass over one table: the stages wired together — COPY writers first (so
//! the pipeline has somewhere to go), then reader threads and the decode/encode
//! dispatcher — run until the table's splits are claimed and read or the first failure,
//! then joined, and the pass's figures gathered.
//!
//! Input: the run's table and its opened source. Output: a [`TableReport`] of the pass;
//! its rows are committed chunk by chunk by the writers.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::Instrument as _;

use super::claim::Worker;
use super::control::Control;
use super::cpu::spawn_dispatcher;
use super::flow::{AbortOnDrop, Failure, SplitTracker};
use super::input::{Input, LoadOptions};
use super::metrics::{secs, spawn_sampler, Counters, Sampled};
use super::progress::Progress;
use super::read::{spawn_readers, Reading};
use super::rejects::RejectWriter;
use super::report::{StageReport, TableReport, UpsertCounts};
use super::state::RunTable;
use super::write::{start_writers, WriterPlan};
use crate::config::Config;
use crate::error::{with_causes, Error, Result};
use crate::sink::Mode;
use crate::source::SourcePlan;

/// What one pass over a table needs.
pub(super) struct TableCtx<'a> {
    pub(super) config: &'a Config,
    pub(super) opts: &'a LoadOptions,
    pub(super) control: &'a Arc<Control>,
    pub(super) pool: &'a Arc<rayon::ThreadPool>,
    pub(super) rejects: &'a Arc<RejectWriter>,
    pub(super) progress: &'a Progress,
    pub(super) interrupted: &'a Arc<AtomicBool>,
    pub(super) worker: &'a Arc<Worker>,
    pub(super) run_table: &'a RunTable,
    /// Rows and rejects committed before this pass (earlier attempts, other workers).
    pub(super) rows_before: u64,
    pub(super) rejected_before: u64,
}

/// One worker's pass over a table: claims its splits one by one until none is left and
/// loads them, each chunk committed with its checkpoint.
///
/// # Errors
/// The first failure of any stage; the splits this worker held are given back with it.
/// Returns the table's report row, then one per child table (the rows of its items'
/// elements this pass committed).
pub(super) async fn load_table(ctx: &TableCtx<'_>, p: &Input) -> Result<Vec<TableReport>> {
    let span = tracing::info_span!("table", table = %p.spec.name);
    run_pass(ctx, p).instrument(span).await
}

async fn run_pass(ctx: &TableCtx<'_>, p: &Input) -> Result<Vec<TableReport>> {
    let started = Instant::now();
    let tuning = &ctx.config.tuning;
    let table = p.spec.name.clone();
    tracing::info!(
        splits = p.source.splits(),
        items = p.source.expected_items(),
        committed_before = ctx.rows_before,
        mode = ?ctx.opts.mode,
        "Loading table."
    );
    let counters = Arc::new(Counters::default());
    counters
        .rows_written
        .store(ctx.rows_before, Ordering::Relaxed);
    let failure = Arc::new(Failure::default());
    let bar = ctx
        .progress
        .table(&table, p.source.expected_items(), counters.clone());
    let _signal_watch = watch_interrupt(ctx.interrupted.clone(), failure.clone());
    let (stop_sampler, sampler) = spawn_sampler(
        counters.clone(),
        tuning.cpu_threads.max(1),
        tuning.connections.max(1) * 2,
    );
    let (done_tx, done_rx) = mpsc::unbounded_channel::<u32>();
    let splits = Arc::new(SplitTracker::new(p.source.splits(), done_tx));
    let marker = spawn_split_marker(ctx, &table, failure.clone(), done_rx);

    let (piece_tx, writers) = start_writers(
        &WriterPlan {
            config: ctx.config,
            opts: ctx.opts,
            worker: ctx.worker,
            input: p,
            rejects: ctx.rejects,
        },
        &counters,
        &failure,
        &splits,
    );
    let reading = Arc::new(Reading {
        source: p.source.clone(),
        plan: p.plan.clone(),
        pool: ctx.pool.clone(),
        max_rejects: ctx
            .opts
            .max_rejects
            .map(|m| m.saturating_sub(ctx.rejected_before)),
        counters: counters.clone(),
        failure: failure.clone(),
        table: table.clone(),
        worker: ctx.worker.clone(),
        control: ctx.control.clone(),
        handle: tokio::runtime::Handle::current(),
        splits,
        claimed: AtomicUsize::new(0),
        taken: std::sync::Mutex::new(Vec::new()),
        readers: p.source.readers(tuning),
    });
    let (page_tx, page_rx) = crossbeam_channel::bounded(tuning.cpu_threads.max(1));
    let mut threads = spawn_readers(&reading, tuning, page_tx);
    threads.extend(spawn_dispatcher(&reading, tuning, page_rx, piece_tx));

    join_stages(writers, threads, &failure).await;
    let claimed = reading.claimed.load(Ordering::Relaxed);
    // The last holder of the split tracker (and so of the marker's sender): the marker
    // ends once it has marked what the stages finished.
    drop(reading);
    let marked = marker.await.unwrap_or(0);
    bar.finish();
    let _ = stop_sampler.send(());
    let sampled = sampler.await.unwrap_or_default();

    let accounted = failure.take().map_or_else(|| account(p, &counters), Err);
    if let Err(e) = accounted {
        ctx.worker
            .release(&ctx.control.client(), &table, &with_causes(&e))
            .await;
        return Err(e);
    }
    tracing::debug!(claimed, marked, "Pass over the table ended.");
    let parent = pass_report(
        ctx,
        p,
        &counters,
        claimed,
        started.elapsed().as_secs_f64(),
        sampled,
    );
    let child_rows = counters
        .child_rows
        .lock()
        .map(|v| v.clone())
        .unwrap_or_default();
    let riders = rider_counts(&counters);
    let mut out = Vec::with_capacity(1 + p.spec.children.len());
    for (i, c) in p.spec.children.iter().enumerate() {
        let rows = child_rows.get(i).copied().unwrap_or(0);
        let (taken, left, rejected) = riders.get(i).copied().unwrap_or_default();
        out.push(TableReport {
            table: c.table.name.clone(),
            schema: parent.schema.clone(),
            source: match c.rides {
                true => parent.source.clone(),
                false => format!("{}.{}", p.spec.name, c.unnest),
            },
            rows_read: if c.rides { taken } else { rows },
            rows_written: rows,
            rejected,
            skipped: left,
            route: c.table.route.as_ref().map(ToString::to_string),
            // Its time is its parent's (the same pass): counted once, there.
            created: parent.created,
            ..TableReport::default()
        });
    }
    out.insert(0, parent);
    Ok(out)
}

/// Turns a signal into this table's stop: readers stop, writers commit what they hold.
fn watch_interrupt(interrupted: Arc<AtomicBool>, failure: Arc<Failure>) -> AbortOnDrop {
    AbortOnDrop(tokio::spawn(async move {
        while !failure.cancelled() {
            if interrupted.load(Ordering::SeqCst) {
                failure.set(Error::Interrupted);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }))
}

/// Marks each split done in `ddb2pg.splits` once its last page is committed; returns how
/// many it marked.
fn spawn_split_marker(
    ctx: &TableCtx<'_>,
    table: &str,
    failure: Arc<Failure>,
    mut done_rx: mpsc::UnboundedReceiver<u32>,
) -> tokio::task::JoinHandle<usize> {
    let (worker, control, table) = (ctx.worker.clone(), ctx.control.clone(), table.to_string());
    tokio::spawn(async move {
        let mut n = 0usize;
        // Splits done meanwhile are marked together: one transaction (and one flush of
        // the server's log) for many small files, not one each.
        while let Some(split) = done_rx.recv().await {
            let mut splits = vec![split];
            while let Ok(more) = done_rx.try_recv() {
                splits.push(more);
            }
            splits.sort_unstable();
            splits.dedup();
            let done = control.retry("mark a split done", |c| {
                let (worker, table, splits) = (&worker, &table, &splits);
                async move { worker.splits_done(&c, table, splits).await }
            });
            if let Err(e) = done.await {
                failure.set(e);
            }
            n += splits.len();
        }
        n
    })
}

/// Waits for the writers (they end when the piece queue closes or the pass stops), then
/// for the reader and dispatcher threads.
async fn join_stages(
    mut writers: tokio::task::JoinSet<()>,
    threads: Vec<std::thread::JoinHandle<()>>,
    failure: &Failure,
) {
    while let Some(joined) = writers.join_next().await {
        if let Err(e) = joined {
            failure.set(Error::Internal(format!("a COPY writer task failed: {e}")));
        }
    }
    for t in threads {
        let joined = tokio::task::spawn_blocking(move || t.join()).await;
        if !matches!(joined, Ok(Ok(()))) {
            failure.set(Error::Internal(
                "a reader or dispatcher thread panicked".into(),
            ));
        }
    }
}

/// Per child table, what a table riding on the source took, left and rejected.
fn rider_counts(counters: &Counters) -> Vec<(u64, u64, u64)> {
    counters
        .rider_counts
        .lock()
        .map(|v| v.clone())
        .unwrap_or_default()
}

/// The pass's own rejects (those of the tables riding on its source, and the unrouted
/// items kept as rejects, left out).
fn own_rejected(counters: &Counters) -> u64 {
    let riders: u64 = rider_counts(counters).iter().map(|c| c.2).sum();
    counters
        .rejected
        .load(Ordering::Relaxed)
        .saturating_sub(riders + counters.unrouted_kept.load(Ordering::Relaxed))
}

/// Every item read is either committed or rejected — by the table and by each table
/// riding on its source.
fn account(p: &Input, counters: &Counters) -> Result<()> {
    let table = &p.spec.name;
    let rows = counters.rows_committed.load(Ordering::Relaxed);
    let rejected = own_rejected(counters);
    let items = counters.items.load(Ordering::Relaxed);
    if rows + rejected != items {
        return Err(Error::Internal(format!(
            "table {table}: {items} items read, but {rows} written and {rejected} rejected"
        )));
    }
    let child_rows = counters
        .child_rows
        .lock()
        .map(|v| v.clone())
        .unwrap_or_default();
    for (i, (c, (taken, _, rejected))) in p
        .spec
        .children
        .iter()
        .zip(rider_counts(counters))
        .enumerate()
    {
        let rows = child_rows.get(i).copied().unwrap_or(0);
        if c.rides && rows + rejected != taken {
            return Err(Error::Internal(format!(
                "table {}: {taken} items taken from {table}'s source, but {rows} written and {rejected} rejected",
                c.table.name
            )));
        }
    }
    Ok(())
}

/// The report row of one pass over a table, from its counters.
fn pass_report(
    ctx: &TableCtx<'_>,
    p: &Input,
    counters: &Counters,
    splits_loaded: usize,
    seconds: f64,
    sampled: Sampled,
) -> TableReport {
    let tuning = &ctx.config.tuning;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let rows_written = load(&counters.rows_committed);
    let (inserted, updated) = (load(&counters.inserted), load(&counters.updated));
    TableReport {
        table: p.spec.name.clone(),
        schema: ctx.opts.schema.clone(),
        source: p.source.location(),
        files: p.source.splits(),
        expected: p.source.expected_items(),
        rows_read: load(&counters.items),
        rows_written,
        rows_before: ctx.rows_before,
        rejected: own_rejected(counters),
        skipped: load(&counters.skipped),
        unrouted: load(&counters.unrouted),
        unrouted_rejected: load(&counters.unrouted_kept),
        route: p.spec.route.as_ref().map(ToString::to_string),
        run_rows: 0,
        run_rejected: 0,
        bytes_read: load(&counters.bytes_read),
        bytes_uncompressed: load(&counters.bytes_uncompressed),
        bytes_copied: load(&counters.bytes_copied),
        seconds,
        rows_per_second: if seconds > 0.0 {
            rows_written as f64 / seconds
        } else {
            0.0
        },
        started_s: 0.0,
        keys_seconds: 0.0,
        created: ctx.run_table.created,
        upsert: (ctx.opts.mode == Mode::Upsert).then(|| UpsertCounts {
            inserted,
            updated,
            unchanged: rows_written.saturating_sub(inserted + updated),
        }),
        stages: StageReport {
            read_busy_s: secs(&counters.read_ns) - secs(&counters.read_blocked_ns),
            read_threads: p.source.readers(tuning),
            // A job's time is taken before it queues its piece: the wait is apart.
            decode_encode_busy_s: secs(&counters.cpu_ns),
            decode_encode_blocked_s: secs(&counters.cpu_blocked_ns),
            cpu_threads: tuning.cpu_threads,
            write_busy_s: secs(&counters.write_ns),
            connections: tuning.connections,
            page_queue_fill: sampled.page_fill,
            chunk_queue_fill: sampled.chunk_fill,
            timeline: sampled.timeline,
            queue_fills: sampled.queue_fills,
        },
        source_retries: p.source.retries(),
        pg_retries: load(&counters.pg_retries),
        splits_loaded,
        scan: match &p.source {
            SourcePlan::Scan(s) => Some(s.report()),
            SourcePlan::Export(_) | SourcePlan::Parquet(_) => None,
        },
        indexes: Vec::new(),
        foreign_keys: Vec::new(),
    }
}
