"""The null backend (the engine on its own real-time clock) and the recorder."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
from serveproc import start_serve

from stemdeck.audio import recorder as recorder_mod
from stemdeck.audio.null import NullOutput
from stemdeck.audio.recorder import Recorder
from stemdeck.engine.engine import Engine
from stemdeck.errors import UsageError

SR = 44100


def test_runs_at_real_time_speed():
    engine = Engine(SR)
    out = NullOutput(engine, block_size=256, sample_rate=SR)
    out.open()
    out.start()
    try:
        time.sleep(0.3)                      # past thread start-up
        f0, t0 = engine.frame, time.monotonic()
        time.sleep(5.0)
        f1, t1 = engine.frame, time.monotonic()
    finally:
        out.close()
    speed = (f1 - f0) / SR / (t1 - t0)
    assert speed == pytest.approx(1.0, abs=0.02)
    assert out.state == "stopped"


def test_a_late_block_is_counted_like_a_device_underrun():
    engine = Engine(SR)
    out = NullOutput(engine, block_size=128, sample_rate=SR)
    out.open()
    out.start()
    try:
        time.sleep(0.2)
        engine.make_late(20_000)             # one render takes 20 ms: ~7 periods of 2.9 ms
        time.sleep(0.3)
    finally:
        out.close()
    st = engine.stats()
    assert st["overruns"] == 1               # the callback itself ran past its period
    assert st["underflows"] >= 1             # and the clock saw the next block overdue
    assert out.reanchors == 0                # 20 ms is caught up, not skipped


def test_a_long_stall_restarts_the_clock_instead_of_bursting():
    engine = Engine(SR)
    out = NullOutput(engine, block_size=256, sample_rate=SR)
    out.open()
    out.start()
    try:
        time.sleep(0.2)
        engine.make_late(700_000)            # a 0.7 s stall (a suspended machine)
        time.sleep(1.0)
        f0, t0 = engine.frame, time.monotonic()
        time.sleep(1.0)
        f1, t1 = engine.frame, time.monotonic()
    finally:
        out.close()
    assert out.reanchors == 1
    assert (f1 - f0) / SR / (t1 - t0) == pytest.approx(1.0, abs=0.05)


# -- the recorder ----------------------------------------------------------------------------------

def test_recording_holds_every_rendered_frame(tmp_path):
    engine = Engine(SR)
    slot = engine.add_sample(np.full((3 * SR, 2), 0.25, np.float32))
    engine.bind(100, slot)
    engine.play(100)
    rec = Recorder(engine, tmp_path / "rec.wav", SR)
    out = NullOutput(engine, block_size=512, sample_rate=SR)
    out.open()
    rec.start()
    out.start()
    time.sleep(1.0)
    out.close()
    st = rec.stop()
    data, rate = sf.read(tmp_path / "rec.wav", dtype="float32")
    assert rate == SR
    assert st["frames"] == len(data) == engine.frame
    assert st["dropped_frames"] == 0
    assert 0 < data[0, 0] < 0.01                  # the engine's very first frame: the declick starts
    assert np.all(data[SR // 10:] == 0.25)        # then the stem, sample for sample


def test_a_full_ring_drops_and_reports_instead_of_waiting(tmp_path, monkeypatch):
    monkeypatch.setattr(recorder_mod, "DRAIN_SECONDS", 3600.0)   # a disk that never keeps up
    engine = Engine(SR)
    rec = Recorder(engine, tmp_path / "rec.wav", SR)
    rec.start()
    block = np.zeros((1024, 2), np.float32)
    blocks = 8 * SR // 1024                 # 8 s: more than the ~6 s ring
    t0 = time.monotonic()
    for _ in range(blocks):
        engine.run_callback(block)
    assert time.monotonic() - t0 < 5.0      # the callback never waited for the writer
    st = rec.stop()
    assert st["dropped_frames"] > 0
    assert st["frames"] + st["dropped_frames"] == blocks * 1024
    assert "the disk could not keep up" in rec.summary()


def test_record_path_is_checked_before_anything_starts(tmp_path):
    with pytest.raises(UsageError, match=r"\.wav .* or \.flac"):
        recorder_mod.check_path(tmp_path / "out.mp3")
    with pytest.raises(UsageError, match="does not exist"):
        recorder_mod.check_path(tmp_path / "missing" / "out.wav")


# -- the command --------------------------------------------------------------------------------------

def test_serve_null_records_at_real_time_and_stops_cleanly(tmp_path):
    path = tmp_path / "null.wav"
    # --realtime, as an unattended installation runs: with the clock thread at an
    # ordinary priority, a busy machine (one CPU hog per core) made it late once
    # in 2 s, and the server rightly counted an underrun
    proc, startup = start_serve(["--backend", "null", "--buffer-size", "256", "--record", str(path),
                                 "--realtime"])
    t0 = time.monotonic()
    time.sleep(2.0)
    proc.send_signal(signal.SIGTERM)
    t1 = time.monotonic()
    rest = proc.communicate(timeout=30)[0]
    text = startup + rest
    assert proc.returncode == 0, text
    assert "null backend" in text
    frames = sf.info(str(path)).frames
    # recording runs from before 'ready' to the end of the fade-out
    assert (t1 - t0) * SR * 0.95 < frames < (t1 - t0 + 1.0) * SR, text
    if "clock thread SCHED_FIFO" in text:         # on time whatever else runs (root, or rtprio limits)
        assert re.search(r"summary: .* 0 underruns", text), text
    else:                                         # counted, whatever the count
        assert re.search(r"summary: .* \d+ underruns", text), text


@pytest.mark.parametrize("args, message", [
    (["--reconnect", "-1"], "--reconnect '-1': give 0 to 86400 seconds"),
    (["--record", "out.mp3"], "name the file .wav (32-bit float) or .flac (24-bit)"),
    (["--score", "no/such.score"], "no such score file"),
])
def test_bad_serve_flags_exit_2_with_the_fix(args, message, tmp_path):
    result = subprocess.run([sys.executable, "-m", "stemdeck", "serve", "--backend", "null", *args],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "ready" not in result.stdout
