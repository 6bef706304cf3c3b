"""The measuring half of ``stemdeck tune``: one engine, one output per buffer size.

Holds :class:`Sweep` (build the engine and the reference workload once,
then :meth:`Sweep.measure` one buffer size at a time) and :class:`Plan`
(what to measure). The report half is :mod:`stemdeck.tools.tune_report`.

Per size: on JACK the server's period is set first
(:mod:`stemdeck.tools.tune_jack`); the output is opened with the same code
``serve`` uses (:func:`stemdeck.audio.output.open_output`: the engine's
compiled callback handed to PortAudio as a raw pointer), faded in, given
a short warm-up that is not counted, then measured by a
:class:`~stemdeck.audio.telemetry.Telemetry` for the planned seconds, faded
out and closed. The mix plays on from where it stopped, so every size hears
the same workload.

``--with-load`` (a busy control thread) and the test hooks (a slow
callback, a refused size) are :mod:`stemdeck.tools.tune_load`.

Threads: everything here runs on the caller's (main) thread, which is the
control thread; the audio, telemetry, loader and hook threads are their
modules' own.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import types
from dataclasses import dataclass, field

from stemdeck.audio.pa_runtime import JACK_HOSTAPI
from stemdeck.engine.commands import DECKS, SAMPLE_RATES
from stemdeck.errors import DeviceError, UsageError
from stemdeck.tools.tune_load import LOAD_EVERY, LOAD_FILE_SECONDS, REFUSE_ENV, ExtraLoad, Stress

WARMUP_SECONDS = 0.5          # after a stream starts, before measuring (not counted)
FADE_SECONDS = 0.03

log = logging.getLogger("stemdeck.tune")


@dataclass
class Plan:
    sizes: list[int]
    seconds: float
    sample_rate: int
    backend: str
    device: object = None
    latency: object = "high"
    with_load: bool = False
    keylock: bool = False
    volume: float = 0.1
    realtime: bool = False
    adopt_jack_rate: bool = False         # the rate was not asked for: use the JACK server's
    extra_load: dict[int, float] = field(default_factory=dict)   # test hook: size -> % of period
    refuse: set[int] = field(default_factory=set)                # test hook: sizes refused


class Sweep:
    """The engine playing the reference workload, measured at one size after another.

    ``say(line)`` receives lines worth printing (the device, JACK, key lock).
    Use as a context manager, or call :meth:`prepare` and :meth:`close`.
    """

    def __init__(self, plan: Plan, say=None):
        self.plan = plan
        self.say = say or (lambda line: None)
        self.engine = None
        self.controller = None
        self.device = None            # stemdeck.audio.devices.Device (portaudio backend)
        self.jack = None              # tune_jack.JackPeriod when the device is a JACK server
        self.stress: Stress | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._said: set[str] = set()
        self.keylock_note: str | None = None
        quiet = logging.getLogger("stemdeck.tune.telemetry")
        quiet.addHandler(logging.NullHandler())
        quiet.propagate = False
        self._quiet = quiet

    # -- setup ---------------------------------------------------------------------------------
    def __enter__(self) -> Sweep:
        try:
            self.prepare()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _say_once(self, line: str) -> None:
        if line not in self._said:
            self._said.add(line)
            self.say(line)

    def prepare(self) -> None:
        """Find the device (and the JACK server behind it), build the engine and
        the workload. Raises DeviceError / UsageError."""
        plan = self.plan
        if plan.backend == "portaudio":
            self._find_device()
        from stemdeck.audio import realtime as rt
        from stemdeck.engine.engine import Engine
        from stemdeck.tools.workload import build_reference_workload

        self.engine = engine = Engine(plan.sample_rate)
        build_reference_workload(engine)
        engine.set_master(0.0)
        if plan.keylock:
            if engine.keylock_available:
                for deck in range(DECKS):
                    engine.set_keylock(deck, True)
                self.keylock_note = "key lock on all four decks (Rubber Band in the callback)"
            else:
                self.keylock_note = ("--keylock: Rubber Band's library (librubberband2) is not installed; "
                                     "measured without key lock")
            self.say(self.keylock_note)
        if plan.with_load:
            from stemdeck import app

            self._tmp = tempfile.TemporaryDirectory(prefix="stemdeck-tune-")
            holder = {}
            self.controller = app.assemble(engine, app.live_loader(engine, cache_mb=0),
                                           reply=lambda s, a, args: holder["stress"].reply(s, a, args)
                                           ).controller
            t0 = time.monotonic()
            self.stress = holder["stress"] = Stress(self.controller, self._tmp.name, plan.sample_rate,
                                                         warmup=WARMUP_SECONDS)
            from stemdeck.tools.workload import MESSAGES_PER_SECOND

            self.say(f"--with-load: a {LOAD_FILE_SECONDS // 60}-minute FLAC or WAV loaded every {LOAD_EVERY:g} s "
                     f"and {MESSAGES_PER_SECOND} OSC-sized messages per second "
                     f"(file made in {time.monotonic() - t0:.1f} s)")
        rt.prefault(engine)                   # as serve: no first-touch page faults in the callback
        if plan.realtime:
            self.say(f"--realtime: {rt.lock_memory()[1]}")

    def _find_device(self) -> None:
        from stemdeck.audio import devices

        self.device = devices.find_output_device(self.plan.device, devices.current())
        if self.device.hostapi != JACK_HOSTAPI:
            return
        from stemdeck.tools.tune_jack import JackPeriod, JackPeriodError

        try:
            self.jack = JackPeriod().open()
        except JackPeriodError as exc:
            self.say(f"JACK: {exc}; the server's period cannot be changed from here, so only its "
                     "own period is measured as it is")
            return
        rate = self.jack.sample_rate
        if rate != self.plan.sample_rate and self.plan.adopt_jack_rate and rate in SAMPLE_RATES:
            self.say(f"the JACK server runs at {rate} Hz: measuring at {rate} Hz")
            self.plan.sample_rate = rate
        if rate != self.plan.sample_rate:
            self.jack.close()
            self.jack = None
            raise UsageError(f"the JACK server '{os.environ.get('JACK_DEFAULT_SERVER') or 'default'}' runs at "
                             f"{rate} Hz and only that rate can be used: use --sample-rate {rate}"
                             + ("" if rate in SAMPLE_RATES else " (stemdeck needs 44100 or 48000: restart "
                                "jackd with -r 48000)"))
        self.say(f"JACK server '{self.jack.server}' at {rate} Hz, period {self.jack.original} frames: "
                 "tune sets the period to each size (and puts it back at the end)")

    def close(self) -> None:
        if self.jack is not None:
            line = self.jack.restore()
            if line:
                self.say(line)
            self.jack.close()
            self.jack = None
        if self.controller is not None:
            self.controller.close()
            self.controller = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # -- one size ---------------------------------------------------------------------------------
    def _refused(self, size: int, reason: str) -> dict:
        return {"buffer_size": size, "status": "refused", "reason": reason,
                "block_latency_ms": size / self.plan.sample_rate * 1000}

    def _open(self, size: int, lost: list):
        from stemdeck.audio.output import open_output

        plan = self.plan
        if size in plan.refuse:
            where = self.device.label() if self.device is not None else "the device"
            raise DeviceError(f"{where} refused a buffer of {size} frames (test hook {REFUSE_ENV})")
        settings = types.SimpleNamespace(backend=plan.backend, buffer_size=size, sample_rate=plan.sample_rate,
                                         device=plan.device, latency=plan.latency)
        return open_output(self.engine, settings, reconnect=0, realtime=plan.realtime,
                           on_failed=lost.append, on_message=self._say_once)

    def measure(self, size: int, *, progress=None, cut_short=None) -> dict:
        """Play and measure ``size`` for the planned seconds. ``progress(done_s,
        underruns)`` is called a few times a second; ``cut_short()`` returning
        True ends the measurement early (the result says "interrupted")."""
        from stemdeck.audio.telemetry import Telemetry

        plan, engine = self.plan, self.engine
        sr = plan.sample_rate
        jack_period = None
        if self.jack is not None:
            ok, why = self.jack.set(size)
            if not ok:
                return self._refused(size, why)
            jack_period = self.jack.current()
        lost: list[str] = []
        try:
            output = self._open(size, lost)
        except (DeviceError, UsageError) as exc:
            return self._refused(size, str(exc))
        telemetry = Telemetry(engine, block_size=size, sample_rate=sr, logger=self._quiet,
                              latency=lambda: output.reported_latency)
        hook = None
        if size in plan.extra_load:
            hook = ExtraLoad(engine, plan.extra_load[size] / 100 * size / sr * 1e6, size / sr)
        interrupted = False
        try:
            if self.stress is not None:
                self.stress.restart()
            engine.set_master(plan.volume, ramp=FADE_SECONDS)
            output.start()
            telemetry.start()
            if hook is not None:
                hook.start()
            self._run_for(WARMUP_SECONDS, lambda: lost)
            telemetry.sample()
            telemetry.interval()                          # figures from here on
            base_underruns = telemetry.underruns
            st0 = engine.stats()
            stress0 = self.stress.mark() if self.stress is not None else None
            t0 = time.monotonic()
            end = t0 + plan.seconds

            def step():
                nonlocal interrupted
                if progress is not None:
                    progress(min(time.monotonic() - t0, plan.seconds), telemetry.underruns - base_underruns)
                if cut_short is not None and cut_short():
                    interrupted = True
                return interrupted or bool(lost)

            self._run_until(end, step)
            telemetry.stop()                              # takes a last sample
            iv = telemetry.interval()
            st1 = engine.stats()
            seconds = time.monotonic() - t0
            underruns = telemetry.underruns - base_underruns
            reported = output.reported_latency
        finally:
            if hook is not None:
                hook.stop()
            if output.state == "running":
                engine.set_master(0.0, ramp=FADE_SECONDS)
                self._run_for(FADE_SECONDS + 2 * size / sr, lambda: lost)
            telemetry.stop()
            output.close()
        result = {
            "buffer_size": size,
            "status": "lost" if lost else ("interrupted" if interrupted else "measured"),
            "reason": lost[0] if lost else None,
            "seconds": seconds,
            "planned_seconds": plan.seconds,
            "block_latency_ms": size / sr * 1000,
            "device_latency_ms": reported * 1000 if (reported is not None and plan.backend == "portaudio") else None,
            "jack_period": jack_period,
            "underruns": int(underruns),
            "underflow_flags": st1["underflows"] - st0["underflows"],
            "late_callbacks": st1["overruns"] - st0["overruns"],
            "callbacks": st1["callbacks"] - st0["callbacks"],
            "callbacks_measured": iv["callbacks_measured"],
            "period_ms": size / sr * 1000,
            "callback_p50_ms": iv["callback_p50_ms"], "callback_p99_ms": iv["callback_p99_ms"],
            "callback_max_ms": iv["callback_max_ms"],
            "dsp_load_p50": iv["dsp_load_p50"], "dsp_load_p99": iv["dsp_load_p99"],
            "dsp_load_max": iv["dsp_load_max"],
            "cpu_percent": iv["cpu_percent"],
            "voices": st1["voices"],
            "late_commands": st1["late_commands"] - st0["late_commands"],
            "dropped_commands": st1["dropped_commands"] - st0["dropped_commands"],
            "keylock_starved_frames": st1["keylock_starved_frames"] - st0["keylock_starved_frames"],
            "major_faults_in_callbacks": st1["major_faults_in_callbacks"] - st0["major_faults_in_callbacks"],
        }
        if hook is not None:
            result["test_extra_load_percent"] = plan.extra_load[size]
        if self.stress is not None:
            result["with_load"] = self.stress.figures(stress0)
        return result

    # -- the control loop ---------------------------------------------------------------------------
    def _control_tick(self) -> None:
        if self.stress is not None:
            self.stress.tick()          # its Controller's poll drains the engine's events
        else:
            self.engine.events()        # frees released sample slots (control thread)

    def _run_until(self, end: float, step) -> None:
        """Run the control thread's duties until ``end`` (monotonic) or ``step()`` says stop."""
        tick = 0.01 if self.stress is not None else 0.1
        last_step = 0.0
        while True:
            now = time.monotonic()
            if now >= end:
                break
            self._control_tick()
            if now - last_step >= 0.1:
                last_step = now
                if step():
                    break
            time.sleep(min(tick, max(0.0, end - time.monotonic())))

    def _run_for(self, seconds: float, lost) -> None:
        self._run_until(time.monotonic() + seconds, lambda: bool(lost()))
