"""What a JACK client leaves in this process when its server dies, made harmless.

Holds :func:`jack_server_alive`, :func:`client_name`,
:func:`release_wakeup` and :func:`pin_library`.

:mod:`stemdeck.audio.portaudio` abandons a PortAudio instance whose JACK
server died (it cannot be closed). Its libjack client stays in the process:
a process thread blocked on the client's wake-up futex, a shared-memory file
``/dev/shm/jack_sem.<uid>_<server>_<client>`` (jackd2's ``JackLinuxFutex``,
or ``sem.jack_sem...`` for POSIX semaphores). Two things follow.

- jackd2 creates a client's futex file with ``O_CREAT`` and no ``O_EXCL``,
  and a server killed with SIGKILL never removes it. A server started again
  under the same name reuses the file for the next client of the same name,
  which is our reconnected client (``PortAudio``): the old thread and the new
  one then wait on one futex, and whenever the old thread takes the wake-up
  our new client misses the cycle, jackd logs ``client = PortAudio was not
  finished`` and sends every client an xrun, which PortAudio passes to our
  callback as ``paOutputUnderflow``: about one underrun per JACK cycle for as
  long as the server runs. :func:`release_wakeup` unlinks that file once the
  server is confirmed dead, so the restarted server makes a fresh futex and
  the old thread sleeps on its orphan for good.
- At interpreter exit cffi ``dlclose``\\ s sounddevice's PortAudio, which
  unmaps it and its libjack while the abandoned client's threads still sit
  in their code: the next wake-up (the futex above, or a signal such as
  SIGINT delivered to one of them) returns into unmapped memory, SIGSEGV.
  :func:`pin_library` marks the library ``RTLD_NODELETE`` so it stays mapped
  until the process ends.

Control and monitor threads only.
"""

from __future__ import annotations

import ctypes
import logging
import os
import socket

log = logging.getLogger("stemdeck.audio")

JACK_TMP_DIR = "/dev/shm"        # Debian's jackd2 keeps sockets and futexes here
LIBJACK = "libjack.so.0"
_RTLD_NOW, _RTLD_NOLOAD, _RTLD_NODELETE = 0x2, 0x4, 0x1000      # glibc


def server_name() -> str:
    """The JACK server a client made now joins (``JACK_DEFAULT_SERVER`` or "default")."""
    return os.environ.get("JACK_DEFAULT_SERVER") or "default"


def jack_server_alive(name: str | None = None) -> bool:
    """Whether a JACK server named ``name`` (default: :func:`server_name`)
    accepts connections on its socket. Quiet: no client is made."""
    name = name or server_name()
    uid = os.getuid()
    candidates = [f"{JACK_TMP_DIR}/jack_{name}_{uid}_0", f"/tmp/jack_{name}_{uid}_0",   # jackd2
                  f"{JACK_TMP_DIR}/jack-{uid}/{name}/jack_0"]                            # jackd1
    for path in candidates:
        if not os.path.exists(path):
            continue
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(0.5)
        try:
            s.connect(path)
            return True
        except OSError:
            pass
        finally:
            s.close()
    return False


def client_name(symbol) -> str | None:
    """Our JACK client's name as the server knows it (``PortAudio``, or
    ``PortAudio-01`` when the name was taken), from ``PaJack_GetClientName``
    (``symbol(name)`` gives its address in the PortAudio instance in use)."""
    address = symbol("PaJack_GetClientName")
    if not address:
        return None
    get = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_char_p))(address)
    name = ctypes.c_char_p()
    if get(ctypes.byref(name)) != 0 or not name.value:
        return None
    return name.value.decode(errors="replace")


def wakeup_paths(server: str, client: str) -> list[str]:
    """The files jackd2 may have made for ``client``'s wake-up on ``server``
    (``JackLinuxFutex`` / ``JackPosixSemaphore::BuildName``, per-user or
    promiscuous)."""
    rewritten = client.replace("/", "_").replace("\\", "_")      # JackTools::RewriteName
    names = (f"jack_sem.{os.getuid()}_{server}_{rewritten}", f"jack_sem.{server}_{rewritten}")
    return [f"{JACK_TMP_DIR}/{prefix}{n}" for n in names for prefix in ("", "sem.")]


def release_wakeup(server: str, client: str | None) -> bool:
    """Unlink the dead ``client``'s wake-up file on ``server`` (see the module
    doc), only if that server is down: a live one may be using it. Returns
    whether a file was removed."""
    if not client or jack_server_alive(server):
        return False
    removed = False
    for path in wakeup_paths(server, client):
        try:
            os.unlink(path)
            removed = True
            log.debug("removed %s, left by JACK client %s of the dead server %s", path, client, server)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot remove %s (%s): if the JACK server %s is started again, stemdeck's new "
                        "client may count false underruns", path, exc, server)
    return removed


def pin_library(path: str) -> None:
    """Keep the already loaded ``path`` (and, through it, libjack) mapped
    until the process ends, whoever ``dlclose``\\ s it (see the module doc)."""
    libc = ctypes.CDLL(None)
    libc.dlopen.restype = ctypes.c_void_p
    libc.dlopen.argtypes = [ctypes.c_char_p, ctypes.c_int]
    for name in (path, LIBJACK):
        if not libc.dlopen(name.encode(), _RTLD_NOW | _RTLD_NOLOAD | _RTLD_NODELETE):
            log.debug("could not pin %s (not loaded?)", name)
