"""The null backend: the engine paced by its own real-time clock, no audio device.

Holds :class:`NullOutput`. For headless servers (an OSC-driven mix that
is only recorded with ``--record``, or watched through its status) and
for tests.

A clock thread calls :meth:`Engine.run_callback` (the same body as the
PortAudio callback: telemetry, render, record) once per block, at absolute
deadlines ``t0 + k * block / rate`` on the monotonic clock, so the average
rate is exact and errors never accumulate. A block that starts more than a
period after its deadline is counted as an underflow, like a sound card
would (status flag ``paOutputUnderflow`` on the next call). After a stall
longer than half a second (a suspended machine) the clock re-anchors
rather than rendering a burst to catch up.

The render itself runs without the GIL (the kernel is ``nogil``), but this
thread takes the GIL between blocks to sleep and loop, so busy Python
threads can delay it by up to the interpreter's switch interval (5 ms);
the PortAudio backend has no such limit.

Threads: :meth:`~NullOutput.start` / :meth:`~NullOutput.close` on the
control thread; the clock thread is this module's own.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np

from stemdeck.threads import thread

log = logging.getLogger("stemdeck.audio")

PA_OUTPUT_UNDERFLOW = 0x4        # the flag the kernel counts as an underflow
REANCHOR_NS = 500_000_000        # a stall longer than this restarts the clock


class NullOutput:
    """The engine on a real-time clock. ``realtime``: put the clock thread in
    SCHED_FIFO (see :mod:`stemdeck.audio.realtime`); ``on_realtime(ok, message)``
    receives the result from the clock thread."""

    kind = "null"

    def __init__(self, engine, *, block_size: int, sample_rate: int, realtime: bool = False,
                 on_realtime=None):
        self.engine = engine
        self.block_size = int(block_size)
        self.sample_rate = int(sample_rate)
        self.realtime = realtime
        self.on_realtime = on_realtime
        self.reported_latency = self.block_size / self.sample_rate
        self.state = "closed"
        self.device = None
        self.hostapi = None
        self.reanchors = 0
        self.losses = 0
        self.reconnects = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._buffer = np.zeros((self.block_size, 2), np.float32)

    def open(self, **_ignored) -> None:
        """Compile (or load from numba's cache) the callback body now, on a
        scratch engine, so the clock's first block is not late."""
        from stemdeck.engine.engine import Engine

        scratch = Engine(self.sample_rate, max_block=self.block_size, max_voices=4, max_slots=4, ring_size=16)
        scratch.run_callback(np.zeros((self.block_size, 2), np.float32))
        self.state = "open"

    def start(self) -> None:
        self._stop.clear()
        self._thread = thread(self._run, "sd-null-clock")
        self.state = "running"
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self.state = "stopped"

    def info(self) -> dict:
        return {
            "backend": self.kind,
            "device": None,
            "device_index": None,
            "hostapi": None,
            "block_size": self.block_size,
            "sample_rate": self.sample_rate,
            "latency_setting": None,
            "reported_latency_s": self.reported_latency,
            "state": self.state,
            "losses": 0,                     # no device to lose (the keys match PortAudioOutput's)
            "reconnects": 0,
            "last_loss": None,
            "lost_for_s": None,
            "last_outage_s": None,
            "reanchors": self.reanchors,
        }

    def describe(self) -> list[str]:
        return [f"{'output':<15} null backend: no audio device, the engine runs on its own real-time clock"]

    # -- clock thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        if self.realtime:
            from stemdeck.audio import realtime

            ok, message = realtime.make_current_thread_realtime()
            if self.on_realtime is not None:
                self.on_realtime(ok, message)
        engine, out = self.engine, self._buffer
        frames, rate = self.block_size, self.sample_rate
        clock, sleep = time.monotonic_ns, time.sleep
        period_ns = frames * 1_000_000_000 // rate
        t0 = clock()
        k = 0
        flags = 0
        while not self._stop.is_set():
            engine.run_callback(out, flags)
            flags = 0
            k += 1
            deadline = t0 + k * frames * 1_000_000_000 // rate
            now = clock()
            late = now - deadline
            if late > period_ns:
                flags = PA_OUTPUT_UNDERFLOW            # the next block is already overdue
                if late > REANCHOR_NS:
                    t0, k = now, 0
                    self.reanchors += 1
                continue
            if late < 0:
                sleep(-late / 1e9)
