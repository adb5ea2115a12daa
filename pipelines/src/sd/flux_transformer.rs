//! [`FluxTransformer`]: FLUX's transformer as candle builds it from float weights
//! (safetensors) or from quantized ones (GGUF), behind one forward, so the FLUX denoiser,
//! its conditioning and everything that steers it are the same for both.

use candle_core::{DType, Result, Tensor};
use candle_transformers::models::flux::model::Flux as FloatFlux;
use candle_transformers::models::flux::quantized_model::Flux as QuantizedFlux;
use candle_transformers::models::flux::WithForward;

/// A FLUX transformer with float or quantized weights.
#[derive(Debug, Clone)]
pub enum FluxTransformer {
    /// Float weights (f32, f16 or bf16), computing in their dtype.
    Float(Box<FloatFlux>),
    /// Quantized weights (GGUF: Q8_0, k-quants, …) kept quantized in memory; computes in f32,
    /// one batch row at a time (see `forward`).
    Quantized(Box<QuantizedFlux>),
}

impl FluxTransformer {
    /// The dtype its inputs must have: the weights' for float weights (`weights`), f32 for
    /// quantized ones (candle's quantized matrix products take f32 activations).
    pub fn compute_dtype(&self, weights: DType) -> DType {
        match self {
            FluxTransformer::Float(_) => weights,
            FluxTransformer::Quantized(_) => DType::F32,
        }
    }

    /// Whether the weights are quantized.
    pub fn is_quantized(&self) -> bool {
        matches!(self, FluxTransformer::Quantized(_))
    }
}

impl WithForward for FluxTransformer {
    fn forward(
        &self,
        img: &Tensor,
        img_ids: &Tensor,
        txt: &Tensor,
        txt_ids: &Tensor,
        timesteps: &Tensor,
        y: &Tensor,
        guidance: Option<&Tensor>,
    ) -> Result<Tensor> {
        match self {
            FluxTransformer::Float(m) => {
                m.forward(img, img_ids, txt, txt_ids, timesteps, y, guidance)
            }
            // candle 0.11.1's quantized FLUX splits the joint attention's output into its text
            // and image tokens with `narrow` and feeds the image part to a quantized matrix
            // product, whose kernel refuses a non-contiguous input — which that part is when
            // the batch has more than one row. One row at a time, it is contiguous.
            FluxTransformer::Quantized(m) => {
                let rows = (0..img.dim(0)?)
                    .map(|i| {
                        let row = |t: &Tensor| t.narrow(0, i, 1);
                        m.forward(
                            &row(img)?,
                            &row(img_ids)?,
                            &row(txt)?,
                            &row(txt_ids)?,
                            &row(timesteps)?,
                            &row(y)?,
                            guidance.map(row).transpose()?.as_ref(),
                        )
                    })
                    .collect::<Result<Vec<Tensor>>>()?;
                Tensor::cat(&rows, 0)
            }
        }
    }
}
