//! Counters of one table's load (items, rows, bytes, per-stage busy and blocked time,
//! queue depths), the sampler that turns them into queue fill and a rows-over-time
//! timeline, and the process figures the report gives (peak RSS, CPU seconds, from `/proc`).
//!
//! Input: the stages' atomic counters. Output: numbers for the report and for progress.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Shared counters of one table's load.
#[derive(Default)]
pub struct Counters {
    pub items: AtomicU64,
    /// Rows sent to PostgreSQL (progress), and rows committed.
    pub rows_written: AtomicU64,
    pub rows_committed: AtomicU64,
    /// Chunks retried on a new connection.
    pub pg_retries: AtomicU64,
    pub rejected: AtomicU64,
    pub bytes_read: Arc<AtomicU64>,
    pub bytes_uncompressed: AtomicU64,
    pub bytes_copied: AtomicU64,
    /// Nanoseconds: readers reading (total) and waiting on a full page queue.
    pub read_ns: AtomicU64,
    pub read_blocked_ns: AtomicU64,
    /// Nanoseconds: decode + encode jobs, and their waits on a full chunk queue.
    pub cpu_ns: AtomicU64,
    pub cpu_blocked_ns: AtomicU64,
    /// Nanoseconds: writers sending to PostgreSQL (including the server's pace).
    pub write_ns: AtomicU64,
    /// Pages and pieces sitting in their queues right now.
    pub pages_queued: AtomicU64,
    pub pieces_queued: AtomicU64,
    /// Upsert: rows inserted and rows updated (the rest were equal and left alone).
    pub inserted: AtomicU64,
    pub updated: AtomicU64,
    /// Sync: rows deleted.
    pub deleted: AtomicU64,
}

pub(super) fn secs(ns: &AtomicU64) -> f64 {
    ns.load(Ordering::Relaxed) as f64 / 1e9
}

pub(super) fn nanos(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Mean page-queue fill, mean chunk-queue fill, and the (seconds, rows) timeline.
pub(super) type Sampled = (f64, f64, Vec<(f64, u64)>);

/// Samples queue fill and rows written until stopped.
pub(super) fn spawn_sampler(
    counters: Arc<Counters>,
    page_cap: usize,
    chunk_cap: usize,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Sampled>,
) {
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let started = Instant::now();
        let (mut pages, mut chunks, mut n) = (0.0, 0.0, 0u64);
        let mut timeline = vec![(0.0, 0)];
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                _ = tick.tick() => {}
            }
            n += 1;
            pages += counters.pages_queued.load(Ordering::Relaxed) as f64 / page_cap.max(1) as f64;
            chunks +=
                counters.pieces_queued.load(Ordering::Relaxed) as f64 / chunk_cap.max(1) as f64;
            if n % 3 == 0 {
                timeline.push((
                    started.elapsed().as_secs_f64(),
                    counters.rows_written.load(Ordering::Relaxed),
                ));
            }
        }
        timeline.push((
            started.elapsed().as_secs_f64(),
            counters.rows_written.load(Ordering::Relaxed),
        ));
        let n = n.max(1) as f64;
        ((pages / n).min(1.0), (chunks / n).min(1.0), timeline)
    });
    (stop, task)
}

/// Peak resident set size of this process (Linux), for the report.
#[must_use]
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// CPU seconds (user + system) of a process, from `/proc/<pid>/stat` (Linux): its own,
/// plus, with `children`, those of its reaped children.
#[must_use]
pub fn process_cpu_seconds_with(pid: &str, children: bool) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
    // utime, stime, cutime, cstime are fields 14..17 of the line: 11..14 here.
    let mut ticks = num(11)? + num(12)?;
    if children {
        ticks += num(13)? + num(14)?;
    }
    Some(ticks / 100.0)
}

/// CPU seconds of a process itself.
#[must_use]
pub fn process_cpu_seconds(pid: &str) -> Option<f64> {
    process_cpu_seconds_with(pid, false)
}

/// How often the log-line progress reports.
pub const LOG_EVERY: Duration = Duration::from_secs(10);
