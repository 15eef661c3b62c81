//! `pipeline.toml` → [`Config`], checked before any work starts.
//!
//! Input: the TOML text (and the file's directory, against which relative export paths
//! are resolved). Output: a validated [`Config`], or every problem found, each naming its
//! key (`tables[0].columns.price.type: …`), so a user fixes them all in one go.
//!
//! This file holds the typed config; [`parse`] walks the TOML into it.

pub mod libpq;
mod parse;

use std::fmt;
use std::path::PathBuf;

use crate::convert::Cell;
use crate::error::{Error, Result};
use crate::scalar::time::EpochUnit;
use crate::schema::ColumnType;

/// Environment variable that overrides `target.url`.
pub const TARGET_URL_ENV: &str = "DDB2PG_TARGET_URL";

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub target: Target,
    pub tuning: Tuning,
    pub tables: Vec<TableSpec>,
    /// `[[checks]]`: queries whose latency `ddb2pg check` measures on the loaded target.
    pub checks: Vec<CheckSpec>,
}

/// One `[[checks]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckSpec {
    pub name: String,
    /// The query timed, with `$1`, `$2`… for the parameters.
    pub sql: String,
    /// A query whose rows are the parameter values (column i for `$i`), drawn in turn.
    pub params: Option<String>,
    /// The target: p95 latency in milliseconds at most.
    pub p95_ms: Option<f64>,
    /// Timed executions (after a few untimed ones to warm the cache).
    pub runs: usize,
}

/// Timed executions of a check when `runs` is not given.
pub const CHECK_RUNS: usize = 200;

/// `[target]`.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    pub schema: String,
}

/// `[tuning]`: every key optional; defaults chosen from the machine.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// PostgreSQL COPY connections per table.
    pub connections: usize,
    /// Rows per Arrow batch.
    pub batch_rows: usize,
    /// Uncompressed bytes of DynamoDB JSON per page read from a split.
    pub page_bytes: usize,
    /// Splits read at once: export files, or DynamoDB scan segments.
    pub readers: usize,
    /// Whether `readers` was given (scans default to 16 segments at once otherwise).
    pub readers_set: bool,
    /// Threads of the decode/encode pool.
    pub cpu_threads: usize,
    /// Bytes handed to the socket per COPY write.
    pub copy_write_bytes: usize,
    /// COPY bytes per chunk: one transaction with its checkpoint; a resume redoes at most
    /// one chunk per connection, and a writer keeps its chunk in memory for a retry.
    pub chunk_bytes: usize,
    /// Seconds a worker's claim on a split lasts without renewal (renewed every quarter);
    /// a worker whose connection is gone loses its claims at once.
    pub lease_seconds: u64,
    /// Seconds between two looks for new changes when `sync` follows.
    pub poll_seconds: u64,
}

impl Default for Tuning {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        Tuning {
            connections: cores.clamp(2, 8),
            batch_rows: 8192,
            page_bytes: 2 << 20,
            readers: cores.clamp(2, 8),
            readers_set: false,
            cpu_threads: cores,
            copy_write_bytes: 64 << 10,
            chunk_bytes: 32 << 20,
            lease_seconds: 60,
            poll_seconds: 60,
        }
    }
}

/// One `[[tables]]` entry.
#[derive(Clone)]
pub struct TableSpec {
    pub name: String,
    pub primary_key: Vec<String>,
    pub source: Source,
    /// Where the changes made after the load's baseline come from (`sync`).
    pub changes: Option<Changes>,
    pub columns: Vec<ColumnSpec>,
    /// `[[tables.indexes]]`, built after the data.
    pub indexes: Vec<IndexSpec>,
    /// `where = { … }`: only the source's items that match are this table's (several
    /// tables may share one source, as in a single-table design).
    pub route: Option<Route>,
    /// Child tables (`parent = this`, `unnest = "list"`): a row per element of one of
    /// this table's list attributes, loaded with this table's rows (the same chunks).
    pub children: Vec<ChildSpec>,
    /// `source = { …, unrouted = "reject" }`: the source's items that match no table's
    /// `where` are written to the rejects file (`"count"`, the default, only counts them).
    /// One setting per source: every table reading it says the same or nothing.
    pub unrouted: Option<Unrouted>,
    /// A child table's foreign key to a parent whose key has several columns: the
    /// `parent` columns, in the parent key's order (a one-column key is the column's
    /// `references`).
    pub parent_key: Option<ForeignKey>,
}

/// A foreign key added after the data: `columns` of the table reference `references`.
#[derive(Debug, Clone, PartialEq)]
pub struct ForeignKey {
    pub columns: Vec<String>,
    pub references: Reference,
}

impl ForeignKey {
    /// The constraint name the mapping gives it.
    #[must_use]
    pub fn constraint(&self, table: &str) -> String {
        crate::schema::pg_name(&format!("{table}_{}_fkey", self.columns.join("_")))
    }
}

/// What a load does with a source's items that match no table's `where`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unrouted {
    /// Counted per source in the summary (the default).
    Count,
    /// Counted, and each kept in the rejects file (`"table": null`) and `ddb2pg.rejects`,
    /// as a reject: it counts against `--max-rejects` and the run exits 3.
    Reject,
}

/// A `[[tables]]` entry with `parent` and `unnest`: loaded from its parent's items, one
/// row per element of the list attribute `unnest` (each element a map).
#[derive(Debug, Clone)]
pub struct ChildSpec {
    /// The parent's list attribute (empty for a table that rides).
    pub unnest: String,
    /// The child table: its `source` is its parent's; no `where`, no `changes`.
    pub table: TableSpec,
    /// Not a child of the config but a table sharing the parent's source, read in the
    /// same pass (see [`TableSpec::take_riders`]): a row per item its `where` takes.
    pub rides: bool,
}

/// `where = { attribute = "PK", prefix = "USER#" }` or `{ attribute = "type", equals =
/// "order" }`: which of a source's items a table takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub attribute: String,
    pub test: RouteTest,
}

/// How a [`Route`]'s attribute is compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteTest {
    /// A string (`S`) that starts with it.
    Prefix(String),
    /// A string (`S`) or number (`N`, as written) or boolean (`true`/`false`) equal to it.
    Equals(String),
}

impl Route {
    /// Whether a value's text (`S` or `N` as written, `true`/`false` for `BOOL`; `None`
    /// for a missing attribute or any other type) matches.
    #[must_use]
    pub fn matches(&self, value: Option<&str>) -> bool {
        match (value, &self.test) {
            (None, _) => false,
            (Some(v), RouteTest::Prefix(p)) => v.starts_with(p.as_str()),
            (Some(v), RouteTest::Equals(e)) => v == e,
        }
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.test {
            RouteTest::Prefix(p) => write!(f, "{} starts with \"{p}\"", self.attribute),
            RouteTest::Equals(e) => write!(f, "{} = \"{e}\"", self.attribute),
        }
    }
}

/// `strip_prefix = "USER#"` or `regex = "^ORDER#([^#]+)"`: the part of a string attribute
/// a column takes (the rest of the value after the prefix, or the regex's first group).
#[derive(Clone)]
pub enum Extract {
    StripPrefix(String),
    Regex(regex::Regex),
}

impl fmt::Debug for Extract {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Extract::StripPrefix(p) => write!(f, "StripPrefix({p:?})"),
            Extract::Regex(r) => write!(f, "Regex({:?})", r.as_str()),
        }
    }
}

impl Extract {
    /// The part of `s` the column takes.
    ///
    /// # Errors
    /// `s` does not start with the prefix, or the regex does not match it.
    pub fn apply<'s>(&self, s: &'s str) -> std::result::Result<&'s str, String> {
        match self {
            Extract::StripPrefix(p) => s
                .strip_prefix(p.as_str())
                .ok_or_else(|| format!("does not start with \"{p}\" (strip_prefix)")),
            Extract::Regex(r) => r
                .captures(s)
                .and_then(|c| c.get(1))
                .map(|m| m.as_str())
                .ok_or_else(|| format!("does not match regex \"{}\"", r.as_str())),
        }
    }
}

impl fmt::Debug for TableSpec {
    /// What a load's rows depend on: `changes` is left out, so declaring it after a load
    /// leaves that load's fingerprint (and a resume) as it was.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("TableSpec");
        d.field("name", &self.name)
            .field("primary_key", &self.primary_key)
            .field("source", &self.source)
            .field("columns", &self.columns)
            .field("indexes", &self.indexes);
        // Shown only when given, so a table without one hashes as it always did.
        if let Some(r) = &self.route {
            d.field("route", r);
        }
        if !self.children.is_empty() {
            d.field("children", &self.children);
        }
        if self.unrouted == Some(Unrouted::Reject) {
            d.field("unrouted", &Unrouted::Reject);
        }
        if let Some(k) = &self.parent_key {
            d.field("parent_key", k);
        }
        d.finish()
    }
}

/// `changes = { … }`: where a table's changes after its load come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Changes {
    /// Incremental exports under a prefix: a local folder (resolved against the config's
    /// folder) or `s3://bucket/prefix`.
    Exports {
        location: String,
        path: Option<PathBuf>,
    },
    /// The DynamoDB Stream of a live table (its `LatestStreamArn`), read shard by shard.
    Stream { table: String },
}

/// One `[[tables.indexes]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexSpec {
    pub name: String,
    /// Columns, or one SQL expression (e.g. `to_tsvector('english', title)`).
    pub columns: Vec<String>,
    pub expression: Option<String>,
    /// Access method: btree (default), gin, gist, hash, brin.
    pub using: String,
    pub unique: bool,
    /// Partial index predicate (SQL).
    pub predicate: Option<String>,
}

/// A column's `references = "table(column)"`: a foreign key added after the data.
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    /// The referenced table, as written (`users`, or `schema.users`).
    pub table: String,
    /// The referenced columns; empty means the referenced table's primary key.
    pub columns: Vec<String>,
}

/// Where a table's items come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A DynamoDB export: a local folder (resolved against the config's folder) or `s3://`.
    Export {
        location: String,
        path: Option<PathBuf>,
    },
    /// A snapshot's table folder (`ddb2pg snapshot`): its Parquet files, already mapped,
    /// resolved against the config's folder.
    Parquet { location: String, path: PathBuf },
    /// A live table read by parallel scan.
    DynamoDb {
        table: String,
        segments: Option<u32>,
        read_capacity: Option<f64>,
        consistent: bool,
    },
}

/// One column of `[tables.columns]`.
#[derive(Clone)]
pub struct ColumnSpec {
    pub name: String,
    /// The DynamoDB attribute it comes from (`None` for the `rest` column).
    pub from: Option<String>,
    pub ty: ColumnType,
    pub required: bool,
    /// The `default`, converted once by the column's own rules (type, unit, U+0000): the
    /// value decode fills in and the table's DDL declares.
    pub default: Option<Cell<'static>>,
    /// The `default` as written, which is what the column's `Debug` shows: a run's
    /// fingerprint hashes the mapping's `Debug`, so it stays what it was.
    pub default_given: Option<toml::Value>,
    pub rest: bool,
    pub strip_nul: bool,
    pub unit: EpochUnit,
    pub unique: bool,
    /// A foreign key added after the data (`references = "users(id)"`).
    pub references: Option<Reference>,
    /// Only part of the attribute's string value (`strip_prefix`, `regex`).
    pub extract: Option<Extract>,
    /// In a child table: the value comes from this column of the parent's row
    /// (`{ parent = "id" }`); `from` is `None`.
    pub parent: Option<String>,
    /// In a child table: the element's position in the list, from 0 (`{ ordinal = true }`).
    pub ordinal: bool,
}

impl fmt::Debug for ColumnSpec {
    /// The fields in declaration order, the default as written (see `default_given`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("ColumnSpec");
        d.field("name", &self.name)
            .field("from", &self.from)
            .field("ty", &self.ty)
            .field("required", &self.required)
            .field("default", &self.default_given)
            .field("rest", &self.rest)
            .field("strip_nul", &self.strip_nul)
            .field("unit", &self.unit)
            .field("unique", &self.unique)
            .field("references", &self.references);
        if let Some(x) = &self.extract {
            d.field("extract", x);
        }
        if let Some(p) = &self.parent {
            d.field("parent", p);
        }
        if self.ordinal {
            d.field("ordinal", &true);
        }
        d.finish()
    }
}

impl Source {
    /// What two tables read the same items from: the export's location or the live table.
    #[must_use]
    pub fn identity(&self) -> String {
        match self {
            Source::Export { location, .. } => format!("export:{location}"),
            Source::DynamoDb { table, .. } => format!("dynamodb:{table}"),
            Source::Parquet { location, .. } => format!("parquet:{location}"),
        }
    }
}

impl TableSpec {
    /// This table and its child tables, the parent first.
    /// Makes `riders` — tables sharing this table's source, none with a rest column or
    /// child tables of its own — part of this table's pass: the source is read once, and
    /// each item goes to every table whose `where` it matches, committed in the same
    /// chunks (their keys and indexes built with this table's).
    pub fn take_riders(&mut self, riders: Vec<TableSpec>) {
        for table in riders {
            self.children.push(ChildSpec {
                unnest: String::new(),
                table,
                rides: true,
            });
        }
    }

    /// Whether a table sharing this one's source can be read in its pass.
    #[must_use]
    pub fn can_ride(&self) -> bool {
        self.children.is_empty() && !self.columns.iter().any(|c| c.rest)
    }

    /// The foreign keys added after the data: each `references` column's, then the one to
    /// a parent with a key of several columns.
    #[must_use]
    pub fn foreign_keys(&self) -> Vec<ForeignKey> {
        self.columns
            .iter()
            .filter_map(|c| {
                c.references.as_ref().map(|r| ForeignKey {
                    columns: vec![c.name.clone()],
                    references: r.clone(),
                })
            })
            .chain(self.parent_key.clone())
            .collect()
    }

    pub fn with_children(&self) -> impl Iterator<Item = &TableSpec> {
        std::iter::once(self).chain(self.children.iter().map(|c| &c.table))
    }

    /// Position of each primary-key column in `columns`.
    #[must_use]
    pub fn primary_key_indices(&self) -> Vec<usize> {
        self.primary_key
            .iter()
            .filter_map(|k| self.columns.iter().position(|c| &c.name == k))
            .collect()
    }
}

impl Config {
    /// The tables selected by `--table` (all when empty).
    ///
    /// # Errors
    /// [`Error::Usage`] naming a table the config does not declare.
    pub fn select_tables(&self, names: &[String]) -> Result<Vec<TableSpec>> {
        if names.is_empty() {
            return Ok(self.tables.clone());
        }
        let mut out = Vec::new();
        for n in names {
            match self.tables.iter().find(|t| &t.name == n) {
                Some(t) => out.push(t.clone()),
                None if self
                    .tables
                    .iter()
                    .any(|t| t.children.iter().any(|c| &c.table.name == n)) =>
                {
                    let parent = self
                        .tables
                        .iter()
                        .find(|t| t.children.iter().any(|c| &c.table.name == n))
                        .map_or("", |t| t.name.as_str());
                    return Err(Error::Usage(format!(
                        "--table {n}: a child table loads with its parent's items: select --table {parent}"
                    )));
                }
                None => {
                    let known: Vec<&str> = self.tables.iter().map(|t| t.name.as_str()).collect();
                    return Err(Error::Usage(format!(
                        "--table {n}: no such table in {} (declared: {})",
                        self.path.display(),
                        known.join(", ")
                    )));
                }
            }
        }
        Ok(out)
    }

    /// Every table, each parent's child tables right after it.
    #[must_use]
    pub fn all_tables(&self) -> Vec<TableSpec> {
        self.tables
            .iter()
            .flat_map(|t| t.with_children().cloned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(text: &str) -> Result<Config> {
        Config::parse(text, Path::new("pipeline.toml"), Path::new("/base"), None)
    }

    const GOOD: &str = r#"
[target]
url = "postgresql://postgres@127.0.0.1:5432/test"

[[tables]]
name = "books"
primary_key = ["id"]
source = { export = "fixtures/books" }

[tables.columns]
id = { from = "bookId", type = "uuid" }
title = { from = "title", type = "text", required = true }
price = { type = "numeric(10,2)" }
category = { from = "category", type = "varchar(100)", default = "General" }
attributes = { rest = true, type = "jsonb" }
"#;

    /// A run's fingerprint hashes the mapping's `Debug`: a column's must read as it always
    /// has (the default as written), or a stopped run would not resume after an upgrade.
    #[test]
    fn a_columns_debug_is_what_the_fingerprint_always_hashed() {
        let c = parse(GOOD).expect("config");
        let category = &c.tables[0].columns[3];
        assert_eq!(category.default, Some(Cell::Str("General".into())));
        assert_eq!(
            format!("{category:?}"),
            "ColumnSpec { name: \"category\", from: Some(\"category\"), ty: Varchar(100), \
             required: false, default: Some(String(\"General\")), rest: false, \
             strip_nul: false, unit: Seconds, unique: false, references: None }"
        );
    }

    #[test]
    fn good_config_keeps_column_order_and_resolves_paths() {
        let c = parse(GOOD).expect("valid");
        let t = &c.tables[0];
        let names: Vec<&str> = t.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["id", "title", "price", "category", "attributes"]);
        assert_eq!(t.columns[2].from.as_deref(), Some("price"));
        assert_eq!(t.columns[4].from, None);
        assert_eq!(
            t.source,
            Source::Export {
                location: "fixtures/books".into(),
                path: Some(PathBuf::from("/base/fixtures/books"))
            }
        );
        assert_eq!(c.target.schema, "public");
    }

    #[test]
    fn every_problem_is_listed_with_its_key() {
        let bad = r#"
[target]
url = "mysql://nope"
colour = "blue"

[tuning]
connections = 0

[[tables]]
name = "books"
primary_key = ["nope"]
source = { export = "x" }

[tables.columns]
id = { from = "bookId", type = "uuidd" }
price = { type = "numeric(10,2)", default = "abc" }
Price = { type = "text" }
"#;
        let Err(Error::Config { problems, .. }) = parse(bad) else {
            panic!("expected a config error");
        };
        let all = problems.join("\n");
        for needle in [
            "`target.colour`: unknown key",
            "`tuning.connections`: must be from 1 to 256",
            "`tables[0].primary_key[0]`: `nope` names no column",
            "`tables[0].columns.id.type`: unknown column type `uuidd`",
            "`tables[0].columns.price.default`",
            "`tables[0].columns.Price`: duplicate column",
            "`target.url`",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }

    #[test]
    fn env_url_overrides_and_missing_url_is_named() {
        let no_url = GOOD.replace("url = \"postgresql://postgres@127.0.0.1:5432/test\"", "");
        let Err(Error::Config { problems, .. }) = parse(&no_url) else {
            panic!("expected error")
        };
        assert!(problems[0].contains("target.url"), "{problems:?}");
        let c = Config::parse(
            &no_url,
            Path::new("p.toml"),
            Path::new("."),
            Some("postgresql://u@h/db".into()),
        )
        .expect("env url");
        assert_eq!(c.target.url, "postgresql://u@h/db");
    }

    #[test]
    fn a_foreign_key_between_types_postgresql_cannot_compare_is_refused_before_any_work() {
        let two = |fk_type: &str, refs: &str| {
            format!(
                "{GOOD}\n[[tables]]\nname = \"orders\"\nprimary_key = [\"id\"]\nsource = {{ export = \"o\" }}\n\n\
                 [tables.columns]\nid = {{ type = \"text\" }}\nbook = {{ type = \"{fk_type}\", references = \"{refs}\" }}\n"
            )
        };
        parse(&two("uuid", "books")).expect("uuid to uuid");
        parse(&two("uuid", "books(id)")).expect("named column");
        let problems = |text: &str| match parse(text) {
            Err(Error::Config { problems, .. }) => problems.join("\n"),
            other => panic!("expected a config error, got {other:?}"),
        };
        let all = problems(&two("text", "books"));
        assert!(
            all.contains("`tables[1].columns.book.references`: a text column cannot reference `books.id`, which is uuid"),
            "{all}"
        );
        let all = problems(&two("text", "books(nope)"));
        assert!(all.contains("table `books` has no column `nope`"), "{all}");
        // Integers reach numeric; numeric does not reach integers; timestamps meet dates.
        use crate::schema::ColumnType as T;
        assert!(super::parse::foreign_key_types_fit(T::Int4, T::Int8));
        assert!(super::parse::foreign_key_types_fit(
            T::Int8,
            T::Numeric(None)
        ));
        assert!(!super::parse::foreign_key_types_fit(
            T::Numeric(None),
            T::Int8
        ));
        assert!(super::parse::foreign_key_types_fit(T::Varchar(10), T::Text));
        assert!(super::parse::foreign_key_types_fit(T::Date, T::Timestamptz));
        assert!(!super::parse::foreign_key_types_fit(T::Bool, T::Int4));
    }

    #[test]
    fn a_toml_syntax_error_names_its_line_and_column() {
        let Err(Error::Config { problems, .. }) = parse("[target]\nurl = \"x\"\nschema = = 1\n")
        else {
            panic!("expected a config error");
        };
        assert!(
            problems[0].starts_with("not valid TOML at line 3, column "),
            "{problems:?}"
        );
    }

    #[test]
    fn routes_and_key_parts_are_checked_naming_the_key() {
        let good = GOOD.replace(
            "source = { export = \"fixtures/books\" }",
            "source = { export = \"fixtures/books\" }\nwhere = { attribute = \"PK\", prefix = \"BOOK#\" }",
        );
        let c = parse(&good.replace(
            "id = { from = \"bookId\", type = \"uuid\" }",
            "id = { from = \"PK\", regex = '^BOOK#(.+)$', type = \"uuid\" }",
        ))
        .expect("config");
        let t = &c.tables[0];
        assert_eq!(
            t.route.as_ref().map(ToString::to_string).as_deref(),
            Some("PK starts with \"BOOK#\"")
        );
        let x = t.columns[0].extract.as_ref().expect("regex");
        assert_eq!(x.apply("BOOK#abc"), Ok("abc"));
        assert!(x.apply("USER#abc").is_err());
        for (from, to, key) in [
            (
                "prefix = \"BOOK#\"",
                "prefix = \"BOOK#\", equals = \"x\"",
                "tables[0].where",
            ),
            (
                "prefix = \"BOOK#\"",
                "starts = \"BOOK#\"",
                "tables[0].where",
            ),
            (
                "regex = '^BOOK#(.+)$'",
                "regex = '^BOOK#.+$'",
                "tables[0].columns.id.regex",
            ),
            (
                "regex = '^BOOK#(.+)$'",
                "regex = '^BOOK#(.+$'",
                "tables[0].columns.id.regex",
            ),
            (
                "regex = '^BOOK#(.+)$'",
                "regex = 'x(y)', strip_prefix = \"B\"",
                "tables[0].columns.id",
            ),
        ] {
            let text = good
                .replace(
                    "id = { from = \"bookId\", type = \"uuid\" }",
                    "id = { from = \"PK\", regex = '^BOOK#(.+)$', type = \"uuid\" }",
                )
                .replace(from, to);
            let e = parse(&text).expect_err(to).to_string();
            assert!(e.contains(key), "{to}: {e}");
        }
    }

    const CHILD: &str = r#"
[[tables]]
name = "book_tags"
parent = "books"
unnest = "tags"

[tables.columns]
book_id = { parent = "id" }
pos = { ordinal = true }
label = { type = "text", required = true }
"#;

    #[test]
    fn child_tables_go_under_their_parent_and_are_checked_naming_the_key() {
        let c = parse(&format!("{GOOD}{CHILD}")).expect("config");
        assert_eq!(
            c.tables.len(),
            1,
            "a child is not a table with a source of its own"
        );
        let books = &c.tables[0];
        let child = &books.children[0];
        assert_eq!(child.unnest, "tags");
        let t = &child.table;
        assert_eq!(t.source, books.source);
        assert_eq!(
            t.primary_key,
            ["book_id", "pos"],
            "parent columns, then the ordinal"
        );
        assert_eq!(
            t.columns[0].ty,
            ColumnType::Uuid,
            "the parent column's type"
        );
        assert_eq!(t.columns[1].ty, ColumnType::Int4);
        let fk = t.columns[0]
            .references
            .as_ref()
            .expect("a foreign key to the parent");
        assert_eq!(
            (fk.table.as_str(), fk.columns.as_slice()),
            ("books", &["id".to_string()][..])
        );
        assert_eq!(
            c.all_tables()
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>(),
            ["books", "book_tags"]
        );
        let e = c
            .select_tables(&["book_tags".into()])
            .expect_err("a child alone");
        assert!(e.to_string().contains("--table books"), "{e}");
        for (from, to, key) in [
            ("parent = \"books\"\n", "", "tables[1].parent"),
            ("unnest = \"tags\"\n", "", "tables[1].unnest"),
            (
                "parent = \"books\"",
                "parent = \"authors\"",
                "tables[1].parent",
            ),
            (
                "{ parent = \"id\" }",
                "{ parent = \"isbn\" }",
                "tables[1].columns.book_id.parent",
            ),
            (
                "{ parent = \"id\" }",
                "{ parent = \"id\", type = \"text\" }",
                "tables[1].columns.book_id.type",
            ),
            (
                "book_id = { parent = \"id\" }\n",
                "book_id = { type = \"uuid\" }\n",
                "tables[1].columns",
            ),
            (
                "{ ordinal = true }",
                "{ ordinal = true, type = \"text\" }",
                "tables[1].columns.pos.type",
            ),
            (
                "{ ordinal = true }",
                "{ ordinal = true, from = \"x\" }",
                "tables[1].columns.pos.from",
            ),
            (
                "unnest = \"tags\"",
                "unnest = \"tags\"\nsource = { export = \"x\" }",
                "tables[1].source",
            ),
            (
                "label = { type = \"text\", required = true }",
                "label = { rest = true, type = \"jsonb\" }",
                "tables[1].columns.label.rest",
            ),
        ] {
            let e = parse(&format!("{GOOD}{}", CHILD.replace(from, to)))
                .expect_err(to)
                .to_string();
            assert!(e.contains(key), "{to}: {e}");
        }
        let e = parse(&GOOD.replace("price = {", "pos = { ordinal = true }\nprice = {"))
            .expect_err("ordinal in a table")
            .to_string();
        assert!(e.contains("tables[0].columns.pos"), "{e}");
    }
}
