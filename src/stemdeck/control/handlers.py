"""The message handlers: one ``on_*`` method per message of the table, what it does to the Controller's parts.

:class:`Handlers` is a part of :class:`~stemdeck.control.controller.Controller`
(which inherits it), kept apart so that the way in (validation, waiting for
loads, replies) and the messages' meanings can each be read alone. A handler
gets the message's :class:`~stemdeck.control.timeline.Ctx` (when and from
whom) and its validated arguments by name; it posts engine commands at
frames, updates the buffer book and the timeline, and replies through
``_done`` / ``_emit``. It raises ``Wait`` for a buffer still loading (the
message runs when the load completes) and ``CommandError`` for a refusal
(the ``/fail`` reason). Control thread only.
"""

from __future__ import annotations

import json
import logging

from stemdeck.control import spec
from stemdeck.control import status as status_
from stemdeck.control.buffers import Wait
from stemdeck.control.tempo import BeatGrid
from stemdeck.engine.commands import DECK_NAMES, DECKS
from stemdeck.errors import CommandError

log = logging.getLogger("stemdeck.control")

DEFAULT_VOLUME = 0.8          # crowdstream's /play_stem, /play and /cue volume
TONE_LEVEL = 0.25             # -12 dBFS
TONE_FADE_S = 0.005


class Handlers:
    """The ``on_*`` handlers of :class:`~stemdeck.control.controller.Controller`."""

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
        if on and not self.engine.keylock_available:
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
                log.info("/dance/total_movement ignored: the server runs with --movement-bpm off")
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

    def on_schedule_c_at(self, ctx, *, seconds):
        buffer_id = spec.DECK_BUFFER_RANGES[2][0]
        buf = self.book.require(buffer_id)
        frame = round(seconds * self.sample_rate)        # frames since the engine started
        at, frame = (ctx.at, ctx.now) if frame <= ctx.now else (frame, frame)
        self.engine.play(buffer_id, rate=1.0, volume=DEFAULT_VOLUME, loop=True, start=0.0, at=at)
        self._voice_start(buffer_id, 2, frame, loop=True, rate=1.0, volume=DEFAULT_VOLUME,
                          length=buf.frames)

    def on_dummy(self, ctx, *, words):
        log.info("/dummy %s", " ".join(words) if words else "(no words)")
        if words and words[0].strip().lower() == "schedule_c_at":
            call = spec.parse("/schedule_c_at", words[1:2])
            self.on_schedule_c_at(ctx, **call.values)

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
        hook = self.hooks.get("notify")
        if hook is None:
            raise CommandError("/notify is only available on a live server")
        hook(ctx.sender, on)
        # sclang reads its client ID (and max logins) from the /done, as scsynth sends them
        ids = self.__dict__.setdefault("_client_ids", {})     # sender -> client ID
        self._done(ctx.sender, "/notify", client_id_for(ids, ctx.sender, client_id, on),
                   spec.MAX_LOGINS)

    def on_quit(self, ctx):
        hook = self.hooks.get("quit")
        if hook is None:
            raise CommandError("/quit is only available on a live server")
        self._done(ctx.sender, "/quit")
        hook(ctx.sender)


def client_id_for(ids: dict, sender, asked, on: bool) -> int:
    """scsynth's client ID for a ``/notify``: the sender's own if it has one, else
    the one asked for if free, else the lowest free one; unsubscribing frees it."""
    current = ids.get(sender)
    if current is None:
        taken = set(ids.values())
        if asked is not None and asked < spec.MAX_LOGINS and asked not in taken:
            current = asked
        else:
            current = next((i for i in range(spec.MAX_LOGINS) if i not in taken), None)
        if current is None:                 # all taken: share 0, remember nothing (bounded)
            return 0
    if on:
        ids[sender] = current
    else:
        ids.pop(sender, None)
    return current
