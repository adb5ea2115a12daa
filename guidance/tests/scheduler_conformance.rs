//! Conformance with diffusers: every `*.json` trajectory in the scheduler fixture folder is
//! replayed through `SchedulerConfig` (the code path real `scheduler_config.json` files take) and
//! the engine's schedule + solver, and compared with what diffusers computed.
//!
//! The folder is `$STEERDIFF_FIXTURES/schedulers` when `STEERDIFF_FIXTURES` is set, else
//! `<workspace>/tests/fixtures/schedulers`. A new case file is a new case; a case the code cannot
//! handle fails with its file name, it is never skipped.
//!
//! Per step, the input is the fixture's recorded `sample` (so errors do not compound) while the
//! solver keeps its own `x̂0` history. Tolerance: `|got − want| ≤ 1e-4·max(1, |want|)` per value.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde_json::Value;
use steerdiff_guidance::schedule::diffusers::parse_python_json;
use steerdiff_guidance::{Noise, SchedulerConfig, SetTimesteps};

const TOL: f64 = 1e-4;

fn fixture_dir() -> PathBuf {
    match std::env::var_os("STEERDIFF_FIXTURES") {
        Some(root) => PathBuf::from(root).join("schedulers"),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("tests")
            .join("fixtures")
            .join("schedulers"),
    }
}

/// Worst scaled error `max |g − w| / max(1, |w|)` of two equally long lists.
fn worst(got: &[f64], want: &[f64]) -> std::result::Result<f64, String> {
    if got.len() != want.len() {
        return Err(format!("length {} ≠ expected {}", got.len(), want.len()));
    }
    Ok(got
        .iter()
        .zip(want)
        .map(|(g, w)| {
            let e = (g - w).abs() / w.abs().max(1.0);
            if e.is_nan() {
                f64::INFINITY
            } else {
                e
            }
        })
        .fold(0.0, f64::max))
}

fn floats(v: &Value, what: &str) -> std::result::Result<Vec<f64>, String> {
    v.as_array()
        .ok_or_else(|| format!("`{what}` is not a list"))?
        .iter()
        .map(|x| {
            x.as_f64()
                .ok_or_else(|| format!("`{what}` holds a non-number"))
        })
        .collect()
}

fn tensor(values: &[f64], shape: &[usize]) -> Tensor {
    let data: Vec<f32> = values.iter().map(|&x| x as f32).collect();
    Tensor::from_vec(data, shape, &Device::Cpu).expect("tensor")
}

fn to_vec(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .expect("to_vec")
        .into_iter()
        .map(f64::from)
        .collect()
}

/// Collects the failures and the worst error of one case.
#[derive(Default)]
struct Case {
    failures: Vec<String>,
    worst: f64,
    checked: usize,
}

impl Case {
    fn check(&mut self, step: Option<usize>, field: &str, got: &[f64], want: &[f64]) {
        let at = match step {
            Some(k) => format!("step {k} {field}"),
            None => field.to_string(),
        };
        match worst(got, want) {
            Ok(e) => {
                self.checked += 1;
                self.worst = self.worst.max(e);
                if e > TOL {
                    self.failures
                        .push(format!("{at}: worst relative error {e:.3e}"));
                }
            }
            Err(msg) => self.failures.push(format!("{at}: {msg}")),
        }
    }
}

fn run_case(fx: &Value) -> std::result::Result<Case, String> {
    let class_name = fx["scheduler"]
        .as_str()
        .ok_or("no `scheduler` class name")?;
    let cfg =
        SchedulerConfig::from_value(Some(class_name), &fx["config"]).map_err(|e| e.to_string())?;
    let class = cfg.class().map_err(|e| e.to_string())?;
    let steps = fx["num_inference_steps"]
        .as_u64()
        .ok_or("no `num_inference_steps`")? as usize;
    let kw = &fx["set_timesteps_kwargs"];
    let opts = SetTimesteps {
        sigmas: match kw.get("sigmas") {
            Some(v) if !v.is_null() => Some(floats(v, "set_timesteps_kwargs.sigmas")?),
            _ => None,
        },
        mu: kw.get("mu").and_then(Value::as_f64),
    };
    let eta = fx["eta"].as_f64();
    let sampler = cfg.sampler(steps, &opts, eta).map_err(|e| e.to_string())?;
    let (schedule, solver) = (&sampler.schedule, sampler.solver.as_ref());
    let param = cfg.prediction_type();
    let shape: Vec<usize> = floats(&fx["shape"], "shape")?
        .into_iter()
        .map(|x| x as usize)
        .collect();
    let ve = class.ve_coordinates();
    let mut case = Case::default();

    // The schedule.
    let timesteps = floats(&fx["timesteps"], "timesteps")?;
    if schedule.steps() != timesteps.len() {
        return Err(format!(
            "{} steps scheduled, diffusers has {} timesteps",
            schedule.steps(),
            timesteps.len()
        ));
    }
    let ours: Vec<f64> = schedule.points[..timesteps.len()]
        .iter()
        .map(|p| p.timestep)
        .collect();
    case.check(None, "timesteps", &ours, &timesteps);
    if !fx["sigmas"].is_null() {
        let want = floats(&fx["sigmas"], "sigmas")?;
        let ours: Vec<f64> = schedule
            .points
            .iter()
            .map(|p| {
                if class.is_flow() {
                    p.sigma
                } else if p.sigma == 0.0 {
                    0.0
                } else {
                    p.sigma_ve()
                }
            })
            .collect();
        case.check(None, "sigmas", &ours, &want);
    }
    let init = fx["init_noise_sigma"]
        .as_f64()
        .ok_or("no `init_noise_sigma`")?;
    let ours_init = if ve {
        schedule.init_noise_sigma / schedule.points[0].alpha
    } else {
        schedule.init_noise_sigma
    };
    case.check(None, "init_noise_sigma", &[ours_init], &[init]);

    // The trajectory.
    let recorded = fx["steps"].as_array().ok_or("no `steps`")?;
    if recorded.len() != schedule.steps() {
        return Err(format!(
            "{} recorded steps for {} scheduled",
            recorded.len(),
            schedule.steps()
        ));
    }
    let mut history: Vec<Tensor> = Vec::new();
    for (k, st) in recorded.iter().enumerate() {
        let at = schedule.points[k];
        let to = schedule.target(k);
        case.check(
            Some(k),
            "timestep",
            &[at.timestep],
            &[st["timestep"].as_f64().ok_or("step without timestep")?],
        );
        let sample = floats(&st["sample"], "sample")?;
        let scale_in = if ve { at.alpha } else { 1.0 };
        let x_vals: Vec<f64> = sample.iter().map(|v| v * scale_in).collect();
        let x = tensor(&x_vals, &shape);
        case.check(
            Some(k),
            "scaled_model_input",
            &to_vec(&x),
            &floats(&st["scaled_model_input"], "scaled_model_input")?,
        );
        let output = tensor(&floats(&st["model_output"], "model_output")?, &shape);
        let pred = param
            .to_prediction(&output, &x, &at)
            .map_err(|e| format!("step {k}: {e}"))?;
        if let Some(p) = st.get("pred_original_sample").filter(|v| !v.is_null()) {
            case.check(
                Some(k),
                "pred_original_sample",
                &to_vec(pred.x0()),
                &floats(p, "pred_original_sample")?,
            );
        }
        let noise = match st.get("noise") {
            Some(v) if !v.is_null() => {
                Some(Noise::from_tensor(tensor(&floats(v, "noise")?, &shape)))
            }
            _ => None,
        };
        let out = solver
            .step(schedule, k, &x, &pred, &history, noise.as_ref())
            .map_err(|e| format!("step {k}: {e}"))?;
        let scale_out = if ve { 1.0 / to.alpha } else { 1.0 };
        let got: Vec<f64> = to_vec(&out).into_iter().map(|v| v * scale_out).collect();
        case.check(
            Some(k),
            "prev_sample",
            &got,
            &floats(&st["prev_sample"], "prev_sample")?,
        );
        history.insert(0, pred.x0().clone());
        history.truncate(solver.history_len());
    }
    Ok(case)
}

#[test]
fn diffusers_scheduler_fixtures() {
    let dir = fixture_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read fixture folder {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no *.json scheduler fixtures in {}",
        dir.display()
    );
    let mut failures: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let outcome = std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|text| parse_python_json(&text).map_err(|e| e.to_string()))
            .and_then(|fx| run_case(&fx));
        match outcome {
            Ok(case) => {
                println!(
                    "{name:45} {:3} checks, worst relative error {:.3e}",
                    case.checked, case.worst
                );
                if !case.failures.is_empty() {
                    failures.insert(name, case.failures);
                }
            }
            Err(e) => {
                println!("{name:45} FAILED: {e}");
                failures.insert(name, vec![format!("cannot run: {e}")]);
            }
        }
    }
    if !failures.is_empty() {
        let mut msg = format!(
            "{} of {} scheduler fixtures fail:\n",
            failures.len(),
            files.len()
        );
        for (file, list) in &failures {
            msg.push_str(&format!("  {file}:\n"));
            for f in list {
                msg.push_str(&format!("    {f}\n"));
            }
        }
        panic!("{msg}");
    }
}
