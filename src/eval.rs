//! `steerdiff eval`: a grid of strategies at matched cost, one table.
//!
//! Every strategy runs on the same model, class, sampler, steps and seeds, with the same
//! particle budget `K` (so best-of-N, FK, CoDe and SVDD all cost `K·T` model rows per output
//! group; plain sampling costs `T`). Each row reports what was spent (model rows per group,
//! reward calls), what was optimised (the steering reward's mean and max over outputs), what
//! was *not* optimised — a held-out evaluation (for mixtures: the exact Bayes classifier's
//! accuracy for the evaluation class) — and the diversity left (mean pairwise distance between
//! outputs).

use std::time::Instant;

use anyhow::Result;
use clap::{Args, ValueEnum};
use serde::Serialize;
use steerdiff_guidance::{Condition, Outcome};

use crate::error::input_error;
use crate::run::{Job, Model, Options, PathKind};
use crate::strategy::{StrategyArgs, StrategyKind};

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
    /// Steering reward (see `steerdiff list`).
    #[arg(long, value_name = "SPEC")]
    pub reward: String,
    /// Strategies, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "none,bon,fk,code,svdd")]
    pub strategies: Vec<StrategyKind>,
    /// Particle budget K per output group (N for best-of-N / CoDe / SVDD).
    #[arg(long, default_value_t = 4)]
    pub budget: usize,
    /// FK tilt λ.
    #[arg(long, default_value_t = 1.0)]
    pub lambda: f64,
    /// CoDe block size.
    #[arg(long, default_value_t = 5)]
    pub block: usize,
    /// Sampler (default: the path's; particle strategies use η = 1).
    #[arg(long)]
    pub sampler: Option<String>,
    /// Solver steps.
    #[arg(long, default_value_t = 30)]
    pub steps: usize,
    /// CFG scale (1 = off).
    #[arg(long, default_value_t = 1.0)]
    pub cfg: f64,
    /// Output groups per strategy.
    #[arg(short = 'n', long = "num", default_value_t = 200)]
    pub num: usize,
    /// Seed of group 0.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One row of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Strategy name.
    pub strategy: String,
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
    let mut rows = Vec::new();
    for &kind in &args.strategies {
        let strategy = StrategyArgs {
            kind,
            reward: (kind != StrategyKind::None).then(|| args.reward.clone()),
            particles: args.budget,
            lambda: args.lambda,
            block: args.block,
            // Noise search: the most rounds whose pools (1 + 2 + … + 2^(R−1) = 2^R − 1
            // trajectories) fit in the budget K.
            rounds: ((usize::BITS - (args.budget + 1).leading_zeros()) as usize - 1).max(1),
            ..StrategyArgs::default()
        };
        let opts = Options {
            path: args.path,
            class: args.class.clone(),
            sampler: args.sampler.clone(),
            steps: args.steps,
            cfg: args.cfg,
            n: args.num,
            seed: args.seed,
            strategy,
            ..Options::default()
        };
        let job = Job::new(Model::parse(&args.model)?, &opts)?;
        let start = Instant::now();
        let outcome = job.run(None)?;
        let seconds = start.elapsed().as_secs_f64();
        rows.push(measure(args, &job, &outcome, kind, seconds)?);
    }
    Ok(rows)
}

fn measure(
    args: &EvalArgs,
    job: &Job,
    out: &Outcome,
    kind: StrategyKind,
    seconds: f64,
) -> Result<Row> {
    let pop = &out.population;
    let xs: Vec<Vec<f64>> = (0..pop.len())
        .map(|i| Ok(pop.row(i)?.into_iter().map(f64::from).collect()))
        .collect::<Result<_>>()?;
    // The steering reward, re-measured on every output the same way for every strategy.
    let reward = job.reward(&args.reward)?;
    let scores = crate::run::score_final(job, reward.as_ref(), &pop.x, &pop.conds())?;
    let finite: Vec<f64> = scores.iter().copied().filter(|v| v.is_finite()).collect();
    let reward_mean = finite.iter().sum::<f64>() / finite.len().max(1) as f64;
    let reward_max = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let eval_class = match (&args.eval_class, job.condition()) {
        (Some(name), _) => Some(job.class_label(name)?),
        (None, Condition::Class(c)) => Some(c),
        _ => None,
    };
    let eval_accuracy = eval_class
        .map(|c| job.held_out_accuracy(&xs, c))
        .transpose()?;
    Ok(Row {
        strategy: kind
            .to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default(),
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
        "{:<14} {:>9} {:>8} {:>8} {:>10} {:>10} {:>9} {:>9} {:>8}\n",
        "strategy",
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
            "{:<14} {:>9.0} {:>8} {:>8} {:>10.4} {:>10.4} {:>9} {:>9.4} {:>8.2}\n",
            r.strategy,
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
