"""``stemdeck render``: scores rendered through Engine.render, measured on the samples."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf

from stemdeck.cli import main
from stemdeck.errors import ScoreError, UsageError
from stemdeck.tools.render import render_score
from signals import SR, amplitude, db, strongest, wave


@pytest.fixture
def media(tmp_path):
    """Generated stems: DC levels, sines, a two-tone mix."""
    def put(name, mono, seconds=3.0):
        n = round(seconds * SR)
        data = np.repeat(np.asarray(mono, np.float32)[:n, None], 2, axis=1)
        sf.write(tmp_path / name, data, SR, subtype="FLOAT")

    put("dc.wav", np.full(3 * SR, 0.5))
    put("pos.wav", np.full(3 * SR, 0.25))
    put("neg.wav", np.full(3 * SR, -0.25))
    put("one_second.wav", np.full(3 * SR, 0.5), seconds=1.0)
    put("sine1k.wav", wave(1000, 3.0, 0.3))
    put("sine3k.wav", wave(3000, 3.0, 0.3))
    put("sine441.wav", wave(441, 3.0, 0.3))
    put("low_high.wav", wave(60, 3.0, 0.2) + wave(5000, 3.0, 0.2))
    return tmp_path


def render(folder, text, name="set.score", out="out.wav", **kw):
    score = folder / name
    score.write_text(text, encoding="utf-8")
    kw.setdefault("subtype", "FLOAT")
    info = render_score(score, folder / out, progress=False, **kw)
    data, rate = sf.read(folder / out, dtype="float32")
    assert rate == info["sample_rate"] and len(data) == info["frames"]
    return data, info


def between(x, t0, t1):
    """Channel 0 of ``x`` from ``t0`` to ``t1`` seconds."""
    return x[round(t0 * SR):round(t1 * SR), 0]


# -- timing -----------------------------------------------------------------------------------

@pytest.mark.parametrize("block", [64, 100, 1024])
def test_stem_starts_on_its_exact_frame(media, block):
    x, info = render(media, "0 /load_buffer 100 dc.wav\n0.3217 /play_stem 100 1 1 0\n",
                     block_size=block, duration=1.0)
    start = round(0.3217 * SR)
    assert np.all(x[:start] == 0.0)
    assert x[start + 1, 0] != 0.0               # fading in (5 ms declick) from there
    assert x[start + SR // 2, 0] == pytest.approx(0.5, abs=1e-4)   # then the file's level


def test_start_group_starts_decks_on_the_same_frame(media):
    # deck A plays +0.25, deck B -0.25: on the same frame they cancel exactly
    together, _ = render(media, "0 /cue A pos.wav\n0 /cue B neg.wav\n0.5 /start_group 0.5 A B\n"
                                "1.5 /mixer_cleanup\n")
    assert np.max(np.abs(together)) < 1e-6
    # one frame apart they do not
    apart, _ = render(media, "0 /cue A pos.wav\n0 /cue B neg.wav\n0.5 /start_group A 0.5\n"
                             f"0.5 /start_group {0.5 + 1 / SR!r} B\n1.5 /mixer_cleanup\n", out="apart.wav")
    assert np.max(np.abs(apart)) > 1e-3
    alone, _ = render(media, "0 /cue A pos.wav\n0.5 /start_group 0.5 A\n1.5 /mixer_cleanup\n",
                      out="alone.wav")
    start = round(0.5 * SR)
    assert np.all(alone[:start] == 0) and alone[start + 1, 0] != 0


def test_reset_play_and_fade_become_frames(media):
    x, info = render(media, "1.0 /reset\n1.0 /play A dc.wav 0.5\n1.0 /fade A 1.0 0.5\n")
    start, fade = round(1.5 * SR), round(2.0 * SR)
    assert np.all(x[:start] == 0) and x[start + 1, 0] != 0
    level = 0.8 * 0.5                                          # /play plays at volume 0.8
    assert x[fade - 10, 0] == pytest.approx(level, abs=1e-4)
    assert x[fade + SR // 4, 0] == pytest.approx(level / 2, abs=2e-3)   # half way down
    assert np.max(np.abs(x[round(2.51 * SR):])) < 1e-6
    # no --duration needed: the loop is faded out; the render ends 0.25 s after the fade
    assert info["frames"] == round(2.5 * SR) + round(0.25 * SR)


# -- levels -------------------------------------------------------------------------------------

def test_crossfade_levels_change_deck_levels(media):
    x, _ = render(media, "0 /load_buffer 100 sine1k.wav\n0 /load_buffer 1100 sine3k.wav\n"
                         "0 /play_stem 100 1 1 0\n0 /play_stem 1100 1 1 0\n"
                         "1.0 /crossfade_levels 0.5 0\n2.0 /crossfade_levels 0 1\n")
    before_a, before_b = amplitude(between(x, 0.5, 0.9), 1000), amplitude(between(x, 0.5, 0.9), 3000)
    assert before_a == pytest.approx(0.3, rel=1e-3) and before_b == pytest.approx(0.3, rel=1e-3)
    assert amplitude(between(x, 1.2, 1.6), 1000) / before_a == pytest.approx(0.5, rel=1e-3)
    assert amplitude(between(x, 1.2, 1.6), 3000) < 1e-6
    assert amplitude(between(x, 2.2, 2.6), 1000) < 1e-6
    assert amplitude(between(x, 2.2, 2.6), 3000) == pytest.approx(0.3, rel=1e-3)


def test_deck_eq_changes_band_levels(media):
    x, _ = render(media, "0 /load_buffer 100 low_high.wav\n0 /play_stem 100 1 1 0\n"
                         "1.0 /deck_eq A low 0\n"
                         "2.0 /deck_eq A low 25\n2.0 /deck_eq A high 100\n")
    low0, high0 = amplitude(between(x, 0.5, 0.9), 60), amplitude(between(x, 0.5, 0.9), 5000)
    assert db(low0 / 0.2) == pytest.approx(0, abs=0.5) and db(high0 / 0.2) == pytest.approx(0, abs=0.5)
    assert db(amplitude(between(x, 1.3, 1.9), 60) / low0) < -30                # killed
    assert db(amplitude(between(x, 1.3, 1.9), 5000) / high0) == pytest.approx(0, abs=0.5)
    assert db(amplitude(between(x, 2.3, 2.9), 60) / low0) == pytest.approx(-12, abs=1)    # 25 % = -12 dB
    assert db(amplitude(between(x, 2.3, 2.9), 5000) / high0) == pytest.approx(6, abs=0.5)  # 100 % = +6 dB


def test_stems_follow_the_tempo(media):
    x, _ = render(media, "0 /load_buffer 100 sine441.wav\n0 /play_stem 100 1 1 0\n"
                         "0 /set_tempo 126\n", duration=1.0)
    assert strongest(between(x, 0.2, 0.9), np.arange(455, 470, 0.05)) == pytest.approx(441 * 126 / 120, abs=0.5)


def peak_frequency(path, lo, hi, t0=0.3, t1=0.9):
    x, _ = sf.read(path, dtype="float32")
    return strongest(between(x, t0, t1), np.arange(lo, hi, 0.1))


def test_tempo_settings_come_from_the_command_line_as_for_serve(media, capsys):
    """--bpm 60: stems are taken to be at 60 BPM, so /set_tempo 120 doubles
    them (vinyl); with --stretch keylock the pitch stays. As serve does."""
    score = media / "tempo.score"
    score.write_text("0 /load_buffer 100 sine441.wav\n0 /play_stem 100 1 1 1\n0 /set_tempo 120\n")
    render_to = [str(score), "--duration", "1", "--no-progress", "-o"]
    assert main(["render", *render_to, str(media / "default.wav")]) == 0
    assert main(["render", *render_to, str(media / "vinyl.wav"), "--bpm", "60"]) == 0
    assert main(["render", *render_to, str(media / "keylock.wav"), "--bpm", "60", "--stretch", "keylock"]) == 0
    assert peak_frequency(media / "default.wav", 430, 900) == pytest.approx(441, abs=0.5)
    assert peak_frequency(media / "vinyl.wav", 430, 900) == pytest.approx(882, abs=0.5)
    assert peak_frequency(media / "keylock.wav", 430, 900) == pytest.approx(441, abs=0.5)
    capsys.readouterr()
    assert main(["render", *render_to, str(media / "x.wav"), "--bpm", "fast"]) == 2
    err = capsys.readouterr().err
    assert "'fast' (from flag --bpm)" in err and "from 20 to 400" in err
    assert not (media / "x.wav").exists()


def test_test_tone(media):
    x, info = render(media, "0 /test_tone 1000 0.5\n")
    assert amplitude(between(x, 0.1, 0.4), 1000) == pytest.approx(0.25, rel=1e-3)
    assert info["frames"] == round(0.75 * SR)
    assert np.max(np.abs(x[round(0.51 * SR):])) < 1e-6


# -- length, determinism, block size ---------------------------------------------------------------

def test_default_duration_ends_after_the_last_one_shot(media):
    _, info = render(media, "0 /load_buffer 100 one_second.wav\n0.5 /play_stem 100 2 1 0\n")
    assert info["frames"] == round(0.5 * SR) + SR // 2 + round(0.25 * SR)
    assert info["seconds"] == pytest.approx(1.25)


def test_looping_score_needs_a_duration(media):
    score = media / "loop.score"
    score.write_text("0 /load_buffer 100 dc.wav\n0 /play_stem 100\n")
    with pytest.raises(UsageError, match="still loop.*buffer 100 \\(dc\\).*--duration"):
        render_score(score, media / "loop.wav", progress=False)
    assert not (media / "loop.wav").exists()
    info = render_score(score, media / "loop.wav", duration=0.5, progress=False)
    assert info["frames"] == SR // 2


BUSY = """\
0 /load_buffer 100 sine1k.wav
0 /load_buffer 1100 sine3k.wav
0 /load_buffer 101 low_high.wav
0.0 /play_stem 100 1.0 0.7 1
0.013 /play_stem_section 101 1.5 0.5 1 0.25 0.1
0.25 /cue B dc.wav 0.5
0.3331 /start_group B 0.4
0.5 /crossfade_levels 0.8 0.6
0.61 /deck_eq_all A 10 70 90
0.7 /set_tempo 130 0.4
0.9 /stem_volume 100 0.2
1.0 /deck_filter B mid 1.5
1.1 /dance/total_movement 0.2
1.2 /stop_stem 101
1.3 /fade B 0.0 0.3
1.4 /test_tone 880 0.2
1.6 /mixer_cleanup
"""


def test_same_score_same_bytes(media):
    for fmt, out in (("WAV", "a.wav"), ("FLAC", "a.flac")):
        render(media, BUSY, out=out, subtype="PCM_24")
        first = (media / out).read_bytes()
        render(media, BUSY, out=out, subtype="PCM_24")
        assert (media / out).read_bytes() == first, fmt
    render(media, BUSY, out="f.wav")
    first = (media / "f.wav").read_bytes()
    render(media, BUSY, out="f.wav")
    assert (media / "f.wav").read_bytes() == first


def test_block_size_does_not_change_the_result(media):
    small, info64 = render(media, BUSY, out="b64.wav", block_size=64)
    large, info1024 = render(media, BUSY, out="b1024.wav", block_size=1024)
    odd, _ = render(media, BUSY, out="b333.wav", block_size=333)
    assert info64["late_commands"] == info1024["late_commands"] == 0
    assert small.shape == large.shape == odd.shape
    assert np.max(np.abs(small - large)) <= 1e-6
    assert np.max(np.abs(odd - large)) <= 1e-6
    assert np.max(np.abs(large)) > 0.1


def test_48k(media):
    x, info = render(media, "0 /load_buffer 100 sine1k.wav\n0 /play_stem 100 1 1 0\n",
                     duration=0.5, sample_rate=48000)
    assert info["frames"] == 24000
    assert amplitude(x[4800:24000, 0], 1000, sr=48000) == pytest.approx(0.3, rel=1e-3)


# -- errors and the command line -----------------------------------------------------------------------

def test_bad_line_stops_before_rendering(media):
    score = media / "bad.score"
    score.write_text("0 /load_buffer 100 dc.wav\n# fine so far\n1 /play_stem 100\n"
                     "2 /load_buffer 1100 nothing_here.wav\n3 /mixer_cleanup\n")
    with pytest.raises(ScoreError) as info:
        render_score(score, media / "bad.wav", progress=False)
    assert str(info.value).startswith(f"{score}:4: /load_buffer: buffer 1100: no such file")
    score.write_text("0 /play_stem 100\n")
    with pytest.raises(ScoreError, match=r":1: /play_stem: buffer 100 is not loaded"):
        render_score(score, media / "bad.wav", progress=False)
    assert not (media / "bad.wav").exists()
    assert not [p for p in os.listdir(media) if p.endswith(".part")]


def test_bad_options(media):
    score = media / "ok.score"
    score.write_text("0 /test_tone\n")
    for kw, match in ((dict(sample_rate=22050), "44100, 48000"), (dict(block_size=16), "32..8192"),
                      (dict(duration=-1.0), "positive"), (dict(format="MP3"), "WAV, FLAC"),
                      (dict(subtype="PCM_8"), "PCM_16, PCM_24, FLOAT"),
                      (dict(format="FLAC", subtype="FLOAT"), "FLAC cannot hold FLOAT")):
        with pytest.raises(UsageError, match=match):
            render_score(score, media / "x.wav", progress=False, **kw)
    with pytest.raises(UsageError, match="cannot tell the format"):
        render_score(score, media / "x.mp3", progress=False)


def test_cli_exit_codes(media, capsys):
    good = media / "good.score"
    good.write_text("0 /load_buffer 100 one_second.wav\n0 /play_stem 100 1 1 0\n")
    assert main(["render", str(good), "-o", str(media / "good.flac")]) == 0
    assert "rendered 1.250 s" in capsys.readouterr().out
    assert sf.info(str(media / "good.flac")).format == "FLAC"

    bad = media / "bad.score"
    bad.write_text("0 /reset\n\n# comment\n1 /crossfade_levels 0.5\n")
    assert main(["render", str(bad), "-o", str(media / "bad.wav")]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:4: /crossfade_levels: expects 2 arguments, got 1" in err

    loop = media / "loop.score"
    loop.write_text("0 /load_buffer 100 dc.wav\n0 /play_stem 100\n")
    assert main(["render", str(loop), "-o", str(media / "loop.wav")]) == 2
    assert "--duration" in capsys.readouterr().err

    for flags, listed in ((["--sample-rate", "22050"], "44100, 48000"),
                          (["--block-size", "9000"], "32..8192"),
                          (["--format", "ogg"], "'WAV', 'FLAC'"),
                          (["--subtype", "pcm_8"], "'PCM_16', 'PCM_24', 'FLOAT'"),
                          (["--duration", "soon"], "not a number")):
        with pytest.raises(SystemExit) as exit_info:
            main(["render", str(good), "-o", str(media / "x.wav")] + flags)
        assert exit_info.value.code == 2
        assert listed in capsys.readouterr().err
    assert not (media / "x.wav").exists()


def test_the_rendered_file_gets_the_usual_permissions(tmp_path):
    import os
    import stat
    import subprocess
    import sys

    score = tmp_path / "s.score"
    score.write_text("0.0 /test_tone 440 0.2\n")
    out = tmp_path / "o.wav"
    old = os.umask(0o022)
    try:
        r = subprocess.run([sys.executable, "-m", "stemdeck", "render", str(score), "-o", str(out),
                            "--no-progress"], capture_output=True, text=True, timeout=120)
    finally:
        os.umask(old)
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
