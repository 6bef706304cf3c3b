"""``--preload DIR|LIST.txt``: load files at start-up in the background, with a progress bar.

Holds :func:`add_arguments` (the flag), :func:`read_sources` (what the
flags name), :class:`Preload` and :func:`start_preload` (the run).

- ``--preload DIR`` loads every audio file under DIR (by name: .wav, .aif,
  .flac, .ogg, .mp3, ...; hidden files skipped; sorted) into the sample
  cache. A client then addresses them by path: ``/load_buffer 100
  DIR/song.wav`` or ``/cue A DIR/song.wav`` binds the cached sample at once.
- ``--preload LIST.txt`` reads one file per line, ``id path [name]``
  (shell-style quoting for spaces, ``#`` comments, paths relative to the
  list's folder) and loads each into its buffer ID, as ``/load_buffer id
  path name`` would: a client can play the ID as soon as it is ready, and
  a command for it sent earlier waits for it.
- ``--preload FILE.wav`` (an audio file) preloads that one file.

The flag is repeatable. Preloading runs at the lowest priority of the
loader (a client's load goes first), never evicts anything (a file that
does not fit in ``--cache-mb`` is skipped and counted), and does not delay
``ready``: the server takes commands while it runs. Failures of path-only
files are logged once here; those of list entries come back as the
``/load_buffer`` ``/fail`` reply, which the server logs.

Threads: :func:`start_preload` on the control thread (it calls the
Controller); the progress thread is this module's own and only reads.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable

from stemdeck.engine.commands import MAX_BUFFER_ID
from stemdeck.errors import MediaError, UsageError
from stemdeck.threads import thread

log = logging.getLogger("stemdeck.media")

PROGRESS_INTERVAL = 0.2        # seconds between bar updates on a terminal
LOG_INTERVAL = 5.0             # seconds between progress lines in a log
BAR_WIDTH = 24


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--preload`` (repeatable) to a ``stemdeck serve`` parser."""
    parser.add_argument(
        "--preload", action="append", default=[], metavar="DIR|LIST.txt",
        help="load audio files at start-up in the background (repeatable): every audio file under "
             "DIR into the cache (then /load_buffer or /cue them by path, instantly), or each line "
             "'id path [name]' of LIST.txt into its buffer ID; the server is ready before it "
             "finishes; preloads never evict and skip what does not fit in --cache-mb")


@dataclass(frozen=True)
class Item:
    path: str
    buffer_id: int | None = None
    name: str | None = None
    origin: str = ""             # "list.txt:3" or the folder it was found in


def read_sources(values: Iterable[str]) -> list[Item]:
    """The files ``--preload`` values name, in order, each once. Raises
    UsageError for a value that does not exist or a malformed list line."""
    from stemdeck.media.decode import AUDIO_SUFFIXES

    items: list[Item] = []
    seen_paths: set[str] = set()
    seen_ids: dict[int, str] = {}
    for value in values:
        value = os.path.expanduser(os.fspath(value))
        if os.path.isdir(value):
            found = _scan(value, AUDIO_SUFFIXES)
            if not found:
                log.warning("--preload %s: no audio files in that folder", value)
            for path in found:
                if path not in seen_paths:
                    seen_paths.add(path)
                    items.append(Item(path, origin=value))
        elif os.path.isfile(value):
            if os.path.splitext(value)[1].lower() in AUDIO_SUFFIXES:
                if value not in seen_paths:
                    seen_paths.add(value)
                    items.append(Item(value, origin="--preload"))
            else:
                for item in _read_list(value):
                    if item.buffer_id in seen_ids:
                        raise UsageError(f"--preload {item.origin}: buffer ID {item.buffer_id} is "
                                         f"already given at {seen_ids[item.buffer_id]}")
                    seen_ids[item.buffer_id] = item.origin
                    items.append(item)
        elif os.path.exists(value):
            raise UsageError(f"--preload {value}: not a folder, list or audio file")
        else:
            raise UsageError(f"--preload {value}: no such file or folder")
    return items


def _scan(folder: str, suffixes) -> list[str]:
    out = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            if not f.startswith(".") and os.path.splitext(f)[1].lower() in suffixes:
                out.append(os.path.join(root, f))
    return out


def _read_list(path: str) -> list[Item]:
    base = os.path.dirname(os.path.abspath(path))
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except UnicodeDecodeError:
        raise UsageError(f"--preload {path}: not a text list (expected lines 'id path [name]'); "
                         "give a folder, a list file or an audio file") from None
    except OSError as exc:
        raise UsageError(f"--preload {path}: cannot read it ({exc.strerror or exc})") from None
    items = []
    for n, line in enumerate(lines, 1):
        where = f"{path}:{n}"
        try:
            words = shlex.split(line, comments=True)
        except ValueError as exc:
            raise UsageError(f"--preload {where}: {exc} (quote paths with spaces: "
                             "100 \"my song.wav\" name)") from None
        if not words:
            continue
        if len(words) < 2:
            raise UsageError(f"--preload {where}: expected 'id path [name]', got {line.strip()!r}")
        try:
            buffer_id = int(words[0])
        except ValueError:
            raise UsageError(f"--preload {where}: buffer ID {words[0]!r} is not a whole number") from None
        if not 0 <= buffer_id <= MAX_BUFFER_ID:
            raise UsageError(f"--preload {where}: buffer ID {buffer_id} out of range "
                             f"0..{MAX_BUFFER_ID}")
        file = os.path.expanduser(words[1])
        if not os.path.isabs(file):
            file = os.path.join(base, file)
        name = " ".join(words[2:]) or None
        items.append(Item(file, buffer_id, name, where))
    return items


class Preload:
    """One preload run. ``controller``: the live Controller, whose loader is a
    :class:`~stemdeck.media.loader.MediaLoader`. ``out``: where the progress
    goes (a text stream; a terminal gets a redrawn bar, anything else a line
    every few seconds). ``progress``: force the bar on or off."""

    def __init__(self, controller, items: list[Item], *, out=None, progress: bool | None = None,
                 on_done: Callable[["Preload"], None] | None = None):
        self.controller = controller
        self.loader = controller.loader
        if not hasattr(self.loader, "preloading"):
            raise TypeError("preloading needs the Controller's loader to be a media.loader.MediaLoader")
        self.items = items
        self.out = out if out is not None else sys.stderr
        self.bar = progress if progress is not None else bool(getattr(self.out, "isatty", lambda: False)())
        self.on_done = on_done
        self.done = threading.Event()
        self.started = time.monotonic()
        self.finished_at: float | None = None
        self._futures: list[tuple[Item, object]] = []
        self._sizes: dict[str, int] = {}
        self._results: dict[int, tuple[str, int, str]] = {}   # index -> (outcome, bytes, kind)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # -- control thread --------------------------------------------------------------------
    def start(self) -> "Preload":
        loader, sr = self.loader, self.controller.sample_rate
        if loader.cache.budget == 0 and any(i.buffer_id is None for i in self.items):
            log.warning("--preload with --cache-mb 0: files without a buffer ID are not kept "
                        "(give a list file with IDs, or a cache size)")
        for item in self.items:
            if item.buffer_id is None:
                self._futures.append((item, loader.fetch(item.path, sr)))
                continue
            args = [item.buffer_id, item.path] + ([item.name] if item.name else [])
            with loader.preloading() as made:
                replies = self.controller.handle("/load_buffer", args)
            if made:
                self._futures.append((item, made[0][1]))
            elif replies and replies[0][0] == "/fail":     # refused before loading (media root)
                self._futures.append((item, _failed(replies[0][1][-1])))
            else:                                          # the same file as another ID: no new load
                self._futures.append((item, _done_already(self.controller, item.buffer_id)))
        for index, (item, future) in enumerate(self._futures):
            future.add_done_callback(lambda f, i=index: self._finished(i, f))
        self._thread = thread(self._progress, "sd-preload")
        self._thread.start()
        return self

    # -- loader threads ------------------------------------------------------------------------
    def _finished(self, index: int, future) -> None:
        from stemdeck.media.sample_cache import BudgetFull

        item = self._futures[index][0]
        exc = future.exception()
        if exc is None:
            data = future.result()
            entry = self.loader.cache.peek(self.loader.key(item.path))
            kind = entry.kind if entry is not None else "decoded"
            outcome, nbytes = "ready", int(getattr(data, "nbytes", 0))
            if item.buffer_id is None:
                self.loader.release_sample(self.loader.key(item.path))   # cached, unused
        elif isinstance(exc, BudgetFull):
            outcome, nbytes, kind = "skipped", 0, ""
            log.info("preload: skipped %s: %s", item.path, exc)
        else:
            outcome, nbytes, kind = "failed", 0, ""
            if item.buffer_id is None:          # list entries fail through /load_buffer's reply
                log.warning("preload: %s", exc)
        with self._lock:
            self._results[index] = (outcome, nbytes, kind)
            complete = len(self._results) == len(self._futures)
        if complete and not self.done.is_set():
            self.finished_at = time.monotonic()
            self.done.set()

    # -- progress -----------------------------------------------------------------------------------
    def _progress(self) -> None:
        for item, _ in self._futures:
            try:
                self._sizes[item.path] = os.path.getsize(item.path)
            except OSError:
                self._sizes[item.path] = 0
        last_line = 0.0
        while not self.done.wait(PROGRESS_INTERVAL if self.bar else 0.5):
            now = time.monotonic()
            if self.bar:
                self._write("\r" + self.progress_line() + "\x1b[K")
            elif now - last_line >= LOG_INTERVAL:
                last_line = now
                log.info("%s", self.progress_line())
        if self.bar:
            self._write("\r\x1b[K")
        log.info("%s", self.summary())
        if self.on_done is not None:
            self.on_done(self)

    def _write(self, text: str) -> None:
        try:
            self.out.write(text)
            self.out.flush()
        except (OSError, ValueError):
            self.bar = False

    def counts(self) -> dict:
        with self._lock:
            results = list(self._results.values())
        out = {"files": len(self._futures), "done": len(results), "ready": 0, "failed": 0, "skipped": 0,
               "mapped_bytes": 0, "memory_bytes": 0}
        for outcome, nbytes, kind in results:
            out[outcome] += 1
            out["mapped_bytes" if kind == "mapped" else "memory_bytes"] += nbytes
        return out

    def progress_line(self) -> str:
        with self._lock:
            done_paths = [self._futures[i][0].path for i in self._results]
        total = sum(self._sizes.values()) or 1
        done = sum(self._sizes.get(p, 0) for p in done_paths)
        frac = min(1.0, done / total)
        fill = int(round(frac * BAR_WIDTH))
        c = self.counts()
        return (f"preload [{'#' * fill}{'.' * (BAR_WIDTH - fill)}] {c['done']}/{c['files']} files, "
                f"{done / 1e6:.0f}/{total / 1e6:.0f} MB, {time.monotonic() - self.started:.1f} s")

    def summary(self) -> str:
        c = self.counts()
        took = (self.finished_at or time.monotonic()) - self.started
        text = (f"preload: {c['ready']} of {c['files']} files ready in {took:.1f} s "
                f"({c['mapped_bytes'] / 1e6:.0f} MB memory-mapped, {c['memory_bytes'] / 1e6:.0f} MB "
                f"in memory)")
        if c["failed"]:
            text += f"; {c['failed']} failed (each reason is logged)"
        if c["skipped"]:
            text += f"; {c['skipped']} skipped: the memory budget (--cache-mb) is full"
        return text

    def wait(self, timeout: float | None = None) -> bool:
        return self.done.wait(timeout)


def start_preload(controller, values: Iterable[str] | list[Item], *, out=None,
                  progress: bool | None = None, on_done=None) -> Preload | None:
    """Read the ``--preload`` values and start loading them (control thread,
    after the audio started; returns at once). None when there is nothing to
    preload. Raises UsageError for a missing folder or a bad list line (call
    :func:`read_sources` before start-up to fail early)."""
    values = list(values or ())
    if not values:
        return None
    items = values if isinstance(values[0], Item) else read_sources(values)
    if not items:
        return None
    log.info("preload: %d files", len(items))
    return Preload(controller, items, out=out, progress=progress, on_done=on_done).start()


def _failed(reason: str):
    from concurrent.futures import Future

    f = Future()
    f.set_exception(MediaError(reason))
    return f


def _done_already(controller, buffer_id: int):
    from concurrent.futures import Future

    f = Future()
    buf = controller.buffers.get(buffer_id)
    if buf is not None and buf.state == "ready" and buf.slot is not None:
        f.set_result(controller.engine.sample_of(buf.slot))
    else:
        f.set_exception(MediaError(f"buffer {buffer_id}: not loaded"))
    return f
