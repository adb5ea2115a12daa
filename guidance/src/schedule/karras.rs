//! Karras et al. 2022 noise levels and diffusers' sigma → timestep interpolation.

/// Karras et al. 2022 ("Elucidating the Design Space of Diffusion-Based Generative Models"),
/// eq. 5 with ρ = 7: `σ_i = (σ_max^{1/ρ} + i/(N−1)·(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ`, `i = 0..N`, in
/// variance-exploding units, computed in float64 like diffusers' `_convert_to_karras`.
pub fn karras_sigmas(sigma_min: f64, sigma_max: f64, steps: usize) -> Vec<f64> {
    const RHO: f64 = 7.0;
    let min_inv = sigma_min.powf(1.0 / RHO);
    let max_inv = sigma_max.powf(1.0 / RHO);
    super::spacing::np_linspace(0.0, 1.0, steps)
        .into_iter()
        .map(|ramp| (max_inv + ramp * (min_inv - max_inv)).powf(RHO))
        .collect()
}

/// diffusers' `_sigma_to_t`: the fractional train timestep whose VE sigma is `sigma`, by linear
/// interpolation of `ln σ` between the two neighbouring integer timesteps.
///
/// `log_sigmas[t] = ln σ_t` is float32 (numpy's log of the float32 sigma table); `ln sigma` is
/// float64, and `low − high` is a float32 difference, exactly as numpy evaluates the expression.
/// The result is clamped to `[0, T − 1]` through `w ∈ [0, 1]`.
pub fn sigma_to_t(sigma: f64, log_sigmas: &[f32]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    let n = log_sigmas.len();
    // low_idx = argmax(cumsum(log_sigma − log_sigmas ≥ 0)): the first index where the running
    // count of "at or below" entries reaches its maximum.
    let mut count = 0usize;
    let mut best = 0usize;
    let mut best_count = 0usize;
    for (i, &ls) in log_sigmas.iter().enumerate() {
        if log_sigma - f64::from(ls) >= 0.0 {
            count += 1;
        }
        if count > best_count {
            best_count = count;
            best = i;
        }
    }
    let low_idx = best.min(n.saturating_sub(2));
    let high_idx = low_idx + 1;
    let low = log_sigmas[low_idx];
    let high = log_sigmas[high_idx];
    let w = ((f64::from(low) - log_sigma) / f64::from(low - high)).clamp(0.0, 1.0);
    (1.0 - w) * low_idx as f64 + w * high_idx as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn karras_hits_both_ends() {
        let s = karras_sigmas(0.03, 14.6, 10);
        assert!((s[0] - 14.6).abs() < 1e-9);
        assert!((s[9] - 0.03).abs() < 1e-12);
        assert!(s.windows(2).all(|w| w[0] > w[1]));
    }

    #[test]
    fn sigma_to_t_inverts_the_table() {
        let sig: Vec<f32> = (0..100).map(|t| 0.1 + t as f32 * 0.2).collect();
        let logs: Vec<f32> = sig.iter().map(|s| s.ln()).collect();
        assert!((sigma_to_t(f64::from(sig[37]), &logs) - 37.0).abs() < 1e-4);
        assert_eq!(sigma_to_t(1e-3, &logs), 0.0);
        assert_eq!(sigma_to_t(1e3, &logs), 99.0);
    }
}
