//! Cheap previews: a linear map from latents to RGB, per latent family, without running a
//! decoder — for intermediate rewards (`jpeg-preview`) and progress pictures.
//!
//! ```text
//! rgb(p) = F^T · z(p) + b        (per latent pixel p; z in the model's scaled latent space)
//! image  = clamp((rgb + 1)/2, 0, 1)
//! ```
//!
//! The factors are the published least-squares fits of each family's decoder that ComfyUI
//! ships as `latent_rgb_factors` / `latent_rgb_factors_bias` (comfy/latent_formats.py), for
//! latents in the scaled space the model samples (SD: `0.18215·z`; SDXL: `0.13025·z`; SD3 and
//! FLUX: `scale·(z − shift)`), which is the space steerdiff's `x̂0` lives in.

use candle_core::{DType, Tensor};

use crate::{Error, Result};

/// One family's linear latent → RGB map.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatentPreview {
    /// The family, for messages and reward names.
    pub name: &'static str,
    /// One `[R, G, B]` row per latent channel.
    pub factors: &'static [[f32; 3]],
    /// Added to every pixel.
    pub bias: [f32; 3],
}

/// Stable Diffusion 1.x/2.x (4 channels).
pub const SD15: LatentPreview = LatentPreview {
    name: "sd15",
    factors: &[
        [0.3512, 0.2297, 0.3227],
        [0.3250, 0.4974, 0.2350],
        [-0.2829, 0.1762, 0.2721],
        [-0.2120, -0.2616, -0.7177],
    ],
    bias: [0.0; 3],
};

/// SDXL (4 channels).
pub const SDXL: LatentPreview = LatentPreview {
    name: "sdxl",
    factors: &[
        [0.3651, 0.4232, 0.4341],
        [-0.2533, -0.0042, 0.1068],
        [0.1076, 0.1111, -0.0362],
        [-0.3165, -0.2492, -0.2188],
    ],
    bias: [0.1084, -0.0175, -0.0011],
};

/// SD3 / SD3.5 (16 channels).
pub const SD3: LatentPreview = LatentPreview {
    name: "sd3",
    factors: &[
        [-0.0922, -0.0175, 0.0749],
        [0.0311, 0.0633, 0.0954],
        [0.1994, 0.0927, 0.0458],
        [0.0856, 0.0339, 0.0902],
        [0.0587, 0.0272, -0.0496],
        [-0.0006, 0.1104, 0.0309],
        [0.0978, 0.0306, 0.0427],
        [-0.0042, 0.1038, 0.1358],
        [-0.0194, 0.0020, 0.0669],
        [-0.0488, 0.0130, -0.0268],
        [0.0922, 0.0988, 0.0951],
        [-0.0278, 0.0524, -0.0542],
        [0.0332, 0.0456, 0.0895],
        [-0.0069, -0.0030, -0.0810],
        [-0.0596, -0.0465, -0.0293],
        [-0.1448, -0.1463, -0.1189],
    ],
    bias: [0.2394, 0.2135, 0.1925],
};

/// FLUX.1 (16 channels, before 2×2 packing).
pub const FLUX: LatentPreview = LatentPreview {
    name: "flux",
    factors: &[
        [-0.0346, 0.0244, 0.0681],
        [0.0034, 0.0210, 0.0687],
        [0.0275, -0.0668, -0.0433],
        [-0.0174, 0.0160, 0.0617],
        [0.0859, 0.0721, 0.0329],
        [0.0004, 0.0383, 0.0115],
        [0.0405, 0.0861, 0.0915],
        [-0.0236, -0.0185, -0.0259],
        [-0.0245, 0.0250, 0.1180],
        [0.1008, 0.0755, -0.0421],
        [-0.0515, 0.0201, 0.0011],
        [0.0428, -0.0012, -0.0036],
        [0.0817, 0.0765, 0.0749],
        [-0.1264, -0.0522, -0.1103],
        [-0.0280, -0.0881, -0.0499],
        [-0.1262, -0.0982, -0.0778],
    ],
    bias: [-0.0329, -0.0718, -0.0851],
};

impl LatentPreview {
    /// Latent channels this map reads.
    pub fn channels(&self) -> usize {
        self.factors.len()
    }

    /// `[B, C, h, w]` latents → `[B, 3, h, w]` images in `[0, 1]` at latent resolution.
    pub fn apply(&self, latents: &Tensor) -> Result<Tensor> {
        let (_, c, _, _) = latents.dims4()?;
        if c != self.channels() {
            return Err(Error::Spec(format!(
                "the {} latent preview reads {} channels; these latents have {c}",
                self.name,
                self.channels()
            )));
        }
        let device = latents.device();
        let f: Vec<f32> = self.factors.iter().flatten().copied().collect();
        let f = Tensor::from_vec(f, (c, 3), device)?;
        let b = Tensor::from_vec(self.bias.to_vec(), 3, device)?;
        let x = latents
            .to_dtype(DType::F32)?
            .permute((0, 2, 3, 1))?
            .contiguous()?; // [B, h, w, C]
        let rgb = x.broadcast_matmul(&f)?.broadcast_add(&b)?;
        Ok(rgb
            .permute((0, 3, 1, 2))?
            .affine(0.5, 0.5)?
            .clamp(0f32, 1f32)?)
    }
}

/// The SD 1.x/2.x preview of 4-channel latents (see [`SD15`]).
pub fn preview(latents: &Tensor) -> Result<Tensor> {
    SD15.apply(latents)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn a_latent_pixel_maps_through_its_row_plus_the_bias() {
        // One latent pixel with channel 2 = 1: rgb = row 2 + bias, then (· + 1)/2.
        for p in [SD15, SDXL, SD3, FLUX] {
            let c = p.channels();
            let mut z = vec![0f32; c];
            z[2] = 1.0;
            let x = Tensor::from_vec(z, (1, c, 1, 1), &Device::Cpu).unwrap();
            let rgb = p
                .apply(&x)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            for k in 0..3 {
                let want = ((p.factors[2][k] + p.bias[k] + 1.0) / 2.0).clamp(0.0, 1.0);
                assert!((rgb[k] - want).abs() < 1e-6, "{}: {rgb:?}", p.name);
            }
        }
        let four = Tensor::zeros((1, 4, 2, 2), DType::F32, &Device::Cpu).unwrap();
        let e = FLUX.apply(&four).unwrap_err().to_string();
        assert!(e.contains("16") && e.contains("4"), "{e}");
    }
}
