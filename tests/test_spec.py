"""The OSC message table: every message's validation (good, wrong count, wrong
type, NaN, inf, out of range, unknown deck/band) and the reason text a person
reads in ``/fail``; then the Controller applying the table (on a recording
engine: no audio needed)."""

from __future__ import annotations

import math
import shlex
import threading

import numpy as np
import pytest

from stemdeck.control import spec
from stemdeck.control.arg_types import bound_text
from stemdeck.control.controller import Controller
from stemdeck.control.planning import RecordingEngine
from stemdeck.media.simple_loaders import ImmediateLoader, ThreadedLoader
from stemdeck.errors import CommandError, MediaError

ALL = [m.address for m in spec.MESSAGES]


def example_args(msg: spec.Message) -> list:
    """The documented example's arguments, as OSC would carry them (typed)."""
    words = shlex.split(msg.example)
    assert words[0] == msg.address
    call = spec.parse(msg.address, words[1:])
    out = []
    for arg in msg.args:
        value = call.values[arg.name]
        values = value if arg.variadic else (value,)
        for v in values:
            if v is spec.KEEP or v is None:
                continue
            if arg.type == "deck":
                out.append(spec.DECK_NAMES[v])
            elif arg.type == "band":
                out.append(spec.BAND_NAMES[v])
            elif arg.type == "bool":
                out.append(int(v))
            else:
                out.append(v)
    return out


def fails(address, args, *fragments):
    with pytest.raises(CommandError) as info:
        spec.parse(address, args)
    text = str(info.value)
    assert text.startswith(address + ": "), text
    for fragment in fragments:
        assert fragment in text, text
    return text


# -- the table itself -----------------------------------------------------------------------------

def test_every_crowdstream_message_is_in_the_table():
    crowdstream = ["/load_buffer", "/play_stem", "/play_stem_section", "/stop_stem", "/stem_volume",
                   "/crossfade_levels", "/deck_levels", "/deck_filter", "/deck_eq", "/deck_eq_all",
                   "/get_status", "/test_tone", "/mixer_cleanup", "/set_tempo", "/set_meter",
                   "/print_clock", "/dance/total_movement", "/reset", "/play", "/fade", "/cue",
                   "/start_group"]
    for address in crowdstream:
        assert address in spec.BY_ADDRESS


@pytest.mark.parametrize("address", ALL)
def test_entry_is_complete(address):
    msg = spec.BY_ADDRESS[address]
    assert msg.summary and msg.example and msg.group
    assert hasattr(Controller, "on_" + msg.handler), f"no handler on_{msg.handler}"
    for i, arg in enumerate(msg.args):
        assert arg.type in spec.TYPES
        assert arg.doc
        if arg.variadic:
            assert i == len(msg.args) - 1
    # required arguments come first
    required = [a.required for a in msg.args]
    assert required == sorted(required, reverse=True)


def test_constants_match_the_engine():
    from stemdeck.engine import commands, layout
    from stemdeck.engine.dsp import eq

    assert spec.TEST_TONE_BUFFER == layout.MAX_BUFFER_IDS - 1
    assert spec.MAX_BUFFER_ID < spec.TEST_TONE_BUFFER
    assert spec.MAX_EQ_GAIN == eq.MAX_GAIN
    assert spec.DECK_NAMES == commands.DECK_NAMES
    for deck, (lo, hi) in enumerate(spec.DECK_BUFFER_RANGES):
        assert commands.deck_for_buffer(lo) == deck and commands.deck_for_buffer(hi - 1) == deck


# -- every message, systematically --------------------------------------------------------------

@pytest.mark.parametrize("address", ALL)
def test_example_parses_as_text_and_as_osc(address):
    msg = spec.BY_ADDRESS[address]
    from_text = spec.parse(address, shlex.split(msg.example)[1:])
    from_osc = spec.parse(address, example_args(msg))
    assert from_text.values == from_osc.values


@pytest.mark.parametrize("address", [m.address for m in spec.MESSAGES if m.min_args])
def test_too_few_arguments(address):
    msg = spec.BY_ADDRESS[address]
    args = example_args(msg)[:msg.min_args - 1]
    fails(address, args, "expects", f"got {len(args)}", msg.usage())


@pytest.mark.parametrize("address", [m.address for m in spec.MESSAGES if m.max_args is not None])
def test_too_many_arguments(address):
    msg = spec.BY_ADDRESS[address]
    args = example_args(msg) + [1] * (msg.max_args + 1 - len(example_args(msg)))
    text = fails(address, args, "got")
    assert ("takes no arguments" in text) or ("expects" in text)


def _numeric_slots():
    for msg in spec.MESSAGES:
        if msg.reorder is not None:
            continue
        for i, arg in enumerate(msg.args):
            if arg.type in ("int", "float"):
                yield pytest.param(msg.address, i, id=f"{msg.address}:{arg.name}")


def _with(msg, i, value):
    args = example_args(msg)
    while len(args) <= i:       # fill optional arguments before the one under test
        args.append(_good(msg.args[len(args)]))
    args[i] = value
    return args


def _good(arg):
    if arg.type == "deck":
        return "A"
    if arg.type == "band":
        return "low"
    if arg.type == "bool":
        return 1
    if arg.type in ("path", "string"):
        return "x.wav"
    return arg.lo if arg.lo is not None else 0


@pytest.mark.parametrize("address,i", list(_numeric_slots()))
def test_numeric_argument_validation(address, i):
    msg = spec.BY_ADDRESS[address]
    arg = msg.args[i]
    fails(address, _with(msg, i, float("nan")), f"{arg.name} nan is not a finite number")
    fails(address, _with(msg, i, float("inf")), f"{arg.name} inf is not a finite number")
    fails(address, _with(msg, i, float("-inf")), f"{arg.name} -inf is not a finite number")
    fails(address, _with(msg, i, "loud"), f"{arg.name} 'loud' is not a number")
    fails(address, _with(msg, i, True), "boolean")
    if arg.hi is not None:
        too_big = arg.hi + (1 if arg.type == "int" else arg.hi * 0.5 + 1)
        fails(address, _with(msg, i, too_big), f"{arg.name} ", "out of range",
              f"{bound_text(arg.lo)}..{bound_text(arg.hi)}")
    if arg.lo is not None:
        fails(address, _with(msg, i, arg.lo - 1), "out of range")
    if arg.type == "int":
        fails(address, _with(msg, i, (arg.lo or 0) + 0.5), "is not a whole number")
    # the ends of the range are allowed; an int where a float is expected, too
    for edge in (arg.lo, arg.hi):
        if edge is not None:
            spec.parse(address, _with(msg, i, int(edge) if float(edge).is_integer() else edge))


@pytest.mark.parametrize("address,i", [
    pytest.param(m.address, i, id=f"{m.address}:{a.name}") for m in spec.MESSAGES
    for i, a in enumerate(m.args) if a.type in ("deck", "band") and m.reorder is None])
def test_unknown_deck_or_band(address, i):
    msg = spec.BY_ADDRESS[address]
    arg = msg.args[i]
    if arg.type == "deck":
        for bad in ("E", "", "AB", 4, -1, 1.5):
            fails(address, _with(msg, i, bad), "deck", "unknown: use A, B, C or D")
    else:
        for bad in ("treble", "", 3, -1):
            fails(address, _with(msg, i, bad), "band", "unknown: use low, mid or high")


@pytest.mark.parametrize("address,i", [
    pytest.param(m.address, i, id=f"{m.address}:{a.name}") for m in spec.MESSAGES
    for i, a in enumerate(m.args) if a.type == "path"])
def test_path_must_be_a_string(address, i):
    msg = spec.BY_ADDRESS[address]
    fails(address, _with(msg, i, 5), "is not a string")
    fails(address, _with(msg, i, "  "), "is empty")
    fails(address, _with(msg, i, b"blob"), "is not a string")


@pytest.mark.parametrize("address,i", [
    pytest.param(m.address, i, id=f"{m.address}:{a.name}") for m in spec.MESSAGES
    for i, a in enumerate(m.args) if a.type == "bool"])
def test_bool_is_0_or_1(address, i):
    msg = spec.BY_ADDRESS[address]
    fails(address, _with(msg, i, 2), "use 0 or 1")
    fails(address, _with(msg, i, float("nan")), "not a finite number")
    for good, expect in ((0, False), (1, True), (True, True), (False, False), (1.0, True)):
        assert spec.parse(address, _with(msg, i, good)).values[msg.args[i].name] is expect


# -- specific messages and conversions ------------------------------------------------------------

def test_reason_reads_like_the_brief():
    assert fails("/stem_volume", [100, 7.0]) == "/stem_volume: volume 7.0 out of range 0..4"


def test_float32_values_are_shown_as_sent():
    f32 = float(np.float32(4.2))           # what python-osc hands over for 4.2
    assert fails("/stem_volume", [100, f32]) == "/stem_volume: volume 4.2 out of range 0..4"


def test_ints_floats_and_numeric_strings():
    v = spec.parse("/play_stem", [100.0, 1, "0.5", 0, 0]).values
    assert v == {"id": 100, "rate": 1.0, "volume": 0.5, "loop": False, "start_pos": 0.0,
                 "quantize": None}
    assert isinstance(v["id"], int) and isinstance(v["rate"], float)
    assert spec.parse("/play_stem", [np.int32(100), np.float32(1.5)]).values["rate"] == 1.5
    fails("/play_stem", [100.5], "id 100.5 is not a whole number")
    fails("/play_stem", [None], "nil")


def test_play_stem_defaults_are_crowdstreams():
    v = spec.parse("/play_stem", [1100]).values
    assert v == {"id": 1100, "rate": 1.0, "volume": 0.8, "loop": True, "start_pos": 0.0,
                 "quantize": None}


def test_decks_and_bands_as_crowdstream_sends_them():
    assert spec.parse("/deck_eq", ["a", "LOW", 50]).values == {"deck": 0, "band": 0, "percent": 50.0}
    assert spec.parse("/deck_eq", [" B ", "mids", 0]).values["band"] == 1
    assert spec.parse("/deck_eq", ["D", "hi", 100]).values == {"deck": 3, "band": 2, "percent": 100.0}
    assert spec.parse("/deck_eq", [2, 1, 25]).values == {"deck": 2, "band": 1, "percent": 25.0}
    assert spec.parse("/deck_filter", ["C", "high", 2]).values["gain"] == 2.0
    fails("/deck_filter", ["C", "high", 2.5], "gain 2.5 out of range 0..2")
    fails("/deck_eq", ["A", "low", 101], "percent 101 out of range 0..100 %")


def test_deck_levels_keeps_omitted_levels():
    v = spec.parse("/deck_levels", [1.0, 0.5]).values
    assert v["a"] == 1.0 and v["b"] == 0.5 and v["c"] is spec.KEEP and v["d"] is spec.KEEP
    assert all(x is spec.KEEP for x in spec.parse("/deck_levels", []).values.values())
    fails("/deck_levels", [1, 1, 1, 1, 1], "expects 0 to 4 arguments, got 5")


def test_start_group_time_first_or_last():
    assert spec.parse("/start_group", [4.0, "A", "b"]).values == {"start_at": 4.0, "deck": (0, 1)}
    assert spec.parse("/start_group", ["A", "B", 4]).values == {"start_at": 4.0, "deck": (0, 1)}
    assert spec.parse("/start_group", ["4.5", "C"]).values == {"start_at": 4.5, "deck": (2,)}
    fails("/start_group", ["A", "B"], "missing start_at")
    fails("/start_group", [1.0], "expects at least 2 arguments, got 1")
    fails("/start_group", [], "expects at least 2 arguments, got 0")
    fails("/start_group", [1.0, "A", "Z"], "deck 'Z' unknown")
    fails("/start_group", [float("nan"), "A"], "start_at nan is not a finite number")
    fails("/start_group", [-1.0, "A"], "start_at -1.0 out of range")


def test_unknown_addresses():
    with pytest.raises(CommandError, match=r"^/fad: unknown address \(did you mean /fade\?\)$"):
        spec.parse("/fad", [])
    with pytest.raises(CommandError, match="^/nothing_like_it: unknown address$"):
        spec.parse("/nothing_like_it", [])
    with pytest.raises(CommandError, match="is not an OSC address"):
        spec.parse("play_stem", [100])


def test_messages_without_arguments_refuse_arguments():
    fails("/reset", [1], "takes no arguments, got 1")
    fails("/mixer_cleanup", ["now"], "takes no arguments")


# -- the controller, on a recording engine ----------------------------------------------------------

def fake_load(frames=44100 * 2):
    def load(path, sample_rate):
        if "missing" in path:
            raise MediaError(f"no such file: {path}")
        return np.zeros((frames, 2), np.float32)
    return load


def make(**kw):
    engine = RecordingEngine()
    kw.setdefault("loader", ImmediateLoader(fake_load()))
    return engine, Controller(engine, **kw)


def calls(engine, name):
    return [c for c in engine.calls if c[0] == name]


def test_fail_and_done_replies():
    engine, c = make()
    assert c.handle("/stem_volume", [100, 7.0]) == [("/fail", ("/stem_volume", "volume 7.0 out of range 0..4"))]
    assert c.handle("/load_buffer", [100, "a.wav"]) == [("/done", ("/load_buffer", 100))]
    assert c.handle("/play_stem", [101]) == [
        ("/fail", ("/play_stem", "buffer 101 is not loaded: send /load_buffer 101 <path> first"))]
    assert c.handle("/load_buffer", [102, "missing.wav"]) == [
        ("/fail", ("/load_buffer", "buffer 102: no such file: missing.wav"))]
    assert c.handle("/play_stem", [102])[0][1][1].startswith("buffer 102 failed to load: no such file")
    assert c.handle("/nope", []) == [("/fail", ("/nope", "unknown address"))]
    assert c.handle("/notify", [1])[0][0] == "/fail"       # live only: needs the server's hook


def test_same_file_twice_reuses_the_sample():
    engine, c = make()
    c.handle("/load_buffer", [100, "a.wav"])
    c.handle("/load_buffer", [1100, "./a.wav", "again"])
    assert len(calls(engine, "add_sample")) == 1
    assert [b[1][1] for b in calls(engine, "bind")] == [0, 0]
    assert c.buffers[1100].name == "again" and c.buffers[100].name == "a"
    # tempo following: every bound buffer gets the base tempo as its own
    assert [s[1] for s in calls(engine, "set_source_bpm")] == [(100, 120.0), (1100, 120.0)]


def test_reload_replaces_the_sample_when_ready():
    # issue 5: loading into a playing ID replaces it (the engine crossfades at
    # the same position); crowdstream stopped the stem instead
    engine, c = make()
    c.handle("/load_buffer", [100, "a.wav"], at=0)
    c.handle("/play_stem", [100], at=10)
    c.handle("/load_buffer", [100, "b.wav"], at=20)
    assert ("bind", (100, 1), {"at": 20}) in engine.calls
    assert not any(x[0] in ("unbind", "stop") for x in engine.calls)
    assert c.playing(100, 30) and c.buffers[100].path == "b.wav"


def test_deck_mapping_and_levels():
    engine, c = make()
    c.handle("/deck_levels", [0.5, 0.25], at=5)
    assert calls(engine, "set_deck_level") == [("set_deck_level", (0, 0.5), {"ramp": 0.0, "at": 5}),
                                               ("set_deck_level", (1, 0.25), {"ramp": 0.0, "at": 5})]
    c.handle("/crossfade_levels", [0.0, 1.0], at=6)
    assert c.levels == [0.0, 1.0, 1.0, 1.0]
    c.handle("/deck_eq", ["B", "low", 25], at=7)
    assert calls(engine, "set_deck_eq")[-1] == ("set_deck_eq", (1, 0, 0.25), {"at": 7})
    c.handle("/deck_eq_all", ["C", 0, 50, 100], at=8)
    gains = [x[1][2] for x in calls(engine, "set_deck_eq")[-3:]]
    assert gains[0] == 0.0 and gains[1] == 1.0 and gains[2] == pytest.approx(2.0)


def test_relative_times_become_frames():
    engine, c = make()
    sr = 44100
    c.handle("/load_buffer", [100, "a.wav"], at=0)
    c.handle("/reset", [], at=sr)
    c.handle("/play", ["A", "a.wav", 0.5], at=sr)                 # same file: no reload
    assert calls(engine, "add_sample").__len__() == 1
    assert calls(engine, "play")[-1][2]["at"] == sr + sr // 2
    c.handle("/fade", ["A", 2.0, 1.0], at=sr)
    assert calls(engine, "set_deck_level")[-1] == ("set_deck_level", (0, 0.0), {"ramp": 1.0, "at": 3 * sr})
    c.handle("/play", ["B", "b.wav", 0.0], at=5 * sr)             # already past: at once
    assert calls(engine, "play")[-1][2]["at"] == 5 * sr


def test_receipt_relative_times():
    engine, c = make(times_from="receipt")
    c.handle("/reset", [], at=0)
    c.handle("/play", ["B", "b.wav", 2.0], at=44100)
    assert calls(engine, "play")[-1][2]["at"] == 3 * 44100


def test_start_group_starts_decks_on_one_frame():
    engine, c = make()
    assert c.handle("/cue", ["A", "a.wav", 0.25], at=0) == [("/done", ("/cue", 100))]
    assert c.handle("/cue", ["B", "b.wav"], at=0) == [("/done", ("/cue", 1100))]
    replies = c.handle("/start_group", ["A", "B", "C", 1.0], at=100)
    assert replies == [("/fail", ("/start_group", "deck C is not cued: send /cue C <path> first"))]
    plays = calls(engine, "play")
    assert [(p[1][0], p[2]["at"], p[2]["start"]) for p in plays] == [(100, 44100, 0.25), (1100, 44100, 0.0)]
    # a deck already playing is left alone
    assert c.handle("/start_group", [2.0, "A"], at=44200) == []
    assert len(calls(engine, "play")) == 2


def test_threaded_loads_wait_and_run_in_order():
    release = threading.Event()
    ready = threading.Event()

    def slow(path, sr):
        release.wait(5)
        if "missing" in path:
            raise MediaError(f"no such file: {path}")
        return np.zeros((1000, 2), np.float32)

    engine, c = make(loader=ThreadedLoader(load=slow), on_load_ready=ready.set)
    try:
        assert c.handle("/load_buffer", [100, "a.wav"]) == []
        assert c.handle("/play_stem", [100, 1.0, 0.5]) == []           # waits for the load
        assert c.handle("/stem_volume", [100, 0.25]) == []
        assert c.handle("/play_stem", [999]) != []                      # never requested: /fail
        assert c.handle("/cue", ["B", "missing.wav"]) == []
        assert c.handle("/start_group", [0.0, "B"]) == []
        assert c.handle("/sync", [7]) == []
        assert c.loading == 2 and c.waiting == 5
        assert not calls(engine, "play")
        release.set()
        while c.loading:
            assert ready.wait(5)
            ready.clear()
            c.poll()
        order = [x[0] for x in engine.calls if x[0] in ("bind", "play", "set_volume")]
        assert order == ["bind", "play", "set_volume"]
        got = [r[1:] for r in c.replies]
        assert ("/done", ("/load_buffer", 100)) in got
        assert ("/fail", ("/cue", "buffer 1100 failed to load: no such file: missing.wav")) in got
        assert ("/fail", ("/start_group", "deck B failed to load: no such file: missing.wav")) in got
        assert got[-1] == ("/synced", (7,))
        assert c.waiting == 0
    finally:
        release.set()
        c.close()


def test_mixer_cleanup_abandons_loads():
    release = threading.Event()
    engine, c = make(loader=ThreadedLoader(load=lambda p, sr: (release.wait(5), np.zeros((10, 2), np.float32))[1]))
    try:
        c.handle("/load_buffer", [100, "a.wav"])
        c.handle("/play_stem", [100])
        replies = c.handle("/mixer_cleanup", [])
        assert ("/done", ("/mixer_cleanup",)) in replies
        assert ("/fail", ("/play_stem", "buffer 100 is not loaded: send /load_buffer 100 <path> first")) in replies
        release.set()
        c.loader._pool.shutdown(wait=True)
        c.poll()
        assert not calls(engine, "bind") and not calls(engine, "play")
    finally:
        release.set()
        c.close()


def test_test_tone_is_a_real_tone():
    engine, c = make()
    c.handle("/test_tone", [1000, 0.5], at=0)
    slot = calls(engine, "add_sample")[0][1][0]
    data = engine.sample_of(slot)
    assert data.shape == (22050, 2) and data.dtype == np.float32
    spectrum = np.abs(np.fft.rfft(data[:, 0]))
    assert np.argmax(spectrum) * 44100 / len(data) == pytest.approx(1000, abs=2)
    assert np.max(np.abs(data)) == pytest.approx(0.25, rel=1e-3)
    assert calls(engine, "bind")[0][1] == (spec.TEST_TONE_BUFFER, slot, 0)


def test_plan_knows_when_the_music_ends():
    engine, c = make(loader=ImmediateLoader(fake_load(44100)))
    c.handle("/load_buffer", [100, "a.wav"], at=0)
    c.handle("/play_stem", [100, 2.0, 1.0, 0], at=1000)          # one second at double speed
    assert c.plan() == {"end_frame": 1000 + 22050, "loops": []}
    c.handle("/play_stem", [1100 - 1, 1.0, 1.0, 1], at=0)        # not loaded: /fail, no voice
    c.handle("/load_buffer", [1100, "a.wav"], at=0)
    c.handle("/play_stem", [1100], at=2000)
    assert c.plan()["loops"] == [(1100, "a")]
    c.handle("/fade", ["B", 0.0, 1.0], at=3000)                   # faded out: silent
    assert c.plan() == {"end_frame": 3000 + 44100, "loops": []}


def test_tempo_follows_and_movement_glides():
    engine, c = make()
    c.handle("/set_tempo", [126, 2.0], at=0)
    assert calls(engine, "set_tempo") == [("set_tempo", (126.0,), {"ramp": 2.0, "at": 0})]
    # crowdstream's bands (control/movement.py; tests/test_movement.py has the rest):
    # 0.09 is in the 0.05..0.10 band -> 115 BPM, slower than 126: the 30 s glide down
    c.handle("/dance/total_movement", [0.09], at=10)
    assert calls(engine, "set_tempo")[-1] == ("set_tempo", (115.0,), {"ramp": 30.0, "at": 10})


def test_status_reply_has_the_documented_fields():
    engine, c = make(hooks={"status": lambda: {"buffer_size": 256, "uptime_s": 1.5}})
    c.handle("/load_buffer", [100, "a.wav"])
    (address, args), = c.handle("/status", [])
    assert address == "/status.reply" and len(args) == len(spec.SCSYNTH_STATUS_FIELDS) == 9
    info = dict(zip([f[0] for f in spec.SCSYNTH_STATUS_FIELDS], args))
    assert info["unused"] == 1 and info["groups"] == 4 and info["synthdefs"] == 1
    assert info["nominal_sr"] == info["actual_sr"] == 44100
    for (name, tag, *_), value in zip(spec.SCSYNTH_STATUS_FIELDS, args):
        assert isinstance(value, int if tag == "i" else float), name
    (address, (text,)), = c.handle("/status.json", [])
    import json
    detail = json.loads(text)
    assert detail["sample_rate"] == 44100 and detail["buffers_loaded"] == 1
    assert detail["buffer_size"] == 256 and detail["uptime_s"] == 1.5 and detail["bar"] == 1
    assert detail["decks"][0]["buffers"][0]["id"] == 100
    assert c.handle("/version", [])[0][1][0] == "stemdeck"
    assert not any(math.isnan(float(a)) for a in args)


def test_check_path_refuses_before_anything_changes():
    def only_music(path):
        if not path.startswith("/music/"):
            raise CommandError("outside media root")

    engine, c = make(check_path=only_music)
    assert c.handle("/load_buffer", [100, "/music/a.wav"]) == [("/done", ("/load_buffer", 100))]
    assert c.handle("/load_buffer", [100, "/etc/passwd"]) == [("/fail", ("/load_buffer", "outside media root"))]
    assert c.buffers[100].path == "/music/a.wav" and not calls(engine, "unbind")
    assert c.handle("/cue", ["B", "../x.wav"]) == [("/fail", ("/cue", "outside media root"))]
    assert c.handle("/play", ["C", "/tmp/x.wav", 0]) == [("/fail", ("/play", "outside media root"))]
