"""The JACK server killed mid-set and started again, as a user would see it.

``stemdeck serve`` plays a stem on a JACK dummy server; jackd is killed
with SIGKILL (its socket and client futex files stay in /dev/shm, as after
a real crash: that is what made a restarted jackd wake stemdeck's orphaned
old client, see stemdeck.audio.jack_orphans) and started again under the
same name. Everything is observed from outside: the server's output, a
``/notify`` subscriber and ``/status.json`` over real UDP, a ``jack_rec``
capture, jackd's own xrun log, and the exit status after SIGINT.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time

import numpy as np
import pytest
import soundfile as sf

from osctools import Client, amplitude, sine
from serveproc import READY_SECONDS, free_port
from test_serve_jack import Serve

pytestmark = pytest.mark.jack

SR = 44100
PERIOD = 1024          # a long JACK cycle: a busy machine seldom misses one
RETURN_SECONDS = 5.0   # the mix plays again this soon after JACK is back
LEVEL = 0.3 * 0.8      # the stem's sine times /play_stem's volume


def status(client: Client) -> dict:
    return json.loads(client.ask("/status.json", reply="/status.json.reply")[0])


def wait_status(client: Client, check, what: str, timeout: float = 10.0) -> dict:
    """Ask /status.json until ``check(status)`` holds; fail with the last answer."""
    deadline = time.monotonic() + timeout
    while True:
        st = status(client)
        if check(st):
            return st
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout} s; /status.json said {st}")
        time.sleep(0.05)


def xruns_since(jack_server, offset: int, client: str | None = None) -> int:
    """XRun lines jackd logged after byte ``offset`` of its log (blamed on ``client``, if given)."""
    lines = jack_server.log()[offset:].splitlines()
    return sum(1 for line in lines if "XRun" in line and (client is None or f"client = {client} " in line))


def kill_like_a_crash(jack_server) -> None:
    """SIGKILL jackd and leave its files behind, as a crash does (JackServer.kill tidies them)."""
    os.kill(jack_server.process.pid, signal.SIGKILL)
    jack_server.process.wait(timeout=10)


def test_jack_killed_and_restarted_mid_set(make_jack_server, tmp_path):
    jack_server = make_jack_server(rate=SR, period=PERIOD)
    path = tmp_path / "stem.wav"
    sf.write(path, sine(441.0, 3.0), SR, subtype="FLOAT")
    port = free_port()
    s = Serve(["--buffer-size", "512", "--port", str(port), "--reconnect", "20"], jack_server.env)
    control = subscriber = None
    try:
        s.wait_for(r"^ready$", timeout=READY_SECONDS)
        control, subscriber = Client(("127.0.0.1", port)), Client(("127.0.0.1", port))
        subscriber.send("/notify", 1)
        subscriber.expect("/done", first="/notify")
        control.send("/load_buffer", 100, str(path), "stem")
        control.expect("/done", first="/load_buffer", timeout=10)
        control.send("/play_stem", 100, 1.0, 0.8, 1)
        wait_status(control, lambda st: st["voices_playing"] == 1 and st["output"]["state"] == "running",
                    "stem playing")

        # -- lost ------------------------------------------------------------------------------
        kill_like_a_crash(jack_server)
        lost = s.wait_for(r"ERROR: audio device lost: .*JACK.* at [\d.]+ s \((\d+) frames\); trying to reopen",
                          timeout=10)
        assert subscriber.expect("/device", first="lost", timeout=5)[1], "/device lost has no reason"
        # a telemetry tick (0.5 s) after the last callback: its underrun count is final for the outage
        out = wait_status(control, lambda st: (st["output"]["lost_for_s"] or 0) > 0.7, "outage of 0.7 s")
        assert out["output"]["state"] in ("lost", "reconnecting"), out["output"]
        assert (out["output"]["losses"], out["output"]["reconnects"]) == (1, 0)
        assert out["voices_playing"] == 0 and out["dsp_load_avg"] == 0.0, "nothing is heard while lost"
        assert [b["state"] for b in out["decks"][0]["buffers"]] == ["ready"], "the buffer was kept"
        underruns_before = out["underruns"]

        # -- back ------------------------------------------------------------------------------
        log_offset = len(jack_server.log())
        jack_server.start()
        back = s.wait_for(r"audio device back: .* after [\d.]+ s .*the mix resumes at [\d.]+ s \((\d+) frames\)",
                          timeout=RETURN_SECONDS)
        assert back.group(1) == lost.group(1), "the clock moved while the device was gone"
        seconds_out = subscriber.expect("/device", first="back", timeout=5)[1]
        assert 0 < seconds_out < 20
        st = wait_status(control, lambda st: st["output"]["state"] == "running", "running again")
        assert (st["output"]["losses"], st["output"]["reconnects"]) == (1, 1)
        assert st["voices_playing"] == 1 and st["output"]["lost_for_s"] is None

        capture = tmp_path / "after.wav"
        rec = jack_server.record(capture, ["PortAudio:out_0", "PortAudio:out_1"], 2)
        assert rec.wait(timeout=20) == 0
        heard, rate = sf.read(capture, dtype="float32")
        assert rate == SR and len(heard) >= SR
        assert amplitude(heard[:, 0], 441.0) == pytest.approx(LEVEL, rel=0.1), "the stem is not heard"
        loud = np.flatnonzero(np.abs(heard[:, 0]) >= 1e-4)
        longest = int(np.max(np.diff(np.concatenate(([-1], loud, [len(heard)]))))) - 1    # silent frames in a row
        assert longest < PERIOD // 4, f"a dropout of {longest} frames in the capture after the return"

        # -- SIGINT ----------------------------------------------------------------------------
        s.proc.send_signal(signal.SIGINT)
        assert s.proc.wait(timeout=15) == 0, s.text
        s._reader.join(timeout=5)
        total = int(re.search(r"summary: .*?: (\d+) underruns", s.text).group(1))
        after = total - underruns_before
        ours, anyone = xruns_since(jack_server, log_offset, "PortAudio"), xruns_since(jack_server, log_offset)
        # jackd flags every client on any xrun in its graph, so no more than it logged; and our
        # own client must have kept up (the old bug: one missed cycle per JACK cycle)
        assert after <= anyone, f"{after} underruns counted after the return, jackd logged {anyone}:\n{s.text}"
        assert ours <= 2, f"jackd blamed stemdeck for {ours} late cycles after the return"
        assert "lost 1 time(s) and reconnected 1 time(s)" in s.text
    finally:
        for c in (control, subscriber):
            if c is not None:
                c.close()
        s.kill()
        if not jack_server.is_alive():
            jack_server.start()        # frees its server-registry slot (tests/jackserver.py)
