//! A small HTTP/1.1 proxy on loopback that stands between the real AWS SDK (inside the
//! `ddb2pg` process) and an emulator, and injects the faults the emulators never produce:
//! throttling and 5xx answers, `UnprocessedItems`, and a response body cut mid-stream.
//!
//! Each request is forwarded on a fresh upstream connection; the rule sees the method,
//! path, the `X-Amz-Target` operation and a per-operation sequence number, and decides.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use serde_json::Value;

/// A request as the rule sees it.
pub struct Req {
    pub method: String,
    pub path: String,
    /// `X-Amz-Target` without the service prefix (`Scan`, `BatchWriteItem`…), else
    /// `METHOD` for S3.
    pub op: String,
    /// 1-based count of requests of this `op` so far (this one included).
    pub seq: u64,
    pub has_range: bool,
}

/// What to do with a request.
pub enum Action {
    Forward,
    /// Answer without asking upstream.
    Reply {
        status: u16,
        content_type: &'static str,
        body: String,
    },
    /// Forward, then hand out only `keep` bytes of the body and close the connection.
    CutBody {
        keep: usize,
    },
    /// BatchWriteItem: forward only the first half of each table's requests and answer
    /// that the rest is unprocessed.
    Unprocess,
}

type Rule = dyn Fn(&Req) -> Action + Send + Sync;

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// Faults injected, by kind.
    pub injected: Arc<Mutex<HashMap<String, u64>>>,
}

impl FaultProxy {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn injected(&self, kind: &str) -> u64 {
        self.injected
            .lock()
            .expect("lock")
            .get(kind)
            .copied()
            .unwrap_or(0)
    }

    /// Starts a proxy to `upstream` (`127.0.0.1:8000`) applying `rule`.
    pub fn start(
        upstream: &str,
        rule: impl Fn(&Req) -> Action + Send + Sync + 'static,
    ) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let injected = Arc::new(Mutex::new(HashMap::new()));
        let rule: Arc<Rule> = Arc::new(rule);
        let upstream = upstream.to_string();
        let seqs = Arc::new(Mutex::new(HashMap::<String, u64>::new()));
        {
            let stop = stop.clone();
            let injected = injected.clone();
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            let _ = client.set_nonblocking(false);
                            let (rule, upstream, seqs, injected) = (
                                rule.clone(),
                                upstream.clone(),
                                seqs.clone(),
                                injected.clone(),
                            );
                            thread::spawn(move || {
                                let _ = serve(client, &upstream, &*rule, &seqs, &injected);
                            });
                        }
                        Err(_) => thread::sleep(std::time::Duration::from_millis(5)),
                    }
                }
            });
        }
        FaultProxy {
            addr,
            stop,
            injected,
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Reads one HTTP message head (up to the blank line): start line and headers.
/// Header names and values, in order.
type Headers = Vec<(String, String)>;

fn read_head(r: &mut impl BufRead) -> std::io::Result<Option<(String, Headers)>> {
    let mut start = String::new();
    if r.read_line(&mut start)? == 0 {
        return Ok(None);
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    Ok(Some((start.trim_end().to_string(), headers)))
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn write_message(
    w: &mut impl Write,
    start: &str,
    headers: &[(String, String)],
    body: &[u8],
    declared_len: Option<usize>,
) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(body.len() + 512);
    out.extend_from_slice(start.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (k, v) in headers {
        if k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("connection") {
            continue;
        }
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    if let Some(n) = declared_len {
        out.extend_from_slice(format!("Content-Length: {n}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    w.write_all(&out)?;
    w.flush()
}

fn count(injected: &Mutex<HashMap<String, u64>>, kind: &str) {
    *injected
        .lock()
        .expect("lock")
        .entry(kind.to_string())
        .or_default() += 1;
}

fn serve(
    client: TcpStream,
    upstream: &str,
    rule: &Rule,
    seqs: &Mutex<HashMap<String, u64>>,
    injected: &Mutex<HashMap<String, u64>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut writer = client;
    loop {
        let Some((start, headers)) = read_head(&mut reader)? else {
            return Ok(());
        };
        let len: usize = header(&headers, "content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        reader.read_exact(&mut body)?;
        let mut parts = start.split(' ');
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let op = header(&headers, "x-amz-target")
            .and_then(|t| t.rsplit('.').next())
            .map_or_else(|| method.clone(), str::to_string);
        let seq = {
            let mut s = seqs.lock().expect("lock");
            let e = s.entry(op.clone()).or_default();
            *e += 1;
            *e
        };
        let req = Req {
            method: method.clone(),
            path,
            op,
            seq,
            has_range: header(&headers, "range").is_some(),
        };
        match rule(&req) {
            Action::Reply {
                status,
                content_type,
                body,
            } => {
                count(injected, &format!("reply-{status}"));
                let reason = if status >= 500 {
                    "Error"
                } else {
                    "Bad Request"
                };
                write_message(
                    &mut writer,
                    &format!("HTTP/1.1 {status} {reason}"),
                    &[("Content-Type".into(), content_type.into())],
                    body.as_bytes(),
                    Some(body.len()),
                )?;
            }
            Action::Forward => {
                let (rs, rh, rb) = forward(upstream, &start, &headers, &body, &method)?;
                write_message(&mut writer, &rs, &rh, &rb, Some(rb.len()))?;
            }
            Action::CutBody { keep } => {
                let (rs, rh, rb) = forward(upstream, &start, &headers, &body, &method)?;
                if rb.len() > keep && rs.contains(" 20") {
                    count(injected, "cut");
                    // Declare the whole length, send part of it, and hang up.
                    write_message(&mut writer, &rs, &rh, &rb[..keep], Some(rb.len()))?;
                    let _ = writer.shutdown(std::net::Shutdown::Both);
                    return Ok(());
                }
                write_message(&mut writer, &rs, &rh, &rb, Some(rb.len()))?;
            }
            Action::Unprocess => {
                let mut doc: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let mut left = serde_json::Map::new();
                let mut any = false;
                if let Some(tables) = doc.get_mut("RequestItems").and_then(Value::as_object_mut) {
                    for (name, reqs) in tables.iter_mut() {
                        if let Some(a) = reqs.as_array_mut() {
                            if a.len() > 1 {
                                let rest = a.split_off(a.len() / 2);
                                left.insert(name.clone(), Value::Array(rest));
                                any = true;
                            }
                        }
                    }
                }
                if !any {
                    let (rs, rh, rb) = forward(upstream, &start, &headers, &body, &method)?;
                    write_message(&mut writer, &rs, &rh, &rb, Some(rb.len()))?;
                    continue;
                }
                let new_body = serde_json::to_vec(&doc).expect("json");
                let (rs, rh, rb) = forward(upstream, &start, &headers, &new_body, &method)?;
                if !rs.contains(" 200") {
                    write_message(&mut writer, &rs, &rh, &rb, Some(rb.len()))?;
                    continue;
                }
                count(injected, "unprocessed");
                let answer = serde_json::to_vec(&serde_json::json!({ "UnprocessedItems": left }))
                    .expect("json");
                write_message(
                    &mut writer,
                    "HTTP/1.1 200 OK",
                    &[("Content-Type".into(), "application/x-amz-json-1.0".into())],
                    &answer,
                    Some(answer.len()),
                )?;
            }
        }
    }
}

/// One request upstream on a fresh connection: (status line, headers, body).
fn forward(
    upstream: &str,
    start: &str,
    headers: &[(String, String)],
    body: &[u8],
    method: &str,
) -> std::io::Result<(String, Headers, Vec<u8>)> {
    let up = TcpStream::connect(upstream)?;
    let mut w = up.try_clone()?;
    let mut hs: Vec<(String, String)> = headers
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("connection"))
        .cloned()
        .collect();
    hs.push(("Connection".into(), "close".into()));
    let mut out = Vec::new();
    out.extend_from_slice(start.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (k, v) in &hs {
        if k.eq_ignore_ascii_case("content-length") {
            continue;
        }
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
    w.write_all(&out)?;
    w.flush()?;
    let mut r = BufReader::new(up);
    let (status, rh) = read_head(&mut r)?.ok_or_else(|| std::io::Error::other("no response"))?;
    let mut rb = Vec::new();
    let code: u16 = status
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    if method != "HEAD" && code != 204 && code != 304 {
        match header(&rh, "content-length").and_then(|v| v.parse::<usize>().ok()) {
            Some(n) => {
                rb.resize(n, 0);
                r.read_exact(&mut rb)?;
            }
            None => {
                r.read_to_end(&mut rb)?;
            }
        }
    }
    let rh = rh
        .into_iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("transfer-encoding"))
        .collect();
    Ok((status, rh, rb))
}

/// A throttling answer as DynamoDB gives it.
pub fn throttled() -> Action {
    Action::Reply {
        status: 400,
        content_type: "application/x-amz-json-1.0",
        body: r#"{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException","message":"The level of configured provisioned throughput for the table was exceeded (injected)"}"#.into(),
    }
}

/// A 500 as DynamoDB gives it.
pub fn server_error() -> Action {
    Action::Reply {
        status: 500,
        content_type: "application/x-amz-json-1.0",
        body: r#"{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"Internal server error (injected)"}"#.into(),
    }
}

/// S3's 503 SlowDown.
pub fn slow_down() -> Action {
    Action::Reply {
        status: 503,
        content_type: "application/xml",
        body: "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate (injected).</Message></Error>".into(),
    }
}
