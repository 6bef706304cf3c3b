"""The DJ isolator EQ: three bands split by Linkwitz-Riley (LR4) crossovers.

Design functions run on the control thread; ``process_deck`` is compiled into
the render kernel (audio thread).

Per channel, seven biquads (TDF-II, float64 state)::

    low_raw = LP250(LP250(x))                     LR4 low-pass
    hp      = AP250(x) - low_raw                  LR4 high-pass: LP^2 + HP^2 = AP
    mid     = LP2500(LP2500(hp))
    high    = AP2500(hp) - mid
    low     = AP2500(low_raw)                     phase-align low with mid + high
    y = gL*low + gM*mid + gH*high

At unity gains ``y = AP2500(AP250(x))``: an all-pass, so the response is flat
(the identity LP^2 + HP^2 = AP holds exactly for Butterworth Q = 1/sqrt(2)
sections under the bilinear transform). Killing a band leaves the other two,
whose LR4 skirts fall 24 dB/octave: more than 30 dB down at each band's centre.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

LOW_CROSSOVER_HZ = 250.0
HIGH_CROSSOVER_HZ = 2500.0
MAX_GAIN = 2.0             # +6 dB at knob 100 %
BOOST_DB = 20 * math.log10(MAX_GAIN)

# biquad rows in the coefficient table
BQ_LP_LO, BQ_AP_LO, BQ_LP_HI, BQ_AP_HI = 0, 1, 2, 3


def _rbj(kind: str, f0: float, fs: float, q: float = 1 / math.sqrt(2)) -> list[float]:
    """Robert Bristow-Johnson cookbook biquad, normalised: b0 b1 b2 a1 a2."""
    w0 = 2 * math.pi * f0 / fs
    cw, alpha = math.cos(w0), math.sin(w0) / (2 * q)
    a0 = 1 + alpha
    if kind == "lowpass":
        b = [(1 - cw) / 2, 1 - cw, (1 - cw) / 2]
    elif kind == "allpass":
        b = [1 - alpha, -2 * cw, 1 + alpha]
    else:
        raise ValueError(kind)
    a = [-2 * cw, 1 - alpha]
    return [b[0] / a0, b[1] / a0, b[2] / a0, a[0] / a0, a[1] / a0]


def isolator_coefficients(sample_rate: float) -> np.ndarray:
    """The coefficient table (7 x 5) for ``process_deck``; rows 4..6 unused spares."""
    c = np.zeros((7, 5))
    c[BQ_LP_LO] = _rbj("lowpass", LOW_CROSSOVER_HZ, sample_rate)
    c[BQ_AP_LO] = _rbj("allpass", LOW_CROSSOVER_HZ, sample_rate)
    c[BQ_LP_HI] = _rbj("lowpass", HIGH_CROSSOVER_HZ, sample_rate)
    c[BQ_AP_HI] = _rbj("allpass", HIGH_CROSSOVER_HZ, sample_rate)
    return c


def knob_to_gain(percent: float) -> float:
    """DJ knob (0-100 %) to linear band gain: 0 % kills the band, 50 % is 0 dB,
    100 % is +6 dB. Below 50 % the gain is (p/50)^2 (-12 dB at 25 %, a smooth
    fall to silence); above, dB rise linearly to +6 dB."""
    p = float(percent)
    if not 0.0 <= p <= 100.0:
        raise ValueError(f"EQ knob {percent!r} % out of range 0..100")
    if p <= 50.0:
        return (p / 50.0) ** 2
    return 10 ** ((p - 50.0) / 50.0 * BOOST_DB / 20)


def gain_to_knob(gain: float) -> float:
    """Inverse of :func:`knob_to_gain` (for status replies)."""
    if gain <= 1.0:
        return 50.0 * math.sqrt(max(gain, 0.0))
    return 50.0 + 50.0 * (20 * math.log10(gain)) / BOOST_DB


@njit(inline="always")
def _bq(c, row, x, st, k):
    """One TDF-II biquad step; st[k] = (z1, z2)."""
    y = c[row, 0] * x + st[k, 0]
    st[k, 0] = c[row, 1] * x - c[row, 3] * y + st[k, 1]
    st[k, 1] = c[row, 2] * x - c[row, 4] * y
    return y


@njit(inline="always")
def split3(c, x, st):
    """One sample of one channel through the crossover: (low, mid, high).
    ``st`` is this channel's (7, 2) state."""
    low_raw = _bq(c, BQ_LP_LO, _bq(c, BQ_LP_LO, x, st, 0), st, 1)
    hp = _bq(c, BQ_AP_LO, x, st, 2) - low_raw
    mid = _bq(c, BQ_LP_HI, _bq(c, BQ_LP_HI, hp, st, 3), st, 4)
    high = _bq(c, BQ_AP_HI, hp, st, 5) - mid
    low = _bq(c, BQ_AP_HI, low_raw, st, 6)
    return low, mid, high
