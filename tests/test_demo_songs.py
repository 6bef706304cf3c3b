"""The demo: synthesised stems (measured), their cache, the score and ``stemdeck demo``."""

from __future__ import annotations

import importlib
import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from stemdeck.tools import demo_songs
from stemdeck.tools.demo_songs import BARS, BEATS_PER_BAR, SAMPLE_RATE, SONGS, STEMS, ensure_demo_stems
from signals import attacks, dbfs


@pytest.fixture(scope="module")
def stem_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo-stems")
    ensure_demo_stems(folder)
    return folder


@pytest.fixture(scope="module")
def stems(stem_dir):
    """{"song1_drums": float64 (frames, 2) array as read back from the file}"""
    paths = ensure_demo_stems(stem_dir)
    return {name: sf.read(path, dtype="float64", always_2d=True)[0] for name, path in paths.items()}


def song_stems(song):
    return [(f"{song.name}_{stem}", song) for stem in STEMS]


ALL = [pair for song in SONGS for pair in song_stems(song)]


# -- the files --------------------------------------------------------------------------------

def test_eight_stems_written_as_modest_16_bit_stereo_wavs(stem_dir):
    paths = ensure_demo_stems(stem_dir)
    assert sorted(paths) == sorted(f"song{i}_{s}" for i in (1, 2) for s in STEMS)
    for name, path in paths.items():
        info = sf.info(path)
        assert (info.format, info.subtype) == ("WAV", "PCM_16"), name
        assert (info.samplerate, info.channels) == (44100, 2), name
        assert path.stat().st_size < 4_000_000, name


def test_songs_are_in_different_keys_at_120_and_126_bpm():
    assert [s.bpm for s in SONGS] == [120, 126]
    assert SONGS[0].key == "A minor" and SONGS[1].key == "D minor"


@pytest.mark.parametrize("name, song", ALL)
def test_length_is_a_whole_number_of_bars(stems, name, song):
    frames = stems[name].shape[0]
    bar = BEATS_PER_BAR * SAMPLE_RATE * 60 / song.bpm
    assert bar == int(bar)                       # 88200 at 120 BPM, 84000 at 126
    assert frames == BARS * bar
    assert frames == song.loop_frames


@pytest.mark.parametrize("name, song", ALL)
def test_loops_seamlessly(stems, name, song):
    x = stems[name]
    steps = np.abs(np.diff(x, axis=0))
    seam = np.abs(x[0] - x[-1])
    # the step from the last frame to the first is an ordinary step ...
    assert np.all(seam <= np.percentile(steps, 99, axis=0)), (seam, np.percentile(steps, 99, axis=0))
    # ... and the curvature there too (a click shows in the second difference)
    looped = np.concatenate([x[-64:], x[:64]])
    curve_seam = np.abs(np.diff(looped, 2, axis=0)).max(axis=0)
    curve_all = np.percentile(np.abs(np.diff(x, 2, axis=0)), 99.9, axis=0)
    assert np.all(curve_seam <= curve_all), (curve_seam, curve_all)


@pytest.mark.parametrize("name, song", ALL)
def test_not_silent_in_any_bar_and_never_clipping(stems, name, song):
    x = stems[name]
    peak = np.max(np.abs(x))
    assert peak < 10 ** (-1 / 20), f"{name} peaks at {20 * np.log10(peak):.1f} dBFS"
    bar = song.loop_frames // BARS
    for b in range(BARS):
        seg = x[b * bar:(b + 1) * bar]
        rms_db = 10 * np.log10(np.mean(seg ** 2))
        assert rms_db > -45, f"{name} bar {b + 1} is nearly silent ({rms_db:.1f} dBFS)"
    assert 10 * np.log10(np.mean(x ** 2)) > -35


@pytest.mark.parametrize("song", SONGS, ids=lambda s: s.name)
def test_four_stems_summed_stay_under_full_scale(stems, song):
    total = sum(stems[f"{song.name}_{stem}"] for stem in STEMS)
    peak_db = dbfs(total)
    assert peak_db < -1.0, f"{song.name}: the four stems sum to {peak_db:.1f} dBFS"
    assert peak_db > -4.0      # and not timid either


# -- the drums keep time ------------------------------------------------------------------------

@pytest.mark.parametrize("song", SONGS, ids=lambda s: s.name)
def test_drum_onsets_fall_on_the_sixteenth_grid_and_every_beat_has_one(stems, song):
    x = stems[f"{song.name}_drums"].mean(axis=1)
    rise = np.diff(x, prepend=x[-1])        # first difference: attacks stand out of tails
    found = attacks(rise)
    step = song.frames_per_step
    grid = np.rint(found / step).astype(int)
    offset = found - grid * step
    assert len(found) >= 2 * BARS * BEATS_PER_BAR      # kicks, snares or claps, and hats
    ms = SAMPLE_RATE / 1000
    # each hit's first onset is within 2 ms of its sixteenth; later bursts of the
    # same hit (a clap's three hands, the snare's body) follow within 30 ms
    for g in np.unique(grid):
        offs = offset[grid == g]
        assert abs(offs.min()) <= 2 * ms, f"step {g}: onset {offs.min() / ms:.1f} ms off the grid"
        assert offs.max() <= 30 * ms


@pytest.mark.parametrize("song", SONGS, ids=lambda s: s.name)
def test_a_kick_on_every_beat(stems, song):
    # the low band alone (in the high band the snare roll at the end of bar 8
    # rightly masks the attack of the kick on the loop's first beat)
    x = stems[f"{song.name}_drums"].mean(axis=1)
    spec = np.fft.rfft(x)
    spec[np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE) > 200] = 0
    low = np.fft.irfft(spec, len(x))
    found = attacks(low, window=128, jump=2.0, floor_db=-30)
    beat = song.frames_per_beat
    on_beats = {int(round(f / beat)) % (BARS * BEATS_PER_BAR) for f in found
                if abs(f - round(f / beat) * beat) <= 0.003 * SAMPLE_RATE}
    assert on_beats == set(range(BARS * BEATS_PER_BAR))


# -- they are in key ----------------------------------------------------------------------------------

SCALES = {"song1": {9, 11, 0, 2, 4, 5, 7},            # A natural minor
          "song2": {2, 4, 5, 7, 9, 10, 0, 1}}         # D minor (+ C#, the A chord's third)
# where each part's notes are (fundamentals and octaves; upper harmonics of
# in-key notes, like the major third in A's overtones, are not the melody)
REGISTERS = {"bass": (35, 250), "chords": (180, 720), "lead": (340, 1400)}


@pytest.mark.parametrize("song", SONGS, ids=lambda s: s.name)
def test_notes_stay_in_key(stems, song):
    for stem, (lo, hi) in REGISTERS.items():
        x = stems[f"{song.name}_{stem}"].mean(axis=1)
        power = np.abs(np.fft.rfft(x)) ** 2
        f = np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)
        sel = (f > lo) & (f < hi)
        pitch_class = np.rint(12 * np.log2(f[sel] / 440.0) + 69).astype(int) % 12
        chroma = np.bincount(pitch_class, weights=power[sel], minlength=12)
        chroma /= chroma.sum()
        # the pitch classes that carry three quarters of the energy are all in key ...
        order = np.argsort(chroma)[::-1]
        main = order[:np.searchsorted(np.cumsum(chroma[order]), 0.75) + 1]
        assert set(main) <= SCALES[song.name], f"{song.name} {stem}: {sorted(main)} not all in key"
        # ... and no other one is more than spectral leakage from short notes
        outside = max(chroma[pc] for pc in range(12) if pc not in SCALES[song.name])
        assert outside < 0.06, f"{song.name} {stem}: {outside:.0%} of the energy out of key"


# -- synthesis and cache ------------------------------------------------------------------------------

def test_synthesis_is_deterministic():
    a = demo_songs.render_song(SONGS[1])
    b = demo_songs.render_song(SONGS[1])
    for stem in STEMS:
        np.testing.assert_array_equal(a[stem], b[stem])


def test_cache_is_reused_and_repaired(tmp_path, monkeypatch):
    first = ensure_demo_stems(tmp_path)
    stamp = json.loads((tmp_path / demo_songs.STAMP_NAME).read_text())
    assert stamp["version"] == demo_songs.CONTENT_VERSION
    mtimes = {n: p.stat().st_mtime_ns for n, p in first.items()}

    calls = []
    real = demo_songs.render_song
    monkeypatch.setattr(demo_songs, "render_song", lambda song: calls.append(song.name) or real(song))
    assert ensure_demo_stems(tmp_path) == first            # reused: nothing synthesised
    assert calls == []
    assert {n: p.stat().st_mtime_ns for n, p in first.items()} == mtimes

    drums = first["song1_drums"]
    drums.write_bytes(drums.read_bytes()[:1000])           # a damaged file is made again
    ensure_demo_stems(tmp_path)
    assert calls == ["song1", "song2"]
    assert sf.info(drums).frames == SONGS[0].loop_frames

    calls.clear()
    stamp["version"] = -1                                  # an old version is made again
    (tmp_path / demo_songs.STAMP_NAME).write_text(json.dumps(stamp))
    ensure_demo_stems(tmp_path)
    assert calls == ["song1", "song2"]
    assert not list(tmp_path.glob(".*.tmp"))               # no temporary files left behind


def test_default_cache_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("STEMDECK_CACHE", str(tmp_path / "c"))
    assert demo_songs.default_cache_dir() == tmp_path / "c" / "demo"
    monkeypatch.delenv("STEMDECK_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert demo_songs.default_cache_dir() == tmp_path / "xdg" / "stemdeck" / "demo"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert demo_songs.default_cache_dir() == tmp_path / "home" / ".cache" / "stemdeck" / "demo"


# -- the score and the demo command ------------------------------------------------------------------

def _render_available() -> bool:
    try:
        return hasattr(importlib.import_module("stemdeck.tools.render"), "render_score")
    except ImportError:
        return False


def test_score_reads_cleanly_beside_the_stems(stem_dir, tmp_path):
    score_mod = pytest.importorskip("stemdeck.control.score")
    from stemdeck.tools import demo

    folder = tmp_path / "cache"
    shutil.copytree(stem_dir, folder)
    copy, _ = demo.prepare(folder)
    assert copy == folder / demo.SCORE_NAME
    assert copy.read_text() == demo.bundled_score().read_text()
    lines = score_mod.read_score(copy)
    addresses = [line.address for line in lines]
    for needed in ("/load_buffer", "/play_stem", "/crossfade_levels", "/deck_eq", "/set_tempo",
                   "/stem_volume", "/stop_stem"):
        assert needed in addresses
    assert 55 <= max(line.time for line in lines) <= 70
    # the bass swap: two EQ moves on the same time, a phrase boundary of deck A
    eq = [line for line in lines if line.address == "/deck_eq"]
    swap_times = {line.time for line in eq if line.time > 0}
    assert 32.0 in swap_times


@pytest.mark.skipif(not _render_available(), reason="stemdeck.tools.render.render_score not built yet")
def test_demo_command_renders_the_mix(stem_dir, tmp_path, capsys):
    from stemdeck.cli import main

    folder = tmp_path / "cache"
    shutil.copytree(stem_dir, folder)                      # stems already made: test the render
    out = tmp_path / "demo.wav"
    assert main(["demo", "-o", str(out), "--cache", str(folder)]) == 0
    printed = capsys.readouterr().out
    assert str(out.resolve()) in printed
    assert "Not played live (" in printed
    x, rate = sf.read(out, always_2d=True)
    assert rate == 44100 and x.shape[1] == 2
    seconds = len(x) / rate
    assert 60 <= seconds <= 66
    assert np.max(np.abs(x)) <= 1.0
    for start in range(0, 56, 4):                          # music all the way through
        seg = x[start * rate:(start + 4) * rate]
        assert 10 * np.log10(np.mean(seg ** 2)) > -30, f"quiet at {start} s"
    assert np.max(np.abs(x[-rate // 8:])) < 1e-3           # and it ends in silence
