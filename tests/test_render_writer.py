"""The render's writer (audio/pcm_writer.py): the files it writes are byte for byte what soundfile writes
from the same float samples, at the edges of the range too; a render's PCM and FLAC files are its float
render converted by soundfile; a full disk is one clear line and leaves no file."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
import soundfile as sf

from stemdeck.audio.pcm_writer import PcmWriter
from stemdeck.cli import main
from stemdeck.tools.render import render_score
from test_record_faults import small_disk  # noqa: F401  (a fixture: a 4 MB tmpfs)

SR = 44100
FORMATS = [("WAV", "PCM_24"), ("WAV", "PCM_16"), ("WAV", "FLOAT"), ("FLAC", "PCM_24"), ("FLAC", "PCM_16")]


def edge_samples() -> np.ndarray:
    """Every kind of value a float -> PCM conversion can get wrong, as (frames, 2) float32."""
    f32 = np.float32
    full = [0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 1e-45, -1e-45]
    clipped = [1.0000001, -1.0000001, 1.5, -1.5, 2.0, -2.0, 1e10, -1e10, np.inf, -np.inf]
    below_full = [np.nextafter(f32(1), f32(0)) - f32(k) * f32(2 ** -24) for k in range(64)]
    k = np.arange(-3000, 3000)
    # half-way points between codes (ties), codes themselves, and their float neighbours
    steps = np.concatenate([(k + 0.5) / 8388608, k / 8388608, (k + 0.5) / 32768, k / 32768,
                            (k + 0.5) / 8388607, (k + 0.5) / 32767]).astype(f32)
    near = np.concatenate([np.nextafter(steps, f32(2)), np.nextafter(steps, f32(-2))])
    noise = np.random.default_rng(7).uniform(-1.1, 1.1, 200_000).astype(f32)
    values = np.concatenate([np.array(full + clipped, f32), np.array(below_full, f32),
                             -np.array(below_full, f32), steps, near, noise])
    if len(values) % 2:
        values = np.append(values, f32(0))
    return np.ascontiguousarray(values.reshape(-1, 2))


def write_with_writer(path, samples, fmt, subtype, chunk_frames=4096, depth=2) -> float:
    writer = PcmWriter(str(path), SR, fmt, subtype, chunk_frames=chunk_frames, depth=depth)
    done = 0
    while done < len(samples):
        chunk = writer.take()
        n = min(len(chunk), len(samples) - done)
        chunk[:n] = samples[done:done + n]
        writer.put(chunk, n)
        done += n
    return writer.close()


def write_with_soundfile(path, samples, fmt, subtype) -> None:
    """What render did before the writer: soundfile converts, PEAK chunk off (pcm_writer.no_peak_chunk)."""
    from stemdeck.audio.pcm_writer import no_peak_chunk

    with sf.SoundFile(str(path), "w", samplerate=SR, channels=2, format=fmt, subtype=subtype) as f:
        no_peak_chunk(f)
        for start in range(0, len(samples), 1024):
            f.write(samples[start:start + 1024])


@pytest.mark.parametrize("fmt,subtype", FORMATS)
def test_the_writer_writes_the_bytes_soundfile_writes(tmp_path, fmt, subtype):
    samples = edge_samples()
    if fmt == "FLAC":                # libFLAC encodes what libsndfile hands it: no need for every edge
        samples = samples[:50_000]
    ext = ".wav" if fmt == "WAV" else ".flac"
    peak = write_with_writer(tmp_path / ("writer" + ext), samples, fmt, subtype)
    write_with_soundfile(tmp_path / ("soundfile" + ext), samples, fmt, subtype)
    ours = (tmp_path / ("writer" + ext)).read_bytes()
    theirs = (tmp_path / ("soundfile" + ext)).read_bytes()
    assert len(ours) == len(theirs)
    if ours != theirs:
        first = next(i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b)
        pytest.fail(f"{fmt} {subtype}: first differing byte at {first} of {len(ours)}")
    assert peak == float(np.nanmax(np.abs(samples)))


def test_nan_becomes_what_soundfile_makes_of_it(tmp_path):
    samples = np.array([[np.nan, 0.25], [-0.25, np.nan]], np.float32)
    for subtype in ("PCM_24", "PCM_16"):
        write_with_writer(tmp_path / "w.wav", samples, "WAV", subtype)
        write_with_soundfile(tmp_path / "s.wav", samples, "WAV", subtype)
        assert (tmp_path / "w.wav").read_bytes() == (tmp_path / "s.wav").read_bytes(), subtype


def test_a_chunk_boundary_anywhere_changes_nothing(tmp_path):
    samples = edge_samples()[:20_000]
    write_with_soundfile(tmp_path / "s.wav", samples, "WAV", "PCM_24")
    for chunk_frames in (1, 1023, 20_000, 65_536):
        write_with_writer(tmp_path / "w.wav", samples, "WAV", "PCM_24", chunk_frames=chunk_frames)
        assert (tmp_path / "w.wav").read_bytes() == (tmp_path / "s.wav").read_bytes(), chunk_frames


SCORE = """\
0.0 /load_buffer 100 tone.wav tone
0.0 /load_buffer 1100 noise.wav noise
0.0 /play_stem 100 1.05 0.9 1
0.0 /play_stem 1100 0.97 0.8 1 0.3
0.0 /deck_eq_all A 40 60 45
1.5 /deck_eq B low 0
2.0 /crossfade_levels 1.0 0.4
3.0 /set_tempo 131 1.0
5.0 /mixer_cleanup
"""


@pytest.fixture
def loud_score(tmp_path):
    """A mix that drives the limiter (samples near full scale) with tempo, EQ and fader moves."""
    t = np.arange(3 * SR) / SR
    tone = (0.9 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    sf.write(tmp_path / "tone.wav", np.stack([tone, -tone], axis=1), SR, subtype="FLOAT")
    noise = np.random.default_rng(3).uniform(-0.9, 0.9, (3 * SR, 2)).astype(np.float32)
    sf.write(tmp_path / "noise.wav", noise, SR, subtype="FLOAT")
    (tmp_path / "set.score").write_text(SCORE)
    return tmp_path / "set.score"


def test_every_format_of_a_render_is_its_float_render_converted_by_soundfile(tmp_path, loud_score):
    """The render before the writer thread converted each block with soundfile; the float
    render's samples converted by soundfile now must give the same bytes."""
    info = render_score(loud_score, tmp_path / "float.wav", subtype="FLOAT", progress=False, block_size=333)
    floats, _ = sf.read(tmp_path / "float.wav", dtype="float32")
    assert info["frames"] == len(floats) and np.max(np.abs(floats)) > 0.9      # the limiter's region
    assert info["peak_dbfs"] == 20 * np.log10(float(np.max(np.abs(floats))))
    for fmt, subtype in FORMATS:
        ext = ".wav" if fmt == "WAV" else ".flac"
        render_score(loud_score, tmp_path / f"render{ext}", subtype=subtype, progress=False, block_size=333)
        write_with_soundfile(tmp_path / f"soundfile{ext}", floats, fmt, subtype)
        assert hashlib.sha256((tmp_path / f"render{ext}").read_bytes()).hexdigest() == \
            hashlib.sha256((tmp_path / f"soundfile{ext}").read_bytes()).hexdigest(), (fmt, subtype)


def test_a_full_disk_is_one_clear_line_and_leaves_no_file(loud_score, small_disk, capsys):
    out = small_disk / "mix.wav"         # 30 s of 24-bit stereo: 7.9 MB on a 4 MB disk
    assert main(["render", str(loud_score), "-o", str(out), "--duration", "30", "--no-progress"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"stemdeck render: writing {out}: disk full: ENOSPC, No space left on device"]
    assert os.listdir(small_disk) == []
