//! The Gaussian path every supported model samples along: `x_t = α(t)·x0 + σ(t)·ε`.
//!
//! * **VP diffusion** (DDPM, Stable Diffusion 1.x/2.x/XL/Turbo): `α = √ᾱ_t`, `σ = √(1 − ᾱ_t)`,
//!   with `ᾱ_t = Π_{s≤t} (1 − β_s)` from the training beta schedule over integer `t ∈ [0, T)`.
//! * **Rectified flow** (SD3, FLUX, the toy model): `α = 1 − σ`, `σ ∈ [0, 1]`; the model's time
//!   input is `σ·T` (diffusers' `FlowMatchEulerDiscreteScheduler` convention, `T = 1000`).
//!
//! The path says what `t` means; a [`Schedule`](crate::schedule::Schedule) picks the points a
//! sampler visits on it.

use serde::{Deserialize, Serialize};

/// One point on the path: the coefficients of `x_t = α·x0 + σ·ε` and the time the network is fed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepPoint {
    /// The model's time input (a train timestep in `[0, T)`, possibly fractional, or `σ·T` for flows).
    pub timestep: f64,
    /// Signal coefficient α.
    pub alpha: f64,
    /// Noise coefficient σ.
    pub sigma: f64,
}

impl StepPoint {
    /// The end of every path: clean data (`α = 1`, `σ = 0`), where final samples are scored.
    pub const CLEAN: StepPoint = StepPoint {
        timestep: 0.0,
        alpha: 1.0,
        sigma: 0.0,
    };

    /// Log signal-to-noise ratio `λ = ln(α/σ)` (DPM-Solver's time variable); `+∞` at σ = 0.
    pub fn lambda(&self) -> f64 {
        (self.alpha / self.sigma).ln()
    }

    /// σ in variance-exploding units, `σ/α` (k-diffusion's and diffusers' Euler `sigmas`).
    pub fn sigma_ve(&self) -> f64 {
        self.sigma / self.alpha
    }

    /// The forward process from this point to a noisier one, `q(x_to | x_here)`:
    ///
    /// ```text
    /// x_to = a·x_here + s·z,   a = α_to/α,   s = √(σ_to² − a²·σ²),   z ~ N(0, I)
    /// ```
    ///
    /// Returns `(a, s)`. If `x_here = α·x0 + σ·ε` then `x_to = α_to·x0 + s'·ε'` with
    /// `s'² = a²σ² + s² = σ_to²`: the marginal at `to` exactly, for any data (Lugmayr et al.
    /// 2022, RePaint, eq. 2 in `(α, σ)` form). `None` when `to` is less noisy (`σ_to/α_to <
    /// σ/α`) or this point is pure noise (`α = 0`).
    pub fn forward_to(&self, to: &StepPoint) -> Option<(f64, f64)> {
        if self.alpha <= 0.0 {
            return None;
        }
        let a = to.alpha / self.alpha;
        let var = to.sigma * to.sigma - a * a * self.sigma * self.sigma;
        // Rounding of equal points (σ_to/α_to = σ/α) may leave a tiny negative variance.
        if var < -1e-12 {
            return None;
        }
        Some((a, var.max(0.0).sqrt()))
    }
}

/// Beta schedules of VP diffusion models, as named in diffusers' `beta_schedule`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BetaSchedule {
    /// `β` evenly spaced from `beta_start` to `beta_end` (DDPM).
    Linear,
    /// `√β` evenly spaced, then squared (Stable Diffusion).
    ScaledLinear,
    /// Nichol & Dhariwal's cosine schedule (`squaredcos_cap_v2`), β capped at 0.999.
    #[serde(rename = "squaredcos_cap_v2")]
    SquaredcosCapV2,
}

/// The training noise process of a model.
#[derive(Debug, Clone, PartialEq)]
pub enum NoisePath {
    /// Variance-preserving diffusion over `T = alphas_cumprod.len()` integer train timesteps.
    Vp(VpPath),
    /// Rectified flow with `num_train_timesteps` (1000) time units.
    Flow {
        /// `T`: the model is fed `σ·T`.
        num_train_timesteps: usize,
    },
}

impl NoisePath {
    /// The rectified-flow path with diffusers' 1000 train timesteps.
    pub fn flow() -> Self {
        NoisePath::Flow {
            num_train_timesteps: 1000,
        }
    }

    /// True for rectified flows.
    pub fn is_flow(&self) -> bool {
        matches!(self, NoisePath::Flow { .. })
    }

    /// Number of training time units `T`.
    pub fn num_train_timesteps(&self) -> usize {
        match self {
            NoisePath::Vp(vp) => vp.alphas_cumprod.len(),
            NoisePath::Flow {
                num_train_timesteps,
            } => *num_train_timesteps,
        }
    }
}

/// A VP path given by its cumulative products `ᾱ_t`, `t = 0..T`.
#[derive(Debug, Clone, PartialEq)]
pub struct VpPath {
    /// `ᾱ_t` for each integer train timestep, computed in `f32` like diffusers and stored widened.
    pub alphas_cumprod: Vec<f64>,
}

impl VpPath {
    /// Builds `ᾱ` from a named beta schedule exactly as diffusers does (float32 arithmetic,
    /// sequential cumulative product), optionally rescaled to zero terminal SNR
    /// (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed", Alg. 1).
    pub fn new(
        schedule: BetaSchedule,
        beta_start: f64,
        beta_end: f64,
        num_train_timesteps: usize,
        rescale_zero_terminal_snr: bool,
    ) -> Self {
        let n = num_train_timesteps;
        let betas: Vec<f32> = match schedule {
            BetaSchedule::Linear => linspace_f32(beta_start as f32, beta_end as f32, n),
            BetaSchedule::ScaledLinear => {
                // diffusers passes `beta_start**0.5` (a Python float) to torch.linspace
                linspace_f32(beta_start.sqrt() as f32, beta_end.sqrt() as f32, n)
                    .into_iter()
                    .map(|b| b * b)
                    .collect()
            }
            BetaSchedule::SquaredcosCapV2 => {
                // diffusers' betas_for_alpha_bar (computed in float64, then cast to float32)
                let alpha_bar = |t: f64| {
                    ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
                        .cos()
                        .powi(2)
                };
                (0..n)
                    .map(|i| {
                        let t1 = i as f64 / n as f64;
                        let t2 = (i + 1) as f64 / n as f64;
                        (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
                    })
                    .collect()
            }
        };
        Self::with_betas(&betas, rescale_zero_terminal_snr)
    }

    /// `ᾱ` from explicit float32 betas (diffusers' `trained_betas`, or a schedule computed
    /// elsewhere), optionally rescaled to zero terminal SNR first, as diffusers does.
    pub fn with_betas(betas: &[f32], rescale_zero_terminal_snr: bool) -> Self {
        if rescale_zero_terminal_snr {
            Self::from_betas_f32(&rescale_zero_terminal_snr_f32(betas))
        } else {
            Self::from_betas_f32(betas)
        }
    }

    /// `ᾱ` from explicit betas (diffusers' `trained_betas`): `α = 1 − β` in float32, then
    /// `torch.cumprod`, whose CPU kernel accumulates float32 in double precision and rounds each
    /// partial product to float32.
    pub fn from_betas_f32(betas: &[f32]) -> Self {
        VpPath {
            alphas_cumprod: cumprod_f32(betas.iter().map(|b| 1.0 - b))
                .into_iter()
                .map(f64::from)
                .collect(),
        }
    }

    /// The point at integer train timestep `t` (`α = √ᾱ_t`, `σ = √(1 − ᾱ_t)`).
    pub fn point(&self, t: usize) -> StepPoint {
        let ab = self.alphas_cumprod[t];
        StepPoint {
            timestep: t as f64,
            alpha: ab.sqrt(),
            sigma: (1.0 - ab).sqrt(),
        }
    }
}

/// `torch.linspace(start, end, n, dtype=float32)`: `start + i·step` for the first half and
/// `end − (n−1−i)·step` for the second, as PyTorch's CPU kernel computes it.
pub fn linspace_f32(start: f32, end: f32, n: usize) -> Vec<f32> {
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f32;
    let half = n / 2;
    (0..n)
        .map(|i| {
            if i < half {
                start + step * i as f32
            } else {
                end - step * (n - 1 - i) as f32
            }
        })
        .collect()
}

/// `torch.cumprod` of a float32 tensor on the CPU: the running product is kept in `f64`
/// (`at::acc_type<float, false>`) and each output is rounded to `f32`.
fn cumprod_f32(alphas: impl Iterator<Item = f32>) -> Vec<f32> {
    let mut acc = 1f64;
    alphas
        .map(|a| {
            acc *= f64::from(a);
            acc as f32
        })
        .collect()
}

/// Rescales betas so that the last `ᾱ` is exactly zero while keeping the first (Lin et al. 2024,
/// Algorithm 1), in float32 as diffusers' `rescale_zero_terminal_snr`.
fn rescale_zero_terminal_snr_f32(betas: &[f32]) -> Vec<f32> {
    let mut sqrt_ab: Vec<f32> = cumprod_f32(betas.iter().map(|b| 1.0 - b))
        .into_iter()
        .map(f32::sqrt)
        .collect();
    let first = sqrt_ab[0];
    let last = *sqrt_ab.last().expect("non-empty betas");
    for v in sqrt_ab.iter_mut() {
        *v = (*v - last) * (first / (first - last));
    }
    let ab: Vec<f32> = sqrt_ab.iter().map(|v| v * v).collect();
    let mut out = Vec::with_capacity(ab.len());
    for i in 0..ab.len() {
        let alpha = if i == 0 { ab[0] } else { ab[i] / ab[i - 1] };
        out.push(1.0 - alpha);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forward_transition_lands_on_the_noisier_marginal() {
        // x = α·x0 + σ·ε: after x' = a·x + s·z the signal coefficient must be α_to and the
        // noise variance σ_to², on a flow and on a VP path.
        let vp = VpPath::new(BetaSchedule::ScaledLinear, 0.00085, 0.012, 1000, false);
        let flow = |t: f64| StepPoint {
            timestep: t * 1000.0,
            alpha: 1.0 - t,
            sigma: t,
        };
        let pairs = [(flow(0.3), flow(0.7)), (vp.point(200), vp.point(600))];
        for (here, to) in pairs {
            let (a, s) = here.forward_to(&to).expect("to is noisier");
            assert!((a * here.alpha - to.alpha).abs() < 1e-12);
            let noise = a * a * here.sigma * here.sigma + s * s;
            assert!((noise - to.sigma * to.sigma).abs() < 1e-12, "{noise}");
            assert!(
                to.forward_to(&here).is_none(),
                "backwards is not a forward process"
            );
        }
        // From clean data: x_to = α_to·x0 + σ_to·z.
        let to = flow(0.4);
        let (a, s) = StepPoint::CLEAN.forward_to(&to).unwrap();
        assert!((a - to.alpha).abs() < 1e-12 && (s - to.sigma).abs() < 1e-12);
    }

    #[test]
    fn scaled_linear_matches_stable_diffusion_endpoints() {
        let vp = VpPath::new(BetaSchedule::ScaledLinear, 0.00085, 0.012, 1000, false);
        assert!((vp.alphas_cumprod[0] - (1.0 - 0.00085)).abs() < 1e-6);
        assert!((vp.alphas_cumprod[999] - 0.0046).abs() < 1e-4);
    }

    #[test]
    fn zero_terminal_snr_ends_at_zero() {
        let vp = VpPath::new(BetaSchedule::ScaledLinear, 0.00085, 0.012, 1000, true);
        assert!(vp.alphas_cumprod[999].abs() < 1e-12);
        assert!((vp.alphas_cumprod[0] - (1.0 - 0.00085)).abs() < 1e-6);
    }
}
