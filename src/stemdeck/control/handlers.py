"""The Controller: applies validated control messages to the engine, one ``on_*`` handler per message of the table.

One Controller serves the live OSC server and the offline score renderer
alike, so a score sounds the way the same messages sound live. Its parts,
each in its own module: the buffer bookkeeping
(:mod:`~stemdeck.control.buffers`), the logical timeline in frames and
beats (:mod:`~stemdeck.control.timeline`) and the status it reports
(:mod:`~stemdeck.control.status`); it keeps the mixer state the messages
set (levels, EQ, key lock, cued decks, movement) and the messages waiting
for loads.

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

import json
import logging
from typing import Any, Callable

from stemdeck.control import spec
from stemdeck.control import status as status_
from stemdeck.control.buffers import BufferBook, BufferInfo, Wait
from stemdeck.control.movement import MovementConfig
from stemdeck.control.tempo import BeatGrid, engine_clock
from stemdeck.control.timeline import Ctx, Timeline
from stemdeck.engine.commands import DECK_NAMES, DECKS
from stemdeck.errors import CommandError, MediaError
from stemdeck.media.simple_loaders import ImmediateLoader

log = logging.getLogger("stemdeck.control")

DEFAULT_VOLUME = 0.8          # crowdstream's /play_stem, /play and /cue volume
TONE_LEVEL = 0.25             # -12 dBFS
TONE_FADE_S = 0.005
MAX_WAITING = 4096            # messages waiting for loads; more are refused
STRETCH_MODES = ("playback_rate", "keylock")

Reply = Callable[[Any, str, tuple], None]


class Controller:
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
            if getattr(engine, "keylock_available", False):
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


    # -- handlers: buffers and stems -------------------------------------------------------------------

    def on_load_buffer(self, ctx, *, id, path, name, bpm):
        if self.book.is_loading(id) and id not in ctx.started_loads:
            raise Wait({id})    # one load per buffer at a time, in arrival order
        self.book.load(id, path, name, ctx, "/load_buffer", bpm=bpm)

    def on_play_stem(self, ctx, *, id, rate, volume, loop, start_pos, quantize):
        buf = self.book.require(id)
        at, frame = self._quantised(ctx, ctx.at, ctx.now, quantize, (buf.deck,))
        self.engine.play(id, rate=rate, volume=volume, loop=loop, start=start_pos, at=at)
        length = buf.frames - min(int(start_pos * buf.frames), buf.frames - 1)
        self._voice_start(id, buf.deck, frame, loop=loop, rate=rate, volume=volume,
                          length=buf.frames if loop else length)

    def on_stem_bpm(self, ctx, *, id, bpm):
        buf = self.buffers.get(id)
        if buf is None or buf.state == "failed":
            self.book.require(id)                     # the reason
        buf.bpm = bpm                             # a buffer still loading takes it when bound
        if buf.state == "ready":
            self.timeline.sync_tempo(ctx)
            self.engine.set_source_bpm(id, bpm, at=ctx.at)
            v = self.voices.get(id)
            if v is not None and v.src_bpm != bpm and not v.loop:
                self.timeline.rebpm(v, ctx.now, bpm)    # the rest of a one-shot at the new speed
            elif v is not None:
                v.src_bpm = bpm
        self.timeline.touch(ctx.now)

    def on_play_stem_section(self, ctx, *, id, rate, volume, loop, start, duration):
        buf = self.book.require(id)
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
        self.book.require(id)
        self.engine.stop(id, at=ctx.at)
        self.voices.pop(id, None)
        self.timeline.touch(ctx.now)

    def on_stem_volume(self, ctx, *, id, volume):
        self.book.require(id)
        self.engine.set_volume(id, volume, at=ctx.at)
        v = self.voices.get(id)
        if v is not None:
            v.volume = volume
        self.timeline.touch(ctx.now)

    def on_mixer_cleanup(self, ctx):
        self.engine.stop_all(at=ctx.at)
        for buffer_id in list(self.buffers):
            self._release(buffer_id, ctx)
        if self._tone is not None:
            self.engine.unbind(spec.TEST_TONE_BUFFER, at=ctx.at)
            self._tone = None
        self.book.release_all()
        self.book.media("free_unused")     # memory back (preloaded files stay cached)
        self.armed.clear()
        self.voices.clear()
        self.timeline.touch(ctx.now)
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
            if key not in self.book.samples:
                self.book.media("free_sample", key)
        self.timeline.touch(ctx.now)
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
        self.timeline.touch((ctx.now if frame is None else frame) + round(ramp * self.sample_rate))

    def on_crossfade_levels(self, ctx, *, a, b):
        at = self.timeline.together(ctx.at)
        self._level(ctx, 0, a, at=at)
        self._level(ctx, 1, b, at=at)

    def on_deck_levels(self, ctx, *, a, b, c, d):
        at = self.timeline.together(ctx.at)
        for deck, level in enumerate((a, b, c, d)):
            if level is not spec.KEEP:
                self._level(ctx, deck, level, at=at)

    def _eq(self, ctx, deck: int, band: int, gain: float, at=None):
        self.engine.set_deck_eq(deck, band, gain, at=ctx.at if at is None else at)
        self.eq[deck][band] = gain
        self.timeline.touch(ctx.now)

    def on_deck_filter(self, ctx, *, deck, band, gain):
        self._eq(ctx, deck, band, gain)

    def on_deck_eq(self, ctx, *, deck, band, percent):
        from stemdeck.engine.dsp.eq import knob_to_gain

        self._eq(ctx, deck, band, knob_to_gain(percent))

    def on_deck_eq_all(self, ctx, *, deck, low, mid, high):
        from stemdeck.engine.dsp.eq import knob_to_gain

        at = self.timeline.together(ctx.at)
        for band, percent in enumerate((low, mid, high)):
            self._eq(ctx, deck, band, knob_to_gain(percent), at=at)

    # -- handlers: tempo and clock ------------------------------------------------------------------------

    def _tempo(self, ctx, bpm: float, ramp: float):
        self.timeline.sync_tempo(ctx)
        at, frame = self.timeline.tempo_frame(ctx)
        self.engine.set_tempo(bpm, ramp=ramp, at=at)
        self.tempo.set_tempo(frame, bpm, round(ramp * self.sample_rate))
        self.bpm = bpm
        self.timeline.retime(frame)
        self.timeline.touch(ctx.now)

    def on_set_tempo(self, ctx, *, bpm, ramp):
        self._tempo(ctx, bpm, ramp)

    def on_set_meter(self, ctx, *, beats):
        self.timeline.grid = BeatGrid(self.grid.beat_zero, beats)

    def on_print_clock(self, ctx, *, on):
        self.print_clock = on

    def on_quantize(self, ctx, *, beats):
        self.timeline.quantize = beats

    def on_keylock(self, ctx, *, deck, on):
        if on and not getattr(self.engine, "keylock_available", False):
            raise CommandError(f"deck {DECK_NAMES[deck]}: key lock needs Rubber Band's library "
                               "(librubberband2), which is not installed on this machine "
                               "(apt-get install librubberband2); the deck keeps playback_rate")
        self.engine.set_keylock(deck, on, at=ctx.at)
        self.keylock[deck] = bool(on)
        self.timeline.touch(ctx.now)

    def on_total_movement(self, ctx, *, value):
        self.movement = value
        if not self.movement_bpm:
            if not self._movement_ignored:
                self._movement_ignored = True
                log.info("/dance/total_movement ignored: the server runs with --no-movement-bpm")
            return
        config = self.movement_config
        target = config.target_bpm(value)
        self.timeline.sync_tempo(ctx)
        _at, frame = self.timeline.tempo_frame(ctx)
        glide = config.glide(self.tempo.bpm_at(frame), target)
        self.movement_target = target
        self._tempo(ctx, target, glide)

    # -- handlers: timed control --------------------------------------------------------------------------

    def on_reset(self, ctx):
        self.timeline.time_zero = ctx.now
        self.timeline.sync_tempo(ctx)
        self.timeline.grid = BeatGrid(self.tempo.beats_at(ctx.now), self.grid.meter)

    def on_play(self, ctx, *, deck, path, start_at, quantize):
        buffer_id = spec.DECK_BUFFER_RANGES[deck][0]
        self._load_if_needed(buffer_id, path, f"Deck{DECK_NAMES[deck]}", ctx)
        buf = self.book.require(buffer_id)
        at, frame = self.timeline.rel(ctx, start_at)
        at, frame = self._quantised(ctx, at, frame, quantize, (deck,))
        self.engine.play(buffer_id, rate=1.0, volume=DEFAULT_VOLUME, loop=True, start=0.0, at=at)
        self._voice_start(buffer_id, deck, frame, loop=True, rate=1.0, volume=DEFAULT_VOLUME,
                          length=buf.frames)

    def on_fade(self, ctx, *, deck, start_at, duration):
        at, frame = self.timeline.rel(ctx, start_at)
        self._level(ctx, deck, 0.0, ramp=duration, at=at, frame=frame)

    def on_cue(self, ctx, *, deck, path, start_pos, quantize):
        buffer_id = spec.DECK_BUFFER_RANGES[deck][0]
        self._load_if_needed(buffer_id, path, f"Deck{DECK_NAMES[deck]}", ctx)
        self.armed[deck] = (buffer_id, start_pos, quantize)   # a /start_group now waits for this load
        buf = self.book.require(buffer_id)
        self.book.media("warm_sample", buf.key, start_pos)        # fault the cue point in before it plays
        if buffer_id in self.voices:          # crowdstream replaces the deck's player
            self.engine.stop(buffer_id, at=ctx.at)
            self.voices.pop(buffer_id, None)
        self.timeline.touch(ctx.now)
        self._done(ctx.sender, "/cue", buffer_id)

    def on_start_group(self, ctx, *, start_at, deck):
        decks = deck
        at, frame = self.timeline.rel(ctx, start_at)
        starts, fails, waits = [], [], set()
        for deck in dict.fromkeys(decks):        # each deck once, in order
            name = DECK_NAMES[deck]
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
            raise Wait(waits)
        if ctx.waited:
            delay = (int(self.engine.frame) - frame) / self.sample_rate
            if delay > 0:
                log.warning("/start_group %s: %.3f s late, waiting for a deck to load",
                            " ".join(DECK_NAMES[d] for d, _, _ in starts), delay)
        own = [self.armed[d][2] for d, _, _ in starts if self.armed[d][2] is not None]
        quantize = max(own, key=self.timeline.grid_every) if own else None
        at, frame = self._quantised(ctx, at, frame, quantize, [d for d, _, _ in starts])
        at = self.timeline.together(at)
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
        log.info("status: %s", ", ".join(f"{k}={status_.show(v)}" for k, v in info.items()))
        levels = " ".join(f"{DECK_NAMES[d]}:{self.levels[d]:.2f}" for d in range(DECKS))
        log.info("decks: %s", levels)
        self._emit(ctx.sender, "/status.reply", *self.status_args())

    def on_status(self, ctx):
        self._emit(ctx.sender, "/status.reply", *self.status_args())

    def on_status_json(self, ctx):
        self._emit(ctx.sender, "/status.json.reply", json.dumps(self.status_detail()))

    def on_sync(self, ctx, *, id):
        pending = {b for b, info in self.book.ids.items() if info.state == "loading"}
        if pending:
            raise Wait(pending)
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


def _strip(address: str, text: str) -> str:
    """Reasons are sent as ``/fail address reason``: drop a repeated address prefix."""
    prefix = address + ": "
    return text[len(prefix):] if text.startswith(prefix) else text
