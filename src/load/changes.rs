//! A sync's records in the `ddb2pg` schema: the load a table's changes follow (its run
//! and baseline), and the incremental exports applied to it, each recorded in the
//! transaction that ends its run, so an export is applied once, whole, or not at all.
//!
//! Input: the state connection. Output: what `sync`, `verify` and `status` ask.

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use super::input::SyncMark;
use super::state::{self, fail, RunState};
use crate::error::Result;

/// The load a table's changes follow.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BaseLoad {
    pub run: i64,
    pub state: RunState,
    pub mode: String,
    /// RFC 3339, and as microseconds since 1970 (`None`: a load recorded before baselines were).
    pub baseline: Option<String>,
    pub baseline_micros: Option<i64>,
    pub table_arn: Option<String>,
    pub table_id: Option<String>,
}

/// The latest load (not a sync) of `schema.table`, found by the table's identity (a
/// promoted table keeps its load).
///
/// # Errors
/// SQL fails.
pub async fn base_load(c: &Client, schema: &str, table: &str) -> Result<Option<BaseLoad>> {
    if !state::recorded(c).await? {
        return Ok(None);
    }
    let q = crate::sink::qualified(schema, table);
    let row = c
        .query_opt(
            "SELECT r.id, r.state, r.mode, \
               to_char(rt.baseline_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
               (extract(epoch FROM rt.baseline_at) * 1000000)::int8, rt.table_arn, rt.table_id \
             FROM ddb2pg.run_tables rt JOIN ddb2pg.runs r ON r.id = rt.run_id \
             WHERE rt.table_oid = to_regclass($1)::oid AND r.mode <> 'sync' AND r.state <> 'abandoned' \
             ORDER BY r.id DESC LIMIT 1",
            &[&q],
        )
        .await
        .map_err(|e| fail("look up the table's load", &e))?;
    row.map(|r| {
        Ok(BaseLoad {
            run: r.get(0),
            state: r.get::<_, String>(1).parse()?,
            mode: r.get(2),
            baseline: r.get(3),
            baseline_micros: r.get(4),
            table_arn: r.get(5),
            table_id: r.get(6),
        })
    })
    .transpose()
}

/// Whether `ddb2pg.sync_exports` exists (a database a sync never touched has none).
async fn synced(c: &Client) -> Result<bool> {
    c.query_one("SELECT to_regclass('ddb2pg.sync_exports') IS NOT NULL", &[])
        .await
        .map(|r| r.get(0))
        .map_err(|e| fail("look for ddb2pg.sync_exports", &e))
}

/// One incremental export applied to a table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppliedExport {
    pub export_arn: String,
    pub location: String,
    pub from: String,
    pub to: String,
    pub to_micros: i64,
    pub run: i64,
    pub inserted: i64,
    pub updated: i64,
    pub deleted: i64,
    pub rejected: i64,
    pub changes: i64,
    pub applied_at: String,
}

/// The exports applied to `table` after load `base_run`, in the order they were applied.
///
/// # Errors
/// SQL fails.
pub async fn applied_exports(c: &Client, base_run: i64, table: &str) -> Result<Vec<AppliedExport>> {
    if !synced(c).await? {
        return Ok(Vec::new());
    }
    let ts = |col: &str| {
        format!("to_char({col} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
    };
    let rows = c
        .query(
            &format!(
                "SELECT export_arn, location, {}, {}, (extract(epoch FROM to_time) * 1000000)::int8, run_id, \
                   inserted, updated, deleted, rejected, changes, {} \
                 FROM ddb2pg.sync_exports WHERE base_run = $1 AND target_table = $2 ORDER BY run_id",
                ts("from_time"),
                ts("to_time"),
                ts("applied_at")
            ),
            &[&base_run, &table],
        )
        .await
        .map_err(|e| fail("read the applied exports", &e))?;
    Ok(rows
        .iter()
        .map(|r| AppliedExport {
            export_arn: r.get(0),
            location: r.get(1),
            from: r.get(2),
            to: r.get(3),
            to_micros: r.get(4),
            run: r.get(5),
            inserted: r.get(6),
            updated: r.get(7),
            deleted: r.get(8),
            rejected: r.get(9),
            changes: r.get(10),
            applied_at: r.get(11),
        })
        .collect())
}

/// Records `mark`'s export as applied to `table` by `run`, with the run's counts (inside
/// the transaction that ends the run).
///
/// # Errors
/// SQL fails (an export recorded twice for one load is a broken invariant).
pub async fn record_applied(
    c: &Client,
    run: i64,
    schema: &str,
    table: &str,
    mark: &SyncMark,
) -> Result<()> {
    c.execute(
        "INSERT INTO ddb2pg.sync_exports (base_run, target_schema, target_table, export_arn, location, \
           from_time, to_time, run_id, inserted, updated, deleted, rejected, changes) \
         SELECT $1, $2, $3, $4, $5, $6::text::timestamptz, $7::text::timestamptz, $8, \
           COALESCE(sum(inserted), 0)::int8, COALESCE(sum(updated), 0)::int8, COALESCE(sum(deleted), 0)::int8, \
           COALESCE(sum(rejected), 0)::int8, COALESCE(sum(rows_done + rejected), 0)::int8 \
         FROM ddb2pg.splits WHERE run_id = $8 AND target_table = $3",
        &[
            &mark.base_run,
            &schema,
            &table,
            &mark.export_arn,
            &mark.location,
            &mark.from,
            &mark.to,
            &run,
        ],
    )
    .await
    .map(|_| ())
    .map_err(|e| fail("record the applied export", &e))
}

/// A table's changes applied since its load, as `status` shows them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncSummary {
    pub table: String,
    pub base_run: i64,
    pub exports: i64,
    pub inserted: i64,
    pub updated: i64,
    pub deleted: i64,
    pub rejected: i64,
    /// The last applied `exportToTime` (RFC 3339), and now minus it.
    pub watermark: String,
    pub lag_seconds: f64,
    pub last_applied_at: String,
}

/// Per table of `schema`, the changes applied after its latest load.
///
/// # Errors
/// SQL fails.
pub async fn sync_summary(c: &Client, schema: &str) -> Result<Vec<SyncSummary>> {
    if !synced(c).await? {
        return Ok(Vec::new());
    }
    let rows = c
        .query(
            "SELECT DISTINCT ON (target_table) target_table, base_run, count(*) OVER w, \
               (sum(inserted) OVER w)::int8, (sum(updated) OVER w)::int8, (sum(deleted) OVER w)::int8, \
               (sum(rejected) OVER w)::int8, \
               to_char(max(to_time) OVER w AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
               extract(epoch FROM now() - max(to_time) OVER w)::float8, \
               to_char(max(applied_at) OVER w AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') \
             FROM ddb2pg.sync_exports WHERE target_schema = $1 \
             WINDOW w AS (PARTITION BY target_table, base_run) \
             ORDER BY target_table, base_run DESC",
            &[&schema],
        )
        .await
        .map_err(|e| fail("read the applied changes", &e))?;
    Ok(rows
        .iter()
        .map(|r| SyncSummary {
            table: r.get(0),
            base_run: r.get(1),
            exports: r.get(2),
            inserted: r.get(3),
            updated: r.get(4),
            deleted: r.get(5),
            rejected: r.get(6),
            watermark: r.get(7),
            lag_seconds: r.get::<_, f64>(8).max(0.0),
            last_applied_at: r.get(9),
        })
        .collect())
}
