"""stemdeck.media.decode and .refusals: real files written with soundfile, samples measured."""

from __future__ import annotations

import builtins
import math
import os
import struct

import numpy as np
import pytest
import soundfile as sf

from stemdeck.errors import MediaError
from stemdeck.media import decode
from stemdeck.media.decode import load_audio, load_audio_with_notes
from stemdeck.media.refusals import probe
from signals import SR, amplitude, peak_hz, residual_db, stereo, wave


# -- helpers ------------------------------------------------------------------------

def check_shape(audio, frames=None):
    assert audio.dtype == np.float32
    assert audio.ndim == 2 and audio.shape[1] == 2
    assert audio.flags.c_contiguous
    if frames is not None:
        assert audio.shape[0] == frames


def refusal(path, sample_rate=SR) -> str:
    with pytest.raises(MediaError) as info:
        load_audio(path, sample_rate)
    message = str(info.value)
    # probe refuses the same files with the same words (zero frames included)
    with pytest.raises(MediaError) as pinfo:
        probe(path)
    assert str(pinfo.value) == message
    return message


# -- formats and sample formats -------------------------------------------------------------

@pytest.mark.parametrize("fmt, subtype, tol", [
    ("WAV", "PCM_16", 1.0 / 32768),
    ("WAV", "PCM_24", 1.0 / 2 ** 23),
    ("WAV", "PCM_32", 1e-7),
    ("WAV", "FLOAT", 0.0),
    ("WAV", "DOUBLE", 1e-7),
    ("AIFF", "PCM_16", 1.0 / 32768),
    ("AIFF", "PCM_24", 1.0 / 2 ** 23),
    ("FLAC", "PCM_16", 1.0 / 32768),
    ("FLAC", "PCM_24", 1.0 / 2 ** 23),
])
def test_lossless_formats_decode_to_the_written_samples(tmp_path, fmt, subtype, tol):
    data = stereo(wave(440, 1.0, 0.7), wave(660, 1.0, 0.3))
    path = tmp_path / f"x.{fmt.lower()}"
    sf.write(path, data, SR, format=fmt, subtype=subtype)
    audio = load_audio(path, SR)
    check_shape(audio, len(data))
    # quantisation to the stored format, nothing more (float32 adds ~6e-8)
    assert np.max(np.abs(audio - data)) <= tol + 1e-7
    # left is the left channel
    assert peak_hz(audio[:, 0]) == pytest.approx(440, abs=0.05)
    assert peak_hz(audio[:, 1]) == pytest.approx(660, abs=0.05)


def test_integer_pcm_full_scale_mapping(tmp_path):
    # 16-bit: x / 32768, so -32768 is exactly -1.0 and 16384 exactly 0.5
    values = np.array([[0, 1], [16384, -16384], [32767, -32768]], dtype=np.int16)
    path = tmp_path / "i16.wav"
    sf.write(path, values, SR, subtype="PCM_16")
    audio = load_audio(path, SR)
    expected = values.astype(np.float64) / 32768.0
    np.testing.assert_array_equal(audio, expected.astype(np.float32))
    # 24-bit: x / 2**23
    path24 = tmp_path / "i24.wav"
    v24 = np.array([[2 ** 22, -(2 ** 23)]], dtype=np.int32) * 256   # soundfile's int32 is left-justified
    sf.write(path24, v24, SR, subtype="PCM_24")
    np.testing.assert_array_equal(load_audio(path24, SR), np.array([[0.5, -1.0]], dtype=np.float32))


@pytest.mark.parametrize("fmt, subtype", [("OGG", "VORBIS"), ("OGG", "OPUS")])
def test_ogg(tmp_path, fmt, subtype):
    if subtype not in sf.available_subtypes("OGG"):
        pytest.skip(f"libsndfile has no {subtype}")
    rate = 48000 if subtype == "OPUS" else SR   # Opus only runs at 48 kHz (and below)
    data = stereo(wave(440, 2, 0.5, sr=rate), wave(660, 2, 0.25, sr=rate))
    path = tmp_path / "x.ogg"
    sf.write(path, data, rate, format=fmt, subtype=subtype)
    audio = load_audio(path, SR)
    check_shape(audio)
    assert abs(audio.shape[0] - 2 * SR) <= 2 * SR * 0.01
    mid = audio[SR // 4: SR // 4 + SR]  # 1 s away from codec start-up
    assert peak_hz(mid[:, 0]) == pytest.approx(440, abs=0.1)
    assert peak_hz(mid[:, 1]) == pytest.approx(660, abs=0.1)
    assert amplitude(mid[:, 0], 440) == pytest.approx(0.5, rel=0.06)
    assert amplitude(mid[:, 1], 660) == pytest.approx(0.25, rel=0.06)


def test_mp3(tmp_path):
    if "MP3" not in sf.available_formats():
        pytest.skip("libsndfile without MP3")
    data = stereo(wave(440, 2, 0.5), wave(660, 2, 0.25))
    path = tmp_path / "x.mp3"
    try:
        sf.write(path, data, SR, format="MP3", subtype="MPEG_LAYER_III")
    except (RuntimeError, TypeError, ValueError) as exc:
        pytest.skip(f"libsndfile cannot encode MP3 here: {exc}")
    audio = load_audio(path, SR)
    check_shape(audio)
    mid = audio[SR // 2: SR // 2 + SR]
    assert peak_hz(mid[:, 0]) == pytest.approx(440, abs=0.1)
    assert peak_hz(mid[:, 1]) == pytest.approx(660, abs=0.1)
    assert amplitude(mid[:, 0], 440) == pytest.approx(0.5, rel=0.06)


def test_probe_reports_the_file(tmp_path):
    path = tmp_path / "p.flac"
    sf.write(path, stereo(wave(100, 1.0, 0.5, sr=48000)), 48000, subtype="PCM_24")
    info = probe(path)
    assert (info.samplerate, info.channels, info.frames) == (48000, 2, 48000)
    assert (info.format, info.subtype) == ("FLAC", "PCM_24")


# -- channel conversions ----------------------------------------------------------------------

def test_mono_plays_on_both_channels_at_the_same_level(tmp_path):
    mono = wave(1000, 1.0, 0.6)
    path = tmp_path / "mono.wav"
    sf.write(path, mono, SR, subtype="FLOAT")
    audio, notes = load_audio_with_notes(path, SR)
    check_shape(audio, len(mono))
    np.testing.assert_array_equal(audio[:, 0], audio[:, 1])
    np.testing.assert_allclose(audio[:, 0], mono, atol=1e-7)
    assert notes == []


def test_six_channels_downmix_itu_with_a_note(tmp_path):
    # WAV 5.1 order: L R C LFE Ls Rs, one frequency per channel
    freqs = [200, 300, 500, 70, 1100, 1300]
    data = np.stack([wave(f, 1.0, 0.1) for f in freqs], axis=1)
    path = tmp_path / "six.wav"
    sf.write(path, data, SR, subtype="FLOAT")
    audio, notes = load_audio_with_notes(path, SR)
    check_shape(audio, SR)
    c = 1 / math.sqrt(2)
    expected = {200: (0.1, 0), 300: (0, 0.1), 500: (0.1 * c, 0.1 * c), 70: (0, 0),
                1100: (0.1 * c, 0), 1300: (0, 0.1 * c)}
    for f, (el, er) in expected.items():
        assert amplitude(audio[:, 0], f) == pytest.approx(el, abs=1e-5), f
        assert amplitude(audio[:, 1], f) == pytest.approx(er, abs=1e-5), f
    assert len(notes) == 1
    assert "downmixed 6 channels" in notes[0] and "LFE dropped" in notes[0]
    assert "six.wav" in notes[0]


def test_extensible_channel_mask_decides_the_layout(tmp_path):
    # three channels flagged FL FR LFE: the third is the LFE (dropped), not a centre
    data = np.stack([wave(f, 1.0, 0.2) for f in (200, 300, 500)], axis=1)
    path = tmp_path / "lfe.wav"
    sf.write(path, data, SR, format="WAV", subtype="FLOAT")
    plain = load_audio(path, SR)
    assert amplitude(plain[:, 0], 500) == pytest.approx(0.2 / math.sqrt(2), abs=1e-5)
    path_x = tmp_path / "lfe_x.wav"
    sf.write(path_x, data, SR, format="WAVEX", subtype="FLOAT")
    raw = bytearray(path_x.read_bytes())
    fmt = raw.index(b"fmt ")
    mask_at = fmt + 8 + 20
    raw[mask_at:mask_at + 4] = struct.pack("<I", 0x1 | 0x2 | 0x8)
    path_x.write_bytes(raw)
    audio, notes = load_audio_with_notes(path_x, SR)
    assert amplitude(audio[:, 0], 200) == pytest.approx(0.2, abs=1e-5)
    assert amplitude(audio[:, 1], 300) == pytest.approx(0.2, abs=1e-5)
    assert amplitude(audio[:, 0], 500) < 1e-6
    assert amplitude(audio[:, 1], 500) < 1e-6
    assert "FL FR LFE" in notes[0]


def test_loud_downmix_is_lowered_not_clipped(tmp_path):
    same = wave(440, 1.0, 0.9)
    data = np.stack([same] * 6, axis=1)          # L + C + Ls at 0.9 each: 2.17 peak
    path = tmp_path / "loud.wav"
    sf.write(path, data, SR, subtype="PCM_24")
    audio, notes = load_audio_with_notes(path, SR)
    assert np.max(np.abs(audio)) <= 1.0
    assert np.max(np.abs(audio)) > 0.999
    assert "lowered by" in notes[0] and "dB" in notes[0]


def test_many_channels_without_a_known_layout(tmp_path):
    data = np.stack([wave(100 * (i + 1), 1.0, 0.1) for i in range(10)], axis=1)
    path = tmp_path / "ten.wav"
    sf.write(path, data, SR, subtype="FLOAT")
    audio, notes = load_audio_with_notes(path, SR)
    check_shape(audio, SR)
    assert amplitude(audio[:, 0], 100) == pytest.approx(0.02, abs=1e-5)   # 1 of 5 on the left
    assert amplitude(audio[:, 1], 100) < 1e-6
    assert amplitude(audio[:, 1], 200) == pytest.approx(0.02, abs=1e-5)
    assert "unknown layout" in notes[0]


# -- sample-rate conversion ---------------------------------------------------------------------

def test_48k_resampled_to_44k1_keeps_pitch_level_and_purity(tmp_path):
    src = 48000
    data = stereo(wave(1000, 2, 0.5, sr=src), wave(3000, 2, 0.25, sr=src))
    path = tmp_path / "48k.wav"
    sf.write(path, data, src, subtype="FLOAT")
    audio, notes = load_audio_with_notes(path, SR)
    check_shape(audio)
    assert notes == []
    assert abs(audio.shape[0] - 2 * SR) <= 1
    mid = audio[SR // 4: SR // 4 + SR]       # away from the filter's edges
    assert peak_hz(mid[:, 0]) == pytest.approx(1000, abs=0.05)
    assert peak_hz(mid[:, 1]) == pytest.approx(3000, abs=0.05)
    assert amplitude(mid[:, 0], 1000) == pytest.approx(0.5, rel=1e-3)
    assert amplitude(mid[:, 1], 3000) == pytest.approx(0.25, rel=1e-3)
    # a high-quality resampler: linear interpolation leaves -64 dB (1 kHz) and -45 dB (3 kHz) here
    assert residual_db(mid[:, 0], 1000) < -100
    assert residual_db(mid[:, 1], 3000) < -100


def test_content_above_the_new_nyquist_is_removed(tmp_path):
    src = 48000
    data = stereo(wave(23000, 1.0, 0.5, sr=src))
    path = tmp_path / "ultrasonic.wav"
    sf.write(path, data, src, subtype="FLOAT")
    audio = load_audio(path, SR)
    mid = audio[SR // 4: -SR // 4]
    assert np.sqrt(np.mean(mid.astype(np.float64) ** 2)) < 0.5 * 10 ** (-100 / 20)


def test_22k05_upsampled_without_images(tmp_path):
    src = 22050
    mono = wave(5000, 2, 0.5, sr=src)
    path = tmp_path / "22k.wav"
    sf.write(path, mono, src, subtype="FLOAT")
    audio = load_audio(path, SR)
    check_shape(audio, 4 * src)
    mid = audio[SR // 4: SR // 4 + SR, 0].astype(np.float64)
    assert peak_hz(mid) == pytest.approx(5000, abs=0.05)
    assert amplitude(mid, 5000) == pytest.approx(0.5, rel=1e-3)
    # the image at 22050 - 5000 = 17050 Hz is gone
    assert amplitude(mid, 17050) < 0.5 * 10 ** (-100 / 20)
    assert residual_db(mid, 5000) < -100


def test_blockwise_decode_equals_one_shot(tmp_path):
    import soxr

    src = 48000
    n = 2 * decode.BLOCK_FRAMES          # an exact multiple: the last read is empty
    rng = np.random.default_rng(1)
    data = (0.25 * rng.standard_normal((n, 2))).astype(np.float32)
    path = tmp_path / "blocks.wav"
    sf.write(path, data, src, subtype="FLOAT")
    audio = load_audio(path, SR)
    expected = soxr.resample(data, src, SR, quality=decode.RESAMPLE_QUALITY)
    assert audio.shape == expected.shape
    np.testing.assert_allclose(audio, expected, atol=1e-6)
    same = load_audio(path, src)
    np.testing.assert_array_equal(same, data)


def test_sample_rate_argument_is_checked(tmp_path):
    path = tmp_path / "x.wav"
    sf.write(path, np.zeros((10, 2)), SR)
    for bad in (0, -44100, 44100.5, "44100", True):
        with pytest.raises(ValueError):
            load_audio(path, bad)
    assert load_audio(path, np.int64(SR)).shape == (10, 2)


# -- repairs and notes --------------------------------------------------------------------------

def test_nan_and_huge_float_samples_are_repaired_with_a_note(tmp_path):
    data = stereo(wave(440, 1.0, 0.5)).astype(np.float32)
    data[100, 0] = np.nan
    data[200, 1] = np.inf
    data[300, 0] = 1e30
    path = tmp_path / "bad.wav"
    sf.write(path, data, SR, subtype="FLOAT")
    audio, notes = load_audio_with_notes(path, SR)
    assert np.all(np.isfinite(audio))
    assert audio[100, 0] == 0.0 and audio[200, 1] == 0.0
    assert audio[300, 0] == decode.FLOAT_LIMIT
    assert any("2 NaN/infinite samples" in n for n in notes)
    assert any("1 samples beyond" in n for n in notes)


def test_wav_shorter_than_its_header_plays_with_a_note(tmp_path):
    path = tmp_path / "cut.wav"
    sf.write(path, stereo(wave(440, 1.0, 0.5)), SR, subtype="PCM_16")
    raw = path.read_bytes()
    path.write_bytes(raw[:44 + 4 * 1000])    # 1000 of 44100 frames
    audio, notes = load_audio_with_notes(path, SR)
    check_shape(audio, 1000)
    assert len(notes) == 1
    assert "shorter than its header says" in notes[0] and "0:01.000" in notes[0]


# -- refusals -----------------------------------------------------------------------------------

def test_missing_file(tmp_path):
    assert refusal(tmp_path / "nope.wav") == f"no such file: {tmp_path / 'nope.wav'}"


def test_directory(tmp_path):
    assert refusal(tmp_path) == f"a directory, not an audio file: {tmp_path}"


def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    assert refusal(fifo).startswith("not a regular file")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads everything")
def test_unreadable_file_permissions(tmp_path):
    path = tmp_path / "locked.wav"
    sf.write(path, np.zeros((10, 2)), SR)
    path.chmod(0)
    try:
        assert refusal(path).startswith(f"cannot read (permission denied): {path}")
    finally:
        path.chmod(0o644)


def test_unreadable_file_simulated(tmp_path, monkeypatch):
    # the same refusal when the open itself is denied (tests may run as root)
    path = tmp_path / "locked.wav"
    sf.write(path, np.zeros((10, 2)), SR)
    real_open = builtins.open

    def deny(file, *args, **kwargs):
        if os.fspath(file) == os.fspath(path):
            raise PermissionError(13, "Permission denied", os.fspath(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", deny)
    message = refusal(path)
    assert message.startswith(f"cannot read (permission denied): {path}")
    assert "permissions" in message


def test_zero_length_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    assert refusal(path) == f"empty file (0 bytes): {path}"


def test_text_file_is_not_audio(tmp_path, monkeypatch):
    (tmp_path / "song.txt").write_text("these are the lyrics\nla la la\n" * 20)
    monkeypatch.chdir(tmp_path)
    message = refusal("song.txt")
    assert message.startswith("not an audio file: song.txt")
    assert "text" in message


@pytest.mark.parametrize("name, content, words", [
    ("noise.wav", bytes(np.random.default_rng(3).integers(0, 256, 4000, dtype=np.uint8)), "no WAV"),
    ("cover.wav", b"\x89PNG\r\n\x1a\n" + bytes(200), "PNG image"),
    ("tune.mid", b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x01\xe0" + bytes(50), "MIDI"),
])
def test_other_non_audio_files(tmp_path, name, content, words):
    path = tmp_path / name
    path.write_bytes(content)
    message = refusal(path)
    assert message.startswith(f"not an audio file: {path}")
    assert words in message


def wav_bytes(tmp_path, subtype="PCM_16", frames=4410):
    path = tmp_path / "src.wav"
    sf.write(path, stereo(wave(440, frames / SR, 0.5)), SR, subtype=subtype)
    return path.read_bytes()


@pytest.mark.parametrize("cut", [8, 20, 30])
def test_truncated_wav_header(tmp_path, cut):
    path = tmp_path / "head.wav"
    path.write_bytes(wav_bytes(tmp_path)[:cut])
    message = refusal(path)
    assert message.startswith(f"truncated or corrupt header: {path} looks like WAV")
    assert "copy or export the file again" in message


def test_truncated_flac_and_ogg_headers(tmp_path):
    for fmt, subtype, cut in (("FLAC", "PCM_16", 30), ("OGG", "VORBIS", 60)):
        src = tmp_path / f"src.{fmt.lower()}"
        sf.write(src, np.zeros((4410, 2)), SR, format=fmt, subtype=subtype)
        path = tmp_path / f"cut.{fmt.lower()}"
        path.write_bytes(src.read_bytes()[:cut])
        message = refusal(path)
        assert message.startswith(f"truncated or corrupt header: {path} looks like")
        # libsndfile's words come after ours, never alone
        assert "(libsndfile: " in message and message.index("(libsndfile: ") > 40


def test_corrupt_wav_header(tmp_path):
    raw = bytearray(wav_bytes(tmp_path))
    raw[12:36] = b"\xa5" * 24             # the 'fmt ' chunk is garbage
    path = tmp_path / "corrupt.wav"
    path.write_bytes(raw)
    assert refusal(path).startswith(f"truncated or corrupt header: {path}")


def test_wav_with_an_undecodable_encoding_is_unsupported(tmp_path):
    raw = bytearray(wav_bytes(tmp_path))
    raw[20:22] = struct.pack("<H", 0x00FF)     # AAC in a WAV
    path = tmp_path / "aac.wav"
    path.write_bytes(raw)
    message = refusal(path)
    assert message.startswith(f"unsupported format: {path} is a WAV file whose audio is encoded as AAC")
    assert "ffmpeg" in message


@pytest.mark.parametrize("name, head, label", [
    ("song.m4a", b"\x00\x00\x00\x20ftypM4A \x00\x00\x02\x00", "MP4/M4A"),
    ("song.aac", b"\xff\xf1\x50\x80\x02\x1f\xfc", "AAC"),
    ("song.wma", b"\x30\x26\xb2\x75\x8e\x66\xcf\x11\xa6\xd9\x00\xaa\x00\x62\xce\x6c", "WMA"),
    ("song.ape", b"MAC \x96\x0f\x00\x00", "Monkey's Audio"),
])
def test_audio_formats_libsndfile_cannot_decode(tmp_path, name, head, label):
    path = tmp_path / name
    path.write_bytes(head + bytes(512))
    message = refusal(path)
    assert message.startswith(f"unsupported format: {path} is ")
    assert label in message and "convert it to WAV or FLAC" in message


def test_zero_frames(tmp_path):
    path = tmp_path / "silent.wav"
    sf.write(path, np.zeros((0, 2)), SR)
    assert refusal(path) == f"no audio in file (0 frames): {path} has a valid WAV header but no samples"


def test_zero_frames_because_truncated(tmp_path):
    path = tmp_path / "hollow.wav"
    path.write_bytes(wav_bytes(tmp_path, frames=SR)[:44])   # header says 1 s, no data follows
    message = refusal(path)
    assert message.startswith(f"no audio in file (0 frames): {path}; its header promises 0:01.000")


def test_corrupt_data_further_in(tmp_path):
    src = tmp_path / "src.flac"
    sf.write(src, stereo(wave(440, 3.0, 0.5)), SR, subtype="PCM_16")
    raw = src.read_bytes()
    path = tmp_path / "half.flac"
    path.write_bytes(raw[:len(raw) // 2])
    with pytest.raises(MediaError) as info:
        load_audio(path, SR)
    message = str(info.value)
    assert message.startswith(f"corrupt audio data: {path} cannot be decoded past 0:01.")
    assert "of 0:03.000" in message and "(libsndfile: " in message


def test_refusal_leaves_no_half_state(tmp_path):
    # a refusal is an exception, nothing more: the next good load works
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF")
    with pytest.raises(MediaError):
        load_audio(bad, SR)
    good = tmp_path / "good.wav"
    sf.write(good, np.full((5, 2), 0.25), SR, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(good, SR), np.full((5, 2), 0.25, dtype=np.float32))
