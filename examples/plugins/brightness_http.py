#!/usr/bin/env python3
"""Brightness as an HTTP plugin on loopback:
    python3 examples/plugins/brightness_http.py --port 8765 &
    steerdiff generate --guidance fk --reward http://127.0.0.1:8765 ..."""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import steerdiff_plugin as sp  # noqa: E402
from brightness import brightness  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, default=8765, help="0 picks a free port")
ap.add_argument("--host", default="127.0.0.1")
args = ap.parse_args()
sp.serve_http(sp.describe("brightness-plugin", score_range=[-1, 1]), brightness, args.port, args.host)
