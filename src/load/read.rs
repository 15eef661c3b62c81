//! The reader threads: each claims a split (an export data file, a scan segment), reads
//! it — skipping the lines already committed, a scan from its saved position — into pages
//! of whole lines, hands them to the bounded page queue, and claims the next, until none
//! is left. Plain threads: gunzip and the SDK's blocking calls never hold a tokio worker.
//!
//! Input: the run's splits. Output: `(split, Page)` on the page queue.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::control::Control;

use super::claim::Worker;
use super::flow::{Failure, SplitTracker};
use super::metrics::{nanos, Counters};
use crate::config::Tuning;
use crate::decode::TablePlan;
use crate::error::Error;
use crate::source::{split_page, Page, SourcePlan};

/// A page and the split it came from, between the readers and the dispatcher.
pub(super) type PageQueue = crossbeam_channel::Sender<(u32, Page)>;

/// What the reading side of a table's pass shares (readers and the dispatcher).
pub(super) struct Reading {
    pub(super) source: SourcePlan,
    pub(super) plan: Arc<TablePlan>,
    pub(super) pool: Arc<rayon::ThreadPool>,
    pub(super) max_rejects: Option<u64>,
    pub(super) counters: Arc<Counters>,
    pub(super) failure: Arc<Failure>,
    pub(super) table: String,
    pub(super) worker: Arc<Worker>,
    pub(super) control: Arc<Control>,
    pub(super) handle: tokio::runtime::Handle,
    pub(super) splits: Arc<SplitTracker>,
    /// Splits this pass claimed.
    pub(super) claimed: AtomicUsize,
    /// Their numbers; the lock also makes this process's claims one at a time.
    pub(super) taken: std::sync::Mutex<Vec<i32>>,
}

/// Starts the reader threads (`tuning.readers`, or the scan's segments at once).
pub(super) fn spawn_readers(
    r: &Arc<Reading>,
    tuning: &Tuning,
    page_tx: PageQueue,
) -> Vec<std::thread::JoinHandle<()>> {
    let mut handles = Vec::new();
    for i in 0..r.source.readers(tuning) {
        let reading = r.clone();
        let page_tx = page_tx.clone();
        let (page_bytes, page_lines) = (tuning.page_bytes, tuning.batch_rows);
        let spawned = std::thread::Builder::new()
            .name(format!("ddb2pg-read-{i}"))
            .spawn(move || read_splits(&reading, &page_tx, page_bytes, page_lines));
        match spawned {
            Ok(h) => handles.push(h),
            Err(e) => r.failure.set(Error::Io {
                what: "start a reader thread".into(),
                source: e,
            }),
        }
    }
    handles
}

/// A reader thread: claims a split, reads it (skipping lines already committed, a scan
/// from its saved position), hands its pages on, and claims the next, until none is left.
fn read_splits(r: &Reading, page_tx: &PageQueue, page_bytes: usize, page_lines: usize) {
    let fail = &r.failure;
    let counters = &r.counters;
    loop {
        if fail.cancelled() {
            return;
        }
        let got = {
            let Ok(mut taken) = r.taken.lock() else {
                fail.set(Error::Internal("the claimed splits are poisoned".into()));
                return;
            };
            let held = taken.clone();
            let claim = r.control.retry("claim a split", |c| {
                let held = &held;
                async move { r.worker.claim(&c, &r.table, held).await }
            });
            let got = r.handle.block_on(claim);
            if let Ok(Some((idx, _))) = &got {
                taken.push(i32::try_from(*idx).unwrap_or(i32::MAX));
            }
            got
        };
        let claimed = match got {
            Ok(Some(c)) => c,
            Ok(None) => return,
            Err(e) => {
                fail.set(e);
                return;
            }
        };
        let (idx, resume) = claimed;
        r.claimed.fetch_add(1, Ordering::Relaxed);
        // The reader's own hold on the split until it has read it to the end.
        if !r.splits.hold(idx) {
            fail.set(Error::Internal(format!(
                "table {}: split {idx} is not in this source's plan",
                r.table
            )));
            return;
        }
        let span = tracing::debug_span!("split", name = %r.source.split_name(idx as usize));
        let _g = span.enter();
        if !resume.is_empty() {
            tracing::debug!(done = ?resume.done, start = ?resume.start.as_ref().map(|s| s.0), "Split resumed.");
        }
        let t0 = Instant::now();
        let start = if matches!(r.source, SourcePlan::Scan(_)) {
            resume.start.as_ref()
        } else {
            None
        };
        let res = r.source.read_split(
            idx as usize,
            page_bytes,
            page_lines,
            &counters.bytes_read,
            &fail.cancel,
            start,
            |page| {
                let w = Instant::now();
                let mut ok = true;
                for page in split_page(page, &resume.done) {
                    // Counted before the send, so the receiver never sees it below zero.
                    counters.pages_queued.fetch_add(1, Ordering::Relaxed);
                    r.splits.hold(idx);
                    if page_tx.send((idx, page)).is_err() {
                        counters.pages_queued.fetch_sub(1, Ordering::Relaxed);
                        ok = false;
                        break;
                    }
                }
                counters
                    .read_blocked_ns
                    .fetch_add(nanos(w), Ordering::Relaxed);
                ok
            },
        );
        counters.read_ns.fetch_add(nanos(t0), Ordering::Relaxed);
        match res {
            // A stopped read returns early: the split stays unfinished.
            Ok(_) if fail.cancelled() => return,
            Ok(stats) => {
                counters
                    .bytes_uncompressed
                    .fetch_add(stats.uncompressed, Ordering::Relaxed);
                tracing::debug!(lines = stats.lines, "Split read.");
                r.splits.release(idx);
            }
            Err(e) => {
                fail.set(e);
                return;
            }
        }
    }
}
