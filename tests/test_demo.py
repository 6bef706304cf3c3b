"""`stemdeck demo`: plays live where there is a sound card, renders otherwise,
and says which."""

import os
import subprocess
import sys

import pytest
import soundfile as sf

SHORT_SCORE = """\
0.0 /load_buffer 100 song1_drums.wav drums
0.0 /play_stem 100 1.0 0.8 1
1.5 /stop_stem 100
"""


def run_demo(tmp_path, *args, env=None, timeout=240):
    score = tmp_path / "short.score"
    score.write_text(SHORT_SCORE)
    cmd = [sys.executable, "-m", "stemdeck", "demo", "--cache", str(tmp_path / "cache"),
           "--score", str(score), "-o", str(tmp_path / "demo.wav"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env=env or dict(os.environ, JACK_NO_START_SERVER="1"), cwd=tmp_path)


@pytest.mark.jack
def test_demo_plays_live_on_a_sound_card_and_stops_when_the_score_ends(tmp_path, jack_server):
    result = run_demo(tmp_path, env=jack_server.env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "playing the demo mix live on" in result.stdout
    assert "JACK" in result.stdout
    assert not (tmp_path / "demo.wav").exists()


def test_demo_renders_where_there_is_no_sound_card_and_says_so(tmp_path):
    # no JACK server and no ALSA device here: PortAudio finds no output
    env = dict(os.environ, JACK_NO_START_SERVER="1", JACK_DEFAULT_SERVER="stemdeck-none")
    result = run_demo(tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "demo mix rendered to" in result.stdout
    assert "Not played live (" in result.stdout
    info = sf.info(tmp_path / "demo.wav")
    assert info.samplerate == 44100 and info.channels == 2 and info.duration >= 1.5


def test_demo_render_flag_renders_even_with_a_sound_card(tmp_path):
    result = run_demo(tmp_path, "--render")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Not played live (--render was given)" in result.stdout
    assert (tmp_path / "demo.wav").is_file()


@pytest.mark.jack
def test_demo_with_an_unknown_device_exits_2_naming_it(tmp_path, jack_server):
    result = run_demo(tmp_path, "--device", "no-such-card", env=jack_server.env)
    assert result.returncode == 2
    assert "no-such-card" in result.stderr
