"""``--record FILE.wav``: the master output, written to disk by a writer thread.

Holds :class:`Recorder`. The audio callback copies each block into the
engine's preallocated lock-free record ring (about 6 s deep) and never
waits: when the ring is full the block is dropped and counted
(``record_dropped_frames``). This module's writer thread is the ring's one
consumer: it drains it every 50 ms and appends to the file with soundfile.
A dropped block is reported (at most every few seconds) and leaves a gap in
the file, which the closing summary states.

Recording starts when :meth:`Recorder.start` is called; started before the
output starts, frame ``i`` of the file is engine frame ``i`` (the engine's
clock only advances when it renders, so device losses do not shift it).

Files: ``.wav`` is 32-bit float WAV, written as RF64 that libsndfile turns
back into a plain WAV on close when it is under 4 GB (so a recording longer
than about 3.4 hours is still one valid file); ``.flac`` is 24-bit FLAC.

Threads: :meth:`~Recorder.start` / :meth:`~Recorder.stop` on the control
thread, after the engine exists and (for ``stop``) after the output stopped.
"""

from __future__ import annotations

import logging
import os
import threading
import time

import numpy as np

from stemdeck.errors import UsageError

log = logging.getLogger("stemdeck.audio")

DRAIN_SECONDS = 0.05
CHUNK_FRAMES = 1 << 15
WARN_EVERY = 5.0
SFC_RF64_AUTO_DOWNGRADE = 0x1210      # libsndfile: RF64 becomes WAV on close when it fits

FORMATS = {".wav": ("RF64", "FLOAT"), ".wave": ("RF64", "FLOAT"), ".flac": ("FLAC", "PCM_24")}


def check_path(path) -> str:
    """Validate a --record path; returns it as a string. Raises UsageError."""
    text = os.fspath(path)
    ext = os.path.splitext(text)[1].lower()
    if ext not in FORMATS:
        raise UsageError(f"--record {text!r}: name the file .wav (32-bit float) or .flac (24-bit)")
    folder = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(folder):
        raise UsageError(f"--record {text!r}: the folder {folder} does not exist")
    if os.path.isdir(text):
        raise UsageError(f"--record {text!r} is a folder: give a file name, e.g. "
                         f"{os.path.join(text, 'mix.wav')}")
    return text


class Recorder:
    """Drains the engine's record ring into ``path`` on its own thread."""

    def __init__(self, engine, path, sample_rate: int):
        self.engine = engine
        self.path = check_path(path)
        self.sample_rate = int(sample_rate)
        self.frames_written = 0
        self.error: str | None = None
        self._file = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._buffer = np.zeros((CHUNK_FRAMES, 2), np.float32)
        self._reported_drops = 0
        self._last_warning = -WARN_EVERY

    def start(self) -> None:
        """Open the file (UsageError if it cannot be created) and start recording."""
        import soundfile as sf

        fmt, subtype = FORMATS[os.path.splitext(self.path)[1].lower()]
        try:
            self._file = sf.SoundFile(self.path, "w", samplerate=self.sample_rate, channels=2,
                                      format=fmt, subtype=subtype)
        except (sf.LibsndfileError, OSError, RuntimeError) as exc:
            raise UsageError(f"--record {self.path!r}: cannot create the file: {exc}") from None
        if fmt == "RF64":
            try:
                sf._snd.sf_command(self._file._file, SFC_RF64_AUTO_DOWNGRADE, sf._ffi.NULL, 1)
            except Exception:       # an RF64 file is still a valid recording
                pass
        self.engine.set_recording(True)
        self._thread = threading.Thread(target=self._run, name="stemdeck-recorder", daemon=True)
        self._thread.start()

    def stop(self) -> dict:
        """Stop recording, write what is left in the ring, close the file."""
        self.engine.set_recording(False)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
        if self._file is not None:
            try:
                self._drain()
            finally:
                self._file.close()
                self._file = None
        return self.stats()

    @property
    def dropped_frames(self) -> int:
        return int(self.engine.stats()["record_dropped_frames"])

    def stats(self) -> dict:
        return {
            "path": self.path,
            "frames": self.frames_written,
            "seconds": self.frames_written / self.sample_rate,
            "dropped_frames": self.dropped_frames,
            "error": self.error,
        }

    def summary(self) -> str:
        st = self.stats()
        text = f"recorded {st['seconds']:.2f} s ({st['frames']} frames) to {self.path}"
        if st["dropped_frames"]:
            text += (f"; {st['dropped_frames']} frames ({st['dropped_frames'] / self.sample_rate:.2f} s) "
                     "were lost because the disk could not keep up: the file has gaps")
        if st["error"]:
            text += f"; writing failed: {st['error']}"
        return text

    # -- writer thread ------------------------------------------------------------------------
    def _drain(self) -> None:
        while self._file is not None and self.error is None:
            n = self.engine.drain_recording(self._buffer)
            if n == 0:
                return
            try:
                self._file.write(self._buffer[:n])
            except Exception as exc:        # disk full, file gone: keep serving, say so
                self.error = str(exc)
                log.error("recording to %s failed: %s; the server goes on without it", self.path, exc)
                self.engine.set_recording(False)
                return
            self.frames_written += n
            if n < len(self._buffer):
                return

    def _run(self) -> None:
        while not self._stop.wait(DRAIN_SECONDS):
            self._drain()
            dropped = self.dropped_frames
            now = time.monotonic()
            if dropped > self._reported_drops and now - self._last_warning >= WARN_EVERY:
                new = dropped - self._reported_drops
                log.warning("recording: %d frames (%.2f s) dropped because the disk could not keep up "
                            "(%d in total); the file has gaps", new, new / self.sample_rate, dropped)
                self._reported_drops = dropped
                self._last_warning = now
