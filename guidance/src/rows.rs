//! Model rows: what a strategy asks the models for ([`Request`]) and the counted, timed, batched
//! evaluations that answer it. The guidance context (the guided prediction, look-ahead) and so
//! the engine use it; it knows nothing of either.

use std::time::Instant;

use candle_core::Tensor;

use crate::condition::Condition;
use crate::denoiser::Denoiser;
use crate::ledger::{Ledger, Timing};
use crate::path::StepPoint;
use crate::population::Population;
use crate::prediction::Prediction;
use crate::{Error, Result};

/// Extra model rows: one row per particle, of model `model` under `conds[i]` for particle `i`.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Index of the model in the engine's model list (0 = main model).
    pub model: usize,
    /// One condition per particle.
    pub conds: Vec<Condition>,
}

impl Request {
    /// The unconditional row of the main model for every particle (CFG's reference), or
    /// nothing when every particle is already unconditional.
    pub fn unconditional(pop: &Population) -> Vec<Request> {
        if pop.particles.iter().all(|p| p.cond == Condition::Null) {
            return Vec::new();
        }
        vec![Request {
            model: 0,
            conds: vec![Condition::Null; pop.len()],
        }]
    }
}

/// Evaluates every request on rows `x` at `at`, one batched call per model, sharing identical
/// requests; answer `k` belongs to request `k`.
pub(crate) fn evaluate(
    models: &[&dyn Denoiser],
    requests: &[Request],
    x: &Tensor,
    at: &StepPoint,
    ledger: &mut Ledger,
    timing: &mut Timing,
) -> Result<Vec<Prediction>> {
    // Deduplicate: `unique[k]` is the first request equal to request k.
    let unique: Vec<usize> = requests
        .iter()
        .enumerate()
        .map(|(k, r)| requests[..k].iter().position(|q| q == r).unwrap_or(k))
        .collect();
    let mut out: Vec<Option<Prediction>> = vec![None; requests.len()];
    let p = x.dim(0)?;
    for (model, &denoiser) in models.iter().enumerate() {
        let mine: Vec<usize> = (0..requests.len())
            .filter(|&k| unique[k] == k && requests[k].model == model)
            .collect();
        if mine.is_empty() {
            continue;
        }
        let conds: Vec<Condition> = mine
            .iter()
            .flat_map(|&k| requests[k].conds.iter().copied())
            .collect();
        let raw = forward(denoiser, x, mine.len(), at, &conds, ledger, timing)?;
        // Each request's rows are converted at `x` itself, so every answer shares one `x`:
        // what lets CFG's term read it once (`fused.rs`).
        let param = denoiser.parameterization();
        for (j, &k) in mine.iter().enumerate() {
            out[k] = Some(param.to_prediction(&raw.narrow(0, j * p, p)?, x, at)?);
        }
    }
    for k in 0..requests.len() {
        if out[k].is_none() {
            out[k] = out[unique[k]].clone();
        }
    }
    Ok(out
        .into_iter()
        .map(|p| p.expect("every request answered"))
        .collect())
}

/// One counted, timed, batched model evaluation converted to `(x̂0, ε̂)`; batches larger than
/// the model's `max_batch` are split.
pub(crate) fn predict(
    model: &dyn Denoiser,
    x: &Tensor,
    at: &StepPoint,
    conds: &[Condition],
    ledger: &mut Ledger,
    timing: &mut Timing,
) -> Result<Prediction> {
    let raw = forward(model, x, 1, at, conds, ledger, timing)?;
    model.parameterization().to_prediction(&raw, x, at)
}

/// One counted, timed, batched model evaluation of `copies` copies of rows `x` (see
/// [`Denoiser::forward_copies`]), its raw output checked to be finite; batches larger than the
/// model's `max_batch` are split (the copies then stacked first).
fn forward(
    model: &dyn Denoiser,
    x: &Tensor,
    copies: usize,
    at: &StepPoint,
    conds: &[Condition],
    ledger: &mut Ledger,
    timing: &mut Timing,
) -> Result<Tensor> {
    let n = x.dim(0)? * copies;
    let chunk = model.max_batch().max(1);
    let start = Instant::now();
    let calls = n.div_ceil(chunk).max(1) as u64;
    let raw = if n <= chunk {
        model.forward_copies(x, copies, at, conds)?
    } else {
        let rows = crate::denoiser::stacked(x, copies)?;
        let mut outs = Vec::with_capacity(n.div_ceil(chunk));
        for s in (0..n).step_by(chunk) {
            let len = chunk.min(n - s);
            outs.push(model.forward(&rows.narrow(0, s, len)?, at, &conds[s..s + len])?);
        }
        Tensor::cat(&outs, 0)?
    };
    Timing::add(&mut timing.model_s, start.elapsed());
    if x.device().is_cpu() {
        crate::fused::wake_threads();
    }
    *ledger.model_rows.entry(model.name().into()).or_default() += n as u64;
    *ledger.model_calls.entry(model.name().into()).or_default() += calls;
    check_finite(model, &raw, at)?;
    Ok(raw)
}

/// Stops on a model output holding NaN or ∞ (non-finite weights or inputs), naming the model,
/// the timestep and how many rows, instead of letting it spread through the run. One
/// reduction over the output: `y − y` is 0 where `y` is finite and NaN elsewhere, so its sum
/// is NaN exactly when some value is not finite (without the overflow a sum of `y` could
/// have in f16).
fn check_finite(model: &dyn Denoiser, raw: &Tensor, at: &StepPoint) -> Result<()> {
    if crate::fused::all_finite(raw) == Some(true) {
        return Ok(());
    }
    let probe = raw.sub(raw)?.to_dtype(candle_core::DType::F32)?;
    if !probe.sum_all()?.to_scalar::<f32>()?.is_nan() {
        return Ok(());
    }
    let per_row = probe.flatten_from(1)?.sum(1)?.to_vec1::<f32>()?;
    let bad: Vec<usize> = (0..per_row.len())
        .filter(|&r| per_row[r].is_nan())
        .collect();
    Err(Error::NonFinite(format!(
        "model `{}` produced non-finite values (NaN or ∞) at timestep {:.1} (σ = {:.4}) in {} \
         of {} rows (the first: row {}); its weights or its inputs (initial latents or image, \
         a mixture's numbers) are non-finite or too large",
        model.name(),
        at.timestep,
        at.sigma,
        bad.len(),
        per_row.len(),
        bad[0]
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::NoisePath;
    use crate::prediction::Parameterization;
    use crate::test_support::bits;
    use candle_core::Device;

    /// A velocity model answering `scale·x`, with a NaN planted in row `nan_row` if given.
    struct Velocity {
        path: NoisePath,
        nan_row: Option<usize>,
    }

    impl Denoiser for Velocity {
        fn name(&self) -> &str {
            "velocity"
        }
        fn parameterization(&self) -> Parameterization {
            Parameterization::Velocity
        }
        fn path(&self) -> &NoisePath {
            &self.path
        }
        fn sample_shape(&self) -> Vec<usize> {
            vec![3]
        }
        fn forward(&self, x: &Tensor, _: &StepPoint, _: &[Condition]) -> Result<Tensor> {
            let mut v = x.affine(-0.5, 0.25)?.flatten_all()?.to_vec1::<f32>()?;
            if let Some(r) = self.nan_row {
                v[3 * r + 1] = f32::NAN;
            }
            Ok(Tensor::from_vec(v, x.shape(), x.device())?)
        }
    }

    #[test]
    fn a_velocity_output_has_the_bits_of_candles_ops_and_a_nan_stops_the_run() {
        let x = Tensor::from_vec(
            vec![0.5f32, -1.0, 2.0, 0.0, -0.0, 3.5],
            (2, 3),
            &Device::Cpu,
        )
        .unwrap();
        let at = StepPoint {
            timestep: 300.0,
            alpha: 0.7,
            sigma: 0.3,
        };
        let conds = [Condition::Null; 2];
        let (mut ledger, mut timing) = (Ledger::default(), Timing::default());
        let mut model = Velocity {
            path: NoisePath::flow(),
            nan_row: None,
        };
        let got = predict(&model, &x, &at, &conds, &mut ledger, &mut timing).unwrap();
        // The same values as checking and converting with candle's ops.
        let raw = model.forward(&x, &at, &conds).unwrap();
        let n = 0.7 + 0.3;
        let scaled = x.affine(1.0 / n, 0.0).unwrap();
        let want_x0 = (&scaled - raw.affine(0.3 / n, 0.0).unwrap()).unwrap();
        let want_eps = (&scaled + raw.affine(0.7 / n, 0.0).unwrap()).unwrap();
        assert_eq!(bits(got.x0()), bits(&want_x0));
        assert_eq!(bits(got.eps()), bits(&want_eps));
        // A NaN in the output stops with the check's message, naming the row.
        model.nan_row = Some(1);
        let e = predict(&model, &x, &at, &conds, &mut ledger, &mut timing)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("non-finite") && e.contains("1 of 2 rows (the first: row 1)"),
            "{e}"
        );
    }
}
