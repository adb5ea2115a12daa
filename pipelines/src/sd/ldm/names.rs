//! diffusers' weight names → the original (CompVis LDM / Stability `sgm`) names of a
//! single-file Stable Diffusion checkpoint, with the reshapes the two layouts differ by.
//!
//! steerdiff's UNet, VAE and CLIP text encoders are built from diffusers names; a single file
//! is read through [`Recipe`]s that say which original tensor (or which part of it) each
//! diffusers tensor is. The correspondence is that of diffusers' own single-file converters
//! (`diffusers/loaders/single_file_utils.py`), written here as functions of the name:
//!
//! * **UNet** (`model.diffusion_model.`): with `L` = `layers_per_block`, down block `b`'s
//!   layer `l` is `input_blocks.{1 + b(L+1) + l}` (`.0` its resnet, `.1` its transformer) and
//!   its downsampler `input_blocks.{1 + b(L+1) + L}.0.op`; up block `b`'s layer `l` (of
//!   `L + 1`) is `output_blocks.{b(L+1) + l}`, its upsampler the last layer's `.1.conv`, or
//!   `.2.conv` after a transformer. The mid block is `middle_block.{0,1,2}`. Inside a resnet,
//!   `norm1, conv1, time_emb_proj, norm2, conv2, conv_shortcut` are `in_layers.0, in_layers.2,
//!   emb_layers.1, out_layers.0, out_layers.3, skip_connection`; transformers keep their names.
//! * **VAE** (`first_stage_model.`): `down_blocks.i.resnets.j` is `down.i.block.j`,
//!   `up_blocks.i` is `up.{n−1−i}` (the original counts up blocks from the lowest
//!   resolution), mid resnets are `mid.block_1/2`, the mid attention's `to_q/k/v, to_out.0,
//!   group_norm` are 1×1 convolutions `q/k/v, proj_out, norm`.
//! * **CLIP text encoders** in Hugging Face layout (SD 1.x `cond_stage_model.transformer.`,
//!   SDXL's first `conditioner.embedders.0.transformer.`) only add a prefix. OpenCLIP ones
//!   (SD 2.x `cond_stage_model.model.`, SDXL's second `conditioner.embedders.1.model.`) fuse
//!   q/k/v into `attn.in_proj_weight` `[3D, D]` (rows q, k, v), store `positional_embedding`
//!   bare and `text_projection` as `x @ P` (`[D, P]`, the transpose of a linear weight).

/// How one diffusers tensor is read from a single file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipe {
    /// The tensor of that name, as stored (a 1×1 convolution kernel is read as the matrix of
    /// the same elements when a linear weight is asked for).
    Same(String),
    /// Part `index` of `parts` equal slices along dim 0 (OpenCLIP's fused q/k/v).
    Chunk {
        /// The fused tensor.
        name: String,
        /// Which part (0 = q, 1 = k, 2 = v).
        index: usize,
        /// How many parts.
        parts: usize,
    },
    /// The transpose of a 2-D tensor (OpenCLIP's `text_projection`).
    Transpose(String),
}

impl Recipe {
    /// The original tensor the recipe reads.
    pub fn source(&self) -> &str {
        match self {
            Recipe::Same(n) | Recipe::Transpose(n) => n,
            Recipe::Chunk { name, .. } => name,
        }
    }
}

/// What the UNet mapping needs to know of the diffusers config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UNetShape {
    /// `layers_per_block` (up blocks have one more).
    pub layers_per_block: usize,
    /// Whether each up block (in diffusers' order) has transformers.
    pub up_has_attention: Vec<bool>,
}

/// Splits `name` as `{prefix}{index}.{rest}`.
fn indexed<'a>(name: &'a str, prefix: &str) -> Option<(usize, &'a str)> {
    let tail = name.strip_prefix(prefix)?;
    let (i, rest) = tail.split_once('.')?;
    Some((i.parse().ok()?, rest))
}

fn unet_resnet(rest: &str) -> Option<String> {
    let (module, param) = rest.split_once('.')?;
    let original = match module {
        "norm1" => "in_layers.0",
        "conv1" => "in_layers.2",
        "time_emb_proj" => "emb_layers.1",
        "norm2" => "out_layers.0",
        "conv2" => "out_layers.3",
        "conv_shortcut" => "skip_connection",
        _ => return None,
    };
    Some(format!("{original}.{param}"))
}

/// The original name (under `model.diffusion_model.`) of a diffusers UNet tensor.
pub fn unet(name: &str, shape: &UNetShape) -> Option<String> {
    let stride = shape.layers_per_block + 1;
    for (diffusers, original) in [
        ("conv_in.", "input_blocks.0.0."),
        ("time_embedding.linear_1.", "time_embed.0."),
        ("time_embedding.linear_2.", "time_embed.2."),
        ("add_embedding.linear_1.", "label_emb.0.0."),
        ("add_embedding.linear_2.", "label_emb.0.2."),
        ("conv_norm_out.", "out.0."),
        ("conv_out.", "out.2."),
    ] {
        if let Some(param) = name.strip_prefix(diffusers) {
            return Some(format!("{original}{param}"));
        }
    }
    if let Some((b, rest)) = indexed(name, "down_blocks.") {
        let first = 1 + b * stride;
        if let Some((l, r)) = indexed(rest, "resnets.") {
            return Some(format!("input_blocks.{}.0.{}", first + l, unet_resnet(r)?));
        }
        if let Some((l, r)) = indexed(rest, "attentions.") {
            return Some(format!("input_blocks.{}.1.{r}", first + l));
        }
        let param = rest.strip_prefix("downsamplers.0.conv.")?;
        return Some(format!(
            "input_blocks.{}.0.op.{param}",
            first + shape.layers_per_block
        ));
    }
    if let Some(rest) = name.strip_prefix("mid_block.") {
        if let Some((l, r)) = indexed(rest, "resnets.") {
            return Some(format!("middle_block.{}.{}", 2 * l, unet_resnet(r)?));
        }
        let r = rest.strip_prefix("attentions.0.")?;
        return Some(format!("middle_block.1.{r}"));
    }
    let (b, rest) = indexed(name, "up_blocks.")?;
    let first = b * stride;
    if let Some((l, r)) = indexed(rest, "resnets.") {
        return Some(format!("output_blocks.{}.0.{}", first + l, unet_resnet(r)?));
    }
    if let Some((l, r)) = indexed(rest, "attentions.") {
        return Some(format!("output_blocks.{}.1.{r}", first + l));
    }
    let param = rest.strip_prefix("upsamplers.0.conv.")?;
    let slot = if *shape.up_has_attention.get(b)? {
        2
    } else {
        1
    };
    Some(format!(
        "output_blocks.{}.{slot}.conv.{param}",
        first + shape.layers_per_block
    ))
}

fn vae_resnet(rest: &str) -> String {
    match rest.strip_prefix("conv_shortcut.") {
        Some(param) => format!("nin_shortcut.{param}"),
        None => rest.to_string(),
    }
}

fn vae_mid(rest: &str) -> Option<String> {
    if let Some((l, r)) = indexed(rest, "resnets.") {
        return Some(format!("mid.block_{}.{}", l + 1, vae_resnet(r)));
    }
    let r = rest.strip_prefix("attentions.0.")?;
    let (module, param) = r.rsplit_once('.')?;
    let original = match module {
        "group_norm" => "norm",
        "to_q" => "q",
        "to_k" => "k",
        "to_v" => "v",
        "to_out.0" => "proj_out",
        _ => return None,
    };
    Some(format!("mid.attn_1.{original}.{param}"))
}

/// The original name (under `first_stage_model.`) of a diffusers VAE tensor; `up_blocks` is
/// the decoder's number of up blocks.
pub fn vae(name: &str, up_blocks: usize) -> Option<String> {
    let (part, rest) = name.split_once('.')?;
    if part == "quant_conv" || part == "post_quant_conv" {
        return Some(name.to_string());
    }
    if part != "encoder" && part != "decoder" {
        return None;
    }
    let local = if let Some(r) = rest.strip_prefix("mid_block.") {
        vae_mid(r)?
    } else if let Some(param) = rest.strip_prefix("conv_norm_out.") {
        format!("norm_out.{param}")
    } else if rest.starts_with("conv_in.") || rest.starts_with("conv_out.") {
        rest.to_string()
    } else if let Some((i, r)) = indexed(rest, "down_blocks.") {
        if let Some((j, rr)) = indexed(r, "resnets.") {
            format!("down.{i}.block.{j}.{}", vae_resnet(rr))
        } else {
            format!(
                "down.{i}.downsample.conv.{}",
                r.strip_prefix("downsamplers.0.conv.")?
            )
        }
    } else if let Some((i, r)) = indexed(rest, "up_blocks.") {
        let original = up_blocks.checked_sub(i + 1)?;
        if let Some((j, rr)) = indexed(r, "resnets.") {
            format!("up.{original}.block.{j}.{}", vae_resnet(rr))
        } else {
            format!(
                "up.{original}.upsample.conv.{}",
                r.strip_prefix("upsamplers.0.conv.")?
            )
        }
    } else {
        return None;
    };
    Some(format!("{part}.{local}"))
}

/// The recipe (names relative to the encoder's prefix) for a diffusers CLIP text-model tensor
/// in OpenCLIP's layout.
pub fn open_clip(name: &str) -> Option<Recipe> {
    if name == "text_projection.weight" {
        return Some(Recipe::Transpose("text_projection".into()));
    }
    let name = name.strip_prefix("text_model.").unwrap_or(name);
    let same = |n: String| Some(Recipe::Same(n));
    match name {
        "embeddings.token_embedding.weight" => return same("token_embedding.weight".into()),
        "embeddings.position_embedding.weight" => return same("positional_embedding".into()),
        _ => {}
    }
    if let Some(param) = name.strip_prefix("final_layer_norm.") {
        return same(format!("ln_final.{param}"));
    }
    let (i, rest) = indexed(name, "encoder.layers.")?;
    let block = format!("transformer.resblocks.{i}");
    let (module, param) = rest.rsplit_once('.')?;
    let qkv = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"];
    if let Some(index) = qkv.iter().position(|m| *m == module) {
        return Some(Recipe::Chunk {
            name: format!("{block}.attn.in_proj_{param}"),
            index,
            parts: 3,
        });
    }
    let original = match module {
        "self_attn.out_proj" => "attn.out_proj",
        "layer_norm1" => "ln_1",
        "layer_norm2" => "ln_2",
        "mlp.fc1" => "mlp.c_fc",
        "mlp.fc2" => "mlp.c_proj",
        _ => return None,
    };
    same(format!("{block}.{original}.{param}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sd15() -> UNetShape {
        UNetShape {
            layers_per_block: 2,
            up_has_attention: vec![false, true, true, true],
        }
    }

    #[test]
    fn unet_names_follow_the_block_arithmetic() {
        let s = sd15();
        let cases = [
            ("conv_in.weight", "input_blocks.0.0.weight"),
            (
                "down_blocks.0.resnets.1.norm1.weight",
                "input_blocks.2.0.in_layers.0.weight",
            ),
            (
                "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight",
                "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight",
            ),
            (
                "down_blocks.2.downsamplers.0.conv.bias",
                "input_blocks.9.0.op.bias",
            ),
            (
                "down_blocks.1.resnets.0.conv_shortcut.weight",
                "input_blocks.4.0.skip_connection.weight",
            ),
            (
                "mid_block.resnets.1.time_emb_proj.weight",
                "middle_block.2.emb_layers.1.weight",
            ),
            (
                "mid_block.attentions.0.norm.bias",
                "middle_block.1.norm.bias",
            ),
            (
                "up_blocks.0.resnets.2.conv2.weight",
                "output_blocks.2.0.out_layers.3.weight",
            ),
            (
                "up_blocks.0.upsamplers.0.conv.weight",
                "output_blocks.2.1.conv.weight",
            ),
            (
                "up_blocks.1.upsamplers.0.conv.weight",
                "output_blocks.5.2.conv.weight",
            ),
            (
                "up_blocks.3.attentions.2.proj_out.weight",
                "output_blocks.11.1.proj_out.weight",
            ),
            ("add_embedding.linear_2.bias", "label_emb.0.2.bias"),
            ("conv_norm_out.weight", "out.0.weight"),
        ];
        for (d, o) in cases {
            assert_eq!(unet(d, &s).as_deref(), Some(o), "{d}");
        }
        assert_eq!(unet("down_blocks.0.resnets.0.nonsense.weight", &s), None);
        assert_eq!(unet("up_blocks.9.upsamplers.0.conv.weight", &s), None);
    }

    #[test]
    fn vae_up_blocks_count_from_the_other_end() {
        let cases = [
            (
                "decoder.up_blocks.0.resnets.1.conv1.weight",
                "decoder.up.3.block.1.conv1.weight",
            ),
            (
                "decoder.up_blocks.3.upsamplers.0.conv.bias",
                "decoder.up.0.upsample.conv.bias",
            ),
            (
                "encoder.down_blocks.1.resnets.0.conv_shortcut.weight",
                "encoder.down.1.block.0.nin_shortcut.weight",
            ),
            (
                "encoder.mid_block.attentions.0.to_out.0.weight",
                "encoder.mid.attn_1.proj_out.weight",
            ),
            (
                "decoder.mid_block.resnets.0.norm2.bias",
                "decoder.mid.block_1.norm2.bias",
            ),
            ("encoder.conv_norm_out.bias", "encoder.norm_out.bias"),
            ("post_quant_conv.weight", "post_quant_conv.weight"),
        ];
        for (d, o) in cases {
            assert_eq!(vae(d, 4).as_deref(), Some(o), "{d}");
        }
        assert_eq!(vae("decoder.up_blocks.4.resnets.0.conv1.weight", 4), None);
    }

    #[test]
    fn open_clip_fuses_qkv_and_transposes_the_projection() {
        assert_eq!(
            open_clip("text_model.encoder.layers.3.self_attn.k_proj.bias"),
            Some(Recipe::Chunk {
                name: "transformer.resblocks.3.attn.in_proj_bias".into(),
                index: 1,
                parts: 3
            })
        );
        assert_eq!(
            open_clip("text_projection.weight"),
            Some(Recipe::Transpose("text_projection".into()))
        );
        assert_eq!(
            open_clip("text_model.encoder.layers.0.mlp.fc2.weight"),
            Some(Recipe::Same(
                "transformer.resblocks.0.mlp.c_proj.weight".into()
            ))
        );
        assert_eq!(
            open_clip("text_model.embeddings.position_embedding.weight"),
            Some(Recipe::Same("positional_embedding".into()))
        );
    }
}
