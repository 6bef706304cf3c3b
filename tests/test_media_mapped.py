"""Every format and conversion, checked on the samples the engine plays.

Each file is written with known content, loaded by the MediaLoader (mapped,
copied or decoded, as the loader decides), played by the engine at rate 1
with EQ and limiter off (so the output is the sample times the gains), and
the rendered frames are compared with what the file holds. Memory-mapped
playback is compared with decoded playback of the same file, sample by
sample, through the interpolator, loops and start offsets.
"""

from __future__ import annotations

import math
import os
import struct

import numpy as np
import pytest
import soundfile as sf

from stemdeck.engine import Engine
from stemdeck.media import mapped
from stemdeck.media.decode import load_audio
from stemdeck.media.loader import MediaLoader

from signals import SR, peak_hz, rms, stereo, wave
SKIP = 512            # the 5 ms declick fades at a one-shot's start and end are over by then
BODY = slice(SKIP, -SKIP)


def signal(frames: int, channels: int = 2, amp: float = 0.4, seed: int = 0) -> np.ndarray:
    """Noise plus a different tone per channel: any channel swap, shift or scale shows."""
    rng = np.random.default_rng(seed)
    cols = [wave(330.0 * (c + 1), frames / SR, amp * 0.5) + amp * 0.5 * rng.uniform(-1, 1, frames)
            for c in range(channels)]
    return np.stack(cols, axis=1).astype(np.float64)


def engine() -> Engine:
    e = Engine(SR)
    e.set_eq_enabled(False)
    e.set_limiter(False)
    return e


def render(e: Engine, frames: int, block: int = 256) -> np.ndarray:
    out = np.zeros((frames, 2), np.float32)
    for pos in range(0, frames, block):
        chunk = np.zeros((min(block, frames - pos), 2), np.float32)
        e.render(chunk)
        out[pos:pos + len(chunk)] = chunk
    return out


def play(data, frames=None, *, rate=1.0, loop=False, start=0.0, section=None) -> np.ndarray:
    e = engine()
    e.bind(100, e.add_sample(data))
    e.play(100, rate=rate, volume=1.0, loop=loop, start=start, section=section)
    return render(e, frames or data.shape[0])


def load(path, *, rate=SR):
    loader = MediaLoader(cache_mb=1024, immediate=True)
    data = loader.submit(str(path), rate).result()
    entry = loader.cache.peek(loader.key(str(path)))
    return data, entry.kind


def stereo_of(x: np.ndarray) -> np.ndarray:
    return np.repeat(x, 2, axis=1) if x.shape[1] == 1 else x


# -- every format ----------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt, subtype, endian, suffix, kind, dtype, tol", [
    ("WAV", "PCM_16", "FILE", "wav", "mapped", np.int16, 0.0),
    ("WAV", "PCM_32", "FILE", "wav", "mapped", np.int32, 1e-7),
    ("WAV", "FLOAT", "FILE", "wav", "mapped", np.float32, 0.0),
    ("WAV", "PCM_24", "FILE", "wav", "decoded", np.float32, 1e-7),
    ("WAV", "DOUBLE", "FILE", "wav", "decoded", np.float32, 1e-7),
    ("WAVEX", "PCM_16", "FILE", "wav", "mapped", np.int16, 0.0),
    ("RF64", "PCM_16", "FILE", "wav", "mapped", np.int16, 0.0),
    ("W64", "PCM_16", "FILE", "w64", "mapped", np.int16, 0.0),
    ("W64", "FLOAT", "FILE", "w64", "mapped", np.float32, 0.0),
    ("AIFF", "PCM_16", "FILE", "aiff", "copied", np.int16, 0.0),          # big-endian: copied at 16 bits
    ("AIFF", "PCM_16", "LITTLE", "aiff", "mapped", np.int16, 0.0),        # AIFF-C 'sowt'
    ("AIFF", "PCM_32", "LITTLE", "aiff", "mapped", np.int32, 1e-7),
    ("AIFF", "PCM_32", "FILE", "aiff", "copied", np.int32, 1e-7),
    ("AIFF", "PCM_24", "FILE", "aiff", "decoded", np.float32, 1e-7),
    ("AIFF", "FLOAT", "FILE", "aiff", "decoded", np.float32, 0.0),
    ("FLAC", "PCM_16", "FILE", "flac", "decoded", np.float32, 0.0),
    ("FLAC", "PCM_24", "FILE", "flac", "decoded", np.float32, 1e-7),
])
def test_lossless_formats_play_the_written_samples(tmp_path, fmt, subtype, endian, suffix, kind, dtype, tol):
    frames = SR // 2
    written = signal(frames)
    path = tmp_path / f"x.{suffix}"
    sf.write(path, written, SR, format=fmt, subtype=subtype, endian=endian)
    data, got_kind = load(path)
    assert got_kind == kind
    assert data.dtype == dtype and data.flags.c_contiguous
    if kind == "mapped":
        assert isinstance(data.base, (np.ndarray, memoryview)) or data.base is not None
        assert not data.flags.writeable            # a view of the file, not a copy
    out = play(data, frames)
    expect = sf.read(path, dtype="float64")[0]         # what the file holds, as libsndfile reads it
    assert np.abs(expect - written).max() < 2.0 / 32768
    if kind != "decoded":
        stored = sf.read(path, dtype={np.int16: "int16", np.int32: "int32", np.float32: "float32"}[dtype])[0]
        assert np.array_equal(data, stored)             # the stored values, unconverted
    err = np.abs(out[BODY] - expect[BODY]).max()
    assert err <= tol + 1e-7, err
    # left is left
    assert np.corrcoef(out[BODY, 0], expect[BODY, 0])[0, 1] > 0.9999


def test_memory_size_is_the_stored_size(tmp_path):
    frames = SR
    path16 = tmp_path / "a16.wav"
    sf.write(path16, signal(frames), SR, subtype="PCM_16")
    data, kind = load(path16)
    assert kind == "mapped" and data.nbytes == frames * 4           # 16-bit stays 16-bit
    path24 = tmp_path / "a24.wav"
    sf.write(path24, signal(frames), SR, subtype="PCM_24")
    data, kind = load(path24)
    assert kind == "decoded" and data.nbytes == frames * 8          # float32 stereo


def test_lossy_formats_decode_and_play(tmp_path):
    from stemdeck.media.refusals import libsndfile_can

    tone = stereo(wave(440, 1.0, 0.5), wave(880, 1.0, 0.25))
    formats = [("OGG", "VORBIS", "ogg")]
    if libsndfile_can()["MP3"]:
        formats.append(("MP3", "MPEG_LAYER_III", "mp3"))
    for fmt, subtype, suffix in formats:
        path = tmp_path / f"x.{suffix}"
        sf.write(path, tone, SR, format=fmt, subtype=subtype)
        data, kind = load(path)
        assert kind == "decoded"
        out = play(data)[SR // 4: 3 * SR // 4]
        for ch, (freq, amp) in enumerate(((440, 0.5), (880, 0.25))):
            assert peak_hz(out[:, ch]) == pytest.approx(freq, abs=3)
            assert rms(out[:, ch]) == pytest.approx(amp / math.sqrt(2), rel=0.1)


# -- conversions ------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt, subtype, kind", [("WAV", "PCM_16", "mapped"), ("FLAC", "PCM_16", "decoded"),
                                                ("WAV", "FLOAT", "mapped")])
def test_mono_plays_on_both_channels_at_the_same_level(tmp_path, fmt, subtype, kind):
    frames = SR // 2
    written = signal(frames, channels=1)
    path = tmp_path / f"mono.{fmt.lower()}"
    sf.write(path, written, SR, format=fmt, subtype=subtype)
    data, got = load(path)
    assert got == kind
    out = play(data, frames)
    expect = sf.read(path, dtype="float64")[0]
    assert np.abs(out[BODY, 0] - expect[BODY]).max() <= 1e-7
    assert np.array_equal(out[:, 0], out[:, 1])


def test_multichannel_is_downmixed_with_centre_at_minus_3_db(tmp_path):
    frames = SR // 2
    base = signal(frames, channels=3, amp=0.3)
    six = np.zeros((frames, 6))
    six[:, 0], six[:, 1], six[:, 2] = base[:, 0], base[:, 1], base[:, 2]   # FL FR FC; LFE and surrounds silent
    path = tmp_path / "surround.wav"
    sf.write(path, six, SR, subtype="FLOAT")
    data, kind = load(path)
    assert kind == "decoded" and data.shape[1] == 2
    out = play(data, frames)
    c = base[:, 2].astype(np.float32).astype(np.float64) / math.sqrt(2)
    expect = np.stack([base[:, 0] + c, base[:, 1] + c], axis=1)
    assert np.abs(out[BODY] - expect[BODY]).max() < 1e-6


@pytest.mark.parametrize("file_rate", [48000, 22050, 96000])
def test_other_rates_are_resampled_keeping_pitch_level_and_length(tmp_path, file_rate):
    seconds = 1.0
    path = tmp_path / f"r{file_rate}.wav"
    sf.write(path, stereo(wave(1000.0, seconds, 0.5, sr=file_rate)), file_rate, subtype="PCM_16")
    data, kind = load(path)
    assert kind == "decoded"
    assert abs(data.shape[0] - seconds * SR) <= 2
    out = play(data)[SR // 4: 3 * SR // 4, 0].astype(np.float64)
    spec = np.abs(np.fft.rfft(out * np.hanning(len(out))))
    k = int(np.argmax(spec))
    assert k * SR / len(out) == pytest.approx(1000.0, abs=2.0)
    assert np.sqrt(np.mean(out ** 2)) == pytest.approx(0.5 / math.sqrt(2), rel=0.01)
    # soxr, not linear interpolation (whose images sit near -50 dB): nothing but the tone above -80 dB
    peak = spec[k]
    spec[max(0, k - 20):k + 21] = 0
    spec[:3] = 0
    assert spec.max() / peak < 10 ** (-80 / 20)


def test_8_bit_is_decoded(tmp_path):
    written = signal(SR // 4, amp=0.5)
    path = tmp_path / "u8.wav"
    sf.write(path, written, SR, subtype="PCM_U8")
    data, kind = load(path)
    assert kind == "decoded"
    out = play(data)
    assert np.abs(out[BODY] - written[BODY]).max() < 1.5 / 128


def test_damaged_float_wav_is_decoded_and_repaired_not_mapped(tmp_path, caplog):
    written = signal(SR // 4).astype(np.float32)
    written[1000, 0] = np.nan
    written[2000, 1] = 1e9
    path = tmp_path / "damaged.wav"
    sf.write(path, written, SR, subtype="FLOAT")
    data, kind = load(path)
    assert kind == "decoded"
    assert np.isfinite(data).all() and np.abs(data).max() <= 64
    out = play(data)
    assert np.isfinite(out).all()


def test_truncated_wav_maps_what_is_there(tmp_path, caplog):
    written = signal(SR)
    path = tmp_path / "cut.wav"
    sf.write(path, written, SR, subtype="PCM_16")
    raw = path.read_bytes()
    path.write_bytes(raw[:44 + 4 * (SR // 2)])        # header still says 1 s
    data, kind = load(path)
    assert kind == "mapped" and data.shape[0] == SR // 2
    assert "shorter than its header says" in caplog.text
    out = play(data)
    expect = sf.read(tmp_path / "cut.wav", dtype="float64", frames=SR // 2)[0]
    assert np.abs(out[BODY] - expect[BODY]).max() == 0


def test_unaligned_data_chunk_is_copied_in_its_stored_width(tmp_path):
    written = signal(SR // 4)
    src = tmp_path / "src.wav"
    sf.write(src, written, SR, subtype="PCM_32")
    raw = src.read_bytes()
    # insert a 2-byte 'junk' chunk before 'data': the samples start at offset 54, not a multiple of 4
    fmt_end = 12 + 8 + struct.unpack("<I", raw[16:20])[0]
    junk = b"junk" + struct.pack("<I", 2) + b"\x00\x00"
    path = tmp_path / "unaligned.wav"
    path.write_bytes(raw[:4] + struct.pack("<I", len(raw) - 8 + len(junk)) + raw[8:fmt_end] + junk + raw[fmt_end:])
    layout = mapped.read_layout(path)
    assert layout.data_offset % 4 != 0
    data, kind = load(path)
    assert kind == "copied" and data.dtype == np.int32 and data.flags.aligned
    assert np.array_equal(data, sf.read(src, dtype="int32")[0])


def test_the_plan_says_why(tmp_path):
    cases = {
        "a.wav": ("WAV", "PCM_16", 44100, 2, "map"),
        "b.wav": ("WAV", "PCM_16", 48000, 2, "decode"),
        "c.wav": ("WAV", "PCM_24", 44100, 2, "decode"),
        "d.wav": ("WAV", "PCM_16", 44100, 6, "decode"),
        "e.flac": ("FLAC", "PCM_16", 44100, 2, "decode"),
    }
    for name, (fmt, subtype, rate, ch, how) in cases.items():
        sf.write(tmp_path / name, np.zeros((100, ch)), rate, format=fmt, subtype=subtype)
        plan = mapped.plan_load(tmp_path / name, SR)
        assert plan.how == how, (name, plan)
    assert "48000 Hz" in mapped.plan_load(tmp_path / "b.wav", SR).reason
    assert "24-bit" in mapped.plan_load(tmp_path / "c.wav", SR).reason
    assert "6 channels" in mapped.plan_load(tmp_path / "d.wav", SR).reason
    assert mapped.plan_load(tmp_path / "a.wav", 48000).how == "decode"     # the engine's rate decides


# -- mapped playback equals decoded playback ------------------------------------------------------------

@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_32", "FLOAT"])
@pytest.mark.parametrize("how", [
    dict(rate=1.0, loop=False, start=0.0),
    dict(rate=1.05, loop=True, start=0.37),                       # the interpolator and the loop seam
    dict(rate=0.71, loop=True, start=0.0, section=(0.1, 0.2)),   # a looped section
])
def test_mapped_playback_equals_decoded_playback_to_the_sample(tmp_path, subtype, how):
    frames = SR // 2
    path = tmp_path / "same.wav"
    sf.write(path, signal(frames, seed=7), SR, subtype=subtype)
    data, kind = load(path)
    assert kind == "mapped" and data.dtype != np.float32 or subtype == "FLOAT"
    decoded = load_audio(path, SR)
    assert decoded.dtype == np.float32
    a = play(data, 2 * frames, **how)
    b = play(decoded, 2 * frames, **how)
    assert np.abs(a).max() > 0.1
    # the same frames at the same positions; only float rounding may differ
    assert np.abs(a - b).max() <= 2e-7
    assert np.array_equal(np.nonzero(a[:, 0])[0][:5], np.nonzero(b[:, 0])[0][:5])


def test_mapping_is_instant_and_costs_no_reading(tmp_path):
    from stemdeck.media.readahead import drop_page_cache, resident_fraction

    frames = SR * 240           # 42 MB (more than a disk's read-ahead window)
    x = (np.random.default_rng(2).integers(-20000, 20000, (frames, 2))).astype(np.int16)
    path = tmp_path / "big.wav"
    sf.write(path, x, SR, subtype="PCM_16")
    if not drop_page_cache(path):
        pytest.skip("posix_fadvise is not available")
    probe = mapped.map_samples(path, mapped.read_layout(path))
    if resident_fraction(probe) > 0.5:
        pytest.skip("the page cache cannot be dropped here (tmpfs?)")
    del probe
    loader = MediaLoader(cache_mb=1, immediate=True, prefault_seconds=1.0)    # budget: mapped files need none
    data = loader.submit(str(path), SR).result()
    assert data.shape == (frames, 2) and data.dtype == np.int16
    # the first second was faulted in; most of the file was never read
    assert resident_fraction(data, 0, SR) == 1.0
    assert resident_fraction(data) < 0.5
    assert np.array_equal(data[12345], x[12345])
    os.sync()
