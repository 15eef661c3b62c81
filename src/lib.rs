//! ddb2pg: move a DynamoDB data set into PostgreSQL as fast as the database can take it,
//! and prove nothing was lost.
//!
//! ```text
//!  plan ──► read ─────────► decode + map ──────► encode ─────────► write ─────────► PostgreSQL
//!  splits   reader threads   rayon pool           rayon pool         tokio-postgres
//!           DynamoDB JSON    Arrow RecordBatch    COPY BINARY bytes  N connections, one
//!           lines, per split (per target table)   (bytes::Bytes)     transaction per chunk
//! ```
//!
//! The modules, from the bottom layer up (a module imports only from the layers below it):
//!
//! | layer | modules | job |
//! | --- | --- | --- |
//! | base | [`error`], [`retry`], [`schema`] | errors that say where; backoff with jitter; column types |
//! | values | [`scalar`] (`number`, `time`, `uuid`) | exact decimals, dates both ways, UUID text |
//! | DynamoDB JSON | [`ddbjson`] (`value`, `parse`, `plain`, `sdk`) | the values; the parser; values → plain JSON; SDK `AttributeValue` ⇄ DynamoDB JSON |
//! | rules | [`convert`], [`config`] (`parse`) | one value → one typed cell; `pipeline.toml` → typed [`config::Config`] |
//! | read | [`source`] (`page`, `aws`, `export`, `changes`, `s3`, `dynamodb`, `parquet`) | splits, and pages of export lines with their origin (or a snapshot's rows); the incremental exports under a prefix |
//! | stages | [`decode`], [`encode`] | page → Arrow `RecordBatch` → binary COPY tuples (plain sync functions) |
//! | write | [`sink`] (`connect`, `copy`, `ddl`, `changes`) | connections; COPY streams; tables per mode, keys, indexes, foreign keys, upsert merge; a sync's staged changes applied |
//! | commands | [`check`] (the `[[checks]]` latency targets), [`init`] (a mapping inferred from every item), [`load`] (`input`, `run`, `table`, `read`, `cpu`, `write`, `flow`, `claim`, `state`, `rejects`, `metrics`, `progress`, `report`), [`verify`] (`pass`, `copy_reader`, `canonical`), [`admin`] (`status`, `promote`), [`sync`] (`chain`), [`snapshot`] (mapped rows to Parquet) | the load's control plane and stages (and a sync's runs, `load::changes`); the proof; the run's state and schema swaps; the changes after a load |
//! | tools | [`fixtures`] (`items`, `changes`, `seed`, `upload`), [`chart`] | the CloudShelf data set and emulator seeding; the reports' SVG charts |
//! | reports | [`bench`] (`lag`), [`rehearse`] | throughput beside PostgreSQL's own COPY, sync lag; a rehearsal's load, verify, check and projection in one folder |
//!
//! Inside a folder module the files import each other without a circle.
//! `scripts/check-layers.py` (run by CI) holds both rules.
//!
//! `main.rs` is the command line only: arguments → these calls → printing → exit code.

#![forbid(unsafe_code)]

pub mod admin;
pub mod bench;
pub mod chart;
pub mod check;
pub mod config;
pub mod convert;
pub mod ddbjson;
pub mod decode;
pub mod encode;
pub mod error;
pub mod fixtures;
pub mod init;
pub mod load;
pub mod rehearse;
pub mod retry;
pub mod scalar;
pub mod schema;
pub mod sink;
pub mod snapshot;
pub mod source;
pub mod sync;
pub mod verify;

pub use error::{Error, Result};
