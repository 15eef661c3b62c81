//! What a load reports, as printed and as written to `--report`: per table rows read,
//! written and rejected, bytes, seconds, rows/s, where the time went per stage, keys,
//! indexes and foreign keys; merged over the passes a worker makes over a table.
//!
//! Input: each table pass's figures. Output: [`LoadReport`] (`Serialize` and `Deserialize`,
//! so tests and scripts read it back typed).

use serde::{Deserialize, Serialize};

use super::input::Input;
use super::state;
use crate::sink::ddl::ForeignKeyReport;
use crate::sink::Mode;
use crate::source::dynamodb::ScanReport;

/// Per-table outcome, as printed and as written to `--report`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TableReport {
    pub table: String,
    pub schema: String,
    pub source: String,
    /// Splits: export data files, or scan segments.
    pub files: usize,
    /// Items the manifest promised (for a scan: DescribeTable's estimate).
    pub expected: u64,
    /// Items read from the source.
    pub rows_read: u64,
    /// Rows committed by this process.
    pub rows_written: u64,
    /// Rows already committed when this process took the table up (an earlier attempt
    /// of the run, or other workers).
    #[serde(default)]
    pub rows_before: u64,
    pub rejected: u64,
    /// Items of the source this table's `where` left to other tables (not in `rows_read`).
    #[serde(default)]
    pub skipped: u64,
    /// Items of the source no table's `where` takes (counted on the source's first table).
    #[serde(default)]
    pub unrouted: u64,
    /// Of `unrouted`, the items kept in the rejects file (the source says
    /// `unrouted = "reject"`): the run's, by every attempt and worker.
    #[serde(default)]
    pub unrouted_rejected: u64,
    /// The table's `where`, as text (`PK starts with "USER#"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// The run's rows committed into the table, by every attempt and worker.
    #[serde(default)]
    pub run_rows: u64,
    /// The run's rejects of the table, by every attempt and worker: the summary and the
    /// exit code are the run's, not this attempt's.
    #[serde(default)]
    pub run_rejected: u64,
    /// Compressed bytes read.
    pub bytes_read: u64,
    /// Uncompressed DynamoDB JSON bytes.
    pub bytes_uncompressed: u64,
    /// Binary COPY bytes sent.
    pub bytes_copied: u64,
    /// Seconds of the data (read, decode, COPY), and the rows/s over them.
    pub seconds: f64,
    pub rows_per_second: f64,
    /// When this process took the table up, in seconds since it began loading (after
    /// planning the run).
    #[serde(default)]
    pub started_s: f64,
    /// Seconds spent building the primary key (when built after the data) and the
    /// declared indexes, by this process.
    #[serde(default)]
    pub keys_seconds: f64,
    pub created: bool,
    /// `--mode upsert`: what the merge did.
    #[serde(default)]
    pub upsert: Option<UpsertCounts>,
    pub stages: StageReport,
    /// Requests to S3 or DynamoDB that were retried (throttling, 5xx, cut connections).
    #[serde(default)]
    pub source_retries: u64,
    /// Chunks retried on a new PostgreSQL connection.
    #[serde(default)]
    pub pg_retries: u64,
    /// Splits this process claimed and read.
    #[serde(default)]
    pub splits_loaded: usize,
    /// A DynamoDB scan: segments, capacity, retries.
    #[serde(default)]
    pub scan: Option<ScanReport>,
    /// `[[tables.indexes]]` built after the data.
    #[serde(default)]
    pub indexes: Vec<String>,
    /// Foreign keys of `references` columns, with their orphans.
    #[serde(default)]
    pub foreign_keys: Vec<ForeignKeyReport>,
}

/// Rows of an upsert: new keys inserted, changed rows updated, equal rows left alone.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct UpsertCounts {
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
}

/// The whole load's outcome.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoadReport {
    pub mode: Option<Mode>,
    pub schema: String,
    /// The run in `ddb2pg.runs` this load belongs to.
    #[serde(default)]
    pub run_id: Option<i64>,
    /// An unfinished run was taken up again (or joined, with several workers).
    #[serde(default)]
    pub resumed: bool,
    /// The same load had completed (at this time): nothing was done.
    #[serde(default)]
    pub already_done: Option<String>,
    pub tables: Vec<TableReport>,
    pub rejects_file: Option<String>,
    pub seconds: f64,
    /// Seconds spent adding the foreign keys once every table was in (by this process).
    #[serde(default)]
    pub foreign_keys_seconds: f64,
    pub peak_rss_bytes: Option<u64>,
    /// CPU seconds of this process (user + system).
    pub cpu_seconds: Option<f64>,
}

impl LoadReport {
    /// Items rejected across all tables.
    #[must_use]
    pub fn rejected(&self) -> u64 {
        self.tables
            .iter()
            .map(|t| t.rejected.max(t.run_rejected) + t.unrouted_rejected)
            .sum()
    }

    /// Rows whose foreign key has no match, across all tables.
    #[must_use]
    pub fn orphans(&self) -> u64 {
        self.tables
            .iter()
            .flat_map(|t| &t.foreign_keys)
            .map(|f| f.orphans)
            .sum()
    }
}

/// Where the time went, per stage: the bottleneck is the busiest stage, and the queue
/// in front of it is full while the one after it is empty.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StageReport {
    /// Seconds the readers spent reading and gunzipping (not waiting on the queue).
    pub read_busy_s: f64,
    pub read_threads: usize,
    /// Seconds of decode + encode work.
    pub decode_encode_busy_s: f64,
    /// Seconds the decode + encode jobs waited for room in the chunk queue.
    #[serde(default)]
    pub decode_encode_blocked_s: f64,
    pub cpu_threads: usize,
    /// Seconds the writers spent sending to PostgreSQL (waiting on the server included).
    pub write_busy_s: f64,
    pub connections: usize,
    /// Mean fill of the page queue (0..1) and of the chunk queue, sampled every 100 ms.
    pub page_queue_fill: f64,
    pub chunk_queue_fill: f64,
    /// (seconds since the table started, rows written), every 100 ms (thinned past
    /// `MAX_SAMPLES`, see `load::metrics`).
    pub timeline: Vec<(f64, u64)>,
    /// (seconds since the table started, page-queue fill, chunk-queue fill), at the
    /// timeline's instants: the queue in front of the bottleneck stays full.
    #[serde(default)]
    pub queue_fills: Vec<(f64, f64, f64)>,
}

/// A report row for a table this worker did not read (all its splits done already).
pub(super) fn blank_report(p: &Input, schema: &str) -> TableReport {
    TableReport {
        table: p.spec.name.clone(),
        schema: schema.to_string(),
        source: p.source.location(),
        files: p.source.splits(),
        expected: p.source.expected_items(),
        ..TableReport::default()
    }
}

/// The report row of a table, made when missing.
pub(super) fn table_entry<'a>(
    report: &'a mut LoadReport,
    p: &Input,
    t: &state::RunTable,
    schema: &str,
    counts: &state::SplitCounts,
) -> &'a mut TableReport {
    let i = match report.tables.iter().position(|r| r.table == p.spec.name) {
        Some(i) => i,
        None => {
            let mut r = blank_report(p, schema);
            r.created = t.created;
            r.rows_before = u64::try_from(counts.rows).unwrap_or(0);
            report.tables.push(r);
            report.tables.len() - 1
        }
    };
    &mut report.tables[i]
}

/// Adds a pass over a table to its report row (a worker may come back to a table to
/// take over a split another worker left).
pub(super) fn merge_report(report: &mut LoadReport, t: TableReport) {
    match report.tables.iter_mut().find(|r| r.table == t.table) {
        None => report.tables.push(t),
        Some(r) => {
            r.rows_read += t.rows_read;
            r.rows_written += t.rows_written;
            r.rejected += t.rejected;
            r.skipped += t.skipped;
            r.unrouted += t.unrouted;
            r.bytes_read += t.bytes_read;
            r.bytes_uncompressed += t.bytes_uncompressed;
            r.bytes_copied += t.bytes_copied;
            r.seconds += t.seconds;
            r.keys_seconds += t.keys_seconds;
            r.rows_per_second = if r.seconds > 0.0 {
                r.rows_written as f64 / r.seconds
            } else {
                0.0
            };
            r.source_retries += t.source_retries;
            r.pg_retries += t.pg_retries;
            r.splits_loaded += t.splits_loaded;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--report` is read by scripts: its key names are the interface (ARCHITECTURE §4),
    /// whatever the Rust fields are called.
    #[test]
    fn report_keys_are_the_documented_ones() {
        let report = LoadReport {
            tables: vec![TableReport::default()],
            ..LoadReport::default()
        };
        let v = serde_json::to_value(&report).expect("json");
        for key in [
            "mode",
            "schema",
            "run_id",
            "resumed",
            "tables",
            "rejects_file",
            "seconds",
            "peak_rss_bytes",
            "cpu_seconds",
        ] {
            assert!(v.get(key).is_some(), "report key {key}: {v}");
        }
        let t = &v["tables"][0];
        for key in [
            "table",
            "schema",
            "source",
            "files",
            "expected",
            "rows_read",
            "rows_written",
            "rows_before",
            "rejected",
            "run_rows",
            "run_rejected",
            "bytes_read",
            "bytes_uncompressed",
            "bytes_copied",
            "seconds",
            "rows_per_second",
            "created",
            "upsert",
            "stages",
            "source_retries",
            "pg_retries",
            "splits_loaded",
            "indexes",
            "foreign_keys",
        ] {
            assert!(t.get(key).is_some(), "table key {key}: {t}");
        }
    }
}
