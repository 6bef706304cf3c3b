"""The PortAudio backend: the engine's compiled callback on a sound card or a JACK server.

Holds :class:`PortAudioOutput` (open, start, watch, reconnect, close), on
top of :mod:`stemdeck.audio.pa_runtime` (the loaded PortAudio library: why a
copy is abandoned when its JACK server dies) and :mod:`stemdeck.audio.devices`.

The stream's callback is the engine's numba ``@cfunc``
(:attr:`Engine.callback_address`), handed to PortAudio as a raw function
pointer with the engine's state table as ``userData`` (``wrap_callback=None``,
as python-rtmixer does): no Python, no GIL, on the audio thread.

Threads: :meth:`PortAudioOutput.open`, :meth:`~PortAudioOutput.start` and
:meth:`~PortAudioOutput.close` are for the control thread. A monitor thread
(started by ``start``) looks at the stream four times a second (PortAudio
tells no one when a stream dies; a quarter second is well inside the 2 s a
stalled stream is given), never the audio thread; when the stream dies it reports it, closes what can be closed and
reopens the device with backoff for up to ``reconnect`` seconds. The engine's
clock only advances when the callback runs, so the mix resumes where it
stopped. Nothing here busy-waits.

Device loss and PortAudio's JACK host API: an instance whose JACK server
died is abandoned, never closed (see :mod:`stemdeck.audio.pa_runtime`); its
stream is never touched again.

The output's :attr:`~PortAudioOutput.state`, loss and reconnect counts and
outage times are in :meth:`PortAudioOutput.info`; ``on_event`` hears
"lost" and "back".
"""

from __future__ import annotations

import logging
import threading
import time

from stemdeck.audio import devices, jack_orphans
from stemdeck.audio.jack_orphans import server_name
from stemdeck.audio.pa_runtime import JACK_HOSTAPI, runtime
from stemdeck.engine.commands import SAMPLE_RATES
from stemdeck.errors import DeviceError, UsageError
from stemdeck.threads import thread

log = logging.getLogger("stemdeck.audio")

LATENCY_NAMES = ("low", "high")
POLL_SECONDS = 0.25                 # how often the monitor looks at the stream
STALL_SECONDS = 2.0                 # an active stream with no callback for this long is lost
BACKOFF_FIRST, BACKOFF_MAX = 0.25, 2.0
CLOSE_TIMEOUT = 2.0                 # a close that takes longer is abandoned (see pa_runtime)


# ---------------------------------------------------------------------------------------------
# the output
# ---------------------------------------------------------------------------------------------

def _latency_arg(latency):
    if latency is None:
        return "high"
    if isinstance(latency, str):
        if latency not in LATENCY_NAMES:
            raise UsageError(f"latency {latency!r}: use low, high or a number of seconds")
        return latency
    return float(latency)


class PortAudioOutput:
    """The engine playing through a PortAudio output device.

    ``device``: index, name part, or None for the default output (see
    :func:`stemdeck.audio.devices.find_output_device`). ``latency``: "low",
    "high" or seconds (PortAudio's suggested latency). ``reconnect``: seconds
    to keep trying to reopen a lost device (0: give up at once).
    ``on_failed(message)``: called from the monitor thread when the device is
    lost for good. ``on_event(kind, detail)``: called from the monitor thread
    with ``("lost", reason)`` when the device is lost and ``("back",
    seconds_out)`` when it plays again. ``on_realtime(output)``: called
    (control or monitor thread) after each stream is opened and before it
    starts, for :mod:`stemdeck.audio.realtime`.

    :attr:`state`: closed, open, running, lost (just now), reconnecting
    (reopening with backoff), failed (gave up), stopped.
    """

    kind = "portaudio"

    def __init__(self, engine, *, block_size: int, sample_rate: int, device=None, latency="high",
                 reconnect: float = 30.0, on_failed=None, on_realtime=None, on_event=None):
        self.engine = engine
        self.block_size = int(block_size)
        self.sample_rate = int(sample_rate)
        self.device_spec = device
        self.latency = _latency_arg(latency)
        self.reconnect = float(reconnect)
        self.on_failed = on_failed
        self.on_realtime = on_realtime
        self.on_event = on_event
        self.runtime = runtime()
        self.stream = None
        self.device = None                  # stemdeck.audio.devices.Device in use
        self.reported_latency = None        # seconds, from PortAudio's stream info
        self.state = "closed"               # see the class doc
        self.losses = 0
        self.reconnects = 0
        self.last_loss: str | None = None
        self.lost_at: float | None = None   # monotonic time of the loss, while not back
        self.last_outage_s: float | None = None
        self._jack_client: tuple[str, str | None] | None = None    # (server, our client's name)
        self._graveyard = []                # abandoned streams: kept alive, never touched
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- control thread ------------------------------------------------------------------------
    def open(self, *, rescan: bool = False) -> None:
        """Find the device and open the stream (not started). Raises
        :class:`DeviceError` / :class:`UsageError` with what to do about it.
        ``rescan``: re-initialise PortAudio first (a process that imported
        sounddevice before its JACK server started, e.g. a test runner)."""
        self._open(devices.rescan() if rescan else devices.current())
        self.state = "open"

    def start(self) -> None:
        self._start_stream()
        self.state = "running"
        self._stop.clear()
        self._monitor = thread(self._watch, "sd-audio-monitor")
        self._monitor.start()

    def close(self) -> None:
        """Stop the stream (the caller faded out first) and close it. Never hangs:
        a close PortAudio cannot finish within 2 s is abandoned."""
        self._stop.set()
        if self._monitor is not None and self._monitor is not threading.current_thread():
            self._monitor.join(timeout=5.0)
        with self._lock:
            stream, self.stream = self.stream, None
            if stream is not None and self.state in ("open", "running"):
                # died just now, before the monitor saw it: do not wait on it
                lost = self.state == "running" and not _is_active(stream)
                self._close_stream(stream, lost=lost)
            self.state = "stopped"
        self.runtime.release_at_exit()

    # -- facts ------------------------------------------------------------------------------------
    @property
    def hostapi(self) -> str | None:
        return self.device.hostapi if self.device is not None else None

    def info(self) -> dict:
        return {
            "backend": self.kind,
            "device": self.device.name if self.device else None,
            "device_index": self.device.index if self.device else None,
            "hostapi": self.hostapi,
            "block_size": self.block_size,
            "sample_rate": self.sample_rate,
            "latency_setting": self.latency,
            "reported_latency_s": self.reported_latency,
            "state": self.state,
            "losses": self.losses,
            "reconnects": self.reconnects,
            "last_loss": self.last_loss,
            "lost_for_s": None if self.lost_at is None else round(time.monotonic() - self.lost_at, 3),
            "last_outage_s": None if self.last_outage_s is None else round(self.last_outage_s, 3),
        }

    def describe(self) -> list[str]:
        """Start-up lines: which device, and its own latency."""
        lines = [f"{'output':<15} {self.device.label() if self.device else '?'}"]
        if self.reported_latency is not None:
            lines.append(f"{'device latency':<15} {self.reported_latency * 1000:.1f} ms output latency "
                         f"reported by {self.hostapi} (latency setting: {_show_latency(self.latency)})")
        return lines

    # -- internals ----------------------------------------------------------------------------------
    def _open(self, system) -> None:
        sd = self.runtime.module()
        device = devices.find_output_device(self.device_spec, system)
        callback = sd._ffi.cast("PaStreamCallback *", self.engine.callback_address)
        userdata = sd._ffi.cast("void *", self.engine.userdata_address)
        try:
            stream = sd._StreamBase(kind="output", samplerate=self.sample_rate, blocksize=self.block_size,
                                    device=device.index, channels=2, dtype="float32",
                                    latency=self.latency, callback=callback, userdata=userdata,
                                    wrap_callback=None)
        except sd.PortAudioError as exc:
            raise self._explain(exc, device) from None
        except (ValueError, TypeError) as exc:
            raise DeviceError(f"cannot open {device.label()}: {exc}") from None
        self.stream = stream
        self.device = device
        self.reported_latency = float(stream.latency)
        if device.hostapi == JACK_HOSTAPI:
            # asked now, while the server answers: needed after it died (_close_stream)
            self._jack_client = (server_name(), jack_orphans.client_name(self.runtime.symbol))
        if self.on_realtime is not None:
            self.on_realtime(self)

    def _start_stream(self) -> None:
        sd = self.runtime.module()
        try:
            self.stream.start()
        except sd.PortAudioError as exc:
            stream, self.stream = self.stream, None
            self._close_stream(stream)
            raise self._explain(exc, self.device) from None

    def _explain(self, exc, device) -> DeviceError:
        sd = self.runtime.module()
        lib = sd._lib
        code = exc.args[1] if len(exc.args) > 1 else None
        text = str(exc)
        where = device.label()
        if code == lib.paInvalidSampleRate:
            native = device.default_samplerate
            if device.hostapi == JACK_HOSTAPI:
                fix = (f"the JACK server runs at {native:g} Hz and only that rate can be used: "
                       + (f"use --sample-rate {native:g}" if int(native) in SAMPLE_RATES
                          else "restart it at 44100 or 48000 (jackd -r 48000)"))
            else:
                fix = (f"its native rate is {native:g} Hz; try --sample-rate {int(native)}"
                       if int(native) in SAMPLE_RATES and int(native) != self.sample_rate
                       else "try --sample-rate 48000 or 44100, or another device (stemdeck devices)")
            return DeviceError(f"{where} refused {self.sample_rate} Hz: {fix}")
        if code in (lib.paBufferTooBig, lib.paBufferTooSmall):
            big = code == lib.paBufferTooBig
            return DeviceError(
                f"{where} refused a buffer of {self.block_size} frames (too "
                f"{'big' if big else 'small'} for it): try --buffer-size "
                f"{'512 or 1024' if big else '256 or 512'} (powers of two work best), or run "
                "'stemdeck tune' to find the smallest size this machine holds")
        if code == lib.paInvalidChannelCount:
            return DeviceError(f"{where} has {device.output_channels} output channel(s); stemdeck needs 2 "
                               "(stereo): choose another device (stemdeck devices)")
        if code == lib.paDeviceUnavailable:
            return DeviceError(f"{where} is busy or gone: another program may hold it (ALSA hardware "
                               "devices are exclusive); close it, or use JACK or the 'pulse'/'default' "
                               "device, or --backend null")
        if code == lib.paInvalidDevice:
            return DeviceError(f"{where} cannot be used for output ({text}); see 'stemdeck devices'")
        return DeviceError(f"cannot open {where} at {self.sample_rate} Hz with a {self.block_size}-frame "
                           f"buffer: {text}; try the other --latency (low/high), another --buffer-size, "
                           "or another device (stemdeck devices)")

    def _close_stream(self, stream, lost: bool = False) -> None:
        """Close ``stream``; abandon it (and the library instance) when
        PortAudio cannot close it promptly."""
        if stream is None:
            return
        jack = self.hostapi == JACK_HOSTAPI
        if lost and jack:
            # pa_jack.c would wait 10 minutes for the dead server: never call it.
            # Its client's thread stays; keep a restarted server from waking it.
            if self._jack_client is not None:
                jack_orphans.release_wakeup(*self._jack_client)
            self._graveyard.append(stream)
            self.runtime.abandon("its JACK server died under an open stream")
            return

        def close():
            try:
                if not lost:
                    stream.stop()
                stream.close()
            except Exception as exc:       # a dying device: closing is best effort
                log.debug("closing the stream: %s", exc)

        t = thread(close, "sd-audio-close")
        t.start()
        t.join(CLOSE_TIMEOUT)
        if t.is_alive():
            self._graveyard.append(stream)
            self.runtime.abandon("closing a stream did not finish")
            log.warning("the audio device did not close within %.0f s; left it open", CLOSE_TIMEOUT)

    # -- monitor thread ---------------------------------------------------------------------------
    def _callbacks(self) -> int:
        return int(self.engine.stats()["callbacks"])

    def _watch(self) -> None:
        last = self._callbacks()
        last_change = time.monotonic()
        while not self._stop.wait(POLL_SECONDS):
            if self.state != "running":
                continue
            now = time.monotonic()
            count = self._callbacks()
            if count != last:
                last, last_change = count, now
            active = _is_active(self.stream)
            stalled = now - last_change > max(STALL_SECONDS, 8 * self.block_size / self.sample_rate)
            if active and not stalled:
                continue
            if not active:
                if self.hostapi == JACK_HOSTAPI:
                    reason = ("the JACK server stopped or dropped stemdeck's client "
                              "(JACK disconnects a client that is too slow)")
                else:
                    reason = "the stream stopped (device unplugged, or its driver failed)"
            else:
                reason = f"the device stopped asking for audio {now - last_change:.1f} s ago"
            self._recover(reason)
            last, last_change = self._callbacks(), time.monotonic()

    def _recover(self, reason: str) -> None:
        frame = self.engine.frame
        self.losses += 1
        self.last_loss = reason
        with self._lock:
            self.state = "lost"
            self.lost_at = time.monotonic()
            stream, self.stream = self.stream, None
        where = self.device.label() if self.device else "the audio device"
        clock = f"{frame / self.sample_rate:.1f} s ({frame} frames)"
        if self.reconnect <= 0:
            log.error("audio device lost: %s: %s, at %s; not reconnecting (--reconnect 0)",
                      where, reason, clock)
            self._close_stream(stream, lost=True)
            self._fail(f"audio device lost: {reason}")
            return
        log.error("audio device lost: %s: %s, at %s; trying to reopen it for up to %g s (--reconnect)",
                  where, reason, clock, self.reconnect)
        self._close_stream(stream, lost=True)
        self._event("lost", reason)
        self.state = "reconnecting"
        started = self.lost_at
        deadline = started + self.reconnect
        delay = BACKOFF_FIRST
        attempts = 0
        last_error = None
        while not self._stop.is_set():
            attempts += 1
            try:
                with self._lock:
                    if self._stop.is_set():
                        return
                    self._open(devices.rescan())
                    self._start_stream()
                    self.state = "running"
                    self.last_outage_s = time.monotonic() - started
                    self.lost_at = None
                self.reconnects += 1
                log.warning("audio device back: %s after %.1f s (%d attempt%s); the mix resumes at %s; "
                            "reported output latency %.1f ms", self.device.label(), self.last_outage_s,
                            attempts, "" if attempts == 1 else "s", clock, self.reported_latency * 1000)
                self._event("back", self.last_outage_s)
                return
            except (DeviceError, UsageError) as exc:
                last_error = str(exc)
                log.debug("reconnect attempt %d: %s", attempts, exc)
            except Exception as exc:            # keep the monitor alive whatever PortAudio says
                last_error = f"{type(exc).__name__}: {exc}"
                log.debug("reconnect attempt %d failed", attempts, exc_info=True)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if self._stop.wait(min(delay, remaining)):
                return
            delay = min(delay * 2, BACKOFF_MAX)
        if self._stop.is_set():
            return
        message = (f"audio device lost and not back after {self.reconnect:g} s ({attempts} attempts; "
                   f"last: {last_error}); giving up. Raise --reconnect to wait longer")
        log.error("%s", message)
        self._fail(message)

    def _fail(self, message: str) -> None:
        self.state = "failed"
        if self.on_failed is not None:
            self.on_failed(message)

    def _event(self, kind: str, detail) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(kind, detail)
        except Exception:                   # a listener's fault must not stop the reconnect
            log.exception("the audio device %s listener failed", kind)


def _is_active(stream) -> bool:
    try:
        return bool(stream.active)
    except Exception:
        return False


def _show_latency(value) -> str:
    return value if isinstance(value, str) else f"{value * 1000:g} ms"
