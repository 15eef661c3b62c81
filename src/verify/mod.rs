//! `ddb2pg verify`: proves the target equals the source, every row, in bounded memory.
//!
//! Input: the config's tables. The source is read again and mapped with the same rules as
//! `load` (so a rejected item is "rejected", not "missing"); the target is read with
//! `COPY (SELECT …) TO STDOUT (FORMAT binary)`. Both sides become binary COPY tuples,
//! canonicalised per type ([`canonical`]) and hashed; [`copy_reader`] reads the tuples.
//!
//! Pass 1 folds each side into 65,536 buckets by key hash (a count and a wrapping sum of
//! row hashes): a few MB whatever the table size. Pass 2 reads both sides again keeping only
//! the rows of buckets that differ, and names each missing, extra or different row by key,
//! column by column. Output: a [`VerifyReport`].

pub mod canonical;
pub mod copy_reader;
mod pass;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tracing::Instrument as _;

use crate::config::{Changes, Config, Source, TableSpec};
use crate::decode::TablePlan;
use crate::error::{Error, Result};
use crate::load::changes::{applied_exports, base_load};
use crate::load::state::{self, RunState};
use crate::schema::ColumnType;
use crate::sink::connect;
use crate::sink::ddl::{primary_key_of, table_exists};
use crate::source::export::{self, Kind};
use crate::source::SourcePlan;
use canonical::{render_from, Encoder};
use pass::{source_pass, target_pass, Buckets, Kept, KeptRow, SidePass, BUCKETS};

/// Options of one `verify`.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    pub schema: String,
    pub tables: Vec<String>,
    /// Differences shown per table.
    pub show: usize,
    /// Compare with a parallel scan of the live table (the scan source's, or the table
    /// whose stream `changes` reads) instead of the declared source: the cutover gate.
    pub live: bool,
}

/// One differing row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RowDiff {
    /// `missing` (in source, not target), `extra` (in target only) or `different`.
    pub kind: String,
    /// Key column → value.
    pub key: BTreeMap<String, String>,
    /// For `different`: column → [source, target] as text (`null`: SQL NULL).
    pub columns: BTreeMap<String, [Option<String>; 2]>,
}

/// A `different` column's two values for a terminal line: SQL NULL bare, a value quoted
/// (so NULL and the text `NULL` read apart), and a long value cut to a window around
/// its first difference (the report keeps the whole values).
#[must_use]
pub fn show_pair(source: Option<&str>, target: Option<&str>) -> (String, String) {
    const WIDTH: usize = 120;
    const BEFORE: usize = 40;
    let (Some(a), Some(b)) = (source, target) else {
        let one = |v: Option<&str>| v.map_or_else(|| "NULL".to_string(), quoted);
        return (one(source), one(target));
    };
    let (ac, bc): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    if ac.len() <= WIDTH && bc.len() <= WIDTH {
        return (quoted(a), quoted(b));
    }
    let at = ac.iter().zip(&bc).take_while(|(x, y)| x == y).count();
    let from = at.saturating_sub(BEFORE);
    let window = |c: &[char]| {
        let to = (from + WIDTH).min(c.len());
        let mut s = String::new();
        if from > 0 {
            s.push('…');
        }
        s.push_str(&quoted(
            &c[from.min(c.len())..to].iter().collect::<String>(),
        ));
        if to < c.len() {
            s.push('…');
        }
        format!(
            "{s} ({} characters, first difference at character {})",
            c.len(),
            at + 1
        )
    };
    (window(&ac), window(&bc))
}

fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| s.to_string())
}

/// Per-table outcome.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TableVerdict {
    pub table: String,
    pub schema: String,
    /// Items the manifest lists.
    pub source_manifest: u64,
    /// Items read from the source now.
    pub source_items: u64,
    /// Of those, mapped to rows (the others are rejects by the load's rules).
    pub source_rows: u64,
    pub target_rows: u64,
    pub missing: u64,
    pub extra: u64,
    pub different: u64,
    pub rejected: u64,
    /// Rejects the last load recorded in `ddb2pg.rejects`, when that table exists.
    pub rejected_recorded: Option<u64>,
    pub rejected_keys: Vec<String>,
    pub matches: bool,
    pub verdict: String,
    /// What makes the table not a finished load even when its rows match: no primary key
    /// (or another than the mapping's), its latest run not done.
    #[serde(default)]
    pub problems: Vec<String>,
    pub seconds: f64,
    pub rows_per_second: f64,
    pub differences: Vec<RowDiff>,
    /// Incremental exports a sync applied since the load: the source compared is the
    /// load's export with these applied, as of `watermark` (their last `exportToTime`).
    #[serde(default)]
    pub exports_applied: usize,
    #[serde(default)]
    pub watermark: Option<String>,
}

/// The whole verification.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VerifyReport {
    pub tables: Vec<TableVerdict>,
    pub matches: bool,
    pub seconds: f64,
}

/// Runs `verify` for the selected tables.
///
/// # Errors
/// A source or the target cannot be read.
pub async fn verify(config: &Config, opts: &VerifyOptions) -> Result<VerifyReport> {
    let started = Instant::now();
    let client = connect(&config.target.url).await?;
    let mut specs = Vec::new();
    for spec in config.select_tables(&opts.tables)? {
        let plan = TablePlan::new(&spec);
        let read = if opts.live {
            live_spec(&spec)?
        } else {
            spec.clone()
        };
        let exp = SourcePlan::open(&read, &config.tuning).await?;
        let changes = applied_changes(&client, &opts.schema, &spec, &exp).await?;
        // Each child table row by row too: its parent's source read again, its rows the
        // elements' (after a sync, the changed items' elements in place of their old ones).
        for (i, child) in spec.children.iter().enumerate() {
            specs.push((
                child.table.clone(),
                plan.clone(),
                exp.clone(),
                changes.clone(),
                Some(i),
            ));
        }
        specs.insert(
            specs.len() - spec.children.len(),
            (spec, plan, exp, changes, None),
        );
    }
    let mut report = VerifyReport::default();
    for (spec, plan, exp, changes, view) in specs {
        let span = tracing::info_span!("verify", table = %spec.name);
        let t = verify_table(config, opts, &client, &spec, (plan, view), &exp, changes)
            .instrument(span)
            .await?;
        report.tables.push(t);
    }
    report.matches = report.tables.iter().all(|t| t.matches);
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The table as `verify --live` reads it: its live DynamoDB table scanned (the scan
/// source's own settings, or the defaults for the table whose stream `changes` reads).
fn live_spec(spec: &TableSpec) -> Result<TableSpec> {
    let mut s = spec.clone();
    match (&spec.source, &spec.changes) {
        (Source::DynamoDb { .. }, _) => {}
        (_, Some(Changes::Stream { table })) => {
            s.source = Source::DynamoDb {
                table: table.clone(),
                segments: None,
                read_capacity: None,
                consistent: true,
            };
        }
        _ => {
            return Err(Error::Usage(format!(
                "verify --live: table {} has no live DynamoDB table in the config (its source is an export and no `changes = {{ stream = … }}` names one)",
                spec.name
            )))
        }
    }
    Ok(s)
}

/// The incremental exports a sync applied to the table since its load, opened, with
/// the last one's end: the source the target should equal is the load's export with
/// these applied. None for a table loaded by a scan (the live table holds its changes).
async fn applied_changes(
    client: &tokio_postgres::Client,
    schema: &str,
    spec: &TableSpec,
    source: &SourcePlan,
) -> Result<Option<(Vec<SourcePlan>, String)>> {
    if !matches!(source, SourcePlan::Export(_) | SourcePlan::Parquet(_)) {
        return Ok(None);
    }
    let Some(base) = base_load(client, schema, &spec.name).await? else {
        return Ok(None);
    };
    let applied = applied_exports(client, base.run, &spec.name).await?;
    let Some(last) = applied.last() else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for a in &applied {
        let plan = if a.location.starts_with("s3://") {
            export::open_s3_as(&a.location, Kind::Incremental).await?
        } else {
            let p = std::path::PathBuf::from(&a.location);
            tokio::task::spawn_blocking(move || export::open_as(&p, Kind::Incremental))
                .await
                .map_err(|e| Error::Internal(e.to_string()))??
        };
        out.push(SourcePlan::Export(Arc::new(plan)));
    }
    Ok(Some((out, last.to.clone())))
}

/// What both passes over a table share.
struct Passes<'a> {
    url: &'a str,
    schema: &'a str,
    spec: &'a TableSpec,
    plan: Arc<TablePlan>,
    types: Arc<Vec<ColumnType>>,
    key_idx: Arc<Vec<usize>>,
    source: SourcePlan,
    /// The applied incremental exports, and the plan that maps their changes.
    changes: Option<(Arc<TablePlan>, Arc<Vec<SourcePlan>>)>,
    /// A child table's rows, from its parent's plan (see [`crate::decode::DecodedPage::into_view`]).
    view: Option<usize>,
}

impl Passes<'_> {
    /// Both sides at once: the source on a blocking thread (it feeds the rayon pool),
    /// the target on this task. With `keep`, the rows of those buckets are kept.
    async fn run(&self, keep: Option<Arc<HashMap<usize, bool>>>) -> Result<(SidePass, SidePass)> {
        let src = {
            let view = self.view;
            let (plan, types, key_idx, source, keep, changes) = (
                self.plan.clone(),
                self.types.clone(),
                self.key_idx.clone(),
                self.source.clone(),
                keep.clone(),
                self.changes.clone(),
            );
            tokio::task::spawn_blocking(move || {
                let changes = changes.as_ref().map(|(p, e)| (p.as_ref(), e.as_slice()));
                source_pass(
                    &plan,
                    &types,
                    &key_idx,
                    &source,
                    changes,
                    keep.as_deref(),
                    view,
                )
            })
        };
        let tgt = target_pass(
            self.url,
            self.schema,
            self.spec,
            self.types.clone(),
            self.key_idx.clone(),
            keep,
        )
        .await;
        let src = src
            .await
            .map_err(|e| Error::Internal(format!("the source pass: {e}")))??;
        Ok((src, tgt?))
    }
}

async fn verify_table(
    config: &Config,
    opts: &VerifyOptions,
    client: &tokio_postgres::Client,
    spec: &TableSpec,
    (plan, view): (TablePlan, Option<usize>),
    exp: &SourcePlan,
    changes: Option<(Vec<SourcePlan>, String)>,
) -> Result<TableVerdict> {
    let started = Instant::now();
    ensure_table(client, &opts.schema, &spec.name).await?;
    let exports_applied = changes.as_ref().map_or(0, |(e, _)| e.len());
    let change_items: u64 = changes
        .as_ref()
        .map_or(0, |(e, _)| e.iter().map(SourcePlan::expected_items).sum());
    let watermark = changes.as_ref().map(|(_, w)| w.clone());
    let passes = Passes {
        // A child table's changes are its parent's (its plan is the parent's).
        changes: changes.map(|(e, _)| (Arc::new(TablePlan::for_changes(&plan.spec)), Arc::new(e))),
        url: &config.target.url,
        schema: &opts.schema,
        spec,
        types: Arc::new(plan.view_columns(view).iter().map(|c| c.rule.ty).collect()),
        view,
        key_idx: Arc::new(spec.primary_key_indices()),
        plan: Arc::new(plan),
        source: exp.clone(),
    };

    // Pass 1: buckets on both sides, concurrently.
    let (src, tgt) = passes.run(None).await?;
    let differing: Vec<usize> = (0..BUCKETS)
        .filter(|&b| {
            src.buckets.count[b] != tgt.buckets.count[b] || src.buckets.sum[b] != tgt.buckets.sum[b]
        })
        .collect();
    let mut v = TableVerdict {
        table: spec.name.clone(),
        schema: opts.schema.clone(),
        source_manifest: exp.expected_items() + change_items,
        source_items: src.items,
        source_rows: src.rows,
        target_rows: tgt.rows,
        rejected: src.rejected_keys.len() as u64,
        rejected_keys: src
            .rejected_keys
            .iter()
            .take(opts.show.max(1) * 10)
            .cloned()
            .collect(),
        exports_applied,
        watermark,
        ..TableVerdict::default()
    };
    v.rejected_recorded = recorded_rejects(client, &opts.schema, &spec.name).await;

    // Pass 2: only the rows of differing buckets.
    if !differing.is_empty() {
        let batches = reread_batches(differing, &src.buckets, &tgt.buckets, opts.show);
        tracing::info!(
            buckets = batches.iter().map(HashMap::len).sum::<usize>(),
            passes = batches.len(),
            "Buckets differ; reading their rows again."
        );
        let mut diffs = Vec::new();
        for keep in batches {
            let (src2, tgt2) = passes.run(Some(Arc::new(keep))).await?;
            compare_kept(
                spec,
                &passes.types,
                &src2.kept,
                &tgt2.kept,
                &mut v,
                &mut diffs,
            );
            diffs.sort_by(|a, b| (a.kind.as_str(), &a.key).cmp(&(b.kind.as_str(), &b.key)));
            diffs.truncate(opts.show);
        }
        v.differences = diffs;
        if v.missing + v.extra + v.different == 0 {
            // Buckets differed but no row does: duplicate source keys, say.
            v.different = 1;
            v.differences.push(RowDiff {
                kind: "different".into(),
                key: BTreeMap::new(),
                columns: BTreeMap::from([(
                    "(rows)".to_string(),
                    [
                        Some(format!("{} source rows", src.rows)),
                        Some(format!("{} target rows", tgt.rows)),
                    ],
                )]),
            });
        }
    }
    v.problems = table_problems(client, &opts.schema, spec).await?;
    v.matches = v.missing + v.extra + v.different == 0 && v.problems.is_empty();
    v.verdict = if !v.problems.is_empty() && v.missing + v.extra + v.different == 0 {
        format!("INCOMPLETE: {}", v.problems.join("; "))
    } else if v.matches {
        if v.rejected > 0 {
            format!("matches, {} rejected", v.rejected)
        } else {
            "matches".into()
        }
    } else {
        "DIFFERS".into()
    };
    v.seconds = started.elapsed().as_secs_f64();
    v.rows_per_second = (v.source_rows.max(v.target_rows)) as f64 / v.seconds.max(1e-9);
    Ok(v)
}

/// What makes a table not a finished load: its primary key missing or other than the
/// mapping's, and its latest run (by the table's identity) not done.
async fn table_problems(
    client: &tokio_postgres::Client,
    schema: &str,
    spec: &TableSpec,
) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    match primary_key_of(client, schema, &spec.name).await? {
        None => problems.push(format!(
            "no primary key (pipeline.toml says ({}))",
            spec.primary_key.join(", ")
        )),
        Some(cols) if cols != spec.primary_key => problems.push(format!(
            "its primary key is ({}), pipeline.toml says ({})",
            cols.join(", "),
            spec.primary_key.join(", ")
        )),
        Some(_) => {}
    }
    if let Some((run, st)) = state::latest_run_of_table(client, schema, &spec.name).await? {
        if st != RunState::Done {
            problems.push(format!(
                "its latest load, run {run}, is {st}, not done (`ddb2pg status` says why)"
            ));
        }
    }
    Ok(problems)
}

/// The table must exist in the target.
async fn ensure_table(client: &tokio_postgres::Client, schema: &str, table: &str) -> Result<()> {
    if table_exists(client, schema, table).await? {
        return Ok(());
    }
    Err(Error::Postgres {
        table: format!("{schema}.{table}"),
        action: "verify".into(),
        reason: "the table does not exist in the target".into(),
    })
}

/// The differing buckets in the batches pass 2 reads again: each keeps its rows' key and
/// hash (about 100 bytes), at most 300,000 rows (both sides) per batch; the first buckets
/// (a sample of at least `--show` × 50 rows) also keep whole rows, to be shown.
fn reread_batches(
    differing: Vec<usize>,
    src: &Buckets,
    tgt: &Buckets,
    show: usize,
) -> Vec<HashMap<usize, bool>> {
    const LIGHT_ROWS: u64 = 300_000;
    let sample_rows = (show as u64 * 50).max(2000);
    let mut batches: Vec<HashMap<usize, bool>> = Vec::new();
    let (mut cur, mut cur_rows, mut sampled) = (HashMap::new(), 0u64, 0u64);
    for b in differing {
        let n = src.count[b] + tgt.count[b];
        if cur_rows + n > LIGHT_ROWS && !cur.is_empty() {
            batches.push(std::mem::take(&mut cur));
            cur_rows = 0;
        }
        let full = sampled < sample_rows;
        if full {
            sampled += n;
        }
        cur.insert(b, full);
        cur_rows += n;
    }
    batches.push(cur);
    batches
}

/// Counts the missing, extra and different rows of one re-read batch, and names the
/// sampled ones (each different column with both values).
fn compare_kept(
    spec: &TableSpec,
    types: &[ColumnType],
    s_rows: &HashMap<Vec<u8>, Kept>,
    t_rows: &HashMap<Vec<u8>, Kept>,
    v: &mut TableVerdict,
    diffs: &mut Vec<RowDiff>,
) {
    let named = |kind: &str, row: &KeptRow| RowDiff {
        kind: kind.into(),
        key: row.key_text.clone(),
        columns: BTreeMap::new(),
    };
    for (k, s) in s_rows {
        match t_rows.get(k) {
            None => {
                v.missing += 1;
                if let Some(full) = &s.full {
                    diffs.push(named("missing", full));
                }
            }
            Some(t) if t.hash != s.hash => {
                v.different += 1;
                if let (Some(sf), Some(tf)) = (&s.full, &t.full) {
                    let mut d = named("different", sf);
                    for (i, c) in spec.columns.iter().enumerate() {
                        if sf.canon[i] != tf.canon[i] {
                            let show = |raw: Option<&[u8]>, by| {
                                raw.map(|f| render_from(types[i], Some(f), by))
                            };
                            let ours = show(sf.raw[i].as_deref(), Encoder::Ours);
                            let theirs = show(tf.raw[i].as_deref(), Encoder::Postgres);
                            d.columns.insert(c.name.clone(), [ours, theirs]);
                        }
                    }
                    diffs.push(d);
                }
            }
            Some(_) => {}
        }
    }
    for (k, t) in t_rows {
        if !s_rows.contains_key(k) {
            v.extra += 1;
            if let Some(full) = &t.full {
                diffs.push(named("extra", full));
            }
        }
    }
}

async fn recorded_rejects(
    client: &tokio_postgres::Client,
    schema: &str,
    table: &str,
) -> Option<u64> {
    // Unrouted items kept (recorded under the table that read them) are no table's; a
    // state schema from before that column has none.
    let row = match client
        .query_one(
            "SELECT count(*) FROM ddb2pg.rejects WHERE target_schema = $1 AND target_table = $2 AND NOT unrouted",
            &[&schema, &table],
        )
        .await
    {
        Ok(row) => row,
        Err(_) => client
            .query_one(
                "SELECT count(*) FROM ddb2pg.rejects WHERE target_schema = $1 AND target_table = $2",
                &[&schema, &table],
            )
            .await
            .ok()?,
    };
    u64::try_from(row.get::<_, i64>(0)).ok()
}

#[cfg(test)]
mod tests {
    use super::show_pair;

    #[test]
    fn null_and_the_text_null_read_apart_and_a_long_value_shows_its_difference() {
        assert_eq!(
            show_pair(None, Some("NULL")),
            ("NULL".into(), "\"NULL\"".into())
        );
        let a = format!("{{\"k\": \"{}\", \"q\": 1}}", "x".repeat(500));
        let b = a.replace("\"q\": 1", "\"q\": 2");
        let (sa, sb) = show_pair(Some(&a), Some(&b));
        assert!(
            sa.contains("q\\\": 1") && sb.contains("q\\\": 2"),
            "{sa}\n{sb}"
        );
        assert!(
            sa.starts_with('…') && sa.contains("first difference at character 516"),
            "{sa}"
        );
    }
}
