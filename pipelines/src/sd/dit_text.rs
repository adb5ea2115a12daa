//! Text conditioning of the DiT families, built as diffusers' pipelines build it, from the
//! text encoders of a diffusers-layout repo:
//!
//! * **SD3 / SD3.5** (`StableDiffusion3Pipeline.encode_prompt`): CLIP-L and CLIP-G
//!   penultimate hidden states concatenated on the feature axis and zero-padded to T5's width,
//!   then T5's last hidden state appended on the sequence axis; pooled = CLIP-L ‖ CLIP-G
//!   projected pooled outputs. Without T5 its rows are zeros of the transformer's joint width.
//! * **FLUX.1** (`FluxPipeline.encode_prompt`): T5's last hidden state as the text stream,
//!   CLIP-L's unprojected `pooler_output` as the pooled vector.
//!
//! These tensors feed [`super::sd3::Sd3::set_text_embeddings`] and
//! [`super::flux::Flux::set_text_embeddings`].

use candle_core::{DType, Device, Tensor};

use super::component_weights::ComponentWeights;
use super::hub::ModelFiles;
use super::lora::LoraHook;
use super::pipeline::TextBranch;
use super::t5::T5Text;
use super::weights::component_weights;
use crate::{Error, Result};

/// SD3's three text encoders.
#[derive(Debug)]
pub struct Sd3Text {
    /// CLIP-L (`tokenizer/`, `text_encoder/`).
    pub clip_l: TextBranch,
    /// CLIP-G (`tokenizer_2/`, `text_encoder_2/`).
    pub clip_g: TextBranch,
    /// T5 (`tokenizer_3/`, `text_encoder_3/`), optional as in diffusers.
    pub t5: Option<T5Text>,
    /// Width of the text stream when T5 is absent (the transformer's `joint_attention_dim`).
    pub joint_dim: usize,
    device: Device,
}

/// Loads the T5 of `tok_dir/` + `enc_dir/` when the repo has it.
fn optional_t5(
    files: &ModelFiles,
    tok_dir: &str,
    enc_dir: &str,
    dtype: DType,
    device: &Device,
) -> Result<Option<T5Text>> {
    match files.find(&format!("{enc_dir}/config.json"))? {
        Some(_) => Ok(Some(T5Text::load(files, tok_dir, enc_dir, dtype, device)?)),
        None => Ok(None),
    }
}

impl Sd3Text {
    /// Loads the encoders of an SD3 diffusers repo; `joint_dim` is the transformer's
    /// `joint_attention_dim` (4096), used when the repo has no T5.
    pub fn from_files(
        files: &ModelFiles,
        joint_dim: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Sd3Text> {
        let clip_l = TextBranch::load(files, "tokenizer", "text_encoder", dtype, device)?;
        let clip_g = TextBranch::load(files, "tokenizer_2", "text_encoder_2", dtype, device)?;
        let t5 = optional_t5(files, "tokenizer_3", "text_encoder_3", dtype, device)?;
        let clip_width = clip_l.encoder.config.hidden_size + clip_g.encoder.config.hidden_size;
        let width = t5.as_ref().map(|t| t.config.d_model).unwrap_or(joint_dim);
        if clip_width > width {
            return Err(Error::Spec(format!(
                "CLIP-L + CLIP-G give {clip_width} features, wider than the text stream's {width}"
            )));
        }
        Ok(Sd3Text {
            clip_l,
            clip_g,
            t5,
            joint_dim,
            device: device.clone(),
        })
    }

    /// `(context [N, L_clip + T, W], pooled [N, P_l + P_g])` for `texts`, with T5 at
    /// `max_sequence_length` tokens (diffusers' default 256).
    pub fn encode(&self, texts: &[&str], max_sequence_length: usize) -> Result<(Tensor, Tensor)> {
        let l = self.clip_l.encode(texts, &self.device)?;
        let g = self.clip_g.encode(texts, &self.device)?;
        let f32 = |t: &Tensor| t.to_dtype(DType::F32);
        let clip = Tensor::cat(&[f32(&l.penultimate)?, f32(&g.penultimate)?], 2)?;
        let t5 = match &self.t5 {
            Some(t5) => t5.encode(texts, max_sequence_length)?,
            None => Tensor::zeros(
                (texts.len(), max_sequence_length, self.joint_dim),
                DType::F32,
                &self.device,
            )?,
        };
        let pad = t5.dim(2)? - clip.dim(2)?;
        let clip = clip.pad_with_zeros(2, 0, pad)?;
        let context = Tensor::cat(&[&clip, &t5], 1)?;
        let pooled = Tensor::cat(&[f32(&l.pooled)?, f32(&g.pooled)?], 1)?;
        Ok((context, pooled))
    }
}

/// FLUX's two text encoders.
#[derive(Debug)]
pub struct FluxText {
    /// CLIP-L (`tokenizer/`, `text_encoder/`).
    pub clip: TextBranch,
    /// T5 (`tokenizer_2/`, `text_encoder_2/`).
    pub t5: T5Text,
    device: Device,
}

impl FluxText {
    /// Loads the encoders of a FLUX diffusers repo (`tokenizer/` + `text_encoder/` CLIP-L,
    /// `tokenizer_2/` + `text_encoder_2/` T5).
    pub fn from_files(files: &ModelFiles, dtype: DType, device: &Device) -> Result<FluxText> {
        FluxText::from_files_with_lora(files, dtype, device, None)
    }

    /// [`FluxText::from_files`] with `lora`'s layers merged into CLIP-L (kohya's `lora_te1_`).
    pub fn from_files_with_lora(
        files: &ModelFiles,
        dtype: DType,
        device: &Device,
        lora: Option<&LoraHook>,
    ) -> Result<FluxText> {
        let weights = ComponentWeights::Files(component_weights(files, "text_encoder", "model")?);
        Ok(FluxText {
            clip: TextBranch::load_from(
                files,
                "tokenizer",
                "text_encoder",
                &weights,
                lora,
                dtype,
                device,
            )?,
            t5: T5Text::load(files, "tokenizer_2", "text_encoder_2", dtype, device)?,
            device: device.clone(),
        })
    }

    /// Loads CLIP-L from `folders[0]` and T5 from `folders[1]` (each `(tokenizer, encoder)`),
    /// e.g. SD3's `tokenizer_3/` + `text_encoder_3/` T5, which is the same model.
    pub fn from_folders(
        files: &ModelFiles,
        folders: [(&str, &str); 2],
        dtype: DType,
        device: &Device,
    ) -> Result<FluxText> {
        let [(ct, ce), (tt, te)] = folders;
        Ok(FluxText {
            clip: TextBranch::load(files, ct, ce, dtype, device)?,
            t5: T5Text::load(files, tt, te, dtype, device)?,
            device: device.clone(),
        })
    }

    /// `(txt [N, T, D_t5], vec [N, D_clip])` for `texts`, T5 at `max_sequence_length` tokens
    /// (diffusers' default 512; schnell uses 256).
    pub fn encode(&self, texts: &[&str], max_sequence_length: usize) -> Result<(Tensor, Tensor)> {
        let txt = self.t5.encode(texts, max_sequence_length)?;
        let vec = self
            .clip
            .encode(texts, &self.device)?
            .pooler_output
            .to_dtype(DType::F32)?;
        Ok((txt, vec))
    }
}
