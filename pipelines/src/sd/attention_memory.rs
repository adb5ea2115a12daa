//! The memory an image size costs in attention, checked when the size is set, before any
//! tensor of that size exists.
//!
//! Every attention here (candle's UNet and VAE blocks, MMDiT, FLUX) materialises its score
//! matrix: `heads × queries × keys` values per image row, where queries and keys are the
//! tokens at the layer's resolution. Tokens grow with the square of the image side, scores
//! with its fourth power: a 4096² image on a tiny UNet whose first block attends at latent
//! resolution needs some 10¹⁴ scores, and no allocator failure can be caught in time (the
//! process is aborted or killed). So a size whose largest attention needs more than
//! [`MAX_ATTENTION_SCORES`] values per image row is refused with the numbers.

use candle_transformers::models::stable_diffusion::unet_2d::UNet2DConditionModelConfig;

use crate::{Error, Result};

/// Most attention scores one image row may materialise in one layer by default: 2^31 values
/// (8 GiB in f32), which SD 1.5 at 1024² (8 heads × 16384² tokens) just fits;
/// `STEERDIFF_MAX_ATTENTION_SCORES` sets another limit.
pub const MAX_ATTENTION_SCORES: u64 = 1 << 31;

/// Text tokens a DiT attends to jointly with the image (SD3: 77 CLIP + 256 T5; FLUX: up to
/// 512 T5): an allowance, since the size is set before the prompts are encoded.
pub const DIT_TEXT_TOKENS: u64 = 512;

/// The limit: `STEERDIFF_MAX_ATTENTION_SCORES` when it is a number, else
/// [`MAX_ATTENTION_SCORES`].
pub fn limit() -> u64 {
    std::env::var("STEERDIFF_MAX_ATTENTION_SCORES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(MAX_ATTENTION_SCORES)
}

/// Scores per image row of the largest attention of a UNet at latent size `latent_hw`: each
/// down block `i` with cross-attention attends over `(h/2^i)·(w/2^i)` tokens with its
/// `attention_head_dim` heads (diffusers' name for the head count); the VAE's mid block, one
/// head at latent resolution, counts too.
pub fn unet_scores(config: &UNet2DConditionModelConfig, latent_hw: (usize, usize)) -> u64 {
    let tokens = |level: usize| {
        let (h, w) = (latent_hw.0 >> level.min(63), latent_hw.1 >> level.min(63));
        (h as u64).saturating_mul(w as u64)
    };
    let vae = tokens(0).saturating_mul(tokens(0));
    config
        .blocks
        .iter()
        .enumerate()
        .filter(|(_, b)| b.use_cross_attn.is_some())
        .map(|(i, b)| {
            let t = tokens(i);
            (b.attention_head_dim as u64).saturating_mul(t.saturating_mul(t))
        })
        .fold(vae, u64::max)
}

/// Scores per image row of a DiT's joint attention: `heads × (image + text tokens)²`, with
/// `image_tokens` after patching and [`DIT_TEXT_TOKENS`] text tokens.
pub fn dit_scores(heads: usize, image_tokens: u64) -> u64 {
    let t = image_tokens.saturating_add(DIT_TEXT_TOKENS);
    (heads as u64).saturating_mul(t.saturating_mul(t))
}

/// Refuses a `height × width` image of `family` whose largest attention needs `scores`
/// values per image row, beyond [`limit`].
pub fn check(family: &str, height: usize, width: usize, scores: u64) -> Result<()> {
    let limit = limit();
    if scores <= limit {
        return Ok(());
    }
    Err(Error::Spec(format!(
        "an image of {width}×{height} pixels needs {scores} attention scores per image in \
         {family}'s largest attention layer ({:.0} GiB in f32), more than the {limit} \
         steerdiff allows; give a smaller --width / --height (or a smaller --init-image), or \
         raise the limit with STEERDIFF_MAX_ATTENTION_SCORES if this machine has the memory",
        scores as f64 * 4.0 / f64::from(1u32 << 30)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_transformers::models::stable_diffusion::unet_2d::BlockConfig;

    fn sd15() -> UNet2DConditionModelConfig {
        let block = |out_channels, cross: bool| BlockConfig {
            out_channels,
            use_cross_attn: cross.then_some(1),
            attention_head_dim: 8,
        };
        UNet2DConditionModelConfig {
            blocks: vec![
                block(320, true),
                block(640, true),
                block(1280, true),
                block(1280, false),
            ],
            ..UNet2DConditionModelConfig::default()
        }
    }

    #[test]
    fn sd15_fits_at_1024_and_not_at_2048() {
        // 512²: 8 heads × 4096² tokens in the first block.
        assert_eq!(unet_scores(&sd15(), (64, 64)), 8 * 4096 * 4096);
        assert!(check("SD 1.5", 1024, 1024, unet_scores(&sd15(), (128, 128))).is_ok());
        let e = check("SD 1.5", 2048, 2048, unet_scores(&sd15(), (256, 256)))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("2048×2048") && e.contains("STEERDIFF_MAX_ATTENTION_SCORES"),
            "{e}"
        );
    }

    #[test]
    fn a_unet_without_attention_counts_its_vae_and_dits_their_text() {
        let mut cfg = sd15();
        cfg.blocks.iter_mut().for_each(|b| b.use_cross_attn = None);
        assert_eq!(unet_scores(&cfg, (10, 20)), 200 * 200);
        assert_eq!(dit_scores(24, 4096), 24 * 4608 * 4608);
        // Sizes that overflow u64 saturate (and are refused) rather than wrap.
        assert_eq!(unet_scores(&sd15(), (1 << 40, 1 << 40)), u64::MAX);
    }
}
