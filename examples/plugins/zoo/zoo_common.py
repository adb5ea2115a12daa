"""What the zoo's plugins share: flags, imports that fail clearly, item decoding, batching, serving.

A zoo plugin is a ``load(args)`` function that returns ``scores(images, prompts) -> [float]``
for one batch, handed to :func:`main`, which does the rest:

- parses the common flags (``--device``, ``--batch-size``, ``--class-names``, ``--port``) and
  the plugin's own (``add_args``), so ``--help`` works before any heavy import;
- loads the model, then serves ``steerdiff-reward/1`` (``examples/plugins/steerdiff_plugin.py``)
  on stdin/stdout, or over HTTP on loopback with ``--port`` (one loaded model for many runs;
  with stdio, ``--plugin-concurrency N`` would load N copies);
- splits each request into batches of ``--batch-size`` and decodes every item: a PIL image by
  default (``decode``), and its text: the item's prompt, or for a class-conditional model
  (steerdiff's toy) the name of its class.

Over stdio, stdout carries the protocol and nothing else: model loaders print (ImageReward's
``load`` does), so while a plugin runs, file descriptor 1 points at stderr (which steerdiff
shows, prefixed ``[plugin NAME]``) and the protocol goes to a private copy of the real stdout.

Standard library only at import time: the VLM judge uses this module without PIL or torch.
"""

import argparse
import contextlib
import importlib
import math
import os
import sys

ZOO = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(ZOO))
import steerdiff_plugin as sp  # noqa: E402

# steerdiff's toy model: the class labels its items carry, in order.
TOY_CLASSES = "circle,square,triangle,cross,ring,star,diamond,heart,bars,arrow"


def require(plugin, *packages):
    """Imports each ``(module, pip requirement)`` and returns the modules, or exits with one line
    naming every pip requirement that is missing (steerdiff quotes it when the handshake fails)."""
    modules, missing, why = [], [], ""
    for module, pip in packages:
        try:
            modules.append(importlib.import_module(module))
        except ImportError as e:
            missing.append(pip)
            why = why or str(e)
    if missing:
        sys.exit(f"{plugin}: missing Python package(s) {', '.join(missing)} ({why}); "
                 f"install with: pip install {' '.join(missing)} "
                 f"(pins: examples/plugins/zoo/requirements.txt)")
    return modules


def to_pil(item):
    """The item's pixels as an RGB ``PIL.Image`` (from the rgb8 or png encoding)."""
    from PIL import Image
    if item.encoding == "png":
        import io
        return Image.open(io.BytesIO(item.data)).convert("RGB")
    if item.encoding == "rgb8":
        _, h, w = item.shape
        return Image.frombytes("RGB", (w, h), bytes(item.data))
    raise ValueError(f"cannot decode encoding {item.encoding!r} (this plugin asks for rgb8 or png)")


def text_of(item, class_names):
    """What the item shows in words: its prompt (text-to-image models), else its class's name
    (``class_names[item.cls]``, or ``class N`` past the list), else ``""``."""
    if item.prompt is not None:
        return item.prompt
    if item.cls is None:
        return ""
    return class_names[item.cls] if 0 <= item.cls < len(class_names) else f"class {item.cls}"


def batched(items, n):
    """Consecutive slices of at most ``n`` items."""
    return [items[i:i + n] for i in range(0, len(items), n)]


def finite_or_none(x):
    """A float for the answer, or None (the protocol's "could not score") for None, NaN, ±inf."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def torch_device(name):
    """``auto`` is CUDA when available, else the CPU; any other name is passed to torch."""
    import torch
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def clip_image_features(model, processor, images, device):
    """L2-normalised projected image embeddings of a transformers ``CLIPModel`` (what
    ``get_image_features`` returns, spelled out so it reads the same in every transformers
    version)."""
    pixels = processor(images=images, return_tensors="pt")["pixel_values"].to(device, model.dtype)
    f = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)
    return f / f.norm(dim=-1, keepdim=True)


def clip_text_features(model, processor, texts, device):
    """L2-normalised projected text embeddings, truncated to the model's context (77 tokens)."""
    t = processor(text=texts, padding=True, truncation=True, return_tensors="pt",
                  max_length=model.config.text_config.max_position_embeddings)
    out = model.text_model(input_ids=t["input_ids"].to(device),
                           attention_mask=t["attention_mask"].to(device))
    f = model.text_projection(out.pooler_output)
    return f / f.norm(dim=-1, keepdim=True)


def parser(doc, batch_size, torch):
    """The common flags (``--device`` only for torch plugins); ``doc`` is the help text."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if torch:
        ap.add_argument("--device", default=os.environ.get("STEERDIFF_ZOO_DEVICE", "auto"),
                        help="torch device: auto (CUDA when available), cpu, cuda:1, ... "
                             "[$STEERDIFF_ZOO_DEVICE]")
    ap.add_argument("--batch-size", type=int, default=batch_size,
                    help="items per forward pass, and the batch size the plugin announces "
                         "(default %(default)s)")
    ap.add_argument("--class-names", default=TOY_CLASSES,
                    help="comma-separated names of a class-conditional model's classes, used as "
                         "the prompt of items without one (default: the toy's)")
    ap.add_argument("--port", type=int,
                    help="serve over HTTP on 127.0.0.1:PORT (0: a free one, printed as READY URL) "
                         "instead of stdin/stdout")
    return ap


def _claim_stdout():
    """A private binary stream on the real stdout; fd 1 (and so print, C libraries) → stderr."""
    sys.stdout.flush()
    protocol = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    return protocol


def main(name, load, doc, add_args=None, *, torch=True, batch_size=8, encodings=("rgb8", "png"),
         decode=to_pil, inputs=("pixels", "prompt", "class"), describe=None):
    """Parses the flags, calls ``load(args)`` for the batch scorer, and serves it as ``name``.

    ``decode(item)`` is what the scorer gets for an image (a PIL image by default);
    ``describe(args)``, if given, returns more fields for :func:`steerdiff_plugin.describe`
    (``score_range``, ``deterministic``, ...).
    """
    ap = parser(doc, batch_size, torch)
    if add_args:
        add_args(ap)
    args = ap.parse_args()
    class_names = [c.strip() for c in args.class_names.split(",")]
    protocol = None if args.port is not None else _claim_stdout()
    with contextlib.redirect_stdout(sys.stderr):  # loaders' prints, over HTTP too
        scores = load(args)

    def score(items):
        out = {}
        for chunk in batched(items, args.batch_size):
            values = scores([decode(it) for it in chunk], [text_of(it, class_names) for it in chunk])
            out.update((it.id, finite_or_none(v)) for it, v in zip(chunk, values))
        return out

    description = sp.describe(name, inputs=inputs, batch_size=args.batch_size, encodings=encodings,
                              **(describe(args) if describe else {}))
    if protocol is None:
        sp.serve_http(description, score, args.port)
        return
    stdin = sys.stdin.buffer
    while True:
        msg = sp.read_message(stdin)
        if msg is None or msg[0].get("op") == "shutdown":
            return
        sp.write_message(protocol, sp.answer(description, score, *msg))
