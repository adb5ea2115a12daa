//! Ground truth: sampling the exact Gaussian-mixture denoiser must reproduce the mixture.
//!
//! The denoiser is exact, so what these tests measure is the sampler (schedule, solver, noise
//! streams) and the guidance arithmetic. Sample sizes are chosen so that each tolerance is
//! several standard errors wide: the checks can fail, but not by chance.

use candle_core::Device;
use steerdiff_guidance::sampler::by_name;
use steerdiff_guidance::strategy::ClassifierFree;
use steerdiff_guidance::{Condition, Engine, GroupSpec, Guidance, NoisePath, Population};
use steerdiff_pipelines::{GmmDenoiser, GmmSpec};

/// Final samples of `n` single-particle groups.
#[allow(clippy::too_many_arguments)] // a test helper spelling out one run
fn sample(
    spec: &GmmSpec,
    path: NoisePath,
    sampler: &str,
    eta: Option<f64>,
    steps: usize,
    cond: Condition,
    cfg: f64,
    n: usize,
) -> Vec<Vec<f64>> {
    let model = GmmDenoiser::new(spec.clone(), path.clone(), "gmm").unwrap();
    let s = by_name(sampler, &path, steps, eta).unwrap();
    let groups: Vec<GroupSpec> = (0..n)
        .map(|g| GroupSpec {
            seed: 777_000 + g as u64,
            cond,
            particles: 1,
        })
        .collect();
    let pop = Population::new(
        &groups,
        &[spec.dim],
        s.schedule.init_noise_sigma,
        &Device::Cpu,
    )
    .unwrap();
    let guidance: Vec<Box<dyn Guidance>> = vec![Box::new(ClassifierFree::new(cfg).unwrap())];
    let engine = Engine {
        models: vec![&model],
        schedule: &s.schedule,
        solver: s.solver.as_ref(),
        guidance,
    };
    let out = engine.run(pop, None).unwrap();
    let rows: Vec<Vec<f32>> = out.population.x.to_vec2().unwrap();
    rows.into_iter()
        .map(|r| r.into_iter().map(|v| v as f64).collect())
        .collect()
}

fn three_blobs() -> GmmSpec {
    GmmSpec::from_json(
        r#"{"dim": 2, "components": [
            {"weight": 0.5, "mean": [-2.0, 0.0], "std": 0.5, "class": 0},
            {"weight": 0.3, "mean": [2.0, 1.0], "std": 0.7, "class": 1},
            {"weight": 0.2, "mean": [0.0, -2.5], "std": 0.4, "class": 2}]}"#,
    )
    .unwrap()
}

/// Mass and per-coordinate mean of each component's samples.
fn component_stats(spec: &GmmSpec, xs: &[Vec<f64>]) -> Vec<(f64, Vec<f64>)> {
    let k = spec.components.len();
    let mut count = vec![0usize; k];
    let mut sum = vec![vec![0.0; spec.dim]; k];
    for x in xs {
        let c = spec.component_of(x);
        count[c] += 1;
        for (s, v) in sum[c].iter_mut().zip(x) {
            *s += v;
        }
    }
    (0..k)
        .map(|c| {
            let m = sum[c].iter().map(|s| s / count[c].max(1) as f64).collect();
            (count[c] as f64 / xs.len() as f64, m)
        })
        .collect()
}

/// Largest per-coordinate error of each component mean, in units of that component's std.
fn mean_errors(spec: &GmmSpec, xs: &[Vec<f64>]) -> Vec<f64> {
    component_stats(spec, xs)
        .iter()
        .zip(&spec.components)
        .map(|((_, m), c)| {
            m.iter()
                .zip(&c.mean)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max)
                / c.std
        })
        .collect()
}

#[test]
fn unguided_sampling_reproduces_the_mixture_on_both_paths() {
    let spec = three_blobs();
    // 20,000 samples: the smallest component (mass 0.2, 4,000 samples) has a standard error of
    // its mean of std/63 ≈ 0.016·std, so a 0.05·std tolerance is > 3 standard errors; the mass
    // standard error is 0.003 against a tolerance of 0.02.
    let n = 20_000;
    let paths = [
        ("vp", GmmDenoiser::vp_path(), "ddim"),
        ("flow", NoisePath::flow(), "flow-euler"),
    ];
    let mut failures = Vec::new();
    for (name, path, ddim) in paths {
        // DDIM, deterministic and ancestral, 50 steps: component masses within 0.02.
        for eta in [0.0, 1.0] {
            let xs = sample(
                &spec,
                path.clone(),
                ddim,
                Some(eta),
                50,
                Condition::Null,
                1.0,
                n,
            );
            let stats = component_stats(&spec, &xs);
            let errs = mean_errors(&spec, &xs);
            for (k, ((mass, _), c)) in stats.iter().zip(&spec.components).enumerate() {
                let line = format!(
                    "{name} {ddim} η={eta} 50 steps, component {k}: mass {mass:.4} (true {}), \
                     mean error {:.3}·std",
                    c.weight, errs[k]
                );
                println!("{line}");
                if (mass - c.weight).abs() > 0.02 {
                    failures.push(line);
                }
            }
        }
        // Component means within 0.05·std at 50 steps: DPM-Solver++(2M), second order.
        let xs = sample(
            &spec,
            path.clone(),
            "dpmpp-2m",
            None,
            50,
            Condition::Null,
            1.0,
            n,
        );
        for (k, e) in mean_errors(&spec, &xs).into_iter().enumerate() {
            let mass = component_stats(&spec, &xs)[k].0;
            let line = format!(
                "{name} dpmpp-2m 50 steps, component {k}: mass {mass:.4}, mean error {e:.3}·std"
            );
            println!("{line}");
            if e > 0.05 || (mass - spec.components[k].weight).abs() > 0.02 {
                failures.push(line);
            }
        }
        // First-order DDIM pulls modes towards each other by O(step): the bias shrinks with
        // more steps (measured: ≈0.06–0.12·std at 50 steps, ≤ 0.05·std at 400).
        let coarse = mean_errors(
            &spec,
            &sample(
                &spec,
                path.clone(),
                ddim,
                Some(0.0),
                50,
                Condition::Null,
                1.0,
                n,
            ),
        );
        let fine = mean_errors(
            &spec,
            &sample(
                &spec,
                path.clone(),
                ddim,
                Some(0.0),
                400,
                Condition::Null,
                1.0,
                n,
            ),
        );
        let (c, f) = (
            coarse.iter().cloned().fold(0.0, f64::max),
            fine.iter().cloned().fold(0.0, f64::max),
        );
        println!(
            "{name} {ddim} η=0 worst mean error: {c:.3}·std at 50 steps, {f:.3}·std at 400 steps"
        );
        if !(f < c && f <= 0.05) {
            failures.push(format!(
                "{name} {ddim}: mean error does not converge ({c:.3} → {f:.3})"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "out of tolerance:\n{}",
        failures.join("\n")
    );
}

#[test]
fn conditional_sampling_stays_in_its_class() {
    let spec = three_blobs();
    for (path, sampler) in [
        (GmmDenoiser::vp_path(), "ddim"),
        (NoisePath::flow(), "flow-euler"),
    ] {
        for class in spec.classes() {
            let xs = sample(
                &spec,
                path.clone(),
                sampler,
                Some(1.0),
                50,
                Condition::Class(class),
                1.0,
                4000,
            );
            let hits = xs.iter().filter(|x| spec.class_of(x) == class).count();
            let frac = hits as f64 / xs.len() as f64;
            println!("{sampler} class {class}: {frac:.4} in class");
            assert!(
                frac >= 0.99,
                "{sampler} class {class}: only {frac} in class"
            );
        }
    }
}

/// ALGORITHMS §10.2: 1-D classes at −2, 0, +2, std 0.7, uniform prior.
fn three_classes() -> GmmSpec {
    GmmSpec::from_json(
        r#"{"dim": 1, "components": [
            {"weight": 1, "mean": [-2.0], "std": 0.7, "class": 0},
            {"weight": 1, "mean": [0.0], "std": 0.7, "class": 1},
            {"weight": 1, "mean": [2.0], "std": 0.7, "class": 2}]}"#,
    )
    .unwrap()
}

#[test]
fn cfg_sharpens_classes_and_pushes_edge_classes_outward() {
    let spec = three_classes();
    let n = 4000; // standard error of a class mean ≈ 0.7/63 ≈ 0.011
    let scales = [1.0, 2.0, 4.0];
    // (scale, accuracy, mean) for the edge class (+2) and the middle class (0).
    let mut edge = Vec::new();
    let mut middle = Vec::new();
    for &w in &scales {
        for (class, out) in [(2u32, &mut edge), (1u32, &mut middle)] {
            let xs = sample(
                &spec,
                GmmDenoiser::vp_path(),
                "ddpm",
                None,
                100,
                Condition::Class(class),
                w,
                n,
            );
            let acc = xs.iter().filter(|x| spec.class_of(x) == class).count() as f64 / n as f64;
            let mean = xs.iter().map(|x| x[0]).sum::<f64>() / n as f64;
            println!("class {class} cfg {w}: accuracy {acc:.3}, mean {mean:.3}");
            out.push((w, acc, mean));
        }
    }
    // Accuracy rises monotonically with the scale (theory at w = 1: 0.923 edge, 0.847 middle).
    for series in [&edge, &middle] {
        for pair in series.windows(2) {
            assert!(pair[1].1 > pair[0].1, "accuracy not increasing: {series:?}");
        }
    }
    assert!(
        (edge[0].1 - 0.923).abs() < 0.015,
        "edge accuracy at w=1: {:?}",
        edge[0]
    );
    assert!(
        (middle[0].1 - 0.847).abs() < 0.02,
        "middle accuracy at w=1: {:?}",
        middle[0]
    );
    // The edge class mean moves outward, growing with w (table: 2.00, 2.35, 2.57)…
    assert!((edge[0].2 - 2.0).abs() < 0.04, "{edge:?}");
    assert!((edge[1].2 - 2.35).abs() < 0.06, "{edge:?}");
    assert!((edge[2].2 - 2.57).abs() < 0.08, "{edge:?}");
    // …while the middle class stays centred by symmetry.
    for (_, _, m) in &middle {
        assert!(m.abs() < 0.04, "{middle:?}");
    }
}
