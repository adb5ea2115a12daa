//! One run of the grid and what is measured on its outputs: the cost, the steering reward,
//! the judge's verdict (per group, with standard errors), the diversity.

use std::time::Instant;

use anyhow::Result;
use serde::Serialize;
use steerdiff_guidance::{Condition, Outcome};

use super::stats::{estimate, group_means, Estimate};
use super::EvalArgs;
use crate::error::input_error;
use crate::run::device::parse_device;
use crate::run::strategy::{EvalUse, RewardUse, StrategyArgs, StrategyKind};
use crate::run::{Job, Options};

/// What measures the outputs without ever steering them.
#[derive(Debug, Clone, PartialEq)]
pub enum Judge {
    /// A classifier of the model's family ([`steerdiff_pipelines::model::Model::judges`]):
    /// an output scores 1 when it lands in `class`.
    Classifier {
        /// The judge's name.
        name: String,
        /// The evaluation class.
        class: u32,
    },
    /// A held-out reward (text-to-image models: `clip`, `aesthetic:…`): an output scores its
    /// reward.
    Reward(String),
}

impl Judge {
    /// Its name or reward spec.
    pub fn name(&self) -> &str {
        match self {
            Judge::Classifier { name, .. } | Judge::Reward(name) => name,
        }
    }

    /// What its value is: `accuracy` or `score`.
    pub fn measures(&self) -> &'static str {
        match self {
            Judge::Classifier { .. } => "accuracy",
            Judge::Reward(_) => "score",
        }
    }
}

/// A second classifier judge, beside the first.
#[derive(Debug, Clone, Serialize)]
pub struct SecondOpinion {
    /// Its name.
    pub judge: String,
    /// Its accuracy over groups.
    pub accuracy: Estimate,
    /// Fraction of outputs both judges put in the same class.
    pub agreement: f64,
}

/// A row's difference from the CFG-only baseline of at most its cost, paired over groups.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// The baseline row: `none` at this CFG scale.
    pub baseline_cfg: f64,
    /// The baseline's NFE per group.
    pub baseline_nfe: f64,
    /// This row's judge value minus the baseline's.
    pub difference: Estimate,
}

/// One row of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Strategy name.
    pub strategy: String,
    /// CFG scale of the run (`None` for dynamic CFG, which picks its own each step).
    pub cfg: Option<f64>,
    /// Whether this row is the CFG-only baseline (`none` at the scale chosen on the tuning
    /// block).
    pub cfg_baseline: bool,
    /// Model rows (NFE) per output group.
    pub nfe_per_group: f64,
    /// Reward calls in the whole run.
    pub reward_calls: u64,
    /// Output groups (independent seeds).
    pub groups: usize,
    /// Outputs measured (every final particle).
    pub outputs: usize,
    /// Mean steering reward over groups.
    pub reward: Estimate,
    /// Mean steering reward over outputs (as `reward.mean` when groups have one output).
    pub reward_mean: f64,
    /// Max steering reward over outputs.
    pub reward_max: f64,
    /// The judge's value over groups: accuracy in the evaluation class, or the held-out
    /// reward's mean (None without a judge).
    pub judged: Option<Estimate>,
    /// `judged.mean` for a classifier judge.
    pub eval_accuracy: Option<f64>,
    /// The second judge's accuracy and agreement, when one is asked for.
    pub second_judge: Option<SecondOpinion>,
    /// The difference from the matched-cost CFG baseline (None for the baseline itself, and
    /// when no CFG-only row costs at most this row's NFE).
    pub vs_cfg_baseline: Option<Comparison>,
    /// Mean pairwise Euclidean distance between outputs.
    pub diversity: f64,
    /// Wall time of the run, seconds.
    pub seconds: f64,
    /// The judge's value per group, or the steering reward's without a judge (for paired
    /// differences).
    #[serde(skip)]
    pub per_group: Vec<Option<f64>>,
}

/// The seeds a run samples: `groups` groups from `seed`.
#[derive(Debug, Clone, Copy)]
pub struct Block {
    /// Seed of group 0.
    pub seed: u64,
    /// Number of groups.
    pub groups: usize,
}

/// Runs `kind` at CFG scale `cfg` (dynamic CFG: its own scales) on the groups of `block`
/// and measures it.
pub fn run_one(
    args: &EvalArgs,
    kind: StrategyKind,
    cfg: f64,
    block: Block,
    reward_spec: Option<&str>,
    judges: (Option<&Judge>, Option<&Judge>),
) -> Result<Row> {
    let own_cfg = kind.def().eval == EvalUse::Once;
    if kind.def().reward == RewardUse::Required && reward_spec.is_none() {
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
    let opts = options(args, if own_cfg { 1.0 } else { cfg }, block, strategy)?;
    let job = Job::load(&args.model, &opts)?;
    let start = Instant::now();
    let outcome = job.run(None)?;
    let seconds = start.elapsed().as_secs_f64();
    let cfg = (!own_cfg).then_some(cfg);
    measure(
        &job,
        &outcome,
        kind,
        cfg,
        block,
        reward_spec,
        judges,
        seconds,
    )
}

/// The run options of one grid cell (also used to load the model for choosing its judge).
pub fn options(args: &EvalArgs, cfg: f64, block: Block, strategy: StrategyArgs) -> Result<Options> {
    Ok(Options {
        path: args.path,
        class: args.class.clone(),
        prompt: args.prompt.clone(),
        clip_model: args.clip_model.clone(),
        sampler: args.sampler.clone(),
        steps: Some(args.steps),
        cfg: Some(cfg),
        device: parse_device(&args.device)?,
        dtype: args
            .dtype
            .as_deref()
            .map(steerdiff_pipelines::sd::WeightDType::parse)
            .transpose()?,
        n: block.groups,
        seed: block.seed,
        strategy,
        // Every final particle is an output, as the tables in docs/ were measured.
        keep: crate::run::Keep::All,
        ..Options::default()
    })
}

/// The judge's value for each output, and (for a classifier) the class it assigned.
fn judge_outputs(
    job: &Job,
    judge: &Judge,
    out: &Outcome,
    xs: &[Vec<f64>],
) -> Result<(Vec<f64>, Vec<u32>)> {
    match judge {
        Judge::Classifier { name, class } => {
            let classes = job.model().judge_classes(name, xs)?;
            let hits = classes
                .iter()
                .map(|c| if c == class { 1.0 } else { 0.0 })
                .collect();
            Ok((hits, classes))
        }
        Judge::Reward(spec) => {
            let reward = job.reward(spec)?;
            let pop = &out.population;
            Ok((
                crate::run::score_final(reward.as_ref(), &pop.x, &pop.conds())?,
                Vec::new(),
            ))
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn measure(
    job: &Job,
    out: &Outcome,
    kind: StrategyKind,
    cfg: Option<f64>,
    block: Block,
    reward_spec: Option<&str>,
    (judge, second): (Option<&Judge>, Option<&Judge>),
    seconds: f64,
) -> Result<Row> {
    let pop = &out.population;
    let groups: Vec<usize> = pop.particles.iter().map(|p| p.group).collect();
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
    let (reward_mean, reward_max) = if finite.is_empty() {
        (f64::NAN, f64::NAN)
    } else {
        (
            finite.iter().sum::<f64>() / finite.len() as f64,
            finite.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        )
    };
    let (per_group, classes) = match judge {
        Some(j) => {
            let (values, classes) = judge_outputs(job, j, out, &xs)?;
            (group_means(&values, &groups), classes)
        }
        None => (Vec::new(), Vec::new()),
    };
    let judged = judge.map(|_| estimate(per_group.iter().flatten().copied()));
    let reward_per_group = group_means(&scores, &groups);
    // Without a judge, comparisons are made on the steering reward.
    let per_group = if judge.is_some() {
        per_group
    } else {
        reward_per_group.clone()
    };
    let second_judge = match (judge, second) {
        (Some(Judge::Classifier { .. }), Some(s @ Judge::Classifier { name, .. })) => {
            let (values, other) = judge_outputs(job, s, out, &xs)?;
            let agree = classes.iter().zip(&other).filter(|(a, b)| a == b).count();
            Some(SecondOpinion {
                judge: name.clone(),
                accuracy: estimate(group_means(&values, &groups).into_iter().flatten()),
                agreement: agree as f64 / other.len().max(1) as f64,
            })
        }
        _ => None,
    };
    Ok(Row {
        strategy: kind.cli_name().to_string(),
        cfg,
        cfg_baseline: false,
        nfe_per_group: out.ledger.total_rows() as f64 / block.groups as f64,
        reward_calls: out.ledger.reward_calls.values().sum(),
        groups: block.groups,
        outputs: xs.len(),
        reward: estimate(reward_per_group.into_iter().flatten()),
        reward_mean,
        reward_max,
        eval_accuracy: match judge {
            Some(Judge::Classifier { .. }) => judged.map(|e| e.mean),
            _ => None,
        },
        judged,
        second_judge,
        vs_cfg_baseline: None,
        diversity: mean_pairwise_distance(&xs),
        seconds,
        per_group,
    })
}

/// The class a classifier judge checks: `--eval-class`, else the conditioning class.
pub fn eval_class(args: &EvalArgs, job: &Job) -> Result<Option<u32>> {
    Ok(match (&args.eval_class, job.condition()) {
        (Some(name), _) => Some(job.model().class(name)?.0),
        (None, Condition::Class(c)) => Some(c),
        _ => None,
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
