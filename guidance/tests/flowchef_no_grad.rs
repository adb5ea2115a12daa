//! FlowChef's contract with the model: the model is never differentiated (no tracked tensor
//! ever reaches `forward`, even with a cost that runs autograd), it is never called more than
//! in unguided sampling, and inpainting by replacement ends on the known values exactly.

use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor, D};
use steerdiff_guidance::sampler::by_name;
use steerdiff_guidance::strategy::{
    ClassifierCost, Cost, DifferentiableClassifier, FlowChef, GradientEstimate, MaskedSquare,
    Replacement,
};
use steerdiff_guidance::{
    Condition, Denoiser, Engine, GroupSpec, Guidance, NoisePath, Outcome, Parameterization,
    Population, StepPoint,
};

/// A fixed affine velocity field `v = x/2 + 0.1` that
/// records whether any input it saw carried an autograd graph.
struct Spy {
    path: NoisePath,
    tracked: Mutex<usize>,
}

impl Denoiser for Spy {
    fn name(&self) -> &str {
        "spy"
    }
    fn parameterization(&self) -> Parameterization {
        Parameterization::Velocity
    }
    fn path(&self) -> &NoisePath {
        &self.path
    }
    fn sample_shape(&self) -> Vec<usize> {
        vec![3, 2, 2]
    }
    fn forward(
        &self,
        x: &Tensor,
        _: &StepPoint,
        _: &[Condition],
    ) -> steerdiff_guidance::Result<Tensor> {
        if x.track_op() {
            *self.tracked.lock().unwrap() += 1;
        }
        Ok(x.affine(0.5, 0.1)?)
    }
}

/// Softmax regression from basic ops.
struct Linear {
    w: Tensor,
}

impl DifferentiableClassifier for Linear {
    fn name(&self) -> &str {
        "linear"
    }
    fn log_prob_tensor(&self, x: &Tensor) -> steerdiff_guidance::Result<Tensor> {
        let logits = x.flatten_from(1)?.matmul(&self.w)?;
        let max = logits.max_keepdim(D::Minus1)?.detach();
        let z = logits.broadcast_sub(&max)?;
        Ok(z.broadcast_sub(&z.exp()?.sum_keepdim(D::Minus1)?.log()?)?)
    }
}

fn run(model: &Spy, guidance: Vec<Box<dyn Guidance>>) -> Outcome {
    let s = by_name("flow-euler", model.path(), 8, None).unwrap();
    let groups: Vec<GroupSpec> = (0..6)
        .map(|g| GroupSpec {
            seed: g,
            cond: Condition::Null,
            particles: 1,
        })
        .collect();
    let pop = Population::new(&groups, &model.sample_shape(), 1.0, &Device::Cpu).unwrap();
    let engine = Engine {
        models: vec![model],
        schedule: &s.schedule,
        solver: s.solver.as_ref(),
        guidance,
    };
    engine.run(pop, None).unwrap()
}

fn spy() -> Spy {
    Spy {
        path: NoisePath::flow(),
        tracked: Mutex::new(0),
    }
}

fn weights() -> Tensor {
    let v: Vec<f32> = (0..48).map(|i| ((i * 7 % 11) as f32 - 5.0) / 5.0).collect();
    Tensor::from_vec(v, (12, 4), &Device::Cpu).unwrap()
}

#[test]
fn the_classifier_cost_never_reaches_the_model_and_costs_no_rows() {
    let plain_model = spy();
    let plain = run(&plain_model, Vec::new());
    let model = spy();
    let cost = ClassifierCost::new(Arc::new(Linear { w: weights() }), 1, 1.0);
    let chef = FlowChef {
        cost: Box::new(cost),
        lr: 0.5,
        iterations: 3,
        max_steps: None,
        estimate: GradientEstimate::Exact,
    };
    let out = run(&model, vec![Box::new(chef)]);
    assert_eq!(
        *model.tracked.lock().unwrap(),
        0,
        "a tracked tensor reached the model"
    );
    assert!(!out.population.x.track_op());
    assert_eq!(out.ledger.model_rows, plain.ledger.model_rows);
    // It steered: the final samples are more class-1 under the classifier than unguided ones.
    let judge = ClassifierCost::new(Arc::new(Linear { w: weights() }), 1, 1.0);
    let mean = |o: &Outcome| {
        let v = judge.value(&o.population.x).unwrap();
        v.iter().sum::<f64>() / v.len() as f64
    };
    assert!(
        mean(&out) < mean(&plain),
        "{} vs {}",
        mean(&out),
        mean(&plain)
    );
}

fn inpaint_pair() -> (Tensor, Tensor) {
    let mask: Vec<f32> = (0..12)
        .map(|i| if i % 3 == 0 { 0.0 } else { 1.0 })
        .collect();
    let target: Vec<f32> = (0..12).map(|i| (i as f32 - 6.0) / 6.0).collect();
    (
        Tensor::from_vec(mask, (3, 2, 2), &Device::Cpu).unwrap(),
        Tensor::from_vec(target, (3, 2, 2), &Device::Cpu).unwrap(),
    )
}

/// Largest |x − y| over known entries of every final sample.
fn known_error(out: &Outcome, mask: &Tensor, target: &Tensor) -> f64 {
    out.population
        .x
        .broadcast_sub(target)
        .unwrap()
        .broadcast_mul(mask)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

#[test]
fn inpainting_lands_on_the_known_values_at_unguided_cost() {
    let plain = run(&spy(), Vec::new());
    let (mask, target) = inpaint_pair();
    // FlowChef guiding every step with η = ½ projects x̂0 onto the known values each step,
    // and the last flow-Euler step returns x̂0: exact whatever the model.
    let chef = FlowChef {
        cost: Box::new(MaskedSquare {
            mask: mask.clone(),
            target: target.clone(),
        }),
        lr: 0.5,
        iterations: 1,
        max_steps: Some(8),
        estimate: GradientEstimate::Exact,
    };
    let out = run(&spy(), vec![Box::new(chef)]);
    assert!(known_error(&out, &mask, &target) < 1e-5);
    assert_eq!(out.ledger.model_rows, plain.ledger.model_rows);
    let rep = Replacement {
        mask: mask.clone(),
        target: target.clone(),
    };
    let out = run(&spy(), vec![Box::new(rep)]);
    assert_eq!(known_error(&out, &mask, &target), 0.0);
    assert_eq!(out.ledger.model_rows, plain.ledger.model_rows);
    // Unknown entries are the model's own: not pinned to the target.
    let free = out
        .population
        .x
        .broadcast_sub(&target)
        .unwrap()
        .broadcast_mul(&mask.affine(-1.0, 1.0).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(free > 0.1);
}

#[test]
fn replacement_refuses_a_mask_of_the_wrong_shape() {
    let model = spy();
    let s = by_name("flow-euler", model.path(), 2, None).unwrap();
    let pop = Population::new(
        &[GroupSpec {
            seed: 0,
            cond: Condition::Null,
            particles: 1,
        }],
        &model.sample_shape(),
        1.0,
        &Device::Cpu,
    )
    .unwrap();
    let rep = Replacement {
        mask: Tensor::ones((3, 4, 4), DType::F32, &Device::Cpu).unwrap(),
        target: Tensor::zeros((3, 4, 4), DType::F32, &Device::Cpu).unwrap(),
    };
    let engine = Engine {
        models: vec![&model],
        schedule: &s.schedule,
        solver: s.solver.as_ref(),
        guidance: vec![Box::new(rep)],
    };
    let e = engine.run(pop, None).unwrap_err();
    assert!(e.to_string().contains("sample shape"), "{e}");
}
