//! Representation alignment (REPA, Yu et al. 2025, "Representation Alignment for Generation:
//! Training Diffusion Transformers Is Easier Than You Think", ICLR 2025), a training-only aid
//! for the toy flow model.
//!
//! A small diffusion transformer trained by the flow loss alone learns colour and placement
//! long before it learns what distinguishes the classes: outlines are a small part of the
//! squared error (see `steerdiff toy diagnose`). REPA adds a second loss that asks the tokens
//! after block `k`, through a small MLP `h_φ`, to match a frozen encoder's features of the
//! *clean* image, patch by patch (eq. 8 of the paper):
//!
//! ```text
//! L = L_flow + λ · L_REPA,   L_REPA = −(1/N) Σ_n cos(h_φ(z_t^[n]), f(x0)^[n])
//! ```
//!
//! The encoder here is the shipped guidance classifier (`toy-classifier`): its last
//! convolution's 8×8 map lines up with the DiT's 8×8 patch grid. The evaluation classifier is
//! never used. The projector is trained with the model and dropped from exports: the shipped
//! network and its sampling are unchanged, only how its weights were found.

use candle_core::{Result, Tensor};
use candle_nn::{Linear, VarBuilder};

use super::classifier::Classifier;
use super::nn::{rows, silu};

/// The projector `h_φ`: three linear layers with SiLU, `d → 2d → 2d → F` (the paper uses a
/// three-layer MLP). Its parameters live under `repa.` in the training variables.
#[derive(Debug, Clone)]
pub struct Projector {
    layers: [Linear; 3],
}

/// Prefix of the projector's parameter names (excluded from exports).
pub const PREFIX: &str = "repa.";

impl Projector {
    /// A projector from width `d` to the teacher's width `f`.
    pub fn new(d: usize, f: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Projector {
            layers: [
                candle_nn::linear(d, 2 * d, vb.pp("repa.fc0"))?,
                candle_nn::linear(2 * d, 2 * d, vb.pp("repa.fc1"))?,
                candle_nn::linear(2 * d, f, vb.pp("repa.fc2"))?,
            ],
        })
    }

    /// `h_φ(z)` for tokens `[B, T, d]`.
    pub fn forward(&self, z: &Tensor) -> Result<Tensor> {
        let h = silu(&rows(&self.layers[0], z)?)?;
        let h = silu(&rows(&self.layers[1], &h)?)?;
        rows(&self.layers[2], &h)
    }
}

/// `−mean cos(a, b)` over tokens, for `[B, T, F]` tensors.
pub fn negative_cosine(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let unit = |x: &Tensor| -> Result<Tensor> {
        let norm = (x.sqr()?.sum_keepdim(2)? + 1e-8)?.sqrt()?;
        x.broadcast_div(&norm)
    };
    ((unit(a)? * unit(b)?)?.sum(2)?.mean_all()?).neg()
}

/// The frozen teacher's token features of clean images `[B, 3, 32, 32]`, detached.
pub fn targets(teacher: &Classifier, x0: &Tensor) -> Result<Tensor> {
    Ok(teacher.grid_features(x0)?.detach())
}

/// Whether a parameter belongs to the projector.
pub fn is_projector(name: &str) -> bool {
    name.starts_with(PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn cosine_loss_is_minus_one_for_parallel_tokens_and_zero_for_orthogonal() {
        let dev = Device::Cpu;
        let a = Tensor::new(&[[[1f32, 0.0], [0.0, 2.0]]], &dev).unwrap();
        let same = (&a * 3.0).unwrap();
        let ortho = Tensor::new(&[[[0f32, 5.0], [-1.0, 0.0]]], &dev).unwrap();
        let l = |b: &Tensor| negative_cosine(&a, b).unwrap().to_scalar::<f32>().unwrap();
        assert!((l(&same) + 1.0).abs() < 1e-6);
        assert!(l(&ortho).abs() < 1e-6);
    }
}
