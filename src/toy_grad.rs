//! The toy guidance classifier as a [`DifferentiableClassifier`], for FlowChef's classifier
//! cost `−ln p(c | x̂0)`: its forward pass is written in ops that back-propagate (it was
//! trained with them), and its weights are plain tensors, so autograd reaches only the input.

use steerdiff_guidance::strategy::DifferentiableClassifier;
use steerdiff_guidance::{Error, Result};
use steerdiff_pipelines::toy::ToyClassifier;

use candle_core::Tensor;

/// The toy guidance classifier, differentiated with respect to its input.
#[derive(Debug, Clone)]
pub struct ToyGradClassifier(pub ToyClassifier);

impl DifferentiableClassifier for ToyGradClassifier {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn log_prob_tensor(&self, x: &Tensor) -> Result<Tensor> {
        self.0.log_probs(x).map_err(|e| Error::Reward {
            name: self.0.name().to_string(),
            message: e.to_string(),
        })
    }
}
