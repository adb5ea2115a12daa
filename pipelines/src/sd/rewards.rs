//! Rewards on real images from latent models: latents `x̂0` are turned into pixels (the full
//! VAE decode, or the cheap linear preview) and scored.
//!
//! * [`JpegCompressibility`] — the classic weight-free reward (Black et al. 2024, DDPO):
//!   minus the JPEG size of the image in kB at a fixed quality; higher = simpler image.
//!
//! CLIP score, the aesthetic MLP and zero-shot classification are in [`super::clip_rewards`].

use std::sync::Arc;

use candle_core::{DType, Tensor};
use steerdiff_guidance::{Reward, RewardContext};

use super::preview::LatentPreview;
use super::vae::Vae;
use crate::{Error, Result};

/// A latents → images `[B, 3, H, W]` in `[0, 1]` map (e.g. another family's decoder).
pub type ImageFn = Arc<dyn Fn(&Tensor) -> Result<Tensor> + Send + Sync>;

/// How latents become pixels for a reward.
#[derive(Clone)]
pub enum Pixels {
    /// The full VAE decode (accurate, costs a decoder pass per item).
    Decode(Arc<Vae>),
    /// The family's linear latent → RGB preview at latent resolution (nearly free).
    Preview(&'static LatentPreview),
    /// Any decoder (FLUX's autoencoder, …).
    Custom(ImageFn),
}

impl std::fmt::Debug for Pixels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pixels::Decode(_) => write!(f, "Decode"),
            Pixels::Preview(p) => write!(f, "Preview({})", p.name),
            Pixels::Custom(_) => write!(f, "Custom"),
        }
    }
}

impl Pixels {
    /// Images `[B, 3, H, W]` in `[0, 1]` for latents `[B, C, h, w]`.
    pub fn images(&self, latents: &Tensor) -> Result<Tensor> {
        match self {
            Pixels::Decode(vae) => vae.decode(latents),
            Pixels::Preview(p) => p.apply(latents),
            Pixels::Custom(f) => f(latents),
        }
    }
}

/// How many latents a reward turned into pixels since it was last asked: the ledger's
/// `decodes` ([`Reward::take_decodes`]). A clone starts at zero.
#[derive(Debug, Default)]
pub struct DecodeCount(std::sync::atomic::AtomicU64);

impl Clone for DecodeCount {
    fn clone(&self) -> Self {
        DecodeCount::default()
    }
}

impl DecodeCount {
    /// Counts `n` decoded latents.
    pub fn add(&self, n: usize) {
        self.0
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// The count since the last `take`, resetting it.
    pub fn take(&self) -> u64 {
        self.0.swap(0, std::sync::atomic::Ordering::Relaxed)
    }
}

impl Pixels {
    /// [`Pixels::images`], counted in `count`.
    pub fn images_counted(&self, latents: &Tensor, count: &DecodeCount) -> Result<Tensor> {
        let images = self.images(latents)?;
        count.add(latents.dim(0)?);
        Ok(images)
    }
}

/// Any pixel reward (a plugin, say) applied to latents: they are turned into images by
/// `pixels` and handed to `inner` in the toy's pixel convention, `[-1, 1]`.
pub struct OnPixels {
    pixels: Pixels,
    inner: Arc<dyn Reward>,
    name: String,
    decodes: DecodeCount,
}

impl OnPixels {
    /// `inner` scored on the images `pixels` makes of the latents.
    pub fn new(pixels: Pixels, inner: Arc<dyn Reward>) -> Self {
        let name = format!("{}({:?})", inner.name(), pixels);
        OnPixels {
            pixels,
            inner,
            name,
            decodes: DecodeCount::default(),
        }
    }
}

impl Reward for OnPixels {
    fn name(&self) -> &str {
        &self.name
    }

    fn score(&self, x0: &Tensor, cx: &RewardContext) -> steerdiff_guidance::Result<Vec<f64>> {
        let images = self.pixels.images_counted(x0, &self.decodes).map_err(|e| {
            steerdiff_guidance::Error::Reward {
                name: self.name.clone(),
                message: e.to_string(),
            }
        })?;
        self.inner.score(&images.affine(2.0, -1.0)?, cx)
    }

    fn take_cached(&self) -> u64 {
        self.inner.take_cached()
    }

    fn take_decodes(&self) -> u64 {
        self.decodes.take() + self.inner.take_decodes()
    }
}

/// Encodes one `[3, H, W]` image in `[0, 1]` as 8-bit RGB bytes.
pub fn to_rgb8(image: &Tensor) -> Result<(Vec<u8>, u32, u32)> {
    let (c, h, w) = image.dims3()?;
    if c != 3 {
        return Err(Error::Spec(format!("expected 3 channels, got {c}")));
    }
    let data = image
        .to_dtype(DType::F32)?
        .permute((1, 2, 0))?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let rgb = data
        .iter()
        .map(|v| (v * 255.0).round().clamp(0.0, 255.0) as u8)
        .collect();
    Ok((rgb, w as u32, h as u32))
}

/// Minus the JPEG size in kB (quality `q`) of each image.
#[derive(Debug, Clone)]
pub struct JpegCompressibility {
    pixels: Pixels,
    quality: u8,
    name: String,
    decodes: DecodeCount,
}

impl JpegCompressibility {
    /// A JPEG-compressibility reward at `quality` (1–100; DDPO uses 95).
    pub fn new(pixels: Pixels, quality: u8) -> Result<Self> {
        if !(1..=100).contains(&quality) {
            return Err(Error::Spec(format!(
                "JPEG quality must be in 1..=100 (got {quality})"
            )));
        }
        let name = match pixels {
            Pixels::Decode(_) | Pixels::Custom(_) => format!("jpeg:{quality}"),
            Pixels::Preview(_) => format!("jpeg-preview:{quality}"),
        };
        Ok(JpegCompressibility {
            pixels,
            quality,
            name,
            decodes: DecodeCount::default(),
        })
    }

    /// Minus the JPEG size in kB of one `[3, H, W]` image in `[0, 1]`.
    pub fn score_image(&self, image: &Tensor) -> Result<f64> {
        let (rgb, w, h) = to_rgb8(image)?;
        let mut bytes = Vec::new();
        let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, self.quality);
        enc.encode(&rgb, w, h, image::ExtendedColorType::Rgb8)
            .map_err(|e| Error::Spec(format!("JPEG encoding failed: {e}")))?;
        Ok(-(bytes.len() as f64) / 1000.0)
    }
}

impl Reward for JpegCompressibility {
    fn name(&self) -> &str {
        &self.name
    }

    fn take_decodes(&self) -> u64 {
        self.decodes.take()
    }

    fn score(&self, x0: &Tensor, _cx: &RewardContext) -> steerdiff_guidance::Result<Vec<f64>> {
        let run = || -> Result<Vec<f64>> {
            let images = self.pixels.images_counted(x0, &self.decodes)?;
            (0..images.dim(0)?)
                .map(|i| self.score_image(&images.get(i)?))
                .collect()
        };
        run().map_err(|e| steerdiff_guidance::Error::Reward {
            name: self.name.clone(),
            message: e.to_string(),
        })
    }
}

/// Parses an image reward: `jpeg[:Q]` (on `decode`, the full decoder) or `jpeg-preview[:Q]`
/// (the family's linear `preview`); `Q` defaults to 95.
pub fn parse_image_reward(
    spec: &str,
    decode: Option<Pixels>,
    preview: &'static LatentPreview,
) -> Result<Arc<dyn Reward>> {
    let (kind, arg) = spec.split_once(':').unwrap_or((spec, ""));
    let quality = if arg.is_empty() {
        95
    } else {
        arg.parse::<u8>().map_err(|_| {
            Error::Spec(format!(
                "reward `{spec}`: `{arg}` is not a JPEG quality 1..=100"
            ))
        })?
    };
    match kind {
        "jpeg" => {
            let pixels = decode.ok_or_else(|| {
                Error::Spec(format!("reward `{spec}` needs a model with a decoder"))
            })?;
            Ok(Arc::new(JpegCompressibility::new(pixels, quality)?))
        }
        "jpeg-preview" => Ok(Arc::new(JpegCompressibility::new(
            Pixels::Preview(preview),
            quality,
        )?)),
        other => Err(Error::Spec(format!(
            "unknown image reward `{other}` (valid: jpeg[:Q], jpeg-preview[:Q], clip, \
             aesthetic:MLP.safetensors)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn flat_images_compress_better_than_noise() {
        let sd15 = &super::super::preview::SD15;
        let r = JpegCompressibility::new(Pixels::Preview(sd15), 95).unwrap();
        let flat = Tensor::full(0.5f32, (3, 32, 32), &Device::Cpu).unwrap();
        let noise: Vec<f32> = (0..3 * 32 * 32)
            .map(|i| ((i * 7919) % 255) as f32 / 255.0)
            .collect();
        let noise = Tensor::from_vec(noise, (3, 32, 32), &Device::Cpu).unwrap();
        let a = r.score_image(&flat).unwrap();
        let b = r.score_image(&noise).unwrap();
        assert!(a > b, "flat {a} vs noise {b}");
        assert!(parse_image_reward("jpeg:0", None, sd15).is_err());
        assert!(parse_image_reward("jpeg", None, sd15).is_err());
        assert!(parse_image_reward("jpeg-preview:80", None, sd15).is_ok());
    }
}
