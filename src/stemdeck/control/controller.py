"""The Controller: the state control messages act on, and the one way in (``handle``, ``dispatch``, ``poll``).

One Controller serves the live OSC server and the offline score renderer
alike, so a score sounds the way the same messages sound live. Its parts,
each in its own module: the buffer bookkeeping
(:mod:`~stemdeck.control.buffers`), the logical timeline in frames and
beats (:mod:`~stemdeck.control.timeline`) and the status it reports
(:mod:`~stemdeck.control.status`); it keeps the mixer state the messages
set (levels, EQ, key lock, cued decks, movement) and the messages waiting
for loads. What each message does is in :mod:`~stemdeck.control.handlers`,
one ``on_*`` method per message of the table, which the Controller inherits.

Threads: every method is for the one control thread that owns the
:class:`~stemdeck.engine.engine.Engine` (the OSC control loop, or the render
loop), except that a loader's worker threads finish futures, which the
Controller only collects in :meth:`Controller.poll` on the control thread.

Times: a message carries ``at``, the engine frame it takes effect at
(``None`` = as soon as possible). Relative times (``/play``, ``/fade``,
``/start_group``) become frames here, never timers. A command for a buffer
whose load is still running waits in a queue, in arrival order, and runs
when the load completes; only a buffer never requested is refused.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from stemdeck.control import spec
from stemdeck.control import status as status_
from stemdeck.control.buffers import BufferBook, BufferInfo, Wait
from stemdeck.control.handlers import Handlers
from stemdeck.control.movement import MovementConfig
from stemdeck.control.tempo import BeatGrid, engine_clock
from stemdeck.control.timeline import Ctx, Timeline
from stemdeck.engine.commands import DECKS, STRETCH_MODES
from stemdeck.errors import CommandError, MediaError
from stemdeck.media.simple_loaders import ImmediateLoader

log = logging.getLogger("stemdeck.control")

MAX_WAITING = 4096            # messages waiting for loads; more are refused

Reply = Callable[[Any, str, tuple], None]


class Controller(Handlers):
    """Applies control messages (validated by :mod:`stemdeck.control.spec`) to an Engine.

    ``engine``: an :class:`~stemdeck.engine.engine.Engine` (or the planning
    double :class:`~stemdeck.control.planning.RecordingEngine`).
    ``loader``: how files become samples: the live server's
    :class:`~stemdeck.media.loader.MediaLoader`, or one of
    :mod:`stemdeck.media.simple_loaders` (``ImmediateLoader``, the default:
    scores, tests; ``ProbeLoader``: planning).
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

    Tempo: ``base_bpm`` (``--bpm``) is the tempo a stem is assumed
    to have been made at unless ``/load_buffer`` or ``/stem_bpm`` says
    otherwise. ``stretch`` (``--stretch``): ``"playback_rate"`` or
    ``"keylock"``, the mode every deck starts in (key lock needs Rubber Band;
    without it a warning is logged and decks keep playback_rate).
    ``movement``: the :class:`~stemdeck.control.movement.MovementConfig` for
    ``/dance/total_movement`` (``--bpm-config``, read with
    :func:`~stemdeck.control.movement.load_movement_config`; None: the
    documented defaults). ``movement_bpm=False`` (``--movement-bpm off``)
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
        self.sample_rate = int(sample_rate or engine.sample_rate)
        if self.sample_rate != engine.sample_rate:
            raise ValueError(f"sample_rate {self.sample_rate} differs from the engine's "
                             f"{engine.sample_rate}")
        self.reply_to = reply
        self.replies: list[tuple[Any, str, tuple]] = []
        self.base_bpm = float(base_bpm)
        self.times_from = times_from
        self.on_events = on_events
        self.hooks = dict(hooks or {})
        self.timeline = Timeline(engine, sample_rate=self.sample_rate, lookahead=lookahead,
                                 quantize=quantize)
        self.book = BufferBook(engine, loader if loader is not None else ImmediateLoader(),
                               sample_rate=self.sample_rate,
                               default_bpm=self.base_bpm if follow_tempo else 0.0,
                               follow_tempo=follow_tempo, check_path=check_path,
                               on_load_ready=on_load_ready, done=self._done, fail=self._fail,
                               touch=self.timeline.touch, settled=self._run_deferred)
        self._deferred: list[tuple[spec.Call, Ctx, set]] = []
        self._tone: tuple | None = None          # ((freq, seconds), frames) bound now
        self._emitted: list[tuple[str, tuple]] | None = None

        # the mixer state the messages set
        self.print_clock = False
        self.armed: dict[int, tuple[int, float, Any]] = {}   # deck -> (buffer ID, start_pos, quantize)
        self.levels = [1.0] * DECKS
        self.eq = [[1.0, 1.0, 1.0] for _ in range(DECKS)]
        self.bpm = self.base_bpm         # the tempo last asked for
        self.movement = 0.0
        self.movement_config = movement if movement is not None else MovementConfig()
        self.movement_bpm = bool(movement_bpm)
        self.movement_target: float | None = None
        self._movement_ignored = False
        self.stretch = stretch
        self.keylock = [False] * DECKS   # decks asked to keep their key
        if stretch == "keylock":
            if engine.keylock_available:
                for deck in range(DECKS):
                    engine.set_keylock(deck, True)
                self.keylock = [True] * DECKS
            else:
                log.warning("--stretch keylock: key lock needs Rubber Band's library "
                            "(librubberband2), which is not installed: decks play with "
                            "playback_rate (pitch follows tempo)")

    # -- what other parts read ------------------------------------------------------------------

    @property
    def loader(self):
        return self.book.loader

    @property
    def buffers(self) -> dict[int, BufferInfo]:
        """Buffer ID -> :class:`~stemdeck.control.buffers.BufferInfo` (read-only for others)."""
        return self.book.ids

    @property
    def grid(self) -> BeatGrid:
        """Bar 1 beat 1 and the meter (the reporter thread reads it)."""
        return self.timeline.grid

    @property
    def tempo(self):
        return self.timeline.tempo

    @property
    def voices(self) -> dict:
        return self.timeline.voices

    @property
    def meter(self) -> int:
        return self.timeline.grid.meter

    def clock(self) -> tuple[int, int, float]:
        """(bar, beat, beats since /reset) of the engine's clock now: bar and
        beat 1-based. Any thread (reads the engine's counters and :attr:`grid`)."""
        grid = self.timeline.grid
        beats = engine_clock(self.engine).beats
        bar, beat, _phase = grid.position(beats)
        return bar, beat, max(beats - grid.beat_zero, 0.0)

    def status(self) -> dict:
        return status_.summary(self)

    def status_args(self) -> tuple:
        return status_.args(self)

    def status_detail(self) -> dict:
        return status_.detail(self)

    def playing(self, buffer_id: int, frame: int | None = None) -> bool:
        """Whether the buffer plays at ``frame`` on the logical timeline."""
        return self.timeline.playing(buffer_id, frame)

    def plan(self) -> dict:
        """When the music scheduled so far ends (for a renderer's default length):
        see :meth:`Timeline.plan <stemdeck.control.timeline.Timeline.plan>`."""
        return self.timeline.plan(self.levels, {b: info.name for b, info in self.book.ids.items()})

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
        base = self.timeline.time_zero if self.times_from == "reset" else now
        ctx = Ctx(at=None if at is None else int(at), now=now, base=base, sender=sender)
        self._run(call, ctx)

    def poll(self) -> int:
        """The control loop's tick (control thread only): finish loads that
        completed on loader threads, then drain the engine's events (the one
        consumer of ``engine.events()``: it frees released sample slots) and
        hand them to ``on_events``. Returns how many loads finished."""
        done = self.book.poll()
        events = self.engine.events()
        if events and self.on_events is not None:
            self.on_events(events)
        return done

    @property
    def loading(self) -> int:
        """Loads still running."""
        return len(self.book.jobs)

    @property
    def waiting(self) -> int:
        """Messages waiting for a load."""
        return len(self._deferred)

    def close(self) -> None:
        self.book.loader.close()

    # -- dispatch internals ------------------------------------------------------------------------

    def _run(self, call: spec.Call, ctx: Ctx):
        handler = getattr(self, "on_" + call.message.handler)
        try:
            handler(ctx, **call.values)
        except Wait as wait:
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
                if any(self.book.is_loading(b) for b in ids):
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

    # -- helpers the handlers share ------------------------------------------------------------

    def _voice_start(self, buf_id: int, deck: int, frame: int, **kw):
        buf = self.book.ids.get(buf_id)
        src_bpm = buf.bpm if buf is not None and buf_id != spec.TEST_TONE_BUFFER else 0.0
        self.timeline.start(buf_id, deck, frame, src_bpm=src_bpm, **kw)
        self.book.media("voice_starting", frame)        # the read-ahead sleeps until a stem plays

    def _quantised(self, ctx: Ctx, at, frame: int, quantize, decks):
        return self.timeline.quantised(ctx, at, frame, quantize, any(self.keylock[d] for d in decks))

    def _release(self, buffer_id: int, ctx: Ctx):
        """Empty a buffer ID (stopping what it plays), as /free_buffer or cleanup does."""
        self.timeline.voices.pop(buffer_id, None)
        self.book.release(buffer_id, ctx.at)

    def _load_if_needed(self, buffer_id: int, path: str, name: str, ctx: Ctx) -> BufferInfo:
        """For /play and /cue: load unless the buffer holds that file; raises
        the reason if the load this message began was refused."""
        buf = self.book.load_if_needed(buffer_id, path, name, ctx)
        if buf is not None:
            return buf
        kept = self.book.ids.get(buffer_id)
        if kept is not None and kept.state == "ready":   # it kept its old sample: not cued with that
            for deck, arm in list(self.armed.items()):
                if arm[0] == buffer_id:
                    del self.armed[deck]
        raise CommandError(f"buffer {buffer_id} failed to load: {ctx.load_errors[buffer_id]}")


def _strip(address: str, text: str) -> str:
    """Reasons are sent as ``/fail address reason``: drop a repeated address prefix."""
    prefix = address + ": "
    return text[len(prefix):] if text.startswith(prefix) else text
