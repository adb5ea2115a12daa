//! FLUX.1 (schnell, dev) from Black Forest Labs' original single-file layout: the transformer
//! (`flux1-schnell.safetensors` / `flux1-dev.safetensors`, top-level tensor names, or with
//! ComfyUI's `model.diffusion_model.` prefix) and the autoencoder (`ae.safetensors`).
//!
//! The files carry no config: it is read off the tensor shapes (width, depth, heads from the
//! QK-norm scale, MLP ratio, guidance embedding present or not, AE channels and levels).
//! A `.gguf` transformer is read quantized into the same model (`flux_gguf`); `flux_load`
//! picks the reader.
//!
//! A rectified-flow [`Denoiser`] predicting velocity `ε − x0` on `x = (1 − σ)·x0 + σ·ε`, fed
//! `t = σ`; latents `[16, H/8, W/8]` are packed into 2×2 patches inside `forward`. Text
//! conditioning is given as embeddings ([`Flux::set_text_embeddings`]: the T5 sequence and the
//! pooled CLIP vector per prompt); the T5/CLIP text encoders themselves are not loaded here yet.
//!
//! The transformer is checked against diffusers' `FluxTransformer2DModel` on a tiny file
//! (`tests/dit_text.rs`); loading and full steered runs on tiny random checkpoints
//! (`tests/sd_loading.rs`).

use std::path::Path;
use std::sync::Arc;

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use candle_transformers::models::flux::autoencoder::{AutoEncoder, Config as AeConfig};
use candle_transformers::models::flux::model::{Config as FluxConfig, Flux as FluxModel};
use candle_transformers::models::flux::WithForward;
use steerdiff_guidance::sampler::Sampler;
use steerdiff_guidance::{
    Condition, Denoiser, NoisePath, Parameterization, SchedulerConfig, SetTimesteps, StepPoint,
};

use super::flux_transformer::FluxTransformer;
use super::lora::{Loras, Naming, Target};
use super::pipeline::LoadOptions;
use super::read_tensors::ReadTensors;
use super::weights::{candle_message, open_checked};
use crate::{Error, Result};

/// FLUX's autoencoder latent scaling (BFL `ae.safetensors`, schnell and dev alike).
pub const AE_SCALE: f64 = 0.3611;
/// FLUX's autoencoder latent shift.
pub const AE_SHIFT: f64 = 0.1159;

pub(crate) use super::tensor_shapes::{count, dims};
use super::tensor_shapes::{matrix, vector, TensorShapes};

/// The transformer config, read off a checkpoint's tensor shapes (`prefix` = `""` or
/// `"model.diffusion_model."`).
pub fn infer_config(st: &impl TensorShapes, prefix: &str) -> Result<FluxConfig> {
    let p = |n: &str| format!("{prefix}{n}");
    let (hidden, in_channels) = matrix(st, &p("img_in.weight"))?;
    let context_in_dim = matrix(st, &p("txt_in.weight"))?.1;
    let vec_in_dim = matrix(st, &p("vector_in.in_layer.weight"))?.1;
    let depth = count(st, &p("double_blocks"));
    let depth_single_blocks = count(st, &p("single_blocks"));
    if depth == 0 {
        return Err(Error::Spec(
            "not a FLUX transformer checkpoint (no double_blocks)".into(),
        ));
    }
    let head_dim = vector(st, &p("double_blocks.0.img_attn.norm.query_norm.scale"))?;
    let mlp = matrix(st, &p("double_blocks.0.img_mlp.0.weight"))?.0;
    if hidden == 0 || head_dim == 0 || hidden % head_dim != 0 || head_dim % 2 != 0 {
        return Err(Error::Spec(format!(
            "FLUX checkpoint: width {hidden} and head size {head_dim} do not fit"
        )));
    }
    // BFL's split of the rotary dimensions is [16, 56, 56] for 128-wide heads; the same
    // proportions (even sizes) for other widths.
    let d1 = (head_dim * 7 / 16) / 2 * 2;
    let d0 = head_dim - 2 * d1;
    if d0 == 0 || d0 % 2 != 0 {
        return Err(Error::Spec(format!(
            "FLUX checkpoint: cannot split head size {head_dim} into rotary axes"
        )));
    }
    Ok(FluxConfig {
        in_channels,
        vec_in_dim,
        context_in_dim,
        hidden_size: hidden,
        mlp_ratio: mlp as f64 / hidden as f64,
        num_heads: hidden / head_dim,
        depth,
        depth_single_blocks,
        axes_dim: vec![d0, d1, d1],
        theta: 10_000,
        qkv_bias: st
            .shape_of(&p("double_blocks.0.img_attn.qkv.bias"))
            .is_some(),
        guidance_embed: st.shape_of(&p("guidance_in.in_layer.weight")).is_some(),
    })
}

/// The autoencoder config, read off `ae.safetensors`.
pub fn infer_ae_config(st: &MmapedSafetensors) -> Result<AeConfig> {
    let ch = dims(st, "encoder.conv_in.weight")?[0];
    let z_channels = dims(st, "decoder.conv_in.weight")?[1];
    let levels = count(st, "encoder.down");
    if levels == 0 || ch == 0 {
        return Err(Error::Spec(
            "not a FLUX autoencoder (no encoder.down)".into(),
        ));
    }
    let num_res_blocks = count(st, "encoder.down.0.block");
    let ch_mult = (0..levels)
        .map(|i| Ok(dims(st, &format!("encoder.down.{i}.block.0.conv1.weight"))?[0] / ch))
        .collect::<Result<Vec<usize>>>()?;
    Ok(AeConfig {
        resolution: 256,
        in_channels: 3,
        ch,
        out_ch: 3,
        ch_mult,
        num_res_blocks,
        z_channels,
        scale_factor: AE_SCALE,
        shift_factor: AE_SHIFT,
    })
}

/// A loaded FLUX model.
pub struct Flux {
    name: String,
    model: FluxTransformer,
    /// The transformer config (inferred).
    pub config: FluxConfig,
    ae: AutoEncoder,
    /// The autoencoder config (inferred).
    pub ae_config: AeConfig,
    /// The autoencoder's dtype (the weight dtype asked for).
    dtype: DType,
    /// The dtype the transformer computes in (f32 for quantized weights).
    compute_dtype: DType,
    device: Device,
    max_batch: usize,
    latent_hw: (usize, usize),
    /// `(txt [1 + P, L, ctx], vec [1 + P, D])`; row 0 the null / negative prompt.
    text: Option<(Tensor, Tensor)>,
    /// The distilled guidance value fed to FLUX-dev's guidance embedding.
    pub guidance: f64,
    path: NoisePath,
    /// The autoencoder's encoder, read from its file on first img2img use.
    encoder: super::ae_encoder::LazyAeEncoder,
}

impl std::fmt::Debug for Flux {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flux")
            .field("name", &self.name)
            .field("config", &self.config)
            .field("latent_hw", &self.latent_hw)
            .finish_non_exhaustive()
    }
}

impl Flux {
    /// Loads a safetensors transformer (with the layers of `loras` merged) and the
    /// autoencoder `ae`; [`Flux::load`] is the entry point for any transformer file.
    pub(crate) fn load_safetensors(
        transformer: &Path,
        ae: &Path,
        opts: &LoadOptions,
        loras: Option<&Arc<Loras>>,
    ) -> Result<Flux> {
        let dtype = opts.dtype.dtype();
        let device = &opts.device;
        let files = [transformer.to_path_buf()];
        let st = ReadTensors::open(&files)?;
        let prefix = if st.shape("img_in.weight").is_some() {
            ""
        } else {
            "model.diffusion_model."
        };
        let config = infer_config(&st, prefix)?;
        let backend: Box<dyn SimpleBackend> = Box::new(st);
        let backend = match loras {
            Some(l) => l.wrap(backend, Target::Denoiser, Naming::Flux),
            None => backend,
        };
        let vb = VarBuilder::from_backend(backend, dtype, device.clone());
        let vb = if prefix.is_empty() {
            vb
        } else {
            vb.pp("model").pp("diffusion_model")
        };
        let model = FluxModel::new(&config, vb).map_err(|e| {
            Error::Spec(format!(
                "loading the FLUX transformer `{}`: {}",
                transformer.display(),
                candle_message(&e)
            ))
        })?;
        Flux::assemble(
            transformer,
            FluxTransformer::Float(Box::new(model)),
            config,
            ae,
            opts,
        )
    }

    /// The model around a loaded transformer (read from `transformer`, for its name), with
    /// the autoencoder read from `ae`.
    pub(crate) fn assemble(
        transformer: &Path,
        model: FluxTransformer,
        config: FluxConfig,
        ae: &Path,
        opts: &LoadOptions,
    ) -> Result<Flux> {
        let dtype = opts.dtype.dtype();
        let device = &opts.device;
        let ae_files = [ae.to_path_buf()];
        let ae_st = open_checked(&ae_files)?;
        let ae_config = infer_ae_config(&ae_st)?;
        if ae_config.z_channels * 4 != config.in_channels {
            return Err(Error::Spec(format!(
                "FLUX autoencoder has {} latent channels; the transformer takes {} (= 4 × 2×2 \
                 patches)",
                ae_config.z_channels, config.in_channels
            )));
        }
        let ae_vb = VarBuilder::from_backend(Box::new(ae_st), dtype, device.clone());
        let ae_model = AutoEncoder::new(&ae_config, ae_vb).map_err(|e| {
            Error::Spec(format!(
                "loading the FLUX autoencoder `{}`: {}",
                ae.display(),
                candle_message(&e)
            ))
        })?;
        let scale = 1 << (ae_config.ch_mult.len() - 1);
        let encoder = super::ae_encoder::LazyAeEncoder::new(ae, "", &ae_config, dtype, device);
        Ok(Flux {
            name: transformer
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "flux".into()),
            compute_dtype: model.compute_dtype(dtype),
            model,
            config,
            ae: ae_model,
            ae_config,
            dtype,
            device: device.clone(),
            max_batch: opts.max_batch.max(1),
            latent_hw: (1024 / scale, 1024 / scale),
            text: None,
            guidance: 3.5,
            path: NoisePath::flow(),
            encoder,
        })
    }

    /// Whether the transformer's weights are quantized (loaded from GGUF).
    pub fn is_quantized(&self) -> bool {
        self.model.is_quantized()
    }

    /// Clean latents `[B, 16, h, w]` of images `[B, 3, H, W]` in `[0, 1]` (the posterior
    /// mean; img2img).
    pub fn encode(&self, images: &Tensor) -> Result<Tensor> {
        self.encoder.encode(images)
    }

    /// Pixels per latent along a side.
    pub fn vae_scale(&self) -> usize {
        1 << (self.ae_config.ch_mult.len() - 1)
    }

    /// Sets the image size (multiples of twice the autoencoder's scale, for 2×2 packing).
    pub fn set_image_size(&mut self, height: usize, width: usize) -> Result<()> {
        let s = 2 * self.vae_scale();
        if height == 0 || width == 0 || height % s != 0 || width % s != 0 {
            return Err(Error::Spec(format!(
                "FLUX image size {height}×{width} must be positive multiples of {s}"
            )));
        }
        let tokens = ((height / s) * (width / s)) as u64;
        let scores = super::attention_memory::dit_scores(self.config.num_heads, tokens);
        super::attention_memory::check("FLUX", height, width, scores)?;
        let v = self.vae_scale();
        self.latent_hw = (height / v, width / v);
        Ok(())
    }

    /// Sets the text conditioning: `txt` `[1 + P, L, context_in_dim]` (T5 states) and `vec`
    /// `[1 + P, vec_in_dim]` (pooled CLIP); row 0 answers [`Condition::Null`], row `i + 1`
    /// [`Condition::Prompt`]`(i)`.
    pub fn set_text_embeddings(&mut self, txt: &Tensor, vec: &Tensor) -> Result<()> {
        let (n, _, c) = txt.dims3()?;
        let (m, d) = vec.dims2()?;
        if n != m || c != self.config.context_in_dim || d != self.config.vec_in_dim || n == 0 {
            return Err(Error::Spec(format!(
                "FLUX text embeddings: txt {:?} / vec {:?}; expected [N, L, {}] and [N, {}]",
                txt.dims(),
                vec.dims(),
                self.config.context_in_dim,
                self.config.vec_in_dim
            )));
        }
        self.text = Some((
            txt.to_dtype(self.compute_dtype)?,
            vec.to_dtype(self.compute_dtype)?,
        ));
        Ok(())
    }

    /// The flow-matching sampler: schnell (no guidance embedding) unshifted, dev with the
    /// resolution-dependent dynamic shift (diffusers' FluxPipeline defaults). `eta > 0` makes
    /// it stochastic (needed by particle strategies).
    pub fn sampler(&self, steps: usize, eta: Option<f64>) -> Result<Sampler> {
        let seq = (self.latent_hw.0 / 2) * (self.latent_hw.1 / 2);
        let cfg = if self.config.guidance_embed {
            SchedulerConfig::from_json_str(
                r#"{"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0,
                    "use_dynamic_shifting": true, "base_shift": 0.5, "max_shift": 1.15,
                    "base_image_seq_len": 256, "max_image_seq_len": 4096}"#,
            )?
        } else {
            SchedulerConfig::from_json_str(
                r#"{"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 1.0}"#,
            )?
        };
        let opts = SetTimesteps {
            sigmas: None,
            mu: self
                .config
                .guidance_embed
                .then(|| cfg.dynamic_shift_mu(seq)),
        };
        Ok(cfg.sampler(steps, &opts, eta)?)
    }

    /// The image size sampled, `(height, width)` in pixels.
    pub fn image_size(&self) -> (usize, usize) {
        let v = 1 << (self.ae_config.ch_mult.len() - 1);
        (self.latent_hw.0 * v, self.latent_hw.1 * v)
    }

    /// The family's linear latent → RGB preview (no decoder pass).
    pub fn latent_preview(&self) -> &'static super::preview::LatentPreview {
        &super::preview::FLUX
    }

    /// Decodes latents `[B, C, h, w]` to images `[B, 3, H, W]` in `[0, 1]`.
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        let x = self
            .ae
            .decode(&latents.to_device(&self.device)?.to_dtype(self.dtype)?)?;
        Ok(x.to_dtype(DType::F32)?
            .affine(0.5, 0.5)?
            .clamp(0f32, 1f32)?)
    }
}

impl Denoiser for Flux {
    fn name(&self) -> &str {
        &self.name
    }

    fn parameterization(&self) -> Parameterization {
        Parameterization::Velocity
    }

    fn path(&self) -> &NoisePath {
        &self.path
    }

    fn sample_shape(&self) -> Vec<usize> {
        vec![
            self.ae_config.z_channels,
            self.latent_hw.0,
            self.latent_hw.1,
        ]
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn max_batch(&self) -> usize {
        self.max_batch
    }

    fn forward(
        &self,
        x: &Tensor,
        at: &StepPoint,
        conds: &[Condition],
    ) -> steerdiff_guidance::Result<Tensor> {
        let (txt_all, vec_all) = self.text.as_ref().ok_or_else(|| {
            steerdiff_guidance::Error::InvalidArgument(
                "no text embeddings set: call Flux::set_text_embeddings before sampling".into(),
            )
        })?;
        let b = conds.len();
        let idx = super::embedding_rows(conds, txt_all.dim(0)?, "FLUX", &self.device)?;
        let txt = txt_all.index_select(&idx, 0)?;
        let vec_ = vec_all.index_select(&idx, 0)?;
        let (_, c, h, w) = x.dims4()?;
        let img = x.to_device(&self.device)?.to_dtype(self.compute_dtype)?;
        // Pack 2×2 patches: (b, c, h, w) → (b, h/2·w/2, 4c).
        let packed = img
            .reshape((b, c, h / 2, 2, w / 2, 2))?
            .permute((0, 2, 4, 1, 3, 5))?
            .reshape((b, (h / 2) * (w / 2), c * 4))?;
        let rows_h = Tensor::arange(0u32, (h / 2) as u32, &self.device)?
            .reshape(((), 1))?
            .broadcast_as((h / 2, w / 2))?;
        let cols_w = Tensor::arange(0u32, (w / 2) as u32, &self.device)?
            .reshape((1, ()))?
            .broadcast_as((h / 2, w / 2))?;
        let img_ids = Tensor::stack(
            &[
                Tensor::zeros((h / 2, w / 2), DType::U32, &self.device)?,
                rows_h,
                cols_w,
            ],
            2,
        )?
        .to_dtype(self.compute_dtype)?
        .reshape((1, (h / 2) * (w / 2), 3))?
        .repeat((b, 1, 1))?;
        let txt_ids = Tensor::zeros((b, txt.dim(1)?, 3), self.compute_dtype, &self.device)?;
        let t = Tensor::full(at.sigma as f32, b, &self.device)?.to_dtype(self.compute_dtype)?;
        let guidance =
            Tensor::full(self.guidance as f32, b, &self.device)?.to_dtype(self.compute_dtype)?;
        let out = self.model.forward(
            &packed,
            &img_ids,
            &txt,
            &txt_ids,
            &t,
            &vec_,
            self.config.guidance_embed.then_some(&guidance),
        )?;
        let out = out
            .reshape((b, h / 2, w / 2, c, 2, 2))?
            .permute((0, 3, 1, 4, 2, 5))?
            .reshape((b, c, h, w))?;
        Ok(out.to_dtype(x.dtype())?.to_device(x.device())?)
    }
}
