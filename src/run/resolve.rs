//! Resolving what a run asks of its model before anything is loaded or sampled: option
//! checks, the conditioning (classes or prompts), the sampler.

use anyhow::{Context as _, Result};
use steerdiff_guidance::sampler::Sampler;
use steerdiff_guidance::Condition;
use steerdiff_pipelines::model::{Family, Model};

use super::options::{Options, PathKind};
use crate::error::input_error;

pub(super) fn check_options(opts: &Options) -> Result<()> {
    if opts.n == 0 {
        input_error!("-n must be at least 1 (the number of samples to draw)");
    }
    if opts.seed.checked_add(opts.n as u64 - 1).is_none() {
        input_error!(
            "--seed {} with -n {} overflows the seed range (group g uses seed S + g); use a smaller --seed",
            opts.seed,
            opts.n
        );
    }
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
    if opts.max_batch == Some(0) {
        input_error!("--max-batch must be at least 1");
    }
    Ok(())
}

/// The conditioning of a run: what every group is conditioned on, the class's name, and
/// the prompts (prompt 0, then GFCG's zero-shot competitors).
pub(super) struct Conditioning {
    pub cond: Condition,
    pub class_name: Option<String>,
    pub texts: Vec<String>,
}

pub(super) fn conditioning(model: &Model, opts: &Options) -> Result<Conditioning> {
    if model.family() == Family::TextToImage {
        let Some(prompt) = &opts.prompt else {
            input_error!(
                "--model {} is a text-to-image model: give --prompt \"…\"",
                model.source()
            );
        };
        if opts.class.is_some() {
            input_error!(
                "--class is for class-conditional models; {} takes --prompt",
                model.source()
            );
        }
        let mut texts = vec![prompt.clone()];
        texts.extend(opts.strategy.per_step.zero_shot.iter().cloned());
        return Ok(Conditioning {
            cond: Condition::Prompt(0),
            class_name: None,
            texts,
        });
    }
    for (given, flag) in [
        (opts.prompt.is_some(), "--prompt"),
        (opts.negative.is_some(), "--negative"),
        (opts.guide_model.is_some(), "--guide-model"),
        (opts.init_latents.is_some(), "--init-latents"),
        (opts.init_image.is_some(), "--init-image"),
        (
            opts.height.is_some() || opts.width.is_some(),
            "--height / --width",
        ),
    ] {
        if given {
            input_error!(
                "{flag} is for text-to-image models; `{}` is not one (drop {flag}, or name a \
                 Stable Diffusion / SD3 / FLUX model with --model)",
                model.source()
            );
        }
    }
    let (cond, class_name) = match &opts.class {
        None => (Condition::Null, None),
        Some(name) => {
            let (label, cname) = model.class(name).context("--class").map_err(|e| {
                // A bad class name is the user's to fix (exit 2).
                anyhow::Error::new(crate::error::InputError(format!("{e:#}")))
            })?;
            (Condition::Class(label), cname)
        }
    };
    Ok(Conditioning {
        cond,
        class_name,
        texts: vec![],
    })
}

/// The sampler for the run. Strategies that branch or resample particles need a stochastic
/// sampler (`needs_noise`, from the built strategy's own needs): where η is free and not
/// given, use 1; a fixed-η sampler keeps its own and the engine refuses it later.
pub(super) fn resolve_sampler(
    model: &Model,
    opts: &Options,
    steps: usize,
    needs_noise: bool,
) -> Result<(Sampler, String)> {
    let name = opts.sampler.as_deref();
    if opts.eta.is_none() && needs_noise {
        if let Ok(s) = model.sampler(name, steps, Some(1.0)) {
            return Ok(s);
        }
    }
    match model.sampler(name, steps, opts.eta) {
        Ok(s) => Ok(s),
        Err(steerdiff_pipelines::Error::Engine(e @ steerdiff_guidance::Error::Unsupported(_)))
            if model.family() == Family::Mixture =>
        {
            // A sampler of the other path: a mixture can be sampled on either.
            let other = match opts.path {
                PathKind::Vp => "flow",
                PathKind::Flow => "vp",
            };
            input_error!("{e}; or sample the mixture on the other path with --path {other}")
        }
        Err(e) => Err(e.into()),
    }
}

/// Text-to-image models: the image size (the `--height`/`--width` asked for, else the init
/// image's, else the model's native one) and the prompts, encoded; `None` for other models.
pub(super) fn prepare_text(
    model: &mut Model,
    opts: &Options,
    c: &Conditioning,
    init_image: Option<&image::RgbImage>,
) -> Result<Option<[usize; 2]>> {
    if model.family() != Family::TextToImage {
        return Ok(None);
    }
    if opts.init_latents.is_some() && init_image.is_some() {
        input_error!("give either --init-image or --init-latents, not both");
    }
    let native = model
        .image_size()
        .expect("text-to-image models have a size");
    let (h0, w0) = match init_image {
        Some(img) => (img.height() as usize, img.width() as usize),
        None => native,
    };
    let size = (opts.height.unwrap_or(h0), opts.width.unwrap_or(w0));
    super::limits::check_image_size(size.0, size.1, &size_remedy(model, opts, init_image))?;
    if let Some(img) = init_image {
        if (img.height() as usize, img.width() as usize) != size {
            input_error!(
                "--init-image is {}×{} but --height/--width ask for {}×{}",
                img.height(),
                img.width(),
                size.0,
                size.1
            );
        }
    }
    let texts: Vec<&str> = c.texts.iter().map(String::as_str).collect();
    model.set_text(size, &texts, opts.negative.as_deref())?;
    Ok(Some([size.0, size.1]))
}

/// Where a text-to-image run's size comes from and how to change it, for the size limit's
/// message: the flags, the init image's size, or the model's native size (its config).
fn size_remedy(model: &Model, opts: &Options, init_image: Option<&image::RgbImage>) -> String {
    let (base, fix) = match init_image {
        Some(_) => (
            "the --init-image's size".into(),
            "give a smaller --init-image",
        ),
        None => (
            model
                .native_size_origin()
                .unwrap_or_else(|| "the model's native size".into()),
            "correct that config, or give --width and --height",
        ),
    };
    match (opts.height.is_some(), opts.width.is_some()) {
        (true, true) => "give a smaller --width / --height".into(),
        (false, false) => format!("the size is the default: {base}; {fix}"),
        (h, _) => format!(
            "{} is the default: {base}; give both --width and --height",
            if h { "the width" } else { "the height" }
        ),
    }
}

/// Loads `--guide-model` for autoguidance: the same device, size and prompts as `model`,
/// and it must share its latent space and noise path.
pub(super) fn load_guide(
    spec: &str,
    model: &Model,
    opts: &Options,
    c: &Conditioning,
    image_size: Option<[usize; 2]>,
) -> Result<Model> {
    let mut g = steerdiff_pipelines::model::load(spec, &opts.load_options())
        .with_context(|| format!("loading --guide-model `{spec}`"))?;
    let texts: Vec<&str> = c.texts.iter().map(String::as_str).collect();
    let size = image_size.expect("only text models take --guide-model");
    g.set_text((size[0], size[1]), &texts, opts.negative.as_deref())?;
    let (a, b) = (g.denoiser(), model.denoiser());
    if a.sample_shape() != b.sample_shape() || a.path() != b.path() {
        input_error!(
            "--guide-model `{spec}` does not share `{}`'s latent space and noise path \
             (latents {:?} vs {:?}); autoguidance compares the two models' predictions",
            model.source(),
            a.sample_shape(),
            b.sample_shape()
        );
    }
    Ok(g)
}
