//! The library's error type. Every variant says where the failure happened: the config
//! key, the export file, the table, the connection.

use std::path::PathBuf;

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can stop a command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: invalid configuration:\n  {}", problems.join("\n  "))]
    Config { path: String, problems: Vec<String> },

    #[error("{0}")]
    Usage(String),

    #[error("export {location}: {reason}")]
    Export { location: String, reason: String },

    #[error("export {location}: cannot read `{file}`")]
    ExportIo {
        location: String,
        file: String,
        source: std::io::Error,
    },

    #[error("export data file `{key}`: {reason}")]
    DataFile { key: String, reason: String },

    #[error("export data file `{key}`, near line {line}: cannot read")]
    DataFileIo {
        key: String,
        line: u64,
        source: std::io::Error,
    },

    /// A source other than a data file: a DynamoDB table or segment, an S3 listing.
    #[error("{source_name}: {reason}")]
    Source { source_name: String, reason: String },

    #[error("cannot connect to PostgreSQL at {target}: {reason}")]
    Connect { target: String, reason: String },

    #[error("PostgreSQL, table {table}: {action}: {reason}")]
    Postgres {
        table: String,
        action: String,
        reason: String,
    },

    /// The connection went away or the server restarted: the chunk can be retried on a new
    /// connection.
    #[error("PostgreSQL, table {table}: {action}: {reason} (connection lost)")]
    PostgresLost {
        table: String,
        action: String,
        reason: String,
    },

    #[error("table {table}: {count} item(s) rejected, over the limit --max-rejects {limit}; the load stopped (chunks committed before it are kept: fix the input and re-run, or --fresh)")]
    TooManyRejects {
        table: String,
        count: u64,
        limit: u64,
    },

    #[error("rejects file {path}")]
    Rejects {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },

    #[error("the decode/encode pool stopped: {0}")]
    CpuPool(String),

    #[error("interrupted")]
    Interrupted,

    /// A load that stopped: what it committed is kept and a re-run resumes.
    #[error("{inner}\n  run {run} stopped; every committed chunk is kept: re-run the same command to resume (`ddb2pg status` shows each split), or add --fresh to start over")]
    Stopped { run: i64, inner: Box<Error> },
}

impl Error {
    /// Wraps a tokio-postgres error with the table and the action that failed.
    pub fn pg(table: &str, action: &str, e: &tokio_postgres::Error) -> Error {
        let (table, action, reason) = (table.to_string(), action.to_string(), pg_reason(e));
        if connection_lost(e) {
            Error::PostgresLost {
                table,
                action,
                reason,
            }
        } else {
            Error::Postgres {
                table,
                action,
                reason,
            }
        }
    }

    /// Whether retrying on a new connection may succeed: the connection or the server
    /// went away, or the transaction lost a deadlock or serialization race.
    #[must_use]
    pub fn retryable(&self) -> bool {
        matches!(self, Error::PostgresLost { .. } | Error::Connect { .. })
    }

    /// The process exit code for this error: 2 for usage and config, else 1.
    #[must_use]
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config { .. } | Error::Usage(_) => 2,
            Error::Stopped { inner, .. } => inner.exit_code(),
            _ => 1,
        }
    }
}

/// A connection-level failure: closed socket, I/O error, server shutdown or restart
/// (SQLSTATE class 08, 57P01–57P03), too many connections, deadlock or serialization failure.
#[must_use]
pub fn connection_lost(e: &tokio_postgres::Error) -> bool {
    match e.as_db_error() {
        Some(db) => {
            let code = db.code().code();
            code.starts_with("08")
                || matches!(
                    code,
                    "57P01" | "57P02" | "57P03" | "53300" | "40001" | "40P01"
                )
        }
        None => true,
    }
}

/// One line describing a PostgreSQL error: the server's message, detail and SQLSTATE.
#[must_use]
pub fn pg_reason(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{} (SQLSTATE {})", db.message(), db.code().code());
        if let Some(d) = db.detail() {
            s.push_str(": ");
            s.push_str(d);
        }
        if let Some(w) = db.where_() {
            s.push_str("; ");
            s.push_str(&w.replace('\n', "; "));
        }
        s
    } else {
        let mut s = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(inner) = src {
            s.push_str(": ");
            s.push_str(&inner.to_string());
            src = inner.source();
        }
        s
    }
}
