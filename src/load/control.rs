//! The worker's control connection: claims, leases, split states, the run's tables, keys
//! and indexes. It survives what the COPY connections survive: a call that loses the
//! connection (a server restart, `pg_terminate_backend`, the network) is made again on a
//! new one, on PostgreSQL's retry schedule ([`crate::retry::pg_backoff`], for up to
//! [`crate::retry::PG_RETRY_FOR`]); the new session marks this worker live again and
//! takes its claims back, so nothing it holds is seen as abandoned once it is back.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio_postgres::Client;

use super::state;
use crate::error::{Error, Result};
use crate::retry::{pg_backoff, PG_RETRY_FOR};
use crate::sink::connect;

/// What a new session takes back: the run this worker is live in, and its worker id.
#[derive(Debug, Clone, Default)]
struct Hold {
    run: Option<i64>,
    worker: Option<String>,
}

/// The control connection, replaced when it is lost.
pub(super) struct Control {
    url: String,
    client: Mutex<Arc<Client>>,
    hold: Mutex<Hold>,
    /// One reconnect at a time.
    reconnecting: tokio::sync::Mutex<()>,
}

impl Control {
    pub(super) fn new(url: &str, client: Client) -> Control {
        Control {
            url: url.to_string(),
            client: Mutex::new(Arc::new(client)),
            hold: Mutex::new(Hold::default()),
            reconnecting: tokio::sync::Mutex::new(()),
        }
    }

    /// A session of its own on the same target, for a step that runs beside this
    /// worker's (a table's keys and indexes built while the next table loads): it holds
    /// no run or claims, and is replaced like this one when it is lost.
    ///
    /// # Errors
    /// The connection fails.
    pub(super) async fn sibling(&self) -> Result<Control> {
        Ok(Control::new(&self.url, connect(&self.url).await?))
    }

    /// The connection now.
    pub(super) fn client(&self) -> Arc<Client> {
        match self.client.lock() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// This worker is live in `run` (a new session takes the run's lock again).
    pub(super) fn hold_run(&self, run: i64) {
        if let Ok(mut h) = self.hold.lock() {
            h.run = Some(run);
        }
    }

    /// This worker's id (a new session takes its claims back).
    pub(super) fn hold_worker(&self, worker: &str) {
        if let Ok(mut h) = self.hold.lock() {
            h.worker = Some(worker.to_string());
        }
    }

    /// Runs `f` on the control connection; while the connection is lost, again on a new
    /// one after PostgreSQL's backoff, for up to [`PG_RETRY_FOR`]. `what` names the call
    /// in the log.
    ///
    /// # Errors
    /// `f`'s error when it is not a lost connection, or when the time is up.
    pub(super) async fn retry<T, F, Fut>(&self, what: &str, f: F) -> Result<T>
    where
        F: Fn(Arc<Client>) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            let c = self.client();
            match f(c.clone()).await {
                Err(e) if e.retryable() && started.elapsed() < PG_RETRY_FOR => {
                    attempt += 1;
                    let wait = pg_backoff(attempt);
                    tracing::warn!(attempt, wait_s = wait.as_secs_f64(), error = %e, "Control connection lost ({what}): retrying on a new one.");
                    tokio::time::sleep(wait).await;
                    if let Err(e) = self.reconnect(&c).await {
                        tracing::warn!(error = %e, "Could not reconnect yet.");
                    }
                }
                r => return r,
            }
        }
    }

    /// Replaces `failed` with a new session (unless another call did already), live in
    /// the run again and holding this worker's claims.
    async fn reconnect(&self, failed: &Arc<Client>) -> Result<()> {
        let _one = self.reconnecting.lock().await;
        if !Arc::ptr_eq(&self.client(), failed) {
            return Ok(());
        }
        let c = connect(&self.url).await?;
        let hold = self.hold.lock().map(|h| h.clone()).unwrap_or_default();
        if let Some(run) = hold.run {
            state::hold_run(&c, run).await?;
            if let Some(worker) = &hold.worker {
                state::reclaim(&c, run, worker).await?;
            }
        }
        match self.client.lock() {
            Ok(mut slot) => *slot = Arc::new(c),
            Err(_) => {
                return Err(Error::Internal(
                    "the control connection slot is poisoned".into(),
                ))
            }
        }
        tracing::info!("Control connection back.");
        Ok(())
    }
}
