"""The extra work ``stemdeck tune`` can add: ``--with-load`` (a busy control thread) and the test hooks (a slow callback, a refused size).

``--with-load`` makes the main thread a busy control thread, as in a live
set: every :data:`LOAD_EVERY` seconds a ``/load_buffer`` of a five-minute
track goes through the Controller and the media loader ``serve`` uses
(:class:`~stemdeck.media.loader.MediaLoader`, with its read-ahead thread),
exactly as an OSC client's would: a FLAC (decoded on the loader's decode
thread: 106 MB of float samples) and a 16-bit WAV (memory-mapped)
alternately, into one buffer, so each replaces and frees the other; the
loader's cache is off so that every load is a real one. And
:data:`stemdeck.tools.workload.MESSAGES_PER_SECOND` OSC-sized knob messages (``/deck_eq``,
``/deck_levels``, ``/crossfade_levels``) are parsed, validated and posted.

Test hooks (environment variables read by ``stemdeck tune``; not for
production use, documented in docs/tuning.md):

- ``STEMDECK_TUNE_TEST_EXTRA_LOAD=SIZE:PERCENT[,SIZE:PERCENT]``: at that
  buffer size, every callback first busy-waits PERCENT % of its period
  (through :meth:`Engine.make_late`, re-armed by a thread after each
  callback), a machine too slow for that size on purpose;
- ``STEMDECK_TUNE_TEST_REFUSE=SIZE[,SIZE]``: opening the device at that
  size fails as a device refusing the size would.

Threads: :class:`Stress` runs on the caller's (main) thread, the control
thread; :class:`ExtraLoad` is its own thread, ``sd-tune-load``.
"""

from __future__ import annotations

import os
import threading
import time

from stemdeck.errors import UsageError
from stemdeck.threads import thread

EXTRA_LOAD_ENV = "STEMDECK_TUNE_TEST_EXTRA_LOAD"
REFUSE_ENV = "STEMDECK_TUNE_TEST_REFUSE"

LOAD_EVERY = 4.0              # --with-load: one large-file load this often
LOAD_FILE_SECONDS = 300       # a five-minute track
LOAD_BUFFER_ID = 3999         # deck D, unused by the reference workload


def parse_test_hooks(environ=None) -> tuple[dict[int, float], set[int]]:
    """The two test hooks from the environment (UsageError when malformed)."""
    environ = os.environ if environ is None else environ
    extra: dict[int, float] = {}
    refuse: set[int] = set()
    text = environ.get(EXTRA_LOAD_ENV, "").strip()
    for item in filter(None, (s.strip() for s in text.split(","))):
        try:
            size, percent = item.split(":")
            extra[int(size)] = float(percent)
        except ValueError:
            raise UsageError(f"{EXTRA_LOAD_ENV}={text!r}: write SIZE:PERCENT[,SIZE:PERCENT], "
                             "e.g. 128:150") from None
    text = environ.get(REFUSE_ENV, "").strip()
    for item in filter(None, (s.strip() for s in text.split(","))):
        try:
            refuse.add(int(item))
        except ValueError:
            raise UsageError(f"{REFUSE_ENV}={text!r}: write SIZE[,SIZE], e.g. 256") from None
    return extra, refuse


class ExtraLoad:
    """Test hook thread: re-arms ``engine.make_late`` whenever the callback
    has consumed it, so (nearly) every callback busy-waits ``microseconds``."""

    def __init__(self, engine, microseconds: float, period_s: float):
        self.engine, self.us = engine, float(microseconds)
        self.poll = max(0.0002, period_s / 8)
        self._stop = threading.Event()
        self._thread = thread(self._run, "sd-tune-load")

    def start(self):
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join(5)
        self.engine.make_late(0.0)

    def _run(self):
        while not self._stop.is_set():
            if not self.engine.late_pending():
                self.engine.make_late(self.us)
            time.sleep(self.poll)


class Stress:
    """``--with-load``, driven from the control (main) thread by :meth:`tick`."""

    def __init__(self, controller, folder: str, sample_rate: int, *, warmup: float = 0.0):
        import numpy as np

        self.controller = controller
        self.warmup = warmup                      # the sweep's unmeasured start of each size
        self.rng = np.random.default_rng(2)
        self.paths = self._make_files(folder)
        self.sent = 0
        self.loads_started = 0
        self.loads_done: list[float] = []         # seconds each load took
        self.load_failures: list[str] = []
        self._load_started: float | None = None
        self._t0: float | None = None
        self._base_sent = 0
        self._next_load = 0.0

    @staticmethod
    def _make_files(folder: str) -> list[str]:
        """Five minutes of quiet stereo noise at 44.1 kHz, 16-bit, as FLAC
        (40 MB; decoded when loaded) and as WAV (53 MB; memory-mapped when
        the engine runs at 44.1 kHz, decoded and resampled at 48 kHz)."""
        import numpy as np
        import soundfile as sf

        frames = LOAD_FILE_SECONDS * 44100
        rng = np.random.default_rng(1)
        chunk = (rng.standard_normal((1 << 18, 2)) * 1000).astype(np.int16)
        paths = []
        for name in ("tune-load.flac", "tune-load.wav"):
            path = os.path.join(folder, name)
            with sf.SoundFile(path, "w", samplerate=44100, channels=2, subtype="PCM_16") as f:
                left = frames
                while left > 0:
                    n = min(left, len(chunk))
                    f.write(chunk[:n])
                    left -= n
            paths.append(path)
        return paths

    def reply(self, sender, address, args) -> None:
        if address in ("/done", "/fail") and args and args[0] == "/load_buffer":
            if self._load_started is not None:
                if address == "/done":
                    self.loads_done.append(time.monotonic() - self._load_started)
                else:
                    self.load_failures.append(" ".join(map(str, args[1:])))
                self._load_started = None

    def tick(self) -> None:
        now = time.monotonic()
        if self._t0 is None:
            self.restart()
        c, rng = self.controller, self.rng
        if now >= self._next_load and self._load_started is None:
            self._load_started = now
            c.handle("/load_buffer", [LOAD_BUFFER_ID, self.paths[self.loads_started % 2]])
            self.loads_started += 1
            self._next_load = now + LOAD_EVERY
        from stemdeck.tools.workload import MESSAGES_PER_SECOND, knob_message

        due = self._base_sent + int((now - self._t0) * MESSAGES_PER_SECOND)
        while self.sent < due:
            c.handle(*knob_message(self.sent, rng))
            self.sent += 1
        c.poll()

    def restart(self) -> None:
        """Count the message rate from now (a new size: no burst to catch up
        on the time the output was closed); the first load comes half a
        second into the measurement."""
        now = time.monotonic()
        self._t0, self._base_sent = now, self.sent
        self._next_load = now + self.warmup + 0.5

    def _kinds(self) -> dict:
        return dict(getattr(self.controller.loader, "loads", {}))

    def mark(self) -> tuple:
        return self.sent, len(self.loads_done), len(self.load_failures), self._kinds()

    def figures(self, since: tuple) -> dict:
        """What was done since :meth:`mark` returned ``since``."""
        import numpy as np

        loads = self.loads_done[since[1]:]
        kinds = {k: v - since[3].get(k, 0) for k, v in self._kinds().items() if v - since[3].get(k, 0)}
        return {"messages": self.sent - since[0], "loads": len(loads), "load_kinds": kinds,
                "load_seconds_median": float(np.median(loads)) if loads else None,
                "load_seconds_max": float(max(loads)) if loads else None,
                "load_failures": self.load_failures[since[2]:][:3]}
