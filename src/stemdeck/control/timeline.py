"""The Controller's logical timeline in frames: which stem plays from which frame, time zero, the beat grid, the tempo map, quantised starts.

Control thread only, except :attr:`Timeline.grid`, which the reporter
thread reads (it is replaced whole, never mutated). The engine keeps none
of this: it is what the Controller knows ahead of the engine, to decide
``/start_group``, quantise a start to the next beat, end a one-shot where
the tempo map says, and tell a renderer when a score's music ends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from stemdeck.control import spec
from stemdeck.control.arg_types import QUANTIZE_BAR
from stemdeck.control.tempo import BeatGrid, TempoMap
from stemdeck.engine.commands import Soon


@dataclass
class Ctx:
    """Where and when one message came from."""
    at: int | None           # engine frame it takes effect at; None = as soon as possible
    now: int                 # the frame it counts as received at (logical timeline)
    base: int                # time zero for relative times, captured on receipt
    sender: Any = None
    started_loads: set = field(default_factory=set)   # buffer IDs this message began loading
    waited: bool = False     # it waited for a load
    load_errors: dict = field(default_factory=dict)   # buffer ID -> why the load it began failed


@dataclass
class Voice:
    """One stem on the logical timeline."""
    buffer_id: int
    deck: int
    start: int               # frame it starts at
    loop: bool
    rate: float
    volume: float
    length: int              # source frames one pass plays
    end: int | None = None   # frame a one-shot ends at
    src_bpm: float = 0.0     # its own tempo when it follows the master tempo (else 0)
    beats_start: float = 0.0 # engine beat count at its start

    def playing_at(self, frame: int) -> bool:
        return self.loop or self.end is None or frame < self.end


class Timeline:
    """Frames, beats and the stems placed on them.

    ``lookahead``: frames ahead of the engine's clock at which a live
    message that posts several commands schedules them all (see
    :meth:`together`); ``quantize``: the ``/quantize`` grid to start with.
    """

    def __init__(self, engine, *, sample_rate: int, lookahead: int = 0, quantize: int | str = 0):
        self.engine = engine
        self.sample_rate = int(sample_rate)
        self.lookahead = int(lookahead)
        self.time_zero = 0               # frame of the last /reset
        self.grid = BeatGrid()           # bar 1 beat 1 and the meter (read by the reporter)
        self.tempo = TempoMap.from_engine(engine)
        self.quantize = spec.parse("/quantize", [quantize]).values["beats"]
        self.voices: dict[int, Voice] = {}
        self.last_frame = 0              # the latest frame any command touches

    def touch(self, frame: int):
        self.last_frame = max(self.last_frame, int(frame))

    # -- times ------------------------------------------------------------------------------------

    def rel(self, ctx: Ctx, seconds: float) -> tuple[int | None, int]:
        """Seconds after time zero -> (engine ``at``, logical frame). A time
        already past runs at once (not reported late: it was never scheduled)."""
        frame = ctx.base + round(seconds * self.sample_rate)
        if frame <= ctx.now:
            return ctx.at, ctx.now
        return frame, frame

    def together(self, at: int | None) -> int | None:
        """The ``at`` for several commands that must land on one frame. For a
        message that came with no time it is a grouping, not a deadline
        (:class:`~stemdeck.engine.commands.Soon`): if the audio thread gets
        there first they run at once, without counting as late."""
        if at is None and self.lookahead > 0:
            return Soon(int(self.engine.frame) + self.lookahead)
        return at

    def sync_tempo(self, ctx: Ctx) -> None:
        """Fold what the engine has rendered into the tempo map (the planner's
        stand-in engine renders nothing: there time moves with the messages)."""
        if self.engine.renders:
            self.tempo.sync(self.engine)
        else:
            self.tempo.advance(ctx.now)

    def tempo_frame(self, ctx: Ctx) -> tuple[int | None, int]:
        """(``at`` to post, frame the engine applies it at) for a tempo command:
        always an explicit frame when there is a lookahead, so the tempo map
        knows where the change lands."""
        now = int(self.engine.frame)
        at = ctx.at
        if at is None and self.lookahead > 0:
            at = now + self.lookahead
        return at, max(now, at if at is not None else now)

    def grid_every(self, quantize) -> float:
        q = self.quantize if quantize is None else quantize
        if q == QUANTIZE_BAR:
            return float(self.grid.meter)
        return float(q or 0)

    def quantised(self, ctx: Ctx, at: int | None, frame: int, quantize,
                  keylocked: bool) -> tuple[int | None, int]:
        """(at, frame) of a start, moved to the next boundary of the beat grid
        (``quantize``: the message's own, None = the /quantize setting;
        ``keylocked``: a deck it starts on keeps its key)."""
        every = self.grid_every(quantize)
        if every <= 0:
            return at, frame
        self.sync_tempo(ctx)
        # the first frame a command posted now surely lands on (a keylocked
        # deck's voices render ahead by its latency)
        earliest = int(self.engine.frame) + self.lookahead
        if at is None and keylocked:
            earliest += int(self.engine.keylock_latency)
        b = self.tempo.next_boundary(earliest if at is None else frame, every, self.grid.beat_zero)
        if b < earliest:
            # its time has passed (a group that waited for a load, a late bundle):
            # the next boundary still to come, not a late start off the grid
            b = self.tempo.next_boundary(earliest, every, self.grid.beat_zero)
        return b, b

    # -- stems -----------------------------------------------------------------------------------------

    def start(self, buf_id: int, deck: int, frame: int, *, loop: bool, rate: float, volume: float,
              length: int, src_bpm: float = 0.0):
        v = Voice(buf_id, deck, frame, loop, rate, volume, max(1, int(length)), src_bpm=src_bpm)
        if not loop:
            if v.src_bpm > 0:
                v.beats_start = self.tempo.beats_at(frame)
            self.end_of(v)
        self.voices[buf_id] = v
        self.touch(frame)

    def end_of(self, v: Voice) -> None:
        """Where a one-shot ends on the tempo map: its source frames, played at
        rate x tempo / its tempo, span (length x its bpm / rate) / (60 x rate) beats."""
        if v.src_bpm <= 0:
            v.end = v.start + math.ceil(v.length / v.rate)
            return
        beats = v.length * v.src_bpm / (v.rate * 60.0 * self.sample_rate)
        start = max(v.start, self.tempo.anchor.frame)    # the map knows nothing earlier
        v.end = max(self.tempo.frame_at(v.beats_start + beats, start=start), v.start + 1)

    def retime(self, frame: int):
        """The tempo changes from ``frame`` on: one-shots still playing end sooner or later."""
        for v in self.voices.values():
            if not v.loop and v.src_bpm > 0 and v.end is not None and v.end > frame:
                self.end_of(v)

    def rebpm(self, v: Voice, frame: int, bpm: float) -> None:
        """``/stem_bpm`` on a playing one-shot: the rest of it plays at the new speed."""
        frame = max(frame, v.start)
        if v.src_bpm > 0 and v.end is not None and frame < v.end:
            played = (self.tempo.beats_at(frame) - v.beats_start) * v.rate * 60.0 * \
                self.sample_rate / v.src_bpm
        else:
            played = (frame - v.start) * v.rate
        v.length = max(1, round(v.length - played))
        v.start, v.src_bpm = frame, bpm
        v.beats_start = self.tempo.beats_at(frame) if bpm > 0 else 0.0
        self.end_of(v)

    def playing(self, buffer_id: int, frame: int | None = None) -> bool:
        """Whether the buffer plays at ``frame`` on the logical timeline."""
        v = self.voices.get(buffer_id)
        if v is None:
            return False
        return v.playing_at(self.engine.frame if frame is None else frame)

    def plan(self, levels, names) -> dict:
        """When the music scheduled so far ends: ``end_frame`` (the last
        command, scheduled start or fade, and the end of every one-shot stem)
        and ``loops``: looping stems still audible there (``levels``: the
        decks'; ``names``: buffer ID -> name)."""
        end = self.last_frame
        loops = []
        for v in self.voices.values():
            if v.loop:
                if v.volume > 0 and levels[v.deck] > 0:
                    loops.append((v.buffer_id, names.get(v.buffer_id, "")))
            elif v.end is not None:
                end = max(end, v.end)
        return {"end_frame": end, "loops": sorted(loops)}
