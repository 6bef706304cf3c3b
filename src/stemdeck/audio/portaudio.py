"""The PortAudio backend: the engine's compiled callback on a sound card or a JACK server.

Holds :class:`PortAudioOutput` (open, start, watch, reconnect, close) and
:class:`PortAudioRuntime` (the loaded PortAudio library, see below).

The stream's callback is the engine's numba ``@cfunc``
(:attr:`Engine.callback_address`), handed to PortAudio as a raw function
pointer with the engine's state table as ``userData`` (``wrap_callback=None``,
as python-rtmixer does): no Python, no GIL, on the audio thread.

Threads: :meth:`PortAudioOutput.open`, :meth:`~PortAudioOutput.start` and
:meth:`~PortAudioOutput.close` are for the control thread. A monitor thread
(started by ``start``) polls the stream ten times a second, never the audio
thread; when the stream dies it reports it, closes what can be closed and
reopens the device with backoff for up to ``reconnect`` seconds. The engine's
clock only advances when the callback runs, so the mix resumes where it
stopped. Nothing here busy-waits.

Device loss and PortAudio's JACK host API (v19.6/19.7). When a JACK server
dies, PortAudio marks the stream inactive, but closing or aborting that
stream then waits ten minutes for a JACK process cycle that never comes
(``WaitCondition`` in pa_jack.c has no "server is down" check), and
``Pa_Terminate`` on that library instance fails an assertion
(``jack_deactivate`` on a dead client) and aborts the process. libjack also
refuses (crashes on) a second client in a process whose first client's
server died. So such an instance is *abandoned*: its stream is never
touched again, sounddevice's exit handler is told not to terminate it, and
the next attempt loads a fresh copy of PortAudio with its own libjack in a
new dynamic-linker namespace (``dlmopen(LM_ID_NEWLM)``, glibc), to which
sounddevice is pointed. glibc has 16 namespaces, so this works for about a
dozen JACK server deaths per process; after that, restart stemdeck.
Before an instance with a JACK client is re-initialised, the server's
socket is probed so a dead server's client is never terminated. The
abandoned client's thread is kept from stealing the reconnected client's
JACK cycles (false underruns) and its library stays mapped until exit (a
SIGSEGV at exit otherwise): :mod:`stemdeck.audio.jack_orphans`.

The output's :attr:`~PortAudioOutput.state`, loss and reconnect counts and
outage times are in :meth:`PortAudioOutput.info`; ``on_event`` hears
"lost" and "back".
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import sys
import threading
import time

from stemdeck.audio import jack_orphans
from stemdeck.audio.jack_orphans import jack_server_alive, server_name
from stemdeck.engine.commands import SAMPLE_RATES
from stemdeck.errors import DeviceError, UsageError

log = logging.getLogger("stemdeck.audio")

JACK_HOSTAPI = "JACK Audio Connection Kit"
LATENCY_NAMES = ("low", "high")
POLL_SECONDS = 0.1                  # how often the monitor looks at the stream
STALL_SECONDS = 2.0                 # an active stream with no callback for this long is lost
BACKOFF_FIRST, BACKOFF_MAX = 0.25, 2.0
CLOSE_TIMEOUT = 2.0                 # a close that takes longer is abandoned (see module doc)
MAX_RELOADS = 12                    # fresh PortAudio copies per process (glibc: 16 namespaces)

_RTLD_NOW = 2
_LM_ID_NEWLM = -1


# ---------------------------------------------------------------------------------------------
# the library
# ---------------------------------------------------------------------------------------------

class _NamespacedLibrary:
    """Looks like sounddevice's cffi library object, but its functions come
    from a PortAudio loaded with ``dlmopen`` (constants come from the original)."""

    def __init__(self, ffi, template, handle: int, dlsym):
        self._ffi = ffi
        self._template = template
        self._handle = handle
        self._dlsym = dlsym

    def __getattr__(self, name):
        value = getattr(self._template, name)
        if isinstance(value, self._ffi.CData) and self._ffi.typeof(value).kind == "function":
            address = self._dlsym(self._handle, name.encode())
            if not address:
                raise AttributeError(f"fresh PortAudio has no function {name}")
            value = self._ffi.cast(self._ffi.typeof(value), address)
        self.__dict__[name] = value
        return value


def _libc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.dlmopen.restype = ctypes.c_void_p
    libc.dlmopen.argtypes = [ctypes.c_long, ctypes.c_char_p, ctypes.c_int]
    libc.dlsym.restype = ctypes.c_void_p
    libc.dlsym.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    libc.dlerror.restype = ctypes.c_char_p
    return libc


class PortAudioRuntime:
    """The PortAudio library sounddevice uses, and whether it may still be
    re-initialised. One per process (:func:`runtime`); control/monitor threads only."""

    def __init__(self):
        self._sd = None
        self._lock = threading.RLock()
        self.usable = True            # False: abandoned (a dead JACK client inside)
        self.reloads = 0
        self._handle = None           # dlopen handle of the current instance (for dlsym)
        self._jack_server = None      # JACK server name when the instance was initialised

    def module(self):
        """sounddevice, imported (which initialises PortAudio) on first use."""
        if self._sd is None:
            # Imported by someone else first: which JACK server its PortAudio
            # joined is unknown, so it is never terminated while JACK is in it.
            first = "sounddevice" not in sys.modules
            try:
                import sounddevice
            except OSError as exc:
                raise DeviceError(
                    f"cannot load the PortAudio library ({exc}); install it (Debian/Ubuntu: "
                    "apt install libportaudio2) or run without audio output with --backend null") from None
            self._sd = sounddevice
            self._jack_server = server_name() if first else None
            atexit.register(self._at_exit)       # runs before sounddevice's own exit handler
        return self._sd

    def _at_exit(self) -> None:
        """sounddevice terminates PortAudio at exit. Skip that when it could
        hang or abort (a dead JACK server), and for a reloaded copy, whose
        Pa_Terminate crashes in libjack; the process's exit frees it all."""
        try:
            with self._lock:
                if self._sd is not None and (self.reloads > 0 or not self.usable or not self._safe_to_terminate()):
                    self._sd._initialized = 0
        except Exception:
            if self._sd is not None:
                self._sd._initialized = 0

    def query(self):
        """Snapshot of host APIs and devices (:func:`stemdeck.audio.devices.query`)."""
        from stemdeck.audio import devices

        with self._lock:
            self.module()
            if not self.usable:
                self._reload()
            return devices.query()

    def rescan(self):
        """Re-initialise PortAudio (to see a device or JACK server that came
        back) and take a snapshot. Safe after a JACK server died: see the module doc."""
        from stemdeck.audio import devices

        with self._lock:
            sd = self.module()
            if self.usable and not self._safe_to_terminate():
                self.abandon("its JACK server is gone")
            if not self.usable:
                self._reload()
            else:
                sd._terminate()
                sd._initialize()
                self._jack_server = server_name()
            return devices.query()

    def has_jack(self) -> bool:
        sd = self.module()
        return any(h["name"] == JACK_HOSTAPI for h in sd.query_hostapis())

    def _safe_to_terminate(self) -> bool:
        if not self.has_jack():
            return True
        return self._jack_server is not None and jack_server_alive(self._jack_server)

    def abandon(self, why: str) -> None:
        """Never touch the current instance again (nor let sounddevice's exit handler)."""
        with self._lock:
            if self.usable:
                log.debug("abandoning this PortAudio instance: %s", why)
                if self._handle is None and self._sd is not None:
                    # the first copy is cffi's, which dlcloses it at exit under
                    # the abandoned client's threads (jack_orphans); copies
                    # loaded by _reload are never closed
                    jack_orphans.pin_library(self._sd._libname)
            self.usable = False
            if self._sd is not None:
                self._sd._initialized = 0

    def release_at_exit(self) -> None:
        """Called after the last stream closed: let sounddevice's exit handler
        terminate PortAudio only if that cannot hang or abort."""
        with self._lock:
            if self._sd is not None and self.usable and not self._safe_to_terminate():
                self.abandon("its JACK server is gone")

    def _reload(self) -> None:
        sd = self.module()
        if not sys.platform.startswith("linux"):
            raise DeviceError("PortAudio cannot be re-initialised in this process after the JACK server "
                              "died (a PortAudio bug); restart stemdeck")
        if self.reloads >= MAX_RELOADS:
            raise DeviceError(f"PortAudio was reloaded {self.reloads} times in this process after JACK "
                              "servers died; no more copies can be loaded: restart stemdeck")
        libc = _libc()
        handle = libc.dlmopen(_LM_ID_NEWLM, sd._libname.encode(), _RTLD_NOW)
        if not handle:
            err = libc.dlerror()
            raise DeviceError(f"cannot load a fresh copy of PortAudio ({(err or b'?').decode(errors='replace')}); "
                              "restart stemdeck")
        template = sd._lib if not isinstance(sd._lib, _NamespacedLibrary) else sd._lib._template
        sd._lib = _NamespacedLibrary(sd._ffi, template, handle, libc.dlsym)
        sd._initialized = 0
        sd._initialize()
        self._handle = handle
        self.reloads += 1
        self.usable = True
        self._jack_server = server_name()
        log.debug("loaded fresh PortAudio copy #%d", self.reloads)

    def symbol(self, name: str) -> int | None:
        """Address of a PortAudio function not in sounddevice's declarations
        (e.g. ``PaAlsa_EnableRealtimeScheduling``), from the current instance."""
        sd = self.module()
        libc = _libc()
        handle = self._handle
        if handle is None:
            try:
                handle = ctypes.CDLL(sd._libname)._handle
            except OSError:
                return None
        return libc.dlsym(handle, name.encode()) or None


_runtime: PortAudioRuntime | None = None


def runtime() -> PortAudioRuntime:
    global _runtime
    if _runtime is None:
        _runtime = PortAudioRuntime()
    return _runtime


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
        self._open(self.runtime.rescan() if rescan else self.runtime.query())
        self.state = "open"

    def start(self) -> None:
        self._start_stream()
        self.state = "running"
        self._stop.clear()
        self._monitor = threading.Thread(target=self._watch, name="stemdeck-audio-monitor", daemon=True)
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
        from stemdeck.audio import devices

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

        t = threading.Thread(target=close, name="stemdeck-audio-close", daemon=True)
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
                    self._open(self.runtime.rescan())
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
