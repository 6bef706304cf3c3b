"""Timetags to engine frames: when each message of a bundle runs, and the bounded queue of future bundles.

A bundle's NTP timetag becomes the engine frame heard at that time
(:class:`~stemdeck.control.frame_clock.FrameClock`: estimated from
``engine.frame`` against the monotonic clock, locked so that bundles N
frames apart land N frames apart; about half a block of absolute error). A
timetag of 1 (or 0) means "immediately". A bundle due within ``horizon``
(:data:`HORIZON_S`) is posted to the engine at once with its frame; a later
one waits in a bounded heap on the control thread and is posted ``horizon``
before its frame (so replies such as ``/synced`` in a future bundle come
when it runs, as scsynth does). A bundle whose frame has already been
rendered runs at once, is counted (``late_commands`` in ``/status.reply``)
and reported as ``/late seconds address`` (its first message) to
subscribers. Nested bundles run at their own timetag, never before the
enclosing one. When the audio clock is not running, bundles run by the wall
clock. Future bundles hold at most :data:`MAX_SCHEDULED` messages; a
timetag more than :data:`MAX_AHEAD_S` ahead is refused.

Control thread only. It never sleeps, and the control loop has no tick: it
calls :meth:`Schedule.run_due` when :meth:`Schedule.next_wake` said to (the
next future bundle's posting time, or the frame clock's next look: every
:data:`CLOCK_WARMUP_S` while the clock's window of samples fills after a
start, then every :data:`CLOCK_TRACK_S` to follow the audio clock's drift).
"""

from __future__ import annotations

import heapq
import itertools
import logging
from dataclasses import dataclass
from typing import Any

from stemdeck.control import osc_wire as wire
from stemdeck.control.osc.addresses import peer_text

MAX_SCHEDULED = 8192             # messages waiting in the future-bundle heap
HORIZON_S = 0.1                  # future bundles are posted to the engine this early
MAX_AHEAD_S = 86400.0            # a timetag further ahead is a client clock problem
CLOCK_WARMUP_S = 0.005           # the frame clock's looks while its window fills (about 1.3 s)
CLOCK_TRACK_S = 0.1              # then: its 256 looks span 26 s, a 50 ppm drift lags 0.6 ms
MIN_WAKE_S = 0.005               # frames advance a block at a time: no sooner than this


@dataclass(order=True)
class _Due:
    frame: int
    seq: int
    messages: tuple = ()
    sender: Any = None
    timetag: int = 0


class Schedule:
    """Runs each group of messages at its frame through ``dispatch(message, sender, at)``.

    ``fail(sender, address, reason)``: a refused bundle's ``/fail``.
    ``notify(address, *args)``: ``/late`` to subscribers.
    """

    def __init__(self, *, engine, clock, counters, horizon: float, ratelog, log, dispatch, fail,
                 notify):
        self.engine = engine
        self.clock = clock
        self.c = counters
        self.horizon = float(horizon)
        self.sample_rate = int(engine.sample_rate)
        self.ratelog = ratelog
        self.log = log
        self._dispatch = dispatch
        self._fail = fail
        self._notify = notify
        self._heap: list[_Due] = []
        self._seq = itertools.count()
        self._warned_clock = False

    def bundle(self, bundle: wire.Bundle, sender) -> None:
        """A parsed bundle: each run of messages with one timetag at its frame."""
        groups: list = []
        _flatten(bundle, None, groups)
        for timetag, messages in groups:
            self.schedule(timetag, messages, sender)

    def schedule(self, timetag: int | None, messages: list, sender) -> None:
        if timetag is None:
            for m in messages:
                self._dispatch(m, sender, None)
            return
        self.clock.sample(force=True)
        frame = self.clock.frame_for(timetag)
        if frame is None:
            if not self._warned_clock:
                self._warned_clock = True
                self.log.warning("OSC: the audio clock is not running: timetagged bundles run "
                                 "as soon as they arrive")
            for m in messages:
                self._dispatch(m, sender, None)
            return
        now = int(self.engine.frame)
        ahead = frame - now
        if ahead > MAX_AHEAD_S * self.sample_rate:
            self.c.schedule_dropped += len(messages)
            self._fail(sender, messages[0].address,
                       f"bundle timetag is {ahead / self.sample_rate:.0f} s in the future (more "
                       "than a day): check the sending machine's clock; bundle dropped")
            return
        if ahead > self._horizon_frames():
            if self.c.scheduled + len(messages) > MAX_SCHEDULED:
                self.c.schedule_dropped += len(messages)
                self._fail(sender, messages[0].address,
                           f"{self.c.scheduled} messages already wait in future bundles (limit "
                           f"{MAX_SCHEDULED}): bundle dropped; send bundles closer to their time")
                return
            self.c.scheduled += len(messages)
            heapq.heappush(self._heap, _Due(frame, next(self._seq), tuple(messages), sender, timetag))
            return
        self._run_at(frame, messages, sender)

    def _horizon_frames(self) -> int:
        block = self.clock.block or 0
        return int(max(self.horizon * self.sample_rate, 4 * block))

    def next_wake(self) -> float | None:
        """Seconds until the control loop should call :meth:`run_due` (and
        sample the clock) again."""
        clock = CLOCK_TRACK_S if self.clock.warm or not self.clock.running else CLOCK_WARMUP_S
        if not self._heap:
            return clock
        if self.clock.running:
            frames = self._heap[0].frame - self._horizon_frames() - int(self.engine.frame)
            due = frames / self.sample_rate
        else:                       # by the wall clock (see run_due)
            due = min(d.timetag for d in self._heap) / 2**32 - wire.ntp_now() / 2**32 - self.horizon
        return min(clock, max(due, MIN_WAKE_S))

    def run_due(self) -> None:
        """Post what is due within the horizon (when :meth:`next_wake` said)."""
        if not self._heap:
            return
        if not self.clock.running:
            # the audio clock stopped (a lost device): what is due by the wall
            # clock runs as soon as possible rather than waiting for frames
            limit_tt = wire.ntp_now() + int(self.horizon * 2**32)
            due_now = [d for d in self._heap if d.timetag <= limit_tt]
            if due_now:
                self._heap = [d for d in self._heap if d.timetag > limit_tt]
                heapq.heapify(self._heap)
                for due in sorted(due_now):
                    self.c.scheduled -= len(due.messages)
                    for m in due.messages:
                        self._dispatch(m, due.sender, None)
            return
        limit = int(self.engine.frame) + self._horizon_frames()
        while self._heap and self._heap[0].frame <= limit:
            due = heapq.heappop(self._heap)
            self.c.scheduled -= len(due.messages)
            self._run_at(due.frame, list(due.messages), due.sender)

    def _run_at(self, frame: int, messages: list, sender) -> None:
        now = int(self.engine.frame)
        if frame < now:
            late = (now - frame) / self.sample_rate
            self.c.late += 1
            address = messages[0].address
            self.ratelog(logging.WARNING, "OSC: bundle %s from %s ran %.1f ms late",
                         address, peer_text(sender), late * 1000)
            self._notify("/late", float(late), address)
            frame = None
        for m in messages:
            self._dispatch(m, sender, frame)


def _flatten(bundle: wire.Bundle, outer: int | None, groups: list) -> None:
    """Bundle -> ``groups``: [(timetag or None, [messages])] in packet order,
    consecutive messages with one timetag together. A nested bundle never
    runs before its enclosing one; timetags 0 and 1 mean immediately."""
    tt = bundle.timetag
    if tt in (0, wire.IMMEDIATELY):
        tt = outer
    elif outer is not None and tt < outer:
        tt = outer
    for element in bundle.elements:
        if isinstance(element, wire.Message):
            if groups and groups[-1][0] == tt:
                groups[-1][1].append(element)
            else:
                groups.append((tt, [element]))
        else:
            _flatten(element, tt, groups)
