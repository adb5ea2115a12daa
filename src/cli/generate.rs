//! `steerdiff generate`: flags → [`Options`] → one [`Job`] → the engine → outputs, for every
//! model family and device.

use anyhow::{Context as _, Result};
use steerdiff_guidance::TraceSink;
use steerdiff_pipelines::model::is_text_to_image;

pub use super::generate_args::{GenerateArgs, Seed, DEFAULT_MODEL};
use super::invocation::Flags;
use super::progress::Progress;
use crate::error::input_error;
use crate::output::{self, JsonlTrace};
use crate::run::help::TEXT_TO_IMAGE;
use crate::run::results;
use crate::run::shard::Shard;
use crate::run::{Job, Options};
use steerdiff_pipelines::model::Model;

/// `generate --prompt-file`: one run per line (see [`crate::cli::prompt_file`]). Every
/// line's job is built before the first runs, so a bad line (an unknown class, a bad flag
/// value, a reward that cannot be used) leaves nothing half done; the model is loaded once
/// and shared by the lines that load it the same way.
fn prompt_file_runs(args: &GenerateArgs, file: &std::path::Path) -> Result<()> {
    let condition = if is_text_to_image(args.model.as_deref().unwrap_or(DEFAULT_MODEL)) {
        "prompt"
    } else {
        "class"
    };
    let lines = super::prompt_file::read(file, condition)?;
    // The run-shaping flags of the command line (the record leaves them out) come back here.
    let mut base: Flags = args.flags.clone();
    base.push(("num".into(), vec![args.num.to_string()]));
    base.push(("seed".into(), vec![args.seed.value().to_string()]));
    if let Some(s) = args.shard {
        base.push(("shard".into(), vec![format!("{}/{}", s.index, s.count)]));
    }
    let mut runs = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        let mut argv = super::invocation::to_argv(&super::prompt_file::apply(&base, line));
        let out = args.output.join(format!("line-{i:04}"));
        argv.push(format!("--output={}", out.display()));
        if let Some(t) = &args.trace {
            argv.push(format!("--trace={}.line-{i:04}", t.display()));
        }
        let sub = super::invocation::parse_generate(&argv)
            .with_context(|| format!("line {} of `{}`", i + 1, file.display()))?;
        runs.push(sub);
    }
    let line = |i: usize| format!("line {} of `{}`", i + 1, file.display());
    // Each line's options once (a device handle, a shard from the environment, its message).
    let mut lines = Vec::with_capacity(runs.len());
    for (i, sub) in runs.iter().enumerate() {
        let opts = run_options(sub).with_context(|| line(i))?;
        let key = model_key(sub.model(), &opts);
        lines.push((sub, opts, key));
    }
    let mut held = None;
    for (i, (sub, opts, key)) in lines.iter().enumerate() {
        let job = line_job(sub.model(), opts, key, &mut held).with_context(|| line(i))?;
        held = Some((key.clone(), job.into_model()));
    }
    for (i, (sub, opts, key)) in lines.iter().enumerate() {
        let job = line_job(sub.model(), opts, key, &mut held).with_context(|| line(i))?;
        held = Some((key.clone(), run(sub, job)?));
    }
    Ok(())
}

/// Which loaded model a run can reuse: its spec and how `opts` load it.
fn model_key(spec: &str, opts: &Options) -> String {
    let o = opts.load_options();
    format!(
        "{spec}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
        o.device.location(),
        o.dtype,
        o.mixture_path,
        o.text_encoders,
        o.prediction,
        o.loras,
        o.ae,
        o.max_batch
    )
}

/// The job of the model `spec` under `opts`, on the `held` model when its `key` matches.
fn line_job(
    spec: &str,
    opts: &Options,
    key: &str,
    held: &mut Option<(String, Model)>,
) -> Result<Job> {
    match held.take() {
        Some((k, model)) if k == key => {
            // The same device the model's tensors are on, not a second handle to it.
            let opts = Options {
                device: model.device().clone(),
                ..opts.clone()
            };
            Job::with_model(model, &opts).map_err(|rejected| rejected.0)
        }
        _ => Job::load(spec, opts),
    }
}

/// The checked options of one run: the model spec names something, text-only flags go with
/// a text model, the flags' values, and the shard (from `--shard` or the environment).
pub(crate) fn run_options(args: &GenerateArgs) -> Result<Options> {
    if let Err(e) = steerdiff_pipelines::model::check_spec_path(args.model()) {
        input_error!("{e}");
    }
    if !is_text_to_image(args.model()) {
        let text_only = super::invocation::generate_command()
            .get_arguments()
            .filter(|a| {
                a.get_help_heading() == Some(TEXT_TO_IMAGE)
                    || matches!(a.get_long(), Some("prompt" | "negative"))
            })
            .filter_map(|a| a.get_long().map(str::to_string))
            .find(|long| args.flags.iter().any(|(l, _)| l == long));
        if let Some(long) = text_only {
            input_error!(
                "--{long} is for text-to-image models; `{}` is not one (drop --{long}, or name a \
                 Stable Diffusion / SD3 / FLUX model with --model)",
                args.model()
            );
        }
    }
    let mut opts = args.options()?;
    if opts.shard.is_none() {
        match Shard::from_env(|k| std::env::var(k).ok()) {
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
    Ok(opts)
}

/// `steerdiff generate`: checks everything, runs, writes the outputs all or nothing, and prints
/// a one-line summary on stderr. Every model family takes this one path.
pub fn generate(args: &GenerateArgs) -> Result<()> {
    if args.seed.drawn {
        eprintln!("steerdiff: --seed -1: drew seed {}", args.seed.value());
    }
    if let Some(file) = &args.prompt_file {
        return prompt_file_runs(args, file);
    }
    let opts = run_options(args)?;
    let job = Job::load(args.model(), &opts)?;
    run(args, job).map(drop)
}

/// Runs `job` into `args.output` (locked while it writes), with progress, trace and the
/// summary line; gives the model back.
fn run(args: &GenerateArgs, job: Job) -> Result<Model> {
    output::prepare_dir(&args.output)?;
    let _lock = output::lock_dir(&args.output)?;
    if let Some(t) = &args.trace {
        let name = t.file_name().map(|n| n.to_string_lossy().into_owned());
        let dir = t.parent().filter(|p| !p.as_os_str().is_empty());
        let same_dir = std::fs::canonicalize(dir.unwrap_or(std::path::Path::new(".")))
            .ok()
            .zip(std::fs::canonicalize(&args.output).ok())
            .is_some_and(|(a, b)| a == b);
        if name.is_some_and(|n| {
            same_dir && (n == "samples.json" || crate::output::staged::is_run_output(&n))
        }) {
            input_error!(
                "--trace {} is one of the run's own outputs; name another file (e.g. {}/trace.jsonl)",
                t.display(),
                args.output.display()
            );
        }
    }
    let mut trace = match &args.trace {
        Some(path) => Some(JsonlTrace::create(path)?),
        None => None,
    };
    let result = {
        let mut progress =
            Progress::new(job.steps(), trace.as_mut().map(|t| t as &mut dyn TraceSink));
        let r = job.run(Some(&mut progress));
        progress.finish();
        r
    };
    let outcome = match result {
        Ok(o) => o,
        Err(e) => return Err(trace.as_mut().and_then(JsonlTrace::take_error).unwrap_or(e)),
    };
    let mut records = results::records(&job, &outcome)?;
    let argv = super::invocation::to_argv(&args.flags);
    let written = results::write(&args.output, &job, &outcome, &mut records, &argv, trace)?;
    let reward_calls: u64 = outcome.ledger.reward_calls.values().sum();
    let n = outcome.population.len();
    eprintln!(
        "steerdiff: {n} sample{} → {} ({} model rows, {} reward calls, {:.3} s on {})",
        if n == 1 { "" } else { "s" },
        written.samples.display(),
        outcome.ledger.total_rows(),
        reward_calls,
        outcome.timing.total_s,
        job.parameters().device,
    );
    Ok(job.into_model())
}
