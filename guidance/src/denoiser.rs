//! The one interface every model implements.

use candle_core::{Device, Tensor};

use crate::condition::Condition;
use crate::path::{NoisePath, StepPoint};
use crate::prediction::Parameterization;
use crate::Result;

/// A network (or closed form) that predicts from noisy states, batched over rows.
///
/// All rows of one call sit at the same point of the path (particles move in lockstep), each
/// with its own condition. The raw output's meaning is [`Denoiser::parameterization`]; the
/// engine converts it to `(x̂0, ε̂)`. No `Send`/`Sync` bound: the engine drives one model from
/// one thread, and some candle models (MMDiT's boxed blocks) are neither.
pub trait Denoiser {
    /// Name used in the ledger and in records.
    fn name(&self) -> &str;

    /// What [`Denoiser::forward`] returns.
    fn parameterization(&self) -> Parameterization;

    /// The noise process the model was trained on.
    fn path(&self) -> &NoisePath;

    /// Shape of one sample (e.g. `[4, 64, 64]` latents, `[2]` for a 2-D mixture).
    fn sample_shape(&self) -> Vec<usize>;

    /// Device the model runs on.
    fn device(&self) -> &Device {
        &Device::Cpu
    }

    /// Largest batch one call may carry (the engine splits larger ones).
    fn max_batch(&self) -> usize {
        usize::MAX
    }

    /// Raw outputs for rows `x` (`[B, …]`) at `at`, row `i` conditioned on `conds[i]`.
    fn forward(&self, x: &Tensor, at: &StepPoint, conds: &[Condition]) -> Result<Tensor>;

    /// Raw outputs for `copies` copies of `x` stacked (`[copies·B, …]`: one state under several
    /// conditions, as CFG evaluates it), row `k·B + i` being row `i` of `x` conditioned on
    /// `conds[k·B + i]`. The default stacks the copies and calls [`Denoiser::forward`]; a model
    /// that reads its input row by row can skip the copy, with the same outputs.
    fn forward_copies(
        &self,
        x: &Tensor,
        copies: usize,
        at: &StepPoint,
        conds: &[Condition],
    ) -> Result<Tensor> {
        self.forward(&stacked(x, copies)?, at, conds)
    }
}

/// `copies` copies of rows `x` stacked along the first dimension (`x` itself for one copy):
/// the input [`Denoiser::forward_copies`] describes, for a model that needs it written out.
pub fn stacked(x: &Tensor, copies: usize) -> Result<Tensor> {
    if copies == 1 {
        return Ok(x.clone());
    }
    Ok(Tensor::cat(&vec![x; copies], 0)?)
}
