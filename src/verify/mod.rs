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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::StreamExt;
use rayon::prelude::*;
use serde::Serialize;
use tracing::Instrument as _;
use xxhash_rust::xxh3::{xxh3_128, xxh3_64};

use crate::config::{Config, TableSpec};
use crate::decode::{decode_lines, TablePlan};
use crate::encode::encode_batch;
use crate::error::{Error, Result};
use crate::schema::{quote_ident, ColumnType};
use crate::sink::{connect, qualified};
use crate::source::SourcePlan;
use canonical::{canonical, render, render_from, Encoder};
use copy_reader::{Fields, TupleReader};

const BUCKETS: usize = 1 << 16;

/// Options of one `verify`.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    pub schema: String,
    pub tables: Vec<String>,
    /// Differences shown per table.
    pub show: usize,
}

/// One differing row.
#[derive(Debug, Clone, Serialize)]
pub struct RowDiff {
    /// `missing` (in source, not target), `extra` (in target only) or `different`.
    pub kind: String,
    /// Key column → value.
    pub key: BTreeMap<String, String>,
    /// For `different`: column → [source, target].
    pub columns: BTreeMap<String, [String; 2]>,
}

/// Per-table outcome.
#[derive(Debug, Clone, Default, Serialize)]
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
    pub seconds: f64,
    pub rows_per_second: f64,
    pub differences: Vec<RowDiff>,
}

/// The whole verification.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub tables: Vec<TableVerdict>,
    pub matches: bool,
    pub seconds: f64,
}

/// What one side yields per row: key hash, row hash, and (in pass 2) the row itself.
struct RowSig {
    key_hash: u64,
    row_hash: u128,
}

#[derive(Default)]
struct Buckets {
    count: Vec<u64>,
    sum: Vec<u128>,
}

impl Buckets {
    fn new() -> Buckets {
        Buckets {
            count: vec![0; BUCKETS],
            sum: vec![0; BUCKETS],
        }
    }
    fn add(&mut self, s: &RowSig) {
        let b = (s.key_hash as usize) & (BUCKETS - 1);
        self.count[b] += 1;
        self.sum[b] = self.sum[b].wrapping_add(s.row_hash);
    }
}

/// A row of a differing bucket in pass 2: its hash, and for the sampled buckets the row
/// itself (to show it), so that counting stays small however much differs.
struct Kept {
    hash: u128,
    full: Option<Box<KeptRow>>,
}

/// A row kept in full: key as text, and each column's canonical bytes and raw field.
#[derive(Clone)]
struct KeptRow {
    key_text: BTreeMap<String, String>,
    canon: Vec<Option<Vec<u8>>>,
    raw: Vec<Option<Vec<u8>>>,
}

/// Key bytes, row hash, and where each column's canonical bytes sit in the scratch buffer.
type CanonRow = (Vec<u8>, u128, Vec<Option<(usize, usize)>>);

/// Canonicalises one tuple: (key bytes, per-column canonical bytes).
fn canon_tuple(
    buf: &[u8],
    fields: &Fields,
    types: &[ColumnType],
    key_idx: &[usize],
    by: Encoder,
    scratch: &mut Vec<u8>,
) -> CanonRow {
    scratch.clear();
    let mut spans = Vec::with_capacity(types.len());
    for (i, ty) in types.iter().enumerate() {
        let start = scratch.len();
        match fields.get(i).copied().flatten() {
            None => {
                scratch.extend_from_slice(&u32::MAX.to_be_bytes());
                spans.push(None);
            }
            Some((s, e)) => {
                scratch.extend_from_slice(&[0, 0, 0, 0]);
                canonical(*ty, &buf[s..e], by, scratch);
                let n = (scratch.len() - start - 4) as u32;
                scratch[start..start + 4].copy_from_slice(&n.to_be_bytes());
                spans.push(Some((start + 4, scratch.len())));
            }
        }
    }
    let row_hash = xxh3_128(scratch);
    let mut key = Vec::new();
    for &k in key_idx {
        match spans[k] {
            Some((s, e)) => {
                key.extend_from_slice(&((e - s) as u32).to_be_bytes());
                key.extend_from_slice(&scratch[s..e]);
            }
            None => key.extend_from_slice(&u32::MAX.to_be_bytes()),
        }
    }
    (key, row_hash, spans)
}

/// Runs `verify` for the selected tables.
///
/// # Errors
/// A source or the target cannot be read.
pub async fn verify(config: &Config, opts: &VerifyOptions) -> Result<VerifyReport> {
    let started = Instant::now();
    let mut specs = Vec::new();
    for spec in config.select_tables(&opts.tables)? {
        let plan = TablePlan::new(&spec);
        let exp = SourcePlan::open(&spec, &config.tuning).await?;
        specs.push((spec, plan, exp));
    }
    let client = connect(&config.target.url).await?;
    let mut report = VerifyReport::default();
    for (spec, plan, exp) in specs {
        let span = tracing::info_span!("verify", table = %spec.name);
        let t = verify_table(config, opts, &client, &spec, plan, &exp)
            .instrument(span)
            .await?;
        report.tables.push(t);
    }
    report.matches = report.tables.iter().all(|t| t.matches);
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

async fn verify_table(
    config: &Config,
    opts: &VerifyOptions,
    client: &tokio_postgres::Client,
    spec: &TableSpec,
    plan: TablePlan,
    exp: &SourcePlan,
) -> Result<TableVerdict> {
    let started = Instant::now();
    let types: Arc<Vec<ColumnType>> = Arc::new(plan.types().collect());
    let key_idx: Arc<Vec<usize>> = Arc::new(spec.primary_key_indices());
    let plan = Arc::new(plan);
    let name = format!("{}.{}", opts.schema, spec.name);
    let exists: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2)",
            &[&opts.schema, &spec.name],
        )
        .await
        .map_err(|e| Error::pg(&name, "look up the table", &e))?
        .get(0);
    if !exists {
        return Err(Error::Postgres {
            table: name,
            action: "verify".into(),
            reason: "the table does not exist in the target".into(),
        });
    }

    // Pass 1: buckets on both sides, concurrently.
    let src = {
        let (plan, types, key_idx, files) =
            (plan.clone(), types.clone(), key_idx.clone(), exp.clone());
        tokio::task::spawn_blocking(move || source_pass(&plan, &types, &key_idx, &files, None))
    };
    let tgt = target_pass(
        &config.target.url,
        &opts.schema,
        spec,
        types.clone(),
        key_idx.clone(),
        None,
    )
    .await;
    let src = src.await.map_err(|e| Error::Internal(e.to_string()))??;
    let tgt = tgt?;
    let differing: HashSet<usize> = (0..BUCKETS)
        .filter(|&b| {
            src.buckets.count[b] != tgt.buckets.count[b] || src.buckets.sum[b] != tgt.buckets.sum[b]
        })
        .collect();
    let mut v = TableVerdict {
        table: spec.name.clone(),
        schema: opts.schema.clone(),
        source_manifest: exp.expected_items(),
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
        ..TableVerdict::default()
    };
    v.rejected_recorded = recorded_rejects(client, &opts.schema, &spec.name).await;

    // Pass 2: only the rows of differing buckets. Each keeps its key and hash (about 100
    // bytes), in batches of at most 300,000 rows (both sides); the first differing buckets
    // (a sample of at least `--show` × 50 rows) also keep whole rows, to be shown.
    if !differing.is_empty() {
        const LIGHT_ROWS: u64 = 300_000;
        let sample_rows = (opts.show as u64 * 50).max(2000);
        let mut sorted: Vec<usize> = differing.into_iter().collect();
        sorted.sort_unstable();
        let mut batches: Vec<HashMap<usize, bool>> = Vec::new();
        let (mut cur, mut cur_rows, mut sampled) = (HashMap::new(), 0u64, 0u64);
        for b in sorted {
            let n = src.buckets.count[b] + tgt.buckets.count[b];
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
        tracing::info!(
            buckets = batches.iter().map(HashMap::len).sum::<usize>(),
            passes = batches.len(),
            "Buckets differ; reading their rows again."
        );
        let mut diffs = Vec::new();
        for keep in batches {
            let keep = Arc::new(keep);
            let src2 = {
                let (plan, types, key_idx, files, keep) = (
                    plan.clone(),
                    types.clone(),
                    key_idx.clone(),
                    exp.clone(),
                    keep.clone(),
                );
                tokio::task::spawn_blocking(move || {
                    source_pass(&plan, &types, &key_idx, &files, Some(&keep))
                })
            };
            let tgt2 = target_pass(
                &config.target.url,
                &opts.schema,
                spec,
                types.clone(),
                key_idx.clone(),
                Some(keep),
            )
            .await?;
            let src2 = src2.await.map_err(|e| Error::Internal(e.to_string()))??;
            let (s_rows, t_rows) = (src2.kept, tgt2.kept);
            for (k, s) in &s_rows {
                match t_rows.get(k) {
                    None => {
                        v.missing += 1;
                        if let Some(full) = &s.full {
                            diffs.push(RowDiff {
                                kind: "missing".into(),
                                key: full.key_text.clone(),
                                columns: BTreeMap::new(),
                            });
                        }
                    }
                    Some(t) if t.hash != s.hash => {
                        v.different += 1;
                        if let (Some(sf), Some(tf)) = (&s.full, &t.full) {
                            let mut cols = BTreeMap::new();
                            for (i, c) in spec.columns.iter().enumerate() {
                                if sf.canon[i] != tf.canon[i] {
                                    cols.insert(
                                        c.name.clone(),
                                        [
                                            render_from(
                                                types[i],
                                                sf.raw[i].as_deref(),
                                                Encoder::Ours,
                                            ),
                                            render_from(
                                                types[i],
                                                tf.raw[i].as_deref(),
                                                Encoder::Postgres,
                                            ),
                                        ],
                                    );
                                }
                            }
                            diffs.push(RowDiff {
                                kind: "different".into(),
                                key: sf.key_text.clone(),
                                columns: cols,
                            });
                        }
                    }
                    Some(_) => {}
                }
            }
            for (k, t) in &t_rows {
                if !s_rows.contains_key(k) {
                    v.extra += 1;
                    if let Some(full) = &t.full {
                        diffs.push(RowDiff {
                            kind: "extra".into(),
                            key: full.key_text.clone(),
                            columns: BTreeMap::new(),
                        });
                    }
                }
            }
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
                        format!("{} source rows", src.rows),
                        format!("{} target rows", tgt.rows),
                    ],
                )]),
            });
        }
    }
    v.matches = v.missing + v.extra + v.different == 0;
    v.verdict = if v.matches {
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

async fn recorded_rejects(
    client: &tokio_postgres::Client,
    schema: &str,
    table: &str,
) -> Option<u64> {
    let row = client
        .query_one(
            "SELECT count(*) FROM ddb2pg.rejects WHERE target_schema = $1 AND target_table = $2",
            &[&schema, &table],
        )
        .await
        .ok()?;
    u64::try_from(row.get::<_, i64>(0)).ok()
}

/// What keeping a row needs besides the tuple.
struct TableShape<'a> {
    col_names: &'a [String],
    types: &'a [ColumnType],
    key_idx: &'a [usize],
}

struct SidePass {
    buckets: Buckets,
    items: u64,
    rows: u64,
    rejected_keys: Vec<String>,
    kept: HashMap<Vec<u8>, Kept>,
}

fn keep_row(
    buf: &[u8],
    fields: &Fields,
    key: Vec<u8>,
    spans: &[Option<(usize, usize)>],
    scratch: &[u8],
    shape: &TableShape<'_>,
) -> (Vec<u8>, KeptRow) {
    let TableShape {
        col_names: spec_cols,
        types,
        key_idx,
    } = *shape;
    let canon = spans
        .iter()
        .map(|s| s.map(|(a, b)| scratch[a..b].to_vec()))
        .collect();
    let raw: Vec<Option<Vec<u8>>> = (0..types.len())
        .map(|i| {
            fields
                .get(i)
                .copied()
                .flatten()
                .map(|(s, e)| buf[s..e].to_vec())
        })
        .collect();
    let key_text = key_idx
        .iter()
        .map(|&k| (spec_cols[k].clone(), render(types[k], raw[k].as_deref())))
        .collect();
    (
        key,
        KeptRow {
            key_text,
            canon,
            raw,
        },
    )
}

/// Canonicalises and hashes one tuple; in pass 2, also what to keep of it when its bucket
/// is one of `keep` (whole when the bucket is sampled, else key and hash).
fn sign_tuple(
    buf: &[u8],
    fields: &Fields,
    shape: &TableShape<'_>,
    by: Encoder,
    keep: Option<&HashMap<usize, bool>>,
    scratch: &mut Vec<u8>,
) -> (RowSig, Option<(Vec<u8>, Kept)>) {
    let (key, row_hash, spans) = canon_tuple(buf, fields, shape.types, shape.key_idx, by, scratch);
    let key_hash = xxh3_64(&key);
    let kept = keep
        .and_then(|k| k.get(&((key_hash as usize) & (BUCKETS - 1))).copied())
        .map(|full| {
            if full {
                let (k, row) = keep_row(buf, fields, key, &spans, scratch, shape);
                (
                    k,
                    Kept {
                        hash: row_hash,
                        full: Some(Box::new(row)),
                    },
                )
            } else {
                (
                    key,
                    Kept {
                        hash: row_hash,
                        full: None,
                    },
                )
            }
        });
    (RowSig { key_hash, row_hash }, kept)
}

/// Reads the export again: decode + encode exactly as `load` does, then hash.
fn source_pass(
    plan: &TablePlan,
    types: &[ColumnType],
    key_idx: &[usize],
    source: &SourcePlan,
    keep: Option<&HashMap<usize, bool>>,
) -> Result<SidePass> {
    let col_names: Vec<String> = plan.columns.iter().map(|c| c.spec.name.clone()).collect();
    let shape = TableShape {
        col_names: &col_names,
        types,
        key_idx,
    };
    let out = Mutex::new(SidePass {
        buckets: Buckets::new(),
        items: 0,
        rows: 0,
        rejected_keys: Vec::new(),
        kept: HashMap::new(),
    });
    let cancel = AtomicBool::new(false);
    let read = Arc::new(AtomicU64::new(0));
    (0..source.splits())
        .into_par_iter()
        .try_for_each(|idx| -> Result<()> {
            let mut failure = None;
            source.read_split(idx, 2 << 20, 8192, &read, &cancel, None, |page| {
                let decoded = match decode_lines(plan, &page.data, page.first_line) {
                    Ok(d) => d,
                    Err(e) => {
                        failure = Some(Error::DataFile {
                            key: page.origin.to_string(),
                            reason: e,
                        });
                        return false;
                    }
                };
                let mut bytes = Vec::new();
                if let Err(e) = encode_batch(&decoded.batch, types, &mut bytes) {
                    failure = Some(Error::Internal(e.to_string()));
                    return false;
                }
                let mut reader = TupleReader::bare_from(bytes);
                let mut fields = Fields::new();
                let mut scratch = Vec::new();
                let mut sigs = Vec::with_capacity(decoded.batch.num_rows());
                let mut kept = Vec::new();
                loop {
                    let r = reader.next_tuple(&mut fields, |buf, fields| {
                        let (sig, keep_it) =
                            sign_tuple(buf, fields, &shape, Encoder::Ours, keep, &mut scratch);
                        kept.extend(keep_it);
                        sig
                    });
                    match r {
                        Ok(Some(sig)) => sigs.push(sig),
                        Ok(None) => break,
                        Err(e) => {
                            failure = Some(Error::Internal(format!(
                                "re-reading our own COPY bytes: {e}"
                            )));
                            return false;
                        }
                    }
                }
                if let Ok(mut o) = out.lock() {
                    o.items += decoded.items;
                    o.rows += sigs.len() as u64;
                    for s in &sigs {
                        o.buckets.add(s);
                    }
                    for r in decoded.rejects {
                        o.rejected_keys
                            .push(r.key.unwrap_or_else(|| {
                                format!("(line {} of {})", r.line, page.origin)
                            }));
                    }
                    for (k, row) in kept {
                        o.kept.insert(k, row);
                    }
                }
                true
            })?;
            match failure {
                Some(e) => Err(e),
                None => Ok(()),
            }
        })?;
    let mut o = out
        .into_inner()
        .map_err(|_| Error::Internal("verify state poisoned".into()))?;
    o.rejected_keys.sort();
    Ok(o)
}

/// Reads the target table through binary COPY, hashing on a thread of its own.
async fn target_pass(
    url: &str,
    schema: &str,
    spec: &TableSpec,
    types: Arc<Vec<ColumnType>>,
    key_idx: Arc<Vec<usize>>,
    keep: Option<Arc<HashMap<usize, bool>>>,
) -> Result<SidePass> {
    let name = format!("{schema}.{}", spec.name);
    let client = connect(url).await?;
    let cols: Vec<String> = spec.columns.iter().map(|c| quote_ident(&c.name)).collect();
    let sql = format!(
        "COPY (SELECT {} FROM {}) TO STDOUT (FORMAT binary)",
        cols.join(", "),
        qualified(schema, &spec.name)
    );
    let stream = client
        .copy_out(&sql)
        .await
        .map_err(|e| Error::pg(&name, "COPY TO", &e))?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(16);
    let col_names: Vec<String> = spec.columns.iter().map(|c| c.name.clone()).collect();
    let parser = tokio::task::spawn_blocking(move || -> Result<SidePass> {
        let mut side = SidePass {
            buckets: Buckets::new(),
            items: 0,
            rows: 0,
            rejected_keys: Vec::new(),
            kept: HashMap::new(),
        };
        let shape = TableShape {
            col_names: &col_names,
            types: &types,
            key_idx: &key_idx,
        };
        let mut reader = TupleReader::with_header();
        let mut fields = Fields::new();
        let mut scratch = Vec::new();
        while let Some(chunk) = rx.blocking_recv() {
            reader.push(&chunk);
            loop {
                let mut kept = None;
                let r = reader.next_tuple(&mut fields, |buf, fields| {
                    let (sig, keep_it) = sign_tuple(
                        buf,
                        fields,
                        &shape,
                        Encoder::Postgres,
                        keep.as_deref(),
                        &mut scratch,
                    );
                    kept = keep_it;
                    sig
                });
                match r {
                    Ok(Some(sig)) => {
                        side.rows += 1;
                        side.buckets.add(&sig);
                        if let Some((k, row)) = kept {
                            side.kept.insert(k, row);
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        return Err(Error::Internal(format!(
                            "reading the target's COPY output: {e}"
                        )))
                    }
                }
            }
        }
        Ok(side)
    });
    // PostgreSQL sends one message per row: hand them over in blocks, not one by one.
    let mut stream = Box::pin(stream);
    let mut block = bytes::BytesMut::with_capacity(512 << 10);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Error::pg(&name, "COPY TO", &e))?;
        block.extend_from_slice(&chunk);
        if block.len() >= 256 << 10 {
            let full = std::mem::replace(&mut block, bytes::BytesMut::with_capacity(512 << 10));
            if tx.send(full.freeze()).await.is_err() {
                break;
            }
        }
    }
    if !block.is_empty() {
        let _ = tx.send(block.freeze()).await;
    }
    drop(tx);
    parser.await.map_err(|e| Error::Internal(e.to_string()))?
}
