//! The flags of `steerdiff generate` ([`GenerateArgs`]) and the clap-free [`Options`] they
//! resolve to.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};
use steerdiff_pipelines::sd::lora::LoraSpec;
use steerdiff_pipelines::sd::WeightDType;

use super::invocation::Flags;
use crate::run::device::parse_device;
use crate::run::help::{COMMON, OUTPUTS, SAMPLING, TEXT_TO_IMAGE};
use crate::run::shard::Shard;
use crate::run::strategy::StrategyArgs;
use crate::run::{Keep, Options, PathKind};

/// `--seed`: a number, or `-1` for one drawn at random when the flags are parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seed {
    value: u64,
    /// It was drawn for `-1`.
    pub drawn: bool,
}

impl Seed {
    /// The seed of group 0.
    pub fn value(self) -> u64 {
        self.value
    }
}

/// Parses `--seed`: a whole number ≥ 0, or -1 for a random one (from the clock and the
/// process id: a fresh seed per run, not a secret).
fn parse_seed(s: &str) -> Result<Seed, String> {
    if s.trim() == "-1" {
        use std::hash::{BuildHasher as _, Hasher as _};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.write_u32(std::process::id());
        // Seeds below 2^32, so they are easy to read back and type.
        return Ok(Seed {
            value: h.finish() >> 32,
            drawn: true,
        });
    }
    s.trim()
        .parse::<u64>()
        .map(|value| Seed {
            value,
            drawn: false,
        })
        .map_err(|_| format!("expected a whole number ≥ 0, or -1 for a random seed (got `{s}`)"))
}

/// The model used when `--model` is not given: the embedded toy flow model.
pub const DEFAULT_MODEL: &str = "toy";

/// Flags of `steerdiff generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// The model: toy (default), toy-weak, gmm:SPEC.json, a Stable Diffusion / SDXL preset
    /// (sd15, sdxl, …), a diffusers folder or ORG/NAME repo, a single .safetensors file
    /// (SD 1.x/2.x/XL checkpoints in the A1111 / ComfyUI layout, SD3 / FLUX transformers), or a
    /// FLUX .gguf file (see `steerdiff list`).
    #[arg(short = 'm', long, value_name = "MODEL", help_heading = COMMON)]
    pub model: Option<String>,
    /// The Gaussian path a mixture is sampled on.
    #[arg(long, value_enum, default_value_t = PathKind::Vp, help_heading = SAMPLING)]
    pub path: PathKind,
    /// Condition on a class, by name or label (default: unconditional).
    #[arg(long, value_name = "NAME|LABEL", help_heading = COMMON)]
    pub class: Option<String>,
    /// Sampler or scheduler, see `steerdiff list` (default: the model's own — ddim on --path
    /// vp, flow-euler on --path flow, a text-to-image model's scheduler_config.json); for
    /// text-to-image models also ddim, ddpm, euler, euler-karras, euler-a, dpmpp-2m,
    /// dpmpp-2m-karras, a diffusers class name, or a scheduler_config.json path.
    #[arg(long, value_name = "NAME", visible_aliases = ["scheduler", "sampling-method"], help_heading = SAMPLING)]
    pub sampler: Option<String>,
    /// Number of solver steps [default: 50, or a preset's recommendation].
    #[arg(long, visible_alias = "num-inference-steps", help_heading = COMMON)]
    pub steps: Option<usize>,
    /// Noise scale η of ddim / flow-euler (default: the sampler's own).
    #[arg(long, allow_negative_numbers = true, help_heading = SAMPLING)]
    pub eta: Option<f64>,
    /// Classifier-free guidance scale (1 = none; needs --class or --prompt) [default: the
    /// model's recommendation — a preset's, the toy's 3 — else 1].
    #[arg(long, allow_negative_numbers = true, visible_aliases = ["cfg-scale", "guidance-scale"], help_heading = COMMON)]
    pub cfg: Option<f64>,
    /// CFG rescale φ in [0, 1] (0 = off).
    #[arg(
        long,
        value_name = "PHI",
        default_value_t = 0.0,
        allow_negative_numbers = true, help_heading = SAMPLING)]
    pub cfg_rescale: f64,
    /// Guide only while the noise level σ/α lies in [LO, HI].
    #[arg(long, value_name = "LO,HI", value_parser = crate::run::strategy::interval::parse_interval, allow_hyphen_values = true, help_heading = SAMPLING)]
    pub cfg_interval: Option<(f64, f64)>,
    /// Time travel (RePaint's resampling): after every step but the last, noise the state
    /// back and run the step again, U more times (0 = off). Harmonises the fills of --guidance
    /// replace / flowchef with their context; costs about 1 + U times the model rows.
    #[arg(long, value_name = "U", default_value_t = 0, help_heading = SAMPLING)]
    pub time_travel: usize,
    /// Number of samples (groups); group g uses seed SEED + g.
    #[arg(short = 'n', long = "num", default_value_t = 1, help_heading = COMMON)]
    pub num: usize,
    /// Seed of group 0; -1 draws one at random (printed, and recorded in samples.json and
    /// every PNG).
    #[arg(short = 's', long, default_value = "0", value_parser = parse_seed, allow_negative_numbers = true, help_heading = COMMON)]
    pub seed: Seed,
    /// The device: auto (the first GPU this binary was built for, else the CPU), cpu, cuda,
    /// cuda:N, metal, metal:N.
    #[arg(long, value_name = "DEVICE", default_value = crate::run::device::DEFAULT_DEVICE, help_heading = COMMON)]
    pub device: String,
    /// Weight dtype f32, f16 or bf16 [default: f32 on the CPU; bf16 on a GPU for SDXL, SD3
    /// and FLUX].
    #[arg(long, value_name = "DTYPE", help_heading = SAMPLING)]
    pub dtype: Option<String>,
    /// Largest number of model rows in one forward (default: the model's own).
    #[arg(long, value_name = "ROWS", help_heading = SAMPLING)]
    pub max_batch: Option<usize>,
    /// Text-to-image models: groups sampled together in one batch. 1 keeps every image
    /// independent of the others (shards and re-runs reproduce it bit for bit); more is
    /// faster on a GPU.
    #[arg(long, value_name = "G", default_value_t = 1, help_heading = TEXT_TO_IMAGE)]
    pub batch_groups: usize,
    /// Which final particles to write: each group's best by its reward, or all of them
    /// (FK's whole population).
    #[arg(long, value_enum, default_value_t = Keep::Best, help_heading = OUTPUTS)]
    pub keep: Keep,
    /// Output directory (created if missing). An earlier run's outputs there are replaced
    /// whole: its images, grids and timing that this run does not write are removed.
    #[arg(short = 'o', long = "output", value_name = "DIR", help_heading = COMMON)]
    pub output: PathBuf,
    /// Write one JSON line per step to FILE.
    #[arg(long, value_name = "FILE", help_heading = OUTPUTS)]
    pub trace: Option<PathBuf>,
    /// Steering strategy settings.
    #[command(flatten)]
    pub strategy: StrategyArgs,
    /// Text-to-image models: the prompt.
    #[arg(short = 'p', long, value_name = "TEXT", help_heading = COMMON)]
    pub prompt: Option<String>,
    /// Text-to-image models: the negative prompt (the unconditional row of CFG; default empty).
    #[arg(long, value_name = "TEXT", help_heading = COMMON, visible_alias = "negative-prompt")]
    pub negative: Option<String>,
    /// Text-to-image models: image height in pixels (default: the model's native size).
    #[arg(short = 'H', long, help_heading = TEXT_TO_IMAGE)]
    pub height: Option<usize>,
    /// Text-to-image models: image width in pixels (default: the model's native size).
    #[arg(short = 'W', long, help_heading = TEXT_TO_IMAGE)]
    pub width: Option<usize>,

    /// Text-to-image models: the weaker guiding model of autoguidance (and of --gfcg-guide
    /// weak): a preset, folder or repo with the same latent space as --model.
    #[arg(long, value_name = "MODEL", help_heading = TEXT_TO_IMAGE)]
    pub guide_model: Option<String>,
    /// Single-file --model: the diffusers-layout folder or Hub repo it takes the rest from.
    /// SD3 / FLUX: the text encoders (tokenizer*/ and text_encoder*/). SD 1.x/2.x/XL: the
    /// configs, tokenizers and scheduler (default: the family's base repo, e.g.
    /// stable-diffusion-v1-5/stable-diffusion-v1-5; its weights are not fetched).
    #[arg(long, value_name = "FOLDER|ORG/NAME", help_heading = TEXT_TO_IMAGE)]
    pub text_encoders: Option<String>,
    /// Stable Diffusion: what the UNet predicts, over its scheduler config (SD 2.x single
    /// files: `epsilon` for 2.x-base models, `v` for the 768-px ones).
    #[arg(long, value_enum, value_name = "KIND", help_heading = TEXT_TO_IMAGE)]
    pub prediction: Option<PredictionArg>,
    /// Stable Diffusion 1.x/2.x/XL and FLUX: merge a LoRA into the weights at load, with
    /// strength SCALE (default 1); repeatable. kohya (lora_unet_…, lora_te_…) and
    /// diffusers/peft (…lora_A/lora_B) files, LoCon included.
    #[arg(long = "lora", value_name = "FILE[:SCALE]", help_heading = TEXT_TO_IMAGE)]
    pub loras: Vec<String>,
    /// FLUX single-file --model: its autoencoder file (ae.safetensors).
    #[arg(long, value_name = "FILE", help_heading = TEXT_TO_IMAGE)]
    pub ae: Option<PathBuf>,
    /// Text-to-image models: the CLIP model of the `clip` and `aesthetic:MLP` rewards (a
    /// transformers-format folder or Hub repo).
    #[arg(long, value_name = "SOURCE", help_heading = TEXT_TO_IMAGE)]
    pub clip_model: Option<String>,
    /// Text-to-image models: start from these latents (JSON list, or an object with
    /// `initial_latents`), as handed to diffusers' pipeline as `latents=`.
    #[arg(long, value_name = "FILE.json", help_heading = TEXT_TO_IMAGE)]
    pub init_latents: Option<PathBuf>,
    /// Text-to-image models: img2img from this image (its size sets --height/--width).
    #[arg(long, value_name = "IMAGE", help_heading = TEXT_TO_IMAGE, visible_alias = "init-img")]
    pub init_image: Option<PathBuf>,
    /// Text-to-image models: img2img strength in (0, 1], the fraction of the steps run
    /// [default: 0.8].
    #[arg(long, help_heading = TEXT_TO_IMAGE)]
    pub strength: Option<f64>,
    /// Run only shard I of N: a contiguous block of the -n groups, with the seeds they have in
    /// the whole run (default: from SLURM_ARRAY_TASK_ID/COUNT or JOB_COMPLETION_INDEX with
    /// STEERDIFF_SHARD_COUNT, if set). Join shards with `steerdiff merge`.
    #[arg(long, value_name = "I/N", value_parser = Shard::parse, help_heading = OUTPUTS)]
    pub shard: Option<Shard>,
    /// Run every line of FILE: a .jsonl of flag overrides per line ({"class": "star", "cfg":
    /// 3}), or one prompt (text models) or class (class-conditional models) per line; line i
    /// writes DIR/line-NNNN/.
    #[arg(long, value_name = "FILE", help_heading = OUTPUTS)]
    pub prompt_file: Option<PathBuf>,
    /// Read flags from a TOML file (keys are long flag names: cfg = 3, class = "star"); flags
    /// on the command line win.
    #[arg(long, value_name = "FILE.toml", help_heading = OUTPUTS)]
    pub config: Option<PathBuf>,
    /// The flags given (on the command line or in --config), as recorded in every PNG; filled
    /// in from the parsed arguments by the binary.
    #[arg(skip)]
    pub flags: Flags,
}

impl GenerateArgs {
    /// The resolved, clap-free options of the run (the device resolved, `auto` included).
    pub fn options(&self) -> Result<Options> {
        Ok(Options {
            device: parse_device(&self.device)?,
            dtype: self.dtype.as_deref().map(WeightDType::parse).transpose()?,
            path: self.path,
            class: self.class.clone(),
            prompt: self.prompt.clone(),
            negative: self.negative.clone(),
            sampler: self.sampler.clone(),
            steps: self.steps,
            eta: self.eta,
            cfg: self.cfg,
            cfg_rescale: self.cfg_rescale,
            cfg_interval: self.cfg_interval,
            time_travel: self.time_travel,
            n: self.num,
            seed: self.seed.value(),
            strategy: self.strategy.clone(),
            shard: self.shard,
            observation: None,
            height: self.height,
            width: self.width,
            guide_model: self.guide_model.clone(),
            text_encoders: self.text_encoders.clone(),
            prediction: self.prediction.map(PredictionArg::parameterization),
            loras: self
                .loras
                .iter()
                .map(|s| LoraSpec::parse(s))
                .collect::<std::result::Result<_, _>>()?,
            ae: self.ae.clone(),
            clip_model: self.clip_model.clone(),
            init_latents: self.init_latents.clone(),
            init_image: self.init_image.clone(),
            strength: self.strength,
            max_batch: self.max_batch,
            batch_groups: self.batch_groups,
            keep: self.keep,
            custom_reward: None,
        })
    }

    /// The model to load: `--model`, else [`DEFAULT_MODEL`].
    pub fn model(&self) -> &str {
        self.model.as_deref().unwrap_or(DEFAULT_MODEL)
    }
}

/// `--prediction`: what a Stable Diffusion UNet predicts (diffusers' `prediction_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PredictionArg {
    /// The noise ε (`epsilon`; SD 1.x, 2.x-base, SDXL).
    #[value(alias = "eps")]
    Epsilon,
    /// The velocity v = α·ε − σ·x0 (`v_prediction`; SD 2.x at 768 px).
    #[value(alias = "v_prediction", alias = "v-prediction")]
    V,
}

impl PredictionArg {
    /// The engine's parameterisation.
    pub fn parameterization(self) -> steerdiff_guidance::Parameterization {
        match self {
            PredictionArg::Epsilon => steerdiff_guidance::Parameterization::Epsilon,
            PredictionArg::V => steerdiff_guidance::Parameterization::VPrediction,
        }
    }
}
