//! A snapshot's table folder (written by `ddb2pg snapshot`): its manifest, and its
//! Parquet files read as splits of rows already mapped — Parquet → Arrow, no decode.
//!
//! Input: `DIR/<table>/manifest.json` and the files it lists. Output: [`Page`]s whose
//! `rows` hold the table's columns as the pipeline carries them.

use std::fs::File;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, Decimal128Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::page::{FileStats, Origin, Page};
use crate::config::TableSpec;
use crate::error::{Error, Result};
use crate::schema::ColumnType;

/// The table manifest's file name, in the table's folder.
pub const MANIFEST: &str = "manifest.json";
/// The snapshot's own manifest, in its folder: the tables it holds.
pub const SNAPSHOT_MANIFEST: &str = "snapshot.json";
/// The layout's version: a reader refuses one it does not know.
pub const FORMAT: u32 = 1;
/// The field metadata key holding a column's PostgreSQL type.
pub const PG_TYPE_KEY: &str = "ddb2pg.type";

/// What a snapshot holds of one table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TableManifest {
    pub format: u32,
    pub table: String,
    /// The mapping's columns, in order, with their PostgreSQL types.
    pub columns: Vec<ManifestColumn>,
    pub primary_key: Vec<String>,
    /// The source the rows were read from (its location), and when (RFC 3339).
    pub source: String,
    pub written_at: String,
    /// What the rows are a snapshot of, which a later `sync` follows.
    pub baseline: ManifestBaseline,
    pub rows: u64,
    /// Items of the source rejected for this table when the snapshot was written.
    pub rejected: u64,
    pub files: Vec<ManifestFile>,
}

/// A column of a snapshot's table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ManifestColumn {
    pub name: String,
    /// As the mapping writes it: `numeric(10,2)`, `text[]`, `timestamptz`.
    #[serde(rename = "type")]
    pub ty: String,
}

/// The source's baseline: its time (an export's `exportTime`, or when the scan started)
/// and the DynamoDB table it came from.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ManifestBaseline {
    pub at: Option<String>,
    pub table_arn: Option<String>,
    pub table_id: Option<String>,
}

/// One Parquet file of a table: the split of the source it holds, and its checksum.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Relative to the table's folder.
    pub path: String,
    /// The source split it was written from (an export's data file, a scan segment).
    pub split: String,
    pub rows: u64,
    pub bytes: u64,
    /// SHA-256 of the file, lowercase hex.
    pub sha256: String,
}

/// The snapshot's manifest: its tables and their folders.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SnapshotManifest {
    pub format: u32,
    pub written_at: String,
    pub tables: Vec<SnapshotTable>,
}

/// A table of a snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotTable {
    pub table: String,
    /// Relative to the snapshot's folder.
    pub folder: String,
    pub rows: u64,
    pub files: usize,
}

/// An opened snapshot table: its manifest, checked against the mapping.
#[derive(Debug)]
pub struct ParquetPlan {
    pub location: String,
    pub dir: PathBuf,
    pub manifest: TableManifest,
    /// The table's columns as the pipeline carries them (all nullable: the file's nulls
    /// were checked when the rows were mapped).
    schema: Arc<Schema>,
}

/// Opens the table folder `dir` for `spec`: its manifest read, every column of the
/// mapping found with the same type, every file there with its size.
///
/// # Errors
/// No manifest (not a snapshot's table, or its snapshot did not finish), another
/// layout version, a column missing or of another type, a file missing or resized.
pub fn open(spec: &TableSpec, location: &str, dir: &Path) -> Result<ParquetPlan> {
    let at = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&at).map_err(|e| Error::Source {
        source_name: location.to_string(),
        reason: format!(
            "cannot read {}: {e} (a table's folder in a finished snapshot holds it: ddb2pg snapshot --out DIR writes DIR/{}/{MANIFEST} once every split is written)",
            at.display(),
            spec.name
        ),
    })?;
    let manifest: TableManifest = serde_json::from_str(&text).map_err(|e| Error::Source {
        source_name: location.to_string(),
        reason: format!("{} is not a snapshot table's manifest: {e}", at.display()),
    })?;
    if manifest.format != FORMAT {
        return Err(Error::Source {
            source_name: location.to_string(),
            reason: format!(
                "the snapshot's layout is version {}, this ddb2pg reads version {FORMAT}",
                manifest.format
            ),
        });
    }
    let mut problems = Vec::new();
    for c in &spec.columns {
        match manifest.columns.iter().find(|m| m.name == c.name) {
            None => problems.push(format!(
                "tables.{}.columns.{}: the snapshot at {location} has no such column (it has {})",
                spec.name,
                c.name,
                manifest
                    .columns
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Some(m) if ColumnType::parse(&m.ty).ok() != Some(c.ty) => problems.push(format!(
                "tables.{}.columns.{}.type: is {} but the snapshot at {location} holds {} (snapshot again with this mapping, or declare its type)",
                spec.name, c.name, c.ty, m.ty
            )),
            Some(_) => {}
        }
    }
    if !problems.is_empty() {
        return Err(Error::Config {
            path: location.to_string(),
            problems,
        });
    }
    for f in &manifest.files {
        let p = dir.join(&f.path);
        let size = std::fs::metadata(&p).map(|m| m.len());
        match size {
            Ok(n) if n == f.bytes => {}
            Ok(n) => {
                return Err(Error::DataFile {
                    key: p.display().to_string(),
                    reason: format!(
                        "{n} bytes, the snapshot's manifest says {}: the file was changed since the snapshot was written",
                        f.bytes
                    ),
                })
            }
            Err(e) => {
                return Err(Error::Source {
                    source_name: location.to_string(),
                    reason: format!("{} listed in its manifest: {e}", p.display()),
                })
            }
        }
    }
    let fields: Vec<Field> = spec
        .columns
        .iter()
        .map(|c| Field::new(&c.name, c.ty.arrow_type(), true))
        .collect();
    Ok(ParquetPlan {
        location: location.to_string(),
        dir: dir.to_path_buf(),
        manifest,
        schema: Arc::new(Schema::new(fields)),
    })
}

impl ParquetPlan {
    /// Rows in the snapshot's table.
    #[must_use]
    pub fn rows(&self) -> u64 {
        self.manifest.rows
    }

    /// Bytes of its files.
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.manifest.files.iter().map(|f| f.bytes).sum()
    }

    /// Reads file `idx` (its checksum checked first, every byte) into pages of at most
    /// `page_lines` rows handed to `emit` (`false` stops quietly); row `n` of the file is
    /// line `n` (from 1) for checkpoints and resume.
    ///
    /// # Errors
    /// The file cannot be read, its checksum or row count differs from the manifest's, or
    /// a column is not what the manifest says.
    pub fn read(
        &self,
        idx: usize,
        page_lines: usize,
        bytes_read: &Arc<AtomicU64>,
        cancel: &AtomicBool,
        mut emit: impl FnMut(Page) -> bool,
    ) -> Result<FileStats> {
        let Some(f) = self.manifest.files.get(idx) else {
            return Ok(FileStats::default());
        };
        let path = self.dir.join(&f.path);
        let key = path.display().to_string();
        let io = |e: std::io::Error| Error::DataFileIo {
            key: key.clone(),
            line: 0,
            source: e,
        };
        let sum = sha256_file(&path).map_err(io)?;
        if sum != f.sha256 {
            return Err(Error::DataFile {
                key,
                reason: format!(
                    "SHA-256 {sum}, the snapshot's manifest says {}: the file was changed since the snapshot was written (write the snapshot again)",
                    f.sha256
                ),
            });
        }
        bytes_read.fetch_add(f.bytes, Ordering::Relaxed);
        let bad = |e: parquet::errors::ParquetError| Error::DataFile {
            key: key.clone(),
            reason: format!("not a readable Parquet file: {e}"),
        };
        let file = File::open(&path).map_err(io)?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(bad)?;
        let file_schema = builder.schema().clone();
        let mut roots = Vec::with_capacity(self.schema.fields().len());
        for field in self.schema.fields() {
            match file_schema.index_of(field.name()) {
                Ok(i) => roots.push(i),
                Err(_) => {
                    return Err(Error::DataFile {
                        key,
                        reason: format!("has no column `{}` (its manifest lists it)", field.name()),
                    })
                }
            }
        }
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
        let reader = builder
            .with_projection(mask)
            .with_batch_size(page_lines.max(1))
            .build()
            .map_err(bad)?;
        let origin = Origin::ExportFile {
            key: Arc::from(f.path.as_str()),
        };
        let mut next = 1u64;
        for batch in reader {
            if cancel.load(Ordering::Relaxed) {
                return Ok(FileStats {
                    lines: next - 1,
                    uncompressed: 0,
                });
            }
            let batch = batch.map_err(|e| Error::DataFile {
                key: key.clone(),
                reason: format!("rows from {next}: {e}"),
            })?;
            let rows = self.carried(&batch).map_err(|reason| Error::DataFile {
                key: key.clone(),
                reason,
            })?;
            let n = rows.num_rows() as u64;
            if n == 0 {
                continue;
            }
            let page = Page {
                origin: origin.clone(),
                first_line: next,
                lines: n,
                data: Vec::new(),
                edge: None,
                rows: Some(rows),
            };
            next += n;
            if !emit(page) {
                return Ok(FileStats {
                    lines: next - 1,
                    uncompressed: 0,
                });
            }
        }
        if next - 1 != f.rows {
            return Err(Error::DataFile {
                key,
                reason: format!("{} rows, the snapshot's manifest says {}", next - 1, f.rows),
            });
        }
        Ok(FileStats {
            lines: f.rows,
            uncompressed: 0,
        })
    }

    /// A file's batch as the pipeline carries the table: the mapping's columns in its
    /// order, exact decimals back to their text.
    fn carried(&self, batch: &RecordBatch) -> std::result::Result<RecordBatch, String> {
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        for field in self.schema.fields() {
            let Some(a) = batch.column_by_name(field.name()) else {
                return Err(format!("no column `{}`", field.name()));
            };
            let a = match (a.data_type(), field.data_type()) {
                (DataType::Decimal128(_, s), DataType::Utf8) => {
                    let d = a
                        .as_any()
                        .downcast_ref::<Decimal128Array>()
                        .ok_or_else(|| format!("column `{}`: not a decimal", field.name()))?;
                    let scale = *s;
                    let text: StringArray = d
                        .iter()
                        .map(|v| v.map(|v| decimal_text(v, scale)))
                        .collect();
                    Arc::new(text) as ArrayRef
                }
                (have, want) if have == want => a.clone(),
                (have, want) => {
                    return Err(format!(
                        "column `{}` is {have} in the file, the mapping carries {want}",
                        field.name()
                    ))
                }
            };
            columns.push(a);
        }
        RecordBatch::try_new(self.schema.clone(), columns).map_err(|e| e.to_string())
    }
}

/// The SHA-256 of a file, lowercase hex.
///
/// # Errors
/// The file cannot be read.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = File::open(path)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// An exact decimal's text from its unscaled value: `1250`, scale 2 → `12.50`.
#[must_use]
pub fn decimal_text(v: i128, scale: i8) -> String {
    let neg = v < 0;
    let digits = v.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + 3);
    if neg {
        out.push('-');
    }
    if scale <= 0 {
        out.push_str(&digits);
        for _ in 0..(-i32::from(scale)) {
            out.push('0');
        }
        return out;
    }
    let s = scale as usize;
    if digits.len() <= s {
        out.push_str("0.");
        for _ in 0..(s - digits.len()) {
            out.push('0');
        }
        out.push_str(&digits);
    } else {
        let (int, frac) = digits.split_at(digits.len() - s);
        out.push_str(int);
        out.push('.');
        out.push_str(frac);
    }
    out
}

/// The unscaled value of an exact decimal text at `scale` (`12.5`, 2 → 1250): `None`
/// when it has more fractional digits than `scale` (other than zeros) or does not fit.
#[must_use]
pub fn decimal_value(text: &str, scale: u32) -> Option<i128> {
    let t = text.trim();
    let (neg, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (mant, exp) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], t[i + 1..].parse::<i32>().ok()?),
        None => (t, 0),
    };
    let (int, frac) = mant.split_once('.').unwrap_or((mant, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let mut digits: Vec<u8> = Vec::with_capacity(int.len() + frac.len());
    for b in int.bytes().chain(frac.bytes()) {
        if !b.is_ascii_digit() {
            return None;
        }
        digits.push(b - b'0');
    }
    // value = digits × 10^(exp − frac.len()); wanted: value × 10^scale.
    let shift = exp - i32::try_from(frac.len()).ok()? + i32::try_from(scale).ok()?;
    let mut v: i128 = 0;
    let keep = if shift >= 0 {
        digits.len()
    } else {
        let drop = usize::try_from(-shift).ok()?;
        if digits.len() < drop {
            if digits.iter().any(|d| *d != 0) {
                return None;
            }
            0
        } else {
            if digits[digits.len() - drop..].iter().any(|d| *d != 0) {
                return None;
            }
            digits.len() - drop
        }
    };
    for d in &digits[..keep] {
        v = v.checked_mul(10)?.checked_add(i128::from(*d))?;
    }
    for _ in 0..shift.max(0) {
        v = v.checked_mul(10)?;
    }
    Some(if neg { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_go_to_their_unscaled_value_and_back() {
        for (text, scale, v, back) in [
            ("12.5", 2, 1250, "12.50"),
            ("-0.07", 2, -7, "-0.07"),
            ("0", 2, 0, "0.00"),
            ("1.5E+2", 1, 1500, "150.0"),
            ("99999999.99", 2, 9_999_999_999, "99999999.99"),
            ("7", 0, 7, "7"),
            ("2.500", 1, 25, "2.5"),
        ] {
            assert_eq!(decimal_value(text, scale), Some(v), "{text}");
            assert_eq!(decimal_text(v, scale as i8), back, "{text}");
        }
        assert_eq!(decimal_value("1.234", 2), None);
        assert_eq!(decimal_value("abc", 2), None);
        assert_eq!(decimal_value("1e40", 0), None);
    }
}
