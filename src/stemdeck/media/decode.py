"""Decode audio files into the engine's sample format, or refuse them with a reason.

Holds :func:`load_audio` / :func:`load_audio_with_notes` (a whole file as
float32 stereo at the engine's sample rate) and :func:`probe` (what a file
is, without decoding it), plus the refusal rules every loader shares.

Threads: the loader thread (or a CLI command, a test, a tool). Decoding
reads the whole file and can take seconds, so it never runs on the audio
thread and should not run on the control (OSC) thread either; the control
thread hands paths to the loader and answers at once.

What comes out (:func:`load_audio`): a C-contiguous ``(frames, 2)``
float32 array at the requested rate, full scale = 1.0.

- Integer PCM is scaled by libsndfile (16-bit ``x / 32768`` and so on).
- Other sample rates are resampled with soxr at very high quality (VHQ).
- Mono plays the same signal on both channels, at the same level.
- More than two channels are downmixed to stereo with ITU-R BS.775
  coefficients (centre and surrounds at -3 dB, LFE dropped). The layout
  comes from a WAVE_FORMAT_EXTENSIBLE channel mask when the file has one,
  else from the usual order for the channel count (WAV/FLAC/AIFF: L R C LFE
  Ls Rs ...; Ogg: the Vorbis order L C R Ls Rs LFE ...). If the downmix
  would exceed full scale, the whole file is lowered just enough not to.
  This is reported as a note.
- Float files: NaN/inf samples become silence, and values beyond +-64 (a
  damaged file, not music) are clipped, since either would poison the
  engine's filters. Both are reported as notes.

Notes are strings a person should see (log them as warnings): downmixes,
level changes, repaired samples, a WAV file shorter than its header says.

Refusals raise :class:`~stemdeck.errors.MediaError`. The message starts with
the reason, then the path as given, then what to do, then libsndfile's own
words in parentheses when they add anything::

    no such file: PATH
    a directory, not an audio file: PATH
    not a regular file (device, pipe or socket): PATH
    cannot read (permission denied): PATH
    empty file (0 bytes): PATH
    not an audio file: PATH (...)
    truncated or corrupt header: PATH ...
    unsupported format: PATH ...
    no audio in file (0 frames): PATH ...
    corrupt audio data: PATH ...
"""

from __future__ import annotations

import functools
import math
import operator
import os
import shlex
import stat
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from stemdeck.errors import MediaError
from stemdeck.media import riff
from stemdeck.media.riff import FLOAT_LIMIT

if TYPE_CHECKING:  # numpy is imported lazily: the CLI imports this module for --help
    import numpy as np

# File name suffixes a directory scan (preload) should offer to the loader.
# The loader still decides by content, never by name.
AUDIO_SUFFIXES = frozenset({
    ".wav", ".wave", ".bwf", ".rf64", ".w64", ".aif", ".aiff", ".aifc", ".flac",
    ".ogg", ".oga", ".opus", ".mp3", ".caf", ".au", ".snd",
})

RESAMPLE_QUALITY = "VHQ"
BLOCK_FRAMES = 1 << 16       # decode in blocks: memory stays ~ the output size
_HEAD_BYTES = 4096           # enough to tell every format we name
_RSQRT2 = 1.0 / math.sqrt(2.0)


class DecodedAudio(NamedTuple):
    """What :func:`load_audio_with_notes` returns (unpacks as ``audio, notes``)."""

    audio: "np.ndarray"   # (frames, 2) float32, C-contiguous, at the requested rate
    notes: list[str]      # warnings for a person: downmix, level change, repairs


# -- public API -----------------------------------------------------------------------

def load_audio(path: str | os.PathLike, sample_rate: int) -> "np.ndarray":
    """Decode ``path`` to a C-contiguous ``(frames, 2)`` float32 array at
    ``sample_rate``. Raises :class:`MediaError` for a file that cannot be
    used. Warnings (see :func:`load_audio_with_notes`) are dropped: call that
    function instead when a person should see them."""
    return load_audio_with_notes(path, sample_rate).audio


def load_audio_with_notes(path: str | os.PathLike, sample_rate: int) -> DecodedAudio:
    """Decode ``path`` like :func:`load_audio`; also return the notes (warnings
    for a person: downmix, level change, repaired samples, truncation)."""
    import soundfile as sf

    rate = _check_rate(sample_rate)
    shown = os.fspath(path)
    kind, wav = _preflight(shown)
    try:
        sfile = sf.SoundFile(shown)
    except (RuntimeError, TypeError, ValueError) as exc:   # LibsndfileError is a RuntimeError
        raise _open_failure(shown, kind, wav, exc) from None
    with sfile:
        notes: list[str] = []
        if sfile.frames <= 0:
            raise _no_frames(shown, sfile, wav)
        if wav is not None:
            note = _truncation_note(shown, sfile, wav)
            if note:
                notes.append(note)
        audio = _decode(sfile, rate, shown, kind, wav, notes)
    if audio.shape[0] == 0:   # a compressed file whose header promised frames it did not hold
        raise MediaError(f"no audio in file (0 frames): {shown} decodes to nothing; "
                         "copy or export the file again")
    return DecodedAudio(audio, notes)


def probe(path: str | os.PathLike):
    """What ``path`` holds, without decoding it: soundfile's info object
    (``samplerate``, ``channels``, ``frames``, ``duration``, ``format``,
    ``subtype``, ...). Refuses exactly what :func:`load_audio` would refuse
    at open time (everything but corrupt data further in), with the same
    messages."""
    import soundfile as sf

    shown = os.fspath(path)
    kind, wav = _preflight(shown)
    try:
        with sf.SoundFile(shown) as sfile:
            if sfile.frames <= 0:
                raise _no_frames(shown, sfile, wav)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise _open_failure(shown, kind, wav, exc) from None
    return sf.info(shown)


# -- checks before libsndfile sees the file --------------------------------------------

@dataclass(frozen=True)
class _Kind:
    """What a file's first bytes say it is."""

    label: str            # for people: "WAV", "FLAC", "AAC in an MP4 container", ...
    audio: bool = True    # False: a known non-audio type (image, archive, text)
    decodable: bool = True  # False: audio that this libsndfile cannot decode
    hint: str = ""        # what to do, for unsupported or non-audio types


@dataclass(frozen=True)
class _WavInfo:
    """The few RIFF/RF64 header fields the messages and downmix need."""

    tag: int | None = None          # fmt format tag (subformat tag for EXTENSIBLE)
    channels: int = 0
    block_align: int = 0
    channel_mask: int = 0           # WAVE_FORMAT_EXTENSIBLE speaker mask, 0: none
    data_offset: int | None = None
    data_size: int | None = None    # as declared in the header


def _check_rate(sample_rate) -> int:
    try:
        if isinstance(sample_rate, bool):
            raise TypeError
        rate = operator.index(sample_rate)
    except TypeError:
        raise ValueError(f"sample rate {sample_rate!r}: need an integer number of Hz") from None
    if not 8000 <= rate <= 768000:
        raise ValueError(f"sample rate {rate} Hz is out of range 8000..768000")
    return rate


def _preflight(shown: str) -> tuple[_Kind | None, _WavInfo | None]:
    """Refuse what is not a readable, non-empty regular file; sniff its type
    (which only explains a refusal later: libsndfile decides what it opens)."""
    try:
        st = os.stat(shown)
    except (FileNotFoundError, NotADirectoryError):
        raise MediaError(f"no such file: {shown}") from None
    except PermissionError:
        raise MediaError(f"cannot read (permission denied): {shown}; "
                         "check the permissions of the file and the folders above it") from None
    except OSError as exc:
        raise MediaError(f"cannot read: {shown} ({exc.strerror or exc})") from None
    if stat.S_ISDIR(st.st_mode):
        raise MediaError(f"a directory, not an audio file: {shown}")
    if not stat.S_ISREG(st.st_mode):
        # a FIFO would block the loader forever in open(); a device is never a song
        raise MediaError(f"not a regular file (device, pipe or socket): {shown}")
    try:
        with open(shown, "rb") as fh:
            head = fh.read(_HEAD_BYTES)
            if not head:
                raise MediaError(f"empty file (0 bytes): {shown}")
            kind = _sniff(head, fh)
            is_wav = kind is not None and kind.label.startswith("WAV")
            wav = _read_wav_header(fh, head) if is_wav else None
    except PermissionError:
        raise MediaError(f"cannot read (permission denied): {shown}; "
                         "check the permissions of the file and the folders above it") from None
    except IsADirectoryError:
        raise MediaError(f"a directory, not an audio file: {shown}") from None
    except OSError as exc:
        raise MediaError(f"cannot read: {shown} ({exc.strerror or exc})") from None
    return kind, wav


_CONVERT = "convert it to WAV or FLAC (for example: ffmpeg -i {} out.wav)"


@functools.lru_cache(maxsize=1)
def _libsndfile_can() -> dict[str, bool]:
    import soundfile as sf

    formats = sf.available_formats()
    ogg = sf.available_subtypes("OGG") if "OGG" in formats else {}
    return {"MP3": "MP3" in formats, "VORBIS": "VORBIS" in ogg, "OPUS": "OPUS" in ogg,
            "FLAC": "FLAC" in formats}


def _sniff(head: bytes, fh) -> _Kind | None:
    """Name the file type from its first bytes; None when nothing matches.

    libsndfile decides what it can open; this only lets a refusal say what
    the file is (so "song.m4a is AAC in an MP4 container" instead of
    libsndfile's "Format not recognised")."""
    can = _libsndfile_can()
    b4, form = head[:4], head[8:12]
    if b4 in (b"RIFF", b"RIFX", b"RF64", b"BW64") and (form == b"WAVE" or len(head) < 12):
        return _Kind("WAV" if b4 != b"RF64" else "WAV (RF64)")
    if b4 == b"RIFF" and form == b"AVI ":
        return _Kind("an AVI video", decodable=False,
                     hint="extract its audio to WAV (for example: ffmpeg -i {} -vn out.wav)")
    if b4 == b"riff" and head[4:8] == b"\x2e\x91\xcf\x11":
        return _Kind("Wave64")
    if b4 == b"FORM" and (form in (b"AIFF", b"AIFC") or len(head) < 12):
        return _Kind("AIFF")
    if b4 == b"FORM" and form == b"8SVX":
        return _Kind("IFF 8SVX")
    if b4 == b"fLaC":
        return _Kind("FLAC", decodable=can["FLAC"], hint=_CONVERT)
    if b4 == b"OggS":
        return _sniff_ogg(head, can)
    if b4 == b"caff":
        return _Kind("CAF")
    if b4 == b".snd":
        return _Kind("AU")
    if head[:3] == b"ID3":
        return _sniff_after_id3(head, fh, can)
    mpeg = _sniff_mpeg(head, can)
    if mpeg is not None:
        return mpeg
    for magic, kind in _OTHER_MAGIC:
        if head.startswith(magic):
            return kind
    if head[4:8] == b"ftyp":
        return _Kind("an MP4/M4A file (AAC or ALAC audio, or video)", decodable=False, hint=_CONVERT)
    if _looks_like_text(head):
        return _Kind("text", audio=False,
                     hint="it holds text; stemdeck plays WAV, AIFF, FLAC, OGG and MP3 files")
    return None


def _sniff_ogg(head: bytes, can) -> _Kind:
    if b"OpusHead" in head:
        return _Kind("Ogg Opus", decodable=can["OPUS"],
                     hint="this libsndfile has no Opus decoder; " + _CONVERT)
    if b"\x01vorbis" in head:
        return _Kind("Ogg Vorbis", decodable=can["VORBIS"],
                     hint="this libsndfile has no Vorbis decoder; " + _CONVERT)
    if b"\x7fFLAC" in head:
        return _Kind("FLAC in an Ogg container", decodable=False, hint=_CONVERT)
    if b"Speex   " in head:
        return _Kind("Ogg Speex", decodable=False, hint=_CONVERT)
    if b"\x80theora" in head:
        return _Kind("an Ogg Theora video", decodable=False, hint=_CONVERT)
    # too short to tell (a truncated file) or an unusual stream: let libsndfile try
    return _Kind("OGG")


def _sniff_mpeg(head: bytes, can) -> _Kind | None:
    if len(head) < 2 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return None
    if head[1] & 0xF6 == 0xF0:   # ADTS: sync, layer bits 00
        return _Kind("AAC (ADTS)", decodable=False, hint=_CONVERT)
    if head[1] & 0x06 == 0:      # reserved layer: not MPEG audio
        return None
    return _Kind("MP3", decodable=can["MP3"],
                 hint="this libsndfile (older than 1.1) cannot decode MP3; " + _CONVERT)


def _sniff_after_id3(head: bytes, fh, can) -> _Kind:
    """An ID3v2 tag can precede MP3, AAC or even FLAC data: look past it."""
    if len(head) >= 10:
        size = 10 + ((head[6] & 0x7F) << 21 | (head[7] & 0x7F) << 14 |
                     (head[8] & 0x7F) << 7 | (head[9] & 0x7F))
        if head[5] & 0x10:
            size += 10   # footer
        fh.seek(size)
        inner = fh.read(4)
        if inner == b"fLaC":
            return _Kind("FLAC", decodable=can["FLAC"], hint=_CONVERT)
        mpeg = _sniff_mpeg(inner, can)
        if mpeg is not None:
            return mpeg
    return _Kind("MP3", decodable=can["MP3"],
                 hint="this libsndfile (older than 1.1) cannot decode MP3; " + _CONVERT)


_OTHER_MAGIC = (
    (b"\x30\x26\xb2\x75\x8e\x66\xcf\x11", _Kind("a WMA/ASF file", decodable=False, hint=_CONVERT)),
    (b"\x1a\x45\xdf\xa3", _Kind("a Matroska/WebM file", decodable=False, hint=_CONVERT)),
    (b"MAC ", _Kind("Monkey's Audio (APE)", decodable=False, hint=_CONVERT)),
    (b"wvpk", _Kind("WavPack", decodable=False, hint=_CONVERT)),
    (b"TTA1", _Kind("TTA", decodable=False, hint=_CONVERT)),
    (b"#!AMR", _Kind("AMR", decodable=False, hint=_CONVERT)),
    (b"DSD ", _Kind("DSD (DSF)", decodable=False, hint=_CONVERT)),
    (b"FRM8", _Kind("DSD (DFF)", decodable=False, hint=_CONVERT)),
    (b"MThd", _Kind("MIDI", audio=False,
                    hint="a MIDI file holds notes, not sound; "
                         "render it to WAV with a synthesizer first")),
    (b"%PDF", _Kind("PDF", audio=False, hint="it is a PDF document")),
    (b"\x89PNG", _Kind("PNG", audio=False, hint="it is a PNG image")),
    (b"\xff\xd8\xff", _Kind("JPEG", audio=False, hint="it is a JPEG image")),
    (b"GIF8", _Kind("GIF", audio=False, hint="it is a GIF image")),
    (b"PK\x03\x04", _Kind("ZIP", audio=False, hint="it is a ZIP archive; unpack it first")),
    (b"\x1f\x8b", _Kind("gzip", audio=False, hint="it is gzip-compressed; unpack it first")),
    (b"\x7fELF", _Kind("ELF", audio=False, hint="it is a program")),
    (b"NIST_1A", _Kind("NIST SPHERE")),        # text header, binary samples: not "text"
)


def _looks_like_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    printable = sum(1 for c in head if c >= 0x20 or c in (0x09, 0x0A, 0x0D))
    return printable >= 0.95 * len(head)


# WAV format tags libsndfile decodes (wav.c / wavlike.c); anything else in a
# RIFF/WAVE file is refused as unsupported before libsndfile calls it "malformed".
_WAV_TAGS_DECODED = frozenset({0x0001, 0x0002, 0x0003, 0x0006, 0x0007, 0x0011, 0x0031,
                               0x0040, 0x0055, 0xFFFE})
_WAV_TAG_NAMES = {
    0x0050: "MPEG-1 Layer I/II", 0x0092: "Dolby AC-3 (S/PDIF)", 0x00FF: "AAC",
    0x0160: "WMA", 0x0161: "WMA", 0x0162: "WMA Pro", 0x0163: "WMA Lossless",
    0x1610: "AAC (HE)", 0x2000: "Dolby AC-3", 0x2001: "DTS", 0x674F: "Ogg Vorbis",
    0x6750: "Ogg Vorbis", 0xF1AC: "FLAC", 0x0022: "TrueSpeech", 0x0045: "G.726",
}


def _read_wav_header(fh, head: bytes) -> _WavInfo:
    """Walk the RIFF chunks for 'fmt ' and 'data'. Best effort: a header too
    damaged to walk gives what was found, and libsndfile has the last word."""
    order = ">" if head[:4] == b"RIFX" else "<"
    u16, u32 = order + "H", order + "I"
    info: dict = {}
    ds64_data = None
    try:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        for cid, csize, body_at in riff.chunks(fh, 12, size, order):
            if cid == b"ds64":
                ds64_data = riff.ds64_data_size(fh, csize, order)
            elif cid == b"fmt ":
                body = fh.read(min(csize, 40))
                if len(body) >= 16:
                    tag = struct.unpack(u16, body[0:2])[0]
                    info["channels"] = struct.unpack(u16, body[2:4])[0]
                    info["block_align"] = struct.unpack(u16, body[12:14])[0]
                    if tag == 0xFFFE and len(body) >= 40:
                        info["channel_mask"] = struct.unpack(u32, body[20:24])[0]
                        tag = struct.unpack(u16, body[24:26])[0]  # SubFormat GUID starts with the tag
                        if tag not in (1, 3, 6, 7):
                            tag = 0xFFFE  # ambisonic or other GUID: let libsndfile judge
                    info["tag"] = tag
            elif cid == b"data":
                info["data_offset"] = body_at
                info["data_size"] = ds64_data if (csize == riff.DS64_UNSET and ds64_data) else csize
                break
    except (OSError, struct.error):
        pass
    return _WavInfo(**info)


# -- failures once libsndfile has looked ----------------------------------------------------

def _open_failure(shown: str, kind: _Kind | None, wav: _WavInfo | None, exc: Exception) -> MediaError:
    detail = _libsndfile_words(exc)
    if kind is None:
        return MediaError(f"not an audio file: {shown} (no WAV, AIFF, FLAC, OGG or MP3 header found)")
    if not kind.audio:
        return MediaError(f"not an audio file: {shown} ({kind.hint})")
    if not kind.decodable:
        hint = kind.hint.format(_quote(shown))
        return MediaError(f"unsupported format: {shown} is {kind.label}; {hint}")
    if wav is not None and wav.tag is not None and wav.tag not in _WAV_TAGS_DECODED:
        name = _WAV_TAG_NAMES.get(wav.tag)
        name = f"{name} (format tag 0x{wav.tag:04X})" if name else f"format tag 0x{wav.tag:04X}"
        return MediaError(f"unsupported format: {shown} is a WAV file whose audio is encoded as "
                          f"{name}, which libsndfile cannot decode; convert it to PCM WAV or FLAC "
                          f"(for example: ffmpeg -i {_quote(shown)} -c:a pcm_s16le out.wav)")
    if wav is not None and wav.tag is None:
        why = "its format chunk is missing, damaged or cut off"
        return MediaError(f"truncated or corrupt header: {shown} looks like WAV but {why}; "
                          f"copy or export the file again ({detail})")
    return MediaError(f"truncated or corrupt header: {shown} looks like {kind.label} but its header "
                      f"cannot be read; copy or export the file again ({detail})")


def _libsndfile_words(exc: Exception) -> str:
    words = getattr(exc, "error_string", None) or str(exc)
    return f"libsndfile: {words.strip()}"


def _no_frames(shown: str, sfile, wav: _WavInfo | None) -> MediaError:
    declared = _declared_frames(wav)
    if declared:
        secs = declared / sfile.samplerate
        return MediaError(f"no audio in file (0 frames): {shown}; its header promises "
                          f"{_clock(secs)} of audio but the file ends before any of it "
                          "(a truncated copy?)")
    return MediaError(f"no audio in file (0 frames): {shown} has a valid {sfile.format} "
                      "header but no samples")


def _declared_frames(wav: _WavInfo | None) -> int:
    if wav is None or not wav.data_size or not wav.block_align:
        return 0
    if wav.data_size in (0xFFFFFFFF, 0x7FFFFFFF):   # streaming writers' "unknown"
        return 0
    return wav.data_size // wav.block_align


def _truncation_note(shown: str, sfile, wav: _WavInfo) -> str | None:
    declared = _declared_frames(wav)
    if wav.tag not in (1, 3) or declared <= sfile.frames:
        return None
    rate = sfile.samplerate
    return (f"{shown} is shorter than its header says: {_clock(sfile.frames / rate)} of "
            f"{_clock(declared / rate)} present (a truncated copy?); playing what is there")


def _clock(seconds: float) -> str:
    m, s = divmod(seconds, 60.0)
    return f"{int(m)}:{s:06.3f}"


def _quote(path: str) -> str:
    return shlex.quote(path)


# -- decoding -----------------------------------------------------------------------------------

def _decode(sfile, rate: int, shown: str, kind: _Kind | None, wav: _WavInfo | None,
            notes: list[str]) -> "np.ndarray":
    """Read in blocks; mix to stereo, repair float data and resample per block,
    so peak memory is about the output plus one block."""
    import numpy as np

    channels, src_rate = sfile.channels, sfile.samplerate
    matrix = None
    if channels > 2:
        layout, matrix = _downmix_matrix(channels, kind, wav)
    resampler = None
    expected = sfile.frames
    if src_rate != rate:
        import soxr

        resampler = soxr.ResampleStream(src_rate, rate, 2, dtype="float32", quality=RESAMPLE_QUALITY)
        expected = math.ceil(sfile.frames * rate / src_rate) + 2
    float_source = sfile.subtype in ("FLOAT", "DOUBLE")
    repaired_nonfinite = clipped = 0

    out = np.empty((max(expected, 1), 2), dtype=np.float32)
    block = np.empty((BLOCK_FRAMES, channels), dtype=np.float32)
    pos = read = 0
    while True:
        try:
            got = sfile.read(BLOCK_FRAMES, dtype="float32", always_2d=True, out=block)
        except RuntimeError as exc:
            at = _locate_decode_error(shown, read, BLOCK_FRAMES)
            raise MediaError(
                f"corrupt audio data: {shown} cannot be decoded past {_clock(at / src_rate)} of "
                f"{_clock(sfile.frames / src_rate)}; copy or export the file again "
                f"({_libsndfile_words(exc)})") from None
        n = got.shape[0]
        read += n
        last = n < BLOCK_FRAMES   # libsndfile only returns short at the end of the file
        if float_source and n:
            bad = ~np.isfinite(got)
            if bad.any():
                repaired_nonfinite += int(bad.sum())
                got[bad] = 0.0
            over = np.abs(got) > FLOAT_LIMIT
            if over.any():
                clipped += int(over.sum())
                np.clip(got, -FLOAT_LIMIT, FLOAT_LIMIT, out=got)
        if channels == 1:
            stereo = np.repeat(got, 2, axis=1)
        elif channels == 2:
            stereo = got
        else:
            stereo = got @ matrix
        if resampler is not None:
            stereo = resampler.resample_chunk(stereo, last=last)
        m = stereo.shape[0]
        if pos + m > out.shape[0]:   # a compressed file's frame count was an estimate
            out.resize((max(pos + m, out.shape[0] + out.shape[0] // 4), 2), refcheck=False)
        out[pos:pos + m] = stereo
        pos += m
        if last:
            break
    if pos != out.shape[0]:
        out.resize((pos, 2), refcheck=False)   # shrinks in place: no second copy

    if repaired_nonfinite:
        notes.append(f"{shown}: {repaired_nonfinite} NaN/infinite samples replaced by silence "
                     "(the file is damaged)")
    if clipped:
        notes.append(f"{shown}: {clipped} samples beyond +-{FLOAT_LIMIT:g} clipped "
                     "(the file is damaged)")
    if matrix is not None:
        note = (f"{shown}: downmixed {channels} channels ({layout}) to stereo "
                "(ITU-R BS.775: centre and surrounds at -3 dB, LFE dropped)")
        peak = float(np.abs(out).max()) if pos else 0.0
        if peak > 1.0:
            out *= np.float32(1.0 / peak)
            note += f"; lowered by {20 * math.log10(peak):.1f} dB so the downmix does not clip"
        notes.append(note)
    return out


def _locate_decode_error(shown: str, start: int, span: int) -> int:
    """The frame where decoding fails, to within a small block, for the message
    (only runs after a failure, so its second pass costs nothing normally)."""
    import soundfile as sf

    step = 1024
    pos = start
    try:
        with sf.SoundFile(shown) as f:
            if start:
                f.seek(start)
            while pos < start + span:
                got = f.read(step, dtype="float32", always_2d=True)
                pos += got.shape[0]
                if got.shape[0] < step:
                    break
    except (RuntimeError, OSError, ValueError):
        pass
    return pos


# Speaker -> (left gain, right gain): ITU-R BS.775 style, LFE dropped.
_SPEAKERS = {
    "FL": (1.0, 0.0), "FR": (0.0, 1.0), "FC": (_RSQRT2, _RSQRT2), "LFE": (0.0, 0.0),
    "BL": (_RSQRT2, 0.0), "BR": (0.0, _RSQRT2), "FLC": (_RSQRT2, 0.0), "FRC": (0.0, _RSQRT2),
    "BC": (0.5, 0.5), "SL": (_RSQRT2, 0.0), "SR": (0.0, _RSQRT2), "TC": (0.5, 0.5),
    "TFL": (_RSQRT2, 0.0), "TFC": (0.5, 0.5), "TFR": (0.0, _RSQRT2), "TBL": (_RSQRT2, 0.0),
    "TBC": (0.5, 0.5), "TBR": (0.0, _RSQRT2),
}
# WAVE_FORMAT_EXTENSIBLE dwChannelMask bit order
_MASK_ORDER = ("FL", "FR", "FC", "LFE", "BL", "BR", "FLC", "FRC", "BC", "SL", "SR", "TC",
               "TFL", "TFC", "TFR", "TBL", "TBC", "TBR")
# Default layouts by channel count: WAV/FLAC/AIFF order, and the Vorbis order Ogg uses.
_WAV_LAYOUTS = {
    3: ("L R C", ("FL", "FR", "FC")),
    4: ("quad: L R Ls Rs", ("FL", "FR", "BL", "BR")),
    5: ("5.0: L R C Ls Rs", ("FL", "FR", "FC", "BL", "BR")),
    6: ("5.1: L R C LFE Ls Rs", ("FL", "FR", "FC", "LFE", "BL", "BR")),
    7: ("6.1: L R C LFE Cs Ls Rs", ("FL", "FR", "FC", "LFE", "BC", "SL", "SR")),
    8: ("7.1: L R C LFE Lb Rb Ls Rs", ("FL", "FR", "FC", "LFE", "BL", "BR", "SL", "SR")),
}
_VORBIS_LAYOUTS = {
    3: ("L C R", ("FL", "FC", "FR")),
    4: ("quad: L R Ls Rs", ("FL", "FR", "BL", "BR")),
    5: ("5.0: L C R Ls Rs", ("FL", "FC", "FR", "BL", "BR")),
    6: ("5.1: L C R Ls Rs LFE", ("FL", "FC", "FR", "BL", "BR", "LFE")),
    7: ("6.1: L C R Ls Rs Cs LFE", ("FL", "FC", "FR", "SL", "SR", "BC", "LFE")),
    8: ("7.1: L C R Ls Rs Lb Rb LFE", ("FL", "FC", "FR", "SL", "SR", "BL", "BR", "LFE")),
}


def _downmix_matrix(channels: int, kind: _Kind | None, wav: _WavInfo | None):
    """(layout description, channels x 2 float32 matrix) for a stereo downmix."""
    import numpy as np

    speakers = None
    layout = ""
    mask = wav.channel_mask if wav is not None else 0
    if mask and bin(mask).count("1") == channels:
        speakers = [name for bit, name in enumerate(_MASK_ORDER) if mask >> bit & 1]
        layout = "channel mask: " + " ".join(speakers)
    else:
        table = _VORBIS_LAYOUTS if kind is not None and kind.label.startswith("Ogg") else _WAV_LAYOUTS
        if channels in table:
            layout, speakers = table[channels]
    if speakers is None:
        # no standard layout: odd channels left, even right, each side averaged
        matrix = np.zeros((channels, 2), dtype=np.float32)
        matrix[0::2, 0] = 1.0 / len(range(0, channels, 2))
        matrix[1::2, 1] = 1.0 / len(range(1, channels, 2))
        return "unknown layout: odd channels left, even right", matrix
    matrix = np.array([_SPEAKERS[s] for s in speakers], dtype=np.float32)
    return layout, matrix
