//! The load's state in the target database (schema `ddb2pg`, ARCHITECTURE §6): runs,
//! their tables and splits, the committed chunks of each split, and rejects.
//!
//! A chunk of rows and its checkpoint (`ddb2pg.chunks`: which lines of which split it
//! held) commit in one transaction, so after any stop the committed line ranges say
//! exactly what is in the table.
//!
//! This file holds the schema, the stored states and the run's records; a worker's claims
//! (`FOR UPDATE SKIP LOCKED`, leases) and checkpoints are in [`super::claim`]. (About 670 lines: one SQL function per
//! question the load and `status` ask of those tables.)

use std::fmt::Write as _;

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use crate::config::TableSpec;
use crate::error::{Error, Result};
use crate::sink::Mode;
use crate::source::SourcePlan;

/// Defines a state stored as text in the `ddb2pg` schema: an enum with `as_str`,
/// `FromStr` and `Display`, serialised as its stored text.
macro_rules! stored_state {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// The text stored in the `ddb2pg` schema.
            #[must_use]
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = Error;

            fn from_str(s: &str) -> Result<Self> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(Error::Internal(format!(
                        "ddb2pg state: unknown {} `{other}`",
                        stringify!($name)
                    ))),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

stored_state! {
    /// Where a run stands.
    RunState {
        /// Its tables are being loaded (or it stopped and waits for a re-run).
        Running = "running",
        /// Every table, key, index and foreign key is in.
        Done = "done",
        /// Left for a new run (`--fresh`, another load into its tables, tables recreated).
        Abandoned = "abandoned",
    }
}

stored_state! {
    /// Where a table of a run stands.
    TableState {
        /// Its splits are being loaded.
        Loading = "loading",
        /// Every split is in and its keys and indexes are built.
        Loaded = "loaded",
    }
}

stored_state! {
    /// Where a split stands.
    SplitState {
        /// Nobody holds it.
        Pending = "pending",
        /// A worker holds it (it may be gone: see the lease).
        Running = "running",
        /// Every line is committed.
        Done = "done",
    }
}

/// A stored state read from a row.
fn state_at<T: std::str::FromStr<Err = Error>>(r: &tokio_postgres::Row, i: usize) -> Result<T> {
    r.get::<_, String>(i).parse()
}

/// Session advisory lock taken while a run is looked up or planned, so workers starting
/// together agree on one run.
const PLAN_LOCK: i64 = 0x6464_6232_7067_0001;

/// Advisory-lock class of a run's live workers: each holds `(RUN_LOCK, run)` shared on
/// its control connection while it works on the run, so "is this run live?" is "does a
/// session hold that lock?" — a killed worker's session, and its lock, end with it.
const RUN_LOCK: i64 = 0x6464_6232;

/// The run's id as the second key of its advisory lock.
fn run_key(run: i64) -> i64 {
    run & 0x7fff_ffff
}

/// Marks this session as a live worker of `run` (until the session ends).
///
/// # Errors
/// SQL fails.
pub async fn hold_run(c: &Client, run: i64) -> Result<()> {
    c.execute(
        "SELECT pg_advisory_lock_shared($1::int8::int4, $2::int8::int4)",
        &[&RUN_LOCK, &run_key(run)],
    )
    .await
    .map(|_| ())
    .map_err(|e| fail("mark this worker live", &e))
}

/// Takes a worker's claims back on a new session (its old one was lost): the splits it
/// holds name this session as their holder again.
///
/// # Errors
/// SQL fails.
pub async fn reclaim(c: &Client, run: i64, worker: &str) -> Result<()> {
    c.execute(
        "UPDATE ddb2pg.splits SET holder_pid = pg_backend_pid(), \
           holder_start = (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()) \
         WHERE run_id = $1 AND worker = $2 AND state = 'running'",
        &[&run, &worker],
    )
    .await
    .map(|_| ())
    .map_err(|e| fail("take this worker's claims back", &e))
}

/// The PostgreSQL sessions (pids) of `run`'s live workers, other than this one.
///
/// # Errors
/// SQL fails.
pub async fn live_workers(c: &Client, run: i64) -> Result<Vec<i32>> {
    let rows = c
        .query(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = $1::int8::oid \
             AND objid = $2::int8::oid AND objsubid = 2 AND granted AND pid <> pg_backend_pid() ORDER BY pid",
            &[&RUN_LOCK, &run_key(run)],
        )
        .await
        .map_err(|e| fail("look up a run's live workers", &e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Refuses when `run` has live workers: `what` names what the caller wanted to do.
///
/// # Errors
/// [`Error::RunLive`], or SQL fails.
pub async fn refuse_live(c: &Client, run: i64, what: &str) -> Result<()> {
    let pids = live_workers(c, run).await?;
    if pids.is_empty() {
        return Ok(());
    }
    Err(Error::RunLive {
        what: what.to_string(),
        run,
        pids,
    })
}

/// Locks the run's row against an abandon until the caller's transaction ends, and
/// checks the run is still running: a chunk commits only into its run's live table.
///
/// # Errors
/// [`Error::RunGone`] when the run was abandoned (or ended), or SQL fails.
pub async fn lock_live_run(c: &Client, run: i64, table: &str) -> Result<()> {
    let row = c
        .query_opt(
            "SELECT state FROM ddb2pg.runs WHERE id = $1 FOR SHARE",
            &[&run],
        )
        .await
        .map_err(|e| Error::pg(table, "check the chunk's run is live", &e))?;
    let state: RunState = match row {
        Some(r) => state_at(&r, 0)?,
        None => RunState::Abandoned,
    };
    if state == RunState::Running {
        return Ok(());
    }
    Err(Error::RunGone {
        run,
        state: state.to_string(),
    })
}

pub(super) fn fail(action: &str, e: &tokio_postgres::Error) -> Error {
    Error::pg("ddb2pg state", action, e)
}

/// Creates the state schema and tables when missing or older than this build's.
///
/// The DDL runs only when the schema's comment does not name this build's DDL (a hash
/// of its text), inside one transaction under an advisory lock: an `ALTER TABLE … IF
/// NOT EXISTS` still takes its table's exclusive lock, and two of them racing workers
/// that are writing their chunks deadlocked.
///
/// # Errors
/// SQL fails (e.g. no right to create a schema).
pub async fn ensure(c: &Client) -> Result<()> {
    let marker = format!(
        "ddb2pg state {:016x}",
        xxhash_rust::xxh3::xxh3_64(STATE_DDL.as_bytes())
    );
    if state_marker(c).await?.as_deref() == Some(marker.as_str()) {
        return Ok(());
    }
    c.batch_execute("BEGIN; SELECT pg_advisory_xact_lock(hashtext('ddb2pg state schema'))")
        .await
        .map_err(|e| fail("take the state schema lock", &e))?;
    let done = async {
        if state_marker(c).await?.as_deref() != Some(marker.as_str()) {
            c.batch_execute(STATE_DDL)
                .await
                .map_err(|e| fail("create the ddb2pg state tables", &e))?;
            c.batch_execute(&format!("COMMENT ON SCHEMA ddb2pg IS '{marker}'"))
                .await
                .map_err(|e| fail("mark the ddb2pg state tables", &e))?;
        }
        c.batch_execute("COMMIT")
            .await
            .map_err(|e| fail("create the ddb2pg state tables", &e))
    }
    .await;
    if done.is_err() {
        let _ = c.batch_execute("ROLLBACK").await;
    }
    done
}

/// The comment on the `ddb2pg` schema (none when the schema does not exist).
async fn state_marker(c: &Client) -> Result<Option<String>> {
    let row = c
        .query_opt(
            "SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = 'ddb2pg'",
            &[],
        )
        .await
        .map_err(|e| fail("read the state schema's version", &e))?;
    Ok(row.and_then(|r| r.get::<_, Option<String>>(0)))
}

/// The state schema. Any change to it changes its hash, so every worker of the new
/// build brings an older schema up to date once.
const STATE_DDL: &str = "CREATE SCHEMA IF NOT EXISTS ddb2pg;
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
           ADD COLUMN IF NOT EXISTS item text, ADD COLUMN IF NOT EXISTS key_text text,
           ADD COLUMN IF NOT EXISTS item_raw bytea,
           ADD COLUMN IF NOT EXISTS unrouted boolean NOT NULL DEFAULT false;
         CREATE INDEX IF NOT EXISTS rejects_run_idx ON ddb2pg.rejects (run_id);
         ALTER TABLE ddb2pg.splits ADD COLUMN IF NOT EXISTS inserted bigint NOT NULL DEFAULT 0,
           ADD COLUMN IF NOT EXISTS updated bigint NOT NULL DEFAULT 0,
           ADD COLUMN IF NOT EXISTS deleted bigint NOT NULL DEFAULT 0;
         ALTER TABLE ddb2pg.run_tables ADD COLUMN IF NOT EXISTS baseline_at timestamptz,
           ADD COLUMN IF NOT EXISTS table_arn text, ADD COLUMN IF NOT EXISTS table_id text;
         CREATE TABLE IF NOT EXISTS ddb2pg.sync_exports (
           base_run bigint NOT NULL,
           target_schema text NOT NULL,
           target_table text NOT NULL,
           export_arn text NOT NULL,
           location text NOT NULL,
           from_time timestamptz NOT NULL,
           to_time timestamptz NOT NULL,
           run_id bigint NOT NULL,
           inserted bigint NOT NULL, updated bigint NOT NULL, deleted bigint NOT NULL,
           rejected bigint NOT NULL, changes bigint NOT NULL,
           applied_at timestamptz NOT NULL DEFAULT now(),
           PRIMARY KEY (base_run, target_table, export_arn));
         CREATE TABLE IF NOT EXISTS ddb2pg.stream_shards (
           base_run bigint NOT NULL,
           target_schema text NOT NULL,
           target_table text NOT NULL,
           stream_arn text NOT NULL,
           shard_id text NOT NULL,
           parent_shard_id text,
           last_seq text,
           last_change_at timestamptz,
           tip_at timestamptz,
           state text NOT NULL DEFAULT 'open',
           worker text,
           lease_until timestamptz,
           changes bigint NOT NULL DEFAULT 0, inserted bigint NOT NULL DEFAULT 0,
           updated bigint NOT NULL DEFAULT 0, deleted bigint NOT NULL DEFAULT 0,
           rejected bigint NOT NULL DEFAULT 0, batches bigint NOT NULL DEFAULT 0,
           first_seen timestamptz NOT NULL DEFAULT now(),
           updated_at timestamptz,
           PRIMARY KEY (base_run, target_table, stream_arn, shard_id));
         CREATE TABLE IF NOT EXISTS ddb2pg.stream_syncs (
           base_run bigint NOT NULL,
           target_schema text NOT NULL,
           target_table text NOT NULL,
           stream_arn text NOT NULL,
           fk_off boolean NOT NULL DEFAULT false,
           fk_tables text[] NOT NULL DEFAULT '{}',
           started_at timestamptz NOT NULL DEFAULT now(),
           PRIMARY KEY (base_run, target_table));
         CREATE TABLE IF NOT EXISTS ddb2pg.stream_workers (
           worker text NOT NULL,
           target_schema text NOT NULL,
           target_table text NOT NULL,
           seen_at timestamptz NOT NULL DEFAULT now(),
           PRIMARY KEY (worker, target_schema, target_table));
         CREATE TABLE IF NOT EXISTS ddb2pg.stream_rejects (
           base_run bigint NOT NULL,
           target_schema text NOT NULL,
           target_table text NOT NULL,
           shard_id text NOT NULL,
           seq text NOT NULL,
           line text NOT NULL,
           recorded_at timestamptz NOT NULL DEFAULT now());";

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
pub fn fingerprint(
    schema: &str,
    mode: Mode,
    tables: &[(&TableSpec, &SourcePlan)],
    extra: &str,
) -> String {
    let mut s = format!("schema={schema}\nmode={mode:?}\n{extra}");
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
            SourcePlan::Parquet(p) => {
                for f in &p.manifest.files {
                    let _ = writeln!(s, "parquet={} {} {}", f.path, f.sha256, f.rows);
                }
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
    pub state: RunState,
    pub mode: String,
    pub target_schema: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub last_error: Option<String>,
    pub fk_tables: Vec<String>,
}

/// The columns [`run_from`] reads, in its order.
const RUN_COLS: &str =
    "id, state, mode, target_schema, started_at::text, finished_at::text, last_error, fk_tables";

/// A run from a row of [`RUN_COLS`].
fn run_from(r: &tokio_postgres::Row) -> Result<Run> {
    Ok(Run {
        id: r.get(0),
        state: state_at(r, 1)?,
        mode: r.get(2),
        target_schema: r.get(3),
        started_at: r.get(4),
        finished_at: r.get(5),
        last_error: r.get(6),
        fk_tables: r.get(7),
    })
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
    rows.first().map(run_from).transpose()
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
    rows.first().map(run_from).transpose()
}

/// Run `id`, whatever its schema.
///
/// # Errors
/// SQL fails.
pub async fn run_by_id(c: &Client, id: i64) -> Result<Option<Run>> {
    if !recorded(c).await? {
        return Ok(None);
    }
    let rows = c
        .query(
            &format!("SELECT {RUN_COLS} FROM ddb2pg.runs WHERE id = $1"),
            &[&id],
        )
        .await
        .map_err(|e| fail("read a run", &e))?;
    rows.first().map(run_from).transpose()
}

/// A table of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunTable {
    pub name: String,
    pub created: bool,
    pub keys_after: bool,
    pub splits: i32,
    pub expected: i64,
    pub state: TableState,
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
    rows.iter()
        .map(|r| {
            Ok(RunTable {
                name: r.get(0),
                created: r.get(1),
                keys_after: r.get(2),
                splits: r.get(3),
                expected: r.get(4),
                state: state_at(r, 5)?,
                table_oid: r.get(6),
            })
        })
        .collect()
}

/// The OID of `schema.table` now, if it exists.
///
/// # Errors
/// SQL fails.
pub async fn table_oid(c: &Client, schema: &str, table: &str) -> Result<Option<u32>> {
    let q = crate::sink::qualified(schema, table);
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

/// Why what is in `schema` is not a finished load: each unfinished run into it (live, or
/// stopped before its end), and each table whose latest run is not done — what `promote`
/// refuses on. Empty when the schema holds no load state.
///
/// # Errors
/// SQL fails.
pub async fn unfinished_in_schema(
    c: &impl tokio_postgres::GenericClient,
    schema: &str,
) -> Result<Vec<String>> {
    let present = c
        .query_one("SELECT to_regclass('ddb2pg.runs') IS NOT NULL", &[])
        .await
        .map_err(|e| fail("look for ddb2pg.runs", &e))?;
    if !present.get::<_, bool>(0) {
        return Ok(Vec::new());
    }
    let mut problems = Vec::new();
    let runs = c
        .query(
            "SELECT r.id, r.mode, r.last_error, array(SELECT l.pid FROM pg_locks l WHERE l.locktype = 'advisory' \
               AND l.classid = $2::int8::oid AND l.objid = (r.id & 2147483647)::oid AND l.objsubid = 2 AND l.granted \
               AND l.pid <> pg_backend_pid() ORDER BY l.pid) \
             FROM ddb2pg.runs r WHERE r.target_schema = $1 AND r.state = 'running' ORDER BY r.id",
            &[&schema, &RUN_LOCK],
        )
        .await
        .map_err(|e| fail("look up unfinished runs", &e))?;
    for r in &runs {
        let (id, mode, error, pids): (i64, String, Option<String>, Vec<i32>) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        problems.push(if pids.is_empty() {
            format!(
                "run {id} ({mode}) into it stopped before its end{}: re-run that load to finish it",
                error.map(|e| format!(" ({e})")).unwrap_or_default()
            )
        } else {
            format!(
                "run {id} ({mode}) into it is still loading (its workers' sessions: {})",
                pids.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        });
    }
    let tables = c
        .query(
            "SELECT DISTINCT ON (rt.table_oid) cl.relname::text, r.id, r.state \
             FROM pg_class cl JOIN pg_namespace n ON n.oid = cl.relnamespace \
             JOIN ddb2pg.run_tables rt ON rt.table_oid = cl.oid JOIN ddb2pg.runs r ON r.id = rt.run_id \
             WHERE n.nspname = $1 ORDER BY rt.table_oid, r.id DESC",
            &[&schema],
        )
        .await
        .map_err(|e| fail("look up the runs of the schema's tables", &e))?;
    for t in &tables {
        let (name, id, st): (String, i64, String) = (t.get(0), t.get(1), t.get(2));
        if st == RunState::Abandoned.as_str() {
            problems.push(format!(
                "table {name}: its latest run {id} was abandoned before its end, so it holds part of a load"
            ));
        }
    }
    Ok(problems)
}

/// The latest run that loaded `schema.table` (by the table's identity, so a promoted
/// table keeps its run): its id and state.
///
/// # Errors
/// SQL fails.
pub async fn latest_run_of_table(
    c: &Client,
    schema: &str,
    table: &str,
) -> Result<Option<(i64, RunState)>> {
    if !recorded(c).await? {
        return Ok(None);
    }
    let q = crate::sink::qualified(schema, table);
    let row = c
        .query_opt(
            "SELECT r.id, r.state FROM ddb2pg.run_tables rt JOIN ddb2pg.runs r ON r.id = rt.run_id \
             WHERE rt.table_oid = to_regclass($1)::oid ORDER BY r.id DESC LIMIT 1",
            &[&q],
        )
        .await
        .map_err(|e| fail("look up the table's last run", &e))?;
    row.map(|r| Ok((r.get(0), state_at(&r, 1)?))).transpose()
}

/// Takes the plan lock for the caller's transaction: no load plans a run meanwhile.
///
/// # Errors
/// SQL fails.
pub async fn lock_plan_for_transaction(c: &impl tokio_postgres::GenericClient) -> Result<()> {
    c.execute("SELECT pg_advisory_xact_lock($1)", &[&PLAN_LOCK])
        .await
        .map(|_| ())
        .map_err(|e| fail("take the plan lock", &e))
}

/// Moves the recorded runs and rejects of schema `from` to `to` (a promote or rollback
/// renamed it), so they follow their tables.
///
/// # Errors
/// SQL fails.
pub async fn rename_schema(
    c: &impl tokio_postgres::GenericClient,
    from: &str,
    to: &str,
) -> Result<()> {
    let present = c
        .query_one("SELECT to_regclass('ddb2pg.runs') IS NOT NULL", &[])
        .await
        .map_err(|e| fail("look for ddb2pg.runs", &e))?;
    if !present.get::<_, bool>(0) {
        return Ok(());
    }
    for sql in [
        "UPDATE ddb2pg.runs SET target_schema = $2 WHERE target_schema = $1",
        "UPDATE ddb2pg.rejects SET target_schema = $2 WHERE target_schema = $1",
    ] {
        c.execute(sql, &[&from, &to])
            .await
            .map_err(|e| fail("move the load state to the renamed schema", &e))?;
    }
    let synced = c
        .query_one("SELECT to_regclass('ddb2pg.sync_exports') IS NOT NULL", &[])
        .await
        .map_err(|e| fail("look for ddb2pg.sync_exports", &e))?;
    if synced.get::<_, bool>(0) {
        c.execute(
            "UPDATE ddb2pg.sync_exports SET target_schema = $2 WHERE target_schema = $1",
            &[&from, &to],
        )
        .await
        .map_err(|e| fail("move the sync state to the renamed schema", &e))?;
    }
    Ok(())
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
    let q = crate::sink::qualified(schema, table);
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
    baseline: Option<&Baseline>,
) -> Result<()> {
    let splits = i32::try_from(split_names.len()).unwrap_or(i32::MAX);
    let expected = i64::try_from(expected).unwrap_or(i64::MAX);
    let (now, at, arn, id) = match baseline {
        Some(b) => (
            b.now,
            b.at.as_deref(),
            b.table_arn.as_deref(),
            b.table_id.as_deref(),
        ),
        None => (false, None, None, None),
    };
    c.execute(
        "INSERT INTO ddb2pg.run_tables (run_id, target_table, ord, table_oid, created, keys_after, splits, expected, \
           baseline_at, table_arn, table_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, CASE WHEN $9 THEN now() ELSE $10::text::timestamptz END, $11, $12)",
        &[&run, &table, &ord, &oid, &created, &keys_after, &splits, &expected, &now, &at, &arn, &id],
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

/// What a load's rows are a snapshot of: the time (an export's `exportTime`; `None`: the
/// moment the run is recorded, for a scan) and the DynamoDB table (ARN and id), which a
/// sync's changes must follow.
#[derive(Debug, Clone, Default)]
pub struct Baseline {
    /// RFC 3339; `None` with `now` false: unknown (an export whose manifest has no
    /// `exportTime`: a sync refuses it rather than guess).
    pub at: Option<String>,
    /// The baseline is the moment the run is recorded (a scan).
    pub now: bool,
    pub table_arn: Option<String>,
    pub table_id: Option<String>,
}

impl Baseline {
    /// The baseline of a load from `source`.
    #[must_use]
    pub fn of(source: &SourcePlan) -> Baseline {
        match source {
            SourcePlan::Export(e) => Baseline {
                at: e.summary.export_time.clone(),
                now: false,
                table_arn: e.summary.table_arn.clone(),
                table_id: e.summary.table_id.clone(),
            },
            SourcePlan::Scan(s) => Baseline {
                at: None,
                now: true,
                table_arn: s.table_arn.clone(),
                table_id: s.table_id.clone(),
            },
            // What the snapshot's source was: its rows are as of then.
            SourcePlan::Parquet(p) => Baseline {
                at: p.manifest.baseline.at.clone(),
                now: false,
                table_arn: p.manifest.baseline.table_arn.clone(),
                table_id: p.manifest.baseline.table_id.clone(),
            },
        }
    }
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
    pub state: SplitState,
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
    rows.iter()
        .map(|r| {
            Ok(SplitStatus {
                split: r.get(0),
                name: r.get(1),
                state: state_at(r, 2)?,
                worker: r.get(3),
                lease_until: r.get(4),
                rows: r.get(5),
                rejected: r.get(6),
                chunks: r.get(7),
                claims: r.get(8),
                last_error: r.get(9),
            })
        })
        .collect()
}

/// Sets a table's state (`loading` → `loaded` once keys and indexes are built).
///
/// # Errors
/// SQL fails.
pub async fn set_table_state(
    c: &Client,
    run: i64,
    table: &str,
    state: TableState,
    oid: Option<u32>,
) -> Result<()> {
    c.execute(
        "UPDATE ddb2pg.run_tables SET state = $3, table_oid = coalesce($4, table_oid) WHERE run_id = $1 AND target_table = $2",
        &[&run, &table, &state.as_str(), &oid],
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
pub async fn lock_table(c: &Client, run: i64, table: &str) -> Result<Option<TableState>> {
    c.query_opt(
        "SELECT state FROM ddb2pg.run_tables WHERE run_id = $1 AND target_table = $2 FOR UPDATE SKIP LOCKED",
        &[&run, &table],
    )
    .await
    .map_err(|e| fail("lock a table of the run", &e))?
    .map(|r| state_at(&r, 0))
    .transpose()
}

/// Locks the run's row for its finishing steps; `None` when another worker holds it.
///
/// # Errors
/// SQL fails.
pub async fn lock_run(c: &Client, run: i64) -> Result<Option<RunState>> {
    c.query_opt(
        "SELECT state FROM ddb2pg.runs WHERE id = $1 FOR UPDATE SKIP LOCKED",
        &[&run],
    )
    .await
    .map_err(|e| fail("lock the run", &e))?
    .map(|r| state_at(&r, 0))
    .transpose()
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

/// The rejects a run recorded for a table (`unrouted`: or the unrouted items its pass
/// kept).
///
/// # Errors
/// SQL fails.
pub async fn run_rejects_of(c: &Client, run: i64, table: &str, unrouted: bool) -> Result<u64> {
    let row = c
        .query_one(
            "SELECT count(*) FROM ddb2pg.rejects WHERE run_id = $1 AND target_table = $2 AND unrouted = $3",
            &[&run, &table, &unrouted],
        )
        .await
        .map_err(|e| fail("count a table's rejects", &e))?;
    Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
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
