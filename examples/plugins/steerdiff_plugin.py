"""A small helper for writing steerdiff reward plugins in Python (standard library only).

Protocol ``steerdiff-reward/1`` (docs/reward-plugins.md): every message is one line of JSON
(the header) followed by ``payload_bytes`` bytes of binary payload. The engine sends
``describe`` once, then ``score`` requests; answer each ``score`` with
``{"scores": {item_id: score_or_null}}``, one entry per requested id, in any order.

Write a plugin as::

    import steerdiff_plugin as sp

    def score(items):            # items: list of sp.Item
        return {it.id: sum(it.values()) / len(it.values()) for it in items}

    sp.serve_stdio(sp.describe("brightness", encodings=["f32"]), score)

or serve the same over HTTP on loopback with ``sp.serve_http(description, score, port)``.
"""

import array
import http.server
import json
import struct
import sys
import zlib

PROTOCOL = "steerdiff-reward/1"


def describe(name, version="1.0", inputs=("pixels",), mode="pointwise", batch_size=16,
             score_range=None, direction="maximize", deterministic=True,
             encodings=("f32", "rgb8", "png")):
    """The answer to ``describe``."""
    return {
        "protocol": PROTOCOL,
        "name": name,
        "version": version,
        "inputs": list(inputs),
        "mode": mode,
        "batch_size": batch_size,
        "range": score_range,
        "direction": direction,
        "deterministic": deterministic,
        "encodings": list(encodings),
    }


class Item:
    """One item of a ``score`` request: its id, class, prompt, noise level and pixels."""

    def __init__(self, header, payload, encoding, shape):
        self.id = header["id"]
        self.cls = header.get("class")
        self.prompt = header.get("prompt")
        self.sigma = header.get("sigma", 0.0)
        self.encoding = encoding
        self.shape = shape
        start = header["offset"]
        self.data = payload[start:start + header["bytes"]]

    def values(self):
        """The pixels as floats in [-1, 1]: channel-major (C, H, W) for f32; H, W, 3 otherwise."""
        if self.encoding == "f32":
            a = array.array("f")
            a.frombytes(self.data)
            if sys.byteorder != "little":
                a.byteswap()
            return a
        rgb = self.data if self.encoding == "rgb8" else decode_png(self.data)
        return [b / 127.5 - 1.0 for b in rgb]


def decode_png(data):
    """The RGB8 bytes of a non-interlaced 8-bit RGB PNG (as steerdiff writes them)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            if depth != 8 or colour != 2:
                raise ValueError("only 8-bit RGB PNGs are supported")
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw, stride, out = zlib.decompress(idat), width * 3, bytearray()
    prev = bytearray(stride)
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - 3] if i >= 3 else 0
            b, c = prev[i], (prev[i - 3] if i >= 3 else 0)
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        out += line
        prev = line
    return bytes(out)


def read_message(stream):
    """(header, payload) of the next message, or None at end of input."""
    line = stream.readline()
    if not line:
        return None
    header = json.loads(line)
    n = header.get("payload_bytes", 0)
    payload = stream.read(n) if n else b""
    return header, payload


def write_message(stream, header):
    """Writes a payload-less answer."""
    stream.write(json.dumps(header).encode() + b"\n")
    stream.flush()


def answer(description, score, header, payload):
    """The answer to one request."""
    op = header.get("op")
    if op == "describe":
        return description
    if op == "score":
        items = [Item(h, payload, header["encoding"], header["shape"]) for h in header["items"]]
        try:
            scores = score(items)
        except Exception as e:  # report, do not die: the engine decides what to do
            return {"request_id": header.get("request_id"), "error": f"{type(e).__name__}: {e}"}
        return {"request_id": header.get("request_id"), "scores": scores}
    return {"error": f"unknown op {op!r}"}


def serve_stdio(description, score):
    """Answers requests on stdin/stdout until ``shutdown`` or end of input."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        msg = read_message(stdin)
        if msg is None or msg[0].get("op") == "shutdown":
            return
        write_message(stdout, answer(description, score, *msg))


def serve_http(description, score, port=0, host="127.0.0.1"):
    """Serves POST /describe and POST /score on host:port (loopback by default); prints
    ``READY http://HOST:PORT`` on stdout once listening (port 0 picks a free one)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            line, _, payload = body.partition(b"\n")
            out = json.dumps(answer(description, score, json.loads(line), payload)).encode() + b"\n"
            self.send_response(200)
            self.send_header("content-type", "application/x-steerdiff-reward")
            self.send_header("content-length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer((host, port), Handler)
    print(f"READY http://{host}:{server.server_address[1]}", flush=True)
    server.serve_forever()
