"""What the OSC server says: replies and ``/fail`` to senders, events to ``/notify`` subscribers, the status fields, and the reporter thread.

Threads: replies and engine events go out on the control thread;
:meth:`Reporter.notify` may be called from any thread (``/device``,
``/file``). The **reporter thread** (``sd-osc-reporter``) sends
``/beat bar beat`` (at most once per beat) and ``/underrun count`` to
subscribers and logs the clock for ``/print_clock``; it only reads
counters. It sleeps while nobody subscribes and ``/print_clock`` is off;
otherwise until the next beat is due by the published tempo (every
:data:`RAMP_LOOK_S` during a tempo ramp) and at most :data:`UNDERRUN_CHECK_S`
between looks at the underrun count. A subscriber, ``/print_clock`` or a
tempo change (:meth:`Reporter.wake`) wakes it at once. Replies are always valid UTF-8 (osc_wire writes bytes that were
not as ``\\xNN``); one that does not fit a UDP datagram becomes a ``/fail``
that says to ask over TCP.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Callable

from stemdeck.control import osc_wire as wire
from stemdeck.control.osc.addresses import peer_text
from stemdeck.engine import commands as C
from stemdeck.errors import CommandError
from stemdeck.threads import thread

MAX_SUBSCRIBERS = 64
UNDERRUN_CHECK_S = 0.1           # between looks at the underrun count, while someone subscribes
RAMP_LOOK_S = 0.02               # between looks at the clock while the tempo ramps
BEAT_LATE_S = 0.001              # wake this long after a beat is due (its block rendered)


class Reporter:
    """Replies, notifications and status for one server.

    ``transport``: sends (:class:`~stemdeck.control.osc.transport.Transport`).
    ``stats``: a callable returning the ``/status.reply`` fields only the
    audio side knows (``buffer_size``, ``latency_ms``, ``underruns``,
    ``dsp_load_avg``, ``dsp_load_peak``, ``cpu_percent``, ``uptime_s``);
    called from the control and reporter threads, never at once. Without
    it, rough figures come from the engine's counters.
    ``counters()``: the server's counter snapshot for ``/status.json``.
    """

    def __init__(self, *, engine, transport, clock, counters, ratelog, log, stop: threading.Event,
                 stats: Callable[[], dict] | None, counter_snapshot: Callable[[], dict]):
        self.engine = engine
        self.transport = transport
        self.clock = clock
        self.c = counters
        self.ratelog = ratelog
        self.log = log
        self.sample_rate = int(engine.sample_rate)
        self._stop = stop
        self._stats = stats
        self._stats_lock = threading.Lock()
        self._snapshot = counter_snapshot
        self._subscribers: dict = {}
        self._subs_snapshot: tuple = ()
        self._stopping_told = False
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._controller = None
        self._load_snapshot: dict = {}
        self._started_at = time.monotonic()
        self._cpu_mark = (time.monotonic(), time.process_time())

    @property
    def subscribers(self) -> int:
        return len(self._subs_snapshot)

    def start(self, controller) -> None:
        """Watch ``controller``'s loads and clock; start the reporter thread."""
        self._controller = controller
        self._started_at = time.monotonic()
        self._load_snapshot = {b: (i, i.state) for b, i in controller.buffers.items()}
        self._thread = thread(self._report_loop, "sd-osc-reporter")
        self._thread.start()

    def wake(self) -> None:
        """Any thread: look at the subscribers and the clock again now."""
        self._wake.set()

    def join(self, timeout: float) -> None:
        self._wake.set()                 # the stop event is set: it ends at once
        t = self._thread
        if t is not None and t is not threading.current_thread() and t.is_alive():
            t.join(timeout)

    # -- replies ---------------------------------------------------------------------------------------------

    def reply(self, sender, address: str, args: tuple) -> None:
        """The Controller's ``reply``: send to whoever sent the message."""
        if address == "/fail":
            self.ratelog(logging.WARNING, "OSC: /fail %s %s (from %s)",
                         args[0] if args else "?", args[1] if len(args) > 1 else "",
                         peer_text(getattr(sender, "peer", sender)))
        if sender is None:
            return
        try:
            data = wire.encode_message(address, args)
        except Exception:
            self.c.internal_errors += 1
            self.log.exception("OSC: cannot encode reply %s", address)
            return
        if not self.transport.fits(sender, data):
            self.reply(sender, "/fail", (address.replace(".reply", ""),
                                         f"the reply is {len(data)} bytes, too big for one UDP "
                                         "datagram: ask over TCP (server --tcp) or use /status"))
            return
        self.transport.send(sender, data)

    def fail(self, sender, address: str, reason: str) -> None:
        self.reply(sender, "/fail", (address, reason))

    # -- subscribers ----------------------------------------------------------------------------------------

    def notify(self, address: str, *args) -> None:
        """Send an event to every /notify subscriber (e.g. ``/device lost``; any thread)."""
        subs = self._subs_snapshot
        if not subs:
            return
        data = wire.encode_message(address, args)
        for sender in subs:
            if self.transport.send(sender, data):
                self.c.notifications += 1

    def subscribe(self, sender, on: bool) -> None:
        """The Controller's ``notify`` hook (``/notify 1|0``)."""
        if sender is None:
            raise CommandError("/notify needs a sender to send events to")
        if on:
            if sender not in self._subscribers and len(self._subscribers) >= MAX_SUBSCRIBERS:
                raise CommandError(f"{MAX_SUBSCRIBERS} clients already subscribed: send /notify 0 "
                                   "from one first")
            self._subscribers[sender] = True
        else:
            self._subscribers.pop(sender, None)
        self._subs_snapshot = tuple(self._subscribers)
        self._wake.set()

    def forget(self, sender) -> None:
        """A TCP connection closed: it hears nothing more."""
        if sender in self._subscribers:
            self._subscribers.pop(sender, None)
            self._subs_snapshot = tuple(self._subscribers)

    def tell_stopping(self, why: str) -> None:
        """``/server stopping <why>`` to subscribers, once, before the sockets close."""
        if not self._stopping_told:
            self._stopping_told = True
            self.notify("/server", "stopping", why)

    # -- loads and engine events ----------------------------------------------------------------------------

    def check_loads(self) -> None:
        """Send ``/loaded id`` for every buffer that became ready since last time."""
        snap = self._load_snapshot
        new = {}
        for bid, info in self._controller.buffers.items():
            state = info.state
            new[bid] = (info, state)
            old = snap.get(bid)
            if state == "ready" and (old is None or old[0] is not info or old[1] != "ready"):
                self.notify("/loaded", int(bid))
        self._load_snapshot = new

    def on_engine_events(self, events) -> None:
        """Engine events as notifications: ``/ended id`` for a one-shot that
        finished, ``/late seconds command`` for a command the engine ran after
        its frame (control thread; the Controller drains the engine)."""
        for kind, a, b, _c in events:
            if kind == C.EV_ENDED:
                self.notify("/ended", int(a))
            elif kind == C.EV_LATE:
                self.notify("/late", float(b) / self.sample_rate, C.OP_NAMES.get(int(a), "command"))
            elif kind == C.EV_VOICES_FULL:
                self.ratelog(logging.WARNING, "OSC: no free voice to play buffer %d", int(a))

    # -- status ------------------------------------------------------------------------------------------------

    def status_fields(self) -> dict:
        """The Controller's ``status`` hook: the audio side's figures (``stats``,
        else the engine's counters), late bundles added to ``late_commands``,
        and the server's counters."""
        if self._stats is None:
            info = self._basic_stats()
        else:
            info = {}
            try:
                with self._stats_lock:
                    info.update(self._stats() or {})
            except Exception:
                self.log.exception("OSC: the stats callable failed")
        st = self.engine.stats()
        info["late_commands"] = int(st.get("late_commands", 0)) + self.c.late
        info["osc"] = self._snapshot()
        return info

    def _basic_stats(self) -> dict:
        """Figures from the engine's own counters, for when no telemetry is given."""
        st = self.engine.stats()
        block = self.clock.block or (st["frame"] / st["callbacks"] if st.get("callbacks") else 0)
        period_ns = block / self.sample_rate * 1e9 if block else 0.0
        info: dict = {"uptime_s": time.monotonic() - self._started_at,
                      "buffer_size": int(round(block)),
                      "latency_ms": (self.clock.output_latency_ns() / 1e9
                                     + block / self.sample_rate) * 1000.0,
                      "underruns": int(st.get("underflows", 0))}
        if self.engine.renders and period_ns:          # the planning double has no callbacks
            d = self.engine.callback_durations()[-512:]
            if len(d):
                info["dsp_load_avg"] = float(d.mean() / period_ns * 100.0)
                info["dsp_load_peak"] = float(d.max() / period_ns * 100.0)
        now, cpu = time.monotonic(), time.process_time()
        then, cpu0 = self._cpu_mark
        if now - then > 0.05:
            info["cpu_percent"] = (cpu - cpu0) / (now - then) * 100.0
            self._cpu_mark = (now, cpu)
        return info

    # -- reporter thread ----------------------------------------------------------------------------------------

    def _report_loop(self):
        """``/beat`` once per beat (when the engine renders the beat's first
        frame), the ``/print_clock`` log line, ``/underrun``; asleep while
        nobody listens (see the module docstring)."""
        from stemdeck.control.tempo import ClockReporter

        controller = self._controller
        beats = ClockReporter(controller)
        last_underruns = None
        next_underrun_check = 0.0
        listening = False
        timeout = None
        while True:
            self._wake.wait(timeout)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                subscribed = bool(self._subs_snapshot)
                if not subscribed and not controller.print_clock:
                    listening, last_underruns, timeout = False, None, None
                    continue
                events = beats.poll()
                if listening:         # a beat already under way when someone began to listen: not news
                    for ev in events:
                        self.notify("/beat", int(ev.bar), int(ev.beat))
                        if controller.print_clock:
                            self.log.info("%s", ev.line())
                listening = True
                timeout = self._until_next_beat(beats)
                if not subscribed:
                    continue
                now = time.monotonic()
                if now >= next_underrun_check or last_underruns is None:
                    next_underrun_check = now + UNDERRUN_CHECK_S
                    underruns = self._underruns()
                    if last_underruns is not None and underruns > last_underruns:
                        self.notify("/underrun", int(underruns))
                    last_underruns = underruns
                timeout = min(timeout, max(0.0, next_underrun_check - now))
            except Exception:
                self.log.exception("OSC: reporter error (continuing)")
                timeout = 0.1

    def _until_next_beat(self, beats) -> float:
        """Seconds until the engine renders the next beat's first frame, by the
        tempo it published (a look every RAMP_LOOK_S while it ramps)."""
        from stemdeck.control.tempo import engine_clock

        snap = engine_clock(self.engine)
        if snap.left > 0 or snap.bpm <= 0:
            return RAMP_LOOK_S
        rel = snap.beats - self._controller.grid.beat_zero
        ahead = (math.floor(rel) + 1 - rel) if rel >= 0 else -rel
        # the snapshot is of the last block boundary: up to a block old
        return min(1.0, max(ahead * 60.0 / snap.bpm, 0.0) + BEAT_LATE_S)

    def _underruns(self) -> int:
        if self._stats is not None:
            try:
                with self._stats_lock:
                    value = (self._stats() or {}).get("underruns")
            except Exception:
                value = None
            if value is not None:
                return int(value)
        return int(self.engine.stats().get("underflows", 0))
