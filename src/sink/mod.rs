//! Sinks: where encoded rows go — PostgreSQL, over [`connect`]ions, by binary
//! [`copy`] streams into tables that [`ddl`] prepares per [`Mode`] and finishes (keys,
//! indexes, foreign keys, upsert merges) after the data; [`changes`] applies a sync's
//! staged changes.

pub mod changes;
pub mod children;
pub mod connect;
pub mod copy;
pub mod ddl;
pub mod locks;
pub mod rds_iam;
pub mod tls;

use crate::schema::quote_ident;

pub use connect::connect;

/// How `load` treats the target table.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Create the table (or use an empty one); fail if it holds rows.
    Create,
    /// Add rows to the table (created if missing).
    Append,
    /// Empty the table, then load.
    Replace,
    /// Insert new keys, update changed rows by primary key, leave equal rows untouched.
    Upsert,
    /// Apply changes (`sync`): puts replace whole rows by primary key, deletes remove them.
    #[value(skip)]
    Sync,
}

/// The staging table an upsert writer COPYs into (temporary: one per connection).
pub const UPSERT_STAGE: &str = "ddb2pg_upsert_stage";

/// `"schema"."table"`.
#[must_use]
pub fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(table))
}
