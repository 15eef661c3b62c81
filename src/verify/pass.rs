//! One side of a verify pass: the source read again and mapped exactly as `load` maps it
//! (decode + encode on the rayon pool), or the target read by `COPY (SELECT …) TO STDOUT
//! (FORMAT binary)` — each row canonicalised per type, hashed, and folded into buckets by
//! key hash; in pass 2, the rows of the buckets asked for are kept (whole for a sample,
//! else key and hash).
//!
//! Input: a table's plan and source, or the target. Output: a [`SidePass`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use rayon::prelude::*;
use xxhash_rust::xxh3::{xxh3_128, xxh3_64};

use super::canonical::{canonical, render, Encoder};
use super::copy_reader::{Fields, TupleReader};
use crate::config::TableSpec;
use crate::decode::{decode_page, TablePlan};
use crate::encode::encode_batch;
use crate::error::{Error, Result};
use crate::schema::{quote_ident, ColumnType};
use crate::sink::{connect, qualified};
use crate::source::SourcePlan;

pub(super) const BUCKETS: usize = 1 << 16;

/// What one side yields per row: key hash, row hash, and (in pass 2) the row itself.
#[derive(Clone, Copy)]
struct RowSig {
    key_hash: u64,
    row_hash: u128,
}

#[derive(Default)]
pub(super) struct Buckets {
    pub(super) count: Vec<u64>,
    pub(super) sum: Vec<u128>,
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
pub(super) struct Kept {
    pub(super) hash: u128,
    pub(super) full: Option<Box<KeptRow>>,
}

/// A row kept in full: key as text, and each column's canonical bytes and raw field.
#[derive(Clone)]
pub(super) struct KeptRow {
    pub(super) key_text: BTreeMap<String, String>,
    pub(super) canon: Vec<Option<Vec<u8>>>,
    pub(super) raw: Vec<Option<Vec<u8>>>,
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
    let key = key_of(&spans, scratch, key_idx);
    (key, row_hash, spans)
}

/// The key bytes of the columns `idx` of a canonicalised row.
fn key_of(spans: &[Option<(usize, usize)>], scratch: &[u8], idx: &[usize]) -> Vec<u8> {
    let mut key = Vec::new();
    for &k in idx {
        match spans.get(k).copied().flatten() {
            Some((s, e)) => {
                key.extend_from_slice(&((e - s) as u32).to_be_bytes());
                key.extend_from_slice(&scratch[s..e]);
            }
            None => key.extend_from_slice(&u32::MAX.to_be_bytes()),
        }
    }
    key
}

/// What keeping a row needs besides the tuple.
struct TableShape<'a> {
    col_names: &'a [String],
    types: &'a [ColumnType],
    key_idx: &'a [usize],
}

pub(super) struct SidePass {
    pub(super) buckets: Buckets,
    pub(super) items: u64,
    pub(super) rows: u64,
    pub(super) rejected_keys: Vec<String>,
    pub(super) kept: HashMap<Vec<u8>, Kept>,
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
    let (sig, kept, _) = sign_keyed(buf, fields, shape, by, keep, scratch, None);
    (sig, kept)
}

/// As [`sign_tuple`]; also says whether the row's key is one of `exclude` (the keys a
/// sync's changes replaced), and then keeps nothing of it.
fn sign_keyed(
    buf: &[u8],
    fields: &Fields,
    shape: &TableShape<'_>,
    by: Encoder,
    keep: Option<&HashMap<usize, bool>>,
    scratch: &mut Vec<u8>,
    exclude: Option<&Overlay>,
) -> (RowSig, Option<(Vec<u8>, Kept)>, bool) {
    let (key, row_hash, spans) = canon_tuple(buf, fields, shape.types, shape.key_idx, by, scratch);
    let key_hash = xxh3_64(&key);
    let replaced = exclude.is_some_and(|o| match &o.parent_idx {
        // A child row: replaced when the changes touched its parent.
        Some(idx) => o.parents.contains(&key_of(&spans, scratch, idx)),
        None => o.rows.contains_key(&key),
    });
    if replaced {
        return (RowSig { key_hash, row_hash }, None, true);
    }
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
    (RowSig { key_hash, row_hash }, kept, false)
}

/// The rows a sync's applied incremental exports leave, by key: the last change of each
/// key (a put's row, or `None` for a delete), read from the exports in the order they
/// were applied and mapped exactly as the sync maps them. A rejected change changes
/// nothing (the sync left the row as it was): its key is listed as rejected.
pub(super) struct Overlay {
    rows: HashMap<Vec<u8>, Option<(RowSig, Option<Kept>)>>,
    items: u64,
    rejected_keys: Vec<String>,
    /// For a child table: the columns of a row that hold its parent's key, and the
    /// parent keys the changes touched (their children are `rows`, whatever was before).
    parent_idx: Option<Vec<usize>>,
    parents: HashSet<Vec<u8>>,
}

/// Reads the applied exports (`plan` is the table's [`TablePlan::for_changes`]).
fn overlay_pass(
    plan: &TablePlan,
    types: &[ColumnType],
    key_idx: &[usize],
    exports: &[SourcePlan],
    keep: Option<&HashMap<usize, bool>>,
) -> Result<Overlay> {
    let col_names: Vec<String> = plan.columns.iter().map(|c| c.spec.name.clone()).collect();
    let shape = TableShape {
        col_names: &col_names,
        types,
        key_idx,
    };
    let mut overlay = Overlay {
        rows: HashMap::new(),
        items: 0,
        rejected_keys: Vec::new(),
        parent_idx: None,
        parents: HashSet::new(),
    };
    let cancel = AtomicBool::new(false);
    let read = Arc::new(AtomicU64::new(0));
    let mapped: Vec<usize> = (0..types.len()).collect();
    for export in exports {
        // Each key is in one file of an export at most: the files are read in parallel
        // and their changes taken in file order.
        type FileChanges = (
            Vec<(Vec<u8>, Option<(RowSig, Option<Kept>)>)>,
            u64,
            Vec<String>,
        );
        let files: Vec<Result<FileChanges>> = (0..export.splits())
            .into_par_iter()
            .map(|idx| {
                let mut out: FileChanges = (Vec::new(), 0, Vec::new());
                let mut failure = None;
                export.read_split(idx, 2 << 20, 8192, &read, &cancel, None, |page| {
                    let decoded = match decode_page(plan, &page) {
                        Ok(d) => d,
                        Err(e) => {
                            failure = Some(Error::DataFile {
                                key: page.origin.to_string(),
                                reason: e,
                            });
                            return false;
                        }
                    };
                    out.1 += decoded.items + decoded.skipped;
                    for r in decoded.rejects {
                        out.2
                            .push(r.key.unwrap_or_else(|| {
                                format!("(line {} of {})", r.line, page.origin)
                            }));
                    }
                    let deletes = decoded.batch.columns().last().and_then(|c| {
                        c.as_any()
                            .downcast_ref::<arrow_array::BooleanArray>()
                            .cloned()
                    });
                    let batch = match decoded.batch.project(&mapped) {
                        Ok(b) => b,
                        Err(e) => {
                            failure = Some(Error::Internal(e.to_string()));
                            return false;
                        }
                    };
                    let mut bytes = Vec::new();
                    if let Err(e) = encode_batch(&batch, types, &mut bytes) {
                        failure = Some(Error::Internal(e.to_string()));
                        return false;
                    }
                    let mut reader = TupleReader::bare_from(bytes);
                    let mut fields = Fields::new();
                    let mut scratch = Vec::new();
                    let mut row = 0usize;
                    loop {
                        let mut entry = None;
                        let r = reader.next_tuple(&mut fields, |buf, fields| {
                            let (key, row_hash, spans) = canon_tuple(
                                buf,
                                fields,
                                types,
                                key_idx,
                                Encoder::Ours,
                                &mut scratch,
                            );
                            let key_hash = xxh3_64(&key);
                            let sig = RowSig { key_hash, row_hash };
                            let kept = keep
                                .and_then(|k| {
                                    k.get(&((key_hash as usize) & (BUCKETS - 1))).copied()
                                })
                                .map(|full| Kept {
                                    hash: row_hash,
                                    full: full.then(|| {
                                        Box::new(
                                            keep_row(
                                                buf,
                                                fields,
                                                key.clone(),
                                                &spans,
                                                &scratch,
                                                &shape,
                                            )
                                            .1,
                                        )
                                    }),
                                });
                            entry = Some((key, sig, kept));
                            sig
                        });
                        match r {
                            Ok(Some(_)) => {
                                if let Some((key, sig, kept)) = entry {
                                    let delete = deletes.as_ref().is_some_and(|d| d.value(row));
                                    out.0.push((key, (!delete).then_some((sig, kept))));
                                }
                                row += 1;
                            }
                            Ok(None) => break,
                            Err(e) => {
                                failure = Some(Error::Internal(format!(
                                    "re-reading our own COPY bytes: {e}"
                                )));
                                return false;
                            }
                        }
                    }
                    true
                })?;
                match failure {
                    Some(e) => Err(e),
                    None => Ok(out),
                }
            })
            .collect();
        for f in files {
            let (changes, items, rejected) = f?;
            overlay.items += items;
            overlay.rejected_keys.extend(rejected);
            for (k, v) in changes {
                overlay.rows.insert(k, v);
            }
        }
    }
    Ok(overlay)
}

/// A child table's side of a verify: which child of the plan, its column types and key.
struct ChildShape<'a> {
    view: usize,
    types: &'a [ColumnType],
    key_idx: &'a [usize],
}

/// One data file of an applied export, for a child table: the parent keys its changes
/// touch, its puts' elements as rows (child key, parent key, signature, what is kept),
/// the items read and the rejected keys.
type ChildFile = (
    Vec<Vec<u8>>,
    Vec<(Vec<u8>, Vec<u8>, RowSig, Option<Kept>)>,
    u64,
    Vec<String>,
);

/// What is done with each tuple of encoded rows.
type TupleFn<'a> = Box<dyn FnMut(&[u8], &Fields) + 'a>;

/// [`overlay_pass`] for a child table (`plan` is its parent's [`TablePlan::for_changes`]):
/// every change, put or delete, replaces the children of its parent key; the last
/// change's elements are the rows that key's children are.
fn child_overlay_pass(
    plan: &TablePlan,
    child: &ChildShape<'_>,
    exports: &[SourcePlan],
    keep: Option<&HashMap<usize, bool>>,
) -> Result<Overlay> {
    let Some(cp) = plan.children.get(child.view) else {
        return Err(Error::Internal("verify: no such child table".into()));
    };
    let col_names: Vec<String> = cp
        .plan
        .columns
        .iter()
        .map(|c| c.spec.name.clone())
        .collect();
    let shape = TableShape {
        col_names: &col_names,
        types: child.types,
        key_idx: child.key_idx,
    };
    // The parent's columns (without the delete flag) and key; the child's columns that
    // hold that key, in its order.
    let n = plan.columns.len().saturating_sub(1);
    let parent_types: Vec<ColumnType> = plan.columns[..n].iter().map(|c| c.rule.ty).collect();
    let parent_key = plan.spec.primary_key_indices();
    let mapped: Vec<usize> = (0..n).collect();
    let parent_idx: Vec<usize> = plan
        .spec
        .primary_key
        .iter()
        .filter_map(|k| {
            cp.plan
                .columns
                .iter()
                .position(|c| c.spec.parent.as_deref() == Some(k.as_str()))
        })
        .collect();
    let mut overlay = Overlay {
        rows: HashMap::new(),
        items: 0,
        rejected_keys: Vec::new(),
        parent_idx: Some(parent_idx.clone()),
        parents: HashSet::new(),
    };
    let mut by_parent: HashMap<Vec<u8>, Vec<Vec<u8>>> = HashMap::new();
    let cancel = AtomicBool::new(false);
    let read = Arc::new(AtomicU64::new(0));
    let tuples = |bytes: Vec<u8>, mut each: TupleFn<'_>| -> Result<()> {
        let mut reader = TupleReader::bare_from(bytes);
        let mut fields = Fields::new();
        loop {
            match reader.next_tuple(&mut fields, |buf, fields| each(buf, fields)) {
                Ok(Some(())) => {}
                Ok(None) => return Ok(()),
                Err(e) => {
                    return Err(Error::Internal(format!(
                        "re-reading our own COPY bytes: {e}"
                    )))
                }
            }
        }
    };
    for export in exports {
        let files: Vec<Result<ChildFile>> = (0..export.splits())
            .into_par_iter()
            .map(|idx| {
                let mut out: ChildFile = (Vec::new(), Vec::new(), 0, Vec::new());
                let mut failure = None;
                export.read_split(idx, 2 << 20, 8192, &read, &cancel, None, |page| {
                    let mut step = || -> Result<()> {
                        let decoded = decode_page(plan, &page).map_err(|e| Error::DataFile {
                            key: page.origin.to_string(),
                            reason: e,
                        })?;
                        out.2 += decoded.items + decoded.skipped;
                        for r in &decoded.rejects {
                            out.3.push(r.key.clone().unwrap_or_else(|| {
                                format!("(line {} of {})", r.line, page.origin)
                            }));
                        }
                        let parents = decoded
                            .batch
                            .project(&mapped)
                            .map_err(|e| Error::Internal(e.to_string()))?;
                        let mut bytes = Vec::new();
                        encode_batch(&parents, &parent_types, &mut bytes)
                            .map_err(|e| Error::Internal(e.to_string()))?;
                        let mut scratch = Vec::new();
                        tuples(
                            bytes,
                            Box::new(|buf, fields| {
                                let (key, _, _) = canon_tuple(
                                    buf,
                                    fields,
                                    &parent_types,
                                    &parent_key,
                                    Encoder::Ours,
                                    &mut scratch,
                                );
                                out.0.push(key);
                            }),
                        )?;
                        let Some(batch) = decoded.children.get(child.view) else {
                            return Ok(());
                        };
                        let mut bytes = Vec::new();
                        encode_batch(batch, child.types, &mut bytes)
                            .map_err(|e| Error::Internal(e.to_string()))?;
                        tuples(
                            bytes,
                            Box::new(|buf, fields| {
                                let (key, _, spans) = canon_tuple(
                                    buf,
                                    fields,
                                    child.types,
                                    child.key_idx,
                                    Encoder::Ours,
                                    &mut scratch,
                                );
                                let parent = key_of(&spans, &scratch, &parent_idx);
                                let (sig, kept) = sign_tuple(
                                    buf,
                                    fields,
                                    &shape,
                                    Encoder::Ours,
                                    keep,
                                    &mut scratch,
                                );
                                out.1.push((key, parent, sig, kept.map(|k| k.1)));
                            }),
                        )
                    };
                    match step() {
                        Ok(()) => true,
                        Err(e) => {
                            failure = Some(e);
                            false
                        }
                    }
                })?;
                match failure {
                    Some(e) => Err(e),
                    None => Ok(out),
                }
            })
            .collect();
        for f in files {
            let (touched, rows, items, rejected) = f?;
            overlay.items += items;
            overlay.rejected_keys.extend(rejected);
            for t in touched {
                for k in by_parent.remove(&t).unwrap_or_default() {
                    overlay.rows.remove(&k);
                }
                overlay.parents.insert(t);
            }
            for (key, parent, sig, kept) in rows {
                by_parent.entry(parent).or_default().push(key.clone());
                overlay.rows.insert(key, Some((sig, kept)));
            }
        }
    }
    Ok(overlay)
}

/// Reads the export again: decode + encode exactly as `load` does, then hash.
pub(super) fn source_pass(
    plan: &TablePlan,
    types: &[ColumnType],
    key_idx: &[usize],
    source: &SourcePlan,
    changes: Option<(&TablePlan, &[SourcePlan])>,
    keep: Option<&HashMap<usize, bool>>,
    view: Option<usize>,
) -> Result<SidePass> {
    let overlay = match (changes, view) {
        (Some((cplan, exports)), None) if !exports.is_empty() => {
            Some(overlay_pass(cplan, types, key_idx, exports, keep)?)
        }
        (Some((cplan, exports)), Some(i)) if !exports.is_empty() => {
            let shape = ChildShape {
                view: i,
                types,
                key_idx,
            };
            Some(child_overlay_pass(cplan, &shape, exports, keep)?)
        }
        _ => None,
    };
    let col_names: Vec<String> = plan
        .view_columns(view)
        .iter()
        .map(|c| c.spec.name.clone())
        .collect();
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
                let decoded = match decode_page(plan, &page) {
                    Ok(d) => d.into_view(view),
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
                    let mut replaced = false;
                    let r = reader.next_tuple(&mut fields, |buf, fields| {
                        let (sig, keep_it, skip) = sign_keyed(
                            buf,
                            fields,
                            &shape,
                            Encoder::Ours,
                            keep,
                            &mut scratch,
                            overlay.as_ref(),
                        );
                        replaced = skip;
                        kept.extend(keep_it);
                        sig
                    });
                    match r {
                        Ok(Some(_)) if replaced => {}
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
                    o.items += decoded.items + decoded.skipped;
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
    if let Some(overlay) = overlay {
        o.items += overlay.items;
        o.rejected_keys.extend(overlay.rejected_keys);
        for (key, row) in overlay.rows {
            if let Some((sig, kept)) = row {
                o.rows += 1;
                o.buckets.add(&sig);
                if let Some(k) = kept {
                    o.kept.insert(key, k);
                }
            }
        }
    }
    o.rejected_keys.sort();
    Ok(o)
}

/// Reads the target table through binary COPY, hashing on a thread of its own.
pub(super) async fn target_pass(
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
