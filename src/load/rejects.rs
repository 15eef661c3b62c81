//! The rejects file (ARCHITECTURE §5): one JSON object per item that was not loaded,
//! with `table`, `split`, `position`, `key`, `attribute`, `reason` and `item` (the
//! original DynamoDB JSON), so nothing is lost and it can be fixed and re-loaded.
//!
//! The file is written from what committed: a chunk's rejects are appended right after
//! its transaction commits (they commit with it in `ddb2pg.rejects`), so it holds each
//! reject once whatever stops the load. A resumed run starts its file from the run's
//! committed rejects; a worker joining live workers appends. The file is locked
//! (`flock`) around each commit-and-append and around the rebuild, so several workers
//! sharing one path never tear or lose a line. A line that was not UTF-8 keeps its bytes.
//!
//! Input: each page's [`Reject`]s, counted against `--max-rejects` as they are decoded,
//! and each committed chunk's. Output: JSONL lines appended to the file.

use std::fs::{File, TryLockError};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{pin_mut, TryStreamExt};
use tokio_postgres::Client;

use super::flow::Failure;
use super::metrics::Counters;
use crate::ddbjson::write_json_string;
use crate::decode::Reject;
use crate::error::{Error, Result};

/// What the file starts with when a worker opens it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RejectStart {
    /// A new run: emptied.
    Empty,
    /// A run resumed with no live worker: the run's committed rejects, rewritten.
    Rebuild,
    /// A worker joining live workers (on one path, or its own): appended to.
    Append,
    /// A sync's export run resumed with no live worker: the run's committed rejects
    /// appended (the file holds the sync's earlier exports').
    AppendRun,
}

/// The rejects file of one worker: appended to after each commit, under a file lock.
pub(super) struct RejectWriter {
    path: PathBuf,
    file: File,
    /// One commit-and-append at a time in this process (`flock` orders the processes).
    turn: tokio::sync::Mutex<()>,
}

/// Held while a chunk with rejects commits and its lines are appended.
pub(super) struct RejectTurn<'a> {
    writer: &'a RejectWriter,
    _turn: tokio::sync::MutexGuard<'a, ()>,
}

impl Drop for RejectTurn<'_> {
    fn drop(&mut self) {
        let _ = self.writer.file.unlock();
    }
}

impl RejectTurn<'_> {
    /// Appends the lines of a committed chunk.
    ///
    /// # Errors
    /// The write fails (the chunk stays committed; a resume rewrites the file).
    pub(super) fn append(&self, lines: &[u8]) -> Result<()> {
        (&self.writer.file)
            .write_all(lines)
            .map_err(|e| self.writer.error(e))
    }
}

impl RejectWriter {
    /// Opens (creating) the file for `run` and starts it per `start`.
    ///
    /// # Errors
    /// The file cannot be opened or written, or the run's rejects cannot be read.
    pub(super) async fn open(
        path: &Path,
        start: RejectStart,
        c: &Client,
        run: i64,
    ) -> Result<RejectWriter> {
        let err = |e| Error::Rejects {
            path: path.to_path_buf(),
            source: e,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(err)?;
        let w = RejectWriter {
            path: path.to_path_buf(),
            file,
            turn: tokio::sync::Mutex::new(()),
        };
        if start != RejectStart::Append {
            let turn = w.turn().await?;
            if start != RejectStart::AppendRun
                && path.metadata().map(|m| m.is_file()).unwrap_or(false)
            {
                w.file.set_len(0).map_err(|e| w.error(e))?;
            }
            if matches!(start, RejectStart::Rebuild | RejectStart::AppendRun) {
                w.rebuild(c, run).await?;
            }
            drop(turn);
        }
        Ok(w)
    }

    fn error(&self, e: std::io::Error) -> Error {
        Error::Rejects {
            path: self.path.clone(),
            source: e,
        }
    }

    /// Takes this file's turn: the process's, then the file lock (waited for without
    /// blocking a thread).
    ///
    /// # Errors
    /// The file cannot be locked.
    pub(super) async fn turn(&self) -> Result<RejectTurn<'_>> {
        let guard = self.turn.lock().await;
        loop {
            match self.file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err(TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => {
                    // No file locks here (e.g. a pipe or /dev/null): the process's turn
                    // is all there is.
                    break;
                }
                Err(TryLockError::Error(e)) => return Err(self.error(e)),
            }
        }
        Ok(RejectTurn {
            writer: self,
            _turn: guard,
        })
    }

    /// Writes every committed reject of `run`, in table, split and line order.
    async fn rebuild(&self, c: &Client, run: i64) -> Result<()> {
        let rows = c
            .query_raw(
                "SELECT target_table, coalesce(split, ''), coalesce(position, 0), coalesce(key_text, key::text), \
                   attribute, reason, coalesce(item, 'null'), item_raw, coalesce(unrouted, false) \
                 FROM ddb2pg.rejects WHERE run_id = $1 ORDER BY target_table, split, position",
                [&run],
            )
            .await
            .map_err(|e| Error::pg("ddb2pg.rejects", "read the run's rejects", &e))?;
        pin_mut!(rows);
        let mut out = BufWriter::with_capacity(1 << 20, &self.file);
        let mut n = 0u64;
        while let Some(row) = rows
            .try_next()
            .await
            .map_err(|e| Error::pg("ddb2pg.rejects", "read the run's rejects", &e))?
        {
            let (table, split): (String, String) = (row.get(0), row.get(1));
            let r = Reject {
                line: u64::try_from(row.get::<_, i64>(2)).unwrap_or(0),
                key: row.get(3),
                attribute: row.get(4),
                reason: row.get(5),
                item: row.get(6),
                item_raw: row.get(7),
                table: None,
                unrouted: row.get(8),
            };
            let table = (!r.unrouted).then_some(table.as_str());
            out.write_all(&record_line(table, &split, &r))
                .map_err(|e| self.error(e))?;
            n += 1;
        }
        out.flush().map_err(|e| self.error(e))?;
        tracing::info!(rejects = n, path = %self.path.display(), "Rejects file rewritten from the run's committed rejects.");
        Ok(())
    }
}

/// One reject as a JSONL line (field order fixed, so files diff cleanly). An item that
/// was not UTF-8 is written with its original bytes; one matching no table's `where` has
/// `"table": null`.
#[must_use]
pub fn record_line(table: Option<&str>, split: &str, r: &Reject) -> Vec<u8> {
    let mut s = String::with_capacity(256);
    s.push_str("{\"table\":");
    match table {
        Some(t) => write_json_string(&mut s, t),
        None => s.push_str("null"),
    }
    s.push_str(",\"split\":");
    write_json_string(&mut s, split);
    s.push_str(&format!(",\"position\":{}", r.line));
    s.push_str(",\"key\":");
    s.push_str(r.key.as_deref().unwrap_or("null"));
    s.push_str(",\"attribute\":");
    match &r.attribute {
        Some(a) => write_json_string(&mut s, a),
        None => s.push_str("null"),
    }
    s.push_str(",\"reason\":");
    write_json_string(&mut s, &r.reason);
    s.push_str(",\"item\":");
    let mut line = s.into_bytes();
    match &r.item_raw {
        Some(raw) => line.extend_from_slice(raw),
        None => line.extend_from_slice(r.item.as_bytes()),
    }
    line.extend_from_slice(b"}\n");
    line
}

/// Where a table pass's rejects are counted, against its limit.
pub(super) struct RejectSink<'a> {
    pub(super) table: &'a str,
    /// `--max-rejects`, less what was committed before this pass.
    pub(super) max_rejects: Option<u64>,
    pub(super) counters: &'a Counters,
    pub(super) failure: &'a Failure,
}

impl RejectSink<'_> {
    /// Counts a page's rejects; passing `--max-rejects` stops the pass (the page that
    /// passed the limit is not committed).
    pub(super) fn record(&self, split: &str, page_rejects: &[Reject]) {
        for rej in page_rejects {
            tracing::debug!(split, line = rej.line, reason = %rej.reason, "Item rejected.");
        }
        let total = self
            .counters
            .rejected
            .fetch_add(page_rejects.len() as u64, Ordering::Relaxed)
            + page_rejects.len() as u64;
        if let Some(limit) = self.max_rejects {
            if total > limit {
                self.failure.set(Error::TooManyRejects {
                    table: self.table.to_string(),
                    count: total,
                    limit,
                });
            }
        }
    }
}
