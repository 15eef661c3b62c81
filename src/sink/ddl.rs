//! Tables per mode: created from the mapping (keys after the data), emptied for a
//! replace, checked against the mapping when they exist; the primary key, unique
//! constraints and `[[tables.indexes]]` built after the data; foreign keys added `NOT
//! VALID` and validated once every table is in; the upsert staging table and its merge.
//!
//! Input: a table's mapping and a connection. Output: SQL run on the target, and what
//! it found (orphans of a foreign key, rows an upsert inserted or updated).

use std::fmt::Write as _;

use tokio_postgres::Client;

use super::{qualified, Mode, UPSERT_STAGE};
use crate::config::{ColumnSpec, ForeignKey, Reference, TableSpec};
use crate::convert::Cell;
use crate::error::{pg_reason, Error, Result};
use crate::scalar::time::{format_date, format_timestamp};
use crate::scalar::uuid::format_uuid;
use crate::schema::{pg_name, quote_ident, ColumnType};

/// What preparing the table did.
#[derive(Debug, Clone, Copy)]
pub struct Prepared {
    /// The table was created by this load: keys are built after the data, and on failure
    /// it is dropped again.
    pub created: bool,
    /// Build the primary key and unique constraints once the data is in.
    pub keys_after: bool,
}

/// Makes the table ready for the load according to `mode`: a replace empties it and takes
/// its declared keys and indexes off (built again after the data, as for a new table).
///
/// # Errors
/// The table holds rows in `create` mode, its columns do not match the mapping, a replace
/// finds an index or constraint the mapping does not declare (unless `keep_undeclared`), or
/// SQL fails.
pub async fn prepare_table(
    client: &Client,
    schema: &str,
    spec: &TableSpec,
    mode: Mode,
    keep_undeclared: bool,
) -> Result<Prepared> {
    let qname = qualified(schema, &spec.name);
    let name = format!("{schema}.{}", spec.name);
    client
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {}",
            quote_ident(schema)
        ))
        .await
        .map_err(|e| Error::pg(&name, "create schema", &e))?;
    let existing = client
        .query(
            "SELECT a.attname, a.atttypid FROM pg_attribute a \
             JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped",
            &[&schema, &spec.name],
        )
        .await
        .map_err(|e| Error::pg(&name, "look up the table", &e))?;
    if existing.is_empty() && mode == Mode::Sync {
        return Err(Error::Postgres {
            table: name,
            action: "prepare (sync)".into(),
            reason: "the table does not exist: load it before applying its changes".into(),
        });
    }
    if existing.is_empty() {
        // An upsert needs the key's unique index from the start (ON CONFLICT uses it).
        let keys_now = mode == Mode::Upsert;
        client
            .batch_execute(&create_table_sql(schema, spec, keys_now))
            .await
            .map_err(|e| Error::pg(&name, "create table", &e))?;
        return Ok(Prepared {
            created: true,
            keys_after: !keys_now,
        });
    }
    let mut problems = Vec::new();
    for c in &spec.columns {
        match existing.iter().find(|r| r.get::<_, String>(0) == c.name) {
            None => problems.push(format!("column `{}` is missing", c.name)),
            Some(r) => {
                let oid: u32 = r.get(1);
                if oid != c.ty.pg_type().oid() {
                    problems.push(format!(
                        "column `{}` has type OID {oid}, the mapping says {} (OID {})",
                        c.name,
                        c.ty,
                        c.ty.pg_type().oid()
                    ));
                }
            }
        }
    }
    if !problems.is_empty() {
        return Err(Error::Postgres {
            table: name,
            action: "check the existing table".into(),
            reason: format!("it does not match pipeline.toml: {}", problems.join("; ")),
        });
    }
    // The configured key must be there when the load ends: built after the data when
    // it is missing (an upsert needs it before, for ON CONFLICT).
    let missing = keys_missing(client, schema, spec).await?;
    if missing && mode == Mode::Sync {
        return Err(Error::Postgres {
            table: name,
            action: "prepare (sync)".into(),
            reason: format!(
                "the table has no primary key or unique constraint on ({}) as pipeline.toml declares: changes apply by that key",
                spec.primary_key.join(", ")
            ),
        });
    }
    if missing && mode == Mode::Upsert {
        add_keys(client, schema, spec).await?;
    }
    match mode {
        Mode::Create => {
            let has_rows = client
                .query_one(&format!("SELECT EXISTS (SELECT 1 FROM {qname})"), &[])
                .await
                .map_err(|e| Error::pg(&name, "check the table is empty", &e))?;
            if has_rows.get::<_, bool>(0) {
                return Err(Error::Postgres {
                    table: name,
                    action: "prepare (mode create)".into(),
                    reason: "the table already holds rows; use --mode append to add to them or --mode replace to reload it".into(),
                });
            }
        }
        Mode::Append | Mode::Upsert | Mode::Sync => {}
        Mode::Replace => {
            client
                .batch_execute(&format!("TRUNCATE {qname}"))
                .await
                .map_err(|e| Error::pg(&name, "truncate (mode replace)", &e))?;
            take_indexes_off(client, schema, spec, keep_undeclared).await?;
            return Ok(Prepared {
                created: false,
                keys_after: true,
            });
        }
    }
    Ok(Prepared {
        created: false,
        keys_after: missing && mode != Mode::Upsert,
    })
}

/// An index of an existing table, as the catalog describes it.
struct ExistingIndex {
    name: String,
    /// The constraint it backs (`p`rimary key, `u`nique, e`x`clusion), if any.
    constraint: Option<(String, String)>,
    /// Its columns in order; empty for an expression.
    columns: Vec<String>,
    /// Built on an expression or with a predicate.
    expression_or_partial: bool,
    unique: bool,
}

/// For a replace (the table just emptied, in the run's transaction): drops the declared
/// primary key, `unique` constraints and `[[tables.indexes]]`, which the end of the load
/// builds again after the data — COPY into a table without them runs at a new table's
/// speed. An index or constraint the mapping does not declare could not be built again:
/// it stops the load before any work (the transaction rolls back), unless
/// `keep_undeclared` (then it stays, and is fed row by row).
///
/// # Errors
/// An undeclared index or constraint (naming each), or SQL.
async fn take_indexes_off(
    client: &Client,
    schema: &str,
    spec: &TableSpec,
    keep_undeclared: bool,
) -> Result<()> {
    let name = format!("{schema}.{}", spec.name);
    let rows = client
        .query(
            "SELECT i.relname::text, con.conname::text, con.contype::text, \
               ARRAY(SELECT a.attname::text FROM unnest(x.indkey::int2[]) WITH ORDINALITY k(n, o) \
                     JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.n \
                     ORDER BY k.o), \
               x.indexprs IS NOT NULL OR x.indpred IS NOT NULL, x.indisunique \
             FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid \
             JOIN pg_class t ON t.oid = x.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace \
             LEFT JOIN pg_constraint con ON con.conindid = x.indexrelid AND con.conrelid = x.indrelid \
               AND con.contype IN ('p', 'u', 'x') \
             WHERE n.nspname = $1 AND t.relname = $2 ORDER BY i.relname",
            &[&schema, &spec.name],
        )
        .await
        .map_err(|e| Error::pg(&name, "list the table's indexes", &e))?;
    let existing: Vec<ExistingIndex> = rows
        .iter()
        .map(|r| ExistingIndex {
            name: r.get(0),
            constraint: r
                .get::<_, Option<String>>(1)
                .zip(r.get::<_, Option<String>>(2)),
            columns: r.get(3),
            expression_or_partial: r.get(4),
            unique: r.get(5),
        })
        .collect();
    let mut drops = Vec::new();
    let mut undeclared = Vec::new();
    for ix in &existing {
        let plain = !ix.expression_or_partial;
        let on_unique_column = plain
            && ix.columns.len() == 1
            && spec
                .columns
                .iter()
                .any(|c| c.unique && c.name == ix.columns[0]);
        let declared = match &ix.constraint {
            Some((con, kind))
                if (kind == "p" && plain && ix.columns == spec.primary_key)
                    || (kind == "u" && on_unique_column) =>
            {
                Some(format!(
                    "ALTER TABLE {} DROP CONSTRAINT {}",
                    qualified(schema, &spec.name),
                    quote_ident(con)
                ))
            }
            // A declared index, or a unique index on a `unique` column (the constraint
            // built after stands for it).
            None if spec.indexes.iter().any(|d| d.name == ix.name)
                || (ix.unique && on_unique_column) =>
            {
                Some(format!("DROP INDEX {}", qualified(schema, &ix.name)))
            }
            _ => None,
        };
        match declared {
            Some(sql) => drops.push(sql),
            None => undeclared.push(match &ix.constraint {
                Some((con, kind)) => format!(
                    "{} constraint {con}",
                    match kind.as_str() {
                        "p" => "primary key",
                        "u" => "unique",
                        _ => "exclusion",
                    }
                ),
                None => format!("index {}", ix.name),
            }),
        }
    }
    // A kept constraint under a declared index's name would stand in for that index.
    if let Some(ix) = existing.iter().find(|ix| {
        ix.constraint.is_some()
            && spec.indexes.iter().any(|d| d.name == ix.name)
            && undeclared.iter().any(|u| {
                u.ends_with(&format!(
                    " {}",
                    ix.constraint.as_ref().map_or("", |c| c.0.as_str())
                ))
            })
    }) {
        return Err(Error::Usage(format!(
            "table {name}: index {} backs a constraint pipeline.toml does not declare, under the name of a declared [[tables.indexes]]: rename one of them. The table was not emptied",
            ix.name
        )));
    }
    if !undeclared.is_empty() && !keep_undeclared {
        return Err(Error::Usage(format!(
            "table {name}: --mode replace takes the table's keys and indexes off for the load and builds them again after it, from pipeline.toml; {} {} not declared there, so it could not be built again. Declare it (primary_key, unique = true, [[tables.indexes]]), drop it, or add --keep-undeclared to load around it (slower: fed row by row). The table was not emptied",
            undeclared.join(", "),
            if undeclared.len() == 1 { "is" } else { "are" }
        )));
    }
    for u in &undeclared {
        tracing::info!(table = %name, "Kept (--keep-undeclared): {u}, fed row by row.");
    }
    if !drops.is_empty() {
        client
            .batch_execute(&drops.join("; "))
            .await
            .map_err(|e| Error::pg(&name, "take the keys and indexes off (mode replace)", &e))?;
    }
    Ok(())
}

/// `CREATE TABLE` for a mapping; keys inline only when `with_keys`.
#[must_use]
pub fn create_table_sql(schema: &str, spec: &TableSpec, with_keys: bool) -> String {
    let mut cols: Vec<String> = spec.columns.iter().map(column_sql).collect();
    if with_keys {
        cols.push(format!(
            "CONSTRAINT {} PRIMARY KEY ({})",
            quote_ident(&primary_key_name(&spec.name)),
            key_list(&spec.primary_key)
        ));
    }
    format!(
        "CREATE TABLE {} (\n  {}\n)",
        qualified(schema, &spec.name),
        cols.join(",\n  ")
    )
}

/// Column `c` of row `alias` as a merge compares it: `json` has no equality operator, so
/// it compares as its text (exactly what was written).
pub(crate) fn compared(spec: &TableSpec, c: &str, alias: &str) -> String {
    let json = spec
        .columns
        .iter()
        .any(|col| col.name == c && col.ty == crate::schema::ColumnType::Json);
    if json {
        format!("{alias}.{}::text", quote_ident(c))
    } else {
        format!("{alias}.{}", quote_ident(c))
    }
}

pub(crate) fn key_list(cols: &[String]) -> String {
    cols.iter()
        .map(|c| quote_ident(c))
        .collect::<Vec<_>>()
        .join(", ")
}

fn column_sql(c: &ColumnSpec) -> String {
    let mut s = format!("{} {}", quote_ident(&c.name), c.ty.sql());
    if let Some(d) = c.default.as_ref().and_then(|d| default_sql(c.ty, d)) {
        s.push_str(" DEFAULT ");
        s.push_str(&d);
    }
    if c.required {
        s.push_str(" NOT NULL");
    }
    s
}

/// 0001-01-01, in days since 1970-01-01.
const FIRST_DAY: i32 = -719_162;

/// The SQL literal of a scalar default, so rows inserted later get it too: the value
/// decode fills in, as PostgreSQL reads it back (an array default is left to the load).
fn default_sql(ty: ColumnType, v: &Cell<'_>) -> Option<String> {
    let text = match v {
        Cell::Null | Cell::List(_) => return None,
        Cell::Str(s) => s.to_string(),
        Cell::I16(n) => n.to_string(),
        Cell::I32(n) => n.to_string(),
        Cell::I64(n) => n.to_string(),
        Cell::F32(f) => f.to_string(),
        Cell::F64(f) => f.to_string(),
        Cell::Bool(b) => b.to_string(),
        Cell::Uuid(u) => format_uuid(u),
        // Before year 1 the ISO form has no year PostgreSQL reads: left to the load.
        Cell::Date(days) if *days < FIRST_DAY => return None,
        Cell::Micros(m) if m.div_euclid(86_400_000_000) < i64::from(FIRST_DAY) => return None,
        Cell::Date(days) => format_date(i64::from(*days)),
        Cell::Micros(m) => format_timestamp(*m, ty == ColumnType::Timestamptz),
        Cell::Bytes(b) => b.iter().fold(String::from("\\x"), |mut s, byte| {
            let _ = write!(s, "{byte:02x}");
            s
        }),
    };
    Some(format!("'{}'::{}", text.replace('\'', "''"), ty.sql()))
}

/// Adds the primary key and unique constraints after the data (faster than maintaining
/// the index row by row during COPY).
///
/// # Errors
/// Duplicates in the data, with PostgreSQL's description of the first one.
pub async fn add_keys(client: &Client, schema: &str, spec: &TableSpec) -> Result<()> {
    let qname = qualified(schema, &spec.name);
    let name = format!("{schema}.{}", spec.name);
    let mut adds = Vec::new();
    if primary_key_of(client, schema, &spec.name).await?.is_none() {
        adds.push(format!(
            "ADD CONSTRAINT {} PRIMARY KEY ({})",
            quote_ident(&primary_key_name(&spec.name)),
            key_list(&spec.primary_key)
        ));
    }
    for c in missing_uniques(client, schema, spec).await? {
        adds.push(format!(
            "ADD CONSTRAINT {} UNIQUE ({})",
            quote_ident(&unique_name(&spec.name, &c.name)),
            quote_ident(&c.name)
        ));
    }
    if adds.is_empty() {
        return Ok(());
    }
    client
        .execute(&format!("ALTER TABLE {qname} {}", adds.join(", ")), &[])
        .await
        .map(|_| ())
        .map_err(|e| match e.code() {
            Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
                Error::DuplicateKeys(Box::new(crate::error::Duplicates {
                    table: name.clone(),
                    what: "primary key or unique constraints".into(),
                    columns: spec.primary_key.clone(),
                    count: 0,
                    examples: Vec::new(),
                    located: Some(pg_reason(&e)),
                }))
            }
            _ => Error::pg(&name, "build the primary key and unique constraints", &e),
        })
}

/// Whether the existing table lacks the mapping's primary key or a `unique` constraint;
/// refuses a primary key on other columns than the mapping's.
async fn keys_missing(client: &Client, schema: &str, spec: &TableSpec) -> Result<bool> {
    match primary_key_of(client, schema, &spec.name).await? {
        Some(cols) if cols != spec.primary_key => Err(Error::Postgres {
            table: format!("{schema}.{}", spec.name),
            action: "check the existing table".into(),
            reason: format!(
                "its primary key is ({}), pipeline.toml says ({}): a load by one key into a table keyed by another would merge or duplicate rows; fix the mapping or the table",
                cols.join(", "),
                spec.primary_key.join(", ")
            ),
        }),
        Some(_) => Ok(!missing_uniques(client, schema, spec).await?.is_empty()),
        None => Ok(true),
    }
}

/// Creates this connection's staging table for an upsert, emptied at each commit.
///
/// # Errors
/// SQL fails.
pub async fn create_upsert_stage(client: &Client, schema: &str, spec: &TableSpec) -> Result<()> {
    let sql = format!(
        "CREATE TEMP TABLE {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS",
        quote_ident(UPSERT_STAGE),
        qualified(schema, &spec.name)
    );
    client
        .batch_execute(&sql)
        .await
        .map_err(|e| Error::pg(&spec.name, "create the upsert staging table", &e))
}

/// Merges the staging table into the target by primary key; returns (inserted, updated).
/// Rows equal to the target's are left alone (no dead tuples for a re-run that changes
/// nothing). A key the chunk holds more than once (PostgreSQL's `ON CONFLICT` refuses to
/// touch a row twice) keeps its last line: the rows are ordered by `order` — per piece of
/// the chunk in the order it was copied, its first row (1-based) and its rank by source
/// position (split, then line) — and then by their place in the COPY.
///
/// # Errors
/// SQL fails (e.g. the target has no unique index on the key).
pub async fn merge_upsert_stage(
    client: &Client,
    schema: &str,
    spec: &TableSpec,
    order: &[(i64, i32)],
) -> Result<(u64, u64)> {
    let cols: Vec<String> = spec.columns.iter().map(|c| quote_ident(&c.name)).collect();
    let non_key: Vec<&String> = spec
        .columns
        .iter()
        .map(|c| &c.name)
        .filter(|c| !spec.primary_key.contains(c))
        .collect();
    let target = qualified(schema, &spec.name);
    let action = if non_key.is_empty() {
        "DO NOTHING".to_string()
    } else {
        let sets: Vec<String> = non_key
            .iter()
            .map(|c| format!("{0} = EXCLUDED.{0}", quote_ident(c)))
            .collect();
        let old: Vec<String> = non_key.iter().map(|c| compared(spec, c, "t")).collect();
        let new: Vec<String> = non_key
            .iter()
            .map(|c| compared(spec, c, "EXCLUDED"))
            .collect();
        format!(
            "DO UPDATE SET {} WHERE ({}) IS DISTINCT FROM ({})",
            sets.join(", "),
            old.join(", "),
            new.join(", ")
        )
    };
    let key = key_list(&spec.primary_key);
    let stage = quote_ident(UPSERT_STAGE);
    let merge = |from: &str| {
        format!(
            "WITH merged AS (INSERT INTO {target} AS t ({cols}) SELECT {cols} FROM {from} \
             ON CONFLICT ({key}) {action} RETURNING (xmax = 0) AS inserted) \
             SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM merged",
            cols = cols.join(", "),
        )
    };
    let fail =
        |e: &tokio_postgres::Error| Error::pg(&spec.name, "merge the upsert staging table", e);
    client
        .batch_execute("SAVEPOINT ddb2pg_merge")
        .await
        .map_err(|e| fail(&e))?;
    let row = match client.query_one(&merge(&stage), &[]).await {
        Ok(row) => row,
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::CARDINALITY_VIOLATION) => {
            client
                .batch_execute("ROLLBACK TO SAVEPOINT ddb2pg_merge")
                .await
                .map_err(|e| fail(&e))?;
            // The stage is filled by one COPY in this transaction: its ctid order is the
            // COPY's.
            let last = format!(
                "(SELECT DISTINCT ON ({key}) * FROM (SELECT s.*, \
                 ($2::int4[])[width_bucket(row_number() OVER (ORDER BY s.ctid), $1::int8[])] AS ddb2pg_rank, \
                 row_number() OVER (ORDER BY s.ctid) AS ddb2pg_n FROM {stage} s) o \
                 ORDER BY {key}, ddb2pg_rank DESC, ddb2pg_n DESC) last_lines"
            );
            let starts: Vec<i64> = order.iter().map(|o| o.0).collect();
            let ranks: Vec<i32> = order.iter().map(|o| o.1).collect();
            client
                .query_one(&merge(&last), &[&starts, &ranks])
                .await
                .map_err(|e| fail(&e))?
        }
        Err(e) => return Err(fail(&e)),
    };
    let n = |i: usize| u64::try_from(row.get::<_, i64>(i)).unwrap_or(0);
    Ok((n(0), n(1)))
}

/// Drops a table this load created, after a failure.
pub async fn drop_created(client: &Client, schema: &str, table: &str) {
    let sql = format!("DROP TABLE IF EXISTS {}", qualified(schema, table));
    if let Err(e) = client.batch_execute(&sql).await {
        tracing::warn!(table, error = %pg_reason(&e), "Could not drop the table this load created.");
    }
}

/// Builds the table's `[[tables.indexes]]` that do not exist yet; returns the names built.
///
/// # Errors
/// An index that cannot be built (bad expression, duplicates for a unique index), naming it.
pub async fn build_indexes(client: &Client, schema: &str, spec: &TableSpec) -> Result<Vec<String>> {
    let mut built = Vec::new();
    for ix in &spec.indexes {
        let target = match &ix.expression {
            Some(e) => format!("(({e}))"),
            None => format!("({})", key_list(&ix.columns)),
        };
        let mut sql = format!(
            "CREATE {}INDEX IF NOT EXISTS {} ON {} USING {} {target}",
            if ix.unique { "UNIQUE " } else { "" },
            quote_ident(&ix.name),
            qualified(schema, &spec.name),
            ix.using
        );
        if let Some(w) = &ix.predicate {
            sql.push_str(&format!(" WHERE ({w})"));
        }
        // The extended protocol runs exactly one statement: an expression or predicate
        // that tries to end it and start another fails instead of running.
        client.execute(&sql, &[]).await.map_err(|e| {
            Error::pg(
                &format!("{schema}.{}", spec.name),
                &format!("build index {}", ix.name),
                &e,
            )
        })?;
        built.push(ix.name.clone());
    }
    Ok(built)
}

/// A foreign key of the mapping, after the data: added `NOT VALID`, orphans counted, then
/// validated only when there are none.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ForeignKeyReport {
    pub column: String,
    pub references: String,
    pub constraint: String,
    /// Rows whose value has no match in the referenced table.
    pub orphans: u64,
    /// Up to 5 orphans: `key → missing value`.
    pub sample: Vec<String>,
    pub validated: bool,
    /// Why the key was not added (the referenced table does not exist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

/// Adds (or checks) every foreign key of the table: its `references` columns', and a
/// child table's to a parent whose key has several columns.
///
/// # Errors
/// A referenced table or key that does not exist, or SQL that fails.
pub async fn add_foreign_keys(
    client: &Client,
    schema: &str,
    spec: &TableSpec,
) -> Result<Vec<ForeignKeyReport>> {
    let mut out = Vec::new();
    for fk in spec.foreign_keys() {
        out.push(add_foreign_key(client, schema, spec, &fk).await?);
    }
    Ok(out)
}

/// Whether `schema.table` exists.
///
/// # Errors
/// SQL fails.
pub async fn table_exists(client: &Client, schema: &str, table: &str) -> Result<bool> {
    client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2)",
            &[&schema, &table],
        )
        .await
        .map(|r| r.get(0))
        .map_err(|e| Error::pg(&format!("{schema}.{table}"), "look up the table", &e))
}

/// One foreign key: added `NOT VALID` if missing, its orphans counted (with a sample),
/// validated when there are none. A referenced table that does not exist is reported, not
/// fatal (one table loaded alone into a fresh staging schema, say).
async fn add_foreign_key(
    client: &Client,
    schema: &str,
    spec: &TableSpec,
    fk: &ForeignKey,
) -> Result<ForeignKeyReport> {
    let name = format!("{schema}.{}", spec.name);
    let fail = |action: &str, e: &tokio_postgres::Error| Error::pg(&name, action, e);
    let column = fk.columns.join(", ");
    let r = &fk.references;
    let (ref_schema, ref_table) = match r.table.split_once('.') {
        Some((s, t)) => (s.to_string(), t.to_string()),
        None => (schema.to_string(), r.table.clone()),
    };
    if !table_exists(client, &ref_schema, &ref_table).await? {
        tracing::warn!(
            table = %name,
            column = %column,
            "The referenced table {ref_schema}.{ref_table} does not exist: foreign key not added."
        );
        return Ok(ForeignKeyReport {
            column,
            references: format!("{ref_schema}.{ref_table}"),
            constraint: String::new(),
            skipped: Some(format!("{ref_schema}.{ref_table} does not exist")),
            ..ForeignKeyReport::default()
        });
    }
    let ref_q = qualified(&ref_schema, &ref_table);
    let ref_cols = referenced_columns(client, &ref_q, r)
        .await
        .map_err(|e| fail("look up the referenced key", &e))?;
    if ref_cols.len() != fk.columns.len() {
        return Err(Error::Postgres {
            table: name.clone(),
            action: format!("add the foreign key of column {column}"),
            reason: format!(
                "{ref_schema}.{ref_table} needs a primary key of {} column(s), or name the column: references = \"{ref_table}(column)\"",
                fk.columns.len()
            ),
        });
    }
    let table_q = qualified(schema, &spec.name);
    let constraint = fk.constraint(&spec.name);
    let state: Option<bool> = client
        .query_opt(
            "SELECT convalidated FROM pg_constraint WHERE conrelid = $1::text::regclass AND conname = $2",
            &[&table_q, &constraint],
        )
        .await
        .map_err(|e| fail("look up the foreign key", &e))?
        .map(|row| row.get(0));
    let list = |cols: &[String]| {
        cols.iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if state.is_none() {
        client
            .batch_execute(&format!(
                "ALTER TABLE {table_q} ADD CONSTRAINT {} FOREIGN KEY ({}) REFERENCES {ref_q} ({}) NOT VALID",
                quote_ident(&constraint),
                list(&fk.columns),
                list(&ref_cols)
            ))
            .await
            .map_err(|e| fail(&format!("add foreign key {constraint}"), &e))?;
    }
    let (orphans, sample) = orphans(client, spec, &table_q, &fk.columns, &ref_q, &ref_cols)
        .await
        .map_err(|e| fail("count orphans", &e))?;
    let mut validated = state == Some(true);
    if orphans == 0 && !validated {
        client
            .batch_execute(&format!(
                "ALTER TABLE {table_q} VALIDATE CONSTRAINT {}",
                quote_ident(&constraint)
            ))
            .await
            .map_err(|e| fail(&format!("validate foreign key {constraint}"), &e))?;
        validated = true;
    }
    Ok(ForeignKeyReport {
        column,
        references: format!("{ref_schema}.{ref_table}({})", ref_cols.join(", ")),
        constraint,
        orphans,
        sample,
        validated,
        skipped: None,
    })
}

/// The referenced columns: those named, or the referenced table's primary key, in its
/// order (empty when it has none).
async fn referenced_columns(
    client: &Client,
    ref_q: &str,
    r: &Reference,
) -> Result<Vec<String>, tokio_postgres::Error> {
    if !r.columns.is_empty() {
        return Ok(r.columns.clone());
    }
    Ok(client
        .query(
            "SELECT a.attname::text FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
             WHERE i.indrelid = $1::text::regclass AND i.indisprimary ORDER BY array_position(i.indkey, a.attnum)",
            &[&ref_q],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect())
}

/// Rows of `table_q` whose `cols` (none NULL: MATCH SIMPLE) have no match in `ref_q`: how
/// many, and up to five as `key -> missing value`.
async fn orphans(
    client: &Client,
    spec: &TableSpec,
    table_q: &str,
    cols: &[String],
    ref_q: &str,
    ref_cols: &[String],
) -> Result<(u64, Vec<String>), tokio_postgres::Error> {
    let not_null = cols
        .iter()
        .map(|c| format!("c.{} IS NOT NULL", quote_ident(c)))
        .collect::<Vec<_>>()
        .join(" AND ");
    let matched = cols
        .iter()
        .zip(ref_cols)
        .map(|(c, rc)| format!("p.{} = c.{}", quote_ident(rc), quote_ident(c)))
        .collect::<Vec<_>>()
        .join(" AND ");
    let from = format!(
        "FROM {table_q} c WHERE {not_null} AND NOT EXISTS (SELECT 1 FROM {ref_q} p WHERE {matched})"
    );
    let count: i64 = client
        .query_one(&format!("SELECT count(*) {from}"), &[])
        .await?
        .get(0);
    if count == 0 {
        return Ok((0, Vec::new()));
    }
    let key_text = spec
        .primary_key
        .iter()
        .map(|k| format!("c.{}::text", quote_ident(k)))
        .collect::<Vec<_>>()
        .join(", ");
    let value_text = cols
        .iter()
        .map(|c| format!("c.{}::text", quote_ident(c)))
        .collect::<Vec<_>>()
        .join(", ");
    let sample = client
        .query(
            &format!(
                "SELECT concat_ws(',', {key_text}) || ' -> ' || concat_ws(',', {value_text}) {from} LIMIT 5"
            ),
            &[],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    Ok((count.max(0) as u64, sample))
}

/// The constraint name the mapping gives a column's foreign key.
#[must_use]
pub fn foreign_key_name(table: &str, column: &str) -> String {
    pg_name(&format!("{table}_{column}_fkey"))
}

/// The constraint name of the table's primary key.
#[must_use]
pub fn primary_key_name(table: &str) -> String {
    pg_name(&format!("{table}_pkey"))
}

/// The constraint name of a `unique` column.
#[must_use]
pub fn unique_name(table: &str, column: &str) -> String {
    pg_name(&format!("{table}_{column}_key"))
}

/// The columns of `schema.table`'s primary key, in order (`None`: it has none).
///
/// # Errors
/// SQL fails.
pub async fn primary_key_of(
    client: &Client,
    schema: &str,
    table: &str,
) -> Result<Option<Vec<String>>> {
    let rows = client
        .query(
            "SELECT a.attname::text FROM pg_index i \
             JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
             WHERE n.nspname = $1 AND c.relname = $2 AND i.indisprimary \
             ORDER BY array_position(i.indkey, a.attnum)",
            &[&schema, &table],
        )
        .await
        .map_err(|e| Error::pg(&format!("{schema}.{table}"), "look up the primary key", &e))?;
    Ok((!rows.is_empty()).then(|| rows.iter().map(|r| r.get(0)).collect()))
}

/// The `unique` columns of the mapping that no unique index of `schema.table` covers alone.
async fn missing_uniques<'s>(
    client: &Client,
    schema: &str,
    spec: &'s TableSpec,
) -> Result<Vec<&'s ColumnSpec>> {
    let rows = client
        .query(
            "SELECT a.attname::text FROM pg_index i \
             JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
             WHERE n.nspname = $1 AND c.relname = $2 AND i.indisunique AND i.indnkeyatts = 1 \
               AND i.indpred IS NULL AND i.indexprs IS NULL",
            &[&schema, &spec.name],
        )
        .await
        .map_err(|e| {
            Error::pg(
                &format!("{schema}.{}", spec.name),
                "look up the unique indexes",
                &e,
            )
        })?;
    let have: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    Ok(spec
        .columns
        .iter()
        .filter(|c| c.unique && !have.contains(&c.name))
        .collect())
}

/// Before a replace: drops the foreign keys that reference the tables about to be
/// truncated, when the mapping declares them (they are added again after the data, and
/// validated); returns the tables whose keys were dropped. A foreign key the mapping does
/// not declare stops the load before any work, naming it (TRUNCATE would fail, and CASCADE
/// would empty a table that is not ours).
///
/// # Errors
/// An undeclared foreign key, or SQL that fails.
pub async fn drop_declared_foreign_keys(
    client: &Client,
    schema: &str,
    replaced: &[String],
    all: &[TableSpec],
) -> Result<Vec<String>> {
    drop_foreign_keys(client, schema, replaced, all, false, "replace", |con, src, dst| {
        (
            format!("{schema}.{dst}"),
            format!(
                "foreign key {con} of table {src} references it and is not declared in the config: a replace takes the table's key off for the load (and TRUNCATE cannot empty a table another references); declare it (references), drop it, or use --mode upsert"
            ),
        )
    })
    .await
}

/// Drops the foreign keys of `schema` that reference `tables` (and, `both_ways`, those
/// `tables` hold), each declared by the mapping (else `refuse(constraint, from table, to
/// table)` gives the error's table and reason, before any is dropped); returns the tables
/// whose keys were dropped. `why` names the work in errors (`replace`, `sync`).
pub(crate) async fn drop_foreign_keys(
    client: &Client,
    schema: &str,
    tables: &[String],
    all: &[TableSpec],
    both_ways: bool,
    why: &str,
    refuse: impl Fn(&str, &str, &str) -> (String, String),
) -> Result<Vec<String>> {
    let rows = client
        .query(
            "SELECT src.relname::text, con.conname::text, dst.relname::text \
             FROM pg_constraint con \
             JOIN pg_class src ON src.oid = con.conrelid \
             JOIN pg_class dst ON dst.oid = con.confrelid \
             JOIN pg_namespace dn ON dn.oid = dst.relnamespace \
             JOIN pg_namespace sn ON sn.oid = src.relnamespace \
             WHERE con.contype = 'f' AND dn.nspname = $1 AND sn.nspname = $1 \
               AND (dst.relname = ANY($2) OR ($3 AND src.relname = ANY($2))) ORDER BY 1, 2",
            &[&schema, &tables, &both_ways],
        )
        .await
        .map_err(|e| Error::pg("(foreign keys)", "list the foreign keys", &e))?;
    let mut dropped = Vec::new();
    for row in rows {
        let (src, con, dst): (String, String, String) = (row.get(0), row.get(1), row.get(2));
        let declared = all.iter().any(|t| {
            t.name == src
                && t.foreign_keys()
                    .iter()
                    .any(|fk| fk.constraint(&t.name) == con)
        });
        if !declared {
            let (table, reason) = refuse(&con, &src, &dst);
            return Err(Error::Postgres {
                table,
                action: format!("prepare ({why})"),
                reason,
            });
        }
        client
            .batch_execute(&format!(
                "ALTER TABLE {} DROP CONSTRAINT {}",
                qualified(schema, &src),
                quote_ident(&con)
            ))
            .await
            .map_err(|e| {
                Error::pg(
                    &format!("{schema}.{src}"),
                    &format!("drop foreign key {con} for the {why}"),
                    &e,
                )
            })?;
        if !dropped.contains(&src) {
            dropped.push(src);
        }
    }
    Ok(dropped)
}
