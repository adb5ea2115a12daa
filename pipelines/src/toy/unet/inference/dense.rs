//! The linear layers and 3×3 convolutions of the toy U-Net's CPU forward: one `gemm` product
//! each (three for a convolution, see the parent module), reading their operands in place.

use candle_core::{DType, Result};
use gemm::Parallelism;

use crate::kernels::{product, View};

/// A linear layer's weight `[n, k]` (row-major) and bias `[n]`.
#[derive(Debug, Clone)]
pub(super) struct Dense {
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
    /// Outputs.
    pub(super) n: usize,
    /// Inputs.
    pub(super) k: usize,
}

impl Dense {
    pub(super) fn new(layer: &candle_nn::Linear) -> Result<Self> {
        let (n, k) = layer.weight().dims2()?;
        Ok(Dense {
            weight: layer
                .weight()
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1()?,
            bias: match layer.bias() {
                Some(b) => Some(b.to_dtype(DType::F32)?.to_vec1()?),
                None => None,
            },
            n,
            k,
        })
    }

    /// `out[m × n] = x[m × k]·Wᵀ + b` (rows contiguous).
    pub(super) fn apply(&self, x: &[f32], m: usize, out: &mut [f32], par: Parallelism) {
        let (n, k) = (self.n, self.k);
        assert!(
            x.len() >= m * k && out.len() >= m * n,
            "dense: buffers too short"
        );
        let accumulate = self.fill_bias(&mut out[..m * n]);
        // SAFETY: x covers m rows of k, the weight n rows of k, out m rows of n (checked).
        unsafe {
            product(
                out.as_mut_ptr(),
                n,
                accumulate,
                View::rows(x.as_ptr(), k),
                View::transposed(self.weight.as_ptr(), k),
                (m, n, k),
                1.0,
                par,
            )
        }
    }

    /// Writes the bias into every row of `out`; whether there was one (the product then adds).
    fn fill_bias(&self, out: &mut [f32]) -> bool {
        match &self.bias {
            Some(b) => {
                out.chunks_exact_mut(self.n)
                    .for_each(|row| row.copy_from_slice(b));
                true
            }
            None => false,
        }
    }

    /// The 3×3 convolution of the module docs: `padded` holds `(h+2)·(w+2)` pixels of `c`
    /// channels, the weight is `[O, 9·C]` tap-major; `out` gets `h·(w+2)` rows of `O` (the
    /// last two columns of each row are not meaningful, and the last two rows not written).
    pub(super) fn conv3x3(
        &self,
        padded: &[f32],
        (h, w, c): (usize, usize, usize),
        out: &mut [f32],
        par: Parallelism,
    ) {
        let (o, wp) = (self.n, w + 2);
        assert!(
            self.k == 9 * c,
            "conv3x3: weight takes {} inputs, not 9·{c}",
            self.k
        );
        assert!(padded.len() >= (h + 2) * wp * c && out.len() >= h * wp * o);
        // The last output row read is pixel h·w' − 3; its bottom-right tap is the last pixel.
        let m = h * wp - 2;
        let mut accumulate = self.fill_bias(&mut out[..m * o]);
        for dy in 0..3 {
            // SAFETY: row p of the left view reads pixels p + dy·w' … p + dy·w' + 2 ≤ the last
            // of `padded` for p < m; the right view reads the weight's columns dy·3C … +3C.
            unsafe {
                product(
                    out.as_mut_ptr(),
                    o,
                    accumulate,
                    View::rows(padded.as_ptr().add(dy * wp * c), c),
                    View::transposed(self.weight.as_ptr().add(dy * 3 * c), 9 * c),
                    (m, o, 3 * c),
                    1.0,
                    par,
                )
            }
            accumulate = true;
        }
    }
}
