"""Key lock's stage in the render kernel: lookahead, delay line, Rubber Band,
and the plain/stretched mix. Audio thread only; the stretchers are created
and freed on the control thread (rubberband.py).

A deck with key lock on renders its voices `lookahead` frames ahead of the
timeline (KL_AHEAD). Each segment, what they render goes two ways:
  - into the deck's delay line, read back `lookahead` frames later: the
    unstretched ("plain") signal, on the timeline;
  - into Rubber Band, which shifts the pitch by 1 / rate at a time ratio of
    1; with its start pad fed and its start delay trimmed, its output is on
    the timeline too, and the lookahead covers its latency.
The deck's output ramps between the two over the declick time, so key lock
switches on or off while playing without a click or a jump in time. The deck
returns to the timeline (KL_PLAIN) once it has been silent for a lookahead.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from stemdeck.engine import kernel_cache  # noqa: F401  (before any kernel compiles: where they are cached)
from stemdeck.engine import commands as C
from stemdeck.engine import layout as L
from stemdeck.engine.rings import post_event
from stemdeck.engine.rt import c_function
from stemdeck.engine.state import (JIT, S_BUS, S_COUNTERS, S_DECK_ACTIVE, S_KL_DELAY, S_KL_F, S_KL_FIFO,
                                   S_KL_FN, S_KL_I, S_KL_IN, S_KL_OUT, S_KL_PTRS, S_PARAMS)
from stemdeck.engine.voice import render_voices

# Rubber Band's C API, called through the addresses in the function table
rb_process = c_function("void", "ptr", "ptr", "u32", "i32")
rb_available = c_function("i32", "ptr")
rb_retrieve = c_function("u32", "ptr", "ptr", "u32")
rb_set_pitch_scale = c_function("void", "ptr", "f64")
rb_reset = c_function("void", "ptr")
rb_start_delay = c_function("u32", "ptr")


@njit(**JIT)
def _kl_collect(st, d):
    """Move everything the stretcher has produced into the deck's FIFO,
    trimming the start delay first."""
    ki = st[S_KL_I]
    fn = st[S_KL_FN]
    kout = st[S_KL_OUT]
    fifo = st[S_KL_FIFO]
    handle = ki[d, L.KI_HANDLE]
    cap = fifo.shape[1]
    out_ptrs = st[S_KL_PTRS][d, 2:].ctypes.data
    avail = rb_available(fn[L.FN_AVAILABLE], handle)
    while avail > 0:
        got = rb_retrieve(fn[L.FN_RETRIEVE], handle, out_ptrs, min(avail, kout.shape[2]))
        if got <= 0:
            break
        start = min(ki[d, L.KI_DROP], got)
        ki[d, L.KI_DROP] -= start
        w = ki[d, L.KI_FIFO_W]
        room = cap - (w - ki[d, L.KI_FIFO_R])
        for i in range(start, min(got, start + room)):
            row = w & (cap - 1)
            fifo[d, row, 0] = kout[d, 0, i]
            fifo[d, row, 1] = kout[d, 1, i]
            w += 1
        ki[d, L.KI_FIFO_W] = w
        avail = rb_available(fn[L.FN_AVAILABLE], handle)


@njit(**JIT)
def _kl_feed(st, d, src, start, n, zeros):
    """Feed ``n`` frames of ``src`` (circular, rows from ``start``) or of silence,
    in pieces no larger than the stretcher's maximum process size."""
    kin = st[S_KL_IN]
    fn = st[S_KL_FN]
    handle = st[S_KL_I][d, L.KI_HANDLE]
    in_ptrs = st[S_KL_PTRS][d, 0:].ctypes.data
    cap = src.shape[0]
    done = 0
    while done < n:
        k = min(n - done, kin.shape[2])
        for i in range(k):
            if zeros:
                kin[d, 0, i] = 0.0
                kin[d, 1, i] = 0.0
            else:
                row = (start + done + i) % cap
                kin[d, 0, i] = src[row, 0]
                kin[d, 1, i] = src[row, 1]
        rb_process(fn[L.FN_PROCESS], handle, in_ptrs, k, 0)
        done += k
        _kl_collect(st, d)


@njit(**JIT)
def _kl_set_pitch(st, d):
    """Pitch scale 1 / the deck's rate. The stretcher's delay depends on the
    scale and real-time Rubber Band does not make up for a change: trim more
    output when it grows, hold the output back when it shrinks, so the deck
    stays on the timeline (measured: about 60 frames between scales 1.0 and 0.95)."""
    kf = st[S_KL_F]
    ki = st[S_KL_I]
    fn = st[S_KL_FN]
    rate = kf[d, L.KF_RATE]
    if rate > 0.0 and abs(1.0 / rate - kf[d, L.KF_PITCH]) > 1e-9:
        kf[d, L.KF_PITCH] = 1.0 / rate
        handle = ki[d, L.KI_HANDLE]
        rb_set_pitch_scale(fn[L.FN_SET_PITCH], handle, kf[d, L.KF_PITCH])
        delay = rb_start_delay(fn[L.FN_START_DELAY], handle)
        change = delay - ki[d, L.KI_DELAY]
        ki[d, L.KI_DELAY] = delay
        if change > 0:
            ki[d, L.KI_DROP] += change
        else:
            ki[d, L.KI_HOLD] -= change


@njit(**JIT)
def engage_keylock(st, d, frame):
    ki = st[S_KL_I]
    kf = st[S_KL_F]
    fn = st[S_KL_FN]
    if fn[L.FN_PROCESS] == 0 or ki[d, L.KI_HANDLE] == 0:
        post_event(st, C.EV_KEYLOCK_UNAVAILABLE, d, 0.0, 0.0)
        return
    ki[d, L.KI_TARGET] = 1
    lookahead = int(st[S_PARAMS][L.P_LOOKAHEAD])
    delay = st[S_KL_DELAY]
    if ki[d, L.KI_MODE] == L.KL_PLAIN:
        # jump the deck's voices ahead; what they play meanwhile waits in the delay line
        for i in range(lookahead):
            delay[d, i, 0] = 0.0
            delay[d, i, 1] = 0.0
        render_voices(st, 0, lookahead, float(frame), st[S_DECK_ACTIVE], d, delay)
        ki[d, L.KI_DL_W] = lookahead
        ki[d, L.KI_MODE] = L.KL_AHEAD
        ki[d, L.KI_QUIET] = 0
    if kf[d, L.KF_MIX] <= 0.0:
        # (re)start the stretcher: reset, start pad, then the lookahead's worth of
        # audio the delay line holds, so its output begins on the timeline
        handle = ki[d, L.KI_HANDLE]
        rb_reset(fn[L.FN_RESET], handle)
        ki[d, L.KI_FIFO_R] = 0
        ki[d, L.KI_FIFO_W] = 0
        ki[d, L.KI_DROP] = 0
        ki[d, L.KI_HOLD] = 0
        ki[d, L.KI_DELAY] = 0
        kf[d, L.KF_PITCH] = 0.0
        _kl_set_pitch(st, d)                     # sets the delay to trim
        _kl_feed(st, d, delay[d], 0, ki[d, L.KI_PAD], True)
        _kl_feed(st, d, delay[d], ki[d, L.KI_DL_W] - lookahead + delay.shape[1], lookahead, False)


@njit(**JIT)
def keylock_segment(st, d, off, n, voices_on_deck):
    """Key lock's stage for one segment of deck ``d``: the bus holds what its
    voices rendered (ahead); replace it with the aligned plain/stretched mix."""
    ki = st[S_KL_I]
    kf = st[S_KL_F]
    bus = st[S_BUS][d]
    delay = st[S_KL_DELAY][d]
    fifo = st[S_KL_FIFO][d]
    lookahead = int(st[S_PARAMS][L.P_LOOKAHEAD])
    cap = delay.shape[0]
    fcap = fifo.shape[0]
    target = ki[d, L.KI_TARGET]
    mix = kf[d, L.KF_MIX]
    stretching = target == 1 or mix > 0.0
    w = ki[d, L.KI_DL_W]
    if stretching:
        _kl_set_pitch(st, d)
        # the bus rows are contiguous: feed them straight from the bus
        _kl_feed(st, d, bus, off, n, False)
    step = 1.0 / st[S_PARAMS][L.P_DECLICK]
    if target == 0:
        step = -step
    r = ki[d, L.KI_FIFO_R]
    fw = ki[d, L.KI_FIFO_W]
    hold = ki[d, L.KI_HOLD]
    s0 = np.float32(0.0)
    s1 = np.float32(0.0)
    starved = 0
    silent = True
    for i in range(off, off + n):
        x0 = bus[i, 0]
        x1 = bus[i, 1]
        if x0 != 0.0 or x1 != 0.0:
            silent = False
        row = (w + i - off) & (cap - 1)
        back = (w + i - off - lookahead) & (cap - 1)
        p0 = delay[back, 0]
        p1 = delay[back, 1]
        delay[row, 0] = x0
        delay[row, 1] = x1
        if stretching:
            mix = min(1.0, max(0.0, mix + step))
            if hold > 0:
                hold -= 1                       # repeat the last frame: the delay shrank
            elif r < fw:
                s0 = fifo[r & (fcap - 1), 0]
                s1 = fifo[r & (fcap - 1), 1]
                r += 1
            else:
                s0 = np.float32(0.0)
                s1 = np.float32(0.0)
                starved += 1
            bus[i, 0] = np.float32(p0 + mix * (s0 - p0))
            bus[i, 1] = np.float32(p1 + mix * (s1 - p1))
        else:
            bus[i, 0] = p0
            bus[i, 1] = p1
    ki[d, L.KI_DL_W] = w + n
    ki[d, L.KI_FIFO_R] = r
    ki[d, L.KI_HOLD] = hold
    kf[d, L.KF_MIX] = mix
    if starved and target == 1:
        st[S_COUNTERS][L.CT_KL_STARVED] += starved
    # back on the timeline once nothing plays and the delay line has run dry
    if silent and not stretching and voices_on_deck == 0:
        ki[d, L.KI_QUIET] += n
        if ki[d, L.KI_QUIET] >= lookahead:
            ki[d, L.KI_MODE] = L.KL_PLAIN
    else:
        ki[d, L.KI_QUIET] = 0
