//! Progress: a bar per table on a terminal (rows, MB, rows/s, ETA from the manifest's
//! item count), or a log line every ten seconds otherwise.
//!
//! Input: the table's shared counters. Output: drawing only; nothing here affects the load.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::metrics::{Counters, LOG_EVERY};

/// Progress for a whole load.
pub(super) struct Progress {
    multi: Option<MultiProgress>,
}

/// Progress of one table; stops drawing on [`TableProgress::finish`] or drop.
pub(super) struct TableProgress {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    /// Bars when `bars`, log lines otherwise.
    #[must_use]
    pub(super) fn new(bars: bool) -> Progress {
        Progress {
            multi: bars
                .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(5))),
        }
    }

    /// Starts reporting a table. Must be called inside the tokio runtime.
    #[must_use]
    pub(super) fn table(&self, name: &str, total: u64, counters: Arc<Counters>) -> TableProgress {
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let name = name.to_string();
        let started = Instant::now();
        let task = match &self.multi {
            Some(multi) => {
                let bar = multi.add(ProgressBar::new(total.max(1)));
                let style = ProgressStyle::with_template(
                    "{prefix:>12} [{bar:30}] {pos}/{len} rows  {msg}  ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
                bar.set_style(style);
                bar.set_prefix(name);
                tokio::spawn(async move {
                    let show = |bar: &ProgressBar| {
                        let rows = counters.rows_written.load(Ordering::Relaxed);
                        let mb = counters.bytes_read.load(Ordering::Relaxed) as f64 / 1e6;
                        let rate = rows as f64 / started.elapsed().as_secs_f64().max(1e-9);
                        bar.set_position(rows);
                        bar.set_message(format!("{mb:.1} MB read  {rate:.0} rows/s"));
                    };
                    loop {
                        show(&bar);
                        tokio::select! {
                            _ = &mut stopped => break,
                            () = tokio::time::sleep(Duration::from_millis(200)) => {}
                        }
                    }
                    show(&bar);
                    bar.finish();
                })
            }
            None => tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = &mut stopped => break,
                        () = tokio::time::sleep(LOG_EVERY) => {}
                    }
                    let rows = counters.rows_written.load(Ordering::Relaxed);
                    let secs = started.elapsed().as_secs_f64();
                    let rate = rows as f64 / secs.max(1e-9);
                    let eta = if rate > 0.0 && total > rows {
                        (total - rows) as f64 / rate
                    } else {
                        0.0
                    };
                    tracing::info!(
                        table = %name,
                        rows,
                        total,
                        mb_read = counters.bytes_read.load(Ordering::Relaxed) as f64 / 1e6,
                        rows_per_sec = rate.round(),
                        eta_secs = eta.round(),
                        "Progress."
                    );
                }
            }),
        };
        TableProgress {
            stop: Some(stop),
            task: Some(task),
        }
    }
}

impl TableProgress {
    /// Stops drawing (the bar shows its final count).
    pub(super) fn finish(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.take();
    }
}

impl Drop for TableProgress {
    fn drop(&mut self) {
        self.stop_now();
    }
}
