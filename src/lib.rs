//! ddb2pg: move a DynamoDB data set into PostgreSQL as fast as the database can take it.
//!
//! The modules read as the data flow: `config` → `source` (read) → `decode` (+ `convert`,
//! `number`, `ddbjson`) → `encode` → `sink` (write), run together by `pipeline`.

pub mod aws;
pub mod bench;
pub mod config;
pub mod convert;
pub mod copyfmt;
pub mod ddbjson;
pub mod decode;
pub mod encode;
pub mod error;
pub mod fixtures;
pub mod number;
pub mod pipeline;
pub mod progress;
pub mod promote;
pub mod rejects;
pub mod schema;
pub mod seed;
pub mod sink;
pub mod source;
pub mod state;
pub mod status;
pub mod verify;

pub use error::{Error, Result};
