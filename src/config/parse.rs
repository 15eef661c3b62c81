//! The walk of `pipeline.toml` into the typed config: each section and key checked, every
//! problem recorded with its key (parsing goes on after one, so all are reported at once).
//!
//! (About 770 lines: one function per section — target, tuning, a table, its indexes, its
//! source, a column — each checking every key of its section in order; a column's or a
//! table's function is long because each key has its own check and message.)
//!
//! Input: the TOML text (and the file's folder). Output: a validated [`Config`], or
//! [`Error::Config`] with every problem.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use toml::Value;

use super::{
    Changes, CheckSpec, ChildSpec, ColumnSpec, Config, Extract, ForeignKey, IndexSpec, Reference,
    Route, RouteTest, Source, TableSpec, Target, Tuning, Unrouted, CHECK_RUNS, TARGET_URL_ENV,
};
use crate::convert::{self, Rule};
use crate::error::{Error, Result};
use crate::scalar::time::EpochUnit;
use crate::schema::ColumnType;

/// `pipeline.toml` → [`Config`].
impl Config {
    /// Reads and validates a config file.
    ///
    /// # Errors
    /// [`Error::Config`] listing every problem, or the file cannot be read.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
            path: path.display().to_string(),
            problems: vec![format!("cannot read the file: {e}")],
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let url_override = std::env::var(TARGET_URL_ENV).ok().filter(|s| !s.is_empty());
        Config::parse(&text, path, &base, url_override)
    }

    /// Parses config text; `base` is the folder relative export paths start from.
    ///
    /// # Errors
    /// [`Error::Config`] listing every problem.
    pub fn parse(
        text: &str,
        path: &Path,
        base: &Path,
        url_override: Option<String>,
    ) -> Result<Config> {
        let mut p = Problems::default();
        let root = match text.parse::<toml::Table>() {
            Ok(t) => t,
            Err(e) => {
                return Err(Error::Config {
                    path: path.display().to_string(),
                    problems: vec![match e.span() {
                        Some(span) => {
                            let (line, col) = line_col(text, span.start);
                            format!(
                                "not valid TOML at line {line}, column {col}: {}",
                                e.message()
                            )
                        }
                        None => format!("not valid TOML: {}", e.message()),
                    }],
                })
            }
        };
        let root = &root;
        p.unknown_keys("", root, &["target", "tuning", "tables", "checks"]);

        let target = target(root.get("target"), url_override, &mut p);
        let tuning = tuning(root.get("tuning"), &mut p);
        let mut tables = Vec::new();
        // Each of `tables`' key in the file (`tables[i]`).
        let mut table_keys: Vec<String> = Vec::new();
        match root.get("tables") {
            None => p.push("tables", "at least one [[tables]] entry is required"),
            Some(Value::Array(items)) => {
                if items.is_empty() {
                    p.push("tables", "at least one [[tables]] entry is required");
                }
                let mut names = HashSet::new();
                let mut index_names = HashSet::new();
                let mut children = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    let key = format!("tables[{i}]");
                    if let Some((t, child)) = table(&key, item, base, &mut p) {
                        if !names.insert(t.name.clone()) {
                            p.push(
                                &format!("{key}.name"),
                                &format!("table `{}` is declared twice", t.name),
                            );
                        }
                        // Index names share the schema's namespace with the tables'.
                        for (j, ix) in t.indexes.iter().enumerate() {
                            if !index_names.insert(ix.name.clone()) {
                                p.push(
                                    &format!("{key}.indexes[{j}].name"),
                                    &format!("index `{}` is declared by another table too; index names are unique in a schema", ix.name),
                                );
                            }
                        }
                        match child {
                            Some(of) => children.push((key, t, of)),
                            None => {
                                table_keys.push(key);
                                tables.push(t);
                            }
                        }
                    }
                }
                for (key, t, of) in children {
                    attach_child(&key, t, of, &mut tables, &mut p);
                }
            }
            Some(_) => p.push("tables", "must be an array of tables ([[tables]])"),
        }
        for (i, t) in tables.iter().enumerate() {
            for c in t.columns.iter().filter(|c| c.parent.is_some() || c.ordinal) {
                p.push(
                    &format!("tables[{i}].columns.{}", c.name),
                    "`parent` and `ordinal` columns belong to a child table (one with `parent` and `unnest`)",
                );
            }
        }
        detach_snapshot_children(&mut tables);
        let flat: Vec<TableSpec> = tables
            .iter()
            .flat_map(|t| t.with_children().cloned())
            .collect();
        check_references(&flat, &target.schema, &mut p);
        check_unrouted(&mut tables, &table_keys, &mut p);
        let checks = checks(root.get("checks"), &mut p);
        if p.list.is_empty() {
            Ok(Config {
                path: path.to_path_buf(),
                target,
                tuning,
                tables,
                checks,
            })
        } else {
            Err(Error::Config {
                path: path.display().to_string(),
                problems: p.list,
            })
        }
    }
}

/// A table loaded from a snapshot holds its rows as they were mapped and routed: its
/// `where` has been applied, and its child tables' rows are in the snapshot's folder of
/// each child (beside the parent's), loaded as tables of their own (their foreign key to
/// the parent still added after the data).
fn detach_snapshot_children(tables: &mut Vec<TableSpec>) {
    let mut i = 0;
    while i < tables.len() {
        let Source::Parquet { location, path } = tables[i].source.clone() else {
            i += 1;
            continue;
        };
        tables[i].route = None;
        tables[i].unrouted = None;
        let children = std::mem::take(&mut tables[i].children);
        for (j, c) in children.into_iter().enumerate() {
            let mut t = c.table;
            let sibling = |base: &str| -> String {
                match base.trim_end_matches('/').rsplit_once('/') {
                    Some((dir, _)) => format!("{dir}/{}", t.name),
                    None => t.name.clone(),
                }
            };
            let loc = sibling(&location);
            let folder = path
                .parent()
                .map_or_else(|| PathBuf::from(&t.name), |d| d.join(&t.name));
            t.source = Source::Parquet {
                location: loc,
                path: folder,
            };
            tables.insert(i + 1 + j, t);
        }
        i += 1;
    }
}

/// One `unrouted` per source: the tables reading it say the same, or nothing. The setting
/// then holds for each of them (whichever table a load's pass is led by).
fn check_unrouted(tables: &mut [TableSpec], keys: &[String], p: &mut Problems) {
    let mut settled = HashSet::new();
    for i in 0..tables.len() {
        let id = tables[i].source.identity();
        if !settled.insert(id.clone()) {
            continue;
        }
        let said: Vec<(usize, Unrouted)> = tables
            .iter()
            .enumerate()
            .filter(|(_, t)| t.source.identity() == id)
            .filter_map(|(j, t)| t.unrouted.map(|u| (j, u)))
            .collect();
        let Some(&(first, u)) = said.first() else {
            continue;
        };
        if let Some(&(other, v)) = said.iter().find(|(_, v)| *v != u) {
            let word = |u: Unrouted| match u {
                Unrouted::Count => "\"count\"",
                Unrouted::Reject => "\"reject\"",
            };
            p.push(
                &format!(
                    "{}.source.unrouted",
                    keys.get(other).map_or("tables", String::as_str)
                ),
                &format!(
                    "table `{}` says {} but `{}`, reading the same source, says {}: one setting per source",
                    tables[other].name,
                    word(v),
                    tables[first].name,
                    word(u)
                ),
            );
            continue;
        }
        for t in tables.iter_mut().filter(|t| t.source.identity() == id) {
            t.unrouted = Some(u);
        }
    }
}

/// The 1-based line and column (in characters) of byte `at` of `text`.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = text.get(..at.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Foreign keys between tables of the config: the referenced column exists, and its type
/// can take the referencing column's values (PostgreSQL refuses a foreign key between
/// types it cannot compare, such as text and uuid — found here, not after the data).
fn check_references(tables: &[TableSpec], schema: &str, p: &mut Problems) {
    for (i, t) in tables.iter().enumerate() {
        for c in &t.columns {
            let Some(r) = &c.references else { continue };
            let bare = match r.table.split_once('.') {
                Some((s, name)) if s == schema => name,
                Some(_) => continue,
                None => r.table.as_str(),
            };
            let Some(target) = tables.iter().find(|o| o.name == bare) else {
                continue;
            };
            let key = format!("tables[{i}].columns.{}.references", c.name);
            let col = match r.columns.as_slice() {
                [] => match target.primary_key.as_slice() {
                    [one] => one.clone(),
                    _ => {
                        p.push(&key, &format!("table `{bare}` has a primary key of {} columns: name the referenced column, `{bare}(column)`", target.primary_key.len()));
                        continue;
                    }
                },
                [one] => one.clone(),
                _ => continue,
            };
            let Some(referenced) = target.columns.iter().find(|o| o.name == col) else {
                p.push(&key, &format!("table `{bare}` has no column `{col}`"));
                continue;
            };
            if !foreign_key_types_fit(c.ty, referenced.ty) {
                p.push(
                    &key,
                    &format!(
                        "a {} column cannot reference `{bare}.{col}`, which is {} (PostgreSQL has no equality between the two types): give both the same type",
                        c.ty.sql(),
                        referenced.ty.sql()
                    ),
                );
            }
        }
    }
}

/// Whether PostgreSQL can build a foreign key from a `fk` column to a `pk` column: the
/// same type, or one whose values it compares with the key's index (integers among
/// themselves, or into numeric and floating point; text and varchar; date and timestamps).
pub(super) fn foreign_key_types_fit(fk: ColumnType, pk: ColumnType) -> bool {
    use ColumnType as T;
    let int = |t: T| matches!(t, T::Int2 | T::Int4 | T::Int8);
    let float = |t: T| matches!(t, T::Float4 | T::Float8);
    let text = |t: T| matches!(t, T::Text | T::Varchar(_));
    let time = |t: T| matches!(t, T::Date | T::Timestamp | T::Timestamptz);
    let numeric = |t: T| matches!(t, T::Numeric(_));
    match (fk, pk) {
        (a, b) if int(a) => int(b) || numeric(b) || float(b),
        (a, b) if numeric(a) => numeric(b) || float(b),
        (a, b) if float(a) => float(b),
        (a, b) if text(a) => text(b),
        (a, b) if time(a) => time(b),
        (a, b) => a == b,
    }
}

/// Every problem found in a config, each naming its key.
#[derive(Default)]
struct Problems {
    list: Vec<String>,
}

impl Problems {
    fn push(&mut self, key: &str, msg: &str) {
        self.list.push(format!("`{key}`: {msg}"));
    }

    fn unknown_keys(&mut self, prefix: &str, table: &toml::Table, known: &[&str]) {
        for k in table.keys() {
            if !known.contains(&k.as_str()) {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                self.push(
                    &key,
                    &format!("unknown key (expected one of: {})", known.join(", ")),
                );
            }
        }
    }
}

fn target(v: Option<&Value>, url_override: Option<String>, p: &mut Problems) -> Target {
    let mut url = None;
    let mut iam = false;
    let mut schema = "public".to_string();
    match v {
        None => {}
        Some(Value::Table(t)) => {
            p.unknown_keys("target", t, &["url", "schema", "auth"]);
            url = get_string(t, "target", "url", p);
            match get_string(t, "target", "auth", p).as_deref() {
                None | Some("password") => {}
                Some("rds-iam") => iam = true,
                Some(other) => p.push(
                    "target.auth",
                    &format!("`{other}` is not one of \"password\", \"rds-iam\""),
                ),
            }
            if let Some(s) = get_string(t, "target", "schema", p) {
                if s.is_empty() {
                    p.push("target.schema", "must not be empty");
                }
                schema = s;
            }
        }
        Some(_) => p.push("target", "must be a table"),
    }
    let from_env = url_override.is_some();
    // Every connection reads the URL: `auth = "rds-iam"` travels in it.
    let url = url_override.or(url).map(|u| match iam {
        true => super::libpq::with_iam(&u),
        false => u,
    });
    match &url {
        None => p.push(
            "target.url",
            &format!("missing: set it in [target] or in the {TARGET_URL_ENV} environment variable"),
        ),
        Some(u) => {
            if let Err(e) = super::libpq::resolve(u, &|k| std::env::var(k).ok()) {
                let key = if from_env {
                    TARGET_URL_ENV
                } else {
                    "target.url"
                };
                p.push(key, &format!("not a valid PostgreSQL URL: {e}"));
            } else if !(u.starts_with("postgres://")
                || u.starts_with("postgresql://")
                || u.contains('='))
            {
                p.push(
                    "target.url",
                    "expected postgresql://user@host:port/database",
                );
            }
        }
    }
    Target {
        url: url.unwrap_or_default(),
        schema,
    }
}

fn tuning(v: Option<&Value>, p: &mut Problems) -> Tuning {
    let mut t = Tuning::default();
    let Some(v) = v else { return t };
    let Some(tab) = v.as_table() else {
        p.push("tuning", "must be a table");
        return t;
    };
    p.unknown_keys(
        "tuning",
        tab,
        &[
            "connections",
            "batch_rows",
            "page_bytes",
            "readers",
            "cpu_threads",
            "copy_write_bytes",
            "chunk_bytes",
            "lease_seconds",
            "poll_seconds",
        ],
    );
    let mut int = |name: &str, min: i64, max: i64, slot: &mut usize| {
        if let Some(val) = tab.get(name) {
            match val.as_integer() {
                Some(n) if (min..=max).contains(&n) => *slot = usize::try_from(n).unwrap_or(*slot),
                Some(n) => p.push(
                    &format!("tuning.{name}"),
                    &format!("must be from {min} to {max}, got {n}"),
                ),
                None => p.push(&format!("tuning.{name}"), "must be an integer"),
            }
        }
    };
    int("connections", 1, 256, &mut t.connections);
    int("batch_rows", 1, 1 << 22, &mut t.batch_rows);
    int("page_bytes", 4096, 1 << 30, &mut t.page_bytes);
    int("readers", 1, 256, &mut t.readers);
    t.readers_set = tab.contains_key("readers");
    int("cpu_threads", 1, 1024, &mut t.cpu_threads);
    int("copy_write_bytes", 512, 64 << 20, &mut t.copy_write_bytes);
    int("chunk_bytes", 4096, 1 << 32, &mut t.chunk_bytes);
    let mut lease = usize::try_from(t.lease_seconds).unwrap_or(60);
    int("lease_seconds", 1, 86_400, &mut lease);
    t.lease_seconds = lease as u64;
    let mut poll = usize::try_from(t.poll_seconds).unwrap_or(60);
    int("poll_seconds", 1, 86_400, &mut poll);
    t.poll_seconds = poll as u64;
    t
}

/// `[[checks]]`: each a name (unique), one SQL statement, its parameters' query, a p95
/// target in milliseconds and a number of runs.
fn checks(v: Option<&Value>, p: &mut Problems) -> Vec<CheckSpec> {
    let items = match v {
        None => return Vec::new(),
        Some(Value::Array(items)) => items,
        Some(_) => {
            p.push("checks", "must be an array of tables ([[checks]])");
            return Vec::new();
        }
    };
    let mut out: Vec<CheckSpec> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let key = format!("checks[{i}]");
        let Some(t) = item.as_table() else {
            p.push(&key, "must be a table");
            continue;
        };
        p.unknown_keys(&key, t, &["name", "sql", "params", "p95_ms", "runs"]);
        let name = get_string(t, &key, "name", p).filter(|n| !n.trim().is_empty());
        let Some(name) = name else {
            p.push(&format!("{key}.name"), "required: the check's name");
            continue;
        };
        if out.iter().any(|c| c.name == name) {
            p.push(
                &format!("{key}.name"),
                &format!("check `{name}` is declared twice"),
            );
        }
        let sql = get_string(t, &key, "sql", p).filter(|s| !s.trim().is_empty());
        let Some(sql) = sql else {
            p.push(
                &format!("{key}.sql"),
                "required: the query to time (one statement, $1… for parameters)",
            );
            continue;
        };
        let params = get_string(t, &key, "params", p);
        let p95_ms = match t.get("p95_ms") {
            None => None,
            Some(Value::Integer(n)) if *n > 0 => Some(*n as f64),
            Some(Value::Float(f)) if f.is_finite() && *f > 0.0 => Some(*f),
            Some(_) => {
                p.push(
                    &format!("{key}.p95_ms"),
                    "must be a number of milliseconds above 0 (fractions allowed)",
                );
                None
            }
        };
        let runs = match t.get("runs") {
            None => CHECK_RUNS,
            Some(Value::Integer(n)) if *n >= 1 && *n <= 1_000_000 => *n as usize,
            Some(_) => {
                p.push(
                    &format!("{key}.runs"),
                    "must be a whole number of timed executions, 1 to 1000000",
                );
                CHECK_RUNS
            }
        };
        out.push(CheckSpec {
            name,
            sql,
            params,
            p95_ms,
            runs,
        });
    }
    out
}

fn get_string(t: &toml::Table, prefix: &str, key: &str, p: &mut Problems) -> Option<String> {
    match t.get(key) {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            p.push(&format!("{prefix}.{key}"), "must be a string");
            None
        }
    }
}

fn get_bool(t: &toml::Table, prefix: &str, key: &str, p: &mut Problems) -> bool {
    match t.get(key) {
        None => false,
        Some(Value::Boolean(b)) => *b,
        Some(_) => {
            p.push(&format!("{prefix}.{key}"), "must be true or false");
            false
        }
    }
}

/// A child table's `parent` and `unnest`, and its `parent` columns declared without a
/// type (they take the parent column's).
struct ChildOf {
    parent: String,
    unnest: String,
    untyped: Vec<String>,
}

fn table(
    key: &str,
    v: &Value,
    base: &Path,
    p: &mut Problems,
) -> Option<(TableSpec, Option<ChildOf>)> {
    let Some(t) = v.as_table() else {
        p.push(key, "must be a table");
        return None;
    };
    p.unknown_keys(
        key,
        t,
        &[
            "name",
            "primary_key",
            "source",
            "changes",
            "columns",
            "indexes",
            "where",
            "parent",
            "unnest",
        ],
    );
    let child = match (
        get_string(t, key, "parent", p),
        get_string(t, key, "unnest", p),
    ) {
        (None, None) => None,
        (Some(parent), Some(unnest)) => {
            for k in ["source", "changes", "where"] {
                if t.contains_key(k) {
                    p.push(
                        &format!("{key}.{k}"),
                        "a child table takes its parent's items (and changes): drop it",
                    );
                }
            }
            if unnest.is_empty() {
                p.push(&format!("{key}.unnest"), "must not be empty");
            }
            Some(ChildOf {
                parent,
                unnest,
                untyped: Vec::new(),
            })
        }
        (Some(_), None) => {
            p.push(
                &format!("{key}.unnest"),
                "missing: a child table names the parent's list attribute it takes a row per element of",
            );
            None
        }
        (None, Some(_)) => {
            p.push(
                &format!("{key}.parent"),
                "missing: `unnest` takes the list of a parent table's items; name it",
            );
            None
        }
    };
    let route = t
        .get("where")
        .and_then(|v| parse_route(&format!("{key}.where"), v, p));
    let name = match get_string(t, key, "name", p) {
        Some(n) if n.len() > 63 => {
            p.push(
                &format!("{key}.name"),
                &format!("`{n}` has {} bytes: PostgreSQL names hold at most 63 (a longer one would be cut)", n.len()),
            );
            n
        }
        Some(n) if !n.is_empty() => n,
        Some(_) => {
            p.push(&format!("{key}.name"), "must not be empty");
            String::new()
        }
        None => {
            if !t.contains_key("name") {
                p.push(&format!("{key}.name"), "missing");
            }
            String::new()
        }
    };
    let source = match &child {
        // Its parent's, set when it is attached.
        Some(_) => Some(Source::DynamoDb {
            table: String::new(),
            segments: None,
            read_capacity: None,
            consistent: false,
        }),
        None => parse_source(&format!("{key}.source"), t.get("source"), base, p),
    };
    let mut child = child;
    let unrouted = t
        .get("source")
        .and_then(Value::as_table)
        .and_then(|s| s.get("unrouted"))
        .and_then(|v| match v.as_str() {
            Some("count") => Some(Unrouted::Count),
            Some("reject") => Some(Unrouted::Reject),
            _ => {
                p.push(
                    &format!("{key}.source.unrouted"),
                    &format!("must be \"count\" or \"reject\", got {v}"),
                );
                None
            }
        });
    let changes = t
        .get("changes")
        .and_then(|v| parse_changes(&format!("{key}.changes"), v, base, p));
    let mut columns = Vec::new();
    match t.get("columns") {
        None => p.push(
            &format!("{key}.columns"),
            "missing: declare at least one column",
        ),
        Some(Value::Table(cols)) => {
            if cols.is_empty() {
                p.push(&format!("{key}.columns"), "declare at least one column");
            }
            for (cname, cv) in cols {
                let ckey = format!("{key}.columns.{cname}");
                if let Some(c) = parse_column(&ckey, cname, cv, p) {
                    let untyped = cv.as_table().is_some_and(|t| !t.contains_key("type"));
                    if let (Some(of), true) = (child.as_mut(), untyped && c.parent.is_some()) {
                        of.untyped.push(c.name.clone());
                    }
                    if c.rest && child.is_some() {
                        p.push(
                            &format!("{ckey}.rest"),
                            "a child table's columns take the element's attributes by name; `rest` is for a table's items",
                        );
                    }
                    columns.push(c);
                }
            }
        }
        Some(_) => p.push(&format!("{key}.columns"), "must be a table of columns"),
    }
    let rest_count = columns.iter().filter(|c| c.rest).count();
    if rest_count > 1 {
        p.push(
            &format!("{key}.columns"),
            "only one column may say `rest = true`",
        );
    }
    let mut seen_lower = HashSet::new();
    for c in &columns {
        if !seen_lower.insert(c.name.to_lowercase()) {
            p.push(
                &format!("{key}.columns.{}", c.name),
                "duplicate column (names differ only by case)",
            );
        }
    }
    let mut primary_key = Vec::new();
    match t.get("primary_key") {
        // A child table's default: its parent columns and its ordinal.
        None if child.is_some()
            && columns.iter().any(|c| c.parent.is_some())
            && columns.iter().any(|c| c.ordinal) =>
        {
            primary_key = columns
                .iter()
                .filter(|c| c.parent.is_some())
                .chain(columns.iter().filter(|c| c.ordinal))
                .map(|c| c.name.clone())
                .collect();
        }
        None => p.push(
            &format!("{key}.primary_key"),
            "missing: name the key column(s)",
        ),
        Some(Value::Array(items)) => {
            if items.is_empty() {
                p.push(
                    &format!("{key}.primary_key"),
                    "must name at least one column",
                );
            }
            for (i, it) in items.iter().enumerate() {
                match it.as_str() {
                    Some(s) => {
                        if primary_key.iter().any(|k: &String| k == s) {
                            p.push(
                                &format!("{key}.primary_key[{i}]"),
                                &format!("`{s}` is listed twice"),
                            );
                        }
                        match columns.iter().find(|c| c.name == s) {
                            None => p.push(
                                &format!("{key}.primary_key[{i}]"),
                                &format!("`{s}` names no column of table `{name}`"),
                            ),
                            Some(c) if c.rest => p.push(
                                &format!("{key}.primary_key[{i}]"),
                                &format!("`{s}` is the rest column and cannot be a key"),
                            ),
                            Some(_) => {}
                        }
                        primary_key.push(s.to_string());
                    }
                    None => p.push(
                        &format!("{key}.primary_key[{i}]"),
                        "must be a column name (string)",
                    ),
                }
            }
        }
        Some(Value::String(s)) => {
            if !columns.iter().any(|c| &c.name == s) {
                p.push(
                    &format!("{key}.primary_key"),
                    &format!("`{s}` names no column of table `{name}`"),
                );
            }
            primary_key.push(s.clone());
        }
        Some(_) => p.push(
            &format!("{key}.primary_key"),
            "must be an array of column names",
        ),
    }
    let indexes = parse_indexes(
        &format!("{key}.indexes"),
        t.get("indexes"),
        &name,
        &columns,
        p,
    );
    Some((
        TableSpec {
            name,
            primary_key,
            source: source?,
            changes,
            columns,
            indexes,
            route,
            children: Vec::new(),
            unrouted,
            parent_key: None,
        },
        child,
    ))
}

/// Puts a child table under its parent: its source is the parent's, its `parent` columns
/// take the parent columns' types, and a foreign key to the parent's key (when that key is
/// one column a `parent` column takes).
fn attach_child(
    key: &str,
    mut t: TableSpec,
    of: ChildOf,
    tables: &mut [TableSpec],
    p: &mut Problems,
) {
    let Some(parent) = tables.iter_mut().find(|x| x.name == of.parent) else {
        p.push(
            &format!("{key}.parent"),
            &format!(
                "no table `{}` is declared (a child table's parent is a table with a source; child tables of child tables are not supported)",
                of.parent
            ),
        );
        return;
    };
    t.source = parent.source.clone();
    let mut problems = 0;
    for c in &mut t.columns {
        let Some(pc) = &c.parent else { continue };
        let Some(from) = parent.columns.iter().find(|x| &x.name == pc) else {
            p.push(
                &format!("{key}.columns.{}.parent", c.name),
                &format!("table `{}` has no column `{pc}`", parent.name),
            );
            problems += 1;
            continue;
        };
        if of.untyped.contains(&c.name) {
            c.ty = from.ty;
        } else if c.ty != from.ty {
            p.push(
                &format!("{key}.columns.{}.type", c.name),
                &format!(
                    "must be the parent column's type, {} (or left out): the value is the parent row's",
                    from.ty
                ),
            );
            problems += 1;
        }
        if c.references.is_none() {
            if let [pk] = parent.primary_key.as_slice() {
                if pk == pc {
                    c.references = Some(Reference {
                        table: parent.name.clone(),
                        columns: vec![pk.clone()],
                    });
                }
            }
        }
    }
    // Its rows are found by its parent's key (an upsert or a sync replaces an item's
    // children): a `parent` column per key column.
    for k in &parent.primary_key {
        if !t
            .columns
            .iter()
            .any(|c| c.parent.as_deref() == Some(k.as_str()))
        {
            p.push(
                &format!("{key}.columns"),
                &format!(
                    "a child table holds its parent's key: add a column `{{ parent = \"{k}\" }}` (key of table `{}`)",
                    parent.name
                ),
            );
            problems += 1;
        }
    }
    if let (0, [_, _, ..]) = (problems, parent.primary_key.as_slice()) {
        let columns = parent
            .primary_key
            .iter()
            .filter_map(|k| {
                t.columns
                    .iter()
                    .find(|c| c.parent.as_deref() == Some(k.as_str()))
                    .map(|c| c.name.clone())
            })
            .collect();
        t.parent_key = Some(ForeignKey {
            columns,
            references: Reference {
                table: parent.name.clone(),
                columns: parent.primary_key.clone(),
            },
        });
    }
    if problems == 0 {
        parent.children.push(ChildSpec {
            unnest: of.unnest,
            table: t,
            rides: false,
        });
    }
}

/// `where = { attribute = "PK", prefix = "USER#" }` or `{ attribute = "type", equals = "order" }`.
fn parse_route(key: &str, v: &Value, p: &mut Problems) -> Option<Route> {
    let Some(t) = v.as_table() else {
        p.push(
            key,
            "must be a table: `{ attribute = \"PK\", prefix = \"USER#\" }` or `{ attribute = \"type\", equals = \"order\" }`",
        );
        return None;
    };
    p.unknown_keys(key, t, &["attribute", "prefix", "equals"]);
    let attribute = match get_string(t, key, "attribute", p) {
        Some(a) if !a.is_empty() => Some(a),
        Some(_) => {
            p.push(&format!("{key}.attribute"), "must not be empty");
            None
        }
        None => {
            if !t.contains_key("attribute") {
                p.push(
                    &format!("{key}.attribute"),
                    "missing: name the attribute to route on",
                );
            }
            None
        }
    };
    let prefix = get_string(t, key, "prefix", p);
    let equals = match t.get("equals") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Integer(i)) => Some(i.to_string()),
        Some(Value::Boolean(b)) => Some(b.to_string()),
        Some(_) => {
            p.push(
                &format!("{key}.equals"),
                "must be a string, an integer or a boolean",
            );
            None
        }
    };
    let test = match (prefix, equals) {
        (Some(pre), None) if !pre.is_empty() => RouteTest::Prefix(pre),
        (Some(_), None) => {
            p.push(&format!("{key}.prefix"), "must not be empty");
            return None;
        }
        (None, Some(e)) => RouteTest::Equals(e),
        (Some(_), Some(_)) => {
            p.push(key, "give `prefix` or `equals`, not both");
            return None;
        }
        (None, None) => {
            if !t.contains_key("equals") {
                p.push(key, "missing `prefix` or `equals`");
            }
            return None;
        }
    };
    Some(Route {
        attribute: attribute?,
        test,
    })
}

/// `changes = { exports = "DIR | s3://bucket/prefix" }` (where a table's incremental
/// exports land) or `changes = { stream = "Table" }` (the live table whose stream is read).
fn parse_changes(key: &str, v: &Value, base: &Path, p: &mut Problems) -> Option<Changes> {
    let Some(t) = v.as_table() else {
        p.push(
            key,
            "must be a table: `{ exports = \"s3://bucket/prefix\" }`",
        );
        return None;
    };
    if let Some(st) = t.get("stream") {
        p.unknown_keys(key, t, &["stream"]);
        if t.contains_key("exports") {
            p.push(
                key,
                "declares both `exports` and `stream`: a table's changes come from one place",
            );
            return None;
        }
        let Some(name) = st.as_str().filter(|n| !n.trim().is_empty()) else {
            p.push(
                &format!("{key}.stream"),
                "must be the name (or ARN) of the live DynamoDB table whose stream is read",
            );
            return None;
        };
        return Some(Changes::Stream {
            table: name.to_string(),
        });
    }
    p.unknown_keys(key, t, &["exports"]);
    let Some(e) = t.get("exports") else {
        p.push(
            key,
            "needs `exports = \"DIR or s3://bucket/prefix\"` (the prefix under which the table's incremental exports land)",
        );
        return None;
    };
    let ekey = format!("{key}.exports");
    let Some(loc) = e.as_str().filter(|l| !l.is_empty()) else {
        p.push(
            &ekey,
            "must be a non-empty string (a folder or s3://bucket/prefix)",
        );
        return None;
    };
    if let Some(rest) = loc.strip_prefix("s3://") {
        if rest.is_empty() || rest.starts_with('/') {
            p.push(&ekey, "an S3 location needs a bucket: s3://bucket/prefix");
            return None;
        }
        return Some(Changes::Exports {
            location: loc.to_string(),
            path: None,
        });
    }
    if loc.contains("://") {
        p.push(
            &ekey,
            "only local folders and s3:// locations are supported",
        );
        return None;
    }
    Some(Changes::Exports {
        location: loc.to_string(),
        path: Some(base.join(loc)),
    })
}

fn parse_indexes(
    key: &str,
    v: Option<&Value>,
    table: &str,
    columns: &[ColumnSpec],
    p: &mut Problems,
) -> Vec<IndexSpec> {
    let Some(v) = v else { return Vec::new() };
    let Some(items) = v.as_array() else {
        p.push(key, "must be an array of tables: `[[tables.indexes]]`");
        return Vec::new();
    };
    let mut out: Vec<IndexSpec> = Vec::new();
    for (i, it) in items.iter().enumerate() {
        let ikey = format!("{key}[{i}]");
        let Some(t) = it.as_table() else {
            p.push(&ikey, "must be a table: `{ columns = [\"a\"] }`");
            continue;
        };
        p.unknown_keys(
            &ikey,
            t,
            &["name", "columns", "expression", "using", "unique", "where"],
        );
        let mut cols = Vec::new();
        match t.get("columns") {
            None => {}
            Some(Value::Array(a)) => {
                for (j, c) in a.iter().enumerate() {
                    match c.as_str() {
                        Some(c) if columns.iter().any(|x| x.name == c) => cols.push(c.to_string()),
                        Some(c) => p.push(
                            &format!("{ikey}.columns[{j}]"),
                            &format!("`{c}` names no column of table `{table}`"),
                        ),
                        None => p.push(&format!("{ikey}.columns[{j}]"), "must be a column name"),
                    }
                }
            }
            Some(_) => p.push(
                &format!("{ikey}.columns"),
                "must be an array of column names",
            ),
        }
        let expression = get_string(t, &ikey, "expression", p);
        match (cols.is_empty(), &expression) {
            (true, None) if !t.contains_key("columns") => {
                p.push(&ikey, "needs `columns = [...]` or `expression = \"...\"`");
            }
            (false, Some(_)) => p.push(&ikey, "give `columns` or `expression`, not both"),
            _ => {}
        }
        let using = get_string(t, &ikey, "using", p).unwrap_or_else(|| "btree".into());
        if !matches!(
            using.as_str(),
            "btree" | "gin" | "gist" | "hash" | "brin" | "spgist"
        ) {
            p.push(
                &format!("{ikey}.using"),
                &format!("must be btree, gin, gist, hash, brin or spgist, got `{using}`"),
            );
        }
        let unique = get_bool(t, &ikey, "unique", p);
        let predicate = get_string(t, &ikey, "where", p);
        for (k, v) in [("expression", &expression), ("where", &predicate)] {
            if let Some(Err(e)) = v.as_deref().map(crate::schema::one_expression) {
                p.push(
                    &format!("{ikey}.{k}"),
                    &format!("must be one SQL expression: {e}"),
                );
            }
        }
        let name = get_string(t, &ikey, "name", p).unwrap_or_else(|| {
            let what = if cols.is_empty() {
                format!("expr{i}")
            } else {
                cols.join("_")
            };
            crate::schema::pg_name(&format!("{table}_{what}_idx"))
        });
        if name.is_empty() || name.len() > 63 {
            p.push(
                &format!("{ikey}.name"),
                "an index name must have 1 to 63 characters",
            );
        }
        if out.iter().any(|x| x.name == name) {
            p.push(
                &format!("{ikey}.name"),
                &format!("index `{name}` is declared twice"),
            );
        }
        out.push(IndexSpec {
            name,
            columns: cols,
            expression,
            using,
            unique,
            predicate,
        });
    }
    out
}

/// `users(id)`, `users(a, b)`, `users` or `schema.users(id)`.
fn parse_reference(s: &str) -> Result<Reference, String> {
    let s = s.trim();
    let (table, cols) = match s.find('(') {
        Some(open) => {
            let close = s
                .rfind(')')
                .filter(|c| *c > open && s[c + 1..].trim().is_empty())
                .ok_or("expected `table(column)`")?;
            let cols: Vec<String> = s[open + 1..close]
                .split(',')
                .map(|c| c.trim().to_string())
                .collect();
            if cols.iter().any(String::is_empty) {
                return Err("an empty column name in `table(column)`".into());
            }
            (s[..open].trim(), cols)
        }
        None => (s, Vec::new()),
    };
    if table.is_empty() || table.contains(char::is_whitespace) {
        return Err(format!("`{s}` is not `table(column)`"));
    }
    Ok(Reference {
        table: table.to_string(),
        columns: cols,
    })
}

fn parse_source(key: &str, v: Option<&Value>, base: &Path, p: &mut Problems) -> Option<Source> {
    let Some(v) = v else {
        p.push(
            key,
            "missing: `{ export = \"path\" }` or `{ dynamodb = \"Table\" }`",
        );
        return None;
    };
    let Some(t) = v.as_table() else {
        p.push(
            key,
            "must be a table: `{ export = \"path\" }` or `{ dynamodb = \"Table\" }`",
        );
        return None;
    };
    if let Some(v) = t.get("parquet") {
        p.unknown_keys(key, t, &["parquet"]);
        let loc = v.as_str().unwrap_or_default();
        if loc.is_empty() || loc.contains("://") {
            p.push(
                &format!("{key}.parquet"),
                "must be a local folder: a table's folder in a snapshot (ddb2pg snapshot --out DIR writes DIR/<table>)",
            );
            return None;
        }
        return Some(Source::Parquet {
            location: loc.to_string(),
            path: base.join(loc),
        });
    }
    match (t.get("export"), t.get("dynamodb")) {
        (Some(_), Some(_)) => {
            p.push(key, "give either `export` or `dynamodb`, not both");
            None
        }
        (Some(e), None) => {
            p.unknown_keys(key, t, &["export", "unrouted"]);
            let Some(loc) = e.as_str() else {
                p.push(
                    &format!("{key}.export"),
                    "must be a string (a folder or s3://bucket/prefix)",
                );
                return None;
            };
            if loc.is_empty() {
                p.push(&format!("{key}.export"), "must not be empty");
                return None;
            }
            if let Some(rest) = loc.strip_prefix("s3://") {
                if rest.is_empty() || rest.starts_with('/') {
                    p.push(
                        &format!("{key}.export"),
                        "an S3 location needs a bucket: s3://bucket/prefix",
                    );
                }
                return Some(Source::Export {
                    location: loc.to_string(),
                    path: None,
                });
            }
            if loc.contains("://") {
                p.push(
                    &format!("{key}.export"),
                    "only local folders and s3:// locations are supported",
                );
                return None;
            }
            let path = base.join(loc);
            Some(Source::Export {
                location: loc.to_string(),
                path: Some(path),
            })
        }
        (None, Some(d)) => {
            p.unknown_keys(
                key,
                t,
                &[
                    "dynamodb",
                    "segments",
                    "read_capacity",
                    "consistent",
                    "unrouted",
                ],
            );
            let table = match d.as_str() {
                Some(s) if (3..=255).contains(&s.len()) => s.to_string(),
                _ => {
                    p.push(
                        &format!("{key}.dynamodb"),
                        "must be a DynamoDB table name (3 to 255 characters)",
                    );
                    return None;
                }
            };
            let segments = match t.get("segments") {
                None => None,
                Some(Value::Integer(n)) if (1..=1_000_000).contains(n) => u32::try_from(*n).ok(),
                Some(other) => {
                    p.push(
                        &format!("{key}.segments"),
                        &format!("must be an integer from 1 to 1000000, got {other}"),
                    );
                    None
                }
            };
            let read_capacity = match t.get("read_capacity") {
                None => None,
                Some(Value::Integer(n)) if *n > 0 => Some(*n as f64),
                Some(Value::Float(f)) if *f > 0.0 && f.is_finite() => Some(*f),
                Some(other) => {
                    p.push(
                        &format!("{key}.read_capacity"),
                        &format!("must be a positive number of RCU per second, got {other}"),
                    );
                    None
                }
            };
            let consistent = get_bool(t, key, "consistent", p);
            Some(Source::DynamoDb {
                table,
                segments,
                read_capacity,
                consistent,
            })
        }
        (None, None) => {
            p.push(key, "needs `export = \"path\"` or `dynamodb = \"Table\"`");
            None
        }
    }
}

fn parse_column(key: &str, name: &str, v: &Value, p: &mut Problems) -> Option<ColumnSpec> {
    let Some(t) = v.as_table() else {
        p.push(
            key,
            "must be a table: `{ from = \"attr\", type = \"text\" }`",
        );
        return None;
    };
    p.unknown_keys(
        key,
        t,
        &[
            "from",
            "type",
            "required",
            "default",
            "rest",
            "strip_nul",
            "unit",
            "unique",
            "references",
            "strip_prefix",
            "regex",
            "parent",
            "ordinal",
        ],
    );
    if name.is_empty() || name.len() > 63 {
        p.push(key, "a column name must have 1 to 63 characters");
    }
    let rest = get_bool(t, key, "rest", p);
    let required = get_bool(t, key, "required", p);
    let strip_nul = get_bool(t, key, "strip_nul", p);
    let unique = get_bool(t, key, "unique", p);
    let from = get_string(t, key, "from", p);
    if rest && from.is_some() {
        p.push(
            &format!("{key}.from"),
            "a `rest = true` column takes every unmapped attribute; drop `from`",
        );
    }
    if let Some(f) = &from {
        if f.is_empty() {
            p.push(&format!("{key}.from"), "must not be empty");
        }
    }
    let parent = get_string(t, key, "parent", p);
    let ordinal = get_bool(t, key, "ordinal", p);
    if parent.is_some() || ordinal {
        let what = if ordinal { "ordinal = true" } else { "parent" };
        for k in ["from", "rest", "default", "strip_prefix", "regex"] {
            if t.contains_key(k) {
                p.push(
                    &format!("{key}.{k}"),
                    &format!("a `{what}` column takes no attribute: drop `{k}`"),
                );
            }
        }
        if parent.is_some() && ordinal {
            p.push(key, "give `parent` or `ordinal`, not both");
        }
    }
    let from = if rest || parent.is_some() || ordinal {
        None
    } else {
        from.or_else(|| Some(name.to_string()))
    };
    let ty = match t.get("type") {
        // Set from the parent's column when the child is attached.
        None if parent.is_some() => Some(ColumnType::Text),
        None if ordinal => Some(ColumnType::Int4),
        None => {
            p.push(&format!("{key}.type"), "missing");
            None
        }
        Some(Value::String(s)) => match ColumnType::parse(s) {
            Ok(ty) => Some(ty),
            Err(e) => {
                p.push(&format!("{key}.type"), &e);
                None
            }
        },
        Some(_) => {
            p.push(&format!("{key}.type"), "must be a string such as \"text\"");
            None
        }
    };
    let ty = ty?;
    if ordinal && !matches!(ty, ColumnType::Int2 | ColumnType::Int4 | ColumnType::Int8) {
        p.push(
            &format!("{key}.type"),
            "an `ordinal` column is smallint, integer or bigint",
        );
    }
    if rest && !matches!(ty, ColumnType::Json | ColumnType::Jsonb) {
        p.push(
            &format!("{key}.type"),
            "a `rest = true` column must be json or jsonb",
        );
    }
    let unit = match get_string(t, key, "unit", p).as_deref() {
        None | Some("s") => EpochUnit::Seconds,
        Some("ms") => EpochUnit::Millis,
        Some(other) => {
            p.push(
                &format!("{key}.unit"),
                &format!("must be \"s\" or \"ms\", got \"{other}\""),
            );
            EpochUnit::Seconds
        }
    };
    if t.contains_key("unit") && !matches!(ty, ColumnType::Timestamp | ColumnType::Timestamptz) {
        p.push(
            &format!("{key}.unit"),
            "only applies to timestamp and timestamptz columns",
        );
    }
    if strip_nul && !ty.is_text_like() {
        p.push(
            &format!("{key}.strip_nul"),
            "only applies to text, varchar, json, jsonb and text[] columns",
        );
    }
    let references = match get_string(t, key, "references", p) {
        None => None,
        Some(r) => match parse_reference(&r) {
            Ok(r) => Some(r),
            Err(e) => {
                p.push(&format!("{key}.references"), &e);
                None
            }
        },
    };
    if references.is_some() && rest {
        p.push(
            &format!("{key}.references"),
            "a `rest` column cannot reference a table",
        );
    }
    let extract = parse_extract(key, t, rest, p);
    let rule = Rule {
        ty,
        strip_nul,
        unit,
    };
    let default_given = t.get("default").filter(|_| !rest).cloned();
    let default = match t.get("default") {
        None => None,
        Some(_) if rest => {
            p.push(
                &format!("{key}.default"),
                "a `rest` column takes no default",
            );
            None
        }
        Some(d) => match convert::default_cell(&rule, d) {
            Ok(cell) => Some(cell),
            Err(e) => {
                p.push(
                    &format!("{key}.default"),
                    &format!("{e} (column type {ty})"),
                );
                None
            }
        },
    };
    Some(ColumnSpec {
        name: name.to_string(),
        from,
        ty,
        required,
        default,
        default_given,
        rest,
        strip_nul,
        unit,
        unique,
        references,
        extract,
        parent,
        ordinal,
    })
}

/// A column's `strip_prefix = "USER#"` or `regex = "^ORDER#([^#]+)"`.
fn parse_extract(key: &str, t: &toml::Table, rest: bool, p: &mut Problems) -> Option<Extract> {
    let prefix = get_string(t, key, "strip_prefix", p);
    let pattern = get_string(t, key, "regex", p);
    if rest && (prefix.is_some() || pattern.is_some()) {
        p.push(
            key,
            "a `rest` column takes whole attributes: drop `strip_prefix` / `regex`",
        );
        return None;
    }
    match (prefix, pattern) {
        (None, None) => None,
        (Some(_), Some(_)) => {
            p.push(key, "give `strip_prefix` or `regex`, not both");
            None
        }
        (Some(pre), None) if pre.is_empty() => {
            p.push(&format!("{key}.strip_prefix"), "must not be empty");
            None
        }
        (Some(pre), None) => Some(Extract::StripPrefix(pre)),
        (None, Some(pat)) => match regex::Regex::new(&pat) {
            Ok(r) if r.captures_len() >= 2 => Some(Extract::Regex(r)),
            Ok(_) => {
                p.push(
                    &format!("{key}.regex"),
                    &format!("`{pat}` has no group: the column takes the first `( … )`"),
                );
                None
            }
            Err(e) => {
                p.push(
                    &format!("{key}.regex"),
                    &format!(
                        "`{pat}` is not a valid regex: {}",
                        e.to_string().lines().last().unwrap_or("")
                    ),
                );
                None
            }
        },
    }
}
