//! `steerdiff bench [FLAGS] -- [GENERATE FLAGS]`: times a model and a strategy exactly as
//! `generate` would run them (the flags after `--` are generate's, so every model, device,
//! dtype, size and strategy can be measured), and prints a table or `--json`.

use anyhow::Result;
use clap::Args;

use crate::error::input_error;
use crate::run::bench::{self, Report, Settings};

/// Flags of `steerdiff bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Batch sizes (model rows per forward) to time, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16")]
    pub batches: Vec<usize>,
    /// Unmeasured calls (or whole runs) before each measurement.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Measured calls per figure (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Whole runs of the strategy to time (the median run is reported; 0: none).
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// The run to measure, as `generate` flags (model, device, dtype, size, prompt or class,
    /// steps, -n, strategy …), after `--`. Nothing is written.
    #[arg(last = true, value_name = "GENERATE FLAGS")]
    pub generate: Vec<String>,
}

/// Runs `steerdiff bench`.
pub fn execute(args: &BenchArgs) -> Result<()> {
    if args.batches.is_empty() || args.batches.contains(&0) || args.repeats == 0 {
        input_error!("--batches must list sizes of at least 1 and --repeats be at least 1");
    }
    let mut argv = vec!["generate".to_string(), "--output=-".to_string()];
    argv.extend(args.generate.iter().cloned());
    let run = super::invocation::parse_generate(&argv)?;
    for (given, flag) in [
        (run.prompt_file.is_some(), "--prompt-file"),
        (run.trace.is_some(), "--trace"),
        (run.shard.is_some(), "--shard"),
    ] {
        if given {
            input_error!("{flag} is for generate; bench measures one run and writes nothing");
        }
    }
    let opts = super::generate::run_options(&run)?;
    let model = crate::run::load_model(run.model(), &opts)?;
    let report = bench::measure(
        model,
        &opts,
        &Settings {
            batches: args.batches.clone(),
            warmup: args.warmup,
            repeats: args.repeats,
            runs: args.runs,
        },
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", table(&report));
    }
    Ok(())
}

/// The report as a table for people.
pub fn table(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "steerdiff bench: {} on {} ({}), {} thread(s); medians of {} after {} warm-up",
        r.model, r.device, r.dtype, r.threads, r.repeats, r.warmup
    );
    let _ = writeln!(
        t,
        "\nmodel forward\n  batch    ms/call     ms/row     rows/s"
    );
    for f in &r.forward {
        let _ = writeln!(
            t,
            "  {:>5} {:>10.2} {:>10.2} {:>10.1}",
            f.batch,
            1e3 * f.seconds.median,
            f.ms_per_row,
            f.rows_per_s
        );
    }
    if let Some(s) = &r.text_encode {
        let _ = writeln!(t, "\ntext encode: {:.2} ms", 1e3 * s.median);
    }
    if let Some(s) = &r.decode_per_image {
        let _ = writeln!(t, "decode to an image: {:.2} ms", 1e3 * s.median);
    }
    if let Some(run) = &r.run {
        let _ = writeln!(
            t,
            "\nrun ({}): {} image(s), {} model rows in {:.3} s = {:.2} images/s\n  model \
             {:.1} %, reward {:.1} %, decode {:.1} %, engine {:.2} % ({:.1} ms)",
            run.strategy,
            run.images,
            run.model_rows,
            run.wall_s,
            run.images_per_s,
            100.0 * run.model_share,
            100.0 * run.reward_share,
            100.0 * run.decode_share,
            100.0 * run.engine_share,
            1e3 * run.engine_share * run.wall_s
        );
    }
    if let Some(b) = r.peak_rss_bytes {
        let _ = writeln!(t, "\npeak resident memory: {:.1} MiB", b as f64 / 1048576.0);
    }
    t
}
