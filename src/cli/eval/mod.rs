//! `steerdiff eval`: a grid of strategies at matched cost, one table.
//!
//! Every strategy runs on the same model, class, sampler, steps and seeds, with the same
//! particle budget `K` (so best-of-N, FK, CoDe and SVDD all cost `K·T` model rows per output
//! group; plain sampling costs `T`). Each row reports what was spent (model rows per group,
//! reward calls), what was optimised (the steering reward's mean and max over outputs), what
//! was *not* optimised — a held-out evaluation (for mixtures: the exact Bayes classifier's
//! accuracy for the evaluation class) — and the diversity left (mean pairwise distance between
//! outputs).
//!
//! The per-step strategies (`gfcg`, `autoguidance`, `dynamic-cfg`) run one particle per group
//! and are compared at their own NFE (GFCG and autoguidance 2 rows per step, GFCG + CFG 3,
//! dynamic CFG 2 — the rows of CFG): `--cfg 1,2` runs every strategy at each CFG scale, so one
//! grid holds conditional, CFG, GFCG, GFCG + CFG and autoguidance; dynamic CFG picks its own
//! scale (`--cfg-candidates`) and runs once. FlowChef and replacement need an image and a mask:
//! their comparison is the inpainting demo ([`crate::cli::toy::inpaint_demo`]).

use std::time::Instant;

use anyhow::Result;
use clap::Args;
use serde::Serialize;
use steerdiff_guidance::{Condition, Outcome};

use crate::error::input_error;
use crate::run::device::{parse_device, DEFAULT_DEVICE};
use crate::run::strategy::{
    EvalUse, PerStepArgs, RewardUse, SteeringFlags, StrategyArgs, StrategyKind,
};
use crate::run::{Job, Options, PathKind};

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

/// One row of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Strategy name.
    pub strategy: String,
    /// CFG scale of the run (`None` for dynamic CFG, which picks its own each step).
    pub cfg: Option<f64>,
    /// Model rows (NFE) per output group.
    pub nfe_per_group: f64,
    /// Reward calls in the whole run.
    pub reward_calls: u64,
    /// Outputs measured.
    pub outputs: usize,
    /// Mean steering reward over outputs.
    pub reward_mean: f64,
    /// Max steering reward over outputs.
    pub reward_max: f64,
    /// Held-out evaluation: fraction of outputs in the evaluation class (None without one).
    pub eval_accuracy: Option<f64>,
    /// Mean pairwise Euclidean distance between outputs.
    pub diversity: f64,
    /// Wall time of the run, seconds.
    pub seconds: f64,
}

/// Runs the grid and prints it.
pub fn execute(args: &EvalArgs) -> Result<()> {
    let rows = run_grid(args)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", table(&rows));
    }
    Ok(())
}

/// Runs every strategy of the grid.
pub fn run_grid(args: &EvalArgs) -> Result<Vec<Row>> {
    if args.strategies.is_empty() {
        input_error!("--strategies is empty");
    }
    if args.budget == 0 {
        input_error!("--budget must be at least 1 (the particles or candidates per output)");
    }
    if args.cfg.is_empty() {
        input_error!("--cfg is empty; give one or more scales, e.g. 1,2");
    }
    for &kind in &args.strategies {
        if let EvalUse::Refused(why) = kind.def().eval {
            input_error!("--strategies {}: {why}", kind.cli_name());
        }
    }
    let toy = args.model == "toy" || args.model == "toy-weak";
    let reward_spec = args
        .reward
        .clone()
        .or_else(|| toy.then(|| "classifier".to_string()));
    let mut rows = Vec::new();
    for (i, &cfg) in args.cfg.iter().enumerate() {
        for &kind in &args.strategies {
            // A strategy that picks its own CFG scale runs once, not at every --cfg.
            if i > 0 && kind.def().eval == EvalUse::Once {
                continue;
            }
            rows.push(run_one(args, kind, cfg, reward_spec.as_deref())?);
        }
    }
    Ok(rows)
}

/// One row: `kind` at CFG scale `cfg` (dynamic CFG: its own scales).
fn run_one(
    args: &EvalArgs,
    kind: StrategyKind,
    cfg: f64,
    reward_spec: Option<&str>,
) -> Result<Row> {
    let own_cfg = kind.def().eval == EvalUse::Once;
    let needs_reward = kind.def().reward == RewardUse::Required;
    if needs_reward && reward_spec.is_none() {
        input_error!(
            "--strategies {} needs --reward SPEC (see `steerdiff list`)",
            kind.cli_name()
        );
    }
    let strategy = StrategyArgs {
        kind,
        // A strategy with an optional reward (dynamic CFG's evaluator) takes --reward only
        // when one is given explicitly.
        reward: match kind.def().reward {
            RewardUse::Required => reward_spec.map(str::to_string),
            RewardUse::Optional => args.reward.clone(),
            RewardUse::Unused => None,
        },
        per_step: args.per_step.clone(),
        particles: args.budget,
        flags: args.flags.clone(),
        // Noise search: the most rounds whose pools (1 + 2 + … + 2^(R−1) = 2^R − 1
        // trajectories) fit in the budget K.
        rounds: ((usize::BITS - (args.budget + 1).leading_zeros()) as usize - 1).max(1),
        ..StrategyArgs::default()
    };
    let opts = Options {
        path: args.path,
        class: args.class.clone(),
        sampler: args.sampler.clone(),
        steps: Some(args.steps),
        cfg: Some(if own_cfg { 1.0 } else { cfg }),
        device: parse_device(&args.device)?,
        dtype: args
            .dtype
            .as_deref()
            .map(steerdiff_pipelines::sd::WeightDType::parse)
            .transpose()?,
        n: args.num,
        seed: args.seed,
        strategy,
        // Every final particle is an output, as the tables in docs/ were measured.
        keep: crate::run::Keep::All,
        ..Options::default()
    };
    let job = Job::load(&args.model, &opts)?;
    let start = Instant::now();
    let outcome = job.run(None)?;
    let seconds = start.elapsed().as_secs_f64();
    let cfg = (!own_cfg).then_some(cfg);
    measure(args, &job, &outcome, kind, cfg, reward_spec, seconds)
}

fn measure(
    args: &EvalArgs,
    job: &Job,
    out: &Outcome,
    kind: StrategyKind,
    cfg: Option<f64>,
    reward_spec: Option<&str>,
    seconds: f64,
) -> Result<Row> {
    let pop = &out.population;
    let xs: Vec<Vec<f64>> = (0..pop.len())
        .map(|i| Ok(pop.row(i)?.into_iter().map(f64::from).collect()))
        .collect::<Result<_>>()?;
    // The steering reward, re-measured on every output the same way for every strategy.
    let scores = match reward_spec {
        Some(spec) => {
            let reward = job.reward(spec)?;
            crate::run::score_final(reward.as_ref(), &pop.x, &pop.conds())?
        }
        None => Vec::new(),
    };
    let finite: Vec<f64> = scores.iter().copied().filter(|v| v.is_finite()).collect();
    let reward_mean = finite.iter().sum::<f64>() / finite.len().max(1) as f64;
    let reward_max = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (reward_mean, reward_max) = if finite.is_empty() {
        (f64::NAN, f64::NAN)
    } else {
        (reward_mean, reward_max)
    };
    let eval_class = match (&args.eval_class, job.condition()) {
        (Some(name), _) => Some(job.model().class(name)?.0),
        (None, Condition::Class(c)) => Some(c),
        _ => None,
    };
    let eval_accuracy = eval_class
        .map(|c| job.model().held_out_accuracy(&xs, c))
        .transpose()?
        .flatten();
    Ok(Row {
        strategy: kind.cli_name().to_string(),
        cfg,
        nfe_per_group: out.ledger.total_rows() as f64 / args.num as f64,
        reward_calls: out.ledger.reward_calls.values().sum(),
        outputs: xs.len(),
        reward_mean,
        reward_max,
        eval_accuracy,
        diversity: mean_pairwise_distance(&xs),
        seconds,
    })
}

/// Mean Euclidean distance over all pairs (over the first 1,000 outputs).
pub fn mean_pairwise_distance(xs: &[Vec<f64>]) -> f64 {
    let xs = &xs[..xs.len().min(1000)];
    let (mut sum, mut n) = (0.0, 0usize);
    for i in 0..xs.len() {
        for j in i + 1..xs.len() {
            sum += xs[i]
                .iter()
                .zip(&xs[j])
                .map(|(a, b)| (a - b).powi(2))
                .sum::<f64>()
                .sqrt();
            n += 1;
        }
    }
    if n == 0 {
        0.0
    } else {
        sum / n as f64
    }
}

/// The grid as an aligned text table.
pub fn table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<14} {:>5} {:>9} {:>8} {:>8} {:>10} {:>10} {:>9} {:>9} {:>8}\n",
        "strategy",
        "CFG",
        "NFE/group",
        "rewards",
        "outputs",
        "reward",
        "max",
        "eval acc",
        "diversity",
        "seconds"
    );
    for r in rows {
        out += &format!(
            "{:<14} {:>5} {:>9.0} {:>8} {:>8} {:>10.4} {:>10.4} {:>9} {:>9.4} {:>8.2}\n",
            r.strategy,
            r.cfg
                .map(|c| format!("{c}"))
                .unwrap_or_else(|| "auto".into()),
            r.nfe_per_group,
            r.reward_calls,
            r.outputs,
            r.reward_mean,
            r.reward_max,
            r.eval_accuracy
                .map(|a| format!("{a:.3}"))
                .unwrap_or_else(|| "-".into()),
            r.diversity,
            r.seconds
        );
    }
    out
}
