//! Sources: where raw records come from, and what flows out of them.
//!
//! Every unit of work carries its [`Origin`] so any error or reject can say where it came
//! from: the export data file and line.

pub mod export;

use std::fmt;
use std::sync::Arc;

/// Where a page of records came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// An export data file, by its key in the manifest.
    ExportFile { key: Arc<str> },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::ExportFile { key } => write!(f, "{key}"),
        }
    }
}

/// Whole lines of DynamoDB JSON read from one split.
#[derive(Debug)]
pub struct Page {
    pub origin: Origin,
    /// 1-based number of the first line in `data`.
    pub first_line: u64,
    /// Whole lines, newline-separated (the last may lack its newline).
    pub data: Vec<u8>,
}
