#!/usr/bin/env python3
"""PickScore (Kirstain et al. 2023) as a steerdiff reward plugin.

Model: yuvalkirstain/PickScore_v1, a CLIP ViT-H/14 fine-tuned on Pick-a-Pic human preferences,
read with the processor (tokenizer, image transform) of laion/CLIP-ViT-H-14-laion2B-s32B-b79K,
both through transformers' CLIPModel / AutoProcessor. Score: logit_scale · cos(image, prompt),
PickScore's own logit; about 18 to 23 for Stable Diffusion images, higher is preferred.

Requirements: torch, transformers, pillow (pins: requirements.txt beside this file).

Local weights: --model DIR and --processor DIR (or $PICKSCORE_MODEL, $PICKSCORE_PROCESSOR) take
folders holding the two repos (`huggingface-cli download yuvalkirstain/PickScore_v1
--local-dir DIR`, or `save_pretrained`); repo ids already in the hub cache work offline with
HF_HUB_OFFLINE=1.

    steerdiff generate --model sd15 --prompt "a red cat" --guidance fk --particles 4 \\
        --reward 'stdio:python3 examples/plugins/zoo/pickscore.py' -o out/
"""
import os

import zoo_common as zc


def add_args(ap):
    ap.add_argument("--model", default=os.environ.get("PICKSCORE_MODEL", "yuvalkirstain/PickScore_v1"),
                    help="CLIPModel repo id or folder [$PICKSCORE_MODEL] (default %(default)s)")
    ap.add_argument("--processor", default=os.environ.get(
        "PICKSCORE_PROCESSOR", "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"),
                    help="processor repo id or folder [$PICKSCORE_PROCESSOR] (default %(default)s)")


def load(args):
    torch, transformers = zc.require("pickscore", ("torch", "torch"), ("transformers", "transformers"))
    device = zc.torch_device(args.device)
    processor = transformers.AutoProcessor.from_pretrained(args.processor)
    model = transformers.CLIPModel.from_pretrained(args.model).eval().to(device)

    @torch.no_grad()
    def scores(images, prompts):
        image = zc.clip_image_features(model, processor, images, device)
        text = zc.clip_text_features(model, processor, prompts, device)
        return (model.logit_scale.exp() * (image * text).sum(-1)).tolist()

    return scores


if __name__ == "__main__":
    zc.main("pickscore", load, __doc__, add_args)
