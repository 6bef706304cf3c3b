"""The live server: engine, Controller, output, recorder, reporter, OSC server and score player, running until stopped.

:class:`Server` is what ``stemdeck serve`` (:mod:`stemdeck.tools.serve`),
the demo, the benchmarks and the tests run. Start-up: the parts are built by
:mod:`stemdeck.app` (:meth:`Server.build`); the output is opened and its
device and latency printed; then (:meth:`Server.run`) the recorder, the
reporter (:mod:`stemdeck.audio.telemetry`), the output, the OSC server and
the score player start, and ``ready`` is printed. It runs until
:meth:`Server.request_stop` (SIGINT or SIGTERM for the command), fades the
master out over 50 ms, closes the stream, writes the recording, prints a
summary and exits 0 (1 if the audio device was lost for longer than
``reconnect``).

``score``: a score file (:mod:`stemdeck.control.score`) played live
(:mod:`stemdeck.control.score_player`): its times are seconds from the
score's start, which is half a second after ``ready`` (the line ``score:
... starts at engine frame N`` gives the frame). With ``record`` started
before the audio, frame ``i`` of the recording is engine frame ``i``, so
the recording from frame N on is the offline render of the same score
(``stemdeck render``).

Threads: the thread that calls :meth:`Server.run` runs an asyncio loop, the
control thread: the Controller, the score player and the OSC server all run
on it (never the audio thread). One owner polls the Controller
(``Controller.poll``: finished loads, the engine's events) when a loader
thread or the engine wakes it (:mod:`stemdeck.control.engine_wakeup`): the
OSC server's control loop when there is one, else this loop; nothing polls
on a timer.
Audio, monitor, recorder, reporter and loader threads are their modules' own.

Test hook: the environment variable ``STEMDECK_TEST_LATE_CALLBACK_MS=MS``
makes one audio callback, half a second of audio after ``ready``, busy-wait
MS milliseconds before rendering (an underrun on purpose, to test the
counting). Not for production use.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import signal
import sys
import threading
import time

from stemdeck import app, config
from stemdeck.control.score_player import play_score

TEST_LATE_ENV = "STEMDECK_TEST_LATE_CALLBACK_MS"
FADE_SECONDS = 0.05
DEFAULT_RECONNECT = 30.0

log = logging.getLogger("stemdeck")


class Server:
    """One running stemdeck: engine, controller, output, recorder, reporter.

    Python API (tests, benchmarks, tune)::

        settings = config.resolve({"backend": "null", "buffer_size": "256"}, app.SERVE_SETTINGS)
        server = Server(settings)
        threading.Thread(target=server.run, kwargs={"handle_signals": False}).start()
        assert server.wait_ready(60), server.error
        server.call_soon(server.controller.handle, "/play_stem", [100])
        print(server.stats())
        server.request_stop()

    ``out``: where start-up lines go (default: print to stdout, flushed).
    """

    def __init__(self, settings, *, record: str | None = None, score: str | None = None,
                 realtime: bool = False, reconnect: float = DEFAULT_RECONNECT, out=None,
                 rescan: bool = False, test_late_ms: float | None = None,
                 osc_options: dict | None = None, preload=None):
        self.settings = settings
        self.preload_items = preload         # --preload: loaded in the background once ready
        self.osc_options = osc_options       # None: no OSC server (the OscServer's flags: app.osc_options)
        self.record_path = record
        self.score_path = score
        self.realtime = realtime
        self.reconnect = reconnect
        self.rescan = rescan
        self.test_late_ms = test_late_ms
        self._out = out or say_line
        self.engine = None
        self.controller = None
        self.output = None
        self.telemetry = None
        self.recorder = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.reply_handler = None
        self.osc = None                      # the OscServer, built with the Controller when osc_options
        self.ready = threading.Event()
        self.stopped = threading.Event()
        self.exit_status = 0
        self.error: BaseException | None = None
        self.score_start_frame: int | None = None
        self.started = time.monotonic()
        self._stop_event: asyncio.Event | None = None
        self._stop_message: str | None = None
        self._pending_stop: tuple | None = None
        self._score_lines = None
        if score is not None:
            from stemdeck.control.score import read_score

            self._score_lines = read_score(score)
        if record is not None:
            from stemdeck.audio.recorder import check_path

            check_path(record)

    # -- thread-safe entry points ------------------------------------------------------------------
    def call_soon(self, fn, *args) -> None:
        """Run ``fn(*args)`` on the control thread (from any thread)."""
        if self.loop is None:
            raise RuntimeError("the server is not running")
        self.loop.call_soon_threadsafe(fn, *args)

    def request_stop(self, message: str | None = None, status: int = 0) -> None:
        """Stop the server (from any thread): fade out, close, exit ``status``."""
        if self.loop is None or self._stop_event is None:
            self._pending_stop = (message, status)
            return
        self.loop.call_soon_threadsafe(self._stop_now, message, status)

    def stats(self) -> dict:
        """Everything measurable: telemetry (underruns, callback p50/p99/max,
        DSP load, CPU), the output (device, latency, losses, reconnects), the
        recording, and the engine's counters."""
        out = {}
        if self.telemetry is not None:
            out.update(self.telemetry.stats())
        elif self.engine is not None:
            out.update(self.engine.stats())
        if self.output is not None:
            out["output"] = self.output.info()
        if self.recorder is not None:
            out["recording"] = self.recorder.stats()
        out["uptime_s"] = time.monotonic() - self.started
        out["score_start_frame"] = self.score_start_frame
        return out

    def status_fields(self) -> dict:
        """The /status.reply fields only the server knows (the Controller's status hook)."""
        fields = self.telemetry.status_fields() if self.telemetry is not None else {}
        fields["uptime_s"] = time.monotonic() - self.started
        if self.recorder is not None:        # /status.json "recording": state, path, frames, error
            fields["recording"] = self.recorder.stats()
        return fields

    # -- start-up (control thread) ---------------------------------------------------------------------
    def say(self, line: str) -> None:
        self._out(line)

    def build(self) -> None:
        """Engine, loader, controller (and OSC server, not yet listening), output
        (opened, not started): :mod:`stemdeck.app`. Raises DeviceError / UsageError."""
        from stemdeck.audio.output import open_output

        s = self.settings
        self.engine = app.build_engine(s.sample_rate, tempo=s)
        loader = app.live_loader(self.engine, cache_mb=s.cache_mb, on_file_event=self._file_event)
        for line in loader.describe():
            self.say(line)
        if self.osc_options is not None:
            osc = dict(self.osc_options, host=s.host, port=s.port, stats=self.status_fields,
                       quit_from=getattr(s, "quit_from", config.QUIT_FROM_WORDS["local"]),
                       output_latency=lambda: (self.output.reported_latency or 0.0) if self.output else 0.0,
                       on_quit=lambda: self.request_stop("/quit"))
            parts = app.assemble(self.engine, loader, lookahead=s.buffer_size, tempo=s, osc=osc)
        else:
            parts = app.assemble(self.engine, loader, lookahead=s.buffer_size, tempo=s,
                                 reply=self._reply, on_load_ready=self._load_ready,
                                 hooks={"status": self.status_fields,
                                        "quit": lambda sender: self.request_stop("/quit")})
        self.controller, self.osc = parts.controller, parts.osc
        m = self.controller.movement_config.describe()
        self.say(f"{'movement tempo':<15} targets {'/'.join(f'{b:g}' for b in m['bpm_targets'])} BPM, "
                 f"glide {m['glide_up_s']:g} s up / {m['glide_down_s']:g} s down ({m['source']})"
                 + ("" if s.movement_bpm else "; /dance/total_movement ignored"))
        self.output = open_output(self.engine, s, reconnect=self.reconnect, realtime=self.realtime,
                                  on_failed=lambda message: self.request_stop(message, 1),
                                  on_message=self.say, on_event=self._device_event, rescan=self.rescan)
        for line in self.output.describe():
            self.say(line)
        device = self.output.reported_latency
        text = config.latency_text(s.buffer_size, s.sample_rate)
        if self.output.kind == "portaudio" and device is not None:
            text += f" per buffer; the device reports {device * 1000:.1f} ms output latency"
        self.say(f"{'output latency':<15} {text}")

    def abort(self) -> None:
        """Close whatever :meth:`build` opened (a stop during start-up)."""
        if self.output is not None and self.output.state in ("open", "running", "closed"):
            self.output.close()
        if self.controller is not None:
            self.controller.close()

    def run(self, *, handle_signals: bool = True) -> int:
        """Build (unless built), run until stopped, return the exit status.
        An exception (DeviceError, ...) is kept in :attr:`error` and re-raised."""
        try:
            if self.engine is None:
                self.build()
            return asyncio.run(self._main(handle_signals))
        except BaseException as exc:
            self.error = exc
            raise
        finally:
            self.stopped.set()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """From another thread: wait until ``ready`` (True), or until the
        server ended or the time ran out (False; see :attr:`error`)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.ready.wait(0.05):
            if self.stopped.is_set() or (deadline is not None and time.monotonic() > deadline):
                return self.ready.is_set()
        return True

    async def _main(self, handle_signals: bool) -> int:
        from stemdeck.audio.telemetry import Telemetry

        self.loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        if handle_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.loop.add_signal_handler(sig, self._stop_now, f"signal {signal.Signals(sig).name}", 0)
        s = self.settings
        osc_close = None
        tasks = []
        try:
            if self.record_path is not None:
                from stemdeck.audio.recorder import Recorder

                self.recorder = Recorder(self.engine, self.record_path, s.sample_rate)
                self.recorder.start()
                self.say(f"{'recording':<15} {self.recorder.path}")
            from stemdeck.audio import realtime as rt

            rt.prefault(self.engine)             # no first-touch page faults in the callback
            if self.realtime:
                self.say(f"--realtime: {rt.lock_memory()[1]}")
            hint = rt.kernel_hint()
            if hint and self.realtime:
                self.say(f"--realtime: {hint}")
            self.telemetry = Telemetry(self.engine, block_size=s.buffer_size, sample_rate=s.sample_rate,
                                       stats_interval=s.stats_interval, realtime=self.realtime,
                                       latency=lambda: self.output.reported_latency, hint=hint,
                                       output=self.output)
            self.output.start()
            self.telemetry.start()
            if self.realtime and self.output.kind == "portaudio":
                await asyncio.sleep(0.2)          # the audio thread is promoted when processing starts
                for line in rt.report_portaudio(self.output):
                    self.say(line)
            osc_close = self._start_osc()
            if self.preload_items:
                from stemdeck.media.preload import start_preload

                # returns at once: the server takes commands while the files load
                start_preload(self.controller, self.preload_items, out=sys.stderr)
            if self.osc is None:                 # else the OSC server's control loop polls the Controller
                from stemdeck.control.engine_wakeup import on_engine_events

                # the engine's events (which free released sample slots); loads call _load_ready
                on_engine_events(self.loop, self.engine, self.controller.poll)
            if self._score_lines is not None:
                tasks.append(asyncio.ensure_future(play_score(self.engine, self.controller, self._score_lines,
                                                              on_start=self._score_started)))
            late_ms = self.test_late_ms
            if late_ms is None and os.environ.get(TEST_LATE_ENV):
                try:
                    late_ms = float(os.environ[TEST_LATE_ENV])
                except ValueError:
                    log.warning("ignoring %s=%r: give milliseconds", TEST_LATE_ENV, os.environ[TEST_LATE_ENV])
            if late_ms:
                tasks.append(asyncio.ensure_future(self._late_callback(late_ms)))
            if self._pending_stop is not None:
                self._stop_now(*self._pending_stop)
            self.say("ready")
            self.ready.set()
            from stemdeck import service

            # systemd's READY=1 / WATCHDOG=1 / STOPPING=1 (on cancel); returns at once without NOTIFY_SOCKET
            tasks.append(asyncio.ensure_future(service.supervise(self)))
            await self._stop_event.wait()
        finally:
            for task in tasks:
                task.cancel()
            await self._shutdown(osc_close)
        return self.exit_status

    def _stop_now(self, message: str | None, status: int) -> None:
        if self._stop_event.is_set():
            return
        self.exit_status = max(self.exit_status, status)
        self._stop_message = message
        if message:
            (log.error if status else log.info)("stopping: %s", message)
        self._stop_event.set()

    async def _shutdown(self, osc_close) -> None:
        engine, output = self.engine, self.output
        if output is not None and output.state == "running":
            start = engine.frame
            engine.set_master(0.0, ramp=FADE_SECONDS)
            # wait until the fade has been rendered (and one more block went out)
            target = start + round(FADE_SECONDS * engine.sample_rate) + 2 * output.block_size
            deadline = time.monotonic() + FADE_SECONDS + 0.25
            while engine.frame < target and time.monotonic() < deadline and output.state == "running":
                await asyncio.sleep(max(0.002, (target - engine.frame) / engine.sample_rate))
        if osc_close is not None:
            try:
                result = osc_close()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("closing the OSC server failed")
        if output is not None:
            output.close()
        if self.telemetry is not None:
            self.telemetry.stop()
        if self.recorder is not None:
            self.recorder.stop()
        if self.controller is not None:
            self.controller.close()
        if self.telemetry is not None:
            self.say("summary: " + self.telemetry.summary_line())
        if self.recorder is not None:
            self.say(self.recorder.summary())
        if output is not None and output.losses:
            self.say(f"the audio device was lost {output.losses} time(s) and reconnected {output.reconnects} time(s)")

    def _start_osc(self):
        """Start the OSC server (built by :meth:`build` when ``osc_options``) on
        this loop, after the audio started and before ``ready``; returns its
        stop function (None without OSC). ``/status`` includes
        :meth:`status_fields` and ``/quit`` stops the server."""
        osc = self.osc
        if osc is None:
            return None
        osc.start(self.controller, loop=self.loop)
        for line in osc.describe():
            self.say(line)
        return osc.stop

    # -- control-thread tasks ------------------------------------------------------------------------
    def _reply(self, sender, address, args) -> None:
        if self.reply_handler is not None:
            self.reply_handler(sender, address, args)
        elif address == "/fail":
            where = f"{sender}: " if isinstance(sender, str) else ""
            log.warning("%s/fail %s", where, " ".join(str(a) for a in args))

    def _device_event(self, kind: str, detail) -> None:
        """The output's monitor thread: the device was "lost" (reason) or is
        "back" (seconds out). Tells /notify subscribers: ``/device lost reason``,
        ``/device back seconds``."""
        self._notify_soon("/device", kind, str(detail) if kind == "lost" else float(detail))

    def _file_event(self, what: str, path: str, outcome: str) -> None:
        """The file guard's thread (media.guard): a file changed under playback.
        Tells /notify subscribers: ``/file what path outcome``."""
        self._notify_soon("/file", what, path, outcome)

    def _notify_soon(self, address: str, *args) -> None:
        """Send an event to /notify subscribers from any thread (on the control thread)."""
        loop, osc = self.loop, self.osc
        if osc is not None and loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(osc.notify, address, *args)

    def _load_ready(self) -> None:
        loop = self.loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.controller.poll)

    async def _late_callback(self, ms: float) -> None:
        target = self.engine.frame + self.engine.sample_rate // 2
        while self.engine.frame < target:
            await asyncio.sleep(max(0.005, (target - self.engine.frame) / self.engine.sample_rate))
        log.info("test hook %s: making one callback %g ms late", TEST_LATE_ENV, ms)
        self.engine.make_late(ms * 1000.0)

    def _score_started(self, frame: int) -> None:
        self.score_start_frame = frame
        self.say(f"score: {self.score_path}, {len(self._score_lines)} messages, starts at engine frame {frame}")


def say_line(line: str, stream=None) -> None:
    """Write one whole line in one write. Supervisors (and the tests) wait
    for the line ``ready``; ``print`` writes the text and its newline
    separately, so with unbuffered output (PYTHONUNBUFFERED, a pipe shared
    with stderr) a log line from another thread could land in between and
    make it ``readypreload: ...``: seen once in CI, where it hung a test."""
    stream = stream if stream is not None else sys.stdout
    stream.write(f"{line}\n")
    stream.flush()
