//! `ddb2pg check`: the plan's latency targets, measured on the loaded target — each
//! `[[checks]]` query run with parameters drawn from its `params` query, its p50/p95/p99/max,
//! its plan's index use (a sequential scan of a big table called out), and whether it met
//! its `p95_ms`.
//!
//! Every check's SQL (and parameters' query) is prepared before any query runs: one that
//! does not prepare, or whose parameters do not match, stops the command (exit 2). The
//! sessions are read-only, with `search_path` set to the schema checked (`--schema
//! staging` times the rehearsal's tables). Parameters go as text, so a `params` column of
//! any type feeds a `$n` of any type PostgreSQL can read it as. `--clients N` runs the
//! executions on N connections at once (latency under load, not only alone); a few
//! untimed executions warm the cache first.
//!
//! Input: the config's checks, a schema, clients. Output: a [`CheckReport`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use serde::{Deserialize, Serialize};
use tokio_postgres::types::{to_sql_checked, Format, IsNull, ToSql, Type};
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::config::{CheckSpec, Config};
use crate::error::{pg_reason, Error, Result};
use crate::schema::quote_ident;
use crate::sink::connect;

/// Untimed executions before the timed ones (at most the runs asked).
pub const WARMUP: usize = 10;
/// A table of at least this many rows (PostgreSQL's estimate) read by a sequential scan
/// is called out.
pub const BIG_TABLE_ROWS: f64 = 10_000.0;
/// Parameter rows kept from a `params` query.
pub const MAX_PARAM_ROWS: usize = 100_000;

/// Options of one `check`.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    pub schema: String,
    /// Checks by name (all when empty).
    pub names: Vec<String>,
    /// Connections running the executions at once.
    pub clients: usize,
    /// Timed executions per check, instead of each check's `runs`.
    pub runs: Option<usize>,
}

/// One check's measurements.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckResult {
    pub name: String,
    pub sql: String,
    pub runs: usize,
    pub clients: usize,
    /// Parameter rows drawn (used in turn).
    pub param_rows: usize,
    pub rows_returned_mean: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
    /// Executions per second across the clients.
    pub per_second: f64,
    pub target_p95_ms: Option<f64>,
    /// `None` without a target.
    pub met: Option<bool>,
    /// The indexes the plan uses (for the first parameter row).
    pub indexes: Vec<String>,
    /// Big tables the plan reads by sequential scan: `table (≈N rows)`.
    pub big_seq_scans: Vec<String>,
    /// The plan, as `EXPLAIN` prints it.
    pub plan: Vec<String>,
}

/// What a `check` measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CheckReport {
    pub schema: String,
    pub clients: usize,
    pub checks: Vec<CheckResult>,
}

impl CheckReport {
    /// Checks whose p95 is above their target.
    #[must_use]
    pub fn missed(&self) -> Vec<&CheckResult> {
        self.checks
            .iter()
            .filter(|c| c.met == Some(false))
            .collect()
    }
}

/// A parameter sent as text: PostgreSQL reads it as whatever type the `$n` has.
#[derive(Debug, Clone)]
struct TextParam(Option<String>);

impl ToSql for TextParam {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match &self.0 {
            None => Ok(IsNull::Yes),
            Some(s) => {
                out.extend_from_slice(s.as_bytes());
                Ok(IsNull::No)
            }
        }
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &Type) -> Format {
        Format::Text
    }

    to_sql_checked!();
}

/// A read-only session on `schema`.
async fn session(config: &Config, schema: &str) -> Result<Client> {
    let c = connect(&config.target.url).await?;
    c.batch_execute(&format!(
        "SET search_path TO {}; SET default_transaction_read_only = on",
        quote_ident(schema)
    ))
    .await
    .map_err(|e| Error::pg("check", "set up the session", &e))?;
    Ok(c)
}

/// The selected checks.
fn selected(config: &Config, names: &[String]) -> Result<Vec<CheckSpec>> {
    if config.checks.is_empty() {
        return Err(Error::Usage(format!(
            "{}: no [[checks]] declared (name, sql, params, p95_ms)",
            config.path.display()
        )));
    }
    if names.is_empty() {
        return Ok(config.checks.clone());
    }
    names
        .iter()
        .map(|n| {
            config
                .checks
                .iter()
                .find(|c| &c.name == n)
                .cloned()
                .ok_or_else(|| {
                    let known: Vec<&str> = config.checks.iter().map(|c| c.name.as_str()).collect();
                    Error::Usage(format!(
                        "--check {n}: no such check (declared: {})",
                        known.join(", ")
                    ))
                })
        })
        .collect()
}

/// Runs the checks.
///
/// # Errors
/// [`Error::Usage`] for a check that does not prepare or whose parameters do not fit
/// (before any query runs), or whose `params` query returns no row; PostgreSQL failing.
pub async fn check(config: &Config, opts: &CheckOptions) -> Result<CheckReport> {
    let checks = selected(config, &opts.names)?;
    let clients = opts.clients.max(1);
    let first = session(config, &opts.schema).await?;
    // Every statement prepared before any runs.
    for c in &checks {
        let stmt = first.prepare(&c.sql).await.map_err(|e| {
            Error::Usage(format!(
                "check `{}`: its sql does not prepare in schema {}: {}",
                c.name,
                opts.schema,
                pg_reason(&e)
            ))
        })?;
        let wanted = stmt.params().len();
        let given = match &c.params {
            None => 0,
            Some(p) => first
                .prepare(p)
                .await
                .map_err(|e| {
                    Error::Usage(format!(
                        "check `{}`: its params query does not prepare in schema {}: {}",
                        c.name,
                        opts.schema,
                        pg_reason(&e)
                    ))
                })?
                .columns()
                .len(),
        };
        if wanted != given {
            return Err(Error::Usage(format!(
                "check `{}`: its sql takes {wanted} parameter(s), {}",
                c.name,
                match &c.params {
                    None => "and no params query gives them".to_string(),
                    Some(_) => format!("its params query gives {given} column(s)"),
                }
            )));
        }
    }
    let mut sessions = vec![Arc::new(first)];
    for _ in 1..clients {
        sessions.push(Arc::new(session(config, &opts.schema).await?));
    }
    // Every check's parameters drawn before any is timed (a params query with no row
    // stops the command before).
    let mut drawn = Vec::new();
    for c in &checks {
        drawn.push(param_rows(&sessions[0], c).await?);
    }
    let mut out = Vec::new();
    for (c, params) in checks.iter().zip(drawn) {
        out.push(run_check(&sessions, c, params, opts.runs.unwrap_or(c.runs)).await?);
    }
    Ok(CheckReport {
        schema: opts.schema.clone(),
        clients,
        checks: out,
    })
}

/// The rows of a `params` query, as text.
async fn param_rows(c: &Client, check: &CheckSpec) -> Result<Vec<Vec<TextParam>>> {
    let Some(sql) = &check.params else {
        return Ok(vec![Vec::new()]);
    };
    let sql = format!(
        "SELECT * FROM ({}) AS params LIMIT {MAX_PARAM_ROWS}",
        sql.trim().trim_end_matches(';')
    );
    let msgs = c.simple_query(&sql).await.map_err(|e| {
        Error::pg(
            "check",
            &format!("draw the parameters of `{}`", check.name),
            &e,
        )
    })?;
    let rows: Vec<Vec<TextParam>> = msgs
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| TextParam(r.get(i).map(str::to_string)))
                    .collect(),
            ),
            _ => None,
        })
        .collect();
    if rows.is_empty() {
        return Err(Error::Usage(format!(
            "check `{}`: its params query returned no row (is the table loaded in this schema?)",
            check.name
        )));
    }
    Ok(rows)
}

fn as_params(row: &[TextParam]) -> Vec<&(dyn ToSql + Sync)> {
    row.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

async fn run_check(
    sessions: &[Arc<Client>],
    check: &CheckSpec,
    params: Vec<Vec<TextParam>>,
    runs: usize,
) -> Result<CheckResult> {
    let first = &sessions[0];
    let params = Arc::new(params);
    let (plan, indexes, big_seq_scans) = explain(first, check, &params[0]).await?;
    let failed =
        |e: tokio_postgres::Error| Error::pg("check", &format!("run `{}`", check.name), &e);
    let stmt = first.prepare(&check.sql).await.map_err(failed)?;
    for i in 0..WARMUP.min(runs) {
        first
            .query(&stmt, &as_params(&params[i % params.len()]))
            .await
            .map_err(failed)?;
    }
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for s in sessions {
        let (s, next, params, sql, name) = (
            s.clone(),
            next.clone(),
            params.clone(),
            check.sql.clone(),
            check.name.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let failed =
                |e: tokio_postgres::Error| Error::pg("check", &format!("run `{name}`"), &e);
            let stmt = s.prepare(&sql).await.map_err(failed)?;
            let mut times = Vec::new();
            let mut rows = 0u64;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= runs {
                    break;
                }
                let t = Instant::now();
                let got = s
                    .query(&stmt, &as_params(&params[i % params.len()]))
                    .await
                    .map_err(failed)?;
                times.push(t.elapsed().as_secs_f64() * 1e3);
                rows += got.len() as u64;
            }
            Ok::<_, Error>((times, rows))
        }));
    }
    let mut times = Vec::with_capacity(runs);
    let mut rows = 0u64;
    for t in tasks {
        let (t, r) = t
            .await
            .map_err(|e| Error::Internal(format!("a check client failed: {e}")))??;
        times.extend(t);
        rows += r;
    }
    let wall = started.elapsed().as_secs_f64();
    times.sort_by(f64::total_cmp);
    let p95 = percentile(&times, 0.95);
    Ok(CheckResult {
        name: check.name.clone(),
        sql: check.sql.clone(),
        runs: times.len(),
        clients: sessions.len(),
        param_rows: params.len(),
        rows_returned_mean: rows as f64 / times.len().max(1) as f64,
        p50_ms: percentile(&times, 0.5),
        p95_ms: p95,
        p99_ms: percentile(&times, 0.99),
        max_ms: times.last().copied().unwrap_or(0.0),
        mean_ms: times.iter().sum::<f64>() / times.len().max(1) as f64,
        per_second: times.len() as f64 / wall.max(1e-9),
        target_p95_ms: check.p95_ms,
        met: check.p95_ms.map(|t| p95 <= t),
        indexes,
        big_seq_scans,
        plan,
    })
}

/// The nearest-rank percentile of sorted samples.
#[must_use]
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The plan for one parameter row: its lines, the indexes it uses, the big tables it
/// scans sequentially.
async fn explain(
    c: &Client,
    check: &CheckSpec,
    row: &[TextParam],
) -> Result<(Vec<String>, Vec<String>, Vec<String>)> {
    let lines: Vec<String> = c
        .query(&format!("EXPLAIN {}", check.sql), &as_params(row))
        .await
        .map_err(|e| Error::pg("check", &format!("explain `{}`", check.name), &e))?
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect();
    let (indexes, seq) = plan_scans(&lines);
    let mut big = Vec::new();
    for rel in seq {
        let rows: Option<f32> = c
            .query_one(
                "SELECT reltuples FROM pg_class WHERE oid = to_regclass($1)",
                &[&rel],
            )
            .await
            .ok()
            .and_then(|r| r.try_get(0).ok());
        // reltuples is -1 before the first ANALYZE: the size then is its pages' worth.
        let rows = match rows {
            Some(r) if r >= 0.0 => f64::from(r),
            // Not found by that name (qualified elsewhere, quoted): nothing to call out.
            _ => c
                .query_one(
                    "SELECT COALESCE(pg_relation_size(to_regclass($1)) / 8192 * 50, 0)::float8",
                    &[&rel],
                )
                .await
                .ok()
                .and_then(|r| r.try_get::<_, f64>(0).ok())
                .unwrap_or(0.0),
        };
        if rows >= BIG_TABLE_ROWS {
            big.push(format!("{rel} (≈{rows:.0} rows)"));
        }
    }
    Ok((lines, indexes, big))
}

/// From `EXPLAIN` text: the indexes used, and the relations scanned sequentially.
#[must_use]
pub fn plan_scans(lines: &[String]) -> (Vec<String>, Vec<String>) {
    let mut indexes = Vec::new();
    let mut seq = Vec::new();
    let first_word = |s: &str| s.split_whitespace().next().unwrap_or("").to_string();
    for l in lines {
        let node = l.trim_start().trim_start_matches("->").trim_start();
        let node = node.strip_prefix("Parallel ").unwrap_or(node);
        if let Some(rest) = node.strip_prefix("Seq Scan on ") {
            seq.push(first_word(rest));
        } else if let Some(rest) = node.strip_prefix("Bitmap Index Scan on ") {
            indexes.push(first_word(rest));
        } else if let Some(at) = node
            .strip_prefix("Index Scan")
            .or_else(|| node.strip_prefix("Index Only Scan"))
        {
            if let Some((_, rest)) = at.split_once("using ") {
                indexes.push(first_word(rest));
            }
        }
    }
    indexes.dedup();
    seq.dedup();
    (indexes, seq)
}

#[cfg(test)]
mod tests {
    use super::{percentile, plan_scans};

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.95), 95.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&[7.0], 0.95), 7.0);
        assert_eq!(percentile(&[], 0.95), 0.0);
    }

    #[test]
    fn scans_read_from_a_plan() {
        let plan: Vec<String> = [
            "Limit  (cost=0.42..8.44 rows=1 width=100)",
            "  ->  Nested Loop  (cost=0.42..8.44 rows=1 width=100)",
            "        ->  Index Scan Backward using orders_user_id_created_at_idx on orders o  (cost=0.42..8.44 rows=1 width=100)",
            "        ->  Index Only Scan using books_pkey on books  (cost=0.29..4.31 rows=1 width=16)",
            "        ->  Bitmap Index Scan on books_search_idx  (cost=0.00..12.00 rows=10 width=0)",
            "        ->  Parallel Seq Scan on users  (cost=0.00..1000.00 rows=100 width=16)",
            "              Filter: (email = $1)",
        ]
        .iter()
        .map(|s| (*s).to_string())
        .collect();
        let (ix, seq) = plan_scans(&plan);
        assert_eq!(
            ix,
            [
                "orders_user_id_created_at_idx",
                "books_pkey",
                "books_search_idx"
            ]
        );
        assert_eq!(seq, ["users"]);
    }
}
