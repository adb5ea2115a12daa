#!/usr/bin/env python3
"""ImageReward (Xu et al. 2023) as a steerdiff reward plugin.

Model: ImageReward-v1.0 (THUDM/ImageReward: `ImageReward.pt` and its `med_config.json`), a
BLIP ViT-L image encoder and BERT text encoder with cross-attention and an MLP head, trained on
137k expert comparisons, through the `image-reward` package:
`ImageReward.load("ImageReward-v1.0")`, then `model.score(prompt, images)`. Scores are
standardised over the training set: about -2 to 2, higher is preferred.

Requirements: image-reward 1.5 with torch, timm 0.6.13, fairscale, transformers < 4.56 and
pillow, in an environment of its own (the pip line and why: requirements.txt beside this file).

Local weights: --download-root DIR or $IMAGE_REWARD_ROOT, a folder holding ImageReward.pt and
med_config.json (what the package downloads there; default ~/.cache/ImageReward); --model FILE
or $IMAGE_REWARD_MODEL names the checkpoint elsewhere (med_config.json is still read from the
root). The BERT tokenizer (bert-base-uncased) comes from the hub cache: with both in place, run
with HF_HUB_OFFLINE=1.

    steerdiff generate --model sd15 --prompt "a red cat" --guidance fk --particles 4 \\
        --reward 'stdio:python3 examples/plugins/zoo/image_reward.py' -o out/
"""
import os

import zoo_common as zc


def add_args(ap):
    ap.add_argument("--model", default=os.environ.get("IMAGE_REWARD_MODEL", "ImageReward-v1.0"),
                    help="model name, or the path of its checkpoint [$IMAGE_REWARD_MODEL] "
                         "(default %(default)s)")
    ap.add_argument("--download-root", default=os.environ.get("IMAGE_REWARD_ROOT"),
                    help="folder of ImageReward.pt and med_config.json [$IMAGE_REWARD_ROOT] "
                         "(default: the package's, ~/.cache/ImageReward)")


def load(args):
    torch, reward = zc.require("image_reward", ("torch", "torch"), ("ImageReward", "image-reward"))
    model = reward.load(args.model, device=zc.torch_device(args.device), download_root=args.download_root)

    @torch.no_grad()
    def scores(images, prompts):
        # model.score takes one prompt and a list of images: one call per distinct prompt.
        out = [None] * len(images)
        for prompt in dict.fromkeys(prompts):
            at = [i for i, p in enumerate(prompts) if p == prompt]
            s = model.score(prompt, [images[i] for i in at])
            for i, v in zip(at, s if isinstance(s, list) else [s]):  # one image: a bare float
                out[i] = v[0] if isinstance(v, list) else v  # old releases: [[r], [r], ...]
        return out

    return scores


if __name__ == "__main__":
    zc.main("image-reward", load, __doc__, add_args)
