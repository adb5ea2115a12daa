//! `steerdiff eval`: a grid of strategies at matched cost, beside the best CFG at that cost,
//! with standard errors.
//!
//! Every strategy runs on the same model, class, sampler, steps and seeds, with the same
//! particle budget `K` (so best-of-N, FK, CoDe and SVDD all cost `K·T` model rows per output
//! group; plain sampling costs `T`). Each row reports what was spent (model rows per group,
//! reward calls), what was optimised (the steering reward), what was *not* optimised — the
//! **judge**, a classifier that never steers (for mixtures the exact Bayes classifier; for the
//! toy `toy-judge`, a ResNet of another family than the cnn-a guidance classifier) or, for
//! text-to-image models, a held-out reward such as `clip` — and the diversity left (mean
//! pairwise distance between outputs).
//!
//! Rates are means over independent groups with standard errors ([`stats`]). By default the
//! grid also holds the **CFG baseline at matched cost** ([`baseline`]): the best CFG scale,
//! chosen on a separate block of seeds, alone and under every strategy, and each row's paired
//! difference from the best CFG-only row that costs no more.
//!
//! The per-step strategies (`gfcg`, `autoguidance`, `dynamic-cfg`) run one particle per group
//! and are compared at their own NFE (GFCG and autoguidance 2 rows per step, GFCG + CFG 3,
//! dynamic CFG 2 — the rows of CFG): `--cfg 1,2` runs every strategy at each CFG scale;
//! dynamic CFG picks its own scale (`--cfg-candidates`) and runs once. FlowChef and replacement
//! need an image and a mask: their comparison is the inpainting demo
//! ([`crate::cli::toy::inpaint_demo`]).

mod baseline;
mod measure;
pub mod stats;
mod table;

use anyhow::Result;
use clap::Args;
use serde::Serialize;

pub use baseline::{Baseline, SweepPoint};
pub use measure::{mean_pairwise_distance, Block, Comparison, Judge, Row, SecondOpinion};
pub use table::table;

use crate::error::input_error;
use crate::run::device::DEFAULT_DEVICE;
use crate::run::strategy::{EvalUse, PerStepArgs, SteeringFlags, StrategyArgs, StrategyKind};
use crate::run::{Job, PathKind};

/// Flags of `steerdiff eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The model (see `steerdiff list`).
    #[arg(long, value_name = "MODEL")]
    pub model: String,
    /// The Gaussian path a mixture is sampled on.
    #[arg(long, value_enum, default_value_t = PathKind::Vp)]
    pub path: PathKind,
    /// Condition on a class (by name or label); also the evaluation class.
    #[arg(long, value_name = "NAME|LABEL")]
    pub class: Option<String>,
    /// The held-out evaluation class (default: --class).
    #[arg(long, value_name = "NAME|LABEL")]
    pub eval_class: Option<String>,
    /// The prompt (text-to-image models).
    #[arg(long)]
    pub prompt: Option<String>,
    /// The judge, which measures and never steers: one of the model's classifiers (toy:
    /// toy-judge, the default, or toy-eval-classifier; mixtures: bayes), or a held-out reward
    /// spec whose mean is reported (text-to-image models, e.g. clip). `steerdiff list` names
    /// them under JUDGES.
    #[arg(long, value_name = "NAME|SPEC")]
    pub judge: Option<String>,
    /// A second classifier judge: its accuracy and its agreement with --judge are reported
    /// (e.g. toy-eval-classifier beside toy-judge).
    #[arg(long, value_name = "NAME")]
    pub second_judge: Option<String>,
    /// The CLIP model of `clip` and `aesthetic:` rewards and judges (a folder or hub id).
    #[arg(long, value_name = "DIR|ID")]
    pub clip_model: Option<String>,
    /// Steering reward (see `steerdiff list`; default `classifier` on the toy model).
    #[arg(long, value_name = "SPEC")]
    pub reward: Option<String>,
    /// Strategies, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "none,bon,fk,code,svdd")]
    pub strategies: Vec<StrategyKind>,
    /// Particle budget K per output group (N for best-of-N / CoDe / SVDD).
    #[arg(long, default_value_t = 4)]
    pub budget: usize,
    /// Sampler (default: the path's; particle strategies use η = 1).
    #[arg(long)]
    pub sampler: Option<String>,
    /// Solver steps.
    #[arg(long, default_value_t = 30)]
    pub steps: usize,
    /// CFG scales (1 = off), comma-separated: every strategy runs at each.
    #[arg(long, value_delimiter = ',', default_values_t = [1.0], allow_negative_numbers = true)]
    pub cfg: Vec<f64>,
    /// Output groups per strategy.
    #[arg(short = 'n', long = "num", default_value_t = 200)]
    pub num: usize,
    /// Seed of group 0.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The device: auto (the first GPU this binary was built for, else the CPU), cpu, cuda,
    /// cuda:N, metal, metal:N.
    #[arg(long, value_name = "DEVICE", default_value = DEFAULT_DEVICE)]
    pub device: String,
    /// Weight dtype f32, f16 or bf16 (default: the model's own on the device).
    #[arg(long, value_name = "DTYPE")]
    pub dtype: Option<String>,
    /// CFG scales the matched-cost baseline is chosen from (plain sampling on the tuning
    /// block; the best by the judge, or by the steering reward without one).
    #[arg(long, value_delimiter = ',', default_values_t = [1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.0])]
    pub baseline_cfg: Vec<f64>,
    /// Leave out the CFG baseline and the strategies on top of it.
    #[arg(long)]
    pub no_baseline: bool,
    /// Groups of the tuning block the baseline scale is chosen on.
    #[arg(long, default_value_t = 100)]
    pub tune_num: usize,
    /// Seed of the tuning block's first group (default: --seed + -n, the groups right after
    /// the test block, so no test seed is tuned on).
    #[arg(long)]
    pub tune_seed: Option<u64>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Each strategy's own flags (FK's --lambda, CoDe's --block, …), as `generate` reads them.
    #[command(flatten)]
    pub flags: SteeringFlags,
    /// Settings of the per-step strategies (GFCG, autoguidance, dynamic CFG).
    #[command(flatten)]
    pub per_step: PerStepArgs,
}

/// Everything `steerdiff eval` measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The judge (None: the rows are compared on the steering reward).
    pub judge: Option<String>,
    /// What the judge's values are: `accuracy` or `score`.
    pub judge_measures: Option<String>,
    /// The second judge, when asked for.
    pub second_judge: Option<String>,
    /// The tuned CFG baseline (None with `--no-baseline`).
    pub baseline: Option<Baseline>,
    /// The rows, strategy by strategy, each at every CFG scale it ran at.
    pub rows: Vec<Row>,
}

/// Runs the grid and prints it.
pub fn execute(args: &EvalArgs) -> Result<()> {
    let report = run(args)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", table(&report));
    }
    Ok(())
}

/// Runs the tuning sweep (unless `--no-baseline`) and every strategy of the grid.
pub fn run(args: &EvalArgs) -> Result<Report> {
    check(args)?;
    let toy = args.model == "toy" || args.model == "toy-weak";
    let reward_spec = args
        .reward
        .clone()
        .or_else(|| toy.then(|| "classifier".to_string()));
    let test = Block {
        seed: args.seed,
        groups: args.num,
    };
    let (judge, second, conditional) = judges(args, reward_spec.as_deref())?;
    let judges = (judge.as_ref(), second.as_ref());
    let baseline = if args.no_baseline {
        None
    } else if !conditional {
        eprintln!(
            "eval: no CFG baseline: the run is unconditional (no --class or --prompt), and CFG \
             guides towards a condition"
        );
        None
    } else {
        Some(baseline::tune(
            args,
            reward_spec.as_deref(),
            judge.as_ref(),
        )?)
    };
    let mut scales = args.cfg.clone();
    if let Some(b) = &baseline {
        scales.push(b.cfg);
    }
    scales.sort_by(f64::total_cmp);
    scales.dedup();
    let mut kinds = args.strategies.clone();
    if baseline.is_some() && !kinds.contains(&StrategyKind::None) {
        kinds.insert(0, StrategyKind::None);
    }
    let mut rows = Vec::new();
    for &kind in &kinds {
        for (i, &cfg) in scales.iter().enumerate() {
            // A strategy that picks its own CFG scale runs once; plain sampling outside the
            // grid runs only as the baseline.
            let wanted = if kind.def().eval == EvalUse::Once {
                i == 0
            } else {
                args.cfg.contains(&cfg) && args.strategies.contains(&kind)
                    || baseline.as_ref().is_some_and(|b| b.cfg == cfg)
            };
            if wanted {
                let row = measure::run_one(args, kind, cfg, test, reward_spec.as_deref(), judges)?;
                eprintln!(
                    "eval: {} at CFG {}: done in {:.1} s",
                    row.strategy,
                    row.cfg.map_or("auto".to_string(), |c| c.to_string()),
                    row.seconds
                );
                rows.push(row);
            }
        }
    }
    if let Some(b) = &baseline {
        baseline::compare(&mut rows, b.cfg);
    }
    Ok(Report {
        judge: judge.as_ref().map(|j| j.name().to_string()),
        judge_measures: judge.as_ref().map(|j| j.measures().to_string()),
        second_judge: second.as_ref().map(|j| j.name().to_string()),
        baseline,
        rows,
    })
}

/// The flags' own consistency.
fn check(args: &EvalArgs) -> Result<()> {
    if args.strategies.is_empty() {
        input_error!("--strategies is empty");
    }
    if args.budget == 0 {
        input_error!("--budget must be at least 1 (the particles or candidates per output)");
    }
    if args.num == 0 {
        input_error!("-n must be at least 1 (the output groups per strategy)");
    }
    if args.cfg.is_empty() {
        input_error!("--cfg is empty; give one or more scales, e.g. 1,2");
    }
    if !args.no_baseline && (args.baseline_cfg.is_empty() || args.tune_num == 0) {
        input_error!(
            "the CFG baseline needs scales (--baseline-cfg) and groups (--tune-num ≥ 1); \
             or leave it out with --no-baseline"
        );
    }
    if let (false, Some(t)) = (args.no_baseline, args.tune_seed) {
        let (test, tune) = (
            args.seed..args.seed.saturating_add(args.num as u64),
            t..t.saturating_add(args.tune_num as u64),
        );
        if test.start < tune.end && tune.start < test.end {
            input_error!(
                "--tune-seed {t}: the tuning groups (seeds {}–{}) overlap the test groups \
                 (seeds {}–{}); the CFG scale must be chosen on other seeds (the default, \
                 --seed + -n, follows the test block)",
                tune.start,
                tune.end - 1,
                test.start,
                test.end - 1
            );
        }
    }
    for &kind in &args.strategies {
        if let EvalUse::Refused(why) = kind.def().eval {
            input_error!("--strategies {}: {why}", kind.cli_name());
        }
    }
    Ok(())
}

/// The judge and the second judge, checked against the model (loaded once here), and whether
/// the run is conditional (only then has CFG something to guide towards).
fn judges(
    args: &EvalArgs,
    reward_spec: Option<&str>,
) -> Result<(Option<Judge>, Option<Judge>, bool)> {
    let block = Block {
        seed: args.seed,
        groups: 1,
    };
    let opts = measure::options(args, 1.0, block, StrategyArgs::default())?;
    let job = Job::load(&args.model, &opts)?;
    let judges = job.model().judges();
    let listed = || {
        if judges.is_empty() {
            "none".to_string()
        } else {
            judges.join(", ")
        }
    };
    let class = measure::eval_class(args, &job)?;
    let classifier = |name: &str, flag: &str| -> Result<Judge> {
        match class {
            Some(class) => Ok(Judge::Classifier {
                name: name.to_string(),
                class,
            }),
            None => input_error!(
                "{flag} {name} judges the evaluation class: give --class or --eval-class"
            ),
        }
    };
    let judge = match args.judge.as_deref() {
        Some(name) if judges.contains(&name) => Some(classifier(name, "--judge")?),
        Some(spec) if Some(spec) == reward_spec => input_error!(
            "--judge {spec} is the reward that steers; a judge must be held out (this model's \
             judges: {}; or another reward)",
            listed()
        ),
        Some(spec) => match job.reward(spec) {
            Ok(_) => Some(Judge::Reward(spec.to_string())),
            Err(e) => input_error!(
                "--judge {spec} is neither a judge of this model ({}) nor a reward: {e}",
                listed()
            ),
        },
        None => match (judges.first(), class) {
            (Some(name), Some(_)) => Some(classifier(name, "the judge")?),
            _ => None,
        },
    };
    let second = match args.second_judge.as_deref() {
        Some(name) if judges.contains(&name) => {
            if !matches!(judge, Some(Judge::Classifier { .. })) {
                input_error!("--second-judge compares two classifier judges; --judge is not one");
            }
            Some(classifier(name, "--second-judge")?)
        }
        Some(name) => input_error!(
            "--second-judge {name} is not a judge of this model; its judges: {}",
            listed()
        ),
        None => None,
    };
    let conditional = job.condition() != steerdiff_guidance::Condition::Null;
    Ok((judge, second, conditional))
}
