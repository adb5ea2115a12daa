//! From a loaded model and resolved [`Options`] to a finished run, the same way for every
//! family: conditions, sampler, guidance, the population, the engine.
//!
//! [`Job::new`] does every check that can fail before any sampling starts (unknown names, bad
//! values, impossible combinations), so a command that is going to fail fails at once and
//! writes nothing.

use std::sync::Arc;

use anyhow::{Context as _, Result};
use candle_core::Tensor;
use steerdiff_guidance::sampler::Sampler;
use steerdiff_guidance::strategy::{ClassifierFree, TimeTravel};
use steerdiff_guidance::{
    Condition, Denoiser, Engine, GroupSpec, Guidance, Reward, RewardContext, StepPoint,
};
use steerdiff_pipelines::model::{Model, RewardBuilder, RewardSettings};
use steerdiff_pipelines::sd::pipeline::img2img_schedule;

use super::init::{read_image, read_latents};
use super::options::{Options, PathKind, DEFAULT_STEPS, DEFAULT_STRENGTH};
use super::record::{device_name, Parameters, ShardRecord, SCHEMA_VERSION, SEEDING_RULE};
use super::resolve::{check_options, conditioning, load_guide, prepare_text, resolve_sampler};
use super::steering::{steering, Steering};
use super::strategy::Built;
use crate::error::input_error;

/// A validated run, ready to go: the model, the sampler, the guidance and the groups.
pub struct Job {
    pub(super) model: Model,
    /// The guiding model (engine model 1): the toy's twin or `--guide-model`.
    pub(super) guide: Option<Model>,
    pub(super) sampler: Sampler,
    pub(super) cfg: Option<ClassifierFree>,
    pub(super) strategy: Built,
    pub(super) time_travel: Option<TimeTravel>,
    pub(super) eval_reward: Option<Arc<dyn Reward>>,
    pub(super) settings: RewardSettings,
    pub(super) cond: Condition,
    pub(super) groups: Vec<GroupSpec>,
    /// Where sampling starts when not from seeded noise (`--init-latents`, `--init-image`).
    pub(super) start: Option<Tensor>,
    pub(super) parameters: Parameters,
}

/// Everything of a [`Job`] but its model.
struct Parts {
    guide: Option<Model>,
    sampler: Sampler,
    cfg: Option<ClassifierFree>,
    strategy: Built,
    time_travel: Option<TimeTravel>,
    eval_reward: Option<Arc<dyn Reward>>,
    settings: RewardSettings,
    cond: Condition,
    groups: Vec<GroupSpec>,
    start: Option<Tensor>,
    parameters: Parameters,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("model", &self.model)
            .field("strategy", &self.strategy)
            .field("groups", &self.groups.len())
            .finish()
    }
}

impl Job {
    /// Loads the model `spec` names on `opts.device` and builds the job.
    pub fn load(spec: &str, opts: &Options) -> Result<Job> {
        Job::new(load_model(spec, opts)?, opts)
    }

    /// Checks every parameter against `model` and builds the job; errors name the problem
    /// and the fix.
    pub fn new(model: Model, opts: &Options) -> Result<Job> {
        Job::with_model(model, opts).map_err(|rejected| rejected.0)
    }

    /// [`Job::new`], giving the model back with the error when the job cannot be built.
    pub fn with_model(
        mut model: Model,
        opts: &Options,
    ) -> std::result::Result<Job, Box<(anyhow::Error, Model)>> {
        let p = match Job::parts(&mut model, opts) {
            Ok(p) => p,
            Err(e) => return Err(Box::new((e, model))),
        };
        let job = Job {
            model,
            guide: p.guide,
            sampler: p.sampler,
            cfg: p.cfg,
            strategy: p.strategy,
            time_travel: p.time_travel,
            eval_reward: p.eval_reward,
            settings: p.settings,
            cond: p.cond,
            groups: p.groups,
            start: p.start,
            parameters: p.parameters,
        };
        let valid = job.engine().validate();
        match valid {
            Ok(()) => Ok(job),
            Err(e) => Err(Box::new((e.into(), job.into_model()))),
        }
    }

    /// Gives the model back (the strategy, rewards and guiding model are dropped).
    pub fn into_model(self) -> Model {
        self.model
    }

    fn parts(model: &mut Model, opts: &Options) -> Result<Parts> {
        check_options(opts)?;
        let c = conditioning(model, opts)?;
        // A preset's recommended steps and CFG scale, unless given (sd-turbo: 1 step, no CFG).
        let preset = steerdiff_pipelines::sd::preset(model.source());
        let steps = opts
            .steps
            .or(preset.map(|p| p.steps))
            .unwrap_or(DEFAULT_STEPS);
        // A class-conditional toy run takes the model's recommended scale (its manifest's),
        // unless the strategy picks the scale itself (dynamic CFG).
        let recommended = model
            .recommended_cfg()
            .filter(|_| matches!(c.cond, Condition::Class(_)))
            .filter(|_| opts.strategy.kind.def().eval != super::strategy::EvalUse::Once);
        let cfg_scale = opts
            .cfg
            .or(preset.map(|p| p.cfg))
            .or(recommended)
            .unwrap_or(1.0);
        super::limits::check_counts(steps, opts.time_travel)?;
        if let Some(p) = preset.filter(|_| opts.steps.is_none() || opts.cfg.is_none()) {
            eprintln!(
                "steerdiff: {}: {steps} steps, CFG {cfg_scale} (its recommended settings; \
                 --steps / --cfg override)",
                p.name
            );
        }
        let init_image = opts.init_image.as_deref().map(read_image).transpose()?;
        let image_size = prepare_text(model, opts, &c, init_image.as_ref())?;
        // The weaker guiding model of autoguidance for text models, on the same prompts.
        let mut guide = match &opts.guide_model {
            Some(spec) => Some(load_guide(spec, model, opts, &c, image_size)?),
            None => None,
        };
        let cfg = if cfg_scale != 1.0 {
            if c.cond == Condition::Null {
                input_error!(
                    "--cfg {cfg_scale} needs --class: without a class every row is unconditional \
                     and guidance does nothing"
                );
            }
            let mut g = ClassifierFree::new(cfg_scale)?;
            g.rescale = opts.cfg_rescale;
            g.interval = opts.cfg_interval;
            Some(g)
        } else {
            None
        };
        let Steering {
            strategy,
            args: strategy_args,
            eval_reward,
            settings,
        } = steering(model, opts, &c, cfg_scale, steps, &mut guide)?;
        let (mut sampler, scheduler_class) =
            resolve_sampler(model, opts, steps, strategy.needs_noise())?;
        if init_image.is_some() {
            let strength = opts.strength.unwrap_or(DEFAULT_STRENGTH);
            sampler.schedule = img2img_schedule(&sampler.schedule, strength)?;
        } else if opts.strength.is_some() {
            input_error!("--strength is the img2img strength; give --init-image too");
        }
        if scheduler_class.contains("not reproduced") {
            eprintln!("steerdiff: using {scheduler_class}");
        }
        if opts.init_latents.is_some() && !matches!(strategy, Built::None) {
            input_error!(
                "--init-latents starts plain sampling; it cannot be combined with --guidance"
            );
        }
        if init_image.is_some() && matches!(strategy, Built::Search(_)) {
            input_error!(
                "noise searches draw their own initial noise; they cannot start from --init-image"
            );
        }
        let particles = opts.strategy.particles_per_group();
        let range = opts.shard.map(|s| s.groups(opts.n)).unwrap_or(0..opts.n);
        if opts.batch_groups == 0 {
            input_error!("--batch-groups must be at least 1");
        }
        let rounds = match &strategy {
            Built::Search(s) => Some(s.rounds),
            _ => None,
        };
        super::limits::check_run(model, opts.batch_groups, range.len(), particles, rounds)?;
        if let Some(s) = opts.shard {
            if !model.batch_stable()
                && opts.batch_groups > 1
                && range.start % opts.batch_groups != 0
            {
                input_error!(
                    "shard {}/{} starts at group {}, inside a block of --batch-groups {}: a \
                     group's images depend on its block, so shards must start at a multiple of \
                     it (use -n a multiple of {} × the shard count, or --batch-groups 1)",
                    s.index,
                    s.count,
                    range.start,
                    opts.batch_groups,
                    opts.batch_groups
                );
            }
            if range.is_empty() {
                input_error!(
                    "shard {}/{} of a run of {} groups has no groups: use at most {} shards or a \
                     larger -n",
                    s.index,
                    s.count,
                    opts.n,
                    opts.n
                );
            }
        }
        let shard = opts.shard.map(|s| ShardRecord {
            index: s.index,
            count: s.count,
            groups: [range.start, range.end],
        });
        let groups: Vec<GroupSpec> = range
            .map(|g| GroupSpec {
                seed: opts.seed + g as u64,
                cond: c.cond,
                particles,
            })
            .collect();
        let start = match (&opts.init_latents, &init_image) {
            (Some(path), _) => {
                let shape = model.denoiser().sample_shape();
                Some(read_latents(path, &shape, opts.n, model.device())?)
            }
            (None, Some(img)) => Some(model.encode_image(&super::init::image_tensor(img)?)?),
            (None, None) => None,
        };
        let denoiser = model.denoiser();
        let parameters = Parameters {
            schema: SCHEMA_VERSION,
            model: model.source().to_string(),
            model_config: model.record().clone(),
            steerdiff_version: env!("CARGO_PKG_VERSION").into(),
            device: device_name(model.device()),
            dtype: model.dtype().name().into(),
            path: if denoiser.path().is_flow() {
                PathKind::Flow
            } else {
                PathKind::Vp
            },
            class: match c.cond {
                Condition::Class(k) => Some(k),
                _ => None,
            },
            class_name: c.class_name,
            prompt: c.texts.first().cloned(),
            negative: opts.negative.clone(),
            sampler: opts
                .sampler
                .clone()
                .or_else(|| model.default_sampler().map(str::to_string))
                .unwrap_or_else(|| "default".into()),
            scheduler_class: Some(scheduler_class).filter(|s| {
                Some(s.as_str()) != opts.sampler.as_deref().or(model.default_sampler())
            }),
            solver: sampler.solver.name(),
            stochastic: sampler.solver.is_stochastic(),
            eta: sampler.solver.eta().unwrap_or(0.0),
            steps,
            cfg: cfg_scale,
            cfg_rescale: opts.cfg_rescale,
            cfg_interval: opts.cfg_interval.map(|(lo, hi)| [lo, hi]),
            time_travel: opts.time_travel,
            image_size,
            guide_model: opts.guide_model.clone(),
            init_latents: opts.init_latents.as_ref().map(|p| p.display().to_string()),
            init_image: opts.init_image.as_ref().map(|p| p.display().to_string()),
            strength: init_image
                .as_ref()
                .map(|_| opts.strength.unwrap_or(DEFAULT_STRENGTH)),
            n: opts.n,
            particles_per_group: particles,
            keep: opts.keep,
            batch_groups: if model.batch_stable() {
                1
            } else {
                opts.batch_groups
            },
            seed: opts.seed,
            seeding: SEEDING_RULE.into(),
            strategy: strategy_args.clone(),
            shard,
        };
        Ok(Parts {
            guide,
            sampler,
            cfg,
            strategy,
            time_travel: TimeTravel::every_step(opts.time_travel),
            eval_reward,
            settings,
            cond: c.cond,
            groups,
            start,
            parameters,
        })
    }

    /// Every resolved parameter.
    pub fn parameters(&self) -> &Parameters {
        &self.parameters
    }

    /// The model being sampled.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The model's denoiser.
    pub fn denoiser(&self) -> &dyn Denoiser {
        self.model.denoiser()
    }

    /// The run-wide index of this job's first group (non-zero for later shards).
    pub fn first_group(&self) -> usize {
        self.parameters.shard.map(|s| s.groups[0]).unwrap_or(0)
    }

    /// What every group is conditioned on.
    pub fn condition(&self) -> Condition {
        self.cond
    }

    /// The reward `spec` names for this model (the `--reward` grammar).
    pub fn reward(&self, spec: &str) -> Result<Arc<dyn Reward>> {
        Ok(RewardBuilder::new(&self.model, self.settings.clone()).build(spec)?)
    }

    /// The `--eval-reward` scores of final samples `x` (σ = 0), never used to steer.
    pub fn eval_scores(&self, x: &Tensor, conds: &[Condition]) -> Result<Option<Vec<f64>>> {
        match &self.eval_reward {
            Some(r) => Ok(Some(score_final(r.as_ref(), x, conds)?)),
            None => Ok(None),
        }
    }

    pub(super) fn engine(&self) -> Engine<'_> {
        let mut guidance: Vec<Box<dyn Guidance + '_>> = self
            .cfg
            .iter()
            .map(|g| Box::new(g.clone()) as Box<dyn Guidance>)
            .collect();
        if let Built::Step(s) = &self.strategy {
            guidance.push(Box::new(s.as_ref()));
        }
        if let Some(t) = self.time_travel {
            guidance.push(Box::new(t));
        }
        let mut models = vec![self.model.denoiser()];
        if let Some(g) = &self.guide {
            models.push(g.denoiser());
        }
        Engine {
            models,
            schedule: &self.sampler.schedule,
            solver: self.sampler.solver.as_ref(),
            guidance,
        }
    }
}

/// Checks `opts` and loads the model `spec` names as they say (device, dtype, …).
pub fn load_model(spec: &str, opts: &Options) -> Result<Model> {
    check_options(opts)?;
    steerdiff_pipelines::model::load(spec, &opts.load_options())
        .with_context(|| format!("loading model `{spec}`"))
}

/// Scores final samples `x` (σ = 0) with `reward`.
pub fn score_final(reward: &dyn Reward, x: &Tensor, conds: &[Condition]) -> Result<Vec<f64>> {
    Ok(reward.score(
        x,
        &RewardContext {
            conds,
            at: StepPoint::CLEAN,
        },
    )?)
}
