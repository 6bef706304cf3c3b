"""File guard: a memory-mapped sample survives its file being overwritten, truncated, deleted or replaced.

Holds :class:`FileGuard` (one per process, :func:`file_guard`) and
:func:`map_guarded`, which the loader uses instead of a bare ``mmap``.

Why: a memory-mapped sample reads the file's pages. If another program
truncates the file (``cp new.wav track.wav`` truncates first), the pages
past the new end raise SIGBUS in the audio thread and the process dies; if
it overwrites the file in place, the stem silently turns into the new
file. scsynth copies samples into memory and Mixxx reads through a cache,
which costs time or memory up front; stemdeck keeps the instant, zero-copy
mapping and copies only when a file actually changes:

- Each mapping holds a Linux *read lease* (``fcntl(F_SETLEASE, F_RDLCK)``)
  on its file. The kernel makes any program that opens the file for
  writing or truncates it wait (up to ``/proc/sys/fs/lease-break-time``,
  45 s by default) and sends this process a signal first.
- The guard's thread (``sd-files``) gets that signal and, while the writer
  still waits, copies the mapped bytes into anonymous memory and moves the
  copy onto the mapping's own addresses in one ``mremap`` call. The engine,
  the cache and the read-ahead thread keep the same pointer; the bytes
  under it are the same, so the stem plays on without a seam. Then it
  releases the lease and the writer goes ahead. A sample no buffer uses is
  not copied: zero pages replace it and the cache forgets it (the next
  load reads the new file).
- ``inotify`` tells it when a mapped file is deleted, renamed, or replaced
  by another file renamed over it. The mapping keeps the old file's data
  alive, so nothing needs copying; the change is reported.

Every change is logged with the file and what happened, and reported to
the loader's ``on_event`` (the server passes it to ``/notify`` subscribers).

Where a lease cannot be taken (another program has the file open for
writing, a file owned by another user without ``CAP_LEASE``, a filesystem
without leases such as NFS, or not Linux) :func:`map_guarded` says why and
the loader reads the file into memory instead: slower to cue, but safe.

Threads: :func:`map_guarded` from the loader threads; the guard's own
thread handles changes; a mapping's lease is released by its finalizer
(whichever thread drops the last reference). Never the audio thread.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import logging
import mmap
import os
import signal
import struct
import threading
import weakref
from dataclasses import dataclass, field
from typing import Callable

from stemdeck.threads import thread

log = logging.getLogger("stemdeck.media")

PAGE = mmap.PAGESIZE
F_SETOWN_EX = 15               # Linux fcntl: deliver the fd's signal to one thread
F_OWNER_TID = 0
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
IN_ATTRIB, IN_MOVE_SELF, IN_DELETE_SELF, IN_IGNORED = 0x4, 0x800, 0x400, 0x8000
MREMAP_MAYMOVE, MREMAP_FIXED = 1, 2
MAP_PRIVATE, MAP_ANONYMOUS = 0x02, 0x20
PROT_READ, PROT_WRITE = 1, 2
_INOTIFY_EVENT = struct.Struct("iIII")
SWAP_CHUNK = 1 << 20           # bytes swapped per mremap call (see _copy_over)

SUPPORTED = hasattr(fcntl, "F_SETLEASE") and hasattr(signal, "SIGRTMIN") and hasattr(signal, "sigtimedwait")


def _load_libc():
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                          ctypes.c_long)
    libc.mmap.restype = ctypes.c_void_p
    libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
    libc.mremap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p)
    libc.mremap.restype = ctypes.c_void_p
    libc.signal.argtypes = (ctypes.c_int, ctypes.c_void_p)
    libc.signal.restype = ctypes.c_void_p
    libc.inotify_init1.argtypes = (ctypes.c_int,)
    libc.inotify_add_watch.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)
    libc.inotify_rm_watch.argtypes = (ctypes.c_int, ctypes.c_int)
    return libc


_MAP_FAILED = ctypes.c_void_p(-1).value


@dataclass
class _Guarded:
    """One guarded mapping: the lease's descriptor and where the file's bytes are mapped."""
    path: str
    key: str
    fd: int
    base: int                   # address of the mapping
    length: int                 # bytes mapped (the file's size when mapped)
    mm: weakref.ref             # the mmap object: alive while anything uses the sample
    # weak: a strong reference would keep the loader, its cache and so this very
    # mapping alive from the process-wide registry (a loader dropped with samples
    # in its cache would never let go of them)
    owner: weakref.ref
    ino: tuple
    wd: int = -1
    state: str = "leased"       # leased | copied | silenced | released
    reported: set = field(default_factory=set)


@dataclass
class Owner:
    """What the guard asks and tells the loader that mapped a file.
    ``in_use(key)``: whether a buffer holds the sample (copy it) or not (drop it);
    ``changed(key, state, nbytes)``: the sample now lives in memory (``copied``)
    or was dropped (``silenced``); ``on_event(what, path, outcome)``: report."""
    in_use: Callable[[str], bool] = lambda key: True
    changed: Callable[[str, str, int], None] = lambda key, state, nbytes: None
    on_event: Callable[[str, str, str], None] | None = None


class FileGuard:
    """The process's guard: leases, the inotify watch, and the ``sd-files`` thread."""

    def __init__(self):
        self._libc = _load_libc()
        self.signum = int(signal.SIGRTMIN) + 6      # glibc keeps the first two for itself
        self._lock = threading.Lock()
        self._by_fd: dict[int, _Guarded] = {}
        self._by_wd: dict[int, set] = {}
        self._tid = 0
        self._ready = threading.Event()
        self._stopping = False
        self.handled = {"copied": 0, "silenced": 0, "deleted": 0, "replaced": 0, "moved": 0}
        # a lease signal that reaches the process before it is routed to our thread (a
        # few instructions' window after F_SETLEASE) must not kill it: ignore it there,
        # and look at the lease's state once routed (see _lease)
        self._libc.signal(self.signum, 1)          # SIG_IGN
        self._inotify = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        self._thread = thread(self._run, "sd-files")
        self._thread.start()
        self._ready.wait(5.0)

    # -- mapping (loader threads) ---------------------------------------------------------------
    def map(self, path: str, key: str, owner: Owner) -> tuple[mmap.mmap | None, str]:
        """Map ``path`` read-only under a read lease: ``(mmap, "")``, or
        ``(None, why)`` when the file cannot be guarded (then read it instead)."""
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            why = self._lease(fd)
            if why:
                os.close(fd)
                return None, why
            st = os.fstat(fd)
            if st.st_size <= 0:
                self._unlease(fd)
                return None, "the file is empty"
            mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        except BaseException:
            self._unlease(fd)
            raise
        import numpy as np

        base = np.frombuffer(mm, dtype=np.uint8, count=1).ctypes.data
        g = _Guarded(path, key, fd, base, len(mm), weakref.ref(mm), weakref.ref(owner),
                     (st.st_dev, st.st_ino))
        with self._lock:
            self._by_fd[fd] = g
            if self._inotify >= 0:
                wd = self._libc.inotify_add_watch(self._inotify, os.fsencode(path),
                                                  IN_ATTRIB | IN_MOVE_SELF | IN_DELETE_SELF)
                if wd >= 0:
                    g.wd = wd
                    self._by_wd.setdefault(wd, set()).add(fd)
        weakref.finalize(mm, self._finalize, fd)
        if fcntl.fcntl(fd, fcntl.F_GETLEASE) != fcntl.F_RDLCK:
            self._wake()                               # broken before it was routed to us
        return mm, ""

    def _lease(self, fd: int) -> str:
        """Take a read lease on ``fd`` whose break signal reaches our thread; '' or why not."""
        try:
            fcntl.fcntl(fd, fcntl.F_SETSIG, self.signum)
            fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
        except OSError as exc:
            if exc.errno == errno.EAGAIN:
                return "another program has it open for writing"
            if exc.errno in (errno.EACCES, errno.EPERM):
                return "it belongs to another user (a lease needs the owner or CAP_LEASE)"
            if exc.errno == errno.EINVAL:
                return "its filesystem does not support leases"
            return f"no lease ({exc.strerror})"
        fcntl.fcntl(fd, F_SETOWN_EX, struct.pack("ii", F_OWNER_TID, self._tid))
        return ""

    def _unlease(self, fd: int) -> None:
        try:
            fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        except OSError:
            pass
        os.close(fd)

    def _finalize(self, fd: int) -> None:
        """The mapping is gone (its last reference dropped): let the file go."""
        with self._lock:
            g = self._by_fd.pop(fd, None)
            if g is None:
                return
            g.state = "released"
            if g.wd >= 0:
                fds = self._by_wd.get(g.wd, set())
                fds.discard(fd)
                if not fds:
                    self._by_wd.pop(g.wd, None)
                    self._libc.inotify_rm_watch(self._inotify, g.wd)
            self._unlease(fd)

    def guarded(self) -> int:
        """How many mappings hold a lease now."""
        with self._lock:
            return len(self._by_fd)

    def guarding(self, path: str) -> bool:
        """Whether a mapping of ``path`` holds a lease now."""
        with self._lock:
            return any(g.path == path for g in self._by_fd.values())

    def _wake(self) -> None:
        signal.pthread_kill(self._thread.ident, self.signum)

    # -- the guard's thread ------------------------------------------------------------------------
    def _run(self) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, {self.signum})
        self._tid = threading.get_native_id()
        if self._inotify >= 0:
            # inotify's events arrive as the same signal, so one wait serves both
            fcntl.fcntl(self._inotify, fcntl.F_SETSIG, self.signum)
            fcntl.fcntl(self._inotify, F_SETOWN_EX, struct.pack("ii", F_OWNER_TID, self._tid))
            flags = fcntl.fcntl(self._inotify, fcntl.F_GETFL)
            fcntl.fcntl(self._inotify, fcntl.F_SETFL, flags | os.O_ASYNC)
        self._ready.set()
        while True:
            signal.sigwaitinfo({self.signum})
            try:
                self._inotify_events()
                self._breaks()
            except Exception:          # one file's trouble must not end the guard
                log.exception("file guard: handling a change failed")

    def _breaks(self) -> None:
        with self._lock:
            candidates = list(self._by_fd.values())
        for g in candidates:
            if g.state != "leased":
                continue
            try:
                lease = fcntl.fcntl(g.fd, fcntl.F_GETLEASE)
            except OSError:
                continue
            if lease != fcntl.F_RDLCK:            # a break is pending: someone opens it for writing
                self._protect(g)

    def _protect(self, g: _Guarded) -> None:
        """A program waits to write to ``g``'s file: take the bytes off the file, then let it go."""
        mm = g.mm()                               # keeps the mapping alive while we work on it
        if mm is None:
            self._finalize(g.fd)
            return
        owner = g.owner() or Owner(in_use=lambda key: True)     # no loader left: still in the engine?
        try:
            keep = owner.in_use(g.key)
            outcome = self._copy_over(g) if keep else self._zero_over(g)
        finally:
            del mm
        with self._lock:
            if g.fd in self._by_fd:
                try:
                    fcntl.fcntl(g.fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)     # the writer goes ahead
                except OSError:
                    pass
        owner.changed(g.key, g.state, g.length)
        if outcome == "copied":
            log.warning("%s is being overwritten or truncated by another program while in use: "
                        "playing on from a copy taken before the change (%.1f MB in memory); "
                        "load it again to hear the new file", g.path, g.length / (1 << 20))
        elif outcome == "silenced":
            log.warning("%s is being overwritten or truncated by another program: its cached, unused "
                        "sample was dropped (the next load reads the new file)", g.path)
        else:
            log.error("%s is being overwritten or truncated, and no memory was left to copy it: "
                      "its stems went silent", g.path)
        self._report(owner, g, "written", outcome)

    def _copy_over(self, g: _Guarded) -> str:
        libc = self._libc
        size = (g.length + PAGE - 1) // PAGE * PAGE
        tmp = libc.mmap(None, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        if tmp in (None, _MAP_FAILED):
            return self._zero_over(g, failed=True)
        ctypes.memmove(tmp, g.base, g.length)    # the file is intact: its writer waits for us
        # mremap swaps the copy in under the same addresses: a reader sees the old page
        # or the new one, with the same bytes either way. In chunks, because mremap
        # holds the process's memory-map lock, and a page fault anywhere (the audio
        # thread's included) waits for it: a 140 MB swap in one call held it for ms.
        for off in range(0, size, SWAP_CHUNK):
            n = min(SWAP_CHUNK, size - off)
            moved = libc.mremap(tmp + off, n, n, MREMAP_MAYMOVE | MREMAP_FIXED, g.base + off)
            if moved in (None, _MAP_FAILED):
                libc.munmap(tmp + off, size - off)
                return self._zero_over(g, failed=True)
        g.state = "copied"
        self.handled["copied"] += 1
        return "copied"

    def _zero_over(self, g: _Guarded, failed: bool = False) -> str:
        """Zero pages in place of the file's: silence, never SIGBUS."""
        size = (g.length + PAGE - 1) // PAGE * PAGE
        got = self._libc.mmap(g.base, size, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | 0x10, -1, 0)  # MAP_FIXED
        if got in (None, _MAP_FAILED):
            log.error("%s: could not detach the mapping (%s)", g.path, os.strerror(ctypes.get_errno()))
        g.state = "silenced"
        self.handled["silenced"] += 1
        return "failed" if failed else "silenced"

    def _inotify_events(self) -> None:
        if self._inotify < 0:
            return
        while True:
            try:
                data = os.read(self._inotify, 65536)
            except BlockingIOError:
                return
            except OSError:
                return
            pos = 0
            while pos + _INOTIFY_EVENT.size <= len(data):
                wd, mask, _cookie, length = _INOTIFY_EVENT.unpack_from(data, pos)
                pos += _INOTIFY_EVENT.size + length
                if mask & (IN_ATTRIB | IN_MOVE_SELF | IN_DELETE_SELF):
                    with self._lock:
                        guards = [self._by_fd[fd] for fd in self._by_wd.get(wd, ()) if fd in self._by_fd]
                    for g in guards:
                        self._path_changed(g, mask)

    def _path_changed(self, g: _Guarded, mask: int) -> None:
        """The file was deleted, renamed, or another file took its name: the
        mapping keeps its data, so only say so."""
        try:
            links = os.fstat(g.fd).st_nlink
        except OSError:
            return
        try:
            st = os.stat(g.path)
            now = (st.st_dev, st.st_ino)
        except OSError:
            now = None
        if now == g.ino and links > 0:
            return                                   # chmod, touch, a hard link: nothing to say
        if now is not None and now != g.ino:
            what = "replaced"
            text = "was replaced by another file (renamed over it)"
        elif links == 0:
            what = "deleted"
            text = "was deleted"
        else:
            what = "moved"
            text = "was renamed or moved"
        if what in g.reported:
            return
        g.reported.add(what)
        self.handled[what] += 1
        log.warning("%s %s while in use: playing on from the old file's data, which stays readable "
                    "until its buffers are freed", g.path, text)
        owner = g.owner()
        if owner is not None:
            owner.changed(g.key, what, g.length)
            self._report(owner, g, what, "kept")

    def _report(self, owner: Owner, g: _Guarded, what: str, outcome: str) -> None:
        if owner.on_event is not None:
            try:
                owner.on_event(what, g.path, outcome)
            except Exception:
                log.exception("file guard: reporting %s failed", g.path)


_guard: FileGuard | None = None
_guard_lock = threading.Lock()


def file_guard() -> FileGuard | None:
    """The process's guard, started on first use; None where leases do not exist."""
    global _guard
    if not SUPPORTED:
        return None
    with _guard_lock:
        if _guard is None:
            _guard = FileGuard()
        return _guard


def map_guarded(path: str, key: str, owner: Owner) -> tuple[mmap.mmap | None, str]:
    """Map ``path`` so that changes to the file cannot crash or alter playback:
    ``(mmap, "")``, or ``(None, why)`` when it cannot be guarded."""
    guard = file_guard()
    if guard is None:
        return None, "file leases are a Linux feature"
    return guard.map(path, key, owner)
