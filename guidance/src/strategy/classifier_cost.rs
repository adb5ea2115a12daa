//! The classifier cost of FlowChef's classifier guidance (Patel et al. 2025, arXiv 2412.00100,
//! §3; ALGORITHMS §4.2): `L(x̂0) = −w·ln p(c | x̂0)` per row, for a target class `c`.
//!
//! Its gradient comes from candle's autograd **through the classifier only**: each call copies
//! `x̂0` into a fresh [`Var`] (detached from anything upstream, so no graph can lead back to the
//! flow model), runs the classifier on it, back-propagates `Σ_rows L` and returns the detached
//! gradient. The classifier must treat rows independently (no batch statistics), so the
//! gradient of the sum is every row's own gradient.

use std::sync::Arc;

use candle_core::{DType, Tensor, Var};

use super::flowchef::Cost;
use crate::{Error, Result};

/// A classifier of clean samples written in differentiable candle ops.
pub trait DifferentiableClassifier: Send + Sync {
    /// Name for records.
    fn name(&self) -> &str;

    /// `ln p(k | x)` as a tensor `[B, K]` for rows `x` (`[B, …]`), built from ops that
    /// back-propagate to `x` (rows independent of each other).
    fn log_prob_tensor(&self, x: &Tensor) -> Result<Tensor>;
}

/// `L(x) = −weight·ln p(class | x)`: steers towards samples the classifier puts in `class`.
pub struct ClassifierCost {
    /// The classifier (differentiated; never the flow model).
    pub classifier: Arc<dyn DifferentiableClassifier>,
    /// Target class `c`.
    pub class: u32,
    /// Weight `w` of the cost.
    pub weight: f64,
    name: String,
}

impl ClassifierCost {
    /// The cost `−weight·ln p(class | x)` under `classifier`.
    pub fn new(classifier: Arc<dyn DifferentiableClassifier>, class: u32, weight: f64) -> Self {
        let name = format!("classifier({}, class {class})", classifier.name());
        ClassifierCost {
            classifier,
            class,
            weight,
            name,
        }
    }

    /// `−w·ln p(c | x)` as a `[B]` tensor (tracked when `x` is).
    fn per_row(&self, x: &Tensor) -> Result<Tensor> {
        let lp = self.classifier.log_prob_tensor(x)?;
        let (b, k) = lp.dims2()?;
        if b != x.dim(0)? || self.class as usize >= k {
            return Err(Error::InvalidArgument(format!(
                "classifier cost: class {} with a classifier of {k} classes over {b} rows \
                 (expected {} rows); pick a class in 0..{k}",
                self.class,
                x.dim(0)?
            )));
        }
        Ok(lp
            .narrow(1, self.class as usize, 1)?
            .squeeze(1)?
            .affine(-self.weight, 0.0)?)
    }
}

impl Cost for ClassifierCost {
    fn name(&self) -> &str {
        &self.name
    }

    fn value(&self, x0: &Tensor) -> Result<Vec<f64>> {
        Ok(self
            .per_row(&x0.detach())?
            .to_dtype(DType::F64)?
            .to_vec1()?)
    }

    fn gradient(&self, x0: &Tensor) -> Result<Tensor> {
        // A fresh leaf: the only graph built below is the classifier's.
        let leaf = Var::from_tensor(&x0.detach())?;
        let loss = self.per_row(leaf.as_tensor())?.sum_all()?;
        let grads = loss.backward()?;
        let g = match grads.get(leaf.as_tensor()) {
            Some(g) => g.detach(),
            // The classifier ignores its input: the cost is constant.
            None => x0.zeros_like()?,
        };
        Ok(g.to_dtype(x0.dtype())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::costs::tests::{check, random};
    use candle_core::D;

    /// Softmax regression `ln softmax(W·vec(x))` from basic ops.
    struct Linear {
        w: Tensor,
    }

    impl DifferentiableClassifier for Linear {
        fn name(&self) -> &str {
            "linear"
        }
        fn log_prob_tensor(&self, x: &Tensor) -> Result<Tensor> {
            let logits = x.flatten_from(1)?.matmul(&self.w)?;
            let max = logits.max_keepdim(D::Minus1)?.detach();
            let z = logits.broadcast_sub(&max)?;
            Ok(z.broadcast_sub(&z.exp()?.sum_keepdim(D::Minus1)?.log()?)?)
        }
    }

    fn cost() -> ClassifierCost {
        let w = random(&[12, 4], 7);
        ClassifierCost::new(Arc::new(Linear { w }), 2, 1.5)
    }

    #[test]
    fn gradient_matches_finite_differences_per_row() {
        let c = cost();
        let x = random(&[3, 3, 2, 2], 1);
        let g = c.gradient(&x).unwrap();
        assert!(!g.track_op(), "the gradient must come back detached");
        assert_eq!(g.dims(), x.dims());
        check(&c, &x);
    }

    #[test]
    fn value_is_the_weighted_negative_log_probability() {
        let c = cost();
        let x = random(&[2, 3, 2, 2], 3);
        let lp: Vec<Vec<f64>> = c.classifier.log_prob_tensor(&x).unwrap().to_vec2().unwrap();
        let v = c.value(&x).unwrap();
        for (row, val) in lp.iter().zip(v) {
            assert!((val + 1.5 * row[2]).abs() < 1e-12);
            assert!(val > 0.0);
        }
    }

    #[test]
    fn an_upstream_graph_is_cut() {
        // x0 derived from a variable (as if from a tracked model output): the gradient is
        // still detached and the upstream variable receives nothing.
        let c = cost();
        let up = Var::from_tensor(&random(&[1, 3, 2, 2], 4)).unwrap();
        let x0 = up.as_tensor().affine(2.0, 0.0).unwrap();
        let g = c.gradient(&x0).unwrap();
        assert!(!g.track_op());
    }

    #[test]
    fn a_class_outside_the_classifier_is_named() {
        let w = random(&[12, 4], 7);
        let c = ClassifierCost::new(Arc::new(Linear { w }), 9, 1.0);
        let e = c.value(&random(&[1, 3, 2, 2], 1)).unwrap_err();
        assert!(e.to_string().contains("class 9"), "{e}");
    }
}
