//! RDS IAM authentication: the password of each new connection is a fresh auth token, a
//! SigV4-presigned `connect` request for `host:port` and the database user (service
//! `rds-db`, valid 15 minutes), signed with the credentials of the standard AWS
//! environment — the token boto3's `generate_db_auth_token` makes, byte for byte.
//!
//! Input: host, port, user, region, credentials, time. Output: the token (a secret: it is
//! never logged).

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// Credentials to sign with.
#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials { .. }")
    }
}

/// How long a token is valid (what RDS accepts at most).
const EXPIRES_SECS: u32 = 900;

/// The auth token for `user` at `host:port` in `region`, signed at `now`.
#[must_use]
pub fn auth_token(
    host: &str,
    port: u16,
    user: &str,
    region: &str,
    creds: &Credentials,
    now: SystemTime,
) -> String {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (date, stamp) = amz_date(secs);
    let scope = format!("{date}/{region}/rds-db/aws4_request");
    let mut params: Vec<(String, String)> = vec![
        ("Action".into(), "connect".into()),
        ("DBUser".into(), encode(user)),
        ("X-Amz-Algorithm".into(), "AWS4-HMAC-SHA256".into()),
        (
            "X-Amz-Credential".into(),
            encode(&format!("{}/{scope}", creds.access_key_id)),
        ),
        ("X-Amz-Date".into(), stamp.clone()),
        ("X-Amz-Expires".into(), EXPIRES_SECS.to_string()),
        ("X-Amz-SignedHeaders".into(), "host".into()),
    ];
    if let Some(t) = &creds.session_token {
        params.push(("X-Amz-Security-Token".into(), encode(t)));
    }
    let query = |ps: &[(String, String)]| {
        ps.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    };
    let mut sorted = params.clone();
    sorted.sort();
    let canonical = format!(
        "GET\n/\n{}\nhost:{host}:{port}\n\nhost\n{}",
        query(&sorted),
        hex(&Sha256::digest(b""))
    );
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{}",
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let key = [date.as_str(), region, "rds-db", "aws4_request"]
        .iter()
        .fold(
            format!("AWS4{}", creds.secret_access_key).into_bytes(),
            |k, part| hmac(&k, part.as_bytes()),
        );
    let signature = hex(&hmac(&key, to_sign.as_bytes()));
    format!(
        "{host}:{port}/?{}&X-Amz-Signature={signature}",
        query(&params)
    )
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // An HMAC takes a key of any length: new_from_slice cannot fail.
    let Ok(mut m) = Hmac::<Sha256>::new_from_slice(key) else {
        return Vec::new();
    };
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Percent-encoding as SigV4 wants it: everything but `A-Z a-z 0-9 - . _ ~`.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// (`YYYYMMDD`, `YYYYMMDDTHHMMSSZ`) of a Unix time, UTC.
fn amz_date(secs: u64) -> (String, String) {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let date = format!("{y:04}{m:02}{d:02}");
    let stamp = format!(
        "{date}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    (date, stamp)
}

/// The region of an RDS endpoint name (`db.abc.eu-west-1.rds.amazonaws.com`), if it is one.
#[must_use]
pub fn region_of_host(host: &str) -> Option<String> {
    if !host.ends_with(".amazonaws.com") && !host.ends_with(".amazonaws.com.cn") {
        return None;
    }
    let parts: Vec<&str> = host.split('.').collect();
    let at = parts.iter().position(|p| *p == "rds")?;
    at.checked_sub(1)
        .and_then(|i| parts.get(i))
        .map(|r| (*r).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_calendar_dates() {
        assert_eq!(amz_date(0), ("19700101".into(), "19700101T000000Z".into()));
        assert_eq!(
            amz_date(1_709_164_800 + 3_723),
            ("20240229".into(), "20240229T010203Z".into())
        );
        assert_eq!(
            region_of_host("db.abc123.eu-west-1.rds.amazonaws.com").as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(region_of_host("localhost"), None);
    }
}
