//! The library's error type. Every variant says where the failure happened: the config
//! key, the export file, the table, the connection. Three kinds: input (the user's data or
//! config), infrastructure (PostgreSQL, AWS, disk) and [`Error::Internal`] (a broken
//! invariant: a bug of ours, never the user's).

use std::path::PathBuf;

use tokio_postgres::error::SqlState;

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can stop a command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: invalid configuration:\n  {}", problems.join("\n  "))]
    Config { path: String, problems: Vec<String> },

    #[error("{0}")]
    Usage(String),

    /// A sync cannot apply a table's changes without losing some (ARCHITECTURE §8): the
    /// message says what is missing and what to reload.
    #[error("table {table}: {reason}")]
    ChangesLost { table: String, reason: String },

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

    #[error("export data file `{key}`, near line {line}: {}", read_failure(source))]
    DataFileIo {
        key: String,
        line: u64,
        source: std::io::Error,
    },

    /// A source other than a data file: a DynamoDB table or segment, an S3 listing.
    #[error("{source_name}: {reason}")]
    Source { source_name: String, reason: String },

    #[error("cannot connect to PostgreSQL at {target}: {reason}")]
    Connect {
        target: String,
        reason: String,
        /// The server may take a new attempt (it was down, restarting, full), unlike a
        /// refusal such as a wrong password or a missing database.
        retry: bool,
    },

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

    #[error("{what}")]
    Io {
        what: String,
        source: std::io::Error,
    },

    /// Another worker took the split over (this worker's lease ran out).
    #[error("table {table}, split {split}: another worker took this split over (this worker's lease ran out); nothing of the chunk was committed: re-run to go on")]
    SplitLost { table: String, split: i32 },

    /// Another run into the same table has live workers: a run never shares a table.
    #[error("{what}: run {run} into it is live (its workers' PostgreSQL sessions: {}); a second run never shares a table with it: wait for it to end (`ddb2pg status` shows it), or stop its workers (pg_terminate_backend), then run again", pids.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
    RunLive {
        what: String,
        run: i64,
        pids: Vec<i32>,
    },

    /// This worker's run was abandoned for a newer one (or finished) while it loaded.
    #[error("run {run} is {state} now (a newer run into its tables took over): this worker stops without committing more")]
    RunGone { run: i64, state: String },

    /// The source repeats keys: the primary key (or a `unique` column) cannot be built
    /// after the data. Re-running the same load fails the same way.
    #[error("{0}")]
    DuplicateKeys(Box<Duplicates>),

    /// A broken invariant (a bug): a panic in a stage, a task that vanished, a value
    /// of the wrong shape between two of our own stages.
    #[error("internal error (a bug in ddb2pg, please report it): {0}")]
    Internal(String),

    #[error("interrupted")]
    Interrupted,

    /// A load that stopped: what it committed is kept and a re-run resumes.
    #[error("{}\n  run {run} stopped; every committed chunk is kept{}", with_causes(inner.as_ref()), if matches!(inner.as_ref(), Error::DuplicateKeys(_)) { "" } else { ": re-run the same command to resume (`ddb2pg status` shows each split), or add --fresh to start over" })]
    Stopped { run: i64, inner: Box<Error> },
}

/// Repeated key values that stop a key build: which, how many, and where.
#[derive(Debug)]
pub struct Duplicates {
    pub table: String,
    /// The constraint: `primary key (id)`, `unique constraint on email`.
    pub what: String,
    pub columns: Vec<String>,
    /// Values that appear more than once (0: not counted).
    pub count: u64,
    /// `id = 42: 2 rows, at file line 3, file line 9`.
    pub examples: Vec<String>,
    /// How the positions were found, or why they could not be.
    pub located: Option<String>,
}

impl std::fmt::Display for Duplicates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "table {}: ", self.table)?;
        if self.count > 0 {
            write!(
                f,
                "{} value(s) of ({}) appear more than once in the loaded rows, so its {} cannot be built",
                self.count,
                self.columns.join(", "),
                self.what
            )?;
        } else {
            write!(
                f,
                "its {} cannot be built: the loaded rows repeat a key",
                self.what
            )?;
        }
        f.write_str(
            " (a DynamoDB table holds one item per key: the export or the mapping repeats keys)",
        )?;
        if !self.examples.is_empty() {
            write!(f, "; for example:\n    {}", self.examples.join("\n    "))?;
        }
        if let Some(l) = &self.located {
            write!(f, "\n  {l}")?;
        }
        f.write_str("\n  load it with `--mode upsert --fresh` (the table this run created is dropped, and a key's last line wins), or fix the source and re-run with --fresh")
    }
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

    /// A panic caught in a stage, as an [`Error::Internal`] naming the stage.
    #[must_use]
    pub fn panic(stage: &str, payload: &(dyn std::any::Any + Send)) -> Error {
        let msg = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_string()))
            .unwrap_or_else(|| "unknown panic".into());
        Error::Internal(format!("{stage} panicked: {msg}"))
    }

    /// Whether retrying on a new connection may succeed: the connection or the server
    /// went away, or the transaction lost a deadlock or serialization race.
    #[must_use]
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            Error::PostgresLost { .. } | Error::Connect { retry: true, .. }
        )
    }

    /// The process exit code for this error: 2 for usage and config, else 1.
    #[must_use]
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config { .. } | Error::Usage(_) => 2,
            Error::ChangesLost { .. } => 5,
            Error::Stopped { inner, .. } => inner.exit_code(),
            _ => 1,
        }
    }
}

/// The server's answers after which a new connection may succeed: the connection or the
/// server went away (class 08, shutdown, restart), too many connections, or the
/// transaction lost a deadlock or serialization race.
const RETRY_STATES: &[SqlState] = &[
    SqlState::CONNECTION_EXCEPTION,
    SqlState::CONNECTION_DOES_NOT_EXIST,
    SqlState::CONNECTION_FAILURE,
    SqlState::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
    SqlState::SQLSERVER_REJECTED_ESTABLISHMENT_OF_SQLCONNECTION,
    SqlState::TRANSACTION_RESOLUTION_UNKNOWN,
    SqlState::PROTOCOL_VIOLATION,
    SqlState::ADMIN_SHUTDOWN,
    SqlState::CRASH_SHUTDOWN,
    SqlState::CANNOT_CONNECT_NOW,
    SqlState::TOO_MANY_CONNECTIONS,
    SqlState::T_R_SERIALIZATION_FAILURE,
    SqlState::T_R_DEADLOCK_DETECTED,
];

/// A connection-level failure: the server said so ([`RETRY_STATES`]), or the client lost
/// the connection (closed, an I/O error on the socket, a connect timeout). A client-side
/// error (a parameter that does not serialise, an unexpected message) is not one: it
/// would fail the same way on a new connection.
#[must_use]
pub fn connection_lost(e: &tokio_postgres::Error) -> bool {
    if let Some(db) = e.as_db_error() {
        return RETRY_STATES.contains(db.code());
    }
    if e.is_closed() {
        return true;
    }
    // An I/O error on the socket (reset, refused, timed out). tokio-postgres also wraps
    // its own refusals to encode or parse a message as I/O errors of these two kinds
    // (a query text with U+0000, a value too large to send): those fail again anywhere.
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        if let Some(io) = inner.downcast_ref::<std::io::Error>() {
            return !matches!(
                io.kind(),
                std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData
            );
        }
        src = inner.source();
    }
    false
}

/// What a failed read of a data file means, in words (the OS or gzip error follows it).
fn read_failure(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => {
            "the gzip data ends early (a truncated or partly copied file)"
        }
        std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput => {
            "not gzip data, or corrupt gzip data"
        }
        _ => "cannot read",
    }
}

/// An error and every cause under it, on one line (`error: cause: cause`), for the
/// places that show an error without its chain: a stopped load's message, the last error
/// a split records.
#[must_use]
pub fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
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
        with_causes(e)
    }
}
