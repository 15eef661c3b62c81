//! Connections to the target: the URL resolved the libpq way ([`super::libpq`]), TLS as
//! its `sslmode` says ([`super::tls`]), the whole connect bounded by `connect_timeout`;
//! one `tokio-postgres` client per call, its driver on the tokio runtime, and the target
//! named without its credentials for messages.
//!
//! Input: a libpq URL. Output: a connected [`Client`], or [`Error::Connect`].

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{Client, NoTls, Socket};

use super::rds_iam;
use super::tls;
use crate::config::libpq::{self, Resolved, Roots, SslMode};
use crate::error::{connection_lost, pg_reason, with_causes, Error, Result};
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};

/// The URL resolved once per process (its warnings said once).
fn resolved(url: &str) -> Result<Resolved> {
    static SEEN: OnceLock<Mutex<HashMap<String, Resolved>>> = OnceLock::new();
    let seen = SEEN.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(r) = seen.lock().ok().and_then(|m| m.get(url).cloned()) {
        return Ok(r);
    }
    let r = libpq::resolve(url, &|k| std::env::var(k).ok()).map_err(|reason| Error::Connect {
        target: describe_target(url),
        reason,
        retry: false,
    })?;
    for w in &r.warnings {
        tracing::warn!(target_db = %r.target, "{w}");
    }
    if let Ok(mut m) = seen.lock() {
        m.insert(url.to_string(), r.clone());
    }
    Ok(r)
}

/// Opens one connection; its driver runs on the tokio runtime.
///
/// # Errors
/// [`Error::Connect`] with one line naming the server and the reason (which TLS check
/// failed, a refused password — never the password itself).
pub async fn connect(url: &str) -> Result<Client> {
    let r = resolved(url)?;
    match tokio::time::timeout(r.connect_timeout, connect_resolved(&r)).await {
        Ok(c) => c,
        Err(_) => Err(Error::Connect {
            target: r.target.clone(),
            reason: format!(
                "no answer within {} s (connect_timeout): the server is unreachable, or accepts connections and does not answer",
                r.connect_timeout.as_secs()
            ),
            retry: true,
        }),
    }
}

async fn connect_resolved(r: &Resolved) -> Result<Client> {
    let mut config = r.config.clone();
    if r.iam {
        config.password(iam_token(r).await?);
    }
    match r.ssl_mode {
        SslMode::Disable => {
            config.ssl_mode(PgSslMode::Disable);
            open(r, &config, NoTls).await
        }
        SslMode::Allow => {
            config.ssl_mode(PgSslMode::Disable);
            match open(r, &config, NoTls).await {
                Ok(c) => Ok(c),
                // As libpq: when both fail, the error is the later (TLS) attempt's.
                Err(_) => {
                    config.ssl_mode(PgSslMode::Require);
                    open(r, &config, make(r, &Roots::Unchecked, false)?).await
                }
            }
        }
        SslMode::Prefer => {
            config.ssl_mode(PgSslMode::Prefer);
            open(r, &config, make(r, &Roots::Unchecked, false)?).await
        }
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
            config.ssl_mode(PgSslMode::Require);
            open(r, &config, make(r, &r.roots, r.check_host)?).await
        }
    }
}

/// A fresh RDS IAM token for this connection (the credentials provider refreshes its
/// credentials as they expire).
async fn iam_token(r: &Resolved) -> Result<String> {
    static ENV: tokio::sync::OnceCell<(SharedCredentialsProvider, Option<String>)> =
        tokio::sync::OnceCell::const_new();
    let fail = |reason: String| Error::Connect {
        target: r.target.clone(),
        reason,
        retry: false,
    };
    let (provider, region) = ENV
        .get_or_try_init(|| async {
            let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
                .load()
                .await;
            let provider = config
                .credentials_provider()
                .ok_or("auth = \"rds-iam\": no AWS credentials provider is configured")?;
            Ok::<_, String>((provider, config.region().map(|r| r.as_ref().to_string())))
        })
        .await
        .map_err(|e| fail(e.to_string()))?;
    let host = match r.config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => return Err(fail("auth = \"rds-iam\" needs a TCP host name".into())),
    };
    let port = r.config.get_ports().first().copied().unwrap_or(5432);
    let user = r.config.get_user().unwrap_or_default();
    let region = rds_iam::region_of_host(&host)
        .or_else(|| region.clone())
        .ok_or_else(|| fail("auth = \"rds-iam\": no AWS region (set AWS_REGION)".into()))?;
    let c = provider
        .provide_credentials()
        .await
        .map_err(|e| fail(format!("auth = \"rds-iam\": no AWS credentials: {e}")))?;
    let creds = rds_iam::Credentials {
        access_key_id: c.access_key_id().to_string(),
        secret_access_key: c.secret_access_key().to_string(),
        session_token: c.session_token().map(str::to_string),
    };
    Ok(rds_iam::auth_token(
        &host,
        port,
        user,
        &region,
        &creds,
        std::time::SystemTime::now(),
    ))
}

fn make(
    r: &Resolved,
    roots: &Roots,
    check_host: bool,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect> {
    tls::connector(roots, check_host).map_err(|reason| Error::Connect {
        target: r.target.clone(),
        reason,
        retry: false,
    })
}

async fn open<T>(r: &Resolved, config: &tokio_postgres::Config, tls: T) -> Result<Client>
where
    T: MakeTlsConnect<Socket>,
    T::Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T::TlsConnect: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    let (client, conn) = config.connect(tls).await.map_err(|e| Error::Connect {
        target: r.target.clone(),
        reason: reason(r, &e),
        retry: connection_lost(&e) && !is_tls_refusal(&e),
    })?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "Connection closed with an error.");
        }
    });
    Ok(client)
}

/// A certificate the TLS checks refused: no retry makes it pass.
fn is_tls_refusal(e: &tokio_postgres::Error) -> bool {
    let text = with_causes(e);
    text.contains("invalid peer certificate")
}

fn reason(r: &Resolved, e: &tokio_postgres::Error) -> String {
    let text = pg_reason(e);
    let host = r.target.split(':').next().unwrap_or_default();
    if let Some(why) = tls::explain(&text, r.ssl_mode.as_str(), host) {
        return format!("{why} [{text}]");
    }
    if text.contains("no encryption") && r.ssl_mode == SslMode::Disable {
        return format!("{text}: the server requires TLS; use sslmode=require or stronger");
    }
    if text.contains("server does not support TLS") {
        return format!(
            "{text} (sslmode={} needs it; the server has ssl = off)",
            r.ssl_mode.as_str()
        );
    }
    text
}

/// `host:port/db` of a URL, without credentials, for messages.
#[must_use]
pub fn describe_target(url: &str) -> String {
    match libpq::resolve(url, &|k| std::env::var(k).ok()) {
        Ok(r) => r.target,
        Err(_) => match url.parse::<tokio_postgres::Config>() {
            Ok(c) => libpq::describe(&c),
            Err(_) => "(invalid URL)".into(),
        },
    }
}
