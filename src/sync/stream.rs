//! `sync` from a DynamoDB Stream (ARCHITECTURE §8): each shard read in sequence order by
//! one reader at a time across every `sync` process on the target, each `GetRecords` page
//! applied (the last change per key) in one transaction with the shard's checkpoint, so a
//! sync stopped any way and run again applies each record exactly once.
//!
//! - **Shards** are rows of `ddb2pg.stream_shards` (per load, table, stream, shard: parent,
//!   last applied sequence number, state, lease). A worker claims its fair share of the
//!   shards whose parent is read to its end (live workers heartbeat in
//!   `ddb2pg.stream_workers`), renews its leases with each commit, and gives back what it
//!   holds beyond its share; a dead worker's shards are taken over once their lease runs
//!   out, from their last checkpoint. A commit checks the lease and the previous sequence
//!   number, so two readers never both apply a shard's page.
//! - **Safety** (exit 5): a stream created after the load's baseline, a baseline older than
//!   the stream's 24 h retention (first sync), a stream whose ARN changed, a checkpointed
//!   shard gone or trimmed before it was read to its end, view types without new images.
//! - **Apply**: a page becomes change lines (as an incremental export's), is decoded and
//!   encoded by the load's own code, COPYed into the connection's stage and merged
//!   ([`merge_changes`]); rejected changes keep the row's previous value and are recorded
//!   (`ddb2pg.stream_rejects` in the transaction, the rejects file after it).
//! - **Caught up**: every shard listed when the command began is read to its end, or
//!   returned an empty page asked for [`SETTLE`] after the command began.
//!
//! Input: the table's spec, its load, the options. Output: the table changed, and its
//! [`TableSync`].

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::task::JoinHandle;
use tokio_postgres::Client;

use super::types::{lock_schema, unlock_schema, SyncOptions, TableSync};
use crate::config::{Config, TableSpec};
use crate::decode::{decode_lines, TablePlan};
use crate::encode::encode_batch;
use crate::error::{Error, Result};
use crate::load::changes::BaseLoad;
use crate::retry::backoff;
use crate::scalar::time::format_timestamp;
use crate::schema::ColumnType;
use crate::sink::changes::{
    create_changes_stage, drop_foreign_keys_for_sync, merge_changes, Applied,
};
use crate::sink::children;
use crate::sink::copy::CopyStream;
use crate::sink::{connect, ddl};
use crate::source::stream::{self, seq_cmp, Change, RecordPage, StreamError, StreamInfo};

/// The stream's retention: records older than this are trimmed.
const RETENTION: Duration = Duration::from_secs(24 * 3600);
/// How long after the command began an empty page must be asked for, for an open shard
/// to count as caught up (a write reaches its stream within about a second).
const SETTLE: Duration = Duration::from_secs(2);
/// Wait between two `GetRecords` of a shard at its tip (AWS allows five per second per
/// shard, shared by its readers).
const TIP_WAIT: Duration = Duration::from_millis(500);
/// Least time between two `GetRecords` of a shard after a page short of [`PAGE`] records
/// (near the tip: waiting gathers the next writes into one page and one transaction,
/// instead of a page per few records), and after a full page (behind: as fast as the
/// five calls per second AWS allows a shard).
const SHORT_PAGE_WAIT: Duration = Duration::from_millis(250);
const FULL_PAGE_WAIT: Duration = Duration::from_millis(200);
/// Records asked per `GetRecords` (the most AWS returns).
const PAGE: i32 = 1000;
/// How often the shards are listed again (new shards after a split, closed ones).
const LIST_EVERY: Duration = Duration::from_secs(10);
/// Attempts of a throttled or failing call before the sync stops.
const ATTEMPTS: u32 = 30;

/// One table followed through its stream.
pub(super) struct Follow {
    config: Arc<Config>,
    opts: SyncOptions,
    spec: TableSpec,
    base: BaseLoad,
    baseline: i64,
    /// The live table whose stream is read.
    source: String,
    interrupted: Arc<AtomicBool>,
    started: SystemTime,
    worker: String,
    plan: Arc<TablePlan>,
    types: Arc<Vec<ColumnType>>,
    tally: Mutex<Tally>,
    pool: Pool,
    streams: aws_sdk_dynamodbstreams::Client,
}

#[derive(Default)]
struct Tally {
    inserted: u64,
    updated: u64,
    deleted: u64,
    rejected: u64,
    changes: u64,
    /// The latest applied record's `ApproximateCreationDateTime`.
    watermark: Option<i64>,
    retries: u64,
    applying_secs: f64,
}

/// PostgreSQL connections the shard readers take turns on (each with its stage).
struct Pool {
    idle: tokio::sync::Mutex<Vec<Client>>,
    permits: tokio::sync::Semaphore,
}

/// A shard as its checkpoint row holds it.
#[derive(Debug, Clone)]
struct ShardRow {
    id: String,
    last_seq: Option<String>,
}

/// A running reader, and its own stop flag (a shard given back).
struct Reader {
    stop: Arc<AtomicBool>,
    task: JoinHandle<Result<()>>,
}

impl Follow {
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn new(
        config: Arc<Config>,
        opts: SyncOptions,
        spec: TableSpec,
        base: BaseLoad,
        baseline: i64,
        source: String,
        interrupted: Arc<AtomicBool>,
    ) -> Follow {
        let plan = Arc::new(TablePlan::for_changes(&spec));
        let types = Arc::new(plan.types().collect());
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let worker = format!("sync-{}-{}-{nanos:x}", hostname(), std::process::id());
        let connections = config.tuning.connections.max(1);
        Follow {
            config,
            opts,
            spec,
            base,
            baseline,
            source,
            interrupted,
            started: SystemTime::now(),
            worker,
            plan,
            types,
            tally: Mutex::new(Tally::default()),
            pool: Pool {
                idle: tokio::sync::Mutex::new(Vec::new()),
                permits: tokio::sync::Semaphore::new(connections),
            },
            streams: stream::client().await,
        }
    }

    fn table(&self) -> String {
        format!("{}.{}", self.opts.schema, self.spec.name)
    }

    /// The table's child tables (their rows replaced with each put or delete).
    fn child_specs(&self) -> Vec<TableSpec> {
        self.spec.children.iter().map(|c| c.table.clone()).collect()
    }

    fn stopped(&self) -> bool {
        self.interrupted.load(Ordering::SeqCst)
    }

    fn lease(&self) -> f64 {
        self.config.tuning.lease_seconds as f64
    }

    /// Follows the stream until caught up (`--until-caught-up`) or a signal; returns what
    /// was applied.
    pub(super) async fn run(self: Arc<Self>, t: &mut TableSync) -> Result<()> {
        let c = connect(&self.config.target.url).await?;
        let info = stream::describe(&self.streams, &self.source).await?;
        self.check_stream(&c, &info).await?;
        self.take_foreign_keys(&c, &info).await?;
        let followed = self.follow(&c, &info).await;
        let ended = self.end(&c).await;
        self.fill(t);
        t.warnings.extend(ended.err().map(|e| {
            let w = format!("could not put the foreign keys back: {e}");
            tracing::warn!(table = %self.table(), "{w}");
            w
        }));
        followed
    }

    /// Refuses, before anything is applied, a stream that cannot hold every change made
    /// since the load.
    async fn check_stream(&self, c: &Client, info: &StreamInfo) -> Result<()> {
        let lost = |reason: String| Error::ChangesLost {
            table: self.table(),
            reason,
        };
        if matches!(info.view_type.as_str(), "KEYS_ONLY" | "OLD_IMAGE") {
            return Err(lost(format!(
                "the stream of DynamoDB table {} has view type {}: its records hold no new image to apply; enable the stream with NEW_AND_OLD_IMAGES or NEW_IMAGE, then reload the table (ddb2pg load --mode replace --fresh) and sync",
                info.table, info.view_type
            )));
        }
        let recorded: Vec<String> = c
            .query(
                "SELECT DISTINCT stream_arn FROM ddb2pg.stream_shards WHERE base_run = $1 AND target_table = $2",
                &[&self.base.run, &self.spec.name],
            )
            .await
            .map_err(|e| Error::pg("ddb2pg state", "read the stream's checkpoints", &e))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if let Some(old) = recorded.iter().find(|a| **a != info.arn) {
            return Err(lost(format!(
                "the stream of DynamoDB table {} is now {}, not {old} whose records this table follows (the stream was disabled and enabled again): the changes made in between are lost; reload the table (ddb2pg load --mode replace --fresh), then sync",
                info.table, info.arn
            )));
        }
        if !recorded.is_empty() {
            return Ok(());
        }
        let baseline = format_timestamp(self.baseline, true);
        if let Some(created) = info.created_micros {
            if created > self.baseline {
                return Err(lost(format!(
                    "the stream of DynamoDB table {} was created at {}, after the load's baseline {baseline}: the changes made in between are in no stream; reload the table (ddb2pg load --mode replace --fresh), then sync",
                    info.table,
                    format_timestamp(created, true)
                )));
            }
        }
        let now = now_micros();
        let retention = i64::try_from(RETENTION.as_micros()).unwrap_or(i64::MAX);
        if now - self.baseline > retention {
            return Err(lost(format!(
                "the load's baseline {baseline} is more than 24 h old: the stream keeps records 24 h, so the changes made just after the load are trimmed; reload the table (ddb2pg load --mode replace --fresh), then sync within a day"
            )));
        }
        Ok(())
    }

    /// Takes the declared foreign keys from and to the table off (changes arrive in no
    /// order across keys), once per load's stream, under the schema's sync lock.
    async fn take_foreign_keys(&self, c: &Client, info: &StreamInfo) -> Result<()> {
        lock_schema(c, &self.opts.schema, &self.interrupted).await?;
        let done = async {
            c.batch_execute("BEGIN")
                .await
                .map_err(|e| Error::pg("ddb2pg state", "begin", &e))?;
            let r = async {
                c.execute(
                    "INSERT INTO ddb2pg.stream_syncs (base_run, target_schema, target_table, stream_arn) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (base_run, target_table) DO NOTHING",
                    &[&self.base.run, &self.opts.schema, &self.spec.name, &info.arn],
                )
                .await
                .map_err(|e| Error::pg("ddb2pg state", "record the stream sync", &e))?;
                let off: bool = c
                    .query_one(
                        "SELECT fk_off FROM ddb2pg.stream_syncs WHERE base_run = $1 AND target_table = $2 FOR UPDATE",
                        &[&self.base.run, &self.spec.name],
                    )
                    .await
                    .map_err(|e| Error::pg("ddb2pg state", "read the stream sync", &e))?
                    .get(0);
                // The table and its child tables (their rows change with its items).
                let names: Vec<String> =
                    self.spec.with_children().map(|t| t.name.clone()).collect();
                let outside = drop_foreign_keys_for_sync(
                    c,
                    &self.opts.schema,
                    &names,
                    &self.config.all_tables(),
                )
                .await?;
                if !off || !outside.is_empty() {
                    c.execute(
                        "UPDATE ddb2pg.stream_syncs SET fk_off = true, \
                           fk_tables = ARRAY(SELECT DISTINCT unnest(fk_tables || $3::text[])) \
                         WHERE base_run = $1 AND target_table = $2",
                        &[&self.base.run, &self.spec.name, &outside],
                    )
                    .await
                    .map_err(|e| Error::pg("ddb2pg state", "record the foreign keys taken off", &e))?;
                }
                Ok::<_, Error>(())
            }
            .await;
            let end = if r.is_ok() { "COMMIT" } else { "ROLLBACK" };
            let ended = c.batch_execute(end).await;
            r?;
            ended.map_err(|e| Error::pg("ddb2pg state", "commit", &e))
        }
        .await;
        let unlocked = unlock_schema(c, &self.opts.schema).await;
        done?;
        unlocked
    }

    /// The readers' coordinator: lists the shards, claims and gives back, watches the
    /// readers, and ends when caught up or stopped.
    async fn follow(self: &Arc<Self>, c: &Client, info: &StreamInfo) -> Result<()> {
        let mut readers: HashMap<String, Reader> = HashMap::new();
        let mut listed_at: Option<Instant> = None;
        let mut first_listing: Option<HashSet<String>> = None;
        let mut last_said = Instant::now();
        let result = loop {
            if self.stopped() {
                break Ok(());
            }
            if listed_at.is_none_or(|t| t.elapsed() >= LIST_EVERY) {
                match self.register_shards(c, info).await {
                    Ok(ids) => {
                        first_listing.get_or_insert(ids);
                    }
                    Err(e) => break Err(e),
                }
                listed_at = Some(Instant::now());
            }
            if let Err(e) = self.heartbeat(c).await {
                break Err(e);
            }
            // Readers that ended: an error stops the sync; a shard read to its end or
            // given back frees its place.
            let ended: Vec<String> = readers
                .iter()
                .filter(|(_, r)| r.task.is_finished())
                .map(|(id, _)| id.clone())
                .collect();
            let mut failed = None;
            for id in ended {
                if let Some(r) = readers.remove(&id) {
                    match r.task.await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            failed.get_or_insert(e);
                        }
                        Err(e) => {
                            failed.get_or_insert(Error::Internal(format!(
                                "the reader of shard {id} panicked: {e}"
                            )));
                        }
                    }
                }
            }
            if let Some(e) = failed {
                break Err(e);
            }
            match self.claim(c, info, &readers).await {
                Ok((claimed, give_back)) => {
                    for id in give_back {
                        if let Some(r) = readers.get(&id) {
                            r.stop.store(true, Ordering::SeqCst);
                        }
                    }
                    for row in claimed {
                        if readers.contains_key(&row.id) {
                            continue;
                        }
                        let stop = Arc::new(AtomicBool::new(false));
                        let me = self.clone();
                        let arn = info.arn.clone();
                        let s = stop.clone();
                        let id = row.id.clone();
                        let task = tokio::spawn(async move { me.read_shard(arn, row, s).await });
                        readers.insert(id, Reader { stop, task });
                    }
                }
                Err(e) => break Err(e),
            }
            if self.opts.until_caught_up {
                let ids = first_listing.as_ref().cloned().unwrap_or_default();
                match self.caught_up(c, &info.arn, &ids).await {
                    Ok(true) => break Ok(()),
                    Ok(false) => {}
                    Err(e) => break Err(e),
                }
            }
            if last_said.elapsed() >= Duration::from_secs(10) {
                self.say_progress(readers.len());
                last_said = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        for r in readers.values() {
            r.stop.store(true, Ordering::SeqCst);
        }
        let mut first = result;
        for (id, r) in readers {
            let ended = r.task.await;
            if first.is_ok() {
                first = match ended {
                    Ok(r) => r,
                    Err(e) => Err(Error::Internal(format!(
                        "the reader of shard {id} panicked: {e}"
                    ))),
                };
            }
        }
        first
    }

    fn say_progress(&self, readers: usize) {
        let Ok(t) = self.tally.lock() else { return };
        let lag = t
            .watermark
            .map_or(0.0, |w| ((now_micros() - w) as f64 / 1e6).max(0.0));
        tracing::info!(
            table = %self.table(),
            shards_read = readers,
            changes = t.changes,
            inserted = t.inserted,
            updated = t.updated,
            deleted = t.deleted,
            rejected = t.rejected,
            watermark = %t.watermark.map_or("-".to_string(), |w| format_timestamp(w, true)),
            lag_seconds = lag,
            "Following the stream."
        );
    }

    /// Lists the stream's shards and records the new ones; refuses a checkpointed shard
    /// that is gone before it was read to its end. Returns the shards listed.
    async fn register_shards(&self, c: &Client, info: &StreamInfo) -> Result<HashSet<String>> {
        let shards = stream::shards(&self.streams, &info.arn).await?;
        let listed: HashSet<String> = shards.iter().map(|s| s.id.clone()).collect();
        let rows = c
            .query(
                "SELECT shard_id, state, last_seq FROM ddb2pg.stream_shards \
                 WHERE base_run = $1 AND target_table = $2 AND stream_arn = $3",
                &[&self.base.run, &self.spec.name, &info.arn],
            )
            .await
            .map_err(|e| Error::pg("ddb2pg state", "read the stream's shards", &e))?;
        let known: HashMap<String, String> = rows
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
            .collect();
        for r in &rows {
            let (id, state, last): (String, String, Option<String>) =
                (r.get(0), r.get(1), r.get(2));
            if state != "done" && !listed.contains(&id) {
                return Err(Error::ChangesLost {
                    table: self.table(),
                    reason: format!(
                        "shard {id} of stream {} is gone (trimmed) before it was read to its end (last applied: {}): its records are lost; reload the table (ddb2pg load --mode replace --fresh), then sync",
                        info.arn,
                        last.as_deref().unwrap_or("none")
                    ),
                });
            }
        }
        for s in &shards {
            if known.contains_key(&s.id) {
                continue;
            }
            // A new shard whose parent this sync never saw, once it has read the stream
            // before: the parent came and went unread.
            if let Some(p) = &s.parent {
                if !known.is_empty() && !known.contains_key(p) && !listed.contains(p) {
                    return Err(Error::ChangesLost {
                        table: self.table(),
                        reason: format!(
                            "shard {} of stream {} has a parent shard {p} that was trimmed before this sync read it: its records are lost; reload the table (ddb2pg load --mode replace --fresh), then sync",
                            s.id, info.arn
                        ),
                    });
                }
            }
            c.execute(
                "INSERT INTO ddb2pg.stream_shards (base_run, target_schema, target_table, stream_arn, shard_id, parent_shard_id) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                &[&self.base.run, &self.opts.schema, &self.spec.name, &info.arn, &s.id, &s.parent],
            )
            .await
            .map_err(|e| Error::pg("ddb2pg state", "record a shard", &e))?;
        }
        Ok(listed)
    }

    /// This worker is alive; its leases are renewed.
    async fn heartbeat(&self, c: &Client) -> Result<()> {
        c.batch_execute("BEGIN")
            .await
            .map_err(|e| Error::pg("ddb2pg state", "begin", &e))?;
        let r = async {
            c.execute(
                "INSERT INTO ddb2pg.stream_workers (worker, target_schema, target_table) VALUES ($1, $2, $3) \
                 ON CONFLICT (worker, target_schema, target_table) DO UPDATE SET seen_at = now()",
                &[&self.worker, &self.opts.schema, &self.spec.name],
            )
            .await?;
            c.execute(
                "UPDATE ddb2pg.stream_shards SET lease_until = now() + make_interval(secs => $3) \
                 WHERE base_run = $1 AND target_table = $2 AND worker = $4 AND state <> 'done'",
                &[&self.base.run, &self.spec.name, &self.lease(), &self.worker],
            )
            .await?;
            Ok::<_, tokio_postgres::Error>(())
        }
        .await;
        let end = if r.is_ok() { "COMMIT" } else { "ROLLBACK" };
        let ended = c.batch_execute(end).await;
        r.map_err(|e| Error::pg("ddb2pg state", "renew the stream leases", &e))?;
        ended.map_err(|e| Error::pg("ddb2pg state", "commit", &e))
    }

    /// Claims up to this worker's fair share of the shards ready to read (a free or
    /// expired lease, the parent read to its end); returns them, and the shards it holds
    /// beyond its share (to give back).
    async fn claim(
        &self,
        c: &Client,
        info: &StreamInfo,
        readers: &HashMap<String, Reader>,
    ) -> Result<(Vec<ShardRow>, Vec<String>)> {
        let fail = |e: tokio_postgres::Error| Error::pg("ddb2pg state", "claim stream shards", &e);
        let ready = "s.base_run = $1 AND s.target_table = $2 AND s.stream_arn = $3 AND s.state <> 'done' \
             AND (s.parent_shard_id IS NULL OR NOT EXISTS (SELECT 1 FROM ddb2pg.stream_shards p \
               WHERE p.base_run = s.base_run AND p.target_table = s.target_table AND p.stream_arn = s.stream_arn \
               AND p.shard_id = s.parent_shard_id AND p.state <> 'done'))";
        let row = c
            .query_one(
                &format!(
                    "SELECT (SELECT count(*) FROM ddb2pg.stream_shards s WHERE {ready}), \
                       (SELECT count(*) FROM ddb2pg.stream_workers WHERE target_schema = $4 AND target_table = $2 \
                          AND seen_at > now() - make_interval(secs => $5))"
                ),
                &[&self.base.run, &self.spec.name, &info.arn, &self.opts.schema, &self.lease()],
            )
            .await
            .map_err(fail)?;
        let (ready_n, workers): (i64, i64) = (row.get(0), row.get(1));
        let share = (ready_n + workers.max(1) - 1) / workers.max(1);
        let held = i64::try_from(readers.len()).unwrap_or(i64::MAX);
        let mut give_back = Vec::new();
        if held > share.max(1) {
            let mut ids: Vec<&String> = readers.keys().collect();
            ids.sort();
            give_back = ids
                .into_iter()
                .take(usize::try_from(held - share.max(1)).unwrap_or(0))
                .cloned()
                .collect();
        }
        if held >= share {
            return Ok((Vec::new(), give_back));
        }
        let rows = c
            .query(
                &format!(
                    "UPDATE ddb2pg.stream_shards t SET worker = $4, lease_until = now() + make_interval(secs => $5), updated_at = now() \
                     FROM (SELECT s.shard_id FROM ddb2pg.stream_shards s WHERE {ready} \
                             AND (s.worker IS NULL OR s.worker = $4 OR s.lease_until < now()) \
                           ORDER BY s.first_seen, s.shard_id LIMIT $6 FOR UPDATE SKIP LOCKED) f \
                     WHERE t.base_run = $1 AND t.target_table = $2 AND t.stream_arn = $3 AND t.shard_id = f.shard_id \
                     RETURNING t.shard_id, t.last_seq"
                ),
                &[
                    &self.base.run,
                    &self.spec.name,
                    &info.arn,
                    &self.worker,
                    &self.lease(),
                    &(share - held),
                ],
            )
            .await
            .map_err(fail)?;
        Ok((
            rows.iter()
                .map(|r| ShardRow {
                    id: r.get(0),
                    last_seq: r.get(1),
                })
                .collect(),
            give_back,
        ))
    }

    /// Whether every shard listed when the command began is read to its end, or returned
    /// an empty page asked for after the command began (and [`SETTLE`]).
    async fn caught_up(&self, c: &Client, arn: &str, first: &HashSet<String>) -> Result<bool> {
        let since = self.started + SETTLE;
        if SystemTime::now() < since {
            return Ok(false);
        }
        let since_micros = micros_of(since);
        let ids: Vec<String> = first.iter().cloned().collect();
        let behind: i64 = c
            .query_one(
                "SELECT count(*) FROM ddb2pg.stream_shards WHERE base_run = $1 AND target_table = $2 \
                   AND stream_arn = $3 AND shard_id = ANY($4) AND state <> 'done' \
                   AND (tip_at IS NULL OR tip_at < to_timestamp($5::float8 / 1e6))",
                &[&self.base.run, &self.spec.name, &arn, &ids, &(since_micros as f64)],
            )
            .await
            .map_err(|e| Error::pg("ddb2pg state", "check the shards' progress", &e))?
            .get(0);
        Ok(behind == 0)
    }

    /// One shard's reader: pages in sequence order, each applied with its checkpoint,
    /// until the shard is read to its end, the worker stops, or the lease is lost.
    async fn read_shard(
        self: Arc<Self>,
        arn: String,
        row: ShardRow,
        stop: Arc<AtomicBool>,
    ) -> Result<()> {
        let shard = row.id.clone();
        let mut last = row.last_seq.clone();
        let where_ = |last: &Option<String>| {
            format!(
                "stream {arn} shard {shard} after sequence number {}",
                last.as_deref().unwrap_or("TRIM_HORIZON (not read yet)")
            )
        };
        let mut iter = self.open(&arn, &shard, last.as_deref()).await?;
        let mut attempt = 0u32;
        let result = loop {
            if stop.load(Ordering::SeqCst) || self.stopped() {
                break Ok(());
            }
            let asked = SystemTime::now();
            let started = Instant::now();
            let page = match stream::records(&self.streams, &iter, PAGE).await {
                Ok(p) => {
                    attempt = 0;
                    p
                }
                Err(StreamError::Expired) => {
                    iter = self.open(&arn, &shard, last.as_deref()).await?;
                    continue;
                }
                Err(StreamError::Busy(m)) if attempt < ATTEMPTS => {
                    attempt += 1;
                    self.count_retry();
                    tracing::debug!(shard = %shard, attempt, "GetRecords: {m}; trying again.");
                    tokio::time::sleep(backoff(attempt)).await;
                    continue;
                }
                Err(StreamError::Trimmed(m)) => {
                    break Err(Error::ChangesLost {
                        table: self.table(),
                        reason: format!(
                            "{}: {m}; the records after the last applied one are trimmed; reload the table (ddb2pg load --mode replace --fresh), then sync",
                            where_(&last)
                        ),
                    })
                }
                Err(e) => {
                    let e = e.to_string();
                    let hint = if e.contains("parse") || e.contains("Union") {
                        " — a record of the page cannot be decoded (DynamoDB Local writes an empty map {\"M\":{}} as {}, which the SDK refuses; the real service does not)"
                    } else {
                        ""
                    };
                    break Err(Error::Source {
                        source_name: where_(&last),
                        reason: format!(
                            "GetRecords of the next page failed: {e}{hint}; nothing after the last applied record is applied and the sync stops here"
                        ),
                    });
                }
            };
            let RecordPage { changes, next } = page;
            let full = changes.len() >= PAGE as usize;
            let fresh: Vec<Change> = changes
                .into_iter()
                .filter(|ch| {
                    last.as_deref()
                        .is_none_or(|l| seq_cmp(&ch.seq, l) == std::cmp::Ordering::Greater)
                })
                .collect();
            let closed = next.is_none();
            let at_tip = fresh.is_empty() && !closed;
            let prev = last.clone();
            match self
                .apply(&arn, &shard, prev.as_deref(), fresh, closed, asked)
                .await
            {
                Ok(Some(new_last)) => last = new_last.or(last),
                Ok(None) => {
                    tracing::info!(shard = %shard, "The shard's lease went to another worker: this reader stops.");
                    return Ok(());
                }
                Err(e) => break Err(e),
            }
            let Some(n) = next else {
                tracing::info!(table = %self.table(), shard = %shard, "Shard read to its end.");
                return Ok(());
            };
            iter = n;
            let wait = if at_tip {
                TIP_WAIT
            } else if full {
                FULL_PAGE_WAIT
            } else {
                SHORT_PAGE_WAIT
            };
            tokio::time::sleep(wait.saturating_sub(started.elapsed())).await;
        };
        // Given back or stopped: the lease goes at once.
        let _ = self.release(&arn, &shard).await;
        result
    }

    /// A shard iterator after `last` (or at `TRIM_HORIZON`), retried when throttled.
    async fn open(&self, arn: &str, shard: &str, last: Option<&str>) -> Result<String> {
        let mut attempt = 0;
        loop {
            match stream::iterator(&self.streams, arn, shard, last).await {
                Ok(i) => return Ok(i),
                Err(StreamError::Busy(_) | StreamError::Expired) if attempt < ATTEMPTS => {
                    attempt += 1;
                    self.count_retry();
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(StreamError::Trimmed(m)) => {
                    return Err(Error::ChangesLost {
                        table: self.table(),
                        reason: format!(
                            "stream {arn} shard {shard}: the records after sequence number {} are trimmed ({m}); reload the table (ddb2pg load --mode replace --fresh), then sync",
                            last.unwrap_or("TRIM_HORIZON")
                        ),
                    })
                }
                Err(e) => {
                    return Err(Error::Source {
                        source_name: format!("stream {arn} shard {shard}"),
                        reason: format!("GetShardIterator failed: {e}"),
                    })
                }
            }
        }
    }

    fn count_retry(&self) {
        if let Ok(mut t) = self.tally.lock() {
            t.retries += 1;
        }
    }

    async fn release(&self, arn: &str, shard: &str) -> Result<()> {
        let (permit, c) = self.take_client().await?;
        let r = c
            .execute(
                "UPDATE ddb2pg.stream_shards SET worker = NULL, lease_until = NULL \
                 WHERE base_run = $1 AND target_table = $2 AND stream_arn = $3 AND shard_id = $4 AND worker = $5",
                &[&self.base.run, &self.spec.name, &arn, &shard, &self.worker],
            )
            .await;
        if r.is_ok() {
            self.pool.idle.lock().await.push(c);
        }
        drop(permit);
        r.map(|_| ())
            .map_err(|e| Error::pg("ddb2pg state", "give a shard back", &e))
    }

    /// A turn on one of the pool's connections (opened, with its stage, when none is idle).
    async fn take_client(&self) -> Result<(tokio::sync::SemaphorePermit<'_>, Client)> {
        let permit = self
            .pool
            .permits
            .acquire()
            .await
            .map_err(|e| Error::Internal(e.to_string()))?;
        let idle = self.pool.idle.lock().await.pop();
        let c = match idle {
            Some(c) => c,
            None => {
                let c = connect(&self.config.target.url).await?;
                create_changes_stage(&c, &self.opts.schema, &self.spec).await?;
                children::create_stages(&c, &self.opts.schema, &self.child_specs()).await?;
                c
            }
        };
        Ok((permit, c))
    }

    /// Applies one page of a shard (the last change per key) with its checkpoint, in one
    /// transaction. Returns the new last sequence number (`Some(None)`: nothing new), or
    /// `None` when the lease was lost (nothing applied).
    async fn apply(
        &self,
        arn: &str,
        shard: &str,
        prev: Option<&str>,
        changes: Vec<Change>,
        closed: bool,
        asked: SystemTime,
    ) -> Result<Option<Option<String>>> {
        let t0 = Instant::now();
        let n = changes.len() as u64;
        let new_last = changes.last().map(|c| c.seq.clone());
        let last_at = changes.iter().rev().find_map(|c| c.at_micros);
        let staged = if changes.is_empty() {
            None
        } else {
            let (plan, types) = (self.plan.clone(), self.types.clone());
            Some(
                tokio::task::spawn_blocking(move || stage(&plan, &types, changes))
                    .await
                    .map_err(|e| Error::Internal(format!("decoding a stream page: {e}")))??,
            )
        };
        let (permit, c) = self.take_client().await?;
        let r = self
            .commit(
                &c,
                arn,
                shard,
                prev,
                new_last.as_deref(),
                last_at,
                n,
                staged.as_ref(),
                closed,
                asked,
            )
            .await;
        if !c.is_closed() && r.is_ok() {
            self.pool.idle.lock().await.push(c);
        }
        drop(permit);
        let r = r?;
        let Some(applied) = r else {
            return Ok(None);
        };
        if let Some(st) = &staged {
            self.write_rejects(shard, st)?;
        }
        if let Ok(mut t) = self.tally.lock() {
            t.inserted += applied.inserted;
            t.updated += applied.updated;
            t.deleted += applied.deleted;
            t.rejected += staged.as_ref().map_or(0, |s| s.rejects.len() as u64);
            t.changes += n;
            if let Some(at) = last_at {
                t.watermark = Some(t.watermark.map_or(at, |w| w.max(at)));
            }
            t.applying_secs += t0.elapsed().as_secs_f64();
        }
        if let Some(limit) = self.opts.max_rejects {
            let rejected = self.tally.lock().map_or(0, |t| t.rejected);
            if rejected > limit {
                return Err(Error::TooManyRejects {
                    table: self.table(),
                    count: rejected,
                    limit,
                });
            }
        }
        Ok(Some(new_last))
    }

    #[allow(clippy::too_many_arguments)]
    async fn commit(
        &self,
        c: &Client,
        arn: &str,
        shard: &str,
        prev: Option<&str>,
        new_last: Option<&str>,
        last_at: Option<i64>,
        n: u64,
        staged: Option<&Staged>,
        closed: bool,
        asked: SystemTime,
    ) -> Result<Option<Applied>> {
        let table = self.table();
        let pg = |action: &'static str| {
            let table = table.clone();
            move |e: tokio_postgres::Error| Error::pg(&table, action, &e)
        };
        c.batch_execute("BEGIN").await.map_err(pg("begin"))?;
        let r = async {
            let mut applied = Applied::default();
            if let Some(st) = staged.filter(|s| s.rows > 0) {
                let mut copy = CopyStream::start(
                    c,
                    &self.opts.schema,
                    &self.plan.spec,
                    self.config.tuning.copy_write_bytes,
                    true,
                )
                .await?;
                copy.write(st.bytes.clone(), st.rows).await?;
                copy.finish().await?;
                // An item's children are replaced with it (see `sink::children`).
                let kids = self.child_specs();
                let mut sent = Vec::with_capacity(kids.len());
                for (i, child) in kids.iter().enumerate() {
                    let parts = st.children.get(i).cloned().into_iter().collect();
                    let write = self.config.tuning.copy_write_bytes;
                    sent.push(
                        children::copy_rows(c, &self.opts.schema, (i, child), write, true, parts)
                            .await?,
                    );
                }
                if !kids.is_empty() {
                    children::delete_replaced(c, &self.opts.schema, &self.spec, &kids).await?;
                }
                applied = merge_changes(c, &self.opts.schema, &self.spec).await?;
                children::insert_staged(c, &self.opts.schema, &kids, &sent).await?;
            }
            if let Some(st) = staged {
                for (seq, line) in &st.reject_rows {
                    c.execute(
                        "INSERT INTO ddb2pg.stream_rejects (base_run, target_schema, target_table, shard_id, seq, line) \
                         VALUES ($1, $2, $3, $4, $5, $6)",
                        &[&self.base.run, &self.opts.schema, &self.spec.name, &shard, seq, line],
                    )
                    .await
                    .map_err(pg("record a rejected change"))?;
                }
            }
            let rejected = staged.map_or(0, |s| s.rejects.len() as i64);
            let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            let tip = if n == 0 && !closed {
                Some(micros_of(asked) as f64)
            } else {
                None
            };
            let updated = c
                .execute(
                    "UPDATE ddb2pg.stream_shards SET last_seq = COALESCE($6, last_seq), \
                       last_change_at = COALESCE(to_timestamp($7::float8 / 1e6), last_change_at), \
                       tip_at = COALESCE(to_timestamp($8::float8 / 1e6), tip_at), \
                       state = CASE WHEN $9 THEN 'done' ELSE state END, \
                       changes = changes + $10, inserted = inserted + $11, updated = updated + $12, \
                       deleted = deleted + $13, rejected = rejected + $14, batches = batches + 1, \
                       lease_until = now() + make_interval(secs => $15), updated_at = now() \
                     WHERE base_run = $1 AND target_table = $2 AND stream_arn = $3 AND shard_id = $4 \
                       AND worker = $5 AND last_seq IS NOT DISTINCT FROM $16",
                    &[
                        &self.base.run,
                        &self.spec.name,
                        &arn,
                        &shard,
                        &self.worker,
                        &new_last,
                        &last_at.map(|v| v as f64),
                        &tip,
                        &closed,
                        &i(n),
                        &i(applied.inserted),
                        &i(applied.updated),
                        &i(applied.deleted),
                        &rejected,
                        &self.lease(),
                        &prev,
                    ],
                )
                .await
                .map_err(pg("checkpoint the shard"))?;
            Ok::<_, Error>((updated == 1).then_some(applied))
        }
        .await;
        let end = if matches!(r, Ok(Some(_))) {
            "COMMIT"
        } else {
            "ROLLBACK"
        };
        let ended = c.batch_execute(end).await;
        let r = r?;
        ended.map_err(pg("commit the stream page"))?;
        Ok(r)
    }

    fn write_rejects(&self, shard: &str, st: &Staged) -> Result<()> {
        if st.rejects.is_empty() {
            return Ok(());
        }
        use std::io::Write as _;
        let path = &self.opts.rejects_path;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::Rejects {
                path: path.clone(),
                source: e,
            })?;
        let mut out = Vec::new();
        for r in &st.rejects {
            tracing::warn!(table = %self.table(), shard, key = r.key.as_deref().unwrap_or("-"), attribute = r.attribute.as_deref().unwrap_or("-"), "A change was rejected: {}", r.reason);
            out.extend(crate::load::reject_line(Some(&self.spec.name), shard, r));
        }
        f.write_all(&out).map_err(|e| Error::Rejects {
            path: path.clone(),
            source: e,
        })
    }

    /// Gives the leases back, and puts the foreign keys back when no other worker
    /// follows the table.
    async fn end(&self, c: &Client) -> Result<()> {
        c.execute(
            "UPDATE ddb2pg.stream_shards SET worker = NULL, lease_until = NULL WHERE base_run = $1 AND target_table = $2 AND worker = $3",
            &[&self.base.run, &self.spec.name, &self.worker],
        )
        .await
        .map_err(|e| Error::pg("ddb2pg state", "give the shards back", &e))?;
        c.execute(
            "DELETE FROM ddb2pg.stream_workers WHERE worker = $1",
            &[&self.worker],
        )
        .await
        .map_err(|e| Error::pg("ddb2pg state", "leave the workers", &e))?;
        let stop = Arc::new(AtomicBool::new(false));
        lock_schema(c, &self.opts.schema, &stop).await?;
        let done = self.put_foreign_keys_back(c).await;
        let unlocked = unlock_schema(c, &self.opts.schema).await;
        done?;
        unlocked
    }

    async fn put_foreign_keys_back(&self, c: &Client) -> Result<()> {
        let others: i64 = c
            .query_one(
                "SELECT count(*) FROM ddb2pg.stream_workers WHERE target_schema = $1 AND target_table = $2 \
                   AND seen_at > now() - make_interval(secs => $3)",
                &[&self.opts.schema, &self.spec.name, &self.lease()],
            )
            .await
            .map_err(|e| Error::pg("ddb2pg state", "look for other stream workers", &e))?
            .get(0);
        if others > 0 {
            tracing::info!(table = %self.table(), workers = others, "Other syncs still follow this table: its foreign keys stay off until the last one ends.");
            return Ok(());
        }
        let row = c
            .query_opt(
                "SELECT fk_off, fk_tables FROM ddb2pg.stream_syncs WHERE base_run = $1 AND target_table = $2",
                &[&self.base.run, &self.spec.name],
            )
            .await
            .map_err(|e| Error::pg("ddb2pg state", "read the stream sync", &e))?;
        let Some(row) = row.filter(|r| r.get::<_, bool>(0)) else {
            return Ok(());
        };
        let tables: Vec<String> = row.get(1);
        let all = self.config.all_tables();
        let mut specs: Vec<&TableSpec> = self.spec.with_children().collect();
        let own: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        let others: Vec<&TableSpec> = all
            .iter()
            .filter(|t| tables.contains(&t.name) && !own.contains(&t.name.as_str()))
            .collect();
        specs.extend(others);
        for spec in specs {
            for fk in ddl::add_foreign_keys(c, &self.opts.schema, spec).await? {
                if fk.orphans > 0 {
                    tracing::warn!(table = %spec.name, column = %fk.column, references = %fk.references, orphans = fk.orphans, sample = ?fk.sample, "Rows reference missing keys; the foreign key stays NOT VALID.");
                }
            }
        }
        c.execute(
            "UPDATE ddb2pg.stream_syncs SET fk_off = false, fk_tables = '{}' WHERE base_run = $1 AND target_table = $2",
            &[&self.base.run, &self.spec.name],
        )
        .await
        .map(|_| ())
        .map_err(|e| Error::pg("ddb2pg state", "record the foreign keys back", &e))
    }

    fn fill(&self, t: &mut TableSync) {
        let Ok(x) = self.tally.lock() else { return };
        t.inserted += x.inserted;
        t.updated += x.updated;
        t.deleted += x.deleted;
        t.rejected += x.rejected;
        t.changes += x.changes;
        t.seconds += x.applying_secs;
        t.retries += x.retries;
        let elapsed = self.started.elapsed().map_or(0.0, |d| d.as_secs_f64());
        t.changes_per_second = if elapsed > 0.0 {
            t.changes as f64 / elapsed
        } else {
            0.0
        };
        if let Some(w) = x.watermark {
            t.watermark = Some(format_timestamp(w, true));
        }
        // Caught up: every shard was at its tip when the sync ended.
        t.lag_seconds = Some(if self.opts.until_caught_up {
            0.0
        } else {
            x.watermark
                .map_or(0.0, |w| ((now_micros() - w) as f64 / 1e6).max(0.0))
        });
        t.stream = Some(self.source.clone());
    }
}

/// A page of changes decoded and encoded for the stage.
struct Staged {
    bytes: Bytes,
    rows: u64,
    rejects: Vec<crate::decode::Reject>,
    /// Per reject: its sequence number and line, for `ddb2pg.stream_rejects`.
    reject_rows: Vec<(String, String)>,
    /// Per child table, the rows of the puts' elements (COPY tuples, rows).
    children: Vec<(Bytes, u64)>,
}

/// The last change per key of a page, decoded by the mapping and encoded as COPY tuples.
fn stage(plan: &TablePlan, types: &[ColumnType], changes: Vec<Change>) -> Result<Staged> {
    let mut last: HashMap<&str, usize> = HashMap::with_capacity(changes.len());
    for (i, c) in changes.iter().enumerate() {
        last.insert(c.key.as_str(), i);
    }
    let kept: Vec<&Change> = changes
        .iter()
        .enumerate()
        .filter(|(i, c)| last.get(c.key.as_str()) == Some(i))
        .map(|(_, c)| c)
        .collect();
    let mut data = Vec::with_capacity(kept.iter().map(|c| c.line.len() + 1).sum());
    for c in &kept {
        data.extend_from_slice(c.line.as_bytes());
        data.push(b'\n');
    }
    let page = decode_lines(plan, &data, 1).map_err(Error::Internal)?;
    let mut bytes = Vec::new();
    encode_batch(&page.batch, types, &mut bytes)
        .map_err(|e| Error::Internal(format!("encode a stream page: {e:?}")))?;
    let mut children = Vec::with_capacity(page.children.len());
    for (batch, child) in page.children.iter().zip(&plan.children) {
        let types: Vec<ColumnType> = child.plan.types().collect();
        let mut out = Vec::new();
        encode_batch(batch, &types, &mut out)
            .map_err(|e| Error::Internal(format!("encode a stream page: {e:?}")))?;
        children.push((Bytes::from(out), batch.num_rows() as u64));
    }
    let reject_rows = page
        .rejects
        .iter()
        .filter_map(|r| {
            let c = kept.get(usize::try_from(r.line).ok()?.checked_sub(1)?)?;
            Some((c.seq.clone(), c.line.clone()))
        })
        .collect();
    Ok(Staged {
        bytes: Bytes::from(bytes),
        rows: page.batch.num_rows() as u64,
        rejects: page.rejects,
        reject_rows,
        children,
    })
}

fn now_micros() -> i64 {
    micros_of(SystemTime::now())
}

fn micros_of(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "host".into())
}
