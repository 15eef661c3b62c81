//! Sinks: where encoded rows go. PostgreSQL, by binary COPY.

pub mod postgres;
