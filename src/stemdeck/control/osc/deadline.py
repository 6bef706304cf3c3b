"""When the OSC control loop next wakes for its housekeeping: a time, or never.

The control loop has no tick. It sleeps in ``select`` (or its asyncio loop)
until a packet, a wake-up from another thread, an engine event, or this
deadline. The housekeeping says when it wants to run again (the next future
bundle's posting time, the frame clock's next look, a suppressed log line to
summarise); anything that needs it sooner (a bundle just queued) moves the
deadline earlier with :meth:`Deadline.within`.

Control thread only.
"""

from __future__ import annotations

import time
from typing import Callable


class Deadline:
    """The next housekeeping time. With an asyncio ``loop`` it arms that loop's
    timer to call ``run``; without, the caller's ``select`` uses :meth:`timeout`."""

    def __init__(self, loop=None, run: Callable[[], None] | None = None):
        self.loop = loop
        self._run = run
        self.at: float | None = None       # monotonic seconds (asyncio's loop.time() is monotonic)
        self._handle = None

    def now(self) -> float:
        return self.loop.time() if self.loop is not None else time.monotonic()

    def after(self, delay: float | None) -> None:
        """Set the deadline ``delay`` seconds from now (None: no deadline)."""
        self._set(None if delay is None else self.now() + max(0.0, delay))

    def within(self, delay: float | None) -> None:
        """Make sure the housekeeping runs within ``delay`` seconds (earlier only)."""
        if delay is None:
            return
        at = self.now() + max(0.0, delay)
        if self.at is None or at < self.at:
            self._set(at)

    def due(self) -> bool:
        return self.at is not None and self.now() >= self.at

    def timeout(self) -> float | None:
        """Seconds a ``select`` may sleep (None: until something happens)."""
        return None if self.at is None else max(0.0, self.at - self.now())

    def cancel(self) -> None:
        self._set(None)

    def fired(self) -> None:
        """The loop's timer ran (loop mode): it is spent."""
        self._handle = None
        self.at = None

    def _set(self, at: float | None) -> None:
        self.at = at
        if self.loop is None:
            return
        if self._handle is not None:
            if at is not None and self._handle.when() == at:
                return
            self._handle.cancel()
            self._handle = None
        if at is not None:
            self._handle = self.loop.call_at(at, self._run)
