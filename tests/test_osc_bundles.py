"""Timetagged OSC bundles on a live server: each lands on the frame of its
time, to the sample; late, immediate, nested, future, invalid and group-start
bundles. The engine runs on a real-time clock (tests/osctools.py) whose
schedule is known, so "the frame of its time" is checked against the clock
that rendered it, not only against the server's own mapping.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from osctools import SR, Rig, bundle_bytes, message_bytes, mono_of_ntp, ntp_in, write_wav
from signals import dc, onset
from stemdeck.control import osc_wire as wire
from stemdeck.control.osc import schedule as osc_server

BLOCK = 256


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("bundle_media")
    write_wav(d, "a.wav", dc(0.25, 3.0))
    write_wav(d, "b.wav", dc(0.125, 3.0))
    write_wav(d, "pos.wav", dc(0.25, 3.0))
    write_wav(d, "neg.wav", dc(-0.25, 3.0))
    return d


@pytest.fixture(scope="module")
def rig(media):
    r = Rig(BLOCK).start()
    c = r.client
    c.send("/load_buffer", 100, str(media / "a.wav"))
    c.send("/load_buffer", 1100, str(media / "b.wav"))
    c.send("/sync", 1)
    c.expect("/synced", timeout=5)
    r.after(0.5)                    # let the frame clock settle: half a second of audio rendered
    yield r
    r.stop()


@pytest.fixture
def live(rig):
    c = rig.client
    c.send("/stop_stem", 100)
    c.send("/stop_stem", 1100)
    c.send("/notify", 0)
    c.send("/sync", 2)
    c.expect("/synced", first=2)
    rig.driver.wait_frame(rig.engine.frame + 2048)
    c.drain(0.01)
    return rig


PLAY_A = ("/play_stem", [100, 1.0, 1.0, 1, 0.0])     # +0.25
PLAY_B = ("/play_stem", [1100, 1.0, 1.0, 1, 0.0])    # +0.125


def recorded_around(rig, frame, before=2000, after=4000):
    x = rig.driver.samples(frame - before, frame + after)
    return x, before


@pytest.mark.parametrize("ahead", [0.05, 0.4])     # posted at once / held in the schedule first
def test_bundle_lands_on_the_frame_of_its_time(live, ahead):
    tt = ntp_in(ahead)
    relocks = live.server.clock.relocks
    live.client.send_bundle(tt, [PLAY_A])
    frame = live.server.clock.frame_for(tt)
    x, x0 = recorded_around(live, frame)
    start = onset(x) - x0
    assert live.server.clock.relocks == relocks
    assert start == 0                               # exactly the frame the server mapped it to
    # ... and that frame is the one the real-time clock rendered at that time
    ideal = live.driver.frame_at_monotonic(mono_of_ntp(tt))
    assert abs(frame - ideal) <= BLOCK, (frame, ideal)
    assert live.client.status()["late_commands"] == 0


def test_bundles_n_frames_apart_start_exactly_n_frames_apart(live):
    tt = ntp_in(0.3)
    n = 1000
    tt2 = tt + -(-(n << 32) // SR)                  # n frames later, rounded up to the next tick
    live.client.send_bundle(tt2, [PLAY_B])          # sent out of order on purpose
    live.client.send_bundle(tt, [PLAY_A])
    frame = live.server.clock.frame_for(tt)
    x, x0 = recorded_around(live, frame)
    a = onset(x) - x0
    b = onset(x[x0 + 300:] - 0.25, 1e-6) + 300      # where B joins A's steady 0.25
    assert (a, b) == (0, n)


def test_nested_bundle_runs_at_its_own_time_never_before_its_parent(live):
    tt = ntp_in(0.3)
    inner_later = wire.encode_bundle(tt + (SR // 10 << 32) // SR, [message_bytes(*PLAY_B)])
    outer = wire.encode_bundle(tt, [message_bytes(*PLAY_A), inner_later])
    live.client.send_raw(outer)
    frame = live.server.clock.frame_for(tt)
    x, x0 = recorded_around(live, frame, after=8000)
    assert onset(x) == x0
    assert onset(x[x0 + 300:] - 0.25, 1e-6) + 300 == SR // 10

    live.client.send("/stop_stem", 100)
    live.client.send("/stop_stem", 1100)
    live.after(0.1)                                 # both stopped (5 ms fades) before the next bundle
    tt = ntp_in(0.3)
    inner_earlier = wire.encode_bundle(tt - (1 << 32), [message_bytes(*PLAY_B)])   # 1 s before
    live.client.send_raw(wire.encode_bundle(tt, [inner_earlier]))
    frame = live.server.clock.frame_for(tt)
    x, x0 = recorded_around(live, frame)
    assert onset(x) == x0                           # held to the enclosing bundle's time


def test_immediate_timetag_runs_now(live):
    live.client.send_bundle(wire.IMMEDIATELY, [("/status", [])])
    assert live.client.expect("/status.reply", timeout=0.5)
    sent = live.engine.frame
    live.client.send_bundle(wire.IMMEDIATELY, [PLAY_A])
    x = live.driver.samples(sent - BLOCK, sent + 4 * BLOCK)
    start = onset(x) - BLOCK
    assert 0 <= start <= 3 * BLOCK                  # the next block or so


def test_late_bundle_runs_at_once_counted_and_reported(live):
    c = live.client
    c.send("/notify", 1)
    c.expect("/done")
    late_before = c.status()["late_commands"]
    sent = live.engine.frame
    c.send_bundle(ntp_in(-0.25), [PLAY_A, ("/stem_volume", [100, 0.5])])
    seconds, address = c.expect("/late")
    assert address == "/play_stem" and seconds == pytest.approx(0.25, abs=0.03)
    x = live.driver.samples(sent - BLOCK, sent + 8 * BLOCK)
    assert onset(x) is not None and onset(x) - BLOCK <= 4 * BLOCK
    assert c.status()["late_commands"] == late_before + 1          # one bundle, counted once
    assert live.server.counters()["late"] >= 1


def test_future_bundle_replies_when_it_runs(live):
    c = live.client
    sent = time.monotonic()
    c.send_bundle(ntp_in(0.5), [("/sync", [77])])
    c.expect("/synced", first=77, timeout=2)
    waited = time.monotonic() - sent
    assert 0.5 - osc_server.HORIZON_S - 0.05 <= waited <= 0.6


def test_start_group_in_a_bundle_starts_cued_decks_on_its_frame(live, media):
    c = live.client
    c.send("/cue", "C", str(media / "pos.wav"))
    c.send("/cue", "D", str(media / "neg.wav"))
    c.expect("/done", first="/cue")
    c.expect("/done", first="/cue")
    c.send("/reset")
    tt = ntp_in(0.3)
    c.send_bundle(tt, [("/start_group", [0.0, "C", "D"]), ("/play_stem", [100, 1.0, 1.0, 1, 0.0])])
    frame = live.server.clock.frame_for(tt)
    x, x0 = recorded_around(live, frame, after=20000)
    assert onset(x) == x0                           # the marker stem on the bundle's frame
    assert np.allclose(x[x0 + 300:], 0.25, atol=1e-6)   # C and D cancel: the same frame
    assert c.status()["voices_playing"] == 3
    c.send("/stop_stem", 2100)
    c.send("/stop_stem", 3100)


def test_invalid_bundles_are_refused_whole(live):
    c = live.client
    good = message_bytes(*PLAY_A)
    head = wire.BUNDLE_TAG + wire.IMMEDIATELY.to_bytes(8, "big")
    short = head + (len(good) - 4).to_bytes(4, "big") + good      # the last argument cut off
    cut_size = bytearray(wire.encode_bundle(wire.IMMEDIATELY, [good, message_bytes("/status")]))
    cut_size[16 + 4 + len(good):16 + 8 + len(good)] = (1 << 20).to_bytes(4, "big")
    deep = good
    for _ in range(10):
        deep = wire.encode_bundle(wire.IMMEDIATELY, [deep])
    sent = live.engine.frame
    cases = ((short, "bundle element 1 (/play_stem): truncated: argument 5"),
             (bytes(cut_size), "bundle element 2 declares 1048576 bytes"),
             (deep, "nested more than 8 deep"),
             (head + b"\x00\x00\x00\x00", "bundle element 1 declares 0 bytes"),
             (head + b"\x00\x00\x00\x04abcd", "neither a message nor a bundle"),
             (b"#bundle" + bytes(6), "not a multiple of 4"),
             (b"#bundle" + bytes(5), "truncated bundle: no room for its timetag"),
             (b"#bungle\x00" + bytes(8), "not '#bundle'"))
    for data, reason in cases:
        c.send_raw(data)
        address, why = c.expect("/fail")
        assert address == "#bundle" and reason in why, (data[:24], why)
        assert why.endswith("nothing in the bundle ran")
    live.after(0.1)                                 # a tenth of a second of audio in which nothing may start
    assert np.all(live.driver.samples(sent, live.engine.frame) == 0)   # nothing in them ran
    assert all(m[0] == "/beat" for m in c.drain(0.05))                  # one reply each


def test_schedule_is_bounded_and_absurd_timetags_refused(live, monkeypatch):
    c = live.client
    monkeypatch.setattr(osc_server, "MAX_SCHEDULED", 3)
    tt = ntp_in(5.0)
    for _ in range(3):
        c.send_bundle(tt, [("/stem_volume", [100, 1.0])])
    c.send_bundle(tt, [("/stem_volume", [100, 1.0])])
    address, reason = c.expect("/fail")
    assert address == "/stem_volume" and "already wait in future bundles" in reason
    assert live.server.counters()["scheduled"] == 3
    c.send_bundle(ntp_in(3 * 86400), [("/stem_volume", [100, 1.0])])
    assert "more than a day" in c.expect("/fail")[1]
    assert live.server.counters()["schedule_dropped"] == 2


def test_bundles_run_at_once_when_the_audio_clock_is_stopped(media):
    from osctools import Client
    from stemdeck import app
    from stemdeck.engine import Engine

    engine = Engine(SR)
    parts = app.assemble(engine, app.live_loader(engine), lookahead=BLOCK,
                         osc={"host": "127.0.0.1", "port": 0})
    ctl, srv = parts.controller, parts.osc.start(parts.controller)
    c = Client(srv.address)
    try:
        c.send_bundle(ntp_in(0.5), [("/sync", [5])])
        assert c.expect("/synced", timeout=0.3) == [5]       # not held: nothing to time it by
    finally:
        c.close()
        srv.stop()
        ctl.close()


def test_output_latency_moves_the_frame_earlier_by_that_much(media):
    latency = 0.05                         # a timetag names when a frame is heard
    with Rig(BLOCK, output_latency=lambda: latency) as r:
        r.client.send("/load_buffer", 100, str(media / "a.wav"))
        r.client.expect("/done")
        r.after(0.5)                       # let the frame clock settle, as the live fixture does
        tt = ntp_in(0.3)
        r.client.send_bundle(tt, [PLAY_A])
        frame = r.server.clock.frame_for(tt)
        x, x0 = recorded_around(r, frame)
        assert onset(x) == x0
        ideal = r.driver.frame_at_monotonic(mono_of_ntp(tt)) - latency * SR
        assert abs(frame - ideal) <= BLOCK, (frame, ideal)


def test_timetag_conversion_is_exact():
    ns = 1_700_000_000_123_456_789
    tt = wire.ntp_from_unix_ns(ns)
    assert tt >> 32 == 1_700_000_000 + wire.NTP_UNIX_OFFSET
    assert abs(wire.unix_from_ntp(tt) - ns / 1e9) < 1e-6
    assert bundle_bytes(tt, [("/x", [])])[8:16] == tt.to_bytes(8, "big")
