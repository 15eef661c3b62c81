//! The load's state in the target database (schema `ddb2pg`, ARCHITECTURE §6): runs,
//! their tables and splits, the committed chunks of each split, and rejects.
//!
//! A chunk of rows and its checkpoint (`ddb2pg.chunks`: which lines of which split it
//! held) commit in one transaction, so after any stop the committed line ranges say
//! exactly what is in the table. Workers claim splits with `FOR UPDATE SKIP LOCKED`; a
//! claim is held by a lease the worker renews, and lapses at once when the worker's
//! connection is gone (a killed process) or when the lease expires (a lost machine).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use crate::config::TableSpec;
use crate::decode::Reject;
use crate::error::{Error, Result};
use crate::sink::postgres::Mode;
use crate::source::{done_prefix, merge_ranges, Resume, SourcePlan};

/// Session advisory lock taken while a run is looked up or planned, so workers starting
/// together agree on one run.
const PLAN_LOCK: i64 = 0x6464_6232_7067_0001;

fn fail(action: &str, e: &tokio_postgres::Error) -> Error {
    Error::pg("ddb2pg state", action, e)
}

/// Creates the state schema and tables when missing. Call with the plan lock held.
///
/// # Errors
/// SQL fails (e.g. no right to create a schema).
pub async fn ensure(c: &Client) -> Result<()> {
    c.batch_execute(
        "CREATE SCHEMA IF NOT EXISTS ddb2pg;
         CREATE TABLE IF NOT EXISTS ddb2pg.runs (
           id bigserial PRIMARY KEY,
           fingerprint text NOT NULL,
           target_schema text NOT NULL,
           mode text NOT NULL,
           tables text[] NOT NULL,
           fk_tables text[] NOT NULL DEFAULT '{}',
           state text NOT NULL DEFAULT 'running',
           started_at timestamptz NOT NULL DEFAULT now(),
           finished_at timestamptz,
           last_error text);
         CREATE TABLE IF NOT EXISTS ddb2pg.run_tables (
           run_id bigint NOT NULL REFERENCES ddb2pg.runs ON DELETE CASCADE,
           target_table text NOT NULL,
           ord int NOT NULL,
           table_oid oid,
           created boolean NOT NULL,
           keys_after boolean NOT NULL,
           splits int NOT NULL,
           expected bigint NOT NULL,
           state text NOT NULL DEFAULT 'loading',
           PRIMARY KEY (run_id, target_table));
         CREATE TABLE IF NOT EXISTS ddb2pg.splits (
           run_id bigint NOT NULL,
           target_table text NOT NULL,
           split int NOT NULL,
           name text NOT NULL,
           state text NOT NULL DEFAULT 'pending',
           worker text,
           holder_pid int,
           holder_start timestamptz,
           lease_until timestamptz,
           rows_done bigint NOT NULL DEFAULT 0,
           rejected bigint NOT NULL DEFAULT 0,
           bytes_done bigint NOT NULL DEFAULT 0,
           chunks int NOT NULL DEFAULT 0,
           claims int NOT NULL DEFAULT 0,
           last_error text,
           updated_at timestamptz,
           PRIMARY KEY (run_id, target_table, split),
           FOREIGN KEY (run_id, target_table) REFERENCES ddb2pg.run_tables ON DELETE CASCADE);
         CREATE TABLE IF NOT EXISTS ddb2pg.chunks (
           run_id bigint NOT NULL,
           target_table text NOT NULL,
           split int NOT NULL,
           first_line bigint NOT NULL,
           last_line bigint NOT NULL,
           rows bigint NOT NULL,
           chunk_id text NOT NULL,
           edge_line bigint,
           edge_key text,
           committed_at timestamptz NOT NULL DEFAULT now(),
           FOREIGN KEY (run_id, target_table, split) REFERENCES ddb2pg.splits ON DELETE CASCADE);
         CREATE INDEX IF NOT EXISTS chunks_split_idx ON ddb2pg.chunks (run_id, target_table, split);
         CREATE INDEX IF NOT EXISTS chunks_id_idx ON ddb2pg.chunks (run_id, chunk_id);
         CREATE TABLE IF NOT EXISTS ddb2pg.rejects (
           target_schema text NOT NULL, target_table text NOT NULL, split text, position bigint,
           key jsonb, attribute text, reason text NOT NULL,
           recorded_at timestamptz NOT NULL DEFAULT now());
         ALTER TABLE ddb2pg.rejects ADD COLUMN IF NOT EXISTS run_id bigint,
           ADD COLUMN IF NOT EXISTS item text;",
    )
    .await
    .map_err(|e| fail("create the ddb2pg state tables", &e))
}

/// Takes the plan lock (waits for another worker planning the same target).
///
/// # Errors
/// SQL fails.
pub async fn lock(c: &Client) -> Result<()> {
    c.execute("SELECT pg_advisory_lock($1)", &[&PLAN_LOCK])
        .await
        .map(|_| ())
        .map_err(|e| fail("take the plan lock", &e))
}

/// Releases the plan lock.
///
/// # Errors
/// SQL fails.
pub async fn unlock(c: &Client) -> Result<()> {
    c.execute("SELECT pg_advisory_unlock($1)", &[&PLAN_LOCK])
        .await
        .map(|_| ())
        .map_err(|e| fail("release the plan lock", &e))
}

/// What makes two loads "the same load": target schema, mode, and per table its mapping
/// and its source (an export's files with their checksums; a live table's name). Tuning
/// (connections, readers) is not part of it, so a resume may use other settings.
#[must_use]
pub fn fingerprint(schema: &str, mode: Mode, tables: &[(&TableSpec, &SourcePlan)]) -> String {
    let mut s = format!("schema={schema}\nmode={mode:?}\n");
    for (spec, source) in tables {
        let _ = writeln!(s, "table={spec:?}");
        match source {
            SourcePlan::Export(e) => {
                for f in &e.files {
                    let _ = writeln!(s, "file={} {} {}", f.key, f.md5, f.item_count);
                }
            }
            SourcePlan::Scan(p) => {
                let _ = writeln!(s, "dynamodb={}", p.table);
            }
        }
    }
    let digest = Md5::digest(s.as_bytes());
    digest.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// A run as recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    pub id: i64,
    pub state: String,
    pub mode: String,
    pub target_schema: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub last_error: Option<String>,
    pub fk_tables: Vec<String>,
}

/// The columns [`run_from`] reads, in its order.
pub const RUN_COLS: &str =
    "id, state, mode, target_schema, started_at::text, finished_at::text, last_error, fk_tables";

/// A run from a row of [`RUN_COLS`].
#[must_use]
pub fn run_from(r: &tokio_postgres::Row) -> Run {
    Run {
        id: r.get(0),
        state: r.get(1),
        mode: r.get(2),
        target_schema: r.get(3),
        started_at: r.get(4),
        finished_at: r.get(5),
        last_error: r.get(6),
        fk_tables: r.get(7),
    }
}

/// The latest run of this fingerprint into `schema` that was not abandoned.
///
/// # Errors
/// SQL fails.
pub async fn latest_run(c: &Client, schema: &str, fingerprint: &str) -> Result<Option<Run>> {
    let rows = c
        .query(
            &format!(
                "SELECT {RUN_COLS} FROM ddb2pg.runs WHERE target_schema = $1 AND fingerprint = $2 \
                 AND state <> 'abandoned' ORDER BY id DESC LIMIT 1"
            ),
            &[&schema, &fingerprint],
        )
        .await
        .map_err(|e| fail("look up the last run", &e))?;
    Ok(rows.first().map(run_from))
}

/// Whether this database holds any load state (`ddb2pg.runs`).
///
/// # Errors
/// SQL fails.
pub async fn recorded(c: &Client) -> Result<bool> {
    c.query_one("SELECT to_regclass('ddb2pg.runs') IS NOT NULL", &[])
        .await
        .map(|r| r.get(0))
        .map_err(|e| fail("look for ddb2pg.runs", &e))
}

/// The latest run into `schema`, whatever its config.
///
/// # Errors
/// SQL fails.
pub async fn latest_run_any(c: &Client, schema: &str) -> Result<Option<Run>> {
    if !recorded(c).await? {
        return Ok(None);
    }
    let rows = c
        .query(
            &format!("SELECT {RUN_COLS} FROM ddb2pg.runs WHERE target_schema = $1 ORDER BY id DESC LIMIT 1"),
            &[&schema],
        )
        .await
        .map_err(|e| fail("look up the last run", &e))?;
    Ok(rows.first().map(run_from))
}

/// A table of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunTable {
    pub name: String,
    pub created: bool,
    pub keys_after: bool,
    pub splits: i32,
    pub expected: i64,
    pub state: String,
    pub table_oid: Option<u32>,
}

/// The tables of a run, in load order.
///
/// # Errors
/// SQL fails.
pub async fn run_tables(c: &Client, run: i64) -> Result<Vec<RunTable>> {
    let rows = c
        .query(
            "SELECT target_table, created, keys_after, splits, expected, state, table_oid \
             FROM ddb2pg.run_tables WHERE run_id = $1 ORDER BY ord",
            &[&run],
        )
        .await
        .map_err(|e| fail("read the run's tables", &e))?;
    Ok(rows
        .iter()
        .map(|r| RunTable {
            name: r.get(0),
            created: r.get(1),
            keys_after: r.get(2),
            splits: r.get(3),
            expected: r.get(4),
            state: r.get(5),
            table_oid: r.get(6),
        })
        .collect())
}

/// The OID of `schema.table` now, if it exists.
///
/// # Errors
/// SQL fails.
pub async fn table_oid(c: &Client, schema: &str, table: &str) -> Result<Option<u32>> {
    let q = crate::sink::postgres::qualified(schema, table);
    let r = c
        .query_one("SELECT to_regclass($1)::oid", &[&q])
        .await
        .map_err(|e| fail("look up a table", &e))?;
    Ok(r.get(0))
}

/// Whether every table of the run is still the one the run loaded (not dropped or
/// recreated since).
///
/// # Errors
/// SQL fails.
pub async fn tables_intact(c: &Client, schema: &str, tables: &[RunTable]) -> Result<bool> {
    for t in tables {
        if table_oid(c, schema, &t.name).await? != t.table_oid {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Marks a run abandoned (`--fresh`, or its tables changed under it).
///
/// # Errors
/// SQL fails.
pub async fn abandon(c: &Client, run: i64) -> Result<()> {
    c.execute(
        "UPDATE ddb2pg.runs SET state = 'abandoned', finished_at = now() WHERE id = $1",
        &[&run],
    )
    .await
    .map(|_| ())
    .map_err(|e| fail("abandon the old run", &e))
}

/// Unfinished runs into `schema` that load `table` (other than `except`): (run, whether
/// it created the table that is there now).
///
/// # Errors
/// SQL fails.
pub async fn unfinished_runs_of(
    c: &Client,
    schema: &str,
    table: &str,
    except: i64,
) -> Result<Vec<(i64, bool)>> {
    let q = crate::sink::postgres::qualified(schema, table);
    let rows = c
        .query(
            "SELECT r.id, rt.created AND rt.table_oid = to_regclass($3)::oid \
             FROM ddb2pg.runs r JOIN ddb2pg.run_tables rt ON rt.run_id = r.id \
             WHERE r.target_schema = $1 AND rt.target_table = $2 AND r.state = 'running' AND r.id <> $4",
            &[&schema, &table, &q, &except],
        )
        .await
        .map_err(|e| fail("look up unfinished runs", &e))?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get::<_, Option<bool>>(1).unwrap_or(false)))
        .collect())
}

/// Records a new run (inside the caller's transaction).
///
/// # Errors
/// SQL fails.
pub async fn create_run(
    c: &Client,
    fingerprint: &str,
    schema: &str,
    mode: Mode,
    tables: &[String],
) -> Result<i64> {
    let mode = format!("{mode:?}").to_lowercase();
    c.query_one(
        "INSERT INTO ddb2pg.runs (fingerprint, target_schema, mode, tables) VALUES ($1, $2, $3, $4) RETURNING id",
        &[&fingerprint, &schema, &mode, &tables],
    )
    .await
    .map(|r| r.get(0))
    .map_err(|e| fail("record the run", &e))
}

/// Records a table of a new run and its splits (inside the caller's transaction).
///
/// # Errors
/// SQL fails.
#[allow(clippy::too_many_arguments)]
pub async fn add_table(
    c: &Client,
    run: i64,
    ord: i32,
    table: &str,
    oid: Option<u32>,
    created: bool,
    keys_after: bool,
    expected: u64,
    split_names: &[String],
) -> Result<()> {
    let splits = i32::try_from(split_names.len()).unwrap_or(i32::MAX);
    let expected = i64::try_from(expected).unwrap_or(i64::MAX);
    c.execute(
        "INSERT INTO ddb2pg.run_tables (run_id, target_table, ord, table_oid, created, keys_after, splits, expected) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[&run, &table, &ord, &oid, &created, &keys_after, &splits, &expected],
    )
    .await
    .map_err(|e| fail("record the run's table", &e))?;
    let idx: Vec<i32> = (0..splits).collect();
    c.execute(
        "INSERT INTO ddb2pg.splits (run_id, target_table, split, name) \
         SELECT $1, $2, i, n FROM unnest($3::int[], $4::text[]) AS u(i, n)",
        &[&run, &table, &idx, &split_names],
    )
    .await
    .map_err(|e| fail("record the run's splits", &e))?;
    Ok(())
}

/// Records the fk tables of a new run: tables outside it whose foreign keys a replace took
/// off, put back when the run ends.
///
/// # Errors
/// SQL fails.
pub async fn set_fk_tables(c: &Client, run: i64, tables: &[String]) -> Result<()> {
    c.execute(
        "UPDATE ddb2pg.runs SET fk_tables = $2 WHERE id = $1",
        &[&run, &tables],
    )
    .await
    .map(|_| ())
    .map_err(|e| fail("record the run's foreign-key tables", &e))
}

/// Where one worker stands in one run.
#[derive(Debug, Clone)]
pub struct Worker {
    pub run: i64,
    /// `host:pid:nonce`, unique per process.
    pub id: String,
    pub lease: Duration,
}

impl Worker {
    /// A worker id for this process.
    #[must_use]
    pub fn new(run: i64, lease: Duration) -> Worker {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "host".into());
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Worker {
            run,
            id: format!("{host}:{}:{nonce:08x}", std::process::id()),
            lease,
        }
    }

    fn lease_secs(&self) -> f64 {
        self.lease.as_secs_f64()
    }

    /// Claims the next split of `table` nobody holds: pending, or held by a worker whose
    /// connection is gone or whose lease ran out. Returns it with what is already done.
    /// Call it on this worker's control connection: its backend identifies the holder.
    ///
    /// # Errors
    /// SQL fails.
    pub async fn claim(&self, c: &Client, table: &str) -> Result<Option<(u32, Resume)>> {
        let row = c
            .query_opt(
                "UPDATE ddb2pg.splits s SET state = 'running', worker = $3, holder_pid = pg_backend_pid(), \
                   holder_start = (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()), \
                   lease_until = now() + make_interval(secs => $4), claims = s.claims + 1, updated_at = now() \
                 WHERE (s.run_id, s.target_table, s.split) = ( \
                   SELECT c.run_id, c.target_table, c.split FROM ddb2pg.splits c \
                   WHERE c.run_id = $1 AND c.target_table = $2 AND (c.state = 'pending' OR (c.state = 'running' \
                     AND (c.lease_until < now() OR NOT EXISTS (SELECT 1 FROM pg_stat_activity a \
                       WHERE a.pid = c.holder_pid AND a.backend_start = c.holder_start)))) \
                   ORDER BY c.split LIMIT 1 FOR UPDATE SKIP LOCKED) \
                 RETURNING s.split",
                &[&self.run, &table, &self.id, &self.lease_secs()],
            )
            .await
            .map_err(|e| fail("claim a split", &e))?;
        let Some(row) = row else { return Ok(None) };
        let split: i32 = row.get(0);
        let chunks = c
            .query(
                "SELECT first_line, last_line, edge_line, edge_key FROM ddb2pg.chunks \
                 WHERE run_id = $1 AND target_table = $2 AND split = $3",
                &[&self.run, &table, &split],
            )
            .await
            .map_err(|e| fail("read a split's chunks", &e))?;
        let done = merge_ranges(
            chunks
                .iter()
                .map(|r| {
                    let a: i64 = r.get(0);
                    let b: i64 = r.get(1);
                    (a.max(0) as u64, b.max(0) as u64)
                })
                .collect(),
        );
        let prefix = done_prefix(&done);
        let start = chunks
            .iter()
            .filter_map(|r| {
                let line: Option<i64> = r.get(2);
                let key: Option<String> = r.get(3);
                Some((line?.max(0) as u64, key?))
            })
            .filter(|(line, _)| *line <= prefix)
            .max_by_key(|(line, _)| *line);
        Ok(Some((
            u32::try_from(split).unwrap_or(0),
            Resume { done, start },
        )))
    }

    /// Renews the lease of every split this worker holds.
    ///
    /// # Errors
    /// SQL fails.
    pub async fn renew(&self, c: &Client) -> Result<()> {
        c.execute(
            "UPDATE ddb2pg.splits SET lease_until = now() + make_interval(secs => $3) \
             WHERE run_id = $1 AND worker = $2 AND state = 'running'",
            &[&self.run, &self.id, &self.lease_secs()],
        )
        .await
        .map(|_| ())
        .map_err(|e| fail("renew the lease", &e))
    }

    /// Marks a split done (every line of it committed).
    ///
    /// # Errors
    /// The split was taken over by another worker, or SQL fails.
    pub async fn split_done(&self, c: &Client, table: &str, split: u32) -> Result<()> {
        let split = split as i32;
        let n = c
            .execute(
                "UPDATE ddb2pg.splits SET state = 'done', lease_until = NULL, last_error = NULL, updated_at = now() \
                 WHERE run_id = $1 AND target_table = $2 AND split = $3 AND worker = $4 AND state = 'running'",
                &[&self.run, &table, &split, &self.id],
            )
            .await
            .map_err(|e| fail("mark a split done", &e))?;
        if n == 0 {
            return Err(lost(table, split));
        }
        Ok(())
    }

    /// Gives back the splits this worker holds of `table` after a failure, with the error.
    pub async fn release(&self, c: &Client, table: &str, error: &str) {
        let r = c
            .execute(
                "UPDATE ddb2pg.splits SET state = 'pending', worker = NULL, holder_pid = NULL, lease_until = NULL, \
                   last_error = $4, updated_at = now() \
                 WHERE run_id = $1 AND target_table = $2 AND worker = $3 AND state = 'running'",
                &[&self.run, &table, &self.id, &error],
            )
            .await;
        let r2 = c
            .execute(
                "UPDATE ddb2pg.runs SET last_error = $2 WHERE id = $1",
                &[&self.run, &error],
            )
            .await;
        if let Err(e) = r.and(r2) {
            tracing::warn!(error = %crate::error::pg_reason(&e), "Could not record the failure in ddb2pg.splits.");
        }
    }

    /// Records a chunk's checkpoint inside the chunk's transaction on connection `c`:
    /// its line ranges, the splits' counters and lease, and its rejects. Fails (and the
    /// caller rolls back) if any of its splits is no longer this worker's.
    ///
    /// # Errors
    /// Lost ownership, or SQL fails.
    pub async fn checkpoint(
        &self,
        c: &Client,
        schema: &str,
        table: &str,
        chunk_id: &str,
        pieces: &[&PieceMark],
        split_names: &[String],
    ) -> Result<()> {
        // Per split: rows, rejects, bytes — in split order, the order rows get locked.
        let mut per: BTreeMap<u32, (i64, i64, i64)> = BTreeMap::new();
        for p in pieces {
            let e = per.entry(p.split).or_default();
            e.0 += p.rows as i64;
            e.1 += p.rejects.len() as i64;
            e.2 += p.bytes as i64;
        }
        let splits: Vec<i32> = per.keys().map(|&s| s as i32).collect();
        let locked = c
            .query(
                "SELECT split FROM ddb2pg.splits WHERE run_id = $1 AND target_table = $2 AND split = ANY($3) \
                 AND worker = $4 AND state = 'running' ORDER BY split FOR UPDATE",
                &[&self.run, &table, &splits, &self.id],
            )
            .await
            .map_err(|e| Error::pg(table, "lock the chunk's splits", &e))?;
        if locked.len() != splits.len() {
            let mine: Vec<i32> = locked.iter().map(|r| r.get(0)).collect();
            let gone = splits
                .iter()
                .copied()
                .find(|s| !mine.contains(s))
                .unwrap_or(0);
            return Err(lost(table, gone));
        }
        let rows: Vec<i64> = per.values().map(|v| v.0).collect();
        let rej: Vec<i64> = per.values().map(|v| v.1).collect();
        let bytes: Vec<i64> = per.values().map(|v| v.2).collect();
        c.execute(
            "UPDATE ddb2pg.splits s SET rows_done = s.rows_done + u.r, rejected = s.rejected + u.j, \
               bytes_done = s.bytes_done + u.b, chunks = s.chunks + 1, \
               lease_until = now() + make_interval(secs => $7), updated_at = now() \
             FROM unnest($3::int[], $4::int8[], $5::int8[], $6::int8[]) AS u(split, r, j, b) \
             WHERE s.run_id = $1 AND s.target_table = $2 AND s.split = u.split",
            &[&self.run, &table, &splits, &rows, &rej, &bytes, &self.lease_secs()],
        )
        .await
        .map_err(|e| Error::pg(table, "update the chunk's splits", &e))?;
        // Ranges, adjacent pieces of a split merged.
        let mut ranges: Vec<Range> = Vec::new();
        let mut sorted: Vec<&PieceMark> = pieces.to_vec();
        sorted.sort_by_key(|p| (p.split, p.first_line));
        for p in sorted {
            let edge = p.edge.as_ref().map(|e| (p.last_line, e.to_string()));
            match ranges.last_mut() {
                Some(r) if r.0 == p.split && r.2 + 1 == p.first_line => {
                    r.2 = p.last_line;
                    r.3 += p.rows;
                    if edge.is_some() {
                        r.4 = edge;
                    }
                }
                _ => ranges.push((p.split, p.first_line, p.last_line, p.rows, edge)),
            }
        }
        let r_split: Vec<i32> = ranges.iter().map(|r| r.0 as i32).collect();
        let r_first: Vec<i64> = ranges.iter().map(|r| r.1 as i64).collect();
        let r_last: Vec<i64> = ranges.iter().map(|r| r.2 as i64).collect();
        let r_rows: Vec<i64> = ranges.iter().map(|r| r.3 as i64).collect();
        let r_eline: Vec<Option<i64>> = ranges
            .iter()
            .map(|r| r.4.as_ref().map(|e| e.0 as i64))
            .collect();
        let r_ekey: Vec<Option<String>> = ranges
            .iter()
            .map(|r| r.4.as_ref().map(|e| e.1.clone()))
            .collect();
        c.execute(
            "INSERT INTO ddb2pg.chunks (run_id, target_table, split, first_line, last_line, rows, chunk_id, edge_line, edge_key) \
             SELECT $1, $2, s, f, l, r, $3, el, ek \
             FROM unnest($4::int[], $5::int8[], $6::int8[], $7::int8[], $8::int8[], $9::text[]) AS u(s, f, l, r, el, ek)",
            &[&self.run, &table, &chunk_id, &r_split, &r_first, &r_last, &r_rows, &r_eline, &r_ekey],
        )
        .await
        .map_err(|e| Error::pg(table, "record the chunk", &e))?;
        let rejects: Vec<(&String, &Reject)> = pieces
            .iter()
            .flat_map(|p| {
                let name = split_names.get(p.split as usize);
                p.rejects.iter().filter_map(move |r| Some((name?, r)))
            })
            .collect();
        if !rejects.is_empty() {
            let split: Vec<&str> = rejects.iter().map(|r| r.0.as_str()).collect();
            let pos: Vec<i64> = rejects.iter().map(|r| r.1.line as i64).collect();
            let key: Vec<Option<&str>> = rejects.iter().map(|r| r.1.key.as_deref()).collect();
            let attr: Vec<Option<&str>> =
                rejects.iter().map(|r| r.1.attribute.as_deref()).collect();
            let reason: Vec<&str> = rejects.iter().map(|r| r.1.reason.as_str()).collect();
            let item: Vec<&str> = rejects.iter().map(|r| r.1.item.as_str()).collect();
            c.execute(
                "INSERT INTO ddb2pg.rejects (run_id, target_schema, target_table, split, position, key, attribute, reason, item) \
                 SELECT $1, $2, $3, s, p, k::jsonb, a, r, i \
                 FROM unnest($4::text[], $5::int8[], $6::text[], $7::text[], $8::text[], $9::text[]) AS u(s, p, k, a, r, i)",
                &[&self.run, &schema, &table, &split, &pos, &key, &attr, &reason, &item],
            )
            .await
            .map_err(|e| Error::pg(table, "record the chunk's rejects", &e))?;
        }
        Ok(())
    }

    /// Whether a chunk committed (after its COMMIT's answer was lost with the connection).
    ///
    /// # Errors
    /// SQL fails.
    pub async fn chunk_committed(&self, c: &Client, chunk_id: &str) -> Result<bool> {
        c.query_one(
            "SELECT EXISTS (SELECT 1 FROM ddb2pg.chunks WHERE run_id = $1 AND chunk_id = $2)",
            &[&self.run, &chunk_id],
        )
        .await
        .map(|r| r.get(0))
        .map_err(|e| Error::pg("ddb2pg state", "check whether a chunk committed", &e))
    }
}

fn lost(table: &str, split: i32) -> Error {
    Error::Source {
        source_name: format!("table {table}, split {split}"),
        reason: "another worker took this split over (this worker's lease ran out); nothing of the chunk was committed: re-run to go on".into(),
    }
}

/// A checkpoint row: split, first and last line, rows, and a scan position after it.
type Range = (u32, u64, u64, u64, Option<(u64, String)>);

/// What a chunk's checkpoint needs to know about one of its pieces (one page).
#[derive(Debug, Clone)]
pub struct PieceMark {
    pub split: u32,
    pub first_line: u64,
    pub last_line: u64,
    pub rows: u64,
    pub bytes: u64,
    /// A scan's position after `last_line`.
    pub edge: Option<std::sync::Arc<str>>,
    pub rejects: Vec<Reject>,
}

/// Split counts of a table in a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SplitCounts {
    pub done: i64,
    pub running: i64,
    pub pending: i64,
    pub rows: i64,
    pub rejected: i64,
    pub bytes: i64,
    /// Running splits whose holder is gone or whose lease ran out: claimable now.
    pub stale: i64,
}

/// Counts a table's splits by state.
///
/// # Errors
/// SQL fails.
pub async fn split_counts(c: &Client, run: i64, table: &str) -> Result<SplitCounts> {
    let r = c
        .query_one(
            "SELECT count(*) FILTER (WHERE state = 'done'), count(*) FILTER (WHERE state = 'running'), \
               count(*) FILTER (WHERE state = 'pending'), coalesce(sum(rows_done), 0)::int8, \
               coalesce(sum(rejected), 0)::int8, coalesce(sum(bytes_done), 0)::int8, \
               count(*) FILTER (WHERE state = 'running' AND (lease_until < now() OR NOT EXISTS ( \
                 SELECT 1 FROM pg_stat_activity a WHERE a.pid = s.holder_pid AND a.backend_start = s.holder_start)))
             FROM ddb2pg.splits s WHERE run_id = $1 AND target_table = $2",
            &[&run, &table],
        )
        .await
        .map_err(|e| fail("count splits", &e))?;
    Ok(SplitCounts {
        done: r.get(0),
        running: r.get(1),
        pending: r.get(2),
        rows: r.get(3),
        rejected: r.get(4),
        bytes: r.get(5),
        stale: r.get(6),
    })
}

/// One split as `status` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SplitStatus {
    pub split: i32,
    pub name: String,
    pub state: String,
    pub worker: Option<String>,
    pub lease_until: Option<String>,
    pub rows: i64,
    pub rejected: i64,
    pub chunks: i32,
    pub claims: i32,
    pub last_error: Option<String>,
}

/// The splits of a table, for `status`.
///
/// # Errors
/// SQL fails.
pub async fn splits(c: &Client, run: i64, table: &str) -> Result<Vec<SplitStatus>> {
    let rows = c
        .query(
            "SELECT split, name, state, worker, lease_until::text, rows_done, rejected, chunks, claims, last_error \
             FROM ddb2pg.splits WHERE run_id = $1 AND target_table = $2 ORDER BY split",
            &[&run, &table],
        )
        .await
        .map_err(|e| fail("read splits", &e))?;
    Ok(rows
        .iter()
        .map(|r| SplitStatus {
            split: r.get(0),
            name: r.get(1),
            state: r.get(2),
            worker: r.get(3),
            lease_until: r.get(4),
            rows: r.get(5),
            rejected: r.get(6),
            chunks: r.get(7),
            claims: r.get(8),
            last_error: r.get(9),
        })
        .collect())
}

/// Sets a table's state (`loading` → `loaded` once keys and indexes are built).
///
/// # Errors
/// SQL fails.
pub async fn set_table_state(
    c: &Client,
    run: i64,
    table: &str,
    state: &str,
    oid: Option<u32>,
) -> Result<()> {
    c.execute(
        "UPDATE ddb2pg.run_tables SET state = $3, table_oid = coalesce($4, table_oid) WHERE run_id = $1 AND target_table = $2",
        &[&run, &table, &state, &oid],
    )
    .await
    .map(|_| ())
    .map_err(|e| fail("record a table's state", &e))
}

/// Locks a table's row of the run for its finishing steps; `None` when another worker
/// holds it (it is finishing the table) — returns the state otherwise.
///
/// # Errors
/// SQL fails.
pub async fn lock_table(c: &Client, run: i64, table: &str) -> Result<Option<String>> {
    c.query_opt(
        "SELECT state FROM ddb2pg.run_tables WHERE run_id = $1 AND target_table = $2 FOR UPDATE SKIP LOCKED",
        &[&run, &table],
    )
    .await
    .map(|r| r.map(|r| r.get(0)))
    .map_err(|e| fail("lock a table of the run", &e))
}

/// Locks the run's row for its finishing steps; `None` when another worker holds it.
///
/// # Errors
/// SQL fails.
pub async fn lock_run(c: &Client, run: i64) -> Result<Option<String>> {
    c.query_opt(
        "SELECT state FROM ddb2pg.runs WHERE id = $1 FOR UPDATE SKIP LOCKED",
        &[&run],
    )
    .await
    .map(|r| r.map(|r| r.get(0)))
    .map_err(|e| fail("lock the run", &e))
}

/// Marks the run done.
///
/// # Errors
/// SQL fails.
pub async fn finish_run(c: &Client, run: i64) -> Result<()> {
    c.execute(
        "UPDATE ddb2pg.runs SET state = 'done', finished_at = now(), last_error = NULL WHERE id = $1",
        &[&run],
    )
    .await
    .map(|_| ())
    .map_err(|e| fail("mark the run done", &e))
}

/// Deletes the recorded rejects of a table (a new run that is not an append).
///
/// # Errors
/// SQL fails.
pub async fn clear_rejects(c: &Client, schema: &str, table: &str) -> Result<()> {
    c.execute(
        "DELETE FROM ddb2pg.rejects WHERE target_schema = $1 AND target_table = $2",
        &[&schema, &table],
    )
    .await
    .map(|_| ())
    .map_err(|e| fail("clear old rejects", &e))
}
