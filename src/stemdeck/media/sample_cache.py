"""The sample cache: one sample per file, a memory budget, least-recently-used eviction.

Holds :class:`SampleCache` and :func:`sample_key`.

What counts against the budget (``--cache-mb``): samples held in the
process's own memory: decoded files (float32 stereo, 8 bytes a frame) and
files copied in their stored width (big-endian AIFF). Memory-mapped files
do not: their pages belong to the kernel's page cache, which reclaims
them under pressure (and the read-ahead thread brings back what plays);
they are reported separately (``mapped_mb``). This matches the platform
default (a quarter of RAM, leaving the page cache room for mapped stems).

Every entry counts *holds*: one per user (a sample the Controller has
bound to buffer IDs, a load result not yet collected, a preload in
progress). An entry with no holds is *unused*: it stays cached for reuse
(loading the same path again costs nothing) until the budget needs its
room, oldest use first, or until ``/free_buffer`` / ``/mixer_cleanup``
free it. A load that cannot fit even with every unused entry evicted is
refused with a :class:`~stemdeck.errors.MediaError` that names the sizes.
Budget 0 means no cache: unused samples are dropped at once and loads are
not limited. Dropping an entry only drops the cache's reference; the
memory goes when the engine lets go too (``EV_SLOT_RELEASED``).

Threads: any (loader threads reserve and insert, the control thread
releases and frees); one lock, held for bookkeeping only, never for I/O.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from stemdeck.errors import MediaError

log = logging.getLogger("stemdeck.media")

MB = 1 << 20
MAX_UNUSED_MAPPED = 64       # each mapping keeps a file descriptor open


def sample_key(path: str | os.PathLike) -> str:
    """The cache key of a path: the same file by any name is one sample
    (the Controller keys buffers the same way)."""
    return os.path.realpath(os.path.expanduser(os.fspath(path)))


def file_signature(path: str | os.PathLike) -> tuple:
    """What identifies one version of a file: a file rewritten since it was
    cached is read again."""
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def mb(nbytes: int | float) -> str:
    v = nbytes / MB
    return f"{v:.2f} MB" if v < 10 else f"{v:.1f} MB"


class BudgetFull(MediaError):
    """A preload that would need to evict: skipped, not an error of the file."""


@dataclass
class Entry:
    key: str
    data: Any                       # the array the engine plays
    nbytes: int
    kind: str                       # "mapped" | "decoded" | "copied"
    signature: tuple
    holds: int = 0
    preloaded: bool = False
    last_used: int = 0
    describe: str = ""              # what the file is and how it plays, for status
    shown: str = ""                 # the path as first given

    @property
    def counted(self) -> bool:
        """Whether it counts against the budget."""
        return self.kind != "mapped"


@dataclass
class Reservation:
    key: str
    nbytes: int
    done: bool = field(default=False)


class SampleCache:
    """``budget_bytes``: None or 0 (no limit; 0 also keeps nothing unused).
    ``on_drop(entry)``: called (outside the lock) when an entry leaves the cache."""

    def __init__(self, budget_bytes: int | None, *, on_drop: Callable[[Entry], None] | None = None,
                 max_unused_mapped: int = MAX_UNUSED_MAPPED):
        self.budget = None if budget_bytes is None else int(budget_bytes)
        self.keep_unused = self.budget != 0
        self.on_drop = on_drop
        self.max_unused_mapped = int(max_unused_mapped)
        self._entries: dict[str, Entry] = {}
        self._reserved: dict[int, Reservation] = {}
        self._carry: dict[str, int] = {}          # holds of a stale entry, carried to its successor
        self._lock = threading.Lock()
        self._clock = itertools.count(1)
        self.evictions = 0
        self.evicted_bytes = 0

    @property
    def limited(self) -> bool:
        return bool(self.budget)

    # -- lookups --------------------------------------------------------------------------
    def pin(self, key: str) -> bool:
        """Hold ``key`` if it is cached (no I/O: for the control thread, so a
        queued load finds it still there). The hold is validated by :meth:`get`."""
        with self._lock:
            e = self._entries.get(key)
            if e is None:
                return False
            e.holds += 1
            return True

    def get(self, key: str, signature: tuple, *, pinned: bool = False) -> Entry | None:
        """The cached sample of ``key`` if it is of this version of the file,
        with one hold for the caller (the pin when ``pinned``)."""
        dropped = []
        with self._lock:
            e = self._entries.get(key)
            if e is None:
                return None
            if e.signature == signature:
                if not pinned:
                    e.holds += 1
                e.last_used = next(self._clock)
                return e
            # the file changed on disk: forget the old version
            if pinned:
                e.holds -= 1
            del self._entries[key]
            if e.holds > 0:
                self._carry[key] = self._carry.get(key, 0) + e.holds
            dropped.append(e)
        self._dropped(dropped, "the file changed on disk")
        return None

    def peek(self, key: str) -> Entry | None:
        return self._entries.get(key)

    # -- the budget -------------------------------------------------------------------------
    def used_bytes(self) -> int:
        with self._lock:
            return self._used()

    def _used(self) -> int:
        return (sum(e.nbytes for e in self._entries.values() if e.counted)
                + sum(r.nbytes for r in self._reserved.values()))

    def reserve(self, key: str, nbytes: int, shown: str, *, evict: bool = True,
                detail: str = "") -> Reservation:
        """Set ``nbytes`` aside for a sample about to be made, evicting unused
        samples (least recently used first) if ``evict``. Raises MediaError
        naming the sizes when it cannot fit (BudgetFull when only eviction,
        not allowed here, would make room)."""
        nbytes = int(nbytes)
        what = f"needs {mb(nbytes)} of memory" + (f" ({detail})" if detail else "")
        dropped = []
        try:
            with self._lock:
                if self.limited:
                    if nbytes > self.budget:
                        raise MediaError(
                            f"larger than the memory budget: {shown} {what} "
                            f"but the budget (--cache-mb) is {mb(self.budget)}; raise --cache-mb, or "
                            f"convert it to 16-bit WAV at the engine's rate, which plays from disk "
                            f"(memory-mapped) without using the budget")
                    used = self._used()
                    if used + nbytes > self.budget:
                        if not evict:
                            raise BudgetFull(f"the memory budget is full: {shown} {what}; "
                                             f"{mb(self.budget - used)} of {mb(self.budget)} free")
                        unused = sum(e.nbytes for e in self._entries.values() if e.counted and e.holds <= 0)
                        if used - unused + nbytes <= self.budget:     # evict only if it then fits
                            dropped = self._evict_for(used + nbytes - self.budget)
                            used = self._used()
                        if used + nbytes > self.budget:
                            unused = sum(e.nbytes for e in self._entries.values()
                                         if e.counted and e.holds <= 0)
                            in_use = sum(e.nbytes for e in self._entries.values()
                                         if e.counted and e.holds > 0)
                            loading = sum(r.nbytes for r in self._reserved.values())
                            raise MediaError(
                                f"not enough memory: {shown} {what} but only "
                                f"{mb(max(0, self.budget - used + unused))} of the {mb(self.budget)} "
                                f"budget (--cache-mb) is free or unused: {mb(in_use)} is held by "
                                f"buffers in use"
                                + (f" and {mb(loading)} by loads in progress" if loading else "")
                                + "; free some with /free_buffer or /mixer_cleanup, or raise --cache-mb")
                res = Reservation(key, nbytes)
                self._reserved[id(res)] = res
                return res
        finally:
            self._dropped(dropped, "to make room")

    def _evict_for(self, need: int) -> list[Entry]:
        """Pick unused counted entries, oldest use first, until ``need`` bytes
        are free (or none are left). Lock held."""
        victims = sorted((e for e in self._entries.values() if e.counted and e.holds <= 0),
                         key=lambda e: e.last_used)
        out = []
        for e in victims:
            if need <= 0:
                break
            del self._entries[e.key]
            need -= e.nbytes
            self.evictions += 1
            self.evicted_bytes += e.nbytes
            out.append(e)
        return out

    def cancel(self, res: Reservation | None) -> None:
        if res is None:
            return
        with self._lock:
            self._reserved.pop(id(res), None)

    # -- inserting ---------------------------------------------------------------------------
    def commit(self, res: Reservation | None, data, kind: str, signature: tuple, *, holds: int = 1,
               preloaded: bool = False, describe: str = "", shown: str = "", key: str | None = None,
               nbytes: int | None = None) -> Entry:
        """Turn a reservation (or, for a mapped sample, nothing) into an entry
        with ``holds`` holds. The actual size replaces the reserved one."""
        key = res.key if res is not None else key
        size = int(data.nbytes if nbytes is None else nbytes)
        dropped = []
        with self._lock:
            if res is not None:
                self._reserved.pop(id(res), None)
            old = self._entries.pop(key, None)
            if old is not None:       # a concurrent load of the same file (should not happen)
                holds += old.holds
                dropped.append(old)
            holds += self._carry.pop(key, 0)
            e = Entry(key, data, size, kind, signature, holds=holds, preloaded=preloaded,
                      last_used=next(self._clock), describe=describe, shown=shown)
            self._entries[key] = e
            if e.holds <= 0 and not self.keep_unused:
                del self._entries[key]
                dropped.append(e)
            dropped += self._trim_mapped()
        self._dropped(dropped, "replaced")
        return e

    # -- releasing -----------------------------------------------------------------------------
    def release(self, key: str, n: int = 1) -> None:
        """A user let go of ``key``'s sample."""
        dropped = []
        with self._lock:
            e = self._entries.get(key)
            if e is None:
                return
            e.holds = max(0, e.holds - n)
            e.last_used = next(self._clock)
            if e.holds == 0:
                if not self.keep_unused:
                    del self._entries[key]
                    dropped.append(e)
                elif e.kind == "mapped":
                    dropped += self._trim_mapped()
        self._dropped(dropped, "not kept (--cache-mb 0)")

    def _trim_mapped(self) -> list[Entry]:
        unused = sorted((e for e in self._entries.values() if e.kind == "mapped" and e.holds <= 0),
                        key=lambda e: e.last_used)
        out = []
        for e in unused[:max(0, len(unused) - self.max_unused_mapped)]:
            del self._entries[e.key]
            out.append(e)
        return out

    def free(self, key: str) -> bool:
        """Drop ``key``'s sample now if nobody holds it; True if it was dropped."""
        with self._lock:
            e = self._entries.get(key)
            if e is None or e.holds > 0:
                return False
            del self._entries[key]
        self._dropped([e], "freed")
        return True

    def convert(self, key: str, kind: str, describe: str) -> None:
        """A mapped sample now lives in the process's memory (its file changed and
        the guard copied it): it counts against the budget from now on, which may
        go over it; loads then wait for room, nothing playing is dropped."""
        with self._lock:
            e = self._entries.get(key)
            if e is None or e.kind == kind:
                return
            e.kind = kind
            e.describe = f"{e.describe}; {describe}" if e.describe else describe
            over = self.limited and self._used() > self.budget
        if over:
            log.warning("the sample cache is over its budget (--cache-mb) after copying %s: "
                        "new loads need room first", e.shown or key)

    def forget(self, key: str) -> None:
        """Drop ``key``'s entry whatever its holds (its file changed and its data
        is gone); holds still out are carried to the next load of the path."""
        with self._lock:
            e = self._entries.pop(key, None)
            if e is None:
                return
            if e.holds > 0:
                self._carry[key] = self._carry.get(key, 0) + e.holds
        self._dropped([e], "its file changed")

    def free_unused(self, *, keep_preloaded: bool = True, kinds: tuple[str, ...] | None = None) -> int:
        """Drop every unused sample (except preloaded ones, if asked; only of
        ``kinds`` if given); returns bytes dropped."""
        with self._lock:
            out = [e for e in self._entries.values()
                   if e.holds <= 0 and not (keep_preloaded and e.preloaded)
                   and (kinds is None or e.kind in kinds)]
            for e in out:
                del self._entries[e.key]
        self._dropped(out, "freed")
        return sum(e.nbytes for e in out)

    def _dropped(self, entries: list[Entry], why: str) -> None:
        for e in entries:
            log.debug("cache: %s dropped (%s, %s): %s", e.shown or e.key, e.kind, mb(e.nbytes), why)
            if self.on_drop is not None:
                self.on_drop(e)

    # -- reporting ---------------------------------------------------------------------------
    def entries(self) -> list[Entry]:
        with self._lock:
            return sorted(self._entries.values(), key=lambda e: e.last_used)

    def status(self) -> dict:
        with self._lock:
            counted = [e for e in self._entries.values() if e.counted]
            mapped = [e for e in self._entries.values() if not e.counted]
            return {
                "budget_mb": round(self.budget / MB, 1) if self.budget is not None else None,
                "used_mb": round(self._used() / MB, 1),
                "in_use_mb": round(sum(e.nbytes for e in counted if e.holds > 0) / MB, 1),
                "unused_mb": round(sum(e.nbytes for e in counted if e.holds <= 0) / MB, 1),
                "loading_mb": round(sum(r.nbytes for r in self._reserved.values()) / MB, 1),
                "mapped_mb": round(sum(e.nbytes for e in mapped) / MB, 1),
                "samples": len(self._entries),
                "mapped_files": len(mapped),
                "evictions": self.evictions,
                "evicted_mb": round(self.evicted_bytes / MB, 1),
            }
