"""The descriptor the engine writes to when it has events, so the control thread sleeps instead of polling.

:func:`engine_wakeup` gives an engine its one :class:`EngineWakeup`: a
non-blocking eventfd (Linux; a pipe elsewhere) attached to the engine's event
ring (:func:`stemdeck.engine.rings.attach_wakeup`). The audio callback writes
8 bytes to it when it posts an event the reader may be asleep for (a stem
ended, a command ran late, a slot was released...); the control thread
watches :meth:`EngineWakeup.fileno` (``select``, or an asyncio loop's
``add_reader``), calls :meth:`EngineWakeup.clear` and then drains the events
(``Controller.poll``).

Why a descriptor: the control thread already sleeps in ``select`` on its
sockets, so one more descriptor makes engine events wake it like a packet
does, at no cost while nothing happens. The write is one system call on the
audio thread, only when an event was posted to an empty ring, never blocking
(see :mod:`stemdeck.engine.rings`).

Lifetime: the descriptor lives as long as its engine (closed when the engine
is garbage-collected), never closed while a callback might still write to it.
An engine without an event ring (the planning double) gets None.
"""

from __future__ import annotations

import os
import weakref

from stemdeck.engine.rings import attach_wakeup

_by_engine: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


class EngineWakeup:
    """A readable descriptor that the engine makes readable when it posts events."""

    def __init__(self, events_index):
        if hasattr(os, "eventfd"):
            self._read_fd = self._write_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        else:                                  # macOS: a pipe; 8 bytes a write, as for an eventfd
            self._read_fd, self._write_fd = os.pipe()
            for fd in (self._read_fd, self._write_fd):
                os.set_blocking(fd, False)
        attach_wakeup(events_index, self._write_fd)
        self.wakeups = 0                       # how often the engine woke the reader

    def fileno(self) -> int:
        return self._read_fd

    def clear(self) -> None:
        """Consume the pending wake-up (before draining the events, so an event
        posted meanwhile wakes the reader again)."""
        try:
            while os.read(self._read_fd, 4096):
                self.wakeups += 1
                if self._read_fd == self._write_fd:      # an eventfd reads all at once
                    break
        except (BlockingIOError, InterruptedError):
            pass

    def _close(self) -> None:
        for fd in {self._read_fd, self._write_fd}:
            try:
                os.close(fd)
            except OSError:
                pass


def engine_wakeup(engine) -> EngineWakeup | None:
    """The engine's wake-up descriptor (made on first use); None for an engine
    without an event ring."""
    state = getattr(engine, "state", None)
    index = getattr(state, "events_index", None)
    if index is None:
        return None
    w = _by_engine.get(engine)
    if w is None:
        w = _by_engine[engine] = EngineWakeup(index)
        # the state arrays (and a callback writing to the descriptor) go with the engine
        weakref.finalize(engine, w._close)
    return w


def on_engine_events(loop, engine, callback) -> None:
    """Call ``callback()`` on asyncio ``loop``'s thread whenever ``engine`` posts
    events (the wake-up is cleared first, so none is missed)."""
    wakeup = engine_wakeup(engine)
    if wakeup is None:
        return

    def drain():
        wakeup.clear()
        callback()

    loop.add_reader(wakeup, drain)
