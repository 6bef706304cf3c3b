"""The Controller's buffer bookkeeping: buffer IDs, the samples behind them, and the loads that fill them.

Which IDs are loading, ready or failed, their file, name, sample slot and
length; one decoded sample per file, shared by every buffer ID that loads
the same path. What an ID holds keeps playing until its new sample is
ready; a refused file changes nothing.

Threads: the control thread, except that a loader's worker threads finish
futures, which land in a queue and are collected by :meth:`BufferBook.poll`
on the control thread.
"""

from __future__ import annotations

import os
import queue
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable

from stemdeck.engine.commands import deck_for_buffer
from stemdeck.errors import CommandError, MediaError


@dataclass
class BufferInfo:
    id: int
    path: str
    name: str
    key: str                 # the cache key (real path) shared with other buffers
    state: str = "loading"   # loading | ready | failed
    error: str = ""
    slot: int | None = None
    frames: int = 0
    deck: int = 0
    bpm: float = 0.0         # the stem's own tempo (0: it ignores the master tempo)
    previous: Any = None     # the ready BufferInfo this load replaces: bound (and playing) until
                             # the new sample is ready, restored if the new file is refused


@dataclass
class Sample:
    key: str
    slot: int
    frames: int
    users: set = field(default_factory=set)


@dataclass
class Job:
    key: str
    path: str
    future: Future
    requests: list = field(default_factory=list)    # (BufferInfo, Ctx, done_address | None)


class Wait(Exception):
    """Raised by a handler that needs buffers still loading; the message waits."""

    def __init__(self, ids):
        super().__init__(ids)
        self.ids = set(ids)


class BufferBook:
    """Buffer IDs -> samples, and the loads in flight.

    ``loader``: ``submit(path, sample_rate) -> Future``. ``default_bpm``: a
    new buffer's own tempo unless ``/load_buffer`` says (0: it ignores the
    master tempo). ``check_path(path)``: raises CommandError to refuse a file
    before anything changes. ``on_load_ready()``: a loader thread finished a
    load (wake the control loop). The Controller's side: ``done(sender,
    address, *args)``, ``fail(sender, address, reason)``, ``touch(frame)``
    (the timeline's last frame) and ``settled()`` (a load ended: run the
    messages that waited).
    """

    def __init__(self, engine, loader, *, sample_rate: int, default_bpm: float, follow_tempo: bool,
                 check_path: Callable[[str], None] | None, on_load_ready: Callable[[], None] | None,
                 done, fail, touch, settled):
        self.engine = engine
        self.loader = loader
        self.sample_rate = int(sample_rate)
        self.default_bpm = float(default_bpm)
        self.follow_tempo = follow_tempo
        self.check_path = check_path
        self.on_load_ready = on_load_ready
        self._done, self._fail, self._touch, self._settled = done, fail, touch, settled
        self.ids: dict[int, BufferInfo] = {}
        self.samples: dict[str, Sample] = {}
        self.jobs: dict[str, Job] = {}
        self.finished: queue.SimpleQueue = queue.SimpleQueue()

    @staticmethod
    def key(path: str) -> str:
        return os.path.realpath(os.path.expanduser(path))

    def is_loading(self, buffer_id: int) -> bool:
        buf = self.ids.get(buffer_id)
        return buf is not None and buf.state == "loading"

    def require(self, buffer_id: int) -> BufferInfo:
        buf = self.ids.get(buffer_id)
        if buf is None:
            raise CommandError(f"buffer {buffer_id} is not loaded: send /load_buffer "
                               f"{buffer_id} <path> first")
        if buf.state == "loading":
            raise Wait({buffer_id})
        if buf.state == "failed":
            raise CommandError(f"buffer {buffer_id} failed to load: {buf.error}")
        return buf

    def media(self, hook: str, *args):
        """Tell a caching loader (:class:`stemdeck.media.loader.MediaLoader`) what
        the buffers still use; loaders without the hook ignore it."""
        fn = getattr(self.loader, hook, None)
        return fn(*args) if fn is not None else None

    def poll(self) -> int:
        """Finish loads that completed on loader threads; how many did."""
        done = 0
        while True:
            try:
                key = self.finished.get_nowait()
            except queue.Empty:
                break
            job = self.jobs.get(key)
            if job is not None and job.future.done():
                self._complete(job)
                done += 1
        return done

    # -- releasing -----------------------------------------------------------------------------------

    def release(self, buffer_id: int, at) -> None:
        """Empty a buffer ID (the engine stops what it plays)."""
        old = self.ids.pop(buffer_id, None)
        if old is None:
            return
        if old.state == "loading" and old.previous is not None:
            old = old.previous               # still bound while its replacement loads
        if old.state == "ready":
            self.engine.unbind(buffer_id, at=at)
            self._drop_user(old)

    def release_all(self) -> None:
        """After every buffer ID was released: the loader forgets the samples."""
        for key in self.samples:
            self.media("release_sample", key)
        self.samples.clear()

    def _drop_user(self, buf: BufferInfo):
        sample = self.samples.get(buf.key)
        if sample is not None:
            sample.users.discard(buf.id)
            if not sample.users:
                del self.samples[buf.key]   # the engine frees it once its voices let go
                self.media("release_sample", buf.key)

    # -- loading ---------------------------------------------------------------------------------------

    def load(self, buffer_id: int, path: str, name: str | None, ctx, done_address: str | None,
             bpm: float | None = None) -> BufferInfo:
        """Start loading ``path`` into ``buffer_id``; ``done_address`` gets /done or /fail."""
        # one spelling of the path from here on: the media root check, the cache key
        # and the decoder all see the same file
        path = os.path.expanduser(path)
        if self.check_path is not None:
            self.check_path(path)             # refuses before anything changes
        # what the ID holds keeps playing until the new sample is ready; the engine
        # then crossfades a playing voice into it (declick); a refused file changes nothing
        old = self.ids.get(buffer_id)
        previous = old.previous if old is not None and old.state == "loading" else old
        if previous is not None and previous.state != "ready":
            previous = None
        key = self.key(path)
        if name is None:
            name = os.path.splitext(os.path.basename(path))[0]
        buf = BufferInfo(buffer_id, path, name, key, deck=deck_for_buffer(buffer_id),
                         bpm=self.default_bpm if bpm is None else bpm, previous=previous)
        self.ids[buffer_id] = buf
        ctx.started_loads.add(buffer_id)
        sample = self.samples.get(key)
        if sample is not None:                       # the same file: reuse its sample
            self._bind(buf, sample, ctx, done_address)
            return buf
        job = self.jobs.get(key)
        if job is None:
            job = Job(key, path, self.loader.submit(path, self.sample_rate))
            self.jobs[key] = job
            job.requests.append((buf, ctx, done_address))
            if job.future.done():
                self._complete(job)
            else:
                job.future.add_done_callback(lambda _f, k=key: self._load_finished(k))
        else:
            job.requests.append((buf, ctx, done_address))
        return buf

    def load_if_needed(self, buffer_id: int, path: str, name: str, ctx) -> BufferInfo | None:
        """For /play and /cue: keep what the buffer holds when it is the same file.
        None: the load this message began was refused (see ``ctx.load_errors``)."""
        if buffer_id in ctx.load_errors:
            return None
        buf = self.ids.get(buffer_id)
        if buffer_id in ctx.started_loads and buf is not None:
            return buf
        if buf is not None and buf.key == self.key(path) and buf.state != "failed":
            return buf
        buf = self.load(buffer_id, path, name, ctx, None)
        if self.ids.get(buffer_id) is not buf:    # refused at once; the buffer kept its sample
            return None
        return buf

    def _load_finished(self, key: str):
        """Loader thread: hand the key to the control thread."""
        self.finished.put(key)
        if self.on_load_ready is not None:
            self.on_load_ready()

    def _complete(self, job: Job):
        """Control thread: the job's future is done; bind or fail its requests."""
        self.jobs.pop(job.key, None)
        current = [(b, c, d) for b, c, d in job.requests if self.ids.get(b.id) is b]
        error = job.future.exception()
        loaded = error is None
        sample = None
        if error is None and current:
            data = job.future.result()
            try:
                slot = self.engine.add_sample(data)
            except CommandError as exc:
                error = exc
            else:
                sample = Sample(job.key, slot, int(data.shape[0]))
                self.samples[job.key] = sample
        for buf, ctx, done_address in current:
            if sample is not None:
                self._bind(buf, sample, ctx, done_address)
            else:
                buf.state = "failed"
                buf.error = _reason(error)
                ctx.load_errors[buf.id] = buf.error
                if buf.previous is not None:          # the buffer keeps what it held
                    self.ids[buf.id] = buf.previous
                if done_address:
                    self._fail(ctx.sender, done_address, f"buffer {buf.id}: {buf.error}")
        if loaded and sample is None:                 # nobody took the sample: give it back
            self.media("release_sample", job.key)
        self._settled()

    def _bind(self, buf: BufferInfo, sample: Sample, ctx, done_address: str | None):
        self.engine.bind(buf.id, sample.slot, at=ctx.at)
        if self.follow_tempo or buf.bpm:
            self.engine.set_source_bpm(buf.id, buf.bpm, at=ctx.at)
        sample.users.add(buf.id)
        previous, buf.previous = buf.previous, None
        if previous is not None and previous.key != buf.key:
            self._drop_user(previous)         # bind replaced it in the engine
        buf.state, buf.slot, buf.frames = "ready", sample.slot, sample.frames
        self._touch(ctx.now)
        if done_address:
            self._done(ctx.sender, done_address, buf.id)


def _reason(error) -> str:
    if isinstance(error, (MediaError, CommandError)):
        return str(error)
    if isinstance(error, FileNotFoundError):
        return f"no such file: {error.filename}"
    return f"{type(error).__name__}: {error}"
