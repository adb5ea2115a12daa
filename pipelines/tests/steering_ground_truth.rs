//! Particle and search strategies against exact answers on Gaussian mixtures
//! (ALGORITHMS §10.1): FK reaches the tilted target, argmax methods overshoot it and collapse
//! diversity, CoDe with B = T is best-of-N, a constant reward changes nothing.

use std::sync::Arc;

use candle_core::Device;
use steerdiff_guidance::sampler::by_name;
use steerdiff_guidance::strategy::{Code, FkSteering, Potential, ResampleSchedule};
use steerdiff_guidance::{
    Condition, Denoiser, Engine, Error, GroupSpec, Guidance, NoisePath, Outcome, Population, Reward,
};
use steerdiff_pipelines::reward::{Constant, ManySample, Quadratic};
use steerdiff_pipelines::{GmmDenoiser, GmmSpec};

const STEPS: usize = 100;

fn two_modes() -> GmmSpec {
    GmmSpec::from_json(
        r#"{"dim": 1, "components": [
            {"weight": 0.8, "mean": [-2.0], "std": 0.5, "class": 0},
            {"weight": 0.2, "mean": [2.0], "std": 0.5, "class": 1}]}"#,
    )
    .unwrap()
}

fn run(
    spec: &GmmSpec,
    path: NoisePath,
    strategy: Option<Box<dyn Guidance>>,
    groups: usize,
    k: usize,
    seed: u64,
) -> steerdiff_guidance::Result<Outcome> {
    let model = GmmDenoiser::new(spec.clone(), path.clone(), "gmm").unwrap();
    let sampler = if path.is_flow() { "flow-euler" } else { "ddim" };
    let s = by_name(sampler, &path, STEPS, Some(1.0)).unwrap();
    let g: Vec<GroupSpec> = (0..groups)
        .map(|i| GroupSpec {
            seed: seed + i as u64,
            cond: Condition::Null,
            particles: k,
        })
        .collect();
    let pop = Population::new(&g, &[spec.dim], s.schedule.init_noise_sigma, &Device::Cpu)?;
    let engine = Engine {
        models: vec![&model],
        schedule: &s.schedule,
        solver: s.solver.as_ref(),
        guidance: strategy.into_iter().collect(),
    };
    engine.run(pop, None)
}

fn samples(out: &Outcome) -> Vec<Vec<f64>> {
    out.population
        .x
        .to_vec2::<f32>()
        .unwrap()
        .into_iter()
        .map(|r| r.into_iter().map(f64::from).collect())
        .collect()
}

/// Fraction of samples the clean-data Bayes rule puts in each component.
fn masses(spec: &GmmSpec, xs: &[Vec<f64>]) -> Vec<f64> {
    let mut m = vec![0.0; spec.components.len()];
    for x in xs {
        m[spec.component_of(x)] += 1.0 / xs.len() as f64;
    }
    m
}

fn fk(reward: Arc<dyn Reward>, lambda: f64) -> FkSteering {
    FkSteering::new(
        reward,
        lambda,
        ResampleSchedule {
            start: 10,
            end: None,
            every: 10,
        },
    )
}

#[test]
fn fk_reaches_the_tilted_target_on_both_paths() {
    let spec = two_modes();
    let (m, lambda) = ([0.5], 0.5);
    let exact = spec.tilted_by_quadratic(&m, lambda);
    let p_right = exact.components[1].weight;
    assert!((p_right - 0.378).abs() < 0.001, "closed form {p_right}");
    for path in [GmmDenoiser::vp_path(), NoisePath::flow()] {
        let reward: Arc<dyn Reward> = Arc::new(Quadratic::new(m.to_vec()));
        // K = 64 pooled over 150 groups (9,600 particles).
        let out = run(
            &spec,
            path.clone(),
            Some(Box::new(fk(reward, lambda))),
            150,
            64,
            0,
        )
        .unwrap();
        let got = masses(&spec, &samples(&out))[1];
        println!(
            "{:?}: FK K=64 P(right) = {got:.4} (exact {p_right:.4})",
            path.is_flow()
        );
        assert!(
            (got - p_right).abs() < 0.02,
            "P(right) {got} vs exact {p_right}"
        );
        assert_eq!(out.ledger.total_rows(), 150 * 64 * STEPS as u64);
        // 9 intermediate resampling steps + the final one, one reward call each.
        assert_eq!(out.ledger.reward_calls.values().sum::<u64>(), 10);
    }
}

#[test]
fn fk_with_the_many_sample_reward_still_reaches_the_tilted_target() {
    // The many-sample intermediate reward changes which particles survive, not the target:
    // the final potential is exact, so the tilted mass must still come out (ALGORITHMS §2.3).
    let spec = two_modes();
    let (m, lambda) = ([0.5], 0.5);
    let p_right = spec.tilted_by_quadratic(&m, lambda).components[1].weight;
    for path in [GmmDenoiser::vp_path(), NoisePath::flow()] {
        let inner: Arc<dyn Reward> = Arc::new(Quadratic::new(m.to_vec()));
        // c = 1.7: the mixture's standard deviation (variance 4.25 − 1.2²).
        let reward: Arc<dyn Reward> = Arc::new(ManySample::new(inner, 8, 1.7));
        let out = run(
            &spec,
            path.clone(),
            Some(Box::new(fk(reward, lambda))),
            100,
            64,
            7,
        )
        .unwrap();
        let got = masses(&spec, &samples(&out))[1];
        println!(
            "{:?}: FK many-sample(8) K=64 P(right) = {got:.4} (exact {p_right:.4})",
            path.is_flow()
        );
        assert!(
            (got - p_right).abs() < 0.02,
            "P(right) {got} vs exact {p_right}"
        );
    }
}

#[test]
fn fk_matches_a_closed_form_2d_tilt() {
    let spec = GmmSpec::from_json(
        r#"{"dim": 2, "components": [
            {"weight": 0.5, "mean": [-2.0, 0.0], "std": 0.5},
            {"weight": 0.3, "mean": [2.0, 1.0], "std": 0.7},
            {"weight": 0.2, "mean": [0.0, -2.5], "std": 0.4}]}"#,
    )
    .unwrap();
    let (m, lambda) = ([1.0, -1.5], 0.4);
    let exact = spec.tilted_by_quadratic(&m, lambda);
    let want: Vec<f64> = exact.components.iter().map(|c| c.weight).collect();
    // `add` and `rt` are left out: their potentials compound over resampling steps
    // (∝ exp(λ·Σ partial sums) and exp(λ·Σ r_t)), so weights degenerate — measured masses
    // 0.001 / 0.13 / 0.87 (add) and 0.07 / 0.26 / 0.66 (rt) here — which the final correction
    // cannot undo at K = 64. `diff` resamples at every resampling step; `max` adaptively.
    for (potential, adaptive) in [(Potential::Diff, None), (Potential::Max, Some(0.5))] {
        let reward: Arc<dyn Reward> = Arc::new(Quadratic::new(m.to_vec()));
        let strategy = FkSteering {
            potential,
            adaptive,
            resampling: steerdiff_guidance::Resampling::Systematic,
            ..fk(reward, lambda)
        };
        let out = run(
            &spec,
            NoisePath::flow(),
            Some(Box::new(strategy)),
            100,
            64,
            500,
        )
        .unwrap();
        let xs = samples(&out);
        let got = masses(&spec, &xs);
        // The tilted component means are known too (component 2 here).
        let c2: Vec<&Vec<f64>> = xs.iter().filter(|x| spec.component_of(x) == 2).collect();
        let mean_y = c2.iter().map(|x| x[1]).sum::<f64>() / c2.len() as f64;
        println!(
            "{potential:?}: masses {got:.3?} (exact {want:.3?}); component-2 mean y {mean_y:.3} (exact {:.3})",
            exact.components[2].mean[1]
        );
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g - w).abs() < 0.03,
                "{potential:?}: masses {got:?} vs {want:?}"
            );
        }
        assert!((mean_y - exact.components[2].mean[1]).abs() < 0.05);
    }
}

#[test]
fn a_constant_reward_leaves_the_base_distribution_unchanged() {
    let spec = two_modes();
    let reward: Arc<dyn Reward> = Arc::new(Constant(3.0));
    // Particles of one group share ancestry after resampling; particle 0 of each of 2,000
    // independent groups is an independent draw from the marginal FK leaves behind.
    let steered = samples(
        &run(
            &spec,
            NoisePath::flow(),
            Some(Box::new(fk(reward, 2.0))),
            2000,
            4,
            0,
        )
        .unwrap(),
    );
    let plain = samples(&run(&spec, NoisePath::flow(), None, 4000, 1, 90_000).unwrap());
    let a: Vec<f64> = steered.iter().step_by(4).map(|x| x[0]).collect();
    let b: Vec<f64> = plain.iter().map(|x| x[0]).collect();
    // n = 2000, m = 4000: the 1 % critical value is 1.63·√(1/2000 + 1/4000) ≈ 0.045.
    let d = steerdiff_guidance::resample::ks_distance(&a, &b);
    println!("KS distance, constant-reward FK vs plain: {d:.4}");
    assert!(d < 0.045, "KS {d}");
}

#[test]
fn argmax_methods_overshoot_the_tilt_and_collapse_diversity_as_blocks_shrink() {
    let spec = two_modes();
    let exact = spec.tilted_by_quadratic(&[0.5], 0.5).components[1].weight;
    let reward: Arc<dyn Reward> = Arc::new(Quadratic::new(vec![0.5]));
    let mut rows = Vec::new();
    for block in [STEPS, 10, 1] {
        let out = run(
            &spec,
            NoisePath::flow(),
            Some(Box::new(Code::new(reward.clone(), block))),
            1000,
            4,
            0,
        )
        .unwrap();
        let xs = samples(&out);
        assert_eq!(xs.len(), 1000, "one winner per group");
        // Matched NFE: the winner's look-ahead is reused, so CoDe costs N·T rows like best-of-N.
        assert_eq!(out.ledger.total_rows(), 1000 * 4 * STEPS as u64);
        let right: Vec<f64> = xs.iter().filter(|x| x[0] > 0.0).map(|x| x[0]).collect();
        let p = right.len() as f64 / xs.len() as f64;
        let mean = right.iter().sum::<f64>() / right.len() as f64;
        let std =
            (right.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / right.len() as f64).sqrt();
        println!(
            "CoDe N=4 B={block}: P(right) {p:.3} (tilted {exact:.3}), right-mode std {std:.3}"
        );
        rows.push((block, p, std));
    }
    // Every argmax variant overshoots the tilted target's right-mode mass…
    assert!(rows.iter().all(|r| r.1 > exact + 0.05), "{rows:?}");
    // …more as the block shrinks, while within-mode diversity collapses.
    assert!(rows[0].1 < rows[1].1 && rows[1].1 < rows[2].1, "{rows:?}");
    assert!(rows[0].2 > rows[1].2 && rows[1].2 > rows[2].2, "{rows:?}");
    assert!(
        rows[2].2 < 0.1,
        "SVDD-PM (B = 1) collapses the mode: std {}",
        rows[2].2
    );
}

#[test]
fn code_with_one_block_is_best_of_n() {
    let spec = two_modes();
    let reward: Arc<dyn Reward> = Arc::new(Quadratic::new(vec![0.5]));
    let code = samples(
        &run(
            &spec,
            NoisePath::flow(),
            Some(Box::new(Code::new(reward.clone(), STEPS))),
            200,
            4,
            7,
        )
        .unwrap(),
    );
    let bon = samples(
        &run(
            &spec,
            NoisePath::flow(),
            Some(Box::new(Code::best_of_n(reward))),
            200,
            4,
            7,
        )
        .unwrap(),
    );
    assert_eq!(code, bon);
    // An independent best-of-4: plain sampling, then the argmax of the reward by hand.
    let plain = samples(&run(&spec, NoisePath::flow(), None, 200, 4, 7).unwrap());
    let by_hand: Vec<Vec<f64>> = plain
        .chunks(4)
        .map(|g| {
            g.iter()
                .max_by(|a, b| (-(a[0] - 0.5).powi(2)).total_cmp(&(-(b[0] - 0.5).powi(2))))
                .unwrap()
                .clone()
        })
        .collect();
    assert_eq!(code, by_hand);
}

/// Scores NaN for every particle whose sample is below `cut`, +inf / −inf for some others.
struct Faulty {
    cut: f64,
}
impl Reward for Faulty {
    fn name(&self) -> &str {
        "faulty"
    }
    fn score(
        &self,
        x0: &candle_core::Tensor,
        _: &steerdiff_guidance::RewardContext,
    ) -> steerdiff_guidance::Result<Vec<f64>> {
        Ok(x0
            .flatten_all()?
            .to_vec1::<f32>()?
            .into_iter()
            .map(|v| {
                let v = v as f64;
                if v < self.cut {
                    f64::NAN
                } else if v > 5.0 {
                    f64::INFINITY
                } else {
                    -(v - 0.5).powi(2) / 2.0
                }
            })
            .collect())
    }
}

#[test]
fn bad_settings_and_bad_rewards_are_handled() {
    let spec = two_modes();
    let q: Arc<dyn Reward> = Arc::new(Quadratic::new(vec![0.5]));
    let err = |g: Box<dyn Guidance>, k: usize| {
        run(&spec, NoisePath::flow(), Some(g), 2, k, 0)
            .unwrap_err()
            .to_string()
    };
    assert!(err(Box::new(fk(q.clone(), -1.0)), 4).contains("λ"));
    assert!(err(Box::new(fk(q.clone(), f64::NAN)), 4).contains("λ"));
    assert!(err(Box::new(fk(q.clone(), 1.0)), 0).contains("K ≥ 1"));
    assert!(err(Box::new(Code::new(q.clone(), 0)), 4).contains("block size"));
    assert!(err(Box::new(Code::new(q.clone(), STEPS + 1)), 4).contains("block size"));
    // A deterministic sampler cannot diversify resampled copies.
    let model = GmmDenoiser::new(spec.clone(), NoisePath::flow(), "gmm").unwrap();
    let s = by_name("flow-euler", model.path(), STEPS, Some(0.0)).unwrap();
    let pop = Population::new(
        &[GroupSpec {
            seed: 0,
            cond: Condition::Null,
            particles: 4,
        }],
        &[1],
        1.0,
        &Device::Cpu,
    )
    .unwrap();
    let engine = Engine {
        models: vec![&model],
        schedule: &s.schedule,
        solver: s.solver.as_ref(),
        guidance: vec![Box::new(fk(q, 1.0))],
    };
    match engine.run(pop, None) {
        Err(Error::Unsupported(msg)) => assert!(msg.contains("stochastic"), "{msg}"),
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
    // Some particles scored NaN / +inf: they get zero weight and never survive a resampling.
    let out = run(
        &spec,
        NoisePath::flow(),
        Some(Box::new(fk(Arc::new(Faulty { cut: -2.0 }), 1.0))),
        50,
        16,
        0,
    )
    .unwrap();
    assert!(samples(&out).iter().all(|x| x[0] >= -2.0 && x[0] <= 5.0));
    // Every particle NaN → a clear error naming the reward.
    let e = run(
        &spec,
        NoisePath::flow(),
        Some(Box::new(fk(Arc::new(Faulty { cut: 1e9 }), 1.0))),
        2,
        4,
        0,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("faulty") && e.contains("zero weight"), "{e}");
}

#[test]
fn steering_is_reproducible() {
    let spec = two_modes();
    let q: Arc<dyn Reward> = Arc::new(Quadratic::new(vec![0.5]));
    let a = run(
        &spec,
        NoisePath::flow(),
        Some(Box::new(fk(q.clone(), 1.0))),
        10,
        8,
        3,
    )
    .unwrap();
    let b = run(
        &spec,
        NoisePath::flow(),
        Some(Box::new(fk(q, 1.0))),
        10,
        8,
        3,
    )
    .unwrap();
    assert_eq!(samples(&a), samples(&b));
    assert_eq!(a.population.particles, b.population.particles);
}

fn mean_reward(xs: &[Vec<f64>]) -> f64 {
    xs.iter().map(|x| -(x[0] - 0.5).powi(2) / 2.0).sum::<f64>() / xs.len() as f64
}

#[test]
fn noise_search_keeps_the_best_so_far_and_beats_plain_sampling() {
    use steerdiff_guidance::strategy::{NoiseSearch, SearchKind};
    let spec = two_modes();
    let model = GmmDenoiser::new(spec.clone(), NoisePath::flow(), "gmm").unwrap();
    let s = by_name("flow-euler", model.path(), 20, Some(1.0)).unwrap();
    let engine = Engine {
        models: vec![&model],
        schedule: &s.schedule,
        solver: s.solver.as_ref(),
        guidance: vec![],
    };
    let groups: Vec<GroupSpec> = (0..200)
        .map(|g| GroupSpec {
            seed: g,
            cond: Condition::Null,
            particles: 1,
        })
        .collect();
    let plain = mean_reward(&samples(
        &run(&spec, NoisePath::flow(), None, 200, 1, 0).unwrap(),
    ));
    for kind in [
        SearchKind::Random,
        SearchKind::ZeroOrder {
            neighbours: 3,
            threshold: 0.95,
        },
    ] {
        let search = NoiseSearch {
            reward: Arc::new(Quadratic::new(vec![0.5])),
            rounds: 4,
            kind,
        };
        let mut trace: Vec<serde_json::Value> = Vec::new();
        let out = search.run(&engine, &groups, 1.0, Some(&mut trace)).unwrap();
        let got = mean_reward(&samples(&out));
        println!(
            "{kind:?}: mean reward {got:.3} (plain {plain:.3}), rows {}",
            out.ledger.total_rows()
        );
        assert!(got > plain + 0.3, "{kind:?}: {got} vs plain {plain}");
        // Best-so-far never decreases, round by round, for every group.
        for pair in trace.windows(2) {
            let a = pair[0]["search"]["best_so_far"].as_array().unwrap();
            let b = pair[1]["search"]["best_so_far"].as_array().unwrap();
            assert!(a.iter().zip(b).all(|(x, y)| y.as_f64() >= x.as_f64()));
        }
        let trajectories = match kind {
            SearchKind::Random => 1 + 2 + 4 + 8,
            SearchKind::ZeroOrder { .. } => {
                // one base, then 3 neighbours per round, or a single fresh base after a rejection
                trace
                    .iter()
                    .map(|l| {
                        l["search"]["candidates"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|c| c.as_u64().unwrap())
                            .sum::<u64>()
                    })
                    .sum::<u64>()
                    / 200
            }
        };
        assert!(out.ledger.total_rows() >= 200 * 20 * trajectories);
    }
    // A zero-threshold is refused.
    let bad = NoiseSearch {
        reward: Arc::new(Quadratic::new(vec![0.5])),
        rounds: 2,
        kind: SearchKind::ZeroOrder {
            neighbours: 3,
            threshold: 1.0,
        },
    };
    assert!(bad.run(&engine, &groups, 1.0, None).is_err());
}

#[test]
fn dsearch_prunes_to_its_beams_and_raises_the_reward() {
    use steerdiff_guidance::strategy::{DSearch, SearchSchedule};
    let spec = two_modes();
    let strategy = DSearch {
        reward: Arc::new(Quadratic::new(vec![0.5])),
        beams: 2,
        children: 3,
        width: 2,
        search: SearchSchedule::Exponential,
        replace: 0.0,
    };
    let mut trace: Vec<serde_json::Value> = Vec::new();
    let model = GmmDenoiser::new(spec.clone(), NoisePath::flow(), "gmm").unwrap();
    let s = by_name("flow-euler", model.path(), 30, Some(1.0)).unwrap();
    let g: Vec<GroupSpec> = (0..100)
        .map(|i| GroupSpec {
            seed: i,
            cond: Condition::Null,
            particles: 6,
        })
        .collect();
    let pop = Population::new(&g, &[1], 1.0, &Device::Cpu).unwrap();
    let engine = Engine {
        models: vec![&model],
        schedule: &s.schedule,
        solver: s.solver.as_ref(),
        guidance: vec![Box::new(strategy)],
    };
    let out = engine.run(pop, Some(&mut trace)).unwrap();
    let xs = samples(&out);
    assert_eq!(xs.len(), 200, "2 beams per group at the end");
    let beams: Vec<u64> = trace
        .iter()
        .filter_map(|l| l.get("dsearch"))
        .map(|d| d["beams"][0].as_u64().unwrap())
        .collect();
    assert!(
        beams.windows(2).all(|w| w[1] <= w[0]),
        "beam counts only shrink: {beams:?}"
    );
    assert_eq!(*beams.last().unwrap(), 2);
    let plain = mean_reward(&samples(
        &run(&spec, NoisePath::flow(), None, 200, 1, 0).unwrap(),
    ));
    let got = mean_reward(&xs);
    println!(
        "DSearch: mean reward {got:.3} (plain {plain:.3}), rows {}",
        out.ledger.total_rows()
    );
    assert!(got > plain + 1.0, "{got} vs {plain}");
}
