"""Helpers for tests that render the engine offline and measure the samples."""

from __future__ import annotations

import numpy as np

from stemdeck.engine import Engine

SR = 44100


def tone(freq: float, seconds: float, amp: float = 0.5, sr: int = SR, phase: float = 0.0) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    x = (amp * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)
    return np.ascontiguousarray(np.stack([x, x], axis=1))


def dc(level: float, frames: int) -> np.ndarray:
    return np.full((frames, 2), level, np.float32)


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


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def db(ratio: float) -> float:
    return 20 * np.log10(max(ratio, 1e-12))


def peak_hz(x: np.ndarray, sr: int = SR) -> float:
    """Frequency of the strongest bin, refined by parabolic interpolation."""
    w = np.hanning(len(x))
    mag = np.abs(np.fft.rfft(x * w))
    k = int(np.argmax(mag[1:-1])) + 1
    a, b, c = np.log(mag[k - 1:k + 2] + 1e-30)
    k_frac = k + 0.5 * (a - c) / (a - 2 * b + c)
    return k_frac * sr / len(x)
