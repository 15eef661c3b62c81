//! `ddb2pg promote` and `ddb2pg rollback`: swap a rehearsed staging schema in, and back.
//!
//! `promote --from staging_2 --to public` is one transaction of schema renames: `public`
//! becomes `public_ddb2pg_prev` (kept for a rollback), `staging_2` becomes `public`. The
//! swap is recorded in `ddb2pg.promotions`. `rollback --to public` is the reverse, also one
//! transaction: `public` becomes `staging_2` again and `public_ddb2pg_prev` becomes
//! `public`. Renames move every object of the schema (tables, indexes, sequences, views)
//! and take a moment whatever the data size; only one previous schema is kept, so a second
//! promote asks for a rollback or `--discard-previous` first.

use tokio_postgres::Client;

use super::carry;
use crate::error::{Error, Result};
use crate::load::state;
use crate::schema::quote_ident;

/// What a promote or rollback did (or, with `--check`, would do).
#[derive(Debug, Clone, Default)]
pub struct Swap {
    /// (old name, new name) in the order applied.
    pub renames: Vec<(String, String)>,
    /// A previous schema dropped on request (`--discard-previous`).
    pub dropped: Option<String>,
    /// Owners and privileges given to the promoted schema and its relations.
    pub carried: Vec<String>,
    /// What stays bound to the replaced tables (listed before the swap).
    pub not_carried: Vec<String>,
}

/// The schema a promote keeps the replaced `to` in.
#[must_use]
pub fn previous_name(to: &str) -> String {
    format!("{to}_ddb2pg_prev")
}

fn fail(action: &str, reason: String) -> Error {
    Error::Postgres {
        table: "(schemas)".into(),
        action: action.into(),
        reason,
    }
}

async fn schema_exists(c: &impl tokio_postgres::GenericClient, name: &str) -> Result<bool> {
    let row = c
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
            &[&name],
        )
        .await
        .map_err(|e| Error::pg("(schemas)", "look up a schema", &e))?;
    Ok(row.get(0))
}

async fn ensure_log(c: &Client) -> Result<()> {
    c.batch_execute(
        "CREATE SCHEMA IF NOT EXISTS ddb2pg; \
         CREATE TABLE IF NOT EXISTS ddb2pg.promotions ( \
           id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(), \
           action text NOT NULL, from_schema text NOT NULL, to_schema text NOT NULL, \
           previous_schema text)",
    )
    .await
    .map_err(|e| Error::pg("ddb2pg.promotions", "create", &e))
}

fn check_names(from: &str, to: &str) -> Result<()> {
    for n in [from, to] {
        if n.is_empty() || n == "ddb2pg" || n.starts_with("pg_") || n == "information_schema" {
            return Err(Error::Usage(format!(
                "schema `{n}` cannot be promoted or replaced"
            )));
        }
    }
    if from == to {
        return Err(Error::Usage("--from and --to name the same schema".into()));
    }
    Ok(())
}

/// Swaps `from` in as `to`, keeping the old `to` as [`previous_name`]; `to`'s owner and
/// privileges go to `from` and its relations in the same transaction. With `check`,
/// everything is looked at and nothing changes.
///
/// # Errors
/// A missing `from`, a load into `from` that is not done (live, stopped, or abandoned:
/// named with its run), a previous schema still kept (unless `discard_previous`), or a
/// failed rename; nothing changes then.
pub async fn promote(
    c: &mut Client,
    from: &str,
    to: &str,
    discard_previous: bool,
    check: bool,
) -> Result<Swap> {
    check_names(from, to)?;
    ensure_log(c).await?;
    let prev = previous_name(to);
    let tx = begin_locked(c).await?;
    // No load plans a run while the swap is decided and made.
    state::lock_plan_for_transaction(&tx).await?;
    if !schema_exists(&tx, from).await? {
        return Err(fail("promote", format!("schema `{from}` does not exist")));
    }
    let unfinished = state::unfinished_in_schema(&tx, from).await?;
    if !unfinished.is_empty() {
        return Err(fail(
            "promote",
            format!(
                "schema `{from}` does not hold a finished load, nothing was swapped:\n  {}",
                unfinished.join("\n  ")
            ),
        ));
    }
    let mut swap = Swap::default();
    let to_exists = schema_exists(&tx, to).await?;
    if to_exists && schema_exists(&tx, &prev).await? {
        if !discard_previous {
            return Err(fail(
                "promote",
                format!(
                    "schema `{prev}` still holds what an earlier promote replaced: `ddb2pg rollback --to {to}` to go back to it, or promote with --discard-previous to drop it"
                ),
            ));
        }
        if !check {
            tx.batch_execute(&format!("DROP SCHEMA {} CASCADE", quote_ident(&prev)))
                .await
                .map_err(|e| Error::pg("(schemas)", "drop the previous schema", &e))?;
        }
        swap.dropped = Some(prev.clone());
    }
    if to_exists {
        swap.not_carried = carry::cannot_carry(&tx, to).await?;
        for line in &swap.not_carried {
            tracing::warn!("Not carried by the swap: {line}.");
        }
        swap.carried = carry::carry_privileges(&tx, to, from).await?;
        swap.renames.push((to.to_string(), prev.clone()));
    }
    swap.renames.push((from.to_string(), to.to_string()));
    if check {
        // Dropping the transaction rolls the privileges back: nothing changed.
        return Ok(swap);
    }
    if to_exists {
        rename(&tx, to, &prev).await?;
    }
    rename(&tx, from, to).await?;
    tx.execute(
        "INSERT INTO ddb2pg.promotions (action, from_schema, to_schema, previous_schema) VALUES ('promote', $1, $2, $3)",
        &[&from, &to, &(to_exists.then_some(prev.as_str()))],
    )
    .await
    .map_err(|e| Error::pg("ddb2pg.promotions", "record", &e))?;
    tx.commit()
        .await
        .map_err(|e| Error::pg("(schemas)", "commit the promote", &e))?;
    Ok(swap)
}

/// Undoes the last promote into `to`: `to` gets its promoted-from name back and the kept
/// previous schema becomes `to` again.
///
/// # Errors
/// No promote recorded, no previous schema kept, or the original name taken meanwhile.
pub async fn rollback(c: &mut Client, to: &str) -> Result<Swap> {
    ensure_log(c).await?;
    let prev = previous_name(to);
    let tx = begin_locked(c).await?;
    state::lock_plan_for_transaction(&tx).await?;
    let last = tx
        .query_opt(
            "SELECT from_schema, previous_schema FROM ddb2pg.promotions \
             WHERE to_schema = $1 AND action = 'promote' ORDER BY id DESC LIMIT 1",
            &[&to],
        )
        .await
        .map_err(|e| Error::pg("ddb2pg.promotions", "read", &e))?
        .ok_or_else(|| fail("rollback", format!("no promote into `{to}` is recorded")))?;
    let from: String = last.get(0);
    let had_previous: Option<String> = last.get(1);
    if had_previous.is_some() && !schema_exists(&tx, &prev).await? {
        return Err(fail(
            "rollback",
            format!("the previous schema `{prev}` is gone (rolled back already, or dropped)"),
        ));
    }
    if schema_exists(&tx, &from).await? {
        return Err(fail(
            "rollback",
            format!("schema `{from}` exists again: rename or drop it, then roll back"),
        ));
    }
    let mut swap = Swap::default();
    rename(&tx, to, &from).await?;
    swap.renames.push((to.to_string(), from.clone()));
    if had_previous.is_some() {
        rename(&tx, &prev, to).await?;
        swap.renames.push((prev.clone(), to.to_string()));
    }
    tx.execute(
        "INSERT INTO ddb2pg.promotions (action, from_schema, to_schema, previous_schema) VALUES ('rollback', $1, $2, $3)",
        &[&from, &to, &had_previous],
    )
    .await
    .map_err(|e| Error::pg("ddb2pg.promotions", "record", &e))?;
    // The promote is undone: the next rollback must not find it again.
    tx.execute(
        "UPDATE ddb2pg.promotions SET action = 'promote (rolled back)' \
         WHERE id = (SELECT max(id) FROM ddb2pg.promotions WHERE to_schema = $1 AND action = 'promote')",
        &[&to],
    )
    .await
    .map_err(|e| Error::pg("ddb2pg.promotions", "record", &e))?;
    tx.commit()
        .await
        .map_err(|e| Error::pg("(schemas)", "commit the rollback", &e))?;
    Ok(swap)
}

/// A transaction holding the promote lock: one promote or rollback at a time per database.
async fn begin_locked(c: &mut Client) -> Result<tokio_postgres::Transaction<'_>> {
    let tx = c
        .transaction()
        .await
        .map_err(|e| Error::pg("(schemas)", "begin", &e))?;
    tx.batch_execute("SELECT pg_advisory_xact_lock(hashtext('ddb2pg promote'))")
        .await
        .map_err(|e| Error::pg("(schemas)", "lock", &e))?;
    Ok(tx)
}

async fn rename(c: &impl tokio_postgres::GenericClient, from: &str, to: &str) -> Result<()> {
    c.batch_execute(&format!(
        "ALTER SCHEMA {} RENAME TO {}",
        quote_ident(from),
        quote_ident(to)
    ))
    .await
    .map_err(|e| Error::pg("(schemas)", &format!("rename schema {from} to {to}"), &e))?;
    // The recorded runs and rejects follow their tables.
    state::rename_schema(c, from, to).await
}
