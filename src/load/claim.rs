//! A worker's hold on its splits: claims (`FOR UPDATE SKIP LOCKED`), the lease it renews,
//! the checkpoint each chunk commits with (its line ranges, the splits' counters, its
//! rejects), and whether a chunk whose COMMIT answer was lost did land.
//!
//! A claim lapses at once when the worker's connection is gone (a killed process) or when
//! its lease runs out (a lost machine); a chunk's checkpoint checks the worker still holds
//! each of its splits, so a worker that lost a claim never commits beside the new holder.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use tokio_postgres::Client;

use super::state::fail;
use crate::decode::Reject;
use crate::error::{Error, Result};
use crate::sink::changes::Applied;
use crate::source::{done_prefix, merge_ranges, Resume};

/// Where one worker stands in one run.
#[derive(Debug, Clone)]
pub(super) struct Worker {
    pub run: i64,
    /// `host:pid:nonce`, unique per process.
    pub id: String,
    pub lease: Duration,
}

impl Worker {
    /// A worker id for this process.
    #[must_use]
    pub(super) fn new(run: i64, lease: Duration) -> Worker {
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
    ///
    /// A split this worker claimed whose answer was lost (the claim landed, the
    /// connection went) is running under this worker but not in `taken` (the splits this
    /// pass holds): it is claimed again, never left held and unread.
    pub(super) async fn claim(
        &self,
        c: &Client,
        table: &str,
        taken: &[i32],
        want: i64,
    ) -> Result<Vec<(u32, Resume)>> {
        let rows = c
            .query(
                "UPDATE ddb2pg.splits s SET state = 'running', worker = $3, holder_pid = pg_backend_pid(), \
                   holder_start = (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()), \
                   lease_until = now() + make_interval(secs => $4), claims = s.claims + 1, updated_at = now() \
                 WHERE (s.run_id, s.target_table, s.split) IN ( \
                   SELECT c.run_id, c.target_table, c.split FROM ddb2pg.splits c \
                   WHERE c.run_id = $1 AND c.target_table = $2 AND (c.state = 'pending' OR (c.state = 'running' \
                     AND (c.lease_until < now() OR NOT EXISTS (SELECT 1 FROM pg_stat_activity a \
                       WHERE a.pid = c.holder_pid AND a.backend_start = c.holder_start))) \
                     OR (c.state = 'running' AND c.worker = $3 AND NOT (c.split = ANY($5)))) \
                   LIMIT $6 FOR UPDATE SKIP LOCKED) \
                 RETURNING s.split",
                &[&self.run, &table, &self.id, &self.lease_secs(), &taken, &want.max(1)],
            )
            .await
            .map_err(|e| fail("claim a split", &e))?;
        let mut splits: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
        if splits.is_empty() {
            return Ok(Vec::new());
        }
        splits.sort_unstable();
        let chunks = c
            .query(
                "SELECT split, first_line, last_line, edge_line, edge_key FROM ddb2pg.chunks \
                 WHERE run_id = $1 AND target_table = $2 AND split = ANY($3)",
                &[&self.run, &table, &splits],
            )
            .await
            .map_err(|e| fail("read a split's chunks", &e))?;
        Ok(splits
            .iter()
            .map(|&split| {
                let of: Vec<_> = chunks
                    .iter()
                    .filter(|r| r.get::<_, i32>(0) == split)
                    .collect();
                let done = merge_ranges(
                    of.iter()
                        .map(|r| {
                            let a: i64 = r.get(1);
                            let b: i64 = r.get(2);
                            (a.max(0) as u64, b.max(0) as u64)
                        })
                        .collect(),
                );
                let prefix = done_prefix(&done);
                let start = of
                    .iter()
                    .filter_map(|r| {
                        let line: Option<i64> = r.get(3);
                        let key: Option<String> = r.get(4);
                        Some((line?.max(0) as u64, key?))
                    })
                    .filter(|(line, _)| *line <= prefix)
                    .max_by_key(|(line, _)| *line);
                (u32::try_from(split).unwrap_or(0), Resume { done, start })
            })
            .collect())
    }

    /// Renews the lease of every split this worker holds.
    ///
    /// # Errors
    /// SQL fails.
    pub(super) async fn renew(&self, c: &Client) -> Result<()> {
        c.execute(
            "UPDATE ddb2pg.splits SET lease_until = now() + make_interval(secs => $3) \
             WHERE run_id = $1 AND worker = $2 AND state = 'running'",
            &[&self.run, &self.id, &self.lease_secs()],
        )
        .await
        .map(|_| ())
        .map_err(|e| fail("renew the lease", &e))
    }

    /// Marks splits done (every line of each committed), in one transaction.
    ///
    /// # Errors
    /// A split was taken over by another worker, or SQL fails.
    pub(super) async fn splits_done(&self, c: &Client, table: &str, splits: &[u32]) -> Result<()> {
        let splits: Vec<i32> = splits.iter().map(|&s| s as i32).collect();
        let marked = c
            .query(
                "UPDATE ddb2pg.splits SET state = 'done', lease_until = NULL, last_error = NULL, updated_at = now() \
                 WHERE run_id = $1 AND target_table = $2 AND split = ANY($3) AND worker = $4 AND state IN ('running', 'done') \
                 RETURNING split",
                &[&self.run, &table, &splits, &self.id],
            )
            .await
            .map_err(|e| fail("mark a split done", &e))?;
        if marked.len() < splits.len() {
            let mine: Vec<i32> = marked.iter().map(|r| r.get(0)).collect();
            let gone = splits
                .iter()
                .copied()
                .find(|s| !mine.contains(s))
                .unwrap_or(0);
            return Err(lost(table, gone));
        }
        Ok(())
    }

    /// Gives back the splits this worker holds of `table` after a failure, with the error.
    pub(super) async fn release(&self, c: &Client, table: &str, error: &str) {
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
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn checkpoint(
        &self,
        c: &Client,
        schema: &str,
        table: &str,
        chunk_id: &str,
        pieces: &[&PieceMark],
        split_names: &[String],
        applied: Applied,
    ) -> Result<()> {
        // Per split: rows, rejects, bytes — in split order, the order rows get locked.
        let mut per: BTreeMap<u32, (i64, i64, i64)> = BTreeMap::new();
        for p in pieces {
            let e = per.entry(p.split).or_default();
            e.0 += p.rows as i64;
            // The pass's own rejects: a riding table's are its own (ddb2pg.rejects).
            // (Nor is an unrouted item kept: no table's.)
            e.1 += p
                .rejects
                .iter()
                .filter(|r| r.table.is_none() && !r.unrouted)
                .count() as i64;
            e.2 += p.bytes as i64;
        }
        let splits: Vec<i32> = per.keys().map(|&s| s as i32).collect();
        // The run is still running, and cannot be abandoned until this commits.
        super::state::lock_live_run(c, self.run, table).await?;
        self.lock_own_splits(c, table, &splits).await?;
        let rows: Vec<i64> = per.values().map(|v| v.0).collect();
        let rej: Vec<i64> = per.values().map(|v| v.1).collect();
        let bytes: Vec<i64> = per.values().map(|v| v.2).collect();
        // What the chunk's merge did is counted on its first split (the sums are the run's).
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let (ins, upd, del) = (n(applied.inserted), n(applied.updated), n(applied.deleted));
        c.execute(
            "UPDATE ddb2pg.splits s SET rows_done = s.rows_done + u.r, rejected = s.rejected + u.j, \
               bytes_done = s.bytes_done + u.b, chunks = s.chunks + 1, \
               inserted = s.inserted + CASE WHEN u.split = $3[1] THEN $8::int8 ELSE 0 END, \
               updated = s.updated + CASE WHEN u.split = $3[1] THEN $9::int8 ELSE 0 END, \
               deleted = s.deleted + CASE WHEN u.split = $3[1] THEN $10::int8 ELSE 0 END, \
               lease_until = now() + make_interval(secs => $7), updated_at = now() \
             FROM unnest($3::int[], $4::int8[], $5::int8[], $6::int8[]) AS u(split, r, j, b) \
             WHERE s.run_id = $1 AND s.target_table = $2 AND s.split = u.split",
            &[&self.run, &table, &splits, &rows, &rej, &bytes, &self.lease_secs(), &ins, &upd, &del],
        )
        .await
        .map_err(|e| Error::pg(table, "update the chunk's splits", &e))?;
        self.record_ranges(c, table, chunk_id, pieces).await?;
        self.record_rejects(c, schema, table, pieces, split_names)
            .await
    }

    /// Locks the chunk's splits, each still held by this worker (else [`Error::SplitLost`]).
    async fn lock_own_splits(&self, c: &Client, table: &str, splits: &[i32]) -> Result<()> {
        let locked = c
            .query(
                "SELECT split FROM ddb2pg.splits WHERE run_id = $1 AND target_table = $2 AND split = ANY($3) \
                 AND worker = $4 AND state = 'running' ORDER BY split FOR UPDATE",
                &[&self.run, &table, &splits, &self.id],
            )
            .await
            .map_err(|e| Error::pg(table, "lock the chunk's splits", &e))?;
        if locked.len() == splits.len() {
            return Ok(());
        }
        let mine: Vec<i32> = locked.iter().map(|r| r.get(0)).collect();
        let gone = splits
            .iter()
            .copied()
            .find(|s| !mine.contains(s))
            .unwrap_or(0);
        Err(lost(table, gone))
    }

    /// The chunk's line ranges (adjacent pieces of a split merged), with a scan's position
    /// after each.
    async fn record_ranges(
        &self,
        c: &Client,
        table: &str,
        chunk_id: &str,
        pieces: &[&PieceMark],
    ) -> Result<()> {
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
        Ok(())
    }

    /// The chunk's rejects, with their original items, in `ddb2pg.rejects`.
    async fn record_rejects(
        &self,
        c: &Client,
        schema: &str,
        table: &str,
        pieces: &[&PieceMark],
        split_names: &[String],
    ) -> Result<()> {
        let rejects: Vec<(&String, &Reject)> = pieces
            .iter()
            .flat_map(|p| {
                let name = split_names.get(p.split as usize);
                p.rejects.iter().filter_map(move |r| Some((name?, r)))
            })
            .collect();
        if rejects.is_empty() {
            return Ok(());
        }
        let split: Vec<Cow<'_, str>> = rejects.iter().map(|r| no_nul(r.0)).collect();
        let pos: Vec<i64> = rejects.iter().map(|r| r.1.line as i64).collect();
        let key_text: Vec<Option<Cow<'_, str>>> = rejects
            .iter()
            .map(|r| r.1.key.as_deref().map(no_nul))
            .collect();
        let key: Vec<Option<String>> = rejects
            .iter()
            .map(|r| r.1.key.as_deref().map(jsonb_safe))
            .collect();
        let raw: Vec<Option<&[u8]>> = rejects.iter().map(|r| r.1.item_raw.as_deref()).collect();
        let attr: Vec<Option<Cow<'_, str>>> = rejects
            .iter()
            .map(|r| r.1.attribute.as_deref().map(no_nul))
            .collect();
        let reason: Vec<Cow<'_, str>> = rejects.iter().map(|r| no_nul(&r.1.reason)).collect();
        let item: Vec<Cow<'_, str>> = rejects.iter().map(|r| no_nul(&r.1.item)).collect();
        // A reject of a table riding on the pass's source is that table's.
        // An unrouted item kept is recorded under the pass's table, marked `unrouted`.
        let tables: Vec<&str> = rejects
            .iter()
            .map(|r| r.1.table.as_deref().unwrap_or(table))
            .collect();
        let unrouted: Vec<bool> = rejects.iter().map(|r| r.1.unrouted).collect();
        c.execute(
            "INSERT INTO ddb2pg.rejects (run_id, target_schema, target_table, split, position, key, key_text, attribute, reason, item, item_raw, unrouted) \
             SELECT $1, $2, t, s, p, k::jsonb, kt, a, r, i, ir, u \
             FROM unnest($3::text[], $4::text[], $5::int8[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::bytea[], $12::bool[]) \
               AS u(t, s, p, k, kt, a, r, i, ir, u)",
            &[&self.run, &schema, &tables, &split, &pos, &key, &key_text, &attr, &reason, &item, &raw, &unrouted],
        )
        .await
        .map_err(|e| Error::pg(table, "record the chunk's rejects", &e))?;
        Ok(())
    }

    /// Whether a chunk committed (after its COMMIT's answer was lost with the connection).
    ///
    /// # Errors
    /// SQL fails.
    pub(super) async fn chunk_committed(&self, c: &Client, chunk_id: &str) -> Result<bool> {
        c.query_one(
            "SELECT EXISTS (SELECT 1 FROM ddb2pg.chunks WHERE run_id = $1 AND chunk_id = $2)",
            &[&self.run, &chunk_id],
        )
        .await
        .map(|r| r.get(0))
        .map_err(|e| Error::pg("ddb2pg state", "check whether a chunk committed", &e))
    }
}

/// Text as a PostgreSQL text column holds it: a U+0000 (an attribute name, a value quoted
/// in a reason) becomes the six characters `\u0000`.
fn no_nul(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\\u0000"))
    } else {
        Cow::Borrowed(s)
    }
}

/// A key's JSON as jsonb can hold it: jsonb has no U+0000, so a NUL in a key's text is
/// written as the six characters `\u0000` there (`key_text` keeps the key as it was).
fn jsonb_safe(key: &str) -> String {
    if !key.contains("\\u0000") {
        return key.to_string();
    }
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::String(s) => *s = s.replace('\0', "\\u0000"),
            serde_json::Value::Array(a) => a.iter_mut().for_each(walk),
            serde_json::Value::Object(o) => {
                let taken = std::mem::take(o);
                for (k, mut v) in taken {
                    walk(&mut v);
                    o.insert(k.replace('\0', "\\u0000"), v);
                }
            }
            _ => {}
        }
    }
    match serde_json::from_str::<serde_json::Value>(key) {
        Ok(mut v) => {
            walk(&mut v);
            v.to_string()
        }
        Err(_) => "null".into(),
    }
}

fn lost(table: &str, split: i32) -> Error {
    Error::SplitLost {
        table: table.to_string(),
        split,
    }
}

/// A checkpoint row: split, first and last line, rows, and a scan position after it.
type Range = (u32, u64, u64, u64, Option<(u64, String)>);

/// What a chunk's checkpoint needs to know about one of its pieces (one page).
#[derive(Debug, Clone)]
pub(super) struct PieceMark {
    pub split: u32,
    pub first_line: u64,
    pub last_line: u64,
    pub rows: u64,
    pub bytes: u64,
    /// A scan's position after `last_line`.
    pub edge: Option<std::sync::Arc<str>>,
    pub rejects: Vec<Reject>,
}

impl PieceMark {
    /// What its rejects weigh towards a chunk's size: their bytes, times
    /// [`REJECT_WEIGHT`]: a chunk's rejects are copied into their statement's parameters,
    /// its encoding and the rejects file's lines while it commits, so a chunk holds at most
    /// 1/32 of `chunk_bytes` of them (measured: 1M rejected items peak at the clean
    /// load's memory + 10 MB, and commit faster than in bigger chunks), and any mix of rows and rejects stays within
    /// the memory of a clean load.
    pub(super) fn reject_bytes(&self) -> usize {
        REJECT_WEIGHT
            * self
                .rejects
                .iter()
                .map(|r| {
                    96 + r.item.len()
                        + r.reason.len()
                        + r.key.as_ref().map_or(0, String::len)
                        + r.item_raw.as_ref().map_or(0, Vec::len)
                })
                .sum::<usize>()
    }
}

/// See [`PieceMark::reject_bytes`].
const REJECT_WEIGHT: usize = 32;
