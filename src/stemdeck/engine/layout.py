"""The engine's state: preallocated numpy arrays and the table that points at them.

Allocated once, on the control thread, before audio starts; read and written
afterwards only by the render kernel, except where a field's comment names a
control-thread writer (the sample table rows of slots not yet bound, the
producer side of the command ring, and ``params``). The kernel reaches every
array through ``State.table`` (one int64 row per array: address and shape),
which is what the PortAudio callback receives as its ``userData`` pointer.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from stemdeck.engine.commands import DECKS, EV_WIDTH, MAX_BUFFER_IDS, REC_WIDTH

DEFAULT_VOICES = 512
DEFAULT_SLOTS = 1024
DURATION_RING = 8192           # callback durations kept for percentiles (a power of two)
RECORD_RING = 1 << 18          # frames of master output buffered for --record (~6 s)
PENDING = 4096                 # commands waiting for their frame inside the engine

# sample formats in the slot table
FMT_F32, FMT_I16, FMT_I32 = 0, 1, 2
# slot table columns: written by control code before the slot is bound
SL_ADDR, SL_FRAMES, SL_CHANNELS, SL_FORMAT = range(4)
# slot reference counts (kernel only)
SR_VOICES, SR_BOUND = range(2)
# buffer table columns (kernel only): bound slot (-1 none), deck, and the deck
# of the latest BIND drained from the ring (known before that BIND is applied)
BF_SLOT, BF_DECK, BF_PLANNED_DECK = range(3)

# voice float columns
(VF_POS, VF_RATE, VF_GAIN, VF_GAIN_TGT, VF_GAIN_STEP, VF_GAIN_REM, VF_ENV, VF_ENV_STEP,
 VF_LO, VF_HI, VF_START_FRAME, VF_NUDGE_LEFT, VF_NUDGE_RATE, NVF) = range(14)
# voice int columns
VI_STATE, VI_BUF, VI_SLOT, VI_DECK, VI_LOOP, VI_WRAPPED, VI_SEAM, NVI = range(8)
# how a loop's seam is smoothed (decided on the voice's first render)
SEAM_UNKNOWN, SEAM_NONE, SEAM_XFADE, SEAM_DIP = -1, 0, 1, 2
V_FREE, V_PLAYING, V_STOPPING = 0, 1, 2

# ramped knobs: rows of (current, target, step, frames remaining)
R_MASTER = 0
R_LEVEL = 1                    # + deck
R_XFADE = R_LEVEL + DECKS      # + deck (C and D stay at 1)
R_EQ = R_XFADE + DECKS         # + deck * 3 + band
NRAMPS = R_EQ + 3 * DECKS
RP_CUR, RP_TGT, RP_STEP, RP_REM = range(4)

# un-ramped parameters the control thread may write directly (read once per block)
P_LIMITER_ON, P_SPIN_US, P_DECLICK, P_DEFAULT_RAMP, P_RECORD, P_EQ_ON, P_LOOKAHEAD, NPARAMS = range(8)

# clock: bpm now, target, step per frame, frames of ramp left, beats elapsed, base bpm
CK_BPM, CK_BPM_TGT, CK_BPM_STEP, CK_BPM_REM, CK_BEATS, CK_BASE_BPM = range(6)
# the "ahead" clock: the tempo a lookahead ahead of the timeline, which decks
# running ahead for key lock play at (its commands arrive a lookahead early)
CK_A_BPM, CK_A_TGT, CK_A_STEP, CK_A_REM, NCLOCK = range(6, 11)

# counters (int64). The producer writes only CT_DROPPED; everything else is the kernel's.
(CT_FRAME, CT_BLOCKS, CT_VOICES, CT_APPLIED, CT_LATE, CT_DROPPED, CT_PENDING_FULL,
 CT_EVENTS_DROPPED, CT_LIMITING, CT_PENDING, CT_CALLBACKS, CT_UNDERFLOWS, CT_OVERRUNS,
 CT_DUR_INDEX, CT_MAX_NS, CT_SAMPLE_RATE, CT_RECORD_DROPPED, CT_KL_STARVED, CT_MAJOR_FAULTS,
 CT_SLEPT, CT_LATE_SLEPT, CT_LATE_PREEMPTED, CT_LATE_STOLEN, CT_MAX_CPU_NS,
 NCOUNTERS) = range(25)
# Why a callback was late (kernel.py): it slept (waited on a lock or a page),
# another thread took its CPU (preempted), or neither and it ran for under half
# of its wall time: the CPU was taken away below the OS (a VM host's steal
# time). Late callbacks not in these three computed for too long.

# the EQ (dsp/eq.py): a coefficient table of rows of five (four used), and
# one flat state array of rows x lanes, a lane per deck channel (deck * 2 +
# channel), so that the four decks' filters run side by side in SIMD: rows
# 0-11 are the six biquads' (z1, z2), then the lane gains and scratch rows.
EQ_BIQUADS = 7
EQ_LANES = 2 * DECKS
EQ_KL, EQ_KM, EQ_KH, EQ_X, EQ_Y, EQ_ROWS = range(12, 18)
# limiter state: gain, release coefficient, threshold
LM_GAIN, LM_RELEASE, LM_THRESHOLD, NLIMITER = range(4)

# key lock, per deck (see stretch.py: lookahead, delay line, stretcher, mix)
(KI_MODE, KI_HANDLE, KI_PAD, KI_DROP, KI_FIFO_R, KI_FIFO_W, KI_DL_W, KI_TARGET, KI_QUIET,
 KI_PLANNED, KI_DELAY, KI_HOLD, NKI) = range(13)
KL_PLAIN, KL_AHEAD = 0, 1      # KI_MODE: voices on the timeline / running ahead by the lookahead
KF_MIX, KF_PITCH, KF_RATE, NKF = range(4)   # plain->stretched mix; pitch scale sent; deck's rate
# Rubber Band functions in the function table (addresses; 0 when the library is missing)
FN_PROCESS, FN_AVAILABLE, FN_RETRIEVE, FN_SET_PITCH, FN_RESET, FN_START_DELAY, NFN = range(7)
KL_SCRATCH = 8192              # the stretcher's maximum process size
KL_FIFO = 16384                # stretched output waiting to be mixed (a power of two)
KL_DELAY = 16384               # the unstretched path's delay line (a power of two)

# the clock as of the last block boundary, published for other threads (seqlock)
SN_FRAME, SN_BEATS, SN_BPM, SN_BPM_TGT, SN_BPM_STEP, SN_BPM_REM, NSNAP = range(7)

# ring index arrays keep writer and reader 64 bytes apart (no false sharing)
IX_WRITE, IX_READ = 0, 8


@dataclass
class State:
    """Every array the kernel mixes from; the field order is the table order."""
    counters: np.ndarray
    params: np.ndarray
    clock: np.ndarray
    ramps: np.ndarray
    voices_f: np.ndarray
    voices_i: np.ndarray
    slots: np.ndarray
    slot_refs: np.ndarray
    buffers: np.ndarray
    buffer_bpm: np.ndarray
    ring: np.ndarray
    ring_index: np.ndarray
    pending: np.ndarray
    events: np.ndarray
    events_index: np.ndarray
    eq_coefs: np.ndarray
    eq_state: np.ndarray
    bus: np.ndarray
    limiter: np.ndarray
    durations: np.ndarray
    deck_active: np.ndarray
    record: np.ndarray
    record_index: np.ndarray
    kl_i: np.ndarray
    kl_f: np.ndarray
    kl_fn: np.ndarray
    kl_ptrs: np.ndarray
    kl_in: np.ndarray
    kl_out: np.ndarray
    kl_fifo: np.ndarray
    kl_delay: np.ndarray
    clock_snap: np.ndarray
    clock_seq: np.ndarray
    table: np.ndarray = None

    @classmethod
    def allocate(cls, sample_rate, max_block, max_voices, max_slots, ring_size, base_bpm):
        if ring_size & (ring_size - 1):
            raise ValueError("ring_size must be a power of two")
        s = cls(
            counters=np.zeros(NCOUNTERS, np.int64),
            params=np.zeros(NPARAMS, np.float64),
            clock=np.zeros(NCLOCK, np.float64),
            ramps=np.zeros((NRAMPS, 4), np.float64),
            voices_f=np.zeros((max_voices, NVF), np.float64),
            voices_i=np.zeros((max_voices, NVI), np.int64),
            slots=np.zeros((max_slots, 4), np.int64),
            slot_refs=np.zeros((max_slots, 2), np.int64),
            buffers=np.full((MAX_BUFFER_IDS, 3), -1, np.int64),
            buffer_bpm=np.zeros(MAX_BUFFER_IDS, np.float64),
            ring=np.zeros((ring_size, REC_WIDTH), np.float64),
            ring_index=np.zeros(16, np.int64),
            pending=np.zeros((PENDING, REC_WIDTH), np.float64),
            events=np.zeros((1024, EV_WIDTH), np.float64),
            events_index=np.zeros(16, np.int64),
            eq_coefs=np.zeros((EQ_BIQUADS, 5), np.float64),
            eq_state=np.zeros(EQ_ROWS * EQ_LANES, np.float64),
            bus=np.zeros((DECKS, max_block, 2), np.float32),
            limiter=np.zeros(NLIMITER, np.float64),
            durations=np.zeros(DURATION_RING, np.float32),
            deck_active=np.zeros(DECKS, np.int64),
            record=np.zeros((RECORD_RING, 2), np.float32),
            record_index=np.zeros(16, np.int64),
            kl_i=np.zeros((DECKS, NKI), np.int64),
            kl_f=np.zeros((DECKS, NKF), np.float64),
            kl_fn=np.zeros(NFN, np.int64),
            kl_ptrs=np.zeros((DECKS, 4), np.int64),
            kl_in=np.zeros((DECKS, 2, KL_SCRATCH), np.float32),
            kl_out=np.zeros((DECKS, 2, KL_SCRATCH), np.float32),
            kl_fifo=np.zeros((DECKS, KL_FIFO, 2), np.float32),
            kl_delay=np.zeros((DECKS, KL_DELAY, 2), np.float32),
            clock_snap=np.zeros(NSNAP, np.float64),
            clock_seq=np.zeros(16, np.int64),
        )
        s.counters[CT_SAMPLE_RATE] = sample_rate
        s.params[P_LIMITER_ON] = 1.0
        s.params[P_EQ_ON] = 1.0
        s.params[P_DECLICK] = round(0.005 * sample_rate)       # 5 ms start/stop/seam fades
        s.params[P_DEFAULT_RAMP] = round(0.005 * sample_rate)  # 5 ms knob ramps: no zipper noise
        s.clock[CK_BPM] = s.clock[CK_BPM_TGT] = s.clock[CK_BASE_BPM] = base_bpm
        s.clock[CK_A_BPM] = s.clock[CK_A_TGT] = base_bpm
        s.clock_snap[SN_BPM] = s.clock_snap[SN_BPM_TGT] = base_bpm
        for r in range(NRAMPS):
            s.ramps[r, RP_CUR] = s.ramps[r, RP_TGT] = 1.0
        s.limiter[LM_GAIN] = 1.0
        # release toward unity gain with a 100 ms time constant
        s.limiter[LM_RELEASE] = 1.0 - np.exp(-1.0 / (0.1 * sample_rate))
        s.limiter[LM_THRESHOLD] = 10 ** (-0.3 / 20)           # -0.3 dBFS
        for d in range(DECKS):
            # Rubber Band takes channels as arrays of pointers: in L, in R, out L, out R
            s.kl_ptrs[d] = [s.kl_in[d, 0].ctypes.data, s.kl_in[d, 1].ctypes.data,
                            s.kl_out[d, 0].ctypes.data, s.kl_out[d, 1].ctypes.data]
            s.kl_f[d, KF_PITCH] = s.kl_f[d, KF_RATE] = 1.0
        s.table = s._build_table()
        return s

    def _build_table(self) -> np.ndarray:
        arrays = [getattr(self, f.name) for f in fields(self) if f.name != "table"]
        table = np.zeros((len(arrays), 5), np.int64)  # address, then up to 4 dims
        for i, a in enumerate(arrays):
            assert a.flags.c_contiguous
            table[i, 0] = a.ctypes.data
            table[i, 1:1 + a.ndim] = a.shape
        return table
