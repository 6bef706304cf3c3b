"""The DJ isolator EQ: three bands split by Linkwitz-Riley (LR4) crossovers.

Design functions run on the control thread; ``process_deck`` is compiled into
the render kernel (audio thread).

Per channel, six biquads (TDF-II, float64 state)::

    low_raw = LP250(LP250(x))                     LR4 low-pass
    hp      = AP250(x) - low_raw                  LR4 high-pass: LP^2 + HP^2 = AP
    mid     = LP2500(LP2500(hp))
    y = AP2500(gL*low_raw + gH*hp) + (gM - gH)*mid

which is ``gL*low + gM*mid + gH*high`` with ``low = AP2500(low_raw)`` (the
low band phase-aligned with mid + high) and ``high = AP2500(hp) - mid``:
the all-pass is linear, so one AP2500 on the weighted sum does the work of
two. At unity gains ``y = AP2500(AP250(x))``: an all-pass, so the response
is flat (the identity LP^2 + HP^2 = AP holds exactly for Butterworth Q =
1/sqrt(2) sections under the bilinear transform). Killing a band leaves the
other two, whose LR4 skirts fall 24 dB/octave: more than 30 dB down at each
band's centre.

The state is one flat array (layout.EQ_*): row r, lane l at ``r * 8 + l``,
a lane per deck channel. While no knob is moving, :func:`process_decks`
runs all eight lanes in one loop that LLVM turns into SIMD (constant row
offsets let it prove the rows apart; ``stemdeck bench``'s 1024-frame
block went from 133 to 102 us). A moving knob, or a single live deck,
takes the per-deck, per-sample-ramped :func:`process_deck` on the same
state, so the two paths hand over seamlessly.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from stemdeck.engine import kernel_cache  # noqa: F401  (before any kernel compiles: where they are cached)
from stemdeck.engine.commands import MAX_EQ_GAIN
from stemdeck.engine.layout import EQ_KH, EQ_KL, EQ_KM, EQ_LANES, EQ_X, EQ_Y

LOW_CROSSOVER_HZ = 250.0
HIGH_CROSSOVER_HZ = 2500.0
MAX_GAIN = MAX_EQ_GAIN     # +6 dB at knob 100 %
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
def _bq(c, x, z1, z2):
    """One TDF-II biquad step on scalar state: returns (y, z1, z2)."""
    y = c[0] * x + z1
    return y, c[1] * x - c[3] * y + z2, c[2] * x - c[4] * y


@njit(inline="always")
def _ramp(cur, tgt, step, rem):
    if rem > 0.0:
        cur += step
        rem -= 1.0
        if rem <= 0.0:
            cur = tgt
    return cur, rem


@njit(nogil=True, cache=True, error_model="numpy")
def bypass_deck(ramps, rows, bus, out, off, n):
    """The deck without the isolator (level and crossfader only)."""
    r0, r1 = rows[0], rows[1]
    lv, lv_t, lv_s, lv_r = ramps[r0, 0], ramps[r0, 1], ramps[r0, 2], ramps[r0, 3]
    xf, xf_t, xf_s, xf_r = ramps[r1, 0], ramps[r1, 1], ramps[r1, 2], ramps[r1, 3]
    for i in range(off, off + n):
        lv, lv_r = _ramp(lv, lv_t, lv_s, lv_r)
        xf, xf_r = _ramp(xf, xf_t, xf_s, xf_r)
        g = lv * xf
        out[i, 0] += np.float32(g * float(bus[i, 0]))
        out[i, 1] += np.float32(g * float(bus[i, 1]))
    ramps[r0, 0], ramps[r0, 3] = lv, lv_r
    ramps[r1, 0], ramps[r1, 3] = xf, xf_r


@njit(nogil=True, cache=True, error_model="numpy", fastmath={"contract"})
def process_deck(coefs, z, d, ramps, rows, bus, out, off, n):
    """Mix ``n`` frames of deck ``d``'s bus through the isolator into ``out``,
    ramping its gains per sample. ``z`` is the flat EQ state (lanes 2d and
    2d + 1 are this deck's); ``rows`` the ramp rows of (level, crossfader,
    low, mid, high). The state and ramps live in locals for the loop: kept
    in arrays, every store to ``out`` would force them back through memory
    (numba cannot prove the arrays do not alias), which made this loop
    three times slower.
    """
    W = EQ_LANES
    lp_lo = (coefs[0, 0], coefs[0, 1], coefs[0, 2], coefs[0, 3], coefs[0, 4])
    ap_lo = (coefs[1, 0], coefs[1, 1], coefs[1, 2], coefs[1, 3], coefs[1, 4])
    lp_hi = (coefs[2, 0], coefs[2, 1], coefs[2, 2], coefs[2, 3], coefs[2, 4])
    ap_hi = (coefs[3, 0], coefs[3, 1], coefs[3, 2], coefs[3, 3], coefs[3, 4])
    L, R = 2 * d, 2 * d + 1
    a0, a1, ra0, ra1 = z[0 * W + L], z[1 * W + L], z[0 * W + R], z[1 * W + R]
    b0, b1, rb0, rb1 = z[2 * W + L], z[3 * W + L], z[2 * W + R], z[3 * W + R]
    c0, c1, rc0, rc1 = z[4 * W + L], z[5 * W + L], z[4 * W + R], z[5 * W + R]
    d0, d1, rd0, rd1 = z[6 * W + L], z[7 * W + L], z[6 * W + R], z[7 * W + R]
    e0, e1, re0, re1 = z[8 * W + L], z[9 * W + L], z[8 * W + R], z[9 * W + R]
    f0, f1, rf0, rf1 = z[10 * W + L], z[11 * W + L], z[10 * W + R], z[11 * W + R]
    r0, r1, r2, r3, r4 = rows[0], rows[1], rows[2], rows[3], rows[4]
    lv, lv_t, lv_s, lv_r = ramps[r0, 0], ramps[r0, 1], ramps[r0, 2], ramps[r0, 3]
    xf, xf_t, xf_s, xf_r = ramps[r1, 0], ramps[r1, 1], ramps[r1, 2], ramps[r1, 3]
    gl, gl_t, gl_s, gl_r = ramps[r2, 0], ramps[r2, 1], ramps[r2, 2], ramps[r2, 3]
    gm, gm_t, gm_s, gm_r = ramps[r3, 0], ramps[r3, 1], ramps[r3, 2], ramps[r3, 3]
    gh, gh_t, gh_s, gh_r = ramps[r4, 0], ramps[r4, 1], ramps[r4, 2], ramps[r4, 3]
    for i in range(off, off + n):
        lv, lv_r = _ramp(lv, lv_t, lv_s, lv_r)
        xf, xf_r = _ramp(xf, xf_t, xf_s, xf_r)
        gl, gl_r = _ramp(gl, gl_t, gl_s, gl_r)
        gm, gm_r = _ramp(gm, gm_t, gm_s, gm_r)
        gh, gh_r = _ramp(gh, gh_t, gh_s, gh_r)
        g = lv * xf
        kl, km, kh = g * gl, g * (gm - gh), g * gh
        # left
        x = float(bus[i, 0])
        t, a0, a1 = _bq(lp_lo, x, a0, a1)
        low_raw, b0, b1 = _bq(lp_lo, t, b0, b1)
        ap, c0, c1 = _bq(ap_lo, x, c0, c1)
        hp = ap - low_raw
        t, d0, d1 = _bq(lp_hi, hp, d0, d1)
        mid, e0, e1 = _bq(lp_hi, t, e0, e1)
        y, f0, f1 = _bq(ap_hi, kl * low_raw + kh * hp, f0, f1)
        out[i, 0] += np.float32(y + km * mid)
        # right
        x = float(bus[i, 1])
        t, ra0, ra1 = _bq(lp_lo, x, ra0, ra1)
        low_raw, rb0, rb1 = _bq(lp_lo, t, rb0, rb1)
        ap, rc0, rc1 = _bq(ap_lo, x, rc0, rc1)
        hp = ap - low_raw
        t, rd0, rd1 = _bq(lp_hi, hp, rd0, rd1)
        mid, re0, re1 = _bq(lp_hi, t, re0, re1)
        y, rf0, rf1 = _bq(ap_hi, kl * low_raw + kh * hp, rf0, rf1)
        out[i, 1] += np.float32(y + km * mid)
    z[0 * W + L], z[1 * W + L], z[0 * W + R], z[1 * W + R] = a0, a1, ra0, ra1
    z[2 * W + L], z[3 * W + L], z[2 * W + R], z[3 * W + R] = b0, b1, rb0, rb1
    z[4 * W + L], z[5 * W + L], z[4 * W + R], z[5 * W + R] = c0, c1, rc0, rc1
    z[6 * W + L], z[7 * W + L], z[6 * W + R], z[7 * W + R] = d0, d1, rd0, rd1
    z[8 * W + L], z[9 * W + L], z[8 * W + R], z[9 * W + R] = e0, e1, re0, re1
    z[10 * W + L], z[11 * W + L], z[10 * W + R], z[11 * W + R] = f0, f1, rf0, rf1
    ramps[r0, 0], ramps[r0, 3] = lv, lv_r
    ramps[r1, 0], ramps[r1, 3] = xf, xf_r
    ramps[r2, 0], ramps[r2, 3] = gl, gl_r
    ramps[r3, 0], ramps[r3, 3] = gm, gm_r
    ramps[r4, 0], ramps[r4, 3] = gh, gh_r


@njit(nogil=True, cache=True, error_model="numpy", fastmath={"contract"})
def process_decks(coefs, z, bus, out, off, n):
    """All four decks through their isolators into ``out``, at the constant
    lane gains in rows EQ_KL/KM/KH of ``z`` (no knob moving). The lane loop
    has a constant trip count and every access is ``z[ROW * 8 + lane]``
    with constant rows, so LLVM vectorises it across the lanes."""
    W = EQ_LANES
    b0a, b1a, b2a, a1a, a2a = coefs[0, 0], coefs[0, 1], coefs[0, 2], coefs[0, 3], coefs[0, 4]
    b0b, b1b, b2b, a1b, a2b = coefs[1, 0], coefs[1, 1], coefs[1, 2], coefs[1, 3], coefs[1, 4]
    b0c, b1c, b2c, a1c, a2c = coefs[2, 0], coefs[2, 1], coefs[2, 2], coefs[2, 3], coefs[2, 4]
    b0d, b1d, b2d, a1d, a2d = coefs[3, 0], coefs[3, 1], coefs[3, 2], coefs[3, 3], coefs[3, 4]
    for i in range(off, off + n):
        for d in range(W // 2):
            z[EQ_X * W + 2 * d] = bus[d, i, 0]
            z[EQ_X * W + 2 * d + 1] = bus[d, i, 1]
        for k in range(W):
            x = z[EQ_X * W + k]
            t = b0a * x + z[0 * W + k]                      # LP250
            z[0 * W + k] = b1a * x - a1a * t + z[1 * W + k]
            z[1 * W + k] = b2a * x - a2a * t
            low_raw = b0a * t + z[2 * W + k]                # LP250
            z[2 * W + k] = b1a * t - a1a * low_raw + z[3 * W + k]
            z[3 * W + k] = b2a * t - a2a * low_raw
            ap = b0b * x + z[4 * W + k]                     # AP250
            z[4 * W + k] = b1b * x - a1b * ap + z[5 * W + k]
            z[5 * W + k] = b2b * x - a2b * ap
            hp = ap - low_raw
            t = b0c * hp + z[6 * W + k]                     # LP2500
            z[6 * W + k] = b1c * hp - a1c * t + z[7 * W + k]
            z[7 * W + k] = b2c * hp - a2c * t
            mid = b0c * t + z[8 * W + k]                    # LP2500
            z[8 * W + k] = b1c * t - a1c * mid + z[9 * W + k]
            z[9 * W + k] = b2c * t - a2c * mid
            u = z[EQ_KL * W + k] * low_raw + z[EQ_KH * W + k] * hp
            y = b0d * u + z[10 * W + k]                     # AP2500
            z[10 * W + k] = b1d * u - a1d * y + z[11 * W + k]
            z[11 * W + k] = b2d * u - a2d * y
            z[EQ_Y * W + k] = y + z[EQ_KM * W + k] * mid
        out[i, 0] += np.float32(z[EQ_Y * W + 0] + z[EQ_Y * W + 2] + z[EQ_Y * W + 4] + z[EQ_Y * W + 6])
        out[i, 1] += np.float32(z[EQ_Y * W + 1] + z[EQ_Y * W + 3] + z[EQ_Y * W + 5] + z[EQ_Y * W + 7])


@njit(nogil=True, cache=True, error_model="numpy")
def rest_if_quiet(z, d):
    """If deck ``d``'s filters have rung out (every state below 1e-9), zero
    them, so no denormals build up, and return True: the deck can be skipped."""
    for r in range(EQ_KL):
        if abs(z[r * EQ_LANES + 2 * d]) > 1e-9 or abs(z[r * EQ_LANES + 2 * d + 1]) > 1e-9:
            return False
    for r in range(EQ_KL):
        z[r * EQ_LANES + 2 * d] = 0.0
        z[r * EQ_LANES + 2 * d + 1] = 0.0
    return True
