"""Read-ahead: keep the pages ahead of every playing position of a memory-mapped sample resident.

Holds :class:`ReadAhead` (a thread) and the page helpers it and the loader
use: :func:`populate` (fault a range of a sample in, off the audio thread),
:func:`resident_fraction` (``mincore``: how much of a range is in memory)
and :func:`drop_page_cache` (``posix_fadvise(DONTNEED)``: make a file cold,
for benchmarks and tests).

Why: a memory-mapped sample is read from disk the first time each page is
touched. If the audio callback is the first to touch a page it stalls for
the disk (a major page fault, counted in the engine's
``major_faults_in_callbacks``). The read-ahead thread reads the engine's
voice table (positions, rates, loop bounds, slot addresses; read only, no
lock, no command) and faults in the next ``seconds`` of audio of every
playing voice whose sample is registered here, wrapping around loop and
section ends. It looks every ``interval`` seconds (a quarter of ``seconds``:
what it made resident lasts four looks) while voices play, and not at all
while none does and no start is pending: :meth:`ReadAhead.voice_starting`
(the Controller, through the loader, at every stem it starts) wakes it, at
once and again when the start's frame is due. ``madvise(MADV_POPULATE_READ)``
(Linux 5.14+) does that in one system call without the GIL; elsewhere the
pages are touched from Python.

Threads: :meth:`ReadAhead.register`, :meth:`~ReadAhead.forget` and
:meth:`~ReadAhead.warm` from any thread (the loader's); the read-ahead
thread is this module's own and never writes engine state.
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import logging
import mmap
import os
import threading
import time

import numpy as np

from stemdeck.threads import thread

log = logging.getLogger("stemdeck.media")

PAGE = mmap.PAGESIZE
MADV_WILLNEED = 3
MADV_POPULATE_READ = 22
DEFAULT_SECONDS = 3.0          # audio kept resident ahead of each playing position
DEFAULT_INTERVAL = DEFAULT_SECONDS / 4   # how often the voice table is read while voices play
START_GRACE_S = 0.25           # a start not seen playing this long after its frame is forgotten
SEAM_FRAMES = 2048             # kept resident on both sides of a loop's seam (> the 5 ms declick)

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
_libc.madvise.restype = ctypes.c_int
_libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
_libc.mincore.restype = ctypes.c_int
_populate_works = True


def _byte_range(samples: np.ndarray, start: int, stop: int) -> tuple[int, int]:
    """Page-aligned (address, length) covering frames [start, stop) of ``samples``."""
    frames = samples.shape[0]
    start = min(max(int(start), 0), frames)
    stop = min(max(int(stop), start), frames)
    row = samples.strides[0]
    a = samples.ctypes.data + start * row
    b = samples.ctypes.data + stop * row
    a0 = a - a % PAGE
    return a0, b - a0


def populate(samples: np.ndarray, start: int, stop: int) -> None:
    """Make frames [start, stop) of ``samples`` resident (reading the disk if
    needed; blocks this thread, never the audio thread)."""
    global _populate_works
    addr, length = _byte_range(samples, start, stop)
    if length <= 0:
        return
    # read exactly this range (large requests), so the faults below find it cached and
    # the kernel does not read around each fault (8 MB on some disks) on the caller's time
    _libc.madvise(addr, length, MADV_WILLNEED)
    if _populate_works:
        if _libc.madvise(addr, length, MADV_POPULATE_READ) == 0:
            return
        err = ctypes.get_errno()
        if err == 22:                      # EINVAL: a kernel before 5.14
            _populate_works = False
        # anything else (EFAULT on a torn-down mapping, ENOMEM): touch what we can
    flat = samples.reshape(-1)
    per_frame = samples.shape[1] if samples.ndim > 1 else 1
    step = max(1, PAGE // samples.itemsize)
    lo = max(int(start), 0) * per_frame
    hi = min(int(stop), samples.shape[0]) * per_frame
    if hi > lo:                            # read one sample per page
        flat[lo:hi:step].sum()
        flat[hi - 1].item()


def resident_fraction(samples: np.ndarray, start: int = 0, stop: int | None = None) -> float:
    """Share of the pages of frames [start, stop) that are in memory (mincore)."""
    addr, length = _byte_range(samples, start, samples.shape[0] if stop is None else stop)
    pages = (length + PAGE - 1) // PAGE
    if pages <= 0:
        return 1.0
    vec = (ctypes.c_ubyte * pages)()
    if _libc.mincore(addr, length, vec) != 0:
        raise OSError(ctypes.get_errno(), "mincore failed")
    return sum(v & 1 for v in vec) / pages


def drop_page_cache(path: str | os.PathLike) -> bool:
    """Ask the kernel to forget the file's cached pages (``posix_fadvise``
    DONTNEED; pages another process maps stay). True if it was accepted."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _thread_major_faults() -> int:
    import resource

    try:
        return resource.getrusage(resource.RUSAGE_THREAD).ru_majflt
    except (AttributeError, ValueError, OSError):
        return 0


class ReadAhead:
    """Keeps ``seconds`` of audio ahead of every playing voice resident, for
    the samples registered with :meth:`register` (memory-mapped ones).

    ``engine``: the running Engine; its :meth:`~stemdeck.engine.engine.Engine.voice_regions`
    are read. ``interval``: seconds between looks at the voice table while
    voices play (at most ``seconds`` / 2)."""

    def __init__(self, engine, *, seconds: float = DEFAULT_SECONDS,
                 interval: float = DEFAULT_INTERVAL):
        self.engine = engine
        self.seconds = float(seconds)
        self.interval = min(float(interval), self.seconds / 2)
        self._starts: list[tuple[int, float]] = []   # (frame, give up at) of starts not yet looked at
        self._tick_frame = 0                          # engine frame when the last look began
        self._starts_lock = threading.Lock()
        self._playing = False
        self._regions: dict[int, np.ndarray] = {}     # sample address -> array (kept alive here)
        self._lock = threading.Lock()
        self._warm: collections.deque = collections.deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.ticks = 0
        self.disk_reads = 0            # major page faults taken by this thread (pages it read in)
        self.max_tick_ms = 0.0
        self.voices_followed = 0

    # -- any thread ------------------------------------------------------------------------
    def register(self, samples: np.ndarray) -> None:
        with self._lock:
            regions = dict(self._regions)
            regions[samples.ctypes.data] = samples
            self._regions = regions            # replaced whole: the thread reads it unlocked

    def forget(self, samples: np.ndarray) -> None:
        with self._lock:
            regions = dict(self._regions)
            if regions.get(samples.ctypes.data) is samples:
                del regions[samples.ctypes.data]
            self._regions = regions

    def voice_starting(self, frame: int | None = None) -> None:
        """A stem starts at engine ``frame`` (None: now): follow it (any thread)."""
        now = int(self.engine.frame)
        frame = now if frame is None else int(frame)
        give_up = time.monotonic() + max(0, frame - now) / self.engine.sample_rate + START_GRACE_S
        with self._starts_lock:
            self._starts.append((frame, give_up))
        self._wake.set()

    def warm(self, samples: np.ndarray, frame: int) -> None:
        """Fault in the audio from ``frame`` on soon (a cue point), without waiting."""
        self._warm.append((samples, int(frame)))
        self._wake.set()

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = thread(self._run, "sd-readahead")
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    def stats(self) -> dict:
        return {"mapped_samples": len(self._regions), "ticks": self.ticks,
                "disk_reads": self.disk_reads, "max_tick_ms": round(self.max_tick_ms, 3),
                "voices_followed": self.voices_followed}

    # -- the thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            faults = _thread_major_faults()
            t0 = time.perf_counter()
            try:
                self.tick()
            except Exception:          # never let a race with a torn-down sample end the thread
                log.exception("read-ahead: tick failed")
            self.max_tick_ms = max(self.max_tick_ms, (time.perf_counter() - t0) * 1000.0)
            self.disk_reads += _thread_major_faults() - faults
            self.ticks += 1
            self._wake.wait(self._next_look())
            self._wake.clear()

    def _next_look(self) -> float | None:
        """Seconds until the next look: ``interval`` while voices play, sooner
        if a start is pending (just after its frame is rendered); never while
        nothing plays and no start is pending (until woken)."""
        wait = self.interval if self._playing else None
        t = time.monotonic()
        with self._starts_lock:
            # the last look began after a start's block was rendered: it saw that voice
            self._starts = [(f, end) for f, end in self._starts if f >= self._tick_frame and end > t]
            if not self._starts:
                return wait
            first = min(f for f, _ in self._starts)
        until = max(0.01, (first - int(self.engine.frame)) / self.engine.sample_rate + 0.01)
        return until if wait is None else min(wait, until)

    def tick(self) -> None:
        """One look at the playing voices (also callable directly, in tests)."""
        while self._warm:
            samples, frame = self._warm.popleft()
            populate(samples, frame - 4, frame + self._span(1.0))
        regions = self._regions
        self._tick_frame = int(self.engine.frame)
        voices = self.engine.voice_regions() if regions else []
        self._playing = bool(voices)
        if not regions:
            self.voices_followed = 0
            return
        lookahead = self.engine.keylock_latency
        followed = 0
        for voice in voices:
            samples = regions.get(voice.address)
            if samples is None:
                continue
            followed += 1
            span = self._span(voice.rate) + lookahead
            pos = voice.position
            frames = samples.shape[0]
            end = pos + span
            populate(samples, pos - 4, min(end, frames))
            if voice.loop:
                lo = max(0, voice.lo)
                hi = min(frames, voice.hi)
                if hi > lo:
                    # the seam is read both ways: the interpolator, the seam check on the
                    # first block, and a section's crossfade from the audio before its start
                    populate(samples, hi - SEAM_FRAMES, hi)
                    populate(samples, lo - SEAM_FRAMES, lo + SEAM_FRAMES + max(0, end - hi))
        self.voices_followed = followed

    def _span(self, rate: float) -> int:
        return int(self.seconds * self.engine.sample_rate * max(rate, 1.0))
