//! `steerdiff generate` for text-to-image models: Stable Diffusion presets (`sd15`, …),
//! diffusers-format folders and Hub repos.
//!
//! ```text
//! steerdiff generate --model sd15|sd21|sd-turbo|sdxl|sdxl-turbo|ORG/NAME|FOLDER --prompt "…" [--negative "…"]
//! steerdiff generate --model SD3_OR_FLUX.safetensors --text-encoders ORG/NAME|FOLDER [--ae AE.safetensors] --prompt "…"
//!                    [--steps N] [--cfg S] [--scheduler NAME|CLASS|FILE.json] [--eta E]
//!                    [--height H --width W] [--dtype f32|f16|bf16] [-n N] [--seed S]
//!                    [--init-latents FILE.json | --init-image IMG [--strength S]]
//!                    -o DIR [--trace FILE]
//! ```
//!
//! Writes `DIR/image-000.png` … (one per sample), `DIR/samples.json` (parameters, ledger, the
//! final latents) and `DIR/timing.json`, all or nothing.
//!
//! `--init-latents FILE.json` starts from given latents instead of seeded noise: the latents
//! one would hand to diffusers' pipeline as `latents=` (diffusers multiplies them by the
//! scheduler's `init_noise_sigma`, and so does steerdiff). FILE holds a flat list of numbers,
//! or an object with an `initial_latents` list (a tiny-sd fixture case file works as is);
//! `-n` samples need `n` times the latent size, or one latent for all.
//!
//! `--init-image IMG --strength S` is img2img as diffusers does it: the last `⌊steps·S⌋` steps
//! of the schedule, starting from the image's latents (the VAE posterior mean) noised to the
//! first of them with the seeded noise.
//!
//! Every strategy of `--guidance` runs on top (FK, CoDe, best-of-N, SVDD, DSearch, noise
//! searches) with an image reward: `--reward jpeg[:Q]` (JPEG compressibility of the VAE
//! decode) or `jpeg-preview[:Q]` (of the linear latent preview, nearly free). Particle
//! strategies need a stochastic scheduler (`--scheduler ddim --eta 1`, `ddpm`, `euler-a`).

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use candle_core::{Device, Tensor};
use serde::Serialize;
use serde_json::Value;
use steerdiff_guidance::strategy::{ClassifierFree, TimeTravel};
use steerdiff_guidance::{Condition, Denoiser, Engine, GroupSpec, Guidance, Population, TraceSink};
use steerdiff_pipelines::sd::clip_model::ClipModel;
use steerdiff_pipelines::sd::clip_rewards::{Aesthetic, ClipScore, ClipZeroShot};
use steerdiff_pipelines::sd::pipeline::{img2img_schedule, noised};
use steerdiff_pipelines::sd::preview::LatentPreview;
use steerdiff_pipelines::sd::rewards::{parse_image_reward, OnPixels, Pixels};
use steerdiff_pipelines::sd::text_to_image::TextToImage;
use steerdiff_pipelines::sd::{LoadOptions, Source, WeightDType};

use crate::cli::GenerateArgs;
use crate::error::input_error;
use crate::output::{self, JsonlTrace, Staged};
use crate::strategy::{Built, StrategyKind};

/// Whether `--model` names a text-to-image model (a preset, a diffusers folder, a Hub repo).
pub fn is_text_model(args: &GenerateArgs) -> bool {
    match args.model.as_deref() {
        Some(m) => {
            m != "toy" && m != "toy-weak" && !m.starts_with("gmm:") && Source::parse(m).is_ok()
        }
        None => false,
    }
}

/// Every resolved parameter of a text-to-image run, recorded in `samples.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TextParameters {
    /// The model as named.
    pub model: String,
    /// The text encoders of an SD3 / FLUX single-file model (`--text-encoders`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text_encoders: Option<String>,
    /// The autoencoder file of a FLUX single-file model (`--ae`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ae: Option<String>,
    /// The prompt.
    pub prompt: String,
    /// The negative prompt (the unconditional row of CFG); `None`: none given (the empty
    /// prompt, or SDXL's all-zero row).
    pub negative: Option<String>,
    /// The scheduler as named (`default` = the model's own).
    pub scheduler: String,
    /// The diffusers scheduler class used.
    pub scheduler_class: String,
    /// The update rule.
    pub solver: String,
    /// Steps.
    pub steps: usize,
    /// Resolved η.
    pub eta: f64,
    /// CFG scale.
    pub cfg: f64,
    /// Time travel's extra visits of every step but the last; absent when 0.
    #[serde(skip_serializing_if = "crate::run::is_zero")]
    pub time_travel: usize,
    /// Image height, pixels.
    pub height: usize,
    /// Image width, pixels.
    pub width: usize,
    /// Weight dtype.
    pub dtype: String,
    /// Number of samples.
    pub n: usize,
    /// Seed of sample 0.
    pub seed: u64,
    /// The initial-latents file, when given.
    pub init_latents: Option<String>,
    /// The img2img source image, when given.
    pub init_image: Option<String>,
    /// img2img strength (when --init-image is given).
    pub strength: Option<f64>,
    /// Particles per sample (the strategy's K; 1 for plain sampling).
    pub particles_per_group: usize,
    /// The steering strategy and its settings.
    pub strategy: crate::strategy::StrategyArgs,
}

/// Reads `--init-latents`: a flat list, or an object with `initial_latents`.
fn read_latents(path: &Path) -> Result<Vec<f32>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => input_error!("cannot read --init-latents `{}`: {e}", path.display()),
    };
    let v: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => input_error!("--init-latents `{}` is not JSON: {e}", path.display()),
    };
    let list = match &v {
        Value::Array(_) => &v,
        Value::Object(o) if o.contains_key("initial_latents") => &o["initial_latents"],
        _ => input_error!(
            "--init-latents `{}`: expected a list of numbers or an object with `initial_latents`",
            path.display()
        ),
    };
    let Some(items) = list.as_array() else {
        input_error!(
            "--init-latents `{}`: `initial_latents` is not a list",
            path.display()
        );
    };
    let mut out = Vec::with_capacity(items.len());
    for x in items {
        match x.as_f64() {
            Some(f) if f.is_finite() => out.push(f as f32),
            _ => input_error!(
                "--init-latents `{}`: {x} is not a finite number",
                path.display()
            ),
        }
    }
    Ok(out)
}

/// What a text-to-image run's rewards are built from: `--reward`, `--eval-reward` and
/// ensemble members alike.
struct ImageRewards<'a> {
    args: &'a GenerateArgs,
    prompt: &'a str,
    /// How x̂0 latents become pixels (the VAE decode, or the family's decoder).
    pixels: Pixels,
    preview: &'static LatentPreview,
    /// The CLIP model (`--clip-model`), loaded on first use and shared.
    clip: std::cell::OnceCell<Arc<ClipModel>>,
}

impl ImageRewards<'_> {
    /// The run's CLIP model.
    fn clip(&self) -> Result<Arc<ClipModel>> {
        if let Some(m) = self.clip.get() {
            return Ok(m.clone());
        }
        let spec = &self.args.clip_model;
        let m = ClipModel::load(spec, &Device::Cpu)
            .with_context(|| format!("loading --clip-model `{spec}`"))?;
        Ok(self.clip.get_or_init(|| Arc::new(m)).clone())
    }

    /// A reward for a latent model: `ensemble:…` of members, a plugin (scored on the VAE
    /// decode of x̂0 and told the prompt), a CLIP reward (`clip`, `aesthetic:MLP.safetensors`,
    /// on `--clip-model`), or an image reward (`jpeg[:Q]`, `jpeg-preview[:Q]`).
    fn build(&self, spec: &str) -> Result<Arc<dyn steerdiff_guidance::Reward>> {
        if let Some(rest) = spec.strip_prefix("ensemble:") {
            return crate::run::ensemble_for(spec, rest, &|m| self.build(m));
        }
        let pixels = self.pixels.clone();
        if spec == "clip" {
            return Ok(Arc::new(ClipScore::new(
                self.clip()?,
                pixels,
                &[self.prompt],
            )?));
        }
        if let Some(path) = spec.strip_prefix("aesthetic:") {
            return Ok(Arc::new(Aesthetic::new(
                self.clip()?,
                Path::new(path),
                pixels,
            )?));
        }
        match self.args.strategy.plugin.connect(spec) {
            Some(plugin) => Ok(Arc::new(OnPixels::new(
                pixels,
                Arc::new(plugin?.with_prompts(vec![self.prompt.to_string()])),
            ))),
            None => Ok(parse_image_reward(spec, Some(pixels), self.preview)?),
        }
    }
}

/// Loads `--guide-model` for autoguidance: the same size and prompts as `main` (`model`),
/// and it must share its latent space and noise path.
fn load_guide(
    spec: &str,
    model: &str,
    main: &dyn TextToImage,
    opts: &LoadOptions,
    (height, width): (usize, usize),
    texts: &[&str],
    negative: Option<&str>,
) -> Result<Box<dyn TextToImage>> {
    let mut g = steerdiff_pipelines::sd::text_to_image::load(spec, None, None, opts)
        .with_context(|| format!("loading --guide-model `{spec}`"))?;
    g.set_image_size(height, width)?;
    g.set_prompts(texts, negative)?;
    if g.sample_shape() != main.sample_shape() || g.path() != main.path() {
        input_error!(
            "--guide-model `{spec}` does not share `{model}`'s latent space and noise path \
             (latents {:?} vs {:?}); autoguidance compares the two models' predictions",
            g.sample_shape(),
            main.sample_shape()
        );
    }
    Ok(g)
}

/// A per-step strategy (GFCG, dynamic CFG, autoguidance) on a text-to-image model: the
/// classes are `texts` (the prompt, then the `--zero-shot` competitors) under a zero-shot CLIP
/// classifier; autoguidance's weaker model is engine model 1 when `has_guide`; `cfg` is the
/// run's CFG scale.
fn per_step_strategy(
    args: &GenerateArgs,
    model: &str,
    sd: &dyn TextToImage,
    texts: &[&str],
    rewards: &ImageRewards,
    has_guide: bool,
    cfg: f64,
) -> Result<Built> {
    let classifier: Option<Arc<dyn steerdiff_guidance::Classifier>> =
        if args.strategy.per_step.zero_shot.is_empty() {
            None
        } else {
            Some(Arc::new(ClipZeroShot::new(
                rewards.clip()?,
                rewards.pixels.clone(),
                texts,
            )?))
        };
    if classifier.is_none() && args.strategy.kind != StrategyKind::Autoguidance {
        input_error!(
            "--guidance {} on a text-to-image model reads a zero-shot CLIP classifier: name the \
             competing prompts with --zero-shot \"TEXT;TEXT\" (the prompt is class 0; the CLIP \
             model is --clip-model)",
            args.strategy.kind.cli_name()
        );
    }
    let target = crate::per_step::Target {
        model,
        gmm: None,
        toy: false,
        flow: sd.path().is_flow(),
        sample_shape: sd.sample_shape(),
        cond: Condition::Prompt(0),
        cfg,
        classifier,
        has_guide,
    };
    let built = crate::per_step::build(
        args.strategy.kind,
        &args.strategy.per_step,
        args.strategy.reward.as_deref(),
        &target,
        None,
        &|spec| rewards.build(spec),
    )?;
    if has_guide && !built.needs_weak {
        input_error!("--guide-model is read by --guidance autoguidance and --gfcg-guide weak only");
    }
    Ok(Built::Step(built.guidance))
}

/// Runs a text-to-image `generate`.
pub fn generate(args: &GenerateArgs) -> Result<()> {
    let model = args.model.clone().unwrap_or_default();
    let Some(prompt) = args.prompt.clone() else {
        input_error!("--model {model} is a text-to-image model: give --prompt \"…\"");
    };
    if args.class.is_some() {
        input_error!("--class is for class-conditional models; {model} takes --prompt");
    }
    if args.scheduler.is_some() && args.sampler.is_some() {
        input_error!("give either --scheduler or --sampler, not both");
    }
    if args.num == 0 {
        input_error!("-n must be at least 1");
    }
    if args.shard.is_some() {
        input_error!(
            "--shard splits the groups of class-conditional and mixture runs; for text-to-image \
             models run one --seed/-n block per machine instead"
        );
    }
    let negative = args.negative.clone();
    // A preset's recommended steps and CFG scale, unless given (sd-turbo: 1 step, no CFG).
    let explicit = |flag: &str| args.flags.iter().any(|(long, _)| long == flag);
    let preset = steerdiff_pipelines::sd::preset(&model);
    let steps = match preset {
        Some(p) if !explicit("steps") => p.steps,
        _ => args.steps,
    };
    let cfg_scale = match preset {
        Some(p) if !explicit("cfg") => p.cfg,
        _ => args.cfg,
    };
    if let Some(p) = preset.filter(|_| !explicit("steps") || !explicit("cfg")) {
        eprintln!(
            "steerdiff: {}: {steps} steps, CFG {cfg_scale} (its recommended settings; --steps / \
             --cfg override)",
            p.name
        );
    }
    let dtype = match &args.dtype {
        Some(d) => WeightDType::parse(d)?,
        None => WeightDType::F32,
    };
    let opts = LoadOptions {
        dtype,
        device: Device::Cpu,
        ..LoadOptions::default()
    };
    let mut sd = steerdiff_pipelines::sd::text_to_image::load(
        &model,
        args.text_encoders.as_deref(),
        args.ae.as_deref(),
        &opts,
    )
    .with_context(|| format!("loading model `{model}`"))?;
    let (h0, w0) = sd.image_size();
    let init_image = match &args.init_image {
        Some(path) => {
            if args.init_latents.is_some() {
                input_error!("give either --init-image or --init-latents, not both");
            }
            let img = match image::open(path) {
                Ok(i) => i.to_rgb8(),
                Err(e) => input_error!("cannot read --init-image `{}`: {e}", path.display()),
            };
            Some(img)
        }
        None => None,
    };
    let (h0, w0) = match &init_image {
        Some(img) => (img.height() as usize, img.width() as usize),
        None => (h0, w0),
    };
    let height = args.height.unwrap_or(h0);
    let width = args.width.unwrap_or(w0);
    if let Some(img) = &init_image {
        if (img.height() as usize, img.width() as usize) != (height, width) {
            input_error!(
                "--init-image is {}×{} but --height/--width ask for {height}×{width}",
                img.height(),
                img.width()
            );
        }
    }
    sd.set_image_size(height, width)?;
    // Prompt 0 is the prompt; GFCG's zero-shot competitors follow it (classes 1, 2, …).
    let zero_shot = &args.strategy.per_step.zero_shot;
    let mut texts = vec![prompt.as_str()];
    texts.extend(zero_shot.iter().map(String::as_str));
    sd.set_prompts(&texts, negative.as_deref())?;
    // The weaker guiding model of autoguidance, on the same prompts and size.
    let guide = match &args.guide_model {
        Some(spec) => Some(load_guide(
            spec,
            &model,
            &*sd,
            &opts,
            (height, width),
            &texts,
            negative.as_deref(),
        )?),
        None => None,
    };
    // From here on the model is shared: rewards decode through it.
    let sd: Arc<dyn TextToImage> = Arc::from(sd);
    let pixels = match sd.vae() {
        Some(vae) => Pixels::Decode(vae),
        None => {
            let model = sd.clone();
            Pixels::Custom(Arc::new(move |x: &Tensor| model.decode(x)))
        }
    };
    let scheduler_name = args.scheduler.clone().or_else(|| args.sampler.clone());
    // Particle strategies need a stochastic scheduler: where η is free and not given, use 1
    // (as for every other model); a fixed-η scheduler keeps its own and is refused later.
    let auto_eta = (args.eta.is_none() && args.strategy.kind.needs_noise())
        .then(|| sd.sampler(scheduler_name.as_deref(), steps, Some(1.0)).ok())
        .flatten();
    let (mut sampler, scheduler_class) = match auto_eta {
        Some(s) => s,
        None => sd.sampler(scheduler_name.as_deref(), steps, args.eta)?,
    };
    if init_image.is_some() {
        sampler.schedule = img2img_schedule(&sampler.schedule, args.strength)?;
    }
    if scheduler_class.contains("not reproduced") {
        eprintln!("steerdiff: using {scheduler_class}");
    }
    let cfg = if cfg_scale != 1.0 {
        let mut g = ClassifierFree::new(cfg_scale)?;
        g.rescale = args.cfg_rescale;
        g.interval = args.cfg_interval;
        Some(g)
    } else {
        None
    };
    let rewards = ImageRewards {
        args,
        prompt: &prompt,
        pixels: pixels.clone(),
        preview: sd.latent_preview(),
        clip: std::cell::OnceCell::new(),
    };
    let reward = |spec: &str| rewards.build(spec);
    let strategy = if args.strategy.kind.is_per_step() {
        per_step_strategy(
            args,
            &model,
            &*sd,
            &texts,
            &rewards,
            guide.is_some(),
            cfg_scale,
        )?
    } else {
        if guide.is_some() {
            input_error!(
                "--guide-model is read by --guidance autoguidance and --gfcg-guide weak only"
            );
        }
        args.strategy.build(steps, reward)?
    };
    let eval_reward = match &args.strategy.eval_reward {
        Some(spec) => Some(rewards.build(spec).context("--eval-reward")?),
        None => None,
    };
    let particles = args.strategy.particles_per_group();
    if args.init_latents.is_some() && !matches!(strategy, Built::None) {
        input_error!("--init-latents starts plain sampling; it cannot be combined with --guidance");
    }
    if init_image.is_some() && matches!(strategy, Built::Search(_)) {
        input_error!(
            "noise searches draw their own initial noise; they cannot start from --init-image"
        );
    }
    let groups: Vec<GroupSpec> = (0..args.num)
        .map(|g| GroupSpec {
            seed: args.seed + g as u64,
            cond: Condition::Prompt(0),
            particles,
        })
        .collect();
    let shape = sd.sample_shape();
    let init = sampler.schedule.init_noise_sigma;
    let mut pop = Population::new(&groups, &shape, init, &Device::Cpu)?;
    if let Some(path) = &args.init_latents {
        let data = read_latents(path)?;
        let numel: usize = shape.iter().product();
        let data = if data.len() == numel && args.num > 1 {
            data.repeat(args.num)
        } else {
            data
        };
        if data.len() != numel * args.num {
            input_error!(
                "--init-latents `{}` holds {} numbers; {} sample(s) of latent shape {:?} need {}",
                path.display(),
                data.len(),
                args.num,
                shape,
                numel * args.num
            );
        }
        let mut full = vec![args.num];
        full.extend_from_slice(&shape);
        pop.x = Tensor::from_vec(data, full, &Device::Cpu)?.affine(init, 0.0)?;
    }
    if let Some(img) = &init_image {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let pixels: Vec<f32> = img.as_raw().iter().map(|&b| b as f32 / 255.0).collect();
        let pixels = Tensor::from_vec(pixels, (1, h, w, 3), &Device::Cpu)?.permute((0, 3, 1, 2))?;
        let x0 = sd.encode_image(&pixels)?;
        let x0 = x0.repeat((pop.len(), 1, 1, 1))?;
        // pop.x holds init_noise_sigma·ε; the img2img start is α·x0 + σ·ε at its first point.
        let eps = pop.x.affine(1.0 / init, 0.0)?;
        pop.x = noised(&x0, &eps, &sampler.schedule.points[0])?;
    }
    let mut guidance: Vec<Box<dyn Guidance + '_>> = cfg
        .iter()
        .map(|g| Box::new(g.clone()) as Box<dyn Guidance>)
        .collect();
    if let Built::Step(g) = &strategy {
        guidance.push(Box::new(g.as_ref()));
    }
    if let Some(t) = TimeTravel::every_step(args.time_travel) {
        guidance.push(Box::new(t));
    }
    let engine = Engine {
        models: std::iter::once(&*sd as &dyn Denoiser)
            .chain(guide.as_deref().map(|g| g as &dyn Denoiser))
            .collect(),
        schedule: &sampler.schedule,
        solver: sampler.solver.as_ref(),
        guidance,
    };
    engine.validate()?;
    output::prepare_dir(&args.output)?;
    let mut trace = match &args.trace {
        Some(path) => Some(JsonlTrace::create(path)?),
        None => None,
    };
    let mut progress = crate::progress::Progress::new(
        sampler.schedule.points.len().saturating_sub(1),
        trace.as_mut().map(|t| t as &mut dyn TraceSink),
    );
    let result = match &strategy {
        Built::Search(search) => search.run(&engine, &groups, init, Some(&mut progress)),
        _ => engine.run(pop, Some(&mut progress)),
    };
    progress.finish();
    drop(progress);
    let outcome = match result {
        Ok(o) => o,
        Err(e) => {
            return Err(trace
                .as_mut()
                .and_then(JsonlTrace::take_error)
                .unwrap_or_else(|| e.into()))
        }
    };
    let parameters = TextParameters {
        model: model.clone(),
        text_encoders: args.text_encoders.clone(),
        ae: args.ae.as_ref().map(|p| p.display().to_string()),
        prompt,
        negative,
        scheduler: scheduler_name.unwrap_or_else(|| "default".into()),
        scheduler_class,
        solver: sampler.solver.name(),
        steps,
        eta: sampler.solver.eta().unwrap_or(0.0),
        cfg: cfg_scale,
        time_travel: args.time_travel,
        height,
        width,
        dtype: format!("{dtype:?}").to_lowercase(),
        n: args.num,
        seed: args.seed,
        init_latents: args.init_latents.as_ref().map(|p| p.display().to_string()),
        init_image: args.init_image.as_ref().map(|p| p.display().to_string()),
        strength: args.init_image.as_ref().map(|_| args.strength),
        particles_per_group: particles,
        strategy: args.strategy.clone(),
    };
    let latents = &outcome.population.x;
    // The evaluation reward, on the final latents (never steered by).
    let eval_scores: Vec<Option<f64>> = match &eval_reward {
        Some(r) => {
            let conds = outcome.population.conds();
            let cx = steerdiff_guidance::RewardContext {
                conds: &conds,
                at: steerdiff_guidance::StepPoint::CLEAN,
            };
            r.score(latents, &cx)?
                .into_iter()
                .map(|s| Some(s).filter(|s| s.is_finite()))
                .collect()
        }
        None => vec![None; outcome.population.len()],
    };
    let images = sd.decode(latents)?;
    let mut staged = Staged::new();
    let mut records = Vec::new();
    for (i, p) in outcome.population.particles.iter().enumerate() {
        let img = images.get(i)?.permute((1, 2, 0))?;
        let rgb: Vec<u8> = img
            .flatten_all()?
            .to_vec1::<f32>()?
            .iter()
            .map(|v| (v * 255.0).round().clamp(0.0, 255.0) as u8)
            .collect();
        let name = format!("image-{i:03}.png");
        let buf = image::RgbImage::from_raw(width as u32, height as u32, rgb)
            .context("image buffer size")?;
        // The record of the run that reproduces it: the whole run (the UNet's convolutions
        // round differently at other batch sizes, so a one-image re-run is not bit-exact).
        let range = &outcome.population.groups()[p.group];
        let mut argv = crate::invocation::to_argv(&args.flags);
        argv.extend([
            format!("--seed={}", args.seed),
            format!("--num={}", args.num),
        ]);
        let image_record = crate::png_record::ImageRecord {
            steerdiff: env!("CARGO_PKG_VERSION").into(),
            argv,
            file: name.clone(),
            particle: i - range.start,
            reward: p.reward,
            log_weight: p.log_weight.is_finite().then_some(p.log_weight),
            parameters: serde_json::to_value(&parameters)?,
        };
        let png =
            crate::png_record::encode(buf.as_raw(), width as u32, height as u32, &image_record)?;
        staged.add(&args.output.join(&name), &png)?;
        records.push(serde_json::json!({
            "group": p.group,
            "seed": p.seed,
            "image": name,
            "log_weight": p.log_weight,
            "reward": p.reward,
            "latents": outcome.population.row(i)?,
        }));
        if let Some(e) = eval_scores[i] {
            records.last_mut().expect("just pushed")["eval_reward"] = e.into();
        }
    }
    let record = serde_json::json!({
        "samples": records,
        "ledger": outcome.ledger,
        "parameters": parameters,
    });
    let samples_path = args.output.join("samples.json");
    staged.add(
        &samples_path,
        format!("{}\n", serde_json::to_string(&record)?).as_bytes(),
    )?;
    staged.add(
        &args.output.join("timing.json"),
        output::timing_json(&outcome.timing)?.as_bytes(),
    )?;
    if let Some(t) = trace.as_mut() {
        t.finish()?;
    }
    staged.commit()?;
    eprintln!(
        "steerdiff: {} image(s) → {} ({} model rows, {:.3} s)",
        outcome.population.len(),
        args.output.display(),
        outcome.ledger.total_rows(),
        outcome.timing.total_s,
    );
    Ok(())
}
