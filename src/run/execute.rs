//! Running a [`Job`]: the population seeded on the model's device, block by block of
//! groups, through the engine.

use anyhow::Result;
use candle_core::Tensor;
use steerdiff_guidance::{Outcome, Population, TraceSink};
use steerdiff_pipelines::sd::pipeline::noised;

use super::job::Job;
use super::strategy::Built;

impl Job {
    /// Trace lines the run writes (for progress bars): one per step and visit of each block
    /// of groups.
    pub fn steps(&self) -> usize {
        let steps = self.sampler.schedule.points.len().saturating_sub(1);
        steps * self.blocks().len()
    }

    /// The groups sampled together in one batch. A batch-stable model takes them all at once;
    /// a model whose forwards round differently with the batch (text-to-image) samples
    /// `batch_groups` groups at a time (default 1), in blocks fixed by the run-wide group index
    /// (`[kG, (k+1)G)`), so a group's images never depend on which other groups share the
    /// run: shards, merges and re-runs of part of a run reproduce them bit for bit.
    pub(super) fn blocks(&self) -> Vec<std::ops::Range<usize>> {
        let n = self.groups.len();
        if self.model.batch_stable() {
            return std::iter::once(0..n).collect();
        }
        let size = self.parameters.batch_groups.max(1);
        let first = self.first_group();
        let mut out = vec![];
        let mut start = 0;
        while start < n {
            let end = (((first + start) / size + 1) * size - first).min(n);
            out.push(start..end);
            start = end;
        }
        out
    }

    /// Seeds the population (group `g` from seed `S + g`) on the model's device and runs the
    /// schedule, block by block of groups (`Job::blocks`), writing one trace line per step
    /// to `trace` if given (lines of a block carry its `groups`, `[start, end)` of the run,
    /// when the run has more than one block).
    pub fn run(&self, mut trace: Option<&mut dyn TraceSink>) -> Result<Outcome> {
        let blocks = self.blocks();
        let mut parts = Vec::with_capacity(blocks.len());
        for block in &blocks {
            let first = self.first_group();
            let mut tagged = trace.as_deref_mut().map(|sink| BlockTrace {
                sink,
                groups: (blocks.len() > 1).then(|| [first + block.start, first + block.end]),
            });
            parts.push(self.run_block(
                block.clone(),
                tagged.as_mut().map(|t| t as &mut dyn TraceSink),
            )?);
        }
        let outcome = super::keep::apply(concat(parts)?, self.parameters.keep)?;
        self.check_finite(&outcome.population)?;
        Ok(outcome)
    }

    /// Stops a run whose final samples hold NaN or ∞ (non-finite weights, latents or
    /// mixture parameters), rather than writing them as `null`.
    fn check_finite(&self, pop: &Population) -> Result<()> {
        let n = pop.len();
        let flat = pop
            .x
            .flatten_from(1)?
            .to_dtype(candle_core::DType::F32)?
            .to_vec2::<f32>()?;
        let bad: Vec<usize> = (0..n)
            .filter(|&i| flat[i].iter().any(|v| !v.is_finite()))
            .collect();
        if let Some(&first) = bad.first() {
            crate::error::input_error!(
                "`{}` produced non-finite values (NaN or ∞) in {} of {n} final samples (the \
                 first: group {}); its weights, the --init-latents or the mixture's numbers \
                 are non-finite or too large",
                self.model.source(),
                bad.len(),
                self.first_group() + pop.particles[first].group
            );
        }
        Ok(())
    }

    fn run_block(
        &self,
        block: std::ops::Range<usize>,
        trace: Option<&mut dyn TraceSink>,
    ) -> Result<Outcome> {
        let groups = &self.groups[block.clone()];
        let init = self.sampler.schedule.init_noise_sigma;
        if let Built::Search(search) = &self.strategy {
            return Ok(search.run(&self.engine(), groups, init, trace)?);
        }
        let shape = self.model.denoiser().sample_shape();
        let mut pop = Population::new(groups, &shape, init, self.model.device())?;
        match (&self.start, &self.parameters.init_image) {
            // img2img: α·x0 + σ·ε at the schedule's first point (pop.x holds init_σ·ε).
            (Some(x0), Some(_)) => {
                let x0 = x0.repeat((pop.len(), 1, 1, 1))?;
                let eps = pop.x.affine(1.0 / init, 0.0)?;
                pop.x = noised(&x0, &eps, &self.sampler.schedule.points[0])?;
            }
            // Given latents (one per group), scaled by init_noise_sigma as diffusers does.
            (Some(latents), None) => {
                pop.x = latents
                    .narrow(0, self.first_group() + block.start, block.len())?
                    .affine(init, 0.0)?
            }
            (None, _) => {}
        }
        Ok(self.engine().run(pop, trace)?)
    }
}

/// A trace sink that tags every line with the block of groups it belongs to.
struct BlockTrace<'a> {
    sink: &'a mut dyn TraceSink,
    groups: Option<[usize; 2]>,
}

impl TraceSink for BlockTrace<'_> {
    fn record(&mut self, mut line: serde_json::Value) -> steerdiff_guidance::Result<()> {
        if let (Some(g), Some(obj)) = (self.groups, line.as_object_mut()) {
            obj.insert("groups".into(), serde_json::json!(g));
        }
        self.sink.record(line)
    }
}

/// The outcomes of consecutive blocks of groups as one: populations joined in group order,
/// ledgers and times added.
fn concat(mut parts: Vec<Outcome>) -> Result<Outcome> {
    if parts.len() == 1 {
        return Ok(parts.pop().expect("one part"));
    }
    let mut xs = Vec::with_capacity(parts.len());
    let mut particles = vec![];
    let mut ledger = steerdiff_guidance::Ledger::default();
    let mut timing = steerdiff_guidance::Timing::default();
    let mut offset = 0;
    for part in parts {
        let groups = part.population.groups().len();
        xs.push(part.population.x);
        particles.extend(part.population.particles.into_iter().map(|mut p| {
            p.group += offset;
            p
        }));
        offset += groups;
        ledger.absorb(&part.ledger);
        timing.model_s += part.timing.model_s;
        timing.reward_s += part.timing.reward_s;
        timing.decode_s += part.timing.decode_s;
        timing.total_s += part.timing.total_s;
    }
    Ok(Outcome {
        population: Population {
            x: Tensor::cat(&xs, 0)?,
            particles,
            x0: None,
            history: vec![],
            pending: None,
        },
        ledger,
        timing,
    })
}
