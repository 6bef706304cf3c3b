"""Crossfader curves: position 0 (all deck A) .. 1 (all deck B) -> (gain A, gain B).

Control thread: the engine only ramps the two gains it is given.
"""

from __future__ import annotations

import math

CURVES = ("linear", "constant-power", "cut")


def crossfader_gains(position: float, curve: str = "constant-power") -> tuple[float, float]:
    """``linear``: gains sum to 1 (-6 dB each at centre). ``constant-power``:
    cos/sin, -3 dB each at centre, constant loudness for uncorrelated material.
    ``cut`` (scratch): both decks at full level except within 5 % of each end,
    where the far deck is cut."""
    x = float(position)
    if not 0.0 <= x <= 1.0 or math.isnan(x):
        raise ValueError(f"crossfader position {position!r} out of range 0..1")
    if curve == "linear":
        return 1.0 - x, x
    if curve == "constant-power":
        return math.cos(x * math.pi / 2), math.sin(x * math.pi / 2)
    if curve == "cut":
        edge = 0.05
        a = 1.0 if x <= 1.0 - edge else (1.0 - x) / edge
        b = 1.0 if x >= edge else x / edge
        return a, b
    raise ValueError(f"crossfader curve {curve!r}: use one of {', '.join(CURVES)}")
