"""An idle server sleeps, and still answers on time: no thread wakes on a 5 ms
timer, yet a bundle timetagged ahead lands on its frame after idleness, and
/ended and /beat reach subscribers promptly (src/stemdeck/control/engine_wakeup.py,
control/osc/deadline.py)."""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest
import soundfile as sf

from osctools import SR, Rig, Client, mono_of_ntp, ntp_in, write_wav
from serveproc import free_port, start_serve
from signals import dc, onset

BLOCK = 256
IDLE_WAKEUPS_PER_S = 40          # a generous bound; a 5 ms ticker wakes 200 times a second
AUDIO_THREADS = {"sd-null-clock"}  # the audio clock must tick every block
# threads with nothing to do while nothing plays and nobody subscribes (they woke 25, 200 and 2 times a second)
ASLEEP_WHEN_IDLE = {"sd-readahead": 0.5, "sd-osc-reporter": 0.5, "sd-telemetry": 1.0}


def _voluntary_switches(pid: int) -> dict[str, int]:
    """Voluntary context switches (a thread going to sleep: one per wake-up) by thread."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches"):
                        out[f"{name} ({tid})"] = int(line.split()[1])
        except OSError:
            pass                 # a thread that just ended
    return out


@pytest.fixture
def serve_null(tmp_path):
    port = free_port()
    proc, _ = start_serve(["--backend", "null", "--port", str(port), "--buffer-size", str(BLOCK)])
    client = Client(("127.0.0.1", port))
    yield proc, client
    client.close()
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_an_idle_server_does_not_wake_on_a_timer(serve_null):
    proc, client = serve_null
    client.ask("/status", reply="/status.reply")          # it answers: it is up
    time.sleep(2.0)                                        # the frame clock's warm-up looks are over
    before, t0 = _voluntary_switches(proc.pid), time.monotonic()
    time.sleep(4.0)
    after, seconds = _voluntary_switches(proc.pid), time.monotonic() - t0
    rates = {name: (after[name] - before[name]) / seconds for name in after if name in before}
    busy = {name: round(rate) for name, rate in rates.items()
            if rate > IDLE_WAKEUPS_PER_S and name.split(" ")[0] not in AUDIO_THREADS}
    assert not busy, f"threads waking more than {IDLE_WAKEUPS_PER_S} times a second while idle: {busy}"
    awake = {name: round(rate, 2) for name, rate in rates.items()
             if rate > ASLEEP_WHEN_IDLE.get(name.split(" ")[0], float("inf"))}
    assert not awake, f"threads with nothing to do woke while idle (per second): {awake}"


def test_notify_events_come_promptly_after_idleness(serve_null, tmp_path):
    proc, client = serve_null
    path = tmp_path / "short.wav"
    sf.write(path, dc(0.25, 0.3), SR, subtype="FLOAT")
    client.send("/notify", 1)
    client.expect("/done", first="/notify")
    client.send("/load_buffer", 100, str(path))
    client.expect("/done", first="/load_buffer", timeout=10)
    time.sleep(1.5)                                        # idle: nothing to do but wait
    client.drain(0.01)
    sent = time.monotonic()
    client.send("/play_stem", 100, 1.0, 1.0, 0)            # a one-shot of 0.3 s
    assert client.expect("/ended", first=100, timeout=3) == [100]
    took = time.monotonic() - sent
    # 0.3 s of audio, then the block that rendered its end; a polling reader would add its period
    assert 0.29 <= took < 0.3 + 0.15, f"/ended {took:.3f} s after /play_stem of 0.3 s"

    beats = []
    deadline = time.monotonic() + 4
    while len(beats) < 4 and time.monotonic() < deadline:
        client.expect("/beat", timeout=2)
        beats.append(time.monotonic())
    gaps = [b - a for a, b in zip(beats, beats[1:])]
    assert len(gaps) == 3 and all(abs(g - 0.5) < 0.1 for g in gaps), f"/beat gaps at 120 BPM: {gaps}"


def test_a_bundle_ahead_lands_on_its_frame_after_idleness(tmp_path):
    write_wav(tmp_path, "a.wav", dc(0.25, 3.0))
    with Rig(BLOCK) as rig:
        c = rig.client
        c.send("/load_buffer", 100, str(tmp_path / "a.wav"))
        c.expect("/done", first="/load_buffer", timeout=10)
        rig.after(3.0)                                     # idle: the control thread sleeps
        relocks = rig.server.clock.relocks
        tt = ntp_in(0.3)
        c.send_bundle(tt, [("/play_stem", [100, 1.0, 1.0, 1, 0.0])])
        frame = rig.server.clock.frame_for(tt)
        x = rig.driver.samples(frame - 2000, frame + 4000)
        assert onset(x) - 2000 == 0                        # exactly the frame it was mapped to
        ideal = rig.driver.frame_at_monotonic(mono_of_ntp(tt))
        assert abs(frame - ideal) <= BLOCK, (frame, ideal)  # ... the frame rendered at that time
        assert rig.server.clock.relocks == relocks
        assert c.status()["late_commands"] == 0
