"""The GPU check's comparisons (run by bench/gpu-check.sh on a machine with an NVIDIA GPU and
PyTorch, no Rust): steerdiff's CUDA binary against its own CPU run and against diffusers.

  python3 bench/gpu_check.py conformance BIN OUT      tiny-sd / tiny-sdxl CLI cases on --device cuda
  python3 bench/gpu_check.py models BIN OUT           the same from single files, and the LoRA cases
  python3 bench/gpu_check.py toy BIN OUT              the toy on cuda vs cpu
  python3 bench/gpu_check.py sd15-bench BIN OUT       SD-1.5-size random weights: steerdiff vs diffusers

Each prints one line per measurement and appends it as JSON to OUT/results.jsonl.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEVICE = os.environ.get("STEERDIFF_CHECK_DEVICE", "cuda")
FIXTURES = os.environ.get("STEERDIFF_FIXTURES", os.path.join(ROOT, "tests", "fixtures"))


def record(out, **row):
    print(json.dumps(row), flush=True)
    with open(os.path.join(out, "results.jsonl"), "a") as f:
        f.write(json.dumps(row) + "\n")


def run(argv, **kw):
    t = time.time()
    p = subprocess.run(argv, capture_output=True, text=True, **kw)
    return p, time.time() - t


def png_floats(path):
    from PIL import Image

    img = Image.open(path).convert("RGB")
    return [v / 255.0 for v in img.tobytes()]


def cli_case(bin_, out, check, label, case_path, model_args):
    """One recorded diffusers case through the CLI (as tests/common/sd_cases.rs runs it)."""
    case = json.load(open(case_path))
    tmp = tempfile.mkdtemp()
    sched = dict(case["scheduler_config"])
    sched["_class_name"] = case["scheduler"]
    sched_file = os.path.join(tmp, "scheduler.json")
    json.dump(sched, open(sched_file, "w"))
    argv = [bin_, "generate", "--device", DEVICE, "--dtype", "f32", *model_args,
            "--prompt", case["prompt"]]
    if case.get("negative_prompt") is not None:
        argv += ["--negative", case["negative_prompt"]]
    argv += ["--steps", str(case["num_inference_steps"]), "--cfg", str(case["guidance_scale"]),
             "--height", str(case["height"]), "--width", str(case["width"]),
             "--scheduler", sched_file, "--init-latents", case_path,
             "-o", os.path.join(tmp, "out")]
    p, secs = run(argv)
    if p.returncode != 0:
        record(out, check=check, case=label, ok=False, error=p.stderr.strip()[-600:])
        return
    got = png_floats(os.path.join(tmp, "out", "sample-0000.png"))
    want = case["image_hwc_0_1"]
    d255 = max(abs(a - b) for a, b in zip(got, want)) * 255
    rec = json.load(open(os.path.join(tmp, "out", "samples.json")))["parameters"]
    record(out, check=check, case=label, device=rec["device"], max_diff_255=round(d255, 3),
           ok=d255 <= 2.0, seconds=round(secs, 2))


def case_files(d):
    return [os.path.join(d, n) for n in sorted(os.listdir(d)) if n.endswith(".json")]


def conformance(bin_, out):
    """Every tiny-sd and tiny-sdxl case through the CLI, as tests/tiny_sd.rs runs them."""
    for fixture in ["tiny-sd", "tiny-sdxl"]:
        d = os.path.join(FIXTURES, fixture)
        for path in case_files(d):
            cli_case(bin_, out, "conformance", f"{fixture}/{os.path.basename(path)}", path,
                     ["--model", os.path.join(d, "pipeline")])


def models(bin_, out):
    """The same cases from original-layout single files (tests/single_file.rs), and the LoRA
    cases (tests/lora.rs): diffusers' fused LoRAs at two strengths."""
    single = os.path.join(FIXTURES, "single-file")
    for file, fixture in [("tiny-sd", "tiny-sd"), ("tiny-sd2", "tiny-sd"),
                          ("tiny-sdxl", "tiny-sdxl")]:
        config = os.path.join(FIXTURES, fixture, "pipeline")
        for path in case_files(os.path.join(FIXTURES, fixture)):
            cli_case(bin_, out, "single-file", f"{file}/{os.path.basename(path)}", path,
                     ["--model", os.path.join(single, f"{file}.safetensors"),
                      "--text-encoders", config])
    lora = os.path.join(FIXTURES, "tiny-lora")
    for path in case_files(os.path.join(lora, "cases")):
        case = json.load(open(path))
        cli_case(bin_, out, "lora", os.path.basename(path), path,
                 ["--model", os.path.join(FIXTURES, case["pipeline_fixture"], "pipeline"),
                  "--lora", f"{os.path.join(lora, case['lora_file'])}:{case['lora_scale']}"])


def toy(bin_, out):
    """The toy model, 16 samples of class star, CFG 3: cuda vs cpu."""
    tmp = tempfile.mkdtemp()
    res = {}
    for dev in ["cpu", DEVICE]:
        argv = [bin_, "generate", "--device", dev, "--class", "star", "--cfg", "3", "-n", "16",
                "--steps", "30", "--seed", "0", "-o", os.path.join(tmp, dev)]
        p, secs = run(argv)
        if p.returncode != 0:
            record(out, check="toy", device=dev, ok=False, error=p.stderr.strip()[-600:])
            return
        res[dev] = (json.load(open(os.path.join(tmp, dev, "samples.json"))), secs)
    a, b = res["cpu"][0]["samples"], res[DEVICE][0]["samples"]
    diff = max(abs(x - y) for sa, sb in zip(a, b) for x, y in zip(sa["x"], sb["x"]))
    record(out, check="toy", max_abs_diff_cpu_vs_gpu=diff, ok=diff < 0.05,
           device=res[DEVICE][0]["parameters"]["device"],
           wall_s_cpu=round(res["cpu"][1], 2), wall_s_gpu=round(res[DEVICE][1], 2))
    # Gaussian mixture on the GPU too.
    spec = os.path.join(ROOT, "examples", "gmm", "two-modes-1d.json")
    p, _ = run([bin_, "generate", "--device", DEVICE, "--model", f"gmm:{spec}", "--guidance", "fk",
                "--reward", "quadratic:0.5", "--particles", "8", "-n", "4", "-o", os.path.join(tmp, "gmm")])
    record(out, check="gmm-fk", ok=p.returncode == 0, stderr=p.stderr.strip()[-300:])


def make_sd15(folder):
    """An SD-1.5-size pipeline with random weights (diffusers' own classes, SD 1.5's config);
    the tokenizer is the tiny-sd fixture's (the text encoder's vocabulary follows it)."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    import shutil

    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    tok_dir = os.path.join(FIXTURES, "tiny-sd", "pipeline", "tokenizer")
    tok_cfg = json.load(open(os.path.join(tok_dir, "tokenizer_config.json")))
    vocab = len(json.load(open(os.path.join(tok_dir, "tokenizer.json")))["model"]["vocab"])
    length = tok_cfg["model_max_length"]
    unet = UNet2DConditionModel(
        sample_size=64, cross_attention_dim=768, attention_head_dim=8,
        block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512), latent_channels=4, layers_per_block=2,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        sample_size=512)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=vocab, hidden_size=768, intermediate_size=3072,
                                        num_hidden_layers=12, num_attention_heads=12,
                                        max_position_embeddings=length, projection_dim=768))
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                          clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    for sub, m in [("unet", unet), ("vae", vae), ("text_encoder", text)]:
        m.save_pretrained(os.path.join(folder, sub))
    shutil.copytree(tok_dir, os.path.join(folder, "tokenizer"))
    sched.save_pretrained(os.path.join(folder, "scheduler"))
    json.dump({"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.42.1",
               "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
               "text_encoder": ["transformers", "CLIPTextModel"],
               "tokenizer": ["transformers", "CLIPTokenizer"], "scheduler": ["diffusers", "DDIMScheduler"],
               "safety_checker": [None, None], "feature_extractor": [None, None],
               "requires_safety_checker": False},
              open(os.path.join(folder, "model_index.json"), "w"))
    return length


def sd15_bench(bin_, out):
    """One CFG step of the SD-1.5-size UNet (batch 2 = cond + uncond), bf16, at 512 px:
    diffusers' UNet call against steerdiff's model time per step, on the same weights (the
    text context is the fixture tokenizer's 16 tokens in both)."""
    import torch
    from diffusers import StableDiffusionPipeline

    folder = os.path.join(tempfile.mkdtemp(), "sd15-random")
    t = time.time()
    length = make_sd15(folder)
    record(out, check="sd15-make", seconds=round(time.time() - t, 1))
    pipe = StableDiffusionPipeline.from_pretrained(folder, dtype=torch.bfloat16).to("cuda")
    batches = [int(b) for b in os.environ.get("SD15_BATCHES", "1,4,16").split(",")]
    for size in [512]:
        for batch in batches:
            lat = torch.randn(2 * batch, 4, size // 8, size // 8, device="cuda", dtype=torch.bfloat16)
            ctx = torch.randn(2 * batch, length, 768, device="cuda", dtype=torch.bfloat16)
            times = []
            with torch.no_grad():
                for i in range(8):
                    torch.cuda.synchronize()
                    t = time.time()
                    pipe.unet(lat, 500, encoder_hidden_states=ctx)
                    torch.cuda.synchronize()
                    if i >= 3:
                        times.append(time.time() - t)
            med = statistics.median(times)
            record(out, check="sd15-unet-cfg-step", impl="diffusers", size=size, images=batch,
                   dtype="bf16", seconds=round(med, 4))
    del pipe
    torch.cuda.empty_cache()
    # steerdiff: plain sampling, `images` groups in one batch (--batch-groups; CFG's rows make
    # it 2 × images), model time per step from timing.json; a 2-step run is subtracted from a
    # 12-step one so that loading, the text encoder and the decode cancel out.
    for batch in batches:
        per = {}
        for steps in [2, 12]:
            tmp = tempfile.mkdtemp()
            argv = [bin_, "generate", "--device", "cuda", "--dtype", "bf16", "--model", folder,
                    "--prompt", "a red cat", "--cfg", "7.5", "--steps", str(steps), "--scheduler", "ddim",
                    "--height", "512", "--width", "512", "-n", str(batch), "--batch-groups", str(batch), "--max-batch", "64",
                    "-o", os.path.join(tmp, "o")]
            p, secs = run(argv)
            if p.returncode != 0:
                record(out, check="sd15-unet-cfg-step", impl="steerdiff", images=batch, ok=False,
                       error=p.stderr.strip()[:700])
                return
            timing = json.load(open(os.path.join(tmp, "o", "timing.json")))
            per[steps] = (timing["model_s"], secs)
        step = (per[12][0] - per[2][0]) / 10
        record(out, check="sd15-unet-cfg-step", impl="steerdiff", size=512, images=batch, dtype="bf16",
               seconds=round(step, 4), wall_s_12_steps=round(per[12][1], 1),
               note="model time of one CFG step of the whole batch")


if __name__ == "__main__":
    what, bin_, out = sys.argv[1], sys.argv[2], sys.argv[3]
    os.makedirs(out, exist_ok=True)
    try:
        {"conformance": conformance, "models": models, "toy": toy,
         "sd15-bench": sd15_bench}[what](bin_, out)
    except Exception as e:  # one section's failure must not hide the others
        record(out, check=what, ok=False, error=f"{type(e).__name__}: {e}"[-800:])
