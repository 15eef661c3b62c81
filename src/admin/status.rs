//! `ddb2pg status`: where a load stands, read from the target's `ddb2pg` schema — the run,
//! and per table its splits done / running / pending, rows, rejects and the last error.

use std::fmt::Write as _;

use serde::Serialize;
use tokio_postgres::Client;

use crate::error::Result;
use crate::load::changes::{sync_summary, SyncSummary};
use crate::load::state::{self, Run, RunTable, SplitCounts, SplitState, SplitStatus};

/// One run as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub run: Run,
    pub tables: Vec<TableStatus>,
    /// Per table of the schema, the changes `sync` applied after its load.
    pub sync: Vec<SyncSummary>,
}

/// One table of the run.
#[derive(Debug, Clone, Serialize)]
pub struct TableStatus {
    pub table: RunTable,
    pub counts: SplitCounts,
    pub splits: Vec<SplitStatus>,
}

/// Reads the latest run into `schema` (or run `run`), or `None` when there is none.
///
/// # Errors
/// SQL fails.
pub async fn status(c: &Client, schema: &str, run: Option<i64>) -> Result<Option<Status>> {
    let run = match run {
        None => state::latest_run_any(c, schema).await?,
        Some(id) => state::run_by_id(c, id).await?,
    };
    let Some(run) = run else { return Ok(None) };
    let mut tables = Vec::new();
    for t in state::run_tables(c, run.id).await? {
        let counts = state::split_counts(c, run.id, &t.name).await?;
        let splits = state::splits(c, run.id, &t.name).await?;
        tables.push(TableStatus {
            table: t,
            counts,
            splits,
        });
    }
    let sync = sync_summary(c, &run.target_schema).await?;
    Ok(Some(Status { run, tables, sync }))
}

/// The human-readable form: a line for the run, a table of tables, then the splits that
/// are not done (all with `all`).
#[must_use]
pub fn render(s: &Status, all: bool) -> String {
    let mut out = String::new();
    let r = &s.run;
    let _ = writeln!(
        out,
        "run {} ({}, schema {}): {}, started {}{}",
        r.id,
        r.mode,
        r.target_schema,
        r.state,
        r.started_at,
        r.finished_at
            .as_ref()
            .map_or_else(String::new, |f| format!(", ended {f}"))
    );
    if let Some(e) = &r.last_error {
        let _ = writeln!(out, "last error: {e}");
    }
    let _ = writeln!(
        out,
        "{:<20} {:>6} {:>8} {:>8} {:>8} {:>12} {:>9}  state",
        "table", "splits", "done", "running", "pending", "rows", "rejected"
    );
    for t in &s.tables {
        let c = &t.counts;
        let _ = writeln!(
            out,
            "{:<20} {:>6} {:>8} {:>8} {:>8} {:>12} {:>9}  {}",
            t.table.name,
            t.table.splits,
            c.done,
            c.running,
            c.pending,
            c.rows,
            c.rejected,
            t.table.state
        );
    }
    if !s.sync.is_empty() {
        let _ = writeln!(
            out,
            "changes applied by sync:\n{:<20} {:>8} {:>10} {:>10} {:>10} {:>9} {:>28} {:>10}",
            "table", "exports", "inserted", "updated", "deleted", "rejected", "watermark", "lag s"
        );
        for t in &s.sync {
            let _ = writeln!(
                out,
                "{:<20} {:>8} {:>10} {:>10} {:>10} {:>9} {:>28} {:>10.0}",
                t.table,
                t.exports,
                t.inserted,
                t.updated,
                t.deleted,
                t.rejected,
                t.watermark,
                t.lag_seconds
            );
        }
    }
    for t in &s.tables {
        for sp in t
            .splits
            .iter()
            .filter(|sp| all || sp.state != SplitState::Done || sp.last_error.is_some())
        {
            let _ = write!(
                out,
                "  {}: {} {}: {} rows, {} chunks",
                t.table.name, sp.state, sp.name, sp.rows, sp.chunks
            );
            if let Some(w) = &sp.worker {
                if sp.state == SplitState::Running {
                    let _ = write!(
                        out,
                        ", worker {w}, lease until {}",
                        sp.lease_until.as_deref().unwrap_or("?")
                    );
                }
            }
            if let Some(e) = &sp.last_error {
                let _ = write!(out, "; last error: {e}");
            }
            out.push('\n');
        }
    }
    out
}
