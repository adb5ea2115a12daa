//! Which reader loads a FLUX transformer file: a `.gguf` file quantized
//! ([`super::flux_gguf`]), any other as safetensors ([`super::flux`]), with LoRAs merged into
//! the float transformer ([`super::lora`]).

use std::path::Path;
use std::sync::Arc;

use super::flux::Flux;
use super::lora::{Loras, Target};
use super::pipeline::LoadOptions;
use crate::{Error, Result};

impl Flux {
    /// Loads the transformer and the autoencoder from their single files: a `.gguf`
    /// transformer is read quantized, any other as safetensors, with `opts.loras` merged into
    /// the transformer (every layer of them must land on it).
    pub fn load(transformer: &Path, ae: &Path, opts: &LoadOptions) -> Result<Flux> {
        let loras = (!opts.loras.is_empty())
            .then(|| Loras::open(&opts.loras))
            .transpose()?;
        let flux = Flux::load_with_loras(transformer, ae, opts, loras.as_ref())?;
        if let Some(l) = &loras {
            l.check_all_used(&[Target::Denoiser])?;
        }
        Ok(flux)
    }

    /// [`Flux::load`] with the transformer's layers of `loras` merged (`opts.loras` is not
    /// read: the caller opened them, and checks that every layer landed once the text encoders
    /// have taken theirs).
    pub fn load_with_loras(
        transformer: &Path,
        ae: &Path,
        opts: &LoadOptions,
        loras: Option<&Arc<Loras>>,
    ) -> Result<Flux> {
        if !super::flux_gguf::is_gguf(transformer) {
            return Flux::load_safetensors(transformer, ae, opts, loras);
        }
        if loras.is_some() {
            return Err(Error::Spec(format!(
                "--lora on a quantized GGUF transformer (`{}`) is not supported yet; use the \
                 safetensors transformer with --lora",
                transformer.display()
            )));
        }
        Flux::load_gguf(transformer, ae, opts)
    }
}
