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
use crate::source::{split_page, Page, Resume, SourcePlan};

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
    /// Reader threads of the pass.
    pub(super) readers: usize,
}

impl Reading {
    /// How many splits a reader claims at once: export files until about
    /// [`CLAIM_BYTES`] of them (at most [`CLAIM_MAX`], and few enough that every reader
    /// gets its share); one scan segment at a time. Many small files then cost one claim
    /// per batch, not a transaction (and a flush of the server's log) each.
    fn claim_batch(&self) -> i64 {
        let SourcePlan::Export(e) = &self.source else {
            return 1;
        };
        let files = e.files.len().max(1) as u64;
        let mean = (e.compressed_bytes() / files).max(1);
        let by_size = (CLAIM_BYTES / mean).clamp(1, CLAIM_MAX);
        let share = (files / (4 * self.readers.max(1) as u64)).max(1);
        i64::try_from(by_size.min(share)).unwrap_or(1)
    }
}

/// About how many compressed bytes of export files a reader claims at once.
const CLAIM_BYTES: u64 = 4 << 20;
/// The most splits a reader claims at once.
const CLAIM_MAX: u64 = 1024;

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
    let mut claimed: std::collections::VecDeque<(u32, Resume)> = std::collections::VecDeque::new();
    let want = r.claim_batch();
    loop {
        if fail.cancelled() {
            return;
        }
        if claimed.is_empty() {
            let Ok(mut taken) = r.taken.lock() else {
                fail.set(Error::Internal("the claimed splits are poisoned".into()));
                return;
            };
            let held = taken.clone();
            let claim = r.control.retry("claim a split", |c| {
                let held = &held;
                async move { r.worker.claim(&c, &r.table, held, want).await }
            });
            match r.handle.block_on(claim) {
                Ok(got) if got.is_empty() => return,
                Ok(got) => {
                    taken.extend(
                        got.iter()
                            .map(|(idx, _)| i32::try_from(*idx).unwrap_or(i32::MAX)),
                    );
                    claimed.extend(got);
                }
                Err(e) => {
                    fail.set(e);
                    return;
                }
            }
        }
        let Some(claimed_split) = claimed.pop_front() else {
            continue;
        };
        let (idx, resume) = claimed_split;
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
