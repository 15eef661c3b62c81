//! The `ddb2pg` command line: arguments, logging, config, run, exit code.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use ddb2pg::config::Config;
use ddb2pg::load::{self, LoadOptions, LoadReport};
use ddb2pg::sink::Mode;
use ddb2pg::sync::{self, SyncOptions};
use ddb2pg::verify::{self, VerifyOptions};
use ddb2pg::Error;

#[derive(Parser)]
#[command(
    name = "ddb2pg",
    version,
    about = "Move a DynamoDB data set into PostgreSQL, fast, and prove nothing was lost."
)]
struct Cli {
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, global = true, default_value = "info", env = "DDB2PG_LOG")]
    log_level: tracing::Level,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Read every item of a source and write a pipeline.toml that loads it with no reject,
    /// with a report of every attribute (types seen, examples, lengths, ranges, rejects
    /// per type).
    Init(InitArgs),
    /// Run the pipeline: load the configured tables into PostgreSQL.
    Load(LoadArgs),
    /// Prove the target equals the source: counts, and every row's content by key.
    Verify(VerifyArgs),
    /// End-to-end throughput on fixtures, beside PostgreSQL's own COPY of the same rows.
    Bench(BenchArgs),
    /// The `[[checks]]` queries' latency on the loaded target (p50/p95/p99/max, index use),
    /// against their `p95_ms` targets.
    Check(CheckArgs),
    /// Generate or manage the CloudShelf fixtures.
    #[command(subcommand)]
    Fixtures(FixturesCommand),
    /// Swap a loaded staging schema in (one transaction of schema renames), keeping the
    /// replaced schema for `rollback`.
    Promote(PromoteArgs),
    /// Undo the last promote into a schema (one transaction of schema renames).
    Rollback(RollbackArgs),
    /// Where the last load into a schema stands: per table, splits done/running/pending,
    /// rows, the last error.
    Status(StatusArgs),
    /// Apply the changes DynamoDB took since each table's load (its `changes`): until
    /// caught up, or following until Ctrl-C / SIGTERM.
    Sync(SyncArgs),
    /// Read each table's source as `load` does and write its mapped rows as Parquet (a
    /// folder per table, a manifest of files, rows and checksums), to load again with
    /// `source = { parquet = "DIR/TABLE" }` without reading DynamoDB or decoding again.
    Snapshot(SnapshotArgs),
}

#[derive(Args)]
struct SnapshotArgs {
    #[command(flatten)]
    pipeline: ConfigArg,
    #[command(flatten)]
    tables: TablesArg,
    /// The snapshot's folder: DIR/<table>/part-NNNNN.parquet, DIR/<table>/manifest.json,
    /// DIR/snapshot.json.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Where rejected items go (JSON lines) [default: DIR/ddb2pg-rejects.jsonl].
    #[arg(long)]
    rejects: Option<PathBuf>,
    /// Stop once more than N items are rejected.
    #[arg(long)]
    max_rejects: Option<u64>,
    /// Write the summary as JSON to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Start again rather than resume (or keep) a snapshot of the same mapping in DIR.
    #[arg(long)]
    fresh: bool,
}

#[derive(Args)]
struct InitArgs {
    /// The source: an export folder, s3://bucket/prefix (an export), or dynamodb:TABLE (a
    /// parallel scan within the default read budget).
    #[arg(long, value_name = "SOURCE")]
    from: String,
    /// Where to write the mapping [default: pipeline.toml, never replaced unless named].
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// The primary key attributes: ATTR or ATTR,SORT [default: DescribeTable's for a
    /// table; for an export, a guess by name that the report says].
    #[arg(long, value_name = "ATTR[,SORT]")]
    key: Option<String>,
    /// The target table's name [default: the DynamoDB table's, in snake_case].
    #[arg(long)]
    table: Option<String>,
    /// The report as JSON.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
}

#[derive(Args)]
struct CheckArgs {
    #[command(flatten)]
    pipeline: ConfigArg,
    #[command(flatten)]
    schema: SchemaArg,
    /// Only this check (by name; repeatable).
    #[arg(long = "check")]
    checks: Vec<String>,
    /// Connections running each check's executions at once.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Timed executions per check (overrides each check's `runs`).
    #[arg(long)]
    runs: Option<usize>,
    /// Write the results as JSON to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Write check.json, check.md and check.svg (latencies against targets) into DIR.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

#[derive(Args)]
struct SyncArgs {
    #[command(flatten)]
    pipeline: ConfigArg,
    #[command(flatten)]
    tables: TablesArg,
    #[command(flatten)]
    schema: SchemaArg,
    /// Apply every change there is now, then exit (the cutover step once writes stop),
    /// instead of following.
    #[arg(long)]
    until_caught_up: bool,
    /// Apply changes after a gap between the load and the changes (or between two
    /// exports): the changes made in the gap stay missing.
    #[arg(long)]
    allow_gap: bool,
    /// Where rejected changes go (JSON lines). Default: ddb2pg-rejects.jsonl beside the report.
    #[arg(long)]
    rejects: Option<PathBuf>,
    /// Stop once more than N changes of a table are rejected.
    #[arg(long)]
    max_rejects: Option<u64>,
    /// Write the summary as JSON to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// COPY connections (overrides `tuning.connections`).
    #[arg(long)]
    connections: Option<usize>,
    /// Log lines instead of progress bars, even on a terminal.
    #[arg(long)]
    no_progress: bool,
}

/// `--config`, shared by every command that reads a pipeline.
#[derive(Args)]
struct ConfigArg {
    /// The pipeline configuration: its target (`target.url`; DDB2PG_TARGET_URL overrides)
    /// and tables.
    #[arg(long, default_value = "pipeline.toml")]
    config: PathBuf,
}

/// `--schema`, shared by the commands that work on loaded tables.
#[derive(Args)]
struct SchemaArg {
    /// The schema of the tables instead of `target.schema` (a staging schema for a
    /// rehearsal).
    #[arg(long)]
    schema: Option<String>,
}

impl SchemaArg {
    fn or_target(&self, config: &Config) -> String {
        self.schema
            .clone()
            .unwrap_or_else(|| config.target.schema.clone())
    }

    /// The schema, refused before any work when PostgreSQL could not name it.
    fn checked(&self, config: &Config) -> Result<String, Error> {
        let s = self.or_target(config);
        if s.is_empty() || s.len() > 63 {
            return Err(Error::Usage(format!(
                "schema `{s}` has {} bytes: PostgreSQL names hold 1 to 63",
                s.len()
            )));
        }
        Ok(s)
    }
}

/// `--table`, shared by the commands that work on the config's tables.
#[derive(Args)]
struct TablesArg {
    /// Only this table (repeatable); all tables by default.
    #[arg(long = "table")]
    tables: Vec<String>,
}

#[derive(Args)]
struct StatusArgs {
    #[command(flatten)]
    pipeline: ConfigArg,
    #[command(flatten)]
    schema: SchemaArg,
    /// A run by its id instead of the schema's latest.
    #[arg(long)]
    run: Option<i64>,
    /// List every split, not only those not done.
    #[arg(long)]
    all: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct PromoteArgs {
    #[command(flatten)]
    pipeline: ConfigArg,
    /// The staging schema that was loaded.
    #[arg(long)]
    from: String,
    /// The schema it replaces (default: `target.schema`).
    #[arg(long)]
    to: Option<String>,
    /// Drop the schema an earlier promote kept, instead of refusing.
    #[arg(long)]
    discard_previous: bool,
    /// Check only: say whether the promote would go ahead, what it carries over and what
    /// it cannot, and change nothing.
    #[arg(long)]
    check: bool,
}

#[derive(Args)]
struct RollbackArgs {
    #[command(flatten)]
    pipeline: ConfigArg,
    /// The schema the promote replaced (default: `target.schema`).
    #[arg(long)]
    to: Option<String>,
}

#[derive(Args)]
struct LoadArgs {
    #[command(flatten)]
    pipeline: ConfigArg,
    #[command(flatten)]
    tables: TablesArg,
    #[command(flatten)]
    schema: SchemaArg,
    /// create: new or empty tables only; append: add rows; replace: empty, then load;
    /// upsert: insert new keys, update changed rows by primary key.
    #[arg(long, value_enum, default_value = "create")]
    mode: Mode,
    /// Where rejected items go (JSON lines). Default: ddb2pg-rejects.jsonl beside the report.
    #[arg(long)]
    rejects: Option<PathBuf>,
    /// Stop the load once more than N items of a table are rejected (chunks committed
    /// before that are kept; a re-run resumes).
    #[arg(long)]
    max_rejects: Option<u64>,
    /// Start a new run, even though an unfinished (or finished) run of the same load is
    /// recorded in the target; a table the unfinished run created is dropped first.
    #[arg(long)]
    fresh: bool,
    /// With --mode replace: load around indexes and constraints pipeline.toml does not
    /// declare (kept, and fed row by row) instead of refusing; the declared ones still come
    /// off for the load and are built again after it.
    #[arg(long)]
    keep_undeclared: bool,
    /// Write the summary as JSON to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// COPY connections per table (overrides `tuning.connections`).
    #[arg(long)]
    connections: Option<usize>,
    /// Log lines instead of progress bars, even on a terminal.
    #[arg(long)]
    no_progress: bool,
    /// Rehearse: after the load, verify what it loaded and run the `[[checks]]` on it,
    /// and write one report into DIR (rehearsal.md / .json, throughput.svg, check.*),
    /// with each table's timings projected onto --project times the data.
    #[arg(long, value_name = "DIR")]
    rehearsal: Option<PathBuf>,
    /// With --rehearsal: the projection's factor (a data set N times larger).
    #[arg(long, value_name = "N", default_value_t = 10.0, requires = "rehearsal")]
    project: f64,
    /// With --rehearsal: connections running each check at once.
    #[arg(long, value_name = "N", default_value_t = 1, requires = "rehearsal")]
    check_clients: usize,
}

#[derive(Args)]
struct BenchArgs {
    #[command(flatten)]
    pipeline: ConfigArg,
    /// Number of orders in the generated fixtures (see `fixtures generate`). Default:
    /// 1000000, or 20000 with --sync-rates (the table seeded into DynamoDB).
    #[arg(long)]
    scale: Option<u64>,
    /// Fixtures seed.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// The table to load (default: orders; with --single-table, the config's first), with
    /// its child tables and the tables sharing its source; the yardstick copies them all.
    #[arg(long)]
    table: Option<String>,
    /// Load the single-table fixture (`fixtures generate --single-table`, --scale orders:
    /// 3.25 items per order) with the config's tables of its source, e.g.
    /// `--config fixtures/single-table.toml`.
    #[arg(long)]
    single_table: bool,
    /// Runs of each (load, yardstick), alternating.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Where fixtures (reused per scale and seed) and results go.
    #[arg(long, default_value = "bench-out")]
    out: PathBuf,
    /// COPY connections for the load (default: the config's tuning).
    #[arg(long)]
    connections: Option<usize>,
    /// Instead of the load: the lag of a `sync` following the table's DynamoDB stream
    /// while `fixtures churn` writes at each of these rates (writes/s, comma-separated).
    /// Needs DynamoDB (the emulator: scripts/emulators.sh). Writes lag.json, lag.md, lag.svg.
    #[arg(long, value_delimiter = ',')]
    sync_rates: Vec<f64>,
    /// Seconds of churn per rate (with --sync-rates).
    #[arg(long, default_value_t = 60.0)]
    sync_seconds: f64,
    /// Also the snapshot as a source: each run writes a snapshot of the same export
    /// (`snapshot --fresh`, timed) and loads it into dropped tables; the report gives both
    /// sources' ratios against the yardstick.
    #[arg(long)]
    snapshot: bool,
}

#[derive(Args)]
struct VerifyArgs {
    #[command(flatten)]
    pipeline: ConfigArg,
    #[command(flatten)]
    tables: TablesArg,
    #[command(flatten)]
    schema: SchemaArg,
    /// Differing rows shown per table.
    #[arg(long, default_value_t = 10)]
    show: usize,
    /// Compare with a parallel scan of the live DynamoDB table (the cutover gate, once
    /// writes are frozen and `sync --until-caught-up` is done).
    #[arg(long)]
    live: bool,
    /// Write the result as JSON to this file.
    #[arg(long)]
    report: Option<PathBuf>,
}

#[derive(Subcommand)]
enum FixturesCommand {
    /// Write the CloudShelf data set (books, users, orders, carts) as DynamoDB exports.
    Generate {
        /// Output folder; one export folder per table is written inside.
        #[arg(long)]
        out: PathBuf,
        /// Number of orders (books = scale/8, users = scale/4, carts = scale/8).
        #[arg(long)]
        scale: u64,
        /// Seed: the same seed gives the same bytes.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Also write this many changes per table (books, users, orders) as incremental
        /// exports after the full export, in `<table>-changes/` (half updates, a quarter
        /// inserts, a quarter deletes).
        #[arg(long, default_value_t = 0)]
        changes: u64,
        /// Number of incremental exports the changes are spread over (15-minute windows
        /// chained from the full export's time).
        #[arg(long, default_value_t = 4)]
        exports: usize,
        /// Write the single-table variant instead: one export (`OUT/app`) holding the
        /// users (`PK = USER#<id>`, `SK = PROFILE`), their orders (`SK =
        /// ORDER#<time>#<id>`) and the orders' lines (`PK = ORDER#<id>`, `SK = LINE#nn`).
        #[arg(long, conflicts_with = "changes")]
        single_table: bool,
        /// The data files' format: `json` (DynamoDB JSON, `data/*.json.gz`) or `ion`
        /// (Amazon Ion, `data/*.ion.gz`, `outputFormat` ION): the same items either way.
        #[arg(long, default_value = "json", value_parser = ["json", "ion"], conflicts_with = "changes")]
        format: String,
    },
    /// Write items into a DynamoDB table by BatchWriteItem (creating it with --key when
    /// missing): an export folder, an export data file, or a BatchWriteItem request file.
    Seed {
        /// Table name (a request file names its own; this overrides it).
        #[arg(long)]
        table: Option<String>,
        /// Export folder, data file (.json / .json.gz lines) or request file.
        #[arg(long)]
        from: PathBuf,
        /// Partition key, `NAME` or `NAME:S|N|B`, to create a missing table.
        #[arg(long)]
        key: Option<ddb2pg::fixtures::seed::KeyArg>,
        /// Sort key, as --key.
        #[arg(long)]
        sort: Option<ddb2pg::fixtures::seed::KeyArg>,
        /// BatchWriteItem requests in flight.
        #[arg(long, default_value_t = 8)]
        in_flight: usize,
        /// Enable the table's DynamoDB Stream with this view type (NEW_AND_OLD_IMAGES,
        /// NEW_IMAGE…), so `sync` can follow it.
        #[arg(long)]
        stream: Option<String>,
    },
    /// Random inserts, updates and deletes at a steady rate against a live table (to demo,
    /// test and bench a sync): new items are copies of existing ones under new keys, an
    /// update gives an item another item's attributes.
    Churn {
        #[arg(long)]
        table: String,
        /// Writes per second.
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        /// How long to write.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Shares of inserts, updates and deletes (`I:U:D`).
        #[arg(long, default_value = "1:2:1")]
        mix: String,
        /// Write a JSON summary (writes by kind, achieved rate, the time of the last write).
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Put an export folder into S3 (`s3://bucket/prefix`), creating the bucket if missing.
    Upload {
        #[arg(long)]
        from: PathBuf,
        #[arg(long)]
        to: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_max_level(cli.log_level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
    let code = match run(cli) {
        Ok(code) => code,
        Err(e) => {
            let code = e.downcast_ref::<Error>().map_or(1, Error::exit_code);
            eprintln!("error: {e:#}");
            code
        }
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Init(args) => run_init(args),
        Command::Snapshot(args) => run_snapshot(args),
        Command::Load(args) => run_load(args),
        Command::Verify(args) => run_verify(args),
        Command::Check(args) => run_check(args),
        Command::Bench(args) if !args.sync_rates.is_empty() => {
            if args.single_table {
                return Err(Error::Usage(
                    "--sync-rates follows one table's stream: not with --single-table".into(),
                )
                .into());
            }
            let report = ddb2pg::bench::lag::run(&ddb2pg::bench::lag::LagOptions {
                config: args.pipeline.config,
                scale: args.scale.unwrap_or(20_000),
                seed: args.seed,
                table: args.table.unwrap_or_else(|| "orders".into()),
                rates: args.sync_rates,
                seconds: args.sync_seconds,
                out: args.out.clone(),
                connections: args.connections,
            })?;
            for r in &report.runs {
                println!(
                    "{}: {:.0} writes/s asked, {:.0} achieved; lag p50 {:.2} s, p95 {:.2} s, max {:.2} s over {} inserts ({} missing); sync CPU {} µs/change, PostgreSQL {} µs/change",
                    report.table,
                    r.rate,
                    r.achieved_rate,
                    r.lag_p50_s,
                    r.lag_p95_s,
                    r.lag_max_s,
                    r.measured,
                    r.missing,
                    r.sync_cpu_us_per_change.map_or_else(|| "n/a".into(), |v| format!("{v:.0}")),
                    r.postgres_cpu_us_per_change.map_or_else(|| "n/a".into(), |v| format!("{v:.0}"))
                );
            }
            println!(
                "wrote {0}/lag.json, {0}/lag.md, {0}/lag.svg",
                args.out.display()
            );
            Ok(if report.runs.iter().any(|r| r.missing > 0) {
                4
            } else {
                0
            })
        }
        Command::Bench(args) => {
            if args.runs == 0 {
                return Err(Error::Usage("--runs must be at least 1".into()).into());
            }
            let report = ddb2pg::bench::run(&ddb2pg::bench::BenchOptions {
                config: args.pipeline.config,
                scale: args.scale.unwrap_or(1_000_000),
                seed: args.seed,
                table: args.table,
                runs: args.runs,
                out: args.out.clone(),
                connections: args.connections,
                single_table: args.single_table,
                snapshot: args.snapshot,
            })?;
            println!(
                "{}: {} rows; median create {:.2} s, replace {:.2} s ({:.0} rows/s), yardstick {:.2} s; ratio yardstick/create {:.2}, yardstick/replace {:.2}; peak RSS {}",
                report.table,
                report.rows,
                report.median_create_seconds,
                report.median_load_seconds,
                report.load_rows_per_second,
                report.median_yardstick_seconds,
                report.create_ratio,
                report.ratio,
                report.max_peak_rss_bytes.map_or_else(|| "n/a".into(), |b| format!("{:.0} MB", b as f64 / 1e6))
            );
            if !report.snapshots.is_empty() {
                println!(
                    "snapshot: median {:.2} s (create from the export / snapshot {:.2}); create from it {:.2} s: ratio yardstick/create-from-snapshot {:.2}, create from the export / from the snapshot {:.2}",
                    report.median_snapshot_seconds,
                    report.create_over_snapshot,
                    report.median_snapshot_create_seconds,
                    report.snapshot_create_ratio,
                    report.export_over_snapshot_create
                );
            }
            println!(
                "wrote {0}/bench.json, {0}/bench.md, {0}/throughput.svg",
                args.out.display()
            );
            Ok(0)
        }
        Command::Fixtures(FixturesCommand::Generate {
            out,
            scale,
            seed,
            changes,
            exports,
            single_table,
            format,
        }) => {
            let started = std::time::Instant::now();
            let format = if format == "ion" {
                ddb2pg::fixtures::Format::Ion
            } else {
                ddb2pg::fixtures::Format::DynamoDbJson
            };
            let tables = if single_table {
                vec![ddb2pg::fixtures::generate_single_table_as(
                    &out, scale, seed, format,
                )?]
            } else {
                ddb2pg::fixtures::generate_as(&out, scale, seed, format)?
            };
            if changes > 0 {
                for c in ddb2pg::fixtures::changes::generate_changes(
                    &out, scale, seed, changes, exports,
                )? {
                    println!(
                        "{:<8} {:>3} incremental exports: {} inserts, {} updates, {} deletes  {}",
                        c.table,
                        c.exports,
                        c.inserts,
                        c.updates,
                        c.deletes,
                        c.dir.display()
                    );
                }
            }
            let secs = started.elapsed().as_secs_f64();
            let items: u64 = tables.iter().map(|t| t.items).sum();
            for t in &tables {
                println!(
                    "{:<8} {:>10} items  {:>3} files  {:>10.1} MB  {}",
                    t.table,
                    t.items,
                    t.files,
                    t.bytes as f64 / 1e6,
                    t.dir.display()
                );
            }
            println!(
                "{items} items in {secs:.2} s ({:.0} items/s)",
                items as f64 / secs.max(1e-9)
            );
            Ok(0)
        }
        Command::Fixtures(FixturesCommand::Seed {
            table,
            from,
            key,
            sort,
            in_flight,
            stream,
        }) => {
            let stream = stream
                .map(|v| {
                    let v = v.to_ascii_uppercase();
                    match v.as_str() {
                        "NEW_AND_OLD_IMAGES" | "NEW_IMAGE" | "OLD_IMAGE" | "KEYS_ONLY" => {
                            Ok(aws_sdk_dynamodb::types::StreamViewType::from(v.as_str()))
                        }
                        _ => Err(Error::Usage(format!(
                            "--stream {v}: expected NEW_AND_OLD_IMAGES, NEW_IMAGE, OLD_IMAGE or KEYS_ONLY"
                        ))),
                    }
                })
                .transpose()?;
            let r = io_runtime()?.block_on(ddb2pg::fixtures::seed::seed(
                table, &from, key, sort, in_flight, stream,
            ))?;
            println!(
                "{}: {} items written in {:.2} s ({:.0} items/s){}; retries: {} for UnprocessedItems, {} for throttling/5xx",
                r.table,
                r.items,
                r.seconds,
                r.items as f64 / r.seconds.max(1e-9),
                if r.created { ", table created" } else { "" },
                r.unprocessed_retries,
                r.throttled_retries
            );
            Ok(0)
        }
        Command::Promote(a) => {
            let config = Config::load(&a.pipeline.config)?;
            let to = a.to.unwrap_or_else(|| config.target.schema.clone());
            let swap = io_runtime()?.block_on(async {
                let mut c = ddb2pg::sink::connect(&config.target.url).await?;
                ddb2pg::admin::promote::promote(&mut c, &a.from, &to, a.discard_previous, a.check)
                    .await
            })?;
            for line in &swap.not_carried {
                println!("not carried: {line}");
            }
            for line in &swap.carried {
                println!("carried: {line}");
            }
            if a.check {
                print_swap("ready to promote (nothing changed)", &swap);
                return Ok(0);
            }
            print_swap("promoted", &swap);
            println!("`ddb2pg rollback --to {to}` swaps back.");
            Ok(0)
        }
        Command::Rollback(a) => {
            let config = Config::load(&a.pipeline.config)?;
            let to = a.to.unwrap_or_else(|| config.target.schema.clone());
            let swap = io_runtime()?.block_on(async {
                let mut c = ddb2pg::sink::connect(&config.target.url).await?;
                ddb2pg::admin::promote::rollback(&mut c, &to).await
            })?;
            print_swap("rolled back", &swap);
            Ok(0)
        }
        Command::Status(a) => run_status(a),
        Command::Sync(a) => run_sync(a),
        Command::Fixtures(FixturesCommand::Churn {
            table,
            rate,
            seconds,
            seed,
            mix,
            report,
        }) => {
            let opts = ddb2pg::fixtures::churn::ChurnOptions {
                table,
                rate,
                seconds,
                seed,
                mix: ddb2pg::fixtures::churn::parse_mix(&mix)?,
                probe: None,
            };
            let r = io_runtime()?.block_on(ddb2pg::fixtures::churn::churn(&opts))?;
            println!(
                "{}: {} inserts, {} updates, {} deletes in {:.2} s ({:.0} writes/s); {} failed",
                r.table, r.inserts, r.updates, r.deletes, r.seconds, r.rate, r.failed
            );
            if let Some(path) = report {
                std::fs::write(&path, serde_json::to_vec_pretty(&r)?)?;
            }
            Ok(if r.failed > 0 { 1 } else { 0 })
        }
        Command::Fixtures(FixturesCommand::Upload { from, to }) => {
            let (files, bytes) =
                io_runtime()?.block_on(ddb2pg::fixtures::upload::upload(&from, &to))?;
            println!("{files} files, {bytes} bytes put under {to}");
            Ok(0)
        }
    }
}

fn print_swap(what: &str, swap: &ddb2pg::admin::promote::Swap) {
    if let Some(d) = &swap.dropped {
        println!("dropped the previous schema {d}");
    }
    let renames: Vec<String> = swap
        .renames
        .iter()
        .map(|(a, b)| format!("{a} -> {b}"))
        .collect();
    println!("{what} in one transaction: {}", renames.join(", "));
}

/// The runtime for network I/O: two workers (readers and the CPU pool have threads of their own).
fn io_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("ddb2pg-io")
        .build()
}

/// A report folder, made when missing, refused before any work when it cannot be.
fn report_folder(flag: &str, dir: &std::path::Path, file: &str) -> Result<(), Error> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::Usage(format!("{flag} {}: {e}", dir.display())))?;
    writable(flag, &dir.join(file))
}

/// Refuses, before any work, an output path that cannot be written: a folder, a missing
/// or read-only folder (a device such as /dev/null is fine). The file is not created.
fn writable(flag: &str, path: &std::path::Path) -> Result<(), Error> {
    let refuse = |why: String| Err(Error::Usage(format!("{flag} {}: {why}", path.display())));
    if path.is_dir() {
        return refuse("is a folder; name a file".into());
    }
    if path.exists() {
        return match std::fs::OpenOptions::new().append(true).open(path) {
            Ok(_) => Ok(()),
            Err(e) => refuse(format!("cannot be written: {e}")),
        };
    }
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => d.to_path_buf(),
        None => PathBuf::from("."),
    };
    if !dir.exists() {
        // The rejects file's folder is created; a report's must exist.
        return match flag {
            "--rejects" => Ok(()),
            _ => refuse(format!("its folder {} does not exist", dir.display())),
        };
    }
    match std::fs::metadata(&dir) {
        Ok(m) if m.permissions().readonly() => {
            refuse(format!("its folder {} is read-only", dir.display()))
        }
        Ok(_) => Ok(()),
        Err(e) => refuse(format!("its folder {}: {e}", dir.display())),
    }
}

fn run_load(args: LoadArgs) -> anyhow::Result<i32> {
    let mut config = Config::load(&args.pipeline.config)?;
    if let Some(n) = args.connections {
        if n == 0 {
            return Err(Error::Usage("--connections must be at least 1".into()).into());
        }
        config.tuning.connections = n;
    }
    let rejects_path = match (&args.rejects, &args.report) {
        (Some(p), _) => p.clone(),
        (None, Some(report)) => report
            .parent()
            .map(|d| d.join("ddb2pg-rejects.jsonl"))
            .unwrap_or_else(|| PathBuf::from("ddb2pg-rejects.jsonl")),
        (None, None) => PathBuf::from("ddb2pg-rejects.jsonl"),
    };
    if let Some(report) = &args.report {
        writable("--report", report)?;
    }
    if args.rejects.is_some() {
        writable("--rejects", &rejects_path)?;
    }
    if let Some(dir) = &args.rehearsal {
        if !(args.project.is_finite() && args.project >= 1.0) {
            return Err(Error::Usage("--project must be a number of at least 1".into()).into());
        }
        if args.check_clients == 0 || args.check_clients > 256 {
            return Err(Error::Usage("--check-clients must be 1 to 256".into()).into());
        }
        report_folder("--rehearsal", dir, "rehearsal.json")?;
    }
    let opts = LoadOptions {
        mode: args.mode,
        schema: args.schema.checked(&config)?,
        tables: args.tables.tables.clone(),
        rejects_path,
        max_rejects: args.max_rejects,
        fresh: args.fresh,
        keep_undeclared: args.keep_undeclared,
        bars: !args.no_progress && std::io::stderr().is_terminal(),
        sync: None,
    };
    if let Some(dir) = &args.rehearsal {
        if opts.schema == config.target.schema {
            tracing::warn!(schema = %opts.schema, "This rehearsal loads into the target schema itself, not a staging copy (pass --schema staging to rehearse beside it).");
        }
        let r_opts = ddb2pg::rehearse::RehearsalOptions {
            out: dir.clone(),
            project: args.project,
            check_clients: args.check_clients,
        };
        let r = io_runtime()?.block_on(ddb2pg::rehearse::rehearse(&config, &opts, &r_opts))?;
        print_load(&r.load);
        println!();
        print_verify(&r.verify);
        if let Some(c) = &r.check {
            println!();
            print_check(c);
        }
        if let Some(e) = &r.check_error {
            eprintln!("the checks could not run on the loaded tables: {e}");
        }
        let p = &r.projection;
        println!(
            "\nprojected for {}x the data: load {:.0} s, verify {:.0} s, window {:.0} s (a projection; assumptions in {})",
            p.factor,
            p.load_seconds,
            p.verify_seconds,
            p.window_seconds,
            dir.join("rehearsal.md").display()
        );
        for c in &p.caveats {
            println!("caveat: {c}");
        }
        println!("rehearsal report: {}", dir.display());
        if let Some(path) = &args.report {
            write_json(path, &r.load)?;
        }
        return Ok(r.exit_code);
    }
    let report = io_runtime()?.block_on(load::load(&config, &opts))?;
    let code = print_load(&report);
    if let Some(path) = &args.report {
        write_json(path, &report)?;
    }
    Ok(code)
}

fn write_json<T: serde::Serialize>(path: &std::path::Path, value: &T) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(value)?).map_err(|e| Error::Io {
        what: format!("write the report {}", path.display()),
        source: e,
    })?;
    Ok(())
}

/// The load's summary, orphans and rejects; returns the load's exit code.
fn print_load(report: &LoadReport) -> i32 {
    if let Some(at) = &report.already_done {
        println!(
            "run {} of this load completed at {at}: nothing to do (add --fresh to load again)",
            report.run_id.unwrap_or(0)
        );
    } else {
        if report.resumed {
            println!(
                "resumed run {}: committed chunks were kept, the rest loaded",
                report.run_id.unwrap_or(0)
            );
        }
        print_summary(report);
    }
    let rejected = report.rejected();
    let orphans = report.orphans();
    if orphans > 0 {
        for t in &report.tables {
            for fk in t.foreign_keys.iter().filter(|f| f.orphans > 0) {
                eprintln!(
                    "{}.{}: {} row(s) reference a missing {} (e.g. {}); foreign key {} stays NOT VALID",
                    t.table,
                    fk.column,
                    fk.orphans,
                    fk.references,
                    fk.sample.join("; "),
                    fk.constraint
                );
            }
        }
    }
    if rejected > 0 {
        eprintln!(
            "{rejected} item(s) rejected: see {}",
            report.rejects_file.as_deref().unwrap_or("the rejects file")
        );
    }
    if rejected > 0 || orphans > 0 {
        return 3;
    }
    0
}

/// `--rejects`, else beside `--report`, else in the working folder.
fn rejects_path(rejects: Option<&PathBuf>, report: Option<&PathBuf>) -> PathBuf {
    match (rejects, report) {
        (Some(p), _) => p.clone(),
        (None, Some(report)) => report
            .parent()
            .map(|d| d.join("ddb2pg-rejects.jsonl"))
            .unwrap_or_else(|| PathBuf::from("ddb2pg-rejects.jsonl")),
        (None, None) => PathBuf::from("ddb2pg-rejects.jsonl"),
    }
}

fn run_sync(args: SyncArgs) -> anyhow::Result<i32> {
    let mut config = Config::load(&args.pipeline.config)?;
    if let Some(n) = args.connections {
        if n == 0 {
            return Err(Error::Usage("--connections must be at least 1".into()).into());
        }
        config.tuning.connections = n;
    }
    let rejects_path = rejects_path(args.rejects.as_ref(), args.report.as_ref());
    if let Some(report) = &args.report {
        writable("--report", report)?;
    }
    if args.rejects.is_some() {
        writable("--rejects", &rejects_path)?;
    }
    let opts = SyncOptions {
        schema: args.schema.checked(&config)?,
        tables: args.tables.tables.clone(),
        until_caught_up: args.until_caught_up,
        allow_gap: args.allow_gap,
        rejects_path,
        max_rejects: args.max_rejects,
        bars: !args.no_progress && std::io::stderr().is_terminal(),
    };
    let report = io_runtime()?.block_on(sync::sync(&config, &opts))?;
    println!(
        "{:<20} {:>8} {:>10} {:>10} {:>10} {:>9} {:>11} {:>26} {:>9}",
        "table",
        "exports",
        "inserted",
        "updated",
        "deleted",
        "rejected",
        "changes/s",
        "watermark",
        "lag s"
    );
    for t in &report.tables {
        println!(
            "{:<20} {:>8} {:>10} {:>10} {:>10} {:>9} {:>11.0} {:>26} {:>9.1}",
            format!("{}.{}", t.schema, t.table),
            t.exports_applied.len(),
            t.inserted,
            t.updated,
            t.deleted,
            t.rejected,
            t.changes_per_second,
            t.watermark.as_deref().unwrap_or("(baseline)"),
            t.lag_seconds.unwrap_or(0.0)
        );
        for u in &t.unfinished {
            println!(
                "{}: export {u} is still being written; a later sync applies it",
                t.table
            );
        }
    }
    if report.interrupted {
        println!("stopped by a signal: every change applied so far is committed");
    }
    if let Some(path) = &args.report {
        std::fs::write(path, serde_json::to_string_pretty(&report)?).map_err(|e| Error::Io {
            what: format!("write the report {}", path.display()),
            source: e,
        })?;
    }
    let rejected = report.rejected();
    if rejected > 0 {
        eprintln!(
            "{rejected} change(s) rejected: see {}",
            report.rejects_file.as_deref().unwrap_or("the rejects file")
        );
        return Ok(3);
    }
    Ok(0)
}

fn run_init(args: InitArgs) -> anyhow::Result<i32> {
    let key = match &args.key {
        None => None,
        Some(k) => {
            let parts: Vec<String> = k.split(',').map(|p| p.trim().to_string()).collect();
            if parts.is_empty() || parts.len() > 2 || parts.iter().any(String::is_empty) {
                return Err(Error::Usage(format!("--key {k}: give ATTR or ATTR,SORT")).into());
            }
            Some(parts)
        }
    };
    if let Some(t) = &args.table {
        if t.is_empty() || t.len() > 63 {
            return Err(Error::Usage("--table must be 1 to 63 bytes".into()).into());
        }
    }
    let out = match &args.out {
        Some(o) => o.clone(),
        None => {
            let d = ddb2pg::init::default_out().to_path_buf();
            if d.exists() {
                return Err(Error::Usage(format!(
                    "{} exists: pass --out FILE (or --out {} to replace it)",
                    d.display(),
                    d.display()
                ))
                .into());
            }
            d
        }
    };
    writable("--out", &out)?;
    if let Some(report) = &args.report {
        writable("--report", report)?;
    }
    ddb2pg::init::parse_from(&args.from)?;
    let opts = ddb2pg::init::InitOptions {
        from: args.from.clone(),
        key,
        table: args.table.clone(),
        tuning: ddb2pg::config::Tuning::default(),
    };
    let inf = io_runtime()?.block_on(ddb2pg::init::infer(&opts))?;
    // The target written in the mapping: DDB2PG_TARGET_URL when it holds no password.
    let url = std::env::var("DDB2PG_TARGET_URL")
        .ok()
        .filter(|u| !u.is_empty() && !u.contains("password") && !has_password(u))
        .unwrap_or_else(|| "postgresql://localhost:5432/postgres".to_string());
    let text = ddb2pg::init::config_text(&inf, &args.from, &url);
    std::fs::write(&out, text).map_err(|e| Error::Io {
        what: format!("write {}", out.display()),
        source: e,
    })?;
    print!("{}", ddb2pg::init::summary(&inf));
    if let Some(report) = &args.report {
        write_json(report, &inf)?;
    }
    println!("wrote {}", out.display());
    Ok(0)
}

/// Whether a postgresql:// URL carries a password (`user:secret@`).
fn has_password(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let auth = rest.split(['/', '?']).next().unwrap_or("");
    auth.rsplit_once('@')
        .is_some_and(|(user, _)| user.contains(':'))
}

fn run_check(args: CheckArgs) -> anyhow::Result<i32> {
    let config = Config::load(&args.pipeline.config)?;
    if args.clients == 0 || args.clients > 256 || args.runs.is_some_and(|r| r == 0 || r > 1_000_000)
    {
        return Err(
            Error::Usage("--clients must be 1 to 256 and --runs 1 to 1000000".into()).into(),
        );
    }
    if let Some(report) = &args.report {
        writable("--report", report)?;
    }
    if let Some(dir) = &args.out {
        report_folder("--out", dir, "check.json")?;
    }
    let opts = ddb2pg::check::CheckOptions {
        schema: args.schema.checked(&config)?,
        names: args.checks.clone(),
        clients: args.clients,
        runs: args.runs,
    };
    let report = io_runtime()?.block_on(ddb2pg::check::check(&config, &opts))?;
    print_check(&report);
    if let Some(path) = &args.report {
        write_json(path, &report)?;
    }
    if let Some(dir) = &args.out {
        ddb2pg::rehearse::write_check(&report, dir)?;
    }
    let missed = report.missed();
    if missed.is_empty() {
        return Ok(0);
    }
    for c in &missed {
        eprintln!(
            "check `{}` missed its target: p95 {:.2} ms > {} ms",
            c.name,
            c.p95_ms,
            c.target_p95_ms.unwrap_or(0.0)
        );
    }
    Ok(4)
}

fn print_check(report: &ddb2pg::check::CheckReport) {
    println!(
        "{:<28} {:>6} {:>9} {:>9} {:>9} {:>9} {:>10}  verdict",
        "check", "runs", "p50 ms", "p95 ms", "p99 ms", "max ms", "target ms"
    );
    for c in &report.checks {
        println!(
            "{:<28} {:>6} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>10}  {}",
            c.name,
            c.runs,
            c.p50_ms,
            c.p95_ms,
            c.p99_ms,
            c.max_ms,
            c.target_p95_ms
                .map_or_else(|| "-".into(), |t| format!("{t}")),
            match c.met {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "no target",
            }
        );
    }
    for c in &report.checks {
        let uses = if c.indexes.is_empty() {
            "no index".to_string()
        } else {
            format!("index {}", c.indexes.join(", "))
        };
        println!(
            "{}: {uses}; {:.1} rows per run, {:.0} runs/s on {} client(s), {} parameter row(s)",
            c.name, c.rows_returned_mean, c.per_second, c.clients, c.param_rows
        );
        for s in &c.big_seq_scans {
            println!("{}: the plan reads {s} by sequential scan", c.name);
        }
    }
}

fn run_snapshot(args: SnapshotArgs) -> anyhow::Result<i32> {
    let config = Config::load(&args.pipeline.config)?;
    if args.out.is_file() {
        return Err(Error::Usage(format!(
            "--out {}: is a file; name a folder",
            args.out.display()
        ))
        .into());
    }
    let rejects_path = args
        .rejects
        .clone()
        .unwrap_or_else(|| args.out.join("ddb2pg-rejects.jsonl"));
    if let Some(report) = &args.report {
        writable("--report", report)?;
    }
    if args.rejects.is_some() {
        writable("--rejects", &rejects_path)?;
    }
    let opts = ddb2pg::snapshot::SnapshotOptions {
        out: args.out.clone(),
        tables: args.tables.tables.clone(),
        rejects_path,
        max_rejects: args.max_rejects,
        fresh: args.fresh,
    };
    let report = io_runtime()?.block_on(ddb2pg::snapshot::snapshot(&config, &opts))?;
    println!(
        "{:<20} {:>10} {:>9} {:>6} {:>12} {:>10}  source",
        "table", "rows", "rejected", "files", "bytes", "rows/s"
    );
    for t in &report.tables {
        println!(
            "{:<20} {:>10} {:>9} {:>6} {:>12} {:>10.0}  {}",
            t.table, t.rows, t.rejected, t.files, t.bytes, t.rows_per_second, t.source
        );
    }
    if report.unchanged {
        println!(
            "The snapshot in {} was complete already: nothing read (--fresh writes it again).",
            report.out
        );
    } else if report.splits_kept > 0 {
        println!(
            "Resumed: {} split(s) written by the stopped run kept.",
            report.splits_kept
        );
    }
    let rejected: u64 = report.tables.iter().map(|t| t.rejected).sum();
    println!("Wrote {} in {:.2} s.", report.out, report.seconds);
    if rejected > 0 {
        println!("{rejected} item(s) rejected: {}", report.rejects_file);
    }
    if let Some(path) = &args.report {
        write_json(path, &report)?;
    }
    Ok(if rejected > 0 { 3 } else { 0 })
}

fn run_verify(args: VerifyArgs) -> anyhow::Result<i32> {
    let config = Config::load(&args.pipeline.config)?;
    let opts = VerifyOptions {
        schema: args.schema.or_target(&config),
        tables: args.tables.tables.clone(),
        show: args.show,
        live: args.live,
    };
    let report = io_runtime()?.block_on(verify::verify(&config, &opts))?;
    print_verify(&report);
    if let Some(path) = &args.report {
        write_json(path, &report)?;
    }
    Ok(if report.matches { 0 } else { 4 })
}

fn print_verify(report: &ddb2pg::verify::VerifyReport) {
    println!(
        "{:<20} {:>10} {:>10} {:>10} {:>8} {:>8} {:>10} {:>9}  verdict",
        "table", "source", "target", "missing", "extra", "differ", "rejected", "rows/s"
    );
    for t in &report.tables {
        println!(
            "{:<20} {:>10} {:>10} {:>10} {:>8} {:>8} {:>10} {:>9.0}  {}",
            format!("{}.{}", t.schema, t.table),
            t.source_items,
            t.target_rows,
            t.missing,
            t.extra,
            t.different,
            t.rejected,
            t.rows_per_second,
            t.verdict
        );
    }
    for t in &report.tables {
        if t.source_manifest != t.source_items {
            println!(
                "{}: the manifest lists {} items, {} were read",
                t.table, t.source_manifest, t.source_items
            );
        }
        if let Some(rec) = t.rejected_recorded {
            if rec != t.rejected {
                println!(
                    "{}: the last load recorded {rec} rejects, the source yields {} now",
                    t.table, t.rejected
                );
            }
        }
        if t.rejected > 0 {
            println!("{}: rejected keys: {}", t.table, t.rejected_keys.join(", "));
        }
        for d in &t.differences {
            let key: Vec<String> = d.key.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!("{}: {} row {}", t.table, d.kind, key.join(", "));
            for (col, [s, g]) in &d.columns {
                let (s, g) = verify::show_pair(s.as_deref(), g.as_deref());
                println!("    {col}: source {s} | target {g}");
            }
        }
    }
}

fn run_status(a: StatusArgs) -> anyhow::Result<i32> {
    let config = Config::load(&a.pipeline.config)?;
    let schema = a.schema.or_target(&config);
    let status = io_runtime()?.block_on(async {
        let c = ddb2pg::sink::connect(&config.target.url).await?;
        ddb2pg::admin::status::status(&c, &schema, a.run).await
    })?;
    let Some(status) = status else {
        println!("no load into schema {schema} is recorded in this database");
        return Ok(0);
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(0);
    }
    print!("{}", ddb2pg::admin::status::render(&status, a.all));
    Ok(0)
}

fn print_summary(r: &LoadReport) {
    println!(
        "{:<20} {:>12} {:>12} {:>10} {:>10} {:>9} {:>12}",
        "table", "items read", "rows loaded", "rejected", "MB read", "seconds", "rows/s"
    );
    // Rejected: the run's (every attempt and worker), as the exit code counts them.
    for t in &r.tables {
        println!(
            "{:<20} {:>12} {:>12} {:>10} {:>10.1} {:>9.2} {:>12.0}",
            format!("{}.{}", t.schema, t.table),
            t.rows_read,
            t.rows_written,
            t.rejected.max(t.run_rejected),
            t.bytes_read as f64 / 1e6,
            t.seconds,
            t.rows_per_second
        );
    }
    for t in r.tables.iter().filter(|t| t.skipped > 0) {
        println!(
            "{}.{}: {} item(s) of {} left to other tables (where {})",
            t.schema,
            t.table,
            t.skipped,
            t.source,
            t.route.as_deref().unwrap_or("")
        );
    }
    for t in r.tables.iter().filter(|t| t.unrouted > 0) {
        let kept = if t.unrouted_rejected > 0 {
            format!(
                "; the run's {} kept in the rejects file (\"table\": null)",
                t.unrouted_rejected
            )
        } else {
            String::new()
        };
        println!(
            "{}: {} item(s) match no table's `where` (not loaded){kept}",
            t.source, t.unrouted
        );
    }
    for t in r.tables.iter().filter(|t| t.rows_before > 0) {
        println!(
            "{}.{}: {} rows were committed before this run took it up",
            t.schema, t.table, t.rows_before
        );
    }
    for t in r.tables.iter().filter(|t| t.pg_retries > 0) {
        println!(
            "{}.{}: {} chunk(s) retried on a new connection",
            t.schema, t.table, t.pg_retries
        );
    }
    for t in &r.tables {
        if let Some(u) = t.upsert {
            println!(
                "{}.{}: upsert inserted {}, updated {}, unchanged {}",
                t.schema, t.table, u.inserted, u.updated, u.unchanged
            );
        }
    }
    let peak = r
        .peak_rss_bytes
        .map_or_else(|| "?".into(), |b| format!("{:.0} MB", b as f64 / 1e6));
    println!("total {:.2} s, peak RSS {peak}", r.seconds);
}
