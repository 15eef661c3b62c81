//! DynamoDB Export-to-S3 layout in a local folder: manifests → the list of data files,
//! then each data file streamed, gunzipped and cut into [`Page`]s of whole lines.
//!
//! Input: the folder holding `manifest-summary.json` (a copy of the export folder, or of
//! the whole bucket). Output: an [`ExportPlan`] and, per data file, pages sent down a
//! bounded channel. Each file's MD5 (of its compressed bytes) and item count are checked
//! against `manifest-files.json`; a mismatch is an error naming the file. The same export
//! in S3 opens through [`open_s3`] (the objects found through [`super::s3`]).
//!
//! (About 750 lines: the manifest types, their checks and the key resolution are shared
//! by the folder and the S3 layouts and by the file reader, one format's whole job.)

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use base64::Engine as _;
use md5::{Digest, Md5};
use serde::Deserialize;

use super::page::{FileStats, Origin, Page};
use super::s3::{self, S3Store};
use crate::error::{Error, Result};

/// `manifest-summary.json`, the fields we use.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestSummary {
    #[serde(default)]
    pub export_arn: Option<String>,
    #[serde(default)]
    pub item_count: Option<u64>,
    #[serde(default)]
    pub output_format: Option<String>,
    #[serde(default)]
    pub export_type: Option<String>,
    #[serde(default)]
    pub manifest_files_s3_key: Option<String>,
    #[serde(default)]
    pub s3_prefix: Option<String>,
    /// A full export: the moment its data is as of.
    #[serde(default)]
    pub export_time: Option<String>,
    #[serde(default)]
    pub table_arn: Option<String>,
    #[serde(default)]
    pub table_id: Option<String>,
    /// An incremental export: its window, `exportFromTime` inclusive, `exportToTime`
    /// exclusive.
    #[serde(default)]
    pub export_from_time: Option<String>,
    #[serde(default)]
    pub export_to_time: Option<String>,
    /// `NEW_AND_OLD_IMAGES` or `NEW_IMAGE`.
    #[serde(default)]
    pub output_view: Option<String>,
}

/// One line of `manifest-files.json`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestFile {
    item_count: u64,
    md5_checksum: String,
    data_file_s3_key: String,
}

/// Where a data file's bytes are.
#[derive(Debug, Clone)]
pub enum DataLoc {
    Local(PathBuf),
    /// An object key in the plan's S3 bucket.
    S3(String),
}

/// One data file of an export: a split.
#[derive(Debug, Clone)]
pub struct DataFile {
    /// The key as the manifest names it.
    pub key: Arc<str>,
    pub loc: DataLoc,
    pub item_count: u64,
    /// Base64 MD5 of the compressed bytes.
    pub md5: String,
    pub size: u64,
    /// An Ion export's file (`data/*.ion.gz`): its lines are rewritten as DynamoDB JSON
    /// as they are read ([`crate::ddbjson::ion`]).
    pub ion: bool,
}

/// An export, ready to read.
#[derive(Debug, Clone)]
pub struct ExportPlan {
    pub location: String,
    pub summary: ManifestSummary,
    /// The bucket, for an export in S3.
    pub s3: Option<Arc<S3Store>>,
    pub files: Vec<DataFile>,
    /// Problems worth a warning (manifest checksum mismatches).
    pub warnings: Vec<String>,
}

impl ExportPlan {
    /// Items the manifest promises.
    #[must_use]
    pub fn item_count(&self) -> u64 {
        self.files.iter().map(|f| f.item_count).sum()
    }

    /// Compressed bytes of all data files.
    #[must_use]
    pub fn compressed_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// The raw (compressed) bytes of data file `idx`, as a blocking reader. For S3 the
    /// reader runs its requests on the runtime the plan was opened on: call it from a
    /// plain thread, never from a tokio worker.
    ///
    /// # Errors
    /// The file cannot be opened.
    pub fn open_data(&self, file: &DataFile) -> Result<Box<dyn Read + Send>> {
        match (&file.loc, &self.s3) {
            (DataLoc::Local(path), _) => {
                let f = File::open(path).map_err(|e| Error::DataFileIo {
                    key: file.key.to_string(),
                    line: 0,
                    source: e,
                })?;
                Ok(Box::new(f))
            }
            (DataLoc::S3(key), Some(store)) => Ok(Box::new(store.open(key, file.size))),
            (DataLoc::S3(key), None) => Err(Error::DataFile {
                key: file.key.to_string(),
                reason: format!("object `{key}` of an export with no S3 bucket"),
            }),
        }
    }

    /// Reads data file `idx`: see [`read_file`].
    ///
    /// # Errors
    /// As [`read_file`].
    pub fn read(
        &self,
        file: &DataFile,
        page_bytes: usize,
        page_lines: usize,
        compressed: &Arc<AtomicU64>,
        cancel: &AtomicBool,
        emit: impl FnMut(Page) -> bool,
    ) -> Result<FileStats> {
        // A local file is checked against its manifest MD5 before any line of it goes on
        // (rows of a file that is not the one exported never reach a commit); an S3 object
        // is hashed as it streams.
        let checked = match &file.loc {
            DataLoc::Local(path) => {
                check_md5(file, path)?;
                true
            }
            DataLoc::S3(_) => false,
        };
        let input = self.open_data(file)?;
        read_file(
            file, input, page_bytes, page_lines, compressed, cancel, checked, emit,
        )
    }
}

/// Reads the manifests of an export folder and finds every data file.
///
/// # Errors
/// A missing or unreadable manifest, an incremental or ION export, or a data file that
/// is not where the manifest says — each naming the export and the file.
pub fn open(dir: &Path) -> Result<ExportPlan> {
    open_as(dir, Kind::Full)
}

/// Which exports an opening takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A full export (`load`).
    Full,
    /// An incremental export (`sync`).
    Incremental,
}

/// Reads the manifests of an export folder of `kind` (see [`open`]).
///
/// # Errors
/// As [`open`]; an export of the other kind is refused.
pub fn open_as(dir: &Path, kind: Kind) -> Result<ExportPlan> {
    let location = dir.display().to_string();
    let fail = |reason: String| Error::Export {
        location: location.clone(),
        reason,
    };
    let summary_path = dir.join("manifest-summary.json");
    if !dir.is_dir() {
        return Err(fail("no such folder".into()));
    }
    let summary_bytes = std::fs::read(&summary_path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            fail(NOT_AN_EXPORT.into())
        } else {
            Error::ExportIo {
                location: location.clone(),
                file: "manifest-summary.json".into(),
                source: e,
            }
        }
    })?;
    let mut warnings = Vec::new();
    check_companion(dir, "manifest-summary", &summary_bytes, &mut warnings);
    let summary = parse_summary(&summary_bytes, kind).map_err(fail)?;
    let files_path = match summary.manifest_files_s3_key.as_deref() {
        Some(k) => resolve_key(dir, k).unwrap_or_else(|| dir.join("manifest-files.json")),
        None => dir.join("manifest-files.json"),
    };
    let files_bytes = std::fs::read(&files_path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            fail("manifest-files.json is missing".into())
        } else {
            Error::ExportIo {
                location: location.clone(),
                file: files_path.display().to_string(),
                source: e,
            }
        }
    })?;
    if let Some(parent) = files_path.parent() {
        check_companion(parent, "manifest-files", &files_bytes, &mut warnings);
    }
    let mut files = Vec::new();
    for (line, mf) in parse_files(&files_bytes).map_err(fail)? {
        let path = resolve_key(dir, &mf.data_file_s3_key).ok_or_else(|| {
            fail(format!(
                "data file `{}` (manifest-files.json line {line}) is not in the folder: looked for it under {} and its parent folders",
                mf.data_file_s3_key,
                dir.display()
            ))
        })?;
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        files.push(DataFile {
            key: mf.data_file_s3_key.into(),
            loc: DataLoc::Local(path),
            item_count: mf.item_count,
            md5: mf.md5_checksum,
            size,
            ion: false,
        });
    }
    output_format(&summary, &mut files).map_err(fail)?;
    check_total(&summary, &files, &mut warnings);
    Ok(ExportPlan {
        location,
        summary,
        s3: None,
        files,
        warnings,
    })
}

const NOT_AN_EXPORT: &str =
    "manifest-summary.json is missing: this is not the folder of a DynamoDB export";

/// Reads the manifests of an export in S3 (`s3://bucket/prefix`, the prefix holding
/// `manifest-summary.json`) and finds every data file, as [`open`] does for a folder.
///
/// # Errors
/// A missing bucket or manifest, access denied, an incremental or ION export, or a data
/// file that is not where the manifest says, each naming the object.
pub async fn open_s3(url: &str) -> Result<ExportPlan> {
    open_s3_as(url, Kind::Full).await
}

/// Reads the manifests of an export in S3 of `kind` (see [`open_s3`]).
///
/// # Errors
/// As [`open_s3`]; an export of the other kind is refused.
pub async fn open_s3_as(url: &str, kind: Kind) -> Result<ExportPlan> {
    let fail = |reason: String| Error::Export {
        location: url.to_string(),
        reason,
    };
    let (bucket, prefix) =
        s3::parse_url(url).ok_or_else(|| fail("not an s3://bucket/prefix address".into()))?;
    let store = Arc::new(S3Store::new(&bucket).await);
    let listed = store.list(&under(&prefix, "")).await?;
    let export = S3Export {
        store,
        listed,
        bucket,
        prefix,
    };
    let summary_key = export.under("manifest-summary.json");
    let summary_bytes = export
        .store
        .read_small(&summary_key)
        .await?
        .ok_or_else(|| fail(NOT_AN_EXPORT.into()))?;
    let mut warnings = Vec::new();
    warnings.extend(
        export
            .companion_warning(&summary_key, &summary_bytes)
            .await?,
    );
    let summary = parse_summary(&summary_bytes, kind).map_err(fail)?;
    let files_key = match summary.manifest_files_s3_key.as_deref() {
        Some(k) => {
            export
                .find_first(&key_candidates(&export.prefix, k))
                .await?
        }
        None => None,
    }
    .map_or_else(|| export.under("manifest-files.json"), |(found, _)| found);
    let files_bytes = export
        .store
        .read_small(&files_key)
        .await?
        .ok_or_else(|| fail("manifest-files.json is missing".into()))?;
    warnings.extend(export.companion_warning(&files_key, &files_bytes).await?);
    let mut files = Vec::new();
    for (line, mf) in parse_files(&files_bytes).map_err(fail)? {
        files.push(export.data_file(line, mf).await.map_err(|e| match e {
            Located::Missing(reason) => fail(reason),
            Located::Refused(e) => e,
        })?);
    }
    output_format(&summary, &mut files).map_err(fail)?;
    check_total(&summary, &files, &mut warnings);
    Ok(ExportPlan {
        location: url.to_string(),
        summary,
        s3: Some(export.store),
        files,
        warnings,
    })
}

/// `name` under `prefix` (an empty prefix is the bucket's root).
fn under(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}/{name}")
    }
}

/// An export in S3 being opened: its bucket, its prefix, and what is listed under it.
struct S3Export {
    store: Arc<S3Store>,
    listed: HashMap<String, s3::Listed>,
    bucket: String,
    prefix: String,
}

/// Why a data file of the manifest was not taken.
enum Located {
    /// Not in the bucket where the manifest says (the export's error, with this reason).
    Missing(String),
    /// There, but not the file exported, or S3 failed.
    Refused(Error),
}

impl From<Error> for Located {
    fn from(e: Error) -> Located {
        Located::Refused(e)
    }
}

impl S3Export {
    fn under(&self, name: &str) -> String {
        under(&self.prefix, name)
    }

    /// The object at `key`, if it exists: from the listing when the key is under the
    /// export's prefix, else asked for.
    async fn find(&self, key: String) -> Result<Option<(String, s3::Listed)>> {
        if let Some(obj) = self.listed.get(&key) {
            return Ok(Some((key, obj.clone())));
        }
        if !prefix_of(&key, &self.under("")) {
            if let Some(obj) = self.store.size_of(&key).await? {
                return Ok(Some((key, obj)));
            }
        }
        Ok(None)
    }

    /// The first of `keys` that exists.
    async fn find_first(&self, keys: &[String]) -> Result<Option<(String, s3::Listed)>> {
        for k in keys {
            if let Some(hit) = self.find(k.clone()).await? {
                return Ok(Some(hit));
            }
        }
        Ok(None)
    }

    /// The warning when the manifest at `key` (`….json`) has a `.md5` or `.checksum`
    /// companion it does not hash to.
    async fn companion_warning(&self, key: &str, bytes: &[u8]) -> Result<Option<String>> {
        let Some(base) = key.strip_suffix(".json") else {
            return Ok(None);
        };
        let name = base.rsplit('/').next().unwrap_or(base);
        for ext in ["md5", "checksum"] {
            // A companion that cannot be looked up (no right to it, say) is not checked: a
            // mismatch would only be a warning anyway.
            let Ok(Some((k, _))) = self.find(format!("{base}.{ext}")).await else {
                continue;
            };
            if let Ok(Some(want)) = self.store.read_small(&k).await {
                let want = String::from_utf8_lossy(&want);
                return Ok(companion_mismatch(name, ext, &want, bytes));
            }
        }
        Ok(None)
    }

    /// The object of one data file of the manifest (line `line` of manifest-files.json).
    async fn data_file(&self, line: usize, mf: ManifestFile) -> Result<DataFile, Located> {
        let found = self
            .find_first(&key_candidates(&self.prefix, &mf.data_file_s3_key))
            .await?;
        let Some((key, obj)) = found else {
            return Err(Located::Missing(format!(
                "data file `{}` (manifest-files.json line {line}) is not in bucket `{}`: looked for it under `{}` and the prefixes above it",
                mf.data_file_s3_key,
                self.bucket,
                self.under("")
            )));
        };
        // An object put in one piece has its MD5 as ETag: a different file is refused
        // before any work (a multipart ETag is checked by hashing as the object streams).
        if let Some(tag) = s3::etag_mismatch(obj.etag.as_deref(), &mf.md5_checksum) {
            return Err(Located::Refused(Error::DataFile {
                key: mf.data_file_s3_key.clone(),
                reason: format!(
                    "MD5 mismatch: manifest-files.json says {}, S3 object `{key}` has ETag (MD5) {tag}; the object is not the one exported (nothing was loaded)",
                    mf.md5_checksum
                ),
            }));
        }
        Ok(DataFile {
            key: mf.data_file_s3_key.into(),
            loc: DataLoc::S3(key),
            item_count: mf.item_count,
            md5: mf.md5_checksum,
            size: obj.size,
            ion: false,
        })
    }
}

fn prefix_of(key: &str, prefix: &str) -> bool {
    prefix.is_empty() || key.starts_with(prefix)
}

/// Where a manifest key may be in a bucket whose export sits at `prefix`, in the order
/// [`resolve_key`] tries for a folder: the key under each prefix from `prefix` up to the
/// bucket root, then the tail of the key (what follows `AWSDynamoDB/<export id>/`…) under
/// `prefix`.
fn key_candidates(prefix: &str, key: &str) -> Vec<String> {
    let key = key.trim_start_matches('/');
    let mut out = Vec::new();
    let mut base: Option<&str> = Some(prefix);
    while let Some(b) = base {
        out.push(if b.is_empty() {
            key.to_string()
        } else {
            format!("{b}/{key}")
        });
        base = if b.is_empty() {
            None
        } else {
            Some(b.rsplit_once('/').map_or("", |(head, _)| head))
        };
    }
    let parts: Vec<&str> = key.split('/').collect();
    for start in 1..parts.len() {
        let tail = parts[start..].join("/");
        out.push(if prefix.is_empty() {
            tail
        } else {
            format!("{prefix}/{tail}")
        });
    }
    out.dedup();
    out
}

/// `manifest-summary.json`, with the export kinds we cannot read refused.
pub(crate) fn parse_summary(bytes: &[u8], kind: Kind) -> Result<ManifestSummary, String> {
    let summary: ManifestSummary = serde_json::from_slice(bytes)
        .map_err(|e| format!("manifest-summary.json is not valid JSON: {e}"))?;
    match (summary.export_type.as_deref(), kind) {
        (None | Some("FULL_EXPORT"), Kind::Full)
        | (Some("INCREMENTAL_EXPORT"), Kind::Incremental) => {}
        (Some("INCREMENTAL_EXPORT"), Kind::Full) => {
            return Err(
                "this is an incremental export: it holds changes, not a table; declare it as the table's `changes = { exports = … }` and apply it with `ddb2pg sync`".into(),
            )
        }
        (None | Some("FULL_EXPORT"), Kind::Incremental) => {
            return Err("this is a full export, not an incremental one".into())
        }
        (Some(other), _) => return Err(format!("unknown exportType \"{other}\"")),
    }
    if kind == Kind::Incremental {
        for (field, v) in [
            ("exportFromTime", &summary.export_from_time),
            ("exportToTime", &summary.export_to_time),
        ] {
            if v.is_none() {
                return Err(format!(
                    "the incremental export's manifest-summary.json has no {field}"
                ));
            }
        }
    }
    match summary.output_format.as_deref() {
        None | Some("DYNAMODB_JSON" | "ION") => {}
        Some(other) => {
            return Err(format!(
                "unknown outputFormat \"{other}\" (DYNAMODB_JSON and ION exports can be read)"
            ))
        }
    }
    Ok(summary)
}

/// Marks an Ion export's files, and refuses data files whose name says the other format
/// (`.json.gz` in an Ion export, `.ion.gz` in a DynamoDB JSON one).
fn output_format(summary: &ManifestSummary, files: &mut [DataFile]) -> Result<(), String> {
    let ion = summary.output_format.as_deref() == Some("ION");
    for f in files {
        let (theirs, said) = if ion {
            (".json.gz", "ION")
        } else {
            (".ion.gz", "DYNAMODB_JSON")
        };
        if f.key.ends_with(theirs) {
            return Err(format!(
                "manifest-summary.json says outputFormat {said}, but data file `{}` is named as the other format ({theirs}): the manifest and the data do not belong together",
                f.key
            ));
        }
        f.ion = ion;
    }
    Ok(())
}

/// `manifest-files.json`: (line number, entry) for each non-empty line.
fn parse_files(bytes: &[u8]) -> Result<Vec<(usize, ManifestFile)>, String> {
    let text =
        std::str::from_utf8(bytes).map_err(|_| "manifest-files.json is not UTF-8".to_string())?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mf: ManifestFile = serde_json::from_str(line)
            .map_err(|e| format!("manifest-files.json line {}: {e}", i + 1))?;
        out.push((i + 1, mf));
    }
    Ok(out)
}

fn check_total(summary: &ManifestSummary, files: &[DataFile], warnings: &mut Vec<String>) {
    if let Some(total) = summary.item_count {
        let sum: u64 = files.iter().map(|f| f.item_count).sum();
        if sum != total {
            warnings.push(format!(
                "manifest-summary.json says {total} items but manifest-files.json lists {sum}"
            ));
        }
    }
}

/// Finds a manifest key (a bucket key, export prefix included) in a local copy: of the
/// whole bucket (an ancestor holds the key) or of just the export folder.
fn resolve_key(dir: &Path, key: &str) -> Option<PathBuf> {
    let key = key.trim_start_matches('/');
    // A copy of the bucket (or of any part above the export folder).
    let mut base = Some(dir);
    while let Some(b) = base {
        let candidate = b.join(key);
        if candidate.is_file() {
            return Some(candidate);
        }
        base = b.parent();
    }
    // A copy of just the export folder: keep what follows `AWSDynamoDB/<export id>/`.
    let parts: Vec<&str> = key.split('/').collect();
    for start in 1..parts.len() {
        let candidate = dir.join(parts[start..].join("/"));
        if candidate.is_file() {
            return Some(candidate);
        }
    }
    None
}

/// Checks `NAME.md5` or `NAME.checksum` beside a manifest; a mismatch is only a warning.
fn check_companion(dir: &Path, name: &str, bytes: &[u8], warnings: &mut Vec<String>) {
    for ext in ["md5", "checksum"] {
        let p = dir.join(format!("{name}.{ext}"));
        if let Ok(want) = std::fs::read_to_string(&p) {
            warnings.extend(companion_mismatch(name, ext, &want, bytes));
            return;
        }
    }
}

/// The warning when a manifest does not hash to its companion's digest (base64 or hex).
fn companion_mismatch(name: &str, ext: &str, want: &str, bytes: &[u8]) -> Option<String> {
    let want = want.trim();
    let digest = Md5::digest(bytes);
    let b64 = base64::engine::general_purpose::STANDARD.encode(digest);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    (want != b64 && !want.eq_ignore_ascii_case(&hex)).then(|| {
        format!(
            "{name}.json does not match {name}.{ext} (file says {want}, content hashes to {b64}); going on, as edited copies of real exports exist"
        )
    })
}

/// Hashes a local data file and compares it with the manifest's MD5.
fn check_md5(file: &DataFile, path: &Path) -> Result<()> {
    let io_err = |e| Error::DataFileIo {
        key: file.key.to_string(),
        line: 0,
        source: e,
    };
    let mut hashing = Hashing {
        inner: File::open(path).map_err(io_err)?,
        md5: Md5::new(),
        hash: true,
        bytes: Arc::new(AtomicU64::new(0)),
    };
    io::copy(&mut hashing, &mut io::sink()).map_err(io_err)?;
    md5_matches(file, hashing.md5, " (nothing of it was loaded)")
}

/// Compares a data file's hash with its manifest MD5; `after` ends the message.
fn md5_matches(file: &DataFile, md5: Md5, after: &str) -> Result<()> {
    let digest = base64::engine::general_purpose::STANDARD.encode(md5.finalize());
    if digest != file.md5 {
        return Err(Error::DataFile {
            key: file.key.to_string(),
            reason: format!(
                "MD5 mismatch: manifest-files.json says {}, the file hashes to {digest}; the file is corrupt or not the one exported{after}",
                file.md5
            ),
        });
    }
    Ok(())
}

/// A reader that hashes (unless the file was checked already) and counts what passes
/// through it.
struct Hashing<R> {
    inner: R,
    md5: Md5,
    hash: bool,
    bytes: Arc<AtomicU64>,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.hash {
            self.md5.update(&buf[..n]);
        }
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Streams one data file: gunzip (multi-member safe) → pages of whole lines of about
/// `page_bytes` or at most `page_lines` lines, handed to `emit`. Checks MD5 (unless
/// `checked`: done before) and item count at the end. `compressed` counts compressed bytes
/// as they are read (for progress).
///
/// `emit` returns `false` when downstream has gone; reading then stops quietly.
///
/// # Errors
/// Unreadable or corrupt gzip (naming the file and line), checksum or count mismatch.
#[allow(clippy::too_many_arguments)]
pub fn read_file(
    file: &DataFile,
    input: impl Read,
    page_bytes: usize,
    page_lines: usize,
    compressed: &Arc<AtomicU64>,
    cancel: &AtomicBool,
    checked: bool,
    mut emit: impl FnMut(Page) -> bool,
) -> Result<FileStats> {
    let key = file.key.clone();
    let origin = Origin::ExportFile { key: key.clone() };
    // Buffers sized to the file: many small files cost what their bytes cost.
    let io_buf = usize::try_from(file.size)
        .unwrap_or(usize::MAX)
        .clamp(8 << 10, 256 << 10);
    let page_cap = usize::try_from(file.size.saturating_mul(16))
        .unwrap_or(usize::MAX)
        .clamp(64 << 10, page_bytes + (64 << 10));
    let mut hashing = Hashing {
        inner: BufReader::with_capacity(io_buf, input),
        md5: Md5::new(),
        hash: !checked,
        bytes: compressed.clone(),
    };
    let mut stats = FileStats::default();
    let mut next_line: u64 = 1;
    {
        let mut peek = [0u8; 1];
        let first = hashing.read(&mut peek).map_err(|e| Error::DataFileIo {
            key: key.to_string(),
            line: 0,
            source: e,
        })?;
        let chained = io::Cursor::new(peek[..first].to_vec()).chain(&mut hashing);
        let mut gz =
            flate2::bufread::MultiGzDecoder::new(BufReader::with_capacity(io_buf, chained));
        let mut buf: Vec<u8> = Vec::with_capacity(page_cap);
        let mut eof = first == 0;
        loop {
            if cancel.load(Ordering::Relaxed) {
                return Ok(stats);
            }
            // Fill to at least a page holding at least one whole line.
            while !eof && (buf.len() < page_bytes || memchr::memrchr(b'\n', &buf).is_none()) {
                if buf.capacity() - buf.len() < (32 << 10) {
                    buf.reserve(buf.capacity().max(64 << 10));
                }
                // Zeroed as far as one read goes, not to the capacity each time.
                let len = buf.len();
                let room = (buf.capacity() - len).min(256 << 10);
                buf.resize(len + room, 0);
                match gz.read(&mut buf[len..]) {
                    Ok(n) => {
                        buf.truncate(len + n);
                        stats.uncompressed += n as u64;
                        eof = n == 0;
                    }
                    Err(e) => {
                        buf.truncate(len);
                        let line = next_line + memchr::memchr_iter(b'\n', &buf).count() as u64;
                        return Err(Error::DataFileIo {
                            key: key.to_string(),
                            line,
                            source: e,
                        });
                    }
                }
            }
            if buf.is_empty() {
                break;
            }
            let mut cut = if eof {
                buf.len()
            } else {
                memchr::memrchr(b'\n', &buf).map_or(buf.len(), |p| p + 1)
            };
            if let Some(p) = memchr::memchr_iter(b'\n', &buf[..cut]).nth(page_lines.max(1) - 1) {
                cut = cut.min(p + 1);
            }
            let mut rest = Vec::with_capacity(if eof {
                buf.len() - cut
            } else {
                page_cap.max(buf.capacity())
            });
            rest.extend_from_slice(&buf[cut..]);
            buf.truncate(cut);
            let mut page_data = std::mem::replace(&mut buf, rest);
            if file.ion {
                page_data = crate::ddbjson::ion::page_to_ddb_json(&page_data);
            }
            let (nonempty, total) = count_lines(&page_data);
            stats.lines += nonempty;
            let page = Page {
                origin: origin.clone(),
                first_line: next_line,
                lines: total,
                data: page_data,
                edge: None,
                rows: None,
            };
            next_line += total;
            if !emit(page) {
                return Ok(stats);
            }
        }
    }
    // Whatever follows the gzip members still counts toward the checksum.
    let mut sink = [0u8; 8192];
    loop {
        match hashing.read(&mut sink) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                return Err(Error::DataFileIo {
                    key: key.to_string(),
                    line: next_line,
                    source: e,
                })
            }
        }
    }
    if !checked {
        md5_matches(file, hashing.md5, "")?;
    }
    if stats.lines != file.item_count {
        return Err(Error::DataFile {
            key: key.to_string(),
            reason: format!(
                "item count mismatch: manifest-files.json says {}, the file holds {}",
                file.item_count, stats.lines
            ),
        });
    }
    Ok(stats)
}

/// (non-empty lines, all lines) in a page; a final line without newline counts.
fn count_lines(data: &[u8]) -> (u64, u64) {
    let mut nonempty = 0;
    let mut total = 0;
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', data) {
        total += 1;
        if !data[start..end].iter().all(u8::is_ascii_whitespace) {
            nonempty += 1;
        }
        start = end + 1;
    }
    if start < data.len() {
        total += 1;
        if !data[start..].iter().all(u8::is_ascii_whitespace) {
            nonempty += 1;
        }
    }
    (nonempty, total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).expect("write");
        e.finish().expect("finish")
    }

    fn data_file(dir: &Path, name: &str, bytes: &[u8], items: u64) -> DataFile {
        let path = dir.join(name);
        std::fs::write(&path, bytes).expect("write");
        DataFile {
            key: name.into(),
            loc: DataLoc::Local(path),
            item_count: items,
            md5: base64::engine::general_purpose::STANDARD.encode(Md5::digest(bytes)),
            size: bytes.len() as u64,
            ion: false,
        }
    }

    type Pages = Vec<(u64, Vec<u8>)>;

    fn read_all(f: &DataFile, page: usize, lines: usize) -> Result<(Pages, FileStats)> {
        let mut pages = Vec::new();
        let DataLoc::Local(path) = &f.loc else {
            unreachable!("local test files")
        };
        let stats = read_file(
            f,
            File::open(path).expect("open"),
            page,
            lines,
            &Arc::new(AtomicU64::new(0)),
            &AtomicBool::new(false),
            false,
            |p| {
                pages.push((p.first_line, p.data));
                true
            },
        )?;
        Ok((pages, stats))
    }

    #[test]
    fn s3_key_candidates_follow_the_folder_rules() {
        let key = "AWSDynamoDB/0123-ab/data/x.json.gz";
        let c = key_candidates("exports/books", key);
        assert_eq!(
            c,
            vec![
                "exports/books/AWSDynamoDB/0123-ab/data/x.json.gz",
                "exports/AWSDynamoDB/0123-ab/data/x.json.gz",
                "AWSDynamoDB/0123-ab/data/x.json.gz",
                "exports/books/0123-ab/data/x.json.gz",
                "exports/books/data/x.json.gz",
                "exports/books/x.json.gz",
            ]
        );
        assert_eq!(key_candidates("", "a/b")[0], "a/b");
    }

    #[test]
    fn pages_hold_whole_lines_across_gzip_members() {
        let dir = std::env::temp_dir().join(format!("ddb2pg-export-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let lines: Vec<String> = (0..1000)
            .map(|i| format!("{{\"Item\":{{\"n\":{{\"N\":\"{i}\"}}}}}}\n"))
            .collect();
        let all = lines.concat();
        let mut bytes = gz(&all.as_bytes()[..all.len() / 2]);
        bytes.extend(gz(&all.as_bytes()[all.len() / 2..]));
        let f = data_file(&dir, "multi.json.gz", &bytes, 1000);
        for (page, max_lines) in [(4096, 100_000), (1 << 20, 7)] {
            let (pages, stats) = read_all(&f, page, max_lines).expect("reads");
            assert_eq!(stats.lines, 1000);
            let joined: Vec<u8> = pages.iter().flat_map(|(_, d)| d.clone()).collect();
            assert_eq!(joined, all.as_bytes());
            let mut expect_line = 1;
            for (first, d) in &pages {
                assert_eq!(*first, expect_line);
                assert_eq!(d.last(), Some(&b'\n'));
                expect_line += count_lines(d).1;
            }
        }
        let empty = data_file(&dir, "empty.json.gz", &gz(b""), 0);
        assert_eq!(read_all(&empty, 4096, 10).expect("empty").1.lines, 0);
        let zero = data_file(&dir, "zero.json.gz", b"", 0);
        assert_eq!(read_all(&zero, 4096, 10).expect("zero bytes").1.lines, 0);

        let mut wrong = f.clone();
        wrong.item_count = 999;
        let e = read_all(&wrong, 4096, 1000).expect_err("count");
        assert!(e.to_string().contains("item count mismatch"), "{e}");
        let mut wrong = f.clone();
        wrong.md5 = "AAAAAAAAAAAAAAAAAAAAAA==".into();
        let e = read_all(&wrong, 4096, 1000).expect_err("md5");
        assert!(
            e.to_string().contains("MD5 mismatch") && e.to_string().contains("multi.json.gz"),
            "{e}"
        );
        let truncated = data_file(&dir, "cut.json.gz", &bytes[..bytes.len() - 40], 1000);
        let e = read_all(&truncated, 4096, 1000).expect_err("truncated");
        assert!(e.to_string().contains("cut.json.gz"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
