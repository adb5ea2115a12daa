//! Which final particles a run keeps ([`Keep`]): the best of each group by its final reward
//! — what the FK reference implementation returns, and what best-of-N, CoDe, SVDD and
//! DSearch end with anyway — or the whole population (`--keep all`).

use anyhow::Result;
use serde::Serialize;
use steerdiff_guidance::{Outcome, Population};

/// Which final particles a run keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Keep {
    /// The particle of each group with the highest final reward (the first on ties, or
    /// when no particle has a reward).
    #[default]
    Best,
    /// Every particle.
    All,
}

/// The index of each group's best particle in `pop`.
pub fn best_of_groups(pop: &Population) -> Vec<usize> {
    pop.groups()
        .into_iter()
        .map(|range| {
            let score = |i: usize| pop.particles[i].reward.filter(|r| !r.is_nan());
            range
                .clone()
                .fold(range.start, |best, i| match (score(i), score(best)) {
                    (Some(r), Some(b)) if r > b => i,
                    (Some(_), None) => i,
                    _ => best,
                })
        })
        .collect()
}

/// The outcome with only the particles `keep` selects (the ledger and times unchanged: the
/// dropped particles were paid for).
pub fn apply(outcome: Outcome, keep: Keep) -> Result<Outcome> {
    let pop = &outcome.population;
    if keep == Keep::All || pop.groups().iter().all(|g| g.len() == 1) {
        return Ok(outcome);
    }
    let best = best_of_groups(pop);
    Ok(Outcome {
        population: pop.gather(&best, 0)?,
        ..outcome
    })
}
