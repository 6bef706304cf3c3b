"""The OSC server, live: every message of the table through a real UDP socket
(python-osc client), its effect measured on the recorded output or its
reply; bad input; --allow, --media-root, TCP, the flags.

The engine runs in real time (tests/osctools.py: a clock thread, recorded
from frame 0); the server listens on 127.0.0.1 on a free port.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import struct
import threading
import time

import numpy as np
import pytest

from osctools import SR, Client, Rig, message_bytes, ntp_in, write_wav
from signals import amplitude, dc, onset, sine
from stemdeck.control import osc_wire as wire
from stemdeck.control import spec
from stemdeck import app
from stemdeck.app import add_osc_arguments as add_arguments, osc_options as server_options
from stemdeck.control.access import parse_allow
from stemdeck.control.osc import server as osc_server
from stemdeck.control.osc.server import OscServer
from stemdeck.media.simple_loaders import ThreadedLoader, decode
from stemdeck.engine import Engine
from stemdeck.errors import UsageError

SLOW_LOAD_S = 0.6


def slow_decode(path, sample_rate):
    """Files whose name starts with 'slow' take SLOW_LOAD_S to load."""
    if os.path.basename(path).startswith("slow"):
        time.sleep(SLOW_LOAD_S)
    return decode(path, sample_rate)


class Captured(logging.Handler):
    """Collects log lines of one logger, whatever propagation is set to."""

    def __init__(self, name):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.logger = logging.getLogger(name)

    def emit(self, record):
        self.lines.append(record.getMessage())

    def __enter__(self):
        self.logger.addHandler(self)
        self._level = self.logger.level
        self.logger.setLevel(logging.DEBUG)
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self)
        self.logger.setLevel(self._level)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    ramp = np.linspace(0.0, 1.0, 2 * SR, endpoint=False, dtype=np.float32)
    files = {
        "dc.wav": dc(0.5, 2.0),
        "dcB.wav": dc(0.25, 2.0),
        "pos.wav": dc(0.25, 2.0),
        "neg.wav": dc(-0.25, 2.0),
        "slow_pos.wav": dc(0.25, 2.0),
        "slow_dc.wav": dc(0.5, 1.0),
        "short.wav": dc(0.5, 0.1),
        "ramp.wav": np.stack([ramp, ramp], axis=1),
        "sine1k.wav": sine(1000, 1.0),
        "sine3k.wav": sine(3000, 1.0),
        "sine100.wav": sine(100, 1.0),
        "sine8k.wav": sine(8000, 1.0),
    }
    for name, data in files.items():
        write_wav(d, name, data)
    (d / "notaudio.wav").write_text("this is text, not audio\n" * 20)
    return d


@pytest.fixture(scope="module")
def rig(media):
    r = Rig(256).start()                 # the production MediaLoader
    yield r
    r.stop()


@pytest.fixture
def slow(media):
    """A rig whose files named slow* take SLOW_LOAD_S to load (a test loader)."""
    r = Rig(256, loader=ThreadedLoader(workers=2, load=slow_decode)).start()
    yield r
    r.stop()


@pytest.fixture
def live(rig):
    """The module's rig, reset: nothing loaded, levels, EQ, tempo, meter at defaults."""
    c = rig.client
    for msg in (("/notify", 0), ("/print_clock", 0), ("/mixer_cleanup",), ("/deck_levels", 1, 1, 1, 1),
                ("/set_tempo", 120), ("/set_meter", 4), ("/quantize", 0), ("/keylock", "A", 0),
                ("/keylock", "B", 0)):
        c.send(*msg)
    for deck in "ABCD":
        c.send("/deck_eq_all", deck, 50, 50, 50)
    settle(rig)
    rig.engine.set_eq_enabled(False)
    c.drain(0.02)
    return rig


def settle(rig) -> int:
    """Every message sent so far has been handled (and its loads finished);
    returns a frame from which their effect is audible (past ramps and declicks)."""
    rig.client.send("/sync", 4242)
    rig.client.expect("/synced", first=4242, timeout=5)
    return rig.engine.frame + rig.block + 1024


def window(rig, seconds: float = 0.2) -> np.ndarray:
    start = settle(rig)
    return rig.driver.samples(start, start + int(seconds * SR))


def load(rig, media, bid, name):
    rig.client.send("/load_buffer", bid, str(media / name))
    assert rig.client.expect("/done", first="/load_buffer", timeout=5) == ["/load_buffer", bid]


# -- buffers and stems ------------------------------------------------------------------------------

def test_load_buffer_answers_done_and_notifies_loaded(live, media):
    c = live.client
    c.send("/notify", 1)
    assert c.expect("/done")[0] == "/notify"
    c.send("/load_buffer", 100, str(media / "dc.wav"), "drums")
    assert c.expect("/done", first="/load_buffer") == ["/load_buffer", 100]
    assert c.expect("/loaded") == [100]
    detail = json.loads(c.ask("/status.json")[0])
    assert detail["decks"][0]["buffers"][0]["name"] == "drums"
    assert c.status()["buffers_loaded"] == 1
    c.send("/load_buffer", 101, str(media / "notaudio.wav"))
    address, reason = c.expect("/fail")
    assert address == "/load_buffer" and "101" in reason and "notaudio.wav" in reason
    c.send("/load_buffer", 102, str(media / "missing.wav"))
    assert "no such file" in c.expect("/fail")[1]


def test_play_stem_stem_volume_stop_stem_on_the_samples(live, media):
    c = live.client
    load(live, media, 100, "dc.wav")
    c.send("/play_stem", 100)                       # crowdstream defaults: rate 1, volume 0.8, loop
    assert np.allclose(window(live), 0.4, atol=1e-4)
    c.send("/play_stem", 100, 1.0, 1.0, 1, 0.0)
    assert np.allclose(window(live), 0.5, atol=1e-4)
    c.send("/stem_volume", 100, 0.5)
    assert np.allclose(window(live), 0.25, atol=1e-4)
    c.send("/stop_stem", 100)
    assert np.all(window(live) == 0.0)
    assert c.status()["voices_playing"] == 0


def test_free_buffer_stops_the_stem_and_empties_the_id(live, media):
    c = live.client
    load(live, media, 100, "dc.wav")
    c.send("/play_stem", 100, 1.0, 1.0, 1, 0.0)
    assert np.allclose(window(live), 0.5, atol=1e-4)
    c.send("/free_buffer", 100)
    assert c.expect("/done", first="/free_buffer") == ["/free_buffer", 100]
    assert np.all(window(live) == 0.0)
    assert c.status()["buffers_loaded"] == 0
    c.send("/play_stem", 100)                       # the ID is empty now
    assert "100" in c.expect("/fail", first="/play_stem")[1]


def test_play_stem_section_loops_the_section(live, media):
    load(live, media, 100, "ramp.wav")              # value = seconds / 2
    live.client.send("/play_stem_section", 100, 1.0, 1.0, 1, 1.0, 0.5)
    x = window(live, 1.0)
    assert x.min() >= 0.5 - 1e-3 and x.max() <= 0.75 + 1e-3
    assert x.max() > 0.74 and np.percentile(x, 5) < 0.52   # the whole section, looped


def test_one_shot_ends_with_ended_event(live, media):
    c = live.client
    c.send("/notify", 1)
    c.expect("/done")
    load(live, media, 300, "short.wav")
    c.send("/play_stem", 300, 1.0, 1.0, 0, 0.0)
    assert c.expect("/ended", timeout=2) == [300]
    assert np.all(window(live) == 0.0)


def test_test_tone_plays_a_real_tone(live):
    live.client.send("/test_tone", 1000, 1.0)
    x = window(live, 0.3)
    assert amplitude(x, 1000) == pytest.approx(0.25, rel=0.02)
    assert amplitude(x, 1500) < 0.01


def test_mixer_cleanup_stops_and_frees(live, media):
    c = live.client
    load(live, media, 100, "dc.wav")
    c.send("/play_stem", 100)
    assert window(live).max() > 0.3
    c.send("/mixer_cleanup")
    assert c.expect("/done") == ["/mixer_cleanup"]
    assert np.all(window(live) == 0.0)
    st = c.status()
    assert st["buffers_loaded"] == 0 and st["voices_playing"] == 0
    c.send("/play_stem", 100)
    assert "not loaded" in c.expect("/fail")[1]


# -- mixer ------------------------------------------------------------------------------------------

def test_crossfade_levels_and_deck_levels(live, media):
    c = live.client
    load(live, media, 100, "sine1k.wav")
    load(live, media, 1100, "sine3k.wav")
    load(live, media, 2100, "sine100.wav")
    for bid in (100, 1100, 2100):
        c.send("/play_stem", bid, 1.0, 1.0, 1, 0.0)
    x = window(live)
    assert [amplitude(x, f) for f in (1000, 3000, 100)] == pytest.approx([0.3, 0.3, 0.3], rel=0.01)
    c.send("/crossfade_levels", 0.5, 0.0)
    x = window(live)
    assert amplitude(x, 1000) == pytest.approx(0.15, rel=0.01) and amplitude(x, 3000) < 1e-4
    c.send("/deck_levels", 0.0, 1.0)                 # C and D keep their levels
    x = window(live)
    assert amplitude(x, 1000) < 1e-4 and amplitude(x, 3000) == pytest.approx(0.3, rel=0.01)
    assert amplitude(x, 100) == pytest.approx(0.3, rel=0.01)
    c.send("/deck_levels", 1, 1, 0.5, 1)
    assert amplitude(window(live), 100) == pytest.approx(0.15, rel=0.01)


def test_eq_messages_change_the_band(live, media):
    c = live.client
    live.engine.set_eq_enabled(True)
    load(live, media, 100, "sine100.wav")
    load(live, media, 1100, "sine8k.wav")
    c.send("/play_stem", 100, 1.0, 1.0, 1, 0.0)
    c.send("/play_stem", 1100, 1.0, 1.0, 1, 0.0)
    flat = amplitude(window(live, 0.4), 100)
    assert flat == pytest.approx(0.3, rel=0.05)

    def low_a():
        return amplitude(window(live, 0.4), 100)

    c.send("/deck_filter", "A", "low", 0.0)
    assert low_a() < flat / 30                      # killed (> 30 dB down)
    c.send("/deck_filter", "A", "low", 1.0)
    assert low_a() == pytest.approx(flat, rel=0.05)
    c.send("/deck_eq", "A", "low", 0)
    assert low_a() < flat / 30
    c.send("/deck_eq_all", "A", 50, 50, 50)
    assert low_a() == pytest.approx(flat, rel=0.05)
    c.send("/deck_eq", "A", "low", 100)             # +6 dB
    assert low_a() / flat == pytest.approx(2.0, rel=0.1)
    c.send("/deck_eq_all", "B", 50, 50, 0)          # deck B's high band: the 8 kHz tone
    x = window(live, 0.4)
    assert amplitude(x, 8000) < 0.3 / 30
    assert amplitude(x, 100) / flat == pytest.approx(2.0, rel=0.1)   # deck A untouched


# -- tempo and clock ----------------------------------------------------------------------------------

def test_set_tempo_changes_the_stems_speed(live, media):
    c = live.client
    load(live, media, 100, "sine1k.wav")
    c.send("/play_stem", 100, 1.0, 1.0, 1, 0.0)
    c.send("/set_tempo", 240)                       # stems follow tempo / base (120)
    x = window(live, 0.3)
    assert amplitude(x, 2000) > 0.25 and amplitude(x, 1000) < 0.01
    assert c.status()["bpm"] == pytest.approx(240)


def test_set_meter_beats_and_print_clock(live):
    c = live.client
    c.send("/set_tempo", 400)                       # 0.15 s per beat
    c.send("/set_meter", 3)
    c.send("/notify", 1)
    c.expect("/done")
    with Captured("stemdeck.osc") as cap:
        c.send("/print_clock", 1)
        live.after(1.2)                             # eight beats at 400 BPM
        c.send("/print_clock", 0)
        settle(live)
    beats = [tuple(args) for addr, args in c.drain(0.05) if addr == "/beat"]
    assert len(beats) >= 5
    assert all(1 <= beat <= 3 for _bar, beat in beats)
    assert all(a != b for a, b in zip(beats, beats[1:]))        # at most once per beat
    assert any(b[1] == 3 for b in beats) and any(b[1] == 1 for b in beats[1:])
    assert sum(line.startswith("bar ") and " beat " in line for line in cap.lines) >= 4


def test_dance_total_movement_steers_the_tempo(live):
    c = live.client
    c.send("/dance/total_movement", 0.6)            # lots of movement: glide up toward 130 BPM
    live.after(0.6)
    up = c.status()["bpm"]
    assert 120.2 < up < 121.5                       # a 14.7 s glide, not a jump
    c.send("/dance/total_movement", 0.0)            # still: glide down toward 105 BPM
    live.after(0.6)
    assert c.status()["bpm"] < up
    detail = json.loads(c.ask("/status.json")[0])
    assert detail["movement"]["value"] == 0.0


def test_stem_bpm_and_load_buffer_bpm_set_a_stems_own_tempo(live, media):
    c = live.client
    c.send("/load_buffer", 100, str(media / "sine1k.wav"), "one", 240)   # made at 240: half speed
    c.expect("/done")
    c.send("/play_stem", 100, 1.0, 1.0, 1, 0.0)
    x = window(live, 0.3)
    assert amplitude(x, 500) > 0.25 and amplitude(x, 1000) < 0.01
    c.send("/stem_bpm", 100, 60)                    # made at 60: double speed at 120
    x = window(live, 0.3)
    assert amplitude(x, 2000) > 0.25 and amplitude(x, 500) < 0.01
    c.send("/stem_bpm", 100, 0)                     # 0: ignores the master tempo
    c.send("/set_tempo", 180)
    assert amplitude(window(live, 0.3), 1000) > 0.25


def test_quantize_starts_stems_on_the_next_beat(live, media):
    c = live.client
    load(live, media, 100, "dc.wav")
    tt = ntp_in(0.2)
    c.send_bundle(tt, [("/reset", [])])             # beat 1 on a frame we know
    zero = live.server.clock.frame_for(tt)
    c.send("/quantize", 1)
    live.driver.wait_frame(zero + SR // 4)          # well inside the first beat (0.5 s at 120)
    c.send("/play_stem", 100, 1.0, 1.0, 1, 0.0)
    beat = SR // 2
    x = live.driver.samples(zero, zero + 2 * beat)
    assert onset(x) == beat                         # on beat 2, to the frame
    c.send("/quantize", 0)
    c.send("/stop_stem", 100)


def test_keylock_keeps_pitch_through_a_tempo_change(live, media):
    c = live.client
    load(live, media, 100, "sine1k.wav")
    c.send("/play_stem", 100, 1.0, 1.0, 1, 0.0)
    c.send("/keylock", "A", 1)
    if not getattr(live.engine, "keylock_available", False):
        assert "Rubber Band" in c.expect("/fail")[1]
        return
    c.send("/set_tempo", 150)
    live.after(0.3)
    x = window(live, 0.4)
    assert amplitude(x, 1000) > 0.1 and amplitude(x, 1250) < 0.02      # the pitch stays
    c.send("/keylock", "A", 0)
    x = window(live, 0.4)
    assert amplitude(x, 1250) > 0.1                                     # now it follows


# -- timed control -------------------------------------------------------------------------------------

def test_reset_play_fade_become_frames(live, media):
    c = live.client
    load(live, media, 100, "dc.wav")               # /play A dc.wav finds it loaded
    load(live, media, 1100, "dcB.wav")
    tt = ntp_in(0.3)
    c.send_bundle(tt, [("/reset", []), ("/play_stem", [1100, 1.0, 1.0, 1, 0.0]),
                       ("/play", ["A", str(media / "dc.wav"), 0.25]),
                       ("/fade", ["A", 0.5, 0.25])])
    f = live.server.clock.frame_for(tt)
    x = live.driver.samples(f - 100, f + SR)
    x0 = 100
    assert np.all(x[:x0] == 0) and x[x0] != 0                      # B on the bundle's frame
    a = x0 + round(0.25 * SR)                                       # A 0.25 s after /reset
    assert x[a - 1] == pytest.approx(0.25, abs=1e-5) and x[a] > 0.25 + 1e-6
    fade = x0 + round(0.5 * SR)                                     # its fade from 0.5 s
    assert x[fade - 1] == pytest.approx(0.25 + 0.4, abs=1e-4)
    assert x[fade + round(0.125 * SR)] == pytest.approx(0.25 + 0.2, abs=2e-3)
    assert x[fade + round(0.25 * SR) + 10] == pytest.approx(0.25, abs=1e-4)


def test_start_group_waits_for_a_slow_load_then_starts_decks_on_one_frame(slow, media):
    live = slow
    c = live.client
    with Captured("stemdeck.control") as cap:
        c.send("/cue", "A", str(media / "slow_pos.wav"))      # takes 0.6 s
        c.send("/cue", "B", str(media / "neg.wav"))
        assert c.expect("/done", first="/cue") == ["/cue", 1100]
        sent = live.engine.frame
        c.send("/start_group", "A", "B", 0.0)                  # the time last, as clients send it
        assert c.expect("/done", first="/cue", timeout=3) == ["/cue", 100]
        x = window(live, 0.5)
    st = c.status()
    assert st["voices_playing"] == 2
    assert np.max(np.abs(x)) < 1e-6                 # +0.25 and -0.25 started on the same frame
    assert live.engine.frame - sent > 0.5 * SR       # and only after the slow load
    assert any("waiting for a deck to load" in line for line in cap.lines)
    # a deck that fails to load is left out with a /fail
    c.send("/cue", "C", str(media / "missing.wav"))
    assert c.expect("/fail")[0] == "/cue"
    c.send("/start_group", 0.0, "C")
    address, reason = c.expect("/fail")
    assert address == "/start_group" and "deck C failed to load" in reason


# -- status and server ----------------------------------------------------------------------------------

def test_status_replies(live):
    c = live.client
    with Captured("stemdeck.control") as cap:
        reply = c.ask("/get_status", reply="/status.reply")
    assert len(reply) == len(spec.SCSYNTH_STATUS_FIELDS)             # scsynth's layout
    assert any(line.startswith("status:") for line in cap.lines)   # /get_status also logs
    raw = c.ask("/status", reply="/status.reply")
    assert len(raw) == len(spec.SCSYNTH_STATUS_FIELDS) and raw[7] == SR
    detail = json.loads(c.ask("/status.json")[0])
    assert detail["sample_rate"] == SR and detail["buffer_size"] == live.block
    assert detail["uptime_s"] > 0 and detail["bar"] >= 1 and 1 <= detail["beat"] <= 4
    assert [d["deck"] for d in detail["decks"]] == list("ABCD")
    assert detail["osc"]["packets"] > 0 and "socket_drops" in detail["osc"]
    assert c.ask("/version")[:3] == ["stemdeck", 0, 1]


def test_sync_answers_after_earlier_loads(slow, media):
    c = slow.client
    c.send("/load_buffer", 200, str(media / "slow_dc.wav"))
    c.send("/sync", 7)
    got = []
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and ("/synced", [7]) not in got:
        got += c.drain(0.1)
    assert got.index(("/done", ["/load_buffer", 200])) < got.index(("/synced", [7]))


def test_notify_underrun_late_and_unsubscribe(live, media):
    c = live.client
    c.send("/notify", 1)
    c.expect("/done")
    c.drain(0.02)
    live.engine.make_late(40_000)                   # one 40 ms callback: an underrun
    count = c.expect("/underrun", timeout=2)[0]
    assert count >= 1
    load(live, media, 100, "dc.wav")
    c.send_bundle(ntp_in(-0.5), [("/play_stem", [100])])
    seconds, address = c.expect("/late", timeout=2)
    assert address == "/play_stem" and seconds == pytest.approx(0.5, abs=0.05)
    assert c.status()["late_commands"] >= 1
    c.send("/notify", 0)
    c.expect("/done")
    c.drain(0.01)                                   # what was sent before the unsubscribe
    live.after(0.6)                                 # beats keep coming at 120 BPM, not to us
    assert not [m for m in c.drain(0.05) if m[0] in ("/beat", "/underrun", "/late")]


# -- bad input -------------------------------------------------------------------------------------------

BAD = [
    (message_bytes("/stem_volume", [100]), "/stem_volume", "expects 2 arguments, got 1"),
    (message_bytes("/stem_volume", [100, "loud"]), "/stem_volume", "'loud' is not a number"),
    (message_bytes("/stem_volume", [100, float("nan")]), "/stem_volume", "not a finite number"),
    (message_bytes("/stem_volume", [100, float("inf")]), "/stem_volume", "not a finite number"),
    (message_bytes("/stem_volume", [100, float("-inf")]), "/stem_volume", "not a finite number"),
    (message_bytes("/stem_volume", [100, 7.0]), "/stem_volume", "out of range 0..4"),
    (message_bytes("/deck_filter", ["E", "low", 1.0]), "/deck_filter", "deck 'E' unknown"),
    (message_bytes("/deck_filter", ["A", "bass", 1.0]), "/deck_filter", "band 'bass' unknown"),
    (message_bytes("/stop_stem", [555]), "/stop_stem", "buffer 555 is not loaded"),
    (message_bytes("/play_stem", [9000]), "/play_stem", "out of range"),
    (message_bytes("/stemvolume", [100, 1.0]), "/stemvolume", "did you mean /stem_volume"),
    (b"/stem_volume\x00\x00\x00\x00,if\x00\x00\x00\x00\x64", "/stem_volume", "truncated"),
    (b"/stem_volume\x00\x00\x00\x00,ix\x00\x00\x00\x00\x64\x00\x00\x00\x00", "/stem_volume",
     "unknown OSC type tag 'x'"),
    (b"/stem_volume\x00", "?", "not a multiple of 4"),
    (b"hello world!", "?", "not an OSC packet"),
    (b"#bundle\x00" + b"\x00" * 7 + b"\x01" + b"\x00\x00\x00\x40/a\x00\x00", "#bundle",
     "bundle element 1 declares 64 bytes"),
    (b"#bundle\x00" + b"\x00" * 7 + b"\x01" + b"\x00\x00\x00\x04abcd", "#bundle",
     "neither a message nor a bundle"),
    (message_bytes("/stem_volume", [100, "x" * 40000]), "/stem_volume", "over the 32768-byte limit"),
]


def test_bad_input_gets_one_fail_each_and_changes_nothing(live, media):
    c = live.client
    load(live, media, 100, "dc.wav")
    c.send("/play_stem", 100, 1.0, 1.0, 1, 0.0)
    before = window(live)
    assert np.allclose(before, 0.5, atol=1e-4)
    for data, address, reason in BAD:
        c.send_raw(data)
        got = c.expect("/fail", timeout=2)
        assert got[0] == address and reason in got[1], (data[:40], got)
        extra = c.drain(0.02)
        assert not [m for m in extra if m[0] != "/beat"], extra          # exactly one reply
    assert np.allclose(window(live), 0.5, atol=1e-4)                     # the music is untouched
    counters = live.server.counters()
    assert counters["parse_errors"] >= 6 and counters["oversized"] == 1
    assert counters["internal_errors"] == 0
    assert c.status()["voices_playing"] == 1


def test_fail_log_lines_are_rate_limited(live):
    c = live.client
    with Captured("stemdeck.osc") as cap:
        for _ in range(200):
            c.send("/nope")
        settle(live)
        time.sleep(0.05)
        live.server.ratelog.flush()
    fails = [line for line in cap.lines if "/fail /nope" in line]
    assert 1 <= len(fails) <= 30
    assert any("similar lines suppressed" in line for line in cap.lines)
    assert len([m for m in c.drain(0.05) if m[0] == "/fail"]) == 200      # every one answered


# -- safety ---------------------------------------------------------------------------------------------

def test_allow_drops_other_sources_without_reply(media):
    with Rig(512, allow=["10.9.8.0/24"]) as r:
        r.client.send("/status")
        assert r.client.drain(0.3) == []
        assert r.server.counters()["not_allowed"] == 1
    with Rig(512, allow=["10.9.8.0/24", "127.0.0.0/8"]) as r:
        assert r.client.status()["sample_rate"] == SR


def test_media_root_refuses_paths_outside(media, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "songs").mkdir()
    (root / "songs" / "dc.wav").write_bytes((media / "dc.wav").read_bytes())
    os.symlink(media / "dcB.wav", root / "escape.wav")        # a link out of the root
    os.symlink(root / "songs" / "dc.wav", root / "inside.wav")
    with Rig(512, media_roots=[str(root)]) as r:
        c = r.client
        cases = [("/load_buffer", [100, str(media / "dc.wav")]),
                 ("/load_buffer", [101, "escape.wav"]),
                 ("/load_buffer", [102, "songs/../songs/dc.wav"]),
                 ("/load_buffer", [103, "/etc/hostname"]),
                 ("/play", ["A", "../dcB.wav", 0.0]),
                 ("/cue", ["B", str(media / "pos.wav")])]
        for address, args in cases:
            c.send(address, *args)
            got = c.expect("/fail")
            assert got[0] == address and got[1].startswith("outside media root"), got
        assert r.controller.buffers == {}                   # refused before anything changed
        c.send("/load_buffer", 110, "songs/dc.wav")          # relative: looked up in the root
        assert c.expect("/done") == ["/load_buffer", 110]
        c.send("/load_buffer", 111, "inside.wav")            # a link that stays inside
        assert c.expect("/done") == ["/load_buffer", 111]
        c.send("/load_buffer", 112, str(root / "songs" / "dc.wav"))
        assert c.expect("/done") == ["/load_buffer", 112]


def test_wildcard_host_warns_and_port_in_use_is_a_usage_error():
    engine = Engine(SR)
    parts = app.assemble(engine, app.live_loader(engine), lookahead=256,
                         osc={"host": "0.0.0.0", "port": 0})
    ctl, srv = parts.controller, parts.osc
    with Captured("stemdeck.osc") as cap:
        srv.start(ctl)
    try:
        assert any("all interfaces" in line and "--allow" in line for line in cap.lines)
        assert "(all interfaces)" in srv.describe()[0]
        assert srv.describe()[1].endswith("anyone on the network (no --allow)")
        port = srv.address[1]
        other = app.assemble(engine, app.live_loader(engine), lookahead=256,
                             osc={"host": "0.0.0.0", "port": port})
        with pytest.raises(UsageError, match="already in use"):
            other.osc.start(other.controller)
        other.controller.close()
    finally:
        srv.stop()
        ctl.close()


def test_flags_and_their_refusals(tmp_path):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--allow", "192.168.1.0/24", "--allow", "10.0.0.5",
                              "--media-root", str(tmp_path), "--tcp"])
    assert server_options(args) == {"allow": ["192.168.1.0/24", "10.0.0.5"],
                                    "media_roots": [str(tmp_path)], "tcp": True}
    assert server_options(parser.parse_args([])) == {"allow": [], "media_roots": [], "tcp": False}
    assert [str(n) for n in parse_allow(["10.0.0.5", "::1"])] == ["10.0.0.5/32", "::1/128"]
    with pytest.raises(UsageError, match="--allow 10.0.0.300"):
        parse_allow(["10.0.0.300"])
    with pytest.raises(UsageError, match="no such folder"):
        OscServer(Engine(SR), media_roots=[str(tmp_path / "nope")])


# -- TCP and the asyncio mode ------------------------------------------------------------------------

def _tcp_recv(sock) -> tuple:
    size = struct.unpack(">i", _exactly(sock, 4))[0]
    msg = wire.parse_packet(_exactly(sock, size))
    return msg.address, list(msg.args)


def _exactly(sock, n) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def test_tcp_length_prefixed_packets(media):
    with Rig(512, tcp=True) as r:
        s = socket.create_connection(r.server.address, timeout=3)
        try:
            for msg in (message_bytes("/status"), message_bytes("/sync", [3])):
                s.sendall(struct.pack(">i", len(msg)) + msg)
            assert _tcp_recv(s)[0] == "/status.reply"
            assert _tcp_recv(s) == ("/synced", [3])
            msg = message_bytes("/status.json")            # replies go back on the connection
            s.sendall(struct.pack(">i", len(msg)) + msg)
            address, args = _tcp_recv(s)
            assert address == "/status.json.reply" and json.loads(args[0])["sample_rate"] == SR
            s.sendall(struct.pack(">i", -5))                  # broken framing: /fail and closed
            address, args = _tcp_recv(s)
            assert address == "/fail" and "OSC 1.0 framing" in args[1]
            assert s.recv(10) == b""
        finally:
            s.close()
        assert r.client.status()["sample_rate"] == SR          # UDP unaffected


def test_asyncio_loop_mode_keeps_controller_calls_on_the_loop_thread(media):
    engine = Engine(SR)
    parts = app.assemble(engine, app.live_loader(engine), lookahead=256,
                         osc={"host": "127.0.0.1", "port": 0})
    ctl, srv = parts.controller, parts.osc
    loop = asyncio.new_event_loop()
    loop_thread = threading.Thread(target=loop.run_forever, daemon=True)
    loop_thread.start()
    seen = set()
    original = ctl.handle

    def handle(*a, **kw):
        seen.add(threading.get_ident())
        return original(*a, **kw)

    ctl.handle = handle
    started = threading.Event()
    loop.call_soon_threadsafe(lambda: (srv.start(ctl, loop=loop), started.set()))
    assert started.wait(5)
    c = Client(srv.address)
    try:
        assert c.ask("/version")[0] == "stemdeck"
        c.send("/nope")
        assert c.expect("/fail")[0] == "/nope"
        assert seen == {loop_thread.ident}
    finally:
        c.close()
        srv.stop()                                            # from another thread: waits for the loop
        loop.call_soon_threadsafe(loop.stop)
        loop_thread.join(5)
        loop.close()
        ctl.close()


def test_quit_answers_done_and_stops(media):
    quits = []
    with Rig(512, on_quit=lambda: quits.append(1)) as r:
        r.client.send("/quit")
        assert r.client.expect("/done") == ["/quit"]
        assert r.server.wait(2) and quits == [1]
        time.sleep(0.05)
        r.client.send("/status")
        assert r.client.drain(0.2) == []


# every message of the table has a live test above (a new message needs one);
# /schedule_c_at and /dummy: tests/test_osc_crowdstream.py
LIVE_TESTED = {"/schedule_c_at", "/dummy",
    "/load_buffer", "/play_stem", "/stem_bpm", "/play_stem_section", "/stop_stem", "/stem_volume",
    "/mixer_cleanup", "/test_tone", "/crossfade_levels", "/deck_levels", "/deck_filter", "/deck_eq",
    "/deck_eq_all", "/set_tempo", "/set_meter", "/print_clock", "/quantize", "/keylock",
    "/dance/total_movement", "/reset", "/play", "/fade", "/cue", "/start_group", "/get_status",
    "/status", "/status.json", "/sync", "/version", "/notify", "/quit", "/free_buffer",
}


def test_every_message_of_the_table_is_tested_live():
    assert set(spec.BY_ADDRESS) - LIVE_TESTED == set(), "add a live test for these messages"
    assert LIVE_TESTED - set(spec.BY_ADDRESS) == set()


def test_a_full_engine_queue_drops_and_counts_never_blocks():
    """The engine is not rendering, so its command ring fills: the excess is
    refused with /fail "server busy" and counted; the server stays responsive."""
    engine = Engine(SR)
    parts = app.assemble(engine, app.live_loader(engine), lookahead=256,
                         osc={"host": "127.0.0.1", "port": 0})
    ctl, srv = parts.controller, parts.osc.start(parts.controller)
    c = Client(srv.address)
    try:
        capacity = engine.state.ring.shape[0]
        sent = capacity + 300
        data = message_bytes("/deck_eq", ["A", "low", 40.0])
        replies = []
        for i in range(sent):
            c.send_raw(data)
            if i % 200 == 199:
                replies += c.drain(0.01)             # stay inside the sockets' receive buffers
        assert c.status()["sample_rate"] == SR       # still answering at once
        replies += c.drain(0.1)
        counters = srv.counters()
        tally = counters["by_address"]["/deck_eq"]
        assert counters["socket_drops"] == 0
        assert tally[0] + tally[1] == sent
        assert tally[1] == counters["busy_dropped"] > 0
        assert capacity - tally[0] <= osc_server.RING_RESERVE
        busy = [m for m in replies if m[0] == "/fail"]
        assert len(busy) == tally[1] and "server busy" in busy[0][1][1]
        assert counters["engine_dropped"] == 0       # the ring itself never overflowed
    finally:
        c.close()
        srv.stop()
        ctl.close()


def test_notify_accepts_supercolliders_client_id(live):
    c = live.client
    c.send("/notify", 1, 3)                          # as sclang sends it
    assert c.expect("/done", first="/notify") == ["/notify", 3, spec.MAX_LOGINS]
