"""Memory-mapped PCM: play an uncompressed file from the page cache, in its stored format.

Holds :func:`read_layout` (where a WAV, RF64/BW64, Wave64 or AIFF/AIFF-C
file keeps its samples, read from its header), :func:`plan_load` (whether a
file can be mapped at the engine's rate, copied in its stored format, or
must be decoded, and why), :func:`map_samples` / :func:`copy_samples`
(the sample array the engine plays) and :func:`float_damage`.

Threads: the loader threads. Nothing here touches the engine.

What maps (``how == "map"``): little-endian 16-bit or 32-bit integer PCM,
or 32-bit float, one or two channels, at exactly the engine's sample rate,
with the data chunk aligned to the sample size (on a little-endian
machine). The array is a read-only view of the file (``np.int16``,
``np.int32`` or ``np.float32``, frames x channels); the kernel converts
integers to float as it reads, so the sample costs the file's size in page
cache and nothing else. Memory is unmapped when the last reference goes
(the cache's and the engine's, which it drops on ``EV_SLOT_RELEASED``).
Float files are mapped only after :func:`float_damage` finds no NaN,
infinite or absurdly large samples in them (the decoder repairs those).

What is copied (``how == "copy"``): the same integer formats stored
big-endian (plain AIFF) or at an unaligned offset: read into memory in
their stored width (16-bit stays 16-bit), byte-swapped.

Everything else is decoded (``how == "decode"``, see
:mod:`stemdeck.media.decode`): 8 and 24-bit PCM, 64-bit float, other sample
rates, more than two channels, compressed formats.
"""

from __future__ import annotations

import math
import os
import struct
import sys
from dataclasses import dataclass

from stemdeck.errors import MediaError
from stemdeck.media import riff
from stemdeck.media.riff import FLOAT_LIMIT
_SCAN_FRAMES = 1 << 18        # float check / copy block

_W64_RIFF = b"riff" + bytes.fromhex("2e91cf11a5d628db04c10000")
_W64_WAVE = b"wave" + bytes.fromhex("f3acd3118cd100c04f8edb8a")
_W64_FMT = b"fmt " + bytes.fromhex("f3acd3118cd100c04f8edb8a")
_W64_DATA = b"data" + bytes.fromhex("f3acd3118cd100c04f8edb8a")
_PCM_GUID_TAIL = bytes.fromhex("000000001000800000aa00389b71")   # KSDATAFORMAT_SUBTYPE_*


@dataclass(frozen=True)
class PcmLayout:
    """Where an uncompressed file keeps its samples and how they are stored."""

    container: str           # "WAV", "RF64", "Wave64", "AIFF", "AIFF-C"
    data_offset: int         # byte offset of the first sample
    data_bytes: int          # sample bytes present in the file (a truncated file: fewer than declared)
    declared_bytes: int      # what the header says (0: unknown, a streaming writer's placeholder)
    channels: int
    sample_rate: float
    bits: int                # container bits per sample (8, 16, 24, 32, 64)
    encoding: str            # "int" or "float"; "other" for anything else (A-law, ADPCM, ...)
    byteorder: str           # "<" little-endian, ">" big-endian

    @property
    def sample_bytes(self) -> int:
        return self.bits // 8

    @property
    def block_align(self) -> int:
        return self.channels * self.sample_bytes

    @property
    def frames(self) -> int:
        """Whole frames present in the file."""
        return self.data_bytes // self.block_align if self.block_align else 0

    @property
    def declared_frames(self) -> int:
        return self.declared_bytes // self.block_align if self.block_align else 0

    @property
    def dtype(self) -> str | None:
        """numpy dtype string of one stored sample, or None if not a plain PCM width."""
        kind = {"int": "i", "float": "f"}.get(self.encoding)
        if kind is None or self.bits not in (8, 16, 32, 64) or (kind == "f" and self.bits < 32):
            return None
        if self.bits == 8:
            return None      # 8-bit WAV is unsigned, AIFF signed: the decoder knows
        return f"{self.byteorder}{kind}{self.sample_bytes}"

    def describe(self) -> str:
        rate = f"{self.sample_rate:g} Hz"
        ch = {1: "mono", 2: "stereo"}.get(self.channels, f"{self.channels} channels")
        enc = f"{self.bits}-bit {'float' if self.encoding == 'float' else 'PCM'}"
        if self.encoding == "other":
            enc = "compressed"
        return f"{self.container} {enc} {ch} {rate}"


@dataclass(frozen=True)
class Plan:
    """How a file becomes a sample: ``map`` (instant), ``copy`` (read once,
    stored width), ``decode`` (read, convert to float32, maybe resample)."""

    how: str
    reason: str                      # for people: why it is not mapped ("" when mapped)
    layout: PcmLayout | None = None
    check_float: bool = False        # map only after a damage check

    @property
    def instant(self) -> bool:
        return self.how == "map" and not self.check_float


# -- headers -------------------------------------------------------------------------------------

def read_layout(path: str | os.PathLike) -> PcmLayout | None:
    """Parse the header of a WAV/RF64/BW64/Wave64/AIFF/AIFF-C file. None for
    anything else, or a header too damaged to walk (the decoder then has the
    last word and the refusal message)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(0)
            head = fh.read(64)
            if head[:4] in (b"RIFF", b"RF64", b"BW64") and head[8:12] == b"WAVE":
                return _wav_layout(fh, head, size)
            if head[:16] == _W64_RIFF and head[24:40] == _W64_WAVE:
                return _w64_layout(fh, size)
            if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
                return _aiff_layout(fh, head, size)
    except (OSError, struct.error, ValueError, OverflowError):
        return None
    return None


def _fmt_fields(body: bytes):
    """(encoding, bits, channels, rate) from a WAVEFORMAT(EX/EXTENSIBLE) body."""
    tag, channels, rate = struct.unpack("<HHI", body[0:8])
    bits = struct.unpack("<H", body[14:16])[0]
    if tag == 0xFFFE and len(body) >= 40 and body[26:40] == _PCM_GUID_TAIL:
        tag = struct.unpack("<H", body[24:26])[0]
    encoding = {1: "int", 3: "float"}.get(tag, "other")
    return encoding, bits, channels, rate


def _wav_layout(fh, head: bytes, size: int) -> PcmLayout | None:
    container = "WAV" if head[:4] == b"RIFF" else "RF64"
    ds64_data = None
    fmt = None
    for cid, csize, offset in riff.chunks(fh, 12, size):
        if cid == b"ds64":
            ds64_data = riff.ds64_data_size(fh, csize)
        elif cid == b"fmt ":
            body = fh.read(min(csize, 40))
            if len(body) < 16:
                return None
            fmt = _fmt_fields(body)
        elif cid == b"data":
            if fmt is None:
                return None
            declared = csize
            if csize == riff.DS64_UNSET and ds64_data is not None:
                declared = ds64_data
            elif csize in (0, riff.DS64_UNSET) or (container == "WAV" and csize == 0x7FFFFFFF):
                declared = 0                     # a streaming writer never filled it in
            return _layout(container, fmt, offset, declared, size)
    return None


def _w64_layout(fh, size: int) -> PcmLayout | None:
    fmt = None
    pos = 40
    for _ in range(riff.MAX_CHUNKS):
        if pos + 24 > size:
            return None
        fh.seek(pos)
        guid, csize = struct.unpack("<16sQ", fh.read(24))
        if csize < 24:
            return None
        if guid == _W64_FMT:
            body = fh.read(min(csize - 24, 40))
            if len(body) < 16:
                return None
            fmt = _fmt_fields(body)
        elif guid == _W64_DATA:
            if fmt is None:
                return None
            return _layout("Wave64", fmt, pos + 24, csize - 24, size)
        pos += (csize + 7) & ~7
    return None


def _extended(b: bytes) -> float:
    """An IEEE 754 80-bit extended float (AIFF's sample rate)."""
    exp = struct.unpack(">H", b[0:2])[0]
    mant = struct.unpack(">Q", b[2:10])[0]
    sign = -1.0 if exp & 0x8000 else 1.0
    exp &= 0x7FFF
    if exp == 0 and mant == 0:
        return 0.0
    return sign * math.ldexp(mant, exp - 16383 - 63)


def _aiff_layout(fh, head: bytes, size: int) -> PcmLayout | None:
    aifc = head[8:12] == b"AIFC"
    comm = None
    for cid, csize, body_at in riff.chunks(fh, 12, size, ">"):
        if cid == b"COMM":
            body = fh.read(min(csize, 64))
            if len(body) < 18:
                return None
            channels, frames, bits = struct.unpack(">HIH", body[0:8])
            rate = _extended(body[8:18])
            compression = body[18:22] if aifc and len(body) >= 22 else b"NONE"
            comm = (channels, frames, bits, rate, compression)
        elif cid == b"SSND":
            if comm is None:
                return None
            channels, frames, bits, rate, compression = comm
            data_off = struct.unpack(">I", fh.read(4))[0]
            offset = body_at + 8 + data_off
            container_bits = (bits + 7) // 8 * 8
            if compression in (b"NONE", b"twos", b"in24", b"in32"):
                encoding, order = "int", ">"
            elif compression in (b"sowt", b"42ni", b"23ni"):
                encoding, order = "int", "<"
            elif compression in (b"fl32", b"FL32"):
                encoding, order, container_bits = "float", ">", 32
            elif compression in (b"fl64", b"FL64"):
                encoding, order, container_bits = "float", ">", 64
            else:
                encoding, order = "other", ">"
            declared = frames * channels * (container_bits // 8)
            present = max(0, min(size, body_at + csize) - offset)
            return PcmLayout("AIFF-C" if aifc else "AIFF", offset, min(present, declared), declared,
                             channels, rate, container_bits, encoding, order)
    return None


def _layout(container, fmt, offset, declared, size) -> PcmLayout:
    encoding, bits, channels, rate = fmt
    present = max(0, size - offset)
    data = min(present, declared) if declared else present
    return PcmLayout(container, offset, data, declared, channels, float(rate), bits, encoding, "<")


# -- the plan ------------------------------------------------------------------------------------

def plan_load(path: str | os.PathLike, sample_rate: int) -> Plan:
    """Decide, from the header alone, how ``path`` becomes a sample at
    ``sample_rate``. Never refuses: a file this cannot read is planned for
    decoding, and the decoder refuses it with its reason."""
    layout = read_layout(path)
    if layout is None:
        return Plan("decode", "not an uncompressed WAV/AIFF/Wave64 file")
    if layout.encoding == "other":
        return Plan("decode", f"{layout.container} with compressed samples", layout)
    reasons = []
    if layout.sample_rate != sample_rate:
        reasons.append(f"{layout.sample_rate:g} Hz, resampled to {sample_rate} Hz")
    if not 1 <= layout.channels <= 2:
        reasons.append(f"{layout.channels} channels, downmixed to stereo")
    dtype = layout.dtype
    if dtype is None or dtype[1:] in ("f8", "i8"):
        reasons.append(f"{layout.bits}-bit {'float' if layout.encoding == 'float' else 'PCM'}, "
                       "converted to 32-bit float")
    if layout.frames < 1:
        reasons.append("no whole frame of audio")
    if reasons:
        return Plan("decode", "; ".join(reasons), layout)
    native = (layout.byteorder == "<") == (sys.byteorder == "little")
    aligned = layout.data_offset % layout.sample_bytes == 0
    if native and aligned:
        return Plan("map", "", layout, check_float=layout.encoding == "float")
    if layout.encoding == "float":
        return Plan("decode", "big-endian float, converted by the decoder", layout)
    why = "stored big-endian" if not native else "samples not aligned in the file"
    return Plan("copy", f"{why}: read into memory at {layout.bits} bits", layout)


# -- making the array ------------------------------------------------------------------------------

def map_samples(path: str | os.PathLike, layout: PcmLayout, frames: int | None = None, mm=None):
    """A read-only ``(frames, channels)`` view of the file's samples in their
    stored type. The mapping lives as long as the array (or a view of it).
    ``mm``: the file's mapping, if made already (the loader's is guarded
    against changes to the file, :mod:`stemdeck.media.guard`)."""
    import mmap

    import numpy as np

    n = layout.frames if frames is None else min(int(frames), layout.frames)
    if n < 1:
        raise MediaError(f"no audio in file (0 frames): {os.fspath(path)}")
    if mm is None:
        with open(path, "rb") as fh:
            mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    if len(mm) < layout.data_offset + n * layout.block_align:
        raise MediaError(f"changed while loading: {os.fspath(path)} is now shorter than its header says; "
                         "load it again once it is written")
    flat = np.frombuffer(mm, dtype=np.dtype(layout.dtype), count=n * layout.channels,
                         offset=layout.data_offset)
    return flat.reshape(n, layout.channels)


def copy_samples(path: str | os.PathLike, layout: PcmLayout, frames: int | None = None):
    """The file's samples read into memory in their stored width, native byte
    order, C-contiguous ``(frames, channels)``."""
    import numpy as np

    n = layout.frames if frames is None else min(int(frames), layout.frames)
    stored = np.dtype(layout.dtype)
    out = np.empty((n, layout.channels), dtype=stored.newbyteorder("="))
    flat = out.reshape(-1)
    step = _SCAN_FRAMES * layout.channels
    with open(path, "rb") as fh:
        fh.seek(layout.data_offset)
        pos = 0
        while pos < flat.size:
            k = min(step, flat.size - pos)
            raw = fh.read(k * stored.itemsize)
            got = len(raw) // stored.itemsize
            flat[pos:pos + got] = np.frombuffer(raw, dtype=stored, count=got)
            pos += got
            if got < k:
                raise MediaError(f"corrupt audio data: {os.fspath(path)} ends early while reading; "
                                 "copy or export the file again")
    return out


def float_damage(samples) -> tuple[int, int]:
    """(non-finite samples, samples beyond +-FLOAT_LIMIT) in a float array,
    counted block by block (reads the whole file once)."""
    import numpy as np

    bad = over = 0
    for start in range(0, samples.shape[0], _SCAN_FRAMES):
        block = samples[start:start + _SCAN_FRAMES]
        finite = np.isfinite(block)
        if not finite.all():
            bad += int(block.size - np.count_nonzero(finite))
            block = np.where(finite, block, 0)
        over += int(np.count_nonzero(np.abs(block) > FLOAT_LIMIT))
    return bad, over
