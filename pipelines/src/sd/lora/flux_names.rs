//! diffusers-layout FLUX LoRAs on BFL's fused layers.
//!
//! steerdiff's FLUX transformer holds Black Forest Labs' original weights, where attention
//! q/k/v are one matrix (`img_attn.qkv` = rows `[q; k; v]`) and a single block's `linear1` is
//! `[q; k; v; mlp_in]`. diffusers' `FluxTransformer2DModel` splits them (`attn.to_q`, …,
//! `proj_mlp`), so its LoRAs (`transformer.transformer_blocks.0.attn.to_q.lora_A.weight`)
//! adapt row blocks of one BFL weight. [`parts`] says which diffusers modules make up a BFL
//! weight and where their rows go. The layouts are those of diffusers'
//! `convert_flux_to_diffusers.py`; the final modulation is `(shift, scale)` in BFL's order and
//! `(scale, shift)` in diffusers'.

/// Rows `src .. src + len` of a diffusers module's product `B·A` are rows `dst .. dst + len`
/// of the BFL weight's delta.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowPart {
    /// The diffusers module's key ([`super::file::module_key`] of its path, no prefix).
    pub key: String,
    /// First row taken from the module's product.
    pub src: usize,
    /// Number of rows.
    pub len: usize,
    /// Where they go in the BFL weight.
    pub dst: usize,
}

fn whole(path: &str, rows: usize) -> Vec<RowPart> {
    vec![RowPart {
        key: super::file::module_key(path),
        src: 0,
        len: rows,
        dst: 0,
    }]
}

/// Consecutive row blocks of `sizes` rows, one per diffusers module.
fn stacked(prefix: &str, modules: &[&str], sizes: &[usize]) -> Vec<RowPart> {
    let mut dst = 0;
    modules
        .iter()
        .zip(sizes)
        .map(|(m, &len)| {
            let part = RowPart {
                key: super::file::module_key(&format!("{prefix}{m}")),
                src: 0,
                len,
                dst,
            };
            dst += len;
            part
        })
        .collect()
}

/// The diffusers modules that adapt the BFL weight `name` (without `.weight`), whose matrix
/// is `[out, inp]`; empty when diffusers has no counterpart.
pub fn parts(name: &str, out: usize, inp: usize) -> Vec<RowPart> {
    let fixed = [
        ("img_in", "x_embedder"),
        ("txt_in", "context_embedder"),
        (
            "time_in.in_layer",
            "time_text_embed.timestep_embedder.linear_1",
        ),
        (
            "time_in.out_layer",
            "time_text_embed.timestep_embedder.linear_2",
        ),
        (
            "vector_in.in_layer",
            "time_text_embed.text_embedder.linear_1",
        ),
        (
            "vector_in.out_layer",
            "time_text_embed.text_embedder.linear_2",
        ),
        (
            "guidance_in.in_layer",
            "time_text_embed.guidance_embedder.linear_1",
        ),
        (
            "guidance_in.out_layer",
            "time_text_embed.guidance_embedder.linear_2",
        ),
        ("final_layer.linear", "proj_out"),
    ];
    if let Some((_, d)) = fixed.iter().find(|(b, _)| *b == name) {
        return whole(d, out);
    }
    if name == "final_layer.adaLN_modulation.1" {
        let h = out / 2;
        let key = super::file::module_key("norm_out.linear");
        return vec![
            RowPart {
                key: key.clone(),
                src: h,
                len: h,
                dst: 0,
            },
            RowPart {
                key,
                src: 0,
                len: h,
                dst: h,
            },
        ];
    }
    let mut it = name.splitn(3, '.');
    let (Some(kind), Some(i), Some(rest)) = (it.next(), it.next(), it.next()) else {
        return Vec::new();
    };
    match kind {
        "double_blocks" => {
            let p = format!("transformer_blocks.{i}.");
            let third = [out / 3; 3];
            match rest {
                "img_attn.qkv" => stacked(&p, &["attn.to_q", "attn.to_k", "attn.to_v"], &third),
                "txt_attn.qkv" => stacked(
                    &p,
                    &["attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"],
                    &third,
                ),
                _ => {
                    let d = match rest {
                        "img_mod.lin" => "norm1.linear",
                        "txt_mod.lin" => "norm1_context.linear",
                        "img_attn.proj" => "attn.to_out.0",
                        "txt_attn.proj" => "attn.to_add_out",
                        "img_mlp.0" => "ff.net.0.proj",
                        "img_mlp.2" => "ff.net.2",
                        "txt_mlp.0" => "ff_context.net.0.proj",
                        "txt_mlp.2" => "ff_context.net.2",
                        _ => return Vec::new(),
                    };
                    whole(&format!("{p}{d}"), out)
                }
            }
        }
        "single_blocks" => {
            let p = format!("single_transformer_blocks.{i}.");
            match rest {
                // linear1: [q; k; v; mlp] over the hidden width `inp`.
                "linear1" if out > 3 * inp => stacked(
                    &p,
                    &["attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"],
                    &[inp, inp, inp, out - 3 * inp],
                ),
                "linear2" => whole(&format!("{p}proj_out"), out),
                "modulation.lin" => whole(&format!("{p}norm.linear"), out),
                _ => Vec::new(),
            }
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fused_layers_split_into_their_diffusers_modules() {
        let qkv = parts("double_blocks.3.img_attn.qkv", 96, 32);
        assert_eq!(
            qkv.iter()
                .map(|p| (p.key.as_str(), p.dst, p.len))
                .collect::<Vec<_>>(),
            [
                ("transformer_blocks_3_attn_to_q", 0, 32),
                ("transformer_blocks_3_attn_to_k", 32, 32),
                ("transformer_blocks_3_attn_to_v", 64, 32)
            ]
        );
        let l1 = parts("single_blocks.0.linear1", 32 * 3 + 64, 32);
        assert_eq!(l1[3].key, "single_transformer_blocks_0_proj_mlp");
        assert_eq!((l1[3].dst, l1[3].len), (96, 64));
        let fin = parts("final_layer.adaLN_modulation.1", 64, 32);
        assert_eq!(
            (fin[0].src, fin[0].dst, fin[1].src, fin[1].dst),
            (32, 0, 0, 32)
        );
        assert!(parts("double_blocks.0.img_attn.norm.query_norm", 16, 1).is_empty());
    }
}
