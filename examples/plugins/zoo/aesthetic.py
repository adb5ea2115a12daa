#!/usr/bin/env python3
"""The LAION aesthetic predictor (improved-aesthetic-predictor) as a steerdiff reward plugin.

Model: openai/clip-vit-large-patch14 (transformers CLIPModel) embeds the image; the embedding,
L2-normalised, goes through LAION's MLP `sac+logos+ava1-l14-linearMSE.pth` (Linear layers
768→1024→128→64→16→1, dropout between, no activations), trained to predict the mean 1-10
rating of AVA / SAC / LAION-Logos images. The prompt is not used. This is the reward of DDPO's
"aesthetic quality" task; higher is prettier.

Requirements: torch, transformers, pillow (pins: requirements.txt beside this file).

Local weights: --mlp FILE or $AESTHETIC_MLP (required: the .pth from the
christophschuhmann/improved-aesthetic-predictor repository); --clip DIR or $AESTHETIC_CLIP for
a local copy of the CLIP model (a repo id in the hub cache works offline with HF_HUB_OFFLINE=1).

    steerdiff generate --model sd15 --prompt "a red cat" --guidance fk --particles 4 \\
        --reward 'stdio:python3 examples/plugins/zoo/aesthetic.py --mlp sac+logos+ava1-l14-linearMSE.pth' -o out/
"""
import os

import zoo_common as zc


def add_args(ap):
    ap.add_argument("--mlp", default=os.environ.get("AESTHETIC_MLP"),
                    help="the MLP's state dict: sac+logos+ava1-l14-linearMSE.pth, or the same keys "
                         "in a .safetensors file [$AESTHETIC_MLP]")
    ap.add_argument("--clip", default=os.environ.get("AESTHETIC_CLIP", "openai/clip-vit-large-patch14"),
                    help="CLIPModel repo id or folder, with its processor [$AESTHETIC_CLIP] "
                         "(default %(default)s)")


def laion_mlp(nn, state):
    """LAION's MLP, its layer sizes read from the state dict (Linear at layers.0, 2, 4, 6, 7)."""
    def linear(i):
        out_features, in_features = state[f"layers.{i}.weight"].shape
        return nn.Linear(in_features, out_features)

    mlp = nn.Module()
    mlp.layers = nn.Sequential(linear(0), nn.Dropout(0.2), linear(2), nn.Dropout(0.2),
                               linear(4), nn.Dropout(0.1), linear(6), linear(7))
    mlp.load_state_dict(state)
    return mlp.layers


def load(args):
    if not args.mlp:
        raise SystemExit("aesthetic: pass --mlp FILE (or set $AESTHETIC_MLP): the LAION MLP "
                         "sac+logos+ava1-l14-linearMSE.pth from christophschuhmann/improved-aesthetic-predictor")
    torch, transformers = zc.require("aesthetic", ("torch", "torch"), ("transformers", "transformers"))
    device = zc.torch_device(args.device)
    processor = transformers.AutoProcessor.from_pretrained(args.clip)
    model = transformers.CLIPModel.from_pretrained(args.clip).eval().to(device)
    if args.mlp.endswith(".safetensors"):
        from safetensors.torch import load_file  # installed with transformers
        state = load_file(args.mlp)
    else:
        state = torch.load(args.mlp, map_location="cpu", weights_only=True)
    mlp = laion_mlp(torch.nn, state).eval().to(device)

    @torch.no_grad()
    def scores(images, _prompts):
        return mlp(zc.clip_image_features(model, processor, images, device).float()).squeeze(-1).tolist()

    return scores


if __name__ == "__main__":
    zc.main("laion-aesthetic", load, __doc__, add_args, inputs=("pixels",), batch_size=16)
