//! Child tables in an upsert or a sync: an item's children are replaced with the item.
//! Per connection, a staging table per child table (its columns, no constraint); per
//! chunk, inside its transaction: the rows of every staged parent key deleted from each
//! child table (before the parent's merge, so no foreign key is broken), then — after it —
//! the staged children inserted (a child key staged twice keeps its last copy).
//!
//! Input: the parent's staged rows ([`UPSERT_STAGE`]) and the children's staged rows.
//! Output: each child table holding exactly the children of the parent's current items.

use bytes::Bytes;
use tokio_postgres::Client;

use super::copy::CopyStream;
use super::ddl::key_list;
use super::{qualified, UPSERT_STAGE};
use crate::config::TableSpec;
use crate::error::{Error, Result};
use crate::schema::quote_ident;

/// The staging table of the `i`-th child table.
fn stage_name(i: usize) -> String {
    format!("ddb2pg_child_stage_{i}")
}

/// Creates this connection's staging tables for `children`, emptied at each commit.
///
/// # Errors
/// SQL fails.
pub async fn create_stages(client: &Client, schema: &str, children: &[TableSpec]) -> Result<()> {
    for (i, child) in children.iter().enumerate() {
        let cols: Vec<String> = child.columns.iter().map(|c| quote_ident(&c.name)).collect();
        let sql = format!(
            "CREATE TEMP TABLE {stage} ON COMMIT DELETE ROWS AS SELECT {cols} FROM {target} WITH NO DATA",
            stage = quote_ident(&stage_name(i)),
            cols = cols.join(", "),
            target = qualified(schema, &child.name),
        );
        client
            .batch_execute(&sql)
            .await
            .map_err(|e| Error::pg(&child.name, "create the child staging table", &e))?;
    }
    Ok(())
}

/// COPYs the `i`-th child table's rows (`parts`: COPY tuples and their rows) into its
/// stage, or straight into the table (`into_stage` false); whether any row was sent.
///
/// # Errors
/// The COPY fails.
pub async fn copy_rows(
    client: &Client,
    schema: &str,
    (i, child): (usize, &TableSpec),
    write_bytes: usize,
    into_stage: bool,
    parts: Vec<(Bytes, u64)>,
) -> Result<bool> {
    if parts.iter().all(|p| p.1 == 0) {
        return Ok(false);
    }
    let target = match into_stage {
        true => quote_ident(&stage_name(i)),
        false => qualified(schema, &child.name),
    };
    let mut s = CopyStream::start_into(client, schema, child, write_bytes, target).await?;
    for (bytes, rows) in parts.into_iter().filter(|p| p.1 > 0) {
        s.write(bytes, rows).await?;
    }
    s.finish().await?;
    Ok(true)
}

/// The `parent` column of a child table taking each of the parent's key columns, in key
/// order (checked by the config: a child table takes its parent's whole key).
fn parent_key_columns<'a>(parent: &'a TableSpec, child: &'a TableSpec) -> Vec<(&'a str, &'a str)> {
    parent
        .primary_key
        .iter()
        .filter_map(|k| {
            child
                .columns
                .iter()
                .find(|c| c.parent.as_deref() == Some(k.as_str()))
                .map(|c| (k.as_str(), c.name.as_str()))
        })
        .collect()
}

/// Deletes the rows of every child table whose parent key is staged (a put's children are
/// replaced, a delete's go).
///
/// # Errors
/// SQL fails.
pub async fn delete_replaced(
    client: &Client,
    schema: &str,
    parent: &TableSpec,
    children: &[TableSpec],
) -> Result<u64> {
    let mut deleted = 0;
    for child in children {
        let pairs = parent_key_columns(parent, child);
        let keys: Vec<String> = pairs.iter().map(|(k, _)| quote_ident(k)).collect();
        let on: Vec<String> = pairs
            .iter()
            .map(|(k, c)| format!("t.{} = s.{}", quote_ident(c), quote_ident(k)))
            .collect();
        let sql = format!(
            "DELETE FROM {target} t USING (SELECT DISTINCT {keys} FROM {stage}) s WHERE {on}",
            target = qualified(schema, &child.name),
            keys = keys.join(", "),
            stage = quote_ident(UPSERT_STAGE),
            on = on.join(" AND "),
        );
        deleted += client
            .execute(&sql, &[])
            .await
            .map_err(|e| Error::pg(&child.name, "delete the replaced children", &e))?;
    }
    Ok(deleted)
}

/// Inserts the staged rows of the child tables `staged` says were sent; a child key staged
/// twice (its parent item twice in the chunk) keeps the copy staged last.
///
/// # Errors
/// SQL fails.
pub async fn insert_staged(
    client: &Client,
    schema: &str,
    children: &[TableSpec],
    staged: &[bool],
) -> Result<()> {
    for (i, child) in children.iter().enumerate() {
        if !staged.get(i).copied().unwrap_or(false) {
            continue;
        }
        let cols: Vec<String> = child.columns.iter().map(|c| quote_ident(&c.name)).collect();
        let key = key_list(&child.primary_key);
        let sql = format!(
            "INSERT INTO {target} ({cols}) SELECT {cols} FROM \
             (SELECT DISTINCT ON ({key}) * FROM {stage} ORDER BY {key}, ctid DESC) s",
            target = qualified(schema, &child.name),
            cols = cols.join(", "),
            stage = quote_ident(&stage_name(i)),
        );
        client
            .execute(&sql, &[])
            .await
            .map_err(|e| Error::pg(&child.name, "insert the staged children", &e))?;
    }
    Ok(())
}
