#!/usr/bin/env python3
"""Human Preference Score v2.1 (HPSv2.1, Wu et al. 2023) as a steerdiff reward plugin.

Model: `HPS_v2.1_compressed.pt` from the xswu/HPSv2 hub repo, an OpenCLIP ViT-H-14 fine-tuned on
HPD v2 human preferences, loaded with open_clip directly and once (the `hpsv2` package's
`hpsv2.score` reloads the checkpoint on every call, too slow for a reward called at every
step). Score: cos(image, prompt), the HPS itself; about 0.2 to 0.35, higher is preferred.

Requirements: torch, open-clip-torch, pillow, and huggingface-hub unless --checkpoint is given
(pins: requirements.txt beside this file). The ViT-H-14 tokenizer ships inside open_clip.

Local weights: --checkpoint FILE or $HPSV2_CHECKPOINT (the .pt file). Without it the file is
fetched with huggingface_hub (`hf_hub_download("xswu/HPSv2", "HPS_v2.1_compressed.pt")`),
which works offline with HF_HUB_OFFLINE=1 once it is in the hub cache.

    steerdiff generate --model sd15 --prompt "a red cat" --guidance fk --particles 4 \\
        --reward 'stdio:python3 examples/plugins/zoo/hpsv2.py --checkpoint HPS_v2.1_compressed.pt' -o out/
"""
import os

import zoo_common as zc


def add_args(ap):
    ap.add_argument("--checkpoint", default=os.environ.get("HPSV2_CHECKPOINT"),
                    help="HPS_v2.1_compressed.pt (or HPS_v2_compressed.pt for v2.0) [$HPSV2_CHECKPOINT]; "
                         "default: from the hub (cache) repo xswu/HPSv2")


def load(args):
    torch, open_clip = zc.require("hpsv2", ("torch", "torch"), ("open_clip", "open-clip-torch"))
    checkpoint = args.checkpoint
    if checkpoint is None:
        (hub,) = zc.require("hpsv2", ("huggingface_hub", "huggingface-hub"))
        checkpoint = hub.hf_hub_download("xswu/HPSv2", "HPS_v2.1_compressed.pt")
    device = zc.torch_device(args.device)
    # pretrained=None: the base weights would all be replaced by the checkpoint's anyway.
    model, _, preprocess = open_clip.create_model_and_transforms("ViT-H-14", pretrained=None)
    model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"])
    model = model.eval().to(device)
    tokenizer = open_clip.get_tokenizer("ViT-H-14")

    @torch.no_grad()
    def scores(images, prompts):
        image = model.encode_image(torch.stack([preprocess(im) for im in images]).to(device), normalize=True)
        text = model.encode_text(tokenizer(prompts).to(device), normalize=True)
        return (image * text).sum(-1).tolist()

    return scores


if __name__ == "__main__":
    zc.main("hpsv2.1", load, __doc__, add_args)
