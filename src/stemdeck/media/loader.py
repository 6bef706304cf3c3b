"""MediaLoader: files become samples off the control and audio threads, through the cache.

Holds :class:`MediaLoader`, the loader the live server gives its
:class:`~stemdeck.control.controller.Controller` (``submit(path, rate)``
returns a Future of the sample array, like the handlers' own loaders), plus
the hooks the Controller calls to tell the cache what it still uses.

Two lanes, so a cue of a big WAV never waits behind a decode:

- the *open* thread (one) refuses what is not a readable audio file
  (missing, directory, empty, not audio: :mod:`stemdeck.media.refusals`'
  rules and messages), answers from the cache, and memory-maps PCM at the
  engine's rate (:mod:`stemdeck.media.mapped`), faulting in its first
  ``prefault_seconds`` so the first blocks play from memory; a 140 MB WAV
  is ready in milliseconds;
- *decode* workers (``workers``, niced) do everything that reads a whole
  file: decoding (FLAC, Ogg, MP3, 24-bit, other rates, multichannel),
  copying big-endian AIFF, checking float WAVs for damage before mapping.
  Both queues serve client loads before preloads.

Each successful result carries one *hold* on its cache entry; the
Controller keeps it while a buffer uses the sample and gives it back with
:meth:`release_sample` (or at once if nobody took the result). Loads of
one file at the same time are done once (:mod:`stemdeck.media.loads`).

Threads: :meth:`submit`, :meth:`fetch` and the hooks from the control
thread (or any one thread); futures complete on the loader's threads
(``immediate=True``: on the caller's, before ``submit`` returns: scores,
tests). A :class:`~stemdeck.media.readahead.ReadAhead` thread follows the
engine's voices when an engine is given.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import itertools
import logging
import math
import os
import queue
import threading
import time
from concurrent.futures import Future

from stemdeck.errors import MediaError
from stemdeck.media import mapped
from stemdeck.media.refusals import clock, libsndfile_can, preflight, probe, short_file_note
from stemdeck.media.sample_cache import MB, SampleCache, file_signature, mb, sample_key
from stemdeck.media.guard import Owner, map_guarded
from stemdeck.media.loads import CLIENT, PRELOAD, InFlight, Request, Work, finish, requests_of
from stemdeck.threads import thread

log = logging.getLogger("stemdeck.media")

PREFAULT_SECONDS = 1.0           # faulted in before a mapped file is ready; read-ahead takes over
DECODER_NICE = 5


class MediaLoader:
    """``engine``: the running Engine (for its sample rate and the read-ahead
    thread; None offline). ``cache_mb``: the memory budget (None: no limit,
    0: no cache). ``workers``: decode threads. ``immediate``: do all the work
    on the calling thread (scores, tests). ``readahead``: follow playing
    voices of mapped samples (needs ``engine``). ``on_file_event(what, path,
    outcome)``: a mapped file changed under playback (called on the file
    guard's thread, :mod:`stemdeck.media.guard`)."""

    def __init__(self, engine=None, *, cache_mb: int | None = None, workers: int = 1,
                 immediate: bool = False, readahead: bool = True,
                 prefault_seconds: float = PREFAULT_SECONDS, decoder_nice: int = DECODER_NICE,
                 readahead_seconds: float | None = None, on_file_event=None):
        self.engine = engine
        self.cache = SampleCache(None if cache_mb is None else int(cache_mb * MB), on_drop=self._on_drop)
        self.workers = max(1, int(workers))
        self.immediate = immediate
        self.prefault_seconds = float(prefault_seconds)
        self.decoder_nice = int(decoder_nice)
        self.readahead = None
        if engine is not None and readahead:
            from stemdeck.media.readahead import DEFAULT_SECONDS, ReadAhead

            self.readahead = ReadAhead(engine, seconds=readahead_seconds or DEFAULT_SECONDS)
        self._flight = InFlight(self.cache, self.readahead)
        self._start_lock = threading.Lock()
        self._open_q: queue.PriorityQueue = queue.PriorityQueue()
        self._decode_q: queue.PriorityQueue = queue.PriorityQueue()
        self._seq = itertools.count()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._batch = threading.local()          # set inside preloading()
        self.loads = self._flight.counts         # how loads ended, by kind
        # the file guard reports files changed under playback here (the server tells /notify)
        self.on_file_event = on_file_event
        self._owner = Owner(self._in_use, self._file_changed, self._file_event)
        if not immediate:
            self._start_threads()                # and warm up: the first /cue must not pay for imports

    # -- the loader protocol (Controller) --------------------------------------------------------
    def submit(self, path: str, sample_rate: int) -> Future:
        """Start loading ``path`` at ``sample_rate``; the Future's result is
        the sample array (holding one hold on its cache entry)."""
        batch = getattr(self._batch, "futures", None)
        if batch is not None:                 # a preload through the Controller
            future = self._request(path, sample_rate, PRELOAD, evict=False, preload=True)
            batch.append((os.fspath(path), future))
            return future
        return self._request(path, sample_rate, CLIENT, evict=True, preload=False)

    @contextlib.contextmanager
    def preloading(self):
        """Within this block (on this thread), :meth:`submit` loads at preload
        priority without evicting, and the ``(path, future)`` pairs it made
        are collected in the list this yields (for a progress display)."""
        self._batch.futures = futures = []
        try:
            yield futures
        finally:
            self._batch.futures = None

    def fetch(self, path: str, sample_rate: int | None = None, *, preload: bool = True) -> Future:
        """Load into the cache at preload priority, evicting nothing (a file
        that does not fit fails with BudgetFull). Same result and hold as
        :meth:`submit`; give the hold back with :meth:`release_sample`."""
        rate = sample_rate or (self.engine.sample_rate if self.engine is not None else None)
        if rate is None:
            raise ValueError("fetch needs a sample rate (no engine given)")
        return self._request(path, rate, PRELOAD, evict=False, preload=preload)

    def close(self) -> None:
        self._closed = True
        for q in (self._open_q, self._decode_q):       # fail what never started
            while True:
                try:
                    item = q.get_nowait()[2]
                except queue.Empty:
                    break
                for req in requests_of(item):
                    self._flight.unpin(req)
                    if not req.future.done():
                        req.future.set_exception(MediaError(f"not loaded: the server is stopping ({req.path})"))
        for q in (self._open_q, self._decode_q):
            for _ in self._threads:
                q.put((99, next(self._seq), None))
        if self.readahead is not None:
            self.readahead.stop()
        for t in self._threads:
            t.join(timeout=2.0)      # a decode in progress finishes first (its result is dropped)

    # -- hooks the Controller calls ------------------------------------------------------------------
    @staticmethod
    def key(path: str) -> str:
        return sample_key(path)

    def release_sample(self, key: str) -> None:
        """A sample the Controller held is no longer bound to any buffer ID."""
        self.cache.release(key)

    def free_sample(self, key: str) -> bool:
        """``/free_buffer``: drop the file's sample now if nothing else holds it."""
        return self.cache.free(key)

    def free_unused(self) -> int:
        """``/mixer_cleanup``: drop every unused sample except preloaded ones."""
        return self.cache.free_unused(keep_preloaded=True)

    def warm_sample(self, key: str, fraction: float) -> None:
        """``/cue`` at a position: fault in the audio there before it plays."""
        e = self.cache.peek(key)
        if e is None or e.kind != "mapped" or self.readahead is None:
            return
        self.readahead.warm(e.data, int(fraction * e.data.shape[0]))

    def voice_starting(self, frame: int) -> None:
        """A stem starts at engine ``frame``: wake the read-ahead to follow it."""
        if self.readahead is not None:
            self.readahead.voice_starting(frame)

    def describe(self) -> list[str]:
        """Start-up lines: the budget and what plays without it."""
        budget = self.cache.budget
        if budget is None:
            text = "no limit"
        elif budget == 0:
            text = "0 (no cache: unused samples are freed at once, loads are not limited)"
        else:
            text = f"{budget // MB} MB for decoded samples, least recently used evicted first"
        rate = f"{self.engine.sample_rate} Hz" if self.engine is not None else "the engine's rate"
        return [f"{'sample cache':<15} {text}; 16/32-bit WAV/AIFF-C at {rate} plays memory-mapped "
                f"(outside the budget), {self.workers} decode thread{'s' if self.workers != 1 else ''}"]

    def cache_status(self) -> dict:
        out = self.cache.status()
        out["loading"] = len(self._flight.works)
        out["loads"] = dict(self.loads)
        if self.readahead is not None:
            out["readahead"] = self.readahead.stats()
        return out

    # -- requests ------------------------------------------------------------------------------------
    def _request(self, path, rate, priority, *, evict, preload) -> Future:
        future: Future = Future()
        key = sample_key(path)
        req = Request(os.fspath(path), key, int(rate), future, priority, evict, preload)
        if self._closed:
            future.set_exception(MediaError(f"not loaded: the server is stopping ({req.path})"))
            return future
        req.pinned = self.cache.pin(key)     # a cached sample stays cached until the lane looks
        if self.immediate:
            self._open(req)
            while not self._decode_q.empty():
                self._decode(self._decode_q.get_nowait()[2])
            return future
        self._start_threads()
        self._open_q.put((priority, next(self._seq), req))
        return future

    def _start_threads(self) -> None:
        if self._threads:
            return
        with self._start_lock:
            if self._threads:
                return
            lanes = [("sd-loader-open", self._open_loop)]
            lanes += [(f"sd-decode-{i}", self._decode_loop) for i in range(self.workers)]
            for name, target in lanes:
                t = thread(target, name)
                t.start()
                self._threads.append(t)
            if self.readahead is not None:
                self.readahead.start()

    def _open_loop(self) -> None:
        _warm_up()
        while True:
            req = self._open_q.get()[2]
            if req is None:
                return
            self._open(req)
            del req                  # waiting for the next one must not keep this sample alive

    def _decode_loop(self) -> None:
        if self.decoder_nice > 0:
            try:       # decoding competes for CPU with everything but the audio thread
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.decoder_nice)
            except (OSError, AttributeError):
                pass
        while True:
            work = self._decode_q.get()[2]
            if work is None:
                return
            self._decode(work)
            del work

    # -- the open lane ---------------------------------------------------------------------------------
    def _open(self, req: Request) -> None:
        """Refuse, answer from the cache, join a load in progress, map, or queue a decode."""
        try:
            kind, _wav = preflight(req.path)       # missing, directory, empty, unreadable...
            signature = file_signature(req.path)
        except Exception as exc:
            self._flight.unpin(req)
            self._flight.fail_request(req, exc)
            return
        with self._flight.lock:
            entry = self.cache.get(req.key, signature, pinned=req.pinned)
            if entry is not None:
                self.loads["cached"] += 1
                finish(req.future, entry.data)
                return
            work = self._flight.works.get(req.key)
            if work is not None:
                work.requests.append(req)
                if req.priority < work.priority and not work.started:
                    work.priority = req.priority            # jump the queue (the old item is skipped)
                    if work.plan is not None:
                        self._decode_q.put((req.priority, next(self._seq), work))
                return
            work = Work(req.key, req.path, req.rate, signature, [req], priority=req.priority)
            self._flight.works[req.key] = work
        try:
            if kind is None or not kind.audio or not kind.decodable:
                probe(req.path)               # libsndfile's verdict and the refusal message, quickly
            work.plan = mapped.plan_load(req.path, req.rate)
            if work.plan.instant:
                work.started = True
                if self._map(work):
                    return
                work.started = False
        except Exception as exc:
            self._flight.fail_work(work, exc)
            return
        self._decode_q.put((work.priority, next(self._seq), work))

    def _map(self, work: Work, *, checked_float: bool = False) -> bool:
        """Map a PCM file; False (and nothing done) when it should be decoded."""
        t0 = time.perf_counter()
        layout = work.plan.layout
        info = probe(work.path)                   # the shared refusal rules, and a second opinion
        if int(info.samplerate) != work.rate or info.channels != layout.channels or info.frames < 1:
            work.plan = mapped.Plan("decode", "its header and libsndfile disagree", layout)
            return False
        frames = min(layout.frames, int(info.frames))
        try:
            data = self._map_guarded(work, layout, frames)
        except OSError as exc:
            if exc.errno != errno.ENOMEM:
                raise
            # out of address space (a 32-bit system): let go of unused mappings and try once more
            self.cache.free_unused(keep_preloaded=False, kinds=("mapped",))
            gc.collect()
            try:
                data = self._map_guarded(work, layout, frames)
            except OSError as again:
                if again.errno != errno.ENOMEM:
                    raise
                raise MediaError(f"not enough address space to map {work.path} "
                                 f"({mb(layout.frames * layout.block_align)}): free some buffers "
                                 "(/free_buffer, /mixer_cleanup)") from None
        if data is None:
            return False
        if layout.encoding == "float" and not checked_float:
            bad, over = mapped.float_damage(data)
            if bad or over:
                log.info("%s: %d damaged float samples; decoding it to repair them", work.path, bad + over)
                work.plan = mapped.Plan("decode", "damaged float samples repaired", layout)
                return False
        if self.prefault_seconds > 0:
            from stemdeck.media.readahead import populate

            populate(data, 0, int(self.prefault_seconds * work.rate))
            populate(data, frames - min(frames, 1024), frames)    # a loop's seam reads the last frames
        if layout.declared_frames > frames:
            log.warning("%s", short_file_note(work.path, frames, layout.declared_frames, work.rate))
        describe = f"{layout.describe()}, memory-mapped"
        self._flight.complete(work, data, "mapped", describe, t0)
        return True

    def _map_guarded(self, work: Work, layout, frames: int):
        """The mapped samples, guarded against changes to the file; None (and
        the plan changed to reading it) when the file cannot be guarded."""
        mm, why = map_guarded(work.path, work.key, self._owner)
        if mm is None:
            how = "decode" if layout.encoding == "float" else "copy"
            log.info("%s: read into memory, not memory-mapped: %s, so changes to the file while it "
                     "plays could not be caught", work.path, why)
            work.plan = mapped.Plan(how, f"not mapped: {why}", layout)
            return None
        return mapped.map_samples(work.path, layout, frames, mm=mm)

    # -- the file guard's questions (its thread) ---------------------------------------------------
    def _in_use(self, key: str) -> bool:
        e = self.cache.peek(key)
        return e is not None and e.kind == "mapped" and e.holds > 0

    def _file_changed(self, key: str, state: str, nbytes: int) -> None:
        """The guard moved a mapped sample into memory (``copied``) or dropped it
        (``silenced``); a deleted or replaced file changes nothing here."""
        if state == "copied":
            self.cache.convert(key, "copied", "read into memory when its file changed")
        elif state == "silenced":
            self.cache.forget(key)

    def _file_event(self, what: str, path: str, outcome: str) -> None:
        if self.on_file_event is not None:
            self.on_file_event(what, path, outcome)

    # -- the decode lane ----------------------------------------------------------------------------------
    def _decode(self, work: Work) -> None:
        if work.started:                  # a queue-jump left a second item for the same work
            return
        work.started = True
        from stemdeck.media import decode

        t0 = time.perf_counter()
        plan = work.plan
        try:
            if plan.how == "map" and self._map(work):
                return
            plan = work.plan
            info = probe(work.path)
            if plan.how == "copy":
                layout = plan.layout
                frames = min(layout.frames, int(info.frames))
                work.reservation = self.cache.reserve(work.key, frames * layout.block_align, work.path,
                                                      evict=work.evict, detail=f"{layout.bits}-bit, "
                                                      "read into memory")
                data = mapped.copy_samples(work.path, layout, frames)
                self._flight.complete(work, data, "copied", f"{layout.describe()}, read into memory "
                               f"({plan.reason.split(':')[0]})", t0)
                return
            frames = math.ceil(info.frames * work.rate / info.samplerate) + 2
            work.reservation = self.cache.reserve(
                work.key, frames * 8, work.path, evict=work.evict,
                detail=f"{clock(info.frames / info.samplerate)} decoded to float32 stereo")
            audio, notes = decode.load_audio_with_notes(work.path, work.rate)
            for note in notes:
                log.warning("%s", note)
            what = (plan.layout.describe() if plan.layout is not None
                    else f"{info.format_info} {info.subtype_info}, {info.samplerate} Hz")
            self._flight.complete(work, audio, "decoded", f"{what}, decoded ({plan.reason})", t0)
        except Exception as exc:
            self._flight.fail_work(work, exc)

    def _on_drop(self, entry) -> None:
        if entry.kind == "mapped" and self.readahead is not None:
            self.readahead.forget(entry.data)


# -- helpers ------------------------------------------------------------------------------------------

def _warm_up() -> None:
    """Import and initialise what the first load needs (libsndfile through
    cffi, its format list) before any load arrives: tens of milliseconds
    the first /cue would otherwise wait for."""
    try:
        from stemdeck.media import decode, readahead  # noqa: F401

        libsndfile_can()
    except Exception:      # the load itself will say what is wrong
        pass
