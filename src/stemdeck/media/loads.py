"""Loads in flight, one per file: the requests each serves, and how it ends (its sample for every request, or a reason a person can act on).

:class:`~stemdeck.media.loader.MediaLoader` makes a :class:`Request` for
each ``submit``/``fetch``; the first request for a file starts a
:class:`Work`, later ones join it until it ends. :class:`InFlight` holds
the works and ends them: :meth:`InFlight.complete` commits the sample to
the cache with one hold per request and hands it to each;
:meth:`InFlight.fail_work` gives every request the same
:class:`~stemdeck.errors.MediaError` (:func:`media_error` turns any
exception into one).

Threads: the loader's lanes (and the control thread's ``submit``), under
:attr:`InFlight.lock`.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

from stemdeck.errors import MediaError
from stemdeck.media import mapped
from stemdeck.media.sample_cache import BudgetFull, SampleCache, mb

log = logging.getLogger("stemdeck.media")

CLIENT, PRELOAD = 0, 1            # queue priorities: lower first


@dataclass
class Request:
    """One ``submit`` or ``fetch``: a file wanted at a rate, and the future that answers it."""
    path: str
    key: str
    rate: int
    future: Future
    priority: int
    evict: bool
    preload: bool
    pinned: bool = False


@dataclass
class Work:
    """One load of one file, shared by every request for it meanwhile."""
    key: str
    path: str
    rate: int
    signature: tuple
    requests: list = field(default_factory=list)
    plan: mapped.Plan | None = None
    priority: int = PRELOAD
    started: bool = False
    reservation: object = None

    @property
    def evict(self) -> bool:
        return any(r.evict for r in self.requests)

    @property
    def preload(self) -> bool:
        return all(r.preload for r in self.requests)


class InFlight:
    """The works in flight by cache key, the counts of how loads ended
    (``counts``: mapped, decoded, copied, cached, refused), and the ending
    of each. ``readahead``: told about every mapped sample (or None)."""

    def __init__(self, cache: SampleCache, readahead=None):
        self.cache = cache
        self.readahead = readahead
        self.lock = threading.Lock()
        self.works: dict[str, Work] = {}
        self.counts = {"mapped": 0, "decoded": 0, "copied": 0, "cached": 0, "refused": 0}

    def complete(self, work: Work, data, kind: str, describe: str, t0: float) -> None:
        with self.lock:
            reqs = list(work.requests)
            entry = self.cache.commit(work.reservation, data, kind, work.signature, holds=len(reqs),
                                      preloaded=work.preload, describe=describe, shown=work.path,
                                      key=work.key)
            self.works.pop(work.key, None)
        work.reservation = None
        if kind == "mapped" and self.readahead is not None:
            self.readahead.register(entry.data)
        self.counts[kind] += 1
        log.debug("loaded %s: %s, %s, in %.0f ms", work.path, describe, mb(entry.nbytes),
                  (time.perf_counter() - t0) * 1000)
        for req in reqs:
            finish(req.future, entry.data)

    def fail_work(self, work: Work, exc: BaseException) -> None:
        self.cache.cancel(work.reservation)
        work.reservation = None
        with self.lock:
            reqs = list(work.requests)
            self.works.pop(work.key, None)
        for req in reqs:
            self.fail_request(req, exc)

    def fail_request(self, req: Request, exc: BaseException) -> None:
        if not isinstance(exc, BudgetFull):
            self.counts["refused"] += 1
        _fail(req.future, media_error(exc, req.path))

    def unpin(self, req: Request) -> None:
        if req.pinned:
            self.cache.release(req.key)
            req.pinned = False


def requests_of(item) -> list[Request]:
    """The requests a queue item (a Request, a Work, or None: stop) stands for."""
    if item is None:
        return []
    if isinstance(item, Work):
        return list(item.requests)
    return [item]


def finish(future: Future, data) -> None:
    if not future.done():
        future.set_result(data)


def _fail(future: Future, exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def media_error(exc: BaseException, path: str) -> BaseException:
    """Every failure reaches the client as a reason a person can act on."""
    if isinstance(exc, MediaError):
        return exc
    if isinstance(exc, MemoryError):
        return MediaError(f"not enough memory to load {path}: free some buffers or use a smaller file")
    if isinstance(exc, PermissionError):
        return MediaError(f"cannot read (permission denied): {path}; check the permissions of the file "
                          "and the folders above it")
    if isinstance(exc, FileNotFoundError):
        return MediaError(f"no such file: {path} (it disappeared while loading)")
    if isinstance(exc, OSError):
        return MediaError(f"cannot read: {path} ({exc.strerror or exc})")
    log.error("loading %s failed unexpectedly", path, exc_info=exc)
    return MediaError(f"cannot load {path}: internal error: {type(exc).__name__}: {exc}")
