//! The `sync` command (ARCHITECTURE §8): the changes DynamoDB took after a table's load,
//! applied until cutover. For `changes = { exports = … }` it lists the incremental exports
//! under the prefix, checks their chain against the load's baseline ([`chain`]), checks
//! every data file of an export (MD5 and item count) before any of it is applied, then
//! applies each export as a run of the load machinery in sync mode: its data files are
//! the splits, each chunk of changes goes by binary COPY into a staging table and is
//! applied (deletes, then puts replacing whole rows, by primary key) in the transaction
//! that holds its checkpoint, and the export is recorded applied in the one that ends
//! the run. So a sync stopped any way and run again applies each change once; several
//! `sync` processes share an export's files, and apply exports one after the other.
//!
//! Input: the config and [`SyncOptions`]. Output: a [`SyncReport`]; the tables changed.

pub mod chain;
mod stream;
mod types;

use types::{lock_schema, unlock_schema};
pub use types::{SyncOptions, SyncReport, TableSync};

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio_postgres::Client;

use crate::config::{Changes, Config, TableSpec};
use crate::error::{Error, Result};
use crate::load::changes::{applied_exports, base_load, AppliedExport, BaseLoad};
use crate::load::state::{self, RunState};
use crate::load::{self, LoadOptions, SyncMark};
use crate::scalar::time::format_timestamp;
use crate::sink::{connect, Mode};
use crate::source::changes::{self, Found};
use crate::source::export::ExportPlan;

/// Runs `sync`: each selected table's changes applied until caught up, then (unless
/// `until_caught_up`) polling for new ones every `tuning.poll_seconds` until Ctrl-C or
/// SIGTERM.
///
/// # Errors
/// A table whose load is not done or that has no `changes` (exit 2), a gap or a recreated
/// table (exit 5, nothing of that table applied), a data file that is missing or fails
/// its checks (nothing of that export applied), or a failure while applying (committed
/// chunks stay; a re-run goes on from them).
pub async fn sync(config: &Config, opts: &SyncOptions) -> Result<SyncReport> {
    let started = Instant::now();
    let specs = select(config, &opts.tables)?;
    let interrupted = load::watch_signals();
    let c = connect(&config.target.url).await?;
    state::lock(&c).await?;
    let ensured = state::ensure(&c).await;
    state::unlock(&c).await?;
    ensured?;
    // Refused before any work: a table not loaded.
    let mut bases = Vec::new();
    for spec in &specs {
        bases.push(loaded(&c, &opts.schema, spec).await?);
    }
    empty_rejects(&opts.rejects_path)?;
    let mut report = SyncReport {
        schema: opts.schema.clone(),
        rejects_file: Some(opts.rejects_path.display().to_string()),
        tables: specs
            .iter()
            .zip(&bases)
            .map(|(s, (b, _))| TableSync {
                table: s.name.clone(),
                schema: opts.schema.clone(),
                base_run: b.run,
                baseline: b.baseline.clone(),
                ..TableSync::default()
            })
            .collect(),
        ..SyncReport::default()
    };
    // Stream tables are followed by their own tasks, all at once; export tables are
    // looked at in turn below.
    let shared = Arc::new(config.clone());
    let mut followers = Vec::new();
    for (i, (spec, (base, baseline))) in specs.iter().zip(&bases).enumerate() {
        let Some(Changes::Stream { table }) = &spec.changes else {
            continue;
        };
        let follow = Arc::new(
            stream::Follow::new(
                shared.clone(),
                opts.clone(),
                spec.clone(),
                base.clone(),
                *baseline,
                table.clone(),
                interrupted.clone(),
            )
            .await,
        );
        let mut t = report.tables[i].clone();
        followers.push((
            i,
            tokio::spawn(async move {
                let r = follow.run(&mut t).await;
                (t, r)
            }),
        ));
    }
    let exports = specs
        .iter()
        .any(|s| matches!(s.changes, Some(Changes::Exports { .. })));
    let looked = if exports {
        look_at_exports(config, opts, &c, &specs, &bases, &interrupted, &mut report).await
    } else {
        Ok(())
    };
    if looked.is_err() {
        // The followers stop too (after committing the page each holds).
        interrupted.store(true, Ordering::SeqCst);
    }
    let mut first = looked;
    for (i, task) in followers {
        match task.await {
            Ok((t, r)) => {
                report.tables[i] = t;
                match r {
                    Err(e) if !opts.until_caught_up && is_interrupt(&e) => {
                        report.interrupted = true
                    }
                    Err(e) if first.is_ok() => first = Err(e),
                    _ => {}
                }
            }
            Err(e) if first.is_ok() => {
                first = Err(Error::Internal(format!("a stream follower panicked: {e}")));
            }
            Err(_) => {}
        }
    }
    first?;
    if !opts.until_caught_up && interrupted.load(Ordering::SeqCst) {
        report.interrupted = true;
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The export tables, looked at in turn until caught up (`--until-caught-up`) or, when
/// following, every `tuning.poll_seconds` until a signal.
async fn look_at_exports(
    config: &Config,
    opts: &SyncOptions,
    c: &Client,
    specs: &[TableSpec],
    bases: &[(BaseLoad, i64)],
    interrupted: &Arc<AtomicBool>,
    report: &mut SyncReport,
) -> Result<()> {
    loop {
        for (i, (spec, (base, baseline))) in specs.iter().zip(bases).enumerate() {
            if !matches!(spec.changes, Some(Changes::Exports { .. })) {
                continue;
            }
            let pass = Pass {
                config,
                opts,
                c,
                spec,
                base,
                baseline: *baseline,
                interrupted,
            };
            match pass.run(&mut report.tables[i]).await {
                Ok(()) => {}
                Err(e) if !opts.until_caught_up && is_interrupt(&e) => {
                    report.interrupted = true;
                }
                // Following: a failure that a later look may not meet (S3 or PostgreSQL
                // away, an export's files not all there yet) is said and looked at again.
                Err(e)
                    if !opts.until_caught_up
                        && !matches!(e, Error::ChangesLost { .. } | Error::Usage(_)) =>
                {
                    tracing::error!(table = %spec.name, error = %crate::error::with_causes(&e), "Could not apply the table's changes; trying again at the next look.");
                }
                Err(e) => return Err(e),
            }
            if report.interrupted {
                break;
            }
        }
        if opts.until_caught_up || report.interrupted {
            break;
        }
        for t in report.tables.iter().filter(|t| t.stream.is_none()) {
            tracing::info!(
                table = %t.table,
                watermark = t.watermark.as_deref().unwrap_or("-"),
                lag_seconds = t.lag_seconds.unwrap_or(0.0),
                exports = t.exports_applied_total,
                "Caught up; looking again in {} s.",
                config.tuning.poll_seconds
            );
        }
        if sleep_unless_interrupted(interrupted, config.tuning.poll_seconds).await {
            report.interrupted = true;
            break;
        }
    }
    Ok(())
}

/// The tables to sync: those named (each must declare `changes`), else every table that
/// declares it.
fn select(config: &Config, names: &[String]) -> Result<Vec<TableSpec>> {
    let specs = config.select_tables(names)?;
    if !names.is_empty() {
        if let Some(s) = specs.iter().find(|s| s.changes.is_none()) {
            return Err(Error::Usage(format!(
                "--table {}: pipeline.toml declares no `changes` for it (e.g. `changes = {{ exports = \"s3://bucket/prefix\" }}`)",
                s.name
            )));
        }
        return Ok(specs);
    }
    let with: Vec<TableSpec> = specs.into_iter().filter(|s| s.changes.is_some()).collect();
    if with.is_empty() {
        return Err(Error::Usage(format!(
            "{}: no table declares `changes` (e.g. `changes = {{ exports = \"s3://bucket/prefix\" }}`): nothing to sync",
            config.path.display()
        )));
    }
    Ok(with)
}

/// The table's load, which must be done, and its baseline in microseconds.
async fn loaded(c: &Client, schema: &str, spec: &TableSpec) -> Result<(BaseLoad, i64)> {
    let q = format!("{schema}.{}", spec.name);
    let Some(base) = base_load(c, schema, &spec.name).await? else {
        return Err(Error::Usage(format!(
            "table {q}: no load of it is recorded in this database; load it (ddb2pg load) before applying its changes"
        )));
    };
    if base.state != RunState::Done {
        return Err(Error::Usage(format!(
            "table {q}: its load (run {}) is not done; finish it (run the same load again) before applying changes",
            base.run
        )));
    }
    let Some(baseline) = base.baseline_micros else {
        return Err(Error::ChangesLost {
            table: q,
            reason: format!(
                "its load (run {}) recorded no baseline (its export's manifest-summary.json has no exportTime, or it was loaded by an earlier ddb2pg): which changes it holds is unknown; reload it (ddb2pg load --mode replace --fresh) from an export whose manifest is as AWS wrote it",
                base.run
            ),
        });
    };
    Ok((base, baseline))
}

/// Empties the rejects file at the start of a sync (each export's run appends to it).
fn empty_rejects(path: &std::path::Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::Rejects {
            path: path.to_path_buf(),
            source: e,
        })?;
    }
    std::fs::File::create(path)
        .map(|_| ())
        .map_err(|e| Error::Rejects {
            path: path.to_path_buf(),
            source: e,
        })
}

fn is_interrupt(e: &Error) -> bool {
    match e {
        Error::Interrupted => true,
        Error::Stopped { inner, .. } => is_interrupt(inner),
        _ => false,
    }
}

/// Sleeps `secs`, waking early (returning `true`) on a signal.
async fn sleep_unless_interrupted(flag: &AtomicBool, secs: u64) -> bool {
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until {
        if flag.load(Ordering::SeqCst) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    flag.load(Ordering::SeqCst)
}

/// One look at a table's changes: what is there, checked, applied.
struct Pass<'a> {
    config: &'a Config,
    opts: &'a SyncOptions,
    c: &'a Client,
    spec: &'a TableSpec,
    base: &'a BaseLoad,
    baseline: i64,
    interrupted: &'a Arc<AtomicBool>,
}

impl Pass<'_> {
    async fn run(&self, t: &mut TableSync) -> Result<()> {
        let table = format!("{}.{}", self.opts.schema, self.spec.name);
        let Some(Changes::Exports { location, path }) = &self.spec.changes else {
            return Ok(());
        };
        let listing = changes::list(location, path.as_deref()).await?;
        for (loc, why) in &listing.unreadable {
            tracing::warn!(table = %table, export = %loc, "Not an incremental export that can be read: {why}.");
        }
        t.unfinished.clone_from(&listing.unfinished);
        if self.opts.until_caught_up && !listing.unreadable.is_empty() {
            let (loc, why) = &listing.unreadable[0];
            return Err(Error::Source {
                source_name: loc.clone(),
                reason: format!("not an incremental export that can be read ({why}): it may hold changes; fix or remove it"),
            });
        }
        let applied = applied_exports(self.c, self.base.run, &self.spec.name).await?;
        let mut plan = chain::plan(self.base, self.baseline, &listing.exports, &applied);
        if !plan.gaps.is_empty() && !listing.unfinished.is_empty() {
            // The gap may be the window of an export still being written: nothing past
            // it is applied, and it is not called a gap yet.
            tracing::warn!(table = %table, unfinished = ?listing.unfinished, "The exports leave a gap, and some are still being written: waiting for them before applying any.");
            plan.apply.clear();
            plan.gaps.clear();
        }
        if !plan.recreated.is_empty() {
            return Err(Error::ChangesLost {
                table,
                reason: format!(
                    "{}; reload the table from a full export of the new table",
                    plan.recreated.join("; ")
                ),
            });
        }
        if !plan.gaps.is_empty() && !self.opts.allow_gap {
            let gaps: Vec<&str> = plan.gaps.iter().map(|(_, g)| g.as_str()).collect();
            return Err(Error::ChangesLost {
                table,
                reason: format!(
                    "{}; reload the table (ddb2pg load --mode replace --fresh) from a full export whose time is inside the incremental exports' windows, or pass --allow-gap to apply them anyway (the changes in the gap stay missing)",
                    gaps.join("; ")
                ),
            });
        }
        for w in plan.warnings.iter().chain(plan.gaps.iter().map(|(_, g)| g)) {
            if !t.warnings.contains(w) {
                tracing::warn!(table = %table, "{w}.");
                t.warnings.push(w.clone());
            }
        }
        for e in &plan.apply {
            if self.interrupted.load(Ordering::SeqCst) {
                return Err(Error::Interrupted);
            }
            // One export at a time per schema, across sync processes: each export's run
            // takes the foreign keys of its table (and of the tables linked to it) off and
            // puts them back, which two runs on linked tables must not interleave. A
            // second process waits here, then finds the export applied.
            self.lock_schema().await?;
            let applied = async {
                let now = applied_exports(self.c, self.base.run, &self.spec.name).await?;
                if now.iter().any(|a| a.export_arn == e.arn()) {
                    return Ok(());
                }
                self.apply(e, t).await
            }
            .await;
            let unlocked = self.unlock_schema().await;
            applied?;
            unlocked?;
        }
        let applied = applied_exports(self.c, self.base.run, &self.spec.name).await?;
        t.exports_applied_total = applied.len();
        mark_watermark(t, &applied);
        if self.opts.until_caught_up && !listing.unfinished.is_empty() {
            return Err(Error::Source {
                source_name: location.clone(),
                reason: format!(
                    "export(s) {} are still being written (`_started`, no manifest-summary.json yet): the table is not caught up (applied up to {}); run again once they complete, or remove the folder of an export that failed",
                    listing.unfinished.join(", "),
                    t.watermark.as_deref().unwrap_or("the load's baseline")
                ),
            });
        }
        Ok(())
    }

    async fn lock_schema(&self) -> Result<()> {
        lock_schema(self.c, &self.opts.schema, self.interrupted).await
    }

    async fn unlock_schema(&self) -> Result<()> {
        unlock_schema(self.c, &self.opts.schema).await
    }

    /// Opens one export, checks every data file, applies it.
    async fn apply(&self, e: &Found, t: &mut TableSync) -> Result<()> {
        let started = Instant::now();
        let plan = Arc::new(e.open().await?);
        for w in &plan.warnings {
            tracing::warn!(table = %self.spec.name, export = %e.location, "{w}");
        }
        tracing::info!(
            table = %self.spec.name,
            export = %e.id,
            from = %format_timestamp(e.from, true),
            to = %format_timestamp(e.to, true),
            files = plan.files.len(),
            changes = plan.item_count(),
            "Checking the export's data files."
        );
        check_files(&plan, self.config).await?;
        let arn = e.arn();
        let lopts = LoadOptions {
            mode: Mode::Sync,
            schema: self.opts.schema.clone(),
            tables: vec![self.spec.name.clone()],
            rejects_path: self.opts.rejects_path.clone(),
            // Per table, across its exports.
            max_rejects: self.opts.max_rejects.map(|m| m.saturating_sub(t.rejected)),
            fresh: false,
            keep_undeclared: false,
            bars: self.opts.bars,
            sync: Some(SyncMark {
                base_run: self.base.run,
                export_arn: arn.clone(),
                location: e.location.clone(),
                from: format_timestamp(e.from, true),
                to: format_timestamp(e.to, true),
            }),
        };
        let mut attempt = 0;
        let (applied, r) = loop {
            let r = load::apply_export(self.config, &lopts, self.spec, plan.clone()).await?;
            let applied = applied_exports(self.c, self.base.run, &self.spec.name).await?;
            if applied.iter().any(|a| a.export_arn == arn) {
                break (applied, r);
            }
            // Its run ended without recording it (abandoned under this worker): the
            // export is not applied, and applying it again before the next one gives
            // the same rows.
            attempt += 1;
            let state = match r.run_id {
                Some(id) => state::run_by_id(self.c, id).await?.map(|r| r.state),
                None => None,
            };
            if attempt >= 3 {
                return Err(Error::Internal(format!(
                    "export {arn}: its run {:?} ended ({state:?}) without recording it, {attempt} times",
                    r.run_id
                )));
            }
            tracing::warn!(table = %self.spec.name, export = %e.id, run = ?r.run_id, state = ?state, "The export's run ended without recording it: applying it again.");
        };
        if r.already_done.is_some() {
            return Ok(());
        }
        let Some(mine) = applied.iter().find(|a| a.export_arn == arn) else {
            return Ok(());
        };
        let n = |v: i64| u64::try_from(v).unwrap_or(0);
        t.inserted += n(mine.inserted);
        t.updated += n(mine.updated);
        t.deleted += n(mine.deleted);
        t.rejected += n(mine.rejected);
        t.changes += n(mine.changes);
        t.seconds += started.elapsed().as_secs_f64();
        t.changes_per_second = if t.seconds > 0.0 {
            t.changes as f64 / t.seconds
        } else {
            0.0
        };
        t.exports_applied.push(e.id.clone());
        mark_watermark(t, &applied);
        tracing::info!(
            table = %self.spec.name,
            export = %e.id,
            inserted = mine.inserted,
            updated = mine.updated,
            deleted = mine.deleted,
            rejected = mine.rejected,
            seconds = started.elapsed().as_secs_f64(),
            lag_seconds = t.lag_seconds.unwrap_or(0.0),
            "Export applied."
        );
        Ok(())
    }
}

/// The watermark (the latest applied `exportToTime`) and the lag behind now.
fn mark_watermark(t: &mut TableSync, applied: &[AppliedExport]) {
    let Some(last) = applied.iter().max_by_key(|a| a.to_micros) else {
        return;
    };
    t.watermark = Some(last.to.clone());
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
    t.lag_seconds = Some(((now - last.to_micros) as f64 / 1e6).max(0.0));
}

/// Every data file of an export read once, on all cores, before any of it is applied:
/// its MD5 and its item count checked, so a missing or damaged file applies nothing.
async fn check_files(plan: &Arc<ExportPlan>, config: &Config) -> Result<()> {
    let plan = plan.clone();
    let (page_bytes, page_lines) = (config.tuning.page_bytes, config.tuning.batch_rows);
    let threads = config
        .tuning
        .cpu_threads
        .max(1)
        .min(plan.files.len().max(1));
    tokio::task::spawn_blocking(move || {
        let next = AtomicU64::new(0);
        let cancel = AtomicBool::new(false);
        let counted = Arc::new(AtomicU64::new(0));
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| -> Result<()> {
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                            let Some(file) = plan.files.get(i) else {
                                return Ok(());
                            };
                            if let Err(e) =
                                plan.read(file, page_bytes, page_lines, &counted, &cancel, |_| true)
                            {
                                cancel.store(true, Ordering::Relaxed);
                                return Err(e);
                            }
                        }
                    })
                })
                .collect();
            let mut first = Ok(());
            for h in handles {
                let r = h
                    .join()
                    .unwrap_or_else(|_| Err(Error::Internal("a file check panicked".into())));
                if first.is_ok() {
                    first = r;
                }
            }
            first
        })
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))?
}
