//! When the primary key (or a `unique` column) cannot be built after the data because
//! the source repeats keys: which key values repeat, how many, and where each copy is in
//! the source (data file and line), so the user can fix the export or choose an upsert.
//!
//! Input: a [`Error::DuplicateKeys`] from the key build, the table's connection and its
//! source. Output: the same error with its examples and their positions.
//!
//! The positions come from a second read of the export (on all cores, decode speed): each
//! page is decoded and its key columns encoded as the load encoded them, and compared
//! byte for byte with the server's binary form of the repeated values — so a key matches
//! whatever its type. A DynamoDB table scan is not read again (it would cost read capacity).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;
use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::Client;

use super::input::Input;
use crate::decode::{decode_lines, TablePlan};
use crate::encode::encode_batch;
use crate::error::{Duplicates, Error, Result};
use crate::schema::{quote_ident, ColumnType};
use crate::sink::qualified;
use crate::source::SourcePlan;

/// Repeated key values shown, and positions shown per value.
const EXAMPLES: usize = 5;
const POSITIONS: usize = 5;

/// A value in the server's binary form, whatever its type.
struct Raw(Vec<u8>);

impl<'a> FromSql<'a> for Raw {
    fn from_sql(
        _: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw.to_vec()))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// One repeated key: its values (binary, as COPY sends them), how it reads, how many rows.
struct Repeated {
    fields: Vec<Vec<u8>>,
    text: String,
    rows: i64,
}

/// Fills in `err` (a [`Error::DuplicateKeys`] without examples) with the repeated key
/// values, their count and their positions in the source. Anything that fails on the way
/// leaves the error as it came, with the reason it could not say more.
pub(super) async fn describe(c: &Client, schema: &str, p: &Input, err: Error) -> Error {
    let Error::DuplicateKeys(d) = err else {
        return err;
    };
    // A table riding on `p`'s source (its keys built with `p`'s): its own key, read
    // from the source with its own plan.
    let rider = p
        .spec
        .children
        .iter()
        .find(|c| c.rides && d.table == format!("{schema}.{}", c.table.name))
        .map(|c| Input {
            spec: c.table.clone(),
            plan: Arc::new(TablePlan::new(&c.table)),
            source: p.source.clone(),
        });
    let p = rider.as_ref().unwrap_or(p);
    let (table, cause) = (d.table, d.located);
    let dup = |what: String, columns: Vec<String>, count, examples, located| {
        Error::DuplicateKeys(Box::new(Duplicates {
            table: table.clone(),
            what,
            columns,
            count,
            examples,
            located,
        }))
    };
    let mut candidates = vec![(
        format!("primary key ({})", p.spec.primary_key.join(", ")),
        p.spec.primary_key.clone(),
    )];
    for col in p.spec.columns.iter().filter(|c| c.unique) {
        candidates.push((
            format!("unique constraint on {}", col.name),
            vec![col.name.clone()],
        ));
    }
    for (what, columns) in candidates {
        let found = match repeated(c, schema, &p.spec.name, &columns).await {
            Ok(f) => f,
            Err(e) => {
                let why = format!("{}; looking them up failed: {e}", cause.unwrap_or_default());
                return dup(what, columns, 0, Vec::new(), Some(why));
            }
        };
        let Some((count, keys)) = found else { continue };
        let (positions, located) = match &p.source {
            SourcePlan::Export(_) => {
                tracing::info!(table = %table, keys = count, "Repeated keys: reading the export again to find their lines.");
                let plan = p.plan.clone();
                let source = p.source.clone();
                let wanted: Vec<Vec<Vec<u8>>> = keys.iter().map(|k| k.fields.clone()).collect();
                let cols = columns.clone();
                let spec_cols: Vec<String> = p.spec.columns.iter().map(|c| c.name.clone()).collect();
                let found = tokio::task::spawn_blocking(move || {
                    locate(&plan, &source, &spec_cols, &cols, &wanted)
                })
                .await;
                match found {
                    Ok(Ok(pos)) => (pos, None),
                    Ok(Err(e)) => (Vec::new(), Some(format!("their lines could not be found: {e}"))),
                    Err(e) => (Vec::new(), Some(format!("their lines could not be found: {e}"))),
                }
            }
            SourcePlan::Parquet(_) => (
                Vec::new(),
                Some("the source is a snapshot: its rows hold these keys as the snapshot's source did (snapshot a source without them)".into()),
            ),
            SourcePlan::Scan(_) => (
                Vec::new(),
                Some("the source is a DynamoDB table scan: it is not scanned again to find them (that costs read capacity)".into()),
            ),
        };
        let examples = keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let mut s = format!("{} = {}: {} rows", columns.join(", "), k.text, k.rows);
                if let Some(at) = positions.get(i).filter(|v| !v.is_empty()) {
                    s.push_str(", at ");
                    s.push_str(&at.join(", "));
                }
                s
            })
            .collect();
        return dup(what, columns, count, examples, located);
    }
    dup(
        "primary key or unique constraints".into(),
        p.spec.primary_key.clone(),
        0,
        Vec::new(),
        cause,
    )
}

/// How many values of `columns` repeat in the table, and the first few (most repeated
/// first); `None` when none does.
async fn repeated(
    c: &Client,
    schema: &str,
    table: &str,
    columns: &[String],
) -> std::result::Result<Option<(u64, Vec<Repeated>)>, tokio_postgres::Error> {
    let cols: Vec<String> = columns.iter().map(|c| quote_ident(c)).collect();
    let list = cols.join(", ");
    let not_null = cols
        .iter()
        .map(|c| format!("{c} IS NOT NULL"))
        .collect::<Vec<_>>()
        .join(" AND ");
    let text = cols
        .iter()
        .map(|c| format!("{c}::text"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT {list}, concat_ws(', ', {text}), n, count(*) OVER () FROM \
         (SELECT {list}, count(*) AS n FROM {t} WHERE {not_null} GROUP BY {list} HAVING count(*) > 1) d \
         ORDER BY n DESC LIMIT {EXAMPLES}",
        t = qualified(schema, table),
    );
    let rows = c.query(&sql, &[]).await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let k = columns.len();
    let total: i64 = first.get(k + 2);
    let keys = rows
        .iter()
        .map(|r| Repeated {
            fields: (0..k).map(|i| r.get::<_, Raw>(i).0).collect(),
            text: r.get(k),
            rows: r.get(k + 1),
        })
        .collect();
    Ok(Some((u64::try_from(total).unwrap_or(0), keys)))
}

/// Every position (`file line N`) of each wanted key in the export, up to [`POSITIONS`]
/// per key, reading the files on all cores.
fn locate(
    plan: &TablePlan,
    source: &SourcePlan,
    spec_cols: &[String],
    columns: &[String],
    wanted: &[Vec<Vec<u8>>],
) -> Result<Vec<Vec<String>>> {
    let idx: Vec<usize> = columns
        .iter()
        .filter_map(|c| spec_cols.iter().position(|s| s == c))
        .collect();
    let all: Vec<ColumnType> = plan.types().collect();
    let types: Vec<ColumnType> = idx.iter().map(|&i| all[i]).collect();
    let lookup: HashMap<&[Vec<u8>], usize> = wanted
        .iter()
        .enumerate()
        .map(|(i, k)| (k.as_slice(), i))
        .collect();
    let found: Mutex<Vec<Vec<(usize, u64, String)>>> = Mutex::new(vec![Vec::new(); wanted.len()]);
    let (bytes, cancel) = (Arc::new(AtomicU64::new(0)), AtomicBool::new(false));
    let keys_of = |data: &[u8], first_line: u64| -> Result<Vec<usize>> {
        let page = decode_lines(plan, data, first_line).map_err(Error::Internal)?;
        let batch = page
            .batch
            .project(&idx)
            .map_err(|e| Error::Internal(e.to_string()))?;
        let mut out = Vec::new();
        encode_batch(&batch, &types, &mut out).map_err(|e| Error::Internal(e.to_string()))?;
        Ok(copy_rows(&out, types.len())
            .iter()
            .filter_map(|r| lookup.get(r.as_slice()).copied())
            .collect())
    };
    (0..source.splits())
        .into_par_iter()
        .try_for_each(|split| -> Result<()> {
            let name = source.split_name(split);
            let mut failed = None;
            source.read_split(split, 4 << 20, 1 << 16, &bytes, &cancel, None, |page| {
                match keys_of(&page.data, page.first_line) {
                    Ok(hits) if hits.is_empty() => {}
                    Ok(_) => {
                        // A page with a hit: line by line, for the line numbers.
                        let lines = page.data.split(|&b| b == b'\n');
                        for (line_no, line) in (page.first_line..).zip(lines) {
                            if let Ok(hits) = keys_of(line, line_no) {
                                if let Some(&k) = hits.first() {
                                    if let Ok(mut f) = found.lock() {
                                        f[k].push((split, line_no, name.clone()));
                                    }
                                }
                            }
                        }
                    }
                    Err(e) => {
                        failed = Some(e);
                        return false;
                    }
                }
                true
            })?;
            failed.map_or(Ok(()), Err)
        })?;
    let mut found = found.into_inner().unwrap_or_default();
    Ok(found
        .iter_mut()
        .map(|at| {
            at.sort();
            let mut s: Vec<String> = at
                .iter()
                .take(POSITIONS)
                .map(|(_, line, name)| format!("{name} line {line}"))
                .collect();
            if at.len() > POSITIONS {
                s.push(format!("… ({} in all)", at.len()));
            }
            s
        })
        .collect())
}

/// The fields of each binary COPY tuple in `data` (as [`encode_batch`] writes them; a
/// NULL field is empty, which no repeated key holds).
fn copy_rows(data: &[u8], nfields: usize) -> Vec<Vec<Vec<u8>>> {
    let mut rows = Vec::new();
    let mut at = 2; // each tuple starts with its field count
    while at <= data.len() {
        let mut fields = Vec::with_capacity(nfields);
        for _ in 0..nfields {
            let Some(len) = data.get(at..at + 4) else {
                return rows;
            };
            let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
            at += 4;
            let n = usize::try_from(len).unwrap_or(0);
            fields.push(data.get(at..at + n).map(<[u8]>::to_vec).unwrap_or_default());
            at += n;
        }
        rows.push(fields);
        at += 2;
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::copy_rows;

    #[test]
    fn copy_rows_splits_tuples_into_fields() {
        let mut data = Vec::new();
        for (a, b) in [(&b"ab"[..], &b"c"[..]), (&b""[..], &b"xyz"[..])] {
            data.extend_from_slice(&2i16.to_be_bytes());
            for f in [a, b] {
                data.extend_from_slice(&(f.len() as i32).to_be_bytes());
                data.extend_from_slice(f);
            }
        }
        let rows = copy_rows(&data, 2);
        assert_eq!(
            rows,
            vec![
                vec![b"ab".to_vec(), b"c".to_vec()],
                vec![Vec::new(), b"xyz".to_vec()]
            ]
        );
    }
}
