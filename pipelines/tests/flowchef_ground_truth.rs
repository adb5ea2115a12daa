//! FlowChef against an exact posterior (ALGORITHMS §10.4): 2-D Gaussian data
//! `N(0, [[1, 0.8], [0.8, 1]])`, rectified flow, 100 Euler steps, coordinate 0 observed at
//! `y = 1.5`, cost `(x̂0[0] − y)²` on every step. The exact posterior of the unobserved
//! coordinate is `N(0.8·1.5, 1 − 0.8²) = N(1.2, 0.6²)`.

use candle_core::{Device, Tensor};
use steerdiff_guidance::sampler::by_name;
use steerdiff_guidance::strategy::{FlowChef, GradientEstimate, MaskedSquare};
use steerdiff_guidance::{
    Condition, Denoiser, Engine, Error, GroupSpec, NoisePath, Outcome, Population,
};
use steerdiff_pipelines::{GaussianDenoiser, GmmDenoiser};

mod common;
use common::{run_correlated, stats};

const N: usize = 4000;

fn observe() -> MaskedSquare {
    MaskedSquare {
        mask: Tensor::new(&[1.0f32, 0.0], &Device::Cpu).unwrap(),
        target: Tensor::new(&[1.5f32, 0.0], &Device::Cpu).unwrap(),
    }
}

fn run(chef: Option<FlowChef>) -> Outcome {
    let guidance = chef
        .into_iter()
        .map(|c| Box::new(c) as Box<dyn steerdiff_guidance::Guidance>)
        .collect();
    run_correlated(NoisePath::flow(), "flow-euler", 100, None, N, guidance)
}

fn chef(estimate: GradientEstimate, lr: f64, k: usize) -> FlowChef {
    FlowChef {
        cost: Box::new(observe()),
        lr,
        iterations: k,
        max_steps: Some(100),
        estimate,
    }
}

#[test]
fn gradient_skipping_recovers_the_exact_posterior() {
    let plain = run(None);
    let (e0, m0, s0) = stats(&plain);
    println!("no guidance: error {e0:.3}, x0[1] ~ ({m0:.3}, {s0:.3})");
    for (lr, k) in [(0.2, 1), (0.2, 4)] {
        let out = run(Some(chef(GradientEstimate::Exact, lr, k)));
        let (e, m, s) = stats(&out);
        println!(
            "FlowChef lr {lr} K={k}: error {e:.4}, x0[1] ~ ({m:.3}, {s:.3}); exact (1.2, 0.6)"
        );
        assert!(e <= 0.01, "measurement error {e}");
        assert!(
            (m - 1.2).abs() <= 0.05 * 1.2 && (s - 0.6).abs() <= 0.05 * 0.6,
            "({m}, {s})"
        );
        // Zero model rows beyond the unguided run: the model is never called again.
        assert_eq!(out.ledger.total_rows(), plain.ledger.total_rows());
    }
}

#[test]
fn the_zeroth_order_variant_gets_within_ten_percent() {
    let out = run(Some(chef(
        GradientEstimate::ZerothOrder {
            pairs: 16,
            mu: 0.05,
        },
        0.2,
        1,
    )));
    let (e, m, s) = stats(&out);
    println!("FlowChef zeroth-order (16 antithetic pairs): error {e:.4}, x0[1] ~ ({m:.3}, {s:.3})");
    assert!(e <= 0.02, "measurement error {e}");
    assert!(
        (m - 1.2).abs() <= 0.1 * 1.2 && (s - 0.6).abs() <= 0.1 * 0.6,
        "({m}, {s})"
    );
}

/// One FlowChef run of a single sample on the correlated Gaussian over `path`.
fn run_one(path: NoisePath, sampler: &str, chef: FlowChef) -> Result<Outcome, Error> {
    let model =
        GaussianDenoiser::new(vec![0.0, 0.0], vec![vec![1.0, 0.8], vec![0.8, 1.0]], path).unwrap();
    let s = by_name(sampler, model.path(), 10, None).unwrap();
    let group = GroupSpec {
        seed: 0,
        cond: Condition::Null,
        particles: 1,
    };
    let pop = Population::new(&[group], &[2], 1.0, &Device::Cpu).unwrap();
    let engine = Engine {
        models: vec![&model],
        schedule: &s.schedule,
        solver: s.solver.as_ref(),
        guidance: vec![Box::new(chef)],
    };
    engine.run(pop, None)
}

#[test]
fn flowchef_refuses_bad_settings() {
    // Not a rectified flow.
    match run_one(
        GmmDenoiser::vp_path(),
        "ddim",
        chef(GradientEstimate::Exact, 0.2, 1),
    ) {
        Err(Error::Unsupported(m)) => assert!(m.contains("rectified-flow"), "{m}"),
        other => panic!("{:?}", other.map(|_| ())),
    }
    // A mask that does not match the sample shape.
    let bad = FlowChef {
        cost: Box::new(MaskedSquare {
            mask: Tensor::new(&[1.0f32, 0.0, 0.0], &Device::Cpu).unwrap(),
            target: Tensor::new(&[1.0f32, 0.0, 0.0], &Device::Cpu).unwrap(),
        }),
        ..chef(GradientEstimate::Exact, 0.2, 1)
    };
    let e = run_one(NoisePath::flow(), "flow-euler", bad)
        .unwrap_err()
        .to_string();
    assert!(e.contains("mask") && e.contains("sample shape"), "{e}");
    // NaN step size.
    let e = run_one(
        NoisePath::flow(),
        "flow-euler",
        chef(GradientEstimate::Exact, f64::NAN, 1),
    );
    assert!(e.unwrap_err().to_string().contains("step size"));
}
