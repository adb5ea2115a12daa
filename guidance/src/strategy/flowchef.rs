//! FlowChef (Patel et al. 2025, "Steering Rectified Flow Models in the Vector Field for
//! Controlled Image Generation", arXiv 2412.00100; ALGORITHMS §4).
//!
//! On a rectified flow the Jacobian `∂x̂0/∂x_t` is close to the identity, so the gradient of a
//! cost on `x̂0` is used directly as the gradient with respect to `x_t` ("gradient skipping").
//! Each guided step, with the velocity `v` **frozen** (the model is never differentiated, and
//! never called again; costs differentiate only themselves — see
//! [`ClassifierCost`](super::classifier_cost::ClassifierCost) — and every update is detached):
//!
//! ```text
//! repeat K times:  x̂0 = x_t − σ·v;   x_t ← x_t − η·∇_{x̂0} L(x̂0)
//! then the solver steps from the updated x_t with the old v
//! ```
//!
//! With `v` frozen, moving `x_t` by `δ` moves `x̂0` and `ε̂` by the same `δ` (both are
//! `x_t` plus a multiple of `v`), which is how the guided prediction is kept consistent.
//!
//! The zeroth-order variant replaces `∇L` by antithetic smoothing,
//! `ĝ = 1/(2μM)·Σ_m [L(x̂0 + μu_m) − L(x̂0 − μu_m)]·u_m` over orthogonalised random directions
//! — only cost values are needed, so the cost may be any black box.

use candle_core::Tensor;
use serde_json::json;

use crate::guidance::{Context, Guidance, Needs, Step};
use crate::population::Population;
use crate::prediction::Prediction;
use crate::rng::Stream;
use crate::{Error, Result};

/// A cost on clean-sample estimates, minimised by FlowChef.
pub trait Cost: Send + Sync {
    /// Name for records.
    fn name(&self) -> &str;
    /// The cost of every row of `x0` (`[B, …]`).
    fn value(&self, x0: &Tensor) -> Result<Vec<f64>>;
    /// `∇_{x0} L` for every row, shaped like `x0`.
    fn gradient(&self, x0: &Tensor) -> Result<Tensor>;
}

/// How the gradient is obtained.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GradientEstimate {
    /// The cost's own gradient (analytic, or autograd through the cost only).
    Exact,
    /// Antithetic Gaussian smoothing with `pairs` pairs at radius `mu`.
    ZerothOrder {
        /// Antithetic pairs M.
        pairs: usize,
        /// Smoothing radius μ.
        mu: f64,
    },
}

/// FlowChef steering of a rectified flow.
pub struct FlowChef {
    /// The cost `L(x̂0)`.
    pub cost: Box<dyn Cost>,
    /// Step size η.
    pub lr: f64,
    /// Inner updates K per guided step.
    pub iterations: usize,
    /// Guide only the first `max_steps` steps (None = all but the last).
    pub max_steps: Option<usize>,
    /// Gradient rule.
    pub estimate: GradientEstimate,
}

impl FlowChef {
    /// Antithetic smoothing over orthogonal directions: per particle, `pairs` Gaussian
    /// directions are orthogonalised in blocks of at most `d` (Gram–Schmidt) and scaled to norm
    /// `√d`, which keeps `E[u·uᵀ] = I` (so the estimate stays unbiased for the smoothed cost)
    /// while removing most of its variance (Choromanski et al. 2018, orthogonal ES); with
    /// `pairs ≥ d` on a quadratic cost it is exact.
    fn zeroth_order(
        &self,
        x0: &Tensor,
        pairs: usize,
        mu: f64,
        pop: &Population,
        step: usize,
        k: usize,
    ) -> Result<Tensor> {
        let dims = x0.dims().to_vec();
        let numel: usize = dims[1..].iter().product();
        // directions[m] holds every particle's m-th direction, row after row.
        let mut directions = vec![Vec::with_capacity(pop.len() * numel); pairs];
        for p in &pop.particles {
            let mut block: Vec<Vec<f64>> = Vec::new();
            for (m, dir) in directions.iter_mut().enumerate() {
                let key = Stream::FlowChefDirection {
                    step,
                    iteration: k,
                    direction: m,
                }
                .key(p.seed, p.lineage);
                if block.len() == numel {
                    block.clear();
                }
                let mut v: Vec<f64> = key.normals(numel).into_iter().map(f64::from).collect();
                for b in &block {
                    let dot: f64 = v.iter().zip(b).map(|(x, y)| x * y).sum();
                    v.iter_mut().zip(b).for_each(|(x, y)| *x -= dot * y);
                }
                let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
                v.iter_mut().for_each(|x| *x /= norm);
                dir.extend(v.iter().map(|x| (x * (numel as f64).sqrt()) as f32));
                block.push(v);
            }
        }
        let mut grad = x0.zeros_like()?;
        for dir in directions {
            let u = Tensor::from_vec(dir, dims.clone(), x0.device())?.to_dtype(x0.dtype())?;
            let plus = self.cost.value(&(x0 + u.affine(mu, 0.0)?)?)?;
            let minus = self.cost.value(&(x0 - u.affine(mu, 0.0)?)?)?;
            let diff: Vec<f32> = plus
                .iter()
                .zip(&minus)
                .map(|(a, b)| ((a - b) / (2.0 * mu * pairs as f64)) as f32)
                .collect();
            let mut shape = vec![pop.len()];
            shape.extend(std::iter::repeat_n(1, dims.len() - 1));
            let d = Tensor::from_vec(diff, shape, x0.device())?.to_dtype(x0.dtype())?;
            grad = (grad + u.broadcast_mul(&d)?)?;
        }
        Ok(grad)
    }
}

impl Guidance for FlowChef {
    fn name(&self) -> String {
        format!(
            "flowchef(cost={}, lr={}, K={})",
            self.cost.name(),
            self.lr,
            self.iterations
        )
    }

    fn needs(&self) -> Needs {
        Needs {
            flow_path: true,
            ..Needs::default()
        }
    }

    fn validate(&self, _steps: usize) -> Result<()> {
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::InvalidArgument(format!(
                "FlowChef: the step size must be a positive number, got {}",
                self.lr
            )));
        }
        if self.iterations == 0 {
            return Err(Error::InvalidArgument("FlowChef: K must be ≥ 1".into()));
        }
        if let GradientEstimate::ZerothOrder { pairs, mu } = self.estimate {
            if pairs == 0 || !(mu.is_finite() && mu > 0.0) {
                return Err(Error::InvalidArgument(format!(
                    "FlowChef zeroth-order: need ≥ 1 pair and μ > 0 (got {pairs}, {mu})"
                )));
            }
        }
        Ok(())
    }

    fn steer(
        &self,
        step: &Step,
        pop: &mut Population,
        guided: &mut Prediction,
        cx: &mut Context,
    ) -> Result<()> {
        let last_guided = self.max_steps.unwrap_or(step.count - 1);
        if step.index >= last_guided {
            return Ok(());
        }
        let mut losses = Vec::new();
        for k in 0..self.iterations {
            // Gradients are taken on a detached copy: nothing here can reach the model.
            let x0 = guided.x0().detach();
            let g = match self.estimate {
                GradientEstimate::Exact => self.cost.gradient(&x0)?,
                GradientEstimate::ZerothOrder { pairs, mu } => {
                    self.zeroth_order(&x0, pairs, mu, pop, step.index, k)?
                }
            };
            // Detached again: whatever a cost does inside, no autograd graph leaves `steer`,
            // so the state the model sees next step is a plain tensor.
            let delta = g.detach().affine(-self.lr, 0.0)?;
            pop.x = (&pop.x + &delta)?;
            *guided = Prediction::new((guided.x0() + &delta)?, (guided.eps() + &delta)?);
            if k + 1 == self.iterations {
                losses = self.cost.value(guided.x0())?;
            }
        }
        let mean = losses.iter().sum::<f64>() / losses.len().max(1) as f64;
        cx.trace("flowchef", json!({ "mean_cost": mean }));
        Ok(())
    }
}

/// `L(x) = Σ_i m_i·(x_i − y_i)²` per row: inpainting (mask = known pixels) and any
/// coordinate observation. `mask` and `target` are shaped like one sample (broadcast over rows).
pub struct MaskedSquare {
    /// 1 where the value is observed, 0 elsewhere (or any weights).
    pub mask: Tensor,
    /// Observed values (ignored where the mask is 0).
    pub target: Tensor,
}

impl MaskedSquare {
    fn check(&self, x0: &Tensor) -> Result<()> {
        if x0.dims()[1..] != *self.mask.dims() || self.mask.dims() != self.target.dims() {
            return Err(Error::InvalidArgument(format!(
                "mask {:?} and known values {:?} must both match the sample shape {:?}",
                self.mask.dims(),
                self.target.dims(),
                &x0.dims()[1..]
            )));
        }
        Ok(())
    }
}

impl Cost for MaskedSquare {
    fn name(&self) -> &str {
        "masked-square"
    }

    fn value(&self, x0: &Tensor) -> Result<Vec<f64>> {
        self.check(x0)?;
        let r = x0
            .broadcast_sub(&self.target)?
            .broadcast_mul(&self.mask.sqrt()?)?;
        Ok(r.sqr()?
            .flatten_from(1)?
            .sum(1)?
            .to_dtype(candle_core::DType::F64)?
            .to_vec1()?)
    }

    fn gradient(&self, x0: &Tensor) -> Result<Tensor> {
        self.check(x0)?;
        Ok(x0
            .broadcast_sub(&self.target)?
            .broadcast_mul(&self.mask)?
            .affine(2.0, 0.0)?)
    }
}
