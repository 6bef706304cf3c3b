"""``--record FILE.wav``: the master output, written to disk by a writer thread.

Holds :class:`Recorder`. The audio callback copies each block into the
engine's preallocated lock-free record ring (about 6 s deep) and never
waits: when the ring is full the block is dropped and counted
(``record_dropped_frames``). This module's writer thread is the ring's one
consumer: it drains it every 50 ms and appends to the file.
A dropped block is reported (at most every few seconds) and leaves a gap in
the file, which the closing summary states.

Recording starts when :meth:`Recorder.start` is called; started before the
output starts, frame ``i`` of the file is engine frame ``i`` (the engine's
clock only advances when it renders, so device losses do not shift it).

Files: ``.wav`` is 32-bit float WAV written here with ``os.write`` (one
80-byte header whose sizes are rewritten every second and at the end, so
the file is valid up to the last second even if the process is killed; its
JUNK chunk becomes ``ds64`` past 4 GB, making it RF64, so a recording
longer than about 3.4 hours is still one valid file); ``.flac`` is 24-bit
FLAC through libsndfile, which writes through :class:`_FdSink` so a
failure keeps its errno (libsndfile itself only says "System error.").

A write that fails (disk full, quota, permission, file size limit,
read-only or failing disk) stops the recording, never the server: the WAV
is cut back to the last whole frame and its header rewritten to what was
written, one error line names the cause (errno and text) and the path, and
:meth:`Recorder.stats` (``/status.json`` "recording") says ``failed``.

Threads: :meth:`~Recorder.start` / :meth:`~Recorder.stop` on the control
thread, after the engine exists and (for ``stop``) after the output stopped;
:meth:`~Recorder.stats` from any thread.
"""

from __future__ import annotations

import errno
import logging
import os
import struct
import threading
import time

import numpy as np

from stemdeck.errors import UsageError
from stemdeck.threads import thread

log = logging.getLogger("stemdeck.audio")

DRAIN_SECONDS = 0.05
HEADER_SECONDS = 1.0          # the WAV header's sizes are rewritten this often
CHUNK_FRAMES = 1 << 15
WARN_EVERY = 5.0
CHANNELS = 2
FRAME_BYTES = 4 * CHANNELS    # float32 stereo

FORMATS = {".wav": "WAV", ".wave": "WAV", ".flac": "FLAC"}

#: What a failed write means to the person running the server, by errno.
CAUSES = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EFBIG: "file size limit reached (ulimit -f, systemd's LimitFSIZE, or 4 GB on FAT32)",
    errno.EROFS: "the file system became read-only",
    errno.EIO: "I/O error (the disk failed or was removed)",
}


def describe_os_error(exc: OSError) -> str:
    """``disk full: ENOSPC, No space left on device``: the cause, then errno's name and text."""
    code = exc.errno
    name = errno.errorcode.get(code, f"errno {code}") if code is not None else "no errno"
    text = exc.strerror or str(exc)
    cause = CAUSES.get(code)
    return f"{cause}: {name}, {text}" if cause else f"{name}, {text}"


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


def _write_all(fd: int, data) -> int:
    """Write everything or raise OSError; ``exc.written`` says how many bytes got out first."""
    view = memoryview(data).cast("B")
    done = 0
    while done < len(view):
        try:
            done += os.write(fd, view[done:])
        except InterruptedError:
            continue
        except OSError as exc:
            exc.written = done
            raise
    return done


# -- the files -------------------------------------------------------------------------------------

class _WavFile:
    """32-bit float stereo WAV (RF64 past 4 GB) written with os.write; sizes patched in place."""

    HEADER = 80                     # RIFF 12 + JUNK/ds64 36 + fmt 24 + data 8

    def __init__(self, path: str, sample_rate: int):
        self.rate = sample_rate
        self.frames = 0             # whole frames in the file
        self.header_frames = 0      # frames the header on disk says
        self._tail = 0              # bytes of a frame cut by a failed write
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o666)
        try:
            _write_all(self.fd, self._header(0))
        except OSError:
            os.close(self.fd)
            raise

    def _header(self, frames: int) -> bytes:
        data = frames * FRAME_BYTES
        riff = self.HEADER - 8 + data
        fmt = struct.pack("<4sIHHIIHH", b"fmt ", 16, 3, CHANNELS, self.rate,
                          self.rate * FRAME_BYTES, FRAME_BYTES, 32)
        if riff <= 0xFFFFFFFF:
            return (struct.pack("<4sI4s4sI", b"RIFF", riff, b"WAVE", b"JUNK", 28) + bytes(28)
                    + fmt + struct.pack("<4sI", b"data", data))
        return (struct.pack("<4sI4s4sIQQQI", b"RF64", 0xFFFFFFFF, b"WAVE", b"ds64", 28, riff, data,
                            frames, 0) + fmt + struct.pack("<4sI", b"data", 0xFFFFFFFF))

    def write(self, block: np.ndarray) -> None:
        try:
            _write_all(self.fd, np.ascontiguousarray(block, "<f4"))
        except OSError as exc:
            self.frames += exc.written // FRAME_BYTES
            self._tail = exc.written % FRAME_BYTES
            raise
        self.frames += len(block)

    def sync_header(self) -> None:
        if self.header_frames != self.frames:
            os.pwrite(self.fd, self._header(self.frames), 0)
            self.header_frames = self.frames

    def close(self) -> str | None:
        """Cut a partial frame, write the sizes, close. Returns what could not be done, or None."""
        problem = None
        try:
            if self._tail:
                os.ftruncate(self.fd, self.HEADER + self.frames * FRAME_BYTES)
                self._tail = 0
            self.sync_header()
        except OSError as exc:
            problem = f"its header could not be updated ({describe_os_error(exc)})"
        finally:
            os.close(self.fd)
        return problem


class _FdSink:
    """A file object for libsndfile's virtual I/O that keeps the OSError of a failed write."""

    def __init__(self, fd: int):
        self.fd = fd
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return _write_all(self.fd, data)
        except OSError as exc:
            self.error = self.error or exc
            return exc.written

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return os.lseek(self.fd, offset, whence)

    def tell(self) -> int:
        return os.lseek(self.fd, 0, os.SEEK_CUR)

    def read(self, size: int) -> bytes:
        return os.read(self.fd, size)


class _FlacFile:
    """24-bit FLAC through soundfile; a failed write raises the sink's OSError."""

    def __init__(self, path: str, sample_rate: int):
        import soundfile as sf

        self.frames = 0
        self.header_frames = 0
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o666)
        self._sink = _FdSink(self.fd)
        try:
            self._sf = sf.SoundFile(self._sink, "w", samplerate=sample_rate, channels=CHANNELS,
                                    format="FLAC", subtype="PCM_24")
        except Exception as exc:
            os.close(self.fd)
            raise self._sink.error or OSError(errno.EIO, str(exc)) from None

    def write(self, block: np.ndarray) -> None:
        try:
            self._sf.write(block)
        except Exception as exc:            # libsndfile's error or soundfile's short-write assert
            raise self._sink.error or OSError(errno.EIO, str(exc) or type(exc).__name__) from None
        if self._sink.error is not None:
            raise self._sink.error
        self.frames += len(block)
        self.header_frames = self.frames

    def sync_header(self) -> None:
        pass                                # libFLAC writes STREAMINFO on close

    def close(self) -> str | None:
        self._sink.error = None
        try:
            self._sf.close()
        except Exception as exc:
            return f"the encoder could not finish ({self._sink.error or exc})"
        finally:
            os.close(self.fd)
        return None


# -- the recorder ------------------------------------------------------------------------------------

class Recorder:
    """Drains the engine's record ring into ``path`` on its own thread."""

    def __init__(self, engine, path, sample_rate: int):
        self.engine = engine
        self.path = check_path(path)
        self.sample_rate = int(sample_rate)
        self.state = "idle"         # recording | stopped | failed
        self.error: str | None = None
        self.errno: str | None = None
        self._file = None
        self._frames = 0            # frames the file holds (kept after it is closed)
        self._stop = threading.Event()
        self._lock = threading.Lock()       # the writer thread and stop() both drain
        self._thread: threading.Thread | None = None
        self._buffer = np.zeros((CHUNK_FRAMES, CHANNELS), np.float32)
        self._reported_drops = 0
        self._last_warning = -WARN_EVERY

    def start(self) -> None:
        """Create the file (UsageError if it cannot be created) and start recording."""
        kind = _WavFile if FORMATS[os.path.splitext(self.path)[1].lower()] == "WAV" else _FlacFile
        try:
            self._file = kind(self.path, self.sample_rate)
        except OSError as exc:
            raise UsageError(f"--record {self.path!r}: cannot create the file: "
                             f"{describe_os_error(exc)}") from None
        self.state = "recording"
        self.engine.set_recording(True)
        self._thread = thread(self._run, "sd-recorder")
        self._thread.start()

    def stop(self) -> dict:
        """Stop recording, write what is left in the ring, close the file."""
        self.engine.set_recording(False)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
        with self._lock:
            if self._file is not None:
                self._drain()
                if self._file is not None:
                    problem = self._close()
                    if problem:
                        log.error("recording to %s: %s", self.path, problem)
                    self.state = "stopped"
        return self.stats()

    @property
    def frames_written(self) -> int:
        file = self._file           # the writer thread may close it meanwhile
        return file.frames if file is not None else self._frames

    @property
    def dropped_frames(self) -> int:
        return int(self.engine.stats()["record_dropped_frames"])

    def stats(self) -> dict:
        """The recording's state for ``/status.json``: state (recording, stopped,
        failed), path, frames and seconds in the file, dropped frames, error."""
        frames = self.frames_written
        return {
            "state": self.state,
            "path": self.path,
            "frames": frames,
            "seconds": round(frames / self.sample_rate, 3),
            "dropped_frames": self.dropped_frames,
            "error": self.error,
            "errno": self.errno,
        }

    def summary(self) -> str:
        st = self.stats()
        text = f"recorded {st['seconds']:.2f} s ({st['frames']} frames) to {self.path}"
        if st["dropped_frames"]:
            text += (f"; {st['dropped_frames']} frames ({st['dropped_frames'] / self.sample_rate:.2f} s) "
                     "were lost because the disk could not keep up: the file has gaps")
        if st["error"]:
            text += f"; the recording failed: {st['error']}"
        return text

    # -- writer thread ------------------------------------------------------------------------
    def _close(self) -> str | None:
        problem = self._file.close()
        self._frames = self._file.header_frames
        self._file = None
        return problem

    def _drain(self) -> None:
        while self._file is not None:
            n = self.engine.drain_recording(self._buffer)
            if n == 0:
                return
            try:
                self._file.write(self._buffer[:n])
            except OSError as exc:          # disk full, permission, ...: keep serving, say so
                self._fail(exc)
                return
            if n < len(self._buffer):
                return

    def _fail(self, exc: OSError) -> None:
        self.engine.set_recording(False)
        cause = describe_os_error(exc)
        problem = self._close()
        seconds = self._frames / self.sample_rate
        kept = (f"{problem}: players see its first {seconds:.2f} s ({self._frames} frames)" if problem
                else f"it holds the first {seconds:.2f} s ({self._frames} frames)")
        self.error = f"{cause} (writing {self.path})" + (f"; {problem}" if problem else "")
        self.errno = errno.errorcode.get(exc.errno) if exc.errno is not None else None
        self.state = "failed"
        log.error("recording to %s stopped: %s; %s; the audio goes on", self.path, cause, kept)

    def _run(self) -> None:
        last_header = time.monotonic()
        while not self._stop.wait(DRAIN_SECONDS):
            with self._lock:
                self._drain()
                now = time.monotonic()
                if self._file is not None and now - last_header >= HEADER_SECONDS:
                    last_header = now
                    try:
                        self._file.sync_header()
                    except OSError as exc:
                        self._fail(exc)
            if self._file is None:
                return
            dropped = self.dropped_frames
            if dropped > self._reported_drops and now - self._last_warning >= WARN_EVERY:
                new = dropped - self._reported_drops
                log.warning("recording: %d frames (%.2f s) dropped because the disk could not keep up "
                            "(%d in total); the file has gaps", new, new / self.sample_rate, dropped)
                self._reported_drops = dropped
                self._last_warning = now
