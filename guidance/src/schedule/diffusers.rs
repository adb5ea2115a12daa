//! diffusers' `scheduler_config.json`, turned into the engine's schedule + solver.
//!
//! A [`SchedulerConfig`] is the deserialised config of one of the supported diffusers classes
//! (see [`SchedulerClass`]); unknown extra fields are accepted and missing ones take the class's
//! diffusers defaults. [`SchedulerConfig::sampler`] reproduces that class's `set_timesteps` as a
//! [`Schedule`](crate::schedule::Schedule) and its `step` as one of the two engine rules
//! ([`Ddim`] with the class's `η`, or [`DpmSolverPp2M`]); every option that would change
//! diffusers' numbers and is not reproduced is refused with [`Error::Unsupported`] naming it,
//! never silently ignored.
//!
//! Coordinates: the engine state is always `x = α·x0 + σ·ε` (diffusers' model input). Euler and
//! Euler ancestral keep `x_ve = x/α` internally ([`SchedulerClass::ve_coordinates`]); their
//! `init_noise_sigma` is converted accordingly (`Schedule::init_noise_sigma` is in VP units).

use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::path::{BetaSchedule, NoisePath, VpPath};
use crate::prediction::Parameterization;
use crate::sampler::Sampler;
use crate::schedule::flow::{self, FlowOptions, TimeShift};
use crate::schedule::spacing::parse_spacing;
use crate::schedule::vp::{self, DpmOptions, EulerOptions};
use crate::schedule::TimestepSpacing;
use crate::solver::{Ddim, DpmSolverPp2M, Solver};
use crate::{Error, Result};

/// The diffusers scheduler classes the engine reproduces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchedulerClass {
    /// `DDIMScheduler` (Song et al. 2021): [`Ddim`] with the call's `η` (default 0).
    Ddim,
    /// `DDPMScheduler` (Ho et al. 2020): [`Ddim`] with `η = 1`.
    Ddpm,
    /// `EulerDiscreteScheduler` (Karras et al. 2022, Alg. 2 without churn): [`Ddim`] `η = 0`.
    EulerDiscrete,
    /// `EulerAncestralDiscreteScheduler`: [`Ddim`] with `η = 1`.
    EulerAncestralDiscrete,
    /// `DPMSolverMultistepScheduler` (Lu et al. 2022): [`DpmSolverPp2M`].
    DpmSolverMultistep,
    /// `FlowMatchEulerDiscreteScheduler` (SD3, FLUX): [`Ddim`] `η = 0` on the flow path.
    FlowMatchEulerDiscrete,
}

impl SchedulerClass {
    /// Every supported class.
    pub const ALL: [SchedulerClass; 6] = [
        SchedulerClass::Ddim,
        SchedulerClass::Ddpm,
        SchedulerClass::EulerDiscrete,
        SchedulerClass::EulerAncestralDiscrete,
        SchedulerClass::DpmSolverMultistep,
        SchedulerClass::FlowMatchEulerDiscrete,
    ];

    /// The diffusers class name (`_class_name`).
    pub fn diffusers_name(self) -> &'static str {
        match self {
            SchedulerClass::Ddim => "DDIMScheduler",
            SchedulerClass::Ddpm => "DDPMScheduler",
            SchedulerClass::EulerDiscrete => "EulerDiscreteScheduler",
            SchedulerClass::EulerAncestralDiscrete => "EulerAncestralDiscreteScheduler",
            SchedulerClass::DpmSolverMultistep => "DPMSolverMultistepScheduler",
            SchedulerClass::FlowMatchEulerDiscrete => "FlowMatchEulerDiscreteScheduler",
        }
    }

    /// Parses a diffusers class name; other classes are [`Error::Unsupported`], listing these.
    pub fn from_diffusers_name(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|c| c.diffusers_name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|c| c.diffusers_name()).collect();
                Error::Unsupported(format!(
                    "scheduler class `{name}` (supported: {}; a VP model's config can be used \
                     with another class via SchedulerConfig::with_class, as diffusers' from_config)",
                    names.join(", ")
                ))
            })
    }

    /// Whether the class samples a rectified flow.
    pub fn is_flow(self) -> bool {
        self == SchedulerClass::FlowMatchEulerDiscrete
    }

    /// Whether diffusers keeps this class's state in variance-exploding coordinates
    /// `x_ve = x/α` (Euler, Euler ancestral): their latents, `sample` and `prev_sample` are `x/α`,
    /// and `scale_model_input` returns the engine's `x`.
    pub fn ve_coordinates(self) -> bool {
        matches!(
            self,
            SchedulerClass::EulerDiscrete | SchedulerClass::EulerAncestralDiscrete
        )
    }
}

/// Extra arguments of diffusers' `set_timesteps`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SetTimesteps {
    /// Explicit sigmas (FlowMatchEuler: one per step; Euler: one per step plus the final one).
    pub sigmas: Option<Vec<f64>>,
    /// The dynamic shift `μ` (FlowMatchEuler with `use_dynamic_shifting`).
    pub mu: Option<f64>,
}

/// A diffusers scheduler config (`scheduler_config.json`). Fields are diffusers' names; `None`
/// means "absent", which takes the class's default when the sampler is built. Unknown fields are
/// ignored (as diffusers does when a config is loaded into another class); numbers are checked
/// ([`SchedulerConfig::check`]) when read and again before they size anything.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct SchedulerConfig {
    /// `_class_name`.
    #[serde(rename = "_class_name")]
    pub class_name: Option<String>,
    /// `num_train_timesteps` (default 1000).
    pub num_train_timesteps: Option<usize>,
    /// `beta_start` (default 0.0001).
    #[serde(deserialize_with = "lenient_f64")]
    pub beta_start: Option<f64>,
    /// `beta_end` (default 0.02).
    #[serde(deserialize_with = "lenient_f64")]
    pub beta_end: Option<f64>,
    /// `beta_schedule`: linear (default), scaled_linear, squaredcos_cap_v2, sigmoid.
    pub beta_schedule: Option<String>,
    /// `trained_betas`: explicit betas, overriding the schedule.
    pub trained_betas: Option<Vec<f64>>,
    /// `rescale_betas_zero_snr` (Lin et al. 2024).
    pub rescale_betas_zero_snr: Option<bool>,
    /// `prediction_type` (epsilon, v_prediction, sample; flow_prediction for DPM-Solver).
    #[serde(deserialize_with = "prediction_type")]
    pub prediction_type: Option<Parameterization>,
    /// `timestep_spacing` (leading, trailing, linspace).
    pub timestep_spacing: Option<String>,
    /// `steps_offset`.
    pub steps_offset: Option<i64>,
    /// `clip_sample` (DDIM/DDPM; default true there; only false is supported).
    pub clip_sample: Option<bool>,
    /// `set_alpha_to_one` (DDIM; default true).
    pub set_alpha_to_one: Option<bool>,
    /// `thresholding` (dynamic thresholding; only false is supported).
    pub thresholding: Option<bool>,
    /// `variance_type` (DDPM: fixed_small; DPM: null).
    pub variance_type: Option<String>,
    /// `interpolation_type` (Euler: linear).
    pub interpolation_type: Option<String>,
    /// `use_karras_sigmas`.
    pub use_karras_sigmas: Option<bool>,
    /// `use_exponential_sigmas` (unsupported when true).
    pub use_exponential_sigmas: Option<bool>,
    /// `use_beta_sigmas` (unsupported when true).
    pub use_beta_sigmas: Option<bool>,
    /// `use_lu_lambdas` (DPM; unsupported when true).
    pub use_lu_lambdas: Option<bool>,
    /// `use_flow_sigmas` (DPM; unsupported when true).
    pub use_flow_sigmas: Option<bool>,
    /// `sigma_min` (Euler Karras override).
    #[serde(deserialize_with = "lenient_f64")]
    pub sigma_min: Option<f64>,
    /// `sigma_max` (Euler Karras override).
    #[serde(deserialize_with = "lenient_f64")]
    pub sigma_max: Option<f64>,
    /// `timestep_type` (Euler: discrete, continuous).
    pub timestep_type: Option<String>,
    /// `final_sigmas_type` (zero, sigma_min).
    pub final_sigmas_type: Option<String>,
    /// `solver_order` (DPM; 1 and 2 supported).
    pub solver_order: Option<usize>,
    /// `algorithm_type` (DPM; dpmsolver++ supported).
    pub algorithm_type: Option<String>,
    /// `solver_type` (DPM; midpoint supported).
    pub solver_type: Option<String>,
    /// `lower_order_final` (DPM; default true).
    pub lower_order_final: Option<bool>,
    /// `euler_at_final` (DPM; default false).
    pub euler_at_final: Option<bool>,
    /// `lambda_min_clipped` (DPM; default −∞; JSON `-Infinity` is accepted).
    #[serde(deserialize_with = "lenient_f64")]
    pub lambda_min_clipped: Option<f64>,
    /// `shift` (FlowMatchEuler; default 1.0).
    #[serde(deserialize_with = "lenient_f64")]
    pub shift: Option<f64>,
    /// `use_dynamic_shifting` (FlowMatchEuler: needs `mu`).
    pub use_dynamic_shifting: Option<bool>,
    /// `time_shift_type` (exponential, linear).
    pub time_shift_type: Option<String>,
    /// `base_shift` (for [`SchedulerConfig::dynamic_shift_mu`]; default 0.5).
    #[serde(deserialize_with = "lenient_f64")]
    pub base_shift: Option<f64>,
    /// `max_shift` (default 1.15).
    #[serde(deserialize_with = "lenient_f64")]
    pub max_shift: Option<f64>,
    /// `base_image_seq_len` (default 256).
    pub base_image_seq_len: Option<usize>,
    /// `max_image_seq_len` (default 4096).
    pub max_image_seq_len: Option<usize>,
    /// `shift_terminal` (FlowMatchEuler).
    #[serde(deserialize_with = "lenient_f64")]
    pub shift_terminal: Option<f64>,
    /// `invert_sigmas` (FlowMatchEuler; unsupported when true).
    pub invert_sigmas: Option<bool>,
    /// `stochastic_sampling` (FlowMatchEuler; unsupported when true).
    pub stochastic_sampling: Option<bool>,
}

/// Accepts a number, `null`, or the strings Python's `json` writes for non-finite floats.
fn lenient_f64<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<f64>, D::Error> {
    let v = Option::<Value>::deserialize(d)?;
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(Value::String(s)) => match s.as_str() {
            "Infinity" | "inf" => Ok(Some(f64::INFINITY)),
            "-Infinity" | "-inf" => Ok(Some(f64::NEG_INFINITY)),
            "NaN" | "nan" => Ok(Some(f64::NAN)),
            other => other
                .parse::<f64>()
                .map(Some)
                .map_err(|_| serde::de::Error::custom(format!("`{other}` is not a number"))),
        },
        Some(other) => Err(serde::de::Error::custom(format!(
            "expected a number, got {other}"
        ))),
    }
}

/// diffusers' `prediction_type` strings.
fn prediction_type<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Parameterization>, D::Error> {
    let v = Option::<String>::deserialize(d)?;
    Ok(match v.as_deref() {
        None => None,
        Some("epsilon") => Some(Parameterization::Epsilon),
        Some("v_prediction") => Some(Parameterization::VPrediction),
        Some("sample") | Some("original_sample") => Some(Parameterization::Sample),
        Some("flow_prediction") | Some("velocity") => Some(Parameterization::Velocity),
        Some(other) => {
            return Err(serde::de::Error::custom(format!(
                "unsupported prediction_type `{other}` (epsilon, v_prediction, sample, \
                 flow_prediction)"
            )))
        }
    })
}

/// Parses JSON as Python's `json` module writes it: bare `NaN`, `Infinity` and `-Infinity`
/// (e.g. diffusers' `"lambda_min_clipped": -Infinity`) become the strings `"NaN"`,
/// `"Infinity"`, `"-Infinity"`, which [`SchedulerConfig`]'s number fields accept.
pub fn parse_python_json(text: &str) -> Result<Value> {
    let mut out = String::with_capacity(text.len() + 16);
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            rest = &rest[c.len_utf8()..];
            continue;
        }
        if c == '"' {
            in_string = true;
            out.push(c);
            rest = &rest[1..];
            continue;
        }
        let token = ["-Infinity", "Infinity", "NaN"]
            .into_iter()
            .find(|t| rest.starts_with(t));
        match token {
            Some(t) => {
                out.push('"');
                out.push_str(t);
                out.push('"');
                rest = &rest[t.len()..];
            }
            None => {
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    serde_json::from_str(&out).map_err(|e| Error::InvalidArgument(format!("invalid JSON: {e}")))
}

fn unsupported<T>(class: SchedulerClass, what: &str) -> Result<T> {
    Err(Error::Unsupported(format!(
        "{}: {what}",
        class.diffusers_name()
    )))
}

fn check_eta(eta: Option<f64>) -> Result<Option<f64>> {
    match eta {
        Some(e) if e.is_nan() || e < 0.0 || e.is_infinite() => Err(Error::InvalidArgument(
            format!("eta must be a finite number ≥ 0 (got {e})"),
        )),
        other => Ok(other),
    }
}

/// A class with an inherent, fixed `η`: accepts no `eta` or that value.
fn fixed_eta(class: SchedulerClass, eta: Option<f64>, fixed: f64) -> Result<f64> {
    match eta {
        Some(e) if e != fixed => Err(Error::InvalidArgument(format!(
            "{} has a fixed η = {fixed} (got eta = {e}); η is a parameter of DDIMScheduler \
             (and of FlowMatchEulerDiscreteScheduler here)",
            class.diffusers_name()
        ))),
        _ => Ok(fixed),
    }
}

impl SchedulerConfig {
    /// The supported class this config names ([`Error::Unsupported`] for any other class).
    pub fn class(&self) -> Result<SchedulerClass> {
        match &self.class_name {
            Some(n) => SchedulerClass::from_diffusers_name(n),
            None => Err(Error::InvalidArgument(
                "the scheduler config names no class (`_class_name`)".into(),
            )),
        }
    }

    /// The same options loaded into another class (diffusers' `Class.from_config(config)`):
    /// options the new class does not know are ignored, missing ones take its defaults.
    pub fn with_class(&self, class: SchedulerClass) -> Self {
        SchedulerConfig {
            class_name: Some(class.diffusers_name().to_string()),
            ..self.clone()
        }
    }

    /// What the model predicts: `prediction_type` (default ε), velocity for flow matching.
    pub fn prediction_type(&self) -> Parameterization {
        if self.class().map(|c| c.is_flow()).unwrap_or(false) {
            return Parameterization::Velocity;
        }
        self.prediction_type.unwrap_or(Parameterization::Epsilon)
    }

    /// `num_train_timesteps` (default 1000).
    pub fn num_train_timesteps(&self) -> usize {
        self.num_train_timesteps.unwrap_or(1000)
    }

    /// FLUX's dynamic shift `μ` for `image_seq_len` latent tokens (diffusers' `calculate_shift`
    /// with this config's `base_shift`, `max_shift`, `base_image_seq_len`, `max_image_seq_len`).
    pub fn dynamic_shift_mu(&self, image_seq_len: usize) -> f64 {
        flow::dynamic_shift_mu(
            image_seq_len,
            self.base_image_seq_len.unwrap_or(256),
            self.max_image_seq_len.unwrap_or(4096),
            self.base_shift.unwrap_or(0.5),
            self.max_shift.unwrap_or(1.15),
        )
    }

    /// The training noise process: the VP path from the beta options, or the flow path.
    pub fn noise_path(&self) -> Result<NoisePath> {
        self.check()?;
        if self.class()?.is_flow() {
            return Ok(NoisePath::Flow {
                num_train_timesteps: self.num_train_timesteps(),
            });
        }
        Ok(NoisePath::Vp(self.vp_path()?))
    }

    /// The VP path exactly as diffusers computes `alphas_cumprod` (float32).
    pub fn vp_path(&self) -> Result<VpPath> {
        self.check()?;
        let n = self.num_train_timesteps();
        if n < 2 {
            return Err(Error::InvalidArgument(format!(
                "num_train_timesteps = {n} (need at least 2)"
            )));
        }
        let rescale = self.rescale_betas_zero_snr.unwrap_or(false);
        if let Some(b) = &self.trained_betas {
            if b.len() != n {
                return Err(Error::InvalidArgument(format!(
                    "trained_betas has {} values for num_train_timesteps = {n}",
                    b.len()
                )));
            }
            let b32: Vec<f32> = b.iter().map(|&x| x as f32).collect();
            return Ok(VpPath::with_betas(&b32, rescale));
        }
        let start = self.beta_start.unwrap_or(0.0001);
        let end = self.beta_end.unwrap_or(0.02);
        let schedule = match self.beta_schedule.as_deref().unwrap_or("linear") {
            "linear" => BetaSchedule::Linear,
            "scaled_linear" => BetaSchedule::ScaledLinear,
            "squaredcos_cap_v2" => BetaSchedule::SquaredcosCapV2,
            "sigmoid" => {
                // DDPM's sigmoid schedule: sigmoid(linspace(−6, 6, T))·(end − start) + start.
                let betas: Vec<f32> = crate::path::linspace_f32(-6.0, 6.0, n)
                    .into_iter()
                    .map(|x| {
                        let sig = 1.0 / (1.0 + (-x).exp());
                        sig * (end - start) as f32 + start as f32
                    })
                    .collect();
                return Ok(VpPath::with_betas(&betas, rescale));
            }
            other => {
                return Err(Error::Unsupported(format!(
                    "beta_schedule = \"{other}\" (supported: linear, scaled_linear, \
                     squaredcos_cap_v2, sigmoid)"
                )))
            }
        };
        Ok(VpPath::new(schedule, start, end, n, rescale))
    }

    fn spacing(&self, default: TimestepSpacing) -> Result<TimestepSpacing> {
        match &self.timestep_spacing {
            None => Ok(default),
            Some(s) => parse_spacing(s),
        }
    }

    fn refuse_true(&self, class: SchedulerClass, flags: &[(&str, Option<bool>)]) -> Result<()> {
        for (name, v) in flags {
            if *v == Some(true) {
                return unsupported(class, &format!("{name} = true is not supported"));
            }
        }
        Ok(())
    }

    fn refuse_vp_prediction(&self, class: SchedulerClass) -> Result<()> {
        if self.prediction_type == Some(Parameterization::Velocity) {
            return unsupported(
                class,
                "prediction_type = flow_prediction needs use_flow_sigmas (not supported)",
            );
        }
        Ok(())
    }

    fn refuse_set_timesteps_args(
        &self,
        class: SchedulerClass,
        opts: &SetTimesteps,
        sigmas_ok: bool,
    ) -> Result<()> {
        if opts.sigmas.is_some() && !sigmas_ok {
            return unsupported(class, "set_timesteps takes no explicit sigmas");
        }
        if opts.mu.is_some() {
            return unsupported(class, "set_timesteps takes no mu (dynamic shifting)");
        }
        Ok(())
    }

    /// Builds the schedule and solver diffusers' `set_timesteps(num_inference_steps, **opts)` and
    /// `step(..., eta)` produce for this config. `eta` is DDIM's `η` (default 0); for
    /// FlowMatchEuler an `η > 0` gives the stochastic DDIM-on-flow sampler (an engine extension);
    /// other classes have a fixed `η` and refuse a different value.
    pub fn sampler(
        &self,
        num_inference_steps: usize,
        opts: &SetTimesteps,
        eta: Option<f64>,
    ) -> Result<Sampler> {
        let class = self.class()?;
        self.check()?;
        let eta = check_eta(eta)?;
        let steps = num_inference_steps;
        if steps == 0 {
            return Err(Error::InvalidArgument(
                "num_inference_steps must be at least 1".into(),
            ));
        }
        let (schedule, solver): (_, Box<dyn Solver>) = match class {
            SchedulerClass::Ddim => {
                self.refuse_set_timesteps_args(class, opts, false)?;
                self.refuse_vp_prediction(class)?;
                self.refuse_true(class, &[("thresholding", self.thresholding)])?;
                if self.clip_sample.unwrap_or(true) {
                    return unsupported(
                        class,
                        "clip_sample = true (the class default) clamps x̂0 and is not supported; \
                         set \"clip_sample\": false",
                    );
                }
                let schedule = vp::ddim(
                    &self.vp_path()?,
                    steps,
                    self.spacing(TimestepSpacing::Leading)?,
                    self.steps_offset.unwrap_or(0),
                    self.set_alpha_to_one.unwrap_or(true),
                )?;
                (
                    schedule,
                    Box::new(Ddim {
                        eta: eta.unwrap_or(0.0),
                    }),
                )
            }
            SchedulerClass::Ddpm => {
                self.refuse_set_timesteps_args(class, opts, false)?;
                self.refuse_vp_prediction(class)?;
                self.refuse_true(class, &[("thresholding", self.thresholding)])?;
                if self.clip_sample.unwrap_or(true) {
                    return unsupported(
                        class,
                        "clip_sample = true (the class default) clamps x̂0 and is not supported; \
                         set \"clip_sample\": false",
                    );
                }
                match self.variance_type.as_deref() {
                    None | Some("fixed_small") | Some("fixed_small_log") => {}
                    Some(other) => {
                        return unsupported(
                            class,
                            &format!(
                                "variance_type = \"{other}\" (supported: fixed_small, \
                                 fixed_small_log)"
                            ),
                        )
                    }
                }
                let eta = fixed_eta(class, eta, 1.0)?;
                let schedule = vp::ddpm(
                    &self.vp_path()?,
                    steps,
                    self.spacing(TimestepSpacing::Leading)?,
                    self.steps_offset.unwrap_or(0),
                )?;
                (schedule, Box::new(Ddim { eta }))
            }
            SchedulerClass::EulerDiscrete | SchedulerClass::EulerAncestralDiscrete => {
                let ancestral = class == SchedulerClass::EulerAncestralDiscrete;
                self.refuse_set_timesteps_args(class, opts, !ancestral)?;
                self.refuse_vp_prediction(class)?;
                let mut euler = EulerOptions {
                    spacing: self.spacing(TimestepSpacing::Linspace)?,
                    steps_offset: self.steps_offset.unwrap_or(0),
                    ..Default::default()
                };
                if !ancestral {
                    self.refuse_true(
                        class,
                        &[
                            ("use_exponential_sigmas", self.use_exponential_sigmas),
                            ("use_beta_sigmas", self.use_beta_sigmas),
                        ],
                    )?;
                    match self.interpolation_type.as_deref() {
                        None | Some("linear") => {}
                        Some(other) => {
                            return unsupported(
                                class,
                                &format!("interpolation_type = \"{other}\" (supported: linear)"),
                            )
                        }
                    }
                    euler.karras = self.use_karras_sigmas.unwrap_or(false);
                    euler.sigma_min = self.sigma_min;
                    euler.sigma_max = self.sigma_max;
                    euler.final_sigma_min = match self.final_sigmas_type.as_deref() {
                        None | Some("zero") => false,
                        Some("sigma_min") => true,
                        Some(other) => {
                            return unsupported(
                                class,
                                &format!("final_sigmas_type = \"{other}\" (zero, sigma_min)"),
                            )
                        }
                    };
                    euler.continuous_timesteps = match self.timestep_type.as_deref() {
                        None | Some("discrete") => false,
                        Some("continuous") => {
                            self.prediction_type() == Parameterization::VPrediction
                        }
                        Some(other) => {
                            return unsupported(
                                class,
                                &format!("timestep_type = \"{other}\" (discrete, continuous)"),
                            )
                        }
                    };
                }
                if let Some(list) = &opts.sigmas {
                    if list.len() != steps + 1 {
                        return Err(Error::InvalidArgument(format!(
                            "{} explicit sigmas for {steps} steps (Euler needs steps + 1, the \
                             last being the final sigma)",
                            list.len()
                        )));
                    }
                }
                let schedule = vp::euler(&self.vp_path()?, steps, &euler, opts.sigmas.as_deref())?;
                let eta = fixed_eta(class, eta, if ancestral { 1.0 } else { 0.0 })?;
                (schedule, Box::new(Ddim { eta }))
            }
            SchedulerClass::DpmSolverMultistep => {
                self.refuse_set_timesteps_args(class, opts, false)?;
                self.refuse_vp_prediction(class)?;
                self.refuse_true(
                    class,
                    &[
                        ("thresholding", self.thresholding),
                        ("use_exponential_sigmas", self.use_exponential_sigmas),
                        ("use_beta_sigmas", self.use_beta_sigmas),
                        ("use_lu_lambdas", self.use_lu_lambdas),
                        ("use_flow_sigmas", self.use_flow_sigmas),
                    ],
                )?;
                match self.algorithm_type.as_deref() {
                    None | Some("dpmsolver++") | Some("deis") => {}
                    Some(other) => {
                        return unsupported(
                            class,
                            &format!("algorithm_type = \"{other}\" (supported: dpmsolver++)"),
                        )
                    }
                }
                match self.solver_type.as_deref() {
                    // diffusers maps logrho/bh1/bh2 to midpoint
                    None | Some("midpoint") | Some("logrho") | Some("bh1") | Some("bh2") => {}
                    Some(other) => {
                        return unsupported(
                            class,
                            &format!("solver_type = \"{other}\" (supported: midpoint)"),
                        )
                    }
                }
                if let Some(v) = self.variance_type.as_deref() {
                    return unsupported(
                        class,
                        &format!("variance_type = \"{v}\" (learned variances are not supported)"),
                    );
                }
                let final_sigma_min = match self.final_sigmas_type.as_deref() {
                    None | Some("zero") => false,
                    Some("sigma_min") => true,
                    Some(other) => {
                        return unsupported(
                            class,
                            &format!("final_sigmas_type = \"{other}\" (zero, sigma_min)"),
                        )
                    }
                };
                let order = self.solver_order.unwrap_or(2);
                if final_sigma_min && order == 2 {
                    if self.euler_at_final == Some(true) {
                        return unsupported(
                            class,
                            "euler_at_final = true with final_sigmas_type = \"sigma_min\"",
                        );
                    }
                    if self.lower_order_final == Some(false) && steps < 15 {
                        return unsupported(
                            class,
                            "lower_order_final = false with final_sigmas_type = \"sigma_min\" \
                             and fewer than 15 steps",
                        );
                    }
                }
                let dpm = DpmOptions {
                    spacing: self.spacing(TimestepSpacing::Linspace)?,
                    steps_offset: self.steps_offset.unwrap_or(0),
                    karras: self.use_karras_sigmas.unwrap_or(false),
                    final_sigma_min,
                    lambda_min_clipped: self.lambda_min_clipped.unwrap_or(f64::NEG_INFINITY),
                    round_karras_timesteps: self.beta_schedule.as_deref()
                        != Some("squaredcos_cap_v2"),
                };
                fixed_eta(class, eta, 0.0)?;
                let schedule = vp::dpm(&self.vp_path()?, steps, &dpm)?;
                let solver: Box<dyn Solver> = match order {
                    1 => Box::new(Ddim { eta: 0.0 }),
                    2 => Box::new(DpmSolverPp2M),
                    other => {
                        return unsupported(
                            class,
                            &format!("solver_order = {other} (supported: 1, 2)"),
                        )
                    }
                };
                (schedule, solver)
            }
            SchedulerClass::FlowMatchEulerDiscrete => {
                self.refuse_true(
                    class,
                    &[
                        ("use_karras_sigmas", self.use_karras_sigmas),
                        ("use_exponential_sigmas", self.use_exponential_sigmas),
                        ("use_beta_sigmas", self.use_beta_sigmas),
                        ("invert_sigmas", self.invert_sigmas),
                        ("stochastic_sampling", self.stochastic_sampling),
                    ],
                )?;
                let kind = match self.time_shift_type.as_deref() {
                    None | Some("exponential") => TimeShift::Exponential,
                    Some("linear") => TimeShift::Linear,
                    Some(other) => {
                        return unsupported(
                            class,
                            &format!("time_shift_type = \"{other}\" (exponential, linear)"),
                        )
                    }
                };
                let dynamic = if self.use_dynamic_shifting.unwrap_or(false) {
                    let mu = opts.mu.ok_or_else(|| {
                        Error::InvalidArgument(
                            "FlowMatchEulerDiscreteScheduler with use_dynamic_shifting needs `mu` \
                             (see SchedulerConfig::dynamic_shift_mu)"
                                .into(),
                        )
                    })?;
                    Some((kind, mu))
                } else {
                    // diffusers ignores `mu` without use_dynamic_shifting
                    None
                };
                if let Some(list) = &opts.sigmas {
                    if list.len() != steps {
                        return Err(Error::InvalidArgument(format!(
                            "{} explicit sigmas for {steps} steps (FlowMatchEuler needs one per \
                             step)",
                            list.len()
                        )));
                    }
                }
                let flow_opts = FlowOptions {
                    num_train_timesteps: self.num_train_timesteps(),
                    shift: self.shift.unwrap_or(1.0),
                    dynamic,
                    shift_terminal: self.shift_terminal,
                };
                let schedule = flow::flow(steps, &flow_opts, opts.sigmas.as_deref())?;
                (
                    schedule,
                    Box::new(Ddim {
                        eta: eta.unwrap_or(0.0),
                    }),
                )
            }
        };
        Ok(Sampler { schedule, solver })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_json_non_finite_numbers_parse() {
        let v = parse_python_json(
            r#"{"_class_name": "DPMSolverMultistepScheduler", "lambda_min_clipped": -Infinity,
                "note": "NaN stays a string -Infinity", "x": [NaN, Infinity]}"#,
        )
        .unwrap();
        assert_eq!(v["note"], "NaN stays a string -Infinity");
        let cfg = SchedulerConfig::from_value(None, &v).unwrap();
        assert_eq!(cfg.lambda_min_clipped, Some(f64::NEG_INFINITY));
        assert_eq!(cfg.class().unwrap(), SchedulerClass::DpmSolverMultistep);
    }

    #[test]
    fn unsupported_options_are_named() {
        let cfg = SchedulerConfig::from_json_str(
            r#"{"_class_name": "DDIMScheduler", "beta_schedule": "scaled_linear",
                "beta_start": 0.00085, "beta_end": 0.012, "some_future_field": 3}"#,
        )
        .unwrap();
        let err = cfg.sampler(10, &SetTimesteps::default(), None).unwrap_err();
        assert!(
            matches!(err, Error::Unsupported(ref m) if m.contains("clip_sample")),
            "{err}"
        );
        let dpm3 = SchedulerConfig::from_json_str(
            r#"{"_class_name": "DPMSolverMultistepScheduler", "solver_order": 3}"#,
        )
        .unwrap();
        let err = dpm3
            .sampler(10, &SetTimesteps::default(), None)
            .unwrap_err();
        assert!(matches!(err, Error::Unsupported(ref m) if m.contains("solver_order")));
        let sde = dpm3.with_class(SchedulerClass::DpmSolverMultistep);
        let sde = SchedulerConfig {
            solver_order: None,
            algorithm_type: Some("sde-dpmsolver++".into()),
            ..sde
        };
        let err = sde.sampler(10, &SetTimesteps::default(), None).unwrap_err();
        assert!(matches!(err, Error::Unsupported(ref m) if m.contains("sde-dpmsolver++")));
        let pndm = SchedulerConfig::from_json_str(r#"{"_class_name": "PNDMScheduler"}"#).unwrap();
        assert!(matches!(
            pndm.sampler(10, &SetTimesteps::default(), None),
            Err(Error::Unsupported(_))
        ));
        let exp = SchedulerConfig::from_json_str(
            r#"{"_class_name": "EulerDiscreteScheduler", "use_exponential_sigmas": true}"#,
        )
        .unwrap();
        let err = exp.sampler(10, &SetTimesteps::default(), None).unwrap_err();
        assert!(matches!(err, Error::Unsupported(ref m) if m.contains("use_exponential_sigmas")));
    }

    #[test]
    fn option_combinations_build_monotone_schedules() {
        let base = r#""beta_schedule": "scaled_linear", "beta_start": 0.00085,
                      "beta_end": 0.012, "clip_sample": false"#;
        let cases = [
            r#""_class_name": "DDIMScheduler", "timestep_spacing": "linspace""#,
            r#""_class_name": "DDIMScheduler", "set_alpha_to_one": true"#,
            r#""_class_name": "DDPMScheduler", "timestep_spacing": "trailing""#,
            r#""_class_name": "EulerDiscreteScheduler", "rescale_betas_zero_snr": true,
                "timestep_spacing": "trailing", "prediction_type": "v_prediction""#,
            // (with linspace spacing the last timestep is 0 and a `sigma_min` end makes the last
            // step zero-length, in diffusers too)
            r#""_class_name": "EulerDiscreteScheduler", "final_sigmas_type": "sigma_min",
                "timestep_spacing": "leading", "steps_offset": 1"#,
            r#""_class_name": "EulerAncestralDiscreteScheduler""#,
            r#""_class_name": "DPMSolverMultistepScheduler", "timestep_spacing": "leading",
                "steps_offset": 1"#,
            r#""_class_name": "DPMSolverMultistepScheduler", "timestep_spacing": "trailing",
                "final_sigmas_type": "sigma_min""#,
            r#""_class_name": "DPMSolverMultistepScheduler", "solver_order": 1,
                "use_karras_sigmas": true"#,
            r#""_class_name": "DPMSolverMultistepScheduler", "lambda_min_clipped": -5.1,
                "beta_schedule": "squaredcos_cap_v2""#,
        ];
        for case in cases {
            let cfg = SchedulerConfig::from_json_str(&format!("{{{base}, {case}}}")).unwrap();
            for steps in [1, 7, 20] {
                let s = cfg
                    .sampler(steps, &SetTimesteps::default(), None)
                    .unwrap_or_else(|e| panic!("{case} / {steps}: {e}"));
                assert_eq!(s.schedule.steps(), steps, "{case}");
                for (i, a) in s.schedule.points[..steps].iter().enumerate() {
                    let b = s.schedule.target(i);
                    assert!(b.sigma / b.alpha < a.sigma / a.alpha, "{case} step {i}");
                }
            }
        }
        let euler = SchedulerConfig::from_json_str(&format!(
            r#"{{{base}, "_class_name": "EulerDiscreteScheduler"}}"#
        ))
        .unwrap();
        let explicit = SetTimesteps {
            sigmas: Some(vec![10.0, 3.0, 1.0, 0.0]),
            mu: None,
        };
        let s = euler.sampler(3, &explicit, None).unwrap();
        assert!((s.schedule.points[1].sigma_ve() - 3.0).abs() < 1e-6);
        assert!(euler.sampler(5, &explicit, None).is_err());
    }

    #[test]
    fn flow_class_predicts_velocity_and_needs_mu_when_dynamic() {
        let cfg = SchedulerConfig::from_json_str(
            r#"{"_class_name": "FlowMatchEulerDiscreteScheduler", "use_dynamic_shifting": true}"#,
        )
        .unwrap();
        assert_eq!(cfg.prediction_type(), Parameterization::Velocity);
        assert!(matches!(
            cfg.sampler(4, &SetTimesteps::default(), None),
            Err(Error::InvalidArgument(_))
        ));
        let mu = cfg.dynamic_shift_mu(4096);
        assert!((mu - 1.15).abs() < 1e-12);
        let s = cfg
            .sampler(
                4,
                &SetTimesteps {
                    sigmas: None,
                    mu: Some(mu),
                },
                None,
            )
            .unwrap();
        assert_eq!(s.schedule.steps(), 4);
    }
}
