//! The CPU stage: a dispatcher thread takes pages off the bounded page queue and runs one
//! rayon job per page — decode + map, then encode — holding a token per job in flight, so
//! at most `cpu_threads + 2` pages are being worked on; each job hands its [`Piece`] to
//! the bounded piece queue in front of the writers.
//!
//! Input: `(split, Page)`. Output: [`Piece`]s, and the page's rejects recorded.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::claim::PieceMark;
use super::flow::Piece;
use super::metrics::nanos;
use super::read::Reading;
use super::rejects::RejectSink;
use crate::config::Tuning;
use crate::decode::{decode_page, TablePlan};
use crate::encode::encode_batch;
use crate::error::{Error, Result};
use crate::schema::ColumnType;
use crate::source::Page;

/// Starts the dispatcher thread; it ends when the page queue closes (every reader done)
/// or the pass fails, once its jobs in flight are done.
pub(super) fn spawn_dispatcher(
    r: &Arc<Reading>,
    tuning: &Tuning,
    page_rx: crossbeam_channel::Receiver<(u32, Page)>,
    piece_tx: mpsc::Sender<Piece>,
) -> Option<std::thread::JoinHandle<()>> {
    let in_flight = tuning.cpu_threads + 2;
    let types: Arc<Vec<ColumnType>> = Arc::new(r.plan.types().collect());
    let dispatch = r.clone();
    let spawned = std::thread::Builder::new()
        .name("ddb2pg-dispatch".into())
        .spawn(move || {
            let r = dispatch;
            let (token_tx, token_rx) = crossbeam_channel::bounded::<()>(in_flight);
            for (split, page) in page_rx {
                r.counters.pages_queued.fetch_sub(1, Ordering::Relaxed);
                if r.failure.cancelled() || token_tx.send(()).is_err() {
                    break;
                }
                let (r, types, piece_tx, token_rx) =
                    (r.clone(), types.clone(), piece_tx.clone(), token_rx.clone());
                r.pool.clone().spawn(move || {
                    page_job(&r, &types, split, page, &piece_tx);
                    let _ = token_rx.recv();
                });
            }
            // Wait for the jobs in flight: each returns its token.
            for _ in 0..in_flight {
                let _ = token_tx.send(());
            }
        });
    match spawned {
        Ok(h) => Some(h),
        // Without a dispatcher nothing reaches the writers: fail, never commit an empty load.
        Err(e) => {
            r.failure.set(Error::Io {
                what: "start the dispatcher thread".into(),
                source: e,
            });
            None
        }
    }
}

/// One rayon job: the page decoded and encoded (a panic caught: in rayon's `spawn` it
/// would abort the process), its rejects recorded, its piece queued for the writers.
fn page_job(
    r: &Reading,
    types: &[ColumnType],
    split: u32,
    page: Page,
    piece_tx: &mpsc::Sender<Piece>,
) {
    let t0 = Instant::now();
    let result = catch_unwind(AssertUnwindSafe(|| {
        process_page(&r.plan, types, split, page)
    }));
    r.counters.cpu_ns.fetch_add(nanos(t0), Ordering::Relaxed);
    let (piece, split_name, (items, skipped, unrouted), riders) = match result {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => return r.failure.set(e),
        Err(panic) => return r.failure.set(Error::panic("decode/encode", panic.as_ref())),
    };
    r.counters.items.fetch_add(items, Ordering::Relaxed);
    if riders.iter().any(|c| c.0 + c.1 > 0) {
        count_riders(r, &riders, &piece.mark.rejects);
    }
    if skipped + unrouted > 0 {
        r.counters.skipped.fetch_add(skipped, Ordering::Relaxed);
        r.counters.unrouted.fetch_add(unrouted, Ordering::Relaxed);
        let kept = piece.mark.rejects.iter().filter(|x| x.unrouted).count() as u64;
        r.counters.unrouted_kept.fetch_add(kept, Ordering::Relaxed);
    }
    if !piece.mark.rejects.is_empty() {
        let sink = RejectSink {
            table: &r.table,
            max_rejects: r.max_rejects,
            counters: &r.counters,
            failure: &r.failure,
        };
        sink.record(&split_name, &piece.mark.rejects);
    }
    if r.failure.cancelled() {
        return;
    }
    let w = Instant::now();
    // Counted before the send, so the writers never see it below zero.
    r.counters.pieces_queued.fetch_add(1, Ordering::Relaxed);
    // An error means the writers have gone: a failure is already recorded.
    if piece_tx.blocking_send(piece).is_err() {
        r.counters.pieces_queued.fetch_sub(1, Ordering::Relaxed);
    }
    r.counters
        .cpu_blocked_ns
        .fetch_add(nanos(w), Ordering::Relaxed);
}

/// Adds a page's figures for the tables riding on the source: items taken, left, rejected.
fn count_riders(r: &Reading, riders: &[(u64, u64)], rejects: &[crate::decode::Reject]) {
    let Ok(mut counts) = r.counters.rider_counts.lock() else {
        return;
    };
    counts.resize(r.plan.children.len(), (0, 0, 0));
    for ((c, child), (taken, left)) in counts.iter_mut().zip(&r.plan.children).zip(riders) {
        c.0 += taken;
        c.1 += left;
        if child.rides && *taken > 0 {
            let name = child.plan.spec.name.as_str();
            c.2 += rejects
                .iter()
                .filter(|x| x.table.as_deref() == Some(name))
                .count() as u64;
        }
    }
}

/// What one page gave: its piece, the split's name, the items it held (the table's,
/// those left to other tables, those no table takes), and per riding table the items it
/// took and left.
type PageDone = (Piece, String, (u64, u64, u64), Vec<(u64, u64)>);

/// Decode + encode of one page: its piece, the split's name and the items it held (the
/// table's, those left to other tables, those no table takes).
///
/// # Errors
/// A page that cannot be decoded at all (not a reject: e.g. a line cut by a bad gzip), or
/// a batch that does not match the column encoders (a bug).
fn process_page(
    plan: &TablePlan,
    types: &[ColumnType],
    split: u32,
    page: Page,
) -> Result<PageDone> {
    let split_name = page.origin.to_string();
    let (first_line, last_line, edge) = (page.first_line, page.last_line(), page.edge.clone());
    let decoded = decode_page(plan, &page).map_err(|reason| Error::DataFile {
        key: split_name.clone(),
        reason: format!("lines from {}: {reason}", page.first_line),
    })?;
    drop(page);
    let mut out = Vec::new();
    encode_batch(&decoded.batch, types, &mut out).map_err(|e| Error::Internal(e.to_string()))?;
    let mut children = Vec::with_capacity(decoded.children.len());
    for (batch, child) in decoded.children.iter().zip(&plan.children) {
        let types: Vec<ColumnType> = child.plan.types().collect();
        let mut bytes = Vec::new();
        encode_batch(batch, &types, &mut bytes).map_err(|e| Error::Internal(e.to_string()))?;
        children.push((Bytes::from(bytes), batch.num_rows() as u64));
    }
    let riders = decoded.riders;
    let piece = Piece {
        children,
        mark: PieceMark {
            split,
            first_line,
            last_line,
            rows: decoded.batch.num_rows() as u64,
            bytes: out.len() as u64,
            edge,
            rejects: decoded.rejects,
        },
        bytes: Bytes::from(out),
    };
    Ok((
        piece,
        split_name,
        (decoded.items, decoded.skipped, decoded.unrouted),
        riders,
    ))
}
