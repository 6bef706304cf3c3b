"""The render kernel: one compiled function renders one block from the state.

Audio thread (or the one offline render thread) only, except ``ring_push``
(the control thread, the ring's single producer) and ``events_drain`` (the
control/reporter thread, the event ring's single consumer).

Everything here is numba nopython code with ``nogil``: no Python objects, no
allocation, no locks, no I/O. The PortAudio callback (``portaudio_callback``)
is a ``@cfunc`` that PortAudio calls directly; it and ``Engine.render``
reach the same ``render_table`` through the state table, so the live path
and the offline path are one path.

Per block: drain the command ring into the pending queue (sorted by frame,
then arrival); then render segment by segment, splitting the block at every
due command and at the end of a tempo ramp, so that commands land on their
exact frame and the result does not depend on the block size.
"""

from __future__ import annotations

import ctypes

import numpy as np
from numba import carray, cfunc, njit, types

from stemdeck.engine import kernel_cache  # noqa: F401  (before any kernel compiles: where they are cached)
from stemdeck.engine import commands as C
from stemdeck.engine import layout as L
from stemdeck.engine.apply import apply_command, drain_commands
from stemdeck.engine.mixer import master_bus, render_decks
from stemdeck.engine.rings import publish_clock, record_block
from stemdeck.engine.rt import monotonic_ns, thread_cpu_ns, thread_usage
from stemdeck.engine.state import (JIT, N_ARRAYS, S_BUS, S_CLOCK, S_COUNTERS, S_DECK_ACTIVE, S_DURATIONS,
                                   S_KL_I, S_PARAMS, S_PENDING, unpack)
from stemdeck.engine.stretch import keylock_segment
from stemdeck.engine.voice import render_voices

PA_OUTPUT_UNDERFLOW = 0x4  # PaStreamCallbackFlags: paOutputUnderflow


@njit(**JIT)
def _render_segment(st, out, off, n, frame0):
    bus = st[S_BUS]
    clock = st[S_CLOCK]
    sr = float(st[S_COUNTERS][L.CT_SAMPLE_RATE])
    for d in range(C.DECKS):
        for i in range(off, off + n):
            bus[d, i, 0] = 0.0
            bus[d, i, 1] = 0.0
    for i in range(off, off + n):
        out[i, 0] = 0.0
        out[i, 1] = 0.0
    bpm0 = clock[L.CK_BPM]
    bpm_step = clock[L.CK_BPM_STEP] if clock[L.CK_BPM_REM] > 0.0 else 0.0
    active = st[S_DECK_ACTIVE]
    active[:] = 0
    st[S_COUNTERS][L.CT_VOICES] = render_voices(st, off, n, frame0, active, -1, bus)
    kl_i = st[S_KL_I]
    for d in range(C.DECKS):
        if kl_i[d, L.KI_MODE] == L.KL_AHEAD:
            keylock_segment(st, d, off, n, active[d])
            active[d] = 1                    # the delay line and stretcher still ring out
    render_decks(st, out, off, n, active)
    master_bus(st, out, off, n)
    # the beat clock integrates the tempo over the segment
    clock[L.CK_BEATS] += (n * bpm0 + bpm_step * n * (n - 1) / 2.0) / 60.0 / sr
    _advance(clock, L.CK_BPM, L.CK_BPM_TGT, L.CK_BPM_STEP, L.CK_BPM_REM, n)
    _advance(clock, L.CK_A_BPM, L.CK_A_TGT, L.CK_A_STEP, L.CK_A_REM, n)


@njit(**JIT)
def _advance(clock, bpm, tgt, step, rem, n):
    """Move a tempo ramp on by n frames."""
    if clock[rem] > 0.0:
        if clock[rem] <= n:
            clock[bpm] = clock[tgt]
            clock[rem] = 0.0
            clock[step] = 0.0
        else:
            clock[bpm] += clock[step] * n
            clock[rem] -= n


@njit(**JIT)
def render_block(st, out, n):
    """Render ``n`` frames (n <= the bus size) into ``out[:n]``."""
    counters = st[S_COUNTERS]
    pending = st[S_PENDING]
    clock = st[S_CLOCK]
    frame = counters[L.CT_FRAME]
    drain_commands(st, float(frame))
    head = 0
    pos = 0
    while True:
        count = counters[L.CT_PENDING]
        while head < count and pending[head, C.F_FRAME] <= frame + pos:
            apply_command(st, pending[head], float(frame + pos))
            head += 1
        if pos >= n:
            break
        end = n
        if head < count:
            due = int(pending[head, C.F_FRAME]) - frame
            if due < end:
                end = due
        rem = clock[L.CK_BPM_REM]
        if rem > 0.0 and rem < end - pos:
            end = pos + int(rem)
        _render_segment(st, out, pos, end - pos, frame + pos)
        pos = end
    if head > 0:
        count = counters[L.CT_PENDING]
        for j in range(head, count):
            for k in range(C.REC_WIDTH):
                pending[j - head, k] = pending[j, k]
        counters[L.CT_PENDING] = count - head
    counters[L.CT_FRAME] = frame + n
    publish_clock(st, frame + n)
    counters[L.CT_BLOCKS] += 1


@njit(**JIT)
def render_frames(st, out, n):
    """Render ``n`` frames into ``out``, in blocks no longer than the buses."""
    max_block = st[S_BUS].shape[1]
    done = 0
    while done < n:
        k = min(max_block, n - done)
        render_block(st, out[done:done + k], k)
        done += k


@njit(**JIT)
def render_state(out, table):
    """``Engine.render``: the same path the callback takes, from Python."""
    render_frames(unpack(table), out, out.shape[0])


# ---------------------------------------------------------------------------
# the PortAudio callback
# ---------------------------------------------------------------------------

_ULONG = types.uint64 if ctypes.sizeof(ctypes.c_ulong) == 8 else types.uint32
PA_CALLBACK_SIG = types.intc(types.voidptr, types.voidptr, _ULONG, types.voidptr, _ULONG, types.voidptr)


@njit(**JIT)
def run_callback(out, flags, table):
    """The callback's whole body (telemetry, render, record) for backends
    that drive the engine from their own thread (null backend)."""
    _callback_body(out, out.shape[0], flags, table)


@njit(**JIT)
def _callback_body(out, frames, flags, table):
    st = unpack(table)
    counters = st[S_COUNTERS]
    params = st[S_PARAMS]
    durations = st[S_DURATIONS]
    t0 = monotonic_ns()
    cpu0 = thread_cpu_ns()
    faults0, slept0, preempted0 = thread_usage()
    counters[L.CT_CALLBACKS] += 1
    if flags & PA_OUTPUT_UNDERFLOW:
        counters[L.CT_UNDERFLOWS] += 1
    spin = params[L.P_SPIN_US]
    if spin > 0.0:
        # test hook: make this one callback late on purpose
        params[L.P_SPIN_US] = 0.0
        while monotonic_ns() - t0 < spin * 1000.0:
            pass
    render_frames(st, out, frames)
    if params[L.P_RECORD] != 0.0:
        record_block(st, out, frames)
    # page faults that went to the disk while rendering (memory-mapped samples),
    # and whether the thread slept or lost its CPU: what explains a late callback
    faults1, slept1, preempted1 = thread_usage()
    cpu = thread_cpu_ns() - cpu0
    counters[L.CT_MAJOR_FAULTS] += faults1 - faults0
    if slept1 != slept0:
        counters[L.CT_SLEPT] += 1
    if cpu > counters[L.CT_MAX_CPU_NS]:
        counters[L.CT_MAX_CPU_NS] = cpu
    dur = monotonic_ns() - t0
    idx = counters[L.CT_DUR_INDEX]
    durations[idx & (durations.shape[0] - 1)] = np.float32(dur)
    counters[L.CT_DUR_INDEX] = idx + 1
    if dur > counters[L.CT_MAX_NS]:
        counters[L.CT_MAX_NS] = dur
    if dur * counters[L.CT_SAMPLE_RATE] > frames * 1_000_000_000:
        counters[L.CT_OVERRUNS] += 1
        if slept1 != slept0:
            counters[L.CT_LATE_SLEPT] += 1
        elif preempted1 != preempted0:
            counters[L.CT_LATE_PREEMPTED] += 1
        elif 2 * cpu < dur:
            counters[L.CT_LATE_STOLEN] += 1


_callback = None


def portaudio_callback():
    """The compiled ``PaStreamCallback`` (built on first use: it costs a compile)."""
    global _callback
    if _callback is None:
        @cfunc(PA_CALLBACK_SIG, nopython=True, cache=True, error_model="numpy")
        def pa_callback(inp, outp, frames, time_info, flags, userdata):
            table = carray(userdata, (N_ARRAYS, 5), np.int64)
            out = carray(outp, (frames, 2), np.float32)
            _callback_body(out, frames, flags, table)
            return 0  # paContinue

        _callback = pa_callback
    return _callback
