//! The command line: clap types and what each subcommand does.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::{Args, Parser, Subcommand};
use steerdiff_guidance::TraceSink;

use crate::catalog;
use crate::error::input_error;
use crate::output::{self, JsonlTrace};
use crate::run::{Job, Model, Options, PathKind};

/// The model used when `--model` is not given: the embedded toy flow model.
pub const DEFAULT_MODEL: Option<&str> = Some("toy");

/// Steer pretrained diffusion and flow models at inference time.
#[derive(Debug, Parser)]
#[command(name = "steerdiff", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Sample from a model, writing DIR/samples.json (and, for 2-D mixtures, DIR/scatter.png).
    Generate(Box<GenerateArgs>),
    /// Name every model, sampler, guidance strategy and reward, with a one-line description.
    List,
    /// Run a grid of strategies at matched cost and print a table (or --json).
    Eval(Box<crate::eval::EvalArgs>),
    /// The embedded toy models: dataset, training, evaluation.
    Toy(crate::toy::ToyArgs),
    /// Show the run record inside a PNG steerdiff wrote, and the command that reproduces it.
    Info {
        /// The image.
        image: PathBuf,
        /// Print the whole record as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Join the outputs of `generate --shard I/N` runs into the output of the whole run.
    Merge(crate::merge::MergeArgs),
}

/// Flags of `steerdiff generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// The model: toy (default), toy-weak or gmm:SPEC.json (see `steerdiff list`).
    #[arg(long, value_name = "MODEL")]
    pub model: Option<String>,
    /// The Gaussian path a mixture is sampled on.
    #[arg(long, value_enum, default_value_t = PathKind::Vp)]
    pub path: PathKind,
    /// Condition on a class, by name or label (default: unconditional).
    #[arg(long, value_name = "NAME|LABEL")]
    pub class: Option<String>,
    /// Sampler name, see `steerdiff list` (default: ddim on --path vp, flow-euler on --path flow).
    #[arg(long)]
    pub sampler: Option<String>,
    /// Number of solver steps.
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Noise scale η of ddim / flow-euler (default: the sampler's own).
    #[arg(long, allow_negative_numbers = true)]
    pub eta: Option<f64>,
    /// Classifier-free guidance scale (1 = none; needs --class).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub cfg: f64,
    /// CFG rescale φ in [0, 1] (0 = off).
    #[arg(
        long,
        value_name = "PHI",
        default_value_t = 0.0,
        allow_negative_numbers = true
    )]
    pub cfg_rescale: f64,
    /// Guide only while the noise level σ/α lies in [LO, HI].
    #[arg(long, value_name = "LO,HI", value_parser = parse_interval, allow_hyphen_values = true)]
    pub cfg_interval: Option<(f64, f64)>,
    /// Time travel (RePaint's resampling): after every step but the last, noise the state
    /// back and run the step again, U more times (0 = off). Harmonises the fills of --guidance
    /// replace / flowchef with their context; costs about 1 + U times the model rows.
    #[arg(long, value_name = "U", default_value_t = 0)]
    pub time_travel: usize,
    /// Number of samples (groups); group g uses seed SEED + g.
    #[arg(short = 'n', long = "num", default_value_t = 1)]
    pub num: usize,
    /// Seed of group 0.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output directory (created if missing).
    #[arg(short = 'o', long = "output", value_name = "DIR")]
    pub output: PathBuf,
    /// Write one JSON line per step to FILE.
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// Steering strategy settings.
    #[command(flatten)]
    pub strategy: crate::strategy::StrategyArgs,
    /// Text-to-image models: the prompt.
    #[arg(long, value_name = "TEXT", help_heading = TEXT_TO_IMAGE)]
    pub prompt: Option<String>,
    /// Text-to-image models: the negative prompt (the unconditional row of CFG; default empty).
    #[arg(long, value_name = "TEXT", help_heading = TEXT_TO_IMAGE)]
    pub negative: Option<String>,
    /// Text-to-image models: scheduler name (default = the model's own scheduler_config.json;
    /// ddim, ddpm, euler, euler-karras, euler-a, dpmpp-2m, dpmpp-2m-karras), a diffusers class
    /// name, or a scheduler_config.json path.
    #[arg(long, value_name = "NAME|CLASS|FILE", help_heading = TEXT_TO_IMAGE)]
    pub scheduler: Option<String>,
    /// Text-to-image models: image height in pixels (default: the model's native size).
    #[arg(long, help_heading = TEXT_TO_IMAGE)]
    pub height: Option<usize>,
    /// Text-to-image models: image width in pixels (default: the model's native size).
    #[arg(long, help_heading = TEXT_TO_IMAGE)]
    pub width: Option<usize>,
    /// Text-to-image models: weight dtype f32 (default), f16 or bf16.
    #[arg(long, value_name = "DTYPE", help_heading = TEXT_TO_IMAGE)]
    pub dtype: Option<String>,
    /// Text-to-image models: the weaker guiding model of autoguidance (and of --gfcg-guide
    /// weak): a preset, folder or repo with the same latent space as --model.
    #[arg(long, value_name = "MODEL", help_heading = TEXT_TO_IMAGE)]
    pub guide_model: Option<String>,
    /// SD3 / FLUX single-file --model: the text encoders, a diffusers-layout folder or Hub
    /// repo (tokenizer*/ and text_encoder*/).
    #[arg(long, value_name = "FOLDER|ORG/NAME", help_heading = TEXT_TO_IMAGE)]
    pub text_encoders: Option<String>,
    /// FLUX single-file --model: its autoencoder file (ae.safetensors).
    #[arg(long, value_name = "FILE", help_heading = TEXT_TO_IMAGE)]
    pub ae: Option<PathBuf>,
    /// Text-to-image models: the CLIP model of the `clip` and `aesthetic:MLP` rewards (a
    /// transformers-format folder or Hub repo).
    #[arg(long, value_name = "SOURCE", default_value = steerdiff_pipelines::sd::clip_model::DEFAULT_CLIP, help_heading = TEXT_TO_IMAGE)]
    pub clip_model: String,
    /// Text-to-image models: start from these latents (JSON list, or an object with
    /// `initial_latents`), as handed to diffusers' pipeline as `latents=`.
    #[arg(long, value_name = "FILE.json", help_heading = TEXT_TO_IMAGE)]
    pub init_latents: Option<PathBuf>,
    /// Text-to-image models: img2img from this image (its size sets --height/--width).
    #[arg(long, value_name = "IMAGE", help_heading = TEXT_TO_IMAGE)]
    pub init_image: Option<PathBuf>,
    /// Text-to-image models: img2img strength in (0, 1] (the fraction of the steps run).
    #[arg(long, default_value_t = 0.8, help_heading = TEXT_TO_IMAGE)]
    pub strength: f64,
    /// Run only shard I of N: a contiguous block of the -n groups, with the seeds they have in
    /// the whole run (default: from SLURM_ARRAY_TASK_ID/COUNT or JOB_COMPLETION_INDEX with
    /// STEERDIFF_SHARD_COUNT, if set). Join shards with `steerdiff merge`.
    #[arg(long, value_name = "I/N", value_parser = crate::shard::Shard::parse)]
    pub shard: Option<crate::shard::Shard>,
    /// Run every line of FILE: a .jsonl of flag overrides per line ({"class": "star", "cfg":
    /// 3}), or one prompt (text models) or class (class-conditional models) per line; line i
    /// writes DIR/line-NNNN/.
    #[arg(long, value_name = "FILE")]
    pub prompt_file: Option<PathBuf>,
    /// Read flags from a TOML file (keys are long flag names: cfg = 3, class = "star"); flags
    /// on the command line win.
    #[arg(long, value_name = "FILE.toml")]
    pub config: Option<PathBuf>,
    /// The flags given (on the command line or in --config), as recorded in every PNG; filled
    /// in from the parsed arguments by the binary.
    #[arg(skip)]
    pub flags: crate::invocation::Flags,
}

/// `generate --prompt-file`: one run per line (see [`crate::prompt_file`]).
fn prompt_file_runs(args: &GenerateArgs, file: &std::path::Path) -> Result<()> {
    use crate::invocation::{self, Flags};
    let condition = if crate::text2img::is_text_model(args) {
        "prompt"
    } else {
        "class"
    };
    let lines = crate::prompt_file::read(file, condition)?;
    // The run-shaping flags of the command line (the record leaves them out) come back here.
    let mut base: Flags = args.flags.clone();
    base.push(("num".into(), vec![args.num.to_string()]));
    base.push(("seed".into(), vec![args.seed.to_string()]));
    if let Some(s) = args.shard {
        base.push(("shard".into(), vec![format!("{}/{}", s.index, s.count)]));
    }
    for (i, line) in lines.iter().enumerate() {
        let mut argv = invocation::to_argv(&crate::prompt_file::apply(&base, line));
        let out = args.output.join(format!("line-{i:04}"));
        argv.push(format!("--output={}", out.display()));
        if let Some(t) = &args.trace {
            argv.push(format!("--trace={}.line-{i:04}", t.display()));
        }
        let sub = invocation::parse_generate(&argv)
            .with_context(|| format!("line {} of `{}`", i + 1, file.display()))?;
        generate(&sub)?;
    }
    Ok(())
}

/// Parses `LO,HI`.
pub(crate) fn parse_interval(s: &str) -> std::result::Result<(f64, f64), String> {
    let bad = || format!("expected LO,HI (two numbers, e.g. 0.28,5.42), got `{s}`");
    let (lo, hi) = s.split_once(',').ok_or_else(bad)?;
    let lo: f64 = lo.trim().parse().map_err(|_| bad())?;
    let hi: f64 = hi.trim().parse().map_err(|_| bad())?;
    Ok((lo, hi))
}

impl GenerateArgs {
    /// The run options these flags ask for.
    pub fn options(&self) -> Options {
        Options {
            path: self.path,
            class: self.class.clone(),
            sampler: self.sampler.clone(),
            steps: self.steps,
            eta: self.eta,
            cfg: self.cfg,
            cfg_rescale: self.cfg_rescale,
            cfg_interval: self.cfg_interval,
            time_travel: self.time_travel,
            n: self.num,
            seed: self.seed,
            strategy: self.strategy.clone(),
            shard: self.shard,
            observation: None,
        }
    }

    /// The model to load: `--model`, else [`DEFAULT_MODEL`].
    pub fn model(&self) -> Result<Model> {
        match self.model.as_deref().or(DEFAULT_MODEL) {
            Some(m) => Model::parse(m),
            None => input_error!("no --model given; use --model gmm:SPEC.json"),
        }
    }
}

/// Runs a parsed command line.
pub fn execute(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Generate(args) => generate(&args),
        Command::Eval(args) => crate::eval::execute(&args),
        Command::List => {
            print!("{}", catalog::listing());
            Ok(())
        }
        Command::Toy(args) => crate::toy::execute(&args),
        Command::Info { image, json } => crate::png_record::info(&image, json),
        Command::Merge(args) => crate::merge::merge(&args),
    }
}

/// The `--help` heading of the flags only text-to-image models read; elsewhere they are
/// refused rather than silently ignored.
pub const TEXT_TO_IMAGE: &str = "Text-to-image models";

/// `steerdiff generate`: checks everything, runs, writes the outputs all or nothing, and prints
/// a one-line summary on stderr.
pub fn generate(args: &GenerateArgs) -> Result<()> {
    if let Some(file) = &args.prompt_file {
        return prompt_file_runs(args, file);
    }
    if crate::text2img::is_text_model(args) {
        return crate::text2img::generate(args);
    }
    let text_only = crate::invocation::generate_command()
        .get_arguments()
        .filter(|a| a.get_help_heading() == Some(TEXT_TO_IMAGE))
        .filter_map(|a| a.get_long().map(str::to_string))
        .find(|long| args.flags.iter().any(|(l, _)| l == long));
    if let Some(long) = text_only {
        input_error!(
            "--{long} is for text-to-image models; `{}` is not one (drop --{long}, or name a \
             Stable Diffusion / SD3 / FLUX model with --model)",
            args.model.as_deref().unwrap_or("toy")
        );
    }
    let mut opts = args.options();
    if opts.shard.is_none() {
        match crate::shard::Shard::from_env(|k| std::env::var(k).ok()) {
            Ok(Some((shard, var))) => {
                eprintln!(
                    "steerdiff: shard {}/{} (from {var})",
                    shard.index, shard.count
                );
                opts.shard = Some(shard);
            }
            Ok(None) => {}
            Err(e) => input_error!("{e}"),
        }
    }
    let job = Job::new(args.model()?, &opts)?;
    output::prepare_dir(&args.output)?;
    let mut trace = match &args.trace {
        Some(path) => Some(JsonlTrace::create(path)?),
        None => None,
    };
    let result = {
        let mut progress = crate::progress::Progress::new(
            job.parameters().steps,
            trace.as_mut().map(|t| t as &mut dyn TraceSink),
        );
        let r = job.run(Some(&mut progress));
        progress.finish();
        r
    };
    let outcome = match result {
        Ok(o) => o,
        Err(e) => return Err(trace.as_mut().and_then(JsonlTrace::take_error).unwrap_or(e)),
    };
    let records = job.records(&outcome)?;
    let written = output::write_generate(&args.output, &job, &outcome, &records, trace.as_mut())?;
    if job.is_toy() {
        crate::toy::write_images(&args.output, &job, &records, &args.flags)?;
    }
    let reward_calls: u64 = outcome.ledger.reward_calls.values().sum();
    eprintln!(
        "steerdiff: {} samples → {} ({} model rows, {} reward calls, {:.3} s)",
        outcome.population.len(),
        written.samples.display(),
        outcome.ledger.total_rows(),
        reward_calls,
        outcome.timing.total_s,
    );
    Ok(())
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
