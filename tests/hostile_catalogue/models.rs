//! Hostile inputs: crafted model folders (copies of tiny-sd): headers, tensors, configs, pickles.

use serde_json::json;

use super::setup::*;
use super::{case, Case, Untouched};

/// The cases of this category.
pub(crate) fn cases() -> Vec<Case> {
    vec![
        case(
            "st_header_length_huge",
            2,
            &["header too large"],
            Untouched,
            |d| {
                sd_bytes(d, |mut b| {
                    b[..8].copy_from_slice(&(1u64 << 62).to_le_bytes());
                    b
                })
            },
        ),
        case(
            "st_header_length_past_the_end",
            2,
            &["invalid header length"],
            Untouched,
            |d| {
                sd_bytes(d, |mut b| {
                    let n = b.len() as u64;
                    b[..8].copy_from_slice(&n.to_le_bytes());
                    b
                })
            },
        ),
        case(
            "st_truncated",
            2,
            &[
                "not fully covered",
                "unet/diffusion_pytorch_model.safetensors",
            ],
            Untouched,
            |d| sd_bytes(d, |b| b[..b.len() / 2].to_vec()),
        ),
        case("st_three_bytes", 2, &["header too small"], Untouched, |d| {
            sd_bytes(d, |_| vec![1, 2, 3])
        }),
        case(
            "st_header_not_json",
            2,
            &["invalid JSON in header"],
            Untouched,
            |d| {
                sd_bytes(d, |mut b| {
                    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
                    b[8..8 + n].fill(b'x');
                    b
                })
            },
        ),
        case(
            "st_unknown_dtype",
            2,
            &["unknown variant `Q7`"],
            Untouched,
            |d| {
                sd_tensors(d, UNET_WEIGHTS, |h, _| {
                    h["conv_in.bias"]["dtype"] = json!("Q7")
                })
            },
        ),
        case(
            "st_integer_dtype",
            2,
            &["`conv_in.bias`", "has dtype I32"],
            Untouched,
            |d| {
                sd_tensors(d, UNET_WEIGHTS, |h, _| {
                    h["conv_in.bias"]["dtype"] = json!("I32")
                })
            },
        ),
        case(
            "st_offsets_past_the_end",
            2,
            &["invalid shape, data type, or offset||invalid offset"],
            Untouched,
            |d| {
                sd_tensors(d, VAE_WEIGHTS, |h, _| {
                    let k = last_tensor(h);
                    let end = h[&k]["data_offsets"][1].as_u64().unwrap();
                    h[&k]["data_offsets"][1] = json!(end + 4096);
                })
            },
        ),
        case(
            "st_offsets_far_outside",
            2,
            &["invalid offset"],
            Untouched,
            |d| {
                sd_tensors(d, VAE_WEIGHTS, |h, _| {
                    let k = last_tensor(h);
                    let o = &h[&k]["data_offsets"];
                    let len = o[1].as_u64().unwrap() - o[0].as_u64().unwrap();
                    h[&k]["data_offsets"] = json!([1u64 << 62, (1u64 << 62) + len]);
                })
            },
        ),
        case("st_shape_overflows", 2, &["overflow"], Untouched, |d| {
            sd_tensors(d, VAE_WEIGHTS, |h, _| {
                h["decoder.conv_in.bias"]["shape"] = json!([1u64 << 40, 1u64 << 40])
            })
        }),
        case(
            "st_tensor_of_the_wrong_shape",
            2,
            &["shape mismatch for decoder.conv_in.bias", "loading the VAE"],
            Untouched,
            |d| {
                sd_tensors(d, VAE_WEIGHTS, |h, _| {
                    h["decoder.conv_in.bias"]["shape"] = json!([8, 8])
                })
            },
        ),
        case(
            "sd_missing_unet_folder",
            2,
            &["`unet/config.json` is missing"],
            Untouched,
            |d| {
                let sd = sd_copy(d);
                std::fs::remove_dir_all(sd.join("unet")).unwrap();
                sd_gen(d, &s(&sd), &[])
            },
        ),
        case(
            "sd_missing_vae_folder",
            2,
            &["`vae/config.json` is missing"],
            Untouched,
            |d| {
                let sd = sd_copy(d);
                std::fs::remove_dir_all(sd.join("vae")).unwrap();
                sd_gen(d, &s(&sd), &[])
            },
        ),
        case(
            "sd_missing_weights_file",
            2,
            &["no safetensors weights for `unet`"],
            Untouched,
            |d| {
                let sd = sd_copy(d);
                std::fs::remove_file(sd.join(UNET_WEIGHTS)).unwrap();
                sd_gen(d, &s(&sd), &[])
            },
        ),
        case(
            "sd_pickle_weights_in_the_folder",
            2,
            &["diffusion_pytorch_model.bin` is a PyTorch pickle"],
            Untouched,
            |d| {
                let sd = sd_copy(d);
                std::fs::remove_file(sd.join(UNET_WEIGHTS)).unwrap();
                // A pickle that would run a command if it were ever unpickled.
                write(
                    &sd.join("unet/diffusion_pytorch_model.bin"),
                    b"cos\nsystem\n(S'touch pwned'\ntR.",
                );
                sd_gen(d, &s(&sd), &[])
            },
        ),
        case(
            "sd_unet_config_not_json",
            2,
            &["unet/config.json", "invalid JSON"],
            Untouched,
            |d| {
                let sd = sd_copy(d);
                write(&sd.join("unet/config.json"), "{not json");
                sd_gen(d, &s(&sd), &[])
            },
        ),
        case(
            "sd_model_index_not_json",
            2,
            &["model_index.json", "invalid JSON"],
            Untouched,
            |d| {
                let sd = sd_copy(d);
                write(&sd.join("model_index.json"), "nope");
                sd_gen(d, &s(&sd), &[])
            },
        ),
        case(
            "sd_unet_sample_size_huge",
            2,
            // No --width / --height given: the config is named, not the flags.
            &[
                "2000000×2000000",
                "`unet/config.json`",
                "sample_size 1000000",
            ],
            Untouched,
            |d| sd_config(d, "unet/config.json", "sample_size", json!(1_000_000)),
        ),
        case(
            "sd_unet_sample_size_negative",
            2,
            &["sample_size"],
            Untouched,
            |d| sd_config(d, "unet/config.json", "sample_size", json!(-8)),
        ),
        case(
            "sd_unet_in_channels_negative",
            2,
            &["`in_channels` must be a non-negative integer"],
            Untouched,
            |d| sd_config(d, "unet/config.json", "in_channels", json!(-4)),
        ),
        case(
            "sd_unet_in_channels_zero",
            2,
            &["in_channels"],
            Untouched,
            |d| sd_config(d, "unet/config.json", "in_channels", json!(0)),
        ),
        case(
            "sd_unet_block_out_channels_empty",
            2,
            &["`block_out_channels` must be a non-empty list"],
            Untouched,
            |d| sd_config(d, "unet/config.json", "block_out_channels", json!([])),
        ),
        case(
            "sd_unet_layers_per_block_absurd",
            2,
            &["loading the UNet", "cannot find tensor"],
            Untouched,
            |d| {
                sd_config(
                    d,
                    "unet/config.json",
                    "layers_per_block",
                    json!(1_000_000_000),
                )
            },
        ),
        case(
            "sd_unet_norm_groups_zero",
            2,
            &["norm_num_groups = 0"],
            Untouched,
            |d| sd_config(d, "unet/config.json", "norm_num_groups", json!(0)),
        ),
        case(
            "sd_unet_attention_heads_zero",
            2,
            &["0 attention heads"],
            Untouched,
            |d| sd_config(d, "unet/config.json", "attention_head_dim", json!(0)),
        ),
        case(
            "sd_text_encoder_heads_indivisible",
            2,
            &["text_encoder/config.json", "not divisible into 3 heads"],
            Untouched,
            |d| {
                sd_config(
                    d,
                    "text_encoder/config.json",
                    "num_attention_heads",
                    json!(3),
                )
            },
        ),
        case(
            "sd_vae_scaling_factor_zero",
            2,
            &["scaling_factor"],
            Untouched,
            |d| sd_config(d, "vae/config.json", "scaling_factor", json!(0)),
        ),
        case(
            "sd_scheduler_config_not_json",
            2,
            &["scheduler/scheduler_config.json", "invalid JSON"],
            Untouched,
            |d| {
                let sd = sd_copy(d);
                write(&sd.join("scheduler/scheduler_config.json"), "[1,2");
                sd_gen(d, &s(&sd), &[])
            },
        ),
        case(
            "sd_scheduler_unknown_beta_schedule",
            2,
            &["beta_schedule = \"cubic\""],
            Untouched,
            |d| {
                sd_config(
                    d,
                    "scheduler/scheduler_config.json",
                    "beta_schedule",
                    json!("cubic"),
                )
            },
        ),
        case(
            "sd_scheduler_train_steps_huge",
            2,
            &["num_train_timesteps"],
            Untouched,
            |d| {
                sd_config(
                    d,
                    "scheduler/scheduler_config.json",
                    "num_train_timesteps",
                    json!(100_000_000_000u64),
                )
            },
        ),
        case(
            "model_ckpt_file_refused_unread",
            2,
            &["pickle checkpoint", "safetensors only"],
            Untouched,
            |d| {
                let ckpt = write(&d.join("model.ckpt"), b"cos\nsystem\n(S'touch pwned'\ntR.");
                sd_gen(d, &ckpt, &[])
            },
        ),
        case(
            "model_pt_file_refused_unread",
            2,
            &["pickle checkpoint"],
            Untouched,
            |d| {
                let pt = write(&d.join("model.pt"), b"PK\x03\x04 not a zip");
                sd_gen(d, &pt, &[])
            },
        ),
        case(
            "model_symlink_loop",
            2,
            &["loop", "symbolic link||symlink"],
            Untouched,
            |d| {
                std::os::unix::fs::symlink(d.join("loop-b"), d.join("loop-a")).unwrap();
                std::os::unix::fs::symlink(d.join("loop-a"), d.join("loop-b")).unwrap();
                sd_gen(d, &s(&d.join("loop-a")), &[])
            },
        ),
        case(
            "sd3_text_encoders_folder_missing",
            2,
            &["--text-encoders", "no-such-encoders"],
            Untouched,
            |d| {
                let te = s(&d.join("no-such-encoders"));
                sd_gen(
                    d,
                    &manifest("tests/fixtures/tiny-dit/sd3.safetensors"),
                    &["--text-encoders", &te],
                )
            },
        ),
        case(
            "flux_ae_file_missing",
            2,
            &["no-such-ae.safetensors", "no such file or folder"],
            Untouched,
            |d| {
                let ae = s(&d.join("no-such-ae.safetensors"));
                sd_gen(
                    d,
                    &manifest("tests/fixtures/tiny-dit/flux.safetensors"),
                    &[
                        "--text-encoders",
                        &manifest("tests/fixtures/tiny-text-encoders"),
                        "--ae",
                        &ae,
                    ],
                )
            },
        ),
    ]
}
