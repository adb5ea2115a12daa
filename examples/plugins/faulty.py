#!/usr/bin/env python3
"""A deliberately broken plugin for steerdiff's fault tests.

    faulty.py MODE [MARKER]

MODE: exit-at-start | crash (every score request) | crash-once (the first score request of
the first process) | hang | garbage | wrong-count | nan. MARKER is ignored (tests use it to find
leftover processes). Otherwise it scores brightness.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import steerdiff_plugin as sp  # noqa: E402
from brightness import brightness  # noqa: E402

mode = sys.argv[1]
flag = os.environ.get("FAULTY_FLAG_FILE", "")
if mode == "exit-at-start":
    print("faulty: cannot load my weights", file=sys.stderr, flush=True)
    sys.exit(3)

stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
desc = sp.describe("faulty", encodings=["f32"])
while True:
    msg = sp.read_message(stdin)
    if msg is None or msg[0].get("op") == "shutdown":
        break
    header, payload = msg
    if header["op"] == "describe":
        sp.write_message(stdout, desc)
        continue
    if mode == "crash" or (mode == "crash-once" and flag and not os.path.exists(flag)):
        if flag:
            open(flag, "w").close()
        print("faulty: segfault (simulated)", file=sys.stderr, flush=True)
        os._exit(7)
    if mode == "hang":
        time.sleep(3600)
    if mode == "garbage":
        stdout.write(b"Traceback (most recent call last): oops\n")
        stdout.flush()
        continue
    items = [sp.Item(h, payload, header["encoding"], header["shape"]) for h in header["items"]]
    scores = brightness(items)
    if mode == "wrong-count":
        scores.pop(next(iter(scores)))
    if mode == "nan":
        scores[next(iter(scores))] = float("nan")
    stdout.write(json.dumps({"scores": scores}).encode() + b"\n")
    stdout.flush()
