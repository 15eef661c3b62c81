//! What a sync is asked and what it did ([`SyncOptions`], [`SyncReport`], [`TableSync`]),
//! and the schema's sync lock, shared by the export and stream paths.
//!
//! Input: none. Output: the types, and the lock taken or released.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use crate::error::{Error, Result};

/// Advisory-lock class of a schema's sync: one export applied at a time per schema.
pub(super) const SYNC_LOCK: i32 = 0x6432_7073;

/// Options of one `sync`.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    pub schema: String,
    pub tables: Vec<String>,
    /// Apply what is there and exit, instead of following.
    pub until_caught_up: bool,
    /// Apply exports after a gap (changes made in it are lost).
    pub allow_gap: bool,
    pub rejects_path: PathBuf,
    pub max_rejects: Option<u64>,
    pub bars: bool,
}

/// What a sync did, per table.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SyncReport {
    pub schema: String,
    pub tables: Vec<TableSync>,
    pub rejects_file: Option<String>,
    pub seconds: f64,
    /// Stopped by Ctrl-C or SIGTERM (following), after committing what it held.
    #[serde(default)]
    pub interrupted: bool,
}

impl SyncReport {
    /// Changes rejected by this sync, across tables.
    #[must_use]
    pub fn rejected(&self) -> u64 {
        self.tables.iter().map(|t| t.rejected).sum()
    }
}

/// One table's sync.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TableSync {
    pub table: String,
    pub schema: String,
    /// The load whose baseline the changes follow, and that baseline (RFC 3339).
    pub base_run: i64,
    pub baseline: Option<String>,
    /// Exports this sync applied (ids), and all applied since the load.
    pub exports_applied: Vec<String>,
    pub exports_applied_total: usize,
    /// This sync's changes: rows inserted, updated (a put of an existing key), deleted
    /// (a delete of a key in the table), and changes rejected.
    pub inserted: u64,
    pub updated: u64,
    pub deleted: u64,
    pub rejected: u64,
    /// Change records read, and per second of applying.
    pub changes: u64,
    pub changes_per_second: f64,
    pub seconds: f64,
    /// The end of the last applied export (`exportToTime`, RFC 3339): the table holds
    /// every change made before it.
    pub watermark: Option<String>,
    /// Now minus the watermark, when the sync ended.
    pub lag_seconds: Option<f64>,
    /// Exports found still being written (applied by a later sync).
    pub unfinished: Vec<String>,
    pub warnings: Vec<String>,
    /// The live table whose stream was read (`changes = { stream = … }`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// Stream calls retried after throttling or a server error.
    #[serde(default)]
    pub retries: u64,
}

/// Takes a schema's sync lock (waiting for another sync's export, and stopping on a signal
/// meanwhile).
pub(super) async fn lock_schema(c: &Client, schema: &str, interrupted: &AtomicBool) -> Result<()> {
    let mut said = false;
    loop {
        let got: bool = c
            .query_one(
                "SELECT pg_try_advisory_lock($1::int4, hashtext($2))",
                &[&SYNC_LOCK, &schema],
            )
            .await
            .map_err(|e| Error::pg("ddb2pg state", "take the sync lock", &e))?
            .get(0);
        if got {
            return Ok(());
        }
        if interrupted.load(Ordering::SeqCst) {
            return Err(Error::Interrupted);
        }
        if !said {
            tracing::info!(schema = %schema, "Another sync is changing foreign keys or applying an export in this schema: waiting for it.");
            said = true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(super) async fn unlock_schema(c: &Client, schema: &str) -> Result<()> {
    c.execute(
        "SELECT pg_advisory_unlock($1::int4, hashtext($2))",
        &[&SYNC_LOCK, &schema],
    )
    .await
    .map(|_| ())
    .map_err(|e| Error::pg("ddb2pg state", "release the sync lock", &e))
}
