"""Decode audio files into the engine's sample format: read in blocks, repair float data, downmix, resample.

Holds :func:`load_audio` / :func:`load_audio_with_notes` (a whole file as
float32 stereo at the engine's sample rate). Which files are refused, and
with what words, is :mod:`stemdeck.media.refusals` (also :func:`probe`,
what a file is without decoding it).

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

Refusals raise :class:`~stemdeck.errors.MediaError` (the list is in
:mod:`stemdeck.media.refusals`); damage found while decoding is::

    corrupt audio data: PATH cannot be decoded past M:SS.mmm of M:SS.mmm ...
"""

from __future__ import annotations

import math
import operator
import os
from typing import TYPE_CHECKING, NamedTuple

from stemdeck.errors import MediaError
from stemdeck.media.refusals import (Kind, WavInfo, clock, libsndfile_words, no_frames,
                                     open_failure, preflight, truncation_note)
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
_RSQRT2 = 1.0 / math.sqrt(2.0)


class DecodedAudio(NamedTuple):
    """What :func:`load_audio_with_notes` returns (unpacks as ``audio, notes``)."""

    audio: "np.ndarray"   # (frames, 2) float32, C-contiguous, at the requested rate
    notes: list[str]      # warnings for a person: downmix, level change, repairs


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
    kind, wav = preflight(shown)
    try:
        sfile = sf.SoundFile(shown)
    except (RuntimeError, TypeError, ValueError) as exc:   # LibsndfileError is a RuntimeError
        raise open_failure(shown, kind, wav, exc) from None
    with sfile:
        notes: list[str] = []
        if sfile.frames <= 0:
            raise no_frames(shown, sfile, wav)
        if wav is not None:
            note = truncation_note(shown, sfile, wav)
            if note:
                notes.append(note)
        audio = _decode(sfile, rate, shown, kind, wav, notes)
    if audio.shape[0] == 0:   # a compressed file whose header promised frames it did not hold
        raise MediaError(f"no audio in file (0 frames): {shown} decodes to nothing; "
                         "copy or export the file again")
    return DecodedAudio(audio, notes)


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


# -- decoding -----------------------------------------------------------------------------------

def _decode(sfile, rate: int, shown: str, kind: Kind | None, wav: WavInfo | None,
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
                f"corrupt audio data: {shown} cannot be decoded past {clock(at / src_rate)} of "
                f"{clock(sfile.frames / src_rate)}; copy or export the file again "
                f"({libsndfile_words(exc)})") from None
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


def _downmix_matrix(channels: int, kind: Kind | None, wav: WavInfo | None):
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
