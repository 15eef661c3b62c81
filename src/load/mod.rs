//! The `load` command: plan → read → decode + map → encode → write, all stages at once,
//! with a bounded queue between each pair.
//!
//! ```text
//!  reader threads ──pages──► dispatcher ──rayon job per page──► pieces ──► N COPY writers
//!  (gunzip, lines)  bounded   (token per job in flight)        bounded    (tokio-postgres)
//! ```
//!
//! - [`input`]: every table's mapping checked and its source opened before any work.
//! - [`run`]: the run found or recorded ([`state`]), then the worker's loop over its tables;
//!   keys and indexes once a table's splits are in, foreign keys once every table is.
//! - [`table`]: one pass over a table, wiring [`read`] (reader threads claiming splits
//!   through [`claim`]), [`cpu`] (one rayon job per page: decode + encode) and [`write`]
//!   (COPY writers committing chunks with their checkpoints); [`flow`] holds what they share.
//! - [`rejects`], [`metrics`], [`progress`], [`report`]: what the load writes and says.
//!
//! Rows commit chunk by chunk (`tuning.chunk_bytes` of COPY data per transaction, with its
//! checkpoint), so a load stopped any way keeps every committed chunk and a re-run resumes.
//!
//! Worst-case memory per table, with `P = tuning.page_bytes`, `T = cpu_threads`,
//! `R = readers`, `C = connections`, `K = tuning.chunk_bytes`: readers hold ≤ 2P each (the
//! page being filled and its carry-over), the page queue holds ≤ T pages, T + 2 jobs are
//! in flight, each with its page, its Arrow batch and its COPY bytes (≈ 3P), the piece
//! queue holds ≤ 2C encoded pages, and each writer keeps the chunk it is sending (≤ K +
//! one piece) for a retry: ≈ (2R + T + 3(T + 2) + 2C) · P + C · K — about 60 MB +
//! C × 32 MiB with the defaults on 2 cores, whatever the input size.

pub mod changes;
mod claim;
mod control;
mod cpu;
mod duplicates;
mod flow;
pub use flow::watch_signals;
pub use rejects::record_line as reject_line;
mod input;
pub mod metrics;
mod progress;
mod read;
mod rejects;
pub mod report;
mod run;
pub mod state;
mod table;
mod write;

use std::sync::Arc;
use std::time::Instant;

use crate::config::{Config, TableSpec};
use crate::decode::TablePlan;
use crate::error::{Error, Result};
use crate::sink::connect;
use crate::source::export::ExportPlan;
use crate::source::SourcePlan;
use control::Control;
use input::open_inputs;
pub use input::{open_passes, LoadOptions, SyncMark};
use metrics::{peak_rss_bytes, process_cpu_seconds};
use rejects::{RejectStart, RejectWriter};
pub use report::{LoadReport, StageReport, TableReport, UpsertCounts};
use run::{plan_run, run_tables_to_end};
use state::RunState;

/// Runs `load`: plans or resumes the run, then loads its tables' splits (claimed, so
/// several workers share them), finishes each table (keys, indexes) once all its splits
/// are in, and the run (foreign keys) once all tables are.
///
/// # Errors
/// The first failure; every chunk committed before it stays, and re-running resumes.
pub async fn load(config: &Config, opts: &LoadOptions) -> Result<LoadReport> {
    let started = Instant::now();
    let prepared = open_inputs(config, &opts.tables, opts.mode).await?;
    run_inputs(config, opts, prepared, started).await
}

/// Applies one incremental export's changes to `spec`'s table (a run of mode
/// [`Mode::Sync`](crate::sink::Mode::Sync) whose splits are the export's data files; `opts.sync` says which
/// export, recorded as applied in the transaction that ends the run).
///
/// # Errors
/// As [`load`].
pub async fn apply_export(
    config: &Config,
    opts: &LoadOptions,
    spec: &TableSpec,
    export: Arc<ExportPlan>,
) -> Result<LoadReport> {
    let started = Instant::now();
    let input = input::Input {
        spec: spec.clone(),
        plan: Arc::new(TablePlan::for_changes(spec)),
        source: SourcePlan::Export(export),
    };
    run_inputs(config, opts, vec![input], started).await
}

async fn run_inputs(
    config: &Config,
    opts: &LoadOptions,
    mut prepared: Vec<input::Input>,
    started: Instant,
) -> Result<LoadReport> {
    let _lock_waits = crate::sink::locks::watch_lock_waits(&config.target.url);
    let control = Arc::new(Control::new(
        &config.target.url,
        connect(&config.target.url).await?,
    ));
    let planner = control.client();
    let capped = cap_connections(config, &planner).await?;
    let config = capped.as_ref().unwrap_or(config);
    state::lock(&planner).await?;
    let planned = async {
        let plan = plan_run(config, opts, &planner, &mut prepared).await?;
        control.hold_run(plan.run.id);
        // Opened before the plan lock goes: a worker joining this run appends after the
        // file was emptied or rebuilt.
        // A sync's file holds every export it applies (emptied once, by the command).
        let sync = opts.mode == crate::sink::Mode::Sync;
        let start = match (plan.resumed, plan.joined, sync) {
            (true, false, true) => RejectStart::AppendRun,
            (_, _, true) | (true, true, false) => RejectStart::Append,
            (false, _, false) => RejectStart::Empty,
            (true, false, false) => RejectStart::Rebuild,
        };
        let rejects = match plan.run.state {
            RunState::Done => None,
            _ => Some(Arc::new(
                RejectWriter::open(&opts.rejects_path, start, &planner, plan.run.id).await?,
            )),
        };
        Ok::<_, Error>((plan, rejects))
    }
    .await;
    let unlocked = state::unlock(&planner).await;
    let (plan, rejects) = planned?;
    unlocked?;
    let mut report = LoadReport {
        mode: Some(opts.mode),
        schema: opts.schema.clone(),
        rejects_file: Some(opts.rejects_path.display().to_string()),
        run_id: Some(plan.run.id),
        resumed: plan.resumed,
        ..LoadReport::default()
    };
    let Some(rejects) = rejects.filter(|_| plan.run.state != RunState::Done) else {
        report.already_done = plan.run.finished_at.clone();
        report.seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    };
    if plan.resumed {
        tracing::info!(
            run = plan.run.id,
            started = %plan.run.started_at,
            "Resuming an unfinished run of this load: committed chunks are kept."
        );
    }
    let run_id = plan.run.id;
    match run_tables_to_end(
        config,
        opts,
        &control,
        &prepared,
        &plan.run,
        &rejects,
        &mut report,
    )
    .await
    {
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

/// `tuning.connections` within what the server has free (`max_connections`, less the
/// superuser reserve and the sessions open now, this one included): a load asking for
/// more runs with what the server allows, and says so. `None` when it fits.
async fn cap_connections(config: &Config, c: &tokio_postgres::Client) -> Result<Option<Config>> {
    let free: i64 = c
        .query_one(
            "SELECT current_setting('max_connections')::int8 \
               - current_setting('superuser_reserved_connections')::int8 \
               - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')",
            &[],
        )
        .await
        .map_err(|e| Error::pg("(server)", "read max_connections", &e))?
        .get(0);
    let want = config.tuning.connections;
    let room = usize::try_from(free).unwrap_or(0).max(1);
    if want <= room {
        return Ok(None);
    }
    tracing::warn!(
        asked = want,
        free = room,
        "The server has fewer free connections than tuning.connections: loading with what it allows."
    );
    let mut capped = config.clone();
    capped.tuning.connections = room;
    Ok(Some(capped))
}
