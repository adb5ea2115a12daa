//! The loop's contracts, on a closed-form denoiser: row accounting, strategy needs,
//! branching, and independence of a particle's result from its batch.

use candle_core::{Device, Tensor};
use steerdiff_guidance::sampler::by_name;
use steerdiff_guidance::strategy::ClassifierFree;
use steerdiff_guidance::{
    Condition, Context, Denoiser, Engine, Error, GroupSpec, Guidance, Needs, NoisePath,
    Parameterization, Population, Step, StepPoint,
};

/// Data `N(μ_c, s²)` per class (μ = ±1 for classes 1 / 0, 0 unconditional), exact `x̂0`.
struct Gaussian {
    path: NoisePath,
}

impl Denoiser for Gaussian {
    fn name(&self) -> &str {
        "gauss"
    }
    fn parameterization(&self) -> Parameterization {
        Parameterization::Sample
    }
    fn path(&self) -> &NoisePath {
        &self.path
    }
    fn sample_shape(&self) -> Vec<usize> {
        vec![3]
    }
    fn max_batch(&self) -> usize {
        5
    }
    fn forward(
        &self,
        x: &Tensor,
        at: &StepPoint,
        conds: &[Condition],
    ) -> steerdiff_guidance::Result<Tensor> {
        let s2 = 0.25;
        let gain = at.alpha * s2 / (at.alpha * at.alpha * s2 + at.sigma * at.sigma);
        let mu: Vec<f32> = conds
            .iter()
            .map(|c| match c {
                Condition::Class(1) => 1.0,
                Condition::Class(_) => -1.0,
                _ => 0.0,
            })
            .collect();
        let mu = Tensor::from_vec(mu, (conds.len(), 1), x.device())?;
        // μ + gain·(x − α·μ)
        let centred = x.broadcast_sub(&mu.affine(at.alpha, 0.0)?)?;
        Ok(centred.affine(gain, 0.0)?.broadcast_add(&mu)?)
    }
}

fn groups(n: usize, seed: u64, cond: Condition, k: usize) -> Vec<GroupSpec> {
    (0..n)
        .map(|g| GroupSpec {
            seed: seed + g as u64,
            cond,
            particles: k,
        })
        .collect()
}

fn run(
    guidance: Vec<Box<dyn Guidance>>,
    groups: &[GroupSpec],
    sampler: &str,
    eta: Option<f64>,
) -> steerdiff_guidance::Result<steerdiff_guidance::Outcome> {
    let model = Gaussian {
        path: NoisePath::flow(),
    };
    let s = by_name(sampler, model.path(), 10, eta).unwrap();
    let pop = Population::new(
        groups,
        &model.sample_shape(),
        s.schedule.init_noise_sigma,
        &Device::Cpu,
    )?;
    let engine = Engine {
        models: vec![&model],
        schedule: &s.schedule,
        solver: s.solver.as_ref(),
        guidance,
    };
    engine.run(pop, None)
}

#[test]
fn cfg_costs_one_extra_row_per_particle_only_where_active() {
    let g = groups(4, 0, Condition::Class(1), 1);
    let plain = run(
        vec![Box::new(ClassifierFree::new(1.0).unwrap())],
        &g,
        "flow-euler",
        None,
    )
    .unwrap();
    assert_eq!(plain.ledger.total_rows(), 4 * 10);
    // batches of at most 5 rows: 4 rows → one call per step
    assert_eq!(plain.ledger.model_calls["gauss"], 10);
    let guided = run(
        vec![Box::new(ClassifierFree::new(3.0).unwrap())],
        &g,
        "flow-euler",
        None,
    )
    .unwrap();
    assert_eq!(guided.ledger.total_rows(), 2 * 4 * 10);
    assert_eq!(
        guided.ledger.model_calls["gauss"],
        2 * 10,
        "8 rows split into 5 + 3"
    );
    // Only steps whose σ/α lies in [0.5, 2] (flow σ = 1, 0.9, …, 0.1 → σ/α ∈ {0.667, 1, 1.5}).
    let cfg = ClassifierFree {
        interval: Some((0.5, 2.0)),
        ..ClassifierFree::new(3.0).unwrap()
    };
    let limited = run(vec![Box::new(cfg)], &g, "flow-euler", None).unwrap();
    assert_eq!(limited.ledger.total_rows(), 4 * 10 + 4 * 3);
    // Unconditional sampling never asks for the null row twice.
    let uncond = run(
        vec![Box::new(ClassifierFree::new(3.0).unwrap())],
        &groups(4, 0, Condition::Null, 1),
        "flow-euler",
        None,
    )
    .unwrap();
    assert_eq!(uncond.ledger.total_rows(), 4 * 10);
}

#[test]
fn cfg_extrapolates_away_from_the_unconditional_mean() {
    let g = groups(200, 0, Condition::Class(1), 1);
    let mean = |o: steerdiff_guidance::Outcome| {
        o.population
            .x
            .mean_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    let m1 = mean(
        run(
            vec![Box::new(ClassifierFree::new(1.0).unwrap())],
            &g,
            "flow-euler",
            None,
        )
        .unwrap(),
    );
    let m3 = mean(
        run(
            vec![Box::new(ClassifierFree::new(3.0).unwrap())],
            &g,
            "flow-euler",
            None,
        )
        .unwrap(),
    );
    assert!((m1 - 1.0).abs() < 0.05, "conditional mean {m1}");
    assert!(
        m3 > 1.5,
        "guided mean {m3} should move past the class mean, away from 0"
    );
}

struct NeedsNoise;
impl Guidance for NeedsNoise {
    fn name(&self) -> String {
        "needs-noise".into()
    }
    fn needs(&self) -> Needs {
        Needs {
            stochastic_solver: true,
            ..Needs::default()
        }
    }
}

#[test]
fn a_strategy_that_needs_noise_is_refused_on_an_ode_sampler() {
    let g = groups(1, 0, Condition::Null, 2);
    match run(vec![Box::new(NeedsNoise)], &g, "flow-euler", Some(0.0)) {
        Err(Error::Unsupported(msg)) => assert!(msg.contains("--eta"), "{msg}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(run(vec![Box::new(NeedsNoise)], &g, "flow-euler", Some(1.0)).is_ok());
}

/// Branches every particle into 3 children at each step and keeps the child with the largest
/// first coordinate: the population size is constant and children must differ.
struct BranchAndPick;
impl Guidance for BranchAndPick {
    fn name(&self) -> String {
        "branch".into()
    }
    fn expand(&self, _: &Step, _: &Population) -> usize {
        3
    }
    fn select(
        &self,
        _: &Step,
        pop: &mut Population,
        cx: &mut Context,
    ) -> steerdiff_guidance::Result<()> {
        let first: Vec<f32> = pop.x.narrow(1, 0, 1)?.flatten_all()?.to_vec1()?;
        let keep: Vec<usize> = (0..pop.len() / 3)
            .map(|p| {
                (3 * p..3 * p + 3)
                    .max_by(|&a, &b| first[a].total_cmp(&first[b]))
                    .unwrap()
            })
            .collect();
        let distinct = (0..pop.len() / 3).all(|p| first[3 * p] != first[3 * p + 1]);
        cx.trace("children_differ", distinct);
        *pop = pop.gather(&keep, 0)?;
        Ok(())
    }
}

#[test]
fn branching_children_diverge_and_selection_steers() {
    let g = groups(50, 0, Condition::Null, 1);
    let model = Gaussian {
        path: NoisePath::flow(),
    };
    let s = by_name("flow-euler", model.path(), 10, Some(1.0)).unwrap();
    let pop = Population::new(&g, &[3], 1.0, &Device::Cpu).unwrap();
    let engine = Engine {
        models: vec![&model],
        schedule: &s.schedule,
        solver: s.solver.as_ref(),
        guidance: vec![Box::new(BranchAndPick)],
    };
    let mut trace: Vec<serde_json::Value> = Vec::new();
    let out = engine.run(pop, Some(&mut trace)).unwrap();
    assert_eq!(out.population.len(), 50);
    assert_eq!(trace.len(), 10);
    // Every step adds noise except the last, which lands on σ = 0 deterministically.
    assert!(trace[..9].iter().all(|l| l["children_differ"] == true));
    assert_eq!(trace[9]["children_differ"], false);
    let first: Vec<f32> = out
        .population
        .x
        .narrow(1, 0, 1)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let mean = first.iter().sum::<f32>() / 50.0;
    assert!(
        mean > 0.3,
        "picking the max child should raise the first coordinate, got {mean}"
    );
}

#[test]
fn a_particle_does_not_depend_on_its_batch() {
    // Group 7 of seed 100 sampled inside a batch of 8 groups equals group 0 of seed 107 alone,
    // with a stochastic sampler (per-particle noise streams).
    let all = run(
        vec![],
        &groups(8, 100, Condition::Class(0), 2),
        "flow-euler",
        Some(1.0),
    )
    .unwrap();
    let alone = run(
        vec![],
        &groups(1, 107, Condition::Class(0), 2),
        "flow-euler",
        Some(1.0),
    )
    .unwrap();
    for k in 0..2 {
        assert_eq!(
            all.population.row(14 + k).unwrap(),
            alone.population.row(k).unwrap()
        );
    }
}
