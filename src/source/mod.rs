//! Sources: where raw records come from, and what flows out of them.
//!
//! Every source is a list of splits (export data files, or scan segments) read by plain
//! threads into [`Page`]s of DynamoDB JSON export lines; every page carries its
//! [`Origin`] so any error or reject can say where it came from.

pub mod aws;
pub mod changes;
pub mod dynamodb;
pub mod export;
mod page;
pub mod parquet;
pub mod s3;
pub mod stream;

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

use crate::config::{Source, TableSpec, Tuning};
use crate::error::Result;
use dynamodb::{ScanOptions, ScanPlan};
use export::ExportPlan;
pub use page::{done_prefix, merge_ranges, split_page, FileStats, Origin, Page, Resume};

/// An opened source: an export (local or S3) or a live table.
#[derive(Debug, Clone)]
pub enum SourcePlan {
    Export(Arc<ExportPlan>),
    Scan(Arc<ScanPlan>),
    /// A snapshot's table: its Parquet files, rows already mapped.
    Parquet(Arc<parquet::ParquetPlan>),
}

impl SourcePlan {
    /// Opens a table's source: reads manifests, or describes the table. Runs on the
    /// tokio runtime whose handle the blocking readers use later.
    ///
    /// # Errors
    /// A source that cannot be opened, naming it.
    pub async fn open(spec: &TableSpec, tuning: &Tuning) -> Result<SourcePlan> {
        if let Source::Parquet { location, path } = &spec.source {
            let (spec, location, path) = (spec.clone(), location.clone(), path.clone());
            let plan = tokio::task::spawn_blocking(move || parquet::open(&spec, &location, &path))
                .await
                .map_err(|e| crate::Error::Internal(e.to_string()))??;
            return Ok(SourcePlan::Parquet(Arc::new(plan)));
        }
        Self::open_source(&spec.source, tuning).await
    }

    /// As [`SourcePlan::open`], for a source of no table (`init` reads one before any
    /// mapping exists).
    ///
    /// # Errors
    /// A source that cannot be opened, naming it.
    pub async fn open_source(source: &Source, tuning: &Tuning) -> Result<SourcePlan> {
        match source {
            Source::Export { path: Some(p), .. } => {
                let p = p.clone();
                let plan = tokio::task::spawn_blocking(move || export::open(&p))
                    .await
                    .map_err(|e| crate::Error::Internal(e.to_string()))??;
                Ok(SourcePlan::Export(Arc::new(plan)))
            }
            Source::Export {
                location,
                path: None,
            } => Ok(SourcePlan::Export(Arc::new(
                export::open_s3(location).await?,
            ))),
            Source::Parquet { location, .. } => Err(crate::Error::Usage(format!(
                "{location}: a snapshot is read for a table of the mapping (source = {{ parquet = \"{location}\" }})"
            ))),
            Source::DynamoDb {
                table,
                segments,
                read_capacity,
                consistent,
            } => {
                let opts = ScanOptions {
                    segments: *segments,
                    read_capacity: *read_capacity,
                    consistent: *consistent,
                    concurrency: tuning.readers_set.then_some(tuning.readers),
                    cpu_threads: tuning.cpu_threads,
                };
                Ok(SourcePlan::Scan(Arc::new(
                    dynamodb::open(table, opts).await?,
                )))
            }
        }
    }

    /// How to name the source in reports.
    #[must_use]
    pub fn location(&self) -> String {
        match self {
            SourcePlan::Export(e) => e.location.clone(),
            SourcePlan::Scan(s) => format!("dynamodb:{}", s.table),
            SourcePlan::Parquet(p) => p.location.clone(),
        }
    }

    /// Number of splits.
    #[must_use]
    pub fn splits(&self) -> usize {
        match self {
            SourcePlan::Export(e) => e.files.len(),
            SourcePlan::Scan(s) => s.segments as usize,
            SourcePlan::Parquet(p) => p.manifest.files.len(),
        }
    }

    /// Items expected: exact for an export (its manifest), approximate for a table.
    #[must_use]
    pub fn expected_items(&self) -> u64 {
        match self {
            SourcePlan::Export(e) => e.item_count(),
            SourcePlan::Scan(s) => s.expected_items(),
            SourcePlan::Parquet(p) => p.rows(),
        }
    }

    /// Splits read at once.
    #[must_use]
    pub fn readers(&self, tuning: &Tuning) -> usize {
        match self {
            SourcePlan::Export(e) => tuning.readers.min(e.files.len()).max(1),
            SourcePlan::Scan(s) => s.concurrency,
            SourcePlan::Parquet(p) => tuning.readers.min(p.manifest.files.len()).max(1),
        }
    }

    /// Warnings found while opening.
    #[must_use]
    pub fn warnings(&self) -> &[String] {
        match self {
            SourcePlan::Export(e) => &e.warnings,
            SourcePlan::Scan(_) | SourcePlan::Parquet(_) => &[],
        }
    }

    /// Name of split `idx` (file key or segment).
    #[must_use]
    pub fn split_name(&self, idx: usize) -> String {
        match self {
            SourcePlan::Export(e) => e
                .files
                .get(idx)
                .map_or_else(String::new, |f| f.key.to_string()),
            SourcePlan::Scan(s) => Origin::Segment {
                segment: idx as u32,
                total: s.segments,
            }
            .to_string(),
            SourcePlan::Parquet(p) => p
                .manifest
                .files
                .get(idx)
                .map_or_else(String::new, |f| f.path.clone()),
        }
    }

    /// Reads split `idx` into pages handed to `emit` (`false` stops quietly); a scan
    /// segment starts at `start` when given (files always read from their start, their
    /// checksum needs every byte). Blocking:
    /// call it from a plain thread (or the rayon pool), never from a tokio worker.
    ///
    /// # Errors
    /// The split cannot be read, naming it.
    #[allow(clippy::too_many_arguments)]
    pub fn read_split(
        &self,
        idx: usize,
        page_bytes: usize,
        page_lines: usize,
        bytes_read: &Arc<AtomicU64>,
        cancel: &AtomicBool,
        start: Option<&(u64, String)>,
        emit: impl FnMut(Page) -> bool,
    ) -> Result<FileStats> {
        match self {
            SourcePlan::Export(e) => match e.files.get(idx) {
                Some(file) => e.read(file, page_bytes, page_lines, bytes_read, cancel, emit),
                None => Ok(FileStats::default()),
            },
            SourcePlan::Scan(s) => s.read_segment(
                idx as u32, page_bytes, page_lines, bytes_read, cancel, start, emit,
            ),
            SourcePlan::Parquet(p) => p.read(idx, page_lines, bytes_read, cancel, emit),
        }
    }

    /// Retries of the source's requests (S3 or DynamoDB), for the summary.
    #[must_use]
    pub fn retries(&self) -> u64 {
        match self {
            SourcePlan::Export(e) => {
                e.s3.as_ref()
                    .map_or(0, |s| s.retries.load(std::sync::atomic::Ordering::Relaxed))
            }
            SourcePlan::Scan(s) => {
                let r = s.report();
                r.throttled_retries + r.server_error_retries
            }
            SourcePlan::Parquet(_) => 0,
        }
    }
}
