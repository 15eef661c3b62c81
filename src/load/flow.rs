//! What flows between the load's stages and how they stop together: the [`Piece`] a
//! decode/encode job hands to the writers, the first-error-wins [`Failure`] slot every
//! stage checks, the signal watch (Ctrl-C, SIGTERM) and tasks that end with their owner.
//!
//! Input: errors and signals from any stage. Output: one error, and a flag all stages stop on.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::claim::PieceMark;
use crate::error::Error;

/// One page, decoded and encoded: what a decode/encode job hands to the writers. A
/// chunk (one transaction with its checkpoint) holds many.
pub(super) struct Piece {
    pub(super) bytes: Bytes,
    /// Where its rows came from, for the checkpoint.
    pub(super) mark: PieceMark,
    /// Per child table of the table, its rows of the page's items (COPY bytes, rows):
    /// committed in the same chunk.
    pub(super) children: Vec<(Bytes, u64)>,
}

/// First error wins; everyone checks `cancel`.
#[derive(Default)]
pub(super) struct Failure {
    pub(super) cancel: AtomicBool,
    pub(super) first: Mutex<Option<Error>>,
}

impl Failure {
    pub(super) fn set(&self, e: Error) {
        if let Ok(mut slot) = self.first.lock() {
            if slot.is_none() {
                *slot = Some(e);
            }
        }
        self.cancel.store(true, Ordering::SeqCst);
    }

    pub(super) fn take(&self) -> Option<Error> {
        self.first.lock().ok().and_then(|mut s| s.take())
    }

    pub(super) fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

/// Ctrl-C (SIGINT) or SIGTERM sets the flag; readers stop, each writer commits the chunk
/// it holds, and the load ends with a resume hint.
pub fn watch_signals() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut int), Ok(mut term)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) else {
                return;
            };
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::warn!(
            "Interrupted: stopping; chunks in flight are committed, the rest is left for a re-run."
        );
        f.store(true, Ordering::SeqCst);
    });
    flag
}

/// Aborts a background task when its owner goes out of scope.
pub(super) struct AbortOnDrop<T = ()>(pub(super) tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Per split of a table's pass: pages not yet committed, plus one while its reader is on
/// it. Whoever takes a split to zero reports it done (once its reader has read it to the
/// end, its last committed page does).
pub(super) struct SplitTracker {
    outstanding: Vec<AtomicU64>,
    done_tx: mpsc::UnboundedSender<u32>,
}

impl SplitTracker {
    pub(super) fn new(splits: usize, done_tx: mpsc::UnboundedSender<u32>) -> SplitTracker {
        SplitTracker {
            outstanding: (0..splits).map(|_| AtomicU64::new(0)).collect(),
            done_tx,
        }
    }

    /// Holds `split` open (its reader, or one of its pages); `false` when the split is
    /// not in the plan.
    pub(super) fn hold(&self, split: u32) -> bool {
        match self.outstanding.get(split as usize) {
            Some(o) => {
                o.fetch_add(1, Ordering::SeqCst);
                true
            }
            None => false,
        }
    }

    /// Lets one hold of `split` go; the last one reports the split done.
    pub(super) fn release(&self, split: u32) {
        if let Some(o) = self.outstanding.get(split as usize) {
            if o.fetch_sub(1, Ordering::SeqCst) == 1 {
                // The marker has gone only when the pass is over: nothing left to report.
                let _ = self.done_tx.send(split);
            }
        }
    }
}
