//! The rejects file (ARCHITECTURE §5): one JSON object per item that was not loaded,
//! with `table`, `split`, `position`, `key`, `attribute`, `reason` and `item` (the
//! original DynamoDB JSON), so nothing is lost and it can be fixed and re-loaded.
//!
//! Input: [`Reject`]s from decode, on a channel. Output: JSONL appended to the file, and
//! the count, checked against `--max-rejects`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::ddbjson::write_json_string;
use crate::decode::Reject;
use crate::error::{Error, Result};

/// Appends reject records to a JSONL file.
pub struct RejectWriter {
    path: PathBuf,
    out: BufWriter<File>,
    pub count: u64,
}

impl RejectWriter {
    /// Creates (truncates) the file.
    ///
    /// # Errors
    /// The file cannot be created.
    pub fn create(path: &Path) -> Result<RejectWriter> {
        RejectWriter::open(path, false)
    }

    /// Opens the file: truncated for a new run, appended to when a run resumes (a record
    /// may then repeat one written before a crash; `ddb2pg.rejects` holds each once).
    ///
    /// # Errors
    /// The file cannot be opened.
    pub fn open(path: &Path, append: bool) -> Result<RejectWriter> {
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
            count: 0,
        })
    }

    /// Writes one record.
    ///
    /// # Errors
    /// The write fails.
    pub fn write(&mut self, table: &str, split: &str, r: &Reject) -> Result<()> {
        let line = record_json(table, split, r);
        self.out
            .write_all(line.as_bytes())
            .and_then(|()| self.out.write_all(b"\n"))
            .map_err(|e| Error::Rejects {
                path: self.path.clone(),
                source: e,
            })?;
        self.count += 1;
        Ok(())
    }

    /// Flushes to disk.
    ///
    /// # Errors
    /// The flush fails.
    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(|e| Error::Rejects {
            path: self.path.clone(),
            source: e,
        })
    }
}

/// One reject as a JSON object (field order fixed, so files diff cleanly).
#[must_use]
pub fn record_json(table: &str, split: &str, r: &Reject) -> String {
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
