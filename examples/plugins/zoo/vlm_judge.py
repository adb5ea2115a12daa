#!/usr/bin/env python3
"""A vision-language model as judge: a steerdiff reward plugin over an OpenAI-compatible chat API.

Model: whichever the server serves, e.g. llama.cpp's `llama-server -m MODEL.gguf --mmproj
MMPROJ.gguf` (port 8080) or `vllm serve Qwen/Qwen2.5-VL-7B-Instruct` (port 8000), on loopback.
For every item the plugin POSTs BASE/chat/completions with one user message: the question
(`{prompt}` in it replaced by the item's prompt, or its class name on the toy) and the image,
a base64 PNG `data:` URL in an `image_url` part. The question asks for JSON `{"score": N}` on a
stated scale (0 to 10 by default, --range). The score is that JSON's "score" or, failing that,
the first number in the reply; a reply with neither, or with a number off the scale, scores null
(steerdiff then follows --plugin-on-error). An unreachable server or an HTTP error fails the
whole request, with the URL in the message: steerdiff retries it, then stops the run.

Requirements: none; the standard library only.

Local weights: the server's own (llama-server -m /models/...gguf, vllm serve /models/DIR); the
plugin needs only --base-url ($STEERDIFF_VLM_URL), --model ($STEERDIFF_VLM_MODEL: the name the
server serves; llama.cpp ignores it), and for servers started with one, --api-key
($STEERDIFF_VLM_API_KEY). Loopback URLs bypass any http_proxy.

    steerdiff generate --class star --guidance fk --particles 4 \\
        --reward 'stdio:python3 examples/plugins/zoo/vlm_judge.py --base-url http://127.0.0.1:8080/v1' -o out/
"""
import base64
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request

import zoo_common as zc

QUESTION = ('Rate how well this image shows "{prompt}", on a scale from {lo} (not at all) to {hi} '
            '(perfectly). Reply with JSON only, in the form {"score": <number from {lo} to {hi}>}.')
NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
JSON_OBJECT = re.compile(r"\{[^{}]*\}")


def parse_score(reply, lo, hi):
    """The score in a reply: the "score" of the first JSON object in it that has one, else the
    first number in the text; None when there is none or it lies outside [lo, hi].

    >>> parse_score('```json\\n{"score": 7.5}\\n```', 0, 10)
    7.5
    >>> parse_score("I'd say 8/10.", 0, 10)
    8.0
    >>> parse_score("I cannot rate this image.", 0, 10) is None
    True
    """
    reply = re.sub(r"<think>.*?</think>", "", reply, flags=re.S)  # a reasoning model's thoughts
    value = None
    for m in JSON_OBJECT.finditer(reply):
        try:
            obj = json.loads(m.group())
        except ValueError:
            continue
        if isinstance(obj, dict) and "score" in obj:
            value = obj["score"]
            break
    if value is None:
        m = NUMBER.search(reply)
        value = m and m.group()
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if lo <= value <= hi else None  # NaN fails both comparisons


def text_of_content(content):
    """A message's text: a string, or the text parts of a list of parts."""
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or ""


def add_args(ap):
    env = os.environ.get
    ap.add_argument("--base-url", default=env("STEERDIFF_VLM_URL", "http://127.0.0.1:8080/v1"),
                    help="the API's base URL, up to /v1 [$STEERDIFF_VLM_URL] (default %(default)s)")
    ap.add_argument("--model", default=env("STEERDIFF_VLM_MODEL", "default"),
                    help="the model name the server serves [$STEERDIFF_VLM_MODEL] (default %(default)r)")
    ap.add_argument("--api-key", default=env("STEERDIFF_VLM_API_KEY"),
                    help="sent as 'Authorization: Bearer KEY' [$STEERDIFF_VLM_API_KEY] (default: none)")
    ap.add_argument("--timeout", type=float, default=float(env("STEERDIFF_VLM_TIMEOUT", "60")),
                    help="seconds per chat request [$STEERDIFF_VLM_TIMEOUT] (default %(default)s); keep "
                         "steerdiff's --plugin-timeout above batch size × this")
    ap.add_argument("--question", default=env("STEERDIFF_VLM_QUESTION", QUESTION),
                    help="the question; {prompt}, {lo} and {hi} are replaced [$STEERDIFF_VLM_QUESTION]")
    ap.add_argument("--range", default="0,10", metavar="LO,HI",
                    help="the scale the question states; replies outside it score null (default %(default)s)")
    ap.add_argument("--max-tokens", type=int, default=256, help="reply length limit (default %(default)s)")
    ap.add_argument("--temperature", type=float, default=0.0,
                    help="sampling temperature (default 0: the plugin announces itself deterministic)")


def scale(args):
    """(lo, hi) of --range."""
    lo, hi = (float(x) for x in args.range.split(","))
    return lo, hi


def describe(args):
    return {"score_range": list(scale(args)), "deterministic": args.temperature == 0}


def load(args):
    lo, hi = scale(args)
    url = args.base_url.rstrip("/") + "/chat/completions"
    headers = {"content-type": "application/json"}
    if args.api_key:
        headers["authorization"] = f"Bearer {args.api_key}"
    loopback = urllib.parse.urlsplit(url).hostname in ("127.0.0.1", "localhost", "::1")
    opener = urllib.request.build_opener(*([urllib.request.ProxyHandler({})] if loopback else []))

    def question(prompt):
        q = args.question.replace("{prompt}", prompt)
        return q.replace("{lo}", f"{lo:g}").replace("{hi}", f"{hi:g}")

    def ask(png, prompt):
        body = {"model": args.model, "temperature": args.temperature, "max_tokens": args.max_tokens,
                "messages": [{"role": "user", "content": [
                    {"type": "text", "text": question(prompt)},
                    {"type": "image_url", "image_url": {
                        "url": "data:image/png;base64," + base64.b64encode(png).decode()}}]}]}
        request = urllib.request.Request(url, json.dumps(body).encode(), headers)
        try:
            with opener.open(request, timeout=args.timeout) as r:
                answer = json.load(r)
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"{url} answered HTTP {e.code}: {e.read(300).decode(errors='replace')}")
        except OSError as e:  # URLError, refused, timed out
            raise RuntimeError(f"cannot reach {url}: {getattr(e, 'reason', e)}")
        return parse_score(text_of_content(answer["choices"][0]["message"].get("content")), lo, hi)

    def scores(pngs, prompts):
        return [ask(png, prompt) for png, prompt in zip(pngs, prompts)]

    return scores


if __name__ == "__main__":
    zc.main("vlm-judge", load, __doc__, add_args, torch=False, batch_size=4, encodings=("png",),
            decode=lambda item: item.data, describe=describe)
