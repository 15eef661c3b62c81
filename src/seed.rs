//! `ddb2pg fixtures seed` and `ddb2pg fixtures upload`: put a data set into DynamoDB (by
//! BatchWriteItem, retrying `UnprocessedItems` and throttling) or an export into S3, so the
//! scan and S3 sources can be tested and benchmarked against an emulator or a sandbox
//! account.
//!
//! Seed input: an export folder (`manifest-summary.json` + gzipped data files), one export
//! data file (`.json` lines or `.json.gz`), or a BatchWriteItem request file
//! (`{"Table": [{"PutRequest": {"Item": …}}]}`, or just the array).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, PutRequest,
    ScalarAttributeType, WriteRequest,
};
use base64::Engine as _;
use futures_util::stream::{self, StreamExt};
use serde_json::Value;

use crate::aws;
use crate::error::{Error, Result};
use crate::source::export;
use crate::source::s3::{self, S3Store};

/// Items per BatchWriteItem (DynamoDB's limit).
const BATCH: usize = 25;
/// Attempts per batch before the seed fails.
const ATTEMPTS: u32 = 12;

/// A key attribute: name and scalar type (`S`, `N` or `B`; inferred when absent).
#[derive(Debug, Clone)]
pub struct KeyArg {
    pub name: String,
    pub ty: Option<String>,
}

impl std::str::FromStr for KeyArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, ty) = match s.rsplit_once(':') {
            Some((n, t)) => (n, Some(t.to_ascii_uppercase())),
            None => (s, None),
        };
        if name.is_empty() {
            return Err("a key attribute name is needed, e.g. `bookId` or `year:N`".into());
        }
        if let Some(t) = &ty {
            if !matches!(t.as_str(), "S" | "N" | "B") {
                return Err(format!("key type must be S, N or B, got `{t}`"));
            }
        }
        Ok(KeyArg {
            name: name.to_string(),
            ty,
        })
    }
}

/// What a seed did.
#[derive(Debug, Clone, Default)]
pub struct SeedReport {
    pub table: String,
    pub items: u64,
    pub created: bool,
    pub unprocessed_retries: u64,
    pub throttled_retries: u64,
    pub seconds: f64,
}

/// One item of the input, as the SDK wants it.
type Item = HashMap<String, AttributeValue>;

/// DynamoDB JSON (`{"S": "x"}` …) → an SDK value.
///
/// # Errors
/// A value that is not DynamoDB JSON, naming what was found.
pub fn to_attribute_value(v: &Value) -> Result<AttributeValue, String> {
    let obj = v
        .as_object()
        .filter(|o| o.len() == 1)
        .ok_or_else(|| format!("not a DynamoDB JSON value (one type tag): {v}"))?;
    let (tag, inner) = obj.iter().next().ok_or("empty value")?;
    let text = |x: &Value| {
        x.as_str()
            .map(str::to_string)
            .ok_or(format!("{tag} needs a string"))
    };
    let list = |x: &Value| -> Result<Vec<String>, String> {
        x.as_array()
            .ok_or(format!("{tag} needs an array"))?
            .iter()
            .map(|e| {
                e.as_str()
                    .map(str::to_string)
                    .ok_or(format!("{tag} needs strings"))
            })
            .collect()
    };
    let blob = |s: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map(aws_sdk_dynamodb::primitives::Blob::new)
            .map_err(|e| format!("B is not base64: {e}"))
    };
    Ok(match tag.as_str() {
        "S" => AttributeValue::S(text(inner)?),
        "N" => AttributeValue::N(match inner {
            Value::Number(n) => n.to_string(),
            other => text(other)?,
        }),
        "B" => AttributeValue::B(blob(&text(inner)?)?),
        "BOOL" => AttributeValue::Bool(inner.as_bool().ok_or("BOOL needs true or false")?),
        "NULL" => AttributeValue::Null(true),
        "M" => AttributeValue::M(to_item(inner)?),
        "L" => AttributeValue::L(
            inner
                .as_array()
                .ok_or("L needs an array")?
                .iter()
                .map(to_attribute_value)
                .collect::<Result<_, _>>()?,
        ),
        "SS" => AttributeValue::Ss(list(inner)?),
        "NS" => AttributeValue::Ns(list(inner)?),
        "BS" => AttributeValue::Bs(
            list(inner)?
                .iter()
                .map(|s| blob(s))
                .collect::<Result<_, _>>()?,
        ),
        other => return Err(format!("unknown DynamoDB type tag `{other}`")),
    })
}

/// A DynamoDB JSON map → an SDK item.
///
/// # Errors
/// As [`to_attribute_value`], naming the attribute.
pub fn to_item(v: &Value) -> Result<Item, String> {
    let obj = v.as_object().ok_or("an item must be a JSON object")?;
    obj.iter()
        .map(|(k, v)| {
            to_attribute_value(v)
                .map(|av| (k.clone(), av))
                .map_err(|e| format!("attribute `{k}`: {e}"))
        })
        .collect()
}

/// Reads every item of the input, with the table name a request file gives.
fn read_items(from: &Path) -> Result<(Option<String>, Vec<Item>)> {
    let bad = |reason: String| Error::Usage(format!("{}: {reason}", from.display()));
    if from.is_dir() {
        let plan = export::open(from)?;
        let mut items = Vec::new();
        for f in &plan.files {
            if f.size == 0 {
                continue;
            }
            let raw = plan.open_data(f)?;
            read_lines(
                Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(raw))),
                &f.key,
                &mut items,
            )?;
        }
        return Ok((None, items));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(from)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| bad(e.to_string()))?;
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut items = Vec::new();
        read_lines(
            Box::new(flate2::read::MultiGzDecoder::new(&bytes[..])),
            &from.display().to_string(),
            &mut items,
        )?;
        return Ok((None, items));
    }
    // A whole-document request file, else export lines.
    if let Ok(doc) = serde_json::from_slice::<Value>(&bytes) {
        let (name, requests) = match &doc {
            Value::Array(a) => (None, a.clone()),
            Value::Object(o) if o.len() == 1 && !o.contains_key("Item") => {
                let (k, v) = o
                    .iter()
                    .next()
                    .ok_or_else(|| bad("empty request file".into()))?;
                let a = v
                    .as_array()
                    .ok_or_else(|| bad(format!("`{k}` must hold an array of PutRequest")))?;
                (Some(k.clone()), a.clone())
            }
            _ => {
                let mut items = Vec::new();
                read_lines(
                    Box::new(&bytes[..]),
                    &from.display().to_string(),
                    &mut items,
                )?;
                return Ok((None, items));
            }
        };
        let mut items = Vec::with_capacity(requests.len());
        for (i, r) in requests.iter().enumerate() {
            let item = r
                .get("PutRequest")
                .and_then(|p| p.get("Item"))
                .ok_or_else(|| {
                    bad(format!(
                        "request {} is not a PutRequest with an Item",
                        i + 1
                    ))
                })?;
            items.push(to_item(item).map_err(|e| bad(format!("request {}: {e}", i + 1)))?);
        }
        return Ok((name, items));
    }
    let mut items = Vec::new();
    read_lines(
        Box::new(&bytes[..]),
        &from.display().to_string(),
        &mut items,
    )?;
    Ok((None, items))
}

/// Export lines (`{"Item": {…}}`) → items.
fn read_lines(input: Box<dyn Read + '_>, name: &str, items: &mut Vec<Item>) -> Result<()> {
    for (i, line) in BufReader::new(input).lines().enumerate() {
        let line = line.map_err(|e| Error::DataFileIo {
            key: name.to_string(),
            line: i as u64 + 1,
            source: e,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |reason: String| Error::DataFile {
            key: name.to_string(),
            reason: format!("line {}: {reason}", i + 1),
        };
        let v: Value = serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
        let item = v.get("Item").ok_or_else(|| bad("no `Item`".into()))?;
        items.push(to_item(item).map_err(bad)?);
    }
    Ok(())
}

fn scalar_type(name: &str, given: Option<&str>, items: &[Item]) -> Result<ScalarAttributeType> {
    let t = match given {
        Some(t) => t.to_string(),
        None => match items.iter().find_map(|i| i.get(name)) {
            Some(AttributeValue::S(_)) => "S".into(),
            Some(AttributeValue::N(_)) => "N".into(),
            Some(AttributeValue::B(_)) => "B".into(),
            Some(_) => {
                return Err(Error::Usage(format!(
                    "key attribute `{name}` is not a string, number or binary in the data"
                )))
            }
            None => {
                return Err(Error::Usage(format!(
                    "key attribute `{name}` is in none of the items; give its type as `{name}:S`"
                )))
            }
        },
    };
    Ok(ScalarAttributeType::from(t.as_str()))
}

/// Writes the input into `table` (created on demand with `key`/`sort`).
///
/// # Errors
/// Unreadable input, a missing table without `--key`, or a write that fails after retries.
pub async fn seed(
    table: Option<String>,
    from: &Path,
    key: Option<KeyArg>,
    sort: Option<KeyArg>,
    in_flight: usize,
) -> Result<SeedReport> {
    let started = Instant::now();
    let path = from.to_path_buf();
    let (named, items) = tokio::task::spawn_blocking(move || read_items(&path))
        .await
        .map_err(|e| Error::CpuPool(e.to_string()))??;
    let table = table.or(named).ok_or_else(|| {
        Error::Usage(format!(
            "{}: no table name in the input; give --table",
            from.display()
        ))
    })?;
    let client = aws::dynamodb().await;
    let fail = |reason: String| Error::Source {
        source_name: format!("dynamodb table {table}"),
        reason,
    };
    let exists = match client.describe_table().table_name(&table).send().await {
        Ok(_) => true,
        Err(e)
            if e.as_service_error().is_some_and(
                aws_sdk_dynamodb::operation::describe_table::DescribeTableError::is_resource_not_found_exception,
            ) =>
        {
            false
        }
        Err(e) => return Err(fail(format!("DescribeTable failed: {}", aws::describe(&e)))),
    };
    let mut created = false;
    if !exists {
        let key = key.ok_or_else(|| {
            Error::Usage(format!(
                "dynamodb table {table} does not exist: give --key ATTR[:S|N|B] (and --sort) to create it"
            ))
        })?;
        let mut req = client
            .create_table()
            .table_name(&table)
            .billing_mode(BillingMode::PayPerRequest);
        for (k, kind) in [(Some(&key), KeyType::Hash), (sort.as_ref(), KeyType::Range)] {
            let Some(k) = k else { continue };
            let ty = scalar_type(&k.name, k.ty.as_deref(), &items)?;
            let def = AttributeDefinition::builder()
                .attribute_name(&k.name)
                .attribute_type(ty)
                .build()
                .map_err(|e| fail(e.to_string()))?;
            let ks = KeySchemaElement::builder()
                .attribute_name(&k.name)
                .key_type(kind)
                .build()
                .map_err(|e| fail(e.to_string()))?;
            req = req.attribute_definitions(def).key_schema(ks);
        }
        req.send()
            .await
            .map_err(|e| fail(format!("CreateTable failed: {}", aws::describe(&e))))?;
        created = true;
        for _ in 0..600 {
            let d = client.describe_table().table_name(&table).send().await;
            let active = d
                .ok()
                .and_then(|d| d.table)
                .and_then(|t| t.table_status)
                .is_some_and(|s| s.as_str() == "ACTIVE");
            if active {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let unprocessed = Arc::new(AtomicU64::new(0));
    let throttled = Arc::new(AtomicU64::new(0));
    let total = items.len() as u64;
    let mut batches: Vec<Vec<Item>> = Vec::new();
    let mut it = items.into_iter().peekable();
    while it.peek().is_some() {
        batches.push(it.by_ref().take(BATCH).collect());
    }
    let results: Vec<Result<()>> = stream::iter(batches)
        .map(|batch| {
            let client = client.clone();
            let table = table.clone();
            let unprocessed = unprocessed.clone();
            let throttled = throttled.clone();
            async move { write_batch(&client, &table, batch, &unprocessed, &throttled).await }
        })
        .buffer_unordered(in_flight.max(1))
        .collect()
        .await;
    for r in results {
        r?;
    }
    Ok(SeedReport {
        table,
        items: total,
        created,
        unprocessed_retries: unprocessed.load(Ordering::Relaxed),
        throttled_retries: throttled.load(Ordering::Relaxed),
        seconds: started.elapsed().as_secs_f64(),
    })
}

async fn write_batch(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    batch: Vec<Item>,
    unprocessed: &AtomicU64,
    throttled: &AtomicU64,
) -> Result<()> {
    let mut pending: Vec<WriteRequest> = Vec::with_capacity(batch.len());
    for item in batch {
        let put = PutRequest::builder()
            .set_item(Some(item))
            .build()
            .map_err(|e| Error::Usage(e.to_string()))?;
        pending.push(WriteRequest::builder().put_request(put).build());
    }
    let mut attempt = 0;
    while !pending.is_empty() {
        let r = client
            .batch_write_item()
            .request_items(table, pending.clone())
            .customize()
            .config_override(
                aws_sdk_dynamodb::config::Builder::default()
                    .retry_config(aws_config::retry::RetryConfig::disabled()),
            )
            .send()
            .await;
        match r {
            Ok(out) => {
                let left = out
                    .unprocessed_items
                    .and_then(|mut m| m.remove(table))
                    .unwrap_or_default();
                if left.is_empty() {
                    return Ok(());
                }
                unprocessed.fetch_add(1, Ordering::Relaxed);
                pending = left;
            }
            Err(e) => {
                use aws_sdk_dynamodb::error::ProvideErrorMetadata;
                let code = e.as_service_error().and_then(|s| s.code()).unwrap_or("");
                let retry = matches!(
                    code,
                    "ProvisionedThroughputExceededException"
                        | "ThrottlingException"
                        | "RequestLimitExceeded"
                        | "InternalServerError"
                        | "ServiceUnavailable"
                ) || matches!(
                    e,
                    aws_sdk_dynamodb::error::SdkError::TimeoutError(_)
                        | aws_sdk_dynamodb::error::SdkError::DispatchFailure(_)
                        | aws_sdk_dynamodb::error::SdkError::ResponseError(_)
                ) || e.raw_response().is_some_and(|r| r.status().as_u16() >= 500);
                if !retry {
                    return Err(Error::Source {
                        source_name: format!("dynamodb table {table}"),
                        reason: format!("BatchWriteItem failed: {}", aws::describe(&e)),
                    });
                }
                throttled.fetch_add(1, Ordering::Relaxed);
            }
        }
        attempt += 1;
        if attempt >= ATTEMPTS {
            return Err(Error::Source {
                source_name: format!("dynamodb table {table}"),
                reason: format!(
                    "BatchWriteItem still had {} unwritten item(s) after {attempt} attempts",
                    pending.len()
                ),
            });
        }
        tokio::time::sleep(aws::backoff(attempt)).await;
    }
    Ok(())
}

/// Puts every file under `from` at `to` (`s3://bucket/prefix`), keeping relative paths;
/// creates the bucket when missing. Returns (files, bytes).
///
/// # Errors
/// An unreadable file, a bad address, or a PUT that fails after retries.
pub async fn upload(from: &Path, to: &str) -> Result<(u64, u64)> {
    let (bucket, prefix) = s3::parse_url(to)
        .ok_or_else(|| Error::Usage(format!("--to {to}: not an s3://bucket/prefix address")))?;
    let store = S3Store::new(&bucket).await;
    store.ensure_bucket().await?;
    let mut files = Vec::new();
    collect_files(from, &mut files).map_err(|e| Error::Io {
        what: format!("list {}", from.display()),
        source: e,
    })?;
    let mut bytes = 0u64;
    for f in &files {
        let rel = f
            .strip_prefix(from)
            .unwrap_or(f)
            .to_string_lossy()
            .replace('\\', "/");
        let key = if prefix.is_empty() {
            rel
        } else {
            format!("{prefix}/{rel}")
        };
        let data = std::fs::read(f).map_err(|e| Error::Io {
            what: format!("read {}", f.display()),
            source: e,
        })?;
        bytes += data.len() as u64;
        store.put(&key, data).await?;
    }
    Ok((files.len() as u64, bytes))
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<std::io::Result<_>>()?;
    entries.sort_by_key(std::fs::DirEntry::path);
    for e in entries {
        let p = e.path();
        if p.is_dir() {
            collect_files(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddb_json_to_sdk_values_and_back() {
        let v: Value = serde_json::from_str(
            r#"{"a":{"S":"x"},"n":{"N":"123456789012345678901234567890.5"},"m":{"M":{"l":{"L":[{"NULL":true},{"BOOL":true},{"B":"AP8="}]}}},"ss":{"SS":["p","q"]}}"#,
        )
        .expect("json");
        let item = to_item(&v).expect("item");
        assert_eq!(
            item.get("n"),
            Some(&AttributeValue::N(
                "123456789012345678901234567890.5".into()
            ))
        );
        let mut back = String::new();
        crate::source::dynamodb::write_item(&mut back, &item);
        let again: Value = serde_json::from_str(&back).expect("json");
        assert_eq!(again, v);
        assert!(to_item(&serde_json::json!({"x": {"Q": "1"}}))
            .expect_err("unknown tag")
            .contains("`x`"));
    }

    #[test]
    fn key_args() {
        let k: KeyArg = "year:n".parse().expect("key");
        assert_eq!((k.name.as_str(), k.ty.as_deref()), ("year", Some("N")));
        assert!("x:Q".parse::<KeyArg>().is_err());
    }
}
