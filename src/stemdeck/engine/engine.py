"""Engine: the mixer's state, its command ring, and ``render(out)``.

Threads:

- ``render`` runs on the audio thread (the compiled PortAudio callback calls
  the same kernel through :attr:`callback_address`), or on the one thread
  doing an offline render. It never takes the GIL, allocates or blocks.
- Every other method is for the one control thread that owns the engine
  (single producer). They only build command records and push them; none
  touches the state the kernel mixes from.
- :meth:`events` / :meth:`stats` are for the control or reporter thread
  (single consumer of the event ring).
- The read face (:meth:`ring_free`, :meth:`commands_dropped`,
  :meth:`durations_since`, :meth:`voice_regions`, ...) is how code outside
  the engine looks at its state: no other module touches ``state``.
  :class:`~stemdeck.engine.face.EngineFace` is what control code may call.

Samples are added off the audio thread (:meth:`add_sample` keeps a reference
to the array), swapped in by an ``OP_BIND`` command, and handed back through
an ``EV_SLOT_RELEASED`` event once no voice and no buffer ID uses them; only
then is the reference dropped, so memory is never freed under the callback.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from stemdeck.engine import commands as C
from stemdeck.engine import layout as L
from stemdeck.engine import kernel, rings
from stemdeck.engine.dsp import eq as eqdsp
from stemdeck.engine.face import VoiceRegion
from stemdeck.errors import CommandError

SAMPLE_FORMATS = {np.dtype(np.float32): L.FMT_F32, np.dtype(np.int16): L.FMT_I16,
                  np.dtype(np.int32): L.FMT_I32}


class Engine:
    """``commands.DECKS`` decks of stems, mixed block by block by one compiled function."""

    renders = True    # its clock moves by rendering (see face.EngineFace)

    def __init__(self, sample_rate: int = 44100, *, max_block: int = 8192,
                 max_voices: int = L.DEFAULT_VOICES, max_slots: int = L.DEFAULT_SLOTS,
                 ring_size: int = 8192, base_bpm: float = 120.0,
                 keylock_engine: str = C.DEFAULT_KEYLOCK_ENGINE):
        if sample_rate not in C.SAMPLE_RATES:
            raise CommandError(f"sample rate {sample_rate} Hz is not supported; use "
                               + " or ".join(map(str, C.SAMPLE_RATES)))
        self.sample_rate = int(sample_rate)
        self.max_block = int(max_block)
        self.state = L.State.allocate(self.sample_rate, self.max_block, max_voices,
                                      max_slots, ring_size, base_bpm)
        self.state.eq_coefs[:] = eqdsp.isolator_coefficients(self.sample_rate)
        self._samples: dict[int, object] = {}        # slot -> array kept alive for the kernel
        self._free_slots = list(range(max_slots - 1, -1, -1))
        self._seq = 0
        self._stretchers: list[int] = []
        self._rubberband = None
        self.keylock_engine = keylock_engine
        self._setup_keylock(keylock_engine)

    def _setup_keylock(self, engine_name: str) -> None:
        """One real-time stretcher per deck, made now (allocation is not for the
        audio thread); the kernel reaches them through the function table."""
        from stemdeck.engine.rubberband import RubberBand, lookahead_frames

        st = self.state
        st.params[L.P_LOOKAHEAD] = lookahead_frames(self.sample_rate, engine_name)
        rb = RubberBand.load()
        if rb is None:
            return
        self._rubberband = rb
        st.kl_fn[:] = rb.function_table()
        for d in range(C.DECKS):
            handle = rb.new(self.sample_rate, engine_name)
            self._stretchers.append(handle)
            st.kl_i[d, L.KI_HANDLE] = handle
            st.kl_i[d, L.KI_PAD] = rb.start_pad(handle)

    @property
    def keylock_available(self) -> bool:
        return bool(self._stretchers)

    @property
    def keylock_latency(self) -> int:
        """Frames a keylocked deck renders ahead: what key lock adds to the
        latency of commands on that deck (scheduled commands are compensated)."""
        return int(self.state.params[L.P_LOOKAHEAD])

    def close(self) -> None:
        """Free the stretchers. Only once no audio thread can call the kernel."""
        if self._rubberband is not None:
            self.state.kl_fn[:] = 0
            self.state.kl_i[:, L.KI_HANDLE] = 0
            for handle in self._stretchers:
                self._rubberband.delete(handle)
            self._stretchers = []

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # -- the render path ---------------------------------------------------
    def render(self, out: np.ndarray) -> np.ndarray:
        """Fill ``out`` (frames x 2, float32, C-contiguous) with the next frames
        of the mix; commands due inside it apply at their exact frame. Blocks
        longer than ``max_block`` are rendered in pieces."""
        if out.dtype != np.float32 or out.ndim != 2 or out.shape[1] != 2 or not out.flags.c_contiguous:
            raise ValueError("out must be a C-contiguous (frames, 2) float32 array")
        if out.shape[0] < 1:
            raise ValueError("out must hold at least one frame")
        kernel.render_state(out, self.state.table)
        return out

    @property
    def frame(self) -> int:
        """Frames rendered so far (the engine's clock)."""
        return int(self.state.counters[L.CT_FRAME])

    @property
    def callback_address(self) -> int:
        """Address of the compiled PortAudio callback (``PaStreamCallback``)."""
        return kernel.portaudio_callback().address

    @property
    def userdata_address(self) -> int:
        """The ``userData`` pointer the callback expects: the state table."""
        return self.state.table.ctypes.data

    # -- samples -------------------------------------------------------------
    def add_sample(self, data: np.ndarray) -> int:
        """Register audio (frames x channels, 1 or 2 channels, float32/int16/int32,
        C-contiguous; int formats are full-scale PCM) and return its slot.
        The engine keeps a reference until the slot is released."""
        if data.ndim == 1:
            data = data.reshape(-1, 1)
        fmt = SAMPLE_FORMATS.get(data.dtype)
        if fmt is None:
            raise CommandError(f"sample format {data.dtype} is not supported")
        if data.shape[1] not in (1, 2) or data.shape[0] < 1:
            raise CommandError(f"sample shape {data.shape}: need frames x 1 or 2 channels")
        if not data.flags.c_contiguous:
            data = np.ascontiguousarray(data)
        if not self._free_slots:
            self._reclaim()
            if not self._free_slots:
                raise CommandError("no free sample slot: free some buffers first")
        slot = self._free_slots.pop()
        self._samples[slot] = data
        row = self.state.slots[slot]
        row[L.SL_ADDR] = data.ctypes.data
        row[L.SL_FRAMES] = data.shape[0]
        row[L.SL_CHANNELS] = data.shape[1]
        row[L.SL_FORMAT] = fmt
        return slot

    def discard_slot(self, slot: int) -> None:
        """Give back a slot that was added but never bound."""
        self._samples.pop(slot, None)
        self._free_slots.append(slot)

    def sample_of(self, slot: int):
        return self._samples.get(slot)

    # -- commands (control thread) ---------------------------------------------
    def post(self, op: int, target: float = 0.0, a: float = 0.0, b: float = 0.0, c: float = 0.0,
             d: float = 0.0, e: float = 0.0, f: float = 0.0, *, at: int | None = None) -> bool:
        """Push one command record; ``at`` is an absolute frame (None: next block;
        a :class:`~stemdeck.engine.commands.Soon` frame: that frame if it is still
        ahead, else at once, never counted late). Returns False (and counts it)
        when the ring is full: never blocks."""
        self._seq += 1
        frame = C.ASAP if at is None else float(at)
        soft = C.SOFT if isinstance(at, C.Soon) else 0     # see commands.Soon
        # all floats: ring_push is compiled once, not once per int/float mix of arguments
        ok = rings.ring_push(self.state.ring, self.state.ring_index, frame, float(self._seq), float(op | soft),
                              float(target), float(a), float(b), float(c), float(d), float(e), float(f))
        if not ok:
            self.state.counters[L.CT_DROPPED] += 1
        return ok

    def bind(self, buffer_id: int, slot: int, deck: int | None = None, *, at=None) -> bool:
        self._check_buffer(buffer_id)
        deck = C.deck_for_buffer(buffer_id) if deck is None else self._check_deck(deck)
        return self.post(C.OP_BIND, buffer_id, slot, deck, at=at)

    def unbind(self, buffer_id: int, *, at=None) -> bool:
        return self.post(C.OP_UNBIND, self._check_buffer(buffer_id), at=at)

    def play(self, buffer_id: int, *, rate: float = 1.0, volume: float = 1.0, loop: bool = False,
             start: float = 0.0, section: tuple[float, float] | None = None, at=None) -> bool:
        """Start (or restart, with a declick) the stem in ``buffer_id``.
        ``start`` is a fraction 0..1 of the buffer; ``section`` is (start s, duration s)."""
        self._check_buffer(buffer_id)
        rate = _finite("rate", rate, C.MIN_RATE, C.MAX_RATE)
        volume = _finite("volume", volume, 0.0, C.MAX_LEVEL)
        start = _finite("start position", start, 0.0, 1.0)
        sec_start, sec_dur = -1.0, 0.0
        if section is not None:
            sec_start = _finite("section start", section[0], 0.0, 1e7)
            sec_dur = _finite("section duration", section[1], 1e-3, 1e7)
        return self.post(C.OP_PLAY, buffer_id, rate, volume, C.PLAY_LOOP if loop else 0,
                         start, sec_start, sec_dur, at=at)

    def stop(self, buffer_id: int, *, at=None) -> bool:
        return self.post(C.OP_STOP, self._check_buffer(buffer_id), at=at)

    def stop_all(self, *, at=None) -> bool:
        return self.post(C.OP_STOP_ALL, at=at)

    def stop_deck(self, deck: int, *, at=None) -> bool:
        return self.post(C.OP_DECK_STOP, self._check_deck(deck), at=at)

    def set_volume(self, buffer_id: int, volume: float, *, ramp: float = 0.0, at=None) -> bool:
        return self.post(C.OP_VOLUME, self._check_buffer(buffer_id), _finite("volume", volume, 0.0, C.MAX_LEVEL),
                         self._ramp_frames(ramp), at=at)

    def set_rate(self, buffer_id: int, rate: float, *, at=None) -> bool:
        return self.post(C.OP_RATE, self._check_buffer(buffer_id), _finite("rate", rate, C.MIN_RATE, C.MAX_RATE),
                         at=at)

    def set_source_bpm(self, buffer_id: int, bpm: float, *, at=None) -> bool:
        """The stem's own tempo; its rate then follows master tempo / bpm (0: ignore tempo)."""
        bpm = 0.0 if bpm == 0 else _finite("bpm", bpm, C.MIN_BPM, C.MAX_BPM)
        return self.post(C.OP_VOICE_BPM, self._check_buffer(buffer_id), bpm, at=at)

    def set_deck_level(self, deck: int, level: float, *, ramp: float = 0.0, at=None) -> bool:
        return self.post(C.OP_DECK_LEVEL, self._check_deck(deck), _finite("level", level, 0.0, C.MAX_LEVEL),
                         self._ramp_frames(ramp), at=at)

    def set_deck_eq(self, deck: int, band: int, gain: float, *, ramp: float = 0.0, at=None) -> bool:
        """``gain`` is linear (0 = kill, 1 = flat, 2 = +6 dB); see dsp.eq.knob_to_gain."""
        if band not in (0, 1, 2):
            raise CommandError(f"EQ band {band!r}: use 0 (low), 1 (mid) or 2 (high)")
        return self.post(C.OP_DECK_EQ, self._check_deck(deck), band,
                         _finite("EQ gain", gain, 0.0, C.MAX_EQ_GAIN), self._ramp_frames(ramp), at=at)

    def set_crossfader_gains(self, gain_a: float, gain_b: float, *, ramp: float = 0.0, at=None) -> bool:
        return self.post(C.OP_XFADE, 0, _finite("deck A gain", gain_a, 0.0, C.MAX_LEVEL),
                         _finite("deck B gain", gain_b, 0.0, C.MAX_LEVEL), self._ramp_frames(ramp), at=at)

    def set_master(self, volume: float, *, ramp: float = 0.0, at=None) -> bool:
        return self.post(C.OP_MASTER, 0, _finite("master volume", volume, 0.0, C.MAX_LEVEL),
                         self._ramp_frames(ramp), at=at)

    def set_tempo(self, bpm: float, *, ramp: float = 0.0, at=None) -> bool:
        """Master tempo; stems with a source bpm follow it. ``ramp`` in seconds."""
        return self.post(C.OP_TEMPO, 0, _finite("bpm", bpm, C.MIN_BPM, C.MAX_BPM),
                         self._ramp_frames(ramp), at=at)

    def set_keylock(self, deck: int, enabled: bool, *, at=None) -> bool:
        """Key lock on a deck: its stems keep their pitch whatever their rate.
        Switching crossfades; an ``EV_KEYLOCK_UNAVAILABLE`` event answers it
        where Rubber Band is not installed."""
        return self.post(C.OP_KEYLOCK, self._check_deck(deck), 1.0 if enabled else 0.0, at=at)

    def set_limiter(self, enabled: bool) -> None:
        """Switch the master limiter (on by default). Control thread; read per block."""
        self.state.params[L.P_LIMITER_ON] = 1.0 if enabled else 0.0

    def run_callback(self, out: np.ndarray, status_flags: int = 0) -> None:
        """What the PortAudio callback does (telemetry, render, record), for a
        backend that drives the engine from its own thread (the null backend)."""
        kernel.run_callback(out, status_flags, self.state.table)

    def set_recording(self, enabled: bool) -> None:
        """Start/stop copying the master output into the record ring."""
        self.state.params[L.P_RECORD] = 1.0 if enabled else 0.0

    def drain_recording(self, out: np.ndarray) -> int:
        """Writer thread (the ring's one consumer): copy recorded frames into
        ``out`` (frames x 2 float32); returns how many."""
        return rings.record_drain(self.state.record, self.state.record_index, out)

    def make_late(self, microseconds: float) -> None:
        """Test hook: the next callback busy-waits this long before rendering."""
        self.state.params[L.P_SPIN_US] = float(microseconds)

    def late_pending(self) -> bool:
        """Whether a :meth:`make_late` wait is still waiting for its callback."""
        return self.state.params[L.P_SPIN_US] != 0.0

    def callback_durations(self) -> np.ndarray:
        """The most recent callback durations in nanoseconds (a copy, oldest first)."""
        return self.durations_since(0)[0]

    def set_eq_enabled(self, enabled: bool) -> None:
        """Bypass the isolator EQ on every deck (on by default; it is cheap).
        For measurements: switching it while audio plays jumps the phase."""
        self.state.params[L.P_EQ_ON] = 1.0 if enabled else 0.0

    # -- feedback (control / reporter thread) ----------------------------------------
    def events(self) -> list[tuple[int, float, float, float]]:
        """Drain the engine's events; slots it released are freed here."""
        out = []
        for kind, a, b, c in rings.events_drain(self.state.events, self.state.events_index):
            kind = int(kind)
            if kind == C.EV_SLOT_RELEASED:
                self._samples.pop(int(a), None)
                self._free_slots.append(int(a))
            out.append((kind, a, b, c))
        return out

    def _reclaim(self) -> None:
        self.events()

    # -- the read face (any thread; reads only) ------------------------------------------------
    def ring_free(self) -> int:
        """Command records the ring can take now (exact for the one producer)."""
        idx = self.state.ring_index
        return self.state.ring.shape[0] - int(idx[L.IX_WRITE] - idx[L.IX_READ])

    def commands_dropped(self) -> int:
        """Commands refused so far because the ring was full."""
        return int(self.state.counters[L.CT_DROPPED])

    def durations_count(self) -> int:
        """Callback durations recorded so far (pass it to :meth:`durations_since`)."""
        return int(self.state.counters[L.CT_DUR_INDEX])

    def durations_since(self, count: int) -> tuple[np.ndarray, int]:
        """The callback durations (ns, float64, oldest first) recorded after the
        first ``count``, as many as the ring still holds, and the count to pass
        next time."""
        idx = self.durations_count()
        ring = self.state.durations
        n = min(idx - int(count), len(ring))
        if n <= 0:
            return np.zeros(0), idx
        return ring[np.arange(idx - n, idx) & (len(ring) - 1)].astype(np.float64), idx

    def voice_regions(self) -> list[VoiceRegion]:
        """Where each playing voice reads now (for read-ahead): its sample's
        address, position, rate with the tempo applied, and loop bounds. Read
        while the audio thread runs: a voice may have moved on meanwhile."""
        st = self.state
        vi, vf, slots = st.voices_i, st.voices_f, st.slots
        bpm = float(st.clock[L.CK_BPM])
        out = []
        for v in np.flatnonzero(vi[:, L.VI_STATE] != L.V_FREE):
            slot = int(vi[v, L.VI_SLOT])
            if not 0 <= slot < slots.shape[0]:
                continue
            rate = abs(float(vf[v, L.VF_RATE]))
            src_bpm = float(st.buffer_bpm[int(vi[v, L.VI_BUF]) % st.buffer_bpm.shape[0]])
            if src_bpm > 0.0:
                rate *= bpm / src_bpm
            out.append(VoiceRegion(int(slots[slot, L.SL_ADDR]), int(vf[v, L.VF_POS]), rate,
                                   bool(vi[v, L.VI_LOOP]), int(vf[v, L.VF_LO]), int(vf[v, L.VF_HI])))
        return out

    def memory(self) -> list[np.ndarray]:
        """Every array the callback reads or writes, for prefaulting them before
        audio starts (audio.realtime.prefault); not for reading the state."""
        return [getattr(self.state, f.name) for f in dataclasses.fields(self.state)]

    def clock_snapshot(self) -> dict:
        """The engine's clock as of its last block boundary, consistent (the
        frame and the tempo clock from the same block) from any thread: the
        kernel publishes it under a seqlock with release/acquire ordering,
        so this holds on ARM as on x86. Keys: frame, beats, bpm, bpm_target,
        bpm_step (per frame), ramp_frames (left in a tempo ramp)."""
        out = np.empty(L.NSNAP, np.float64)
        if not rings.read_clock(self.state.clock_snap, self.state.clock_seq, out):
            raise RuntimeError("the audio thread is stuck publishing its clock")
        return {"frame": int(out[L.SN_FRAME]), "beats": float(out[L.SN_BEATS]), "bpm": float(out[L.SN_BPM]),
                "bpm_target": float(out[L.SN_BPM_TGT]), "bpm_step": float(out[L.SN_BPM_STEP]),
                "ramp_frames": int(round(out[L.SN_BPM_REM]))}

    def stats(self) -> dict:
        """Counters for status replies and reports (a consistent-enough snapshot)."""
        ct = self.state.counters
        return {
            "frame": int(ct[L.CT_FRAME]),
            "blocks": int(ct[L.CT_BLOCKS]),
            "voices": int(ct[L.CT_VOICES]),
            "commands": int(ct[L.CT_APPLIED]),
            "late_commands": int(ct[L.CT_LATE]),
            "dropped_commands": int(ct[L.CT_DROPPED]),
            "pending_overflow": int(ct[L.CT_PENDING_FULL]),
            "events_dropped": int(ct[L.CT_EVENTS_DROPPED]),
            "limiter_active_blocks": int(ct[L.CT_LIMITING]),
            "callbacks": int(ct[L.CT_CALLBACKS]),
            "underflows": int(ct[L.CT_UNDERFLOWS]),
            "overruns": int(ct[L.CT_OVERRUNS]),
            "callback_max_ns": int(ct[L.CT_MAX_NS]),
            "record_dropped_frames": int(ct[L.CT_RECORD_DROPPED]),
            "keylock_starved_frames": int(ct[L.CT_KL_STARVED]),
            "major_faults_in_callbacks": int(ct[L.CT_MAJOR_FAULTS]),
            "callbacks_slept": int(ct[L.CT_SLEPT]),
            "callback_max_cpu_ns": int(ct[L.CT_MAX_CPU_NS]),
            "late_slept": int(ct[L.CT_LATE_SLEPT]),
            "late_preempted": int(ct[L.CT_LATE_PREEMPTED]),
            "late_stolen": int(ct[L.CT_LATE_STOLEN]),
            "keylock_decks": [int(d) for d in range(C.DECKS) if self.state.kl_i[d, L.KI_TARGET]],
            "bpm": float(self.state.clock[L.CK_BPM]),
            "beats": float(self.state.clock[L.CK_BEATS]),
            "samples": len(self._samples),
        }

    # -- validation ---------------------------------------------------------------
    def _check_buffer(self, buffer_id) -> int:
        if isinstance(buffer_id, bool) or not isinstance(buffer_id, (int, np.integer)) or \
                not 0 <= buffer_id < C.MAX_BUFFER_IDS:
            raise CommandError(f"buffer ID {buffer_id!r}: use an integer 0..{C.MAX_BUFFER_IDS - 1}")
        return int(buffer_id)

    def _check_deck(self, deck) -> int:
        if isinstance(deck, bool) or not isinstance(deck, (int, np.integer)) or not 0 <= deck < C.DECKS:
            raise CommandError(f"deck {deck!r}: use 0..{C.DECKS - 1} ({C.DECK_NAMES[0]}..{C.DECK_NAMES[-1]})")
        return int(deck)

    def _ramp_frames(self, seconds: float) -> float:
        seconds = _finite("ramp time", seconds, 0.0, C.MAX_RAMP_S)
        return float(round(seconds * self.sample_rate))


def _finite(name: str, value, lo: float, hi: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise CommandError(f"{name} {value!r} is not a number") from None
    if not math.isfinite(v) or not lo <= v <= hi:
        raise CommandError(f"{name} {value!r} out of range {lo:g}..{hi:g}")
    return v
