//! `ddb2pg snapshot`: each table's source read as a load reads it (the same mapping,
//! routing, child tables and rejects), its mapped Arrow batches written as Parquet — one
//! file per source split and table, zstd, row groups for readers — and a manifest per
//! table of files, rows and SHA-256 checksums, with the source's baseline.
//!
//! Resume: a split's files are written under a temporary name and renamed once whole,
//! then a marker records them (`DIR/.ddb2pg/`); a re-run of the same snapshot skips the
//! splits marked and redoes the rest, so a kill leaves neither a hole nor a duplicate.
//! The table manifests, which a load from the snapshot needs, are written last.
//!
//! Input: the config and `--out DIR`. Output: `DIR/<table>/part-NNNNN.parquet`,
//! `DIR/<table>/manifest.json`, `DIR/snapshot.json`, and the rejects file.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use arrow_array::{Array, ArrayRef, Decimal128Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use crate::config::{Config, TableSpec};
use crate::decode::{decode_page, DecodedPage, TablePlan};
use crate::error::{Error, Result};
use crate::load::{open_passes, reject_line};
use crate::schema::ColumnType;
use crate::source::parquet::{
    decimal_value, sha256_file, ManifestBaseline, ManifestColumn, ManifestFile, SnapshotManifest,
    SnapshotTable, TableManifest, FORMAT, MANIFEST, PG_TYPE_KEY, SNAPSHOT_MANIFEST,
};
use crate::source::{Page, SourcePlan};

/// Rows per Parquet row group: large enough for a reader's scans, small enough that a
/// writer's buffer stays bounded.
const ROW_GROUP_ROWS: usize = 128 * 1024;
/// The folder of the run's state, in the snapshot's folder.
const STATE_DIR: &str = ".ddb2pg";

/// Options of one `snapshot`.
#[derive(Debug, Clone)]
pub struct SnapshotOptions {
    pub out: PathBuf,
    pub tables: Vec<String>,
    pub rejects_path: PathBuf,
    pub max_rejects: Option<u64>,
    /// Start again even if an unfinished (or finished) snapshot of the same mapping is there.
    pub fresh: bool,
}

/// What a snapshot wrote.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SnapshotReport {
    pub out: String,
    pub tables: Vec<SnapshotTableReport>,
    pub seconds: f64,
    /// Splits already written by an earlier, stopped run of this snapshot.
    pub splits_kept: usize,
    /// The same snapshot was complete already: nothing was read.
    pub unchanged: bool,
    pub rejects_file: String,
}

/// One table of a snapshot's report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SnapshotTableReport {
    pub table: String,
    pub source: String,
    pub rows: u64,
    pub rejected: u64,
    pub files: usize,
    pub bytes: u64,
    /// Rows per second of the pass that wrote it (the pass's rows, all its tables).
    pub rows_per_second: f64,
}

/// The run's record: which mapping and sources it writes, and when it started (the
/// baseline of a scan).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunRecord {
    fingerprint: String,
    started_at: String,
}

/// A split written: per table of its pass, its file.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SplitMarker {
    split: String,
    files: Vec<(String, ManifestFile)>,
    /// Per table of the pass, its rejects in the split.
    rejected: Vec<(String, u64)>,
}

/// Writes the snapshot.
///
/// # Errors
/// A source that cannot be read, a folder that cannot be written, more rejects than
/// `max_rejects`.
pub async fn snapshot(config: &Config, opts: &SnapshotOptions) -> Result<SnapshotReport> {
    let started = Instant::now();
    let passes = open_passes(config, &opts.tables).await?;
    let fp = crate::load::state::fingerprint(
        "snapshot",
        crate::sink::Mode::Create,
        &passes.iter().map(|p| (&p.0, &p.2)).collect::<Vec<_>>(),
        "",
    );
    let out = opts.out.clone();
    let state = out.join(STATE_DIR);
    let io = |what: String| move |e: std::io::Error| Error::Io { what, source: e };
    std::fs::create_dir_all(&state).map_err(io(format!("create {}", state.display())))?;
    let run_path = state.join("run.json");
    let previous: Option<RunRecord> = std::fs::read(&run_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let record = match previous {
        Some(r) if r.fingerprint == fp && !opts.fresh => r,
        _ => {
            // Another mapping, other sources, or --fresh: what this run writes starts empty.
            for (spec, _, _) in &passes {
                clear_table(&out, &state, spec)?;
            }
            let r = RunRecord {
                fingerprint: fp,
                started_at: now_rfc3339(),
            };
            write_atomic(&run_path, &json(&r)?)?;
            r
        }
    };
    let cpu = config.tuning.cpu_threads.max(1);
    let pool = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(cpu)
            .thread_name(|i| format!("ddb2pg-snap-{i}"))
            .build()
            .map_err(|e| Error::Internal(format!("start the decode threads: {e}")))?,
    );
    let mut report = SnapshotReport {
        out: out.display().to_string(),
        rejects_file: opts.rejects_path.display().to_string(),
        ..SnapshotReport::default()
    };
    let rejected_total = Arc::new(AtomicU64::new(0));
    let mut all_done = true;
    let mut reject_files = Vec::new();
    for (spec, plan, source) in passes {
        let pass = Arc::new(Pass::new(
            &out,
            &state,
            spec,
            plan,
            source,
            config,
            opts.max_rejects,
            rejected_total.clone(),
        )?);
        let t0 = Instant::now();
        let (kept, wrote) = {
            let pass = pass.clone();
            let pool = pool.clone();
            tokio::task::spawn_blocking(move || pass.run(&pool))
                .await
                .map_err(|e| Error::Internal(format!("a snapshot pass failed: {e}")))??
        };
        all_done &= wrote == 0;
        report.splits_kept += kept;
        let secs = t0.elapsed().as_secs_f64();
        let rows_in_pass = pass.finish(&record, &mut report)?;
        for r in report.tables.iter_mut().rev().take(pass.tables.len()) {
            r.rows_per_second = if secs > 0.0 && wrote > 0 {
                rows_in_pass as f64 / secs
            } else {
                0.0
            };
        }
        reject_files.extend(pass.reject_files());
    }
    write_rejects(&opts.rejects_path, &reject_files)?;
    write_snapshot_manifest(&out, &report)?;
    report.unchanged = all_done && report.splits_kept > 0;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// One pass: a source read once, its lead table and the tables its items also feed.
struct Pass {
    out: PathBuf,
    marks: PathBuf,
    lead: String,
    plan: Arc<TablePlan>,
    source: SourcePlan,
    /// The lead table, then its children and riders, in the plan's order.
    tables: Vec<TableSpec>,
    /// Per table, the Parquet schema (the mapping's Arrow schema, numeric(p,s) as
    /// Decimal128, each field's PostgreSQL type in its metadata).
    schemas: Vec<SchemaRef>,
    readers: usize,
    page_bytes: usize,
    page_lines: usize,
    in_flight: usize,
    max_rejects: Option<u64>,
    rejected: Arc<AtomicU64>,
    failure: Mutex<Option<Error>>,
    cancel: AtomicBool,
    bytes_read: Arc<AtomicU64>,
}

impl Pass {
    #[allow(clippy::too_many_arguments)]
    fn new(
        out: &Path,
        state: &Path,
        spec: TableSpec,
        plan: Arc<TablePlan>,
        source: SourcePlan,
        config: &Config,
        max_rejects: Option<u64>,
        rejected: Arc<AtomicU64>,
    ) -> Result<Pass> {
        let mut tables = vec![spec.clone()];
        tables.extend(spec.children.iter().map(|c| {
            let mut t = c.table.clone();
            t.children.clear();
            t
        }));
        let schemas = tables.iter().map(parquet_schema).collect();
        let marks = state.join(&spec.name);
        for t in &tables {
            let dir = out.join(&t.name);
            std::fs::create_dir_all(&dir).map_err(|e| Error::Io {
                what: format!("create {}", dir.display()),
                source: e,
            })?;
        }
        std::fs::create_dir_all(&marks).map_err(|e| Error::Io {
            what: format!("create {}", marks.display()),
            source: e,
        })?;
        let tuning = &config.tuning;
        Ok(Pass {
            out: out.to_path_buf(),
            marks,
            lead: spec.name.clone(),
            plan,
            readers: source.readers(tuning),
            source,
            tables,
            schemas,
            page_bytes: tuning.page_bytes,
            page_lines: tuning.batch_rows,
            in_flight: tuning.cpu_threads.max(1) + 1,
            max_rejects,
            rejected,
            failure: Mutex::new(None),
            cancel: AtomicBool::new(false),
            bytes_read: Arc::new(AtomicU64::new(0)),
        })
    }

    fn marker_path(&self, idx: usize) -> PathBuf {
        self.marks.join(format!("{idx:05}.json"))
    }

    fn rejects_path(&self, idx: usize) -> PathBuf {
        self.marks.join(format!("{idx:05}.rejects.jsonl"))
    }

    /// A split's marker, when the split was written whole (its files there, their sizes
    /// as recorded).
    fn marker(&self, idx: usize) -> Option<SplitMarker> {
        let m: SplitMarker =
            serde_json::from_slice(&std::fs::read(self.marker_path(idx)).ok()?).ok()?;
        let whole = m.files.iter().all(|(t, f)| {
            std::fs::metadata(self.out.join(t).join(&f.path)).is_ok_and(|x| x.len() == f.bytes)
        });
        whole.then_some(m)
    }

    fn fail(&self, e: Error) {
        if let Ok(mut f) = self.failure.lock() {
            if f.is_none() {
                *f = Some(e);
            }
        }
        self.cancel.store(true, Ordering::SeqCst);
    }

    /// Writes every split not marked, `readers` at once; returns the splits kept and
    /// written.
    fn run(&self, pool: &Arc<rayon::ThreadPool>) -> Result<(usize, usize)> {
        let todo: Vec<usize> = (0..self.source.splits())
            .filter(|&i| self.marker(i).is_none())
            .collect();
        let kept = self.source.splits() - todo.len();
        if kept > 0 {
            tracing::info!(table = %self.lead, kept, left = todo.len(), "Snapshot resumed: splits already written are kept.");
        }
        let next = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..self.readers.min(todo.len()) {
                s.spawn(|| loop {
                    if self.cancel.load(Ordering::SeqCst) {
                        return;
                    }
                    let Some(&idx) = todo.get(next.fetch_add(1, Ordering::SeqCst)) else {
                        return;
                    };
                    if let Err(e) = self.write_split(idx, pool) {
                        self.fail(e);
                    }
                });
            }
        });
        match self.failure.lock().ok().and_then(|mut f| f.take()) {
            Some(e) => Err(e),
            None => Ok((kept, todo.len())),
        }
    }

    /// Reads split `idx`, decodes its pages on the pool (in order, a few at once) and
    /// writes each table's rows to its file; then the rename and the marker.
    fn write_split(&self, idx: usize, pool: &rayon::ThreadPool) -> Result<()> {
        let split = self.source.split_name(idx);
        let mut writers = Vec::with_capacity(self.tables.len());
        for (t, schema) in self.tables.iter().zip(&self.schemas) {
            let tmp = self
                .out
                .join(&t.name)
                .join(format!("part-{idx:05}.parquet.tmp"));
            let file = File::create(&tmp).map_err(|e| Error::Io {
                what: format!("create {}", tmp.display()),
                source: e,
            })?;
            let props = WriterProperties::builder()
                .set_compression(Compression::ZSTD(ZstdLevel::default()))
                .set_max_row_group_size(ROW_GROUP_ROWS)
                .set_created_by(format!("ddb2pg {}", env!("CARGO_PKG_VERSION")))
                .build();
            let w = ArrowWriter::try_new(file, schema.clone(), Some(props))
                .map_err(|e| Error::Internal(format!("start {}: {e}", tmp.display())))?;
            writers.push((tmp, w, 0u64));
        }
        let mut rejects: Vec<u8> = Vec::new();
        let mut rejected = vec![0u64; self.tables.len()];
        let mut window: VecDeque<
            crossbeam_channel::Receiver<std::result::Result<DecodedPage, String>>,
        > = VecDeque::new();
        let mut failed: Option<Error> = None;
        let take = |rx: crossbeam_channel::Receiver<std::result::Result<DecodedPage, String>>,
                    writers: &mut Vec<(PathBuf, ArrowWriter<File>, u64)>,
                    rejects: &mut Vec<u8>,
                    rejected: &mut Vec<u64>|
         -> Result<()> {
            let decoded = rx
                .recv()
                .map_err(|_| Error::Internal("a decode job ended without its page".into()))?
                .map_err(|reason| Error::DataFile {
                    key: split.clone(),
                    reason,
                })?;
            self.write_page(decoded, &split, writers, rejects, rejected)
        };
        let read = self.source.read_split(
            idx,
            self.page_bytes,
            self.page_lines,
            &self.bytes_read,
            &self.cancel,
            None,
            |page: Page| {
                if window.len() >= self.in_flight {
                    if let Some(rx) = window.pop_front() {
                        if let Err(e) = take(rx, &mut writers, &mut rejects, &mut rejected) {
                            failed = Some(e);
                            return false;
                        }
                    }
                }
                let (tx, rx) = crossbeam_channel::bounded(1);
                let plan = self.plan.clone();
                pool.spawn(move || {
                    let _ = tx.send(decode_page(&plan, &page));
                });
                window.push_back(rx);
                true
            },
        );
        if let Some(e) = failed {
            return Err(e);
        }
        read?;
        while let Some(rx) = window.pop_front() {
            take(rx, &mut writers, &mut rejects, &mut rejected)?;
        }
        if self.cancel.load(Ordering::SeqCst) {
            return Ok(());
        }
        let rejects_file = self.rejects_path(idx);
        write_atomic(&rejects_file, &rejects)?;
        let mut files = Vec::with_capacity(writers.len());
        for ((tmp, w, rows), t) in writers.into_iter().zip(&self.tables) {
            let file = w
                .into_inner()
                .map_err(|e| Error::Internal(format!("finish {}: {e}", tmp.display())))?;
            file.sync_all().map_err(|e| Error::Io {
                what: format!("write {}", tmp.display()),
                source: e,
            })?;
            drop(file);
            let name = format!("part-{idx:05}.parquet");
            let done = self.out.join(&t.name).join(&name);
            let sha256 = sha256_file(&tmp).map_err(|e| Error::Io {
                what: format!("read {}", tmp.display()),
                source: e,
            })?;
            let bytes = std::fs::metadata(&tmp).map(|m| m.len()).unwrap_or(0);
            std::fs::rename(&tmp, &done).map_err(|e| Error::Io {
                what: format!("rename {}", tmp.display()),
                source: e,
            })?;
            files.push((
                t.name.clone(),
                ManifestFile {
                    path: name,
                    split: split.clone(),
                    rows,
                    bytes,
                    sha256,
                },
            ));
        }
        let marker = SplitMarker {
            split,
            files,
            rejected: self
                .tables
                .iter()
                .zip(rejected)
                .map(|(t, n)| (t.name.clone(), n))
                .collect(),
        };
        write_atomic(&self.marker_path(idx), &json(&marker)?)
    }

    /// One decoded page into the split's files; its rejects into the split's lines.
    fn write_page(
        &self,
        decoded: DecodedPage,
        split: &str,
        writers: &mut [(PathBuf, ArrowWriter<File>, u64)],
        rejects: &mut Vec<u8>,
        rejected: &mut [u64],
    ) -> Result<()> {
        for r in &decoded.rejects {
            let table: Option<&str> = match (&r.table, r.unrouted) {
                (_, true) => None,
                (Some(t), false) => Some(t),
                (None, false) => Some(&self.lead),
            };
            if let Some(i) = table.and_then(|t| self.tables.iter().position(|x| x.name == t)) {
                rejected[i] += 1;
            }
            rejects.extend_from_slice(&reject_line(table, split, r));
        }
        if !decoded.rejects.is_empty() {
            let n = decoded.rejects.len() as u64;
            let total = self.rejected.fetch_add(n, Ordering::SeqCst) + n;
            if let Some(limit) = self.max_rejects {
                if total > limit {
                    return Err(Error::TooManyRejects {
                        table: self.lead.clone(),
                        count: total,
                        limit,
                    });
                }
            }
        }
        let batches = std::iter::once(&decoded.batch).chain(decoded.children.iter());
        for ((batch, (tmp, w, rows)), schema) in batches.zip(writers.iter_mut()).zip(&self.schemas)
        {
            if batch.num_rows() == 0 {
                continue;
            }
            let b = to_parquet(batch, schema).map_err(|reason| Error::DataFile {
                key: split.to_string(),
                reason,
            })?;
            w.write(&b)
                .map_err(|e| Error::Internal(format!("write {}: {e}", tmp.display())))?;
            *rows += batch.num_rows() as u64;
        }
        Ok(())
    }

    /// The pass's table manifests, from its markers; the report's rows. Returns the
    /// rows written across the pass's tables.
    fn finish(&self, record: &RunRecord, report: &mut SnapshotReport) -> Result<u64> {
        let markers: Vec<SplitMarker> = (0..self.source.splits())
            .map(|i| {
                self.marker(i).ok_or_else(|| {
                    Error::Internal(format!(
                        "split {} of {} has no marker after it was written",
                        i, self.lead
                    ))
                })
            })
            .collect::<Result<_>>()?;
        let baseline = match &self.source {
            SourcePlan::Export(e) => ManifestBaseline {
                at: e.summary.export_time.clone(),
                table_arn: e.summary.table_arn.clone(),
                table_id: e.summary.table_id.clone(),
            },
            SourcePlan::Scan(s) => ManifestBaseline {
                at: Some(record.started_at.clone()),
                table_arn: s.table_arn.clone(),
                table_id: s.table_id.clone(),
            },
            SourcePlan::Parquet(p) => p.manifest.baseline.clone(),
        };
        let mut pass_rows = 0;
        for t in &self.tables {
            let files: Vec<ManifestFile> = markers
                .iter()
                .flat_map(|m| {
                    m.files
                        .iter()
                        .filter(|f| f.0 == t.name)
                        .map(|f| f.1.clone())
                })
                .collect();
            let rejected: u64 = markers
                .iter()
                .flat_map(|m| m.rejected.iter().filter(|r| r.0 == t.name).map(|r| r.1))
                .sum();
            let rows = files.iter().map(|f| f.rows).sum();
            pass_rows += rows;
            let m = TableManifest {
                format: FORMAT,
                table: t.name.clone(),
                columns: t
                    .columns
                    .iter()
                    .map(|c| ManifestColumn {
                        name: c.name.clone(),
                        ty: c.ty.to_string(),
                    })
                    .collect(),
                primary_key: t.primary_key.clone(),
                source: self.source.location(),
                written_at: now_rfc3339(),
                baseline: baseline.clone(),
                rows,
                rejected,
                files,
            };
            write_atomic(&self.out.join(&t.name).join(MANIFEST), &json(&m)?)?;
            report.tables.push(SnapshotTableReport {
                table: t.name.clone(),
                source: self.source.location(),
                rows,
                rejected,
                files: m.files.len(),
                bytes: m.files.iter().map(|f| f.bytes).sum(),
                rows_per_second: 0.0,
            });
        }
        Ok(pass_rows)
    }

    /// The split's rejects files, in split order.
    fn reject_files(&self) -> Vec<PathBuf> {
        (0..self.source.splits())
            .map(|i| self.rejects_path(i))
            .collect()
    }
}

/// The Parquet schema of a table: its Arrow schema as decode builds it, `numeric(p,s)`
/// of up to 38 digits as Decimal128(p,s) (readers sum it as a number), every field with
/// its PostgreSQL type in its metadata.
fn parquet_schema(t: &TableSpec) -> SchemaRef {
    let fields: Vec<Field> = t
        .columns
        .iter()
        .map(|c| {
            let ty = match c.ty {
                ColumnType::Numeric(Some((p, s))) if p <= 38 => {
                    DataType::Decimal128(p as u8, s as i8)
                }
                other => other.arrow_type(),
            };
            let meta = [(PG_TYPE_KEY.to_string(), c.ty.to_string())]
                .into_iter()
                .collect();
            Field::new(&c.name, ty, true).with_metadata(meta)
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// A decoded batch as its Parquet schema holds it: decimal text to Decimal128.
fn to_parquet(batch: &RecordBatch, schema: &SchemaRef) -> std::result::Result<RecordBatch, String> {
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
    for (a, f) in batch.columns().iter().zip(schema.fields()) {
        match f.data_type() {
            DataType::Decimal128(p, s) => {
                let text = a
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .ok_or_else(|| format!("column `{}`: not decimal text", f.name()))?;
                let mut values = Vec::with_capacity(text.len());
                for v in text.iter() {
                    values.push(match v {
                        None => None,
                        Some(t) => {
                            Some(decimal_value(t, u32::from(*s as u8)).ok_or_else(|| {
                                format!(
                                    "column `{}`: `{t}` is not a decimal of scale {s}",
                                    f.name()
                                )
                            })?)
                        }
                    });
                }
                let d = Decimal128Array::from(values)
                    .with_precision_and_scale(*p, *s)
                    .map_err(|e| e.to_string())?;
                columns.push(Arc::new(d));
            }
            _ => columns.push(a.clone()),
        }
    }
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| e.to_string())
}

/// Takes away what an earlier run of another snapshot left for this pass's tables:
/// their Parquet files, manifests and markers (nothing else in their folders).
fn clear_table(out: &Path, state: &Path, spec: &TableSpec) -> Result<()> {
    let _ = std::fs::remove_dir_all(state.join(&spec.name));
    for t in spec.with_children() {
        let dir = out.join(&t.name);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let ours = name == MANIFEST
                || (name.starts_with("part-")
                    && (name.ends_with(".parquet") || name.ends_with(".parquet.tmp")));
            if ours {
                std::fs::remove_file(e.path()).map_err(|err| Error::Io {
                    what: format!("remove {}", e.path().display()),
                    source: err,
                })?;
            }
        }
    }
    Ok(())
}

/// The snapshot's manifest: its tables (those of earlier snapshots into the folder that
/// this one did not write kept).
fn write_snapshot_manifest(out: &Path, report: &SnapshotReport) -> Result<()> {
    let path = out.join(SNAPSHOT_MANIFEST);
    let mut m: SnapshotManifest = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    m.format = FORMAT;
    m.written_at = now_rfc3339();
    for t in &report.tables {
        m.tables.retain(|x| x.table != t.table);
        m.tables.push(SnapshotTable {
            table: t.table.clone(),
            folder: t.table.clone(),
            rows: t.rows,
            files: t.files,
        });
    }
    write_atomic(&path, &json(&m)?)
}

/// The run's rejects file: the splits' rejects in order.
fn write_rejects(path: &Path, parts: &[PathBuf]) -> Result<()> {
    let mut all = Vec::new();
    for p in parts {
        if let Ok(b) = std::fs::read(p) {
            all.extend_from_slice(&b);
        }
    }
    if all.is_empty() && !path.exists() {
        return Ok(());
    }
    std::fs::write(path, &all).map_err(|e| Error::Rejects {
        path: path.to_path_buf(),
        source: e,
    })
}

fn json<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    let mut b = serde_json::to_vec_pretty(v).map_err(|e| Error::Internal(e.to_string()))?;
    b.push(b'\n');
    Ok(b)
}

/// Writes a file whole or not at all: a temporary name, flushed, then renamed.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp-write");
    let io = |e: std::io::Error| Error::Io {
        what: format!("write {}", path.display()),
        source: e,
    };
    let mut f = File::create(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Now, RFC 3339 in UTC with milliseconds.
fn now_rfc3339() -> String {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
    crate::scalar::time::rfc3339_millis(micros)
}
