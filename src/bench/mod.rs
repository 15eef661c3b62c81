//! `ddb2pg bench`: end-to-end throughput of `load` on generated CloudShelf fixtures, beside
//! the yardstick — PostgreSQL's own `COPY FROM` of the same rows, already in binary form in
//! a server-side file, into the same table definition
//! (`BEGIN; TRUNCATE; COPY … (FORMAT binary, FREEZE); COMMIT`).
//!
//! Input: a scale, a table of the config, a number of runs. Output: `DIR/bench.json`,
//! `DIR/bench.md` and `DIR/throughput.svg`. Load and yardstick alternate in one go; medians
//! and ratios come from the same session. Each load runs as a child process (this binary),
//! so its peak RSS and CPU are its own.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::config::{Config, TARGET_URL_ENV};
use crate::error::{Error, Result};
use crate::load::metrics::{machine, process_cpu_seconds_with};
use crate::load::{LoadReport, StageReport};
use crate::schema::quote_ident;
use crate::sink::{connect, qualified};

pub mod lag;

/// Options of one `bench`.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub config: PathBuf,
    pub scale: u64,
    pub seed: u64,
    /// The table to load (default: `orders`, or with `single_table` the config's first),
    /// with its child tables and every table sharing its source.
    pub table: Option<String>,
    pub runs: usize,
    pub out: PathBuf,
    pub connections: Option<usize>,
    /// The single-table fixture (`fixtures generate --single-table`) instead of CloudShelf's.
    pub single_table: bool,
    /// Also the snapshot as a source: each run writes a snapshot of the export
    /// (`snapshot --fresh`, timed) and loads it into dropped tables (`load --mode create`).
    pub snapshot: bool,
}

/// One load run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadRun {
    pub seconds: f64,
    pub rows: u64,
    pub rows_per_second: f64,
    pub cpu_seconds: Option<f64>,
    pub postgres_cpu_seconds: Option<f64>,
    pub peak_rss_bytes: Option<u64>,
    pub stages: StageReport,
}

/// One yardstick run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CopyRun {
    pub seconds: f64,
    pub postgres_cpu_seconds: Option<f64>,
}

/// Everything `bench` measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchReport {
    pub machine: String,
    pub postgres: String,
    pub table: String,
    /// Every table the load fills (the table, the tables sharing its source, their
    /// children); rows and the yardstick cover them all.
    #[serde(default)]
    pub tables: Vec<String>,
    /// Items in the input export.
    #[serde(default)]
    pub source_items: u64,
    pub scale: u64,
    pub seed: u64,
    pub rows: u64,
    pub input_gzip_bytes: u64,
    pub input_json_bytes: u64,
    pub copy_file_bytes: u64,
    /// `load --mode replace --fresh` runs into the loaded table (what a rehearsal re-run does).
    pub loads: Vec<LoadRun>,
    pub yardstick: Vec<CopyRun>,
    /// `load --mode create` runs into a dropped table (the first load), alternating with
    /// the replaces.
    #[serde(default)]
    pub creates: Vec<LoadRun>,
    #[serde(default)]
    pub median_create_seconds: f64,
    /// Yardstick time / create time.
    #[serde(default)]
    pub create_ratio: f64,
    /// Replace time / create time: 1 when a re-run costs what the first load costs.
    #[serde(default)]
    pub replace_over_create: f64,
    pub median_load_seconds: f64,
    pub median_yardstick_seconds: f64,
    /// Yardstick time / load time: above 1 the load beats PostgreSQL's own COPY.
    pub ratio: f64,
    pub load_rows_per_second: f64,
    pub yardstick_rows_per_second: f64,
    pub input_gzip_mb_per_second: f64,
    pub input_json_mb_per_second: f64,
    pub max_peak_rss_bytes: Option<u64>,
    /// With `--snapshot`: `snapshot --fresh` of the export, seconds per run.
    #[serde(default)]
    pub snapshots: Vec<f64>,
    /// With `--snapshot`: the snapshot's Parquet bytes (every table).
    #[serde(default)]
    pub snapshot_bytes: u64,
    /// With `--snapshot`: `load --mode create` from the snapshot, per run.
    #[serde(default)]
    pub snapshot_creates: Vec<LoadRun>,
    #[serde(default)]
    pub median_snapshot_seconds: f64,
    #[serde(default)]
    pub median_snapshot_create_seconds: f64,
    /// Yardstick time / create-from-snapshot time.
    #[serde(default)]
    pub snapshot_create_ratio: f64,
    /// Create-from-export time / create-from-snapshot time: above 1 the snapshot loads faster.
    #[serde(default)]
    pub export_over_snapshot_create: f64,
    /// Create-from-export time / snapshot time: above 1 the snapshot is written faster than
    /// the export is loaded.
    #[serde(default)]
    pub create_over_snapshot: f64,
}

pub(super) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// CPU seconds of every PostgreSQL process on this machine, plus those its postmaster
/// reaped (backends that have exited). `None` when the server is not local or /proc is absent.
pub(super) fn postgres_cpu_seconds() -> Option<f64> {
    let mut total = 0.0;
    let mut found = false;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) else {
            continue;
        };
        if comm.trim() != "postgres" {
            continue;
        }
        found = true;
        let ppid_comm = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .and_then(|(_, r)| r.split_whitespace().nth(1).map(str::to_string))
            })
            .and_then(|pp| std::fs::read_to_string(format!("/proc/{pp}/comm")).ok());
        let is_postmaster = ppid_comm.is_some_and(|c| c.trim() != "postgres");
        total += process_cpu_seconds_with(pid, is_postmaster).unwrap_or(0.0);
    }
    found.then_some(total)
}

/// The bench's connection to the target, on a runtime of its own.
struct Target {
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
    table: String,
}

impl Target {
    fn pg(&self, sql: &str) -> Result<()> {
        self.rt
            .block_on(self.client.batch_execute(sql))
            .map_err(|e| Error::pg(&self.table, "bench", &e))
    }
}

pub(super) fn io(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::Io { what, source: e }
}

/// Runs the benchmark.
///
/// # Errors
/// Fixtures, the child loads or PostgreSQL fail.
pub fn run(opts: &BenchOptions) -> Result<BenchReport> {
    std::fs::create_dir_all(&opts.out).map_err(io(format!("create {}", opts.out.display())))?;
    let out =
        std::fs::canonicalize(&opts.out).map_err(io(format!("resolve {}", opts.out.display())))?;
    let config = Config::load(&opts.config)?;
    let table = match (&opts.table, opts.single_table) {
        (Some(t), _) => t.clone(),
        (None, true) => config
            .tables
            .first()
            .map(|t| t.name.clone())
            .ok_or_else(|| Error::Usage(format!("{}: no table", opts.config.display())))?,
        (None, false) => "orders".into(),
    };
    // Fails early, naming the table, when the config does not declare it.
    config.select_tables(std::slice::from_ref(&table))?;
    let (sources, loaded) = loaded_tables(&config, &table);
    let export_dir = if opts.single_table {
        single_table_fixtures(&out, opts.scale, opts.seed)?
    } else {
        fixtures(&out, opts.scale, opts.seed, &table)?
    };
    let export = crate::source::export::open(&export_dir)?;
    let json_bytes = uncompressed_size(&export)?;

    // A config of just this table, pointed at the fixtures and a schema of its own.
    let schema = "ddb2pg_bench".to_string();
    let bench_config = out.join("bench-pipeline.toml");
    let mut source = toml::Table::new();
    source.insert(
        "export".into(),
        toml::Value::String(export_dir.display().to_string()),
    );
    write_bench_config(&opts.config, &sources, source, None, &schema, &bench_config)?;
    let snapshot_dir = out.join(format!("snapshot-s{}-seed{}", opts.scale, opts.seed));
    let snapshot_config = out.join("bench-snapshot.toml");
    if opts.snapshot {
        write_snapshot_config(&bench_config, &snapshot_dir, &snapshot_config)?;
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io("start the runtime".into()))?;
    let client = rt.block_on(connect(&config.target.url))?;
    let target = Target {
        rt,
        client,
        table: table.clone(),
    };
    let pg_version: String = target
        .rt
        .block_on(target.client.query_one("SHOW server_version", &[]))
        .map(|r| r.get(0))
        .map_err(|e| Error::pg(&table, "bench", &e))?;
    let qts: Vec<String> = loaded.iter().map(|t| qualified(&schema, t)).collect();
    let yards: Vec<String> = loaded
        .iter()
        .map(|t| qualified(&schema, &format!("{t}_yardstick")))
        .collect();
    // Children first: a child's foreign key names its parent.
    let drop_loaded = format!(
        "DROP TABLE IF EXISTS {} CASCADE",
        qts.iter().rev().cloned().collect::<Vec<_>>().join(", ")
    );
    target.pg(&format!(
        "CREATE SCHEMA IF NOT EXISTS {}; {drop_loaded}; DROP TABLE IF EXISTS {}",
        quote_ident(&schema),
        yards.join(", ")
    ))?;

    // Warm-up: a fresh load (keys after data), which also yields the rows for COPY TO.
    tracing::info!(tables = %loaded.join(", "), "Warm-up load.");
    child_load(
        opts.connections,
        &bench_config,
        &schema,
        "create",
        &out.join("warmup-report.json"),
    )?;
    // Per loaded table, its rows as a binary COPY file, and a table like it to COPY into.
    let copy_files: Vec<String> = loaded
        .iter()
        .map(|t| format!("/tmp/ddb2pg_bench_{t}_{}_{}.bin", opts.scale, opts.seed))
        .collect();
    let mut copy_file_bytes = 0;
    for ((qt, yard), file) in qts.iter().zip(&yards).zip(&copy_files) {
        target.pg(&format!("COPY {qt} TO '{file}' (FORMAT binary)"))?;
        target.pg(&format!("CREATE TABLE {yard} (LIKE {qt} INCLUDING ALL)"))?;
        copy_file_bytes += std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    }
    let copy_in: String = yards
        .iter()
        .zip(&copy_files)
        .map(|(yard, file)| format!("COPY {yard} FROM '{file}' (FORMAT binary, FREEZE); "))
        .collect();
    let yardstick_sql = format!("BEGIN; TRUNCATE {}; {copy_in}COMMIT", yards.join(", "));

    let mut loads = Vec::new();
    let mut creates = Vec::new();
    let mut yardstick = Vec::new();
    let mut snapshots = Vec::new();
    let mut snapshot_creates = Vec::new();
    for i in 0..opts.runs {
        tracing::info!(run = i + 1, of = opts.runs, "Create run.");
        target.pg(&drop_loaded)?;
        let report_path = out.join(format!("create-run-{}.json", i + 1));
        creates.push(load_run(
            opts,
            &bench_config,
            &schema,
            "create",
            &report_path,
        )?);
        tracing::info!(run = i + 1, of = opts.runs, "Replace run.");
        let report_path = out.join(format!("load-run-{}.json", i + 1));
        loads.push(load_run(
            opts,
            &bench_config,
            &schema,
            "replace",
            &report_path,
        )?);
        tracing::info!(run = i + 1, of = opts.runs, "Yardstick run.");
        let pg0 = postgres_cpu_seconds();
        let t0 = Instant::now();
        target.pg(&yardstick_sql)?;
        yardstick.push(CopyRun {
            seconds: t0.elapsed().as_secs_f64(),
            postgres_cpu_seconds: pg0.and_then(|a| postgres_cpu_seconds().map(|b| b - a)),
        });
        if opts.snapshot {
            tracing::info!(run = i + 1, of = opts.runs, "Snapshot run.");
            let t0 = Instant::now();
            child_snapshot(&bench_config, &snapshot_dir)?;
            snapshots.push(t0.elapsed().as_secs_f64());
            tracing::info!(run = i + 1, of = opts.runs, "Create-from-snapshot run.");
            target.pg(&drop_loaded)?;
            let report_path = out.join(format!("snapshot-create-run-{}.json", i + 1));
            snapshot_creates.push(load_run(
                opts,
                &snapshot_config,
                &schema,
                "create",
                &report_path,
            )?);
        }
    }
    let rows = loads.first().map_or(0, |l| l.rows);
    let ms = median(snapshots.clone());
    let msc = median(snapshot_creates.iter().map(|l| l.seconds).collect());
    let snapshot_bytes = if opts.snapshot {
        parquet_bytes(&snapshot_dir)
    } else {
        0
    };
    let ml = median(loads.iter().map(|l| l.seconds).collect());
    let my = median(yardstick.iter().map(|y| y.seconds).collect());
    let mc = median(creates.iter().map(|l| l.seconds).collect());
    let report = BenchReport {
        machine: machine(),
        postgres: pg_version,
        table: table.clone(),
        tables: loaded.clone(),
        source_items: export.item_count(),
        scale: opts.scale,
        seed: opts.seed,
        rows,
        input_gzip_bytes: export.compressed_bytes(),
        input_json_bytes: json_bytes,
        copy_file_bytes,
        median_load_seconds: ml,
        median_yardstick_seconds: my,
        ratio: if ml > 0.0 { my / ml } else { 0.0 },
        load_rows_per_second: rows as f64 / ml.max(1e-9),
        yardstick_rows_per_second: rows as f64 / my.max(1e-9),
        input_gzip_mb_per_second: export.compressed_bytes() as f64 / 1e6 / ml.max(1e-9),
        input_json_mb_per_second: json_bytes as f64 / 1e6 / ml.max(1e-9),
        max_peak_rss_bytes: loads.iter().filter_map(|l| l.peak_rss_bytes).max(),
        median_create_seconds: mc,
        create_ratio: if mc > 0.0 { my / mc } else { 0.0 },
        replace_over_create: if mc > 0.0 { ml / mc } else { 0.0 },
        creates,
        loads,
        yardstick,
        median_snapshot_seconds: ms,
        median_snapshot_create_seconds: msc,
        snapshot_create_ratio: if msc > 0.0 { my / msc } else { 0.0 },
        export_over_snapshot_create: if msc > 0.0 { mc / msc } else { 0.0 },
        create_over_snapshot: if ms > 0.0 { mc / ms } else { 0.0 },
        snapshot_bytes,
        snapshots,
        snapshot_creates,
    };
    write_outputs(&report, &out)?;
    for file in &copy_files {
        let _ = std::fs::remove_file(file);
    }
    Ok(report)
}

/// The tables a load of `table` reads together: those sharing its source (in the
/// config's order), then every table they fill — each with its child tables.
fn loaded_tables(config: &Config, table: &str) -> (Vec<String>, Vec<String>) {
    let id = config
        .tables
        .iter()
        .find(|t| t.name == table)
        .map(|t| t.source.identity());
    let sharing: Vec<&crate::config::TableSpec> = config
        .tables
        .iter()
        .filter(|t| Some(t.source.identity()) == id)
        .collect();
    let sources = sharing.iter().map(|t| t.name.clone()).collect();
    let loaded = sharing
        .iter()
        .flat_map(|t| t.with_children().map(|c| c.name.clone()))
        .collect();
    (sources, loaded)
}

/// The single-table fixture's export, generated once per scale and seed.
fn single_table_fixtures(out: &Path, scale: u64, seed: u64) -> Result<PathBuf> {
    let fixtures = out.join(format!("single-table-s{scale}-seed{seed}"));
    let export_dir = fixtures.join(crate::fixtures::SINGLE_TABLE);
    if !export_dir.join("manifest-summary.json").exists() {
        tracing::info!(scale, dir = %fixtures.display(), "Generating the single-table fixture.");
        crate::fixtures::generate_single_table(&fixtures, scale, seed)?;
    }
    Ok(export_dir)
}

/// The table's export among the fixtures, generated once per scale and seed.
pub(super) fn fixtures(out: &Path, scale: u64, seed: u64, table: &str) -> Result<PathBuf> {
    let fixtures = out.join(format!("fixtures-s{scale}-seed{seed}"));
    let export_dir = fixtures.join(table);
    if !export_dir.join("manifest-summary.json").exists() {
        tracing::info!(scale, dir = %fixtures.display(), "Generating fixtures.");
        crate::fixtures::generate(&fixtures, scale, seed)?;
    }
    Ok(export_dir)
}

/// One timed `load --mode MODE --fresh` (a child process), with PostgreSQL's CPU meanwhile.
fn load_run(
    opts: &BenchOptions,
    bench_config: &Path,
    schema: &str,
    mode: &str,
    report_path: &Path,
) -> Result<LoadRun> {
    let pg0 = postgres_cpu_seconds();
    let t0 = Instant::now();
    let report = child_load(opts.connections, bench_config, schema, mode, report_path)?;
    let seconds = t0.elapsed().as_secs_f64();
    let pg_cpu = pg0.and_then(|a| postgres_cpu_seconds().map(|b| b - a));
    let t = report
        .tables
        .first()
        .ok_or_else(|| Error::Internal("the bench's load reported no table".into()))?;
    // Every table the load filled (routed tables, child tables): the yardstick's rows.
    let rows: u64 = report.tables.iter().map(|t| t.rows_written).sum();
    Ok(LoadRun {
        seconds,
        rows,
        rows_per_second: rows as f64 / seconds,
        cpu_seconds: report.cpu_seconds,
        postgres_cpu_seconds: pg_cpu,
        peak_rss_bytes: report.peak_rss_bytes,
        stages: t.stages.clone(),
    })
}

/// `bench.json`, `bench.md` and `throughput.svg` in `out`.
fn write_outputs(report: &BenchReport, out: &Path) -> Result<()> {
    std::fs::write(
        out.join("bench.json"),
        serde_json::to_string_pretty(report).unwrap_or_default(),
    )
    .map_err(io("write bench.json".into()))?;
    std::fs::write(out.join("bench.md"), markdown(report)).map_err(io("write bench.md".into()))?;
    draw(report, &out.join("throughput.svg"))
}

fn uncompressed_size(export: &crate::source::export::ExportPlan) -> Result<u64> {
    use std::io::Read;
    let mut total = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    for f in &export.files {
        if f.size == 0 {
            continue;
        }
        let file = export.open_data(f)?;
        let mut gz = flate2::read::MultiGzDecoder::new(std::io::BufReader::new(file));
        loop {
            let n = gz.read(&mut buf).map_err(|e| Error::Io {
                what: format!("gunzip {}", f.key),
                source: e,
            })?;
            if n == 0 {
                break;
            }
            total += n as u64;
        }
    }
    Ok(total)
}

/// A config of `tables` of `original` (and their child tables), in `schema`, read from
/// `source` (and their changes from `changes` when given), without secondary indexes and
/// foreign keys.
pub(super) fn write_bench_config(
    original: &Path,
    tables: &[String],
    source: toml::Table,
    changes: Option<toml::Table>,
    schema: &str,
    out: &Path,
) -> Result<()> {
    let text = std::fs::read_to_string(original).map_err(|e| Error::Io {
        what: format!("read {}", original.display()),
        source: e,
    })?;
    let mut doc: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        Error::Usage(format!("{}: {}", original.display(), e.message()))
    })?;
    if let Some(toml::Value::Table(t)) = doc.get_mut("target") {
        t.insert("schema".into(), toml::Value::String(schema.into()));
    }
    if let Some(toml::Value::Array(entries)) = doc.get_mut("tables") {
        let named = |t: &toml::Value, key: &str| {
            t.get(key)
                .and_then(toml::Value::as_str)
                .is_some_and(|n| tables.iter().any(|x| x == n))
        };
        entries.retain(|t| named(t, "name") || named(t, "parent"));
        for t in entries.iter_mut() {
            if let toml::Value::Table(t) = t {
                // A child table reads its parent's items.
                if !t.contains_key("parent") {
                    t.insert("source".into(), toml::Value::Table(source.clone()));
                }
                if let Some(ch) = changes.as_ref().filter(|_| !t.contains_key("parent")) {
                    t.insert("changes".into(), toml::Value::Table(ch.clone()));
                }
                // The yardstick loads the tables alone: secondary indexes and foreign keys
                // are not part of what is compared.
                t.remove("indexes");
                if let Some(toml::Value::Table(cols)) = t.get_mut("columns") {
                    for (_, c) in cols.iter_mut() {
                        if let toml::Value::Table(c) = c {
                            c.remove("references");
                        }
                    }
                }
            }
        }
    }
    let text = toml::to_string(&doc).map_err(|e| Error::Usage(format!("bench config: {e}")))?;
    std::fs::write(out, text).map_err(|e| Error::Io {
        what: format!("write {}", out.display()),
        source: e,
    })
}

/// The bench config with every table read from the snapshot in `dir` (`dir/<table>`; a
/// child table of a parquet source reads its own folder).
fn write_snapshot_config(bench_config: &Path, dir: &Path, out: &Path) -> Result<()> {
    let text = std::fs::read_to_string(bench_config).map_err(|e| Error::Io {
        what: format!("read {}", bench_config.display()),
        source: e,
    })?;
    let mut doc: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        Error::Usage(format!("{}: {}", bench_config.display(), e.message()))
    })?;
    if let Some(toml::Value::Array(entries)) = doc.get_mut("tables") {
        for t in entries.iter_mut() {
            if let toml::Value::Table(t) = t {
                let name = t
                    .get("name")
                    .and_then(toml::Value::as_str)
                    .map(String::from);
                if let (Some(name), false) = (name, t.contains_key("parent")) {
                    let mut source = toml::Table::new();
                    source.insert(
                        "parquet".into(),
                        toml::Value::String(dir.join(name).display().to_string()),
                    );
                    t.insert("source".into(), toml::Value::Table(source));
                    t.remove("where");
                }
            }
        }
    }
    let text = toml::to_string(&doc).map_err(|e| Error::Usage(format!("bench config: {e}")))?;
    std::fs::write(out, text).map_err(|e| Error::Io {
        what: format!("write {}", out.display()),
        source: e,
    })
}

/// The Parquet bytes under `dir` (every table's files).
fn parquet_bytes(dir: &Path) -> u64 {
    let Ok(tables) = std::fs::read_dir(dir) else {
        return 0;
    };
    tables
        .filter_map(std::result::Result::ok)
        .filter_map(|t| std::fs::read_dir(t.path()).ok())
        .flatten()
        .filter_map(std::result::Result::ok)
        .filter(|f| f.file_name().to_string_lossy().ends_with(".parquet"))
        .filter_map(|f| f.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// One `snapshot --fresh` child process of this binary.
fn child_snapshot(config: &Path, dir: &Path) -> Result<()> {
    let exe = std::env::current_exe().map_err(|e| Error::Io {
        what: "find the ddb2pg binary".into(),
        source: e,
    })?;
    let out = Command::new(exe)
        .args(["snapshot", "--log-level", "warn", "--fresh", "--config"])
        .arg(config)
        .arg("--out")
        .arg(dir)
        .output()
        .map_err(|e| Error::Io {
            what: "run ddb2pg snapshot".into(),
            source: e,
        })?;
    // Exit 3: written, with rejects (the load of the same export rejects them too).
    if !matches!(out.status.code(), Some(0 | 3)) {
        return Err(Error::Usage(format!(
            "the benchmarked snapshot failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// One `load` child process of this binary; its report.
pub(super) fn child_load(
    connections: Option<usize>,
    config: &Path,
    schema: &str,
    mode: &str,
    report: &Path,
) -> Result<LoadReport> {
    let exe = std::env::current_exe().map_err(|e| Error::Io {
        what: "find the ddb2pg binary".into(),
        source: e,
    })?;
    let mut cmd = Command::new(exe);
    cmd.args([
        "load",
        "--no-progress",
        "--log-level",
        "warn",
        "--mode",
        mode,
        "--fresh",
        "--schema",
        schema,
        "--config",
    ])
    .arg(config)
    .arg("--report")
    .arg(report)
    .arg("--rejects")
    .arg(report.with_extension("rejects.jsonl"));
    if let Some(c) = connections {
        cmd.args(["--connections", &c.to_string()]);
    }
    if let Ok(url) = std::env::var(TARGET_URL_ENV) {
        cmd.env(TARGET_URL_ENV, url);
    }
    let out = cmd.output().map_err(|e| Error::Io {
        what: "run ddb2pg load".into(),
        source: e,
    })?;
    if !out.status.success() {
        return Err(Error::Usage(format!(
            "the benchmarked load failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let text = std::fs::read(report).map_err(|e| Error::Io {
        what: format!("read {}", report.display()),
        source: e,
    })?;
    serde_json::from_slice(&text).map_err(|e| Error::Usage(format!("{}: {e}", report.display())))
}

/// The loaded tables, as the outputs name them (`orders + order_items`).
fn tables_label(r: &BenchReport) -> String {
    if r.tables.is_empty() {
        r.table.clone()
    } else {
        r.tables.join(" + ")
    }
}

fn markdown(r: &BenchReport) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "# ddb2pg bench: {} ({} rows)\n\n",
        tables_label(r),
        r.rows
    ));
    s.push_str(&format!(
        "- machine: {}\n- PostgreSQL {}\n",
        r.machine, r.postgres
    ));
    s.push_str(&format!(
        "- input: scale {} seed {}, {} items, {:.1} MB gzip, {:.1} MB DynamoDB JSON; COPY files {:.1} MB\n\n",
        r.scale,
        r.seed,
        r.source_items,
        r.input_gzip_bytes as f64 / 1e6,
        r.input_json_bytes as f64 / 1e6,
        r.copy_file_bytes as f64 / 1e6
    ));
    s.push_str("| run | create s | replace s | replace rows/s | ddb2pg CPU s | PostgreSQL CPU s (replace) | peak RSS MB | yardstick s | PostgreSQL CPU s (yardstick) |\n");
    s.push_str("| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    let f = |v: Option<f64>| v.map_or_else(|| "n/a".into(), |x| format!("{x:.2}"));
    for (i, (l, y)) in r.loads.iter().zip(&r.yardstick).enumerate() {
        s.push_str(&format!(
            "| {} | {} | {:.2} | {:.0} | {} | {} | {} | {:.2} | {} |\n",
            i + 1,
            r.creates
                .get(i)
                .map_or_else(|| "n/a".into(), |c| format!("{:.2}", c.seconds)),
            l.seconds,
            l.rows_per_second,
            f(l.cpu_seconds),
            f(l.postgres_cpu_seconds),
            l.peak_rss_bytes
                .map_or_else(|| "n/a".into(), |b| format!("{:.0}", b as f64 / 1e6)),
            y.seconds,
            f(y.postgres_cpu_seconds)
        ));
    }
    s.push_str(&format!(
        "\n**Median**: create {:.2} s (ratio yardstick/create **{:.2}**); replace {:.2} s ({:.0} rows/s, {:.1} MB/s gzip, {:.1} MB/s JSON), yardstick {:.2} s ({:.0} rows/s). **Ratio yardstick/replace: {:.2}** (above 1: faster than PostgreSQL's own COPY of the same rows into the keyed table); replace/create {:.2}.\n\n",
        r.median_create_seconds,
        r.create_ratio,
        r.median_load_seconds,
        r.load_rows_per_second,
        r.input_gzip_mb_per_second,
        r.input_json_mb_per_second,
        r.median_yardstick_seconds,
        r.yardstick_rows_per_second,
        r.ratio,
        r.replace_over_create
    ));
    if !r.snapshots.is_empty() {
        s.push_str("Snapshot as the source (`snapshot --fresh` of the same export, then `load --mode create` from it, alternating with the runs above):\n\n| run | snapshot s | create from snapshot s | rows/s | ddb2pg CPU s | peak RSS MB |\n| --- | --- | --- | --- | --- | --- |\n");
        for (i, (w, l)) in r.snapshots.iter().zip(&r.snapshot_creates).enumerate() {
            s.push_str(&format!(
                "| {} | {w:.2} | {:.2} | {:.0} | {} | {} |\n",
                i + 1,
                l.seconds,
                l.rows_per_second,
                f(l.cpu_seconds),
                l.peak_rss_bytes
                    .map_or_else(|| "n/a".into(), |b| format!("{:.0}", b as f64 / 1e6)),
            ));
        }
        s.push_str(&format!(
            "\n**Median**: snapshot {:.2} s ({:.1} MB of Parquet; create from the export / snapshot **{:.2}**); create from the snapshot {:.2} s: **ratio yardstick/create-from-snapshot {:.2}** (from the export: {:.2}); create from the export / from the snapshot **{:.2}**.\n\n",
            r.median_snapshot_seconds,
            r.snapshot_bytes as f64 / 1e6,
            r.create_over_snapshot,
            r.median_snapshot_create_seconds,
            r.snapshot_create_ratio,
            r.create_ratio,
            r.export_over_snapshot_create
        ));
    }
    s.push_str("Stages (per run; busy seconds are wall time on the stage's threads; a full queue in front of a stage means that stage is the bottleneck):\n\n");
    s.push_str("| run | read busy s (threads) | decode+encode busy s (threads) | write busy s (connections) | page queue fill | chunk queue fill |\n| --- | --- | --- | --- | --- | --- |\n");
    for (i, l) in r.loads.iter().enumerate() {
        let st = &l.stages;
        s.push_str(&format!(
            "| {} | {:.2} ({}) | {:.2} ({}) | {:.2} ({}) | {:.0}% | {:.0}% |\n",
            i + 1,
            st.read_busy_s,
            st.read_threads,
            st.decode_encode_busy_s,
            st.cpu_threads,
            st.write_busy_s,
            st.connections,
            st.page_queue_fill * 100.0,
            st.chunk_queue_fill * 100.0
        ));
    }
    s
}

/// Rows/s over time per load run (k rows/s, sampled every 100 ms) with the yardstick's
/// mean rate as a line, and below it the queue fills of the first replace run.
fn draw(r: &BenchReport, path: &Path) -> Result<()> {
    use crate::chart::{draw_panels, rates, Line, Panel, Unit, GOAL, PALETTE};
    let mut lines: Vec<Line> = Vec::new();
    for (kind, runs) in [
        ("create", &r.creates),
        ("replace", &r.loads),
        ("create from snapshot", &r.snapshot_creates),
    ] {
        for (i, l) in runs.iter().enumerate() {
            lines.push(Line {
                label: format!("{kind} run {}", i + 1),
                points: rates(&l.stages.timeline, 0.0),
                color: PALETTE[lines.len() % PALETTE.len()],
                width: 2,
            });
        }
    }
    lines.push(Line {
        label: "PostgreSQL COPY FROM binary file (median rate)".into(),
        points: vec![
            (0.0, r.yardstick_rows_per_second),
            (r.median_yardstick_seconds, r.yardstick_rows_per_second),
        ],
        color: GOAL,
        width: 3,
    });
    let mut panels = vec![Panel {
        title: "rows/s".into(),
        y_desc: "rows/s".into(),
        unit: Unit::Kilo,
        lines,
        y_floor: 0.0,
    }];
    if let Some(first) = r.loads.first().filter(|l| !l.stages.queue_fills.is_empty()) {
        panels.push(fill_panel("replace run 1", &first.stages.queue_fills, 0.0));
    }
    draw_panels(
        path,
        &format!("ddb2pg bench: {} ({} rows)", tables_label(r), r.rows),
        "seconds",
        &panels,
    )
}

/// The page and chunk queue fills of a load over time: the queue in front of the
/// bottleneck stays full, the one behind it empty.
#[must_use]
pub fn fill_panel(what: &str, fills: &[(f64, f64, f64)], offset: f64) -> crate::chart::Panel {
    use crate::chart::{Line, Panel, Unit, PALETTE};
    Panel {
        title: format!("queue fill, {what} (full page queue: decode+encode is the bottleneck; full chunk queue: PostgreSQL is)"),
        y_desc: "fill".into(),
        unit: Unit::Percent,
        lines: vec![
            Line {
                label: "page queue (read → decode)".into(),
                points: fills.iter().map(|f| (offset + f.0, f.1)).collect(),
                color: PALETTE[3],
                width: 2,
            },
            Line {
                label: "chunk queue (encode → COPY)".into(),
                points: fills.iter().map(|f| (offset + f.0, f.2)).collect(),
                color: PALETTE[4],
                width: 2,
            },
        ],
        y_floor: 1.0,
    }
}
