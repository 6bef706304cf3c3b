"""The PortAudio library in this process: loading it, re-initialising it, and abandoning a copy.

Holds :class:`PortAudioRuntime` (one per process, :func:`runtime`). The
layers on top: :mod:`stemdeck.audio.devices` (snapshots of host APIs and
devices) and :mod:`stemdeck.audio.portaudio` (the output stream).

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

Control and monitor threads only; never the audio thread.
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import sys
import threading

from stemdeck.audio import jack_orphans
from stemdeck.audio.jack_orphans import jack_server_alive, server_name
from stemdeck.errors import DeviceError

log = logging.getLogger("stemdeck.audio")

JACK_HOSTAPI = "JACK Audio Connection Kit"
MAX_RELOADS = 12                    # fresh PortAudio copies per process (glibc: 16 namespaces)

_RTLD_NOW = 2
_LM_ID_NEWLM = -1


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
    re-initialised. One per process (:func:`runtime`); control/monitor threads
    only. :attr:`lock` serialises every use of the library's global state."""

    def __init__(self):
        self._sd = None
        self.lock = threading.RLock()
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
            with self.lock:
                if self._sd is not None and (self.reloads > 0 or not self.usable or not self._safe_to_terminate()):
                    self._sd._initialized = 0
        except Exception:
            if self._sd is not None:
                self._sd._initialized = 0

    def ready(self):
        """sounddevice on a usable PortAudio: a fresh copy if this one was
        abandoned. Hold :attr:`lock` while using what it returns."""
        with self.lock:
            sd = self.module()
            if not self.usable:
                self._reload()
            return sd

    def reinitialise(self):
        """Re-initialise PortAudio (to see a device or JACK server that came
        back). Safe after a JACK server died: see the module doc. Hold
        :attr:`lock` while using what it returns."""
        with self.lock:
            sd = self.module()
            if self.usable and not self._safe_to_terminate():
                self.abandon("its JACK server is gone")
            if not self.usable:
                self._reload()
            else:
                sd._terminate()
                sd._initialize()
                self._jack_server = server_name()
            return sd

    def has_jack(self) -> bool:
        sd = self.module()
        return any(h["name"] == JACK_HOSTAPI for h in sd.query_hostapis())

    def _safe_to_terminate(self) -> bool:
        if not self.has_jack():
            return True
        return self._jack_server is not None and jack_server_alive(self._jack_server)

    def abandon(self, why: str) -> None:
        """Never touch the current instance again (nor let sounddevice's exit handler)."""
        with self.lock:
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
        with self.lock:
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
