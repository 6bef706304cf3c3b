"""Which files are refused, and why: the checks before libsndfile opens a file, what its first bytes say it is, the messages.

Holds :func:`probe` (what a file is, without decoding it) and the refusal
rules every loader shares: :func:`preflight` (a readable, non-empty regular
file, and its type sniffed), :func:`open_failure` and :func:`no_frames` (the
message once libsndfile has looked), and the WAV header fields the messages
and the downmix need (:class:`WavInfo`). :mod:`stemdeck.media.decode` and
:mod:`stemdeck.media.loader` use them, so a file is refused with the same
words whichever lane sees it first.

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

(``corrupt audio data: PATH ...``, damage further in, is found while decoding.)

Threads: any but the audio thread (it reads the file's first bytes).
"""

from __future__ import annotations

import functools
import os
import shlex
import stat
import struct
from dataclasses import dataclass

from stemdeck.errors import MediaError
from stemdeck.media import riff

_HEAD_BYTES = 4096           # enough to tell every format we name


def probe(path: str | os.PathLike):
    """What ``path`` holds, without decoding it: soundfile's info object
    (``samplerate``, ``channels``, ``frames``, ``duration``, ``format``,
    ``subtype``, ...). Refuses exactly what
    :func:`~stemdeck.media.decode.load_audio` would refuse
    at open time (everything but corrupt data further in), with the same
    messages."""
    import soundfile as sf

    shown = os.fspath(path)
    kind, wav = preflight(shown)
    try:
        with sf.SoundFile(shown) as sfile:
            if sfile.frames <= 0:
                raise no_frames(shown, sfile, wav)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise open_failure(shown, kind, wav, exc) from None
    return sf.info(shown)


# -- checks before libsndfile sees the file --------------------------------------------

@dataclass(frozen=True)
class Kind:
    """What a file's first bytes say it is."""

    label: str            # for people: "WAV", "FLAC", "AAC in an MP4 container", ...
    audio: bool = True    # False: a known non-audio type (image, archive, text)
    decodable: bool = True  # False: audio that this libsndfile cannot decode
    hint: str = ""        # what to do, for unsupported or non-audio types


@dataclass(frozen=True)
class WavInfo:
    """The few RIFF/RF64 header fields the messages and downmix need."""

    tag: int | None = None          # fmt format tag (subformat tag for EXTENSIBLE)
    channels: int = 0
    block_align: int = 0
    channel_mask: int = 0           # WAVE_FORMAT_EXTENSIBLE speaker mask, 0: none
    data_offset: int | None = None
    data_size: int | None = None    # as declared in the header



def preflight(shown: str) -> tuple[Kind | None, WavInfo | None]:
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
def libsndfile_can() -> dict[str, bool]:
    import soundfile as sf

    formats = sf.available_formats()
    ogg = sf.available_subtypes("OGG") if "OGG" in formats else {}
    return {"MP3": "MP3" in formats, "VORBIS": "VORBIS" in ogg, "OPUS": "OPUS" in ogg,
            "FLAC": "FLAC" in formats}


def _sniff(head: bytes, fh) -> Kind | None:
    """Name the file type from its first bytes; None when nothing matches.

    libsndfile decides what it can open; this only lets a refusal say what
    the file is (so "song.m4a is AAC in an MP4 container" instead of
    libsndfile's "Format not recognised")."""
    can = libsndfile_can()
    b4, form = head[:4], head[8:12]
    if b4 in (b"RIFF", b"RIFX", b"RF64", b"BW64") and (form == b"WAVE" or len(head) < 12):
        return Kind("WAV" if b4 != b"RF64" else "WAV (RF64)")
    if b4 == b"RIFF" and form == b"AVI ":
        return Kind("an AVI video", decodable=False,
                     hint="extract its audio to WAV (for example: ffmpeg -i {} -vn out.wav)")
    if b4 == b"riff" and head[4:8] == b"\x2e\x91\xcf\x11":
        return Kind("Wave64")
    if b4 == b"FORM" and (form in (b"AIFF", b"AIFC") or len(head) < 12):
        return Kind("AIFF")
    if b4 == b"FORM" and form == b"8SVX":
        return Kind("IFF 8SVX")
    if b4 == b"fLaC":
        return Kind("FLAC", decodable=can["FLAC"], hint=_CONVERT)
    if b4 == b"OggS":
        return _sniff_ogg(head, can)
    if b4 == b"caff":
        return Kind("CAF")
    if b4 == b".snd":
        return Kind("AU")
    if head[:3] == b"ID3":
        return _sniff_after_id3(head, fh, can)
    mpeg = _sniff_mpeg(head, can)
    if mpeg is not None:
        return mpeg
    for magic, kind in _OTHER_MAGIC:
        if head.startswith(magic):
            return kind
    if head[4:8] == b"ftyp":
        return Kind("an MP4/M4A file (AAC or ALAC audio, or video)", decodable=False, hint=_CONVERT)
    if _looks_like_text(head):
        return Kind("text", audio=False,
                     hint="it holds text; stemdeck plays WAV, AIFF, FLAC, OGG and MP3 files")
    return None


def _sniff_ogg(head: bytes, can) -> Kind:
    if b"OpusHead" in head:
        return Kind("Ogg Opus", decodable=can["OPUS"],
                     hint="this libsndfile has no Opus decoder; " + _CONVERT)
    if b"\x01vorbis" in head:
        return Kind("Ogg Vorbis", decodable=can["VORBIS"],
                     hint="this libsndfile has no Vorbis decoder; " + _CONVERT)
    if b"\x7fFLAC" in head:
        return Kind("FLAC in an Ogg container", decodable=False, hint=_CONVERT)
    if b"Speex   " in head:
        return Kind("Ogg Speex", decodable=False, hint=_CONVERT)
    if b"\x80theora" in head:
        return Kind("an Ogg Theora video", decodable=False, hint=_CONVERT)
    # too short to tell (a truncated file) or an unusual stream: let libsndfile try
    return Kind("OGG")


def _sniff_mpeg(head: bytes, can) -> Kind | None:
    if len(head) < 2 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return None
    if head[1] & 0xF6 == 0xF0:   # ADTS: sync, layer bits 00
        return Kind("AAC (ADTS)", decodable=False, hint=_CONVERT)
    if head[1] & 0x06 == 0:      # reserved layer: not MPEG audio
        return None
    return Kind("MP3", decodable=can["MP3"],
                 hint="this libsndfile (older than 1.1) cannot decode MP3; " + _CONVERT)


def _sniff_after_id3(head: bytes, fh, can) -> Kind:
    """An ID3v2 tag can precede MP3, AAC or even FLAC data: look past it."""
    if len(head) >= 10:
        size = 10 + ((head[6] & 0x7F) << 21 | (head[7] & 0x7F) << 14 |
                     (head[8] & 0x7F) << 7 | (head[9] & 0x7F))
        if head[5] & 0x10:
            size += 10   # footer
        fh.seek(size)
        inner = fh.read(4)
        if inner == b"fLaC":
            return Kind("FLAC", decodable=can["FLAC"], hint=_CONVERT)
        mpeg = _sniff_mpeg(inner, can)
        if mpeg is not None:
            return mpeg
    return Kind("MP3", decodable=can["MP3"],
                 hint="this libsndfile (older than 1.1) cannot decode MP3; " + _CONVERT)


_OTHER_MAGIC = (
    (b"\x30\x26\xb2\x75\x8e\x66\xcf\x11", Kind("a WMA/ASF file", decodable=False, hint=_CONVERT)),
    (b"\x1a\x45\xdf\xa3", Kind("a Matroska/WebM file", decodable=False, hint=_CONVERT)),
    (b"MAC ", Kind("Monkey's Audio (APE)", decodable=False, hint=_CONVERT)),
    (b"wvpk", Kind("WavPack", decodable=False, hint=_CONVERT)),
    (b"TTA1", Kind("TTA", decodable=False, hint=_CONVERT)),
    (b"#!AMR", Kind("AMR", decodable=False, hint=_CONVERT)),
    (b"DSD ", Kind("DSD (DSF)", decodable=False, hint=_CONVERT)),
    (b"FRM8", Kind("DSD (DFF)", decodable=False, hint=_CONVERT)),
    (b"MThd", Kind("MIDI", audio=False,
                    hint="a MIDI file holds notes, not sound; "
                         "render it to WAV with a synthesizer first")),
    (b"%PDF", Kind("PDF", audio=False, hint="it is a PDF document")),
    (b"\x89PNG", Kind("PNG", audio=False, hint="it is a PNG image")),
    (b"\xff\xd8\xff", Kind("JPEG", audio=False, hint="it is a JPEG image")),
    (b"GIF8", Kind("GIF", audio=False, hint="it is a GIF image")),
    (b"PK\x03\x04", Kind("ZIP", audio=False, hint="it is a ZIP archive; unpack it first")),
    (b"\x1f\x8b", Kind("gzip", audio=False, hint="it is gzip-compressed; unpack it first")),
    (b"\x7fELF", Kind("ELF", audio=False, hint="it is a program")),
    (b"NIST_1A", Kind("NIST SPHERE")),        # text header, binary samples: not "text"
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


def _read_wav_header(fh, head: bytes) -> WavInfo:
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
    return WavInfo(**info)


# -- failures once libsndfile has looked ----------------------------------------------------

def open_failure(shown: str, kind: Kind | None, wav: WavInfo | None, exc: Exception) -> MediaError:
    detail = libsndfile_words(exc)
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


def libsndfile_words(exc: Exception) -> str:
    words = getattr(exc, "error_string", None) or str(exc)
    return f"libsndfile: {words.strip()}"


def no_frames(shown: str, sfile, wav: WavInfo | None) -> MediaError:
    declared = _declared_frames(wav)
    if declared:
        secs = declared / sfile.samplerate
        return MediaError(f"no audio in file (0 frames): {shown}; its header promises "
                          f"{clock(secs)} of audio but the file ends before any of it "
                          "(a truncated copy?)")
    return MediaError(f"no audio in file (0 frames): {shown} has a valid {sfile.format} "
                      "header but no samples")


def _declared_frames(wav: WavInfo | None) -> int:
    if wav is None or not wav.data_size or not wav.block_align:
        return 0
    if wav.data_size in (0xFFFFFFFF, 0x7FFFFFFF):   # streaming writers' "unknown"
        return 0
    return wav.data_size // wav.block_align


def truncation_note(shown: str, sfile, wav: WavInfo) -> str | None:
    declared = _declared_frames(wav)
    if wav.tag not in (1, 3) or declared <= sfile.frames:
        return None
    return short_file_note(shown, sfile.frames, declared, sfile.samplerate)


def short_file_note(shown: str, present: int, declared: int, rate: int) -> str:
    """The warning for a file that holds fewer frames than its header declares."""
    return (f"{shown} is shorter than its header says: {clock(present / rate)} of "
            f"{clock(declared / rate)} present (a truncated copy?); playing what is there")


def clock(seconds: float) -> str:
    """``M:SS.mmm``, how every message shows a time in a file."""
    m, s = divmod(seconds, 60.0)
    return f"{int(m)}:{s:06.3f}"


def _quote(path: str) -> str:
    return shlex.quote(path)

