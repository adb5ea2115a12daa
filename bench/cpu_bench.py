"""CPU speed, side by side: steerdiff and diffusers on the same weights, same threads, one run.

  python3 bench/cpu_bench.py BIN [unet] [tiny-sd] [sdxl] [--sizes 256,512] [--threads N]
                             [--sd15 DIR] [--sdxl DIR]

  unet      one CFG step of an SD-1.5-size UNet (batch 2: conditional + unconditional rows), at
            each size: diffusers' `unet(...)` call against `steerdiff bench`'s forward at batch 2
            (both a median after one warm-up); and the VAE's decode of one image, diffusers'
            `vae.decode` against `bench`'s decode. The random-weight pipeline is made with
            diffusers (bench/gpu_check.py's make_sd15, about 4 GB, once; --sd15 reuses one).
  tiny-sd   the tiny-sd fixture pipeline, 25 DDIM steps, CFG 7.5, 16×16, 7 images of one prompt:
            diffusers' pipeline call (num_images_per_prompt=7) against `steerdiff bench`'s whole
            run with the 7 images in one batch (`--batch-groups 7`) and one at a time (the
            default), each the median of 5 (loading excluded from both).
  sdxl      one CFG step of an SDXL-size UNet (2.6 B parameters, SDXL base's config) at 1024 px,
            batch 2, the median of 2 after one warm-up on each side. Its random-weight pipeline
            (make_sdxl below, about 11 GB, once; --sdxl reuses one) has SDXL's text-encoder
            widths but two layers each: only the UNet is timed. diffusers' UNet is freed before
            steerdiff loads its own, so that one machine of 24 GiB holds either.

Prints one JSON line per figure and a table of ratios (steerdiff time / diffusers time: below 1
is faster). GFLOP/s is torch's FLOP count of the step over each side's time. steerdiff computes
its 3×3 convolutions of stride 1 by Winograd's F(2×2, 3×3), with 2.25× fewer multiply-adds than
the direct convolution torch counts, so its figure is the rate of the work it replaces, not of
the arithmetic it does. Needs torch and diffusers (bench/requirements.txt) and a release build
of steerdiff.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def steerdiff_bench(bin_, threads, bench_args, generate_args):
    argv = [bin_, "--threads", str(threads), "bench", "--json", *bench_args, "--", *generate_args]
    p = subprocess.run(argv, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"steerdiff bench failed ({p.returncode}): {p.stderr.strip()[-2000:]}")
    return json.loads(p.stdout)


def median_time(f, repeats, warmup=1):
    for _ in range(warmup):
        f()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times), max(times)


def unet_step(bin_, threads, sizes, sd15, rows):
    import torch
    from diffusers import UNet2DConditionModel

    from gpu_check import make_sd15

    if not os.path.exists(os.path.join(sd15, "model_index.json")):
        make_sd15(sd15)
    from diffusers import AutoencoderKL

    unet = UNet2DConditionModel.from_pretrained(os.path.join(sd15, "unet")).eval()
    vae = AutoencoderKL.from_pretrained(os.path.join(sd15, "vae")).eval()
    length = json.load(open(os.path.join(sd15, "tokenizer", "tokenizer_config.json")))["model_max_length"]
    for size in sizes:
        torch.manual_seed(0)
        lat = torch.randn(2, 4, size // 8, size // 8)
        ctx = torch.randn(2, length, 768)
        with torch.no_grad():
            med, lo, hi = median_time(lambda: unet(lat, 500, encoder_hidden_states=ctx), 3)
        # FLOPs of the step, by torch's counter (multiply-adds count 2).
        from torch.utils.flop_counter import FlopCounterMode

        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            unet(lat, 500, encoder_hidden_states=ctx)
        flops = fc.get_total_flops()
        rows.append(dict(work=f"SD-1.5-size UNet, one CFG step (batch 2), {size} px", impl="diffusers",
                         seconds=med, min=lo, max=hi, gflops_per_s=flops / med / 1e9, tflop=flops / 1e12))
        print(json.dumps(rows[-1]), flush=True)
        report = steerdiff_bench(bin_, threads, ["--batches", "2", "--warmup", "1", "--repeats", "3", "--runs", "0"],
                                 ["-m", sd15, "-p", "a cat", "-H", str(size), "-W", str(size), "--cfg", "7.5"])
        s = report["forward"][0]["seconds"]
        rows.append(dict(work=rows[-1]["work"], impl="steerdiff", seconds=s["median"], min=s["min"],
                         max=s["max"], gflops_per_s=flops / s["median"] / 1e9, tflop=flops / 1e12))
        print(json.dumps(rows[-1]), flush=True)
        work = f"SD-1.5-size VAE, decode one image, {size} px"
        with torch.no_grad():
            med, lo, hi = median_time(lambda: vae.decode(lat[:1]), 3)
        rows.append(dict(work=work, impl="diffusers", seconds=med, min=lo, max=hi))
        print(json.dumps(rows[-1]), flush=True)
        d = report["decode_per_image"]
        rows.append(dict(work=work, impl="steerdiff", seconds=d["median"], min=d["min"], max=d["max"]))
        print(json.dumps(rows[-1]), flush=True)
    del unet, vae


def tiny_sd(bin_, threads, rows):
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    folder = os.path.join(ROOT, "tests", "fixtures", "tiny-sd", "pipeline")
    pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, requires_safety_checker=False)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    work = "tiny-sd pipeline, 25 DDIM steps, CFG 7.5, 16×16, 7 images (per image)"

    def call():
        pipe("a cat", num_images_per_prompt=7, num_inference_steps=25, guidance_scale=7.5,
             height=16, width=16, generator=torch.Generator().manual_seed(0), output_type="np")

    with torch.no_grad():
        med, lo, hi = median_time(call, 5)
    rows.append(dict(work=work, impl="diffusers (batch 7)", seconds=med / 7, min=lo / 7, max=hi / 7))
    print(json.dumps(rows[-1]), flush=True)
    for groups, label in [(7, "steerdiff (batch 7)"), (1, "steerdiff (one image at a time)")]:
        runs = []
        for _ in range(5):
            report = steerdiff_bench(bin_, threads, ["--batches", "1", "--warmup", "0", "--repeats", "1", "--runs", "1"],
                                     ["-m", folder, "-p", "a cat", "-H", "16", "-W", "16", "--cfg", "7.5",
                                      "--steps", "25", "--scheduler", "ddim", "-n", "7", "--batch-groups", str(groups)])
            runs.append(report["run"]["wall_s"] / 7)
        rows.append(dict(work=work, impl=label, seconds=statistics.median(runs), min=min(runs), max=max(runs)))
        print(json.dumps(rows[-1]), flush=True)


def make_sdxl(folder):
    """An SDXL-size pipeline with random weights: SDXL base's UNet and VAE configs, its text
    encoders' widths (768 and 1280, projection 1280) with two layers each, and the tiny-sdxl
    fixture's tokenizers (the encoders' vocabularies and special tokens follow them)."""
    import shutil

    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    fixture = os.path.join(ROOT, "tests", "fixtures", "tiny-sdxl", "pipeline")
    unet = UNet2DConditionModel(
        sample_size=128, block_out_channels=(320, 640, 1280), layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20),
        cross_attention_dim=2048, use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816)
    unet.save_pretrained(os.path.join(folder, "unet"))
    del unet
    AutoencoderKL(
        block_out_channels=(128, 256, 512, 512), latent_channels=4, layers_per_block=2,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        sample_size=1024, scaling_factor=0.13025).save_pretrained(os.path.join(folder, "vae"))
    for sub, cls, width, heads, act in [("text_encoder", CLIPTextModel, 768, 12, "quick_gelu"),
                                        ("text_encoder_2", CLIPTextModelWithProjection, 1280, 20, "gelu")]:
        tiny = json.load(open(os.path.join(fixture, sub, "config.json")))
        config = CLIPTextConfig(
            vocab_size=tiny["vocab_size"], hidden_size=width, intermediate_size=4 * width,
            num_hidden_layers=2, num_attention_heads=heads, hidden_act=act,
            max_position_embeddings=tiny["max_position_embeddings"], projection_dim=1280,
            bos_token_id=tiny["bos_token_id"], eos_token_id=tiny["eos_token_id"],
            pad_token_id=tiny["pad_token_id"])
        cls(config).save_pretrained(os.path.join(folder, sub))
    for sub in ["tokenizer", "tokenizer_2"]:
        shutil.copytree(os.path.join(fixture, sub), os.path.join(folder, sub))
    EulerDiscreteScheduler.from_pretrained(os.path.join(fixture, "scheduler")).save_pretrained(
        os.path.join(folder, "scheduler"))
    shutil.copy(os.path.join(fixture, "model_index.json"), folder)


def sdxl_step(bin_, threads, sdxl, rows):
    import gc

    import torch
    from diffusers import UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    if not os.path.exists(os.path.join(sdxl, "model_index.json")):
        make_sdxl(sdxl)
    length = json.load(open(os.path.join(sdxl, "tokenizer", "tokenizer_config.json")))["model_max_length"]
    unet = UNet2DConditionModel.from_pretrained(os.path.join(sdxl, "unet")).eval()
    torch.manual_seed(0)
    lat = torch.randn(2, 4, 128, 128)
    ctx = torch.randn(2, length, 2048)
    added = {"text_embeds": torch.randn(2, 1280), "time_ids": torch.tensor([[1024.0, 1024, 0, 0, 1024, 1024]] * 2)}
    step = lambda: unet(lat, 500, encoder_hidden_states=ctx, added_cond_kwargs=added)
    with torch.no_grad():
        med, lo, hi = median_time(step, 2)
        with FlopCounterMode(display=False) as fc:
            step()
    flops = fc.get_total_flops()
    work = "SDXL-size UNet, one CFG step (batch 2), 1024 px"
    rows.append(dict(work=work, impl="diffusers", seconds=med, min=lo, max=hi,
                     gflops_per_s=flops / med / 1e9, tflop=flops / 1e12))
    print(json.dumps(rows[-1]), flush=True)
    del unet, step
    gc.collect()
    report = steerdiff_bench(bin_, threads, ["--batches", "2", "--warmup", "1", "--repeats", "2", "--runs", "0"],
                             ["-m", sdxl, "-p", "a cat", "-H", "1024", "-W", "1024", "--cfg", "7.5"])
    s = report["forward"][0]["seconds"]
    rows.append(dict(work=work, impl="steerdiff", seconds=s["median"], min=s["min"], max=s["max"],
                     gflops_per_s=flops / s["median"] / 1e9, tflop=flops / 1e12,
                     peak_rss_gb=(report.get("peak_rss_bytes") or 0) / 1e9))
    print(json.dumps(rows[-1]), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bin")
    ap.add_argument("sections", nargs="*", default=["unet", "tiny-sd"])
    ap.add_argument("--sizes", default="256,512")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--sd15", default=os.path.join(tempfile.gettempdir(), "steerdiff-sd15-random"))
    ap.add_argument("--sdxl", default=os.path.join(tempfile.gettempdir(), "steerdiff-sdxl-random"))
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    rows = []
    for s in a.sections:
        if s == "unet":
            unet_step(a.bin, a.threads, [int(x) for x in a.sizes.split(",")], a.sd15, rows)
        elif s == "tiny-sd":
            tiny_sd(a.bin, a.threads, rows)
        elif s == "sdxl":
            sdxl_step(a.bin, a.threads, a.sdxl, rows)
        else:
            sys.exit(f"unknown section {s!r}: unet, tiny-sd or sdxl")
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"\n{cpu}, {a.threads} threads, torch {torch.__version__}")
    print(f"{'work':<72} {'impl':<32} {'seconds':>9} {'ratio':>7}")
    base = {}
    for r in rows:
        if r["impl"].startswith("diffusers"):
            base[r["work"]] = r["seconds"]
        ratio = r["seconds"] / base[r["work"]]
        extra = f"  {r['gflops_per_s']:.0f} GFLOP/s" if "gflops_per_s" in r else ""
        print(f"{r['work']:<72} {r['impl']:<32} {r['seconds']:>9.4f} {ratio:>6.2f}×{extra}")


if __name__ == "__main__":
    main()
