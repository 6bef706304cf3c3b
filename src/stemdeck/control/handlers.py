"""The Controller: applies validated control messages to the engine.

One Controller serves the live OSC server and the offline score renderer
alike, so a score sounds the way the same messages sound live.

Threads: every method is for the one control thread that owns the
:class:`~stemdeck.engine.engine.Engine` (the OSC receive loop, or the render
loop), except that a loader's worker threads finish futures, which the
Controller only collects in :meth:`Controller.poll` on the control thread.

What it keeps (the engine keeps none of this):

- buffer IDs: which are loading, ready or failed, their file, name, sample
  slot and length; one decoded sample per file, shared by every buffer ID
  that loads the same path;
- a logical timeline in frames: which stem plays from which frame, looping
  or until which frame, deck levels, tempo; used to decide ``/start_group``
  and to know when a score's music ends;
- time zero (``/reset``), the beat grid (bar 1 beat 1 and the meter), the
  cued decks, the quantize grid, which decks are keylocked;
- the tempo map (:class:`~stemdeck.control.tempo.TempoMap`): the engine's
  tempo clock plus every tempo command posted since, so beats and frames
  convert to the frame (quantised starts, one-shot ends) ahead of the engine.

Times: a message carries ``at``, the engine frame it takes effect at
(``None`` = as soon as possible). Relative times (``/play``, ``/fade``,
``/start_group``) become frames here, never timers. A command for a buffer
whose load is still running waits in a queue, in arrival order, and runs
when the load completes; only a buffer never requested is refused.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable

from stemdeck.control import spec
from stemdeck.control.movement import MovementConfig
from stemdeck.control.tempo import BeatGrid, TempoMap, engine_clock
from stemdeck.engine.commands import Soon
from stemdeck.media.simple_loaders import ImmediateLoader, ProbeLoader, SampleShape, ThreadedLoader, decode  # noqa: F401
from stemdeck.errors import CommandError, MediaError

log = logging.getLogger("stemdeck.control")

DEFAULT_VOLUME = 0.8          # crowdstream's /play_stem, /play and /cue volume
DEFAULT_FADE = 2.0
TONE_LEVEL = 0.25             # -12 dBFS
TONE_FADE_S = 0.005
MAX_WAITING = 4096            # messages waiting for loads; more are refused
STRETCH_MODES = ("playback_rate", "keylock")


# -- a stand-in engine ----------------------------------------------------------------------------

class RecordingEngine:
    """The Engine's control API without audio: records every command.

    For planning a render (how long the score's music lasts, which files are
    missing) and for tests that check what a message posts."""

    def __init__(self, sample_rate: int = 44100, base_bpm: float = 120.0):
        self.sample_rate = int(sample_rate)
        self.base_bpm = float(base_bpm)
        self.frame = 0
        self.calls: list[tuple[str, tuple, dict]] = []
        self._next_slot = 0
        self._samples: dict[int, Any] = {}

    def add_sample(self, data) -> int:
        slot = self._next_slot
        self._next_slot += 1
        self._samples[slot] = data
        self.calls.append(("add_sample", (slot, data.shape), {}))
        return slot

    def discard_slot(self, slot: int) -> None:
        self._samples.pop(slot, None)

    def sample_of(self, slot):
        return self._samples.get(slot)

    def events(self):
        return []

    def stats(self) -> dict:
        return {"frame": self.frame, "voices": 0, "late_commands": 0, "bpm": self.base_bpm,
                "beats": 0.0, "samples": len(self._samples)}

    keylock_engine = "finer"

    @property
    def keylock_available(self) -> bool:
        """As the real engine would say: whether Rubber Band's library loads."""
        from stemdeck.engine.rubberband import RubberBand

        return RubberBand.load() is not None

    @property
    def keylock_latency(self) -> int:
        from stemdeck.engine.rubberband import lookahead_frames

        return lookahead_frames(self.sample_rate, self.keylock_engine)

    def __getattr__(self, name):
        if name in _ENGINE_COMMANDS:
            def record(*args, **kwargs):
                self.calls.append((name, args, kwargs))
                return True
            return record
        raise AttributeError(name)


_ENGINE_COMMANDS = frozenset({
    "bind", "unbind", "play", "stop", "stop_all", "stop_deck", "set_volume", "set_rate",
    "set_source_bpm", "set_deck_level", "set_deck_eq", "set_crossfader_gains", "set_master",
    "set_tempo", "set_limiter", "set_keylock",
})


# -- bookkeeping records ------------------------------------------------------------------------------

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
class BufferInfo:
    id: int
    path: str
    name: str
    key: str                 # the cache key (real path) shared with other buffers
    state: str = "loading"   # loading | ready | failed
    error: str = ""
    slot: int | None = None
    frames: int = 0
    deck: int = 0
    bpm: float = 0.0         # the stem's own tempo (0: it ignores the master tempo)
    previous: Any = None     # the ready BufferInfo this load replaces: bound (and playing) until
                             # the new sample is ready, restored if the new file is refused


@dataclass
class _Sample:
    key: str
    slot: int
    frames: int
    users: set = field(default_factory=set)


@dataclass
class _Job:
    key: str
    path: str
    future: Future
    requests: list = field(default_factory=list)    # (BufferInfo, Ctx, done_address | None)


@dataclass
class _Voice:
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


class _Wait(Exception):
    """Raised by a handler that needs buffers still loading; the message waits."""

    def __init__(self, ids):
        super().__init__(ids)
        self.ids = set(ids)


# -- the controller ---------------------------------------------------------------------------

Reply = Callable[[Any, str, tuple], None]


class Controller:
    """Applies control messages (validated by :mod:`stemdeck.control.spec`) to an Engine.

    ``engine``: an :class:`~stemdeck.engine.engine.Engine` (or a :class:`RecordingEngine`).
    ``loader``: how files become samples: :class:`ImmediateLoader` (default;
    scores, tests), :class:`ThreadedLoader` (live server), :class:`ProbeLoader` (planning).
    ``reply(sender, address, args)``: sends a reply to whoever sent the message;
    without it replies are kept in :attr:`replies`.
    ``on_load_ready()``: called on a loader thread when a load finishes, so the
    server can wake its control loop to call :meth:`poll`.
    ``times_from``: ``"reset"`` (relative times count from the last ``/reset``)
    or ``"receipt"`` (from when the message arrives, which is what crowdstream's
    timer threads effectively did).
    ``lookahead``: frames ahead of the engine's clock at which a live message
    that posts several commands (a group start, two levels) schedules them
    all, so they land on one frame even if the audio thread runs between
    the posts; the server sets it to its block size (0: as soon as possible).
    ``check_path(path)``: called before any file is opened for ``/load_buffer``,
    ``/play`` or ``/cue``; raises CommandError to refuse it (``--media-root``:
    "outside media root"), which becomes the message's ``/fail``.
    ``on_events(events)``: the engine's events drained by :meth:`poll`
    (the OSC server's ``/ended`` and ``/late`` notifications).
    ``hooks``: server-only actions, ``{"notify": f(sender, on), "quit": f(sender),
    "status": f() -> dict}`` (``status`` adds the fields only the server knows).

    Tempo (issue 6): ``base_bpm`` (``--bpm``) is the tempo a stem is assumed
    to have been made at unless ``/load_buffer`` or ``/stem_bpm`` says
    otherwise. ``stretch`` (``--stretch``): ``"playback_rate"`` or
    ``"keylock"``, the mode every deck starts in (key lock needs Rubber Band;
    without it a warning is logged and decks keep playback_rate).
    ``movement``: the :class:`~stemdeck.control.movement.MovementConfig` for
    ``/dance/total_movement`` (``--bpm-config``, read with
    :func:`~stemdeck.control.movement.load_movement_config`; None: the
    documented defaults). ``movement_bpm=False`` (``--no-movement-bpm``)
    ignores those messages. ``quantize``: the ``/quantize`` grid to start
    with (0 off). The Rubber Band engine (``--keylock-engine``) is the
    Engine's own argument.

    The reporter thread may read :attr:`grid` (replaced whole, never
    mutated), :attr:`print_clock` and call :meth:`clock`; see
    :class:`~stemdeck.control.tempo.ClockReporter`.
    """

    def __init__(self, engine, *, loader=None, reply: Reply | None = None,
                 sample_rate: int | None = None, base_bpm: float = 120.0,
                 follow_tempo: bool = True, times_from: str = "reset",
                 on_load_ready: Callable[[], None] | None = None,
                 lookahead: int = 0, check_path: Callable[[str], None] | None = None,
                 hooks: dict | None = None, stretch: str = "playback_rate",
                 movement: MovementConfig | None = None, movement_bpm: bool = True,
                 quantize: int | str = 0, on_events: Callable[[list], None] | None = None):
        if times_from not in ("reset", "receipt"):
            raise ValueError("times_from must be 'reset' or 'receipt'")
        if stretch not in STRETCH_MODES:
            raise ValueError(f"stretch {stretch!r}: use playback_rate or keylock")
        self.engine = engine
        self.loader = loader if loader is not None else ImmediateLoader()
        self.sample_rate = int(sample_rate or engine.sample_rate)
        if self.sample_rate != engine.sample_rate:
            raise ValueError(f"sample_rate {self.sample_rate} differs from the engine's "
                             f"{engine.sample_rate}")
        self.reply_to = reply
        self.replies: list[tuple[Any, str, tuple]] = []
        self.base_bpm = float(base_bpm)
        self.follow_tempo = follow_tempo
        self.times_from = times_from
        self.on_load_ready = on_load_ready
        self.on_events = on_events
        self.hooks = dict(hooks or {})
        self.lookahead = int(lookahead)
        self.check_path = check_path

        self.buffers: dict[int, BufferInfo] = {}
        self._samples: dict[str, _Sample] = {}
        self._jobs: dict[str, _Job] = {}
        self._finished: queue.SimpleQueue = queue.SimpleQueue()
        self._deferred: list[tuple[spec.Call, Ctx, set]] = []
        self._tone: tuple | None = None          # ((freq, seconds), frames) bound now

        # logical state
        self.time_zero = 0               # frame of the last /reset
        self.grid = BeatGrid()           # bar 1 beat 1 and the meter (read by the reporter)
        self.tempo = TempoMap.from_engine(engine)
        self.quantize = spec.parse("/quantize", [quantize]).values["beats"]
        self.print_clock = False
        self.armed: dict[int, tuple[int, float, Any]] = {}   # deck -> (buffer ID, start_pos, quantize)
        self.levels = [1.0, 1.0, 1.0, 1.0]
        self.eq = [[1.0, 1.0, 1.0] for _ in range(4)]
        self.bpm = self.base_bpm         # the tempo last asked for
        self.movement = 0.0
        self.movement_config = movement if movement is not None else MovementConfig()
        self.movement_bpm = bool(movement_bpm)
        self.movement_target: float | None = None
        self._movement_ignored = False
        self.voices: dict[int, _Voice] = {}
        self.last_frame = 0              # the latest frame any command touches
        self._emitted: list[tuple[str, tuple]] | None = None

        self.stretch = stretch
        self.keylock = [False] * 4       # decks asked to keep their key
        if stretch == "keylock":
            if getattr(engine, "keylock_available", False):
                for deck in range(4):
                    engine.set_keylock(deck, True)
                self.keylock = [True] * 4
            else:
                log.warning("--stretch keylock: key lock needs Rubber Band's library "
                            "(librubberband2), which is not installed: decks play with "
                            "playback_rate (pitch follows tempo)")

    @property
    def meter(self) -> int:
        return self.grid.meter

    # -- entry points ------------------------------------------------------------------------

    def handle(self, address: str, args=(), *, at: int | None = None, sender=None):
        """Validate and apply one message; returns the replies produced during
        the call (each ``(address, args)``, all also sent through ``reply`` to
        their own senders: a load finishing here can answer earlier messages
        too). A message that waits for a load answers later, from :meth:`poll`."""
        self._emitted = out = []
        try:
            try:
                call = spec.parse(address, args)
            except CommandError as exc:
                where = address if isinstance(address, str) else "?"
                self._fail(sender, where, _strip(where, str(exc)))
                return out
            self.dispatch(call, at=at, sender=sender)
        finally:
            self._emitted = None
        return out

    def dispatch(self, call: spec.Call, *, at: int | None = None, sender=None):
        """Apply an already validated message (the score reader validates first)."""
        now = int(at) if at is not None else int(self.engine.frame)
        base = self.time_zero if self.times_from == "reset" else now
        ctx = Ctx(at=None if at is None else int(at), now=now, base=base, sender=sender)
        self._run(call, ctx)

    def poll(self) -> int:
        """The control loop's tick (control thread only): finish loads that
        completed on loader threads, then drain the engine's events (the one
        consumer of ``engine.events()``: it frees released sample slots) and
        hand them to ``on_events``. Returns how many loads finished."""
        done = 0
        while True:
            try:
                key = self._finished.get_nowait()
            except queue.Empty:
                break
            job = self._jobs.get(key)
            if job is not None and job.future.done():
                self._complete(job)
                done += 1
        events = self.engine.events()
        if events and self.on_events is not None:
            self.on_events(events)
        return done

    @property
    def loading(self) -> int:
        """Loads still running."""
        return len(self._jobs)

    @property
    def waiting(self) -> int:
        """Messages waiting for a load."""
        return len(self._deferred)

    def close(self) -> None:
        self.loader.close()

    # -- dispatch internals ------------------------------------------------------------------------

    def _run(self, call: spec.Call, ctx: Ctx):
        handler = getattr(self, "on_" + call.message.handler)
        try:
            handler(ctx, **call.values)
        except _Wait as wait:
            if len(self._deferred) >= MAX_WAITING:       # a flood must not grow memory
                self._fail(ctx.sender, call.address, f"{MAX_WAITING} messages already wait for "
                           "loads: send /sync and wait for /synced before sending more")
                return
            ctx.waited = True
            self._deferred.append((call, ctx, wait.ids))
        except (CommandError, MediaError) as exc:
            self._fail(ctx.sender, call.address, _strip(call.address, str(exc)))
        except Exception as exc:  # a bug must not take the server down; say so loudly
            log.exception("%s failed", call.address)
            self._fail(ctx.sender, call.address, f"internal error: {type(exc).__name__}: {exc}")

    def _run_deferred(self):
        progressed = True
        while progressed and self._deferred:
            progressed = False
            for i, (call, ctx, ids) in enumerate(self._deferred):
                if any(self._is_loading(b) for b in ids):
                    continue
                del self._deferred[i]
                self._run(call, ctx)
                progressed = True
                break

    def _emit(self, sender, address: str, *args):
        if self._emitted is not None:
            self._emitted.append((address, args))
        if self.reply_to is not None:
            self.reply_to(sender, address, args)
        else:
            self.replies.append((sender, address, args))

    def _fail(self, sender, address: str, reason: str):
        log.debug("/fail %s %s", address, reason)   # the server logs replies (rate-limited)
        self._emit(sender, "/fail", address, reason)

    def _done(self, sender, address: str, *args):
        self._emit(sender, "/done", address, *args)

    # -- time -------------------------------------------------------------------------------------

    def _rel(self, ctx: Ctx, seconds: float) -> tuple[int | None, int]:
        """Seconds after time zero -> (engine ``at``, logical frame). A time
        already past runs at once (not reported late: it was never scheduled)."""
        frame = ctx.base + round(seconds * self.sample_rate)
        if frame <= ctx.now:
            return ctx.at, ctx.now
        return frame, frame

    def _together(self, at: int | None) -> int | None:
        """The ``at`` for several commands that must land on one frame. For a
        message that came with no time it is a grouping, not a deadline
        (:class:`~stemdeck.engine.commands.Soon`): if the audio thread gets
        there first they run at once, without counting as late."""
        if at is None and self.lookahead > 0:
            return Soon(int(self.engine.frame) + self.lookahead)
        return at

    def _touch(self, frame: int):
        self.last_frame = max(self.last_frame, int(frame))

    # -- buffers and loading ----------------------------------------------------------------------------

    def _key(self, path: str) -> str:
        return os.path.realpath(os.path.expanduser(path))

    def _is_loading(self, buffer_id: int) -> bool:
        buf = self.buffers.get(buffer_id)
        return buf is not None and buf.state == "loading"

    def _require(self, buffer_id: int) -> BufferInfo:
        buf = self.buffers.get(buffer_id)
        if buf is None:
            raise CommandError(f"buffer {buffer_id} is not loaded: send /load_buffer "
                               f"{buffer_id} <path> first")
        if buf.state == "loading":
            raise _Wait({buffer_id})
        if buf.state == "failed":
            raise CommandError(f"buffer {buffer_id} failed to load: {buf.error}")
        return buf

    def _release(self, buffer_id: int, ctx: Ctx):
        """Empty a buffer ID (stopping what it plays), as /free_buffer or cleanup does."""
        old = self.buffers.pop(buffer_id, None)
        self.voices.pop(buffer_id, None)
        if old is None:
            return
        if old.state == "loading" and old.previous is not None:
            old = old.previous               # still bound while its replacement loads
        if old.state == "ready":
            self.engine.unbind(buffer_id, at=ctx.at)
            self._drop_user(old)

    def _drop_user(self, buf: BufferInfo):
        sample = self._samples.get(buf.key)
        if sample is not None:
            sample.users.discard(buf.id)
            if not sample.users:
                del self._samples[buf.key]   # the engine frees it once its voices let go
                self._media("release_sample", buf.key)

    def _media(self, hook: str, *args):
        """Tell a caching loader (:class:`stemdeck.media.loader.MediaLoader`) what
        the buffers still use; loaders without the hook ignore it."""
        fn = getattr(self.loader, hook, None)
        return fn(*args) if fn is not None else None

    def _load(self, buffer_id: int, path: str, name: str | None, ctx: Ctx,
              done_address: str | None, bpm: float | None = None) -> BufferInfo:
        """Start loading ``path`` into ``buffer_id``; ``done_address`` gets /done or /fail."""
        # one spelling of the path from here on: the media root check, the cache key
        # and the decoder all see the same file
        path = os.path.expanduser(path)
        if self.check_path is not None:
            self.check_path(path)             # refuses before anything changes
        # what the ID holds keeps playing until the new sample is ready; the engine
        # then crossfades a playing voice into it (declick); a refused file changes nothing
        old = self.buffers.get(buffer_id)
        previous = old.previous if old is not None and old.state == "loading" else old
        if previous is not None and previous.state != "ready":
            previous = None
        key = self._key(path)
        if name is None:
            name = os.path.splitext(os.path.basename(path))[0]
        buf = BufferInfo(buffer_id, path, name, key, deck=_deck_of(buffer_id),
                         bpm=(self.base_bpm if self.follow_tempo else 0.0) if bpm is None else bpm,
                         previous=previous)
        self.buffers[buffer_id] = buf
        ctx.started_loads.add(buffer_id)
        sample = self._samples.get(key)
        if sample is not None:                       # the same file: reuse its sample
            self._bind(buf, sample, ctx, done_address)
            return buf
        job = self._jobs.get(key)
        if job is None:
            job = _Job(key, path, self.loader.submit(path, self.sample_rate))
            self._jobs[key] = job
            job.requests.append((buf, ctx, done_address))
            if job.future.done():
                self._complete(job)
            else:
                job.future.add_done_callback(lambda _f, k=key: self._load_finished(k))
        else:
            job.requests.append((buf, ctx, done_address))
        return buf

    def _load_finished(self, key: str):
        """Loader thread: hand the key to the control thread."""
        self._finished.put(key)
        if self.on_load_ready is not None:
            self.on_load_ready()

    def _complete(self, job: _Job):
        """Control thread: the job's future is done; bind or fail its requests."""
        self._jobs.pop(job.key, None)
        current = [(b, c, d) for b, c, d in job.requests if self.buffers.get(b.id) is b]
        error = job.future.exception()
        loaded = error is None
        sample = None
        if error is None and current:
            data = job.future.result()
            try:
                slot = self.engine.add_sample(data)
            except CommandError as exc:
                error = exc
            else:
                sample = _Sample(job.key, slot, int(data.shape[0]))
                self._samples[job.key] = sample
        for buf, ctx, done_address in current:
            if sample is not None:
                self._bind(buf, sample, ctx, done_address)
            else:
                buf.state = "failed"
                buf.error = _reason(error)
                ctx.load_errors[buf.id] = buf.error
                if buf.previous is not None:          # the buffer keeps what it held
                    self.buffers[buf.id] = buf.previous
                if done_address:
                    self._fail(ctx.sender, done_address, f"buffer {buf.id}: {buf.error}")
        if loaded and sample is None:                 # nobody took the sample: give it back
            self._media("release_sample", job.key)
        self._run_deferred()

    def _bind(self, buf: BufferInfo, sample: _Sample, ctx: Ctx, done_address: str | None):
        self.engine.bind(buf.id, sample.slot, at=ctx.at)
        if self.follow_tempo or buf.bpm:
            self.engine.set_source_bpm(buf.id, buf.bpm, at=ctx.at)
        sample.users.add(buf.id)
        previous, buf.previous = buf.previous, None
        if previous is not None and previous.key != buf.key:
            self._drop_user(previous)         # bind replaced it in the engine
        buf.state, buf.slot, buf.frames = "ready", sample.slot, sample.frames
        self._touch(ctx.now)
        if done_address:
            self._done(ctx.sender, done_address, buf.id)

    def _load_if_needed(self, buffer_id: int, path: str, name: str, ctx: Ctx) -> BufferInfo:
        """For /play and /cue: keep what the buffer holds when it is the same file."""
        self._refused(buffer_id, ctx)
        buf = self.buffers.get(buffer_id)
        if buffer_id in ctx.started_loads and buf is not None:
            return buf
        if buf is not None and buf.key == self._key(path) and buf.state != "failed":
            return buf
        buf = self._load(buffer_id, path, name, ctx, None)
        if self.buffers.get(buffer_id) is not buf:    # refused at once; the buffer kept its sample
            self._refused(buffer_id, ctx)
        return buf

    def _refused(self, buffer_id: int, ctx: Ctx):
        """Raise the reason the load this message began was refused, if it was."""
        if buffer_id not in ctx.load_errors:
            return
        kept = self.buffers.get(buffer_id)
        if kept is not None and kept.state == "ready":   # it kept its old sample: not cued with that
            for deck, arm in list(self.armed.items()):
                if arm[0] == buffer_id:
                    del self.armed[deck]
        raise CommandError(f"buffer {buffer_id} failed to load: {ctx.load_errors[buffer_id]}")

    # -- the logical timeline ---------------------------------------------------------------------

    def _voice_start(self, buf_id: int, deck: int, frame: int, *, loop: bool, rate: float,
                     volume: float, length: int):
        v = _Voice(buf_id, deck, frame, loop, rate, volume, max(1, int(length)))
        buf = self.buffers.get(buf_id)
        if buf is not None and buf_id != spec.TEST_TONE_BUFFER:
            v.src_bpm = buf.bpm
        if not loop:
            if v.src_bpm > 0:
                v.beats_start = self.tempo.beats_at(frame)
            self._end_of(v)
        self.voices[buf_id] = v
        self._touch(frame)

    def _end_of(self, v: _Voice) -> None:
        """Where a one-shot ends on the tempo map: its source frames, played at
        rate x tempo / its tempo, span (length x its bpm / rate) / (60 x rate) beats."""
        if v.src_bpm <= 0:
            v.end = v.start + math.ceil(v.length / v.rate)
            return
        beats = v.length * v.src_bpm / (v.rate * 60.0 * self.sample_rate)
        start = max(v.start, self.tempo.anchor.frame)    # the map knows nothing earlier
        v.end = max(self.tempo.frame_at(v.beats_start + beats, start=start), v.start + 1)

    def _retime(self, frame: int):
        """The tempo changes from ``frame`` on: one-shots still playing end sooner or later."""
        for v in self.voices.values():
            if not v.loop and v.src_bpm > 0 and v.end is not None and v.end > frame:
                self._end_of(v)

    def _sync_tempo(self, ctx: Ctx) -> None:
        """Fold what the engine has rendered into the tempo map (the planner's
        stand-in engine renders nothing: there time moves with the messages)."""
        if getattr(self.engine, "state", None) is not None:
            self.tempo.sync(self.engine)
        else:
            self.tempo.advance(ctx.now)

    def _tempo_frame(self, ctx: Ctx) -> tuple[int | None, int]:
        """(``at`` to post, frame the engine applies it at) for a tempo command:
        always an explicit frame when there is a lookahead, so the tempo map
        knows where the change lands."""
        now = int(self.engine.frame)
        at = ctx.at
        if at is None and self.lookahead > 0:
            at = now + self.lookahead
        return at, max(now, at if at is not None else now)

    def _grid_every(self, quantize) -> float:
        q = self.quantize if quantize is None else quantize
        if q == spec.QUANTIZE_BAR:
            return float(self.grid.meter)
        return float(q or 0)

    def _quantised(self, ctx: Ctx, at: int | None, frame: int, quantize, decks) -> tuple[int | None, int]:
        """(at, frame) of a start, moved to the next boundary of the beat grid
        (``quantize``: the message's own, None = the /quantize setting)."""
        every = self._grid_every(quantize)
        if every <= 0:
            return at, frame
        self._sync_tempo(ctx)
        # the first frame a command posted now surely lands on (a keylocked
        # deck's voices render ahead by its latency)
        earliest = int(self.engine.frame) + self.lookahead
        if at is None and any(self.keylock[d] for d in decks):
            earliest += int(getattr(self.engine, "keylock_latency", 0))
        b = self.tempo.next_boundary(earliest if at is None else frame, every, self.grid.beat_zero)
        if b < earliest:
            # its time has passed (a group that waited for a load, a late bundle):
            # the next boundary still to come, not a late start off the grid
            b = self.tempo.next_boundary(earliest, every, self.grid.beat_zero)
        return b, b

    def playing(self, buffer_id: int, frame: int | None = None) -> bool:
        """Whether the buffer plays at ``frame`` on the logical timeline."""
        v = self.voices.get(buffer_id)
        if v is None:
            return False
        return v.playing_at(self.engine.frame if frame is None else frame)

    def plan(self) -> dict:
        """When the music scheduled so far ends (for a renderer's default length):
        ``end_frame`` (the last command, scheduled start or fade, and the end of
        every one-shot stem) and ``loops``: looping stems still audible there."""
        end = self.last_frame
        loops = []
        for v in self.voices.values():
            if v.loop:
                if v.volume > 0 and self.levels[v.deck] > 0:
                    buf = self.buffers.get(v.buffer_id)
                    loops.append((v.buffer_id, buf.name if buf else ""))
            elif v.end is not None:
                end = max(end, v.end)
        return {"end_frame": end, "loops": sorted(loops)}

    # -- status ----------------------------------------------------------------------------------------

    def clock(self) -> tuple[int, int, float]:
        """(bar, beat, beats since /reset) of the engine's clock now: bar and
        beat 1-based. Any thread (reads the engine's counters and :attr:`grid`)."""
        grid = self.grid
        beats = engine_clock(self.engine).beats
        bar, beat, _phase = grid.position(beats)
        return bar, beat, max(beats - grid.beat_zero, 0.0)

    def status(self) -> dict:
        st = self.engine.stats()
        bar, beat, _ = self.clock()
        info = {name: 0 for name, _, _ in spec.STATUS_FIELDS}
        info.update(
            sample_rate=self.sample_rate,
            buffers_loaded=sum(1 for b in self.buffers.values() if b.state == "ready"),
            voices_playing=int(st.get("voices", 0)),
            bpm=float(st.get("bpm", self.bpm)),
            beat=beat, bar=bar,
            late_commands=int(st.get("late_commands", 0)),
        )
        extra = self.hooks.get("status")
        if extra is not None:
            info.update(extra())
        return info

    def status_args(self) -> tuple:
        info = self.status()
        return tuple(int(info[n]) if t == "i" else float(info[n])
                     for n, t, _ in spec.STATUS_FIELDS)

    def status_detail(self) -> dict:
        from stemdeck.engine.dsp.eq import gain_to_knob

        info = self.status()
        info["meter"] = self.meter
        info["loading"] = self.loading
        grid = self.grid
        snap = engine_clock(self.engine)
        bar, beat, phase = grid.position(snap.beats)
        info["frame"] = snap.frame            # the engine's clock: frames rendered since start
        info["tempo"] = {
            "bpm": round(snap.bpm, 4), "target_bpm": round(self.tempo.target(), 4),
            "ramp_s": round(snap.left / self.sample_rate, 3), "base_bpm": self.base_bpm,
            "bar": bar, "beat": beat, "phase": round(phase, 4), "meter": grid.meter,
            "beats": round(max(snap.beats - grid.beat_zero, 0.0), 4), "quantize": self.quantize,
        }
        latency = int(getattr(self.engine, "keylock_latency", 0))
        info["stretch"] = {
            "default": self.stretch,
            "keylock_available": bool(getattr(self.engine, "keylock_available", False)),
            "keylock_engine": getattr(self.engine, "keylock_engine", None),
            "keylock_latency_frames": latency,
            "keylock_latency_ms": round(1000.0 * latency / self.sample_rate, 2),
        }
        info["movement"] = {"enabled": self.movement_bpm, "value": self.movement,
                            "target_bpm": self.movement_target, **self.movement_config.describe()}
        cache = self._media("cache_status")
        if cache is not None:
            info["cache"] = cache
        info["decks"] = []
        for d in range(4):
            bufs = [b for b in self.buffers.values() if b.deck == d]
            info["decks"].append({
                "deck": spec.DECK_NAMES[d],
                "level": self.levels[d],
                "eq_percent": [round(gain_to_knob(g), 2) for g in self.eq[d]],
                "keylock": self.keylock[d],
                "cued": self.armed[d][0] if d in self.armed else None,
                "buffers": [{"id": b.id, "name": b.name, "path": b.path, "state": b.state,
                             "seconds": round(b.frames / self.sample_rate, 3), "bpm": b.bpm,
                             "playing": self.playing(b.id)} for b in sorted(bufs, key=lambda b: b.id)],
            })
        return info

    # -- handlers: buffers and stems -------------------------------------------------------------------

    def on_load_buffer(self, ctx, *, id, path, name, bpm):
        if self._is_loading(id) and id not in ctx.started_loads:
            raise _Wait({id})    # one load per buffer at a time, in arrival order
        self._load(id, path, name, ctx, "/load_buffer", bpm=bpm)

    def on_play_stem(self, ctx, *, id, rate, volume, loop, start_pos, quantize):
        buf = self._require(id)
        at, frame = self._quantised(ctx, ctx.at, ctx.now, quantize, (buf.deck,))
        self.engine.play(id, rate=rate, volume=volume, loop=loop, start=start_pos, at=at)
        length = buf.frames - min(int(start_pos * buf.frames), buf.frames - 1)
        self._voice_start(id, buf.deck, frame, loop=loop, rate=rate, volume=volume,
                          length=buf.frames if loop else length)

    def on_stem_bpm(self, ctx, *, id, bpm):
        buf = self.buffers.get(id)
        if buf is None or buf.state == "failed":
            self._require(id)                     # the reason
        buf.bpm = bpm                             # a buffer still loading takes it when bound
        if buf.state == "ready":
            self._sync_tempo(ctx)
            self.engine.set_source_bpm(id, bpm, at=ctx.at)
            v = self.voices.get(id)
            if v is not None and v.src_bpm != bpm and not v.loop:
                # the rest of a one-shot plays at the new speed
                frame = max(ctx.now, v.start)
                if v.src_bpm > 0 and v.end is not None and frame < v.end:
                    played = (self.tempo.beats_at(frame) - v.beats_start) * v.rate * 60.0 * \
                        self.sample_rate / v.src_bpm
                else:
                    played = (frame - v.start) * v.rate
                v.length = max(1, round(v.length - played))
                v.start, v.src_bpm = frame, bpm
                v.beats_start = self.tempo.beats_at(frame) if bpm > 0 else 0.0
                self._end_of(v)
            elif v is not None:
                v.src_bpm = bpm
        self._touch(ctx.now)

    def on_play_stem_section(self, ctx, *, id, rate, volume, loop, start, duration):
        buf = self._require(id)
        seconds = buf.frames / self.sample_rate
        if start >= seconds:
            raise CommandError(f"section start {start:g} s is past the end of buffer {id} "
                               f"({seconds:.3f} s long)")
        if duration is None or start + duration > seconds:
            duration = seconds - start
        self.engine.play(id, rate=rate, volume=volume, loop=loop, start=0.0,
                         section=(start, duration), at=ctx.at)
        self._voice_start(id, buf.deck, ctx.now, loop=loop, rate=rate, volume=volume,
                          length=round(duration * self.sample_rate))

    def on_stop_stem(self, ctx, *, id):
        self._require(id)
        self.engine.stop(id, at=ctx.at)
        self.voices.pop(id, None)
        self._touch(ctx.now)

    def on_stem_volume(self, ctx, *, id, volume):
        self._require(id)
        self.engine.set_volume(id, volume, at=ctx.at)
        v = self.voices.get(id)
        if v is not None:
            v.volume = volume
        self._touch(ctx.now)

    def on_mixer_cleanup(self, ctx):
        self.engine.stop_all(at=ctx.at)
        for buffer_id in list(self.buffers):
            self._release(buffer_id, ctx)
        if self._tone is not None:
            self.engine.unbind(spec.TEST_TONE_BUFFER, at=ctx.at)
            self._tone = None
        for key in self._samples:
            self._media("release_sample", key)
        self._samples.clear()
        self._media("free_unused")     # memory back (preloaded files stay cached)
        self.armed.clear()
        self.voices.clear()
        self._touch(ctx.now)
        self._done(ctx.sender, "/mixer_cleanup")
        self._run_deferred()       # messages waiting for abandoned loads now /fail

    def on_free_buffer(self, ctx, *, id):
        """Stop and empty a buffer ID and free its sample's memory (unless
        another buffer ID uses the same file)."""
        buf = self.buffers.get(id)
        if buf is None:
            raise CommandError(f"buffer {id} is not loaded")
        keys = {buf.key} | ({buf.previous.key} if buf.previous is not None else set())
        self._release(id, ctx)
        for key in keys:
            if key not in self._samples:
                self._media("free_sample", key)
        self._touch(ctx.now)
        self._done(ctx.sender, "/free_buffer", id)
        self._run_deferred()       # messages waiting for its load now /fail

    def on_test_tone(self, ctx, *, freq, seconds):
        import numpy as np

        key = (round(freq, 6), round(seconds, 6))
        if self._tone is None or self._tone[0] != key:
            # a new sample each time the tone changes: the engine frees the old one
            # once nothing plays it (a cached slot could be freed under us)
            n = max(2, round(seconds * self.sample_rate))
            t = np.arange(n) / self.sample_rate
            tone = TONE_LEVEL * np.sin(2 * np.pi * freq * t)
            fade = min(n // 2, round(TONE_FADE_S * self.sample_rate))
            if fade:
                ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(fade) / fade)
                tone[:fade] *= ramp
                tone[n - fade:] *= ramp[::-1]
            data = np.ascontiguousarray(np.repeat(tone.astype(np.float32)[:, None], 2, axis=1))
            slot = self.engine.add_sample(data)
            self.engine.bind(spec.TEST_TONE_BUFFER, slot, 0, at=ctx.at)
            self._tone = (key, n)
        n = self._tone[1]
        self.engine.play(spec.TEST_TONE_BUFFER, rate=1.0, volume=1.0, loop=False, at=ctx.at)
        self._voice_start(spec.TEST_TONE_BUFFER, 0, ctx.now, loop=False, rate=1.0, volume=1.0,
                          length=n)

    # -- handlers: mixer --------------------------------------------------------------------------------

    def _level(self, ctx, deck: int, level: float, ramp: float = 0.0, at=None, frame=None):
        self.engine.set_deck_level(deck, level, ramp=ramp, at=ctx.at if at is None else at)
        self.levels[deck] = level
        self._touch((ctx.now if frame is None else frame) + round(ramp * self.sample_rate))

    def on_crossfade_levels(self, ctx, *, a, b):
        at = self._together(ctx.at)
        self._level(ctx, 0, a, at=at)
        self._level(ctx, 1, b, at=at)

    def on_deck_levels(self, ctx, *, a, b, c, d):
        at = self._together(ctx.at)
        for deck, level in enumerate((a, b, c, d)):
            if level is not spec.KEEP:
                self._level(ctx, deck, level, at=at)

    def _eq(self, ctx, deck: int, band: int, gain: float, at=None):
        self.engine.set_deck_eq(deck, band, gain, at=ctx.at if at is None else at)
        self.eq[deck][band] = gain
        self._touch(ctx.now)

    def on_deck_filter(self, ctx, *, deck, band, gain):
        self._eq(ctx, deck, band, gain)

    def on_deck_eq(self, ctx, *, deck, band, percent):
        from stemdeck.engine.dsp.eq import knob_to_gain

        self._eq(ctx, deck, band, knob_to_gain(percent))

    def on_deck_eq_all(self, ctx, *, deck, low, mid, high):
        from stemdeck.engine.dsp.eq import knob_to_gain

        at = self._together(ctx.at)
        for band, percent in enumerate((low, mid, high)):
            self._eq(ctx, deck, band, knob_to_gain(percent), at=at)

    # -- handlers: tempo and clock ------------------------------------------------------------------------

    def _tempo(self, ctx, bpm: float, ramp: float):
        self._sync_tempo(ctx)
        at, frame = self._tempo_frame(ctx)
        self.engine.set_tempo(bpm, ramp=ramp, at=at)
        self.tempo.set_tempo(frame, bpm, round(ramp * self.sample_rate))
        self.bpm = bpm
        self._retime(frame)
        self._touch(ctx.now)

    def on_set_tempo(self, ctx, *, bpm, ramp):
        self._tempo(ctx, bpm, ramp)

    def on_set_meter(self, ctx, *, beats):
        self.grid = BeatGrid(self.grid.beat_zero, beats)

    def on_print_clock(self, ctx, *, on):
        self.print_clock = on

    def on_quantize(self, ctx, *, beats):
        self.quantize = beats

    def on_keylock(self, ctx, *, deck, on):
        if on and not getattr(self.engine, "keylock_available", False):
            raise CommandError(f"deck {spec.DECK_NAMES[deck]}: key lock needs Rubber Band's library "
                               "(librubberband2), which is not installed on this machine "
                               "(apt-get install librubberband2); the deck keeps playback_rate")
        self.engine.set_keylock(deck, on, at=ctx.at)
        self.keylock[deck] = bool(on)
        self._touch(ctx.now)

    def on_total_movement(self, ctx, *, value):
        self.movement = value
        if not self.movement_bpm:
            if not self._movement_ignored:
                self._movement_ignored = True
                log.info("/dance/total_movement ignored: the server runs with --no-movement-bpm")
            return
        config = self.movement_config
        target = config.target_bpm(value)
        self._sync_tempo(ctx)
        _at, frame = self._tempo_frame(ctx)
        glide = config.glide(self.tempo.bpm_at(frame), target)
        self.movement_target = target
        self._tempo(ctx, target, glide)

    # -- handlers: timed control --------------------------------------------------------------------------

    def on_reset(self, ctx):
        self.time_zero = ctx.now
        self._sync_tempo(ctx)
        self.grid = BeatGrid(self.tempo.beats_at(ctx.now), self.grid.meter)

    def on_play(self, ctx, *, deck, path, start_at, quantize):
        buffer_id = spec.DECK_BUFFER_RANGES[deck][0]
        self._load_if_needed(buffer_id, path, f"Deck{spec.DECK_NAMES[deck]}", ctx)
        buf = self._require(buffer_id)
        at, frame = self._rel(ctx, start_at)
        at, frame = self._quantised(ctx, at, frame, quantize, (deck,))
        self.engine.play(buffer_id, rate=1.0, volume=DEFAULT_VOLUME, loop=True, start=0.0, at=at)
        self._voice_start(buffer_id, deck, frame, loop=True, rate=1.0, volume=DEFAULT_VOLUME,
                          length=buf.frames)

    def on_fade(self, ctx, *, deck, start_at, duration):
        at, frame = self._rel(ctx, start_at)
        self._level(ctx, deck, 0.0, ramp=duration, at=at, frame=frame)

    def on_cue(self, ctx, *, deck, path, start_pos, quantize):
        buffer_id = spec.DECK_BUFFER_RANGES[deck][0]
        self._load_if_needed(buffer_id, path, f"Deck{spec.DECK_NAMES[deck]}", ctx)
        self.armed[deck] = (buffer_id, start_pos, quantize)   # a /start_group now waits for this load
        buf = self._require(buffer_id)
        self._media("warm_sample", buf.key, start_pos)        # fault the cue point in before it plays
        if buffer_id in self.voices:          # crowdstream replaces the deck's player
            self.engine.stop(buffer_id, at=ctx.at)
            self.voices.pop(buffer_id, None)
        self.armed[deck] = (buffer_id, start_pos, quantize)
        self._touch(ctx.now)
        self._done(ctx.sender, "/cue", buffer_id)

    def on_start_group(self, ctx, *, start_at, deck):
        decks = deck
        at, frame = self._rel(ctx, start_at)
        starts, fails, waits = [], [], set()
        for deck in dict.fromkeys(decks):        # each deck once, in order
            name = spec.DECK_NAMES[deck]
            if deck in self.armed:
                buffer_id, pos, _q = self.armed[deck]
                buf = self.buffers.get(buffer_id)
                if buf is None:
                    fails.append(f"deck {name}: its cued buffer {buffer_id} was freed")
                elif buf.state == "loading":
                    waits.add(buffer_id)
                elif buf.state == "failed":
                    fails.append(f"deck {name} failed to load: {buf.error}")
                else:
                    starts.append((deck, buf, pos))
            elif any(v.deck == deck and v.buffer_id != spec.TEST_TONE_BUFFER
                     and v.playing_at(frame) for v in self.voices.values()):
                continue                          # already playing: left alone (crowdstream)
            else:
                fails.append(f"deck {name} is not cued: send /cue {name} <path> first")
        if waits:
            raise _Wait(waits)
        if ctx.waited:
            delay = (int(self.engine.frame) - frame) / self.sample_rate
            if delay > 0:
                log.warning("/start_group %s: %.3f s late, waiting for a deck to load",
                            " ".join(spec.DECK_NAMES[d] for d, _, _ in starts), delay)
        own = [self.armed[d][2] for d, _, _ in starts if self.armed[d][2] is not None]
        quantize = max(own, key=self._grid_every) if own else None
        at, frame = self._quantised(ctx, at, frame, quantize, [d for d, _, _ in starts])
        at = self._together(at)
        for deck, buf, pos in starts:
            self.engine.play(buf.id, rate=1.0, volume=DEFAULT_VOLUME, loop=True, start=pos, at=at)
            self._voice_start(buf.id, deck, frame, loop=True, rate=1.0, volume=DEFAULT_VOLUME,
                              length=buf.frames)
            del self.armed[deck]
        for reason in fails:
            self._fail(ctx.sender, "/start_group", reason)

    # -- handlers: status and server -------------------------------------------------------------------------

    def on_get_status(self, ctx):
        info = self.status()
        log.info("status: %s", ", ".join(f"{k}={_show(v)}" for k, v in info.items()))
        levels = " ".join(f"{spec.DECK_NAMES[d]}:{self.levels[d]:.2f}" for d in range(4))
        log.info("decks: %s", levels)
        self._emit(ctx.sender, "/status.reply", *self.status_args())

    def on_status(self, ctx):
        self._emit(ctx.sender, "/status.reply", *self.status_args())

    def on_status_json(self, ctx):
        self._emit(ctx.sender, "/status.json.reply", json.dumps(self.status_detail()))

    def on_sync(self, ctx, *, id):
        pending = {b for b, info in self.buffers.items() if info.state == "loading"}
        if pending:
            raise _Wait(pending)
        self._emit(ctx.sender, "/synced", id)

    def on_version(self, ctx):
        from stemdeck import __version__

        parts = (__version__.split(".") + ["0", "0", "0"])[:3]
        major, minor = int(parts[0]), int(parts[1])
        self._emit(ctx.sender, "/version.reply", "stemdeck", major, minor, "." + parts[2], "", "")

    def on_notify(self, ctx, *, on, client_id=None):
        # client_id: sclang sends one; scsynth uses it to tag replies, we need not
        hook = self.hooks.get("notify")
        if hook is None:
            raise CommandError("/notify is only available on a live server")
        hook(ctx.sender, on)
        self._done(ctx.sender, "/notify")

    def on_quit(self, ctx):
        hook = self.hooks.get("quit")
        if hook is None:
            raise CommandError("/quit is only available on a live server")
        self._done(ctx.sender, "/quit")
        hook(ctx.sender)


# -- helpers ------------------------------------------------------------------------------------------

def _deck_of(buffer_id: int) -> int:
    for deck, (lo, hi) in enumerate(spec.DECK_BUFFER_RANGES):
        if lo <= buffer_id < hi:
            return deck
    return 0


def _reason(error) -> str:
    if isinstance(error, (MediaError, CommandError)):
        return str(error)
    if isinstance(error, FileNotFoundError):
        return f"no such file: {error.filename}"
    return f"{type(error).__name__}: {error}"


def _strip(address: str, text: str) -> str:
    """Reasons are sent as ``/fail address reason``: drop a repeated address prefix."""
    prefix = address + ": "
    return text[len(prefix):] if text.startswith(prefix) else text


def _show(v) -> str:
    return f"{v:.2f}" if isinstance(v, float) else str(v)
