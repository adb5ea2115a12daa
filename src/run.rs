//! From resolved parameters to a finished run: load the model, build the sampler and the
//! guidance, seed the population, run the engine.
//!
//! [`Job::new`] does every check that can fail before any sampling starts (unknown names, bad
//! values, impossible combinations), so a command that is going to fail fails at once and
//! writes nothing.

use anyhow::{Context as _, Result};
use candle_core::Device;
use serde::Serialize;
use std::sync::Arc;
use steerdiff_guidance::sampler::{self, Sampler};
use steerdiff_guidance::strategy::{ClassifierFree, TimeTravel};
use steerdiff_guidance::{
    Condition, Denoiser, Engine, GroupSpec, Guidance, NoisePath, Outcome, Population, TraceSink,
};
use steerdiff_pipelines::toy::{self, ToyFlow};

use steerdiff_guidance::Reward;
use steerdiff_pipelines::reward::parse_vector_reward;
use steerdiff_pipelines::{GmmDenoiser, GmmSpec};

use crate::catalog;
use crate::error::input_error;
use crate::observation::Observation;
use crate::per_step;
use crate::plugin_args::PluginArgs;
use crate::strategy::{Built, StrategyArgs};

/// The seeding rule, as recorded in every `samples.json` (see `steerdiff_guidance::rng`).
pub const SEEDING_RULE: &str =
    "group g uses seed S + g (S = --seed); particle i of a group starts \
     from lineage i; so -n 8 --seed S = -n 4 --seed S followed by -n 4 --seed S+4";

/// A model to sample from, as named on the command line.
#[derive(Debug, Clone, PartialEq)]
pub enum Model {
    /// The exact Gaussian-mixture denoiser.
    Gmm {
        /// How the model was named (`gmm:PATH`), recorded in the outputs.
        source: String,
        /// The mixture.
        spec: GmmSpec,
    },
    /// The embedded toy class-conditional flow model (`toy`) or its weaker twin (`toy-weak`),
    /// loaded from `assets/` (or `$STEERDIFF_ASSETS`) with its sha256 checked.
    Toy {
        /// `toy` or `toy-weak`.
        source: String,
        /// The weaker twin.
        weak: bool,
    },
}

impl Model {
    /// Parses a `--model` value (`gmm:SPEC.json`), reading the spec file.
    pub fn parse(arg: &str) -> Result<Model> {
        if arg == "toy" || arg == "toy-weak" {
            return Ok(Model::Toy {
                source: arg.to_string(),
                weak: arg == "toy-weak",
            });
        }
        let Some((scheme, rest)) = arg.split_once(':') else {
            input_error!(
                "unknown model `{arg}`: models are named SCHEME:ARGUMENT; valid: {} (see `steerdiff list`)",
                catalog::model_names()
            );
        };
        match scheme {
            "gmm" => {
                if rest.is_empty() {
                    input_error!("model `{arg}` names no spec file; use --model gmm:SPEC.json");
                }
                let text = match std::fs::read_to_string(rest) {
                    Ok(t) => t,
                    Err(e) => input_error!(
                        "cannot read GMM spec `{rest}`: {e}; give an existing JSON file as --model gmm:SPEC.json"
                    ),
                };
                let spec = match GmmSpec::from_json(&text) {
                    Ok(s) => s,
                    Err(e) => input_error!(
                        "GMM spec `{rest}`: {e} (expected {{\"dim\": D, \"components\": [{{\"weight\": w, \
                         \"mean\": [D numbers], \"std\": s, \"class\": c}}, …]}})"
                    ),
                };
                Ok(Model::Gmm {
                    source: arg.to_string(),
                    spec,
                })
            }
            _ => input_error!(
                "unknown model scheme `{scheme}` in `{arg}`; valid: {} (see `steerdiff list`)",
                catalog::model_names()
            ),
        }
    }

    /// A Gaussian mixture given directly (recorded as `gmm:<inline>`).
    pub fn gmm(spec: GmmSpec) -> Model {
        Model::Gmm {
            source: "gmm:<inline>".into(),
            spec,
        }
    }

    /// How the model was named.
    pub fn source(&self) -> &str {
        match self {
            Model::Gmm { source, .. } => source,
            Model::Toy { source, .. } => source,
        }
    }
}

/// Which Gaussian path a mixture is sampled on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum PathKind {
    /// VP diffusion with DDPM's linear betas ([`GmmDenoiser::vp_path`]).
    #[default]
    #[value(help = "VP diffusion (DDPM linear betas 1e-4…0.02, 1000 steps)")]
    Vp,
    /// Rectified flow ([`NoisePath::flow`]).
    #[value(help = "rectified flow, x = (1 − σ)·x0 + σ·ε")]
    Flow,
}

impl PathKind {
    /// The noise path.
    pub fn noise_path(self) -> NoisePath {
        match self {
            PathKind::Vp => GmmDenoiser::vp_path(),
            PathKind::Flow => NoisePath::flow(),
        }
    }

    /// The sampler used when none is named: `ddim` on VP, `flow-euler` on flow.
    pub fn default_sampler(self) -> &'static str {
        match self {
            PathKind::Vp => "ddim",
            PathKind::Flow => "flow-euler",
        }
    }

    /// `"vp"` or `"flow"`.
    pub fn as_str(self) -> &'static str {
        match self {
            PathKind::Vp => "vp",
            PathKind::Flow => "flow",
        }
    }
}

/// Everything about a run except the model; [`Default`] gives the command line's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// The Gaussian path (default VP).
    pub path: PathKind,
    /// Class by name or label; `None` = unconditional ([`Condition::Null`]).
    pub class: Option<String>,
    /// Sampler name; `None` = [`PathKind::default_sampler`].
    pub sampler: Option<String>,
    /// Solver steps (default 50).
    pub steps: usize,
    /// η; `None` = the sampler's own.
    pub eta: Option<f64>,
    /// Classifier-free guidance scale (1 = none).
    pub cfg: f64,
    /// CFG rescale φ in `[0, 1]`.
    pub cfg_rescale: f64,
    /// Guide only while `σ/α ∈ [lo, hi]`.
    pub cfg_interval: Option<(f64, f64)>,
    /// Extra visits of every step but the last ([`TimeTravel`]; 0 = none).
    pub time_travel: usize,
    /// Number of groups (independent samples).
    pub n: usize,
    /// Seed of group 0; group `g` uses `seed + g`.
    pub seed: u64,
    /// The steering strategy and its settings.
    pub strategy: StrategyArgs,
    /// Run only this shard's block of the groups (see [`crate::shard`]); `None` = all.
    pub shard: Option<crate::shard::Shard>,
    /// Pixels for FlowChef / replacement given directly (instead of `--image`, `--mask`,
    /// `--box`), as the inpainting demo does; not recorded in `samples.json`.
    pub observation: Option<Observation>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            path: PathKind::Vp,
            class: None,
            sampler: None,
            steps: 50,
            eta: None,
            cfg: 1.0,
            cfg_rescale: 0.0,
            cfg_interval: None,
            time_travel: 0,
            n: 1,
            seed: 0,
            strategy: StrategyArgs::default(),
            shard: None,
            observation: None,
        }
    }
}

/// Every resolved parameter of a run, recorded in `samples.json`. Holds only deterministic
/// data (no paths of outputs, no times), so identical commands give identical records.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Parameters {
    /// The model as named (`gmm:PATH`).
    pub model: String,
    /// The model's own configuration (the parsed mixture spec; the toy's config and weights
    /// sha256).
    pub model_config: serde_json::Value,
    /// The steerdiff version that ran it.
    pub steerdiff_version: String,
    /// `vp` or `flow`.
    pub path: PathKind,
    /// Class label, `null` when unconditional.
    pub class: Option<u32>,
    /// The class's name, when the spec names its classes.
    pub class_name: Option<String>,
    /// Sampler name.
    pub sampler: String,
    /// The update rule the sampler resolved to.
    pub solver: String,
    /// Whether the solver draws noise each step.
    pub stochastic: bool,
    /// Solver steps.
    pub steps: usize,
    /// Resolved η.
    pub eta: f64,
    /// CFG scale (1 = none).
    pub cfg: f64,
    /// CFG rescale φ.
    pub cfg_rescale: f64,
    /// CFG interval on `σ/α`, `null` = always.
    pub cfg_interval: Option<[f64; 2]>,
    /// Time travel's extra visits of every step but the last; absent when 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub time_travel: usize,
    /// Number of groups.
    pub n: usize,
    /// Particles per group.
    pub particles_per_group: usize,
    /// Seed of group 0.
    pub seed: u64,
    /// How seeds are assigned to groups.
    pub seeding: String,
    /// The steering strategy and its settings.
    pub strategy: StrategyArgs,
    /// The shard this run is, if it is one; absent from whole (or merged) runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardRecord>,
}

/// `serde` helper: leaves a zero count out of a record.
pub(crate) fn is_zero(v: &usize) -> bool {
    *v == 0
}

/// The shard a run is, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ShardRecord {
    /// This shard, `0..count`.
    pub index: usize,
    /// Number of shards.
    pub count: usize,
    /// The groups it ran, `[start, end)` of `0..n`.
    pub groups: [usize; 2],
}

/// Scores final samples `x` (σ = 0) with `reward`.
pub fn score_final(
    _job: &Job,
    reward: &dyn Reward,
    x: &candle_core::Tensor,
    conds: &[Condition],
) -> Result<Vec<f64>> {
    let clean = steerdiff_guidance::StepPoint::CLEAN;
    Ok(reward.score(x, &steerdiff_guidance::RewardContext { conds, at: clean })?)
}

/// Parses `--reward` for the loaded model.
///
/// `many:N[:C]:SPEC` wraps any reward in FK's many-sample estimate
/// ([`steerdiff_pipelines::reward::ManySample`]): the log-mean-exp of `SPEC` over `N` Gaussian
/// posterior draws around x̂0, for a data prior of standard deviation `C` (default 0.5, the
/// spread of the toy's pixels in `[-1, 1]`).
fn reward_for(model: &Loaded, spec: &str, plugin: &PluginArgs) -> Result<Arc<dyn Reward>> {
    if let Some(reward) = plugin.connect(spec) {
        return Ok(Arc::new(reward?));
    }
    if let Some(rest) = spec.strip_prefix("ensemble:") {
        return ensemble_for(spec, rest, &|member| reward_for(model, member, plugin));
    }
    if let Some(rest) = spec.strip_prefix("many:") {
        let bad = || {
            anyhow::Error::new(crate::error::InputError(format!(
                "--reward `{spec}`: expected many:N[:C]:SPEC (N ≥ 1 draws, C > 0 the data \
                 standard deviation), e.g. many:8:classifier"
            )))
        };
        let (n, rest) = rest.split_once(':').ok_or_else(bad)?;
        let n: usize = n.parse().ok().filter(|&n| n >= 1).ok_or_else(bad)?;
        let (c, inner) = rest
            .split_once(':')
            .and_then(|(c, inner)| c.parse::<f64>().ok().map(|c| (c, inner)))
            .unwrap_or((0.5, rest));
        if !(c.is_finite() && c > 0.0) || inner.is_empty() {
            return Err(bad());
        }
        let inner = reward_for(model, inner, plugin)?;
        return Ok(Arc::new(steerdiff_pipelines::reward::ManySample::new(
            inner, n, c,
        )));
    }
    match model {
        Loaded::Gmm(d) => match parse_vector_reward(spec, d.spec.dim) {
            Ok(r) => Ok(r),
            Err(e) => input_error!("--reward: {e}"),
        },
        Loaded::Toy(_) => match spec {
            // ln p(class | x̂0) under the toy's guidance classifier (never its evaluation one).
            "classifier" => {
                let assets = toy::model::assets_dir();
                let clf = toy::model::ToyClassifier::load(&assets, toy::model::CLASSIFIER)
                    .context("loading the toy guidance classifier")?;
                Ok(Arc::new(steerdiff_guidance::ClassLogProb::new(Arc::new(
                    clf,
                ))))
            }
            // The mean pixel value (the reference for the brightness plugins).
            "brightness" => Ok(Arc::new(steerdiff_pipelines::reward::Brightness)),
            _ => input_error!(
                "--reward `{spec}`: the toy model's rewards are `classifier`, `brightness`, \
                 many:N:SPEC, or a plugin (stdio:COMMAND or http://127.0.0.1:PORT)"
            ),
        },
    }
}

/// `ensemble:MODE:W1*SPEC1;W2*SPEC2;…` with MODE `sum` (weighted sum), `z` (weighted sum of
/// batch z-scores) or `rank` (weighted mean rank); members are any reward specs, plugins
/// included (`;` separates them, so commands may contain spaces and colons). `rest` is what
/// follows `ensemble:`; `member` parses one member's spec.
pub fn ensemble_for(
    spec: &str,
    rest: &str,
    member: &dyn Fn(&str) -> Result<Arc<dyn Reward>>,
) -> Result<Arc<dyn Reward>> {
    use steerdiff_pipelines::reward::{Ensemble, EnsembleMode};
    let bad = |why: &str| {
        anyhow::Error::new(crate::error::InputError(format!(
            "--reward `{spec}`: {why}; expected ensemble:MODE:W1*SPEC1;W2*SPEC2 with MODE sum, z \
             or rank, e.g. ensemble:z:1*classifier;0.5*brightness"
        )))
    };
    let (mode, members) = rest.split_once(':').ok_or_else(|| bad("no members"))?;
    let mode = match mode {
        "sum" => EnsembleMode::WeightedSum,
        "z" => EnsembleMode::WeightedZ,
        "rank" => EnsembleMode::RankMean,
        other => return Err(bad(&format!("unknown mode `{other}`"))),
    };
    let mut list = vec![];
    for m in members.split(';').map(str::trim).filter(|m| !m.is_empty()) {
        let (w, inner) = match m.split_once('*') {
            Some((w, inner)) if w.trim().parse::<f64>().is_ok() => {
                (w.trim().parse::<f64>().expect("checked"), inner.trim())
            }
            _ => (1.0, m),
        };
        if !w.is_finite() {
            return Err(bad(&format!("weight of `{inner}` is not finite")));
        }
        list.push((member(inner)?, w));
    }
    if list.is_empty() {
        return Err(bad("no members"));
    }
    Ok(Arc::new(Ensemble::new(list, mode)))
}

/// A loaded model.
#[derive(Debug)]
enum Loaded {
    Gmm(GmmDenoiser),
    Toy(ToyFlow),
}

/// A validated run, ready to go: the model, the sampler, the guidance and the groups.
#[derive(Debug)]
pub struct Job {
    model: Loaded,
    /// The guiding model (engine model 1): the toy's weaker twin, for autoguidance.
    guide: Option<ToyFlow>,
    sampler: Sampler,
    cfg: Option<ClassifierFree>,
    strategy: Built,
    time_travel: Option<TimeTravel>,
    cond: Condition,
    groups: Vec<GroupSpec>,
    parameters: Parameters,
}

impl Job {
    /// Loads the model and checks every parameter; errors name the problem and the fix.
    pub fn new(model: Model, opts: &Options) -> Result<Job> {
        if opts.n == 0 {
            input_error!("-n must be at least 1 (the number of samples to draw)");
        }
        let Some(_) = opts.seed.checked_add(opts.n as u64 - 1) else {
            input_error!(
                "--seed {} with -n {} overflows the seed range (group g uses seed S + g); use a smaller --seed",
                opts.seed,
                opts.n
            );
        };
        if !(opts.cfg_rescale.is_finite() && (0.0..=1.0).contains(&opts.cfg_rescale)) {
            input_error!("--cfg-rescale must be in [0, 1] (got {})", opts.cfg_rescale);
        }
        if let Some((lo, hi)) = opts.cfg_interval {
            if lo.is_nan() || hi.is_nan() || lo < 0.0 || lo > hi {
                input_error!(
                    "--cfg-interval {lo},{hi}: need 0 ≤ LO ≤ HI (noise levels σ/α, e.g. 0.28,5.42)"
                );
            }
        }
        let source = model.source().to_string();
        let (loaded, model_config, cond, class_name) = match model {
            Model::Gmm { spec, .. } => {
                let (cond, class_name) = match &opts.class {
                    None => (Condition::Null, None),
                    Some(name) => {
                        let label = spec
                            .class_by_name(name)
                            .map_err(|e| anyhow::Error::new(e).context("--class"))?;
                        let cname = spec
                            .class_names
                            .as_ref()
                            .and_then(|n| n.get(label as usize).cloned());
                        (Condition::Class(label), cname)
                    }
                };
                let config = serde_json::to_value(&spec).context("recording the GMM spec")?;
                let denoiser = GmmDenoiser::new(spec, opts.path.noise_path(), "gmm")?;
                (Loaded::Gmm(denoiser), config, cond, class_name)
            }
            Model::Toy { weak, .. } => {
                let (cond, class_name) = match &opts.class {
                    None => (Condition::Null, None),
                    Some(name) => {
                        let label = toy::class_by_name(name).or_else(|| {
                            name.parse::<u32>()
                                .ok()
                                .filter(|&k| (k as usize) < toy::NUM_CLASSES)
                        });
                        let Some(label) = label else {
                            input_error!(
                                "--class: unknown toy class `{name}`; valid: {}",
                                toy::CLASS_NAMES.join(", ")
                            );
                        };
                        (
                            Condition::Class(label),
                            Some(toy::CLASS_NAMES[label as usize].to_string()),
                        )
                    }
                };
                let (entry, name) = if weak {
                    (toy::model::FLOW_WEAK, "toy-weak")
                } else {
                    (toy::model::FLOW, "toy")
                };
                let assets = toy::model::assets_dir();
                let (config, _) = toy::model::checked_files(&assets, entry)
                    .with_context(|| format!("loading the toy model `{name}`"))?;
                let denoiser = ToyFlow::load(&assets, entry, name)
                    .with_context(|| format!("loading the toy model `{name}`"))?;
                let mut config =
                    serde_json::to_value(&config).context("recording the toy config")?;
                // The weights' sha256 (checked at load), so a record names the exact model.
                config["weights_sha256"] = toy::model::Manifest::load(&assets)?
                    .entry(entry)?
                    .sha256
                    .clone()
                    .into();
                (Loaded::Toy(denoiser), config, cond, class_name)
            }
        };
        let path_kind = match &loaded {
            Loaded::Toy(_) => PathKind::Flow,
            Loaded::Gmm(_) => opts.path,
        };
        let sampler_name = opts
            .sampler
            .clone()
            .unwrap_or_else(|| path_kind.default_sampler().to_string());
        let path = match &loaded {
            Loaded::Gmm(d) => d.path().clone(),
            Loaded::Toy(d) => d.path().clone(),
        };
        // Particle strategies need a stochastic sampler: where η is free and not given, use 1.
        let mut eta = opts.eta;
        if opts.strategy.kind.needs_noise()
            && eta.is_none()
            && matches!(sampler_name.as_str(), "ddim" | "flow-euler")
        {
            eta = Some(1.0);
        }
        let sampler = match sampler::by_name(&sampler_name, &path, opts.steps, eta) {
            Ok(s) => s,
            // A sampler of the other path: a mixture can be sampled on either.
            Err(e @ steerdiff_guidance::Error::Unsupported(_))
                if matches!(loaded, Loaded::Gmm(_)) =>
            {
                let other = match opts.path {
                    PathKind::Vp => "flow",
                    PathKind::Flow => "vp",
                };
                input_error!("{e}; or sample the mixture on the other path with --path {other}")
            }
            Err(e) => return Err(e.into()),
        };
        let cfg = if opts.cfg != 1.0 {
            if cond == Condition::Null {
                input_error!(
                    "--cfg {} needs --class: without a class every row is unconditional and guidance does nothing",
                    opts.cfg
                );
            }
            let mut g = ClassifierFree::new(opts.cfg)?;
            g.rescale = opts.cfg_rescale;
            g.interval = opts.cfg_interval;
            Some(g)
        } else {
            None
        };
        let mut guide = None;
        let strategy = if opts.strategy.kind.is_per_step() {
            let gmm = match &loaded {
                Loaded::Gmm(d) => Some(&d.spec),
                Loaded::Toy(_) => None,
            };
            let main: &dyn Denoiser = match &loaded {
                Loaded::Gmm(d) => d,
                Loaded::Toy(d) => d,
            };
            let target = per_step::Target {
                model: &source,
                gmm,
                toy: matches!(loaded, Loaded::Toy(_)),
                flow: main.path().is_flow(),
                sample_shape: main.sample_shape(),
                cond,
                cfg: opts.cfg,
                classifier: None,
                has_guide: false,
            };
            let built = per_step::build(
                opts.strategy.kind,
                &opts.strategy.per_step,
                opts.strategy.reward.as_deref(),
                &target,
                opts.observation.as_ref(),
                &|spec| reward_for(&loaded, spec, &opts.strategy.plugin),
            )?;
            if built.needs_weak {
                let assets = toy::model::assets_dir();
                guide = Some(
                    ToyFlow::load(&assets, toy::model::FLOW_WEAK, "toy-weak")
                        .context("loading the guiding model `toy-weak`")?,
                );
            }
            Built::Step(built.guidance)
        } else {
            opts.strategy.build(opts.steps, |spec| {
                reward_for(&loaded, spec, &opts.strategy.plugin)
            })?
        };
        let particles = opts.strategy.particles_per_group();
        let range = opts.shard.map(|s| s.groups(opts.n)).unwrap_or(0..opts.n);
        if range.is_empty() {
            let s = opts.shard.expect("only a shard can be empty");
            input_error!(
                "shard {}/{} of a run of {} groups has no groups: use at most {} shards or a \
                 larger -n",
                s.index,
                s.count,
                opts.n,
                opts.n
            );
        }
        let shard = opts.shard.map(|s| ShardRecord {
            index: s.index,
            count: s.count,
            groups: [range.start, range.end],
        });
        let groups = range
            .map(|g| GroupSpec {
                seed: opts.seed + g as u64,
                cond,
                particles,
            })
            .collect();
        let parameters = Parameters {
            model: source,
            model_config,
            steerdiff_version: env!("CARGO_PKG_VERSION").into(),
            path: path_kind,
            class: match cond {
                Condition::Class(c) => Some(c),
                _ => None,
            },
            class_name,
            solver: sampler.solver.name(),
            stochastic: sampler.solver.is_stochastic(),
            eta: sampler.solver.eta().unwrap_or(0.0),
            sampler: sampler_name,
            steps: opts.steps,
            cfg: opts.cfg,
            cfg_rescale: opts.cfg_rescale,
            cfg_interval: opts.cfg_interval.map(|(lo, hi)| [lo, hi]),
            time_travel: opts.time_travel,
            n: opts.n,
            particles_per_group: particles,
            seed: opts.seed,
            seeding: SEEDING_RULE.into(),
            strategy: opts.strategy.clone(),
            shard,
        };
        let job = Job {
            model: loaded,
            guide,
            sampler,
            cfg,
            strategy,
            time_travel: TimeTravel::every_step(opts.time_travel),
            cond,
            groups,
            parameters,
        };
        job.engine().validate()?;
        Ok(job)
    }

    /// Every resolved parameter.
    pub fn parameters(&self) -> &Parameters {
        &self.parameters
    }

    /// The final samples as recorded: [`crate::output::samples`], plus each sample's
    /// `--eval-reward` score when one is asked for (measured here, after the run, so it never
    /// steers).
    pub fn records(&self, outcome: &Outcome) -> Result<Vec<crate::output::SampleRecord>> {
        let mut records = crate::output::samples(&outcome.population, self.first_group())?;
        if let Some(spec) = &self.parameters.strategy.eval_reward {
            let reward = self.reward(spec).context("--eval-reward")?;
            let conds = outcome.population.conds();
            let scores = score_final(self, reward.as_ref(), &outcome.population.x, &conds)?;
            for (r, s) in records.iter_mut().zip(scores) {
                r.eval_reward = Some(s).filter(|s| s.is_finite());
            }
        }
        Ok(records)
    }

    /// The run-wide index of this job's first group (non-zero for later shards).
    pub fn first_group(&self) -> usize {
        self.parameters.shard.map(|s| s.groups[0]).unwrap_or(0)
    }

    /// The model being sampled.
    pub fn denoiser(&self) -> &dyn Denoiser {
        match &self.model {
            Loaded::Gmm(d) => d,
            Loaded::Toy(d) => d,
        }
    }

    /// The mixture, when the model is a Gaussian mixture.
    pub fn gmm_spec(&self) -> Option<&GmmSpec> {
        match &self.model {
            Loaded::Gmm(d) => Some(&d.spec),
            Loaded::Toy(_) => None,
        }
    }

    /// True when the model is the toy flow model (samples are 3×32×32 images).
    pub fn is_toy(&self) -> bool {
        matches!(self.model, Loaded::Toy(_))
    }

    /// The reward `--reward SPEC` names for this model.
    pub fn reward(&self, spec: &str) -> Result<Arc<dyn Reward>> {
        reward_for(&self.model, spec, &self.parameters.strategy.plugin)
    }

    /// A class label of this model, by name or number.
    pub fn class_label(&self, name: &str) -> Result<u32> {
        match &self.model {
            Loaded::Gmm(d) => Ok(d.spec.class_by_name(name)?),
            Loaded::Toy(_) => match toy::class_by_name(name) {
                Some(k) => Ok(k),
                None => input_error!(
                    "unknown toy class `{name}`; valid: {}",
                    toy::CLASS_NAMES.join(", ")
                ),
            },
        }
    }

    /// Held-out accuracy: the fraction of outputs an evaluator that never steered puts in
    /// `class` (for mixtures, the exact Bayes classifier on clean data).
    pub fn held_out_accuracy(&self, xs: &[Vec<f64>], class: u32) -> Result<f64> {
        match &self.model {
            Loaded::Gmm(d) => Ok(
                xs.iter().filter(|x| d.spec.class_of(x) == class).count() as f64
                    / xs.len().max(1) as f64,
            ),
            // The independent evaluation classifier, which never steers.
            Loaded::Toy(d) => {
                let mut dims = vec![xs.len()];
                dims.extend(d.sample_shape());
                let flat: Vec<f32> = xs.iter().flatten().map(|&v| v as f32).collect();
                let x = candle_core::Tensor::from_vec(flat, dims, &Device::Cpu)?;
                let eval = toy::model::ToyClassifier::load(
                    &toy::model::assets_dir(),
                    toy::model::EVAL_CLASSIFIER,
                )
                .context("loading the toy evaluation classifier")?;
                let pred = eval.predict(&x)?;
                Ok(pred.iter().filter(|&&p| p == class).count() as f64 / xs.len().max(1) as f64)
            }
        }
    }

    /// What every group is conditioned on.
    pub fn condition(&self) -> Condition {
        self.cond
    }

    fn engine(&self) -> Engine<'_> {
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
        let mut models = vec![self.denoiser()];
        if let Some(g) = &self.guide {
            models.push(g as &dyn Denoiser);
        }
        Engine {
            models,
            schedule: &self.sampler.schedule,
            solver: self.sampler.solver.as_ref(),
            guidance,
        }
    }

    /// Seeds the population (group `g` from seed `S + g`, one particle each) and runs the
    /// schedule, writing one trace line per step to `trace` if given.
    pub fn run(&self, trace: Option<&mut dyn TraceSink>) -> Result<Outcome> {
        let pop = Population::new(
            &self.groups,
            &self.denoiser().sample_shape(),
            self.sampler.schedule.init_noise_sigma,
            &Device::Cpu,
        )?;
        match &self.strategy {
            Built::Search(search) => Ok(search.run(
                &self.engine(),
                &self.groups,
                self.sampler.schedule.init_noise_sigma,
                trace,
            )?),
            _ => Ok(self.engine().run(pop, trace)?),
        }
    }
}
