"""Helpers for tests that render the engine offline (signals.py makes the inputs and measures the output)."""

from __future__ import annotations

import numpy as np

from signals import SR
from stemdeck.engine import Engine


def render(engine: Engine, frames: int, block: int = 256) -> np.ndarray:
    """Render ``frames`` frames in blocks of ``block`` (the last one shorter)."""
    out = np.zeros((frames, 2), np.float32)
    pos = 0
    while pos < frames:
        k = min(block, frames - pos)
        chunk = np.zeros((k, 2), np.float32)
        engine.render(chunk)
        out[pos:pos + k] = chunk
        pos += k
    return out


def loaded(samples: dict[int, np.ndarray], eq: bool = False, limiter: bool = True, **kw) -> Engine:
    """An engine with each buffer ID bound to its sample (deck by ID range).
    The isolator EQ is bypassed unless asked for: it is an all-pass at unity,
    so it would turn exact sample values into its own phase response."""
    e = Engine(kw.pop("sample_rate", SR), **kw)
    e.set_eq_enabled(eq)
    e.set_limiter(limiter)
    for bid, data in samples.items():
        e.bind(bid, e.add_sample(data))
    return e
