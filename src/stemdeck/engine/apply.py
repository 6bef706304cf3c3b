"""Commands, from the ring to the state: ``drain_commands`` moves published
records into the pending queue in (frame, arrival) order; ``apply_command``
carries one out on its frame. Audio thread only.
"""

from __future__ import annotations

from numba import njit

from stemdeck.engine import kernel_cache  # noqa: F401  (before any kernel compiles: where they are cached)
from stemdeck.engine import commands as C
from stemdeck.engine import layout as L
from stemdeck.engine.rings import post_event
from stemdeck.engine.rt import load_acquire, store_release
from stemdeck.engine.state import (JIT, S_BUFFER_BPM, S_BUFFERS, S_CLOCK, S_COUNTERS, S_KL_I, S_PARAMS,
                                   S_PENDING, S_RAMPS, S_RING, S_RING_INDEX, S_SLOT_REFS, S_SLOTS, S_VF,
                                   S_VI)
from stemdeck.engine.stretch import engage_keylock
from stemdeck.engine.voice import fade_out, release_slot_if_unused, start_voice


@njit(**JIT)
def command_lead(st, rec):
    op = int(rec[C.F_OP]) & C.OP_MASK
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
def drain_commands(st, block_start):
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
        op = int(ring[row, C.F_OP])
        if frame < block_start:
            if frame != C.ASAP and not op & C.SOFT:
                counters[L.CT_LATE] += 1
                post_event(st, C.EV_LATE, op & C.OP_MASK, block_start - frame, ring[row, C.F_TARGET])
            frame = block_start
        else:
            # a deck running ahead for key lock hears its voices `lookahead`
            # frames after they render: their commands apply that much earlier
            frame = max(block_start, frame - command_lead(st, ring[row]))
        op &= C.OP_MASK
        if op == C.OP_BIND:
            st[S_BUFFERS][int(ring[row, C.F_TARGET]), L.BF_PLANNED_DECK] = int(ring[row, C.F_B])
        if op == C.OP_KEYLOCK:
            # voice commands drained after this one already see the deck ahead
            st[S_KL_I][int(ring[row, C.F_TARGET]), L.KI_PLANNED] = 1 if ring[row, C.F_A] != 0.0 else 0
        _insert(pending, counters, ring[row], frame, -1)
        if op == C.OP_TEMPO and count + 1 < pending.shape[0]:
            # the same change for the clock of decks running ahead, a lookahead early
            # (due a lookahead before the timeline applies it, which is at once if late)
            due = max(ring[row, C.F_FRAME], block_start) - st[S_PARAMS][L.P_LOOKAHEAD]
            j = _insert(pending, counters, ring[row], max(due, block_start), C.OP_TEMPO_AHEAD)
            pending[j, C.F_C] = due
    store_release(index, L.IX_READ, r)


@njit(**JIT)
def _insert(pending, counters, rec, frame, op):
    """Insert ``rec`` at ``frame`` (keeping (frame, seq) order); ``op`` >= 0
    replaces its op code. Returns its row."""
    count = counters[L.CT_PENDING]
    seq = rec[C.F_SEQ]
    j = count
    while j > 0 and (pending[j - 1, C.F_FRAME] > frame or
                     (pending[j - 1, C.F_FRAME] == frame and pending[j - 1, C.F_SEQ] > seq)):
        for k in range(C.REC_WIDTH):
            pending[j, k] = pending[j - 1, k]
        j -= 1
    for k in range(C.REC_WIDTH):
        pending[j, k] = rec[k]
    pending[j, C.F_FRAME] = frame
    if op >= 0:
        pending[j, C.F_OP] = op
    counters[L.CT_PENDING] = count + 1
    return j


NUDGE_LOOKAHEADS = 4.0   # catch up over four lookaheads: a 10 % tempo step nudges by 2.5 %


@njit(**JIT)
def _tempo_ahead(st, bpm, ramp, late):
    """The tempo change for decks running ahead, ``late`` frames after it was
    due there (a change sent with less notice than the lookahead). Their
    voices already rendered those frames at the old tempo: join the ramp
    where it stands now, and nudge each voice by the distance it missed,
    spread over a few lookaheads with key lock holding the pitch, so the deck
    slides back into phase instead of jumping."""
    clock = st[S_CLOCK]
    old = clock[L.CK_A_BPM]
    change = bpm - old
    clock[L.CK_A_TGT] = bpm
    late = max(late, 0.0)
    if ramp <= 0.0 or late >= ramp:
        clock[L.CK_A_BPM] = bpm
        clock[L.CK_A_STEP] = 0.0
        clock[L.CK_A_REM] = 0.0
        # bpm-frames missed: the whole ramp's half, then the full change
        missed = change * (late - ramp / 2.0) if ramp > 0.0 else change * late
    else:
        step = change / ramp
        clock[L.CK_A_STEP] = step
        clock[L.CK_A_BPM] = old + step * late
        clock[L.CK_A_REM] = ramp - late
        missed = step * late * late / 2.0
    if missed == 0.0:
        return
    vi = st[S_VI]
    vf = st[S_VF]
    kl = st[S_KL_I]
    bpm_table = st[S_BUFFER_BPM]
    span = st[S_PARAMS][L.P_LOOKAHEAD] * NUDGE_LOOKAHEADS
    for v in range(vi.shape[0]):
        if vi[v, L.VI_STATE] == L.V_FREE or kl[vi[v, L.VI_DECK], L.KI_MODE] != L.KL_AHEAD:
            continue
        src = bpm_table[vi[v, L.VI_BUF]]
        if src > 0.0:
            vf[v, L.VF_NUDGE_LEFT] += vf[v, L.VF_RATE] * missed / src
            vf[v, L.VF_NUDGE_RATE] = abs(vf[v, L.VF_NUDGE_LEFT]) / span


@njit(**JIT)
def ramp_to(ramps, r, target, frames):
    if frames <= 0:
        frames = 1.0
    ramps[r, L.RP_TGT] = target
    ramps[r, L.RP_STEP] = (target - ramps[r, L.RP_CUR]) / frames
    ramps[r, L.RP_REM] = frames


@njit(**JIT)
def apply_command(st, rec, frame):
    vi = st[S_VI]
    vf = st[S_VF]
    buffers = st[S_BUFFERS]
    refs = st[S_SLOT_REFS]
    ramps = st[S_RAMPS]
    params = st[S_PARAMS]
    clock = st[S_CLOCK]
    op = int(rec[C.F_OP]) & C.OP_MASK
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
                        start_voice(st, target, slot, int(b), vf[v, L.VF_RATE], vf[v, L.VF_GAIN_TGT],
                                           vi[v, L.VI_LOOP], 0.0, -1.0, 0.0, frame, pos)
                    fade_out(st, v)
            refs[old, L.SR_BOUND] -= 1
            release_slot_if_unused(st, old)
    elif op == C.OP_UNBIND:
        old = buffers[target, L.BF_SLOT]
        for v in range(nv):
            if vi[v, L.VI_STATE] != L.V_FREE and vi[v, L.VI_BUF] == target:
                fade_out(st, v)
        if old >= 0:
            buffers[target, L.BF_SLOT] = -1
            refs[old, L.SR_BOUND] -= 1
            release_slot_if_unused(st, old)
    elif op == C.OP_PLAY:
        slot = buffers[target, L.BF_SLOT]
        if slot < 0:
            post_event(st, C.EV_UNBOUND, op, target, 0.0)
            return
        for v in range(nv):                      # a restart replaces the playing voice
            if vi[v, L.VI_STATE] == L.V_PLAYING and vi[v, L.VI_BUF] == target:
                fade_out(st, v)
        start_voice(st, target, slot, buffers[target, L.BF_DECK], a, b, int(c) & C.PLAY_LOOP,
                     rec[C.F_D], rec[C.F_E], rec[C.F_F], frame, -1.0)
    elif op == C.OP_STOP:
        for v in range(nv):
            if vi[v, L.VI_BUF] == target:
                fade_out(st, v)
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
        ramp_to(ramps, L.R_LEVEL + target, a, b if b > 0 else default_ramp)
    elif op == C.OP_DECK_EQ:
        ramp_to(ramps, L.R_EQ + target * 3 + int(a), b, c if c > 0 else default_ramp)
    elif op == C.OP_XFADE:
        frames = c if c > 0 else default_ramp
        ramp_to(ramps, L.R_XFADE + 0, a, frames)
        ramp_to(ramps, L.R_XFADE + 1, b, frames)
    elif op == C.OP_MASTER:
        ramp_to(ramps, L.R_MASTER, a, b if b > 0 else default_ramp)
    elif op == C.OP_TEMPO:
        clock[L.CK_BPM_TGT] = a
        if b <= 0:
            clock[L.CK_BPM] = a
            clock[L.CK_BPM_STEP] = 0.0
            clock[L.CK_BPM_REM] = 0.0
        else:
            clock[L.CK_BPM_STEP] = (a - clock[L.CK_BPM]) / b
            clock[L.CK_BPM_REM] = b
    elif op == C.OP_TEMPO_AHEAD:
        _tempo_ahead(st, a, b, frame - rec[C.F_C])
    elif op == C.OP_STOP_ALL:
        for v in range(nv):
            fade_out(st, v)
    elif op == C.OP_VOICE_BPM:
        st[S_BUFFER_BPM][target] = a
    elif op == C.OP_DECK_STOP:
        for v in range(nv):
            if vi[v, L.VI_DECK] == target:
                fade_out(st, v)
    elif op == C.OP_KEYLOCK:
        if a != 0.0:
            engage_keylock(st, target, frame)
        else:
            st[S_KL_I][target, L.KI_TARGET] = 0
