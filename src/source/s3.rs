//! S3 objects for the export reader: small objects (manifests) fetched whole, data files
//! streamed through a blocking [`Read`] that the reader threads use like a local file.
//!
//! A connection cut mid-object re-opens the object with a ranged GET from the first byte
//! not yet handed out, so a retry never repeats or skips a byte (the MD5 of the export
//! manifest is computed over exactly what the reader returned). Throttling (`SlowDown`),
//! 5xx and transport errors are retried with exponential backoff and jitter; a missing
//! bucket or key, or access denied, fails at once naming the object.

use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;

use super::aws;
use crate::error::{Error, Result};
use crate::retry::backoff;

/// Attempts per request (and per re-open of a cut stream) before giving up.
const ATTEMPTS: u32 = 6;

/// `s3://bucket/prefix` → (bucket, prefix without surrounding slashes).
#[must_use]
pub fn parse_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("s3://")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return None;
    }
    Some((bucket.to_string(), prefix.trim_matches('/').to_string()))
}

/// An object as a listing or HEAD describes it.
#[derive(Debug, Clone, Default)]
pub struct Listed {
    pub size: u64,
    /// The ETag, quotes included as S3 sends it: the hex MD5 of the bytes for an object
    /// put in one piece, `<md5 of part md5s>-<parts>` for a multipart upload.
    pub etag: Option<String>,
}

/// Whether an ETag is a plain MD5 (one-piece upload) other than `md5_b64` (the
/// manifest's base64 MD5): `Some(etag)` names a mismatch, `None` when it matches or
/// cannot be compared (multipart, missing).
#[must_use]
pub fn etag_mismatch(etag: Option<&str>, md5_b64: &str) -> Option<String> {
    use base64::Engine as _;
    let tag = etag?.trim_matches('"');
    if tag.len() != 32 || !tag.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let want = base64::engine::general_purpose::STANDARD
        .decode(md5_b64)
        .ok()?;
    let hex: String = want.iter().map(|b| format!("{b:02x}")).collect();
    (!tag.eq_ignore_ascii_case(&hex)).then(|| tag.to_string())
}

/// One bucket, and the runtime the blocking readers run their requests on.
pub struct S3Store {
    client: aws_sdk_s3::Client,
    pub bucket: String,
    handle: tokio::runtime::Handle,
    /// Requests retried (throttling, 5xx, cut connections).
    pub retries: AtomicU64,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S3Store(s3://{})", self.bucket)
    }
}

/// Is this error worth another attempt?
fn transient<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>, status: Option<u16>) -> bool {
    match e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(se) => {
            status.is_some_and(|s| s >= 500 || s == 429)
                || matches!(
                    se.err().code(),
                    Some("SlowDown" | "InternalError" | "ServiceUnavailable" | "RequestTimeout")
                )
        }
        _ => false,
    }
}

fn status_of<E, R: HttpStatus>(e: &SdkError<E, R>) -> Option<u16> {
    e.raw_response().map(HttpStatus::status_code)
}

/// The HTTP status of a raw response.
trait HttpStatus {
    fn status_code(&self) -> u16;
}

impl HttpStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

fn describe<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug + 'static>(
    e: &SdkError<E, R>,
    status: Option<u16>,
) -> String {
    let base = match e {
        SdkError::ServiceError(se) => match (se.err().code(), se.err().message()) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            (Some(c), None) => c.to_string(),
            _ => aws::chain(se.err()),
        },
        other => aws::chain(other),
    };
    match status {
        Some(s) if !base.contains(&s.to_string()) => format!("{base} (HTTP {s})"),
        _ => base,
    }
}

/// What a failed request means for the caller.
enum Failure {
    NotFound,
    Fatal(String),
}

impl S3Store {
    /// A store for `bucket` using the standard AWS environment.
    pub async fn new(bucket: &str) -> S3Store {
        S3Store {
            client: aws::s3().await,
            bucket: bucket.to_string(),
            handle: tokio::runtime::Handle::current(),
            retries: AtomicU64::new(0),
        }
    }

    fn url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    fn fail(&self, key: &str, reason: String) -> Error {
        Error::Export {
            location: self.url(key),
            reason,
        }
    }

    /// A GET of `key` from byte `from`, retried where a retry can help.
    async fn get(&self, key: &str, from: u64) -> Result<ByteStream, Failure> {
        let mut attempt = 0;
        loop {
            let mut req = self.client.get_object().bucket(&self.bucket).key(key);
            if from > 0 {
                req = req.range(format!("bytes={from}-"));
            }
            // Our loop retries (counted, with backoff); the SDK's own would hide them.
            let req = req.customize().config_override(
                aws_sdk_s3::config::Builder::default()
                    .retry_config(aws_config::retry::RetryConfig::disabled()),
            );
            match req.send().await {
                Ok(out) => return Ok(out.body),
                Err(e) => {
                    let status = status_of(&e);
                    let code = e.as_service_error().and_then(ProvideErrorMetadata::code);
                    if matches!(code, Some("NoSuchKey")) || status == Some(404) && code.is_none() {
                        return Err(Failure::NotFound);
                    }
                    if matches!(code, Some("NoSuchBucket")) {
                        return Err(Failure::Fatal(format!(
                            "bucket `{}` does not exist",
                            self.bucket
                        )));
                    }
                    attempt += 1;
                    if !transient(&e, status) || attempt >= ATTEMPTS {
                        return Err(Failure::Fatal(format!(
                            "GET failed after {attempt} attempt(s): {}",
                            describe(&e, status)
                        )));
                    }
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
        }
    }

    /// A small object, whole; `None` when it does not exist.
    ///
    /// # Errors
    /// A missing bucket, access denied, or a failure after retries, naming the object.
    pub async fn read_small(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let mut attempt = 0;
        loop {
            let body = match self.get(key, 0).await {
                Ok(b) => b,
                Err(Failure::NotFound) => return Ok(None),
                Err(Failure::Fatal(reason)) => return Err(self.fail(key, reason)),
            };
            match body.collect().await {
                Ok(data) => return Ok(Some(data.into_bytes().to_vec())),
                Err(e) => {
                    attempt += 1;
                    if attempt >= ATTEMPTS {
                        return Err(self.fail(
                            key,
                            format!(
                                "reading the object failed {attempt} times: {}",
                                aws::chain(&e)
                            ),
                        ));
                    }
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
        }
    }

    /// Every key under `prefix` with its size (ListObjectsV2, all pages).
    ///
    /// # Errors
    /// A missing bucket, access denied, or a failure after retries.
    pub async fn list(&self, prefix: &str) -> Result<HashMap<String, Listed>> {
        let mut out = HashMap::new();
        let mut token: Option<String> = None;
        let mut attempt = 0;
        loop {
            let resp = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(token.clone())
                .send()
                .await;
            match resp {
                Ok(page) => {
                    attempt = 0;
                    for o in page.contents() {
                        if let Some(k) = o.key() {
                            out.insert(
                                k.to_string(),
                                Listed {
                                    size: o.size().unwrap_or(0).max(0) as u64,
                                    etag: o.e_tag().map(str::to_string),
                                },
                            );
                        }
                    }
                    match page.next_continuation_token() {
                        Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
                        _ => return Ok(out),
                    }
                }
                Err(e) => {
                    let status = status_of(&e);
                    let code = e.as_service_error().and_then(ProvideErrorMetadata::code);
                    if matches!(code, Some("NoSuchBucket")) || status == Some(404) {
                        return Err(
                            self.fail(prefix, format!("bucket `{}` does not exist", self.bucket))
                        );
                    }
                    attempt += 1;
                    if !transient(&e, status) || attempt >= ATTEMPTS {
                        return Err(self.fail(
                            prefix,
                            format!(
                                "listing failed after {attempt} attempt(s): {}",
                                describe(&e, status)
                            ),
                        ));
                    }
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
        }
    }

    /// The size and ETag of `key`, or `None` when it does not exist.
    ///
    /// # Errors
    /// Access denied or a failure after retries.
    pub async fn size_of(&self, key: &str) -> Result<Option<Listed>> {
        let mut attempt = 0;
        loop {
            match self
                .client
                .head_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
            {
                Ok(h) => {
                    return Ok(Some(Listed {
                        size: h.content_length().unwrap_or(0).max(0) as u64,
                        etag: h.e_tag().map(str::to_string),
                    }))
                }
                Err(e) => {
                    let status = status_of(&e);
                    if status == Some(404) {
                        return Ok(None);
                    }
                    attempt += 1;
                    if !transient(&e, status) || attempt >= ATTEMPTS {
                        return Err(self.fail(
                            key,
                            format!(
                                "HEAD failed after {attempt} attempt(s): {}",
                                describe(&e, status)
                            ),
                        ));
                    }
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
        }
    }

    /// A blocking reader over the object (for reader threads, never a tokio worker).
    #[must_use]
    pub fn open(self: &Arc<Self>, key: &str, size: u64) -> ObjectReader {
        ObjectReader {
            store: self.clone(),
            key: key.to_string(),
            size,
            offset: 0,
            body: None,
            pending: Bytes::new(),
            cuts: 0,
        }
    }

    /// Puts one object (used by `fixtures upload`).
    ///
    /// # Errors
    /// The PUT failed after the SDK's retries.
    pub async fn put(&self, key: &str, data: Vec<u8>) -> Result<()> {
        let mut attempt = 0;
        loop {
            let r = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .body(ByteStream::from(data.clone()))
                .send()
                .await;
            match r {
                Ok(_) => return Ok(()),
                Err(e) => {
                    let status = status_of(&e);
                    attempt += 1;
                    if !transient(&e, status) || attempt >= ATTEMPTS {
                        return Err(self.fail(
                            key,
                            format!(
                                "PUT failed after {attempt} attempt(s): {}",
                                describe(&e, status)
                            ),
                        ));
                    }
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
        }
    }

    /// Creates the bucket when it does not exist (used by `fixtures upload`).
    ///
    /// # Errors
    /// The bucket could not be created.
    pub async fn ensure_bucket(&self) -> Result<()> {
        if self
            .client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .is_ok()
        {
            return Ok(());
        }
        match self
            .client
            .create_bucket()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let status = status_of(&e);
                Err(self.fail(
                    "",
                    format!("cannot create the bucket: {}", describe(&e, status)),
                ))
            }
        }
    }
}

/// A data file as a blocking byte stream; re-opens at the current offset when cut.
pub struct ObjectReader {
    store: Arc<S3Store>,
    key: String,
    size: u64,
    offset: u64,
    body: Option<ByteStream>,
    pending: Bytes,
    cuts: u32,
}

impl ObjectReader {
    fn io_err(&self, reason: String) -> io::Error {
        io::Error::other(format!("{}: {reason}", self.store.url(&self.key)))
    }

    /// Drops the body after a cut, counting it; fails after too many in a row.
    fn cut(&mut self, why: String) -> io::Result<()> {
        self.body = None;
        self.cuts += 1;
        if self.cuts >= ATTEMPTS {
            return Err(self.io_err(format!(
                "the object stream was cut {} times at byte {} of {}: {why}",
                self.cuts, self.offset, self.size
            )));
        }
        self.store.retries.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(object = %self.store.url(&self.key), offset = self.offset, "S3 stream cut ({why}); re-opening at this offset.");
        std::thread::sleep(backoff(self.cuts));
        Ok(())
    }
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if !self.pending.is_empty() {
                let n = buf.len().min(self.pending.len());
                buf[..n].copy_from_slice(&self.pending[..n]);
                bytes::Buf::advance(&mut self.pending, n);
                self.offset += n as u64;
                return Ok(n);
            }
            if buf.is_empty() || (self.body.is_none() && self.offset >= self.size && self.size > 0)
            {
                return Ok(0);
            }
            if self.body.is_none() {
                let store = self.store.clone();
                let (key, from) = (self.key.clone(), self.offset);
                match store.handle.block_on(store.get(&key, from)) {
                    Ok(b) => self.body = Some(b),
                    Err(Failure::NotFound) => {
                        return Err(io::Error::new(
                            io::ErrorKind::NotFound,
                            format!("{}: the object is gone", self.store.url(&self.key)),
                        ))
                    }
                    Err(Failure::Fatal(reason)) => return Err(self.io_err(reason)),
                }
            }
            let Some(body) = self.body.as_mut() else {
                continue;
            };
            let next = self.store.handle.block_on(body.next());
            match next {
                Some(Ok(b)) => {
                    self.pending = b;
                    if !self.pending.is_empty() {
                        self.cuts = 0;
                    }
                }
                Some(Err(e)) => self.cut(aws::chain(&e))?,
                None => {
                    self.body = None;
                    if self.offset < self.size {
                        self.cut(format!("the stream ended at byte {}", self.offset))?;
                    } else {
                        return Ok(0);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_etag_is_compared_with_the_manifest_md5() {
        // md5("") = d41d8cd98f00b204e9800998ecf8427e = 1B2M2Y8AsgTpgAmY7PhCfg== in base64.
        let md5 = "1B2M2Y8AsgTpgAmY7PhCfg==";
        assert_eq!(
            etag_mismatch(Some("\"d41d8cd98f00b204e9800998ecf8427e\""), md5),
            None
        );
        assert_eq!(
            etag_mismatch(Some("D41D8CD98F00B204E9800998ECF8427E"), md5),
            None
        );
        assert_eq!(
            etag_mismatch(Some("\"00000000000000000000000000000000\""), md5).as_deref(),
            Some("00000000000000000000000000000000")
        );
        // Multipart or missing: not comparable.
        assert_eq!(
            etag_mismatch(Some("\"0123456789abcdef0123456789abcdef-3\""), md5),
            None
        );
        assert_eq!(etag_mismatch(None, md5), None);
    }

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("s3://b/p/q/"),
            Some(("b".to_string(), "p/q".to_string()))
        );
        assert_eq!(parse_url("s3://b"), Some(("b".to_string(), String::new())));
        assert_eq!(parse_url("s3:///x"), None);
        assert_eq!(parse_url("/local/dir"), None);
    }
}
