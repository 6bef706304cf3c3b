"""The reporter: callback timing, DSP load, underruns and CPU, turned into numbers and advice.

Holds :class:`Telemetry` and :func:`underrun_advice`.

The audio callback only writes counters and a ring of callback durations
(preallocated by the engine); it never prints. This module's thread reads
them twice a second while voices play (:data:`TICK_SECONDS`); while none
does, only as often as the durations ring needs so that none is lost before
it is read (at most every :data:`IDLE_TICK_SECONDS`), and at each
``stats_interval``. It:

- keeps a window (30 s) of callback durations for p50 / p99 / max and DSP
  load (callback time / block period, in percent);
- counts underruns: PortAudio's output-underflow status flags and
  callbacks that ran past their period. One late callback usually shows as
  both (it overruns, then the host flags the next callback), so each tick
  counts ``max(new underflows, new overruns)``; both raw counts are in
  :meth:`Telemetry.stats` too;
- measures the process's CPU use (psutil; 100 % = one core);
- warns, at most every ``warn_interval`` seconds, when underruns occur,
  with the count and a concrete suggestion (:func:`underrun_advice`);
- logs a one-line summary every ``stats_interval`` seconds when asked.

:meth:`Telemetry.stats` gives the same figures to Python callers (the OSC
status reply, ``stemdeck tune``, benchmarks, tests); :meth:`status_fields`
gives the fields of ``/status.reply`` that only the server knows, and the
output's state (``output``: running, lost, reconnecting...; its loss and
reconnect counts). While the output is not running nothing is heard, so
they say 0 voices playing and 0 % DSP load rather than the last figures.

Threads: its own reporter thread; ``stats()`` and ``status_fields()`` from
any thread (they return a copy made under a lock).
"""

from __future__ import annotations

import collections
import logging
import threading
import time

import numpy as np

from stemdeck.engine.layout import DURATION_RING
from stemdeck.threads import thread


log = logging.getLogger("stemdeck.telemetry")

TICK_SECONDS = 0.5               # while voices play
IDLE_TICK_SECONDS = 5.0          # while none does (an underrun warning may come this late)
WINDOW_SECONDS = 30.0
WARN_INTERVAL = 5.0
MAX_BUFFER = 8192


def _next_size(block_size: int) -> int | None:
    size = 32
    while size <= block_size:
        size *= 2
    return size if size <= MAX_BUFFER else None


def underrun_advice(count: int, seconds: float, block_size: int, p99_load: float | None,
                    realtime: bool = False, hint: str | None = None) -> str:
    """``12 underruns in 30 s at 256 frames; try --buffer-size 512 or stemdeck tune (...)``."""
    span = max(1, round(seconds))
    text = f"{count} underrun{'' if count == 1 else 's'} in {span} s at {block_size} frames"
    bigger = _next_size(block_size)
    if bigger is not None:
        text += f"; try --buffer-size {bigger} or stemdeck tune"
    else:
        text += "; the buffer is already at its largest: play fewer stems, or run stemdeck tune"
    if p99_load is not None:
        if p99_load >= 70:
            text += f" (the mix takes {p99_load:.0f} % of each period at p99)"
        else:
            text += (f" (the callback needs only {p99_load:.0f} % of the period at p99, so the time is "
                     "lost outside it: other programs, CPU power saving"
                     + (")" if realtime else ", or no real-time priority: try --realtime)"))
            if hint:
                text += f"; {hint}"
    return text


# why callbacks were late, counted inside them (engine/layout.py)
LATENESS_KEYS = ("callbacks_slept", "callback_max_cpu_ns", "late_slept", "late_preempted", "late_stolen")


def _extras(st: dict) -> str:
    """Counters worth a mention only when they are not zero."""
    parts = []
    if st.get("late_stolen"):
        parts.append(f"{st['late_stolen']} callbacks lost their CPU below the OS while running (a virtual "
                     "machine's host took it: steal time)")
    if st.get("callbacks_slept"):
        parts.append(f"the audio thread slept inside {st['callbacks_slept']} callbacks (it waited on a lock "
                     "or a page: please report it)")
    if st.get("major_faults_in_callbacks"):
        parts.append(f"{st['major_faults_in_callbacks']} major page faults inside callbacks (samples read from "
                     "disk by the audio thread)")
    if st.get("keylock_starved_frames"):
        parts.append(f"key lock fell behind for {st['keylock_starved_frames']} frames")
    if st.get("record_dropped_frames"):
        parts.append(f"recording lost {st['record_dropped_frames']} frames")
    return "".join(f"; {p}" for p in parts)


class Telemetry:
    """Reads the engine's telemetry and reports it.

    ``latency``: a callable giving the output latency in seconds (the
    device's reported latency, which can change after a reconnect), or None
    for the block latency. ``stats_interval``: seconds between summary
    lines (0: none). ``realtime``: whether --realtime was asked (advice).
    ``output``: the backend (:mod:`stemdeck.audio.output`), whose ``info()``
    the status includes.
    """

    def __init__(self, engine, *, block_size: int, sample_rate: int, stats_interval: float = 0.0,
                 warn_interval: float = WARN_INTERVAL, window: float = WINDOW_SECONDS,
                 latency=None, realtime: bool = False, hint: str | None = None,
                 logger: logging.Logger | None = None, output=None):
        self.engine = engine
        self.block_size = int(block_size)
        self.sample_rate = int(sample_rate)
        self.period_ns = self.block_size * 1e9 / self.sample_rate
        self.stats_interval = float(stats_interval)
        self.warn_interval = float(warn_interval)
        self.window = float(window)
        self.latency = latency
        self.output = output
        self.realtime = realtime
        self.hint = hint
        self.log = logger or log
        self.started = time.monotonic()
        self.warnings = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            import psutil

            self._process = psutil.Process()
        except Exception:          # psutil missing or refused: CPU shows as 0
            self._process = None
        st = engine.stats()
        self._last = {"underflows": st["underflows"], "overruns": st["overruns"]}
        self._dur_index = engine.durations_count()
        self._ticks: collections.deque = collections.deque()     # (time, durations, underruns)
        self.underruns = 0
        self._cpu_last = (self.started, self._cpu_seconds())
        self._cpu_percent = 0.0
        self._interval_durations: list[np.ndarray] = []
        # kept only for someone who reads interval() (the periodic summary, tune):
        # appended every sample and never read, they grew ~6 MB an hour (the soak found it)
        self._keep_interval = self.stats_interval > 0
        self._interval_underruns = 0
        self._interval_start = (self.started, self._cpu_seconds())
        self._last_summary = self.started
        self._last_warning = -1e18
        self._warned_total = 0
        self._snapshot: dict = {}
        self._sampled_at = 0.0
        self.sample()

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        self._thread = thread(self._run, "sd-telemetry")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self.sample()

    # -- readers (any thread) -----------------------------------------------------------------------
    def stats(self) -> dict:
        """The latest figures (percentiles, load, CPU, the combined underrun
        count: sampled now if the last sample is older than TICK_SECONDS), with
        the engine's counters read now."""
        if time.monotonic() - self._sampled_at > TICK_SECONDS:
            self.sample()
        with self._lock:
            out = dict(self._snapshot)
        st = self.engine.stats()
        out.update(frame=st["frame"], voices=st["voices"], late_commands=st["late_commands"],
                   callbacks=st["callbacks"], underflows=st["underflows"], overruns=st["overruns"],
                   major_faults_in_callbacks=st.get("major_faults_in_callbacks", 0),
                   **{k: st[k] for k in LATENESS_KEYS if k in st},
                   keylock_starved_frames=st.get("keylock_starved_frames", 0),
                   dropped_commands=st["dropped_commands"], bpm=st["bpm"],
                   record_dropped_frames=st["record_dropped_frames"],
                   uptime_s=time.monotonic() - self.started)
        return out

    def status_fields(self) -> dict:
        """The ``/status.reply`` fields only the server knows (see control.spec.STATUS_FIELDS)."""
        st = self.stats()
        fields = {
            "buffer_size": self.block_size,
            "latency_ms": st["latency_ms"],
            "underruns": st["underruns"],
            "dsp_load_avg": st["dsp_load_avg"],
            "dsp_load_peak": st["dsp_load_max"],
            "cpu_percent": st["cpu_percent"],
            "uptime_s": st["uptime_s"],
        }
        if self.output is not None:
            fields["output"] = info = self.output.info()
            if info["state"] != "running":
                # the voices are kept for the device's return, but none is heard
                fields.update(voices_playing=0, dsp_load_avg=0.0, dsp_load_peak=0.0)
        return fields

    def summary_line(self, st: dict | None = None) -> str:
        st = st or self.stats()
        return (f"{st['uptime_s']:.0f} s: {st['underruns']} underruns ({st['underflows']} flagged by the "
                f"device, {st['overruns']} late callbacks), callback p50 {st['callback_p50_ms']:.3f} ms "
                f"({st['dsp_load_p50']:.1f} %), p99 {st['callback_p99_ms']:.3f} ms ({st['dsp_load_p99']:.1f} %), "
                f"max {st['callback_max_ms']:.3f} ms ({st['dsp_load_max']:.1f} %) of a "
                f"{st['period_ms']:.2f} ms period; CPU {st['cpu_percent']:.0f} %; {st['voices']} voices; "
                f"late commands {st['late_commands']}, dropped {st['dropped_commands']}" + _extras(st))

    # -- sampling (reporter thread, or a caller that wants fresh numbers) ------------------------------
    def _cpu_seconds(self) -> float:
        if self._process is None:
            return 0.0
        try:
            t = self._process.cpu_times()
            return t.user + t.system
        except Exception:
            return 0.0

    def _new_durations(self) -> np.ndarray:
        durations, self._dur_index = self.engine.durations_since(self._dur_index)
        return durations

    def sample(self) -> dict:
        """Read the engine now; update the window and the snapshot. Returns
        the number of new underruns in this sample under key ``new_underruns``."""
        with self._lock:
            now = self._sampled_at = time.monotonic()
            st = self.engine.stats()
            d_flag = st["underflows"] - self._last["underflows"]
            d_late = st["overruns"] - self._last["overruns"]
            self._last = {"underflows": st["underflows"], "overruns": st["overruns"]}
            new = max(d_flag, d_late, 0)
            self.underruns += new
            durations = self._new_durations()
            self._ticks.append((now, durations, new))
            while self._ticks and self._ticks[0][0] < now - self.window:
                self._ticks.popleft()
            if self._keep_interval:
                self._interval_durations.append(durations)
            self._interval_underruns += new
            cpu_now = self._cpu_seconds()
            t_last, c_last = self._cpu_last
            if now - t_last >= 0.25:
                self._cpu_percent = 100.0 * (cpu_now - c_last) / (now - t_last)
                self._cpu_last = (now, cpu_now)
            window = np.concatenate([t[1] for t in self._ticks]) if self._ticks else np.zeros(0)
            figures = self._figures(window)
            latency = self.latency() if self.latency is not None else None
            self._snapshot = {
                "sample_rate": self.sample_rate,
                "buffer_size": self.block_size,
                "period_ms": self.period_ns / 1e6,
                "latency_ms": (latency if latency is not None else self.block_size / self.sample_rate) * 1000,
                "callbacks": st["callbacks"],
                "underruns": self.underruns,
                "underflows": st["underflows"],
                "overruns": st["overruns"],
                "underruns_window": sum(t[2] for t in self._ticks),
                "window_s": min(self.window, now - self.started),
                "callback_max_ever_ms": st["callback_max_ns"] / 1e6,
                "cpu_percent": self._cpu_percent,
                **figures,
            }
            return dict(self._snapshot, new_underruns=new)

    def _figures(self, durations: np.ndarray) -> dict:
        if len(durations) == 0:
            zeros = dict.fromkeys(("callback_p50_ms", "callback_p99_ms", "callback_max_ms", "callback_avg_ms",
                                   "dsp_load_p50", "dsp_load_p99", "dsp_load_max", "dsp_load_avg"), 0.0)
            return dict(zeros, callbacks_measured=0)
        p50, p99 = np.percentile(durations, [50, 99])
        mx, avg = float(durations.max()), float(durations.mean())
        load = 100.0 / self.period_ns
        return {
            "callbacks_measured": int(len(durations)),
            "callback_p50_ms": p50 / 1e6, "callback_p99_ms": p99 / 1e6,
            "callback_max_ms": mx / 1e6, "callback_avg_ms": avg / 1e6,
            "dsp_load_p50": p50 * load, "dsp_load_p99": p99 * load,
            "dsp_load_max": mx * load, "dsp_load_avg": avg * load,
        }

    def interval(self) -> dict:
        """Figures since the last call (for the periodic summary), and reset."""
        with self._lock:
            self._keep_interval = True
            now = time.monotonic()
            durations = (np.concatenate(self._interval_durations) if self._interval_durations
                         else np.zeros(0))
            t0, c0 = self._interval_start
            cpu = self._cpu_seconds()
            out = dict(self._figures(durations), underruns=self._interval_underruns, seconds=now - t0,
                       cpu_percent=100.0 * (cpu - c0) / max(now - t0, 1e-9))
            self._interval_durations = []
            self._interval_underruns = 0
            self._interval_start = (now, cpu)
            return out

    # -- reporter thread ------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.wait(self._next_tick()):
            try:
                self._tick()
            except Exception:            # the reporter must not die of a bad number
                self.log.exception("telemetry failed")

    def _next_tick(self) -> float:
        """Seconds until the next sample: TICK_SECONDS while voices play or
        underruns are news; when idle, before the durations ring can wrap; and
        no later than the next summary line."""
        st = self.engine.stats()
        if st["voices"] > 0 or self.underruns > self._warned_total:
            wait = TICK_SECONDS
        else:
            wait = max(TICK_SECONDS, min(IDLE_TICK_SECONDS, 0.5 * DURATION_RING * self.period_ns / 1e9))
        if self.stats_interval > 0:
            wait = min(wait, max(0.0, self._last_summary + self.stats_interval - time.monotonic()))
        return wait

    def _tick(self) -> None:
        snap = self.sample()
        now = time.monotonic()
        pending = self.underruns - self._warned_total
        if pending > 0 and now - self._last_warning >= self.warn_interval:
            self.warnings += 1
            self._last_warning = now
            self._warned_total = self.underruns
            self.log.warning("%s", underrun_advice(snap["underruns_window"], snap["window_s"], self.block_size,
                                                   snap["dsp_load_p99"] if snap["callbacks_measured"] else None,
                                                   self.realtime, self.hint))
        if self.stats_interval > 0 and now - self._last_summary >= self.stats_interval:
            self._last_summary = now
            self.log.info("%s", self.interval_line(self.interval()))

    def interval_line(self, iv: dict) -> str:
        st = self.stats()
        return (f"stats {iv['seconds']:.0f} s: {iv['underruns']} underruns ({st['underruns']} total), "
                f"callback p50 {iv['callback_p50_ms']:.3f} ms ({iv['dsp_load_p50']:.1f} %), "
                f"p99 {iv['callback_p99_ms']:.3f} ms ({iv['dsp_load_p99']:.1f} %), "
                f"max {iv['callback_max_ms']:.3f} ms ({iv['dsp_load_max']:.1f} %) of {st['period_ms']:.2f} ms; "
                f"CPU {iv['cpu_percent']:.0f} %; {st['voices']} voices; late commands {st['late_commands']}, "
                f"dropped {st['dropped_commands']}" + _extras(st))
