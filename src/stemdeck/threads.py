"""stemdeck's threads, named so that ``top -H``, ``ps -L`` and a profiler show which part costs what.

Python names a thread for itself only; the operating system sees every
thread as ``stemdeck`` (the process name). :func:`thread` makes a
``threading.Thread`` whose first act is to give itself its name at the OS
level too: ``prctl(PR_SET_NAME)`` on Linux, ``pthread_setname_np`` on
macOS, nothing elsewhere. Linux keeps 15 bytes of a name, so the names are
short: ``sd-osc``, ``sd-loader-open``, ``sd-readahead``, ...

The audio thread is PortAudio's (or JACK's) and keeps its own name; the
null backend's clock thread is ours (``sd-null-clock``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import threading

PR_SET_NAME = 15
MAX_NAME = 15          # bytes, without the terminating NUL (Linux TASK_COMM_LEN - 1)

_libc = None


def _lib():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    return _libc


def name_this_thread(name: str) -> bool:
    """Give the calling thread ``name`` at the OS level (truncated to 15
    bytes); True if the OS took it."""
    raw = name.encode("utf-8", "replace")[:MAX_NAME]
    try:
        if sys.platform.startswith("linux"):
            return _lib().prctl(PR_SET_NAME, ctypes.c_char_p(raw), 0, 0, 0) == 0
        if sys.platform == "darwin":           # only the calling thread can be named there
            return _lib().pthread_setname_np(ctypes.c_char_p(raw)) == 0
    except (AttributeError, OSError):
        pass
    return False


class _NamedThread(threading.Thread):
    """Its ``start()`` returns once the new thread has named itself, so that
    whoever looks right after (``top -H``, a test) sees the name."""

    def __init__(self, target, name, daemon, args, kwargs):
        super().__init__(name=name, daemon=daemon, args=args, kwargs=kwargs)
        self._os_target = target
        self._named = threading.Event()

    def run(self):
        name_this_thread(self.name)
        self._named.set()
        self._os_target(*self._args, **self._kwargs)

    def start(self):
        super().start()
        self._named.wait(5.0)


def thread(target, name: str, *, daemon: bool = True, args=(), kwargs=None) -> threading.Thread:
    """A (not yet started) thread called ``name`` in Python and by the OS."""
    return _NamedThread(target, name, daemon, args, kwargs or {})
