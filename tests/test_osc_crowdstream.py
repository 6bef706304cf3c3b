"""crowdstream's message forms, live over UDP: each form its clients send is
taken as crowdstream's audio_server.py took it (python-osc's empty array,
extra trailing arguments, numeric strings, /start_group's start time
anywhere, omitted arguments, any-case decks and band prefixes), with its
effect measured on the recorded output or read back from /status.json.
"""

from __future__ import annotations

import json
import logging
import time

import numpy as np
import pytest

from osctools import SR, Rig, message_bytes, write_wav
from signals import dc


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    for name, data in {"dc.wav": dc(0.5, 2.0), "pos.wav": dc(0.25, 2.0),
                       "neg.wav": dc(-0.25, 2.0)}.items():
        write_wav(d, name, data)
    return d


@pytest.fixture(scope="module")
def rig(media):
    r = Rig(256).start()
    yield r
    r.stop()


@pytest.fixture
def live(rig):
    """The module's rig with nothing loaded, unity levels, 120 BPM."""
    c = rig.client
    for msg in (("/mixer_cleanup",), ("/deck_levels", 1, 1, 1, 1), ("/set_tempo", 120),
                ("/set_meter", 4), ("/print_clock", 0)):
        c.send(*msg)
    for deck in "ABCD":
        c.send("/deck_eq_all", deck, 50, 50, 50)
    settle(rig)
    c.drain(0.02)
    return rig


def settle(rig) -> int:
    """Every message sent so far was handled; returns a frame from which
    their effect is audible (past ramps and declicks)."""
    rig.client.send("/sync", 777)
    rig.client.expect("/synced", first=777, timeout=5)
    return rig.engine.frame + rig.block + 1024


def level(rig, seconds: float = 0.1) -> np.ndarray:
    start = settle(rig)
    x = rig.driver.samples(start, start + int(seconds * SR))
    return x


def detail(rig) -> dict:
    return json.loads(rig.client.ask("/status.json")[0])


def no_fail(rig):
    """No /fail came back for anything sent so far."""
    settle(rig)
    fails = [r for r in rig.client.drain(0.05) if r[0] == "/fail"]
    assert not fails, fails


def load(rig, media, bid, name):
    rig.client.send("/load_buffer", bid, str(media / name))
    assert rig.client.expect("/done", first="/load_buffer", timeout=5) == ["/load_buffer", bid]


# -- python-osc's empty array ----------------------------------------------------------------------

def test_reset_sent_as_python_osc_empty_array_resets_bar_one(live):
    c = live.client
    c.send("/set_tempo", 400)                      # 6.7 beats a second: bar 3 within 1.5 s
    deadline = time.monotonic() + 10
    while detail(live)["tempo"]["beats"] < 9:
        assert time.monotonic() < deadline, "the beat clock did not run"
    before = detail(live)["osc"]["ignored_arguments"]
    c.send_raw(message_bytes("/reset", [[]]))     # ",[]": what crowdstream's clients send
    no_fail(live)
    st = detail(live)
    assert st["tempo"]["bar"] == 1 and st["tempo"]["beats"] < 4    # time zero is now
    assert st["osc"]["ignored_arguments"] == before + 1


@pytest.mark.parametrize("address, reply", [
    ("/mixer_cleanup", "/done"), ("/get_status", "/status.reply"), ("/status", "/status.reply"),
    ("/status.json", "/status.json.reply"), ("/version", "/version.reply"),
])
def test_messages_without_arguments_take_an_empty_array(live, address, reply):
    c = live.client
    c.send_raw(message_bytes(address, [[]]))
    assert c.expect(reply, timeout=3)
    no_fail(live)


# -- extra trailing arguments ----------------------------------------------------------------------

def test_extra_trailing_arguments_are_ignored_counted_and_logged_once(live, media):
    c = live.client
    load(live, media, 100, "dc.wav")
    before = detail(live)["osc"]["ignored_arguments"]
    logger = logging.getLogger("stemdeck.osc")
    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        c.send("/play_stem", 100, 1.0, 1.0, 1, 0.0, 0, "extra")     # one past quantize
        c.send("/stem_volume", 100, 0.5, 99, "more")                  # two past volume
        c.send("/stem_volume", 100, 0.5, 7)
        x = level(live)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    no_fail(live)
    assert np.allclose(x, 0.25, atol=1e-5)            # 0.5 x volume 0.5: the extras changed nothing
    assert detail(live)["osc"]["ignored_arguments"] == before + 4
    said = [line for line in lines if "ignored" in line]
    assert [s for s in said if s.startswith("OSC: /play_stem:")] == [
        "OSC: /play_stem: 1 argument ignored (usage: /play_stem id [rate] [volume] [loop] "
        "[start_pos] [quantize]); further ones are only counted (/status.json osc.ignored_arguments)"]
    assert len([s for s in said if s.startswith("OSC: /stem_volume:")]) == 1   # once per address


def test_a_score_still_refuses_extra_arguments():
    from stemdeck.control.score import ScoreError, parse_score

    with pytest.raises(ScoreError, match=r"mix\.txt:1: /stem_volume: expects 2 arguments, got 3"):
        parse_score("5 /stem_volume 100 0.5 0.5\n", filename="mix.txt")


# -- numeric strings, omitted arguments, names -----------------------------------------------------

def test_numeric_strings_are_numbers(live, media):
    c = live.client
    c.send("/load_buffer", "100", str(media / "dc.wav"))
    assert c.expect("/done", first="/load_buffer", timeout=5) == ["/load_buffer", 100]
    c.send("/play_stem", "100", "1.0", "0.5", "1", "0")
    c.send("/crossfade_levels", " 0.5", "1")
    x = level(live)
    no_fail(live)
    assert np.allclose(x, 0.125, atol=1e-5)          # 0.5 x 0.5 x deck A at 0.5


def test_play_stem_with_only_an_id_plays_at_crowdstreams_defaults(live, media):
    c = live.client
    load(live, media, 100, "dc.wav")
    c.send("/play_stem", 100)                         # rate 1, volume 0.8, loop, from 0
    x = level(live)
    no_fail(live)
    assert np.allclose(x, 0.4, atol=1e-5)


def test_deck_levels_with_fewer_values_keeps_the_rest(live, media):
    c = live.client
    load(live, media, 2100, "dc.wav")                 # deck C
    c.send("/play_stem", 2100, 1.0, 1.0)
    c.send("/deck_levels", 0.2, 0.3)                  # A and B only: C stays at 1
    x = level(live)
    no_fail(live)
    assert np.allclose(x, 0.5, atol=1e-5)
    assert [d["level"] for d in detail(live)["decks"]] == pytest.approx([0.2, 0.3, 1.0, 1.0])


def test_any_case_decks_and_band_prefixes(live):
    c = live.client
    c.send("/deck_eq", "a", "Lows", 25)
    c.send("/deck_eq", " b ", "MID", 0)
    c.send("/deck_filter", "c", "hi", 0.5)
    c.send("/print_clock")                             # no argument: on, as crowdstream
    no_fail(live)
    decks = detail(live)["decks"]
    assert decks[0]["eq_percent"][0] == pytest.approx(25, abs=0.01)
    assert decks[1]["eq_percent"][1] == pytest.approx(0, abs=0.01)
    assert decks[2]["eq_percent"][2] < 50
    c.send("/print_clock", 0)


# -- /start_group's argument order -----------------------------------------------------------------

@pytest.mark.parametrize("args", [(0.0, "A", "B"), ("A", "B", 0.0), ("a", "0.0", "b"), ("A", 0, "B")])
def test_start_group_takes_its_start_time_anywhere(live, media, args):
    c = live.client
    c.send("/cue", "A", str(media / "pos.wav"))
    c.send("/cue", "B", str(media / "neg.wav"))
    assert c.expect("/done", first="/cue", timeout=5)[0] == "/cue"
    assert c.expect("/done", first="/cue", timeout=5)[0] == "/cue"
    c.send("/start_group", *args)
    x = level(live, 0.3)
    no_fail(live)
    assert detail(live)["voices_playing"] == 2
    assert np.max(np.abs(x)) < 1e-6                   # +0.25 and -0.25 on the same frame


def test_start_group_without_a_time_says_where_it_goes(live):
    c = live.client
    c.send("/start_group", "A", "B")
    address, reason = c.expect("/fail")
    assert address == "/start_group" and "missing start_at" in reason and "first or last" in reason


# -- crowdstream's debugging messages --------------------------------------------------------------

def test_schedule_c_at_starts_buffer_2100_at_seconds_since_the_start(live, media):
    c = live.client
    load(live, media, 2100, "dc.wav")
    target = live.engine.frame + int(0.4 * SR)         # frame 0 is the server's start
    c.send("/schedule_c_at", target / SR)
    live.driver.wait_frame(target + 2048)
    x = live.driver.samples(target - 256, target + 2048)
    no_fail(live)
    assert np.all(x[:256] == 0) and np.allclose(x[256 + 256:], 0.4, atol=1e-5)   # 0.5 x volume 0.8
    assert x[256] != 0                                 # on its frame


def test_dummy_is_logged_and_its_schedule_c_at_form_runs(live, media):
    c = live.client
    load(live, media, 2100, "dc.wav")
    c.send("/dummy", "hello", 3)
    c.send("/dummy")
    c.send("/dummy", "schedule_c_at", 0.0)            # already past: at once
    x = level(live)
    no_fail(live)
    assert np.allclose(x, 0.4, atol=1e-5)
    c.send("/mixer_cleanup")
    c.send("/schedule_c_at", 1.0)                       # refused when 2100 holds nothing
    address, reason = c.expect("/fail")
    assert address == "/schedule_c_at" and "buffer 2100 is not loaded" in reason
