#!/usr/bin/env python3
"""Brightness as a stdio plugin:  steerdiff generate --guidance fk \
    --reward 'stdio:python3 examples/plugins/brightness_stdio.py' ..."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import steerdiff_plugin as sp  # noqa: E402
from brightness import brightness  # noqa: E402

sp.serve_stdio(sp.describe("brightness-plugin", score_range=[-1, 1]), brightness)
