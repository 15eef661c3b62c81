//! A target URL resolved the libpq way: the URL (or `key=value` string) first, then the
//! libpq environment (`PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGDATABASE`,
//! `PGSSLMODE`, `PGSSLROOTCERT`, `PGAPPNAME`, `PGCONNECT_TIMEOUT`), then the password file
//! (`PGPASSFILE`, default `~/.pgpass`, with libpq's matching and its refusal of a file
//! others can read), then libpq's defaults — so a user's existing `psql` setup just works.
//! Also the settings every connection of the tool runs with: `application_name = ddb2pg`,
//! TCP keepalives, a connect timeout, `statement_timeout = 0`.
//!
//! Input: the URL text and an environment lookup. Output: a [`Resolved`] target, or a
//! message naming the setting that is wrong (never its secret).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_postgres::config::Host;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Result<SslMode, String> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(format!(
                    "sslmode `{other}` is not one of disable, allow, prefer, require, verify-ca, verify-full"
                ))
            }
        })
    }

    /// As libpq writes it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Where the certificates that vouch for the server come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Roots {
    /// None: the connection is encrypted, the server not checked (`prefer`, `require`).
    Unchecked,
    /// A PEM file (`sslrootcert`, or `~/.postgresql/root.crt`).
    File(PathBuf),
    /// The operating system's store (`sslrootcert=system`).
    System,
}

/// A target ready to connect to.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Everything tokio-postgres takes (its own `sslmode` is set per attempt).
    pub config: tokio_postgres::Config,
    pub ssl_mode: SslMode,
    pub roots: Roots,
    /// Checks the host name against the certificate (`verify-full`).
    pub check_host: bool,
    /// `host:port/db` for messages, no credentials.
    pub target: String,
    /// The whole connection may take this long (TCP, TLS, authentication).
    pub connect_timeout: Duration,
    /// Warnings found on the way (a password file others can read), said once per process.
    pub warnings: Vec<String>,
    /// The password of each connection is a fresh RDS IAM token.
    pub iam: bool,
}

/// When neither the URL nor `PGCONNECT_TIMEOUT` says: an unreachable host fails in
/// seconds, not after the operating system's minutes.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Parameters tokio-postgres does not know, handled here (and taken out of the URL).
const OURS: &[&str] = &[
    "sslmode",
    "sslrootcert",
    "passfile",
    "sslcert",
    "sslkey",
    "sslcrl",
    "sslpassword",
    "auth",
];

/// `url` with `auth=rds-iam` (how `[target] auth = "rds-iam"` reaches every connection;
/// it may also be written in the URL).
#[must_use]
pub fn with_iam(url: &str) -> String {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}auth=rds-iam")
    } else {
        format!("{url} auth=rds-iam")
    }
}

/// A URL whose hosts name no port, with `port` after each (how `PGPORT` fills a URL).
fn with_default_port(url: &str, port: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let after = &url[start..];
    let host_start = after
        .find(['@', '/'])
        .filter(|&i| after.as_bytes()[i] == b'@')
        .map_or(start, |i| start + i + 1);
    let host_end = url[host_start..]
        .find(['/', '?'])
        .map_or(url.len(), |i| host_start + i);
    let hosts = &url[host_start..host_end];
    if hosts.is_empty()
        || hosts
            .split(',')
            .any(|h| h.rsplit_once(']').map_or(h, |(_, rest)| rest).contains(':'))
    {
        return url.to_string();
    }
    let with: Vec<String> = hosts.split(',').map(|h| format!("{h}:{port}")).collect();
    format!(
        "{}{}{}",
        &url[..host_start],
        with.join(","),
        &url[host_end..]
    )
}

/// Resolves `url` with `env` as the environment.
///
/// # Errors
/// A message naming the setting that is wrong.
pub fn resolve(url: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Resolved, String> {
    let url = url.trim();
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    if !is_url && (url.contains("://") || url.starts_with("postgres")) {
        // Never echoed: it may hold a password.
        return Err("not a libpq URL: it must start with postgresql:// or postgres:// (or be key=value pairs)".into());
    }
    let (mut rest, ours) = split_params(url)?;
    // A URL host without a port takes PGPORT (tokio-postgres would say 5432).
    if let Some(port) = env("PGPORT").filter(|p| !p.is_empty()) {
        if is_url {
            rest = with_default_port(&rest, port.trim());
        }
    }
    let mut config: tokio_postgres::Config = rest.parse().map_err(|e: tokio_postgres::Error| {
        let e = e.to_string();
        // tokio-postgres names an unknown option by its text, which may be a password.
        if e.contains("unknown option") {
            "invalid connection URL: an unknown parameter".to_string()
        } else {
            format!("invalid connection URL: {e}")
        }
    })?;
    // The last of a repeated parameter wins, as in libpq.
    let get = |k: &str| {
        ours.iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    for unsupported in ["sslcert", "sslkey", "sslcrl", "sslpassword"] {
        if get(unsupported).is_some() {
            return Err(format!("{unsupported} (client certificates) is not supported; connect with a password or auth = \"rds-iam\""));
        }
    }
    let iam = match get("auth").as_deref() {
        None | Some("password") => false,
        Some("rds-iam") => true,
        Some(other) => return Err(format!("auth `{other}` is not one of password, rds-iam")),
    };
    let env_nonempty = |k: &str| env(k).filter(|v| !v.is_empty());
    if config.get_hosts().is_empty() {
        match env_nonempty("PGHOST") {
            Some(h) => {
                for one in h.split(',') {
                    config.host(one.trim());
                }
            }
            None => {
                config.host("localhost");
            }
        }
    }
    if config.get_ports().is_empty() {
        if let Some(p) = env_nonempty("PGPORT") {
            let port: u16 = p
                .trim()
                .parse()
                .map_err(|_| format!("PGPORT `{p}` is not a port number"))?;
            config.port(port);
        }
    }
    if config.get_user().is_none() {
        let user = env_nonempty("PGUSER")
            .or_else(|| env_nonempty("USER"))
            .or_else(|| env_nonempty("LOGNAME"))
            .ok_or("no user: set it in the URL (postgresql://user@host/db) or PGUSER")?;
        config.user(user);
    }
    if config.get_dbname().is_none() {
        let db = env_nonempty("PGDATABASE").or_else(|| config.get_user().map(str::to_string));
        if let Some(db) = db {
            config.dbname(db);
        }
    }
    if config.get_application_name().is_none() {
        config.application_name(env_nonempty("PGAPPNAME").unwrap_or_else(|| "ddb2pg".into()));
    }
    let connect_timeout = match config.get_connect_timeout() {
        Some(t) => *t,
        None => match env_nonempty("PGCONNECT_TIMEOUT") {
            Some(t) => {
                let secs: u64 = t
                    .trim()
                    .parse()
                    .map_err(|_| format!("PGCONNECT_TIMEOUT `{t}` is not a number of seconds"))?;
                // 0 is libpq's "no limit".
                match secs {
                    0 => Duration::from_secs(365 * 24 * 3600),
                    s => Duration::from_secs(s.max(2)),
                }
            }
            None => DEFAULT_CONNECT_TIMEOUT,
        },
    };
    config.connect_timeout(connect_timeout);
    // Keepalives well under a load balancer's idle cut (an index build of many minutes
    // sends nothing), unless the URL chose.
    if config.get_keepalives() && config.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(60));
        config.keepalives_interval(Duration::from_secs(10));
        config.keepalives_retries(6);
    }
    // Unacknowledged data (a COPY into a frozen network) or unanswered keepalives give up
    // after this, instead of the kernel's 15 minutes of retransmissions.
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(Duration::from_secs(120));
    }
    // A server default must not cut a long COPY or index build.
    let options = match config.get_options() {
        Some(o) if !o.is_empty() => format!("{o} -c statement_timeout=0"),
        _ => "-c statement_timeout=0".to_string(),
    };
    config.options(options);

    let mut warnings = Vec::new();
    if iam && config.get_password().is_some() {
        return Err(
            "auth = \"rds-iam\" makes each connection's password: the URL must not hold one".into(),
        );
    }
    if config.get_password().is_none() && !iam {
        if let Some(p) = env_nonempty("PGPASSWORD") {
            config.password(p);
        } else {
            let file = get("passfile")
                .or_else(|| env_nonempty("PGPASSFILE"))
                .map(PathBuf::from)
                .or_else(|| env_nonempty("HOME").map(|h| Path::new(&h).join(".pgpass")));
            if let Some(file) = file {
                let host = match config.get_hosts().first() {
                    Some(Host::Tcp(h)) => h.clone(),
                    Some(Host::Unix(_)) | None => "localhost".into(),
                };
                let port = config.get_ports().first().copied().unwrap_or(5432);
                let db = config.get_dbname().unwrap_or_default().to_string();
                let user = config.get_user().unwrap_or_default().to_string();
                match password_from_file(&file, &host, port, &db, &user) {
                    Ok(Some(p)) => {
                        config.password(p);
                    }
                    Ok(None) => {}
                    Err(w) => warnings.push(w),
                }
            }
        }
    }

    let mode_text = get("sslmode").or_else(|| env_nonempty("PGSSLMODE"));
    let root_text = get("sslrootcert").or_else(|| env_nonempty("PGSSLROOTCERT"));
    let system = root_text.as_deref() == Some("system");
    let mut ssl_mode = match &mode_text {
        Some(m) => SslMode::parse(m)?,
        None if system => SslMode::VerifyFull,
        // A token never goes in the clear, not even after a refused TLS request.
        None if iam => SslMode::Require,
        None => SslMode::Prefer,
    };
    if system && ssl_mode != SslMode::VerifyFull {
        return Err(format!(
            "sslrootcert=system needs sslmode=verify-full (it is {}): trusting the system's roots without checking the host name would accept any certificate they sign",
            ssl_mode.as_str()
        ));
    }
    let default_root = env_nonempty("HOME").map(|h| Path::new(&h).join(".postgresql/root.crt"));
    let roots = match (&root_text, ssl_mode) {
        (_, SslMode::Disable) => Roots::Unchecked,
        (Some(r), _) if r == "system" => Roots::System,
        (Some(r), SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull) => {
            Roots::File(PathBuf::from(r))
        }
        (Some(_), _) => Roots::Unchecked,
        (None, SslMode::VerifyCa | SslMode::VerifyFull) => match default_root {
            Some(p) if p.exists() => Roots::File(p),
            p => {
                return Err(format!(
                    "sslmode={} needs the CA that signed the server's certificate: set sslrootcert=FILE (for RDS, the global bundle), or sslrootcert=system for the system's roots{}",
                    ssl_mode.as_str(),
                    p.map(|p| format!(" (the default {} does not exist)", p.display())).unwrap_or_default()
                ))
            }
        },
        // As libpq: `require` with a root certificate file present checks the chain.
        (None, SslMode::Require) => match default_root {
            Some(p) if p.exists() => Roots::File(p),
            _ => Roots::Unchecked,
        },
        (None, _) => Roots::Unchecked,
    };
    if iam
        && matches!(
            ssl_mode,
            SslMode::Disable | SslMode::Allow | SslMode::Prefer
        )
    {
        return Err(format!("auth = \"rds-iam\" needs TLS (RDS refuses a token sent in the clear): sslmode={} is refused; use verify-full with the RDS CA bundle", ssl_mode.as_str()));
    }
    if ssl_mode == SslMode::Require && matches!(roots, Roots::File(_)) {
        ssl_mode = SslMode::VerifyCa;
    }
    let target = describe(&config);
    Ok(Resolved {
        check_host: ssl_mode == SslMode::VerifyFull,
        config,
        ssl_mode,
        roots,
        target,
        connect_timeout,
        warnings,
        iam,
    })
}

/// `host:port/db` of a config, without credentials.
#[must_use]
pub fn describe(c: &tokio_postgres::Config) -> String {
    let host = c
        .get_hosts()
        .first()
        .map(|h| match h {
            Host::Tcp(s) => s.clone(),
            Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = c.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", c.get_dbname().unwrap_or(""))
}

/// The URL without the parameters handled here, and those parameters (decoded).
fn split_params(url: &str) -> Result<(String, Vec<(String, String)>), String> {
    let mut ours = Vec::new();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        // The query starts after the user info (a password may hold a `?`): as libpq,
        // the user info ends at the first `@` before any `/`.
        let start = url.find("://").map_or(0, |i| i + 3);
        let after = &url[start..];
        let auth_end = after
            .find(['@', '/'])
            .filter(|&i| after.as_bytes()[i] == b'@')
            .map_or(start, |i| start + i + 1);
        let Some(q) = url[auth_end..].find('?').map(|i| auth_end + i) else {
            return Ok((url.to_string(), ours));
        };
        let (base, query) = (&url[..q], &url[q + 1..]);
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let key = percent_decode(k)?;
            if OURS.contains(&key.as_str()) {
                ours.push((key, percent_decode(v)?));
            } else {
                kept.push(pair);
            }
        }
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        Ok((rest, ours))
    } else {
        // `key=value` pairs separated by spaces (values may be single-quoted).
        let mut kept = Vec::new();
        for (k, v) in keyword_pairs(url)? {
            if OURS.contains(&k.as_str()) {
                ours.push((k, v));
            } else {
                kept.push(format!(
                    "{k}='{}'",
                    v.replace('\\', "\\\\").replace('\'', "\\'")
                ));
            }
        }
        Ok((kept.join(" "), ours))
    }
}

fn keyword_pairs(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(
                "connection string: a word has no `=value` (a URL starts with postgresql://)"
                    .into(),
            );
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => {
                        return Err(format!(
                            "connection string: the value of `{key}` has no closing quote"
                        ))
                    }
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                if c == '\\' {
                    chars.next();
                    value.extend(chars.next());
                    continue;
                }
                value.push(c);
                chars.next();
            }
        }
        out.push((key, value));
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .ok_or("a `%` in the URL is not followed by two hex digits")?;
            out.push(
                u8::from_str_radix(hex, 16)
                    .map_err(|_| "a `%` in the URL is not followed by two hex digits")?,
            );
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "a URL parameter is not UTF-8 once decoded".to_string())
}

/// The password for (host, port, db, user) in a libpq password file: the first line that
/// matches, `*` matching anything, `\:` and `\\` escaped. `Err` is a warning: the file
/// lets group or others read it (libpq ignores it then), or cannot be read.
fn password_from_file(
    file: &Path,
    host: &str,
    port: u16,
    db: &str,
    user: &str,
) -> Result<Option<String>, String> {
    let Ok(meta) = std::fs::metadata(file) else {
        return Ok(None);
    };
    if !meta.is_file() {
        return Ok(None);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(format!(
                "password file {} has group or world access (permissions should be u=rw, 0600, or less): it is not used",
                file.display()
            ));
        }
    }
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("password file {}: {e}", file.display()))?;
    let port = port.to_string();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = pgpass_fields(line);
        let (Some(h), Some(p), Some(d), Some(u), Some(pw)) = (
            fields.first(),
            fields.get(1),
            fields.get(2),
            fields.get(3),
            fields.get(4),
        ) else {
            continue;
        };
        let fits = |(pattern, star): &(String, bool), value: &str| *star || pattern == value;
        if fits(h, host) && fits(p, &port) && fits(d, db) && fits(u, user) {
            return Ok(Some(pw.0.clone()));
        }
    }
    Ok(None)
}

/// A password file line's fields, each with whether it is a bare `*` (an escaped `\*` is
/// a literal star); a field ends at an unescaped `:`, as in libpq.
fn pgpass_fields(line: &str) -> Vec<(String, bool)> {
    let mut fields = vec![(String::new(), false, false)];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        let Some(f) = fields.last_mut() else { break };
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    f.0.push(n);
                    f.2 = true;
                }
            }
            ':' => fields.push((String::new(), false, false)),
            c => f.0.push(c),
        }
    }
    fields
        .into_iter()
        .map(|(text, _, escaped)| {
            let star = text == "*" && !escaped;
            (text, star)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn with(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn the_environment_fills_what_the_url_leaves_out() {
        let env = with(&[
            ("PGHOST", "db.internal"),
            ("PGPORT", "6543"),
            ("PGUSER", "loader"),
            ("PGDATABASE", "shop"),
            ("PGPASSWORD", "s3cret"),
            ("PGAPPNAME", "cutover"),
            ("PGCONNECT_TIMEOUT", "7"),
        ]);
        let r = resolve("postgresql://", &env).expect("resolves");
        assert_eq!(r.target, "db.internal:6543/shop");
        assert_eq!(r.config.get_user(), Some("loader"));
        assert_eq!(r.config.get_password(), Some(&b"s3cret"[..]));
        assert_eq!(r.config.get_application_name(), Some("cutover"));
        assert_eq!(r.connect_timeout, Duration::from_secs(7));
        assert_eq!(r.ssl_mode, SslMode::Prefer);
        assert!(r
            .config
            .get_options()
            .is_some_and(|o| o.contains("statement_timeout=0")));
        // The URL wins over the environment.
        let r = resolve(
            "postgresql://me:pw@h:1/d?application_name=x&sslmode=require",
            &env,
        )
        .expect("resolves");
        assert_eq!(r.target, "h:1/d");
        assert_eq!(r.config.get_password(), Some(&b"pw"[..]));
        assert_eq!(r.config.get_application_name(), Some("x"));
        assert_eq!(
            (r.ssl_mode, &r.roots),
            (SslMode::Require, &Roots::Unchecked)
        );
    }

    #[test]
    fn sslmode_and_sslrootcert_as_libpq_reads_them() {
        let env = with(&[("USER", "u"), ("HOME", "/nonexistent")]);
        let r = resolve(
            "postgresql://h/d?sslmode=verify-full&sslrootcert=%2Ftmp%2Fca.pem",
            &env,
        )
        .expect("ok");
        assert_eq!((r.ssl_mode, r.check_host), (SslMode::VerifyFull, true));
        assert_eq!(r.roots, Roots::File("/tmp/ca.pem".into()));
        let r = resolve(
            "host=h dbname=d sslmode=require sslrootcert=/tmp/ca.pem",
            &env,
        )
        .expect("ok");
        assert_eq!(
            r.ssl_mode,
            SslMode::VerifyCa,
            "require with a root file checks the chain"
        );
        let e = resolve("postgresql://h/d?sslmode=verify-ca", &env).expect_err("needs a root");
        assert!(e.contains("sslrootcert"), "{e}");
        let r = resolve("postgresql://h/d?sslrootcert=system", &env).expect("ok");
        assert_eq!(
            (r.ssl_mode, &r.roots),
            (SslMode::VerifyFull, &Roots::System)
        );
        assert!(resolve("postgresql://h/d?sslrootcert=system&sslmode=require", &env).is_err());
        assert!(resolve("postgresql://h/d?sslmode=maybe", &env)
            .expect_err("bad")
            .contains("sslmode `maybe`"));
    }

    #[test]
    fn what_a_review_found_libpq_does_otherwise() {
        let env = with(&[("USER", "u"), ("PGPORT", "6543"), ("PGPASSWORD", "")]);
        let r = resolve("postgresql://db.internal/shop", &env).expect("ok");
        assert_eq!(
            r.target, "db.internal:6543/shop",
            "PGPORT fills a URL host without a port"
        );
        assert_eq!(
            r.config.get_password(),
            None,
            "an empty PGPASSWORD is no password"
        );
        let r = resolve("postgresql://db.internal:7/shop", &env).expect("ok");
        assert_eq!(r.target, "db.internal:7/shop");
        let r = resolve(
            "postgresql://u:p%3Fss@h/d?sslmode=disable&sslmode=require",
            &env,
        )
        .expect("ok");
        assert_eq!(
            r.ssl_mode,
            SslMode::Require,
            "the last repeated parameter wins"
        );
        let r = resolve("postgresql://u:p?ss@h/d?sslmode=require", &env).expect("ok");
        assert_eq!(
            (r.ssl_mode, r.config.get_password()),
            (SslMode::Require, Some(&b"p?ss"[..]))
        );
        for bad in [
            " postgresql:/u:secretpw@h/d",
            "postgresql:/u:secretpw@h/d?sslmode=require",
        ] {
            let e = resolve(bad, &env).expect_err("malformed");
            assert!(!e.contains("secretpw"), "{e}");
        }
        assert_eq!(pgpass_fields("h:p:d:u:pw:x")[4].0, "pw");
        assert!(
            !pgpass_fields("\\*:p:d:u:pw")[0].1,
            "an escaped star is a star"
        );
        assert!(pgpass_fields("*:p:d:u:pw")[0].1);
    }

    #[test]
    fn rds_iam_takes_no_password_and_no_plain_connection() {
        let env = with(&[("USER", "u"), ("PGPASSWORD", "ignored")]);
        let r = resolve(
            &with_iam("postgresql://loader@db.x.eu-west-1.rds.amazonaws.com/d?sslmode=require"),
            &env,
        )
        .expect("ok");
        assert!(r.iam);
        assert_eq!(
            r.config.get_password(),
            None,
            "the token is made per connection"
        );
        assert!(resolve(&with_iam("postgresql://loader:pw@h/d"), &env).is_err());
        assert!(
            resolve(&with_iam("postgresql://loader@h/d?sslmode=disable"), &env)
                .expect_err("plain")
                .contains("needs TLS")
        );
        assert!(
            resolve(&with_iam("host=h user=loader"), &env)
                .expect("keyword form")
                .iam
        );
    }

    #[test]
    fn the_password_file_matches_as_libpq_and_is_refused_when_others_can_read_it() {
        let dir = std::env::temp_dir().join(format!("ddb2pg-pgpass-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("pgpass");
        std::fs::write(
            &file,
            "# comment\nother:*:*:*:no\nh:5432:d:u:pa\\:ss\\\\\n*:*:*:*:fallback\n",
        )
        .expect("write");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        let env = with(&[("USER", "u"), ("PGPASSFILE", file.to_str().expect("utf8"))]);
        let r = resolve("postgresql://u@h/d", &env).expect("ok");
        assert_eq!(r.config.get_password(), Some(&b"pa:ss\\"[..]));
        let r = resolve("postgresql://x@h/d", &env).expect("ok");
        assert_eq!(r.config.get_password(), Some(&b"fallback"[..]));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
            let r = resolve("postgresql://u@h/d", &env).expect("ok");
            assert_eq!(r.config.get_password(), None);
            assert!(
                r.warnings[0].contains("group or world access"),
                "{:?}",
                r.warnings
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
