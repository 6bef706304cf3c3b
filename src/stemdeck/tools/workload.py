"""The reference workload every benchmark and `tune` runs: sixteen stems,
four per deck A-D, each a 30 s stereo source, looping at rate 1.05 (tempo
126 on a base of 120) through the interpolating resampler; every deck's EQ
at non-unity gains; crossfader at centre; master limiter on.

Control thread: it builds samples and posts commands.
"""

from __future__ import annotations

import numpy as np

from stemdeck.engine.commands import DECK_BUFFER_RANGES, DECKS
from stemdeck.engine.dsp.crossfade import crossfader_gains
from stemdeck.engine.dsp.eq import knob_to_gain

DECK_BASE_IDS = tuple(lo for lo, _hi in DECK_BUFFER_RANGES)
MESSAGES_PER_SECOND = 500               # the reference command stream (knob_message)
EQ_KNOBS = (40.0, 60.0, 45.0)          # low, mid, high: all off unity


def reference_sources(stems: int = 16, seconds: float = 30.0, sample_rate: int = 44100,
                      seed: int = 0) -> list[np.ndarray]:
    """Band-limited noise plus a tone per stem: broadband material that keeps
    every EQ band and the interpolator busy. Shared between stems when there
    are more than sixteen, so 256-stem runs do not need gigabytes."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    out = []
    for k in range(min(stems, 16)):
        noise = rng.standard_normal((n, 2)).astype(np.float32) * 0.05
        tone = (0.05 * np.sin(2 * np.pi * (55.0 * (k + 1)) * t)).astype(np.float32)
        out.append(np.ascontiguousarray(noise + tone[:, None]))
    return out


def build_reference_workload(engine, stems: int = 16, seconds: float = 30.0, rate: float = 1.05,
                             seed: int = 0) -> list[int]:
    """Load and start the workload on ``engine``; returns the buffer IDs playing."""
    sources = reference_sources(stems, seconds, engine.sample_rate, seed)
    slots = [engine.add_sample(s) for s in sources]
    ids = []
    for k in range(stems):
        deck = k % DECKS
        bid = DECK_BASE_IDS[deck] + k // DECKS
        engine.bind(bid, slots[k % len(slots)], deck)
        engine.play(bid, rate=rate, volume=0.5, loop=True, start=(k * 0.037) % 1.0)
        ids.append(bid)
    for deck in range(DECKS):
        for band, knob in enumerate(EQ_KNOBS):
            engine.set_deck_eq(deck, band, knob_to_gain(knob))
    engine.set_crossfader_gains(*crossfader_gains(0.5, "constant-power"))
    engine.set_limiter(True)
    return ids


def knob_message(index: int, rng) -> tuple[str, list]:
    """The ``index``-th message of the reference command stream (what a mix
    script sends while it plays): 60 % EQ knobs kept off flat, 20 % deck
    levels, 20 % crossfade levels near the centre. Benchmarks and
    ``tune --with-load`` send it at MESSAGES_PER_SECOND."""
    kind = index % 10
    if kind < 6:
        return "/deck_eq", [int(rng.integers(0, DECKS)), int(rng.integers(0, 3)), float(rng.uniform(35, 65))]
    if kind < 8:
        return "/deck_levels", [float(v) for v in rng.uniform(0.8, 1.0, DECKS)]
    return "/crossfade_levels", [float(rng.uniform(0.45, 0.55)), 1.0]
