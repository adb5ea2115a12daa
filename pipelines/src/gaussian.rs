//! The exact denoiser of one Gaussian with full covariance: closed-form ground truth for
//! posterior sampling (FlowChef's exact-posterior check, ALGORITHMS §10.4).
//!
//! Data `N(μ, Σ)` noised as `x_t = a·x0 + σ·ε`:
//! `E[x0 | x_t] = μ + a·Σ·(a²Σ + σ²I)⁻¹·(x_t − a·μ)`.

use candle_core::{Device, Tensor};
use steerdiff_guidance::{Condition, Denoiser, NoisePath, Parameterization, StepPoint};

use crate::{Error, Result};

/// `N(μ, Σ)` with its exact posterior mean.
#[derive(Debug, Clone)]
pub struct GaussianDenoiser {
    mean: Vec<f64>,
    cov: Vec<Vec<f64>>,
    path: NoisePath,
}

impl GaussianDenoiser {
    /// The denoiser of `N(mean, cov)` on `path`; `cov` must be symmetric positive definite.
    pub fn new(mean: Vec<f64>, cov: Vec<Vec<f64>>, path: NoisePath) -> Result<Self> {
        let d = mean.len();
        if cov.len() != d || cov.iter().any(|r| r.len() != d) {
            return Err(Error::Spec(format!("covariance must be {d}×{d}")));
        }
        if invert(&cov).is_none() {
            return Err(Error::Spec("covariance is singular".into()));
        }
        Ok(GaussianDenoiser { mean, cov, path })
    }

    /// `E[x0 | x_t]` for one row.
    pub fn posterior_mean(&self, x: &[f64], a: f64, sigma: f64) -> Vec<f64> {
        let d = self.mean.len();
        let m: Vec<Vec<f64>> = (0..d)
            .map(|i| {
                (0..d)
                    .map(|j| a * a * self.cov[i][j] + if i == j { sigma * sigma } else { 0.0 })
                    .collect()
            })
            .collect();
        let inv = invert(&m).expect("a²Σ + σ²I is positive definite");
        let r: Vec<f64> = (0..d).map(|i| x[i] - a * self.mean[i]).collect();
        let v: Vec<f64> = (0..d)
            .map(|i| (0..d).map(|j| inv[i][j] * r[j]).sum())
            .collect();
        (0..d)
            .map(|i| self.mean[i] + a * (0..d).map(|j| self.cov[i][j] * v[j]).sum::<f64>())
            .collect()
    }
}

/// Gauss–Jordan inverse with partial pivoting (small matrices only); None if singular.
fn invert(m: &[Vec<f64>]) -> Option<Vec<Vec<f64>>> {
    let d = m.len();
    let mut a: Vec<Vec<f64>> = m
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut row = r.clone();
            row.extend((0..d).map(|j| if i == j { 1.0 } else { 0.0 }));
            row
        })
        .collect();
    for c in 0..d {
        let p = (c..d).max_by(|&x, &y| a[x][c].abs().total_cmp(&a[y][c].abs()))?;
        if a[p][c].abs() < 1e-12 {
            return None;
        }
        a.swap(c, p);
        let pivot = a[c][c];
        a[c].iter_mut().for_each(|v| *v /= pivot);
        for r in 0..d {
            if r != c {
                let f = a[r][c];
                let row_c = a[c].clone();
                a[r].iter_mut().zip(row_c).for_each(|(v, w)| *v -= f * w);
            }
        }
    }
    Some(a.into_iter().map(|r| r[d..].to_vec()).collect())
}

impl Denoiser for GaussianDenoiser {
    fn name(&self) -> &str {
        "gaussian"
    }

    fn parameterization(&self) -> Parameterization {
        Parameterization::Sample
    }

    fn path(&self) -> &NoisePath {
        &self.path
    }

    fn sample_shape(&self) -> Vec<usize> {
        vec![self.mean.len()]
    }

    fn forward(
        &self,
        x: &Tensor,
        at: &StepPoint,
        _: &[Condition],
    ) -> steerdiff_guidance::Result<Tensor> {
        let rows: Vec<Vec<f32>> = x.to_dtype(candle_core::DType::F32)?.to_vec2()?;
        let d = self.mean.len();
        let mut out = Vec::with_capacity(rows.len() * d);
        for r in &rows {
            let xr: Vec<f64> = r.iter().map(|&v| v as f64).collect();
            out.extend(
                self.posterior_mean(&xr, at.alpha, at.sigma)
                    .into_iter()
                    .map(|v| v as f32),
            );
        }
        Ok(Tensor::from_vec(out, (rows.len(), d), &Device::Cpu)?.to_device(x.device())?)
    }
}
