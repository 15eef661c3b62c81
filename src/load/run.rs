//! The run's control plane: find the run this load belongs to (or record a new one, its
//! tables prepared per mode, under the plan lock so workers starting together share it),
//! then the worker's loop over the run's tables until the run is done — each table's
//! splits loaded, its keys and indexes built once every split is in, and the foreign keys
//! once every table is, each finishing step by one worker.
//!
//! Input: the config, the options and the opened inputs. Output: the run loaded, and the
//! worker's report.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use super::claim::Worker;
use super::control::Control;
use super::duplicates;
use super::flow::{watch_signals, AbortOnDrop};
use super::input::{match_splits, Input, LoadOptions};
use super::metrics::LOG_EVERY;
use super::progress::Progress;
use super::rejects::RejectWriter;
use super::report::{blank_report, merge_report, table_entry, LoadReport, TableReport};
use super::state::{self, RunState, TableState};
use super::table::{load_table, TableCtx};
use crate::config::{Config, TableSpec};
use crate::error::{Error, Result};
use crate::sink::{changes, ddl, qualified, Mode};

/// How the load found its run.
pub(super) struct RunPlan {
    pub(super) run: state::Run,
    /// An unfinished run of the same load was found and goes on.
    pub(super) resumed: bool,
    /// It had live workers: this one joins them.
    pub(super) joined: bool,
}

/// Finds the run this load belongs to, or plans a new one (tables prepared per mode, splits
/// recorded), holding the plan lock so workers starting together share one run.
pub(super) async fn plan_run(
    config: &Config,
    opts: &LoadOptions,
    c: &Client,
    prepared: &mut [Input],
) -> Result<RunPlan> {
    state::ensure(c).await?;
    let fp = state::fingerprint(
        &opts.schema,
        opts.mode,
        &prepared
            .iter()
            .map(|p| (&p.plan.spec, &p.source))
            .collect::<Vec<_>>(),
        &opts
            .sync
            .as_ref()
            .map(|m| format!("sync={} {}\n", m.base_run, m.export_arn))
            .unwrap_or_default(),
    );
    if let Some(run) = state::latest_run(c, &opts.schema, &fp).await? {
        let tables = state::run_tables(c, run.id).await?;
        let intact = state::tables_intact(c, &opts.schema, &tables).await?;
        if intact && !opts.fresh {
            let resumed = run.state != RunState::Done;
            let mut joined = false;
            if resumed {
                // Another run into one of its tables went live meanwhile: never shared.
                for t in &tables {
                    for (other, _) in
                        state::unfinished_runs_of(c, &opts.schema, &t.name, run.id).await?
                    {
                        let what = format!("table {}", qualified(&opts.schema, &t.name));
                        state::refuse_live(c, other, &what).await?;
                    }
                }
                match_splits(prepared, &tables, &config.tuning).await?;
                joined = !state::live_workers(c, run.id).await?.is_empty();
                state::hold_run(c, run.id).await?;
            }
            return Ok(RunPlan {
                run,
                resumed,
                joined,
            });
        }
        if !intact {
            tracing::warn!(
                run = run.id,
                "The tables of the last run of this load were dropped or recreated since: starting a new run."
            );
        }
        if run.state == RunState::Running {
            let what = format!("a new run of this load into schema {}", opts.schema);
            state::refuse_live(c, run.id, &what).await?;
            // Abandoned first: a chunk of it still in flight then fails its commit.
            state::abandon(c, run.id).await?;
            // Tables the unfinished run created hold only its partial rows: they go.
            for t in tables.iter().filter(|t| t.created) {
                if state::table_oid(c, &opts.schema, &t.name).await? == t.table_oid {
                    ddl::drop_created(c, &opts.schema, &t.name).await;
                }
            }
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
    state::hold_run(c, id).await?;
    let run = state::latest_run(c, &opts.schema, &fp)
        .await?
        .filter(|r| r.id == id)
        .ok_or_else(|| Error::Internal(format!("run {id} is not there after it was recorded")))?;
    Ok(RunPlan {
        run,
        resumed: false,
        joined: false,
    })
}

/// Records a new run and prepares its tables, inside the caller's transaction: a replace
/// takes declared foreign keys off and empties its tables, a create makes them.
async fn new_run(
    config: &Config,
    opts: &LoadOptions,
    c: &Client,
    prepared: &[Input],
    fp: &str,
) -> Result<i64> {
    // Child tables are the run's tables too (loaded with their parent's splits).
    let names: Vec<String> = prepared
        .iter()
        .flat_map(|p| p.spec.with_children().map(|t| t.name.clone()))
        .collect();
    let all_tables = config.all_tables();
    let id = state::create_run(c, fp, &opts.schema, opts.mode, &names).await?;
    if opts.mode == Mode::Replace {
        let dropped = ddl::drop_declared_foreign_keys(c, &opts.schema, &names, &all_tables).await?;
        let outside: Vec<String> = dropped.into_iter().filter(|n| !names.contains(n)).collect();
        state::set_fk_tables(c, id, &outside).await?;
    }
    if opts.mode == Mode::Sync {
        let outside =
            changes::drop_foreign_keys_for_sync(c, &opts.schema, &names, &all_tables).await?;
        state::set_fk_tables(c, id, &outside).await?;
    }
    let mut ord = 0i32;
    for (p, spec) in prepared
        .iter()
        .flat_map(|p| p.spec.with_children().map(move |s| (p, s)))
    {
        let child = !std::ptr::eq(spec, &p.spec);
        // An unfinished run of another load into this table: one with live workers is
        // never shared (refused); a create or a replace makes a stopped one's checkpoints
        // meaningless, so it is abandoned; a table it created holds only its partial
        // rows, and a create starts it again.
        for (old, created_it) in state::unfinished_runs_of(c, &opts.schema, &spec.name, id).await? {
            let what = format!("table {}", qualified(&opts.schema, &spec.name));
            state::refuse_live(c, old, &what).await?;
            if opts.mode == Mode::Sync {
                // A stopped sync of the same export with another mapping: applying an
                // export again, before the next one, gives the same rows. A load is not
                // taken over: its table is not whole.
                let old_run = state::run_by_id(c, old).await?;
                let mode = old_run.as_ref().map(|r| r.mode.clone());
                if mode.as_deref() != Some("sync") {
                    return Err(Error::Usage(format!(
                        "table {}: load run {old} into it is not finished; finish it (re-run the load) before applying changes",
                        qualified(&opts.schema, &spec.name)
                    )));
                }
                tracing::warn!(table = %spec.name, run = old, "An unfinished sync of this table with another mapping is abandoned; its export is applied again.");
                state::abandon(c, old).await?;
                // The foreign keys it took off from other tables are put back by this run.
                if let Some(r) = old_run.filter(|r| !r.fk_tables.is_empty()) {
                    let mut fk = state::run_by_id(c, id)
                        .await?
                        .map(|r| r.fk_tables)
                        .unwrap_or_default();
                    for t in r.fk_tables {
                        if !fk.contains(&t) {
                            fk.push(t);
                        }
                    }
                    state::set_fk_tables(c, id, &fk).await?;
                }
                continue;
            }
            // A fresh upsert starts over too: the table a stopped run created (a create
            // whose key could not be built, say) goes, and is made again keyed.
            let fresh_upsert = opts.fresh && opts.mode == Mode::Upsert;
            if !matches!(opts.mode, Mode::Create | Mode::Replace) && !fresh_upsert {
                continue;
            }
            let drop_it = created_it && (opts.mode == Mode::Create || fresh_upsert);
            tracing::warn!(
                table = %spec.name,
                run = old,
                "An unfinished run of another load into this table is abandoned{}.",
                if drop_it { "; the partial table it created is dropped" } else { "" }
            );
            state::abandon(c, old).await?;
            if drop_it {
                c.batch_execute(&format!(
                    "DROP TABLE {}",
                    qualified(&opts.schema, &spec.name)
                ))
                .await
                .map_err(|e| {
                    Error::pg(&spec.name, "drop the partial table of an abandoned run", &e)
                })?;
            }
        }
        let prep =
            ddl::prepare_table(c, &opts.schema, spec, opts.mode, opts.keep_undeclared).await?;
        let oid = state::table_oid(c, &opts.schema, &spec.name).await?;
        // A child table has no splits of its own: it is loaded, and finished, with its
        // parent.
        let split_names: Vec<String> = match child {
            true => Vec::new(),
            false => (0..p.source.splits())
                .map(|s| p.source.split_name(s))
                .collect(),
        };
        // A table riding on the source holds what the source held: its baseline too.
        let rides = p
            .spec
            .children
            .iter()
            .any(|c| c.rides && c.table.name == spec.name);
        let baseline =
            (opts.mode != Mode::Sync && (!child || rides)).then(|| state::Baseline::of(&p.source));
        state::add_table(
            c,
            id,
            ord,
            &spec.name,
            oid,
            prep.created,
            prep.keys_after,
            if child { 0 } else { p.source.expected_items() },
            &split_names,
            baseline.as_ref(),
        )
        .await?;
        ord += 1;
        // A child's rejects are its parent's items; a table riding on the source has its own.
        if (!child || rides) && !matches!(opts.mode, Mode::Append | Mode::Sync) {
            state::clear_rejects(c, &opts.schema, &spec.name).await?;
        }
    }
    Ok(id)
}

/// The worker's loop over the run's tables until the run is done.
pub(super) async fn run_tables_to_end(
    config: &Config,
    opts: &LoadOptions,
    control: &Arc<Control>,
    prepared: &[Input],
    run: &state::Run,
    rejects: &Arc<RejectWriter>,
    report: &mut LoadReport,
) -> Result<()> {
    let began = Instant::now();
    let lease = Duration::from_secs(config.tuning.lease_seconds.max(1));
    let worker = Arc::new(Worker::new(run.id, lease));
    control.hold_worker(&worker.id);
    let _heartbeat = {
        let (worker, control) = (worker.clone(), control.clone());
        AbortOnDrop(tokio::spawn(async move {
            loop {
                tokio::time::sleep(worker.lease / 4).await;
                let renewed = control.retry("renew the lease", |c| {
                    let worker = &worker;
                    async move { worker.renew(&c).await }
                });
                if let Err(e) = renewed.await {
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
            .map_err(|e| Error::Io {
                what: "start the decode/encode threads".into(),
                source: std::io::Error::other(e),
            })?,
    );
    let interrupted = watch_signals();
    let progress = Progress::new(opts.bars);
    let mut waited = Instant::now() - Duration::from_secs(60);
    let mut builds = Builds::default();
    loop {
        let tables = run_tables(control, run.id).await?;
        let mut running_elsewhere = 0;
        // The pass; whatever ends it (an error, an interrupt), the builds it started are
        // waited for before it returns (a dropped session would leave its statement
        // running on the server, holding the table's row of the run until it ends).
        let pass: Result<()> = async {
            for t in &tables {
                if t.state == TableState::Loaded {
                    continue;
                }
                let Some(p) = prepared.iter().find(|p| p.spec.name == t.name) else {
                    continue;
                };
                let counts = split_counts(control, run.id, &t.name).await?;
                let mut loaded_here = false;
                if counts.pending + counts.stale > 0 {
                    if interrupted.load(Ordering::SeqCst) {
                        return Err(Error::Interrupted);
                    }
                    let ctx = TableCtx {
                        config,
                        opts,
                        control,
                        pool: &pool,
                        rejects,
                        progress: &progress,
                        interrupted: &interrupted,
                        worker: &worker,
                        run_table: t,
                        rows_before: u64::try_from(counts.rows).unwrap_or(0),
                        rejected_before: u64::try_from(counts.rejected).unwrap_or(0),
                    };
                    let started_s = began.elapsed().as_secs_f64();
                    for mut tr in load_table(&ctx, p).await? {
                        tr.started_s = started_s;
                        merge_report(report, tr);
                    }
                    loaded_here = true;
                }
                // A build that ended while this table loaded: its error now, not after
                // the pass.
                builds.join(control, opts, prepared, &tables, report, true).await?;
                let counts = split_counts(control, run.id, &t.name).await?;
                if counts.done != i64::from(t.splits) {
                    running_elsewhere += counts.running;
                    continue;
                }
                let step = FinishStep {
                    schema: opts.schema.clone(),
                    mode: opts.mode,
                    run: run.id,
                    spec: p.spec.clone(),
                    keys_after: t.keys_after,
                };
                // A table this pass loaded gets its keys and indexes on a session of
                // their own while the next table loads (a build is one backend's work,
                // mostly CPU: a GIN index over a text search takes longer than loading
                // the table), one build at a time; a sync's table (nothing to build), a
                // table with nothing to build, or one found loaded elsewhere: on the
                // control session.
                let worth = loaded_here
                    && opts.mode != Mode::Sync
                    && (t.keys_after || !p.spec.indexes.is_empty());
                let beside = if worth {
                    builds.join(control, opts, prepared, &tables, report, false).await?;
                    match control.sibling().await {
                        Ok(builder) => Some(builder),
                        Err(e) => {
                            tracing::warn!(table = %t.name, error = %e, "No session of its own for the table's keys: built before the next table loads.");
                            None
                        }
                    }
                } else {
                    None
                };
                let task = match beside {
                    Some(builder) => tokio::spawn(async move { step.run_on(&builder).await }),
                    None => {
                        let done = step.run_on(control).await;
                        tokio::spawn(async move { done })
                    }
                };
                builds.pending.push((t.name.clone(), counts, task));
                if !worth {
                    builds.join(control, opts, prepared, &tables, report, false).await?;
                }
            }
            Ok(())
        }
        .await;
        // Every build of the pass is in before the run's end is looked at.
        if !builds.pending.is_empty() && pass.is_err() {
            tracing::info!(tables = ?builds.names(), "Waiting for the keys and indexes being built to finish (a stopped build would leave its statement running on the server).");
        }
        let joined = builds
            .join(control, opts, prepared, &tables, report, false)
            .await;
        pass?;
        joined?;
        let tables = run_tables(control, run.id).await?;
        if tables.iter().all(|t| t.state == TableState::Loaded) {
            let linked = Instant::now();
            let fks = control.retry("add the foreign keys", |c| async move {
                finish_run(config, &c, opts, run, prepared).await
            });
            let fks = fks.await?;
            if fks.is_none() && !run_done(control, run.id).await? {
                // Another worker is ending the run (its row is locked: skipped): waited
                // for, so this worker never reports a run done before it is (nor does a
                // sync take the next export before this one is recorded); if that worker
                // fails, this one ends the run.
                if interrupted.load(Ordering::SeqCst) {
                    return Err(Error::Interrupted);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            if let Some(fks) = fks {
                report.foreign_keys_seconds += linked.elapsed().as_secs_f64();
                for (name, fks) in fks {
                    if let Some(t) = report.tables.iter_mut().find(|t| t.table == name) {
                        t.foreign_keys = fks;
                    } else if !fks.is_empty() {
                        let Some(p) = prepared.iter().find(|p| p.spec.name == name) else {
                            let t = TableReport {
                                table: name,
                                schema: opts.schema.clone(),
                                foreign_keys: fks,
                                ..TableReport::default()
                            };
                            report.tables.push(t);
                            continue;
                        };
                        let mut t = blank_report(p, &opts.schema);
                        t.foreign_keys = fks;
                        report.tables.push(t);
                    }
                }
            }
            for t in &tables {
                let Some(p) = prepared.iter().find(|p| p.spec.name == t.name) else {
                    // A table riding on another's source: its run's rejects are recorded
                    // under its name (its rows are checkpointed with the source's).
                    let rider = prepared.iter().find_map(|p| {
                        p.spec
                            .children
                            .iter()
                            .find(|c| c.rides && c.table.name == t.name)
                            .map(|c| (p, &c.table))
                    });
                    if let Some((p, spec)) = rider {
                        let n = state::run_rejects_of(&control.client(), run.id, &t.name, false)
                            .await?;
                        let tr = match report.tables.iter().position(|r| r.table == t.name) {
                            Some(i) => &mut report.tables[i],
                            None => {
                                let mut r = blank_report(p, &opts.schema);
                                r.table = spec.name.clone();
                                r.files = 0;
                                r.expected = 0;
                                report.tables.push(r);
                                let last = report.tables.len() - 1;
                                &mut report.tables[last]
                            }
                        };
                        tr.run_rejected = n;
                    }
                    continue;
                };
                let counts = split_counts(control, run.id, &t.name).await?;
                let tr = table_entry(report, p, t, &opts.schema, &counts);
                tr.run_rows = u64::try_from(counts.rows).unwrap_or(0);
                tr.run_rejected = u64::try_from(counts.rejected).unwrap_or(0);
                if p.spec.unrouted == Some(crate::config::Unrouted::Reject) {
                    tr.unrouted_rejected =
                        state::run_rejects_of(&control.client(), run.id, &t.name, true).await?;
                }
            }
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

/// The key builds a pass started, each on its session (or already done on the control
/// one), with the split counts its table had.
#[derive(Default)]
struct Builds {
    pending: Vec<(String, state::SplitCounts, BuildTask)>,
}

/// A key build on its session: the indexes it made (none when it had nothing to do)
/// and its seconds.
type BuildTask = tokio::task::JoinHandle<Result<(Option<Vec<String>>, f64)>>;

impl Builds {
    fn names(&self) -> Vec<&str> {
        self.pending.iter().map(|b| b.0.as_str()).collect()
    }

    /// Waits for the builds (only those already ended when `ended_only`) and records
    /// them in the report; the first error is returned once every awaited build is in (a
    /// table's repeated keys described with their lines).
    async fn join(
        &mut self,
        control: &Control,
        opts: &LoadOptions,
        prepared: &[Input],
        tables: &[state::RunTable],
        report: &mut LoadReport,
        ended_only: bool,
    ) -> Result<()> {
        let mut first_error = None;
        let mut keep = Vec::new();
        for (name, counts, task) in self.pending.drain(..) {
            if ended_only && !task.is_finished() {
                keep.push((name, counts, task));
                continue;
            }
            let finished = match task.await {
                Ok(r) => r,
                Err(e) => Err(Error::Internal(format!(
                    "the key build of {name} stopped: {e}"
                ))),
            };
            let (Some(p), Some(t)) = (
                prepared.iter().find(|p| p.spec.name == name),
                tables.iter().find(|t| t.name == name),
            ) else {
                continue;
            };
            match finished {
                Err(e @ Error::DuplicateKeys(_)) => {
                    let c = control.client();
                    let e = duplicates::describe(&c, &opts.schema, p, e).await;
                    first_error.get_or_insert(e);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
                Ok((Some(indexes), seconds)) => {
                    let tr = table_entry(report, p, t, &opts.schema, &counts);
                    tr.indexes = indexes;
                    tr.keys_seconds += seconds;
                }
                Ok((None, _)) => {}
            }
        }
        self.pending = keep;
        first_error.map_or(Ok(()), Err)
    }
}

/// What [`finish_table`] needs, owned, so it can run on a session of its own.
struct FinishStep {
    schema: String,
    mode: Mode,
    run: i64,
    spec: TableSpec,
    keys_after: bool,
}

impl FinishStep {
    /// The step on `control`'s session (made again there when the connection is lost),
    /// with the seconds it took.
    async fn run_on(&self, control: &Control) -> Result<(Option<Vec<String>>, f64)> {
        let began = Instant::now();
        let done = control
            .retry("build the table's keys and indexes", |c| async move {
                finish_table(&c, self).await
            })
            .await?;
        Ok((done, began.elapsed().as_secs_f64()))
    }
}

/// Keys (when built after the data) and indexes of a table whose splits are all in, by
/// one worker; `None` when another worker finishes it or it is finished already.
async fn finish_table(c: &Client, step: &FinishStep) -> Result<Option<Vec<String>>> {
    let (schema, spec, run) = (step.schema.as_str(), &step.spec, step.run);
    c.batch_execute("BEGIN")
        .await
        .map_err(|e| Error::pg(&spec.name, "begin", &e))?;
    let done = async {
        // The run stays live until the build commits (its row held FOR SHARE: an abandon
        // waits for the build, so an abandoned run's table is never marked loaded).
        state::lock_live_run(c, run, &spec.name).await?;
        match state::lock_table(c, run, &spec.name).await? {
            Some(TableState::Loading) => {}
            _ => return Ok(None),
        }
        if step.keys_after {
            let keyed = Instant::now();
            ddl::add_keys(c, schema, spec).await?;
            tracing::info!(table = %spec.name, seconds = keyed.elapsed().as_secs_f64(), "Primary key built.");
        }
        let indexed = Instant::now();
        // A sync's table keeps the indexes its load built.
        let indexes = match step.mode {
            Mode::Sync => Vec::new(),
            _ => ddl::build_indexes(c, schema, spec).await?,
        };
        if !indexes.is_empty() {
            tracing::info!(table = %spec.name, seconds = indexed.elapsed().as_secs_f64(), indexes = ?indexes, "Indexes built.");
        }
        let oid = state::table_oid(c, schema, &spec.name).await?;
        state::set_table_state(c, run, &spec.name, TableState::Loaded, oid).await?;
        // Its child tables' rows are in with its own: their keys and indexes now.
        let mut indexes = indexes;
        for child in spec.children.iter().map(|c| &c.table) {
            if step.mode != Mode::Sync {
                ddl::add_keys(c, schema, child).await?;
                indexes.extend(ddl::build_indexes(c, schema, child).await?);
            }
            let oid = state::table_oid(c, schema, &child.name).await?;
            state::set_table_state(c, run, &child.name, TableState::Loaded, oid).await?;
        }
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
/// matters), then the run is done — by one worker. Returns each prepared table's foreign
/// keys, or `None` when another worker finishes the run (or it is finished already).
async fn finish_run(
    config: &Config,
    c: &Client,
    opts: &LoadOptions,
    run: &state::Run,
    prepared: &[Input],
) -> Result<Option<Vec<(String, Vec<ddl::ForeignKeyReport>)>>> {
    let schema = opts.schema.as_str();
    c.batch_execute("BEGIN")
        .await
        .map_err(|e| Error::pg("ddb2pg state", "begin", &e))?;
    let done = async {
        match state::lock_run(c, run.id).await? {
            Some(RunState::Running) => {}
            _ => return Ok(None),
        }
        let all = config.all_tables();
        for name in &run.fk_tables {
            let Some(spec) = all.iter().find(|t| &t.name == name) else {
                continue;
            };
            for fk in ddl::add_foreign_keys(c, schema, spec).await? {
                if fk.orphans > 0 {
                    tracing::warn!(table = %spec.name, column = %fk.column, orphans = fk.orphans, sample = ?fk.sample, "Rows of a table not in this run reference missing keys; the foreign key stays NOT VALID.");
                }
            }
        }
        let mut all = Vec::new();
        for spec in prepared.iter().flat_map(|p| p.spec.with_children()) {
            let fks = ddl::add_foreign_keys(c, schema, spec).await?;
            for fk in &fks {
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
            all.push((spec.name.clone(), fks));
        }
        if let Some(mark) = &opts.sync {
            for p in prepared {
                super::changes::record_applied(c, run.id, schema, &p.spec.name, mark).await?;
            }
        }
        state::finish_run(c, run.id).await?;
        Ok(Some(all))
    }
    .await;
    let end = if matches!(done, Ok(Some(_))) {
        "COMMIT"
    } else {
        "ROLLBACK"
    };
    let ended = c.batch_execute(end).await;
    let done = done?;
    ended.map_err(|e| Error::pg("ddb2pg state", "commit the run's end", &e))?;
    Ok(done)
}

/// Whether run `run` is done as committed (not while another worker's end is in flight);
/// an abandoned run is [`Error::RunGone`].
async fn run_done(control: &Control, run: i64) -> Result<bool> {
    let found = control
        .retry("read the run's state", |c| async move {
            state::run_by_id(&c, run).await
        })
        .await?;
    match found.map(|r| r.state) {
        Some(RunState::Done) => Ok(true),
        Some(RunState::Running) => Ok(false),
        other => Err(Error::RunGone {
            run,
            state: other.map_or_else(|| "gone".to_string(), |s| s.to_string()),
        }),
    }
}

/// The run's tables, on the control connection (retried while it is lost).
async fn run_tables(control: &Control, run: i64) -> Result<Vec<state::RunTable>> {
    control
        .retry("read the run's tables", |c| async move {
            state::run_tables(&c, run).await
        })
        .await
}

/// A table's split counts, on the control connection (retried while it is lost).
async fn split_counts(control: &Control, run: i64, table: &str) -> Result<state::SplitCounts> {
    control
        .retry("count the table's splits", |c| async move {
            state::split_counts(&c, run, table).await
        })
        .await
}
