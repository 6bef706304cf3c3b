"""The JACK server's period, which ``stemdeck tune`` sets before each buffer size.

Holds :class:`JackPeriod`. On JACK the period (frames per process cycle)
belongs to the server, not to the client: PortAudio's JACK host API
accepts any ``blocksize`` but then runs the callback once every few JACK
cycles (or several times in one), so a 2048-frame block on a 128-frame
server renders 2048 frames inside one 2.9 ms cycle and measures nothing
useful. ``tune`` therefore asks the server to change its period with
``jack_set_buffer_size`` (libjack through ctypes, as the ``jack_bufsize``
tool does), checks with ``jack_get_buffer_size`` that it took, and puts
the server's own period back at the end of the sweep. A server whose
driver fixes its period (``jack_set_buffer_size`` fails) is reported as
such, and only its own period can be measured.

libjack finds the server from ``JACK_DEFAULT_SERVER`` (the same variable
PortAudio reads), and the client is opened with ``JackNoStartServer`` so
it never starts a server of its own.

Control thread only; standard library only.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

JACK_NO_START_SERVER = 0x01
CLIENT_NAME = b"stemdeck-tune"
BUFFER_SIZE_MAX = 8192            # libjack refuses larger periods


class JackPeriodError(Exception):
    """The JACK server cannot be reached or refused a period."""


def _library():
    name = ctypes.util.find_library("jack") or "libjack.so.0"
    try:
        lib = ctypes.CDLL(name)
    except OSError as exc:
        raise JackPeriodError(f"cannot load libjack ({exc})") from None
    lib.jack_client_open.restype = ctypes.c_void_p
    lib.jack_client_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
    lib.jack_client_close.restype = ctypes.c_int
    lib.jack_client_close.argtypes = [ctypes.c_void_p]
    lib.jack_set_buffer_size.restype = ctypes.c_int
    lib.jack_set_buffer_size.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.jack_get_buffer_size.restype = ctypes.c_uint32
    lib.jack_get_buffer_size.argtypes = [ctypes.c_void_p]
    lib.jack_get_sample_rate.restype = ctypes.c_uint32
    lib.jack_get_sample_rate.argtypes = [ctypes.c_void_p]
    return lib


class JackPeriod:
    """A small JACK client that reads and sets the server's period.

    ``open()`` connects (raises :class:`JackPeriodError`), ``set(frames)``
    returns ``(ok, message)``, ``restore()`` puts back the period found at
    ``open()``, ``close()`` disconnects. Usable as a context manager.
    """

    def __init__(self):
        self.server = os.environ.get("JACK_DEFAULT_SERVER") or "default"
        self._lib = None
        self._client = None
        self.original: int | None = None        # the server's period when we connected
        self.sample_rate: int | None = None
        self.fixed = False                      # the server refused a change once

    def open(self) -> JackPeriod:
        self._lib = _library()
        status = ctypes.c_int(0)
        client = self._lib.jack_client_open(CLIENT_NAME, JACK_NO_START_SERVER, ctypes.byref(status))
        if not client:
            raise JackPeriodError(f"cannot connect to the JACK server '{self.server}' "
                                  f"(jack_status 0x{status.value:x})")
        self._client = client
        self.original = self.current()
        self.sample_rate = int(self._lib.jack_get_sample_rate(client))
        return self

    def current(self) -> int:
        return int(self._lib.jack_get_buffer_size(self._client))

    def set(self, frames: int) -> tuple[bool, str]:
        """Ask the server for a ``frames`` period. ``(True, "")`` when the
        server runs at it afterwards; otherwise ``(False, why)``."""
        if self._client is None:
            raise JackPeriodError("not connected")
        frames = int(frames)
        if self.current() == frames:
            return True, ""
        if frames > BUFFER_SIZE_MAX:
            return False, f"JACK periods go up to {BUFFER_SIZE_MAX} frames"
        rc = self._lib.jack_set_buffer_size(self._client, frames)
        now = self.current()
        if rc != 0 or now != frames:
            self.fixed = True
            return False, (f"the JACK server '{self.server}' refused a period of {frames} frames "
                           f"(its driver fixes the period at {now}): restart it with -p {frames} "
                           f"to measure this size")
        return True, ""

    def restore(self) -> str | None:
        """Put the server's original period back; returns a line to print, or None."""
        if self._client is None or self.original is None or self.current() == self.original:
            return None
        rc = self._lib.jack_set_buffer_size(self._client, self.original)
        if rc != 0 or self.current() != self.original:
            return (f"could not put the JACK server's period back to {self.original} frames "
                    f"(it is {self.current()}): jack_bufsize {self.original}")
        return f"JACK server '{self.server}' period put back to {self.original} frames"

    def close(self) -> None:
        if self._client is not None:
            self._lib.jack_client_close(self._client)
            self._client = None

    def __enter__(self) -> JackPeriod:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()
