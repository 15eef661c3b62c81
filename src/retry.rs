//! Retry timing: exponential backoff with jitter, shared by every retry loop (S3
//! reads, scans, BatchWriteItem, COPY chunks on a new connection).
//!
//! Input: the attempt number. Output: how long to wait before it.

use std::time::Duration;

/// Exponential backoff with jitter: attempt 0 waits up to 50 ms, each next attempt up to
/// twice as long, capped at 10 s; the wait is drawn between a quarter of the cap and the cap.
#[must_use]
pub fn backoff(attempt: u32) -> Duration {
    let cap_ms = (50u64 << attempt.min(8)).min(10_000);
    let jitter = fastrand_u64() % (cap_ms + 1);
    Duration::from_millis(jitter.max(cap_ms / 4))
}

/// How long a PostgreSQL connection is tried again before the load stops: a server
/// restart, a failover or a network cut shorter than this is ridden out.
pub const PG_RETRY_FOR: Duration = Duration::from_secs(60);

/// PostgreSQL's retry schedule: attempt 1 waits 0.5 s, each next one twice as long, capped
/// at 8 s (0.5, 1, 2, 4, 8, 8, … — about 10 attempts in [`PG_RETRY_FOR`]), each drawn
/// between three quarters of that and all of it.
#[must_use]
pub fn pg_backoff(attempt: u32) -> Duration {
    let cap_ms = (500u64 << attempt.saturating_sub(1).min(4)).min(8_000);
    let jitter = fastrand_u64() % (cap_ms / 4 + 1);
    Duration::from_millis(cap_ms - jitter)
}

/// A cheap random number for jitter (no crypto needed): xorshift seeded by time and thread.
fn fastrand_u64() -> u64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0x9E37_79B9_7F4A_7C15, |d| d.as_nanos() as u64);
            let addr = &t as *const u64 as u64;
            (t ^ addr.rotate_left(32)) | 1
        });
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_backoff_is_the_documented_schedule() {
        for (attempt, cap) in [
            (1, 500),
            (2, 1000),
            (3, 2000),
            (4, 4000),
            (5, 8000),
            (9, 8000),
        ] {
            let d = pg_backoff(attempt).as_millis() as u64;
            assert!(d <= cap && d >= cap * 3 / 4, "attempt {attempt}: {d} ms");
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        for attempt in 0..20 {
            let d = backoff(attempt);
            let cap = (50u64 << attempt.min(8)).min(10_000);
            assert!(d.as_millis() as u64 <= cap, "attempt {attempt}: {d:?}");
            assert!(d.as_millis() as u64 >= cap / 4, "attempt {attempt}: {d:?}");
        }
    }
}
