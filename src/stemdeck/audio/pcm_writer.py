"""The render's file writer: float blocks to WAV or FLAC on its own thread (``sd-writer``), converted in compiled code.

``stemdeck render`` fills preallocated float chunks and hands them over;
this module's thread converts each to the output's sample format, measures
its peak, and writes it, while the next chunk renders. The queue between
them is bounded (:data:`DEPTH` chunks, allocated once): a renderer faster
than the disk waits for a free chunk instead of growing memory.

Bit-identical to libsndfile's own conversion (what ``soundfile`` wrote
before this module existed): libsndfile is still the file writer, with its
headers, sizes and chunks; only the samples arrive as raw bytes
(``sf_write_raw``). Its float -> PCM rule, with clipping on as soundfile
sets it (libsndfile ``pcm.c``, ``f2les_clip_array`` / ``f2let_clip_array``):
scale by 2**31 in float32; at or above 2**31 - 1 the top code, at or below
-2**31 the bottom one; else round to nearest, ties to even (``lrintf``),
and keep the top 16 or 24 bits (an arithmetic shift: it floors). NaN gives
the bottom code (what ``lrintf`` gives on x86); the engine's output is
clamped to [-1, 1] without NaN anyway. FLOAT WAVs are the float32 bytes;
FLAC goes through libsndfile's encoder from the float samples as before.

Threads: :class:`PcmWriter` is made, fed and closed by one thread (the
render's); its own thread only converts and writes.
"""

from __future__ import annotations

import errno
import os
import queue
import sys

import numpy as np
from numba import njit

from stemdeck.engine import kernel_cache  # noqa: F401  (before the kernel compiles: where it is cached)
from stemdeck.threads import thread

CHANNELS = 2
CHUNK_FRAMES = 1 << 15      # frames per hand-over: the queue's cost is per chunk, not per block
DEPTH = 4                   # chunks in flight: the writer can fall this far behind the render
WIDTHS = {"PCM_16": 2, "PCM_24": 3, "FLOAT": 4}     # bytes per sample in a WAV
SFC_SET_ADD_PEAK_CHUNK = 0x1050   # libsndfile: float WAVs get a PEAK chunk with a timestamp

_SCALE = np.float32(2.0 ** 31)
_TOP = np.float32(2147483520.0)        # the largest float32 below 2**31: its top 24 (16) bits are the top code
_BOTTOM = np.float32(-2147483648.0)


@njit(nogil=True, cache=True, error_model="numpy")
def encode(block, out, width):
    """Write ``block`` ((n, 2) float32, C-contiguous) into ``out`` (uint8) as
    little-endian ``width``-byte PCM (2 or 3; 0 writes nothing) by libsndfile's
    clipping rule; returns the largest absolute sample (NaN ignored)."""
    flat = block.reshape(-1)
    peak = np.float32(0.0)
    for j in range(flat.shape[0]):
        a = abs(flat[j])
        peak = a if a > peak else peak
    if width == 0:
        return float(peak)
    k = 0
    for j in range(flat.shape[0]):
        s = flat[j] * _SCALE                    # exact: a power of two
        s = _TOP if s > _TOP else s             # 2**31 - 1 and above: the top code
        s = _BOTTOM if not s > _BOTTOM else s   # -2**31 and below, and NaN (lrintf's on x86): the bottom one
        v = np.int32(np.rint(s))                # ties to even, as lrintf; then the top bits (a floor)
        if width == 3:
            out[k] = (v >> 8) & 0xFF
            out[k + 1] = (v >> 16) & 0xFF
            out[k + 2] = (v >> 24) & 0xFF
            k += 3
        else:
            out[k] = (v >> 16) & 0xFF
            out[k + 1] = (v >> 24) & 0xFF
            k += 2
    return float(peak)


def no_peak_chunk(sink) -> None:
    """libsndfile stamps float WAVs with the wall-clock time (a PEAK chunk):
    switch it off, so the same score gives the same bytes."""
    try:
        import soundfile as sf

        sf._snd.sf_command(sf._ffi.cast("SNDFILE *", sink._file), SFC_SET_ADD_PEAK_CHUNK,
                           sf._ffi.NULL, 0)
    except Exception:  # a soundfile without these internals: still a correct file
        pass


class _Stop:
    """Put on the queue after the last chunk."""


class PcmWriter:
    """Writes stereo float chunks to ``path`` (``fmt`` WAV or FLAC, ``subtype``
    PCM_16, PCM_24 or FLOAT) on the ``sd-writer`` thread.

    Use: ``chunk = w.take()``; fill ``chunk[:n]``; ``w.put(chunk, n)``; ...;
    ``w.close()`` (returns the peak) or ``w.abort()``. A write that failed
    raises its OSError from the next ``take``, ``put`` or ``close``."""

    def __init__(self, path: str, sample_rate: int, fmt: str, subtype: str, *,
                 chunk_frames: int = CHUNK_FRAMES, depth: int = DEPTH):
        import soundfile as sf

        self.chunk_frames = int(chunk_frames)
        self.frames = 0                      # frames handed over
        self.peak = 0.0
        self.busy = 0.0                      # seconds the thread spent converting and writing
        self.error: OSError | None = None
        self._sf = sf.SoundFile(path, "w", samplerate=sample_rate, channels=CHANNELS, format=fmt,
                                subtype=subtype)
        no_peak_chunk(self._sf)
        self._raw = getattr(sf._snd, "sf_write_raw", None) if fmt == "WAV" else None
        self._ffi = sf._ffi
        self._width = WIDTHS[subtype] if self._raw is not None else 0
        # float32 chunks are written as they are: only on a little-endian host
        if self._width == 4 and sys.byteorder != "little":
            self._raw, self._width = None, 0
        self._bytes = np.empty(self.chunk_frames * CHANNELS * max(self._width, 1), np.uint8)
        self._free: queue.Queue = queue.Queue()
        self._full: queue.Queue = queue.Queue()
        for _ in range(depth):
            self._free.put(np.zeros((self.chunk_frames, CHANNELS), np.float32))
        self._closed = False
        self._thread = thread(self._run, "sd-writer")
        self._thread.start()

    # -- the render's side -------------------------------------------------------------------
    def take(self) -> np.ndarray:
        """A free (chunk_frames, 2) float32 chunk; waits while the writer is behind."""
        chunk = self._free.get()
        self._check()
        return chunk

    def put(self, chunk: np.ndarray, frames: int) -> None:
        """Hand over the first ``frames`` frames of ``chunk`` (from :meth:`take`)."""
        self._check()
        self.frames += frames
        self._full.put((chunk, frames))

    def close(self) -> float:
        """Write what is queued, finish the file; returns the peak (largest |sample|)."""
        self._finish()
        self._closed = True
        self._sf.close()
        self._check()
        return self.peak

    def abort(self) -> None:
        """Stop writing and close the file as it is (the caller deletes it)."""
        if self._closed:
            return
        self.error = self.error or OSError(errno.ECANCELED, "render stopped")
        self._finish()
        self._closed = True
        try:
            self._sf.close()
        except Exception:
            pass

    def _finish(self) -> None:
        self._full.put(_Stop)
        self._thread.join()

    def _check(self) -> None:
        if self.error is not None and not (self._closed and self.error.errno == errno.ECANCELED):
            raise self.error

    # -- the writer thread --------------------------------------------------------------------
    def _run(self) -> None:
        import time

        while True:
            item = self._full.get()
            if item is _Stop:
                return
            chunk, n = item
            if self.error is None:
                t = time.perf_counter()
                try:
                    self._write(chunk[:n])
                except OSError as exc:
                    self.error = exc
                except Exception as exc:     # libsndfile's own refusal: keep its words
                    self.error = OSError(errno.EIO, str(exc) or type(exc).__name__)
                self.busy += time.perf_counter() - t
            self._free.put(chunk)            # after an error too: the render must not wait forever

    def _write(self, block: np.ndarray) -> None:
        peak = encode(block, self._bytes, self._width if self._width != 4 else 0)
        self.peak = max(self.peak, peak)
        if self._raw is None:
            self._sf.write(block)
            return
        data = block if self._width == 4 else self._bytes
        nbytes = len(block) * CHANNELS * self._width
        done = self._raw(self._sf._file, self._ffi.from_buffer(data), nbytes)
        if done != nbytes:
            code = self._ffi.errno or errno.EIO
            raise OSError(code, os.strerror(code))
