//! Connections to the target: one `tokio-postgres` client per call, its driver on the
//! tokio runtime, and the target named without its credentials for messages.
//!
//! Input: a libpq URL. Output: a connected [`Client`], or [`Error::Connect`].

use tokio_postgres::{Client, NoTls};

use crate::error::{connection_lost, pg_reason, Error, Result};

/// Opens one connection; its driver runs on the tokio runtime.
///
/// # Errors
/// [`Error::Connect`] with one line naming the server and the reason.
pub async fn connect(url: &str) -> Result<Client> {
    let target = describe_target(url);
    let mut config: tokio_postgres::Config = url.parse().map_err(|e| Error::Connect {
        target: target.clone(),
        reason: format!("invalid connection URL: {e}"),
        retry: false,
    })?;
    // Named in pg_stat_activity (and how the lock-wait watcher finds this tool's sessions).
    if config.get_application_name().is_none() {
        config.application_name("ddb2pg");
    }
    let (client, conn) = config.connect(NoTls).await.map_err(|e| Error::Connect {
        target: target.clone(),
        reason: pg_reason(&e),
        retry: connection_lost(&e),
    })?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "Connection closed with an error.");
        }
    });
    Ok(client)
}

/// `host:port/db` of a URL, without credentials, for messages.
#[must_use]
pub fn describe_target(url: &str) -> String {
    match url.parse::<tokio_postgres::Config>() {
        Ok(c) => {
            let host = c
                .get_hosts()
                .first()
                .map(|h| match h {
                    tokio_postgres::config::Host::Tcp(s) => s.clone(),
                    tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
                })
                .unwrap_or_else(|| "localhost".into());
            let port = c.get_ports().first().copied().unwrap_or(5432);
            format!("{host}:{port}/{}", c.get_dbname().unwrap_or(""))
        }
        Err(_) => "(invalid URL)".into(),
    }
}
