//! The load's inputs: its options, and every selected table's mapping checked and its
//! source opened before any work starts, and a resumed scan held to the run's number of segments.
//!
//! Input: the config and the tables asked for. Output: one [`Input`] per table.

use std::path::PathBuf;
use std::sync::Arc;

use super::state;
use crate::config::{Config, Source, TableSpec, Tuning, Unrouted};
use crate::decode::TablePlan;
use crate::error::{Error, Result};
use crate::sink::Mode;
use crate::source::SourcePlan;

/// Options of one `load`.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub mode: Mode,
    /// Target schema (`--schema`, else `target.schema`).
    pub schema: String,
    pub tables: Vec<String>,
    pub rejects_path: PathBuf,
    pub max_rejects: Option<u64>,
    /// Start a new run even if an unfinished one of the same load exists (or a finished one).
    pub fresh: bool,
    /// A replace loads around indexes and constraints the config does not declare,
    /// instead of refusing them.
    pub keep_undeclared: bool,
    /// Draw progress bars (a terminal) rather than log lines.
    pub bars: bool,
    /// A sync's run: the export it applies (`None` for a load).
    pub sync: Option<SyncMark>,
}

/// The incremental export a sync's run applies, and the load it applies to.
#[derive(Debug, Clone)]
pub struct SyncMark {
    /// The load run whose baseline the changes follow.
    pub base_run: i64,
    /// The export's ARN (its folder name when the manifest has none).
    pub export_arn: String,
    /// Where it is (folder or s3:// address).
    pub location: String,
    /// Its window, RFC 3339: `exportFromTime`, `exportToTime`.
    pub from: String,
    pub to: String,
}

/// A table ready to load: its mapping, its decode plan and its opened source.
pub(super) struct Input {
    pub(super) spec: TableSpec,
    pub(super) plan: Arc<TablePlan>,
    pub(super) source: SourcePlan,
}

/// Checks every selected table's mapping and opens its source before any work starts.
///
/// # Errors
/// A `--table` the config does not declare, or a source that cannot be opened.
pub(super) async fn open_inputs(
    config: &Config,
    names: &[String],
    mode: Mode,
) -> Result<Vec<Input>> {
    let mut out = Vec::new();
    let selected = read_once(config.select_tables(names)?, mode);
    for (i, spec) in selected.iter().enumerate() {
        let spec = spec.clone();
        let id = spec.source.identity();
        // The first selected table of a source others share counts the items that
        // match none of the config's tables of that source.
        let tables: Vec<&TableSpec> = config
            .tables
            .iter()
            .filter(|t| t.source.identity() == id)
            .collect();
        let sharing: Vec<Option<crate::config::Route>> =
            tables.iter().map(|t| t.route.clone()).collect();
        let first = !selected[..i].iter().any(|t| t.source.identity() == id);
        let keep = spec.unrouted == Some(Unrouted::Reject);
        let plan = if (sharing.len() > 1 || keep) && first {
            TablePlan::counting_unrouted(&spec, &sharing, keep.then(|| unrouted_reject(&tables)))
        } else {
            TablePlan::new(&spec)
        };
        let source = SourcePlan::open(&spec, &config.tuning).await?;
        for w in source.warnings() {
            tracing::warn!(table = %spec.name, source = %source.location(), "{w}");
        }
        if let SourcePlan::Scan(s) = &source {
            tracing::info!(
                table = %spec.name,
                dynamodb = %s.table,
                segments = s.segments,
                segments_from = %s.segments_from,
                at_once = s.concurrency,
                read_capacity = s.read_capacity,
                read_capacity_from = %s.read_capacity_from,
                "Scan planned."
            );
        }
        out.push(Input {
            spec,
            plan: Arc::new(plan),
            source,
        });
    }
    Ok(out)
}

/// The selected tables' passes as a load of them would read them (tables sharing a
/// source in one pass, child tables with their parent): per pass its lead table, with
/// its children and riders, the decode plan and the opened source.
///
/// # Errors
/// As [`open_inputs`].
pub async fn open_passes(
    config: &Config,
    names: &[String],
) -> Result<Vec<(TableSpec, Arc<TablePlan>, SourcePlan)>> {
    Ok(open_inputs(config, names, Mode::Create)
        .await?
        .into_iter()
        .map(|i| (i.spec, i.plan, i.source))
        .collect())
}

/// The attribute and reason of the reject an item matching no table's `where` becomes:
/// the tables and their `where`s (the attribute when they all test one).
fn unrouted_reject(tables: &[&TableSpec]) -> (Option<String>, String) {
    let wheres: Vec<String> = tables
        .iter()
        .map(|t| match &t.route {
            Some(r) => format!("{} ({r})", t.name),
            None => t.name.clone(),
        })
        .collect();
    let attrs: std::collections::BTreeSet<&str> = tables
        .iter()
        .filter_map(|t| t.route.as_ref().map(|r| r.attribute.as_str()))
        .collect();
    let attribute = match attrs.len() {
        1 => attrs.into_iter().next().map(str::to_string),
        _ => None,
    };
    (
        attribute,
        format!(
            "matches no table's `where` (kept: the source says unrouted = \"reject\"): {}",
            wheres.join("; ")
        ),
    )
}

/// Selected tables sharing a source are read in one pass, by the first of them: the
/// others ride (see [`TableSpec::take_riders`]) — a load that writes each row once into
/// its table (create, replace, append). An upsert merges each table by its own key, and
/// a table with a rest column or child tables of its own needs its own decode plan:
/// those read the source in a pass of their own.
fn read_once(selected: Vec<TableSpec>, mode: Mode) -> Vec<TableSpec> {
    if !matches!(mode, Mode::Create | Mode::Replace | Mode::Append) {
        return selected;
    }
    let mut out: Vec<TableSpec> = Vec::with_capacity(selected.len());
    let mut riders: Vec<(usize, Vec<TableSpec>)> = Vec::new();
    for spec in selected {
        let id = spec.source.identity();
        let lead = out.iter().position(|t| t.source.identity() == id);
        match lead {
            Some(at) if spec.can_ride() => match riders.iter_mut().find(|r| r.0 == at) {
                Some(r) => r.1.push(spec),
                None => riders.push((at, vec![spec])),
            },
            _ => out.push(spec),
        }
    }
    for (at, group) in riders {
        let names: Vec<&str> = group.iter().map(|t| t.name.as_str()).collect();
        tracing::debug!(table = %out[at].name, with = ?names, "Tables sharing a source: read once.");
        out[at].take_riders(group);
    }
    out
}

/// A resumed scan keeps the run's number of segments (an automatic count could differ now).
pub(super) async fn match_splits(
    prepared: &mut [Input],
    tables: &[state::RunTable],
    tuning: &Tuning,
) -> Result<()> {
    for p in prepared.iter_mut() {
        let Some(t) = tables.iter().find(|t| t.name == p.spec.name) else {
            continue;
        };
        let want = usize::try_from(t.splits).unwrap_or(0);
        if p.source.splits() == want {
            continue;
        }
        match &mut p.spec.source {
            Source::DynamoDb { segments, .. } => {
                *segments = u32::try_from(want).ok();
                p.source = SourcePlan::open(&p.spec, tuning).await?;
            }
            Source::Export { .. } | Source::Parquet { .. } => {
                return Err(Error::Source {
                    source_name: p.source.location(),
                    reason: format!(
                        "the run has {want} splits, the source lists {} files now",
                        p.source.splits()
                    ),
                })
            }
        }
    }
    Ok(())
}
