"""The render's loader: decodes the files a score loads, in the order it loads them, a few ahead on one thread.

``stemdeck render`` runs every score line twice: once to plan (headers
only, :class:`ProbePlan` records each file asked for) and once to render.
While the render builds its engine and loads its compiled kernels, and
while it renders, :class:`PrefetchLoader`'s thread (``sd-prefetch``)
decodes the planned files in that order, at most :data:`AHEAD` files
ahead of the render, so a score of many files never holds them all in
memory. A load is still complete before the next line runs (the render
waits for the file it asks for), so the result is the same bytes as
decoding on the render's thread; a file asked for out of plan order is
decoded on the spot.

Threads: made, asked and closed by the render's thread.
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future

from stemdeck.media.simple_loaders import ProbeLoader, decode
from stemdeck.threads import thread

AHEAD = 4      # decoded files waiting for the render, at most


class ProbePlan(ProbeLoader):
    """A :class:`ProbeLoader` that remembers what it was asked for, in order."""

    def __init__(self):
        self.asked: list[tuple[str, int]] = []

    def submit(self, path: str, sample_rate: int) -> Future:
        self.asked.append((path, sample_rate))
        return super().submit(path, sample_rate)


class PrefetchLoader:
    """``submit(path, sample_rate)`` returns a done future, as ImmediateLoader's,
    decoded ahead when it is the next of ``planned``."""

    def __init__(self, planned: list[tuple[str, int]], *, ahead: int = AHEAD, load=decode):
        self.load = load
        self._planned = deque((key, Future()) for key in planned)
        self._todo = deque(self._planned)
        self._room = threading.Semaphore(ahead)
        self._stop = False
        self._thread = thread(self._run, "sd-prefetch") if planned else None
        if self._thread is not None:
            self._thread.start()

    def submit(self, path: str, sample_rate: int) -> Future:
        key = (path, sample_rate)
        while self._planned and self._planned[0][0] != key and key in (k for k, _ in self._planned):
            self._take()                        # a planned load the render skipped
        if self._planned and self._planned[0][0] == key:
            future = self._take()
            future.exception()                  # wait for it: the load completes before the next line
            return future
        future = Future()
        try:
            future.set_result(self.load(path, sample_rate))
        except Exception as exc:  # the reason goes back as /fail, as ImmediateLoader's
            future.set_exception(exc)
        return future

    def _take(self) -> Future:
        _key, future = self._planned.popleft()
        self._room.release()                    # it leaves the waiting room: one more may decode
        return future

    def close(self) -> None:
        self._stop = True
        self._room.release()
        self._planned.clear()

    def _run(self) -> None:
        while self._todo:
            self._room.acquire()
            if self._stop:
                return
            (path, sample_rate), future = self._todo.popleft()
            try:
                future.set_result(self.load(path, sample_rate))
            except Exception as exc:
                future.set_exception(exc)
