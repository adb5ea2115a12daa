//! `samples.json` (one schema for every model; see `docs/samples-json.md`) and `timing.json`.

use anyhow::Result;
use serde::Serialize;
use steerdiff_guidance::{Population, Timing};

/// One final sample, as recorded in `samples.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SampleRecord {
    /// Group index within this run (`0..n`).
    pub group: usize,
    /// Particle index within its group.
    pub particle: usize,
    /// The group's seed (`--seed` + group).
    pub seed: u64,
    /// Its image file in the output folder (image models).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The sample (for latent models, its final latents).
    pub x: Vec<f32>,
    /// The particle's importance log-weight (`null` if not finite).
    pub log_weight: f64,
    /// The last reward measured for it, `null` if none was.
    pub reward: Option<f64>,
    /// Its `--eval-reward` score (reported, never steered by); absent without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_reward: Option<f64>,
}

/// Every particle of the final population, in population order (groups contiguous);
/// `first_group` is the run-wide index of the population's group 0 (non-zero for later
/// shards).
pub fn samples(pop: &Population, first_group: usize) -> Result<Vec<SampleRecord>> {
    let mut out = Vec::with_capacity(pop.len());
    for range in pop.groups() {
        for i in range.clone() {
            let p = &pop.particles[i];
            out.push(SampleRecord {
                group: first_group + p.group,
                particle: i - range.start,
                seed: p.seed,
                image: None,
                x: pop.row(i)?,
                log_weight: p.log_weight,
                reward: p.reward,
                eval_reward: None,
            });
        }
    }
    Ok(out)
}

/// The `samples.json` layout for any serialisable samples, ledger and parameters (also used
/// by `steerdiff merge` on records read back as JSON).
pub fn samples_text(
    samples: &[impl Serialize],
    ledger: &impl Serialize,
    parameters: &impl Serialize,
) -> Result<String> {
    let mut s = String::from("{\n  \"samples\": [");
    for (i, r) in samples.iter().enumerate() {
        s.push_str(if i == 0 { "\n    " } else { ",\n    " });
        s.push_str(&serde_json::to_string(r)?);
    }
    s.push_str(if samples.is_empty() {
        "],\n"
    } else {
        "\n  ],\n"
    });
    s.push_str("  \"ledger\": ");
    s.push_str(&serde_json::to_string(ledger)?);
    s.push_str(",\n  \"parameters\": ");
    s.push_str(&serde_json::to_string(parameters)?);
    s.push_str("\n}\n");
    Ok(s)
}

/// The text of `timing.json` (wall times; differs between identical runs).
pub fn timing_json(timing: &Timing) -> Result<String> {
    #[derive(Serialize)]
    struct Record<'a> {
        #[serde(flatten)]
        timing: &'a Timing,
        other_s: f64,
        /// The process's peak resident memory so far (Linux), bytes.
        peak_rss_bytes: Option<u64>,
    }
    let mut s = serde_json::to_string_pretty(&Record {
        timing,
        other_s: timing.other_s(),
        peak_rss_bytes: super::memory::peak_rss_bytes(),
    })?;
    s.push('\n');
    Ok(s)
}
