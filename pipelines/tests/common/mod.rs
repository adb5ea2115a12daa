//! The exact-posterior set-up shared by the FlowChef and time-travel checks (ALGORITHMS §10.4):
//! 2-D Gaussian data `N(0, [[1, 0.8], [0.8, 1]])`, coordinate 0 observed at `y = 1.5`, whose
//! exact posterior for coordinate 1 is `N(1.2, 0.6²)`.

use candle_core::Device;
use steerdiff_guidance::sampler::by_name;
use steerdiff_guidance::{
    Condition, Denoiser, Engine, GroupSpec, Guidance, NoisePath, Outcome, Population,
};
use steerdiff_pipelines::GaussianDenoiser;

/// The observed value of coordinate 0.
pub const Y: f64 = 1.5;

/// `n` samples of the correlated Gaussian on `path` with `sampler` over `steps` steps, one
/// particle per seed `0..n`, steered by `guidance`.
pub fn run_correlated(
    path: NoisePath,
    sampler: &str,
    steps: usize,
    eta: Option<f64>,
    n: usize,
    guidance: Vec<Box<dyn Guidance>>,
) -> Outcome {
    let model =
        GaussianDenoiser::new(vec![0.0, 0.0], vec![vec![1.0, 0.8], vec![0.8, 1.0]], path).unwrap();
    let s = by_name(sampler, model.path(), steps, eta).unwrap();
    let groups: Vec<GroupSpec> = (0..n)
        .map(|g| GroupSpec {
            seed: g as u64,
            cond: Condition::Null,
            particles: 1,
        })
        .collect();
    let pop = Population::new(&groups, &[2], 1.0, &Device::Cpu).unwrap();
    let engine = Engine {
        models: vec![&model],
        schedule: &s.schedule,
        solver: s.solver.as_ref(),
        guidance,
    };
    engine.run(pop, None).unwrap()
}

/// (mean |x0[0] − y|, mean x0[1], std x0[1]) of the final samples.
pub fn stats(out: &Outcome) -> (f64, f64, f64) {
    let rows: Vec<Vec<f32>> = out.population.x.to_vec2().unwrap();
    let n = rows.len() as f64;
    let err = rows.iter().map(|r| (r[0] as f64 - Y).abs()).sum::<f64>() / n;
    let m = rows.iter().map(|r| r[1] as f64).sum::<f64>() / n;
    let s = (rows.iter().map(|r| (r[1] as f64 - m).powi(2)).sum::<f64>() / n).sqrt();
    (err, m, s)
}
