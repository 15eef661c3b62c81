//! The rejects file (ARCHITECTURE §5): one JSON object per item that was not loaded,
//! with `table`, `split`, `position`, `key`, `attribute`, `reason` and `item` (the
//! original DynamoDB JSON), so nothing is lost and it can be fixed and re-loaded.
//!
//! Input: each page's [`Reject`]s, from the decode/encode jobs. Output: JSONL appended to
//! the file, and the table's count, checked against `--max-rejects`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use super::flow::Failure;
use super::metrics::Counters;
use crate::ddbjson::write_json_string;
use crate::decode::Reject;
use crate::error::{Error, Result};

/// Appends reject records to a JSONL file.
pub(super) struct RejectWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl RejectWriter {
    /// Opens the file: truncated for a new run, appended to when a run resumes (a record
    /// may then repeat one written before a crash; `ddb2pg.rejects` holds each once).
    ///
    /// # Errors
    /// The file cannot be opened.
    pub(super) fn open(path: &Path, append: bool) -> Result<RejectWriter> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::Rejects {
                path: path.to_path_buf(),
                source: e,
            })?;
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(path)
            .map_err(|e| Error::Rejects {
                path: path.to_path_buf(),
                source: e,
            })?;
        Ok(RejectWriter {
            path: path.to_path_buf(),
            out: BufWriter::new(f),
        })
    }

    /// Writes one record.
    ///
    /// # Errors
    /// The write fails.
    pub(super) fn write(&mut self, table: &str, split: &str, r: &Reject) -> Result<()> {
        let line = record_json(table, split, r);
        self.out
            .write_all(line.as_bytes())
            .and_then(|()| self.out.write_all(b"\n"))
            .map_err(|e| Error::Rejects {
                path: self.path.clone(),
                source: e,
            })?;
        Ok(())
    }

    /// Flushes to disk.
    ///
    /// # Errors
    /// The flush fails.
    pub(super) fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(|e| Error::Rejects {
            path: self.path.clone(),
            source: e,
        })
    }
}

/// One reject as a JSON object (field order fixed, so files diff cleanly).
#[must_use]
pub(super) fn record_json(table: &str, split: &str, r: &Reject) -> String {
    let mut s = String::with_capacity(r.item.len() + 256);
    s.push_str("{\"table\":");
    write_json_string(&mut s, table);
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
    s.push_str(&r.item);
    s.push('}');
    s
}

/// Where a table pass's rejects go: the file, the table's count, and its limit.
pub(super) struct RejectSink<'a> {
    pub(super) writer: &'a Mutex<RejectWriter>,
    pub(super) table: &'a str,
    /// `--max-rejects`, less what was committed before this pass.
    pub(super) max_rejects: Option<u64>,
    pub(super) counters: &'a Counters,
    pub(super) failure: &'a Failure,
}

impl RejectSink<'_> {
    /// Writes a page's rejects to the file and counts them; passing `--max-rejects` stops
    /// the pass (the page that passed the limit is not committed).
    pub(super) fn record(&self, split: &str, page_rejects: &[Reject]) {
        let Ok(mut w) = self.writer.lock() else {
            self.failure
                .set(Error::Internal("the rejects writer is poisoned".into()));
            return;
        };
        for rej in page_rejects {
            if let Err(e) = w.write(self.table, split, rej) {
                self.failure.set(e);
                return;
            }
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
