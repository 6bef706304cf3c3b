"""Decks to master: per-sample knob ramps, each deck through its isolator EQ
(dsp/eq.py), level and crossfader, then master volume and the limiter.
Audio thread only.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from stemdeck.engine import kernel_cache  # noqa: F401  (before any kernel compiles: where they are cached)
from stemdeck.engine import commands as C
from stemdeck.engine import layout as L
from stemdeck.engine.dsp.eq import bypass_deck, process_deck, process_decks, rest_if_quiet
from stemdeck.engine.state import (JIT, S_BUS, S_COUNTERS, S_EQ_COEFS, S_EQ_STATE, S_LIMITER, S_PARAMS,
                                   S_RAMPS)


@njit(inline="always")
def _step(ramps, r):
    if ramps[r, L.RP_REM] > 0.0:
        ramps[r, L.RP_CUR] += ramps[r, L.RP_STEP]
        ramps[r, L.RP_REM] -= 1.0
        if ramps[r, L.RP_REM] <= 0.0:
            ramps[r, L.RP_CUR] = ramps[r, L.RP_TGT]
    return ramps[r, L.RP_CUR]


@njit(**JIT)
def _skip(ramps, r, n):
    """Advance a ramp by n frames without rendering (a silent deck)."""
    rem = ramps[r, L.RP_REM]
    if rem > 0.0:
        if n >= rem:
            ramps[r, L.RP_CUR] = ramps[r, L.RP_TGT]
            ramps[r, L.RP_REM] = 0.0
        else:
            ramps[r, L.RP_CUR] += ramps[r, L.RP_STEP] * n
            ramps[r, L.RP_REM] = rem - n


@njit(**JIT)
def render_decks(st, out, off, n, active):
    bus = st[S_BUS]
    ramps = st[S_RAMPS]
    coefs = st[S_EQ_COEFS]
    z = st[S_EQ_STATE]
    eq_on = st[S_PARAMS][L.P_EQ_ON] != 0.0
    steady = eq_on
    live = 0
    quiet = 0                            # bit d: deck d has no input and has rung out
    for d in range(C.DECKS):
        if active[d] == 0 and rest_if_quiet(z, d):
            quiet |= 1 << d
        else:
            live += 1
        for r in (L.R_LEVEL + d, L.R_XFADE + d, L.R_EQ + 3 * d, L.R_EQ + 3 * d + 1, L.R_EQ + 3 * d + 2):
            if ramps[r, L.RP_REM] > 0.0:
                steady = False
    if steady and live >= 2:
        # no knob moving: all four decks in one SIMD loop at constant gains
        # (it costs about two decks' worth of the per-deck loop: not worth it for one)
        W = L.EQ_LANES
        for d in range(C.DECKS):
            g = ramps[L.R_LEVEL + d, L.RP_CUR] * ramps[L.R_XFADE + d, L.RP_CUR]
            r_eq = L.R_EQ + 3 * d
            gl, gm, gh = ramps[r_eq, L.RP_CUR], ramps[r_eq + 1, L.RP_CUR], ramps[r_eq + 2, L.RP_CUR]
            for ch in range(2):
                z[L.EQ_KL * W + 2 * d + ch] = g * gl
                z[L.EQ_KM * W + 2 * d + ch] = g * (gm - gh)
                z[L.EQ_KH * W + 2 * d + ch] = g * gh
        process_decks(coefs, z, bus, out, off, n)
        return
    for d in range(C.DECKS):
        r_level = L.R_LEVEL + d
        r_xf = L.R_XFADE + d
        r_eq = L.R_EQ + 3 * d
        if (quiet >> d) & 1:            # no time spent on it
            for r in (r_level, r_xf, r_eq, r_eq + 1, r_eq + 2):
                _skip(ramps, r, n)
            continue
        rows = (r_level, r_xf, r_eq, r_eq + 1, r_eq + 2)
        if eq_on:
            process_deck(coefs, z, d, ramps, rows, bus[d], out, off, n)
        else:
            bypass_deck(ramps, rows, bus[d], out, off, n)
            for r in (r_eq, r_eq + 1, r_eq + 2):
                _skip(ramps, r, n)


@njit(**JIT)
def master_bus(st, out, off, n):
    """Master volume, then the limiter: stereo-linked, instant attack, 100 ms
    release, exactly unity below the threshold; a final clamp guarantees
    [-1, 1] and turns NaN into silence whatever the settings."""
    ramps = st[S_RAMPS]
    lim = st[S_LIMITER]
    on = st[S_PARAMS][L.P_LIMITER_ON] != 0.0
    g = lim[L.LM_GAIN]
    thr = lim[L.LM_THRESHOLD]
    rel = lim[L.LM_RELEASE]
    limited = False
    for i in range(off, off + n):
        m = _step(ramps, L.R_MASTER)
        left = float(out[i, 0]) * m
        right = float(out[i, 1]) * m
        if on:
            peak = max(abs(left), abs(right))
            if peak * g > thr:
                g = thr / peak
                limited = True
            elif g < 1.0:
                g += (1.0 - g) * rel
                if g > 0.99999:
                    g = 1.0
            left *= g
            right *= g
        if not left == left:
            left = 0.0
        if not right == right:
            right = 0.0
        out[i, 0] = np.float32(min(1.0, max(-1.0, left)))
        out[i, 1] = np.float32(min(1.0, max(-1.0, right)))
    lim[L.LM_GAIN] = g
    if limited:
        st[S_COUNTERS][L.CT_LIMITING] += 1
