//! The CFG baseline at matched cost.
//!
//! Raising the CFG scale alone matches most guidance methods ("Guidance Matters", arXiv
//! 2602.22570), so a steering result means little unless it beats the best CFG setting that
//! costs no more. Every CFG-only configuration costs `2T` model rows per group (`T` at scale
//! 1), so "the best CFG-only configuration of at most a row's NFE" is one scale, chosen once:
//!
//! 1. **Tuning**: plain sampling at every scale of `--baseline-cfg` on a *separate* block of
//!    seeds (`--tune-seed`, `--tune-num`; by default the groups right after the test block), and
//!    the scale with the highest judge value (the steering reward's mean when there is no
//!    judge) is chosen; ties go to the smaller scale. The test seeds never influence the choice.
//! 2. **Test**: plain sampling at that scale on the test seeds is the baseline row, and every
//!    strategy also runs on top of it (FK + CFG, best-of-N + CFG, GFCG + CFG, …).
//! 3. **Comparison**: every row's judge value minus that of the best CFG-only row of at most
//!    its NFE (the tuned scale when it fits the row's cost, else plain sampling at scale 1), as
//!    a paired difference over the shared seeds ([`super::stats`]).

use anyhow::Result;
use serde::Serialize;

use super::measure::{run_one, Block, Comparison, Judge, Row};
use super::stats::{paired_difference, Estimate};
use super::EvalArgs;
use crate::error::input_error;
use crate::run::strategy::StrategyKind;

/// One scale of the tuning sweep.
#[derive(Debug, Clone, Serialize)]
pub struct SweepPoint {
    /// The CFG scale.
    pub cfg: f64,
    /// Its NFE per group.
    pub nfe_per_group: f64,
    /// The selection value on the tuning block.
    pub value: Estimate,
}

/// The tuned CFG-only baseline.
#[derive(Debug, Clone, Serialize)]
pub struct Baseline {
    /// Seed of the tuning block's first group.
    pub tune_seed: u64,
    /// Groups in the tuning block.
    pub tune_groups: usize,
    /// What chose the scale: `judge NAME` or `reward SPEC`.
    pub selected_by: String,
    /// Every scale tried.
    pub sweep: Vec<SweepPoint>,
    /// The chosen scale.
    pub cfg: f64,
}

/// Runs the sweep on the tuning block and picks the scale.
pub fn tune(args: &EvalArgs, reward_spec: Option<&str>, judge: Option<&Judge>) -> Result<Baseline> {
    let selected_by = match (judge, reward_spec) {
        (Some(j), _) => format!("judge {}", j.name()),
        (None, Some(r)) => format!("reward {r}"),
        (None, None) => input_error!(
            "the CFG baseline is chosen by the judge or the steering reward, and this run has \
             neither: give --judge or --reward, or --no-baseline"
        ),
    };
    let mut scales = args.baseline_cfg.clone();
    if scales.iter().any(|s| !s.is_finite()) {
        input_error!("--baseline-cfg: every scale must be a finite number");
    }
    scales.sort_by(f64::total_cmp);
    scales.dedup();
    let tune = Block {
        seed: args
            .tune_seed
            .unwrap_or(args.seed.saturating_add(args.num as u64)),
        groups: args.tune_num,
    };
    let mut sweep = Vec::new();
    for &cfg in &scales {
        let row = run_one(
            args,
            StrategyKind::None,
            cfg,
            tune,
            reward_spec,
            (judge, None),
        )?;
        let value = row.judged.unwrap_or(row.reward);
        eprintln!(
            "eval: tuning CFG {cfg}: {:.4} ± {:.4} ({} groups)",
            value.mean, value.se, value.groups
        );
        sweep.push(SweepPoint {
            cfg,
            nfe_per_group: row.nfe_per_group,
            value,
        });
    }
    let mut best = &sweep[0];
    for p in &sweep[1..] {
        if p.value.mean > best.value.mean || (best.value.mean.is_nan() && !p.value.mean.is_nan()) {
            best = p;
        }
    }
    Ok(Baseline {
        tune_seed: tune.seed,
        tune_groups: tune.groups,
        selected_by,
        cfg: best.cfg,
        sweep,
    })
}

/// Marks the baseline row (`none` at `cfg`) and gives every other row its difference from the
/// best CFG-only row of at most its NFE.
pub fn compare(rows: &mut [Row], cfg: f64) {
    let plain = |r: &Row, c: f64| r.strategy == "none" && r.cfg == Some(c);
    let tuned = rows.iter().position(|r| plain(r, cfg));
    let unguided = rows.iter().position(|r| plain(r, 1.0));
    if let Some(i) = tuned {
        rows[i].cfg_baseline = true;
    }
    let references: Vec<(usize, f64, f64, Vec<Option<f64>>)> = [tuned, unguided]
        .into_iter()
        .flatten()
        .map(|i| {
            let r = &rows[i];
            (
                i,
                r.cfg.unwrap_or(1.0),
                r.nfe_per_group,
                r.per_group.clone(),
            )
        })
        .collect();
    for (i, row) in rows.iter_mut().enumerate() {
        // The tuned scale first: it is the best CFG-only configuration wherever it fits.
        let matched = references
            .iter()
            .find(|(_, _, nfe, _)| *nfe <= row.nfe_per_group + 1e-9);
        row.vs_cfg_baseline = match matched {
            Some((j, c, nfe, values)) if *j != i && !row.per_group.is_empty() => Some(Comparison {
                baseline_cfg: *c,
                baseline_nfe: *nfe,
                difference: paired_difference(&row.per_group, values),
            }),
            _ => None,
        };
    }
}
