//! AWS clients from the standard AWS environment (`AWS_ENDPOINT_URL[_S3|_DYNAMODB]`,
//! `AWS_REGION`, `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, profiles), so the same binary
//! talks to AWS or to a local emulator. S3 uses path-style addressing when an endpoint is
//! given (a local emulator) or `DDB2PG_S3_PATH_STYLE=1`.
//!
//! Our own retry loops (with counts for the summary) sit above the SDK for scans and
//! object reads, so the SDK's retries are kept short for those calls.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
use tokio::sync::OnceCell;

static SHARED: OnceCell<aws_config::SdkConfig> = OnceCell::const_new();

/// The SDK configuration, loaded once per process.
pub async fn sdk_config() -> &'static aws_config::SdkConfig {
    SHARED
        .get_or_init(|| async {
            aws_config::defaults(BehaviorVersion::latest())
                .timeout_config(
                    TimeoutConfig::builder()
                        .connect_timeout(Duration::from_secs(5))
                        .read_timeout(Duration::from_secs(60))
                        .build(),
                )
                // Retries of our own (counted, with backoff and jitter) wrap the calls that
                // move data; the SDK still retries once on its own for the rest.
                .retry_config(RetryConfig::standard().with_max_attempts(2))
                .load()
                .await
        })
        .await
}

fn env_set(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.trim().is_empty())
}

/// An S3 client; path-style when an endpoint is configured (emulators and most S3
/// look-alikes need it) or when `DDB2PG_S3_PATH_STYLE=1`.
pub async fn s3() -> aws_sdk_s3::Client {
    let conf = sdk_config().await;
    let path_style = env_set("AWS_ENDPOINT_URL_S3")
        || env_set("AWS_ENDPOINT_URL")
        || std::env::var("DDB2PG_S3_PATH_STYLE").is_ok_and(|v| v == "1" || v == "true");
    let s3 = aws_sdk_s3::config::Builder::from(conf)
        .force_path_style(path_style)
        .build();
    aws_sdk_s3::Client::from_conf(s3)
}

/// A DynamoDB client.
pub async fn dynamodb() -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(sdk_config().await)
}

/// One line for an SDK error: the service's code and message where there is one, else the
/// error chain (connection refused, timeout…).
pub fn describe<E, R>(e: &aws_sdk_dynamodb::error::SdkError<E, R>) -> String
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    use aws_sdk_dynamodb::error::SdkError;
    match e {
        SdkError::ServiceError(se) => {
            let err = se.err();
            match (err.code(), err.message()) {
                (Some(c), Some(m)) => format!("{c}: {m}"),
                (Some(c), None) => c.to_string(),
                _ => chain(err),
            }
        }
        other => chain(other),
    }
}

/// The error and its sources, joined by `: `.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = inner.source();
    }
    s
}
