//! Per-step guidance on the exact three-class mixture of ALGORITHMS §10.2 (classes at −2, 0,
//! +2, std 0.7, uniform prior; accuracy by the exact Bayes classifier): CFG, autoguidance,
//! GFCG and dynamic CFG against what theory says each should do.

use std::sync::Arc;

use candle_core::Device;
use serde_json::Value;
use steerdiff_guidance::sampler::by_name;
use steerdiff_guidance::strategy::{Autoguidance, ClassifierFree, DynamicCfg, Gfcg};
use steerdiff_guidance::{
    ClassLogProb, Classifier, Condition, Denoiser, Engine, GroupSpec, Guidance, Outcome,
    Population, Reward,
};
use steerdiff_pipelines::{GmmClassifier, GmmDenoiser, GmmSpec};

const N: usize = 4000;
const STEPS: usize = 100;

fn classes(std: f64) -> GmmSpec {
    GmmSpec::from_json(&format!(
        r#"{{"dim": 1, "components": [
            {{"weight": 1, "mean": [-2.0], "std": {std}, "class": 0}},
            {{"weight": 1, "mean": [0.0], "std": {std}, "class": 1}},
            {{"weight": 1, "mean": [2.0], "std": {std}, "class": 2}}]}}"#
    ))
    .unwrap()
}

fn run(guidance: Vec<Box<dyn Guidance>>, class: u32, trace: Option<&mut Vec<Value>>) -> Outcome {
    let good = GmmDenoiser::new(classes(0.7), GmmDenoiser::vp_path(), "good").unwrap();
    // The "bad version of itself": same means, blurrier components (ALGORITHMS §10.2).
    let bad = GmmDenoiser::new(classes(1.0), GmmDenoiser::vp_path(), "bad").unwrap();
    let s = by_name("ddpm", good.path(), STEPS, None).unwrap();
    let groups: Vec<GroupSpec> = (0..N)
        .map(|g| GroupSpec {
            seed: 5000 + g as u64,
            cond: Condition::Class(class),
            particles: 1,
        })
        .collect();
    let pop = Population::new(&groups, &[1], s.schedule.init_noise_sigma, &Device::Cpu).unwrap();
    let engine = Engine {
        models: vec![&good, &bad],
        schedule: &s.schedule,
        solver: s.solver.as_ref(),
        guidance,
    };
    engine
        .run(
            pop,
            trace.map(|t| t as &mut dyn steerdiff_guidance::TraceSink),
        )
        .unwrap()
}

/// (accuracy, mean, std) of class `class`'s samples.
fn stats(out: &Outcome, class: u32) -> (f64, f64, f64) {
    let spec = classes(0.7);
    let xs: Vec<f64> = out
        .population
        .x
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect();
    let acc = xs.iter().filter(|&&x| spec.class_of(&[x]) == class).count() as f64 / xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / xs.len() as f64;
    let std = (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64).sqrt();
    (acc, mean, std)
}

fn classifier() -> Arc<dyn Classifier> {
    Arc::new(GmmClassifier { spec: classes(0.7) })
}

#[test]
fn cfg_autoguidance_and_gfcg_behave_as_theory_says() {
    let mut table: Vec<(&str, f64, (f64, f64, f64))> = Vec::new();
    for w in [1.0, 2.0, 4.0] {
        let cfg = stats(
            &run(vec![Box::new(ClassifierFree::new(w).unwrap())], 2, None),
            2,
        );
        let atg = stats(
            &run(vec![Box::new(Autoguidance { scale: w, guide: 1 })], 2, None),
            2,
        );
        let gfcg = stats(&run(vec![Box::new(Gfcg::new(classifier(), w))], 2, None), 2);
        table.push(("cfg", w, cfg));
        table.push(("autoguidance", w, atg));
        table.push(("gfcg", w, gfcg));
    }
    for (m, w, (acc, mean, std)) in &table {
        println!("edge class, {m:<12} w={w}: accuracy {acc:.3}, mean {mean:.3}, std {std:.3}");
    }
    let series = |m: &str| -> Vec<(f64, f64, f64)> {
        table.iter().filter(|r| r.0 == m).map(|r| r.2).collect()
    };
    let (cfg, atg, gfcg) = (series("cfg"), series("autoguidance"), series("gfcg"));
    // Accuracy rises monotonically in the scale for all three.
    for s in [&cfg, &atg, &gfcg] {
        assert!(s[0].0 < s[1].0 && s[1].0 < s[2].0, "{s:?}");
    }
    // CFG pushes the edge class outward; autoguidance keeps its mean (±0.05) and sharpens it.
    assert!(cfg[2].1 > 2.4, "{cfg:?}");
    for (_, mean, _) in &atg {
        assert!((mean - 2.0).abs() < 0.05, "{atg:?}");
    }
    assert!(atg[2].2 < atg[0].2 - 0.2, "autoguidance sharpens: {atg:?}");
    // GFCG shifts the mean less than CFG at equal or better accuracy: GFCG at w = 4 is at least
    // as accurate as CFG at w = 2 and moves the mean less.
    assert!(
        gfcg[2].0 >= cfg[1].0 - 0.002 && gfcg[2].1 - 2.0 < cfg[1].1 - 2.0,
        "gfcg {gfcg:?} cfg {cfg:?}"
    );
}

#[test]
fn gfcg_leaves_confidently_classified_samples_almost_unguided() {
    let mut trace = Vec::new();
    run(
        vec![Box::new(Gfcg::new(classifier(), 4.0))],
        2,
        Some(&mut trace),
    );
    // Late steps: x̂0 is sharp; a sample the classifier is sure of (p ≥ 0.99) gets w_t ≤ 1.03.
    let clf = GmmClassifier { spec: classes(0.7) };
    let (mut sure, mut unsure) = (Vec::new(), Vec::new());
    for line in &trace[STEPS - 10..] {
        let scales = line["gfcg"]["scale"].as_array().unwrap();
        // Confusion rule: w_t = 1 + 3(1 − p) ⇒ p = 1 − (w_t − 1)/3.
        for s in scales {
            let w = s.as_f64().unwrap();
            let p = 1.0 - (w - 1.0) / 3.0;
            if p >= 0.99 {
                sure.push(w)
            } else {
                unsure.push(w)
            }
        }
    }
    let _ = clf.name();
    assert!(!sure.is_empty() && sure.iter().all(|&w| w <= 1.03 + 1e-9));
    let max_sure = sure.iter().cloned().fold(0.0, f64::max);
    println!(
        "late steps: {} confident particle-steps with w_t ≤ {max_sure:.4}; {} less confident",
        sure.len(),
        unsure.len()
    );
    // And the reference is never the target class.
    for line in &trace {
        if let Some(r) = line.get("gfcg") {
            assert!(r["reference"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c.as_u64() != Some(2)));
        }
    }
}

#[test]
fn gfcg_stacks_with_cfg_and_with_autoguidance() {
    let cfg = stats(
        &run(vec![Box::new(ClassifierFree::new(2.0).unwrap())], 1, None),
        1,
    );
    let both = run(
        vec![
            Box::new(ClassifierFree::new(2.0).unwrap()),
            Box::new(Gfcg::new(classifier(), 2.0)),
        ],
        1,
        None,
    );
    // CFG + GFCG: 3 rows per particle and step.
    assert_eq!(both.ledger.total_rows(), 3 * (N * STEPS) as u64);
    let both = stats(&both, 1);
    println!("middle class: cfg 2 {cfg:?}; cfg 2 + gfcg 2 {both:?}");
    assert!(
        both.0 >= cfg.0,
        "GFCG + CFG ≥ CFG alone: {both:?} vs {cfg:?}"
    );
    // GFCG on the weaker model (GFCG + autoguidance): 2 rows per step, the bad model's rows.
    let on_bad = Gfcg {
        model: 1,
        ..Gfcg::new(classifier(), 2.0)
    };
    let out = run(vec![Box::new(on_bad)], 1, None);
    assert_eq!(out.ledger.model_rows["good"], (N * STEPS) as u64);
    assert!(out.ledger.model_rows["bad"] > 0 && out.ledger.model_rows["bad"] <= (N * STEPS) as u64);
    let plain = stats(&run(vec![], 1, None), 1);
    assert!(stats(&out, 1).0 > plain.0);
}

#[test]
fn dynamic_cfg_picks_scales_for_free() {
    let evaluator: Arc<dyn Reward> = Arc::new(ClassLogProb::new(Arc::new(GmmClassifier {
        spec: classes(0.7),
    })));
    let dynamic = DynamicCfg {
        scales: vec![1.0, 1.5, 2.0, 3.0, 4.0, 6.0],
        evaluators: vec![(evaluator, 1.0)],
    };
    let mut trace = Vec::new();
    let out = run(vec![Box::new(dynamic)], 1, Some(&mut trace));
    let cfg = run(vec![Box::new(ClassifierFree::new(4.0).unwrap())], 1, None);
    // The candidates cost no model rows: exactly what CFG costs (conditional + unconditional).
    assert_eq!(out.ledger.total_rows(), cfg.ledger.total_rows());
    let (acc, _, _) = stats(&out, 1);
    let plain = stats(&run(vec![], 1, None), 1);
    println!(
        "dynamic CFG accuracy {acc:.3} (plain {:.3}, CFG 4 {:.3})",
        plain.0,
        stats(&cfg, 1).0
    );
    assert!(acc > plain.0 + 0.05);
    // The chosen scales vary between particles and steps.
    let chosen: std::collections::BTreeSet<String> = trace
        .iter()
        .flat_map(|l| {
            l["dynamic_cfg_scale"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(chosen.len() > 2, "{chosen:?}");
}
