//! The sampling state: a population of particles moving through the schedule together.
//!
//! The latents of all `P` particles form one tensor `[P, …]` (one batched model call), and every
//! other thing a particle owns — its group, seed, lineage, condition, log-weight, reward,
//! strategy scalars, and its rows of the solver history — sits at the same index. Every
//! population operation is a gather by index over *all* of these, so resampling, pruning and
//! branching can never leave a field behind. There is no state anywhere else (diffusers'
//! `_step_index` is exactly the hidden state particle methods cannot have).
//!
//! Particles of one group (one output image, or one set of K FK particles) are contiguous.

use std::collections::BTreeMap;
use std::ops::Range;

use candle_core::{Device, Tensor};

use crate::condition::Condition;
use crate::noise::Noise;
use crate::prediction::Prediction;
use crate::rng::{child_lineage, Domain, Stream, StreamKey};
use crate::{Error, Result};

/// Everything one particle owns besides its rows of the population tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct Particle {
    /// The independent problem this particle belongs to (an output image / sample set).
    pub group: usize,
    /// The group's noise seed (`--seed` + group index).
    pub seed: u64,
    /// Lineage id: the address of this particle's noise streams. Copies get fresh ids.
    pub lineage: u64,
    /// Index, within the population before the last gather, of the particle this one copies.
    pub ancestor: usize,
    /// What the model is conditioned on for this particle.
    pub cond: Condition,
    /// Accumulated importance log-weight (0 unless a strategy weights particles).
    pub log_weight: f64,
    /// The last reward a strategy measured for this particle.
    pub reward: Option<f64>,
    /// Scalars strategies keep per particle (e.g. FK's previous reward); gathered with it.
    pub state: BTreeMap<&'static str, f64>,
}

/// How a group starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupSpec {
    /// The group's noise seed.
    pub seed: u64,
    /// Its condition.
    pub cond: Condition,
    /// Number of particles.
    pub particles: usize,
}

/// `P` particles and their tensors.
#[derive(Debug, Clone)]
pub struct Population {
    /// Current states `x_t`, shape `[P, …]`.
    pub x: Tensor,
    /// Per-particle scalars, `P` of them.
    pub particles: Vec<Particle>,
    /// The guided `x̂0` of the last step (at the state before that step's transition), `[P, …]`.
    pub x0: Option<Tensor>,
    /// Solver history: earlier guided `x̂0`, most recent first, each `[P, …]`.
    pub history: Vec<Tensor>,
    /// The guided prediction at the current state for the next step, when a strategy already
    /// computed it (a look-ahead); the engine uses it instead of evaluating the model again.
    pub pending: Option<Prediction>,
}

impl Population {
    /// Draws the initial states `x_T = init_sigma·ε`, each particle from its own stream
    /// `(seed, lineage, 0, Init)`. Particle `i` of a group has lineage `i`.
    pub fn new(
        groups: &[GroupSpec],
        sample_shape: &[usize],
        init_sigma: f64,
        device: &Device,
    ) -> Result<Self> {
        if groups.iter().any(|g| g.particles == 0) {
            return Err(Error::InvalidArgument(
                "a group needs at least one particle (K ≥ 1)".into(),
            ));
        }
        let particles = Self::fresh_particles(groups);
        if particles.is_empty() {
            return Err(Error::InvalidArgument("nothing to sample (n = 0)".into()));
        }
        let numel: usize = sample_shape.iter().product();
        let mut data = Vec::with_capacity(particles.len() * numel);
        for p in &particles {
            let key = StreamKey {
                seed: p.seed,
                lineage: p.lineage,
                step: 0,
                domain: Domain::Init,
            };
            data.extend(key.normals(numel));
        }
        let mut shape = vec![particles.len()];
        shape.extend_from_slice(sample_shape);
        let x = Tensor::from_vec(data, shape, device)?.affine(init_sigma, 0.0)?;
        Ok(Population {
            x,
            particles,
            x0: None,
            history: Vec::new(),
            pending: None,
        })
    }

    /// A population whose initial states are given (`x` is `[P, …]`, particles in group order,
    /// group `g` holding `groups[g].particles` rows with lineages `0..K`). Search strategies
    /// use it to start trajectories from proposed noises.
    pub fn from_states(groups: &[GroupSpec], x: Tensor) -> Result<Self> {
        let particles = Self::fresh_particles(groups);
        if particles.len() != x.dim(0)? {
            return Err(Error::InvalidArgument(format!(
                "{} initial states for {} particles",
                x.dim(0)?,
                particles.len()
            )));
        }
        Ok(Population {
            x,
            particles,
            x0: None,
            history: Vec::new(),
            pending: None,
        })
    }

    /// The particles of `groups` before any step: lineages `0..K`, zero weights, no state.
    fn fresh_particles(groups: &[GroupSpec]) -> Vec<Particle> {
        let mut particles = Vec::new();
        for (g, spec) in groups.iter().enumerate() {
            for i in 0..spec.particles {
                particles.push(Particle {
                    group: g,
                    seed: spec.seed,
                    lineage: i as u64,
                    ancestor: particles.len(),
                    cond: spec.cond,
                    log_weight: 0.0,
                    reward: None,
                    state: BTreeMap::new(),
                });
            }
        }
        particles
    }

    /// Number of particles `P`.
    pub fn len(&self) -> usize {
        self.particles.len()
    }

    /// True when there are no particles.
    pub fn is_empty(&self) -> bool {
        self.particles.is_empty()
    }

    /// The conditions of all particles, in order.
    pub fn conds(&self) -> Vec<Condition> {
        self.particles.iter().map(|p| p.cond).collect()
    }

    /// The index range of each group, in group order (groups are contiguous).
    pub fn groups(&self) -> Vec<Range<usize>> {
        let mut out: Vec<Range<usize>> = Vec::new();
        for (i, p) in self.particles.iter().enumerate() {
            match out.last_mut() {
                Some(r) if self.particles[r.start].group == p.group => r.end = i + 1,
                _ => out.push(i..i + 1),
            }
        }
        out
    }

    /// Standard normal noise for a stochastic step: particle `i` reads its stream
    /// [`Stream::SolverStep`], `(seed, lineage, step + 1, Step)` on the step's first visit and
    /// `(seed, lineage, visit·2³² + step + 1, Step)` on a revisit (time travel). The numbers
    /// are drawn when the solver reads them ([`Noise`]).
    pub fn step_noise(&self, step: usize, visit: usize) -> Noise {
        let stream = Stream::SolverStep { step, visit };
        self.noise(stream.domain(), stream.counter())
    }

    /// Standard normal noise shaped like `x` from every particle's own copy of the named
    /// `stream` (its [`Stream::key`] under the particle's seed and lineage).
    pub fn stream_noise(&self, stream: Stream) -> Result<Tensor> {
        self.particle_noise(stream.domain(), stream.counter())
    }

    /// Standard normal noise shaped like `x`: particle `i` reads its own stream
    /// `(seed, lineage, step, domain)`, so the draw does not depend on batch composition.
    pub fn particle_noise(&self, domain: Domain, step: u64) -> Result<Tensor> {
        self.noise(domain, step).tensor()
    }

    /// The streams of [`Population::particle_noise`], not drawn yet.
    fn noise(&self, domain: Domain, step: u64) -> Noise {
        let keys = self
            .particles
            .iter()
            .map(|p| StreamKey {
                seed: p.seed,
                lineage: p.lineage,
                step,
                domain,
            })
            .collect();
        Noise::from_streams(
            keys,
            self.x.dims().to_vec(),
            self.x.dtype(),
            self.x.device(),
        )
    }

    /// Rebuilds the population from `ancestors` (indices into this one), gathering every field.
    ///
    /// The first copy of an ancestor keeps its lineage; each further copy gets a fresh lineage
    /// derived from (parent lineage, `step`, slot), so duplicates diverge under a stochastic
    /// solver while an identity gather changes nothing at all. Ancestors must keep groups
    /// contiguous (a group's slots draw from that group).
    pub fn gather(&self, ancestors: &[usize], step: usize) -> Result<Self> {
        if ancestors.is_empty() {
            return Err(Error::InvalidArgument(
                "gather to an empty population".into(),
            ));
        }
        let mut seen = vec![false; self.len()];
        // Slots count from the start of each group, so a group's lineages never depend on
        // the groups before it in the batch.
        let mut slot = 0u64;
        let mut previous_group = None;
        let particles: Vec<Particle> = ancestors
            .iter()
            .map(|&a| {
                let mut p = self.particles[a].clone();
                if previous_group != Some(p.group) {
                    slot = 0;
                    previous_group = Some(p.group);
                }
                p.ancestor = a;
                if seen[a] {
                    p.lineage = child_lineage(p.lineage, step as u64, slot);
                }
                seen[a] = true;
                slot += 1;
                p
            })
            .collect();
        let idx = Tensor::from_vec(
            ancestors.iter().map(|&a| a as u32).collect::<Vec<_>>(),
            ancestors.len(),
            self.x.device(),
        )?;
        let x0 = match &self.x0 {
            Some(t) => Some(t.index_select(&idx, 0)?),
            None => None,
        };
        let history = self
            .history
            .iter()
            .map(|t| t.index_select(&idx, 0))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let pending = match &self.pending {
            Some(p) => Some(p.gather(&idx)?),
            None => None,
        };
        Ok(Population {
            x: self.x.index_select(&idx, 0)?,
            particles,
            x0,
            history,
            pending,
        })
    }

    /// Rows of `x` for particle `i`, flattened to `f32` (for outputs and tests).
    pub fn row(&self, i: usize) -> Result<Vec<f32>> {
        Ok(self
            .x
            .get(i)?
            .flatten_all()?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1::<f32>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pop() -> Population {
        let groups = [
            GroupSpec {
                seed: 5,
                cond: Condition::Class(1),
                particles: 3,
            },
            GroupSpec {
                seed: 6,
                cond: Condition::Null,
                particles: 2,
            },
        ];
        Population::new(&groups, &[2], 1.0, &Device::Cpu).unwrap()
    }

    #[test]
    fn a_group_does_not_depend_on_its_neighbours() {
        let both = pop();
        let alone = Population::new(
            &[GroupSpec {
                seed: 6,
                cond: Condition::Null,
                particles: 2,
            }],
            &[2],
            1.0,
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!(both.row(3).unwrap(), alone.row(0).unwrap());
        assert_eq!(both.row(4).unwrap(), alone.row(1).unwrap());
        assert_eq!(both.groups(), vec![0..3, 3..5]);
    }

    #[test]
    fn gather_moves_every_field_and_renames_duplicates() {
        let mut p = pop();
        p.particles[1].state.insert("r_prev", 2.5);
        p.particles[1].log_weight = -1.0;
        p.history.push(p.x.affine(2.0, 0.0).unwrap());
        let g = p.gather(&[1, 1, 2, 3, 4], 7).unwrap();
        assert_eq!(g.row(0).unwrap(), p.row(1).unwrap());
        assert_eq!(g.row(1).unwrap(), p.row(1).unwrap());
        assert_eq!(g.particles[1].state["r_prev"], 2.5);
        assert_eq!(g.particles[1].log_weight, -1.0);
        assert_eq!(g.particles[0].lineage, p.particles[1].lineage);
        assert_ne!(g.particles[1].lineage, p.particles[1].lineage);
        let h: Vec<f32> = g.history[0].get(1).unwrap().to_vec1().unwrap();
        let want: Vec<f32> = p.history[0].get(1).unwrap().to_vec1().unwrap();
        assert_eq!(h, want);
        // An identity gather changes nothing, noise included.
        let id = p.gather(&[0, 1, 2, 3, 4], 7).unwrap();
        assert_eq!(id.particles, {
            let mut q = p.particles.clone();
            for (i, x) in q.iter_mut().enumerate() {
                x.ancestor = i;
            }
            q
        });
        let a: Vec<f32> = id
            .step_noise(3, 0)
            .tensor()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let b: Vec<f32> = p
            .step_noise(3, 0)
            .tensor()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(a, b);
    }
}
