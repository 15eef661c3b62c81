//! A live DynamoDB table read by parallel `Scan` (`Segment i` of `TotalSegments N`),
//! paginated by `LastEvaluatedKey`.
//!
//! Each page of items is written out as DynamoDB JSON export lines (`{"Item":{…}}`) and
//! goes through the very decoder the export reader feeds, so a scanned item and the same
//! item in an export become the same row (one mapping, one set of conversion rules).
//!
//! Capacity: a token bucket holds the consumed capacity that `ReturnConsumedCapacity`
//! reports under the budget (`read_capacity`, or a stated default) over any window of a
//! few seconds; each request reserves its estimated cost before it is sent and the
//! difference is settled when the response says what it consumed. Throttling and 5xx are
//! retried with exponential backoff and jitter, and counted.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity};
use serde::{Deserialize, Serialize};

use super::aws;
use super::page::{FileStats, Origin, Page};
use crate::ddbjson::sdk;
use crate::error::{Error, Result};
use crate::retry::backoff;

/// Read budget when the table is on-demand and `read_capacity` is not given.
pub const ON_DEMAND_DEFAULT_RCU: f64 = 4000.0;
/// Share of a provisioned table's read capacity used when `read_capacity` is not given.
pub const PROVISIONED_SHARE: f64 = 0.5;
/// Attempts per Scan request before the load fails.
const ATTEMPTS: u32 = 10;
/// Segments chosen automatically: about one per GiB of table.
const BYTES_PER_SEGMENT: u64 = 1 << 30;

/// What a scan did, for the summary and `--report`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ScanReport {
    pub table: String,
    pub segments: u32,
    /// How `segments` was chosen.
    pub segments_from: String,
    /// Segments scanned at once.
    pub concurrency: usize,
    /// RCU per second the limiter held to, and where that number came from.
    pub read_capacity: f64,
    pub read_capacity_from: String,
    /// Items per Scan request (`Limit`), when the budget needed smaller pages.
    pub page_limit: Option<i32>,
    pub pages: u64,
    pub consumed_rcu: f64,
    pub throttled_retries: u64,
    pub server_error_retries: u64,
    /// Capacity consumed per whole second since the scan started (index = second).
    pub consumed_per_second: Vec<f64>,
    /// `DescribeTable`'s item count and size (updated by DynamoDB about every six hours).
    pub described_items: u64,
    pub described_bytes: u64,
    /// The limiter: capacity that may be spent at once, and what each request reserves.
    pub burst: f64,
    pub page_cost: f64,
}

/// Token bucket over consumed capacity. Tokens may go negative (a response consumed more
/// than was reserved); a request waits until the bucket is back at zero.
#[derive(Debug)]
pub struct Limiter {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl Limiter {
    /// `rate` units per second, at most `burst` saved up.
    #[must_use]
    pub fn new(rate: f64, burst: f64) -> Limiter {
        Limiter {
            rate,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// How long to wait before `cost` may be spent at `now`; `None` when it is reserved.
    pub fn try_reserve(&self, cost: f64, now: Instant) -> Option<Duration> {
        let Ok(mut st) = self.state.lock() else {
            return None;
        };
        let elapsed = now.saturating_duration_since(st.1).as_secs_f64();
        st.0 = (st.0 + elapsed * self.rate).min(self.burst);
        st.1 = now;
        if st.0 >= cost.min(self.burst) {
            st.0 -= cost;
            None
        } else {
            let missing = cost.min(self.burst) - st.0;
            Some(Duration::from_secs_f64(
                (missing / self.rate).clamp(0.001, 60.0),
            ))
        }
    }

    /// Blocks until `cost` is reserved.
    pub fn reserve(&self, cost: f64, cancel: &AtomicBool) {
        while let Some(wait) = self.try_reserve(cost, Instant::now()) {
            if cancel.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(wait.min(Duration::from_millis(250)));
        }
    }

    /// Settles a reservation: `actual` was consumed where `reserved` was taken.
    pub fn settle(&self, reserved: f64, actual: f64) {
        if let Ok(mut st) = self.state.lock() {
            st.0 -= actual - reserved;
        }
    }
}

/// Shared counters of a scan.
#[derive(Debug, Default)]
struct ScanCounters {
    pages: AtomicU64,
    /// Consumed capacity × 1000.
    consumed_milli: AtomicU64,
    throttled: AtomicU64,
    server_errors: AtomicU64,
    per_second: Mutex<Vec<f64>>,
}

/// A table ready to scan.
#[derive(Debug)]
pub struct ScanPlan {
    pub table: String,
    pub segments: u32,
    pub segments_from: String,
    pub concurrency: usize,
    pub consistent: bool,
    pub read_capacity: f64,
    pub read_capacity_from: String,
    pub page_limit: Option<i32>,
    pub described_items: u64,
    pub described_bytes: u64,
    /// `TableArn` and `TableId` from `DescribeTable`: the table a sync's changes must
    /// come from.
    pub table_arn: Option<String>,
    pub table_id: Option<String>,
    /// The key attributes from `DescribeTable`: partition, then sort.
    pub key: Vec<String>,
    /// Estimated capacity of one page, reserved before each request.
    page_cost: f64,
    client: aws_sdk_dynamodb::Client,
    handle: tokio::runtime::Handle,
    limiter: Limiter,
    counters: ScanCounters,
    started: Instant,
}

/// What `open` needs to know besides the table.
#[derive(Debug, Clone, Copy)]
pub struct ScanOptions {
    pub segments: Option<u32>,
    pub read_capacity: Option<f64>,
    pub consistent: bool,
    /// Segments scanned at once when the config does not say (`tuning.readers`).
    pub concurrency: Option<usize>,
    /// The decode pool's threads: the least number of segments chosen automatically.
    pub cpu_threads: usize,
}

/// Describes the table and plans the scan.
///
/// # Errors
/// The table does not exist, or DynamoDB cannot be reached, naming the table.
pub async fn open(table: &str, opts: ScanOptions) -> Result<ScanPlan> {
    let client = aws::dynamodb().await;
    let fail = |reason: String| Error::Source {
        source_name: format!("dynamodb table {table}"),
        reason,
    };
    let described = client
        .describe_table()
        .table_name(table)
        .send()
        .await
        .map_err(|e| {
            let not_found = e
                .as_service_error()
                .is_some_and(aws_sdk_dynamodb::operation::describe_table::DescribeTableError::is_resource_not_found_exception);
            if not_found {
                fail("the table does not exist (DescribeTable: ResourceNotFoundException)".into())
            } else {
                fail(format!("DescribeTable failed: {}", aws::describe(&e)))
            }
        })?;
    let desc = described
        .table()
        .ok_or_else(|| fail("DescribeTable returned no table".into()))?;
    let items = desc.item_count().unwrap_or(0).max(0) as u64;
    let bytes = desc.table_size_bytes().unwrap_or(0).max(0) as u64;
    let (segments, segments_from) = match opts.segments {
        Some(n) => (n, "pipeline.toml".to_string()),
        None => {
            let by_size = bytes.div_ceil(BYTES_PER_SEGMENT);
            let n = by_size
                .max(opts.cpu_threads.max(1) as u64)
                .clamp(1, 1_000_000) as u32;
            (
                n,
                format!(
                    "chosen: {bytes} bytes in DescribeTable → one per GiB, at least the {} decode threads",
                    opts.cpu_threads.max(1)
                ),
            )
        }
    };
    let provisioned = desc
        .provisioned_throughput()
        .and_then(|p| p.read_capacity_units())
        .filter(|r| *r > 0);
    let on_demand = desc
        .billing_mode_summary()
        .and_then(|b| b.billing_mode())
        .is_some_and(|m| m.as_str() == "PAY_PER_REQUEST")
        || provisioned.is_none();
    let (read_capacity, read_capacity_from) = match (opts.read_capacity, on_demand, provisioned) {
        (Some(r), _, _) => (r, "pipeline.toml".to_string()),
        (None, false, Some(p)) => (
            (p as f64 * PROVISIONED_SHARE).max(1.0),
            format!("default: half of the table's provisioned {p} RCU"),
        ),
        _ => (
            ON_DEMAND_DEFAULT_RCU,
            format!("default for an on-demand table ({ON_DEMAND_DEFAULT_RCU} RCU/s); set read_capacity to change it"),
        ),
    };
    let concurrency = opts.concurrency.unwrap_or(16).min(segments as usize).max(1);
    // Eventually consistent reads cost half: 1 RCU per 8 KB scanned, else per 4 KB.
    let bytes_per_rcu = if opts.consistent { 4096.0 } else { 8192.0 };
    let full_page_cost = (1 << 20) as f64 / bytes_per_rcu;
    let avg_item = if items > 0 {
        (bytes as f64 / items as f64).max(1.0)
    } else {
        1024.0
    };
    // Each segment's share of one second of budget; smaller pages when a full 1 MB page
    // would overdraw it.
    let share = read_capacity / concurrency as f64;
    let (page_limit, page_cost) = if share >= full_page_cost {
        (None, full_page_cost)
    } else {
        let n = ((share * bytes_per_rcu) / avg_item).floor().max(1.0);
        let n = n.min(i32::MAX as f64) as i32;
        (Some(n), (f64::from(n) * avg_item / bytes_per_rcu).max(0.5))
    };
    // Burst: one second of budget, and at least one page, so a page is never refused.
    let burst = read_capacity.max(page_cost);
    Ok(ScanPlan {
        table: table.to_string(),
        key: {
            let mut k: Vec<_> = desc.key_schema().iter().collect();
            k.sort_by_key(|e| e.key_type().as_str() != "HASH");
            k.iter().map(|e| e.attribute_name().to_string()).collect()
        },
        table_arn: desc.table_arn().map(str::to_string),
        table_id: desc.table_id().map(str::to_string),
        segments,
        segments_from,
        concurrency,
        consistent: opts.consistent,
        read_capacity,
        read_capacity_from,
        page_limit,
        described_items: items,
        described_bytes: bytes,
        page_cost,
        client,
        handle: tokio::runtime::Handle::current(),
        limiter: Limiter::new(read_capacity, burst),
        counters: ScanCounters::default(),
        started: Instant::now(),
    })
}

/// Is this Scan error throttling (true) or a server/transport error worth a retry?
enum Retry {
    Throttled,
    Server,
    No,
}

fn classify(
    e: &aws_sdk_dynamodb::error::SdkError<
        aws_sdk_dynamodb::operation::scan::ScanError,
        aws_sdk_dynamodb::config::http::HttpResponse,
    >,
) -> Retry {
    use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
    match e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            Retry::Server
        }
        SdkError::ServiceError(se) => {
            let code = se.err().code().unwrap_or("");
            if matches!(
                code,
                "ProvisionedThroughputExceededException"
                    | "ThrottlingException"
                    | "RequestLimitExceeded"
                    | "LimitExceededException"
            ) {
                Retry::Throttled
            } else if se.raw().status().as_u16() >= 500
                || matches!(code, "InternalServerError" | "ServiceUnavailable")
            {
                Retry::Server
            } else {
                Retry::No
            }
        }
        _ => Retry::No,
    }
}

impl ScanPlan {
    /// Items `DescribeTable` reported (approximate; for progress and ETA).
    #[must_use]
    pub fn expected_items(&self) -> u64 {
        self.described_items
    }

    /// What the scan did so far.
    #[must_use]
    pub fn report(&self) -> ScanReport {
        let c = &self.counters;
        ScanReport {
            table: self.table.clone(),
            segments: self.segments,
            segments_from: self.segments_from.clone(),
            concurrency: self.concurrency,
            read_capacity: self.read_capacity,
            read_capacity_from: self.read_capacity_from.clone(),
            page_limit: self.page_limit,
            pages: c.pages.load(Ordering::Relaxed),
            consumed_rcu: c.consumed_milli.load(Ordering::Relaxed) as f64 / 1000.0,
            throttled_retries: c.throttled.load(Ordering::Relaxed),
            server_error_retries: c.server_errors.load(Ordering::Relaxed),
            consumed_per_second: c.per_second.lock().map(|v| v.clone()).unwrap_or_default(),
            described_items: self.described_items,
            described_bytes: self.described_bytes,
            burst: self.limiter.burst,
            page_cost: self.page_cost,
        }
    }

    fn split_name(&self, segment: u32) -> String {
        format!("segment {segment} of {}", self.segments)
    }

    /// Scans one segment to its end, handing pages of export-format lines to `emit`
    /// (`false` stops quietly). Blocking: call it from a plain thread.
    ///
    /// # Errors
    /// A request that still fails after the retries, naming the table and segment.
    #[allow(clippy::too_many_arguments)]
    pub fn read_segment(
        &self,
        segment: u32,
        page_bytes: usize,
        page_lines: usize,
        bytes_read: &AtomicU64,
        cancel: &AtomicBool,
        start: Option<&(u64, String)>,
        mut emit: impl FnMut(Page) -> bool,
    ) -> Result<FileStats> {
        let origin = Origin::Segment {
            segment,
            total: self.segments,
        };
        let mut start_key = None;
        let mut next_line: u64 = 1;
        if let Some((line, key)) = start {
            let parsed = serde_json::from_str::<serde_json::Value>(key)
                .map_err(|e| e.to_string())
                .and_then(|v| sdk::to_item(&v));
            match parsed {
                Ok(k) => {
                    start_key = Some(k);
                    next_line = line + 1;
                }
                Err(e) => {
                    return Err(Error::Source {
                        source_name: format!(
                            "dynamodb table {}, {}",
                            self.table,
                            self.split_name(segment)
                        ),
                        reason: format!("the saved resume position is not a key ({e}): {key}"),
                    })
                }
            }
        }
        let mut stats = FileStats::default();
        let mut text = String::with_capacity(page_bytes + (64 << 10));
        let mut lines_in_page: u64 = 0;
        loop {
            if cancel.load(Ordering::Relaxed) {
                return Ok(stats);
            }
            let (items, last_key) = self.scan_page(segment, start_key.take(), cancel)?;
            for item in &items {
                text.push_str("{\"Item\":");
                sdk::write_item(&mut text, item);
                text.push_str("}\n");
                lines_in_page += 1;
            }
            stats.lines += items.len() as u64;
            let end = last_key.is_none();
            if (end && !text.is_empty())
                || text.len() >= page_bytes
                || lines_in_page >= page_lines as u64
            {
                bytes_read.fetch_add(text.len() as u64, Ordering::Relaxed);
                stats.uncompressed += text.len() as u64;
                let data =
                    std::mem::replace(&mut text, String::with_capacity(page_bytes + (64 << 10)));
                let edge = last_key.as_ref().map(|k| {
                    let mut e = String::new();
                    sdk::write_item(&mut e, k);
                    Arc::<str>::from(e)
                });
                let page = Page {
                    origin: origin.clone(),
                    first_line: next_line,
                    lines: lines_in_page,
                    data: data.into_bytes(),
                    edge,
                    rows: None,
                };
                next_line += lines_in_page;
                lines_in_page = 0;
                if !emit(page) {
                    return Ok(stats);
                }
            }
            match last_key {
                Some(k) => start_key = Some(k),
                None => return Ok(stats),
            }
        }
    }

    /// One Scan request, with the limiter and retries.
    #[allow(clippy::type_complexity)]
    fn scan_page(
        &self,
        segment: u32,
        start_key: Option<std::collections::HashMap<String, AttributeValue>>,
        cancel: &AtomicBool,
    ) -> Result<(
        Vec<std::collections::HashMap<String, AttributeValue>>,
        Option<std::collections::HashMap<String, AttributeValue>>,
    )> {
        let mut attempt = 0;
        loop {
            self.limiter.reserve(self.page_cost, cancel);
            let req = self
                .client
                .scan()
                .table_name(&self.table)
                .segment(segment as i32)
                .total_segments(self.segments as i32)
                .consistent_read(self.consistent)
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .set_limit(self.page_limit)
                .set_exclusive_start_key(start_key.clone())
                // Our loop retries (counted, with backoff); the SDK's own would hide them.
                .customize()
                .config_override(
                    aws_sdk_dynamodb::config::Builder::default()
                        .retry_config(aws_config::retry::RetryConfig::disabled()),
                );
            match self.handle.block_on(req.send()) {
                Ok(out) => {
                    let consumed = out
                        .consumed_capacity()
                        .and_then(|c| c.capacity_units())
                        .unwrap_or(0.0);
                    self.limiter.settle(self.page_cost, consumed);
                    self.record(consumed);
                    let last = out.last_evaluated_key().filter(|k| !k.is_empty()).cloned();
                    let items = out.items.unwrap_or_default();
                    return Ok((items, last));
                }
                Err(e) => {
                    // Nothing was consumed by a refused request.
                    self.limiter.settle(self.page_cost, 0.0);
                    attempt += 1;
                    let kind = classify(&e);
                    let counter = match kind {
                        Retry::Throttled => &self.counters.throttled,
                        Retry::Server => &self.counters.server_errors,
                        Retry::No => {
                            return Err(Error::Source {
                                source_name: format!(
                                    "dynamodb table {}, {}",
                                    self.table,
                                    self.split_name(segment)
                                ),
                                reason: format!("Scan failed: {}", aws::describe(&e)),
                            })
                        }
                    };
                    if attempt >= ATTEMPTS {
                        return Err(Error::Source {
                            source_name: format!(
                                "dynamodb table {}, {}",
                                self.table,
                                self.split_name(segment)
                            ),
                            reason: format!(
                                "Scan failed {attempt} times, the last: {}",
                                aws::describe(&e)
                            ),
                        });
                    }
                    counter.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(segment, attempt, error = %aws::describe(&e), "Scan retried.");
                    std::thread::sleep(backoff(attempt));
                }
            }
        }
    }

    fn record(&self, consumed: f64) {
        let c = &self.counters;
        c.pages.fetch_add(1, Ordering::Relaxed);
        c.consumed_milli
            .fetch_add((consumed * 1000.0).round() as u64, Ordering::Relaxed);
        let second = self.started.elapsed().as_secs() as usize;
        if let Ok(mut v) = c.per_second.lock() {
            if v.len() <= second {
                v.resize(second + 1, 0.0);
            }
            v[second] += consumed;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_holds_the_rate_over_any_window() {
        // Simulated clock: requests as fast as the limiter allows, each reserving 10 and
        // consuming between 5 and 15. Over every 3-second window the consumption stays
        // within 3 s × rate + burst + one page's overshoot.
        let rate = 40.0;
        let lim = Limiter::new(rate, rate);
        let t0 = Instant::now();
        let mut now = t0;
        let mut log: Vec<(f64, f64)> = Vec::new();
        let mut k = 0u64;
        while now.duration_since(t0).as_secs_f64() < 30.0 {
            match lim.try_reserve(10.0, now) {
                None => {
                    k += 1;
                    let actual = 5.0 + (k * 7 % 11) as f64;
                    lim.settle(10.0, actual);
                    log.push((now.duration_since(t0).as_secs_f64(), actual));
                }
                Some(wait) => now += wait,
            }
        }
        let total: f64 = log.iter().map(|(_, c)| c).sum();
        assert!(total > rate * 25.0, "the limiter starved the scan: {total}");
        for start in 0..27 {
            let s = f64::from(start);
            let window: f64 = log
                .iter()
                .filter(|(t, _)| *t >= s && *t < s + 3.0)
                .map(|(_, c)| c)
                .sum();
            assert!(
                window <= rate * 3.0 + rate + 15.0,
                "window at {s}s: {window}"
            );
        }
    }
}
