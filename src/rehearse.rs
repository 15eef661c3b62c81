//! `ddb2pg load --rehearsal DIR`: one rehearsal of the cutover in one go — the load (into
//! a staging schema, as a rehearsal does), `verify` of what it loaded, the `[[checks]]` on
//! it — and one report of it in DIR: `rehearsal.md`, `rehearsal.json`, `throughput.svg`
//! (rows/s of every table over the load, the queue fills below), and `check.*` when the
//! config has checks. The report gives each table's timings (data, keys and indexes,
//! verify) and projects them onto a data set N times larger: a projection from what was
//! measured, with its assumptions written beside it, not a measurement.
//!
//! `check --out DIR` writes its `check.*` files through [`write_check`].
//!
//! Input: the config, the load's options, the rehearsal's. Output: a [`Rehearsal`].

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::chart::{self, BarGroup, Line, Panel, Unit, PALETTE};
use crate::check::{self, CheckOptions, CheckReport};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::load::metrics::machine;
use crate::load::{self, LoadOptions, LoadReport};
use crate::verify::{self, VerifyOptions, VerifyReport};

/// Options of a rehearsal beside the load's.
#[derive(Debug, Clone)]
pub struct RehearsalOptions {
    /// The report's folder (made when missing).
    pub out: PathBuf,
    /// The projection's factor: a data set this many times larger.
    pub project: f64,
    /// Connections running each check at once.
    pub check_clients: usize,
}

/// One table's timings, measured and projected.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TableTimings {
    pub table: String,
    pub rows: u64,
    pub rejected: u64,
    pub mb_read: f64,
    /// Read, decode and COPY of the rows.
    pub data_seconds: f64,
    pub rows_per_second: f64,
    /// The primary key (when built after the data) and the declared indexes.
    pub keys_seconds: f64,
    pub verify_seconds: f64,
    pub projected_rows: f64,
    pub projected_data_seconds: f64,
    pub projected_keys_seconds: f64,
    pub projected_verify_seconds: f64,
}

/// The projection onto a data set `factor` times larger.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Projection {
    pub factor: f64,
    /// Measured: the whole load (planning, data, keys, indexes, foreign keys), and verify.
    pub measured_load_seconds: f64,
    pub measured_verify_seconds: f64,
    /// Measured: what was neither data, keys nor foreign keys (planning, emptying the
    /// tables, bookkeeping), kept as it is in the projection.
    #[serde(default)]
    pub measured_fixed_seconds: f64,
    /// Projected: the load, its foreign keys, verify, and the window (load + verify).
    pub load_seconds: f64,
    pub foreign_keys_seconds: f64,
    pub verify_seconds: f64,
    pub window_seconds: f64,
    pub assumptions: Vec<String>,
    /// Why the projection is weak, when it is (a load too short to measure well…).
    pub caveats: Vec<String>,
}

/// Everything one rehearsal measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Rehearsal {
    pub machine: String,
    pub postgres: String,
    pub schema: String,
    pub load: LoadReport,
    pub verify: VerifyReport,
    /// `None` when the config has no `[[checks]]`.
    pub check: Option<CheckReport>,
    /// Why the checks could not run (a query that does not prepare on the loaded tables).
    pub check_error: Option<String>,
    pub tables: Vec<TableTimings>,
    pub projection: Projection,
    /// The exit code the rehearsal ends with (0, 3 rejects, 4 verify or check failed, 1
    /// the checks could not run).
    pub exit_code: i32,
}

/// Sorting grows as n log n: the factor a sort of `rows` grows by at `factor` times them.
fn sort_growth(rows: f64, factor: f64) -> f64 {
    if rows < 2.0 {
        return factor;
    }
    factor * (rows * factor).ln() / rows.ln()
}

/// How long tables take that load one after another, each one's keys and indexes built
/// while the next loads (as `load` runs them): the last data, or the last build, whichever
/// ends later. `tables` are (data seconds, keys seconds) in load order.
fn schedule(tables: impl Iterator<Item = (f64, f64)>) -> f64 {
    let (mut data_end, mut end) = (0.0f64, 0.0f64);
    for (data, keys) in tables {
        data_end += data;
        end = end.max(data_end + keys);
    }
    end.max(data_end)
}

/// Measures the table timings and projects them.
#[must_use]
pub fn project(
    load: &LoadReport,
    verify: &VerifyReport,
    factor: f64,
) -> (Vec<TableTimings>, Projection) {
    let mut tables = Vec::new();
    for t in &load.tables {
        let rows = t.run_rows.max(t.rows_written + t.rows_before);
        let verify_seconds = verify
            .tables
            .iter()
            .find(|v| v.table == t.table)
            .map_or(0.0, |v| v.seconds);
        let n = rows as f64;
        tables.push(TableTimings {
            table: t.table.clone(),
            rows,
            rejected: t.rejected.max(t.run_rejected),
            mb_read: t.bytes_read as f64 / 1e6,
            data_seconds: t.seconds,
            rows_per_second: t.rows_per_second,
            keys_seconds: t.keys_seconds,
            verify_seconds,
            projected_rows: n * factor,
            // At the rows/s measured: a resumed run's rows loaded before count too.
            projected_data_seconds: if t.rows_written > 0 {
                t.seconds * n * factor / t.rows_written as f64
            } else {
                t.seconds * factor
            },
            projected_keys_seconds: t.keys_seconds * sort_growth(n, factor),
            projected_verify_seconds: verify_seconds * factor,
        });
    }
    let total_rows: f64 = tables.iter().map(|t| t.rows as f64).sum();
    let data_keys = schedule(tables.iter().map(|t| (t.data_seconds, t.keys_seconds)));
    // What is neither data nor keys nor foreign keys (planning, emptying the tables, the
    // state's bookkeeping) does not grow with the data.
    let fixed = (load.seconds - data_keys - load.foreign_keys_seconds).max(0.0);
    let fks = load.foreign_keys_seconds * sort_growth(total_rows, factor);
    let load_seconds = fixed
        + fks
        + schedule(
            tables
                .iter()
                .map(|t| (t.projected_data_seconds, t.projected_keys_seconds)),
        );
    let verify_seconds: f64 = tables.iter().map(|t| t.projected_verify_seconds).sum();
    let mut caveats = Vec::new();
    if load
        .tables
        .iter()
        .any(|t| t.run_rows > t.rows_written + t.rows_before)
    {
        caveats.push("other workers loaded part of the run: the rows/s measured are this process's alone, so the projection is an upper bound".into());
    }
    if load.seconds < 5.0 {
        caveats.push(format!(
            "the load took {:.1} s: start-up and per-table costs weigh in a load this short; project from a sample of at least a minute",
            load.seconds
        ));
    }
    if load.already_done.is_some() {
        caveats.push("the load had completed already (nothing was loaded): run the rehearsal with --fresh to measure it".into());
    }
    if load.resumed
        || tables.iter().any(|t| {
            load.tables
                .iter()
                .any(|l| l.table == t.table && l.rows_before > 0)
        })
    {
        caveats.push(
            "the load resumed an earlier run: its timings cover only the rows this run loaded"
                .into(),
        );
    }
    let projection = Projection {
        factor,
        measured_load_seconds: load.seconds,
        measured_verify_seconds: verify.seconds,
        measured_fixed_seconds: fixed,
        load_seconds,
        foreign_keys_seconds: fks,
        verify_seconds,
        window_seconds: load_seconds + verify_seconds,
        assumptions: vec![
            format!("every table holds {factor}× the rows it holds now, of the same shape (attributes, sizes, rejects)"),
            "the same machine, PostgreSQL settings, connections and threads; nothing else loads the server".into(),
            "the source reads as fast per row (an export on the same storage; a scan with the same read capacity)".into(),
            "reading, decoding and COPY grow linearly with the rows (the pipeline streams in bounded memory)".into(),
            "key, index and foreign-key builds grow as n log n (a sort that outgrows maintenance_work_mem spills to disk and takes longer than projected); verify reads both sides once and hashes rows into buckets, so it grows linearly".into(),
            "tables load one after another, as measured, each one's keys and indexes built while the next loads (sharing the machine with it as much as measured); the time that is neither data nor keys (planning, emptying the tables) stays as measured".into(),
            "the window is the reload (load + verify); at cutover add the final `sync --until-caught-up`, `verify --live` (a scan of the live table) and `promote` (seconds)".into(),
        ],
        caveats,
    };
    (tables, projection)
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { what, source }
}

/// Runs the load, verify and checks, and writes the report.
///
/// # Errors
/// The load fails (nothing is written but what the load itself records), verify cannot
/// read a side, or the report cannot be written.
pub async fn rehearse(
    config: &Config,
    load_opts: &LoadOptions,
    opts: &RehearsalOptions,
) -> Result<Rehearsal> {
    std::fs::create_dir_all(&opts.out).map_err(io(format!("make {}", opts.out.display())))?;
    let load = load::load(config, load_opts).await?;
    let verify = verify::verify(
        config,
        &VerifyOptions {
            schema: load_opts.schema.clone(),
            tables: load_opts.tables.clone(),
            show: 10,
            live: false,
        },
    )
    .await?;
    let (check, check_error) = if config.checks.is_empty() {
        (None, None)
    } else {
        let opts = CheckOptions {
            schema: load_opts.schema.clone(),
            names: Vec::new(),
            clients: opts.check_clients,
            runs: None,
        };
        match check::check(config, &opts).await {
            Ok(r) => (Some(r), None),
            Err(e) => (None, Some(e.to_string())),
        }
    };
    let postgres = match crate::sink::connect(&config.target.url).await {
        Ok(c) => c
            .query_one("SHOW server_version", &[])
            .await
            .ok()
            .and_then(|r| r.try_get::<_, String>(0).ok())
            .unwrap_or_default(),
        Err(_) => String::new(),
    };
    let (tables, projection) = project(&load, &verify, opts.project);
    let exit_code = if check_error.is_some() {
        1
    } else if !verify.matches || check.as_ref().is_some_and(|c| !c.missed().is_empty()) {
        4
    } else if load.rejected() > 0 || load.orphans() > 0 {
        3
    } else {
        0
    };
    let r = Rehearsal {
        machine: machine(),
        postgres,
        schema: load_opts.schema.clone(),
        load,
        verify,
        check,
        check_error,
        tables,
        projection,
        exit_code,
    };
    write(&r, &opts.out)?;
    Ok(r)
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(io(format!("write {}", path.display())))
}

fn write(r: &Rehearsal, out: &Path) -> Result<()> {
    let json = serde_json::to_string_pretty(r).map_err(|e| Error::Internal(e.to_string()))?;
    write_file(&out.join("rehearsal.json"), &json)?;
    write_file(&out.join("rehearsal.md"), &markdown(r))?;
    draw_throughput(&r.load, &out.join("throughput.svg"))?;
    if let Some(c) = &r.check {
        write_check(c, out)?;
    }
    Ok(())
}

fn secs(s: f64) -> String {
    if s >= 120.0 {
        // Whole seconds first, so 179.6 s is 3 min 00 s, never 2 min 60 s.
        let whole = s.round() as u64;
        if whole >= 3600 {
            let minutes = (whole + 30) / 60;
            format!("{} h {:02} min", minutes / 60, minutes % 60)
        } else {
            format!("{} min {:02} s", whole / 60, whole % 60)
        }
    } else {
        format!("{s:.2} s")
    }
}

fn markdown(r: &Rehearsal) -> String {
    let p = &r.projection;
    let mut s = format!(
        "# ddb2pg rehearsal into schema `{}`\n\n- machine: {}\n- PostgreSQL {}\n- load: mode {}, run {}, {} in total (peak RSS {})\n- verify: {} in {}\n",
        r.schema,
        r.machine,
        r.postgres,
        r.load.mode.map_or_else(|| "?".into(), |m| format!("{m:?}").to_lowercase()),
        r.load.run_id.unwrap_or(0),
        secs(r.load.seconds),
        r.load.peak_rss_bytes.map_or_else(|| "n/a".into(), |b| format!("{:.0} MB", b as f64 / 1e6)),
        if r.verify.matches { "**every row matches**" } else { "**DIFFERENCES FOUND**" },
        secs(r.verify.seconds),
    );
    match (&r.check, &r.check_error) {
        (Some(c), _) => {
            let missed = c.missed().len();
            s.push_str(&format!(
                "- checks: {} run on {} client(s), {}\n",
                c.checks.len(),
                c.clients,
                if missed == 0 {
                    "every target met".to_string()
                } else {
                    format!("**{missed} target(s) missed**")
                }
            ));
        }
        (None, Some(e)) => s.push_str(&format!("- checks: **could not run**: {e}\n")),
        (None, None) => s.push_str("- checks: none in the config\n"),
    }
    s.push_str(&format!("- exit code {}\n\n## Tables\n\n", r.exit_code));
    s.push_str("| table | rows | rejected | MB read | data s | rows/s | keys + indexes s | verify s | verify verdict |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    for t in &r.tables {
        let verdict = r
            .verify
            .tables
            .iter()
            .find(|v| v.table == t.table)
            .map_or("not verified", |v| v.verdict.as_str());
        s.push_str(&format!(
            "| {} | {} | {} | {:.1} | {:.2} | {:.0} | {:.2} | {:.2} | {} |\n",
            t.table,
            t.rows,
            t.rejected,
            t.mb_read,
            t.data_seconds,
            t.rows_per_second,
            t.keys_seconds,
            t.verify_seconds,
            verdict
        ));
    }
    s.push_str(&format!(
        "\nForeign keys: {:.2} s. Of the load's {:.2} s, {:.2} s were neither data, keys nor foreign keys (planning, emptying the tables, bookkeeping).\n\nRows/s over the load and the queue fills: [throughput.svg](throughput.svg).\n\n",
        r.load.foreign_keys_seconds,
        r.load.seconds,
        r.projection.measured_fixed_seconds
    ));
    if let Some(c) = &r.check {
        s.push_str("## Checks\n\n");
        s.push_str(&check_table(c));
        s.push_str("\nLatencies against their targets: [check.svg](check.svg).\n\n");
    }
    s.push_str(&format!(
        "## Projection: {}× the data (a projection, not a measurement)\n\n| table | rows | data | keys + indexes | verify |\n| --- | --- | --- | --- | --- |\n",
        p.factor
    ));
    for t in &r.tables {
        s.push_str(&format!(
            "| {} | {:.0} | {} | {} | {} |\n",
            t.table,
            t.projected_rows,
            secs(t.projected_data_seconds),
            secs(t.projected_keys_seconds),
            secs(t.projected_verify_seconds)
        ));
    }
    s.push_str(&format!(
        "\n**Projected reload window: {}** — load {} (foreign keys {} of it), verify {}. Measured here: load {}, verify {}.\n\nAssumptions:\n\n",
        secs(p.window_seconds),
        secs(p.load_seconds),
        secs(p.foreign_keys_seconds),
        secs(p.verify_seconds),
        secs(p.measured_load_seconds),
        secs(p.measured_verify_seconds)
    ));
    for a in &p.assumptions {
        s.push_str(&format!("- {a}\n"));
    }
    if !p.caveats.is_empty() {
        s.push_str("\nCaveats:\n\n");
        for c in &p.caveats {
            s.push_str(&format!("- **{c}**\n"));
        }
    }
    s
}

/// Rows/s of every table over the load (each from when it started), and below it the
/// queue fills.
fn draw_throughput(load: &LoadReport, path: &Path) -> Result<()> {
    let mut lines = Vec::new();
    let (mut pages, mut chunks) = (Vec::new(), Vec::new());
    let building: Vec<(f64, f64)> = load
        .tables
        .iter()
        .filter(|t| t.keys_seconds > 0.0)
        .map(|t| (t.started_s + t.seconds, t.keys_seconds))
        .collect();
    for (i, t) in load.tables.iter().enumerate() {
        lines.push(Line {
            label: format!("{} ({:.0}k rows/s)", t.table, t.rows_per_second / 1000.0),
            points: chart::rates(&t.stages.timeline, t.started_s),
            color: PALETTE[i % PALETTE.len()],
            width: 2,
        });
        for f in &t.stages.queue_fills {
            pages.push((t.started_s + f.0, f.1));
            chunks.push((t.started_s + f.0, f.2));
        }
    }
    // Key and index builds as a thick bar on the axis (the next table loads meanwhile).
    for (i, (at, long)) in building.iter().enumerate() {
        lines.push(Line {
            label: if i == 0 {
                "keys + indexes being built".into()
            } else {
                String::new()
            },
            points: vec![(*at, 0.0), (at + long, 0.0)],
            color: chart::GOAL,
            width: 6,
        });
    }
    pages.sort_by(|a, b| a.0.total_cmp(&b.0));
    chunks.sort_by(|a, b| a.0.total_cmp(&b.0));
    let fills = Panel {
        title: "queue fill (a full page queue: decode + encode is the bottleneck; a full chunk queue: PostgreSQL is)".into(),
        y_desc: "fill".into(),
        unit: Unit::Percent,
        lines: vec![
            Line { label: "page queue (read → decode)".into(), points: pages, color: PALETTE[3], width: 2 },
            Line { label: "chunk queue (encode → COPY)".into(), points: chunks, color: PALETTE[4], width: 2 },
        ],
        y_floor: 1.0,
    };
    chart::draw_panels(
        path,
        &format!(
            "ddb2pg load into {}: rows/s per table, every 100 ms",
            load.schema
        ),
        "seconds since the first table began loading",
        &[
            Panel {
                title: "rows/s".into(),
                y_desc: "rows/s".into(),
                unit: Unit::Kilo,
                lines,
                y_floor: 0.0,
            },
            fills,
        ],
    )
}

fn check_table(c: &CheckReport) -> String {
    let mut s = String::from("| check | runs | clients | p50 ms | p95 ms | p99 ms | max ms | target p95 ms | verdict | index use |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    for x in &c.checks {
        let mut uses = if x.indexes.is_empty() {
            "no index".to_string()
        } else {
            x.indexes.join(", ")
        };
        for scan in &x.big_seq_scans {
            uses.push_str(&format!("; **sequential scan of {scan}**"));
        }
        s.push_str(&format!(
            "| {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {} |\n",
            x.name,
            x.runs,
            x.clients,
            x.p50_ms,
            x.p95_ms,
            x.p99_ms,
            x.max_ms,
            x.target_p95_ms
                .map_or_else(|| "-".into(), |t| format!("{t}")),
            match x.met {
                Some(true) => "met",
                Some(false) => "**MISSED**",
                None => "no target",
            },
            uses
        ));
    }
    s
}

/// Writes `check.json`, `check.md` and `check.svg` (p50/p95/p99 per check against its
/// target, log scale) into `out`.
///
/// # Errors
/// A file cannot be written.
pub fn write_check(c: &CheckReport, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).map_err(io(format!("make {}", out.display())))?;
    let json = serde_json::to_string_pretty(c).map_err(|e| Error::Internal(e.to_string()))?;
    write_file(&out.join("check.json"), &json)?;
    let md = format!(
        "# ddb2pg check on schema `{}` ({} client(s))\n\n{}",
        c.schema,
        c.clients,
        check_table(c)
    );
    write_file(&out.join("check.md"), &md)?;
    let groups: Vec<BarGroup> = c
        .checks
        .iter()
        .map(|x| BarGroup {
            name: x.name.clone(),
            bars: vec![
                ("p50".into(), x.p50_ms),
                ("p95".into(), x.p95_ms),
                ("p99".into(), x.p99_ms),
            ],
            target_ms: x.target_p95_ms,
        })
        .collect();
    chart::draw_latency_bars(
        &out.join("check.svg"),
        &format!(
            "ddb2pg check on {}: latency per check, {} client(s)",
            c.schema, c.clients
        ),
        &groups,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::TableReport;

    #[test]
    fn the_projection_scales_data_linearly_and_sorts_as_n_log_n() {
        let load = LoadReport {
            seconds: 13.0,
            foreign_keys_seconds: 1.0,
            tables: vec![TableReport {
                table: "orders".into(),
                rows_written: 1000,
                seconds: 10.0,
                keys_seconds: 1.0,
                ..TableReport::default()
            }],
            ..LoadReport::default()
        };
        let verify = VerifyReport {
            tables: vec![crate::verify::TableVerdict {
                table: "orders".into(),
                seconds: 2.0,
                ..Default::default()
            }],
            matches: true,
            seconds: 2.0,
        };
        let (t, p) = project(&load, &verify, 10.0);
        assert_eq!(t[0].projected_data_seconds, 100.0);
        // 10 × ln(10000)/ln(1000) = 10 × 4/3.
        assert!((t[0].projected_keys_seconds - 40.0 / 3.0).abs() < 1e-9);
        assert!((t[0].projected_verify_seconds - 20.0).abs() < 1e-9);
        // Fixed 1 s + data 100 + keys 13.33 + foreign keys 13.33.
        assert!((p.load_seconds - (1.0 + 100.0 + 80.0 / 3.0)).abs() < 1e-9);
        assert!((p.window_seconds - p.load_seconds - 20.0).abs() < 1e-9);
        assert_eq!(sort_growth(1.0, 3.0), 3.0);
    }

    #[test]
    fn durations_never_show_sixty() {
        assert_eq!(secs(179.6), "3 min 00 s");
        assert_eq!(secs(7199.0), "2 h 00 min");
        assert_eq!(secs(3725.0), "1 h 02 min");
        assert_eq!(secs(12.345), "12.35 s");
    }

    #[test]
    fn a_build_overlaps_the_next_tables_data() {
        // books: data 1, keys 10 (ends at 11); orders: data 5 (ends at 6), keys 1 (7).
        assert_eq!(schedule([(1.0, 10.0), (5.0, 1.0)].into_iter()), 11.0);
        // A short build: the data of the tables after it is the longer path.
        assert_eq!(schedule([(1.0, 0.5), (5.0, 1.0)].into_iter()), 7.0);
        assert_eq!(schedule(std::iter::empty()), 0.0);
    }
}
