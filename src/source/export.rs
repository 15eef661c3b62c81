//! DynamoDB Export-to-S3 layout in a local folder: manifests → the list of data files,
//! then each data file streamed, gunzipped and cut into [`Page`]s of whole lines.
//!
//! Input: the folder holding `manifest-summary.json` (a copy of the export folder, or of
//! the whole bucket). Output: an [`ExportPlan`] and, per data file, pages sent down a
//! bounded channel. Each file's MD5 (of its compressed bytes) and item count are checked
//! against `manifest-files.json`; a mismatch is an error naming the file.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use base64::Engine as _;
use md5::{Digest, Md5};
use serde::Deserialize;

use super::{Origin, Page};
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
}

/// One line of `manifest-files.json`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestFile {
    item_count: u64,
    md5_checksum: String,
    data_file_s3_key: String,
}

/// One data file of an export: a split.
#[derive(Debug, Clone)]
pub struct DataFile {
    /// The key as the manifest names it.
    pub key: Arc<str>,
    pub path: PathBuf,
    pub item_count: u64,
    /// Base64 MD5 of the compressed bytes.
    pub md5: String,
    pub size: u64,
}

/// An export, ready to read.
#[derive(Debug, Clone)]
pub struct ExportPlan {
    pub location: String,
    pub dir: PathBuf,
    pub summary: ManifestSummary,
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
}

/// Reads the manifests of an export folder and finds every data file.
///
/// # Errors
/// A missing or unreadable manifest, an incremental or ION export, or a data file that
/// is not where the manifest says — each naming the export and the file.
pub fn open(dir: &Path) -> Result<ExportPlan> {
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
            fail(
                "manifest-summary.json is missing: this is not the folder of a DynamoDB export"
                    .into(),
            )
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
    let summary: ManifestSummary = serde_json::from_slice(&summary_bytes)
        .map_err(|e| fail(format!("manifest-summary.json is not valid JSON: {e}")))?;
    match summary.export_type.as_deref() {
        None | Some("FULL_EXPORT") => {}
        Some("INCREMENTAL_EXPORT") => {
            return Err(fail(
                "this is an incremental export; only full exports can be loaded for now".into(),
            ))
        }
        Some(other) => return Err(fail(format!("unknown exportType \"{other}\""))),
    }
    match summary.output_format.as_deref() {
        None | Some("DYNAMODB_JSON") => {}
        Some("ION") => return Err(fail(
            "this export is in Amazon Ion format; only DYNAMODB_JSON exports can be loaded for now"
                .into(),
        )),
        Some(other) => return Err(fail(format!("unknown outputFormat \"{other}\""))),
    }
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
    let text = std::str::from_utf8(&files_bytes)
        .map_err(|_| fail("manifest-files.json is not UTF-8".into()))?;
    let mut files = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mf: ManifestFile = serde_json::from_str(line)
            .map_err(|e| fail(format!("manifest-files.json line {}: {e}", i + 1)))?;
        let path = resolve_key(dir, &mf.data_file_s3_key).ok_or_else(|| {
            fail(format!(
                "data file `{}` (manifest-files.json line {}) is not in the folder: looked for it under {} and its parent folders",
                mf.data_file_s3_key,
                i + 1,
                dir.display()
            ))
        })?;
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        files.push(DataFile {
            key: mf.data_file_s3_key.into(),
            path,
            item_count: mf.item_count,
            md5: mf.md5_checksum,
            size,
        });
    }
    if let Some(total) = summary.item_count {
        let sum: u64 = files.iter().map(|f| f.item_count).sum();
        if sum != total {
            warnings.push(format!(
                "manifest-summary.json says {total} items but manifest-files.json lists {sum}"
            ));
        }
    }
    Ok(ExportPlan {
        location,
        dir: dir.to_path_buf(),
        summary,
        files,
        warnings,
    })
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
            let want = want.trim();
            let digest = Md5::digest(bytes);
            let b64 = base64::engine::general_purpose::STANDARD.encode(digest);
            let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            if want != b64 && !want.eq_ignore_ascii_case(&hex) {
                warnings.push(format!(
                    "{name}.json does not match {name}.{ext} (file says {want}, content hashes to {b64}); going on, as edited copies of real exports exist"
                ));
            }
            return;
        }
    }
}

/// A reader that hashes and counts what passes through it.
struct Hashing<R> {
    inner: R,
    md5: Md5,
    bytes: Arc<AtomicU64>,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.md5.update(&buf[..n]);
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// What reading one data file found.
#[derive(Debug, Clone, Copy, Default)]
pub struct FileStats {
    pub lines: u64,
    pub uncompressed: u64,
}

/// Streams one data file: gunzip (multi-member safe) → pages of whole lines of about
/// `page_bytes` or at most `page_lines` lines, handed to `emit`. Checks MD5 and item count
/// at the end. `compressed` counts compressed bytes as they are read (for progress).
///
/// `emit` returns `false` when downstream has gone; reading then stops quietly.
///
/// # Errors
/// Unreadable or corrupt gzip (naming the file and line), checksum or count mismatch.
pub fn read_file(
    file: &DataFile,
    page_bytes: usize,
    page_lines: usize,
    compressed: &Arc<AtomicU64>,
    cancel: &AtomicBool,
    mut emit: impl FnMut(Page) -> bool,
) -> Result<FileStats> {
    let key = file.key.clone();
    let origin = Origin::ExportFile { key: key.clone() };
    let f = File::open(&file.path).map_err(|e| Error::DataFileIo {
        key: key.to_string(),
        line: 0,
        source: e,
    })?;
    let mut hashing = Hashing {
        inner: BufReader::with_capacity(256 << 10, f),
        md5: Md5::new(),
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
            flate2::bufread::MultiGzDecoder::new(BufReader::with_capacity(256 << 10, chained));
        let mut buf: Vec<u8> = Vec::with_capacity(page_bytes + (64 << 10));
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
                let len = buf.len();
                let cap = buf.capacity();
                buf.resize(cap, 0);
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
            let mut rest = Vec::with_capacity(page_bytes + (64 << 10));
            rest.extend_from_slice(&buf[cut..]);
            buf.truncate(cut);
            let page_data = std::mem::replace(&mut buf, rest);
            let (nonempty, total) = count_lines(&page_data);
            stats.lines += nonempty;
            let page = Page {
                origin: origin.clone(),
                first_line: next_line,
                data: page_data,
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
    let digest = base64::engine::general_purpose::STANDARD.encode(hashing.md5.finalize());
    if digest != file.md5 {
        return Err(Error::DataFile {
            key: key.to_string(),
            reason: format!(
                "MD5 mismatch: manifest-files.json says {}, the file hashes to {digest}; the file is corrupt or not the one exported",
                file.md5
            ),
        });
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
            path,
            item_count: items,
            md5: base64::engine::general_purpose::STANDARD.encode(Md5::digest(bytes)),
            size: bytes.len() as u64,
        }
    }

    type Pages = Vec<(u64, Vec<u8>)>;

    fn read_all(f: &DataFile, page: usize, lines: usize) -> Result<(Pages, FileStats)> {
        let mut pages = Vec::new();
        let stats = read_file(
            f,
            page,
            lines,
            &Arc::new(AtomicU64::new(0)),
            &AtomicBool::new(false),
            |p| {
                pages.push((p.first_line, p.data));
                true
            },
        )?;
        Ok((pages, stats))
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
