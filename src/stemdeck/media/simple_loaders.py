"""Simple loaders for the Controller: decode on the calling thread (scores), on worker threads (tests), or read only the header (planning).

The live server uses :class:`~stemdeck.media.loader.MediaLoader` (memory
maps, the sample cache, read-ahead); these keep the same ``submit(path,
sample_rate) -> Future`` / ``close()`` protocol without any of that.
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

log = logging.getLogger("stemdeck.control")


def decode(path: str, sample_rate: int):
    """Decode a file to (frames, 2) float32 at ``sample_rate``; notes are logged."""
    from stemdeck.media.decode import load_audio_with_notes

    audio, notes = load_audio_with_notes(path, sample_rate)
    for note in notes:
        log.warning("%s", note)
    return audio


class ImmediateLoader:
    """Decodes on the calling thread: the future is done when ``submit`` returns.
    For scores (a load completes before the next line) and tests."""

    def __init__(self, load: Callable[[str, int], Any] = decode):
        self.load = load

    def submit(self, path: str, sample_rate: int) -> Future:
        future: Future = Future()
        try:
            future.set_result(self.load(path, sample_rate))
        except Exception as exc:  # the reason goes back to the client as /fail
            future.set_exception(exc)
        return future

    def close(self) -> None:
        pass


class ThreadedLoader:
    """Decodes on worker threads: ``submit`` returns at once (tests that need a
    load to take its time);
    the Controller collects finished loads in :meth:`Controller.poll`."""

    def __init__(self, workers: int = 1, load: Callable[[str, int], Any] = decode):
        self.load = load
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sd-loader")

    def submit(self, path: str, sample_rate: int) -> Future:
        return self._pool.submit(self.load, path, sample_rate)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class SampleShape:
    """Stands in for a decoded sample when only its length matters (planning)."""

    def __init__(self, frames: int, channels: int = 2):
        self.shape = (int(frames), channels)


class ProbeLoader:
    """Reads only a file's header and returns a :class:`SampleShape` of the
    length it will have at ``sample_rate``: lets a renderer check a score's
    files and plan its length without holding every decoded file in memory."""

    def submit(self, path: str, sample_rate: int) -> Future:
        future: Future = Future()
        try:
            from stemdeck.media.refusals import probe

            info = probe(path)
            frames = math.ceil(info.frames * sample_rate / info.samplerate)
            future.set_result(SampleShape(frames))
        except Exception as exc:
            future.set_exception(exc)
        return future

    def close(self) -> None:
        pass
