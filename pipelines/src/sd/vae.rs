//! The KL autoencoder: latents ↔ images (the cheap linear previews are [`super::preview`]).

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::stable_diffusion::vae::AutoEncoderKL;

use candle_nn::var_builder::SimpleBackend;

use super::component_weights::ComponentWeights;
use super::config::{ConfigReader, VaeConfig};
use super::hub::ModelFiles;
use super::ldm::{LdmCheckpoint, Part};
use super::vae_decoder::VaeDecoder;
use super::weights::component_weights;
use crate::{Error, Result};

/// A loaded VAE with its scaling: pipeline latents are `scaling · (z − shift)`.
#[derive(Debug)]
pub struct Vae {
    decoder: VaeDecoder,
    /// Its configuration.
    pub config: VaeConfig,
    dtype: DType,
    weights: ComponentWeights,
    device: Device,
    encoder: std::sync::OnceLock<AutoEncoderKL>,
}

/// The VAE's weights with the posterior's log-variance pinned to −10⁴ (`quant_conv` rows of the
/// second half zeroed, their bias −10⁴): candle's encoder then "samples" exactly the posterior
/// mean (its std is `exp(−5000) = 0`), which candle does not expose otherwise.
struct PointMass(Box<dyn SimpleBackend>);

impl PointMass {
    fn pin(&self, name: &str, t: Tensor) -> candle_core::Result<Tensor> {
        let half = t.dim(0)? / 2;
        let keep = t.narrow(0, 0, half)?;
        let pinned = match name {
            "quant_conv.weight" => t.narrow(0, half, half)?.zeros_like()?,
            "quant_conv.bias" => t.narrow(0, half, half)?.ones_like()?.affine(-1e4, 0.0)?,
            _ => return Ok(t),
        };
        Tensor::cat(&[&keep, &pinned], 0)
    }
}

impl SimpleBackend for PointMass {
    fn get(
        &self,
        s: candle_core::Shape,
        name: &str,
        h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let t = self.0.get(s, name, h, dtype, dev)?;
        self.pin(name, t)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let t = self.0.get_unchecked(name, dtype, dev)?;
        self.pin(name, t)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.contains_tensor(name)
    }
}

impl Vae {
    /// Loads `vae/config.json` of a diffusers folder, with the weights of its `vae/` folder or
    /// of an original-layout `checkpoint`.
    pub fn load(
        files: &ModelFiles,
        checkpoint: Option<&std::sync::Arc<LdmCheckpoint>>,
        dtype: DType,
        device: &Device,
    ) -> Result<Vae> {
        let config = VaeConfig::read(ConfigReader::open(
            &files.get("vae/config.json")?,
            "vae/config.json",
        )?)?;
        let weights = match checkpoint {
            Some(c) => {
                let up_blocks = config.candle.block_out_channels.len();
                ComponentWeights::Ldm(c.clone(), Part::Vae { up_blocks })
            }
            None => {
                ComponentWeights::Files(component_weights(files, "vae", "diffusion_pytorch_model")?)
            }
        };
        let decoder = weights.build("the VAE", dtype, device, None, |vb| {
            VaeDecoder::load(vb, &config.candle)
        })?;
        Ok(Vae {
            decoder,
            config,
            dtype,
            weights,
            device: device.clone(),
            encoder: std::sync::OnceLock::new(),
        })
    }

    /// Decodes pipeline latents `[B, C, h, w]` to images in `[-1, 1]` (`[B, 3, H, W]`, f32),
    /// exactly diffusers' `vae.decode(latents / scaling_factor + shift_factor)`.
    pub fn decode_raw(&self, latents: &Tensor) -> Result<Tensor> {
        let z = latents
            .to_dtype(DType::F32)?
            .affine(1.0 / self.config.scaling_factor, self.config.shift_factor)?
            .to_dtype(self.dtype)?;
        Ok(self.decoder.forward(&z)?.to_dtype(DType::F32)?)
    }

    /// Encodes images in `[0, 1]` (`[B, 3, H, W]`) to pipeline latents
    /// `scaling · (mean − shift)`, taking the posterior mean (diffusers' img2img samples from the
    /// posterior instead; the mean is its deterministic `argmax` mode). The encoder is built on
    /// first use.
    pub fn encode(&self, images: &Tensor) -> Result<Tensor> {
        if !self.config.candle.use_quant_conv {
            return Err(Error::Spec(
                "encoding needs a VAE with quant_conv (use_quant_conv = true)".into(),
            ));
        }
        let enc = match self.encoder.get() {
            Some(e) => e,
            None => {
                let vb = candle_nn::VarBuilder::from_backend(
                    Box::new(PointMass(self.weights.backend()?)),
                    self.dtype,
                    self.device.clone(),
                );
                let model =
                    AutoEncoderKL::new(vb, 3, 3, self.config.candle.clone()).map_err(|e| {
                        super::weights::load_error("the VAE encoder", &self.weights.files(), e)
                    })?;
                let _ = self.encoder.set(model);
                self.encoder.get().expect("just set")
            }
        };
        let x = images
            .to_device(&self.device)?
            .to_dtype(self.dtype)?
            .affine(2.0, -1.0)?;
        let mean = enc.encode(&x)?.sample()?.to_dtype(DType::F32)?;
        Ok(mean.affine(
            self.config.scaling_factor,
            -self.config.shift_factor * self.config.scaling_factor,
        )?)
    }

    /// Decodes pipeline latents to images in `[0, 1]` (diffusers' postprocessing).
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        Ok(self
            .decode_raw(latents)?
            .affine(0.5, 0.5)?
            .clamp(0f32, 1f32)?)
    }
}
