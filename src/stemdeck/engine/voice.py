"""Voices: one playing stem each. Interpolation (4-point Hermite), loops,
sections, declick fades, and the voice lifecycle (start, fade out, free,
slot reference counts). Audio thread only (inside the render kernel).
"""

from __future__ import annotations

import numpy as np
from numba import carray, njit

from stemdeck.engine import kernel_cache  # noqa: F401  (before any kernel compiles: where they are cached)
from stemdeck.engine import commands as C
from stemdeck.engine import layout as L
from stemdeck.engine.rings import post_event
from stemdeck.engine.rt import address_as_pointer
from stemdeck.engine.state import (JIT, S_BUFFER_BPM, S_CLOCK, S_KL_F, S_KL_I, S_PARAMS, S_SLOT_REFS,
                                   S_SLOTS, S_VF, S_VI, S_COUNTERS)

I16_SCALE = 1.0 / 32768.0
I32_SCALE = 1.0 / 2147483648.0


@njit(**JIT)
def release_slot_if_unused(st, slot):
    refs = st[S_SLOT_REFS]
    if refs[slot, L.SR_VOICES] <= 0 and refs[slot, L.SR_BOUND] <= 0:
        refs[slot, L.SR_VOICES] = 0
        refs[slot, L.SR_BOUND] = 0
        post_event(st, C.EV_SLOT_RELEASED, slot, 0.0, 0.0)


@njit(**JIT)
def free_voice(st, v):
    vi = st[S_VI]
    slot = vi[v, L.VI_SLOT]
    vi[v, L.VI_STATE] = L.V_FREE
    st[S_SLOT_REFS][slot, L.SR_VOICES] -= 1
    release_slot_if_unused(st, slot)


@njit(**JIT)
def fade_out(st, v):
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
def start_voice(st, bid, slot, deck, rate, volume, loop, start, sec_start, sec_dur, frame, pos_override):
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
        post_event(st, C.EV_VOICES_FULL, bid, 0.0, 0.0)
        return -1
    frames = slots[slot, L.SL_FRAMES]
    lo = 0.0
    hi = float(frames)
    if sec_start >= 0.0:
        # section boundaries on whole frames, so loop lengths are exact
        lo = min(np.floor(sec_start * sr + 0.5), float(frames))
        hi = min(lo + np.floor(sec_dur * sr + 0.5), float(frames))
    if hi - lo < 1.0:
        post_event(st, C.EV_ENDED, bid, frame, 0.0)
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
    vi[v, L.VI_SEAM] = L.SEAM_UNKNOWN
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


_F05 = np.float32(0.5)
_F15 = np.float32(1.5)
_F20 = np.float32(2.0)
_F25 = np.float32(2.5)


@njit(inline="always")
def _hermite32(xm1, x0, x1, x2, t):
    """:func:`_hermite` in single precision, for the steady path: float32
    keeps 24 bits (-144 dB), more than any source has, and drops the eight
    float32 -> float64 conversions per frame that doubled the loop's cost."""
    c1 = _F05 * (x1 - xm1)
    c2 = xm1 - _F25 * x0 + _F20 * x1 - _F05 * x2
    c3 = _F05 * (x2 - xm1) + _F15 * (x0 - x1)
    return ((c3 * t + c2) * t + c1) * t + x0


@njit(inline="always")
def _steady_frame(data, ip, t, left, right):
    # unsigned indices: numba then skips its negative-index wraparound checks
    a = ip - _U1
    b = ip + _U1
    c = ip + _U2
    return (_hermite32(np.float32(data[a, left]), np.float32(data[ip, left]), np.float32(data[b, left]),
                       np.float32(data[c, left]), t),
            _hermite32(np.float32(data[a, right]), np.float32(data[ip, right]), np.float32(data[b, right]),
                       np.float32(data[c, right]), t))


@njit(nogil=True, cache=True, error_model="numpy", fastmath={"contract"})
def _run_steady(data, k, bus, off, count, pos, rate, rate_step, right):
    """The common case, kept branch-free: constant gain ``k``, every
    interpolation point inside the data, no seam, no fade. Stereo and mono
    get separate loops so the channel columns are constants. The position
    stays float64 (a frame index to 2**53); the interpolation is float32,
    which took the reference workload's 1024-frame block from 196 to 133 us
    in ``stemdeck bench``."""
    k32 = np.float32(k)
    if right == 1:
        for i in range(off, off + count):
            ip = np.uint64(pos)                # pos > 0 here, so this is floor
            l, r = _steady_frame(data, ip, np.float32(pos - float(ip)), _U0, _U1)
            bus[i, 0] += l * k32
            bus[i, 1] += r * k32
            pos += rate
            rate += rate_step
    else:
        for i in range(off, off + count):
            ip = np.uint64(pos)
            l, r = _steady_frame(data, ip, np.float32(pos - float(ip)), _U0, _U0)
            bus[i, 0] += l * k32
            bus[i, 1] += l * k32
            pos += rate
            rate += rate_step
    return pos, rate


@njit(**JIT)
def _seam_mode(data, lo, hi, fd, right):
    """How to smooth a loop's seam. With audio before the loop start,
    crossfade into it (the loop keeps its exact length). Without, look at
    the seam itself: a loop cut to loop (the jump from its last sample to its
    first no bigger than the waveform's own steps nearby) needs nothing;
    anything else dips to silence and back over the declick time."""
    if lo >= fd + 2.0:
        return L.SEAM_XFADE
    n = hi - lo
    if n < 16:
        return L.SEAM_DIP
    jump = 0.0
    step = 0.0
    for ch in (0, right):
        jump = max(jump, abs(float(data[hi - 1, ch]) - float(data[lo, ch])))
        for k in range(1, 8):
            step = max(step, abs(float(data[hi - k, ch]) - float(data[hi - k - 1, ch])),
                       abs(float(data[lo + k, ch]) - float(data[lo + k - 1, ch])))
    return L.SEAM_NONE if jump <= 2.0 * step else L.SEAM_DIP


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
    if loop and vi[L.VI_SEAM] == L.SEAM_UNKNOWN:
        vi[L.VI_SEAM] = _seam_mode(data, lo, hi, fd, right)
    xfade_seam = loop and vi[L.VI_SEAM] == L.SEAM_XFADE
    dip = loop and vi[L.VI_SEAM] == L.SEAM_DIP
    end_fade = dip or not loop                 # one-shots fade out at their end
    # the steady region: interpolation points inside the data (and the loop),
    # clear of the seam and end fades
    safe_lo = 1.0
    safe_hi = min(float(nframes) - 3.0, fhi - fd - 1.0 if (end_fade or xfade_seam) else fhi)
    if loop:
        safe_lo = flo + 1.0
        safe_hi = min(safe_hi, fhi - 3.0)
        if dip and vi[L.VI_WRAPPED]:
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
            elif end_fade:
                edge = (fhi - pos) / fd
        elif dip and pos < flo + fd and vi[L.VI_WRAPPED]:
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
                if dip:                         # from now on the seam dips back in
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
def render_voices(st, off, n, frame0, active, deck_filter, dest):
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
    bpm_step = clock[L.CK_BPM_STEP] if clock[L.CK_BPM_REM] > 0.0 else 0.0
    # the clock a lookahead ahead; its ramp may end inside this segment
    # (segments split only at the timeline's ramp ends): glide to its target
    ahead_step = 0.0
    if clock[L.CK_A_REM] > 0.0:
        ahead_step = clock[L.CK_A_STEP] if clock[L.CK_A_REM] >= n else \
            (clock[L.CK_A_TGT] - clock[L.CK_A_BPM]) / n
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
        if ahead > 0.0:
            bpm = clock[L.CK_A_BPM]
            step = ahead_step
        rate = vf[v, L.VF_RATE]
        rate_step = 0.0
        src_bpm = bpm_table[bid]
        if src_bpm > 0.0:
            rate_step = rate * step / src_bpm
            rate = rate * bpm / src_bpm
        left = vf[v, L.VF_NUDGE_LEFT]
        if left != 0.0:
            # catching up after a tempo change that came with short notice
            d = min(abs(left), vf[v, L.VF_NUDGE_RATE] * n)
            d = d if left > 0.0 else -d
            vf[v, L.VF_NUDGE_LEFT] = left - d
            rate += d / n
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
            post_event(st, C.EV_ENDED, bid, frame0 + rendered + ahead, 0.0)
        if done != 0:
            free_voice(st, v)
            count -= 1
    return count
