//! Measurement costs for FlowChef's inverse problems: `L(x) = ‖A(x) − y‖²` per row with a
//! linear operator `A` on images `[C, H, W]`, and its gradient `2·Aᵀ(A(x) − y)`.
//!
//! * [`SuperResolution`]: `A` = average pooling by a factor `f`; `Aᵀ r` = nearest upsampling
//!   of `r` divided by `f²`.
//! * [`GaussianDeblur`]: `A` = per-channel convolution with a normalised Gaussian kernel and
//!   zero padding ("same" size); the kernel is symmetric, so `Aᵀ = A`.
//!
//! Inpainting is [`MaskedSquare`](super::flowchef::MaskedSquare).

use candle_core::{DType, Tensor};

use super::flowchef::Cost;
use crate::{Error, Result};

fn rows_sum_sq(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.sqr()?
        .flatten_from(1)?
        .sum(1)?
        .to_dtype(DType::F64)?
        .to_vec1()?)
}

/// `‖avgpool_f(x) − y‖²`: super-resolution from a low-resolution observation `y` `[C, H/f, W/f]`.
pub struct SuperResolution {
    /// Down-sampling factor `f`.
    pub factor: usize,
    /// The low-resolution observation.
    pub target: Tensor,
}

impl SuperResolution {
    fn residual(&self, x0: &Tensor) -> Result<Tensor> {
        let (_, c, h, w) = x0.dims4()?;
        let f = self.factor;
        if f == 0 || h % f != 0 || w % f != 0 || self.target.dims() != [c, h / f, w / f] {
            return Err(Error::InvalidArgument(format!(
                "super-resolution: a {c}×{h}×{w} sample needs a {c}×{}×{} observation (factor {f}), got {:?}",
                h / f.max(1),
                w / f.max(1),
                self.target.dims()
            )));
        }
        Ok(x0.avg_pool2d(f)?.broadcast_sub(&self.target)?)
    }
}

impl Cost for SuperResolution {
    fn name(&self) -> &str {
        "superres"
    }

    fn value(&self, x0: &Tensor) -> Result<Vec<f64>> {
        rows_sum_sq(&self.residual(x0)?)
    }

    fn gradient(&self, x0: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x0.dims4()?;
        let f = self.factor as f64;
        Ok(self
            .residual(x0)?
            .upsample_nearest2d(h, w)?
            .affine(2.0 / (f * f), 0.0)?)
    }
}

/// `‖blur(x) − y‖²`: deblurring a Gaussian blur of standard deviation `sigma` pixels.
pub struct GaussianDeblur {
    /// The kernel as a depthwise convolution weight `[C, 1, k, k]`.
    kernel: Tensor,
    /// The blurred observation `[C, H, W]`.
    pub target: Tensor,
}

impl GaussianDeblur {
    /// A Gaussian blur with standard deviation `sigma` and odd kernel size `size`, for images
    /// with the observation's channel count.
    pub fn new(sigma: f64, size: usize, target: Tensor) -> Result<Self> {
        if size % 2 == 0 || !(sigma.is_finite() && sigma > 0.0) {
            return Err(Error::InvalidArgument(format!(
                "deblur: need an odd kernel size and σ > 0 (got {size}, {sigma})"
            )));
        }
        let c = target.dims().first().copied().unwrap_or(0);
        let r = (size / 2) as f64;
        let g: Vec<f64> = (0..size)
            .map(|i| (-((i as f64 - r).powi(2)) / (2.0 * sigma * sigma)).exp())
            .collect();
        let total: f64 = g.iter().sum::<f64>().powi(2);
        let mut k = Vec::with_capacity(c * size * size);
        for _ in 0..c {
            for a in &g {
                for b in &g {
                    k.push((a * b / total) as f32);
                }
            }
        }
        let kernel =
            Tensor::from_vec(k, (c, 1, size, size), target.device())?.to_dtype(target.dtype())?;
        Ok(GaussianDeblur { kernel, target })
    }

    /// The blur operator `A` (also `Aᵀ`).
    pub fn blur(&self, x: &Tensor) -> Result<Tensor> {
        let c = x.dim(1)?;
        let pad = self.kernel.dim(2)? / 2;
        Ok(x.conv2d(&self.kernel, pad, 1, 1, c)?)
    }

    fn residual(&self, x0: &Tensor) -> Result<Tensor> {
        if x0.dims()[1..] != *self.target.dims() {
            return Err(Error::InvalidArgument(format!(
                "deblur: the observation {:?} must match the sample shape {:?}",
                self.target.dims(),
                &x0.dims()[1..]
            )));
        }
        Ok(self.blur(x0)?.broadcast_sub(&self.target)?)
    }
}

impl Cost for GaussianDeblur {
    fn name(&self) -> &str {
        "deblur"
    }

    fn value(&self, x0: &Tensor) -> Result<Vec<f64>> {
        rows_sum_sq(&self.residual(x0)?)
    }

    fn gradient(&self, x0: &Tensor) -> Result<Tensor> {
        Ok(self.blur(&self.residual(x0)?)?.affine(2.0, 0.0)?)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::strategy::flowchef::MaskedSquare;
    use candle_core::Device;

    /// A seeded standard-normal f64 tensor (test data).
    pub(crate) fn random(shape: &[usize], seed: u64) -> Tensor {
        let n = shape.iter().product();
        let v = crate::rng::StreamKey {
            seed,
            lineage: 0,
            step: 0,
            domain: crate::rng::Domain::Search,
        }
        .normals(n);
        Tensor::from_vec(v, shape, &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
    }

    /// Central finite differences of `value` along a random direction equal `⟨∇L, u⟩`.
    pub(crate) fn check(cost: &dyn Cost, x: &Tensor) {
        let u = random(x.dims(), 99);
        let h = 1e-4;
        let plus = cost
            .value(&(x + u.affine(h, 0.0).unwrap()).unwrap())
            .unwrap();
        let minus = cost
            .value(&(x - u.affine(h, 0.0).unwrap()).unwrap())
            .unwrap();
        let g = cost.gradient(x).unwrap();
        let dot: Vec<f64> = (g * &u)
            .unwrap()
            .flatten_from(1)
            .unwrap()
            .sum(1)
            .unwrap()
            .to_vec1()
            .unwrap();
        for i in 0..dot.len() {
            let fd = (plus[i] - minus[i]) / (2.0 * h);
            assert!(
                (fd - dot[i]).abs() < 1e-6 * (1.0 + fd.abs()),
                "{}: fd {fd} vs {}",
                cost.name(),
                dot[i]
            );
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        let x = random(&[2, 3, 8, 8], 1);
        check(
            &SuperResolution {
                factor: 2,
                target: random(&[3, 4, 4], 2),
            },
            &x,
        );
        check(
            &GaussianDeblur::new(1.5, 5, random(&[3, 8, 8], 3)).unwrap(),
            &x,
        );
        let mask = random(&[3, 8, 8], 4)
            .ge(0.0)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap();
        check(
            &MaskedSquare {
                mask,
                target: random(&[3, 8, 8], 5),
            },
            &x,
        );
    }

    #[test]
    fn shape_mismatches_are_named() {
        let x = random(&[1, 3, 8, 8], 1);
        let e = SuperResolution {
            factor: 2,
            target: random(&[3, 3, 3], 2),
        }
        .value(&x)
        .unwrap_err();
        assert!(e.to_string().contains("observation"), "{e}");
        let e = GaussianDeblur::new(1.0, 5, random(&[3, 4, 4], 3))
            .unwrap()
            .value(&x)
            .unwrap_err();
        assert!(e.to_string().contains("sample shape"), "{e}");
        assert!(GaussianDeblur::new(1.0, 4, random(&[3, 8, 8], 3)).is_err());
    }
}
