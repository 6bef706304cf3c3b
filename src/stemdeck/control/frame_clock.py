"""Wall-clock time <-> engine frames, for OSC bundle timetags.

Holds :class:`FrameClock`. The audio side publishes no timestamped frame, so
the mapping is estimated from ``engine.frame`` sampled against the monotonic
clock: the block containing frame ``f`` is rendered no earlier than the time
``f`` is due, so ``t - f / rate`` over many samples, at phases spread over
the block, has its median half a block before the true offset. That offset
(the monotonic time of frame 0) is turned into NTP with ``time.time_ns()``
and shifted by the output latency, so a timetag names when a frame is
*heard*.

The published mapping is locked: it moves only when the estimate drifts more
than half a block (at least 0.25 ms) from it, after a warm-up, so bundles
whose timetags are N frames apart land exactly N frames apart. Error: about
half a block plus scheduling jitter of the sampling thread (measured within
1-2 frames on loopback at 256 frames, tests/test_osc_bundles.py), plus the
error of the latency figure the audio backend reports; a sound card's clock
drifting from the system clock by d ppm moves the mapping by one relock per
(0.5 block / d) seconds.

Control thread only.
"""

from __future__ import annotations

import time
from collections import deque

from stemdeck.control import osc_wire as wire


class FrameClock:
    """Maps NTP timetags to engine frames (see the module docstring).

    Control thread only. :meth:`sample` is called often (every loop turn,
    at most every ``min_interval`` seconds); :meth:`frame_for` converts.
    """

    def __init__(self, engine, *, output_latency=0.0, window: int = 256,
                 min_interval: float = 0.002):
        self.engine = engine
        self.sr = int(engine.sample_rate)
        # seconds, or a callable giving them (a device's latency can change on reconnect)
        self._latency = output_latency if callable(output_latency) else (lambda v=output_latency: v)
        self._samples: deque = deque(maxlen=window)
        self._min_interval_ns = int(min_interval * 1e9)
        self._last_ns = 0
        self._last_frame = -1
        self._progress_ns = 0
        self._updated_ns = 0
        self._published: tuple[int, int] | None = None    # (ntp_ref, frame_ref)
        self.relocks = 0
        self.running = False
        self.block = 0.0
        self.estimate_spread_ms = 0.0

    @property
    def warm(self) -> bool:
        """Whether the window of samples is full: looks are then needed only to follow drift."""
        return len(self._samples) == self._samples.maxlen

    def _block_frames(self) -> float:
        st = self.engine.stats()
        calls, frames, blocks = st.get("callbacks", 0), st.get("frame", 0), st.get("blocks", 0)
        if calls:
            return frames / calls
        return frames / blocks if blocks else 0.0

    def sample(self, force: bool = False) -> None:
        t = time.monotonic_ns()
        if not force and t - self._last_ns < self._min_interval_ns:
            return
        f = int(self.engine.frame)
        self._last_ns = t
        if self._last_frame < 0:                # the first look: no progress seen yet
            self._last_frame = f
            self._progress_ns = t
            return
        if f != self._last_frame:
            if f < self._last_frame:
                self._samples.clear()           # a new engine or a reset counter
                self._published = None
            self._last_frame = f
            self._progress_ns = t
            if not self.running:
                self._samples.clear()           # stale samples from before a stall
                self._published = None
                self._updated_ns = 0
            self.running = True
        else:
            stall = max(50_000_000, int(8 * self.block * 1e9 / self.sr))
            if t - self._progress_ns > stall:
                self.running = False
                return
        if not self.running:
            return
        self._samples.append((t, f))
        if t - self._updated_ns > 20_000_000 or len(self._samples) < 32:
            self._update(t)

    def _update(self, now_ns: int) -> None:
        self._updated_ns = now_ns
        if len(self._samples) < 2:
            return
        self.block = self._block_frames() or self.block
        ns_per_frame = 1e9 / self.sr
        offsets = sorted(t - f * ns_per_frame for t, f in self._samples)
        median = offsets[len(offsets) // 2]
        self.estimate_spread_ms = (offsets[-1] - offsets[0]) / 1e6
        t0 = median + 0.5 * self.block * ns_per_frame       # monotonic ns of frame 0
        a = time.monotonic_ns()
        wall = time.time_ns()
        b = time.monotonic_ns()
        wall_minus_mono = wall - (a + b) // 2
        frame_ref = self._last_frame
        ntp_raw = wire.ntp_from_unix_ns(int(t0 + frame_ref * ns_per_frame) + wall_minus_mono
                                        + self.output_latency_ns())
        if self._published is None:
            self._published = (ntp_raw, frame_ref)
            return
        ntp_pub = self._ntp_of(frame_ref)
        tolerance_s = max(0.00025, 0.5 * self.block / self.sr)
        warming = len(self._samples) < self._samples.maxlen // 4
        if warming or abs(ntp_raw - ntp_pub) > tolerance_s * 2**32:
            if not warming:
                self.relocks += 1
            self._published = (ntp_raw, frame_ref)

    def output_latency_ns(self) -> int:
        try:
            return int(round(float(self._latency() or 0.0) * 1e9))
        except (TypeError, ValueError):
            return 0

    def _ntp_of(self, frame: int) -> int:
        ntp_ref, frame_ref = self._published
        return ntp_ref + ((frame - frame_ref) << 32) // self.sr

    def frame_for(self, timetag: int) -> int | None:
        """The engine frame heard at NTP ``timetag``; None when the audio clock
        is not running (nothing to map to)."""
        if not self.running or self._published is None:
            return None
        ntp_ref, frame_ref = self._published
        return frame_ref + (((timetag - ntp_ref) * self.sr + (1 << 31)) >> 32)

    def timetag_for(self, frame: int) -> int | None:
        """The NTP time at which ``frame`` is heard (the inverse of :meth:`frame_for`)."""
        if self._published is None:
            return None
        return self._ntp_of(frame)
