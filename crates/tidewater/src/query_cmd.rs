//! `tidewater query`: streaming SQL jobs. Today: `query test`, which runs a query over a file of
//! events with no server at all and compares the output with an expected file: the local
//! testing Azure Stream Analytics users ask for. The engine is `tidewater_sql`; the file formats
//! are `tidewater_sql::local`'s.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use tidewater_sql::{local, JobOptions, LatePolicy};

#[derive(Debug, Subcommand)]
pub(crate) enum QueryCommand {
    /// Run QUERY over a JSON Lines file of events, print every output row (and late events and
    /// event errors) as JSON lines, and with --expect compare them with an expected file.
    /// Exits non-zero on diagnostics, bad input or a mismatch.
    Test(TestArgs),
}

#[derive(Debug, Args)]
pub(crate) struct TestArgs {
    /// The query file (Azure Stream Analytics SQL).
    query: PathBuf,
    /// Events, one JSON object per line. `@input`, `@partition` and `@arrival` keys steer an
    /// event; `{"@advance_processing_time": T}` advances processing time.
    #[arg(long)]
    input: PathBuf,
    /// Expected results in the same JSON lines format `query test` prints.
    #[arg(long)]
    expect: Option<PathBuf>,
    /// How far behind the newest event an event may arrive and still count as in order (ms).
    #[arg(long, default_value_t = 0)]
    out_of_order_ms: i64,
    /// Extra delay before windows close and events count as late (ms).
    #[arg(long, default_value_t = 0)]
    late_arrival_ms: i64,
    /// What happens to a late event: adjust its time to the watermark, or drop it.
    #[arg(long, value_enum, default_value_t = LatePolicyArg::Adjust)]
    late_policy: LatePolicyArg,
    /// A partition silent this long (processing time, ms) stops holding the watermark back.
    #[arg(long)]
    idle_partition_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LatePolicyArg {
    Adjust,
    Drop,
}

pub(crate) fn run(command: QueryCommand) -> anyhow::Result<()> {
    match command {
        QueryCommand::Test(args) => test(args),
    }
}

fn test(args: TestArgs) -> anyhow::Result<()> {
    let query =
        std::fs::read_to_string(&args.query).with_context(|| format!("reading {}", args.query.display()))?;
    let options = JobOptions {
        out_of_order_tolerance_ms: args.out_of_order_ms,
        late_arrival_tolerance_ms: args.late_arrival_ms,
        late_policy: match args.late_policy {
            LatePolicyArg::Adjust => LatePolicy::Adjust,
            LatePolicyArg::Drop => LatePolicy::Drop,
        },
        idle_partition_timeout_ms: args.idle_partition_ms,
        ..JobOptions::default()
    };
    let mut job = match tidewater_sql::compile(&query, options) {
        Ok(job) => job,
        Err(diagnostics) => {
            for diagnostic in &diagnostics {
                eprintln!("{}:{diagnostic}", args.query.display());
            }
            anyhow::bail!("{} does not compile ({} problem(s))", args.query.display(), diagnostics.len());
        }
    };
    let input =
        std::fs::read_to_string(&args.input).with_context(|| format!("reading {}", args.input.display()))?;
    let results =
        local::run(&mut job, &input, |_, _| Ok(())).with_context(|| args.input.display().to_string())?;
    for line in &results {
        println!("{line}");
    }
    let Some(expect) = &args.expect else { return Ok(()) };
    let text = std::fs::read_to_string(expect).with_context(|| format!("reading {}", expect.display()))?;
    let expected = local::parse_expected(&text).with_context(|| expect.display().to_string())?;
    match local::diff(&expected, &results) {
        None => {
            eprintln!("ok: {} result line(s) match {}", results.len(), expect.display());
            Ok(())
        }
        Some(report) => {
            eprint!("{report}");
            anyhow::bail!("the results differ from {}", expect.display())
        }
    }
}
