//! What a promote carries from the schema it replaces to the one it swaps in, in the
//! swap's transaction: the schema's owner, privileges and default privileges, and each
//! relation's owner and privileges (a table, view or sequence new in the promoted schema
//! gets the replaced schema's default privileges). And what it cannot carry — objects
//! bound to the replaced tables themselves (a view in another schema, a publication, a
//! row-security policy, a trigger, a foreign key from another schema, column privileges),
//! listed before the swap.

use tokio_postgres::GenericClient;

use crate::error::{Error, Result};
use crate::schema::quote_ident;
use crate::sink::qualified;

fn fail(action: &str, e: &tokio_postgres::Error) -> Error {
    Error::pg("(schemas)", action, e)
}

/// The objects bound to the tables of `old` that stay with them when `old` is renamed
/// away: one line each, saying what happens to it.
///
/// # Errors
/// SQL fails.
pub async fn cannot_carry(c: &impl GenericClient, old: &str) -> Result<Vec<String>> {
    let checks: [(&str, &str); 6] = [
        (
            "SELECT DISTINCT format('view %I.%I reads %I.%I: after the swap it still reads the replaced table; recreate it', \
               vn.nspname, v.relname, tn.nspname, t.relname) \
             FROM pg_depend d JOIN pg_rewrite rw ON rw.oid = d.objid JOIN pg_class v ON v.oid = rw.ev_class \
             JOIN pg_namespace vn ON vn.oid = v.relnamespace JOIN pg_class t ON t.oid = d.refobjid \
             JOIN pg_namespace tn ON tn.oid = t.relnamespace \
             WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass \
               AND tn.nspname = $1 AND vn.nspname <> $1 AND v.oid <> t.oid",
            "list the views that read its tables",
        ),
        (
            "SELECT format('publication %I publishes %I.%I: it keeps publishing the replaced table; add the new one', \
               p.pubname, n.nspname, c.relname) \
             FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid \
             JOIN pg_class c ON c.oid = pr.prrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1",
            "list the publications of its tables",
        ),
        (
            "SELECT format('row-security policy %I on %I.%I stays on the replaced table; create it again', \
               pol.polname, n.nspname, c.relname) \
             FROM pg_policy pol JOIN pg_class c ON c.oid = pol.polrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1",
            "list the row-security policies of its tables",
        ),
        (
            "SELECT format('trigger %I on %I.%I stays on the replaced table; create it again', \
               tg.tgname, n.nspname, c.relname) \
             FROM pg_trigger tg JOIN pg_class c ON c.oid = tg.tgrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND NOT tg.tgisinternal",
            "list the triggers of its tables",
        ),
        (
            "SELECT format('foreign key %I of %I.%I references %I.%I: it keeps referencing the replaced table', \
               con.conname, sn.nspname, s.relname, dn.nspname, d.relname) \
             FROM pg_constraint con JOIN pg_class s ON s.oid = con.conrelid JOIN pg_namespace sn ON sn.oid = s.relnamespace \
             JOIN pg_class d ON d.oid = con.confrelid JOIN pg_namespace dn ON dn.oid = d.relnamespace \
             WHERE con.contype = 'f' AND dn.nspname = $1 AND sn.nspname <> $1",
            "list the foreign keys into its tables",
        ),
        (
            "SELECT DISTINCT format('column privileges on %I.%I are not carried; grant them again', n.nspname, c.relname) \
             FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND a.attacl IS NOT NULL AND a.attnum > 0 AND NOT a.attisdropped",
            "list the column privileges of its tables",
        ),
    ];
    let mut out = Vec::new();
    for (sql, action) in checks {
        let rows = c.query(sql, &[&old]).await.map_err(|e| fail(action, &e))?;
        out.extend(rows.iter().map(|r| r.get::<_, String>(0)));
    }
    out.sort();
    Ok(out)
}

/// One privilege held: grantee (`PUBLIC` or a quoted role name), privilege, grant option.
type Grant = (String, String, bool);

/// The privileges a query of (grantee, privilege, grantable) rows lists.
async fn acl(
    c: &impl GenericClient,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    action: &str,
) -> Result<Vec<Grant>> {
    let rows = c.query(sql, params).await.map_err(|e| fail(action, &e))?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

const GRANTEE: &str = "CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END";

fn grant_sql(object: &str, g: &Grant) -> String {
    format!(
        "GRANT {} ON {object} TO {}{}",
        g.1,
        g.0,
        if g.2 { " WITH GRANT OPTION" } else { "" }
    )
}

/// Gives the relations and the schema `new` the owners and privileges `old` has (see the
/// module's docs); returns one line per object changed.
///
/// # Errors
/// SQL fails (e.g. this role may not hand an object to the old owner).
pub async fn carry_privileges(c: &impl GenericClient, old: &str, new: &str) -> Result<Vec<String>> {
    let mut done = Vec::new();
    let run = |sql: String| async move {
        c.batch_execute(&sql)
            .await
            .map_err(|e| fail(&format!("carry a privilege over: {sql}"), &e))
    };
    // The schema: owner, privileges, default privileges.
    let owner: String = c
        .query_one(
            "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = $1",
            &[&old],
        )
        .await
        .map_err(|e| fail("read the schema's owner", &e))?
        .get(0);
    let new_q = quote_ident(new);
    run(format!("ALTER SCHEMA {new_q} OWNER TO {owner}")).await?;
    let schema_acl = format!(
        "SELECT {GRANTEE}, a.privilege_type, a.is_grantable FROM pg_namespace n, \
         aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a WHERE n.nspname = $1"
    );
    for g in acl(c, &schema_acl, &[&new], "read the schema's privileges").await? {
        run(format!(
            "REVOKE {} ON SCHEMA {new_q} FROM {} CASCADE",
            g.1, g.0
        ))
        .await?;
    }
    for g in acl(c, &schema_acl, &[&old], "read the schema's privileges").await? {
        run(grant_sql(&format!("SCHEMA {new_q}"), &g)).await?;
    }
    done.push(format!(
        "schema {new}: owner {owner} and the privileges of {old}"
    ));
    let defaults = c
        .query(
            &format!(
                "SELECT d.defaclrole::regrole::text, d.defaclobjtype::text, {GRANTEE}, a.privilege_type, a.is_grantable \
                 FROM pg_default_acl d JOIN pg_namespace n ON n.oid = d.defaclnamespace, aclexplode(d.defaclacl) a \
                 WHERE n.nspname = $1"
            ),
            &[&old],
        )
        .await
        .map_err(|e| fail("read the schema's default privileges", &e))?;
    for d in &defaults {
        let (role, kind, grantee, privilege, grantable): (String, String, String, String, bool) =
            (d.get(0), d.get(1), d.get(2), d.get(3), d.get(4));
        let objects = match kind.as_str() {
            "r" => "TABLES",
            "S" => "SEQUENCES",
            "f" => "FUNCTIONS",
            "T" => "TYPES",
            _ => continue,
        };
        run(format!(
            "ALTER DEFAULT PRIVILEGES FOR ROLE {role} IN SCHEMA {new_q} GRANT {privilege} ON {objects} TO {grantee}{}",
            if grantable { " WITH GRANT OPTION" } else { "" }
        ))
        .await?;
    }
    if !defaults.is_empty() {
        done.push(format!("schema {new}: the default privileges of {old}"));
    }
    // Each relation: the same-named one's owner and privileges, else the defaults.
    let rels = c
        .query(
            "SELECT c.relname::text, c.relkind::text, o.relname IS NOT NULL, \
               coalesce(o.relowner, c.relowner)::regrole::text \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             LEFT JOIN (pg_class o JOIN pg_namespace onn ON onn.oid = o.relnamespace AND onn.nspname = $2) \
               ON o.relname = c.relname AND o.relkind = c.relkind \
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') ORDER BY 1",
            &[&new, &old],
        )
        .await
        .map_err(|e| fail("list the promoted relations", &e))?;
    for r in &rels {
        let (name, kind, matched, owner): (String, String, bool, String) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        let object = format!(
            "{} {}",
            if kind == "S" { "SEQUENCE" } else { "TABLE" },
            qualified(new, &name)
        );
        let rel_acl = format!(
            "SELECT {GRANTEE}, a.privilege_type, a.is_grantable FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, \
             aclexplode(coalesce(c.relacl, acldefault(CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END::\"char\", c.relowner))) a \
             WHERE n.nspname = $1 AND c.relname = $2"
        );
        if matched {
            // A sequence owned by a column (serial, identity) follows its table's owner.
            if kind != "S" || !owned_by_column(c, new, &name).await? {
                let alter = if kind == "S" { "SEQUENCE" } else { "TABLE" };
                run(format!(
                    "ALTER {alter} {} OWNER TO {owner}",
                    qualified(new, &name)
                ))
                .await?;
            }
            for g in acl(c, &rel_acl, &[&new, &name], "read a relation's privileges").await? {
                run(format!("REVOKE {} ON {object} FROM {} CASCADE", g.1, g.0)).await?;
            }
            for g in acl(c, &rel_acl, &[&old, &name], "read a relation's privileges").await? {
                run(grant_sql(&object, &g)).await?;
            }
            done.push(format!(
                "{new}.{name}: owner {owner} and the privileges of {old}.{name}"
            ));
        } else {
            let objtype = if kind == "S" { "S" } else { "r" };
            let mut granted = false;
            for d in defaults.iter().filter(|d| d.get::<_, String>(1) == objtype) {
                let g: Grant = (d.get(2), d.get(3), d.get(4));
                run(grant_sql(&object, &g)).await?;
                granted = true;
            }
            if granted {
                done.push(format!("{new}.{name}: the default privileges of {old}"));
            }
        }
    }
    Ok(done)
}

/// Whether sequence `schema.name` belongs to a column (serial or identity).
async fn owned_by_column(c: &impl GenericClient, schema: &str, name: &str) -> Result<bool> {
    c.query_one(
        "SELECT EXISTS (SELECT 1 FROM pg_depend d JOIN pg_class s ON s.oid = d.objid \
           JOIN pg_namespace n ON n.oid = s.relnamespace \
         WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass \
           AND d.deptype IN ('a', 'i') AND n.nspname = $1 AND s.relname = $2)",
        &[&schema, &name],
    )
    .await
    .map(|r| r.get(0))
    .map_err(|e| fail("look up a sequence's owner", &e))
}
