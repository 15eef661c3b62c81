//! The COPY writers: each takes pieces off the bounded queue into chunks of about
//! `tuning.chunk_bytes`, one transaction each — `COPY … FROM STDIN (FORMAT binary)`, for
//! an upsert the merge of its staging table, the chunk's checkpoint — retried on a new
//! connection when the connection is lost.
//!
//! Input: encoded [`Piece`]s. Output: committed rows and checkpoints; each piece's split
//! released once committed (its last one marks the split done).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_postgres::Client;

use super::claim::{PieceMark, Worker};
use super::flow::{Failure, Piece, SplitTracker};
use super::input::{Input, LoadOptions};
use super::metrics::{nanos, Counters};
use super::rejects::{record_line, RejectWriter};
use crate::config::{Config, TableSpec};
use crate::error::{Error, Result};
use crate::retry::{pg_backoff, PG_RETRY_FOR};
use crate::sink::changes::{self, Applied};
use crate::sink::copy::CopyStream;
use crate::sink::{children, connect, ddl, Mode};

/// The pieces between the decode/encode jobs and the writers, shared by the writers.
pub(super) type PieceQueue = tokio::sync::Mutex<mpsc::Receiver<Piece>>;

/// What a writer needs.
pub(super) struct WriterCtx {
    url: String,
    schema: String,
    spec: TableSpec,
    /// The columns the COPY sends: the mapping's, and for a sync [`crate::decode::DELETE_COLUMN`].
    copy_spec: TableSpec,
    /// The table's child tables, whose rows each piece carries.
    children: Vec<TableSpec>,
    write_bytes: usize,
    chunk_bytes: usize,
    stage: Stage,
    worker: Arc<Worker>,
    split_names: Arc<Vec<String>>,
    counters: Arc<Counters>,
    failure: Arc<Failure>,
    splits: Arc<SplitTracker>,
    rejects: Arc<RejectWriter>,
    writer: usize,
}

/// Where a writer's COPY goes, and what follows it in the chunk's transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Straight into the table.
    Table,
    /// Into the upsert stage, merged by key.
    Upsert,
    /// Into the changes stage, applied as deletes and puts by key.
    Changes,
}

/// What the writers of a table's pass are started from.
pub(super) struct WriterPlan<'a> {
    pub(super) config: &'a Config,
    pub(super) opts: &'a LoadOptions,
    pub(super) worker: &'a Arc<Worker>,
    pub(super) input: &'a Input,
    pub(super) rejects: &'a Arc<RejectWriter>,
}

/// Starts `tuning.connections` writers on the piece queue; returns the queue's sender
/// and the writers. A writer's error goes to the failure slot as it is.
pub(super) fn start_writers(
    ctx: &WriterPlan<'_>,
    counters: &Arc<Counters>,
    failure: &Arc<Failure>,
    splits: &Arc<SplitTracker>,
) -> (mpsc::Sender<Piece>, tokio::task::JoinSet<()>) {
    let p = ctx.input;
    let tuning = &ctx.config.tuning;
    let connections = tuning.connections.max(1);
    let (piece_tx, piece_rx) = mpsc::channel::<Piece>(connections * 2);
    let piece_rx = Arc::new(PieceQueue::new(piece_rx));
    let split_names: Arc<Vec<String>> = Arc::new(
        (0..p.source.splits())
            .map(|i| p.source.split_name(i))
            .collect(),
    );
    let mut writers = tokio::task::JoinSet::new();
    for n in 0..connections {
        let w = WriterCtx {
            url: ctx.config.target.url.clone(),
            schema: ctx.opts.schema.clone(),
            spec: p.spec.clone(),
            copy_spec: p.plan.spec.clone(),
            children: p.spec.children.iter().map(|c| c.table.clone()).collect(),
            write_bytes: tuning.copy_write_bytes,
            chunk_bytes: tuning.chunk_bytes,
            stage: match ctx.opts.mode {
                Mode::Upsert => Stage::Upsert,
                Mode::Sync => Stage::Changes,
                Mode::Create | Mode::Append | Mode::Replace => Stage::Table,
            },
            worker: ctx.worker.clone(),
            split_names: split_names.clone(),
            counters: counters.clone(),
            failure: failure.clone(),
            splits: splits.clone(),
            rejects: ctx.rejects.clone(),
            writer: n,
        };
        let rx = piece_rx.clone();
        writers.spawn(async move {
            if let Err(e) = write_chunks(&w, &rx).await {
                w.failure.set(e);
            }
        });
    }
    // Only the writers hold the receiver: when they stop (a failure, a signal), a job
    // blocked on a full piece queue gets an error instead of waiting forever.
    (piece_tx, writers)
}

/// One writer: takes pieces until the queue closes, in chunks of about `chunk_bytes`:
/// each chunk is one transaction — `COPY`, (for an upsert, the merge), its checkpoint —
/// retried on a new connection when the connection is lost. On a stop it commits the
/// chunk it holds and ends.
pub(super) async fn write_chunks(w: &WriterCtx, rx: &PieceQueue) -> Result<()> {
    let mut client: Option<Client> = None;
    let mut seq = 0u64;
    loop {
        let next = { rx.lock().await.recv().await };
        let Some(first) = next else { break };
        w.counters.pieces_queued.fetch_sub(1, Ordering::Relaxed);
        w.counters
            .rows_written
            .fetch_add(first.mark.rows, Ordering::Relaxed);
        seq += 1;
        let chunk_id = format!("{}/{}/{seq}", w.worker.id, w.writer);
        let mut pieces = vec![first];
        let applied = commit_chunk(w, &mut client, &mut pieces, rx, &chunk_id).await?;
        w.counters
            .inserted
            .fetch_add(applied.inserted, Ordering::Relaxed);
        w.counters
            .updated
            .fetch_add(applied.updated, Ordering::Relaxed);
        w.counters
            .deleted
            .fetch_add(applied.deleted, Ordering::Relaxed);
        if !w.children.is_empty() {
            if let Ok(mut rows) = w.counters.child_rows.lock() {
                rows.resize(w.children.len(), 0);
                for piece in &pieces {
                    for (n, (_, r)) in rows.iter_mut().zip(&piece.children) {
                        *n += r;
                    }
                }
            }
        }
        for piece in &pieces {
            w.counters
                .rows_committed
                .fetch_add(piece.mark.rows, Ordering::Relaxed);
            w.counters.bytes_copied.fetch_add(
                (piece.bytes.len() + child_bytes(piece)) as u64,
                Ordering::Relaxed,
            );
            w.splits.release(piece.mark.split);
        }
    }
    Ok(())
}

/// Commits the chunk that starts with `pieces` (taking more from the queue on its first
/// attempt), retried on a new connection while the connection is lost; a COMMIT whose
/// answer was lost is looked up, never applied twice. Returns what an upsert or a sync
/// did (nothing for a chunk found committed: its counts are in its checkpoint).
async fn commit_chunk(
    w: &WriterCtx,
    client: &mut Option<Client>,
    pieces: &mut Vec<Piece>,
    rx: &PieceQueue,
    chunk_id: &str,
) -> Result<Applied> {
    let started = Instant::now();
    let mut attempt = 0u32;
    loop {
        let result = match client.as_ref() {
            Some(c) => {
                let more = (attempt == 0).then_some(rx);
                send_chunk(w, c, pieces, more, chunk_id).await
            }
            None => match open_writer(w).await {
                Ok(c) => {
                    *client = Some(c);
                    continue;
                }
                Err(e) => Err(e),
            },
        };
        match result {
            Ok(m) => return Ok(m),
            Err(e) if e.retryable() && started.elapsed() < PG_RETRY_FOR => {
                *client = None; // dropping it ends the transaction on the server
                attempt += 1;
                w.counters.pg_retries.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(table = %w.spec.name, attempt, error = %e, "Chunk retried on a new connection.");
                tokio::time::sleep(pg_backoff(attempt)).await;
                // A COMMIT whose answer was lost may have landed: known before anything
                // is sent again, on a new connection (waited for like the chunk).
                let landed = loop {
                    let looked = match open_writer(w).await {
                        Ok(c) => w.worker.chunk_committed(&c, chunk_id).await.map(|l| (l, c)),
                        Err(e) => Err(e),
                    };
                    match looked {
                        Ok((landed, c)) => {
                            *client = Some(c);
                            break landed;
                        }
                        Err(e) if e.retryable() && started.elapsed() < PG_RETRY_FOR => {
                            attempt += 1;
                            tokio::time::sleep(pg_backoff(attempt)).await;
                        }
                        Err(e) => return Err(e),
                    }
                };
                if landed {
                    // Its rejects committed with it: they go to the file now.
                    let lines = reject_lines(w, pieces);
                    if !lines.is_empty() {
                        w.rejects.turn().await?.append(&lines)?;
                    }
                    return Ok(Applied::default());
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// A writer's connection (and, for an upsert, its staging table, emptied at each commit).
async fn open_writer(w: &WriterCtx) -> Result<Client> {
    let c = connect(&w.url).await?;
    match w.stage {
        Stage::Upsert => ddl::create_upsert_stage(&c, &w.schema, &w.spec).await?,
        Stage::Changes => changes::create_changes_stage(&c, &w.schema, &w.spec).await?,
        Stage::Table => {}
    }
    if w.stage != Stage::Table {
        children::create_stages(&c, &w.schema, &w.children).await?;
    }
    Ok(c)
}

/// One attempt at a chunk: `pieces` are sent again, then (on a first attempt, `more`)
/// further pieces are taken from the queue until the chunk is full, the queue closes or
/// the load stops; then the COPY ends, an upsert merges (a sync applies its changes), the
/// checkpoint goes in, COMMIT. Returns what the merge did.
async fn send_chunk(
    w: &WriterCtx,
    c: &Client,
    pieces: &mut Vec<Piece>,
    more: Option<&PieceQueue>,
    chunk_id: &str,
) -> Result<Applied> {
    let t0 = Instant::now();
    let table = &w.spec.name;
    c.batch_execute("BEGIN")
        .await
        .map_err(|e| Error::pg(table, "begin", &e))?;
    let into_stage = w.stage != Stage::Table;
    let mut stream =
        CopyStream::start(c, &w.schema, &w.copy_spec, w.write_bytes, into_stage).await?;
    // Rejects count towards the chunk's size: memory stays bounded whatever the mix.
    let mut bytes = 0usize;
    for piece in pieces.iter() {
        bytes += piece.bytes.len() + piece.mark.reject_bytes() + child_bytes(piece);
        stream.write(piece.bytes.clone(), piece.mark.rows).await?;
    }
    if let Some(rx) = more {
        while bytes < w.chunk_bytes && !w.failure.cancelled() {
            let next = { rx.lock().await.recv().await };
            let Some(piece) = next else { break };
            w.counters.pieces_queued.fetch_sub(1, Ordering::Relaxed);
            bytes += piece.bytes.len() + piece.mark.reject_bytes() + child_bytes(&piece);
            w.counters
                .rows_written
                .fetch_add(piece.mark.rows, Ordering::Relaxed);
            let data = piece.bytes.clone();
            let rows = piece.mark.rows;
            pieces.push(piece);
            stream.write(data, rows).await?;
        }
    }
    stream.finish().await?;
    // The child tables' rows of the chunk's items, in the same transaction: an item and
    // its children commit together. An upsert or a sync stages them: the children of
    // every staged item are replaced (deleted before the item's merge, the staged ones
    // inserted after it).
    let mut sent = Vec::with_capacity(w.children.len());
    for (i, child) in w.children.iter().enumerate() {
        let parts: Vec<(bytes::Bytes, u64)> = pieces
            .iter()
            .filter_map(|p| p.children.get(i).cloned())
            .collect();
        sent.push(
            children::copy_rows(c, &w.schema, (i, child), w.write_bytes, into_stage, parts).await?,
        );
    }
    if into_stage && !w.children.is_empty() {
        children::delete_replaced(c, &w.schema, &w.spec, &w.children).await?;
    }
    let merged = match w.stage {
        Stage::Upsert => {
            let (inserted, updated) =
                ddl::merge_upsert_stage(c, &w.schema, &w.spec, &copy_order(pieces)).await?;
            Applied {
                inserted,
                updated,
                deleted: 0,
            }
        }
        Stage::Changes => changes::merge_changes(c, &w.schema, &w.spec).await?,
        Stage::Table => Applied::default(),
    };
    if into_stage {
        children::insert_staged(c, &w.schema, &w.children, &sent).await?;
    }
    let marks: Vec<&PieceMark> = pieces.iter().map(|p| &p.mark).collect();
    w.worker
        .checkpoint(
            c,
            &w.schema,
            table,
            chunk_id,
            &marks,
            &w.split_names,
            merged,
        )
        .await?;
    // The chunk's rejects go to the file once they are committed, under the file's turn
    // (so a rebuild by another worker sees the commit and its lines together, or neither).
    let lines = reject_lines(w, pieces);
    let turn = match lines.is_empty() {
        true => None,
        false => Some(w.rejects.turn().await?),
    };
    c.batch_execute("COMMIT")
        .await
        .map_err(|e| Error::pg(table, "commit a chunk", &e))?;
    if let Some(turn) = &turn {
        turn.append(&lines)?;
    }
    drop(turn);
    w.counters.write_ns.fetch_add(nanos(t0), Ordering::Relaxed);
    Ok(merged)
}

/// The COPY bytes a piece holds for child tables.
fn child_bytes(piece: &Piece) -> usize {
    piece.children.iter().map(|c| c.0.len()).sum()
}

/// Per piece of a chunk, in COPY order: its first row (1-based) and its rank by source
/// position (split, then first line), for an upsert's "the last line of a key wins".
fn copy_order(pieces: &[Piece]) -> Vec<(i64, i32)> {
    let mut by_source: Vec<usize> = (0..pieces.len()).collect();
    by_source.sort_by_key(|&i| (pieces[i].mark.split, pieces[i].mark.first_line));
    let mut rank = vec![0i32; pieces.len()];
    for (r, &i) in by_source.iter().enumerate() {
        rank[i] = i32::try_from(r).unwrap_or(i32::MAX);
    }
    let mut start = 1i64;
    // A piece without rows (all rejects) would share its start with the next one.
    pieces
        .iter()
        .zip(rank)
        .filter(|(p, _)| p.mark.rows > 0)
        .map(|(p, r)| {
            let first = start;
            start += i64::try_from(p.mark.rows).unwrap_or(i64::MAX);
            (first, r)
        })
        .collect()
}

/// The rejects file lines of a chunk's pieces.
fn reject_lines(w: &WriterCtx, pieces: &[Piece]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in pieces {
        let split = w
            .split_names
            .get(p.mark.split as usize)
            .map_or("", String::as_str);
        for r in &p.mark.rejects {
            let table = r.table.as_deref().unwrap_or(&w.spec.name);
            out.extend_from_slice(&record_line((!r.unrouted).then_some(table), split, r));
        }
    }
    out
}
