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

    #[error("table {table}: {count} item(s) rejected, over the limit --max-rejects {limit}; nothing of this table was committed")]
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
}

impl Error {
    /// Wraps a tokio-postgres error with the table and the action that failed.
    pub fn pg(table: &str, action: &str, e: &tokio_postgres::Error) -> Error {
        Error::Postgres {
            table: table.to_string(),
            action: action.to_string(),
            reason: pg_reason(e),
        }
    }

    /// The process exit code for this error: 2 for usage and config, else 1.
    #[must_use]
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config { .. } | Error::Usage(_) => 2,
            _ => 1,
        }
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
