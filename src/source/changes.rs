//! Where a table's changes after its load come from: the incremental exports under a
//! prefix (a local folder or `s3://bucket/prefix`), found by their
//! `AWSDynamoDB/<export id>/manifest-summary.json`, each with its window.
//!
//! Input: a `changes = { exports = … }` location. Output: the exports found (complete or
//! still being written), each opened for reading through [`super::export`] on demand.

use std::path::{Path, PathBuf};

use super::export::{self, ExportPlan, Kind, ManifestSummary};
use super::s3::{self, S3Store};
use crate::error::{Error, Result};
use crate::scalar::time::parse_timestamp;

/// An incremental export found under the prefix.
#[derive(Debug, Clone)]
pub struct Found {
    /// Its folder's name (`01768386924000-d339e52d`).
    pub id: String,
    /// Its folder, or `s3://bucket/…/AWSDynamoDB/<id>`.
    pub location: String,
    pub path: Option<PathBuf>,
    pub summary: ManifestSummary,
    /// Its window in microseconds since 1970: `exportFromTime` inclusive, `exportToTime`
    /// exclusive.
    pub from: i64,
    pub to: i64,
}

impl Found {
    /// The export's ARN, else its id.
    #[must_use]
    pub fn arn(&self) -> String {
        self.summary
            .export_arn
            .clone()
            .unwrap_or_else(|| self.id.clone())
    }

    /// Opens it for reading: its data files listed and checked to be there.
    ///
    /// # Errors
    /// A manifest that cannot be read, or a data file that is not there, naming it.
    pub async fn open(&self) -> Result<ExportPlan> {
        match &self.path {
            Some(p) => {
                let p = p.clone();
                tokio::task::spawn_blocking(move || export::open_as(&p, Kind::Incremental))
                    .await
                    .map_err(|e| Error::Internal(e.to_string()))?
            }
            None => export::open_s3_as(&self.location, Kind::Incremental).await,
        }
    }
}

/// What is under a prefix.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// Complete incremental exports, by `exportFromTime` then `exportToTime`.
    pub exports: Vec<Found>,
    /// Export folders with `_started` and no `manifest-summary.json` yet (being written).
    pub unfinished: Vec<String>,
    /// Folders whose summary could not be read as an export (each with why).
    pub unreadable: Vec<(String, String)>,
}

/// Lists the incremental exports under `location` (`path` when it is a local folder).
/// Full exports under the same prefix are left out.
///
/// # Errors
/// The folder or bucket cannot be listed.
pub async fn list(location: &str, path: Option<&Path>) -> Result<Listing> {
    let mut out = match path {
        Some(p) => {
            let p = p.to_path_buf();
            tokio::task::spawn_blocking(move || list_folder(&p))
                .await
                .map_err(|e| Error::Internal(e.to_string()))??
        }
        None => list_s3(location).await?,
    };
    out.exports
        .sort_by(|a, b| (a.from, a.to, &a.id).cmp(&(b.from, b.to, &b.id)));
    Ok(out)
}

/// An export's summary, kept when it is an incremental one.
fn take(listing: &mut Listing, id: String, location: String, path: Option<PathBuf>, bytes: &[u8]) {
    let summary = match export::parse_summary(bytes, Kind::Incremental) {
        Ok(s) => s,
        Err(reason) => {
            let full = serde_json::from_slice::<ManifestSummary>(bytes)
                .is_ok_and(|s| matches!(s.export_type.as_deref(), None | Some("FULL_EXPORT")));
            if !full {
                listing.unreadable.push((location, reason));
            }
            return;
        }
    };
    let time = |v: &Option<String>| v.as_deref().and_then(parse_timestamp);
    match (
        time(&summary.export_from_time),
        time(&summary.export_to_time),
    ) {
        (Some(from), Some(to)) if from < to => listing.exports.push(Found {
            id,
            location,
            path,
            summary,
            from,
            to,
        }),
        _ => listing.unreadable.push((
            location,
            format!(
                "exportFromTime {:?} / exportToTime {:?} are not an RFC 3339 window",
                summary.export_from_time, summary.export_to_time
            ),
        )),
    }
}

/// The export folders under a local prefix: `DIR/AWSDynamoDB/*`, `DIR/*` when DIR is the
/// `AWSDynamoDB` folder, or DIR itself when it is one export's folder.
fn list_folder(dir: &Path) -> Result<Listing> {
    let fail = |reason: String| Error::Source {
        source_name: dir.display().to_string(),
        reason,
    };
    if !dir.is_dir() {
        return Err(fail("no such folder (the `changes.exports` prefix)".into()));
    }
    let mut folders = Vec::new();
    if dir.join("manifest-summary.json").is_file() || dir.join("_started").is_file() {
        folders.push(dir.to_path_buf());
    } else {
        let root = if dir.join("AWSDynamoDB").is_dir() {
            dir.join("AWSDynamoDB")
        } else {
            dir.to_path_buf()
        };
        let entries = std::fs::read_dir(&root).map_err(|e| fail(format!("cannot list it: {e}")))?;
        for e in entries.flatten() {
            if e.path().is_dir() && e.file_name() != "data" {
                folders.push(e.path());
            }
        }
    }
    folders.sort();
    let mut listing = Listing::default();
    for f in folders {
        let id = f
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let location = f.display().to_string();
        match std::fs::read(f.join("manifest-summary.json")) {
            Ok(bytes) => take(&mut listing, id, location, Some(f), &bytes),
            Err(_) if f.join("_started").is_file() => listing.unfinished.push(location),
            Err(_) => {}
        }
    }
    Ok(listing)
}

/// The export folders under an S3 prefix: every `…/AWSDynamoDB/<id>/manifest-summary.json`.
async fn list_s3(url: &str) -> Result<Listing> {
    let (bucket, prefix) = s3::parse_url(url).ok_or_else(|| Error::Source {
        source_name: url.to_string(),
        reason: "not an s3://bucket/prefix address".into(),
    })?;
    let store = S3Store::new(&bucket).await;
    let under = if prefix.is_empty() || prefix.ends_with('/') {
        prefix.clone()
    } else {
        format!("{prefix}/")
    };
    let listed = store.list(&under).await?;
    let mut keys: Vec<&String> = listed.keys().collect();
    keys.sort();
    let mut listing = Listing::default();
    for key in keys {
        let (folder, started) = if let Some(f) = key.strip_suffix("/manifest-summary.json") {
            (f, false)
        } else if let Some(f) = key.strip_suffix("/_started") {
            (f, true)
        } else {
            continue;
        };
        let id = folder.rsplit('/').next().unwrap_or(folder).to_string();
        let location = format!("s3://{bucket}/{folder}");
        if started {
            if !listed.contains_key(&format!("{folder}/manifest-summary.json")) {
                listing.unfinished.push(location);
            }
            continue;
        }
        if let Some(bytes) = store.read_small(key).await? {
            take(&mut listing, id, location, None, &bytes);
        }
    }
    Ok(listing)
}
