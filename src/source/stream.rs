//! A live table's DynamoDB Stream (`aws-sdk-dynamodbstreams`): the stream found from
//! `DescribeTable` (`LatestStreamArn`, its view type and creation time), its shards listed
//! with paging (`DescribeStream` from `LastEvaluatedShardId`), iterators opened at
//! `TRIM_HORIZON` or after a sequence number, and `GetRecords` pages turned into the
//! change lines an incremental export holds (`{"Metadata":…,"Keys":…,"NewImage":…}`), so a
//! stream record and the same change in an export decode alike.
//!
//! Sequence numbers are digit strings of up to 40 digits: [`seq_cmp`] compares them as
//! numbers without parsing them into one.
//!
//! Input: the table's name. Output: [`StreamInfo`], [`ShardInfo`]s, [`RecordPage`]s.

use std::cmp::Ordering;
use std::collections::HashMap;

use aws_sdk_dynamodbstreams::types::{
    AttributeValue as StreamValue, OperationType, ShardIteratorType, StreamStatus, StreamViewType,
};
use aws_sdk_dynamodbstreams::Client;

use super::aws;
use crate::ddbjson::sdk::{write_item, SdkItem};
use crate::ddbjson::write_json_string;
use crate::error::{Error, Result};

/// What `DescribeTable` and `DescribeStream` say about a table's stream.
#[derive(Debug, Clone)]
pub struct StreamInfo {
    pub table: String,
    pub arn: String,
    /// `NEW_IMAGE`, `NEW_AND_OLD_IMAGES`, `KEYS_ONLY` or `OLD_IMAGE`.
    pub view_type: String,
    /// When the stream was created, in microseconds since the epoch (the stream's
    /// `CreationRequestDateTime`, else its label).
    pub created_micros: Option<i64>,
    /// `ENABLED`, `ENABLING`, `DISABLED`, `DISABLING`.
    pub status: String,
    /// The table's key attributes (hash, then range).
    pub key: Vec<String>,
}

/// One shard of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    pub id: String,
    pub parent: Option<String>,
    pub first_seq: Option<String>,
    /// Set once the shard is closed (it takes no more records).
    pub last_seq: Option<String>,
}

/// One stream record, as a change line.
#[derive(Debug, Clone)]
pub struct Change {
    pub seq: String,
    /// `ApproximateCreationDateTime` in microseconds since the epoch.
    pub at_micros: Option<i64>,
    /// The record's `Keys` as canonical DynamoDB JSON (attribute names sorted): which
    /// item it changes.
    pub key: String,
    /// `{"Metadata":{…},"Keys":{…},"NewImage":{…}}` (no `NewImage` for a `REMOVE`).
    pub line: String,
}

/// One `GetRecords` answer.
#[derive(Debug)]
pub struct RecordPage {
    pub changes: Vec<Change>,
    /// `None`: the shard is closed and read to its end.
    pub next: Option<String>,
}

/// Why a stream call failed.
#[derive(Debug)]
pub enum StreamError {
    /// The iterator is older than 15 minutes: open a new one after the last applied record.
    Expired,
    /// The records asked for are past the stream's retention (trimmed).
    Trimmed(String),
    /// Throttled (`LimitExceededException`) or a 5xx: try again after a backoff.
    Busy(String),
    /// The shard or stream is gone.
    NotFound(String),
    /// Anything else (the SDK refusing a page it cannot parse, a refused request…).
    Other(String),
}

impl std::fmt::Display for StreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamError::Expired => write!(f, "the shard iterator expired"),
            StreamError::Trimmed(m) => write!(f, "records trimmed: {m}"),
            StreamError::Busy(m) | StreamError::NotFound(m) | StreamError::Other(m) => {
                write!(f, "{m}")
            }
        }
    }
}

/// Compares two sequence numbers (digit strings of up to 40 digits) as numbers.
#[must_use]
pub fn seq_cmp(a: &str, b: &str) -> Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// A Streams client (endpoint from `AWS_ENDPOINT_URL_DYNAMODB_STREAMS`, else
/// `AWS_ENDPOINT_URL`, as the AWS SDKs read it). With neither set but
/// `AWS_ENDPOINT_URL_DYNAMODB` set (an emulator, which serves both on one address), the
/// DynamoDB endpoint: a sync pointed at DynamoDB Local never reads a stream in AWS.
pub async fn client() -> Client {
    let set = |n: &str| std::env::var(n).ok().filter(|v| !v.trim().is_empty());
    let mut b = aws_sdk_dynamodbstreams::config::Builder::from(aws::sdk_config().await);
    if set("AWS_ENDPOINT_URL_DYNAMODB_STREAMS").is_none() && set("AWS_ENDPOINT_URL").is_none() {
        if let Some(ddb) = set("AWS_ENDPOINT_URL_DYNAMODB") {
            tracing::debug!(endpoint = %ddb, "DynamoDB Streams at the DynamoDB endpoint (AWS_ENDPOINT_URL_DYNAMODB_STREAMS is not set).");
            b = b.endpoint_url(ddb);
        }
    }
    Client::from_conf(b.build())
}

/// The stream of `table`: `DescribeTable`'s `LatestStreamArn`, then `DescribeStream`.
///
/// # Errors
/// The table cannot be described ([`Error::Source`]), or it has no stream
/// ([`Error::ChangesLost`]: its changes are not kept anywhere).
pub async fn describe(streams: &Client, table: &str) -> Result<StreamInfo> {
    let fail = |reason: String| Error::Source {
        source_name: format!("dynamodb:{table}"),
        reason,
    };
    let d = aws::dynamodb()
        .await
        .describe_table()
        .table_name(table)
        .send()
        .await
        .map_err(|e| fail(format!("DescribeTable failed: {}", aws::describe(&e))))?;
    let t = d
        .table
        .ok_or_else(|| fail("DescribeTable returned no table".into()))?;
    let enabled = t
        .stream_specification
        .as_ref()
        .is_some_and(|s| s.stream_enabled);
    let Some(arn) = t.latest_stream_arn.clone().filter(|_| enabled) else {
        return Err(Error::ChangesLost {
            table: table.to_string(),
            reason: format!(
                "DynamoDB table {table} has no stream enabled{}: its changes since the load are kept nowhere; enable its stream (NEW_AND_OLD_IMAGES or NEW_IMAGE), then reload the table (ddb2pg load --mode replace --fresh) and sync",
                t.latest_stream_arn
                    .as_deref()
                    .map(|a| format!(" (its last stream, {a}, is disabled)"))
                    .unwrap_or_default()
            ),
        });
    };
    let key = t
        .key_schema
        .unwrap_or_default()
        .into_iter()
        .map(|k| k.attribute_name)
        .collect();
    let s = streams
        .describe_stream()
        .stream_arn(&arn)
        .limit(1)
        .send()
        .await
        .map_err(|e| {
            fail(format!(
                "DescribeStream {arn} failed: {}",
                aws::describe(&e)
            ))
        })?;
    let desc = s
        .stream_description
        .ok_or_else(|| fail(format!("DescribeStream {arn} returned no description")))?;
    let created_micros = desc
        .creation_request_date_time
        .map(|d| micros(&d))
        .or_else(|| {
            t.latest_stream_label
                .as_deref()
                .and_then(crate::scalar::time::parse_timestamp)
        });
    Ok(StreamInfo {
        table: table.to_string(),
        arn,
        view_type: desc
            .stream_view_type
            .as_ref()
            .map_or("NEW_AND_OLD_IMAGES", StreamViewType::as_str)
            .to_string(),
        created_micros,
        status: desc
            .stream_status
            .as_ref()
            .map_or("ENABLED", StreamStatus::as_str)
            .to_string(),
        key,
    })
}

/// Every shard of the stream, page by page.
///
/// # Errors
/// `DescribeStream` fails (after a few tries when throttled).
pub async fn shards(streams: &Client, arn: &str) -> Result<Vec<ShardInfo>> {
    let mut out = Vec::new();
    let mut start: Option<String> = None;
    let mut attempt = 0;
    loop {
        let r = streams
            .describe_stream()
            .stream_arn(arn)
            .set_exclusive_start_shard_id(start.clone())
            .limit(100)
            .send()
            .await;
        let d = match r {
            Ok(d) => d,
            Err(e) => {
                let msg = aws::describe(&e);
                attempt += 1;
                if attempt < 8 && is_busy(&msg) {
                    tokio::time::sleep(crate::retry::backoff(attempt)).await;
                    continue;
                }
                return Err(Error::Source {
                    source_name: arn.to_string(),
                    reason: format!("DescribeStream failed: {msg}"),
                });
            }
        };
        let Some(desc) = d.stream_description else {
            break;
        };
        for s in desc.shards.unwrap_or_default() {
            let Some(id) = s.shard_id else { continue };
            let range = s.sequence_number_range;
            out.push(ShardInfo {
                id,
                parent: s.parent_shard_id,
                first_seq: range
                    .as_ref()
                    .and_then(|r| r.starting_sequence_number.clone()),
                last_seq: range.and_then(|r| r.ending_sequence_number),
            });
        }
        match desc.last_evaluated_shard_id {
            Some(next) if start.as_deref() != Some(next.as_str()) => start = Some(next),
            _ => break,
        }
    }
    Ok(out)
}

/// Opens an iterator on a shard: after `after` (a sequence number), or at `TRIM_HORIZON`.
///
/// # Errors
/// [`StreamError::Trimmed`] when the record after `after` is gone, and the others.
pub async fn iterator(
    streams: &Client,
    arn: &str,
    shard: &str,
    after: Option<&str>,
) -> std::result::Result<String, StreamError> {
    let req = streams.get_shard_iterator().stream_arn(arn).shard_id(shard);
    let req = match after {
        Some(seq) => req
            .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
            .sequence_number(seq),
        None => req.shard_iterator_type(ShardIteratorType::TrimHorizon),
    };
    let out = req.send().await.map_err(|e| classify(&aws::describe(&e)))?;
    out.shard_iterator
        .ok_or_else(|| StreamError::Other("GetShardIterator returned no iterator".into()))
}

/// One `GetRecords` call (up to `limit` records, at most 1000).
///
/// # Errors
/// [`StreamError`]: expired iterator, trimmed records, throttling, a page the SDK cannot
/// parse.
pub async fn records(
    streams: &Client,
    iterator: &str,
    limit: i32,
) -> std::result::Result<RecordPage, StreamError> {
    let out = streams
        .get_records()
        .shard_iterator(iterator)
        .limit(limit.clamp(1, 1000))
        .send()
        .await
        .map_err(|e| classify(&aws::describe(&e)))?;
    let mut changes = Vec::new();
    for r in out.records.unwrap_or_default() {
        let op = r.event_name;
        let Some(sr) = r.dynamodb else { continue };
        let Some(seq) = sr.sequence_number else {
            continue;
        };
        let at_micros = sr.approximate_creation_date_time.as_ref().map(micros);
        let unknown = |e: String| {
            StreamError::Other(format!(
                "record {seq}: {e}, a DynamoDB type this build of ddb2pg does not know"
            ))
        };
        let keys: SdkItem = convert_item(sr.keys.unwrap_or_default()).map_err(unknown)?;
        let image = match op {
            Some(OperationType::Remove) => None,
            _ => sr
                .new_image
                .map(convert_item)
                .transpose()
                .map_err(unknown)?,
        };
        let mut key = String::with_capacity(64);
        write_sorted(&mut key, &keys);
        let mut line = String::with_capacity(256);
        line.push_str("{\"Metadata\":{\"SequenceNumber\":");
        write_json_string(&mut line, &seq);
        line.push_str(",\"eventName\":");
        write_json_string(&mut line, op.as_ref().map_or("", OperationType::as_str));
        if let Some(at) = &sr.approximate_creation_date_time {
            line.push_str(",\"ApproximateCreationDateTime\":");
            line.push_str(&format!("{}", at.secs()));
        }
        line.push_str("},\"Keys\":");
        line.push_str(&key);
        if let Some(img) = &image {
            line.push_str(",\"NewImage\":");
            write_item(&mut line, img);
        } else if !matches!(op, Some(OperationType::Remove)) {
            // An INSERT or MODIFY without its new image: the view type holds none. The
            // sync refuses such streams before reading; a record like this is applied as
            // nothing and said.
            tracing::warn!(sequence = %seq, "A stream record without its new image (view type KEYS_ONLY or OLD_IMAGE?).");
        }
        line.push('}');
        changes.push(Change {
            seq,
            at_micros,
            key,
            line,
        });
    }
    Ok(RecordPage {
        changes,
        next: out.next_shard_iterator,
    })
}

fn is_busy(msg: &str) -> bool {
    msg.contains("LimitExceeded")
        || msg.contains("Throttl")
        || msg.contains("InternalServerError")
        || msg.contains("ServiceUnavailable")
        || msg.contains("dispatch failure")
        || msg.contains("timeout")
}

fn classify(msg: &str) -> StreamError {
    if msg.contains("ExpiredIterator") {
        StreamError::Expired
    } else if msg.contains("TrimmedDataAccess") {
        StreamError::Trimmed(msg.to_string())
    } else if msg.contains("ResourceNotFound") {
        StreamError::NotFound(msg.to_string())
    } else if is_busy(msg) {
        StreamError::Busy(msg.to_string())
    } else {
        StreamError::Other(msg.to_string())
    }
}

fn micros(d: &aws_sdk_dynamodbstreams::primitives::DateTime) -> i64 {
    d.secs()
        .saturating_mul(1_000_000)
        .saturating_add(i64::from(d.subsec_nanos() / 1000))
}

/// A map of keys as DynamoDB JSON with the attribute names sorted: the same item gives
/// the same text whatever order the service sent.
fn write_sorted(out: &mut String, item: &SdkItem) {
    let mut names: Vec<&String> = item.keys().collect();
    names.sort();
    out.push('{');
    for (i, k) in names.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_json_string(out, k);
        out.push(':');
        if let Some(v) = item.get(k) {
            crate::ddbjson::sdk::write_value(out, v);
        }
    }
    out.push('}');
}

fn convert_item(m: HashMap<String, StreamValue>) -> std::result::Result<SdkItem, String> {
    m.into_iter()
        .map(|(k, v)| match convert(v) {
            Some(v) => Ok((k, v)),
            None => Err(format!("attribute `{k}` holds a value")),
        })
        .collect()
}

/// A Streams value as the DynamoDB SDK's (the two crates define the same type twice).
fn convert(v: StreamValue) -> Option<aws_sdk_dynamodb::types::AttributeValue> {
    use aws_sdk_dynamodb::primitives::Blob;
    use aws_sdk_dynamodb::types::AttributeValue as A;
    let blob = |b: aws_sdk_dynamodbstreams::primitives::Blob| Blob::new(b.into_inner());
    Some(match v {
        StreamValue::S(s) => A::S(s),
        StreamValue::N(n) => A::N(n),
        StreamValue::B(b) => A::B(blob(b)),
        StreamValue::Bool(b) => A::Bool(b),
        StreamValue::Null(n) => A::Null(n),
        StreamValue::M(m) => A::M(convert_item(m).ok()?),
        StreamValue::L(l) => A::L(l.into_iter().map(convert).collect::<Option<_>>()?),
        StreamValue::Ss(s) => A::Ss(s),
        StreamValue::Ns(s) => A::Ns(s),
        StreamValue::Bs(s) => A::Bs(s.into_iter().map(blob).collect()),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_compare_as_numbers() {
        assert_eq!(seq_cmp("9", "10"), Ordering::Less);
        assert_eq!(
            seq_cmp(
                "4000000000000000000000000000000000000001",
                "400000000000000000000000000000000000000"
            ),
            Ordering::Greater
        );
        assert_eq!(seq_cmp("000123", "123"), Ordering::Equal);
        assert_eq!(
            seq_cmp(
                "1234567890123456789012345678901234567890",
                "1234567890123456789012345678901234567891"
            ),
            Ordering::Less
        );
    }

    #[test]
    fn stream_values_become_sdk_values() {
        let m = HashMap::from([
            ("s".to_string(), StreamValue::S("x".into())),
            (
                "l".to_string(),
                StreamValue::L(vec![StreamValue::N("1.5".into()), StreamValue::Null(true)]),
            ),
        ]);
        let item = convert_item(m).expect("known types");
        let mut out = String::new();
        write_sorted(&mut out, &item);
        assert_eq!(
            out,
            r#"{"l":{"L":[{"N":"1.5"},{"NULL":true}]},"s":{"S":"x"}}"#
        );
    }
}
