"""The beat clock on the control side: tempo as a function of the engine frame,
beats <-> frames, quantised start frames, and one event per beat for the
reporter thread.

The engine integrates the tempo per frame (``engine.stats()['beats']``):
frame ``f`` adds ``bpm(f) / 60 / sample_rate`` beats, and a tempo command at
frame ``F`` with a ramp of ``R`` frames makes ``bpm(F + i) = bpm(F) + i *
step`` for ``i < R`` (``step = (target - bpm(F)) / R``) and ``target`` from
``F + R`` on. :class:`TempoMap` is that same arithmetic in Python, started
from a consistent snapshot of the engine's clock and extended by every tempo
command the Controller posts (each with an explicit frame), so it answers
"which beat is frame f" and "which frame is beat b" for frames the engine has
not rendered yet, ramps included, to the frame.

Threads:

- :class:`TempoMap` belongs to the control thread (the Controller's).
- :func:`engine_clock` reads the engine's counters; any thread may call it.
- :class:`ClockReporter` is for the reporter thread: it reads only the
  engine's counters and the Controller's published :class:`BeatGrid` (an
  immutable object replaced whole on ``/reset`` and ``/set_meter``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace


#: Beats closer than this to a boundary count as on it (the engine's float sum
#: of per-block increments drifts by ~1e-12 beats per hour; 1e-7 beats is
#: 0.002 frames at 120 BPM).
EPS_BEATS = 1e-7
#: A tempo command is folded into the map's anchor (and the anchor re-read from
#: the engine) once the engine has rendered this far past it: by then even a
#: command that arrived a block late has been applied.
SETTLE_FRAMES = 16384


@dataclass(frozen=True)
class ClockState:
    """The engine's tempo clock at the start of ``frame`` (before it renders)."""
    frame: int
    beats: float          # beats elapsed before ``frame``
    bpm: float            # tempo of ``frame``
    target: float         # tempo at the end of the current ramp
    step: float           # BPM per frame while ramping
    left: int             # frames of ramp left (0: steady)

    def run(self, n: int, sample_rate: int) -> "ClockState":
        """The state ``n`` >= 0 frames later, with no command in between."""
        if n <= 0:
            return self
        k = 60.0 * sample_rate
        if self.left > 0 and self.step != 0.0:
            m = min(n, self.left)
            beats = self.beats + (m * self.bpm + self.step * m * (m - 1) / 2.0) / k
            left = self.left - m
            bpm = self.target if left <= 0 else self.bpm + self.step * m
            s = ClockState(self.frame + m, beats, bpm, self.target,
                           self.step if left > 0 else 0.0, max(left, 0))
            return s.run(n - m, sample_rate)
        return ClockState(self.frame + n, self.beats + n * self.bpm / k, self.bpm, self.bpm, 0.0, 0)

    def apply(self, bpm: float, ramp_frames: int) -> "ClockState":
        """A tempo command taking effect at this frame (the kernel's OP_TEMPO)."""
        if ramp_frames <= 0:
            return ClockState(self.frame, self.beats, bpm, bpm, 0.0, 0)
        return ClockState(self.frame, self.beats, self.bpm, bpm, (bpm - self.bpm) / ramp_frames,
                          int(ramp_frames))

    def frames_to(self, beats: float, sample_rate: int, limit: int | None = None) -> int | None:
        """Frames from here until the first frame whose beat count reaches
        ``beats`` (0 if already there), with no command in between; None if
        that is more than ``limit`` frames away."""
        need = beats - self.beats
        if need <= EPS_BEATS:
            return 0
        k = 60.0 * sample_rate
        s, done = self, 0
        if s.left > 0 and s.step != 0.0:
            # beats(m) = (m*bpm + step*m*(m-1)/2) / k, increasing while bpm > 0
            a, b, c = s.step / 2.0, s.bpm - s.step / 2.0, -need * k
            if abs(a) < 1e-300:
                m = -c / b
            else:
                disc = max(b * b - 4 * a * c, 0.0)
                m = (2 * c) / (-b - math.copysign(math.sqrt(disc), b))   # stable root
            if m <= s.left + 2:
                m = max(int(math.ceil(m)) - 2, 0)
                while m <= s.left:
                    got = (m * s.bpm + s.step * m * (m - 1) / 2.0) / k
                    if got >= need - EPS_BEATS:
                        return m if limit is None or m <= limit else None
                    m += 1
            done = s.left
            s = s.run(s.left, sample_rate)
            need = beats - s.beats
        n = done + max(0, int(math.ceil(need * k / s.bpm - EPS_BEATS * k / s.bpm)))
        # guard the float: the first frame at or past the boundary
        while n > done and s.run(n - 1 - done, sample_rate).beats >= beats - EPS_BEATS:
            n -= 1
        while s.run(n - done, sample_rate).beats < beats - EPS_BEATS:
            n += 1
        return n if limit is None or n <= limit else None


@dataclass(frozen=True)
class BeatGrid:
    """Where bar 1 beat 1 is and how many beats a bar has. Replaced whole
    (never mutated), so another thread can read it with one attribute load."""
    beat_zero: float = 0.0    # engine beat count at bar 1 beat 1 (the last /reset)
    meter: int = 4

    def position(self, beats: float) -> tuple[int, int, float]:
        """(bar, beat, phase) of an engine beat count: bar and beat 1-based,
        phase 0..1 within the beat. Before bar 1 (a /reset still ahead): bar 1 beat 1."""
        rel = beats - self.beat_zero
        if rel < 0:
            return 1, 1, 0.0
        whole = int(math.floor(rel + EPS_BEATS))
        phase = max(rel - whole, 0.0)
        return whole // self.meter + 1, whole % self.meter + 1, phase


def engine_clock(engine) -> ClockState:
    """A consistent snapshot of the engine's clock at a block boundary.

    The kernel advances the beat counter segment by segment and the frame
    counter at the end of the block, so a plain read during a callback can
    mix two blocks; :meth:`Engine.clock_snapshot` reads what the kernel
    publishes at each block boundary under a seqlock (release/acquire
    ordering, so it holds on ARM too).
    An engine that does not render (the planner's RecordingEngine) reports
    its frame, bpm and beats from ``stats()``.
    """
    if not engine.renders:
        st = engine.stats()
        bpm = float(st.get("bpm", 120.0))
        return ClockState(int(st.get("frame", getattr(engine, "frame", 0))), float(st.get("beats", 0.0)),
                          bpm, bpm, 0.0, 0)
    snap = engine.clock_snapshot()
    left = snap["ramp_frames"] if snap["ramp_frames"] > 0 else 0
    step = snap["bpm_step"] if left > 0 else 0.0
    return ClockState(snap["frame"], snap["beats"], snap["bpm"], snap["bpm_target"], step, left)


class TempoMap:
    """The master tempo from the engine's current frame on: the engine's clock
    (anchor) plus the tempo commands posted after it, applied with the
    kernel's arithmetic. Control thread only.

    ``set_tempo(frame, bpm, ramp_frames)`` must be told every tempo command
    with the frame the engine applies it at (post them with an explicit
    ``at``); ``state_at(frame)``, ``beats_at(frame)``, ``frame_at(beats)`` and
    ``next_boundary(...)`` answer for any frame from the anchor on.
    """

    def __init__(self, sample_rate: int, anchor: ClockState):
        self.sr = int(sample_rate)
        self.anchor = anchor
        self._changes: list[tuple[int, int, float, int]] = []   # (frame, seq, bpm, ramp frames)
        self._seq = 0

    @classmethod
    def from_engine(cls, engine) -> "TempoMap":
        return cls(engine.sample_rate, engine_clock(engine))

    # -- input -----------------------------------------------------------------------------------
    def set_tempo(self, frame: int, bpm: float, ramp_frames: int = 0) -> None:
        """A tempo command the engine applies at ``frame`` (clamped to the anchor)."""
        frame = max(int(frame), self.anchor.frame)
        self._seq += 1
        self._changes.append((frame, self._seq, float(bpm), int(ramp_frames)))
        self._changes.sort()

    def sync(self, engine) -> None:
        """Fold in what the engine has rendered: commands well behind its
        clock are history, and when none is still pending the anchor is
        re-read from the engine (so a command that arrived late live does not
        leave the map a few frames off for good)."""
        snap = engine_clock(engine)
        if snap.frame <= self.anchor.frame:
            return
        if not self._changes or self._changes[-1][0] + SETTLE_FRAMES <= snap.frame:
            if engine.renders:
                self.anchor = snap
                self._changes = []
                return
        self.advance(snap.frame - SETTLE_FRAMES)

    def advance(self, frame: int) -> None:
        """Move the anchor to ``frame`` (no query will ask for earlier frames)."""
        if frame <= self.anchor.frame:
            return
        s = self.anchor
        rest = []
        for change in self._changes:
            f, _seq, bpm, ramp = change
            if f < frame:
                s = s.run(f - s.frame, self.sr).apply(bpm, ramp)
            else:
                rest.append(change)
        self.anchor = s.run(frame - s.frame, self.sr)
        self._changes = rest

    # -- queries ---------------------------------------------------------------------------------
    def state_at(self, frame: int) -> ClockState:
        """The clock at the start of ``frame``, commands due at ``frame`` applied.
        Frames before the anchor are extrapolated back at the anchor's tempo."""
        frame = int(frame)
        s = self.anchor
        if frame < s.frame:
            return replace(s, frame=frame, beats=s.beats - (s.frame - frame) * s.bpm / (60.0 * self.sr))
        for f, _seq, bpm, ramp in self._changes:
            if f > frame:
                break
            s = s.run(f - s.frame, self.sr).apply(bpm, ramp)
        return s.run(frame - s.frame, self.sr)

    def beats_at(self, frame: int) -> float:
        return self.state_at(frame).beats

    def bpm_at(self, frame: int) -> float:
        return self.state_at(frame).bpm

    def target(self) -> float:
        """The tempo everything scheduled so far ends at."""
        s = self.anchor
        for f, _seq, bpm, ramp in self._changes:
            s = s.run(f - s.frame, self.sr).apply(bpm, ramp)
        return s.target if s.left > 0 else s.bpm

    def frame_at(self, beats: float, start: int | None = None) -> int:
        """The first frame (at or after ``start``) whose beat count reaches ``beats``."""
        s = self.state_at(self.anchor.frame if start is None else start)
        pending = [c for c in self._changes if c[0] > s.frame]
        for f, _seq, bpm, ramp in pending:
            n = s.frames_to(beats, self.sr, limit=f - s.frame)
            if n is not None:
                return s.frame + n
            s = s.run(f - s.frame, self.sr).apply(bpm, ramp)
        return s.frame + s.frames_to(beats, self.sr)

    def next_boundary(self, frame: int, every: float, beat_zero: float = 0.0) -> int:
        """The first frame at or after ``frame`` that starts a beat numbered
        ``beat_zero + k * every`` (``every`` beats: 1 = the next beat, the
        meter = the next bar)."""
        rel = self.beats_at(frame) - beat_zero
        k = math.ceil(rel / every - EPS_BEATS / every)
        return self.frame_at(beat_zero + k * every, start=frame)


# -- the reporter's side -------------------------------------------------------------------------

@dataclass(frozen=True)
class BeatEvent:
    """One beat, as the reporter thread sees it."""
    bar: int
    beat: int
    phase: float          # how far into the beat the engine was when it was seen (0..1)
    bpm: float
    frame: int            # the engine frame the beat started on (exact at a steady tempo)

    def line(self) -> str:
        """The ``/print_clock`` line: ``bar 12 beat 3 phase 0.00 bpm 124.0``."""
        return f"bar {self.bar} beat {self.beat} phase {self.phase:.2f} bpm {self.bpm:.1f}"


class ClockReporter:
    """Turns the engine's beat counter into one :class:`BeatEvent` per beat.

    For the reporter thread (it only reads the engine's counters and the
    Controller's :attr:`~stemdeck.control.controller.Controller.grid`); poll
    it every few milliseconds::

        reporter = ClockReporter(controller)
        while running:
            for ev in reporter.poll():
                notify("/beat", ev.bar, ev.beat)
                if controller.print_clock:
                    log.info("%s", ev.line())
            stop.wait(0.005)

    A beat is reported once, when the engine has rendered its first frame
    (the audio is heard one output latency later). If the reporter falls
    behind by several beats only the latest is reported. ``/reset`` makes
    the next poll report bar 1 beat 1 (when that frame is rendered); the beat
    current at start-up is not reported unless ``report_current``.
    """

    def __init__(self, controller, *, report_current: bool = False):
        self.controller = controller
        self.engine = controller.engine
        self.sample_rate = int(self.engine.sample_rate)
        self._last: int | None = None if report_current else self._whole(*self._read())
        self._zero = controller.grid.beat_zero

    def _read(self):
        return engine_clock(self.engine), self.controller.grid

    @staticmethod
    def _whole(snap: ClockState, grid: BeatGrid) -> int:
        rel = snap.beats - grid.beat_zero
        return int(math.floor(rel + EPS_BEATS)) if rel >= -EPS_BEATS else -1

    def poll(self) -> list[BeatEvent]:
        snap, grid = self._read()
        if grid.beat_zero != self._zero:          # /reset: count from its bar 1 beat 1
            self._zero = grid.beat_zero
            self._last = None
        whole = self._whole(snap, grid)
        if whole < 0 or (self._last is not None and whole <= self._last):
            if whole < 0:
                self._last = None
            return []
        self._last = whole
        bar, beat, phase = grid.position(snap.beats)
        frame = snap.frame - int(round(phase * 60.0 * self.sample_rate / max(snap.bpm, 1e-9)))
        return [BeatEvent(bar, beat, phase, snap.bpm, frame)]

    def beat_events(self, stop, interval: float = 0.005):
        """A generator of beat events until ``stop`` (a threading.Event) is set."""
        while not stop.wait(interval):
            yield from self.poll()
