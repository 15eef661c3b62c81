//! The integration tests, as one binary (the AWS SDKs and the rest link once): against the
//! real PostgreSQL on 127.0.0.1:5432 (each test in its own database) and the AWS
//! emulators on loopback, through the built `ddb2pg` binary and the library.
//!
//! Helpers are in [`common`]; the fault-injecting HTTP proxy for the AWS side in [`proxy`].

// Test code may unwrap; its helpers are `pub` for the sibling modules of this one crate.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;
mod proxy;

mod aws_sources;
mod backpressure;
mod bad_input;
mod bench;
mod check;
mod children;
mod connect;
mod copy_golden;
mod errors;
mod hostile;
mod indexes_fks;
mod init;
mod interrupt;
mod ion;
mod load_exports;
mod parser_fuzz;
mod promote;
mod rehearsal;
mod resume;
mod routing;
mod snapshot;
mod stream;
mod sync;
mod types_and_rejects;
mod upsert;
mod verify;
