"""Brightness, the mean pixel value: the plugin twin of steerdiff's built-in `brightness`.

Summed left to right in double precision over the f32 pixels, exactly as the Rust reward
does, so both steer to the same particles.
"""


def brightness(items):
    out = {}
    for it in items:
        v = it.values()
        s = 0.0
        for x in v:
            s += x
        out[it.id] = s / len(v)
    return out
