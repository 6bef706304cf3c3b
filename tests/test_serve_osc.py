"""`stemdeck serve` end to end: the command line's OSC server on a real UDP
port, driving the engine behind the null backend (real time, no sound card)."""

import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from osctools import Client
from serveproc import free_port, start_serve
from signals import stereo, wave


@pytest.fixture
def served(tmp_path):
    port = free_port()
    rec = tmp_path / "rec.wav"
    proc, startup = start_serve(["--backend", "null", "--port", str(port), "--buffer-size", "256",
                                 "--record", str(rec), "--media-root", str(tmp_path)], cwd=tmp_path)
    client = Client(("127.0.0.1", port))
    yield proc, client, rec, startup
    client.close()
    if proc.poll() is None:
        proc.terminate()
        proc.wait(10)


def test_serve_answers_osc_plays_and_quits(served, tmp_path):
    proc, client, rec, startup = served
    assert "OSC" in startup
    sf.write(tmp_path / "tone.wav", stereo(wave(330, 1.0, 0.4)), 44100)

    client.send("/load_buffer", 100, str(tmp_path / "tone.wav"), "tone")
    assert client.expect("/done", first="/load_buffer") == ["/load_buffer", 100]
    client.send("/play_stem", 100, 1.0, 1.0, 1)
    client.send("/stem_volume", 100, float("nan"))            # bad input: refused, music plays on
    fail = client.expect("/fail", first="/stem_volume")
    assert "nan" in fail[1].lower()
    client.send("/load_buffer", 101, "/etc/passwd")            # outside --media-root
    assert "outside media root" in client.expect("/fail", first="/load_buffer")[1]
    time.sleep(0.6)
    status = client.status()
    assert status["voices_playing"] == 1 and status["buffers_loaded"] == 1
    assert status["sample_rate"] == 44100 and status["buffer_size"] == 256
    assert status["uptime_s"] > 0
    client.send("/quit")
    assert proc.wait(10) == 0
    audio, sr = sf.read(rec)
    assert sr == 44100
    assert np.max(np.abs(audio)) == pytest.approx(0.4, abs=0.02)


def test_serve_refuses_a_taken_port_with_status_2(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "stemdeck", "serve", "--backend", "null", "--port", str(port)],
                                capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert result.returncode == 2
    assert str(port) in result.stderr


def test_serve_refuses_a_missing_preload_folder_with_status_2(tmp_path):
    result = subprocess.run([sys.executable, "-m", "stemdeck", "serve", "--backend", "null", "--port", "0",
                             "--preload", str(tmp_path / "nope")],
                            capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert result.returncode == 2
    assert "nope" in result.stderr


def test_serve_preloads_a_folder_and_loads_from_it(tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    sf.write(media / "a.wav", stereo(wave(220, 0.5, 0.3)), 44100, subtype="PCM_16")
    port = free_port()
    proc, _ = start_serve(["--backend", "null", "--port", str(port), "--preload", str(media)], cwd=tmp_path)
    try:
        client = Client(("127.0.0.1", port))
        client.send("/load_buffer", 100, str(media / "a.wav"))
        assert client.expect("/done", first="/load_buffer", timeout=10) == ["/load_buffer", 100]
        assert client.status()["buffers_loaded"] == 1
        client.send("/quit")
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_each_start_up_line_is_one_write(monkeypatch):
    """A supervisor waits for the line 'ready'. Written as text then newline
    (print), a log line from a loader thread could land between the two in
    the shared pipe ('readypreload: ...') and the wait would never end."""
    from stemdeck.live import Server

    writes = []

    class Recorder:
        def write(self, text):
            writes.append(text)

        def flush(self):
            pass

    monkeypatch.setattr(sys, "stdout", Recorder())
    Server(settings=None).say("ready")
    assert writes == ["ready\n"]
