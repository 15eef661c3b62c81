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
    /// Items the table's `where` left to other tables, and (first table of a shared
    /// source) items no table takes.
    pub skipped: AtomicU64,
    pub unrouted: AtomicU64,
    /// Of `rejected`, the unrouted items kept as rejects (`unrouted = "reject"`).
    pub unrouted_kept: AtomicU64,
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
    /// Rows committed into each child table (in the plan's order).
    pub child_rows: std::sync::Mutex<Vec<u64>>,
    /// Per child table that rides on the source: items it took, items its `where` left,
    /// items it rejected (those are in `rejected` too: the pass's limit counts them).
    pub rider_counts: std::sync::Mutex<Vec<(u64, u64, u64)>>,
}

pub(super) fn secs(ns: &AtomicU64) -> f64 {
    ns.load(Ordering::Relaxed) as f64 / 1e9
}

pub(super) fn nanos(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Samples kept per table before the timeline thins out: past it every other sample goes
/// and the interval doubles (100 ms for the first 10 minutes, 200 ms up to 20, …), so a
/// one-second stall shows in any load under ≈40 minutes and the report stays small.
pub const MAX_SAMPLES: usize = 6000;

/// What the sampler saw: the mean fills and the timelines.
#[derive(Debug, Clone, Default)]
pub(super) struct Sampled {
    /// Mean page-queue fill and mean chunk-queue fill (0..1).
    pub page_fill: f64,
    pub chunk_fill: f64,
    /// (seconds, rows written).
    pub timeline: Vec<(f64, u64)>,
    /// (seconds, page-queue fill, chunk-queue fill), at the same instants.
    pub queue_fills: Vec<(f64, f64, f64)>,
}

/// Samples queue fill and rows written every 100 ms until stopped.
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
        let mut out = Sampled {
            timeline: vec![(0.0, 0)],
            queue_fills: vec![(0.0, 0.0, 0.0)],
            ..Sampled::default()
        };
        let mut stride = 1u64;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let fill = |q: &AtomicU64, cap: usize| {
            (q.load(Ordering::Relaxed) as f64 / cap.max(1) as f64).min(1.0)
        };
        let sample = |out: &mut Sampled, page: f64, chunk: f64| {
            let t = started.elapsed().as_secs_f64();
            out.timeline
                .push((t, counters.rows_written.load(Ordering::Relaxed)));
            out.queue_fills.push((t, page, chunk));
        };
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                _ = tick.tick() => {}
            }
            n += 1;
            let (page, chunk) = (
                fill(&counters.pages_queued, page_cap),
                fill(&counters.pieces_queued, chunk_cap),
            );
            pages += page;
            chunks += chunk;
            if n % stride == 0 {
                sample(&mut out, page, chunk);
                if out.timeline.len() > MAX_SAMPLES {
                    thin(&mut out.timeline);
                    thin(&mut out.queue_fills);
                    stride *= 2;
                }
            }
        }
        let (page, chunk) = (
            fill(&counters.pages_queued, page_cap),
            fill(&counters.pieces_queued, chunk_cap),
        );
        sample(&mut out, page, chunk);
        let n = n.max(1) as f64;
        out.page_fill = (pages / n).min(1.0);
        out.chunk_fill = (chunks / n).min(1.0);
        out
    });
    (stop, task)
}

/// Keeps the first sample and every other one after it.
fn thin<T: Copy>(v: &mut Vec<T>) {
    let mut i = 0;
    v.retain(|_| {
        i += 1;
        i % 2 == 1
    });
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

/// The machine in one line: cores, CPU model, RAM, OS (for reports).
#[must_use]
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok())
        })
        .map_or_else(
            || "?".into(),
            |kb| format!("{:.0} GiB", kb as f64 / 1_048_576.0),
        );
    format!(
        "{cores} cores ({model}), {mem} RAM, {}",
        std::env::consts::OS
    )
}
