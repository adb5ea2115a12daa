//! The command line: clap types and what each subcommand does. It parses and dispatches;
//! the work is in [`crate::run`] and [`crate::output`].

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

pub mod bench;
pub mod catalog;
pub mod eval;
pub mod generate;
pub mod generate_args;
pub mod info;
pub mod interrupt;
pub mod invocation;
pub mod merge;
pub mod progress;
pub mod prompt_file;
pub mod quantize;
pub mod toy;

pub use generate::{generate, GenerateArgs, DEFAULT_MODEL};

/// Steer pretrained diffusion and flow models at inference time.
#[derive(Debug, Parser)]
#[command(name = "steerdiff", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// CPU threads for the model's kernels (default: RAYON_NUM_THREADS, else the physical
    /// cores). Results do not depend on it.
    #[arg(long, global = true, value_name = "N")]
    pub threads: Option<usize>,
}

impl Cli {
    /// Fixes the thread count where candle reads it (`RAYON_NUM_THREADS` for its matrix
    /// kernels, `CANDLE_NUM_THREADS` for its pool): `--threads`, else `RAYON_NUM_THREADS`,
    /// else candle's default (the physical cores), and returns a pool of that many threads for
    /// the command to run in ([`rayon::ThreadPool::install`]). Call before the first tensor
    /// operation.
    ///
    /// Setting the variable even when unchanged matters: with it unset, candle works out its
    /// default again for every matrix product by reading `/proc/cpuinfo` (measured: about a
    /// tenth of the CPU time of an FK run on the toy model).
    ///
    /// Running the command on one of the pool's threads, rather than on the main thread beside
    /// them, matters for small models: every parallel operation otherwise hands its work from
    /// the main thread to the pool and waits, and the pool's threads spin and sleep between
    /// operations while the main thread works (measured on 2 cores: the tiny-sd pipeline, 7
    /// images in one batch, 0.51 s → 0.37 s per run).
    pub fn thread_pool(&self) -> Result<rayon::ThreadPool> {
        let n = match self.threads {
            Some(0) => crate::error::input_error!("--threads must be at least 1"),
            Some(n) => n,
            None => candle_core::utils::get_num_threads(),
        };
        // Edition 2021: set_var is safe; no other thread of ours reads the environment yet
        // (the signal thread only waits for signals).
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        if self.threads.is_some() || std::env::var_os("CANDLE_NUM_THREADS").is_none() {
            std::env::set_var("CANDLE_NUM_THREADS", n.to_string());
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .map_err(|e| anyhow::anyhow!("cannot start {n} threads: {e}"))
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Sample from any model on any device, writing DIR/samples.json, one PNG per sample and
    /// grid.png (image models) or scatter.png (2-D mixtures).
    Generate(Box<GenerateArgs>),
    /// Name every model, sampler, guidance strategy and reward, with a one-line description.
    List,
    /// Compare strategies at matched cost, judged by a classifier or reward that never steers,
    /// beside the best CFG at the same cost (tuned on other seeds), with standard errors.
    Eval(Box<eval::EvalArgs>),
    /// The embedded toy models: dataset, training, evaluation.
    Toy(toy::ToyArgs),
    /// Show the run record inside a PNG steerdiff wrote, and the command that reproduces it.
    Info {
        /// The image.
        image: PathBuf,
        /// Print the whole record as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Join the outputs of `generate --shard I/N` runs into the output of the whole run.
    Merge(merge::MergeArgs),
    /// Time a model and a strategy as `generate` runs them: the forward at several batch
    /// sizes, text encoding, decoding, one whole run split into model / reward / engine
    /// time, and the peak memory (`steerdiff bench -- --model sd15 -p "a cat"`).
    Bench(bench::BenchArgs),
    /// Quantize a FLUX transformer (.safetensors) into a GGUF file (Q8_0, Q4_K, …) that
    /// `generate --model FILE.gguf` loads and keeps quantized in memory.
    Quantize(quantize::QuantizeArgs),
}

/// Runs a parsed command line.
pub fn execute(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Generate(args) => generate(&args),
        Command::Eval(args) => eval::execute(&args),
        Command::List => {
            print!("{}", catalog::listing());
            Ok(())
        }
        Command::Toy(args) => toy::execute(&args),
        Command::Info { image, json } => info::info(&image, json),
        Command::Merge(args) => merge::merge(&args),
        Command::Bench(args) => bench::execute(&args),
        Command::Quantize(args) => quantize::execute(&args),
    }
}

#[cfg(test)]
mod tests {
    /// No two flags of one subcommand share a long name or an id. clap checks this only in
    /// debug builds; in release a clash lets one flag silently swallow the other's values
    /// (DSearch's `--width` once took the image width's).
    #[test]
    fn no_two_flags_share_a_name() {
        use clap::CommandFactory;
        fn check(cmd: &clap::Command, path: &str) {
            let mut longs = std::collections::BTreeSet::new();
            let mut ids = std::collections::BTreeSet::new();
            for arg in cmd.get_arguments() {
                assert!(
                    ids.insert(arg.get_id().as_str().to_string()),
                    "{path}: two arguments with id `{}`",
                    arg.get_id()
                );
                if let Some(long) = arg.get_long() {
                    assert!(longs.insert(long.to_string()), "{path}: two --{long} flags");
                }
            }
            for sub in cmd.get_subcommands() {
                check(sub, &format!("{path} {}", sub.get_name()));
            }
        }
        check(&super::Cli::command(), "steerdiff");
    }
}
