//! Everything `steerdiff list` names: one table per kind, so an addition is one line.

use std::fmt::Write as _;

use steerdiff_guidance::sampler::SAMPLERS;

use crate::run::strategy::StrategyKind;

/// Models: `(how to name it on the command line, one-line description)`.
pub const MODELS: &[(&str, &str)] = &[
    (
        "toy",
        "the default: embedded class-conditional rectified-flow U-Net for 32×32 shape images \
         (10 classes: circle square triangle cross ring star diamond heart bars arrow), \
         CFG-capable; `steerdiff toy` trains and evaluates it",
    ),
    (
        "toy-weak",
        "the toy model's weaker twin (same network, 1/19 of the training), for autoguidance",
    ),
    (
        "gmm:SPEC.json",
        "exact Gaussian-mixture denoiser (ground truth, zero model error); SPEC.json = \
     {\"dim\": D, \"components\": [{\"weight\", \"mean\", \"std\", \"class\"}], \"class_names\"?}",
    ),
    (
        "sd15 | sd21 | sd21-base | sd-turbo | sdxl | sdxl-turbo",
        "Stable Diffusion 1.x/2.x/XL presets (Hub repos, cached as hf-hub does; HF_HOME, \
         HF_HUB_OFFLINE, HF_TOKEN): --prompt \"…\" --negative \"…\" --cfg S --scheduler NAME",
    ),
    (
        "sd3-medium | sd3.5-medium | sd3.5-large | sd3.5-large-turbo | flux-schnell | flux-dev",
        "SD3 / SD3.5 and FLUX.1 presets: the original single files and the text encoders of the \
         diffusers repo, from the Hub (each with its authors' steps and CFG)",
    ),
    (
        "CHECKPOINT.safetensors",
        "a Stable Diffusion 1.x/2.x/XL checkpoint in its original single file (the A1111 / \
         ComfyUI / civitai layout: UNet, VAE and text encoders in one file), with the configs, \
         tokenizers and scheduler of --text-encoders ORG/NAME|FOLDER (default: the family's \
         base repo; its weights are not fetched); SD 2.x: --prediction epsilon|v",
    ),
    (
        "SD3_OR_FLUX.safetensors",
        "an SD3 / SD3.5 or FLUX.1 transformer in its original single file, with --text-encoders \
         ORG/NAME|FOLDER (the diffusers repo's tokenizer*/ text_encoder*/: CLIP-L, CLIP-G, T5) \
         and, for FLUX, --ae ae.safetensors; flow-match Euler (--eta > 0 stochastic)",
    ),
    (
        "FLUX.gguf",
        "a FLUX.1 transformer quantized to GGUF (city96's Q8_0 / k-quant files, or `steerdiff \
         quantize IN.safetensors OUT.gguf --type q8_0|q4_k|…`), kept quantized in memory; \
         --text-encoders and --ae as for the .safetensors file",
    ),
    (
        "ORG/NAME[@REV] | FOLDER",
        "any diffusers-format Stable Diffusion 1.x/2.x/XL repo or local folder (model_index.json), \
         safetensors only; --dtype f32|f16|bf16, --height/--width, --init-latents FILE.json",
    ),
];

/// CFG, the per-step guidance every strategy composes with (a flag, not a `--guidance`).
pub const CFG: (&str, &str) = (
    "cfg",
    "classifier-free guidance (Ho & Salimans 2022): --cfg S (1 = off, needs --class), \
     --cfg-rescale PHI (Lin et al. 2024), --cfg-interval LO,HI on σ/α (Kynkäänniemi et al. 2024)",
);

/// Guidance: CFG, then every registered strategy's `list` line.
pub fn guidance() -> Vec<(String, String)> {
    let mut rows = vec![(CFG.0.to_string(), CFG.1.to_string())];
    rows.extend(StrategyKind::ALL.iter().map(|k| {
        let def = k.def();
        (
            def.name.to_string(),
            format!("--guidance {}: {}", def.name, def.list),
        )
    }));
    rows
}

/// Rewards: `(name, one-line description)`.
pub const REWARDS: &[(&str, &str)] = &[
    (
        "quadratic:M",
        "mixtures: −‖x − m‖²/2 (M: one number per dimension, or one for all)",
    ),
    ("linear:W", "mixtures: w·x"),
    (
        "constant:C",
        "mixtures: C for every sample (steering with it changes nothing)",
    ),
    (
        "classifier",
        "toy model: ln p(class | x̂0) under toy-classifier (the judges never steer)",
    ),
    (
        "jpeg[:Q]",
        "text-to-image models: JPEG compressibility (−kB at quality Q, default 95) of the VAE \
         decode of x̂0 (weight-free, as in DDPO)",
    ),
    (
        "jpeg-preview[:Q]",
        "text-to-image models: the same on the linear latent→RGB preview (no decoder pass)",
    ),
    (
        "clip",
        "text-to-image models: CLIP score 100·cos(image, prompt) of the VAE decode of x̂0, on \
         --clip-model (default openai/clip-vit-large-patch14)",
    ),
    (
        "aesthetic:MLP.safetensors",
        "text-to-image models: a LAION-style aesthetic MLP (layers.K.weight/bias) on the unit \
         CLIP image embedding of the VAE decode of x̂0",
    ),
    (
        "many:N[:C]:SPEC",
        "toy model and mixtures: FK's many-sample estimate of SPEC, log-mean-exp over N \
         Gaussian posterior draws around x̂0 (spread of a data prior with std C, default 0.5); \
         exact SPEC on final samples",
    ),
    (
        "brightness",
        "toy model: the mean pixel value of x̂0 (the Rust twin of examples/plugins/brightness*.py)",
    ),
    (
        "stdio:COMMAND",
        "a reward plugin in any language, spawned from COMMAND's argv (no shell) and spoken to \
         over stdin/stdout, protocol steerdiff-reward/1 (docs/reward-plugins.md); \
         --plugin-timeout/-retries/-on-error/-concurrency/-batch",
    ),
    (
        "http://HOST:PORT",
        "a reward plugin served over HTTP (loopback only unless --plugin-allow-remote)",
    ),
    (
        "ensemble:MODE:W1*SPEC1;W2*SPEC2",
        "a weighted ensemble of any rewards: MODE sum, z (batch z-scores) or rank (mean rank); \
         z and rank depend on the batch",
    ),
];

/// The judges of `steerdiff eval --judge` (and `--second-judge`): what measures and never
/// steers.
pub const JUDGES: &[(&str, &str)] = &[
    (
        steerdiff_pipelines::toy::model::JUDGE,
        "toy model, the default: a ResNet with batch normalisation (another family than the \
         guidance classifier), its own data and augmentation; 99.80 % on fresh images",
    ),
    (
        steerdiff_pipelines::toy::model::EVAL_CLASSIFIER,
        "toy model: the first judge, cnn-a like the guidance classifier (errors correlated with \
         it); 99.75 % on fresh images",
    ),
    (
        steerdiff_pipelines::model::BAYES_JUDGE,
        "mixtures, the default: the exact Bayes classifier of the mixture's components",
    ),
    (
        "REWARD SPEC",
        "text-to-image models: a held-out reward whose mean is reported (e.g. clip); never the \
         reward that steers",
    ),
];

/// The text of `steerdiff list`: sections MODELS, SAMPLERS, GUIDANCE, REWARDS, JUDGES.
pub fn listing() -> String {
    let owned = |rows: &[(&str, &str)]| -> Vec<(String, String)> {
        rows.iter()
            .map(|(n, d)| (n.to_string(), d.to_string()))
            .collect()
    };
    let sections = [
        ("MODELS", owned(MODELS)),
        ("SAMPLERS", owned(SAMPLERS)),
        ("GUIDANCE", guidance()),
        ("REWARDS", owned(REWARDS)),
        ("JUDGES (steerdiff eval --judge)", owned(JUDGES)),
    ];
    let width = sections
        .iter()
        .flat_map(|(_, rows)| rows.iter().map(|(n, _)| n.chars().count()))
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (i, (title, rows)) in sections.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = writeln!(out, "{title}");
        if rows.is_empty() {
            let _ = writeln!(out, "  (none yet)");
        }
        for (name, desc) in rows {
            let _ = writeln!(out, "  {name:<width$}  {desc}");
        }
    }
    out
}

/// The model names, comma-separated (for error messages).
pub fn model_names() -> String {
    MODELS
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_names_everything() {
        let text = listing();
        for (name, _) in MODELS.iter().chain(SAMPLERS).chain(REWARDS).chain(JUDGES) {
            assert!(text.contains(name), "{name} missing");
        }
        for kind in StrategyKind::ALL {
            let line = format!("--guidance {}: {}", kind.cli_name(), kind.def().list);
            assert!(text.contains(&line), "{} missing", kind.cli_name());
        }
        for title in ["MODELS", "SAMPLERS", "GUIDANCE", "REWARDS", "JUDGES"] {
            assert!(text.contains(title));
        }
    }
}
