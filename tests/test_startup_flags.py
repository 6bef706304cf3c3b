"""crowdstream's start-up flags on the real `stemdeck serve` (null backend, real UDP, WAVs written here),
and the CLI's conventions: one error line naming the flag, the valid values and the command's own --help."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from osctools import Client, write_wav
from serveproc import free_port, start_serve

SR = 44100


def _tone(freq: float, seconds: float = 4.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _status_json(client: Client) -> dict:
    return json.loads(client.ask("/status.json")[0])


def _wait_status(client: Client, ok, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        doc = _status_json(client)
        if ok(doc) or time.monotonic() > deadline:
            return doc
        time.sleep(0.1)


def _playing(doc: dict) -> dict[int, bool]:
    return {b["id"]: b["playing"] for d in doc["decks"] for b in d["buffers"]}


def _levels(doc: dict) -> list[float]:
    return [d["level"] for d in doc["decks"]]


def _stemdeck(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stemdeck", *args], capture_output=True, text=True,
                          timeout=60, env=env)


def test_a_b_ab_load_and_play_with_the_levels(tmp_path):
    write_wav(tmp_path, "x.wav", _tone(440))
    write_wav(tmp_path, "y.wav", _tone(660))
    port = free_port()
    # the crowdstream command line, as is: python audio_server.py --a x.wav --b y.wav --ab 1 0 --buffer-size 512
    proc, startup = start_serve(["--backend", "null", "--port", str(port), "--a", "x.wav", "--b", "y.wav",
                                 "--ab", "1", "0", "--buffer-size", "512", "--watch", "--enable-filters"],
                                cwd=tmp_path)
    client = Client(("127.0.0.1", port))
    try:
        assert f"/load_buffer 100 {tmp_path / 'x.wav'} DeckA" in startup
        assert "note: --enable-filters: accepted for crowdstream" in startup
        doc = _wait_status(client, lambda d: _playing(d) == {100: True, 1100: True})
        assert _playing(doc) == {100: True, 1100: True}, doc["decks"]
        assert _levels(doc)[:2] == [1.0, 0.0]
        assert doc["buffer_size"] == 512
        assert _line_within(proc, lambda line: " beat " in line and " phase " in line, 10), \
            "--watch: no clock line"              # once per beat: every 0.5 s at 120 BPM
    finally:
        client.send("/quit")
        proc.communicate(timeout=30)
        client.close()


def _line_within(proc, ok, timeout: float) -> bool:
    """Whether ``proc`` prints a line that satisfies ``ok`` within ``timeout`` s."""
    import queue
    import threading

    found: queue.Queue = queue.Queue()

    def read():
        for line in proc.stdout:
            if ok(line):
                found.put(line)
                return

    threading.Thread(target=read, daemon=True).start()
    try:
        found.get(timeout=timeout)
        return True
    except queue.Empty:
        return False


def test_c_at_starts_deck_c_later_and_levels_apply(tmp_path):
    write_wav(tmp_path, "c.wav", _tone(330, 8.0))
    port = free_port()
    proc, _ = start_serve(["--backend", "null", "--port", str(port), "--c", "c.wav", "--c_at", "2",
                           "--levels", "0.5", "0.25", "1", "0"], cwd=tmp_path)
    client = Client(("127.0.0.1", port))
    try:
        loaded = _wait_status(client, lambda d: 2100 in _playing(d) and d["buffers_loaded"] == 1)
        started = time.monotonic()
        assert _playing(loaded) == {2100: False}                  # loaded, not yet started
        assert _levels(loaded) == [0.5, 0.25, 1.0, 0.0]
        doc = _wait_status(client, lambda d: _playing(d).get(2100))
        assert _playing(doc) == {2100: True}
        assert time.monotonic() - started > 0.5                   # it waited for --c_at, not at once
    finally:
        client.send("/quit")
        proc.communicate(timeout=30)
        client.close()


@pytest.mark.parametrize("args, line", [
    (["serve", "--a", "x.wav", "--rate", "99"], "stemdeck serve: error: --rate 99: give a number from 0.25 to 4"),
    (["serve", "--ab", "1", "loud"], "stemdeck serve: error: --ab 'loud': give a number from 0 to 4"),
    (["serve", "--meter", "0"], "stemdeck serve: error: --meter 0: give a whole number from 1 to 64"),
    (["serve", "--a", "missing.wav"], "stemdeck serve: error: --a missing.wav: no such file: "),
    (["serve", "--stretch-method", "magic"], "--stretch-method 'magic': give one of playback_rate, resample, "),
    (["serve", "--bogus"], "stemdeck serve: error: unrecognized arguments: --bogus (see 'stemdeck serve --help')"),
    (["tune", "--sizes", "abc"], "stemdeck tune: error: argument --sizes: buffer size 'abc' in 'abc': sizes are "
                                 "whole numbers from 32 to 8192"),
    (["status", "--port", "0"], "stemdeck status: error: --port '0': give the port the server listens on, 1 to "),
    (["serve", "--movement-bpm", "maybe"], "must be on or off"),
])
def test_bad_values_exit_2_with_one_line(tmp_path, args, line):
    result = subprocess.run([sys.executable, "-m", "stemdeck", *args], capture_output=True, text=True,
                            timeout=60, cwd=tmp_path)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and line in lines[0], result.stderr


def test_status_help_describes_its_own_port():
    text = _stemdeck("status", "--help").stdout
    assert "--port" in text and "0 = any free port" not in text and "any free" not in text
    assert "UDP port the server listens on, 1 to 65535" in text


def test_no_movement_bpm_is_deprecated_for_movement_bpm_off(tmp_path):
    port = free_port()
    proc, startup = start_serve(["--backend", "null", "--port", str(port), "--no-movement-bpm"], cwd=tmp_path)
    client = Client(("127.0.0.1", port))
    try:
        assert "warning: --no-movement-bpm is deprecated: give --movement-bpm off" in startup
        assert any(line.startswith("movement steers tempo") and " off " in line
                   for line in startup.splitlines()), startup
    finally:
        client.send("/quit")
        proc.communicate(timeout=30)
        client.close()


def test_both_buffer_size_variables_warn_which_wins(tmp_path):
    import os

    env = {**os.environ, "AUDIO_BUFFER_SIZE": "256", "STEMDECK_BUFFER_SIZE": "1024"}
    port = free_port()
    proc, startup = start_serve(["--backend", "null", "--port", str(port)], cwd=tmp_path, env=env)
    client = Client(("127.0.0.1", port))
    try:
        assert "warning: AUDIO_BUFFER_SIZE=256 and STEMDECK_BUFFER_SIZE=1024 are both set; using AUDIO_BUFFER_SIZE" \
            in startup
    finally:
        client.send("/quit")
        proc.communicate(timeout=30)
        client.close()


def test_preload_and_disable_time_stretch(tmp_path):
    write_wav(tmp_path, "c.wav", _tone(330))
    write_wav(tmp_path, "d.wav", _tone(220))
    port = free_port()
    proc, startup = start_serve(["--backend", "null", "--port", str(port), "--c_preload", "c.wav", "--d", "d.wav",
                                 "--disable-time-stretch", "--rate", "1.5", "--vol", "0.5"], cwd=tmp_path)
    client = Client(("127.0.0.1", port))
    try:
        assert "/play_stem 3100 1.5 0.5 1 0" in startup
        doc = _wait_status(client, lambda d: _playing(d) == {2100: False, 3100: True})
        assert _playing(doc) == {2100: False, 3100: True}          # preloaded C waits; D plays
        bpm = {b["id"]: b["bpm"] for d in doc["decks"] for b in d["buffers"]}
        assert bpm == {2100: 0.0, 3100: 0.0}                        # they ignore the master tempo
    finally:
        client.send("/quit")
        proc.communicate(timeout=30)
        client.close()
