//! Stable Diffusion 3 / 3.5 from Stability's original single-file layout
//! (`sd3_medium.safetensors`, `sd3.5_*.safetensors`): the MMDiT under `model.diffusion_model.`
//! and the 16-channel autoencoder under `first_stage_model.` (LDM names, the same network as
//! FLUX's autoencoder with SD3's latent scale and shift).
//!
//! The config is read off the tensor shapes (patch size, channels, depth, pooled and context
//! widths, position-embedding grid), the variant off the tensor names (SD3.5 medium's MMDiT-X
//! blocks, SD3.5's QK-norm; [`MmditVariant`]). The transformer is [`Mmdit`]: candle's MMDiT
//! parts with a last block of ours, which applies SD3.5's QK-norm to the context keys where
//! candle's skips it. A rectified-flow [`Denoiser`] predicting velocity, fed `t = σ·1000`; the
//! transformer runs in f16 (as candle's MMDiT did) and the engine's state stays f32. Text
//! conditioning is given as embeddings ([`Sd3::set_text_embeddings`]: the joint
//! CLIP-L/CLIP-G/T5 context and the pooled CLIP vector per prompt); `dit_text` builds them from
//! prompts.
//!
//! Verified against diffusers' `SD3Transformer2DModel.from_single_file` on tiny original-layout
//! files (`tests/fixtures/tiny-dit`): SD3 (`tests/dit_text.rs`), SD3.5 medium's MMDiT-X and
//! SD3.5 large's QK-norm (`tests/sd35_mmdit.rs`), within f16's precision, and within 1e-5 of
//! diffusers' f32 when the SD3.5 transformers compute in f32.

use std::path::Path;

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::flux::autoencoder::{AutoEncoder, Config as AeConfig};
use candle_transformers::models::mmdit::model::Config as MmditConfig;
use steerdiff_guidance::sampler::Sampler;
use steerdiff_guidance::{
    Condition, Denoiser, NoisePath, Parameterization, SchedulerConfig, SetTimesteps, StepPoint,
};

use super::flux::{count, dims};
use super::mmdit::{Mmdit, MmditVariant};
use super::pipeline::LoadOptions;
use super::read_tensors::ReadTensors;
use super::weights::{candle_message, open_checked};
use crate::{Error, Result};

/// SD3's autoencoder latent scaling.
pub const AE_SCALE: f64 = 1.5305;
/// SD3's autoencoder latent shift.
pub const AE_SHIFT: f64 = 0.0609;

const DIT: &str = "model.diffusion_model.";
const VAE: &str = "first_stage_model.";

/// The MMDiT config, read off a single-file checkpoint.
pub fn infer_config(st: &MmapedSafetensors) -> Result<MmditConfig> {
    let p = |n: &str| format!("{DIT}{n}");
    let x = dims(st, &p("x_embedder.proj.weight"))?;
    if x.len() != 4 {
        return Err(Error::Spec(
            "x_embedder.proj.weight is not a conv kernel".into(),
        ));
    }
    let (hidden, in_channels, patch) = (x[0], x[1], x[2]);
    let depth = count(st, &p("joint_blocks"));
    if depth == 0 || hidden % depth != 0 {
        return Err(Error::Spec(format!(
            "not an SD3 MMDiT checkpoint (width {hidden}, {depth} joint blocks)"
        )));
    }
    let pos = dims(st, &p("pos_embed"))?;
    let grid = ((pos.iter().product::<usize>() / hidden) as f64).sqrt() as usize;
    let final_out = dims(st, &p("final_layer.linear.weight"))?[0];
    Ok(MmditConfig {
        patch_size: patch,
        in_channels,
        out_channels: final_out / (patch * patch),
        depth,
        head_size: hidden / depth,
        adm_in_channels: dims(st, &p("y_embedder.mlp.0.weight"))?[1],
        pos_embed_max_size: grid,
        context_embed_size: dims(st, &p("context_embedder.weight"))?[1],
        frequency_embedding_size: dims(st, &p("t_embedder.mlp.0.weight"))?[1],
    })
}

/// Loads the MMDiT alone, computing in `dtype`, from a single file's `model.diffusion_model.*`,
/// with its config and variant read off the tensors; the file need not hold an autoencoder.
pub fn load_transformer(
    file: &Path,
    device: &Device,
    dtype: DType,
) -> Result<(MmditConfig, Mmdit)> {
    let files = [file.to_path_buf()];
    let config = infer_config(&open_checked(&files)?)?;
    let vb = VarBuilder::from_backend(Box::new(ReadTensors::open(&files)?), dtype, device.clone());
    let model = Mmdit::new(&config, vb.pp("model").pp("diffusion_model")).map_err(|e| {
        Error::Spec(format!(
            "loading the SD3 MMDiT from `{}`: {}",
            file.display(),
            candle_message(&e)
        ))
    })?;
    Ok((config, model))
}

/// The autoencoder config under `first_stage_model.`.
pub fn infer_ae_config(st: &MmapedSafetensors) -> Result<AeConfig> {
    let p = |n: &str| format!("{VAE}{n}");
    let ch = dims(st, &p("encoder.conv_in.weight"))?[0];
    let z_channels = dims(st, &p("decoder.conv_in.weight"))?[1];
    let levels = count(st, &p("encoder.down"));
    if levels == 0 || ch == 0 {
        return Err(Error::Spec(
            "the checkpoint has no first_stage_model (SD3 single files include the VAE)".into(),
        ));
    }
    let num_res_blocks = count(st, &p("encoder.down.0.block"));
    let ch_mult = (0..levels)
        .map(|i| Ok(dims(st, &p(&format!("encoder.down.{i}.block.0.conv1.weight")))?[0] / ch))
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

/// A loaded SD3 / SD3.5 model.
pub struct Sd3 {
    name: String,
    model: Mmdit,
    /// The MMDiT config (inferred).
    pub config: MmditConfig,
    ae: AutoEncoder,
    /// The autoencoder config (inferred).
    pub ae_config: AeConfig,
    ae_dtype: DType,
    device: Device,
    max_batch: usize,
    latent_hw: (usize, usize),
    /// `(context [1 + P, L, ctx], pooled [1 + P, adm])`; row 0 the negative prompt.
    text: Option<(Tensor, Tensor)>,
    /// The autoencoder's encoder, read from the checkpoint on first img2img use.
    encoder: super::ae_encoder::LazyAeEncoder,
    path: NoisePath,
}

impl std::fmt::Debug for Sd3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sd3")
            .field("name", &self.name)
            .field("config", &self.config)
            .field("variant", &self.model.variant)
            .field("latent_hw", &self.latent_hw)
            .finish_non_exhaustive()
    }
}

impl Sd3 {
    /// Loads the MMDiT (in f16) and the autoencoder (in `opts.dtype`) from one single file.
    pub fn load(file: &Path, opts: &LoadOptions) -> Result<Sd3> {
        let device = &opts.device;
        let files = [file.to_path_buf()];
        // Both configs first: a file that is no SD3 single file (no MMDiT, or no autoencoder)
        // is refused by name before the MMDiT's gigabytes are read.
        let st = open_checked(&files)?;
        let in_channels = infer_config(&st)?.in_channels;
        let ae_config = infer_ae_config(&st)?;
        if ae_config.z_channels != in_channels {
            return Err(Error::Spec(format!(
                "SD3 autoencoder has {} latent channels; the MMDiT takes {in_channels}",
                ae_config.z_channels
            )));
        }
        let (config, model) = load_transformer(file, device, DType::F16)?;
        let fail = |what: &str, e: candle_core::Error| {
            Error::Spec(format!(
                "loading the SD3 {what} from `{}`: {}",
                file.display(),
                candle_message(&e)
            ))
        };
        let ae_dtype = opts.dtype.dtype();
        let ae_vb = VarBuilder::from_backend(
            Box::new(ReadTensors::open(&files)?),
            ae_dtype,
            device.clone(),
        );
        let ae = AutoEncoder::new(&ae_config, ae_vb.pp("first_stage_model"))
            .map_err(|e| fail("autoencoder", e))?;
        let scale = 1 << (ae_config.ch_mult.len() - 1);
        let encoder = super::ae_encoder::LazyAeEncoder::new(
            file,
            "first_stage_model",
            &ae_config,
            ae_dtype,
            device,
        );
        Ok(Sd3 {
            name: file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "sd3".into()),
            model,
            config,
            ae,
            ae_config,
            ae_dtype,
            device: device.clone(),
            max_batch: opts.max_batch.max(1),
            latent_hw: (1024 / scale, 1024 / scale),
            text: None,
            path: NoisePath::flow(),
            encoder,
        })
    }

    /// The MMDiT's variant (SD3, SD3.5 medium's MMDiT-X, SD3.5 large's QK-norm).
    pub fn variant(&self) -> &MmditVariant {
        &self.model.variant
    }

    /// Clean latents of images `[B, 3, H, W]` in `[0, 1]` (the posterior mean; img2img).
    pub fn encode(&self, images: &Tensor) -> Result<Tensor> {
        self.encoder.encode(images)
    }

    /// Sets the image size (multiples of the autoencoder's scale × the patch size).
    pub fn set_image_size(&mut self, height: usize, width: usize) -> Result<()> {
        let v = 1 << (self.ae_config.ch_mult.len() - 1);
        let s = v * self.config.patch_size;
        if height == 0 || width == 0 || height % s != 0 || width % s != 0 {
            return Err(Error::Spec(format!(
                "SD3 image size {height}×{width} must be positive multiples of {s}"
            )));
        }
        let grid = self.config.pos_embed_max_size * self.config.patch_size;
        if height / v > grid || width / v > grid {
            return Err(Error::Spec(format!(
                "SD3 image size {height}×{width} exceeds the position grid ({} px)",
                grid * v
            )));
        }
        let tokens = ((height / s) * (width / s)) as u64;
        let scores = super::attention_memory::dit_scores(self.config.depth, tokens);
        super::attention_memory::check("SD3", height, width, scores)?;
        self.latent_hw = (height / v, width / v);
        Ok(())
    }

    /// Sets the text conditioning: `context` `[1 + P, L, context_embed_size]` and `pooled`
    /// `[1 + P, adm_in_channels]`; row 0 answers [`Condition::Null`] (the negative prompt of
    /// CFG), row `i + 1` [`Condition::Prompt`]`(i)`.
    pub fn set_text_embeddings(&mut self, context: &Tensor, pooled: &Tensor) -> Result<()> {
        let (n, _, c) = context.dims3()?;
        let (m, d) = pooled.dims2()?;
        if n != m
            || n == 0
            || c != self.config.context_embed_size
            || d != self.config.adm_in_channels
        {
            return Err(Error::Spec(format!(
                "SD3 text embeddings: context {:?} / pooled {:?}; expected [N, L, {}] and [N, {}]",
                context.dims(),
                pooled.dims(),
                self.config.context_embed_size,
                self.config.adm_in_channels
            )));
        }
        self.text = Some((context.to_dtype(DType::F16)?, pooled.to_dtype(DType::F16)?));
        Ok(())
    }

    /// The flow-matching sampler with SD3's shift 3.0 (diffusers' SD3 scheduler config);
    /// `eta > 0` makes it stochastic.
    pub fn sampler(&self, steps: usize, eta: Option<f64>) -> Result<Sampler> {
        let cfg = SchedulerConfig::from_json_str(
            r#"{"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0}"#,
        )?;
        Ok(cfg.sampler(steps, &SetTimesteps::default(), eta)?)
    }

    /// The image size sampled, `(height, width)` in pixels.
    pub fn image_size(&self) -> (usize, usize) {
        let v = 1 << (self.ae_config.ch_mult.len() - 1);
        (self.latent_hw.0 * v, self.latent_hw.1 * v)
    }

    /// The family's linear latent → RGB preview (no decoder pass).
    pub fn latent_preview(&self) -> &'static super::preview::LatentPreview {
        &super::preview::SD3
    }

    /// Decodes latents `[B, 16, h, w]` to images `[B, 3, H, W]` in `[0, 1]`.
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        let x = self
            .ae
            .decode(&latents.to_device(&self.device)?.to_dtype(self.ae_dtype)?)?;
        Ok(x.to_dtype(DType::F32)?
            .affine(0.5, 0.5)?
            .clamp(0f32, 1f32)?)
    }
}

impl Denoiser for Sd3 {
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
        vec![self.config.in_channels, self.latent_hw.0, self.latent_hw.1]
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
        let (ctx_all, pooled_all) = self.text.as_ref().ok_or_else(|| {
            steerdiff_guidance::Error::InvalidArgument(
                "no text embeddings set: call Sd3::set_text_embeddings before sampling".into(),
            )
        })?;
        let b = conds.len();
        let idx = super::embedding_rows(conds, ctx_all.dim(0)?, "SD3", &self.device)?;
        let ctx = ctx_all.index_select(&idx, 0)?;
        let pooled = pooled_all.index_select(&idx, 0)?;
        let input = x.to_device(&self.device)?.to_dtype(DType::F16)?;
        // The timesteps in f32 (their sinusoids are computed in f32).
        let t = Tensor::full(at.timestep as f32, b, &self.device)?;
        let out = self.model.forward(&input, &t, &pooled, &ctx)?;
        Ok(out.to_dtype(x.dtype())?.to_device(x.device())?)
    }
}
