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

from stemdeck.engine import commands as C
from stemdeck.engine import layout as L
from stemdeck.engine.dsp.eq import bypass_deck, process_deck
from stemdeck.engine.rt import (address_as_pointer, c_function, load_acquire, monotonic_ns, store_release,
                               thread_major_faults)

# Rubber Band's C API, called through the addresses in the function table
rb_process = c_function("void", "ptr", "ptr", "u32", "i32")
rb_available = c_function("i32", "ptr")
rb_retrieve = c_function("u32", "ptr", "ptr", "u32")
rb_set_pitch_scale = c_function("void", "ptr", "f64")
rb_reset = c_function("void", "ptr")
rb_start_delay = c_function("u32", "ptr")

# error_model="numpy": a float division by zero gives inf/nan instead of
# raising, so no exception path (which would need the GIL) is compiled in.
JIT = dict(nogil=True, cache=True, error_model="numpy")

# positions of the arrays in the state tuple (the State field order)
(S_COUNTERS, S_PARAMS, S_CLOCK, S_RAMPS, S_VF, S_VI, S_SLOTS, S_SLOT_REFS, S_BUFFERS,
 S_BUFFER_BPM, S_RING, S_RING_INDEX, S_PENDING, S_EVENTS, S_EVENTS_INDEX, S_EQ_COEFS,
 S_EQ_STATE, S_BUS, S_LIMITER, S_DURATIONS, S_DECK_ACTIVE, S_RECORD, S_RECORD_INDEX,
 S_KL_I, S_KL_F, S_KL_FN, S_KL_PTRS, S_KL_IN, S_KL_OUT, S_KL_FIFO, S_KL_DELAY) = range(31)
N_ARRAYS = 31

PA_OUTPUT_UNDERFLOW = 0x4  # PaStreamCallbackFlags: paOutputUnderflow
I16_SCALE = 1.0 / 32768.0
I32_SCALE = 1.0 / 2147483648.0


# ---------------------------------------------------------------------------
# the state table -> a tuple of arrays
# ---------------------------------------------------------------------------

@njit(inline="always")
def _p(table, i):
    return address_as_pointer(table[i, 0])


@njit(**JIT)
def unpack(table):
    """View every state array through its address in ``table`` (no copies)."""
    t = table
    return (
        carray(_p(t, 0), (t[0, 1],), np.int64),
        carray(_p(t, 1), (t[1, 1],), np.float64),
        carray(_p(t, 2), (t[2, 1],), np.float64),
        carray(_p(t, 3), (t[3, 1], t[3, 2]), np.float64),
        carray(_p(t, 4), (t[4, 1], t[4, 2]), np.float64),
        carray(_p(t, 5), (t[5, 1], t[5, 2]), np.int64),
        carray(_p(t, 6), (t[6, 1], t[6, 2]), np.int64),
        carray(_p(t, 7), (t[7, 1], t[7, 2]), np.int64),
        carray(_p(t, 8), (t[8, 1], t[8, 2]), np.int64),
        carray(_p(t, 9), (t[9, 1],), np.float64),
        carray(_p(t, 10), (t[10, 1], t[10, 2]), np.float64),
        carray(_p(t, 11), (t[11, 1],), np.int64),
        carray(_p(t, 12), (t[12, 1], t[12, 2]), np.float64),
        carray(_p(t, 13), (t[13, 1], t[13, 2]), np.float64),
        carray(_p(t, 14), (t[14, 1],), np.int64),
        carray(_p(t, 15), (t[15, 1], t[15, 2]), np.float64),
        carray(_p(t, 16), (t[16, 1], t[16, 2], t[16, 3], t[16, 4]), np.float64),
        carray(_p(t, 17), (t[17, 1], t[17, 2], t[17, 3]), np.float32),
        carray(_p(t, 18), (t[18, 1],), np.float64),
        carray(_p(t, 19), (t[19, 1],), np.float32),
        carray(_p(t, 20), (t[20, 1],), np.int64),
        carray(_p(t, 21), (t[21, 1], t[21, 2]), np.float32),
        carray(_p(t, 22), (t[22, 1],), np.int64),
        carray(_p(t, 23), (t[23, 1], t[23, 2]), np.int64),
        carray(_p(t, 24), (t[24, 1], t[24, 2]), np.float64),
        carray(_p(t, 25), (t[25, 1],), np.int64),
        carray(_p(t, 26), (t[26, 1], t[26, 2]), np.int64),
        carray(_p(t, 27), (t[27, 1], t[27, 2], t[27, 3]), np.float32),
        carray(_p(t, 28), (t[28, 1], t[28, 2], t[28, 3]), np.float32),
        carray(_p(t, 29), (t[29, 1], t[29, 2], t[29, 3]), np.float32),
        carray(_p(t, 30), (t[30, 1], t[30, 2], t[30, 3]), np.float32),
    )


# ---------------------------------------------------------------------------
# rings
# ---------------------------------------------------------------------------

@njit(**JIT)
def ring_push(ring, index, frame, seq, op, target, a, b, c, d, e, f):
    """Control thread: publish one record; False if the ring is full."""
    cap = ring.shape[0]
    w = index[L.IX_WRITE]                      # only this thread writes it
    if w - load_acquire(index, L.IX_READ) >= cap:
        return False
    row = w & (cap - 1)
    ring[row, C.F_FRAME] = frame
    ring[row, C.F_SEQ] = seq
    ring[row, C.F_OP] = op
    ring[row, C.F_TARGET] = target
    ring[row, C.F_A] = a
    ring[row, C.F_B] = b
    ring[row, C.F_C] = c
    ring[row, C.F_D] = d
    ring[row, C.F_E] = e
    ring[row, C.F_F] = f
    store_release(index, L.IX_WRITE, w + 1)   # the record is visible before the index
    return True


@njit(**JIT)
def _event(st, kind, a, b, c):
    events = st[S_EVENTS]
    index = st[S_EVENTS_INDEX]
    cap = events.shape[0]
    w = index[L.IX_WRITE]
    if w - load_acquire(index, L.IX_READ) >= cap:
        st[S_COUNTERS][L.CT_EVENTS_DROPPED] += 1
        return
    row = w % cap
    events[row, 0] = kind
    events[row, 1] = a
    events[row, 2] = b
    events[row, 3] = c
    store_release(index, L.IX_WRITE, w + 1)


@njit(nogil=True, cache=True)
def events_drain(events, index):
    """Control/reporter thread: take every published event (allocates the result)."""
    w = load_acquire(index, L.IX_WRITE)
    r = index[L.IX_READ]
    cap = events.shape[0]
    out = np.empty((w - r, events.shape[1]), np.float64)
    for k in range(w - r):
        out[k] = events[(r + k) % cap]
    store_release(index, L.IX_READ, w)
    return out


@njit(**JIT)
def _drain_commands(st, block_start):
    """Move every published command into the pending queue, in (frame, seq) order."""
    ring = st[S_RING]
    index = st[S_RING_INDEX]
    pending = st[S_PENDING]
    counters = st[S_COUNTERS]
    cap = ring.shape[0]
    w = load_acquire(index, L.IX_WRITE)
    r = index[L.IX_READ]
    while r < w:
        row = r & (cap - 1)
        r += 1
        count = counters[L.CT_PENDING]
        if count >= pending.shape[0]:
            counters[L.CT_PENDING_FULL] += 1
            continue
        frame = ring[row, C.F_FRAME]
        if frame < block_start:
            if frame != C.ASAP:
                counters[L.CT_LATE] += 1
                _event(st, C.EV_LATE, ring[row, C.F_OP], block_start - frame, ring[row, C.F_TARGET])
            frame = block_start
        else:
            # a deck running ahead for key lock hears its voices `lookahead`
            # frames after they render: their commands apply that much earlier
            frame = max(block_start, frame - _voice_command_lead(st, ring[row]))
        if ring[row, C.F_OP] == C.OP_BIND:
            st[S_BUFFERS][int(ring[row, C.F_TARGET]), L.BF_PLANNED_DECK] = int(ring[row, C.F_B])
        if ring[row, C.F_OP] == C.OP_KEYLOCK:
            # voice commands drained after this one already see the deck ahead
            st[S_KL_I][int(ring[row, C.F_TARGET]), L.KI_PLANNED] = 1 if ring[row, C.F_A] != 0.0 else 0
        seq = ring[row, C.F_SEQ]
        j = count
        while j > 0 and (pending[j - 1, C.F_FRAME] > frame or
                         (pending[j - 1, C.F_FRAME] == frame and pending[j - 1, C.F_SEQ] > seq)):
            for k in range(C.REC_WIDTH):
                pending[j, k] = pending[j - 1, k]
            j -= 1
        for k in range(C.REC_WIDTH):
            pending[j, k] = ring[row, k]
        pending[j, C.F_FRAME] = frame
        counters[L.CT_PENDING] = count + 1
    store_release(index, L.IX_READ, r)


# ---------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------

@njit(**JIT)
def _voice_command_lead(st, rec):
    op = int(rec[C.F_OP])
    target = int(rec[C.F_TARGET])
    if op == C.OP_DECK_STOP:
        deck = target
    elif op in (C.OP_PLAY, C.OP_STOP, C.OP_VOLUME, C.OP_RATE, C.OP_BIND, C.OP_UNBIND):
        deck = st[S_BUFFERS][target, L.BF_PLANNED_DECK]
    else:
        return 0.0
    kl = st[S_KL_I]
    if deck >= 0 and (kl[deck, L.KI_MODE] == L.KL_AHEAD or kl[deck, L.KI_PLANNED] == 1):
        return st[S_PARAMS][L.P_LOOKAHEAD]
    return 0.0


@njit(**JIT)
def _ramp_to(ramps, r, target, frames):
    if frames <= 0:
        frames = 1.0
    ramps[r, L.RP_TGT] = target
    ramps[r, L.RP_STEP] = (target - ramps[r, L.RP_CUR]) / frames
    ramps[r, L.RP_REM] = frames


@njit(**JIT)
def _release_slot_if_unused(st, slot):
    refs = st[S_SLOT_REFS]
    if refs[slot, L.SR_VOICES] <= 0 and refs[slot, L.SR_BOUND] <= 0:
        refs[slot, L.SR_VOICES] = 0
        refs[slot, L.SR_BOUND] = 0
        _event(st, C.EV_SLOT_RELEASED, slot, 0.0, 0.0)


@njit(**JIT)
def _free_voice(st, v):
    vi = st[S_VI]
    slot = vi[v, L.VI_SLOT]
    vi[v, L.VI_STATE] = L.V_FREE
    st[S_SLOT_REFS][slot, L.SR_VOICES] -= 1
    _release_slot_if_unused(st, slot)


@njit(**JIT)
def _fade_out(st, v):
    """Start a declick fade to silence; the voice frees itself at zero.
    ``VF_ENV`` is the gain of the next sample, so the fade starts on the
    command's own frame."""
    vi = st[S_VI]
    vf = st[S_VF]
    if vi[v, L.VI_STATE] == L.V_PLAYING:
        vi[v, L.VI_STATE] = L.V_STOPPING
        step = 1.0 / st[S_PARAMS][L.P_DECLICK]
        vf[v, L.VF_ENV_STEP] = -step
        vf[v, L.VF_ENV] -= step


@njit(**JIT)
def _start_voice(st, bid, slot, deck, rate, volume, loop, start, sec_start, sec_dur, frame, pos_override):
    vi = st[S_VI]
    vf = st[S_VF]
    slots = st[S_SLOTS]
    sr = st[S_COUNTERS][L.CT_SAMPLE_RATE]
    v = -1
    for k in range(vi.shape[0]):
        if vi[k, L.VI_STATE] == L.V_FREE:
            v = k
            break
    if v < 0:
        _event(st, C.EV_VOICES_FULL, bid, 0.0, 0.0)
        return -1
    frames = slots[slot, L.SL_FRAMES]
    lo = 0.0
    hi = float(frames)
    if sec_start >= 0.0:
        # section boundaries on whole frames, so loop lengths are exact
        lo = min(np.floor(sec_start * sr + 0.5), float(frames))
        hi = min(lo + np.floor(sec_dur * sr + 0.5), float(frames))
    if hi - lo < 1.0:
        _event(st, C.EV_ENDED, bid, frame, 0.0)
        return -1
    pos = lo + start * (hi - lo)
    if pos_override >= 0.0:
        pos = pos_override
    if pos >= hi:
        pos = lo if loop else hi - 1.0
    vi[v, L.VI_STATE] = L.V_PLAYING
    vi[v, L.VI_BUF] = bid
    vi[v, L.VI_SLOT] = slot
    vi[v, L.VI_DECK] = deck
    vi[v, L.VI_LOOP] = loop
    vi[v, L.VI_WRAPPED] = 0
    vf[v, L.VF_POS] = pos
    vf[v, L.VF_RATE] = rate
    vf[v, L.VF_GAIN] = volume
    vf[v, L.VF_GAIN_TGT] = volume
    vf[v, L.VF_GAIN_STEP] = 0.0
    vf[v, L.VF_GAIN_REM] = 0.0
    # the first sample sounds on the command's frame, at 1/declick of full gain
    vf[v, L.VF_ENV] = 1.0 / st[S_PARAMS][L.P_DECLICK]
    vf[v, L.VF_ENV_STEP] = vf[v, L.VF_ENV]
    vf[v, L.VF_LO] = lo
    vf[v, L.VF_HI] = hi
    vf[v, L.VF_START_FRAME] = frame
    st[S_SLOT_REFS][slot, L.SR_VOICES] += 1
    return v


@njit(**JIT)
def _apply(st, rec, frame):
    vi = st[S_VI]
    vf = st[S_VF]
    buffers = st[S_BUFFERS]
    refs = st[S_SLOT_REFS]
    ramps = st[S_RAMPS]
    params = st[S_PARAMS]
    clock = st[S_CLOCK]
    op = int(rec[C.F_OP])
    target = int(rec[C.F_TARGET])
    a = rec[C.F_A]
    b = rec[C.F_B]
    c = rec[C.F_C]
    default_ramp = params[L.P_DEFAULT_RAMP]
    nv = vi.shape[0]
    st[S_COUNTERS][L.CT_APPLIED] += 1

    if op == C.OP_BIND:
        slot = int(a)
        old = buffers[target, L.BF_SLOT]
        buffers[target, L.BF_DECK] = int(b)
        if old == slot:
            return
        buffers[target, L.BF_SLOT] = slot
        refs[slot, L.SR_BOUND] += 1
        if old >= 0:
            # a voice playing the old sample crossfades into the new one at the same place
            for v in range(nv):
                if vi[v, L.VI_STATE] == L.V_PLAYING and vi[v, L.VI_BUF] == target and vi[v, L.VI_SLOT] == old:
                    pos = vf[v, L.VF_POS]
                    if pos < float(st[S_SLOTS][slot, L.SL_FRAMES]):
                        _start_voice(st, target, slot, int(b), vf[v, L.VF_RATE], vf[v, L.VF_GAIN_TGT],
                                           vi[v, L.VI_LOOP], 0.0, -1.0, 0.0, frame, pos)
                    _fade_out(st, v)
            refs[old, L.SR_BOUND] -= 1
            _release_slot_if_unused(st, old)
    elif op == C.OP_UNBIND:
        old = buffers[target, L.BF_SLOT]
        for v in range(nv):
            if vi[v, L.VI_STATE] != L.V_FREE and vi[v, L.VI_BUF] == target:
                _fade_out(st, v)
        if old >= 0:
            buffers[target, L.BF_SLOT] = -1
            refs[old, L.SR_BOUND] -= 1
            _release_slot_if_unused(st, old)
    elif op == C.OP_PLAY:
        slot = buffers[target, L.BF_SLOT]
        if slot < 0:
            _event(st, C.EV_UNBOUND, op, target, 0.0)
            return
        for v in range(nv):                      # a restart replaces the playing voice
            if vi[v, L.VI_STATE] == L.V_PLAYING and vi[v, L.VI_BUF] == target:
                _fade_out(st, v)
        _start_voice(st, target, slot, buffers[target, L.BF_DECK], a, b, int(c) & C.PLAY_LOOP,
                     rec[C.F_D], rec[C.F_E], rec[C.F_F], frame, -1.0)
    elif op == C.OP_STOP:
        for v in range(nv):
            if vi[v, L.VI_BUF] == target:
                _fade_out(st, v)
    elif op == C.OP_VOLUME:
        frames = b if b > 0 else default_ramp
        for v in range(nv):
            if vi[v, L.VI_STATE] != L.V_FREE and vi[v, L.VI_BUF] == target:
                vf[v, L.VF_GAIN_TGT] = a
                vf[v, L.VF_GAIN_STEP] = (a - vf[v, L.VF_GAIN]) / frames
                vf[v, L.VF_GAIN_REM] = frames
    elif op == C.OP_RATE:
        for v in range(nv):
            if vi[v, L.VI_STATE] != L.V_FREE and vi[v, L.VI_BUF] == target:
                vf[v, L.VF_RATE] = a
    elif op == C.OP_DECK_LEVEL:
        _ramp_to(ramps, L.R_LEVEL + target, a, b if b > 0 else default_ramp)
    elif op == C.OP_DECK_EQ:
        _ramp_to(ramps, L.R_EQ + target * 3 + int(a), b, c if c > 0 else default_ramp)
    elif op == C.OP_XFADE:
        frames = c if c > 0 else default_ramp
        _ramp_to(ramps, L.R_XFADE + 0, a, frames)
        _ramp_to(ramps, L.R_XFADE + 1, b, frames)
    elif op == C.OP_MASTER:
        _ramp_to(ramps, L.R_MASTER, a, b if b > 0 else default_ramp)
    elif op == C.OP_TEMPO:
        clock[L.CK_BPM_TGT] = a
        if b <= 0:
            clock[L.CK_BPM] = a
            clock[L.CK_BPM_STEP] = 0.0
            clock[L.CK_BPM_REM] = 0.0
        else:
            clock[L.CK_BPM_STEP] = (a - clock[L.CK_BPM]) / b
            clock[L.CK_BPM_REM] = b
    elif op == C.OP_STOP_ALL:
        for v in range(nv):
            _fade_out(st, v)
    elif op == C.OP_VOICE_BPM:
        st[S_BUFFER_BPM][target] = a
    elif op == C.OP_DECK_STOP:
        for v in range(nv):
            if vi[v, L.VI_DECK] == target:
                _fade_out(st, v)
    elif op == C.OP_KEYLOCK:
        if a != 0.0:
            _kl_engage(st, target, frame)
        else:
            st[S_KL_I][target, L.KI_TARGET] = 0


# ---------------------------------------------------------------------------
# voices
# ---------------------------------------------------------------------------

@njit(inline="always")
def _fetch(data, idx, lo, hi, loop, nframes, ch):
    """Sample ``idx`` of channel ``ch``: wrapped into [lo, hi) for loops,
    zero outside the data for one-shots."""
    if loop:
        length = hi - lo
        while idx >= hi:
            idx -= length
        while idx < lo:
            idx += length
    elif idx < 0 or idx >= nframes:
        return 0.0
    return float(data[idx, ch])


@njit(inline="always")
def _hermite(xm1, x0, x1, x2, t):
    """4-point, 3rd-order Hermite (Catmull-Rom) interpolation."""
    c1 = 0.5 * (x1 - xm1)
    c2 = xm1 - 2.5 * x0 + 2.0 * x1 - 0.5 * x2
    c3 = 0.5 * (x2 - xm1) + 1.5 * (x0 - x1)
    return ((c3 * t + c2) * t + c1) * t + x0


@njit(inline="always")
def _read(data, pos, lo, hi, loop, nframes, right):
    """Interpolated stereo frame at fractional position ``pos``."""
    ip = int(np.floor(pos))
    t = pos - ip
    if ip >= 1 and ip + 2 < nframes and (not loop or (ip >= lo + 1 and ip + 2 < hi)):
        l = _hermite(float(data[ip - 1, 0]), float(data[ip, 0]), float(data[ip + 1, 0]),
                     float(data[ip + 2, 0]), t)
        r = _hermite(float(data[ip - 1, right]), float(data[ip, right]), float(data[ip + 1, right]),
                     float(data[ip + 2, right]), t)
        return l, r
    l = _hermite(_fetch(data, ip - 1, lo, hi, loop, nframes, 0), _fetch(data, ip, lo, hi, loop, nframes, 0),
                 _fetch(data, ip + 1, lo, hi, loop, nframes, 0), _fetch(data, ip + 2, lo, hi, loop, nframes, 0), t)
    r = _hermite(_fetch(data, ip - 1, lo, hi, loop, nframes, right),
                 _fetch(data, ip, lo, hi, loop, nframes, right),
                 _fetch(data, ip + 1, lo, hi, loop, nframes, right),
                 _fetch(data, ip + 2, lo, hi, loop, nframes, right), t)
    return l, r


_U0 = np.uint64(0)
_U1 = np.uint64(1)
_U2 = np.uint64(2)


@njit(inline="always")
def _steady_frame(data, ip, t, left, right):
    # unsigned indices: numba then skips its negative-index wraparound checks
    a = ip - _U1
    b = ip + _U1
    c = ip + _U2
    return (_hermite(float(data[a, left]), float(data[ip, left]), float(data[b, left]),
                     float(data[c, left]), t),
            _hermite(float(data[a, right]), float(data[ip, right]), float(data[b, right]),
                     float(data[c, right]), t))


@njit(nogil=True, cache=True, error_model="numpy", fastmath={"contract"})
def _run_steady(data, k, bus, off, count, pos, rate, rate_step, right):
    """The common case, kept branch-free: constant gain ``k``, every
    interpolation point inside the data, no seam, no fade. Stereo and mono
    get separate loops so the channel columns are constants, which lets LLVM
    pair the left/right arithmetic into SIMD."""
    if right == 1:
        for i in range(off, off + count):
            ip = np.uint64(pos)                # pos > 0 here, so this is floor
            l, r = _steady_frame(data, ip, pos - float(ip), _U0, _U1)
            bus[i, 0] += np.float32(l * k)
            bus[i, 1] += np.float32(r * k)
            pos += rate
            rate += rate_step
    else:
        for i in range(off, off + count):
            ip = np.uint64(pos)
            l, r = _steady_frame(data, ip, pos - float(ip), _U0, _U0)
            bus[i, 0] += np.float32(l * k)
            bus[i, 1] += np.float32(l * k)
            pos += rate
            rate += rate_step
    return pos, rate


@njit(**JIT)
def _run_voice(data, scale, vf, vi, loop, bus, off, n, rate, rate_step, declick):
    """Mix ``n`` frames of one voice into ``bus[off:off+n]``. Returns the number
    of frames rendered before it ended (n if it is still going), and whether
    it reached the end of a one-shot (1) or faded to silence (2)."""
    nframes = data.shape[0]
    right = 1 if data.shape[1] > 1 else 0
    pos = vf[L.VF_POS]
    lo = int(vf[L.VF_LO])
    hi = int(vf[L.VF_HI])
    flo = float(lo)
    fhi = float(hi)
    length = fhi - flo
    g = vf[L.VF_GAIN]
    g_step = vf[L.VF_GAIN_STEP]
    g_rem = vf[L.VF_GAIN_REM]
    env = vf[L.VF_ENV]
    env_step = vf[L.VF_ENV_STEP]
    fd = float(declick)
    # loop seams: crossfade into the audio before the loop start when there is
    # some (exact loop length, no dip); otherwise dip to silence and back
    xfade_seam = loop and flo >= fd + 2.0
    # the steady region: interpolation points inside the data (and the loop),
    # clear of the seam and end fades
    safe_lo = 1.0
    safe_hi = min(float(nframes) - 3.0, fhi - fd - 1.0)
    if loop:
        safe_lo = flo + 1.0
        safe_hi = min(safe_hi, fhi - 3.0)
        if not xfade_seam and vi[L.VI_WRAPPED]:
            safe_lo = max(safe_lo, flo + fd)
    done = 0
    i = 0
    while i < n:
        if env_step == 0.0 and g_rem <= 0.0 and safe_lo <= pos < safe_hi:
            fastest = max(rate, rate + rate_step * (n - i))
            count = min(n - i, int((safe_hi - pos) / fastest))
            if count > 0:
                pos, rate = _run_steady(data, g * env * scale, bus, off + i, count, pos, rate, rate_step, right)
                i += count
                continue
        if env <= 0.0:
            done = 2
            break
        if g_rem > 0.0:                        # ramps step before the sample they change
            g += g_step
            g_rem -= 1.0
            if g_rem <= 0.0:
                g = vf[L.VF_GAIN_TGT]
        l, r = _read(data, pos, lo, hi, loop, nframes, right)
        edge = 1.0
        if pos > fhi - fd:
            if xfade_seam:
                w = (pos - (fhi - fd)) / fd
                l2, r2 = _read(data, pos - length, lo, hi, False, nframes, right)
                l = l + w * (l2 - l)
                r = r + w * (r2 - r)
            else:
                edge = (fhi - pos) / fd
        elif loop and not xfade_seam and pos < flo + fd and vi[L.VI_WRAPPED]:
            edge = (pos - flo) / fd           # back in after the seam's dip
        k = g * env * edge * scale
        bus[off + i, 0] += np.float32(l * k)
        bus[off + i, 1] += np.float32(r * k)
        i += 1
        if env_step != 0.0:
            env += env_step
            if env >= 1.0:
                env = 1.0
                env_step = 0.0
            elif env <= 0.0:
                done = 2
                break
        pos += rate
        rate += rate_step
        if pos >= fhi:
            if loop:
                pos -= length
                vi[L.VI_WRAPPED] = 1
                if not xfade_seam:              # from now on the seam dips back in
                    safe_lo = max(safe_lo, flo + fd)
            else:
                done = 1
                break
    vf[L.VF_POS] = pos
    vf[L.VF_GAIN] = g
    vf[L.VF_GAIN_REM] = g_rem
    vf[L.VF_ENV] = env
    vf[L.VF_ENV_STEP] = env_step
    return i, done


@njit(**JIT)
def _render_voices(st, off, n, frame0, active, deck_filter, dest):
    """Mix every playing voice (or only deck ``deck_filter``'s, if >= 0) into
    ``dest[deck][off:off+n]``. A deck running ahead for key lock plays at the
    tempo its frames will be heard at, and reports ends when they are heard."""
    vi = st[S_VI]
    vf = st[S_VF]
    slots = st[S_SLOTS]
    bpm_table = st[S_BUFFER_BPM]
    clock = st[S_CLOCK]
    kl_i = st[S_KL_I]
    kl_f = st[S_KL_F]
    declick = st[S_PARAMS][L.P_DECLICK]
    lookahead = st[S_PARAMS][L.P_LOOKAHEAD]
    ramp_left = clock[L.CK_BPM_REM]
    bpm_step = clock[L.CK_BPM_STEP] if ramp_left > 0.0 else 0.0
    count = 0
    first = np.int64(0)
    for v in range(vi.shape[0]):
        if vi[v, L.VI_STATE] == L.V_FREE:
            continue
        deck = vi[v, L.VI_DECK]
        if deck_filter >= 0 and deck != deck_filter:
            continue
        count += 1
        slot = vi[v, L.VI_SLOT]
        bid = vi[v, L.VI_BUF]
        ahead = lookahead if kl_i[deck, L.KI_MODE] == L.KL_AHEAD else 0.0
        bpm = clock[L.CK_BPM]
        step = bpm_step
        if ahead > 0.0 and bpm_step != 0.0:
            if ahead >= ramp_left:
                bpm = clock[L.CK_BPM_TGT]
                step = 0.0
            else:
                bpm += bpm_step * ahead
        rate = vf[v, L.VF_RATE]
        rate_step = 0.0
        src_bpm = bpm_table[bid]
        if src_bpm > 0.0:
            rate_step = rate * step / src_bpm
            rate = rate * bpm / src_bpm
        if not (first >> deck) & 1:
            kl_f[deck, L.KF_RATE] = rate           # the deck's rate, for key lock's pitch
            first |= np.int64(1) << deck
        ptr = address_as_pointer(slots[slot, L.SL_ADDR])
        shape = (slots[slot, L.SL_FRAMES], slots[slot, L.SL_CHANNELS])
        fmt = slots[slot, L.SL_FORMAT]
        loop = vi[v, L.VI_LOOP] != 0
        if fmt == L.FMT_I16:
            rendered, done = _run_voice(carray(ptr, shape, np.int16), I16_SCALE, vf[v], vi[v], loop, dest[deck],
                                        off, n, rate, rate_step, declick)
        elif fmt == L.FMT_I32:
            rendered, done = _run_voice(carray(ptr, shape, np.int32), I32_SCALE, vf[v], vi[v], loop, dest[deck],
                                        off, n, rate, rate_step, declick)
        else:
            rendered, done = _run_voice(carray(ptr, shape, np.float32), 1.0, vf[v], vi[v], loop, dest[deck],
                                        off, n, rate, rate_step, declick)
        active[deck] = 1
        if done == 1:
            _event(st, C.EV_ENDED, bid, frame0 + rendered + ahead, 0.0)
        if done != 0:
            _free_voice(st, v)
            count -= 1
    return count


# ---------------------------------------------------------------------------
# key lock: lookahead, delay line, stretcher, mix
# ---------------------------------------------------------------------------
#
# A deck with key lock on renders its voices `lookahead` frames ahead of the
# timeline (KL_AHEAD). Each segment, what they render goes two ways:
#   - into the deck's delay line, read back `lookahead` frames later: the
#     unstretched ("plain") signal, on the timeline;
#   - into Rubber Band, which shifts the pitch by 1 / rate at a time ratio of
#     1; with its start pad fed and its start delay trimmed, its output is on
#     the timeline too, and the lookahead covers its latency.
# The deck's output ramps between the two over the declick time, so key lock
# switches on or off while playing without a click or a jump in time. The deck
# returns to the timeline (KL_PLAIN) once it has been silent for a lookahead.

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
def _kl_engage(st, d, frame):
    ki = st[S_KL_I]
    kf = st[S_KL_F]
    fn = st[S_KL_FN]
    if fn[L.FN_PROCESS] == 0 or ki[d, L.KI_HANDLE] == 0:
        _event(st, C.EV_KEYLOCK_UNAVAILABLE, d, 0.0, 0.0)
        return
    ki[d, L.KI_TARGET] = 1
    lookahead = int(st[S_PARAMS][L.P_LOOKAHEAD])
    delay = st[S_KL_DELAY]
    if ki[d, L.KI_MODE] == L.KL_PLAIN:
        # jump the deck's voices ahead; what they play meanwhile waits in the delay line
        for i in range(lookahead):
            delay[d, i, 0] = 0.0
            delay[d, i, 1] = 0.0
        _render_voices(st, 0, lookahead, float(frame), st[S_DECK_ACTIVE], d, delay)
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
def _kl_segment(st, d, off, n, voices_on_deck):
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


# ---------------------------------------------------------------------------
# decks, master, limiter
# ---------------------------------------------------------------------------

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
def _render_decks(st, out, off, n, active):
    bus = st[S_BUS]
    ramps = st[S_RAMPS]
    coefs = st[S_EQ_COEFS]
    eq_state = st[S_EQ_STATE]
    eq_on = st[S_PARAMS][L.P_EQ_ON] != 0.0
    for d in range(C.DECKS):
        r_level = L.R_LEVEL + d
        r_xf = L.R_XFADE + d
        r_eq = L.R_EQ + 3 * d
        state = eq_state[d]
        if active[d] == 0:
            # no input: let the filters ring out, then stop spending time on them
            quiet = True
            for k in range(state.shape[0]):
                for ch in range(2):
                    if abs(state[k, ch, 0]) > 1e-9 or abs(state[k, ch, 1]) > 1e-9:
                        quiet = False
            if quiet:
                state[:] = 0.0
                for r in (r_level, r_xf, r_eq, r_eq + 1, r_eq + 2):
                    _skip(ramps, r, n)
                continue
        rows = (r_level, r_xf, r_eq, r_eq + 1, r_eq + 2)
        if eq_on:
            process_deck(coefs, state, ramps, rows, bus[d], out, off, n)
        else:
            bypass_deck(ramps, rows, bus[d], out, off, n)
            for r in (r_eq, r_eq + 1, r_eq + 2):
                _skip(ramps, r, n)


@njit(**JIT)
def _master(st, out, off, n):
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
    st[S_COUNTERS][L.CT_VOICES] = _render_voices(st, off, n, frame0, active, -1, bus)
    kl_i = st[S_KL_I]
    for d in range(C.DECKS):
        if kl_i[d, L.KI_MODE] == L.KL_AHEAD:
            _kl_segment(st, d, off, n, active[d])
            active[d] = 1                    # the delay line and stretcher still ring out
    _render_decks(st, out, off, n, active)
    _master(st, out, off, n)
    # the beat clock integrates the tempo over the segment
    clock[L.CK_BEATS] += (n * bpm0 + bpm_step * n * (n - 1) / 2.0) / 60.0 / sr
    if bpm_step != 0.0:
        clock[L.CK_BPM_REM] -= n
        if clock[L.CK_BPM_REM] <= 0.0:
            clock[L.CK_BPM] = clock[L.CK_BPM_TGT]
            clock[L.CK_BPM_REM] = 0.0
            clock[L.CK_BPM_STEP] = 0.0
        else:
            clock[L.CK_BPM] = bpm0 + bpm_step * n


@njit(**JIT)
def render_block(st, out, n):
    """Render ``n`` frames (n <= the bus size) into ``out[:n]``."""
    counters = st[S_COUNTERS]
    pending = st[S_PENDING]
    clock = st[S_CLOCK]
    frame = counters[L.CT_FRAME]
    _drain_commands(st, float(frame))
    head = 0
    pos = 0
    while True:
        count = counters[L.CT_PENDING]
        while head < count and pending[head, C.F_FRAME] <= frame + pos:
            _apply(st, pending[head], float(frame + pos))
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
    counters[L.CT_BLOCKS] += 1


@njit(**JIT)
def render_state(out, table):
    """``Engine.render``: the same path the callback takes, from Python."""
    st = unpack(table)
    n = out.shape[0]
    max_block = st[S_BUS].shape[1]
    done = 0
    while done < n:
        k = min(max_block, n - done)
        render_block(st, out[done:done + k], k)
        done += k


# ---------------------------------------------------------------------------
# the PortAudio callback
# ---------------------------------------------------------------------------

_ULONG = types.uint64 if ctypes.sizeof(ctypes.c_ulong) == 8 else types.uint32
PA_CALLBACK_SIG = types.intc(types.voidptr, types.voidptr, _ULONG, types.voidptr, _ULONG, types.voidptr)


@njit(**JIT)
def _record(st, out, frames):
    """Copy the block into the record ring for the writer thread; a full ring
    drops the block and counts it (the callback never waits for the disk)."""
    ring = st[S_RECORD]
    index = st[S_RECORD_INDEX]
    cap = ring.shape[0]
    w = index[L.IX_WRITE]
    if w + frames - load_acquire(index, L.IX_READ) > cap:
        st[S_COUNTERS][L.CT_RECORD_DROPPED] += frames
        return
    for i in range(frames):
        row = (w + i) & (cap - 1)
        ring[row, 0] = out[i, 0]
        ring[row, 1] = out[i, 1]
    store_release(index, L.IX_WRITE, w + frames)


@njit(nogil=True, cache=True)
def record_drain(ring, index, out):
    """Writer thread: copy up to len(out) recorded frames into ``out``; returns the count."""
    w = load_acquire(index, L.IX_WRITE)
    r = index[L.IX_READ]
    cap = ring.shape[0]
    k = min(w - r, out.shape[0])
    for i in range(k):
        row = (r + i) & (cap - 1)
        out[i, 0] = ring[row, 0]
        out[i, 1] = ring[row, 1]
    store_release(index, L.IX_READ, r + k)
    return k


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
    faults0 = thread_major_faults()
    counters[L.CT_CALLBACKS] += 1
    if flags & PA_OUTPUT_UNDERFLOW:
        counters[L.CT_UNDERFLOWS] += 1
    spin = params[L.P_SPIN_US]
    if spin > 0.0:
        # test hook: make this one callback late on purpose
        params[L.P_SPIN_US] = 0.0
        while monotonic_ns() - t0 < spin * 1000.0:
            pass
    max_block = st[S_BUS].shape[1]
    done = 0
    while done < frames:
        k = min(max_block, frames - done)
        render_block(st, out[done:done + k], k)
        done += k
    if params[L.P_RECORD] != 0.0:
        _record(st, out, frames)
    # page faults that went to the disk while rendering (memory-mapped samples)
    counters[L.CT_MAJOR_FAULTS] += thread_major_faults() - faults0
    dur = monotonic_ns() - t0
    idx = counters[L.CT_DUR_INDEX]
    durations[idx & (durations.shape[0] - 1)] = np.float32(dur)
    counters[L.CT_DUR_INDEX] = idx + 1
    if dur > counters[L.CT_MAX_NS]:
        counters[L.CT_MAX_NS] = dur
    if dur * counters[L.CT_SAMPLE_RATE] > frames * 1_000_000_000:
        counters[L.CT_OVERRUNS] += 1


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
