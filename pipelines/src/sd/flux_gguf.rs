//! FLUX transformers from GGUF files, as city96's quantizations (and `steerdiff quantize`)
//! lay them out: BFL's original tensor names (top-level, or under `model.diffusion_model.`),
//! big matrices quantized (Q8_0, Q4_K, …), norms, biases and small tensors in f32/f16, and
//! `general.architecture = "flux"`.
//!
//! The config is read off the tensor shapes by the same [`super::flux::infer_config`] as for
//! safetensors; every tensor candle's FLUX will ask for is then checked for presence and
//! shape, so a file that does not fit is refused naming the tensor. The weights stay
//! quantized in memory (candle's quantized FLUX, [`FluxTransformer::Quantized`]) and the model
//! is the same steerable [`Flux`] denoiser as from safetensors.

use std::path::Path;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use candle_transformers::models::flux::model::{Config as FluxConfig, Flux as FloatFlux};
use candle_transformers::models::flux::quantized_model::Flux as QuantizedFlux;
use candle_transformers::quantized_var_builder::VarBuilder as QVarBuilder;

use super::flux::{infer_config, Flux};
use super::flux_transformer::FluxTransformer;
use super::gguf_header::Header;
use super::pipeline::LoadOptions;
use super::tensor_shapes::TensorShapes;
use super::weights::candle_message;
use crate::{Error, Result};

pub use super::gguf::is_gguf;

/// Checks that `path` is a GGUF FLUX transformer; returns its checked header and the prefix
/// of its tensor names (`""` or `"model.diffusion_model."`).
pub fn check(path: &Path) -> Result<(Header, &'static str)> {
    let header = super::gguf::open_checked(path)?;
    let shown = path.display();
    if let Some(arch) = header.architecture.as_deref() {
        if !arch.eq_ignore_ascii_case("flux") {
            return Err(Error::Spec(format!(
                "`{shown}` is a GGUF of a `{arch}` model; steerdiff loads FLUX transformers \
                 from GGUF (general.architecture `flux`, as city96's files and `steerdiff \
                 quantize` write them)"
            )));
        }
    }
    let prefix = ["", "model.diffusion_model."]
        .into_iter()
        .find(|p| header.has_prefix(&format!("{p}double_blocks.")))
        .ok_or_else(|| {
            Error::Spec(format!(
                "`{shown}` holds no FLUX transformer (no `double_blocks.*` tensors); steerdiff \
                 loads FLUX transformers from GGUF"
            ))
        })?;
    Ok((header, prefix))
}

/// The single-file family of a GGUF transformer: `"flux"`, or an error saying why not.
pub fn family(path: &Path) -> Result<&'static str> {
    check(path).map(|_| "flux")
}

/// Every tensor a FLUX transformer of `config` reads, with its shape (names without prefix).
pub fn expected_tensors(config: &FluxConfig) -> Result<Vec<(String, Vec<usize>)>> {
    type Seen = Arc<Mutex<Vec<(String, Vec<usize>)>>>;
    /// Records what is asked for and answers with a broadcast zero (nothing allocated).
    struct Recorder(Seen);
    impl SimpleBackend for Recorder {
        fn get(
            &self,
            s: Shape,
            name: &str,
            _: candle_nn::Init,
            dtype: DType,
            dev: &Device,
        ) -> candle_core::Result<Tensor> {
            if let Ok(mut seen) = self.0.lock() {
                seen.push((name.to_string(), s.dims().to_vec()));
            }
            Tensor::zeros((), dtype, dev)?.broadcast_as(s)
        }
        fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
            candle_core::bail!("unexpected unchecked read of `{name}`")
        }
        fn contains_tensor(&self, _: &str) -> bool {
            true
        }
    }
    let seen: Seen = Arc::default();
    let vb = VarBuilder::from_backend(Box::new(Recorder(seen.clone())), DType::F32, Device::Cpu);
    FloatFlux::new(config, vb)?;
    let seen = seen
        .lock()
        .map(|s| s.clone())
        .map_err(|_| Error::Spec("internal: tensor recorder poisoned".into()))?;
    Ok(seen)
}

/// Refuses a header whose tensors do not fit a FLUX transformer of `config`, naming the first
/// missing or wrongly shaped tensor.
fn check_shapes(path: &Path, header: &Header, prefix: &str, config: &FluxConfig) -> Result<()> {
    for (name, want) in expected_tensors(config)? {
        let full = format!("{prefix}{name}");
        match header.shape_of(&full) {
            Some(got) if got == want => {}
            got => {
                return Err(Error::Spec(format!(
                    "`{}` does not fit a FLUX transformer of width {} (read off \
                     `{prefix}img_in.weight`): tensor `{full}` {}, {want:?} expected; the file \
                     is damaged or not a FLUX transformer",
                    path.display(),
                    config.hidden_size,
                    match got {
                        Some(g) => format!("has shape {g:?}"),
                        None => "is missing".into(),
                    }
                )))
            }
        }
    }
    Ok(())
}

impl Flux {
    /// Loads a GGUF FLUX transformer (kept quantized) and the autoencoder `ae` (safetensors).
    /// The transformer computes in f32 whatever `opts.dtype`, which applies to the
    /// autoencoder.
    pub fn load_gguf(transformer: &Path, ae: &Path, opts: &LoadOptions) -> Result<Flux> {
        let (header, prefix) = check(transformer)?;
        let config = infer_config(&header, prefix)?;
        check_shapes(transformer, &header, prefix, &config)?;
        let load_error = |e: candle_core::Error| {
            Error::Spec(format!(
                "loading the FLUX transformer `{}`: {}",
                transformer.display(),
                candle_message(&e)
            ))
        };
        let vb = QVarBuilder::from_gguf(transformer, &opts.device).map_err(load_error)?;
        let vb = if prefix.is_empty() {
            vb
        } else {
            vb.pp("model").pp("diffusion_model")
        };
        let model = QuantizedFlux::new(&config, vb).map_err(load_error)?;
        Flux::assemble(
            transformer,
            FluxTransformer::Quantized(Box::new(model)),
            config,
            ae,
            opts,
        )
    }
}
