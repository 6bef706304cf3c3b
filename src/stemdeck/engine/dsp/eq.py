"""The DJ isolator EQ: three bands split by Linkwitz-Riley (LR4) crossovers.

Design functions run on the control thread; ``process_deck`` is compiled into
the render kernel (audio thread).

Per channel, seven biquads (TDF-II, float64 state; each row of the state
array is one biquad's (z1, z2) for left and right)::

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
def process_deck(coefs, state, ramps, rows, bus, out, off, n):
    """Mix ``n`` frames of one deck bus through the isolator into ``out``.

    ``state`` is the deck's (7, 2, 2) filter state; ``rows`` the ramp rows of
    (level, crossfader, low, mid, high) gains. The state and ramps live in
    locals for the loop: kept in arrays, every store to ``out`` would force
    them back through memory (numba cannot prove the arrays do not alias),
    which made this loop three times slower.
    """
    lp_lo = (coefs[0, 0], coefs[0, 1], coefs[0, 2], coefs[0, 3], coefs[0, 4])
    ap_lo = (coefs[1, 0], coefs[1, 1], coefs[1, 2], coefs[1, 3], coefs[1, 4])
    lp_hi = (coefs[2, 0], coefs[2, 1], coefs[2, 2], coefs[2, 3], coefs[2, 4])
    ap_hi = (coefs[3, 0], coefs[3, 1], coefs[3, 2], coefs[3, 3], coefs[3, 4])
    a0, a1 = state[0, 0, 0], state[0, 0, 1]
    b0, b1 = state[1, 0, 0], state[1, 0, 1]
    c0, c1 = state[2, 0, 0], state[2, 0, 1]
    d0, d1 = state[3, 0, 0], state[3, 0, 1]
    e0, e1 = state[4, 0, 0], state[4, 0, 1]
    f0, f1 = state[5, 0, 0], state[5, 0, 1]
    h0, h1 = state[6, 0, 0], state[6, 0, 1]
    ra0, ra1 = state[0, 1, 0], state[0, 1, 1]
    rb0, rb1 = state[1, 1, 0], state[1, 1, 1]
    rc0, rc1 = state[2, 1, 0], state[2, 1, 1]
    rd0, rd1 = state[3, 1, 0], state[3, 1, 1]
    re0, re1 = state[4, 1, 0], state[4, 1, 1]
    rf0, rf1 = state[5, 1, 0], state[5, 1, 1]
    rh0, rh1 = state[6, 1, 0], state[6, 1, 1]
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
        # left
        x = float(bus[i, 0])
        t, a0, a1 = _bq(lp_lo, x, a0, a1)
        low_raw, b0, b1 = _bq(lp_lo, t, b0, b1)
        ap, c0, c1 = _bq(ap_lo, x, c0, c1)
        hp = ap - low_raw
        t, d0, d1 = _bq(lp_hi, hp, d0, d1)
        mid, e0, e1 = _bq(lp_hi, t, e0, e1)
        ap, f0, f1 = _bq(ap_hi, hp, f0, f1)
        low, h0, h1 = _bq(ap_hi, low_raw, h0, h1)
        out[i, 0] += np.float32(g * (gl * low + gm * mid + gh * (ap - mid)))
        # right
        x = float(bus[i, 1])
        t, ra0, ra1 = _bq(lp_lo, x, ra0, ra1)
        low_raw, rb0, rb1 = _bq(lp_lo, t, rb0, rb1)
        ap, rc0, rc1 = _bq(ap_lo, x, rc0, rc1)
        hp = ap - low_raw
        t, rd0, rd1 = _bq(lp_hi, hp, rd0, rd1)
        mid, re0, re1 = _bq(lp_hi, t, re0, re1)
        ap, rf0, rf1 = _bq(ap_hi, hp, rf0, rf1)
        low, rh0, rh1 = _bq(ap_hi, low_raw, rh0, rh1)
        out[i, 1] += np.float32(g * (gl * low + gm * mid + gh * (ap - mid)))
    state[0, 0, 0], state[0, 0, 1] = a0, a1
    state[1, 0, 0], state[1, 0, 1] = b0, b1
    state[2, 0, 0], state[2, 0, 1] = c0, c1
    state[3, 0, 0], state[3, 0, 1] = d0, d1
    state[4, 0, 0], state[4, 0, 1] = e0, e1
    state[5, 0, 0], state[5, 0, 1] = f0, f1
    state[6, 0, 0], state[6, 0, 1] = h0, h1
    state[0, 1, 0], state[0, 1, 1] = ra0, ra1
    state[1, 1, 0], state[1, 1, 1] = rb0, rb1
    state[2, 1, 0], state[2, 1, 1] = rc0, rc1
    state[3, 1, 0], state[3, 1, 1] = rd0, rd1
    state[4, 1, 0], state[4, 1, 1] = re0, re1
    state[5, 1, 0], state[5, 1, 1] = rf0, rf1
    state[6, 1, 0], state[6, 1, 1] = rh0, rh1
    ramps[r0, 0], ramps[r0, 3] = lv, lv_r
    ramps[r1, 0], ramps[r1, 3] = xf, xf_r
    ramps[r2, 0], ramps[r2, 3] = gl, gl_r
    ramps[r3, 0], ramps[r3, 3] = gm, gm_r
    ramps[r4, 0], ramps[r4, 3] = gh, gh_r
